//! The training API of a library made with `forgec compile --train`: its part of `NAME.h`,
//! its C (`train.c` beside this file, a template filled like `wrapper.c`), and the state blob
//! it starts from. The step, evaluation and prediction graphs are compiled as models of their
//! own (`NAME_forgec_step`, `NAME_forgec_eval`, `NAME_forgec_predict`, each with its own
//! wrapper); this C drives them with the weights and slots held in the training context.

use super::capi::{c_comment, c_escape, dtype_code};
use forgec_ir::{DType, Dim, Graph, Tensor};
use std::fmt::Write;

/// Bytes before the first tensor of a state blob.
pub const STATE_HEADER: usize = 64;

/// The functions the training API adds to `NAME.h`, each `NAME_` + this.
pub const TRAIN_FUNCTIONS: &[&str] = &[
    "train_create",
    "train_destroy",
    "train_last_error",
    "train_set_threads",
    "train_threads",
    "train_step",
    "train_evaluate",
    "train_predict",
    "train_steps",
    "train_lr",
    "train_set_lr",
    "train_seed",
    "train_set_seed",
    "train_state_size",
    "train_get_state",
    "train_gradient_norm",
    "train_set_state",
    "train_state_tensor",
    "train_state_dtype",
    "train_step_weighted",
    "train_evaluate_weighted",
    "train_label_shape",
    "train_label_dtype",
    "train_metric_name",
];

/// What the training API is made from: the three graphs (prepared as the compiler takes them)
/// and the initial state (the trainable weights in the step's order, then the optimizer's
/// slots, slot-major), with the learning rate a new context starts at.
pub struct TrainParts<'a> {
    pub step: &'a Graph,
    pub eval: &'a Graph,
    pub predict: &'a Graph,
    pub state: &'a [(String, Tensor)],
    pub lr: f64,
    /// The model's inputs and outputs (labels: one per output).
    pub num_inputs: usize,
    pub num_labels: usize,
    /// The metrics' names (Keras's: `accuracy`, ...), the step's and evaluation's outputs
    /// after the state and the loss.
    pub metrics: &'a [String],
    /// The step's last output, after the metrics, is the gradients' global norm.
    pub gradient_norm: bool,
}

/// Each state tensor's byte offset in the blob (64-byte aligned), and the blob's size.
pub fn layout(state: &[(String, Tensor)]) -> (Vec<usize>, usize) {
    let mut at = STATE_HEADER;
    let mut offs = Vec::new();
    for (_, t) in state {
        offs.push(at);
        at = (at + t.size_bytes()).div_ceil(64) * 64;
    }
    (offs, at)
}

/// The 8 bytes after the magic that tell this model's state from another's: a hash of the
/// state's names, dtypes and shapes.
fn layout_id(state: &[(String, Tensor)]) -> [u8; 8] {
    let mut text = String::new();
    for (n, t) in state {
        let _ = write!(text, "{n}:{}:{:?};", t.dtype().numpy_name(), t.shape());
    }
    super::capi::checksum64(text.as_bytes()).to_le_bytes()
}

/// The state blob of a new context: magic `FORGECT1`, the layout id, step 0, the learning
/// rate, the seed 0, the blob's size; then the tensors.
pub fn state_blob(state: &[(String, Tensor)], lr: f64) -> Vec<u8> {
    let (offs, total) = layout(state);
    let mut b = vec![0u8; total];
    b[..8].copy_from_slice(b"FORGECT1");
    b[8..16].copy_from_slice(&layout_id(state));
    b[24..32].copy_from_slice(&lr.to_le_bytes());
    b[40..48].copy_from_slice(&(total as i64).to_le_bytes());
    for ((_, t), &o) in state.iter().zip(&offs) {
        let bytes = crate::lower::raw_bytes(t);
        b[o..o + bytes.len()].copy_from_slice(&bytes);
    }
    b
}

