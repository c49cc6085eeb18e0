//! Contractions and windows: matmul (batched), convolution and transposed convolution (N-d, strides, dilations, pads, groups, both layouts), pooling. For each op of the family, its type rule (`infer`) and its
//! reference evaluation (`eval`), side by side; the derivative rule joins them here.

use crate::infer::*;
use crate::interp::*;
use crate::op::*;
use crate::types::{Dim, TensorType};
use forgec_runtime::{DType, Tensor};

type R<T> = Result<T, String>;

/// The output types of a linalg op from its input types (arity already checked).
pub(crate) fn infer(op: &Op, ins: &[TensorType]) -> R<Vec<TensorType>> {
    let one = |t: TensorType| Ok(vec![t]);
    match op {
        Op::MatMul => {
            let dt = same_dtype(ins)?;
            if dt == DType::Bool {
                return Err("matmul does not take bool".into());
            }
            let (a, b) = (&ins[0].shape, &ins[1].shape);
            if a.len() < 2 || b.len() < 2 {
                return Err(format!(
                    "both operands need rank 2 or more, got {} and {}",
                    shape_str(a),
                    shape_str(b)
                ));
            }
            let (m, ka) = (&a[a.len() - 2], &a[a.len() - 1]);
            let (kb, n) = (&b[b.len() - 2], &b[b.len() - 1]);
            if ka != kb {
                return Err(format!(
                    "the contraction dims differ: {} has {ka} columns but {} has {kb} rows",
                    shape_str(a),
                    shape_str(b)
                ));
            }
            let mut s = broadcast_shapes(&a[..a.len() - 2], &b[..b.len() - 2])?;
            s.push(m.clone());
            s.push(n.clone());
            one(TensorType::new(dt, s))
        }
        Op::Conv(c) => conv_type(c, &ins[0], &ins[1], false),
        Op::ConvTranspose(c) => conv_type(c, &ins[0], &ins[1], true),
        Op::Pool(p) => {
            let x = &ins[0];
            need_float(x, "the input")?;
            if x.rank() < 3 {
                return Err(format!(
                    "the input must have rank 3 or more, got {}",
                    x.rank()
                ));
            }
            let ns = x.rank() - 2;
            check_spatial_attrs(
                ns,
                &[
                    ("window", p.window.len()),
                    ("strides", p.strides.len()),
                    ("pads", p.pads.len()),
                ],
            )?;
            let (n, c, spatial) = split_layout(&x.shape, p.layout);
            let mut out = Vec::new();
            for (i, d) in spatial.iter().enumerate() {
                let s = known(d, "a spatial dim")?;
                let dil = p.dilations.get(i).copied().unwrap_or(1);
                out.push(Dim::Known(window_out(
                    s,
                    p.window[i],
                    p.strides[i],
                    dil,
                    p.pads[i],
                )?));
            }
            one(TensorType::new(x.dtype, join_layout(n, c, out, p.layout)))
        }
        Op::ConvKernelGrad { conv, kernel } => {
            let (x, dy) = (&ins[0], &ins[1]);
            if conv.layout != Layout::ChannelsLast || conv.groups != 1 || x.rank() != 4 {
                return Err(
                    "conv_kernel_grad is the kernel gradient of a channels-last 2-D convolution of one group"
                        .into(),
                );
            }
            if kernel.len() != 2 {
                return Err(format!(
                    "'kernel' has {} entries for 2 spatial dims",
                    kernel.len()
                ));
            }
            let mut ws: Vec<Dim> = kernel.iter().map(|&k| Dim::Known(k)).collect();
            ws.push(x.shape[3].clone());
            ws.push(dy.shape[3].clone());
            let wt = TensorType::new(x.dtype, ws);
            let y = conv_type(conv, x, &wt, false)?;
            if *dy != y[0] {
                return Err(format!(
                    "the output gradient is {dy} but the convolution gives {}",
                    y[0]
                ));
            }
            one(wt)
        }
        Op::Col2Im { conv, kernel, size } => {
            let x = &ins[0];
            if conv.layout != Layout::ChannelsLast || conv.groups != 1 || x.rank() != 4 {
                return Err("col2im makes a channels-last 2-D image of one group".into());
            }
            if !x.dtype.is_float() {
                return Err(format!("col2im sums floats, not {}", x.dtype.name()));
            }
            if x.shape[1..3].contains(&Dim::Known(0)) {
                return Err("col2im needs at least one column position along each axis".into());
            }
            let two = |what: &str, n: usize| {
                if n == 2 {
                    Ok(())
                } else {
                    Err(format!("'{what}' has {n} entries for 2 spatial dims"))
                }
            };
            two("kernel", kernel.len())?;
            two("size", size.len())?;
            two("strides", conv.strides.len())?;
            two("dilations", conv.dilations.len())?;
            two("pads", conv.pads.len())?;
            if conv.strides.contains(&0) || conv.dilations.contains(&0) || kernel.contains(&0) {
                return Err("strides, dilations and the kernel must be at least 1".into());
            }
            let taps = kernel[0] * kernel[1];
            let k = x.shape[3]
                .known()
                .filter(|k| k % taps == 0)
                .ok_or_else(|| {
                    format!(
                        "the columns' last dim must be a multiple of the {taps} taps, not {}",
                        x.shape[3]
                    )
                })?;
            one(TensorType::new(
                x.dtype,
                vec![
                    x.shape[0].clone(),
                    Dim::Known(size[0]),
                    Dim::Known(size[1]),
                    Dim::Known(k / taps),
                ],
            ))
        }
        Op::PoolGrad(p) => {
            if p.kind != PoolKind::Max || p.layout != Layout::ChannelsLast || ins[0].rank() != 4 {
                return Err("pool_grad is the gradient of a channels-last 2-D max pooling".into());
            }
            let y = infer(&Op::Pool(p.clone()), &ins[..1])?;
            for (what, t) in [("the pooled output", &ins[1]), ("its gradient", &ins[2])] {
                if *t != y[0] {
                    return Err(format!("{what} is {} but the pooling gives {}", t, y[0]));
                }
            }
            one(ins[0].clone())
        }
        _ => unreachable!("{} is not in the linalg family", op.name()),
    }
}

