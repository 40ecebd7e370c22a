//! The graph that `run` executes for a model in float: its own graph with
//! BatchNormalization folded into the convolution before it, and every convolution with
//! constant weights turned into a `FusedConv` (weights packed once, a residual Add and a
//! Relu/Clip that only read its output applied as it stores). The model's graph is left
//! as it is: the PTQ passes, `fetch` and the exports read that one.
//!
//! Results are the graph's bit for bit, except where a BatchNormalization is folded (the
//! scaled weights round differently; onnxruntime folds it too).

use crate::error::Result;
use crate::graph::{Graph, Node};
use crate::kernels::conv::PackedWeights;
use crate::ops::BatchNorm;
use crate::ops::{clamp_interval, BinaryOp, Conv, FusedConv, Sum};
use std::sync::Arc;

/// Builds the plan of `graph` (see the module doc).
pub fn inference_plan(graph: &Graph) -> Result<Graph> {
    let mut g = graph.clone();
    super::fold_batchnorms(&mut g)?;
    fuse_convs(&mut g)?;
    Ok(g)
}

/// Whether `inference_plan` changes anything: it only folds BatchNormalization and fuses
/// convolutions. Without either, running the graph itself spares a copy of every weight (a
/// 2.37 GB three-Gemm model peaked at 9.1 GB after its first run, with a plan that was a
/// clone of it; benches/RESULTS.md, "Memory").
pub fn changes(graph: &Graph) -> bool {
    graph.nodes.iter().any(|n| n.op.is::<Conv>() || n.op.is::<BatchNorm>())
}

/// The single reader of `value` (node index, slot), if it has exactly one and is not a
/// graph output.
fn sole_reader(g: &Graph, value: &str) -> Option<(usize, usize)> {
    let c = g.consumers(value);
    (c.len() == 1 && !g.is_graph_output(value)).then(|| c[0])
}

/// Constant clamp bounds of a Relu or Clip node.
fn clamp_bounds(g: &Graph, n: &Node) -> Option<(f32, f32)> {
    clamp_interval(n.op.as_ref(), &n.inputs, &g.initializers).ok().flatten()
}

/// Weights prepared for the kernel that runs this convolution (`PackedWeights::for_layer`).
fn pack(conv: &crate::ops::Conv, w: &crate::tensor::Tensor) -> Option<Arc<PackedWeights>> {
    let ws = w.shape();
    if ws.len() < 3 {
        return None;
    }
    // The kernel's choice depends on channels, kernel, group and strides, and, for
    // Winograd, on the output size: any input at least as large as the dilated kernel
    // resolves the first; the Winograd size rule is checked per run (a smaller input runs
    // the direct panels packed beside the transformed weights).
    let dil = conv.dilations.clone().unwrap_or_else(|| vec![1; ws.len() - 2]);
    let mut xs = vec![1, ws[1] * conv.group];
    for (k, d) in ws[2..].iter().zip(dil.iter().chain(std::iter::repeat(&1))) {
        xs.push(k.saturating_sub(1) * d + 1);
    }
    let s = conv.geometry(&xs, ws).ok()?;
    let data = w.as_slice::<f32>().ok()?;
    PackedWeights::for_layer(data, &s).map(Arc::new)
}

