//! Type rules: the output types of an op from its input types. Shared by graph building,
//! the verifier, the shape-inference pass and the interpreter (on concrete shapes).

use crate::op::*;
use crate::types::{Dim, TensorType};
use forgec_runtime::DType;

type R<T> = Result<T, String>;

fn shape_str(s: &[Dim]) -> String {
    TensorType::new(DType::F32, s.to_vec()).to_string()[3..].to_string()
}

/// NumPy broadcasting of two shapes. A symbol broadcasts against 1 and against itself.
pub fn broadcast_shapes(a: &[Dim], b: &[Dim]) -> R<Vec<Dim>> {
    let n = a.len().max(b.len());
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let da = if i + a.len() >= n {
            Some(&a[i + a.len() - n])
        } else {
            None
        };
        let db = if i + b.len() >= n {
            Some(&b[i + b.len() - n])
        } else {
            None
        };
        let d = match (da, db) {
            (Some(x), None) | (None, Some(x)) => x.clone(),
            (Some(x), Some(y)) if x == y => x.clone(),
            (Some(x), Some(y)) if x.is_one() => y.clone(),
            (Some(x), Some(y)) if y.is_one() => x.clone(),
            _ => {
                return Err(format!(
                    "shapes {} and {} do not broadcast",
                    shape_str(a),
                    shape_str(b)
                ))
            }
        };
        out.push(d);
    }
    Ok(out)
}

fn same_dtype(ts: &[TensorType]) -> R<DType> {
    let d = ts[0].dtype;
    for t in &ts[1..] {
        if t.dtype != d {
            return Err(format!("element types differ: {} vs {}", d, t.dtype));
        }
    }
    Ok(d)
}

fn need_float(t: &TensorType, what: &str) -> R<()> {
    if t.dtype.is_float() {
        Ok(())
    } else {
        Err(format!("{what} must be a float tensor, got {}", t.dtype))
    }
}

fn check_axis(axis: usize, rank: usize) -> R<()> {
    if axis < rank {
        Ok(())
    } else {
        Err(format!("axis {axis} is out of range for rank {rank}"))
    }
}

fn known(d: &Dim, what: &str) -> R<usize> {
    d.known()
        .ok_or_else(|| format!("{what} must have a known size, got `{d}`"))
}

