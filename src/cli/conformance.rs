//! `forgec conformance DIR --report FILE.json`: runs every case of an ONNX test suite in the
//! standard layout (`<suite>/<case>/model.onnx`, `test_data_set_N/{input,output}_K.pb`)
//! through import and the reference interpreter, and reports per case and per op type.

use crate::UserError;
use forgec_runtime::Tensor;
use onnx_protobuf::{Message, TensorProto};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A directory of cases: <suite>/<case>/model.onnx + test_data_set_N/
    pub dir: PathBuf,
    /// Where to write the JSON report
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Relative tolerance: an element passes when |got - want| <= atol + rtol * |want|
    #[arg(long, default_value_t = 1e-3)]
    pub rtol: f64,
    /// Absolute tolerance (see --rtol)
    #[arg(long, default_value_t = 1e-7)]
    pub atol: f64,
    /// Only cases whose path contains this text
    #[arg(long)]
    pub filter: Option<String>,
    /// Print every case that does not pass
    #[arg(long, short)]
    pub verbose: bool,
    /// Write the claimed-op table as Markdown
    #[arg(long)]
    pub markdown: Option<PathBuf>,
    /// Exit 1 when fewer cases pass
    #[arg(long)]
    pub min_passed: Option<usize>,
    /// Exit 1 when more cases fail
    #[arg(long)]
    pub max_failed: Option<usize>,
}

#[derive(Debug)]
enum Status {
    Passed,
    Failed(String),
    Unsupported(String),
}

fn find_cases(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) {
    if dir.join("model.onnx").is_file() {
        out.push(dir.to_path_buf());
        return;
    }
    if depth == 0 {
        return;
    }
    if let Ok(rd) = std::fs::read_dir(dir) {
        let mut subs: Vec<PathBuf> = rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_dir())
            .collect();
        subs.sort();
        for s in subs {
            find_cases(&s, depth - 1, out);
        }
    }
}

fn read_pb(path: &Path, base: &Path) -> Result<Tensor, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let t = TensorProto::parse_from_bytes(&bytes)
        .map_err(|e| format!("{}: not a TensorProto: {e}", path.display()))?;
    crate::onnx::proto::tensor(&t, base).map_err(|e| format!("{}: {e}", path.display()))
}

/// Compares element by element: |got - want| <= atol + rtol * |want|; NaN equals NaN.
fn compare(got: &Tensor, want: &Tensor, rtol: f64, atol: f64) -> Result<(), String> {
    if got.shape() != want.shape() {
        return Err(format!(
            "shape {:?}, expected {:?}",
            got.shape(),
            want.shape()
        ));
    }
    let class = |t: &Tensor| {
        if t.dtype().is_float() {
            0
        } else if t.dtype() == forgec_runtime::DType::Bool {
            2
        } else {
            1
        }
    };
    if class(got) != class(want) {
        return Err(format!(
            "element type {}, expected {}",
            got.dtype(),
            want.dtype()
        ));
    }
    let (g, w) = (got.to_f64_vec(), want.to_f64_vec());
    let mut worst: Option<(f64, usize)> = None;
    for (i, (&a, &b)) in g.iter().zip(&w).enumerate() {
        let ok = if b.is_nan() {
            a.is_nan()
        } else if b.is_infinite() {
            a == b
        } else {
            (a - b).abs() <= atol + rtol * b.abs()
        };
        if !ok {
            let err = if a.is_nan() {
                f64::INFINITY
            } else {
                (a - b).abs()
            };
            if worst.is_none_or(|(e, _)| err > e) {
                worst = Some((err, i));
            }
        }
    }
    match worst {
        None => Ok(()),
        Some((e, i)) => Err(format!(
            "max abs error {e:.3e} at element {i}: got {}, expected {}",
            g[i], w[i]
        )),
    }
}

