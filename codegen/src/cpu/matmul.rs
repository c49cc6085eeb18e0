//! The CPU's register-tiled matmul kernel (`mm_kernel`), the packing of its operands, and the
//! splitting of its work over the context's threads.

use super::*;
use crate::lower::*;
use forgec_ir::{DType, Dim, Graph, Node, Op, Tensor, TensorType, ValueId};
use forgec_runtime::Data;
use std::collections::HashMap;
use std::fmt::Write;

/// `(K, N)` when an `a x b -> ot` matmul fits the register-tiled kernel: f32, `[M, K] x [K, N]`
/// with N known and K known (`Some`) or the same symbol on both sides (`None`: a weight
/// gradient, which contracts over the batch).
pub(crate) fn fast_matmul_fits(
    a: &TensorType,
    b: &TensorType,
    ot: &TensorType,
) -> Option<(Option<usize>, usize)> {
    let f32_only = [a, b, ot].iter().all(|t| t.dtype == DType::F32);
    if !f32_only || a.rank() != 2 || b.rank() != 2 || a.shape[1] != b.shape[0] {
        return None;
    }
    let n = b.shape[1].known()?;
    let k = b.shape[0].known();
    (k != Some(0) && n > 0).then_some((k, n))
}

/// Constant weights used only as the right operand of matmuls that the tiled kernel runs:
/// they are stored in column panels, so that the kernel reads each panel contiguously.
pub(crate) fn packable_weights(g: &Graph, simd: usize) -> HashMap<ValueId, Pack> {
    let mut out = HashMap::new();
    for n in &g.nodes {
        let (Op::Const { .. }, [v]) = (&n.op, n.outputs.as_slice()) else {
            continue;
        };
        let users: Vec<&Node> = g.nodes.iter().filter(|u| u.inputs.contains(v)).collect();
        let packs: Vec<Option<Pack>> = users
            .iter()
            .map(|u| {
                let (a, w, ot) = (g.ty(u.inputs[0]), g.ty(*v), g.ty(u.outputs[0]));
                if u.inputs.get(1) != Some(v) || u.inputs[0] == *v {
                    return None;
                }
                match &u.op {
                    Op::MatMul => match fast_matmul_fits(a, w, ot) {
                        Some((Some(_), _)) => Some(Pack::Panels),
                        _ => None,
                    },
                    Op::Conv(c) if winograd::fits(a, w, c, ot, simd) => Some(Pack::Winograd),
                    Op::Conv(c) => fast_conv_fits(a, w, c, ot).then_some(Pack::Panels),
                    _ => None,
                }
            })
            .collect();
        // Every user must read the same layout.
        if let Some(Some(first)) = packs.first() {
            if packs.iter().all(|p| p.as_ref() == Some(first)) && !g.outputs.contains(v) {
                out.insert(*v, *first);
            }
        }
    }
    out
}

/// The layout a constant weight is stored in for the kernels that read it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Pack {
    /// Column panels for `mm_kernel` (see `pack_panels`).
    Panels,
    /// Transformed for a Winograd convolution (see `winograd::weights`).
    Winograd,
}

/// The type of `[K, N]` weights packed by `pack_panels` into panels of `w` columns.
pub(crate) fn packed_ty(k: usize, n: usize, w: usize) -> String {
    format!("tensor<{}x{k}x{w}xf32>", n.div_ceil(w))
}

/// `[K, N]` row-major weights as `ceil(N / w)` panels of `[K, w]`, the last one padded with
/// zeros. Convolution weights `[k..., C, F]` count as `[prod(k) * C, F]`.
pub(crate) fn pack_panels(t: &Tensor, w: usize) -> Option<Tensor> {
    let (s, Data::F32(v)) = (t.shape(), t.data()) else {
        return None;
    };
    if s.len() < 2 {
        return None;
    }
    let (k, n) = (s[..s.len() - 1].iter().product::<usize>(), s[s.len() - 1]);
    let p = n.div_ceil(w);
    let mut out = vec![0f32; p * k * w];
    for pi in 0..p {
        for ki in 0..k {
            for l in 0..w.min(n - pi * w) {
                out[(pi * k + ki) * w + l] = v[ki * n + pi * w + l];
            }
        }
    }
    Tensor::from_f32(vec![p, k, w], out).ok()
}

/// An f32 `[M, K] x [K, N]` matmul (M may be the batch symbol) as a register-tiled kernel.
/// Columns go in panels of `w = 2 * simd`. For each panel (which stays in cache) and each block
/// of `rows` rows of A, `rows` vector accumulators take one broadcast-FMA per row and k. Rows
/// left over (all of them at batch 1) go one at a time over `GROUP` panels at once, so that
/// the FMAs still form independent chains. The last columns go under a mask. Every output
/// element sums over k in order, whichever tile computes it: a sample's result does not depend
/// on the batch it came in.
///
/// With `packed`, B is a constant stored by `pack_panels`: every panel is read contiguously
/// and the last one needs no mask. `None` when the shapes do not fit the kernel.
pub(crate) fn fast_matmul(
    e: &mut E,
    ins: &[(String, TensorType)],
    ot: &TensorType,
    packed: bool,
) -> R<Option<String>> {
    let (a, b) = (&ins[0], &ins[1]);
    let Some((k, n)) = fast_matmul_fits(&a.1, &b.1, ot) else {
        return Ok(None);
    };
    let m = e.dim_val(&a.1.shape[0])?;
    let k_sym = match k {
        Some(_) => None,
        None => Some(e.dim_val(&a.1.shape[1])?),
    };
    let out = e.empty(ot)?;
    Ok(Some(mm_kernel(
        e,
        &Mm {
            rows: Rows::Matrix {
                a: &a.0,
                at: tensor_ty(&a.1),
            },
            m,
            k: k.unwrap_or(SYMBOLIC_K),
            k_sym,
            n,
            b: &b.0,
            bt: tensor_ty(&b.1),
            packed,
            ct: tensor_ty(ot),
            out,
        },
    )))
}

