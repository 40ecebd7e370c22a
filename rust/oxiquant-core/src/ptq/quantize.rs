//! Step 7, `quantize_normalized_network`: integer weights and biases, every calibrated
//! Scaling node turned into a quantizer `clamp(round(acc * m), lo, hi)`, integer-preserving
//! rounding after average pooling, and optional output dequantization.
//!
//! The result computes in f32, but every activation it produces (between the input
//! quantizers and the output dequantizers) is an integer of the target width and every
//! accumulator an exact integer sum: it is the integer network held as floats.

use super::affine::AffineParams;
use super::classify::Class;
use super::clipping::{levels, Clipping};
use super::insert_scaling::node_classes;
use super::normalize_params::set_clip_bounds;
use super::signs::{grids, Grid};
use super::{check_bits, max_of, PtqState, Role, Stage};
use crate::error::{Error, Result};
use crate::graph::Graph;
use crate::ops::{Clip, QuantBounds, Scaling, Unary};
use crate::tensor::Tensor;
use std::collections::HashMap;

#[derive(Debug, Clone, PartialEq)]
pub struct QuantizeOptions {
    pub act_bits: u32,
    pub weight_bits: u32,
    pub optimize_signs: bool,
    pub single_shift: bool,
    pub no_quant: bool,
    pub dequantize_outputs: bool,
    /// Weight clipping: `Max` keeps `max|W|`, `Mse` shrinks the range per channel (or per
    /// tensor) to minimize the weights' squared quantization error.
    pub weight_clipping: Clipping,
}

impl QuantizeOptions {
    pub fn new(bits: u32) -> QuantizeOptions {
        QuantizeOptions {
            act_bits: bits,
            weight_bits: bits,
            optimize_signs: false,
            single_shift: false,
            no_quant: false,
            dequantize_outputs: false,
            weight_clipping: Clipping::Max,
        }
    }
}

/// Fraction `a` of the normalized range [-1, 1] that minimizes the squared error of
/// `clamp(round(w * q / a)) * a / q` over `w`.
pub fn weight_clip_fraction(w: &[f32], q: u32) -> f32 {
    let qf = q as f32;
    let err = |a: f32| -> f64 {
        w.iter()
            .map(|&x| {
                let r = ((x * qf / a).round_ties_even().clamp(-qf, qf)) * a / qf;
                ((x - r) as f64).powi(2)
            })
            .sum()
    };
    let mut best = (err(1.0), 1.0f32);
    for k in (30..100).rev() {
        let a = k as f32 / 100.0;
        let e = err(a);
        if e < best.0 {
            best = (e, a);
        }
    }
    best.1
}

/// The largest f32 that fits an i32 (`i32::MAX as f32` rounds up to 2^31, which does not).
pub const BIAS_LIMIT: f32 = 2_147_483_520.0;

fn unit_of(units: &HashMap<String, Vec<f32>>, v: &str) -> Option<Vec<f32>> {
    units.get(v).cloned()
}

fn pick(v: &[f32], c: usize) -> f32 {
    if v.len() == 1 {
        v[0]
    } else {
        v[c]
    }
}

