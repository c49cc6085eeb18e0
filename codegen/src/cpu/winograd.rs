//! 3x3 stride-1 convolutions by Winograd's minimal filtering, F(2x2, 3x3) (Lavin and Gray,
//! "Fast Algorithms for Convolutional Neural Networks", 2015): each 2x2 block of outputs comes
//! from a 4x4 tile of the input with 16 multiplications per input and output channel, where the
//! direct convolution takes 36.
//!
//! Three steps, each a parallel loop nest:
//! 1. every tile of the input, `d`, becomes `V = Bt d B` (additions only), stored `[tiles, 16, C]`;
//! 2. for each of the 16 positions `p`, `M_p = V_p x U_p`: a `[tiles, C] x [C, F]` matmul by the
//!    register-tiled kernel, `U = G g Gt` being the kernel transformed at compile time (and
//!    packed in column panels as the kernel reads them);
//! 3. every tile's outputs are `At M A` (additions only), the fused epilogue (bias, ReLU)
//!    applied before they are stored.
//!
//! The transforms' coefficients are 0, +-1 and 1/2: rounding differs from the direct sum by a
//! few ulps of the inputs' magnitude. A tile's result depends on nothing but its own input
//! tile: a sample's outputs do not depend on the batch it came in.

use super::matmul::{chunk_min_rows, chunks, mm_kernel, packed_ty, span, threads, Mm, Rows};
use super::{fast_conv_fits, simd};
use crate::lower::{for_carrying, if_carrying, ix, tensor_ty, transfer_tail, Epi, E, R};
use forgec_ir::{ConvAttrs, Tensor, TensorType};
use forgec_runtime::Data;

/// Both channel counts at least this: below it the 16 small matmuls lose what the fewer
/// multiplications gain (a convolution of one input channel is a few FMAs per output).
const MIN_CHANNELS: usize = 16;

/// An image's tiles at least this many, and a block's as many where the image has them: a
/// block's 16 matmuls read all of the transformed kernel (`16 x C x F`) for this many rows, and
/// fewer would not pay for reading it (a 7x7 image with 512 channels runs the direct sums).
const MIN_TILES: usize = 24;

/// Whether the convolution `x * w -> ot` runs by Winograd on a target of `simd` f32 lanes:
/// channels-last, 3x3, stride and dilation 1, no groups, known kernel and spatial dims, both
/// channel counts a multiple of `simd` (the transforms run on whole vectors of channels) and
/// at least `MIN_CHANNELS`, an output of at least `MIN_TILES` 2x2 tiles.
pub(super) fn fits(
    x: &TensorType,
    w: &TensorType,
    c: &ConvAttrs,
    ot: &TensorType,
    simd: usize,
) -> bool {
    let Some(ws) = w.known_shape() else {
        return false;
    };
    let spatial = |t: &TensorType| -> Vec<usize> {
        t.shape[1..t.rank() - 1]
            .iter()
            .filter_map(|d| d.known())
            .collect()
    };
    fast_conv_fits(x, w, c, ot)
        && x.rank() == 4
        && ws.len() == 4
        && ws[..2] == [3, 3]
        && c.strides.iter().all(|&s| s == 1)
        && c.dilations.iter().all(|&d| d == 1)
        && ws[2] % simd == 0
        && ws[3] % simd == 0
        && ws[2] >= MIN_CHANNELS
        && ws[3] >= MIN_CHANNELS
        && spatial(ot).iter().all(|&d| d >= 2)
        && spatial(ot).iter().map(|d| d.div_ceil(2)).product::<usize>() >= MIN_TILES
}

