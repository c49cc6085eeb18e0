//! ONNX import: ModelProto → IR. Shape arithmetic over known dims is folded at import (the
//! interpreter evaluates nodes whose inputs are all literal constants); shape vectors holding
//! a symbolic dim (the batch) are tracked symbolically, so `Shape → Gather/Slice → Concat →
//! Reshape/Expand` chains become plain reshapes and broadcasts.

mod ops;
pub mod proto;

use crate::ImportError;
use forgec_ir::{Dim, Graph, Op, Origin, Tensor, TensorType, ValueId, Weight};
use onnx_protobuf::{Message, ModelProto, NodeProto};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// An imported ONNX model.
#[derive(Debug)]
pub struct OnnxModel {
    pub path: PathBuf,
    pub graph: Graph,
    pub ir_version: i64,
    /// The default-domain opset the model was written for.
    pub opset: i64,
    pub producer: String,
    /// Op types of the source graph and how often each occurs.
    pub op_counts: BTreeMap<String, usize>,
    pub params: usize,
    pub param_bytes: usize,
}

/// A value during import: a graph value, or a 1-D int64 shape vector known only symbolically.
#[derive(Clone, Debug)]
pub(crate) enum Val {
    T(ValueId),
    Shape { dims: Vec<Dim>, scalar: bool },
}

pub(crate) struct Cx<'a> {
    pub g: Graph,
    pub opset: i64,
    vals: HashMap<String, Val>,
    /// Constants by value: literals (foldable) and weights.
    consts: HashMap<ValueId, (Tensor, bool)>,
    pub base_dir: &'a Path,
    fresh: usize,
    /// Names some node or graph output reads: outputs nobody reads need not be made.
    used: std::collections::HashSet<String>,
    /// Values an op needed as constants but got as data.
    pub wanted: Vec<String>,
    /// The ONNX element type code of graph inputs, initializers and constants: forgec widens
    /// unsigned and 16-bit integers, and some ops need the original range.
    pub elem_code: HashMap<ValueId, i32>,
}

use crate::error::fail;

/// The op types forgec imports from the default domain.
pub fn supported_ops() -> &'static [&'static str] {
    ops::SUPPORTED
}

/// The op types of a model file (for reports when the import fails).
pub fn op_types(path: &Path) -> Option<Vec<String>> {
    let m = ModelProto::parse_from_bytes(&std::fs::read(path).ok()?).ok()?;
    let mut ops: Vec<String> = m
        .graph
        .as_ref()?
        .node
        .iter()
        .map(|n| n.op_type.clone())
        .collect();
    ops.sort();
    ops.dedup();
    Some(ops)
}

pub fn load(path: &Path) -> Result<OnnxModel, ImportError> {
    load_with(path, &HashMap::new())
}

/// The names of the graph inputs that are not initializers, in order.
pub fn input_names(path: &Path) -> Option<Vec<String>> {
    let m = ModelProto::parse_from_bytes(&std::fs::read(path).ok()?).ok()?;
    let g = m.graph.as_ref()?;
    let inits: std::collections::HashSet<&str> =
        g.initializer.iter().map(|t| t.name.as_str()).collect();
    Some(
        g.input
            .iter()
            .filter(|i| !inits.contains(i.name.as_str()))
            .map(|i| i.name.clone())
            .collect(),
    )
}

