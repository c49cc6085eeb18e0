//! ONNX ops lowered to IR ops, by the rules of the model's opset.

use super::{proto, Cx, Val};
use forgec_ir::{
    Activation, BinaryOp as B, ConvAttrs, DType, Dim, Layout, Op, Origin, PadMode, PoolAttrs,
    PoolKind, ReduceKind, RnnAttrs, RnnCell, Tensor, UnaryOp as U, ValueId,
};
use onnx_protobuf::{AttributeProto, NodeProto};

type R<T> = Result<T, String>;

/// The default-domain op types forgec imports.
pub const SUPPORTED: &[&str] = &[
    "Abs",
    "Acos",
    "Acosh",
    "Add",
    "And",
    "ArgMax",
    "ArgMin",
    "Asin",
    "Asinh",
    "Atan",
    "Atanh",
    "Attention",
    "AveragePool",
    "BatchNormalization",
    "BitShift",
    "BitwiseAnd",
    "BitwiseNot",
    "BitwiseOr",
    "BitwiseXor",
    "BlackmanWindow",
    "Cast",
    "CastLike",
    "Ceil",
    "Celu",
    "CenterCropPad",
    "Clip",
    "Compress",
    "Concat",
    "Constant",
    "ConstantOfShape",
    "Conv",
    "ConvTranspose",
    "Cos",
    "Cosh",
    "CumProd",
    "CumSum",
    "DepthToSpace",
    "DequantizeLinear",
    "Div",
    "Dropout",
    "DynamicQuantizeLinear",
    "Einsum",
    "Elu",
    "Equal",
    "Erf",
    "Exp",
    "Expand",
    "EyeLike",
    "Flatten",
    "Floor",
    "GRU",
    "Gather",
    "GatherElements",
    "GatherND",
    "Gelu",
    "Gemm",
    "GlobalAveragePool",
    "GlobalMaxPool",
    "Greater",
    "GreaterOrEqual",
    "GroupNormalization",
    "HammingWindow",
    "HannWindow",
    "HardSigmoid",
    "HardSwish",
    "Hardmax",
    "Identity",
    "InstanceNormalization",
    "IsInf",
    "IsNaN",
    "LRN",
    "LSTM",
    "LayerNormalization",
    "LeakyRelu",
    "Less",
    "LessOrEqual",
    "Log",
    "LogSoftmax",
    "LpNormalization",
    "LpPool",
    "MatMul",
    "Max",
    "MaxPool",
    "Mean",
    "MeanVarianceNormalization",
    "Min",
    "Mish",
    "Mod",
    "Mul",
    "Neg",
    "NegativeLogLikelihoodLoss",
    "NonZero",
    "Not",
    "OneHot",
    "Or",
    "PRelu",
    "Pad",
    "Pow",
    "QuantizeLinear",
    "RMSNormalization",
    "RNN",
    "Range",
    "Reciprocal",
    "ReduceL1",
    "ReduceL2",
    "ReduceLogSum",
    "ReduceLogSumExp",
    "ReduceMax",
    "ReduceMean",
    "ReduceMin",
    "ReduceProd",
    "ReduceSum",
    "ReduceSumSquare",
    "Relu",
    "Reshape",
    "Resize",
    "ReverseSequence",
    "Round",
    "Scatter",
    "ScatterElements",
    "ScatterND",
    "Selu",
    "Shape",
    "Shrink",
    "Sigmoid",
    "Sign",
    "Sin",
    "Sinh",
    "Size",
    "Slice",
    "Softmax",
    "SoftmaxCrossEntropyLoss",
    "Softplus",
    "Softsign",
    "SpaceToDepth",
    "Split",
    "Sqrt",
    "Squeeze",
    "Sub",
    "Sum",
    "Swish",
    "Tan",
    "Tanh",
    "ThresholdedRelu",
    "Tile",
    "TopK",
    "Transpose",
    "Trilu",
    "Unique",
    "Unsqueeze",
    "Upsample",
    "Where",
    "Xor",
];

fn attr<'a>(n: &'a NodeProto, name: &str) -> Option<&'a AttributeProto> {
    n.attribute.iter().find(|a| a.name == name)
}

fn ai(n: &NodeProto, name: &str, default: i64) -> i64 {
    attr(n, name).map(|a| a.i).unwrap_or(default)
}

fn af(n: &NodeProto, name: &str, default: f64) -> f64 {
    attr(n, name).map(|a| a.f as f64).unwrap_or(default)
}

fn aints(n: &NodeProto, name: &str) -> Option<Vec<i64>> {
    attr(n, name).map(|a| a.ints.clone())
}

fn astr(n: &NodeProto, name: &str) -> Option<String> {
    attr(n, name).map(|a| String::from_utf8_lossy(&a.s).into_owned())
}

fn norm_axis(a: i64, rank: usize) -> R<usize> {
    let r = rank as i64;
    let v = if a < 0 { a + r } else { a };
    if (0..r).contains(&v) {
        Ok(v as usize)
    } else {
        Err(format!("axis {a} is out of range for rank {rank}"))
    }
}

struct L<'c, 'a> {
    cx: &'c mut Cx<'a>,
    n: &'c NodeProto,
    o: &'c Origin,
}

impl L<'_, '_> {
    fn has(&self, k: usize) -> bool {
        self.n.input.get(k).is_some_and(|s| !s.is_empty())
    }

    fn val(&self, k: usize) -> R<Val> {
        let name = self
            .n
            .input
            .get(k)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| format!("input {k} is missing"))?;
        self.cx
            .val(name)
            .ok_or_else(|| format!("input `{name}` is not defined"))
    }

    /// Input `k` as a graph value.
    fn t(&mut self, k: usize) -> R<ValueId> {
        let v = self.val(k)?;
        self.cx.materialize(v, self.o)
    }

    /// Input `k`'s constant value, if it is a constant (a symbolic shape vector is not).
    fn konst(&mut self, k: usize) -> R<Option<Tensor>> {
        if !self.has(k) {
            return Ok(None);
        }
        match self.val(k)? {
            Val::T(id) => Ok(self.cx.const_of(id).cloned()),
            Val::Shape { .. } => Ok(None),
        }
    }

    fn konst_req(&mut self, k: usize, what: &str) -> R<Tensor> {
        match self.konst(k)? {
            Some(t) => Ok(t),
            None if !self.has(k) => Err(format!("input {k} ({what}) is missing")),
            None => {
                let name = self.n.input[k].clone();
                self.cx.wanted.push(name.clone());
                // A value computed from graph inputs: those are what must be fixed.
                if let Some(Val::T(id)) = self.cx.val(&name) {
                    let roots = self.cx.input_roots(id);
                    self.cx.wanted.extend(roots);
                }
                Err(format!(
                    "the {what} (input {k}, `{name}`) must be a constant"
                ))
            }
        }
    }

    fn ints_input(&mut self, k: usize, what: &str) -> R<Option<Vec<i64>>> {
        if !self.has(k) {
            return Ok(None);
        }
        Ok(Some(self.konst_req(k, what)?.to_i64_vec()))
    }

    /// Input `k` as a shape: constant ints or a symbolic shape vector.
    fn dims_input(&mut self, k: usize) -> R<Vec<Dim>> {
        match self.val(k)? {
            Val::Shape { dims, .. } => Ok(dims),
            Val::T(id) => {
                let t = self.cx.const_of(id).cloned();
                let Some(t) = t else {
                    let name = self.n.input[k].clone();
                    self.cx.wanted.push(name.clone());
                    let roots = self.cx.input_roots(id);
                    self.cx.wanted.extend(roots);
                    return Err(format!("the shape (input {k}, `{name}`) must be a constant or computed from shapes"));
                };
                t.to_i64_vec()
                    .into_iter()
                    .map(|v| {
                        if v < 0 {
                            Err(format!("negative size {v}"))
                        } else {
                            Ok(Dim::Known(v as usize))
                        }
                    })
                    .collect()
            }
        }
    }

    /// The shape vector of input `k` with -1 / 0 entries allowed (Reshape).
    fn reshape_target(&mut self, k: usize) -> R<Vec<Result<i64, Dim>>> {
        match self.val(k)? {
            Val::Shape { dims, .. } => Ok(dims
                .into_iter()
                .map(|d| match d {
                    Dim::Known(n) => Ok(n as i64),
                    s => Err(s),
                })
                .collect()),
            Val::T(_) => Ok(self
                .konst_req(k, "shape")?
                .to_i64_vec()
                .into_iter()
                .map(Ok)
                .collect()),
        }
    }

    fn op(&mut self, op: Op, ins: &[ValueId]) -> R<ValueId> {
        self.cx.op(op, ins, self.o)
    }

    fn reduce(
        &mut self,
        kind: ReduceKind,
        axes: Vec<usize>,
        keepdims: bool,
        x: ValueId,
    ) -> R<ValueId> {
        self.op(
            Op::Reduce {
                kind,
                axes,
                keepdims,
            },
            &[x],
        )
    }

    fn un(&mut self, u: U, x: ValueId) -> R<ValueId> {
        self.op(Op::Unary(u), &[x])
    }

    fn bin(&mut self, b: B, x: ValueId, y: ValueId) -> R<ValueId> {
        self.op(Op::Binary(b), &[x, y])
    }

    fn scalar(&mut self, v: f64, like: ValueId) -> ValueId {
        let dt = self.cx.ty(like).dtype;
        let t = Tensor::from_f64_values(dt, vec![], &[v]).expect("a scalar");
        self.cx.literal(t, self.o)
    }

    fn bin_s(&mut self, b: B, x: ValueId, v: f64) -> R<ValueId> {
        let c = self.scalar(v, x);
        self.bin(b, x, c)
    }

    fn select(&mut self, c: ValueId, a: ValueId, b: ValueId) -> R<ValueId> {
        self.op(Op::Select, &[c, a, b])
    }

    fn rank(&self, x: ValueId) -> usize {
        self.cx.ty(x).rank()
    }

    fn dims(&self, x: ValueId) -> Vec<Dim> {
        self.cx.ty(x).shape.clone()
    }

    /// (x - mean) / sqrt(var + eps) over `axes` (biased variance); also the mean and the
    /// inverse standard deviation, both with the axes kept.
    fn standardize(
        &mut self,
        x: ValueId,
        axes: Vec<usize>,
        eps: f64,
    ) -> R<(ValueId, ValueId, ValueId)> {
        let mean = self.reduce(ReduceKind::Mean, axes.clone(), true, x)?;
        let d = self.bin(B::Sub, x, mean)?;
        let sq = self.bin(B::Mul, d, d)?;
        let var = self.reduce(ReduceKind::Mean, axes, true, sq)?;
        let ve = self.bin_s(B::Add, var, eps)?;
        let inv = self.un(U::Rsqrt, ve)?;
        Ok((self.bin(B::Mul, d, inv)?, mean, inv))
    }

    /// Reshapes to `target` (dims of the result). A symbol stays where it is (0) or, alone,
    /// moves (-1).
    fn reshape_to(&mut self, x: ValueId, target: &[Dim]) -> R<ValueId> {
        let src = self.dims(x);
        if src == target {
            return Ok(x);
        }
        let mut spec = Vec::with_capacity(target.len());
        let mut inferred = false;
        for (i, d) in target.iter().enumerate() {
            match d {
                Dim::Known(0) => return Err("reshaping to a zero-size dim is not supported".into()),
                Dim::Known(n) => spec.push(*n as i64),
                Dim::Sym(_) if src.get(i) == Some(d) => spec.push(0),
                Dim::Sym(s) => {
                    if inferred {
                        return Err(format!(
                            "cannot move two symbolic dims (`{s}` and another) in one reshape"
                        ));
                    }
                    inferred = true;
                    spec.push(-1);
                }
            }
        }
        self.op(Op::Reshape { shape: spec }, &[x])
    }

    fn axes(&mut self, attr_name: &str, input: usize, since: i64) -> R<Option<Vec<i64>>> {
        if self.cx.opset >= since {
            self.ints_input(input, "axes")
        } else {
            Ok(aints(self.n, attr_name))
        }
    }
}

/// Ops decomposed into several IR ops: on f16 / bf16 data they are computed in f32 and
/// rounded once, as the reference implementations do.
const UPCAST: &[&str] = &[
    "Acos",
    "Acosh",
    "Asin",
    "Asinh",
    "Atanh",
    "Celu",
    "Cosh",
    "Elu",
    "Gelu",
    "GroupNormalization",
    "HardSigmoid",
    "HardSwish",
    "InstanceNormalization",
    "LRN",
    "LayerNormalization",
    "LeakyRelu",
    "LpNormalization",
    "MeanVarianceNormalization",
    "Mish",
    "RMSNormalization",
    "ReduceLogSumExp",
    "Selu",
    "Shrink",
    "Sinh",
    "Softsign",
    "Swish",
    "Tan",
    "ThresholdedRelu",
];

/// Lowers one node; returns its outputs in order.
pub(crate) fn lower(cx: &mut Cx, n: &NodeProto, o: &Origin) -> R<Vec<Val>> {
    if UPCAST.contains(&n.op_type.as_str()) {
        let half = n
            .input
            .first()
            .and_then(|s| cx.val(s))
            .and_then(|v| match v {
                Val::T(id) => {
                    Some(cx.ty(id).dtype).filter(|d| matches!(d, DType::F16 | DType::BF16))
                }
                Val::Shape { .. } => None,
            });
        if let Some(dt) = half {
            let mut wide = n.clone();
            for (k, name) in n.input.iter().enumerate() {
                if let Some(Val::T(id)) = cx.val(name) {
                    if cx.ty(id).dtype == dt {
                        let c = cx.op(Op::Cast { to: DType::F32 }, &[id], o)?;
                        let tmp = format!("{name}.f32");
                        cx.vals.insert(tmp.clone(), Val::T(c));
                        wide.input[k] = tmp;
                    }
                }
            }
            let outs = lower_node(cx, &wide, o)?;
            return outs
                .into_iter()
                .map(|v| match v {
                    Val::T(id) if cx.ty(id).dtype == DType::F32 => {
                        cx.op(Op::Cast { to: dt }, &[id], o).map(Val::T)
                    }
                    v => Ok(v),
                })
                .collect();
        }
    }
    lower_node(cx, n, o)
}

