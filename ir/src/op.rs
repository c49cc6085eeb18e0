//! The op set. Each op is one idea at the level that linalg/tensor express well, and each has a
//! derivative (the autodiff pass will need one rule per op).

use crate::types::Dim;
use forgec_runtime::{DType, Tensor};
use std::collections::HashMap;

macro_rules! named_enum {
    ($(#[$m:meta])* $name:ident { $($v:ident = $s:literal),* $(,)? }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $name { $($v),* }
        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$v),*];
            pub fn name(self) -> &'static str { match self { $($name::$v => $s),* } }
            pub fn from_name(s: &str) -> Option<$name> {
                match s { $($s => Some($name::$v),)* _ => None }
            }
        }
    };
}

named_enum!(
    /// Elementwise unary ops.
    UnaryOp {
        Neg = "neg", Abs = "abs", Exp = "exp", Log = "log", Sqrt = "sqrt", Rsqrt = "rsqrt",
        Reciprocal = "reciprocal", Tanh = "tanh", Sigmoid = "sigmoid", Relu = "relu",
        Softplus = "softplus", Erf = "erf", Sin = "sin", Cos = "cos", Floor = "floor",
        Ceil = "ceil", Round = "round", Sign = "sign", Not = "not", Atan = "atan",
        BitNot = "bit_not",
    }
);

named_enum!(
    /// Elementwise binary ops with NumPy broadcasting. Comparisons yield bool.
    BinaryOp {
        Add = "add", Sub = "sub", Mul = "mul", Div = "div", Pow = "pow", Max = "max",
        Min = "min", Eq = "eq", Ne = "ne", Lt = "lt", Le = "le", Gt = "gt", Ge = "ge",
        And = "and", Or = "or", Mod = "mod", Rem = "rem", BitAnd = "bit_and", BitOr = "bit_or",
        BitXor = "bit_xor", Shl = "shl", Shr = "shr",
    }
);

impl BinaryOp {
    pub fn is_comparison(self) -> bool {
        matches!(
            self,
            BinaryOp::Eq | BinaryOp::Ne | BinaryOp::Lt | BinaryOp::Le | BinaryOp::Gt | BinaryOp::Ge
        )
    }

    /// Integer-only bit operations.
    pub fn is_bitwise(self) -> bool {
        matches!(
            self,
            BinaryOp::BitAnd | BinaryOp::BitOr | BinaryOp::BitXor | BinaryOp::Shl | BinaryOp::Shr
        )
    }

    pub fn is_logical(self) -> bool {
        matches!(self, BinaryOp::And | BinaryOp::Or)
    }
}

named_enum!(ReduceKind { Sum = "sum", Mean = "mean", Max = "max", Min = "min", Prod = "prod" });
named_enum!(PoolKind { Max = "max", Avg = "avg" });
named_enum!(
    /// Where the channels are: `last` is NHWC data with an HWIO kernel (Keras), `first` is
    /// NCHW data with an OIHW kernel (ONNX).
    Layout { ChannelsLast = "last", ChannelsFirst = "first" }
);
named_enum!(PadMode { Constant = "constant", Reflect = "reflect", Edge = "edge" });
named_enum!(RnnCell { Lstm = "lstm", Gru = "gru", Simple = "simple" });
named_enum!(
    /// Activations inside recurrent cells.
    Activation {
        Linear = "linear", Tanh = "tanh", Sigmoid = "sigmoid", Relu = "relu",
        HardSigmoid = "hard_sigmoid",
    }
);

