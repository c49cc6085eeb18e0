//! Back-propagation through time: [`unroll_rnns`] rewrites each `rnn` of a training step into
//! its cell's plain ops, one time step after another, so that the gradients come from the
//! rules of matmul, slice and the elementwise ops (and the unrolled step goes through the same
//! passes and code generator). The ops follow Keras 3's cells (`implementation=2`) in their
//! order of operations: LSTM `z = x W + h U + b`; GRU `x W + b_in`, then `h U (+ b_rec)`;
//! SimpleRNN `(x W + b) + h U`. The first step's state is zero, so its `h U` is left out.

use forgec_ir::{Activation, BinaryOp, Graph, Op, Origin, RnnAttrs, RnnCell, UnaryOp, ValueId};

type R<T> = Result<T, Vec<String>>;

/// The most time steps a recurrent layer is unrolled over (each adds some 20 nodes and their
/// gradients to the step).
pub const MAX_UNROLL: usize = 4096;

/// Rewrites every rnn of `g` into its unrolled cell ops; its result keeps its value id.
/// The number of time steps must be known. Every problem is reported at once.
pub fn unroll_rnns(g: &mut Graph) -> R<()> {
    let at: Vec<usize> = (0..g.nodes.len())
        .filter(|&i| matches!(g.nodes[i].op, Op::Rnn(_)))
        .collect();
    let mut problems = Vec::new();
    for &i in at.iter().rev() {
        let n = g.nodes[i].clone();
        let Op::Rnn(r) = n.op.clone() else {
            unreachable!("an rnn")
        };
        let Some(t) = g.ty(n.inputs[0]).shape[1].known() else {
            problems.push(format!(
                "{}: training back-propagates through time over a known number of time steps, \
                 but this input's time axis has no fixed size (`{}`): give the Input layer a \
                 fixed sequence length",
                n.origin,
                g.ty(n.inputs[0]).shape[1]
            ));
            continue;
        };
        // A model file's sequence length sizes the unrolled graph: bounded.
        if t > MAX_UNROLL {
            problems.push(format!(
                "{}: training unrolls this layer over its {t} time steps, more than the {MAX_UNROLL} forgec unrolls: train on shorter sequences",
                n.origin
            ));
            continue;
        }
        let start = g.nodes.len();
        let name = g.value(n.outputs[0]).name.clone();
        let dt = g.ty(n.inputs[0]).dtype;
        let mut c = Cell {
            g: &mut *g,
            o: n.origin.clone(),
            name,
            r: r.clone(),
            dt,
        };
        let h = c.unroll(n.inputs[0], n.inputs[1], n.inputs[2], n.inputs[3], t)?;
        let u = r.units as i64;
        let shape = if r.return_sequences {
            vec![0, t as i64, u]
        } else {
            vec![0, u]
        };
        crate::train::splice_op(g, i, start, Op::Reshape { shape }, vec![h]);
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

struct Cell<'a> {
    g: &'a mut Graph,
    o: Origin,
    name: String,
    r: RnnAttrs,
    dt: forgec_ir::DType,
}

impl Cell<'_> {
    fn op(&mut self, op: Op, ins: &[ValueId], what: &str) -> R<ValueId> {
        let name = format!("{}.{what}", self.name);
        self.g.add(op, ins, &name, &self.o).map_err(|e| {
            vec![format!(
                "{}: internal error unrolling the layer: {e}",
                self.o
            )]
        })
    }

    fn bin(&mut self, b: BinaryOp, x: ValueId, y: ValueId, what: &str) -> R<ValueId> {
        self.op(Op::Binary(b), &[x, y], what)
    }

    fn scalar(&mut self, v: f64, what: &str) -> ValueId {
        let t = forgec_ir::Tensor::full(self.dt, vec![], v).expect("a scalar");
        let name = format!("{}.{what}", self.name);
        self.g.add_const(t, None, &name, &self.o.clone())
    }

    /// `v[.., from..to]` along `axis`.
    fn slice(&mut self, v: ValueId, axis: usize, from: usize, to: usize, what: &str) -> R<ValueId> {
        let op = Op::Slice {
            axes: vec![axis],
            starts: vec![from as i64],
            ends: vec![to as i64],
            steps: vec![1],
        };
        self.op(op, &[v], what)
    }

    /// Gate `j` (of `units` columns) of a `[batch, gates * units]` value (or of a bias).
    fn gate(&mut self, v: ValueId, j: usize, what: &str) -> R<ValueId> {
        let u = self.r.units;
        let last = self.g.ty(v).rank() - 1;
        self.slice(v, last, j * u, (j + 1) * u, what)
    }

    fn act(&mut self, a: Activation, x: ValueId, what: &str) -> R<ValueId> {
        let un = |u| Op::Unary(u);
        match a {
            Activation::Linear => Ok(x),
            Activation::Tanh => self.op(un(UnaryOp::Tanh), &[x], what),
            Activation::Sigmoid => self.op(un(UnaryOp::Sigmoid), &[x], what),
            Activation::Relu => self.op(un(UnaryOp::Relu), &[x], what),
            // Keras 3: relu6(x + 3) / 6, as the interpreter's rnn.
            Activation::HardSigmoid => {
                let (three, zero, six) = (
                    self.scalar(3.0, "hs.3"),
                    self.scalar(0.0, "hs.0"),
                    self.scalar(6.0, "hs.6"),
                );
                let a = self.bin(BinaryOp::Add, x, three, "hs.shift")?;
                let a = self.bin(BinaryOp::Max, a, zero, "hs.lo")?;
                let a = self.bin(BinaryOp::Min, a, six, "hs.hi")?;
                self.bin(BinaryOp::Div, a, six, what)
            }
        }
    }

    /// `xs + h U`, or `xs` at the first step (no state yet).
    fn plus_hu(&mut self, xs: ValueId, h: Option<ValueId>, rk: ValueId, what: &str) -> R<ValueId> {
        match h {
            Some(h) => {
                let hu = self.op(Op::MatMul, &[h, rk], what)?;
                self.bin(BinaryOp::Add, xs, hu, &format!("{what}.sum"))
            }
            None => Ok(xs),
        }
    }

    /// The unrolled layer over `t` steps: its last state, or (return_sequences) every step's
    /// state in processing order, `[batch, t, units]`.
    fn unroll(
        &mut self,
        x: ValueId,
        k: ValueId,
        rk: ValueId,
        bias: ValueId,
        t: usize,
    ) -> R<ValueId> {
        let r = self.r.clone();
        let (u, gu) = (r.units, r.cell.gates() * r.units);
        let two = r.cell == RnnCell::Gru && r.reset_after;
        // The input and recurrent biases (GRU reset_after keeps them in two rows).
        let (b_in, b_rec) = if two {
            let reshape = |v: i64| Op::Reshape { shape: vec![v] };
            let b0 = self.slice(bias, 0, 0, 1, "bias_in_row")?;
            let b1 = self.slice(bias, 0, 1, 2, "bias_rec_row")?;
            (
                self.op(reshape(gu as i64), &[b0], "bias_in")?,
                Some(self.op(reshape(gu as i64), &[b1], "bias_rec")?),
            )
        } else {
            (bias, None)
        };
        // Every step's x W at once; Keras's LSTM adds its bias after h U, the others before.
        let mut xw = self.op(Op::MatMul, &[x, k], "xw")?;
        if r.cell != RnnCell::Lstm {
            xw = self.bin(BinaryOp::Add, xw, b_in, "xwb")?;
        }
        // GRU without reset_after multiplies r * h by the candidate's columns alone.
        let (rk_zr, rk_h) = if r.cell == RnnCell::Gru && !r.reset_after {
            (
                Some(self.slice(rk, 1, 0, 2 * u, "rk_zr")?),
                Some(self.slice(rk, 1, 2 * u, 3 * u, "rk_h")?),
            )
        } else {
            (None, None)
        };
        let one = (r.cell == RnnCell::Gru).then(|| self.scalar(1.0, "one"));
        let mut h: Option<ValueId> = None;
        let mut c: Option<ValueId> = None;
        let mut seq = Vec::with_capacity(t);
        for step in 0..t {
            let ts = if r.go_backwards { t - 1 - step } else { step };
            let s = |w: &str| format!("t{step}.{w}");
            let xs = self.slice(xw, 1, ts, ts + 1, &s("x3"))?;
            let xs = self.op(
                Op::Reshape {
                    shape: vec![0, gu as i64],
                },
                &[xs],
                &s("x"),
            )?;
            let new_h = match r.cell {
                RnnCell::Simple => {
                    let pre = self.plus_hu(xs, h, rk, &s("hu"))?;
                    self.act(r.activation, pre, &s("h"))?
                }
                RnnCell::Lstm => {
                    let z = self.plus_hu(xs, h, rk, &s("hu"))?;
                    let z = self.bin(BinaryOp::Add, z, b_in, &s("z"))?;
                    let zi = self.gate(z, 0, &s("zi"))?;
                    let zf = self.gate(z, 1, &s("zf"))?;
                    let zc = self.gate(z, 2, &s("zc"))?;
                    let zo = self.gate(z, 3, &s("zo"))?;
                    let i = self.act(r.recurrent_activation, zi, &s("i"))?;
                    let cc = self.act(r.activation, zc, &s("cc"))?;
                    let ic = self.bin(BinaryOp::Mul, i, cc, &s("ic"))?;
                    let new_c = match c {
                        Some(c) => {
                            let f = self.act(r.recurrent_activation, zf, &s("f"))?;
                            let fc = self.bin(BinaryOp::Mul, f, c, &s("fc"))?;
                            self.bin(BinaryOp::Add, fc, ic, &s("c"))?
                        }
                        None => ic,
                    };
                    c = Some(new_c);
                    let o = self.act(r.recurrent_activation, zo, &s("o"))?;
                    let ac = self.act(r.activation, new_c, &s("ac"))?;
                    self.bin(BinaryOp::Mul, o, ac, &s("h"))?
                }
                RnnCell::Gru => {
                    let one = one.expect("a GRU's one");
                    // The recurrent part of each gate (none at the first step, but the bias).
                    let inner = match (h, rk_zr) {
                        (Some(h), Some(rz)) => Some(self.op(Op::MatMul, &[h, rz], &s("hu"))?),
                        (Some(h), None) => {
                            let hu = self.op(Op::MatMul, &[h, rk], &s("hu"))?;
                            Some(match b_rec {
                                Some(br) => self.bin(BinaryOp::Add, hu, br, &s("hub"))?,
                                None => hu,
                            })
                        }
                        (None, _) => b_rec,
                    };
                    let (xz, xr, xh) = (
                        self.gate(xs, 0, &s("xz"))?,
                        self.gate(xs, 1, &s("xr"))?,
                        self.gate(xs, 2, &s("xh"))?,
                    );
                    let (pz, pr) = match inner {
                        Some(inner) => {
                            let (iz, ir) = (
                                self.gate(inner, 0, &s("iz"))?,
                                self.gate(inner, 1, &s("ir"))?,
                            );
                            (
                                self.bin(BinaryOp::Add, xz, iz, &s("pz"))?,
                                self.bin(BinaryOp::Add, xr, ir, &s("pr"))?,
                            )
                        }
                        None => (xz, xr),
                    };
                    let z = self.act(r.recurrent_activation, pz, &s("zg"))?;
                    let rg = self.act(r.recurrent_activation, pr, &s("rg"))?;
                    let rec_h = match (r.reset_after, inner, h) {
                        (true, Some(inner), _) => {
                            let ih = self.gate(inner, 2, &s("ih"))?;
                            Some(self.bin(BinaryOp::Mul, rg, ih, &s("rih"))?)
                        }
                        (false, _, Some(h)) => {
                            let rh = self.bin(BinaryOp::Mul, rg, h, &s("rh"))?;
                            let rkh = rk_h.expect("the candidate's columns");
                            Some(self.op(Op::MatMul, &[rh, rkh], &s("rhu"))?)
                        }
                        _ => None,
                    };
                    let ph = match rec_h {
                        Some(rh) => self.bin(BinaryOp::Add, xh, rh, &s("ph"))?,
                        None => xh,
                    };
                    let hh = self.act(r.activation, ph, &s("hh"))?;
                    let omz = self.bin(BinaryOp::Sub, one, z, &s("omz"))?;
                    let nh = self.bin(BinaryOp::Mul, omz, hh, &s("nh"))?;
                    match h {
                        Some(h) => {
                            let zh = self.bin(BinaryOp::Mul, z, h, &s("zh"))?;
                            self.bin(BinaryOp::Add, zh, nh, &s("h"))?
                        }
                        None => nh,
                    }
                }
            };
            h = Some(new_h);
            if r.return_sequences {
                let h3 = self.op(
                    Op::Reshape {
                        shape: vec![0, 1, u as i64],
                    },
                    &[new_h],
                    &s("h3"),
                )?;
                seq.push(h3);
            }
        }
        let h = h.ok_or_else(|| vec![format!("{}: a sequence of no time steps", self.o)])?;
        if r.return_sequences {
            if seq.len() == 1 {
                return Ok(seq[0]);
            }
            self.op(Op::Concat { axis: 1 }, &seq, "seq")
        } else {
            Ok(h)
        }
    }
}
