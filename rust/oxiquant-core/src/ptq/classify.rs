//! Node classes: how scales flow through each op (the table of docs/algorithm.md).

use crate::graph::{Graph, Node};
use crate::ops::{DataInputs, Gather, NodeFacts, Op};
use crate::tensor::DType;
use std::collections::HashSet;

pub use crate::ops::Class;

/// Outputs of embedding lookups: a Gather of a float32 constant table by indices computed
/// at run time (token ids). They are activations without a float graph input behind them,
/// quantized like graph inputs.
pub fn embedding_outputs(graph: &Graph) -> Vec<String> {
    graph
        .nodes
        .iter()
        .filter(|n| {
            n.op.is::<Gather>()
                && n.inputs.len() == 2
                && graph
                    .initializers
                    .get(&n.inputs[0])
                    .is_some_and(|t| t.dtype() == DType::F32)
                && !graph.initializers.contains_key(&n.inputs[1])
        })
        .map(|n| n.outputs[0].clone())
        .collect()
}

/// Float values that depend on a graph input or an embedding lookup (the activations the PTQ
/// scales). Values computed from integer inputs alone (a token mask cast to float, shape
/// arithmetic) are not: they stay as they are.
pub fn activations(graph: &Graph) -> HashSet<String> {
    let mut acts: HashSet<String> = graph
        .runtime_inputs()
        .filter(|i| i.dtype == DType::F32)
        .map(|i| i.name.clone())
        .collect();
    acts.extend(embedding_outputs(graph));
    for n in &graph.nodes {
        let reads_act = data_inputs(n.op.as_ref(), n).iter().any(|v| acts.contains(*v));
        if reads_act && n.op.carries_activation() {
            acts.extend(n.outputs.iter().cloned());
        }
    }
    acts
}

/// The inputs that carry data (not shapes, pads, bounds or parameters).
pub fn data_inputs<'a>(op: &dyn Op, n: &'a Node) -> Vec<&'a str> {
    match op.data_inputs() {
        DataInputs::All => n.inputs.iter().map(String::as_str).filter(|s| !s.is_empty()).collect(),
        DataInputs::First => n.inputs.first().map(String::as_str).into_iter().collect(),
    }
}

/// What the op's PTQ rules may know of node `n`.
pub fn facts<'a>(graph: &'a Graph, n: &'a Node, acts: &'a HashSet<String>) -> NodeFacts<'a> {
    NodeFacts {
        name: &n.name,
        inputs: &n.inputs,
        initializers: &graph.initializers,
        activations: acts,
    }
}

/// The class of node `n`; `acts` comes from `activations`.
pub fn classify(graph: &Graph, n: &Node, acts: &HashSet<String>) -> Class {
    if !data_inputs(n.op.as_ref(), n).iter().any(|v| acts.contains(*v)) {
        return Class::Passive;
    }
    n.op.ptq_class(&facts(graph, n, acts))
}
