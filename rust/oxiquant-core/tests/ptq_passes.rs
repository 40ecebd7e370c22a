//! The invariants of each PTQ pass, on `testing::networks::residual_cnn` (a folded
//! BatchNormalization, a residual merge, a Clip, an average, a max pool, a float island),
//! each checked against something computed apart from the pass: the float graph's values,
//! plain loops over fetched values, or bounds derived from the bit widths.
// Tests may unwrap (clippy.toml); this covers their helper functions too.
#![allow(clippy::unwrap_used)]

mod common;

use common::{calibration_batches, fetch, node_outputs, ptq_until, rel_err, run, times_scale, Steps};
use oxiquant_core::ops::{BatchNorm, Gemm, Identity, Scaling};
use oxiquant_core::ptq::clipping::levels;
use oxiquant_core::ptq::{Clipping, Role, Stage};
use oxiquant_core::testing::networks::{cnn_batch, residual_cnn};
use oxiquant_core::{Graph, Tensor};
use std::collections::HashMap;

/// Inputs the float function is compared on: the calibration batches and wider ones.
fn test_inputs() -> Vec<Tensor> {
    let mut v = calibration_batches();
    v.push(cnn_batch(2, 7, 10.0));
    v.push(cnn_batch(2, 8, 0.1));
    v
}

/// max |w| of each output channel (the rows of a Conv weight or a transB Gemm weight).
fn row_max_abs(w: &Tensor) -> Vec<f32> {
    let rows = w.shape()[0];
    let v = w.to_f32_vec();
    v.chunks(v.len() / rows)
        .map(|r| r.iter().fold(0f32, |m, x| m.max(x.abs())))
        .collect()
}

fn node<'g>(g: &'g Graph, name: &str) -> &'g oxiquant_core::graph::Node {
    &g.nodes[g.node_index(name).unwrap_or_else(|| panic!("no node '{name}'"))]
}

fn weight<'g>(g: &'g Graph, name: &str) -> &'g Tensor {
    &g.initializers[&node(g, name).inputs[1]]
}

fn scaling_nodes(g: &Graph) -> Vec<(&oxiquant_core::graph::Node, &Scaling)> {
    g.nodes
        .iter()
        .filter_map(|n| n.op.downcast_ref::<Scaling>().map(|s| (n, s)))
        .collect()
}

const AFFINE: [&str; 4] = ["conv1", "conv2", "conv3", "fc"];

#[test]
fn prepare_folds_and_keeps_the_float_function() {
    let float = residual_cnn(true);
    let mut g = float.clone();
    ptq_until(&mut g, Stage::Prepared, Steps::default());
    assert!(!g.nodes.iter().any(|n| n.op.is::<BatchNorm>() || n.op.is::<Identity>()));
    let fc = node(&g, "fc").op.downcast_ref::<Gemm>().unwrap();
    assert_eq!((fc.alpha, fc.beta), (1.0, 1.0));
    for x in test_inputs() {
        // Folding rounds each weight once (a few ulps of the output).
        let e = rel_err(&run(&g, &x), &run(&float, &x));
        assert!(e < 1e-5, "relative error {e}");
    }
}

