//! Shape inference with symbolic dims.

use forgec_ir::infer::infer;
use forgec_ir::{Dim, Graph, Origin, TensorType};
use std::fmt;

/// A node whose inputs do not fit: which layer, what it got, what went wrong.
#[derive(Clone, Debug, PartialEq)]
pub struct ShapeDiagnostic {
    pub origin: Origin,
    pub op: String,
    pub inputs: Vec<TensorType>,
    pub message: String,
}

impl fmt::Display for ShapeDiagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ins: Vec<String> = self.inputs.iter().map(|t| t.keras_shape()).collect();
        write!(
            f,
            "{} ({} of {}): {}",
            self.origin,
            self.op,
            ins.join(" and "),
            self.message
        )
    }
}

/// Re-derives the type of every node result from the graph inputs' types. Every node whose
/// inputs are known but do not fit is reported; nodes downstream of a failure are skipped so
/// one mistake gives one message.
pub fn infer_shapes(g: &mut Graph) -> Result<(), Vec<ShapeDiagnostic>> {
    let mut poisoned = vec![false; g.values.len()];
    let mut diags = Vec::new();
    for i in 0..g.nodes.len() {
        let node = &g.nodes[i];
        if node.inputs.iter().any(|v| poisoned[v.0]) {
            node.outputs.iter().for_each(|o| poisoned[o.0] = true);
            continue;
        }
        let ins: Vec<TensorType> = node.inputs.iter().map(|&v| g.ty(v).clone()).collect();
        match infer(&node.op, &ins) {
            Ok(outs) if outs.len() == node.outputs.len() => {
                let outputs = node.outputs.clone();
                for (o, t) in outputs.into_iter().zip(outs) {
                    g.values[o.0].ty = t;
                }
            }
            Ok(outs) => {
                diags.push(ShapeDiagnostic {
                    origin: node.origin.clone(),
                    op: node.op.name(),
                    inputs: ins,
                    message: format!(
                        "the op makes {} results but the node has {}",
                        outs.len(),
                        node.outputs.len()
                    ),
                });
                node.outputs.iter().for_each(|o| poisoned[o.0] = true);
            }
            Err(message) => {
                diags.push(ShapeDiagnostic {
                    origin: node.origin.clone(),
                    op: node.op.name(),
                    inputs: ins,
                    message,
                });
                let node = &g.nodes[i];
                node.outputs.iter().for_each(|o| poisoned[o.0] = true);
            }
        }
    }
    if diags.is_empty() {
        Ok(())
    } else {
        Err(diags)
    }
}

/// Binds the symbol `sym` to `size` in the graph inputs and re-infers every type.
pub fn specialize(g: &mut Graph, sym: &str, size: usize) -> Result<(), Vec<ShapeDiagnostic>> {
    for &i in &g.inputs.clone() {
        for d in &mut g.values[i.0].ty.shape {
            if *d == Dim::Sym(sym.to_string()) {
                *d = Dim::Known(size);
            }
        }
    }
    infer_shapes(g)
}
