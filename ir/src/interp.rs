//! The reference interpreter: runs any verified graph on the CPU in plain Rust. Correctness
//! over speed: floats are computed in f64 and rounded to the result's element type per op.
//! It is the oracle that passes and code generators are tested against.

use crate::graph::{Graph, ValueId};
use crate::infer::infer;
use crate::op::*;
pub use crate::ops::indexing::{resize_is_identity, resize_taps};
use crate::types::{Dim, TensorType};
use forgec_runtime::{DType, Tensor};
use std::collections::HashMap;
use std::fmt;

#[derive(Debug, Clone, PartialEq)]
pub struct InterpError(pub String);

impl fmt::Display for InterpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InterpError {}

type R<T> = Result<T, String>;

pub(crate) fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

pub(crate) fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

/// For each element of `out`, the index of the element of `inp` it reads under broadcasting.
pub(crate) fn bcast_map(out: &[usize], inp: &[usize]) -> Vec<usize> {
    let r = out.len();
    let off = r - inp.len();
    let ist = strides(inp);
    let mut st = vec![0usize; r];
    for i in 0..inp.len() {
        if inp[i] != 1 {
            st[off + i] = ist[i];
        }
    }
    let n = numel(out);
    let mut map = Vec::with_capacity(n);
    let mut idx = vec![0usize; r];
    let mut cur = 0usize;
    for _ in 0..n {
        map.push(cur);
        for d in (0..r).rev() {
            idx[d] += 1;
            cur += st[d];
            if idx[d] < out[d] {
                break;
            }
            cur -= st[d] * idx[d];
            idx[d] = 0;
        }
    }
    map
}

pub(crate) fn transpose_vec<T: Copy>(
    v: &[T],
    shape: &[usize],
    perm: &[usize],
) -> (Vec<T>, Vec<usize>) {
    let out_shape: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
    let ist = strides(shape);
    let pst: Vec<usize> = perm.iter().map(|&p| ist[p]).collect();
    let n = v.len();
    let r = shape.len();
    let mut out = Vec::with_capacity(n);
    let mut idx = vec![0usize; r];
    let mut cur = 0usize;
    for _ in 0..n {
        out.push(v[cur]);
        for d in (0..r).rev() {
            idx[d] += 1;
            cur += pst[d];
            if idx[d] < out_shape[d] {
                break;
            }
            cur -= pst[d] * idx[d];
            idx[d] = 0;
        }
    }
    (out, out_shape)
}

/// Rounds `x` to the nearest value of a half-precision `dtype` (through f32, as half kernels do).
pub(crate) fn round_half(dtype: DType, x: f64) -> f64 {
    match dtype {
        DType::F16 => half::f16::from_f32(x as f32).to_f64(),
        _ => half::bf16::from_f32(x as f32).to_f64(),
    }
}

pub(crate) fn float_t(dtype: DType, shape: Vec<usize>, v: &[f64]) -> R<Tensor> {
    Tensor::from_f64_values(dtype, shape, v).map_err(|e| e.0)
}

pub(crate) fn int_t(dtype: DType, shape: Vec<usize>, v: &[i64]) -> R<Tensor> {
    Tensor::from_i64_values(dtype, shape, v).map_err(|e| e.0)
}

/// Checks named inputs against the graph's inputs (missing, unknown, dtype, shape, consistent
/// symbols, every problem at once); returns them in graph order and the symbols' sizes.
pub fn check_inputs<'a>(
    g: &Graph,
    inputs: &'a [(String, Tensor)],
) -> Result<(Vec<&'a Tensor>, HashMap<String, usize>), InterpError> {
    let mut syms: HashMap<String, usize> = HashMap::new();
    let mut problems = Vec::new();
    let mut ordered = Vec::new();
    for &id in &g.inputs {
        let v = g.value(id);
        let Some((_, t)) = inputs.iter().find(|(n, _)| *n == v.name) else {
            problems.push(format!("input `{}` ({}) was not given", v.name, v.ty));
            continue;
        };
        match check_input(&v.name, &v.ty, t, &mut syms) {
            Ok(()) => ordered.push(t),
            Err(e) => problems.push(e),
        }
    }
    for (n, _) in inputs {
        if !g.inputs.iter().any(|&i| g.value(i).name == *n) {
            let names: Vec<&str> = g.inputs.iter().map(|&i| g.value(i).name.as_str()).collect();
            problems.push(format!(
                "the model has no input `{n}` (its inputs: {})",
                names.join(", ")
            ));
        }
    }
    if problems.is_empty() {
        Ok((ordered, syms))
    } else {
        Err(InterpError(problems.join("\n")))
    }
}

/// Runs `g` on named inputs; returns the outputs in graph order.
pub fn run(g: &Graph, inputs: &[(String, Tensor)]) -> Result<Vec<Tensor>, InterpError> {
    let outs = run_watched(g, inputs, &mut |_, _| true)?;
    Ok(outs.expect("a run nothing stops"))
}

