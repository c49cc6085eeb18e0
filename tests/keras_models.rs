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
fn run_and_compare(model: &PathBuf, name: &str, info: &serde_json::Value) {
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
