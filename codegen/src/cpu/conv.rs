//! The CPU's convolution and pooling kernels: convolutions as `mm_kernel` over im2col rows,
//! depthwise convolutions and pools as vectorised windows.

use super::*;
use crate::lower::*;
use forgec_ir::{ConvAttrs, DType, Dim, Layout, PoolKind, TensorType};
use std::fmt::Write;

/// Whether a convolution runs as a matmul (`fast_conv`): f32, channels-last, one group, every
/// dim but the batch known.
pub(crate) fn fast_conv_fits(
    x: &TensorType,
    w: &TensorType,
    c: &ConvAttrs,
    ot: &TensorType,
) -> bool {
    let f32_only = [x, w, ot].iter().all(|t| t.dtype == DType::F32);
    f32_only
        && c.layout == Layout::ChannelsLast
        && c.groups == 1
        && w.known_shape().is_some()
        && x.shape[1..].iter().all(|d| d.known().is_some())
        && ot.shape[1..].iter().all(|d| d.known().is_some())
        && x.shape[0] == ot.shape[0]
}

/// A channels-last convolution as a matmul: the input's windows laid out as rows
/// (`[N * out..., k... * C]`, im2col; a 1x1 stride-1 convolution uses the input as it is) times
/// the kernel as `[k... * C, F]`, by the tiled kernel, reshaped to `[N, out..., F]`.
pub(crate) fn fast_conv(
    e: &mut E,
    x: &(String, TensorType),
    w: &(String, TensorType),
    c: &ConvAttrs,
    ot: &TensorType,
    packed: bool,
) -> R<Option<String>> {
    if !fast_conv_fits(&x.1, &w.1, c, ot) {
        return Ok(None);
    }
    let r = x.1.rank();
    let ns = r - 2;
    let wk = w.1.known_shape().unwrap_or_default();
    let (kdims, cin, f) = (&wk[..ns], wk[ns], wk[ns + 1]);
    let odims: Vec<usize> = ot.shape[1..=ns].iter().filter_map(|d| d.known()).collect();
    let kk = kdims.iter().product::<usize>() * cin;
    let per_sample: usize = odims.iter().product();
    let pointwise = kdims.iter().all(|&k| k == 1)
        && c.strides.iter().all(|&s| s == 1)
        && c.pads.iter().all(|p| *p == (0, 0));
    let (m, mdim) = rows_of(e, &ot.shape[0], per_sample)?;
    // A 2-D convolution reads its windows from the input in place (padding included);
    // others lay them out first (im2col), or use the input as it is (1x1).
    let implicit = ns == 2 && !pointwise;
    // With few input channels a window's bounds checks outweigh its multiply-adds (an image's
    // RGB, say): such an input is padded first, a copy read without checks.
    let padded = c.pads.iter().any(|p| *p != (0, 0));
    let pre_pad = implicit && padded && cin < simd(e);
    let xp = if pre_pad {
        pad_input(e, x, c)?
    } else {
        x.clone()
    };
    let conv_a = implicit.then(|| {
        let xs: Vec<usize> = xp.1.shape[1..].iter().filter_map(|d| d.known()).collect();
        ConvA {
            x: xp.0.clone(),
            xt: tensor_ty(&xp.1),
            h: xs[0],
            w: xs[1],
            c: cin,
            oh: odims[0],
            ow: odims[1],
            kh: kdims[0],
            kw: kdims[1],
            strides: [c.strides[0], c.strides[1]],
            dilations: [c.dilations[0], c.dilations[1]],
            pads: if pre_pad {
                [0, 0]
            } else {
                [c.pads[0].0, c.pads[1].0]
            },
            padded: padded && !pre_pad,
        }
    });
    let (a, at) = if implicit {
        (String::new(), String::new())
    } else {
        im2col_rows(e, x, c, (kdims, cin, kk), &odims, (pointwise, &mdim))?
    };
    let (b, bt) = if packed {
        (w.0.clone(), String::new())
    } else {
        let bt = format!("tensor<{kk}x{f}xf32>");
        let b = e.fresh();
        e.line(&format!(
            "{b} = tensor.collapse_shape {} {} : {} into {bt}",
            w.0,
            reassociation(ns + 1, ns + 2),
            tensor_ty(&w.1)
        ));
        (b, bt)
    };
    let (out, ct) = empty_rows(e, (&m, &mdim), f);
    let y = mm_kernel(
        e,
        &Mm {
            rows: match conv_a {
                Some(cv) => Rows::Conv(cv),
                None => Rows::Matrix { a: &a, at },
            },
            m,
            k: kk,
            k_sym: None,
            n: f,
            b: &b,
            bt,
            packed,
            ct: ct.clone(),
            out,
        },
    );
    unflatten_rows(e, &y, &ct, ot).map(Some)
}

/// The rows of a convolution as a matrix `[N * out..., k... * C]` (im2col, after padding the
/// input; a 1x1 stride-1 convolution uses its input as it is): (value, type).
pub(crate) fn im2col_rows(
    e: &mut E,
    x: &(String, TensorType),
    c: &ConvAttrs,
    (kdims, cin, kk): (&[usize], usize, usize),
    odims: &[usize],
    (pointwise, mdim): (bool, &str),
) -> R<(String, String)> {
    let r = x.1.rank();
    let ns = r - 2;
    let x = pad_input(e, x, c)?;
    // Rows: [N, out..., k..., C] (or the input itself), collapsed to [M, kk].
    let cols = if pointwise {
        x
    } else {
        let n_it = r + ns;
        let d = |i: usize| format!("d{i}");
        let mut xe = vec![d(0)];
        for i in 0..ns {
            xe.push(format!(
                "{} * {} + {} * {}",
                d(1 + i),
                c.strides[i],
                d(1 + ns + i),
                c.dilations[i]
            ));
        }
        xe.push(d(n_it - 1));
        let oe: Vec<String> = (0..n_it).map(d).collect();
        let mut shape = vec![x.1.shape[0].clone()];
        shape.extend(
            odims
                .iter()
                .chain(kdims)
                .chain([&cin])
                .map(|&v| Dim::Known(v)),
        );
        let ct = TensorType::new(DType::F32, shape);
        let init = e.empty(&ct)?;
        let v = generic(
            e,
            std::slice::from_ref(&x),
            &[map(n_it, &xe), map(n_it, &oe)],
            &vec!["parallel"; n_it],
            init,
            &ct,
            &mut |_, a, _| a[0].clone(),
        );
        (v, ct)
    };
    let cr = cols.1.rank();
    let at = format!("tensor<{mdim}x{kk}xf32>");
    let a = e.fresh();
    e.line(&format!(
        "{a} = tensor.collapse_shape {} {} : {} into {at}",
        cols.0,
        reassociation(ns + 1, cr),
        tensor_ty(&cols.1)
    ));
    Ok((a, at))
}