#[test]
fn scaling_nodes_are_identities_placed_as_the_algorithm_says() {
    let mut prepared = residual_cnn(true);
    let st = ptq_until(&mut prepared, Stage::Prepared, Steps::default());
    let mut g = prepared.clone();
    let mut st2 = st.clone();
    oxiquant_core::ptq::insert_scaling::insert_scaling_nodes(&mut g, &mut st2).unwrap();
    for (n, sc) in scaling_nodes(&g) {
        assert!(sc.factor == [1.0] && sc.quant.is_none(), "{}: {sc:?}", n.name);
    }
    // Exactly the same function: bit for bit.
    for x in test_inputs() {
        assert_eq!(run(&g, &x), run(&prepared, &x));
    }
    // One after the input, after each affine node and after the merge; one on the merge
    // input that has none of its own (the residual branch, also read by conv2); a
    // dequantizer before the float island and a requantizer after it.
    let mut roles: HashMap<&str, usize> = HashMap::new();
    for info in st2.scaling.values() {
        *roles.entry(info.role.name()).or_default() += 1;
    }
    let want: HashMap<&str, usize> = [
        ("input", 1),
        ("affine", 4),
        ("merge", 1),
        ("branch", 1),
        ("dequant", 1),
        ("island_output", 1),
    ]
    .into();
    assert_eq!(roles, want);
    assert_eq!(scaling_nodes(&g).len(), 9);
    // Each affine node's output is read by its Scaling node only.
    for a in AFFINE {
        let out = &node(&g, a).outputs[0];
        let readers = g.consumers(out);
        assert!(
            readers.len() == 1 && g.nodes[readers[0].0].op.is::<Scaling>(),
            "{a}: {readers:?}"
        );
    }
}

/// `stored(v) * S(v)` is the float value of `v` for every value of the prepared graph, with
/// `S` as `normalize_parameters` records it; the weights are in [-1, 1] with their largest
/// magnitude (per channel, or per tensor) exactly 1, and the recorded weight scales are the
/// largest magnitudes of the prepared weights.
#[test]
fn normalized_parameters_change_the_function_only_by_the_recorded_scales() {
    for per_channel in [false, true] {
        let mut prepared = residual_cnn(true);
        ptq_until(&mut prepared, Stage::Prepared, Steps::default());
        let mut g = residual_cnn(true);
        let st = ptq_until(
            &mut g,
            Stage::ParamsNormalized,
            Steps {
                per_channel,
                ..Steps::default()
            },
        );
        for a in AFFINE {
            let before = row_max_abs(weight(&prepared, a));
            let after = row_max_abs(weight(&g, a));
            let recorded = &st.affine[a].weight_scale;
            if per_channel {
                assert_eq!(recorded, &before, "{a}");
                assert!(after.iter().all(|&m| m == 1.0), "{a}: {after:?}");
            } else {
                let m = before.iter().fold(0f32, |m, &x| m.max(x));
                assert!(recorded.iter().all(|&s| s == m), "{a}: {recorded:?} vs {m}");
                assert_eq!(after.iter().fold(0f32, |m, &x| m.max(x)), 1.0, "{a}");
                assert!(after.iter().all(|&x| x <= 1.0), "{a}");
            }
        }
        let names: Vec<String> = node_outputs(&prepared);
        let mut checked = 0;
        for x in test_inputs() {
            let want = fetch(&prepared, &x, &names);
            let got = fetch(&g, &x, &names);
            for v in &names {
                let s = st
                    .scales
                    .get(v)
                    .unwrap_or_else(|| panic!("no scale recorded for '{v}'"));
                let e = rel_err(&times_scale(&got[v], s), &want[v].to_f32_vec());
                assert!(e < 1e-5, "per_channel {per_channel}, '{v}': relative error {e}");
                checked += 1;
            }
        }
        assert!(checked >= 5 * 12);
    }
}

