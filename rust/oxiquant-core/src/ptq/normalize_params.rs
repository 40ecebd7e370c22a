//! Step 3, `normalize_parameters`: every affine weight divided by its largest magnitude (per
//! tensor, or per output channel), biases rescaled, and merging branches balanced. Also the
//! scale walk shared with step 6 (`walk`).

use super::affine::AffineParams;
use super::classify::Class;
use super::insert_scaling::{branch_owner, node_classes};
use super::{max_of, positive_or_one, AffineInfo, PtqState, Role, Stage};
use crate::error::{Error, Result};
use crate::graph::Graph;
use crate::ops::{Clip, Scaling};
use crate::tensor::Tensor;
use std::collections::{HashMap, HashSet};

/// What differs between the parameter (step 3) and activation (step 6) normalizations.
pub(crate) trait ScaleRules {
    /// Rewrites affine node `idx` read at input scale `s_in`; returns its output scale.
    fn affine(&mut self, graph: &mut Graph, idx: usize, s_in: f32, state: &mut PtqState) -> Result<Vec<f32>>;
    /// Sets Scaling node `idx`'s factor for input scale `s_in`; returns its output scale and
    /// whether that scale is arbitrary (a node that was constantly 0 on the calibration set:
    /// any scale is exact for it, so a merging node must not balance its other inputs to it).
    fn scaling(&mut self, graph: &mut Graph, idx: usize, s_in: &[f32], state: &mut PtqState) -> Result<(f32, bool)>;
}

fn scalar(s: &[f32], graph: &Graph, idx: usize, what: &str) -> Result<f32> {
    match s {
        [x] => Ok(*x),
        _ => Err(Error::InvalidArgument(format!(
            "node '{}' ({}): {what} has a per-channel scale ({} values); a Scaling node should have made it one value",
            graph.nodes[idx].name,
            graph.nodes[idx].op.op_type(),
            s.len()
        ))),
    }
}

/// Walks the graph in topological order computing the scale of every activation; the
/// affine and Scaling nodes follow `rules`, the other classes follow the shared rules.
pub(crate) fn walk(graph: &mut Graph, state: &mut PtqState, rules: &mut dyn ScaleRules) -> Result<()> {
    let classes = node_classes(graph, &state.excluded);
    let old_scales = std::mem::take(&mut state.scales);
    let mut scales: HashMap<String, Vec<f32>> = HashMap::new();
    // Values whose scale is arbitrary (constantly 0 upstream, through seamless nodes).
    let mut free: HashSet<String> = HashSet::new();
    let get = |scales: &HashMap<String, Vec<f32>>, v: &str| scales.get(v).cloned().unwrap_or_else(|| vec![1.0]);
    for idx in 0..graph.nodes.len() {
        let name = graph.nodes[idx].name.clone();
        let first_in = graph.nodes[idx].inputs.first().cloned().unwrap_or_default();
        let s_in = get(&scales, &first_in);
        let mut out_free = false;
        let s_out: Vec<f32> = match classes.get(&name).cloned().unwrap_or(Class::Passive) {
            Class::Scaling => {
                let (s, f) = rules.scaling(graph, idx, &s_in, state)?;
                out_free = f;
                vec![s]
            }
            Class::Affine => {
                let s = scalar(&s_in, graph, idx, "the input")?;
                rules.affine(graph, idx, s, state)?
            }
            Class::Seamless => {
                out_free = free.contains(&first_in);
                s_in
            }
            Class::Bounded => {
                out_free = free.contains(&first_in);
                let s_new = scalar(&s_in, graph, idx, "the input")?;
                let s_old = old_scales.get(&first_in).map(|v| v[0]).unwrap_or(1.0);
                rescale_clip(graph, idx, s_old / s_new)?;
                vec![s_new]
            }
            Class::Merging => {
                let ins = graph.nodes[idx].inputs.clone();
                let s: Vec<f32> = ins
                    .iter()
                    .map(|v| scalar(&get(&scales, v), graph, idx, &format!("input '{v}'")))
                    .collect::<Result<_>>()?;
                // Balance to the largest scale among the inputs that have a real one.
                let live: Vec<f32> = ins
                    .iter()
                    .zip(&s)
                    .filter(|(v, _)| !free.contains(*v))
                    .map(|(_, &si)| si)
                    .collect();
                out_free = live.is_empty();
                let s_max = if out_free { max_of(&s) } else { max_of(&live) };
                for (slot, &si) in s.iter().enumerate() {
                    if si == s_max {
                        continue;
                    }
                    let owner = branch_owner(graph, idx, slot, &classes).ok_or_else(|| {
                        Error::InvalidArgument(format!(
                            "node '{name}': input {slot} has no Scaling node of its own to balance (run insert_scaling_nodes)"
                        ))
                    })?;
                    if let Some(sc) = graph.nodes[owner].op.downcast_mut::<Scaling>() {
                        sc.factor.iter_mut().for_each(|f| *f *= si / s_max);
                    }
                    // Everything from the owner down to this merge input now has scale s_max.
                    let mut cur = ins[slot].clone();
                    loop {
                        scales.insert(cur.clone(), vec![s_max]);
                        match graph.producer(&cur) {
                            Some(p) if p != owner => cur = graph.nodes[p].inputs[0].clone(),
                            _ => break,
                        }
                    }
                }
                vec![s_max]
            }
            Class::FloatIsland(_) => vec![1.0],
            Class::Passive => continue,
        };
        for o in graph.nodes[idx].outputs.clone() {
            if out_free {
                free.insert(o.clone());
            }
            scales.insert(o, s_out.clone());
        }
    }
    state.scales = scales;
    Ok(())
}