/// Whether a convolution is a 2-D depthwise one `depthwise` runs: f32, channels-last, one
/// input channel per group and one output channel per input channel, dims known but the batch.
pub(crate) fn depthwise_fits(
    x: &TensorType,
    w: &TensorType,
    c: &ConvAttrs,
    ot: &TensorType,
) -> bool {
    let f32_only = [x, w, ot].iter().all(|t| t.dtype == DType::F32);
    let (Some(ws), true) = (w.known_shape(), x.rank() == 4) else {
        return false;
    };
    let ch = x.shape[3].known();
    f32_only
        && c.layout == Layout::ChannelsLast
        && ws.len() == 4
        && ws[2] == 1
        && Some(ws[3]) == ch
        && Some(c.groups) == ch
        && x.shape[1..].iter().all(|d| d.known().is_some())
        && ot.shape[1..].iter().all(|d| d.known().is_some())
        && x.shape[0] == ot.shape[0]
}

/// A 2-D depthwise convolution, vectorized across channels: for each output pixel and each
/// vector of channels, one accumulator takes a multiply-add per window tap, reading the input
/// in place (taps that fall in the padding read a clamped pixel and use zero instead), and the
/// fused epilogue runs before the store.
pub(crate) fn depthwise(
    e: &mut E,
    x: &(String, TensorType),
    w: &(String, TensorType),
    c: &ConvAttrs,
    ot: &TensorType,
) -> R<Option<String>> {
    if !depthwise_fits(&x.1, &w.1, c, ot) {
        return Ok(None);
    }
    let ws = w.1.known_shape().unwrap_or_default();
    let geom = Window {
        k: [ws[0], ws[1]],
        strides: &c.strides,
        dilations: &c.dilations,
        pads: &c.pads,
    };
    window_kernel(e, x, Win::Depthwise(w), &geom, ot).map(Some)
}

/// A 2-D max or average pooling without padding, channels-last, f32, dims known but the batch:
/// the window kernel with `max` or `add` per tap.
pub(crate) fn fast_pool(
    e: &mut E,
    x: &(String, TensorType),
    p: &forgec_ir::PoolAttrs,
    ot: &TensorType,
) -> R<Option<String>> {
    let fits = x.1.dtype == DType::F32
        && x.1.rank() == 4
        && p.layout == Layout::ChannelsLast
        && p.window.len() == 2
        && p.pads.iter().all(|q| *q == (0, 0))
        && x.1.shape[1..].iter().all(|d| d.known().is_some())
        && ot.shape[1..].iter().all(|d| d.known().is_some());
    if !fits {
        return Ok(None);
    }
    let win = match p.kind {
        PoolKind::Max => Win::Max,
        PoolKind::Avg => Win::Avg,
    };
    let geom = Window {
        k: [p.window[0], p.window[1]],
        strides: &p.strides,
        dilations: &p.dilations,
        pads: &p.pads,
    };
    window_kernel(e, x, win, &geom, ot).map(Some)
}

/// What a window kernel does at each tap.
pub(crate) enum Win<'a> {
    /// Multiply-add with the per-channel kernel (weights `[kh, kw, 1, C]`).
    Depthwise(&'a (String, TensorType)),
    Max,
    /// Sum, then divide by the window's size (no padding, so every window is whole).
    Avg,
}

/// The window of a 2-D window kernel.
pub(crate) struct Window<'a> {
    pub(crate) k: [usize; 2],
    pub(crate) strides: &'a [usize],
    pub(crate) dilations: &'a [usize],
    pub(crate) pads: &'a [(usize, usize)],
}