fn lower_node(cx: &mut Cx, n: &NodeProto, o: &Origin) -> R<Vec<Val>> {
    let mut l = L { cx, n, o };
    let opset = l.cx.opset;
    let one = |v: ValueId| Ok(vec![Val::T(v)]);
    let unary = match n.op_type.as_str() {
        "Abs" => Some(U::Abs),
        "Neg" => Some(U::Neg),
        "Exp" => Some(U::Exp),
        "Log" => Some(U::Log),
        "Sqrt" => Some(U::Sqrt),
        "Reciprocal" => Some(U::Reciprocal),
        "Tanh" => Some(U::Tanh),
        "Sigmoid" => Some(U::Sigmoid),
        "Relu" => Some(U::Relu),
        "Erf" => Some(U::Erf),
        "Sin" => Some(U::Sin),
        "Cos" => Some(U::Cos),
        "Floor" => Some(U::Floor),
        "Ceil" => Some(U::Ceil),
        "Round" => Some(U::Round),
        "Sign" => Some(U::Sign),
        "Not" => Some(U::Not),
        "Softplus" => Some(U::Softplus),

        _ => None,
    };
    if let Some(u) = unary {
        let x = l.t(0)?;
        return one(l.un(u, x)?);
    }
    let binary = match n.op_type.as_str() {
        "Add" => Some(B::Add),
        "Sub" => Some(B::Sub),
        "Mul" => Some(B::Mul),
        "Div" => Some(B::Div),
        "Equal" => Some(B::Eq),
        "Less" => Some(B::Lt),
        "LessOrEqual" => Some(B::Le),
        "Greater" => Some(B::Gt),
        "GreaterOrEqual" => Some(B::Ge),
        "And" => Some(B::And),
        "Or" => Some(B::Or),
        "Xor" => Some(B::Ne),
        "BitwiseAnd" => Some(B::BitAnd),
        "BitwiseOr" => Some(B::BitOr),
        "BitwiseXor" => Some(B::BitXor),
        _ => None,
    };
    if let Some(b) = binary {
        // Shape vectors: element-wise arithmetic with constants stays symbolic-free only if known.
        let x = l.t(0)?;
        let y = l.t(1)?;
        return one(l.bin(b, x, y)?);
    }
    match n.op_type.as_str() {
        "Identity" | "Dropout" => {
            if n.op_type == "Dropout" && l.has(2) {
                // Training mode draws a random mask: only a constant `false` is inference.
                let training = l.konst(2)?.map(|t| t.to_i64_vec().first() == Some(&1));
                if training != Some(false) {
                    return Err("training_mode (random masks) is not supported: forgec imports inference graphs".into());
                }
            }
            let v = l.val(0)?;
            if n.op_type == "Dropout" && n.output.get(1).is_some_and(|s| l.cx.is_used(s)) {
                // At inference nothing is dropped: the mask is all true.
                let x = l.cx.materialize(v.clone(), o)?;
                let t = Tensor::from_i64_values(DType::Bool, vec![], &[1]).map_err(|e| e.0)?;
                let c = l.cx.literal(t, o);
                let mask = l.op(Op::Broadcast { shape: l.dims(x) }, &[c])?;
                return Ok(vec![v, Val::T(mask)]);
            }
            Ok(vec![v])
        }
        "Pow" => {
            let x = l.t(0)?;
            let mut y = l.t(1)?;
            let dt = l.cx.ty(x).dtype;
            if l.cx.ty(y).dtype != dt {
                y = l.op(Op::Cast { to: dt }, &[y])?;
            }
            one(l.bin(B::Pow, x, y)?)
        }
        "Max" | "Min" | "Sum" | "Mean" => {
            let b = match n.op_type.as_str() {
                "Max" => B::Max,
                "Min" => B::Min,
                _ => B::Add,
            };
            let mut acc = l.t(0)?;
            for k in 1..n.input.len() {
                let y = l.t(k)?;
                acc = l.bin(b, acc, y)?;
            }
            if n.op_type == "Mean" {
                acc = l.bin_s(B::Div, acc, n.input.len() as f64)?;
            }
            one(acc)
        }
        "Where" => {
            let (c, a, b) = (l.t(0)?, l.t(1)?, l.t(2)?);
            one(l.select(c, a, b)?)
        }
        "Cast" | "CastLike" => {
            let to = if n.op_type == "Cast" {
                proto::dtype_of(ai(n, "to", 1) as i32)?
            } else {
                let t = l.t(1)?;
                l.cx.ty(t).dtype
            };
            if let Val::Shape { dims, scalar } = l.val(0)? {
                if to.is_int() {
                    return Ok(vec![Val::Shape { dims, scalar }]);
                }
            }
            let x = l.t(0)?;
            one(l.op(Op::Cast { to }, &[x])?)
        }
        "Softsign" => {
            let x = l.t(0)?;
            let a = l.un(U::Abs, x)?;
            let d = l.bin_s(B::Add, a, 1.0)?;
            one(l.bin(B::Div, x, d)?)
        }
        "Tan" => {
            let x = l.t(0)?;
            let s = l.un(U::Sin, x)?;
            let c = l.un(U::Cos, x)?;
            one(l.bin(B::Div, s, c)?)
        }
        "Sinh" | "Cosh" => {
            let x = l.t(0)?;
            let e = l.un(U::Exp, x)?;
            let nx = l.un(U::Neg, x)?;
            let en = l.un(U::Exp, nx)?;
            let s = l.bin(if n.op_type == "Sinh" { B::Sub } else { B::Add }, e, en)?;
            one(l.bin_s(B::Mul, s, 0.5)?)
        }
        "Asinh" | "Acosh" => {
            // log(x + sqrt(x^2 +/- 1))
            let x = l.t(0)?;
            let sq = l.bin(B::Mul, x, x)?;
            let s = l.bin_s(if n.op_type == "Asinh" { B::Add } else { B::Sub }, sq, 1.0)?;
            let r = l.un(U::Sqrt, s)?;
            let a = l.bin(B::Add, x, r)?;
            one(l.un(U::Log, a)?)
        }
        "Atanh" => {
            // 0.5 * log((1 + x) / (1 - x))
            let x = l.t(0)?;
            let p = l.bin_s(B::Add, x, 1.0)?;
            let one_ = l.scalar(1.0, x);
            let m = l.bin(B::Sub, one_, x)?;
            let d = l.bin(B::Div, p, m)?;
            let lg = l.un(U::Log, d)?;
            one(l.bin_s(B::Mul, lg, 0.5)?)
        }
        "IsNaN" => {
            let x = l.t(0)?;
            one(l.bin(B::Ne, x, x)?)
        }
        "IsInf" => {
            let x = l.t(0)?;
            let (pos, neg) = (
                ai(n, "detect_positive", 1) != 0,
                ai(n, "detect_negative", 1) != 0,
            );
            let p = l.bin_s(B::Eq, x, f64::INFINITY)?;
            let q = l.bin_s(B::Eq, x, f64::NEG_INFINITY)?;
            one(match (pos, neg) {
                (true, true) => l.bin(B::Or, p, q)?,
                (true, false) => p,
                (false, true) => q,
                (false, false) => {
                    let f = l.bin(B::Ne, x, x)?;
                    l.bin(B::And, f, p)?
                }
            })
        }
        "HardSigmoid" | "HardSwish" => {
            let x = l.t(0)?;
            let (a, b) = if n.op_type == "HardSwish" {
                (1.0 / 6.0, 0.5)
            } else {
                (af(n, "alpha", 0.2), af(n, "beta", 0.5))
            };
            let m = l.bin_s(B::Mul, x, a)?;
            let s = l.bin_s(B::Add, m, b)?;
            let lo = l.bin_s(B::Max, s, 0.0)?;
            let h = l.bin_s(B::Min, lo, 1.0)?;
            one(if n.op_type == "HardSwish" {
                l.bin(B::Mul, x, h)?
            } else {
                h
            })
        }
        "LeakyRelu" => {
            let x = l.t(0)?;
            let c = l.bin_s(B::Lt, x, 0.0)?;
            let m = l.bin_s(B::Mul, x, af(n, "alpha", 0.01))?;
            one(l.select(c, m, x)?)
        }
        "PRelu" => {
            let x = l.t(0)?;
            let mut slope = l.t(1)?;
            // Before opset 7 a 1-D slope applies per channel (axis 1), not per last dim.
            let (xd, sd) = (l.dims(x), l.dims(slope));
            if sd.len() == 1 && xd.len() > 2 && sd[0] == xd[1] && sd[0] != xd[xd.len() - 1] {
                let mut shape = vec![sd[0].clone()];
                shape.extend(std::iter::repeat_n(Dim::Known(1), xd.len() - 2));
                slope = l.reshape_to(slope, &shape)?;
            }
            let c = l.bin_s(B::Lt, x, 0.0)?;
            let m = l.bin(B::Mul, x, slope)?;
            one(l.select(c, m, x)?)
        }
        "ThresholdedRelu" => {
            let x = l.t(0)?;
            let c = l.bin_s(B::Gt, x, af(n, "alpha", 1.0))?;
            let z = l.scalar(0.0, x);
            one(l.select(c, x, z)?)
        }
        "Elu" | "Selu" => {
            let x = l.t(0)?;
            let (alpha, gamma) = if n.op_type == "Elu" {
                (af(n, "alpha", 1.0), 1.0)
            } else {
                (
                    af(n, "alpha", 1.673_263_192_176_818_8),
                    af(n, "gamma", 1.050_701_022_148_132_3),
                )
            };
            let c = l.bin_s(B::Gt, x, 0.0)?;
            let e = l.un(U::Exp, x)?;
            let em = l.bin_s(B::Sub, e, 1.0)?;
            let neg = l.bin_s(B::Mul, em, alpha)?;
            let y = l.select(c, x, neg)?;
            one(if gamma != 1.0 {
                l.bin_s(B::Mul, y, gamma)?
            } else {
                y
            })
        }
        "Celu" => {
            let x = l.t(0)?;
            let alpha = af(n, "alpha", 1.0);
            let p = l.un(U::Relu, x)?;
            let d = l.bin_s(B::Div, x, alpha)?;
            let e = l.un(U::Exp, d)?;
            let em = l.bin_s(B::Sub, e, 1.0)?;
            let am = l.bin_s(B::Mul, em, alpha)?;
            let mn = l.bin_s(B::Min, am, 0.0)?;
            one(l.bin(B::Add, p, mn)?)
        }
        "Mish" => {
            let x = l.t(0)?;
            let sp = l.un(U::Softplus, x)?;
            let t = l.un(U::Tanh, sp)?;
            one(l.bin(B::Mul, x, t)?)
        }
        "Gelu" => {
            let x = l.t(0)?;
            let approx = astr(n, "approximate").unwrap_or_else(|| "none".into());
            let h = l.bin_s(B::Mul, x, 0.5)?;
            let inner = if approx == "tanh" {
                // tanh(sqrt(2/pi) * (x + 0.044715 x^3))
                let x2 = l.bin(B::Mul, x, x)?;
                let x3 = l.bin(B::Mul, x2, x)?;
                let k = l.bin_s(B::Mul, x3, 0.044715)?;
                let s = l.bin(B::Add, x, k)?;
                let s = l.bin_s(B::Mul, s, (2.0 / std::f64::consts::PI).sqrt())?;
                l.un(U::Tanh, s)?
            } else {
                let s = l.bin_s(B::Mul, x, std::f64::consts::FRAC_1_SQRT_2)?;
                l.un(U::Erf, s)?
            };
            let e1 = l.bin_s(B::Add, inner, 1.0)?;
            one(l.bin(B::Mul, h, e1)?)
        }
        "Shrink" => {
            let x = l.t(0)?;
            let (bias, lambd) = (af(n, "bias", 0.0), af(n, "lambd", 0.5));
            let lo = l.bin_s(B::Lt, x, -lambd)?;
            let hi = l.bin_s(B::Gt, x, lambd)?;
            let xp = l.bin_s(B::Add, x, bias)?;
            let xm = l.bin_s(B::Sub, x, bias)?;
            let z = l.scalar(0.0, x);
            let inner = l.select(hi, xm, z)?;
            one(l.select(lo, xp, inner)?)
        }
        "Clip" => {
            let mut x = l.t(0)?;
            let (lo, hi) = if opset < 11 {
                (
                    attr(n, "min").map(|a| a.f as f64),
                    attr(n, "max").map(|a| a.f as f64),
                )
            } else {
                let lo = l.konst(1)?.map(|t| scalar(&t, "min")).transpose()?;
                let hi = l.konst(2)?.map(|t| scalar(&t, "max")).transpose()?;
                (lo, hi)
            };
            if opset >= 11 && ((l.has(1) && lo.is_none()) || (l.has(2) && hi.is_none())) {
                // Bounds computed at run time.
                if l.has(1) {
                    let m = l.t(1)?;
                    x = l.bin(B::Max, x, m)?;
                }
                if l.has(2) {
                    let m = l.t(2)?;
                    x = l.bin(B::Min, x, m)?;
                }
                return one(x);
            }
            if let Some(v) = lo {
                x = l.bin_s(B::Max, x, v)?;
            }
            if let Some(v) = hi {
                x = l.bin_s(B::Min, x, v)?;
            }
            one(x)
        }
        "MatMul" => {
            let (a, b) = (l.t(0)?, l.t(1)?);
            let (ra, rb) = (l.rank(a), l.rank(b));
            if ra == 0 || rb == 0 {
                return Err("MatMul of a scalar".into());
            }
            // NumPy: a 1-D operand gains a dim for the product and loses it after.
            let a2 = if ra == 1 {
                l.op(Op::Reshape { shape: vec![1, -1] }, &[a])?
            } else {
                a
            };
            let b2 = if rb == 1 {
                l.op(Op::Reshape { shape: vec![-1, 1] }, &[b])?
            } else {
                b
            };
            let mut y = l.op(Op::MatMul, &[a2, b2])?;
            if ra == 1 || rb == 1 {
                let mut d = l.dims(y);
                let r = d.len();
                if rb == 1 {
                    d.remove(r - 1);
                }
                if ra == 1 {
                    d.remove(d.len() - if rb == 1 { 1 } else { 2 });
                }
                y = l.reshape_to(y, &d)?;
            }
            one(y)
        }
        "Gemm" => {
            let (mut a, mut b) = (l.t(0)?, l.t(1)?);
            if ai(n, "transA", 0) != 0 {
                a = l.op(Op::Transpose { perm: vec![1, 0] }, &[a])?;
            }
            if ai(n, "transB", 0) != 0 {
                b = l.op(Op::Transpose { perm: vec![1, 0] }, &[b])?;
            }
            let mut y = l.op(Op::MatMul, &[a, b])?;
            let alpha = af(n, "alpha", 1.0);
            if alpha != 1.0 {
                y = l.bin_s(B::Mul, y, alpha)?;
            }
            if l.has(2) {
                let mut c = l.t(2)?;
                let beta = af(n, "beta", 1.0);
                if beta != 1.0 {
                    c = l.bin_s(B::Mul, c, beta)?;
                }
                y = l.bin(B::Add, y, c)?;
            }
            one(y)
        }
        "Conv" | "ConvTranspose" => conv(&mut l),
        "MaxPool" | "AveragePool" => pool(&mut l),
        "GlobalAveragePool" | "GlobalMaxPool" => {
            let x = l.t(0)?;
            let r = l.rank(x);
            let kind = if n.op_type == "GlobalMaxPool" {
                ReduceKind::Max
            } else {
                ReduceKind::Mean
            };
            one(l.reduce(kind, (2..r).collect(), true, x)?)
        }
        t if t.starts_with("Reduce") => reduce(&mut l),
        "Softmax" | "LogSoftmax" => {
            let x = l.t(0)?;
            let r = l.rank(x);
            let log = n.op_type == "LogSoftmax";
            let default = if opset < 13 { 1 } else { -1 };
            let axis = norm_axis(ai(n, "axis", default), r.max(1))?;
            if opset >= 13 || axis == r - 1 {
                return one(l.op(Op::Softmax { axis, log }, &[x])?);
            }
            // Before opset 13: softmax over the flattened dims from `axis` on.
            let d = l.dims(x);
            let mut flat: Vec<Dim> = d[..axis].to_vec();
            let rest: Option<usize> = d[axis..].iter().map(|d| d.known()).product();
            flat.push(Dim::Known(rest.ok_or("softmax over a symbolic dim")?));
            let f = l.reshape_to(x, &flat)?;
            let s = l.op(Op::Softmax { axis, log }, &[f])?;
            one(l.reshape_to(s, &d)?)
        }
        "Reshape" => {
            let x = l.t(0)?;
            let target = l.reshape_target(1)?;
            let allowzero = ai(n, "allowzero", 0) != 0;
            let src = l.dims(x);
            let mut spec = Vec::new();
            let mut moved_sym = false;
            for (i, t) in target.iter().enumerate() {
                match t {
                    Ok(0) if allowzero => return Err("allowzero with a zero dim is not supported".into()),
                    Ok(v) => spec.push(*v),
                    Err(d) if src.get(i) == Some(d) => spec.push(0),
                    Err(_) if !moved_sym && !target.iter().any(|t| t == &Ok(-1)) => {
                        moved_sym = true;
                        spec.push(-1)
                    }
                    Err(d) => return Err(format!("the target shape moves the symbolic dim `{d}`, which forgec cannot express")),
                }
            }
            one(l.op(Op::Reshape { shape: spec }, &[x])?)
        }
        "Flatten" => {
            let x = l.t(0)?;
            let d = l.dims(x);
            // Flatten's axis ranges over [-r, r]: a negative one counts from the rank.
            let a = ai(n, "axis", 1);
            let axis = if a < 0 { a + d.len() as i64 } else { a };
            if !(0..=d.len() as i64).contains(&axis) {
                return Err(format!("axis {a} is out of range for rank {}", d.len()));
            }
            let axis = axis as usize;
            let pre: Option<usize> = d[..axis].iter().map(|d| d.known()).product();
            let post: Option<usize> = d[axis..].iter().map(|d| d.known()).product();
            let target = match (pre, post) {
                (Some(a), Some(b)) => vec![Dim::Known(a), Dim::Known(b)],
                (None, Some(b)) if axis == 1 => vec![d[0].clone(), Dim::Known(b)],
                (Some(a), None) if axis == d.len() - 1 => vec![Dim::Known(a), d[axis].clone()],
                _ => return Err("flattening symbolic dims together is not supported".into()),
            };
            one(l.reshape_to(x, &target)?)
        }
        "Squeeze" | "Unsqueeze" => {
            let v = l.val(0)?;
            let axes = l.axes("axes", 1, 13)?;
            if let Val::Shape { dims, scalar } = &v {
                // Shape vectors: a 1-element vector <-> a scalar.
                if n.op_type == "Unsqueeze" && *scalar {
                    return Ok(vec![Val::Shape {
                        dims: dims.clone(),
                        scalar: false,
                    }]);
                }
                if n.op_type == "Squeeze" && dims.len() == 1 {
                    return Ok(vec![Val::Shape {
                        dims: dims.clone(),
                        scalar: true,
                    }]);
                }
            }
            let x = l.cx.materialize(v, o)?;
            let d = l.dims(x);
            let target: Vec<Dim> = if n.op_type == "Squeeze" {
                let axes: Vec<usize> = match axes {
                    Some(a) => a.iter().map(|&a| norm_axis(a, d.len())).collect::<R<_>>()?,
                    None => (0..d.len()).filter(|&i| d[i] == Dim::Known(1)).collect(),
                };
                for &a in &axes {
                    if d[a] != Dim::Known(1) {
                        return Err(format!("cannot squeeze axis {a} of size {}", d[a]));
                    }
                }
                d.iter()
                    .enumerate()
                    .filter(|(i, _)| !axes.contains(i))
                    .map(|(_, d)| d.clone())
                    .collect()
            } else {
                let axes = axes.ok_or("Unsqueeze needs axes")?;
                let r = d.len() + axes.len();
                let axes: Vec<usize> = axes.iter().map(|&a| norm_axis(a, r)).collect::<R<_>>()?;
                let mut it = d.into_iter();
                (0..r)
                    .map(|i| {
                        if axes.contains(&i) {
                            Dim::Known(1)
                        } else {
                            it.next().unwrap()
                        }
                    })
                    .collect()
            };
            one(l.reshape_to(x, &target)?)
        }
        "Transpose" => {
            let x = l.t(0)?;
            let r = l.rank(x);
            let perm: Vec<usize> = match aints(n, "perm") {
                Some(p) => p.iter().map(|&a| norm_axis(a, r)).collect::<R<_>>()?,
                None => (0..r).rev().collect(),
            };
            one(l.op(Op::Transpose { perm }, &[x])?)
        }
        "Concat" => {
            let vals: Vec<Val> = (0..n.input.len()).map(|k| l.val(k)).collect::<R<_>>()?;
            if vals.iter().any(|v| matches!(v, Val::Shape { .. })) {
                let mut dims = Vec::new();
                for (k, v) in vals.into_iter().enumerate() {
                    match v {
                        Val::Shape { dims: d, .. } => dims.extend(d),
                        Val::T(_) => {
                            let t = l.konst_req(k, "shape part")?;
                            dims.extend(
                                t.to_i64_vec()
                                    .into_iter()
                                    .map(|v| Dim::Known(v.max(0) as usize)),
                            );
                            if t.to_i64_vec().iter().any(|&v| v < 0) {
                                // -1 / 0 entries of a Reshape target: keep them as data.
                                return concat_with_specials(&mut l);
                            }
                        }
                    }
                }
                return Ok(vec![Val::Shape {
                    dims,
                    scalar: false,
                }]);
            }
            let ins: Vec<ValueId> = (0..n.input.len()).map(|k| l.t(k)).collect::<R<_>>()?;
            let r = l.rank(ins[0]);
            let axis = norm_axis(ai(n, "axis", 0), r)?;
            one(l.op(Op::Concat { axis }, &ins)?)
        }
        "Split" => {
            let x = l.t(0)?;
            let d = l.dims(x);
            let axis = norm_axis(ai(n, "axis", 0), d.len())?;
            let len = d[axis].known().ok_or("split along a symbolic dim")?;
            let parts = if opset >= 13 {
                l.ints_input(1, "split")?
            } else {
                aints(n, "split")
            };
            let outs = n.output.len();
            let sizes: Vec<usize> = match parts {
                Some(p) => p.iter().map(|&v| v.max(0) as usize).collect(),
                None => {
                    let k = if opset >= 18 {
                        ai(n, "num_outputs", outs as i64) as usize
                    } else {
                        outs
                    };
                    if k == 0 {
                        return Err("Split into 0 outputs".into());
                    }
                    let each = len.div_ceil(k);
                    (0..k)
                        .map(|i| each.min(len.saturating_sub(i * each)))
                        .collect()
                }
            };
            if sizes.iter().sum::<usize>() != len {
                return Err(format!("split sizes {sizes:?} do not add up to {len}"));
            }
            let mut start = 0i64;
            let mut res = Vec::new();
            for s in sizes {
                let e = start + s as i64;
                res.push(Val::T(l.op(
                    Op::Slice {
                        axes: vec![axis],
                        starts: vec![start],
                        ends: vec![e],
                        steps: vec![1],
                    },
                    &[x],
                )?));
                start = e;
            }
            Ok(res)
        }
        "Slice" => slice(&mut l),
        "Pad" => pad(&mut l),
        "Gather" => {
            let axis_attr = ai(n, "axis", 0);
            if let Val::Shape { dims, .. } = l.val(0)? {
                let idx = l.konst_req(1, "indices")?;
                let len = dims.len() as i64;
                let pick = |i: i64| -> R<Dim> {
                    let j = if i < 0 { i + len } else { i };
                    dims.get(j as usize)
                        .cloned()
                        .filter(|_| j >= 0)
                        .ok_or_else(|| format!("index {i} out of range"))
                };
                let iv = idx.to_i64_vec();
                let picked: Vec<Dim> = iv.iter().map(|&i| pick(i)).collect::<R<_>>()?;
                return Ok(vec![Val::Shape {
                    dims: picked,
                    scalar: idx.shape().is_empty(),
                }]);
            }
            let x = l.t(0)?;
            let idx = l.t(1)?;
            let axis = norm_axis(axis_attr, l.rank(x))?;
            one(l.op(Op::Gather { axis }, &[x, idx])?)
        }
        "Expand" => {
            let x = l.t(0)?;
            let dims = l.dims_input(1)?;
            one(l.op(Op::Broadcast { shape: dims }, &[x])?)
        }
        "Tile" => {
            let x = l.t(0)?;
            let reps = l.konst_req(1, "repeats")?.to_i64_vec();
            let d = l.dims(x);
            if reps.len() != d.len() {
                return Err(format!("{} repeats for rank {}", reps.len(), d.len()));
            }
            let mut expanded = Vec::new();
            let mut bshape = Vec::new();
            let mut out = Vec::new();
            for (dim, &r) in d.iter().zip(&reps) {
                let r = r.max(0) as usize;
                expanded.extend([Dim::Known(1), dim.clone()]);
                bshape.extend([Dim::Known(r), Dim::Known(1)]);
                out.push(match dim {
                    Dim::Known(k) => Dim::Known(k * r),
                    s if r == 1 => s.clone(),
                    s => return Err(format!("tiling the symbolic dim `{s}` is not supported")),
                });
            }
            let e = l.reshape_to(x, &expanded)?;
            let b = l.op(Op::Broadcast { shape: bshape }, &[e])?;
            one(l.reshape_to(b, &out)?)
        }
        "Shape" => {
            let x = l.t(0)?;
            let d = l.dims(x);
            let r = d.len() as i64;
            let clamp = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
            let (s, e) = if opset >= 15 {
                (clamp(ai(n, "start", 0)), clamp(ai(n, "end", r)))
            } else {
                (0, d.len())
            };
            let dims = d[s..e.max(s)].to_vec();
            let v = Val::Shape {
                dims,
                scalar: false,
            };
            // Known shapes become constants at once.
            if let Val::Shape { dims, .. } = &v {
                if dims.iter().all(|d| d.known().is_some()) {
                    return Ok(vec![Val::T(l.cx.materialize(v.clone(), o)?)]);
                }
            }
            Ok(vec![v])
        }
        "Size" => {
            let x = l.t(0)?;
            let n_: Option<usize> = l.dims(x).iter().map(|d| d.known()).product();
            let n_ = n_.ok_or("Size of a tensor with a symbolic dim")?;
            let t = Tensor::from_i64_values(DType::I64, vec![], &[n_ as i64]).map_err(|e| e.0)?;
            one(l.cx.literal(t, o))
        }
        "ConstantOfShape" => {
            let dims = l.dims_input(0)?;
            let value = match attr(n, "value").and_then(|a| a.t.as_ref()) {
                Some(t) => proto::tensor(t, l.cx.base_dir)?,
                None => Tensor::from_f64_values(DType::F32, vec![1], &[0.0]).map_err(|e| e.0)?,
            };
            let scalar = value.clone().reshaped(vec![]).map_err(|e| e.0)?;
            if let Some(shape) = dims
                .iter()
                .map(|d| d.known())
                .collect::<Option<Vec<usize>>>()
            {
                let n_ = shape
                    .iter()
                    .try_fold(1u64, |a, &d| a.checked_mul(d as u64))
                    .filter(|&n| n <= proto::MAX_ELEMS)
                    .ok_or_else(|| format!("a constant of shape {shape:?} is too large"))?
                    as usize;
                if n_ as u64 > proto::FOLD_MAX_ELEMS {
                    // Made at run time, not in memory at import.
                    let c = l.cx.literal(scalar, o);
                    return one(l.op(Op::Broadcast { shape: dims }, &[c])?);
                }
                let t = if value.dtype().is_float() {
                    Tensor::from_f64_values(value.dtype(), shape, &vec![scalar.to_f64_vec()[0]; n_])
                } else {
                    Tensor::from_i64_values(value.dtype(), shape, &vec![scalar.to_i64_vec()[0]; n_])
                }
                .map_err(|e| e.0)?;
                return one(l.cx.literal(t, o));
            }
            let c = l.cx.literal(scalar, o);
            one(l.op(Op::Broadcast { shape: dims }, &[c])?)
        }
        "Constant" => {
            let a = n.attribute.first().ok_or("a Constant without a value")?;
            let t = match a.name.as_str() {
                "value" => proto::tensor(a.t.as_ref().ok_or("empty value")?, l.cx.base_dir)?,
                "value_float" => {
                    Tensor::from_f64_values(DType::F32, vec![], &[a.f as f64]).map_err(|e| e.0)?
                }
                "value_floats" => {
                    Tensor::from_f32(vec![a.floats.len()], a.floats.clone()).map_err(|e| e.0)?
                }
                "value_int" => {
                    Tensor::from_i64_values(DType::I64, vec![], &[a.i]).map_err(|e| e.0)?
                }
                "value_ints" => Tensor::from_i64_values(DType::I64, vec![a.ints.len()], &a.ints)
                    .map_err(|e| e.0)?,
                other => return Err(format!("Constant with `{other}` is not supported")),
            };
            let id = l.cx.literal(t, o);
            if let Some(code) =
                a.t.as_ref()
                    .filter(|_| a.name == "value")
                    .map(|t| t.data_type)
            {
                l.cx.elem_code.insert(id, code);
            }
            one(id)
        }
        "Range" => {
            let (s, lim, d) = (
                l.konst_req(0, "start")?,
                l.konst_req(1, "limit")?,
                l.konst_req(2, "delta")?,
            );
            let dt = s.dtype();
            let (a, b, c) = (
                scalar(&s, "start")?,
                scalar(&lim, "limit")?,
                scalar(&d, "delta")?,
            );
            if c == 0.0 {
                return Err("Range with delta 0".into());
            }
            let count = ((b - a) / c).ceil().max(0.0);
            if !count.is_finite() || count > proto::FOLD_MAX_ELEMS as f64 {
                return Err(format!(
                    "Range from {a} to {b} by {c} has {count} elements, over forgec's limit of {} for a constant made at import",
                    proto::FOLD_MAX_ELEMS
                ));
            }
            let count = count as u64;
            let v: Vec<f64> = (0..count).map(|i| a + i as f64 * c).collect();
            one(l.cx.literal(
                Tensor::from_f64_values(dt, vec![v.len()], &v).map_err(|e| e.0)?,
                o,
            ))
        }
        "BatchNormalization" => {
            if ai(n, "training_mode", 0) != 0 || n.output.iter().skip(1).any(|s| l.cx.is_used(s)) {
                return Err("training-mode BatchNormalization (running statistics outputs) is not supported".into());
            }
            let x = l.t(0)?;
            let ins: Vec<ValueId> = (1..5).map(|k| l.t(k)).collect::<R<_>>()?;
            let eps = af(n, "epsilon", 1e-5);
            one(l.op(
                Op::BatchNorm {
                    axis: 1.min(l.rank(x) - 1),
                    epsilon: eps,
                    momentum: af(n, "momentum", 0.9),
                },
                &[x, ins[0], ins[1], ins[2], ins[3]],
            )?)
        }
        "InstanceNormalization" => {
            let x = l.t(0)?;
            let (scale, bias) = (l.t(1)?, l.t(2)?);
            let r = l.rank(x);
            let eps = af(n, "epsilon", 1e-5);
            let axes: Vec<usize> = (2..r).collect();
            let (nrm, _, _) = l.standardize(x, axes, eps)?;
            let c = l.cx.ty(scale).shape[0].clone();
            let mut bshape = vec![c];
            bshape.extend(std::iter::repeat_n(Dim::Known(1), r - 2));
            let s = l.reshape_to(scale, &bshape)?;
            let b = l.reshape_to(bias, &bshape)?;
            let y = l.bin(B::Mul, nrm, s)?;
            one(l.bin(B::Add, y, b)?)
        }
        "LayerNormalization" => {
            let x = l.t(0)?;
            let d = l.dims(x);
            if n.output.iter().skip(1).any(|s| l.cx.is_used(s)) {
                // Mean and InvStdDev are wanted too: the decomposed form gives all three.
                let axis = norm_axis(ai(n, "axis", -1), d.len())?;
                let axes: Vec<usize> = (axis..d.len()).collect();
                let eps = af(n, "epsilon", 1e-5);
                let (nrm, mean, inv) = l.standardize(x, axes, eps)?;
                let scale = l.t(1)?;
                let mut y = l.bin(B::Mul, nrm, scale)?;
                if l.has(2) {
                    let b = l.t(2)?;
                    y = l.bin(B::Add, y, b)?;
                }
                return Ok(vec![Val::T(y), Val::T(mean), Val::T(inv)]);
            }
            let axis = norm_axis(ai(n, "axis", -1), d.len())?;
            let axes: Vec<usize> = (axis..d.len()).collect();
            let want: Vec<Dim> = d[axis..].to_vec();
            let mut scale = l.t(1)?;
            if l.dims(scale) != want {
                scale = l.op(
                    Op::Broadcast {
                        shape: want.clone(),
                    },
                    &[scale],
                )?;
            }
            let bias = if l.has(2) {
                let b = l.t(2)?;
                if l.dims(b) != want {
                    l.op(
                        Op::Broadcast {
                            shape: want.clone(),
                        },
                        &[b],
                    )?
                } else {
                    b
                }
            } else {
                let z = l.scalar(0.0, x);
                l.op(Op::Broadcast { shape: want }, &[z])?
            };
            one(l.op(
                Op::LayerNorm {
                    axes,
                    epsilon: af(n, "epsilon", 1e-5),
                },
                &[x, scale, bias],
            )?)
        }
        "LpNormalization" => {
            let x = l.t(0)?;
            let axis = norm_axis(ai(n, "axis", -1), l.rank(x))?;
            let p = ai(n, "p", 2);
            let norm = if p == 1 {
                let a = l.un(U::Abs, x)?;
                l.reduce(ReduceKind::Sum, vec![axis], true, a)?
            } else if p == 2 {
                let sq = l.bin(B::Mul, x, x)?;
                let s = l.reduce(ReduceKind::Sum, vec![axis], true, sq)?;
                l.un(U::Sqrt, s)?
            } else {
                return Err(format!("p={p} (only 1 and 2 exist)"));
            };
            // A zero vector stays zero (not 0 / 0).
            let q = l.bin(B::Div, x, norm)?;
            let zero = l.bin_s(B::Eq, norm, 0.0)?;
            let z = l.scalar(0.0, x);
            one(l.select(zero, z, q)?)
        }
        "LSTM" | "GRU" | "RNN" => recurrent(&mut l),
        "GatherElements" => {
            let (x, idx) = (l.t(0)?, l.t(1)?);
            let axis = norm_axis(ai(n, "axis", 0), l.rank(x))?;
            one(l.op(Op::GatherElements { axis }, &[x, idx])?)
        }
        "ScatterElements" | "Scatter" => {
            let (x, idx, upd) = (l.t(0)?, l.t(1)?, l.t(2)?);
            let axis = norm_axis(ai(n, "axis", 0), l.rank(x))?;
            let reduction = astr(n, "reduction").unwrap_or_else(|| "none".into());
            one(l.op(Op::ScatterElements { axis, reduction }, &[x, idx, upd])?)
        }
        "ScatterND" => {
            let (x, idx, upd) = (l.t(0)?, l.t(1)?, l.t(2)?);
            let reduction = astr(n, "reduction").unwrap_or_else(|| "none".into());
            one(l.op(Op::ScatterNd { reduction }, &[x, idx, upd])?)
        }
        "GatherND" => {
            let (x, idx) = (l.t(0)?, l.t(1)?);
            one(l.op(
                Op::GatherNd {
                    batch_dims: ai(n, "batch_dims", 0).max(0) as usize,
                },
                &[x, idx],
            )?)
        }
        "TopK" => {
            let x = l.t(0)?;
            let k = if opset >= 10 {
                l.konst_req(1, "k")?.to_i64_vec()[0]
            } else {
                ai(n, "k", 0)
            };
            let axis = norm_axis(ai(n, "axis", -1), l.rank(x))?;
            let outs = l.cx.op_n(
                Op::TopK {
                    axis,
                    k: k.max(0) as usize,
                    largest: ai(n, "largest", 1) != 0,
                    sorted: ai(n, "sorted", 1) != 0,
                },
                &[x],
                o,
            )?;
            Ok(outs.into_iter().map(Val::T).collect())
        }
        "Attention" => attention(&mut l),
        "Resize" | "Upsample" => resize(&mut l),
        "QuantizeLinear" | "DequantizeLinear" => quantize(&mut l),
        "Einsum" => einsum(&mut l),
        "LpPool" => {
            // (sum |x|^p over the window)^(1/p): an average over the whole window, times its size.
            let x = l.t(0)?;
            let p = ai(n, "p", 2) as f64;
            let a = l.un(U::Abs, x)?;
            let ap = l.bin_s(B::Pow, a, p)?;
            let window: usize = aints(n, "kernel_shape")
                .ok_or("kernel_shape is required")?
                .iter()
                .map(|&v| v.max(1) as usize)
                .product();
            let mut avg = n.clone();
            avg.op_type = "AveragePool".into();
            avg.attribute.retain(|a| a.name != "p");
            let mut cip = onnx_protobuf::AttributeProto::new();
            cip.name = "count_include_pad".into();
            cip.i = 1;
            cip.type_ = onnx_protobuf::attribute_proto::AttributeType::INT.into();
            avg.attribute.push(cip);
            avg.input[0] = format!("{}.lp_pow", n.input[0]);
            l.cx.vals.insert(avg.input[0].clone(), Val::T(ap));
            let pooled = match pool(&mut L {
                cx: l.cx,
                n: &avg,
                o,
            })?
            .remove(0)
            {
                Val::T(v) => v,
                Val::Shape { .. } => unreachable!("pool makes tensors"),
            };
            let s = l.bin_s(B::Mul, pooled, window as f64)?;
            one(l.bin_s(B::Pow, s, 1.0 / p)?)
        }
        "CenterCropPad" => {
            let x = l.t(0)?;
            let target = l.konst_req(1, "shape")?.to_i64_vec();
            let d = l.dims(x);
            let axes: Vec<usize> = match aints(n, "axes") {
                Some(a) => a.iter().map(|&v| norm_axis(v, d.len())).collect::<R<_>>()?,
                None => (0..d.len()).collect(),
            };
            if axes.len() != target.len() {
                return Err(format!(
                    "{} target sizes for {} axes",
                    target.len(),
                    axes.len()
                ));
            }
            let mut y = x;
            for (&a, &t) in axes.iter().zip(&target) {
                let cur = d[a].known().ok_or("cropping a symbolic dim")? as i64;
                if t < cur {
                    let s = (cur - t) / 2;
                    y = l.op(
                        Op::Slice {
                            axes: vec![a],
                            starts: vec![s],
                            ends: vec![s + t],
                            steps: vec![1],
                        },
                        &[y],
                    )?;
                } else if t > cur {
                    let mut pads = vec![(0, 0); d.len()];
                    let b = (t - cur) / 2;
                    pads[a] = (b as usize, (t - cur - b) as usize);
                    y = l.op(
                        Op::Pad {
                            pads,
                            mode: PadMode::Constant,
                            value: 0.0,
                        },
                        &[y],
                    )?;
                }
            }
            one(y)
        }
        "HannWindow" | "HammingWindow" | "BlackmanWindow" => {
            let size = l.konst_req(0, "size")?.to_i64_vec()[0].max(0) as usize;
            let periodic = ai(n, "periodic", 1) != 0;
            let dt = proto::dtype_of(ai(n, "output_datatype", 1) as i32)?;
            let denom = if periodic {
                size as f64
            } else {
                (size as f64 - 1.0).max(1.0)
            };
            let v: Vec<f64> = (0..size)
                .map(|i| {
                    let t = 2.0 * std::f64::consts::PI * i as f64 / denom;
                    match n.op_type.as_str() {
                        "HannWindow" => 0.5 - 0.5 * t.cos(),
                        "HammingWindow" => 25.0 / 46.0 - (21.0 / 46.0) * t.cos(),
                        _ => 0.42 - 0.5 * t.cos() + 0.08 * (2.0 * t).cos(),
                    }
                })
                .collect();
            one(l.cx.literal(
                Tensor::from_f64_values(dt, vec![size], &v).map_err(|e| e.0)?,
                o,
            ))
        }
        "ReverseSequence" => {
            let x = l.t(0)?;
            let lens = l.konst_req(1, "sequence_lens")?.to_i64_vec();
            let d = l.dims(x);
            let shape: Vec<usize> = d
                .iter()
                .map(|v| v.known())
                .collect::<Option<_>>()
                .ok_or("ReverseSequence needs a known shape")?;
            let (ba, ta) = (
                ai(n, "batch_axis", 1) as usize,
                ai(n, "time_axis", 0) as usize,
            );
            // Indices along the time axis: reversed within each batch entry's length.
            let total: usize = shape.iter().product();
            let mut idx = Vec::with_capacity(total);
            let st = {
                let mut s = vec![1usize; shape.len()];
                for i in (0..shape.len().saturating_sub(1)).rev() {
                    s[i] = s[i + 1] * shape[i + 1];
                }
                s
            };
            for flat in 0..total {
                let b = (flat / st[ba]) % shape[ba];
                let t = ((flat / st[ta]) % shape[ta]) as i64;
                let len = *lens
                    .get(b)
                    .ok_or("sequence_lens is shorter than the batch")?;
                idx.push(if t < len { len - 1 - t } else { t });
            }
            let it = l.cx.literal(
                Tensor::from_i64_values(DType::I64, shape, &idx).map_err(|e| e.0)?,
                o,
            );
            one(l.op(Op::GatherElements { axis: ta }, &[x, it])?)
        }
        "Compress" => {
            let x = l.t(0)?;
            let cond = l.konst_req(1, "condition")?.to_i64_vec();
            let (x, axis) = match attr(n, "axis") {
                Some(a) => (x, norm_axis(a.i, l.rank(x))?),
                None => {
                    let total = l
                        .dims(x)
                        .iter()
                        .map(|v| v.known())
                        .product::<Option<usize>>()
                        .ok_or("Compress of a symbolic tensor")?;
                    (l.reshape_to(x, &[Dim::Known(total)])?, 0)
                }
            };
            let len = l.dims(x)[axis]
                .known()
                .ok_or("Compress along a symbolic dim")?;
            let keep: Vec<i64> = (0..len.min(cond.len()))
                .filter(|&i| cond[i] != 0)
                .map(|i| i as i64)
                .collect();
            let it = l.cx.literal(
                Tensor::from_i64_values(DType::I64, vec![keep.len()], &keep).map_err(|e| e.0)?,
                o,
            );
            one(l.op(Op::Gather { axis }, &[x, it])?)
        }
        "NonZero" => {
            // Data-dependent shape: only a compile-time constant input has one.
            let t = l.konst_req(0, "input (its non-zero count fixes the output shape)")?;
            let shape = t.shape().to_vec();
            let v = t.to_f64_vec();
            let nz: Vec<usize> = (0..v.len()).filter(|&i| v[i] != 0.0).collect();
            let r = shape.len();
            let mut out = vec![0i64; r * nz.len()];
            for (k, &flat) in nz.iter().enumerate() {
                let mut rem = flat;
                for dd in (0..r).rev() {
                    out[dd * nz.len() + k] = (rem % shape[dd]) as i64;
                    rem /= shape[dd];
                }
            }
            one(l.cx.literal(
                Tensor::from_i64_values(DType::I64, vec![r, nz.len()], &out).map_err(|e| e.0)?,
                o,
            ))
        }
        "Unique" => unique(&mut l),
        "DynamicQuantizeLinear" => {
            // scale = (max(x, 0) - min(x, 0)) / 255; zero point = saturate(round(-min / scale)).
            let x = l.t(0)?;
            let r = l.rank(x);
            let all: Vec<usize> = (0..r).collect();
            let mx = l.reduce(ReduceKind::Max, all.clone(), false, x)?;
            let mn = l.reduce(ReduceKind::Min, all, false, x)?;
            let mx = l.bin_s(B::Max, mx, 0.0)?;
            let mn = l.bin_s(B::Min, mn, 0.0)?;
            let range = l.bin(B::Sub, mx, mn)?;
            let scale = l.bin_s(B::Div, range, 255.0)?;
            let neg = l.un(U::Neg, mn)?;
            let z = l.bin(B::Div, neg, scale)?;
            let z = l.un(U::Round, z)?;
            let z = l.bin_s(B::Max, z, 0.0)?;
            let z = l.bin_s(B::Min, z, 255.0)?;
            let q = l.bin(B::Div, x, scale)?;
            let q = l.un(U::Round, q)?;
            let q = l.bin(B::Add, q, z)?;
            let q = l.bin_s(B::Max, q, 0.0)?;
            let q = l.bin_s(B::Min, q, 255.0)?;
            let y = l.op(Op::Cast { to: DType::I32 }, &[q])?;
            let zi = l.op(Op::Cast { to: DType::I32 }, &[z])?;
            Ok(vec![Val::T(y), Val::T(scale), Val::T(zi)])
        }
        "BitwiseNot" => {
            let x = l.t(0)?;
            let y = l.un(U::BitNot, x)?;
            // An unsigned input keeps its width: ~x within those bits.
            match l
                .cx
                .elem_code
                .get(&x)
                .and_then(|&c| proto::unsigned_bits(c))
            {
                Some(bits) if bits < 64 => {
                    one(l.bin_s(B::BitAnd, y, ((1u64 << bits) - 1) as f64)?)
                }
                _ => one(y),
            }
        }
        "BitShift" => {
            let (x, y) = (l.t(0)?, l.t(1)?);
            let b = match astr(n, "direction").as_deref() {
                Some("LEFT") => B::Shl,
                Some("RIGHT") => B::Shr,
                other => return Err(format!("direction {other:?} must be LEFT or RIGHT")),
            };
            one(l.bin(b, x, y)?)
        }
        "NegativeLogLikelihoodLoss" => {
            let (x, t) = (l.t(0)?, l.t(1)?);
            let w = if l.has(2) { Some(l.t(2)?) } else { None };
            one(nll(&mut l, x, t, w)?)
        }
        "SoftmaxCrossEntropyLoss" => {
            let (x, t) = (l.t(0)?, l.t(1)?);
            let w = if l.has(2) { Some(l.t(2)?) } else { None };
            let lp = l.op(Op::Softmax { axis: 1, log: true }, &[x])?;
            let loss = nll(&mut l, lp, t, w)?;
            Ok(vec![Val::T(loss), Val::T(lp)])
        }
        "Mod" => {
            let (x, y) = (l.t(0)?, l.t(1)?);
            let fmod = ai(n, "fmod", 0) != 0;
            if !fmod && l.cx.ty(x).dtype.is_float() {
                return Err("Mod of floats needs fmod=1".into());
            }
            one(l.bin(if fmod { B::Rem } else { B::Mod }, x, y)?)
        }
        "Atan" => {
            let x = l.t(0)?;
            one(l.un(U::Atan, x)?)
        }
        "Asin" => {
            // atan(x / sqrt(1 - x^2))
            let x = l.t(0)?;
            let sq = l.bin(B::Mul, x, x)?;
            let one_ = l.scalar(1.0, x);
            let d = l.bin(B::Sub, one_, sq)?;
            let r = l.un(U::Sqrt, d)?;
            let q = l.bin(B::Div, x, r)?;
            one(l.un(U::Atan, q)?)
        }
        "Acos" => {
            // 2 atan(sqrt((1 - x) / (1 + x)))
            let x = l.t(0)?;
            let one_ = l.scalar(1.0, x);
            let a = l.bin(B::Sub, one_, x)?;
            let b = l.bin_s(B::Add, x, 1.0)?;
            let q = l.bin(B::Div, a, b)?;
            let r = l.un(U::Sqrt, q)?;
            let t = l.un(U::Atan, r)?;
            one(l.bin_s(B::Mul, t, 2.0)?)
        }
        "ArgMax" | "ArgMin" => {
            let x = l.t(0)?;
            let axis = norm_axis(ai(n, "axis", 0), l.rank(x))?;
            let kind = if n.op_type == "ArgMax" {
                ReduceKind::Max
            } else {
                ReduceKind::Min
            };
            one(l.op(
                Op::ArgReduce {
                    kind,
                    axis,
                    keepdims: ai(n, "keepdims", 1) != 0,
                    select_last: ai(n, "select_last_index", 0) != 0,
                },
                &[x],
            )?)
        }
        "Hardmax" => {
            let x = l.t(0)?;
            let d = l.dims(x);
            let r = d.len();
            let axis = norm_axis(ai(n, "axis", if opset < 13 { 1 } else { -1 }), r)?;
            if opset < 13 && axis != r - 1 {
                return Err("Hardmax before opset 13 over several axes is not supported".into());
            }
            let len = d[axis].known().ok_or("Hardmax over a symbolic dim")?;
            let am = l.op(
                Op::ArgReduce {
                    kind: ReduceKind::Max,
                    axis,
                    keepdims: true,
                    select_last: false,
                },
                &[x],
            )?;
            let mut ishape = vec![1usize; r];
            ishape[axis] = len;
            let iota =
                Tensor::from_i64_values(DType::I64, ishape, &(0..len as i64).collect::<Vec<_>>())
                    .map_err(|e| e.0)?;
            let iota = l.cx.literal(iota, o);
            let eq = l.bin(B::Eq, am, iota)?;
            let dt = l.cx.ty(x).dtype;
            one(l.op(Op::Cast { to: dt }, &[eq])?)
        }
        "CumSum" | "CumProd" => {
            let x = l.t(0)?;
            let a = l.konst_req(1, "axis")?.to_i64_vec()[0];
            let axis = norm_axis(a, l.rank(x))?;
            let kind = if n.op_type == "CumSum" {
                ReduceKind::Sum
            } else {
                ReduceKind::Prod
            };
            one(l.op(
                Op::Cumulative {
                    kind,
                    axis,
                    exclusive: ai(n, "exclusive", 0) != 0,
                    reverse: ai(n, "reverse", 0) != 0,
                },
                &[x],
            )?)
        }
        "RMSNormalization" => {
            let x = l.t(0)?;
            let r = l.rank(x);
            let axis = norm_axis(ai(n, "axis", -1), r)?;
            let sq = l.bin(B::Mul, x, x)?;
            let ms = l.reduce(ReduceKind::Mean, (axis..r).collect(), true, sq)?;
            let e = l.bin_s(B::Add, ms, af(n, "epsilon", 1e-5))?;
            let inv = l.un(U::Rsqrt, e)?;
            let y = l.bin(B::Mul, x, inv)?;
            let scale = l.t(1)?;
            one(l.bin(B::Mul, y, scale)?)
        }
        "Trilu" => {
            let x = l.t(0)?;
            let d = l.dims(x);
            let r = d.len();
            if r < 2 {
                return Err("Trilu needs rank 2 or more".into());
            }
            let k = if l.has(1) {
                l.konst_req(1, "k")?.to_i64_vec()[0]
            } else {
                0
            };
            let (rows, cols) = (
                d[r - 2].known().ok_or("Trilu over symbolic dims")?,
                d[r - 1].known().ok_or("Trilu over symbolic dims")?,
            );
            let upper = ai(n, "upper", 1) != 0;
            let mask: Vec<i64> = (0..rows * cols)
                .map(|p| {
                    let (i, j) = ((p / cols) as i64, (p % cols) as i64);
                    (if upper { j - i >= k } else { j - i <= k }) as i64
                })
                .collect();
            let m =
                Tensor::from_i64_values(DType::Bool, vec![rows, cols], &mask).map_err(|e| e.0)?;
            let m = l.cx.literal(m, o);
            let z = l.scalar(0.0, x);
            one(l.select(m, x, z)?)
        }
        "Swish" => {
            let x = l.t(0)?;
            let ax = l.bin_s(B::Mul, x, af(n, "alpha", 1.0))?;
            let s = l.un(U::Sigmoid, ax)?;
            one(l.bin(B::Mul, x, s)?)
        }
        "EyeLike" => {
            let x = l.t(0)?;
            let d = l.dims(x);
            let (rows, cols) = match d.as_slice() {
                [Dim::Known(a), Dim::Known(b)] => (*a, *b),
                _ => return Err("EyeLike needs a 2-D input of known shape".into()),
            };
            let k = ai(n, "k", 0);
            let dt = match attr(n, "dtype") {
                Some(a) => proto::dtype_of(a.i as i32)?,
                None => l.cx.ty(x).dtype,
            };
            let v: Vec<f64> = (0..rows * cols)
                .map(|p| ((p % cols) as i64 - (p / cols) as i64 == k) as i64 as f64)
                .collect();
            let t = Tensor::from_f64_values(dt, vec![rows, cols], &v).map_err(|e| e.0)?;
            one(l.cx.literal(t, o))
        }
        "OneHot" => {
            let idx = l.t(0)?;
            let depth = scalar(&l.konst_req(1, "depth")?, "depth")? as i64;
            let values = l.t(2)?;
            let r = l.rank(idx) + 1;
            let axis = norm_axis(ai(n, "axis", -1), r)?;
            let idx = l.op(Op::Cast { to: DType::I64 }, &[idx])?;
            let neg = l.bin_s(B::Lt, idx, 0.0)?;
            let wrapped = l.bin_s(B::Add, idx, depth as f64)?;
            let idx = l.select(neg, wrapped, idx)?;
            let mut target = l.dims(idx);
            target.insert(axis, Dim::Known(1));
            let idx = l.reshape_to(idx, &target)?;
            let mut ishape = vec![1usize; r];
            ishape[axis] = depth.max(0) as usize;
            let iota =
                Tensor::from_i64_values(DType::I64, ishape, &(0..depth.max(0)).collect::<Vec<_>>())
                    .map_err(|e| e.0)?;
            let iota = l.cx.literal(iota, o);
            let eq = l.bin(B::Eq, idx, iota)?;
            let off = l.op(
                Op::Slice {
                    axes: vec![0],
                    starts: vec![0],
                    ends: vec![1],
                    steps: vec![1],
                },
                &[values],
            )?;
            let on = l.op(
                Op::Slice {
                    axes: vec![0],
                    starts: vec![1],
                    ends: vec![2],
                    steps: vec![1],
                },
                &[values],
            )?;
            let off = l.reshape_to(off, &[])?;
            let on = l.reshape_to(on, &[])?;
            one(l.select(eq, on, off)?)
        }
        "DepthToSpace" | "SpaceToDepth" => {
            let x = l.t(0)?;
            let d = l.dims(x);
            if d.len() != 4 {
                return Err("a 4-D (N, C, H, W) input is needed".into());
            }
            let b = ai(n, "blocksize", 0) as usize;
            let (c, h, w) = match (&d[1], &d[2], &d[3]) {
                (Dim::Known(c), Dim::Known(h), Dim::Known(w)) => (*c, *h, *w),
                _ => return Err("C, H and W must be known".into()),
            };
            if b == 0 {
                return Err("blocksize must be positive".into());
            }
            let k = |v: usize| Dim::Known(v);
            let nn = d[0].clone();
            let (six, perm, out) = if n.op_type == "DepthToSpace" {
                if c % (b * b) != 0 {
                    return Err(format!(
                        "{c} channels do not divide by blocksize^2 = {}",
                        b * b
                    ));
                }
                let cb = c / (b * b);
                if astr(n, "mode").as_deref() == Some("CRD") {
                    (
                        vec![nn.clone(), k(cb), k(b), k(b), k(h), k(w)],
                        vec![0, 1, 4, 2, 5, 3],
                        vec![nn, k(cb), k(h * b), k(w * b)],
                    )
                } else {
                    (
                        vec![nn.clone(), k(b), k(b), k(cb), k(h), k(w)],
                        vec![0, 3, 4, 1, 5, 2],
                        vec![nn, k(cb), k(h * b), k(w * b)],
                    )
                }
            } else {
                if h % b != 0 || w % b != 0 {
                    return Err(format!("H {h} and W {w} must divide by blocksize {b}"));
                }
                // Channels come out as (row in block, column in block, channel) in DCR mode,
                // (channel, row, column) in CRD mode (opset 28).
                let perm = if astr(n, "mode").as_deref() == Some("CRD") {
                    vec![0, 1, 3, 5, 2, 4]
                } else {
                    vec![0, 3, 5, 1, 2, 4]
                };
                (
                    vec![nn.clone(), k(c), k(h / b), k(b), k(w / b), k(b)],
                    perm,
                    vec![nn, k(c * b * b), k(h / b), k(w / b)],
                )
            };
            let r6 = l.reshape_to(x, &six)?;
            let t = l.op(Op::Transpose { perm }, &[r6])?;
            one(l.reshape_to(t, &out)?)
        }
        "GroupNormalization" => {
            let x = l.t(0)?;
            let d = l.dims(x);
            let g = ai(n, "num_groups", 0) as usize;
            let c = d
                .get(1)
                .and_then(|c| c.known())
                .ok_or("the channel dim must be known")?;
            if g == 0 || c % g != 0 {
                return Err(format!("{c} channels do not split into {g} groups"));
            }
            let grouped = l.reshape_to(
                x,
                &[
                    d[0].clone(),
                    Dim::Known(g),
                    Dim::Known(
                        d[1..]
                            .iter()
                            .map(|v| v.known().unwrap_or(0))
                            .product::<usize>()
                            / g,
                    ),
                ],
            )?;
            let (mut y, _, _) = l.standardize(grouped, vec![2], af(n, "epsilon", 1e-5))?;
            let (scale, bias) = (l.t(1)?, l.t(2)?);
            let per_group = l.dims(scale) == [Dim::Known(g)] && g != c;
            if per_group {
                let s = l.reshape_to(scale, &[Dim::Known(g), Dim::Known(1)])?;
                let b = l.reshape_to(bias, &[Dim::Known(g), Dim::Known(1)])?;
                y = l.bin(B::Mul, y, s)?;
                y = l.bin(B::Add, y, b)?;
                return one(l.reshape_to(y, &d)?);
            }
            y = l.reshape_to(y, &d)?;
            let mut cs = vec![Dim::Known(c)];
            cs.extend(std::iter::repeat_n(Dim::Known(1), d.len() - 2));
            let s = l.reshape_to(scale, &cs)?;
            let b = l.reshape_to(bias, &cs)?;
            let y = l.bin(B::Mul, y, s)?;
            one(l.bin(B::Add, y, b)?)
        }
        "MeanVarianceNormalization" => {
            let x = l.t(0)?;
            let r = l.rank(x);
            let axes: Vec<usize> = aints(n, "axes")
                .unwrap_or(vec![0, 2, 3])
                .iter()
                .map(|&a| norm_axis(a, r))
                .collect::<R<_>>()?;
            let mean = l.reduce(ReduceKind::Mean, axes.clone(), true, x)?;
            let sq = l.bin(B::Mul, x, x)?;
            let msq = l.reduce(ReduceKind::Mean, axes, true, sq)?;
            let m2 = l.bin(B::Mul, mean, mean)?;
            let var = l.bin(B::Sub, msq, m2)?;
            let sd = l.un(U::Sqrt, var)?;
            let sde = l.bin_s(B::Add, sd, 1e-9)?;
            let dd = l.bin(B::Sub, x, mean)?;
            one(l.bin(B::Div, dd, sde)?)
        }
        "LRN" => {
            let x = l.t(0)?;
            let d = l.dims(x);
            if d.len() < 3 {
                return Err("LRN needs (N, C, ...) input".into());
            }
            let size = ai(n, "size", 0) as usize;
            if size == 0 {
                return Err("size is required".into());
            }
            let (alpha, beta, bias) = (
                af(n, "alpha", 1e-4),
                af(n, "beta", 0.75),
                af(n, "bias", 1.0),
            );
            let rest: usize = d[2..]
                .iter()
                .map(|v| v.known())
                .product::<Option<usize>>()
                .ok_or("LRN needs known spatial dims")?;
            let c = d[1].known().ok_or("the channel dim must be known")?;
            let sq = l.bin(B::Mul, x, x)?;
            let r4 = l.reshape_to(
                sq,
                &[d[0].clone(), Dim::Known(1), Dim::Known(c), Dim::Known(rest)],
            )?;
            let p = PoolAttrs {
                kind: PoolKind::Avg,
                window: vec![size, 1],
                strides: vec![1, 1],
                pads: vec![((size - 1) / 2, size / 2), (0, 0)],
                layout: Layout::ChannelsFirst,
                count_include_pad: true,
                dilations: vec![1, 1],
            };
            let avg = l.op(Op::Pool(p), &[r4])?;
            let sum = l.bin_s(B::Mul, avg, size as f64)?;
            let sum = l.reshape_to(sum, &d)?;
            let s = l.bin_s(B::Mul, sum, alpha / size as f64)?;
            let s = l.bin_s(B::Add, s, bias)?;
            let pw = l.bin_s(B::Pow, s, beta)?;
            one(l.bin(B::Div, x, pw)?)
        }
        other => Err(format!("op {other} is not supported")),
    }
}

