//! IR → MLIR text: linalg on tensors, `arith`/`math` in the bodies. The entry point takes one
//! memref per graph input and per graph output (destination-passing style): inputs become
//! tensors with `bufferization.to_tensor`, results are written with
//! `bufferization.materialize_in_destination`. Symbolic dims (the batch) are dynamic (`?`) and
//! read from the first input that carries them.

use forgec_ir::{
    Activation, BinaryOp, ConvAttrs, DType, Dim, Graph, Layout, Node, Op, PadMode, PoolKind,
    ReduceKind, Tensor, TensorType, UnaryOp, ValueId,
};
use forgec_runtime::Data;
use std::collections::{HashMap, HashSet};
use std::fmt::Write;

mod indexing;
mod winograd;

type R<T> = Result<T, String>;

fn elem(d: DType) -> &'static str {
    match d {
        DType::F32 => "f32",
        DType::F64 => "f64",
        DType::F16 => "f16",
        DType::BF16 => "bf16",
        DType::I8 => "i8",
        DType::I32 => "i32",
        DType::I64 => "i64",
        DType::Bool => "i1",
    }
}

fn dims_str(shape: &[Dim]) -> String {
    shape
        .iter()
        .map(|d| match d {
            Dim::Known(n) => format!("{n}x"),
            Dim::Sym(_) => "?x".to_string(),
        })
        .collect()
}

pub fn tensor_ty(t: &TensorType) -> String {
    format!("tensor<{}{}>", dims_str(&t.shape), elem(t.dtype))
}

pub fn memref_ty(t: &TensorType) -> String {
    format!("memref<{}{}>", dims_str(&t.shape), elem(t.dtype))
}

/// Hex literal of a constant's bytes (little-endian), for `dense<"0x...">`.
fn dense_hex(t: &Tensor) -> String {
    let mut s = String::with_capacity(2 + t.size_bytes() * 2);
    s.push_str("0x");
    // MLIR reads i1 data bit-packed (element i at bit i % 8 of byte i / 8), one byte for one
    // element.
    let bytes = match t.data() {
        Data::Bool(v) if v.len() > 1 => {
            let mut b = vec![0u8; v.len().div_ceil(8)];
            for (i, &x) in v.iter().enumerate() {
                b[i / 8] |= (x as u8) << (i % 8);
            }
            b
        }
        _ => raw_bytes(t),
    };
    for x in bytes {
        let _ = write!(s, "{x:02X}");
    }
    s
}

/// A constant's bytes as the compiled code reads them (little-endian, bools one byte).
fn raw_bytes(t: &Tensor) -> Vec<u8> {
    let mut s = Vec::with_capacity(t.size_bytes());
    let mut push = |b: &[u8]| s.extend_from_slice(b);
    match t.data() {
        Data::F32(v) => v.iter().for_each(|x| push(&x.to_le_bytes())),
        Data::F64(v) => v.iter().for_each(|x| push(&x.to_le_bytes())),
        Data::F16(v) | Data::BF16(v) => v.iter().for_each(|x| push(&x.to_le_bytes())),
        Data::I8(v) => v.iter().for_each(|x| push(&x.to_le_bytes())),
        Data::I32(v) => v.iter().for_each(|x| push(&x.to_le_bytes())),
        Data::I64(v) => v.iter().for_each(|x| push(&x.to_le_bytes())),
        Data::Bool(v) => v.iter().for_each(|x| push(&[*x as u8])),
    }
    s
}

/// A large constant, kept out of the MLIR: the entry function takes it as an argument, and the
/// C wrapper passes it from the weights blob (embedded by the assembler, or the mapped
/// `NAME.weights` with `--weights external`).
#[derive(Clone, Debug)]
pub struct ExternalWeight {
    /// Its dims as the code reads them (packed weights have their panel layout).
    pub dims: Vec<usize>,
    pub bytes: Vec<u8>,
}

/// Constants of at least this many bytes are passed as weights (see `ExternalWeight`).
const EXTERNAL_MIN_BYTES: usize = 1024;

struct E<'g> {
    g: &'g Graph,
    body: String,
    /// The function's index constants (`idx`), which go before its body: one made first
    /// inside a loop is then still in scope after it.
    prelude: String,
    names: HashMap<ValueId, String>,
    n: usize,
    /// Symbol -> SSA `index` value holding its size.
    syms: HashMap<String, String>,
    consts: HashMap<i64, String>,
    /// f32 lanes of the target's vector registers (4: SSE / NEON, 8: AVX2, 16: AVX-512).
    simd: usize,
    /// Constant weights stored in the layout their kernel reads (see `Pack`).
    packed: HashMap<ValueId, Pack>,
    /// Elementwise ops the current kernel applies before it stores its results.
    epilogue: Vec<Epi>,
    /// Constants passed to the entry function (`%w{index}`).
    external: HashMap<ValueId, usize>,
    /// Kernels run on the calling thread alone (a recurrent layer's steps: too little work
    /// each to hand out).
    serial: bool,
    /// The caller's output buffer (an argument of this op's function) for the op's result: the
    /// first `empty` of its type is it, so that the kernel writes the model's output in place
    /// rather than into a buffer copied afterwards.
    dest: Option<(String, TensorType)>,
}

/// An elementwise op fused into a matmul kernel's stores: `acc <op> c` (`c <op> acc` when
/// `flip`), `c` the function argument `%e{arg}`, a constant that is one scalar or one value per
/// output column (`per_col`); or a ReLU.
#[derive(Clone, Debug)]
enum Epi {
    Bin {
        op: BinaryOp,
        arg: usize,
        ty: TensorType,
        per_col: bool,
        flip: bool,
    },
    Relu,
}

impl Epi {
    /// What this op combines with the accumulator for the vector of output columns starting at
    /// `col`: a read of its per-column constant (under `mask`, the last columns), its scalar
    /// broadcast, or `zero` for a ReLU.
    fn operand(
        &self,
        e: &mut E,
        col: &str,
        vt: &str,
        zero: &str,
        pad: &str,
        mask: Option<&str>,
    ) -> String {
        let Epi::Bin {
            arg, ty, per_col, ..
        } = self
        else {
            return zero.to_string();
        };
        let (v, t, r) = (e.fresh(), tensor_ty(ty), ty.rank());
        let c0 = e.idx(0);
        let mut ix = vec![c0; r];
        if *per_col {
            ix[r - 1] = col.to_string();
            e.line(&format!(
                "{v} = vector.transfer_read %e{arg}[{}], {pad}{} : {t}, {vt}",
                ix.join(", "),
                transfer_tail(mask)
            ));
        } else {
            let s = e.fresh();
            e.line(&format!(
                "{s} = tensor.extract %e{arg}[{}] : {t}",
                ix.join(", ")
            ));
            e.line(&format!("{v} = vector.broadcast {s} : f32 to {vt}"));
        }
        v
    }

    /// `acc <op> operand` (`operand <op> acc` when flipped), on vectors of type `vt`.
    fn apply(&self, e: &mut E, acc: &str, operand: &str, vt: &str) -> String {
        let (name, flip) = match self {
            Epi::Relu => ("max", false),
            Epi::Bin { op, flip, .. } => (
                match op {
                    BinaryOp::Add => "addf",
                    BinaryOp::Sub => "subf",
                    BinaryOp::Mul => "mulf",
                    BinaryOp::Max => "max",
                    _ => "min",
                },
                *flip,
            ),
        };
        let v = e.fresh();
        if name == "max" || name == "min" {
            // The operand is a constant without NaN (see `epilogue_chain`): a compare and a
            // select keep a NaN accumulator NaN as maximumf/minimumf would, and are one
            // max/min instruction instead of three.
            let (c, pred) = (e.fresh(), if name == "max" { "olt" } else { "ogt" });
            let mt = vt.replace("f32>", "i1>");
            e.line(&format!("{c} = arith.cmpf {pred}, {acc}, {operand} : {vt}"));
            e.line(&format!(
                "{v} = arith.select {c}, {operand}, {acc} : {mt}, {vt}"
            ));
            return v;
        }
        let (a, b) = if flip { (operand, acc) } else { (acc, operand) };
        e.line(&format!("{v} = arith.{name} {a}, {b} : {vt}"));
        v
    }
}

/// The tail of a vector transfer: under `mask`, or all in bounds.
fn transfer_tail(mask: Option<&str>) -> String {
    match mask {
        Some(mk) => format!(", {mk}"),
        None => " {in_bounds = [true]}".to_string(),
    }
}

/// `scf.for iv = lo to hi step st` carrying a value of type `ty` from `init` through `inner`,
/// which gets the carried value and the induction variable and returns the value to yield.
fn for_carrying(
    e: &mut E,
    ty: &str,
    init: &str,
    (lo, hi, st): (&str, &str, &str),
    inner: &mut dyn FnMut(&mut E, &str, &str) -> String,
) -> String {
    let (iv, acc, r) = (e.fresh(), e.fresh(), e.fresh());
    let saved = std::mem::take(&mut e.body);
    let t = inner(e, &acc, &iv);
    e.line(&format!("scf.yield {t} : {ty}"));
    let body = std::mem::replace(&mut e.body, saved);
    e.line(&format!(
        "{r} = scf.for {iv} = {lo} to {hi} step {st} iter_args({acc} = {init}) -> ({ty}) {{\n{body}    }}"
    ));
    r
}

/// The elementwise ops that follow node `i` (a matmul or convolution the tiled kernel runs)
/// and can run in its epilogue: each the only user of the value before it, with a constant
/// scalar or per-column operand. Returns their node indices and what each does.
fn epilogue_chain(g: &Graph, i: usize) -> Vec<(usize, Epi)> {
    let n = &g.nodes[i];
    let fits = match &n.op {
        Op::MatMul => {
            fast_matmul_fits(g.ty(n.inputs[0]), g.ty(n.inputs[1]), g.ty(n.outputs[0])).is_some()
        }
        Op::Conv(c) => {
            let (x, w, o) = (g.ty(n.inputs[0]), g.ty(n.inputs[1]), g.ty(n.outputs[0]));
            fast_conv_fits(x, w, c, o) || depthwise_fits(x, w, c, o)
        }
        _ => false,
    };
    if !fits {
        return Vec::new();
    }
    let t = g.ty(n.outputs[0]).clone();
    let cols = t.shape.last().and_then(|d| d.known()).unwrap_or(0);
    let mut v = n.outputs[0];
    let mut chain = Vec::new();
    let mut args = 0;
    loop {
        if g.outputs.contains(&v) {
            break;
        }
        let users: Vec<usize> = (0..g.nodes.len())
            .filter(|&k| g.nodes[k].inputs.contains(&v))
            .collect();
        let [u] = users.as_slice() else { break };
        let un = &g.nodes[*u];
        if un.outputs.len() != 1 || g.ty(un.outputs[0]) != &t {
            break;
        }
        let epi = match &un.op {
            Op::Unary(UnaryOp::Relu) => Epi::Relu,
            Op::Binary(
                op
                @ (BinaryOp::Add | BinaryOp::Sub | BinaryOp::Mul | BinaryOp::Max | BinaryOp::Min),
            ) => {
                let (flip, other) = match un.inputs.as_slice() {
                    [a, b] if *a == v && *b != v => (false, *b),
                    [a, b] if *b == v && *a != v => (true, *a),
                    _ => break,
                };
                let konst = g.nodes.iter().find_map(|p| match &p.op {
                    Op::Const { value, .. } if p.outputs == [other] => Some(value),
                    _ => None,
                });
                let is_const = konst.is_some();
                let ct = g.ty(other);
                let Some(cs) = ct.known_shape() else { break };
                let numel: usize = cs.iter().product();
                let per_col = numel != 1;
                let column_vector = cs.iter().rev().skip(1).all(|&d| d == 1)
                    && cs.last() == Some(&cols)
                    && cs.len() <= t.rank();
                if !is_const || ct.dtype != DType::F32 || (per_col && !column_vector) {
                    break;
                }
                // A max/min with a NaN constant stays out (the kernel's select form would
                // drop the NaN).
                let nan = konst.is_some_and(|v| v.to_f64_vec().iter().any(|x| x.is_nan()));
                if nan && matches!(op, BinaryOp::Max | BinaryOp::Min) {
                    break;
                }
                args += 1;
                Epi::Bin {
                    op: *op,
                    arg: args - 1,
                    ty: ct.clone(),
                    per_col,
                    flip,
                }
            }
            _ => break,
        };
        chain.push((*u, epi));
        v = un.outputs[0];
    }
    chain
}

/// A scalar value in a linalg body: its SSA name.
type S = String;

/// Writes a linalg body: gets the block's input arguments and the accumulator, returns the
/// yielded value.
type Body<'a> = dyn FnMut(&mut Vec<String>, &[S], &str) -> S + 'a;

