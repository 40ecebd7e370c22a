//! Node classes: how scales flow through each op (the table of docs/algorithm.md).

use crate::graph::{Graph, Node};
use crate::ops::{BinaryOp, DataInputs, Gather, MatMul, NodeFacts, Op};
use crate::tensor::DType;
use std::collections::{HashMap, HashSet};

pub use crate::ops::Class;

/// Outputs of embedding lookups: a Gather of a float32 constant table by indices computed
/// at run time (token ids). They are activations without a float graph input behind them,
/// quantized like graph inputs.
pub fn embedding_outputs(graph: &Graph) -> Vec<String> {
    graph
        .nodes
        .iter()
        .filter(|n| {
            n.op.is::<Gather>()
                && n.inputs.len() == 2
                && graph
                    .initializers
                    .get(&n.inputs[0])
                    .is_some_and(|t| t.dtype() == DType::F32)
                && !graph.initializers.contains_key(&n.inputs[1])
        })
        .map(|n| n.outputs[0].clone())
        .collect()
}

/// Float values that depend on a graph input or an embedding lookup (the activations the PTQ
/// scales). Values computed from integer inputs alone (a token mask cast to float, shape
/// arithmetic) are not: they stay as they are.
pub fn activations(graph: &Graph) -> HashSet<String> {
    let mut acts: HashSet<String> = graph
        .runtime_inputs()
        .filter(|i| i.dtype == DType::F32)
        .map(|i| i.name.clone())
        .collect();
    acts.extend(embedding_outputs(graph));
    for n in &graph.nodes {
        let reads_act = data_inputs(n.op.as_ref(), n).iter().any(|v| acts.contains(*v));
        if reads_act && n.op.carries_activation() {
            acts.extend(n.outputs.iter().cloned());
        }
    }
    acts
}

/// The inputs that carry data (not shapes, pads, bounds or parameters).
pub fn data_inputs<'a>(op: &dyn Op, n: &'a Node) -> Vec<&'a str> {
    match op.data_inputs() {
        DataInputs::All => n.inputs.iter().map(String::as_str).filter(|s| !s.is_empty()).collect(),
        DataInputs::First => n.inputs.first().map(String::as_str).into_iter().collect(),
    }
}

/// What the op's PTQ rules may know of node `n`.
pub fn facts<'a>(graph: &'a Graph, n: &'a Node, acts: &'a HashSet<String>) -> NodeFacts<'a> {
    NodeFacts {
        name: &n.name,
        inputs: &n.inputs,
        initializers: &graph.initializers,
        activations: acts,
    }
}

/// The class of node `n`; `acts` comes from `activations`.
pub fn classify(graph: &Graph, n: &Node, acts: &HashSet<String>) -> Class {
    if !data_inputs(n.op.as_ref(), n).iter().any(|v| acts.contains(*v)) {
        return Class::Passive;
    }
    n.op.ptq_class(&facts(graph, n, acts))
}

/// Whether the op of island node `n` is a lookup-table candidate on its own: element-wise,
/// reading activations and constants that are single values or one value per channel of the
/// last axis (Sigmoid, `x * sigmoid(x)`, `x + 3` of a HardSwish, a bias Add before a Gelu).
fn tabulable_op(graph: &Graph, n: &Node, acts: &HashSet<String>) -> bool {
    n.op.elementwise()
        && n.inputs
            .iter()
            .filter(|v| !v.is_empty())
            .all(|v| match graph.initializers.get(v) {
                Some(t) => {
                    let s = t.shape();
                    s.len() <= 1 || s[..s.len() - 1].iter().all(|&d| d == 1)
                }
                None => acts.contains(v),
            })
}

/// Whether island node `n` may become part of an integer lookup table
/// (`int::fuse_tables`): a chain of table-candidate ops from it reaches a value that is
/// requantized (read by a node that is not a float island), and the chain does more than add
/// or multiply a constant per channel (a bias Add before a Gelu is part of a table; a bias
/// Add alone is better computed on the float output of the MatMul before it). Its input is
/// then better quantized: the table reads 8 bits. An island chain whose result only float
/// ops read is never a table.
pub fn table_candidate(graph: &Graph, n: &Node, acts: &HashSet<String>, classes: &HashMap<String, Class>) -> bool {
    let island = |m: &Node| matches!(classes.get(&m.name), Some(Class::FloatIsland(_)));
    // An Add/Sub/Mul/Div of a constant with one value per channel: affine per channel.
    let per_channel_affine = |m: &Node| {
        m.op.is::<BinaryOp>()
            && m.inputs
                .iter()
                .any(|v| graph.initializers.get(v).is_some_and(|t| t.len() > 1))
    };
    let mut seen: HashSet<(&str, bool)> = HashSet::new();
    let mut stack = vec![(n, false)];
    while let Some((m, nonlinear)) = stack.pop() {
        if !seen.insert((m.name.as_str(), nonlinear)) || !tabulable_op(graph, m, acts) {
            continue;
        }
        let nonlinear = nonlinear || !per_channel_affine(m);
        for o in &m.outputs {
            for (c, _) in graph.consumers(o) {
                let r = &graph.nodes[c];
                if !island(r) || r.op.is::<MatMul>() {
                    if nonlinear {
                        return true;
                    }
                    continue;
                }
                stack.push((r, nonlinear));
            }
        }
    }
    false
}

/// Why a merge joins the float islands (`float_followers`).
pub const FLOAT_MERGE: &str = "a merge read only by float ops (or an output merging float values)";
/// Why a data-movement (or Clip) node joins them.
pub const FLOAT_MOVE: &str = "data movement read only by float ops (or an output of float values)";

