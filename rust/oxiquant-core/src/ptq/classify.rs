//! Node classes: how scales flow through each op (the table of docs/algorithm.md).

use crate::graph::{Graph, Node};
use crate::ops::{BinaryOp, Op, PadMode, Unary};
use crate::tensor::DType;
use std::collections::HashSet;

#[derive(Debug, Clone, PartialEq)]
pub enum Class {
    /// `y = x * W + b` with constant W (and b): Conv, Gemm, MatMul.
    Affine,
    /// Positively homogeneous in its first input: a scale passes through unchanged.
    Seamless,
    /// Inputs must share one scale: Add, Sum, Sub, Concat of activations.
    Merging,
    /// Clip: homogeneous once its bounds are divided by the input scale.
    Bounded,
    /// Not scale-invariant: runs on real values, dequantized before and requantized after.
    FloatIsland(String),
    /// A PTQ Scaling node.
    Scaling,
    /// Reads no float activation (shape arithmetic, constants): scales do not apply.
    Passive,
}

/// Float values that depend on a graph input (the activations the PTQ scales).
pub fn activations(graph: &Graph) -> HashSet<String> {
    let mut acts: HashSet<String> = graph
        .runtime_inputs()
        .filter(|i| i.dtype == DType::F32)
        .map(|i| i.name.clone())
        .collect();
    for n in &graph.nodes {
        let reads_act = data_inputs(&n.op, n).iter().any(|v| acts.contains(*v));
        let float_out = !matches!(
            n.op,
            Op::Shape { .. } | Op::ConstantOfShape(_) | Op::Cast { .. } | Op::Constant(_)
        ) || matches!(n.op, Op::Cast { to: DType::F32 });
        if reads_act && float_out {
            acts.extend(n.outputs.iter().cloned());
        }
    }
    acts
}

/// The inputs that carry data (not shapes, pads, bounds or parameters).
pub fn data_inputs<'a>(op: &Op, n: &'a Node) -> Vec<&'a str> {
    let all = || n.inputs.iter().map(String::as_str).filter(|s| !s.is_empty()).collect();
    match op {
        Op::Binary(_) | Op::Sum | Op::Concat { .. } => all(),
        _ => n.inputs.first().map(String::as_str).into_iter().collect(),
    }
}

fn is_const(graph: &Graph, v: &str) -> bool {
    graph.initializers.contains_key(v)
}

/// The class of node `n`; `acts` comes from `activations`.
pub fn classify(graph: &Graph, n: &Node, acts: &HashSet<String>) -> Class {
    let is_act = |v: &str| acts.contains(v);
    if !data_inputs(&n.op, n).iter().any(|v| is_act(v)) {
        return Class::Passive;
    }
    let island = |why: &str| Class::FloatIsland(why.to_string());
    let input = |i: usize| n.inputs.get(i).map(String::as_str).unwrap_or("");
    // An empty weight (a layer with no output channel or no input feature) has no scale to
    // take out; the passes index a weight's first channel.
    let empty_weight = matches!(n.op, Op::Conv(_) | Op::Gemm(_) | Op::MatMul)
        && graph.initializers.get(input(1)).is_some_and(|w| w.is_empty());
    if empty_weight {
        return island("an empty weight tensor");
    }
    match &n.op {
        Op::Scaling(_) => Class::Scaling,
        Op::Conv(_) => {
            if is_const(graph, input(1)) && (input(2).is_empty() || is_const(graph, input(2))) {
                Class::Affine
            } else {
                island("Conv with non-constant weights or bias")
            }
        }
        Op::Gemm(g) => {
            let bias_ok = input(2).is_empty()
                || graph
                    .initializers
                    .get(input(2))
                    .is_some_and(|c| c.len() == 1 || (c.shape().iter().rev().skip(1).all(|&d| d == 1)));
            if g.trans_a {
                island("Gemm with transA=1")
            } else if !is_const(graph, input(1)) {
                island("Gemm with a non-constant B")
            } else if !bias_ok {
                island("Gemm with a non-constant or 2-D (per-row) C")
            } else if g.alpha != 1.0 || g.beta != 1.0 {
                island("Gemm with alpha/beta != 1 (prepare_network folds them)")
            } else {
                Class::Affine
            }
        }
        Op::MatMul => {
            if graph.initializers.get(input(1)).is_some_and(|w| w.rank() == 2) && !is_act(input(1)) {
                Class::Affine
            } else {
                island("MatMul of two activations (or with a weight of rank != 2)")
            }
        }
        Op::Binary(BinaryOp::Add | BinaryOp::Sub) | Op::Sum | Op::Concat { .. } => {
            if n.inputs.iter().all(|v| is_act(v)) {
                Class::Merging
            } else {
                island("Add/Sub/Sum/Concat with a constant operand")
            }
        }
        Op::Binary(_) => island("Mul/Div is not scale-invariant"),
        Op::Unary(Unary::Relu | Unary::LeakyRelu { .. } | Unary::Abs) => Class::Seamless,
        Op::Unary(u) => island(&format!("{} is not scale-invariant", u.name())),
        Op::Clip(_) => Class::Bounded,
        Op::Pool(_)
        | Op::GlobalPool { .. }
        | Op::Flatten { .. }
        | Op::Reshape { .. }
        | Op::Transpose { .. }
        | Op::Slice(_)
        | Op::Squeeze { .. }
        | Op::Unsqueeze { .. }
        | Op::Identity
        | Op::Dropout
        | Op::Resize(_)
        | Op::Gather { .. } => Class::Seamless,
        Op::Pad(p) => {
            if p.mode != PadMode::Constant || (p.value == 0.0 && (input(2).is_empty() || const_zero(graph, input(2)))) {
                Class::Seamless
            } else {
                island("Pad with a non-zero constant")
            }
        }
        Op::Softmax(_) => island("Softmax is not scale-invariant"),
        Op::BatchNorm { .. } => island("BatchNormalization not preceded by a Conv/Gemm it can be folded into"),
        Op::Lrn(_) => island("LRN is not scale-invariant"),
        Op::Cast { .. } => island("Cast"),
        Op::Int(i) => island(&format!("{} is an op of the integer engine", i.name())),
        Op::FusedConv(f) => island(&format!("{} is an op of an inference plan", f.name())),
        Op::Q(q) => island(&format!("{} belongs to an already quantized model", q.name())),
        Op::Shape { .. } | Op::Constant(_) | Op::ConstantOfShape(_) => Class::Passive,
    }
}

fn const_zero(graph: &Graph, v: &str) -> bool {
    graph
        .initializers
        .get(v)
        .is_some_and(|t| t.to_f32_vec().iter().all(|&x| x == 0.0))
}
