//! Every shared model, from each of its Keras files: `summary` gives the manifest's parameter
//! counts and `run` gives Keras's outputs.

use crate::common::*;
use forgec::keras::{load, LoadOptions};
use std::path::PathBuf;

/// The Keras files a model is saved in.
fn files(name: &str) -> Vec<PathBuf> {
    let mut v = vec![
        model_file(&format!("{name}.keras")),
        model_file(&format!("{name}.json")),
    ];
    for f in [
        format!("{name}.tfkeras.json"),
        format!("{name}.tfkeras.full.h5"),
    ] {
        let p = model_file(&f);
        if p.exists() {
            v.push(p);
        }
    }
    v
}

fn models() -> Vec<(String, serde_json::Value)> {
    let m = manifest();
    m["models"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

#[test]
fn summary_param_counts_equal_keras_for_every_file() {
    let mut checked = 0;
    for (name, info) in models() {
        for f in files(&name) {
            let out = forgec(&["summary", f.to_str().unwrap()]);
            assert_eq!(out.code, 0, "{}: {}", f.display(), out.stderr);
            let line = |label: &str, key: &str| {
                let n = info[key].as_u64().unwrap() as usize;
                let want = format!(" {label}: {} (", forgec::cli::summary::thousands(n));
                assert!(
                    out.stdout.contains(&want),
                    "{}: expected `{want}` in:\n{}",
                    f.display(),
                    out.stdout
                );
            };
            line("Total params", "params");
            line("Trainable params", "trainable_params");
            line("Non-trainable params", "non_trainable_params");
            checked += 1;
        }
    }
    assert_eq!(checked, 8 * 2 + 3 * 2, "every model file was checked");
}

#[test]
fn summary_matches_keras_table_for_mlp_binary() {
    let out = forgec(&["summary", model_file("mlp_binary.keras").to_str().unwrap()]);
    let want = std::fs::read_to_string(fixtures().join("summary/mlp_binary.txt")).unwrap();
    assert_eq!(out.stdout, want);
}

#[test]
fn summary_layer_rows_and_output_shapes() {
    let m = load(&model_file("cnn_mnist.keras"), &LoadOptions::default()).unwrap();
    let rows: Vec<(String, String, usize)> = m
        .layers
        .iter()
        .map(|l| {
            (
                format!("{} ({})", l.name, l.class),
                l.outputs[0].keras_shape(),
                l.params,
            )
        })
        .collect();
    let want = [
        ("conv2d (Conv2D)", "(None, 26, 26, 32)", 320),
        ("max_pooling2d (MaxPooling2D)", "(None, 13, 13, 32)", 0),
        ("conv2d_1 (Conv2D)", "(None, 11, 11, 64)", 18496),
        ("max_pooling2d_1 (MaxPooling2D)", "(None, 5, 5, 64)", 0),
        ("flatten (Flatten)", "(None, 1600)", 0),
        ("dropout (Dropout)", "(None, 1600)", 0),
        ("dense (Dense)", "(None, 10)", 16010),
    ];
    assert_eq!(rows.len(), want.len());
    for (r, w) in rows.iter().zip(want) {
        assert_eq!((r.0.as_str(), r.1.as_str(), r.2), w);
    }
    // Functional models list their inputs and how layers connect.
    let f = load(
        &model_file("functional_two_in_two_out.keras"),
        &LoadOptions::default(),
    )
    .unwrap();
    let concat = f.layers.iter().find(|l| l.name == "concat").unwrap();
    assert_eq!(
        concat.connected,
        vec!["branch_a_dense[0][0]", "branch_b_dense[0][0]"]
    );
}

/// Runs `forgec run` on the model's shared input and compares each output with Keras's.
fn run_and_compare(model: &std::path::Path, name: &str, info: &serde_json::Value) {
    let dir = scratch(&format!(
        "run_{}",
        model.file_name().unwrap().to_string_lossy()
    ));
    let mut args: Vec<String> = vec!["run".into(), model.to_string_lossy().into()];
    for i in info["inputs"].as_array().unwrap() {
        args.push("--input".into());
        args.push(format!(
            "{}={}",
            i["name"].as_str().unwrap(),
            model_file(i["file"].as_str().unwrap()).display()
        ));
    }
    // Single inputs are passed positionally (the manifest's names are TensorFlow's).
    if info["inputs"].as_array().unwrap().len() == 1 {
        args.truncate(2);
        args.push("--input".into());
        args.push(
            model_file(info["inputs"][0]["file"].as_str().unwrap())
                .to_string_lossy()
                .into(),
        );
    }
    args.extend(["--output-dir".into(), dir.to_string_lossy().into()]);
    let argv: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
    let out = forgec(&argv);
    assert_eq!(out.code, 0, "{}: {}", model.display(), out.stderr);
    for o in info["outputs"].as_array().unwrap() {
        let got = npy(&dir.join(format!("{}.npy", o["name"].as_str().unwrap())));
        let want = npy(&model_file(o["keras_file"].as_str().unwrap()));
        assert_close(
            &got,
            &want,
            1e-4,
            &format!("{name} from {}", model.display()),
        );
    }
}

#[test]
fn run_matches_keras_outputs_for_every_file() {
    for (name, info) in models() {
        for f in files(&name) {
            run_and_compare(&f, &name, &info);
        }
    }
}

#[test]
fn summary_tables_equal_keras_for_every_shared_model() {
    for (name, _) in models() {
        let out = forgec(&[
            "summary",
            model_file(&format!("{name}.keras")).to_str().unwrap(),
        ]);
        assert_eq!(out.code, 0, "{name}: {}", out.stderr);
        let want = std::fs::read_to_string(fixtures().join(format!("summary/{name}.txt"))).unwrap();
        assert_eq!(
            out.stdout, want,
            "{name}: forgec's summary differs from Keras's"
        );
    }
}

/// The layer-zoo models made by scripts/gen_layer_fixtures.py with Keras 3.15 (and
/// `attention`, by scripts/gen_attention_fixtures.py).
const ZOO: &[&str] = &[
    "conv2d_zoo",
    "conv1d_zoo",
    "conv3d",
    "recurrent",
    "merge_reshape",
    "nested_shared",
    "embedding",
    "activations",
    "attention",
    "norm_attention",
    "gqa",
    "preprocessing",
];

fn zoo(f: &str) -> PathBuf {
    fixtures().join("layers").join(f)
}

#[test]
fn layer_zoo_runs_match_keras() {
    for name in ZOO {
        for file in [format!("{name}.keras"), format!("{name}.json")] {
            let model = zoo(&file);
            let dir = scratch(&format!("zoo_{file}"));
            let m = load(&model, &LoadOptions::default()).unwrap_or_else(|e| panic!("{file}: {e}"));
            let mut args: Vec<String> = vec!["run".into(), model.to_string_lossy().into()];
            for (i, &v) in m.graph.inputs.iter().enumerate() {
                args.push("-i".into());
                args.push(format!(
                    "{}={}",
                    m.graph.value(v).name,
                    zoo(&format!("{name}.input.{i}.npy")).display()
                ));
            }
            args.extend(["-o".into(), dir.to_string_lossy().into()]);
            let argv: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
            let out = forgec(&argv);
            assert_eq!(out.code, 0, "{file}: {}", out.stderr);
            for (i, o) in m.outputs.iter().enumerate() {
                let got = npy(&dir.join(format!("{}.npy", o.name)));
                let want = npy(&zoo(&format!("{name}.keras_out.{i}.npy")));
                assert_close(&got, &want, 1e-4, &format!("{file} output {}", o.name));
            }
        }
        let out = forgec(&["summary", zoo(&format!("{name}.keras")).to_str().unwrap()]);
        let mut want = std::fs::read_to_string(zoo(&format!("{name}.summary.txt"))).unwrap();
        // Keras's symbolic shape misses that glu halves the last axis (its run does not);
        // forgec prints the shape the layer really has.
        want = want.replace(
            "│ act_glu (Dense)               │ (None, 4) ",
            "│ act_glu (Dense)               │ (None, 2) ",
        );
        assert_eq!(
            out.stdout, want,
            "{name}: forgec's summary differs from Keras's"
        );
    }
}

#[test]
fn run_reads_and_writes_npz_bundles() {
    let d = scratch("npz_bundle");
    let a = npy(&model_file("functional_two_in_two_out.input.input_a.npy"));
    let b = npy(&model_file("functional_two_in_two_out.input.input_b.npy"));
    let bundle = d.join("inputs.npz");
    forgec_runtime::write_npz(&bundle, &[("input_b".into(), b), ("input_a".into(), a)]).unwrap();
    let out_dir = d.join("out");
    let model = model_file("functional_two_in_two_out.keras");
    let out = forgec(&[
        "run",
        model.to_str().unwrap(),
        "-i",
        bundle.to_str().unwrap(),
        "-o",
        out_dir.to_str().unwrap(),
        "--npz",
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let outs = forgec_runtime::read_npz(&out_dir.join("outputs.npz")).unwrap();
    let names: Vec<&str> = outs.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["class_out", "bin_out"]);
    for (n, t) in &outs {
        assert_close(
            t,
            &npy(&model_file(&format!(
                "functional_two_in_two_out.keras_out.{n}.npy"
            ))),
            1e-4,
            n,
        );
    }
}

/// tf.keras 2 models made by scripts/gen_tfkeras_fixtures.py: nested and shared layers,
/// Bidirectional and GRU weights, tf.keras's hard_sigmoid, from both of their files.
#[test]
fn tf_keras_models_match_tf_keras() {
    for name in ["tf_nested_recurrent", "tf_conv"] {
        let dir = fixtures().join("tfkeras");
        for file in [
            format!("{name}.tfkeras.json"),
            format!("{name}.tfkeras.full.h5"),
        ] {
            let out_dir = scratch(&format!("tfk_{file}"));
            let model = dir.join(&file);
            let input = dir.join(format!("{name}.input.npy"));
            let out = forgec(&[
                "run",
                model.to_str().unwrap(),
                "-i",
                input.to_str().unwrap(),
                "-o",
                out_dir.to_str().unwrap(),
            ]);
            assert_eq!(out.code, 0, "{file}: {}", out.stderr);
            let m = load(&model, &LoadOptions::default()).unwrap();
            let got = npy(&out_dir.join(format!("{}.npy", m.outputs[0].name)));
            assert_close(
                &got,
                &npy(&dir.join(format!("{name}.keras_out.npy"))),
                1e-4,
                &file,
            );
        }
    }
}
