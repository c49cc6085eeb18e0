//! Folding: work that depends only on constants is done once, at compile time.

use forgec_ir::interp::eval_op;
use forgec_ir::{BinaryOp, Graph, Layout, Node, Op, Origin, Tensor, ValueId};

/// Results larger than this many elements stay computed at run time (a `ConstantOfShape` or an
/// `Expand` can make a constant far bigger than its inputs).
const MAX_FOLDED: usize = 1 << 22;

/// Evaluates every node whose inputs are all constants (a reshaped kernel, a transposed
/// weight, shape arithmetic) and makes its results constants.
pub fn fold_constants(g: &mut Graph) {
    let mut consts: Vec<Option<Tensor>> = vec![None; g.values.len()];
    for i in 0..g.nodes.len() {
        let n = &g.nodes[i];
        if let Op::Const { value, .. } = &n.op {
            consts[n.outputs[0].0] = Some(value.clone());
            continue;
        }
        if n.inputs.is_empty() || n.op.has_symbolic_attrs() || n.outputs.len() != 1 {
            continue;
        }
        let Some(ins) = n
            .inputs
            .iter()
            .map(|v| consts[v.0].as_ref())
            .collect::<Option<Vec<&Tensor>>>()
        else {
            continue;
        };
        let small = g
            .ty(n.outputs[0])
            .known_shape()
            .is_some_and(|s| s.iter().product::<usize>() <= MAX_FOLDED);
        if !small {
            continue;
        }
        // An op the interpreter refuses (a bad index, say) stays for run time, where its
        // error names the input that caused it.
        let Ok(mut out) = eval_op(&n.op, &ins) else {
            continue;
        };
        let value = out.remove(0);
        consts[n.outputs[0].0] = Some(value.clone());
        g.nodes[i].op = Op::Const {
            value,
            weight: None,
        };
        g.nodes[i].inputs.clear();
    }
    crate::cleanup::dce(g);
}

/// Folds a zero padding of the spatial dims into the convolution that reads it (the single
/// user of the padded value): the convolution pads as it reads, and the padded copy goes.
pub fn fold_pad(g: &mut Graph) {
    for i in 0..g.nodes.len() {
        let Op::Conv(c) = &g.nodes[i].op else {
            continue;
        };
        let x = g.nodes[i].inputs[0];
        let Some(p) = g.nodes.iter().position(|n| n.outputs == [x]) else {
            continue;
        };
        let Op::Pad { pads, mode, value } = &g.nodes[p].op else {
            continue;
        };
        let users = g.nodes.iter().filter(|n| n.inputs.contains(&x)).count();
        let r = pads.len();
        let spatial: Vec<usize> = match c.layout {
            Layout::ChannelsLast => (1..r - 1).collect(),
            Layout::ChannelsFirst => (2..r).collect(),
        };
        let only_spatial = (0..r).all(|a| spatial.contains(&a) || pads[a] == (0, 0));
        if users != 1
            || g.outputs.contains(&x)
            || *mode != forgec_ir::PadMode::Constant
            || *value != 0.0
            || !only_spatial
            || c.pads.len() != spatial.len()
        {
            continue;
        }
        let mut c = c.clone();
        for (k, &a) in spatial.iter().enumerate() {
            c.pads[k].0 += pads[a].0;
            c.pads[k].1 += pads[a].1;
        }
        let src = g.nodes[p].inputs[0];
        g.nodes[i].op = Op::Conv(c);
        g.nodes[i].inputs[0] = src;
    }
    crate::cleanup::dce(g);
}

/// Folds a BatchNormalization that follows a convolution or a matmul with constant weights
/// (and constant statistics) into them: `bn(conv(x, W))` becomes `conv(x, W * s) + (beta -
/// mean * s)` with `s = gamma / sqrt(var + eps)` per output channel. One pass over the data
/// instead of two, and the addition is the kind a kernel's epilogue absorbs.
pub fn fold_batchnorm(g: &mut Graph) {
    let mut i = 0;
    while i < g.nodes.len() {
        if let Some((w_node, w_new, shift)) = fold_one(g, i) {
            // New weights (the old ones may have other users), then the shift, just before
            // the convolution: both are constants, so any earlier place keeps the order.
            let origin = g.nodes[i].origin.clone();
            let w_name = format!("{}.folded", g.value(g.nodes[w_node].outputs[0]).name);
            let w_id = insert_const(g, w_node, w_new, &w_name, &origin);
            let s_name = format!("{}.shift", g.value(g.nodes[i + 1].outputs[0]).name);
            let s_id = insert_const(g, w_node, shift, &s_name, &origin);
            // Indices moved by the two insertions.
            let (bn, producer) = (i + 2, producer_of(g, i + 2));
            g.nodes[producer].inputs[1] = w_id;
            let x = g.nodes[bn].inputs[0];
            g.nodes[bn].op = Op::Binary(BinaryOp::Add);
            g.nodes[bn].inputs = vec![x, s_id];
            i += 3;
        } else {
            i += 1;
        }
    }
    crate::cleanup::dce(g);
}