/// Why these graphs cannot get a training API, if they cannot.
pub fn obstacle(p: &TrainParts) -> Option<String> {
    if let Some((n, t)) = p
        .state
        .iter()
        .find(|(_, t)| !matches!(t.dtype(), DType::F32 | DType::F64))
    {
        return Some(format!(
            "weight `{n}` is {}: compiled training keeps f32 and f64 weights",
            t.dtype()
        ));
    }
    if p.state.iter().any(|(_, t)| t.shape().len() > 8) {
        return Some("a weight of rank over 8".into());
    }
    None
}

fn shape_text(g: &Graph, v: forgec_ir::ValueId) -> String {
    let t = g.ty(v);
    let d: Vec<String> = t
        .shape
        .iter()
        .map(|d| match d {
            Dim::Known(n) => n.to_string(),
            Dim::Sym(_) => "batch".into(),
        })
        .collect();
    format!("{} [{}]", t.dtype, d.join(", "))
}

/// The training API's part of `NAME.h` (it goes before the header's closing lines).
pub fn header(name: &str, p: &TrainParts, describe: &str) -> String {
    let up = name.to_uppercase();
    let (_, total) = layout(p.state);
    let mut h = String::new();
    let _ = writeln!(
        h,
        "/* ---- Training (forgec compile --train): {} ---- */\n#include <stddef.h>\n",
        c_comment(describe)
    );
    let _ = writeln!(h, "#define {up}_ERR_NONFINITE 7 /* the step's loss or update is NaN or infinite: the state is as before the step */\n");
    let _ = writeln!(h, "/* A training context holds the model's trainable weights, the optimizer's slots, the step count,\n * the learning rate and a seed: its state, one blob of {up}_TRAIN_STATE_BYTES bytes. A new context starts\n * from the weights of the model file the library was compiled from, zero slots, step 0. Contexts are\n * independent (one per thread, as {name}_ctx); a call on a context another thread's call is using\n * returns {up}_ERR_BUSY. Results do not depend on the number of threads. NULL when out of memory. */");
    let _ = writeln!(h, "typedef struct {name}_train {name}_train;\n{name}_train *{name}_train_create(void);\nvoid {name}_train_destroy({name}_train *t);\nconst char *{name}_train_last_error(const {name}_train *t);\nint {name}_train_set_threads({name}_train *t, int threads);\nint {name}_train_threads(const {name}_train *t);\n");
    let _ = writeln!(
        h,
        "#define {up}_TRAIN_NUM_LABELS {}  /* one labels buffer per model output */",
        p.num_labels
    );
    let _ = writeln!(
        h,
        "/* The labels (dense, row-major), in the order of the outputs:"
    );
    for k in 0..p.num_labels {
        let v = p.eval.inputs[p.num_inputs + k];
        let _ = writeln!(
            h,
            " *   labels {k} `{}`: {}",
            c_comment(&p.eval.value(v).name),
            shape_text(p.eval, v)
        );
    }
    let _ = writeln!(h, " * The inputs are the model's ({name}_input_shape). */\nint {name}_train_label_shape(int i, int64_t batch, int64_t *dims);\nint {name}_train_label_dtype(int i);\n");
    let _ = writeln!(h, "#define {up}_TRAIN_NUM_METRICS {}  /* computed by every step and evaluation, each the mean over the batch */", p.metrics.len());
    let _ = writeln!(h, "/* Metric i's name, as Keras logs it ({}); NULL past the last. */\nconst char *{name}_train_metric_name(int i);\n", c_comment(&p.metrics.join(", ")));
    let _ = writeln!(h, "/* One training step on `batch` samples (1..{up}_MAX_BATCH; each call may take another batch size):\n * forward, the loss (Keras's sum_over_batch_size: the mean over these samples), the gradients and\n * the optimizer's update of the state. `inputs` holds {up}_NUM_INPUTS buffers, `labels`\n * {up}_TRAIN_NUM_LABELS. Writes the loss before the update to `*loss` and the metrics (of the same\n * forward pass) to `metrics[0..{up}_TRAIN_NUM_METRICS-1]` (either may be NULL). A loss or an update\n * that is not finite returns {up}_ERR_NONFINITE and leaves the state as it was. */");
    let _ = writeln!(h, "int {name}_train_step({name}_train *t, int64_t batch, const void *const *inputs, const void *const *labels, double *loss, double *metrics);");
    let _ = writeln!(h, "/* The loss (and metrics) of the current weights on a batch, without an update. */\nint {name}_train_evaluate({name}_train *t, int64_t batch, const void *const *inputs, const void *const *labels, double *loss, double *metrics);");
    let _ = writeln!(h, "/* As step and evaluate, with Keras's sample_weight: `sample_weights[k]` holds `batch` weights (of the\n * labels' float type) for output k's loss, each sample's loss times its weight, the sum divided by\n * the number of losses (sum_over_batch_size, as Keras; a weight of 0 leaves a sample out without\n * changing the divisor). NULL, or a NULL entry, weighs every sample 1. The metrics are unweighted\n * (Keras's `metrics`, not `weighted_metrics`). */\nint {name}_train_step_weighted({name}_train *t, int64_t batch, const void *const *inputs, const void *const *labels, const void *const *sample_weights, double *loss, double *metrics);\nint {name}_train_evaluate_weighted({name}_train *t, int64_t batch, const void *const *inputs, const void *const *labels, const void *const *sample_weights, double *loss, double *metrics);");
    let _ = writeln!(h, "/* The model's outputs with the current weights ({name}_output_shape; {name}_run keeps the model file's). */\nint {name}_train_predict({name}_train *t, int64_t batch, const void *const *inputs, void *const *outputs);\n");
    let _ = writeln!(h, "/* The global L2 norm of the last good step's gradients, before any clipping (NaN before the first\n * step, and in a library made without it). */\ndouble {name}_train_gradient_norm(const {name}_train *t);");
    let _ = writeln!(h, "/* Steps taken; the learning rate (finite, at least 0; a schedule sets it before each step). */\nint64_t {name}_train_steps(const {name}_train *t);\ndouble {name}_train_lr(const {name}_train *t);\nint {name}_train_set_lr({name}_train *t, double lr);\n");
    let _ = writeln!(h, "/* The seed of Dropout's masks (default 0): a step's mask is a function of the seed, the step\n * count and the element's index alone, so a run is the same on any number of threads and a\n * resumed run draws the masks the uninterrupted one would. */\nuint64_t {name}_train_seed(const {name}_train *t);\nint {name}_train_set_seed({name}_train *t, uint64_t seed);\n");
    let _ = writeln!(h, "/* The whole state as one blob, to save a run and resume it (bit for bit) or copy it to another\n * context. Layout (little-endian; {name}.json lists it too): bytes 0-7 \"FORGECT1\", 8-15 this model's\n * layout id, 16-23 int64 steps, 24-31 double learning rate, 32-39 uint64 seed, 40-47 int64 size,\n * 48-63 zero; then each tensor at a 64-byte aligned offset ({name}_train_state_tensor), row-major.\n * set_state refuses a blob of another model or layout ({up}_ERR_ARG). */");
    let _ = writeln!(h, "#define {up}_TRAIN_STATE_BYTES {total}\n#define {up}_TRAIN_STATE_HEADER {STATE_HEADER}\n#define {up}_TRAIN_NUM_STATE {}", p.state.len());
    let _ = writeln!(h, "size_t {name}_train_state_size(void);\nint {name}_train_get_state({name}_train *t, void *buf, size_t size);\nint {name}_train_set_state({name}_train *t, const void *buf, size_t size);");
    let _ = writeln!(h, "/* State tensor i (0..{up}_TRAIN_NUM_STATE-1): its name (a weight, or `weight.slot`), byte offset and\n * dims; returns the rank (or -1). Its element type: {name}_train_state_dtype (codes as above). */\nint {name}_train_state_tensor(int i, const char **name, int64_t *offset, int64_t *dims);\nint {name}_train_state_dtype(int i);\n");
    h
}

