//! After `quantize`: a MatMul of two quantized activations (attention's `Q K^T` and
//! `softmax(.) V`) multiplies their integers, and the quantizer after it takes both steps.
//!
//! The PTQ leaves such a MatMul a float island: each operand is dequantized (a Scaling by its
//! step), the product is real and the island's quantizer requantizes it. Since
//! `(s_a A)(s_b B) = s_a s_b (A B)`, the two dequantizers can go and the quantizer's factor
//! take `s_a s_b`: the MatMul then reads the integers and produces their exact integer
//! product (while its sums stay below 2^24 in f32, the bound every quantized layer has), which
//! the integer engine computes with integer inputs and the exports write with both operands
//! quantized. Only where each dequantizer is per tensor and read by the MatMul alone, and the
//! MatMul's only reader is a per-tensor quantizer.

use super::{PtqState, Role};
use crate::error::Result;
use crate::graph::Graph;
use crate::ops::{MatMul, Scaling};

/// The per-tensor factor of Scaling node `p` if it is a dequantizer read only by `reader`.
fn lone_dequant(graph: &Graph, state: &PtqState, p: usize, reader: usize) -> Option<f32> {
    let n = &graph.nodes[p];
    let sc = n.op.downcast_ref::<Scaling>()?;
    let out = n.outputs.first()?;
    let ok = sc.quant.is_none()
        && sc.factor.len() == 1
        && state.scaling.get(&n.name).is_some_and(|i| i.role == Role::Dequant)
        && !graph.is_graph_output(out)
        && graph.consumers(out).iter().all(|&(c, _)| c == reader);
    ok.then_some(sc.factor[0])
}

