//! Data-driven golden tests. Each `tests/golden/<kind>/<case>.ir` holds text IR (with a
//! `# passes: a, b` line for the `passes` kind, where a pipeline's name stands for its passes); its `.out` twin holds what forgec prints.
//! `FORGEC_BLESS=1 cargo test --test integration golden` rewrites the `.out` files; review
//! the diff before committing it.
//!
//! - `passes/`: parse, verify, run the passes, verify again, print (or the errors).
//! - `interp/`: parse, verify, run the reference interpreter, print every output.
//! - `import/`: the IR forgec imports from a Keras model (weights elided).
//! - `compile/`: compile, run at several batch sizes, compare with the interpreter; blessed MLIR
//!   snapshots per CPU for the cases that ask (see `compile_golden`).

use crate::common::*;
use forgec::keras::{load, LoadOptions};
use forgec_ir::{text, verify::verify};
use std::path::{Path, PathBuf};

fn cases(kind: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(kind);
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "ir"))
        .collect();
    v.sort();
    assert!(!v.is_empty(), "no cases in {}", dir.display());
    v
}

/// Compares `got` with the case's `.out` file, or rewrites it under FORGEC_BLESS=1.
fn golden(case: &Path, got: &str) -> Option<String> {
    golden_file(&case.with_extension("out"), got)
}

/// Compares `got` with the file `out`, or rewrites it under FORGEC_BLESS=1. A difference is
/// said with its first differing line (and all of `got` when it is short).
fn golden_file(out: &Path, got: &str) -> Option<String> {
    if std::env::var_os("FORGEC_BLESS").is_some() {
        std::fs::write(out, got).unwrap();
        return None;
    }
    let want = std::fs::read_to_string(out).unwrap_or_default();
    if want == got {
        return None;
    }
    let (w, g): (Vec<&str>, Vec<&str>) = (want.lines().collect(), got.lines().collect());
    let at = (0..w.len().max(g.len()))
        .find(|&i| w.get(i) != g.get(i))
        .unwrap_or(0);
    let mut msg = format!(
        "{}: differs from what forgec gives now, first at line {} (FORGEC_BLESS=1 to update)\n- {}\n+ {}",
        out.display(),
        at + 1,
        w.get(at).unwrap_or(&"(end of file)"),
        g.get(at).unwrap_or(&"(end of output)")
    );
    if g.len() <= 60 {
        msg.push_str(&format!("\n--- got:\n{got}"));
    }
    Some(msg)
}

fn check_all(kind: &str, f: impl Fn(&Path, &str) -> String) {
    let failures: Vec<String> = cases(kind)
        .iter()
        .filter_map(|c| {
            let src = std::fs::read_to_string(c).unwrap();
            golden(c, &f(c, &src))
        })
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

fn errors(es: &[String]) -> String {
    es.iter().map(|e| format!("error: {e}\n")).collect()
}

#[test]
fn passes_golden() {
    check_all("passes", |case, src| {
        let passes: Vec<&str> = src
            .lines()
            .find_map(|l| l.strip_prefix("# passes:"))
            .unwrap_or_else(|| panic!("{}: no `# passes:` line", case.display()))
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty() && *p != "none")
            // A named pipeline (`inference`) stands for its passes.
            .flat_map(|p| forgec_passes::pipeline(p).map_or(vec![p], |ps| ps.to_vec()))
            .collect();
        let mut g = match text::parse(src) {
            Ok(g) => g,
            Err(e) => return format!("parse error: {e}\n"),
        };
        // Shape inference runs before the verifier: it is what repairs stale types.
        if let Err(es) = forgec_passes::run_pipeline(&mut g, &passes) {
            return errors(&es);
        }
        let es = verify(&g);
        if !es.is_empty() {
            return errors(&es);
        }
        text::print(&g)
    });
}

#[test]
fn interp_golden() {
    check_all("interp", |_, src| {
        let g = text::parse(src).unwrap();
        let es = verify(&g);
        if !es.is_empty() {
            return errors(&es);
        }
        match forgec_ir::interp::run(&g, &[]) {
            Err(e) => format!("error: {e}\n"),
            Ok(outs) => g
                .outputs
                .iter()
                .zip(outs)
                .map(|(&o, t)| {
                    let vals: Vec<String> = t.to_f64_vec().iter().map(|v| format!("{v}")).collect();
                    format!(
                        "%{}: {}{:?} = [{}]\n",
                        g.value(o).name,
                        t.dtype(),
                        t.shape(),
                        vals.join(", ")
                    )
                })
                .collect(),
        }
    });
}

