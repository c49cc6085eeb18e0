//! Criterion benchmarks of compiled models: every shared model at batch 1 and 32, on 1 and 2
//! threads, compiled for this machine (`--cpu native`). Run with `cargo bench`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use forgec::codegen::{self, Emit, Options};
use forgec_runtime::compiled::CompiledModel;
use forgec_runtime::{read_npy, Tensor};
use std::path::Path;

const MODELS: &[&str] = &[
    "mlp_mnist",
    "cnn_mnist",
    "mobilenetv2_035_96",
    "lstm_seq",
    "text_embed",
];

/// `n` rows of `t`, repeating its rows.
fn rows(t: &Tensor, n: usize) -> Tensor {
    let per: usize = t.shape()[1..].iter().product();
    let v = t.to_f64_vec();
    let have = t.shape()[0];
    let out: Vec<f64> = (0..n)
        .flat_map(|r| v[(r % have) * per..(r % have + 1) * per].to_vec())
        .collect();
    let mut shape = t.shape().to_vec();
    shape[0] = n;
    Tensor::from_f64_values(t.dtype(), shape, &out).expect("rows")
}

fn models(c: &mut Criterion) {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models");
    for name in MODELS {
        let model = forgec::keras::load(
            &fixtures.join(format!("{name}.keras")),
            &forgec::keras::LoadOptions::default(),
        )
        .unwrap_or_else(|e| panic!("{name}: {e}"))
        .graph;
        let dir = tempfile::tempdir().expect("a scratch dir");
        let opts = Options {
            name: "bench".into(),
            cpu: Some("native".into()),
            target: None,
            emit: Emit::Lib,
            external_weights: false,
            threads: 1,
        };
        codegen::compile(model, &opts, dir.path(), "").unwrap_or_else(|e| panic!("{name}: {e}"));
        let lib = CompiledModel::load(&dir.path().join("libbench.so"), "bench").expect("loads");
        let x = read_npy(&fixtures.join(format!("{name}.input.npy"))).expect("input");
        let mut group = c.benchmark_group(*name);
        for batch in [1, 32] {
            let input = rows(&x, batch);
            for threads in [1, 2] {
                if lib.set_threads(threads).is_err() {
                    continue; // a model whose samples cannot be computed apart
                }
                group.bench_with_input(
                    BenchmarkId::new(format!("batch{batch}"), format!("threads{threads}")),
                    &input,
                    |b, input| b.iter(|| lib.run(&[input]).expect("runs")),
                );
            }
        }
        group.finish();
    }
}

criterion_group!(benches, models);
criterion_main!(benches);
