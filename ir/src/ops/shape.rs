//! Data movement: reshape, transpose, concat, slice, pad (constant, reflect, edge), broadcast. For each op of the family, its type rule (`infer`) and its
//! reference evaluation (`eval`), side by side; the derivative rule joins them here.

use super::indexing::gather_elems;
use crate::infer::*;
use crate::interp::*;
use crate::op::*;
use crate::types::{Dim, TensorType};
use forgec_runtime::Tensor;

type R<T> = Result<T, String>;

/// The output types of a shape op from its input types (arity already checked).
pub(crate) fn infer(op: &Op, ins: &[TensorType]) -> R<Vec<TensorType>> {
    let one = |t: TensorType| Ok(vec![t]);
    match op {
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
        Op::Broadcast { shape } => one(TensorType::new(
            ins[0].dtype,
            broadcast_shapes(&ins[0].shape, shape)?,
        )),
        _ => unreachable!("{} is not in the shape family", op.name()),
    }
}

/// Evaluates a shape op on concrete tensors: `out_ty` are the result types (from `infer`),
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
        Op::Reshape { .. } => one(ins[0].clone().reshaped(oshape).map_err(|e| e.0)?),
        Op::Transpose { perm } => {
            let x = ins[0];
            if x.dtype().is_float() {
                let (v, s) = transpose_vec(&x.to_f64_vec(), x.shape(), perm);
                one(float_t(ot.dtype, s, &v)?)
            } else {
                let (v, s) = transpose_vec(&x.to_i64_vec(), x.shape(), perm);
                one(int_t(ot.dtype, s, &v)?)
            }
        }
        Op::Concat { axis } => {
            let outer = numel(&oshape[..*axis]);
            let inner = numel(&oshape[axis + 1..]);
            let widths: Vec<usize> = ins.iter().map(|t| t.shape()[*axis] * inner).collect();
            if ot.dtype.is_float() {
                let parts: Vec<Vec<f64>> = ins.iter().map(|t| t.to_f64_vec()).collect();
                one(float_t(
                    ot.dtype,
                    oshape,
                    &interleave(&parts, &widths, outer),
                )?)
            } else {
                let parts: Vec<Vec<i64>> = ins.iter().map(|t| t.to_i64_vec()).collect();
                one(int_t(
                    ot.dtype,
                    oshape,
                    &interleave(&parts, &widths, outer),
                )?)
            }
        }
        Op::Slice {
            axes,
            starts,
            ends,
            steps,
        } => {
            let x = ins[0];
            let shape = x.shape();
            let r = shape.len();
            let mut start = vec![0i64; r];
            let mut step = vec![1i64; r];
            for (k, &a) in axes.iter().enumerate() {
                start[a] = slice_range(shape[a], starts[k], ends[k], steps[k])?.0;
                step[a] = steps[k];
            }
            let ist = strides(shape);
            let map: Vec<usize> = index_iter(&oshape)
                .map(|idx| {
                    (0..r)
                        .map(|d| (start[d] + idx[d] as i64 * step[d]) as usize * ist[d])
                        .sum()
                })
                .collect();
            one(gather_elems(x, &map, ot.dtype, oshape)?)
        }
        Op::Pad { pads, mode, value } => {
            let x = ins[0];
            let shape = x.shape();
            let ist = strides(shape);
            let r = shape.len();
            // usize::MAX marks "use the constant".
            let map: Vec<usize> = index_iter(&oshape)
                .map(|idx| {
                    let mut off = 0usize;
                    for d in 0..r {
                        let i = idx[d] as i64 - pads[d].0 as i64;
                        let n = shape[d] as i64;
                        let j = if (0..n).contains(&i) {
                            i
                        } else {
                            match mode {
                                PadMode::Constant => return usize::MAX,
                                PadMode::Edge => i.clamp(0, n - 1),
                                PadMode::Reflect => {
                                    if i < 0 {
                                        -i
                                    } else {
                                        2 * (n - 1) - i
                                    }
                                }
                            }
                        };
                        off += j as usize * ist[d];
                    }
                    off
                })
                .collect();
            if ot.dtype.is_float() {
                let v = x.to_f64_vec();
                let out: Vec<f64> = map
                    .iter()
                    .map(|&m| if m == usize::MAX { *value } else { v[m] })
                    .collect();
                one(float_t(ot.dtype, oshape, &out)?)
            } else {
                let v = x.to_i64_vec();
                let out: Vec<i64> = map
                    .iter()
                    .map(|&m| if m == usize::MAX { *value as i64 } else { v[m] })
                    .collect();
                one(int_t(ot.dtype, oshape, &out)?)
            }
        }
        Op::Broadcast { .. } => {
            let map = bcast_map(&oshape, ins[0].shape());
            one(gather_elems(ins[0], &map, ot.dtype, oshape)?)
        }
        _ => unreachable!("{} is not in the shape family", op.name()),
    }
}

