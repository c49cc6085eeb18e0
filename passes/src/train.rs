//! Training steps as IR. [`step_graph`] turns an inference graph, a loss and an optimizer into
//! one step: forward, loss (Keras's formulas, from the logits where Keras takes them), the
//! gradients ([`crate::autodiff`]) and the optimizer's update. Trainable weights become graph
//! inputs and their updated values graph outputs (the state a caller carries from step to
//! step); non-trainable weights stay constants and are never changed. The step is plain IR:
//! the interpreter runs it (the reference), and the code generator compiles it like any graph.

use crate::autodiff::gradients;
use forgec_ir::{
    BinaryOp, DType, Graph, Op, Origin, ReduceKind, Tensor, TensorType, UnaryOp, ValueId,
};

/// A Keras name reduced to what tells its spellings apart (`binary_crossentropy`,
/// `BinaryCrossentropy` -> `binarycrossentropy`).
fn squash(name: &str) -> String {
    name.to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric())
        .collect()
}

/// A Keras loss, as the step computes it (`sum_over_batch_size`: the mean over the batch,
/// the partial last batch included).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum LossFn {
    MeanSquaredError,
    MeanAbsoluteError,
    /// Keras's huber: `0.5 e^2` where `|e| <= delta`, else `delta |e| - 0.5 delta^2` (e the
    /// error), the mean over the last axis.
    Huber {
        delta: f64,
    },
    BinaryCrossentropy,
    CategoricalCrossentropy,
    SparseCategoricalCrossentropy,
}

impl LossFn {
    /// A loss by any of Keras's spellings (`binary_crossentropy`, `BinaryCrossentropy`, `bce`,
    /// `mse`, ...).
    pub fn from_name(name: &str) -> Option<LossFn> {
        let n = squash(name);
        Some(match n.as_str() {
            "meansquarederror" | "mse" => LossFn::MeanSquaredError,
            "meanabsoluteerror" | "mae" => LossFn::MeanAbsoluteError,
            "huber" => LossFn::Huber { delta: 1.0 },
            "binarycrossentropy" | "bce" => LossFn::BinaryCrossentropy,
            "categoricalcrossentropy" | "cce" => LossFn::CategoricalCrossentropy,
            "sparsecategoricalcrossentropy" | "scce" => LossFn::SparseCategoricalCrossentropy,
            _ => return None,
        })
    }

    /// The names `from_name` takes, for messages.
    pub const KNOWN: &'static str = "mean_squared_error (mse), mean_absolute_error (mae), huber, binary_crossentropy, categorical_crossentropy, sparse_categorical_crossentropy";
}

/// An optimizer with Keras's update formulas. The learning rate is a step input (settable
/// between steps); the other hyperparameters are fixed in the step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Optimizer {
    /// `w -= lr * g`.
    Sgd,
    /// Keras's SGD with momentum: `m = momentum m - lr g`, then `w += m`, or with Nesterov
    /// `w += momentum m - lr g` (the updated m).
    Momentum { momentum: f64, nesterov: bool },
    /// Keras's Adam: `m += (g - m)(1 - b1)`, `v += (g^2 - v)(1 - b2)`,
    /// `w -= m lr sqrt(1 - b2^t) / (1 - b1^t) / (sqrt(v) + eps)`, t the step (from 1); with
    /// `amsgrad`, `vhat = max(vhat, v)` takes v's place in the denominator.
    Adam {
        beta_1: f64,
        beta_2: f64,
        epsilon: f64,
        amsgrad: bool,
    },
    /// Keras's RMSprop: `v = rho v + (1 - rho) g^2`; centered, `a = rho a + (1 - rho) g` and
    /// the denominator `v - a^2 + eps`, else `v + eps`; `inc = lr g / sqrt(denominator)`;
    /// with momentum `m = momentum m + inc`, `w -= m`, else `w -= inc`.
    RmsProp {
        rho: f64,
        momentum: f64,
        epsilon: f64,
        centered: bool,
    },
    /// Keras's Adagrad: `acc += g^2` (from `initial_accumulator`), `w -= lr g / sqrt(acc + eps)`.
    Adagrad {
        initial_accumulator: f64,
        epsilon: f64,
    },
    /// Keras 3's Nadam: with `u(t) = b1 (1 - 0.5 0.96^t)` and the running product
    /// `P = P u(t)` (one scalar of state, `u_product`, from 1), `m += (g - m)(1 - b1)`,
    /// `v += (g^2 - v)(1 - b2)`, `mhat = u(t+1) m / (1 - P u(t+1)) + (1 - u(t)) g / (1 - P)`,
    /// `w -= lr mhat / (sqrt(v / (1 - b2^t)) + eps)`.
    Nadam {
        beta_1: f64,
        beta_2: f64,
        epsilon: f64,
    },
}

impl Optimizer {
    /// Keras's defaults for `name` (sgd, adam, adamw, rmsprop, adagrad; AdamW is Adam with a
    /// weight decay, see [`GradientRules`]).
    pub fn from_name(name: &str) -> Option<Optimizer> {
        Some(match name.to_lowercase().as_str() {
            "sgd" => Optimizer::Sgd,
            "adam" | "adamw" => Optimizer::Adam {
                beta_1: 0.9,
                beta_2: 0.999,
                epsilon: 1e-7,
                amsgrad: false,
            },
            "rmsprop" => Optimizer::RmsProp {
                rho: 0.9,
                momentum: 0.0,
                epsilon: 1e-7,
                centered: false,
            },
            "adagrad" => Optimizer::Adagrad {
                initial_accumulator: 0.1,
                epsilon: 1e-7,
            },
            "nadam" => Optimizer::Nadam {
                beta_1: 0.9,
                beta_2: 0.999,
                epsilon: 1e-7,
            },
            _ => return None,
        })
    }

    /// The names `from_name` takes, for messages.
    pub const KNOWN: &'static str = "sgd, adam, adamw, rmsprop, adagrad, nadam";

    /// Keras's default learning rate.
    pub fn default_lr(&self) -> f64 {
        match self {
            Optimizer::Sgd | Optimizer::Momentum { .. } => 0.01,
            _ => 0.001,
        }
    }

    /// Keras's name for the optimizer.
    pub fn keras_name(&self) -> &'static str {
        match self {
            Optimizer::Sgd | Optimizer::Momentum { .. } => "sgd",
            Optimizer::Adam { .. } => "adam",
            Optimizer::RmsProp { .. } => "rmsprop",
            Optimizer::Adagrad { .. } => "adagrad",
            Optimizer::Nadam { .. } => "nadam",
        }
    }

    /// Whether the step takes the step count `step` (from 1).
    pub fn counts_steps(&self) -> bool {
        matches!(self, Optimizer::Adam { .. } | Optimizer::Nadam { .. })
    }

    /// The optimizer's own scalars of state (not per weight) with their values before the
    /// first step, after every slot in Keras's variable order: Nadam's `u_product`.
    pub fn globals(&self) -> Vec<(&'static str, f64)> {
        match self {
            Optimizer::Nadam { .. } => vec![("u_product", 1.0)],
            _ => vec![],
        }
    }

    /// The per-weight slots it keeps, in the groups Keras adds them (a group's slots
    /// interleaved weight by weight, the groups one after another: the order of Keras's
    /// `optimizer/vars`).
    pub fn slot_groups(&self) -> Vec<&'static [&'static str]> {
        match self {
            Optimizer::Sgd => vec![],
            Optimizer::Momentum { .. } => vec![&["momentum"]],
            Optimizer::Adam { amsgrad, .. } => {
                let mut g: Vec<&'static [&'static str]> = vec![&["m", "v"]];
                if *amsgrad {
                    g.push(&["vhat"]);
                }
                g
            }
            Optimizer::RmsProp {
                momentum, centered, ..
            } => {
                let mut g: Vec<&'static [&'static str]> = vec![&["velocity"]];
                if *momentum > 0.0 {
                    g.push(&["momentum"]);
                }
                if *centered {
                    g.push(&["average_gradient"]);
                }
                g
            }
            Optimizer::Adagrad { .. } => vec![&["accumulator"]],
            Optimizer::Nadam { .. } => vec![&["momentum", "velocity"]],
        }
    }

    /// The per-weight slots it keeps (Adam: m and v), as the step's inputs order them.
    pub fn slots(&self) -> Vec<&'static str> {
        self.slot_groups().into_iter().flatten().copied().collect()
    }

    /// A slot's value before the first step.
    pub fn slot_init(&self, _slot: &str) -> f64 {
        match self {
            Optimizer::Adagrad {
                initial_accumulator,
                ..
            } => *initial_accumulator,
            _ => 0.0,
        }
    }
}

/// What Keras's optimizers do to the gradients and weights before the update rule, in its
/// order: clip the gradients, then decay the weights (`w -= w wd lr`, every trainable weight).
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub struct GradientRules {
    pub clip: Clip,
    pub weight_decay: Option<f64>,
    /// Also output the global L2 norm of the gradients, before any clipping, as the step's
    /// last output (`gradient_norm`, after the metrics): what TensorBoard shows per step.
    pub gradient_norm: bool,
}