impl E<'_> {
    fn fresh(&mut self) -> String {
        self.n += 1;
        format!("%v{}", self.n)
    }

    fn line(&mut self, s: &str) {
        self.body.push_str("    ");
        self.body.push_str(s);
        self.body.push('\n');
    }

    fn idx(&mut self, v: i64) -> String {
        if let Some(s) = self.consts.get(&v) {
            return s.clone();
        }
        let s = format!(
            "%c{}",
            if v < 0 {
                format!("m{}", -v)
            } else {
                v.to_string()
            }
        );
        let _ = writeln!(self.prelude, "    {s} = arith.constant {v} : index");
        self.consts.insert(v, s.clone());
        s
    }

    fn dim_val(&mut self, d: &Dim) -> R<String> {
        match d {
            Dim::Known(n) => Ok(self.idx(*n as i64)),
            Dim::Sym(s) => self
                .syms
                .get(s)
                .cloned()
                .ok_or_else(|| format!("the size of `{s}` is not known at run time")),
        }
    }

    /// A size in a slice's size list: a literal when known (the slice's type is then static),
    /// else the symbol's run-time value.
    fn size_lit(&mut self, d: &Dim) -> R<String> {
        match d {
            Dim::Known(n) => Ok(n.to_string()),
            s => self.dim_val(s),
        }
    }

    /// `tensor.empty` of a type, with its dynamic sizes.
    fn empty(&mut self, t: &TensorType) -> R<String> {
        if self.dest.as_ref().is_some_and(|(_, dt)| dt == t) {
            return Ok(self.dest.take().map(|(d, _)| d).unwrap_or_default());
        }
        let mut dyns = Vec::new();
        for d in &t.shape {
            if d.known().is_none() {
                dyns.push(self.dim_val(d)?);
            }
        }
        let v = self.fresh();
        self.line(&format!(
            "{v} = tensor.empty({}) : {}",
            dyns.join(", "),
            tensor_ty(t)
        ));
        Ok(v)
    }

    /// A scalar constant in a body, of element type `d`.
    fn scalar_const(d: DType, x: f64) -> String {
        if d.is_float() {
            // Exact bit patterns: no decimal round trip, and NaN / infinities need them anyway.
            let lit = match d {
                DType::F64 => format!("0x{:016X}", x.to_bits()),
                DType::F16 => format!("0x{:04X}", half::f16::from_f32(x as f32).to_bits()),
                DType::BF16 => format!("0x{:04X}", half::bf16::from_f32(x as f32).to_bits()),
                _ => format!("0x{:08X}", (x as f32).to_bits()),
            };
            format!("arith.constant {lit} : {}", elem(d))
        } else if d == DType::Bool {
            format!("arith.constant {} : i1", x != 0.0)
        } else {
            format!("arith.constant {} : {}", x as i64, elem(d))
        }
    }

    /// Emits `linalg.generic` over the output type `out` (all-parallel, identity output map).
    /// `ins`: (value, its type); `body` gets the block arguments and writes lines into a
    /// buffer, returning the yielded scalar.
    fn elementwise(
        &mut self,
        out: &TensorType,
        ins: &[(String, TensorType)],
        body: &mut dyn FnMut(&mut Vec<String>, &[S]) -> S,
    ) -> R<String> {
        let init = self.empty(out)?;
        Ok(self.elementwise_into(out, init, ins, &mut |lines, a, _| body(lines, a)))
    }

    /// `elementwise` writing into `init` (of type `out`), whose old element the body gets as
    /// its third argument: an update in place, with no buffer of its own.
    fn elementwise_into(
        &mut self,
        out: &TensorType,
        init: String,
        ins: &[(String, TensorType)],
        body: &mut Body,
    ) -> String {
        let r = out.rank();
        let dvars: Vec<String> = (0..r).map(|i| format!("d{i}")).collect();
        let mut maps = Vec::new();
        for (_, t) in ins {
            let off = r - t.rank();
            let exprs: Vec<String> = (0..t.rank())
                .map(|i| {
                    if t.shape[i] == Dim::Known(1) && out.shape[off + i] != Dim::Known(1) {
                        "0".to_string()
                    } else {
                        dvars[off + i].clone()
                    }
                })
                .collect();
            maps.push(format!(
                "affine_map<({}) -> ({})>",
                dvars.join(", "),
                exprs.join(", ")
            ));
        }
        maps.push(format!(
            "affine_map<({}) -> ({})>",
            dvars.join(", "),
            dvars.join(", ")
        ));
        let iters = vec!["parallel"; r];
        generic(self, ins, &maps, &iters, init, out, body)
    }

    fn name(&self, v: ValueId) -> String {
        self.names[&v].clone()
    }

    fn ty(&self, v: ValueId) -> TensorType {
        self.g.ty(v).clone()
    }

    /// The MLIR type `v` is passed as: its own, or its packed layout.
    fn arg_ty(&self, v: ValueId) -> String {
        let t = self.g.ty(v);
        let w = 2 * self.simd;
        match (self.packed.get(&v), t.known_shape()) {
            (Some(Pack::Panels), Some(s)) if s.len() >= 2 => {
                let (k, n) = (s[..s.len() - 1].iter().product::<usize>(), s[s.len() - 1]);
                packed_ty(k, n, w)
            }
            (Some(Pack::Winograd), Some(s)) if s.len() == 4 => winograd::weights_ty(s[2], s[3], w),
            _ => tensor_ty(t),
        }
    }

    /// The constant `value` of `v` as stored: in the layout of `Pack`, or as it is (None).
    fn stored(&self, v: ValueId, value: &Tensor) -> Option<Tensor> {
        let w = 2 * self.simd;
        match self.packed.get(&v)? {
            Pack::Panels => pack_panels(value, w),
            Pack::Winograd => winograd::weights(value, w),
        }
    }
}

/// `(K, N)` when an `a x b -> ot` matmul fits the register-tiled kernel: f32, `[M, K] x [K, N]`
/// with K and N known.
fn fast_matmul_fits(a: &TensorType, b: &TensorType, ot: &TensorType) -> Option<(usize, usize)> {
    let f32_only = [a, b, ot].iter().all(|t| t.dtype == DType::F32);
    if !f32_only || a.rank() != 2 || b.rank() != 2 {
        return None;
    }
    let (k, n) = (b.shape[0].known()?, b.shape[1].known()?);
    (a.shape[1].known() == Some(k) && k > 0 && n > 0).then_some((k, n))
}

/// Constant weights used only as the right operand of matmuls that the tiled kernel runs:
/// they are stored in column panels, so that the kernel reads each panel contiguously.
fn packable_weights(g: &Graph, simd: usize) -> HashMap<ValueId, Pack> {
    let mut out = HashMap::new();
    for n in &g.nodes {
        let (Op::Const { .. }, [v]) = (&n.op, n.outputs.as_slice()) else {
            continue;
        };
        let users: Vec<&Node> = g.nodes.iter().filter(|u| u.inputs.contains(v)).collect();
        let packs: Vec<Option<Pack>> = users
            .iter()
            .map(|u| {
                let (a, w, ot) = (g.ty(u.inputs[0]), g.ty(*v), g.ty(u.outputs[0]));
                if u.inputs.get(1) != Some(v) || u.inputs[0] == *v {
                    return None;
                }
                match &u.op {
                    Op::MatMul => fast_matmul_fits(a, w, ot).map(|_| Pack::Panels),
                    Op::Conv(c) if winograd::fits(a, w, c, ot, simd) => Some(Pack::Winograd),
                    Op::Conv(c) => fast_conv_fits(a, w, c, ot).then_some(Pack::Panels),
                    _ => None,
                }
            })
            .collect();
        // Every user must read the same layout.
        if let Some(Some(first)) = packs.first() {
            if packs.iter().all(|p| p.as_ref() == Some(first)) && !g.outputs.contains(v) {
                out.insert(*v, *first);
            }
        }
    }
    out
}

/// The layout a constant weight is stored in for the kernels that read it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pack {
    /// Column panels for `mm_kernel` (see `pack_panels`).
    Panels,
    /// Transformed for a Winograd convolution (see `winograd::weights`).
    Winograd,
}

/// The type of `[K, N]` weights packed by `pack_panels` into panels of `w` columns.
fn packed_ty(k: usize, n: usize, w: usize) -> String {
    format!("tensor<{}x{k}x{w}xf32>", n.div_ceil(w))
}

/// `[K, N]` row-major weights as `ceil(N / w)` panels of `[K, w]`, the last one padded with
/// zeros. Convolution weights `[k..., C, F]` count as `[prod(k) * C, F]`.
fn pack_panels(t: &Tensor, w: usize) -> Option<Tensor> {
    let (s, Data::F32(v)) = (t.shape(), t.data()) else {
        return None;
    };
    if s.len() < 2 {
        return None;
    }
    let (k, n) = (s[..s.len() - 1].iter().product::<usize>(), s[s.len() - 1]);
    let p = n.div_ceil(w);
    let mut out = vec![0f32; p * k * w];
    for pi in 0..p {
        for ki in 0..k {
            for l in 0..w.min(n - pi * w) {
                out[(pi * k + ki) * w + l] = v[ki * n + pi * w + l];
            }
        }
    }
    Tensor::from_f32(vec![p, k, w], out).ok()
}

/// A fresh SSA name inside a body.
fn bvar(lines: &[String]) -> String {
    format!("%t{}", lines.len())
}

fn push(lines: &mut Vec<String>, rhs: String) -> String {
    let v = bvar(lines);
    lines.push(format!("{v} = {rhs}"));
    v
}

/// Scalar code for a unary op on `x` of type `d`.
fn unary_body(lines: &mut Vec<String>, u: UnaryOp, x: &str, d: DType) -> R<String> {
    let t = elem(d);
    let f = d.is_float();
    let c = |lines: &mut Vec<String>, v: f64| push(lines, E::scalar_const(d, v));
    Ok(match u {
        UnaryOp::Neg if f => push(lines, format!("arith.negf {x} : {t}")),
        UnaryOp::Neg => {
            let z = c(lines, 0.0);
            push(lines, format!("arith.subi {z}, {x} : {t}"))
        }
        UnaryOp::Abs if f => push(lines, format!("math.absf {x} : {t}")),
        UnaryOp::Abs => push(lines, format!("math.absi {x} : {t}")),
        UnaryOp::Exp if d == DType::F32 => exp_f32(lines, x),
        UnaryOp::Exp => push(lines, format!("math.exp {x} : {t}")),
        UnaryOp::Log => push(lines, format!("math.log {x} : {t}")),
        UnaryOp::Sqrt => push(lines, format!("math.sqrt {x} : {t}")),
        UnaryOp::Rsqrt => push(lines, format!("math.rsqrt {x} : {t}")),
        UnaryOp::Reciprocal => {
            let one = c(lines, 1.0);
            push(lines, format!("arith.divf {one}, {x} : {t}"))
        }
        UnaryOp::Tanh if d == DType::F32 => tanh_f32(lines, x),
        UnaryOp::Tanh => push(lines, format!("math.tanh {x} : {t}")),
        UnaryOp::Sigmoid => {
            let n = push(lines, format!("arith.negf {x} : {t}"));
            let e = if d == DType::F32 {
                exp_f32(lines, &n)
            } else {
                push(lines, format!("math.exp {n} : {t}"))
            };
            let one = c(lines, 1.0);
            let s = push(lines, format!("arith.addf {one}, {e} : {t}"));
            push(lines, format!("arith.divf {one}, {s} : {t}"))
        }
        UnaryOp::Relu if f => {
            // x < 0 ? 0 : x: NaN and -0 pass (as in TensorFlow), and it is one max instruction.
            let z = c(lines, 0.0);
            let neg = push(lines, format!("arith.cmpf olt, {x}, {z} : {t}"));
            push(lines, format!("arith.select {neg}, {z}, {x} : {t}"))
        }
        UnaryOp::Relu => {
            let z = c(lines, 0.0);
            push(lines, format!("arith.maxsi {x}, {z} : {t}"))
        }
        UnaryOp::Softplus => {
            // max(x, 0) + log1p(exp(-|x|))
            let a = push(lines, format!("math.absf {x} : {t}"));
            let n = push(lines, format!("arith.negf {a} : {t}"));
            let e = push(lines, format!("math.exp {n} : {t}"));
            let l = push(lines, format!("math.log1p {e} : {t}"));
            let z = c(lines, 0.0);
            let m = push(lines, format!("arith.maximumf {x}, {z} : {t}"));
            push(lines, format!("arith.addf {m}, {l} : {t}"))
        }
        UnaryOp::Erf => push(lines, format!("math.erf {x} : {t}")),
        UnaryOp::Sin => push(lines, format!("math.sin {x} : {t}")),
        UnaryOp::Cos => push(lines, format!("math.cos {x} : {t}")),
        UnaryOp::Floor => push(lines, format!("math.floor {x} : {t}")),
        UnaryOp::Ceil => push(lines, format!("math.ceil {x} : {t}")),
        UnaryOp::Round => push(lines, format!("math.roundeven {x} : {t}")),
        UnaryOp::Atan => push(lines, format!("math.atan {x} : {t}")),
        UnaryOp::Sign => {
            let z = c(lines, 0.0);
            let one = c(lines, 1.0);
            let m1 = c(lines, -1.0);
            // Floats keep x itself when neither compare holds (NaN and -0 pass through).
            let (cmp, gt, lt, rest) = if f {
                ("cmpf", "ogt", "olt", x)
            } else {
                ("cmpi", "sgt", "slt", z.as_str())
            };
            let gt = push(lines, format!("arith.{cmp} {gt}, {x}, {z} : {t}"));
            let lt = push(lines, format!("arith.{cmp} {lt}, {x}, {z} : {t}"));
            let a = push(lines, format!("arith.select {lt}, {m1}, {rest} : {t}"));
            push(lines, format!("arith.select {gt}, {one}, {a} : {t}"))
        }
        UnaryOp::Not => {
            let tr = push(lines, "arith.constant true".into());
            push(lines, format!("arith.xori {x}, {tr} : i1"))
        }
        UnaryOp::BitNot => {
            let m = c(lines, -1.0);
            push(lines, format!("arith.xori {x}, {m} : {t}"))
        }
    })
}

