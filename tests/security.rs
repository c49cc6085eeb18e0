//! A model file is untrusted input: hostile names, paths, sizes and bytes, and the generated
//! library's own defences (one call per context, only the API exported, weights checked,
//! indices checked).

use crate::common::*;
use crate::onnx_models::bad::{model, node, vi};
use onnx_protobuf::Message;
use std::path::{Path, PathBuf};
use std::process::Command;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Names a hostile model gives its tensors: comment terminators with code after them, a
/// preprocessor line after a newline, format directives, quotes and backslashes, trigraphs,
/// paths out of the output directory, a NUL, a very long name, non-ASCII, C keywords.
fn hostile_names() -> Vec<String> {
    vec![
        "y */ extern int system(const char*); __attribute__((constructor)) static void p(void){system(\"touch PWNED\");} /* z".into(),
        "a\n#include \"/etc/passwd\"\n#define b".into(),
        "%s%s%s%s%n%n%x".into(),
        "q\"uo\\te\\\" ??/ ??= */ /* //".into(),
        "../../escaped_out".into(),
        "/tmp/forgec_absolute_out".into(),
        "nul\0byte".into(),
        "L".repeat(5000),
        "выход ß 😀".into(),
        "int".into(),
        "..".into(),
        "_Reserved".into(),
    ]
}

/// x (the first hostile name): f32[N, 4]; every other name is an output, relu(x).
fn hostile_model(dir: &Path) -> (PathBuf, Vec<String>) {
    let names = hostile_names();
    let (input, outs) = names.split_first().unwrap();
    let nodes = outs
        .iter()
        .enumerate()
        .map(|(k, o)| node("Relu", &format!("relu{k}"), &[input], &[o]))
        .collect();
    let mut m = model(nodes, vec![]);
    let g = m.graph.as_mut().unwrap();
    g.input.clear();
    g.input.push(vi(input, &[-1, 4]));
    g.output.clear();
    for o in outs {
        g.output.push(vi(o, &[-1, 4]));
    }
    let f = dir.join("hostile.onnx");
    std::fs::write(&f, m.write_to_bytes().unwrap()).unwrap();
    (f, names)
}

