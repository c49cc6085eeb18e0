//! forgec: a graph compiler and ahead-of-time exporter for Keras and ONNX models.
//!
//! This crate is the command-line tool ([`cli`]) alone. The importers live in `forgec-import`,
//! the IR in `forgec-ir`, the passes in `forgec-passes`, the code generator in
//! `forgec-codegen`, tensors, `.npy` I/O and the compiled-library loader in `forgec-runtime`.

pub mod cli;
pub use forgec_codegen as codegen;
pub use forgec_import::{keras, load_any, load_model, onnx, Model};

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
