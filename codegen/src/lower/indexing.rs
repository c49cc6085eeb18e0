//! Lowerings of the ops that read or write at data-dependent positions (GatherElements,
//! GatherNd, ScatterElements, ScatterNd), that pick positions (ArgMax/ArgMin, TopK), that scan
//! (CumSum/CumProd), and Resize, whose positions and weights are baked into tables here.
//!
//! Indices are wrapped when negative and clamped into the axis: an out-of-range index reads
//! or writes the nearest element, never foreign memory (the interpreter refuses one).

use super::{
    binary_body, cast_body, elem, filled, generic, map, push, reshape, tensor_ty, E, R, S,
};
use forgec_ir::interp::{resize_is_identity, resize_taps};
use forgec_ir::{BinaryOp, DType, Dim, ReduceKind, ResizeAttrs, Tensor, TensorType};

/// `d0 .. d{n-1}`.
fn dvars(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("d{i}")).collect()
}

/// The index `i` wrapped when negative and clamped into `0..n` (`n` an index value).
pub(super) fn wrap_clamp(op: &mut dyn FnMut(String) -> S, i: &str, n: &str) -> S {
    let z = op("arith.constant 0 : index".into());
    let one = op("arith.constant 1 : index".into());
    let neg = op(format!("arith.cmpi slt, {i}, {z} : index"));
    let w = op(format!("arith.addi {i}, {n} : index"));
    let j = op(format!("arith.select {neg}, {w}, {i} : index"));
    let last = op(format!("arith.subi {n}, {one} : index"));
    let j = op(format!("arith.maxsi {j}, {z} : index"));
    op(format!("arith.minsi {j}, {last} : index"))
}

/// An index value read from an integer tensor element `v` of type `d`.
fn to_index(op: &mut dyn FnMut(String) -> S, v: &str, d: DType) -> S {
    op(format!("arith.index_cast {v} : {} to index", elem(d)))
}

/// The known size of `d`, or an error naming what needs it.
fn known(d: &Dim, what: &str) -> R<usize> {
    d.known()
        .ok_or_else(|| format!("{what} along a symbolic dim is not compiled yet"))
}

/// The known, non-zero size of an axis read at an index (every index is out of range of an
/// empty one).
fn indexable(d: &Dim, what: &str) -> R<usize> {
    match known(d, what)? {
        0 => Err(format!(
            "{what} along an empty axis: every index is out of range"
        )),
        n => Ok(n),
    }
}

pub(super) fn gather_elements(
    e: &mut E,
    data: &(String, TensorType),
    idx: &(String, TensorType),
    axis: usize,
    ot: &TensorType,
) -> R<String> {
    let r = ot.rank();
    let n = indexable(&data.1.shape[axis], "gathering")?;
    let id = map(r, &dvars(r));
    let init = e.empty(ot)?;
    let (dv, dt, it) = (data.0.clone(), tensor_ty(&data.1), idx.1.dtype);
    Ok(generic(
        e,
        std::slice::from_ref(idx),
        &[id.clone(), id],
        &vec!["parallel"; r],
        init,
        ot,
        &mut |lines, a, _| {
            let op = &mut |s: String| push(lines, s);
            let nn = op(format!("arith.constant {n} : index"));
            let i = to_index(op, &a[0], it);
            let j = wrap_clamp(op, &i, &nn);
            let coords: Vec<S> = (0..r)
                .map(|d| match d == axis {
                    true => j.clone(),
                    false => op(format!("linalg.index {d} : index")),
                })
                .collect();
            op(format!("tensor.extract {dv}[{}] : {dt}", coords.join(", ")))
        },
    ))
}

