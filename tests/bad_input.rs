//! Bad input never panics: one clear message naming the file and the place, exit code 2.

use crate::common::*;
use forgec_runtime::{write_npy, Tensor};
use std::path::Path;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Asserts a clean failure: exit 2, every needle in stderr, no panic or backtrace.
fn fails_with(out: &Out, needles: &[&str]) {
    assert_eq!(
        out.code, 2,
        "exit code; stderr:\n{}\nstdout:\n{}",
        out.stderr, out.stdout
    );
    for n in needles {
        assert!(
            out.stderr.contains(n),
            "expected `{n}` in stderr:\n{}",
            out.stderr
        );
    }
    for bad in [
        "panicked",
        "stack backtrace",
        "RUST_BACKTRACE",
        "internal error",
    ] {
        assert!(
            !out.stderr.contains(bad),
            "stderr shows `{bad}`:\n{}",
            out.stderr
        );
    }
}

fn read_json(name: &str) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(model_file(name)).unwrap()).unwrap()
}

#[test]
fn truncated_json() {
    let d = scratch("bad_truncated_json");
    let text = std::fs::read_to_string(model_file("mlp_binary.json")).unwrap();
    let f = d.join("m.json");
    std::fs::write(&f, &text[..text.len() / 2]).unwrap();
    std::fs::copy(model_file("mlp_binary.weights.h5"), d.join("m.weights.h5")).unwrap();
    fails_with(
        &forgec(&["summary", s(&f)]),
        &["m.json", "malformed JSON at line"],
    );
    // Without weights beside it, the JSON is still what is reported: a file that is not a
    // model should not send the user looking for weights.
    std::fs::remove_file(d.join("m.weights.h5")).unwrap();
    fails_with(
        &forgec(&["compile", s(&f), "-o", s(&d)]),
        &["m.json", "malformed JSON at line"],
    );
}

#[test]
fn truncated_keras_archive() {
    let d = scratch("bad_truncated_zip");
    let bytes = std::fs::read(model_file("mlp_binary.keras")).unwrap();
    let f = d.join("m.keras");
    std::fs::write(&f, &bytes[..bytes.len() / 3]).unwrap();
    fails_with(
        &forgec(&["summary", s(&f)]),
        &["m.keras", "not a valid .keras archive"],
    );
}

#[test]
fn truncated_hdf5_weights() {
    let d = scratch("bad_truncated_h5");
    std::fs::copy(model_file("mlp_binary.json"), d.join("m.json")).unwrap();
    let bytes = std::fs::read(model_file("mlp_binary.weights.h5")).unwrap();
    std::fs::write(d.join("m.weights.h5"), &bytes[..bytes.len() / 2]).unwrap();
    let out = forgec(&[
        "run",
        s(&d.join("m.json")),
        "-i",
        s(&model_file("mlp_binary.input.npy")),
        "-o",
        s(&d.join("out")),
    ]);
    fails_with(&out, &["m.weights.h5"]);
}

#[test]
fn garbage_model_file() {
    let d = scratch("bad_garbage");
    let f = d.join("m.h5");
    std::fs::write(&f, b"\x89HDF\r\n\x1a\nthis is not really hdf5").unwrap();
    fails_with(
        &forgec(&["summary", s(&f)]),
        &["m.h5", "not a readable HDF5 file"],
    );
    let f = d.join("m.bin");
    std::fs::write(&f, [0xffu8, 0xfe, 0x00, 0x12]).unwrap();
    fails_with(
        &forgec(&["summary", s(&f)]),
        &["m.bin", "not a Keras model file"],
    );
    fails_with(
        &forgec(&["summary", s(&d.join("absent.keras"))]),
        &["absent.keras", "cannot read"],
    );
}

#[test]
fn weights_only_h5_is_explained() {
    fails_with(
        &forgec(&["summary", s(&model_file("mlp_binary.tfkeras.h5"))]),
        &["mlp_binary.tfkeras.h5", "holds weights only", "--weights"],
    );
}

#[test]
fn missing_weights_file() {
    let d = scratch("bad_missing_weights");
    std::fs::copy(model_file("mlp_binary.json"), d.join("m.json")).unwrap();
    let out = forgec(&[
        "run",
        s(&d.join("m.json")),
        "-i",
        s(&model_file("mlp_binary.input.npy")),
        "-o",
        s(&d.join("out")),
    ]);
    fails_with(
        &out,
        &[
            "m.json",
            "Dense `dense`: it has weights, but no weights file was found",
            "m.weights.h5",
            "--weights",
        ],
    );
    // summary needs only the config, and says so.
    let out = forgec(&["summary", s(&d.join("m.json"))]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.contains("Total params: 2,177")
            && out.stdout.contains("no weights file was found")
    );
}