/// The statistics of every calibrated Scaling node are those of the values it wrote on the
/// calibration batches, recomputed here by plain loops over the fetched values.
#[test]
fn calibration_records_what_was_observed() {
    let mut g = residual_cnn(true);
    let st = ptq_until(&mut g, Stage::Calibrated, Steps::default());
    assert_eq!(st.batches_seen, 3);
    assert_eq!(st.samples_seen, 4 + 3 + 5);
    let watched: Vec<(&String, &oxiquant_core::ptq::ScalingInfo)> =
        st.scaling.iter().filter(|(_, i)| i.role.calibrated()).collect();
    assert_eq!(watched.len(), 8);
    let names: Vec<String> = watched.iter().map(|(_, i)| i.output.clone()).collect();
    let mut seen: HashMap<String, Vec<f32>> = HashMap::new();
    for b in calibration_batches() {
        for (v, t) in fetch(&g, &b, &names) {
            seen.entry(v).or_default().extend(t.to_f32_vec());
        }
    }
    for (name, info) in watched {
        let s = info.stats.as_ref().unwrap();
        let v = &seen[&info.output];
        let max_abs = v.iter().fold(0f32, |m, x| m.max(x.abs()));
        let (lo, hi) = (
            v.iter().copied().fold(f32::INFINITY, f32::min),
            v.iter().copied().fold(f32::NEG_INFINITY, f32::max),
        );
        assert_eq!((s.max_abs, s.min, s.max), (max_abs, lo, hi), "{name}");
        assert_eq!(s.count as usize, v.len(), "{name}");
        assert_eq!(s.hist_abs.iter().sum::<u64>(), s.count, "{name}");
        let sum_abs: f64 = v.iter().map(|x| x.abs() as f64).sum();
        let sum_sq: f64 = v.iter().map(|&x| x as f64 * x as f64).sum();
        assert!((s.sum_abs - sum_abs).abs() <= 1e-4 * sum_abs, "{name}");
        assert!((s.sum_sq - sum_sq).abs() <= 1e-4 * sum_sq, "{name}");
        assert_eq!(info.calib_scale, st.scales[&info.output][0], "{name}");
    }
}

/// Mean squared error of quantizing `v` to `q` levels per side over `[-c, c]`, in f64.
fn quant_mse(v: &[f32], c: f64, q: u32) -> f64 {
    let step = c / q as f64;
    v.iter()
        .map(|&x| {
            let r = ((x as f64 / step).round().clamp(-(q as f64) - 1.0, q as f64)) * step;
            (x as f64 - r).powi(2)
        })
        .sum::<f64>()
        / v.len() as f64
}

/// MAX keeps the observed range (in real units); MSE picks a range no worse than MAX on the
/// data itself (measured here on the values, not on the histograms it searched); a Scaling
/// node read only by Clip(0, 6) never keeps more than 6.
#[test]
fn adjusted_ranges_keep_the_observed_range_or_lower_the_error() {
    let mut g = residual_cnn(true);
    let calibrated = ptq_until(&mut g, Stage::Calibrated, Steps::default());
    let names: Vec<String> = calibrated.scaling.values().map(|i| i.output.clone()).collect();
    let mut seen: HashMap<String, Vec<f32>> = HashMap::new();
    for b in calibration_batches() {
        for (v, t) in fetch(&g, &b, &names) {
            seen.entry(v).or_default().extend(t.to_f32_vec());
        }
    }
    let conv3_scaling = calibrated
        .scaling
        .iter()
        .find(|(_, i)| i.role == Role::Affine && i.output == "c3")
        .map(|(n, _)| n.clone())
        .unwrap();
    let mut lowered = 0;
    for (method, bits) in [(Clipping::Max, 8), (Clipping::Mse, 4)] {
        let mut st = calibrated.clone();
        oxiquant_core::ptq::adjust::adjust_ranges(&g, &mut st, method, bits, false).unwrap();
        for (name, info) in st.scaling.iter().filter(|(_, i)| i.role.calibrated()) {
            let v = &seen[&info.output];
            let observed = v.iter().fold(0f32, |m, x| m.max(x.abs())) as f64;
            let clip = info.clip.unwrap() as f64;
            let cap = if *name == conv3_scaling {
                // The Clip's bound 6 in stored units at calibration time.
                let bound = 6.0 / info.calib_scale as f64;
                assert!(observed > bound, "the cap is not exercised: {observed} <= {bound}");
                bound
            } else {
                f64::INFINITY
            };
            let stored_clip = clip / info.calib_scale as f64;
            match method {
                Clipping::Max => {
                    let want = observed.min(cap);
                    assert!(
                        (stored_clip - want).abs() <= 1e-6 * want,
                        "{name}: {stored_clip} vs {want}"
                    );
                }
                _ => {
                    assert!(
                        stored_clip > 0.0 && stored_clip <= observed.min(cap) * (1.0 + 1e-6),
                        "{name}"
                    );
                    let q = levels(bits, true);
                    let (chosen, max) = (quant_mse(v, stored_clip, q), quant_mse(v, observed.min(cap), q));
                    // The search runs on 2048-bin histograms: allow it 2 % off the true optimum.
                    assert!(
                        chosen <= max * 1.02,
                        "{name}: MSE {chosen} with the clip vs {max} without"
                    );
                    lowered += (chosen < 0.9 * max) as usize;
                }
            }
        }
    }
    assert!(
        lowered >= 3,
        "MSE clipping lowered the error of only {lowered} tensors at 4 bits"
    );
}

