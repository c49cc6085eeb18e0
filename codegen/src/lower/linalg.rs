//! The generic lowerings: each op as linalg on tensors, for any target. A target's kernels
//! (`crate::cpu`) take the ops they run faster; these lower the rest.

use super::*;
use forgec_ir::{
    BinaryOp, ConvAttrs, DType, Dim, Layout, Node, Op, PadMode, PoolKind, ReduceKind, Tensor,
    TensorType, ValueId,
};
use std::fmt::Write;

/// A generic with explicit maps and iterator types (for contractions and windows).
#[allow(clippy::too_many_arguments)]
pub(crate) fn generic(
    e: &mut E,
    ins: &[(String, TensorType)],
    maps: &[String],
    iters: &[&str],
    init: String,
    out: &TensorType,
    body: &mut Body,
) -> String {
    let v = e.fresh();
    let in_vals: Vec<&str> = ins.iter().map(|(v, _)| v.as_str()).collect();
    let in_tys: Vec<String> = ins.iter().map(|(_, t)| tensor_ty(t)).collect();
    let args: Vec<String> = (0..ins.len()).map(|i| format!("%a{i}")).collect();
    let mut lines = Vec::new();
    let y = body(&mut lines, &args, "%out");
    let iters: Vec<String> = iters.iter().map(|i| format!("\"{i}\"")).collect();
    // No inputs (a body that reads by index alone): no `ins` clause.
    let ins_clause = if in_vals.is_empty() {
        String::new()
    } else {
        format!(" ins({} : {})", in_vals.join(", "), in_tys.join(", "))
    };
    let mut text = format!(
        "{v} = linalg.generic {{indexing_maps = [{}], iterator_types = [{}]}}{ins_clause} outs({init} : {}) {{\n",
        maps.join(", "),
        iters.join(", "),
        tensor_ty(out)
    );
    let block_args: Vec<String> = ins
        .iter()
        .enumerate()
        .map(|(i, (_, t))| format!("%a{i}: {}", elem(t.dtype)))
        .chain(std::iter::once(format!("%out: {}", elem(out.dtype))))
        .collect();
    let _ = writeln!(text, "    ^bb0({}):", block_args.join(", "));
    for l in lines {
        let _ = writeln!(text, "      {l}");
    }
    let _ = write!(
        text,
        "      linalg.yield {y} : {}\n    }} -> {}",
        elem(out.dtype),
        tensor_ty(out)
    );
    e.line(&text);
    v
}

/// A contraction: `ot` zero-filled, then each output the sum of its inputs' products over the
/// reduction iterators (`maps` and `iters` say which).
pub(crate) fn contraction(
    e: &mut E,
    ins: &[(String, TensorType)],
    maps: &[String],
    iters: &[&str],
    ot: &TensorType,
) -> R<String> {
    let init = filled(e, ot, 0.0)?;
    let dt = ot.dtype;
    Ok(generic(
        e,
        ins,
        maps,
        iters,
        init,
        ot,
        &mut |lines, a, out| {
            let m = binary_body(lines, BinaryOp::Mul, &a[0], &a[1], dt).unwrap_or_default();
            binary_body(lines, BinaryOp::Add, out, &m, dt).unwrap_or_default()
        },
    ))
}

/// A tensor of `t` filled with `x`.
pub(crate) fn filled(e: &mut E, t: &TensorType, x: f64) -> R<String> {
    let empty = e.empty(t)?;
    let c = e.fresh();
    e.line(&format!("{c} = {}", E::scalar_const(t.dtype, x)));
    let v = e.fresh();
    e.line(&format!(
        "{v} = linalg.fill ins({c} : {}) outs({empty} : {}) -> {}",
        elem(t.dtype),
        tensor_ty(t),
        tensor_ty(t)
    ));
    Ok(v)
}

pub(crate) fn map(n: usize, exprs: &[String]) -> String {
    let d: Vec<String> = (0..n).map(|i| format!("d{i}")).collect();
    format!("affine_map<({}) -> ({})>", d.join(", "), exprs.join(", "))
}

pub(crate) fn matmul(e: &mut E, ins: &[(String, TensorType)], ot: &TensorType) -> R<String> {
    // Loops (batch..., m, k, n): n innermost runs along contiguous rows of B and of the
    // output, which LLVM's loop vectorizer turns into vector code.
    let r = ot.rank();
    let (m_, k, n_) = (r - 2, r - 1, r);
    let d = |i: usize| format!("d{i}");
    let operand = |t: &TensorType, last_two: [String; 2]| -> Vec<String> {
        let off = r - 2 - (t.rank() - 2);
        let mut ex: Vec<String> = (0..t.rank() - 2)
            .map(|i| {
                if t.shape[i] == Dim::Known(1) && ot.shape[off + i] != Dim::Known(1) {
                    "0".into()
                } else {
                    d(off + i)
                }
            })
            .collect();
        ex.extend(last_two);
        ex
    };
    let a = operand(&ins[0].1, [d(m_), d(k)]);
    let b = operand(&ins[1].1, [d(k), d(n_)]);
    let o: Vec<String> = (0..r - 2).map(d).chain([d(m_), d(n_)]).collect();
    let maps = [map(r + 1, &a), map(r + 1, &b), map(r + 1, &o)];
    let mut iters = vec!["parallel"; r - 1];
    iters.push("reduction");
    iters.push("parallel");
    contraction(e, ins, &maps, &iters, ot)
}

pub(crate) fn shape_tensor(e: &mut E, t: &TensorType) -> R<String> {
    let mut vals = Vec::new();
    for d in &t.shape {
        vals.push(e.dim_val(d)?);
    }
    let v = e.fresh();
    e.line(&format!(
        "{v} = tensor.from_elements {} : tensor<{}xindex>",
        vals.join(", "),
        t.rank()
    ));
    Ok(v)
}

pub(crate) fn reshape(e: &mut E, x: &(String, TensorType), ot: &TensorType) -> R<String> {
    if x.1.shape == ot.shape {
        return Ok(x.0.clone());
    }
    let s = shape_tensor(e, ot)?;
    let v = e.fresh();
    e.line(&format!(
        "{v} = tensor.reshape {}({s}) : ({}, tensor<{}xindex>) -> {}",
        x.0,
        tensor_ty(&x.1),
        ot.rank(),
        tensor_ty(ot)
    ));
    Ok(v)
}

/// The number of known terms from which an f32 sum accumulates in f64.
const LONG_SUM: usize = 1024;