/// Keras's gradient clipping (one at most, in Keras's precedence: clipnorm, global_clipnorm,
/// clipvalue).
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub enum Clip {
    #[default]
    None,
    /// Each gradient scaled to an L2 norm of at most this: `g c / max(|g|, c)`.
    Norm(f64),
    /// All gradients scaled together: `g c min(1 / |all|, 1 / c)` (NaN when the norm is not
    /// finite).
    GlobalNorm(f64),
    /// Each element clipped to `[-v, v]`.
    Value(f64),
}

/// A training step and the layout of its inputs and outputs.
#[derive(Clone, Debug)]
pub struct Step {
    /// Inputs: the model's inputs, one labels input per model output, `lr`, (`step` for
    /// optimizers that count, `key` for Dropout), the trainable weights, then each slot of each
    /// weight (slot-major: all `m`, then all `v`), then the moving statistics. Outputs:
    /// `loss`, the updated weights, the updated slots, the updated statistics, in the same
    /// orders, then the metrics, then (with `GradientRules::gradient_norm`) the gradients'
    /// global norm.
    pub graph: Graph,
    /// The trainable weights' names, in state order.
    pub weights: Vec<String>,
    /// The moving statistics of the BatchNormalization layers in training mode (each layer's
    /// mean, then variance): state the step updates, not the optimizer. After them in the
    /// inputs and outputs come the optimizer's own scalars (`optimizer.NAME`, as
    /// [`Optimizer::globals`] lists them).
    pub stats: Vec<String>,
    /// The names of the labels inputs, one per model output.
    pub labels: Vec<String>,
    pub optimizer: Optimizer,
    /// The metrics' output names (`metric.NAME`), after the slots.
    pub metrics: Vec<String>,
}

type R<T> = Result<T, Vec<String>>;

/// Each model output with its labels input.
type Pairs = Vec<(ValueId, ValueId)>;

fn err(e: impl std::fmt::Display) -> Vec<String> {
    vec![e.to_string()]
}

struct B<'a> {
    g: &'a mut Graph,
    o: Origin,
}

impl B<'_> {
    fn op(&mut self, op: Op, ins: &[ValueId], name: &str) -> R<ValueId> {
        self.g.add(op, ins, name, &self.o).map_err(err)
    }
    fn bin(&mut self, b: BinaryOp, x: ValueId, y: ValueId, name: &str) -> R<ValueId> {
        self.op(Op::Binary(b), &[x, y], name)
    }
    fn un(&mut self, u: UnaryOp, x: ValueId, name: &str) -> R<ValueId> {
        self.op(Op::Unary(u), &[x], name)
    }
    fn scalar(&mut self, dt: DType, v: f64, name: &str) -> ValueId {
        let t = Tensor::full(dt, vec![], v).expect("a scalar");
        self.g.add_const(t, None, name, &self.o.clone())
    }
    fn reduce(&mut self, kind: ReduceKind, x: ValueId, axes: Vec<usize>, name: &str) -> R<ValueId> {
        self.op(
            Op::Reduce {
                kind,
                axes,
                keepdims: false,
            },
            &[x],
            name,
        )
    }
    /// The mean over every axis (Keras's per-sample mean, then `sum_over_batch_size`).
    fn mean_all(&mut self, x: ValueId, name: &str) -> R<ValueId> {
        let r = self.g.ty(x).rank();
        self.reduce(ReduceKind::Mean, x, (0..r).collect(), name)
    }
    /// Keras's `sum_over_batch_size` of the losses `e`: their mean. With sample weights `sw`
    /// (one per sample), each sample's loss (`elementwise`: the mean over `e`'s last axis, as
    /// Keras's losses reduce it) times its weight, then the sum over the number of losses.
    /// With `Reduction::Sum` the sum instead, and `MeanWithSampleWeight` the sum over the
    /// sum of the weights (`divide_no_nan`: 0 when they sum to 0).
    fn sum_over_batch(
        &mut self,
        e: ValueId,
        sw: Option<ValueId>,
        elementwise: bool,
        reduction: Reduction,
        name: &str,
    ) -> R<ValueId> {
        if sw.is_none() && reduction == Reduction::SumOverBatchSize {
            return self.mean_all(e, name);
        }
        let r = self.g.ty(e).rank();
        let per = if elementwise && r >= 2 {
            self.reduce(ReduceKind::Mean, e, vec![r - 1], "loss.per_sample")?
        } else {
            e
        };
        let pr = self.g.ty(per).rank();
        if reduction == Reduction::MeanWithSampleWeight && pr > 1 {
            // Keras divides by the weights' sum when they are given and by the number of
            // losses when not: with one loss per sample the two agree, not with more.
            return Err(vec![format!(
                "the loss reduction mean_with_sample_weight on an output with {} losses per sample is not compiled yet: use sum_over_batch_size or sum",
                self.g.ty(per).shape[1..].iter().map(|d| d.to_string()).collect::<Vec<_>>().join(" x ")
            )]);
        }
        let weighted = match sw {
            Some(sw) => {
                let mut shape = vec![0i64];
                shape.extend(std::iter::repeat_n(1, pr.saturating_sub(1)));
                let w = self.op(Op::Reshape { shape }, &[sw], "loss.sample_weight")?;
                self.bin(BinaryOp::Mul, per, w, "loss.weighted_samples")?
            }
            None => per,
        };
        match (reduction, sw) {
            (Reduction::SumOverBatchSize, _) | (Reduction::MeanWithSampleWeight, None) => {
                self.mean_all(weighted, name)
            }
            (Reduction::Sum, _) => self.reduce(ReduceKind::Sum, weighted, (0..pr).collect(), name),
            (Reduction::MeanWithSampleWeight, Some(sw)) => {
                let total = self.reduce(
                    ReduceKind::Sum,
                    weighted,
                    (0..pr).collect(),
                    "loss.total_weighted",
                )?;
                let ws = self.reduce(ReduceKind::Sum, sw, vec![0], "loss.weight_sum")?;
                let dt = self.g.ty(ws).dtype;
                let (zero, one) = (
                    self.scalar(dt, 0.0, "loss.zero"),
                    self.scalar(dt, 1.0, "loss.one"),
                );
                let none = self.bin(BinaryOp::Eq, ws, zero, "loss.no_weight")?;
                let d = self.op(Op::Select, &[none, one, ws], "loss.divisor")?;
                self.bin(BinaryOp::Div, total, d, name)
            }
        }
    }
}

/// The producer of `v` and its op.
fn producer(g: &Graph, v: ValueId) -> Option<&forgec_ir::Node> {
    g.nodes.iter().find(|n| n.outputs.contains(&v))
}

/// Builds the training step of `model` (an inference graph as imported) for `loss` on each
/// output and `opt`. Every problem is reported at once.
pub fn step_graph(model: &Graph, loss: LossFn, opt: Optimizer) -> R<Step> {
    step_graph_with(model, loss, false, opt)
}

/// The model ready for training: Dropout stripped (inference mode) unless `keep_dropout`
/// (the step replaces it by its mask, `dropout_masks`), the trainable weights turned into
/// inputs at the end of the inputs, in graph order, then the moving statistics of every
/// BatchNormalization in training mode ([`bn_in_training`]), each layer's mean then variance.
/// Returns the weights and the statistics. A batch_norm's statistics are never trainable
/// (an ONNX initializer is a weight, but the optimizer must not move a moving mean).
fn weights_as_inputs(model: &Graph, keep_dropout: bool) -> R<(Graph, Vec<ValueId>, Vec<ValueId>)> {
    let mut g = model.clone();
    if !keep_dropout {
        crate::cleanup::strip_dropout(&mut g);
    }
    let mut stats = Vec::new();
    let mut frozen_stats = std::collections::HashSet::new();
    let mut problems = Vec::new();
    for n in &g.nodes {
        if !matches!(n.op, Op::BatchNorm { .. }) {
            continue;
        }
        let training = bn_in_training(&g, n);
        for &v in &n.inputs[3..5] {
            if !training {
                frozen_stats.insert(v);
            } else if stats.contains(&v) {
                problems.push(format!(
                    "{}: the layer is applied more than once in training mode (its moving statistics would be updated once per call): forgec does not train that yet",
                    n.origin
                ));
            } else if is_weight(&g, v) {
                stats.push(v);
            } else {
                problems.push(format!(
                    "{}: its moving statistics are computed, not stored: a BatchNormalization trains only with stored statistics",
                    n.origin
                ));
            }
        }
    }
    if !problems.is_empty() {
        problems.dedup();
        return Err(problems);
    }
    let mut weights = Vec::new();
    g.nodes.retain(|n| match &n.op {
        Op::Const {
            weight: Some(_), ..
        } if stats.contains(&n.outputs[0]) => false,
        Op::Const {
            weight: Some(w), ..
        } if w.trainable && !frozen_stats.contains(&n.outputs[0]) => {
            weights.push(n.outputs[0]);
            false
        }
        _ => true,
    });
    if weights.is_empty() {
        return Err(vec![
            "the model has no trainable weights: there is nothing to train".into(),
        ]);
    }
    g.inputs.extend(&weights);
    g.inputs.extend(&stats);
    Ok((g, weights, stats))
}

