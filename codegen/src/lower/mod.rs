//! IR → MLIR text: linalg on tensors, `arith`/`math` in the bodies. The entry point takes one
//! memref per graph input and per graph output (destination-passing style): inputs become
//! tensors with `bufferization.to_tensor`, results are written with
//! `bufferization.materialize_in_destination`. Symbolic dims (the batch) are dynamic (`?`) and
//! read from the first input that carries them.

use forgec_ir::{
    BinaryOp, DType, Dim, Graph, Node, Op, PadMode, Tensor, TensorType, UnaryOp, ValueId,
};
use forgec_runtime::Data;
use std::collections::{HashMap, HashSet};
use std::fmt::Write;

mod indexing;
pub(crate) mod linalg;
pub(crate) mod scalar;

pub(crate) use linalg::*;
pub(crate) use scalar::*;

pub(crate) type R<T> = Result<T, String>;

/// What the shared lowering asks of a target (`crate::cpu::Cpu`, a CUDA target beside it):
/// its kernels for the ops it runs faster than the generic lowering, and the layout it stores
/// constant weights in for them. The lowering asks the target first and falls back to the
/// generic lowering (`linalg`) where the target has no kernel.
pub trait Target {
    /// The target itself, for its kernels to reach their own state from an `E`.
    fn as_any(&self) -> &dyn std::any::Any;
    /// The constant `value` of `v` as the target stores it (a kernel's packed layout), or
    /// None when it is stored as it is.
    fn stored(&self, v: ValueId, value: &Tensor) -> Option<Tensor>;
    /// The MLIR type a constant stored by `stored` has, or None when it is its own.
    fn stored_ty(&self, v: ValueId, t: &TensorType) -> Option<String>;
    /// Whether the target's kernel for `node` applies an epilogue of elementwise ops
    /// (`Epi`) before it stores its results.
    fn takes_epilogue(&self, g: &Graph, node: &Node) -> bool;
    /// The target's kernel for `node` (its results' SSA names), or None to use the generic
    /// lowering. `ins` are the inputs' names and types, `outs` the results' types.
    fn kernel(
        &self,
        e: &mut E,
        node: &Node,
        ins: &[(String, TensorType)],
        outs: &[TensorType],
    ) -> R<Option<Vec<String>>>;
    /// A matmul inside another op's lowering (a recurrent layer's input projection), or None
    /// for the generic one.
    fn matmul(&self, e: &mut E, ins: &[(String, TensorType)], ot: &TensorType)
        -> R<Option<String>>;
    /// Declarations and definitions the module needs beyond the lowered functions, given
    /// their text.
    fn runtime(&self, body: &str) -> String;
}

pub(crate) fn elem(d: DType) -> &'static str {
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