pub(crate) fn reduce(
    e: &mut E,
    x: &(String, TensorType),
    kind: ReduceKind,
    axes: &[usize],
    keepdims: bool,
    ot: &TensorType,
) -> R<String> {
    let r = x.1.rank();
    let dt = x.1.dtype;
    if dt == DType::F16 && matches!(kind, ReduceKind::Sum | ReduceKind::Mean | ReduceKind::Prod) {
        // f16 sums and products accumulate in f32 and round once, as the interpreter (and NumPy)
        // do: rounding every partial sum to 11 bits loses digits on long rows.
        // (With keepdims the result has the input's rank, whatever `ot` says.)
        let shape: Vec<Dim> = if keepdims {
            let one = |(i, d): (usize, &Dim)| {
                if axes.contains(&i) {
                    Dim::Known(1)
                } else {
                    d.clone()
                }
            };
            x.1.shape.iter().enumerate().map(one).collect()
        } else {
            ot.shape.clone()
        };
        let (xt, ot32) = (
            TensorType::new(DType::F32, x.1.shape.clone()),
            TensorType::new(DType::F32, shape.clone()),
        );
        let x32 = e.elementwise(&xt, std::slice::from_ref(x), &mut |lines, a| {
            cast_body(lines, &a[0], DType::F16, DType::F32)
        })?;
        let s = reduce(e, &(x32, xt), kind, axes, keepdims, &ot32)?;
        let ot16 = TensorType::new(DType::F16, shape);
        return e.elementwise(&ot16, &[(s, ot32)], &mut |lines, a| {
            cast_body(lines, &a[0], DType::F32, DType::F16)
        });
    }
    // Reduce into the keepdims shape, then reshape if needed.
    let kept: Vec<Dim> =
        x.1.shape
            .iter()
            .enumerate()
            .map(|(i, d)| {
                if axes.contains(&i) {
                    Dim::Known(1)
                } else {
                    d.clone()
                }
            })
            .collect();
    let kt = TensorType::new(dt, kept.clone());
    // Long f32 sums accumulate in f64 and round once, as the interpreter's: a batch
    // normalization's statistics sum thousands of values per channel, and f32 partial sums
    // lose digits (that a ReLU's kink downstream can turn into another gradient). Short ones
    // (under 64 known terms: a sum over the batch alone, a softmax's) stay f32, as
    // frameworks sum them.
    let known_terms: usize = axes.iter().filter_map(|&a| x.1.shape[a].known()).product();
    let acc = if dt == DType::F32
        && matches!(kind, ReduceKind::Sum | ReduceKind::Mean)
        && known_terms >= LONG_SUM
    {
        DType::F64
    } else {
        dt
    };
    let ka = TensorType::new(acc, kept);
    let init_v = match kind {
        ReduceKind::Sum | ReduceKind::Mean => 0.0,
        ReduceKind::Prod => 1.0,
        ReduceKind::Max => {
            if dt.is_float() {
                f64::NEG_INFINITY
            } else {
                i64::MIN as f64
            }
        }
        ReduceKind::Min => {
            if dt.is_float() {
                f64::INFINITY
            } else {
                i64::MAX as f64
            }
        }
    };
    let init = filled(e, &ka, init_v)?;
    let in_map = map(r, &(0..r).map(|i| format!("d{i}")).collect::<Vec<_>>());
    let out_map = map(
        r,
        &(0..r)
            .map(|i| {
                if axes.contains(&i) {
                    "0".into()
                } else {
                    format!("d{i}")
                }
            })
            .collect::<Vec<_>>(),
    );
    let iters: Vec<&str> = (0..r)
        .map(|i| {
            if axes.contains(&i) {
                "reduction"
            } else {
                "parallel"
            }
        })
        .collect();
    let op = match kind {
        ReduceKind::Sum | ReduceKind::Mean => BinaryOp::Add,
        ReduceKind::Prod => BinaryOp::Mul,
        ReduceKind::Max => BinaryOp::Max,
        ReduceKind::Min => BinaryOp::Min,
    };
    let mut v = generic(
        e,
        std::slice::from_ref(x),
        &[in_map, out_map],
        &iters,
        init,
        &ka,
        &mut |lines, a, out| {
            let w = cast_body(lines, &a[0], dt, acc);
            binary_body(lines, op, out, &w, acc).unwrap_or_default()
        },
    );
    if kind == ReduceKind::Mean {
        let count: usize = axes
            .iter()
            .map(|&a| x.1.shape[a].known().unwrap_or(1))
            .product();
        let mut has_sym = None;
        for &a in axes {
            if x.1.shape[a].known().is_none() {
                has_sym = Some(a);
            }
        }
        let kt2 = ka.clone();
        if has_sym.is_some() {
            // The count of a symbolic dim (the batch) is known at run time only: the sizes
            // multiplied as integers, converted once, outside the loop.
            if !dt.is_float() {
                return Err("an integer mean over a symbolic dim is not compiled yet".into());
            }
            let mut n: Option<String> = None;
            for &a in axes {
                if x.1.shape[a].known().is_none() {
                    let size = e.dim_val(&x.1.shape[a])?;
                    let s64 = e.fresh();
                    e.line(&format!("{s64} = arith.index_cast {size} : index to i64"));
                    n = Some(match n {
                        None => s64,
                        Some(p) => {
                            let m = e.fresh();
                            e.line(&format!("{m} = arith.muli {p}, {s64} : i64"));
                            m
                        }
                    });
                }
            }
            let nf = e.fresh();
            let n = n.expect("a symbolic axis");
            e.line(&format!("{nf} = arith.sitofp {n} : i64 to {}", elem(acc)));
            let known = e.fresh();
            e.line(&format!("{known} = {}", E::scalar_const(acc, count as f64)));
            let total = e.fresh();
            e.line(&format!(
                "{total} = arith.mulf {nf}, {known} : {}",
                elem(acc)
            ));
            v = e.elementwise(&kt2, &[(v, ka.clone())], &mut |lines, a| {
                binary_body(lines, BinaryOp::Div, &a[0], &total, acc).unwrap_or_default()
            })?;
        } else {
            v = e.elementwise(&kt2, &[(v, ka.clone())], &mut |lines, a| {
                let c = push(lines, E::scalar_const(acc, count as f64));
                binary_body(lines, BinaryOp::Div, &a[0], &c, acc).unwrap_or_default()
            })?;
        }
    }
    if acc != dt {
        v = e.elementwise(&kt, &[(v, ka.clone())], &mut |lines, a| {
            cast_body(lines, &a[0], acc, dt)
        })?;
    }
    if !keepdims {
        v = reshape(e, &(v, kt), ot)?;
    }
    Ok(v)
}

pub(crate) fn softmax(
    e: &mut E,
    x: &(String, TensorType),
    axis: usize,
    log: bool,
    ot: &TensorType,
) -> R<String> {
    let dt = x.1.dtype;
    let mx = reduce(e, x, ReduceKind::Max, &[axis], true, ot)?;
    let kt = TensorType::new(
        dt,
        x.1.shape
            .iter()
            .enumerate()
            .map(|(i, d)| if i == axis { Dim::Known(1) } else { d.clone() })
            .collect(),
    );
    let ex = e.elementwise(
        ot,
        &[x.clone(), (mx.clone(), kt.clone())],
        &mut |lines, a| {
            let s = binary_body(lines, BinaryOp::Sub, &a[0], &a[1], dt).unwrap_or_default();
            push(lines, format!("math.exp {s} : {}", elem(dt)))
        },
    )?;
    let sum = reduce(
        e,
        &(ex.clone(), ot.clone()),
        ReduceKind::Sum,
        &[axis],
        true,
        ot,
    )?;
    if log && matches!(dt, DType::F16 | DType::BF16) {
        // log(exp(x - max) / sum), each step rounded, as the interpreter does for half types.
        e.elementwise(ot, &[(ex, ot.clone()), (sum, kt)], &mut |lines, a| {
            let q = binary_body(lines, BinaryOp::Div, &a[0], &a[1], dt).unwrap_or_default();
            push(lines, format!("math.log {q} : {}", elem(dt)))
        })
    } else if log {
        // x - max - log(sum)
        e.elementwise(
            ot,
            &[x.clone(), (mx, kt.clone()), (sum, kt)],
            &mut |lines, a| {
                let s = binary_body(lines, BinaryOp::Sub, &a[0], &a[1], dt).unwrap_or_default();
                let l = push(lines, format!("math.log {} : {}", a[2], elem(dt)));
                binary_body(lines, BinaryOp::Sub, &s, &l, dt).unwrap_or_default()
            },
        )
    } else {
        // Divided in place: `ex` is read nowhere else (a model's output then needs no copy).
        Ok(
            e.elementwise_into(ot, ex, &[(sum, kt)], &mut |lines, a, out| {
                binary_body(lines, BinaryOp::Div, out, &a[0], dt).unwrap_or_default()
            }),
        )
    }
}

pub(crate) fn concat(
    e: &mut E,
    ins: &[(String, TensorType)],
    axis: usize,
    ot: &TensorType,
) -> R<String> {
    let mut acc = e.empty(ot)?;
    let mut offset = 0usize;
    for (v, t) in ins {
        // An empty operand adds nothing (and MLIR refuses a slice starting at the end).
        if t.shape.contains(&Dim::Known(0)) {
            continue;
        }
        let r = t.rank();
        let mut offs = vec!["0".to_string(); r];
        offs[axis] = offset.to_string();
        let mut sizes = Vec::new();
        for d in &t.shape {
            sizes.push(e.size_lit(d)?);
        }
        let n = e.fresh();
        e.line(&format!(
            "{n} = tensor.insert_slice {v} into {acc}[{}] [{}] [{}] : {} into {}",
            offs.join(", "),
            sizes.join(", "),
            vec!["1"; r].join(", "),
            tensor_ty(t),
            tensor_ty(ot)
        ));
        acc = n;
        offset += t.shape[axis].known().ok_or("concat along a symbolic dim")?;
    }
    Ok(acc)
}

