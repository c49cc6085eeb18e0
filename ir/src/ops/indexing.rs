//! Indexing: gather, gather_elements, gather_nd, scatter_elements, scatter_nd, resize. For each op of the family, its type rule (`infer`) and its
//! reference evaluation (`eval`), side by side; the derivative rule joins them here.

use crate::infer::*;
use crate::interp::*;
use crate::op::*;
use crate::types::{Dim, TensorType};
use forgec_runtime::{DType, Tensor};

type R<T> = Result<T, String>;

/// The output types of a indexing op from its input types (arity already checked).
pub(crate) fn infer(op: &Op, ins: &[TensorType]) -> R<Vec<TensorType>> {
    let one = |t: TensorType| Ok(vec![t]);
    match op {
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
        _ => unreachable!("{} is not in the indexing family", op.name()),
    }
}

/// Evaluates a indexing op on concrete tensors: `out_ty` are the result types (from `infer`),
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
        Op::Gather { axis } => {
            let (x, idx) = (ins[0], ins[1]);
            let shape = x.shape();
            let n = shape[*axis] as i64;
            let outer = numel(&shape[..*axis]);
            let inner = numel(&shape[axis + 1..]);
            let mut map = Vec::with_capacity(numel(&oshape));
            let ids = idx.to_i64_vec();
            for &i in &ids {
                if i < -n || i >= n {
                    return Err(format!(
                        "index {i} is out of range for a dim of size {n} (valid: 0..{})",
                        n - 1
                    ));
                }
            }
            for o in 0..outer {
                for &i in &ids {
                    let i = if i < 0 { i + n } else { i } as usize;
                    for k in 0..inner {
                        map.push(o * n as usize * inner + i * inner + k);
                    }
                }
            }
            one(gather_elems(x, &map, ot.dtype, oshape)?)
        }
        Op::GatherElements { axis } => {
            let (x, idx) = (ins[0], ins[1]);
            let map = axis_offsets(x.shape(), idx, *axis)?;
            one(gather_elems(x, &map, ot.dtype, oshape)?)
        }
        Op::ScatterElements { axis, reduction } => {
            let (x, idx, upd) = (ins[0], ins[1], ins[2]);
            let targets = axis_offsets(x.shape(), idx, *axis)?;
            one(scatter(x, &targets, upd, 1, reduction, ot.dtype)?)
        }
        Op::ScatterNd { reduction } => {
            let (x, idx, upd) = (ins[0], ins[1], ins[2]);
            let (targets, slice) = nd_offsets(x.shape(), idx, 0)?;
            let starts: Vec<usize> = targets.into_iter().map(|(_, off)| off).collect();
            one(scatter(x, &starts, upd, slice, reduction, ot.dtype)?)
        }
        Op::GatherNd { batch_dims } => {
            let (x, idx) = (ins[0], ins[1]);
            let (targets, slice) = nd_offsets(x.shape(), idx, *batch_dims)?;
            let map: Vec<usize> = targets
                .iter()
                .flat_map(|&(_, off)| off..off + slice)
                .collect();
            one(gather_elems(x, &map, ot.dtype, oshape)?)
        }
        Op::Resize(r) => {
            let x = ins[0];
            let mut shape = x.shape().to_vec();
            let mut v = x.to_f64_vec();
            let rank = shape.len();
            for axis in 0..rank {
                let out = oshape[axis];
                if resize_is_identity(r, axis, rank, shape[axis], out) {
                    continue;
                }
                let taps = resize_taps(r, axis, rank, shape[axis], out);
                v = resize_axis(&v, &shape, axis, &taps, r.extrapolation);
                shape[axis] = out;
            }
            one(float_t(ot.dtype, oshape, &v)?)
        }
        _ => unreachable!("{} is not in the indexing family", op.name()),
    }
}

