//! Reverse-mode autodiff over the IR. [`gradients`] appends to a graph the gradient of a
//! scalar loss with respect to chosen values (trainable weights made inputs, or any float
//! inputs), as plain IR built by each op's derivative rule (`forgec_ir::ops::grad`, beside
//! the op's type rule and reference evaluation). The result goes through the same passes and
//! the same code generator as inference: a matmul's gradients are matmuls.

use forgec_ir::ops::{grad, Builder};
use forgec_ir::{BinaryOp, Graph, Op, ValueId};

/// Appends `d loss / d v` for every `v` in `wrt` to `g` and returns those values (in `wrt`'s
/// order). `loss` must be a float scalar. Errors list every problem at once: ops on the way
/// without a derivative rule (naming their layer or node), and values of `wrt` the loss does
/// not depend on (a weight that never learns).
pub fn gradients(
    g: &mut Graph,
    loss: ValueId,
    wrt: &[ValueId],
) -> Result<Vec<ValueId>, Vec<String>> {
    let lt = g.ty(loss).clone();
    if lt.rank() != 0 || !lt.dtype.is_float() {
        return Err(vec![format!(
            "the loss %{} must be a float scalar, not {}{:?}",
            g.value(loss).name,
            lt.dtype,
            lt.shape
        )]);
    }
    let n = g.values.len();
    // Values that depend on `wrt` (forward), and values the loss depends on (backward).
    let mut depends = vec![false; n];
    for &w in wrt {
        depends[w.0] = true;
    }
    let nodes = g.nodes.len();
    for i in 0..nodes {
        if g.nodes[i].inputs.iter().any(|v| depends[v.0]) {
            for o in &g.nodes[i].outputs {
                depends[o.0] = true;
            }
        }
    }
    let mut needed = vec![false; n];
    needed[loss.0] = true;
    for i in (0..nodes).rev() {
        if g.nodes[i].outputs.iter().any(|v| needed[v.0]) {
            for v in &g.nodes[i].inputs {
                needed[v.0] = true;
            }
        }
    }
    let mut grads: Vec<Option<ValueId>> = vec![None; n];
    let one = forgec_ir::Tensor::full(lt.dtype, vec![], 1.0).expect("a scalar");
    let origin = forgec_ir::Origin::default();
    grads[loss.0] = Some(g.add_const(one, None, "grad.seed", &origin));
    let mut problems = Vec::new();
    // Values above an op whose rule failed: their missing gradients are that op's fault.
    let mut blocked = vec![false; n];
    for i in (0..nodes).rev() {
        let node = g.nodes[i].clone();
        if !node.outputs.iter().any(|v| needed[v.0] && depends[v.0]) {
            continue;
        }
        if node.outputs.iter().any(|v| blocked[v.0]) {
            for v in &node.inputs {
                blocked[v.0] = true;
            }
        }
        let dys: Vec<Option<ValueId>> = node.outputs.iter().map(|v| grads[v.0]).collect();
        if dys.iter().all(|d| d.is_none()) {
            continue;
        }
        let need: Vec<bool> = node
            .inputs
            .iter()
            .map(|v| depends[v.0] && g.ty(*v).dtype.is_float())
            .collect();
        if !need.iter().any(|&x| x) {
            continue;
        }
        let mut b = Builder {
            g,
            origin: node.origin.clone(),
        };
        let dxs = match grad(&mut b, &node.op, &node.inputs, &node.outputs, &dys, &need) {
            Ok(d) => d,
            Err(e) => {
                let behind: Vec<ValueId> = wrt
                    .iter()
                    .copied()
                    .filter(|&w| reaches(g, w, &node.inputs))
                    .collect();
                problems.push(format!(
                    "{}: {e}, and the loss's gradient with respect to {} flows through it",
                    node.origin,
                    wrt_names(g, &behind)
                ));
                for v in &node.inputs {
                    blocked[v.0] = true;
                }
                continue;
            }
        };
        for (k, dx) in dxs.into_iter().enumerate() {
            let (Some(dx), true) = (dx, need.get(k).copied().unwrap_or(false)) else {
                continue;
            };
            let v = node.inputs[k];
            grads[v.0] = Some(match grads[v.0] {
                None => dx,
                Some(acc) => g
                    .add(
                        Op::Binary(BinaryOp::Add),
                        &[acc, dx],
                        "grad.acc",
                        &node.origin,
                    )
                    .map_err(|e| vec![format!("internal error accumulating a gradient: {e}")])?,
            });
        }
    }
    let mut out = Vec::new();
    for &w in wrt {
        match grads[w.0] {
            Some(d) => out.push(d),
            None if blocked[w.0] => {}
            None => problems.push(format!(
                "%{} gets no gradient from the loss: it does not reach the loss, or only through ops that pass none (a rounding, a comparison): training would never change it",
                g.value(w).name
            )),
        }
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}

/// Whether `from` flows into any of `to`.
fn reaches(g: &Graph, from: ValueId, to: &[ValueId]) -> bool {
    let mut on = vec![false; g.values.len()];
    on[from.0] = true;
    for n in &g.nodes {
        if n.inputs.iter().any(|v| on[v.0]) {
            for o in &n.outputs {
                on[o.0] = true;
            }
        }
    }
    to.iter().any(|v| on[v.0])
}

fn wrt_names(g: &Graph, wrt: &[ValueId]) -> String {
    let names: Vec<String> = wrt
        .iter()
        .take(3)
        .map(|w| format!("%{}", g.value(*w).name))
        .collect();
    if wrt.len() > 3 {
        format!("{} and {} more", names.join(", "), wrt.len() - 3)
    } else {
        names.join(", ")
    }
}