pub(crate) fn pad(
    e: &mut E,
    x: &(String, TensorType),
    pads: &[(usize, usize)],
    value: f64,
    ot: &TensorType,
) -> R<String> {
    let v = e.fresh();
    let lo: Vec<String> = pads.iter().map(|p| p.0.to_string()).collect();
    let hi: Vec<String> = pads.iter().map(|p| p.1.to_string()).collect();
    let idx: Vec<String> = (0..pads.len()).map(|i| format!("%p{i}: index")).collect();
    let c = e.fresh();
    e.line(&format!("{c} = {}", E::scalar_const(x.1.dtype, value)));
    e.line(&format!(
        "{v} = tensor.pad {} low[{}] high[{}] {{\n    ^bb0({}):\n      tensor.yield {c} : {}\n    }} : {} to {}",
        x.0,
        lo.join(", "),
        hi.join(", "),
        idx.join(", "),
        elem(x.1.dtype),
        tensor_ty(&x.1),
        tensor_ty(ot)
    ));
    Ok(v)
}

/// Edge or reflect padding: every output element reads the input at its index moved back by
/// the padding before it and, outside the input, clamped to the edge (`edge`) or mirrored about
/// the edge element (`reflect`, the edge itself not repeated; shape inference has checked that
/// the padding is shorter than the dim).
pub(crate) fn pad_from_inside(
    e: &mut E,
    x: &(String, TensorType),
    pads: &[(usize, usize)],
    mode: PadMode,
    ot: &TensorType,
) -> R<String> {
    let r = ot.rank();
    let init = e.empty(ot)?;
    let v = e.fresh();
    let mut lines: Vec<String> = Vec::new();
    let mut ix = Vec::new();
    for (d, &(before, after)) in pads.iter().enumerate() {
        let i = push(&mut lines, format!("linalg.index {d} : index"));
        if before == 0 && after == 0 {
            ix.push(i);
            continue;
        }
        let n = x.1.shape[d]
            .known()
            .ok_or("padding a symbolic dim is not compiled yet")?;
        let c =
            |lines: &mut Vec<String>, k: i64| push(lines, format!("arith.constant {k} : index"));
        let (cb, c0, clast) = (
            c(&mut lines, before as i64),
            c(&mut lines, 0),
            c(&mut lines, n as i64 - 1),
        );
        let s = push(&mut lines, format!("arith.subi {i}, {cb} : index"));
        ix.push(match mode {
            PadMode::Edge => {
                let lo = push(&mut lines, format!("arith.maxsi {s}, {c0} : index"));
                push(&mut lines, format!("arith.minsi {lo}, {clast} : index"))
            }
            _ => {
                let c2 = c(&mut lines, 2 * (n as i64 - 1));
                let neg = push(&mut lines, format!("arith.cmpi slt, {s}, {c0} : index"));
                let ns = push(&mut lines, format!("arith.subi {c0}, {s} : index"));
                let over = push(&mut lines, format!("arith.cmpi sgt, {s}, {clast} : index"));
                let back = push(&mut lines, format!("arith.subi {c2}, {s} : index"));
                let a = push(&mut lines, format!("arith.select {neg}, {ns}, {s} : index"));
                push(
                    &mut lines,
                    format!("arith.select {over}, {back}, {a} : index"),
                )
            }
        });
    }
    let y = push(
        &mut lines,
        format!(
            "tensor.extract {}[{}] : {}",
            x.0,
            ix.join(", "),
            tensor_ty(&x.1)
        ),
    );
    let dv: Vec<String> = (0..r).map(|i| format!("d{i}")).collect();
    let iters = vec!["\"parallel\""; r];
    let mut text = format!(
        "{v} = linalg.generic {{indexing_maps = [affine_map<({0}) -> ({0})>], iterator_types = [{1}]}} outs({init} : {2}) {{\n    ^bb0(%out: {3}):\n",
        dv.join(", "),
        iters.join(", "),
        tensor_ty(ot),
        elem(ot.dtype)
    );
    for l in lines {
        let _ = writeln!(text, "      {l}");
    }
    let _ = write!(
        text,
        "      linalg.yield {y} : {}\n    }} -> {}",
        elem(ot.dtype),
        tensor_ty(ot)
    );
    e.line(&text);
    Ok(v)
}

pub(crate) fn gather(
    e: &mut E,
    data: &(String, TensorType),
    idx: &(String, TensorType),
    axis: usize,
    ot: &TensorType,
) -> R<String> {
    // Iterate the output; read the index, wrap negatives, extract from data.
    let r = ot.rank();
    let q = idx.1.rank();
    let idx_map = map(
        r,
        &(axis..axis + q)
            .map(|i| format!("d{i}"))
            .collect::<Vec<_>>(),
    );
    let out_map = map(r, &(0..r).map(|i| format!("d{i}")).collect::<Vec<_>>());
    let init = e.empty(ot)?;
    let n = data.1.shape[axis]
        .known()
        .ok_or("gathering along a symbolic dim")?;
    let it = elem(idx.1.dtype);
    let data_v = data.0.clone();
    let data_t = tensor_ty(&data.1);
    let drank = data.1.rank();
    Ok(generic(
        e,
        std::slice::from_ref(idx),
        &[idx_map, out_map],
        &vec!["parallel"; r],
        init,
        ot,
        &mut |lines, a, _| {
            let i = push(lines, format!("arith.index_cast {} : {it} to index", a[0]));
            let nn = push(lines, format!("arith.constant {n} : index"));
            // Out-of-range indices read the nearest row instead of foreign memory.
            let j = indexing::wrap_clamp(&mut |s| push(lines, s), &i, &nn);
            let mut coords = Vec::new();
            for dpos in 0..drank {
                if dpos < axis {
                    coords.push(push(lines, format!("linalg.index {dpos} : index")));
                } else if dpos == axis {
                    coords.push(j.clone());
                } else {
                    coords.push(push(
                        lines,
                        format!("linalg.index {} : index", dpos - 1 + q),
                    ));
                }
            }
            push(
                lines,
                format!("tensor.extract {data_v}[{}] : {data_t}", coords.join(", ")),
            )
        },
    ))
}

pub(crate) fn const_of<'a>(e: &'a E, v: ValueId) -> Option<&'a Tensor> {
    e.g.nodes
        .iter()
        .find(|n| n.outputs.contains(&v))
        .and_then(|n| match &n.op {
            Op::Const { value, .. } => Some(value),
            _ => None,
        })
}

pub(crate) fn batch_norm(
    e: &mut E,
    node: &Node,
    ins: &[(String, TensorType)],
    axis: usize,
    eps: f64,
    ot: &TensorType,
) -> R<String> {
    let dt = ot.dtype;
    let r = ot.rank();
    // y = x * a + b with a = gamma / sqrt(var + eps), b = beta - mean * a; folded when constant.
    let params: Option<Vec<Vec<f64>>> = node.inputs[1..]
        .iter()
        .map(|&i| const_of(e, i).map(|t| t.to_f64_vec()))
        .collect();
    let Some(p) = params else {
        return batch_norm_computed(e, ins, axis, eps, ot);
    };
    let c = p[0].len();
    let a: Vec<f64> = (0..c).map(|i| p[0][i] / (p[3][i] + eps).sqrt()).collect();
    let b: Vec<f64> = (0..c).map(|i| p[1][i] - p[2][i] * a[i]).collect();
    let mut bshape = vec![Dim::Known(1); r];
    bshape[axis] = Dim::Known(c);
    let bt = TensorType::new(dt, bshape);
    let mut mk = |vals: &[f64]| -> R<String> {
        let t = Tensor::from_f64_values(dt, bt.known_shape().unwrap(), vals).map_err(|e| e.0)?;
        let v = e.fresh();
        e.line(&format!(
            "{v} = arith.constant dense<\"{}\"> : {}",
            dense_hex(&t),
            tensor_ty(&bt)
        ));
        Ok(v)
    };
    let av = mk(&a)?;
    let bv = mk(&b)?;
    e.elementwise(
        ot,
        &[ins[0].clone(), (av, bt.clone()), (bv, bt)],
        &mut |lines, a| {
            let m = binary_body(lines, BinaryOp::Mul, &a[0], &a[1], dt).unwrap_or_default();
            binary_body(lines, BinaryOp::Add, &m, &a[2], dt).unwrap_or_default()
        },
    )
}

