//! Step 2, `insert_scaling_nodes`: a Scaling node (factor 1) after every graph input and
//! embedding lookup (a Gather of a constant float table by run-time indices), affine
//! node and merging node; on every merge input edge that has no Scaling node of its own; and
//! around float islands (a dequantizer before, a requantizer after). The function is
//! unchanged exactly.

use super::classify::{activations, classify, Class};
use super::{PtqState, Role, ScalingInfo, Stage};
use crate::error::Result;
use crate::graph::Graph;
use crate::ops::{MatMul, Scaling};
use crate::tensor::DType;
use std::collections::{BTreeSet, HashMap, HashSet};

fn info(role: Role, output: String) -> ScalingInfo {
    ScalingInfo {
        role,
        output,
        stats: None,
        calib_scale: 1.0,
        clip: None,
        clipping: None,
        scale_per_clip: 1.0,
        bits: None,
        signed: true,
        step: None,
        codes: None,
        power_of_two: None,
    }
}

fn add_after(graph: &mut Graph, state: &mut PtqState, value: &str, name: &str, role: Role) -> Result<()> {
    let idx = graph.insert_after(value, name, Scaling::identity())?;
    let n = &graph.nodes[idx];
    state.scaling.insert(n.name.clone(), info(role, n.outputs[0].clone()));
    Ok(())
}

fn add_on_edge(
    graph: &mut Graph,
    state: &mut PtqState,
    node: usize,
    slot: usize,
    name: &str,
    role: Role,
) -> Result<()> {
    let idx = graph.insert_on_edge(node, slot, name, Scaling::identity())?;
    let n = &graph.nodes[idx];
    state.scaling.insert(n.name.clone(), info(role, n.outputs[0].clone()));
    Ok(())
}

/// The Scaling node that a merge input edge `(merge, slot)` may rebalance on its own: walking
/// up through seamless nodes (with no other output in use), each value read only here, to a
/// Scaling node read only here.
pub fn branch_owner(graph: &Graph, merge: usize, slot: usize, classes: &HashMap<String, Class>) -> Option<usize> {
    let mut cur = graph.nodes.get(merge)?.inputs.get(slot)?.clone();
    loop {
        if graph.consumers(&cur).len() != 1 || graph.is_graph_output(&cur) {
            return None;
        }
        let p = graph.producer(&cur)?;
        let node = &graph.nodes[p];
        // A seamless node with other outputs in use (a Split) shares the Scaling node above
        // with them: rescaling it for this merge would rescale them too.
        let shared = node
            .outputs
            .iter()
            .any(|o| *o != cur && (!graph.consumers(o).is_empty() || graph.is_graph_output(o)));
        match classes.get(&node.name) {
            _ if node.op.is::<Scaling>() => return Some(p),
            Some(Class::Seamless) if !shared => cur = node.inputs.first()?.clone(),
            _ => return None,
        }
    }
}

/// The class of every node, by name; the nodes in `excluded` that read an activation are
/// float islands.
pub fn node_classes(graph: &Graph, excluded: &BTreeSet<String>) -> HashMap<String, Class> {
    let acts = activations(graph);
    let mut classes = graph
        .nodes
        .iter()
        .map(|n| {
            let mut c = classify(graph, n, &acts);
            if excluded.contains(&n.name) && !matches!(c, Class::Passive | Class::Scaling) {
                c = Class::FloatIsland(super::exclude::REASON.into());
            }
            (n.name.clone(), c)
        })
        .collect();
    super::classify::float_followers(graph, &mut classes, &acts);
    classes
}

