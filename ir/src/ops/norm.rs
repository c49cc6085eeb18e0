//! Normalizations: batch_norm (inference form), layer_norm, dropout (identity at inference)
//! and dropout_mask (its training mask, from forgec's counter-based generator). For each op of
//! the family, its type rule (`infer`) and its reference evaluation (`eval`), side by side;
//! the derivative rule joins them here.

use crate::infer::*;
use crate::interp::*;
use crate::op::*;
use crate::types::TensorType;
use forgec_runtime::{DType, Tensor};

type R<T> = Result<T, String>;

/// The output types of a norm op from its input types (arity already checked).
pub(crate) fn infer(op: &Op, ins: &[TensorType]) -> R<Vec<TensorType>> {
    let one = |t: TensorType| Ok(vec![t]);
    match op {
        Op::BatchNorm { axis, .. } => {
            let x = &ins[0];
            need_float(x, "the input")?;
            check_axis(*axis, x.rank())?;
            same_dtype(ins)?;
            for (k, p) in ins[1..].iter().enumerate() {
                if p.rank() != 1 || p.shape[0] != x.shape[*axis] {
                    let name = ["gamma", "beta", "moving_mean", "moving_variance"][k];
                    return Err(format!(
                        "{name} has shape {} but the input has {} channels on axis {axis}",
                        shape_str(&p.shape),
                        x.shape[*axis]
                    ));
                }
            }
            one(x.clone())
        }
        Op::LayerNorm { axes, .. } => {
            let x = &ins[0];
            need_float(x, "the input")?;
            same_dtype(ins)?;
            let mut want = Vec::new();
            for &a in axes {
                check_axis(a, x.rank())?;
                want.push(x.shape[a].clone());
            }
            for (k, p) in ins[1..].iter().enumerate() {
                if p.shape != want {
                    return Err(format!(
                        "{} has shape {} but the normalized axes have {}",
                        ["gamma", "beta"][k],
                        shape_str(&p.shape),
                        shape_str(&want)
                    ));
                }
            }
            one(x.clone())
        }
        Op::Dropout { rate } => {
            if !(0.0..1.0).contains(rate) {
                return Err(format!("rate {rate} is not in [0, 1)"));
            }
            one(ins[0].clone())
        }
        Op::DropoutMask { rate, .. } => {
            if !(0.0..1.0).contains(rate) {
                return Err(format!("rate {rate} is not in [0, 1)"));
            }
            need_float(&ins[0], "the input")?;
            if ins[1].dtype != DType::I64 || ins[1].rank() != 0 {
                return Err(format!(
                    "the key must be an i64 scalar, not {}{}",
                    ins[1].dtype,
                    shape_str(&ins[1].shape)
                ));
            }
            one(ins[0].clone())
        }
        _ => unreachable!("{} is not in the norm family", op.name()),
    }
}

/// The multipliers of forgec's dropout generator (the code generator emits the same
/// arithmetic): the element index and the salt are spread by odd constants, added to the key,
/// and mixed by MurmurHash3's 64-bit finalizer.
pub const DROPOUT_SALT_MUL: u64 = 0x9E37_79B9_7F4A_7C15;
pub const DROPOUT_INDEX_MUL: u64 = 0xD1B5_4A32_D192_ED03;
pub const FMIX_1: u64 = 0xff51_afd7_ed55_8ccd;
pub const FMIX_2: u64 = 0xc4ce_b9fe_1a85_ec53;

/// The key of training step `step` (from 1) of a run seeded `seed`: SplitMix64 of the seed
/// advanced by the step (the training API's C computes the same).
pub fn dropout_key(seed: u64, step: u64) -> u64 {
    let mut z = seed.wrapping_add(step.wrapping_mul(DROPOUT_SALT_MUL));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The 24-bit draw below which an element is dropped: `ceil(rate * 2^24)`.
pub fn dropout_threshold(rate: f64) -> u64 {
    (rate * (1u64 << 24) as f64).ceil() as u64
}

/// Whether element `index` survives: the top 24 bits of the mixed counter, as a uniform
/// integer in 0..2^24, at or above `threshold`.
pub fn dropout_keep(key: u64, salt: u64, index: u64, threshold: u64) -> bool {
    let mut z = (key ^ salt.wrapping_mul(DROPOUT_SALT_MUL))
        .wrapping_add(index.wrapping_mul(DROPOUT_INDEX_MUL));
    z ^= z >> 33;
    z = z.wrapping_mul(FMIX_1);
    z ^= z >> 33;
    z = z.wrapping_mul(FMIX_2);
    z ^= z >> 33;
    (z >> 40) >= threshold
}

/// Evaluates a norm op on concrete tensors: `out_ty` are the result types (from `infer`),
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
        Op::Dropout { .. } => one(ins[0].clone().reshaped(oshape).map_err(|e| e.0)?),
        Op::DropoutMask { rate, salt } => {
            let key = ins[1].to_i64_vec()[0] as u64;
            let th = dropout_threshold(*rate);
            let scale = 1.0 / (1.0 - rate);
            let n = numel(&oshape);
            let out: Vec<f64> = (0..n as u64)
                .map(|i| {
                    if dropout_keep(key, *salt as u64, i, th) {
                        scale
                    } else {
                        0.0
                    }
                })
                .collect();
            one(float_t(ot.dtype, oshape, &out)?)
        }
        Op::BatchNorm { axis, epsilon, .. } => {
            let x = ins[0];
            let v = x.to_f64_vec();
            let p: Vec<Vec<f64>> = ins[1..].iter().map(|t| t.to_f64_vec()).collect();
            let (gamma, beta, mean, var) = (&p[0], &p[1], &p[2], &p[3]);
            let shape = x.shape();
            let inner = numel(&shape[axis + 1..]);
            let c = shape[*axis];
            let out: Vec<f64> = v
                .iter()
                .enumerate()
                .map(|(k, &a)| {
                    let ch = (k / inner) % c;
                    (a - mean[ch]) / (var[ch] + epsilon).sqrt() * gamma[ch] + beta[ch]
                })
                .collect();
            one(float_t(ot.dtype, oshape, &out)?)
        }
        Op::LayerNorm { axes, epsilon } => one(layer_norm(ins, axes, *epsilon, ot.dtype, oshape)?),
        _ => unreachable!("{} is not in the norm family", op.name()),
    }
}

