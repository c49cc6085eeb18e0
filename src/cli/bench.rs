//! `forgec bench`: latency (median, p90) and throughput of the compiled model per batch size.

use crate::keras::LoadOptions;
use crate::UserError;
use forgec_runtime::compiled::CompiledModel;
use forgec_runtime::{DType, Tensor};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The model: .keras, .json (+ .weights.h5 beside it), tf.keras .h5, or .onnx (compiled
    /// first, for this machine)
    pub model: PathBuf,
    /// Batch sizes to measure, comma-separated (1 to the most whose buffers fit in memory;
    /// default 1,32, or a model's fixed batch)
    #[arg(long = "batch", value_name = "BATCH", value_delimiter = ',')]
    pub batches: Vec<usize>,
    /// Thread counts to measure, comma-separated (1 to 64): every batch size runs on each
    #[arg(long, value_delimiter = ',', default_value = "1")]
    pub threads: Vec<usize>,
    /// Write the records as JSON
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// The CPU to compile for: portable (what `forgec compile` makes by default: x86-64-v2, v3
    /// and v4, the best this machine has picked at load), native (this machine's), x86-64-v2,
    /// x86-64-v3, x86-64-v4, or an LLVM CPU name; code for a CPU this machine lacks cannot run
    /// here
    #[arg(long, default_value = "portable")]
    pub cpu: String,
    /// Seconds of measurement per batch size and thread count (in 5 rounds, the cases taking
    /// turns)
    #[arg(long, default_value_t = 1.0)]
    pub seconds: f64,
    /// Also time the model's ONNX twin (the .onnx file beside the model, or the model itself)
    /// in another engine on the same inputs and threads, and print the ratio: onnxruntime
    #[arg(long, value_name = "ENGINE")]
    pub compare: Option<String>,
    /// Time the training step (forward, loss, gradients, update) instead of inference, on the
    /// first samples of --x and --y
    #[arg(long)]
    pub train: bool,
    /// With --train: the training inputs ([NAME=]FILE.npy or .npz, repeatable)
    #[arg(long = "x")]
    pub x: Vec<String>,
    /// With --train: the labels ([OUTPUT=]FILE.npy or .npz, repeatable)
    #[arg(long = "y")]
    pub y: Vec<String>,
    /// With --train: the loss (default: the model's compile config)
    #[arg(long)]
    pub loss: Option<String>,
    /// With --train: sgd or adam (default: the model's compile config)
    #[arg(long)]
    pub optimizer: Option<String>,
    /// The Python with onnxruntime for --compare (default: target/bench-venv/bin/python, which
    /// scripts/bench.sh makes, else python3)
    #[arg(long)]
    pub python: Option<PathBuf>,
}

/// The ONNX file to compare with: the model itself, or `NAME.onnx` beside `NAME.keras`.
fn onnx_twin(model: &Path) -> Result<PathBuf, UserError> {
    if model.extension().is_some_and(|e| e == "onnx") {
        return Ok(model.to_path_buf());
    }
    let name = path_name(model);
    let stem = name
        .strip_suffix(".weights.h5")
        .or_else(|| name.rsplit_once('.').map(|(s, _)| s))
        .unwrap_or(&name);
    let twin = model.with_file_name(format!("{stem}.onnx"));
    if twin.exists() {
        Ok(twin)
    } else {
        Err(UserError::new(format!(
            "--compare onnxruntime: no ONNX twin of {} (looked for {}); export one (tf2onnx) or bench the .onnx file",
            model.display(),
            twin.display()
        )))
    }
}

/// (batch, threads).
type BatchThreads = (usize, usize);

/// onnxruntime through Python (`scripts/ort_bench.py`) on the same inputs as forgec: the
/// inputs and the spec are written once, the script runs once per round.
struct Ort {
    python: PathBuf,
    onnx: PathBuf,
    script: PathBuf,
    spec: serde_json::Value,
    dir: tempfile::TempDir,
}

impl Ort {
    fn new(a: &Args, onnx: &Path, g: &forgec_ir::Graph) -> Result<Ort, UserError> {
        let python = a.python.clone().unwrap_or_else(|| {
            let venv = PathBuf::from("target/bench-venv/bin/python");
            if venv.exists() {
                venv
            } else {
                PathBuf::from("python3")
            }
        });
        let dir = tempfile::tempdir().map_err(|e| UserError::new(e.to_string()))?;
        let mut runs = Vec::new();
        for &batch in &a.batches {
            let mut files = Vec::new();
            for (k, t) in inputs(g, batch).map_err(UserError::new)?.iter().enumerate() {
                let f = dir.path().join(format!("b{batch}_in{k}.npy"));
                forgec_runtime::write_npy(&f, t).map_err(|e| UserError::new(e.to_string()))?;
                files.push(f.display().to_string());
            }
            runs.push(serde_json::json!({"batch": batch, "inputs": files}));
        }
        let script = dir.path().join("ort_bench.py");
        std::fs::write(&script, include_str!("../../scripts/ort_bench.py"))
            .map_err(|e| UserError::new(e.to_string()))?;
        Ok(Ort {
            python,
            onnx: onnx.to_path_buf(),
            script,
            spec: serde_json::json!({"threads": a.threads, "runs": runs}),
            dir,
        })
    }

