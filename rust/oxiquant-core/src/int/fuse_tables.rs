//! Element-wise float islands of one 8-bit tensor become lookup tables.
//!
//! The PTQ leaves ops that are not scale-invariant (Sigmoid, HardSwish, SiLU written as
//! `x * sigmoid(x)`, Tanh, Exp, Gelu ...) in float: the lowered graph dequantizes an 8-bit
//! value, runs the float ops and requantizes their result. When that island is an
//! element-wise function of one 8-bit tensor (every non-constant input reached through a
//! per-tensor `Dequantize` of the same i8/u8 value, scalar constants only, nothing else
//! reading its intermediate values), its output takes at most 256 values: the island is
//! evaluated once on every possible input and replaced by a `QIslandTable`. The table is
//! built by running the island's own ops on those 256 values, so the integers are the ones
//! the island computes, bit for bit.

use super::{IntOp, Table};
use crate::error::{Error, Result};
use crate::graph::{Graph, Node};
use crate::ops::{Op, Scaling};
use crate::tensor::{DType, Tensor};
use std::collections::{BTreeSet, HashMap, HashSet};

/// The largest island turned into a table (a bound on the search, not a limit real
/// activations reach: SiLU is 2 ops, Gelu written out about 6).
const MAX_ISLAND_NODES: usize = 32;

/// A float island replaced by its table, with the nodes it was (for the exports that write
/// the island as ONNX ops).
#[derive(Debug, Clone, PartialEq)]
pub struct IslandTable {
    pub table: Table,
    /// The island's nodes in graph order, its final `Requantize` last.
    pub nodes: Vec<Node>,
}

/// Whether a float op of the island computes each output element from the same-position
/// elements of its inputs only.
fn elementwise(op: &dyn Op) -> bool {
    if let Some(sc) = op.downcast_ref::<Scaling>() {
        return sc.quant.is_none() && sc.factor.len() == 1;
    }
    op.elementwise()
}

/// A constant an island may read: one element, of rank at most 1, so that broadcasting it
/// never changes the shape of the activation.
fn scalar(t: &Tensor) -> bool {
    t.len() == 1 && t.rank() <= 1
}

/// The island that ends in the `Requantize` node `r`: (source 8-bit value, its dtype, the
/// island's node indices without `r`), or None when it is not a table candidate.
fn island(g: &Graph, r: usize, dtype: &HashMap<String, DType>) -> Option<(String, DType, BTreeSet<usize>)> {
    let rn = &g.nodes[r];
    let Some(IntOp::Requant(rq)) = rn.op.downcast_ref::<IntOp>() else {
        return None;
    };
    let v = rn.inputs.first()?;
    if rq.factor.len() != 1 || rn.inputs.len() != 1 || dtype.contains_key(v) {
        return None;
    }
    let mut members = BTreeSet::new();
    let mut source: Option<(String, DType)> = None;
    let mut stack = vec![v.clone()];
    let mut seen = HashSet::new();
    while let Some(u) = stack.pop() {
        if !seen.insert(u.clone()) {
            continue;
        }
        let p = g.producer(&u)?;
        let n = &g.nodes[p];
        if n.outputs.len() != 1 {
            return None;
        }
        match n.op.downcast_ref::<IntOp>() {
            Some(IntOp::Dequant(d)) => {
                let s = n.inputs.first()?;
                let dt = *dtype.get(s)?;
                if !matches!(dt, DType::I8 | DType::U8) || d.factor.len() != 1 || d.zero.len() > 1 {
                    return None;
                }
                match &source {
                    Some((s0, _)) if s0 != s => return None,
                    _ => source = Some((s.clone(), dt)),
                }
            }
            Some(_) => return None,
            None if elementwise(n.op.as_ref()) => {
                for i in n.inputs.iter().filter(|i| !i.is_empty()) {
                    match g.initializers.get(i) {
                        Some(t) if scalar(t) => {}
                        Some(_) => return None,
                        None => stack.push(i.clone()),
                    }
                }
            }
            None => return None,
        }
        members.insert(p);
        if members.len() > MAX_ISLAND_NODES {
            return None;
        }
    }
    // Nothing outside the island reads its values.
    for &m in &members {
        let out = &g.nodes[m].outputs[0];
        if g.is_graph_output(out) || g.consumers(out).iter().any(|&(c, _)| c != r && !members.contains(&c)) {
            return None;
        }
    }
    let (s, dt) = source?;
    Some((s, dt, members))
}