/// Whether `v` is a stored weight (a constant marked as one).
fn is_weight(g: &Graph, v: ValueId) -> bool {
    matches!(producer(g, v), Some(n) if matches!(&n.op, Op::Const { weight: Some(_), .. }))
}

/// Whether a batch_norm node runs in training mode in the step (batch statistics, moving
/// averages updated), as Keras's `training and layer.trainable`: its gamma or beta is a
/// trainable weight, or it has neither (`scale=False, center=False`). A frozen layer's are
/// non-trainable weights: it normalizes with its moving statistics, which stay as they are.
fn bn_in_training(g: &Graph, n: &forgec_ir::Node) -> bool {
    let weight = |v: ValueId| match producer(g, v).map(|p| &p.op) {
        Some(Op::Const {
            weight: Some(w), ..
        }) => Some(w.trainable),
        _ => None,
    };
    match (weight(n.inputs[1]), weight(n.inputs[2])) {
        (None, None) => true,
        (a, b) => a == Some(true) || b == Some(true),
    }
}

/// Keras's normalization from statistics of the input itself (`ops.moments`, then
/// `inv = rsqrt(var + eps) gamma`, `y = x inv + (beta - mean inv)`): the mean and (biased)
/// variance over `axes`, kept as dims of 1; gamma and beta reshaped to `kept` (x's rank, their
/// dims where they vary). Returns the mean, the variance and the two terms of y; the caller
/// adds them into the node's own result.
#[allow(clippy::too_many_arguments)]
fn self_normalize(
    b: &mut B,
    x: ValueId,
    axes: &[usize],
    kept: Vec<i64>,
    gamma: ValueId,
    beta: ValueId,
    epsilon: f64,
    name: &str,
) -> R<(ValueId, ValueId, ValueId, ValueId)> {
    let dt = b.g.ty(x).dtype;
    let mean_of = |b: &mut B, v: ValueId, nm: &str| {
        b.op(
            Op::Reduce {
                kind: ReduceKind::Mean,
                axes: axes.to_vec(),
                keepdims: true,
            },
            &[v],
            nm,
        )
    };
    let mean = mean_of(b, x, &format!("{name}.mean"))?;
    let d = b.bin(BinaryOp::Sub, x, mean, &format!("{name}.centered"))?;
    let dd = b.bin(BinaryOp::Mul, d, d, &format!("{name}.sq"))?;
    let var = mean_of(b, dd, &format!("{name}.variance"))?;
    let eps = b.scalar(dt, epsilon, &format!("{name}.eps"));
    let ve = b.bin(BinaryOp::Add, var, eps, &format!("{name}.ve"))?;
    let inv0 = b.un(UnaryOp::Rsqrt, ve, &format!("{name}.rsqrt"))?;
    let gk = b.op(
        Op::Reshape {
            shape: kept.clone(),
        },
        &[gamma],
        &format!("{name}.gamma"),
    )?;
    let inv = b.bin(BinaryOp::Mul, inv0, gk, &format!("{name}.inv"))?;
    let bk = b.op(
        Op::Reshape { shape: kept },
        &[beta],
        &format!("{name}.beta"),
    )?;
    let mi = b.bin(BinaryOp::Mul, mean, inv, &format!("{name}.mean_inv"))?;
    let res = b.bin(BinaryOp::Sub, bk, mi, &format!("{name}.shift"))?;
    let xi = b.bin(BinaryOp::Mul, x, inv, &format!("{name}.scaled"))?;
    Ok((mean, var, xi, res))
}

/// Replaces node `i` by the nodes appended to the graph since `start` and a final
/// `add(xi, res)` into the node's own result (so its value id stays).
fn splice_sum(g: &mut Graph, i: usize, start: usize, xi: ValueId, res: ValueId) {
    splice_op(g, i, start, Op::Binary(BinaryOp::Add), vec![xi, res]);
}

/// Replaces node `i` by the nodes appended to the graph since `start` and a final `op` of
/// `inputs` into the node's own (first) result, so its value id stays.
pub(crate) fn splice_op(g: &mut Graph, i: usize, start: usize, op: Op, inputs: Vec<ValueId>) {
    let n = g.nodes[i].clone();
    let mut new: Vec<forgec_ir::Node> = g.nodes.drain(start..).collect();
    new.push(forgec_ir::Node {
        op,
        inputs,
        outputs: vec![n.outputs[0]],
        origin: n.origin,
    });
    g.nodes.splice(i..i + 1, new);
}

/// Rewrites each batch_norm of a training-mode BatchNormalization (its moving statistics among
/// `stats`, the step's inputs) into Keras's training form: the batch's mean and (biased)
/// variance over every axis but the channel's ([`self_normalize`]); and returns the updated
/// statistics, in `stats`' order: `moving momentum + batch (1 - momentum)`. The result keeps
/// its value id.
fn bn_training(g: &mut Graph, stats: &[ValueId]) -> R<Vec<ValueId>> {
    let mut new_stats: Vec<Option<ValueId>> = vec![None; stats.len()];
    let at: Vec<usize> = (0..g.nodes.len())
        .filter(|&i| {
            matches!(g.nodes[i].op, Op::BatchNorm { .. }) && stats.contains(&g.nodes[i].inputs[3])
        })
        .collect();
    for &i in at.iter().rev() {
        let n = g.nodes[i].clone();
        let Op::BatchNorm {
            axis,
            epsilon,
            momentum,
        } = n.op
        else {
            unreachable!("a batch_norm")
        };
        let (x, gamma, beta, mm, mv) = (
            n.inputs[0],
            n.inputs[1],
            n.inputs[2],
            n.inputs[3],
            n.inputs[4],
        );
        let xt = g.ty(x).clone();
        let c = xt.shape[axis].known().ok_or_else(|| {
            vec![format!(
                "{}: the normalized axis must have a known size",
                n.origin
            )]
        })?;
        let dt = xt.dtype;
        let start = g.nodes.len();
        let name = g.value(n.outputs[0]).name.clone();
        let mut b = B {
            g: &mut *g,
            o: n.origin.clone(),
        };
        let axes: Vec<usize> = (0..xt.rank()).filter(|&a| a != axis).collect();
        // [1, .., C, .., 1]: a channel vector broadcast along x.
        let kept: Vec<i64> = (0..xt.rank())
            .map(|a| if a == axis { c as i64 } else { 1 })
            .collect();
        let (mean, var, xi, res) = self_normalize(
            &mut b,
            x,
            &axes,
            kept,
            gamma,
            beta,
            epsilon,
            &format!("{name}.batch"),
        )?;
        // The moving averages, from the batch statistics as vectors of C.
        let mo = b.scalar(dt, momentum, &format!("{name}.momentum"));
        let m1 = b.scalar(dt, 1.0 - momentum, &format!("{name}.1momentum"));
        for (moving, batch, what) in [(mm, mean, "moving_mean"), (mv, var, "moving_variance")] {
            let bv = b.op(
                Op::Reshape {
                    shape: vec![c as i64],
                },
                &[batch],
                &format!("{name}.{what}.batch"),
            )?;
            let a = b.bin(BinaryOp::Mul, moving, mo, &format!("{name}.{what}.kept"))?;
            let t = b.bin(BinaryOp::Mul, bv, m1, &format!("{name}.{what}.added"))?;
            let nv = b.bin(
                BinaryOp::Add,
                a,
                t,
                &format!("{}.new", b.g.value(moving).name),
            )?;
            let k = stats.iter().position(|&s| s == moving).ok_or_else(|| {
                vec![format!(
                    "{}: internal error: the moving statistics are not the step's",
                    n.origin
                )]
            })?;
            new_stats[k] = Some(nv);
        }
        splice_sum(g, i, start, xi, res);
    }
    new_stats
        .into_iter()
        .map(|v| v.ok_or_else(|| err("internal error: a moving statistic without its layer")))
        .collect()
}

/// Rewrites each layer_norm into Keras's ops ([`self_normalize`] over its axes), so that the
/// gradients flow through its statistics by the rules of plain ops.
fn layer_norm_ops(g: &mut Graph) -> R<()> {
    let at: Vec<usize> = (0..g.nodes.len())
        .filter(|&i| matches!(g.nodes[i].op, Op::LayerNorm { .. }))
        .collect();
    for &i in at.iter().rev() {
        let n = g.nodes[i].clone();
        let Op::LayerNorm { axes, epsilon } = n.op.clone() else {
            unreachable!("a layer_norm")
        };
        let (x, gamma, beta) = (n.inputs[0], n.inputs[1], n.inputs[2]);
        let xt = g.ty(x).clone();
        let mut kept = Vec::new();
        for a in 0..xt.rank() {
            kept.push(match (axes.contains(&a), xt.shape[a].known()) {
                (false, _) => 1,
                (true, Some(d)) => d as i64,
                (true, None) => {
                    return Err(vec![format!(
                        "{}: the normalized axes must have known sizes",
                        n.origin
                    )])
                }
            });
        }
        let start = g.nodes.len();
        let name = g.value(n.outputs[0]).name.clone();
        let mut b = B {
            g: &mut *g,
            o: n.origin.clone(),
        };
        let (_, _, xi, res) = self_normalize(&mut b, x, &axes, kept, gamma, beta, epsilon, &name)?;
        splice_sum(g, i, start, xi, res);
    }
    Ok(())
}

