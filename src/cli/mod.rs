//! The `forgec` command line: `summary`, `check`, `compile`, `run`, `bench`, `train`, `runs`,
//! `conformance`, `completions`. Each command's flags and their checks live in its module; this one parses
//! and dispatches, and maps errors to exit codes (0 ok, 1 findings, 2 usage or input error).

pub mod bench;
pub mod check;
pub mod compile;
pub mod conformance;
pub mod devices;
pub mod run;
pub mod runs;
pub mod summary;
pub mod train;

use crate::UserError;
use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// What `--help` ends with.
const EXIT_CODES: &str =
    "Exit codes: 0 success; 1 findings (`check` found mistakes, `conformance` missed its \
bounds); 2 a usage or input error (a bad flag, a malformed or unsupported model, wrong shapes), \
said in one message naming the file and the layer or node; 130 `train` stopped by Ctrl-C or \
SIGTERM (checkpointed: `--resume` goes on); 101 an internal error (a bug in forgec).";

#[derive(Parser, Debug)]
#[command(
    name = "forgec",
    version,
    about = "Graph compiler and ahead-of-time exporter for Keras and ONNX models",
    after_help = EXIT_CODES
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Print the model's layers, output shapes and parameter counts, as Keras's model.summary() does
    /// (for an ONNX model: its inputs, outputs, op table and parameters).
    Summary {
        /// The model: .keras, .json (+ .weights.h5 beside it), tf.keras .h5, or .onnx
        model: PathBuf,
        /// The Keras weights file (.weights.h5), when it is not beside the JSON
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
    /// Train the model: its training step (forward, loss, gradients, optimizer update) compiled
    /// and run over the data as Keras's fit does; writes history.json and the final weights.
    Train(Box<train::Args>),
    /// The training runs tracked in SQL (SQLite or PostgreSQL): list, show, compare, plot.
    Runs(runs::Args),
    /// The CPU and the CUDA devices this machine has, and what forgec would target on them
    /// (with no CUDA driver: what is missing and how to check).
    Devices(devices::Args),
    /// Run an ONNX test suite (standard layout) through import and the interpreter.
    Conformance(conformance::Args),
    /// Run the model on inputs and write its outputs as .npy files.
    Run {
        /// The model: .keras, .json (+ .weights.h5 beside it), tf.keras .h5, or .onnx
        model: PathBuf,
        /// The Keras weights file (.weights.h5), when it is not beside the JSON
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
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    ///
    /// bash: `forgec completions bash > ~/.local/share/bash-completion/completions/forgec`;
    /// zsh: `forgec completions zsh > _forgec` in a directory of your $fpath; fish:
    /// `forgec completions fish > ~/.config/fish/completions/forgec.fish`.
    Completions {
        /// bash, zsh, fish, elvish or powershell
        shell: clap_complete::Shell,
    },
}

/// `--version`: forgec's version and the LLVM and MLIR it generates code with.
pub fn long_version() -> String {
    let (ma, mi, pa) = crate::codegen::llvm::llvm_version();
    format!(
        "{} (LLVM {ma}.{mi}.{pa}, MLIR {ma}, linked statically)",
        env!("CARGO_PKG_VERSION")
    )
}

/// Parses the command line (`--version` with [`long_version`]).
pub fn parse() -> Cli {
    use clap::{CommandFactory, FromArgMatches};
    let version: &'static str = Box::leak(long_version().into_boxed_str());
    let matches = Cli::command().version(version).get_matches();
    // What the command line gave itself, which `train --config` does not override.
    if let Some(("train", sub)) = matches.subcommand() {
        let given = sub
            .ids()
            .filter(|id| {
                sub.value_source(id.as_str()) == Some(clap::parser::ValueSource::CommandLine)
            })
            .map(|id| id.to_string())
            .collect();
        let _ = train::EXPLICIT.set(given);
    }
    Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

/// A directory the command will write into: made if missing, and checked writable before
/// any work (`flag` names the option that chose it).
pub fn writable_dir(dir: &std::path::Path, flag: &str) -> Result<(), UserError> {
    std::fs::create_dir_all(dir).map_err(|e| {
        UserError::new(format!(
            "{}: cannot create: {e} (choose another {flag})",
            dir.display()
        ))
    })?;
    tempfile::tempfile_in(dir).map_err(|e| {
        UserError::new(format!(
            "{}: cannot write there: {e} (choose another {flag})",
            dir.display()
        ))
    })?;
    Ok(())
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
        Command::Train(a) => train::cmd(*a),
        Command::Runs(a) => runs::cmd(a),
        Command::Devices(a) => devices::cmd(a),
        Command::Completions { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(shell, &mut Cli::command(), "forgec", &mut std::io::stdout());
            Ok(0)
        }
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

/// The SHA-256 of a file, in hex.
pub fn sha256(path: &std::path::Path) -> Result<String, UserError> {
    use sha2::{Digest, Sha256};
    use std::io::Read;
    let mut f = std::fs::File::open(path)
        .map_err(|e| UserError::new(format!("{}: cannot read: {e}", path.display())))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let k = f
            .read(&mut buf)
            .map_err(|e| UserError::new(format!("{}: cannot read: {e}", path.display())))?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
    }
    Ok(h.finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>())
}