/// The weights of the neighbours of a source coordinate whose fractional part is `ratio`.
pub(crate) fn resize_coeffs(r: &ResizeAttrs, ratio: f64, scale: f64) -> Vec<f64> {
    match r.mode.as_str() {
        "nearest" => {
            if ratio.fract() == 0.0 {
                return vec![0.0, 1.0];
            }
            let b = |c: bool| c as i64 as f64;
            match r.nearest_mode.as_str() {
                "round_prefer_ceil" => vec![b(ratio < 0.5), b(ratio >= 0.5)],
                "floor" => vec![1.0, 0.0],
                "ceil" => vec![0.0, 1.0],
                _ => vec![b(ratio <= 0.5), b(ratio > 0.5)],
            }
        }
        "linear" if r.antialias => {
            let scale = scale.min(1.0);
            let start = (-1.0 / scale).floor() as i64 + 1;
            let footprint = 2 - 2 * start;
            let c: Vec<f64> = (start..start + footprint)
                .map(|i| (1.0 - ((i as f64 - ratio) * scale).abs()).clamp(0.0, 1.0))
                .collect();
            let s: f64 = c.iter().sum();
            c.into_iter().map(|x| x / s).collect()
        }
        "linear" => vec![1.0 - ratio, ratio],
        _ if r.antialias => {
            let a = r.cubic_a;
            let scale = scale.min(1.0);
            let f = |x: f64| {
                let x = x.abs();
                if x <= 1.0 {
                    (a + 2.0) * x * x * x - (a + 3.0) * x * x + 1.0
                } else if x < 2.0 {
                    a * x * x * x - 5.0 * a * x * x + 8.0 * a * x - 4.0 * a
                } else {
                    0.0
                }
            };
            let start = (-2.0 / scale).floor() as i64 + 1;
            let end = 2 - start;
            let c: Vec<f64> = (start..end)
                .map(|i| f(scale * (i as f64 - ratio)))
                .collect();
            let s: f64 = c.iter().sum();
            c.into_iter().map(|x| x / s).collect()
        }
        _ => {
            let a = r.cubic_a;
            let (p, q) = (ratio + 1.0, 2.0 - ratio);
            vec![
                ((a * p - 5.0 * a) * p + 8.0 * a) * p - 4.0 * a,
                ((a + 2.0) * ratio - (a + 3.0)) * ratio * ratio + 1.0,
                ((a + 2.0) * (1.0 - ratio) - (a + 3.0)) * (1.0 - ratio) * (1.0 - ratio) + 1.0,
                ((a * q - 5.0 * a) * q + 8.0 * a) * q - 4.0 * a,
            ]
        }
    }
}

/// The region of interest of `axis` when the mode crops (`tf_crop_and_resize`).
pub(crate) fn resize_roi(r: &ResizeAttrs, axis: usize, rank: usize) -> Option<(f64, f64)> {
    (r.coord == "tf_crop_and_resize").then(|| (r.roi[axis], r.roi[axis + rank]))
}

/// Whether Resize leaves `axis` (of `in_w` elements, `out_w` after) as it is.
pub fn resize_is_identity(
    r: &ResizeAttrs,
    axis: usize,
    rank: usize,
    in_w: usize,
    out_w: usize,
) -> bool {
    (r.scales[axis] - 1.0).abs() < 1e-9
        && out_w == in_w
        && resize_roi(r, axis, rank).is_none_or(|(a, b)| a == 0.0 && b == 1.0)
}

/// The taps of every output position of `axis` (`in_w` source elements, `out_w` out): a port
/// of the ONNX reference's `_interpolate_1d_along_axis`. Shared by the interpreter and the
/// compiler, which bakes them into tables.
pub fn resize_taps(
    r: &ResizeAttrs,
    axis: usize,
    rank: usize,
    in_w: usize,
    out_w: usize,
) -> Vec<ResizeTap> {
    let scale = r.scales[axis];
    let roi = resize_roi(r, axis, rank);
    let out_f = scale * in_w as f64;
    let mut taps = Vec::with_capacity(out_w);
    for y in 0..out_w {
        let yf = y as f64;
        let mut extrapolated = false;
        let x_ori = match r.coord.as_str() {
            "align_corners" => {
                if out_f == 1.0 {
                    0.0
                } else {
                    yf * (in_w as f64 - 1.0) / (out_f - 1.0)
                }
            }
            "asymmetric" => yf / scale,
            "tf_crop_and_resize" => {
                let (a, b) = roi.unwrap_or((0.0, 1.0));
                let x = if out_f == 1.0 {
                    (b - a) * (in_w as f64 - 1.0) / 2.0
                } else {
                    yf * (b - a) * (in_w as f64 - 1.0) / (out_f - 1.0)
                } + a * (in_w as f64 - 1.0);
                extrapolated = x < 0.0 || x > in_w as f64 - 1.0;
                x
            }
            "pytorch_half_pixel" => {
                if out_f == 1.0 {
                    -0.5
                } else {
                    (yf + 0.5) / scale - 0.5
                }
            }
            "half_pixel_symmetric" => {
                let adjustment = out_w as f64 / out_f;
                let center = in_w as f64 / 2.0;
                center * (1.0 - adjustment) + (yf + 0.5) / scale - 0.5
            }
            _ => (yf + 0.5) / scale - 0.5,
        };
        let fl = x_ori.floor();
        let ratio = if x_ori == fl { 1.0 } else { x_ori - fl };
        let mut coeffs = resize_coeffs(r, ratio, scale);
        let n = coeffs.len() as i64;
        let pad = (n + 1) / 2;
        let xp = x_ori + pad as f64;
        let p = xp.floor() as i64;
        let frac = xp - p as f64;
        // The n source indices nearest to the coordinate, ties to the smaller.
        let offset = if n % 2 == 0 {
            if frac == 0.0 {
                -(n / 2)
            } else {
                -(n / 2) + 1
            }
        } else {
            let base = -((n - 1) / 2);
            if frac <= 0.5 {
                base
            } else {
                base + 1
            }
        };
        let start = p + offset - pad;
        if r.exclude_outside {
            for (k, c) in coeffs.iter_mut().enumerate() {
                let idx = start + k as i64;
                if idx < 0 || idx >= in_w as i64 {
                    *c = 0.0;
                }
            }
            let s: f64 = coeffs.iter().sum();
            let s = if s == 0.0 { 1.0 } else { s };
            coeffs.iter_mut().for_each(|c| *c /= s);
        }
        taps.push(ResizeTap {
            start,
            coeffs,
            extrapolated,
        });
    }
    taps
}