/// Scalar code for a binary op on `x`, `y` of input type `d`.
fn binary_body(lines: &mut Vec<String>, b: BinaryOp, x: &str, y: &str, d: DType) -> R<String> {
    let t = elem(d);
    let f = d.is_float();
    let cmp = |p_f: &str, p_i: &str| {
        if f {
            format!("arith.cmpf {p_f}, {x}, {y} : {t}")
        } else {
            format!("arith.cmpi {p_i}, {x}, {y} : {t}")
        }
    };
    Ok(match b {
        BinaryOp::Add => push(
            lines,
            format!("arith.add{} {x}, {y} : {t}", if f { "f" } else { "i" }),
        ),
        BinaryOp::Sub => push(
            lines,
            format!("arith.sub{} {x}, {y} : {t}", if f { "f" } else { "i" }),
        ),
        BinaryOp::Mul => push(
            lines,
            format!("arith.mul{} {x}, {y} : {t}", if f { "f" } else { "i" }),
        ),
        BinaryOp::Div => push(
            lines,
            format!("arith.div{} {x}, {y} : {t}", if f { "f" } else { "si" }),
        ),
        BinaryOp::Pow if f => push(lines, format!("math.powf {x}, {y} : {t}")),
        BinaryOp::Pow => push(lines, format!("math.ipowi {x}, {y} : {t}")),
        BinaryOp::Max => push(
            lines,
            format!(
                "arith.{} {x}, {y} : {t}",
                if f { "maximumf" } else { "maxsi" }
            ),
        ),
        BinaryOp::Min => push(
            lines,
            format!(
                "arith.{} {x}, {y} : {t}",
                if f { "minimumf" } else { "minsi" }
            ),
        ),
        BinaryOp::Eq => push(lines, cmp("oeq", "eq")),
        BinaryOp::Ne => push(lines, cmp("une", "ne")),
        BinaryOp::Lt => push(lines, cmp("olt", "slt")),
        BinaryOp::Le => push(lines, cmp("ole", "sle")),
        BinaryOp::Gt => push(lines, cmp("ogt", "sgt")),
        BinaryOp::Ge => push(lines, cmp("oge", "sge")),
        BinaryOp::And | BinaryOp::BitAnd => push(lines, format!("arith.andi {x}, {y} : {t}")),
        BinaryOp::Or | BinaryOp::BitOr => push(lines, format!("arith.ori {x}, {y} : {t}")),
        BinaryOp::BitXor => push(lines, format!("arith.xori {x}, {y} : {t}")),
        // Amounts outside 0..width (negative ones compare as huge unsigned): a left shift gives
        // 0, an arithmetic right shift fills with the sign (as the interpreter does; LLVM's
        // shifts would be poison).
        BinaryOp::Shl | BinaryOp::Shr => {
            let bits = match d {
                DType::I8 => 8,
                DType::I32 => 32,
                _ => 64,
            };
            let n = push(lines, format!("arith.constant {bits} : {t}"));
            let ok = push(lines, format!("arith.cmpi ult, {y}, {n} : {t}"));
            if b == BinaryOp::Shl {
                let s = push(lines, format!("arith.shli {x}, {y} : {t}"));
                let z = push(lines, format!("arith.constant 0 : {t}"));
                push(lines, format!("arith.select {ok}, {s}, {z} : {t}"))
            } else {
                let top = push(lines, format!("arith.constant {} : {t}", bits - 1));
                let amount = push(lines, format!("arith.select {ok}, {y}, {top} : {t}"));
                push(lines, format!("arith.shrsi {x}, {amount} : {t}"))
            }
        }
        BinaryOp::Rem => push(
            lines,
            format!("arith.rem{} {x}, {y} : {t}", if f { "f" } else { "si" }),
        ),
        BinaryOp::Mod => {
            // The sign of the divisor: r + y when r and y have opposite signs.
            let r = push(
                lines,
                format!("arith.rem{} {x}, {y} : {t}", if f { "f" } else { "si" }),
            );
            let z = push(lines, E::scalar_const(d, 0.0));
            let (rneg, yneg, rnz) = if f {
                (
                    push(lines, format!("arith.cmpf olt, {r}, {z} : {t}")),
                    push(lines, format!("arith.cmpf olt, {y}, {z} : {t}")),
                    push(lines, format!("arith.cmpf one, {r}, {z} : {t}")),
                )
            } else {
                (
                    push(lines, format!("arith.cmpi slt, {r}, {z} : {t}")),
                    push(lines, format!("arith.cmpi slt, {y}, {z} : {t}")),
                    push(lines, format!("arith.cmpi ne, {r}, {z} : {t}")),
                )
            };
            let diff = push(lines, format!("arith.xori {rneg}, {yneg} : i1"));
            let fix = push(lines, format!("arith.andi {diff}, {rnz} : i1"));
            let s = push(
                lines,
                format!("arith.add{} {r}, {y} : {t}", if f { "f" } else { "i" }),
            );
            push(lines, format!("arith.select {fix}, {s}, {r} : {t}"))
        }
    })
}

/// Scalar conversion from `from` to `to`.
fn cast_body(lines: &mut Vec<String>, x: &str, from: DType, to: DType) -> String {
    if from == to {
        return x.to_string();
    }
    let (a, b) = (elem(from), elem(to));
    let width = |d: DType| match d {
        DType::F64 | DType::I64 => 64,
        DType::F32 | DType::I32 => 32,
        DType::F16 | DType::BF16 => 16,
        DType::I8 => 8,
        DType::Bool => 1,
    };
    if to == DType::Bool {
        let z = push(lines, E::scalar_const(from, 0.0));
        return if from.is_float() {
            push(lines, format!("arith.cmpf une, {x}, {z} : {a}"))
        } else {
            push(lines, format!("arith.cmpi ne, {x}, {z} : {a}"))
        };
    }
    match (from.is_float(), to.is_float()) {
        (true, true) => {
            if from == DType::BF16 || to == DType::BF16 || from == DType::F16 || to == DType::F16 {
                // Through f32 when one side is a 16-bit float.
                let mid = if width(from) < width(to) {
                    push(lines, format!("arith.extf {x} : {a} to {b}"))
                } else if width(from) > width(to) {
                    push(lines, format!("arith.truncf {x} : {a} to {b}"))
                } else {
                    let w = push(lines, format!("arith.extf {x} : {a} to f32"));
                    push(lines, format!("arith.truncf {w} : f32 to {b}"))
                };
                mid
            } else if width(from) < width(to) {
                push(lines, format!("arith.extf {x} : {a} to {b}"))
            } else {
                push(lines, format!("arith.truncf {x} : {a} to {b}"))
            }
        }
        (false, true) if from == DType::Bool => {
            push(lines, format!("arith.uitofp {x} : {a} to {b}"))
        }
        (false, true) => push(lines, format!("arith.sitofp {x} : {a} to {b}")),
        (true, false) => push(lines, format!("arith.fptosi {x} : {a} to {b}")),
        (false, false) => {
            if from == DType::Bool {
                push(lines, format!("arith.extui {x} : {a} to {b}"))
            } else if width(from) < width(to) {
                push(lines, format!("arith.extsi {x} : {a} to {b}"))
            } else {
                push(lines, format!("arith.trunci {x} : {a} to {b}"))
            }
        }
    }
}

/// The whole module for `g`.
/// Emits the model as MLIR; `simd` is the target's f32 vector width (lanes), which sizes the
/// register tiles of the matmul kernels.
///
/// The large constants (`EXTERNAL_MIN_BYTES` and up) become arguments of the entry function
/// (after the inputs and outputs), returned in that order with their bytes.
pub fn emit(g: &Graph, simd: usize, entry: &str) -> R<(String, Vec<ExternalWeight>)> {
    let packed = packable_weights(g, simd);
    let mut e = E {
        g,
        body: String::new(),
        prelude: String::new(),
        names: HashMap::new(),
        n: 0,
        syms: HashMap::new(),
        consts: HashMap::new(),
        simd,
        packed: packed.clone(),
        epilogue: Vec::new(),
        external: HashMap::new(),
        serial: false,
        dest: None,
    };
    let mut params = Vec::new();
    for (k, &i) in g.inputs.iter().enumerate() {
        params.push(format!("%in{k}: {}", memref_ty(g.ty(i))));
    }
    for (k, &o) in g.outputs.iter().enumerate() {
        params.push(format!("%out{k}: {}", memref_ty(g.ty(o))));
    }
    let mut weights = Vec::new();
    for n in &g.nodes {
        let Op::Const { value, .. } = &n.op else {
            continue;
        };
        if value.size_bytes() < EXTERNAL_MIN_BYTES || value.dtype() == DType::Bool {
            continue;
        }
        let v = n.outputs[0];
        let packed_value = e.stored(v, value);
        let stored = packed_value.as_ref().unwrap_or(value);
        let j = weights.len();
        e.external.insert(v, j);
        params.push(format!(
            "%w{j}: {}",
            e.arg_ty(v).replacen("tensor<", "memref<", 1)
        ));
        weights.push(ExternalWeight {
            dims: stored.shape().to_vec(),
            bytes: raw_bytes(stored),
        });
    }
    // Symbol sizes from the first input carrying each symbol.
    for (k, &i) in g.inputs.iter().enumerate() {
        for (dpos, d) in g.ty(i).shape.iter().enumerate() {
            if let Dim::Sym(s) = d {
                if !e.syms.contains_key(s) {
                    let c = e.idx(dpos as i64);
                    let v = format!("%sym_{}", s);
                    e.line(&format!(
                        "{v} = memref.dim %in{k}, {c} : {}",
                        memref_ty(g.ty(i))
                    ));
                    e.syms.insert(s.clone(), v);
                }
            }
        }
        let t = e.fresh();
        e.line(&format!(
            "{t} = bufferization.to_tensor %in{k} restrict : {} to {}",
            memref_ty(g.ty(i)),
            tensor_ty(g.ty(i))
        ));
        e.names.insert(i, t);
    }
    // Each op gets its own (noinline) function: LLVM's optimizer and code generator are
    // superlinear in function size, and one function per model made big models slow to compile.
    let mut sym_order: Vec<String> = Vec::new();
    for &i in &g.inputs {
        for d in &g.ty(i).shape {
            if let Dim::Sym(s) = d {
                if !sym_order.contains(s) {
                    sym_order.push(s.clone());
                }
            }
        }
    }
    // The model outputs a kernel can write in place (see `E::dest`): values that are no input,
    // only one output, and read by no op.
    let mut dests: HashMap<ValueId, usize> = HashMap::new();
    for (k, &o) in g.outputs.iter().enumerate() {
        let used = g.nodes.iter().any(|n| n.inputs.contains(&o));
        if !used && !g.inputs.contains(&o) && g.outputs.iter().filter(|&&x| x == o).count() == 1 {
            dests.insert(o, k);
        }
    }
    let mut written: HashSet<ValueId> = HashSet::new();
    let mut funcs = String::new();
    let mut fused: HashSet<usize> = HashSet::new();
    // Kernels with their epilogues; the other chains of elementwise ops, each run as one loop
    // nest by a function made at its last node.
    let mut chains: HashMap<usize, Vec<(usize, Epi)>> = (0..g.nodes.len())
        .map(|i| (i, epilogue_chain(g, i)))
        .filter(|(_, c)| !c.is_empty())
        .collect();
    let taken: HashSet<usize> = chains.values().flatten().map(|(u, _)| *u).collect();
    let mut groups: HashMap<usize, Vec<usize>> = HashMap::new();
    for chain in elementwise_groups(g, &taken) {
        fused.extend(&chain[..chain.len() - 1]);
        groups.insert(chain[chain.len() - 1], chain);
    }
    for (idx, node) in g.nodes.iter().enumerate() {
        if fused.contains(&idx) {
            continue;
        }
        let at = |m: String| format!("{} ({}): {}", node.origin, node.op.name(), with_hint(m));
        // Constants and views (no computation; a view returned across a call would alias an
        // argument) stay in the entry function.
        if matches!(
            node.op,
            Op::Const { .. }
                | Op::Dropout { .. }
                | Op::Reshape { .. }
                | Op::Slice { .. }
                | Op::Rnn(_)
        ) {
            if node.outputs.iter().all(|o| e.names.contains_key(o)) {
                continue; // a constant an earlier kernel's epilogue needed first
            }
            let outs = lower(&mut e, node).map_err(at)?;
            for (o, v) in node.outputs.iter().zip(outs) {
                e.names.insert(*o, v);
            }
            continue;
        }
        let mut f = E {
            g,
            body: String::new(),
            prelude: String::new(),
            names: HashMap::new(),
            n: 0,
            syms: HashMap::new(),
            consts: HashMap::new(),
            simd,
            packed: packed.clone(),
            epilogue: Vec::new(),
            external: HashMap::new(),
            serial: false,
            dest: None,
        };
        let mut params = Vec::new();
        let mut call_args = Vec::new();
        let mut arg_tys = Vec::new();
        for (j, s) in sym_order.iter().enumerate() {
            let a = format!("%s{j}");
            f.syms.insert(s.clone(), a.clone());
            params.push(format!("{a}: index"));
            call_args.push(e.syms[s].clone());
            arg_tys.push("index".to_string());
        }
        let members: Vec<&Node> = groups
            .get(&idx)
            .map_or_else(Vec::new, |c| c.iter().map(|&k| &g.nodes[k]).collect());
        // A group's inputs: the values its members take from outside it, in order of use.
        let mut inputs: Vec<ValueId> = Vec::new();
        for m in if members.is_empty() {
            std::slice::from_ref(&node)
        } else {
            &members[..]
        } {
            for &i in &m.inputs {
                let inside = members.iter().any(|p| p.outputs.contains(&i));
                if !inside && (members.is_empty() || !inputs.contains(&i)) {
                    inputs.push(i);
                }
            }
        }
        for (j, &i) in inputs.iter().enumerate() {
            let a = format!("%x{j}");
            f.names.insert(i, a.clone());
            params.push(format!("{a}: {}", f.arg_ty(i)));
            call_args.push(e.name(i));
            arg_tys.push(f.arg_ty(i));
        }
        // Elementwise ops fused into this kernel's stores: their constants come in as extra
        // arguments, and the function returns the last one's result.
        let chain = chains.remove(&idx).unwrap_or_default();
        for (u, epi) in &chain {
            fused.insert(*u);
            if let Epi::Bin { arg, flip, .. } = epi {
                let un = &g.nodes[*u];
                let c = un.inputs[if *flip { 0 } else { 1 }];
                if !e.names.contains_key(&c) {
                    // The constant comes after the kernel in the graph: make it now.
                    let cn = g.nodes.iter().find(|p| p.outputs == [c]).ok_or_else(|| {
                        at("internal error: an epilogue's constant has no node".into())
                    })?;
                    let v = lower(&mut e, cn).map_err(at)?;
                    e.names.insert(c, v[0].clone());
                }
                params.push(format!("%e{arg}: {}", tensor_ty(g.ty(c))));
                call_args.push(e.name(c));
                arg_tys.push(tensor_ty(g.ty(c)));
            }
        }
        f.epilogue = chain.iter().map(|(_, epi)| epi.clone()).collect();
        let node_outputs: Vec<ValueId> = match chain.last() {
            Some((u, _)) => g.nodes[*u].outputs.clone(),
            None => node.outputs.clone(),
        };
        // An op whose one result is a model output (and used by nothing else) writes it into
        // the caller's buffer: a tensor over it is the kernel's destination, and the result is
        // materialized there (a copy of the buffer onto itself when the kernel wrote in place,
        // which folds away), not returned and copied by the caller.
        let dest = match node_outputs[..] {
            [o] => dests.get(&o).map(|&k| (o, k)),
            _ => None,
        };
        if let Some((o, k)) = dest {
            let t = g.ty(o).clone();
            params.push(format!("%dest: {}", memref_ty(&t)));
            call_args.push(format!("%out{k}"));
            arg_tys.push(memref_ty(&t));
            f.line(&format!(
                "%destt = bufferization.to_tensor %dest restrict writable : {} to {}",
                memref_ty(&t),
                tensor_ty(&t)
            ));
            f.dest = Some(("%destt".to_string(), t));
        }
        let outs = match members.len() {
            0 => lower(&mut f, node).map_err(at)?,
            _ => vec![fused_elementwise(&mut f, &members)?],
        };
        if !f.epilogue.is_empty() {
            return Err(at(
                "internal error: the kernel did not apply its fused epilogue".into(),
            ));
        }
        let (node_outputs, outs) = match dest {
            Some((o, _)) => {
                f.line(&format!(
                    "bufferization.materialize_in_destination {} in writable %dest : ({}, {}) -> ()",
                    outs[0],
                    tensor_ty(g.ty(o)),
                    memref_ty(g.ty(o))
                ));
                written.insert(o);
                (Vec::new(), Vec::new())
            }
            None => (node_outputs, outs),
        };
        let out_tys: Vec<String> = node_outputs.iter().map(|&o| tensor_ty(g.ty(o))).collect();
        if outs.is_empty() {
            f.line("return");
        } else {
            f.line(&format!(
                "return {} : {}",
                outs.join(", "),
                out_tys.join(", ")
            ));
        }
        let _ = write!(
            funcs,
            "  func.func private @op{idx}({}) -> ({}) attributes {{passthrough = [\"noinline\"]}} {{\n{}  }}\n",
            params.join(", "),
            out_tys.join(", "),
            f.prelude + &f.body
        );
        let r = e.fresh();
        let res = match outs.len() {
            0 => String::new(),
            1 => format!("{r} = "),
            n => format!("{r}:{n} = "),
        };
        e.line(&format!(
            "{res}func.call @op{idx}({}) : ({}) -> ({})",
            call_args.join(", "),
            arg_tys.join(", "),
            out_tys.join(", ")
        ));
        for (k, &o) in node_outputs.iter().enumerate() {
            e.names.insert(
                o,
                if outs.len() == 1 {
                    r.clone()
                } else {
                    format!("{r}#{k}")
                },
            );
        }
    }
    for (k, &o) in g.outputs.iter().enumerate() {
        if written.contains(&o) {
            continue;
        }
        let v = e.name(o);
        e.line(&format!(
            "bufferization.materialize_in_destination {v} in restrict writable %out{k} : ({}, {}) -> ()",
            tensor_ty(g.ty(o)),
            memref_ty(g.ty(o))
        ));
    }
    e.line("return");
    let body = format!(
        "{funcs}  func.func @{entry}({}) attributes {{llvm.emit_c_interface}} {{\n{}  }}\n",
        params.join(", "),
        e.prelude + &e.body
    );
    let mut runtime = if body.contains("bf16") {
        TRUNC_BF16
    } else {
        ""
    }
    .to_string();
    if body.contains("@forgec_threads") {
        // The threads the calling context lends the kernels (the C wrapper defines it).
        runtime.push_str("  func.func private @forgec_threads() -> index\n");
    }
    Ok((format!("module {{\n{body}{runtime}}}\n"), weights))
}

