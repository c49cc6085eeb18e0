//! Clean-ups: inference-time no-ops and dead code.

use forgec_ir::{Graph, Op, ValueId};
use std::collections::HashMap;

/// Replaces every use of a Dropout's result by its input and drops the node (inference only:
/// the training graph keeps Dropout). A graph output stays a graph output.
pub fn strip_dropout(g: &mut Graph) {
    let mut alias: HashMap<ValueId, ValueId> = HashMap::new();
    let resolve = |alias: &HashMap<ValueId, ValueId>, mut v: ValueId| {
        while let Some(&a) = alias.get(&v) {
            v = a;
        }
        v
    };
    let mut keep = Vec::with_capacity(g.nodes.len());
    for mut n in std::mem::take(&mut g.nodes) {
        for i in &mut n.inputs {
            *i = resolve(&alias, *i);
        }
        if let Op::Dropout { .. } = n.op {
            alias.insert(n.outputs[0], n.inputs[0]);
        } else {
            keep.push(n);
        }
    }
    g.nodes = keep;
    for o in &mut g.outputs {
        *o = resolve(&alias, *o);
    }
    remove_unused_values(g);
}

/// Removes nodes none of whose results reach a graph output.
pub fn dce(g: &mut Graph) {
    let mut live = vec![false; g.values.len()];
    for o in &g.outputs {
        live[o.0] = true;
    }
    let mut keep = vec![false; g.nodes.len()];
    for (i, n) in g.nodes.iter().enumerate().rev() {
        if n.outputs.iter().any(|o| live[o.0]) {
            keep[i] = true;
            for v in &n.inputs {
                live[v.0] = true;
            }
        }
    }
    let mut k = keep.into_iter();
    g.nodes.retain(|_| k.next().unwrap());
    remove_unused_values(g);
}

/// Drops values that no node defines and that are not graph inputs, renumbering the rest.
fn remove_unused_values(g: &mut Graph) {
    let mut defined = vec![false; g.values.len()];
    for i in &g.inputs {
        defined[i.0] = true;
    }
    for n in &g.nodes {
        for o in &n.outputs {
            defined[o.0] = true;
        }
    }
    let mut map = vec![usize::MAX; g.values.len()];
    let mut values = Vec::new();
    for (i, v) in std::mem::take(&mut g.values).into_iter().enumerate() {
        if defined[i] {
            map[i] = values.len();
            values.push(v);
        }
    }
    g.values = values;
    let f = |v: &mut ValueId| v.0 = map[v.0];
    g.inputs.iter_mut().for_each(f);
    g.outputs.iter_mut().for_each(f);
    for n in &mut g.nodes {
        n.inputs.iter_mut().for_each(f);
        n.outputs.iter_mut().for_each(f);
    }
}
