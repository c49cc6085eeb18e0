//! Per-op knowledge, one file per family of ops: each holds its ops' type rules and
//! reference evaluation side by side (and, with training, their derivative rules), so adding
//! an op or a rule is one visit. `infer::infer` and `interp::eval_op` do what every op shares
//! (arity, the interpreter's size limit, constants) and hand the rest to the op's family here.
//! [`family`] is an exhaustive match: a new `Op` variant does not compile until it has one.

pub(crate) mod elementwise;
pub(crate) mod indexing;
pub(crate) mod linalg;
pub(crate) mod norm;
pub(crate) mod recurrent;
pub(crate) mod reduce;
pub(crate) mod shape;

use crate::op::Op;
use crate::types::TensorType;
use forgec_runtime::Tensor;

/// The families of ops, one file each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// Constants: no rule beyond their value.
    Const,
    Elementwise,
    Linalg,
    Reduce,
    Norm,
    Shape,
    Indexing,
    Recurrent,
}

/// The family an op belongs to.
pub fn family(op: &Op) -> Family {
    match op {
        Op::Const { .. } => Family::Const,
        Op::Unary { .. } | Op::Binary { .. } | Op::Select | Op::Cast { .. } => Family::Elementwise,
        Op::MatMul | Op::Conv { .. } | Op::ConvTranspose { .. } | Op::Pool { .. } => Family::Linalg,
        Op::Reduce { .. }
        | Op::Softmax { .. }
        | Op::ArgReduce { .. }
        | Op::TopK { .. }
        | Op::Cumulative { .. } => Family::Reduce,
        Op::BatchNorm { .. } | Op::LayerNorm { .. } | Op::Dropout { .. } => Family::Norm,
        Op::Reshape { .. }
        | Op::Transpose { .. }
        | Op::Concat { .. }
        | Op::Slice { .. }
        | Op::Pad { .. }
        | Op::Broadcast { .. } => Family::Shape,
        Op::Gather { .. }
        | Op::GatherElements { .. }
        | Op::ScatterElements { .. }
        | Op::ScatterNd { .. }
        | Op::GatherNd { .. }
        | Op::Resize { .. } => Family::Indexing,
        Op::Rnn { .. } => Family::Recurrent,
    }
}

/// The type rule of a non-constant op, by its family.
pub(crate) fn infer(op: &Op, ins: &[TensorType]) -> Result<Vec<TensorType>, String> {
    match family(op) {
        Family::Const => unreachable!("constants are typed by their value"),
        Family::Elementwise => elementwise::infer(op, ins),
        Family::Linalg => linalg::infer(op, ins),
        Family::Reduce => reduce::infer(op, ins),
        Family::Norm => norm::infer(op, ins),
        Family::Shape => shape::infer(op, ins),
        Family::Indexing => indexing::infer(op, ins),
        Family::Recurrent => recurrent::infer(op, ins),
    }
}

/// The reference evaluation of a non-constant op, by its family.
pub(crate) fn eval(
    op: &Op,
    ins: &[&Tensor],
    out_ty: &[TensorType],
    oshape: Vec<usize>,
) -> Result<Vec<Tensor>, String> {
    match family(op) {
        Family::Const => unreachable!("constants evaluate to their value"),
        Family::Elementwise => elementwise::eval(op, ins, out_ty, oshape),
        Family::Linalg => linalg::eval(op, ins, out_ty, oshape),
        Family::Reduce => reduce::eval(op, ins, out_ty, oshape),
        Family::Norm => norm::eval(op, ins, out_ty, oshape),
        Family::Shape => shape::eval(op, ins, out_ty, oshape),
        Family::Indexing => indexing::eval(op, ins, out_ty, oshape),
        Family::Recurrent => recurrent::eval(op, ins, out_ty, oshape),
    }
}
