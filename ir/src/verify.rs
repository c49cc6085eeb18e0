//! The verifier: structural and type invariants every graph keeps between passes.

use crate::graph::{Graph, ValueId};
use crate::infer::infer;
use crate::op::Op;
use std::collections::HashSet;

/// Checks `g` and returns every problem found (empty when the graph is valid):
/// unique value names; each value defined exactly once (as a graph input or a node output);
/// operands defined before use (nodes are in topological order); outputs defined; arity;
/// recorded types equal to what the type rules infer; constants matching their types.
pub fn verify(g: &Graph) -> Vec<String> {
    let mut errs = Vec::new();
    let mut names = HashSet::new();
    for v in &g.values {
        if !names.insert(v.name.as_str()) {
            errs.push(format!("value name %{} is used twice", v.name));
        }
    }
    let nvals = g.values.len();
    let in_range = |id: &ValueId| id.0 < nvals;
    let mut defined = vec![false; nvals];
    for id in &g.inputs {
        if !in_range(id) {
            errs.push(format!("graph input #{} does not exist", id.0));
            continue;
        }
        if std::mem::replace(&mut defined[id.0], true) {
            errs.push(format!(
                "graph input %{} is listed twice",
                g.value(*id).name
            ));
        }
    }
    for (i, n) in g.nodes.iter().enumerate() {
        let here = format!("node #{i} ({}, from {})", n.op.name(), n.origin);
        let mut ok = true;
        for id in &n.inputs {
            if !in_range(id) {
                errs.push(format!("{here}: operand #{} does not exist", id.0));
                ok = false;
            } else if !defined[id.0] {
                errs.push(format!(
                    "{here}: operand %{} is used before it is defined",
                    g.value(*id).name
                ));
                ok = false;
            }
        }
        for id in &n.outputs {
            if !in_range(id) {
                errs.push(format!("{here}: result #{} does not exist", id.0));
                ok = false;
            } else if std::mem::replace(&mut defined[id.0], true) {
                errs.push(format!(
                    "{here}: result %{} is defined twice",
                    g.value(*id).name
                ));
                ok = false;
            }
        }
        if !ok {
            continue;
        }
        let in_types: Vec<_> = n.inputs.iter().map(|&i| g.ty(i).clone()).collect();
        match infer(&n.op, &in_types) {
            Err(e) => errs.push(format!("{here}: {e}")),
            Ok(out) => {
                if out.len() != n.outputs.len() {
                    errs.push(format!(
                        "{here}: has {} results but the op makes {}",
                        n.outputs.len(),
                        out.len()
                    ));
                } else {
                    for (id, t) in n.outputs.iter().zip(out) {
                        if *g.ty(*id) != t {
                            errs.push(format!(
                                "{here}: result %{} is typed {} but the op gives {}",
                                g.value(*id).name,
                                g.ty(*id),
                                t
                            ));
                        }
                    }
                }
            }
        }
        if let Op::Const {
            weight: Some(_), ..
        } = &n.op
        {
            if n.outputs.len() == 1 && g.inputs.contains(&n.outputs[0]) {
                errs.push(format!("{here}: a weight cannot be a graph input"));
            }
        }
    }
    for id in &g.outputs {
        if !in_range(id) {
            errs.push(format!("graph output #{} does not exist", id.0));
        } else if !defined[id.0] {
            errs.push(format!(
                "graph output %{} is never defined",
                g.value(*id).name
            ));
        }
    }
    for (i, v) in g.values.iter().enumerate() {
        if !defined[i] {
            errs.push(format!("value %{} is never defined", v.name));
        }
    }
    errs
}