/// Merges (Add, Sub, Sum, Concat of activations), data-movement ops (Reshape, Squeeze,
/// Gather, Slice, Relu, pooling: the seamless class) and Clips that join the float islands:
/// what they compute is read only by float islands (or by other such nodes), or it is a
/// graph output and every value they read comes from a float island read only by float ops.
/// Nothing integer reads them, so requantizing their output, and the island outputs they
/// read, would only add rounding: e.g. a detector's box coordinates in pixels concatenated
/// with its class probabilities in [0, 1] into its output (one shared 8-bit scale rounds
/// every probability to 0), `x - mean(x)` of a LayerNorm written out as ReduceMean, Sub,
/// Pow, Sqrt, Div, or a recurrent state that reaches an LSTM through Gather and Unsqueeze.
/// A MatMul of two activations is not a float reader (`integer_matmul` multiplies its
/// quantized operands). The set is the largest one closed under these conditions, so that
/// chains of such nodes join together.
pub fn float_followers(graph: &Graph, classes: &mut HashMap<String, Class>, acts: &HashSet<String>) {
    let mut producer: HashMap<&str, usize> = HashMap::new();
    let mut readers: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, n) in graph.nodes.iter().enumerate() {
        for o in &n.outputs {
            producer.insert(o.as_str(), i);
        }
        for v in n.inputs.iter().filter(|v| !v.is_empty()) {
            readers.entry(v.as_str()).or_default().push(i);
        }
    }
    let island = |i: usize| matches!(classes.get(&graph.nodes[i].name), Some(Class::FloatIsland(_)));
    let float_reader = |i: usize| island(i) && !graph.nodes[i].op.is::<MatMul>();
    // Data movement before an island that may become a lookup table stays integer: the
    // table reads 8 bits (a Relu before a Sigmoid).
    // (Once per node: the fixed point below asks again on every round.)
    let strict: HashSet<usize> = (0..graph.nodes.len())
        .filter(|&i| float_reader(i) && !table_candidate(graph, &graph.nodes[i], acts, classes))
        .collect();
    let strict_reader = |i: usize| strict.contains(&i);
    let moves = |i: usize| {
        matches!(
            classes.get(&graph.nodes[i].name),
            Some(Class::Seamless | Class::Bounded)
        )
    };
    let mut candidates: HashSet<usize> = graph
        .nodes
        .iter()
        .enumerate()
        .filter(|(i, n)| moves(*i) || matches!(classes.get(&n.name), Some(Class::Merging)))
        .map(|(i, _)| i)
        .collect();
    loop {
        loop {
            let read_by_floats = |v: &str, cand: &HashSet<usize>, strict: bool| {
                readers.get(v).is_none_or(|rs| {
                    rs.iter()
                        .all(|&r| cand.contains(&r) || if strict { strict_reader(r) } else { float_reader(r) })
                })
            };
            let dropped: Vec<usize> = candidates
                .iter()
                .copied()
                .filter(|&m| {
                    let n = &graph.nodes[m];
                    let outputs_ok = n.outputs.iter().all(|o| read_by_floats(o, &candidates, moves(m)));
                    let is_output = n
                        .outputs
                        .iter()
                        .any(|o| graph.is_graph_output(o) || !readers.contains_key(o.as_str()));
                    let inputs_float = || {
                        data_inputs(n.op.as_ref(), n).iter().all(|v| {
                            producer.get(v).is_some_and(|&p| candidates.contains(&p) || island(p))
                                && read_by_floats(v, &candidates, false)
                        })
                    };
                    !(outputs_ok && (!is_output || inputs_float()))
                })
                .collect();
            if dropped.is_empty() {
                break;
            }
            for m in dropped {
                candidates.remove(&m);
            }
        }
        // A node joins only next to a real island (reading one, or read by one, through
        // other such nodes): a Relu -> MaxPool network with no island at all, or an Add ->
        // Relu that ends it, stays integer.
        let mut grounded: HashSet<usize> = HashSet::new();
        let mut stack: Vec<usize> = candidates
            .iter()
            .copied()
            .filter(|&m| {
                let n = &graph.nodes[m];
                let reads_island = n
                    .inputs
                    .iter()
                    .any(|v| producer.get(v.as_str()).is_some_and(|&p| island(p)));
                let read_by_island = n.outputs.iter().any(|o| {
                    readers
                        .get(o.as_str())
                        .is_some_and(|rs| rs.iter().any(|&r| float_reader(r)))
                });
                reads_island || read_by_island
            })
            .collect();
        while let Some(m) = stack.pop() {
            if !grounded.insert(m) {
                continue;
            }
            let n = &graph.nodes[m];
            let ups = n.inputs.iter().filter_map(|v| producer.get(v.as_str()).copied());
            let downs = n
                .outputs
                .iter()
                .flat_map(|o| readers.get(o.as_str()).into_iter().flatten().copied());
            stack.extend(
                ups.chain(downs)
                    .filter(|k| candidates.contains(k) && !grounded.contains(k)),
            );
        }
        if grounded.len() == candidates.len() {
            break;
        }
        candidates = grounded;
    }
    for m in candidates {
        let reason = match classes.get(&graph.nodes[m].name) {
            Some(Class::Merging) => FLOAT_MERGE,
            _ => FLOAT_MOVE,
        };
        classes.insert(graph.nodes[m].name.clone(), Class::FloatIsland(reason.into()));
    }
}
