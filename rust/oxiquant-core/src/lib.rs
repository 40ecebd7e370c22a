//! oxiquant core: the graph IR, CPU inference kernels and graph passes. Pure Rust: no Python
//! in here (the `oxiquant-py` crate holds the bindings).

pub mod error;
pub mod exec;
pub mod graph;
pub mod int;
pub mod kernels;
pub mod model;
pub mod onnx;
pub mod ops;
pub mod passes;
pub mod ptq;
pub mod tensor;

#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub use error::{Error, Result};
pub use graph::Graph;
pub use model::Model;
pub use tensor::{DType, Tensor};