/// Replaces each Conv with constant weights by a `FusedConv` standing where its last fused
/// follower stood (so every input it reads, the residual included, is produced before it).
fn fuse_convs(g: &mut Graph) -> Result<usize> {
    let mut fused = 0;
    let mut i = 0;
    while i < g.nodes.len() {
        let Some(conv) = g.nodes[i].op.downcast_ref::<Conv>() else {
            i += 1;
            continue;
        };
        let n = &g.nodes[i];
        let Some(w) = n.inputs.get(1).and_then(|v| g.initializers.get(v)) else {
            i += 1;
            continue;
        };
        let conv = conv.clone();
        let packed = pack(&conv, w);
        let mut inputs = vec![n.inputs[0].clone(), n.inputs[1].clone()];
        inputs.push(n.inputs.get(2).cloned().unwrap_or_default());
        let mut out = n.outputs[0].clone();
        let mut absorbed = vec![i];
        let mut residual = false;
        if let Some((a, slot)) = sole_reader(g, &out) {
            let add = &g.nodes[a];
            // Sum of two is an Add (ResNet-50's residuals are written so).
            if (add.op.downcast_ref::<BinaryOp>() == Some(&BinaryOp::Add) || add.op.is::<Sum>())
                && add.inputs.len() == 2
                && add.inputs[0] != add.inputs[1]
                && !add.inputs[1 - slot].is_empty()
            {
                inputs.insert(0, add.inputs[1 - slot].clone());
                residual = true;
                out = add.outputs[0].clone();
                absorbed.push(a);
            }
        }
        let (mut lo, mut hi) = (f32::NEG_INFINITY, f32::INFINITY);
        if let Some((r, 0)) = sole_reader(g, &out) {
            if let Some((l, h)) = clamp_bounds(g, &g.nodes[r]) {
                (lo, hi) = (l, h);
                out = g.nodes[r].outputs[0].clone();
                absorbed.push(r);
            }
        }
        if packed.is_none() && absorbed.len() == 1 {
            i += 1; // nothing to gain
            continue;
        }
        let at = *absorbed.iter().max().unwrap_or(&i);
        let name = g.nodes[at].name.clone();
        g.nodes[at] = Node {
            name,
            op: Box::new(FusedConv {
                conv,
                packed,
                residual,
                lo,
                hi,
            }),
            inputs,
            outputs: vec![out],
        };
        absorbed.sort_unstable();
        for &k in absorbed.iter().rev().filter(|&&k| k != at) {
            g.nodes.remove(k);
        }
        fused += 1;
        // The conv was at `i` and is gone; the fused node sits later.
    }
    Ok(fused)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec;
    use crate::graph::{Dim, ValueInfo};
    use crate::kernels::testing::fill;
    use crate::onnx::{RawGraph, RawNode};
    use crate::tensor::Tensor;
    use std::collections::HashMap;

    fn node(name: &str, op: &str, inputs: &[&str], outputs: &[&str]) -> RawNode {
        RawNode {
            name: name.into(),
            op_type: op.into(),
            domain: String::new(),
            inputs: inputs.iter().map(|s| s.to_string()).collect(),
            outputs: outputs.iter().map(|s| s.to_string()).collect(),
            attrs: Vec::new(),
        }
    }

    fn output(name: &str) -> ValueInfo {
        ValueInfo {
            name: name.into(),
            dtype: crate::tensor::DType::F32,
            shape: None,
        }
    }

    /// x -> conv1 -> relu -> conv2 -> add(x) -> relu -> out: a residual block.
    fn block(c: usize) -> Graph {
        let mut nodes = vec![
            node("c1", "Conv", &["x", "w1", "b1"], &["y1"]),
            node("r1", "Relu", &["y1"], &["a1"]),
            node("c2", "Conv", &["a1", "w2", "b2"], &["y2"]),
            node("add", "Add", &["x", "y2"], &["s"]),
            node("r2", "Relu", &["s"], &["out"]),
        ];
        for n in nodes.iter_mut().filter(|n| n.op_type == "Conv") {
            n.attrs
                .push(("pads".into(), crate::onnx::AttrValue::Ints(vec![1, 1, 1, 1])));
        }
        let init = |name: &str, shape: Vec<usize>, seed| {
            let len = shape.iter().product();
            (name.to_string(), Tensor::from_vec(shape, fill(len, seed)).unwrap())
        };
        let raw = RawGraph {
            name: "block".into(),
            opset: 13,
            nodes,
            initializers: vec![
                init("w1", vec![c, c, 3, 3], 1),
                init("b1", vec![c], 2),
                init("w2", vec![c, c, 3, 3], 3),
                init("b2", vec![c], 4),
            ],
            inputs: vec![ValueInfo {
                name: "x".into(),
                dtype: crate::tensor::DType::F32,
                shape: Some(vec![
                    Dim::Symbolic("N".into()),
                    Dim::Fixed(c),
                    Dim::Fixed(10),
                    Dim::Fixed(12),
                ]),
            }],
            outputs: vec![output("out")],
        };
        Graph::from_raw(raw).unwrap()
    }

    #[test]
    fn residual_block_fuses_to_two_nodes_with_identical_results() {
        for c in [3usize, 8, 13] {
            let g = block(c);
            let plan = inference_plan(&g).unwrap();
            let names: Vec<&str> = plan.nodes.iter().map(|n| n.op.op_type()).collect();
            assert_eq!(names, ["Conv+Clip", "Conv+Add+Clip"], "channels {c}");
            let x = Tensor::from_vec(vec![2, c, 10, 12], fill(2 * c * 120, 9)).unwrap();
            let run = |g: &Graph| {
                let feeds = HashMap::from([("x".to_string(), x.clone())]);
                exec::run(g, feeds).unwrap().remove(0).1.into_vec::<f32>().unwrap()
            };
            // Same kernels, same rounding order: bit for bit.
            assert_eq!(run(&g), run(&plan));
        }
    }

    #[test]
    fn a_graph_without_convolution_or_batchnorm_plans_to_itself() {
        let mut gemm = node("fc", "Gemm", &["x", "w", "b"], &["y"]);
        gemm.attrs.push(("transB".into(), crate::onnx::AttrValue::Int(1)));
        let raw = RawGraph {
            name: "mlp".into(),
            opset: 13,
            nodes: vec![gemm, node("r", "Relu", &["y"], &["out"])],
            initializers: vec![
                ("w".to_string(), Tensor::from_vec(vec![4, 6], fill(24, 1)).unwrap()),
                ("b".to_string(), Tensor::from_vec(vec![4], fill(4, 2)).unwrap()),
            ],
            inputs: vec![ValueInfo {
                name: "x".into(),
                dtype: crate::tensor::DType::F32,
                shape: Some(vec![Dim::Symbolic("N".into()), Dim::Fixed(6)]),
            }],
            outputs: vec![output("out")],
        };
        let g = Graph::from_raw(raw).unwrap();
        assert!(!changes(&g));
        assert_eq!(inference_plan(&g).unwrap(), g);
        assert!(changes(&block(3)));
    }

    #[test]
    fn values_read_twice_or_returned_are_not_fused_away() {
        let mut g = block(8);
        // The first conv's output is now also a graph output: its Relu must stay separate.
        g.outputs.push(output("y1"));
        let plan = inference_plan(&g).unwrap();
        let names: Vec<&str> = plan.nodes.iter().map(|n| n.op.op_type()).collect();
        assert_eq!(names, ["Conv(packed)", "Relu", "Conv+Add+Clip"]);
    }
}