/// LLVM computes bf16 arithmetic in f32 and rounds every result back with a call of
/// `__truncsfbf2`, which compiler-rt has but Debian 12's libgcc has not: the library carries its
/// own (round to nearest even, NaN kept quiet), weak and hidden so that it does not clash with
/// another model's or the toolchain's.
const TRUNC_BF16: &str = r#"  llvm.func weak hidden @__truncsfbf2(%x: f32) -> bf16 {
    %c1 = llvm.mlir.constant(1 : i32) : i32
    %c16 = llvm.mlir.constant(16 : i32) : i32
    %c7fff = llvm.mlir.constant(32767 : i32) : i32
    %quiet = llvm.mlir.constant(64 : i16) : i16
    %u = llvm.bitcast %x : f32 to i32
    %hi = llvm.lshr %u, %c16 : i32
    %lsb = llvm.and %hi, %c1 : i32
    %b = llvm.add %u, %c7fff : i32
    %r = llvm.add %b, %lsb : i32
    %s = llvm.lshr %r, %c16 : i32
    %t = llvm.trunc %s : i32 to i16
    %h16 = llvm.trunc %hi : i32 to i16
    %q = llvm.or %h16, %quiet : i16
    %nan = llvm.fcmp "uno" %x, %x : f32
    %sel = llvm.select %nan, %q, %t : i1, i16
    %res = llvm.bitcast %sel : i16 to bf16
    llvm.return %res : bf16
  }
"#;

fn lower(e: &mut E, node: &Node) -> R<Vec<String>> {
    let ins: Vec<(String, TensorType)> =
        node.inputs.iter().map(|&i| (e.name(i), e.ty(i))).collect();
    let out_ty: Vec<TensorType> = node.outputs.iter().map(|&o| e.ty(o)).collect();
    let ot = &out_ty[0];
    let one = |v: String| Ok(vec![v]);
    match &node.op {
        Op::Const { .. } if e.external.contains_key(&node.outputs[0]) => {
            let j = e.external[&node.outputs[0]];
            let v = e.fresh();
            let t = e.arg_ty(node.outputs[0]);
            let m = t.replacen("tensor<", "memref<", 1);
            e.line(&format!("{v} = bufferization.to_tensor %w{j} restrict : {m} to {t}"));
            one(v)
        }
        Op::Const { value, .. } => {
            let v = e.fresh();
            let packed = e.stored(node.outputs[0], value);
            let value = packed.as_ref().unwrap_or(value);
            let t = e.arg_ty(node.outputs[0]);
            e.line(&format!("{v} = arith.constant dense<\"{}\"> : {t}", dense_hex(value)));
            one(v)
        }
        op if is_elementwise(op) => one(fused_elementwise(e, &[node])?),
        Op::Dropout { .. } => one(ins[0].0.clone()),
        Op::MatMul => one(match fast_matmul(e, &ins, ot, e.packed.get(&node.inputs[1]) == Some(&Pack::Panels))? {
            Some(v) => v,
            None => matmul(e, &ins, ot)?,
        }),
        Op::Reshape { .. } => one(reshape(e, &ins[0], ot)?),
        Op::Transpose { perm } => {
            let out = e.empty(ot)?;
            let v = e.fresh();
            let p: Vec<String> = perm.iter().map(|p| p.to_string()).collect();
            e.line(&format!(
                "{v} = linalg.transpose ins({} : {}) outs({out} : {}) permutation = [{}]",
                ins[0].0,
                tensor_ty(&ins[0].1),
                tensor_ty(ot),
                p.join(", ")
            ));
            one(v)
        }
        Op::Broadcast { .. } => {
            let v = e.elementwise(ot, &ins, &mut |_, a| a[0].clone())?;
            one(v)
        }
        Op::Reduce { kind, axes, keepdims } => one(reduce(e, &ins[0], *kind, axes, *keepdims, ot)?),
        Op::Softmax { axis, log } => one(softmax(e, &ins[0], *axis, *log, ot)?),
        Op::Concat { axis } => one(concat(e, &ins, *axis, ot)?),
        // An empty slice reads nothing (and MLIR refuses one starting at the end).
        Op::Slice { .. } if ot.shape.contains(&Dim::Known(0)) => one(e.empty(ot)?),
        Op::Slice { axes, starts, ends, steps } => {
            let x = &ins[0];
            let r = x.1.rank();
            let mut offs = vec!["0".to_string(); r];
            let mut sizes: Vec<String> = Vec::new();
            let mut strides = vec!["1".to_string(); r];
            for d in &ot.shape {
                sizes.push(e.size_lit(d)?);
            }
            for (k, &a) in axes.iter().enumerate() {
                let n = x.1.shape[a].known().ok_or("slicing a symbolic dim")?;
                let (s, _) = forgec_ir::infer::slice_range(n, starts[k], ends[k], steps[k])?;
                if steps[k] < 0 {
                    // Read backwards: a copy whose input map runs `start + i * step`.
                    let r = x.1.rank();
                    let mut exprs: Vec<String> = (0..r).map(|i| format!("d{i}")).collect();
                    for (j, &aa) in axes.iter().enumerate() {
                        let n = x.1.shape[aa].known().ok_or("slicing a symbolic dim")?;
                        let (s0, _) = forgec_ir::infer::slice_range(n, starts[j], ends[j], steps[j])?;
                        exprs[aa] = format!("d{aa} * {} + {s0}", steps[j]);
                    }
                    let in_map = map(r, &exprs);
                    let out_map = map(r, &(0..r).map(|i| format!("d{i}")).collect::<Vec<_>>());
                    let init = e.empty(ot)?;
                    return one(generic(e, std::slice::from_ref(x), &[in_map, out_map], &vec!["parallel"; r], init, ot, &mut |_, a, _| a[0].clone()));
                }
                offs[a] = s.to_string();
                strides[a] = steps[k].to_string();
            }
            let v = e.fresh();
            e.line(&format!(
                "{v} = tensor.extract_slice {}[{}] [{}] [{}] : {} to {}",
                x.0,
                offs.join(", "),
                sizes.join(", "),
                strides.join(", "),
                tensor_ty(&x.1),
                tensor_ty(ot)
            ));
            one(v)
        }
        Op::Pad { pads, mode, value } => one(match mode {
            PadMode::Constant => pad(e, &ins[0], pads, *value, ot)?,
            _ => pad_from_inside(e, &ins[0], pads, *mode, ot)?,
        }),
        Op::Gather { axis } => one(gather(e, &ins[0], &ins[1], *axis, ot)?),
        Op::GatherElements { axis } => {
            one(indexing::gather_elements(e, &ins[0], &ins[1], *axis, ot)?)
        }
        Op::GatherNd { batch_dims } => {
            one(indexing::gather_nd(e, &ins[0], &ins[1], *batch_dims, ot)?)
        }
        Op::ScatterElements { axis, reduction } => {
            one(indexing::scatter(e, &ins, Some(*axis), reduction, ot)?)
        }
        Op::ScatterNd { reduction } => one(indexing::scatter(e, &ins, None, reduction, ot)?),
        Op::ArgReduce {
            kind,
            axis,
            select_last,
            ..
        } => one(indexing::arg_reduce(e, &ins[0], *kind, *axis, *select_last, ot)?),
        Op::TopK { axis, largest, .. } => indexing::top_k(e, &ins[0], *axis, *largest, &out_ty),
        Op::Cumulative {
            kind,
            axis,
            exclusive,
            reverse,
        } => one(indexing::cumulative(e, &ins[0], *kind, *axis, *exclusive, *reverse, ot)?),
        Op::Resize(r) => one(indexing::resize(e, &ins[0], r, ot)?),
        Op::BatchNorm { axis, epsilon } => one(batch_norm(e, node, &ins, *axis, *epsilon, ot)?),
        Op::LayerNorm { axes, epsilon } => one(layer_norm(e, &ins, axes, *epsilon, ot)?),
        Op::Conv(c) => {
            let packed = e.packed.get(&node.inputs[1]).copied();
            if packed == Some(Pack::Winograd) {
                return one(winograd::conv(e, &ins[0], &ins[1], c, ot)?);
            }
            if let Some(v) = fast_conv(e, &ins[0], &ins[1], c, ot, packed == Some(Pack::Panels))? {
                return one(v);
            }
            if let Some(v) = depthwise(e, &ins[0], &ins[1], c, ot)? {
                return one(v);
            }
            one(conv(e, &ins[0], &ins[1], c, ot)?)
        }
        Op::Pool(p) => one(match fast_pool(e, &ins[0], p, ot)? {
            Some(v) => v,
            None => pool(e, &ins[0], p, ot)?,
        }),
        Op::Rnn(r) => {
            let v = rnn(e, &ins, r, ot);
            e.serial = false;
            one(v?)
        }
        other => Err(format!("the compiler does not lower `{}` yet (the reference interpreter runs it: forgec run --engine interp)", other.name())),
    }
}

/// A refusal ("... is not compiled yet") with the way to run the model meanwhile.
fn with_hint(m: String) -> String {
    if m.ends_with("is not compiled yet") {
        format!("{m} (the reference interpreter runs it: forgec run --engine interp)")
    } else {
        m
    }
}

/// Whether `op` maps elements one to one: the ops `fused_elementwise` lowers.
fn is_elementwise(op: &Op) -> bool {
    matches!(
        op,
        Op::Unary(_) | Op::Binary(_) | Op::Select | Op::Cast { .. }
    )
}

/// Scalar code for one elementwise op on the scalars `a`, of types `tys`.
fn scalar_op(lines: &mut Vec<String>, op: &Op, a: &[S], tys: &[DType]) -> R<S> {
    match op {
        Op::Unary(u) => unary_body(lines, *u, &a[0], tys[0]),
        Op::Binary(b) => binary_body(lines, *b, &a[0], &a[1], tys[0]),
        Op::Select => Ok(push(
            lines,
            format!(
                "arith.select {}, {}, {} : {}",
                a[0],
                a[1],
                a[2],
                elem(tys[1])
            ),
        )),
        Op::Cast { to } => Ok(cast_body(lines, &a[0], tys[0], *to)),
        other => Err(format!(
            "internal error: `{}` is not elementwise",
            other.name()
        )),
    }
}

