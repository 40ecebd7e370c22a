//! Which quantized tensors can use the unsigned range (`optimize_signs`): those provably
//! non-negative, from the graph's structure alone (never from the calibration data, which
//! proves nothing about other inputs).

use super::classify::{activations, data_inputs, facts, Class};
use super::clipping::levels;
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

/// The integer grid of one quantizer (a Scaling node of the quantized network).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grid {
    /// Codes `-Q-1..=Q` with `Q = levels(bits, true)`; the node's scale is code `Q`.
    Signed,
    /// Codes `0..=levels(bits, false)`; the scale is the top code.
    Unsigned,
    /// Codes `0..=levels(bits, false)` on the signed grid's unit (the scale is code
    /// `levels(bits, true)`, half way up): a provably non-negative input of an Add or Sub
    /// whose other inputs are signed. A merge's inputs share one integer unit, and the Add
    /// sums them in 32 bits before its own quantizer, so their code ranges may differ: the
    /// non-negative input (a residual shortcut after a Relu) keeps every code of its width
    /// instead of wasting the negative half.
    UnsignedSharedUnit,
}

impl Grid {
    pub fn signed(self) -> bool {
        self == Grid::Signed
    }
    /// The code that stands for the node's scale.
    pub fn unit_levels(self, bits: u32) -> u32 {
        levels(bits, self != Grid::Unsigned)
    }
    /// The lowest and highest code (signed: two's complement, as ONNX int8/int4 saturate).
    pub fn bounds(self, bits: u32) -> (f32, f32) {
        match self {
            Grid::Signed => (-(levels(bits, true) as f32) - 1.0, levels(bits, true) as f32),
            _ => (0.0, levels(bits, false) as f32),
        }
    }
    /// The node's scale over its clipping value (the real value of the top code).
    pub fn scale_per_clip(self, bits: u32) -> f32 {
        match self {
            Grid::UnsignedSharedUnit => levels(bits, true) as f32 / levels(bits, false) as f32,
            _ => 1.0,
        }
    }
}

/// Whether a merge may read inputs of different code ranges on one unit: an Add, Sub or Sum
/// computes in 32 bits and requantizes; a Concat passes the codes on, so its inputs share
/// one range.
fn sums_its_inputs(graph: &Graph, merge: usize) -> bool {
    matches!(graph.nodes[merge].op.op_type(), "Add" | "Sub" | "Sum")
}

/// Scaling node name -> its grid. Without `optimize_signs` everything is signed. The inputs
/// of one merging node share an integer unit: when one of them is signed, the others are
/// signed too, or, if they are provably non-negative and the merge sums them,
/// `UnsignedSharedUnit`.
pub fn grids(graph: &Graph, state: &PtqState, optimize_signs: bool) -> HashMap<String, Grid> {
    let classes = node_classes(graph, &state.excluded);
    let acts = activations(graph);
    let mut grid: HashMap<String, Grid> = HashMap::new();
    for n in &graph.nodes {
        if !state.scaling.contains_key(&n.name) {
            continue;
        }
        let unsigned = optimize_signs
            && (non_negative(graph, &n.outputs[0], &classes, &acts, 0)
                || clamped_by_readers(graph, &n.outputs[0], &acts));
        grid.insert(n.name.clone(), if unsigned { Grid::Unsigned } else { Grid::Signed });
    }
    for (m, n) in graph.nodes.iter().enumerate() {
        if !matches!(classes.get(&n.name), Some(Class::Merging)) {
            continue;
        }
        let owners: Vec<usize> = (0..n.inputs.len())
            .filter_map(|s| branch_owner(graph, m, s, &classes))
            .collect();
        let grid_of = |o: usize| grid.get(&graph.nodes[o].name).copied().unwrap_or(Grid::Signed);
        if !owners.iter().any(|&o| grid_of(o) == Grid::Signed) {
            continue;
        }
        let shared = if sums_its_inputs(graph, m) {
            Grid::UnsignedSharedUnit
        } else {
            Grid::Signed
        };
        let widened: Vec<usize> = owners.into_iter().filter(|&o| grid_of(o) != Grid::Signed).collect();
        for o in widened {
            grid.insert(graph.nodes[o].name.clone(), shared);
        }
    }
    grid
}
