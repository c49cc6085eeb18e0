//! forgec-runtime: the small crate an application needs to feed and read compiled models.
//!
//! It owns the host [`Tensor`] type and `.npy` / `.npz` I/O, loads compiled libraries
//! ([`compiled`]) and runs training on them ([`fit`]: Keras's `fit`, its callbacks, crash-safe
//! checkpoints). It never depends on LLVM or MLIR.

pub mod compiled;
pub mod device;
pub mod fit;
mod npy;
mod tensor;

pub use npy::{
    map_npy, map_npz, read_npy, read_npy_bytes, read_npz, write_npy, write_npy_bytes, write_npz,
    MappedNpy, NpyError,
};
pub use tensor::{DType, Data, Tensor, TensorError};