pub fn quantize_network(graph: &mut Graph, state: &mut PtqState, opts: &QuantizeOptions) -> Result<()> {
    state.expect("quantize_normalized_network", Stage::ActsNormalized, &[])?;
    check_bits("nb_bits", opts.act_bits as i64)?;
    check_bits("weight_bits", opts.weight_bits as i64)?;
    if let Some(s) = state.adjusted_signs {
        let clipped = state
            .scaling
            .values()
            .any(|i| i.clipping.is_some_and(|c| c != Clipping::Max));
        if clipped && s != opts.optimize_signs {
            return Err(Error::InvalidArgument(format!(
                "quantize_normalized_network: adjust_ranges chose the clipping values for optimize_signs={s}, \
                 but optimize_signs={} was asked now; use the same value in both",
                opts.optimize_signs
            )));
        }
    }
    if opts.no_quant {
        state.no_quant = true;
        if opts.dequantize_outputs {
            dequantize_outputs(graph, state, &HashMap::new())?;
        }
        state.stage = Stage::Quantized;
        return Ok(());
    }
    let classes = node_classes(graph, &state.excluded);
    let signs = grids(graph, state, opts.optimize_signs);
    for (n, &b) in &state.layer_bits {
        check_bits(&format!("layer_bits['{n}']"), b as i64)?;
        if !classes.get(n).is_some_and(|c| *c == Class::Affine) {
            return Err(Error::InvalidArgument(format!(
                "layer_bits: '{n}' is not an affine node (Conv, Gemm, MatMul) of the model"
            )));
        }
    }
    let mut units: HashMap<String, Vec<f32>> = HashMap::new();
    // Scaling nodes whose factor single_shift made a power of two.
    let mut shifted: HashMap<String, f32> = HashMap::new();
    let mut round_after: Vec<String> = Vec::new();
    for idx in 0..graph.nodes.len() {
        let node = graph.nodes[idx].clone();
        let x = node.inputs.first().cloned().unwrap_or_default();
        let out_unit: Option<Vec<f32>> = match classes.get(&node.name).cloned().unwrap_or(Class::Passive) {
            Class::Scaling => {
                let info = state.scaling.get(&node.name).cloned().ok_or_else(|| {
                    Error::InvalidArgument(format!("Scaling node '{}' is unknown to the pipeline", node.name))
                })?;
                let Some(sc) = node.op.downcast_ref::<Scaling>() else {
                    continue;
                };
                let u_x = unit_of(&units, &x).unwrap_or_else(|| vec![1.0]);
                if info.role == Role::Dequant {
                    // Per channel after an affine node that keeps its output in float.
                    let n = sc.factor.len().max(u_x.len());
                    let f: Vec<f32> = (0..n).map(|c| pick(&sc.factor, c) / pick(&u_x, c)).collect();
                    graph.nodes[idx].op = Box::new(Scaling {
                        factor: if f.iter().all(|&x| x == f[0]) { vec![f[0]] } else { f },
                        rank: sc.rank,
                        quant: None,
                        last_axis: sc.last_axis,
                    });
                    None
                } else {
                    let grid = signs.get(&node.name).copied().unwrap_or(Grid::Signed);
                    let act_bits = super::act_bits::bits_of(state, &node.name, opts.act_bits);
                    let q_out = grid.unit_levels(act_bits) as f32;
                    let n = sc.factor.len().max(u_x.len());
                    let mut factor: Vec<f32> = (0..n).map(|c| pick(&sc.factor, c) * q_out / pick(&u_x, c)).collect();
                    if let Some(&p) = shifted.get(&node.name) {
                        factor = vec![p];
                    }
                    let rank = if factor.len() > 1 {
                        sc.rank.max(super::normalize_params::producer_rank(graph, idx))
                    } else {
                        sc.rank
                    };
                    let (lo, hi) = grid.bounds(act_bits);
                    graph.nodes[idx].op = Box::new(Scaling {
                        factor,
                        rank,
                        last_axis: sc.last_axis,
                        quant: Some(QuantBounds { lo, hi }),
                    });
                    let s_out = state.scale(&node.outputs[0])[0];
                    if let Some(i) = state.scaling.get_mut(&node.name) {
                        i.bits = Some(act_bits);
                        i.signed = grid.signed();
                        i.codes = Some((lo as i32, hi as i32));
                        i.step = Some(s_out / q_out);
                        if opts.single_shift {
                            i.power_of_two = Some(shifted.contains_key(&node.name));
                        }
                    }
                    Some(vec![q_out])
                }
            }
            Class::Affine => {
                let u_in = unit_of(&units, &x).ok_or_else(|| {
                    Error::InvalidArgument(format!(
                        "node '{}' ({}): its input is not quantized (no Scaling node before it)",
                        node.name,
                        node.op.op_type()
                    ))
                })?;
                let [u_in] = u_in[..] else {
                    return Err(Error::InvalidArgument(format!(
                        "node '{}': per-channel input unit",
                        node.name
                    )));
                };
                let mut a = AffineParams::read(graph, idx)?;
                let bits = state.layer_bits.get(&node.name).copied().unwrap_or(opts.weight_bits);
                let qw = levels(bits, true);
                let per_channel = super::channelwise(graph, state, idx, &a);
                let rounded = state
                    .affine
                    .get(&node.name)
                    .and_then(|i| i.rounded_bits.map(|b| (b, i.weight_clip.clone())));
                let alpha: Vec<f32> = match (rounded, opts.weight_clipping) {
                    // round_weights put them on this grid already: keep it.
                    (Some((b, alpha)), _) if b == bits && alpha.len() == a.channels => alpha,
                    (Some((b, _)), _) => {
                        return Err(Error::InvalidArgument(format!(
                            "node '{}': round_weights rounded its weights to {b} bits, quantize_normalized_network asks for {bits}; use the same widths in both",
                            node.name
                        )))
                    }
                    (None, Clipping::Max) => vec![1.0; a.channels],
                    (None, _) if per_channel => (0..a.channels)
                        .map(|c| weight_clip_fraction(&a.channel(c), qw))
                        .collect(),
                    (None, _) => vec![weight_clip_fraction(&a.weight, qw); a.channels],
                };
                // single_shift: fold the quantizer's ratio to a power of two into the weights.
                let mut ratio = vec![1.0f32; a.channels];
                if opts.single_shift {
                    if let Some((t, p, r)) = shift_plan(graph, state, &signs, idx, u_in, qw, &alpha, opts, a.channels) {
                        ratio = r;
                        shifted.insert(t, p);
                    }
                }
                let qwf = qw as f32;
                a.for_each_mut(|c, w| {
                    *w = (*w * ratio[c] * qwf / alpha[c]).round_ties_even().clamp(-qwf, qwf);
                });
                let u_out: Vec<f32> = (0..a.channels).map(|c| u_in * qwf * ratio[c] / alpha[c]).collect();
                for (c, b) in a.bias.iter_mut().enumerate() {
                    *b = (*b * u_out[c]).round_ties_even();
                    if b.abs() > BIAS_LIMIT {
                        state
                            .warnings
                            .push(format!("node '{}': a bias overflows int32 and is clamped", node.name));
                        *b = b.clamp(-BIAS_LIMIT, BIAS_LIMIT);
                    }
                }
                a.write(graph, idx)?;
                if let Some(info) = state.affine.get_mut(&node.name) {
                    info.weight_bits = Some(bits);
                    info.weight_clip = alpha.clone();
                }
                Some(if u_out.iter().all(|&u| u == u_out[0]) {
                    vec![u_out[0]]
                } else {
                    u_out
                })
            }
            Class::Seamless => {
                let u = unit_of(&units, &x);
                let needs_round = node.op.needs_round();
                if u.is_some() && needs_round {
                    round_after.push(node.outputs[0].clone());
                }
                u
            }
            Class::Bounded => {
                let u = unit_of(&units, &x);
                if let (Some(u), Some(c)) = (&u, node.op.downcast_ref::<Clip>()) {
                    let args: Vec<Option<&Tensor>> = node.inputs.iter().map(|v| graph.initializers.get(v)).collect();
                    let (lo, hi) = Clip::bounds(c, &args)?;
                    set_clip_bounds(graph, idx, (lo * u[0]).round_ties_even(), (hi * u[0]).round_ties_even())?;
                }
                u
            }
            Class::Merging => {
                let us: Vec<Option<Vec<f32>>> = node.inputs.iter().map(|v| unit_of(&units, v)).collect();
                let first = us.first().cloned().flatten();
                if us.iter().any(|u| *u != first) {
                    return Err(Error::InvalidArgument(format!(
                        "node '{}' ({}): its inputs arrive in different integer units {us:?}",
                        node.name,
                        node.op.op_type()
                    )));
                }
                first
            }
            Class::FloatIsland(_) | Class::Passive => None,
        };
        if let Some(u) = out_unit {
            for o in &node.outputs {
                units.insert(o.clone(), u.clone());
            }
        }
    }
    for v in round_after {
        let name = format!(
            "{}_round",
            graph
                .producer(&v)
                .map(|p| graph.nodes[p].name.clone())
                .unwrap_or_default()
        );
        graph.insert_after(&v, &name, Unary::Round)?;
    }
    super::integer_matmul::integer_matmuls(graph, state)?;
    if opts.dequantize_outputs {
        dequantize_outputs(graph, state, &units)?;
    }
    state.units = units;
    state.no_quant = false;
    state.stage = Stage::Quantized;
    Ok(())
}