/// Convolution attributes, shared by `conv` and `conv_transpose`. Kernel layouts:
/// conv, `last`: `[k..., C_in/groups, C_out]`; conv, `first`: `[C_out, C_in/groups, k...]`;
/// conv_transpose, `last`: `[k..., C_out/groups, C_in]`; conv_transpose, `first`:
/// `[C_in, C_out/groups, k...]`.
#[derive(Clone, Debug, PartialEq)]
pub struct ConvAttrs {
    pub strides: Vec<usize>,
    pub dilations: Vec<usize>,
    /// (begin, end) padding per spatial dim.
    pub pads: Vec<(usize, usize)>,
    pub groups: usize,
    pub layout: Layout,
    /// Extra size added at the end of each spatial dim (conv_transpose only).
    pub output_padding: Vec<usize>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct PoolAttrs {
    pub kind: PoolKind,
    pub window: Vec<usize>,
    pub strides: Vec<usize>,
    pub pads: Vec<(usize, usize)>,
    pub layout: Layout,
    /// Average pooling: whether padded positions count in the divisor.
    pub count_include_pad: bool,
    pub dilations: Vec<usize>,
}

/// Separable resizing (ONNX Resize semantics), with the output size and scale of every axis
/// fixed. `mode`: nearest, linear, cubic; `coord`: half_pixel, half_pixel_symmetric,
/// pytorch_half_pixel, align_corners, asymmetric, tf_crop_and_resize; `nearest_mode`:
/// round_prefer_floor, round_prefer_ceil, floor, ceil. `roi` (begins then ends, one per axis)
/// only for tf_crop_and_resize.
#[derive(Clone, Debug, PartialEq)]
pub struct ResizeAttrs {
    pub sizes: Vec<Dim>,
    pub scales: Vec<f64>,
    pub mode: String,
    pub coord: String,
    pub nearest_mode: String,
    pub cubic_a: f64,
    pub exclude_outside: bool,
    pub extrapolation: f64,
    pub antialias: bool,
    pub roi: Vec<f64>,
}

/// A recurrent layer over a whole sequence. Inputs: x `[B, T, F]`, kernel `[F, gates*U]`,
/// recurrent kernel `[U, gates*U]`, bias `[gates*U]` (GRU with reset_after: `[2, 3U]`).
/// Gate order: LSTM i, f, c, o; GRU z, r, h. Output: `[B, T, U]` or `[B, U]`.
#[derive(Clone, Debug, PartialEq)]
pub struct RnnAttrs {
    pub cell: RnnCell,
    pub units: usize,
    pub activation: Activation,
    pub recurrent_activation: Activation,
    pub return_sequences: bool,
    pub go_backwards: bool,
    pub reset_after: bool,
}

impl RnnCell {
    pub fn gates(self) -> usize {
        match self {
            RnnCell::Lstm => 4,
            RnnCell::Gru => 3,
            RnnCell::Simple => 1,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    /// A constant. `weight` marks a model parameter (its value name is the parameter name).
    Const {
        value: Tensor,
        weight: Option<Weight>,
    },
    Unary(UnaryOp),
    Binary(BinaryOp),
    /// `select(cond, a, b)`: elementwise `cond ? a : b`, broadcasting all three.
    Select,
    Cast {
        to: DType,
    },
    /// NumPy matmul: `[..., M, K] x [..., K, N]`, batch dims broadcast.
    MatMul,
    /// Inputs: x, kernel.
    Conv(ConvAttrs),
    /// Inputs: x, kernel.
    ConvTranspose(ConvAttrs),
    /// A 2-D channels-last convolution's kernel gradient (one group). Inputs: the convolution's
    /// input x `[N, H, W, C]` and the gradient of its output dy `[N, OH, OW, F]`; the result
    /// `[kernel..., C, F]` is `Σ x[n, y s0 + i d0 - p0, x s1 + j d1 - p1, c] dy[n, y, x, f]`
    /// (zero outside the input), summed per sample over (y, x), then over the samples.
    ConvKernelGrad {
        conv: ConvAttrs,
        kernel: Vec<usize>,
    },
    /// Column-to-image, channels-last 2-D: the sum, at each pixel of an `[N, size..., C]` image,
    /// of the columns `[N, OH, OW, kernel... * C]` whose window (a convolution's, by `conv`'s
    /// strides, dilations and pads) covers that pixel: `y[n, p, q, c] = Σ x[n, (p + p0 - i d0) /
    /// s0, (q + p1 - j d1) / s1, (i kw + j) C + c]` over the taps (i, j) row-major where the
    /// division is exact and in range. With `cols = dy · Wᵀ` it is a transposed convolution
    /// (what `lower-conv-transpose` makes of one).
    Col2Im {
        conv: ConvAttrs,
        kernel: Vec<usize>,
        size: Vec<usize>,
    },
    Pool(PoolAttrs),
    /// A 2-D max pooling's gradient, channels-last. Inputs: x, the pooling's output y, the
    /// gradient of y. Each window's gradient goes to the first input of the window (row-major;
    /// padding counts as -inf) equal to the window's y, as TensorFlow's MaxPoolGrad does; the
    /// result has x's type. Made by the pooling's derivative rule for windows that do not
    /// overlap, which the CPU target runs as one pass over the input.
    PoolGrad(PoolAttrs),
    Reduce {
        kind: ReduceKind,
        axes: Vec<usize>,
        keepdims: bool,
    },
    Softmax {
        axis: usize,
        log: bool,
    },
    /// ONNX Reshape rules: 0 copies the input dim at that position, -1 is inferred.
    Reshape {
        shape: Vec<i64>,
    },
    Transpose {
        perm: Vec<usize>,
    },
    Concat {
        axis: usize,
    },
    /// Static slice; negative starts/ends count from the end, ends are clamped.
    Slice {
        axes: Vec<usize>,
        starts: Vec<i64>,
        ends: Vec<i64>,
        steps: Vec<i64>,
    },
    Pad {
        pads: Vec<(usize, usize)>,
        mode: PadMode,
        value: f64,
    },
    /// Inputs: data, indices (integer). Output: data.shape[..axis] + indices.shape + data.shape[axis+1..].
    Gather {
        axis: usize,
    },
    /// NumPy broadcast of the input against `shape` (ONNX Expand: a 1 keeps the input dim).
    /// Symbolic dims (the batch) take their size from the graph inputs at run time.
    Broadcast {
        shape: Vec<Dim>,
    },
    /// Inference-form batch normalization. Inputs: x, gamma, beta, moving_mean, moving_var,
    /// each of the size of x's `axis`. `momentum` is the moving statistics' update in
    /// training (`moving = moving * momentum + batch * (1 - momentum)`); inference ignores it.
    BatchNorm {
        axis: usize,
        epsilon: f64,
        momentum: f64,
    },
    /// Inputs: x, gamma, beta, each of the shape of x's `axes`.
    LayerNorm {
        axes: Vec<usize>,
        epsilon: f64,
    },
    /// Identity at inference; the training step multiplies by a `dropout_mask` instead.
    Dropout {
        rate: f64,
    },
    /// Inputs: x (only its shape is read) and key (i64 scalar). Dropout's training mask, of
    /// x's type: `1 / (1 - rate)` where forgec's counter-based draw for (key, salt, the
    /// element's row-major index) keeps the element, else 0 (`ops::norm::dropout_keep`). The
    /// mask depends on nothing else (not on threads or tiling); it has no gradient.
    DropoutMask {
        rate: f64,
        salt: i64,
    },
    Rnn(RnnAttrs),
    /// Index (i64) of the largest (`max`) or smallest (`min`) element along `axis`; ties go to
    /// the first index unless `select_last`.
    ArgReduce {
        kind: ReduceKind,
        axis: usize,
        keepdims: bool,
        select_last: bool,
    },
    /// `out[i..] = data[.., indices[i..], ..]` along `axis`; indices have data's rank.
    GatherElements {
        axis: usize,
    },
    /// Inputs: data, indices (rank of data), updates (shape of indices): a copy of data with
    /// updates written (or combined by `reduction`: none, add, mul, max, min) at the indices.
    ScatterElements {
        axis: usize,
        reduction: String,
    },
    /// Inputs: data, indices `[..., k]`, updates: writes slices of data addressed by index tuples.
    ScatterNd {
        reduction: String,
    },
    /// Inputs: data, indices `[..., k]`: gathers the slices addressed by index tuples, the first
    /// `batch_dims` dims shared.
    GatherNd {
        batch_dims: usize,
    },
    /// The `k` largest (or smallest) elements along `axis`, and their i64 indices (two results).
    TopK {
        axis: usize,
        k: usize,
        largest: bool,
        sorted: bool,
    },
    Resize(ResizeAttrs),
    /// Running sum or product along `axis` (`exclusive`: shifted by one; `reverse`: from the end).
    Cumulative {
        kind: ReduceKind,
        axis: usize,
        exclusive: bool,
        reverse: bool,
    },
}

impl Op {
    /// The op with its symbolic attribute dims replaced by their sizes (for running it).
    pub fn bind_symbols(&self, syms: &HashMap<String, usize>) -> Result<Op, String> {
        let bind = |shape: &[Dim]| -> Result<Vec<Dim>, String> {
            shape
                .iter()
                .map(|d| match d {
                    Dim::Sym(s) => syms.get(s).map(|&n| Dim::Known(n)).ok_or_else(|| {
                        format!("the size of `{s}` is not known: no graph input has it")
                    }),
                    d => Ok(d.clone()),
                })
                .collect()
        };
        match self {
            Op::Broadcast { shape } => Ok(Op::Broadcast {
                shape: bind(shape)?,
            }),
            Op::Resize(r) => Ok(Op::Resize(ResizeAttrs {
                sizes: bind(&r.sizes)?,
                ..r.clone()
            })),
            op => Ok(op.clone()),
        }
    }

    /// Whether an attribute holds a symbolic dim.
    pub fn has_symbolic_attrs(&self) -> bool {
        let sym = |s: &[Dim]| s.iter().any(|d| d.known().is_none());
        match self {
            Op::Broadcast { shape } => sym(shape),
            Op::Resize(r) => sym(&r.sizes),
            _ => false,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Weight {
    pub trainable: bool,
}

impl Op {
    /// The op's name in the text form.
    pub fn name(&self) -> String {
        match self {
            Op::Const { .. } => "const".into(),
            Op::Unary(u) => u.name().into(),
            Op::Binary(b) => b.name().into(),
            Op::Select => "select".into(),
            Op::Cast { .. } => "cast".into(),
            Op::MatMul => "matmul".into(),
            Op::Conv(_) => "conv".into(),
            Op::ConvTranspose(_) => "conv_transpose".into(),
            Op::ConvKernelGrad { .. } => "conv_kernel_grad".into(),
            Op::Col2Im { .. } => "col2im".into(),
            Op::Pool(_) => "pool".into(),
            Op::PoolGrad(_) => "pool_grad".into(),
            Op::Reduce { .. } => "reduce".into(),
            Op::Softmax { .. } => "softmax".into(),
            Op::Reshape { .. } => "reshape".into(),
            Op::Transpose { .. } => "transpose".into(),
            Op::Concat { .. } => "concat".into(),
            Op::Slice { .. } => "slice".into(),
            Op::Pad { .. } => "pad".into(),
            Op::Gather { .. } => "gather".into(),
            Op::Broadcast { .. } => "broadcast".into(),
            Op::BatchNorm { .. } => "batch_norm".into(),
            Op::LayerNorm { .. } => "layer_norm".into(),
            Op::Dropout { .. } => "dropout".into(),
            Op::DropoutMask { .. } => "dropout_mask".into(),
            Op::Rnn(_) => "rnn".into(),
            Op::ArgReduce { .. } => "arg_reduce".into(),
            Op::GatherElements { .. } => "gather_elements".into(),
            Op::Resize(_) => "resize".into(),
            Op::ScatterElements { .. } => "scatter_elements".into(),
            Op::ScatterNd { .. } => "scatter_nd".into(),
            Op::GatherNd { .. } => "gather_nd".into(),
            Op::TopK { .. } => "top_k".into(),
            Op::Cumulative { .. } => "cumulative".into(),
        }
    }

    /// How many inputs the op takes: `(min, max)`.
    pub fn arity(&self) -> (usize, usize) {
        match self {
            Op::Const { .. } => (0, 0),
            Op::Unary(_)
            | Op::Cast { .. }
            | Op::Pool(_)
            | Op::Reduce { .. }
            | Op::Softmax { .. } => (1, 1),
            Op::Reshape { .. } | Op::Transpose { .. } | Op::Slice { .. } | Op::Pad { .. } => (1, 1),
            Op::Broadcast { .. } | Op::Dropout { .. } | Op::Col2Im { .. } => (1, 1),
            Op::ArgReduce { .. } | Op::Cumulative { .. } | Op::TopK { .. } | Op::Resize(_) => {
                (1, 1)
            }
            Op::GatherElements { .. } | Op::GatherNd { .. } | Op::DropoutMask { .. } => (2, 2),
            Op::ScatterElements { .. } | Op::ScatterNd { .. } => (3, 3),
            Op::Binary(_)
            | Op::MatMul
            | Op::Conv(_)
            | Op::ConvTranspose(_)
            | Op::ConvKernelGrad { .. }
            | Op::Gather { .. } => (2, 2),
            Op::Select | Op::LayerNorm { .. } | Op::PoolGrad(_) => (3, 3),
            Op::BatchNorm { .. } => (5, 5),
            Op::Rnn(_) => (4, 4),
            Op::Concat { .. } => (1, usize::MAX),
        }
    }
}

/// An attribute value in the text form.
#[derive(Clone, Debug, PartialEq)]
pub enum Attr {
    Int(i64),
    Float(f64),
    Bool(bool),
    Str(String),
    Ident(String),
    Ints(Vec<i64>),
    Floats(Vec<f64>),
    /// A shape whose entries may be symbols: `[batch, 32]`.
    Dims(Vec<Dim>),
}

fn ints<T: Copy + Into<i64>>(v: &[T]) -> Attr {
    Attr::Ints(v.iter().map(|&x| x.into()).collect())
}

fn usizes(v: &[usize]) -> Attr {
    Attr::Ints(v.iter().map(|&x| x as i64).collect())
}

fn pairs(v: &[(usize, usize)]) -> Attr {
    Attr::Ints(v.iter().flat_map(|&(a, b)| [a as i64, b as i64]).collect())
}

impl Op {
    /// The op's attributes, in the canonical order of the text form. A constant's data is
    /// printed by the text module, not here.
    pub fn attrs(&self) -> Vec<(&'static str, Attr)> {
        use Attr::*;
        match self {
            Op::Const { weight, .. } => match weight {
                Some(w) => vec![("weight", Bool(true)), ("trainable", Bool(w.trainable))],
                None => vec![],
            },
            Op::Unary(_) | Op::Binary(_) | Op::Select | Op::MatMul => vec![],
            Op::Cast { to } => vec![("to", Ident(to.name().into()))],
            Op::Conv(c) | Op::ConvTranspose(c) => {
                let mut v = vec![
                    ("strides", usizes(&c.strides)),
                    ("dilations", usizes(&c.dilations)),
                    ("pads", pairs(&c.pads)),
                    ("groups", Int(c.groups as i64)),
                    ("layout", Ident(c.layout.name().into())),
                ];
                if matches!(self, Op::ConvTranspose(_)) {
                    v.push(("output_padding", usizes(&c.output_padding)));
                }
                v
            }
            Op::Col2Im {
                conv: c,
                kernel,
                size,
            } => vec![
                ("kernel", usizes(kernel)),
                ("size", usizes(size)),
                ("strides", usizes(&c.strides)),
                ("dilations", usizes(&c.dilations)),
                ("pads", pairs(&c.pads)),
                ("groups", Int(c.groups as i64)),
                ("layout", Ident(c.layout.name().into())),
            ],
            Op::ConvKernelGrad { conv: c, kernel } => vec![
                ("kernel", usizes(kernel)),
                ("strides", usizes(&c.strides)),
                ("dilations", usizes(&c.dilations)),
                ("pads", pairs(&c.pads)),
                ("groups", Int(c.groups as i64)),
                ("layout", Ident(c.layout.name().into())),
            ],
            Op::Pool(p) | Op::PoolGrad(p) => vec![
                ("kind", Ident(p.kind.name().into())),
                ("window", usizes(&p.window)),
                ("strides", usizes(&p.strides)),
                ("pads", pairs(&p.pads)),
                ("layout", Ident(p.layout.name().into())),
                ("count_include_pad", Bool(p.count_include_pad)),
                ("dilations", usizes(&p.dilations)),
            ],
            Op::Reduce {
                kind,
                axes,
                keepdims,
            } => vec![
                ("kind", Ident(kind.name().into())),
                ("axes", usizes(axes)),
                ("keepdims", Bool(*keepdims)),
            ],
            Op::Softmax { axis, log } => vec![("axis", Int(*axis as i64)), ("log", Bool(*log))],
            Op::Reshape { shape } => vec![("shape", ints(shape))],
            Op::Transpose { perm } => vec![("perm", usizes(perm))],
            Op::Concat { axis } => vec![("axis", Int(*axis as i64))],
            Op::Slice {
                axes,
                starts,
                ends,
                steps,
            } => vec![
                ("axes", usizes(axes)),
                ("starts", ints(starts)),
                ("ends", ints(ends)),
                ("steps", ints(steps)),
            ],
            Op::Pad { pads, mode, value } => vec![
                ("pads", pairs(pads)),
                ("mode", Ident(mode.name().into())),
                ("value", Float(*value)),
            ],
            Op::Gather { axis } => vec![("axis", Int(*axis as i64))],
            Op::Broadcast { shape } => vec![("shape", Attr::Dims(shape.clone()))],
            Op::BatchNorm {
                axis,
                epsilon,
                momentum,
            } => vec![
                ("axis", Int(*axis as i64)),
                ("epsilon", Float(*epsilon)),
                ("momentum", Float(*momentum)),
            ],
            Op::LayerNorm { axes, epsilon } => {
                vec![("axes", usizes(axes)), ("epsilon", Float(*epsilon))]
            }
            Op::Dropout { rate } => vec![("rate", Float(*rate))],
            Op::DropoutMask { rate, salt } => vec![("rate", Float(*rate)), ("salt", Int(*salt))],
            Op::Rnn(r) => vec![
                ("cell", Ident(r.cell.name().into())),
                ("units", Int(r.units as i64)),
                ("activation", Ident(r.activation.name().into())),
                (
                    "recurrent_activation",
                    Ident(r.recurrent_activation.name().into()),
                ),
                ("return_sequences", Bool(r.return_sequences)),
                ("go_backwards", Bool(r.go_backwards)),
                ("reset_after", Bool(r.reset_after)),
            ],
            Op::ArgReduce {
                kind,
                axis,
                keepdims,
                select_last,
            } => vec![
                ("kind", Ident(kind.name().into())),
                ("axis", Int(*axis as i64)),
                ("keepdims", Bool(*keepdims)),
                ("select_last", Bool(*select_last)),
            ],
            Op::GatherElements { axis } => vec![("axis", Int(*axis as i64))],
            Op::Resize(r) => vec![
                ("sizes", Attr::Dims(r.sizes.clone())),
                ("scales", Floats(r.scales.clone())),
                ("mode", Ident(r.mode.clone())),
                ("coord", Ident(r.coord.clone())),
                ("nearest_mode", Ident(r.nearest_mode.clone())),
                ("cubic_a", Float(r.cubic_a)),
                ("exclude_outside", Bool(r.exclude_outside)),
                ("extrapolation", Float(r.extrapolation)),
                ("antialias", Bool(r.antialias)),
                ("roi", Floats(r.roi.clone())),
            ],
            Op::ScatterElements { axis, reduction } => {
                vec![
                    ("axis", Int(*axis as i64)),
                    ("reduction", Ident(reduction.clone())),
                ]
            }
            Op::ScatterNd { reduction } => vec![("reduction", Ident(reduction.clone()))],
            Op::GatherNd { batch_dims } => vec![("batch_dims", Int(*batch_dims as i64))],
            Op::TopK {
                axis,
                k,
                largest,
                sorted,
            } => vec![
                ("axis", Int(*axis as i64)),
                ("k", Int(*k as i64)),
                ("largest", Bool(*largest)),
                ("sorted", Bool(*sorted)),
            ],
            Op::Cumulative {
                kind,
                axis,
                exclusive,
                reverse,
            } => vec![
                ("kind", Ident(kind.name().into())),
                ("axis", Int(*axis as i64)),
                ("exclusive", Bool(*exclusive)),
                ("reverse", Bool(*reverse)),
            ],
        }
    }

    /// Rebuilds an op from its name and attributes (the inverse of `name` + `attrs`).
    /// `const` is built by the text parser, which owns the data.
    pub fn from_parts(name: &str, attrs: &[(String, Attr)]) -> Result<Op, String> {
        let a = AttrReader { attrs };
        let op = if let Some(u) = UnaryOp::from_name(name) {
            Op::Unary(u)
        } else if let Some(b) = BinaryOp::from_name(name) {
            Op::Binary(b)
        } else {
            match name {
                "select" => Op::Select,
                "matmul" => Op::MatMul,
                "cast" => Op::Cast {
                    to: a.parse_ident("to", DType::from_name)?,
                },
                "conv" | "conv_transpose" | "conv_kernel_grad" | "col2im" => {
                    let c = ConvAttrs {
                        strides: a.usizes("strides")?,
                        dilations: a.usizes("dilations")?,
                        pads: a.pairs("pads")?,
                        groups: a.usize("groups")?,
                        layout: a.parse_ident("layout", Layout::from_name)?,
                        output_padding: if name == "conv_transpose" {
                            a.usizes("output_padding")?
                        } else {
                            vec![]
                        },
                    };
                    match name {
                        "conv" => Op::Conv(c),
                        "conv_transpose" => Op::ConvTranspose(c),
                        "col2im" => Op::Col2Im {
                            conv: c,
                            kernel: a.usizes("kernel")?,
                            size: a.usizes("size")?,
                        },
                        _ => Op::ConvKernelGrad {
                            conv: c,
                            kernel: a.usizes("kernel")?,
                        },
                    }
                }
                "pool" | "pool_grad" => {
                    let p = PoolAttrs {
                        kind: a.parse_ident("kind", PoolKind::from_name)?,
                        window: a.usizes("window")?,
                        strides: a.usizes("strides")?,
                        pads: a.pairs("pads")?,
                        layout: a.parse_ident("layout", Layout::from_name)?,
                        count_include_pad: a.bool("count_include_pad")?,
                        dilations: a.usizes("dilations")?,
                    };
                    if name == "pool" {
                        Op::Pool(p)
                    } else {
                        Op::PoolGrad(p)
                    }
                }
                "reduce" => Op::Reduce {
                    kind: a.parse_ident("kind", ReduceKind::from_name)?,
                    axes: a.usizes("axes")?,
                    keepdims: a.bool("keepdims")?,
                },
                "softmax" => Op::Softmax {
                    axis: a.usize("axis")?,
                    log: a.bool("log")?,
                },
                "reshape" => Op::Reshape {
                    shape: a.ints("shape")?,
                },
                "transpose" => Op::Transpose {
                    perm: a.usizes("perm")?,
                },
                "concat" => Op::Concat {
                    axis: a.usize("axis")?,
                },
                "slice" => Op::Slice {
                    axes: a.usizes("axes")?,
                    starts: a.ints("starts")?,
                    ends: a.ints("ends")?,
                    steps: a.ints("steps")?,
                },
                "pad" => Op::Pad {
                    pads: a.pairs("pads")?,
                    mode: a.parse_ident("mode", PadMode::from_name)?,
                    value: a.float("value")?,
                },
                "gather" => Op::Gather {
                    axis: a.usize("axis")?,
                },
                "broadcast" => Op::Broadcast {
                    shape: a.dims("shape")?,
                },
                "batch_norm" => Op::BatchNorm {
                    axis: a.usize("axis")?,
                    epsilon: a.float("epsilon")?,
                    momentum: a.float("momentum")?,
                },
                "layer_norm" => Op::LayerNorm {
                    axes: a.usizes("axes")?,
                    epsilon: a.float("epsilon")?,
                },
                "dropout" => Op::Dropout {
                    rate: a.float("rate")?,
                },
                "dropout_mask" => Op::DropoutMask {
                    rate: a.float("rate")?,
                    salt: a.usize("salt")? as i64,
                },
                "arg_reduce" => Op::ArgReduce {
                    kind: a.parse_ident("kind", ReduceKind::from_name)?,
                    axis: a.usize("axis")?,
                    keepdims: a.bool("keepdims")?,
                    select_last: a.bool("select_last")?,
                },
                "gather_elements" => Op::GatherElements {
                    axis: a.usize("axis")?,
                },
                "resize" => Op::Resize(ResizeAttrs {
                    sizes: a.dims("sizes")?,
                    scales: a.floats("scales")?,
                    mode: a.parse_ident("mode", |s| {
                        ["nearest", "linear", "cubic"]
                            .contains(&s)
                            .then(|| s.to_string())
                    })?,
                    coord: a.parse_ident("coord", |s| {
                        COORD_MODES.contains(&s).then(|| s.to_string())
                    })?,
                    nearest_mode: a.parse_ident("nearest_mode", |s| {
                        NEAREST_MODES.contains(&s).then(|| s.to_string())
                    })?,
                    cubic_a: a.float("cubic_a")?,
                    exclude_outside: a.bool("exclude_outside")?,
                    extrapolation: a.float("extrapolation")?,
                    antialias: a.bool("antialias")?,
                    roi: a.floats("roi")?,
                }),
                "scatter_elements" => Op::ScatterElements {
                    axis: a.usize("axis")?,
                    reduction: a.parse_ident("reduction", reduction_name)?,
                },
                "scatter_nd" => Op::ScatterNd {
                    reduction: a.parse_ident("reduction", reduction_name)?,
                },
                "gather_nd" => Op::GatherNd {
                    batch_dims: a.usize("batch_dims")?,
                },
                "top_k" => Op::TopK {
                    axis: a.usize("axis")?,
                    k: a.usize("k")?,
                    largest: a.bool("largest")?,
                    sorted: a.bool("sorted")?,
                },
                "cumulative" => Op::Cumulative {
                    kind: a.parse_ident("kind", ReduceKind::from_name)?,
                    axis: a.usize("axis")?,
                    exclusive: a.bool("exclusive")?,
                    reverse: a.bool("reverse")?,
                },
                "rnn" => Op::Rnn(RnnAttrs {
                    cell: a.parse_ident("cell", RnnCell::from_name)?,
                    units: a.usize("units")?,
                    activation: a.parse_ident("activation", Activation::from_name)?,
                    recurrent_activation: a
                        .parse_ident("recurrent_activation", Activation::from_name)?,
                    return_sequences: a.bool("return_sequences")?,
                    go_backwards: a.bool("go_backwards")?,
                    reset_after: a.bool("reset_after")?,
                }),
                _ => return Err(format!("unknown op '{name}'")),
            }
        };
        // Reject attributes the op does not have: a typo must not pass silently.
        let known: Vec<&str> = op.attrs().iter().map(|(k, _)| *k).collect();
        for (k, _) in attrs {
            if !known.contains(&k.as_str()) {
                return Err(format!("op '{name}' has no attribute '{k}'"));
            }
        }
        Ok(op)
    }
}

/// Resize's coordinate transformation modes.
pub const COORD_MODES: &[&str] = &[
    "half_pixel",
    "half_pixel_symmetric",
    "pytorch_half_pixel",
    "align_corners",
    "asymmetric",
    "tf_crop_and_resize",
];
/// Resize's rounding of nearest-neighbour coordinates.
pub const NEAREST_MODES: &[&str] = &["round_prefer_floor", "round_prefer_ceil", "floor", "ceil"];

/// The scatter reductions.
pub const REDUCTIONS: &[&str] = &["none", "add", "mul", "max", "min"];

fn reduction_name(s: &str) -> Option<String> {
    REDUCTIONS.contains(&s).then(|| s.to_string())
}

struct AttrReader<'a> {
    attrs: &'a [(String, Attr)],
}

impl AttrReader<'_> {
    fn get(&self, k: &str) -> Result<&Attr, String> {
        self.attrs
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v)
            .ok_or_else(|| format!("missing attribute '{k}'"))
    }
    fn ints(&self, k: &str) -> Result<Vec<i64>, String> {
        match self.get(k)? {
            Attr::Ints(v) => Ok(v.clone()),
            _ => Err(format!("attribute '{k}' must be a list of integers")),
        }
    }
    fn usizes(&self, k: &str) -> Result<Vec<usize>, String> {
        self.ints(k)?
            .into_iter()
            .map(|x| {
                usize::try_from(x).map_err(|_| format!("attribute '{k}' must not be negative"))
            })
            .collect()
    }
    fn pairs(&self, k: &str) -> Result<Vec<(usize, usize)>, String> {
        let v = self.usizes(k)?;
        if v.len() % 2 != 0 {
            return Err(format!("attribute '{k}' must hold (begin, end) pairs"));
        }
        Ok(v.chunks(2).map(|c| (c[0], c[1])).collect())
    }
    fn dims(&self, k: &str) -> Result<Vec<Dim>, String> {
        match self.get(k)? {
            Attr::Dims(v) => Ok(v.clone()),
            Attr::Ints(v) => v
                .iter()
                .map(|&x| {
                    usize::try_from(x)
                        .map(Dim::Known)
                        .map_err(|_| format!("attribute '{k}' must not be negative"))
                })
                .collect(),
            _ => Err(format!("attribute '{k}' must be a list of dims")),
        }
    }
    fn floats(&self, k: &str) -> Result<Vec<f64>, String> {
        match self.get(k)? {
            Attr::Floats(v) => Ok(v.clone()),
            Attr::Ints(v) => Ok(v.iter().map(|&x| x as f64).collect()),
            _ => Err(format!("attribute '{k}' must be a list of numbers")),
        }
    }
    fn usize(&self, k: &str) -> Result<usize, String> {
        match self.get(k)? {
            Attr::Int(v) if *v >= 0 => Ok(*v as usize),
            _ => Err(format!("attribute '{k}' must be a non-negative integer")),
        }
    }
    fn float(&self, k: &str) -> Result<f64, String> {
        match self.get(k)? {
            Attr::Float(v) => Ok(*v),
            Attr::Int(v) => Ok(*v as f64),
            _ => Err(format!("attribute '{k}' must be a number")),
        }
    }
    fn bool(&self, k: &str) -> Result<bool, String> {
        match self.get(k)? {
            Attr::Bool(v) => Ok(*v),
            _ => Err(format!("attribute '{k}' must be true or false")),
        }
    }
    fn parse_ident<T>(&self, k: &str, f: impl Fn(&str) -> Option<T>) -> Result<T, String> {
        match self.get(k)? {
            Attr::Ident(s) => f(s).ok_or_else(|| format!("attribute '{k}': unknown value '{s}'")),
            _ => Err(format!("attribute '{k}' must be a name")),
        }
    }
}