/// Evaluates a linalg op on concrete tensors: `out_ty` are the result types (from `infer`),
/// `oshape` the first result's shape.
pub(crate) fn eval(
    op: &Op,
    ins: &[&Tensor],
    out_ty: &[TensorType],
    oshape: Vec<usize>,
) -> R<Vec<Tensor>> {
    let ot = &out_ty[0];
    let one = |t: Tensor| Ok(vec![t]);
    match op {
        Op::MatMul => one(matmul(ins[0], ins[1], ot.dtype, &oshape)?),
        Op::Conv(c) => one(conv_eval(c, ins[0], ins[1], ot.dtype, &oshape)?),
        Op::ConvTranspose(c) => one(conv_transpose(c, ins[0], ins[1], ot.dtype, &oshape)?),
        Op::Pool(p) => one(pool(p, ins[0], ot.dtype, &oshape)?),
        Op::PoolGrad(p) => one(max_pool_grad(p, ins[0], ins[1], ins[2], ot.dtype)?),
        Op::Col2Im { conv, kernel, .. } => one(col2im(conv, kernel, ins[0], &oshape, ot.dtype)?),
        Op::ConvKernelGrad { conv, .. } => {
            one(kernel_grad_eval(conv, ins[0], ins[1], &oshape, ot.dtype)?)
        }
        _ => unreachable!("{} is not in the linalg family", op.name()),
    }
}

/// Output size of a sliding window along one dim.
pub(crate) fn window_out(
    input: usize,
    k: usize,
    stride: usize,
    dilation: usize,
    pads: (usize, usize),
) -> R<usize> {
    if stride == 0 || dilation == 0 || k == 0 {
        return Err("window, strides and dilations must be at least 1".into());
    }
    let eff = (k - 1) * dilation + 1;
    let padded = input + pads.0 + pads.1;
    if padded < eff {
        return Err(format!(
            "the window ({eff} after dilation) is larger than the padded input ({padded})"
        ));
    }
    Ok((padded - eff) / stride + 1)
}

/// Splits a data shape by layout into (batch, channels, spatial).
pub(crate) fn split_layout(shape: &[Dim], layout: Layout) -> (Dim, Dim, Vec<Dim>) {
    let r = shape.len();
    match layout {
        Layout::ChannelsLast => (
            shape[0].clone(),
            shape[r - 1].clone(),
            shape[1..r - 1].to_vec(),
        ),
        Layout::ChannelsFirst => (shape[0].clone(), shape[1].clone(), shape[2..].to_vec()),
    }
}

pub(crate) fn join_layout(n: Dim, c: Dim, spatial: Vec<Dim>, layout: Layout) -> Vec<Dim> {
    let mut out = vec![n];
    match layout {
        Layout::ChannelsLast => {
            out.extend(spatial);
            out.push(c);
        }
        Layout::ChannelsFirst => {
            out.push(c);
            out.extend(spatial);
        }
    }
    out
}

pub(crate) fn check_spatial_attrs(n: usize, lists: &[(&str, usize)]) -> R<()> {
    for (name, len) in lists {
        if *len != n {
            return Err(format!("'{name}' has {len} entries for {n} spatial dims"));
        }
    }
    Ok(())
}

pub(crate) fn conv_type(
    c: &ConvAttrs,
    x: &TensorType,
    w: &TensorType,
    transpose: bool,
) -> R<Vec<TensorType>> {
    let dt = same_dtype(&[x.clone(), w.clone()])?;
    need_float(x, "the input")?;
    if x.rank() < 3 {
        return Err(format!(
            "the input must have rank 3 or more, got {}",
            x.rank()
        ));
    }
    if w.rank() != x.rank() {
        return Err(format!(
            "the kernel has rank {} but the input has rank {}",
            w.rank(),
            x.rank()
        ));
    }
    let ns = x.rank() - 2;
    let mut lists = vec![
        ("strides", c.strides.len()),
        ("dilations", c.dilations.len()),
        ("pads", c.pads.len()),
    ];
    if transpose {
        lists.push(("output_padding", c.output_padding.len()));
    }
    check_spatial_attrs(ns, &lists)?;
    if c.groups == 0 {
        return Err("groups must be at least 1".into());
    }
    let (n, cin, spatial) = split_layout(&x.shape, c.layout);
    let cin = known(&cin, "the channel dim")?;
    let wk: Vec<usize> = w
        .known_shape()
        .ok_or("the kernel must have a known shape")?;
    // Normalize the kernel to (a, b, k...) with a, b the two channel dims as stored.
    let (k, a, b) = match c.layout {
        Layout::ChannelsLast => (wk[..ns].to_vec(), wk[ns], wk[ns + 1]),
        Layout::ChannelsFirst => (wk[2..].to_vec(), wk[0], wk[1]),
    };
    let g = c.groups;
    let cout = if !transpose {
        // last: a = C_in/groups, b = C_out; first: a = C_out, b = C_in/groups.
        let (cin_g, cout) = match c.layout {
            Layout::ChannelsLast => (a, b),
            Layout::ChannelsFirst => (b, a),
        };
        if cin % g != 0 || cin_g * g != cin {
            return Err(format!(
                "the input has {cin} channels but the kernel {:?} expects {} ({} per group x {g} groups)",
                wk,
                cin_g * g,
                cin_g
            ));
        }
        if cout % g != 0 {
            return Err(format!(
                "{cout} output channels do not split into {g} groups"
            ));
        }
        cout
    } else {
        // last: a = C_out/groups, b = C_in; first: a = C_in, b = C_out/groups.
        let (cout_g, cin_k) = match c.layout {
            Layout::ChannelsLast => (a, b),
            Layout::ChannelsFirst => (b, a),
        };
        if cin_k != cin {
            return Err(format!(
                "the input has {cin} channels but the kernel {:?} expects {cin_k}",
                wk
            ));
        }
        if cin % g != 0 {
            return Err(format!("{cin} input channels do not split into {g} groups"));
        }
        cout_g * g
    };
    let mut out_sp = Vec::with_capacity(ns);
    for i in 0..ns {
        let s = known(&spatial[i], "a spatial dim")?;
        let o = if !transpose {
            window_out(s, k[i], c.strides[i], c.dilations[i], c.pads[i])?
        } else {
            if c.strides[i] == 0 || c.dilations[i] == 0 || s == 0 {
                return Err("strides, dilations and input sizes must be at least 1".into());
            }
            let full =
                (s - 1) * c.strides[i] + (k[i] - 1) * c.dilations[i] + 1 + c.output_padding[i];
            full.checked_sub(c.pads[i].0 + c.pads[i].1)
                .filter(|&o| o > 0)
                .ok_or("the padding removes the whole output")?
        };
        out_sp.push(Dim::Known(o));
    }
    Ok(vec![TensorType::new(
        dt,
        join_layout(n, Dim::Known(cout), out_sp, c.layout),
    )])
}