/// Appends Keras's loss of every output of `g` (`specs[i]` for output i; the total is the sum
/// of each loss times its weight) and one labels input per output (after the model's inputs);
/// returns the total, the labels' names, each output with its labels, and, with several
/// outputs, each output's own loss (unweighted, as Keras logs `NAME_loss`).
#[allow(clippy::type_complexity)]
fn add_loss(g: &mut Graph, specs: &[OutputSpec]) -> R<(ValueId, Vec<String>, Pairs, Vec<ValueId>)> {
    let mut problems = Vec::new();
    let outputs = g.outputs.clone();
    if specs.len() != outputs.len() {
        return Err(vec![format!(
            "internal error: {} losses for {} outputs",
            specs.len(),
            outputs.len()
        )]);
    }
    let mut each = Vec::new();
    let mut b = B {
        g,
        o: Origin::default(),
    };
    let mut labels = Vec::new();
    let mut pairs = Vec::new();
    let mut total: Option<ValueId> = None;
    let mut sample_weights = Vec::new();
    for (&out, spec) in outputs.iter().zip(specs) {
        let (loss, from_logits) = (spec.loss, spec.from_logits);
        let ty = b.g.ty(out).clone();
        let oname = b.g.value(out).name.clone();
        if !ty.dtype.is_float() || ty.rank() == 0 {
            problems.push(format!(
                "output `{oname}` is {}{:?}: a loss needs a float output with a batch dim",
                ty.dtype, ty.shape
            ));
            continue;
        }
        let o = producer(b.g, out)
            .map(|n| n.origin.clone())
            .unwrap_or_default();
        b.o = o;
        let last = ty.rank() - 1;
        let lty = match loss {
            LossFn::SparseCategoricalCrossentropy => {
                TensorType::new(DType::I32, ty.shape[..last].to_vec())
            }
            _ => ty.clone(),
        };
        let y = b.g.add_input(&format!("{oname}.labels"), lty);
        labels.push(b.g.value(y).name.clone());
        let sw = spec.sample_weighted.then(|| {
            let ty = TensorType::new(ty.dtype, vec![ty.shape[0].clone()]);
            b.g.add_input(&format!("{oname}.sample_weight"), ty)
        });
        sample_weights.extend(sw);
        pairs.push((out, y));
        // Keras takes the logits of a sigmoid (binary) or softmax (categorical) output.
        let prod = producer(b.g, out).map(|n| (n.op.clone(), n.inputs.clone()));
        let cross_entropy = !matches!(
            loss,
            LossFn::MeanSquaredError | LossFn::MeanAbsoluteError | LossFn::Huber { .. }
        );
        let logits = match (&prod, loss) {
            _ if from_logits && cross_entropy => Some(out),
            (Some((Op::Unary(UnaryOp::Sigmoid), ins)), LossFn::BinaryCrossentropy) => Some(ins[0]),
            (
                Some((Op::Softmax { axis, log: false }, ins)),
                LossFn::CategoricalCrossentropy | LossFn::SparseCategoricalCrossentropy,
            ) if *axis == last => Some(ins[0]),
            _ => None,
        };
        let dt = ty.dtype;
        let ls = spec.label_smoothing;
        let y = match loss {
            _ if ls == 0.0 => y,
            LossFn::BinaryCrossentropy | LossFn::CategoricalCrossentropy => {
                // Keras: y (1 - s) + s / 2, or + s / classes (in the labels' type).
                let keep = b.scalar(dt, 1.0 - ls, "loss.smooth_keep");
                let s = b.scalar(dt, ls, "loss.smooth");
                let add = if loss == LossFn::BinaryCrossentropy {
                    let h = b.scalar(dt, 0.5, "loss.half");
                    b.bin(BinaryOp::Mul, h, s, "loss.smooth_add")?
                } else {
                    let k = ty.shape[last].known().ok_or_else(|| {
                        vec![format!(
                            "output `{oname}`: the number of classes must be known"
                        )]
                    })?;
                    let kc = b.scalar(dt, k as f64, "loss.smooth_classes");
                    b.bin(BinaryOp::Div, s, kc, "loss.smooth_add")?
                };
                let yk = b.bin(BinaryOp::Mul, y, keep, "loss.smooth_y")?;
                b.bin(BinaryOp::Add, yk, add, "loss.smoothed")?
            }
            _ => {
                problems.push(format!(
                    "output `{oname}`: label smoothing applies to binary and categorical cross-entropy only"
                ));
                continue;
            }
        };
        // With several outputs, each output's loss is also a metric under Keras's log name.
        let lname = if outputs.len() > 1 {
            format!("metric.{oname}_loss")
        } else {
            "loss".to_string()
        };
        let l = match (loss, logits) {
            (LossFn::MeanSquaredError, _) => {
                let d = b.bin(BinaryOp::Sub, y, out, "loss.diff")?;
                let sq = b.bin(BinaryOp::Mul, d, d, "loss.sq")?;
                b.sum_over_batch(sq, sw, true, spec.reduction, &lname)?
            }
            (LossFn::MeanAbsoluteError, _) => {
                let d = b.bin(BinaryOp::Sub, y, out, "loss.diff")?;
                let a = b.un(UnaryOp::Abs, d, "loss.abs")?;
                b.sum_over_batch(a, sw, true, spec.reduction, &lname)?
            }
            (LossFn::Huber { delta }, _) => {
                // With q = min(|e|, delta): 0.5 q^2 + delta (|e| - q), which is Keras's two
                // branches (q = |e| inside delta, q = delta outside) without a select.
                let d = b.bin(BinaryOp::Sub, out, y, "loss.diff")?;
                let a = b.un(UnaryOp::Abs, d, "loss.abs")?;
                let dl = b.scalar(dt, delta, "loss.delta");
                let q = b.bin(BinaryOp::Min, a, dl, "loss.q")?;
                let q2 = b.bin(BinaryOp::Mul, q, q, "loss.q2")?;
                let half = b.scalar(dt, 0.5, "loss.half");
                let quad = b.bin(BinaryOp::Mul, q2, half, "loss.quad")?;
                let over = b.bin(BinaryOp::Sub, a, q, "loss.over")?;
                let lin = b.bin(BinaryOp::Mul, over, dl, "loss.lin")?;
                let e = b.bin(BinaryOp::Add, quad, lin, "loss.elem")?;
                b.sum_over_batch(e, sw, true, spec.reduction, &lname)?
            }
            (LossFn::BinaryCrossentropy, Some(z)) => {
                // max(z, 0) - z y + log(1 + exp(-|z|))
                let zero = b.scalar(dt, 0.0, "loss.zero");
                let mz = b.bin(BinaryOp::Max, z, zero, "loss.relu")?;
                let zy = b.bin(BinaryOp::Mul, z, y, "loss.zy")?;
                let az = b.un(UnaryOp::Abs, z, "loss.abs")?;
                let naz = b.un(UnaryOp::Neg, az, "loss.nabs")?;
                let sp = b.un(UnaryOp::Softplus, naz, "loss.softplus")?;
                let d = b.bin(BinaryOp::Sub, mz, zy, "loss.d")?;
                let e = b.bin(BinaryOp::Add, d, sp, "loss.elem")?;
                b.sum_over_batch(e, sw, true, spec.reduction, &lname)?
            }
            (LossFn::BinaryCrossentropy, None) => {
                // -(y log p + (1 - y) log(1 - p)), p clipped to [1e-7, 1 - 1e-7]
                let (lo, hi) = (
                    b.scalar(dt, 1e-7, "loss.eps"),
                    b.scalar(dt, 1.0 - 1e-7, "loss.1eps"),
                );
                let p1 = b.bin(BinaryOp::Max, out, lo, "loss.clip")?;
                let p = b.bin(BinaryOp::Min, p1, hi, "loss.clip")?;
                let one = b.scalar(dt, 1.0, "loss.one");
                let lp = b.un(UnaryOp::Log, p, "loss.logp")?;
                let q = b.bin(BinaryOp::Sub, one, p, "loss.q")?;
                let lq = b.un(UnaryOp::Log, q, "loss.logq")?;
                let yn = b.bin(BinaryOp::Sub, one, y, "loss.yn")?;
                let t1 = b.bin(BinaryOp::Mul, y, lp, "loss.t1")?;
                let t2 = b.bin(BinaryOp::Mul, yn, lq, "loss.t2")?;
                let s = b.bin(BinaryOp::Add, t1, t2, "loss.s")?;
                let e = b.un(UnaryOp::Neg, s, "loss.elem")?;
                b.sum_over_batch(e, sw, true, spec.reduction, &lname)?
            }
            (LossFn::CategoricalCrossentropy | LossFn::SparseCategoricalCrossentropy, _) => {
                // -sum(y * log p) over the classes, log p = log_softmax(z) from the logits,
                // else log(clip(p / sum(p))).
                let logp = match logits {
                    Some(z) => b.op(
                        Op::Softmax {
                            axis: last,
                            log: true,
                        },
                        &[z],
                        "loss.logp",
                    )?,
                    None => {
                        let s = b.op(
                            Op::Reduce {
                                kind: ReduceKind::Sum,
                                axes: vec![last],
                                keepdims: true,
                            },
                            &[out],
                            "loss.norm",
                        )?;
                        let pn = b.bin(BinaryOp::Div, out, s, "loss.pn")?;
                        let (lo, hi) = (
                            b.scalar(dt, 1e-7, "loss.eps"),
                            b.scalar(dt, 1.0 - 1e-7, "loss.1eps"),
                        );
                        let p1 = b.bin(BinaryOp::Max, pn, lo, "loss.clip")?;
                        let p = b.bin(BinaryOp::Min, p1, hi, "loss.clip")?;
                        b.un(UnaryOp::Log, p, "loss.logp")?
                    }
                };
                let target = if loss == LossFn::SparseCategoricalCrossentropy {
                    // One-hot from the class ids: ids[..., 1] == [0, 1, ..., C-1].
                    let classes = ty.shape[last].known().ok_or_else(|| {
                        vec![format!(
                            "output `{oname}`: the number of classes must be known"
                        )]
                    })?;
                    let mut kept: Vec<i64> = ty.shape[..last]
                        .iter()
                        .map(|d| d.known().map_or(-1, |n| n as i64))
                        .collect();
                    kept.push(1);
                    let ids = b.op(Op::Reshape { shape: kept }, &[y], "loss.ids")?;
                    let iota = Tensor::from_f64_values(
                        DType::I32,
                        vec![classes],
                        &(0..classes).map(|c| c as f64).collect::<Vec<_>>(),
                    )
                    .expect("class ids");
                    let iota = b.g.add_const(iota, None, "loss.classes", &b.o.clone());
                    let hot = b.bin(BinaryOp::Eq, ids, iota, "loss.hot")?;
                    b.op(Op::Cast { to: dt }, &[hot], "loss.onehot")?
                } else {
                    y
                };
                let prod = b.bin(BinaryOp::Mul, target, logp, "loss.ylogp")?;
                let s = b.reduce(ReduceKind::Sum, prod, vec![last], "loss.sum")?;
                let e = b.un(UnaryOp::Neg, s, "loss.elem")?;
                b.sum_over_batch(e, sw, false, spec.reduction, &lname)?
            }
        };
        let lw = if spec.weight == 1.0 {
            l
        } else {
            let w = b.scalar(dt, spec.weight, "loss.weight");
            b.bin(BinaryOp::Mul, l, w, "loss.weighted")?
        };
        if outputs.len() > 1 {
            each.push(l);
        }
        total = Some(match total {
            None => lw,
            Some(t) => b.bin(BinaryOp::Add, t, lw, "loss.total")?,
        });
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    // The sample weights follow every output's labels.
    b.g.inputs.retain(|v| !sample_weights.contains(v));
    b.g.inputs.extend(&sample_weights);
    Ok((total.expect("at least one output"), labels, pairs, each))
}

/// What every training graph shares: the model with its trainable weights and moving
/// statistics as inputs ([`weights_as_inputs`]), its loss, labels and metrics.
struct WithLoss {
    g: Graph,
    weights: Vec<ValueId>,
    stats: Vec<ValueId>,
    loss: ValueId,
    labels: Vec<String>,
    metrics: Vec<ValueId>,
}

/// The checks and inputs every training graph shares: the model with its trainable weights
/// and moving statistics as inputs, then (`loss`) its loss and labels.
fn with_loss(model: &Graph, specs: &[OutputSpec], keep_dropout: bool) -> R<WithLoss> {
    let (mut g, weights, stats) = weights_as_inputs(model, keep_dropout)?;
    // Labels come after the model's inputs, before the weights and statistics.
    g.inputs
        .retain(|v| !weights.contains(v) && !stats.contains(v));
    let (l, labels, pairs, each) = add_loss(&mut g, specs)?;
    let mut ms = each;
    ms.extend(add_metrics(&mut g, &pairs, specs)?);
    g.inputs.extend(&weights);
    g.inputs.extend(&stats);
    Ok(WithLoss {
        g,
        weights,
        stats,
        loss: l,
        labels,
        metrics: ms,
    })
}

/// A metric the step and the evaluation compute beside the loss, on the forward pass's
/// outputs (before the update), as Keras's metric of that name does: the mean over the batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Metric {
    /// `y == (p > 0.5)` (on the output as it is, probabilities or logits, as Keras does).
    BinaryAccuracy,
    /// `argmax(y) == argmax(p)`.
    CategoricalAccuracy,
    /// `y == argmax(p)` (class ids).
    SparseCategoricalAccuracy,
    MeanSquaredError,
    MeanAbsoluteError,
}