/// After `normalize_activations` every calibrated Scaling node writes, on the calibration
/// data, values whose largest magnitude is its observed real range over its output scale
/// `S`; `S` is its clipping value, or, for the inputs of a merge balanced to a larger scale,
/// more. So with MAX clipping every such node fills [-1, 1] exactly, except the merge inputs
/// (inside it) and the node capped by Clip(0, 6) (beyond it: the quantizer clamps there).
/// And the float function is unchanged up to the output scale.
#[test]
fn normalized_activations_fill_the_unit_range() {
    let float = residual_cnn(true);
    for clipping in [Clipping::Max, Clipping::Mse] {
        let mut g = residual_cnn(true);
        let st = ptq_until(
            &mut g,
            Stage::ActsNormalized,
            Steps {
                clipping,
                bits: 4,
                ..Steps::default()
            },
        );
        let watched: Vec<&oxiquant_core::ptq::ScalingInfo> =
            st.scaling.values().filter(|i| i.role.calibrated()).collect();
        let names: Vec<String> = watched.iter().map(|i| i.output.clone()).collect();
        let mut largest: HashMap<String, f32> = HashMap::new();
        for b in calibration_batches() {
            for (v, t) in fetch(&g, &b, &names) {
                let m = t.to_f32_vec().iter().fold(0f32, |m, x| m.max(x.abs()));
                let e = largest.entry(v).or_default();
                *e = e.max(m);
            }
        }
        let merge_inputs = &node(&g, "add").inputs;
        let mut full = 0;
        for info in watched {
            let v = &info.output;
            let (clip, s_out) = (info.clip.unwrap() as f64, st.scales[v][0] as f64);
            if merge_inputs.contains(v) {
                assert!(
                    s_out >= clip * (1.0 - 1e-6),
                    "{clipping:?} '{v}': scale {s_out} < clip {clip}"
                );
            } else {
                assert!(
                    (s_out - clip).abs() <= 1e-6 * clip,
                    "{clipping:?} '{v}': scale {s_out} vs clip {clip}"
                );
            }
            let real_max = info.stats.as_ref().unwrap().max_abs as f64 * info.calib_scale as f64;
            let (got, want) = (largest[v] as f64, real_max / s_out);
            assert!((got - want).abs() <= 1e-5 * want, "{clipping:?} '{v}': {got} vs {want}");
            if clipping == Clipping::Max && v != "c3" {
                assert!(got <= 1.0 + 1e-5, "'{v}': {got}");
                full += ((got - 1.0).abs() <= 1e-5) as usize;
            }
        }
        if clipping == Clipping::Max {
            assert!(full >= 5, "only {full} tensors fill [-1, 1]");
        }
        let s_out = st.scales["out"].clone();
        for x in test_inputs() {
            let got = fetch(&g, &x, &["out".to_string()]);
            let e = rel_err(&times_scale(&got["out"], &s_out), &run(&float, &x));
            assert!(e < 1e-4, "{clipping:?}: relative error {e}");
        }
    }
}