pub(crate) fn matmul(a: &Tensor, b: &Tensor, dtype: DType, oshape: &[usize]) -> R<Tensor> {
    let (sa, sb) = (a.shape(), b.shape());
    let r = oshape.len();
    let (m, n) = (oshape[r - 2], oshape[r - 1]);
    let k = sa[sa.len() - 1];
    let batch = &oshape[..r - 2];
    let nb = numel(batch);
    // Batch index maps: broadcast each operand's batch dims to the output's.
    let mut ab: Vec<usize> = sa[..sa.len() - 2].to_vec();
    let mut bb: Vec<usize> = sb[..sb.len() - 2].to_vec();
    while ab.len() < batch.len() {
        ab.insert(0, 1);
    }
    while bb.len() < batch.len() {
        bb.insert(0, 1);
    }
    let ma = bcast_map(batch, &ab);
    let mb = bcast_map(batch, &bb);
    let (av, bv) = (a.to_f64_vec(), b.to_f64_vec());
    let mut out = vec![0.0f64; nb * m * n];
    for bi in 0..nb {
        let ao = ma[bi] * m * k;
        let bo = mb[bi] * k * n;
        let oo = bi * m * n;
        for i in 0..m {
            let row = &mut out[oo + i * n..oo + (i + 1) * n];
            for kk in 0..k {
                let x = av[ao + i * k + kk];
                if x == 0.0 {
                    continue;
                }
                let brow = &bv[bo + kk * n..bo + (kk + 1) * n];
                for (o, &y) in row.iter_mut().zip(brow) {
                    *o += x * y;
                }
            }
        }
    }
    if dtype.is_float() {
        float_t(dtype, oshape.to_vec(), &out)
    } else {
        int_t(
            dtype,
            oshape.to_vec(),
            &out.iter().map(|&x| x as i64).collect::<Vec<_>>(),
        )
    }
}

/// Data to channels-first `(N, C, spatial...)` as f64.
pub(crate) fn to_ncx(x: &Tensor, layout: Layout) -> (Vec<f64>, Vec<usize>) {
    let v = x.to_f64_vec();
    match layout {
        Layout::ChannelsFirst => (v, x.shape().to_vec()),
        Layout::ChannelsLast => {
            let r = x.shape().len();
            let mut perm = vec![0, r - 1];
            perm.extend(1..r - 1);
            transpose_vec(&v, x.shape(), &perm)
        }
    }
}

pub(crate) fn from_ncx(v: Vec<f64>, shape: &[usize], layout: Layout, dtype: DType) -> R<Tensor> {
    match layout {
        Layout::ChannelsFirst => float_t(dtype, shape.to_vec(), &v),
        Layout::ChannelsLast => {
            let r = shape.len();
            let mut perm = vec![0];
            perm.extend(2..r);
            perm.push(1);
            let (o, s) = transpose_vec(&v, shape, &perm);
            float_t(dtype, s, &o)
        }
    }
}

/// Kernel to `(A, B, k...)` where conv: A = C_out, B = C_in/g; conv_transpose: A = C_in, B = C_out/g.
pub(crate) fn kernel_abk(w: &Tensor, layout: Layout, transpose: bool) -> (Vec<f64>, Vec<usize>) {
    let v = w.to_f64_vec();
    let r = w.shape().len();
    let ns = r - 2;
    match layout {
        Layout::ChannelsFirst => (v, w.shape().to_vec()),
        Layout::ChannelsLast => {
            // conv: [k..., Cin/g, Cout] -> [Cout, Cin/g, k...]
            // conv_transpose: [k..., Cout/g, Cin] -> [Cin, Cout/g, k...]
            let mut perm = vec![ns + 1, ns];
            perm.extend(0..ns);
            let _ = transpose;
            transpose_vec(&v, w.shape(), &perm)
        }
    }
}

pub(crate) fn conv_eval(
    c: &ConvAttrs,
    x: &Tensor,
    w: &Tensor,
    dtype: DType,
    oshape: &[usize],
) -> R<Tensor> {
    let (xv, xs) = to_ncx(x, c.layout);
    let (wv, ws) = kernel_abk(w, c.layout, false);
    let ns = xs.len() - 2;
    let (n, cin) = (xs[0], xs[1]);
    let cout = ws[0];
    let cpg = ws[1];
    let g = c.groups;
    let opg = cout / g;
    let in_sp = &xs[2..];
    let k_sp = &ws[2..];
    let out_sp: Vec<usize> = match c.layout {
        Layout::ChannelsFirst => oshape[2..].to_vec(),
        Layout::ChannelsLast => oshape[1..oshape.len() - 1].to_vec(),
    };
    let in_st = strides(in_sp);
    let nin = numel(in_sp);
    let nk = numel(k_sp);
    let nout = numel(&out_sp);
    let koffs: Vec<Vec<usize>> = index_iter(k_sp).collect();
    let outs: Vec<Vec<usize>> = index_iter(&out_sp).collect();
    let mut out = vec![0.0f64; n * cout * nout];
    for b in 0..n {
        for co in 0..cout {
            let grp = co / opg;
            for (po, oidx) in outs.iter().enumerate() {
                let mut acc = 0.0;
                for (kk, kidx) in koffs.iter().enumerate() {
                    let mut off = 0usize;
                    let mut inside = true;
                    for d in 0..ns {
                        let p = (oidx[d] * c.strides[d] + kidx[d] * c.dilations[d]) as i64
                            - c.pads[d].0 as i64;
                        if p < 0 || p >= in_sp[d] as i64 {
                            inside = false;
                            break;
                        }
                        off += p as usize * in_st[d];
                    }
                    if !inside {
                        continue;
                    }
                    for ci in 0..cpg {
                        let xc = grp * cpg + ci;
                        acc += xv[(b * cin + xc) * nin + off] * wv[(co * cpg + ci) * nk + kk];
                    }
                }
                out[(b * cout + co) * nout + po] = acc;
            }
        }
    }
    let mut ncx = vec![n, cout];
    ncx.extend(&out_sp);
    from_ncx(out, &ncx, c.layout, dtype)
}