/// Batch normalization whose scale, bias, mean or variance are computed (graph inputs, say):
/// `(x - mean) * (scale / sqrt(var + eps)) + bias` per element, the four read per channel (in
/// f32 for half types).
pub(crate) fn batch_norm_computed(
    e: &mut E,
    ins: &[(String, TensorType)],
    axis: usize,
    eps: f64,
    ot: &TensorType,
) -> R<String> {
    let (r, d) = (ot.rank(), ot.dtype);
    let wd = if matches!(d, DType::F16 | DType::BF16) {
        DType::F32
    } else {
        d
    };
    let maps: Vec<String> =
        std::iter::once(map(r, &(0..r).map(|i| format!("d{i}")).collect::<Vec<_>>()))
            .chain((1..5).map(|_| map(r, &[format!("d{axis}")])))
            .chain(std::iter::once(map(
                r,
                &(0..r).map(|i| format!("d{i}")).collect::<Vec<_>>(),
            )))
            .collect();
    let init = e.empty(ot)?;
    let t = elem(wd);
    Ok(generic(
        e,
        &ins[..5],
        &maps,
        &vec!["parallel"; r],
        init,
        ot,
        &mut |lines, a, _| {
            let v: Vec<String> = a
                .iter()
                .take(5)
                .map(|x| {
                    if wd == d {
                        x.clone()
                    } else {
                        cast_body(lines, x, d, wd)
                    }
                })
                .collect();
            let ep = push(lines, E::scalar_const(wd, eps));
            let s = push(lines, format!("arith.addf {}, {ep} : {t}", v[4]));
            let q = push(lines, format!("math.sqrt {s} : {t}"));
            let k = push(lines, format!("arith.divf {}, {q} : {t}", v[1]));
            let c = push(lines, format!("arith.subf {}, {} : {t}", v[0], v[3]));
            let m = push(lines, format!("arith.mulf {c}, {k} : {t}"));
            let y = push(lines, format!("arith.addf {m}, {} : {t}", v[2]));
            if wd == d {
                y
            } else {
                cast_body(lines, &y, wd, d)
            }
        },
    ))
}

pub(crate) fn layer_norm(
    e: &mut E,
    ins: &[(String, TensorType)],
    axes: &[usize],
    eps: f64,
    ot: &TensorType,
) -> R<String> {
    let dt = ot.dtype;
    let x = &ins[0];
    let kt = TensorType::new(
        dt,
        x.1.shape
            .iter()
            .enumerate()
            .map(|(i, d)| {
                if axes.contains(&i) {
                    Dim::Known(1)
                } else {
                    d.clone()
                }
            })
            .collect(),
    );
    let mean = reduce(e, x, ReduceKind::Mean, axes, true, &kt)?;
    let centered = e.elementwise(ot, &[x.clone(), (mean, kt.clone())], &mut |lines, a| {
        binary_body(lines, BinaryOp::Sub, &a[0], &a[1], dt).unwrap_or_default()
    })?;
    let sq = e.elementwise(ot, &[(centered.clone(), ot.clone())], &mut |lines, a| {
        binary_body(lines, BinaryOp::Mul, &a[0], &a[0], dt).unwrap_or_default()
    })?;
    let var = reduce(e, &(sq, ot.clone()), ReduceKind::Mean, axes, true, &kt)?;
    // gamma / beta have the normalized axes' shape: broadcast them by reshaping.
    let gshape: Vec<Dim> =
        x.1.shape
            .iter()
            .enumerate()
            .map(|(i, d)| {
                if axes.contains(&i) {
                    d.clone()
                } else {
                    Dim::Known(1)
                }
            })
            .collect();
    let gt = TensorType::new(dt, gshape);
    let g = reshape(e, &ins[1], &gt)?;
    let b = reshape(e, &ins[2], &gt)?;
    e.elementwise(
        ot,
        &[(centered, ot.clone()), (var, kt), (g, gt.clone()), (b, gt)],
        &mut |lines, a| {
            let c = push(lines, E::scalar_const(dt, eps));
            let ve = binary_body(lines, BinaryOp::Add, &a[1], &c, dt).unwrap_or_default();
            let inv = push(lines, format!("math.rsqrt {ve} : {}", elem(dt)));
            let n = binary_body(lines, BinaryOp::Mul, &a[0], &inv, dt).unwrap_or_default();
            let s = binary_body(lines, BinaryOp::Mul, &n, &a[2], dt).unwrap_or_default();
            binary_body(lines, BinaryOp::Add, &s, &a[3], dt).unwrap_or_default()
        },
    )
}

/// Channels-last data: which axes are batch, spatial, channel.
pub(crate) fn layout_axes(rank: usize, layout: Layout) -> (usize, Vec<usize>, usize) {
    match layout {
        Layout::ChannelsLast => (0, (1..rank - 1).collect(), rank - 1),
        Layout::ChannelsFirst => (0, (2..rank).collect(), 1),
    }
}

/// The convolution's input with its padding applied (zeros).
pub(crate) fn pad_input(
    e: &mut E,
    x: &(String, TensorType),
    c: &ConvAttrs,
) -> R<(String, TensorType)> {
    let r = x.1.rank();
    let (_, sp, _) = layout_axes(r, c.layout);
    Ok(if c.pads.iter().any(|p| p.0 > 0 || p.1 > 0) {
        let mut pads = vec![(0, 0); r];
        for (i, &a) in sp.iter().enumerate() {
            pads[a] = c.pads[i];
        }
        let mut shape = x.1.shape.clone();
        for (i, &a) in sp.iter().enumerate() {
            shape[a] = Dim::Known(
                x.1.shape[a].known().ok_or("symbolic spatial dim")? + c.pads[i].0 + c.pads[i].1,
            );
        }
        let pt = TensorType::new(x.1.dtype, shape);
        (pad(e, x, &pads, 0.0, &pt)?, pt)
    } else {
        x.clone()
    })
}

pub(crate) fn conv(
    e: &mut E,
    x: &(String, TensorType),
    w: &(String, TensorType),
    c: &ConvAttrs,
    ot: &TensorType,
) -> R<String> {
    let r = x.1.rank();
    let ns = r - 2;
    let (_, sp, ch) = layout_axes(r, c.layout);
    let x = pad_input(e, x, c)?;
    // Iterators: output dims (r), then kernel spatial (ns), then input channel per group (1).
    let wk: Vec<usize> = w.1.known_shape().ok_or("the kernel shape must be known")?;
    let (kdims, cpg, cout) = match c.layout {
        Layout::ChannelsLast => (wk[..ns].to_vec(), wk[ns], wk[ns + 1]),
        Layout::ChannelsFirst => (wk[2..].to_vec(), wk[1], wk[0]),
    };
    let opg = cout / c.groups;
    let n_it = r + ns + 1;
    // Logical dims: output dims 0..r, kernel dims r..r+ns, input channel r+ns. Loops run the
    // output dims but the last, then the window and channels, then the output's last
    // (contiguous) dim innermost, which LLVM vectorizes.
    let mut order: Vec<usize> = (0..r - 1).collect();
    order.extend(r..r + ns + 1);
    order.push(r - 1);
    let mut pos = vec![0usize; n_it];
    for (p, &l) in order.iter().enumerate() {
        pos[l] = p;
    }
    let d = |i: usize| format!("d{}", pos[i]);
    let kd = |i: usize| d(r + i);
    let cid = d(r + ns);
    // Input index: batch, spatial o*s + k*dil, channel = group(co) * cpg + ci.
    let co = d(ch);
    let mut xe = vec![String::new(); r];
    xe[0] = d(0);
    for (i, &a) in sp.iter().enumerate() {
        xe[a] = format!(
            "{} * {} + {} * {}",
            d(a),
            c.strides[i],
            kd(i),
            c.dilations[i]
        );
    }
    xe[ch] = if c.groups == 1 {
        cid.clone()
    } else {
        format!("({co} floordiv {opg}) * {cpg} + {cid}")
    };
    let we: Vec<String> = match c.layout {
        Layout::ChannelsLast => (0..ns).map(kd).chain([cid.clone(), co.clone()]).collect(),
        Layout::ChannelsFirst => [co.clone(), cid.clone()]
            .into_iter()
            .chain((0..ns).map(kd))
            .collect(),
    };
    let oe: Vec<String> = (0..r).map(d).collect();
    let maps = [map(n_it, &xe), map(n_it, &we), map(n_it, &oe)];
    let iters: Vec<&str> = order
        .iter()
        .map(|&l| if l < r { "parallel" } else { "reduction" })
        .collect();
    let _ = kdims;
    contraction(e, &[x, w.clone()], &maps, &iters, ot)
}

