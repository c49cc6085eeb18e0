//! Lowering: ops the compiler has no kernel for, rewritten as ops it has.

use forgec_ir::{ConvAttrs, Dim, Graph, Layout, Node, Op, PadMode};

/// Rewrites every `conv_transpose` (known kernel and spatial dims) as a convolution: the input
/// zero-stuffed by the strides (`reshape` with a unit dim after each strided spatial dim, a
/// zero `pad` of that dim to the stride, `reshape` back), padded (or sliced, where the
/// transposed convolution's padding exceeds the kernel's reach) by `dilation * (k - 1) - pad`
/// on each side (plus the output padding at the end), then correlated at stride 1 with the
/// kernel flipped in space (`slice` with step -1) and its channel dims exchanged per group
/// (`reshape`, `transpose`, `reshape`): ops on the weights that `fold-constants` folds when
/// they are constant. The result keeps its value id and type; `fold-pad` then folds the
/// padding into the convolution. A strided channels-last 2-D one of one group instead becomes
/// `col2im(x · Wᵀ)` (`columns`): no multiply-adds with stuffed zeros (3 in 4 at stride 2).
/// Stride 1 keeps the convolution: a training step's input gradient is one, and its summation
/// order is what cnn_mnist's Adam run follows Keras's with (col2im's order moved the run's first
/// kernel 9e-4 from Keras's, for a step 1.1x faster). Others stay as they are (the compiler
/// names them).
pub fn conv_transpose_to_conv(g: &mut Graph) {
    let old = std::mem::take(&mut g.nodes);
    for n in old {
        match rewrite(g, &n) {
            Some(()) => {}
            None => g.nodes.push(n),
        }
    }
    crate::cleanup::dce(g);
}

/// Appends the rewrite of `n` to `g`, or (leaving `g` as it was) returns None.
fn rewrite(g: &mut Graph, n: &Node) -> Option<()> {
    let (nodes, values) = (g.nodes.len(), g.values.len());
    let done = build(g, n);
    if done.is_none() {
        g.nodes.truncate(nodes);
        g.values.truncate(values);
    }
    done
}

