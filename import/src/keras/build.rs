//! A small graph-building helper for one layer: every node it makes carries the layer's origin.

use forgec_ir::{BinaryOp, Graph, Op, Origin, Tensor, UnaryOp, ValueId};

pub type R<T> = Result<T, String>;

pub struct Lb<'g> {
    pub g: &'g mut Graph,
    pub origin: Origin,
    /// Seeds intermediate value names: `dense.matmul`.
    pub base: String,
}

impl Lb<'_> {
    pub fn op(&mut self, op: Op, ins: &[ValueId], what: &str) -> R<ValueId> {
        let name = format!("{}.{what}", self.base);
        self.g.add(op, ins, &name, &self.origin).map_err(|e| {
            let shapes: Vec<String> = e.inputs.iter().map(|t| t.keras_shape()).collect();
            format!("{} on {}: {}", e.op, shapes.join(" and "), e.message)
        })
    }

    pub fn un(&mut self, u: UnaryOp, x: ValueId) -> R<ValueId> {
        self.op(Op::Unary(u), &[x], u.name())
    }

    pub fn bin(&mut self, b: BinaryOp, x: ValueId, y: ValueId) -> R<ValueId> {
        self.op(Op::Binary(b), &[x, y], b.name())
    }

    /// A scalar constant of `like`'s element type.
    pub fn scalar(&mut self, v: f64, like: ValueId) -> ValueId {
        let dt = self.g.ty(like).dtype;
        let t = Tensor::from_f64_values(dt, vec![], &[v]).expect("a scalar");
        let name = format!("{}.const", self.base);
        self.g.add_const(t, None, &name, &self.origin)
    }

    pub fn bin_s(&mut self, b: BinaryOp, x: ValueId, v: f64) -> R<ValueId> {
        let c = self.scalar(v, x);
        self.bin(b, x, c)
    }

    pub fn s_bin(&mut self, v: f64, b: BinaryOp, x: ValueId) -> R<ValueId> {
        let c = self.scalar(v, x);
        self.bin(b, c, x)
    }

    pub fn select(&mut self, c: ValueId, a: ValueId, b: ValueId) -> R<ValueId> {
        self.op(Op::Select, &[c, a, b], "select")
    }

    pub fn rank(&self, x: ValueId) -> usize {
        self.g.ty(x).rank()
    }
}