/// The kernel `[3, 3, C, F]` transformed (`U = G g Gt` per channel pair, in f64, rounded once)
/// and packed for `mm_kernel`: `[16, ceil(F / w), C, w]`, position `p = 4 i + j` of the 4x4
/// tile first, then its `[C, F]` matrix in column panels of `w`, the last padded with zeros.
pub(super) fn weights(t: &Tensor, w: usize) -> Option<Tensor> {
    let (s, Data::F32(v)) = (t.shape(), t.data()) else {
        return None;
    };
    let [3, 3, ch, f] = s[..] else {
        return None;
    };
    const G: [[f64; 3]; 4] = [
        [1.0, 0.0, 0.0],
        [0.5, 0.5, 0.5],
        [0.5, -0.5, 0.5],
        [0.0, 0.0, 1.0],
    ];
    let panels = f.div_ceil(w);
    let mut out = vec![0f32; 16 * panels * ch * w];
    for ci in 0..ch {
        for fi in 0..f {
            let g = |kh: usize, kw: usize| f64::from(v[((kh * 3 + kw) * ch + ci) * f + fi]);
            // G g: 4x3, then (G g) Gt: 4x4.
            let mut gg = [[0f64; 3]; 4];
            for (i, row) in gg.iter_mut().enumerate() {
                for (kw, x) in row.iter_mut().enumerate() {
                    *x = (0..3).map(|kh| G[i][kh] * g(kh, kw)).sum();
                }
            }
            for (i, row) in gg.iter().enumerate() {
                for (j, gj) in G.iter().enumerate() {
                    let u: f64 = (0..3).map(|kw| row[kw] * gj[kw]).sum();
                    let p = i * 4 + j;
                    let (pi, l) = (fi / w, fi % w);
                    out[((p * panels + pi) * ch + ci) * w + l] = u as f32;
                }
            }
        }
    }
    Tensor::from_f32(vec![16, panels, ch, w], out).ok()
}

/// The type of `weights`' result for `[3, 3, C, F]` and panels of `w`.
pub(super) fn weights_ty(ch: usize, f: usize, w: usize) -> String {
    format!("tensor<16x{}x{ch}x{w}xf32>", f.div_ceil(w))
}

/// `Bt z` for the 4 values `z` of a tile's column (or row): `Bt` is
/// `[[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]`.
fn bt(e: &mut E, z: [&str; 4], vt: &str) -> [String; 4] {
    [
        vop(e, "subf", z[0], z[2], vt),
        vop(e, "addf", z[1], z[2], vt),
        vop(e, "subf", z[2], z[1], vt),
        vop(e, "subf", z[1], z[3], vt),
    ]
}

/// `%v = arith.<name> a, b : vt`, `%v` fresh.
fn vop(e: &mut E, name: &str, a: &str, b: &str, vt: &str) -> String {
    let v = e.fresh();
    e.line(&format!("{v} = arith.{name} {a}, {b} : {vt}"));
    v
}

/// `At z` for 4 values: `At` is `[[1, 1, 1, 0], [0, 1, -1, -1]]`.
fn at(e: &mut E, z: [&str; 4], vt: &str) -> [String; 2] {
    let s = vop(e, "addf", z[0], z[1], vt);
    let y0 = vop(e, "addf", &s, z[2], vt);
    let d = vop(e, "subf", z[1], z[2], vt);
    let y1 = vop(e, "subf", &d, z[3], vt);
    [y0, y1]
}

/// What the three steps share.
struct Wg<'a> {
    /// The input and its type.
    x: &'a str,
    xt: String,
    /// The transformed kernel (`weights`) and its type.
    u: &'a str,
    /// Input height, width, channels; output height, width, channels.
    h: usize,
    wd: usize,
    ch: usize,
    oh: usize,
    ow: usize,
    f: usize,
    /// Tiles down and across an image; tile rows per block.
    th: usize,
    tw: usize,
    rb: usize,
    /// Padding before the rows and the columns.
    pt: i64,
    pl: i64,
    /// The vector type of `simd` channels, its zero, the f32 zero.
    vt: String,
    zero: String,
    pad: String,
    epi: Vec<Epi>,
}

/// The tiles a block holds at most, `rb` tile rows of an image: its V (`[16, tiles, C]`) and M
/// (`[16, tiles, F]`) fit in this many bytes of L2 cache, so that the three steps pass them on
/// in cache rather than through memory.
const BLOCK_BYTES: usize = 192 * 1024;