pub(crate) fn conv_transpose(
    c: &ConvAttrs,
    x: &Tensor,
    w: &Tensor,
    dtype: DType,
    oshape: &[usize],
) -> R<Tensor> {
    let (xv, xs) = to_ncx(x, c.layout);
    let (wv, ws) = kernel_abk(w, c.layout, true);
    let ns = xs.len() - 2;
    let (n, cin) = (xs[0], xs[1]);
    let opg = ws[1];
    let g = c.groups;
    let ipg = cin / g;
    let cout = opg * g;
    let in_sp = &xs[2..];
    let k_sp = &ws[2..];
    let out_sp: Vec<usize> = match c.layout {
        Layout::ChannelsFirst => oshape[2..].to_vec(),
        Layout::ChannelsLast => oshape[1..oshape.len() - 1].to_vec(),
    };
    let out_st = strides(&out_sp);
    let nin = numel(in_sp);
    let nk = numel(k_sp);
    let nout = numel(&out_sp);
    let koffs: Vec<Vec<usize>> = index_iter(k_sp).collect();
    let ins: Vec<Vec<usize>> = index_iter(in_sp).collect();
    let mut out = vec![0.0f64; n * cout * nout];
    // Scatter: each input position adds kernel * x into the output window.
    for b in 0..n {
        for ci in 0..cin {
            let grp = ci / ipg;
            for (pi, iidx) in ins.iter().enumerate() {
                let xval = xv[(b * cin + ci) * nin + pi];
                if xval == 0.0 {
                    continue;
                }
                for (kk, kidx) in koffs.iter().enumerate() {
                    let mut off = 0usize;
                    let mut inside = true;
                    for d in 0..ns {
                        let p = (iidx[d] * c.strides[d] + kidx[d] * c.dilations[d]) as i64
                            - c.pads[d].0 as i64;
                        if p < 0 || p >= out_sp[d] as i64 {
                            inside = false;
                            break;
                        }
                        off += p as usize * out_st[d];
                    }
                    if !inside {
                        continue;
                    }
                    for oc in 0..opg {
                        let co = grp * opg + oc;
                        out[(b * cout + co) * nout + off] += xval * wv[(ci * opg + oc) * nk + kk];
                    }
                }
            }
        }
    }
    let mut ncx = vec![n, cout];
    ncx.extend(&out_sp);
    from_ncx(out, &ncx, c.layout, dtype)
}

pub(crate) fn pool(p: &PoolAttrs, x: &Tensor, dtype: DType, oshape: &[usize]) -> R<Tensor> {
    let (xv, xs) = to_ncx(x, p.layout);
    let ns = xs.len() - 2;
    let (n, c) = (xs[0], xs[1]);
    let in_sp = &xs[2..];
    let out_sp: Vec<usize> = match p.layout {
        Layout::ChannelsFirst => oshape[2..].to_vec(),
        Layout::ChannelsLast => oshape[1..oshape.len() - 1].to_vec(),
    };
    let in_st = strides(in_sp);
    let nin = numel(in_sp);
    let nout = numel(&out_sp);
    let koffs: Vec<Vec<usize>> = index_iter(&p.window).collect();
    let outs: Vec<Vec<usize>> = index_iter(&out_sp).collect();
    let mut out = vec![0.0f64; n * c * nout];
    for bc in 0..n * c {
        for (po, oidx) in outs.iter().enumerate() {
            let mut acc = if p.kind == PoolKind::Max {
                f64::NEG_INFINITY
            } else {
                0.0
            };
            let mut count = 0usize;
            for kidx in &koffs {
                let mut off = 0usize;
                let mut inside = true;
                let mut in_padded = true;
                for d in 0..ns {
                    let dil = p.dilations.get(d).copied().unwrap_or(1);
                    let q = (oidx[d] * p.strides[d] + kidx[d] * dil) as i64 - p.pads[d].0 as i64;
                    if q < 0 || q >= in_sp[d] as i64 {
                        inside = false;
                        if q < -(p.pads[d].0 as i64) || q >= (in_sp[d] + p.pads[d].1) as i64 {
                            in_padded = false;
                        }
                    } else {
                        off += q as usize * in_st[d];
                    }
                }
                if !inside {
                    if p.count_include_pad && in_padded {
                        count += 1;
                    }
                    continue;
                }
                let v = xv[bc * nin + off];
                count += 1;
                match p.kind {
                    PoolKind::Max => {
                        if v > acc || v.is_nan() {
                            acc = v
                        }
                    }
                    PoolKind::Avg => acc += v,
                }
            }
            out[bc * nout + po] = match p.kind {
                PoolKind::Max => acc,
                PoolKind::Avg => {
                    if count == 0 {
                        0.0
                    } else {
                        acc / count as f64
                    }
                }
            };
        }
    }
    let mut ncx = vec![n, c];
    ncx.extend(&out_sp);
    from_ncx(out, &ncx, p.layout, dtype)
}