pub(crate) fn pool(
    e: &mut E,
    x: &(String, TensorType),
    p: &forgec_ir::PoolAttrs,
    ot: &TensorType,
) -> R<String> {
    let r = x.1.rank();
    let ns = r - 2;
    let (_, sp, _) = layout_axes(r, p.layout);
    let dt = x.1.dtype;
    let max = p.kind == PoolKind::Max;
    let padded = p.pads.iter().any(|q| q.0 > 0 || q.1 > 0);
    let xin = if padded {
        let mut pads = vec![(0, 0); r];
        let mut shape = x.1.shape.clone();
        for (i, &a) in sp.iter().enumerate() {
            pads[a] = p.pads[i];
            shape[a] = Dim::Known(
                x.1.shape[a].known().ok_or("symbolic spatial dim")? + p.pads[i].0 + p.pads[i].1,
            );
        }
        let pt = TensorType::new(dt, shape);
        (
            pad(e, x, &pads, if max { f64::NEG_INFINITY } else { 0.0 }, &pt)?,
            pt,
        )
    } else {
        x.clone()
    };
    // The window as a second (shape-only) operand, as linalg's pooling ops do.
    let wt = TensorType::known(dt, &p.window);
    let win = e.empty(&wt)?;
    let n_it = r + ns;
    // Output dims but the last, the window, then the output's last (contiguous) dim.
    let mut order: Vec<usize> = (0..r - 1).collect();
    order.extend(r..r + ns);
    order.push(r - 1);
    let mut pos = vec![0usize; n_it];
    for (q, &l) in order.iter().enumerate() {
        pos[l] = q;
    }
    let d = |i: usize| format!("d{}", pos[i]);
    let mut xe: Vec<String> = (0..r).map(d).collect();
    for (i, &a) in sp.iter().enumerate() {
        xe[a] = format!(
            "{} * {} + {} * {}",
            d(a),
            p.strides[i],
            d(r + i),
            p.dilations.get(i).copied().unwrap_or(1)
        );
    }
    let we: Vec<String> = (0..ns).map(|i| d(r + i)).collect();
    let oe: Vec<String> = (0..r).map(d).collect();
    let maps = [map(n_it, &xe), map(n_it, &we), map(n_it, &oe)];
    let iters: Vec<&str> = order
        .iter()
        .map(|&l| if l < r { "parallel" } else { "reduction" })
        .collect();
    let init = filled(e, ot, if max { f64::NEG_INFINITY } else { 0.0 })?;
    let acc = generic(
        e,
        &[xin, (win, wt)],
        &maps,
        &iters,
        init,
        ot,
        &mut |lines, a, out| {
            binary_body(
                lines,
                if max { BinaryOp::Max } else { BinaryOp::Add },
                out,
                &a[0],
                dt,
            )
            .unwrap_or_default()
        },
    );
    if max {
        return Ok(acc);
    }
    // Average: divide by the number of positions counted (a constant per output position).
    let in_sp: Vec<usize> = sp
        .iter()
        .map(|&a| x.1.shape[a].known().unwrap_or(0))
        .collect();
    let out_sp: Vec<usize> = sp
        .iter()
        .map(|&a| ot.shape[a].known().unwrap_or(0))
        .collect();
    let total: usize = out_sp.iter().product();
    let mut counts = Vec::with_capacity(total);
    for flat in 0..total {
        let mut rem = flat;
        let mut idx = vec![0usize; ns];
        for i in (0..ns).rev() {
            idx[i] = rem % out_sp[i];
            rem /= out_sp[i];
        }
        let mut cnt = 1usize;
        for i in 0..ns {
            let dil = p.dilations.get(i).copied().unwrap_or(1);
            let mut k = 0;
            for w in 0..p.window[i] {
                let q = (idx[i] * p.strides[i] + w * dil) as i64 - p.pads[i].0 as i64;
                let inside = q >= 0 && q < in_sp[i] as i64;
                let in_padded = q >= -(p.pads[i].0 as i64) && q < (in_sp[i] + p.pads[i].1) as i64;
                if inside || (p.count_include_pad && in_padded) {
                    k += 1;
                }
            }
            cnt *= k;
        }
        counts.push(cnt.max(1) as f64);
    }
    let mut cshape = vec![Dim::Known(1); r];
    for (i, &a) in sp.iter().enumerate() {
        cshape[a] = Dim::Known(out_sp[i]);
    }
    let ct = TensorType::new(dt, cshape);
    let t = Tensor::from_f64_values(dt, ct.known_shape().unwrap(), &counts).map_err(|e| e.0)?;
    let cv = e.fresh();
    e.line(&format!(
        "{cv} = arith.constant dense<\"{}\"> : {}",
        dense_hex(&t),
        tensor_ty(&ct)
    ));
    e.elementwise(ot, &[(acc, ot.clone()), (cv, ct)], &mut |lines, a| {
        binary_body(lines, BinaryOp::Div, &a[0], &a[1], dt).unwrap_or_default()
    })
}

/// Columns `from..from+n` of a `[B, C]` tensor.
pub(crate) fn columns(
    e: &mut E,
    x: &(String, TensorType),
    from: usize,
    n: usize,
) -> R<(String, TensorType)> {
    let b = e.size_lit(&x.1.shape[0])?;
    let t = TensorType::new(x.1.dtype, vec![x.1.shape[0].clone(), Dim::Known(n)]);
    let v = e.fresh();
    e.line(&format!(
        "{v} = tensor.extract_slice {}[0, {from}] [{b}, {n}] [1, 1] : {} to {}",
        x.0,
        tensor_ty(&x.1),
        tensor_ty(&t)
    ));
    Ok((v, t))
}

/// A recurrent layer: x·W for every step up front, then an `scf.for` over time carrying the
/// state (and the sequence of outputs) as tensors.
/// A matmul inside another op's lowering: the target's kernel, else the generic one.
pub(crate) fn mm_any(e: &mut E, ins: &[(String, TensorType)], ot: &TensorType) -> R<String> {
    let target = e.target;
    match target.matmul(e, ins, ot)? {
        Some(v) => Ok(v),
        None => matmul(e, ins, ot),
    }
}

