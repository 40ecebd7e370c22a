//! `Graph::infer_facts` on whole graphs, against running them: every value's facts hold of
//! the tensor the executor computes (and are exactly it when the input shape is fixed); a
//! symbolic batch dimension `N` reaches the output; shapes set by constants (a Constant
//! node, a Shape of a known input) are known; a contradiction names its node and op. The
//! graphs: the float CNN, its inference plan, its quantized form, integer engine and
//! QOperator / QDQ exports.
#![allow(clippy::unwrap_used)]

use oxiquant_core::graph::Graph;
use oxiquant_core::onnx::export_qdq::{self, WeightType};
use oxiquant_core::onnx::export_qop;
use oxiquant_core::ops::QOp;
use oxiquant_core::ops::{DimFact, ValueFact};
use oxiquant_core::ptq::quantize::QuantizeOptions;
use oxiquant_core::ptq::{self, Clipping, PtqState};
use oxiquant_core::testing::networks::{cnn_batch, residual_cnn, CNN_CLASSES};
use oxiquant_core::testing::{feeds, ints, tensor, GraphBuilder};
use oxiquant_core::{exec, int, passes, DType, Tensor};
use std::collections::HashMap;

/// Every value a node of `g` writes, as the executor computes it on input `x`.
fn all_values(g: &Graph, x: &Tensor) -> HashMap<String, Tensor> {
    let names: Vec<String> = g.nodes.iter().flat_map(|n| n.outputs.iter().cloned()).collect();
    let (outs, fetched) = exec::run_fetching(g, feeds(&[("x", x)]), &names).unwrap();
    outs.into_iter().chain(fetched).collect()
}

fn n() -> DimFact {
    DimFact::Symbol("N".into())
}

/// The facts of every value hold of what the executor computes, on several batch sizes;
/// with the batch fixed they are exactly the computed dtypes and shapes.
fn agrees_with_running(g: &Graph, batches: &[usize]) {
    let facts = g.infer_facts().unwrap();
    for &b in batches {
        let values = all_values(g, &cnn_batch(b, 3, 1.0));
        assert!(!values.is_empty());
        for (name, t) in &values {
            let f = &facts[name];
            assert!(
                f.admits(t),
                "'{name}': facts {f}, computed {} {:?}",
                t.dtype(),
                t.shape()
            );
            if let Some(s) = &f.shape {
                for (d, &k) in s.iter().zip(t.shape()) {
                    assert!(*d != n() || k == b, "'{name}': N is {b}, computed {:?}", t.shape());
                }
            }
        }
    }
}

#[test]
fn facts_of_the_residual_cnn_agree_with_running_it() {
    for island in [false, true] {
        let g = residual_cnn(island);
        agrees_with_running(&g, &[1, 3]);
        // Every value is float32 with a known rank, its batch the input's N.
        let facts = g.infer_facts().unwrap();
        for node in &g.nodes {
            let f = &facts[&node.outputs[0]];
            assert_eq!(f.dtype, Some(DType::F32), "{}", node.name);
            assert_eq!(f.dim(0), n(), "'{}': {f}", node.name);
        }
        assert_eq!(facts["out"].shape, Some(vec![n(), DimFact::Known(CNN_CLASSES)]));
        assert_eq!(facts["p"].shape_string(), "[N, 8, 4, 4]");
        // With a fixed batch: exactly what runs.
        let mut fixed = g.clone();
        fixed.inputs[0].shape = Some([2, 3, 8, 8].map(oxiquant_core::graph::Dim::Fixed).to_vec());
        let facts = fixed.infer_facts().unwrap();
        for (name, t) in all_values(&fixed, &cnn_batch(2, 5, 1.0)) {
            assert_eq!(facts[&name], ValueFact::of_tensor(&t), "'{name}'");
        }
    }
}

