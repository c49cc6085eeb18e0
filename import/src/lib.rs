//! forgec-import: Keras and ONNX model files to forgec's IR.
//!
//! A model file is untrusted input: every size read from it is checked before anything is
//! allocated, and HDF5 (whose C library can crash on malformed files) is read in a child
//! process (see `keras::weights`).

pub mod error;
pub mod keras;
pub mod onnx;

pub use error::ImportError;

use std::path::Path;

/// A model from any supported file.
#[derive(Debug)]
pub enum Model {
    Keras(keras::KerasModel),
    Onnx(onnx::OnnxModel),
}

impl Model {
    pub fn graph(&self) -> &forgec_ir::Graph {
        match self {
            Model::Keras(m) => &m.graph,
            Model::Onnx(m) => &m.graph,
        }
    }

    pub fn into_graph(self) -> forgec_ir::Graph {
        match self {
            Model::Keras(m) => m.graph,
            Model::Onnx(m) => m.graph,
        }
    }
}

fn is_onnx(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("onnx"))
}

/// Loads a model file of any supported kind: `.onnx` by extension, Keras files by content.
pub fn load_any(path: &Path, opts: &keras::LoadOptions) -> Result<Model, ImportError> {
    if is_onnx(path) {
        onnx::load(path).map(Model::Onnx)
    } else {
        keras::load(path, opts).map(Model::Keras)
    }
}

/// Loads a Keras model (commands that need Keras's compile config or layer table).
pub fn load_model(
    path: &Path,
    opts: &keras::LoadOptions,
) -> Result<keras::KerasModel, ImportError> {
    if is_onnx(path) {
        return Err(ImportError::one(format!(
            "{}: this command needs the model's Keras files (.keras, .json + .weights.h5, .h5): an ONNX file has no loss or layer configs",
            path.display()
        )));
    }
    keras::load(path, opts)
}