    /// Each (batch, threads)'s run times over about `seconds`.
    fn times(&mut self, seconds: f64) -> Result<Vec<(BatchThreads, Vec<Duration>)>, UserError> {
        self.spec["seconds"] = serde_json::json!(seconds);
        let spec = self.dir.path().join("spec.json");
        std::fs::write(&spec, self.spec.to_string()).map_err(|e| UserError::new(e.to_string()))?;
        let python = &self.python;
        let out = std::process::Command::new(python)
            .arg(&self.script)
            .arg(&self.onnx)
            .arg(&spec)
            .output()
            .map_err(|e| {
                UserError::new(format!(
                    "--compare onnxruntime: cannot start {}: {e}; run scripts/bench.sh once (it makes target/bench-venv) or pass --python",
                    python.display()
                ))
            })?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            let last = err.lines().last().unwrap_or("").to_string();
            return Err(UserError::new(format!(
                "--compare onnxruntime: {} failed on {}: {last}{}",
                python.display(),
                self.onnx.display(),
                if last.contains("No module named") {
                    " (run scripts/bench.sh once: it makes target/bench-venv with onnxruntime)"
                } else {
                    ""
                }
            )));
        }
        let recs: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).map_err(|e| {
            UserError::new(format!("--compare onnxruntime: unreadable output: {e}"))
        })?;
        Ok(recs
            .iter()
            .filter_map(|r| {
                let key = (
                    r["batch"].as_u64()? as usize,
                    r["threads"].as_u64()? as usize,
                );
                let times = r["times_ms"]
                    .as_array()?
                    .iter()
                    .filter_map(|t| t.as_f64())
                    .map(|ms| Duration::from_secs_f64(ms / 1e3))
                    .collect();
                Some((key, times))
            })
            .collect())
    }
}

/// Rounds in which the cases (and onnxruntime) take turns.
const ROUNDS: usize = 5;

/// One (batch, threads) of the compiled model: its own context, inputs and output buffers.
struct Case {
    batch: usize,
    threads: usize,
    lib: CompiledModel,
    ins: Vec<Tensor>,
    outs: Vec<forgec_runtime::compiled::OutputBuffer>,
    times: Vec<Duration>,
    ort: Vec<Duration>,
}

impl Case {
    fn run(&mut self) -> Result<(), String> {
        let refs: Vec<&Tensor> = self.ins.iter().collect();
        self.lib.run_with(&refs, &mut self.outs)
    }
}

/// Deterministic pseudo-random inputs (xorshift): floats in [-1, 1), integers in [0, 10).
fn inputs(g: &forgec_ir::Graph, batch: usize) -> Result<Vec<Tensor>, String> {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    g.inputs
        .iter()
        .map(|&i| {
            let t = g.ty(i);
            let shape: Vec<usize> = t.shape.iter().map(|d| d.known().unwrap_or(batch)).collect();
            let n: usize = shape.iter().product();
            let v: Vec<f64> = (0..n)
                .map(|_| {
                    let r = next();
                    if t.dtype.is_float() {
                        (r >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
                    } else if t.dtype == DType::Bool {
                        (r & 1) as f64
                    } else {
                        (r % 10) as f64
                    }
                })
                .collect();
            Tensor::from_f64_values(t.dtype, shape, &v).map_err(|e| e.0)
        })
        .collect()
}

/// Runs `run` again and again for `slice` seconds (at least twice, at most 20,000 times) and
/// returns each run's time: one turn of a case in a round.
fn turn(
    slice: f64,
    mut run: impl FnMut() -> Result<(), UserError>,
) -> Result<Vec<Duration>, UserError> {
    let start = Instant::now();
    let mut times = Vec::new();
    while (start.elapsed().as_secs_f64() < slice || times.len() < 2) && times.len() < 20_000 {
        let t = Instant::now();
        run()?;
        times.push(t.elapsed());
    }
    Ok(times)
}

/// Prints a case's row of the table (batch, threads, median, p90, samples/s, runs) and returns
/// (median ms, p90 ms, samples/s); sorts `times`.
fn table_row(batch: usize, threads: usize, times: &mut [Duration]) -> (f64, f64, f64) {
    times.sort();
    let (med, p90) = (percentile(times, 0.5), percentile(times, 0.9));
    let thr = batch as f64 / (med / 1e3);
    println!(
        "{batch:>6} {threads:>8} {med:>12.4} {p90:>12.4} {thr:>14.1} {:>8}",
        times.len()
    );
    (med, p90, thr)
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i].as_secs_f64() * 1e3
}

