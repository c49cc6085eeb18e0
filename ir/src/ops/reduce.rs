//! Reductions and scans: reduce, softmax / log-softmax, arg_reduce, cumulative sum/product, top_k. For each op of the family, its type rule (`infer`) and its
//! reference evaluation (`eval`), side by side; the derivative rule joins them here.

use crate::infer::*;
use crate::interp::*;
use crate::op::*;
use crate::types::{Dim, TensorType};
use forgec_runtime::{DType, Tensor};

type R<T> = Result<T, String>;

/// The output types of a reduce op from its input types (arity already checked).
pub(crate) fn infer(op: &Op, ins: &[TensorType]) -> R<Vec<TensorType>> {
    let one = |t: TensorType| Ok(vec![t]);
    match op {
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
        _ => unreachable!("{} is not in the reduce family", op.name()),
    }
}

/// Evaluates a reduce op on concrete tensors: `out_ty` are the result types (from `infer`),
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
        Op::Reduce { kind, axes, .. } => one(reduce(*kind, axes, ins[0], ot.dtype, oshape)?),
        Op::Softmax { axis, log } => {
            let x = ins[0];
            let shape = x.shape();
            let v = x.to_f64_vec();
            let (outer, n, inner) = (
                numel(&shape[..*axis]),
                shape[*axis],
                numel(&shape[axis + 1..]),
            );
            let mut out = vec![0.0; v.len()];
            let half = matches!(ot.dtype, DType::F16 | DType::BF16);
            for o in 0..outer {
                for i in 0..inner {
                    let at = |k: usize| o * n * inner + k * inner + i;
                    let m = (0..n).map(|k| v[at(k)]).fold(f64::NEG_INFINITY, f64::max);
                    if half {
                        out_half_softmax(ot.dtype, *log, &v, &mut out, m, (0..n).map(at));
                        continue;
                    }
                    let s: f64 = (0..n).map(|k| (v[at(k)] - m).exp()).sum();
                    for k in 0..n {
                        out[at(k)] = if *log {
                            v[at(k)] - m - s.ln()
                        } else {
                            (v[at(k)] - m).exp() / s
                        };
                    }
                }
            }
            one(float_t(ot.dtype, oshape, &out)?)
        }
        Op::TopK {
            axis,
            k,
            largest,
            sorted: _,
        } => {
            // Always sorted (an unsorted order is any order): ties keep the lower index first.
            let x = ins[0];
            let shape = x.shape();
            let v = x.to_f64_vec();
            let (outer, n, inner) = (
                numel(&shape[..*axis]),
                shape[*axis],
                numel(&shape[axis + 1..]),
            );
            let mut vals = vec![0.0; outer * k * inner];
            let mut idxs = vec![0i64; outer * k * inner];
            for o in 0..outer {
                for i in 0..inner {
                    let mut order: Vec<usize> = (0..n).collect();
                    let at = |j: usize| v[o * n * inner + j * inner + i];
                    order.sort_by(|&a, &b| {
                        let (x, y) = (at(a), at(b));
                        let c = if *largest {
                            y.partial_cmp(&x)
                        } else {
                            x.partial_cmp(&y)
                        };
                        c.unwrap_or(std::cmp::Ordering::Equal).then(a.cmp(&b))
                    });
                    for (r, &j) in order.iter().take(*k).enumerate() {
                        vals[o * k * inner + r * inner + i] = at(j);
                        idxs[o * k * inner + r * inner + i] = j as i64;
                    }
                }
            }
            let values = if ot.dtype.is_float() {
                float_t(ot.dtype, oshape.clone(), &vals)?
            } else {
                int_t(
                    ot.dtype,
                    oshape.clone(),
                    &vals.iter().map(|&f| f as i64).collect::<Vec<_>>(),
                )?
            };
            Ok(vec![values, int_t(DType::I64, oshape, &idxs)?])
        }
        Op::ArgReduce {
            kind,
            axis,
            select_last,
            ..
        } => {
            let x = ins[0];
            let shape = x.shape();
            let v = x.to_f64_vec();
            let (outer, n, inner) = (
                numel(&shape[..*axis]),
                shape[*axis],
                numel(&shape[axis + 1..]),
            );
            let mut out = Vec::with_capacity(outer * inner);
            for o in 0..outer {
                for i in 0..inner {
                    let mut best = 0usize;
                    for k in 1..n {
                        let (a, b) = (
                            v[o * n * inner + k * inner + i],
                            v[o * n * inner + best * inner + i],
                        );
                        let better = match kind {
                            ReduceKind::Max => a > b || (*select_last && a == b),
                            _ => a < b || (*select_last && a == b),
                        };
                        if better {
                            best = k;
                        }
                    }
                    out.push(best as i64);
                }
            }
            one(int_t(DType::I64, oshape, &out)?)
        }
        Op::Cumulative {
            kind,
            axis,
            exclusive,
            reverse,
        } => {
            let x = ins[0];
            let shape = x.shape();
            let (outer, n, inner) = (
                numel(&shape[..*axis]),
                shape[*axis],
                numel(&shape[axis + 1..]),
            );
            let prod = *kind == ReduceKind::Prod;
            let scan = |v: &[f64]| -> Vec<f64> {
                let mut out = vec![0.0; v.len()];
                for o in 0..outer {
                    for i in 0..inner {
                        let mut acc = if prod { 1.0 } else { 0.0 };
                        for step in 0..n {
                            let k = if *reverse { n - 1 - step } else { step };
                            let at = o * n * inner + k * inner + i;
                            if *exclusive {
                                out[at] = acc;
                            }
                            acc = if prod { acc * v[at] } else { acc + v[at] };
                            if !*exclusive {
                                out[at] = acc;
                            }
                        }
                    }
                }
                out
            };
            if ot.dtype.is_float() {
                one(float_t(ot.dtype, oshape, &scan(&x.to_f64_vec()))?)
            } else {
                let r: Vec<i64> = scan(&x.to_f64_vec()).iter().map(|&f| f as i64).collect();
                one(int_t(ot.dtype, oshape, &r)?)
            }
        }
        _ => unreachable!("{} is not in the reduce family", op.name()),
    }
}