/// The island's table: its nodes run on every value of the source's container.
fn build(g: &Graph, source: &str, dt: DType, members: &BTreeSet<usize>, r: usize) -> Result<Table> {
    let all: Tensor = match dt {
        DType::I8 => Tensor::from_vec(vec![256], (-128..=127).map(|v| v as i8).collect::<Vec<_>>())?,
        _ => Tensor::from_vec(vec![256], (0..=255).map(|v| v as u8).collect::<Vec<_>>())?,
    };
    let mut vals: HashMap<&str, Tensor> = HashMap::from([(source, all)]);
    for &i in members.iter().chain(std::iter::once(&r)) {
        let n = &g.nodes[i];
        let args: Vec<Option<&Tensor>> = n
            .inputs
            .iter()
            .map(|v| vals.get(v.as_str()).or_else(|| g.initializers.get(v)))
            .collect();
        let y = n.op.eval(&args)?.swap_remove(0);
        if y.shape() != [256] {
            return Err(Error::shape(format!(
                "table of node '{}' ({}): the island changed the shape to {:?}",
                n.name,
                n.op.op_type(),
                y.shape()
            )));
        }
        vals.insert(n.outputs[0].as_str(), y);
    }
    let out = &vals[g.nodes[r].outputs[0].as_str()];
    let Some(IntOp::Requant(rq)) = g.nodes[r].op.downcast_ref::<IntOp>() else {
        return Err(Error::InvalidArgument(
            "table island does not end in a Requantize".into(),
        ));
    };
    let values: Vec<i32> = match out.dtype() {
        DType::I8 => out.as_slice::<i8>()?.iter().map(|&v| v as i32).collect(),
        _ => out.as_slice::<u8>()?.iter().map(|&v| v as i32).collect(),
    };
    Ok(Table {
        values,
        input: dt,
        out: rq.out,
    })
}

/// Replaces every table-shaped float island of the lowered graph `g` (whose integer values
/// have the dtypes `dtype`) by a `QIslandTable`.
pub fn fuse_tables(g: &mut Graph, dtype: &HashMap<String, DType>) -> Result<()> {
    let mut remove = HashSet::new();
    for r in 0..g.nodes.len() {
        let Some((source, dt, members)) = island(g, r, dtype) else {
            continue;
        };
        let table = build(g, &source, dt, &members, r)?;
        let nodes: Vec<Node> = members
            .iter()
            .chain(std::iter::once(&r))
            .map(|&i| g.nodes[i].clone())
            .collect();
        let n = &mut g.nodes[r];
        n.op = Box::new(IntOp::IslandTable(Box::new(IslandTable { table, nodes })));
        n.inputs = vec![source];
        remove.extend(members);
    }
    let mut i = 0;
    g.nodes.retain(|_| {
        i += 1;
        !remove.contains(&(i - 1))
    });
    Ok(())
}

