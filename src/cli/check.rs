//! `forgec check`: the classic Keras mistakes, found before any training.

use crate::keras::loss::{compiled_losses, Loss, LossKind};
use crate::keras::LoadOptions;
use crate::UserError;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The model: .keras, .json (+ .weights.h5 beside it), or tf.keras .h5 (the checks need
    /// its Keras layer configs and compile config; an ONNX file has none)
    pub model: PathBuf,
    /// The Keras weights file (.weights.h5), when it is not beside the JSON (the checks run
    /// without weights too)
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// The loss (default: the one the model was compiled with)
    #[arg(long)]
    pub loss: Option<String>,
    /// Whether the loss takes logits (default: from the compile config, else false)
    #[arg(long)]
    pub from_logits: Option<bool>,
    /// The shape of one sample of the data, without the batch dim: 28,28,1
    #[arg(long, value_delimiter = ',')]
    pub input_shape: Option<Vec<usize>>,
    /// The training data (.npy), whose shape is checked against the model's input
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// The training labels (.npy), checked against the loss and the output
    #[arg(long)]
    pub labels: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Error,
    Warning,
}

/// One mistake: how bad, where, why, and what to do.
#[derive(Clone, Debug)]
pub struct Finding {
    pub severity: Severity,
    pub layer: String,
    pub why: String,
    pub fix: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(
            f,
            "{sev}: {}: {}\n  fix: {}",
            self.layer, self.why, self.fix
        )
    }
}

