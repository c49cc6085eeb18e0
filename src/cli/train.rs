//! `forgec train`: the minimal training driver. Builds the model's training step
//! (`passes::train`), compiles it like any graph, and runs it over the data for the epochs
//! asked, as Keras's `fit` does (batches in order or shuffled by a seed, the partial last
//! batch included). Writes `history.json` after every epoch (a run that dies keeps the epochs
//! before), a checkpoint after every epoch and every `--checkpoint-every` steps
//! (`checkpoint.rs`), from which `--resume DIR` goes on to the same bits as a run never
//! stopped, and the final weights.

use crate::keras::LoadOptions;
use crate::UserError;
use forgec_passes::train::{
    step_graph_outputs, Clip, GradientRules, LossFn, Metric, Optimizer, OutputSpec, Reduction,
};
use forgec_runtime::fit::{self, Column, Data, Schedule};
use forgec_runtime::{DType, Tensor};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

#[derive(clap::Args, Debug, Default)]
pub struct Args {
    /// The model: .keras, .json (+ .weights.h5 beside it), tf.keras .h5, or .onnx
    #[arg(required_unless_present_any = ["resume", "config"])]
    pub model: Option<PathBuf>,
    /// The Keras weights file (.weights.h5), when it is not beside the JSON
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// The training inputs: [NAME=]FILE.npy, or an .npz holding them by name (repeatable)
    #[arg(long = "x", required_unless_present_any = ["resume", "config"])]
    pub x: Vec<String>,
    /// The labels, one per model output: [OUTPUT=]FILE.npy, or an .npz by output name
    #[arg(long = "y", required_unless_present_any = ["resume", "config"])]
    pub y: Vec<String>,
    /// Keras's sample_weight: one weight per sample for each output's loss: FILE.npy (every
    /// output), OUTPUT=FILE.npy, or an .npz by output name (default: every sample weighs 1)
    #[arg(long = "sample-weight")]
    pub sample_weight: Vec<String>,
    /// Passes over the data
    #[arg(long, default_value_t = 1)]
    pub epochs: usize,
    /// Samples per step (the last batch of an epoch may be smaller)
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// Take the samples in file order every epoch (Keras's shuffle=False); by default each
    /// epoch takes them in an order drawn from --seed
    #[arg(long, overrides_with = "shuffle")]
    pub no_shuffle: bool,
    /// Each epoch in an order drawn from --seed (the default; the last of --shuffle and
    /// --no-shuffle counts)
    #[arg(long, overrides_with = "no_shuffle")]
    pub shuffle: bool,
    /// The seed of the shuffling order
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// The loss of every output (default: the ones the model was compiled with, with its
    /// loss_weights; this replaces them all)
    #[arg(long)]
    pub loss: Option<String>,
    /// sgd, adam, adamw, rmsprop, adagrad or nadam (default: the one the model was compiled
    /// with)
    #[arg(long)]
    pub optimizer: Option<String>,
    /// The learning rate (default: the model's compile config, else Keras's default)
    #[arg(long)]
    pub lr: Option<f64>,
    /// Where the steps run: cpu, or cuda[:N] (said plainly when there is no usable CUDA
    /// device; forgec never falls back to the CPU in silence)
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Threads the step runs on (1 to 64)
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Where to write history.json, checkpoint.bin and final.weights.h5 (Keras 3's layout;
    /// .npz for ONNX models)
    #[arg(long, short = 'o', required_unless_present_any = ["resume", "config"])]
    pub out: Option<PathBuf>,
    /// Keras's validation_data: the held-out inputs, [NAME=]FILE.npy or an .npz (as --x),
    /// evaluated after every epoch (val_loss, val_METRIC)
    #[arg(
        long = "val-x",
        requires = "val_y",
        conflicts_with = "validation_split"
    )]
    pub val_x: Vec<String>,
    /// The held-out labels, [OUTPUT=]FILE.npy or an .npz (as --y)
    #[arg(long = "val-y", requires = "val_x")]
    pub val_y: Vec<String>,
    /// Keras's class_weight: each sample's loss weighs its class's weight (classes not
    /// named weigh 1): '{"0": 1, "1": 4.5}' or 0:1,1:4.5 (one output; not with
    /// --sample-weight)
    #[arg(long, value_name = "WEIGHTS", conflicts_with = "sample_weight")]
    pub class_weight: Option<String>,
    /// Keras's validation_split: the last F of the samples (after floor(n * (1 - F)), before
    /// any shuffling) are held out and evaluated after every epoch (val_loss, val_METRIC)
    #[arg(long, value_name = "F")]
    pub validation_split: Option<f64>,
    /// Keras's EarlyStopping: monitor=val_loss,min_delta=0,patience=0,mode=auto,baseline=X,
    /// restore_best_weights=false,start_from_epoch=0 (Keras's defaults for what is left out)
    #[arg(long, value_name = "SETTINGS")]
    pub early_stopping: Option<String>,
    /// A learning-rate schedule, as Keras's: exponential,decay_steps=N,decay_rate=R
    /// [,staircase=true]; inverse_time (the same keys); polynomial,decay_steps=N
    /// [,end_learning_rate=E,power=P,cycle=true]; cosine,decay_steps=N[,alpha=A]
    /// [,warmup_target=LR,warmup_steps=W]; cosine_restarts,first_decay_steps=N[,t_mul=T,
    /// m_mul=M,alpha=A]; piecewise,boundaries=B1:B2,values=V0:V1:V2 (the initial rate,
    /// initial=, defaults to --lr or the model's)
    #[arg(long, value_name = "SCHEDULE")]
    pub lr_schedule: Option<String>,
    /// Keras's ReduceLROnPlateau: monitor=val_loss,factor=0.1,patience=10,mode=auto,
    /// min_delta=0.0001,cooldown=0,min_lr=0 (Keras's defaults for what is left out)
    #[arg(long, value_name = "SETTINGS")]
    pub reduce_lr_on_plateau: Option<String>,
    /// Keras's CSVLogger: FILE gets a row per epoch (epoch from 0, then every log in
    /// alphabetical order), rewritten whole after every epoch
    #[arg(long, value_name = "FILE")]
    pub csv_log: Option<PathBuf>,
    /// Keras's ModelCheckpoint: filepath=best.keras (the model) or .weights.h5 (its weights),
    /// formatted as Python does ({epoch:02d}, {val_loss:.4f}), monitor=val_loss,
    /// save_best_only=false, mode=auto, initial_value_threshold=X; written after each epoch
    #[arg(long, value_name = "SETTINGS")]
    pub model_checkpoint: Option<String>,
    /// TensorBoard event files in DIR/train and DIR/validation, as Keras's TensorBoard
    /// callback lays them out: batch_loss and batch_learning_rate per step, epoch_loss, each
    /// metric and epoch_learning_rate per epoch
    #[arg(long, value_name = "DIR")]
    pub tensorboard: Option<PathBuf>,
    /// Also write DIR/checkpoint.bin every K steps (it is written after every epoch anyway)
    #[arg(long, value_name = "K", default_value_t = 0)]
    pub checkpoint_every: usize,
    /// Print nothing but errors (history.json, the run's row and the checkpoint are written as
    /// always)
    #[arg(long, conflicts_with = "json_progress")]
    pub quiet: bool,
    /// Print one JSON object per line instead of text, for programs: {"event": "start"},
    /// {"event": "epoch", "logs": {...}}, {"event": "reduce_lr"}, {"event": "early_stopping"},
    /// {"event": "end", "status", "history", "weights"}
    #[arg(long)]
    pub json_progress: bool,
    /// Where the run is tracked (a row of `runs`, one of `epochs` per epoch): sqlite:PATH,
    /// postgres://USER:PASSWORD@HOST/DB, or none (default: $FORGEC_TRACK, else
    /// forgec-runs.sqlite in --out's parent directory). With --resume: the database again
    /// (the checkpoint keeps its URL without a password)
    #[arg(long, value_name = "DB")]
    pub track: Option<String>,
    /// The run's settings from a TOML file, by the flags' names (`epochs = 10`,
    /// `[early_stopping]` with its settings, paths relative to the file); a flag given on
    /// the command line wins
    #[arg(long, value_name = "FILE", conflicts_with = "resume")]
    pub config: Option<PathBuf>,
    /// Go on with the run whose --out is DIR from its checkpoint, with the arguments it was
    /// started with (--threads may differ: it does not change the results)
    #[arg(long, value_name = "DIR", conflicts_with_all = ["model", "weights", "x", "y",
        "sample_weight", "val_x", "val_y", "class_weight", "epochs", "batch_size", "no_shuffle", "shuffle", "seed", "loss", "optimizer",
        "lr", "out", "checkpoint_every", "validation_split", "early_stopping", "lr_schedule",
        "reduce_lr_on_plateau", "csv_log", "model_checkpoint", "tensorboard"])]
    pub resume: Option<PathBuf>,
}

impl Args {
    /// The model file (given, or taken from the checkpoint by `resolve`).
    pub fn model(&self) -> &Path {
        self.model.as_deref().unwrap_or(Path::new(""))
    }

    /// The output directory (given, or the one `--resume` names).
    pub fn out(&self) -> &Path {
        self.out.as_deref().unwrap_or(Path::new(""))
    }

    /// The arguments as a checkpoint keeps them, every file path absolute.
    fn saved(&self) -> Result<Value, UserError> {
        let cwd = std::env::current_dir().map_err(|e| UserError::new(e.to_string()))?;
        let abs = |p: &Path| cwd.join(p).to_string_lossy().into_owned();
        let files =
            |v: &[String]| -> Vec<String> { v.iter().map(|e| absolute_entry(e, &cwd)).collect() };
        Ok(json!({
            "model": abs(self.model()),
            "weights": self.weights.as_deref().map(abs),
            "x": files(&self.x),
            "y": files(&self.y),
            "sample_weight": files(&self.sample_weight),
            "val_x": files(&self.val_x),
            "val_y": files(&self.val_y),
            "class_weight": self.class_weight,
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "no_shuffle": self.no_shuffle,
            "seed": self.seed,
            "loss": self.loss,
            "optimizer": self.optimizer,
            "lr": self.lr,
            "checkpoint_every": self.checkpoint_every,
            "validation_split": self.validation_split,
            "early_stopping": self.early_stopping,
            "lr_schedule": self.lr_schedule,
            "reduce_lr_on_plateau": self.reduce_lr_on_plateau,
            "csv_log": self.csv_log.as_deref().map(abs),
            "tensorboard": self.tensorboard.as_deref().map(abs),
            "model_checkpoint": self.model_checkpoint.as_deref().map(|s| absolute_filepath(s, &cwd)),
        }))
    }

    /// The arguments of the run a checkpoint belongs to (`--threads` from these).
    fn from_saved(v: &Value, dir: &Path, threads: usize) -> Result<Args, UserError> {
        let bad = || {
            UserError::new(format!(
                "{}: damaged: its arguments do not read back",
                dir.join(fit::checkpoint::FILE).display()
            ))
        };
        let strs = |k: &str| -> Result<Vec<String>, UserError> {
            v[k].as_array()
                .ok_or_else(bad)?
                .iter()
                .map(|s| s.as_str().map(String::from).ok_or_else(bad))
                .collect()
        };
        let opt = |k: &str| v[k].as_str().map(String::from);
        let num = |k: &str| v[k].as_u64().map(|n| n as usize).ok_or_else(bad);
        Ok(Args {
            model: Some(PathBuf::from(v["model"].as_str().ok_or_else(bad)?)),
            weights: opt("weights").map(PathBuf::from),
            x: strs("x")?,
            y: strs("y")?,
            sample_weight: strs("sample_weight")?,
            // Checkpoints from before --val-x had none.
            val_x: strs("val_x").unwrap_or_default(),
            val_y: strs("val_y").unwrap_or_default(),
            class_weight: opt("class_weight"),
            epochs: num("epochs")?,
            batch_size: num("batch_size")?,
            no_shuffle: v["no_shuffle"].as_bool().ok_or_else(bad)?,
            shuffle: false,
            seed: v["seed"].as_u64().ok_or_else(bad)?,
            loss: opt("loss"),
            optimizer: opt("optimizer"),
            lr: v["lr"].as_f64(),
            threads,
            device: "cpu".into(),
            out: Some(dir.to_path_buf()),
            checkpoint_every: num("checkpoint_every")?,
            validation_split: v["validation_split"].as_f64(),
            early_stopping: opt("early_stopping"),
            lr_schedule: opt("lr_schedule"),
            reduce_lr_on_plateau: opt("reduce_lr_on_plateau"),
            csv_log: opt("csv_log").map(PathBuf::from),
            tensorboard: opt("tensorboard").map(PathBuf::from),
            model_checkpoint: opt("model_checkpoint"),
            track: None,
            config: None,
            quiet: false,
            json_progress: false,
            resume: None,
        })
    }

    /// Every file the run reads (the model, its weights, the data), absolute.
    fn files(&self) -> Vec<PathBuf> {
        let cwd = std::env::current_dir().unwrap_or_default();
        let mut v = vec![cwd.join(self.model())];
        v.extend(self.weights.iter().map(|w| cwd.join(w)));
        for e in self
            .x
            .iter()
            .chain(&self.y)
            .chain(&self.sample_weight)
            .chain(&self.val_x)
            .chain(&self.val_y)
        {
            v.push(cwd.join(entry_parts(e).1));
        }
        v
    }
}

