//! Constant folding: every node whose inputs are all constants (initializers) is evaluated
//! once and replaced by an initializer. This removes Constant nodes, the ConstantOfShape
//! weights of some model zoos, and Shape/Gather/Unsqueeze/Concat chains over static shapes.

use crate::error::Result;
use crate::graph::Graph;
use crate::tensor::Tensor;

/// Folds constant subgraphs; returns how many nodes were folded.
pub fn fold_constants(graph: &mut Graph) -> Result<usize> {
    let mut folded = 0;
    let mut i = 0;
    while i < graph.nodes.len() {
        let node = &graph.nodes[i];
        let all_const = node
            .inputs
            .iter()
            .all(|v| v.is_empty() || graph.initializers.contains_key(v));
        // A graph output keeps its node so that the output stays a computed value.
        let feeds_output = node.outputs.iter().any(|o| graph.is_graph_output(o));
        if !all_const || feeds_output || !node.op.foldable() {
            i += 1;
            continue;
        }
        let args: Vec<Option<&Tensor>> = node.inputs.iter().map(|v| graph.initializers.get(v)).collect();
        let outs = node
            .op
            .eval(&args)
            .map_err(|e| e.at_node(&node.name, node.op.op_type()))?;
        let names = node.outputs.clone();
        graph.nodes.remove(i);
        for (name, t) in names.into_iter().zip(outs) {
            graph.initializers.insert(name, t);
        }
        folded += 1;
    }
    if folded > 0 {
        graph.prune();
    }
    // An If whose condition became a constant is replaced by its branch, which may fold further.
    let inlined = crate::ops::control::inline_constant_ifs(graph)?;
    if inlined > 0 {
        folded += inlined + fold_constants(graph)?;
    }
    Ok(folded)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::{Dim, ValueInfo};
    use crate::onnx::{AttrValue, RawGraph, RawNode};
    use crate::tensor::DType;

    fn node(name: &str, op: &str, inputs: &[&str], outputs: &[&str], attrs: Vec<(String, AttrValue)>) -> RawNode {
        RawNode {
            name: name.into(),
            op_type: op.into(),
            domain: String::new(),
            inputs: inputs.iter().map(|s| s.to_string()).collect(),
            outputs: outputs.iter().map(|s| s.to_string()).collect(),
            attrs,
        }
    }

    #[test]
    fn folds_shape_free_chain_and_keeps_function() {
        // y = Reshape(x, Concat(Unsqueeze(Constant 2), Constant [-1]))
        let raw = RawGraph {
            name: "g".into(),
            opset: 11,
            nodes: vec![
                node(
                    "c0",
                    "Constant",
                    &[],
                    &["two"],
                    vec![("value_int".into(), AttrValue::Int(2))],
                ),
                node(
                    "u",
                    "Unsqueeze",
                    &["two"],
                    &["two1"],
                    vec![("axes".into(), AttrValue::Ints(vec![0]))],
                ),
                node(
                    "c1",
                    "Constant",
                    &[],
                    &["m1"],
                    vec![("value_ints".into(), AttrValue::Ints(vec![-1]))],
                ),
                node(
                    "cat",
                    "Concat",
                    &["two1", "m1"],
                    &["shape"],
                    vec![("axis".into(), AttrValue::Int(0))],
                ),
                node("r", "Reshape", &["x", "shape"], &["y"], vec![]),
            ],
            initializers: vec![],
            inputs: vec![ValueInfo {
                name: "x".into(),
                dtype: DType::F32,
                shape: Some(vec![Dim::Fixed(2), Dim::Fixed(3)]),
            }],
            outputs: vec![ValueInfo {
                name: "y".into(),
                dtype: DType::F32,
                shape: None,
            }],
        };
        let mut g = Graph::from_raw(raw).unwrap();
        let x = Tensor::from_vec(vec![2, 3], (0..6).map(|v| v as f32).collect()).unwrap();
        let feeds = || [("x".to_string(), x.clone())].into_iter().collect();
        let before = crate::exec::run(&g, feeds()).unwrap();
        assert_eq!(fold_constants(&mut g).unwrap(), 4);
        assert_eq!(g.nodes.len(), 1);
        assert_eq!(g.initializers["shape"].as_slice::<i64>().unwrap(), &[2, -1]);
        let after = crate::exec::run(&g, feeds()).unwrap();
        assert_eq!(before, after);
    }
}
