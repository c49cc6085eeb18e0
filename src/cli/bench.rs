//! `forgec bench`: latency (median, p90) and throughput of the compiled model per batch size.

use crate::keras::LoadOptions;
use crate::UserError;
use forgec_runtime::compiled::CompiledModel;
use forgec_runtime::{DType, Tensor};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(clap::Args, Debug)]
pub struct Args {
    pub model: PathBuf,
    #[arg(
        long = "batch",
        value_name = "BATCH",
        value_delimiter = ',',
        default_value = "1,32"
    )]
    pub batches: Vec<usize>,
    #[arg(long, value_delimiter = ',', default_value = "1")]
    pub threads: Vec<usize>,
    /// Write the records as JSON
    #[arg(long)]
    pub json: Option<PathBuf>,
    #[arg(long, default_value = "native")]
    pub cpu: String,
    /// Seconds of measurement per batch size
    #[arg(long, default_value_t = 1.0)]
    pub seconds: f64,
    /// Also time the model's ONNX twin (the .onnx file beside the model, or the model itself)
    /// in another engine on the same inputs and threads, and print the ratio: onnxruntime
    #[arg(long, value_name = "ENGINE")]
    pub compare: Option<String>,
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

/// Times `onnx` in onnxruntime through Python on the same inputs: (batch, threads) -> median ms.
fn onnxruntime_medians(
    a: &Args,
    onnx: &Path,
    g: &forgec_ir::Graph,
) -> Result<Vec<(BatchThreads, f64)>, UserError> {
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
    let spec = dir.path().join("spec.json");
    let doc = serde_json::json!({"threads": a.threads, "seconds": a.seconds, "runs": runs});
    std::fs::write(&spec, doc.to_string()).map_err(|e| UserError::new(e.to_string()))?;
    let script = dir.path().join("ort_bench.py");
    std::fs::write(&script, include_str!("../../scripts/ort_bench.py"))
        .map_err(|e| UserError::new(e.to_string()))?;
    let out = std::process::Command::new(&python)
        .arg(&script)
        .arg(onnx)
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
            onnx.display(),
            if last.contains("No module named") {
                " (run scripts/bench.sh once: it makes target/bench-venv with onnxruntime)"
            } else {
                ""
            }
        )));
    }
    let recs: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout)
        .map_err(|e| UserError::new(format!("--compare onnxruntime: unreadable output: {e}")))?;
    Ok(recs
        .iter()
        .filter_map(|r| {
            Some((
                (
                    r["batch"].as_u64()? as usize,
                    r["threads"].as_u64()? as usize,
                ),
                r["median_ms"].as_f64()?,
            ))
        })
        .collect())
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

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i].as_secs_f64() * 1e3
}

pub fn cmd(a: Args) -> Result<i32, UserError> {
    for &t in &a.threads {
        super::check_threads(t)?;
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
    let lib =
        CompiledModel::load(&dir.path().join("libbench.so"), "bench").map_err(UserError::new)?;
    println!(
        "{}: compiled in {compile_s:.2} s (cpu {})",
        a.model.display(),
        a.cpu
    );
    println!(
        "{:>6} {:>8} {:>12} {:>12} {:>14} {:>8}",
        "batch", "threads", "median ms", "p90 ms", "samples/s", "runs"
    );
    let mut records = Vec::new();
    for (&batch, &threads) in a
        .batches
        .iter()
        .flat_map(|b| a.threads.iter().map(move |t| (b, t)))
    {
        lib.set_threads(threads)
            .map_err(|e| UserError::new(format!("--threads {threads}: {e}")))?;
        let ins = inputs(&g, batch).map_err(UserError::new)?;
        let refs: Vec<&Tensor> = ins.iter().collect();
        // The output buffers are made once, as an application would: a run is the library call.
        let mut outs = lib.output_buffers(batch as i64).map_err(UserError::new)?;
        for _ in 0..3 {
            lib.run_with(&refs, &mut outs).map_err(UserError::new)?;
        }
        let mut times = Vec::new();
        let start = Instant::now();
        while (start.elapsed().as_secs_f64() < a.seconds || times.len() < 10)
            && times.len() < 100_000
        {
            let t = Instant::now();
            lib.run_with(&refs, &mut outs).map_err(UserError::new)?;
            times.push(t.elapsed());
        }
        times.sort();
        let (med, p90) = (percentile(&times, 0.5), percentile(&times, 0.9));
        let thr = batch as f64 / (med / 1e3);
        println!(
            "{batch:>6} {threads:>8} {med:>12.4} {p90:>12.4} {thr:>14.1} {:>8}",
            times.len()
        );
        records.push(serde_json::json!({
            "batch": batch, "threads": threads, "median_ms": med, "p90_ms": p90,
            "samples_per_s": thr, "runs": times.len(), "engine": "compiled", "cpu": a.cpu,
        }));
    }
    if let Some(onnx) = &twin {
        let ort = onnxruntime_medians(&a, onnx, &g)?;
        println!(
            "onnxruntime on {} (same inputs and threads):",
            onnx.display()
        );
        println!(
            "{:>6} {:>8} {:>12} {:>12} {:>14}",
            "batch", "threads", "forgec ms", "ort ms", "forgec/ort"
        );
        for r in &mut records {
            let key = (
                r["batch"].as_u64().unwrap_or(0) as usize,
                r["threads"].as_u64().unwrap_or(0) as usize,
            );
            if let Some(&(_, o)) = ort.iter().find(|(k, _)| *k == key) {
                let f = r["median_ms"].as_f64().unwrap_or(0.0);
                println!(
                    "{:>6} {:>8} {f:>12.4} {o:>12.4} {:>14.2}",
                    key.0,
                    key.1,
                    f / o
                );
                r["ort_median_ms"] = serde_json::json!(o);
                r["ratio_to_ort"] = serde_json::json!(f / o);
            }
        }
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