/// The convolution `x * w -> ot` (`fits` holds; `w` the constant stored by `weights`). Each
/// image is cut into blocks of whole tile rows; a block goes through the three steps at once.
/// Threads take images, and blocks of an image when images are fewer than threads.
pub(super) fn conv(
    e: &mut E,
    x: &(String, TensorType),
    w: &(String, TensorType),
    c: &ConvAttrs,
    ot: &TensorType,
) -> R<String> {
    let xs: Vec<usize> = x.1.shape[1..].iter().filter_map(|d| d.known()).collect();
    let os: Vec<usize> = ot.shape[1..].iter().filter_map(|d| d.known()).collect();
    let (&[h, wd, ch], &[oh, ow, f]) = (&xs[..], &os[..]) else {
        return Err("internal error: a Winograd convolution without known dims".into());
    };
    let (th, tw) = (oh.div_ceil(2), ow.div_ceil(2));
    // Blocks of even size: as few as fit (and of `MIN_TILES` at least), the tile rows shared
    // out.
    let most = (BLOCK_BYTES / (16 * 4 * (ch + f) * tw))
        .max(MIN_TILES.div_ceil(tw))
        .clamp(1, th);
    let rb = th.div_ceil(th.div_ceil(most));
    let vt = format!("vector<{}xf32>", simd(e));
    let (zero, pad) = (e.fresh(), e.fresh());
    e.line(&format!("{zero} = arith.constant dense<0.0> : {vt}"));
    e.line(&format!("{pad} = arith.constant 0.0 : f32"));
    let g = Wg {
        x: &x.0,
        xt: tensor_ty(&x.1),
        u: &w.0,
        h,
        wd,
        ch,
        oh,
        ow,
        f,
        th,
        tw,
        rb,
        pt: c.pads[0].0 as i64,
        pl: c.pads[1].0 as i64,
        vt,
        zero,
        pad,
        // The kernel's epilogue is applied to the output tiles here, not by the matmuls.
        epi: std::mem::take(&mut e.epilogue),
    };
    let ott = tensor_ty(ot);
    let nb = e.dim_val(&x.1.shape[0])?;
    let out = e.fresh();
    let nsize = if ot.shape[0].known().is_some() {
        ""
    } else {
        nb.as_str()
    };
    e.line(&format!("{out} = tensor.empty({nsize}) : {ott}"));
    // Chunks of images, and of each image's blocks when threads are left (as `par_grid`).
    let nblk = th.div_ceil(rb);
    let per_image = th * tw * 16 * ch * f;
    let (c1, cnblk) = (e.idx(1), e.idx(nblk as i64));
    let nt = threads(e);
    let (tr, per) = chunks(e, &nt, &nb, 1, chunk_min_rows(per_image));
    let left = ix(e, "divui", &nt, &tr);
    // Blocks per chunk: at least one, and no more chunks than blocks.
    let upto = ix(e, "minui", &left, &cnblk);
    let tc = ix(e, "maxui", &upto, &c1);
    let bper = ix(e, "ceildivui", &cnblk, &tc);
    let (a, b, o, res) = (e.fresh(), e.fresh(), e.fresh(), e.fresh());
    let saved = std::mem::take(&mut e.body);
    let (n0, _, nlen) = span(e, &a, &per, &nb);
    let (b0, b1, _) = span(e, &b, &bper, &cnblk);
    // The chunk's output rows: its blocks' tile rows, twice, cut at the output's end.
    let (c2rb, coh) = (e.idx(2 * rb as i64), e.idx(oh as i64));
    let r0 = ix(e, "muli", &b0, &c2rb);
    let r0 = ix(e, "minui", &r0, &coh);
    let r1 = ix(e, "muli", &b1, &c2rb);
    let r1 = ix(e, "minui", &r1, &coh);
    let rlen = ix(e, "subi", &r1, &r0);
    let st = format!("tensor<?x?x{ow}x{f}xf32>");
    let at = format!("[{n0}, {r0}, 0, 0] [{nlen}, {rlen}, {ow}, {f}] [1, 1, 1, 1]");
    let slice = e.fresh();
    e.line(&format!(
        "{slice} = tensor.extract_slice {o}{at} : {ott} to {st}"
    ));
    let c0 = e.idx(0);
    let y = for_carrying(e, &st, &slice, (&c0, &nlen, &c1), &mut |e, s, nl| {
        let n = ix(e, "addi", &n0, nl);
        for_carrying(e, &st, s, (&b0, &b1, &c1), &mut |e, s, blk| {
            block(e, &g, s, (&n, nl), blk, &r0)
        })
    });
    e.line(&format!(
        "scf.forall.in_parallel {{\n      tensor.parallel_insert_slice {y} into {o}{at} : {st} into {ott}\n    }}"
    ));
    let inner = std::mem::replace(&mut e.body, saved);
    e.line(&format!(
        "{res} = scf.forall ({a}, {b}) in ({tr}, {tc}) shared_outs({o} = {out}) -> ({ott}) {{\n{inner}    }}"
    ));
    Ok(res)
}