/// A Concat mixing symbolic shape parts with -1/0 entries: only Reshape can use it, so keep
/// it symbolic with the special values encoded (0 and -1 cannot be dims; error out).
fn concat_with_specials(_l: &mut L) -> R<Vec<Val>> {
    Err("a shape built from symbolic dims and -1 / 0 entries is not supported".into())
}

/// QuantizeLinear: saturate(round_half_even(x / scale) + zero_point); DequantizeLinear:
/// (x - zero_point) * scale. Per tensor or per axis; the integer range is the zero point's.
fn quantize(l: &mut L) -> R<Vec<Val>> {
    let n = l.n;
    let o = l.o;
    let x = l.t(0)?;
    let mut scale = l.t(1)?;
    let zp = if l.has(2) { Some(l.t(2)?) } else { None };
    if ai(n, "block_size", 0) > 0 {
        return Err("blocked quantization is not supported".into());
    }
    let r = l.rank(x);
    let axis_attr = ai(n, "axis", 1);
    // A 1-D scale (and zero point) of several values runs along `axis`.
    let along = |l: &mut L, v: ValueId| -> R<ValueId> {
        let d = l.dims(v);
        if d.len() == 1 && r > 1 && d[0] != Dim::Known(1) {
            let axis = norm_axis(axis_attr, r)?;
            let mut shape = vec![Dim::Known(1); r];
            shape[axis] = d[0].clone();
            l.reshape_to(v, &shape)
        } else {
            Ok(v)
        }
    };
    scale = along(l, scale)?;
    let zp = match zp {
        Some(z) => Some(along(l, z)?),
        None => None,
    };
    let sdt = l.cx.ty(scale).dtype;
    if n.op_type == "DequantizeLinear" {
        let xf = l.op(Op::Cast { to: sdt }, &[x])?;
        let centered = match zp {
            Some(z) => {
                let zf = l.op(Op::Cast { to: sdt }, &[z])?;
                l.bin(B::Sub, xf, zf)?
            }
            None => xf,
        };
        return Ok(vec![Val::T(l.bin(B::Mul, centered, scale)?)]);
    }
    // The output type: the zero point's, else output_dtype, else uint8.
    let code = match zp {
        Some(z) => l.cx.elem_code.get(&z).copied().unwrap_or(2),
        None => attr(n, "output_dtype")
            .map(|a| a.i as i32)
            .filter(|&c| c != 0)
            .unwrap_or(2),
    };
    let (lo, hi) = proto::int_range(code)
        .ok_or_else(|| format!("quantizing to {} is not supported", proto::dtype_name(code)))?;
    let out_dt = proto::dtype_of(code)?;
    // x / scale in the input's float type (rounding there decides ties, as in the reference),
    // then round half to even and add the zero point exactly.
    let xdt = l.cx.ty(x).dtype;
    let sx = if sdt != xdt {
        l.op(Op::Cast { to: xdt }, &[scale])?
    } else {
        scale
    };
    let q = l.bin(B::Div, x, sx)?;
    let q = l.op(Op::Cast { to: DType::F64 }, &[q])?;
    let mut q = l.un(U::Round, q)?;
    if let Some(z) = zp {
        let zf = l.op(Op::Cast { to: DType::F64 }, &[z])?;
        q = l.bin(B::Add, q, zf)?;
    }
    let q = l.bin_s(B::Max, q, lo)?;
    let q = l.bin_s(B::Min, q, hi)?;
    let _ = o;
    Ok(vec![Val::T(l.op(Op::Cast { to: out_dt }, &[q])?)])
}

