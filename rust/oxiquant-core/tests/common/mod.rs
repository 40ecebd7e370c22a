//! What the integration tests share: running a graph, fetching values, the PTQ steps up to a
//! given stage, and comparisons.
#![allow(dead_code)]
// Tests may unwrap (clippy.toml); this covers their helper functions too.
#![allow(clippy::unwrap_used)]

use oxiquant_core::ptq::quantize::QuantizeOptions;
use oxiquant_core::ptq::{self, Clipping, PtqState, Stage};
use oxiquant_core::testing::feeds;
use oxiquant_core::testing::networks::cnn_batch;
use oxiquant_core::{exec, Graph, Tensor};
use std::collections::HashMap;

/// The graph's only output on input `x` (fed as "x").
pub fn run(g: &Graph, x: &Tensor) -> Vec<f32> {
    exec::run(g, feeds(&[("x", x)])).unwrap().remove(0).1.to_f32_vec()
}

/// The values named `names` (graph outputs included) on input `x`.
pub fn fetch(g: &Graph, x: &Tensor, names: &[String]) -> HashMap<String, Tensor> {
    let (outs, fetched) = exec::run_fetching(g, feeds(&[("x", x)]), names).unwrap();
    outs.into_iter()
        .chain(fetched)
        .filter(|(n, _)| names.contains(n))
        .collect()
}

/// Every value a node of `g` writes.
pub fn node_outputs(g: &Graph) -> Vec<String> {
    g.nodes.iter().flat_map(|n| n.outputs.iter().cloned()).collect()
}

/// max |a - b| over max |b| (or over 1 when b is all zeros).
pub fn rel_err(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let m = b.iter().fold(0f64, |m, &v| m.max((v as f64).abs())).max(1e-30);
    let d = a
        .iter()
        .zip(b)
        .fold(0f64, |d, (&x, &y)| d.max((x as f64 - y as f64).abs()));
    if m == 1e-30 {
        d
    } else {
        d / m
    }
}

/// `t` with axis 1 multiplied by `s` (one value, or one per channel of axis 1), in f64.
pub fn times_scale(t: &Tensor, s: &[f32]) -> Vec<f32> {
    let v = t.to_f32_vec();
    if s.len() == 1 {
        return v.iter().map(|&x| (x as f64 * s[0] as f64) as f32).collect();
    }
    let shape = t.shape();
    assert_eq!(shape[1], s.len(), "per-channel scale against shape {shape:?}");
    let inner: usize = shape[2..].iter().product();
    v.iter()
        .enumerate()
        .map(|(i, &x)| (x as f64 * s[(i / inner) % s.len()] as f64) as f32)
        .collect()
}

/// The calibration set of the tests: three batches, one of them four times wider.
pub fn calibration_batches() -> Vec<Tensor> {
    vec![cnn_batch(4, 100, 1.0), cnn_batch(3, 101, 4.0), cnn_batch(5, 102, 1.5)]
}

/// Options of the PTQ steps the tests vary.
#[derive(Clone, Copy, Debug)]
pub struct Steps {
    pub per_channel: bool,
    pub clipping: Clipping,
    pub bits: u32,
    pub optimize_signs: bool,
    pub dequantize_outputs: bool,
    /// Widths of single quantizers (`PtqState::act_bits`).
    pub act_bits: &'static [(&'static str, u32)],
}

impl Default for Steps {
    fn default() -> Steps {
        Steps {
            per_channel: false,
            clipping: Clipping::Max,
            bits: 8,
            optimize_signs: false,
            dequantize_outputs: true,
            act_bits: &[],
        }
    }
}

/// Runs the PTQ steps on `g` until the model is at `until`.
pub fn ptq_until(g: &mut Graph, until: Stage, o: Steps) -> PtqState {
    let mut st = PtqState::default();
    let reached = |st: &PtqState| st.stage >= until;
    ptq::prepare::prepare(g, &mut st).unwrap();
    if reached(&st) {
        return st;
    }
    ptq::insert_scaling::insert_scaling_nodes(g, &mut st).unwrap();
    if reached(&st) {
        return st;
    }
    ptq::normalize_params::normalize_parameters(g, &mut st, o.per_channel).unwrap();
    if reached(&st) {
        return st;
    }
    ptq::calibrate::begin(&mut st, true).unwrap();
    for b in calibration_batches() {
        ptq::calibrate::observe_batch(g, &mut st, feeds(&[("x", &b)])).unwrap();
    }
    ptq::calibrate::finish(&mut st).unwrap();
    if reached(&st) {
        return st;
    }
    st.act_bits = o.act_bits.iter().map(|&(k, b)| (k.to_string(), b)).collect();
    ptq::adjust::adjust_ranges(g, &mut st, o.clipping, o.bits, o.optimize_signs).unwrap();
    if reached(&st) {
        return st;
    }
    ptq::normalize_acts::normalize_activations(g, &mut st).unwrap();
    if reached(&st) {
        return st;
    }
    let opts = QuantizeOptions {
        optimize_signs: o.optimize_signs,
        dequantize_outputs: o.dequantize_outputs,
        ..QuantizeOptions::new(o.bits)
    };
    ptq::quantize::quantize_network(g, &mut st, &opts).unwrap();
    st
}