/// The operands of `mm_kernel`: A `[m, k]` (`m` an SSA index), B `[k, n]` (or packed), and the
/// empty output tensor `out` of type `ct`.
pub(crate) struct Mm<'a> {
    pub(crate) rows: Rows<'a>,
    pub(crate) m: String,
    /// K; when K is symbolic (`k_sym`, its SSA index), only a guess that sizes the threads'
    /// chunks.
    pub(crate) k: usize,
    pub(crate) k_sym: Option<String>,
    pub(crate) n: usize,
    pub(crate) b: &'a str,
    pub(crate) bt: String,
    pub(crate) packed: bool,
    pub(crate) ct: String,
    pub(crate) out: String,
}

/// Where `mm_kernel` reads A from.
pub(crate) enum Rows<'a> {
    /// A matrix `a` of type `at`.
    Matrix { a: &'a str, at: String },
    /// A convolution's input, read in place (implicit im2col).
    Conv(ConvA),
}

/// A channels-last 2-D convolution's input as the A of `mm_kernel`: row `(n, oh, ow)`, column
/// `(kh, kw, c)` is `x[n, oh * s0 + kh * d0 - p0, ow * s1 + kw * d1 - p1, c]`, zero outside.
pub(crate) struct ConvA {
    pub(crate) x: String,
    pub(crate) xt: String,
    /// Input height, width, channels; output height, width; kernel height, width.
    pub(crate) h: usize,
    pub(crate) w: usize,
    pub(crate) c: usize,
    pub(crate) oh: usize,
    pub(crate) ow: usize,
    pub(crate) kh: usize,
    pub(crate) kw: usize,
    pub(crate) strides: [usize; 2],
    pub(crate) dilations: [usize; 2],
    pub(crate) pads: [usize; 2],
    pub(crate) padded: bool,
}

/// The K that sizes the threads' chunks of a matmul whose K is symbolic (the batch).
pub(crate) const SYMBOLIC_K: usize = 32;

/// The fewest column panels for which `mm_kernel` packs A first: each packed element is then
/// read at least this often.
pub(crate) const PACK_MIN_PANELS: usize = 32;

/// The type of A packed into micro-panels: `[tiles, k, rows]`.
pub(crate) fn packed_rows_ty(k: usize, rows: usize) -> String {
    format!("tensor<?x{k}x{rows}xf32>")
}

/// Rows `r0 .. r0 + mfull` (`mfull` a multiple of `rows`) of A (`[m, k]`, type `at`) packed
/// into micro-panels: `p[t, kk, r] = a[r0 + t * rows + r, kk]`. A register tile then reads its
/// `rows` values for each `kk` from one cache line, one stream for all its rows, where reading
/// A in place takes `rows` streams (whose lines may share a cache set: rows 4 KB apart do).
pub(crate) fn pack_rows(
    e: &mut E,
    (a, at): (&str, &str),
    r0: &str,
    mfull: &str,
    rows: usize,
    k: usize,
) -> String {
    let (c0, c1, ck, crows) = (e.idx(0), e.idx(1), e.idx(k as i64), e.idx(rows as i64));
    let pt = packed_rows_ty(k, rows);
    let nt = ix(e, "divui", mfull, &crows);
    let p0 = e.fresh();
    e.line(&format!("{p0} = tensor.empty({nt}) : {pt}"));
    for_carrying(e, &pt, &p0, (&c0, &nt, &c1), &mut |e, p, t| {
        let tr = ix(e, "muli", t, &crows);
        let base = ix(e, "addi", r0, &tr);
        let srcs: Vec<(String, String)> = (0..rows)
            .map(|r| {
                let cr = e.idx(r as i64);
                (ix(e, "addi", &base, &cr), cr)
            })
            .collect();
        for_carrying(e, &pt, p, (&c0, &ck, &c1), &mut |e, p, kk| {
            let mut cur = p.to_string();
            for (src, cr) in &srcs {
                let (x, y) = (e.fresh(), e.fresh());
                e.line(&format!("{x} = tensor.extract {a}[{src}, {kk}] : {at}"));
                e.line(&format!(
                    "{y} = tensor.insert {x} into {cur}[{t}, {kk}, {cr}] : {pt}"
                ));
                cur = y;
            }
            cur
        })
    })
}

