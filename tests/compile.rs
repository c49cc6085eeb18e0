//! `forgec compile`: differential tests against the interpreter and Keras, the C API's
//! errors, reproducible artifacts, cross-compilation.

use crate::common::*;
use forgec::codegen::{self, Emit, Options};
use forgec::keras::{load, LoadOptions};
use forgec_runtime::compiled::CompiledModel;
use forgec_runtime::Tensor;

fn opts(name: &str) -> Options {
    Options {
        name: name.into(),
        cpu: Some("native".into()),
        target: None,
        emit: Emit::Lib,
        external_weights: false,
        threads: 1,
    }
}

/// `forgec compile MODEL -o DIR EXTRA...`, which must succeed.
fn compile_ok(model: &std::path::Path, dir: &std::path::Path, extra: &[&str]) {
    let mut args = vec![
        "compile",
        model.to_str().unwrap(),
        "-o",
        dir.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let out = forgec(&args);
    assert_eq!(out.code, 0, "{}", out.stderr);
}

/// `n` values `f(i)` as a text-IR constant's list (`0.125, -0.5, ...`).
fn literal(n: usize, f: impl Fn(usize) -> f64) -> String {
    (0..n)
        .map(|i| format!("{:.3}", f(i)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The first `n` rows of `t` (repeating rows when `n` is larger).
fn rows(t: &Tensor, n: usize) -> Tensor {
    let per: usize = t.shape()[1..].iter().product();
    let have = t.shape()[0];
    let v = t.to_f64_vec();
    let out: Vec<f64> = (0..n)
        .flat_map(|r| v[(r % have) * per..(r % have + 1) * per].to_vec())
        .collect();
    let mut shape = t.shape().to_vec();
    shape[0] = n;
    Tensor::from_f64_values(t.dtype(), shape, &out).unwrap()
}

#[test]
fn compiled_models_match_the_interpreter_and_keras_at_batch_1_3_32() {
    let m = manifest();
    let mut checked = 0;
    for (name, info) in m["models"].as_object().unwrap() {
        let model = load(
            &model_file(&format!("{name}.keras")),
            &LoadOptions::default(),
        )
        .unwrap();
        let g = codegen::prepare(model.graph.clone()).unwrap();
        let dir = scratch(&format!("compile_{name}"));
        codegen::compile(model.graph.clone(), &opts(name), &dir, "")
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let lib = CompiledModel::load(&dir.join(format!("lib{name}.so")), name).unwrap();
        let inputs: Vec<Tensor> = info["inputs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| npy(&model_file(i["file"].as_str().unwrap())))
            .collect();
        for batch in [1usize, 3, 32] {
            let ins: Vec<Tensor> = inputs.iter().map(|t| rows(t, batch)).collect();
            let named: Vec<(String, Tensor)> = g
                .inputs
                .iter()
                .map(|&i| g.value(i).name.clone())
                .zip(ins.iter().cloned())
                .collect();
            let want = forgec_ir::interp::run(&g, &named).unwrap();
            let refs: Vec<&Tensor> = ins.iter().collect();
            let got = lib
                .run(&refs)
                .unwrap_or_else(|e| panic!("{name} batch {batch}: {e}"));
            for (k, (a, b)) in got.iter().zip(&want).enumerate() {
                assert_close(
                    a,
                    b,
                    1e-4,
                    &format!("{name} batch {batch} output {k}: compiled vs interpreter"),
                );
            }
            // Keras's reference rows (the fixture holds 16).
            for (k, o) in info["outputs"].as_array().unwrap().iter().enumerate() {
                let keras = npy(&model_file(o["keras_file"].as_str().unwrap()));
                let n = batch.min(keras.shape()[0]);
                assert_close(
                    &rows(&got[k], n),
                    &rows(&keras, n),
                    1e-4,
                    &format!("{name} batch {batch} output {k}: compiled vs Keras"),
                );
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 8 * 3);
}

/// Two builds of a model give the same bytes: a small one, and mobilenetv2, whose op
/// functions are compiled in parts on several threads. The parts' symbols are the model's own
/// (another model's library defines none of them).
#[test]
fn artifacts_are_byte_identical_across_builds() {
    for m in ["cnn_mnist", "mobilenetv2_035_96"] {
        let model = model_file(&format!("{m}.keras"));
        let a = scratch(&format!("repro_a_{m}"));
        let b = scratch(&format!("repro_b_{m}"));
        for d in [&a, &b] {
            compile_ok(&model, d, &[]);
        }
        for f in [
            format!("lib{m}.a"),
            format!("lib{m}.so"),
            format!("{m}.h"),
            format!("{m}.json"),
        ] {
            let (x, y) = (
                std::fs::read(a.join(&f)).unwrap(),
                std::fs::read(b.join(&f)).unwrap(),
            );
            assert!(x == y, "{f} differs between two builds of the same model");
        }
    }
    let defined = |lib: &std::path::Path| -> Vec<String> {
        let out = std::process::Command::new("nm")
            .args(["--defined-only", "-g"])
            .arg(lib)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        // Strong symbols (a weak one, the wrapper's `memrefCopy`, may be defined twice).
        text.lines()
            .filter_map(|l| match l.split_whitespace().collect::<Vec<_>>()[..] {
                [_, kind, sym] if !matches!(kind, "W" | "w" | "V" | "v") => Some(sym.to_string()),
                _ => None,
            })
            .collect()
    };
    let c = scratch("repro_other_name");
    compile_ok(
        &model_file("mobilenetv2_035_96.onnx"),
        &c,
        &["--name", "other"],
    );
    let mine = defined(&scratch_path("repro_a_mobilenetv2_035_96").join("libmobilenetv2_035_96.a"));
    let theirs = defined(&c.join("libother.a"));
    assert!(
        mine.iter().filter(|s| s.contains("_forgec_op")).count() > 10,
        "the op functions are not the model's own symbols"
    );
    let both: Vec<&String> = mine.iter().filter(|s| theirs.contains(s)).collect();
    assert!(
        both.is_empty(),
        "two models' libraries both define {both:?}"
    );
    let members = std::process::Command::new("ar")
        .arg("t")
        .arg(c.join("libother.a"))
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&members.stdout).contains("kernel_v2_1.o"),
        "mobilenetv2 was compiled in one part"
    );
    let a = scratch_path("repro_a_cnn_mnist");
    // No scratch paths leak into the artifact.
    let so = std::fs::read(a.join("libcnn_mnist.so")).unwrap();
    assert!(
        !so.windows(5).any(|w| w == b"/tmp/"),
        "a temporary path is embedded in the library"
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(a.join("cnn_mnist.json")).unwrap()).unwrap();
    assert_eq!(
        json["inputs"][0]["shape"],
        serde_json::json!(["batch", 28, 28, 1])
    );
    assert_eq!(json["source_sha256"].as_str().unwrap().len(), 64);
}

#[test]
fn the_c_api_reports_bad_calls() {
    let dir = scratch("capi_errors");
    codegen::compile(
        load(&model_file("mlp_binary.keras"), &LoadOptions::default())
            .unwrap()
            .graph,
        &opts("m"),
        &dir,
        "",
    )
    .unwrap();
    let lib = CompiledModel::load(&dir.join("libm.so"), "m").unwrap();
    let wrong = Tensor::from_f32(vec![2, 31], vec![0.0; 62]).unwrap();
    let e = lib.run(&[&wrong]).unwrap_err();
    assert!(e.contains("input 0 must be f32 [2, 32] for batch 2"), "{e}");
    // An empty batch is a call that computes nothing, not an error.
    let empty = Tensor::from_f32(vec![0, 32], vec![]).unwrap();
    let out = lib.run(&[&empty]).unwrap();
    assert_eq!(out[0].shape(), &[0, 1]);
    let header = std::fs::read_to_string(dir.join("m.h")).unwrap();
    assert!(
        header.contains(
            "int m_run(m_ctx *ctx, int64_t batch, const float *input_layer, float *output_0);"
        ),
        "{header}"
    );
    // The kernels write the output in place while they read the input: an output buffer that
    // overlaps the input is refused, one right after it is not.
    std::fs::write(
        dir.join("overlap.c"),
        "#include \"m.h\"\n#include <stdio.h>\n#include <stdlib.h>\nint main(void) {\n    m_ctx *ctx = m_create();\n    float *x = calloc(4 * 32 + 4, sizeof(float));\n    if (!ctx || !x) return 3;\n    int rc = m_run(ctx, 4, x, x + 126);\n    printf(\"%d %s\\n\", rc, m_last_error(ctx));\n    printf(\"%d\\n\", m_run(ctx, 4, x, x + 128));\n    m_destroy(ctx);\n    free(x);\n    return 0;\n}\n",
    )
    .unwrap();
    let out = cc_run(
        &dir.join("overlap"),
        &[
            "-std=c99".as_ref(),
            "-Wall".as_ref(),
            "-Werror".as_ref(),
            "-I".as_ref(),
            dir.as_os_str(),
            dir.join("overlap.c").as_os_str(),
            dir.join("libm.a").as_os_str(),
            "-lm".as_ref(),
            "-lpthread".as_ref(),
        ],
    );
    assert_eq!(
        out,
        "3 output 0 (`output_0`) overlaps input 0 (`input_layer`): give each output a buffer of its own\n0\n"
    );
}

#[test]
fn cross_compiles_an_aarch64_object() {
    let dir = scratch("cross");
    let out = forgec(&[
        "compile",
        model_file("mlp_mnist.keras").to_str().unwrap(),
        "-o",
        dir.to_str().unwrap(),
        "--target",
        "aarch64-unknown-linux-gnu",
        "--cpu",
        "generic",
        "--emit",
        "obj",
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let obj = std::fs::read(dir.join("mlp_mnist.o")).unwrap();
    // ELF, machine EM_AARCH64 (183).
    assert_eq!(&obj[..4], b"\x7fELF");
    assert_eq!(u16::from_le_bytes([obj[18], obj[19]]), 183);
}

/// A library for aarch64: with a cross C compiler on the PATH (Debian: gcc-aarch64-linux-gnu
/// and libc6-dev-arm64-cross) it is built, and with qemu-aarch64 (qemu-user) a C program linked
/// with it runs cnn_mnist (Winograd, on 4-lane NEON vectors) within 1e-5 of Keras. Without the
/// compiler the error says what to install and that `--emit obj` needs nothing more.
#[test]
fn aarch64_library_runs_or_says_what_is_missing() {
    let on_path = |exe: &str| {
        std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(exe).is_file()))
    };
    let dir = scratch("cross_lib");
    let out = forgec(&[
        "compile",
        model_file("cnn_mnist.keras").to_str().unwrap(),
        "-o",
        dir.to_str().unwrap(),
        "--target",
        "aarch64-unknown-linux-gnu",
        "--name",
        "cnn",
    ]);
    if !on_path("aarch64-linux-gnu-gcc") {
        assert_ne!(out.code, 0);
        for needle in ["apt install gcc-aarch64-linux-gnu", "--emit obj"] {
            assert!(
                out.stderr.contains(needle),
                "no `{needle}` in: {}",
                out.stderr
            );
        }
        println!("no aarch64 cross compiler: checked the error only");
        return;
    }
    assert_eq!(out.code, 0, "{}", out.stderr);
    let so = std::fs::read(dir.join("libcnn.so")).unwrap();
    assert_eq!(
        u16::from_le_bytes([so[18], so[19]]),
        183,
        "not an aarch64 library"
    );
    if !on_path("qemu-aarch64") {
        println!("no qemu-aarch64: built, not run");
        return;
    }
    std::fs::write(
        dir.join("run.c"),
        r#"#include <stdio.h>
#include <stdlib.h>
#include "cnn.h"
int main(void) {
    static float x[16 * 784], y[16 * 10];
    FILE *f = fopen("x.bin", "rb");
    if (!f || fread(x, sizeof x, 1, f) != 1) return 3;
    fclose(f);
    cnn_ctx *c = cnn_create();
    if (cnn_run(c, 16, x, y) != 0) { printf("%s\n", cnn_last_error(c)); return 1; }
    for (int i = 0; i < 16 * 10; i++) printf("%.9g\n", y[i]);
    cnn_destroy(c);
    return 0;
}
"#,
    )
    .unwrap();
    let x = npy(&model_file("cnn_mnist.input.npy"));
    let bytes: Vec<u8> = x
        .to_f64_vec()
        .iter()
        .flat_map(|v| (*v as f32).to_le_bytes())
        .collect();
    std::fs::write(dir.join("x.bin"), bytes).unwrap();
    let cc = std::process::Command::new("aarch64-linux-gnu-gcc")
        .current_dir(&dir)
        .args(["-O2", "-o", "run", "run.c", "libcnn.a", "-lm", "-lpthread"])
        .output()
        .unwrap();
    assert!(
        cc.status.success(),
        "{}",
        String::from_utf8_lossy(&cc.stderr)
    );
    let run = std::process::Command::new("qemu-aarch64")
        .current_dir(&dir)
        .args(["-L", "/usr/aarch64-linux-gnu", "./run"])
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stdout)
    );
    let got: Vec<f64> = String::from_utf8_lossy(&run.stdout)
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    let got = Tensor::from_f64_values(forgec_ir::DType::F32, vec![16, 10], &got).unwrap();
    let want = npy(&model_file("cnn_mnist.keras_out.npy"));
    assert_close(&got, &want, 1e-5, "cnn_mnist on aarch64 (qemu)");
}

/// `-o` relative to the working directory (the linker runs elsewhere), and a cross-compile
/// without `--cpu` (the default CPU follows the target's architecture).
#[test]
fn relative_output_dir_and_default_cross_cpu() {
    let dir = scratch("relative");
    let model = model_file("mlp_mnist.keras");
    for (args, file) in [
        (&[][..], "build/libmlp_mnist.a"),
        (
            &["--target", "aarch64-unknown-linux-gnu", "--emit", "obj"][..],
            "build/mlp_mnist.o",
        ),
    ] {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_forgec"))
            .current_dir(&dir)
            .args(["compile", model.to_str().unwrap(), "-o", "build"])
            .args(args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "{args:?}: {stderr}");
        assert!(dir.join(file).is_file(), "{args:?}: no {file}");
    }
}

#[test]
fn every_stage_can_be_emitted() {
    let dir = scratch("emit");
    for (emit, file, needle) in [
        ("ir", "m.ir", "= matmul("),
        ("mlir", "m.mlir", "linalg.generic"),
        ("llvm", "m.ll", "define void @m_forgec_main"),
        ("asm", "m.s", "m_forgec_main"),
    ] {
        compile_ok(
            &model_file("mlp_binary.keras"),
            &dir,
            &["--name", "m", "--emit", emit, "--cpu", "x86-64-v3"],
        );
        let text = std::fs::read_to_string(dir.join(file)).unwrap();
        assert!(text.contains(needle), "{emit}: no `{needle}`");
    }
    // The portable default: one file per level, each its own part's code.
    for (emit, ext) in [("mlir", "mlir"), ("llvm", "ll"), ("asm", "s")] {
        compile_ok(
            &model_file("mlp_binary.keras"),
            &dir,
            &["--name", "p", "--emit", emit],
        );
        for level in [2, 3, 4] {
            let file = dir.join(format!("p.x86-64-v{level}.{ext}"));
            let text = std::fs::read_to_string(&file).unwrap();
            let needle = format!("p_forgec_v{level}_forgec_main");
            assert!(text.contains(&needle), "{}: no `{needle}`", file.display());
        }
    }
}

/// The kernels write their results where the next op reads them: no buffer is copied in
/// cnn_mnist (convolutions, Winograd, pooling, dense, a softmax output) or mlp_mnist. A tile
/// loop that one-shot bufferization cannot prove in place shows up here as a `memrefCopy` (one
/// such loop made cnn_mnist 18% slower, its results unchanged).
#[test]
fn kernels_copy_no_buffers() {
    let dir = scratch("nocopy");
    for (m, level) in ["cnn_mnist.keras", "mlp_mnist.keras"]
        .iter()
        .flat_map(|m| [2, 3, 4].map(|l| (*m, l)))
    {
        if level == 2 {
            compile_ok(&model_file(m), &dir, &["--name", "m", "--emit", "llvm"]);
        }
        let ir = std::fs::read_to_string(dir.join(format!("m.x86-64-v{level}.ll"))).unwrap();
        let copies: Vec<&str> = ir
            .lines()
            .filter(|l| {
                l.contains("call")
                    && [
                        "@memrefCopy",
                        "@llvm.memcpy",
                        "@llvm.memmove",
                        "@memcpy",
                        "@memmove",
                    ]
                    .iter()
                    .any(|f| l.contains(f))
            })
            .collect();
        assert!(copies.is_empty(), "{m} v{level}: {copies:#?}");
    }
}

/// `forgec compile --threads 3`: a new context runs on 3 threads (`NAME_threads` says so; the
/// header and NAME.json record it) and gives the bits of a one-thread build, whose contexts
/// start on 1; a count outside 1..64 is refused. `forgec run --threads 2` runs the compiled
/// engine on 2 threads, the same bits again and Keras's values; the interpreter refuses more
/// than one thread.
#[test]
fn threads_flag_sets_the_threads_of_new_contexts() {
    let dir = scratch("threads_flag");
    let model = model_file("mlp_mnist.keras");
    let x = npy(&model_file("mlp_mnist.input.npy"));
    let mut outs = Vec::new();
    for (threads, sub) in [("1", "one"), ("3", "three")] {
        let d = dir.join(sub);
        // `forgec run` compiles for this CPU: the same code, to compare bits with.
        let flags = ["--name", "m", "--threads", threads, "--cpu", "native"];
        compile_ok(&model, &d, &flags);
        let h = std::fs::read_to_string(d.join("m.h")).unwrap();
        assert!(
            h.contains(&format!("#define M_DEFAULT_THREADS {threads}\n")),
            "{h}"
        );
        let meta: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(d.join("m.json")).unwrap()).unwrap();
        assert_eq!(meta["flags"]["threads"].to_string(), threads);
        let lib = CompiledModel::load(&d.join("libm.so"), "m").unwrap();
        assert_eq!(lib.threads().unwrap().to_string(), threads);
        outs.push(lib.run(&[&x]).unwrap().remove(0).to_f64_vec());
    }
    assert_eq!(outs[0], outs[1], "3 threads changed the bits");
    let bad = forgec(&[
        "compile",
        model.to_str().unwrap(),
        "-o",
        dir.to_str().unwrap(),
        "--threads",
        "65",
    ]);
    assert_eq!(bad.code, 2);
    assert!(
        bad.stderr.contains("--threads 65: use 1 to 64"),
        "{}",
        bad.stderr
    );

    let input = format!(
        "input_layer={}",
        model_file("mlp_mnist.input.npy").display()
    );
    let run = |engine: &str, threads: &str, out: &std::path::Path| {
        let args = [
            "run",
            model.to_str().unwrap(),
            "-i",
            &input,
            "-o",
            out.to_str().unwrap(),
            "--engine",
            engine,
            "--threads",
            threads,
        ];
        forgec(&args)
    };
    let out = dir.join("run");
    let r = run("compiled", "2", &out);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let got = std::fs::read_dir(&out)
        .unwrap()
        .map(|f| f.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "npy"))
        .unwrap();
    let got = npy(&got);
    assert_eq!(got.to_f64_vec(), outs[0], "forgec run --threads 2");
    assert_close(
        &got,
        &npy(&model_file("mlp_mnist.keras_out.npy")),
        1e-4,
        "run on 2 threads",
    );
    let r = run("interp", "2", &dir.join("run_interp"));
    assert_eq!(r.code, 2);
    assert!(
        r.stderr
            .contains("the reference interpreter runs on one thread"),
        "{}",
        r.stderr
    );
}

/// The weights reach the library through the assembler (`.incbin`), not as MLIR/LLVM constants
/// (which made a 64 MB model take 10.5 s and 870 MB to compile, 3.2 s and 370 MB now): the
/// LLVM IR of mlp_mnist is smaller than its 400 KB of weights, and the library it makes still
/// keeps a non-executable stack.
#[test]
fn weights_bypass_llvm() {
    let dir = scratch("weights_blob");
    let model = model_file("mlp_mnist.keras");
    compile_ok(&model, &dir, &["--name", "m", "--emit", "llvm"]);
    for level in [2, 3, 4] {
        let ir = std::fs::metadata(dir.join(format!("m.x86-64-v{level}.ll")))
            .unwrap()
            .len();
        assert!(
            ir < 400_000,
            "the v{level} LLVM IR has {ir} bytes: weights inside?"
        );
    }
    compile_ok(&model, &dir, &["--name", "m"]);
    assert!(
        !dir.join("m.weights").exists(),
        "embedded weights left a file"
    );
    let elf = std::process::Command::new("readelf")
        .args(["-lW"])
        .arg(dir.join("libm.so"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&elf.stdout);
    let stack = text.lines().find(|l| l.contains("GNU_STACK")).unwrap_or("");
    assert!(stack.contains("RW ") && !stack.contains("RWE"), "{text}");
}

#[test]
fn compiler_names_the_op_it_cannot_lower() {
    let dir = scratch("unlowered");
    let model = fixtures().join("unlowered/topk_over_batch.onnx");
    let out = forgec(&[
        "compile",
        model.to_str().unwrap(),
        "-o",
        dir.to_str().unwrap(),
    ]);
    assert_eq!(out.code, 2);
    assert!(
        out.stderr.contains(
            "TopK `best_sample` (top_k): top-k along a symbolic dim is not compiled yet (the reference interpreter runs it: forgec run --engine interp)"
        ),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("panicked"));
    // `run` falls back to the interpreter, and says so.
    let input = fixtures().join("unlowered/topk_over_batch.input.npy");
    let out = forgec(&[
        "run",
        model.to_str().unwrap(),
        "-i",
        input.to_str().unwrap(),
        "-o",
        dir.to_str().unwrap(),
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("note: running the reference interpreter"),
        "{}",
        out.stderr
    );
}

/// Layer zoos compiled, against Keras: the recurrent one (GRU both ways, SimpleRNN,
/// bidirectional LSTM and GRU, TimeDistributed) and the 2-D one (two Conv2DTranspose layers
/// with strides and padding among its layers: Keras's own semantics).
#[test]
fn layer_zoos_compile_and_match_keras() {
    for zoo in ["recurrent", "conv2d_zoo"] {
        let dir = scratch(&format!("compile_{zoo}"));
        let model = load(
            &fixtures().join(format!("layers/{zoo}.keras")),
            &LoadOptions::default(),
        )
        .unwrap();
        codegen::compile(model.graph, &opts("zoo"), &dir, "").unwrap();
        let lib = CompiledModel::load(&dir.join("libzoo.so"), "zoo").unwrap();
        let x = npy(&fixtures().join(format!("layers/{zoo}.input.0.npy")));
        let got = lib.run(&[&x]).unwrap();
        assert_close(
            &got[0],
            &npy(&fixtures().join(format!("layers/{zoo}.keras_out.0.npy"))),
            1e-4,
            &format!("{zoo}, compiled"),
        );
    }
}

/// The examples (a C program and a Rust crate linking the generated static library) build,
/// run, and print the interpreter's outputs.
#[test]
fn examples_build_and_run() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = scratch("examples");
    compile_ok(
        &model_file("mlp_binary.keras"),
        &dir,
        &["--name", "mlp_binary"],
    );
    let x = npy(&model_file("mlp_binary.input.npy"));
    let raw: Vec<u8> = x
        .to_f64_vec()
        .iter()
        .flat_map(|v| (*v as f32).to_le_bytes())
        .collect();
    let input = dir.join("input.f32");
    std::fs::write(&input, raw).unwrap();
    let want = npy(&model_file("mlp_binary.keras_out.npy")).to_f64_vec();
    let check = |stdout: &[u8], what: &str| {
        let got: Vec<f64> = String::from_utf8_lossy(stdout)
            .lines()
            .map(|l| l.parse().unwrap())
            .collect();
        assert_eq!(got.len(), want.len(), "{what}");
        for (a, b) in got.iter().zip(&want) {
            assert!((a - b).abs() < 1e-4, "{what}: {a} vs {b}");
        }
    };
    // C
    let exe = dir.join("demo_c");
    let cc = std::process::Command::new("cc")
        .args(["-std=c99", "-Wall", "-Werror", "-I"])
        .arg(&dir)
        .arg(root.join("examples/c/main.c"))
        .arg("-L")
        .arg(&dir)
        .args(["-l:libmlp_binary.a", "-lm", "-o"])
        .arg(&exe)
        .output()
        .unwrap();
    assert!(
        cc.status.success(),
        "{}",
        String::from_utf8_lossy(&cc.stderr)
    );
    let run = std::process::Command::new(&exe)
        .arg(&input)
        .arg("16")
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    check(&run.stdout, "C example");
    // Rust
    let run = std::process::Command::new(env!("CARGO"))
        .args(["run", "-q", "--offline", "--manifest-path"])
        .arg(root.join("examples/rust/Cargo.toml"))
        .arg("--target-dir")
        .arg(dir.join("rust-target"))
        .arg("--")
        .arg(&input)
        .arg("16")
        .env("FORGEC_ARTIFACT_DIR", &dir)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    check(&run.stdout, "Rust example");
}

/// A sample's outputs do not depend on the batch it is run in, to the bit: the tiled kernels
/// sum every output element over k in the same order whether its row falls in a full block of
/// rows, among the rows left over, or alone at batch 1. Checked for this machine's vector width
/// and the portable one (different register tiles).
#[test]
fn a_sample_gives_the_same_bits_in_any_batch() {
    for (name, cpu) in [
        ("mlp_mnist", "native"),
        ("cnn_mnist", "native"),
        ("cnn_mnist", "x86-64-v2"),
    ] {
        let model = load(
            &model_file(&format!("{name}.keras")),
            &LoadOptions::default(),
        )
        .unwrap();
        let dir = scratch(&format!("batch_bits_{name}_{cpu}"));
        let mut o = opts(name);
        o.cpu = Some(cpu.into());
        codegen::compile(model.graph.clone(), &o, &dir, "").unwrap();
        let lib = CompiledModel::load(&dir.join(format!("lib{name}.so")), name).unwrap();
        let x = rows(&npy(&model_file(&format!("{name}.input.npy"))), 32);
        let all = lib.run(&[&x]).unwrap().remove(0).to_f64_vec();
        let per = all.len() / 32;
        for (batch, r) in [(1usize, 0usize), (1, 13), (1, 31), (7, 6), (9, 8)] {
            let one = lib.run(&[&rows_from(&x, r, batch)]).unwrap().remove(0);
            let last = one.to_f64_vec()[(batch - 1) * per..].to_vec();
            assert_eq!(
                last,
                all[r * per..(r + 1) * per].to_vec(),
                "{name}: sample {r} differs between batch 32 and batch {batch}"
            );
        }
    }
}

/// `batch` rows of `t` ending with row `last`.
fn rows_from(t: &Tensor, last: usize, batch: usize) -> Tensor {
    let per: usize = t.shape()[1..].iter().product();
    let v = t.to_f64_vec();
    let first = last + 1 - batch;
    let mut shape = t.shape().to_vec();
    shape[0] = batch;
    Tensor::from_f64_values(t.dtype(), shape, &v[first * per..(last + 1) * per]).unwrap()
}

/// Two compiled models link statically into one C program (no clashing symbols: every global
/// symbol carries the model's name) and each gives its own answer.
#[test]
fn two_models_link_into_one_program() {
    let dir = scratch("two_models");
    for name in ["mlp_binary", "mlp_dropout"] {
        compile_ok(
            &model_file(&format!("{name}.keras")),
            &dir,
            &["--name", name],
        );
    }
    let src = dir.join("both.c");
    std::fs::write(
        &src,
        r#"#include <stdio.h>
#include "mlp_binary.h"
#include "mlp_dropout.h"
#define RUN(m, nin, nout) do { \
    float x[2 * nin] = {0}, y[2 * nout]; \
    for (int i = 0; i < 2 * nin; i++) x[i] = (float)(i % 7) / 7.0f; \
    m##_ctx *c = m##_create(); \
    if (m##_run(c, 2, x, y) != 0) { printf("%s\n", m##_last_error(c)); return 1; } \
    for (int i = 0; i < 2 * nout; i++) printf("%.6f\n", y[i]); \
    m##_destroy(c); } while (0)
int main(void) {
    int64_t d[8];
    int nb = mlp_binary_input_shape(0, 1, d) == 2 ? (int)d[1] : -1;
    int nd = mlp_dropout_input_shape(0, 1, d) == 2 ? (int)d[1] : -1;
    if (nb != 32 || nd != 10) { printf("unexpected input shapes %d %d\n", nb, nd); return 1; }
    RUN(mlp_binary, 32, 1);
    RUN(mlp_dropout, 10, 1);
    return 0;
}
"#,
    )
    .unwrap();
    let text = cc_run(
        &dir.join("both"),
        &[
            "-std=c99".as_ref(),
            format!("-I{}", dir.display()).as_ref(),
            src.as_os_str(),
            format!("-L{}", dir.display()).as_ref(),
            "-l:libmlp_binary.a".as_ref(),
            "-l:libmlp_dropout.a".as_ref(),
            "-lm".as_ref(),
        ],
    );
    assert_eq!(text.lines().count(), 4, "{text}");
}

/// Compiles a C program with `cc` (`args`: the sources, flags and libraries) into `exe` and
/// runs it; asserts both succeed and returns what it printed.
fn cc_run(exe: &std::path::Path, args: &[&std::ffi::OsStr]) -> String {
    let cc = std::process::Command::new("cc")
        .args(args)
        .arg("-o")
        .arg(exe)
        .output()
        .unwrap();
    assert!(
        cc.status.success(),
        "{}",
        String::from_utf8_lossy(&cc.stderr)
    );
    let run = std::process::Command::new(exe).output().unwrap();
    let text = String::from_utf8_lossy(&run.stdout).into_owned();
    assert!(run.status.success(), "{text}");
    text
}

/// `set_threads`: the batch split across threads (37 samples), and the kernels' rows split
/// across threads (1 and 2 samples, too few to split the batch), give the same bits as one
/// thread; a bad count is refused with the reason. A model whose samples cannot be computed
/// apart (a softmax across the batch) runs on threads too, its kernels split, the same bits.
#[test]
fn threads_split_the_batch_and_change_no_bit() {
    let model = load(&model_file("cnn_mnist.keras"), &LoadOptions::default()).unwrap();
    let dir = scratch("threads_cnn");
    codegen::compile(model.graph.clone(), &opts("cnn"), &dir, "").unwrap();
    let lib = CompiledModel::load(&dir.join("libcnn.so"), "cnn").unwrap();
    for batch in [37, 1, 2] {
        let x = rows(&npy(&model_file("cnn_mnist.input.npy")), batch);
        lib.set_threads(1).unwrap();
        let one = lib.run(&[&x]).unwrap();
        for threads in [2, 3, 2, 1] {
            lib.set_threads(threads).unwrap();
            for _ in 0..3 {
                let many = lib.run(&[&x]).unwrap();
                assert_eq!(
                    many[0].to_f64_vec(),
                    one[0].to_f64_vec(),
                    "batch {batch}, {threads} threads"
                );
            }
        }
    }
    let e = lib.set_threads(65).unwrap_err();
    assert!(e.contains("65 threads: use 1..64"), "{e}");

    let g = forgec_ir::text::parse(
        "graph \"g\" {\n  input %x: f32[batch,64]\n  %w: f32[64,64] = const [WEIGHTS]\n  %h: f32[batch,64] = matmul(%x, %w)\n  %y: f32[batch,64] = softmax {axis = 0, log = false}(%h)\n  output %y\n}\n"
            .replace("WEIGHTS", &literal(64 * 64, |i| ((i * 7 % 23) as f64 - 11.0) / 40.0))
            .as_str(),
    )
    .unwrap();
    let dir = scratch("threads_mix");
    codegen::compile(g.clone(), &opts("mix"), &dir, "").unwrap();
    let lib = CompiledModel::load(&dir.join("libmix.so"), "mix").unwrap();
    let xv: Vec<f32> = (0..300 * 64)
        .map(|i| ((i * 13 % 31) as f32 - 15.0) / 16.0)
        .collect();
    let x = Tensor::from_f32(vec![300, 64], xv).unwrap();
    let one = lib.run(&[&x]).unwrap();
    let want = forgec_ir::interp::run(&g, &[("x".into(), x.clone())]).unwrap();
    assert_close(&one[0], &want[0], 1e-5, "softmax across the batch");
    lib.set_threads(2).unwrap();
    let two = lib.run(&[&x]).unwrap();
    assert_eq!(two[0].to_f64_vec(), one[0].to_f64_vec(), "2 threads");
}

/// A recurrent layer's steps run on one thread whatever the kernels could do, so a model with
/// one splits its batch across threads from smaller slices (its steps' multiply-adds counted:
/// lstm_seq's 20 steps of 4 gates of 32 units over 8 inputs and the state); on 2 threads the
/// split batch gives the bits of one thread.
#[test]
fn recurrent_models_split_smaller_batches() {
    let macs = |f: &str| {
        let g = load(&model_file(f), &LoadOptions::default()).unwrap().graph;
        (
            codegen::capi::macs_per_sample(&g),
            codegen::capi::min_slice(&g),
        )
    };
    // 20 * 4 * 32 * (8 + 32) for the LSTM, 32 + 1 for its one-unit dense layer (the product
    // and the bias); 20 * 4 * 32 * 32 of it serial.
    assert_eq!(macs("lstm_seq.keras"), ((102_400 + 33, 81_920), 3));
    // No recurrent layer: slices of about 4M multiply-adds.
    let (m, s) = macs("mlp_mnist.keras");
    assert_eq!((m.1, s), (0, 4_000_000 / m.0));
    assert_eq!(macs("cnn_mnist.keras").1, 1);

    let model = load(&model_file("lstm_seq.keras"), &LoadOptions::default()).unwrap();
    let dir = scratch("threads_lstm");
    codegen::compile(model.graph.clone(), &opts("lstm"), &dir, "").unwrap();
    let lib = CompiledModel::load(&dir.join("liblstm.so"), "lstm").unwrap();
    let x = rows(&npy(&model_file("lstm_seq.input.npy")), 16);
    let one = lib.run(&[&x]).unwrap();
    lib.set_threads(2).unwrap();
    for _ in 0..3 {
        assert_eq!(
            lib.run(&[&x]).unwrap()[0].to_f64_vec(),
            one[0].to_f64_vec(),
            "2 threads"
        );
    }
}

/// A batch runs in slices whose largest op keeps its inputs and output in about 2 MB (unless
/// the weights, read again by every slice, would cost more): mobilenetv2 in slices of 2
/// samples (its widest ops move about 250K values per sample), cnn_mnist of 12, a dense
/// model and the LSTM whole at batch 32. cnn_mnist at batch 37 (slices 12, 12, 12, 1 on one
/// thread; taken in turns on two and three) gives each sample the bits of batch 1.
#[test]
fn batches_run_in_cache_sized_slices() {
    let slice = |f: &str| {
        let g = load(&model_file(f), &LoadOptions::default()).unwrap().graph;
        codegen::capi::cache_slice(&g)
    };
    assert_eq!(slice("mobilenetv2_035_96.keras"), 2);
    assert_eq!(slice("cnn_mnist.keras"), 12);
    assert!(slice("mlp_mnist.keras") > 32);
    assert!(slice("lstm_seq.keras") > 32);

    let model = load(&model_file("cnn_mnist.keras"), &LoadOptions::default()).unwrap();
    let dir = scratch("slices_cnn");
    codegen::compile(model.graph.clone(), &opts("cnn"), &dir, "").unwrap();
    let lib = CompiledModel::load(&dir.join("libcnn.so"), "cnn").unwrap();
    let x = rows(&npy(&model_file("cnn_mnist.input.npy")), 37);
    let each: Vec<f64> = (0..37)
        .flat_map(|r| lib.run(&[&rows_from(&x, r, 1)]).unwrap()[0].to_f64_vec())
        .collect();
    for threads in [1, 2, 3] {
        lib.set_threads(threads).unwrap();
        assert_eq!(
            lib.run(&[&x]).unwrap()[0].to_f64_vec(),
            each,
            "{threads} threads"
        );
    }
}

/// `--weights external`: the constants go to NAME.weights, which the library maps when it is
/// loaded (beside the library); the outputs are the same bits as with embedded weights; a
/// missing or foreign weights file makes runs fail with the place looked at, never a crash.
#[test]
fn external_weights_are_mapped_at_load() {
    let model = load(&model_file("cnn_mnist.keras"), &LoadOptions::default()).unwrap();
    let x = rows(&npy(&model_file("cnn_mnist.input.npy")), 5);
    let embedded = scratch("weights_embedded");
    codegen::compile(model.graph.clone(), &opts("emb"), &embedded, "").unwrap();
    let want = CompiledModel::load(&embedded.join("libemb.so"), "emb")
        .unwrap()
        .run(&[&x])
        .unwrap();
    let build = |what: &str| {
        let dir = scratch(&format!("weights_external_{what}"));
        let mut o = opts("ext");
        o.external_weights = true;
        let files = codegen::compile(model.graph.clone(), &o, &dir, "").unwrap();
        assert!(files.contains(&dir.join("ext.weights")), "{files:?}");
        dir
    };
    let dir = build("ok");
    let so = std::fs::metadata(dir.join("libext.so")).unwrap().len();
    let so_embedded = std::fs::metadata(embedded.join("libemb.so")).unwrap().len();
    assert!(so + 60_000 < so_embedded, "{so} vs {so_embedded} bytes");
    let lib = CompiledModel::load(&dir.join("libext.so"), "ext").unwrap();
    assert_eq!(
        lib.run(&[&x]).unwrap()[0].to_f64_vec(),
        want[0].to_f64_vec()
    );
    let meta = std::fs::read_to_string(dir.join("ext.json")).unwrap();
    assert!(meta.contains("\"weights\": \"external\""), "{meta}");

    let dir = build("missing");
    std::fs::remove_file(dir.join("ext.weights")).unwrap();
    let e = CompiledModel::load(&dir.join("libext.so"), "ext")
        .unwrap()
        .run(&[&x])
        .unwrap_err();
    assert!(
        e.contains("cannot open the weights file") && e.contains("EXT_WEIGHTS"),
        "{e}"
    );

    let dir = build("foreign");
    // Another build's file of the same size: its header records another hash.
    let mut bytes = std::fs::read(dir.join("ext.weights")).unwrap();
    bytes[20] ^= 1;
    std::fs::write(dir.join("ext.weights"), bytes).unwrap();
    let e = CompiledModel::load(&dir.join("libext.so"), "ext")
        .unwrap()
        .run(&[&x])
        .unwrap_err();
    assert!(e.contains("holds other weights"), "{e}");
}

/// The compiled f32 exp, tanh, sigmoid and erf (polynomials, no libm calls, so loops
/// vectorize) against the interpreter (f64): within 1e-6 relative over a sweep (measured:
/// 1.2e-7 exp, 2.4e-7 tanh, 1.6e-7 sigmoid, 2.4e-7 erf),
/// exact at the edges (0, -0, infinities, NaN, overflow to inf; subnormal results within a
/// subnormal of the truth), for this machine and for the portable x86-64-v2, where the
/// polynomials' multiply-adds have no FMA instruction: its assembly calls none of libm's
/// `fmaf`, `expf`, `tanhf` or `erff` (a loop of such calls neither vectorizes nor runs fast:
/// lstm_seq's v2 library made 210 `fmaf` calls and ran 8.6x slower than v3's).
#[test]
fn compiled_transcendentals_are_accurate_and_vectorisable() {
    let src = "graph \"g\" {\n  input %x: f32[batch,1]\n  %e: f32[batch,1] = exp(%x)\n  %t: f32[batch,1] = tanh(%x)\n  %s: f32[batch,1] = sigmoid(%x)\n  %f: f32[batch,1] = erf(%x)\n  output %e, %t, %s, %f\n}\n";
    let g = forgec_ir::text::parse(src).unwrap();
    let mut xs: Vec<f32> = (-2000..=2000).map(|i| i as f32 * 0.045).collect();
    xs.extend([
        0.0,
        -0.0,
        1e-5,
        -3e-4,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        89.0,
        -200.0,
        88.5,
    ]);
    let x = Tensor::from_f32(vec![xs.len(), 1], xs.clone()).unwrap();
    let want = forgec_ir::interp::run(&g, &[("x".into(), x.clone())]).unwrap();
    for cpu in ["native", "x86-64-v2"] {
        if cpu != "native" && std::env::consts::ARCH != "x86_64" {
            continue;
        }
        let dir = scratch(&format!("transcendental_{cpu}"));
        let mut o = opts("tr");
        o.cpu = Some(cpu.into());
        codegen::compile(g.clone(), &o, &dir, "").unwrap();
        let lib = CompiledModel::load(&dir.join("libtr.so"), "tr").unwrap();
        let got = lib.run(&[&x]).unwrap();
        for (k, what) in ["exp", "tanh", "sigmoid", "erf"].iter().enumerate() {
            let tol = 1e-6;
            let (a, b) = (got[k].to_f64_vec(), want[k].to_f64_vec());
            let mut worst = 0.0f64;
            for i in 0..xs.len() {
                let (a, b) = (a[i], b[i]);
                let ok = if b.is_nan() {
                    a.is_nan()
                } else if b.is_infinite() || b == 0.0 {
                    a == b
                } else {
                    // (Subnormal results have fewer bits, and sigmoid's may flush to zero.)
                    let r = ((a - b) / b).abs();
                    if b.abs() >= 1.18e-38 {
                        worst = worst.max(r);
                    }
                    r <= tol || (b.abs() < 1.18e-38 && (a - b).abs() < 1.18e-38)
                };
                assert!(ok, "{cpu}: {what}({}) = {a}, want {b}", xs[i]);
            }
            eprintln!("{cpu}: {what} within {worst:.2e} relative");
        }
        let mut o = opts("tr");
        o.cpu = Some(cpu.into());
        o.emit = Emit::Asm;
        codegen::compile(g.clone(), &o, &dir, "").unwrap();
        let asm = std::fs::read_to_string(dir.join("tr.s")).unwrap();
        for f in ["fmaf", "expf", "tanhf", "erff"] {
            assert!(
                !asm.lines().any(|l| l.contains("call") && l.contains(f)),
                "{cpu}: the assembly calls {f}"
            );
        }
    }
}

/// Channels-last convolutions with strides, dilations and uneven padding, run by the tiled
/// kernel reading the input in place (the windows' padding read as zeros), against the
/// interpreter; a batch that leaves rows over, and a channel count that leaves columns over;
/// the batch symbolic, and fixed (as many ONNX exports have it).
#[test]
fn strided_dilated_padded_convolutions_compile() {
    let w: Vec<String> = (0..3 * 5 * 3 * 7)
        .map(|i| format!("{:.3}", ((i * 37 % 101) as f64 - 50.0) / 50.0))
        .collect();
    for (k, (strides, dilations, pads, batch)) in [
        ("[2, 1]", "[2, 3]", "[1, 3, 2, 0]", "batch"),
        ("[1, 1]", "[1, 1]", "[1, 1, 1, 1]", "batch"),
        ("[3, 2]", "[1, 1]", "[0, 0, 0, 0]", "batch"),
        ("[2, 1]", "[2, 3]", "[1, 3, 2, 0]", "7"),
    ]
    .iter()
    .enumerate()
    {
        let src = format!(
            "graph \"g\" {{\n  input %x: f32[{batch},11,13,3]\n  %w: f32[3,5,3,7] = const [{}]\n  %y: f32[{batch},?,?,7] = conv {{strides = {strides}, dilations = {dilations}, pads = {pads}, groups = 1, layout = last}}(%x, %w)\n  output %y\n}}\n",
            w.join(", ")
        );
        let mut g = forgec_ir::text::parse(&src.replace("?,?", "1,1")).unwrap();
        forgec_passes::run_pipeline(&mut g, &["shape-inference"]).unwrap();
        let dir = scratch(&format!("conv_geometry_{k}"));
        codegen::compile(g.clone(), &opts("cv"), &dir, "").unwrap();
        let lib = CompiledModel::load(&dir.join("libcv.so"), "cv").unwrap();
        let n = 7 * 11 * 13 * 3;
        let xv: Vec<f32> = (0..n)
            .map(|i| ((i * 13 % 29) as f32 - 14.0) / 7.0)
            .collect();
        let x = Tensor::from_f32(vec![7, 11, 13, 3], xv).unwrap();
        let got = lib.run(&[&x]).unwrap();
        let want = forgec_ir::interp::run(&g, &[("x".into(), x)]).unwrap();
        assert_close(
            &got[0],
            &want[0],
            1e-5,
            &format!("conv {strides} {dilations} {pads}"),
        );
    }
}

/// Chains of elementwise ops run as one loop nest: `x * 2 + b` (b one value per column), then
/// `tanh(.) * x` and a cast of that, is one `linalg.generic` in one function, and so is
/// `sigmoid(x) * x`; a value used twice (`%u`, a graph output too) ends its chain. (The golden
/// case runs it against the interpreter.)
#[test]
fn elementwise_chains_fuse_into_one_loop_nest() {
    // The graph (and its run against the interpreter, and its MLIR snapshots) is a golden case.
    let src = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/golden/compile/elementwise_chains.ir"),
    )
    .unwrap();
    let g = forgec_ir::text::parse(&src).unwrap();
    let dir = scratch("elementwise_chains");
    let mut o = opts("ew");
    o.emit = Emit::Mlir;
    codegen::compile(g.clone(), &o, &dir, "").unwrap();
    let mlir = std::fs::read_to_string(dir.join("ew.mlir")).unwrap();
    let funcs: Vec<&str> = mlir
        .split("func.func")
        .skip(1)
        .filter(|f| f.contains("linalg.generic"))
        .collect();
    // Three loop nests: mul-add-tanh-mul-cast, sigmoid-mul, neg.
    assert_eq!(funcs.len(), 3, "{mlir}");
    for f in &funcs {
        assert_eq!(f.matches("linalg.generic").count(), 1, "{f}");
    }
    assert!(funcs.iter().any(|f| f.contains("arith.extf")
        && f.contains("arith.addf")
        && f.matches("arith.mulf").count() >= 2));
}

/// `x [batch, 300] x w [300, n] + b`, then ReLU, compiled as `name`: against the interpreter at
/// each batch size on one thread, and the same bits on each of `threads`. Returns the MLIR for
/// x86-64-v3 and for x86-64-v4 (its kernels differ with the vector width).
fn dense_relu_matches(name: &str, n: usize, batches: &[usize], threads: &[usize]) -> [String; 2] {
    let k = 300;
    let w = literal(k * n, |i| ((i * 37 % 101) as f64 - 50.0) / 500.0);
    let b = literal(n, |i| (i % 7) as f64 / 10.0 - 0.3);
    let src = format!(
        "graph \"g\" {{\n  input %x: f32[batch,{k}]\n  %w: f32[{k},{n}] = const [{w}]\n  %b: f32[{n}] = const [{b}]\n  %h: f32[batch,{n}] = matmul(%x, %w)\n  %a: f32[batch,{n}] = add(%h, %b)\n  %y: f32[batch,{n}] = relu(%a)\n  output %y\n}}\n"
    );
    let g = forgec_ir::text::parse(&src).unwrap();
    let dir = scratch(name);
    let mlir = ["x86-64-v3", "x86-64-v4"].map(|cpu| {
        let mut o = opts(name);
        o.emit = Emit::Mlir;
        o.cpu = Some(cpu.into());
        codegen::compile(g.clone(), &o, &dir, "").unwrap();
        std::fs::read_to_string(dir.join(format!("{name}.mlir"))).unwrap()
    });
    codegen::compile(g.clone(), &opts(name), &dir, "").unwrap();
    let lib = CompiledModel::load(&dir.join(format!("lib{name}.so")), name).unwrap();
    for &batch in batches {
        let xv: Vec<f32> = (0..batch * k)
            .map(|i| ((i * 13 % 29) as f32 - 14.0) / 7.0)
            .collect();
        let x = Tensor::from_f32(vec![batch, k], xv).unwrap();
        let want = forgec_ir::interp::run(&g, &[("x".into(), x.clone())]).unwrap();
        lib.set_threads(1).unwrap();
        let one = lib.run(&[&x]).unwrap();
        assert_close(&one[0], &want[0], 1e-5, &format!("{name}, batch {batch}"));
        for &t in threads {
            lib.set_threads(t).unwrap();
            let many = lib.run(&[&x]).unwrap();
            assert_eq!(
                many[0].to_f64_vec(),
                one[0].to_f64_vec(),
                "{name}, batch {batch}, {t} threads"
            );
        }
    }
    mlir
}

/// A dense layer at batch 1 has one row: its columns are split across the threads instead (the
/// last panel masked: 1000 columns are not whole vectors), and a batch of 5 splits both rows
/// and columns on 4 threads. Bias and ReLU (the fused epilogue) read the right columns in every
/// chunk; the bits are those of one thread, the values the interpreter's.
#[test]
fn kernels_split_columns_when_rows_are_few() {
    dense_relu_matches("cols", 1000, &[1, 5], &[2, 4]);
}

/// A matmul whose A is read by many column panels packs A's rows into micro-panels first:
/// full tiles from the packed copy, the rows left over (1 to 5: blocks of 4, 2 and 1 rows) and
/// the masked last panel from A itself; against the interpreter, and the same bits on 1, 2 and
/// 3 threads (each thread packs its own rows).
#[test]
fn matmuls_with_packed_rows_match_the_interpreter() {
    let [v3, v4] = dense_relu_matches("pk", 1001, &[6, 8, 9, 11, 13, 64], &[2, 3]);
    // Micro-panels of the tile's rows: 6 rows for AVX2's 16-column tiles, 8 for AVX-512's 32.
    assert!(
        v3.contains("tensor<?x300x6xf32>"),
        "x86-64-v3: A is not packed"
    );
    assert!(
        v4.contains("tensor<?x300x8xf32>"),
        "x86-64-v4: A is not packed"
    );
}

/// A scratch buffer that cannot be allocated makes the run return `NAME_ERR_MEMORY` with the
/// reason, not crash, and the context still runs the next call: a C program under a 160 MB
/// address-space limit asks for a batch whose hidden layer needs about 330 MB (a softmax across
/// the batch keeps it in one piece), then for 10.
#[test]
fn out_of_memory_is_a_status_code() {
    let w1 = literal(16 * 2048, |i| (i % 9) as f64 / 10.0 - 0.4);
    let w2 = literal(2048 * 4, |i| (i % 5) as f64 / 10.0 - 0.2);
    let src = format!(
        "graph \"g\" {{\n  input %x: f32[batch,16]\n  %w1: f32[16,2048] = const [{w1}]\n  %w2: f32[2048,4] = const [{w2}]\n  %h: f32[batch,2048] = matmul(%x, %w1)\n  %r: f32[batch,2048] = relu(%h)\n  %y: f32[batch,4] = matmul(%r, %w2)\n  %s: f32[batch,4] = softmax {{axis = 0, log = false}}(%y)\n  output %s\n}}\n"
    );
    let g = forgec_ir::text::parse(&src).unwrap();
    let dir = scratch("oom");
    codegen::compile(g, &opts("oom"), &dir, "").unwrap();
    std::fs::write(
        dir.join("main.c"),
        "#include \"oom.h\"\n#include <stdio.h>\n#include <stdlib.h>\nint main(void) {\n    oom_ctx *ctx = oom_create();\n    int64_t big = 40000;\n    float *x = calloc(big * 16, 4), *y = calloc(big * 4, 4);\n    if (!ctx || !x || !y) { puts(\"setup failed\"); return 3; }\n    int rc = oom_run(ctx, big, x, y);\n    printf(\"%d %s\\n\", rc, oom_last_error(ctx));\n    printf(\"%d\\n\", oom_run(ctx, 10, x, y));\n    oom_destroy(ctx);\n    return 0;\n}\n",
    )
    .unwrap();
    let exe = dir.join("oom_demo");
    let cc = std::process::Command::new("cc")
        .args(["-std=c99", "-Wall", "-Werror", "-I"])
        .arg(&dir)
        .arg(dir.join("main.c"))
        .arg("-L")
        .arg(&dir)
        .args(["-l:liboom.a", "-lm", "-lpthread", "-o"])
        .arg(&exe)
        .output()
        .unwrap();
    assert!(
        cc.status.success(),
        "{}",
        String::from_utf8_lossy(&cc.stderr)
    );
    let run = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("ulimit -v 160000 && exec '{}'", exe.display()))
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(
        lines[0].starts_with("5 out of memory") && lines[0].contains("batch 40000"),
        "{out}"
    );
    assert_eq!(lines[1], "0", "{out}");
}

/// Transposed convolutions (constant weights) compile as zero-stuffing, padding or cropping
/// and a convolution with the flipped kernel (`lower-conv-transpose`): strides, dilations,
/// padding beyond the kernel's reach, output padding, groups, both layouts, 1-D, 2-D and 3-D,
/// against the interpreter's scatter.
#[test]
fn transposed_convolutions_compile() {
    // x; w; strides; dilations; pads; output padding; layout; groups
    let cases = [
        "[batch,5,4,3]; [3,3,2,3]; [2, 2]; [1, 1]; [0, 0, 0, 0]; [0, 0]; last; 1",
        "[batch,5,4,3]; [3,2,2,3]; [3, 2]; [2, 1]; [1, 2, 0, 1]; [1, 0]; last; 1",
        "[batch,5,4,3]; [3,3,2,3]; [2, 2]; [1, 1]; [3, 3, 2, 2]; [1, 1]; last; 1",
        "[batch,3,5,4]; [3,2,3,3]; [2, 1]; [1, 1]; [1, 0, 1, 1]; [0, 0]; first; 1",
        "[batch,7,3]; [4,2,3]; [2]; [1]; [1, 2]; [1]; last; 1",
        "[batch,4,5,4]; [3,3,3,4]; [2, 2]; [1, 1]; [1, 1, 0, 1]; [0, 1]; last; 2",
        "[batch,4,5,4]; [4,3,2,2]; [1, 2]; [2, 1]; [0, 0, 0, 0]; [0, 0]; first; 2",
        "[batch,3,4,3,2]; [2,2,3,3,2]; [2, 1, 2]; [1, 1, 1]; [0, 1, 1, 0, 0, 0]; [1, 0, 0]; last; 1",
    ];
    for (k, case) in cases.iter().enumerate() {
        let f: Vec<&str> = case.split("; ").collect();
        let (xs, ws, strides, dil, pads, outpad, layout, groups) =
            (f[0], f[1], f[2], f[3], f[4], f[5], f[6], f[7]);
        let wdims: Vec<usize> = ws
            .trim_matches(|c| c == '[' || c == ']')
            .split(',')
            .map(|d| d.trim().parse().unwrap())
            .collect();
        let wn: usize = wdims.iter().product();
        let w = literal(wn, |i| ((i * 29 % 41) as f64 - 20.0) / 20.0);
        let rank = xs.matches(',').count() + 1;
        let placeholder = vec!["1"; rank - 1].join(",");
        let src = format!(
            "graph \"g\" {{\n  input %x: f32{xs}\n  %w: f32{ws} = const [{}]\n  %y: f32[batch,{placeholder}] = conv_transpose {{strides = {strides}, dilations = {dil}, pads = {pads}, groups = {groups}, layout = {layout}, output_padding = {outpad}}}(%x, %w)\n  output %y\n}}\n",
            w
        );
        let mut g = forgec_ir::text::parse(&src).unwrap();
        forgec_passes::run_pipeline(&mut g, &["shape-inference"]).unwrap();
        let dir = scratch(&format!("conv_transpose_{k}"));
        codegen::compile(g.clone(), &opts("ct"), &dir, "").unwrap();
        let lib = CompiledModel::load(&dir.join("libct.so"), "ct").unwrap();
        let xdims: Vec<usize> = std::iter::once(2)
            .chain(
                xs.trim_matches(|c| c == '[' || c == ']')
                    .split(',')
                    .skip(1)
                    .map(|d| d.trim().parse::<usize>().unwrap()),
            )
            .collect();
        let n: usize = xdims.iter().product();
        let xv: Vec<f32> = (0..n)
            .map(|i| ((i * 13 % 23) as f32 - 11.0) / 8.0)
            .collect();
        let x = Tensor::from_f32(xdims, xv).unwrap();
        let got = lib.run(&[&x]).unwrap();
        let want = forgec_ir::interp::run(&g, &[("x".into(), x)]).unwrap();
        assert_eq!(got[0].shape(), want[0].shape(), "case {k}");
        assert_close(&got[0], &want[0], 1e-5, &format!("case {k}"));
    }
}

/// Keras's UpSampling2D with `bilinear` and `bicubic` interpolation imports as a half-pixel
/// Resize: checked against TensorFlow's resize formulas written out here (half-pixel centers,
/// source indices clamped at the border; Keys' cubic with a = -0.5), then compiled against the
/// interpreter. (No TensorFlow here to run Keras itself.)
#[test]
fn keras_bilinear_and_bicubic_upsampling() {
    let (h, w, c, sy, sx) = (3usize, 4usize, 2usize, 2usize, 3usize);
    // TF's weights for output position `o` of an axis of `n` scaled by `s`: (index, weight).
    let linear = |o: usize, n: usize, s: usize| -> Vec<(usize, f64)> {
        let x = (o as f64 + 0.5) / s as f64 - 0.5;
        let f = x.floor();
        let (lo, hi) = ((f.max(0.0)) as usize, (x.ceil() as usize).min(n - 1));
        vec![(lo, 1.0 - (x - f)), (hi, x - f)]
    };
    let cubic = |o: usize, n: usize, s: usize| -> Vec<(usize, f64)> {
        let a = -0.5;
        let k = |t: f64| {
            let t = t.abs();
            if t <= 1.0 {
                ((a + 2.0) * t - (a + 3.0)) * t * t + 1.0
            } else if t < 2.0 {
                ((a * t - 5.0 * a) * t + 8.0 * a) * t - 4.0 * a
            } else {
                0.0
            }
        };
        let x = (o as f64 + 0.5) / s as f64 - 0.5;
        let f = x.floor();
        (-1..3)
            .map(|j| {
                let i = (f as i64 + j).clamp(0, n as i64 - 1) as usize;
                (i, k(x - (f + j as f64)))
            })
            .collect()
    };
    for (interp, taps) in [
        (
            "bilinear",
            &linear as &dyn Fn(usize, usize, usize) -> Vec<(usize, f64)>,
        ),
        ("bicubic", &cubic),
    ] {
        let json = format!(
            r#"{{"module": "keras", "class_name": "Sequential", "config": {{"name": "up", "layers": [
  {{"module": "keras.layers", "class_name": "InputLayer", "config": {{"batch_shape": [null, {h}, {w}, {c}], "dtype": "float32", "name": "x"}}}},
  {{"module": "keras.layers", "class_name": "UpSampling2D", "config": {{"name": "up", "size": [{sy}, {sx}], "data_format": "channels_last", "interpolation": "{interp}"}}}}]}}}}"#
        );
        let dir = scratch(&format!("upsampling_{interp}"));
        let path = dir.join("up.json");
        std::fs::write(&path, json).unwrap();
        // A model without weights needs no weights file.
        let g = load(&path, &LoadOptions::default()).unwrap().graph;
        let b = 2;
        let xv: Vec<f32> = (0..b * h * w * c)
            .map(|i| ((i * 11 % 13) as f32 - 6.0) / 3.0)
            .collect();
        let x = Tensor::from_f32(vec![b, h, w, c], xv.clone()).unwrap();
        let (oh, ow) = (h * sy, w * sx);
        let mut want = vec![0f32; b * oh * ow * c];
        for n in 0..b {
            for y in 0..oh {
                for xo in 0..ow {
                    for ch in 0..c {
                        let mut v = 0.0;
                        for (iy, wy) in taps(y, h, sy) {
                            for (ix, wx) in taps(xo, w, sx) {
                                v += wy * wx * xv[((n * h + iy) * w + ix) * c + ch] as f64;
                            }
                        }
                        want[((n * oh + y) * ow + xo) * c + ch] = v as f32;
                    }
                }
            }
        }
        let want = Tensor::from_f32(vec![b, oh, ow, c], want).unwrap();
        let interp_out = forgec_ir::interp::run(&g, &[("x".into(), x.clone())]).unwrap();
        assert_close(
            &interp_out[0],
            &want,
            1e-6,
            &format!("{interp}: interpreter vs TF's formula"),
        );
        codegen::compile(g.clone(), &opts("up"), &dir, "").unwrap();
        let lib = CompiledModel::load(&dir.join("libup.so"), "up").unwrap();
        let got = lib.run(&[&x]).unwrap();
        assert_close(
            &got[0],
            &want,
            1e-6,
            &format!("{interp}: compiled vs TF's formula"),
        );
    }
}