/// Einsum without repeated letters in one operand: operands are aligned on the union of
/// their letters, multiplied with broadcasting, summed over the letters the output drops.
fn einsum(l: &mut L) -> R<Vec<Val>> {
    let n = l.n;
    let eq: String = astr(n, "equation")
        .ok_or("equation is required")?
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    let (lhs, rhs) = match eq.split_once("->") {
        Some((a, b)) => (a.to_string(), Some(b.to_string())),
        None => (eq.clone(), None),
    };
    let mut ops: Vec<ValueId> = (0..n.input.len()).map(|k| l.t(k)).collect::<R<_>>()?;
    let mut specs: Vec<Vec<char>> = lhs.split(',').map(|s| s.chars().collect()).collect();
    if specs.len() != ops.len() {
        return Err(format!("{} operands for {} inputs", specs.len(), ops.len()));
    }
    // Expand "..." into fresh capital letters, right-aligned across operands.
    let ell_rank = specs
        .iter()
        .zip(&ops)
        .filter(|(s, _)| s.contains(&'.'))
        .map(|(s, &v)| l.rank(v) + 3 - s.len())
        .max()
        .unwrap_or(0);
    let fresh: Vec<char> = ('A'..='Z').take(ell_rank).collect();
    for (s, &v) in specs.iter_mut().zip(&ops) {
        if let Some(p) = s.iter().collect::<String>().find("...") {
            let k = l.rank(v) + 3 - s.len();
            let mut e = s[..p].to_vec();
            e.extend_from_slice(&fresh[ell_rank - k..]);
            e.extend_from_slice(&s[p + 3..]);
            *s = e;
        }
    }
    for (s, &v) in specs.iter().zip(&ops) {
        if s.len() != l.rank(v) {
            return Err(format!(
                "operand `{}` does not match rank {}",
                s.iter().collect::<String>(),
                l.rank(v)
            ));
        }
        let mut seen = std::collections::HashSet::new();
        if s.iter().any(|c| !seen.insert(*c)) {
            return Err(
                "a letter repeated within one operand (a diagonal) is not supported".into(),
            );
        }
    }
    let out: Vec<char> = match rhs {
        Some(r) => {
            let r = r.replace("...", &fresh.iter().collect::<String>());
            r.chars().collect()
        }
        None => {
            // Implicit output: the ellipsis letters, then letters used once, alphabetically.
            let mut counts = std::collections::BTreeMap::new();
            for s in &specs {
                for c in s {
                    *counts.entry(*c).or_insert(0) += 1;
                }
            }
            let mut o: Vec<char> = fresh.clone();
            o.extend(
                counts
                    .iter()
                    .filter(|(c, &k)| k == 1 && !fresh.contains(c))
                    .map(|(c, _)| *c),
            );
            o
        }
    };
    let mut all: Vec<char> = out.clone();
    for s in &specs {
        for c in s {
            if !all.contains(c) {
                all.push(*c);
            }
        }
    }
    // Each operand to the order of `all`, with size-1 dims for missing letters.
    for (s, v) in specs.iter().zip(ops.iter_mut()) {
        let present: Vec<char> = all.iter().filter(|c| s.contains(c)).copied().collect();
        let perm: Vec<usize> = present
            .iter()
            .map(|c| s.iter().position(|x| x == c).unwrap())
            .collect();
        if perm.iter().enumerate().any(|(i, &p)| i != p) {
            *v = l.op(Op::Transpose { perm }, &[*v])?;
        }
        let d = l.dims(*v);
        let mut it = d.into_iter();
        let full: Vec<Dim> = all
            .iter()
            .map(|c| {
                if s.contains(c) {
                    it.next().unwrap()
                } else {
                    Dim::Known(1)
                }
            })
            .collect();
        *v = l.reshape_to(*v, &full)?;
    }
    let mut acc = ops[0];
    for &v in &ops[1..] {
        acc = l.bin(B::Mul, acc, v)?;
    }
    let drop: Vec<usize> = (out.len()..all.len()).collect();
    if !drop.is_empty() {
        acc = l.reduce(ReduceKind::Sum, drop, false, acc)?;
    }
    Ok(vec![Val::T(acc)])
}