/// Loads with some graph inputs bound to constants: what a compiler does with inputs that
/// fix shapes (axes, target shapes, pads) and are fed as data.
pub fn load_with(path: &Path, bound: &HashMap<String, Tensor>) -> Result<OnnxModel, ImportError> {
    let disp = path.display().to_string();
    let bytes =
        std::fs::read(path).map_err(|e| ImportError::one(format!("{disp}: cannot read: {e}")))?;
    let model = match ModelProto::parse_from_bytes(&bytes) {
        Ok(m) => m,
        Err(e) => return fail(format!("{disp}: not a valid ONNX model (protobuf: {e})")),
    };
    let Some(graph) = model.graph.as_ref() else {
        return fail(format!("{disp}: the model has no graph"));
    };
    let opset = model
        .opset_import
        .iter()
        .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
        .map(|o| o.version)
        .unwrap_or(if model.ir_version < 3 { 1 } else { 0 });
    if opset == 0 {
        return fail(format!(
            "{disp}: the model imports no default-domain (ai.onnx) opset"
        ));
    }
    // Unsupported ops, all at once.
    let mut problems = Vec::new();
    let mut op_counts = BTreeMap::new();
    for (i, n) in graph.node.iter().enumerate() {
        *op_counts.entry(n.op_type.clone()).or_insert(0) += 1;
        let domain = if n.domain.is_empty() {
            "ai.onnx"
        } else {
            n.domain.as_str()
        };
        let name = node_name(n, i);
        if domain != "ai.onnx" {
            let v = model
                .opset_import
                .iter()
                .find(|o| o.domain == n.domain)
                .map(|o| o.version)
                .unwrap_or(0);
            problems.push(format!(
                "{disp}: node `{name}`: {}::{} (opset {v}) is in the non-default domain `{domain}`, which forgec does not support",
                domain, n.op_type
            ));
        } else if !ops::SUPPORTED.contains(&n.op_type.as_str()) {
            problems.push(format!(
                "{disp}: node `{name}`: op {} (domain ai.onnx, opset {opset}) is not supported by forgec",
                n.op_type
            ));
        }
    }
    if !problems.is_empty() {
        return Err(ImportError::many(problems));
    }
    let base_dir = path.parent().unwrap_or(Path::new("."));
    let mut cx = Cx {
        g: Graph::new(if graph.name.is_empty() {
            "onnx"
        } else {
            &graph.name
        }),
        opset,
        vals: HashMap::new(),
        consts: HashMap::new(),
        base_dir,
        fresh: 0,
        used: graph
            .node
            .iter()
            .flat_map(|n| n.input.iter().cloned())
            .chain(graph.output.iter().map(|o| o.name.clone()))
            .collect(),
        wanted: Vec::new(),
        elem_code: HashMap::new(),
    };
    let mut params = 0;
    let mut param_bytes = 0;
    // Initializers: float ones are the model's weights, integer ones literal constants.
    for init in &graph.initializer {
        let t = proto::tensor(init, base_dir)
            .map_err(|e| ImportError::one(format!("{disp}: initializer `{}`: {e}", init.name)))?;
        let weight = t.dtype().is_float();
        if weight {
            params += t.numel();
            param_bytes += t.size_bytes();
        }
        let origin = Origin {
            framework: "onnx".into(),
            kind: "initializer".into(),
            name: init.name.clone(),
        };
        let id = cx.g.add_const(
            t.clone(),
            weight.then_some(Weight { trainable: true }),
            &init.name,
            &origin,
        );
        cx.elem_code.insert(id, init.data_type);
        cx.consts.insert(id, (t, weight));
        cx.vals.insert(init.name.clone(), Val::T(id));
    }
    for inp in &graph.input {
        if cx.vals.contains_key(&inp.name) {
            continue; // an initializer listed as an input (IR < 4): a constant here
        }
        if let Some(t) = bound.get(&inp.name) {
            let origin = Origin {
                framework: "onnx".into(),
                kind: "bound input".into(),
                name: inp.name.clone(),
            };
            let id = cx.literal(t.clone(), &origin);
            if let Some(code) = inp.type_.as_ref().and_then(elem_code) {
                cx.elem_code.insert(id, code);
            }
            cx.vals.insert(inp.name.clone(), Val::T(id));
            continue;
        }
        let Some(tp) = inp.type_.as_ref() else {
            return fail(format!("{disp}: graph input `{}` has no type", inp.name));
        };
        let mut fresh = || {
            cx.fresh += 1;
            format!("unk{}", cx.fresh)
        };
        let ty = proto::value_type(tp, &mut fresh)
            .map_err(|e| ImportError::one(format!("{disp}: graph input `{}`: {e}", inp.name)))?;
        let id = cx.g.add_input(&inp.name, ty);
        if let Some(code) = elem_code(tp) {
            cx.elem_code.insert(id, code);
        }
        cx.vals.insert(inp.name.clone(), Val::T(id));
    }
    let mut problems = Vec::new();
    for (i, n) in graph.node.iter().enumerate() {
        let name = node_name(n, i);
        // Every input must be defined by now: nodes come in topological order.
        let missing: Vec<&String> = n
            .input
            .iter()
            .filter(|s| !s.is_empty() && !cx.vals.contains_key(*s))
            .collect();
        if !missing.is_empty() {
            let later = missing
                .iter()
                .any(|m| graph.node[i..].iter().any(|o| o.output.contains(m)));
            problems.push(format!(
                "{disp}: node `{name}` ({}): input `{}` {}",
                n.op_type,
                missing[0],
                if later {
                    "is made by a later node: the graph is not in topological order, or has a cycle"
                } else {
                    "is defined nowhere (no graph input, initializer or node output has that name)"
                }
            ));
            break;
        }
        let origin = Origin {
            framework: "onnx".into(),
            kind: n.op_type.clone(),
            name: name.clone(),
        };
        let first_new = cx.g.values.len();
        match ops::lower(&mut cx, n, &origin) {
            Ok(outs) => {
                for (k, v) in outs.into_iter().enumerate() {
                    if let Some(out_name) = n.output.get(k).filter(|s| !s.is_empty()) {
                        // Name values this node made after its outputs (not values it passed through).
                        if let Val::T(id) = &v {
                            if id.0 >= first_new && cx.g.find_value(out_name).is_none() {
                                cx.g.values[id.0].name = out_name.clone();
                            }
                        }
                        cx.vals.insert(out_name.clone(), v);
                    }
                }
            }
            Err(e) => {
                problems.push(format!("{disp}: node `{name}` ({}): {e}", n.op_type));
                break;
            }
        }
    }
    if !problems.is_empty() {
        return Err(ImportError {
            problems,
            shape_only: false,
            needs_const: std::mem::take(&mut cx.wanted),
        });
    }
    for out in &graph.output {
        match cx.vals.get(&out.name).cloned() {
            Some(v) => {
                let id = cx.materialize(v, &Origin::default()).map_err(|e| {
                    ImportError::one(format!("{disp}: graph output `{}`: {e}", out.name))
                })?;
                cx.g.outputs.push(id);
            }
            None => {
                return fail(format!(
                    "{disp}: graph output `{}` is made by no node",
                    out.name
                ))
            }
        }
    }
    let mut g = cx.g;
    // Name the outputs as the model does (a value may be an output twice, or an input).
    for (k, out) in graph.output.iter().enumerate() {
        let id = g.outputs[k];
        if g.value(id).name != out.name
            && g.find_value(&out.name).is_none()
            && !g.inputs.contains(&id)
        {
            g.values[id.0].name = out.name.clone();
        }
    }
    forgec_passes::cleanup::dce(&mut g);
    let errs = forgec_ir::verify::verify(&g);
    if !errs.is_empty() {
        return Err(ImportError::many(
            errs.into_iter()
                .map(|e| format!("{disp}: internal error, the imported graph is invalid: {e}"))
                .collect(),
        ));
    }
    Ok(OnnxModel {
        path: path.to_path_buf(),
        graph: g,
        ir_version: model.ir_version,
        opset,
        producer: format!("{} {}", model.producer_name, model.producer_version)
            .trim()
            .to_string(),
        op_counts,
        params,
        param_bytes,
    })
}

