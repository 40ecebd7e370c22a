//! Step 6, `normalize_activations`: every calibrated Scaling node's factor is set so that its
//! output, on the calibration data, lies in [-1, 1] (in [-c, c] / c once clipped); biases
//! follow their new input scale; merging branches are balanced to the largest scale.

use super::affine::AffineParams;
use super::normalize_params::{producer_rank, walk, ScaleRules};
use super::{max_of, PtqState, Role, Stage};
use crate::error::{Error, Result};
use crate::graph::Graph;
use crate::ops::Scaling;

struct ActRules;

impl ScaleRules for ActRules {
    fn affine(&mut self, graph: &mut Graph, idx: usize, s_in: f32, state: &mut PtqState) -> Result<Vec<f32>> {
        let name = graph.nodes[idx].name.clone();
        let info = state.affine.get_mut(&name).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "node '{name}' was not parameter-normalized (run normalize_parameters)"
            ))
        })?;
        if info.bias_in_scale != s_in {
            let mut a = AffineParams::read(graph, idx)?;
            let k = info.bias_in_scale / s_in;
            a.bias.iter_mut().for_each(|b| *b *= k);
            if a.has_bias {
                a.write(graph, idx)?;
            }
            info.bias_in_scale = s_in;
        }
        let ws = &info.weight_scale;
        Ok(if ws.iter().all(|&w| w == ws[0]) {
            vec![ws[0] * s_in]
        } else {
            ws.iter().map(|&w| w * s_in).collect()
        })
    }

    fn scaling(&mut self, graph: &mut Graph, idx: usize, s_in: &[f32], state: &mut PtqState) -> Result<(f32, bool)> {
        let name = graph.nodes[idx].name.clone();
        let rank = producer_rank(graph, idx);
        let info = state
            .scaling
            .get(&name)
            .ok_or_else(|| Error::InvalidArgument(format!("Scaling node '{name}' is unknown to the pipeline")))?;
        let mut constant_zero = false;
        let (factor, s_out) = if info.role == Role::Dequant {
            let same = s_in.iter().all(|&s| s == s_in[0]);
            (if same { vec![s_in[0]] } else { s_in.to_vec() }, 1.0)
        } else {
            let c = match (info.clip, &info.stats) {
                (Some(c), _) => c * info.scale_per_clip,
                (None, Some(st)) => st.max_abs * info.calib_scale,
                (None, None) => {
                    return Err(Error::InvalidArgument(format!(
                        "Scaling node '{name}' has no range (run compute_ranges)"
                    )))
                }
            };
            let s_out = if c > 0.0 && c.is_finite() {
                c
            } else {
                // Constantly zero on the calibration set: keep the incoming scale (a merging
                // node it feeds balances its other inputs without it).
                constant_zero = true;
                let keep = max_of(s_in).max(f32::MIN_POSITIVE);
                state.warnings.push(format!(
                    "'{name}' was constantly 0 on the calibration set; its scale is left as is"
                ));
                keep
            };
            (s_in.iter().map(|&s| s / s_out).collect(), s_out)
        };
        let last_axis = super::after_matmul(graph, idx);
        if let Some(sc) = graph.nodes[idx].op.downcast_mut::<Scaling>() {
            if factor.len() > 1 {
                sc.rank = rank;
                sc.last_axis = last_axis;
            }
            sc.factor = factor;
        }
        Ok((s_out, constant_zero))
    }
}

pub fn normalize_activations(graph: &mut Graph, state: &mut PtqState) -> Result<()> {
    state.expect("normalize_activations", Stage::RangesAdjusted, &[Stage::Calibrated])?;
    state.warnings.retain(|w| !w.contains("constantly 0"));
    walk(graph, state, &mut ActRules)?;
    state.stage = Stage::ActsNormalized;
    Ok(())
}