/// A 2-D window op over channels-last data, vectorized across channels: for each output
/// pixel and each vector of channels, one accumulator takes every window tap, reading the
/// input in place (taps that fall in the padding read a clamped pixel and use zero instead),
/// and the fused epilogue runs before the store.
pub(crate) fn window_kernel(
    e: &mut E,
    x: &(String, TensorType),
    win: Win,
    c: &Window,
    ot: &TensorType,
) -> R<String> {
    let xs: Vec<usize> = x.1.shape[1..].iter().filter_map(|d| d.known()).collect();
    let (h, wd, ch) = (xs[0], xs[1], xs[2]);
    let [kh, kw] = c.k;
    let (oh, ow) = (
        ot.shape[1].known().unwrap_or(0),
        ot.shape[2].known().unwrap_or(0),
    );
    let lanes = 2 * simd(e);
    let vt = format!("vector<{lanes}xf32>");
    let (xt, ct) = (tensor_ty(&x.1), tensor_ty(ot));
    let padded = c.pads.iter().any(|p| *p != (0, 0));
    let cfull = ch - ch % lanes;
    // Output rows per chunk worth a thread (see `par_rows`).
    let min_rows = chunk_min_rows(ow * ch * kh * kw);
    let (c0, c1) = (e.idx(0), e.idx(1));
    let nb = e.dim_val(&ot.shape[0])?;
    let out = e.empty(ot)?;
    // The output as rows `(image, y)`: `[N * OH, OW, C]`; a chunk writes some of them.
    let st = format!("tensor<?x{ow}x{ch}xf32>");
    let (m, mdim) = rows_of(e, &ot.shape[0], oh)?;
    let flat_ty = format!("tensor<{mdim}x{ow}x{ch}xf32>");
    let flat = e.fresh();
    e.line(&format!(
        "{flat} = tensor.collapse_shape {out} [[0, 1], [2], [3]] : {ct} into {flat_ty}"
    ));
    let epi = std::mem::take(&mut e.epilogue);
    let zero = e.fresh();
    e.line(&format!("{zero} = arith.constant dense<0.0> : {vt}"));
    let init = match win {
        Win::Max => {
            let v = e.fresh();
            e.line(&format!("{v} = arith.constant dense<0xFF800000> : {vt}"));
            v
        }
        _ => zero.clone(),
    };
    let count = e.fresh();
    e.line(&format!(
        "{count} = arith.constant dense<{:.1}> : {vt}",
        (kh * kw) as f32
    ));
    let pad = e.fresh();
    e.line(&format!("{pad} = arith.constant 0.0 : f32"));
    let mask = if cfull < ch {
        let mk = e.fresh();
        let crem = e.idx((ch - cfull) as i64);
        e.line(&format!(
            "{mk} = vector.create_mask {crem} : vector<{lanes}xi1>"
        ));
        Some(mk)
    } else {
        None
    };
    // Input coordinate of each tap along one axis: o * stride + k * dilation - pad_before,
    // clamped into the input, and whether it was inside.
    let taps =
        |e: &mut E, o: &str, axis: usize, k: usize, size: usize| -> (String, Option<String>) {
            let s = e.idx(c.strides[axis] as i64);
            let base = e.fresh();
            e.line(&format!("{base} = arith.muli {o}, {s} : index"));
            let off = (k * c.dilations[axis]) as i64 - c.pads[axis].0 as i64;
            let coff = e.idx(off);
            let i = e.fresh();
            e.line(&format!("{i} = arith.addi {base}, {coff} : index"));
            if !padded {
                return (i, None);
            }
            let (c0, hi) = (e.idx(0), e.idx(size as i64));
            let (ge, lt, inb, cl) = (e.fresh(), e.fresh(), e.fresh(), e.fresh());
            e.line(&format!("{ge} = arith.cmpi sge, {i}, {c0} : index"));
            e.line(&format!("{lt} = arith.cmpi slt, {i}, {hi} : index"));
            e.line(&format!("{inb} = arith.andi {ge}, {lt} : i1"));
            e.line(&format!("{cl} = arith.select {inb}, {i}, {c0} : index"));
            (cl, Some(inb))
        };
    // One vector of channels from `cv` at output pixel (b, y, x): the taps, the epilogue, the
    // store into the chunk `o` (at its row `wy`).
    #[allow(clippy::too_many_arguments)]
    let pixel = |e: &mut E,
                 o: &str,
                 (b, wy, xx): (&str, &str, &str),
                 rows: &[(String, Option<String>)],
                 cols: &[(String, Option<String>)],
                 cv: &str,
                 masked: bool|
     -> String {
        let mut acc = init.clone();
        let tmask = if masked { mask.as_deref() } else { None };
        for (i, (r, rin)) in rows.iter().enumerate() {
            for (j, (q, qin)) in cols.iter().enumerate() {
                let (xv, fv) = (e.fresh(), e.fresh());
                e.line(&format!(
                    "{xv} = vector.transfer_read {}[{b}, {r}, {q}, {cv}], {pad}{} : {xt}, {vt}",
                    x.0,
                    transfer_tail(tmask)
                ));
                let w = match win {
                    Win::Max => {
                        e.line(&format!("{fv} = arith.maximumf {acc}, {xv} : {vt}"));
                        acc = fv;
                        continue;
                    }
                    Win::Avg => {
                        e.line(&format!("{fv} = arith.addf {acc}, {xv} : {vt}"));
                        acc = fv;
                        continue;
                    }
                    Win::Depthwise(w) => w,
                };
                let wv = e.fresh();
                let (ci, cj) = (e.idx(i as i64), e.idx(j as i64));
                e.line(&format!(
                    "{wv} = vector.transfer_read {}[{ci}, {cj}, {c0}, {cv}], {pad}{} : {}, {vt}",
                    w.0,
                    transfer_tail(tmask),
                    tensor_ty(&w.1)
                ));
                let xin = match (rin, qin) {
                    (Some(a), Some(bq)) => {
                        let both = e.fresh();
                        e.line(&format!("{both} = arith.andi {a}, {bq} : i1"));
                        let s = e.fresh();
                        e.line(&format!("{s} = arith.select {both}, {xv}, {zero} : {vt}"));
                        s
                    }
                    _ => xv,
                };
                e.line(&format!("{fv} = vector.fma {xin}, {wv}, {acc} : {vt}"));
                acc = fv;
            }
        }
        if matches!(win, Win::Avg) {
            let v = e.fresh();
            e.line(&format!("{v} = arith.divf {acc}, {count} : {vt}"));
            acc = v;
        }
        for x in &epi {
            let operand = x.operand(e, cv, &vt, &zero, &pad, tmask);
            acc = x.apply(e, &acc, &operand, &vt);
        }
        let v = e.fresh();
        e.line(&format!(
            "{v} = vector.transfer_write {acc}, {o}[{wy}, {xx}, {cv}]{} : {vt}, {st}",
            transfer_tail(tmask)
        ));
        v
    };
    let for_c = |e: &mut E,
                 o: &str,
                 range: (&str, &str, &str),
                 inner: &mut dyn FnMut(&mut E, &str, &str) -> String| {
        for_carrying(e, &st, o, range, inner)
    };
    let (coh, cow, clanes, ccfull) = (
        e.idx(oh as i64),
        e.idx(ow as i64),
        e.idx(lanes as i64),
        e.idx(cfull as i64),
    );
    let pixel = std::cell::RefCell::new(pixel);
    // Chunks of the rows `(image, y)`, in parallel.
    let res = par_rows(
        e,
        &flat,
        &flat_ty,
        &m,
        &[ow, ch],
        1,
        min_rows,
        &mut |e, o, r0, len| {
            for_c(e, o, (&c0, len, &c1), &mut |e, o, wr| {
                let (r, b, y) = (e.fresh(), e.fresh(), e.fresh());
                e.line(&format!("{r} = arith.addi {r0}, {wr} : index"));
                e.line(&format!("{b} = arith.divui {r}, {coh} : index"));
                e.line(&format!("{y} = arith.remui {r}, {coh} : index"));
                let rows: Vec<_> = (0..kh).map(|k| taps(e, &y, 0, k, h)).collect();
                for_c(e, o, (&c0, &cow, &c1), &mut |e, o, xx| {
                    let cols: Vec<_> = (0..kw).map(|k| taps(e, xx, 1, k, wd)).collect();
                    let mut o = o.to_string();
                    if cfull > 0 {
                        o = for_c(e, &o, (&c0, &ccfull, &clanes), &mut |e, o, cv| {
                            (pixel.borrow_mut())(e, o, (&b, wr, xx), &rows, &cols, cv, false)
                        });
                    }
                    if cfull < ch {
                        o = (pixel.borrow_mut())(e, &o, (&b, wr, xx), &rows, &cols, &ccfull, true);
                    }
                    o
                })
            })
        },
    );
    let nbv = match ot.shape[0].known() {
        Some(n) => n.to_string(),
        None => nb,
    };
    let v = e.fresh();
    e.line(&format!(
        "{v} = tensor.expand_shape {res} [[0, 1], [2], [3]] output_shape [{nbv}, {oh}, {ow}, {ch}] : {flat_ty} into {ct}"
    ));
    Ok(v)
}

