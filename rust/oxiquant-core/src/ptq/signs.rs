//! Which quantized tensors can use the unsigned range (`optimize_signs`): those provably
//! non-negative, from the graph's structure alone (never from the calibration data, which
//! proves nothing about other inputs).

use super::classify::{activations, data_inputs, facts, Class};
use super::insert_scaling::{branch_owner, node_classes};
use super::PtqState;
use crate::graph::Graph;
use crate::ops::SignRule;
use std::collections::{HashMap, HashSet};

/// Whether `value` is >= 0 whatever the input: the producer's sign rule, followed back
/// through the ops whose output is non-negative when their data inputs are.
pub fn non_negative(
    graph: &Graph,
    value: &str,
    classes: &HashMap<String, Class>,
    acts: &HashSet<String>,
    depth: usize,
) -> bool {
    if depth > 10_000 {
        return false;
    }
    let Some(p) = graph.producer(value) else { return false };
    let n = &graph.nodes[p];
    match n.op.sign_rule(&facts(graph, n, acts)) {
        SignRule::NonNegative => true,
        // A node that reads no activation (shape arithmetic) proves nothing of one.
        SignRule::FollowsInputs if !matches!(classes.get(&n.name), Some(Class::Passive) | None) => {
            data_inputs(n.op.as_ref(), n)
                .iter()
                .all(|v| non_negative(graph, v, classes, acts, depth + 1))
        }
        _ => false,
    }
}

/// Whether every reader of `value` clamps it at 0 (so negative values need no code).
fn clamped_by_readers(graph: &Graph, value: &str, acts: &HashSet<String>) -> bool {
    let readers = graph.consumers(value);
    !readers.is_empty()
        && !graph.is_graph_output(value)
        && readers.iter().all(|&(c, slot)| {
            let n = &graph.nodes[c];
            slot == 0 && n.op.clamps_negatives(&facts(graph, n, acts))
        })
}

/// Scaling node name -> signed. Without `optimize_signs` everything is signed. The inputs
/// of one merging node share a sign (they must share an integer unit).
pub fn signedness(graph: &Graph, state: &PtqState, optimize_signs: bool) -> HashMap<String, bool> {
    let classes = node_classes(graph, &state.excluded);
    let acts = activations(graph);
    let mut signed: HashMap<String, bool> = HashMap::new();
    for n in &graph.nodes {
        if !state.scaling.contains_key(&n.name) {
            continue;
        }
        let unsigned = optimize_signs
            && (non_negative(graph, &n.outputs[0], &classes, &acts, 0)
                || clamped_by_readers(graph, &n.outputs[0], &acts));
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
