//! `forgec check`: the classic mistakes, each with the layer, why, and the fix.

use crate::common::*;
use forgec_runtime::{write_npy, DType, Tensor};

fn check(args: &[&str]) -> Out {
    let mut v = vec!["check"];
    v.extend_from_slice(args);
    forgec(&v)
}

fn m(name: &str) -> String {
    model_file(name).to_string_lossy().into_owned()
}

#[test]
fn compiled_models_pass() {
    for f in [
        "mlp_binary.keras",
        "mlp_mnist.keras",
        "cnn_mnist.keras",
        "functional_two_in_two_out.keras",
        "lstm_seq.keras",
    ] {
        let out = check(&[&m(f)]);
        assert_eq!(out.code, 0, "{f}: {}{}", out.stdout, out.stderr);
        assert!(
            out.stdout.contains("no problems found"),
            "{f}: {}",
            out.stdout
        );
    }
    // tf.keras's training_config carries the loss too.
    let out = check(&[
        &m("mlp_mnist.tfkeras.full.h5"),
        "--loss",
        "binary_crossentropy",
    ]);
    assert_eq!(out.code, 1, "{}", out.stdout);
}

#[test]
fn uncompiled_model_warns_that_no_loss_is_known() {
    let out = check(&[&m("mobilenetv2_035_96.keras")]);
    assert_eq!(out.code, 0);
    assert!(
        out.stdout.contains("warning: model: no loss is known"),
        "{}",
        out.stdout
    );
}

#[test]
fn softmax_with_binary_crossentropy() {
    let out = check(&[&m("mlp_mnist.keras"), "--loss", "binary_crossentropy"]);
    assert_eq!(out.code, 1);
    assert!(
        out.stdout
            .contains("error: Dense `dense_1` (output): softmax output with binary_crossentropy"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("fix: "), "{}", out.stdout);
}

#[test]
fn sigmoid_with_categorical_crossentropy() {
    // A single sigmoid unit with a categorical loss: only one class.
    let out = check(&[&m("mlp_binary.keras"), "--loss", "categorical_crossentropy"]);
    assert_eq!(out.code, 1);
    assert!(
        out.stdout
            .contains("categorical_crossentropy over a single output unit"),
        "{}",
        out.stdout
    );
    // Ten sigmoid units with a categorical loss.
    let d = scratch("check_sigmoid_cce");
    let mut j: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(model_file("mlp_mnist.json")).unwrap())
            .unwrap();
    j["config"]["layers"][2]["config"]["activation"] = "sigmoid".into();
    std::fs::write(d.join("m.json"), j.to_string()).unwrap();
    let out = check(&[
        d.join("m.json").to_str().unwrap(),
        "--loss",
        "categorical_crossentropy",
    ]);
    assert_eq!(out.code, 1);
    assert!(
        out.stdout
            .contains("sigmoid outputs with categorical_crossentropy"),
        "{}",
        out.stdout
    );
}

#[test]
fn probabilities_with_from_logits() {
    let out = check(&[&m("mlp_mnist.keras"), "--from-logits", "true"]);
    assert_eq!(out.code, 1);
    assert!(
        out.stdout.contains("softmax is applied twice"),
        "{}",
        out.stdout
    );
}

#[test]
fn linear_output_with_a_probability_loss() {
    let out = check(&[&m("lstm_seq.keras"), "--loss", "binary_crossentropy"]);
    assert_eq!(out.code, 1);
    assert!(
        out.stdout
            .contains("error: Dense `dense` (output): the output activation is 'linear'"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("from_logits=True"), "{}", out.stdout);
}

#[test]
fn label_encodings_that_do_not_fit_the_loss() {
    let d = scratch("check_labels");
    let ids = d.join("ids.npy");
    write_npy(
        &ids,
        &Tensor::from_i64_values(DType::I64, vec![4], &[3, 1, 0, 9]).unwrap(),
    )
    .unwrap();
    let out = check(&[
        &m("mlp_mnist.keras"),
        "--loss",
        "categorical_crossentropy",
        "--labels",
        ids.to_str().unwrap(),
    ]);
    assert_eq!(out.code, 1);
    assert!(
        out.stdout.contains("integer class ids")
            && out.stdout.contains("sparse_categorical_crossentropy"),
        "{}",
        out.stdout
    );
    let mut oh = vec![0.0f32; 40];
    for (r, c) in [(0, 3), (1, 1), (2, 0), (3, 9)] {
        oh[r * 10 + c] = 1.0;
    }
    let onehot = d.join("onehot.npy");
    write_npy(&onehot, &Tensor::from_f32(vec![4, 10], oh).unwrap()).unwrap();
    let out = check(&[&m("mlp_mnist.keras"), "--labels", onehot.to_str().unwrap()]);
    assert_eq!(out.code, 1, "{}", out.stdout);
    assert!(
        out.stdout.contains("one-hot vectors") && out.stdout.contains("argmax"),
        "{}",
        out.stdout
    );
    let big = d.join("big.npy");
    write_npy(
        &big,
        &Tensor::from_i64_values(DType::I32, vec![2], &[3, 10]).unwrap(),
    )
    .unwrap();
    let out = check(&[&m("mlp_mnist.keras"), "--labels", big.to_str().unwrap()]);
    assert_eq!(out.code, 1);
    assert!(
        out.stdout
            .contains("a label is 10 but the output has 10 classes"),
        "{}",
        out.stdout
    );
    // Integer labels with the sparse loss are right.
    let out = check(&[&m("mlp_mnist.keras"), "--labels", ids.to_str().unwrap()]);
    assert_eq!(out.code, 0, "{}", out.stdout);
}

#[test]
fn data_shape_that_does_not_fit_the_input() {
    let out = check(&[&m("mlp_binary.keras"), "--input-shape", "32,1"]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("Dense `dense` expects (None, 32) but gets (None, 32, 1): flatten the input or fix input_shape"),
        "{}",
        out.stdout
    );
    let d = scratch("check_data");
    let x = d.join("x.npy");
    write_npy(
        &x,
        &Tensor::from_f32(vec![3, 28, 28], vec![0.0; 3 * 784]).unwrap(),
    )
    .unwrap();
    let out = check(&[&m("cnn_mnist.keras"), "--data", x.to_str().unwrap()]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout
            .contains("Conv2D `conv2d` expects (None, 28, 28, 1) but gets (None, 28, 28)"),
        "{}",
        out.stdout
    );
    // The right shape passes.
    let out = check(&[&m("cnn_mnist.keras"), "--input-shape", "28,28,1"]);
    assert_eq!(out.code, 0, "{}", out.stdout);
}

/// A loss name Keras does not have is an error (it used to pass as "no problems found").
#[test]
fn misspelled_loss_is_an_error() {
    let m = model_file("mlp_binary.keras");
    let o = forgec(&[
        "check",
        m.to_str().unwrap(),
        "--loss",
        "binary_crossentropyy",
    ]);
    assert_eq!(o.code, 2, "{}", o.stdout);
    assert!(
        o.stderr
            .contains("--loss binary_crossentropyy: Keras has no loss of that name"),
        "{}",
        o.stderr
    );
    let ok = forgec(&["check", m.to_str().unwrap(), "--loss", "BinaryCrossentropy"]);
    assert_eq!(ok.code, 0, "{}", ok.stderr);
}