pub(crate) fn rnn(
    e: &mut E,
    ins: &[(String, TensorType)],
    r: &forgec_ir::RnnAttrs,
    ot: &TensorType,
) -> R<String> {
    let (x, k, rk, bias) = (&ins[0], &ins[1], &ins[2], &ins[3]);
    let dt = x.1.dtype;
    let u = r.units;
    let gu = r.cell.gates() * u;
    let bdim = x.1.shape[0].clone();
    let steps = x.1.shape[1]
        .known()
        .ok_or("a recurrent layer over a symbolic number of steps is not compiled yet")?;
    // x·W + input bias for all steps: [B, T, G·U].
    let xw_t = TensorType::new(dt, vec![bdim.clone(), Dim::Known(steps), Dim::Known(gu)]);
    let xw = mm_any(e, &[x.clone(), k.clone()], &xw_t)?;
    // (Reset by `lower` when the layer is done.)
    e.serial = true;
    let gru_after = r.cell == forgec_ir::RnnCell::Gru && r.reset_after;
    let bvec_t = TensorType::new(dt, vec![Dim::Known(gu)]);
    let (b_in, b_rec) = if gru_after {
        let row = |e: &mut E, i: usize| -> R<String> {
            let v = e.fresh();
            e.line(&format!(
                "{v} = tensor.extract_slice {}[{i}, 0] [1, {gu}] [1, 1] : {} to {}",
                bias.0,
                tensor_ty(&bias.1),
                tensor_ty(&bvec_t)
            ));
            Ok(v)
        };
        (row(e, 0)?, Some(row(e, 1)?))
    } else {
        (bias.0.clone(), None)
    };
    let xwb = e.elementwise(
        &xw_t,
        &[(xw, xw_t.clone()), (b_in, bvec_t.clone())],
        &mut |lines, a| binary_body(lines, BinaryOp::Add, &a[0], &a[1], dt).unwrap_or_default(),
    )?;
    let state_t = TensorType::new(dt, vec![bdim.clone(), Dim::Known(u)]);
    let h0 = filled(e, &state_t, 0.0)?;
    let c0 = filled(e, &state_t, 0.0)?;
    let seq_t = TensorType::new(dt, vec![bdim.clone(), Dim::Known(steps), Dim::Known(u)]);
    let s0 = filled(e, &seq_t, 0.0)?;
    let (c0_, c1_, ct_) = (e.idx(0), e.idx(1), e.idx(steps as i64));
    let last = e.idx(steps as i64 - 1);
    let bsz = e.size_lit(&bdim)?;
    let res = e.fresh();
    let (hv, cv, sv, tv) = (e.fresh(), e.fresh(), e.fresh(), e.fresh());
    let (st, sq) = (tensor_ty(&state_t), tensor_ty(&seq_t));
    e.line(&format!(
        "{res}:3 = scf.for {tv} = {c0_} to {ct_} step {c1_} iter_args({hv} = {h0}, {cv} = {c0}, {sv} = {s0}) -> ({st}, {st}, {sq}) {{"
    ));
    let ts = if r.go_backwards {
        let v = e.fresh();
        e.line(&format!("{v} = arith.subi {last}, {tv} : index"));
        v
    } else {
        tv.clone()
    };
    let gt = TensorType::new(dt, vec![bdim.clone(), Dim::Known(gu)]);
    let xt = e.fresh();
    e.line(&format!(
        "{xt} = tensor.extract_slice {xwb}[0, {ts}, 0] [{bsz}, 1, {gu}] [1, 1, 1] : {} to {}",
        tensor_ty(&xw_t),
        tensor_ty(&gt)
    ));
    let xt = (xt, gt.clone());
    let h = (hv.clone(), state_t.clone());
    let c = (cv.clone(), state_t.clone());
    let (ract, act) = (r.recurrent_activation, r.activation);
    let (h_new, c_new) = match r.cell {
        forgec_ir::RnnCell::Simple => {
            let hu = mm_any(e, &[h.clone(), rk.clone()], &gt)?;
            let hn = e.elementwise(&state_t, &[xt, (hu, gt.clone())], &mut |lines, a| {
                let s = binary_body(lines, BinaryOp::Add, &a[0], &a[1], dt).unwrap_or_default();
                act_body(lines, act, &s, dt)
            })?;
            (hn, cv.clone())
        }
        forgec_ir::RnnCell::Lstm => {
            let hu = mm_any(e, &[h.clone(), rk.clone()], &gt)?;
            let z = e.elementwise(&gt, &[xt, (hu, gt.clone())], &mut |lines, a| {
                binary_body(lines, BinaryOp::Add, &a[0], &a[1], dt).unwrap_or_default()
            })?;
            let z = (z, gt.clone());
            let zi = columns(e, &z, 0, u)?;
            let zf = columns(e, &z, u, u)?;
            let zc = columns(e, &z, 2 * u, u)?;
            let zo = columns(e, &z, 3 * u, u)?;
            let cn = e.elementwise(&state_t, &[zi, zf, zc, c], &mut |lines, a| {
                let i = act_body(lines, ract, &a[0], dt);
                let f = act_body(lines, ract, &a[1], dt);
                let g = act_body(lines, act, &a[2], dt);
                let fc = binary_body(lines, BinaryOp::Mul, &f, &a[3], dt).unwrap_or_default();
                let ig = binary_body(lines, BinaryOp::Mul, &i, &g, dt).unwrap_or_default();
                binary_body(lines, BinaryOp::Add, &fc, &ig, dt).unwrap_or_default()
            })?;
            let hn = e.elementwise(
                &state_t,
                &[zo, (cn.clone(), state_t.clone())],
                &mut |lines, a| {
                    let o = act_body(lines, ract, &a[0], dt);
                    let ac = act_body(lines, act, &a[1], dt);
                    binary_body(lines, BinaryOp::Mul, &o, &ac, dt).unwrap_or_default()
                },
            )?;
            (hn, cn)
        }
        forgec_ir::RnnCell::Gru => {
            let xz = columns(e, &xt, 0, u)?;
            let xr = columns(e, &xt, u, u)?;
            let xh = columns(e, &xt, 2 * u, u)?;
            let hn = if let Some(rb) = &b_rec {
                let hu = mm_any(e, &[h.clone(), rk.clone()], &gt)?;
                let hub = e.elementwise(
                    &gt,
                    &[(hu, gt.clone()), (rb.clone(), bvec_t.clone())],
                    &mut |lines, a| {
                        binary_body(lines, BinaryOp::Add, &a[0], &a[1], dt).unwrap_or_default()
                    },
                )?;
                let hub = (hub, gt.clone());
                let hz = columns(e, &hub, 0, u)?;
                let hr = columns(e, &hub, u, u)?;
                let hh = columns(e, &hub, 2 * u, u)?;
                e.elementwise(
                    &state_t,
                    &[xz, xr, xh, hz, hr, hh, h.clone()],
                    &mut |lines, a| {
                        let zs =
                            binary_body(lines, BinaryOp::Add, &a[0], &a[3], dt).unwrap_or_default();
                        let z = act_body(lines, ract, &zs, dt);
                        let rs =
                            binary_body(lines, BinaryOp::Add, &a[1], &a[4], dt).unwrap_or_default();
                        let rr = act_body(lines, ract, &rs, dt);
                        let rh =
                            binary_body(lines, BinaryOp::Mul, &rr, &a[5], dt).unwrap_or_default();
                        let hs =
                            binary_body(lines, BinaryOp::Add, &a[2], &rh, dt).unwrap_or_default();
                        let cand = act_body(lines, act, &hs, dt);
                        // z h + (1 - z) cand
                        let zh =
                            binary_body(lines, BinaryOp::Mul, &z, &a[6], dt).unwrap_or_default();
                        let one = push(lines, E::scalar_const(dt, 1.0));
                        let omz =
                            binary_body(lines, BinaryOp::Sub, &one, &z, dt).unwrap_or_default();
                        let oc =
                            binary_body(lines, BinaryOp::Mul, &omz, &cand, dt).unwrap_or_default();
                        binary_body(lines, BinaryOp::Add, &zh, &oc, dt).unwrap_or_default()
                    },
                )?
            } else {
                // reset before the recurrent product: (r * h) · U_h.
                let rk_zr_t = TensorType::new(dt, vec![Dim::Known(u), Dim::Known(2 * u)]);
                let rk_h_t = TensorType::new(dt, vec![Dim::Known(u), Dim::Known(u)]);
                let (rk_zr, rk_h) = (e.fresh(), e.fresh());
                e.line(&format!(
                    "{rk_zr} = tensor.extract_slice {}[0, 0] [{u}, {}] [1, 1] : {} to {}",
                    rk.0,
                    2 * u,
                    tensor_ty(&rk.1),
                    tensor_ty(&rk_zr_t)
                ));
                e.line(&format!(
                    "{rk_h} = tensor.extract_slice {}[0, {}] [{u}, {u}] [1, 1] : {} to {}",
                    rk.0,
                    2 * u,
                    tensor_ty(&rk.1),
                    tensor_ty(&rk_h_t)
                ));
                let zr_t = TensorType::new(dt, vec![bdim.clone(), Dim::Known(2 * u)]);
                let hu = mm_any(e, &[h.clone(), (rk_zr, rk_zr_t)], &zr_t)?;
                let hu = (hu, zr_t);
                let hz = columns(e, &hu, 0, u)?;
                let hr = columns(e, &hu, u, u)?;
                let z = e.elementwise(&state_t, &[xz, hz], &mut |lines, a| {
                    let s = binary_body(lines, BinaryOp::Add, &a[0], &a[1], dt).unwrap_or_default();
                    act_body(lines, ract, &s, dt)
                })?;
                let rh = e.elementwise(&state_t, &[xr, hr, h.clone()], &mut |lines, a| {
                    let s = binary_body(lines, BinaryOp::Add, &a[0], &a[1], dt).unwrap_or_default();
                    let rr = act_body(lines, ract, &s, dt);
                    binary_body(lines, BinaryOp::Mul, &rr, &a[2], dt).unwrap_or_default()
                })?;
                let rhu = mm_any(e, &[(rh, state_t.clone()), (rk_h, rk_h_t)], &state_t)?;
                e.elementwise(
                    &state_t,
                    &[xh, (rhu, state_t.clone()), (z, state_t.clone()), h.clone()],
                    &mut |lines, a| {
                        let s =
                            binary_body(lines, BinaryOp::Add, &a[0], &a[1], dt).unwrap_or_default();
                        let cand = act_body(lines, act, &s, dt);
                        let zh =
                            binary_body(lines, BinaryOp::Mul, &a[2], &a[3], dt).unwrap_or_default();
                        let one = push(lines, E::scalar_const(dt, 1.0));
                        let omz =
                            binary_body(lines, BinaryOp::Sub, &one, &a[2], dt).unwrap_or_default();
                        let oc =
                            binary_body(lines, BinaryOp::Mul, &omz, &cand, dt).unwrap_or_default();
                        binary_body(lines, BinaryOp::Add, &zh, &oc, dt).unwrap_or_default()
                    },
                )?
            };
            (hn, cv.clone())
        }
    };
    // Outputs go in processing order (as Keras keeps them when going backwards).
    let s2 = e.fresh();
    e.line(&format!(
        "{s2} = tensor.insert_slice {h_new} into {sv}[0, {tv}, 0] [{bsz}, 1, {u}] [1, 1, 1] : {st} into {sq}"
    ));
    e.line(&format!(
        "scf.yield {h_new}, {c_new}, {s2} : {st}, {st}, {sq}"
    ));
    e.line("}");
    let _ = ot;
    Ok(if r.return_sequences {
        format!("{res}#2")
    } else {
        format!("{res}#0")
    })
}

