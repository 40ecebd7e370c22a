//! Step 5, `adjust_ranges`: the clipping value of every calibrated Scaling node, chosen by
//! one of the `clipping` methods for the target bit width and the tensor's sign.
//!
//! A Scaling node read only by Clips (a Conv followed by Relu6, say) never needs a range
//! wider than the Clips let through: its clipping value is capped at their largest bound
//! magnitude, whatever the method. Without the cap, a tensor calibrated at +-1000 in front
//! of a Clip(0, 6) would quantize [0, 6] into less than one step.

use super::clipping::{clip_value, Clipping};
use super::signs::{grids, Grid};
use super::{PtqState, Stage};
use crate::error::{Error, Result};
use crate::graph::Graph;
use crate::ops::Clip;
use crate::tensor::Tensor;
use rayon::prelude::*;
use std::collections::HashMap;

/// When every reader of `value` is a Clip (on its data input) with finite bounds: the
/// largest bound magnitude, in the value's stored units.
fn clip_readers_bound(graph: &Graph, value: &str) -> Option<f32> {
    let readers = graph.consumers(value);
    if readers.is_empty() || graph.is_graph_output(value) {
        return None;
    }
    let mut bound = 0f32;
    for (c, slot) in readers {
        let n = &graph.nodes[c];
        let &clip = n.op.downcast_ref::<Clip>()?;
        if slot != 0 {
            return None;
        }
        let args: Vec<Option<&Tensor>> = n.inputs.iter().map(|v| graph.initializers.get(v)).collect();
        let (lo, hi) = clip.bounds(&args).ok()?;
        if !(lo.is_finite() && hi.is_finite()) {
            return None;
        }
        bound = bound.max(lo.abs()).max(hi.abs());
    }
    (bound > 0.0).then_some(bound)
}

pub fn adjust_ranges(
    graph: &Graph,
    state: &mut PtqState,
    method: Clipping,
    nb_bits: u32,
    optimize_signs: bool,
) -> Result<()> {
    state.expect("adjust_ranges", Stage::Calibrated, &[Stage::RangesAdjusted])?;
    super::check_bits("nb_bits", nb_bits as i64)?;
    if matches!(method, Clipping::Mse | Clipping::Kl)
        && state
            .scaling
            .values()
            .any(|i| i.stats.as_ref().is_some_and(|s| !s.histograms))
    {
        return Err(Error::InvalidArgument(format!(
            "adjust_ranges: clipping '{}' needs histograms, but compute_ranges ran with histograms=False",
            method.name()
        )));
    }
    if let Some((name, _)) = state
        .scaling
        .iter()
        .find(|(_, i)| i.role.calibrated() && i.stats.is_none())
    {
        return Err(Error::InvalidArgument(format!(
            "adjust_ranges: Scaling node '{name}' has no statistics (run compute_ranges)"
        )));
    }
    let widths = super::act_bits::resolve(graph, state, nb_bits)?;
    let grid_of = grids(graph, state, optimize_signs);
    let caps: HashMap<String, f32> = state
        .scaling
        .iter()
        .filter_map(|(name, info)| clip_readers_bound(graph, &info.output).map(|b| (name.clone(), b)))
        .collect();
    // The clipping searches are independent (about a millisecond each for MSE on a large
    // histogram): run them side by side, then write the results.
    let chosen: Vec<(String, bool, f32, f32, Clipping)> = state
        .scaling
        .par_iter()
        .filter(|(_, info)| info.role.calibrated())
        .filter_map(|(name, info)| {
            let stats = info.stats.as_ref()?;
            let grid = grid_of.get(name).copied().unwrap_or(Grid::Signed);
            let bits = widths.get(name).copied().unwrap_or(nb_bits);
            let signed = grid.signed();
            // A value written by outlier channel splitting keeps its whole range: its largest
            // values are the channels just split, which clipping would cut again.
            // (The quantizer writes the value under its name: `Graph::insert_after`.)
            let method = if state.split_values.contains(&info.output) {
                Clipping::Max
            } else {
                method
            };
            let mut clip = clip_value(stats, method, bits, signed);
            if let Some(&cap) = caps.get(name) {
                // The Clips' bounds are in the units the statistics were taken in.
                clip = clip.min(cap);
            }
            Some((
                name.clone(),
                signed,
                grid.scale_per_clip(bits),
                clip * info.calib_scale,
                method,
            ))
        })
        .collect();
    for (name, signed, scale_per_clip, clip, method) in chosen {
        if let Some(info) = state.scaling.get_mut(&name) {
            info.signed = signed;
            info.scale_per_clip = scale_per_clip;
            info.clip = Some(clip);
            info.clipping = Some(method);
        }
    }
    state.act_widths = widths;
    state.adjusted_signs = Some(optimize_signs);
    state.stage = Stage::RangesAdjusted;
    Ok(())
}