/// The largest batch `bench` takes (the compiled library takes up to 2^30).
const MAX_BATCH: usize = 1 << 20;
/// The most memory the benchmark's input and output buffers may take.
const MAX_BUFFER_BYTES: f64 = 4e9;

pub fn cmd(mut a: Args) -> Result<i32, UserError> {
    let defaulted = a.batches.is_empty();
    if defaulted {
        a.batches = vec![1, 32];
    }
    for &t in &a.threads {
        super::check_threads(t)?;
    }
    for &b in &a.batches {
        if !(1..=MAX_BATCH).contains(&b) {
            return Err(UserError::new(format!("--batch {b}: use 1 to {MAX_BATCH}")));
        }
    }
    if !(a.seconds.is_finite() && a.seconds > 0.0 && a.seconds <= 3600.0) {
        return Err(UserError::new(format!(
            "--seconds {}: use a number of seconds above 0 and at most 3600",
            a.seconds
        )));
    }
    if a.train {
        return bench_train(&a);
    }
    let twin = match a.compare.as_deref() {
        None => None,
        Some("onnxruntime") => Some(onnx_twin(&a.model)?),
        Some(other) => {
            return Err(UserError::new(format!(
                "--compare {other}: the engine forgec compares with is onnxruntime"
            )))
        }
    };
    let opts = LoadOptions {
        weights: None,
        allow_missing_weights: false,
        input_shape: None,
    };
    let m = crate::load_any(&a.model, &opts).map_err(|e| UserError::new(e.to_string()))?;
    let g = crate::codegen::prepare(m.into_graph()).map_err(UserError::new)?;
    // A model whose inputs' shapes are all known takes one batch: another --batch would time
    // that same shape under another label.
    let fixed = g
        .inputs
        .iter()
        .all(|&i| g.ty(i).shape.iter().all(|d| d.known().is_some()));
    if let (true, Some(&first)) = (fixed, g.inputs.first()) {
        let n = g
            .ty(first)
            .shape
            .first()
            .and_then(|d| d.known())
            .unwrap_or(1);
        if defaulted {
            println!(
                "{}: its inputs' shapes are all known: timing its fixed batch of {n}",
                a.model.display()
            );
            a.batches = vec![n];
        } else if let Some(&b) = a.batches.iter().find(|&&b| b != n) {
            return Err(UserError::new(format!(
                "--batch {b}: {} has a fixed batch of {n} (its inputs' shapes are all known: {}), so it runs only that one; use --batch {n}, or give the model a symbolic batch dim",
                a.model.display(),
                g.inputs
                    .iter()
                    .map(|&i| format!("{} {}", g.value(i).name, g.ty(i)))
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
    }
    // The buffers of the largest batch must fit in memory: refused before anything is made.
    if let Some(&most) = a.batches.iter().max() {
        let bytes: f64 = g
            .inputs
            .iter()
            .chain(&g.outputs)
            .map(|&v| {
                let t = g.ty(v);
                t.shape
                    .iter()
                    .map(|d| d.known().unwrap_or(most) as f64)
                    .product::<f64>()
                    * t.dtype.size_bytes() as f64
            })
            .sum();
        if bytes > MAX_BUFFER_BYTES {
            return Err(UserError::new(format!(
                "--batch {most}: the model's inputs and outputs would take {:.1} GB at that batch, more than the {:.0} GB a benchmark may use: choose a smaller batch",
                bytes / 1e9,
                MAX_BUFFER_BYTES / 1e9
            )));
        }
    }
    let dir = tempfile::tempdir().map_err(|e| UserError::new(e.to_string()))?;
    let o = crate::codegen::Options {
        name: "bench".into(),
        cpu: Some(a.cpu.clone()),
        target: None,
        emit: crate::codegen::Emit::Lib,
        external_weights: false,
        threads: 1,
    };
    let t0 = Instant::now();
    crate::codegen::compile(g.clone(), &o, dir.path(), "")
        .map_err(|e| UserError::new(format!("{}: {e}", a.model.display())))?;
    let compile_s = t0.elapsed().as_secs_f64();
    let so = dir.path().join("libbench.so");
    // What runs: a portable library's level is the one it picked for this machine.
    let running = CompiledModel::load(&so, "bench")
        .map_err(UserError::new)?
        .cpu()
        .unwrap_or_default();
    let cpu = if running == a.cpu {
        a.cpu.clone()
    } else {
        format!("{}: runs {running}", a.cpu)
    };
    println!(
        "{}: compiled in {compile_s:.2} s (cpu {cpu})",
        a.model.display(),
    );
    // One context per (batch, threads), its output buffers made once, as an application would:
    // a run is the library call.
    let mut cases = Vec::new();
    for (&batch, &threads) in a
        .batches
        .iter()
        .flat_map(|b| a.threads.iter().map(move |t| (b, t)))
    {
        let lib = CompiledModel::load(&so, "bench").map_err(UserError::new)?;
        lib.set_threads(threads)
            .map_err(|e| UserError::new(format!("--threads {threads}: {e}")))?;
        let ins = inputs(&g, batch).map_err(UserError::new)?;
        let outs = lib.output_buffers(batch as i64).map_err(UserError::new)?;
        cases.push(Case {
            batch,
            threads,
            lib,
            ins,
            outs,
            times: Vec::new(),
            ort: Vec::new(),
        });
    }
    for c in &mut cases {
        for _ in 0..3 {
            c.run().map_err(UserError::new)?;
        }
    }
    let mut ort = match &twin {
        Some(onnx) => Some(Ort::new(&a, onnx, &g)?),
        None => None,
    };
    // The cases take turns, in ROUNDS rounds, and so does onnxruntime: a machine whose load
    // changes during the measurement slows every case alike.
    let slice = a.seconds / ROUNDS as f64;
    for _ in 0..ROUNDS {
        for c in &mut cases {
            let t = turn(slice, || c.run().map_err(UserError::new))?;
            c.times.extend(t);
        }
        if let Some(ort) = &mut ort {
            for ((batch, threads), times) in ort.times(slice)? {
                if let Some(c) = cases
                    .iter_mut()
                    .find(|c| (c.batch, c.threads) == (batch, threads))
                {
                    c.ort.extend(times);
                }
            }
        }
    }
    println!(
        "{:>6} {:>8} {:>12} {:>12} {:>14} {:>8}",
        "batch", "threads", "median ms", "p90 ms", "samples/s", "runs"
    );
    let mut records = Vec::new();
    for c in &mut cases {
        let (med, p90, thr) = table_row(c.batch, c.threads, &mut c.times);
        records.push(serde_json::json!({
            "batch": c.batch, "threads": c.threads, "median_ms": med, "p90_ms": p90,
            "samples_per_s": thr, "runs": c.times.len(), "engine": "compiled", "cpu": a.cpu, "cpu_running": running,
        }));
    }
    if let Some(onnx) = &twin {
        println!(
            "onnxruntime on {} (same inputs and threads, its runs taking turns with forgec's):",
            onnx.display()
        );
        println!(
            "{:>6} {:>8} {:>12} {:>12} {:>14}",
            "batch", "threads", "forgec ms", "ort ms", "forgec/ort"
        );
        for (c, r) in cases.iter_mut().zip(&mut records) {
            if c.ort.is_empty() {
                continue;
            }
            c.ort.sort();
            let o = percentile(&c.ort, 0.5);
            let f = r["median_ms"].as_f64().unwrap_or(0.0);
            println!(
                "{:>6} {:>8} {f:>12.4} {o:>12.4} {:>14.2}",
                c.batch,
                c.threads,
                f / o
            );
            r["ort_median_ms"] = serde_json::json!(o);
            r["ort_runs"] = serde_json::json!(c.ort.len());
            r["ratio_to_ort"] = serde_json::json!(f / o);
        }
    }
    if let Some(j) = &a.json {
        let doc = serde_json::json!({"model": path_name(&a.model), "compile_s": compile_s, "records": records});
        std::fs::write(j, serde_json::to_string_pretty(&doc).expect("json"))
            .map_err(|e| UserError::new(format!("{}: cannot write: {e}", j.display())))?;
    }
    Ok(0)
}

/// `bench --train`: the compiled training step (`NAME_train_step`, as an application calls
/// it) per batch size and thread count, the cases taking turns in rounds as for inference.
/// Each case steps through the data's batches in order (gathered before timing, at most 64),
/// from the initial state at each of its turns, as an epoch of `forgec train` does: training
/// on one batch over and over drives values towards subnormal numbers, which x86 computes
/// slowly (mlp_mnist's step measured 3x slower so). A step whose result is not finite puts
/// the state back to the initial one.
fn bench_train(a: &Args) -> Result<i32, UserError> {
    if a.x.is_empty() || a.y.is_empty() {
        return Err(UserError::new(
            "--train needs the data: --x FILE.npy --y FILE.npy",
        ));
    }
    if a.compare.is_some() {
        return Err(UserError::new(
            "--compare times inference only; drop it with --train",
        ));
    }
    let targs = super::train::Args {
        model: Some(a.model.clone()),
        x: a.x.clone(),
        y: a.y.clone(),
        epochs: 1,
        batch_size: 1,
        no_shuffle: true,
        loss: a.loss.clone(),
        optimizer: a.optimizer.clone(),
        threads: 1,
        ..Default::default()
    };
    let tr = super::train::prepare(&targs)?;
    if let Some(&b) = a.batches.iter().find(|&&b| b > tr.samples) {
        return Err(UserError::new(format!(
            "--batch {b}: the data has {} samples",
            tr.samples
        )));
    }
    let t0 = Instant::now();
    let (dir, _) = tr.compile(&a.model, 1)?;
    let compile_s = t0.elapsed().as_secs_f64();
    println!(
        "{}: training step ({}, {}) compiled in {compile_s:.2} s",
        a.model.display(),
        tr.loss_name,
        super::train::describe(tr.opt, tr.rules, tr.lr)
    );
    let so = dir.path().join("libmodel.so");
    let mut cases = Vec::new();
    for &batch in &a.batches {
        for &threads in &a.threads {
            let lib =
                forgec_runtime::compiled::Trainer::load(&so, "model").map_err(UserError::new)?;
            lib.set_threads(threads)
                .map_err(|e| UserError::new(e.message))?;
            let order: Vec<usize> = (0..tr.samples).collect();
            let batches: Vec<Vec<(String, Tensor)>> = order
                .chunks(batch)
                .filter(|rows| rows.len() == batch)
                .take(64)
                .map(|rows| tr.data.batch(rows))
                .collect();
            cases.push((batch, threads, lib, batches, Vec::<Duration>::new()));
        }
    }
    let initial = cases[0]
        .2
        .get_state()
        .map_err(|e| UserError::new(e.message))?;
    let step = |lib: &forgec_runtime::compiled::Trainer, b: &[(String, Tensor)]| match tr
        .data
        .step(lib, b)
    {
        Ok(_) => Ok(()),
        Err(e) if e.code == forgec_runtime::compiled::CallError::NONFINITE => lib
            .set_state(&initial)
            .map_err(|e| UserError::new(e.message)),
        Err(e) => Err(UserError::new(e.message)),
    };
    for c in &cases {
        for b in c.3.iter().take(3) {
            step(&c.2, b)?;
        }
    }
    let slice = a.seconds / ROUNDS as f64;
    for _ in 0..ROUNDS {
        for c in &mut cases {
            c.2.set_state(&initial)
                .map_err(|e| UserError::new(e.message))?;
            let mut i = 0;
            let t = turn(slice, || {
                let b = &c.3[i % c.3.len()];
                i += 1;
                // Each pass over the batches starts from the initial state again (the reset is
                // timed with the pass's first step: once a pass, it does not move the median).
                if i % c.3.len() == 1 && i > 1 {
                    c.2.set_state(&initial)
                        .map_err(|e| UserError::new(e.message))?;
                }
                step(&c.2, b)
            })?;
            c.4.extend(t);
        }
    }
    println!(
        "{:>6} {:>8} {:>12} {:>12} {:>14} {:>8}",
        "batch", "threads", "median ms", "p90 ms", "samples/s", "steps"
    );
    let mut records = Vec::new();
    for c in &mut cases {
        let (med, p90, thr) = table_row(c.0, c.1, &mut c.4);
        records.push(serde_json::json!({
            "batch": c.0, "threads": c.1, "median_ms": med, "p90_ms": p90,
            "samples_per_s": thr, "steps": c.4.len(), "engine": "compiled", "train": true,
            "loss": tr.loss_name, "optimizer": super::train::describe(tr.opt, tr.rules, tr.lr),
        }));
    }
    if let Some(j) = &a.json {
        let doc = serde_json::json!({"model": path_name(&a.model), "compile_s": compile_s, "records": records});
        std::fs::write(j, serde_json::to_string_pretty(&doc).expect("json"))
            .map_err(|e| UserError::new(format!("{}: cannot write: {e}", j.display())))?;
    }
    Ok(0)
}

fn path_name(p: &Path) -> String {
    p.file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default()
}