impl Metric {
    /// A metric by Keras's name; `accuracy` (`acc`) is the accuracy that fits the loss, as
    /// Keras resolves it.
    pub fn from_name(name: &str, loss: LossFn) -> Option<Metric> {
        let n = squash(name);
        Some(match n.as_str() {
            "accuracy" | "acc" => match loss {
                LossFn::BinaryCrossentropy => Metric::BinaryAccuracy,
                LossFn::CategoricalCrossentropy => Metric::CategoricalAccuracy,
                LossFn::SparseCategoricalCrossentropy => Metric::SparseCategoricalAccuracy,
                _ => return None,
            },
            "binaryaccuracy" => Metric::BinaryAccuracy,
            "categoricalaccuracy" => Metric::CategoricalAccuracy,
            "sparsecategoricalaccuracy" => Metric::SparseCategoricalAccuracy,
            "meansquarederror" | "mse" => Metric::MeanSquaredError,
            "meanabsoluteerror" | "mae" => Metric::MeanAbsoluteError,
            _ => return None,
        })
    }

    /// The names `from_name` takes, for messages.
    pub const KNOWN: &'static str = "accuracy (binary, categorical or sparse categorical, by the loss), binary_accuracy, categorical_accuracy, sparse_categorical_accuracy, mean_squared_error (mse), mean_absolute_error (mae)";
}

/// What the step minimises and reports for one model output: Keras's loss (from the logits
/// when `from_logits`), its weight in the total (`loss_weights`; the total is the weighted
/// sum), and the metrics computed on it.
#[derive(Clone, Debug, PartialEq)]
pub struct OutputSpec {
    pub loss: LossFn,
    pub from_logits: bool,
    /// Keras's `label_smoothing` of a binary or categorical cross-entropy: the labels become
    /// `y (1 - s) + s / 2` (binary) or `y (1 - s) + s / classes`; metrics read them unsmoothed.
    pub label_smoothing: f64,
    pub weight: f64,
    pub metrics: Vec<(String, Metric)>,
    /// Keras's `sample_weight`: the graphs take an input `OUTPUT.sample_weight` of one weight
    /// per sample (after every output's labels); each sample's loss (the mean over the
    /// output's last axis) is multiplied by its weight before `sum_over_batch_size` (so the
    /// divisor stays the number of losses, as Keras's). Metrics stay unweighted, as Keras's
    /// `metrics` (not `weighted_metrics`).
    pub sample_weighted: bool,
    /// Keras's loss `reduction` of the per-sample losses.
    pub reduction: Reduction,
}

/// Keras's loss reductions (`keras.losses.Loss(reduction=...)`) of the per-sample losses
/// (each times its sample weight).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Reduction {
    /// Their sum over their number (Keras's default, `auto` too).
    #[default]
    SumOverBatchSize,
    /// Their sum.
    Sum,
    /// Their sum over the sum of the sample weights (0 when that is 0).
    MeanWithSampleWeight,
}

impl Reduction {
    pub fn from_name(name: &str) -> Option<Reduction> {
        match name {
            "sum_over_batch_size" | "auto" | "mean" => Some(Reduction::SumOverBatchSize),
            "sum" => Some(Reduction::Sum),
            "mean_with_sample_weight" => Some(Reduction::MeanWithSampleWeight),
            _ => None,
        }
    }
}

impl OutputSpec {
    /// `loss` with weight 1 and `metrics` on every output of `model`.
    pub fn every_output(
        model: &Graph,
        loss: LossFn,
        from_logits: bool,
        metrics: &[(String, Metric)],
    ) -> Vec<OutputSpec> {
        vec![
            OutputSpec {
                loss,
                from_logits,
                label_smoothing: 0.0,
                weight: 1.0,
                metrics: metrics.to_vec(),
                sample_weighted: false,
                reduction: Reduction::SumOverBatchSize,
            };
            model.outputs.len()
        ]
    }
}

