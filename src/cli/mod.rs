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
    Check {
        model: PathBuf,
        #[arg(long)]
        weights: Option<PathBuf>,
        /// The loss (default: the one the model was compiled with)
        #[arg(long)]
        loss: Option<String>,
        /// Whether the loss takes logits (default: from the compile config, else false)
        #[arg(long)]
        from_logits: Option<bool>,
        /// The shape of one sample of the data, without the batch dim: 28,28,1
        #[arg(long, value_delimiter = ',')]
        input_shape: Option<Vec<usize>>,
        /// The training data (.npy), whose shape is checked against the model's input
        #[arg(long)]
        data: Option<PathBuf>,
        /// The training labels (.npy), checked against the loss and the output
        #[arg(long)]
        labels: Option<PathBuf>,
    },
    /// Compile the model to a native library with a C API: libNAME.a, libNAME.so, NAME.h, NAME.json.
    Compile {
        model: PathBuf,
        #[arg(long)]
        weights: Option<PathBuf>,
        /// The output directory
        #[arg(long, short = 'o')]
        out: PathBuf,
        /// The library's name (default: the model file's name)
        #[arg(long)]
        name: Option<String>,
        /// native, x86-64-v2 (portable), x86-64-v3, x86-64-v4, or any LLVM CPU name
        #[arg(long, default_value = "x86-64-v2")]
        cpu: String,
        /// An LLVM target triple, e.g. aarch64-unknown-linux-gnu (default: this machine)
        #[arg(long)]
        target: Option<String>,
        /// Stop at a stage: mlir, llvm, asm, obj; lib (the default) writes the artifact
        #[arg(long, default_value = "lib")]
        emit: String,
    },
    /// Measure the compiled model: latency (median, p90) and throughput per batch size.
    Bench {
        model: PathBuf,
        #[arg(long, value_delimiter = ',', default_value = "1,32")]
        batch: Vec<usize>,
        #[arg(long, value_delimiter = ',', default_value = "1")]
        threads: Vec<usize>,
        /// Write the records as JSON
        #[arg(long)]
        json: Option<PathBuf>,
        #[arg(long, default_value = "native")]
        cpu: String,
        /// Seconds of measurement per batch size
        #[arg(long, default_value_t = 1.0)]
        seconds: f64,
    },
    /// Run an ONNX test suite (standard layout) through import and the interpreter.
    Conformance {
        /// A directory of cases: <suite>/<case>/model.onnx + test_data_set_N/
        dir: PathBuf,
        /// Where to write the JSON report
        #[arg(long)]
        report: Option<PathBuf>,
        #[arg(long, default_value_t = 1e-3)]
        rtol: f64,
        #[arg(long, default_value_t = 1e-7)]
        atol: f64,
        /// Only cases whose path contains this text
        #[arg(long)]
        filter: Option<String>,
        /// Print every case that does not pass
        #[arg(long, short)]
        verbose: bool,
        /// Write the claimed-op table as Markdown
        #[arg(long)]
        markdown: Option<PathBuf>,
        /// Exit 1 when fewer cases pass
        #[arg(long)]
        min_passed: Option<usize>,
        /// Exit 1 when more cases fail
        #[arg(long)]
        max_failed: Option<usize>,
    },
    /// Run the model on inputs and write its outputs as .npy files.
    Run {
        model: PathBuf,
        #[arg(long)]
        weights: Option<PathBuf>,
        /// An input as [NAME=]FILE.npy, or an .npz holding inputs by name (repeatable)
        #[arg(long = "input", short = 'i', required = true)]
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
    },
}

/// Runs the command; returns the exit code.
pub fn main_with(cli: Cli) -> i32 {
    let res: Result<i32, UserError> = match cli.command {
        Command::Summary { model, weights, ir } => summary::cmd(&model, weights, ir),
        Command::Check {
            model,
            weights,
            loss,
            from_logits,
            input_shape,
            data,
            labels,
        } => check::cmd(check::Args {
            model,
            weights,
            loss,
            from_logits,
            input_shape,
            data,
            labels,
        }),
        Command::Bench {
            model,
            batch,
            threads,
            json,
            cpu,
            seconds,
        } => bench::cmd(bench::Args {
            model,
            batches: batch,
            threads,
            json,
            cpu,
            seconds,
        }),
        Command::Compile {
            model,
            weights,
            out,
            name,
            cpu,
            target,
            emit,
        } => compile::cmd(compile::Args {
            model,
            weights,
            out,
            name,
            cpu,
            target,
            emit,
        }),
        Command::Conformance {
            dir,
            report,
            rtol,
            atol,
            filter,
            verbose,
            markdown,
            min_passed,
            max_failed,
        } => conformance::cmd(conformance::Args {
            dir,
            report,
            rtol,
            atol,
            filter,
            verbose,
            markdown,
            min_passed,
            max_failed,
        }),
        Command::Run {
            model,
            weights,
            inputs,
            output_dir,
            npz,
            engine,
        } => run::cmd(&model, weights, &inputs, &output_dir, npz, &engine),
    };
    match res {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", e.message.replace('\n', "\nerror: "));
            e.code
        }
    }
}
