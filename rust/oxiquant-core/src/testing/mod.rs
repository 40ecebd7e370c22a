//! Helpers for the crate's tests (unit tests, and `tests/*.rs` through the `testing`
//! feature, which the crate's dev-dependency on itself turns on): a graph builder, seeded
//! data, and small networks the PTQ passes have something to do on. Not part of the API.

pub mod graph_builder;
pub mod networks;

pub use graph_builder::{ints, raw_node, GraphBuilder};

use crate::graph::{Node, ValueInfo};
use crate::ops::Op;
use crate::tensor::{DType, Tensor};
use std::collections::HashMap;

/// A built node with one output, for tests that assemble a `Graph` directly (integer-dialect
/// nodes, which are never parsed from ONNX).
pub fn op_node(name: &str, op: Box<dyn Op>, inputs: &[&str], out: &str) -> Node {
    Node {
        name: name.into(),
        op,
        inputs: inputs.iter().map(|s| s.to_string()).collect(),
        outputs: vec![out.into()],
    }
}

/// A float32 graph value of unknown shape.
pub fn f32_value(name: &str) -> ValueInfo {
    ValueInfo {
        name: name.into(),
        dtype: DType::F32,
        shape: None,
    }
}

/// `len` reproducible values in [-1, 1] (xorshift from `seed`, three decimals).
pub fn values(len: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) % 2001) as f32 / 1000.0 - 1.0
        })
        .collect()
}

/// A float32 tensor of `shape` filled by `values(_, seed)` times `scale`.
pub fn tensor(shape: &[usize], seed: u64, scale: f32) -> Tensor {
    let v = values(shape.iter().product(), seed)
        .into_iter()
        .map(|x| x * scale)
        .collect();
    Tensor::from_vec(shape.to_vec(), v).expect("the length is the shape's")
}

/// Feeds for `exec::run`.
pub fn feeds(pairs: &[(&str, &Tensor)]) -> HashMap<String, Tensor> {
    pairs.iter().map(|(n, t)| (n.to_string(), (*t).clone())).collect()
}