/// `conv_kernel_grad`: per sample the sum over output positions, then over the samples.
fn kernel_grad_eval(
    c: &ConvAttrs,
    x: &Tensor,
    dy: &Tensor,
    oshape: &[usize],
    dtype: DType,
) -> R<Tensor> {
    let (xs, ds) = (x.shape(), dy.shape());
    let (n, h, w, ci) = (xs[0], xs[1], xs[2], xs[3]);
    let (oh, ow, co) = (ds[1], ds[2], ds[3]);
    let (kh, kw) = (oshape[0], oshape[1]);
    let (xv, dv) = (x.to_f64_vec(), dy.to_f64_vec());
    let mut total = vec![0.0f64; kh * kw * ci * co];
    let mut part = vec![0.0f64; total.len()];
    for b in 0..n {
        part.iter_mut().for_each(|v| *v = 0.0);
        for (y, xx) in (0..oh).flat_map(|y| (0..ow).map(move |xx| (y, xx))) {
            let d = &dv[((b * oh + y) * ow + xx) * co..][..co];
            for (i, j) in (0..kh).flat_map(|i| (0..kw).map(move |j| (i, j))) {
                let q = (y * c.strides[0] + i * c.dilations[0]) as i64 - c.pads[0].0 as i64;
                let r = (xx * c.strides[1] + j * c.dilations[1]) as i64 - c.pads[1].0 as i64;
                if q < 0 || q >= h as i64 || r < 0 || r >= w as i64 {
                    continue;
                }
                let at = ((b * h + q as usize) * w + r as usize) * ci;
                for ch in 0..ci {
                    let xvv = xv[at + ch];
                    let o = ((i * kw + j) * ci + ch) * co;
                    for (f, dd) in d.iter().enumerate() {
                        part[o + f] += xvv * dd;
                    }
                }
            }
        }
        for (t, p) in total.iter_mut().zip(&part) {
            *t += p;
        }
    }
    float_t(dtype, oshape.to_vec(), &total)
}

/// `col2im`: each pixel the sum of the columns whose window covers it, the taps in row-major
/// order.
fn col2im(c: &ConvAttrs, k: &[usize], x: &Tensor, oshape: &[usize], dtype: DType) -> R<Tensor> {
    let xs = x.shape();
    let (oh, ow, kk) = (xs[1], xs[2], xs[3]);
    let (n, h, w, ch) = (oshape[0], oshape[1], oshape[2], oshape[3]);
    let xv = x.to_f64_vec();
    // Where input position `o` (along axis `a`) reads tap `i`'s column: (o + p - i d) / s.
    let at = |a: usize, o: usize, i: usize, len: usize| -> Option<usize> {
        let t = (o + c.pads[a].0) as i64 - (i * c.dilations[a]) as i64;
        let s = c.strides[a] as i64;
        (t >= 0 && t % s == 0 && t / s < len as i64).then_some((t / s) as usize)
    };
    let mut out = vec![0.0f64; n * h * w * ch];
    for b in 0..n {
        for (y, xx) in (0..h).flat_map(|y| (0..w).map(move |xx| (y, xx))) {
            let o = &mut out[((b * h + y) * w + xx) * ch..][..ch];
            for (i, j) in (0..k[0]).flat_map(|i| (0..k[1]).map(move |j| (i, j))) {
                let (Some(q), Some(r)) = (at(0, y, i, oh), at(1, xx, j, ow)) else {
                    continue;
                };
                let from = ((b * oh + q) * ow + r) * kk + (i * k[1] + j) * ch;
                for (v, s) in o.iter_mut().zip(&xv[from..from + ch]) {
                    *v += s;
                }
            }
        }
    }
    float_t(dtype, oshape.to_vec(), &out)
}

/// `pool_grad`: each window's gradient to the first of its taps (row-major, padding as -inf)
/// equal to the window's output (channels-last 2-D max pooling).
fn max_pool_grad(p: &PoolAttrs, x: &Tensor, y: &Tensor, dy: &Tensor, dtype: DType) -> R<Tensor> {
    let (xs, ys) = (x.shape(), y.shape());
    let (n, h, w, c) = (xs[0], xs[1], xs[2], xs[3]);
    let (oh, ow) = (ys[1], ys[2]);
    let (xv, yv, dv) = (x.to_f64_vec(), y.to_f64_vec(), dy.to_f64_vec());
    let dil = |i: usize| p.dilations.get(i).copied().unwrap_or(1);
    let mut dx = vec![0.0f64; xv.len()];
    for b in 0..n {
        for (a, bb) in (0..oh).flat_map(|a| (0..ow).map(move |bb| (a, bb))) {
            for ch in 0..c {
                let o = ((b * oh + a) * ow + bb) * c + ch;
                'taps: for i in 0..p.window[0] {
                    for j in 0..p.window[1] {
                        let q = (a * p.strides[0] + i * dil(0)) as i64 - p.pads[0].0 as i64;
                        let r = (bb * p.strides[1] + j * dil(1)) as i64 - p.pads[1].0 as i64;
                        let inside = q >= 0 && q < h as i64 && r >= 0 && r < w as i64;
                        let at = inside.then(|| ((b * h + q as usize) * w + r as usize) * c + ch);
                        let v = at.map_or(f64::NEG_INFINITY, |k| xv[k]);
                        if v == yv[o] {
                            if let Some(k) = at {
                                dx[k] += dv[o];
                            }
                            break 'taps;
                        }
                    }
                }
            }
        }
    }
    float_t(dtype, xs.to_vec(), &dx)
}

/// The perm that swaps the last two of `rank` axes.
fn swap_last(rank: usize) -> Vec<usize> {
    let mut p: Vec<usize> = (0..rank).collect();
    p.swap(rank - 2, rank - 1);
    p
}

