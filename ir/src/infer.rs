//! Type rules: the output types of an op from its input types. Shared by graph building,
//! the verifier, the shape-inference pass and the interpreter (on concrete shapes). Each
//! family's rules live in `ops/<family>.rs`; this module checks arity and holds the helpers
//! they share.

use crate::op::*;
pub use crate::ops::shape::slice_range;
use crate::types::{Dim, TensorType};
use forgec_runtime::DType;

type R<T> = Result<T, String>;

pub(crate) fn shape_str(s: &[Dim]) -> String {
    TensorType::new(DType::F32, s.to_vec()).to_string()[3..].to_string()
}

/// NumPy broadcasting of two shapes. A symbol broadcasts against 1 and against itself.
pub fn broadcast_shapes(a: &[Dim], b: &[Dim]) -> R<Vec<Dim>> {
    let n = a.len().max(b.len());
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let da = if i + a.len() >= n {
            Some(&a[i + a.len() - n])
        } else {
            None
        };
        let db = if i + b.len() >= n {
            Some(&b[i + b.len() - n])
        } else {
            None
        };
        let d = match (da, db) {
            (Some(x), None) | (None, Some(x)) => x.clone(),
            (Some(x), Some(y)) if x == y => x.clone(),
            (Some(x), Some(y)) if x.is_one() => y.clone(),
            (Some(x), Some(y)) if y.is_one() => x.clone(),
            _ => {
                return Err(format!(
                    "shapes {} and {} do not broadcast",
                    shape_str(a),
                    shape_str(b)
                ))
            }
        };
        out.push(d);
    }
    Ok(out)
}

pub(crate) fn same_dtype(ts: &[TensorType]) -> R<DType> {
    let d = ts[0].dtype;
    for t in &ts[1..] {
        if t.dtype != d {
            return Err(format!("element types differ: {} vs {}", d, t.dtype));
        }
    }
    Ok(d)
}

pub(crate) fn need_float(t: &TensorType, what: &str) -> R<()> {
    if t.dtype.is_float() {
        Ok(())
    } else {
        Err(format!("{what} must be a float tensor, got {}", t.dtype))
    }
}

pub(crate) fn check_axis(axis: usize, rank: usize) -> R<()> {
    if axis < rank {
        Ok(())
    } else {
        Err(format!("axis {axis} is out of range for rank {rank}"))
    }
}

pub(crate) fn known(d: &Dim, what: &str) -> R<usize> {
    d.known()
        .ok_or_else(|| format!("{what} must have a known size, got `{d}`"))
}

/// The output types of `op` applied to inputs of types `ins`.
pub fn infer(op: &Op, ins: &[TensorType]) -> R<Vec<TensorType>> {
    let (lo, hi) = op.arity();
    if ins.len() < lo || ins.len() > hi {
        return Err(if lo == hi {
            format!("takes {lo} inputs, got {}", ins.len())
        } else {
            format!("takes at least {lo} inputs, got {}", ins.len())
        });
    }
    let one = |t: TensorType| Ok(vec![t]);
    match op {
        Op::Const { value, .. } => one(TensorType::known(value.dtype(), value.shape())),
        _ => crate::ops::infer(op, ins),
    }
}
