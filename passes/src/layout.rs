//! Layout: channels-first convolutions and pooling (ONNX's NCHW) rewritten channels-last, the
//! layout the compiler's kernels run, and the transposes this puts around them moved and
//! cancelled so that chains of layers stay channels-last.

use forgec_ir::interp::eval_op;
use forgec_ir::{Graph, Layout, Node, Op, Tensor, ValueId};
use std::collections::HashMap;

/// `[0, 2, .., r-1, 1]`: channels-first to channels-last.
fn to_last(r: usize) -> Vec<usize> {
    let mut p = vec![0];
    p.extend(2..r);
    p.push(1);
    p
}

/// `[0, r-1, 1, .., r-2]`: channels-last to channels-first.
fn to_first(r: usize) -> Vec<usize> {
    let mut p = vec![0, r - 1];
    p.extend(1..r - 1);
    p
}

/// Rewrites every channels-first convolution and pooling as transpose → channels-last op →
/// transpose back (the kernel `[F, C, k...]` becomes `[k..., C, F]`). Values keep their ids
/// and types: the transposes back define the original results.
pub fn channels_last(g: &mut Graph) {
    let old = std::mem::take(&mut g.nodes);
    for n in old {
        let layout_first = match &n.op {
            Op::Conv(c) => c.layout == Layout::ChannelsFirst,
            Op::Pool(p) => p.layout == Layout::ChannelsFirst,
            _ => false,
        };
        let r = n.inputs.first().map_or(0, |&x| g.ty(x).rank());
        if !layout_first || r < 3 || n.outputs.len() != 1 {
            g.nodes.push(n);
            continue;
        }
        let base = g.value(n.outputs[0]).name.clone();
        let Ok(xt) = g.add(
            Op::Transpose { perm: to_last(r) },
            &[n.inputs[0]],
            &format!("{base}.nhwc_in"),
            &n.origin,
        ) else {
            g.nodes.push(n);
            continue;
        };
        let (op, inputs) = match &n.op {
            Op::Conv(c) => {
                // [F, C/g, k...] -> [k..., C/g, F]
                let mut wp: Vec<usize> = (2..r).collect();
                wp.extend([1, 0]);
                let w = g.add(
                    Op::Transpose { perm: wp },
                    &[n.inputs[1]],
                    &format!("{base}.hwio"),
                    &n.origin,
                );
                let mut c = c.clone();
                c.layout = Layout::ChannelsLast;
                match w {
                    Ok(w) => (Op::Conv(c), vec![xt, w]),
                    Err(_) => {
                        g.nodes.pop();
                        g.nodes.push(n);
                        continue;
                    }
                }
            }
            Op::Pool(p) => {
                let mut p = p.clone();
                p.layout = Layout::ChannelsLast;
                (Op::Pool(p), vec![xt])
            }
            _ => unreachable!("only conv and pool are rewritten"),
        };
        let Ok(yt) = g.add(op, &inputs, &format!("{base}.nhwc"), &n.origin) else {
            g.nodes.push(n);
            continue;
        };
        g.nodes.push(Node {
            op: Op::Transpose { perm: to_first(r) },
            inputs: vec![yt],
            outputs: n.outputs.clone(),
            origin: n.origin.clone(),
        });
    }
}

/// The permutation `q` after `p`: transposing by `p` then by `q` is transposing by this.
fn compose(p: &[usize], q: &[usize]) -> Vec<usize> {
    q.iter().map(|&i| p[i]).collect()
}

fn inverse(p: &[usize]) -> Vec<usize> {
    let mut inv = vec![0; p.len()];
    for (i, &pi) in p.iter().enumerate() {
        inv[pi] = i;
    }
    inv
}

/// Moves transposes below the elementwise ops that follow them (a unary op; a binary op with a
/// constant, whose constant is transposed to match) and cancels a transpose followed by its
/// inverse, so that the transposes `channels_last` puts between layers meet and vanish.
/// A value that is a graph output or has several users is left where it is.
pub fn sink_transposes(g: &mut Graph) {
    // Each round moves one transpose past one op or removes one; the bound only guards
    // against a cycle.
    for _ in 0..4 * g.nodes.len() + 16 {
        if !sink_once(g) {
            break;
        }
    }
    crate::cleanup::dce(g);
}