/// Whether `pool_grad` runs as `max_pool_grad`: f32, dims known but the batch, no padding,
/// windows that do not overlap (stride at least the window, no dilation).
pub(crate) fn max_pool_grad_fits(x: &TensorType, p: &forgec_ir::PoolAttrs) -> bool {
    x.dtype == DType::F32
        && x.rank() == 4
        && p.window.len() == 2
        && x.shape[1..].iter().all(|d| d.known().is_some())
        && p.pads.iter().all(|q| *q == (0, 0))
        && (0..2)
            .all(|i| p.strides[i] >= p.window[i] && p.dilations.get(i).copied().unwrap_or(1) == 1)
}

/// A max pooling's gradient (`pool_grad`, windows apart) in one pass over the input, vectorised
/// across channels: input pixel (y, x) is tap (y % sh, x % sw) of window (y / sh, x / sw), and
/// gets that window's gradient where its first tap equal to the window's maximum (found
/// scanning the taps, per channel) is this one; pixels outside every window get zero. Rows
/// `(image, y)` go in chunks over the threads.
pub(crate) fn max_pool_grad(
    e: &mut E,
    ins: &[(String, TensorType)],
    p: &forgec_ir::PoolAttrs,
    ot: &TensorType,
) -> R<Option<String>> {
    let (x, y, dy) = (&ins[0], &ins[1], &ins[2]);
    if !max_pool_grad_fits(&x.1, p) {
        return Ok(None);
    }
    let ys: Vec<usize> = y.1.shape[1..3].iter().filter_map(|d| d.known()).collect();
    let (oh, ow) = (ys[0], ys[1]);
    let [kh, kw] = [p.window[0], p.window[1]];
    let (sh, sw) = (p.strides[0], p.strides[1]);
    let lanes = 2 * simd(e);
    let (vt, it) = (
        format!("vector<{lanes}xf32>"),
        format!("vector<{lanes}xi32>"),
    );
    let (xt, yt) = (tensor_ty(&x.1), tensor_ty(&y.1));
    let (wd, ch) = (
        ot.shape[2].known().unwrap_or(0),
        ot.shape[3].known().unwrap_or(0),
    );
    let min_rows = chunk_min_rows(wd * ch * (kh * kw + 2));
    let (zero, pad, none) = (e.fresh(), e.fresh(), e.fresh());
    e.line(&format!("{zero} = arith.constant dense<0.0> : {vt}"));
    e.line(&format!("{pad} = arith.constant 0.0 : f32"));
    e.line(&format!(
        "{none} = arith.constant dense<{}> : {it}",
        kh * kw
    ));
    let tapc: Vec<String> = (0..kh * kw)
        .map(|t| {
            let v = e.fresh();
            e.line(&format!("{v} = arith.constant dense<{t}> : {it}"));
            v
        })
        .collect();
    // Window index and tap along one axis (`o` the input coordinate): the window clamped into
    // the output (reads stay in bounds), and whether the pixel is inside a window at all.
    let split = |e: &mut E, o: &str, s: usize, k: usize, n: usize| -> Vec<String> {
        let (cs, ck, cn, clast) = (
            e.idx(s as i64),
            e.idx(k as i64),
            e.idx(n as i64),
            e.idx(n as i64 - 1),
        );
        let v: Vec<String> = (0..6).map(|_| e.fresh()).collect();
        let (a, t, ca, inw, ina, both) = (&v[0], &v[1], &v[2], &v[3], &v[4], &v[5]);
        e.line(&format!("{a} = arith.divui {o}, {cs} : index"));
        e.line(&format!("{t} = arith.remui {o}, {cs} : index"));
        e.line(&format!("{ca} = arith.minui {a}, {clast} : index"));
        e.line(&format!("{inw} = arith.cmpi ult, {t}, {ck} : index"));
        e.line(&format!("{ina} = arith.cmpi ult, {a}, {cn} : index"));
        e.line(&format!("{both} = arith.andi {inw}, {ina} : i1"));
        vec![ca.clone(), t.clone(), both.clone()]
    };
    let ckw = e.idx(kw as i64);
    let mut row = |e: &mut E, _b: &str, yy: &str| split(e, yy, sh, kh, oh);
    // A pixel's window (a, bb), its tap and whether it is inside a window at all.
    let mut pixel = |e: &mut E, r: &[String], xx: &str| -> Vec<String> {
        let (a, i, row_in) = (&r[0], &r[1], &r[2]);
        let c = split(e, xx, sw, kw, ow);
        let (bb, j, col_in) = (&c[0], &c[1], &c[2]);
        let (inside, ti, t, tap) = (e.fresh(), e.fresh(), e.fresh(), e.fresh());
        e.line(&format!("{inside} = arith.andi {row_in}, {col_in} : i1"));
        e.line(&format!("{ti} = arith.muli {i}, {ckw} : index"));
        e.line(&format!("{t} = arith.addi {ti}, {j} : index"));
        let t32 = e.fresh();
        e.line(&format!("{t32} = arith.index_cast {t} : index to i32"));
        e.line(&format!("{tap} = vector.broadcast {t32} : i32 to {it}"));
        vec![a.clone(), bb.clone(), tap, inside]
    };
    // One vector of channels from `cv`: the window's gradient where this pixel is its first
    // maximum.
    let mut vector = |e: &mut E, o: &str, at: Px, v: &[String], cv: &str, mask: Option<&str>| {
        let (a, bb, tap, inside) = (&v[0], &v[1], &v[2], &v[3]);
        let (b, wy, xx) = (at.b, at.wr, at.x);
        let tail = transfer_tail(mask);
        let (yv, dv) = (e.fresh(), e.fresh());
        e.line(&format!(
            "{yv} = vector.transfer_read {}[{b}, {a}, {bb}, {cv}], {pad}{tail} : {yt}, {vt}",
            y.0
        ));
        e.line(&format!(
            "{dv} = vector.transfer_read {}[{b}, {a}, {bb}, {cv}], {pad}{tail} : {yt}, {vt}",
            dy.0
        ));
        let (csh, csw) = (e.idx(sh as i64), e.idx(sw as i64));
        let (r0, q0) = (e.fresh(), e.fresh());
        e.line(&format!("{r0} = arith.muli {a}, {csh} : index"));
        e.line(&format!("{q0} = arith.muli {bb}, {csw} : index"));
        // The first tap equal to the maximum: the taps scanned last to first.
        let mut first = none.clone();
        for t in (0..kh * kw).rev() {
            let (ci, cj) = (e.idx((t / kw) as i64), e.idx((t % kw) as i64));
            let (r, q, xv, eq, f) = (e.fresh(), e.fresh(), e.fresh(), e.fresh(), e.fresh());
            e.line(&format!("{r} = arith.addi {r0}, {ci} : index"));
            e.line(&format!("{q} = arith.addi {q0}, {cj} : index"));
            e.line(&format!(
                "{xv} = vector.transfer_read {}[{b}, {r}, {q}, {cv}], {pad}{tail} : {xt}, {vt}",
                x.0
            ));
            e.line(&format!("{eq} = arith.cmpf oeq, {xv}, {yv} : {vt}"));
            e.line(&format!(
                "{f} = arith.select {eq}, {}, {first} : vector<{lanes}xi1>, {it}",
                tapc[t]
            ));
            first = f;
        }
        let (mine, g, z, w) = (e.fresh(), e.fresh(), e.fresh(), e.fresh());
        e.line(&format!("{mine} = arith.cmpi eq, {first}, {tap} : {it}"));
        e.line(&format!(
            "{g} = arith.select {mine}, {dv}, {zero} : vector<{lanes}xi1>, {vt}"
        ));
        e.line(&format!("{z} = arith.select {inside}, {g}, {zero} : {vt}"));
        e.line(&format!(
            "{w} = vector.transfer_write {z}, {o}[{wy}, {xx}, {cv}]{tail} : {vt}, tensor<?x{wd}x{ch}xf32>"
        ));
        w
    };
    Ok(Some(pixel_pass(
        e,
        ot,
        lanes,
        min_rows,
        &mut row,
        &mut pixel,
        &mut vector,
    )?))
}