/// Elementwise nodes run as one loop nest: `members` in graph order, all with the same output
/// shape, every member's output but the last used only by later members (see
/// `elementwise_groups`). One `linalg.generic` reads the values the group takes from outside
/// (each broadcast to the output shape) and computes every member per element; nothing in
/// between is stored. An error names the member it comes from when there are several.
fn fused_elementwise(e: &mut E, members: &[&Node]) -> R<String> {
    let g = e.g;
    let produced: HashSet<ValueId> = members.iter().map(|m| m.outputs[0]).collect();
    let mut outside: Vec<ValueId> = Vec::new();
    for m in members {
        for &i in &m.inputs {
            if !produced.contains(&i) && !outside.contains(&i) {
                outside.push(i);
            }
        }
    }
    let ins: Vec<(String, TensorType)> = outside.iter().map(|&v| (e.name(v), e.ty(v))).collect();
    let last = members
        .last()
        .ok_or("internal error: an empty elementwise group")?;
    let ot = e.ty(last.outputs[0]);
    let mut err = None;
    let v = e.elementwise(&ot, &ins, &mut |lines, a| {
        let mut scalars: HashMap<ValueId, S> = HashMap::new();
        let mut y = String::new();
        for m in members {
            let args: Vec<S> = m
                .inputs
                .iter()
                .map(|i| match scalars.get(i) {
                    Some(s) => s.clone(),
                    None => a[outside.iter().position(|o| o == i).unwrap_or(0)].clone(),
                })
                .collect();
            let tys: Vec<DType> = m.inputs.iter().map(|&i| g.ty(i).dtype).collect();
            match scalar_op(lines, &m.op, &args, &tys) {
                Ok(s) => {
                    scalars.insert(m.outputs[0], s.clone());
                    y = s;
                }
                Err(msg) => {
                    let msg = if members.len() > 1 {
                        format!("{} ({}): {msg}", m.origin, m.op.name())
                    } else {
                        msg
                    };
                    err.get_or_insert(msg);
                    y = args[0].clone();
                }
            }
        }
        y
    })?;
    match err {
        Some(m) => Err(m),
        None => Ok(v),
    }
}

/// Chains of elementwise nodes to run as one loop nest, each in graph order: a node joins the
/// chain when it is the only user of the chain's last output (which is no graph output), and
/// its output has the same shape. `taken` are nodes fused elsewhere (kernel epilogues).
fn elementwise_groups(g: &Graph, taken: &HashSet<usize>) -> Vec<Vec<usize>> {
    let mut users: HashMap<ValueId, Vec<usize>> = HashMap::new();
    for (k, n) in g.nodes.iter().enumerate() {
        for &i in &n.inputs {
            let u = users.entry(i).or_default();
            if u.last() != Some(&k) {
                u.push(k);
            }
        }
    }
    let single = |k: usize| {
        let n = &g.nodes[k];
        !taken.contains(&k) && is_elementwise(&n.op) && n.outputs.len() == 1
    };
    let mut grouped: HashSet<usize> = HashSet::new();
    let mut groups = Vec::new();
    for s in 0..g.nodes.len() {
        if grouped.contains(&s) || !single(s) {
            continue;
        }
        let shape = &g.ty(g.nodes[s].outputs[0]).shape;
        let mut chain = vec![s];
        loop {
            let v = g.nodes[chain[chain.len() - 1]].outputs[0];
            if g.outputs.contains(&v) {
                break;
            }
            let Some([u]) = users.get(&v).map(|u| u.as_slice()) else {
                break;
            };
            if grouped.contains(u) || !single(*u) || &g.ty(g.nodes[*u].outputs[0]).shape != shape {
                break;
            }
            chain.push(*u);
        }
        if chain.len() > 1 {
            grouped.extend(&chain);
            groups.push(chain);
        }
    }
    groups
}