pub(super) fn gather_nd(
    e: &mut E,
    data: &(String, TensorType),
    idx: &(String, TensorType),
    batch_dims: usize,
    ot: &TensorType,
) -> R<String> {
    let (r, q, drank) = (ot.rank(), idx.1.rank(), data.1.rank());
    let k = known(&idx.1.shape[q - 1], "index tuples")?;
    let ns: Vec<usize> = (0..k)
        .map(|j| indexable(&data.1.shape[batch_dims + j], "gathering"))
        .collect::<R<_>>()?;
    // The index tensor once per tuple element j, read at (tuple position..., j).
    let ins: Vec<(String, TensorType)> = (0..k).map(|_| idx.clone()).collect();
    let mut maps: Vec<String> = (0..k)
        .map(|j| {
            let mut ex = dvars(q - 1);
            ex.push(j.to_string());
            map(r, &ex)
        })
        .collect();
    maps.push(map(r, &dvars(r)));
    let init = e.empty(ot)?;
    let (dv, dt, it) = (data.0.clone(), tensor_ty(&data.1), idx.1.dtype);
    Ok(generic(
        e,
        &ins,
        &maps,
        &vec!["parallel"; r],
        init,
        ot,
        &mut |lines, a, _| {
            let op = &mut |s: String| push(lines, s);
            let mut coords: Vec<S> = (0..batch_dims)
                .map(|d| op(format!("linalg.index {d} : index")))
                .collect();
            for (j, n) in ns.iter().enumerate() {
                let nn = op(format!("arith.constant {n} : index"));
                let i = to_index(op, &a[j], it);
                coords.push(wrap_clamp(op, &i, &nn));
            }
            for d in batch_dims + k..drank {
                coords.push(op(format!(
                    "linalg.index {} : index",
                    q - 1 + d - batch_dims - k
                )));
            }
            op(format!("tensor.extract {dv}[{}] : {dt}", coords.join(", ")))
        },
    ))
}

/// `old` combined with `u` by a scatter's `reduction` (none: `u`).
fn combine(op: &mut dyn FnMut(String) -> S, reduction: &str, old: &str, u: &str, d: DType) -> S {
    let (t, f) = (elem(d), d.is_float());
    let name = match (reduction, f) {
        ("add", true) => "addf",
        ("add", false) => "addi",
        ("mul", true) => "mulf",
        ("mul", false) => "muli",
        // The interpreter's f64::max/min: a NaN operand loses.
        ("max", true) => "maxnumf",
        ("max", false) => "maxsi",
        ("min", true) => "minnumf",
        ("min", false) => "minsi",
        _ => return u.to_string(),
    };
    op(format!("arith.{name} {old}, {u} : {t}"))
}

/// `scf.for` loops over `bounds` (index values, from 0 by 1) nested in one another, carrying
/// one tensor of type `ty` from `init`; `inner` gets the carried value and the induction
/// variables, outermost first, and returns the value to yield.
fn loop_nest(
    e: &mut E,
    ty: &str,
    init: &str,
    bounds: &[String],
    ivs: &mut Vec<String>,
    inner: &mut dyn FnMut(&mut E, &str, &[String]) -> String,
) -> String {
    let Some((n, rest)) = bounds.split_first() else {
        return inner(e, init, ivs);
    };
    let (c0, c1) = (e.idx(0), e.idx(1));
    super::for_carrying(e, ty, init, (&c0, n, &c1), &mut |e, acc, iv| {
        ivs.push(iv.to_string());
        let v = loop_nest(e, ty, acc, rest, ivs, inner);
        ivs.pop();
        v
    })
}