/// Unique on a compile-time constant (its output shape depends on the data).
fn unique(l: &mut L) -> R<Vec<Val>> {
    let n = l.n;
    let o = l.o;
    let t = l.konst_req(0, "input (its distinct values fix the output shape)")?;
    if attr(n, "axis").is_some() {
        return Err("Unique along an axis is not supported".into());
    }
    let sorted = ai(n, "sorted", 1) != 0;
    let v = t.to_f64_vec();
    let mut firsts: Vec<usize> = Vec::new();
    let mut inverse = Vec::with_capacity(v.len());
    for (i, &x) in v.iter().enumerate() {
        match firsts
            .iter()
            .position(|&f| v[f] == x || (v[f].is_nan() && x.is_nan()))
        {
            Some(p) => inverse.push(p),
            None => {
                firsts.push(i);
                inverse.push(firsts.len() - 1);
            }
        }
    }
    let mut order: Vec<usize> = (0..firsts.len()).collect();
    if sorted {
        order.sort_by(|&a, &b| {
            v[firsts[a]]
                .partial_cmp(&v[firsts[b]])
                .unwrap_or(std::cmp::Ordering::Equal)
        });
    }
    let mut rank_of = vec![0usize; firsts.len()];
    for (r, &u) in order.iter().enumerate() {
        rank_of[u] = r;
    }
    let k = firsts.len();
    let y: Vec<f64> = order.iter().map(|&u| v[firsts[u]]).collect();
    let idx: Vec<i64> = order.iter().map(|&u| firsts[u] as i64).collect();
    let inv: Vec<i64> = inverse.iter().map(|&u| rank_of[u] as i64).collect();
    let mut counts = vec![0i64; k];
    for &u in &inv {
        counts[u as usize] += 1;
    }
    let yt = if t.dtype().is_float() {
        Tensor::from_f64_values(t.dtype(), vec![k], &y)
    } else {
        Tensor::from_i64_values(
            t.dtype(),
            vec![k],
            &y.iter().map(|&f| f as i64).collect::<Vec<_>>(),
        )
    }
    .map_err(|e| e.0)?;
    let mk = |l: &mut L, v: Vec<i64>| -> R<Val> {
        let len = v.len();
        Ok(Val::T(l.cx.literal(
            Tensor::from_i64_values(DType::I64, vec![len], &v).map_err(|e| e.0)?,
            o,
        )))
    };
    Ok(vec![
        Val::T(l.cx.literal(yt, o)),
        mk(l, idx)?,
        mk(l, inv)?,
        mk(l, counts)?,
    ])
}