/// Runs one case. Inputs the importer needs as constants (a compiler fixes shapes, axes and
/// pads at compile time) are bound to each data set's values; the returned list names them.
fn run_case(case: &Path, rtol: f64, atol: f64) -> (Vec<String>, Vec<String>, Status) {
    let model_path = case.join("model.onnx");
    let ops = crate::onnx::op_types(&model_path).unwrap_or_default();
    let mut sets: Vec<PathBuf> = std::fs::read_dir(case)
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_dir())
                .collect()
        })
        .unwrap_or_default();
    sets.sort();
    if sets.is_empty() {
        return (
            ops,
            vec![],
            Status::Unsupported("the case has no test_data_set".into()),
        );
    }
    let names = crate::onnx::input_names(&model_path).unwrap_or_default();
    let mut bound_names: Vec<String> = Vec::new();
    for set in sets {
        let mut data = Vec::new();
        for (k, name) in names.iter().enumerate() {
            match read_pb(&set.join(format!("input_{k}.pb")), case) {
                Ok(t) => data.push((name.clone(), t)),
                Err(e) => {
                    return (
                        ops,
                        bound_names,
                        Status::Unsupported(format!("input {k}: {e}")),
                    )
                }
            }
        }
        // Import, binding what the importer asks for (a few rounds: one need can reveal another).
        let mut model = None;
        let mut last_err = String::new();
        for _ in 0..4 {
            let bound: std::collections::HashMap<String, Tensor> = data
                .iter()
                .filter(|(n, _)| bound_names.contains(n))
                .cloned()
                .collect();
            match crate::onnx::load_with(&model_path, &bound) {
                Ok(m) => {
                    model = Some(m);
                    break;
                }
                Err(e) => {
                    let reason = e.problems.first().cloned().unwrap_or_default();
                    last_err = reason
                        .split_once(".onnx: ")
                        .map(|(_, r)| r.to_string())
                        .unwrap_or(reason);
                    let mut new: Vec<String> = e
                        .needs_const
                        .into_iter()
                        .filter(|n| names.contains(n) && !bound_names.contains(n))
                        .collect();
                    new.sort();
                    new.dedup();
                    if new.is_empty() {
                        break;
                    }
                    bound_names.extend(new);
                }
            }
        }
        let Some(model) = model else {
            return (ops, bound_names, Status::Unsupported(last_err));
        };
        let g = &model.graph;
        let inputs: Vec<(String, Tensor)> = data
            .into_iter()
            .filter(|(n, _)| !bound_names.contains(n))
            .collect();
        let outs = match forgec_ir::interp::run(g, &inputs) {
            Ok(o) => o,
            Err(e) => return (ops, bound_names, Status::Failed(format!("run: {}", e.0))),
        };
        for (k, got) in outs.iter().enumerate() {
            let want = match read_pb(&set.join(format!("output_{k}.pb")), case) {
                Ok(t) => t,
                Err(e) => {
                    return (
                        ops,
                        bound_names,
                        Status::Unsupported(format!("output {k}: {e}")),
                    )
                }
            };
            if let Err(e) = compare(got, &want, rtol, atol) {
                let set_name = set.file_name().unwrap().to_string_lossy().into_owned();
                return (
                    ops,
                    bound_names,
                    Status::Failed(format!("{set_name} output {k}: {e}")),
                );
            }
        }
    }
    (ops, bound_names, Status::Passed)
}

fn markdown_table(
    per_suite: &BTreeMap<String, [usize; 3]>,
    per_op: &BTreeMap<String, [usize; 3]>,
    claimed: &[&str],
) -> String {
    let mut out = String::from("| suite | passed | failed | unsupported |\n|---|---:|---:|---:|\n");
    for (s, v) in per_suite {
        out.push_str(&format!("| {s} | {} | {} | {} |\n", v[0], v[1], v[2]));
    }
    out.push_str(&format!(
        "\n{} op types claimed. Cases per claimed op type (a case counts for every op in its graph):\n\n",
        claimed.len()
    ));
    out.push_str("| op | passed | failed | unsupported |\n|---|---:|---:|---:|\n");
    for op in claimed {
        let v = per_op.get(*op).copied().unwrap_or_default();
        out.push_str(&format!("| {op} | {} | {} | {} |\n", v[0], v[1], v[2]));
    }
    out
}