/// A generic with explicit maps and iterator types (for contractions and windows).
#[allow(clippy::too_many_arguments)]
fn generic(
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
    let mut text = format!(
        "{v} = linalg.generic {{indexing_maps = [{}], iterator_types = [{}]}} ins({} : {}) outs({init} : {}) {{\n",
        maps.join(", "),
        iters.join(", "),
        in_vals.join(", "),
        in_tys.join(", "),
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

/// A tensor of `t` filled with `x`.
fn filled(e: &mut E, t: &TensorType, x: f64) -> R<String> {
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

fn map(n: usize, exprs: &[String]) -> String {
    let d: Vec<String> = (0..n).map(|i| format!("d{i}")).collect();
    format!("affine_map<({}) -> ({})>", d.join(", "), exprs.join(", "))
}

fn matmul(e: &mut E, ins: &[(String, TensorType)], ot: &TensorType) -> R<String> {
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
    let init = filled(e, ot, 0.0)?;
    let dt = ot.dtype;
    Ok(generic(
        e,
        ins,
        &maps,
        &iters,
        init,
        ot,
        &mut |lines, a, out| {
            let m = binary_body(lines, BinaryOp::Mul, &a[0], &a[1], dt).unwrap_or_default();
            binary_body(lines, BinaryOp::Add, out, &m, dt).unwrap_or_default()
        },
    ))
}

/// An f32 `[M, K] x [K, N]` matmul (M may be the batch symbol) as a register-tiled kernel.
/// Columns go in panels of `w = 2 * simd`. For each panel (which stays in cache) and each block
/// of `rows` rows of A, `rows` vector accumulators take one broadcast-FMA per row and k. Rows
/// left over (all of them at batch 1) go one at a time over `GROUP` panels at once, so that
/// the FMAs still form independent chains. The last columns go under a mask. Every output
/// element sums over k in order, whichever tile computes it: a sample's result does not depend
/// on the batch it came in.
///
/// With `packed`, B is a constant stored by `pack_panels`: every panel is read contiguously
/// and the last one needs no mask. `None` when the shapes do not fit the kernel.
fn fast_matmul(
    e: &mut E,
    ins: &[(String, TensorType)],
    ot: &TensorType,
    packed: bool,
) -> R<Option<String>> {
    let (a, b) = (&ins[0], &ins[1]);
    let Some((k, n)) = fast_matmul_fits(&a.1, &b.1, ot) else {
        return Ok(None);
    };
    let m = e.dim_val(&a.1.shape[0])?;
    let out = e.empty(ot)?;
    Ok(Some(mm_kernel(
        e,
        &Mm {
            rows: Rows::Matrix {
                a: &a.0,
                at: tensor_ty(&a.1),
            },
            m,
            k,
            n,
            b: &b.0,
            bt: tensor_ty(&b.1),
            packed,
            ct: tensor_ty(ot),
            out,
        },
    )))
}

/// The operands of `mm_kernel`: A `[m, k]` (`m` an SSA index), B `[k, n]` (or packed), and the
/// empty output tensor `out` of type `ct`.
struct Mm<'a> {
    rows: Rows<'a>,
    m: String,
    k: usize,
    n: usize,
    b: &'a str,
    bt: String,
    packed: bool,
    ct: String,
    out: String,
}

/// Where `mm_kernel` reads A from.
enum Rows<'a> {
    /// A matrix `a` of type `at`.
    Matrix { a: &'a str, at: String },
    /// A convolution's input, read in place (implicit im2col).
    Conv(ConvA),
}

/// A channels-last 2-D convolution's input as the A of `mm_kernel`: row `(n, oh, ow)`, column
/// `(kh, kw, c)` is `x[n, oh * s0 + kh * d0 - p0, ow * s1 + kw * d1 - p1, c]`, zero outside.
struct ConvA {
    x: String,
    xt: String,
    /// Input height, width, channels; output height, width; kernel height, width.
    h: usize,
    w: usize,
    c: usize,
    oh: usize,
    ow: usize,
    kh: usize,
    kw: usize,
    strides: [usize; 2],
    dilations: [usize; 2],
    pads: [usize; 2],
    padded: bool,
}

/// The fewest column panels for which `mm_kernel` packs A first: each packed element is then
/// read at least this often.
const PACK_MIN_PANELS: usize = 32;

/// The type of A packed into micro-panels: `[tiles, k, rows]`.
fn packed_rows_ty(k: usize, rows: usize) -> String {
    format!("tensor<?x{k}x{rows}xf32>")
}

/// Rows `r0 .. r0 + mfull` (`mfull` a multiple of `rows`) of A (`[m, k]`, type `at`) packed
/// into micro-panels: `p[t, kk, r] = a[r0 + t * rows + r, kk]`. A register tile then reads its
/// `rows` values for each `kk` from one cache line, one stream for all its rows, where reading
/// A in place takes `rows` streams (whose lines may share a cache set: rows 4 KB apart do).
fn pack_rows(
    e: &mut E,
    (a, at): (&str, &str),
    r0: &str,
    mfull: &str,
    rows: usize,
    k: usize,
) -> String {
    let (c0, c1, ck, crows) = (e.idx(0), e.idx(1), e.idx(k as i64), e.idx(rows as i64));
    let pt = packed_rows_ty(k, rows);
    let nt = ix(e, "divui", mfull, &crows);
    let p0 = e.fresh();
    e.line(&format!("{p0} = tensor.empty({nt}) : {pt}"));
    for_carrying(e, &pt, &p0, (&c0, &nt, &c1), &mut |e, p, t| {
        let tr = ix(e, "muli", t, &crows);
        let base = ix(e, "addi", r0, &tr);
        let srcs: Vec<(String, String)> = (0..rows)
            .map(|r| {
                let cr = e.idx(r as i64);
                (ix(e, "addi", &base, &cr), cr)
            })
            .collect();
        for_carrying(e, &pt, p, (&c0, &ck, &c1), &mut |e, p, kk| {
            let mut cur = p.to_string();
            for (src, cr) in &srcs {
                let (x, y) = (e.fresh(), e.fresh());
                e.line(&format!("{x} = tensor.extract {a}[{src}, {kk}] : {at}"));
                e.line(&format!(
                    "{y} = tensor.insert {x} into {cur}[{t}, {kk}, {cr}] : {pt}"
                ));
                cur = y;
            }
            cur
        })
    })
}

fn mm_kernel(e: &mut E, mm: &Mm) -> String {
    const GROUP: usize = 4;
    let (k, n, packed) = (mm.k, mm.n, mm.packed);
    let (ct, m, b) = (&mm.ct, &mm.m, mm.b);
    let (a, at, conv) = match &mm.rows {
        Rows::Matrix { a, at } => (*a, at.as_str(), None),
        Rows::Conv(cv) => ("", "", Some(cv)),
    };
    let w = 2 * e.simd;
    let rows = if e.simd >= 16 { 8 } else { 6 };
    let vt = format!("vector<{w}xf32>");
    let bt = if packed {
        packed_ty(k, n, w)
    } else {
        mm.bt.clone()
    };
    let nfull = n - n % w;
    let min_rows = chunk_min_rows(k * n);
    // A matrix read by many panels is first packed into micro-panels (see `pack_rows`).
    let pack_a = conv.is_none() && n.div_ceil(w) >= PACK_MIN_PANELS;
    let (c0, c1, ck, cw) = (e.idx(0), e.idx(1), e.idx(k as i64), e.idx(w as i64));
    let out = mm.out.clone();
    // The tiles write a chunk of rows and columns (see `par_grid`).
    let st = if e.serial {
        ct.clone()
    } else {
        "tensor<?x?xf32>".to_string()
    };
    // The fused epilogue, applied to every accumulator before it is stored.
    let epi = std::mem::take(&mut e.epilogue);
    let zero = e.fresh();
    e.line(&format!("{zero} = arith.constant dense<0.0> : {vt}"));
    let pad = e.fresh();
    e.line(&format!("{pad} = arith.constant 0.0 : f32"));
    let crows = e.idx(rows as i64);
    let mask = if nfull < n {
        let mk = e.fresh();
        let crem = e.idx((n - nfull) as i64);
        e.line(&format!(
            "{mk} = vector.create_mask {crem} : vector<{w}xi1>"
        ));
        Some(mk)
    } else {
        None
    };

    // One tile: `nr` rows from `i` by `np` panels from column `j` (under the mask when
    // `masked`) of the chunk whose first row and column are `at`; threads the chunk's tensor `c`
    // through its writes and returns the result.
    let mut uid = 0usize;
    #[allow(clippy::too_many_arguments)]
    let tile = |e: &mut E,
                c: &str,
                (r0, j0): (&str, &str),
                i: &str,
                j: &str,
                (nr, np): (usize, usize),
                masked: bool,
                ap: Option<&str>| {
        uid += 1;
        let u = uid;
        let tmask = if masked { mask.as_deref() } else { None };
        let off = |e: &mut E, base: &str, d: usize| -> String {
            if d == 0 {
                return base.to_string();
            }
            let cd = e.idx(d as i64);
            let v = e.fresh();
            e.line(&format!("{v} = arith.addi {base}, {cd} : index"));
            v
        };
        // Rows of the chunk (where the tile writes) and of A (where it reads).
        let row_idx: Vec<String> = (0..nr).map(|r| off(e, i, r)).collect();
        let ia = e.fresh();
        e.line(&format!("{ia} = arith.addi {r0}, {i} : index"));
        let a_rows: Vec<String> = (0..nr).map(|r| off(e, &ia, r)).collect();
        let col_idx: Vec<String> = (0..np).map(|q| off(e, j, q * w)).collect();
        let jl = e.fresh();
        e.line(&format!("{jl} = arith.subi {j}, {j0} : index"));
        let col_out: Vec<String> = (0..np).map(|q| off(e, &jl, q * w)).collect();
        let panel_idx: Vec<String> = if packed {
            col_idx
                .iter()
                .map(|cj| {
                    let p = e.fresh();
                    e.line(&format!("{p} = arith.divui {cj}, {cw} : index"));
                    p
                })
                .collect()
        } else {
            Vec::new()
        };
        let acc = |r: usize, q: usize| format!("%acc{u}_{r}_{q}");
        let nacc = nr * np;
        let inits: Vec<String> = (0..nr)
            .flat_map(|r| (0..np).map(move |q| (r, q)))
            .map(|(r, q)| format!("{} = {zero}", acc(r, q)))
            .collect();
        let tys = vec![vt.clone(); nacc].join(", ");
        let kv = format!("%k{u}");
        let res = format!("%sum{u}");
        // A convolution's rows: (n, oh, ow) of each, and the top-left input pixel of its window.
        // The first row's by division; each next one by stepping ow (wrapping into oh, then n):
        // a tile of a convolution with few input channels has little work per row to hide
        // four divisions in.
        let conv_rows: Vec<(String, String, String)> = match conv {
            Some(cv) => {
                let (hw, ow, oh, s0, s1, p0, p1) = (
                    e.idx((cv.oh * cv.ow) as i64),
                    e.idx(cv.ow as i64),
                    e.idx(cv.oh as i64),
                    e.idx(cv.strides[0] as i64),
                    e.idx(cv.strides[1] as i64),
                    e.idx(cv.pads[0] as i64),
                    e.idx(cv.pads[1] as i64),
                );
                let op = |e: &mut E, rhs: String| {
                    let v = e.fresh();
                    e.line(&format!("{v} = {rhs}"));
                    v
                };
                let ri = &a_rows[0];
                let mut n = op(e, format!("arith.divui {ri}, {hw} : index"));
                let rem = op(e, format!("arith.remui {ri}, {hw} : index"));
                let mut h = op(e, format!("arith.divui {rem}, {ow} : index"));
                let mut w = op(e, format!("arith.remui {rem}, {ow} : index"));
                let mut out = Vec::new();
                for r in 0..a_rows.len() {
                    if r > 0 {
                        let w1 = op(e, format!("arith.addi {w}, {c1} : index"));
                        let wrap = op(e, format!("arith.cmpi eq, {w1}, {ow} : index"));
                        w = op(e, format!("arith.select {wrap}, {c0}, {w1} : index"));
                        let h1 = op(e, format!("arith.addi {h}, {c1} : index"));
                        let h2 = op(e, format!("arith.select {wrap}, {h1}, {h} : index"));
                        let hwrap = op(e, format!("arith.cmpi eq, {h2}, {oh} : index"));
                        h = op(e, format!("arith.select {hwrap}, {c0}, {h2} : index"));
                        let n1 = op(e, format!("arith.addi {n}, {c1} : index"));
                        n = op(e, format!("arith.select {hwrap}, {n1}, {n} : index"));
                    }
                    let hs = op(e, format!("arith.muli {h}, {s0} : index"));
                    let ih = op(e, format!("arith.subi {hs}, {p0} : index"));
                    let ws = op(e, format!("arith.muli {w}, {s1} : index"));
                    let iw = op(e, format!("arith.subi {ws}, {p1} : index"));
                    out.push((n.clone(), ih, iw));
                }
                out
            }
            None => Vec::new(),
        };
        // The tile's micro-panel of packed A (see `pack_rows`).
        let ap_tile = ap.map(|p| {
            let t = e.fresh();
            e.line(&format!("{t} = arith.divui {i}, {crows} : index"));
            (p, t)
        });
        let mut body = String::new();
        let mut close = String::new();
        match conv {
            None => {
                let _ = writeln!(
                    body,
                    "{res}:{nacc} = scf.for {kv} = {c0} to {ck} step {c1} iter_args({}) -> ({tys}) {{",
                    inits.join(", ")
                );
            }
            Some(cv) => {
                // k runs as (kh, kw, c): three loops, the accumulators threaded through.
                let names = |p: &str| -> Vec<String> {
                    (0..nacc).map(|i| format!("%{p}{u}_{i}")).collect()
                };
                let (ah, aw) = (names("ah"), names("aw"));
                let bind = |xs: &[String], ys: &[String]| -> String {
                    xs.iter()
                        .zip(ys)
                        .map(|(x, y)| format!("{x} = {y}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                let zeros = vec![zero.clone(); nacc];
                let (ckh, ckw, cc, cwd) = (
                    e.idx(cv.kh as i64),
                    e.idx(cv.kw as i64),
                    e.idx(cv.c as i64),
                    e.idx(cv.kw as i64),
                );
                let _ = writeln!(
                    body,
                    "{res}:{nacc} = scf.for %kh{u} = {c0} to {ckh} step {c1} iter_args({}) -> ({tys}) {{",
                    bind(&ah, &zeros)
                );
                let _ = writeln!(
                    body,
                    "      %rw{u}:{nacc} = scf.for %kw{u} = {c0} to {ckw} step {c1} iter_args({}) -> ({tys}) {{",
                    bind(&aw, &ah)
                );
                let _ = writeln!(body, "      %kr{u} = arith.muli %kh{u}, {cwd} : index");
                let _ = writeln!(body, "      %ks{u} = arith.addi %kr{u}, %kw{u} : index");
                let _ = writeln!(body, "      %kb{u} = arith.muli %ks{u}, {cc} : index");
                let (d0, d1) = (e.idx(cv.dilations[0] as i64), e.idx(cv.dilations[1] as i64));
                let (hh, ww) = (e.idx(cv.h as i64), e.idx(cv.w as i64));
                let _ = writeln!(body, "      %dh{u} = arith.muli %kh{u}, {d0} : index");
                let _ = writeln!(body, "      %dw{u} = arith.muli %kw{u}, {d1} : index");
                for (r, (_, ih0, iw0)) in conv_rows.iter().enumerate() {
                    let _ = writeln!(body, "      %ih{u}_{r} = arith.addi {ih0}, %dh{u} : index");
                    let _ = writeln!(body, "      %iw{u}_{r} = arith.addi {iw0}, %dw{u} : index");
                    if cv.padded {
                        let s = format!("{u}_{r}");
                        let _ =
                            writeln!(body, "      %g0{s} = arith.cmpi sge, %ih{s}, {c0} : index");
                        let _ =
                            writeln!(body, "      %g1{s} = arith.cmpi slt, %ih{s}, {hh} : index");
                        let _ =
                            writeln!(body, "      %g2{s} = arith.cmpi sge, %iw{s}, {c0} : index");
                        let _ =
                            writeln!(body, "      %g3{s} = arith.cmpi slt, %iw{s}, {ww} : index");
                        let _ = writeln!(body, "      %g4{s} = arith.andi %g0{s}, %g1{s} : i1");
                        let _ = writeln!(body, "      %g5{s} = arith.andi %g2{s}, %g3{s} : i1");
                        let _ = writeln!(body, "      %in{s} = arith.andi %g4{s}, %g5{s} : i1");
                        let _ = writeln!(
                            body,
                            "      %ihc{s} = arith.select %in{s}, %ih{s}, {c0} : index"
                        );
                        let _ = writeln!(
                            body,
                            "      %iwc{s} = arith.select %in{s}, %iw{s}, {c0} : index"
                        );
                    }
                }
                let _ = writeln!(
                    body,
                    "      %rc{u}:{nacc} = scf.for %ci{u} = {c0} to {cc} step {c1} iter_args({}) -> ({tys}) {{",
                    bind(
                        &(0..nr)
                            .flat_map(|r| (0..np).map(move |q| (r, q)))
                            .map(|(r, q)| acc(r, q))
                            .collect::<Vec<_>>(),
                        &aw
                    )
                );
                let _ = writeln!(body, "      {kv} = arith.addi %kb{u}, %ci{u} : index");
                let res_list = |p: &str| -> String {
                    (0..nacc)
                        .map(|i| format!("%{p}{u}#{i}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                let _ = write!(
                    close,
                    "\n      scf.yield {} : {tys}\n    }}\n      scf.yield {} : {tys}\n    }}",
                    res_list("rc"),
                    res_list("rw")
                );
            }
        }
        for q in 0..np {
            let bv = format!("%b{u}_{q}");
            // Packed panels are padded to whole vectors: no mask.
            let read = if packed {
                format!(
                    "{b}[{}, {kv}, {c0}], {pad}{}",
                    panel_idx[q],
                    transfer_tail(None)
                )
            } else {
                format!("{b}[{kv}, {}], {pad}{}", col_idx[q], transfer_tail(tmask))
            };
            let _ = writeln!(
                body,
                "      {bv} = vector.transfer_read {read} : {bt}, {vt}"
            );
        }
        let mut next = Vec::new();
        for (r, ri) in a_rows.iter().enumerate() {
            match conv {
                None => match &ap_tile {
                    Some((p, t)) => {
                        let cr = e.idx(r as i64);
                        let _ = writeln!(
                            body,
                            "      %x{u}_{r} = tensor.extract {p}[{t}, {kv}, {cr}] : {}",
                            packed_rows_ty(k, rows)
                        );
                    }
                    None => {
                        let _ = writeln!(
                            body,
                            "      %x{u}_{r} = tensor.extract {}[{ri}, {kv}] : {at}",
                            a
                        );
                    }
                },
                Some(cv) => {
                    let s = format!("{u}_{r}");
                    let (n_r, ihv, iwv) = if cv.padded {
                        (&conv_rows[r].0, format!("%ihc{s}"), format!("%iwc{s}"))
                    } else {
                        (&conv_rows[r].0, format!("%ih{s}"), format!("%iw{s}"))
                    };
                    let raw = if cv.padded {
                        format!("%xr{s}")
                    } else {
                        format!("%x{s}")
                    };
                    let _ = writeln!(
                        body,
                        "      {raw} = tensor.extract {}[{n_r}, {ihv}, {iwv}, %ci{u}] : {}",
                        cv.x, cv.xt
                    );
                    if cv.padded {
                        let _ = writeln!(
                            body,
                            "      %x{s} = arith.select %in{s}, {raw}, {pad} : f32"
                        );
                    }
                }
            }
            let _ = writeln!(
                body,
                "      %xb{u}_{r} = vector.broadcast %x{u}_{r} : f32 to {vt}"
            );
            for q in 0..np {
                let _ = writeln!(
                    body,
                    "      %n{u}_{r}_{q} = vector.fma %xb{u}_{r}, %b{u}_{q}, {} : {vt}",
                    acc(r, q)
                );
                next.push(format!("%n{u}_{r}_{q}"));
            }
        }
        let _ = write!(
            body,
            "      scf.yield {} : {tys}\n    }}{close}",
            next.join(", ")
        );
        e.line(&body);
        // The epilogue's operands for each panel of columns, then the stores.
        let operands: Vec<Vec<String>> = col_idx
            .iter()
            .map(|cj| {
                epi.iter()
                    .map(|x| x.operand(e, cj, &vt, &zero, &pad, tmask))
                    .collect()
            })
            .collect();
        let mut cur = c.to_string();
        for (r, ri) in row_idx.iter().enumerate() {
            for (q, cj) in col_out.iter().enumerate() {
                let mut val = format!("{res}#{}", r * np + q);
                for (x, opnd) in epi.iter().zip(&operands[q]) {
                    val = x.apply(e, &val, opnd, &vt);
                }
                let v = e.fresh();
                e.line(&format!(
                    "{v} = vector.transfer_write {val}, {cur}[{ri}, {cj}]{} : {vt}, {st}",
                    transfer_tail(tmask)
                ));
                cur = v;
            }
        }
        cur
    };
    let for_c = |e: &mut E,
                 c: &str,
                 range: (&str, &str, &str),
                 inner: &mut dyn FnMut(&mut E, &str, &str) -> String| {
        for_carrying(e, &st, c, range, inner)
    };
    let (cnfull, cgw) = (e.idx(nfull as i64), e.idx((GROUP * w) as i64));
    let tile = std::cell::RefCell::new(tile);
    // Each chunk (rows `r0..r0 + len`, column panels from `j0`; see `par_grid`): row blocks panel
    // by panel, then the masked last panel (in the last column chunk); then the rows left over,
    // in blocks of 4 and 2 rows and a last single row (panels in groups, single panels, the
    // masked last one).
    let panels = n.div_ceil(w);
    par_grid(
        e,
        &out,
        ct,
        (m, rows, min_rows),
        (panels, w, nfull, n),
        &mut |e, c, ch| {
            let Chunk {
                r0,
                len,
                j0,
                jf,
                last,
            } = ch;
            let origin = (r0, j0);
            let (rem, mfull) = (e.fresh(), e.fresh());
            e.line(&format!("{rem} = arith.remui {len}, {crows} : index"));
            e.line(&format!("{mfull} = arith.subi {len}, {rem} : index"));
            let ap = if pack_a {
                Some(pack_rows(e, (a, at), r0, &mfull, rows, k))
            } else {
                None
            };
            let ap = ap.as_deref();
            let mut c = for_c(e, c, (j0, jf, &cw), &mut |e, c, j| {
                for_c(e, c, (&c0, &mfull, &crows), &mut |e, c, i| {
                    (tile.borrow_mut())(e, c, origin, i, j, (rows, 1), false, ap)
                })
            });
            if mask.is_some() {
                c = if_carrying(e, &st, last, &c, &mut |e, c| {
                    for_c(e, c, (&c0, &mfull, &crows), &mut |e, c, i| {
                        (tile.borrow_mut())(e, c, origin, i, &cnfull, (rows, 1), true, ap)
                    })
                });
            }
            // The `rem` rows left over (fewer than `rows`) in blocks of 4 and 2 rows (the bits of
            // `rem`, largest first), each block panel by panel: B is read once per block, where
            // single rows read all of it once each.
            let mut blocks = Vec::new();
            let mut nr = (rows - 1).next_power_of_two() / 2;
            while nr >= 2 {
                blocks.push(nr);
                nr /= 2;
            }
            for &nr in &blocks {
                let (cnr, above) = (e.idx(nr as i64), e.idx(!(2 * nr as i64 - 1)));
                // A loop of one step when `rem` has the bit `nr`, of none when not.
                let (bit, before, lo, hi) = (e.fresh(), e.fresh(), e.fresh(), e.fresh());
                e.line(&format!("{bit} = arith.andi {rem}, {cnr} : index"));
                e.line(&format!("{before} = arith.andi {rem}, {above} : index"));
                e.line(&format!("{lo} = arith.addi {mfull}, {before} : index"));
                e.line(&format!("{hi} = arith.addi {lo}, {bit} : index"));
                c = for_c(e, &c, (&lo, &hi, &cnr), &mut |e, c, i| {
                    let mut c = for_c(e, c, (j0, jf, &cw), &mut |e, c, j| {
                        (tile.borrow_mut())(e, c, origin, i, j, (nr, 1), false, None)
                    });
                    if mask.is_some() {
                        c = if_carrying(e, &st, last, &c, &mut |e, c| {
                            (tile.borrow_mut())(e, c, origin, i, &cnfull, (nr, 1), true, None)
                        });
                    }
                    c
                });
            }
            // The last row (when `rem` is odd): panels in groups of GROUP up to `jg`, then one by
            // one.
            let (span, whole, jg) = (e.fresh(), e.fresh(), e.fresh());
            e.line(&format!("{span} = arith.subi {jf}, {j0} : index"));
            e.line(&format!("{whole} = arith.remui {span}, {cgw} : index"));
            e.line(&format!("{jg} = arith.subi {jf}, {whole} : index"));
            let (odd, i1) = (e.fresh(), e.fresh());
            let ceven = e.idx(!1);
            e.line(&format!("{odd} = arith.andi {rem}, {ceven} : index"));
            e.line(&format!("{i1} = arith.addi {mfull}, {odd} : index"));
            for_c(e, &c, (&i1, len, &c1), &mut |e, c, i| {
                let mut c = for_c(e, c, (j0, &jg, &cgw), &mut |e, c, j| {
                    (tile.borrow_mut())(e, c, origin, i, j, (1, GROUP), false, None)
                });
                c = for_c(e, &c, (&jg, jf, &cw), &mut |e, c, j| {
                    (tile.borrow_mut())(e, c, origin, i, j, (1, 1), false, None)
                });
                if mask.is_some() {
                    c = if_carrying(e, &st, last, &c, &mut |e, c| {
                        (tile.borrow_mut())(e, c, origin, i, &cnfull, (1, 1), true, None)
                    });
                }
                c
            })
        },
    )
}

/// `scf.if cond` on a value of type `ty`: `inner(init)` when it holds, `init` when not.
fn if_carrying(
    e: &mut E,
    ty: &str,
    cond: &str,
    init: &str,
    inner: &mut dyn FnMut(&mut E, &str) -> String,
) -> String {
    let r = e.fresh();
    let saved = std::mem::take(&mut e.body);
    let t = inner(e, init);
    e.line(&format!("scf.yield {t} : {ty}"));
    let body = std::mem::replace(&mut e.body, saved);
    e.line(&format!(
        "{r} = scf.if {cond} -> ({ty}) {{\n{body}    }} else {{\n      scf.yield {init} : {ty}\n    }}"
    ));
    r
}

/// One chunk of `mm_kernel`'s output (SSA values): rows `r0..r0 + len`; the full column panels
/// from column `j0` to `jf`; `last` (i1) when the chunk also has the masked last panel.
struct Chunk<'a> {
    r0: &'a str,
    len: &'a str,
    j0: &'a str,
    jf: &'a str,
    last: &'a str,
}

/// `par_rows` for `mm_kernel`, whose rows may be too few to give every thread a chunk (a dense
/// layer at batch 1): the threads the row chunks leave split the column panels. `(m, align,
/// min_rows)` as for `chunks`; `(panels, w, nfull, n)`: the output's `n` columns in panels of
/// `w`, the last one masked when `nfull` (the columns in full panels) is short of `n`. A chunk
/// of columns gets at least `MIN_CHUNK_MACS` too. `body` gets the chunk's slice of `out`
/// (`tensor<?x?xf32>`, its first row and column at 0) and where it lies.
fn par_grid(
    e: &mut E,
    out: &str,
    ct: &str,
    (m, align, min_rows): (&str, usize, usize),
    (panels, w, nfull, n): (usize, usize, usize, usize),
    body: &mut dyn FnMut(&mut E, &str, Chunk) -> String,
) -> String {
    if e.serial {
        // The whole output, on this thread.
        let (c0, cnfull, yes) = (e.idx(0), e.idx(nfull as i64), e.fresh());
        e.line(&format!("{yes} = arith.constant true"));
        return body(
            e,
            out,
            Chunk {
                r0: &c0,
                len: m,
                j0: &c0,
                jf: &cnfull,
                last: &yes,
            },
        );
    }
    let nt = threads(e);
    let (tr, per) = chunks(e, &nt, m, align, min_rows);
    let (cn, cp, cw, cnfull, cmin, c1) = (
        e.idx(n as i64),
        e.idx(panels as i64),
        e.idx(w as i64),
        e.idx(nfull as i64),
        e.idx(min_rows as i64),
        e.idx(1),
    );
    // Column chunks: the threads left per row chunk, at most one per panel, each with at least
    // `min_rows` rows' worth of work.
    let left = ix(e, "divui", &nt, &tr);
    let work = ix(e, "muli", m, &cp);
    let least = ix(e, "muli", &cmin, &tr);
    let by_work = ix(e, "divui", &work, &least);
    let upto = ix(e, "minui", &left, &cp);
    let upto = ix(e, "minui", &upto, &by_work);
    let tc = ix(e, "maxui", &upto, &c1);
    let pper = ix(e, "ceildivui", &cp, &tc);
    let st = "tensor<?x?xf32>";
    let (a, b, o, res) = (e.fresh(), e.fresh(), e.fresh(), e.fresh());
    let saved = std::mem::take(&mut e.body);
    let (r0, _, len) = span(e, &a, &per, m);
    let (p0, p1, _) = span(e, &b, &pper, &cp);
    let j0 = ix(e, "muli", &p0, &cw);
    let j1 = ix(e, "muli", &p1, &cw);
    let jf = ix(e, "minui", &j1, &cnfull);
    // The chunk's columns: its full panels, and the masked one when it is the last chunk.
    let last = ix(e, "cmpi eq,", &p1, &cp);
    let end = e.fresh();
    e.line(&format!("{end} = arith.select {last}, {cn}, {jf} : index"));
    let width = ix(e, "subi", &end, &j0);
    let slice = e.fresh();
    e.line(&format!(
        "{slice} = tensor.extract_slice {o}[{r0}, {j0}] [{len}, {width}] [1, 1] : {ct} to {st}"
    ));
    let chunk = Chunk {
        r0: &r0,
        len: &len,
        j0: &j0,
        jf: &jf,
        last: &last,
    };
    let y = body(e, &slice, chunk);
    e.line(&format!(
        "scf.forall.in_parallel {{\n      tensor.parallel_insert_slice {y} into {o}[{r0}, {j0}] [{len}, {width}] [1, 1] : {st} into {ct}\n    }}"
    ));
    let inner = std::mem::replace(&mut e.body, saved);
    e.line(&format!(
        "{res} = scf.forall ({a}, {b}) in ({tr}, {tc}) shared_outs({o} = {out}) -> ({ct}) {{\n{inner}    }}"
    ));
    res
}

/// `%v = arith.<op> a, b : index`, `%v` fresh (`op` may carry a predicate: `"cmpi eq,"`).
fn ix(e: &mut E, op: &str, a: &str, b: &str) -> String {
    let v = e.fresh();
    e.line(&format!("{v} = arith.{op} {a}, {b} : index"));
    v
}

/// The threads the calling context lends the kernels (see `capi::ASYNC_RUNTIME`).
fn threads(e: &mut E) -> String {
    let v = e.fresh();
    e.line(&format!("{v} = func.call @forgec_threads() : () -> index"));
    v
}

/// Chunk `t` of `per` items out of `n`: its first item, its end and its length (an empty chunk
/// at `n` when there are more chunks than items).
fn span(e: &mut E, t: &str, per: &str, n: &str) -> (String, String, String) {
    let at = ix(e, "muli", t, per);
    let start = ix(e, "minui", &at, n);
    let to = ix(e, "addi", &start, per);
    let end = ix(e, "minui", &to, n);
    let len = ix(e, "subi", &end, &start);
    (start, end, len)
}

/// Below this many multiply-adds a chunk of a kernel is not worth handing to another thread.
const MIN_CHUNK_MACS: usize = 1 << 15;

/// The fewest rows of `macs_row` multiply-adds each that make a chunk worth a thread.
fn chunk_min_rows(macs_row: usize) -> usize {
    MIN_CHUNK_MACS.div_ceil(macs_row.max(1))
}

/// How many chunks to cut `m` rows into, and the rows per chunk: no more chunks than `nt`, the
/// threads the calling context lends (`threads`), each a whole number of
/// `align`-row blocks and of at least `min_rows` rows. At least one chunk, so that nothing divides by zero;
/// a chunk of no rows when `m` is 0.
fn chunks(e: &mut E, nt: &str, m: &str, align: usize, min_rows: usize) -> (String, String) {
    let (ca, cmin, c1) = (e.idx(align as i64), e.idx(min_rows as i64), e.idx(1));
    let blocks = ix(e, "ceildivui", m, &ca);
    let by_work = ix(e, "divui", m, &cmin);
    let upto = ix(e, "minui", nt, &blocks);
    let upto = ix(e, "minui", &upto, &by_work);
    let count = ix(e, "maxui", &upto, &c1);
    let per_blocks = ix(e, "ceildivui", &blocks, &count);
    let per = ix(e, "muli", &per_blocks, &ca);
    let per = ix(e, "maxui", &per, &c1);
    (count, per)
}

/// Runs `body` on chunks of the rows of `out` (`[m, inner...]`, type `ct`), in parallel: an
/// `scf.forall` whose chunks (see `chunks`) each get a slice `tensor<?xinner...xf32>` of their
/// rows.
/// `body(e, slice, r0, len)` writes the slice's `len` rows (row `r0` of `out` first) and returns
/// it. The forall becomes tasks on the context's thread pool (`async-parallel-for`); a chunk's
/// elements are computed exactly as without threads.
#[allow(clippy::too_many_arguments)]
fn par_rows(
    e: &mut E,
    out: &str,
    ct: &str,
    m: &str,
    inner: &[usize],
    align: usize,
    min_rows: usize,
    body: &mut dyn FnMut(&mut E, &str, &str, &str) -> String,
) -> String {
    par_slices(e, out, ct, (&[], m, inner), align, min_rows, body)
}

/// `par_rows` along an axis after `outer` whole dims: `out` is `[outer..., m, inner...]`, each
/// chunk's slice `tensor<outer...x?xinner...xf32>`.
fn par_slices(
    e: &mut E,
    out: &str,
    ct: &str,
    (outer, m, inner): (&[usize], &str, &[usize]),
    align: usize,
    min_rows: usize,
    body: &mut dyn FnMut(&mut E, &str, &str, &str) -> String,
) -> String {
    let nt = threads(e);
    let (count, per) = chunks(e, &nt, m, align, min_rows);
    let dims = |ds: &[usize]| -> String { ds.iter().map(|d| format!("{d}x")).collect() };
    let st = format!("tensor<{}?x{}f32>", dims(outer), dims(inner));
    let sizes = |ds: &[usize]| -> String { ds.iter().map(|d| format!("{d}, ")).collect() };
    let (zeros_o, zeros_i) = ("0, ".repeat(outer.len()), ", 0".repeat(inner.len()));
    let (ones_o, ones_i) = ("1, ".repeat(outer.len()), ", 1".repeat(inner.len()));
    let sizes_i: String = inner.iter().map(|d| format!(", {d}")).collect();
    let (t, o, res) = (e.fresh(), e.fresh(), e.fresh());
    let saved = std::mem::take(&mut e.body);
    let (r0, _, len) = span(e, &t, &per, m);
    let slice = e.fresh();
    let at = format!(
        "[{zeros_o}{r0}{zeros_i}] [{}{len}{sizes_i}] [{ones_o}1{ones_i}]",
        sizes(outer)
    );
    e.line(&format!(
        "{slice} = tensor.extract_slice {o}{at} : {ct} to {st}"
    ));
    let y = body(e, &slice, &r0, &len);
    e.line(&format!(
        "scf.forall.in_parallel {{\n      tensor.parallel_insert_slice {y} into {o}{at} : {st} into {ct}\n    }}"
    ));
    let inner = std::mem::replace(&mut e.body, saved);
    e.line(&format!(
        "{res} = scf.forall ({t}) in ({count}) shared_outs({o} = {out}) -> ({ct}) {{
{inner}    }}"
    ));
    res
}

/// A matmul by the tiled kernel when it fits (an A of rank 3 or more against a 2-D B is taken
/// as one `[rows, K]` matrix), else by the generic lowering.
fn mm_any(e: &mut E, ins: &[(String, TensorType)], ot: &TensorType) -> R<String> {
    let (a, b) = (&ins[0], &ins[1]);
    if a.1.rank() >= 3 && b.1.rank() == 2 && ot.rank() == a.1.rank() {
        let r = a.1.rank();
        let lead_known = a.1.shape[1..r - 1].iter().all(|d| d.known().is_some());
        let (Some(k), Some(n)) = (b.1.shape[0].known(), b.1.shape[1].known()) else {
            return matmul(e, ins, ot);
        };
        let f32_only = [&a.1, &b.1, ot].iter().all(|t| t.dtype == DType::F32);
        if lead_known && f32_only && a.1.shape[r - 1].known() == Some(k) {
            let inner: usize = a.1.shape[1..r - 1]
                .iter()
                .filter_map(|d| d.known())
                .product();
            let (m, mdim) = rows_of(e, &a.1.shape[0], inner)?;
            let at = format!("tensor<{mdim}x{k}xf32>");
            let flat = e.fresh();
            e.line(&format!(
                "{flat} = tensor.collapse_shape {} {} : {} into {at}",
                a.0,
                reassociation(r - 1, r),
                tensor_ty(&a.1)
            ));
            let (out, ct) = empty_rows(e, (&m, &mdim), n);
            let y = mm_kernel(
                e,
                &Mm {
                    rows: Rows::Matrix { a: &flat, at },
                    m,
                    k,
                    n,
                    b: &b.0,
                    bt: tensor_ty(&b.1),
                    packed: false,
                    ct: ct.clone(),
                    out,
                },
            );
            return unflatten_rows(e, &y, &ct, ot);
        }
    }
    match fast_matmul(e, ins, ot, false)? {
        Some(v) => Ok(v),
        None => matmul(e, ins, ot),
    }
}

fn shape_tensor(e: &mut E, t: &TensorType) -> R<String> {
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

fn reshape(e: &mut E, x: &(String, TensorType), ot: &TensorType) -> R<String> {
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

fn reduce(
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
    let kt = TensorType::new(dt, kept);
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
    let init = filled(e, &kt, init_v)?;
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
        &kt,
        &mut |lines, a, out| binary_body(lines, op, out, &a[0], dt).unwrap_or_default(),
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
        if has_sym.is_some() {
            return Err("a mean over a symbolic dim is not compiled yet".into());
        }
        let kt2 = kt.clone();
        v = e.elementwise(&kt2, &[(v, kt.clone())], &mut |lines, a| {
            let c = push(lines, E::scalar_const(dt, count as f64));
            binary_body(lines, BinaryOp::Div, &a[0], &c, dt).unwrap_or_default()
        })?;
    }
    if !keepdims {
        v = reshape(e, &(v, kt), ot)?;
    }
    Ok(v)
}

fn softmax(
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

fn concat(e: &mut E, ins: &[(String, TensorType)], axis: usize, ot: &TensorType) -> R<String> {
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

fn pad(
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
fn pad_from_inside(
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

fn gather(
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

fn const_of<'a>(e: &'a E, v: ValueId) -> Option<&'a Tensor> {
    e.g.nodes
        .iter()
        .find(|n| n.outputs.contains(&v))
        .and_then(|n| match &n.op {
            Op::Const { value, .. } => Some(value),
            _ => None,
        })
}

fn batch_norm(
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
fn batch_norm_computed(
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

fn layer_norm(
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
fn layout_axes(rank: usize, layout: Layout) -> (usize, Vec<usize>, usize) {
    match layout {
        Layout::ChannelsLast => (0, (1..rank - 1).collect(), rank - 1),
        Layout::ChannelsFirst => (0, (2..rank).collect(), 1),
    }
}

/// Whether a convolution runs as a matmul (`fast_conv`): f32, channels-last, one group, every
/// dim but the batch known.
fn fast_conv_fits(x: &TensorType, w: &TensorType, c: &ConvAttrs, ot: &TensorType) -> bool {
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
fn fast_conv(
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
    let pre_pad = implicit && padded && cin < e.simd;
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

/// `batch * per` rows: their count as an SSA index, and as a type dim (`?` when the batch is
/// symbolic).
fn rows_of(e: &mut E, batch: &Dim, per: usize) -> R<(String, String)> {
    Ok(match batch.known() {
        Some(nb) => (e.idx((nb * per) as i64), (nb * per).to_string()),
        None => {
            let nb = e.dim_val(batch)?;
            let c = e.idx(per as i64);
            let v = e.fresh();
            e.line(&format!("{v} = arith.muli {nb}, {c} : index"));
            (v, "?".to_string())
        }
    })
}

/// An empty `[rows, n]` f32 tensor (`rows` from `rows_of`) for `mm_kernel`: (value, type).
fn empty_rows(e: &mut E, (m, mdim): (&str, &str), n: usize) -> (String, String) {
    let ct = format!("tensor<{mdim}x{n}xf32>");
    let out = e.fresh();
    let sizes = if mdim == "?" { m } else { "" };
    e.line(&format!("{out} = tensor.empty({sizes}) : {ct}"));
    (out, ct)
}

/// `[[0, .., split - 1], [split, .., rank - 1]]`: flattens the dims before `split` and those
/// from it.
fn reassociation(split: usize, rank: usize) -> String {
    let list = |r: std::ops::Range<usize>| r.map(|i| i.to_string()).collect::<Vec<_>>().join(", ");
    format!("[[{}], [{}]]", list(0..split), list(split..rank))
}

/// A kernel's `[rows, n]` result `y` (type `ct`) over the flattened leading dims of `ot`,
/// expanded back to `ot` (static dims as numbers, the batch as its SSA size).
fn unflatten_rows(e: &mut E, y: &str, ct: &str, ot: &TensorType) -> R<String> {
    let r = ot.rank();
    let mut sizes = vec![match ot.shape[0].known() {
        Some(nb) => nb.to_string(),
        None => e.dim_val(&ot.shape[0])?,
    }];
    sizes.extend(
        ot.shape[1..]
            .iter()
            .filter_map(|d| d.known())
            .map(|v| v.to_string()),
    );
    let v = e.fresh();
    e.line(&format!(
        "{v} = tensor.expand_shape {y} {} output_shape [{}] : {ct} into {}",
        reassociation(r - 1, r),
        sizes.join(", "),
        tensor_ty(ot)
    ));
    Ok(v)
}

/// The rows of a convolution as a matrix `[N * out..., k... * C]` (im2col, after padding the
/// input; a 1x1 stride-1 convolution uses its input as it is): (value, type).
fn im2col_rows(
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
fn depthwise_fits(x: &TensorType, w: &TensorType, c: &ConvAttrs, ot: &TensorType) -> bool {
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
fn depthwise(
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
fn fast_pool(
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
enum Win<'a> {
    /// Multiply-add with the per-channel kernel (weights `[kh, kw, 1, C]`).
    Depthwise(&'a (String, TensorType)),
    Max,
    /// Sum, then divide by the window's size (no padding, so every window is whole).
    Avg,
}

/// The window of a 2-D window kernel.
struct Window<'a> {
    k: [usize; 2],
    strides: &'a [usize],
    dilations: &'a [usize],
    pads: &'a [(usize, usize)],
}

/// A 2-D window op over channels-last data, vectorized across channels: for each output
/// pixel and each vector of channels, one accumulator takes every window tap, reading the
/// input in place (taps that fall in the padding read a clamped pixel and use zero instead),
/// and the fused epilogue runs before the store.
fn window_kernel(
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
    let lanes = 2 * e.simd;
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

/// The convolution's input with its padding applied (zeros).
fn pad_input(e: &mut E, x: &(String, TensorType), c: &ConvAttrs) -> R<(String, TensorType)> {
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

fn conv(
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
    let init = filled(e, ot, 0.0)?;
    let dt = ot.dtype;
    Ok(generic(
        e,
        &[x, w.clone()],
        &maps,
        &iters,
        init,
        ot,
        &mut |lines, a, out| {
            let m = binary_body(lines, BinaryOp::Mul, &a[0], &a[1], dt).unwrap_or_default();
            binary_body(lines, BinaryOp::Add, out, &m, dt).unwrap_or_default()
        },
    ))
}

fn pool(
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

/// Scalar code for a recurrent cell's activation.
/// The f32 polynomial with `coeffs` (highest degree first) at `x`, by Horner's rule with FMAs.
fn horner(lines: &mut Vec<String>, x: &str, coeffs: &[f64]) -> String {
    let mut y = push(lines, E::scalar_const(DType::F32, coeffs[0]));
    for &k in &coeffs[1..] {
        let kc = push(lines, E::scalar_const(DType::F32, k));
        y = push(lines, format!("math.fma {y}, {x}, {kc} : f32"));
    }
    y
}

/// f32 `exp` without a libm call, so that loops of it vectorize: Cody-Waite range reduction
/// (`x = n ln2 + r`), a degree-7 polynomial for `exp(r)` (Cephes' coefficients) and `2^n` built
/// in the exponent bits, as two factors so that neither leaves the normal range (results down
/// to the subnormals come out right). At most 1.4 ulp from the exact value over the normal
/// range (measured on 3M points); `+inf` above 88.7228, `0` below -103.97, NaN stays NaN.
fn exp_f32(lines: &mut Vec<String>, x: &str) -> String {
    let c = |lines: &mut Vec<String>, v: f64| push(lines, E::scalar_const(DType::F32, v));
    let (lo, hi) = (c(lines, -103.972), c(lines, 88.722_839_05));
    let a = push(lines, format!("arith.maximumf {x}, {lo} : f32"));
    let a = push(lines, format!("arith.minimumf {a}, {hi} : f32"));
    let (log2e, half) = (c(lines, std::f64::consts::LOG2_E), c(lines, 0.5));
    let m = push(lines, format!("arith.mulf {a}, {log2e} : f32"));
    let m = push(lines, format!("arith.addf {m}, {half} : f32"));
    let n = push(lines, format!("math.floor {m} : f32"));
    let (c1, c2) = (c(lines, -0.693_359_375), c(lines, 2.121_944_4e-4));
    let r = push(lines, format!("math.fma {n}, {c1}, {a} : f32"));
    let r = push(lines, format!("math.fma {n}, {c2}, {r} : f32"));
    let y = horner(
        lines,
        &r,
        &[
            1.987_569_15e-4,
            1.398_199_950_7e-3,
            8.333_451_907_3e-3,
            4.166_579_589_4e-2,
            1.666_666_545_9e-1,
            5.000_000_120_1e-1,
        ],
    );
    let r2 = push(lines, format!("arith.mulf {r}, {r} : f32"));
    let one = c(lines, 1.0);
    let r1 = push(lines, format!("arith.addf {r}, {one} : f32"));
    let y = push(lines, format!("math.fma {y}, {r2}, {r1} : f32"));
    // 2^n = 2^(n >> 1) * 2^(n - (n >> 1)), each factor (k + 127) << 23 as the bits of an f32.
    let ni = push(lines, format!("arith.fptosi {n} : f32 to i32"));
    let (bias, shift, one_i) = (
        push(lines, "arith.constant 127 : i32".into()),
        push(lines, "arith.constant 23 : i32".into()),
        push(lines, "arith.constant 1 : i32".into()),
    );
    let n1 = push(lines, format!("arith.shrsi {ni}, {one_i} : i32"));
    let n2 = push(lines, format!("arith.subi {ni}, {n1} : i32"));
    let mut v = y;
    for k in [n1, n2] {
        let kb = push(lines, format!("arith.addi {k}, {bias} : i32"));
        let bits = push(lines, format!("arith.shli {kb}, {shift} : i32"));
        let p2 = push(lines, format!("arith.bitcast {bits} : i32 to f32"));
        v = push(lines, format!("arith.mulf {v}, {p2} : f32"));
    }
    let (inf_at, zero_at) = (c(lines, 88.722_839_05), c(lines, -103.972));
    let (inf, zero) = (c(lines, f64::INFINITY), c(lines, 0.0));
    let big = push(lines, format!("arith.cmpf ogt, {x}, {inf_at} : f32"));
    let v = push(lines, format!("arith.select {big}, {inf}, {v} : f32"));
    let small = push(lines, format!("arith.cmpf olt, {x}, {zero_at} : f32"));
    let v = push(lines, format!("arith.select {small}, {zero}, {v} : f32"));
    let nan = push(lines, format!("arith.cmpf uno, {x}, {x} : f32"));
    push(lines, format!("arith.select {nan}, {x}, {v} : f32"))
}

/// f32 `tanh` without a libm call: Eigen's rational approximation (odd degree-13 over even
/// degree-6 polynomial) on `[-7.9053, 7.9053]`, `x` itself below 0.0004 in magnitude, `±1`
/// beyond. At most 4e-7 relative error (measured on 2M points in [-10, 10]).
fn tanh_f32(lines: &mut Vec<String>, x: &str) -> String {
    let c = |lines: &mut Vec<String>, v: f64| push(lines, E::scalar_const(DType::F32, v));
    let (lo, hi) = (
        c(lines, -7.905_311_107_635_498),
        c(lines, 7.905_311_107_635_498),
    );
    let a = push(lines, format!("arith.maximumf {x}, {lo} : f32"));
    let a = push(lines, format!("arith.minimumf {a}, {hi} : f32"));
    let x2 = push(lines, format!("arith.mulf {a}, {a} : f32"));
    let p = horner(
        lines,
        &x2,
        &[
            -2.760_768_477_423_55e-16,
            2.000_187_904_824_77e-13,
            -8.604_671_522_137_35e-11,
            5.122_297_090_371_14e-8,
            1.485_722_357_179_79e-5,
            6.372_619_288_754_36e-4,
            4.893_524_558_917_86e-3,
        ],
    );
    let p = push(lines, format!("arith.mulf {a}, {p} : f32"));
    let q = horner(
        lines,
        &x2,
        &[
            1.198_258_394_667_02e-6,
            1.185_347_056_866_54e-4,
            2.268_434_632_439e-3,
            4.893_525_185_543_85e-3,
        ],
    );
    let t = push(lines, format!("arith.divf {p}, {q} : f32"));
    let small_at = c(lines, 0.0004);
    let ax = push(lines, format!("math.absf {x} : f32"));
    let small = push(lines, format!("arith.cmpf olt, {ax}, {small_at} : f32"));
    let t = push(lines, format!("arith.select {small}, {x}, {t} : f32"));
    let nan = push(lines, format!("arith.cmpf uno, {x}, {x} : f32"));
    push(lines, format!("arith.select {nan}, {x}, {t} : f32"))
}

fn act_body(lines: &mut Vec<String>, a: Activation, x: &str, d: DType) -> String {
    let t = elem(d);
    match a {
        Activation::Linear => x.to_string(),
        Activation::Tanh => unary_body(lines, UnaryOp::Tanh, x, d).unwrap_or_default(),
        Activation::Sigmoid => unary_body(lines, UnaryOp::Sigmoid, x, d).unwrap_or_default(),
        Activation::Relu => unary_body(lines, UnaryOp::Relu, x, d).unwrap_or_default(),
        Activation::HardSigmoid => {
            // relu6(x + 3) / 6
            let three = push(lines, E::scalar_const(d, 3.0));
            let six = push(lines, E::scalar_const(d, 6.0));
            let zero = push(lines, E::scalar_const(d, 0.0));
            let s = push(lines, format!("arith.addf {x}, {three} : {t}"));
            let lo = push(lines, format!("arith.maximumf {s}, {zero} : {t}"));
            let hi = push(lines, format!("arith.minimumf {lo}, {six} : {t}"));
            push(lines, format!("arith.divf {hi}, {six} : {t}"))
        }
    }
}

/// Columns `from..from+n` of a `[B, C]` tensor.
fn columns(e: &mut E, x: &(String, TensorType), from: usize, n: usize) -> R<(String, TensorType)> {
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
fn rnn(
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