pub fn insert_scaling_nodes(graph: &mut Graph, state: &mut PtqState) -> Result<()> {
    state.expect("insert_scaling_nodes", Stage::Prepared, &[])?;
    let classes = node_classes(graph, &state.excluded);
    let acts = activations(graph);
    // MatMuls of two activations (attention's Q K^T, softmax(.) V) take quantized operands
    // and have their product requantized: `integer_matmul` then multiplies the integers.
    let bilinear: HashSet<String> = graph
        .nodes
        .iter()
        .filter(|n| {
            n.op.is::<MatMul>()
                && matches!(classes.get(&n.name), Some(Class::FloatIsland(_)))
                && n.inputs.len() == 2
                && n.inputs.iter().all(|v| acts.contains(v))
        })
        .map(|n| n.name.clone())
        .collect();
    // Whether only float islands read value `v` (none of them a MatMul of two activations or
    // an island that may become a lookup table, `table_candidate`, which reads 8 bits).
    let only_floats_read = |v: &str| {
        let readers = graph.consumers(v);
        !readers.is_empty()
            && !graph.is_graph_output(v)
            && readers.iter().all(|&(c, _)| {
                let r = &graph.nodes[c];
                !bilinear.contains(&r.name)
                    && matches!(classes.get(&r.name), Some(Class::FloatIsland(_)))
                    && !super::classify::table_candidate(graph, r, &acts, &classes)
            })
    };
    // Affine nodes whose output only float islands read (a MatMul before its bias Add and a
    // LayerNorm, a classifier's last layer before its Softmax) keep it in float: a
    // dequantizer takes their accumulator straight to real values, as a runtime's
    // integer-to-float matrix product does. Requantizing it to 8 bits would only round, and
    // coarsely where the outputs have outliers (a transformer's feed-forward output).
    let float_out_affine: HashSet<String> = graph
        .nodes
        .iter()
        .filter(|n| matches!(classes.get(&n.name), Some(Class::Affine)) && only_floats_read(&n.outputs[0]))
        .map(|n| n.name.clone())
        .collect();
    // A graph input that only float islands read stays float: quantizing it would only round
    // what the islands compute in float (an LSTM's recurrent state, a whole network inside
    // an If).
    let inputs: Vec<String> = graph
        .runtime_inputs()
        .filter(|i| i.dtype == DType::F32 && acts.contains(&i.name))
        .map(|i| i.name.clone())
        .collect();
    let (float_sources, mut sources): (Vec<String>, Vec<String>) =
        inputs.into_iter().partition(|v| only_floats_read(v));
    let float_sources: HashSet<String> = float_sources.into_iter().collect();
    // Embedding lookups start activations as graph inputs do (always quantized: their
    // table is stored in 8 bits).
    sources.extend(super::classify::embedding_outputs(graph));
    for name in sources {
        add_after(graph, state, &name, &format!("{name}_quantizer"), Role::Input)?;
    }
    let snapshot: Vec<(String, String)> = graph
        .nodes
        .iter()
        .filter(|n| !n.op.is::<Scaling>())
        .map(|n| (n.name.clone(), n.outputs[0].clone()))
        .collect();
    // They are listed as float nodes no longer: `integer_matmul` multiplies their integers
    // (and puts back any it cannot).
    state.float_nodes.retain(|(n, _, _)| !bilinear.contains(n));
    let mut to_float: HashSet<String> = HashSet::new();
    for (name, out) in &snapshot {
        let role = match classes.get(name) {
            Some(Class::Affine) if float_out_affine.contains(name) => {
                let scaler = format!("{name}_to_float");
                add_after(graph, state, out, &scaler, Role::Dequant)?;
                to_float.insert(scaler);
                continue;
            }
            Some(Class::Affine) => Role::Affine,
            Some(Class::Merging) => Role::Merge,
            Some(Class::FloatIsland(_)) => {
                // Requantize an island's output unless only islands (or nothing) read it.
                let feeds_quantized = bilinear.contains(name)
                    || graph.consumers(out).iter().any(|&(c, _)| {
                        let reader = &graph.nodes[c].name;
                        bilinear.contains(reader)
                            || !matches!(classes.get(reader), Some(Class::FloatIsland(_) | Class::Passive))
                    });
                if !feeds_quantized {
                    continue;
                }
                Role::IslandOutput
            }
            _ => continue,
        };
        add_after(graph, state, out, &format!("{name}_scaling"), role)?;
    }
    // Dequantize every activation that enters an island (in any slot: MatMul's B, Where's
    // branches ...), unless it comes straight from another island.
    for (name, _) in &snapshot {
        if !matches!(classes.get(name), Some(Class::FloatIsland(_))) {
            continue;
        }
        let Some(idx) = graph.node_index(name) else { continue };
        for slot in 0..graph.nodes[idx].inputs.len() {
            let Some(idx) = graph.node_index(name) else { continue };
            let v = graph.nodes[idx].inputs[slot].clone();
            let from_island = graph
                .producer(&v)
                .is_some_and(|p| matches!(classes.get(&graph.nodes[p].name), Some(Class::FloatIsland(_))));
            // (Values an affine node's dequantizer writes are real already.)
            let real = graph
                .producer(&v)
                .is_some_and(|p| to_float.contains(&graph.nodes[p].name));
            let quantized = acts.contains(&v) && !from_island && !float_sources.contains(&v);
            let after_scaling = graph.producer(&v).is_some_and(|p| is_scaling(graph, p));
            if !real && (quantized || after_scaling) {
                add_on_edge(graph, state, idx, slot, &format!("{name}_dequant{slot}"), Role::Dequant)?;
            }
        }
    }
    // Give every merge input a Scaling node of its own.
    let classes = node_classes(graph, &state.excluded);
    for (name, _) in &snapshot {
        if !matches!(classes.get(name), Some(Class::Merging)) {
            continue;
        }
        let Some(idx) = graph.node_index(name) else { continue };
        for slot in 0..graph.nodes[idx].inputs.len() {
            let Some(idx) = graph.node_index(name) else { continue };
            if branch_owner(graph, idx, slot, &classes).is_none() {
                add_on_edge(graph, state, idx, slot, &format!("{name}_branch{slot}"), Role::Branch)?;
            }
        }
    }
    state.scales.clear();
    state.stage = Stage::ScalingInserted;
    Ok(())
}

fn is_scaling(graph: &Graph, idx: usize) -> bool {
    graph.nodes[idx].op.is::<Scaling>()
}
