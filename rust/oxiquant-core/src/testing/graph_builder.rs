//! A graph builder for tests: nodes, initializers, inputs and outputs in a few chained calls
//! instead of `RawNode` / `RawGraph` literals, checked by `Graph::from_raw` like a model file.
//!
//! ```ignore
//! let g = GraphBuilder::new()
//!     .input("x", &[1, 2, 4, 4])
//!     .weights("w", &[3, 2, 3, 3], 1)
//!     .node("Conv", &["x", "w"], &["y"]).attr("pads", ints(&[1, 1, 1, 1]))
//!     .node("Relu", &["y"], &["out"])
//!     .output("out")
//!     .build();
//! ```

use crate::error::Result;
use crate::graph::{Dim, Graph, ValueInfo};
use crate::onnx::{AttrValue, RawGraph, RawNode};
use crate::tensor::{DType, Tensor};

/// An `ints` attribute.
pub fn ints(v: &[i64]) -> AttrValue {
    AttrValue::Ints(v.to_vec())
}

/// One ONNX node of the default domain.
pub fn raw_node(name: &str, op: &str, inputs: &[&str], outputs: &[&str], attrs: Vec<(String, AttrValue)>) -> RawNode {
    RawNode {
        name: name.to_string(),
        op_type: op.to_string(),
        domain: String::new(),
        inputs: inputs.iter().map(|s| s.to_string()).collect(),
        outputs: outputs.iter().map(|s| s.to_string()).collect(),
        attrs,
    }
}

/// Builds a `RawGraph` (and from it a checked `Graph`) node by node.
#[derive(Debug, Clone)]
pub struct GraphBuilder {
    raw: RawGraph,
}

impl Default for GraphBuilder {
    fn default() -> Self {
        GraphBuilder::new()
    }
}

impl GraphBuilder {
    /// An empty graph at ai.onnx opset 13.
    pub fn new() -> GraphBuilder {
        GraphBuilder {
            raw: RawGraph {
                name: "test".into(),
                opset: 13,
                nodes: Vec::new(),
                initializers: Vec::new(),
                inputs: Vec::new(),
                outputs: Vec::new(),
            },
        }
    }

    pub fn opset(mut self, opset: i64) -> Self {
        self.raw.opset = opset;
        self
    }

    /// A float32 input of fixed shape.
    pub fn input(self, name: &str, shape: &[usize]) -> Self {
        self.input_typed(name, DType::F32, Some(shape.iter().map(|&d| Dim::Fixed(d)).collect()))
    }

    /// A float32 input whose first dimension is free (a batch of any size).
    pub fn batched_input(self, name: &str, shape: &[usize]) -> Self {
        let mut dims: Vec<Dim> = shape.iter().map(|&d| Dim::Fixed(d)).collect();
        if let Some(d) = dims.first_mut() {
            *d = Dim::Symbolic("N".into());
        }
        self.input_typed(name, DType::F32, Some(dims))
    }

    pub fn input_typed(mut self, name: &str, dtype: DType, shape: Option<Vec<Dim>>) -> Self {
        self.raw.inputs.push(ValueInfo {
            name: name.into(),
            dtype,
            shape,
        });
        self
    }

    /// An initializer.
    pub fn init(mut self, name: &str, t: Tensor) -> Self {
        self.raw.initializers.push((name.into(), t));
        self
    }

    /// A float32 initializer of `shape` with seeded values in [-1, 1].
    pub fn weights(self, name: &str, shape: &[usize], seed: u64) -> Self {
        self.init(name, super::tensor(shape, seed, 1.0))
    }

    /// A node named after its op and position (`Conv_3`); `attr`, `named` and `domain`
    /// change the node added last.
    pub fn node(mut self, op: &str, inputs: &[&str], outputs: &[&str]) -> Self {
        let name = format!("{op}_{}", self.raw.nodes.len());
        self.raw.nodes.push(raw_node(&name, op, inputs, outputs, Vec::new()));
        self
    }

    pub fn attr(mut self, name: &str, v: AttrValue) -> Self {
        self.last().attrs.push((name.into(), v));
        self
    }

    pub fn named(mut self, name: &str) -> Self {
        self.last().name = name.into();
        self
    }

    pub fn domain(mut self, domain: &str) -> Self {
        self.last().domain = domain.into();
        self
    }

    fn last(&mut self) -> &mut RawNode {
        self.raw
            .nodes
            .last_mut()
            .expect("a node was added before its attributes")
    }

    /// A float32 graph output of any shape.
    pub fn output(self, name: &str) -> Self {
        self.output_typed(name, DType::F32)
    }

    pub fn output_typed(mut self, name: &str, dtype: DType) -> Self {
        self.raw.outputs.push(ValueInfo {
            name: name.into(),
            dtype,
            shape: None,
        });
        self
    }

    /// The parts as they are (for tests of `Graph::from_raw` itself).
    pub fn raw(self) -> RawGraph {
        self.raw
    }

    pub fn try_build(self) -> Result<Graph> {
        Graph::from_raw(self.raw)
    }

    /// The checked graph; panics with the loader's message if it is refused.
    pub fn build(self) -> Graph {
        match Graph::from_raw(self.raw) {
            Ok(g) => g,
            Err(e) => panic!("the test graph is refused: {e}"),
        }
    }
}