/// Where a vector of a `pixel_pass` goes: the image `b`, the chunk's row `wr` (where it writes)
/// and the pixel's column `x`.
#[derive(Clone, Copy)]
pub(crate) struct Px<'a> {
    pub(crate) b: &'a str,
    pub(crate) wr: &'a str,
    pub(crate) x: &'a str,
}

/// What a row of a `pixel_pass` computes once for its pixels (given the image and y), and a
/// pixel once for its vectors (given the row's values and x).
type RowFn<'a> = dyn FnMut(&mut E, &str, &str) -> Vec<String> + 'a;
type PixelFn<'a> = dyn FnMut(&mut E, &[String], &str) -> Vec<String> + 'a;
/// One vector of channels from `cv` into the chunk `o` (under `mask` for the last, partial
/// one), given the pixel's values; returns the chunk.
type VectorFn<'a> = dyn FnMut(&mut E, &str, Px, &[String], &str, Option<&str>) -> String + 'a;

/// A pass over a channels-last f32 output `ot` (`[N, H, W, C]`, dims known but the batch): rows
/// `(image, y)` in chunks over the threads (at least `min_rows` a chunk), each pixel of a row,
/// its channels as vectors of `lanes` (the last one masked): what `pool_grad` and `col2im`
/// write, one vector at a time.
pub(crate) fn pixel_pass(
    e: &mut E,
    ot: &TensorType,
    lanes: usize,
    min_rows: usize,
    row: &mut RowFn,
    pixel: &mut PixelFn,
    vector: &mut VectorFn,
) -> R<String> {
    let dim = |i: usize| ot.shape[i].known().unwrap_or(0);
    let (h, wd, ch) = (dim(1), dim(2), dim(3));
    let ct = tensor_ty(ot);
    let cfull = ch - ch % lanes;
    let (c0, c1) = (e.idx(0), e.idx(1));
    let nb = e.dim_val(&ot.shape[0])?;
    let out = e.empty(ot)?;
    let st = format!("tensor<?x{wd}x{ch}xf32>");
    let (m, mdim) = rows_of(e, &ot.shape[0], h)?;
    let flat_ty = format!("tensor<{mdim}x{wd}x{ch}xf32>");
    let flat = e.fresh();
    e.line(&format!(
        "{flat} = tensor.collapse_shape {out} [[0, 1], [2], [3]] : {ct} into {flat_ty}"
    ));
    let mask = (cfull < ch).then(|| {
        let mk = e.fresh();
        let crem = e.idx((ch - cfull) as i64);
        e.line(&format!(
            "{mk} = vector.create_mask {crem} : vector<{lanes}xi1>"
        ));
        mk
    });
    let (chh, cww) = (e.idx(h as i64), e.idx(wd as i64));
    let (clanes, ccfull) = (e.idx(lanes as i64), e.idx(cfull as i64));
    let vector = std::cell::RefCell::new(vector);
    let res = par_rows(
        e,
        &flat,
        &flat_ty,
        &m,
        &[wd, ch],
        1,
        min_rows,
        &mut |e, o, r0, len| {
            for_carrying(e, &st, o, (&c0, len, &c1), &mut |e, o, wr| {
                let (r, b, yy) = (e.fresh(), e.fresh(), e.fresh());
                e.line(&format!("{r} = arith.addi {r0}, {wr} : index"));
                e.line(&format!("{b} = arith.divui {r}, {chh} : index"));
                e.line(&format!("{yy} = arith.remui {r}, {chh} : index"));
                let rv = row(e, &b, &yy);
                for_carrying(e, &st, o, (&c0, &cww, &c1), &mut |e, o, xx| {
                    let pv = pixel(e, &rv, xx);
                    let at = Px { b: &b, wr, x: xx };
                    let mut o = o.to_string();
                    if cfull > 0 {
                        o = for_carrying(e, &st, &o, (&c0, &ccfull, &clanes), &mut |e, o, cv| {
                            (vector.borrow_mut())(e, o, at, &pv, cv, None)
                        });
                    }
                    if cfull < ch {
                        o = (vector.borrow_mut())(e, &o, at, &pv, &ccfull, mask.as_deref());
                    }
                    o
                })
            })
        },
    );
    let nbv = match ot.shape[0].known() {
        Some(n) => n.to_string(),
        None => nb,
    };
    let v = e.fresh();
    e.line(&format!(
        "{v} = tensor.expand_shape {res} [[0, 1], [2], [3]] output_shape [{nbv}, {h}, {wd}, {ch}] : {flat_ty} into {ct}"
    ));
    Ok(v)
}