/// Derivative rules. A matmul's gradients are matmuls: dA = dY B^T, dB = A^T dY, each summed
/// over the batch dims it was broadcast along (a dense layer on a sequence: a batched matmul,
/// then a sum over the batch). A 2-D convolution (one group): the input's gradient is a
/// transposed convolution, the kernel's one batched matmul per kernel position. 2-D pooling:
/// the gradient routed to the window's maximum (or spread over it), window position by position.
pub(crate) fn grad(
    b: &mut super::Builder,
    op: &Op,
    ins: &[crate::ValueId],
    outs: &[crate::ValueId],
    dys: &[Option<crate::ValueId>],
    need: &[bool],
) -> R<Vec<Option<crate::ValueId>>> {
    let Some(dy) = dys[0] else {
        return Ok(vec![None; ins.len()]);
    };
    match op {
        Op::MatMul => {
            let (x, w) = (ins[0], ins[1]);
            let (tx, tw) = (b.g.ty(x).clone(), b.g.ty(w).clone());
            let dx = if need[0] {
                let wt = b.op(
                    Op::Transpose {
                        perm: swap_last(tw.rank()),
                    },
                    &[w],
                    "grad.t",
                )?;
                let d = b.op(Op::MatMul, &[dy, wt], "grad")?;
                Some(b.sum_to(d, &tx)?)
            } else {
                None
            };
            let dw = if need[1] {
                let xt = b.op(
                    Op::Transpose {
                        perm: swap_last(tx.rank()),
                    },
                    &[x],
                    "grad.t",
                )?;
                let d = b.op(Op::MatMul, &[xt, dy], "grad")?;
                Some(b.sum_to(d, &tw)?)
            } else {
                None
            };
            Ok(vec![dx, dw])
        }
        // One group, or depthwise (a group per input channel: Keras's DepthwiseConv2D).
        Op::Conv(c)
            if b.g.ty(ins[0]).rank() == 4
                && (c.groups == 1
                    || Some(c.groups)
                        == split_layout(&b.g.ty(ins[0]).shape, c.layout).1.known()) =>
        {
            let (x, w) = (ins[0], ins[1]);
            let (tx, tw) = (b.g.ty(x).clone(), b.g.ty(w).clone());
            let dx = if need[0] {
                Some(conv_input_grad(b, c, dy, w, &tx)?)
            } else {
                None
            };
            let dw = if need[1] {
                Some(conv_kernel_grad(b, c, x, dy, &tw)?)
            } else {
                None
            };
            Ok(vec![dx, dw])
        }
        Op::Pool(p) if b.g.ty(ins[0]).rank() == 4 => {
            Ok(vec![Some(pool_grad(b, p, ins[0], outs[0], dy)?)])
        }
        _ => Err(format!(
            "{} has no derivative rule yet (forgec cannot train through it)",
            op.name()
        )),
    }
}

/// `v` (`[n, oh, ow, c]`) spread onto a `[n, h, w, c]` grid: element (a, b) lands at
/// (off_h + a s_h, off_w + b s_w), zeros elsewhere (zero-stuffing, then padding or cutting
/// to the grid).
#[allow(clippy::too_many_arguments)]
fn place(
    b: &mut super::Builder,
    v: crate::ValueId,
    (oh, ow, c): (usize, usize, usize),
    (sh, sw): (usize, usize),
    (off_h, off_w): (usize, usize),
    (h, w): (usize, usize),
) -> R<crate::ValueId> {
    let mut v = v;
    if sh > 1 || sw > 1 {
        let (a, bb, cc) = (oh as i64, ow as i64, c as i64);
        let r6 = b.op(
            Op::Reshape {
                shape: vec![0, a, 1, bb, 1, cc],
            },
            &[v],
            "grad.stuff",
        )?;
        let p6 = b.op(
            Op::Pad {
                pads: vec![(0, 0), (0, 0), (0, sh - 1), (0, 0), (0, sw - 1), (0, 0)],
                mode: PadMode::Constant,
                value: 0.0,
            },
            &[r6],
            "grad.stuff",
        )?;
        v = b.op(
            Op::Reshape {
                shape: vec![0, a * sh as i64, bb * sw as i64, cc],
            },
            &[p6],
            "grad.stuff",
        )?;
    }
    let (lh, lw) = (oh * sh, ow * sw);
    // Cut what runs past the grid, then pad up to it.
    let (eh, ew) = ((h - off_h).min(lh), (w - off_w).min(lw));
    if eh < lh || ew < lw {
        v = b.op(
            Op::Slice {
                axes: vec![1, 2],
                starts: vec![0, 0],
                ends: vec![eh as i64, ew as i64],
                steps: vec![1, 1],
            },
            &[v],
            "grad.cut",
        )?;
    }
    b.op(
        Op::Pad {
            pads: vec![
                (0, 0),
                (off_h, h - off_h - eh),
                (off_w, w - off_w - ew),
                (0, 0),
            ],
            mode: PadMode::Constant,
            value: 0.0,
        },
        &[v],
        "grad.place",
    )
}