/// Resizes one axis by its taps.
pub(crate) fn resize_axis(
    data: &[f64],
    shape: &[usize],
    axis: usize,
    taps: &[ResizeTap],
    extrapolation: f64,
) -> Vec<f64> {
    let (in_w, out_w) = (shape[axis], taps.len());
    let (outer, inner) = (numel(&shape[..axis]), numel(&shape[axis + 1..]));
    let mut out = vec![0.0; outer * out_w * inner];
    for (y, tap) in taps.iter().enumerate() {
        for o in 0..outer {
            for i in 0..inner {
                let val = if tap.extrapolated {
                    extrapolation
                } else {
                    tap.coeffs
                        .iter()
                        .enumerate()
                        .map(|(k, c)| {
                            let idx = (tap.start + k as i64).clamp(0, in_w as i64 - 1) as usize;
                            c * data[(o * in_w + idx) * inner + i]
                        })
                        .sum()
                };
                out[(o * out_w + y) * inner + i] = val;
            }
        }
    }
    out
}

/// For GatherElements/ScatterElements: the flat offset into a tensor of shape `xshape` of every
/// element of `idx`, where `idx` gives the coordinate along `axis` and its own position the others.
pub(crate) fn axis_offsets(xshape: &[usize], idx: &Tensor, axis: usize) -> R<Vec<usize>> {
    let xs = strides(xshape);
    let n = xshape[axis] as i64;
    index_iter(idx.shape())
        .zip(&idx.to_i64_vec())
        .map(|(pos, &i)| {
            let i = norm_index(i, n)?;
            Ok(pos
                .iter()
                .enumerate()
                .map(|(d, &p)| if d == axis { i } else { p } * xs[d])
                .sum())
        })
        .collect()
}

pub(crate) fn norm_index(i: i64, n: i64) -> R<usize> {
    let j = if i < 0 { i + n } else { i };
    if (0..n).contains(&j) {
        Ok(j as usize)
    } else {
        Err(format!("index {i} is out of range for a dim of size {n}"))
    }
}

/// For ND indexing: each index tuple's (tuple number, element offset into data), and the
/// number of elements in the slice each tuple addresses.
pub(crate) fn nd_offsets(
    shape: &[usize],
    idx: &Tensor,
    batch_dims: usize,
) -> R<(Vec<(usize, usize)>, usize)> {
    let q = idx.shape().len();
    let k = idx.shape()[q - 1];
    let xs = strides(shape);
    let slice = numel(&shape[batch_dims + k..]);
    let tuples = numel(&idx.shape()[..q - 1]);
    let per_batch = numel(&idx.shape()[batch_dims..q - 1]).max(1);
    let batch_stride = if batch_dims > 0 {
        xs[batch_dims - 1]
    } else {
        0
    };
    let iv = idx.to_i64_vec();
    let mut out = Vec::with_capacity(tuples);
    for t in 0..tuples {
        let mut off = (t / per_batch) * batch_stride;
        for j in 0..k {
            let d = batch_dims + j;
            off += norm_index(iv[t * k + j], shape[d] as i64)? * xs[d];
        }
        out.push((t, off));
    }
    Ok((out, slice))
}

