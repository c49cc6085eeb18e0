//! Data-driven golden tests. Each `tests/golden/<kind>/<case>.ir` holds text IR (with a
//! `# passes: a, b` line for the `passes` kind, where a pipeline's name stands for its passes); its `.out` twin holds what forgec prints.
//! `FORGEC_BLESS=1 cargo test --test integration golden` rewrites the `.out` files; review
//! the diff before committing it.
//!
//! - `passes/`: parse, verify, run the passes, verify again, print (or the errors).
//! - `interp/`: parse, verify, run the reference interpreter, print every output.
//! - `import/`: the IR forgec imports from a Keras model (weights elided).

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
    let out = case.with_extension("out");
    if std::env::var_os("FORGEC_BLESS").is_some() {
        std::fs::write(&out, got).unwrap();
        return None;
    }
    let want = std::fs::read_to_string(&out).unwrap_or_default();
    (want != got).then(|| {
        format!(
            "{}: output differs from {} (FORGEC_BLESS=1 to update)\n--- got:\n{got}",
            case.display(),
            out.display()
        )
    })
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