pub(crate) fn dims_str(shape: &[Dim]) -> String {
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
pub(crate) fn dense_hex(t: &Tensor) -> String {
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
pub(crate) fn raw_bytes(t: &Tensor) -> Vec<u8> {
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
pub(crate) const EXTERNAL_MIN_BYTES: usize = 1024;

pub struct E<'g> {
    pub(crate) g: &'g Graph,
    pub(crate) body: String,
    /// The function's index constants (`idx`), which go before its body: one made first
    /// inside a loop is then still in scope after it.
    pub(crate) prelude: String,
    pub(crate) names: HashMap<ValueId, String>,
    pub(crate) n: usize,
    /// Symbol -> SSA `index` value holding its size.
    pub(crate) syms: HashMap<String, String>,
    pub(crate) consts: HashMap<i64, String>,
    /// The target whose kernels the lowering asks for first.
    pub(crate) target: &'g dyn Target,
    /// Elementwise ops the current kernel applies before it stores its results.
    pub(crate) epilogue: Vec<Epi>,
    /// Constants passed to the entry function (`%w{index}`).
    pub(crate) external: HashMap<ValueId, usize>,
    /// Kernels run on the calling thread alone (a recurrent layer's steps: too little work
    /// each to hand out).
    pub(crate) serial: bool,
    /// The caller's output buffer (an argument of this op's function) for the op's result: the
    /// first `empty` of its type is it, so that the kernel writes the model's output in place
    /// rather than into a buffer copied afterwards.
    pub(crate) dest: Option<(String, TensorType)>,
}

/// An elementwise op fused into a matmul kernel's stores: `acc <op> c` (`c <op> acc` when
/// `flip`), `c` the function argument `%e{arg}`, a constant that is one scalar or one value per
/// output column (`per_col`); or a ReLU.
#[derive(Clone, Debug)]
pub(crate) enum Epi {
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
    pub(crate) fn operand(
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
    pub(crate) fn apply(&self, e: &mut E, acc: &str, operand: &str, vt: &str) -> String {
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
pub(crate) fn transfer_tail(mask: Option<&str>) -> String {
    match mask {
        Some(mk) => format!(", {mk}"),
        None => " {in_bounds = [true]}".to_string(),
    }
}

/// `scf.for iv = lo to hi step st` carrying a value of type `ty` from `init` through `inner`,
/// which gets the carried value and the induction variable and returns the value to yield.
pub(crate) fn for_carrying(
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
pub(crate) fn epilogue_chain(g: &Graph, i: usize, target: &dyn Target) -> Vec<(usize, Epi)> {
    let n = &g.nodes[i];
    if !target.takes_epilogue(g, n) {
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
                // A graph input is there before any kernel runs, as a constant is (a training
                // step's bias is one).
                let is_const = konst.is_some();
                let is_input = g.inputs.contains(&other);
                let ct = g.ty(other);
                let Some(cs) = ct.known_shape() else { break };
                let numel: usize = cs.iter().product();
                let per_col = numel != 1;
                let column_vector = cs.iter().rev().skip(1).all(|&d| d == 1)
                    && cs.last() == Some(&cols)
                    && cs.len() <= t.rank();
                if !(is_const || is_input) || ct.dtype != DType::F32 || (per_col && !column_vector)
                {
                    break;
                }
                // A max/min takes only a constant (whose NaNs are known, see below).
                if !is_const && matches!(op, BinaryOp::Max | BinaryOp::Min) {
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
pub(crate) type S = String;

/// Writes a linalg body: gets the block's input arguments and the accumulator, returns the
/// yielded value.
pub(crate) type Body<'a> = dyn FnMut(&mut Vec<String>, &[S], &str) -> S + 'a;

impl<'g> E<'g> {
    /// An emitter for one function of `g`'s module, for `target`.
    pub(crate) fn new(g: &'g Graph, target: &'g dyn Target) -> E<'g> {
        E {
            g,
            body: String::new(),
            prelude: String::new(),
            names: HashMap::new(),
            n: 0,
            syms: HashMap::new(),
            consts: HashMap::new(),
            target,
            epilogue: Vec::new(),
            external: HashMap::new(),
            serial: false,
            dest: None,
        }
    }

    pub(crate) fn fresh(&mut self) -> String {
        self.n += 1;
        format!("%v{}", self.n)
    }

    pub(crate) fn line(&mut self, s: &str) {
        self.body.push_str("    ");
        self.body.push_str(s);
        self.body.push('\n');
    }

    pub(crate) fn idx(&mut self, v: i64) -> String {
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

    pub(crate) fn dim_val(&mut self, d: &Dim) -> R<String> {
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
    pub(crate) fn size_lit(&mut self, d: &Dim) -> R<String> {
        match d {
            Dim::Known(n) => Ok(n.to_string()),
            s => self.dim_val(s),
        }
    }

    /// `tensor.empty` of a type, with its dynamic sizes.
    pub(crate) fn empty(&mut self, t: &TensorType) -> R<String> {
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
    pub(crate) fn scalar_const(d: DType, x: f64) -> String {
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
    pub(crate) fn elementwise(
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
    pub(crate) fn elementwise_into(
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

    pub(crate) fn name(&self, v: ValueId) -> String {
        self.names[&v].clone()
    }

    pub(crate) fn ty(&self, v: ValueId) -> TensorType {
        self.g.ty(v).clone()
    }

    /// The MLIR type `v` is passed as: its own, or its packed layout.
    pub(crate) fn arg_ty(&self, v: ValueId) -> String {
        let t = self.g.ty(v);
        self.target.stored_ty(v, t).unwrap_or_else(|| tensor_ty(t))
    }

    /// The constant `value` of `v` as stored: in the target's layout (`Target::stored`), or as it is (None).
    pub(crate) fn stored(&self, v: ValueId, value: &Tensor) -> Option<Tensor> {
        self.target.stored(v, value)
    }
}

/// The whole module for `g`.
/// Emits the model as MLIR for `target`, whose kernels run the ops they fit.
///
/// The large constants (`EXTERNAL_MIN_BYTES` and up) become arguments of the entry function
/// (after the inputs and outputs), returned in that order with their bytes.
pub fn emit(g: &Graph, target: &dyn Target, entry: &str) -> R<(String, Vec<ExternalWeight>)> {
    let mut e = E::new(g, target);
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
        .map(|i| (i, epilogue_chain(g, i, target)))
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
        let mut f = E::new(g, target);
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
    let runtime = target.runtime(&body);
    Ok((format!("module {{\n{body}{runtime}}}\n"), weights))
}

pub(crate) fn lower(e: &mut E, node: &Node) -> R<Vec<String>> {
    let ins: Vec<(String, TensorType)> =
        node.inputs.iter().map(|&i| (e.name(i), e.ty(i))).collect();
    let out_ty: Vec<TensorType> = node.outputs.iter().map(|&o| e.ty(o)).collect();
    let ot = &out_ty[0];
    let one = |v: String| Ok(vec![v]);
    let target = e.target;
    if let Some(vs) = target.kernel(e, node, &ins, &out_ty)? {
        return Ok(vs);
    }
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
        Op::DropoutMask { rate, salt } => one(dropout_mask(e, &ins[1], *rate, *salt, ot)?),
        Op::MatMul => one(matmul(e, &ins, ot)?),
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
        Op::BatchNorm { axis, epsilon, .. } => one(batch_norm(e, node, &ins, *axis, *epsilon, ot)?),
        Op::LayerNorm { axes, epsilon } => one(layer_norm(e, &ins, axes, *epsilon, ot)?),
        Op::Conv(c) => one(conv(e, &ins[0], &ins[1], c, ot)?),
        Op::Pool(p) => one(pool(e, &ins[0], p, ot)?),
        Op::PoolGrad(p) => one(max_pool_grad(e, &ins, p, ot)?),
        Op::Col2Im { conv, kernel, .. } => one(col2im(e, &ins[0], conv, kernel, ot)?),
        Op::ConvKernelGrad { conv, .. } => one(conv_kernel_grad(e, &ins[0], &ins[1], conv, ot)?),
        Op::Rnn(r) => {
            let v = rnn(e, &ins, r, ot);
            e.serial = false;
            one(v?)
        }
        other => Err(format!("the compiler does not lower `{}` yet (the reference interpreter runs it: forgec run --engine interp)", other.name())),
    }
}

/// A refusal ("... is not compiled yet") with the way to run the model meanwhile.
pub(crate) fn with_hint(m: String) -> String {
    if m.ends_with("is not compiled yet") {
        format!("{m} (the reference interpreter runs it: forgec run --engine interp)")
    } else {
        m
    }
}

/// Whether `op` maps elements one to one: the ops `fused_elementwise` lowers.
pub(crate) fn is_elementwise(op: &Op) -> bool {
    matches!(
        op,
        Op::Unary(_) | Op::Binary(_) | Op::Select | Op::Cast { .. }
    )
}

/// Elementwise nodes run as one loop nest: `members` in graph order, all with the same output
/// shape, every member's output but the last used only by later members (see
/// `elementwise_groups`). One `linalg.generic` reads the values the group takes from outside
/// (each broadcast to the output shape) and computes every member per element; nothing in
/// between is stored. An error names the member it comes from when there are several.
pub(crate) fn fused_elementwise(e: &mut E, members: &[&Node]) -> R<String> {
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
    // Operands of the result's shape (or scalars): one flat loop, which LLVM vectorises as it
    // is (a loop nest it may vectorise across an outer dim, with gathers).
    let flat = ot.rank() >= 2
        && ins
            .iter()
            .all(|(_, t)| t.shape == ot.shape || t.rank() == 0);
    let init = e.empty(&ot)?;
    let (ins, ft, init) = if flat {
        let n = ot
            .shape
            .iter()
            .try_fold(1usize, |a, d| Some(a * d.known()?));
        let ft = TensorType::new(
            ot.dtype,
            vec![n.map_or(Dim::Sym("flat".into()), Dim::Known)],
        );
        let all: Vec<String> = (0..ot.rank()).map(|i| i.to_string()).collect();
        let ins = ins
            .into_iter()
            .map(|(v, t)| {
                if t.rank() == 0 {
                    return (v, t);
                }
                let f = e.fresh();
                let fty = TensorType::new(t.dtype, ft.shape.clone());
                e.line(&format!(
                    "{f} = tensor.collapse_shape {v} [[{}]] : {} into {}",
                    all.join(", "),
                    tensor_ty(&t),
                    tensor_ty(&fty)
                ));
                (f, fty)
            })
            .collect();
        let f = e.fresh();
        e.line(&format!(
            "{f} = tensor.collapse_shape {init} [[{}]] : {} into {}",
            all.join(", "),
            tensor_ty(&ot),
            tensor_ty(&ft)
        ));
        (ins, ft, f)
    } else {
        (ins, ot.clone(), init)
    };
    let mut err = None;
    let v = e.elementwise_into(&ft, init, &ins, &mut |lines, a, _| {
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
    });
    if let Some(m) = err {
        return Err(m);
    }
    if !flat {
        return Ok(v);
    }
    let sizes: Vec<String> = ot.shape.iter().map(|d| e.size_lit(d)).collect::<R<_>>()?;
    let all: Vec<String> = (0..ot.rank()).map(|i| i.to_string()).collect();
    let r = e.fresh();
    e.line(&format!(
        "{r} = tensor.expand_shape {v} [[{}]] output_shape [{}] : {} into {}",
        all.join(", "),
        sizes.join(", "),
        tensor_ty(&ft),
        tensor_ty(&ot)
    ));
    Ok(r)
}

/// Trees of elementwise nodes to run as one loop nest, each in graph order, its root (the
/// node whose result leaves the tree) last: a node joins the tree of the node that reads its
/// output when that node is its only user, its output is no graph output, and it has the
/// root's shape. `taken` are nodes fused elsewhere (kernel epilogues). (An optimizer's update
/// is such a tree: the new weight from the new slots, the gradient and the learning rate.)
pub(crate) fn elementwise_groups(g: &Graph, taken: &HashSet<usize>) -> Vec<Vec<usize>> {
    let mut users: HashMap<ValueId, Vec<usize>> = HashMap::new();
    let mut producer: HashMap<ValueId, usize> = HashMap::new();
    for (k, n) in g.nodes.iter().enumerate() {
        for &i in &n.inputs {
            let u = users.entry(i).or_default();
            if u.last() != Some(&k) {
                u.push(k);
            }
        }
        for &o in &n.outputs {
            producer.insert(o, k);
        }
    }
    let single = |k: usize| {
        let n = &g.nodes[k];
        !taken.contains(&k) && is_elementwise(&n.op) && n.outputs.len() == 1
    };
    let mut grouped: HashSet<usize> = HashSet::new();
    let mut groups = Vec::new();
    // From the last node back, so that each tree is found from its root.
    for r in (0..g.nodes.len()).rev() {
        if grouped.contains(&r) || !single(r) {
            continue;
        }
        let shape = &g.ty(g.nodes[r].outputs[0]).shape;
        let mut tree = vec![r];
        let mut todo = vec![r];
        while let Some(k) = todo.pop() {
            for i in &g.nodes[k].inputs {
                let Some(&p) = producer.get(i) else { continue };
                let only_k = users.get(i).is_some_and(|u| u.as_slice() == [k]);
                if !only_k
                    || tree.contains(&p)
                    || grouped.contains(&p)
                    || !single(p)
                    || g.outputs.contains(i)
                    || &g.ty(*i).shape != shape
                {
                    continue;
                }
                tree.push(p);
                todo.push(p);
            }
        }
        if tree.len() > 1 {
            tree.sort_unstable();
            grouped.extend(&tree);
            groups.push(tree);
        }
    }
    groups.reverse();
    groups
}

/// `scf.if cond` on a value of type `ty`: `inner(init)` when it holds, `init` when not.
pub(crate) fn if_carrying(
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

/// `%v = arith.<op> a, b : index`, `%v` fresh (`op` may carry a predicate: `"cmpi eq,"`).
pub(crate) fn ix(e: &mut E, op: &str, a: &str, b: &str) -> String {
    let v = e.fresh();
    e.line(&format!("{v} = arith.{op} {a}, {b} : index"));
    v
}