#[test]
fn weights_of_the_wrong_shape() {
    // mlp_dropout's weights do not fit mlp_binary: every mismatching layer is named.
    let out = forgec(&[
        "summary",
        s(&model_file("mlp_binary.json")),
        "--weights",
        s(&model_file("mlp_dropout.weights.h5")),
    ]);
    fails_with(
        &out,
        &[
            "Dense `dense`",
            "layers/dense/vars/0",
            "has shape [10, 64] but the layer's config needs [32, 64]",
            "Dense `dense_1`",
        ],
    );
}

#[test]
fn weights_from_another_keras_version() {
    let out = forgec(&[
        "summary",
        s(&model_file("mlp_binary.json")),
        "--weights",
        s(&model_file("mlp_binary.tfkeras.h5")),
    ]);
    fails_with(&out, &["tf.keras 2 weights but", "Keras 3 model"]);
}

#[test]
fn unsupported_layers_are_all_reported() {
    let d = scratch("bad_unsupported");
    let mut j = read_json("cnn_mnist.json");
    let layers = j["config"]["layers"].as_array_mut().unwrap();
    layers[2]["class_name"] = "Lambda".into();
    layers[5]["class_name"] = "MyCustomLayer".into();
    let f = d.join("m.json");
    std::fs::write(&f, j.to_string()).unwrap();
    std::fs::copy(model_file("cnn_mnist.weights.h5"), d.join("m.weights.h5")).unwrap();
    let out = forgec(&["summary", s(&f)]);
    fails_with(
        &out,
        &[
            "$.config.layers[2]: Lambda `max_pooling2d`: a Lambda layer holds Python code",
            "$.config.layers[5]: MyCustomLayer `flatten`",
            "does not support the layer class `MyCustomLayer`",
        ],
    );
}

#[test]
fn subclassed_model_is_explained() {
    let d = scratch("bad_subclassed");
    let mut j = read_json("mlp_binary.json");
    j["class_name"] = "MyModel".into();
    let f = d.join("m.json");
    std::fs::write(&f, j.to_string()).unwrap();
    fails_with(
        &forgec(&["summary", s(&f)]),
        &["`MyModel` is a subclassed model", "Functional API"],
    );
}

#[test]
fn dangling_functional_reference() {
    let d = scratch("bad_dangling");
    let mut j = read_json("functional_two_in_two_out.json");
    j["config"]["layers"][2]["inbound_nodes"][0]["args"][0]["config"]["keras_history"][0] =
        "nowhere".into();
    let f = d.join("m.json");
    std::fs::write(&f, j.to_string()).unwrap();
    std::fs::copy(
        model_file("functional_two_in_two_out.weights.h5"),
        d.join("m.weights.h5"),
    )
    .unwrap();
    fails_with(
        &forgec(&["summary", s(&f)]),
        &["layer `branch_a_dense` reads nowhere[0][0] which no layer makes"],
    );
}

#[test]
fn inputs_of_the_wrong_dtype_or_shape() {
    let d = scratch("bad_inputs");
    let model = model_file("mlp_binary.keras");
    let f64_in = d.join("x64.npy");
    write_npy(
        &f64_in,
        &Tensor::from_f64_values(forgec_runtime::DType::F64, vec![2, 32], &[0.5; 64]).unwrap(),
    )
    .unwrap();
    let out = forgec(&["run", s(&model), "-i", s(&f64_in), "-o", s(&d)]);
    fails_with(
        &out,
        &[
            "input `input_layer` expects float32",
            "the data is float64",
            "astype('float32')",
        ],
    );
    let wrong = d.join("x.npy");
    write_npy(
        &wrong,
        &Tensor::from_f32(vec![2, 31], vec![0.5; 62]).unwrap(),
    )
    .unwrap();
    let out = forgec(&["run", s(&model), "-i", s(&wrong), "-o", s(&d)]);
    fails_with(
        &out,
        &["expects shape (None, 32) but the data has shape [2, 31]"],
    );
    let garbage = d.join("g.npy");
    std::fs::write(&garbage, b"not numpy").unwrap();
    fails_with(
        &forgec(&["run", s(&model), "-i", s(&garbage), "-o", s(&d)]),
        &["g.npy", "not a .npy file"],
    );
    let out = forgec(&[
        "run",
        s(&model),
        "-i",
        &format!("nope={}", s(&wrong)),
        "-o",
        s(&d),
    ]);
    fails_with(
        &out,
        &["the model has no input `nope`", "input `input_layer`"],
    );
}