/// Rewrites every eligible MatMul; returns how many.
pub fn integer_matmuls(graph: &mut Graph, state: &mut PtqState) -> Result<usize> {
    let mut done = 0;
    let mut m = 0;
    while m < graph.nodes.len() {
        let node = &graph.nodes[m];
        if !node.op.is::<MatMul>() || node.inputs.len() != 2 || state.affine.contains_key(&node.name) {
            m += 1;
            continue;
        }
        let out = node.outputs[0].clone();
        let producers: Vec<Option<usize>> = node.inputs.iter().map(|v| graph.producer(v)).collect();
        let (Some(pa), Some(pb)) = (producers[0], producers[1]) else {
            m += 1;
            continue;
        };
        let quantizer = match graph.consumers(&out)[..] {
            [(q, 0)] if !graph.is_graph_output(&out) => Some(q),
            _ => None,
        }
        .filter(|&q| {
            graph.nodes[q]
                .op
                .downcast_ref::<Scaling>()
                .is_some_and(|s| s.quant.is_some() && s.factor.len() == 1)
        });
        let (Some(q), Some(fa), Some(fb)) = (
            quantizer,
            lone_dequant(graph, state, pa, m),
            lone_dequant(graph, state, pb, m),
        ) else {
            m += 1;
            continue;
        };
        if pa == pb {
            m += 1;
            continue;
        }
        if let Some(sc) = graph.nodes[q].op.downcast_mut::<Scaling>() {
            sc.factor[0] *= fa * fb;
        }
        let name = graph.nodes[m].name.clone();
        let (da, db) = (graph.nodes[pa].name.clone(), graph.nodes[pb].name.clone());
        graph.nodes[m].inputs = vec![graph.nodes[pa].inputs[0].clone(), graph.nodes[pb].inputs[0].clone()];
        for idx in [pa.max(pb), pa.min(pb)] {
            graph.nodes.remove(idx);
        }
        state.scaling.remove(&da);
        state.scaling.remove(&db);
        state.float_nodes.retain(|(n, _, _)| *n != name);
        done += 1;
        // Indices shifted by the removals: start over from the top (few MatMuls per graph).
        m = 0;
    }
    // A MatMul of two activations that stays in float (a dequantizer read elsewhere, a
    // per-channel factor) is said so.
    for n in &graph.nodes {
        let reads_dequant = n.inputs.iter().any(|v| {
            graph.producer(v).is_some_and(|p| {
                state
                    .scaling
                    .get(&graph.nodes[p].name)
                    .is_some_and(|i| i.role == Role::Dequant)
            })
        });
        if n.op.is::<MatMul>()
            && reads_dequant
            && !state.affine.contains_key(&n.name)
            && !state.float_nodes.iter().any(|(f, _, _)| *f == n.name)
        {
            state.float_nodes.push((
                n.name.clone(),
                "MatMul".into(),
                "MatMul of two activations whose operands could not both be quantized per tensor".into(),
            ));
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec;
    use crate::ops::{Op, QuantBounds};
    use crate::ptq::ScalingInfo;
    use crate::tensor::Tensor;
    use crate::testing::{f32_value as value, op_node as node};
    use std::collections::HashMap;

    fn info(role: Role, output: &str) -> ScalingInfo {
        ScalingInfo {
            role,
            output: output.into(),
            stats: None,
            calib_scale: 1.0,
            clip: None,
            clipping: None,
            scale_per_clip: 1.0,
            bits: Some(8),
            signed: true,
            step: None,
            codes: None,
            power_of_two: None,
        }
    }

    fn scaling(f: f32, quant: Option<QuantBounds>) -> Box<dyn Op> {
        Box::new(Scaling {
            factor: vec![f],
            rank: 0,
            quant,
            last_axis: false,
        })
    }

    #[test]
    fn dequantizers_fold_into_the_quantizer_with_the_same_integers() {
        // a, b integer-valued (as quantizers leave them); y = q(dequant(a) @ dequant(b)).
        // Power-of-two factors: the float island is exact too, so both must agree exactly.
        let bounds = Some(QuantBounds { lo: -128.0, hi: 127.0 });
        let mut graph = Graph {
            name: "mm".into(),
            opset: 13,
            nodes: vec![
                node("da", scaling(0.0625, None), &["a"], "a_real"),
                node("db", scaling(0.03125, None), &["b"], "b_real"),
                node("mm", Box::new(MatMul), &["a_real", "b_real"], "p"),
                node("q", scaling(8.0, bounds), &["p"], "y"),
            ],
            initializers: Default::default(),
            inputs: vec![value("a"), value("b")],
            outputs: vec![value("y")],
        };
        let mut state = PtqState::default();
        state.scaling.insert("da".into(), info(Role::Dequant, "a_real"));
        state.scaling.insert("db".into(), info(Role::Dequant, "b_real"));
        state.scaling.insert("q".into(), info(Role::IslandOutput, "y"));
        state
            .float_nodes
            .push(("mm".into(), "MatMul".into(), "MatMul of two activations".into()));
        let ints = |n: i32, seed: i32| -> Vec<f32> { (0..n).map(|i| ((i * 37 + seed) % 255 - 127) as f32).collect() };
        let feeds = HashMap::from([
            ("a".to_string(), Tensor::from_vec(vec![2, 3, 4], ints(24, 3)).unwrap()),
            ("b".to_string(), Tensor::from_vec(vec![2, 4, 5], ints(40, 11)).unwrap()),
        ]);
        let before = exec::run(&graph, feeds.clone()).unwrap();
        assert_eq!(integer_matmuls(&mut graph, &mut state).unwrap(), 1);
        let ops: Vec<&str> = graph.nodes.iter().map(|n| n.op.op_type()).collect();
        assert_eq!(ops, ["MatMul", "Scaling"]);
        assert_eq!(graph.nodes[0].inputs, ["a", "b"]);
        assert!(!state.scaling.contains_key("da") && state.float_nodes.is_empty());
        let after = exec::run(&graph, feeds).unwrap();
        assert_eq!(before, after);
        // Some outputs saturate and some do not: the comparison covers both.
        let y = after[0].1.to_f32_vec();
        assert!(y.iter().any(|&v| v == 127.0 || v == -128.0) && y.iter().any(|&v| v.abs() < 100.0));
    }

    #[test]
    fn a_dequantizer_read_elsewhere_stays() {
        let mut graph = Graph {
            name: "mm".into(),
            opset: 13,
            nodes: vec![
                node("da", scaling(0.5, None), &["a"], "a_real"),
                node("db", scaling(0.5, None), &["b"], "b_real"),
                node("mm", Box::new(MatMul), &["a_real", "b_real"], "p"),
                node(
                    "q",
                    scaling(2.0, Some(QuantBounds { lo: -128.0, hi: 127.0 })),
                    &["p"],
                    "y",
                ),
            ],
            initializers: Default::default(),
            inputs: vec![value("a"), value("b")],
            outputs: vec![value("y"), value("a_real")],
        };
        let mut state = PtqState::default();
        state.scaling.insert("da".into(), info(Role::Dequant, "a_real"));
        state.scaling.insert("db".into(), info(Role::Dequant, "b_real"));
        let before = graph.clone();
        assert_eq!(integer_matmuls(&mut graph, &mut state).unwrap(), 0);
        assert_eq!(graph, before);
    }
}
