//! Per-op knowledge, one file per family of ops: each holds its ops' type rules and
//! reference evaluation side by side (and, with training, their derivative rules), so adding
//! an op or a rule is one visit. `infer::infer` and `interp::eval_op` do what every op shares
//! (arity, the interpreter's size limit, constants) and hand the rest to the op's family here.
//! [`family`] is an exhaustive match: a new `Op` variant does not compile until it has one.

pub(crate) mod elementwise;
pub(crate) mod indexing;
pub(crate) mod linalg;
pub mod norm;
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
        Op::MatMul
        | Op::Conv { .. }
        | Op::ConvTranspose { .. }
        | Op::ConvKernelGrad { .. }
        | Op::Col2Im { .. }
        | Op::Pool { .. }
        | Op::PoolGrad { .. } => Family::Linalg,
        Op::Reduce { .. }
        | Op::Softmax { .. }
        | Op::ArgReduce { .. }
        | Op::TopK { .. }
        | Op::Cumulative { .. } => Family::Reduce,
        Op::BatchNorm { .. }
        | Op::LayerNorm { .. }
        | Op::Dropout { .. }
        | Op::DropoutMask { .. } => Family::Norm,
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

/// What a derivative rule builds its gradient graph with: nodes appended to the graph being
/// differentiated, all carrying the origin of the forward node they differentiate (so an error
/// in the backward names the layer).
pub struct Builder<'a> {
    pub g: &'a mut crate::Graph,
    pub origin: crate::Origin,
}

type R<T> = Result<T, String>;

impl Builder<'_> {
    /// A node with one result.
    pub fn op(&mut self, op: Op, ins: &[crate::ValueId], name: &str) -> R<crate::ValueId> {
        self.g
            .add(op, ins, name, &self.origin)
            .map_err(|e| format!("internal error in a derivative rule: {e}"))
    }

    pub fn unary(&mut self, u: crate::UnaryOp, x: crate::ValueId) -> R<crate::ValueId> {
        self.op(Op::Unary(u), &[x], "grad")
    }

    pub fn binary(
        &mut self,
        b: crate::BinaryOp,
        x: crate::ValueId,
        y: crate::ValueId,
    ) -> R<crate::ValueId> {
        self.op(Op::Binary(b), &[x, y], "grad")
    }

    /// `Σₙ a[n]ᵀ d[n]` for `a` `[n, r, p]` and `d` `[n, r, q]`: a weight's gradient from
    /// per-sample rows (a batched matmul, then the sum over the batch).
    pub fn t_matmul_summed(&mut self, a: crate::ValueId, d: crate::ValueId) -> R<crate::ValueId> {
        let at = self.op(
            Op::Transpose {
                perm: vec![0, 2, 1],
            },
            &[a],
            "grad.t",
        )?;
        let p = self.op(Op::MatMul, &[at, d], "grad")?;
        self.op(
            Op::Reduce {
                kind: crate::ReduceKind::Sum,
                axes: vec![0],
                keepdims: false,
            },
            &[p],
            "grad.sum",
        )
    }

    /// A scalar constant of `x`'s element type.
    pub fn scalar_like(&mut self, x: crate::ValueId, v: f64) -> crate::ValueId {
        let dt = self.g.ty(x).dtype;
        let t = Tensor::full(dt, vec![], v).expect("a scalar");
        self.g.add_const(t, None, "grad.c", &self.origin.clone())
    }

    /// `dy` summed over the axes it was broadcast along, to `to`'s shape (NumPy broadcasting in
    /// reverse: the leading extra axes, and the axes where `to` has 1 and `dy` more).
    pub fn sum_to(&mut self, dy: crate::ValueId, to: &TensorType) -> R<crate::ValueId> {
        let from = self.g.ty(dy).shape.clone();
        if from == to.shape {
            return Ok(dy);
        }
        let lead = from.len() - to.shape.len();
        let axes: Vec<usize> = (0..from.len())
            .filter(|&a| a < lead || (to.shape[a - lead].is_one() && !from[a].is_one()))
            .collect();
        let r = if axes.is_empty() {
            dy
        } else {
            self.op(
                Op::Reduce {
                    kind: crate::ReduceKind::Sum,
                    axes,
                    keepdims: true,
                },
                &[dy],
                "grad.sum",
            )?
        };
        self.reshape_to(r, to)
    }

    /// `x` reshaped to `to`'s shape (its one symbolic dim, if any, inferred).
    pub fn reshape_to(&mut self, x: crate::ValueId, to: &TensorType) -> R<crate::ValueId> {
        if self.g.ty(x).shape == to.shape {
            return Ok(x);
        }
        let syms = to.shape.iter().filter(|d| d.known().is_none()).count();
        if syms > 1 {
            return Err(format!(
                "a gradient of shape {:?} cannot be reshaped with more than one symbolic dim",
                to.shape
            ));
        }
        let shape = to
            .shape
            .iter()
            .map(|d| d.known().map_or(-1, |n| n as i64))
            .collect();
        self.op(Op::Reshape { shape }, &[x], "grad.reshape")
    }

    /// `x` broadcast to `to`'s shape.
    pub fn broadcast_to(&mut self, x: crate::ValueId, to: &TensorType) -> R<crate::ValueId> {
        if self.g.ty(x).shape == to.shape {
            return Ok(x);
        }
        self.op(
            Op::Broadcast {
                shape: to.shape.clone(),
            },
            &[x],
            "grad.broadcast",
        )
    }
}

/// The derivative rule of an op: from the gradients of its results (`dys`, None where a
/// result does not reach the loss), the gradients of its inputs (None where none flows or
/// where `need` says it is not wanted). `ins` and `outs` are the forward node's values. An op
/// without a gradient is an error naming it.
pub fn grad(
    b: &mut Builder,
    op: &Op,
    ins: &[crate::ValueId],
    outs: &[crate::ValueId],
    dys: &[Option<crate::ValueId>],
    need: &[bool],
) -> R<Vec<Option<crate::ValueId>>> {
    match family(op) {
        Family::Const => Ok(vec![]),
        Family::Elementwise => elementwise::grad(b, op, ins, outs, dys, need),
        Family::Linalg => linalg::grad(b, op, ins, outs, dys, need),
        Family::Reduce => reduce::grad(b, op, ins, outs, dys, need),
        Family::Shape => shape::grad(b, op, ins, outs, dys, need),
        Family::Norm => norm::grad(b, op, ins, outs, dys, need),
        Family::Indexing => indexing::grad(b, op, ins, outs, dys, need),
        Family::Recurrent => Err(format!(
            "{} has no derivative rule yet (forgec cannot train through it)",
            op.name()
        )),
    }
}
