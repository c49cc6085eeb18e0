//! `forgec compile`: a model file in, a native library (and its C header) out.

use crate::codegen::{self, Emit, Options};
use crate::keras::LoadOptions;
use crate::UserError;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The model: .keras, .json (+ .weights.h5 beside it), tf.keras .h5, or .onnx
    pub model: PathBuf,
    /// `external`: large constants go to NAME.weights, which the library maps when it is
    /// loaded; `embedded` (the default) keeps them in the library. Any other value is the
    /// Keras weights file of a JSON model (write `./external` for a file of that name).
    #[arg(long, value_name = "embedded|external|FILE", action = clap::ArgAction::Append)]
    pub weights: Vec<PathBuf>,
    /// The output directory
    #[arg(long, short = 'o')]
    pub out: PathBuf,
    /// The library's name (default: the model file's name)
    #[arg(long)]
    pub name: Option<String>,
    /// portable (x86-64-v2, v3 and v4 in one library, the best the CPU has picked when it is
    /// loaded), native, x86-64-v2, x86-64-v3, x86-64-v4, or any LLVM CPU name (default:
    /// portable for x86_64 targets, generic for others)
    #[arg(long)]
    pub cpu: Option<String>,
    /// An LLVM target triple, e.g. aarch64-unknown-linux-gnu (default: this machine)
    #[arg(long)]
    pub target: Option<String>,
    /// Stop at a stage: ir (forgec's IR after its passes), mlir, llvm, asm, obj; lib (the
    /// default) writes the artifact
    #[arg(long, default_value = "lib")]
    pub emit: String,
    /// The threads a new context of the library runs on (1 to 64; NAME_set_threads changes
    /// them per context)
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Add the training API to the library (NAME_train_*: steps, evaluation, prediction with
    /// the trained weights, the state as one blob)
    #[arg(long)]
    pub train: bool,
    /// With --train: each step also computes the global L2 norm of its gradients, before
    /// clipping (NAME_train_gradient_norm; a pass over the gradients, about a third of
    /// mlp_mnist's step)
    #[arg(long, requires = "train")]
    pub gradient_norm: bool,
    /// With --train: the loss (default: the one the model was compiled with)
    #[arg(long, requires = "train")]
    pub loss: Option<String>,
    /// With --train: sgd, adam, adamw, rmsprop, adagrad or nadam (default: the compile config's)
    #[arg(long, requires = "train")]
    pub optimizer: Option<String>,
    /// With --train: the learning rate a new training context starts at (default: the
    /// model's compile config, else Keras's default)
    #[arg(long, requires = "train")]
    pub lr: Option<f64>,
}

/// The SHA-256 of the model's file(s), hex.
pub fn sha256_of(paths: &[&Path]) -> Result<String, UserError> {
    let mut h = Sha256::new();
    for p in paths {
        let bytes = std::fs::read(p)
            .map_err(|e| UserError::new(format!("{}: cannot read: {e}", p.display())))?;
        h.update(&bytes);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

pub fn cmd(a: Args) -> Result<i32, UserError> {
    let emit = Emit::parse(&a.emit).ok_or_else(|| {
        UserError::new(format!(
            "--emit {}: use ir, mlir, llvm, asm, obj or lib",
            a.emit
        ))
    })?;
    super::check_threads(a.threads)?;
    // A directory that cannot be written is said before the work (a big model compiles for
    // minutes).
    super::writable_dir(&a.out, "-o")?;
    let mode = |p: &PathBuf| p.as_os_str() == "external" || p.as_os_str() == "embedded";
    let external = a.weights.iter().any(|p| p.as_os_str() == "external");
    let weights_file = a.weights.iter().find(|p| !mode(p)).cloned();
    let opts = LoadOptions {
        weights: weights_file.clone(),
        allow_missing_weights: false,
        input_shape: None,
    };
    let m = crate::load_any(&a.model, &opts).map_err(|e| UserError::new(e.to_string()))?;
    let stem = a
        .model
        .file_name()
        .map(|f| {
            f.to_string_lossy()
                .split('.')
                .next()
                .unwrap_or("model")
                .to_string()
        })
        .unwrap_or_else(|| "model".into());
    let name = match a.name.as_deref() {
        Some(n) => {
            let ok = codegen::artifact_name(n);
            if ok != n {
                return Err(UserError::new(format!(
                    "--name {n:?}: the library's name prefixes every C symbol: use lower-case ASCII letters, digits and _, starting with a letter, at most 64 (e.g. --name {ok})"
                )));
            }
            ok
        }
        None => codegen::artifact_name(&stem),
    };
    let mut files: Vec<&Path> = vec![&a.model];
    if let Some(w) = &weights_file {
        files.push(w);
    }
    let sha = sha256_of(&files)?;
    let o = Options {
        name,
        cpu: a.cpu.clone(),
        target: a.target.clone(),
        emit,
        external_weights: external,
        threads: a.threads,
    };
    let written = if a.train {
        if emit != Emit::Lib {
            return Err(UserError::new(format!(
                "--train makes a library: --emit {} is for inference only",
                a.emit
            )));
        }
        let s = super::train::setup(
            m,
            &a.model,
            a.loss.as_deref(),
            a.optimizer.as_deref(),
            a.lr,
            a.gradient_norm,
        )?;
        if let Some(sched) = &s.schedule {
            // The library keeps one rate; the application steps the schedule.
            eprintln!(
                "forgec: the model's learning rate follows a schedule ({}); the library starts at its first rate, {}: call NAME_train_set_lr before each step to follow it (forgec train does)",
                sched.describe()["class_name"].as_str().unwrap_or(""),
                s.lr
            );
        }
        let t = super::train::library(&s, &a.model)?;
        codegen::compile_train(s.g, t, &o, &a.out, &sha)
    } else {
        codegen::compile(m.into_graph(), &o, &a.out, &sha)
    }
    .map_err(|e| UserError::new(format!("{}: {e}", a.model.display())))?;
    for f in written {
        println!("{}", f.display());
    }
    Ok(0)
}