/// Appends the metrics of each (output, labels) pair (`specs[i].metrics` for output i);
/// returns the metric values, named `metric.NAME` (`metric.OUTPUT_NAME` with several outputs,
/// as Keras logs them), in (output, metric) order.
fn add_metrics(
    g: &mut Graph,
    pairs: &[(ValueId, ValueId)],
    specs: &[OutputSpec],
) -> R<Vec<ValueId>> {
    let mut out = Vec::new();
    for (&(p, y), spec) in pairs.iter().zip(specs) {
        for (name, m) in &spec.metrics {
            let oname = g.value(p).name.clone();
            let o = producer(g, p).map(|n| n.origin.clone()).unwrap_or_default();
            let mut b = B { g, o };
            let pt = b.g.ty(p).clone();
            let dt = pt.dtype;
            let label = if pairs.len() > 1 {
                format!("metric.{oname}_{name}")
            } else {
                format!("metric.{name}")
            };
            let argmax = |b: &mut B, v: ValueId, n: &str| {
                let r = b.g.ty(v).rank();
                b.op(
                    Op::ArgReduce {
                        kind: ReduceKind::Max,
                        axis: r - 1,
                        keepdims: false,
                        select_last: false,
                    },
                    &[v],
                    n,
                )
            };
            let hit = match m {
                Metric::BinaryAccuracy => {
                    let half = b.scalar(dt, 0.5, "metric.half");
                    let gt = b.bin(BinaryOp::Gt, p, half, "metric.gt")?;
                    let pc = b.op(Op::Cast { to: dt }, &[gt], "metric.pred")?;
                    Some(b.bin(BinaryOp::Eq, y, pc, "metric.hit")?)
                }
                Metric::SparseCategoricalAccuracy => {
                    let a = argmax(&mut b, p, "metric.argmax")?;
                    let yi = b.op(Op::Cast { to: DType::I64 }, &[y], "metric.ids")?;
                    Some(b.bin(BinaryOp::Eq, yi, a, "metric.hit")?)
                }
                Metric::CategoricalAccuracy => {
                    let a = argmax(&mut b, p, "metric.argmax")?;
                    let t = argmax(&mut b, y, "metric.target")?;
                    Some(b.bin(BinaryOp::Eq, t, a, "metric.hit")?)
                }
                Metric::MeanSquaredError | Metric::MeanAbsoluteError => None,
            };
            let v = match (m, hit) {
                (_, Some(h)) => {
                    let f = b.op(Op::Cast { to: dt }, &[h], "metric.hitf")?;
                    b.mean_all(f, &label)?
                }
                (Metric::MeanSquaredError, None) => {
                    let d = b.bin(BinaryOp::Sub, y, p, "metric.diff")?;
                    let sq = b.bin(BinaryOp::Mul, d, d, "metric.sq")?;
                    b.mean_all(sq, &label)?
                }
                _ => {
                    let d = b.bin(BinaryOp::Sub, y, p, "metric.diff")?;
                    let a = b.un(UnaryOp::Abs, d, "metric.abs")?;
                    b.mean_all(a, &label)?
                }
            };
            out.push(v);
        }
    }
    Ok(out)
}

/// Dropout in training mode: each Dropout of a positive rate becomes `x * dropout_mask(x,
/// key)`, the mask salted by the layer's position, and the step gets the input `key` (i64,
/// [`forgec_ir::ops::norm::dropout_key`] of the run's seed and the step); a rate of 0 is the
/// identity.
fn dropout_masks(g: &mut Graph) -> R<()> {
    // Value ids stay as they are (the caller holds some): a rate-0 Dropout's uses are
    // redirected to its input, and its result is left unused (the step's final DCE drops it).
    let mut alias: std::collections::HashMap<ValueId, ValueId> = Default::default();
    let any = g
        .nodes
        .iter()
        .any(|n| matches!(n.op, Op::Dropout { rate } if rate > 0.0));
    let key = any.then(|| g.add_input("key", TensorType::new(DType::I64, vec![])));
    let mut nodes = Vec::with_capacity(g.nodes.len() + 4);
    let mut salt = 0i64;
    for mut n in std::mem::take(&mut g.nodes) {
        for i in &mut n.inputs {
            while let Some(&a) = alias.get(i) {
                *i = a;
            }
        }
        let (Op::Dropout { rate }, Some(key)) = (&n.op, key) else {
            if let Op::Dropout { .. } = n.op {
                alias.insert(n.outputs[0], n.inputs[0]);
            } else {
                nodes.push(n);
            }
            continue;
        };
        let (rate, x, y) = (*rate, n.inputs[0], n.outputs[0]);
        if rate == 0.0 {
            alias.insert(y, x);
            continue;
        }
        salt += 1;
        let ty = g.ty(y).clone();
        let name = g.fresh_name(&format!("{}.mask", g.value(y).name));
        g.values.push(forgec_ir::graph::Value { name, ty });
        let m = ValueId(g.values.len() - 1);
        nodes.push(forgec_ir::Node {
            op: Op::DropoutMask { rate, salt },
            inputs: vec![x, key],
            outputs: vec![m],
            origin: n.origin.clone(),
        });
        nodes.push(forgec_ir::Node {
            op: Op::Binary(BinaryOp::Mul),
            inputs: vec![x, m],
            outputs: vec![y],
            origin: n.origin,
        });
    }
    g.nodes = nodes;
    for o in &mut g.outputs {
        while let Some(&a) = alias.get(o) {
            *o = a;
        }
    }
    Ok(())
}

/// The model's forward pass with its trainable weights as inputs (after the model's inputs,
/// in [`Step::weights`] order), then the moving statistics ([`Step::stats`]): predictions
/// with the weights a training run has reached.
pub fn predict_graph(model: &Graph) -> R<Graph> {
    let (mut g, _, _) = weights_as_inputs(model, false)?;
    crate::cleanup::dce(&mut g);
    Ok(g)
}

/// The loss without an update (BatchNormalization with its moving statistics, as Keras's
/// `evaluate`): inputs the model's, the labels, then the trainable weights and the moving
/// statistics (as [`Step`]'s); outputs `loss`, then the metrics.
pub fn eval_graph(
    model: &Graph,
    loss: LossFn,
    from_logits: bool,
    metrics: &[(String, Metric)],
) -> R<Graph> {
    eval_graph_outputs(
        model,
        &OutputSpec::every_output(model, loss, from_logits, metrics),
    )
}

/// [`eval_graph`] with a loss, weight and metrics per output.
pub fn eval_graph_outputs(model: &Graph, specs: &[OutputSpec]) -> R<Graph> {
    let WithLoss {
        mut g,
        loss: l,
        metrics: ms,
        ..
    } = with_loss(model, specs, false)?;
    g.outputs = vec![l];
    g.outputs.extend(ms);
    crate::cleanup::dce(&mut g);
    Ok(g)
}

/// Keras's gradient clipping (`Clip`), with its formulas.
fn clip(b: &mut B, c: Clip, grads: &[ValueId], dt: DType) -> R<Vec<ValueId>> {
    let sumsq = |b: &mut B, g: ValueId| -> R<ValueId> {
        let gg = b.bin(BinaryOp::Mul, g, g, "clip.gg")?;
        let r = b.g.ty(gg).rank();
        b.reduce(ReduceKind::Sum, gg, (0..r).collect(), "clip.sumsq")
    };
    match c {
        Clip::None => Ok(grads.to_vec()),
        Clip::Value(v) => {
            let (lo, hi) = (b.scalar(dt, -v, "clip.lo"), b.scalar(dt, v, "clip.hi"));
            grads
                .iter()
                .map(|&g| {
                    let a = b.bin(BinaryOp::Max, g, lo, "clip.max")?;
                    b.bin(BinaryOp::Min, a, hi, "clip.value")
                })
                .collect()
        }
        Clip::Norm(cn) => {
            // g cn / max(|g|, cn)
            let c = b.scalar(dt, cn, "clip.norm");
            grads
                .iter()
                .map(|&g| {
                    let s = sumsq(b, g)?;
                    let n = b.un(UnaryOp::Sqrt, s, "clip.l2")?;
                    let d = b.bin(BinaryOp::Max, n, c, "clip.den")?;
                    let gc = b.bin(BinaryOp::Mul, g, c, "clip.gc")?;
                    b.bin(BinaryOp::Div, gc, d, "clip.clipped")
                })
                .collect()
        }
        Clip::GlobalNorm(cn) => {
            // scale = cn min(1 / |all|, 1 / cn) + (|all| - |all|)
            let mut total: Option<ValueId> = None;
            for &g in grads {
                let s = sumsq(b, g)?;
                total = Some(match total {
                    None => s,
                    Some(t) => b.bin(BinaryOp::Add, t, s, "clip.total")?,
                });
            }
            let n = b.un(UnaryOp::Sqrt, total.expect("a gradient"), "clip.global")?;
            let one = b.scalar(dt, 1.0, "clip.one");
            let inv = b.bin(BinaryOp::Div, one, n, "clip.inv")?;
            let invc = b.scalar(dt, 1.0 / cn, "clip.invc");
            let mn = b.bin(BinaryOp::Min, inv, invc, "clip.min")?;
            let c = b.scalar(dt, cn, "clip.c");
            let sf = b.bin(BinaryOp::Mul, c, mn, "clip.sf")?;
            let nn = b.bin(BinaryOp::Sub, n, n, "clip.nan")?;
            let scale = b.bin(BinaryOp::Add, sf, nn, "clip.scale")?;
            grads
                .iter()
                .map(|&g| b.bin(BinaryOp::Mul, g, scale, "clip.scaled"))
                .collect()
        }
    }
}

/// [`step_graph`] for a loss told `from_logits`: a cross-entropy then takes the outputs as
/// logits (Keras's `from_logits=True`), whatever op makes them.
pub fn step_graph_with(model: &Graph, loss: LossFn, from_logits: bool, opt: Optimizer) -> R<Step> {
    step_graph_metrics(model, loss, from_logits, opt, GradientRules::default(), &[])
}