/// The training API's C.
pub fn wrapper(name: &str, p: &TrainParts) -> Result<String, String> {
    const TEMPLATE: &str = include_str!("train.c");
    let up = name.to_uppercase();
    let (offs, _) = layout(p.state);
    let mut table = String::new();
    for ((n, t), o) in p.state.iter().zip(&offs) {
        let dims: Vec<String> = t.shape().iter().map(|d| d.to_string()).collect();
        let _ = writeln!(
            table,
            "    {{ {o}, {}, {}, {}, {{ {} }}, \"{}\" }},",
            t.size_bytes(),
            dtype_code(t.dtype()),
            t.shape().len(),
            if dims.is_empty() {
                "0".into()
            } else {
                dims.join(", ")
            },
            c_escape(n)
        );
    }
    let state_at = |n: &str| p.state.iter().position(|(m, _)| m == n);
    // Each graph's inputs by name: the model's inputs, the labels, the scalars, the state.
    let args = |g: &Graph, what: &str| -> Result<String, String> {
        let mut c = String::new();
        for (k, &v) in g.inputs.iter().enumerate() {
            let n = &g.value(v).name;
            let e = if let Some(i) = state_at(n) {
                format!("cur + {}", offs[i])
            } else if n == "lr" {
                "&lr".into()
            } else if n == "step" {
                "&step".into()
            } else if n == "key" {
                "&key".into()
            } else if k < p.num_inputs {
                format!("inputs[{k}]")
            } else if k < p.num_inputs + p.num_labels {
                format!("labels[{}]", k - p.num_inputs)
            } else if k < p.num_inputs + 2 * p.num_labels && n.ends_with(".sample_weight") {
                format!("sw[{}]", k - p.num_inputs - p.num_labels)
            } else {
                return Err(format!(
                    "internal error: the {what} graph's input {k} (`{n}`) is none the training API knows"
                ));
            };
            let _ = writeln!(c, "    ins[{k}] = {e};");
        }
        Ok(c)
    };
    let mut step_args = args(p.step, "step")?;
    let nm = p.metrics.len();
    let has_norm = p.gradient_norm;
    if p.step.outputs.len() != 1 + p.state.len() + nm + usize::from(has_norm)
        || p.eval.outputs.len() != 1 + nm
    {
        return Err(
            "internal error: the step's outputs are not the loss, the state and the metrics".into(),
        );
    }
    let _ = writeln!(step_args, "    outs[0] = &value;");
    for (i, o) in offs.iter().enumerate() {
        let _ = writeln!(step_args, "    outs[{}] = next + {o};", i + 1);
    }
    for k in 0..nm {
        let _ = writeln!(
            step_args,
            "    outs[{}] = &mvals[{k}];",
            1 + p.state.len() + k
        );
    }
    if has_norm {
        let _ = writeln!(step_args, "    outs[{}] = &gnorm;", 1 + p.state.len() + nm);
    }
    let mut eval_args = args(p.eval, "evaluation")?;
    let _ = writeln!(eval_args, "    outs[0] = &value;");
    for k in 0..nm {
        let _ = writeln!(eval_args, "    outs[{}] = &mvals[{k}];", 1 + k);
    }
    let mut names: Vec<String> = p
        .metrics
        .iter()
        .map(|m| format!("\"{}\"", c_escape(m)))
        .collect();
    names.push("NULL".into());
    let predict_args = args(p.predict, "prediction")?;
    let lr = p
        .step
        .find_value("lr")
        .ok_or("internal error: the step has no learning rate")?;
    let scalar = match p.step.ty(lr).dtype {
        DType::F64 => "double",
        _ => "float",
    };
    let vars: &[(&str, &str)] = &[
        ("state_table", &table),
        ("step_args", &step_args),
        ("eval_args", &eval_args),
        ("predict_args", &predict_args),
        ("scalar", scalar),
        ("metric_names", &names.join(", ")),
        ("has_norm", if has_norm { "1" } else { "0" }),
    ];
    Ok(super::capi::fill_from(TEMPLATE, name, &up, "train", vars))
}