/// ScatterElements (`axis` given) or ScatterNd: a copy of data with each element of the
/// updates written (or combined) where its index says, in order, so the last write wins.
pub(super) fn scatter(
    e: &mut E,
    ins: &[(String, TensorType)],
    axis: Option<usize>,
    reduction: &str,
    ot: &TensorType,
) -> R<String> {
    let (data, idx, upd) = (&ins[0], &ins[1], &ins[2]);
    let q = idx.1.rank();
    // ScatterNd: index tuples of k elements address data's first k dims.
    let k = match axis {
        Some(_) => 0,
        None => known(&idx.1.shape[q - 1], "index tuples")?,
    };
    let ns: Vec<usize> = match axis {
        Some(a) => vec![indexable(&data.1.shape[a], "scattering")?],
        None => (0..k)
            .map(|j| indexable(&data.1.shape[j], "scattering"))
            .collect::<R<_>>()?,
    };
    let bounds: Vec<String> = upd.1.shape.iter().map(|d| e.dim_val(d)).collect::<R<_>>()?;
    let ty = tensor_ty(ot);
    let (iv, it, uv, ut) = (
        idx.0.clone(),
        tensor_ty(&idx.1),
        upd.0.clone(),
        tensor_ty(&upd.1),
    );
    let (idt, d) = (idx.1.dtype, ot.dtype);
    // The loop writes into a copy of data (a fresh buffer, not the caller's).
    let copy = e.elementwise(ot, std::slice::from_ref(data), &mut |_, a| a[0].clone())?;
    Ok(loop_nest(
        e,
        &ty,
        &copy,
        &bounds,
        &mut Vec::new(),
        &mut |e, t, ivs| {
            let mut lines = Vec::new();
            let op = &mut |s: String| {
                let v = e.fresh();
                lines.push(format!("{v} = {s}"));
                v
            };
            let coords: Vec<S> = match axis {
                Some(a) => {
                    let nn = op(format!("arith.constant {} : index", ns[0]));
                    let i = op(format!("tensor.extract {iv}[{}] : {it}", ivs.join(", ")));
                    let i = to_index(op, &i, idt);
                    let j = wrap_clamp(op, &i, &nn);
                    let mut c = ivs.to_vec();
                    c[a] = j;
                    c
                }
                None => {
                    let mut c = Vec::new();
                    for (j, n) in ns.iter().enumerate() {
                        let nn = op(format!("arith.constant {n} : index"));
                        let cj = op(format!("arith.constant {j} : index"));
                        let mut at = ivs[..q - 1].to_vec();
                        at.push(cj);
                        let i = op(format!("tensor.extract {iv}[{}] : {it}", at.join(", ")));
                        let i = to_index(op, &i, idt);
                        c.push(wrap_clamp(op, &i, &nn));
                    }
                    c.extend(ivs[q - 1..].iter().cloned());
                    c
                }
            };
            let at = coords.join(", ");
            let u = op(format!("tensor.extract {uv}[{}] : {ut}", ivs.join(", ")));
            let old = op(format!("tensor.extract {t}[{at}] : {ty}"));
            let new = combine(op, reduction, &old, &u, d);
            let v = op(format!("tensor.insert {new} into {t}[{at}] : {ty}"));
            for l in lines {
                e.line(&l);
            }
            v
        },
    ))
}