/// [`step_graph_with`] with Keras's gradient clipping and weight decay (`rules`), computing
/// `metrics` too (outputs after the slots, as [`Step::metrics`]).
pub fn step_graph_metrics(
    model: &Graph,
    loss: LossFn,
    from_logits: bool,
    opt: Optimizer,
    rules: GradientRules,
    metrics: &[(String, Metric)],
) -> R<Step> {
    let specs = OutputSpec::every_output(model, loss, from_logits, metrics);
    step_graph_outputs(model, &specs, opt, rules)
}

/// The training step with a loss, weight and metrics per model output (`specs`, in the
/// outputs' order: Keras's dict or list of losses, `loss_weights` and metrics), Keras's
/// gradient rules and `opt`.
pub fn step_graph_outputs(
    model: &Graph,
    specs: &[OutputSpec],
    opt: Optimizer,
    rules: GradientRules,
) -> R<Step> {
    let WithLoss {
        mut g,
        weights,
        stats,
        loss: loss_v,
        labels,
        metrics: ms,
    } = with_loss(model, specs, true)?;
    let dt = g.ty(weights[0]).dtype;
    let lr = g.add_input("lr", TensorType::new(dt, vec![]));
    let step = opt
        .counts_steps()
        .then(|| g.add_input("step", TensorType::new(dt, vec![])));
    dropout_masks(&mut g)?;
    let new_stats = bn_training(&mut g, &stats)?;
    layer_norm_ops(&mut g)?;
    crate::recurrent::unroll_rnns(&mut g)?;
    let grads = gradients(&mut g, loss_v, &weights)?;
    let mut b = B {
        g: &mut g,
        o: Origin::default(),
    };
    // The weights move to the end of the inputs, after lr and step, in their graph order;
    // the slots follow them, then the moving statistics.
    b.g.inputs
        .retain(|v| !weights.contains(v) && !stats.contains(v));
    b.g.inputs.extend(&weights);
    let slot_names = opt.slots();
    let mut new_slots: Vec<Vec<ValueId>> = vec![Vec::new(); slot_names.len()];
    let mut slot_inputs: Vec<Vec<ValueId>> = vec![Vec::new(); slot_names.len()];
    for (k, s) in slot_names.iter().enumerate() {
        for &w in &weights {
            let (name, ty) = (b.g.value(w).name.clone(), b.g.ty(w).clone());
            slot_inputs[k].push(b.g.add_input(&format!("{name}.{s}"), ty));
        }
    }
    b.g.inputs.extend(&stats);
    let globals: Vec<ValueId> = opt
        .globals()
        .iter()
        .map(|(n, _)| {
            b.g.add_input(&format!("optimizer.{n}"), TensorType::new(dt, vec![]))
        })
        .collect();
    let mut new_globals: Vec<ValueId> = Vec::new();
    // Nadam's factors, shared by every weight: u(t), u(t+1), the product before and after.
    let nadam = match opt {
        Optimizer::Nadam { beta_1, .. } => {
            let t = step.expect("nadam counts steps");
            let b1 = b.scalar(dt, beta_1, "nadam.b1");
            let decay = b.scalar(dt, 0.96, "nadam.decay");
            let half = b.scalar(dt, 0.5, "nadam.half");
            let one = b.scalar(dt, 1.0, "nadam.one");
            // Keras's order of operations: u(t) = b1 (1 - 0.5 0.96^t); the product takes
            // (P b1) (1 - 0.5 0.96^t).
            let d = |b: &mut B, at: ValueId| -> R<ValueId> {
                let p = b.bin(BinaryOp::Pow, decay, at, "nadam.pow")?;
                let h = b.bin(BinaryOp::Mul, p, half, "nadam.hp")?;
                b.bin(BinaryOp::Sub, one, h, "nadam.d")
            };
            let dt_ = d(&mut b, t)?;
            let ut = b.bin(BinaryOp::Mul, b1, dt_, "nadam.u")?;
            let t1 = b.bin(BinaryOp::Add, t, one, "nadam.next")?;
            let dt1 = d(&mut b, t1)?;
            let ut1 = b.bin(BinaryOp::Mul, b1, dt1, "nadam.u_next")?;
            let pb = b.bin(BinaryOp::Mul, globals[0], b1, "nadam.pb")?;
            let pt = b.bin(BinaryOp::Mul, pb, dt_, "optimizer.u_product.new")?;
            let pt1 = b.bin(BinaryOp::Mul, pt, ut1, "nadam.u_product_next")?;
            new_globals.push(pt);
            Some((ut, ut1, pt, pt1, one))
        }
        _ => None,
    };
    let slot = |k: &str| slot_names.iter().position(|s| *s == k).expect("a slot");
    // The global norm of the gradients as computed, before clipping (as PyTorch's
    // clip_grad_norm_ reports it): sqrt of the sum of every gradient's squares.
    let gradient_norm = if rules.gradient_norm {
        let mut total: Option<ValueId> = None;
        for &gw in &grads {
            let gg = b.bin(BinaryOp::Mul, gw, gw, "gradient_norm.gg")?;
            let r = b.g.ty(gg).rank();
            let s = b.reduce(ReduceKind::Sum, gg, (0..r).collect(), "gradient_norm.sumsq")?;
            total = Some(match total {
                None => s,
                Some(t) => b.bin(BinaryOp::Add, t, s, "gradient_norm.total")?,
            });
        }
        Some(b.un(
            UnaryOp::Sqrt,
            total.ok_or_else(|| err("internal error: no gradients"))?,
            "gradient_norm",
        )?)
    } else {
        None
    };
    let grads = clip(&mut b, rules.clip, &grads, dt)?;
    let mut new_w = Vec::new();
    for (i, (&w0, &gw)) in weights.iter().zip(&grads).enumerate() {
        let name = b.g.value(w0).name.clone();
        // Keras decays the weight before the update rule, which then updates the decayed one.
        let w = match rules.weight_decay {
            Some(wd) if wd != 0.0 => {
                let c = b.scalar(dt, wd, "decay.wd");
                let ww = b.bin(BinaryOp::Mul, w0, c, "decay.wwd")?;
                let d = b.bin(BinaryOp::Mul, ww, lr, "decay.d")?;
                b.bin(BinaryOp::Sub, w0, d, &format!("{name}.decayed"))?
            }
            _ => w0,
        };
        let nw = match opt {
            Optimizer::Sgd => {
                let d = b.bin(BinaryOp::Mul, gw, lr, &format!("{name}.delta"))?;
                b.bin(BinaryOp::Sub, w, d, &format!("{name}.new"))?
            }
            Optimizer::Momentum { momentum, nesterov } => {
                let m = slot_inputs[0][i];
                let mu = b.scalar(dt, momentum, "momentum");
                let glr = b.bin(BinaryOp::Mul, gw, lr, "momentum.glr")?;
                let mm = b.bin(BinaryOp::Mul, m, mu, "momentum.mm")?;
                let m2 = b.bin(BinaryOp::Sub, mm, glr, &format!("{name}.momentum.new"))?;
                new_slots[0].push(m2);
                let step = if nesterov {
                    let m2mu = b.bin(BinaryOp::Mul, m2, mu, "momentum.nm")?;
                    b.bin(BinaryOp::Sub, m2mu, glr, &format!("{name}.delta"))?
                } else {
                    m2
                };
                b.bin(BinaryOp::Add, w, step, &format!("{name}.new"))?
            }
            Optimizer::Adam {
                beta_1,
                beta_2,
                epsilon,
                amsgrad,
            } => {
                let t = step.expect("adam counts steps");
                let (m, v) = (slot_inputs[slot("m")][i], slot_inputs[slot("v")][i]);
                let c1 = b.scalar(dt, 1.0 - beta_1, "adam.c1");
                let c2 = b.scalar(dt, 1.0 - beta_2, "adam.c2");
                let gm = b.bin(BinaryOp::Sub, gw, m, "adam.gm")?;
                let dm = b.bin(BinaryOp::Mul, gm, c1, "adam.dm")?;
                let m2 = b.bin(BinaryOp::Add, m, dm, &format!("{name}.m.new"))?;
                let gg = b.bin(BinaryOp::Mul, gw, gw, "adam.gg")?;
                let gv = b.bin(BinaryOp::Sub, gg, v, "adam.gv")?;
                let dv = b.bin(BinaryOp::Mul, gv, c2, "adam.dv")?;
                let v2 = b.bin(BinaryOp::Add, v, dv, &format!("{name}.v.new"))?;
                // alpha = lr sqrt(1 - b2^t) / (1 - b1^t)
                let one = b.scalar(dt, 1.0, "adam.one");
                let b1 = b.scalar(dt, beta_1, "adam.b1");
                let b2 = b.scalar(dt, beta_2, "adam.b2");
                let p1 = b.bin(BinaryOp::Pow, b1, t, "adam.b1t")?;
                let p2 = b.bin(BinaryOp::Pow, b2, t, "adam.b2t")?;
                let q1 = b.bin(BinaryOp::Sub, one, p1, "adam.q1")?;
                let q2 = b.bin(BinaryOp::Sub, one, p2, "adam.q2")?;
                let sq = b.un(UnaryOp::Sqrt, q2, "adam.sq")?;
                let a0 = b.bin(BinaryOp::Mul, lr, sq, "adam.a0")?;
                let alpha = b.bin(BinaryOp::Div, a0, q1, "adam.alpha")?;
                let eps = b.scalar(dt, epsilon, "adam.eps");
                new_slots[slot("m")].push(m2);
                new_slots[slot("v")].push(v2);
                let vd = if amsgrad {
                    let vh = slot_inputs[slot("vhat")][i];
                    let vh2 = b.bin(BinaryOp::Max, vh, v2, &format!("{name}.vhat.new"))?;
                    new_slots[slot("vhat")].push(vh2);
                    vh2
                } else {
                    v2
                };
                let sv = b.un(UnaryOp::Sqrt, vd, "adam.sv")?;
                let den = b.bin(BinaryOp::Add, sv, eps, "adam.den")?;
                let ma = b.bin(BinaryOp::Mul, m2, alpha, "adam.ma")?;
                let d = b.bin(BinaryOp::Div, ma, den, &format!("{name}.delta"))?;
                b.bin(BinaryOp::Sub, w, d, &format!("{name}.new"))?
            }
            Optimizer::RmsProp {
                rho,
                momentum,
                epsilon,
                centered,
            } => {
                let v = slot_inputs[slot("velocity")][i];
                let r = b.scalar(dt, rho, "rmsprop.rho");
                let r1 = b.scalar(dt, 1.0 - rho, "rmsprop.1rho");
                let rv = b.bin(BinaryOp::Mul, r, v, "rmsprop.rv")?;
                let gg = b.bin(BinaryOp::Mul, gw, gw, "rmsprop.gg")?;
                let rg = b.bin(BinaryOp::Mul, r1, gg, "rmsprop.rg")?;
                let v2 = b.bin(BinaryOp::Add, rv, rg, &format!("{name}.velocity.new"))?;
                new_slots[slot("velocity")].push(v2);
                let eps = b.scalar(dt, epsilon, "rmsprop.eps");
                let den = if centered {
                    let a = slot_inputs[slot("average_gradient")][i];
                    let ra = b.bin(BinaryOp::Mul, r, a, "rmsprop.ra")?;
                    let r1g = b.bin(BinaryOp::Mul, r1, gw, "rmsprop.r1g")?;
                    let a2 = b.bin(
                        BinaryOp::Add,
                        ra,
                        r1g,
                        &format!("{name}.average_gradient.new"),
                    )?;
                    new_slots[slot("average_gradient")].push(a2);
                    let aa = b.bin(BinaryOp::Mul, a2, a2, "rmsprop.aa")?;
                    let va = b.bin(BinaryOp::Sub, v2, aa, "rmsprop.va")?;
                    b.bin(BinaryOp::Add, va, eps, "rmsprop.den")?
                } else {
                    b.bin(BinaryOp::Add, v2, eps, "rmsprop.den")?
                };
                let lg = b.bin(BinaryOp::Mul, lr, gw, "rmsprop.lg")?;
                let sd = b.un(UnaryOp::Sqrt, den, "rmsprop.sd")?;
                let inc = b.bin(BinaryOp::Div, lg, sd, &format!("{name}.delta"))?;
                let step = if momentum > 0.0 {
                    let mo = slot_inputs[slot("momentum")][i];
                    let mu = b.scalar(dt, momentum, "rmsprop.momentum");
                    let mm = b.bin(BinaryOp::Mul, mu, mo, "rmsprop.mm")?;
                    let m2 = b.bin(BinaryOp::Add, mm, inc, &format!("{name}.momentum.new"))?;
                    new_slots[slot("momentum")].push(m2);
                    m2
                } else {
                    inc
                };
                b.bin(BinaryOp::Sub, w, step, &format!("{name}.new"))?
            }
            Optimizer::Nadam {
                beta_1,
                beta_2,
                epsilon,
            } => {
                let t = step.expect("nadam counts steps");
                let (ut, ut1, pt, pt1, one) = nadam.expect("nadam's factors");
                let (m, v) = (
                    slot_inputs[slot("momentum")][i],
                    slot_inputs[slot("velocity")][i],
                );
                // 1 - b1 and 1 - b2 in the weights' type, as Keras's Nadam computes them.
                let (b1, b2) = (
                    b.scalar(dt, beta_1, "nadam.b1"),
                    b.scalar(dt, beta_2, "nadam.b2"),
                );
                let c1 = b.bin(BinaryOp::Sub, one, b1, "nadam.c1")?;
                let c2 = b.bin(BinaryOp::Sub, one, b2, "nadam.c2")?;
                let gm = b.bin(BinaryOp::Sub, gw, m, "nadam.gm")?;
                let dm = b.bin(BinaryOp::Mul, gm, c1, "nadam.dm")?;
                let m2 = b.bin(BinaryOp::Add, m, dm, &format!("{name}.momentum.new"))?;
                let gg = b.bin(BinaryOp::Mul, gw, gw, "nadam.gg")?;
                let gv = b.bin(BinaryOp::Sub, gg, v, "nadam.gv")?;
                let dv = b.bin(BinaryOp::Mul, gv, c2, "nadam.dv")?;
                let v2 = b.bin(BinaryOp::Add, v, dv, &format!("{name}.velocity.new"))?;
                new_slots[slot("momentum")].push(m2);
                new_slots[slot("velocity")].push(v2);
                // mhat = u(t+1) m / (1 - P u(t+1)) + (1 - u(t)) g / (1 - P)
                let um = b.bin(BinaryOp::Mul, ut1, m2, "nadam.um")?;
                let q1 = b.bin(BinaryOp::Sub, one, pt1, "nadam.q1")?;
                let a = b.bin(BinaryOp::Div, um, q1, "nadam.a")?;
                let ou = b.bin(BinaryOp::Sub, one, ut, "nadam.ou")?;
                let og = b.bin(BinaryOp::Mul, ou, gw, "nadam.og")?;
                let q0 = b.bin(BinaryOp::Sub, one, pt, "nadam.q0")?;
                let c = b.bin(BinaryOp::Div, og, q0, "nadam.c")?;
                let mhat = b.bin(BinaryOp::Add, a, c, "nadam.mhat")?;
                let p2 = b.bin(BinaryOp::Pow, b2, t, "nadam.b2t")?;
                let q2 = b.bin(BinaryOp::Sub, one, p2, "nadam.q2")?;
                let vhat = b.bin(BinaryOp::Div, v2, q2, "nadam.vhat")?;
                let sv = b.un(UnaryOp::Sqrt, vhat, "nadam.sv")?;
                let eps = b.scalar(dt, epsilon, "nadam.eps");
                let den = b.bin(BinaryOp::Add, sv, eps, "nadam.den")?;
                let ml = b.bin(BinaryOp::Mul, mhat, lr, "nadam.ml")?;
                let d = b.bin(BinaryOp::Div, ml, den, &format!("{name}.delta"))?;
                b.bin(BinaryOp::Sub, w, d, &format!("{name}.new"))?
            }
            Optimizer::Adagrad { epsilon, .. } => {
                let acc = slot_inputs[0][i];
                let gg = b.bin(BinaryOp::Mul, gw, gw, "adagrad.gg")?;
                let a2 = b.bin(BinaryOp::Add, acc, gg, &format!("{name}.accumulator.new"))?;
                new_slots[0].push(a2);
                let eps = b.scalar(dt, epsilon, "adagrad.eps");
                let lg = b.bin(BinaryOp::Mul, lr, gw, "adagrad.lg")?;
                let ae = b.bin(BinaryOp::Add, a2, eps, "adagrad.ae")?;
                let sd = b.un(UnaryOp::Sqrt, ae, "adagrad.sd")?;
                let d = b.bin(BinaryOp::Div, lg, sd, &format!("{name}.delta"))?;
                b.bin(BinaryOp::Sub, w, d, &format!("{name}.new"))?
            }
        };
        new_w.push(nw);
    }
    let names: Vec<String> = weights.iter().map(|&w| g.value(w).name.clone()).collect();
    g.outputs = vec![loss_v];
    g.outputs.extend(&new_w);
    for s in &new_slots {
        g.outputs.extend(s);
    }
    g.outputs.extend(&new_stats);
    g.outputs.extend(&new_globals);
    let stat_names: Vec<String> = stats.iter().map(|&v| g.value(v).name.clone()).collect();
    let metric_names: Vec<String> = ms.iter().map(|&m| g.value(m).name.clone()).collect();
    g.outputs.extend(&ms);
    g.outputs.extend(gradient_norm);
    crate::cleanup::dce(&mut g);
    let errs = forgec_ir::verify::verify(&g);
    if !errs.is_empty() {
        return Err(errs
            .into_iter()
            .map(|e| format!("internal error: the training step is invalid: {e}"))
            .collect());
    }
    Ok(Step {
        graph: g,
        weights: names,
        stats: stat_names,
        labels,
        optimizer: opt,
        metrics: metric_names,
    })
}