/// Block `blk` (tile rows `blk * rb ..`, up to `th`) of image `n` (`nl` in the chunk's slice
/// `s`, whose first output row is `r0`): the three steps; returns `s` with its outputs.
fn block(e: &mut E, g: &Wg, s: &str, (n, nl): (&str, &str), blk: &str, r0: &str) -> String {
    let (c0, c1, crb, cth, ctw) = (
        e.idx(0),
        e.idx(1),
        e.idx(g.rb as i64),
        e.idx(g.th as i64),
        e.idx(g.tw as i64),
    );
    let tr0 = ix(e, "muli", blk, &crb);
    let tr1 = ix(e, "addi", &tr0, &crb);
    let tr1 = ix(e, "minui", &tr1, &cth);
    let nrows = ix(e, "subi", &tr1, &tr0);
    let ntiles = ix(e, "muli", &nrows, &ctw);
    let bt_ = g.rb * g.tw;
    let (ch, f) = (g.ch, g.f);
    let vty = format!("tensor<16x{bt_}x{ch}xf32>");
    let mty = format!("tensor<16x{bt_}x{f}xf32>");
    let (v0, m0) = (e.fresh(), e.fresh());
    e.line(&format!("{v0} = tensor.empty() : {vty}"));
    e.line(&format!("{m0} = tensor.empty() : {mty}"));

    // 1. V = Bt d B for every tile of the block: [16, tiles, C].
    let v = for_carrying(e, &vty, &v0, (&c0, &nrows, &c1), &mut |e, v, r| {
        let ti = ix(e, "addi", &tr0, r);
        let rt = ix(e, "muli", r, &ctw);
        for_carrying(e, &vty, v, (&c0, &ctw, &c1), &mut |e, v, tj| {
            let l = ix(e, "addi", &rt, tj);
            input_tile(e, g, v, &vty, n, (&ti, tj), &l)
        })
    });

    // 2. M_p = V_p x U_p for the 16 positions: [16, tiles, F], on this thread.
    let kw = 2 * simd(e);
    let (at_ty, ct) = (format!("tensor<?x{ch}xf32>"), format!("tensor<?x{f}xf32>"));
    let (uty, bty) = (weights_ty(ch, f, kw), packed_ty(ch, f, kw));
    let panels = f.div_ceil(kw);
    let c16 = e.idx(16);
    let serial = std::mem::replace(&mut e.serial, true);
    let m = for_carrying(e, &mty, &m0, (&c0, &c16, &c1), &mut |e, m, p| {
        let (a, b, o) = (e.fresh(), e.fresh(), e.fresh());
        e.line(&format!(
            "{a} = tensor.extract_slice {v}[{p}, 0, 0] [1, {ntiles}, {ch}] [1, 1, 1] : {vty} to {at_ty}"
        ));
        e.line(&format!(
            "{b} = tensor.extract_slice {}[{p}, 0, 0, 0] [1, {panels}, {ch}, {kw}] [1, 1, 1, 1] : {uty} to {bty}",
            g.u
        ));
        e.line(&format!(
            "{o} = tensor.extract_slice {m}[{p}, 0, 0] [1, {ntiles}, {f}] [1, 1, 1] : {mty} to {ct}"
        ));
        let y = mm_kernel(
            e,
            &Mm {
                rows: Rows::Matrix {
                    a: &a,
                    at: at_ty.clone(),
                },
                m: ntiles.clone(),
                k: ch,
                k_sym: None,
                n: f,
                b: &b,
                bt: bty.clone(),
                packed: true,
                ct: ct.clone(),
                out: o,
            },
        );
        let r = e.fresh();
        e.line(&format!(
            "{r} = tensor.insert_slice {y} into {m}[{p}, 0, 0] [1, {ntiles}, {f}] [1, 1, 1] : {ct} into {mty}"
        ));
        r
    });
    e.serial = serial;

    // 3. Y = At M A for every tile, the epilogue applied.
    let st = format!("tensor<?x?x{}x{f}xf32>", g.ow);
    for_carrying(e, &st, s, (&c0, &nrows, &c1), &mut |e, s, r| {
        let ti = ix(e, "addi", &tr0, r);
        let rt = ix(e, "muli", r, &ctw);
        for_carrying(e, &st, s, (&c0, &ctw, &c1), &mut |e, s, tj| {
            let l = ix(e, "addi", &rt, tj);
            output_tile(e, g, s, &st, (&m, &mty), (nl, r0), (&ti, tj), &l)
        })
    })
}