fn producer_of(g: &Graph, node: usize) -> usize {
    let x = g.nodes[node].inputs[0];
    g.nodes
        .iter()
        .position(|n| n.outputs.contains(&x))
        .expect("a batch norm's input is defined")
}

/// Appends a constant and moves its node to position `at`.
fn insert_const(g: &mut Graph, at: usize, value: Tensor, name: &str, origin: &Origin) -> ValueId {
    let id = g.add_const(value, None, name, origin);
    let node: Node = g.nodes.pop().expect("just added");
    g.nodes.insert(at, node);
    id
}

/// For the batch norm at `i`: (index of the weights' const node, folded weights, shift).
fn fold_one(g: &Graph, i: usize) -> Option<(usize, Tensor, Tensor)> {
    let bn = &g.nodes[i];
    let Op::BatchNorm { axis, epsilon, .. } = bn.op else {
        return None;
    };
    let const_of = |v: ValueId| {
        g.nodes
            .iter()
            .position(|n| n.outputs == [v])
            .and_then(|k| match &g.nodes[k].op {
                Op::Const { value, .. } => Some((k, value)),
                _ => None,
            })
    };
    let stats: Vec<Vec<f64>> = bn.inputs[1..]
        .iter()
        .map(|&v| const_of(v).map(|(_, t)| t.to_f64_vec()))
        .collect::<Option<_>>()?;
    let x = bn.inputs[0];
    // The producer's result feeds the batch norm alone, and is not a graph output.
    let users = g.nodes.iter().filter(|n| n.inputs.contains(&x)).count();
    if users != 1 || g.outputs.contains(&x) {
        return None;
    }
    let p = g.nodes.iter().position(|n| n.outputs == [x])?;
    let rank = g.ty(x).rank();
    // Which axis of the weights holds the output channels.
    let w_axis = match &g.nodes[p].op {
        Op::Conv(c) => match c.layout {
            Layout::ChannelsLast if axis == rank - 1 => g.ty(g.nodes[p].inputs[1]).rank() - 1,
            Layout::ChannelsFirst if axis == 1 => 0,
            _ => return None,
        },
        Op::MatMul if axis == rank - 1 && g.ty(g.nodes[p].inputs[1]).rank() == 2 => 1,
        _ => return None,
    };
    let (w_node, w) = const_of(g.nodes[p].inputs[1])?;
    if !w.dtype().is_float() || w.dtype() != g.ty(x).dtype {
        return None;
    }
    let (gamma, beta, mean, var) = (&stats[0], &stats[1], &stats[2], &stats[3]);
    let f = w.shape()[w_axis];
    if [gamma, beta, mean, var].iter().any(|s| s.len() != f) {
        return None;
    }
    let scale: Vec<f64> = (0..f)
        .map(|c| gamma[c] / (var[c] + epsilon).sqrt())
        .collect();
    let inner: usize = w.shape()[w_axis + 1..].iter().product();
    let wv: Vec<f64> = w
        .to_f64_vec()
        .iter()
        .enumerate()
        .map(|(k, &v)| v * scale[(k / inner) % f])
        .collect();
    let w_new = Tensor::from_f64_values(w.dtype(), w.shape().to_vec(), &wv).ok()?;
    let shift: Vec<f64> = (0..f).map(|c| beta[c] - mean[c] * scale[c]).collect();
    // Broadcast along the channel axis of the output: [F] when it is the last axis, else
    // [F, 1, ...].
    let mut sshape = vec![f];
    sshape.extend(std::iter::repeat_n(1, rank - 1 - axis));
    let shift = Tensor::from_f64_values(w.dtype(), sshape, &shift).ok()?;
    Some((w_node, w_new, shift))
}