#[test]
fn import_golden() {
    check_all("import", |case, src| {
        // The case file names the model file, relative to the fixtures.
        let rel = src
            .lines()
            .find_map(|l| l.strip_prefix("# model:"))
            .unwrap()
            .trim();
        let m = load(&fixtures().join(rel), &LoadOptions::default())
            .unwrap_or_else(|e| panic!("{}: {e}", case.display()));
        text::print_with(&m.graph, Some(8))
    });
}

/// Every imported model verifies, prints, parses back to an equal graph, and runs the same.
#[test]
fn text_form_round_trips_every_imported_model() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(fixtures().join("models"))
        .unwrap()
        .chain(std::fs::read_dir(fixtures().join("layers")).unwrap())
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "keras"))
        .collect();
    files.sort();
    assert!(files.len() >= 16);
    for f in files {
        let m =
            load(&f, &LoadOptions::default()).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        assert_eq!(verify(&m.graph), Vec::<String>::new(), "{}", f.display());
        let t = text::print(&m.graph);
        let back = text::parse(&t).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        assert_eq!(back, m.graph, "{}: parse(print(g)) != g", f.display());
        assert_eq!(text::print(&back), t);
    }
}

#[test]
fn malformed_text_is_reported_with_its_place() {
    for (src, want) in [
        ("graph \"g\" {\n  input %x: f32[2]\n  %y: f32[2] = frobnicate(%x)\n  output %y\n}\n", "3:16: unknown op 'frobnicate'"),
        ("graph \"g\" {\n  input %x: f32[2]\n  %y: f32[2] = relu(%z)\n  output %y\n}\n", "3:21: %z is used before it is defined"),
        ("graph \"g\" {\n  input %x: q7[2]\n", "2:13: unknown element type 'q7'"),
        ("graph \"g\" {\n  input %x: f32[2]\n  %y: f32[2] = reduce {kind = sum, axes = [0], keepdims = false, color = 3}(%x)\n  output %y\n}\n", "op 'reduce' has no attribute 'color'"),
        ("graph \"g\" {\n  input %x: f32[2]\n", "has no 'output' line"),
        ("graph \"g\" {\n  %c: f32[2] = const [1.0]\n  output %c\n}\n", "shape [2] needs 2 elements but 1 were given"),
    ] {
        let e = text::parse(src).unwrap_err();
        assert!(e.contains(want), "expected `{want}` in `{e}`");
    }
}

/// The `# key: value` header lines of a case.
fn header<'a>(src: &'a str, key: &str) -> Vec<&'a str> {
    let prefix = format!("# {key}:");
    src.lines()
        .filter_map(|l| l.strip_prefix(prefix.as_str()))
        .map(str::trim)
        .collect()
}

/// A case's values for `input`: its `# input %name: [v, ...]` list, repeated to fill `n`
/// elements (`nan`, `inf` allowed), else a fixed pattern of small values with repeats.
fn input_values(src: &str, input: &str, n: usize) -> Vec<f64> {
    let given: Option<Vec<f64>> = src.lines().find_map(|l| {
        let (name, list) = l.strip_prefix("# input ")?.split_once(':')?;
        (name.trim() == format!("%{input}")).then(|| {
            list.trim()
                .trim_start_matches('[')
                .trim_end_matches(']')
                .split(',')
                .map(|v| {
                    v.trim()
                        .parse::<f64>()
                        .unwrap_or_else(|e| panic!("{v}: {e}"))
                })
                .collect()
        })
    });
    match given {
        Some(v) => (0..n).map(|i| v[i % v.len()]).collect(),
        None => (0..n)
            .map(|i| ((i * 37 % 101) as f64 - 50.0) / 16.0)
            .collect(),
    }
}