/// Step 1 for the tile at tile row `ti`, column `tj` of image `n`: writes its `V` at `[p, l, c]`
/// of `v` (type `vty`).
fn input_tile(
    e: &mut E,
    g: &Wg,
    v: &str,
    vty: &str,
    n: &str,
    (ti, tj): (&str, &str),
    l: &str,
) -> String {
    let (c0, c2, ch_, cw_) = (e.idx(0), e.idx(2), e.idx(g.h as i64), e.idx(g.wd as i64));
    let (cch, clanes) = (e.idx(g.ch as i64), e.idx(simd(e) as i64));
    let i0 = ix(e, "muli", ti, &c2);
    let j0 = ix(e, "muli", tj, &c2);
    // Which rows (columns) of a tile may fall outside the input: those the padding or the
    // last tile's overhang reach.
    let outside = |i: usize, p: i64, n: usize, t: usize| -> bool {
        let first = i as i64 - p;
        let last = 2 * (t as i64 - 1) + first;
        first < 0 || last >= n as i64
    };
    // Each row and column of the tile: its index in the input (clamped into it when it may
    // fall outside) and whether it is inside.
    let place = |e: &mut E, base: &str, k: usize, p: i64, lim: &str, out: bool| {
        let off = e.idx(k as i64 - p);
        let at = ix(e, "addi", base, &off);
        if !out {
            return (at, None);
        }
        let ge = ix(e, "cmpi sge,", &at, &c0);
        let lt = ix(e, "cmpi slt,", &at, lim);
        let inside = e.fresh();
        e.line(&format!("{inside} = arith.andi {ge}, {lt} : i1"));
        let cl = e.fresh();
        e.line(&format!("{cl} = arith.select {inside}, {at}, {c0} : index"));
        (cl, Some(inside))
    };
    let rows: Vec<_> = (0..4)
        .map(|i| place(e, &i0, i, g.pt, &ch_, outside(i, g.pt, g.h, g.th)))
        .collect();
    let cols: Vec<_> = (0..4)
        .map(|j| place(e, &j0, j, g.pl, &cw_, outside(j, g.pl, g.wd, g.tw)))
        .collect();
    // Whether each (row, column) of the tile is inside: None when always.
    let mut inside = vec![vec![None; 4]; 4];
    for (i, (_, ri)) in rows.iter().enumerate() {
        for (j, (_, cj)) in cols.iter().enumerate() {
            inside[i][j] = match (ri, cj) {
                (None, None) => None,
                (Some(a), None) | (None, Some(a)) => Some(a.clone()),
                (Some(a), Some(b)) => {
                    let v = e.fresh();
                    e.line(&format!("{v} = arith.andi {a}, {b} : i1"));
                    Some(v)
                }
            };
        }
    }
    let (x, xt, vt, pad, zero) = (g.x, &g.xt, &g.vt, &g.pad, &g.zero);
    let inb = transfer_tail(None);
    for_carrying(e, vty, v, (&c0, &cch, &clanes), &mut |e, v, cv| {
        let mut d = vec![vec![String::new(); 4]; 4];
        for i in 0..4 {
            for j in 0..4 {
                let raw = e.fresh();
                e.line(&format!(
                    "{raw} = vector.transfer_read {x}[{n}, {}, {}, {cv}], {pad}{inb} : {xt}, {vt}",
                    rows[i].0, cols[j].0
                ));
                d[i][j] = match &inside[i][j] {
                    None => raw,
                    Some(ok) => {
                        let s = e.fresh();
                        e.line(&format!("{s} = arith.select {ok}, {raw}, {zero} : {vt}"));
                        s
                    }
                };
            }
        }
        // Bt d (down the tile's columns), then (Bt d) B (along its rows).
        let mut bd = vec![vec![String::new(); 4]; 4];
        for j in 0..4 {
            let col = bt(e, [&d[0][j], &d[1][j], &d[2][j], &d[3][j]], vt);
            for (i, y) in col.into_iter().enumerate() {
                bd[i][j] = y;
            }
        }
        let mut v = v.to_string();
        for (i, row) in bd.iter().enumerate() {
            let vr = bt(e, [&row[0], &row[1], &row[2], &row[3]], vt);
            for (j, val) in vr.iter().enumerate() {
                let p = e.idx((i * 4 + j) as i64);
                let nv = e.fresh();
                e.line(&format!(
                    "{nv} = vector.transfer_write {val}, {v}[{p}, {l}, {cv}]{inb} : {vt}, {vty}"
                ));
                v = nv;
            }
        }
        v
    })
}

