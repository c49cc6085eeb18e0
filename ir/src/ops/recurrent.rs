//! Recurrent layers: rnn: LSTM, GRU and SimpleRNN over a sequence. For each op of the family, its type rule (`infer`) and its
//! reference evaluation (`eval`), side by side; the derivative rule joins them here.

use super::elementwise::unary_f;
use crate::infer::*;
use crate::interp::*;
use crate::op::*;
use crate::types::{Dim, TensorType};
use forgec_runtime::{DType, Tensor};

type R<T> = Result<T, String>;

/// The output types of a recurrent op from its input types (arity already checked).
pub(crate) fn infer(op: &Op, ins: &[TensorType]) -> R<Vec<TensorType>> {
    let one = |t: TensorType| Ok(vec![t]);
    match op {
        Op::Rnn(r) => {
            let (x, k, rk, b) = (&ins[0], &ins[1], &ins[2], &ins[3]);
            need_float(x, "the input")?;
            same_dtype(ins)?;
            if x.rank() != 3 {
                return Err(format!(
                    "the input must be (batch, timesteps, features), got {}",
                    shape_str(&x.shape)
                ));
            }
            let gu = r.cell.gates() * r.units;
            let f = x.shape[2].clone();
            let want_k = vec![f, Dim::Known(gu)];
            if k.shape != want_k {
                return Err(format!(
                    "the kernel has shape {} but {} is needed",
                    shape_str(&k.shape),
                    shape_str(&want_k)
                ));
            }
            let want_rk = vec![Dim::Known(r.units), Dim::Known(gu)];
            if rk.shape != want_rk {
                return Err(format!(
                    "the recurrent kernel has shape {} but {} is needed",
                    shape_str(&rk.shape),
                    shape_str(&want_rk)
                ));
            }
            let want_b = if r.cell == RnnCell::Gru && r.reset_after {
                vec![Dim::Known(2), Dim::Known(gu)]
            } else {
                vec![Dim::Known(gu)]
            };
            if b.shape != want_b {
                return Err(format!(
                    "the bias has shape {} but {} is needed",
                    shape_str(&b.shape),
                    shape_str(&want_b)
                ));
            }
            let s = if r.return_sequences {
                vec![x.shape[0].clone(), x.shape[1].clone(), Dim::Known(r.units)]
            } else {
                vec![x.shape[0].clone(), Dim::Known(r.units)]
            };
            one(TensorType::new(x.dtype, s))
        }
        _ => unreachable!("{} is not in the recurrent family", op.name()),
    }
}

/// Evaluates a recurrent op on concrete tensors: `out_ty` are the result types (from `infer`),
/// `oshape` the first result's shape.
pub(crate) fn eval(
    op: &Op,
    ins: &[&Tensor],
    out_ty: &[TensorType],
    oshape: Vec<usize>,
) -> R<Vec<Tensor>> {
    let ot = &out_ty[0];
    let one = |t: Tensor| Ok(vec![t]);
    match op {
        Op::Rnn(r) => one(rnn(r, ins, ot.dtype, oshape)?),
        _ => unreachable!("{} is not in the recurrent family", op.name()),
    }
}

pub(crate) fn rnn(r: &RnnAttrs, ins: &[&Tensor], dtype: DType, oshape: Vec<usize>) -> R<Tensor> {
    let x = ins[0].to_f64_vec();
    let k = ins[1].to_f64_vec();
    let rk = ins[2].to_f64_vec();
    let bias = ins[3].to_f64_vec();
    let (b, t, f) = (ins[0].shape()[0], ins[0].shape()[1], ins[0].shape()[2]);
    let u = r.units;
    let gu = r.cell.gates() * u;
    let act = |v: f64| activation(r.activation, v);
    let ract = |v: f64| activation(r.recurrent_activation, v);
    let mut out = Vec::with_capacity(numel(&oshape));
    let mut seq = vec![0.0; b * t * u];
    for bi in 0..b {
        let mut h = vec![0.0f64; u];
        let mut c = vec![0.0f64; u];
        for step in 0..t {
            let ts = if r.go_backwards { t - 1 - step } else { step };
            let xt = &x[(bi * t + ts) * f..(bi * t + ts + 1) * f];
            // xw = x W (+ input bias); hu = h U (+ recurrent bias for GRU reset_after).
            let mut xw = vec![0.0; gu];
            for (i, &xv) in xt.iter().enumerate() {
                for j in 0..gu {
                    xw[j] += xv * k[i * gu + j];
                }
            }
            let mut hu = vec![0.0; gu];
            for (i, &hv) in h.iter().enumerate() {
                for j in 0..gu {
                    hu[j] += hv * rk[i * gu + j];
                }
            }
            let (bi_in, bi_rec): (&[f64], Option<&[f64]>) =
                if r.cell == RnnCell::Gru && r.reset_after {
                    (&bias[..gu], Some(&bias[gu..]))
                } else {
                    (&bias[..], None)
                };
            for j in 0..gu {
                xw[j] += bi_in[j];
            }
            match r.cell {
                RnnCell::Simple => {
                    for j in 0..u {
                        h[j] = act(xw[j] + hu[j]);
                    }
                }
                RnnCell::Lstm => {
                    for j in 0..u {
                        let i = ract(xw[j] + hu[j]);
                        let fg = ract(xw[u + j] + hu[u + j]);
                        let cc = act(xw[2 * u + j] + hu[2 * u + j]);
                        let o = ract(xw[3 * u + j] + hu[3 * u + j]);
                        c[j] = fg * c[j] + i * cc;
                        h[j] = o * act(c[j]);
                    }
                }
                RnnCell::Gru => {
                    let mut newh = vec![0.0; u];
                    if let Some(rb) = bi_rec {
                        for j in 0..gu {
                            hu[j] += rb[j];
                        }
                        for j in 0..u {
                            let z = ract(xw[j] + hu[j]);
                            let rr = ract(xw[u + j] + hu[u + j]);
                            let hh = act(xw[2 * u + j] + rr * hu[2 * u + j]);
                            newh[j] = z * h[j] + (1.0 - z) * hh;
                        }
                    } else {
                        let mut z = vec![0.0; u];
                        let mut rh = vec![0.0; u];
                        for j in 0..u {
                            z[j] = ract(xw[j] + hu[j]);
                            rh[j] = ract(xw[u + j] + hu[u + j]) * h[j];
                        }
                        for j in 0..u {
                            let mut acc = xw[2 * u + j];
                            for (i, &rv) in rh.iter().enumerate() {
                                acc += rv * rk[i * gu + 2 * u + j];
                            }
                            newh[j] = z[j] * h[j] + (1.0 - z[j]) * act(acc);
                        }
                    }
                    h = newh;
                }
            }
            // Keras keeps the outputs in processing order, also when going backwards.
            seq[(bi * t + step) * u..(bi * t + step + 1) * u].copy_from_slice(&h);
        }
        if !r.return_sequences {
            out.extend_from_slice(&h);
        }
    }
    if r.return_sequences {
        out = seq;
    }
    float_t(dtype, oshape, &out)
}

pub(crate) fn activation(a: Activation, x: f64) -> f64 {
    match a {
        Activation::Linear => x,
        Activation::Tanh => x.tanh(),
        Activation::Sigmoid => unary_f(UnaryOp::Sigmoid, x),
        Activation::Relu => relu(x),
        // Keras 3: relu6(x + 3) / 6.
        Activation::HardSigmoid => ((x + 3.0).clamp(0.0, 6.0)) / 6.0,
    }
}