/// Integer bounds of a quantizer of `bits` bits, from the bit width alone.
fn bounds(bits: u32, signed: bool) -> (f32, f32) {
    if signed {
        (-(2f32.powi(bits as i32 - 1)), 2f32.powi(bits as i32 - 1) - 1.0)
    } else {
        (0.0, 2f32.powi(bits as i32) - 1.0)
    }
}

/// Between the input quantizer and the outputs every value is an integer: each quantizer's
/// in its bit width's bounds, the weights in the symmetric weight range, the biases and
/// accumulators exact integers.
#[test]
fn quantized_values_are_integers_within_their_bit_widths() {
    for (bits, optimize_signs) in [(8, false), (8, true), (4, true), (3, false)] {
        let mut g = residual_cnn(false);
        let st = ptq_until(
            &mut g,
            Stage::Quantized,
            Steps {
                bits,
                optimize_signs,
                dequantize_outputs: false,
                ..Steps::default()
            },
        );
        let quantizers: Vec<(String, f32, f32)> = scaling_nodes(&g)
            .into_iter()
            .filter_map(|(n, sc)| {
                let info = &st.scaling[&n.name];
                let q = sc.quant?;
                assert_eq!(info.bits, Some(bits));
                assert_eq!((q.lo, q.hi), bounds(bits, info.signed), "{}", n.name);
                Some((n.outputs[0].clone(), q.lo, q.hi))
            })
            .collect();
        assert_eq!(quantizers.len(), 7, "bits {bits}");
        let wmax = (2f32.powi(bits as i32 - 1) - 1.0) as f64;
        for a in AFFINE {
            let n = node(&g, a);
            let w = g.initializers[&n.inputs[1]].to_f32_vec();
            assert!(w.iter().all(|&x| x == x.round() && (x as f64).abs() <= wmax), "{a}");
            if let Some(b) = n.inputs.get(2).and_then(|b| g.initializers.get(b)) {
                assert!(b.to_f32_vec().iter().all(|&x| x == x.round()), "{a} bias");
            }
        }
        let mut names: Vec<String> = quantizers.iter().map(|q| q.0.clone()).collect();
        names.extend(AFFINE.iter().map(|a| node(&g, a).outputs[0].clone()));
        for x in test_inputs() {
            let got = fetch(&g, &x, &names);
            for (v, lo, hi) in &quantizers {
                let t = got[v].to_f32_vec();
                assert!(
                    t.iter().all(|&y| y == y.round() && y >= *lo && y <= *hi),
                    "bits {bits}: '{v}' leaves [{lo}, {hi}] or is fractional"
                );
            }
            for a in AFFINE {
                let v = &node(&g, a).outputs[0];
                assert!(got[v].to_f32_vec().iter().all(|&y| y == y.round()), "accumulator '{v}'");
            }
        }
    }
}

/// Signal-to-noise ratio of `q` against `f`, in dB (f64).
fn sqnr(q: &[f32], f: &[f32]) -> f64 {
    let s: f64 = f.iter().map(|&x| (x as f64).powi(2)).sum();
    let n: f64 = q.iter().zip(f).map(|(&a, &b)| (a as f64 - b as f64).powi(2)).sum();
    10.0 * (s / n.max(1e-300)).log10()
}