#[test]
fn embedding_index_out_of_range_names_the_layer() {
    let d = scratch("bad_embedding");
    let x = d.join("x.npy");
    write_npy(
        &x,
        &Tensor::from_i64_values(forgec_runtime::DType::I32, vec![1, 50], &[5000; 50]).unwrap(),
    )
    .unwrap();
    let out = forgec(&[
        "run",
        s(&model_file("text_embed.keras")),
        "-i",
        s(&x),
        "-o",
        s(&d),
        // The interpreter checks indices; compiled code clamps them (memory-safe, no error yet).
        "--engine",
        "interp",
    ]);
    fails_with(
        &out,
        &[
            "Embedding `",
            "index 5000 is out of range for a dim of size 1000",
        ],
    );
}

/// An unknown `--cpu` made LLVM abort the process on x86; an unknown `--target` read as a bug
/// in forgec. Both are the user's to fix, and said before any compiling.
#[test]
fn unknown_cpu_or_target_is_refused() {
    let d = scratch("bad_cpu");
    let m = model_file("mlp_mnist.keras");
    let compile = |extra: &[&str]| {
        let mut args = vec!["compile", s(&m), "-o", s(&d)];
        args.extend_from_slice(extra);
        forgec(&args)
    };
    fails_with(
        &compile(&["--target", "x86_64-unknown-linux-gnu", "--cpu", "notacpu"]),
        &[
            "--cpu notacpu: not a CPU LLVM knows for x86_64",
            "portable (v2, v3 and v4 in one library)",
        ],
    );
    fails_with(
        &compile(&["--target", "aarch64-unknown-linux-gnu", "--cpu", "portable"]),
        &[
            "--cpu portable:",
            "for x86_64 only",
            "for aarch64 use generic",
        ],
    );
    fails_with(
        &compile(&[
            "--target",
            "aarch64-unknown-linux-gnu",
            "--cpu",
            "x86-64-v3",
        ]),
        &[
            "--cpu x86-64-v3: not a CPU LLVM knows for aarch64",
            "generic",
        ],
    );
    fails_with(
        &compile(&["--target", "foo-bar-baz"]),
        &[
            "--target foo-bar-baz: LLVM has no backend for it",
            "x86_64-unknown-linux-gnu",
        ],
    );
}

#[test]
fn absurd_sizes_are_refused_before_allocating() {
    let d = scratch("bad_absurd");
    let mut j = read_json("mlp_binary.json");
    j["config"]["layers"][1]["config"]["units"] = serde_json::json!(1u64 << 30);
    let f = d.join("m.json");
    std::fs::write(&f, j.to_string()).unwrap();
    fails_with(
        &forgec(&["summary", s(&f)]),
        &["Dense `dense`", "over 2^31 elements"],
    );
    // A config integer over 2^31 is refused as it is read.
    j["config"]["layers"][1]["config"]["units"] = serde_json::json!(1u64 << 40);
    std::fs::write(&f, j.to_string()).unwrap();
    fails_with(
        &forgec(&["summary", s(&f)]),
        &[
            "Dense `dense`",
            "`units` must be a non-negative integer up to 2^31",
        ],
    );
    // A RepeatVector of 2^30 copies has no weights: the interpreter refuses it at run time.
    let mut j = read_json("mlp_binary.json");
    let layers = j["config"]["layers"].as_array_mut().unwrap();
    layers.push(serde_json::json!({"class_name": "RepeatVector", "config": {"name": "rep", "n": 1u64 << 30}}));
    layers.push(serde_json::json!({"class_name": "Flatten", "config": {"name": "fl"}}));
    let f = d.join("r.json");
    std::fs::write(&f, j.to_string()).unwrap();
    std::fs::copy(model_file("mlp_binary.weights.h5"), d.join("r.weights.h5")).unwrap();
    let out = forgec(&[
        "run",
        s(&f),
        "-i",
        s(&model_file("mlp_binary.input.npy")),
        "-o",
        s(&d),
    ]);
    // The compiled engine refuses the output buffer; the interpreter names the layer.
    fails_with(
        &out,
        &["output 0 would have shape [16, 1073741824], over 2^31 elements"],
    );
    let out = forgec(&[
        "run",
        s(&f),
        "-i",
        s(&model_file("mlp_binary.input.npy")),
        "-o",
        s(&d),
        "--engine",
        "interp",
    ]);
    fails_with(&out, &["RepeatVector `rep`", "over 2^31 elements"]);
}

/// Every argument of every command says what it is in `--help` (clap's own help and version
/// flags aside), and every command has a one-line description.
#[test]
fn every_flag_has_help_text() {
    use clap::CommandFactory;
    let cli = forgec::cli::Cli::command();
    let mut missing = Vec::new();
    for sub in cli.get_subcommands() {
        if sub.get_about().is_none() {
            missing.push(format!("forgec {}", sub.get_name()));
        }
        for arg in sub.get_arguments() {
            let id = arg.get_id().as_str();
            if id != "help" && id != "version" && arg.get_help().is_none() {
                missing.push(format!("forgec {} {id}", sub.get_name()));
            }
        }
    }
    assert!(missing.is_empty(), "no help text: {missing:?}");
}

