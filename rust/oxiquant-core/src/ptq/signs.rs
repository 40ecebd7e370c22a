//! Which quantized tensors can use the unsigned range (`optimize_signs`): those provably
//! non-negative, from the graph's structure alone (never from the calibration data, which
//! proves nothing about other inputs).

use super::classify::Class;
use super::insert_scaling::{branch_owner, node_classes};
use super::PtqState;
use crate::graph::Graph;
use crate::ops::{BinaryOp, Clip, Op, Unary};
use crate::tensor::Tensor;
use std::collections::HashMap;

fn clip_lo(graph: &Graph, idx: usize) -> f32 {
    let n = &graph.nodes[idx];
    let Op::Clip(c) = n.op else { return f32::NEG_INFINITY };
    let args: Vec<Option<&Tensor>> = n.inputs.iter().map(|v| graph.initializers.get(v)).collect();
    Clip::bounds(&c, &args).map(|b| b.0).unwrap_or(f32::NEG_INFINITY)
}

/// Whether `value` is >= 0 whatever the input.
pub fn non_negative(graph: &Graph, value: &str, classes: &HashMap<String, Class>, depth: usize) -> bool {
    if depth > 10_000 {
        return false;
    }
    let Some(p) = graph.producer(value) else { return false };
    let n = &graph.nodes[p];
    let rec = |v: &str| non_negative(graph, v, classes, depth + 1);
    match &n.op {
        Op::Unary(Unary::Relu | Unary::Abs) => true,
        Op::Clip(_) => clip_lo(graph, p) >= 0.0 || rec(&n.inputs[0]),
        // A quantizer clamped at 0 (an unsigned one) or a positive factor of a non-negative input.
        Op::Scaling(s) => s.quant.is_some_and(|q| q.lo >= 0.0) || rec(&n.inputs[0]),
        Op::Binary(BinaryOp::Add) | Op::Sum | Op::Concat { .. } => n.inputs.iter().all(|v| rec(v)),
        _ if matches!(classes.get(&n.name), Some(Class::Seamless)) && !matches!(n.op, Op::Unary(_)) => {
            rec(&n.inputs[0])
        }
        _ => false,
    }
}

/// Whether every reader of `value` clamps it at 0 (so negative values need no code).
fn clamped_by_readers(graph: &Graph, value: &str) -> bool {
    let readers = graph.consumers(value);
    !readers.is_empty()
        && !graph.is_graph_output(value)
        && readers.iter().all(|&(c, slot)| {
            slot == 0
                && match graph.nodes[c].op {
                    Op::Unary(Unary::Relu) => true,
                    Op::Clip(_) => clip_lo(graph, c) >= 0.0,
                    _ => false,
                }
        })
}

/// Scaling node name -> signed. Without `optimize_signs` everything is signed. The inputs
/// of one merging node share a sign (they must share an integer unit).
pub fn signedness(graph: &Graph, state: &PtqState, optimize_signs: bool) -> HashMap<String, bool> {
    let classes = node_classes(graph);
    let mut signed: HashMap<String, bool> = HashMap::new();
    for n in &graph.nodes {
        if !state.scaling.contains_key(&n.name) {
            continue;
        }
        let unsigned = optimize_signs
            && (non_negative(graph, &n.outputs[0], &classes, 0) || clamped_by_readers(graph, &n.outputs[0]));
        signed.insert(n.name.clone(), !unsigned);
    }
    for (m, n) in graph.nodes.iter().enumerate() {
        if !matches!(classes.get(&n.name), Some(Class::Merging)) {
            continue;
        }
        let owners: Vec<usize> = (0..n.inputs.len())
            .filter_map(|s| branch_owner(graph, m, s, &classes))
            .collect();
        let any_signed = owners
            .iter()
            .any(|&o| signed.get(&graph.nodes[o].name).copied().unwrap_or(true));
        for o in owners {
            signed.insert(graph.nodes[o].name.clone(), any_signed);
        }
    }
    signed
}
