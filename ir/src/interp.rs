//! The reference interpreter: runs any verified graph on the CPU in plain Rust. Correctness
//! over speed: floats are computed in f64 and rounded to the result's element type per op.
//! It is the oracle that passes and code generators are tested against.

use crate::graph::{Graph, ValueId};
use crate::infer::{infer, slice_range};
use crate::op::*;
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

fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

/// For each element of `out`, the index of the element of `inp` it reads under broadcasting.
fn bcast_map(out: &[usize], inp: &[usize]) -> Vec<usize> {
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

fn transpose_vec<T: Copy>(v: &[T], shape: &[usize], perm: &[usize]) -> (Vec<T>, Vec<usize>) {
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
fn round_half(dtype: DType, x: f64) -> f64 {
    match dtype {
        DType::F16 => half::f16::from_f32(x as f32).to_f64(),
        _ => half::bf16::from_f32(x as f32).to_f64(),
    }
}

/// One Softmax/LogSoftmax row in a half-precision type, rounding after every step as ONNX's
/// reference (NumPy in the storage type) does: `x - max`, `exp`, the sum (f16 sums in f32 and
/// rounds once, as NumPy's f16 reduction does; bf16 rounds every partial sum), the division and
/// the logarithm. Computing the row in f64 and rounding once differs by one unit in the last place
/// on about one element in ten.
fn out_half_softmax(
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

fn float_t(dtype: DType, shape: Vec<usize>, v: &[f64]) -> R<Tensor> {
    Tensor::from_f64_values(dtype, shape, v).map_err(|e| e.0)
}

fn int_t(dtype: DType, shape: Vec<usize>, v: &[i64]) -> R<Tensor> {
    Tensor::from_i64_values(dtype, shape, v).map_err(|e| e.0)
}

fn erf(x: f64) -> f64 {
    // Abramowitz-Stegun 7.1.26 is too coarse for an oracle; use the series / continued
    // fraction pair, accurate to ~1e-15.
    if x.abs() < 2.5 {
        let mut sum = x;
        let mut term = x;
        let x2 = x * x;
        for n in 1..200 {
            term *= -x2 / n as f64;
            let add = term / (2 * n + 1) as f64;
            sum += add;
            if add.abs() < 1e-17 * sum.abs() {
                break;
            }
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    } else {
        // erfc continued fraction (Lentz).
        let ax = x.abs();
        let mut f = ax;
        let tiny = 1e-300;
        let mut c = f;
        let mut d = 0.0;
        for k in 1..300 {
            let a = k as f64 / 2.0;
            d = ax + a * d;
            d = if d.abs() < tiny { tiny } else { d };
            c = ax + a / c;
            c = if c.abs() < tiny { tiny } else { c };
            d = 1.0 / d;
            let delta = c * d;
            f *= delta;
            if (delta - 1.0).abs() < 1e-16 {
                break;
            }
        }
        let erfc = (-ax * ax).exp() / (f * std::f64::consts::PI.sqrt());
        (1.0 - erfc).copysign(x)
    }
}

fn unary_f(u: UnaryOp, x: f64) -> f64 {
    match u {
        UnaryOp::Neg => -x,
        UnaryOp::Abs => x.abs(),
        UnaryOp::Exp => x.exp(),
        UnaryOp::Log => x.ln(),
        UnaryOp::Sqrt => x.sqrt(),
        UnaryOp::Rsqrt => 1.0 / x.sqrt(),
        UnaryOp::Reciprocal => 1.0 / x,
        UnaryOp::Tanh => x.tanh(),
        UnaryOp::Sigmoid => {
            if x >= 0.0 {
                1.0 / (1.0 + (-x).exp())
            } else {
                let e = x.exp();
                e / (1.0 + e)
            }
        }
        UnaryOp::Relu => relu(x),
        UnaryOp::Softplus => x.max(0.0) + (-x.abs()).exp().ln_1p(),
        UnaryOp::Erf => erf(x),
        UnaryOp::Sin => x.sin(),
        UnaryOp::Cos => x.cos(),
        UnaryOp::Floor => x.floor(),
        UnaryOp::Ceil => x.ceil(),
        UnaryOp::Round => x.round_ties_even(),
        UnaryOp::Sign => {
            if x > 0.0 {
                1.0
            } else if x < 0.0 {
                -1.0
            } else {
                x
            }
        }
        UnaryOp::Not => (x == 0.0) as i64 as f64,
        UnaryOp::Atan => x.atan(),
        UnaryOp::BitNot => f64::NAN,
    }
}

fn activation(a: Activation, x: f64) -> f64 {
    match a {
        Activation::Linear => x,
        Activation::Tanh => x.tanh(),
        Activation::Sigmoid => unary_f(UnaryOp::Sigmoid, x),
        Activation::Relu => relu(x),
        // Keras 3: relu6(x + 3) / 6.
        Activation::HardSigmoid => ((x + 3.0).clamp(0.0, 6.0)) / 6.0,
    }
}

fn binary_f(b: BinaryOp, x: f64, y: f64) -> f64 {
    let t = |c: bool| c as i64 as f64;
    match b {
        BinaryOp::Add => x + y,
        BinaryOp::Sub => x - y,
        BinaryOp::Mul => x * y,
        BinaryOp::Div => x / y,
        BinaryOp::Pow => x.powf(y),
        BinaryOp::Max => {
            if x.is_nan() || y.is_nan() {
                f64::NAN
            } else {
                x.max(y)
            }
        }
        BinaryOp::Min => {
            if x.is_nan() || y.is_nan() {
                f64::NAN
            } else {
                x.min(y)
            }
        }
        BinaryOp::Eq => t(x == y),
        BinaryOp::Ne => t(x != y),
        BinaryOp::Lt => t(x < y),
        BinaryOp::Le => t(x <= y),
        BinaryOp::Gt => t(x > y),
        BinaryOp::Ge => t(x >= y),
        BinaryOp::And => t(x != 0.0 && y != 0.0),
        BinaryOp::Or => t(x != 0.0 || y != 0.0),
        // Python's %: the sign of the divisor.
        BinaryOp::Mod => {
            let r = x % y;
            if r != 0.0 && (r < 0.0) != (y < 0.0) {
                r + y
            } else {
                r
            }
        }
        BinaryOp::Rem => x % y,
        // Integer-only: the type rules keep floats away.
        BinaryOp::BitAnd | BinaryOp::BitOr | BinaryOp::BitXor | BinaryOp::Shl | BinaryOp::Shr => {
            f64::NAN
        }
    }
}

fn binary_i(b: BinaryOp, x: i64, y: i64) -> R<i64> {
    Ok(match b {
        BinaryOp::Add => x.wrapping_add(y),
        BinaryOp::Sub => x.wrapping_sub(y),
        BinaryOp::Mul => x.wrapping_mul(y),
        BinaryOp::Div => {
            if y == 0 {
                return Err("integer division by zero".into());
            }
            x.wrapping_div(y)
        }
        BinaryOp::Pow => {
            if y < 0 {
                0
            } else {
                x.wrapping_pow(y.min(u32::MAX as i64) as u32)
            }
        }
        BinaryOp::Max => x.max(y),
        BinaryOp::Min => x.min(y),
        BinaryOp::Eq => (x == y) as i64,
        BinaryOp::Ne => (x != y) as i64,
        BinaryOp::Lt => (x < y) as i64,
        BinaryOp::Le => (x <= y) as i64,
        BinaryOp::Gt => (x > y) as i64,
        BinaryOp::Ge => (x >= y) as i64,
        BinaryOp::And => (x != 0 && y != 0) as i64,
        BinaryOp::Or => (x != 0 || y != 0) as i64,
        BinaryOp::BitAnd => x & y,
        BinaryOp::BitOr => x | y,
        BinaryOp::BitXor => x ^ y,
        // Shifts of non-negative values (unsigned data is widened on import).
        BinaryOp::Shl => {
            if (0..64).contains(&y) {
                x.wrapping_shl(y as u32)
            } else {
                0
            }
        }
        // Arithmetic: out-of-range amounts fill with the sign.
        BinaryOp::Shr => {
            if (0..64).contains(&y) {
                x >> y
            } else {
                x >> 63
            }
        }
        BinaryOp::Mod | BinaryOp::Rem => {
            if y == 0 {
                return Err("integer modulo by zero".into());
            }
            let r = x.wrapping_rem(y);
            if b == BinaryOp::Mod && r != 0 && (r < 0) != (y < 0) {
                r + y
            } else {
                r
            }
        }
    })
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
        for (id, t) in node.outputs.iter().zip(outs) {
            env.insert(*id, t);
        }
    }
    Ok(g.outputs.iter().map(|o| env[o].clone()).collect())
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
        Op::Unary(u) => {
            let x = ins[0];
            if x.dtype().is_float() {
                let v: Vec<f64> = x.to_f64_vec().into_iter().map(|a| unary_f(*u, a)).collect();
                one(float_t(ot.dtype, oshape, &v)?)
            } else {
                let v: Vec<i64> = x
                    .to_i64_vec()
                    .into_iter()
                    .map(|a| match u {
                        UnaryOp::Neg => a.wrapping_neg(),
                        UnaryOp::Abs => a.wrapping_abs(),
                        UnaryOp::Sign => a.signum(),
                        UnaryOp::Relu => a.max(0),
                        UnaryOp::Not => (a == 0) as i64,
                        UnaryOp::BitNot => !a,
                        _ => a,
                    })
                    .collect();
                one(int_t(ot.dtype, oshape, &v)?)
            }
        }
        Op::Binary(b) => {
            let (x, y) = (ins[0], ins[1]);
            let mx = bcast_map(&oshape, x.shape());
            let my = bcast_map(&oshape, y.shape());
            if x.dtype().is_float() {
                let (a, c) = (x.to_f64_vec(), y.to_f64_vec());
                let v: Vec<f64> = mx
                    .iter()
                    .zip(&my)
                    .map(|(&i, &j)| binary_f(*b, a[i], c[j]))
                    .collect();
                one(float_t(ot.dtype, oshape, &v)?)
            } else {
                let (a, c) = (x.to_i64_vec(), y.to_i64_vec());
                let v: Vec<i64> = mx
                    .iter()
                    .zip(&my)
                    .map(|(&i, &j)| binary_i(*b, a[i], c[j]))
                    .collect::<R<_>>()?;
                one(int_t(ot.dtype, oshape, &v)?)
            }
        }
        Op::Select => {
            let c = ins[0].to_i64_vec();
            let mc = bcast_map(&oshape, ins[0].shape());
            let ma = bcast_map(&oshape, ins[1].shape());
            let mb = bcast_map(&oshape, ins[2].shape());
            if ot.dtype.is_float() {
                let (a, b) = (ins[1].to_f64_vec(), ins[2].to_f64_vec());
                let v: Vec<f64> = (0..mc.len())
                    .map(|k| if c[mc[k]] != 0 { a[ma[k]] } else { b[mb[k]] })
                    .collect();
                one(float_t(ot.dtype, oshape, &v)?)
            } else {
                let (a, b) = (ins[1].to_i64_vec(), ins[2].to_i64_vec());
                let v: Vec<i64> = (0..mc.len())
                    .map(|k| if c[mc[k]] != 0 { a[ma[k]] } else { b[mb[k]] })
                    .collect();
                one(int_t(ot.dtype, oshape, &v)?)
            }
        }
        Op::Cast { to } => one(ins[0].cast(*to)),
        Op::MatMul => one(matmul(ins[0], ins[1], ot.dtype, &oshape)?),
        Op::Conv(c) => one(conv(c, ins[0], ins[1], ot.dtype, &oshape)?),
        Op::ConvTranspose(c) => one(conv_transpose(c, ins[0], ins[1], ot.dtype, &oshape)?),
        Op::Pool(p) => one(pool(p, ins[0], ot.dtype, &oshape)?),
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
        Op::Reshape { .. } | Op::Dropout { .. } => {
            one(ins[0].clone().reshaped(oshape).map_err(|e| e.0)?)
        }
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
        Op::Broadcast { .. } => {
            let map = bcast_map(&oshape, ins[0].shape());
            one(gather_elems(ins[0], &map, ot.dtype, oshape)?)
        }
        Op::BatchNorm { axis, epsilon } => {
            let x = ins[0];
            let v = x.to_f64_vec();
            let p: Vec<Vec<f64>> = ins[1..].iter().map(|t| t.to_f64_vec()).collect();
            let (gamma, beta, mean, var) = (&p[0], &p[1], &p[2], &p[3]);
            let shape = x.shape();
            let inner = numel(&shape[axis + 1..]);
            let c = shape[*axis];
            let out: Vec<f64> = v
                .iter()
                .enumerate()
                .map(|(k, &a)| {
                    let ch = (k / inner) % c;
                    (a - mean[ch]) / (var[ch] + epsilon).sqrt() * gamma[ch] + beta[ch]
                })
                .collect();
            one(float_t(ot.dtype, oshape, &out)?)
        }
        Op::LayerNorm { axes, epsilon } => one(layer_norm(ins, axes, *epsilon, ot.dtype, oshape)?),
        Op::Rnn(r) => one(rnn(r, ins, ot.dtype, oshape)?),
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
    }
}

/// Concatenation: for each of `outer` rows, `widths[k]` elements of each part in turn.
fn interleave<T: Copy>(parts: &[Vec<T>], widths: &[usize], outer: usize) -> Vec<T> {
    let mut out = Vec::with_capacity(parts.iter().map(Vec::len).sum());
    for o in 0..outer {
        for (p, &w) in parts.iter().zip(widths) {
            out.extend_from_slice(&p[o * w..(o + 1) * w]);
        }
    }
    out
}

/// The weights of the neighbours of a source coordinate whose fractional part is `ratio`.
fn resize_coeffs(r: &ResizeAttrs, ratio: f64, scale: f64) -> Vec<f64> {
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
fn resize_roi(r: &ResizeAttrs, axis: usize, rank: usize) -> Option<(f64, f64)> {
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

/// What one output position of a resized axis reads: `coeffs[k]` times the source element
/// `start + k` (clamped into the axis), or `extrapolated` (the attribute's value instead).
#[derive(Clone, Debug, PartialEq)]
pub struct ResizeTap {
    pub start: i64,
    pub coeffs: Vec<f64>,
    pub extrapolated: bool,
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
fn resize_axis(
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
fn axis_offsets(xshape: &[usize], idx: &Tensor, axis: usize) -> R<Vec<usize>> {
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

fn norm_index(i: i64, n: i64) -> R<usize> {
    let j = if i < 0 { i + n } else { i };
    if (0..n).contains(&j) {
        Ok(j as usize)
    } else {
        Err(format!("index {i} is out of range for a dim of size {n}"))
    }
}

/// For ND indexing: each index tuple's (tuple number, element offset into data), and the
/// number of elements in the slice each tuple addresses.
fn nd_offsets(shape: &[usize], idx: &Tensor, batch_dims: usize) -> R<(Vec<(usize, usize)>, usize)> {
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
fn scatter(
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

/// Iterates the multi-indices of `shape` in row-major order.
fn index_iter(shape: &[usize]) -> impl Iterator<Item = Vec<usize>> + '_ {
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

fn gather_elems(x: &Tensor, map: &[usize], dtype: DType, shape: Vec<usize>) -> R<Tensor> {
    if dtype.is_float() {
        let v = x.to_f64_vec();
        float_t(dtype, shape, &map.iter().map(|&m| v[m]).collect::<Vec<_>>())
    } else {
        let v = x.to_i64_vec();
        int_t(dtype, shape, &map.iter().map(|&m| v[m]).collect::<Vec<_>>())
    }
}

fn matmul(a: &Tensor, b: &Tensor, dtype: DType, oshape: &[usize]) -> R<Tensor> {
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
fn to_ncx(x: &Tensor, layout: Layout) -> (Vec<f64>, Vec<usize>) {
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

fn from_ncx(v: Vec<f64>, shape: &[usize], layout: Layout, dtype: DType) -> R<Tensor> {
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
fn kernel_abk(w: &Tensor, layout: Layout, transpose: bool) -> (Vec<f64>, Vec<usize>) {
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

fn conv(c: &ConvAttrs, x: &Tensor, w: &Tensor, dtype: DType, oshape: &[usize]) -> R<Tensor> {
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

fn conv_transpose(
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

fn pool(p: &PoolAttrs, x: &Tensor, dtype: DType, oshape: &[usize]) -> R<Tensor> {
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

fn reduce(
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

fn layer_norm(
    ins: &[&Tensor],
    axes: &[usize],
    eps: f64,
    dtype: DType,
    oshape: Vec<usize>,
) -> R<Tensor> {
    let x = ins[0];
    let shape = x.shape();
    let r = shape.len();
    // Move the normalized axes last, normalize rows, move back.
    let mut perm: Vec<usize> = (0..r).filter(|a| !axes.contains(a)).collect();
    perm.extend(axes.iter().copied());
    let (v, ps) = transpose_vec(&x.to_f64_vec(), shape, &perm);
    let row = numel(&ps[r - axes.len()..]);
    // gamma/beta are laid out in `axes` order, which matches the moved axes.
    let gamma = ins[1].to_f64_vec();
    let beta = ins[2].to_f64_vec();
    let mut out = vec![0.0; v.len()];
    for (o, chunk) in out.chunks_mut(row.max(1)).zip(v.chunks(row.max(1))) {
        let mean = chunk.iter().sum::<f64>() / row as f64;
        let var = chunk.iter().map(|a| (a - mean) * (a - mean)).sum::<f64>() / row as f64;
        let inv = 1.0 / (var + eps).sqrt();
        for k in 0..chunk.len() {
            o[k] = (chunk[k] - mean) * inv * gamma[k] + beta[k];
        }
    }
    let mut inv_perm = vec![0; r];
    for (i, &p) in perm.iter().enumerate() {
        inv_perm[p] = i;
    }
    let (back, _) = transpose_vec(&out, &ps, &inv_perm);
    float_t(dtype, oshape, &back)
}

fn rnn(r: &RnnAttrs, ins: &[&Tensor], dtype: DType, oshape: Vec<usize>) -> R<Tensor> {
    let x = ins[0].to_f64_vec();
    let k = ins[1].to_f64_vec();
    let rk = ins[2].to_f64_vec();
    let bias = ins[3].to_f64_vec();
    let (b, t, f) = (ins[0].shape()[0], ins[0].shape()[1], ins[0].shape()[2]);
    let u = r.units;
    let gu = r.cell.gates() * u;
    let act = |v: f64| activation(r.activation, v);
    let ract = |v: f64| activation(r.recurrent_activation, v);
    let mut out = Vec::with_capacity(numel(&oshape));
    let mut seq = vec![0.0; b * t * u];
    for bi in 0..b {
        let mut h = vec![0.0f64; u];
        let mut c = vec![0.0f64; u];
        for step in 0..t {
            let ts = if r.go_backwards { t - 1 - step } else { step };
            let xt = &x[(bi * t + ts) * f..(bi * t + ts + 1) * f];
            // xw = x W (+ input bias); hu = h U (+ recurrent bias for GRU reset_after).
            let mut xw = vec![0.0; gu];
            for (i, &xv) in xt.iter().enumerate() {
                for j in 0..gu {
                    xw[j] += xv * k[i * gu + j];
                }
            }
            let mut hu = vec![0.0; gu];
            for (i, &hv) in h.iter().enumerate() {
                for j in 0..gu {
                    hu[j] += hv * rk[i * gu + j];
                }
            }
            let (bi_in, bi_rec): (&[f64], Option<&[f64]>) =
                if r.cell == RnnCell::Gru && r.reset_after {
                    (&bias[..gu], Some(&bias[gu..]))
                } else {
                    (&bias[..], None)
                };
            for j in 0..gu {
                xw[j] += bi_in[j];
            }
            match r.cell {
                RnnCell::Simple => {
                    for j in 0..u {
                        h[j] = act(xw[j] + hu[j]);
                    }
                }
                RnnCell::Lstm => {
                    for j in 0..u {
                        let i = ract(xw[j] + hu[j]);
                        let fg = ract(xw[u + j] + hu[u + j]);
                        let cc = act(xw[2 * u + j] + hu[2 * u + j]);
                        let o = ract(xw[3 * u + j] + hu[3 * u + j]);
                        c[j] = fg * c[j] + i * cc;
                        h[j] = o * act(c[j]);
                    }
                }
                RnnCell::Gru => {
                    let mut newh = vec![0.0; u];
                    if let Some(rb) = bi_rec {
                        for j in 0..gu {
                            hu[j] += rb[j];
                        }
                        for j in 0..u {
                            let z = ract(xw[j] + hu[j]);
                            let rr = ract(xw[u + j] + hu[u + j]);
                            let hh = act(xw[2 * u + j] + rr * hu[2 * u + j]);
                            newh[j] = z * h[j] + (1.0 - z) * hh;
                        }
                    } else {
                        let mut z = vec![0.0; u];
                        let mut rh = vec![0.0; u];
                        for j in 0..u {
                            z[j] = ract(xw[j] + hu[j]);
                            rh[j] = ract(xw[u + j] + hu[u + j]) * h[j];
                        }
                        for j in 0..u {
                            let mut acc = xw[2 * u + j];
                            for (i, &rv) in rh.iter().enumerate() {
                                acc += rv * rk[i * gu + 2 * u + j];
                            }
                            newh[j] = z[j] * h[j] + (1.0 - z[j]) * act(acc);
                        }
                    }
                    h = newh;
                }
            }
            // Keras keeps the outputs in processing order, also when going backwards.
            seq[(bi * t + step) * u..(bi * t + step + 1) * u].copy_from_slice(&h);
        }
        if !r.return_sequences {
            out.extend_from_slice(&h);
        }
    }
    if r.return_sequences {
        out = seq;
    }
    float_t(dtype, oshape, &out)
}

/// ReLU as TensorFlow (Eigen's max) and ONNX's reference compute it: a NaN stays NaN (a NaN
/// loss must not be hidden), -0 stays -0.
fn relu(x: f64) -> f64 {
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
    fn erf_is_accurate() {
        // Reference values from a high-precision table.
        for (x, want) in [
            (0.5, 0.5204998778130465),
            (1.0, 0.8427007929497149),
            (3.0, 0.9999779095030014),
            (-2.0, -0.9953222650189527),
        ] {
            assert!((erf(x) - want).abs() < 1e-14, "erf({x}) = {}", erf(x));
        }
    }

    #[test]
    fn broadcast_map_matches_numpy() {
        assert_eq!(bcast_map(&[2, 3], &[3]), vec![0, 1, 2, 0, 1, 2]);
        assert_eq!(bcast_map(&[2, 3], &[2, 1]), vec![0, 0, 0, 1, 1, 1]);
    }
}