/// `conv_kernel_grad` as a register-tiled kernel, f32 and every dim known but the batch: the
/// kernel gradient as `[kh kw C, F]`, row `(i, j, c)` of A read in place from the input (the
/// pixel each output position's window has at tap (i, j), zero in the padding), B the output
/// gradient; K runs over the samples and, within each, the output positions. A tile keeps a
/// total per accumulator and a sum per sample, added to the total after each sample (as the
/// interpreter sums). Rows go in chunks over the threads.
pub(crate) fn conv_kernel_grad(
    e: &mut E,
    ins: &[(String, TensorType)],
    c: &ConvAttrs,
    kernel: &[usize],
    ot: &TensorType,
) -> R<Option<String>> {
    let (x, dy) = (&ins[0], &ins[1]);
    let known = |t: &TensorType| t.shape[1..].iter().all(|d| d.known().is_some());
    let fits = [&x.1, &dy.1, ot].iter().all(|t| t.dtype == DType::F32)
        && x.1.rank() == 4
        && known(&x.1)
        && known(&dy.1)
        && kernel.len() == 2;
    if !fits {
        return Ok(None);
    }
    let dim = |t: &TensorType, i: usize| t.shape[i].known().unwrap_or(0);
    let (h, wd, ci) = (dim(&x.1, 1), dim(&x.1, 2), dim(&x.1, 3));
    let (oh, ow, co) = (dim(&dy.1, 1), dim(&dy.1, 2), dim(&dy.1, 3));
    let (kh, kw) = (kernel[0], kernel[1]);
    let kk = kh * kw * ci;
    let padded = c.pads.iter().any(|p| *p != (0, 0));
    let w = 2 * simd(e);
    let rows = if simd(e) >= 16 { 8 } else { 6 };
    let vt = format!("vector<{w}xf32>");
    let nfull = co - co % w;
    let (xt, dt, ct) = (tensor_ty(&x.1), tensor_ty(&dy.1), tensor_ty(ot));
    let ft = format!("tensor<{kk}x{co}xf32>");
    let st = "tensor<?x?xf32>".to_string();
    let out = e.empty(ot)?;
    let flat = e.fresh();
    e.line(&format!(
        "{flat} = tensor.collapse_shape {out} [[0, 1, 2], [3]] : {ct} into {ft}"
    ));
    let nb = e.dim_val(&x.1.shape[0])?;
    let (c0, c1) = (e.idx(0), e.idx(1));
    let (zero, pad) = (e.fresh(), e.fresh());
    e.line(&format!("{zero} = arith.constant dense<0.0> : {vt}"));
    e.line(&format!("{pad} = arith.constant 0.0 : f32"));
    let mask = (nfull < co).then(|| {
        let mk = e.fresh();
        let crem = e.idx((co - nfull) as i64);
        e.line(&format!(
            "{mk} = vector.create_mask {crem} : vector<{w}xi1>"
        ));
        mk
    });
    let cs = [e.idx(c.strides[0] as i64), e.idx(c.strides[1] as i64)];
    let (cci, ckw) = (e.idx(ci as i64), e.idx(kw as i64));
    let (cd0, cd1) = (e.idx(c.dilations[0] as i64), e.idx(c.dilations[1] as i64));
    let (cp0, cp1) = (e.idx(c.pads[0].0 as i64), e.idx(c.pads[1].0 as i64));
    let (chh, cww, coh, cow) = (
        e.idx(h as i64),
        e.idx(wd as i64),
        e.idx(oh as i64),
        e.idx(ow as i64),
    );
    let op = |e: &mut E, rhs: String| {
        let v = e.fresh();
        e.line(&format!("{v} = {rhs}"));
        v
    };
    // One tile: `nr` rows from chunk row `i` (global row `r0 + i`) by the panel at column `j`.
    let tile = |e: &mut E, o: &str, r0: &str, i: &str, j: &str, nr: usize, masked: bool| {
        let tail = transfer_tail(if masked { mask.as_deref() } else { None });
        // Each row's tap offsets and channel.
        let mut taps = Vec::new();
        for r in 0..nr {
            let cr = e.idx(r as i64);
            let li = op(e, format!("arith.addi {i}, {cr} : index"));
            let gi = op(e, format!("arith.addi {r0}, {li} : index"));
            let tap = op(e, format!("arith.divui {gi}, {cci} : index"));
            let ch = op(e, format!("arith.remui {gi}, {cci} : index"));
            let ti = op(e, format!("arith.divui {tap}, {ckw} : index"));
            let tj = op(e, format!("arith.remui {tap}, {ckw} : index"));
            let dh = op(e, format!("arith.muli {ti}, {cd0} : index"));
            let dw = op(e, format!("arith.muli {tj}, {cd1} : index"));
            let oy = op(e, format!("arith.subi {dh}, {cp0} : index"));
            let ox = op(e, format!("arith.subi {dw}, {cp1} : index"));
            taps.push((li, ch, oy, ox));
        }
        let tys = vec![vt.clone(); nr].join(", ");
        let bind = |names: &[String], vals: &[String]| -> String {
            names
                .iter()
                .zip(vals)
                .map(|(a, b)| format!("{a} = {b}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let fresh_n = |e: &mut E| -> Vec<String> { (0..nr).map(|_| e.fresh()).collect() };
        let (tot_in, part_in, acc_in) = (fresh_n(e), fresh_n(e), fresh_n(e));
        let (nv, yv, xv) = (e.fresh(), e.fresh(), e.fresh());
        let (tot, part, accs) = (e.fresh(), e.fresh(), e.fresh());
        let zeros = vec![zero.clone(); nr];
        let mut body = String::new();
        let _ = writeln!(
            body,
            "{tot}:{nr} = scf.for {nv} = {c0} to {nb} step {c1} iter_args({}) -> ({tys}) {{",
            bind(&tot_in, &zeros)
        );
        let _ = writeln!(
            body,
            "      {part}:{nr} = scf.for {yv} = {c0} to {coh} step {c1} iter_args({}) -> ({tys}) {{",
            bind(&part_in, &zeros)
        );
        let ys = e.fresh();
        let _ = writeln!(body, "      {ys} = arith.muli {yv}, {} : index", cs[0]);
        let _ = writeln!(
            body,
            "      {accs}:{nr} = scf.for {xv} = {c0} to {cow} step {c1} iter_args({}) -> ({tys}) {{",
            bind(&acc_in, &part_in)
        );
        let (xs, bv) = (e.fresh(), e.fresh());
        let _ = writeln!(body, "      {xs} = arith.muli {xv}, {} : index", cs[1]);
        let _ = writeln!(
            body,
            "      {bv} = vector.transfer_read {}[{nv}, {yv}, {xv}, {j}], {pad}{tail} : {dt}, {vt}",
            dy.0
        );
        let mut next = Vec::new();
        for (r, (_, ch, oy, ox)) in taps.iter().enumerate() {
            let (ih, iw, a, ab, f) = (e.fresh(), e.fresh(), e.fresh(), e.fresh(), e.fresh());
            let _ = writeln!(body, "      {ih} = arith.addi {ys}, {oy} : index");
            let _ = writeln!(body, "      {iw} = arith.addi {xs}, {ox} : index");
            if padded {
                let v: Vec<String> = (0..9).map(|_| e.fresh()).collect();
                let _ = writeln!(body, "      {} = arith.cmpi sge, {ih}, {c0} : index", v[0]);
                let _ = writeln!(body, "      {} = arith.cmpi slt, {ih}, {chh} : index", v[1]);
                let _ = writeln!(body, "      {} = arith.cmpi sge, {iw}, {c0} : index", v[2]);
                let _ = writeln!(body, "      {} = arith.cmpi slt, {iw}, {cww} : index", v[3]);
                let _ = writeln!(body, "      {} = arith.andi {}, {} : i1", v[4], v[0], v[1]);
                let _ = writeln!(body, "      {} = arith.andi {}, {} : i1", v[5], v[2], v[3]);
                let _ = writeln!(body, "      {} = arith.andi {}, {} : i1", v[6], v[4], v[5]);
                let _ = writeln!(
                    body,
                    "      {} = arith.select {}, {ih}, {c0} : index",
                    v[7], v[6]
                );
                let _ = writeln!(
                    body,
                    "      {} = arith.select {}, {iw}, {c0} : index",
                    v[8], v[6]
                );
                let raw = e.fresh();
                let _ = writeln!(
                    body,
                    "      {raw} = tensor.extract {}[{nv}, {}, {}, {ch}] : {xt}",
                    x.0, v[7], v[8]
                );
                let _ = writeln!(
                    body,
                    "      {a} = arith.select {}, {raw}, {pad} : f32",
                    v[6]
                );
            } else {
                let _ = writeln!(
                    body,
                    "      {a} = tensor.extract {}[{nv}, {ih}, {iw}, {ch}] : {xt}",
                    x.0
                );
            }
            let _ = writeln!(body, "      {ab} = vector.broadcast {a} : f32 to {vt}");
            let _ = writeln!(
                body,
                "      {f} = vector.fma {ab}, {bv}, {} : {vt}",
                acc_in[r]
            );
            next.push(f);
        }
        let res = |v: &str| -> String {
            (0..nr)
                .map(|r| format!("{v}#{r}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let _ = writeln!(body, "      scf.yield {} : {tys}\n    }}", next.join(", "));
        let _ = writeln!(body, "      scf.yield {} : {tys}\n    }}", res(&accs));
        let mut sums = Vec::new();
        for (r, t) in tot_in.iter().enumerate() {
            let s = e.fresh();
            let _ = writeln!(body, "      {s} = arith.addf {t}, {part}#{r} : {vt}");
            sums.push(s);
        }
        let _ = write!(body, "      scf.yield {} : {tys}\n    }}", sums.join(", "));
        e.line(&body);
        let mut cur = o.to_string();
        for (r, (li, ..)) in taps.iter().enumerate() {
            let v = e.fresh();
            e.line(&format!(
                "{v} = vector.transfer_write {tot}#{r}, {cur}[{li}, {j}]{tail} : {vt}, {st}"
            ));
            cur = v;
        }
        cur
    };
    let tile = std::cell::RefCell::new(tile);
    let (crows, cw, cnfull) = (e.idx(rows as i64), e.idx(w as i64), e.idx(nfull as i64));
    let ckk = e.idx(kk as i64);
    let min_rows = chunk_min_rows(SYMBOLIC_K * oh * ow * co);
    let res = par_rows(
        e,
        &flat,
        &ft,
        &ckk,
        &[co],
        rows,
        min_rows,
        &mut |e, o, r0, len| {
            let o = cast_rows(e, o, co);
            let (rem, mfull) = (e.fresh(), e.fresh());
            e.line(&format!("{rem} = arith.remui {len}, {crows} : index"));
            e.line(&format!("{mfull} = arith.subi {len}, {rem} : index"));
            let blocks = |e: &mut E, o: &str, lo: &str, hi: &str, step: &str, nr: usize| {
                for_carrying(e, &st, o, (lo, hi, step), &mut |e, o, i| {
                    let mut o = o.to_string();
                    if nfull > 0 {
                        o = for_carrying(e, &st, &o, (&c0, &cnfull, &cw), &mut |e, o, j| {
                            (tile.borrow_mut())(e, o, r0, i, j, nr, false)
                        });
                    }
                    if nfull < co {
                        o = (tile.borrow_mut())(e, &o, r0, i, &cnfull, nr, true);
                    }
                    o
                })
            };
            let o = blocks(e, &o, &c0, &mfull, &crows, rows);
            let o = blocks(e, &o, &mfull, len, &c1, 1);
            uncast_rows(e, &o, co)
        },
    );
    let v = e.fresh();
    e.line(&format!(
        "{v} = tensor.expand_shape {res} [[0, 1, 2], [3]] output_shape [{kh}, {kw}, {ci}, {co}] : {ft} into {ct}"
    ));
    Ok(Some(v))
}

/// A chunk `tensor<?xNxf32>` as `tensor<?x?xf32>` (the type the tiles write), and back.
fn cast_rows(e: &mut E, o: &str, n: usize) -> String {
    let v = e.fresh();
    e.line(&format!(
        "{v} = tensor.cast {o} : tensor<?x{n}xf32> to tensor<?x?xf32>"
    ));
    v
}

fn uncast_rows(e: &mut E, o: &str, n: usize) -> String {
    let v = e.fresh();
    e.line(&format!(
        "{v} = tensor.cast {o} : tensor<?x?xf32> to tensor<?x{n}xf32>"
    ));
    v
}

/// `col2im` in one pass over the output, vectorised across channels (f32, dims known but the
/// batch): output pixel (y, x) sums, in the taps' row-major order, the column of each tap (i, j)
/// whose window reaches it (`(y + p0 - i d0) / s0` exact and in range, likewise for x), each read
/// as a vector of channels and selected to zero where the tap does not reach. Rows `(image, y)`
/// go in chunks over the threads.
pub(crate) fn col2im(
    e: &mut E,
    x: &(String, TensorType),
    c: &ConvAttrs,
    kernel: &[usize],
    ot: &TensorType,
) -> R<Option<String>> {
    let known = |t: &TensorType| t.shape[1..].iter().all(|d| d.known().is_some());
    if x.1.dtype != DType::F32 || ot.dtype != DType::F32 || !known(&x.1) || !known(ot) {
        return Ok(None);
    }
    let dim = |t: &TensorType, i: usize| t.shape[i].known().unwrap_or(0);
    let (oh, ow) = (dim(&x.1, 1), dim(&x.1, 2));
    let (wd, ch) = (dim(ot, 2), dim(ot, 3));
    let (kh, kw) = (kernel[0], kernel[1]);
    let lanes = 2 * simd(e);
    let vt = format!("vector<{lanes}xf32>");
    let xt = tensor_ty(&x.1);
    let min_rows = chunk_min_rows(wd * ch * kh * kw);
    let c0 = e.idx(0);
    let (zero, pad) = (e.fresh(), e.fresh());
    e.line(&format!("{zero} = arith.constant dense<0.0> : {vt}"));
    e.line(&format!("{pad} = arith.constant 0.0 : f32"));
    // Tap `i` along axis `a` at output coordinate `o`: the column position (clamped, so reads
    // stay in bounds) and whether the tap reaches the pixel.
    let reach = |e: &mut E, a: usize, o: &str, i: usize, len: usize| -> [String; 2] {
        let (cp, cd, cs, cn) = (
            e.idx(c.pads[a].0 as i64),
            e.idx((i * c.dilations[a]) as i64),
            e.idx(c.strides[a] as i64),
            e.idx(len as i64),
        );
        let v: Vec<String> = (0..10).map(|_| e.fresh()).collect();
        e.line(&format!("{} = arith.addi {o}, {cp} : index", v[0]));
        e.line(&format!("{} = arith.subi {}, {cd} : index", v[1], v[0]));
        e.line(&format!("{} = arith.divsi {}, {cs} : index", v[2], v[1]));
        e.line(&format!("{} = arith.remsi {}, {cs} : index", v[3], v[1]));
        e.line(&format!(
            "{} = arith.cmpi sge, {}, {c0} : index",
            v[4], v[1]
        ));
        e.line(&format!("{} = arith.cmpi eq, {}, {c0} : index", v[5], v[3]));
        e.line(&format!(
            "{} = arith.cmpi slt, {}, {cn} : index",
            v[6], v[2]
        ));
        e.line(&format!("{} = arith.andi {}, {} : i1", v[7], v[4], v[5]));
        e.line(&format!("{} = arith.andi {}, {} : i1", v[8], v[7], v[6]));
        e.line(&format!(
            "{} = arith.select {}, {}, {c0} : index",
            v[9], v[8], v[2]
        ));
        [v[9].clone(), v[8].clone()]
    };
    let bases: Vec<String> = (0..kh * kw).map(|t| e.idx((t * ch) as i64)).collect();
    // A row's taps along y: position and reach, two values each.
    let mut row = |e: &mut E, _b: &str, yy: &str| -> Vec<String> {
        (0..kh).flat_map(|i| reach(e, 0, yy, i, oh)).collect()
    };
    // A pixel's taps: (row position, column position, reaches) each, row-major.
    let mut pixel = |e: &mut E, rows: &[String], xx: &str| -> Vec<String> {
        let cols: Vec<[String; 2]> = (0..kw).map(|j| reach(e, 1, xx, j, ow)).collect();
        let mut taps = Vec::new();
        for t in 0..kh * kw {
            let (q, okh) = (&rows[2 * (t / kw)], &rows[2 * (t / kw) + 1]);
            let [p, okw] = &cols[t % kw];
            let ok = e.fresh();
            e.line(&format!("{ok} = arith.andi {okh}, {okw} : i1"));
            taps.extend([q.clone(), p.clone(), ok]);
        }
        taps
    };
    // One vector of channels from `cv`: the taps' columns summed in order.
    let mut vector = |e: &mut E, o: &str, at: Px, taps: &[String], cv: &str, mask: Option<&str>| {
        let tail = transfer_tail(mask);
        let mut acc = zero.clone();
        for (t, tap) in taps.chunks(3).enumerate() {
            let (q, p, ok) = (&tap[0], &tap[1], &tap[2]);
            let (k, v, s, a) = (e.fresh(), e.fresh(), e.fresh(), e.fresh());
            e.line(&format!("{k} = arith.addi {}, {cv} : index", bases[t]));
            e.line(&format!(
                "{v} = vector.transfer_read {}[{}, {q}, {p}, {k}], {pad}{tail} : {xt}, {vt}",
                x.0, at.b
            ));
            e.line(&format!("{s} = arith.select {ok}, {v}, {zero} : {vt}"));
            e.line(&format!("{a} = arith.addf {acc}, {s} : {vt}"));
            acc = a;
        }
        let w = e.fresh();
        e.line(&format!(
            "{w} = vector.transfer_write {acc}, {o}[{}, {}, {cv}]{tail} : {vt}, tensor<?x{wd}x{ch}xf32>",
            at.wr, at.x
        ));
        w
    };
    Ok(Some(pixel_pass(
        e,
        ot,
        lanes,
        min_rows,
        &mut row,
        &mut pixel,
        &mut vector,
    )?))
}
