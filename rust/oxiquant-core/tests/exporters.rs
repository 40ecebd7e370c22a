//! The exporters, read back by the core's own loader and run by its own evaluation of the
//! ONNX ops they write (Mul / Round / Clip, QuantizeLinear / DequantizeLinear, QLinearConv,
//! QLinearAdd ... as ONNX defines them): the files must compute what the graph they come
//! from computes.
// Tests may unwrap (clippy.toml); this covers their helper functions too.
#![allow(clippy::unwrap_used)]

mod common;

use common::{ptq_until, run, Steps};
use oxiquant_core::onnx::export_qdq::{to_qdq, WeightType};
use oxiquant_core::onnx::export_qop::to_qoperator;
use oxiquant_core::onnx::import_quantized::import_quantized;
use oxiquant_core::ops::{QOp, Scaling};
use oxiquant_core::ptq::{PtqState, Stage};
use oxiquant_core::testing::networks::{cnn_batch, residual_cnn};
use oxiquant_core::{Graph, Tensor};

fn inputs() -> Vec<Tensor> {
    vec![cnn_batch(8, 30, 1.0), cnn_batch(8, 31, 3.0), cnn_batch(4, 32, 0.2)]
}

fn quantized(bits: u32, dequantize_outputs: bool, per_channel: bool) -> (Graph, PtqState) {
    let mut g = residual_cnn(true);
    let st = ptq_until(
        &mut g,
        Stage::Quantized,
        Steps {
            bits,
            dequantize_outputs,
            per_channel,
            optimize_signs: true,
            ..Steps::default()
        },
    );
    (g, st)
}

/// The real value of one integer step of the output: the output's dequantization factor.
fn output_step(g: &Graph) -> f32 {
    let p = g.producer("out").unwrap();
    let sc = g.nodes[p]
        .op
        .downcast_ref::<Scaling>()
        .expect("a dequantizing Scaling node writes 'out'");
    assert!(sc.quant.is_none() && sc.factor.len() == 1);
    sc.factor[0]
}

#[test]
fn to_raw_and_back_is_the_same_float_graph() {
    let g = residual_cnn(true);
    let back = Graph::from_raw(g.to_raw().unwrap()).unwrap();
    assert_eq!(back, g);
}

/// The fake-quantized export writes each quantizer as `Clip(Round(Mul(x, f)))`; read back,
/// it runs as ONNX ops, and gives the quantized graph's outputs. Every quantized value is an
/// integer at most 2^15 here, `x * f` is rounded once in f32 by Mul and exactly by the
/// Scaling op, so they can differ only where that product falls within an ulp of a tie;
/// such a step would show as a difference of at least one output step, and none does.
#[test]
fn fake_quantized_export_reads_back_to_the_same_function() {
    for bits in [8, 4] {
        let (g, _) = quantized(bits, true, true);
        let raw = g.to_raw().unwrap();
        assert!(raw.nodes.iter().any(|n| n.op_type == "Round"));
        let back = Graph::from_raw(raw).unwrap();
        assert!(!back.nodes.iter().any(|n| n.op.is::<Scaling>()));
        let step = output_step(&g) as f64;
        for x in inputs() {
            let (a, b) = (run(&back, &x), run(&g, &x));
            let worst = a
                .iter()
                .zip(&b)
                .fold(0f64, |m, (&p, &q)| m.max((p as f64 - q as f64).abs()));
            // Mul by the output factor in f32 on both sides: a few ulps, far below one step.
            assert!(worst <= 1e-3 * step, "bits {bits}: {worst} vs step {step}");
        }
    }
}

/// Compares two runs of integer-valued outputs in units of `step`: (largest difference in
/// steps, fraction of outputs that differ).
fn step_diff(a: &[f32], b: &[f32], step: f64) -> (f64, f64) {
    let d: Vec<f64> = a
        .iter()
        .zip(b)
        .map(|(&p, &q)| ((p as f64 - q as f64) / step).abs())
        .collect();
    let worst = d.iter().fold(0f64, |m, &x| m.max(x));
    let differ = d.iter().filter(|&&x| x > 1e-3).count() as f64 / d.len() as f64;
    (worst, differ)
}