pub fn cmd(a: Args) -> Result<i32, UserError> {
    let mut findings: Vec<Finding> = Vec::new();
    let data = match &a.data {
        Some(p) => Some(forgec_runtime::read_npy(p).map_err(|e| UserError::new(e.0))?),
        None => None,
    };
    let input_shape = a
        .input_shape
        .clone()
        .or_else(|| data.as_ref().map(|d| d.shape()[1..].to_vec()));
    let opts = LoadOptions {
        weights: a.weights.clone(),
        allow_missing_weights: true,
        input_shape: input_shape.clone(),
    };
    let m = match crate::load_model(&a.model, &opts) {
        Ok(m) => m,
        Err(e) if e.shape_only => {
            for p in &e.problems {
                findings.push(Finding {
                    severity: Severity::Error,
                    layer: "input shape".into(),
                    why: p.clone(),
                    fix: match &input_shape {
                        Some(s) => format!(
                            "the data's samples have shape {s:?}: reshape the data, or rebuild the model with input_shape={}",
                            py_tuple(s)
                        ),
                        None => "make the layer's input match the shape it was built for".into(),
                    },
                });
            }
            return Ok(report(&findings, &a.model));
        }
        Err(e) => return Err(UserError::new(e.to_string())),
    };
    if input_shape.is_some() && m.graph.inputs.len() != 1 {
        return Err(UserError::new(format!(
            "{}: --input-shape and --data apply to single-input models; this one has {} inputs",
            a.model.display(),
            m.graph.inputs.len()
        )));
    }
    if let Some(d) = &data {
        let ty = m.graph.ty(m.graph.inputs[0]);
        if d.dtype() != ty.dtype {
            findings.push(Finding {
                severity: Severity::Warning,
                layer: format!("input `{}`", m.graph.value(m.graph.inputs[0]).name),
                why: format!(
                    "the data is {} but the model's input is {}",
                    d.dtype().numpy_name(),
                    ty.dtype.numpy_name()
                ),
                fix: format!(
                    "convert the data once: x = x.astype('{}')",
                    ty.dtype.numpy_name()
                ),
            });
        }
    }
    // Losses per output.
    if let Some(l) = a
        .loss
        .as_deref()
        .filter(|l| !crate::keras::loss::is_known(l))
    {
        return Err(UserError::new(format!(
            "--loss {l}: Keras has no loss of that name (binary_crossentropy, categorical_crossentropy, sparse_categorical_crossentropy, mean_squared_error, mean_absolute_error, huber, ...)"
        )));
    }
    let mut losses = compiled_losses(&m);
    if let Some(l) = &a.loss {
        losses = m
            .outputs
            .iter()
            .map(|o| (o.layer.clone(), Loss::named(l)))
            .collect();
    }
    if let Some(fl) = a.from_logits {
        for (_, l) in &mut losses {
            l.from_logits = fl;
        }
    }
    let source = if a.loss.is_some() {
        "--loss"
    } else {
        "the model's compile config"
    };
    let mut seen = std::collections::BTreeSet::new();
    for (out, l) in &losses {
        if seen.insert(out.clone()) {
            let logits = if l.from_logits {
                ", from_logits=True"
            } else {
                ""
            };
            println!(
                "note: output `{out}`: loss {}{logits} (from {source})",
                l.name
            );
        }
    }
    if let Some(opt) = m
        .compile
        .as_ref()
        .and_then(|c| c.get("optimizer").or_else(|| c.get("optimizer_config")))
    {
        let name = opt
            .get("class_name")
            .and_then(|v| v.as_str())
            .or(opt.as_str())
            .unwrap_or("?");
        let name = name.trim_start_matches("Custom>");
        let lr = opt
            .get("config")
            .and_then(|c| c.get("learning_rate"))
            .and_then(|v| v.as_f64());
        match lr {
            Some(lr) => println!(
                "note: optimizer {name}, learning rate {lr} (from the model's compile config)"
            ),
            None => println!("note: optimizer {name} (from the model's compile config)"),
        }
    }
    if losses.is_empty() {
        findings.push(Finding {
            severity: Severity::Warning,
            layer: "model".into(),
            why: "no loss is known: the model was saved without compile() and --loss was not given, so activation/loss checks were skipped".into(),
            fix: "pass the loss you will train with: --loss binary_crossentropy (or categorical_crossentropy, sparse_categorical_crossentropy, mse, ...)".into(),
        });
    }
    let labels = match &a.labels {
        Some(p) => Some(forgec_runtime::read_npy(p).map_err(|e| UserError::new(e.0))?),
        None => None,
    };
    for (out_layer, loss) in &losses {
        let Some(info) = m.layers.iter().rev().find(|l| &l.name == out_layer) else {
            continue;
        };
        let units = info
            .outputs
            .first()
            .and_then(|t| t.shape.last())
            .and_then(|d| d.known());
        let act = info.activation.clone().unwrap_or_default();
        let here = format!("{} `{}` (output)", info.class, info.name);
        let mut add = |severity, why: String, fix: String| {
            findings.push(Finding {
                severity,
                layer: here.clone(),
                why,
                fix,
            })
        };
        let ln = &loss.name;
        let prob = act == "sigmoid" || act == "softmax";
        if act == "softmax" && units == Some(1) {
            add(Severity::Error, "softmax over a single unit always outputs 1.0: the model cannot learn anything".into(),
                "for two classes use Dense(1, activation='sigmoid') with binary_crossentropy, or Dense(2, activation='softmax') with a categorical loss".into());
            continue;
        }
        match loss.kind {
            LossKind::Binary | LossKind::Categorical | LossKind::Sparse if prob && loss.from_logits => add(
                Severity::Error,
                format!("the output already applies {act}, but the loss {ln} is told from_logits=True: {act} is applied twice"),
                format!("either remove the {act} activation from the last layer, or set from_logits=False"),
            ),
            LossKind::Binary | LossKind::Categorical | LossKind::Sparse if !prob && !loss.from_logits && !act.is_empty() => add(
                Severity::Error,
                format!("the output activation is '{act}', so the outputs are not probabilities, but {ln} expects probabilities"),
                format!("use activation='{}' on the last layer, or set from_logits=True in the loss", if loss.kind == LossKind::Binary { "sigmoid" } else { "softmax" }),
            ),
            LossKind::Categorical | LossKind::Sparse if act == "sigmoid" && units.unwrap_or(2) > 1 => add(
                Severity::Error,
                format!("sigmoid outputs with {ln}: each of the {} units is an independent probability, they do not sum to 1 over the classes", units.unwrap_or(0)),
                "for one class per sample use activation='softmax'; for several labels per sample use binary_crossentropy".into(),
            ),
            LossKind::Binary if act == "softmax" => add(
                Severity::Error,
                format!("softmax output with {ln}: softmax makes the {} classes compete, binary_crossentropy scores each unit on its own", units.unwrap_or(0)),
                "for one class per sample use categorical_crossentropy (one-hot labels) or sparse_categorical_crossentropy (integer labels); for independent labels use activation='sigmoid'".into(),
            ),
            LossKind::Categorical | LossKind::Sparse if units == Some(1) => add(
                Severity::Error,
                format!("{ln} over a single output unit: there is only one class"),
                "for two classes use Dense(1, activation='sigmoid') with binary_crossentropy".into(),
            ),
            _ => {}
        }
        if let Some(y) = &labels {
            check_labels(y, loss, units, &here, &mut findings);
        }
    }
    Ok(report(&findings, &a.model))
}

