//! forgec-ir: the typed graph IR.
//!
//! - [`types`]: element types and shapes whose dims are known sizes or named symbols.
//! - [`op`]: the op set; [`infer`]: each op's type rule.
//! - [`graph`]: values, nodes (each with its [`Origin`]), graphs and the builder API.
//! - [`verify`]: the invariants; [`text`]: the stable text form; [`interp`]: the reference
//!   interpreter.

pub mod graph;
pub mod infer;
pub mod interp;
pub mod op;
pub mod ops;
pub mod text;
pub mod types;
pub mod verify;

pub use forgec_runtime::{DType, Tensor};
pub use graph::{Graph, Node, Origin, TypeError, Value, ValueId};
pub use op::*;
pub use types::{keras_shape, Dim, TensorType};