/// For affine node `idx` followed only by its own Scaling node: the power of two that node's
/// factor becomes and the per-channel ratio to fold into the weights (all <= 1).
#[allow(clippy::too_many_arguments)]
fn shift_plan(
    graph: &Graph,
    state: &PtqState,
    signs: &HashMap<String, Grid>,
    idx: usize,
    u_in: f32,
    qw: u32,
    alpha: &[f32],
    opts: &QuantizeOptions,
    channels: usize,
) -> Option<(String, f32, Vec<f32>)> {
    let out = graph.nodes[idx].outputs.first()?;
    let readers = graph.consumers(out);
    let [(t, 0)] = readers[..] else { return None };
    let sc = graph.nodes[t].op.downcast_ref::<Scaling>()?;
    let tname = graph.nodes[t].name.clone();
    if state.scaling.get(&tname).map(|i| i.role) != Some(Role::Affine) {
        return None;
    }
    let q_out = signs
        .get(&tname)
        .copied()
        .unwrap_or(Grid::Signed)
        .unit_levels(super::act_bits::bits_of(state, &tname, opts.act_bits)) as f32;
    let f: Vec<f32> = (0..channels)
        .map(|c| pick(&sc.factor, c) * q_out * alpha[c] / (u_in * qw as f32))
        .collect();
    let m = max_of(&f);
    if !(m > 0.0 && m.is_finite()) {
        return None;
    }
    let p = 2f32.powi(m.log2().ceil() as i32);
    Some((tname, p, f.iter().map(|&x| x / p).collect()))
}