/// ONNX Resize (and the older Upsample): output sizes and scales fixed at import.
fn resize(l: &mut L) -> R<Vec<Val>> {
    let n = l.n;
    let opset = l.cx.opset;
    let x = l.t(0)?;
    let d = l.dims(x);
    let r = d.len();
    let upsample = n.op_type == "Upsample";
    let axes: Vec<usize> = match aints(n, "axes") {
        Some(a) => a.iter().map(|&v| norm_axis(v, r)).collect::<R<_>>()?,
        None => (0..r).collect(),
    };
    let (scales_in, sizes_in, roi_in) = if upsample {
        let s = if opset >= 9 {
            l.konst_req(1, "scales")?.to_f64_vec()
        } else {
            attr(n, "scales")
                .map(|a| a.floats.iter().map(|&f| f as f64).collect())
                .ok_or("scales is required")?
        };
        (Some(s), None, None)
    } else if opset < 11 {
        (Some(l.konst_req(1, "scales")?.to_f64_vec()), None, None)
    } else {
        let roi = if l.has(1) {
            Some(l.konst_req(1, "roi")?.to_f64_vec()).filter(|v| !v.is_empty())
        } else {
            None
        };
        let scales = if l.has(2) {
            Some(l.konst_req(2, "scales")?.to_f64_vec()).filter(|v| !v.is_empty())
        } else {
            None
        };
        let sizes = if l.has(3) {
            Some(l.konst_req(3, "sizes")?.to_i64_vec()).filter(|v| !v.is_empty())
        } else {
            None
        };
        (scales, sizes, roi)
    };
    let known_in = |i: usize| d[i].known();
    let mut scales = vec![1.0f64; r];
    let mut sizes: Vec<Dim> = d.clone();
    match (scales_in, sizes_in) {
        (_, Some(sz)) => {
            if sz.len() != axes.len() {
                return Err(format!("{} sizes for {} axes", sz.len(), axes.len()));
            }
            for (k, &a) in axes.iter().enumerate() {
                let inw = known_in(a).ok_or("resizing a symbolic dim")? as f64;
                scales[a] = sz[k] as f64 / inw;
                sizes[a] = Dim::Known(sz[k].max(0) as usize);
            }
            let policy = astr(n, "keep_aspect_ratio_policy").unwrap_or_else(|| "stretch".into());
            if policy != "stretch" {
                let pick = axes.iter().map(|&a| scales[a]);
                let s = if policy == "not_larger" {
                    pick.fold(f64::INFINITY, f64::min)
                } else {
                    pick.fold(f64::NEG_INFINITY, f64::max)
                };
                for &a in &axes {
                    scales[a] = s;
                    sizes[a] = Dim::Known((s * known_in(a).unwrap_or(0) as f64 + 0.5) as usize);
                }
            }
        }
        (Some(sc), None) => {
            if sc.len() != axes.len() {
                return Err(format!("{} scales for {} axes", sc.len(), axes.len()));
            }
            for (k, &a) in axes.iter().enumerate() {
                scales[a] = sc[k];
                if (sc[k] - 1.0).abs() > 0.0 {
                    let inw = known_in(a).ok_or("resizing a symbolic dim")?;
                    sizes[a] = Dim::Known((sc[k] * inw as f64) as usize);
                }
            }
        }
        (None, None) => return Err("either scales or sizes is required".into()),
    }
    let mut roi = vec![0.0; r];
    roi.extend(vec![1.0; r]);
    if let Some(rv) = roi_in {
        let k = axes.len();
        if rv.len() == 2 * k {
            for (i, &a) in axes.iter().enumerate() {
                roi[a] = rv[i];
                roi[a + r] = rv[i + k];
            }
        }
    }
    let mode = astr(n, "mode").unwrap_or_else(|| "nearest".into());
    let legacy = upsample || opset < 11;
    let (coord, nearest_mode) = if legacy {
        ("asymmetric".to_string(), "floor".to_string())
    } else {
        (
            astr(n, "coordinate_transformation_mode").unwrap_or_else(|| "half_pixel".into()),
            astr(n, "nearest_mode").unwrap_or_else(|| "round_prefer_floor".into()),
        )
    };
    let mode = if mode == "bilinear" || mode == "trilinear" {
        "linear".to_string()
    } else {
        mode
    };
    if !["nearest", "linear", "cubic"].contains(&mode.as_str()) {
        return Err(format!("mode '{mode}' is not supported"));
    }
    if !forgec_ir::COORD_MODES.contains(&coord.as_str())
        || !forgec_ir::NEAREST_MODES.contains(&nearest_mode.as_str())
    {
        return Err(format!(
            "coordinate mode '{coord}' / nearest mode '{nearest_mode}' is not supported"
        ));
    }
    let antialias = ai(n, "antialias", 0) != 0;
    if antialias && mode == "nearest" {
        return Err("antialias with nearest is not defined".into());
    }
    let attrs = forgec_ir::ResizeAttrs {
        sizes,
        scales,
        mode,
        coord,
        nearest_mode,
        cubic_a: af(n, "cubic_coeff_a", -0.75),
        exclude_outside: ai(n, "exclude_outside", 0) != 0,
        extrapolation: af(n, "extrapolation_value", 0.0),
        antialias,
        roi,
    };
    Ok(vec![Val::T(l.op(Op::Resize(attrs), &[x])?)])
}

/// ONNX Attention (opset 23+), decomposed the way the reference computes it.
fn attention(l: &mut L) -> R<Vec<Val>> {
    let n = l.n;
    let o = l.o;
    let (mut q, mut k, mut v) = (l.t(0)?, l.t(1)?, l.t(2)?);
    let dt = l.cx.ty(q).dtype;
    let rank = l.rank(q);
    let three_d = rank == 3;
    let known = |d: &Dim, what: &str| d.known().ok_or_else(|| format!("the {what} must be known"));
    if three_d {
        let qh = ai(n, "q_num_heads", 0) as usize;
        let kvh = ai(n, "kv_num_heads", 0) as usize;
        if qh == 0 || kvh == 0 {
            return Err("3-D inputs need q_num_heads and kv_num_heads".into());
        }
        let split = |l: &mut L, x: ValueId, heads: usize| -> R<ValueId> {
            let d = l.dims(x);
            let hidden = known(&d[2], "hidden size")?;
            let r = l.reshape_to(
                x,
                &[
                    d[0].clone(),
                    d[1].clone(),
                    Dim::Known(heads),
                    Dim::Known(hidden / heads),
                ],
            )?;
            l.op(
                Op::Transpose {
                    perm: vec![0, 2, 1, 3],
                },
                &[r],
            )
        };
        q = split(l, q, qh)?;
        k = split(l, k, kvh)?;
        v = split(l, v, kvh)?;
    } else if rank != 4 {
        return Err(format!("Q must have rank 3 or 4, got {rank}"));
    }
    let head = known(&l.dims(q)[3], "head size")?;
    let scale = attr(n, "scale")
        .map(|a| a.f as f64)
        .unwrap_or(1.0 / (head as f64).sqrt());
    // The reference scales Q and K^T by sqrt(scale), rounded to the input type.
    let s = Tensor::from_f64_values(dt, vec![], &[scale.sqrt()]).map_err(|e| e.0)?;
    let s = l.cx.literal(s, o);
    let past_len = if l.has(4) {
        let pk = l.t(4)?;
        let pv = l.t(5)?;
        let pl = known(&l.dims(pk)[2], "past sequence length")?;
        k = l.op(Op::Concat { axis: 2 }, &[pk, k])?;
        v = l.op(Op::Concat { axis: 2 }, &[pv, v])?;
        Some(pl)
    } else {
        None
    };
    let (present_k, present_v) = (k, v);
    let q_len = known(&l.dims(q)[2], "query sequence length")?;
    let kv_len = known(&l.dims(k)[2], "key sequence length")?;
    let neg_inf = |l: &mut L| {
        let t = Tensor::from_f64_values(dt, vec![], &[f64::NEG_INFINITY]).expect("scalar");
        l.cx.literal(t, o)
    };
    let zero = |l: &mut L| {
        let t = Tensor::from_f64_values(dt, vec![], &[0.0]).expect("scalar");
        l.cx.literal(t, o)
    };
    // The mask, padded to the key length (-inf, or false for a boolean mask).
    let mut mask = if l.has(3) { Some(l.t(3)?) } else { None };
    if let Some(m) = mask {
        let md = l.dims(m);
        let last = known(&md[md.len() - 1], "mask length")?;
        if last < kv_len {
            let mut pads = vec![(0, 0); md.len()];
            pads[md.len() - 1] = (0, kv_len - last);
            let value = if l.cx.ty(m).dtype == DType::Bool {
                0.0
            } else {
                f64::NEG_INFINITY
            };
            mask = Some(l.op(
                Op::Pad {
                    pads,
                    mode: PadMode::Constant,
                    value,
                },
                &[m],
            )?);
        }
    }
    let mask_bias = |l: &mut L, m: ValueId| -> R<ValueId> {
        if l.cx.ty(m).dtype == DType::Bool {
            let (z, ni) = (zero(l), neg_inf(l));
            l.select(m, z, ni)
        } else {
            Ok(m)
        }
    };
    let nonpad = if l.has(6) {
        Some(l.konst_req(6, "nonpad_kv_seqlen")?.to_i64_vec())
    } else {
        None
    };
    // A (batch?, q, kv) grid of 0 / -inf from a predicate on (batch, query row, key column).
    let grid =
        |l: &mut L, batches: Option<&[i64]>, f: &dyn Fn(i64, i64, i64) -> bool| -> R<ValueId> {
            let nb = batches.map(|b| b.len()).unwrap_or(1);
            let mut vals = Vec::with_capacity(nb * q_len * kv_len);
            for b in 0..nb {
                let off = batches.map(|bs| bs[b]).unwrap_or(0);
                for i in 0..q_len as i64 {
                    for j in 0..kv_len as i64 {
                        vals.push(if f(off, i, j) { 0.0 } else { f64::NEG_INFINITY });
                    }
                }
            }
            let shape = if batches.is_some() {
                vec![nb, 1, q_len, kv_len]
            } else {
                vec![q_len, kv_len]
            };
            let t = Tensor::from_f64_values(dt, shape, &vals).map_err(|e| e.0)?;
            Ok(l.cx.literal(t, o))
        };
    let per_batch: Option<Vec<i64>> = match (&nonpad, past_len) {
        (Some(np), None) => Some(np.iter().map(|&x| x - q_len as i64).collect()),
        _ => None,
    };
    let offset = past_len.unwrap_or(0) as i64;
    let mut bias: Option<ValueId> = None;
    let add_bias = |l: &mut L, bias: Option<ValueId>, b: ValueId| -> R<Option<ValueId>> {
        Ok(Some(match bias {
            None => b,
            Some(a) => l.bin(B::Add, a, b)?,
        }))
    };
    if ai(n, "is_causal", 0) != 0 {
        let base = match mask {
            Some(m) => Some(mask_bias(l, m)?),
            None => None,
        };
        let causal = match &per_batch {
            Some(pb) => grid(l, Some(pb), &|off, i, j| j <= i + off)?,
            None => grid(l, None, &|_, i, j| j <= i + offset)?,
        };
        bias = add_bias(l, base, causal)?;
    } else if let Some(m) = mask {
        let mb = mask_bias(l, m)?;
        bias = add_bias(l, None, mb)?;
    }
    let (left, right) = (
        ai(n, "left_window_size", -1),
        ai(n, "right_window_size", -1),
    );
    if left >= 0 || right >= 0 {
        let win = |off: i64, i: i64, j: i64| {
            let d = i + off - j;
            (left < 0 || d <= left) && (right < 0 || -d <= right)
        };
        let w = match &per_batch {
            Some(pb) => grid(l, Some(pb), &win)?,
            None => grid(l, None, &|_, i, j| win(offset, i, j))?,
        };
        bias = add_bias(l, bias, w)?;
    }
    if let Some(np) = &nonpad {
        let mut vals = Vec::new();
        for &len in np {
            for j in 0..kv_len as i64 {
                vals.push(if j < len { 0.0 } else { f64::NEG_INFINITY });
            }
        }
        let t =
            Tensor::from_f64_values(dt, vec![np.len(), 1, 1, kv_len], &vals).map_err(|e| e.0)?;
        let p = l.cx.literal(t, o);
        bias = add_bias(l, bias, p)?;
    }
    // Grouped-query attention: each KV head serves q_heads / kv_heads query heads.
    let (qh, kvh) = (
        known(&l.dims(q)[1], "head count")?,
        known(&l.dims(k)[1], "head count")?,
    );
    if qh != kvh && kvh > 0 && qh % kvh == 0 {
        let rep = qh / kvh;
        let repeat = |l: &mut L, x: ValueId| -> R<ValueId> {
            let d = l.dims(x);
            let e = l.reshape_to(
                x,
                &[
                    d[0].clone(),
                    d[1].clone(),
                    Dim::Known(1),
                    d[2].clone(),
                    d[3].clone(),
                ],
            )?;
            let b = l.op(
                Op::Broadcast {
                    shape: vec![
                        Dim::Known(1),
                        Dim::Known(1),
                        Dim::Known(rep),
                        Dim::Known(1),
                        Dim::Known(1),
                    ],
                },
                &[e],
            )?;
            l.reshape_to(
                b,
                &[d[0].clone(), Dim::Known(qh), d[2].clone(), d[3].clone()],
            )
        };
        k = repeat(l, k)?;
        v = repeat(l, v)?;
    }
    let qs = l.bin(B::Mul, q, s)?;
    let kt = l.op(
        Op::Transpose {
            perm: vec![0, 1, 3, 2],
        },
        &[k],
    )?;
    let ks = l.bin(B::Mul, kt, s)?;
    let mut qk = l.op(Op::MatMul, &[qs, ks])?;
    let softcap = af(n, "softcap", 0.0);
    if softcap > 0.0 {
        let d = l.bin_s(B::Div, qk, softcap)?;
        let t = l.un(U::Tanh, d)?;
        qk = l.bin_s(B::Mul, t, softcap)?;
    }
    let with_bias = match bias {
        Some(b) => l.bin(B::Add, qk, b)?,
        None => qk,
    };
    let mode = ai(n, "qk_matmul_output_mode", 0);
    let mut logits = with_bias;
    let sp = attr(n, "softmax_precision")
        .map(|a| proto::dtype_of(a.i as i32))
        .transpose()?;
    if let Some(p) = sp.filter(|p| *p != dt) {
        logits = l.op(Op::Cast { to: p }, &[logits])?;
    }
    // The reference's softmax, step by step (each step rounds to the working type, which
    // matters for f16 / bf16): a row that is all -inf uses 0 as its max and 1 as its sum.
    let mx = l.reduce(ReduceKind::Max, vec![3], true, logits)?;
    let masked_row = l.bin_s(B::Eq, mx, f64::NEG_INFINITY)?;
    let z = l.scalar(0.0, mx);
    let safe = l.select(masked_row, z, mx)?;
    let shifted = l.bin(B::Sub, logits, safe)?;
    let e = l.un(U::Exp, shifted)?;
    let sum = l.reduce(ReduceKind::Sum, vec![3], true, e)?;
    let empty = l.bin_s(B::Eq, sum, 0.0)?;
    let one_ = l.scalar(1.0, sum);
    let sum = l.select(empty, one_, sum)?;
    let mut probs = l.bin(B::Div, e, sum)?;
    if let Some(b) = bias {
        // Rows whose every key is masked give zeros, not NaN.
        let mx = l.reduce(ReduceKind::Max, vec![l.rank(b) - 1], true, b)?;
        let all_masked = l.bin_s(B::Eq, mx, f64::NEG_INFINITY)?;
        let z = l.scalar(0.0, probs);
        probs = l.select(all_masked, z, probs)?;
    }
    if l.cx.ty(probs).dtype != dt {
        probs = l.op(Op::Cast { to: dt }, &[probs])?;
    }
    let qk_out = match mode {
        2 => with_bias,
        3 => probs,
        _ => qk,
    };
    let mut y = l.op(Op::MatMul, &[probs, v])?;
    if three_d {
        let t = l.op(
            Op::Transpose {
                perm: vec![0, 2, 1, 3],
            },
            &[y],
        )?;
        let d = l.dims(t);
        let hv = known(&d[2], "heads")? * known(&d[3], "value head size")?;
        y = l.reshape_to(t, &[d[0].clone(), d[1].clone(), Dim::Known(hv)])?;
    }
    Ok(vec![
        Val::T(y),
        Val::T(present_k),
        Val::T(present_v),
        Val::T(qk_out),
    ])
}

