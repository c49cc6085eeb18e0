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
    if let Some(&t) = a.threads.iter().find(|&&t| t == 0 || t > 64) {
        return Err(UserError::new(format!("--threads {t}: use 1..64")));
    }
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
        for _ in 0..3 {
            lib.run(&refs).map_err(UserError::new)?;
        }
        let mut times = Vec::new();
        let start = Instant::now();
        while (start.elapsed().as_secs_f64() < a.seconds || times.len() < 10)
            && times.len() < 100_000
        {
            let t = Instant::now();
            lib.run(&refs).map_err(UserError::new)?;
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