/// Output size of a sliding window along one dim.
fn window_out(
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
fn split_layout(shape: &[Dim], layout: Layout) -> (Dim, Dim, Vec<Dim>) {
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

fn join_layout(n: Dim, c: Dim, spatial: Vec<Dim>, layout: Layout) -> Vec<Dim> {
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

fn check_spatial_attrs(n: usize, lists: &[(&str, usize)]) -> R<()> {
    for (name, len) in lists {
        if *len != n {
            return Err(format!("'{name}' has {len} entries for {n} spatial dims"));
        }
    }
    Ok(())
}

fn conv(c: &ConvAttrs, x: &TensorType, w: &TensorType, transpose: bool) -> R<Vec<TensorType>> {
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

fn reshape(x: &TensorType, shape: &[i64]) -> R<Vec<Dim>> {
    // Symbols in the input must pass through at the same place (0 entries) or be absorbed
    // wholly; known dims can be regrouped freely.
    let mut out: Vec<Option<Dim>> = Vec::with_capacity(shape.len());
    let mut infer_at = None;
    for (i, &s) in shape.iter().enumerate() {
        match s {
            0 => {
                let d = x.shape.get(i).ok_or_else(|| {
                    format!("entry {i} is 0 (copy) but the input has rank {}", x.rank())
                })?;
                out.push(Some(d.clone()));
            }
            -1 => {
                if infer_at.is_some() {
                    return Err("more than one -1 in the target shape".into());
                }
                infer_at = Some(i);
                out.push(None);
            }
            s if s > 0 => out.push(Some(Dim::Known(s as usize))),
            s => return Err(format!("invalid target dim {s}")),
        }
    }
    let mut in_syms: Vec<&Dim> = x.shape.iter().filter(|d| d.known().is_none()).collect();
    let too_big = || format!("the target shape {shape:?} has more than 2^63 elements");
    let in_known: usize = x
        .shape
        .iter()
        .filter_map(Dim::known)
        .try_fold(1usize, |a, d| a.checked_mul(d))
        .ok_or_else(too_big)?;
    for d in out.iter().flatten() {
        if d.known().is_none() {
            if let Some(p) = in_syms.iter().position(|s| *s == d) {
                in_syms.remove(p);
            }
        }
    }
    let out_known: usize = out
        .iter()
        .flatten()
        .filter_map(Dim::known)
        .try_fold(1usize, |a, d| a.checked_mul(d))
        .ok_or_else(too_big)?;
    if !in_syms.is_empty() {
        // One symbol not copied in place may move to the -1 entry when the known factors
        // agree: the -1 dim is then exactly that symbol.
        if let (Some(i), [sym]) = (infer_at, in_syms.as_slice()) {
            if in_known == out_known {
                out[i] = Some((*sym).clone());
                return Ok(out.into_iter().map(|d| d.expect("filled")).collect());
            }
        }
        return Err(format!(
            "the symbolic dim `{}` cannot be regrouped into a fixed shape",
            in_syms[0]
        ));
    }
    match infer_at {
        Some(i) => {
            if out_known == 0 || !in_known.is_multiple_of(out_known) {
                return Err(format!(
                    "cannot reshape {} into {:?}: {} elements do not divide by {}",
                    shape_str(&x.shape),
                    shape,
                    in_known,
                    out_known
                ));
            }
            out[i] = Some(Dim::Known(in_known / out_known));
        }
        None => {
            if in_known != out_known {
                return Err(format!(
                    "cannot reshape {} ({} elements per symbol) into {:?} ({})",
                    shape_str(&x.shape),
                    in_known,
                    shape,
                    out_known
                ));
            }
        }
    }
    Ok(out.into_iter().map(|d| d.expect("filled")).collect())
}

/// Normalizes a (possibly negative, clamped) slice into (start, count) for a dim of size `n`.
pub fn slice_range(n: usize, start: i64, end: i64, step: i64) -> R<(i64, usize)> {
    if step == 0 {
        return Err("slice step must not be 0".into());
    }
    let n = n as i64;
    let norm = |v: i64, lo: i64, hi: i64| -> i64 {
        let v = if v < 0 { v + n } else { v };
        v.clamp(lo, hi)
    };
    if step > 0 {
        let s = norm(start, 0, n);
        let e = norm(end, 0, n);
        let count = if e > s { (e - s + step - 1) / step } else { 0 };
        Ok((s, count as usize))
    } else {
        let s = norm(start, -1, n - 1);
        let e = norm(end, -1, n - 1);
        let count = if s > e {
            (s - e + (-step) - 1) / (-step)
        } else {
            0
        };
        Ok((s, count as usize))
    }
}

/// The output types of `op` applied to inputs of types `ins`.
pub fn infer(op: &Op, ins: &[TensorType]) -> R<Vec<TensorType>> {
    let (lo, hi) = op.arity();
    if ins.len() < lo || ins.len() > hi {
        return Err(if lo == hi {
            format!("takes {lo} inputs, got {}", ins.len())
        } else {
            format!("takes at least {lo} inputs, got {}", ins.len())
        });
    }
    let one = |t: TensorType| Ok(vec![t]);
    match op {
        Op::Const { value, .. } => one(TensorType::known(value.dtype(), value.shape())),
        Op::Unary(u) => {
            let x = &ins[0];
            match u {
                UnaryOp::Not => {
                    if x.dtype != DType::Bool {
                        return Err(format!("not takes bool, got {}", x.dtype));
                    }
                }
                UnaryOp::BitNot => {
                    if !x.dtype.is_int() {
                        return Err(format!("bit_not takes integers, got {}", x.dtype));
                    }
                }
                UnaryOp::Neg | UnaryOp::Abs | UnaryOp::Sign | UnaryOp::Relu => {
                    if x.dtype == DType::Bool {
                        return Err(format!("{} does not take bool", u.name()));
                    }
                }
                _ => need_float(x, "the input")?,
            }
            one(x.clone())
        }
        Op::Binary(b) => {
            let dt = same_dtype(ins)?;
            if b.is_logical() && dt != DType::Bool {
                return Err(format!("{} takes bool, got {dt}", b.name()));
            }
            if b.is_bitwise() && !dt.is_int() {
                return Err(format!("{} takes integers, got {dt}", b.name()));
            }
            if !b.is_logical() && !b.is_comparison() && dt == DType::Bool {
                return Err(format!("{} does not take bool", b.name()));
            }
            let shape = broadcast_shapes(&ins[0].shape, &ins[1].shape)?;
            let dt = if b.is_comparison() { DType::Bool } else { dt };
            one(TensorType::new(dt, shape))
        }
        Op::Select => {
            if ins[0].dtype != DType::Bool {
                return Err(format!("the condition must be bool, got {}", ins[0].dtype));
            }
            let dt = same_dtype(&ins[1..])?;
            let s = broadcast_shapes(&ins[0].shape, &ins[1].shape)?;
            let s = broadcast_shapes(&s, &ins[2].shape)?;
            one(TensorType::new(dt, s))
        }
        Op::Cast { to } => one(TensorType::new(*to, ins[0].shape.clone())),
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
        Op::Conv(c) => conv(c, &ins[0], &ins[1], false),
        Op::ConvTranspose(c) => conv(c, &ins[0], &ins[1], true),
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
        Op::Reduce {
            kind,
            axes,
            keepdims,
        } => {
            let x = &ins[0];
            if x.dtype == DType::Bool {
                return Err(format!("reduce {} does not take bool", kind.name()));
            }
            if *kind == ReduceKind::Mean {
                need_float(x, "the input of a mean")?;
            }
            for &a in axes {
                check_axis(a, x.rank())?;
            }
            let mut s = Vec::new();
            for (i, d) in x.shape.iter().enumerate() {
                if axes.contains(&i) {
                    if *keepdims {
                        s.push(Dim::Known(1));
                    }
                } else {
                    s.push(d.clone());
                }
            }
            one(TensorType::new(x.dtype, s))
        }
        Op::Softmax { axis, .. } => {
            need_float(&ins[0], "the input")?;
            check_axis(*axis, ins[0].rank())?;
            one(ins[0].clone())
        }
        Op::Reshape { shape } => one(TensorType::new(ins[0].dtype, reshape(&ins[0], shape)?)),
        Op::Transpose { perm } => {
            let x = &ins[0];
            let mut seen = vec![false; x.rank()];
            if perm.len() != x.rank()
                || perm
                    .iter()
                    .any(|&p| p >= x.rank() || std::mem::replace(&mut seen[p], true))
            {
                return Err(format!(
                    "{perm:?} is not a permutation of {} axes",
                    x.rank()
                ));
            }
            one(TensorType::new(
                x.dtype,
                perm.iter().map(|&p| x.shape[p].clone()).collect(),
            ))
        }
        Op::Concat { axis } => {
            let dt = same_dtype(ins)?;
            let r = ins[0].rank();
            check_axis(*axis, r)?;
            let mut total = 0usize;
            for (k, t) in ins.iter().enumerate() {
                if t.rank() != r {
                    return Err(format!(
                        "input {k} has rank {} but input 0 has rank {r}",
                        t.rank()
                    ));
                }
                for i in 0..r {
                    if i != *axis && t.shape[i] != ins[0].shape[i] {
                        return Err(format!(
                            "input {k} {} differs from input 0 {} outside the concat axis {axis}",
                            shape_str(&t.shape),
                            shape_str(&ins[0].shape)
                        ));
                    }
                }
                total += known(&t.shape[*axis], "the concat axis")?;
            }
            let mut s = ins[0].shape.clone();
            s[*axis] = Dim::Known(total);
            one(TensorType::new(dt, s))
        }
        Op::Slice {
            axes,
            starts,
            ends,
            steps,
        } => {
            let x = &ins[0];
            if starts.len() != axes.len() || ends.len() != axes.len() || steps.len() != axes.len() {
                return Err("axes, starts, ends and steps must have the same length".into());
            }
            let mut s = x.shape.clone();
            for (k, &a) in axes.iter().enumerate() {
                check_axis(a, x.rank())?;
                let n = known(&x.shape[a], "a sliced dim")?;
                s[a] = Dim::Known(slice_range(n, starts[k], ends[k], steps[k])?.1);
            }
            one(TensorType::new(x.dtype, s))
        }
        Op::Pad { pads, mode, .. } => {
            let x = &ins[0];
            if pads.len() != x.rank() {
                return Err(format!("{} pad pairs for rank {}", pads.len(), x.rank()));
            }
            let mut s = Vec::new();
            for (d, &(b, e)) in x.shape.iter().zip(pads) {
                if b == 0 && e == 0 {
                    s.push(d.clone());
                } else {
                    let n = known(d, "a padded dim")?;
                    if *mode == PadMode::Reflect && (b >= n || e >= n) {
                        return Err(format!(
                            "reflect padding ({b}, {e}) needs a dim larger than {n}"
                        ));
                    }
                    if *mode == PadMode::Edge && n == 0 {
                        return Err("edge padding of an empty dim".into());
                    }
                    s.push(Dim::Known(n + b + e));
                }
            }
            one(TensorType::new(x.dtype, s))
        }
        Op::Gather { axis } => {
            let (x, idx) = (&ins[0], &ins[1]);
            check_axis(*axis, x.rank())?;
            if !idx.dtype.is_int() {
                return Err(format!("indices must be integers, got {}", idx.dtype));
            }
            let mut s = x.shape[..*axis].to_vec();
            s.extend(idx.shape.iter().cloned());
            s.extend(x.shape[axis + 1..].iter().cloned());
            one(TensorType::new(x.dtype, s))
        }
        Op::Broadcast { shape } => one(TensorType::new(
            ins[0].dtype,
            broadcast_shapes(&ins[0].shape, shape)?,
        )),
        Op::BatchNorm { axis, .. } => {
            let x = &ins[0];
            need_float(x, "the input")?;
            check_axis(*axis, x.rank())?;
            same_dtype(ins)?;
            for (k, p) in ins[1..].iter().enumerate() {
                if p.rank() != 1 || p.shape[0] != x.shape[*axis] {
                    let name = ["gamma", "beta", "moving_mean", "moving_variance"][k];
                    return Err(format!(
                        "{name} has shape {} but the input has {} channels on axis {axis}",
                        shape_str(&p.shape),
                        x.shape[*axis]
                    ));
                }
            }
            one(x.clone())
        }
        Op::LayerNorm { axes, .. } => {
            let x = &ins[0];
            need_float(x, "the input")?;
            same_dtype(ins)?;
            let mut want = Vec::new();
            for &a in axes {
                check_axis(a, x.rank())?;
                want.push(x.shape[a].clone());
            }
            for (k, p) in ins[1..].iter().enumerate() {
                if p.shape != want {
                    return Err(format!(
                        "{} has shape {} but the normalized axes have {}",
                        ["gamma", "beta"][k],
                        shape_str(&p.shape),
                        shape_str(&want)
                    ));
                }
            }
            one(x.clone())
        }
        Op::Dropout { rate } => {
            if !(0.0..1.0).contains(rate) {
                return Err(format!("rate {rate} is not in [0, 1)"));
            }
            one(ins[0].clone())
        }
        Op::ArgReduce {
            kind,
            axis,
            keepdims,
            ..
        }
        | Op::Cumulative {
            kind,
            axis,
            exclusive: keepdims,
            ..
        } => {
            let x = &ins[0];
            check_axis(*axis, x.rank())?;
            if x.dtype == DType::Bool {
                return Err(format!("{} does not take bool", op.name()));
            }
            if let Op::Cumulative { .. } = op {
                if !matches!(kind, ReduceKind::Sum | ReduceKind::Prod) {
                    return Err("cumulative takes sum or prod".into());
                }
                return one(x.clone());
            }
            if !matches!(kind, ReduceKind::Max | ReduceKind::Min) {
                return Err("arg_reduce takes max or min".into());
            }
            let mut s = x.shape.clone();
            if *keepdims {
                s[*axis] = Dim::Known(1);
            } else {
                s.remove(*axis);
            }
            one(TensorType::new(DType::I64, s))
        }
        Op::GatherElements { axis } | Op::ScatterElements { axis, .. } => {
            let (x, idx) = (&ins[0], &ins[1]);
            check_axis(*axis, x.rank())?;
            if !idx.dtype.is_int() {
                return Err(format!("indices must be integers, got {}", idx.dtype));
            }
            if idx.rank() != x.rank() {
                return Err(format!(
                    "indices have rank {} but the data has rank {}",
                    idx.rank(),
                    x.rank()
                ));
            }
            if let Op::ScatterElements { .. } = op {
                if ins[2].shape != idx.shape || ins[2].dtype != x.dtype {
                    return Err(format!(
                        "updates {} must have the indices' shape and the data's type",
                        ins[2]
                    ));
                }
                return one(x.clone());
            }
            one(TensorType::new(x.dtype, idx.shape.clone()))
        }
        Op::GatherNd { .. } | Op::ScatterNd { .. } => {
            let (x, idx) = (&ins[0], &ins[1]);
            let b = if let Op::GatherNd { batch_dims } = op {
                *batch_dims
            } else {
                0
            };
            if !idx.dtype.is_int() {
                return Err(format!("indices must be integers, got {}", idx.dtype));
            }
            let q = idx.rank();
            if q == 0 {
                return Err("indices need rank 1 or more".into());
            }
            let k = known(&idx.shape[q - 1], "the index tuple length")?;
            if b + k > x.rank() || b >= q {
                return Err(format!(
                    "index tuples of length {k} (batch dims {b}) do not fit data of rank {}",
                    x.rank()
                ));
            }
            let mut s = idx.shape[..q - 1].to_vec();
            s.extend(x.shape[b + k..].iter().cloned());
            if let Op::ScatterNd { .. } = op {
                if ins[2].shape != s || ins[2].dtype != x.dtype {
                    return Err(format!(
                        "updates {} must have shape {} and the data's type",
                        ins[2],
                        shape_str(&s)
                    ));
                }
                return one(x.clone());
            }
            one(TensorType::new(x.dtype, s))
        }
        Op::Resize(r) => {
            let x = &ins[0];
            need_float(x, "the input")?;
            if r.sizes.len() != x.rank() || r.scales.len() != x.rank() {
                return Err(format!("sizes and scales need {} entries", x.rank()));
            }
            for (i, (s, d)) in r.sizes.iter().zip(&x.shape).enumerate() {
                if s.known().is_none() && s != d {
                    return Err(format!("axis {i}: a symbolic size must be the input's own"));
                }
            }
            one(TensorType::new(x.dtype, r.sizes.clone()))
        }
        Op::TopK { axis, k, .. } => {
            let x = &ins[0];
            check_axis(*axis, x.rank())?;
            if let Some(n) = x.shape[*axis].known() {
                if *k > n {
                    return Err(format!("k = {k} but the axis has only {n} elements"));
                }
            }
            let mut s = x.shape.clone();
            s[*axis] = Dim::Known(*k);
            Ok(vec![
                TensorType::new(x.dtype, s.clone()),
                TensorType::new(DType::I64, s),
            ])
        }
        Op::Rnn(r) => {
            let (x, k, rk, b) = (&ins[0], &ins[1], &ins[2], &ins[3]);
            need_float(x, "the input")?;
            same_dtype(ins)?;
            if x.rank() != 3 {
                return Err(format!(
                    "the input must be (batch, timesteps, features), got {}",
                    shape_str(&x.shape)
                ));
            }
            let gu = r.cell.gates() * r.units;
            let f = x.shape[2].clone();
            let want_k = vec![f, Dim::Known(gu)];
            if k.shape != want_k {
                return Err(format!(
                    "the kernel has shape {} but {} is needed",
                    shape_str(&k.shape),
                    shape_str(&want_k)
                ));
            }
            let want_rk = vec![Dim::Known(r.units), Dim::Known(gu)];
            if rk.shape != want_rk {
                return Err(format!(
                    "the recurrent kernel has shape {} but {} is needed",
                    shape_str(&rk.shape),
                    shape_str(&want_rk)
                ));
            }
            let want_b = if r.cell == RnnCell::Gru && r.reset_after {
                vec![Dim::Known(2), Dim::Known(gu)]
            } else {
                vec![Dim::Known(gu)]
            };
            if b.shape != want_b {
                return Err(format!(
                    "the bias has shape {} but {} is needed",
                    shape_str(&b.shape),
                    shape_str(&want_b)
                ));
            }
            let s = if r.return_sequences {
                vec![x.shape[0].clone(), x.shape[1].clone(), Dim::Known(r.units)]
            } else {
                vec![x.shape[0].clone(), Dim::Known(r.units)]
            };
            one(TensorType::new(x.dtype, s))
        }
    }
}