fn elem_code(tp: &onnx_protobuf::TypeProto) -> Option<i32> {
    match &tp.value {
        Some(onnx_protobuf::type_proto::Value::TensorType(t)) => Some(t.elem_type),
        _ => None,
    }
}

fn node_name(n: &NodeProto, i: usize) -> String {
    if n.name.is_empty() {
        format!("#{i} {}", n.op_type)
    } else {
        n.name.clone()
    }
}

impl Cx<'_> {
    pub fn ty(&self, v: ValueId) -> &TensorType {
        self.g.ty(v)
    }

    /// The constant value of `v`, weights included.
    pub fn const_of(&self, v: ValueId) -> Option<&Tensor> {
        self.consts.get(&v).map(|(t, _)| t)
    }

    pub fn literal(&mut self, t: Tensor, origin: &Origin) -> ValueId {
        let id = self
            .g
            .add_const(t.clone(), None, &format!("{}.const", origin.name), origin);
        self.consts.insert(id, (t, false));
        id
    }

    /// Adds a node; folds it into a literal when every input is a literal constant.
    pub fn op(&mut self, op: Op, ins: &[ValueId], origin: &Origin) -> Result<ValueId, String> {
        Ok(self.op_n(op, ins, origin)?[0])
    }

    pub fn op_n(
        &mut self,
        op: Op,
        ins: &[ValueId],
        origin: &Origin,
    ) -> Result<Vec<ValueId>, String> {
        let literals: Option<Vec<&Tensor>> = ins
            .iter()
            .map(|i| self.consts.get(i).filter(|(_, w)| !w).map(|(t, _)| t))
            .collect();
        if let Some(lits) = literals.filter(|_| !ins.is_empty()) {
            // Folded only when the result is small: a 167-byte file could otherwise ask for
            // tens of GB at import (Expand, Tile, ... of a literal). A larger one stays an op,
            // computed at run time.
            let tys: Vec<forgec_ir::TensorType> = lits
                .iter()
                .map(|t| forgec_ir::TensorType::known(t.dtype(), t.shape()))
                .collect();
            let small = forgec_ir::infer::infer(&op, &tys).is_ok_and(|outs| {
                outs.iter().all(|t| {
                    t.known_shape()
                        .and_then(|s| s.iter().try_fold(1u64, |a, &d| a.checked_mul(d as u64)))
                        .is_some_and(|n| n <= proto::FOLD_MAX_ELEMS)
                })
            });
            if small {
                let outs = forgec_ir::interp::eval_op(&op, &lits)?;
                return Ok(outs.into_iter().map(|t| self.literal(t, origin)).collect());
            }
        }
        let name = if origin.name.is_empty() {
            "v".to_string()
        } else {
            origin.name.clone()
        };
        let fmt = |e: forgec_ir::TypeError| {
            let shapes: Vec<String> = e.inputs.iter().map(|t| t.to_string()).collect();
            format!("{} on {}: {}", e.op, shapes.join(" and "), e.message)
        };
        // Producers give each input its own batch symbol; an op that needs two of them equal
        // makes them one (the interpreter checks the inputs agree when it binds them).
        match self.g.add_node(op.clone(), ins, &name, origin) {
            Ok(outs) => return Ok(outs),
            Err(_) if self.unify_for(&op, ins) => {}
            Err(e) => return Err(fmt(e)),
        }
        self.g.add_node(op, ins, &name, origin).map_err(fmt)
    }

    /// Unifies distinct symbols that `op` requires to be equal; returns whether it did.
    fn unify_for(&mut self, op: &Op, ins: &[ValueId]) -> bool {
        let shapes: Vec<Vec<Dim>> = ins.iter().map(|&i| self.g.ty(i).shape.clone()).collect();
        let mut pairs: Vec<(String, String)> = Vec::new();
        let mut pair = |a: &Dim, b: &Dim| {
            if let (Dim::Sym(p), Dim::Sym(q)) = (a, b) {
                if p != q {
                    pairs.push((p.clone(), q.clone()));
                }
            }
        };
        match op {
            Op::Binary(_) | Op::Select | Op::Concat { .. } => {
                for a in 0..shapes.len() {
                    for b in a + 1..shapes.len() {
                        let (x, y) = (&shapes[a], &shapes[b]);
                        for k in 1..=x.len().min(y.len()) {
                            pair(&x[x.len() - k], &y[y.len() - k]);
                        }
                    }
                }
            }
            Op::MatMul if shapes.len() == 2 && shapes[0].len() >= 2 && shapes[1].len() >= 2 => {
                let (x, y) = (&shapes[0], &shapes[1]);
                pair(&x[x.len() - 1], &y[y.len() - 2]);
                for k in 3..=x.len().min(y.len()) {
                    pair(&x[x.len() - k], &y[y.len() - k]);
                }
            }
            _ => {}
        }
        let done = !pairs.is_empty();
        for (keep, drop) in pairs {
            self.rename_sym(&drop, &keep);
        }
        done
    }

    fn rename_sym(&mut self, from: &str, to: &str) {
        let fix = |d: &mut Dim| {
            if matches!(d, Dim::Sym(s) if s == from) {
                *d = Dim::Sym(to.to_string());
            }
        };
        for v in &mut self.g.values {
            v.ty.shape.iter_mut().for_each(fix);
        }
        for n in &mut self.g.nodes {
            if let Op::Broadcast { shape } = &mut n.op {
                shape.iter_mut().for_each(fix);
            }
        }
        for v in self.vals.values_mut() {
            if let Val::Shape { dims, .. } = v {
                dims.iter_mut().for_each(fix);
            }
        }
    }

    /// A value as a graph value; a symbolic shape vector cannot be one.
    pub fn materialize(&mut self, v: Val, origin: &Origin) -> Result<ValueId, String> {
        match v {
            Val::T(id) => Ok(id),
            Val::Shape { dims, scalar } => {
                let known: Option<Vec<i64>> =
                    dims.iter().map(|d| d.known().map(|n| n as i64)).collect();
                match known {
                    Some(k) => {
                        let shape = if scalar { vec![] } else { vec![k.len()] };
                        let t = Tensor::from_i64_values(forgec_ir::DType::I64, shape, &k).map_err(|e| e.0)?;
                        Ok(self.literal(t, origin))
                    }
                    None => Err(format!(
                        "computes with the symbolic dim `{}` as data; forgec folds shape arithmetic only into Reshape, Expand and ConstantOfShape",
                        dims.iter().find(|d| d.known().is_none()).unwrap()
                    )),
                }
            }
        }
    }

    /// The names of the graph inputs `v` is computed from.
    pub fn input_roots(&self, v: ValueId) -> Vec<String> {
        let mut seen = std::collections::HashSet::new();
        let mut stack = vec![v];
        let mut roots = Vec::new();
        while let Some(x) = stack.pop() {
            if !seen.insert(x) {
                continue;
            }
            if self.g.inputs.contains(&x) {
                roots.push(self.g.value(x).name.clone());
                continue;
            }
            if let Some(node) = self.g.nodes.iter().rev().find(|nd| nd.outputs.contains(&x)) {
                stack.extend(node.inputs.iter().copied());
            }
        }
        roots
    }

    /// Whether the node output `name` is read by anything.
    pub fn is_used(&self, name: &str) -> bool {
        !name.is_empty() && self.used.contains(name)
    }

    pub fn val(&self, name: &str) -> Option<Val> {
        self.vals.get(name).cloned()
    }
}