/// `run`, showing `watch` each node with its results as they are computed; a `watch` that
/// returns false stops the run there (the result is then None). What `forgec train` finds the
/// first value that stopped being finite with.
pub fn run_watched(
    g: &Graph,
    inputs: &[(String, Tensor)],
    watch: &mut dyn FnMut(&crate::graph::Node, &[Tensor]) -> bool,
) -> Result<Option<Vec<Tensor>>, InterpError> {
    let (ordered, syms) = check_inputs(g, inputs)?;
    let mut env: HashMap<ValueId, Tensor> = g
        .inputs
        .iter()
        .copied()
        .zip(ordered.into_iter().cloned())
        .collect();
    for node in &g.nodes {
        let ins: Vec<&Tensor> = node.inputs.iter().map(|i| &env[i]).collect();
        let where_ = || format!("{} ({})", node.origin, node.op.name());
        let bound;
        let op = if node.op.has_symbolic_attrs() {
            bound = node
                .op
                .bind_symbols(&syms)
                .map_err(|e| InterpError(format!("{}: {e}", where_())))?;
            &bound
        } else {
            &node.op
        };
        let outs = eval_op(op, &ins).map_err(|e| InterpError(format!("{}: {e}", where_())))?;
        if !watch(node, &outs) {
            return Ok(None);
        }
        for (id, t) in node.outputs.iter().zip(outs) {
            env.insert(*id, t);
        }
    }
    Ok(Some(g.outputs.iter().map(|o| env[o].clone()).collect()))
}

/// Checks an input tensor against its declared type, binding symbolic dims.
pub fn check_input(
    name: &str,
    ty: &TensorType,
    t: &Tensor,
    syms: &mut HashMap<String, usize>,
) -> Result<(), String> {
    if t.dtype() != ty.dtype {
        return Err(format!(
            "input `{name}` expects {} ({}) but the data is {}: convert it, e.g. x.astype('{}')",
            ty.dtype.numpy_name(),
            ty.dtype,
            t.dtype().numpy_name(),
            ty.dtype.numpy_name()
        ));
    }
    let want = crate::types::keras_shape(&ty.shape);
    let got = format!("{:?}", t.shape());
    if t.shape().len() != ty.rank() {
        return Err(format!(
            "input `{name}` expects shape {want} (rank {}) but the data has shape {got} (rank {})",
            ty.rank(),
            t.shape().len()
        ));
    }
    for (i, (d, &n)) in ty.shape.iter().zip(t.shape()).enumerate() {
        match d {
            Dim::Known(k) if *k != n => {
                return Err(format!(
                    "input `{name}` expects shape {want} but the data has shape {got}: dim {i} is {n}, not {k}"
                ))
            }
            Dim::Sym(s) => {
                if let Some(&prev) = syms.get(s) {
                    if prev != n {
                        return Err(format!(
                            "input `{name}`: dim {i} (`{s}`) is {n}, but another input set `{s}` to {prev}"
                        ));
                    }
                } else {
                    syms.insert(s.clone(), n);
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// Evaluates one op on concrete tensors (symbolic attributes must be bound first). Used by
/// `run`, and by importers to fold constants.
pub fn eval_op(op: &Op, ins: &[&Tensor]) -> R<Vec<Tensor>> {
    if op.has_symbolic_attrs() {
        return Err(format!("{} has unbound symbolic dims", op.name()));
    }
    let types: Vec<TensorType> = ins
        .iter()
        .map(|t| TensorType::known(t.dtype(), t.shape()))
        .collect();
    let out_ty = infer(op, &types)?;
    let ot = &out_ty[0];
    let oshape = ot
        .known_shape()
        .expect("concrete inputs give concrete outputs");
    // The interpreter works in f64: refuse results it cannot hold instead of aborting.
    const MAX_ELEMS: usize = 1 << 31;
    for t in &out_ty {
        let shape = t.known_shape().expect("concrete");
        let n = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
        if n.is_none_or(|n| n > MAX_ELEMS) {
            return Err(format!(
                "the result would have shape {shape:?}, over 2^31 elements: too large for the reference interpreter"
            ));
        }
    }
    let one = |t: Tensor| Ok(vec![t]);
    match op {
        Op::Const { value, .. } => one(value.clone()),
        _ => crate::ops::eval(op, ins, &out_ty, oshape),
    }
}

/// What one output position of a resized axis reads: `coeffs[k]` times the source element
/// `start + k` (clamped into the axis), or `extrapolated` (the attribute's value instead).
#[derive(Clone, Debug, PartialEq)]
pub struct ResizeTap {
    pub start: i64,
    pub coeffs: Vec<f64>,
    pub extrapolated: bool,
}

/// Iterates the multi-indices of `shape` in row-major order.
pub(crate) fn index_iter(shape: &[usize]) -> impl Iterator<Item = Vec<usize>> + '_ {
    let n = numel(shape);
    let mut idx = vec![0usize; shape.len()];
    (0..n).map(move |k| {
        if k > 0 {
            for d in (0..shape.len()).rev() {
                idx[d] += 1;
                if idx[d] < shape[d] {
                    break;
                }
                idx[d] = 0;
            }
        }
        idx.clone()
    })
}

/// ReLU as TensorFlow (Eigen's max) and ONNX's reference compute it: a NaN stays NaN (a NaN
/// loss must not be hidden), -0 stays -0.
pub(crate) fn relu(x: f64) -> f64 {
    if x < 0.0 {
        0.0
    } else {
        x
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcast_map_matches_numpy() {
        assert_eq!(bcast_map(&[2, 3], &[3]), vec![0, 1, 2, 0, 1, 2]);
        assert_eq!(bcast_map(&[2, 3], &[2, 1]), vec![0, 0, 0, 1, 1, 1]);
    }
}
