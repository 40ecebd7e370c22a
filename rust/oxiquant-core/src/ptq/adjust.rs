//! Step 5, `adjust_ranges`: the clipping value of every calibrated Scaling node, chosen by
//! one of the `clipping` methods for the target bit width and the tensor's sign.

use super::clipping::{clip_value, Clipping};
use super::signs::signedness;
use super::{PtqState, Stage};
use crate::error::{Error, Result};
use crate::graph::Graph;

pub fn adjust_ranges(
    graph: &Graph,
    state: &mut PtqState,
    method: Clipping,
    nb_bits: u32,
    optimize_signs: bool,
) -> Result<()> {
    state.expect("adjust_ranges", Stage::Calibrated, &[Stage::RangesAdjusted])?;
    super::check_bits("adjust_ranges", nb_bits)?;
    let signs = signedness(graph, state, optimize_signs);
    for (name, info) in state.scaling.iter_mut() {
        if !info.role.calibrated() {
            continue;
        }
        let stats = info.stats.as_ref().ok_or_else(|| {
            Error::InvalidArgument(format!(
                "adjust_ranges: Scaling node '{name}' has no statistics (run compute_ranges)"
            ))
        })?;
        let signed = signs.get(name).copied().unwrap_or(true);
        info.signed = signed;
        info.clip = Some(clip_value(stats, method, nb_bits, signed) * info.calib_scale);
        info.clipping = Some(method);
    }
    state.adjusted_signs = Some(optimize_signs);
    state.stage = Stage::RangesAdjusted;
    Ok(())
}