pub(crate) fn layer_norm(
    ins: &[&Tensor],
    axes: &[usize],
    eps: f64,
    dtype: DType,
    oshape: Vec<usize>,
) -> R<Tensor> {
    let x = ins[0];
    let shape = x.shape();
    let r = shape.len();
    // Move the normalized axes last, normalize rows, move back.
    let mut perm: Vec<usize> = (0..r).filter(|a| !axes.contains(a)).collect();
    perm.extend(axes.iter().copied());
    let (v, ps) = transpose_vec(&x.to_f64_vec(), shape, &perm);
    let row = numel(&ps[r - axes.len()..]);
    // gamma/beta are laid out in `axes` order, which matches the moved axes.
    let gamma = ins[1].to_f64_vec();
    let beta = ins[2].to_f64_vec();
    let mut out = vec![0.0; v.len()];
    for (o, chunk) in out.chunks_mut(row.max(1)).zip(v.chunks(row.max(1))) {
        let mean = chunk.iter().sum::<f64>() / row as f64;
        let var = chunk.iter().map(|a| (a - mean) * (a - mean)).sum::<f64>() / row as f64;
        let inv = 1.0 / (var + eps).sqrt();
        for k in 0..chunk.len() {
            o[k] = (chunk[k] - mean) * inv * gamma[k] + beta[k];
        }
    }
    let mut inv_perm = vec![0; r];
    for (i, &p) in perm.iter().enumerate() {
        inv_perm[p] = i;
    }
    let (back, _) = transpose_vec(&out, &ps, &inv_perm);
    float_t(dtype, oshape, &back)
}

/// Derivative rules: batch_norm in its inference form (a per-channel affine map: what a frozen
/// BatchNormalization computes in training too; a training-mode one is rewritten into batch
/// statistics by the training step, whose ops have rules of their own), and dropout_mask (no
/// gradient: the mask depends on the key and x's shape alone). Layer normalization has none
/// yet.
pub(crate) fn grad(
    b: &mut super::Builder,
    op: &Op,
    ins: &[crate::ValueId],
    _outs: &[crate::ValueId],
    dys: &[Option<crate::ValueId>],
    need: &[bool],
) -> R<Vec<Option<crate::ValueId>>> {
    use crate::{BinaryOp as B, UnaryOp as U};
    match op {
        Op::DropoutMask { .. } => Ok(vec![None, None]),
        Op::BatchNorm { axis, epsilon, .. } => {
            let Some(dy) = dys[0] else {
                return Ok(vec![None; 5]);
            };
            if need[3] || need[4] {
                return Err("batch_norm's moving statistics have no gradient (they are not trained: make them non-trainable)".into());
            }
            let (x, gamma, mean, var) = (ins[0], ins[1], ins[3], ins[4]);
            let xt = b.g.ty(x).clone();
            // A per-channel vector as [C, 1, ..., 1]: it broadcasts along x's `axis`.
            let mut cshape = vec![crate::Dim::Known(1); xt.rank() - axis];
            cshape[0] = xt.shape[*axis].clone();
            let ct = TensorType::new(xt.dtype, cshape);
            let vt = b.g.ty(var).clone();
            let eps = b.scalar_like(var, *epsilon);
            let ve = b.binary(B::Add, var, eps)?;
            let inv = b.unary(U::Rsqrt, ve)?;
            let mut out = vec![None; 5];
            let per_channel = |b: &mut super::Builder, v: crate::ValueId| -> R<crate::ValueId> {
                let s = b.sum_to(v, &ct)?;
                b.reshape_to(s, &vt)
            };
            if need[0] {
                let s = b.binary(B::Mul, gamma, inv)?;
                let sc = b.reshape_to(s, &ct)?;
                out[0] = Some(b.binary(B::Mul, dy, sc)?);
            }
            if need[1] {
                let mc = b.reshape_to(mean, &ct)?;
                let ic = b.reshape_to(inv, &ct)?;
                let d = b.binary(B::Sub, x, mc)?;
                let xh = b.binary(B::Mul, d, ic)?;
                let t = b.binary(B::Mul, dy, xh)?;
                out[1] = Some(per_channel(b, t)?);
            }
            if need[2] {
                out[2] = Some(per_channel(b, dy)?);
            }
            Ok(out)
        }
        _ => Err(format!(
            "{} has no derivative rule yet (forgec cannot train through it)",
            op.name()
        )),
    }
}
