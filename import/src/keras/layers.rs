//! Keras layers lowered to IR ops. Each layer reads its config, asks for its weights (checked
//! against the shapes its config implies) and emits nodes that carry its origin.

use super::activations::{self, leaky_relu};
use super::build::{Lb, R};
use super::json::*;
use forgec_ir::{
    Activation, BinaryOp as B, ConvAttrs, Dim, Layout, Op, PadMode, PoolAttrs, PoolKind,
    ReduceKind, ResizeAttrs, RnnAttrs, RnnCell, Tensor, UnaryOp as U, ValueId,
};
use serde_json::Value;

/// One weight a layer expects: its Keras name, shape, and whether training updates it.
#[derive(Clone, Debug)]
pub struct WSpec {
    pub name: String,
    pub shape: Vec<usize>,
    pub trainable: bool,
}

pub fn w(name: &str, shape: Vec<usize>) -> WSpec {
    WSpec {
        name: name.into(),
        shape,
        trainable: true,
    }
}

pub fn w_fixed(name: &str, shape: Vec<usize>) -> WSpec {
    WSpec {
        name: name.into(),
        shape,
        trainable: false,
    }
}

/// What a layer needs from the importer while it lowers itself.
pub trait LayerCx {
    /// The layer's weights, in Keras's order, as graph constants.
    fn weights(&mut self, b: &mut Lb, specs: &[WSpec]) -> R<Vec<ValueId>>;
    /// Whether tf.keras 2 semantics apply.
    fn legacy(&self) -> bool;
}

/// The layers forgec lowers (besides InputLayer and nested models).
pub const SUPPORTED: &[&str] = &[
    "Dense",
    "Activation",
    "Dropout",
    "SpatialDropout1D",
    "SpatialDropout2D",
    "SpatialDropout3D",
    "GaussianNoise",
    "GaussianDropout",
    "AlphaDropout",
    "ActivityRegularization",
    "Flatten",
    "Reshape",
    "Permute",
    "RepeatVector",
    "Conv1D",
    "Conv2D",
    "Conv3D",
    "DepthwiseConv1D",
    "DepthwiseConv2D",
    "SeparableConv1D",
    "SeparableConv2D",
    "Conv1DTranspose",
    "Conv2DTranspose",
    "Conv3DTranspose",
    "MaxPooling1D",
    "MaxPooling2D",
    "MaxPooling3D",
    "AveragePooling1D",
    "AveragePooling2D",
    "AveragePooling3D",
    "GlobalAveragePooling1D",
    "GlobalAveragePooling2D",
    "GlobalAveragePooling3D",
    "GlobalMaxPooling1D",
    "GlobalMaxPooling2D",
    "GlobalMaxPooling3D",
    "BatchNormalization",
    "LayerNormalization",
    "MultiHeadAttention",
    "GroupQueryAttention",
    "GroupedQueryAttention",
    "Attention",
    "AdditiveAttention",
    "UnitNormalization",
    "GroupNormalization",
    "Concatenate",
    "Add",
    "Subtract",
    "Multiply",
    "Average",
    "Maximum",
    "Minimum",
    "Dot",
    "ReLU",
    "LeakyReLU",
    "PReLU",
    "ELU",
    "Softmax",
    "Rescaling",
    "Normalization",
    "Embedding",
    "ZeroPadding1D",
    "ZeroPadding2D",
    "ZeroPadding3D",
    "Cropping1D",
    "Cropping2D",
    "Cropping3D",
    "UpSampling1D",
    "UpSampling2D",
    "UpSampling3D",
    "Resizing",
    "CenterCrop",
    "LSTM",
    "GRU",
    "SimpleRNN",
    "Bidirectional",
    "TimeDistributed",
    "Identity",
];

/// Keras 3 sub-groups of a layer's weights in `.weights.h5`.
pub fn k3_groups(class: &str, cfg: &Value) -> Vec<String> {
    match class {
        "LSTM" | "GRU" | "SimpleRNN" => vec!["vars".into(), "cell/vars".into()],
        "Bidirectional" => vec![
            "vars".into(),
            "forward_layer/vars".into(),
            "forward_layer/cell/vars".into(),
            "backward_layer/vars".into(),
            "backward_layer/cell/vars".into(),
        ],
        "MultiHeadAttention" => ["query_dense", "key_dense", "value_dense", "output_dense"]
            .iter()
            .map(|d| format!("{d}/vars"))
            .collect(),
        "GroupQueryAttention" | "GroupedQueryAttention" => [
            "_query_dense",
            "_key_dense",
            "_value_dense",
            "_output_dense",
        ]
        .iter()
        .map(|d| format!("{d}/vars"))
        .collect(),
        "TimeDistributed" => {
            let inner = get(cfg, "layer")
                .and_then(|l| l.get("class_name"))
                .and_then(|c| c.as_str())
                .unwrap_or("");
            k3_groups(inner, &Value::Null)
                .into_iter()
                .map(|g| format!("layer/{g}"))
                .collect()
        }
        _ => vec!["vars".into()],
    }
}

fn data_format(cfg: &Value) -> R<Layout> {
    match str_or(cfg, "data_format", "channels_last")? {
        "channels_last" => Ok(Layout::ChannelsLast),
        "channels_first" => Ok(Layout::ChannelsFirst),
        other => Err(format!("unknown data_format '{other}'")),
    }
}

/// For an N-d layer (`Conv2D`, `Cropping1D`, ...): N from the class name, the data layout
/// (channels_last unless the config says otherwise), and a check that `x` has rank N + 2.
fn spatial_setup(b: &Lb, x: ValueId, class: &str, cfg: &Value) -> R<(usize, Layout)> {
    let nd = class
        .trim_end_matches("Transpose")
        .chars()
        .rev()
        .nth(1)
        .and_then(|c| c.to_digit(10))
        .ok_or_else(|| format!("{class} has no dimension in its name"))? as usize;
    let layout = data_format(cfg)?;
    check_rank(
        b,
        x,
        nd + 2,
        &format!("({nd}D data with batch and channels)"),
    )?;
    Ok((nd, layout))
}

fn spatial_dims(b: &Lb, x: ValueId, layout: Layout) -> Vec<Dim> {
    let s = &b.g.ty(x).shape;
    match layout {
        Layout::ChannelsLast => s[1..s.len() - 1].to_vec(),
        Layout::ChannelsFirst => s[2..].to_vec(),
    }
}

fn channels(b: &Lb, x: ValueId, layout: Layout) -> R<usize> {
    let s = &b.g.ty(x).shape;
    let d = match layout {
        Layout::ChannelsLast => s.last().cloned(),
        Layout::ChannelsFirst => s.get(1).cloned(),
    };
    d.and_then(|d| d.known())
        .ok_or_else(|| "the channel dim must be known".to_string())
}

fn check_rank(b: &Lb, x: ValueId, rank: usize, what: &str) -> R<()> {
    let t = b.g.ty(x);
    if t.rank() != rank {
        return Err(format!(
            "expects a rank-{rank} input {what} but gets {}",
            t.keras_shape()
        ));
    }
    Ok(())
}

/// TF-style padding: `same` pads so the output is ceil(in / stride), the extra on the end.
fn pads_for(
    padding: &str,
    spatial: &[Dim],
    k: &[usize],
    s: &[usize],
    d: &[usize],
) -> R<Vec<(usize, usize)>> {
    let mut out = Vec::new();
    for i in 0..k.len() {
        out.push(match padding {
            "valid" => (0, 0),
            "same" => {
                let n = spatial[i]
                    .known()
                    .ok_or("padding='same' needs known spatial dims")?;
                let o = n.div_ceil(s[i]);
                let eff = (k[i] - 1) * d[i] + 1;
                let total = ((o.max(1) - 1) * s[i] + eff).saturating_sub(n);
                (total / 2, total - total / 2)
            }
            "causal" => ((k[i] - 1) * d[i], 0),
            other => return Err(format!("unknown padding '{other}'")),
        });
    }
    Ok(out)
}

fn add_bias(b: &mut Lb, y: ValueId, bias: ValueId, layout: Layout) -> R<ValueId> {
    let r = b.rank(y);
    let bias = if layout == Layout::ChannelsFirst && r > 2 {
        let n = b.g.ty(bias).shape[0].known().unwrap_or(0) as i64;
        let mut shape = vec![n];
        shape.extend(std::iter::repeat_n(1, r - 2));
        b.op(Op::Reshape { shape }, &[bias], "bias_reshape")?
    } else {
        bias
    };
    b.bin(B::Add, y, bias)
}

fn activation_of(cx: &dyn LayerCx, b: &mut Lb, cfg: &Value, x: ValueId) -> R<ValueId> {
    let name = activations::name_of(cfg.get("activation"))?;
    activations::apply(b, &name, x, cx.legacy())
}