/// `--model-checkpoint`'s settings with a relative `filepath=` made absolute against `cwd`
/// (a resumed run writes where the run began).
fn absolute_filepath(spec: &str, cwd: &Path) -> String {
    spec.split(',')
        .map(|part| match part.trim().split_once('=') {
            Some(("filepath", f)) => format!("filepath={}", cwd.join(f.trim()).display()),
            _ => part.to_string(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// A data argument's name and file (`NAME=FILE` or `FILE`), by `run::read_inputs`'s rule.
fn entry_parts(e: &str) -> (Option<&str>, &str) {
    match e.split_once('=') {
        Some((n, f)) if !n.is_empty() && !n.contains('/') => (Some(n), f),
        _ => (None, e),
    }
}

/// A data argument with its file made absolute against `cwd`.
fn absolute_entry(e: &str, cwd: &Path) -> String {
    let (name, file) = entry_parts(e);
    let f = cwd.join(file).to_string_lossy().into_owned();
    match name {
        Some(n) => format!("{n}={f}"),
        None => f,
    }
}

/// What the model was compiled with (Keras's compile config), if anything: each output's
/// loss (by output layer name), the `loss_weights` and the optimizer.
fn compiled_training(
    m: &crate::Model,
) -> (
    Vec<(String, crate::keras::loss::Loss)>,
    Option<Value>,
    Option<Value>,
) {
    let crate::Model::Keras(k) = m else {
        return (Vec::new(), None, None);
    };
    let cc = k.compile.as_ref();
    let get = |key: &str| {
        cc.and_then(|c| c.get(key))
            .filter(|v| !v.is_null())
            .cloned()
    };
    (
        crate::keras::loss::compiled_losses(k),
        get("loss_weights"),
        get("optimizer"),
    )
}

/// The model's output names as its compile config names them (Keras: the output layers;
/// ONNX: the graph outputs).
fn output_names(m: &crate::Model) -> Vec<String> {
    match m {
        crate::Model::Keras(k) => k.outputs.iter().map(|o| o.layer.clone()).collect(),
        crate::Model::Onnx(o) => o
            .graph
            .outputs
            .iter()
            .map(|&v| o.graph.value(v).name.clone())
            .collect(),
    }
}

/// Each output (`outs`, by name) with its loss: `--loss` for all (weight 1), else the compile
/// config's loss of that output (`saved`) with its settings and `loss_weights` (`weights`).
/// Returns the specs (metrics empty) and each output's loss name.
fn output_losses(
    outs: &[String],
    saved: &[(String, crate::keras::loss::Loss)],
    weights: Option<&Value>,
    loss_flag: Option<&str>,
) -> Result<(Vec<OutputSpec>, Vec<String>), UserError> {
    let known = |name: &str| {
        LossFn::from_name(name).ok_or_else(|| {
            UserError::new(format!(
                "loss `{}` is not compiled yet (or is misspelled): use one of {}",
                name.escape_debug(),
                LossFn::KNOWN
            ))
        })
    };
    if let Some(f) = loss_flag {
        let loss = known(f)?;
        let spec = OutputSpec {
            loss,
            from_logits: false,
            label_smoothing: 0.0,
            weight: 1.0,
            metrics: Vec::new(),
            sample_weighted: false,
            reduction: Reduction::SumOverBatchSize,
        };
        return Ok((vec![spec; outs.len()], vec![f.to_string(); outs.len()]));
    }
    if saved.is_empty() {
        return Err(UserError::new(
            "the model was saved without a loss: pass --loss (e.g. --loss binary_crossentropy)",
        ));
    }
    let weight_of = |i: usize, name: &str| -> Result<f64, UserError> {
        let w = match weights {
            None => return Ok(1.0),
            Some(Value::Object(o)) => o.get(name),
            Some(Value::Array(a)) => a.get(i),
            Some(v) if outs.len() == 1 => Some(v),
            Some(_) => None,
        };
        match w.map(|v| v.as_f64()) {
            None => Ok(1.0),
            Some(Some(x)) if x.is_finite() && x >= 0.0 => Ok(x),
            Some(_) => Err(UserError::new(format!(
                "the model's loss_weights give output `{}` the weight {}: a weight is a finite number of at least 0",
                name.escape_debug(),
                w.unwrap()
            ))),
        }
    };
    let (mut specs, mut names) = (Vec::new(), Vec::new());
    for (i, o) in outs.iter().enumerate() {
        let Some((_, l)) = saved.iter().find(|(k, _)| k == o) else {
            return Err(UserError::new(format!(
                "the model's compile config gives output `{}` no loss: pass --loss to train every output with one loss",
                o.escape_debug()
            )));
        };
        let (loss, label_smoothing, reduction) =
            loss_config(known(&l.function)?, &l.function, l.config.as_ref())?;
        specs.push(OutputSpec {
            loss,
            from_logits: l.from_logits,
            label_smoothing,
            weight: weight_of(i, o)?,
            metrics: Vec::new(),
            sample_weighted: false,
            reduction,
        });
        names.push(l.function.clone());
    }
    Ok((specs, names))
}

/// `loss` with the settings of its saved config (Huber's `delta`; the cross-entropies'
/// `label_smoothing`, returned). A setting that changes what the loss computes and that forgec
/// does not compile yet is refused, never ignored.
fn loss_config(
    loss: LossFn,
    name: &str,
    cfg: Option<&Value>,
) -> Result<(LossFn, f64, Reduction), UserError> {
    let Some(Value::Object(cfg)) = cfg else {
        return Ok((loss, 0.0, Reduction::SumOverBatchSize));
    };
    // Names from the model file are shown escaped (no control characters reach the terminal).
    let name = name.escape_debug();
    let refuse = |what: String| {
        UserError::new(format!(
            "the model's loss `{name}` is compiled with {what}, which forgec does not train yet: pass --loss to train with the plain loss, or recompile the model without it"
        ))
    };
    let mut loss = loss;
    let mut smoothing = 0.0;
    let mut reduction = Reduction::SumOverBatchSize;
    let smoothable = matches!(
        loss,
        LossFn::BinaryCrossentropy | LossFn::CategoricalCrossentropy
    );
    for (k, v) in cfg {
        match (k.as_str(), v) {
            ("name" | "from_logits" | "dtype", _) => {}
            ("reduction", Value::Null) => {}
            ("reduction", Value::String(r)) if Reduction::from_name(r).is_some() => {
                reduction = Reduction::from_name(r).expect("a reduction")
            }
            ("axis", v) if v.as_i64() == Some(-1) => {}
            ("label_smoothing", v) if v.as_f64() == Some(0.0) => {}
            ("label_smoothing", v) if smoothable => match v.as_f64() {
                Some(s) if (0.0..=1.0).contains(&s) => smoothing = s,
                _ => return Err(refuse(format!("label_smoothing {v} (Keras takes 0 to 1)"))),
            },
            ("delta", v) if matches!(loss, LossFn::Huber { .. }) => match v.as_f64() {
                Some(d) if d > 0.0 && d.is_finite() => loss = LossFn::Huber { delta: d },
                _ => return Err(refuse(format!("delta {v}"))),
            },
            (k, v) => return Err(refuse(format!("{}={v}", k.escape_debug()))),
        }
    }
    Ok((loss, smoothing, reduction))
}

/// The optimizer and learning rate from the flags, else the compile config, else Keras's
/// defaults. Settings forgec does not compile yet are refused, never ignored.
fn optimizer(
    flag: Option<&str>,
    flag_lr: Option<f64>,
    saved: Option<&Value>,
) -> Result<(Optimizer, GradientRules, f64, String, Option<Schedule>), UserError> {
    let (name, cfg) = match (flag.map(String::from), saved) {
        (Some(n), _) => (n.clone(), None),
        (None, Some(Value::String(s))) => (s.clone(), None),
        (None, Some(o @ Value::Object(_))) => (
            o.get("class_name")
                .and_then(|c| c.as_str())
                .unwrap_or("")
                .to_string(),
            o.get("config").cloned(),
        ),
        _ => {
            return Err(UserError::new(format!(
                "the model was saved without an optimizer: pass --optimizer ({})",
                Optimizer::KNOWN
            )))
        }
    };
    let opt = Optimizer::from_name(&name).ok_or_else(|| {
        UserError::new(format!(
            "optimizer `{name}` is not compiled yet (or is misspelled): use one of {}",
            Optimizer::KNOWN
        ))
    })?;
    let num = |k: &str| cfg.as_ref().and_then(|c| c.get(k)).and_then(|v| v.as_f64());
    let set = |k: &str| {
        cfg.as_ref()
            .and_then(|c| c.get(k))
            .is_some_and(|v| !v.is_null() && v != &json!(false) && v != &json!(0.0))
    };
    for k in [
        "use_ema",
        "loss_scale_factor",
        "gradient_accumulation_steps",
    ] {
        if set(k) {
            return Err(UserError::new(format!(
                "the model's optimizer sets `{k}`, which forgec does not compile yet: pass --optimizer to train with the plain {name}"
            )));
        }
    }
    // A schedule in the compile config is followed, unless --lr asks for a constant rate.
    let schedule = match cfg.as_ref().and_then(|c| c.get("learning_rate")) {
        Some(v) if v.is_object() && flag_lr.is_none() => {
            Some(Schedule::from_keras(v).map_err(|e| {
                UserError::new(format!(
                    "{e} (or pass --lr to train {name} with a constant rate, or --lr-schedule)"
                ))
            })?)
        }
        _ => None,
    };
    let positive = |k: &str| -> Result<Option<f64>, UserError> {
        match num(k) {
            Some(v) if !(v.is_finite() && v > 0.0) => Err(UserError::new(format!(
                "the model's optimizer has {k} = {v}: it must be positive"
            ))),
            Some(v) => Ok(Some(v)),
            None => Ok(None),
        }
    };
    // Keras's precedence: clipnorm, then global_clipnorm, then clipvalue.
    let clip = if let Some(c) = positive("clipnorm")? {
        Clip::Norm(c)
    } else if let Some(c) = positive("global_clipnorm")? {
        Clip::GlobalNorm(c)
    } else if let Some(c) = positive("clipvalue")? {
        Clip::Value(c)
    } else {
        Clip::None
    };
    // AdamW is Adam with a weight decay (Keras's default 0.004).
    let adamw = name.eq_ignore_ascii_case("adamw");
    let weight_decay = num("weight_decay").or(adamw.then_some(0.004));
    let rules = GradientRules {
        clip,
        weight_decay,
        gradient_norm: false,
    };
    let opt = match opt {
        Optimizer::Adam {
            beta_1,
            beta_2,
            epsilon,
            ..
        } => Optimizer::Adam {
            beta_1: num("beta_1").unwrap_or(beta_1),
            beta_2: num("beta_2").unwrap_or(beta_2),
            epsilon: num("epsilon").unwrap_or(epsilon),
            amsgrad: set("amsgrad"),
        },
        Optimizer::Sgd if num("momentum").unwrap_or(0.0) != 0.0 => Optimizer::Momentum {
            momentum: num("momentum").unwrap_or(0.0),
            nesterov: set("nesterov"),
        },
        Optimizer::RmsProp {
            rho,
            momentum,
            epsilon,
            ..
        } => Optimizer::RmsProp {
            rho: num("rho").unwrap_or(rho),
            momentum: num("momentum").unwrap_or(momentum),
            epsilon: num("epsilon").unwrap_or(epsilon),
            centered: set("centered"),
        },
        Optimizer::Nadam {
            beta_1,
            beta_2,
            epsilon,
        } => Optimizer::Nadam {
            beta_1: num("beta_1").unwrap_or(beta_1),
            beta_2: num("beta_2").unwrap_or(beta_2),
            epsilon: num("epsilon").unwrap_or(epsilon),
        },
        Optimizer::Adagrad {
            initial_accumulator,
            epsilon,
        } => Optimizer::Adagrad {
            initial_accumulator: num("initial_accumulator_value").unwrap_or(initial_accumulator),
            epsilon: num("epsilon").unwrap_or(epsilon),
        },
        o => o,
    };
    let lr = flag_lr
        .or(schedule.as_ref().map(|s| s.at(0)))
        .or(num("learning_rate"))
        .unwrap_or(opt.default_lr());
    if !(lr.is_finite() && lr > 0.0) {
        return Err(UserError::new(format!(
            "--lr {lr}: use a positive learning rate"
        )));
    }
    // Keras's name for it (its weights file's optimizer group is named so).
    let keras_name = cfg
        .as_ref()
        .and_then(|c| c.get("name"))
        .and_then(|n| n.as_str())
        .map(String::from)
        .unwrap_or_else(|| name.to_lowercase());
    Ok((opt, rules, lr, keras_name, schedule))
}

/// The optimizer as history.json and bench records say it.
pub fn describe(opt: Optimizer, rules: GradientRules, lr: f64) -> Value {
    let mut v = match opt {
        Optimizer::Sgd => json!({"name": "sgd"}),
        Optimizer::Momentum { momentum, nesterov } => {
            json!({"name": "sgd", "momentum": momentum, "nesterov": nesterov})
        }
        Optimizer::Adam {
            beta_1,
            beta_2,
            epsilon,
            amsgrad,
        } => {
            json!({"name": "adam", "beta_1": beta_1, "beta_2": beta_2, "epsilon": epsilon, "amsgrad": amsgrad})
        }
        Optimizer::RmsProp {
            rho,
            momentum,
            epsilon,
            centered,
        } => {
            json!({"name": "rmsprop", "rho": rho, "momentum": momentum, "epsilon": epsilon, "centered": centered})
        }
        Optimizer::Adagrad {
            initial_accumulator,
            epsilon,
        } => {
            json!({"name": "adagrad", "initial_accumulator_value": initial_accumulator, "epsilon": epsilon})
        }
        Optimizer::Nadam {
            beta_1,
            beta_2,
            epsilon,
        } => json!({"name": "nadam", "beta_1": beta_1, "beta_2": beta_2, "epsilon": epsilon}),
    };
    v["learning_rate"] = json!(lr);
    if let Some(wd) = rules.weight_decay {
        v["weight_decay"] = json!(wd);
    }
    match rules.clip {
        Clip::None => {}
        Clip::Norm(c) => v["clipnorm"] = json!(c),
        Clip::GlobalNorm(c) => v["global_clipnorm"] = json!(c),
        Clip::Value(c) => v["clipvalue"] = json!(c),
    }
    v
}

/// Writes `v` to `path` through a temporary file, so a reader never sees half a file.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), UserError> {
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, bytes)
        .and_then(|_| std::fs::rename(&tmp, path))
        .map_err(|e| UserError::new(format!("{}: cannot write: {e}", path.display())))
}

/// What a training run needs, checked: the step, the data (the model's inputs, then the
/// labels, by the step's input names), the initial state and the hyperparameters.
pub struct Training {
    /// The model, its step and state (read through `Deref`).
    pub setup: Setup,
    pub data: Data,
    pub samples: usize,
    /// The held-out samples (`--validation-split`, `--val-x`), in the same layout as `data`.
    pub val: Data,
    pub val_samples: usize,
}

impl std::ops::Deref for Training {
    type Target = Setup;
    fn deref(&self) -> &Setup {
        &self.setup
    }
}

impl std::ops::DerefMut for Training {
    fn deref_mut(&mut self) -> &mut Setup {
        &mut self.setup
    }
}

impl Setup {
    /// The step's inputs for `batch` (data rows) at step `t`, named, in the step graph's input
    /// order: what `prepare` checks once against the interpreter's rules.
    fn named_inputs(&self, batch: Vec<(String, Tensor)>, t: usize) -> Vec<(String, Tensor)> {
        let dt = self.state[0].1.dtype();
        let scalar = |v: f64| Tensor::from_f64_values(dt, vec![], &[v]).unwrap();
        let mut ins = batch;
        ins.push(("lr".into(), scalar(self.lr)));
        if self.step.graph.find_value("step").is_some() {
            ins.push(("step".into(), scalar(t as f64)));
        }
        if self.step.graph.find_value("key").is_some() {
            let k = forgec_ir::ops::norm::dropout_key(0, t as u64) as i64;
            ins.push((
                "key".into(),
                Tensor::from_i64_values(DType::I64, vec![], &[k]).unwrap(),
            ));
        }
        ins.extend(self.state.iter().cloned());
        ins.extend(self.slots.iter().cloned());
        ins.extend(self.stats.iter().cloned());
        ins.extend(self.globals.iter().cloned());
        ins
    }

    /// The state tensors that are the model's weights (trainable, then the moving
    /// statistics), by index in the library's state (weights, slots, statistics, the
    /// optimizer's scalars): what EarlyStopping's `restore_best_weights` puts back.
    pub fn model_tensors(&self) -> Vec<usize> {
        let stats_at = self.state.len() + self.slots.len();
        (0..self.state.len())
            .chain(stats_at..stats_at + self.stats.len())
            .collect()
    }

    /// Takes the library's state (after a run) into `state`, `slots` and `stats`.
    pub fn take_state(&mut self, lib: &forgec_runtime::compiled::Trainer) -> Result<(), UserError> {
        let blob = lib.get_state().map_err(|e| UserError::new(e.message))?;
        let mut i = 0;
        for part in [
            &mut self.state,
            &mut self.slots,
            &mut self.stats,
            &mut self.globals,
        ] {
            for (_, t) in part.iter_mut() {
                *t = lib.tensor(&blob, i).map_err(UserError::new)?;
                i += 1;
            }
        }
        Ok(())
    }

    /// Writes the weights after step `t` into `dir`: `final.weights.h5` in Keras 3's layout
    /// (the optimizer's state included, as Keras's `save_weights` writes it) for a Keras
    /// model, `final.weights.npz` by initializer name for an ONNX one. Returns the path.
    pub fn write_weights(&self, dir: &Path, t: usize) -> Result<std::path::PathBuf, UserError> {
        let Some(layout) = &self.k3_layout else {
            let p = dir.join("final.weights.npz");
            forgec_runtime::write_npz(&p, &self.state).map_err(|e| UserError::new(e.0))?;
            return Ok(p);
        };
        let p = dir.join("final.weights.h5");
        self.weights_h5(layout, &p, t, true)?;
        Ok(p)
    }

    /// The weights after step `t` as Keras 3's `.weights.h5` at `p`, the optimizer's state
    /// with them when `optimizer`.
    fn weights_h5(
        &self,
        layout: &forgec_import::keras::save::K3Layout,
        p: &Path,
        t: usize,
        optimizer: bool,
    ) -> Result<(), UserError> {
        use forgec_import::keras::save;
        let find = |v: &[(String, Tensor)], n: &str| {
            v.iter().find(|(m, _)| m == n).map(|(_, t)| t.clone())
        };
        let value = |n: &str| {
            find(&self.state, n)
                .or_else(|| find(&self.stats, n))
                .or_else(|| find(&self.frozen, n))
        };
        // Keras adds the slots in groups, each group's slots weight by weight in its
        // variable order (Adam: m and v of each weight, then amsgrad's vhat of each).
        let mut slots = Vec::new();
        for group in self.opt.slot_groups() {
            for w in layout.weights() {
                for s in group {
                    let name = format!("{w}.{s}");
                    if let Some((_, t)) = self.slots.iter().find(|(m, _)| *m == name) {
                        slots.push(t);
                    }
                }
            }
        }
        // The optimizer's own scalars (Nadam's u_product) come after every slot.
        slots.extend(self.globals.iter().map(|(_, t)| t));
        let opt = save::OptimizerVars {
            name: &self.opt_name,
            iterations: t as i64,
            learning_rate: self.lr as f32,
            slots,
        };
        save::write_weights_h5(p, layout, &value, optimizer.then_some(&opt)).map_err(UserError::new)
    }

    /// The trained model as a Keras 3 `.keras` archive, `DIR/final.keras` (`config.json`,
    /// `metadata.json`, `model.weights.h5`), which `keras.models.load_model` and forgec read.
    /// Its compile config (and the optimizer's state) is kept when the run trained with it;
    /// with `--loss` or `--optimizer` the model is written uncompiled. None for a model whose
    /// config is not Keras 3's (tf.keras 2, ONNX).
    pub fn write_keras(&self, dir: &Path, t: usize) -> Result<Option<PathBuf>, UserError> {
        let p = dir.join("final.keras");
        Ok(self.write_keras_to(&p, t)?.then_some(p))
    }

    /// The `.keras` archive at `p` (false, nothing written, for a model without a Keras 3
    /// config).
    pub fn write_keras_to(&self, p: &Path, t: usize) -> Result<bool, UserError> {
        let (Some(k), Some(layout)) = (&self.archive, &self.k3_layout) else {
            return Ok(false);
        };
        let dir = p
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let mut cfg = k.config.clone();
        let compiled = k.keep_compile && cfg.get("compile_config").is_some_and(|c| !c.is_null());
        if !compiled {
            if let Some(o) = cfg.as_object_mut() {
                o.remove("compile_config");
            }
        }
        let err = |e: String| UserError::new(format!("{}: cannot write: {e}", p.display()));
        let scratch = tempfile::tempdir_in(dir).map_err(|e| err(e.to_string()))?;
        let h5 = scratch.path().join("model.weights.h5");
        self.weights_h5(layout, &h5, t, compiled)?;
        let weights = std::fs::read(&h5).map_err(|e| err(e.to_string()))?;
        let now = forgec_track::time::iso(std::time::SystemTime::now());
        let meta = json!({
            "keras_version": k.version.clone().unwrap_or_else(|| "3.15.1".into()),
            "date_saved": format!("{}@{}", &now[..10], &now[11..19]),
            "saved_by": format!("forgec {}", env!("CARGO_PKG_VERSION")),
        });
        let tmp = scratch.path().join("final.keras");
        {
            use std::io::Write;
            let f = std::fs::File::create(&tmp).map_err(|e| err(e.to_string()))?;
            let mut z = zip::ZipWriter::new(f);
            let opts = zip::write::SimpleFileOptions::default()
                .compression_method(zip::CompressionMethod::Stored);
            for (name, bytes) in [
                ("metadata.json", serde_json::to_vec(&meta).unwrap()),
                ("config.json", serde_json::to_vec(&cfg).unwrap()),
                ("model.weights.h5", weights),
            ] {
                z.start_file(name, opts).map_err(|e| err(e.to_string()))?;
                z.write_all(&bytes).map_err(|e| err(e.to_string()))?;
            }
            let f = z.finish().map_err(|e| err(e.to_string()))?;
            f.sync_all().map_err(|e| err(e.to_string()))?;
        }
        std::fs::rename(&tmp, p).map_err(|e| err(e.to_string()))?;
        Ok(true)
    }

    /// ModelCheckpoint's file: the model (`.keras`) or its weights (`.weights.h5`) after step
    /// `t`, from the state taken from the library.
    pub fn write_checkpoint_file(
        &self,
        p: &Path,
        t: usize,
        weights_only: bool,
    ) -> Result<(), UserError> {
        let Some(layout) = &self.k3_layout else {
            return Err(UserError::new(
                "--model-checkpoint: an ONNX model has no Keras file to write",
            ));
        };
        if let Some(d) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(d)
                .map_err(|e| UserError::new(format!("{}: cannot create: {e}", d.display())))?;
        }
        if weights_only {
            return self.weights_h5(layout, p, t, true);
        }
        if !self.write_keras_to(p, t)? {
            return Err(UserError::new(format!(
                "{}: this model's config is tf.keras 2's, not Keras 3's: checkpoint its weights (a .weights.h5 filepath)",
                p.display()
            )));
        }
        Ok(())
    }

    /// The training library compiled for this machine (in a scratch directory kept with it),
    /// its context on `threads`.
    pub fn compile(
        &self,
        model: &Path,
        threads: usize,
    ) -> Result<(tempfile::TempDir, forgec_runtime::compiled::Trainer), UserError> {
        let dir = tempfile::tempdir().map_err(|e| UserError::new(e.to_string()))?;
        let copts = crate::codegen::Options {
            name: "model".into(),
            cpu: Some("native".into()),
            target: None,
            emit: crate::codegen::Emit::Lib,
            external_weights: false,
            threads: 1,
        };
        let t = library(self, model)?;
        crate::codegen::compile_train(self.g.clone(), t, &copts, dir.path(), "")
            .map_err(|e| UserError::new(format!("{}: {e}", model.display())))?;
        let lib = forgec_runtime::compiled::Trainer::load(&dir.path().join("libmodel.so"), "model")
            .map_err(UserError::new)?;
        lib.set_threads(threads)
            .map_err(|e| UserError::new(e.message))?;
        Ok((dir, lib))
    }
}

/// What `codegen::compile_train` takes: the step, evaluation and prediction graphs, the
/// initial state (weights, then slots) and what NAME.json says of the loss and optimizer.
pub fn library(s: &Setup, path: &Path) -> Result<crate::codegen::Training, UserError> {
    let named = |e: Vec<String>| {
        UserError::new(
            e.iter()
                .map(|p| format!("{}: {p}", path.display()))
                .collect::<Vec<_>>()
                .join("\n"),
        )
    };
    use forgec_passes::train::{eval_graph_outputs, predict_graph};
    let eval = eval_graph_outputs(&s.g, &s.outputs).map_err(named)?;
    let predict = predict_graph(&s.g).map_err(named)?;
    // Keras's log names: `accuracy`, or `OUTPUT_accuracy` and `OUTPUT_loss` with several
    // outputs.
    let names: Vec<String> = s
        .step
        .metrics
        .iter()
        .map(|n| n.strip_prefix("metric.").unwrap_or(n).to_string())
        .collect();
    let outs: Vec<Value> =
        s.g.outputs
            .iter()
            .zip(&s.outputs)
            .zip(&s.loss_names)
            .map(|((&o, spec), name)| {
                json!({
                    "output": s.g.value(o).name,
                    "loss": name,
                    "from_logits": spec.from_logits,
                    "weight": spec.weight,
                    "label_smoothing": spec.label_smoothing,
                    "reduction": match spec.reduction {
                        Reduction::SumOverBatchSize => "sum_over_batch_size",
                        Reduction::Sum => "sum",
                        Reduction::MeanWithSampleWeight => "mean_with_sample_weight",
                    },
                })
            })
            .collect();
    let mut meta = json!({
        "loss": s.loss_name,
        "losses": outs,
        "optimizer": describe(s.opt, s.rules, s.lr),
        "metrics": names,
        "weights": s.step.weights,
        "moving_statistics": s.step.stats,
        "frozen": s.frozen.iter().map(|(n, _)| n).collect::<Vec<_>>(),
    });
    meta["optimizer"]["slots"] = json!(s.opt.slots());
    let title = format!(
        "loss {}, optimizer {} (learning rate {})",
        s.loss_name,
        s.opt.keras_name(),
        s.lr
    );
    let mut all = s.state.clone();
    all.extend(s.slots.iter().cloned());
    all.extend(s.stats.iter().cloned());
    all.extend(s.globals.iter().cloned());
    Ok(crate::codegen::Training {
        step: s.step.graph.clone(),
        eval,
        predict,
        state: all,
        lr: s.lr,
        metrics: names,
        gradient_norm: s.rules.gradient_norm,
        meta,
        title,
    })
}

/// A model ready to train: its graph, the step, the loss and optimizer chosen (flags, else the
/// compile config, else Keras's defaults), the initial state (trainable weights, zero slots)
/// and the weights the step does not change.
pub struct Setup {
    pub g: forgec_ir::Graph,
    pub step: forgec_passes::train::Step,
    /// Each output's loss, weight and metrics, in the outputs' order.
    pub outputs: Vec<OutputSpec>,
    /// Each output's loss as the model or `--loss` names it.
    pub loss_names: Vec<String>,
    /// The losses in words (`binary_crossentropy`; `a: mse, b: mae x 0.5` per output).
    pub loss_name: String,
    pub opt: Optimizer,
    pub rules: GradientRules,
    pub lr: f64,
    /// The compile config's learning-rate schedule (the rate of each step; `lr` its first).
    pub schedule: Option<Schedule>,
    /// The optimizer's name in Keras (`adam`, or its compile config's).
    pub opt_name: String,
    pub k3_layout: Option<forgec_import::keras::save::K3Layout>,
    /// What a `.keras` archive of the trained model is made of (Keras 3 models only).
    pub archive: Option<ArchiveSource>,
    pub state: Vec<(String, Tensor)>,
    pub slots: Vec<(String, Tensor)>,
    /// BatchNormalization's moving statistics the step updates (training mode), by name.
    pub stats: Vec<(String, Tensor)>,
    /// The optimizer's own scalars (`optimizer.u_product` of Nadam).
    pub globals: Vec<(String, Tensor)>,
    pub frozen: Vec<(String, Tensor)>,
}

/// A Keras 3 model's config, its Keras version, and whether the run trains with its compile
/// config (no `--loss`, no `--optimizer`).
pub struct ArchiveSource {
    pub config: Value,
    pub version: Option<String>,
    pub keep_compile: bool,
}

/// The losses in words: one name when every output has the same loss with weight 1, else
/// `OUTPUT: LOSS` (`x WEIGHT`) per output. Names from the model file are escaped (this text
/// is printed).
fn describe_losses(outs: &[String], names: &[String], specs: &[OutputSpec]) -> String {
    let same = names.windows(2).all(|w| w[0] == w[1]);
    if same && specs.iter().all(|s| s.weight == 1.0) {
        return names
            .first()
            .map_or(String::new(), |n| n.escape_debug().to_string());
    }
    outs.iter()
        .zip(names)
        .zip(specs)
        .map(|((o, n), s)| {
            let (o, n) = (o.escape_debug(), n.escape_debug());
            if s.weight == 1.0 {
                format!("{o}: {n}")
            } else {
                format!("{o}: {n} x {}", s.weight)
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The compile config's metrics of each output (Keras's rules: with one output every metric
/// is its; with several, a dict by output name or a list with one entry per output), each
/// resolved by that output's loss: those forgec computes, and the names of the others (said,
/// never dropped silently).
fn compiled_metrics(m: &crate::Model, specs: &mut [OutputSpec]) -> Vec<String> {
    let crate::Model::Keras(k) = m else {
        return Vec::new();
    };
    fn collect(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::String(s) => out.push(s.clone()),
            Value::Array(a) => a.iter().for_each(|x| collect(x, out)),
            Value::Object(o) if o.contains_key("class_name") => {
                let n = o
                    .get("config")
                    .and_then(|c| c.get("name"))
                    .or(o.get("class_name"))
                    .and_then(|n| n.as_str())
                    .unwrap_or("");
                out.push(n.to_string());
            }
            Value::Object(o) => o.values().for_each(|x| collect(x, out)),
            _ => {}
        }
    }
    // Keras's weighted_metrics (metrics weighted by the sample weights): not computed yet.
    let mut weighted = Vec::new();
    if let Some(w) = k.compile.as_ref().and_then(|c| c.get("weighted_metrics")) {
        collect(w, &mut weighted);
    }
    let weighted = weighted
        .into_iter()
        .map(|n| format!("{n} (weighted_metrics)"));
    let Some(v) = k.compile.as_ref().and_then(|c| c.get("metrics")) else {
        return weighted.collect();
    };
    let outs = output_names(m);
    let mut per: Vec<Vec<String>> = vec![Vec::new(); specs.len()];
    match v {
        _ if specs.len() == 1 => collect(v, &mut per[0]),
        Value::Object(o) if !o.contains_key("class_name") => {
            for (i, name) in outs.iter().enumerate() {
                if let Some(x) = o.get(name) {
                    collect(x, &mut per[i]);
                }
            }
        }
        Value::Array(a) if a.len() == specs.len() => {
            for (i, x) in a.iter().enumerate() {
                collect(x, &mut per[i]);
            }
        }
        // Keras refuses other forms for several outputs; every metric on every output.
        _ => per.iter_mut().for_each(|p| collect(v, p)),
    }
    let mut other = Vec::new();
    for (spec, names) in specs.iter_mut().zip(per) {
        for n in names {
            if spec.metrics.iter().any(|(m, _)| *m == n) {
                continue;
            }
            match Metric::from_name(&n, spec.loss) {
                Some(m) => spec.metrics.push((n, m)),
                None if !other.contains(&n) => other.push(n),
                None => {}
            }
        }
    }
    other.extend(weighted);
    other
}

/// Builds the training step of a loaded model; every check is made here, before anything is
/// compiled. `path` names the model in messages.
pub fn setup(
    m: crate::Model,
    path: &Path,
    loss_flag: Option<&str>,
    opt_flag: Option<&str>,
    lr_flag: Option<f64>,
    gradient_norm: bool,
) -> Result<Setup, UserError> {
    let (saved_losses, loss_weights, saved_opt) = compiled_training(&m);
    let outs = output_names(&m);
    let (mut outputs, loss_names) =
        output_losses(&outs, &saved_losses, loss_weights.as_ref(), loss_flag)?;
    let loss_name = describe_losses(&outs, &loss_names, &outputs);
    let (opt, rules, lr, opt_name, schedule) = optimizer(opt_flag, lr_flag, saved_opt.as_ref())?;
    // The global gradient norm costs a pass over the gradients, which the update would
    // otherwise fuse away (mlp_mnist's Adam step: 0.38 ms to 0.51 ms): only when asked.
    let rules = GradientRules {
        gradient_norm,
        ..rules
    };
    let k3_layout = match &m {
        forgec_import::Model::Keras(k) => Some(k.k3_layout.clone()),
        forgec_import::Model::Onnx(_) => None,
    };
    let archive = match &m {
        forgec_import::Model::Keras(k)
            if matches!(
                k.format,
                forgec_import::keras::Format::Keras3Json
                    | forgec_import::keras::Format::KerasArchive
            ) =>
        {
            Some(ArchiveSource {
                config: k.config.clone(),
                version: k.keras_version.clone(),
                keep_compile: loss_flag.is_none() && opt_flag.is_none(),
            })
        }
        _ => None,
    };
    for n in compiled_metrics(&m, &mut outputs) {
        eprintln!(
            "forgec: the model's metric `{}` is not computed yet (forgec computes {}): left out",
            n.escape_debug(),
            Metric::KNOWN
        );
    }
    // The library's step and evaluation always take sample weights (ones when none are
    // given), so that one library serves both.
    for o in &mut outputs {
        o.sample_weighted = true;
    }
    let g = m.into_graph();
    let step = step_graph_outputs(&g, &outputs, opt, rules).map_err(|e| {
        UserError::new(
            e.iter()
                .map(|p| format!("{}: {p}", path.display()))
                .collect::<Vec<_>>()
                .join("\n"),
        )
    })?;
    let const_of = |w: &String| {
        let v = g.find_value(w).expect("a weight");
        let t = g
            .nodes
            .iter()
            .find_map(|nd| match &nd.op {
                forgec_ir::Op::Const { value, .. } if nd.outputs[0] == v => Some(value.clone()),
                _ => None,
            })
            .expect("the weight's constant");
        (w.clone(), t)
    };
    let state: Vec<(String, Tensor)> = step.weights.iter().map(const_of).collect();
    let stats: Vec<(String, Tensor)> = step.stats.iter().map(const_of).collect();
    let frozen: Vec<(String, Tensor)> = g
        .nodes
        .iter()
        .filter_map(|nd| match &nd.op {
            forgec_ir::Op::Const {
                value,
                weight: Some(_),
            } => {
                let name = &g.value(nd.outputs[0]).name;
                (!step.weights.contains(name) && !step.stats.contains(name))
                    .then(|| (name.clone(), value.clone()))
            }
            _ => None,
        })
        .collect();
    let dt = state[0].1.dtype();
    let globals: Vec<(String, Tensor)> = opt
        .globals()
        .into_iter()
        .map(|(n, v)| {
            (
                format!("optimizer.{n}"),
                Tensor::full(dt, vec![], v).unwrap(),
            )
        })
        .collect();
    let mut slots: Vec<(String, Tensor)> = Vec::new();
    for s in opt.slots() {
        for (w, t) in &state {
            slots.push((
                format!("{w}.{s}"),
                Tensor::full(t.dtype(), t.shape().to_vec(), opt.slot_init(s)).unwrap(),
            ));
        }
    }
    Ok(Setup {
        g,
        step,
        outputs,
        loss_names,
        loss_name,
        opt,
        rules,
        lr,
        schedule,
        opt_name,
        k3_layout,
        archive,
        state,
        slots,
        stats,
        globals,
        frozen,
    })
}

/// `--sample-weight`: each output's weights (`OUTPUT.sample_weight`, of the weights' type
/// `dt`), one per sample of `n`; ones where none are given. One file without a name weighs
/// every output, as Keras's single `sample_weight` array does.
fn sample_weights(
    a: &Args,
    outs: &[String],
    n: usize,
    dt: DType,
) -> Result<Vec<(String, Tensor)>, UserError> {
    let given = match a.sample_weight.as_slice() {
        [] => Vec::new(),
        [one] if !one.contains('=') && !one.ends_with(".npz") => {
            let t = forgec_runtime::read_npy(Path::new(one)).map_err(|e| UserError::new(e.0))?;
            outs.iter().map(|o| (o.clone(), t.clone())).collect()
        }
        many => super::run::read_inputs(many, outs)?,
    };
    if let Some((k, _)) = given.iter().find(|(k, _)| !outs.contains(k)) {
        return Err(UserError::new(format!(
            "--sample-weight for `{}`: the model has no output of that name (its outputs: {})",
            k.escape_debug(),
            outs.join(", ")
        )));
    }
    let mut ws = Vec::new();
    for o in outs {
        let name = format!("{o}.sample_weight");
        let Some((_, t)) = given.iter().find(|(k, _)| k == o) else {
            ws.push((name, Tensor::full(dt, vec![n], 1.0).expect("ones")));
            continue;
        };
        let flat = match t.shape() {
            [m] | [m, 1] => *m,
            s => {
                return Err(UserError::new(format!(
                    "--sample-weight for `{o}`: the weights have shape {s:?}: give one weight per sample, shape [{n}]"
                )))
            }
        };
        if flat != n {
            return Err(UserError::new(format!(
                "--sample-weight for `{o}`: {flat} weights for {n} samples: give one per sample"
            )));
        }
        let v = t.to_f64_vec();
        if let Some((at, bad)) = v.iter().enumerate().find(|(_, x)| !x.is_finite()) {
            return Err(UserError::new(format!(
                "--sample-weight for `{o}`: weight {bad} at sample {at} is not a finite number"
            )));
        }
        ws.push((
            name,
            Tensor::from_f64_values(dt, vec![n], &v).expect("weights"),
        ));
    }
    Ok(ws)
}

/// The model's inputs (`x`, by its input names) and labels (`y`, by its output names, of the
/// types its losses want), checked; `what` names the flags in messages (`--x`/`--y` or
/// `--val-x`/`--val-y`).
fn labeled_data(
    s: &Setup,
    x: &[String],
    y: &[String],
    what: (&str, &str),
) -> Result<Vec<(String, Column)>, UserError> {
    let (g, step) = (&s.g, &s.step);
    // The data: inputs by the model's input names, labels by its output names.
    let in_names: Vec<String> = g.inputs.iter().map(|&i| g.value(i).name.clone()).collect();
    let out_names: Vec<String> = g.outputs.iter().map(|&o| g.value(o).name.clone()).collect();
    // The inputs' .npy files are mapped, not read (what does not map as it is, is read).
    let map = |p: &Path| -> Result<Column, UserError> {
        match forgec_runtime::map_npy(p).map_err(|e| UserError::new(e.0))? {
            Some(m) => Ok(Column::mapped(m)),
            None => forgec_runtime::read_npy(p)
                .map(Column::Memory)
                .map_err(|e| UserError::new(e.0)),
        }
    };
    // An .npz of np.savez (members stored) maps too; np.savez_compressed's is read.
    let map_z = |p: &Path| -> Result<Vec<(String, Column)>, UserError> {
        match forgec_runtime::map_npz(p).map_err(|e| UserError::new(e.0))? {
            Some(members) => Ok(members
                .into_iter()
                .map(|(n, m)| (n, Column::mapped(m)))
                .collect()),
            None => Ok(forgec_runtime::read_npz(p)
                .map_err(|e| UserError::new(e.0))?
                .into_iter()
                .map(|(n, t)| (n, Column::Memory(t)))
                .collect()),
        }
    };
    let xs = super::run::read_inputs_with(x, &in_names, &map, &map_z)?;
    let ys = super::run::read_inputs(y, &out_names)?;
    let mut data: Vec<(String, Column)> = Vec::new();
    for n in &in_names {
        let t = xs
            .iter()
            .find(|(m, _)| m == n)
            .ok_or_else(|| UserError::new(format!("no {} for the model input `{n}`", what.0)))?;
        data.push(t.clone());
    }
    for (k, (n, l)) in out_names.iter().zip(&step.labels).enumerate() {
        let (loss, loss_name) = (s.outputs[k].loss, &s.loss_names[k]);
        let (_, t) = ys
            .iter()
            .find(|(m, _)| m == n)
            .ok_or_else(|| UserError::new(format!("no {} for the model output `{n}`", what.1)))?;
        // Labels of another number type are converted when they hold the same values
        // (Keras takes float or integer labels alike); the step's checks do the rest.
        let want = step
            .graph
            .ty(step.graph.find_value(l).expect("labels input"))
            .dtype;
        let t = if t.dtype() == want {
            t.clone()
        } else {
            let c = t.cast(want);
            if c.to_f64_vec() != t.to_f64_vec() {
                return Err(UserError::new(format!(
                    "{} for `{n}`: the labels are {} but {} wants {} class ids (whole numbers)",
                    what.1,
                    t.dtype(),
                    loss_name,
                    want
                )));
            }
            c
        };
        // Class ids outside the output's classes would match no class and add nothing to
        // the loss: refused, as Keras refuses them.
        if loss == LossFn::SparseCategoricalCrossentropy {
            let out = g.outputs[k];
            if let Some(classes) = g.ty(out).shape.last().and_then(|d| d.known()) {
                if let Some((at, bad)) = t
                    .to_f64_vec()
                    .into_iter()
                    .enumerate()
                    .find(|(_, v)| !(0.0..classes as f64).contains(v))
                {
                    return Err(UserError::new(format!(
                        "{} for `{n}`: label {bad} at element {at} is not a class id of the output's {classes} classes (0 to {})",
                        what.1,
                        classes - 1
                    )));
                }
            }
        }
        data.push((l.clone(), Column::Memory(t)));
    }
    Ok(data)
}

/// `--class-weight`: Keras's `class_weight` as the one output's sample weights: each sample
/// weighs its class's weight (the label, rounded; the largest entry of a one-hot row), 1 for
/// a class not named.
fn class_weights(
    spec: &str,
    outs: &[String],
    labels: &Column,
    n: usize,
    dt: DType,
) -> Result<(String, Tensor), UserError> {
    if outs.len() != 1 {
        return Err(UserError::new(format!(
            "--class-weight: the model has {} outputs; Keras's class_weight takes one: give each output's weights with --sample-weight OUTPUT=W.npy",
            outs.len()
        )));
    }
    let bad =
        |why: String| UserError::new(format!("--class-weight {}: {why}", spec.escape_debug()));
    // `{"0": 1, "1": 4.5}`, or `0:1,1:4.5`.
    let pairs: Vec<(String, Value)> = match serde_json::from_str::<Value>(spec) {
        Ok(Value::Object(o)) => o.into_iter().collect(),
        Ok(_) => {
            return Err(bad(
                "write a JSON object of class ids to weights, or 0:1,1:4.5".into(),
            ))
        }
        Err(_) => spec
            .split(',')
            .filter(|p| !p.trim().is_empty())
            .map(|p| {
                p.split_once(':')
                    .map(|(k, v)| (k.trim().to_string(), Value::String(v.trim().into())))
                    .ok_or_else(|| bad(format!("`{p}`: write CLASS:WEIGHT")))
            })
            .collect::<Result<_, _>>()?,
    };
    let mut table: std::collections::HashMap<i64, f64> = Default::default();
    for (k, v) in pairs {
        let class: i64 = k.parse().ok().filter(|c| *c >= 0).ok_or_else(|| {
            bad(format!(
                "`{}` is not a class id (0, 1, ...)",
                k.escape_debug()
            ))
        })?;
        let w = v
            .as_f64()
            .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
            .filter(|w: &f64| w.is_finite() && *w >= 0.0)
            .ok_or_else(|| {
                bad(format!(
                    "class {class}'s weight {v} is not a finite number of at least 0"
                ))
            })?;
        table.insert(class, w);
    }
    let y = match labels {
        Column::Memory(t) => t.clone(),
        c => c.take_rows(&(0..c.rows()).collect::<Vec<_>>()),
    };
    let v = y.to_f64_vec();
    let classes: Vec<i64> = match y.shape() {
        [_] | [_, 1] => v.iter().map(|x| x.round() as i64).collect(),
        [_, c] if *c > 0 => v
            .chunks(*c)
            .map(|row| {
                row.iter()
                    .enumerate()
                    .fold((0, f64::NEG_INFINITY), |b, (i, &x)| if x > b.1 { (i, x) } else { b })
                    .0 as i64
            })
            .collect(),
        s => {
            return Err(bad(format!(
                "the labels have shape {s:?}; class weights need one class per sample (a class id, or a one-hot row)"
            )))
        }
    };
    let w: Vec<f64> = classes
        .iter()
        .map(|c| *table.get(c).unwrap_or(&1.0))
        .collect();
    let t = Tensor::from_f64_values(dt, vec![n], &w).map_err(|e| UserError::new(e.to_string()))?;
    Ok((format!("{}.sample_weight", outs[0]), t))
}

/// Loads the model and the data and builds the training step; every check is made here,
/// before anything is compiled.
pub fn prepare(a: &Args) -> Result<Training, UserError> {
    super::check_threads(a.threads)?;
    if a.epochs == 0 || a.epochs > 1_000_000 {
        return Err(UserError::new(format!(
            "--epochs {}: use 1 to 1000000",
            a.epochs
        )));
    }
    if a.batch_size == 0 || a.batch_size > 1 << 20 {
        return Err(UserError::new(format!(
            "--batch-size {}: use 1 to 1048576",
            a.batch_size
        )));
    }
    if let Some(o) = &a.out {
        super::writable_dir(o, "--out")?;
    }
    let opts = LoadOptions {
        weights: a.weights.clone(),
        allow_missing_weights: false,
        input_shape: None,
    };
    let m = crate::load_any(a.model(), &opts).map_err(|e| UserError::new(e.to_string()))?;
    // TensorBoard shows each step's gradient norm, which the library then computes.
    let s = setup(
        m,
        a.model(),
        a.loss.as_deref(),
        a.optimizer.as_deref(),
        a.lr,
        a.tensorboard.is_some(),
    )?;
    let g = &s.g;
    let out_names: Vec<String> = g.outputs.iter().map(|&o| g.value(o).name.clone()).collect();
    let mut data = labeled_data(&s, &a.x, &a.y, ("--x", "--y"))?;
    let n = data[0].1.rows();
    let dt = s.state[0].1.dtype();
    match &a.class_weight {
        Some(spec) => {
            let w = class_weights(spec, &out_names, &data[g.inputs.len()].1, n, dt)?;
            data.push((w.0, Column::Memory(w.1)));
        }
        None => data.extend(
            sample_weights(a, &out_names, n, dt)?
                .into_iter()
                .map(|(k, t)| (k, Column::Memory(t))),
        ),
    }
    for (name, t) in &data {
        if t.rows() != n {
            return Err(UserError::new(format!(
                "`{name}` has {} samples but `{}` has {n}: every --x and --y needs one row per sample",
                t.rows(),
                data[0].0
            )));
        }
    }
    if n == 0 {
        return Err(UserError::new("the data has no samples"));
    }
    // Keras's validation_split: the last part of the samples, in file order.
    let (mut n, mut val, mut val_samples) = (n, Vec::new(), 0);
    if let Some(f) = a.validation_split {
        if !(f > 0.0 && f < 1.0) {
            return Err(UserError::new(format!(
                "--validation-split {f}: use a fraction between 0 and 1 (0.2 holds out the last 20% of the samples)"
            )));
        }
        let split_at = (n as f64 * (1.0 - f)).floor() as usize;
        if split_at == 0 || split_at == n {
            return Err(UserError::new(format!(
                "--validation-split {f} of {n} samples leaves {split_at} to train and {} to validate: both need at least one",
                n - split_at
            )));
        }
        val = data
            .iter()
            .map(|(k, t)| (k.clone(), t.range(split_at, n)))
            .collect();
        data = data
            .iter()
            .map(|(k, t)| (k.clone(), t.range(0, split_at)))
            .collect();
        (n, val_samples) = (split_at, n - split_at);
    }
    // Keras's validation_data: held-out files, every sample weighing 1.
    if !a.val_x.is_empty() {
        let mut v = labeled_data(&s, &a.val_x, &a.val_y, ("--val-x", "--val-y"))?;
        let vn = v[0].1.rows();
        if let Some((name, t)) = v.iter().find(|(_, t)| t.rows() != vn) {
            return Err(UserError::new(format!(
                "`{name}` has {} validation samples but `{}` has {vn}: every --val-x and --val-y needs one row per sample",
                t.rows(),
                v[0].0
            )));
        }
        if vn == 0 {
            return Err(UserError::new(
                "--val-x: the validation data has no samples",
            ));
        }
        for o in &out_names {
            v.push((
                format!("{o}.sample_weight"),
                Column::Memory(Tensor::full(dt, vec![vn], 1.0).expect("ones")),
            ));
        }
        (val, val_samples) = (v, vn);
    }
    // The data checked by the interpreter's rules first: wrong shapes and dtypes are said
    // with the input's name before anything is compiled.
    // The first batch's rows are what is checked (the data may be larger than memory).
    let labels = s.step.labels.len();
    let inputs = s.g.inputs.len();
    let data = Data::new(data, inputs, labels).map_err(UserError::new)?;
    let val = if val.is_empty() {
        Data {
            columns: Vec::new(),
            inputs,
            labels,
        }
    } else {
        Data::new(val, inputs, labels).map_err(UserError::new)?
    };
    let probe = data.batch(&(0..n.min(a.batch_size)).collect::<Vec<_>>());
    let val_probe = if val_samples == 0 {
        Vec::new()
    } else {
        val.batch(&(0..val_samples.min(a.batch_size)).collect::<Vec<_>>())
    };
    let tr = Training {
        setup: s,
        data,
        samples: n,
        val,
        val_samples,
    };
    let named = tr.named_inputs(probe, 1);
    forgec_ir::interp::check_inputs(&tr.step.graph, &named)
        .map_err(|e| UserError::new(format!("{}: {}", a.model().display(), e.0)))?;
    if !val_probe.is_empty() {
        forgec_ir::interp::check_inputs(&tr.step.graph, &tr.named_inputs(val_probe, 1)).map_err(
            |e| {
                UserError::new(format!(
                    "{}: the validation data: {}",
                    a.model().display(),
                    e.0
                ))
            },
        )?;
    }
    // `run` passes the inputs by position: they must be in the graph's order.
    let order: Vec<&str> = tr
        .step
        .graph
        .inputs
        .iter()
        .map(|&i| tr.step.graph.value(i).name.as_str())
        .collect();
    let given: Vec<&str> = named.iter().map(|(n, _)| n.as_str()).collect();
    if order != given {
        return Err(UserError::new(format!(
            "internal error: the training step's inputs are {order:?}, not {given:?}"
        )));
    }
    Ok(tr)
}

/// `--resume`: the files a checkpoint's run read must be the ones there now.
fn check_files(meta: &Value, dir: &Path) -> Result<Vec<(String, String)>, UserError> {
    let files = meta["files"].as_array().ok_or_else(|| {
        UserError::new(format!(
            "{}: damaged: it lists no files",
            dir.join(fit::checkpoint::FILE).display()
        ))
    })?;
    let mut out = Vec::new();
    for f in files {
        let (Some(p), Some(h)) = (f["path"].as_str(), f["sha256"].as_str()) else {
            return Err(UserError::new(format!(
                "{}: damaged: a file entry without its path or hash",
                dir.join(fit::checkpoint::FILE).display()
            )));
        };
        let now = super::sha256(Path::new(p))?;
        if now != h {
            return Err(UserError::new(format!(
                "{p} changed since the run began (its SHA-256 is not the one the checkpoint \
                 recorded): --resume goes on with the run's own files only; start a new run \
                 for new ones"
            )));
        }
        out.push((p.to_string(), h.to_string()));
    }
    Ok(out)
}

pub fn cmd(mut a: Args) -> Result<i32, UserError> {
    if let Some(c) = a.config.clone() {
        apply_config(&mut a, &c, EXPLICIT.get().map(Vec::as_slice).unwrap_or(&[]))?;
    }
    super::check_threads(a.threads)?;
    check_device(&a.device)?;
    let track_flag = a.track.clone();
    use std::io::IsTerminal;
    let say = Say {
        quiet: a.quiet,
        json: a.json_progress,
        live: !a.quiet && !a.json_progress && std::io::stdout().is_terminal(),
    };
    // --resume DIR: the run's own arguments, from its checkpoint, its files unchanged.
    let (a, resumed, hashes) = match &a.resume {
        Some(dir) => {
            let ck = fit::checkpoint::read(dir).map_err(UserError::new)?;
            let args = Args::from_saved(&ck.meta["args"], dir, a.threads)?;
            let hashes = check_files(&ck.meta, dir)?;
            (args, Some(ck), hashes)
        }
        None => {
            let hashes = a
                .files()
                .iter()
                .map(|p| Ok((p.to_string_lossy().into_owned(), super::sha256(p)?)))
                .collect::<Result<Vec<_>, UserError>>()?;
            (a, None, hashes)
        }
    };
    // (--epochs and --batch-size are checked by `prepare`.)
    let out = a.out().to_path_buf();
    super::writable_dir(&out, "--out")?;
    // Run tracking: the database must answer before anything is compiled.
    let track_prev = resumed
        .as_ref()
        .map_or(Value::Null, |ck| ck.meta["track"].clone());
    let target = tracking_target(track_flag.as_deref(), &out, &track_prev)?;
    if let Some(t) = &target {
        forgec_track::Db::open(t).map_err(UserError::new)?;
    }
    let tr = prepare(&a)?;
    // The learning rate's schedule: the flag's, else the model's (checked before compiling).
    let schedule = match &a.lr_schedule {
        Some(spec) => Some(Schedule::parse(spec, tr.lr).map_err(UserError::new)?),
        None => tr.schedule.clone(),
    };
    if schedule.is_some() && a.reduce_lr_on_plateau.is_some() {
        return Err(UserError::new(
            "--reduce-lr-on-plateau sets the learning rate itself: it cannot follow a learning-rate schedule too (Keras refuses the same); drop one",
        ));
    }
    let (_dir, lib) = tr.compile(a.model(), a.threads)?;
    let metric_names: Vec<String> = lib.metrics.clone();
    // The callbacks, checked against the logs the epochs will have before anything runs.
    let logs = fit::log_names(&lib, tr.val_samples > 0);
    let model_ck = match &a.model_checkpoint {
        Some(spec) => {
            if tr.k3_layout.is_none() {
                return Err(UserError::new(
                    "--model-checkpoint writes Keras files: an ONNX model's trained weights are written as final.weights.npz",
                ));
            }
            Some(fit::ModelCheckpoint::parse(spec, &logs).map_err(UserError::new)?)
        }
        None => None,
    };
    let reduce_lr_on_plateau = match &a.reduce_lr_on_plateau {
        Some(spec) => Some(fit::ReduceLrOnPlateau::parse(spec, &logs).map_err(UserError::new)?),
        None => None,
    };
    let early_stopping = match &a.early_stopping {
        Some(spec) => {
            // Keras's directions: accuracies go up; mse and mae go down; others unknown.
            let up = |m: &str| -> Option<bool> {
                if m.ends_with("accuracy") {
                    Some(true)
                } else if m.ends_with("mse") || m.ends_with("mae") {
                    Some(false)
                } else {
                    None
                }
            };
            Some(fit::EarlyStopping::parse(spec, &logs, &up).map_err(UserError::new)?)
        }
        None => None,
    };
    let settings = fit::Settings {
        epochs: a.epochs,
        batch_size: a.batch_size,
        shuffle: !a.no_shuffle,
        seed: a.seed,
        checkpoint_every: a.checkpoint_every,
        schedule: schedule.clone(),
        reduce_lr_on_plateau,
        early_stopping,
        model_tensors: Some(tr.model_tensors()),
    };
    let saved = match &resumed {
        Some(ck) => ck.meta["args"].clone(),
        None => a.saved()?,
    };
    // The run's row, once every setting was checked (a refused run is no run).
    let tracker = match &target {
        None => None,
        Some(tg) => {
            let tk = match track_prev.get("run").and_then(Value::as_i64) {
                Some(id) => forgec_track::Tracker::resume(tg, id, a.threads as i64),
                None => forgec_track::Tracker::start(
                    tg,
                    &new_run(&a, &hashes, &tr, schedule.as_ref(), &out)?,
                ),
            }
            .map_err(UserError::new)?;
            say.line(format_args!("run {} tracked in {}", tk.id, tg.describe()));
            Some(tk)
        }
    };
    let files: Vec<Value> = hashes
        .iter()
        .map(|(p, h)| json!({"path": p, "sha256": h}))
        .collect();
    let checkpointing = fit::Checkpointing {
        dir: out.clone(),
        meta: json!({
            "args": saved,
            "files": files,
            "track": {
                "target": target.as_ref().map(|t| t.describe()),
                "run": tracker.as_ref().map(|t| t.id),
            },
        }),
    };
    let hist = HistoryFile {
        path: out.join("history.json"),
        head: json!({
            "loss": tr.loss_name,
            "optimizer": describe(tr.opt, tr.rules, tr.lr),
            "lr_schedule": schedule.as_ref().map(Schedule::describe),
            "batch_size": a.batch_size,
            "shuffle": !a.no_shuffle,
            "seed": a.seed,
            "threads": a.threads,
            "samples": tr.samples,
            "validation_samples": tr.val_samples,
            "metrics": metric_names,
            "run": tracker.as_ref().map(|t| t.id),
        }),
    };
    let board = match &a.tensorboard {
        Some(d) => Some(Board::create(d, tr.val_samples > 0).map_err(UserError::new)?),
        None => None,
    };
    let lr = tr.lr;
    let Training {
        mut setup,
        data,
        val,
        val_samples,
        ..
    } = tr;
    // Ctrl-C or SIGTERM ends the run after the step it is in, with a checkpoint.
    catch_stop_signals();
    let mut shown = Shown {
        say,
        bar: Bar::new(0),
        epochs: a.epochs,
        steps_per_epoch: 0,
        out: out.clone(),
        tracker: tracker.as_ref(),
        board,
        model_ck,
        setup: &mut setup,
        hist: &hist,
        csv: a.csv_log.clone(),
    };
    let run = fit::Fit {
        lib: &lib,
        data: &data,
        validation: (val_samples > 0).then_some(&val),
        settings,
        lr,
        checkpoint: Some(checkpointing),
        resume: resumed,
        stop: Some(&STOP),
    };
    let outcome = fit::fit(run, &mut [&mut shown]).map_err(UserError::new);
    let outcome = outcome.and_then(|o| {
        if say.live {
            Bar::clear();
        }
        setup.lr = o.lr;
        let t = o.steps;
        let status = match &o.end {
            fit::End::NonFinite {
                epoch,
                batch,
                step,
                rows,
                message,
            } => {
                // The state is that of the step before: written as the final weights.
                setup.take_state(&lib)?;
                let wpath = setup.write_weights(&out, t)?;
                setup.write_keras(&out, t)?;
                hist.write(&o.history, "stopped: the loss or update is not finite")?;
                // TerminateOnNaN, saying where: the step again in the interpreter.
                let culprit = first_nonfinite(&setup, &data, rows, *step, *batch);
                return Err(UserError {
                    message: format!(
                        "epoch {}, {message}\n{culprit}\ntraining stopped; {} holds the weights after step {t}",
                        epoch + 1,
                        wpath.display(),
                    ),
                    code: 1,
                });
            }
            fit::End::Interrupted { epoch, step } => {
                // SIGINT or SIGTERM: the step done is kept, the run can go on.
                hist.write(&o.history, "interrupted")?;
                return Err(UserError {
                    message: format!(
                        "interrupted in epoch {} after step {step}: {} holds the run; go on with forgec train --resume {}",
                        epoch + 1,
                        out.join(fit::checkpoint::FILE).display(),
                        out.display()
                    ),
                    code: INTERRUPTED,
                });
            }
            fit::End::StoppedEarly { .. } => ("stopped early", forgec_track::Status::StoppedEarly),
            fit::End::Finished => ("done", forgec_track::Status::Finished),
        };
        hist.write(&o.history, status.0)?;
        // (restore_best_weights put the best epoch's weights back into the library.)
        setup.take_state(&lib)?;
        let wpath = setup.write_weights(&out, t)?;
        let kpath = setup.write_keras(&out, t)?;
        say.line(format_args!("{}\n{}", hist.path.display(), wpath.display()));
        match &kpath {
            Some(k) => say.line(format_args!("{}", k.display())),
            None if setup.k3_layout.is_some() => say.line(format_args!(
                "(no final.keras: this model's config is tf.keras 2's, not Keras 3's; final.weights.h5 loads into the model rebuilt in Keras 3)"
            )),
            None => {}
        }
        say.event(json!({"event": "end", "status": status.0, "steps": t,
            "history": hist.path, "weights": wpath, "model": kpath}));
        Ok(status.1)
    });
    if let Some(tk) = tracker {
        let (id, db) = (tk.id, tk.target.describe());
        let (status, why) = match &outcome {
            Ok(s) => (*s, None),
            Err(e) if e.code == INTERRUPTED => {
                (forgec_track::Status::Interrupted, Some(e.message.as_str()))
            }
            Err(e) => (forgec_track::Status::Failed, Some(e.message.as_str())),
        };
        let r = tk.finish(status, why, std::time::Duration::from_secs(10));
        if r.unwritten > 0 {
            eprintln!(
                "forgec: run tracking: the last rows of run {id} could not be written to {db} ({}); {} has every epoch",
                r.error.unwrap_or_default(),
                hist.path.display()
            );
        }
    }
    outcome.map(|_| 0)
}

/// `DIR/history.json`: the run's settings (`head`), then its history and status, rewritten
/// whole (atomically) after each epoch and at the end.
struct HistoryFile {
    path: PathBuf,
    head: Value,
}

impl HistoryFile {
    fn write(&self, h: &fit::History, status: &str) -> Result<(), UserError> {
        let mut v = self.head.clone();
        v["status"] = json!(status);
        v["epochs"] = json!(h.epochs);
        v["epoch_loss"] = h.epochs.iter().map(|e| e["loss"].clone()).collect();
        v["batch_loss"] = json!(h.batch_loss);
        write_atomic(
            &self.path,
            serde_json::to_string_pretty(&v).unwrap().as_bytes(),
        )
    }
}

/// What `forgec train` shows and writes as the loop runs: the progress display, the run's
/// rows, TensorBoard's events, ModelCheckpoint's files, history.json and the CSV log.
struct Shown<'a> {
    say: Say,
    bar: Bar,
    epochs: usize,
    steps_per_epoch: usize,
    out: PathBuf,
    tracker: Option<&'a forgec_track::Tracker>,
    board: Option<Board>,
    model_ck: Option<fit::ModelCheckpoint>,
    setup: &'a mut Setup,
    hist: &'a HistoryFile,
    csv: Option<PathBuf>,
}

impl fit::Callback for Shown<'_> {
    fn key(&self) -> Option<&'static str> {
        Some("model_checkpoint")
    }

    fn state(&self) -> Value {
        self.model_ck.as_ref().map_or(Value::Null, |m| m.state())
    }

    fn restore(&mut self, v: &Value) -> bool {
        if let Some(m) = &mut self.model_ck {
            m.restore(v);
        }
        true
    }

    fn on_event(
        &mut self,
        ev: &fit::Event<'_>,
        lib: &forgec_runtime::compiled::Trainer,
    ) -> Result<(), String> {
        use fit::Event;
        let say = self.say;
        match *ev {
            Event::Resumed { epoch, step } => {
                say.line(format_args!(
                    "resuming {} at epoch {}, step {step}",
                    self.out.display(),
                    epoch + 1
                ));
                say.event(json!({"event": "resume", "epoch": epoch + 1, "step": step}));
            }
            Event::Begin {
                epochs,
                samples,
                validation_samples,
                steps_per_epoch,
            } => {
                self.steps_per_epoch = steps_per_epoch;
                say.event(json!({"event": "start", "run": self.tracker.map(|t| t.id),
                    "epochs": epochs, "samples": samples, "validation_samples": validation_samples,
                    "steps_per_epoch": steps_per_epoch}));
            }
            Event::EpochBegin { done, .. } => self.bar = Bar::new(done),
            Event::Batch {
                epoch,
                batch,
                batches,
                step,
                loss,
                mean_loss,
                lr,
                gradient_norm,
            } => {
                if let Some(tk) = self.tracker {
                    tk.steps(step as i64);
                }
                if let Some(b) = &mut self.board {
                    let mut v = vec![("batch_loss", loss), ("batch_learning_rate", lr)];
                    v.extend(gradient_norm.map(|n| ("batch_gradient_norm", n)));
                    b.train(step as i64, &v);
                }
                if say.live {
                    self.bar
                        .step(epoch + 1, self.epochs, batch, batches, mean_loss);
                }
            }
            Event::Epoch {
                epoch,
                step,
                logs,
                seconds,
                step_seconds,
                samples,
            } => {
                let mut shown = String::new();
                for name in &lib.metrics {
                    let v = logs[name].as_f64().unwrap_or(f64::NAN);
                    shown.push_str(&format!(", {name} {v:.4}"));
                }
                if let Some(vl) = logs["val_loss"].as_f64() {
                    shown.push_str(&format!(", val_loss {vl:.6}"));
                    for name in &lib.metrics {
                        let v = logs[format!("val_{name}")].as_f64().unwrap_or(f64::NAN);
                        shown.push_str(&format!(", val_{name} {v:.4}"));
                    }
                }
                let speed = if samples > 0 {
                    format!(", {:.0} samples/s", samples as f64 / seconds.max(1e-9))
                } else {
                    String::new()
                };
                if say.live {
                    Bar::clear();
                }
                say.line(format_args!(
                    "epoch {}/{}: loss {:.6}{shown} ({} steps{speed})",
                    epoch + 1,
                    self.epochs,
                    logs["loss"].as_f64().unwrap_or(f64::NAN),
                    self.steps_per_epoch,
                ));
                say.event(
                    json!({"event": "epoch", "epoch": epoch + 1, "epochs": self.epochs,
                    "steps": step, "logs": logs,
                    "samples_per_second": (samples > 0).then(|| samples as f64 / seconds.max(1e-9)),
                    "seconds": seconds, "step_seconds": step_seconds}),
                );
            }
            Event::LrReduced { epoch, lr } => {
                say.line(format_args!(
                    "epoch {}: ReduceLROnPlateau reducing learning rate to {lr}",
                    epoch + 1
                ));
                say.event(json!({"event": "reduce_lr", "epoch": epoch + 1, "learning_rate": lr}));
            }
            Event::EpochDone {
                epoch,
                step,
                lr,
                logs,
                history,
            } => {
                // ModelCheckpoint: the model or its weights as they are after this epoch.
                if let Some(mc) = &mut self.model_ck {
                    if let Some(path) = mc.on_epoch_end(epoch, logs)? {
                        self.setup.take_state(lib).map_err(|e| e.message)?;
                        self.setup.lr = lr;
                        self.setup
                            .write_checkpoint_file(Path::new(&path), step, mc.weights_only)
                            .map_err(|e| e.message)?;
                        say.line(format_args!("epoch {}: saved {path}", epoch + 1));
                        say.event(
                            json!({"event": "model_checkpoint", "epoch": epoch + 1, "path": path}),
                        );
                    }
                }
                if let Some(tk) = self.tracker {
                    let row = forgec_track::EpochRow::from_logs(tk.id, epoch as i64 + 1, logs);
                    tk.epoch(row, step as i64);
                }
                if let Some(b) = &mut self.board {
                    b.epoch(epoch as i64, logs);
                }
                self.hist.write(history, "running").map_err(|e| e.message)?;
                if let Some(csv) = &self.csv {
                    write_atomic(csv, csv_log(&history.epochs).as_bytes())
                        .map_err(|e| e.message)?;
                }
            }
            Event::EarlyStopped { epoch, best_epoch } => {
                say.line(format_args!(
                    "epoch {}: early stopping (the best epoch was {})",
                    epoch + 1,
                    best_epoch + 1
                ));
                say.event(json!({"event": "early_stopping", "epoch": epoch + 1, "best_epoch": best_epoch + 1}));
            }
            Event::RestoredBest { epoch } => {
                say.line(format_args!("restored the weights of epoch {}", epoch + 1))
            }
        }
        Ok(())
    }
}

/// Keras's CSVLogger's file of the epochs so far: `epoch` (from 0), then every log in
/// alphabetical order; numbers as Python writes them.
fn csv_log(epochs: &[Value]) -> String {
    let mut keys: Vec<&str> = Vec::new();
    for e in epochs {
        for k in e.as_object().into_iter().flat_map(|o| o.keys()) {
            if k != "epoch" && k != "seconds" && !keys.contains(&k.as_str()) {
                keys.push(k);
            }
        }
    }
    keys.sort_unstable();
    // Log names come from the model file (an output's name): quoted as CSV quotes them.
    let cell = |k: &str| {
        if k.contains([',', '"', '\n', '\r']) {
            format!("\"{}\"", k.replace('"', "\"\""))
        } else {
            k.to_string()
        }
    };
    let mut out = std::iter::once("epoch".to_string())
        .chain(keys.iter().map(|k| cell(k)))
        .collect::<Vec<_>>()
        .join(",");
    out.push('\n');
    for (i, e) in epochs.iter().enumerate() {
        let mut row = vec![i.to_string()];
        row.extend(
            keys.iter()
                .map(|k| e[*k].as_f64().map(py_float).unwrap_or_default()),
        );
        out.push_str(&row.join(","));
        out.push('\n');
    }
    out
}

/// A float as Python's `repr` writes it: the shortest round trip, `1e-05` below 1e-4 and
/// from 1e16 up.
fn py_float(x: f64) -> String {
    if !x.is_finite() {
        return if x.is_nan() {
            "nan"
        } else if x > 0.0 {
            "inf"
        } else {
            "-inf"
        }
        .into();
    }
    let a = x.abs();
    if a != 0.0 && !(1e-4..1e16).contains(&a) {
        let s = format!("{x:e}");
        let (m, e) = s.split_once('e').expect("an exponent");
        let e: i32 = e.parse().expect("an exponent");
        return format!("{m}e{}{:02}", if e < 0 { '-' } else { '+' }, e.abs());
    }
    let s = format!("{x}");
    if s.contains('.') {
        s
    } else {
        format!("{s}.0")
    }
}

/// TerminateOnNaN's diagnosis of the step that was not finite: the batch's data, else the
/// first value of the step, run again in the interpreter from the same state, that is not
/// finite, named by its op and the layer it comes from.
fn first_nonfinite(tr: &Setup, data: &Data, rows: &[usize], t: usize, batch_no: usize) -> String {
    let where_ = format!("batch {batch_no} of the epoch (step {t})");
    let batch = data.batch(rows);
    for (name, x) in &batch {
        if !x.dtype().is_float() {
            continue;
        }
        let v = x.to_f64_vec();
        if let Some(i) = v.iter().position(|x| !x.is_finite()) {
            let per = (v.len() / rows.len().max(1)).max(1);
            return format!(
                "{where_}: the data is not finite: `{name}` holds {} in sample {} (row {} of its file): clean the data, or leave that sample out",
                v[i],
                i / per,
                rows[i / per]
            );
        }
    }
    let g = &tr.step.graph;
    let named = tr.named_inputs(batch, t);
    let mut found: Option<String> = None;
    let ran = forgec_ir::interp::run_watched(g, &named, &mut |node, outs| {
        for (&id, o) in node.outputs.iter().zip(outs) {
            if !o.dtype().is_float() {
                continue;
            }
            let v = o.to_f64_vec();
            if let Some(bad) = v.iter().find(|x| !x.is_finite()) {
                let name = &g.value(id).name;
                let part = if name.contains("grad") {
                    "in the backward pass"
                } else if tr.step.weights.iter().any(|w| name.starts_with(w.as_str())) {
                    "in the weights' update"
                } else {
                    "in the forward pass or the loss"
                };
                found = Some(format!(
                    "{where_}: the first value that is not finite is `{}` ({}, {bad}), {part}, from {}",
                    name.escape_debug(),
                    node.op.name(),
                    node.origin
                ));
                return false;
            }
        }
        true
    });
    match (found, ran) {
        (Some(f), _) => f,
        (None, Ok(_)) => format!(
            "{where_}: the reference interpreter runs this step with every value finite: the compiled step's rounding overflowed; lower the learning rate or clip the gradients"
        ),
        (None, Err(e)) => format!("{where_}: the interpreter could not run the step again: {}", e.0),
    }
}

/// `--tensorboard`: the train and validation event files, as Keras's TensorBoard callback
/// writes them. A write that fails is said once and the run goes on.
struct Board {
    train: forgec_track::tensorboard::EventWriter,
    validation: Option<forgec_track::tensorboard::EventWriter>,
    failed: bool,
}

impl Board {
    fn create(dir: &Path, validation: bool) -> Result<Board, String> {
        use forgec_track::tensorboard::EventWriter;
        Ok(Board {
            train: EventWriter::create(&dir.join("train"))?,
            validation: if validation {
                Some(EventWriter::create(&dir.join("validation"))?)
            } else {
                None
            },
            failed: false,
        })
    }

    fn said(&mut self, r: Result<(), String>) {
        if let Err(e) = r {
            if !self.failed {
                eprintln!("forgec: --tensorboard: {e}; training goes on without it");
                self.failed = true;
            }
        }
    }

    fn train(&mut self, step: i64, values: &[(&str, f64)]) {
        if !self.failed {
            let r = self.train.scalars(step, values);
            self.said(r);
        }
    }

    /// An epoch's logs (`epoch` from 0, as Keras's steps): `epoch_NAME` in train, the
    /// `val_` ones as `epoch_NAME` in validation.
    fn epoch(&mut self, epoch: i64, logs: &Value) {
        if self.failed {
            return;
        }
        let mut train: Vec<(String, f64)> = Vec::new();
        let mut val: Vec<(String, f64)> = Vec::new();
        for (k, v) in logs.as_object().into_iter().flatten() {
            let Some(x) = v.as_f64() else { continue };
            match k.as_str() {
                "epoch" | "seconds" => {}
                k if k.starts_with("val_") => val.push((format!("epoch_{}", &k[4..]), x)),
                k => train.push((format!("epoch_{k}"), x)),
            }
        }
        fn refs(v: &[(String, f64)]) -> Vec<(&str, f64)> {
            v.iter().map(|(k, x)| (k.as_str(), *x)).collect()
        }
        let mut r = self
            .train
            .scalars(epoch, &refs(&train))
            .and_then(|_| self.train.flush());
        if let Some(w) = &mut self.validation {
            r = r
                .and_then(|_| w.scalars(epoch, &refs(&val)))
                .and_then(|_| w.flush());
        }
        self.said(r);
    }
}

/// What `forgec train` prints: text lines, nothing (`--quiet`), or JSON events
/// (`--json-progress`, one object per line).
#[derive(Clone, Copy)]
struct Say {
    quiet: bool,
    json: bool,
    /// A live progress line (stdout is a terminal, neither flag given).
    live: bool,
}

/// Keras's live progress line, on a terminal only: the epoch, a bar, the steps done, the time
/// left and the epoch's loss so far; redrawn at most ten times a second and cleared before
/// the epoch's line.
struct Bar {
    start: std::time::Instant,
    last: Option<std::time::Instant>,
    /// Steps of the epoch run before this process (a resumed epoch).
    before: usize,
}

impl Bar {
    fn new(before: usize) -> Bar {
        Bar {
            start: std::time::Instant::now(),
            last: None,
            before,
        }
    }

    fn step(&mut self, epoch: usize, epochs: usize, i: usize, steps: usize, loss: f64) {
        use std::io::Write;
        let now = std::time::Instant::now();
        if i < steps
            && self
                .last
                .is_some_and(|l| now - l < std::time::Duration::from_millis(100))
        {
            return;
        }
        self.last = Some(now);
        let ran = i.saturating_sub(self.before).max(1);
        let eta = self.start.elapsed().as_secs_f64() / ran as f64 * (steps - i) as f64;
        const W: usize = 30;
        let filled = W * i / steps.max(1);
        let bar = if filled >= W {
            "=".repeat(W)
        } else {
            format!("{}>{}", "=".repeat(filled), ".".repeat(W - filled - 1))
        };
        let eta = if eta >= 60.0 {
            format!("{}:{:02}", eta as u64 / 60, eta as u64 % 60)
        } else {
            format!("{eta:.1} s")
        };
        let mut out = std::io::stdout().lock();
        let _ = write!(
            out,
            "\r\x1b[2Kepoch {epoch}/{epochs} [{bar}] {i}/{steps} - ETA {eta} - loss: {loss:.4}"
        );
        let _ = out.flush();
    }

    fn clear() {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let _ = write!(out, "\r\x1b[2K");
        let _ = out.flush();
    }
}

impl Say {
    fn line(self, text: std::fmt::Arguments) {
        if !self.quiet && !self.json {
            println!("{text}");
        }
    }

    fn event(self, v: Value) {
        if self.json {
            println!("{v}");
        }
    }
}

/// The arguments given on the command line itself (clap's ids), which a `--config` file does
/// not override; set by `cli::parse`.
pub static EXPLICIT: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();

/// `--config train.toml`: each key a flag's name (`batch_size` or `batch-size`), its value
/// of the flag's kind; callbacks' settings as tables (`[early_stopping]`, `[lr_schedule]` with
/// `kind`, `[class_weight]`); paths relative to the file's directory. Keys the command line
/// gave keep the command line's value. Unknown keys and wrong kinds are refused by name.
fn apply_config(a: &mut Args, path: &Path, explicit: &[String]) -> Result<(), UserError> {
    let disp = path.display();
    let text = std::fs::read_to_string(path)
        .map_err(|e| UserError::new(format!("{disp}: cannot read: {e}")))?;
    let table: toml::Table = text
        .parse()
        .map_err(|e| UserError::new(format!("{disp}: not TOML: {e}")))?;
    let base = path.parent().unwrap_or(Path::new("")).to_path_buf();
    let file = |v: &str| -> String {
        // `NAME=FILE` entries keep their name; the file is relative to the config.
        match entry_parts(v) {
            (Some(n), f) => format!("{n}={}", base.join(f).display()),
            (None, f) => base.join(f).to_string_lossy().into_owned(),
        }
    };
    let mut problems = Vec::new();
    for (key, v) in &table {
        let k = key.replace('-', "_");
        // --shuffle and --no-shuffle are one setting.
        let order = ["shuffle".to_string(), "no_shuffle".to_string()];
        if explicit.contains(&k)
            || (order.contains(&k) && order.iter().any(|o| explicit.contains(o)))
        {
            continue;
        }
        let bad = |want: &str| format!("{disp}: `{}` must be {want}, not {v}", key.escape_debug());
        let int = || {
            v.as_integer()
                .filter(|i| *i >= 0)
                .map(|i| i as usize)
                .ok_or_else(|| bad("a whole number"))
        };
        let float = || {
            v.as_float()
                .or(v.as_integer().map(|i| i as f64))
                .ok_or_else(|| bad("a number"))
        };
        let string = || v.as_str().map(String::from).ok_or_else(|| bad("a string"));
        let boolean = || v.as_bool().ok_or_else(|| bad("true or false"));
        let files = || -> Result<Vec<String>, String> {
            match v {
                toml::Value::String(s) => Ok(vec![file(s)]),
                toml::Value::Array(xs) => xs
                    .iter()
                    .map(|x| {
                        x.as_str()
                            .map(file)
                            .ok_or_else(|| bad("a file or a list of files"))
                    })
                    .collect(),
                _ => Err(bad("a file or a list of files")),
            }
        };
        // A callback's settings: a table (KEY = VALUE) or the flag's own text.
        let settings = |kind_first: bool| -> Result<String, String> {
            match v {
                toml::Value::String(s) => Ok(s.clone()),
                toml::Value::Table(t) => {
                    let mut parts = Vec::new();
                    if kind_first {
                        let kind = t.get("kind").and_then(|k| k.as_str()).ok_or_else(|| {
                            bad("a table with `kind` (exponential, inverse_time, polynomial, cosine, cosine_restarts or piecewise)")
                        })?;
                        parts.push(kind.to_string());
                    }
                    for (tk, tv) in t {
                        if kind_first && tk == "kind" {
                            continue;
                        }
                        let val = match tv {
                            toml::Value::String(s) if tk == "filepath" => file(s),
                            toml::Value::String(s) => s.clone(),
                            toml::Value::Array(xs) => xs
                                .iter()
                                .map(|x| x.to_string())
                                .collect::<Vec<_>>()
                                .join(":"),
                            other => other.to_string(),
                        };
                        parts.push(format!("{tk}={val}"));
                    }
                    Ok(parts.join(","))
                }
                _ => Err(bad("a table of settings")),
            }
        };
        let r: Result<(), String> = (|| {
            match k.as_str() {
                "model" => a.model = Some(PathBuf::from(file(&string()?))),
                "weights" => a.weights = Some(PathBuf::from(file(&string()?))),
                "x" => a.x = files()?,
                "y" => a.y = files()?,
                "sample_weight" => a.sample_weight = files()?,
                "val_x" => a.val_x = files()?,
                "val_y" => a.val_y = files()?,
                "epochs" => a.epochs = int()?,
                "batch_size" => a.batch_size = int()?,
                "seed" => a.seed = int()? as u64,
                "threads" => a.threads = int()?,
                "checkpoint_every" => a.checkpoint_every = int()?,
                "shuffle" => a.no_shuffle = !boolean()?,
                "no_shuffle" => a.no_shuffle = boolean()?,
                "loss" => a.loss = Some(string()?),
                "optimizer" => a.optimizer = Some(string()?),
                "lr" | "learning_rate" => a.lr = Some(float()?),
                "out" => a.out = Some(PathBuf::from(file(&string()?))),
                "validation_split" => a.validation_split = Some(float()?),
                "early_stopping" => a.early_stopping = Some(settings(false)?),
                "reduce_lr_on_plateau" => a.reduce_lr_on_plateau = Some(settings(false)?),
                "model_checkpoint" => a.model_checkpoint = Some(settings(false)?),
                "lr_schedule" => a.lr_schedule = Some(settings(true)?),
                "class_weight" => {
                    a.class_weight = Some(match v {
                        toml::Value::Table(t) => {
                            let o: serde_json::Map<String, Value> = t
                                .iter()
                                .map(|(c, w)| (c.clone(), json!(w.as_float().or(w.as_integer().map(|i| i as f64)))))
                                .collect();
                            Value::Object(o).to_string()
                        }
                        _ => string()?,
                    })
                }
                "csv_log" => a.csv_log = Some(PathBuf::from(file(&string()?))),
                "tensorboard" => a.tensorboard = Some(PathBuf::from(file(&string()?))),
                "track" => a.track = Some(string()?),
                "device" => a.device = string()?,
                "quiet" => a.quiet = boolean()?,
                "json_progress" => a.json_progress = boolean()?,
                _ => {
                    return Err(format!(
                        "{disp}: `{}` is not a setting of forgec train (model, weights, x, y, sample_weight, val_x, val_y, epochs, batch_size, shuffle, seed, loss, optimizer, lr, threads, out, validation_split, class_weight, early_stopping, reduce_lr_on_plateau, model_checkpoint, lr_schedule, csv_log, tensorboard, checkpoint_every, track, device, quiet, json_progress)",
                        key.escape_debug()
                    ))
                }
            }
            Ok(())
        })();
        if let Err(e) = r {
            problems.push(e);
        }
    }
    if !problems.is_empty() {
        return Err(UserError::new(problems.join("\n")));
    }
    for (missing, what) in [
        (a.model.is_none(), "the model (MODEL, or `model = ...`)"),
        (a.x.is_empty(), "the inputs (--x, or `x = ...`)"),
        (a.y.is_empty(), "the labels (--y, or `y = ...`)"),
        (
            a.out.is_none(),
            "the output directory (--out, or `out = ...`)",
        ),
    ] {
        if missing {
            return Err(UserError::new(format!(
                "{disp}: no {what} on the command line or in the file"
            )));
        }
    }
    Ok(())
}

/// Set by SIGINT or SIGTERM: the loop stops after its step, checkpointed.
static STOP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The exit code of a run stopped by a signal (as a shell reports SIGINT's).
const INTERRUPTED: i32 = 130;

extern "C" fn on_stop_signal(_: libc::c_int) {
    STOP.store(true, std::sync::atomic::Ordering::SeqCst);
}

/// SIGINT and SIGTERM set `STOP` once; the handler then goes back to the default, so a second
/// Ctrl-C ends the process at once.
fn catch_stop_signals() {
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_stop_signal as *const () as usize;
        sa.sa_flags = libc::SA_RESETHAND;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(libc::SIGINT, &sa, std::ptr::null_mut());
        libc::sigaction(libc::SIGTERM, &sa, std::ptr::null_mut());
    }
}

/// `--device`: the CPU, or a CUDA device when there is one and forgec can train on it
/// (not yet: the CUDA target does not compile training steps). Never a silent CPU run.
fn check_device(d: &str) -> Result<(), UserError> {
    let cuda = d == "cuda"
        || d.strip_prefix("cuda:")
            .is_some_and(|n| n.parse::<u32>().is_ok());
    if d == "cpu" {
        return Ok(());
    }
    if !cuda {
        return Err(UserError::new(format!(
            "--device {}: use cpu, cuda or cuda:N",
            d.escape_debug()
        )));
    }
    let found = match forgec_runtime::device::cuda_driver() {
        Err(why) => why,
        Ok(c) if c.devices.is_empty() => format!(
            "the CUDA driver {} is installed but sees no device",
            c.version_text()
        ),
        Ok(c) if d
            .strip_prefix("cuda:")
            .and_then(|n| n.parse::<usize>().ok())
            .is_some_and(|n| n >= c.devices.len()) =>
        {
            format!(
                "the CUDA driver {} sees {} device(s), cuda:0 to cuda:{} (`forgec devices` lists them)",
                c.version_text(),
                c.devices.len(),
                c.devices.len() - 1
            )
        }
        Ok(c) => format!(
            "the CUDA driver {} sees {} device(s) ({}), but forgec's CUDA target does not compile training steps yet",
            c.version_text(),
            c.devices.len(),
            c.devices
                .iter()
                .map(|g| format!("cuda:{} {}", g.ordinal, g.name))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    Err(UserError::new(format!(
        "--device {d}: {found}; train with --device cpu (forgec never falls back to the CPU by itself)"
    )))
}

/// The run database: `--track`, else (resuming) the one the checkpoint names, else
/// `$FORGEC_TRACK`, else `forgec-runs.sqlite` in `out`'s parent directory; None for `none`.
fn tracking_target(
    flag: Option<&str>,
    out: &Path,
    prev: &Value,
) -> Result<Option<forgec_track::Target>, UserError> {
    if flag.is_none() && prev.is_object() {
        return match prev["target"].as_str() {
            None => Ok(None),
            Some(spec) if spec.contains(":***@") => Err(UserError::new(format!(
                "the run was tracked in {spec}: its checkpoint keeps the URL without the password: pass --track with the full URL"
            ))),
            Some(spec) => forgec_track::Target::parse(spec)
                .map(Some)
                .map_err(UserError::new),
        };
    }
    let cwd = std::env::current_dir().map_err(|e| UserError::new(e.to_string()))?;
    let parent = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    super::runs::target(flag, &cwd.join(parent).join("forgec-runs.sqlite"))
}

/// The row a run starts as: what it trains, on what, with which settings and files.
fn new_run(
    a: &Args,
    hashes: &[(String, String)],
    tr: &Training,
    schedule: Option<&Schedule>,
    out: &Path,
) -> Result<forgec_track::NewRun, UserError> {
    use sha2::{Digest, Sha256};
    let cwd = std::env::current_dir().map_err(|e| UserError::new(e.to_string()))?;
    // The model (and its weights file) first, then the data, as `Args::files` lists them.
    let skip = 1 + usize::from(a.weights.is_some());
    let mut h = Sha256::new();
    for (_, sum) in hashes.iter().skip(skip) {
        h.update(sum.as_bytes());
        h.update(b"\n");
    }
    let data_sha256: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    let model = cwd.join(a.model());
    Ok(forgec_track::NewRun {
        model_name: model
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default(),
        model_path: model.to_string_lossy().into_owned(),
        model_sha256: hashes.first().map(|(_, h)| h.clone()).unwrap_or_default(),
        data_sha256,
        files: hashes
            .iter()
            .map(|(p, h)| json!({"path": p, "sha256": h}))
            .collect(),
        optimizer_type: tr.opt.keras_name().to_string(),
        loss: tr.loss_name.clone(),
        hyperparameters: json!({
            "epochs": a.epochs,
            "batch_size": a.batch_size,
            "shuffle": !a.no_shuffle,
            "seed": a.seed,
            "learning_rate": tr.lr,
            "lr_schedule": schedule.map(Schedule::describe),
            "reduce_lr_on_plateau": a.reduce_lr_on_plateau,
            "optimizer": describe(tr.opt, tr.rules, tr.lr),
            "validation_split": a.validation_split,
            "early_stopping": a.early_stopping,
            "checkpoint_every": a.checkpoint_every,
            "samples": tr.samples,
            "validation_samples": tr.val_samples,
        }),
        epochs_planned: a.epochs as i64,
        forgec_version: env!("CARGO_PKG_VERSION").into(),
        machine: forgec_runtime::device::cpu().model,
        device: "cpu".into(),
        threads: a.threads as i64,
        checkpoint_path: cwd
            .join(out)
            .join(fit::checkpoint::FILE)
            .to_string_lossy()
            .into_owned(),
        out_dir: cwd.join(out).to_string_lossy().into_owned(),
    })
}
