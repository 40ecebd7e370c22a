//! The weight-rounding passes (`ptq::rounding`): bias correction makes a layer's mean output
//! on the calibration data the float one; GPTQ rounding keeps the weights on the grid and its
//! output error on the calibration data is no larger than round-to-nearest's. References: the
//! float graph's outputs and plain loops over them.
#![allow(clippy::unwrap_used)]

use oxiquant_core::onnx::AttrValue;
use oxiquant_core::ptq::quantize::QuantizeOptions;
use oxiquant_core::ptq::rounding::{round_weights, RoundingOptions};
use oxiquant_core::ptq::{self, Clipping, PtqState};
use oxiquant_core::testing::{feeds, ints, values, GraphBuilder};
use oxiquant_core::{exec, Graph, Tensor};

/// One convolution (or Gemm when `conv` is None: `[c] -> [m]`), named "layer".
fn layer(c: usize, m: usize, conv: Option<(usize, usize)>, seed: u64) -> Graph {
    let b = GraphBuilder::new();
    let b = match conv {
        Some((k, group)) => b
            .batched_input("x", &[1, c, 6, 6])
            .weights("w", &[m, c / group, k, k], seed)
            .weights("b", &[m], seed + 1)
            .node("Conv", &["x", "w", "b"], &["y"])
            .attr("pads", ints(&[1, 1, 1, 1]))
            .attr("group", AttrValue::Int(group as i64)),
        None => b
            .batched_input("x", &[1, c])
            .weights("w", &[m, c], seed)
            .weights("b", &[m], seed + 1)
            .node("Gemm", &["x", "w", "b"], &["y"])
            .attr("transB", AttrValue::Int(1)),
    };
    b.named("layer").output("y").build()
}

/// Calibration batches with correlated channels and a channel mean far from 0: channel `ci`
/// is `offset[ci] + sum_j mix[ci][j] * z_j + noise`.
fn batches(shape: &[usize], seed: u64, count: usize) -> Vec<Tensor> {
    let c = shape[1];
    let inner: usize = shape[2..].iter().product();
    let mix = values(c * 3, seed ^ 0x55);
    let offset = values(c, seed ^ 0xAA);
    (0..count)
        .map(|b| {
            let n = shape[0];
            let z = values(n * 3 * inner, seed + 17 * b as u64);
            let noise = values(n * c * inner, seed + 31 * b as u64 + 5);
            let mut x = vec![0f32; n * c * inner];
            for img in 0..n {
                for ci in 0..c {
                    for p in 0..inner {
                        let v: f32 = (0..3).map(|j| mix[ci * 3 + j] * z[(img * 3 + j) * inner + p]).sum();
                        let noise = 0.3 * noise[(img * c + ci) * inner + p];
                        x[(img * c + ci) * inner + p] = 2.0 * offset[ci] + 1.5 + v + noise;
                    }
                }
            }
            let mut s = shape.to_vec();
            s[0] = n;
            Tensor::from_vec(s, x).unwrap()
        })
        .collect()
}

fn run(g: &Graph, x: &Tensor) -> Vec<f32> {
    exec::run(g, feeds(&[("x", x)])).unwrap().remove(0).1.to_f32_vec()
}

/// The PTQ steps up to `normalize_activations`, activations at `act_bits`, gathering the
/// layer inputs of every calibration sample.
fn normalized(g: &mut Graph, cal: &[Tensor], act_bits: u32, per_channel: bool) -> PtqState {
    let mut st = PtqState::default();
    ptq::prepare::prepare(g, &mut st).unwrap();
    ptq::insert_scaling::insert_scaling_nodes(g, &mut st).unwrap();
    ptq::normalize_params::normalize_parameters(g, &mut st, per_channel).unwrap();
    ptq::calibrate::begin_with(&mut st, true, usize::MAX).unwrap();
    for b in cal {
        ptq::calibrate::observe_batch(g, &mut st, feeds(&[("x", b)])).unwrap();
    }
    ptq::calibrate::finish(&mut st).unwrap();
    ptq::adjust::adjust_ranges(g, &mut st, Clipping::Max, act_bits, false).unwrap();
    ptq::normalize_acts::normalize_activations(g, &mut st).unwrap();
    st
}

/// Per output channel, the mean of the output over the batches (axis 1 is the channel).
fn channel_means(outs: &[(Vec<usize>, Vec<f32>)]) -> Vec<f64> {
    let m = outs[0].0[1];
    let mut sum = vec![0f64; m];
    let mut count = 0usize;
    for (shape, v) in outs {
        let inner: usize = shape[2..].iter().product();
        for (i, &x) in v.iter().enumerate() {
            sum[(i / inner) % m] += x as f64;
        }
        count += shape[0] * inner;
    }
    sum.iter().map(|s| s / count as f64).collect()
}