/// With dequantized outputs, the quantized network approximates the float one, better by
/// about 6 dB per bit: each quantizer's noise power is step^2 / 12 and a step halves per bit.
#[test]
fn quantized_outputs_approach_the_float_ones() {
    let float = residual_cnn(true);
    let mut by_bits = Vec::new();
    for bits in [4, 6, 8] {
        let mut g = residual_cnn(true);
        ptq_until(
            &mut g,
            Stage::Quantized,
            Steps {
                bits,
                ..Steps::default()
            },
        );
        let (mut q, mut f) = (Vec::new(), Vec::new());
        // Inside the calibrated range (the widest calibration batch is 4x wider), so that
        // no quantizer saturates: 200 samples, 1000 outputs.
        for seed in 0..4 {
            let x = cnn_batch(50, 200 + seed, 2.0);
            q.extend(run(&g, &x));
            f.extend(run(&float, &x));
        }
        by_bits.push(sqnr(&q, &f));
    }
    let [s4, s6, s8] = by_bits[..] else { unreachable!() };
    eprintln!("SQNR {s4:.1} / {s6:.1} / {s8:.1} dB at 4 / 6 / 8 bits");
    // 12 dB per two bits in theory; at least 10. At 8 bits, one quantizer of a Gaussian-like
    // tensor over its full range is about 40 dB; seven of them in a row, at least 35.
    assert!(
        s6 - s4 >= 10.0 && s8 - s6 >= 10.0,
        "SQNR {s4:.1} / {s6:.1} / {s8:.1} dB at 4 / 6 / 8 bits"
    );
    assert!(s8 >= 35.0, "SQNR {s8:.1} dB at 8 bits");
}

/// The value a Scaling node quantizes, in the graph before quantization.
fn quantized_input(g: &Graph, scaling: &str) -> String {
    node(g, scaling).inputs[0].clone()
}

/// `optimize_signs` makes a quantizer unsigned only where the graph proves it: its input is
/// non-negative on any input (checked on wide inputs of both signs), or every reader maps
/// negative values to what it maps 0 to (checked by running each reader on the value and on
/// the value with its negatives zeroed). Calibration data that happens to be non-negative
/// proves nothing: the input quantizer stays signed.
#[test]
fn unsigned_quantizers_only_where_provably_non_negative() {
    let mut g = residual_cnn(true);
    let mut st = ptq_until(&mut g, Stage::ActsNormalized, Steps::default());
    let before = g.clone();
    let non_negative_calibration: Vec<Tensor> = calibration_batches()
        .iter()
        .map(|t| Tensor::from_vec(t.shape().to_vec(), t.to_f32_vec().iter().map(|x| x.abs()).collect()).unwrap())
        .collect();
    for x in &non_negative_calibration {
        assert!(x.to_f32_vec().iter().all(|&v| v >= 0.0));
    }
    let opts = oxiquant_core::ptq::quantize::QuantizeOptions {
        optimize_signs: true,
        ..oxiquant_core::ptq::quantize::QuantizeOptions::new(8)
    };
    oxiquant_core::ptq::quantize::quantize_network(&mut g, &mut st, &opts).unwrap();
    let unsigned: Vec<&String> = st
        .scaling
        .iter()
        .filter(|(_, i)| i.bits.is_some() && !i.signed)
        .map(|(n, _)| n)
        .collect();
    let input_q = st.scaling.iter().find(|(_, i)| i.role == Role::Input).unwrap().1;
    assert!(input_q.signed, "the input quantizer is unsigned");
    // After conv1 (read by a Relu), after the merge (read by a Relu), after conv3 (read by
    // Clip(0, 6)). (The Sigmoid island's output is non-negative too, but Sigmoid's sign rule
    // does not say so: signed, which is allowed, only less precise.)
    assert!(unsigned.len() >= 3, "only {unsigned:?} are unsigned");
    let hostile = [cnn_batch(3, 50, 20.0), cnn_batch(3, 51, -20.0), cnn_batch(3, 52, 0.01)];
    let mut readers_checked = 0;
    for name in unsigned {
        let v = quantized_input(&before, name);
        let out = &node(&before, name).outputs[0];
        for x in &hostile {
            let vals = fetch(&before, x, std::slice::from_ref(&v))[&v].clone();
            if vals.to_f32_vec().iter().all(|&y| y >= 0.0) {
                continue;
            }
            // Negative values reach it: every reader must not care.
            let readers = before.consumers(out);
            assert!(!readers.is_empty() && !before.is_graph_output(out), "'{name}'");
            let scaled = fetch(&before, x, std::slice::from_ref(out))[out].clone();
            readers_checked += 1;
            let zeroed = Tensor::from_vec(
                scaled.shape().to_vec(),
                scaled.to_f32_vec().iter().map(|y| y.max(0.0)).collect(),
            )
            .unwrap();
            for (r, slot) in readers {
                let rn = &before.nodes[r];
                let eval = |t: &Tensor| {
                    let args: Vec<Option<&Tensor>> = rn
                        .inputs
                        .iter()
                        .enumerate()
                        .map(|(i, a)| if i == slot { Some(t) } else { before.initializers.get(a) })
                        .collect();
                    rn.op.eval(&args).unwrap().remove(0).to_f32_vec()
                };
                assert_eq!(
                    eval(&scaled),
                    eval(&zeroed),
                    "'{name}' is unsigned but '{}' sees negatives",
                    rn.name
                );
            }
        }
    }
    assert!(
        readers_checked > 0,
        "no unsigned quantizer saw a negative value: the reader check never ran"
    );
    // Signed where a negative value can reach a reader that keeps it: the output.
    let out_q = st.scaling.values().find(|i| i.output == "out").unwrap();
    assert!(out_q.signed);
}