/// Hostile names go through `compile`, the header into a C program compiled with every
/// warning an error, the library's error messages, and `run`: no code from a name runs, no
/// line is injected, no format is interpreted, no file lands outside the output directory.
#[test]
fn hostile_names_stay_data() {
    let dir = scratch("sec_hostile_names");
    let (f, names) = hostile_model(&dir);
    let lib = dir.join("lib");
    let out = forgec(&["compile", s(&f), "-o", s(&lib), "--name", "hostile"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let header = std::fs::read_to_string(lib.join("hostile.h")).unwrap();
    // Names appear in comments only, escaped: nothing can close a comment or start a line.
    for line in header.lines() {
        assert!(!line.starts_with("#include \"/etc"), "{line}");
    }
    assert!(!header.contains("system(\"touch"), "{header}");
    let nout = names.len() - 1;
    let prog = dir.join("main.c");
    let mut c = String::from(
        "#include <stdio.h>\n#include <string.h>\n#include \"hostile.h\"\nint main(void) {\n  float x[8] = {-1, 2, -3, 4, 5, -6, 7, -8};\n",
    );
    c.push_str(&format!("  float o[{nout}][8];\n  void *outs[{nout}];\n  const void *ins[1] = {{ x }};\n  for (int k = 0; k < {nout}; k++) outs[k] = o[k];\n"));
    c.push_str("  hostile_ctx *ctx = hostile_create();\n  outs[1] = NULL;\n  int rc = hostile_run_v(ctx, 2, ins, (void *const *)outs);\n  printf(\"rc=%d msg=%s\\n\", rc, hostile_last_error(ctx));\n  outs[1] = o[1];\n");
    c.push_str(&format!("  rc = hostile_run_v(ctx, 2, ins, (void *const *)outs);\n  printf(\"rc=%d\\n\", rc);\n  for (int k = 0; k < {nout}; k++) for (int i = 0; i < 8; i++) if (o[k][i] != (x[i] > 0 ? x[i] : 0)) {{ printf(\"bad %d %d\\n\", k, i); return 1; }}\n  hostile_destroy(ctx);\n  return 0;\n}}\n"));
    std::fs::write(&prog, c).unwrap();
    let exe = dir.join("main");
    build_c(&prog, &lib, "hostile", &["-Wextra", "-Wcomment"], &exe);
    let run = Command::new(&exe).current_dir(&dir).output().unwrap();
    let text = String::from_utf8_lossy(&run.stdout).into_owned();
    assert!(run.status.success(), "{text}");
    // The format directives came out as text, not as a format.
    assert!(
        text.contains("rc=1 msg=output 1 (`%s%s%s%s%n%n%x`) is NULL"),
        "{text}"
    );
    assert!(text.contains("rc=0\n"), "{text}");
    assert!(!dir.join("PWNED").exists(), "a name's code ran");
    // `run`: every output file lands inside the output directory.
    let x = dir.join("x.npy");
    forgec_runtime::write_npy(
        &x,
        &forgec_runtime::Tensor::from_f32(vec![2, 4], vec![-1., 2., -3., 4., 5., -6., 7., -8.])
            .unwrap(),
    )
    .unwrap();
    let od = dir.join("sub/out");
    let out = forgec(&["run", s(&f), "-i", s(&x), "-o", s(&od), "--npz"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(!Path::new("/tmp/forgec_absolute_out.npy").exists());
    assert!(!dir.join("escaped_out.npy").exists());
    let files: Vec<String> = std::fs::read_dir(&od)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(files.len(), nout + 1, "{files:?}");
    for f in &files {
        assert!(f.len() <= 110 && !f.starts_with('.'), "{f}");
    }
    assert!(
        !dir.join("PWNED").exists(),
        "a name's code ran in forgec run"
    );
}

/// An output directory that cannot be written is said before the model is loaded or run.
#[test]
fn unwritable_output_directory_is_said_first() {
    let dir = scratch("sec_unwritable");
    std::fs::write(dir.join("file"), b"x").unwrap();
    let out = forgec(&[
        "run",
        s(&model_file("mlp_binary.keras")),
        "-i",
        s(&model_file("mlp_binary.input.npy")),
        "-o",
        s(&dir.join("file/out")),
    ]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("cannot create"), "{}", out.stderr);
}

/// `--name` must be a C identifier the library can prefix its symbols with.
#[test]
fn library_names_are_checked() {
    let dir = scratch("sec_names");
    for bad in ["", "Ünïcode", "9lives", "_x", "a-b", "ALLCAPS"] {
        let out = forgec(&[
            "compile",
            s(&model_file("mlp_binary.keras")),
            "-o",
            s(&dir),
            "--name",
            bad,
        ]);
        assert_eq!(out.code, 2, "{bad:?}: {}", out.stderr);
        assert!(out.stderr.contains("--name"), "{}", out.stderr);
    }
}

/// The crash inputs found by mutating `.h5` files (libhdf5 segfaults in its attribute
/// reads), and a fresh sweep of seeded mutations: every one ends with a result or a clean
/// error (exit 0 or 2), never a signal or a panic.
#[test]
fn malformed_hdf5_never_crashes_forgec() {
    let mal = fixtures().join("malformed");
    for f in ["libhdf5_segv_1.tfkeras.h5", "libhdf5_segv_2.tfkeras.h5"] {
        let out = forgec(&["summary", s(&mal.join(f))]);
        assert_eq!(out.code, 2, "{f}: {}", out.stderr);
        assert!(
            out.stderr.contains("libhdf5 crashed on this file"),
            "{}",
            out.stderr
        );
        assert!(out.stderr.contains(f), "{}", out.stderr);
    }
    // A file on which libhdf5 loops forever (found by the fuzzer: the child was left spinning
    // after its parent exited): the answer's time limit ends it, a clean error.
    let out = forgec(&["summary", s(&mal.join("libhdf5_hang.tfkeras.h5"))]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains("did not answer in time"),
        "{}",
        out.stderr
    );
    let src = std::fs::read(model_file("mlp_binary.tfkeras.full.h5")).unwrap();
    let dir = scratch("sec_h5_mutations");
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for i in 0..120 {
        let mut b = src.clone();
        for _ in 0..1 + next() % 8 {
            let at = (next() % b.len() as u64) as usize;
            b[at] = next() as u8;
        }
        let f = dir.join(format!("m{i}.h5"));
        std::fs::write(&f, &b).unwrap();
        let out = forgec(&["summary", s(&f)]);
        assert!(
            out.code == 0 || out.code == 2,
            "mutant {i}: exit {}: {}",
            out.code,
            out.stderr
        );
        assert!(
            !out.stderr.contains("panicked"),
            "mutant {i}: {}",
            out.stderr
        );
        let _ = std::fs::remove_file(&f);
    }
}

/// Runs forgec with its address space limited (`ulimit -v`, in KB).
fn forgec_limited(kb: u64, args: &[&str]) -> Out {
    let mut cmd = String::from("ulimit -v ");
    cmd.push_str(&kb.to_string());
    cmd.push_str("; exec \"$0\" \"$@\"");
    let o = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .arg(env!("CARGO_BIN_EXE_forgec"))
        .args(args)
        .output()
        .unwrap();
    out_of(o)
}

/// A small weights file that declares a 20000x20000 dataset for a 32x64 kernel: the shape
/// is checked against the layer before any data is read (it took 3.2 GB before), so under a
/// 3 GB address-space limit the answer is the shape error.
#[test]
fn declared_sizes_are_checked_before_reading() {
    let dir = scratch("sec_h5_huge");
    std::fs::copy(model_file("mlp_binary.json"), dir.join("m.json")).unwrap();
    let w = dir.join("m.weights.h5");
    forgec_import::keras::weights::with_hdf5(|| {
        let f = hdf5::File::create(&w).unwrap();
        let vars = f.create_group("layers/dense/vars").unwrap();
        vars.new_dataset::<f32>()
            .chunk((1000, 1000))
            .shape((20000, 20000))
            .create("0")
            .unwrap();
        vars.new_dataset::<f32>().shape(64).create("1").unwrap();
    });
    assert!(std::fs::metadata(&w).unwrap().len() < 1 << 20);
    let out = forgec_limited(
        3 << 20,
        &[
            "run",
            s(&dir.join("m.json")),
            "-i",
            s(&model_file("mlp_binary.input.npy")),
            "-o",
            s(&dir.join("out")),
        ],
    );
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("has shape [20000, 20000] but the layer's config needs [32, 64]"),
        "{}",
        out.stderr
    );
}

/// A 170-byte ONNX file whose ConstantOfShape asks for 40000x40000 floats (6.4 GB) imports
/// without making them (the constant is made at run time); a Range of 10^10 elements is
/// refused with the limit.
#[test]
fn onnx_folding_has_a_budget() {
    use onnx_protobuf::TensorProto;
    let dir = scratch("sec_onnx_fold");
    let mut shape = TensorProto::new();
    shape.name = "shape".into();
    shape.data_type = 7;
    shape.dims = vec![2];
    shape.int64_data = vec![40000, 40000];
    let mut m = model(
        vec![
            node("ConstantOfShape", "big", &["shape"], &["c"]),
            node("Add", "add", &["x", "c"], &["y"]),
        ],
        vec![shape],
    );
    let g = m.graph.as_mut().unwrap();
    g.input[0] = vi("x", &[40000, 40000]);
    g.output[0] = vi("y", &[40000, 40000]);
    let f = dir.join("big.onnx");
    let bytes = m.write_to_bytes().unwrap();
    assert!(bytes.len() < 300);
    std::fs::write(&f, bytes).unwrap();
    let out = forgec_limited(3 << 20, &["summary", s(&f)]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let t = |name: &str, v: f32| {
        let mut t = TensorProto::new();
        t.name = name.into();
        t.data_type = 1;
        t.float_data = vec![v];
        t
    };
    let (a, b, c) = (t("a", 0.0), t("b", 1e10), t("d", 1.0));
    let m = model(
        vec![
            node("Range", "r", &["a", "b", "d"], &["r"]),
            node("Add", "add", &["x", "r"], &["y"]),
        ],
        vec![a, b, c],
    );
    let f = dir.join("range.onnx");
    std::fs::write(&f, m.write_to_bytes().unwrap()).unwrap();
    let out = forgec_limited(3 << 20, &["summary", s(&f)]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("over forgec's limit"), "{}", out.stderr);
}

/// A `.keras` archive whose config.json inflates to 200 MB (from 200 KB) is refused by its
/// declared size; one whose member lies about its size is refused when it inflates past it.
#[test]
fn keras_archive_members_are_capped() {
    use std::io::Write;
    let dir = scratch("sec_zip");
    let f = dir.join("bomb.keras");
    {
        let mut z = zip::ZipWriter::new(std::fs::File::create(&f).unwrap());
        let o = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated)
            .large_file(false);
        z.start_file("config.json", o).unwrap();
        let chunk = vec![b' '; 1 << 20];
        for _ in 0..200 {
            z.write_all(&chunk).unwrap();
        }
        z.finish().unwrap();
    }
    assert!(std::fs::metadata(&f).unwrap().len() < 1 << 20);
    let out = forgec_limited(3 << 20, &["summary", s(&f)]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains("config.json declares 209715200 bytes"),
        "{}",
        out.stderr
    );
}

/// CLI numbers are range-checked before any work.
#[test]
fn cli_numbers_are_checked() {
    let m = model_file("mlp_binary.keras");
    for (args, needle) in [
        (
            vec!["--batch", "1073741824"],
            "--batch 1073741824: use 1 to",
        ),
        (vec!["--batch", "0"], "--batch 0: use 1 to"),
        (vec!["--seconds=-1"], "--seconds -1"),
        (vec!["--seconds", "NaN"], "--seconds NaN"),
        (vec!["--threads", "0"], "--threads 0"),
    ] {
        let mut a = vec!["bench", s(&m)];
        a.extend(args);
        let out = forgec(&a);
        assert_eq!(out.code, 2, "{a:?}: {}", out.stderr);
        assert!(out.stderr.contains(needle), "{}", out.stderr);
    }
}

/// Builds the C program `prog` against `dir/libNAME.a` and its header, warnings as errors.
fn compile_lib(model: &Path, dir: &Path, name: &str, extra: &[&str]) {
    let mut a = vec!["compile", s(model), "-o", s(dir), "--name", name];
    a.extend(extra);
    let out = forgec(&a);
    assert_eq!(out.code, 0, "{}", out.stderr);
}

/// The shared library exports its C API alone; the static one defines no global symbol
/// without the model's prefix (MLIR's `memrefCopy` was unprefixed and weak).
#[test]
fn only_the_api_is_exported() {
    let dir = scratch("sec_exports");
    compile_lib(&model_file("cnn_mnist.keras"), &dir, "cnn", &[]);
    let nm = |args: &[&str], f: &str| {
        let o = Command::new("nm")
            .args(args)
            .arg(dir.join(f))
            .output()
            .unwrap();
        assert!(o.status.success());
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let mut exported: Vec<String> = nm(&["-D", "--defined-only"], "libcnn.so")
        .lines()
        .filter_map(|l| l.split_whitespace().nth(2).map(String::from))
        .collect();
    exported.sort();
    let mut want: Vec<String> = forgec::codegen::capi::API_FUNCTIONS
        .iter()
        .map(|f| format!("cnn_{f}"))
        .collect();
    want.sort();
    assert_eq!(exported, want);
    for l in nm(&["-g", "--defined-only"], "libcnn.a").lines() {
        let parts: Vec<&str> = l.split_whitespace().collect();
        if let [_, kind, sym] = parts[..] {
            assert!(
                sym.starts_with("cnn_")
                    || sym.starts_with("_mlir_ciface_cnn_")
                    || kind == "W"
                    || kind == "V",
                "{l}"
            );
        }
    }
}

/// A C program whose two threads share one context: each call either runs alone (and its
/// outputs are right) or is refused with ERR_BUSY; before, outputs were wrong, then a double
/// free. Threads with contexts of their own never see BUSY.
#[test]
fn a_context_shared_by_two_threads_is_refused_not_corrupted() {
    let dir = scratch("sec_busy");
    compile_lib(&model_file("mlp_mnist.keras"), &dir, "mm", &[]);
    let prog = dir.join("busy.c");
    std::fs::write(
        &prog,
        r#"#include <stdio.h>
#include <pthread.h>
#include <string.h>
#include "mm.h"
#define B 8
static mm_ctx *shared;
static float x[B * 784], ref[B * 10];
static int busy[2], ok[2], wrong[2];
static void *worker(void *arg) {
    int t = (int)(long)arg;
    float y[B * 10];
    for (int i = 0; i < 4000; i++) {
        int rc = mm_run(shared, B, x, y);
        if (rc == MM_ERR_BUSY) busy[t]++;
        else if (rc == MM_OK && memcmp(y, ref, sizeof y) == 0) ok[t]++;
        else wrong[t]++;
    }
    return NULL;
}
int main(void) {
    for (int i = 0; i < B * 784; i++) x[i] = (float)((i * 37) % 101) / 101.0f;
    shared = mm_create();
    if (mm_run(shared, B, x, ref) != MM_OK) return 2;
    pthread_t a, b;
    pthread_create(&a, NULL, worker, (void *)0L);
    pthread_create(&b, NULL, worker, (void *)1L);
    pthread_join(a, NULL);
    pthread_join(b, NULL);
    printf("ok %d busy %d wrong %d\n", ok[0] + ok[1], busy[0] + busy[1], wrong[0] + wrong[1]);
    mm_destroy(shared);
    return 0;
}
"#,
    )
    .unwrap();
    let exe = dir.join("busy");
    build_c(&prog, &dir, "mm", &["-O1"], &exe);
    let run = Command::new(&exe).output().unwrap();
    let text = String::from_utf8_lossy(&run.stdout).into_owned();
    assert!(
        run.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&run.stderr)
    );
    let nums: Vec<i64> = text
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    assert_eq!(nums.len(), 3, "{text}");
    assert_eq!(nums[0] + nums[1], 8000, "{text}");
    assert_eq!(nums[2], 0, "wrong outputs: {text}");
    assert!(nums[0] > 0, "{text}");
    println!("shared context: {text}");
}

/// `--weights external`: a byte flipped inside NAME.weights (its size unchanged) is found
/// by the checksum when the library maps the file; the run says so instead of NaNs.
#[test]
fn damaged_weights_file_is_refused() {
    let dir = scratch("sec_weights_sum");
    compile_lib(
        &model_file("mlp_mnist.keras"),
        &dir,
        "mw",
        &["--weights", "external"],
    );
    let w = dir.join("mw.weights");
    let mut b = std::fs::read(&w).unwrap();
    let mid = b.len() / 2;
    b[mid] ^= 0x40;
    std::fs::write(&w, &b).unwrap();
    let lib = forgec_runtime::compiled::CompiledModel::load(&dir.join("libmw.so"), "mw").unwrap();
    let x = forgec_runtime::Tensor::full(forgec_runtime::DType::F32, vec![1, 784], 0.5).unwrap();
    let e = lib.run(&[&x]).unwrap_err();
    assert!(e.contains("is damaged: its checksum does not match"), "{e}");
}

/// Embedding indices out of range: the compiled engine refuses them with the layer's name,
/// as the interpreter does (it clamped them and exited 0 before).
#[test]
fn embedding_indices_out_of_range_are_refused() {
    let dir = scratch("sec_embedding");
    let m = fixtures().join("layers/embedding.keras");
    let x = npy(&fixtures().join("layers/embedding.input.0.npy"));
    let mut v = x.to_f64_vec();
    v[1] = 1e6;
    let bad = forgec_runtime::Tensor::from_f64_values(x.dtype(), x.shape().to_vec(), &v).unwrap();
    let f = dir.join("bad.npy");
    forgec_runtime::write_npy(&f, &bad).unwrap();
    for engine in ["compiled", "interp"] {
        let out = forgec(&[
            "run",
            s(&m),
            "-i",
            s(&f),
            "-o",
            s(&dir.join("o")),
            "--engine",
            engine,
        ]);
        assert_eq!(out.code, 2, "{engine}: {}", out.stderr);
        assert!(
            out.stderr.contains("out of range"),
            "{engine}: {}",
            out.stderr
        );
        if engine == "compiled" {
            assert!(out.stderr.contains("Embedding"), "{}", out.stderr);
        }
    }
    // In range, it runs.
    let out = forgec(&[
        "run",
        s(&m),
        "-i",
        s(&fixtures().join("layers/embedding.input.0.npy")),
        "-o",
        s(&dir.join("o")),
        "--engine",
        "compiled",
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
}

/// Every input the fuzzers found a crash with (`tests/fixtures/malformed/fuzz/TARGET/`, see
/// `scripts/fuzz.sh`) now ends in a result or a clean error: exit 0 or 2, no panic.
#[test]
fn fuzz_findings_stay_fixed() {
    let root = fixtures().join("malformed/fuzz");
    let mut n = 0;
    for target in std::fs::read_dir(&root).unwrap() {
        let target = target.unwrap().path();
        for f in std::fs::read_dir(&target).unwrap() {
            let f = f.unwrap().path();
            let out = forgec(&["summary", s(&f)]);
            assert!(
                out.code == 0 || out.code == 2,
                "{}: exit {}: {}",
                f.display(),
                out.code,
                out.stderr
            );
            assert!(
                !out.stderr.contains("panicked"),
                "{}: {}",
                f.display(),
                out.stderr
            );
            n += 1;
        }
    }
    assert!(n > 0);
}
