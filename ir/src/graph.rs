use crate::infer::infer;
use crate::op::{Op, Weight};
use crate::types::TensorType;
use forgec_runtime::Tensor;
use std::collections::HashSet;
use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ValueId(pub usize);

#[derive(Clone, Debug, PartialEq)]
pub struct Value {
    pub name: String,
    pub ty: TensorType,
}

/// Where a node came from: the framework, the layer or node class, and its name. Every
/// diagnostic of every later stage names it.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Origin {
    /// `keras`, `onnx`, or empty for nodes forgec made itself.
    pub framework: String,
    /// Keras layer class or ONNX op type.
    pub kind: String,
    /// Keras layer name or ONNX node name.
    pub name: String,
}

impl Origin {
    pub fn keras(kind: &str, name: &str) -> Origin {
        Origin {
            framework: "keras".into(),
            kind: kind.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for Origin {
    /// `Dense `dense_1``: how diagnostics name a layer.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.kind.is_empty() && self.name.is_empty() {
            f.write_str("(internal node)")
        } else {
            write!(f, "{} `{}`", self.kind, self.name)
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub op: Op,
    pub inputs: Vec<ValueId>,
    pub outputs: Vec<ValueId>,
    pub origin: Origin,
}

/// A graph: values (SSA, each defined once), nodes in topological order, inputs and outputs.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Graph {
    pub name: String,
    pub values: Vec<Value>,
    pub inputs: Vec<ValueId>,
    pub outputs: Vec<ValueId>,
    pub nodes: Vec<Node>,
}

/// A node whose input types do not fit its op.
#[derive(Clone, Debug, PartialEq)]
pub struct TypeError {
    pub origin: Origin,
    pub op: String,
    pub inputs: Vec<TensorType>,
    pub message: String,
}

impl fmt::Display for TypeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ins: Vec<String> = self.inputs.iter().map(|t| t.to_string()).collect();
        write!(
            f,
            "{}: {} ({}) : {}",
            self.origin,
            self.op,
            ins.join(", "),
            self.message
        )
    }
}

impl Graph {
    pub fn new(name: &str) -> Graph {
        Graph {
            name: name.into(),
            ..Graph::default()
        }
    }

    pub fn value(&self, id: ValueId) -> &Value {
        &self.values[id.0]
    }

    pub fn ty(&self, id: ValueId) -> &TensorType {
        &self.values[id.0].ty
    }

    pub fn find_value(&self, name: &str) -> Option<ValueId> {
        self.values.iter().position(|v| v.name == name).map(ValueId)
    }

    /// A value name not used yet, derived from `base`.
    pub fn fresh_name(&self, base: &str) -> String {
        let base = if base.is_empty() { "v" } else { base };
        let taken: HashSet<&str> = self.values.iter().map(|v| v.name.as_str()).collect();
        if !taken.contains(base) {
            return base.to_string();
        }
        (1..)
            .map(|i| format!("{base}_{i}"))
            .find(|n| !taken.contains(n.as_str()))
            .expect("some suffix is free")
    }

    fn push_value(&mut self, name: &str, ty: TensorType) -> ValueId {
        let name = self.fresh_name(name);
        self.values.push(Value { name, ty });
        ValueId(self.values.len() - 1)
    }

    pub fn add_input(&mut self, name: &str, ty: TensorType) -> ValueId {
        let id = self.push_value(name, ty);
        self.inputs.push(id);
        id
    }

    /// Appends a node, inferring its output types. `name` seeds the output value names.
    #[allow(clippy::result_large_err)]
    pub fn add_node(
        &mut self,
        op: Op,
        inputs: &[ValueId],
        name: &str,
        origin: &Origin,
    ) -> Result<Vec<ValueId>, TypeError> {
        let in_types: Vec<TensorType> = inputs.iter().map(|&i| self.ty(i).clone()).collect();
        let out_types = infer(&op, &in_types).map_err(|message| TypeError {
            origin: origin.clone(),
            op: op.name(),
            inputs: in_types.clone(),
            message,
        })?;
        let outputs: Vec<ValueId> = out_types
            .into_iter()
            .map(|t| self.push_value(name, t))
            .collect();
        self.nodes.push(Node {
            op,
            inputs: inputs.to_vec(),
            outputs: outputs.clone(),
            origin: origin.clone(),
        });
        Ok(outputs)
    }

    /// Appends a single-output node.
    #[allow(clippy::result_large_err)]
    pub fn add(
        &mut self,
        op: Op,
        inputs: &[ValueId],
        name: &str,
        origin: &Origin,
    ) -> Result<ValueId, TypeError> {
        Ok(self.add_node(op, inputs, name, origin)?[0])
    }

    /// Appends a constant (a literal, or a model parameter when `weight` is set).
    pub fn add_const(
        &mut self,
        value: Tensor,
        weight: Option<Weight>,
        name: &str,
        origin: &Origin,
    ) -> ValueId {
        self.add(Op::Const { value, weight }, &[], name, origin)
            .expect("a constant always has a type")
    }

    /// The node defining each value, if any (graph inputs have none).
    pub fn producers(&self) -> Vec<Option<usize>> {
        let mut p = vec![None; self.values.len()];
        for (i, n) in self.nodes.iter().enumerate() {
            for o in &n.outputs {
                p[o.0] = Some(i);
            }
        }
        p
    }

    /// The model parameters: (value, tensor, trainable), in graph order.
    pub fn weights(&self) -> Vec<(ValueId, &Tensor, bool)> {
        self.nodes
            .iter()
            .filter_map(|n| match &n.op {
                Op::Const {
                    value,
                    weight: Some(w),
                } => Some((n.outputs[0], value, w.trainable)),
                _ => None,
            })
            .collect()
    }
}