/// Step 3 for the tile at tile row `ti`, column `tj`, whose products are at `[p, l, f]` of `m`
/// (type `mty`): writes its outputs into `s` (type `st`), image `nl`, rows from `r0` on.
#[allow(clippy::too_many_arguments)]
fn output_tile(
    e: &mut E,
    g: &Wg,
    s: &str,
    st: &str,
    (m, mty): (&str, &str),
    (nl, r0): (&str, &str),
    (ti, tj): (&str, &str),
    l: &str,
) -> String {
    let (c0, c1, c2, cf, clanes) = (
        e.idx(0),
        e.idx(1),
        e.idx(2),
        e.idx(g.f as i64),
        e.idx(simd(e) as i64),
    );
    let i0 = ix(e, "muli", ti, &c2);
    let i1 = ix(e, "addi", &i0, &c1);
    let j0 = ix(e, "muli", tj, &c2);
    let j1 = ix(e, "addi", &j0, &c1);
    // The second row (column) of the last tiles is past an odd output's end.
    let row2 = (g.oh % 2 == 1).then(|| {
        let coh = e.idx(g.oh as i64);
        ix(e, "cmpi slt,", &i1, &coh)
    });
    let col2 = (g.ow % 2 == 1).then(|| {
        let cow = e.idx(g.ow as i64);
        ix(e, "cmpi slt,", &j1, &cow)
    });
    let both = match (&row2, &col2) {
        (Some(a), Some(b)) => {
            let v = e.fresh();
            e.line(&format!("{v} = arith.andi {a}, {b} : i1"));
            Some(v)
        }
        _ => row2.clone().or(col2.clone()),
    };
    // Rows in the chunk's slice.
    let li0 = ix(e, "subi", &i0, r0);
    let li1 = ix(e, "addi", &li0, &c1);
    let (vt, pad, zero) = (&g.vt, &g.pad, &g.zero);
    let inb = transfer_tail(None);
    for_carrying(e, st, s, (&c0, &cf, &clanes), &mut |e, s, fv| {
        let mut mv = vec![vec![String::new(); 4]; 4];
        for (i, row) in mv.iter_mut().enumerate() {
            for (j, x) in row.iter_mut().enumerate() {
                let p = e.idx((i * 4 + j) as i64);
                let v = e.fresh();
                e.line(&format!(
                    "{v} = vector.transfer_read {m}[{p}, {l}, {fv}], {pad}{inb} : {mty}, {vt}"
                ));
                *x = v;
            }
        }
        // At m (down the columns), then (At m) A (along the rows).
        let mut am = vec![vec![String::new(); 4]; 2];
        for j in 0..4 {
            let col = at(e, [&mv[0][j], &mv[1][j], &mv[2][j], &mv[3][j]], vt);
            for (i, y) in col.into_iter().enumerate() {
                am[i][j] = y;
            }
        }
        let opnds: Vec<String> = g
            .epi
            .iter()
            .map(|x| x.operand(e, fv, vt, zero, pad, None))
            .collect();
        let mut s = s.to_string();
        for (i, row) in am.iter().enumerate() {
            let ys = at(e, [&row[0], &row[1], &row[2], &row[3]], vt);
            for (j, y) in ys.into_iter().enumerate() {
                let mut val = y;
                for (x, o) in g.epi.iter().zip(&opnds) {
                    val = x.apply(e, &val, o, vt);
                }
                let (oi, oj) = (
                    if i == 0 { &li0 } else { &li1 },
                    if j == 0 { &j0 } else { &j1 },
                );
                let mut write = |e: &mut E, s: &str| {
                    let nv = e.fresh();
                    e.line(&format!(
                        "{nv} = vector.transfer_write {val}, {s}[{nl}, {oi}, {oj}, {fv}]{inb} : {vt}, {st}"
                    ));
                    nv
                };
                let cond = match (i, j) {
                    (0, 0) => None,
                    (1, 0) => row2.as_ref(),
                    (0, _) => col2.as_ref(),
                    _ => both.as_ref(),
                };
                s = match cond {
                    None => write(e, &s),
                    Some(cnd) => if_carrying(e, st, cnd, &s, &mut write),
                };
            }
        }
        s
    })
}