/// The QDQ export read back runs QuantizeLinear / DequantizeLinear and the float ops between
/// them as ONNX defines them. It computes the quantized graph's integers: QuantizeLinear
/// divides by `1 / f` where the graph multiplies by `f` exactly, so a value within an ulp
/// of a tie may round the other way (one step at that quantizer, which later layers scale by
/// their gain). So: most outputs identical, the others a few steps off at most.
#[test]
fn qdq_export_reads_back_and_computes_the_quantized_graph() {
    for (wt, per_channel) in [(WeightType::Uint8, false), (WeightType::Int8, true)] {
        let (g, st) = quantized(8, true, per_channel);
        let (raw, _) = to_qdq(&g, &st, wt).unwrap();
        let back = Graph::from_raw(raw).unwrap();
        assert!(back.nodes.iter().any(|n| n.op.is::<QOp>()));
        assert!(!back.nodes.iter().any(|n| n.op.is::<Scaling>()));
        let step = output_step(&g) as f64;
        let (mut worst, mut differ) = (0f64, 0f64);
        for x in inputs() {
            let (w, d) = step_diff(&run(&back, &x), &run(&g, &x), step);
            worst = worst.max(w);
            differ = differ.max(d);
        }
        eprintln!(
            "QDQ {wt:?}: worst {worst:.3} steps, {:.1} % of outputs differ",
            100.0 * differ
        );
        assert!(
            worst <= 4.0 && differ <= 0.05,
            "{wt:?}: worst {worst} steps, {differ} of outputs differ"
        );
    }
}

/// The integer engine's graph exported as QOperator ops and read back: the core's reference
/// evaluation of QLinearConv, QLinearAdd, QGemm ... (ONNX's definitions) against the integer
/// engine's kernels on the same integers. The requantizations round `acc * f` in f32 on one
/// side and by the engine's fixed-point multiplier on the other (the export picks scales on
/// which onnxruntime's f32 product rounds as the exact one does): the same steps up to rare
/// ties. And the export imported back to the integer engine runs as the engine did.
#[test]
fn qoperator_export_reads_back_and_computes_the_integer_engine() {
    for wt in [WeightType::Uint8, WeightType::Int8] {
        let (g, st) = quantized(8, false, true);
        let ig = oxiquant_core::int::lower::lower_to_integer(&g, &st).unwrap();
        let raw = to_qoperator(&ig, wt).unwrap();
        let back = Graph::from_raw(raw).unwrap();
        assert!(back.nodes.iter().any(|n| n.op.op_type() == "QLinearConv"));
        let imported = import_quantized(&back).unwrap().graph;
        let (mut worst, mut differ, mut worst_imp) = (0f64, 0f64, 0f64);
        for x in inputs() {
            let engine = run(&ig, &x);
            // The fake-quantized graph without output dequantization: integers of the output.
            let fake = run(&g, &x);
            let (w, d) = step_diff(&run(&back, &x), &engine, 1.0);
            worst = worst.max(w);
            differ = differ.max(d);
            worst_imp = worst_imp.max(step_diff(&run(&imported, &x), &engine, 1.0).0);
            let (we, _) = step_diff(&engine, &fake, 1.0);
            assert!(
                we <= 4.0,
                "the integer engine is {we} steps from the fake-quantized graph"
            );
        }
        eprintln!(
            "QOperator {wt:?}: worst {worst:.3} steps, {:.1} % of outputs differ; imported: {worst_imp:.3}",
            100.0 * differ
        );
        assert!(
            worst <= 4.0 && differ <= 0.05,
            "{wt:?}: worst {worst} steps, {differ} differ"
        );
        assert!(
            worst_imp <= 4.0,
            "{wt:?}: the import is {worst_imp} steps from the engine"
        );
    }
}
