//! An `If` whose condition is a constant becomes the nodes of the branch it takes.
//!
//! Done as a pass after constant folding rather than at load: folding first makes constants of
//! the conditions computed from constants (shape arithmetic, a Constant node), which a check at
//! load time would miss, and the pass needs nothing from the loader.

use super::If;
use crate::error::Result;
use crate::graph::{Graph, NameGen, Node};
use crate::ops::movement::Identity;
use std::collections::HashMap;

/// Replaces every `If` whose condition is an initializer by the nodes of its branch
/// (renamed to fresh names, the branch's outer-scope values wired to the node's inputs);
/// returns how many were inlined.
pub fn inline_constant_ifs(graph: &mut Graph) -> Result<usize> {
    let mut done = 0;
    let mut i = 0;
    while i < graph.nodes.len() {
        let node = &graph.nodes[i];
        let Some(op) = node.op.downcast_ref::<If>() else {
            i += 1;
            continue;
        };
        let Some(cond) = node.inputs.first().and_then(|c| graph.initializers.get(c)) else {
            i += 1;
            continue;
        };
        let cond = super::truth("If", "the condition", cond).map_err(|e| e.at_node(&node.name, "If"))?;
        let branch = if cond {
            op.then_branch.clone()
        } else {
            op.else_branch.clone()
        };
        let node = graph.nodes.remove(i);
        let mut names = NameGen::new(graph);
        let mut map: HashMap<String, String> = HashMap::new();
        for (vi, outer) in branch.inputs.iter().zip(node.inputs.iter().skip(1)) {
            map.insert(vi.name.clone(), outer.clone());
        }
        for (name, t) in branch.initializers {
            let fresh = names.fresh(&format!("{}/{name}", node.name));
            graph.initializers.insert(fresh.clone(), t);
            map.insert(name, fresh);
        }
        // A value the branch computes and returns takes the node's output name directly.
        let mut renamed_outputs: HashMap<String, String> = HashMap::new();
        for (o, target) in branch.outputs.iter().zip(&node.outputs) {
            let produced = branch.nodes.iter().any(|n| n.outputs.contains(&o.name));
            if produced && !renamed_outputs.contains_key(&o.name) {
                renamed_outputs.insert(o.name.clone(), target.clone());
            }
        }
        let mut new_nodes: Vec<Node> = Vec::new();
        for n in branch.nodes {
            let outputs: Vec<String> = n
                .outputs
                .iter()
                .map(|o| {
                    let to = renamed_outputs
                        .get(o)
                        .cloned()
                        .unwrap_or_else(|| names.fresh(&format!("{}/{o}", node.name)));
                    map.insert(o.clone(), to.clone());
                    to
                })
                .collect();
            let inputs = n
                .inputs
                .iter()
                .map(|v| map.get(v).cloned().unwrap_or_else(|| v.clone()))
                .collect();
            new_nodes.push(Node {
                name: names.fresh(&format!("{}/{}", node.name, n.name)),
                op: n.op,
                inputs,
                outputs,
            });
        }
        // Outputs that are not a branch node's own (an outer value, a constant, a value
        // returned twice) are copies.
        for (o, target) in branch.outputs.iter().zip(&node.outputs) {
            if renamed_outputs.get(&o.name) == Some(target) {
                continue;
            }
            let src = map.get(&o.name).cloned().unwrap_or_else(|| o.name.clone());
            new_nodes.push(Node {
                name: names.fresh(&format!("{}/{}_copy", node.name, o.name)),
                op: Box::new(Identity),
                inputs: vec![src],
                outputs: vec![target.clone()],
            });
        }
        let added = new_nodes.len();
        graph.nodes.splice(i..i, new_nodes);
        i += added;
        done += 1;
    }
    if done > 0 {
        graph.sort()?;
        graph.prune();
    }
    Ok(done)
}
