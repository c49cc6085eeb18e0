//! The CPU's convolution and pooling kernels: convolutions as `mm_kernel` over im2col rows,
//! depthwise convolutions and pools as vectorised windows.

use super::*;
use crate::lower::*;
use forgec_ir::{ConvAttrs, DType, Dim, Layout, PoolKind, TensorType};

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