/// Model names that are not C names, that collide once made C names, or that are C keywords
/// or the wrapper's own names (`ctx`, `batch`, `rc`, a libc function): the library builds, the
/// header compiles in a C program that calls it, and the results are right.
#[test]
fn c_names_from_any_model_names() {
    let src = "graph \"g\" {
  input %\"a.b\": f32[batch,3]
  input %a_b: f32[batch,3]
  %int: f32[batch,3] = add(%\"a.b\", %a_b)
  %ctx: f32[batch,3] = mul(%\"a.b\", %a_b)
  %rc: f32[batch,3] = sub(%\"a.b\", %a_b)
  %abort: f32[batch,3] = relu(%rc)
  output %int, %ctx, %rc, %abort
}
";
    let g = forgec_ir::text::parse(src).unwrap();
    let dir = scratch("c_names");
    codegen::compile(g, &opts("cn"), &dir, "").unwrap();
    let header = std::fs::read_to_string(dir.join("cn.h")).unwrap();
    assert!(
        header.contains("int cn_run(cn_ctx *ctx, int64_t batch, const float *a_b, const float *a_b_, float *int_, float *ctx_, float *rc, float *abort);"),
        "{header}"
    );
    let prog = dir.join("main.c");
    std::fs::write(
        &prog,
        "#include <stdio.h>\n#include \"cn.h\"\nint main(void) {\n  float x[3] = {1, 2, 3}, y[3] = {4, 5, 7}, s[3], p[3], d[3], r[3];\n  cn_ctx *c = cn_create();\n  if (cn_run(c, 1, x, y, s, p, d, r) != CN_OK) return 1;\n  printf(\"%g %g %g %g\\n\", s[2], p[2], d[2], r[0]);\n  cn_destroy(c);\n  return 0;\n}\n",
    )
    .unwrap();
    let text = cc_run(
        &dir.join("main"),
        &[
            "-std=c99".as_ref(),
            "-Wall".as_ref(),
            "-Werror".as_ref(),
            prog.as_os_str(),
            format!("-I{}", dir.display()).as_ref(),
            dir.join("libcn.a").as_os_str(),
            "-lm".as_ref(),
            "-lpthread".as_ref(),
        ],
    );
    assert_eq!(text.trim(), "10 21 -4 0");
}

/// 3x3 stride-1 convolutions with 16 or more channels (a multiple of the vector width) run by
/// Winograd F(2x2, 3x3): even and odd outputs (the last tiles half outside), no padding,
/// "same" and lopsided padding, a bias and ReLU fused into the output transform, images fewer
/// than threads (a thread takes blocks of an image), a fixed batch, an empty batch; an image of
/// too few tiles runs the direct sums. The results match the
/// interpreter's direct sums within 1e-5 of the largest output and do not change with threads.
#[test]
fn winograd_convolutions_match_the_interpreter() {
    for (k, (hw, cin, cout, pads, batch, tail)) in [
        ((30, 12), 16, 24, "[1, 1, 1, 1]", "batch", true),
        ((13, 11), 24, 16, "[0, 0, 0, 0]", "batch", false),
        ((10, 11), 16, 16, "[0, 2, 1, 0]", "batch", true),
        ((40, 6), 32, 48, "[1, 1, 1, 1]", "3", true),
        // 3x3 output tiles: too few to pay for the transformed kernel, direct sums.
        ((8, 8), 32, 32, "[0, 0, 0, 0]", "batch", true),
    ]
    .into_iter()
    .enumerate()
    {
        let (h, w) = hw;
        let wv = literal(9 * cin * cout, |i| ((i * 37 % 101) as f64 - 50.0) / 120.0);
        let bv = literal(cout, |i| ((i * 7 % 11) as f64 - 5.0) / 4.0);
        let epilogue = if tail {
            format!("  %b: f32[{cout}] = const [{bv}]\n  %z: f32[{batch},?,?,{cout}] = add(%c, %b)\n  %y: f32[{batch},?,?,{cout}] = relu(%z)\n")
        } else {
            format!("  %y: f32[{batch},?,?,{cout}] = neg(%c)\n")
        };
        let src = format!(
            "graph \"g\" {{\n  input %x: f32[{batch},{h},{w},{cin}]\n  %w: f32[3,3,{cin},{cout}] = const [{wv}]\n  %c: f32[{batch},?,?,{cout}] = conv {{strides = [1, 1], dilations = [1, 1], pads = {pads}, groups = 1, layout = last}}(%x, %w)\n{epilogue}  output %y\n}}\n"
        );
        let mut g = forgec_ir::text::parse(&src.replace("?,?", "1,1")).unwrap();
        forgec_passes::run_pipeline(&mut g, &["shape-inference"]).unwrap();
        let dir = scratch(&format!("winograd_{k}"));
        // The generated code is looked at for a named CPU (the host's vector width would
        // change the panels): AVX2 (8 lanes, panels of 16) and AVX-512 (16 lanes, panels of 32;
        // Winograd only when both channel counts are multiples of 16).
        for (cpu, lanes) in [("x86-64-v3", 8usize), ("x86-64-v4", 16)] {
            let mut o = opts("wg");
            o.emit = Emit::Mlir;
            o.cpu = Some(cpu.into());
            codegen::compile(g.clone(), &o, &dir, "").unwrap();
            let mlir = std::fs::read_to_string(dir.join("wg.mlir")).unwrap();
            assert_eq!(
                mlir.contains(&format!("tensor<16x{}x{cin}x", cout.div_ceil(2 * lanes))),
                k < 4 && cin % lanes == 0 && cout % lanes == 0,
                "case {k}, {cpu}: the kernel stored transformed or not"
            );
        }
        codegen::compile(g.clone(), &opts("wg"), &dir, "").unwrap();
        let lib = CompiledModel::load(&dir.join("libwg.so"), "wg").unwrap();
        for n in [1usize, 3, 0] {
            let xv: Vec<f32> = (0..n * h * w * cin)
                .map(|i| ((i * 13 % 29) as f32 - 14.0) / 7.0)
                .collect();
            let x = Tensor::from_f32(vec![n, h, w, cin], xv).unwrap();
            if batch != "batch" && n.to_string() != batch {
                continue;
            }
            lib.set_threads(1).unwrap();
            let got = lib.run(&[&x]).unwrap();
            if n == 0 {
                assert_eq!(got[0].shape()[0], 0, "case {k}: an empty batch");
                continue;
            }
            let want = forgec_ir::interp::run(&g, &[("x".into(), x.clone())]).unwrap();
            assert_close(
                &got[0],
                &want[0],
                1e-5,
                &format!("winograd case {k}, batch {n}"),
            );
            lib.set_threads(2).unwrap();
            let two = lib.run(&[&x]).unwrap();
            assert_eq!(
                two[0].to_f64_vec(),
                got[0].to_f64_vec(),
                "case {k}, batch {n}: 2 threads"
            );
        }
    }
}

/// `forgec bench` times the library call per batch size and thread count and writes one JSON
/// record each (batch, threads, a median no larger than its p90, runs).
#[test]
fn bench_writes_a_record_per_batch_and_thread_count() {
    let dir = scratch("bench_json");
    let json = dir.join("b.json");
    let out = forgec(&[
        "bench",
        model_file("mlp_mnist.keras").to_str().unwrap(),
        "--batch",
        "1,5",
        "--threads",
        "1,2",
        "--seconds",
        "0.05",
        "--json",
        json.to_str().unwrap(),
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let recs = v
        .as_array()
        .or_else(|| v["records"].as_array())
        .expect("a list of records");
    let mut seen: Vec<(u64, u64)> = recs
        .iter()
        .map(|r| {
            let (med, p90) = (
                r["median_ms"].as_f64().unwrap(),
                r["p90_ms"].as_f64().unwrap(),
            );
            assert!(med > 0.0 && med <= p90, "{r}");
            assert!(r["runs"].as_u64().unwrap() >= 10, "{r}");
            (r["batch"].as_u64().unwrap(), r["threads"].as_u64().unwrap())
        })
        .collect();
    seen.sort();
    assert_eq!(seen, vec![(1, 1), (1, 2), (5, 1), (5, 2)]);
}

/// `--compare onnxruntime` runs the comparison engine once per round between forgec's own
/// runs and takes the median over all its runs. A stand-in for Python answers every case with
/// runs of 1, 2 and 3 ms (and 4 and 5 ms at batch 32) each round: the medians are 2 ms over
/// 15 runs and 3 ms over 25. A Python that cannot start is said with the fix.
#[test]
fn bench_compare_takes_turns_with_the_other_engine() {
    let dir = scratch("bench_compare");
    let fake = dir.join("python");
    std::fs::write(
        &fake,
        "#!/usr/bin/env python3\nimport json, sys\nspec = json.load(open(sys.argv[3]))\n\
         assert sys.argv[2].endswith('mlp_mnist.onnx') and spec['seconds'] > 0\n\
         print(json.dumps([{'batch': r['batch'], 'threads': t, 'times_ms': [1.0, 2.0, 3.0] + \
         ([4.0, 5.0] if r['batch'] == 32 else [])} for t in spec['threads'] for r in spec['runs']]))\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let json = dir.join("b.json");
    let model = model_file("mlp_mnist.keras");
    let args = |python: &str| {
        forgec(&[
            "bench",
            model.to_str().unwrap(),
            "--batch",
            "1,32",
            "--threads",
            "1,2",
            "--seconds",
            "0.05",
            "--compare",
            "onnxruntime",
            "--python",
            python,
            "--json",
            json.to_str().unwrap(),
        ])
    };
    let out = args(fake.to_str().unwrap());
    assert_eq!(out.code, 0, "{}", out.stderr);
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let recs = v["records"].as_array().unwrap();
    assert_eq!(recs.len(), 4);
    for r in recs {
        let (ort, want) = if r["batch"] == 32 {
            (3.0, 25)
        } else {
            (2.0, 15)
        };
        assert_eq!(r["ort_median_ms"].as_f64(), Some(ort), "{r}");
        assert_eq!(r["ort_runs"].as_u64(), Some(want), "{r}");
        let ratio = r["median_ms"].as_f64().unwrap() / ort;
        assert!(
            (r["ratio_to_ort"].as_f64().unwrap() - ratio).abs() < 1e-12,
            "{r}"
        );
    }
    let out = args("/nonexistent/python");
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains("cannot start /nonexistent/python")
            && out.stderr.contains("scripts/bench.sh"),
        "{}",
        out.stderr
    );
}

/// The C the library is built from (the wrapper template filled for a model, and the header)
/// compiles as C99 and C11 with every common warning an error: for Keras and ONNX models with
/// one and two inputs and outputs, integer inputs checked as indices, a recurrent layer, a model
/// with no weights and one with a scalar output; weights embedded and external; one thread and
/// a default of two.
#[test]
fn the_c_wrapper_compiles_cleanly() {
    let graph = |src: &str| forgec_ir::text::parse(src).unwrap();
    let model = |f: &str| {
        forgec::load_any(&model_file(f), &LoadOptions::default())
            .unwrap()
            .into_graph()
    };
    let cases: Vec<(&str, forgec_ir::Graph)> = vec![
        ("cnn_mnist", model("cnn_mnist.keras")),
        ("two_in_two_out", model("functional_two_in_two_out.onnx")),
        ("text_embed", model("text_embed.keras")),
        ("lstm_seq", model("lstm_seq.keras")),
        (
            "no_weights",
            graph("graph \"g\" {\n  input %x: f32[batch,3]\n  %y: f32[batch,3] = relu(%x)\n  output %y\n}\n"),
        ),
        (
            "scalar_out",
            graph("graph \"g\" {\n  input %x: f32[4]\n  %s: f32[] = reduce {kind = sum, axes = [0], keepdims = false}(%x)\n  output %s\n}\n"),
        ),
    ];
    let dir = scratch("c_wrapper");
    for (name, g) in cases {
        // A portable library's levels and dispatcher too, with each weights placement.
        for (external, threads, cpu) in [
            (false, 1, "x86-64-v3"),
            (true, 2, "x86-64-v3"),
            (false, 1, "portable"),
            (true, 1, "portable"),
        ] {
            let mut o = opts(name);
            o.cpu = Some(cpu.into());
            o.external_weights = external;
            o.threads = threads;
            let files = codegen::c_sources(g.clone(), &o).unwrap_or_else(|e| panic!("{name}: {e}"));
            let d = dir.join(format!(
                "{name}-{}-t{threads}-{cpu}",
                if external { "external" } else { "embedded" }
            ));
            std::fs::create_dir_all(&d).unwrap();
            let mut sources = Vec::new();
            for (file, text) in &files {
                std::fs::write(d.join(file), text).unwrap();
                if file.ends_with(".c") {
                    sources.push(file.clone());
                }
            }
            let want = if cpu == "portable" { 4 } else { 1 };
            assert_eq!(sources.len(), want, "{name} {cpu}: {sources:?}");
            for (std, c) in ["-std=c99", "-std=c11"]
                .iter()
                .flat_map(|s| sources.iter().map(move |c| (*s, c)))
            {
                let out = std::process::Command::new("cc")
                    .current_dir(&d)
                    .args([std, "-Wall", "-Wextra", "-Werror", "-fsyntax-only", c])
                    .output()
                    .unwrap();
                assert!(
                    out.status.success(),
                    "{}/{c}: {std}:\n{}",
                    d.display(),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
    }
}

/// `--cpu portable`, the default: one library holding x86-64-v2, v3 and v4, the best level the
/// CPU (and its OS) supports picked when the library is loaded; `NAME_cpu` says which.
/// `FORGEC_CPU_LEVEL` lowers it, never raises it. Every level matches the interpreter; a program
/// linking the static library runs the same level and bits as one loading the shared one; the
/// levels share one weights file with `--weights external`; the library is no bigger than its
/// three single-level libraries together, and NAME.json lists the levels.
#[test]
fn portable_libraries_pick_their_level_at_load() {
    let model = load(&model_file("cnn_mnist.keras"), &LoadOptions::default()).unwrap();
    let g = codegen::prepare(model.graph.clone()).unwrap();
    let x = rows(&npy(&model_file("cnn_mnist.input.npy")), 3);
    let want = forgec_ir::interp::run(&g, &[(g.value(g.inputs[0]).name.clone(), x.clone())])
        .unwrap()
        .remove(0);
    let dir = scratch("portable");
    let x_bin: Vec<u8> = x
        .to_f64_vec()
        .iter()
        .flat_map(|&v| (v as f32).to_le_bytes())
        .collect();
    std::fs::write(dir.join("x.bin"), x_bin).unwrap();
    let prog = dir.join("prog.c");
    std::fs::write(
        &prog,
        r#"#include <stdio.h>
#include "pcnn.h"
int main(int argc, char **argv) {
    static float x[3 * 28 * 28], y[30];
    FILE *f = fopen(argv[1], "rb");
    if (!f || fread(x, sizeof x, 1, f) != 1) return 2;
    fclose(f);
    pcnn_ctx *c = pcnn_create();
    if (pcnn_run(c, 3, x, y) != PCNN_OK) { printf("error: %s\n", pcnn_last_error(c)); return 1; }
    printf("%s\n", pcnn_cpu());
    for (int i = 0; i < 30; i++) printf("%.9g\n", y[i]);
    pcnn_destroy(c);
    (void)argc;
    return 0;
}
"#,
    )
    .unwrap();
    let emb = dir.join("embedded");
    let ext = dir.join("external");
    compile_ok(&model_file("cnn_mnist.keras"), &emb, &["--name", "pcnn"]);
    compile_ok(
        &model_file("cnn_mnist.keras"),
        &ext,
        &["--name", "pcnn", "--weights", "external"],
    );
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(emb.join("pcnn.json")).unwrap()).unwrap();
    assert_eq!(meta["flags"]["cpu"], "portable");
    assert_eq!(
        meta["flags"]["levels"],
        serde_json::json!(["x86-64-v2", "x86-64-v3", "x86-64-v4"])
    );
    // Programs: the shared library (embedded and external weights) and the static one.
    let build = |d: &std::path::Path, exe: &str, shared: bool| -> std::path::PathBuf {
        let e = d.join(exe);
        let mut cmd = std::process::Command::new("cc");
        cmd.args(["-std=c99", "-Wall", "-Werror"])
            .arg(&prog)
            .arg(format!("-I{}", d.display()));
        if shared {
            cmd.arg(format!("-L{}", d.display()))
                .arg(format!("-Wl,-rpath,{}", d.display()))
                .arg("-lpcnn");
        } else {
            cmd.arg(d.join("libpcnn.a"));
        }
        let out = cmd
            .args(["-lm", "-lpthread", "-o"])
            .arg(&e)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        e
    };
    let run = |exe: &std::path::Path, level: Option<&str>| -> (String, Tensor) {
        let mut cmd = std::process::Command::new(exe);
        cmd.arg(dir.join("x.bin"));
        match level {
            Some(l) => cmd.env("FORGEC_CPU_LEVEL", l),
            None => cmd.env_remove("FORGEC_CPU_LEVEL"),
        };
        let out = cmd.output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "{}: {text}", exe.display());
        let mut lines = text.lines();
        let cpu = lines.next().unwrap().to_string();
        let y: Vec<f64> = lines.map(|l| l.parse().unwrap()).collect();
        (
            cpu,
            Tensor::from_f64_values(forgec_runtime::DType::F32, vec![3, 10], &y).unwrap(),
        )
    };
    let host = forgec_runtime::device::cpu().x86_64_level.clamp(2, 4);
    let host = format!("x86-64-v{host}");
    let shared = build(&emb, "shared", true);
    let (cpu, best) = run(&shared, None);
    assert_eq!(cpu, host, "the level picked on this machine");
    assert_close(
        &best,
        &want,
        1e-5,
        &format!("portable at {host} vs interpreter"),
    );
    let static_ = build(&emb, "static", false);
    let (cpu, y) = run(&static_, None);
    assert_eq!(cpu, host, "the static library's level");
    assert_eq!(
        y.to_f64_vec(),
        best.to_f64_vec(),
        "static and shared at {host}"
    );
    let external = build(&ext, "external", true);
    for level in ["x86-64-v2", "v3", "x86-64-v4"] {
        let n: u32 = level[level.len() - 1..].parse().unwrap();
        let expect = format!("x86-64-v{}", n.min(host[8..].parse().unwrap()));
        let (cpu, y) = run(&shared, Some(level));
        assert_eq!(cpu, expect, "FORGEC_CPU_LEVEL={level}");
        assert_close(
            &y,
            &want,
            1e-5,
            &format!("portable at {cpu} vs interpreter"),
        );
        let (cpu1, y1) = run(&static_, Some(level));
        assert_eq!(cpu1, expect, "FORGEC_CPU_LEVEL={level}, static library");
        assert_eq!(
            y1.to_f64_vec(),
            y.to_f64_vec(),
            "static and shared at {cpu}"
        );
        let (cpu2, y2) = run(&external, Some(level));
        assert_eq!(cpu2, expect, "FORGEC_CPU_LEVEL={level}, external weights");
        assert_eq!(
            y2.to_f64_vec(),
            y.to_f64_vec(),
            "external and embedded weights at {cpu}"
        );
    }
    // One weights file for the three levels: each level's packing is there once, the weights
    // no level packs once for all.
    let mut single = 0;
    for l in ["x86-64-v2", "x86-64-v3", "x86-64-v4"] {
        let d = dir.join(l);
        compile_ok(
            &model_file("cnn_mnist.keras"),
            &d,
            &["--name", "pcnn", "--cpu", l],
        );
        let meta = std::fs::read_to_string(d.join("pcnn.json")).unwrap();
        assert!(!meta.contains("levels"), "{meta}");
        single += std::fs::metadata(d.join("libpcnn.so")).unwrap().len();
    }
    let portable = std::fs::metadata(emb.join("libpcnn.so")).unwrap().len();
    assert!(
        portable <= single,
        "the portable library has {portable} bytes, its three levels {single} together"
    );
}