/// `rewrite`'s work: appends the new nodes, or returns None part way (`rewrite` removes them).
fn build(g: &mut Graph, n: &Node) -> Option<()> {
    let Op::ConvTranspose(c) = &n.op else {
        return None;
    };
    let (x, w) = (n.inputs[0], n.inputs[1]);
    let xt = g.ty(x).clone();
    let r = xt.rank();
    if c.groups == 0 || r < 3 || n.outputs.len() != 1 || n.inputs.len() != 2 {
        return None;
    }
    let ws: Vec<usize> = g.ty(w).known_shape()?;
    let sp: Vec<usize> = match c.layout {
        Layout::ChannelsLast => (1..r - 1).collect(),
        Layout::ChannelsFirst => (2..r).collect(),
    };
    let ns = sp.len();
    let sizes: Vec<usize> = sp
        .iter()
        .map(|&a| xt.shape[a].known())
        .collect::<Option<_>>()?;
    let k: Vec<usize> = match c.layout {
        Layout::ChannelsLast => ws[..ns].to_vec(),
        Layout::ChannelsFirst => ws[2..].to_vec(),
    };
    let base = g.value(n.outputs[0]).name.clone();
    let strided = c.strides.iter().any(|&s| s > 1);
    if c.layout == Layout::ChannelsLast
        && c.groups == 1
        && ns == 2
        && strided
        && xt.dtype.is_float()
    {
        return columns(g, n, c, &k, &ws, &base);
    }
    let o = &n.origin;
    let mut cur = x;
    // Zero-stuffing: [.., H, ..] -> [.., H, 1, ..] -> pad to [.., H, s, ..] -> [.., H*s, ..].
    if c.strides.iter().any(|&s| s > 1) {
        let mut split: Vec<i64> = Vec::new();
        let mut pads = Vec::new();
        for a in 0..r {
            split.push(if a == 0 {
                0
            } else {
                xt.shape[a].known()? as i64
            });
            pads.push((0, 0));
            if let Some(i) = sp.iter().position(|&s| s == a) {
                split.push(1);
                pads.push((0, c.strides[i] - 1));
            }
        }
        let joined: Vec<i64> = (0..r)
            .map(|a| match sp.iter().position(|&s| s == a) {
                _ if a == 0 => Some(0),
                Some(i) => Some((sizes[i] * c.strides[i]) as i64),
                None => xt.shape[a].known().map(|d| d as i64),
            })
            .collect::<Option<_>>()?;
        let steps = [
            (Op::Reshape { shape: split }, "stuff_split"),
            (
                Op::Pad {
                    pads,
                    mode: PadMode::Constant,
                    value: 0.0,
                },
                "stuff_zeros",
            ),
            (Op::Reshape { shape: joined }, "stuffed"),
        ];
        for (op, what) in steps {
            cur = g.add(op, &[cur], &format!("{base}.{what}"), o).ok()?;
        }
    }
    // Padding (or cropping) around the stuffed input, whose length is size * stride (the
    // last stride - 1 zeros are past the last input).
    let mut pads = vec![(0usize, 0usize); r];
    let (mut starts, mut ends, mut axes) = (Vec::new(), Vec::new(), Vec::new());
    for (i, &a) in sp.iter().enumerate() {
        let reach = (c.dilations[i] * (k[i] - 1)) as i64;
        let len = (sizes[i] * c.strides[i]) as i64;
        let op = c.output_padding.get(i).copied().unwrap_or(0) as i64;
        let before = reach - c.pads[i].0 as i64;
        let after = reach - c.pads[i].1 as i64 + op - (c.strides[i] as i64 - 1);
        pads[a] = (before.max(0) as usize, after.max(0) as usize);
        if before < 0 || after < 0 {
            axes.push(a);
            starts.push((-before).max(0));
            ends.push(len - (-after).max(0));
        }
    }
    if !axes.is_empty() {
        let steps = vec![1; axes.len()];
        cur = g
            .add(
                Op::Slice {
                    axes,
                    starts,
                    ends,
                    steps,
                },
                &[cur],
                &format!("{base}.cropped"),
                o,
            )
            .ok()?;
    }
    if pads.iter().any(|p| *p != (0, 0)) {
        cur = g
            .add(
                Op::Pad {
                    pads,
                    mode: PadMode::Constant,
                    value: 0.0,
                },
                &[cur],
                &format!("{base}.padded"),
                o,
            )
            .ok()?;
    }
    // The kernel: channel dims exchanged within each group, then flipped in space.
    let gr = c.groups;
    let (split, perm, joined, kaxes): (Vec<usize>, Vec<usize>, Vec<usize>, Vec<usize>) =
        match c.layout {
            // [k..., C_out/g, C_in] -> [k..., C_out/g, g, C_in/g] -> [k..., C_in/g, g, C_out/g]
            Layout::ChannelsLast => {
                let (opg, cin) = (ws[ns], ws[ns + 1]);
                let mut split = k.clone();
                split.extend([opg, gr, cin / gr]);
                let mut perm: Vec<usize> = (0..ns).collect();
                perm.extend([ns + 2, ns + 1, ns]);
                let mut joined = k.clone();
                joined.extend([cin / gr, gr * opg]);
                (split, perm, joined, (0..ns).collect())
            }
            // [C_in, C_out/g, k...] -> [g, C_in/g, C_out/g, k...] -> [g, C_out/g, C_in/g, k...]
            Layout::ChannelsFirst => {
                let (cin, opg) = (ws[0], ws[1]);
                let mut split = vec![gr, cin / gr, opg];
                split.extend(&k);
                let mut perm = vec![0, 2, 1];
                perm.extend(3..3 + ns);
                let mut joined = vec![gr * opg, cin / gr];
                joined.extend(&k);
                (split, perm, joined, (2..2 + ns).collect())
            }
        };
    let as_i64 = |v: &[usize]| v.iter().map(|&d| d as i64).collect::<Vec<_>>();
    let kernel_ops = [
        (
            Op::Reshape {
                shape: as_i64(&split),
            },
            "kernel_groups",
        ),
        (Op::Transpose { perm }, "kernel_exchanged"),
        (
            Op::Reshape {
                shape: as_i64(&joined),
            },
            "kernel_joined",
        ),
        (
            Op::Slice {
                starts: kaxes.iter().map(|&a| joined[a] as i64 - 1).collect(),
                ends: kaxes.iter().map(|&a| -(joined[a] as i64) - 1).collect(),
                steps: vec![-1; ns],
                axes: kaxes,
            },
            "flipped",
        ),
    ];
    let mut wv = w;
    for (op, what) in kernel_ops {
        wv = g.add(op, &[wv], &format!("{base}.{what}"), o).ok()?;
    }
    let mut cc = c.clone();
    cc.strides = vec![1; ns];
    cc.pads = vec![(0, 0); ns];
    cc.output_padding = Vec::new();
    let conv = Op::Conv(cc);
    // The convolution must give the transposed convolution's type, or nothing changes.
    let ot = g.ty(n.outputs[0]).clone();
    let tys = [g.ty(cur).clone(), g.ty(wv).clone()];
    match forgec_ir::infer::infer(&conv, &tys) {
        Ok(t) if t.len() == 1 && t[0] == ot => {}
        _ => return None,
    }
    g.nodes.push(Node {
        op: conv,
        inputs: vec![cur, wv],
        outputs: n.outputs.clone(),
        origin: n.origin.clone(),
    });
    Some(())
}