/// The same graph folded and planned (`FusedConv` nodes with their residual Add and clamp).
#[test]
fn facts_of_the_inference_plan_agree_with_running_it() {
    let mut g = residual_cnn(false);
    passes::fold_constants(&mut g).unwrap();
    let plan = passes::inference_plan::inference_plan(&g).unwrap();
    assert!(
        plan.nodes.iter().any(|n| n.op.is::<oxiquant_core::ops::FusedConv>()),
        "no fused conv"
    );
    agrees_with_running(&plan, &[1, 2]);
    assert_eq!(
        plan.infer_facts().unwrap()[&plan.outputs[0].name].shape_string(),
        "[N, 5]"
    );
}

#[test]
fn a_symbolic_batch_goes_through_conv_relu_pool_flatten_gemm() {
    let g = GraphBuilder::new()
        .batched_input("x", &[1, 3, 9, 7])
        .weights("w", &[4, 3, 3, 3], 1)
        .weights("fc", &[6, 4], 2)
        .node("Conv", &["x", "w"], &["c"])
        .attr("strides", ints(&[2, 2]))
        .node("Relu", &["c"], &["r"])
        .node("GlobalAveragePool", &["r"], &["g"])
        .node("Flatten", &["g"], &["f"])
        .node("Gemm", &["f", "fc"], &["y"])
        .attr("transB", oxiquant_core::onnx::AttrValue::Int(1))
        .output("y")
        .build();
    let facts = g.infer_facts().unwrap();
    let shape = |v: &str| facts[v].shape_string();
    assert_eq!(shape("c"), "[N, 4, 4, 3]");
    assert_eq!(shape("r"), "[N, 4, 4, 3]");
    assert_eq!(shape("g"), "[N, 4, 1, 1]");
    assert_eq!(shape("f"), "[N, 4]");
    assert_eq!(shape("y"), "[N, 6]");
    for b in [1, 4] {
        let y = exec::run(&g, feeds(&[("x", &tensor(&[b, 3, 9, 7], 3, 1.0))])).unwrap();
        assert_eq!(y[0].1.shape(), &[b, 6]);
    }
}

/// Shapes read from constants: a Reshape whose target a Constant node gives, a Slice of the
/// Shape of a value of known shape feeding a Reshape, an Unsqueeze with axes as an initializer.
#[test]
fn shapes_set_by_constants_are_known() {
    let g = GraphBuilder::new()
        .input("x", &[2, 3, 4])
        .init("axes", Tensor::from_vec(vec![1], vec![0i64]).unwrap())
        .init("starts", Tensor::from_vec(vec![1], vec![0i64]).unwrap())
        .init("ends", Tensor::from_vec(vec![1], vec![i64::MAX]).unwrap())
        .node("Constant", &[], &["target"])
        .attr(
            "value",
            oxiquant_core::onnx::AttrValue::Tensor(Tensor::from_vec(vec![2], vec![-1i64, 4]).unwrap()),
        )
        .node("Reshape", &["x", "target"], &["flat"])
        .node("Shape", &["flat"], &["s"])
        .node("Slice", &["s", "starts", "ends"], &["tail"])
        .node("Reshape", &["x", "tail"], &["again"])
        .attr("allowzero", oxiquant_core::onnx::AttrValue::Int(0))
        .node("Unsqueeze", &["again", "axes"], &["u"])
        .output("flat")
        .output("u")
        .build();
    let facts = g.infer_facts().unwrap();
    assert_eq!(facts["flat"].shape_string(), "[6, 4]");
    assert_eq!(facts["tail"].shape_string(), "[2]");
    assert_eq!(facts["again"].shape_string(), "[6, 4]");
    assert_eq!(facts["u"].shape_string(), "[1, 6, 4]");
    let x = tensor(&[2, 3, 4], 1, 1.0);
    let names: Vec<String> = ["flat", "tail", "again", "u"].map(String::from).to_vec();
    let (_, got) = exec::run_fetching(&g, feeds(&[("x", &x)]), &names).unwrap();
    for (name, t) in got {
        assert_eq!(facts[&name], ValueFact::of_tensor(&t), "'{name}'");
    }
}