pub(crate) fn mm_kernel(e: &mut E, mm: &Mm) -> String {
    const GROUP: usize = 4;
    let (k, n, packed) = (mm.k, mm.n, mm.packed);
    let (ct, m, b) = (&mm.ct, &mm.m, mm.b);
    let (a, at, conv) = match &mm.rows {
        Rows::Matrix { a, at } => (*a, at.as_str(), None),
        Rows::Conv(cv) => ("", "", Some(cv)),
    };
    let w = 2 * simd(e);
    let rows = if simd(e) >= 16 { 8 } else { 6 };
    let vt = format!("vector<{w}xf32>");
    let bt = if packed {
        packed_ty(k, n, w)
    } else {
        mm.bt.clone()
    };
    let nfull = n - n % w;
    let min_rows = chunk_min_rows(k * n);
    // A matrix read by many panels is first packed into micro-panels (see `pack_rows`).
    let pack_a = conv.is_none() && mm.k_sym.is_none() && n.div_ceil(w) >= PACK_MIN_PANELS;
    debug_assert!(
        !(packed && mm.k_sym.is_some()),
        "packed weights have a known K"
    );
    // (In this order, so that the MLIR of a known K is as it was.)
    let (c0, c1) = (e.idx(0), e.idx(1));
    let ck = match &mm.k_sym {
        Some(v) => v.clone(),
        None => e.idx(k as i64),
    };
    let cw = e.idx(w as i64);
    let out = mm.out.clone();
    // The tiles write a chunk of rows and columns (see `par_grid`).
    let st = if e.serial {
        ct.clone()
    } else {
        "tensor<?x?xf32>".to_string()
    };
    // The fused epilogue, applied to every accumulator before it is stored.
    let epi = std::mem::take(&mut e.epilogue);
    let zero = e.fresh();
    e.line(&format!("{zero} = arith.constant dense<0.0> : {vt}"));
    let pad = e.fresh();
    e.line(&format!("{pad} = arith.constant 0.0 : f32"));
    let crows = e.idx(rows as i64);
    let mask = if nfull < n {
        let mk = e.fresh();
        let crem = e.idx((n - nfull) as i64);
        e.line(&format!(
            "{mk} = vector.create_mask {crem} : vector<{w}xi1>"
        ));
        Some(mk)
    } else {
        None
    };

    // One tile: `nr` rows from `i` by `np` panels from column `j` (under the mask when
    // `masked`) of the chunk whose first row and column are `at`; threads the chunk's tensor `c`
    // through its writes and returns the result.
    let mut uid = 0usize;
    #[allow(clippy::too_many_arguments)]
    let tile = |e: &mut E,
                c: &str,
                (r0, j0): (&str, &str),
                i: &str,
                j: &str,
                (nr, np): (usize, usize),
                masked: bool,
                ap: Option<&str>| {
        uid += 1;
        let u = uid;
        let tmask = if masked { mask.as_deref() } else { None };
        let off = |e: &mut E, base: &str, d: usize| -> String {
            if d == 0 {
                return base.to_string();
            }
            let cd = e.idx(d as i64);
            let v = e.fresh();
            e.line(&format!("{v} = arith.addi {base}, {cd} : index"));
            v
        };
        // Rows of the chunk (where the tile writes) and of A (where it reads).
        let row_idx: Vec<String> = (0..nr).map(|r| off(e, i, r)).collect();
        let ia = e.fresh();
        e.line(&format!("{ia} = arith.addi {r0}, {i} : index"));
        let a_rows: Vec<String> = (0..nr).map(|r| off(e, &ia, r)).collect();
        let col_idx: Vec<String> = (0..np).map(|q| off(e, j, q * w)).collect();
        let jl = e.fresh();
        e.line(&format!("{jl} = arith.subi {j}, {j0} : index"));
        let col_out: Vec<String> = (0..np).map(|q| off(e, &jl, q * w)).collect();
        let panel_idx: Vec<String> = if packed {
            col_idx
                .iter()
                .map(|cj| {
                    let p = e.fresh();
                    e.line(&format!("{p} = arith.divui {cj}, {cw} : index"));
                    p
                })
                .collect()
        } else {
            Vec::new()
        };
        let acc = |r: usize, q: usize| format!("%acc{u}_{r}_{q}");
        let nacc = nr * np;
        let inits: Vec<String> = (0..nr)
            .flat_map(|r| (0..np).map(move |q| (r, q)))
            .map(|(r, q)| format!("{} = {zero}", acc(r, q)))
            .collect();
        let tys = vec![vt.clone(); nacc].join(", ");
        let kv = format!("%k{u}");
        let res = format!("%sum{u}");
        // A convolution's rows: (n, oh, ow) of each, and the top-left input pixel of its window.
        // The first row's by division; each next one by stepping ow (wrapping into oh, then n):
        // a tile of a convolution with few input channels has little work per row to hide
        // four divisions in.
        let conv_rows: Vec<(String, String, String)> = match conv {
            Some(cv) => {
                let (hw, ow, oh, s0, s1, p0, p1) = (
                    e.idx((cv.oh * cv.ow) as i64),
                    e.idx(cv.ow as i64),
                    e.idx(cv.oh as i64),
                    e.idx(cv.strides[0] as i64),
                    e.idx(cv.strides[1] as i64),
                    e.idx(cv.pads[0] as i64),
                    e.idx(cv.pads[1] as i64),
                );
                let op = |e: &mut E, rhs: String| {
                    let v = e.fresh();
                    e.line(&format!("{v} = {rhs}"));
                    v
                };
                let ri = &a_rows[0];
                let mut n = op(e, format!("arith.divui {ri}, {hw} : index"));
                let rem = op(e, format!("arith.remui {ri}, {hw} : index"));
                let mut h = op(e, format!("arith.divui {rem}, {ow} : index"));
                let mut w = op(e, format!("arith.remui {rem}, {ow} : index"));
                let mut out = Vec::new();
                for r in 0..a_rows.len() {
                    if r > 0 {
                        let w1 = op(e, format!("arith.addi {w}, {c1} : index"));
                        let wrap = op(e, format!("arith.cmpi eq, {w1}, {ow} : index"));
                        w = op(e, format!("arith.select {wrap}, {c0}, {w1} : index"));
                        let h1 = op(e, format!("arith.addi {h}, {c1} : index"));
                        let h2 = op(e, format!("arith.select {wrap}, {h1}, {h} : index"));
                        let hwrap = op(e, format!("arith.cmpi eq, {h2}, {oh} : index"));
                        h = op(e, format!("arith.select {hwrap}, {c0}, {h2} : index"));
                        let n1 = op(e, format!("arith.addi {n}, {c1} : index"));
                        n = op(e, format!("arith.select {hwrap}, {n1}, {n} : index"));
                    }
                    let hs = op(e, format!("arith.muli {h}, {s0} : index"));
                    let ih = op(e, format!("arith.subi {hs}, {p0} : index"));
                    let ws = op(e, format!("arith.muli {w}, {s1} : index"));
                    let iw = op(e, format!("arith.subi {ws}, {p1} : index"));
                    out.push((n.clone(), ih, iw));
                }
                out
            }
            None => Vec::new(),
        };
        // The tile's micro-panel of packed A (see `pack_rows`).
        let ap_tile = ap.map(|p| {
            let t = e.fresh();
            e.line(&format!("{t} = arith.divui {i}, {crows} : index"));
            (p, t)
        });
        let mut body = String::new();
        let mut close = String::new();
        match conv {
            None => {
                let _ = writeln!(
                    body,
                    "{res}:{nacc} = scf.for {kv} = {c0} to {ck} step {c1} iter_args({}) -> ({tys}) {{",
                    inits.join(", ")
                );
            }
            Some(cv) => {
                // k runs as (kh, kw, c): three loops, the accumulators threaded through.
                let names = |p: &str| -> Vec<String> {
                    (0..nacc).map(|i| format!("%{p}{u}_{i}")).collect()
                };
                let (ah, aw) = (names("ah"), names("aw"));
                let bind = |xs: &[String], ys: &[String]| -> String {
                    xs.iter()
                        .zip(ys)
                        .map(|(x, y)| format!("{x} = {y}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                let zeros = vec![zero.clone(); nacc];
                let (ckh, ckw, cc, cwd) = (
                    e.idx(cv.kh as i64),
                    e.idx(cv.kw as i64),
                    e.idx(cv.c as i64),
                    e.idx(cv.kw as i64),
                );
                let _ = writeln!(
                    body,
                    "{res}:{nacc} = scf.for %kh{u} = {c0} to {ckh} step {c1} iter_args({}) -> ({tys}) {{",
                    bind(&ah, &zeros)
                );
                let _ = writeln!(
                    body,
                    "      %rw{u}:{nacc} = scf.for %kw{u} = {c0} to {ckw} step {c1} iter_args({}) -> ({tys}) {{",
                    bind(&aw, &ah)
                );
                let _ = writeln!(body, "      %kr{u} = arith.muli %kh{u}, {cwd} : index");
                let _ = writeln!(body, "      %ks{u} = arith.addi %kr{u}, %kw{u} : index");
                let _ = writeln!(body, "      %kb{u} = arith.muli %ks{u}, {cc} : index");
                let (d0, d1) = (e.idx(cv.dilations[0] as i64), e.idx(cv.dilations[1] as i64));
                let (hh, ww) = (e.idx(cv.h as i64), e.idx(cv.w as i64));
                let _ = writeln!(body, "      %dh{u} = arith.muli %kh{u}, {d0} : index");
                let _ = writeln!(body, "      %dw{u} = arith.muli %kw{u}, {d1} : index");
                for (r, (_, ih0, iw0)) in conv_rows.iter().enumerate() {
                    let _ = writeln!(body, "      %ih{u}_{r} = arith.addi {ih0}, %dh{u} : index");
                    let _ = writeln!(body, "      %iw{u}_{r} = arith.addi {iw0}, %dw{u} : index");
                    if cv.padded {
                        let s = format!("{u}_{r}");
                        let _ =
                            writeln!(body, "      %g0{s} = arith.cmpi sge, %ih{s}, {c0} : index");
                        let _ =
                            writeln!(body, "      %g1{s} = arith.cmpi slt, %ih{s}, {hh} : index");
                        let _ =
                            writeln!(body, "      %g2{s} = arith.cmpi sge, %iw{s}, {c0} : index");
                        let _ =
                            writeln!(body, "      %g3{s} = arith.cmpi slt, %iw{s}, {ww} : index");
                        let _ = writeln!(body, "      %g4{s} = arith.andi %g0{s}, %g1{s} : i1");
                        let _ = writeln!(body, "      %g5{s} = arith.andi %g2{s}, %g3{s} : i1");
                        let _ = writeln!(body, "      %in{s} = arith.andi %g4{s}, %g5{s} : i1");
                        let _ = writeln!(
                            body,
                            "      %ihc{s} = arith.select %in{s}, %ih{s}, {c0} : index"
                        );
                        let _ = writeln!(
                            body,
                            "      %iwc{s} = arith.select %in{s}, %iw{s}, {c0} : index"
                        );
                    }
                }
                let _ = writeln!(
                    body,
                    "      %rc{u}:{nacc} = scf.for %ci{u} = {c0} to {cc} step {c1} iter_args({}) -> ({tys}) {{",
                    bind(
                        &(0..nr)
                            .flat_map(|r| (0..np).map(move |q| (r, q)))
                            .map(|(r, q)| acc(r, q))
                            .collect::<Vec<_>>(),
                        &aw
                    )
                );
                let _ = writeln!(body, "      {kv} = arith.addi %kb{u}, %ci{u} : index");
                let res_list = |p: &str| -> String {
                    (0..nacc)
                        .map(|i| format!("%{p}{u}#{i}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                let _ = write!(
                    close,
                    "\n      scf.yield {} : {tys}\n    }}\n      scf.yield {} : {tys}\n    }}",
                    res_list("rc"),
                    res_list("rw")
                );
            }
        }
        for q in 0..np {
            let bv = format!("%b{u}_{q}");
            // Packed panels are padded to whole vectors: no mask.
            let read = if packed {
                format!(
                    "{b}[{}, {kv}, {c0}], {pad}{}",
                    panel_idx[q],
                    transfer_tail(None)
                )
            } else {
                format!("{b}[{kv}, {}], {pad}{}", col_idx[q], transfer_tail(tmask))
            };
            let _ = writeln!(
                body,
                "      {bv} = vector.transfer_read {read} : {bt}, {vt}"
            );
        }
        let mut next = Vec::new();
        for (r, ri) in a_rows.iter().enumerate() {
            match conv {
                None => match &ap_tile {
                    Some((p, t)) => {
                        let cr = e.idx(r as i64);
                        let _ = writeln!(
                            body,
                            "      %x{u}_{r} = tensor.extract {p}[{t}, {kv}, {cr}] : {}",
                            packed_rows_ty(k, rows)
                        );
                    }
                    None => {
                        let _ = writeln!(
                            body,
                            "      %x{u}_{r} = tensor.extract {}[{ri}, {kv}] : {at}",
                            a
                        );
                    }
                },
                Some(cv) => {
                    let s = format!("{u}_{r}");
                    let (n_r, ihv, iwv) = if cv.padded {
                        (&conv_rows[r].0, format!("%ihc{s}"), format!("%iwc{s}"))
                    } else {
                        (&conv_rows[r].0, format!("%ih{s}"), format!("%iw{s}"))
                    };
                    let raw = if cv.padded {
                        format!("%xr{s}")
                    } else {
                        format!("%x{s}")
                    };
                    let _ = writeln!(
                        body,
                        "      {raw} = tensor.extract {}[{n_r}, {ihv}, {iwv}, %ci{u}] : {}",
                        cv.x, cv.xt
                    );
                    if cv.padded {
                        let _ = writeln!(
                            body,
                            "      %x{s} = arith.select %in{s}, {raw}, {pad} : f32"
                        );
                    }
                }
            }
            let _ = writeln!(
                body,
                "      %xb{u}_{r} = vector.broadcast %x{u}_{r} : f32 to {vt}"
            );
            for q in 0..np {
                let _ = writeln!(
                    body,
                    "      %n{u}_{r}_{q} = vector.fma %xb{u}_{r}, %b{u}_{q}, {} : {vt}",
                    acc(r, q)
                );
                next.push(format!("%n{u}_{r}_{q}"));
            }
        }
        let _ = write!(
            body,
            "      scf.yield {} : {tys}\n    }}{close}",
            next.join(", ")
        );
        e.line(&body);
        // The epilogue's operands for each panel of columns, then the stores.
        let operands: Vec<Vec<String>> = col_idx
            .iter()
            .map(|cj| {
                epi.iter()
                    .map(|x| x.operand(e, cj, &vt, &zero, &pad, tmask))
                    .collect()
            })
            .collect();
        let mut cur = c.to_string();
        for (r, ri) in row_idx.iter().enumerate() {
            for (q, cj) in col_out.iter().enumerate() {
                let mut val = format!("{res}#{}", r * np + q);
                for (x, opnd) in epi.iter().zip(&operands[q]) {
                    val = x.apply(e, &val, opnd, &vt);
                }
                let v = e.fresh();
                e.line(&format!(
                    "{v} = vector.transfer_write {val}, {cur}[{ri}, {cj}]{} : {vt}, {st}",
                    transfer_tail(tmask)
                ));
                cur = v;
            }
        }
        cur
    };
    let for_c = |e: &mut E,
                 c: &str,
                 range: (&str, &str, &str),
                 inner: &mut dyn FnMut(&mut E, &str, &str) -> String| {
        for_carrying(e, &st, c, range, inner)
    };
    let (cnfull, cgw) = (e.idx(nfull as i64), e.idx((GROUP * w) as i64));
    let tile = std::cell::RefCell::new(tile);
    // Each chunk (rows `r0..r0 + len`, column panels from `j0`; see `par_grid`): row blocks panel
    // by panel, then the masked last panel (in the last column chunk); then the rows left over,
    // in blocks of 4 and 2 rows and a last single row (panels in groups, single panels, the
    // masked last one).
    let panels = n.div_ceil(w);
    par_grid(
        e,
        &out,
        ct,
        (m, rows, min_rows),
        (panels, w, nfull, n),
        &mut |e, c, ch| {
            let Chunk {
                r0,
                len,
                j0,
                jf,
                last,
            } = ch;
            let origin = (r0, j0);
            let (rem, mfull) = (e.fresh(), e.fresh());
            e.line(&format!("{rem} = arith.remui {len}, {crows} : index"));
            e.line(&format!("{mfull} = arith.subi {len}, {rem} : index"));
            let ap = if pack_a {
                Some(pack_rows(e, (a, at), r0, &mfull, rows, k))
            } else {
                None
            };
            let ap = ap.as_deref();
            let mut c = for_c(e, c, (j0, jf, &cw), &mut |e, c, j| {
                for_c(e, c, (&c0, &mfull, &crows), &mut |e, c, i| {
                    (tile.borrow_mut())(e, c, origin, i, j, (rows, 1), false, ap)
                })
            });
            if mask.is_some() {
                c = if_carrying(e, &st, last, &c, &mut |e, c| {
                    for_c(e, c, (&c0, &mfull, &crows), &mut |e, c, i| {
                        (tile.borrow_mut())(e, c, origin, i, &cnfull, (rows, 1), true, ap)
                    })
                });
            }
            // The `rem` rows left over (fewer than `rows`) in blocks of 4 and 2 rows (the bits of
            // `rem`, largest first), each block panel by panel: B is read once per block, where
            // single rows read all of it once each.
            let mut blocks = Vec::new();
            let mut nr = (rows - 1).next_power_of_two() / 2;
            while nr >= 2 {
                blocks.push(nr);
                nr /= 2;
            }
            for &nr in &blocks {
                let (cnr, above) = (e.idx(nr as i64), e.idx(!(2 * nr as i64 - 1)));
                // A loop of one step when `rem` has the bit `nr`, of none when not.
                let (bit, before, lo, hi) = (e.fresh(), e.fresh(), e.fresh(), e.fresh());
                e.line(&format!("{bit} = arith.andi {rem}, {cnr} : index"));
                e.line(&format!("{before} = arith.andi {rem}, {above} : index"));
                e.line(&format!("{lo} = arith.addi {mfull}, {before} : index"));
                e.line(&format!("{hi} = arith.addi {lo}, {bit} : index"));
                c = for_c(e, &c, (&lo, &hi, &cnr), &mut |e, c, i| {
                    let mut c = for_c(e, c, (j0, jf, &cw), &mut |e, c, j| {
                        (tile.borrow_mut())(e, c, origin, i, j, (nr, 1), false, None)
                    });
                    if mask.is_some() {
                        c = if_carrying(e, &st, last, &c, &mut |e, c| {
                            (tile.borrow_mut())(e, c, origin, i, &cnfull, (nr, 1), true, None)
                        });
                    }
                    c
                });
            }
            // The last row (when `rem` is odd): panels in groups of GROUP up to `jg`, then one by
            // one.
            let (span, whole, jg) = (e.fresh(), e.fresh(), e.fresh());
            e.line(&format!("{span} = arith.subi {jf}, {j0} : index"));
            e.line(&format!("{whole} = arith.remui {span}, {cgw} : index"));
            e.line(&format!("{jg} = arith.subi {jf}, {whole} : index"));
            let (odd, i1) = (e.fresh(), e.fresh());
            let ceven = e.idx(!1);
            e.line(&format!("{odd} = arith.andi {rem}, {ceven} : index"));
            e.line(&format!("{i1} = arith.addi {mfull}, {odd} : index"));
            for_c(e, &c, (&i1, len, &c1), &mut |e, c, i| {
                let mut c = for_c(e, c, (j0, &jg, &cgw), &mut |e, c, j| {
                    (tile.borrow_mut())(e, c, origin, i, j, (1, GROUP), false, None)
                });
                c = for_c(e, &c, (&jg, jf, &cw), &mut |e, c, j| {
                    (tile.borrow_mut())(e, c, origin, i, j, (1, 1), false, None)
                });
                if mask.is_some() {
                    c = if_carrying(e, &st, last, &c, &mut |e, c| {
                        (tile.borrow_mut())(e, c, origin, i, &cnfull, (1, 1), true, None)
                    });
                }
                c
            })
        },
    )
}

/// One chunk of `mm_kernel`'s output (SSA values): rows `r0..r0 + len`; the full column panels
/// from column `j0` to `jf`; `last` (i1) when the chunk also has the masked last panel.
pub(crate) struct Chunk<'a> {
    pub(crate) r0: &'a str,
    pub(crate) len: &'a str,
    pub(crate) j0: &'a str,
    pub(crate) jf: &'a str,
    pub(crate) last: &'a str,
}

/// `par_rows` for `mm_kernel`, whose rows may be too few to give every thread a chunk (a dense
/// layer at batch 1): the threads the row chunks leave split the column panels. `(m, align,
/// min_rows)` as for `chunks`; `(panels, w, nfull, n)`: the output's `n` columns in panels of
/// `w`, the last one masked when `nfull` (the columns in full panels) is short of `n`. A chunk
/// of columns gets at least `MIN_CHUNK_MACS` too. `body` gets the chunk's slice of `out`
/// (`tensor<?x?xf32>`, its first row and column at 0) and where it lies.
pub(crate) fn par_grid(
    e: &mut E,
    out: &str,
    ct: &str,
    (m, align, min_rows): (&str, usize, usize),
    (panels, w, nfull, n): (usize, usize, usize, usize),
    body: &mut dyn FnMut(&mut E, &str, Chunk) -> String,
) -> String {
    if e.serial {
        // The whole output, on this thread.
        let (c0, cnfull, yes) = (e.idx(0), e.idx(nfull as i64), e.fresh());
        e.line(&format!("{yes} = arith.constant true"));
        return body(
            e,
            out,
            Chunk {
                r0: &c0,
                len: m,
                j0: &c0,
                jf: &cnfull,
                last: &yes,
            },
        );
    }
    let nt = threads(e);
    let (tr, per) = chunks(e, &nt, m, align, min_rows);
    let (cn, cp, cw, cnfull, cmin, c1) = (
        e.idx(n as i64),
        e.idx(panels as i64),
        e.idx(w as i64),
        e.idx(nfull as i64),
        e.idx(min_rows as i64),
        e.idx(1),
    );
    // Column chunks: the threads left per row chunk, at most one per panel, each with at least
    // `min_rows` rows' worth of work.
    let left = ix(e, "divui", &nt, &tr);
    let work = ix(e, "muli", m, &cp);
    let least = ix(e, "muli", &cmin, &tr);
    let by_work = ix(e, "divui", &work, &least);
    let upto = ix(e, "minui", &left, &cp);
    let upto = ix(e, "minui", &upto, &by_work);
    let tc = ix(e, "maxui", &upto, &c1);
    let pper = ix(e, "ceildivui", &cp, &tc);
    let st = "tensor<?x?xf32>";
    let (a, b, o, res) = (e.fresh(), e.fresh(), e.fresh(), e.fresh());
    let saved = std::mem::take(&mut e.body);
    let (r0, _, len) = span(e, &a, &per, m);
    let (p0, p1, _) = span(e, &b, &pper, &cp);
    let j0 = ix(e, "muli", &p0, &cw);
    let j1 = ix(e, "muli", &p1, &cw);
    let jf = ix(e, "minui", &j1, &cnfull);
    // The chunk's columns: its full panels, and the masked one when it is the last chunk.
    let last = ix(e, "cmpi eq,", &p1, &cp);
    let end = e.fresh();
    e.line(&format!("{end} = arith.select {last}, {cn}, {jf} : index"));
    let width = ix(e, "subi", &end, &j0);
    let slice = e.fresh();
    e.line(&format!(
        "{slice} = tensor.extract_slice {o}[{r0}, {j0}] [{len}, {width}] [1, 1] : {ct} to {st}"
    ));
    let chunk = Chunk {
        r0: &r0,
        len: &len,
        j0: &j0,
        jf: &jf,
        last: &last,
    };
    let y = body(e, &slice, chunk);
    e.line(&format!(
        "scf.forall.in_parallel {{\n      tensor.parallel_insert_slice {y} into {o}[{r0}, {j0}] [{len}, {width}] [1, 1] : {st} into {ct}\n    }}"
    ));
    let inner = std::mem::replace(&mut e.body, saved);
    e.line(&format!(
        "{res} = scf.forall ({a}, {b}) in ({tr}, {tc}) shared_outs({o} = {out}) -> ({ct}) {{\n{inner}    }}"
    ));
    res
}

/// The threads the calling context lends the kernels (see the `async` section of `cpu/wrapper.c`).
pub(crate) fn threads(e: &mut E) -> String {
    let v = e.fresh();
    e.line(&format!("{v} = func.call @forgec_threads() : () -> index"));
    v
}

/// Chunk `t` of `per` items out of `n`: its first item, its end and its length (an empty chunk
/// at `n` when there are more chunks than items).
pub(crate) fn span(e: &mut E, t: &str, per: &str, n: &str) -> (String, String, String) {
    let at = ix(e, "muli", t, per);
    let start = ix(e, "minui", &at, n);
    let to = ix(e, "addi", &start, per);
    let end = ix(e, "minui", &to, n);
    let len = ix(e, "subi", &end, &start);
    (start, end, len)
}

/// Below this many multiply-adds a chunk of a kernel is not worth handing to another thread.
pub(crate) const MIN_CHUNK_MACS: usize = 1 << 15;

/// The fewest rows of `macs_row` multiply-adds each that make a chunk worth a thread.
pub(crate) fn chunk_min_rows(macs_row: usize) -> usize {
    MIN_CHUNK_MACS.div_ceil(macs_row.max(1))
}

/// How many chunks to cut `m` rows into, and the rows per chunk: no more chunks than `nt`, the
/// threads the calling context lends (`threads`), each a whole number of
/// `align`-row blocks and of at least `min_rows` rows. At least one chunk, so that nothing divides by zero;
/// a chunk of no rows when `m` is 0.
pub(crate) fn chunks(
    e: &mut E,
    nt: &str,
    m: &str,
    align: usize,
    min_rows: usize,
) -> (String, String) {
    let (ca, cmin, c1) = (e.idx(align as i64), e.idx(min_rows as i64), e.idx(1));
    let blocks = ix(e, "ceildivui", m, &ca);
    let by_work = ix(e, "divui", m, &cmin);
    let upto = ix(e, "minui", nt, &blocks);
    let upto = ix(e, "minui", &upto, &by_work);
    let count = ix(e, "maxui", &upto, &c1);
    let per_blocks = ix(e, "ceildivui", &blocks, &count);
    let per = ix(e, "muli", &per_blocks, &ca);
    let per = ix(e, "maxui", &per, &c1);
    (count, per)
}

/// Runs `body` on chunks of the rows of `out` (`[m, inner...]`, type `ct`), in parallel: an
/// `scf.forall` whose chunks (see `chunks`) each get a slice `tensor<?xinner...xf32>` of their
/// rows.
/// `body(e, slice, r0, len)` writes the slice's `len` rows (row `r0` of `out` first) and returns
/// it. The forall becomes tasks on the context's thread pool (`async-parallel-for`); a chunk's
/// elements are computed exactly as without threads.
#[allow(clippy::too_many_arguments)]
pub(crate) fn par_rows(
    e: &mut E,
    out: &str,
    ct: &str,
    m: &str,
    inner: &[usize],
    align: usize,
    min_rows: usize,
    body: &mut dyn FnMut(&mut E, &str, &str, &str) -> String,
) -> String {
    par_slices(e, out, ct, (&[], m, inner), align, min_rows, body)
}

/// `par_rows` along an axis after `outer` whole dims: `out` is `[outer..., m, inner...]`, each
/// chunk's slice `tensor<outer...x?xinner...xf32>`.
pub(crate) fn par_slices(
    e: &mut E,
    out: &str,
    ct: &str,
    (outer, m, inner): (&[usize], &str, &[usize]),
    align: usize,
    min_rows: usize,
    body: &mut dyn FnMut(&mut E, &str, &str, &str) -> String,
) -> String {
    let nt = threads(e);
    let (count, per) = chunks(e, &nt, m, align, min_rows);
    let dims = |ds: &[usize]| -> String { ds.iter().map(|d| format!("{d}x")).collect() };
    let st = format!("tensor<{}?x{}f32>", dims(outer), dims(inner));
    let sizes = |ds: &[usize]| -> String { ds.iter().map(|d| format!("{d}, ")).collect() };
    let (zeros_o, zeros_i) = ("0, ".repeat(outer.len()), ", 0".repeat(inner.len()));
    let (ones_o, ones_i) = ("1, ".repeat(outer.len()), ", 1".repeat(inner.len()));
    let sizes_i: String = inner.iter().map(|d| format!(", {d}")).collect();
    let (t, o, res) = (e.fresh(), e.fresh(), e.fresh());
    let saved = std::mem::take(&mut e.body);
    let (r0, _, len) = span(e, &t, &per, m);
    let slice = e.fresh();
    let at = format!(
        "[{zeros_o}{r0}{zeros_i}] [{}{len}{sizes_i}] [{ones_o}1{ones_i}]",
        sizes(outer)
    );
    e.line(&format!(
        "{slice} = tensor.extract_slice {o}{at} : {ct} to {st}"
    ));
    let y = body(e, &slice, &r0, &len);
    e.line(&format!(
        "scf.forall.in_parallel {{\n      tensor.parallel_insert_slice {y} into {o}{at} : {st} into {ct}\n    }}"
    ));
    let inner = std::mem::replace(&mut e.body, saved);
    e.line(&format!(
        "{res} = scf.forall ({t}) in ({count}) shared_outs({o} = {out}) -> ({ct}) {{
{inner}    }}"
    ));
    res
}

/// A matmul by the tiled kernel when it fits (an A of rank 3 or more against a 2-D B is taken
/// as one `[rows, K]` matrix), else None (the generic lowering).
pub(crate) fn mm_any(
    e: &mut E,
    ins: &[(String, TensorType)],
    ot: &TensorType,
) -> R<Option<String>> {
    let (a, b) = (&ins[0], &ins[1]);
    if a.1.rank() >= 3 && b.1.rank() == 2 && ot.rank() == a.1.rank() {
        let r = a.1.rank();
        let lead_known = a.1.shape[1..r - 1].iter().all(|d| d.known().is_some());
        let (Some(k), Some(n)) = (b.1.shape[0].known(), b.1.shape[1].known()) else {
            return Ok(None);
        };
        let f32_only = [&a.1, &b.1, ot].iter().all(|t| t.dtype == DType::F32);
        if lead_known && f32_only && a.1.shape[r - 1].known() == Some(k) {
            let inner: usize = a.1.shape[1..r - 1]
                .iter()
                .filter_map(|d| d.known())
                .product();
            let (m, mdim) = rows_of(e, &a.1.shape[0], inner)?;
            let at = format!("tensor<{mdim}x{k}xf32>");
            let flat = e.fresh();
            e.line(&format!(
                "{flat} = tensor.collapse_shape {} {} : {} into {at}",
                a.0,
                reassociation(r - 1, r),
                tensor_ty(&a.1)
            ));
            let (out, ct) = empty_rows(e, (&m, &mdim), n);
            let y = mm_kernel(
                e,
                &Mm {
                    rows: Rows::Matrix { a: &flat, at },
                    m,
                    k,
                    k_sym: None,
                    n,
                    b: &b.0,
                    bt: tensor_ty(&b.1),
                    packed: false,
                    ct: ct.clone(),
                    out,
                },
            );
            return unflatten_rows(e, &y, &ct, ot).map(Some);
        }
    }
    fast_matmul(e, ins, ot, false)
}

/// A batched matmul `[B, M, K] x [B, K, N]` (M, K, N known; B the same dim on both sides, a
/// convolution's weight gradient per tap, say) by the tiled kernel: the batch items in chunks
/// over the threads, each item's matmul on its thread. None when the shapes do not fit.
pub(crate) fn batched_mm(
    e: &mut E,
    ins: &[(String, TensorType)],
    ot: &TensorType,
) -> R<Option<String>> {
    let (a, b) = (&ins[0], &ins[1]);
    let f32_only = [&a.1, &b.1, ot].iter().all(|t| t.dtype == DType::F32);
    if !f32_only || a.1.rank() != 3 || b.1.rank() != 3 || a.1.shape[0] != b.1.shape[0] {
        return Ok(None);
    }
    let known = |t: &TensorType, i: usize| t.shape[i].known().filter(|&d| d > 0);
    let (Some(m), Some(k), Some(n)) = (known(&a.1, 1), known(&a.1, 2), known(&b.1, 2)) else {
        return Ok(None);
    };
    if b.1.shape[1].known() != Some(k) {
        return Ok(None);
    }
    let (at, bt, mt) = (
        format!("tensor<{m}x{k}xf32>"),
        format!("tensor<{k}x{n}xf32>"),
        format!("tensor<{m}x{n}xf32>"),
    );
    let (ta, tb, ct) = (tensor_ty(&a.1), tensor_ty(&b.1), tensor_ty(ot));
    let items = e.dim_val(&a.1.shape[0])?;
    let out = e.empty(ot)?;
    let (c0, c1) = (e.idx(0), e.idx(1));
    let st = format!("tensor<?x{m}x{n}xf32>");
    let y = par_rows(
        e,
        &out,
        &ct,
        &items,
        &[m, n],
        1,
        chunk_min_rows(m * k * n),
        &mut |e, slice, r0, len| {
            let serial = std::mem::replace(&mut e.serial, true);
            let y = for_carrying(e, &st, slice, (&c0, len, &c1), &mut |e, o, i| {
                let bi = ix(e, "addi", r0, i);
                let (ai, bj, oi) = (e.fresh(), e.fresh(), e.fresh());
                e.line(&format!(
                    "{ai} = tensor.extract_slice {}[{bi}, 0, 0] [1, {m}, {k}] [1, 1, 1] : {ta} to {at}",
                    a.0
                ));
                e.line(&format!(
                    "{bj} = tensor.extract_slice {}[{bi}, 0, 0] [1, {k}, {n}] [1, 1, 1] : {tb} to {bt}",
                    b.0
                ));
                e.line(&format!("{oi} = tensor.empty() : {mt}"));
                let cm = e.idx(m as i64);
                let r = mm_kernel(
                    e,
                    &Mm {
                        rows: Rows::Matrix {
                            a: &ai,
                            at: at.clone(),
                        },
                        m: cm,
                        k,
                        k_sym: None,
                        n,
                        b: &bj,
                        bt: bt.clone(),
                        packed: false,
                        ct: mt.clone(),
                        out: oi,
                    },
                );
                let v = e.fresh();
                e.line(&format!(
                    "{v} = tensor.insert_slice {r} into {o}[{i}, 0, 0] [1, {m}, {n}] [1, 1, 1] : {mt} into {st}"
                ));
                v
            });
            e.serial = serial;
            y
        },
    );
    Ok(Some(y))
}

/// `batch * per` rows: their count as an SSA index, and as a type dim (`?` when the batch is
/// symbolic).
pub(crate) fn rows_of(e: &mut E, batch: &Dim, per: usize) -> R<(String, String)> {
    Ok(match batch.known() {
        Some(nb) => (e.idx((nb * per) as i64), (nb * per).to_string()),
        None => {
            let nb = e.dim_val(batch)?;
            let c = e.idx(per as i64);
            let v = e.fresh();
            e.line(&format!("{v} = arith.muli {nb}, {c} : index"));
            (v, "?".to_string())
        }
    })
}

/// An empty `[rows, n]` f32 tensor (`rows` from `rows_of`) for `mm_kernel`: (value, type).
pub(crate) fn empty_rows(e: &mut E, (m, mdim): (&str, &str), n: usize) -> (String, String) {
    let ct = format!("tensor<{mdim}x{n}xf32>");
    let out = e.fresh();
    let sizes = if mdim == "?" { m } else { "" };
    e.line(&format!("{out} = tensor.empty({sizes}) : {ct}"));
    (out, ct)
}

/// `[[0, .., split - 1], [split, .., rank - 1]]`: flattens the dims before `split` and those
/// from it.
pub(crate) fn reassociation(split: usize, rank: usize) -> String {
    let list = |r: std::ops::Range<usize>| r.map(|i| i.to_string()).collect::<Vec<_>>().join(", ");
    format!("[[{}], [{}]]", list(0..split), list(split..rank))
}

/// A kernel's `[rows, n]` result `y` (type `ct`) over the flattened leading dims of `ot`,
/// expanded back to `ot` (static dims as numbers, the batch as its SSA size).
pub(crate) fn unflatten_rows(e: &mut E, y: &str, ct: &str, ot: &TensorType) -> R<String> {
    let r = ot.rank();
    let mut sizes = vec![match ot.shape[0].known() {
        Some(nb) => nb.to_string(),
        None => e.dim_val(&ot.shape[0])?,
    }];
    sizes.extend(
        ot.shape[1..]
            .iter()
            .filter_map(|d| d.known())
            .map(|v| v.to_string()),
    );
    let v = e.fresh();
    e.line(&format!(
        "{v} = tensor.expand_shape {y} {} output_shape [{}] : {ct} into {}",
        reassociation(r - 1, r),
        sizes.join(", "),
        tensor_ty(ot)
    ));
    Ok(v)
}