/// A 2-D pooling's gradient: `pool_grad` for a max pooling whose windows do not overlap, else
/// one window position at a time. Max: each output's gradient goes
/// to the first input in the window (row-major) equal to the maximum, as TensorFlow's
/// MaxPoolGrad does; average: spread evenly over the window (padded positions counted when
/// they count in the divisor).
fn pool_grad(
    b: &mut super::Builder,
    p: &PoolAttrs,
    x: crate::ValueId,
    y: crate::ValueId,
    dy: crate::ValueId,
) -> R<crate::ValueId> {
    let first = p.layout == Layout::ChannelsFirst;
    let nhwc = |b: &mut super::Builder, v| {
        b.op(
            Op::Transpose {
                perm: vec![0, 2, 3, 1],
            },
            &[v],
            "grad.nhwc",
        )
    };
    let (x, y, dy) = if first {
        (nhwc(b, x)?, nhwc(b, y)?, nhwc(b, dy)?)
    } else {
        (x, y, dy)
    };
    let (tx, ty) = (b.g.ty(x).clone(), b.g.ty(y).clone());
    let k = |d: &Dim| {
        d.known()
            .ok_or("a pooling over symbolic spatial dims has no derivative rule")
    };
    let (h, w, c) = (k(&tx.shape[1])?, k(&tx.shape[2])?, k(&tx.shape[3])?);
    let (oh, ow) = (k(&ty.shape[1])?, k(&ty.shape[2])?);
    let dil = |i: usize| p.dilations.get(i).copied().unwrap_or(1);
    let (hp, wp) = (h + p.pads[0].0 + p.pads[0].1, w + p.pads[1].0 + p.pads[1].1);
    let padded = p.pads.iter().any(|&q| q != (0, 0));
    if p.kind == PoolKind::Avg && padded && !p.count_include_pad {
        return Err(
            "average pooling with padding left out of the count has no derivative rule yet".into(),
        );
    }
    // Windows that do not overlap (and no padding): one op, one pass over the input.
    let apart = (0..2).all(|i| p.strides[i] >= p.window[i] && dil(i) == 1);
    if p.kind == PoolKind::Max && apart && !padded {
        let t = PoolAttrs {
            layout: Layout::ChannelsLast,
            ..p.clone()
        };
        let dx = b.op(Op::PoolGrad(t), &[x, y, dy], "grad.pool")?;
        return if first {
            b.op(
                Op::Transpose {
                    perm: vec![0, 3, 1, 2],
                },
                &[dx],
                "grad.nchw",
            )
        } else {
            Ok(dx)
        };
    }
    let xp = if padded {
        let fill = if p.kind == PoolKind::Max {
            f64::NEG_INFINITY
        } else {
            0.0
        };
        b.op(
            Op::Pad {
                pads: vec![(0, 0), p.pads[0], p.pads[1], (0, 0)],
                mode: PadMode::Constant,
                value: fill,
            },
            &[x],
            "grad.pad",
        )?
    } else {
        x
    };
    let zero = b.scalar_like(dy, 0.0);
    let share = if p.kind == PoolKind::Avg {
        let n = b.scalar_like(dy, (p.window[0] * p.window[1]) as f64);
        Some(b.binary(BinaryOp::Div, dy, n)?)
    } else {
        None
    };
    let mut taken: Option<crate::ValueId> = None;
    let mut acc: Option<crate::ValueId> = None;
    for i in 0..p.window[0] {
        for j in 0..p.window[1] {
            let (o0, o1) = (i * dil(0), j * dil(1));
            let part = match share {
                Some(s) => s,
                None => {
                    let xs = b.op(
                        Op::Slice {
                            axes: vec![1, 2],
                            starts: vec![o0 as i64, o1 as i64],
                            ends: vec![
                                (o0 + (oh - 1) * p.strides[0] + 1) as i64,
                                (o1 + (ow - 1) * p.strides[1] + 1) as i64,
                            ],
                            steps: vec![p.strides[0] as i64, p.strides[1] as i64],
                        },
                        &[xp],
                        "grad.window",
                    )?;
                    let hit = b.binary(BinaryOp::Eq, xs, y)?;
                    let hit = match taken {
                        None => hit,
                        Some(t) => {
                            let free = b.unary(UnaryOp::Not, t)?;
                            b.binary(BinaryOp::And, hit, free)?
                        }
                    };
                    taken = Some(match taken {
                        None => hit,
                        Some(t) => b.binary(BinaryOp::Or, t, hit)?,
                    });
                    b.op(Op::Select, &[hit, dy, zero], "grad.route")?
                }
            };
            let placed = place(
                b,
                part,
                (oh, ow, c),
                (p.strides[0], p.strides[1]),
                (o0, o1),
                (hp, wp),
            )?;
            acc = Some(match acc {
                None => placed,
                Some(a) => b.binary(BinaryOp::Add, a, placed)?,
            });
        }
    }
    let mut dx = acc.ok_or("an empty pooling window")?;
    if padded {
        dx = b.op(
            Op::Slice {
                axes: vec![1, 2],
                starts: vec![p.pads[0].0 as i64, p.pads[1].0 as i64],
                ends: vec![(p.pads[0].0 + h) as i64, (p.pads[1].0 + w) as i64],
                steps: vec![1, 1],
            },
            &[dx],
            "grad.unpad",
        )?;
    }
    if first {
        dx = b.op(
            Op::Transpose {
                perm: vec![0, 3, 1, 2],
            },
            &[dx],
            "grad.nchw",
        )?;
    }
    Ok(dx)
}

/// A convolution's input gradient: the transposed convolution of the output gradient with the
/// same kernel (its stored layout is the one conv_transpose takes), the output padding making
/// up what the strides dropped.
fn conv_input_grad(
    b: &mut super::Builder,
    c: &ConvAttrs,
    dy: crate::ValueId,
    w: crate::ValueId,
    tx: &TensorType,
) -> R<crate::ValueId> {
    let (_, _, spatial) = split_layout(&tx.shape, c.layout);
    let ksp: Vec<usize> = {
        let ws = b.g.ty(w).shape.clone();
        let k: Vec<Dim> = match c.layout {
            Layout::ChannelsLast => ws[..ws.len() - 2].to_vec(),
            Layout::ChannelsFirst => ws[2..].to_vec(),
        };
        k.iter().map(|d| d.known().unwrap_or(1)).collect()
    };
    let mut output_padding = Vec::new();
    for (i, d) in spatial.iter().enumerate() {
        let h = d
            .known()
            .ok_or("a convolution over a symbolic spatial dim has no derivative rule")?;
        let span = h + c.pads[i].0 + c.pads[i].1;
        let reach = c.dilations[i] * (ksp[i] - 1) + 1;
        output_padding.push((span - reach) % c.strides[i]);
    }
    let t = ConvAttrs {
        output_padding,
        ..c.clone()
    };
    b.op(Op::ConvTranspose(t), &[dy, w], "grad.conv_t")
}