/// Appends to every quantized graph output a Scaling node back to real values.
fn dequantize_outputs(graph: &mut Graph, state: &mut PtqState, units: &HashMap<String, Vec<f32>>) -> Result<()> {
    let outs: Vec<String> = graph.outputs.iter().map(|o| o.name.clone()).collect();
    for o in outs {
        let s = state.scale(&o);
        let factor: Vec<f32> = match units.get(&o) {
            Some(u) if !state.no_quant => (0..s.len().max(u.len())).map(|c| pick(&s, c) / pick(u, c)).collect(),
            // Unquantized (no_quant, or a float output): the stored value times its scale.
            _ if state.scales.contains_key(&o) => s,
            _ => continue,
        };
        if factor.len() > 1 {
            return Err(Error::InvalidArgument(format!(
                "output '{o}' has a per-channel scale and cannot be dequantized by one factor"
            )));
        }
        let idx = graph.insert_after(
            &o,
            &format!("{o}_dequantize"),
            Scaling {
                factor,
                rank: 0,
                quant: None,
                last_axis: false,
            },
        )?;
        // Only the graph output reads real units: nodes that read the value as well (a
        // detector's feature map that is an output and the next layer's input) keep reading
        // what they were quantized against.
        let (stored, real) = (graph.nodes[idx].inputs[0].clone(), graph.nodes[idx].outputs[0].clone());
        for (i, n) in graph.nodes.iter_mut().enumerate() {
            if i != idx {
                for v in n.inputs.iter_mut().filter(|v| **v == real) {
                    *v = stored.clone();
                }
            }
        }
    }
    state.dequantized_outputs = true;
    Ok(())
}