/// `--version` names the LLVM and MLIR forgec generates code with; `completions` writes a
/// script for each shell that knows the commands and their flags; an unknown shell is a usage
/// error (exit code 2), as is a bad number.
#[test]
fn version_completions_and_usage_errors() {
    let v = forgec(&["--version"]);
    assert_eq!(v.code, 0);
    assert!(
        v.stdout.starts_with("forgec 0.")
            && v.stdout.contains("LLVM 22.")
            && v.stdout.contains("MLIR 22"),
        "{}",
        v.stdout
    );
    for (shell, marker) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef forgec"),
        ("fish", "complete -c forgec"),
    ] {
        let c = forgec(&["completions", shell]);
        assert_eq!(c.code, 0, "{shell}: {}", c.stderr);
        assert!(
            c.stdout.contains(marker),
            "{shell}: {}",
            &c.stdout[..200.min(c.stdout.len())]
        );
        // fish spells a long flag `-l weights`.
        assert!(
            c.stdout.contains("compile") && c.stdout.contains("weights"),
            "{shell}"
        );
    }
    let bad = forgec(&["completions", "tcsh"]);
    assert_eq!(bad.code, 2);
    assert!(bad.stderr.contains("possible values"), "{}", bad.stderr);
    let m = model_file("mlp_binary.keras");
    let secs = forgec(&["bench", m.to_str().unwrap(), "--seconds=-1"]);
    assert_eq!(secs.code, 2);
    assert!(secs.stderr.contains("--seconds -1"), "{}", secs.stderr);
    // A model of fixed shapes runs one batch: timing it "at batch 1 and 3" would label the
    // same run twice.
    let fixed = fixtures().join("onnx-suite/node/test_softmax_axis_0/model.onnx");
    let b = forgec(&[
        "bench",
        fixed.to_str().unwrap(),
        "--batch",
        "1,3",
        "--seconds",
        "0.01",
    ]);
    assert_eq!(b.code, 2, "{}", b.stderr);
    assert!(
        b.stderr.contains("--batch 1: ") && b.stderr.contains("fixed batch of 3"),
        "{}",
        b.stderr
    );
    let b = forgec(&[
        "bench",
        fixed.to_str().unwrap(),
        "--batch",
        "3",
        "--seconds",
        "0.01",
    ]);
    assert_eq!(b.code, 0, "{}", b.stderr);
    // Without --batch, its own batch is timed, and said.
    let b = forgec(&["bench", fixed.to_str().unwrap(), "--seconds", "0.01"]);
    assert_eq!(b.code, 0, "{}", b.stderr);
    assert!(
        b.stdout.contains("timing its fixed batch of 3"),
        "{}",
        b.stdout
    );
    let help = forgec(&["--help"]);
    assert!(
        help.stdout.contains("Exit codes: 0 success; 1 findings"),
        "{}",
        help.stdout
    );
}

/// `compile -o DIR` into a directory that cannot be written is said before any work.
#[test]
fn compile_into_an_unwritable_directory_is_said_first() {
    let m = model_file("mlp_binary.keras");
    let out = forgec(&[
        "compile",
        m.to_str().unwrap(),
        "-o",
        "/proc/forgec-cannot-be-here",
    ]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("/proc/forgec-cannot-be-here: cannot create")
            && out.stderr.contains("choose another -o"),
        "{}",
        out.stderr
    );
}

/// The layers that size something from their config or input shape refuse what cannot be
/// built, by name, before any allocation: a causal mask over 10^5 x 10^5 positions, a
/// Resizing to 0 rows, a CenterCrop larger than its image.
#[test]
fn attention_and_preprocessing_configs_are_checked() {
    let d = scratch("bad_attention_preprocessing");
    let layers = |f: &str| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("layers").join(f)).unwrap())
            .unwrap()
    };
    let mut j = layers("gqa.json");
    j["config"]["layers"][0]["config"]["batch_shape"] = serde_json::json!([null, 100000, 16]);
    let f = d.join("gqa.json");
    std::fs::write(&f, j.to_string()).unwrap();
    fails_with(
        &forgec(&["summary", s(&f)]),
        &[
            "`gqa_self`",
            "use_causal_mask over 100000 queries and 100000 keys",
        ],
    );
    let mut j = layers("preprocessing.json");
    j["config"]["layers"][1]["config"]["height"] = serde_json::json!(0);
    j["config"]["layers"][5]["config"]["width"] = serde_json::json!(40);
    let f = d.join("pre.json");
    std::fs::write(&f, j.to_string()).unwrap();
    fails_with(
        &forgec(&["summary", s(&f)]),
        &[
            "Resizing `down_bilinear`",
            "height 0 and width 7 must be at least 1",
            "CenterCrop `crop`",
            "a crop larger than the image",
        ],
    );
}