/// The negative log-likelihood of `x` (N, C, d...) at the class indices `t` (N, d...), with
/// optional class weights, `ignore_index` and `reduction`, as ONNX defines it.
fn nll(l: &mut L, x: ValueId, t: ValueId, w: Option<ValueId>) -> R<ValueId> {
    let n = l.n;
    let reduction = astr(n, "reduction").unwrap_or_else(|| "mean".into());
    let t = l.op(Op::Cast { to: DType::I64 }, &[t])?;
    let ignore = attr(n, "ignore_index").map(|a| a.i);
    // Ignored targets read class 0 and weigh nothing.
    let (t_safe, keep) = match ignore {
        Some(ig) => {
            let keep = l.bin_s(B::Ne, t, ig as f64)?;
            let zero = l.scalar(0.0, t);
            (l.select(keep, t, zero)?, Some(keep))
        }
        None => (t, None),
    };
    let mut td = l.dims(t_safe);
    td.insert(1, Dim::Known(1));
    let idx = l.reshape_to(t_safe, &td)?;
    let picked = l.op(Op::GatherElements { axis: 1 }, &[x, idx])?;
    let mut pd = l.dims(picked);
    pd.remove(1);
    let picked = l.reshape_to(picked, &pd)?;
    let mut loss = l.un(U::Neg, picked)?;
    let mut weight = match w {
        Some(w) => Some(l.op(Op::Gather { axis: 0 }, &[w, t_safe])?),
        None => None,
    };
    if let Some(keep) = keep {
        let kf = l.op(
            Op::Cast {
                to: l.cx.ty(x).dtype,
            },
            &[keep],
        )?;
        weight = Some(match weight {
            Some(wt) => l.bin(B::Mul, wt, kf)?,
            None => kf,
        });
    }
    if let Some(wt) = weight {
        loss = l.bin(B::Mul, loss, wt)?;
    }
    let r = l.rank(loss);
    let all: Vec<usize> = (0..r).collect();
    Ok(match reduction.as_str() {
        "none" => loss,
        "sum" => l.reduce(ReduceKind::Sum, all, false, loss)?,
        "mean" => match weight {
            None => l.reduce(ReduceKind::Mean, all, false, loss)?,
            Some(wt) => {
                let s = l.reduce(ReduceKind::Sum, all.clone(), false, loss)?;
                let ws = l.reduce(ReduceKind::Sum, all, false, wt)?;
                l.bin(B::Div, s, ws)?
            }
        },
        other => return Err(format!("reduction '{other}' is not supported")),
    })
}

/// The one value of a scalar (or one-element) constant input.
fn scalar(t: &Tensor, what: &str) -> R<f64> {
    match t.to_f64_vec()[..] {
        [v] => Ok(v),
        ref v => Err(format!(
            "{what} must be a single value, got {} values",
            v.len()
        )),
    }
}

fn conv(l: &mut L) -> R<Vec<Val>> {
    let n = l.n;
    let transpose = n.op_type == "ConvTranspose";
    let x = l.t(0)?;
    let w = l.t(1)?;
    let r = l.rank(x);
    if r < 3 {
        return Err(format!("the input must have rank 3 or more, got {r}"));
    }
    let ns = r - 2;
    let xd = l.dims(x);
    let wd = l.dims(w);
    if wd.len() != r {
        return Err(format!(
            "the weights must have the input's rank {r}, got rank {}",
            wd.len()
        ));
    }
    let kernel: Vec<usize> = match aints(n, "kernel_shape") {
        Some(k) => k.iter().map(|&v| v as usize).collect(),
        None => wd[2..]
            .iter()
            .map(|d| {
                d.known()
                    .ok_or_else(|| "the kernel shape must be known".to_string())
            })
            .collect::<R<_>>()?,
    };
    let strides: Vec<usize> = aints(n, "strides")
        .map(|v| v.iter().map(|&s| s as usize).collect())
        .unwrap_or(vec![1; ns]);
    let dil: Vec<usize> = aints(n, "dilations")
        .map(|v| v.iter().map(|&s| s as usize).collect())
        .unwrap_or(vec![1; ns]);
    let group = ai(n, "group", 1) as usize;
    if kernel.len() != ns || strides.len() != ns || dil.len() != ns {
        return Err(
            "kernel_shape, strides and dilations must have one entry per spatial dim".into(),
        );
    }
    let auto = astr(n, "auto_pad").unwrap_or_else(|| "NOTSET".into());
    let spatial: Vec<usize> = xd[2..]
        .iter()
        .map(|d| {
            d.known()
                .ok_or_else(|| "spatial dims must be known".to_string())
        })
        .collect::<R<_>>()?;
    let explicit: Vec<i64> = aints(n, "pads").unwrap_or(vec![0; 2 * ns]);
    if explicit.len() != 2 * ns {
        return Err(format!(
            "pads has {} entries for {ns} spatial dims",
            explicit.len()
        ));
    }
    let mut pads: Vec<(usize, usize)> = (0..ns)
        .map(|i| {
            (
                explicit[i].max(0) as usize,
                explicit[i + ns].max(0) as usize,
            )
        })
        .collect();
    let mut opad = vec![0usize; ns];
    if !transpose {
        if auto == "SAME_UPPER" || auto == "SAME_LOWER" {
            for i in 0..ns {
                let out = spatial[i].div_ceil(strides[i]);
                let eff = (kernel[i] - 1) * dil[i] + 1;
                let total = ((out - 1) * strides[i] + eff).saturating_sub(spatial[i]);
                let small = total / 2;
                pads[i] = if auto == "SAME_UPPER" {
                    (small, total - small)
                } else {
                    (total - small, small)
                };
            }
        } else if auto == "VALID" {
            pads = vec![(0, 0); ns];
        }
    } else {
        let op_attr: Vec<usize> = aints(n, "output_padding")
            .map(|v| v.iter().map(|&s| s as usize).collect())
            .unwrap_or(vec![0; ns]);
        let out_shape = aints(n, "output_shape");
        for i in 0..ns {
            let eff = (kernel[i] - 1) * dil[i] + 1;
            let full = strides[i] * (spatial[i] - 1) + op_attr[i] + eff;
            let target = match &out_shape {
                Some(s) => Some(
                    *s.get(i + s.len().saturating_sub(ns))
                        .ok_or("bad output_shape")? as usize,
                ),
                None if auto == "SAME_UPPER" || auto == "SAME_LOWER" => {
                    Some(spatial[i] * strides[i])
                }
                None => None,
            };
            match target {
                Some(t) => {
                    let total = full as i64 - t as i64;
                    if total >= 0 {
                        let total = total as usize;
                        let half = total / 2;
                        pads[i] = if auto == "SAME_UPPER" {
                            (half, total - half)
                        } else {
                            (total - half, half)
                        };
                        opad[i] = op_attr[i];
                        // The output padding is part of `full`: keep it in the op, add it back to the end pad.
                        pads[i].1 += 0;
                    } else {
                        pads[i] = (0, 0);
                        opad[i] = op_attr[i] + (-total) as usize;
                    }
                }
                None => opad[i] = op_attr[i],
            }
        }
    }
    let c = ConvAttrs {
        strides,
        dilations: dil,
        pads,
        groups: group,
        layout: Layout::ChannelsFirst,
        output_padding: if transpose { opad } else { vec![] },
    };
    let mut y = l.op(
        if transpose {
            Op::ConvTranspose(c)
        } else {
            Op::Conv(c)
        },
        &[x, w],
    )?;
    if l.has(2) {
        let b = l.t(2)?;
        let mut shape = vec![l.dims(b)[0].clone()];
        shape.extend(std::iter::repeat_n(Dim::Known(1), ns));
        let b = l.reshape_to(b, &shape)?;
        y = l.bin(B::Add, y, b)?;
    }
    Ok(vec![Val::T(y)])
}

fn pool(l: &mut L) -> R<Vec<Val>> {
    let n = l.n;
    if n.output.get(1).is_some_and(|s| l.cx.is_used(s)) {
        return Err("the Indices output of MaxPool is not supported".into());
    }
    let x = l.t(0)?;
    let r = l.rank(x);
    let ns = r
        .checked_sub(2)
        .filter(|&v| v > 0)
        .ok_or("the input must have rank 3 or more")?;
    let window: Vec<usize> = aints(n, "kernel_shape")
        .ok_or("kernel_shape is required")?
        .iter()
        .map(|&v| v as usize)
        .collect();
    let strides: Vec<usize> = aints(n, "strides")
        .map(|v| v.iter().map(|&s| s as usize).collect())
        .unwrap_or(vec![1; ns]);
    let dilations: Vec<usize> = aints(n, "dilations")
        .map(|v| v.iter().map(|&s| s.max(1) as usize).collect())
        .unwrap_or(vec![1; ns]);
    if dilations.len() != ns {
        return Err("dilations must have one entry per spatial dim".into());
    }
    if window.len() != ns || strides.len() != ns {
        return Err("kernel_shape and strides must have one entry per spatial dim".into());
    }
    if window.contains(&0) {
        return Err("kernel_shape entries must be at least 1".into());
    }
    // The window's extent with its dilation.
    let eff: Vec<usize> = (0..ns)
        .map(|i| (window[i] - 1) * dilations[i] + 1)
        .collect();
    let xd = l.dims(x);
    let spatial: Vec<usize> = xd[2..]
        .iter()
        .map(|d| {
            d.known()
                .ok_or_else(|| "spatial dims must be known".to_string())
        })
        .collect::<R<_>>()?;
    let auto = astr(n, "auto_pad").unwrap_or_else(|| "NOTSET".into());
    let explicit: Vec<i64> = aints(n, "pads").unwrap_or(vec![0; 2 * ns]);
    if explicit.len() != 2 * ns {
        return Err(format!(
            "pads has {} entries for {ns} spatial dims",
            explicit.len()
        ));
    }
    let mut pads: Vec<(usize, usize)> = (0..ns)
        .map(|i| {
            (
                explicit[i].max(0) as usize,
                explicit[i + ns].max(0) as usize,
            )
        })
        .collect();
    let ceil = ai(n, "ceil_mode", 0) != 0;
    let count_include_pad = ai(n, "count_include_pad", 0) != 0;
    for i in 0..ns {
        if auto == "SAME_UPPER" || auto == "SAME_LOWER" {
            let out = spatial[i].div_ceil(strides[i]);
            let total = ((out - 1) * strides[i] + eff[i]).saturating_sub(spatial[i]);
            let small = total / 2;
            pads[i] = if auto == "SAME_UPPER" {
                (small, total - small)
            } else {
                (total - small, small)
            };
        } else if auto == "VALID" {
            pads[i] = (0, 0);
        }
        if ceil {
            // Extra end padding so that the last, partial window counts; a window may not
            // start inside the end padding.
            let padded = spatial[i] + pads[i].0 + pads[i].1;
            if padded >= eff[i] {
                let mut out = (padded - eff[i]).div_ceil(strides[i]) + 1;
                if (out - 1) * strides[i] >= spatial[i] + pads[i].0 {
                    out -= 1;
                }
                let need = (out - 1) * strides[i] + eff[i];
                if need > padded {
                    if count_include_pad && n.op_type == "AveragePool" {
                        return Err("ceil_mode with count_include_pad is not supported".into());
                    }
                    pads[i].1 += need - padded;
                }
            }
        }
    }
    let kind = if n.op_type == "MaxPool" {
        PoolKind::Max
    } else {
        PoolKind::Avg
    };
    let p = PoolAttrs {
        kind,
        window,
        strides,
        pads,
        layout: Layout::ChannelsFirst,
        count_include_pad,
        dilations,
    };
    Ok(vec![Val::T(l.op(Op::Pool(p), &[x])?)])
}