/// Dropout's training mask (`dropout_mask`): per element, forgec's counter-based draw for the
/// key (a rank-0 i64 input), the salt and the element's row-major index, the same arithmetic
/// as `forgec_ir::ops::norm::dropout_keep` (so the compiled mask equals the interpreter's, on
/// any number of threads).
pub(crate) fn dropout_mask(
    e: &mut E,
    key: &(String, TensorType),
    rate: f64,
    salt: i64,
    ot: &TensorType,
) -> R<String> {
    use forgec_ir::ops::norm::{
        dropout_threshold, DROPOUT_INDEX_MUL, DROPOUT_SALT_MUL, FMIX_1, FMIX_2,
    };
    let r = ot.rank();
    let mut strides = vec![1u64; r];
    for d in (0..r.saturating_sub(1)).rev() {
        let n = ot.shape[d + 1]
            .known()
            .ok_or("a dropout mask with a symbolic dim after the first is not compiled yet")?;
        strides[d] = strides[d + 1] * n as u64;
    }
    let th = dropout_threshold(rate);
    let scale = 1.0 / (1.0 - rate);
    let dt = ot.dtype;
    let salted = (salt as u64).wrapping_mul(DROPOUT_SALT_MUL);
    fn c(lines: &mut Vec<String>, v: u64) -> String {
        push(lines, format!("arith.constant {} : i64", v as i64))
    }
    e.elementwise(ot, std::slice::from_ref(key), &mut |lines, a| {
        let mut idx = c(lines, 0);
        for (d, &s) in strides.iter().enumerate() {
            let i = push(lines, format!("linalg.index {d} : index"));
            let ii = push(lines, format!("arith.index_cast {i} : index to i64"));
            let sc = c(lines, s);
            let m = push(lines, format!("arith.muli {ii}, {sc} : i64"));
            idx = push(lines, format!("arith.addi {idx}, {m} : i64"));
        }
        let k1 = c(lines, salted);
        let x0 = push(lines, format!("arith.xori {}, {k1} : i64", a[0]));
        let k2 = c(lines, DROPOUT_INDEX_MUL);
        let im = push(lines, format!("arith.muli {idx}, {k2} : i64"));
        let mut z = push(lines, format!("arith.addi {x0}, {im} : i64"));
        let s33 = c(lines, 33);
        let mix = |lines: &mut Vec<String>, z: String| {
            let sh = push(lines, format!("arith.shrui {z}, {s33} : i64"));
            push(lines, format!("arith.xori {z}, {sh} : i64"))
        };
        for k in [FMIX_1, FMIX_2] {
            z = mix(lines, z);
            let kc = c(lines, k);
            z = push(lines, format!("arith.muli {z}, {kc} : i64"));
        }
        z = mix(lines, z);
        let s40 = c(lines, 40);
        let top = push(lines, format!("arith.shrui {z}, {s40} : i64"));
        let t = c(lines, th);
        let keep = push(lines, format!("arith.cmpi uge, {top}, {t} : i64"));
        let one = push(lines, E::scalar_const(dt, scale));
        let zero = push(lines, E::scalar_const(dt, 0.0));
        push(
            lines,
            format!("arith.select {keep}, {one}, {zero} : {}", elem(dt)),
        )
    })
}

/// `conv_kernel_grad` (channels-last, 2-D, one group) for any float type, where the target has
/// no kernel: the padded input's window at each kernel position times the output gradient,
/// summed over the samples and output positions in one generic (loops: kernel position and
/// input channel, then the samples and output positions, the output channel innermost).
pub(crate) fn conv_kernel_grad(
    e: &mut E,
    x: &(String, TensorType),
    dy: &(String, TensorType),
    c: &ConvAttrs,
    ot: &TensorType,
) -> R<String> {
    let x = pad_input(e, x, c)?;
    // d0 i, d1 j, d2 input channel, d3 sample, d4 oy, d5 ox, d6 output channel.
    let d = |i: usize| format!("d{i}");
    let xe = [
        d(3),
        format!("d4 * {} + d0 * {}", c.strides[0], c.dilations[0]),
        format!("d5 * {} + d1 * {}", c.strides[1], c.dilations[1]),
        d(2),
    ];
    let de = [d(3), d(4), d(5), d(6)];
    let oe = [d(0), d(1), d(2), d(6)];
    let maps = [map(7, &xe), map(7, &de), map(7, &oe)];
    let iters = [
        "parallel",
        "parallel",
        "parallel",
        "reduction",
        "reduction",
        "reduction",
        "parallel",
    ];
    contraction(e, &[x, dy.clone()], &maps, &iters, ot)
}

