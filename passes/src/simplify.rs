//! Simplifications that remove nodes without changing any value: common subexpressions and
//! identity ops.

use forgec_ir::{Graph, Op, ValueId};
use std::collections::HashMap;

/// Constants up to this many elements are merged when equal (ReLU6's 6.0, the 0 of a
/// comparison); weights and larger literals keep their own nodes.
const SMALL_CONST: usize = 64;

/// Replaces every use of an aliased value by its alias in the nodes. Graph outputs are never
/// aliased (their names are the compiled API's), so the passes keep nodes that define them.
fn redirect(g: &mut Graph, aliases: &HashMap<ValueId, ValueId>) {
    let resolve = |mut v: ValueId| {
        while let Some(&a) = aliases.get(&v) {
            v = a;
        }
        v
    };
    for n in &mut g.nodes {
        for i in &mut n.inputs {
            *i = resolve(*i);
        }
    }
}

/// Common subexpressions: a node with the same op (attributes included) and the same inputs
/// as an earlier one is dropped and its results replaced by the earlier node's. Small equal
/// literal constants are merged too.
pub fn cse(g: &mut Graph) {
    let mut seen: HashMap<(String, Vec<ValueId>), Vec<usize>> = HashMap::new();
    let mut aliases: HashMap<ValueId, ValueId> = HashMap::new();
    let mut dropped = std::collections::HashSet::new();
    for i in 0..g.nodes.len() {
        // Inputs already rewritten to the survivors, so chains of duplicates collapse.
        let inputs: Vec<ValueId> = g.nodes[i]
            .inputs
            .iter()
            .map(|v| *aliases.get(v).unwrap_or(v))
            .collect();
        g.nodes[i].inputs = inputs.clone();
        let n = &g.nodes[i];
        if let Op::Const { value, weight } = &n.op {
            if weight.is_some() || value.numel() > SMALL_CONST {
                continue;
            }
        }
        if g.outputs.iter().any(|o| n.outputs.contains(o)) {
            continue;
        }
        let key = (n.op.name(), inputs);
        let bucket = seen.entry(key).or_default();
        let twin = bucket.iter().copied().find(|&j| {
            let m = &g.nodes[j];
            m.op == n.op
                && m.outputs.len() == n.outputs.len()
                && m.outputs
                    .iter()
                    .zip(&n.outputs)
                    .all(|(a, b)| g.ty(*a) == g.ty(*b))
        });
        match twin {
            Some(j) => {
                for (a, b) in n.outputs.iter().zip(&g.nodes[j].outputs) {
                    aliases.insert(*a, *b);
                }
                dropped.insert(i);
            }
            None => bucket.push(i),
        }
    }
    redirect(g, &aliases);
    let mut i = 0;
    g.nodes.retain(|_| {
        i += 1;
        !dropped.contains(&(i - 1))
    });
    crate::cleanup::dce(g);
}

/// Identity ops: a reshape to the same shape, a transpose by the identity permutation, a cast
/// to the type the value already has. Their results are replaced by their inputs.
pub fn identity(g: &mut Graph) {
    let mut aliases: HashMap<ValueId, ValueId> = HashMap::new();
    for n in &g.nodes {
        let (Some(&x), [y]) = (n.inputs.first(), n.outputs.as_slice()) else {
            continue;
        };
        let same_type = g.ty(x) == g.ty(*y);
        let is_identity = match &n.op {
            Op::Reshape { .. } => same_type,
            Op::Transpose { perm } => same_type && perm.iter().enumerate().all(|(i, &p)| i == p),
            Op::Cast { .. } => same_type,
            _ => false,
        };
        if is_identity && !g.outputs.contains(y) {
            aliases.insert(*y, x);
        }
    }
    redirect(g, &aliases);
    crate::cleanup::dce(g);
}