fn reduce(l: &mut L) -> R<Vec<Val>> {
    let n = l.n;
    let opset = l.cx.opset;
    let x = l.t(0)?;
    let r = l.rank(x);
    let since = if n.op_type == "ReduceSum" { 13 } else { 18 };
    let axes = l.axes("axes", 1, since)?;
    let keepdims = ai(n, "keepdims", 1) != 0;
    let noop = opset >= since && ai(n, "noop_with_empty_axes", 0) != 0;
    let axes: Vec<usize> = match axes {
        Some(a) if !a.is_empty() => {
            let mut v: Vec<usize> = a.iter().map(|&a| norm_axis(a, r)).collect::<R<_>>()?;
            v.sort();
            v.dedup();
            v
        }
        _ if noop => return Ok(vec![Val::T(x)]),
        _ => (0..r).collect(),
    };
    let red = |l: &mut L, kind, v: ValueId| l.reduce(kind, axes.clone(), keepdims, v);
    let y = match n.op_type.as_str() {
        "ReduceSum" => red(l, ReduceKind::Sum, x)?,
        "ReduceMean" => red(l, ReduceKind::Mean, x)?,
        "ReduceMax" => red(l, ReduceKind::Max, x)?,
        "ReduceMin" => red(l, ReduceKind::Min, x)?,
        "ReduceProd" => red(l, ReduceKind::Prod, x)?,
        "ReduceL1" => {
            let a = l.un(U::Abs, x)?;
            red(l, ReduceKind::Sum, a)?
        }
        "ReduceL2" | "ReduceSumSquare" => {
            let sq = l.bin(B::Mul, x, x)?;
            let s = red(l, ReduceKind::Sum, sq)?;
            if n.op_type == "ReduceL2" {
                l.un(U::Sqrt, s)?
            } else {
                s
            }
        }
        "ReduceLogSum" => {
            let s = red(l, ReduceKind::Sum, x)?;
            l.un(U::Log, s)?
        }
        "ReduceLogSumExp" => {
            // max + log(sum(exp(x - max))), with the max kept for broadcasting.
            let m = l.reduce(ReduceKind::Max, axes.clone(), true, x)?;
            let d = l.bin(B::Sub, x, m)?;
            let e = l.un(U::Exp, d)?;
            let s = l.reduce(ReduceKind::Sum, axes.clone(), true, e)?;
            let lg = l.un(U::Log, s)?;
            let y = l.bin(B::Add, lg, m)?;
            if keepdims {
                y
            } else {
                let dims: Vec<Dim> = l
                    .dims(x)
                    .into_iter()
                    .enumerate()
                    .filter(|(i, _)| !axes.contains(i))
                    .map(|(_, d)| d)
                    .collect();
                l.reshape_to(y, &dims)?
            }
        }
        other => return Err(format!("op {other} is not supported")),
    };
    Ok(vec![Val::T(y)])
}

fn slice(l: &mut L) -> R<Vec<Val>> {
    let n = l.n;
    let (starts, ends, axes, steps) = if l.cx.opset < 10 {
        (
            aints(n, "starts").ok_or("starts is required")?,
            aints(n, "ends").ok_or("ends is required")?,
            aints(n, "axes"),
            None,
        )
    } else {
        (
            l.ints_input(1, "starts")?.ok_or("starts is required")?,
            l.ints_input(2, "ends")?.ok_or("ends is required")?,
            l.ints_input(3, "axes")?,
            l.ints_input(4, "steps")?,
        )
    };
    let k = starts.len();
    let steps = steps.unwrap_or(vec![1; k]);
    if let Val::Shape { dims, .. } = l.val(0)? {
        // Slicing a shape vector.
        let (s, c) = forgec_ir::infer::slice_range(dims.len(), starts[0], ends[0], steps[0])?;
        let picked: Vec<Dim> = (0..c)
            .map(|i| dims[(s + i as i64 * steps[0]) as usize].clone())
            .collect();
        return Ok(vec![Val::Shape {
            dims: picked,
            scalar: false,
        }]);
    }
    let x = l.t(0)?;
    let r = l.rank(x);
    let axes: Vec<usize> = match axes {
        Some(a) => a.iter().map(|&a| norm_axis(a, r)).collect::<R<_>>()?,
        None => (0..k).collect(),
    };
    if ends.len() != k || axes.len() != k || steps.len() != k {
        return Err("starts, ends, axes and steps must have the same length".into());
    }
    Ok(vec![Val::T(l.op(
        Op::Slice {
            axes,
            starts,
            ends,
            steps,
        },
        &[x],
    )?)])
}

fn pad(l: &mut L) -> R<Vec<Val>> {
    let n = l.n;
    let x = l.t(0)?;
    let r = l.rank(x);
    let mode = astr(n, "mode").unwrap_or_else(|| "constant".into());
    let mode = match mode.as_str() {
        "constant" => PadMode::Constant,
        "reflect" => PadMode::Reflect,
        "edge" => PadMode::Edge,
        other => return Err(format!("mode '{other}' is not supported")),
    };
    let (raw, value, axes) = if l.cx.opset < 11 {
        (
            aints(n, "pads").ok_or("pads is required")?,
            af(n, "value", 0.0),
            None,
        )
    } else {
        let p = l.ints_input(1, "pads")?.ok_or("pads is required")?;
        let v = if l.has(2) {
            l.konst_req(2, "constant_value")?
                .to_f64_vec()
                .first()
                .copied()
                .unwrap_or(0.0)
        } else {
            0.0
        };
        (p, v, l.ints_input(3, "axes")?)
    };
    let axes: Vec<usize> = match axes {
        Some(a) => a.iter().map(|&a| norm_axis(a, r)).collect::<R<_>>()?,
        None => (0..r).collect(),
    };
    let k = axes.len();
    if raw.len() != 2 * k {
        return Err(format!("{} pads for {k} axes", raw.len()));
    }
    let mut pads = vec![(0usize, 0usize); r];
    let mut crop = Vec::new();
    for (i, &a) in axes.iter().enumerate() {
        let (b, e) = (raw[i], raw[i + k]);
        pads[a] = (b.max(0) as usize, e.max(0) as usize);
        if b < 0 || e < 0 {
            crop.push((a, (-b).max(0), (-e).max(0)));
        }
    }
    let mut y = l.op(Op::Pad { pads, mode, value }, &[x])?;
    if !crop.is_empty() {
        // Negative pads crop.
        let d = l.dims(y);
        let mut axes = vec![];
        let mut starts = vec![];
        let mut ends = vec![];
        for (a, b, e) in crop {
            let len = d[a].known().ok_or("cropping a symbolic dim")? as i64;
            axes.push(a);
            starts.push(b);
            ends.push(len - e);
        }
        let steps = vec![1; axes.len()];
        y = l.op(
            Op::Slice {
                axes,
                starts,
                ends,
                steps,
            },
            &[y],
        )?;
    }
    Ok(vec![Val::T(y)])
}

fn activation(name: &str) -> R<Activation> {
    Ok(match name.to_ascii_lowercase().as_str() {
        "sigmoid" => Activation::Sigmoid,
        "tanh" => Activation::Tanh,
        "relu" => Activation::Relu,
        other => return Err(format!("recurrent activation '{other}' is not supported")),
    })
}

/// ONNX LSTM / GRU / RNN with constant weights, converted to the IR's Keras-style layout.
fn recurrent(l: &mut L) -> R<Vec<Val>> {
    let n = l.n;
    let o = l.o;
    let cell = match n.op_type.as_str() {
        "LSTM" => RnnCell::Lstm,
        "GRU" => RnnCell::Gru,
        _ => RnnCell::Simple,
    };
    let h = ai(n, "hidden_size", 0) as usize;
    if h == 0 {
        return Err("hidden_size is required".into());
    }
    if attr(n, "clip").is_some() {
        return Err("clip is not supported".into());
    }
    if ai(n, "input_forget", 0) != 0 {
        return Err("input_forget is not supported".into());
    }
    if l.has(4) {
        return Err("sequence_lens is not supported".into());
    }
    let layout = ai(n, "layout", 0);
    // Initial states must be absent or zero.
    for k in [5usize, 6] {
        if l.has(k) {
            let zero = match l.val(k)? {
                Val::T(id) => {
                    let c =
                        l.cx.const_of(id)
                            .map(|t| t.to_f64_vec().iter().all(|&v| v == 0.0));
                    c.unwrap_or_else(|| is_broadcast_zero(l.cx, id))
                }
                Val::Shape { .. } => false,
            };
            if !zero {
                return Err("non-zero initial states are not supported".into());
            }
        }
    }
    if cell == RnnCell::Lstm && l.has(7) {
        return Err("peepholes are not supported".into());
    }
    let used: Vec<bool> = (0..3)
        .map(|k| n.output.get(k).is_some_and(|s| l.cx.is_used(s)))
        .collect();
    let used = |k: usize| used[k];
    if used(2) {
        return Err("the Y_c output is not supported".into());
    }
    let dirs = astr(n, "direction").unwrap_or_else(|| "forward".into());
    let nd = if dirs == "bidirectional" { 2 } else { 1 };
    let acts: Vec<String> = attr(n, "activations")
        .map(|a| {
            a.strings
                .iter()
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect()
        })
        .unwrap_or_default();
    let gates = cell.gates();
    let per_dir = if cell == RnnCell::Simple {
        1
    } else {
        if cell == RnnCell::Gru {
            2
        } else {
            3
        }
    };
    let w = l.konst_req(1, "W")?;
    let rr = l.konst_req(2, "R")?;
    let b = if l.has(3) {
        Some(l.konst_req(3, "B")?)
    } else {
        None
    };
    let x = l.t(0)?;
    let xs = if layout == 0 {
        l.op(
            Op::Transpose {
                perm: vec![1, 0, 2],
            },
            &[x],
        )?
    } else {
        x
    };
    let fin = l.dims(xs)[2]
        .known()
        .ok_or("the feature dim must be known")?;
    if w.shape() != [nd, gates * h, fin] || rr.shape() != [nd, gates * h, h] {
        return Err(format!(
            "W {:?} / R {:?} do not fit hidden_size {h}, {nd} direction(s), {fin} features",
            w.shape(),
            rr.shape()
        ));
    }
    let reset_after = cell == RnnCell::Gru && ai(n, "linear_before_reset", 0) != 0;
    let wv = w.to_f64_vec();
    let rv = rr.to_f64_vec();
    let bv = b
        .map(|t| t.to_f64_vec())
        .unwrap_or(vec![0.0; nd * 2 * gates * h]);
    // ONNX gate order -> Keras order: LSTM iofc -> ifco; GRU and RNN keep theirs.
    let order: Vec<usize> = match cell {
        RnnCell::Lstm => vec![0, 2, 3, 1],
        RnnCell::Gru => vec![0, 1, 2],
        RnnCell::Simple => vec![0],
    };
    let mut seq_outs = Vec::new();
    let mut last_outs = Vec::new();
    let want_y = used(0);
    let want_h = used(1);
    let dt = l.cx.ty(x).dtype;
    for d in 0..nd {
        let act = |i: usize, default: &str| {
            activation(
                acts.get(d * per_dir + i)
                    .map(|s| s.as_str())
                    .unwrap_or(default),
            )
        };
        let (ract, actv) = match cell {
            RnnCell::Simple => (Activation::Sigmoid, act(0, "Tanh")?),
            _ => (act(0, "Sigmoid")?, act(1, "Tanh")?),
        };
        if cell == RnnCell::Lstm && act(2, "Tanh")? != actv {
            return Err("LSTM with different cell and hidden activations is not supported".into());
        }
        // kernel [F, gates*H], recurrent [H, gates*H] in Keras gate order.
        let mut k = vec![0.0; fin * gates * h];
        let mut rk = vec![0.0; h * gates * h];
        for (kg, &og) in order.iter().enumerate() {
            for j in 0..h {
                for i in 0..fin {
                    k[i * gates * h + kg * h + j] = wv[(d * gates * h + og * h + j) * fin + i];
                }
                for i in 0..h {
                    rk[i * gates * h + kg * h + j] = rv[(d * gates * h + og * h + j) * h + i];
                }
            }
        }
        let base = d * 2 * gates * h;
        let reorder = |src: &[f64]| -> Vec<f64> {
            let mut out = vec![0.0; gates * h];
            for (kg, &og) in order.iter().enumerate() {
                out[kg * h..(kg + 1) * h].copy_from_slice(&src[og * h..(og + 1) * h]);
            }
            out
        };
        let wb = reorder(&bv[base..base + gates * h]);
        let rb = reorder(&bv[base + gates * h..base + 2 * gates * h]);
        let (bias, bshape) = if reset_after {
            ([wb, rb].concat(), vec![2, gates * h])
        } else {
            (
                wb.iter().zip(&rb).map(|(a, b)| a + b).collect(),
                vec![gates * h],
            )
        };
        let mk = |l: &mut L, v: &[f64], shape: Vec<usize>, what: &str| -> R<ValueId> {
            let t = Tensor::from_f64_values(dt, shape, v).map_err(|e| e.0)?;
            let name = format!("{}/{what}_{d}", o.name);
            Ok(l.cx
                .g
                .add_const(t, Some(forgec_ir::Weight { trainable: true }), &name, o))
        };
        let kv = mk(l, &k, vec![fin, gates * h], "kernel")?;
        let rkv = mk(l, &rk, vec![h, gates * h], "recurrent_kernel")?;
        let bvv = mk(l, &bias, bshape, "bias")?;
        let backwards = dirs == "reverse" || d == 1;
        let attrs = |seq: bool| RnnAttrs {
            cell,
            units: h,
            activation: actv,
            recurrent_activation: ract,
            return_sequences: seq,
            go_backwards: backwards,
            reset_after,
        };
        if want_y {
            let mut y = l.op(Op::Rnn(attrs(true)), &[xs, kv, rkv, bvv])?;
            if backwards {
                let t = l.dims(y)[1]
                    .known()
                    .ok_or("a reverse RNN's sequence output needs a known sequence length")?
                    as i64;
                y = l.op(
                    Op::Slice {
                        axes: vec![1],
                        starts: vec![t - 1],
                        ends: vec![-t - 1],
                        steps: vec![-1],
                    },
                    &[y],
                )?;
            }
            seq_outs.push(y);
        }
        if want_h {
            last_outs.push(l.op(Op::Rnn(attrs(false)), &[xs, kv, rkv, bvv])?);
        }
    }
    let mut outs = Vec::new();
    if want_y {
        // [B, T, H] per direction -> Y [T, D, B, H] (layout 0) or [B, T, D, H] (layout 1).
        let mut parts = Vec::new();
        for y in seq_outs {
            let d = l.dims(y);
            let y4 = l.reshape_to(
                y,
                &[d[0].clone(), d[1].clone(), Dim::Known(1), d[2].clone()],
            )?;
            parts.push(y4);
        }
        let y = if parts.len() == 1 {
            parts[0]
        } else {
            l.op(Op::Concat { axis: 2 }, &parts)?
        };
        let y = if layout == 0 {
            l.op(
                Op::Transpose {
                    perm: vec![1, 2, 0, 3],
                },
                &[y],
            )?
        } else {
            y
        };
        outs.push(Val::T(y));
    } else {
        outs.push(Val::T(x)); // placeholder for an unused output
    }
    if want_h {
        // [B, H] per direction -> Y_h [D, B, H] (layout 0) or [B, D, H] (layout 1).
        let mut parts = Vec::new();
        for y in last_outs {
            let d = l.dims(y);
            parts.push(l.reshape_to(y, &[d[0].clone(), Dim::Known(1), d[1].clone()])?);
        }
        let y = if parts.len() == 1 {
            parts[0]
        } else {
            l.op(Op::Concat { axis: 1 }, &parts)?
        };
        let y = if layout == 0 {
            l.op(
                Op::Transpose {
                    perm: vec![1, 0, 2],
                },
                &[y],
            )?
        } else {
            y
        };
        outs.push(Val::T(y));
    }
    Ok(outs)
}

/// Whether `v` is all zeros: a zero constant, or one reshaped, broadcast or cast
/// (tf2onnx's zero initial states: Expand(0, shape) then Unsqueeze).
fn is_broadcast_zero(cx: &Cx, v: ValueId) -> bool {
    if let Some(t) = cx.const_of(v) {
        return t.to_f64_vec().iter().all(|&x| x == 0.0);
    }
    cx.g.nodes
        .iter()
        .rev()
        .find(|node| node.outputs.contains(&v))
        .is_some_and(|node| {
            matches!(
                node.op,
                Op::Broadcast { .. } | Op::Reshape { .. } | Op::Transpose { .. } | Op::Cast { .. }
            ) && is_broadcast_zero(cx, node.inputs[0])
        })
}