/// ArgMax / ArgMin: one reduction carrying the best value so far and its index (i64). The
/// first element along the axis starts it; a later one replaces it only when strictly better
/// (or equal, with `select_last`), so a NaN never wins unless it comes first.
pub(super) fn arg_reduce(
    e: &mut E,
    x: &(String, TensorType),
    kind: ReduceKind,
    axis: usize,
    select_last: bool,
    ot: &TensorType,
) -> R<String> {
    let r = x.1.rank();
    // The values start as the first slice along the axis, the indices as 0.
    let (first, vt) = slice_at(e, x, axis, "0")?;
    let it = TensorType::new(DType::I64, vt.shape.clone());
    let zeros = filled(e, &it, 0.0)?;
    let in_map = map(r, &dvars(r));
    let mut oex = dvars(r);
    oex[axis] = "0".into();
    let out_map = map(r, &oex);
    let iters: Vec<String> = (0..r)
        .map(|d| format!("\"{}\"", if d == axis { "reduction" } else { "parallel" }))
        .collect();
    let (t, f) = (elem(x.1.dtype), x.1.dtype.is_float());
    let pred = match (kind, f) {
        (ReduceKind::Min, true) => "cmpf olt",
        (ReduceKind::Min, false) => "cmpi slt",
        (_, true) => "cmpf ogt",
        (_, false) => "cmpi sgt",
    };
    let eq = if f { "cmpf oeq" } else { "cmpi eq" };
    let mut body = vec![
        format!("%k = linalg.index {axis} : index"),
        "%ki = arith.index_cast %k : index to i64".to_string(),
        format!("%gt = arith.{pred}, %a, %bv : {t}"),
    ];
    let better = if select_last {
        body.push(format!("%eq = arith.{eq}, %a, %bv : {t}"));
        body.push("%better = arith.ori %gt, %eq : i1".into());
        "%better"
    } else {
        "%gt"
    };
    body.push(format!("%nv = arith.select {better}, %a, %bv : {t}"));
    body.push(format!("%ni = arith.select {better}, %ki, %bi : i64"));
    let res = e.fresh();
    let (vts, its) = (tensor_ty(&vt), tensor_ty(&it));
    let mut text = format!(
        "{res}:2 = linalg.generic {{indexing_maps = [{in_map}, {out_map}, {out_map}], iterator_types = [{}]}} ins({} : {}) outs({first}, {zeros} : {vts}, {its}) {{\n    ^bb0(%a: {t}, %bv: {t}, %bi: i64):\n",
        iters.join(", "),
        x.0,
        tensor_ty(&x.1),
    );
    for l in body {
        text.push_str(&format!("      {l}\n"));
    }
    text.push_str(&format!(
        "      linalg.yield %nv, %ni : {t}, i64\n    }} -> ({vts}, {its})"
    ));
    e.line(&text);
    let idx = format!("{res}#1");
    if it.shape == ot.shape {
        Ok(idx)
    } else {
        reshape(e, &(idx, it), ot)
    }
}

/// A loop body: gets the carried values and the induction variable, returns those to yield.
type ManyBody<'a> = dyn FnMut(&mut E, &[String], &str) -> R<Vec<String>> + 'a;

/// `scf.for` from 0 to `n` by 1 carrying several values (`tys`, from `inits`); `inner` gets
/// the carried values and the induction variable and returns the values to yield. Constants
/// made inside are not reused after the loop.
fn for_many(
    e: &mut E,
    tys: &[String],
    inits: &[String],
    n: &str,
    inner: &mut ManyBody,
) -> R<Vec<String>> {
    let (c0, c1) = (e.idx(0), e.idx(1));
    let iv = e.fresh();
    let accs: Vec<String> = tys.iter().map(|_| e.fresh()).collect();
    let r = e.fresh();
    let saved_body = std::mem::take(&mut e.body);
    let saved_consts = e.consts.clone();
    let ys = inner(e, &accs, &iv);
    e.consts = saved_consts;
    let ys = match ys {
        Ok(ys) => ys,
        Err(m) => {
            e.body = saved_body;
            return Err(m);
        }
    };
    let tl = tys.join(", ");
    e.line(&format!("scf.yield {} : {tl}", ys.join(", ")));
    let body = std::mem::replace(&mut e.body, saved_body);
    let args: Vec<String> = accs
        .iter()
        .zip(inits)
        .map(|(a, i)| format!("{a} = {i}"))
        .collect();
    e.line(&format!(
        "{r}:{} = scf.for {iv} = {c0} to {n} step {c1} iter_args({}) -> ({tl}) {{\n{body}    }}",
        tys.len(),
        args.join(", ")
    ));
    Ok((0..tys.len()).map(|k| format!("{r}#{k}")).collect())
}