/// The layer's largest channel-mean deviation from float after 3-bit rounding, with and
/// without bias correction, over the largest float channel mean. Compared on the normalized
/// network (`round_weights` done, activations not yet quantized), whose outputs are in the
/// same stored units before and after the rounding.
fn mean_shift(conv: Option<(usize, usize)>, per_channel: bool, seed: u64) -> (f64, f64) {
    let float = layer(4, 6, conv, seed);
    let shape: Vec<usize> = if conv.is_some() { vec![3, 4, 6, 6] } else { vec![7, 4] };
    let cal = batches(&shape, seed, 4);
    let mean_of = |g: &Graph| {
        channel_means(
            &cal.iter()
                .map(|x| {
                    let y = exec::run(g, feeds(&[("x", x)])).unwrap().remove(0).1;
                    (y.shape().to_vec(), y.to_f32_vec())
                })
                .collect::<Vec<_>>(),
        )
    };
    let mut base = float.clone();
    let st0 = normalized(&mut base, &cal, 8, per_channel);
    let want = mean_of(&base);
    let scale = want.iter().fold(0f64, |m, v| m.max(v.abs()));
    let mut shifts = Vec::new();
    for correct in [true, false] {
        let (mut g, mut st) = (base.clone(), st0.clone());
        let opts = RoundingOptions {
            gptq: false,
            bias_correction: correct,
            ..RoundingOptions::new(3)
        };
        round_weights(&mut g, &mut st, &opts).unwrap();
        let got = mean_of(&g);
        let d = got.iter().zip(&want).fold(0f64, |m, (a, b)| m.max((a - b).abs()));
        shifts.push(d / scale);
    }
    (shifts[0], shifts[1])
}

#[test]
fn bias_correction_gives_the_float_mean_output() {
    for (conv, per_channel, seed) in [
        (Some((3, 1)), true, 3),
        (Some((3, 2)), false, 4),
        (Some((1, 1)), true, 5),
        (None, true, 6),
        (None, false, 7),
    ] {
        let (with, without) = mean_shift(conv, per_channel, seed);
        // What is left is f32 rounding.
        assert!(
            with < 1e-5,
            "{conv:?}: corrected mean off by {with} (uncorrected {without})"
        );
        assert!(without > 1e-2, "{conv:?}: uncorrected {without}, corrected {with}");
    }
}

/// Output squared error of the normalized layer against its float self on `cal`.
fn output_mse(g: &Graph, reference: &Graph, cal: &[Tensor]) -> f64 {
    let mut e = 0f64;
    for x in cal {
        let (a, b) = (run(g, x), run(reference, x));
        e += a.iter().zip(&b).map(|(p, q)| ((p - q) as f64).powi(2)).sum::<f64>();
    }
    e
}

fn weights_of(g: &Graph) -> Vec<f32> {
    let n = &g.nodes[g.node_index("layer").unwrap()];
    g.initializers[&n.inputs[1]].to_f32_vec()
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 24, ..Default::default() })]
    #[test]
    fn gptq_is_on_the_grid_and_no_worse_than_nearest(
        seed in 0u64..10_000,
        bits in 2u32..6,
        kind in 0usize..4,
        per_channel in proptest::bool::ANY,
    ) {
        let (conv, c, m) = match kind {
            0 => (Some((3, 1)), 4, 5),
            1 => (Some((3, 2)), 4, 6),
            2 => (Some((1, 1)), 8, 4),
            _ => (None, 12, 5),
        };
        let float = layer(c, m, conv, seed);
        let shape: Vec<usize> = if conv.is_some() { vec![4, c, 6, 6] } else { vec![40, c] };
        let cal = batches(&shape, seed, 3);
        let mut base = float.clone();
        let st0 = normalized(&mut base, &cal, 16, per_channel);
        let mut errs = Vec::new();
        for gptq in [false, true] {
            let (mut g, mut st) = (base.clone(), st0.clone());
            let opts = RoundingOptions { gptq, bias_correction: false, ..RoundingOptions::new(bits) };
            round_weights(&mut g, &mut st, &opts).unwrap();
            let q = ptq::clipping::levels(bits, true) as f32;
            for w in weights_of(&g) {
                let k = w * q;
                proptest::prop_assert!((k - k.round()).abs() < 1e-3 && k.abs() <= q + 1e-3, "{w} is off the grid of {bits} bits");
            }
            errs.push(output_mse(&g, &base, &cal));
        }
        proptest::prop_assert!(errs[1] <= errs[0] * (1.0 + 1e-5) + 1e-9, "GPTQ {} against nearest {}", errs[1], errs[0]);
    }
}

#[test]
fn round_weights_needs_the_layer_statistics_and_matching_widths() {
    let mut g = layer(4, 6, Some((3, 1)), 1);
    let cal = batches(&[2, 4, 6, 6], 1, 2);
    let mut st = PtqState::default();
    ptq::prepare::prepare(&mut g, &mut st).unwrap();
    ptq::insert_scaling::insert_scaling_nodes(&mut g, &mut st).unwrap();
    ptq::normalize_params::normalize_parameters(&mut g, &mut st, true).unwrap();
    ptq::calibrate::begin(&mut st, true).unwrap();
    for b in &cal {
        ptq::calibrate::observe_batch(&g, &mut st, feeds(&[("x", b)])).unwrap();
    }
    ptq::calibrate::finish(&mut st).unwrap();
    ptq::adjust::adjust_ranges(&g, &mut st, Clipping::Max, 8, false).unwrap();
    ptq::normalize_acts::normalize_activations(&mut g, &mut st).unwrap();
    let e = round_weights(&mut g, &mut st, &RoundingOptions::new(4)).unwrap_err();
    assert!(e.to_string().contains("layer_statistics"), "{e}");
    // Round to nearest needs nothing; quantize then refuses another width.
    let opts = RoundingOptions {
        gptq: false,
        bias_correction: false,
        ..RoundingOptions::new(4)
    };
    round_weights(&mut g, &mut st, &opts).unwrap();
    let e = ptq::quantize::quantize_network(&mut g, &mut st, &QuantizeOptions::new(8)).unwrap_err();
    assert!(
        e.to_string().contains("'layer'") && e.to_string().contains("4 bits"),
        "{e}"
    );
}
