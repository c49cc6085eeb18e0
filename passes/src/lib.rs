//! forgec-passes: IR-to-IR passes. Each pass is one idea; each keeps the verifier's invariants.
//!
//! | pass | what it does |
//! |---|---|
//! | `shape-inference` | re-derives every value's type from the graph inputs, reporting every mismatch with the layer it came from |
//! | `strip-dropout` | removes inference-time no-ops (Dropout) |
//! | `dce` | removes nodes whose results nothing uses |
//! | `fold-constants` | evaluates nodes whose inputs are all constants (up to 4M elements) |
//! | `cse` | drops a node equal to an earlier one (same op, attributes and inputs), merging small equal literals |
//! | `identity` | drops reshapes to the same shape, identity transposes, casts to the same type |
//! | `channels-last` | rewrites channels-first convolutions and pooling as transpose → channels-last op → transpose back |
//! | `sink-transposes` | moves transposes below elementwise ops (transposing their constants) and cancels inverse pairs |
//! | `fold-pad` | folds a zero padding of the spatial dims into the convolution that reads it |
//! | `fold-batchnorm` | folds a BatchNormalization into the preceding convolution's or matmul's constant weights, leaving an addition |
//! | `lower-conv-transpose` | rewrites a transposed convolution as zero-stuffing, padding and a convolution with the flipped kernel |
//!
//! [`run_pipeline`] runs passes by name; the golden tests drive it from text IR. The named
//! pipelines ([`PIPELINES`], [`pipeline`]) are the orders the rest of forgec runs them in:
//! `inference` before code generation, `interpreter` before the reference interpreter runs a
//! model (the training pipeline will join them).
//!
//! Training: [`autodiff::gradients`] appends a loss's gradients to a graph (each op's rule in
//! `forgec_ir::ops`), and [`train::step_graph`] builds a whole training step (loss, gradients,
//! optimizer update) as plain IR.

pub mod autodiff;
pub mod cleanup;
pub mod fold;
pub mod layout;
pub mod lower;
pub mod recurrent;
pub mod shape;
pub mod simplify;
pub mod train;

use forgec_ir::Graph;

/// Names of the passes [`run_pipeline`] knows.
pub const PASSES: &[&str] = &[
    "shape-inference",
    "strip-dropout",
    "dce",
    "fold-constants",
    "fold-batchnorm",
    "cse",
    "identity",
    "channels-last",
    "sink-transposes",
    "fold-pad",
    "lower-conv-transpose",
];

/// What the code generator compiles: inference clean-ups, layout rewrites, folds.
pub const INFERENCE: &[&str] = &[
    "strip-dropout",
    "fold-constants",
    "identity",
    "cse",
    "fold-batchnorm",
    "lower-conv-transpose",
    "channels-last",
    "sink-transposes",
    "fold-pad",
    "fold-constants",
    "dce",
];

/// What the reference interpreter runs: the imported graph, only inference no-ops removed (it
/// is the yardstick for the compiled code, so it sees as few rewrites as possible).
pub const INTERPRETER: &[&str] = &["strip-dropout", "dce"];

/// The named pipelines, by name.
pub const PIPELINES: &[(&str, &[&str])] = &[("inference", INFERENCE), ("interpreter", INTERPRETER)];

/// The passes of a named pipeline.
pub fn pipeline(name: &str) -> Option<&'static [&'static str]> {
    PIPELINES.iter().find(|(n, _)| *n == name).map(|(_, p)| *p)
}

/// Runs the named passes in order. Errors list every problem found. In debug builds (and so
/// in the tests) the verifier runs after every pass: a pass that breaks an invariant is named.
pub fn run_pipeline(g: &mut Graph, passes: &[&str]) -> Result<(), Vec<String>> {
    for p in passes {
        run_one(g, p)?;
        if cfg!(debug_assertions) {
            let errs = forgec_ir::verify::verify(g);
            if !errs.is_empty() {
                return Err(errs
                    .into_iter()
                    .map(|e| format!("internal error: the graph is invalid after pass '{p}': {e}"))
                    .collect());
            }
        }
    }
    Ok(())
}

fn run_one(g: &mut Graph, p: &str) -> Result<(), Vec<String>> {
    {
        match p {
            "shape-inference" => shape::infer_shapes(g)
                .map_err(|ds| ds.iter().map(|d| d.to_string()).collect::<Vec<_>>())?,
            "strip-dropout" => cleanup::strip_dropout(g),
            "dce" => cleanup::dce(g),
            "fold-constants" => fold::fold_constants(g),
            "fold-batchnorm" => fold::fold_batchnorm(g),
            "cse" => simplify::cse(g),
            "identity" => simplify::identity(g),
            "channels-last" => layout::channels_last(g),
            "sink-transposes" => layout::sink_transposes(g),
            "fold-pad" => fold::fold_pad(g),
            "lower-conv-transpose" => lower::conv_transpose_to_conv(g),
            other => {
                return Err(vec![format!(
                    "unknown pass '{other}' (known: {})",
                    PASSES.join(", ")
                )])
            }
        }
    }
    Ok(())
}