pub(crate) fn reduce(
    kind: ReduceKind,
    axes: &[usize],
    x: &Tensor,
    dtype: DType,
    oshape: Vec<usize>,
) -> R<Tensor> {
    let shape = x.shape();
    // Output index of each input element: zero the reduced axes.
    let keep: Vec<usize> = shape
        .iter()
        .enumerate()
        .map(|(i, &d)| if axes.contains(&i) { 1 } else { d })
        .collect();
    let kst = strides(&keep);
    let nout = numel(&keep);
    let count: usize = axes.iter().map(|&a| shape[a]).product();
    let init = match kind {
        ReduceKind::Sum | ReduceKind::Mean => 0.0,
        ReduceKind::Prod => 1.0,
        ReduceKind::Max => f64::NEG_INFINITY,
        ReduceKind::Min => f64::INFINITY,
    };
    let v = x.to_f64_vec();
    let mut acc = vec![init; nout];
    // bf16 sums and products round every partial result, as ONNX's reference (NumPy with
    // ml_dtypes) does; other types accumulate in f64 and round once.
    let bf16 = dtype == DType::BF16;
    for (k, idx) in index_iter(shape).enumerate() {
        let o: usize = idx
            .iter()
            .zip(&keep)
            .zip(&kst)
            .map(|((&i, &d), &s)| if d == 1 { 0 } else { i * s })
            .sum();
        let a = &mut acc[o];
        match kind {
            ReduceKind::Sum | ReduceKind::Mean if bf16 => *a = round_half(dtype, *a + v[k]),
            ReduceKind::Sum | ReduceKind::Mean => *a += v[k],
            ReduceKind::Prod if bf16 => *a = round_half(dtype, *a * v[k]),
            ReduceKind::Prod => *a *= v[k],
            ReduceKind::Max => *a = if v[k].is_nan() { v[k] } else { a.max(v[k]) },
            ReduceKind::Min => *a = if v[k].is_nan() { v[k] } else { a.min(v[k]) },
        }
    }
    if kind == ReduceKind::Mean {
        acc.iter_mut().for_each(|a| *a /= count as f64);
    }
    if dtype.is_float() {
        float_t(dtype, oshape, &acc)
    } else {
        int_t(
            dtype,
            oshape,
            &acc.iter().map(|&a| a as i64).collect::<Vec<_>>(),
        )
    }
}

/// One Softmax/LogSoftmax row in a half-precision type, rounding after every step as ONNX's
/// reference (NumPy in the storage type) does: `x - max`, `exp`, the sum (f16 sums in f32 and
/// rounds once, as NumPy's f16 reduction does; bf16 rounds every partial sum), the division and
/// the logarithm. Computing the row in f64 and rounding once differs by one unit in the last place
/// on about one element in ten.
pub(crate) fn out_half_softmax(
    dtype: DType,
    log: bool,
    v: &[f64],
    out: &mut [f64],
    max: f64,
    row: impl Iterator<Item = usize> + Clone,
) {
    let r = |x: f64| round_half(dtype, x);
    let e = |k: usize| r(r(v[k] - max).exp());
    let s = if dtype == DType::F16 {
        r(row.clone().fold(0f32, |s, k| s + e(k) as f32) as f64)
    } else {
        row.clone().fold(0.0, |s, k| r(s + e(k)))
    };
    for k in row {
        let y = r(e(k) / s);
        out[k] = if log { r(y.ln()) } else { y };
    }
}