/// A Conv whose weight does not fit its input's channels is refused before running, the
/// error naming the node, the op and both shapes.
#[test]
fn a_contradiction_names_the_node_and_what_was_expected() {
    let g = GraphBuilder::new()
        .batched_input("x", &[1, 3, 8, 8])
        .weights("w", &[4, 2, 3, 3], 1)
        .node("Conv", &["x", "w"], &["y"])
        .named("conv1")
        .output("y")
        .build();
    let e = g.infer_facts().unwrap_err().to_string();
    assert!(
        e.contains("'conv1'") && e.contains("Conv") && e.contains("[N, 3, 8, 8]") && e.contains("[4, 2, 3, 3]"),
        "{e}"
    );
    let run = exec::run(&g, feeds(&[("x", &tensor(&[1, 3, 8, 8], 1, 1.0))]));
    assert!(run.is_err(), "the executor refuses it too");
}

/// `residual_cnn` through the PTQ steps (8 bits), with its state.
fn quantized_cnn(island: bool) -> (Graph, PtqState) {
    let mut g = residual_cnn(island);
    let mut st = PtqState::default();
    ptq::prepare::prepare(&mut g, &mut st).unwrap();
    ptq::insert_scaling::insert_scaling_nodes(&mut g, &mut st).unwrap();
    ptq::normalize_params::normalize_parameters(&mut g, &mut st, true).unwrap();
    ptq::calibrate::begin(&mut st, true).unwrap();
    for seed in 0..3 {
        ptq::calibrate::observe_batch(&g, &mut st, feeds(&[("x", &cnn_batch(4, seed, 1.0))])).unwrap();
    }
    ptq::calibrate::finish(&mut st).unwrap();
    ptq::adjust::adjust_ranges(&g, &mut st, Clipping::Mse, 8, true).unwrap();
    ptq::normalize_acts::normalize_activations(&mut g, &mut st).unwrap();
    let opts = QuantizeOptions {
        optimize_signs: true,
        ..QuantizeOptions::new(8)
    };
    ptq::quantize::quantize_network(&mut g, &mut st, &opts).unwrap();
    (g, st)
}

/// The quantized graph (Scaling quantizers), its integer engine (every `IntOp` the lowering
/// makes) and its QOperator and QDQ exports read back (the `QOp`s other tools write): the
/// facts of every value hold of what runs, the batch stays `N`.
#[test]
fn facts_of_quantized_integer_and_exported_graphs_agree_with_running_them() {
    for island in [false, true] {
        let (g, st) = quantized_cnn(island);
        agrees_with_running(&g, &[1, 3]);
        let ig = int::lower::lower_to_integer(&g, &st).unwrap();
        assert!(ig.nodes.iter().any(|n| n.op.is::<int::IntOp>()), "nothing lowered");
        agrees_with_running(&ig, &[1, 3]);
        let qop = Graph::from_raw(export_qop::to_qoperator(&ig, WeightType::Uint8).unwrap()).unwrap();
        assert!(qop.nodes.iter().any(|n| n.op.is::<QOp>()), "no quantized op exported");
        agrees_with_running(&qop, &[1, 3]);
        let qdq = Graph::from_raw(export_qdq::to_qdq(&g, &st, WeightType::Int8).unwrap().0).unwrap();
        agrees_with_running(&qdq, &[1, 3]);
        for h in [&g, &ig, &qop, &qdq] {
            let facts = h.infer_facts().unwrap();
            // Nothing is left unknown: every dtype and every rank.
            for name in h.nodes.iter().flat_map(|n| &n.outputs) {
                let f = &facts[name];
                assert!(f.dtype.is_some() && f.rank().is_some(), "'{name}': {f}");
            }
            let out = &facts[&h.outputs[0].name];
            assert_eq!(out.shape_string(), "[N, 5]", "{out}");
        }
    }
}