/// A channels-last 2-D transposed convolution of one group as `col2im(x · Wᵀ)`: the kernel
/// `[kh, kw, C_out, C_in]` as rows `[kh kw C_out, C_in]`, transposed (folded when constant);
/// each input position's columns `x · Wᵀ` (`[N, H, W, kh kw C_out]`), summed into the output
/// pixels their taps reach.
fn columns(
    g: &mut Graph,
    n: &Node,
    c: &ConvAttrs,
    k: &[usize],
    ws: &[usize],
    base: &str,
) -> Option<()> {
    let (x, w) = (n.inputs[0], n.inputs[1]);
    let o = &n.origin;
    let (cout, cin) = (ws[2], ws[3]);
    let rows = (k[0] * k[1] * cout) as i64;
    let wm = g
        .add(
            Op::Reshape {
                shape: vec![rows, cin as i64],
            },
            &[w],
            &format!("{base}.kernel_rows"),
            o,
        )
        .ok()?;
    let wt = g
        .add(
            Op::Transpose { perm: vec![1, 0] },
            &[wm],
            &format!("{base}.kernel_t"),
            o,
        )
        .ok()?;
    let cols = g
        .add(Op::MatMul, &[x, wt], &format!("{base}.columns"), o)
        .ok()?;
    let ot = g.ty(n.outputs[0]).clone();
    let size: Vec<usize> = ot.shape[1..3]
        .iter()
        .map(Dim::known)
        .collect::<Option<_>>()?;
    let op = Op::Col2Im {
        conv: ConvAttrs {
            output_padding: Vec::new(),
            ..c.clone()
        },
        kernel: k.to_vec(),
        size,
    };
    match forgec_ir::infer::infer(&op, &[g.ty(cols).clone()]) {
        Ok(t) if t.len() == 1 && t[0] == ot => {}
        _ => return None,
    }
    g.nodes.push(Node {
        op,
        inputs: vec![cols],
        outputs: n.outputs.clone(),
        origin: n.origin.clone(),
    });
    Some(())
}
