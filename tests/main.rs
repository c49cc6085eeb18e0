//! The one integration-test crate (every binary linking the compiler is large).

mod common;

mod bad_input;
mod check;
mod compile;
mod devices;
mod golden;
mod keras_models;
mod onnx_models;
mod security;
mod train;