/// A 2-D convolution's kernel gradient: `conv_kernel_grad` (f32 and f64, one group), else one
/// kernel position at a time: the input window the position reads (a strided slice of the
/// padded input) times the output gradient, summed over the samples and output positions (a
/// batched matmul, then a sum over the batch).
fn conv_kernel_grad(
    b: &mut super::Builder,
    c: &ConvAttrs,
    x: crate::ValueId,
    dy: crate::ValueId,
    tw: &TensorType,
) -> R<crate::ValueId> {
    // Channels-first is handled in channels-last form, transposed in and out.
    let (x, dy) = if c.layout == Layout::ChannelsFirst {
        let t = |b: &mut super::Builder, v| {
            b.op(
                Op::Transpose {
                    perm: vec![0, 2, 3, 1],
                },
                &[v],
                "grad.nhwc",
            )
        };
        (t(b, x)?, t(b, dy)?)
    } else {
        (x, dy)
    };
    let (tx, ty) = (b.g.ty(x).clone(), b.g.ty(dy).clone());
    let k = |d: &Dim| {
        d.known()
            .ok_or("a convolution with symbolic spatial dims has no derivative rule")
    };
    let (oh, ow, co) = (k(&ty.shape[1])?, k(&ty.shape[2])?, k(&ty.shape[3])?);
    let ci = k(&tx.shape[3])?;
    let (kh, kw) = match c.layout {
        Layout::ChannelsLast => (k(&tw.shape[0])?, k(&tw.shape[1])?),
        Layout::ChannelsFirst => (k(&tw.shape[2])?, k(&tw.shape[3])?),
    };
    // One op, which the CPU target runs as one pass (in f64 for the gradient checks).
    if c.groups == 1 && matches!(tx.dtype, DType::F32 | DType::F64) {
        let t = ConvAttrs {
            layout: Layout::ChannelsLast,
            ..c.clone()
        };
        let hwio = b.op(
            Op::ConvKernelGrad {
                conv: t,
                kernel: vec![kh, kw],
            },
            &[x, dy],
            "grad.kernel",
        )?;
        return to_kernel_layout(b, c, hwio);
    }
    let xp = if c.pads.iter().any(|&p| p != (0, 0)) {
        b.op(
            Op::Pad {
                pads: vec![(0, 0), c.pads[0], c.pads[1], (0, 0)],
                mode: PadMode::Constant,
                value: 0.0,
            },
            &[x],
            "grad.pad",
        )?
    } else {
        x
    };
    if c.groups > 1 {
        return depthwise_kernel_grad(b, c, xp, dy, (oh, ow, ci, co), (kh, kw));
    }
    let (oo, oi, oc) = ((oh * ow) as i64, ci as i64, co as i64);
    let dr = b.op(
        Op::Reshape {
            shape: vec![0, oo, oc],
        },
        &[dy],
        "grad.rows",
    )?;
    kernel_taps(b, c, xp, (oh, ow), (kh, kw), |b, xs| {
        let xr = b.op(
            Op::Reshape {
                shape: vec![0, oo, oi],
            },
            &[xs],
            "grad.rows",
        )?;
        let s = b.t_matmul_summed(xr, dr)?;
        b.op(
            Op::Reshape {
                shape: vec![1, 1, oi, oc],
            },
            &[s],
            "grad.tap",
        )
    })
}

/// The input window kernel position `(i, j)` reads: a strided slice of the padded
/// channels-last input `xp`, `[N, oh, ow, C]`.
fn window(
    b: &mut super::Builder,
    c: &ConvAttrs,
    xp: crate::ValueId,
    (oh, ow): (usize, usize),
    (i, j): (usize, usize),
) -> R<crate::ValueId> {
    let (s0, s1) = ((i * c.dilations[0]) as i64, (j * c.dilations[1]) as i64);
    b.op(
        Op::Slice {
            axes: vec![1, 2],
            starts: vec![s0, s1],
            ends: vec![
                s0 + ((oh - 1) * c.strides[0]) as i64 + 1,
                s1 + ((ow - 1) * c.strides[1]) as i64 + 1,
            ],
            steps: vec![c.strides[0] as i64, c.strides[1] as i64],
        },
        &[xp],
        "grad.window",
    )
}

/// An HWIO kernel gradient in the convolution's kernel layout (OIHW for channels-first).
fn to_kernel_layout(
    b: &mut super::Builder,
    c: &ConvAttrs,
    hwio: crate::ValueId,
) -> R<crate::ValueId> {
    match c.layout {
        Layout::ChannelsLast => Ok(hwio),
        Layout::ChannelsFirst => b.op(
            Op::Transpose {
                perm: vec![3, 2, 0, 1],
            },
            &[hwio],
            "grad.oihw",
        ),
    }
}

/// A kernel gradient assembled tap by tap: for each kernel position, the input window it
/// reads (a strided slice of the padded channels-last input `xp`) goes to `tap`, which gives
/// that position's `[1, 1, I, O]` block; the blocks make the HWIO kernel (OIHW for a
/// channels-first convolution).
fn kernel_taps(
    b: &mut super::Builder,
    c: &ConvAttrs,
    xp: crate::ValueId,
    (oh, ow): (usize, usize),
    (kh, kw): (usize, usize),
    mut tap: impl FnMut(&mut super::Builder, crate::ValueId) -> R<crate::ValueId>,
) -> R<crate::ValueId> {
    let mut rows = Vec::new();
    for i in 0..kh {
        let mut cols = Vec::new();
        for j in 0..kw {
            let xs = window(b, c, xp, (oh, ow), (i, j))?;
            cols.push(tap(b, xs)?);
        }
        rows.push(if cols.len() == 1 {
            cols[0]
        } else {
            b.op(Op::Concat { axis: 1 }, &cols, "grad.row")?
        });
    }
    let hwio = if rows.len() == 1 {
        rows[0]
    } else {
        b.op(Op::Concat { axis: 0 }, &rows, "grad.kernel")?
    };
    to_kernel_layout(b, c, hwio)
}

/// A depthwise convolution's kernel gradient (channels-last, `xp` the padded input; kernel
/// `[kh, kw, 1, ci m]`, output channel `c m + k` reads input channel c): per kernel position,
/// the input window times the output gradient, summed over the samples and output positions,
/// elementwise per channel.
fn depthwise_kernel_grad(
    b: &mut super::Builder,
    c: &ConvAttrs,
    xp: crate::ValueId,
    dy: crate::ValueId,
    (oh, ow, ci, co): (usize, usize, usize, usize),
    (kh, kw): (usize, usize),
) -> R<crate::ValueId> {
    let m = co / ci;
    let (h, w, cc, mm) = (oh as i64, ow as i64, ci as i64, m as i64);
    let d5 = b.op(
        Op::Reshape {
            shape: vec![0, h, w, cc, mm],
        },
        &[dy],
        "grad.per_channel",
    )?;
    kernel_taps(b, c, xp, (oh, ow), (kh, kw), |b, xs| {
        let x5 = b.op(
            Op::Reshape {
                shape: vec![0, h, w, cc, 1],
            },
            &[xs],
            "grad.window5",
        )?;
        let p = b.op(Op::Binary(crate::BinaryOp::Mul), &[x5, d5], "grad")?;
        let s = b.op(
            Op::Reduce {
                kind: ReduceKind::Sum,
                axes: vec![0, 1, 2],
                keepdims: false,
            },
            &[p],
            "grad.sum",
        )?;
        // OIHW of a depthwise kernel is [ci m, 1, kh, kw]: the transpose of this HWIO.
        b.op(
            Op::Reshape {
                shape: vec![1, 1, 1, cc * mm],
            },
            &[s],
            "grad.tap",
        )
    })
}