pub fn cmd(a: Args) -> Result<i32, UserError> {
    if !a.dir.is_dir() {
        return Err(UserError::new(format!(
            "{}: not a directory",
            a.dir.display()
        )));
    }
    let mut cases = Vec::new();
    find_cases(&a.dir, 3, &mut cases);
    if let Some(f) = &a.filter {
        cases.retain(|c| c.to_string_lossy().contains(f.as_str()));
    }
    let tolerances: BTreeMap<String, (f64, f64)> =
        std::fs::read_to_string(a.dir.join("tolerances.json"))
            .ok()
            .and_then(|t| serde_json::from_str::<BTreeMap<String, Vec<f64>>>(&t).ok())
            .map(|m| {
                m.into_iter()
                    .filter(|(_, v)| v.len() == 2)
                    .map(|(k, v)| (k, (v[0], v[1])))
                    .collect()
            })
            .unwrap_or_default();
    let skipped: BTreeMap<String, String> = std::fs::read_to_string(a.dir.join("skipped.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default();
    // A panic in one case is a bug to report, not the end of the run.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let mut records = Vec::new();
    let mut per_op: BTreeMap<String, [usize; 3]> = BTreeMap::new();
    let mut per_suite: BTreeMap<String, [usize; 3]> = BTreeMap::new();
    let mut todo: Vec<(String, Option<PathBuf>)> = cases
        .iter()
        .map(|c| {
            (
                c.strip_prefix(&a.dir)
                    .unwrap_or(c)
                    .to_string_lossy()
                    .into_owned(),
                Some(c.clone()),
            )
        })
        .collect();
    todo.extend(skipped.keys().map(|k| (format!("node/{k}"), None)));
    for (name, path) in todo {
        let short = name.rsplit('/').next().unwrap_or(&name).to_string();
        let (rtol, atol) = tolerances.get(&short).copied().unwrap_or((a.rtol, a.atol));
        let (ops, bound, status) = match &path {
            None => (vec![], vec![], Status::Unsupported(skipped[&short].clone())),
            Some(p) => std::panic::catch_unwind(|| run_case(p, rtol, atol)).unwrap_or_else(|_| {
                (
                    vec![],
                    vec![],
                    Status::Failed("internal error: forgec panicked".into()),
                )
            }),
        };
        let slot = match &status {
            Status::Passed => 0,
            Status::Failed(_) => 1,
            Status::Unsupported(_) => 2,
        };
        for op in &ops {
            per_op.entry(op.clone()).or_default()[slot] += 1;
        }
        let suite = name.split('/').next().unwrap_or("").to_string();
        per_suite.entry(suite).or_default()[slot] += 1;
        if a.verbose && slot != 0 {
            eprintln!("{name}: {status:?}");
        }
        let mut rec = json!({"name": name, "ops": ops});
        if !bound.is_empty() {
            // Inputs fixed at compile time (shapes, axes, pads given as data by the suite).
            rec["bound_inputs"] = json!(bound);
        }
        match status {
            Status::Passed => rec["status"] = json!("passed"),
            Status::Failed(e) => {
                rec["status"] = json!("failed");
                rec["error"] = json!(e);
            }
            Status::Unsupported(r) => {
                rec["status"] = json!("unsupported");
                rec["reason"] = json!(r);
            }
        }
        records.push(rec);
    }
    std::panic::set_hook(hook);
    let claimed = crate::onnx::supported_ops();
    let totals = |v: &[usize; 3]| json!({"passed": v[0], "failed": v[1], "unsupported": v[2]});
    let report = json!({
        "suite": a.dir.display().to_string(),
        "default_rtol": a.rtol,
        "default_atol": a.atol,
        "cases": records,
        "suites": per_suite.iter().map(|(k, v)| (k.clone(), totals(v))).collect::<serde_json::Map<String, Value>>(),
        "ops": per_op.iter().map(|(k, v)| {
            let mut t = totals(v);
            t["claimed"] = json!(claimed.contains(&k.as_str()));
            (k.clone(), t)
        }).collect::<serde_json::Map<String, Value>>(),
        "claimed_ops": claimed,
    });
    if let Some(r) = &a.report {
        std::fs::write(r, serde_json::to_string_pretty(&report).expect("json"))
            .map_err(|e| UserError::new(format!("{}: cannot write: {e}", r.display())))?;
    }
    println!(
        "{:<20} {:>7} {:>7} {:>12}",
        "suite", "passed", "failed", "unsupported"
    );
    let mut all = [0usize; 3];
    for (s, v) in &per_suite {
        println!("{s:<20} {:>7} {:>7} {:>12}", v[0], v[1], v[2]);
        for i in 0..3 {
            all[i] += v[i];
        }
    }
    println!("{:<20} {:>7} {:>7} {:>12}", "total", all[0], all[1], all[2]);
    let claimed_failing: Vec<&String> = per_op
        .iter()
        .filter(|(k, v)| claimed.contains(&k.as_str()) && v[1] > 0)
        .map(|(k, _)| k)
        .collect();
    println!(
        "{} op types claimed; claimed op types with failed cases: {}",
        claimed.len(),
        claimed_failing.len()
    );
    if let Some(r) = &a.report {
        println!("report: {}", r.display());
    }
    if let Some(md) = &a.markdown {
        std::fs::write(md, markdown_table(&per_suite, &per_op, claimed))
            .map_err(|e| UserError::new(format!("{}: cannot write: {e}", md.display())))?;
    }
    let mut code = 0;
    if let Some(min) = a.min_passed {
        if all[0] < min {
            eprintln!(
                "error: {} cases passed, fewer than the required {min}",
                all[0]
            );
            code = 1;
        }
    }
    if let Some(max) = a.max_failed {
        if all[1] > max {
            eprintln!(
                "error: {} cases failed, more than the allowed {max}",
                all[1]
            );
            code = 1;
        }
    }
    Ok(code)
}