fn sink_once(g: &mut Graph) -> bool {
    let mut uses: HashMap<ValueId, usize> = HashMap::new();
    for n in &g.nodes {
        for &v in &n.inputs {
            *uses.entry(v).or_default() += 1;
        }
    }
    let producer: HashMap<ValueId, usize> = g
        .nodes
        .iter()
        .enumerate()
        .flat_map(|(i, n)| n.outputs.iter().map(move |&o| (o, i)))
        .collect();
    let const_of = |g: &Graph, v: ValueId| -> Option<Tensor> {
        producer.get(&v).and_then(|&i| match &g.nodes[i].op {
            Op::Const { value, .. } => Some(value.clone()),
            _ => None,
        })
    };
    for i in 0..g.nodes.len() {
        let n = &g.nodes[i];
        // A transposed input of this node (one used elsewhere too can only be cancelled).
        let Some((slot, t, perm, x, shared)) = n.inputs.iter().enumerate().find_map(|(k, &v)| {
            let &pi = producer.get(&v)?;
            match &g.nodes[pi].op {
                Op::Transpose { perm } => Some((
                    k,
                    v,
                    perm.clone(),
                    g.nodes[pi].inputs[0],
                    uses.get(&v) != Some(&1) || g.outputs.contains(&v),
                )),
                _ => None,
            }
        }) else {
            continue;
        };
        let out = n.outputs[0];
        // A binary op on two values transposed alike runs on the untransposed ones (the
        // transposes stay for their other users, if any, and cancel there).
        if let (Op::Binary(_), [a, b]) = (&n.op, n.inputs.as_slice()) {
            let untransposed = |v: &ValueId| {
                producer.get(v).and_then(|&pi| match &g.nodes[pi].op {
                    Op::Transpose { perm: q } if *q == perm => Some(g.nodes[pi].inputs[0]),
                    _ => None,
                })
            };
            if let (Some(xa), Some(xb)) = (untransposed(a), untransposed(b)) {
                if g.outputs.contains(&out) || g.ty(xa) != g.ty(xb) {
                    continue;
                }
                let (origin, op) = (n.origin.clone(), n.op.clone());
                let name = g.value(out).name.clone();
                return rewrite(g, i, op, vec![xa, xb], perm, out, &name, &origin);
            }
        }
        if shared && !matches!(n.op, Op::Transpose { .. }) {
            continue;
        }
        // pad(transpose(x, p)) = transpose(pad'(x), p), with the pads moved to x's axes.
        if let Op::Pad { pads, mode, value } = &n.op {
            if g.outputs.contains(&out) || pads.len() != perm.len() {
                continue;
            }
            let mut moved = vec![(0, 0); pads.len()];
            for (i, &p) in perm.iter().enumerate() {
                moved[p] = pads[i];
            }
            let op = Op::Pad {
                pads: moved,
                mode: *mode,
                value: *value,
            };
            let (origin, name) = (n.origin.clone(), g.value(out).name.clone());
            return rewrite(g, i, op, vec![x], perm, out, &name, &origin);
        }
        match &n.op {
            // transpose(transpose(x, p), q): one transpose, or none.
            Op::Transpose { perm: q } => {
                let r = compose(&perm, q);
                if r.iter().enumerate().all(|(i, &p)| i == p) {
                    if g.outputs.contains(&out) {
                        continue;
                    }
                    for m in &mut g.nodes {
                        for v in &mut m.inputs {
                            if *v == out {
                                *v = x;
                            }
                        }
                    }
                    g.nodes.remove(i);
                } else if shared {
                    continue;
                } else {
                    g.nodes[i].op = Op::Transpose { perm: r };
                    g.nodes[i].inputs = vec![x];
                }
                return true;
            }
            Op::Unary(_) | Op::Binary(_) | Op::Cast { .. } => {
                let rank = perm.len();
                let mut inputs = n.inputs.clone();
                inputs[slot] = x;
                // The other operand of a binary op: a constant, transposed to match.
                let mut new_const = None;
                if let Op::Binary(_) = n.op {
                    let other = n.inputs[1 - slot];
                    if other == t {
                        continue;
                    }
                    let Some(c) = const_of(g, other) else {
                        continue;
                    };
                    if c.shape().len() > rank {
                        continue;
                    }
                    let mut full = vec![1usize; rank - c.shape().len()];
                    full.extend_from_slice(c.shape());
                    let reshaped = eval_op(
                        &Op::Reshape {
                            shape: full.iter().map(|&d| d as i64).collect(),
                        },
                        &[&c],
                    );
                    let Ok(mut reshaped) = reshaped else { continue };
                    let moved = eval_op(
                        &Op::Transpose {
                            perm: inverse(&perm),
                        },
                        &[&reshaped.remove(0)],
                    );
                    let Ok(mut moved) = moved else { continue };
                    new_const = Some(moved.remove(0));
                }
                if g.outputs.contains(&out) {
                    continue;
                }
                let origin = n.origin.clone();
                let op = n.op.clone();
                let name = g.value(out).name.clone();
                if let Some(c) = new_const {
                    let cid = g.add_const(c, None, &format!("{name}.moved"), &origin);
                    let node = g.nodes.pop().expect("just added");
                    g.nodes.insert(i, node);
                    inputs[1 - slot] = cid;
                    return rewrite(g, i + 1, op, inputs, perm, out, &name, &origin);
                }
                return rewrite(g, i, op, inputs, perm, out, &name, &origin);
            }
            _ => {}
        }
    }
    false
}

/// Node `i` becomes `op(inputs)` on the untransposed data, and a transpose by `perm` after it
/// defines `out` as before.
#[allow(clippy::too_many_arguments)]
fn rewrite(
    g: &mut Graph,
    i: usize,
    op: Op,
    inputs: Vec<ValueId>,
    perm: Vec<usize>,
    out: ValueId,
    name: &str,
    origin: &forgec_ir::Origin,
) -> bool {
    let Ok(new) = g.add(op, &inputs, &format!("{name}.moved"), origin) else {
        return false;
    };
    let node = g.nodes.pop().expect("just added");
    g.nodes[i] = node;
    g.nodes.insert(
        i + 1,
        Node {
            op: Op::Transpose { perm },
            inputs: vec![new],
            outputs: vec![out],
            origin: origin.clone(),
        },
    );
    true
}
