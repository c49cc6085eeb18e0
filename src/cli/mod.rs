//! The `forgec` command line: `summary`, `check`, `run`.

pub mod bench;
pub mod check;
pub mod compile;
pub mod conformance;
pub mod run;
pub mod summary;

use crate::UserError;
use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "forgec",
    version,
    about = "Graph compiler and ahead-of-time exporter for Keras and ONNX models"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Print the model's layers, output shapes and parameter counts, as Keras's model.summary() does.
    Summary {
        /// The model: .keras, .json (+ .weights.h5 beside it), tf.keras .h5
        model: PathBuf,
        /// The weights file, when it is not next to the JSON
        #[arg(long)]
        weights: Option<PathBuf>,
        /// Also print forgec's IR of the model (weights elided)
        #[arg(long)]
        ir: bool,
    },
    /// Find the classic Keras mistakes before training: activation/loss mismatches, label
    /// encodings that do not fit the loss, data shapes that do not fit the model.
    Check(check::Args),
    /// Compile the model to a native library with a C API: libNAME.a, libNAME.so, NAME.h, NAME.json.
    Compile(compile::Args),
    /// Measure the compiled model: latency (median, p90) and throughput per batch size.
    Bench(bench::Args),
    /// Run an ONNX test suite (standard layout) through import and the interpreter.
    Conformance(conformance::Args),
    /// Run the model on inputs and write its outputs as .npy files.
    Run {
        model: PathBuf,
        #[arg(long)]
        weights: Option<PathBuf>,
        /// An input as [NAME=]FILE.npy, or an .npz holding inputs by name (repeatable; none for a model without inputs)
        #[arg(long = "input", short = 'i')]
        inputs: Vec<String>,
        /// Where to write <output name>.npy for every model output
        #[arg(long, short = 'o')]
        output_dir: PathBuf,
        /// Also write all outputs into DIR/outputs.npz
        #[arg(long)]
        npz: bool,
        /// compiled (a native library built on the fly), interp (the reference interpreter),
        /// or auto: compiled when the compiler lowers every op, else the interpreter
        #[arg(long, default_value = "auto")]
        engine: String,
        /// Threads for the compiled engine (the reference interpreter runs on one)
        #[arg(long, default_value_t = 1)]
        threads: usize,
    },
}

/// A `--threads` count is one a context can run on.
pub fn check_threads(t: usize) -> Result<(), UserError> {
    if (1..=crate::codegen::MAX_THREADS).contains(&t) {
        Ok(())
    } else {
        Err(UserError::new(format!(
            "--threads {t}: use 1 to {}",
            crate::codegen::MAX_THREADS
        )))
    }
}

/// Runs the command; returns the exit code.
pub fn main_with(cli: Cli) -> i32 {
    let res: Result<i32, UserError> = match cli.command {
        Command::Summary { model, weights, ir } => summary::cmd(&model, weights, ir),
        Command::Check(a) => check::cmd(a),
        Command::Bench(a) => bench::cmd(a),
        Command::Compile(a) => compile::cmd(a),
        Command::Conformance(a) => conformance::cmd(a),
        Command::Run {
            model,
            weights,
            inputs,
            output_dir,
            npz,
            engine,
            threads,
        } => run::cmd(
            &model,
            weights,
            &inputs,
            &output_dir,
            npz,
            (&engine, threads),
        ),
    };
    match res {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", e.message.replace('\n', "\nerror: "));
            e.code
        }
    }
}