/// Lowers one call of a layer. `class` is the Keras class name; `ins` its input tensors.
pub fn lower(
    cx: &mut dyn LayerCx,
    b: &mut Lb,
    class: &str,
    cfg: &Value,
    ins: &[ValueId],
) -> R<Vec<ValueId>> {
    match class {
        "MultiHeadAttention" | "GroupQueryAttention" | "GroupedQueryAttention" => {
            return multi_head_attention(cx, b, cfg, ins).map(|v| vec![v])
        }
        "Attention" | "AdditiveAttention" => {
            return attention(cx, b, class, cfg, ins).map(|v| vec![v])
        }
        _ => {}
    }
    let merge = matches!(
        class,
        "Concatenate" | "Add" | "Subtract" | "Multiply" | "Average" | "Maximum" | "Minimum" | "Dot"
    );
    if !merge && ins.len() != 1 {
        return Err(format!("takes one input tensor, got {}", ins.len()));
    }
    if merge && ins.len() < 2 {
        return Err(format!("merges two or more tensors, got {}", ins.len()));
    }
    let x = ins[0];
    let one = |v: ValueId| Ok(vec![v]);
    match class {
        "Identity"
        | "GaussianNoise"
        | "GaussianDropout"
        | "AlphaDropout"
        | "ActivityRegularization" => one(x),
        "Dropout" | "SpatialDropout1D" | "SpatialDropout2D" | "SpatialDropout3D" => {
            let rate = f64_or(cfg, "rate", 0.0)?;
            one(b.op(Op::Dropout { rate }, &[x], "dropout")?)
        }
        "Dense" => {
            let units = usize_req(cfg, "units")?;
            let t = b.g.ty(x).clone();
            if t.rank() < 2 {
                return Err(format!(
                    "expects at least a rank-2 input, gets {}",
                    t.keras_shape()
                ));
            }
            let fin = t.shape[t.rank() - 1]
                .known()
                .ok_or("the last input dim must be known")?;
            let use_bias = bool_or(cfg, "use_bias", true)?;
            let mut specs = vec![w("kernel", vec![fin, units])];
            if use_bias {
                specs.push(w("bias", vec![units]));
            }
            let ws = cx.weights(b, &specs)?;
            let mut y = b.op(Op::MatMul, &[x, ws[0]], "matmul")?;
            if use_bias {
                y = b.bin(B::Add, y, ws[1])?;
            }
            one(activation_of(cx, b, cfg, y)?)
        }
        "Activation" => one(activation_of(cx, b, cfg, x)?),
        "Flatten" => {
            let layout = data_format(cfg)?;
            let r = b.rank(x);
            let x = if layout == Layout::ChannelsFirst && r > 2 {
                let mut perm = vec![0];
                perm.extend(2..r);
                perm.push(1);
                b.op(Op::Transpose { perm }, &[x], "to_channels_last")?
            } else {
                x
            };
            one(b.op(Op::Reshape { shape: vec![0, -1] }, &[x], "flatten")?)
        }
        "Reshape" => {
            let target = int_list(cfg, "target_shape")?.ok_or("config has no `target_shape`")?;
            let mut shape = vec![0];
            for t in target {
                if t == 0 || t < -1 {
                    return Err(format!("target_shape entry {t} is not a size"));
                }
                shape.push(t);
            }
            one(b.op(Op::Reshape { shape }, &[x], "reshape")?)
        }
        "Permute" => {
            let dims = int_list(cfg, "dims")?.ok_or("config has no `dims`")?;
            let mut perm = vec![0];
            for d in dims {
                perm.push(usize::try_from(d).map_err(|_| "dims must be positive".to_string())?);
            }
            one(b.op(Op::Transpose { perm }, &[x], "permute")?)
        }
        "RepeatVector" => {
            let n = usize_req(cfg, "n")?;
            check_rank(b, x, 2, "(batch, features)")?;
            let r = b.op(
                Op::Reshape {
                    shape: vec![0, 1, -1],
                },
                &[x],
                "expand",
            )?;
            one(b.op(
                Op::Broadcast {
                    shape: vec![Dim::Known(1), Dim::Known(n), Dim::Known(1)],
                },
                &[r],
                "repeat",
            )?)
        }
        "Conv1D" | "Conv2D" | "Conv3D" | "Conv1DTranspose" | "Conv2DTranspose"
        | "Conv3DTranspose" => {
            let transpose = class.ends_with("Transpose");
            conv(cx, b, class, cfg, x, transpose)
        }
        "DepthwiseConv1D" | "DepthwiseConv2D" | "SeparableConv1D" | "SeparableConv2D" => {
            depthwise(cx, b, class, cfg, x, class.starts_with("Separable"))
        }
        c if c.starts_with("MaxPooling") || c.starts_with("AveragePooling") => {
            let (nd, layout) = spatial_setup(b, x, c, cfg)?;
            let kind = if c.starts_with("Max") {
                PoolKind::Max
            } else {
                PoolKind::Avg
            };
            let window = tuple(cfg, "pool_size", nd, Some(2))?;
            let strides = match get(cfg, "strides") {
                None => window.clone(),
                Some(_) => tuple(cfg, "strides", nd, None)?,
            };
            let padding = str_or(cfg, "padding", "valid")?.to_lowercase();
            let sp = spatial_dims(b, x, layout);
            let pads = pads_for(&padding, &sp, &window, &strides, &vec![1; nd])?;
            let p = PoolAttrs {
                kind,
                window,
                strides,
                pads,
                layout,
                count_include_pad: false,
                dilations: vec![1; nd],
            };
            one(b.op(Op::Pool(p), &[x], "pool")?)
        }
        c if c.starts_with("GlobalAveragePooling") || c.starts_with("GlobalMaxPooling") => {
            let (nd, layout) = spatial_setup(b, x, c, cfg)?;
            let axes: Vec<usize> = match layout {
                Layout::ChannelsLast => (1..=nd).collect(),
                Layout::ChannelsFirst => (2..nd + 2).collect(),
            };
            let kind = if c.starts_with("GlobalMax") {
                ReduceKind::Max
            } else {
                ReduceKind::Mean
            };
            let keepdims = bool_or(cfg, "keepdims", false)?;
            one(b.op(
                Op::Reduce {
                    kind,
                    axes,
                    keepdims,
                },
                &[x],
                "global_pool",
            )?)
        }
        "BatchNormalization" => {
            let r = b.rank(x);
            let axis = norm_axis(int_list(cfg, "axis")?.map(|v| v[0]).unwrap_or(-1), r)?;
            let c = b.g.ty(x).shape[axis]
                .known()
                .ok_or("the normalized axis must be known")?;
            let eps = f64_or(cfg, "epsilon", 1e-3)?;
            let momentum = f64_or(cfg, "momentum", 0.99)?;
            let center = bool_or(cfg, "center", true)?;
            let scale = bool_or(cfg, "scale", true)?;
            let mut specs = Vec::new();
            if scale {
                specs.push(w("gamma", vec![c]));
            }
            if center {
                specs.push(w("beta", vec![c]));
            }
            specs.push(w_fixed("moving_mean", vec![c]));
            specs.push(w_fixed("moving_variance", vec![c]));
            let mut ws = cx.weights(b, &specs)?.into_iter();
            let dt = b.g.ty(x).dtype;
            let fixed = |b: &mut Lb, v: f64, n: &str| {
                let t = Tensor::full(dt, vec![c], v).expect("small");
                let name = format!("{}.{n}", b.base);
                b.g.add_const(t, None, &name, &b.origin.clone())
            };
            let gamma = if scale {
                ws.next().unwrap()
            } else {
                fixed(b, 1.0, "gamma")
            };
            let beta = if center {
                ws.next().unwrap()
            } else {
                fixed(b, 0.0, "beta")
            };
            let mean = ws.next().unwrap();
            let var = ws.next().unwrap();
            one(b.op(
                Op::BatchNorm {
                    axis,
                    epsilon: eps,
                    momentum,
                },
                &[x, gamma, beta, mean, var],
                "batch_norm",
            )?)
        }
        "LayerNormalization" => {
            let r = b.rank(x);
            let mut axes: Vec<usize> = int_list(cfg, "axis")?
                .unwrap_or(vec![-1])
                .into_iter()
                .map(|a| norm_axis(a, r))
                .collect::<R<_>>()?;
            axes.sort();
            let shape: Vec<usize> = axes
                .iter()
                .map(|&a| {
                    b.g.ty(x).shape[a]
                        .known()
                        .ok_or("the normalized axes must be known".to_string())
                })
                .collect::<R<_>>()?;
            let eps = f64_or(cfg, "epsilon", 1e-3)?;
            // rms_scaling has no beta (Keras makes none).
            let center = bool_or(cfg, "center", true)? && !bool_or(cfg, "rms_scaling", false)?;
            let scale = bool_or(cfg, "scale", true)?;
            let mut specs = Vec::new();
            if scale {
                specs.push(w("gamma", shape.clone()));
            }
            if center {
                specs.push(w("beta", shape.clone()));
            }
            let mut ws = cx.weights(b, &specs)?.into_iter();
            if bool_or(cfg, "rms_scaling", false)? {
                // Keras's (deprecated) rms_scaling: x * rsqrt(var(x) + eps) * gamma, the
                // variance about the mean (not the mean square, as its warning says), no beta.
                let mean = |b: &mut Lb, v: ValueId| {
                    b.op(
                        Op::Reduce {
                            kind: ReduceKind::Mean,
                            axes: axes.clone(),
                            keepdims: true,
                        },
                        &[v],
                        "mean",
                    )
                };
                let m = mean(b, x)?;
                let d = b.bin(B::Sub, x, m)?;
                let d2 = b.bin(B::Mul, d, d)?;
                let var = mean(b, d2)?;
                let v = b.bin_s(B::Add, var, eps)?;
                let inv = b.un(U::Rsqrt, v)?;
                let mut y = b.bin(B::Mul, x, inv)?;
                if scale {
                    let gamma = ws.next().unwrap();
                    let gamma = broadcast_along(b, gamma, &axes, r)?;
                    y = b.bin(B::Mul, y, gamma)?;
                }
                return one(y);
            }
            let dt = b.g.ty(x).dtype;
            let fixed = |b: &mut Lb, v: f64, n: &str| {
                let t = Tensor::full(dt, shape.clone(), v).expect("small");
                let name = format!("{}.{n}", b.base);
                b.g.add_const(t, None, &name, &b.origin.clone())
            };
            let gamma = if scale {
                ws.next().unwrap()
            } else {
                fixed(b, 1.0, "gamma")
            };
            let beta = if center {
                ws.next().unwrap()
            } else {
                fixed(b, 0.0, "beta")
            };
            one(b.op(
                Op::LayerNorm { axes, epsilon: eps },
                &[x, gamma, beta],
                "layer_norm",
            )?)
        }
        "UnitNormalization" => {
            let r = b.rank(x);
            let axes: Vec<usize> = match get(cfg, "axis") {
                Some(Value::Array(_)) => int_list(cfg, "axis")?.unwrap_or_default(),
                Some(v) => vec![i64_of(v, "axis")?],
                None => vec![-1],
            }
            .into_iter()
            .map(|a| norm_axis(a, r))
            .collect::<R<_>>()?;
            // Keras: x * min(rsqrt(sum(x^2)), 1 / 1e-12).
            let sq = b.bin(B::Mul, x, x)?;
            let sum = b.op(
                Op::Reduce {
                    kind: ReduceKind::Sum,
                    axes,
                    keepdims: true,
                },
                &[sq],
                "square_sum",
            )?;
            let inv = b.un(U::Rsqrt, sum)?;
            let inv = b.bin_s(B::Min, inv, 1e12)?;
            one(b.bin(B::Mul, x, inv)?)
        }
        "GroupNormalization" => one(group_normalization(cx, b, cfg, x)?),
        "Concatenate" => {
            let r = b.rank(x);
            let axis = norm_axis(
                get(cfg, "axis")
                    .map(|v| i64_of(v, "axis"))
                    .transpose()?
                    .unwrap_or(-1),
                r,
            )?;
            one(b.op(Op::Concat { axis }, ins, "concat")?)
        }
        "Add" | "Multiply" | "Maximum" | "Minimum" | "Average" => {
            let op = match class {
                "Multiply" => B::Mul,
                "Maximum" => B::Max,
                "Minimum" => B::Min,
                _ => B::Add,
            };
            let mut acc = x;
            for &y in &ins[1..] {
                acc = b.bin(op, acc, y)?;
            }
            if class == "Average" {
                acc = b.bin_s(B::Div, acc, ins.len() as f64)?;
            }
            one(acc)
        }
        "Subtract" => {
            if ins.len() != 2 {
                return Err(format!("subtracts exactly two tensors, got {}", ins.len()));
            }
            one(b.bin(B::Sub, ins[0], ins[1])?)
        }
        "Dot" => dot(b, cfg, ins),
        "ReLU" => {
            let max = get(cfg, "max_value")
                .map(|v| v.as_f64().ok_or("max_value must be a number"))
                .transpose()?;
            let slope = f64_or(cfg, "negative_slope", 0.0)?;
            let th = f64_or(cfg, "threshold", 0.0)?;
            // Keras: x >= max -> max; threshold <= x < max -> x; x < threshold -> slope * (x - threshold).
            let mut y = if slope == 0.0 && th == 0.0 {
                b.un(U::Relu, x)?
            } else {
                let c = b.bin_s(B::Ge, x, th)?;
                let xt = b.bin_s(B::Sub, x, th)?;
                let n = b.bin_s(B::Mul, xt, slope)?;
                b.select(c, x, n)?
            };
            if let Some(m) = max {
                y = b.bin_s(B::Min, y, m)?;
            }
            one(y)
        }
        "LeakyReLU" => {
            // Keras 3 calls it negative_slope (default 0.3); tf.keras 2 called it alpha.
            let slope = match get(cfg, "negative_slope") {
                Some(v) => v.as_f64().ok_or("negative_slope must be a number")?,
                None => f64_or(cfg, "alpha", 0.3)?,
            };
            one(leaky_relu(b, x, slope)?)
        }
        "ELU" => one(activations::elu(b, x, f64_or(cfg, "alpha", 1.0)?)?),
        "PReLU" => {
            let t = b.g.ty(x).clone();
            let mut shape: Vec<usize> = t.shape[1..]
                .iter()
                .map(|d| {
                    d.known()
                        .ok_or("PReLU needs known non-batch dims".to_string())
                })
                .collect::<R<_>>()?;
            if let Some(shared) = int_list(cfg, "shared_axes")? {
                for a in shared {
                    let i = usize::try_from(a - 1).map_err(|_| format!("bad shared axis {a}"))?;
                    *shape
                        .get_mut(i)
                        .ok_or(format!("shared axis {a} is out of range"))? = 1;
                }
            }
            let ws = cx.weights(b, &[w("alpha", shape)])?;
            // relu(x) - alpha * relu(-x)
            let p = b.un(U::Relu, x)?;
            let n = b.un(U::Neg, x)?;
            let rn = b.un(U::Relu, n)?;
            let an = b.bin(B::Mul, ws[0], rn)?;
            one(b.bin(B::Sub, p, an)?)
        }
        "Softmax" => {
            let r = b.rank(x);
            let axis = norm_axis(int_list(cfg, "axis")?.map(|v| v[0]).unwrap_or(-1), r)?;
            one(b.op(Op::Softmax { axis, log: false }, &[x], "softmax")?)
        }
        "Rescaling" => {
            let scale = f64_or(cfg, "scale", 1.0)?;
            let offset = f64_or(cfg, "offset", 0.0)?;
            let x = if b.g.ty(x).dtype.is_float() {
                x
            } else {
                b.op(
                    Op::Cast {
                        to: forgec_ir::DType::F32,
                    },
                    &[x],
                    "cast",
                )?
            };
            let m = b.bin_s(B::Mul, x, scale)?;
            one(b.bin_s(B::Add, m, offset)?)
        }
        "Normalization" => normalization(cx, b, cfg, x),
        "Embedding" => {
            let input_dim = usize_req(cfg, "input_dim")?;
            let output_dim = usize_req(cfg, "output_dim")?;
            let ws = cx.weights(b, &[w("embeddings", vec![input_dim, output_dim])])?;
            let idx = if b.g.ty(x).dtype.is_int() {
                x
            } else {
                b.op(
                    Op::Cast {
                        to: forgec_ir::DType::I32,
                    },
                    &[x],
                    "indices",
                )?
            };
            one(b.op(Op::Gather { axis: 0 }, &[ws[0], idx], "lookup")?)
        }
        c if c.starts_with("ZeroPadding") || c.starts_with("Cropping") => {
            let (nd, layout) = spatial_setup(b, x, c, cfg)?;
            let key = if c.starts_with("Zero") {
                "padding"
            } else {
                "cropping"
            };
            let pairs = pad_pairs(cfg, key, nd)?;
            let r = nd + 2;
            let first = if layout == Layout::ChannelsLast { 1 } else { 2 };
            if key == "padding" {
                let mut pads = vec![(0, 0); r];
                for (i, p) in pairs.into_iter().enumerate() {
                    pads[first + i] = p;
                }
                one(b.op(
                    Op::Pad {
                        pads,
                        mode: PadMode::Constant,
                        value: 0.0,
                    },
                    &[x],
                    "pad",
                )?)
            } else {
                let sp = spatial_dims(b, x, layout);
                let (mut axes, mut starts, mut ends) = (vec![], vec![], vec![]);
                for (i, (lo, hi)) in pairs.into_iter().enumerate() {
                    let n = sp[i].known().ok_or("cropping needs known spatial dims")?;
                    if lo + hi >= n {
                        return Err(format!(
                            "cropping ({lo}, {hi}) removes all {n} positions of spatial dim {i}"
                        ));
                    }
                    axes.push(first + i);
                    starts.push(lo as i64);
                    ends.push((n - hi) as i64);
                }
                let steps = vec![1; axes.len()];
                one(b.op(
                    Op::Slice {
                        axes,
                        starts,
                        ends,
                        steps,
                    },
                    &[x],
                    "crop",
                )?)
            }
        }
        "Resizing" | "CenterCrop" => one(image_preprocessing(b, class, cfg, x)?),
        c if c.starts_with("UpSampling") => {
            let interp = str_or(cfg, "interpolation", "nearest")?;
            let (nd, layout) = spatial_setup(b, x, c, cfg)?;
            let size = tuple(cfg, "size", nd, Some(2))?;
            match interp {
                "nearest" => upsample_nearest(b, x, &size, layout),
                "bilinear" | "bicubic" => upsample_resize(b, x, &size, layout, interp),
                other => Err(format!(
                    "interpolation='{other}' is not supported yet (nearest, bilinear and bicubic are)"
                )),
            }
        }
        "LSTM" | "GRU" | "SimpleRNN" => {
            let (y, _) = rnn(cx, b, class, cfg, x, None)?;
            one(y)
        }
        "Bidirectional" => bidirectional(cx, b, cfg, x),
        "TimeDistributed" => {
            let inner = get(cfg, "layer").ok_or("config has no `layer`")?;
            let iclass = inner
                .get("class_name")
                .and_then(|v| v.as_str())
                .unwrap_or("?");
            let icfg = inner.get("config").cloned().unwrap_or(Value::Null);
            // Layers that act on the last axis alone apply to (batch, time, ...) as they are.
            if matches!(
                iclass,
                "Dense" | "Activation" | "Dropout" | "ReLU" | "LeakyReLU" | "ELU" | "Softmax"
            ) {
                lower(cx, b, iclass, &icfg, ins)
            } else {
                Err(format!(
                    "TimeDistributed({iclass}) is not supported yet: forgec lowers TimeDistributed around Dense and activations"
                ))
            }
        }
        other => Err(format!("unsupported layer class {other}")),
    }
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

fn pad_pairs(cfg: &Value, key: &str, nd: usize) -> R<Vec<(usize, usize)>> {
    let v = get(cfg, key).ok_or(format!("config has no `{key}`"))?;
    let pair = |v: &Value| -> R<(usize, usize)> {
        match v {
            Value::Array(a) if a.len() == 2 => Ok((as_usize(&a[0], key)?, as_usize(&a[1], key)?)),
            v => {
                let n = as_usize(v, key)?;
                Ok((n, n))
            }
        }
    };
    match v {
        Value::Array(a) if nd == 1 && a.len() == 2 && !a[0].is_array() => Ok(vec![pair(v)?]),
        Value::Array(a) if a.len() == nd => a.iter().map(pair).collect(),
        v if !v.is_array() => Ok(vec![pair(v)?; nd]),
        v => Err(format!("config `{key}` {v} does not fit {nd} spatial dims")),
    }
}

fn conv(
    cx: &mut dyn LayerCx,
    b: &mut Lb,
    class: &str,
    cfg: &Value,
    x: ValueId,
    transpose: bool,
) -> R<Vec<ValueId>> {
    let (nd, layout) = spatial_setup(b, x, class, cfg)?;
    let filters = usize_req(cfg, "filters")?;
    let k = tuple(cfg, "kernel_size", nd, None)?;
    let strides = tuple(cfg, "strides", nd, Some(1))?;
    let dil = tuple(cfg, "dilation_rate", nd, Some(1))?;
    let groups = usize_or(cfg, "groups", 1)?;
    let padding = str_or(cfg, "padding", "valid")?.to_lowercase();
    let cin = channels(b, x, layout)?;
    let sp = spatial_dims(b, x, layout);
    let use_bias = bool_or(cfg, "use_bias", true)?;
    if groups == 0 || cin % groups != 0 || filters % groups != 0 {
        return Err(format!(
            "groups={groups} must divide the input channels ({cin}) and filters ({filters})"
        ));
    }
    let mut kshape = k.clone();
    if transpose {
        kshape.extend([filters / groups, cin]);
    } else {
        kshape.extend([cin / groups, filters]);
    }
    let mut specs = vec![w("kernel", kshape)];
    if use_bias {
        specs.push(w("bias", vec![filters]));
    }
    let ws = cx.weights(b, &specs)?;
    let y = if !transpose {
        let pads = pads_for(&padding, &sp, &k, &strides, &dil)?;
        let c = ConvAttrs {
            strides,
            dilations: dil,
            pads,
            groups,
            layout,
            output_padding: vec![],
        };
        // The IR keeps the Keras kernel layout (HWIO) for channels_last; channels_first data
        // with an HWIO kernel is handled by transposing the kernel to OIHW.
        let kern = if layout == Layout::ChannelsFirst {
            let mut perm = vec![nd + 1, nd];
            perm.extend(0..nd);
            b.op(Op::Transpose { perm }, &[ws[0]], "kernel_oihw")?
        } else {
            ws[0]
        };
        b.op(Op::Conv(c), &[x, kern], "conv")?
    } else {
        let out_pad = match get(cfg, "output_padding") {
            None => None,
            Some(_) => Some(tuple(cfg, "output_padding", nd, None)?),
        };
        let mut pads = Vec::new();
        let mut opad = Vec::new();
        for i in 0..nd {
            let n = sp[i]
                .known()
                .ok_or("conv transpose needs known spatial dims")?;
            let eff = (k[i] - 1) * dil[i] + 1;
            // Keras's deconv_output_length, then TF's padding for that output size.
            let target = match (&out_pad, padding.as_str()) {
                (None, "valid") => n * strides[i] + eff.saturating_sub(strides[i]),
                (None, _) => n * strides[i],
                (Some(op), p) => {
                    let pad = if p == "same" { eff / 2 } else { 0 };
                    ((n - 1) * strides[i] + eff + op[i]).saturating_sub(2 * pad)
                }
            };
            let begin = if padding == "same" {
                ((n - 1) * strides[i] + eff).saturating_sub(target) / 2
            } else {
                0
            };
            let full = (n - 1) * strides[i] + eff;
            if target + begin <= full {
                pads.push((begin, full - begin - target));
                opad.push(0);
            } else {
                pads.push((begin, 0));
                opad.push(target + begin - full);
            }
        }
        let c = ConvAttrs {
            strides,
            dilations: dil,
            pads,
            groups,
            layout,
            output_padding: opad,
        };
        let kern = if layout == Layout::ChannelsFirst {
            // [k..., Cout/g, Cin] -> [Cin, Cout/g, k...]
            let mut perm = vec![nd + 1, nd];
            perm.extend(0..nd);
            b.op(Op::Transpose { perm }, &[ws[0]], "kernel_io")?
        } else {
            ws[0]
        };
        b.op(Op::ConvTranspose(c), &[x, kern], "conv_transpose")?
    };
    let y = if use_bias {
        add_bias(b, y, ws[1], layout)?
    } else {
        y
    };
    Ok(vec![activation_of(cx, b, cfg, y)?])
}

fn depthwise(
    cx: &mut dyn LayerCx,
    b: &mut Lb,
    class: &str,
    cfg: &Value,
    x: ValueId,
    separable: bool,
) -> R<Vec<ValueId>> {
    let (nd, layout) = spatial_setup(b, x, class, cfg)?;
    let k = tuple(cfg, "kernel_size", nd, None)?;
    let strides = tuple(cfg, "strides", nd, Some(1))?;
    let dil = tuple(cfg, "dilation_rate", nd, Some(1))?;
    let m = usize_or(cfg, "depth_multiplier", 1)?;
    let padding = str_or(cfg, "padding", "valid")?.to_lowercase();
    let cin = channels(b, x, layout)?;
    let sp = spatial_dims(b, x, layout);
    let use_bias = bool_or(cfg, "use_bias", true)?;
    let mut dshape = k.clone();
    dshape.extend([cin, m]);
    let mut specs = vec![w(
        if separable {
            "depthwise_kernel"
        } else {
            "kernel"
        },
        dshape,
    )];
    let filters = if separable {
        usize_req(cfg, "filters")?
    } else {
        cin * m
    };
    if separable {
        let mut pshape = vec![1; nd];
        pshape.extend([cin * m, filters]);
        specs.push(w("pointwise_kernel", pshape));
    }
    if use_bias {
        specs.push(w("bias", vec![filters]));
    }
    let ws = cx.weights(b, &specs)?;
    // (k..., C, M) -> (k..., 1, C*M): a grouped conv with one group per input channel.
    let mut rs: Vec<i64> = k.iter().map(|&v| v as i64).collect();
    rs.extend([1, (cin * m) as i64]);
    let mut kern = b.op(Op::Reshape { shape: rs }, &[ws[0]], "depthwise_kernel")?;
    if layout == Layout::ChannelsFirst {
        let mut perm = vec![nd + 1, nd];
        perm.extend(0..nd);
        kern = b.op(Op::Transpose { perm }, &[kern], "kernel_oihw")?;
    }
    let pads = pads_for(&padding, &sp, &k, &strides, &dil)?;
    let c = ConvAttrs {
        strides,
        dilations: dil,
        pads,
        groups: cin,
        layout,
        output_padding: vec![],
    };
    let mut y = b.op(Op::Conv(c), &[x, kern], "depthwise")?;
    if separable {
        let mut pk = ws[1];
        if layout == Layout::ChannelsFirst {
            let mut perm = vec![nd + 1, nd];
            perm.extend(0..nd);
            pk = b.op(Op::Transpose { perm }, &[pk], "pointwise_oihw")?;
        }
        let c = ConvAttrs {
            strides: vec![1; nd],
            dilations: vec![1; nd],
            pads: vec![(0, 0); nd],
            groups: 1,
            layout,
            output_padding: vec![],
        };
        y = b.op(Op::Conv(c), &[y, pk], "pointwise")?;
    }
    if use_bias {
        y = add_bias(b, y, *ws.last().unwrap(), layout)?;
    }
    Ok(vec![activation_of(cx, b, cfg, y)?])
}

fn dot(b: &mut Lb, cfg: &Value, ins: &[ValueId]) -> R<Vec<ValueId>> {
    if ins.len() != 2 {
        return Err(format!("takes exactly two tensors, got {}", ins.len()));
    }
    let (mut x, mut y) = (ins[0], ins[1]);
    let (rx, ry) = (b.rank(x), b.rank(y));
    let axes = int_list(cfg, "axes")?.ok_or("config has no `axes`")?;
    let (ax, ay) = match axes.as_slice() {
        [a] => (norm_axis(*a, rx)?, norm_axis(*a, ry)?),
        [a, c] => (norm_axis(*a, rx)?, norm_axis(*c, ry)?),
        _ => return Err("axes must be one or two integers".into()),
    };
    if bool_or(cfg, "normalize", false)? {
        x = l2_normalize(b, x, ax)?;
        y = l2_normalize(b, y, ay)?;
    }
    match (rx, ry) {
        (2, 2) if ax == 1 && ay == 1 => {
            let p = b.bin(B::Mul, x, y)?;
            let s = b.op(
                Op::Reduce {
                    kind: ReduceKind::Sum,
                    axes: vec![1],
                    keepdims: true,
                },
                &[p],
                "dot",
            )?;
            Ok(vec![s])
        }
        (3, 3) if ax >= 1 && ay >= 1 => {
            // Batched matmul: x contracted on ax, y on ay.
            let xm = if ax == 2 {
                x
            } else {
                b.op(
                    Op::Transpose {
                        perm: vec![0, 2, 1],
                    },
                    &[x],
                    "dot_lhs",
                )?
            };
            let ym = if ay == 1 {
                y
            } else {
                b.op(
                    Op::Transpose {
                        perm: vec![0, 2, 1],
                    },
                    &[y],
                    "dot_rhs",
                )?
            };
            Ok(vec![b.op(Op::MatMul, &[xm, ym], "dot")?])
        }
        _ => Err(format!(
            "Dot of ranks {rx} and {ry} on axes ({ax}, {ay}) is not supported yet"
        )),
    }
}

fn l2_normalize(b: &mut Lb, x: ValueId, axis: usize) -> R<ValueId> {
    let sq = b.bin(B::Mul, x, x)?;
    let s = b.op(
        Op::Reduce {
            kind: ReduceKind::Sum,
            axes: vec![axis],
            keepdims: true,
        },
        &[sq],
        "l2_sum",
    )?;
    let s = b.bin_s(B::Max, s, 1e-12)?;
    let r = b.un(U::Rsqrt, s)?;
    b.bin(B::Mul, x, r)
}

fn normalization(cx: &mut dyn LayerCx, b: &mut Lb, cfg: &Value, x: ValueId) -> R<Vec<ValueId>> {
    let t = b.g.ty(x).clone();
    let r = t.rank();
    let axes: Vec<usize> = int_list(cfg, "axis")?
        .unwrap_or(vec![-1])
        .into_iter()
        .map(|a| norm_axis(a, r))
        .collect::<R<_>>()?;
    let kept: Vec<usize> = axes
        .iter()
        .map(|&a| {
            t.shape[a]
                .known()
                .ok_or("the normalized axes must be known".to_string())
        })
        .collect::<R<_>>()?;
    // Broadcast shape: 1 everywhere but the kept axes.
    let bshape: Vec<i64> = (0..r)
        .map(|i| {
            axes.iter()
                .position(|&a| a == i)
                .map(|k| kept[k] as i64)
                .unwrap_or(1)
        })
        .collect();
    let invert = bool_or(cfg, "invert", false)?;
    let (mean, var) = match (get(cfg, "mean"), get(cfg, "variance")) {
        (Some(m), Some(v)) => {
            // Values given in the config; no weights are stored.
            let n: usize = kept.iter().product();
            let vals = |v: &Value, k: &str| -> R<Vec<f64>> {
                let flat: Vec<f64> = match v {
                    Value::Array(a) => flatten_numbers(a),
                    Value::Number(x) => vec![x.as_f64().unwrap_or(0.0); n],
                    _ => return Err(format!("config `{k}` must be numbers")),
                };
                if flat.len() == 1 {
                    Ok(vec![flat[0]; n])
                } else if flat.len() == n {
                    Ok(flat)
                } else {
                    Err(format!(
                        "config `{k}` has {} values for {n} features",
                        flat.len()
                    ))
                }
            };
            let mt = Tensor::from_f64_values(t.dtype, kept.clone(), &vals(m, "mean")?)
                .map_err(|e| e.0)?;
            let vt = Tensor::from_f64_values(t.dtype, kept.clone(), &vals(v, "variance")?)
                .map_err(|e| e.0)?;
            let o = b.origin.clone();
            let base = b.base.clone();
            (
                b.g.add_const(mt, None, &format!("{base}.mean"), &o),
                b.g.add_const(vt, None, &format!("{base}.variance"), &o),
            )
        }
        _ => {
            let ws = cx.weights(
                b,
                &[
                    w_fixed("mean", kept.clone()),
                    w_fixed("variance", kept.clone()),
                    w_fixed("count", vec![]),
                ],
            )?;
            (ws[0], ws[1])
        }
    };
    let mean = b.op(
        Op::Reshape {
            shape: bshape.clone(),
        },
        &[mean],
        "mean",
    )?;
    let var = b.op(Op::Reshape { shape: bshape }, &[var], "variance")?;
    let sd = b.un(U::Sqrt, var)?;
    // Keras: (x - mean) / max(sqrt(var), 1e-7); invert: mean + x * max(sqrt(var), 1e-7).
    let sd = b.bin_s(B::Max, sd, 1e-7)?;
    let x = if t.dtype.is_float() {
        x
    } else {
        b.op(
            Op::Cast {
                to: forgec_ir::DType::F32,
            },
            &[x],
            "cast",
        )?
    };
    let y = if invert {
        let m = b.bin(B::Mul, x, sd)?;
        b.bin(B::Add, mean, m)?
    } else {
        let d = b.bin(B::Sub, x, mean)?;
        b.bin(B::Div, d, sd)?
    };
    Ok(vec![y])
}

fn flatten_numbers(a: &[Value]) -> Vec<f64> {
    let mut out = Vec::new();
    for v in a {
        match v {
            Value::Array(inner) => out.extend(flatten_numbers(inner)),
            v => out.push(v.as_f64().unwrap_or(f64::NAN)),
        }
    }
    out
}

/// UpSampling2D with `bilinear` or `bicubic`: Keras resizes with TensorFlow's
/// `tf.image.resize` (half-pixel centers, no antialiasing; Keys' cubic with a = -0.5), which
/// is ONNX's Resize in `half_pixel` mode.
fn upsample_resize(
    b: &mut Lb,
    x: ValueId,
    size: &[usize],
    layout: Layout,
    interp: &str,
) -> R<Vec<ValueId>> {
    let t = b.g.ty(x).clone();
    let first = if layout == Layout::ChannelsLast { 1 } else { 2 };
    let mut sizes = t.shape.clone();
    let mut scales = vec![1.0; t.rank()];
    for (i, &s) in size.iter().enumerate() {
        let n = t.shape[first + i]
            .known()
            .ok_or("upsampling needs known non-batch dims")?;
        sizes[first + i] = Dim::Known(n * s);
        scales[first + i] = s as f64;
    }
    let attrs = ResizeAttrs {
        sizes,
        scales,
        mode: if interp == "bilinear" {
            "linear"
        } else {
            "cubic"
        }
        .into(),
        coord: "half_pixel".into(),
        nearest_mode: "round_prefer_floor".into(),
        cubic_a: -0.5,
        exclude_outside: false,
        extrapolation: 0.0,
        antialias: false,
        roi: Vec::new(),
    };
    Ok(vec![b.op(Op::Resize(attrs), &[x], "upsample")?])
}

fn upsample_nearest(b: &mut Lb, x: ValueId, size: &[usize], layout: Layout) -> R<Vec<ValueId>> {
    // (N, d1, ..., C) -> (N, d1, 1, d2, 1, ..., C) -> broadcast -> (N, d1*s1, d2*s2, ..., C)
    let t = b.g.ty(x).clone();
    let nd = size.len();
    let first = if layout == Layout::ChannelsLast { 1 } else { 2 };
    let dims: Vec<usize> = t.shape[1..]
        .iter()
        .map(|d| {
            d.known()
                .ok_or("upsampling needs known non-batch dims".to_string())
        })
        .collect::<R<_>>()?;
    let mut expanded = vec![0i64];
    let mut bshape = vec![1usize];
    let mut out = vec![0i64];
    for (i, &d) in dims.iter().enumerate() {
        let axis = i + 1;
        expanded.push(d as i64);
        bshape.push(1);
        if axis >= first && axis < first + nd {
            let s = size[axis - first];
            expanded.push(1);
            bshape.push(s);
            out.push((d * s) as i64);
        } else {
            out.push(d as i64);
        }
    }
    let e = b.op(Op::Reshape { shape: expanded }, &[x], "upsample_expand")?;
    let shape = bshape.into_iter().map(Dim::Known).collect();
    let r = b.op(Op::Broadcast { shape }, &[e], "upsample_repeat")?;
    Ok(vec![b.op(Op::Reshape { shape: out }, &[r], "upsample")?])
}

fn rnn_activation(cfg: &Value, key: &str, default: &str, legacy: bool) -> R<Activation> {
    let name = match get(cfg, key) {
        None => default.to_string(),
        v => activations::name_of(v)?,
    };
    match name.as_str() {
        "linear" => Ok(Activation::Linear),
        "tanh" => Ok(Activation::Tanh),
        "sigmoid" => Ok(Activation::Sigmoid),
        "relu" => Ok(Activation::Relu),
        "hard_sigmoid" if !legacy => Ok(Activation::HardSigmoid),
        "hard_sigmoid" => Err("tf.keras 2's hard_sigmoid inside a recurrent cell is not supported yet".into()),
        other => Err(format!("{key}='{other}' inside a recurrent cell is not supported (use tanh, sigmoid, relu, hard_sigmoid or linear)")),
    }
}

/// Lowers LSTM / GRU / SimpleRNN. `go_backwards` overrides the config (Bidirectional).
fn rnn(
    cx: &mut dyn LayerCx,
    b: &mut Lb,
    class: &str,
    cfg: &Value,
    x: ValueId,
    go_backwards: Option<bool>,
) -> R<(ValueId, bool)> {
    check_rank(b, x, 3, "(batch, timesteps, features)")?;
    for (k, what) in [
        ("return_state", "return_state=True"),
        ("stateful", "stateful=True"),
    ] {
        if bool_or(cfg, k, false)? {
            return Err(format!("{what} is not supported yet"));
        }
    }
    let cell = match class {
        "LSTM" => RnnCell::Lstm,
        "GRU" => RnnCell::Gru,
        _ => RnnCell::Simple,
    };
    let units = usize_req(cfg, "units")?;
    let legacy = cx.legacy();
    let activation = rnn_activation(cfg, "activation", "tanh", legacy)?;
    let recurrent_activation = if cell == RnnCell::Simple {
        Activation::Sigmoid
    } else {
        rnn_activation(cfg, "recurrent_activation", "sigmoid", legacy)?
    };
    let reset_after = cell == RnnCell::Gru && bool_or(cfg, "reset_after", true)?;
    let fin = b.g.ty(x).shape[2]
        .known()
        .ok_or("the feature dim must be known")?;
    let gu = cell.gates() * units;
    let use_bias = bool_or(cfg, "use_bias", true)?;
    let mut specs = vec![
        w("kernel", vec![fin, gu]),
        w("recurrent_kernel", vec![units, gu]),
    ];
    if use_bias {
        specs.push(w("bias", if reset_after { vec![2, gu] } else { vec![gu] }));
    }
    let ws = cx.weights(b, &specs)?;
    let bias = if use_bias {
        ws[2]
    } else {
        let shape = if reset_after { vec![2, gu] } else { vec![gu] };
        let t = Tensor::full(b.g.ty(x).dtype, shape, 0.0).expect("small");
        let (o, n) = (b.origin.clone(), format!("{}.bias", b.base));
        b.g.add_const(t, None, &n, &o)
    };
    let return_sequences = bool_or(cfg, "return_sequences", false)?;
    let go_backwards = go_backwards.unwrap_or(bool_or(cfg, "go_backwards", false)?);
    let a = RnnAttrs {
        cell,
        units,
        activation,
        recurrent_activation,
        return_sequences,
        go_backwards,
        reset_after,
    };
    Ok((
        b.op(Op::Rnn(a), &[x, ws[0], ws[1], bias], class)?,
        return_sequences,
    ))
}

fn bidirectional(cx: &mut dyn LayerCx, b: &mut Lb, cfg: &Value, x: ValueId) -> R<Vec<ValueId>> {
    let layer = get(cfg, "layer").ok_or("config has no `layer`")?;
    let class = layer
        .get("class_name")
        .and_then(|v| v.as_str())
        .unwrap_or("?")
        .to_string();
    if !matches!(class.as_str(), "LSTM" | "GRU" | "SimpleRNN") {
        return Err(format!(
            "Bidirectional({class}) is not supported (LSTM, GRU and SimpleRNN are)"
        ));
    }
    let fcfg = layer.get("config").cloned().unwrap_or(Value::Null);
    let bcfg = get(cfg, "backward_layer")
        .and_then(|l| l.get("config"))
        .cloned()
        .unwrap_or_else(|| fcfg.clone());
    let fwd_back = bool_or(&fcfg, "go_backwards", false)?;
    let (f, seq) = rnn(cx, b, &class, &fcfg, x, Some(fwd_back))?;
    let (mut r, _) = rnn(cx, b, &class, &bcfg, x, Some(!fwd_back))?;
    if seq {
        // The backward pass emits its outputs in processing order: flip them back in time.
        let t = b.g.ty(x).shape[1]
            .known()
            .ok_or("Bidirectional with return_sequences needs a known number of timesteps")?;
        r = b.op(
            Op::Slice {
                axes: vec![1],
                starts: vec![t as i64 - 1],
                ends: vec![-(t as i64) - 1],
                steps: vec![-1],
            },
            &[r],
            "reverse_time",
        )?;
    }
    let last = b.rank(f) - 1;
    let y = match str_or(cfg, "merge_mode", "concat")? {
        "concat" => b.op(Op::Concat { axis: last }, &[f, r], "concat")?,
        "sum" => b.bin(B::Add, f, r)?,
        "mul" => b.bin(B::Mul, f, r)?,
        "ave" => {
            let s = b.bin(B::Add, f, r)?;
            b.bin_s(B::Mul, s, 0.5)?
        }
        other => return Err(format!("merge_mode='{other}' is not supported")),
    };
    Ok(vec![y])
}

/// Keras's MultiHeadAttention called as `(query, value)` or `(query, value, key)` on
/// `[batch, T, dim]` sequences, attending over the sequence axis (the default
/// `attention_axes`): each projection a Dense over the last dim (`[dim, heads, key_dim]`
/// kernels seen as `[dim, heads * key_dim]`), the query scaled by `1/sqrt(key_dim)` before
/// its product with the keys (as Keras does), a softmax over the keys, dropout on the
/// probabilities (training), and the heads' outputs projected back by `output_dense`.
fn multi_head_attention(
    cx: &mut dyn LayerCx,
    b: &mut Lb,
    cfg: &Value,
    ins: &[ValueId],
) -> R<ValueId> {
    if !(2..=3).contains(&ins.len()) {
        return Err(format!(
            "is called with {} tensors; forgec takes (query, value) or (query, value, key) (a mask passed as a tensor is not supported yet)",
            ins.len()
        ));
    }
    let (q, v, k) = attention_inputs(b, ins)?;
    if let Some(axes) = int_list(cfg, "attention_axes")? {
        if axes != [1] && axes != [-2] {
            return Err(format!(
                "attention_axes={axes:?} is not supported yet (forgec attends over the sequence axis of [batch, sequence, features] inputs)"
            ));
        }
    }
    if bool_or(cfg, "use_gate", false)? {
        return Err("use_gate=True is not supported yet".into());
    }
    if get(cfg, "sliding_window").is_some_and(|w| !w.is_null()) {
        return Err("sliding_window is not supported yet".into());
    }
    let causal = attention_call(cfg)?;
    // GroupedQueryAttention (saved as `GroupQueryAttention`, the name keras.layers gives it):
    // `num_key_value_heads` key and value heads, each serving
    // `num_query_heads / num_key_value_heads` query heads in a row (Keras repeats them).
    let gqa = get(cfg, "num_query_heads").is_some();
    let (heads, kv_heads, key_dim, value_dim) = if gqa {
        let (hq, hkv) = (
            usize_req(cfg, "num_query_heads")?,
            usize_req(cfg, "num_key_value_heads")?,
        );
        if hkv == 0 || !hq.is_multiple_of(hkv) {
            return Err(format!(
                "num_query_heads={hq} is not a multiple of num_key_value_heads={hkv}"
            ));
        }
        let hd = usize_req(cfg, "head_dim")?;
        (hq, hkv, hd, hd)
    } else {
        let heads = usize_req(cfg, "num_heads")?;
        let key_dim = usize_req(cfg, "key_dim")?;
        let value_dim = match get(cfg, "value_dim") {
            Some(x) if !x.is_null() => usize_req(cfg, "value_dim")?,
            _ => key_dim,
        };
        (heads, heads, key_dim, value_dim)
    };
    let use_bias = bool_or(cfg, "use_bias", true)?;
    let last = |b: &Lb, x: ValueId| -> R<usize> {
        b.g.ty(x).shape[2]
            .known()
            .ok_or_else(|| "the features dim of its inputs must be known".to_string())
    };
    let (dq, dk, dv) = (last(b, q)?, last(b, k)?, last(b, v)?);
    let out_dim = match get(cfg, "output_shape") {
        None | Some(Value::Null) => dq,
        Some(Value::Number(n)) => n.as_u64().ok_or("output_shape must be a size")? as usize,
        Some(Value::Array(a)) if a.len() == 1 => {
            a[0].as_u64().ok_or("output_shape must be a size")? as usize
        }
        Some(other) => {
            return Err(format!(
                "output_shape {other} is not supported yet (one size for the last dim)"
            ))
        }
    };
    let mut specs = Vec::new();
    for (name, d, h, per) in [
        ("query", dq, heads, key_dim),
        ("key", dk, kv_heads, key_dim),
        ("value", dv, kv_heads, value_dim),
    ] {
        specs.push(w(&format!("{name}_dense.kernel"), vec![d, h, per]));
        if use_bias {
            specs.push(w(&format!("{name}_dense.bias"), vec![h, per]));
        }
    }
    specs.push(w("output_dense.kernel", vec![heads, value_dim, out_dim]));
    if use_bias {
        specs.push(w("output_dense.bias", vec![out_dim]));
    }
    let ws = cx.weights(b, &specs)?;
    let mut ws = ws.into_iter();
    // A projection's weight with `kv_heads` heads (axis `at`), each repeated `heads / kv_heads`
    // times in a row: times ones of the repeat's shape, which keeps it one trainable weight
    // (its gradient sums over the repeats), and each repeated column computes the bits the
    // single one would.
    let repeat = |b: &mut Lb, wv: ValueId, at: usize| -> R<ValueId> {
        let r = heads / kv_heads;
        if r == 1 {
            return Ok(wv);
        }
        let mut shape: Vec<i64> =
            b.g.ty(wv)
                .shape
                .iter()
                .map(|d| d.known().unwrap_or(1) as i64)
                .collect();
        shape.insert(at + 1, 1);
        let wv = b.op(
            Op::Reshape {
                shape: shape.clone(),
            },
            &[wv],
            "heads_reshape",
        )?;
        let mut ones = vec![1usize; shape.len()];
        ones[at + 1] = r;
        let dt = b.g.ty(wv).dtype;
        let t = Tensor::full(dt, ones, 1.0).map_err(|e| e.to_string())?;
        let name = format!("{}.repeat_heads", b.base);
        let o = b.g.add_const(t, None, &name, &b.origin.clone());
        b.bin(B::Mul, wv, o)
    };
    // x [batch, T, d] -> [batch, heads, T, per], through a [d, heads * per] matmul.
    let project = |b: &mut Lb,
                   x: ValueId,
                   d: usize,
                   per: usize,
                   kv: bool,
                   ws: &mut dyn Iterator<Item = ValueId>|
     -> R<ValueId> {
        let kernel = ws.next().ok_or("a missing kernel")?;
        let kernel = if kv { repeat(b, kernel, 1)? } else { kernel };
        let kernel = b.op(
            Op::Reshape {
                shape: vec![d as i64, (heads * per) as i64],
            },
            &[kernel],
            "kernel_reshape",
        )?;
        let mut y = b.op(Op::MatMul, &[x, kernel], "matmul")?;
        if use_bias {
            let bias = ws.next().ok_or("a missing bias")?;
            let bias = if kv { repeat(b, bias, 0)? } else { bias };
            let bias = b.op(
                Op::Reshape {
                    shape: vec![(heads * per) as i64],
                },
                &[bias],
                "bias_reshape",
            )?;
            y = b.bin(B::Add, y, bias)?;
        }
        let y = b.op(
            Op::Reshape {
                shape: vec![0, 0, heads as i64, per as i64],
            },
            &[y],
            "split_heads",
        )?;
        b.op(
            Op::Transpose {
                perm: vec![0, 2, 1, 3],
            },
            &[y],
            "heads_first",
        )
    };
    let qh = project(b, q, dq, key_dim, false, &mut ws)?;
    let kh = project(b, k, dk, key_dim, true, &mut ws)?;
    let vh = project(b, v, dv, value_dim, true, &mut ws)?;
    let qh = b.bin_s(B::Mul, qh, 1.0 / (key_dim as f64).sqrt())?;
    let kt = b.op(
        Op::Transpose {
            perm: vec![0, 1, 3, 2],
        },
        &[kh],
        "keys_transposed",
    )?;
    let scores = b.op(Op::MatMul, &[qh, kt], "scores")?;
    let p = attention_probs(b, cfg, scores, causal.then_some((q, k)))?;
    let o = b.op(Op::MatMul, &[p, vh], "attend")?;
    let o = b.op(
        Op::Transpose {
            perm: vec![0, 2, 1, 3],
        },
        &[o],
        "heads_last",
    )?;
    let o = b.op(
        Op::Reshape {
            shape: vec![0, 0, (heads * value_dim) as i64],
        },
        &[o],
        "merge_heads",
    )?;
    let kernel = ws.next().ok_or("a missing output kernel")?;
    let kernel = b.op(
        Op::Reshape {
            shape: vec![(heads * value_dim) as i64, out_dim as i64],
        },
        &[kernel],
        "kernel_reshape",
    )?;
    let mut y = b.op(Op::MatMul, &[o, kernel], "output")?;
    if use_bias {
        let bias = ws.next().ok_or("a missing output bias")?;
        y = b.bin(B::Add, y, bias)?;
    }
    Ok(y)
}

/// A weight over `axes` of a rank-`r` value, reshaped to broadcast against it (sizes on `axes`,
/// 1 elsewhere; unchanged when `axes` is the last axis alone).
fn broadcast_along(b: &mut Lb, w: ValueId, axes: &[usize], r: usize) -> R<ValueId> {
    if axes == [r - 1] {
        return Ok(w);
    }
    let sizes: Vec<i64> =
        b.g.ty(w)
            .shape
            .iter()
            .map(|d| d.known().unwrap_or(1) as i64)
            .collect();
    let mut shape = vec![1i64; r];
    for (k, &a) in axes.iter().enumerate() {
        shape[a] = sizes.get(k).copied().unwrap_or(1);
    }
    b.op(Op::Reshape { shape }, &[w], "broadcast_reshape")
}

/// Keras's GroupNormalization over the channels of a channels-last input: the channels cut
/// into `groups`, each group's mean and variance taken over it and every non-batch axis, then
/// `x * inv + (beta - mean * inv)` with `inv = gamma * rsqrt(var + eps)`, as Keras orders it.
fn group_normalization(cx: &mut dyn LayerCx, b: &mut Lb, cfg: &Value, x: ValueId) -> R<ValueId> {
    let r = b.rank(x);
    if r < 2 {
        return Err("expects an input with a batch and channels".into());
    }
    let axis = norm_axis(
        get(cfg, "axis")
            .map(|v| i64_of(v, "axis"))
            .transpose()?
            .unwrap_or(-1),
        r,
    )?;
    if axis != r - 1 {
        return Err(format!(
            "axis={axis} is not supported yet (forgec takes the channels on the last axis)"
        ));
    }
    let t = b.g.ty(x).clone();
    let dims: Vec<usize> = t.shape[1..]
        .iter()
        .map(|d| {
            d.known()
                .ok_or("the non-batch dims must be known".to_string())
        })
        .collect::<R<_>>()?;
    let c = dims[dims.len() - 1];
    let groups = usize_req(cfg, "groups")?;
    if groups == 0 || !c.is_multiple_of(groups) {
        return Err(format!("{c} channels do not split into {groups} groups"));
    }
    let eps = f64_or(cfg, "epsilon", 1e-3)?;
    let (center, scale) = (bool_or(cfg, "center", true)?, bool_or(cfg, "scale", true)?);
    let mut specs = Vec::new();
    if scale {
        specs.push(w("gamma", vec![c]));
    }
    if center {
        specs.push(w("beta", vec![c]));
    }
    let mut ws = cx.weights(b, &specs)?.into_iter();
    // [batch, ..., c] -> [batch, ..., groups, c / groups]
    let mut grouped: Vec<i64> = vec![0];
    grouped.extend(dims[..dims.len() - 1].iter().map(|&d| d as i64));
    grouped.extend([groups as i64, (c / groups) as i64]);
    let xg = b.op(Op::Reshape { shape: grouped }, &[x], "groups")?;
    let axes: Vec<usize> = (1..r - 1).chain([r]).collect();
    let mean = |b: &mut Lb, v: ValueId| {
        b.op(
            Op::Reduce {
                kind: ReduceKind::Mean,
                axes: axes.clone(),
                keepdims: true,
            },
            &[v],
            "mean",
        )
    };
    let m = mean(b, xg)?;
    let d = b.bin(B::Sub, xg, m)?;
    let d2 = b.bin(B::Mul, d, d)?;
    let var = mean(b, d2)?;
    let v = b.bin_s(B::Add, var, eps)?;
    let mut inv = b.un(U::Rsqrt, v)?;
    let per_group = |b: &mut Lb, w: ValueId| {
        b.op(
            Op::Reshape {
                shape: vec![groups as i64, (c / groups) as i64],
            },
            &[w],
            "group_reshape",
        )
    };
    if scale {
        let gamma = ws.next().ok_or("a missing gamma")?;
        let gamma = per_group(b, gamma)?;
        inv = b.bin(B::Mul, inv, gamma)?;
    }
    let nm = b.un(U::Neg, m)?;
    let mut res = b.bin(B::Mul, nm, inv)?;
    if center {
        let beta = ws.next().ok_or("a missing beta")?;
        let beta = per_group(b, beta)?;
        res = b.bin(B::Add, res, beta)?;
    }
    let y = b.bin(B::Mul, xg, inv)?;
    let y = b.bin(B::Add, y, res)?;
    let mut back: Vec<i64> = vec![0];
    back.extend(dims.iter().map(|&d| d as i64));
    b.op(Op::Reshape { shape: back }, &[y], "ungroup")
}

/// Keras's causal mask for `t` queries over `s` keys as an additive bias: 0 where query i may
/// see key j (j <= i), -1e9 elsewhere (what Keras subtracts there; the softmax then gives 0).
fn causal_bias(b: &mut Lb, t: usize, s: usize, like: ValueId) -> R<ValueId> {
    // The mask is a constant made here: its size comes from the model file.
    const MAX_MASK: usize = 1 << 26;
    if t.checked_mul(s).is_none_or(|n| n > MAX_MASK) {
        return Err(format!(
            "use_causal_mask over {t} queries and {s} keys would need a mask of over 2^26 elements"
        ));
    }
    let dt = b.g.ty(like).dtype;
    let bias: Vec<f64> = (0..t * s)
        .map(|n| if n % s <= n / s { 0.0 } else { -1e9 })
        .collect();
    let bias = Tensor::from_f64_values(dt, vec![t, s], &bias).map_err(|e| e.to_string())?;
    let name = format!("{}.causal_mask", b.base);
    Ok(b.g.add_const(bias, None, &name, &b.origin.clone()))
}

/// An attention layer's query, value and key (the value when none is given), each checked to
/// be `[batch, sequence, features]`.
fn attention_inputs(b: &Lb, ins: &[ValueId]) -> R<(ValueId, ValueId, ValueId)> {
    let (q, v) = (ins[0], ins[1]);
    let k = ins.get(2).copied().unwrap_or(v);
    for (what, x) in [("query", q), ("value", v), ("key", k)] {
        check_rank(
            b,
            x,
            3,
            &format!("as its {what} ([batch, sequence, features])"),
        )?;
    }
    Ok((q, v, k))
}

/// Whether an attention layer's call asks for the causal mask (`use_causal_mask`); a call
/// asking for the attention scores too is refused.
fn attention_call(cfg: &Value) -> R<bool> {
    let call = get(cfg, "call_kwargs").cloned().unwrap_or(Value::Null);
    if bool_or(&call, "return_attention_scores", false)? {
        return Err("return_attention_scores=True is not supported yet".into());
    }
    bool_or(&call, "use_causal_mask", false)
}

/// The attention probabilities from `scores` (the keys on its last axis): with `causal`
/// (the query and key tensors), Keras's causal mask added; the softmax over the keys; the
/// layer's dropout (training only).
fn attention_probs(
    b: &mut Lb,
    cfg: &Value,
    mut scores: ValueId,
    causal: Option<(ValueId, ValueId)>,
) -> R<ValueId> {
    if let Some((q, k)) = causal {
        let len = |x: ValueId| {
            b.g.ty(x).shape[1]
                .known()
                .ok_or_else(|| "use_causal_mask needs known sequence lengths".to_string())
        };
        let (t, s) = (len(q)?, len(k)?);
        let bias = causal_bias(b, t, s, scores)?;
        scores = b.bin(B::Add, scores, bias)?;
    }
    let axis = b.rank(scores) - 1;
    let mut p = b.op(Op::Softmax { axis, log: false }, &[scores], "softmax")?;
    let rate = f64_or(cfg, "dropout", 0.0)?;
    if rate > 0.0 {
        p = b.op(Op::Dropout { rate }, &[p], "dropout")?;
    }
    Ok(p)
}

/// Keras's Attention (dot-product or `concat` scores, `use_scale`) and AdditiveAttention,
/// called on `[query, value]` or `[query, value, key]` (`[batch, T, dim]` each): the scores
/// `[batch, Tq, Tv]`, the causal mask if the call asks, a softmax over the keys, dropout
/// (training), and the weighted sum of the values.
fn attention(
    cx: &mut dyn LayerCx,
    b: &mut Lb,
    class: &str,
    cfg: &Value,
    ins: &[ValueId],
) -> R<ValueId> {
    if !(2..=3).contains(&ins.len()) {
        return Err(format!(
            "is called with {} tensors; it takes [query, value] or [query, value, key]",
            ins.len()
        ));
    }
    let (q, v, k) = attention_inputs(b, ins)?;
    let causal = attention_call(cfg)?;
    let use_scale = bool_or(cfg, "use_scale", class == "AdditiveAttention")?;
    let mode = if class == "AdditiveAttention" {
        "additive"
    } else {
        str_or(cfg, "score_mode", "dot")?
    };
    let dim = b.g.ty(q).shape[2]
        .known()
        .ok_or("the features dim of its inputs must be known")?;
    let mut specs = Vec::new();
    if use_scale {
        specs.push(w(
            "scale",
            if mode == "additive" {
                vec![dim]
            } else {
                vec![]
            },
        ));
    }
    if mode == "concat" {
        specs.push(w("concat_score_weight", vec![]));
    }
    let mut ws = cx.weights(b, &specs)?.into_iter();
    let scale = if use_scale { ws.next() } else { None };
    let scores = match mode {
        "dot" => {
            let kt = b.op(
                Op::Transpose {
                    perm: vec![0, 2, 1],
                },
                &[k],
                "keys_transposed",
            )?;
            let s = b.op(Op::MatMul, &[q, kt], "scores")?;
            match scale {
                Some(w) => b.bin(B::Mul, s, w)?,
                None => s,
            }
        }
        "concat" | "additive" => {
            // [batch, Tq, 1, dim] + [batch, 1, Tv, dim]
            let qe = b.op(
                Op::Reshape {
                    shape: vec![0, 0, 1, dim as i64],
                },
                &[q],
                "query_expanded",
            )?;
            let ke = b.op(
                Op::Reshape {
                    shape: vec![0, 1, -1, dim as i64],
                },
                &[k],
                "key_expanded",
            )?;
            let mut s = b.bin(B::Add, qe, ke)?;
            if let (Some(w), "concat") = (scale, mode) {
                s = b.bin(B::Mul, w, s)?;
            }
            let mut s = b.un(U::Tanh, s)?;
            if let (Some(w), "additive") = (scale, mode) {
                s = b.bin(B::Mul, w, s)?;
            }
            let s = b.op(
                Op::Reduce {
                    kind: ReduceKind::Sum,
                    axes: vec![3],
                    keepdims: false,
                },
                &[s],
                "scores",
            )?;
            if mode == "concat" {
                let cw = ws.next().ok_or("a missing concat_score_weight")?;
                b.bin(B::Mul, cw, s)?
            } else {
                s
            }
        }
        other => return Err(format!("score_mode '{other}' is not one Keras has")),
    };
    let p = attention_probs(b, cfg, scores, causal.then_some((q, k)))?;
    b.op(Op::MatMul, &[p, v], "attend")
}

/// Keras's Resizing and CenterCrop on a batch of images (`[batch, h, w, c]`, or channels first).
/// Resizing is the backend's image resize without antialiasing: half-pixel centers, bilinear
/// (triangle), bicubic (Keys, a = -0.5) or nearest (the pixel whose center is nearest, ties up),
/// which are ONNX's Resize in `half_pixel` mode, nearest rounding half up. Bicubic differs
/// between Keras's backends at the border: TensorFlow repeats the edge pixels (taken here, as
/// for UpSampling2D), jax drops the taps outside and renormalizes (measured: 4.4e-2 apart at
/// the edges, 1e-6 with jax's rule). CenterCrop keeps the
/// middle `height x width` pixels (the extra one, for an odd difference, cut at the end).
fn image_preprocessing(b: &mut Lb, class: &str, cfg: &Value, x: ValueId) -> R<ValueId> {
    check_rank(b, x, 4, "(a batch of images)")?;
    let layout = data_format(cfg)?;
    let first = if layout == Layout::ChannelsLast { 1 } else { 2 };
    let (h, w) = (usize_req(cfg, "height")?, usize_req(cfg, "width")?);
    if h == 0 || w == 0 {
        return Err(format!("height {h} and width {w} must be at least 1"));
    }
    let t = b.g.ty(x).clone();
    let dims: Vec<usize> = (0..2)
        .map(|i| match t.shape[first + i].known() {
            Some(n) if n > 0 => Ok(n),
            _ => Err("the image's height and width must be known and at least 1".to_string()),
        })
        .collect::<R<_>>()?;
    if class == "CenterCrop" {
        if h > dims[0] || w > dims[1] {
            return Err(format!(
                "crops {}x{} images to {h}x{w}: a crop larger than the image (which Keras resizes first) is not supported yet",
                dims[0], dims[1]
            ));
        }
        let starts = vec![((dims[0] - h) / 2) as i64, ((dims[1] - w) / 2) as i64];
        let ends = vec![starts[0] + h as i64, starts[1] + w as i64];
        return b.op(
            Op::Slice {
                axes: vec![first, first + 1],
                starts,
                ends,
                steps: vec![1, 1],
            },
            &[x],
            "center_crop",
        );
    }
    for flag in ["crop_to_aspect_ratio", "pad_to_aspect_ratio", "antialias"] {
        if bool_or(cfg, flag, false)? {
            return Err(format!("{flag}=True is not supported yet"));
        }
    }
    let mode = match str_or(cfg, "interpolation", "bilinear")? {
        "bilinear" => "linear",
        "bicubic" => "cubic",
        "nearest" => "nearest",
        other => {
            return Err(format!(
                "interpolation='{other}' is not supported yet (bilinear, bicubic and nearest are)"
            ))
        }
    };
    let mut sizes = t.shape.clone();
    let mut scales = vec![1.0; 4];
    for (i, &n) in [h, w].iter().enumerate() {
        sizes[first + i] = Dim::Known(n);
        scales[first + i] = n as f64 / dims[i] as f64;
    }
    let attrs = ResizeAttrs {
        sizes,
        scales,
        mode: mode.into(),
        coord: "half_pixel".into(),
        nearest_mode: "round_prefer_ceil".into(),
        cubic_a: -0.5,
        exclude_outside: false,
        extrapolation: 0.0,
        antialias: false,
        roi: Vec::new(),
    };
    b.op(Op::Resize(attrs), &[x], "resize")
}