/// The residual Add's inputs share one integer unit. With `optimize_signs` its shortcut (the
/// Relu output, non-negative) keeps the unsigned codes `[0, U]` on the unit of the signed
/// conv2 branch (`Grid::UnsignedSharedUnit`): the same real value per step as its sibling,
/// and codes above the signed grid's top `Q` in use. The Add of the two codes times the step
/// is the float Add of the two quantized values (checked against the dequantized inputs).
#[test]
fn a_non_negative_shortcut_keeps_unsigned_codes_on_the_merges_unit() {
    for (bits, clipping) in [(4, Clipping::Mse), (8, Clipping::Mse), (6, Clipping::Max)] {
        let mut g = residual_cnn(false);
        let st = ptq_until(
            &mut g,
            Stage::Quantized,
            Steps {
                bits,
                clipping,
                optimize_signs: true,
                dequantize_outputs: false,
                ..Steps::default()
            },
        );
        let add = node(&g, "add").clone();
        let feeding: Vec<(String, &oxiquant_core::ptq::ScalingInfo)> = add
            .inputs
            .iter()
            .map(|v| {
                let name = g.nodes[g.producer(v).unwrap()].name.clone();
                let info = &st.scaling[&name];
                (v.clone(), info)
            })
            .collect();
        let (short, conv) = match (feeding[0].1.signed, feeding[1].1.signed) {
            (true, false) => (&feeding[1], &feeding[0]),
            (false, true) => (&feeding[0], &feeding[1]),
            s => panic!("bits {bits}: the Add's inputs are signed {s:?}, want one of each"),
        };
        let (q, u) = (levels(bits, true) as i32, levels(bits, false) as i32);
        assert_eq!(short.1.codes, Some((0, u)), "bits {bits}");
        assert_eq!(conv.1.codes, Some((-q - 1, q)), "bits {bits}");
        let (s_short, s_conv) = (short.1.step.unwrap(), conv.1.step.unwrap());
        assert!(
            (s_short / s_conv - 1.0).abs() < 1e-6,
            "bits {bits}: steps {s_short} and {s_conv}"
        );
        let mut above_q = 0;
        for x in test_inputs() {
            let got = fetch(&g, &x, &[short.0.clone(), conv.0.clone(), add.outputs[0].clone()]);
            let (a, b, s) = (
                got[&short.0].to_f32_vec(),
                got[&conv.0].to_f32_vec(),
                got[&add.outputs[0]].to_f32_vec(),
            );
            assert!(a.iter().all(|&c| c >= 0.0 && c <= u as f32 && c == c.round()));
            above_q += a.iter().filter(|&&c| c > q as f32).count();
            for i in 0..s.len() {
                let real = (a[i] * s_short) as f64 + (b[i] * s_conv) as f64;
                assert!(
                    (s[i] as f64 * s_conv as f64 - real).abs() <= 1e-5 * real.abs().max(1.0),
                    "bits {bits}"
                );
            }
        }
        // The shortcut's top code reaches at least its own clipping value (the merge's
        // shared scale may only widen it), twice the signed grid's reach at the same step.
        let reach = u as f32 * s_short;
        assert!(
            reach >= short.1.clip.unwrap() * (1.0 - 1e-5),
            "bits {bits}: reach {reach}"
        );
        // With MSE clipping the shortcut's values above the signed top are frequent enough to
        // be kept: codes above Q are in use.
        if clipping == Clipping::Mse {
            assert!(above_q > 0, "bits {bits}: the shortcut never uses the codes above {q}");
        }
    }
}