/// `x`'s slice at position `at` (an index value) along `axis`, the axis kept with size 1.
fn slice_at(e: &mut E, x: &(String, TensorType), axis: usize, at: &str) -> R<(String, TensorType)> {
    let r = x.1.rank();
    let mut shape = x.1.shape.clone();
    shape[axis] = Dim::Known(1);
    let st = TensorType::new(x.1.dtype, shape);
    let (offs, sizes) = slice_args(e, &st, axis, at)?;
    let v = e.fresh();
    e.line(&format!(
        "{v} = tensor.extract_slice {}[{offs}] [{sizes}] [{}] : {} to {}",
        x.0,
        vec!["1"; r].join(", "),
        tensor_ty(&x.1),
        tensor_ty(&st)
    ));
    Ok((v, st))
}

/// The offsets and sizes of a slice of type `st` at `at` along `axis`.
fn slice_args(e: &mut E, st: &TensorType, axis: usize, at: &str) -> R<(String, String)> {
    let mut offs = vec!["0".to_string(); st.rank()];
    offs[axis] = at.to_string();
    let sizes: Vec<String> = st.shape.iter().map(|d| e.size_lit(d)).collect::<R<_>>()?;
    Ok((offs.join(", "), sizes.join(", ")))
}

/// TopK: the k best of each row kept sorted in two buffers (values, indices) while a loop
/// walks the axis; each step inserts the element where it belongs, shifting the worse ones
/// down (all rows at once, one parallel generic a step). An index of -1 marks an empty slot;
/// an element displaces only strictly worse ones, so ties keep the lower index first.
pub(super) fn top_k(
    e: &mut E,
    x: &(String, TensorType),
    axis: usize,
    largest: bool,
    outs: &[TensorType],
) -> R<Vec<String>> {
    let n = known(&x.1.shape[axis], "top-k")?;
    let (vt, it) = (&outs[0], &outs[1]);
    let r = vt.rank();
    let (vts, its) = (tensor_ty(vt), tensor_ty(it));
    let vals0 = filled(e, vt, 0.0)?;
    let idx0 = filled(e, it, -1.0)?;
    let nv = e.idx(n as i64);
    let (t, f) = (elem(x.1.dtype), x.1.dtype.is_float());
    let pred = match (largest, f) {
        (true, true) => "cmpf ogt",
        (true, false) => "cmpi sgt",
        (false, true) => "cmpf olt",
        (false, false) => "cmpi slt",
    };
    for_many(
        e,
        &[vts.clone(), its.clone()],
        &[vals0, idx0],
        &nv,
        &mut |e, acc, i| {
            let (xi, xt) = slice_at(e, x, axis, i)?;
            let (ev0, ei0) = (e.empty(vt)?, e.empty(it)?);
            let (vals, idxs) = (&acc[0], &acc[1]);
            let mut xex = dvars(r);
            xex[axis] = "0".into();
            let in_map = map(r, &xex);
            let id = map(r, &dvars(r));
            let coords = |j: &str| -> String {
                (0..r)
                    .map(|d| {
                        if d == axis {
                            j.to_string()
                        } else {
                            format!("%i{d}")
                        }
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let mut body: Vec<String> = (0..r)
                .map(|d| format!("%i{d} = linalg.index {d} : index"))
                .collect();
            let at_j = coords(&format!("%i{axis}"));
            let at_p = coords("%jp");
            body.extend([
                "%z = arith.constant 0 : index".to_string(),
                "%one = arith.constant 1 : index".to_string(),
                "%none = arith.constant -1 : i64".to_string(),
                format!("%jm = arith.subi %i{axis}, %one : index"),
                "%jp = arith.maxsi %jm, %z : index".to_string(),
                format!("%first = arith.cmpi eq, %i{axis}, %z : index"),
                format!("%bv = tensor.extract {vals}[{at_j}] : {vts}"),
                format!("%bi = tensor.extract {idxs}[{at_j}] : {its}"),
                format!("%pv = tensor.extract {vals}[{at_p}] : {vts}"),
                format!("%pi = tensor.extract {idxs}[{at_p}] : {its}"),
                // Better than slot j (an empty slot takes anything), and than slot j - 1.
                "%ej = arith.cmpi eq, %bi, %none : i64".to_string(),
                format!("%gj = arith.{pred}, %x, %bv : {t}"),
                "%bj = arith.ori %ej, %gj : i1".to_string(),
                "%ep = arith.cmpi eq, %pi, %none : i64".to_string(),
                format!("%gp = arith.{pred}, %x, %pv : {t}"),
                "%bp0 = arith.ori %ep, %gp : i1".to_string(),
                "%false = arith.constant false".to_string(),
                "%bp = arith.select %first, %false, %bp0 : i1".to_string(),
                format!("%ii = arith.index_cast {i} : index to i64"),
                format!("%w1 = arith.select %bj, %x, %bv : {t}"),
                "%n1 = arith.select %bj, %ii, %bi : i64".to_string(),
                format!("%w2 = arith.select %bp, %pv, %w1 : {t}"),
                "%n2 = arith.select %bp, %pi, %n1 : i64".to_string(),
            ]);
            let res = e.fresh();
            let iters = vec!["\"parallel\""; r].join(", ");
            let mut text = format!(
            "{res}:2 = linalg.generic {{indexing_maps = [{in_map}, {id}, {id}], iterator_types = [{iters}]}} ins({xi} : {}) outs({ev0}, {ei0} : {vts}, {its}) {{\n    ^bb0(%x: {t}, %o1: {t}, %o2: i64):\n",
            tensor_ty(&xt)
        );
            for l in body {
                text.push_str(&format!("      {l}\n"));
            }
            text.push_str(&format!(
                "      linalg.yield %w2, %n2 : {t}, i64\n    }} -> ({vts}, {its})"
            ));
            e.line(&text);
            Ok(vec![format!("{res}#0"), format!("{res}#1")])
        },
    )
}

/// CumSum / CumProd: a loop along the axis carrying the running total (one slice; in f32 for
/// half types) and the output, into which each step writes its slice.
pub(super) fn cumulative(
    e: &mut E,
    x: &(String, TensorType),
    kind: ReduceKind,
    axis: usize,
    exclusive: bool,
    reverse: bool,
    ot: &TensorType,
) -> R<String> {
    let n = known(&x.1.shape[axis], "a running total")?;
    let d = x.1.dtype;
    let ad = if matches!(d, DType::F16 | DType::BF16) {
        DType::F32
    } else {
        d
    };
    let mut shape = x.1.shape.clone();
    shape[axis] = Dim::Known(1);
    let at = TensorType::new(ad, shape.clone());
    let st = TensorType::new(d, shape);
    let prod = kind == ReduceKind::Prod;
    let acc0 = filled(e, &at, if prod { 1.0 } else { 0.0 })?;
    let out0 = e.empty(ot)?;
    let nv = e.idx(n as i64);
    let last = e.idx(n as i64 - 1);
    let (ats, ots) = (tensor_ty(&at), tensor_ty(ot));
    let bop = if prod { BinaryOp::Mul } else { BinaryOp::Add };
    let ys = for_many(
        e,
        &[ats.clone(), ots.clone()],
        &[acc0, out0],
        &nv,
        &mut |e, acc, step| {
            let k = if reverse {
                let v = e.fresh();
                e.line(&format!("{v} = arith.subi {last}, {step} : index"));
                v
            } else {
                step.to_string()
            };
            let (xk, _) = slice_at(e, x, axis, &k)?;
            let ins = [(acc[0].clone(), at.clone()), (xk, st.clone())];
            let next = e.elementwise(&at, &ins, &mut |lines, a| {
                let xv = if ad == d {
                    a[1].clone()
                } else {
                    cast_body(lines, &a[1], d, ad)
                };
                binary_body(lines, bop, &a[0], &xv, ad).unwrap_or_default()
            })?;
            let wrote = if exclusive {
                acc[0].clone()
            } else {
                next.clone()
            };
            let wrote = if ad == d {
                wrote
            } else {
                e.elementwise(&st, &[(wrote, at.clone())], &mut |lines, a| {
                    cast_body(lines, &a[0], ad, d)
                })?
            };
            let (offs, sizes) = slice_args(e, &st, axis, &k)?;
            let out = e.fresh();
            e.line(&format!(
                "{out} = tensor.insert_slice {wrote} into {}[{offs}] [{sizes}] [{}] : {} into {ots}",
                acc[1],
                vec!["1"; st.rank()].join(", "),
                tensor_ty(&st)
            ));
            Ok(vec![next, out])
        },
    )?;
    Ok(ys[1].clone())
}

/// Resize: each axis it changes in turn, by taps computed here (shared with the interpreter):
/// a table of source positions per output position, and of weights unless every output
/// position copies one source element (nearest modes, integer scales), in which case the
/// values are copied as they are. Half types are weighted in f32.
pub(super) fn resize(
    e: &mut E,
    x: &(String, TensorType),
    r: &ResizeAttrs,
    ot: &TensorType,
) -> R<String> {
    let rank = x.1.rank();
    let mut cur = x.clone();
    for axis in 0..rank {
        let (ind, outd) = (&cur.1.shape[axis], &ot.shape[axis]);
        let (in_w, out_w) = match (ind.known(), outd.known()) {
            (Some(a), Some(b)) => (a, b),
            _ if ind == outd && (r.scales[axis] - 1.0).abs() < 1e-9 => continue,
            _ => {
                return Err(format!(
                    "resizing axis {axis}, a symbolic dim, is not compiled yet"
                ))
            }
        };
        if resize_is_identity(r, axis, rank, in_w, out_w) {
            continue;
        }
        let taps = resize_taps(r, axis, rank, in_w, out_w);
        let mut shape = cur.1.shape.clone();
        shape[axis] = Dim::Known(out_w);
        let nt = TensorType::new(cur.1.dtype, shape);
        let v = resize_axis(e, &cur, axis, &taps, r.extrapolation, &nt)?;
        cur = (v, nt);
    }
    Ok(cur.0)
}

fn resize_axis(
    e: &mut E,
    x: &(String, TensorType),
    axis: usize,
    taps: &[forgec_ir::interp::ResizeTap],
    extrapolation: f64,
    ot: &TensorType,
) -> R<String> {
    let (in_w, out_w, r) = (
        x.1.shape[axis].known().unwrap_or(1) as i64,
        taps.len(),
        ot.rank(),
    );
    let d = ot.dtype;
    let src = |t: &forgec_ir::interp::ResizeTap, k: usize| (t.start + k as i64).clamp(0, in_w - 1);
    // Every output position one source element: a copy.
    let pick: Option<Vec<i64>> = taps
        .iter()
        .map(|t| {
            let ones: Vec<usize> = (0..t.coeffs.len())
                .filter(|&k| t.coeffs[k] == 1.0)
                .collect();
            let rest_zero = t.coeffs.iter().all(|&c| c == 0.0 || c == 1.0);
            (!t.extrapolated && ones.len() == 1 && rest_zero).then(|| src(t, ones[0]))
        })
        .collect();
    let table = |e: &mut E, v: Tensor| -> String {
        let c = e.fresh();
        let ty = TensorType::new(
            v.dtype(),
            v.shape().iter().map(|&s| Dim::Known(s)).collect(),
        );
        e.line(&format!(
            "{c} = arith.constant dense<\"{}\"> : {}",
            super::dense_hex(&v),
            tensor_ty(&ty)
        ));
        c
    };
    let tab_t =
        |dt: DType, cols: usize| TensorType::new(dt, vec![Dim::Known(out_w), Dim::Known(cols)]);
    let (dv, dts) = (x.0.clone(), tensor_ty(&x.1));
    let init = e.empty(ot)?;
    let coords = |lines: &mut Vec<String>, j: &str| -> String {
        (0..r)
            .map(|dd| {
                if dd == axis {
                    j.to_string()
                } else {
                    push(lines, format!("linalg.index {dd} : index"))
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let ymap = |k: usize| map(r, &[format!("d{axis}"), k.to_string()]);
    if let Some(p) = pick {
        let t =
            Tensor::from_i64_values(DType::I32, vec![out_w, 1], &p).map_err(|m| m.to_string())?;
        let tv = table(e, t);
        let ins = [(tv, tab_t(DType::I32, 1))];
        return Ok(generic(
            e,
            &ins,
            &[ymap(0), map(r, &dvars(r))],
            &vec!["parallel"; r],
            init,
            ot,
            &mut |lines, a, _| {
                let j = push(lines, format!("arith.index_cast {} : i32 to index", a[0]));
                let at = coords(lines, &j);
                push(lines, format!("tensor.extract {dv}[{at}] : {dts}"))
            },
        ));
    }
    if !d.is_float() {
        return Err("resizing an integer tensor other than by copying is not compiled yet".into());
    }
    let wd = if d == DType::F64 {
        DType::F64
    } else {
        DType::F32
    };
    let nk = taps.iter().map(|t| t.coeffs.len()).max().unwrap_or(1);
    let (mut srcs, mut ws, mut adds) = (Vec::new(), Vec::new(), Vec::new());
    for t in taps {
        for k in 0..nk {
            let c = if t.extrapolated {
                0.0
            } else {
                t.coeffs.get(k).copied().unwrap_or(0.0)
            };
            srcs.push(if c == 0.0 { 0 } else { src(t, k) });
            ws.push(c);
        }
        adds.push(if t.extrapolated { extrapolation } else { 0.0 });
    }
    let st =
        Tensor::from_i64_values(DType::I32, vec![out_w, nk], &srcs).map_err(|m| m.to_string())?;
    let wt = Tensor::from_f64_values(wd, vec![out_w, nk], &ws).map_err(|m| m.to_string())?;
    let sv = table(e, st);
    let wv = table(e, wt);
    let mut ins = Vec::new();
    let mut maps = Vec::new();
    for k in 0..nk {
        ins.push((sv.clone(), tab_t(DType::I32, nk)));
        maps.push(ymap(k));
        ins.push((wv.clone(), tab_t(wd, nk)));
        maps.push(ymap(k));
    }
    let extrap = adds.iter().any(|&a| a != 0.0);
    if extrap {
        let at = Tensor::from_f64_values(wd, vec![out_w, 1], &adds).map_err(|m| m.to_string())?;
        ins.push((table(e, at), tab_t(wd, 1)));
        maps.push(ymap(0));
    }
    maps.push(map(r, &dvars(r)));
    let wts = elem(wd);
    Ok(generic(
        e,
        &ins,
        &maps,
        &vec!["parallel"; r],
        init,
        ot,
        &mut |lines, a, _| {
            let mut acc: Option<String> = None;
            for k in 0..nk {
                let j = push(
                    lines,
                    format!("arith.index_cast {} : i32 to index", a[2 * k]),
                );
                let at = coords(lines, &j);
                let xv = push(lines, format!("tensor.extract {dv}[{at}] : {dts}"));
                let xv = if d == wd {
                    xv
                } else {
                    cast_body(lines, &xv, d, wd)
                };
                acc = Some(match acc {
                    None => push(lines, format!("arith.mulf {xv}, {} : {wts}", a[2 * k + 1])),
                    Some(s) => super::mul_add(lines, &xv, &a[2 * k + 1], &s, wts),
                });
            }
            let mut v = acc.unwrap_or_default();
            if extrap {
                v = push(lines, format!("arith.addf {v}, {} : {wts}", a[2 * nk]));
            }
            if d == wd {
                v
            } else {
                cast_body(lines, &v, wd, d)
            }
        },
    ))
}