/// Multiplies a Clip's finite bounds by `k` (its input scale changed by `1/k`).
fn rescale_clip(graph: &mut Graph, idx: usize, k: f32) -> Result<()> {
    if k == 1.0 {
        return Ok(());
    }
    let node = &graph.nodes[idx];
    let Some(&clip) = node.op.downcast_ref::<Clip>() else {
        return Ok(());
    };
    let args: Vec<Option<&Tensor>> = node.inputs.iter().map(|v| graph.initializers.get(v)).collect();
    let (lo, hi) = clip.bounds(&args)?;
    set_clip_bounds(graph, idx, lo * k, hi * k)
}

/// Sets a Clip's bounds (attributes before opset 11, constant inputs after); infinite bounds
/// stay absent.
pub(crate) fn set_clip_bounds(graph: &mut Graph, idx: usize, lo: f32, hi: f32) -> Result<()> {
    if graph.opset < 11 {
        graph.nodes[idx].op = Box::new(Clip {
            min: lo.is_finite().then_some(lo),
            max: hi.is_finite().then_some(hi),
        });
        return Ok(());
    }
    for (slot, v, what) in [(1, lo, "min"), (2, hi, "max")] {
        if v.is_finite() {
            super::affine::set_input_constant(graph, idx, slot, what, Tensor::scalar(v));
        }
    }
    Ok(())
}

struct ParamRules {
    per_channel: bool,
}

impl ScaleRules for ParamRules {
    fn affine(&mut self, graph: &mut Graph, idx: usize, s_in: f32, state: &mut PtqState) -> Result<Vec<f32>> {
        let mut a = AffineParams::read(graph, idx)?;
        let per_channel = self.per_channel && super::channelwise(graph, state, idx, &a);
        let max_abs = a.channel_max_abs();
        let s_w: Vec<f32> = if per_channel {
            max_abs.iter().map(|&m| positive_or_one(m)).collect()
        } else {
            vec![positive_or_one(max_of(&max_abs)); a.channels]
        };
        a.for_each_mut(|c, w| *w /= s_w[c]);
        for (c, b) in a.bias.iter_mut().enumerate() {
            *b /= s_in * s_w[c];
        }
        a.write(graph, idx)?;
        state.affine.insert(
            graph.nodes[idx].name.clone(),
            AffineInfo {
                weight_scale: s_w.clone(),
                bias_in_scale: s_in,
                weight_bits: None,
                weight_clip: vec![1.0; s_w.len()],
                rounded_bits: None,
            },
        );
        Ok(if per_channel {
            s_w.iter().map(|&w| w * s_in).collect()
        } else {
            vec![s_w[0] * s_in]
        })
    }

    fn scaling(&mut self, graph: &mut Graph, idx: usize, s_in: &[f32], state: &mut PtqState) -> Result<(f32, bool)> {
        let name = graph.nodes[idx].name.clone();
        let role = state.scaling.get(&name).map(|i| i.role);
        let rank = producer_rank(graph, idx);
        let last_axis = super::after_matmul(graph, idx);
        let Some(sc) = graph.nodes[idx].op.downcast_mut::<Scaling>() else {
            return Err(Error::InvalidArgument(format!("node '{name}' is not a Scaling node")));
        };
        if role == Some(Role::Dequant) {
            // One factor per channel after an affine node that keeps its output in float.
            sc.factor = if s_in.iter().all(|&s| s == s_in[0]) {
                vec![s_in[0]]
            } else {
                sc.rank = rank;
                s_in.to_vec()
            };
            sc.last_axis = sc.factor.len() > 1 && last_axis;
            return Ok((1.0, false));
        }
        // A per-channel input scale is absorbed here: the output gets the largest one.
        let old = sc.factor.first().copied().unwrap_or(1.0);
        let m = max_of(s_in);
        if s_in.len() > 1 {
            sc.factor = s_in.iter().map(|&s| old * s / m).collect();
            sc.rank = rank;
        }
        Ok((m / old, false))
    }
}

/// Rank of the output of the affine node feeding Scaling node `idx` (0 if unknown).
pub(crate) fn producer_rank(graph: &Graph, idx: usize) -> usize {
    graph.nodes[idx]
        .inputs
        .first()
        .and_then(|v| graph.producer(v))
        .and_then(|p| AffineParams::read(graph, p).ok())
        .map(|a| a.out_rank)
        .unwrap_or(0)
}

pub fn normalize_parameters(graph: &mut Graph, state: &mut PtqState, per_channel: bool) -> Result<()> {
    state.expect("normalize_parameters", Stage::ScalingInserted, &[])?;
    state.per_channel = per_channel;
    walk(graph, state, &mut ParamRules { per_channel })?;
    state.stage = Stage::ParamsNormalized;
    Ok(())
}
