//! Activation bit widths per quantizer (mixed activation precision).
//!
//! The user names quantizers by their Scaling node or by the value they write
//! (`quant_info["activations"]`: "name" or "tensor"; an input quantizer also by the graph
//! input it reads) and gives each a width; every other
//! quantizer keeps `nb_bits`. The inputs of one merging node share an integer unit (an Add
//! sums them in 32 bits, a Concat passes their codes on), and a unit is the scale over the
//! top code, so they must share a width too: a merge group takes the widest width asked of
//! any of its members.

use super::classify::Class;
use super::insert_scaling::{branch_owner, node_classes};
use super::{check_bits, PtqState};
use crate::error::{Error, Result};
use crate::graph::Graph;
use std::collections::{BTreeMap, HashMap};

/// Scaling node name -> the width of its codes, for the quantizers whose width differs
/// from `nb_bits`. Fails on a name that is no quantizer of the model, or a width out of range.
pub fn resolve(graph: &Graph, state: &PtqState, nb_bits: u32) -> Result<BTreeMap<String, u32>> {
    let mut width = named_widths(graph, state, &state.act_bits)?;
    if width.is_empty() {
        return Ok(width);
    }
    for m in width_groups(graph, state).iter().filter(|m| m.len() > 1) {
        let widest = m
            .iter()
            .map(|o| width.get(o).copied().unwrap_or(nb_bits))
            .max()
            .unwrap_or(nb_bits);
        for o in m {
            width.insert(o.clone(), widest);
        }
    }
    width.retain(|_, w| *w != nb_bits);
    Ok(width)
}

/// The widths `asked` by quantizer name or alias, by Scaling node name (the widest where
/// two keys name one quantizer), before merge groups are considered. Fails on a name that
/// is no quantizer of the model, or a width out of range.
pub fn named_widths(graph: &Graph, state: &PtqState, asked: &BTreeMap<String, u32>) -> Result<BTreeMap<String, u32>> {
    let mut by_tensor: HashMap<&str, &str> = state
        .scaling
        .iter()
        .filter(|(_, i)| i.role.calibrated())
        .map(|(n, i)| (i.output.as_str(), n.as_str()))
        .collect();
    // An input quantizer is also known by the graph input it reads.
    for n in &graph.nodes {
        if let (Some(i), Some(x)) = (state.scaling.get(&n.name), n.inputs.first()) {
            if i.role == super::Role::Input {
                by_tensor.entry(x.as_str()).or_insert(n.name.as_str());
            }
        }
    }
    let mut width: BTreeMap<String, u32> = BTreeMap::new();
    for (key, &b) in asked {
        check_bits(&format!("activation_bits['{key}']"), b as i64)?;
        let node = match state.scaling.get(key) {
            Some(i) if i.role.calibrated() => key.as_str(),
            _ => by_tensor.get(key.as_str()).copied().ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "activation_bits: '{key}' is neither a quantizer of the model nor the value one writes \
                     or a graph input (see quant_info['activations'], keys 'name' and 'tensor')"
                ))
            })?,
        };
        let w = width.entry(node.to_string()).or_insert(b);
        *w = (*w).max(b);
    }
    Ok(width)
}

/// The calibrated quantizers (Scaling node names) in groups that must share one width: the
/// owners of one merge's inputs, unioned over merges that share an owner; every other
/// quantizer alone. In graph order of each group's first member.
pub fn width_groups(graph: &Graph, state: &PtqState) -> Vec<Vec<String>> {
    let classes = node_classes(graph, &state.excluded);
    let calibrated = |n: &str| state.scaling.get(n).is_some_and(|i| i.role.calibrated());
    let mut group: HashMap<String, usize> = HashMap::new();
    let mut members: Vec<Vec<String>> = Vec::new();
    for (m, n) in graph.nodes.iter().enumerate() {
        if !matches!(classes.get(&n.name), Some(Class::Merging)) {
            continue;
        }
        let owners: Vec<String> = (0..n.inputs.len())
            .filter_map(|s| branch_owner(graph, m, s, &classes))
            .map(|o| graph.nodes[o].name.clone())
            .filter(|o| calibrated(o))
            .collect();
        let mut ids: Vec<usize> = owners.iter().filter_map(|o| group.get(o).copied()).collect();
        ids.sort_unstable();
        ids.dedup();
        let id = match ids.first() {
            Some(&id) => id,
            None => {
                members.push(Vec::new());
                members.len() - 1
            }
        };
        for &other in ids.iter().skip(1) {
            let moved = std::mem::take(&mut members[other]);
            for o in &moved {
                group.insert(o.clone(), id);
            }
            members[id].extend(moved);
        }
        for o in owners {
            if group.insert(o.clone(), id).is_none() {
                members[id].push(o);
            }
        }
    }
    let mut out: Vec<Vec<String>> = Vec::new();
    let mut placed: HashMap<usize, usize> = HashMap::new();
    for n in graph.nodes.iter().filter(|n| calibrated(&n.name)) {
        match group.get(&n.name) {
            Some(&id) => {
                if let std::collections::hash_map::Entry::Vacant(e) = placed.entry(id) {
                    e.insert(out.len());
                    let mut m = members[id].clone();
                    m.sort_by_key(|o| graph.nodes.iter().position(|x| x.name == *o));
                    out.push(m);
                }
            }
            None => out.push(vec![n.name.clone()]),
        }
    }
    out
}

/// The width of quantizer `node`'s codes.
pub fn bits_of(state: &PtqState, node: &str, nb_bits: u32) -> u32 {
    state.act_widths.get(node).copied().unwrap_or(nb_bits)
}

/// The quantizer whose codes affine node `node` reads: up from its data input through the
/// nodes between (a Clip, a pooling, a Flatten) to the first Scaling node. `None` when the
/// walk meets a node with several inputs first, or no Scaling node at all.
pub fn input_quantizer(graph: &Graph, state: &PtqState, node: &str) -> Result<Option<String>> {
    let idx = graph
        .nodes
        .iter()
        .position(|n| n.name == node)
        .ok_or_else(|| Error::InvalidArgument(format!("no node named '{node}' in the model")))?;
    let mut cur = graph.nodes[idx].inputs.first().cloned().unwrap_or_default();
    for _ in 0..graph.nodes.len() {
        let Some(p) = graph.producer(&cur) else { return Ok(None) };
        let n = &graph.nodes[p];
        if state.scaling.contains_key(&n.name) {
            return Ok(Some(n.name.clone()));
        }
        let fed = n
            .inputs
            .iter()
            .filter(|v| !v.is_empty() && !graph.initializers.contains_key(*v));
        match fed.collect::<Vec<_>>()[..] {
            [only] => cur = only.clone(),
            _ => return Ok(None),
        }
    }
    Ok(None)
}
