//! Shared helpers: fixture paths, running the forgec binary, comparing tensors.

use forgec_runtime::{read_npy, Tensor};
use std::path::{Path, PathBuf};
use std::process::Command;

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

pub fn model_file(name: &str) -> PathBuf {
    fixtures().join("models").join(name)
}

pub fn manifest() -> serde_json::Value {
    let text = std::fs::read_to_string(model_file("manifest.json"))
        .expect("manifest.json is in the fixtures");
    serde_json::from_str(&text).expect("manifest.json parses")
}

pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Runs the forgec binary with `args`.
pub fn forgec(args: &[&str]) -> Out {
    let o = Command::new(env!("CARGO_BIN_EXE_forgec"))
        .args(args)
        .env_remove("RUST_BACKTRACE")
        .env_remove("FORGEC_TRACK")
        .output()
        .expect("the forgec binary runs");
    out_of(o)
}

/// A finished process's exit code and text.
pub fn out_of(o: std::process::Output) -> Out {
    Out {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

pub fn npy(path: &Path) -> Tensor {
    read_npy(path).unwrap_or_else(|e| panic!("{e}"))
}

/// Asserts `got` matches `want` within `tol` relative to `want`'s largest magnitude.
pub fn assert_close(got: &Tensor, want: &Tensor, tol: f64, what: &str) {
    let d = got
        .max_rel_diff(want)
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        d <= tol,
        "{what}: max difference {d:e} relative to the reference's max magnitude exceeds {tol:e}"
    );
    // Shown with --nocapture: how close forgec really is.
    println!("{what}: max relative difference {d:.2e}");
}

/// Where `scratch(name)` puts its directory.
pub fn scratch_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join(name)
}

/// A fresh scratch directory under the target dir.
pub fn scratch(name: &str) -> PathBuf {
    let d = scratch_path(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Builds the C program `prog` against `DIR/libNAME.a` (C99, warnings as errors, `flags` added)
/// into `exe`, failing the test with the compiler's message.
pub fn build_c(prog: &Path, dir: &Path, name: &str, flags: &[&str], exe: &Path) {
    let cc = std::process::Command::new("cc")
        .args(["-std=c99", "-Wall", "-Werror"])
        .args(flags)
        .arg(prog)
        .arg(format!("-I{}", dir.display()))
        .arg(dir.join(format!("lib{name}.a")))
        .args(["-lm", "-lpthread", "-o"])
        .arg(exe)
        .output()
        .unwrap();
    assert!(
        cc.status.success(),
        "{}",
        String::from_utf8_lossy(&cc.stderr)
    );
}

/// Writes the first `rows` samples of `x` as raw f32 (`DIR/x.bin`) and of `y` as raw i32
/// (`DIR/y.bin`), as the C training programs read them.
pub fn write_raw_xy(dir: &Path, x: &Tensor, y: &Tensor, rows: usize) {
    let per = |t: &Tensor| t.shape()[1..].iter().product::<usize>();
    let xs: Vec<u8> = x
        .to_f64_vec()
        .iter()
        .take(rows * per(x))
        .flat_map(|v| (*v as f32).to_le_bytes())
        .collect();
    let ys: Vec<u8> = y
        .to_i64_vec()
        .iter()
        .take(rows * per(y))
        .flat_map(|v| (*v as i32).to_le_bytes())
        .collect();
    std::fs::write(dir.join("x.bin"), xs).unwrap();
    std::fs::write(dir.join("y.bin"), ys).unwrap();
}