/// Mixed activation widths (`act_bits`): the quantizer asked for 8 bits and its sibling on
/// the residual Add (they share one integer unit, so one width) code on 8 bits, every other
/// quantizer on the network's 4; every quantized value is an integer within its own
/// quantizer's codes; a name that is no quantizer is refused before anything changes.
#[test]
fn activation_widths_of_single_quantizers_spread_over_their_merge() {
    let mut g = residual_cnn(false);
    let steps = Steps {
        bits: 4,
        clipping: Clipping::Mse,
        optimize_signs: true,
        dequantize_outputs: false,
        act_bits: &[("c2", 8)],
        ..Steps::default()
    };
    let st = ptq_until(&mut g, Stage::Quantized, steps);
    let add = node(&g, "add").clone();
    let owners: Vec<String> = add
        .inputs
        .iter()
        .map(|v| g.nodes[g.producer(v).unwrap()].name.clone())
        .collect();
    for (name, info) in &st.scaling {
        if !info.role.calibrated() {
            continue;
        }
        let want = if owners.contains(name) { 8 } else { 4 };
        assert_eq!(info.bits, Some(want), "'{name}' (writes '{}')", info.output);
        let (lo, hi) = info.codes.unwrap();
        let top = if info.signed {
            levels(want, true) as i32
        } else {
            levels(want, false) as i32
        };
        assert_eq!(hi, top, "'{name}'");
        assert_eq!(lo, if info.signed { -top - 1 } else { 0 }, "'{name}'");
    }
    assert!(owners.iter().any(|o| st.scaling[o].output == "c2"));
    let values: Vec<String> = st
        .scaling
        .values()
        .filter(|i| i.role.calibrated())
        .map(|i| i.output.clone())
        .collect();
    let mut wide = 0;
    for x in test_inputs() {
        let got = fetch(&g, &x, &values);
        for info in st.scaling.values().filter(|i| i.role.calibrated()) {
            let (lo, hi) = info.codes.unwrap();
            let v = got[&info.output].to_f32_vec();
            assert!(
                v.iter().all(|&c| c == c.round() && c >= lo as f32 && c <= hi as f32),
                "'{}' leaves its codes [{lo}, {hi}]",
                info.output
            );
            if info.bits == Some(8) {
                wide += v.iter().filter(|c| c.abs() > 16.0).count();
            }
        }
    }
    assert!(wide > 0, "the 8-bit quantizers never use a code beyond 4 bits");

    // Unknown names: an error naming the key, and the state as it was.
    let mut g = residual_cnn(false);
    let mut st = ptq_until(&mut g, Stage::Calibrated, Steps::default());
    let before = st.clone();
    st.act_bits = [("no_such_value".to_string(), 8)].into();
    let err = oxiquant_core::ptq::adjust::adjust_ranges(&g, &mut st, Clipping::Max, 4, true).unwrap_err();
    assert!(err.to_string().contains("'no_such_value'"), "{err}");
    st.act_bits.clear();
    assert_eq!(st, before);
}