/// `compile/`: each graph is compiled for this machine (`--cpu native`), run at the batch
/// sizes of its `# batches:` line (default 1 and 3; a graph without a batch runs once) on inputs
/// from its `# input` lines, and every output compared with the reference interpreter's: the
/// same bits (NaN where it has NaN) with `# tol: 0`, else within the tolerance relative to the
/// largest magnitude. The `.out` file records what matched. A case with a `# mlir:` line also
/// has blessed MLIR snapshots, one per CPU named (`CASE.x86-64-v4.mlir`): the MLIR is target
/// text (the vector width is the CPU's), so a change in generated code shows in review.
#[test]
fn compile_golden() {
    use forgec::codegen::{self, Emit, Options};
    use forgec_runtime::compiled::CompiledModel;
    use forgec_runtime::Tensor;
    let failures: Vec<String> = cases("compile")
        .iter()
        .flat_map(|case| {
            let src = std::fs::read_to_string(case).unwrap();
            let stem = case.file_stem().unwrap().to_str().unwrap().to_string();
            let name = forgec::codegen::artifact_name(&stem);
            let g = text::parse(&src).unwrap_or_else(|e| panic!("{}: {e}", case.display()));
            let es = verify(&g);
            assert!(es.is_empty(), "{}: {es:?}", case.display());
            let opts = |cpu: &str, emit: Emit| Options {
                name: name.clone(),
                cpu: Some(cpu.into()),
                target: None,
                emit,
                external_weights: false,
                threads: 1,
            };
            let mut failures = Vec::new();
            let cpus: Vec<&str> = header(&src, "mlir")
                .iter()
                .flat_map(|l| l.split(','))
                .map(str::trim)
                .collect();
            for cpu in cpus {
                let dir = scratch(&format!("golden_compile_{stem}_{cpu}"));
                codegen::compile(g.clone(), &opts(cpu, Emit::Mlir), &dir, "")
                    .unwrap_or_else(|e| panic!("{}: {e}", case.display()));
                let mlir = std::fs::read_to_string(dir.join(format!("{name}.mlir"))).unwrap();
                let snap = case.with_extension(format!("{cpu}.mlir"));
                failures.extend(golden_file(&snap, &mlir));
            }
            let dir = scratch(&format!("golden_compile_{stem}"));
            codegen::compile(g.clone(), &opts("native", Emit::Lib), &dir, "")
                .unwrap_or_else(|e| panic!("{}: {e}", case.display()));
            let lib = CompiledModel::load(&dir.join(format!("lib{name}.so")), &name).unwrap();
            let tol: f64 = header(&src, "tol")
                .first()
                .map_or(1e-6, |t| t.parse().unwrap());
            let symbolic = g
                .inputs
                .iter()
                .any(|&i| g.ty(i).shape.iter().any(|d| d.known().is_none()));
            let batches: Vec<usize> = if !symbolic {
                vec![0]
            } else {
                header(&src, "batches").first().map_or(vec![1, 3], |l| {
                    l.split(',').map(|b| b.trim().parse().unwrap()).collect()
                })
            };
            let mut report = String::new();
            for b in batches {
                let ins: Vec<(String, Tensor)> = g
                    .inputs
                    .iter()
                    .map(|&i| {
                        let (v, t) = (g.value(i), g.ty(i));
                        let shape: Vec<usize> =
                            t.shape.iter().map(|d| d.known().unwrap_or(b)).collect();
                        let n = shape.iter().product();
                        let vals = input_values(&src, &v.name, n);
                        (
                            v.name.clone(),
                            Tensor::from_f64_values(t.dtype, shape, &vals).unwrap(),
                        )
                    })
                    .collect();
                let want = forgec_ir::interp::run(&g, &ins)
                    .unwrap_or_else(|e| panic!("{}: interpreter: {e}", case.display()));
                let refs: Vec<&Tensor> = ins.iter().map(|(_, t)| t).collect();
                let got = lib
                    .run(&refs)
                    .unwrap_or_else(|e| panic!("{}: {e}", case.display()));
                let at = if symbolic {
                    format!("batch {b}")
                } else {
                    "run".into()
                };
                for ((&o, w), c) in g.outputs.iter().zip(&want).zip(&got) {
                    let what = format!("{at}: %{} {}{:?}", g.value(o).name, w.dtype(), w.shape());
                    let (a, e) = (c.to_f64_vec(), w.to_f64_vec());
                    let nan_ok = a.len() == e.len()
                        && a.iter().zip(&e).all(|(x, y)| x.is_nan() == y.is_nan());
                    let finite = |v: &[f64]| {
                        v.iter()
                            .map(|x| if x.is_nan() { 0.0 } else { *x })
                            .collect::<Vec<_>>()
                    };
                    let line = if c.shape() != w.shape() || c.dtype() != w.dtype() {
                        format!("{what}: compiled gives {}{:?}", c.dtype(), c.shape())
                    } else if !nan_ok {
                        format!("{what}: NaN in other places than the interpreter's")
                    } else if tol == 0.0 {
                        if finite(&a) == finite(&e) {
                            format!("{what}: the interpreter's bits")
                        } else {
                            format!("{what}: differs from the interpreter")
                        }
                    } else {
                        let (fa, fe) = (finite(&a), finite(&e));
                        let ta = Tensor::from_f64_values(
                            forgec_runtime::DType::F64,
                            c.shape().to_vec(),
                            &fa,
                        )
                        .unwrap();
                        let te = Tensor::from_f64_values(
                            forgec_runtime::DType::F64,
                            w.shape().to_vec(),
                            &fe,
                        )
                        .unwrap();
                        let d = ta.max_rel_diff(&te).unwrap();
                        if d <= tol {
                            format!("{what}: the interpreter's within {tol:e}")
                        } else {
                            format!(
                                "{what}: differs from the interpreter by {d:e} (tolerance {tol:e})"
                            )
                        }
                    };
                    report.push_str(&line);
                    let nans = e.iter().filter(|x| x.is_nan()).count();
                    if nans > 0 {
                        report.push_str(&format!(" ({nans} NaN)"));
                    }
                    report.push('\n');
                }
            }
            failures.extend(golden(case, &report));
            failures
        })
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// `grad/`: gradient checks. Each graph's first output is a scalar loss; `# wrt:` names the
/// inputs to differentiate (default: every float input). The autodiff pass appends the
/// gradients, the interpreter evaluates them, and each is compared with central finite
/// differences of the loss in f64 (`# batch:` sizes the symbolic batch, default 3; inputs
/// from `# input` lines or a fixed pattern without zeros, so no kink of relu or abs is hit).
/// The `.out` says which gradients match (within 1e-6 of the largest magnitude), or the
/// errors the pass reports.
#[test]
fn grad_golden() {
    use forgec_runtime::Tensor;
    check_all("grad", |case, src| {
        let g = text::parse(src).unwrap_or_else(|e| panic!("{}: {e}", case.display()));
        let es = verify(&g);
        assert!(es.is_empty(), "{}: {es:?}", case.display());
        let batch: usize = header(src, "batch")
            .first()
            .map_or(3, |b| b.parse().unwrap());
        let loss = g.outputs[0];
        let wrt: Vec<forgec_ir::ValueId> = match header(src, "wrt").first() {
            Some(l) => l
                .split(',')
                .map(|n| g.find_value(n.trim().trim_start_matches('%')).unwrap())
                .collect(),
            None => g
                .inputs
                .iter()
                .copied()
                .filter(|&i| g.ty(i).dtype.is_float())
                .collect(),
        };
        let mut gg = g.clone();
        let grads = match forgec_passes::autodiff::gradients(&mut gg, loss, &wrt) {
            Ok(d) => d,
            Err(es) => return errors(&es),
        };
        gg.outputs = vec![loss];
        gg.outputs.extend(&grads);
        let es = verify(&gg);
        assert!(
            es.is_empty(),
            "{}: the gradient graph: {es:?}",
            case.display()
        );
        let mut ins: Vec<(String, Tensor)> = g
            .inputs
            .iter()
            .map(|&i| {
                let (v, t) = (g.value(i), g.ty(i));
                let shape: Vec<usize> =
                    t.shape.iter().map(|d| d.known().unwrap_or(batch)).collect();
                let n = shape.iter().product();
                let vals = if src.contains(&format!("# input %{}:", v.name)) {
                    input_values(src, &v.name, n)
                } else {
                    (0..n)
                        .map(|i| ((i * 37 % 101) as f64 - 50.5) / 40.0)
                        .collect()
                };
                (
                    v.name.clone(),
                    Tensor::from_f64_values(t.dtype, shape, &vals).unwrap(),
                )
            })
            .collect();
        let got = forgec_ir::interp::run(&gg, &ins)
            .unwrap_or_else(|e| panic!("{}: interpreter: {e}", case.display()));
        let loss_at = |ins: &[(String, Tensor)]| -> f64 {
            forgec_ir::interp::run(&g, ins).unwrap()[0].to_f64_vec()[0]
        };
        let mut report = String::new();
        for (k, &w) in wrt.iter().enumerate() {
            let name = g.value(w).name.clone();
            let slot = ins.iter().position(|(n, _)| *n == name).unwrap();
            let base = ins[slot].1.clone();
            let vals = base.to_f64_vec();
            let analytic = got[1 + k].to_f64_vec();
            let mut numeric = Vec::new();
            for e in 0..vals.len() {
                let h = 1e-6 * vals[e].abs().max(1.0);
                let mut at = |d: f64| {
                    let mut v = vals.clone();
                    v[e] += d;
                    ins[slot].1 =
                        Tensor::from_f64_values(base.dtype(), base.shape().to_vec(), &v).unwrap();
                    loss_at(&ins)
                };
                numeric.push((at(h) - at(-h)) / (2.0 * h));
            }
            ins[slot].1 = base.clone();
            let scale = numeric.iter().fold(1e-12f64, |m, x| m.max(x.abs()));
            let err = analytic
                .iter()
                .zip(&numeric)
                .fold(0.0f64, |m, (a, n)| m.max((a - n).abs()))
                / scale;
            let what = format!(
                "d%{}/d%{} {}{:?}",
                g.value(loss).name,
                name,
                base.dtype(),
                base.shape()
            );
            if analytic.len() == numeric.len() && err <= 1e-6 {
                report.push_str(&format!("{what}: matches central differences\n"));
            } else {
                report.push_str(&format!(
                    "{what}: differs from central differences by {err:e}\n"
                ));
            }
        }
        report
    });
}