/// `pool_grad` (channels-last 2-D max pooling) for any float type, where the target has no
/// kernel, for windows apart without padding (what the derivative rule makes): input pixel
/// (y, x) is tap (y % sh, x % sw) of window (y / sh, x / sw) and gets that window's gradient
/// where its first tap equal to the window's maximum is this one; pixels outside every window
/// get zero.
pub(crate) fn max_pool_grad(
    e: &mut E,
    ins: &[(String, TensorType)],
    p: &forgec_ir::PoolAttrs,
    ot: &TensorType,
) -> R<String> {
    let (x, y, dy) = (&ins[0], &ins[1], &ins[2]);
    let dil = |i: usize| p.dilations.get(i).copied().unwrap_or(1);
    let apart = (0..2).all(|i| p.strides[i] >= p.window[i] && dil(i) == 1);
    if !apart || p.pads.iter().any(|q| *q != (0, 0)) {
        return Err(
            "a max pooling's gradient over overlapping or padded windows as one op is not compiled yet"
                .into(),
        );
    }
    let known = |t: &TensorType, i: usize| {
        t.shape[i]
            .known()
            .ok_or("a max pooling's gradient over a symbolic spatial dim is not compiled yet")
    };
    let (oh, ow) = (known(&y.1, 1)?, known(&y.1, 2)?);
    let [kh, kw] = [p.window[0], p.window[1]];
    let (sh, sw) = (p.strides[0], p.strides[1]);
    let dt = ot.dtype;
    let (ft, zero) = (elem(dt), E::scalar_const(dt, 0.0));
    let (xv, xt) = (x.0.clone(), tensor_ty(&x.1));
    let (yv, yt) = (y.0.clone(), tensor_ty(&y.1));
    let (dv, dyt) = (dy.0.clone(), tensor_ty(&dy.1));
    let id = map(4, &(0..4).map(|i| format!("d{i}")).collect::<Vec<_>>());
    let init = e.empty(ot)?;
    Ok(generic(
        e,
        std::slice::from_ref(x),
        &[id.clone(), id],
        &["parallel"; 4],
        init,
        ot,
        &mut |lines, _, _| {
            let op = &mut |s: String| push(lines, s);
            let ix: Vec<S> = (0..4)
                .map(|d| op(format!("linalg.index {d} : index")))
                .collect();
            let (n, ch) = (ix[0].clone(), ix[3].clone());
            // Window and tap along one axis, the window clamped into the output (reads stay in
            // bounds), and whether the pixel is inside a window at all.
            let mut split = |o: &str, s: usize, k: usize, n: usize| {
                let (cs, ck, cn, clast) = (
                    op(format!("arith.constant {s} : index")),
                    op(format!("arith.constant {k} : index")),
                    op(format!("arith.constant {n} : index")),
                    op(format!("arith.constant {} : index", n.saturating_sub(1))),
                );
                let a = op(format!("arith.divui {o}, {cs} : index"));
                let t = op(format!("arith.remui {o}, {cs} : index"));
                let ca = op(format!("arith.minui {a}, {clast} : index"));
                let inw = op(format!("arith.cmpi ult, {t}, {ck} : index"));
                let ina = op(format!("arith.cmpi ult, {a}, {cn} : index"));
                let both = op(format!("arith.andi {inw}, {ina} : i1"));
                let base = op(format!("arith.muli {ca}, {cs} : index"));
                (ca, t, both, base)
            };
            let (a, i, row_in, r0) = split(&ix[1], sh, kh, oh);
            let (b, j, col_in, q0) = split(&ix[2], sw, kw, ow);
            let ymax = op(format!("tensor.extract {yv}[{n}, {a}, {b}, {ch}] : {yt}"));
            let g = op(format!("tensor.extract {dv}[{n}, {a}, {b}, {ch}] : {dyt}"));
            // The first tap equal to the maximum: the taps scanned last to first.
            let mut first = op(format!("arith.constant {} : index", kh * kw));
            for t in (0..kh * kw).rev() {
                let (ci, cj, ct) = (
                    op(format!("arith.constant {} : index", t / kw)),
                    op(format!("arith.constant {} : index", t % kw)),
                    op(format!("arith.constant {t} : index")),
                );
                let r = op(format!("arith.addi {r0}, {ci} : index"));
                let q = op(format!("arith.addi {q0}, {cj} : index"));
                let v = op(format!("tensor.extract {xv}[{n}, {r}, {q}, {ch}] : {xt}"));
                let eq = op(format!("arith.cmpf oeq, {v}, {ymax} : {ft}"));
                first = op(format!("arith.select {eq}, {ct}, {first} : index"));
            }
            let ckw = op(format!("arith.constant {kw} : index"));
            let ti = op(format!("arith.muli {i}, {ckw} : index"));
            let tap = op(format!("arith.addi {ti}, {j} : index"));
            let mine = op(format!("arith.cmpi eq, {first}, {tap} : index"));
            let inside = op(format!("arith.andi {row_in}, {col_in} : i1"));
            let take = op(format!("arith.andi {mine}, {inside} : i1"));
            let z = op(zero.clone());
            op(format!("arith.select {take}, {g}, {z} : {ft}"))
        },
    ))
}

/// `col2im` (channels-last 2-D) for any float type, where the target has no kernel: each pixel
/// the sum of the columns whose window covers it, the taps in row-major order (`tensor.extract`
/// of each tap's column, selected to zero where the tap does not reach the pixel).
pub(crate) fn col2im(
    e: &mut E,
    x: &(String, TensorType),
    c: &ConvAttrs,
    kernel: &[usize],
    ot: &TensorType,
) -> R<String> {
    let known = |t: &TensorType, i: usize| {
        t.shape[i]
            .known()
            .ok_or("col2im over a symbolic spatial dim is not compiled yet")
    };
    let (oh, ow) = (known(&x.1, 1)?, known(&x.1, 2)?);
    let ch = known(ot, 3)?;
    let dt = ot.dtype;
    let (ft, zero) = (elem(dt), E::scalar_const(dt, 0.0));
    let (xv, xt) = (x.0.clone(), tensor_ty(&x.1));
    let id = map(4, &(0..4).map(|i| format!("d{i}")).collect::<Vec<_>>());
    let init = e.empty(ot)?;
    let (kh, kw) = (kernel[0], kernel[1]);
    Ok(generic(
        e,
        &[],
        &[id],
        &["parallel"; 4],
        init,
        ot,
        &mut |lines, _, _| {
            let ix: Vec<S> = (0..4)
                .map(|d| push(lines, format!("linalg.index {d} : index")))
                .collect();
            let c0 = push(lines, "arith.constant 0 : index".into());
            // Tap `i` along axis `a` at output coordinate `o`: the column position and whether
            // the tap reaches the pixel.
            let reach = |lines: &mut Vec<String>, a: usize, o: &str, i: usize, len: usize| {
                let mut op = |s: String| push(lines, s);
                let (cp, cd, cs, cn) = (
                    op(format!("arith.constant {} : index", c.pads[a].0)),
                    op(format!("arith.constant {} : index", i * c.dilations[a])),
                    op(format!("arith.constant {} : index", c.strides[a])),
                    op(format!("arith.constant {len} : index")),
                );
                let t0 = op(format!("arith.addi {o}, {cp} : index"));
                let t = op(format!("arith.subi {t0}, {cd} : index"));
                let q = op(format!("arith.divsi {t}, {cs} : index"));
                let r = op(format!("arith.remsi {t}, {cs} : index"));
                let ge = op(format!("arith.cmpi sge, {t}, {c0} : index"));
                let ex = op(format!("arith.cmpi eq, {r}, {c0} : index"));
                let lt = op(format!("arith.cmpi slt, {q}, {cn} : index"));
                let a1 = op(format!("arith.andi {ge}, {ex} : i1"));
                let ok = op(format!("arith.andi {a1}, {lt} : i1"));
                let qc = op(format!("arith.select {ok}, {q}, {c0} : index"));
                (qc, ok)
            };
            let mut acc = push(lines, zero.clone());
            for (i, j) in (0..kh).flat_map(|i| (0..kw).map(move |j| (i, j))) {
                let (q, okh) = reach(lines, 0, &ix[1], i, oh);
                let (r, okw) = reach(lines, 1, &ix[2], j, ow);
                let mut op = |s: String| push(lines, s);
                let ok = op(format!("arith.andi {okh}, {okw} : i1"));
                let base = op(format!("arith.constant {} : index", (i * kw + j) * ch));
                let col = op(format!("arith.addi {base}, {} : index", ix[3]));
                let v = op(format!(
                    "tensor.extract {xv}[{}, {q}, {r}, {col}] : {xt}",
                    ix[0]
                ));
                let z = op(zero.clone());
                let s = op(format!("arith.select {ok}, {v}, {z} : {ft}"));
                acc = op(format!("arith.addf {acc}, {s} : {ft}"));
            }
            acc
        },
    ))
}