/// The graph with every `QIslandTable` back as the nodes it was (for the QOperator export).
pub fn expand_tables(g: &Graph) -> Graph {
    let mut out = g.clone();
    out.nodes = Vec::with_capacity(g.nodes.len());
    for n in &g.nodes {
        match n.op.downcast_ref::<IntOp>() {
            Some(IntOp::IslandTable(t)) => out.nodes.extend(t.nodes.iter().cloned()),
            _ => out.nodes.push(n.clone()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec;
    use crate::int::{Dequant, Requant};
    use crate::ops::{BinaryOp, Unary};
    use crate::testing::{f32_value as value, op_node as node};

    /// in -> quantizer (i8) -> a; SiLU island: a * sigmoid(a) through two Dequantizes, times
    /// a scalar constant; its Requantize -> y (i8); out = y as floats.
    fn silu(extra_reader: bool, wide_constant: bool) -> (Graph, HashMap<String, DType>) {
        let deq = || Box::new(IntOp::Dequant(Dequant::unit_zero(vec![0.037]))) as Box<dyn Op>;
        let mut nodes = vec![
            node(
                "quantizer",
                Box::new(IntOp::Requant(Requant::new(vec![40.0], -128, 127).unwrap())),
                &["in"],
                "a",
            ),
            node("dq0", deq(), &["a"], "d0"),
            node("sigmoid", Box::new(Unary::Sigmoid), &["d0"], "s"),
            node("dq1", deq(), &["a"], "d1"),
            node("mul", Box::new(BinaryOp::Mul), &["d1", "s"], "m"),
            node("gain", Box::new(BinaryOp::Mul), &["m", "k"], "g"),
            node(
                "requant",
                Box::new(IntOp::Requant(Requant::new(vec![29.0], -128, 127).unwrap())),
                &["g"],
                "y",
            ),
            node(
                "to_float",
                Box::new(IntOp::Dequant(Dequant::unit_zero(vec![1.0]))),
                &["y"],
                "out",
            ),
        ];
        let mut outputs = vec![value("out")];
        if extra_reader {
            nodes.push(node("other", Box::new(Unary::Tanh), &["s"], "t"));
            outputs.push(value("t"));
        }
        let k = if wide_constant {
            Tensor::from_vec(vec![2, 1], vec![1.5f32, 1.5]).unwrap()
        } else {
            Tensor::from_vec(vec![1], vec![1.5f32]).unwrap()
        };
        let g = Graph {
            name: "silu".into(),
            opset: 13,
            nodes,
            initializers: HashMap::from([("k".to_string(), k)]).into_iter().collect(),
            inputs: vec![value("in")],
            outputs,
        };
        let dtype = HashMap::from([("a".to_string(), DType::I8), ("y".to_string(), DType::I8)]);
        (g, dtype)
    }

    fn run(g: &Graph) -> Vec<f32> {
        // Every i8 value of `a` (in * 40 rounded), ties included.
        let x: Vec<f32> = (-1300..1300).map(|i| i as f32 / 400.0).collect();
        let feeds = HashMap::from([("in".to_string(), Tensor::from_vec(vec![x.len()], x).unwrap())]);
        exec::run(g, feeds).unwrap().remove(0).1.into_vec::<f32>().unwrap()
    }

    #[test]
    fn silu_island_becomes_a_table_with_the_same_integers() {
        let (g, dtype) = silu(false, false);
        let mut fused = g.clone();
        fuse_tables(&mut fused, &dtype).unwrap();
        let names: Vec<&str> = fused.nodes.iter().map(|n| n.op.op_type()).collect();
        assert_eq!(names, ["Requantize", "QIslandTable", "Dequantize"]);
        assert_eq!(fused.nodes[1].inputs, ["a"]);
        assert_eq!(run(&g), run(&fused));
        // The island comes back for the exports, node for node.
        assert_eq!(expand_tables(&fused), g);
    }

    #[test]
    fn islands_read_elsewhere_or_with_wide_constants_stay() {
        for (extra, wide) in [(true, false), (false, true)] {
            let (g, dtype) = silu(extra, wide);
            let mut fused = g.clone();
            fuse_tables(&mut fused, &dtype).unwrap();
            assert_eq!(fused, g, "extra reader {extra}, wide constant {wide}");
        }
    }
}
