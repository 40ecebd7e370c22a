//! What an op is for the PTQ: its class (how scales flow through it), which inputs carry
//! data, and when its output is provably non-negative. Each op answers for itself through
//! the `Op` trait; the types here are the vocabulary (the table of docs/algorithm.md).

use crate::tensor::Tensor;
use std::collections::{BTreeMap, HashSet};

#[derive(Debug, Clone, PartialEq)]
pub enum Class {
    /// `y = x * W + b` with constant W (and b): Conv, Gemm, MatMul.
    Affine,
    /// Positively homogeneous in its first input: a scale passes through unchanged.
    Seamless,
    /// Inputs must share one scale: Add, Sum, Sub, Concat of activations.
    Merging,
    /// Clip: homogeneous once its bounds are divided by the input scale.
    Bounded,
    /// Not scale-invariant: runs on real values, dequantized before and requantized after.
    FloatIsland(String),
    /// A PTQ Scaling node.
    Scaling,
    /// Reads no float activation (shape arithmetic, constants): scales do not apply.
    Passive,
}

/// Which inputs of a node carry data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataInputs {
    /// The first input only (the rest are parameters: weights, shapes, bounds).
    First,
    /// Every non-empty input (merging ops).
    All,
}

/// When an op's output is provably non-negative, whatever the model's input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignRule {
    /// Nothing is known.
    Unknown,
    /// Always (Relu, Abs, a clip or quantizer bounded below at 0).
    NonNegative,
    /// When all its data inputs are (data movement, max and average pooling, Add, Concat).
    FollowsInputs,
}

/// What the PTQ rules of an op may look at: its node's inputs, which of them are constants
/// (and their values) and which are activations.
pub struct NodeFacts<'a> {
    pub name: &'a str,
    pub inputs: &'a [String],
    pub initializers: &'a BTreeMap<String, Tensor>,
    /// The float values that depend on a graph input.
    pub activations: &'a HashSet<String>,
}

impl<'a> NodeFacts<'a> {
    /// Input `i`'s name ("" when omitted).
    pub fn input(&self, i: usize) -> &'a str {
        self.inputs.get(i).map(String::as_str).unwrap_or("")
    }
    /// Input `i`'s value when it is a constant.
    pub fn constant(&self, i: usize) -> Option<&'a Tensor> {
        self.initializers.get(self.input(i))
    }
    pub fn is_constant(&self, i: usize) -> bool {
        self.constant(i).is_some()
    }
    /// Whether input `i` is omitted or a constant.
    pub fn is_omitted_or_constant(&self, i: usize) -> bool {
        self.input(i).is_empty() || self.is_constant(i)
    }
    pub fn is_activation(&self, i: usize) -> bool {
        self.activations.contains(self.input(i))
    }
    /// Every input as a constant or `None` (for ops whose parameters come as inputs).
    pub fn constant_inputs(&self) -> Vec<Option<&'a Tensor>> {
        (0..self.inputs.len()).map(|i| self.constant(i)).collect()
    }
    /// Whether input `i` is an all-zero constant.
    pub fn is_zero_constant(&self, i: usize) -> bool {
        self.constant(i)
            .is_some_and(|t| t.to_f32_vec().iter().all(|&x| x == 0.0))
    }
}