pub(crate) fn reshape(x: &TensorType, shape: &[i64]) -> R<Vec<Dim>> {
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

/// Concatenation: for each of `outer` rows, `widths[k]` elements of each part in turn.
pub(crate) fn interleave<T: Copy>(parts: &[Vec<T>], widths: &[usize], outer: usize) -> Vec<T> {
    let mut out = Vec::with_capacity(parts.iter().map(Vec::len).sum());
    for o in 0..outer {
        for (p, &w) in parts.iter().zip(widths) {
            out.extend_from_slice(&p[o * w..(o + 1) * w]);
        }
    }
    out
}

/// Derivative rules: data movement moves the gradient back (a reshape reshapes it, a
/// transpose transposes it by the inverse perm, a broadcast sums it, a concat slices it).
/// A step-1 slice pads the gradient back with zeros, a constant pad slices it.
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
    let tx = b.g.ty(ins[0]).clone();
    match op {
        Op::Reshape { .. } => Ok(vec![Some(b.reshape_to(dy, &tx)?)]),
        Op::Transpose { perm } => {
            let mut inv = vec![0; perm.len()];
            for (i, &p) in perm.iter().enumerate() {
                inv[p] = i;
            }
            Ok(vec![Some(b.op(
                Op::Transpose { perm: inv },
                &[dy],
                "grad.t",
            )?)])
        }
        Op::Broadcast { .. } => Ok(vec![Some(b.sum_to(dy, &tx)?)]),
        Op::Concat { axis } => {
            let mut start = 0i64;
            let mut out = Vec::new();
            for (k, &x) in ins.iter().enumerate() {
                let n = b.g.ty(x).shape[*axis]
                    .known()
                    .ok_or("concat along a symbolic dim has no derivative rule")?
                    as i64;
                out.push(if need[k] {
                    Some(b.op(
                        Op::Slice {
                            axes: vec![*axis],
                            starts: vec![start],
                            ends: vec![start + n],
                            steps: vec![1],
                        },
                        &[dy],
                        "grad.part",
                    )?)
                } else {
                    None
                });
                start += n;
            }
            Ok(out)
        }
        Op::Slice {
            axes,
            starts,
            ends,
            steps,
        } => {
            // A step-1 slice's gradient is the gradient padded back with zeros.
            let mut pads = vec![(0usize, 0usize); tx.rank()];
            for (k, &a) in axes.iter().enumerate() {
                if steps[k] != 1 {
                    return Err(
                        "a slice with a step other than 1 has no derivative rule yet".into(),
                    );
                }
                let n = tx.shape[a]
                    .known()
                    .ok_or("a slice of a symbolic dim has no derivative rule")?;
                let (s, count) = slice_range(n, starts[k], ends[k], 1)?;
                pads[a] = (s as usize, n - s as usize - count);
            }
            Ok(vec![Some(b.op(
                Op::Pad {
                    pads,
                    mode: PadMode::Constant,
                    value: 0.0,
                },
                &[dy],
                "grad.pad",
            )?)])
        }
        Op::Pad { pads, mode, .. } => {
            if *mode != PadMode::Constant {
                return Err(format!(
                    "{} padding has no derivative rule yet",
                    mode.name()
                ));
            }
            // A constant pad's gradient is the gradient cut back to the input's place.
            let (mut axes, mut starts, mut ends, mut steps) = (vec![], vec![], vec![], vec![]);
            for (a, &(lo, hi)) in pads.iter().enumerate() {
                if (lo, hi) == (0, 0) {
                    continue;
                }
                let n = tx.shape[a]
                    .known()
                    .ok_or("a pad of a symbolic dim has no derivative rule")?;
                axes.push(a);
                starts.push(lo as i64);
                ends.push((lo + n) as i64);
                steps.push(1);
            }
            if axes.is_empty() {
                return Ok(vec![Some(dy)]);
            }
            Ok(vec![Some(b.op(
                Op::Slice {
                    axes,
                    starts,
                    ends,
                    steps,
                },
                &[dy],
                "grad.unpad",
            )?)])
        }
        _ => Err(format!(
            "{} has no derivative rule yet (forgec cannot train through it)",
            op.name()
        )),
    }
}
