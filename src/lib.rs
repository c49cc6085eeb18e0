//! forgec: a graph compiler and ahead-of-time exporter for Keras and ONNX models.
//!
//! This crate holds the importers ([`keras`]) and the command-line tool ([`cli`]). The IR lives
//! in `forgec-ir`, the passes in `forgec-passes`, tensors and `.npy` I/O in `forgec-runtime`.

pub mod cli;
pub mod keras;

use std::path::Path;

/// An error for the user: the message and the process exit code (2: bad input).
#[derive(Debug)]
pub struct UserError {
    pub message: String,
    pub code: i32,
}

impl UserError {
    pub fn new(message: impl Into<String>) -> UserError {
        UserError {
            message: message.into(),
            code: 2,
        }
    }
}

impl std::fmt::Display for UserError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// Loads a model file of any supported kind, by content and extension.
pub fn load_model(
    path: &Path,
    opts: &keras::LoadOptions,
) -> Result<keras::KerasModel, keras::ImportError> {
    if path.extension().is_some_and(|e| e == "onnx") {
        return Err(keras::ImportError {
            problems: vec![format!(
                "{}: ONNX import is not available yet in this version of forgec; use the model's Keras files (.keras, .json + .weights.h5, .h5)",
                path.display()
            )],
            shape_only: false,
        });
    }
    keras::load(path, opts)
}