fn py_tuple(s: &[usize]) -> String {
    match s.len() {
        1 => format!("({},)", s[0]),
        _ => format!(
            "({})",
            s.iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

fn check_labels(
    y: &forgec_runtime::Tensor,
    loss: &Loss,
    units: Option<usize>,
    here: &str,
    findings: &mut Vec<Finding>,
) {
    let v = y.to_f64_vec();
    let shape = y.shape();
    let integral = v.iter().all(|x| x.fract() == 0.0);
    let one_hot = shape.len() == 2
        && shape[1] > 1
        && v.iter().all(|&x| x == 0.0 || x == 1.0)
        && v.chunks(shape[1]).all(|r| r.iter().sum::<f64>() == 1.0);
    let class_ids = integral && (shape.len() == 1 || (shape.len() == 2 && shape[1] == 1));
    let max = v.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let mut add = |why: String, fix: String| {
        findings.push(Finding {
            severity: Severity::Error,
            layer: format!("labels, for {here}"),
            why,
            fix,
        })
    };
    match loss.kind {
        LossKind::Categorical if class_ids && units.unwrap_or(0) > 1 => add(
            format!("the labels are integer class ids (shape {shape:?}) but {} expects one-hot vectors", loss.name),
            "use loss='sparse_categorical_crossentropy', or one-hot encode the labels with keras.utils.to_categorical(y)".into(),
        ),
        LossKind::Sparse if one_hot => add(
            format!("the labels are one-hot vectors (shape {shape:?}) but {} expects integer class ids", loss.name),
            "use loss='categorical_crossentropy', or convert the labels with y.argmax(axis=-1)".into(),
        ),
        LossKind::Sparse if integral => {
            if let Some(u) = units {
                if max >= u as f64 {
                    add(
                        format!("a label is {max} but the output has {u} classes (0..{})", u - 1),
                        format!("give the last layer {} units, or re-number the classes from 0", max as usize + 1),
                    );
                }
            }
        }
        LossKind::Binary if v.iter().any(|&x| !(0.0..=1.0).contains(&x)) => add(
            format!("{} expects labels in [0, 1] but they range up to {max}", loss.name),
            "for several classes use a softmax output with sparse_categorical_crossentropy".into(),
        ),
        _ => {}
    }
    if let (LossKind::Categorical, Some(u)) = (loss.kind, units) {
        if one_hot && shape[1] != u {
            add(
                format!(
                    "the one-hot labels have {} classes but the output has {u} units",
                    shape[1]
                ),
                format!("give the last layer {} units", shape[1]),
            );
        }
    }
}

fn report(findings: &[Finding], model: &std::path::Path) -> i32 {
    let mut fs = findings.to_vec();
    fs.sort_by_key(|f| f.severity);
    for f in &fs {
        println!("{f}");
    }
    let errors = fs.iter().filter(|f| f.severity == Severity::Error).count();
    let warnings = fs.len() - errors;
    if fs.is_empty() {
        println!("{}: no problems found", model.display());
    } else {
        println!(
            "{}: {errors} error(s), {warnings} warning(s)",
            model.display()
        );
    }
    if errors > 0 {
        1
    } else {
        0
    }
}