/// `dy` of a reduction over `axes` of `x` (kept or not), reshaped to keep the reduced axes
/// as 1 and broadcast back to `x`'s shape.
fn spread(
    b: &mut super::Builder,
    dy: crate::ValueId,
    x: &TensorType,
    axes: &[usize],
) -> R<crate::ValueId> {
    let kept: Vec<Dim> = (0..x.rank())
        .map(|a| {
            if axes.contains(&a) {
                Dim::Known(1)
            } else {
                x.shape[a].clone()
            }
        })
        .collect();
    let k = b.reshape_to(dy, &TensorType::new(x.dtype, kept))?;
    b.broadcast_to(k, x)
}

/// Derivative rules: a sum spreads its gradient back, a mean divides it by the count (a
/// symbolic one, the batch, counted at run time), max/min send it to the elements equal to the
/// result (shared among ties, as TensorFlow does); softmax and log-softmax by their Jacobians.
/// Arg reductions, top-k indices and scans have none yet.
pub(crate) fn grad(
    b: &mut super::Builder,
    op: &Op,
    ins: &[crate::ValueId],
    outs: &[crate::ValueId],
    dys: &[Option<crate::ValueId>],
    _need: &[bool],
) -> R<Vec<Option<crate::ValueId>>> {
    use BinaryOp as B;
    let Some(dy) = dys[0] else {
        return Ok(vec![None; ins.len()]);
    };
    let x = ins[0];
    let tx = b.g.ty(x).clone();
    match op {
        Op::Reduce { kind, axes, .. } => {
            let all: Vec<usize> = if axes.is_empty() {
                (0..tx.rank()).collect()
            } else {
                axes.clone()
            };
            let d = spread(b, dy, &tx, &all)?;
            let dx = match kind {
                ReduceKind::Sum => d,
                ReduceKind::Mean => {
                    let known: Option<usize> = all.iter().map(|&a| tx.shape[a].known()).product();
                    let count = match known {
                        Some(n) => b.scalar_like(x, n as f64),
                        None => {
                            // The count of a symbolic dim: the sum of ones over it.
                            let one = b.scalar_like(x, 1.0);
                            let ones = b.broadcast_to(one, &tx)?;
                            let c = b.op(
                                Op::Reduce {
                                    kind: ReduceKind::Sum,
                                    axes: all.clone(),
                                    keepdims: true,
                                },
                                &[ones],
                                "grad.count",
                            )?;
                            b.broadcast_to(c, &tx)?
                        }
                    };
                    b.binary(B::Div, d, count)?
                }
                ReduceKind::Max | ReduceKind::Min => {
                    let yb = spread(b, outs[0], &tx, &all)?;
                    let hit = b.binary(B::Eq, x, yb)?;
                    let m = b.op(Op::Cast { to: tx.dtype }, &[hit], "grad.mask")?;
                    let n = b.op(
                        Op::Reduce {
                            kind: ReduceKind::Sum,
                            axes: all.clone(),
                            keepdims: true,
                        },
                        &[m],
                        "grad.ties",
                    )?;
                    let nb = b.broadcast_to(n, &tx)?;
                    let share = b.binary(B::Div, m, nb)?;
                    b.binary(B::Mul, d, share)?
                }
                ReduceKind::Prod => {
                    return Err("reduce prod has no derivative rule yet".into());
                }
            };
            Ok(vec![Some(dx)])
        }
        Op::Softmax { axis, log } => {
            let y = outs[0];
            let sum = |b: &mut super::Builder, v: crate::ValueId| -> R<crate::ValueId> {
                let s = b.op(
                    Op::Reduce {
                        kind: ReduceKind::Sum,
                        axes: vec![*axis],
                        keepdims: true,
                    },
                    &[v],
                    "grad.sum",
                )?;
                b.broadcast_to(s, &tx)
            };
            let dx = if *log {
                // dx = dy - softmax(x) * sum(dy)
                let p = b.unary(UnaryOp::Exp, y)?;
                let s = sum(b, dy)?;
                let ps = b.binary(B::Mul, p, s)?;
                b.binary(B::Sub, dy, ps)?
            } else {
                // dx = y * (dy - sum(dy * y))
                let dyy = b.binary(B::Mul, dy, y)?;
                let s = sum(b, dyy)?;
                let c = b.binary(B::Sub, dy, s)?;
                b.binary(B::Mul, y, c)?
            };
            Ok(vec![Some(dx)])
        }
        _ => Err(format!("{} has no gradient", op.name())),
    }
}