/// A copy of `x` with `upd`'s elements (in runs of `run`) written or combined at `starts`.
pub(crate) fn scatter(
    x: &Tensor,
    starts: &[usize],
    upd: &Tensor,
    run: usize,
    reduction: &str,
    dtype: DType,
) -> R<Tensor> {
    let mut v = x.to_f64_vec();
    let u = upd.to_f64_vec();
    for (t, &s) in starts.iter().enumerate() {
        for j in 0..run {
            let (a, b) = (&mut v[s + j], u[t * run + j]);
            *a = match reduction {
                "add" => *a + b,
                "mul" => *a * b,
                "max" => a.max(b),
                "min" => a.min(b),
                _ => b,
            };
        }
    }
    if dtype.is_float() {
        float_t(dtype, x.shape().to_vec(), &v)
    } else {
        int_t(
            dtype,
            x.shape().to_vec(),
            &v.iter().map(|&f| f as i64).collect::<Vec<_>>(),
        )
    }
}

pub(crate) fn gather_elems(
    x: &Tensor,
    map: &[usize],
    dtype: DType,
    shape: Vec<usize>,
) -> R<Tensor> {
    if dtype.is_float() {
        let v = x.to_f64_vec();
        float_t(dtype, shape, &map.iter().map(|&m| v[m]).collect::<Vec<_>>())
    } else {
        let v = x.to_i64_vec();
        int_t(dtype, shape, &map.iter().map(|&m| v[m]).collect::<Vec<_>>())
    }
}

/// Derivative rules: a gather along axis 0 (an embedding lookup) sends each output row's
/// gradient back to the row it read, summing rows read several times (a one-hot matmul per
/// sample, then a sum over the batch). Other indexing ops have none yet.
pub(crate) fn grad(
    b: &mut super::Builder,
    op: &Op,
    ins: &[crate::ValueId],
    _outs: &[crate::ValueId],
    dys: &[Option<crate::ValueId>],
    need: &[bool],
) -> R<Vec<Option<crate::ValueId>>> {
    let Some(dy) = dys[0] else {
        return Ok(vec![None; ins.len()]);
    };
    match op {
        Op::Gather { axis: 0 } if need[0] => {
            let (data, idx) = (ins[0], ins[1]);
            let (td, ti) = (b.g.ty(data).clone(), b.g.ty(idx).clone());
            let k = |d: &Dim| -> R<usize> {
                d.known().ok_or_else(|| {
                    "a gather with symbolic table dims has no derivative rule".to_string()
                })
            };
            let v = k(&td.shape[0])?;
            let rest: usize = td.shape[1..].iter().map(k).product::<R<usize>>()?;
            // The indices as [batch (or 1), T]: a symbolic leading dim stays, the rest is one.
            let lead_sym = ti.shape.first().is_some_and(|d| d.known().is_none());
            let tail: usize = ti.shape[usize::from(lead_sym)..]
                .iter()
                .map(k)
                .product::<R<usize>>()?;
            let lead = if lead_sym { 0 } else { 1 };
            let it = ti.dtype;
            let i2 = b.op(
                Op::Reshape {
                    shape: vec![lead, tail as i64, 1],
                },
                &[idx],
                "grad.ids",
            )?;
            // Negative indices count from the end, as the gather reads them.
            let zero = b.scalar_like(i2, 0.0);
            let vv = b.scalar_like(i2, v as f64);
            let neg = b.binary(BinaryOp::Lt, i2, zero)?;
            let wrapped = b.binary(BinaryOp::Add, i2, vv)?;
            let ids = b.op(Op::Select, &[neg, wrapped, i2], "grad.ids")?;
            let iota =
                Tensor::from_f64_values(it, vec![v], &(0..v).map(|x| x as f64).collect::<Vec<_>>())
                    .expect("row ids");
            let iota = b.g.add_const(iota, None, "grad.rows", &b.origin.clone());
            let hot = b.binary(BinaryOp::Eq, ids, iota)?;
            let hot = b.op(Op::Cast { to: td.dtype }, &[hot], "grad.onehot")?;
            let d2 = b.op(
                Op::Reshape {
                    shape: vec![lead, tail as i64, rest as i64],
                },
                &[dy],
                "grad.rows",
            )?;
            let s = b.t_matmul_summed(hot, d2)?;
            let dd = b.reshape_to(s, &td)?;
            Ok(vec![Some(dd), None])
        }
        Op::Gather { .. } => Ok(vec![None; ins.len()]),
        _ => Err(format!(
            "{} has no derivative rule yet (forgec cannot train through it)",
            op.name()
        )),
    }
}
