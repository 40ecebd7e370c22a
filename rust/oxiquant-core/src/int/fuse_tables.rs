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
//!
//! An island may also read constants that vary along the last axis only (`[C]`, or
//! `[1, ..., 1, C]`: a bias added after a MatMul's quantizer, a per-feature gain): its output
//! is then a function of the 8-bit value and the channel, one 256-entry table per channel,
//! built the same way on a `[256, C]` tensor (every value in every channel). The lookup
//! checks that the input's last axis has those `C` channels.

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
    /// `table.values[v * channels + c]`: the output for stored value `v - min(input)` in
    /// channel `c` (the last axis).
    pub table: Table,
    /// 1 when the island reads scalar constants only; else the length of the last axis its
    /// channel constants vary along.
    pub channels: usize,
    /// The largest rank of those channel constants (an input of lower rank would be
    /// broadcast up by them: the lookup refuses it).
    pub min_rank: usize,
    /// The island's nodes in graph order, its final `Requantize` last.
    pub nodes: Vec<Node>,
    /// `table.values` as the output's stored bytes, channel-major (`[c][256]`): the lookup.
    bytes: Vec<u8>,
}

impl IslandTable {
    pub fn new(table: Table, channels: usize, min_rank: usize, nodes: Vec<Node>) -> Result<IslandTable> {
        if channels == 0 || table.values.len() != 256 * channels {
            return Err(Error::InvalidArgument(format!(
                "island table of {} values for {channels} channels (expected 256 per channel)",
                table.values.len()
            )));
        }
        let mut bytes = vec![0u8; table.values.len()];
        for (v, row) in table.values.chunks_exact(channels).enumerate() {
            for (c, &y) in row.iter().enumerate() {
                // The stored byte of the output container (i8 values as their two's complement).
                bytes[c * 256 + v] = y as u8;
            }
        }
        Ok(IslandTable {
            table,
            channels,
            min_rank,
            nodes,
            bytes,
        })
    }

    /// The table applied to `x` (the island's 8-bit source, channels along its last axis).
    pub fn eval(&self, x: &Tensor) -> Result<Tensor> {
        let name = self.nodes.last().map_or("?", |n| n.name.as_str());
        if x.dtype() != self.table.input {
            return Err(Error::shape(format!(
                "QIslandTable '{name}' expects a {} tensor, got {}",
                self.table.input.name(),
                x.dtype().name()
            )));
        }
        let c = self.channels;
        if c > 1 && (x.shape().last() != Some(&c) || x.rank() < self.min_rank) {
            return Err(Error::shape(format!(
                "QIslandTable '{name}' holds one table per channel of a last axis of {c} (rank {} or more), got an input of shape {:?}",
                self.min_rank,
                x.shape()
            )));
        }
        let src: &[u8] = match x.dtype() {
            DType::I8 => bytemuck_i8(x.as_slice::<i8>()?),
            _ => x.as_slice::<u8>()?,
        };
        let flip = if self.table.input == DType::I8 { 0x80u8 } else { 0 };
        let mut out = vec![0u8; src.len()];
        lookup(&self.bytes, c, flip, src, &mut out);
        let shape = x.shape().to_vec();
        match self.table.out {
            DType::I8 => Tensor::from_vec(shape, out.into_iter().map(|b| b as i8).collect::<Vec<_>>()),
            _ => Tensor::from_vec(shape, out),
        }
    }
}

/// The bytes of an i8 slice.
fn bytemuck_i8(x: &[i8]) -> &[u8] {
    // SAFETY: i8 and u8 have the same size, alignment and validity (every bit pattern).
    unsafe { std::slice::from_raw_parts(x.as_ptr().cast::<u8>(), x.len()) }
}

/// `out[i] = bytes[(i % c) * 256 + (src[i] ^ flip)]`, in parallel over blocks of whole rows.
fn lookup(bytes: &[u8], c: usize, flip: u8, src: &[u8], out: &mut [u8]) {
    use rayon::prelude::*;
    let rows_per_task = (1usize << 15).div_ceil(c).max(1);
    out.par_chunks_mut(rows_per_task * c)
        .zip(src.par_chunks(rows_per_task * c))
        .for_each(|(o, s)| {
            if c == 1 {
                // One table (an island of scalar constants: SiLU, GELU, ...): a plain byte
                // loop. The per-row iterators below cost 2-3 ns a byte on a row of one
                // (YOLOv8's SiLU tables, 20 % of its integer run time).
                let t: &[u8; 256] = bytes[..256].try_into().expect("one 256-byte table");
                for (d, &v) in o.iter_mut().zip(s) {
                    *d = t[(v ^ flip) as usize];
                }
                return;
            }
            for (orow, srow) in o.chunks_mut(c).zip(s.chunks(c)) {
                for ((d, &v), t) in orow.iter_mut().zip(srow).zip(bytes.chunks_exact(256)) {
                    *d = t[(v ^ flip) as usize];
                }
            }
        });
}

/// The reference of `lookup`: each element on its own.
#[cfg(test)]
fn lookup_ref(bytes: &[u8], c: usize, flip: u8, src: &[u8]) -> Vec<u8> {
    src.iter()
        .enumerate()
        .map(|(i, &v)| bytes[(i % c) * 256 + (v ^ flip) as usize])
        .collect()
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

/// The channel count of a constant that varies along its last axis only (`[C]` or
/// `[1, ..., 1, C]`, C > 1), else None.
fn channel_constant(t: &Tensor) -> Option<usize> {
    let (&c, lead) = t.shape().split_last()?;
    (c > 1 && lead.iter().all(|&d| d == 1)).then_some(c)
}

/// An island that ends in a `Requantize`: its 8-bit source value, the source's dtype, the
/// island's node indices (without the `Requantize`) and its channel count (1 for scalar
/// constants only).
struct Island {
    source: String,
    dtype: DType,
    members: BTreeSet<usize>,
    channels: usize,
    /// The largest rank of the channel constants (0 without any).
    rank: usize,
}

/// The island that ends in the `Requantize` node `r`, or None when it is not a table
/// candidate.
fn island(g: &Graph, r: usize, dtype: &HashMap<String, DType>) -> Option<Island> {
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
    let mut channels = 1usize;
    let mut rank = 0usize;
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
                        Some(t) => match channel_constant(t) {
                            Some(c) if channels == 1 || channels == c => {
                                channels = c;
                                rank = rank.max(t.rank());
                            }
                            _ => return None,
                        },
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
    let (source, dtype) = source?;
    Some(Island {
        source,
        dtype,
        members,
        channels,
        rank,
    })
}

/// The island's table: its nodes run on every value of the source's container (in every
/// channel: a `[256, C]` tensor when the island has channel constants).
fn build(g: &Graph, isl: &Island, r: usize) -> Result<Table> {
    let (source, dt, members, c) = (isl.source.as_str(), isl.dtype, &isl.members, isl.channels);
    let shape = if c == 1 { vec![256] } else { vec![256, c] };
    let all: Tensor = match dt {
        DType::I8 => Tensor::from_vec(
            shape,
            (-128..=127i32)
                .flat_map(|v| std::iter::repeat_n(v as i8, c))
                .collect::<Vec<_>>(),
        )?,
        _ => Tensor::from_vec(
            shape,
            (0..=255i32)
                .flat_map(|v| std::iter::repeat_n(v as u8, c))
                .collect::<Vec<_>>(),
        )?,
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
        // Leading axes of 1 (a `[1, 1, C]` constant broadcast) are harmless; anything else
        // would mean the island is not element-wise in the value and the channel.
        let ok = if c == 1 {
            y.shape() == [256]
        } else {
            y.len() == 256 * c && y.shape().last() == Some(&c)
        };
        if !ok {
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
        let Some(isl) = island(g, r, dtype) else {
            continue;
        };
        let table = build(g, &isl, r)?;
        let nodes: Vec<Node> = isl
            .members
            .iter()
            .chain(std::iter::once(&r))
            .map(|&i| g.nodes[i].clone())
            .collect();
        let fused = IslandTable::new(table, isl.channels, isl.rank, nodes)?;
        let n = &mut g.nodes[r];
        n.op = Box::new(IntOp::IslandTable(Box::new(fused)));
        n.inputs = vec![isl.source];
        remove.extend(isl.members);
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
    use proptest::prelude::*;

    proptest! {
        /// The lookup (one table, or one per channel; rows split across tasks) against
        /// the element-by-element reference.
        #[test]
        fn lookup_matches_the_reference(c in prop_oneof![Just(1usize), 1usize..20], rows in 0usize..3000, flip in prop_oneof![Just(0u8), Just(0x80u8)], seed in any::<u64>()) {
            let mut s = seed | 1;
            let mut next = || { s ^= s << 13; s ^= s >> 7; s ^= s << 17; (s >> 24) as u8 };
            let bytes: Vec<u8> = (0..256 * c).map(|_| next()).collect();
            let src: Vec<u8> = (0..rows * c).map(|_| next()).collect();
            let mut out = vec![0u8; src.len()];
            lookup(&bytes, c, flip, &src, &mut out);
            prop_assert_eq!(out, lookup_ref(&bytes, c, flip, &src));
        }
    }
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

    /// in -> quantizer (i8) -> a; a bias-then-Gelu island with per-channel constants:
    /// (d + b) * (1 + erf((d + b) * k)) * g with b [C], g `gain_shape`, k scalar; its
    /// Requantize -> y (i8); out = y as floats.
    fn biased_gelu(c: usize, gain_shape: Vec<usize>) -> (Graph, HashMap<String, DType>) {
        let deq = || Box::new(IntOp::Dequant(Dequant::unit_zero(vec![0.021]))) as Box<dyn Op>;
        let nodes = vec![
            node(
                "quantizer",
                Box::new(IntOp::Requant(Requant::new(vec![31.0], -128, 127).unwrap())),
                &["in"],
                "a",
            ),
            node("dq0", deq(), &["a"], "d0"),
            node("bias", Box::new(BinaryOp::Add), &["d0", "b"], "h"),
            node("scale", Box::new(BinaryOp::Mul), &["h", "k"], "hs"),
            node("erf", Box::new(Unary::Erf), &["hs"], "e"),
            node("one", Box::new(BinaryOp::Add), &["e", "k"], "e1"),
            node("prod", Box::new(BinaryOp::Mul), &["h", "e1"], "p"),
            node("gain", Box::new(BinaryOp::Mul), &["p", "g"], "pg"),
            node(
                "requant",
                Box::new(IntOp::Requant(Requant::new(vec![23.0], -128, 127).unwrap())),
                &["pg"],
                "y",
            ),
            node(
                "to_float",
                Box::new(IntOp::Dequant(Dequant::unit_zero(vec![1.0]))),
                &["y"],
                "out",
            ),
        ];
        let bias: Vec<f32> = (0..c).map(|i| i as f32 * 0.37 - 1.1).collect();
        let gn = gain_shape.iter().product();
        let gain: Vec<f32> = (0..gn).map(|i| 0.5 + 0.25 * i as f32).collect();
        let inits = [
            ("b".to_string(), Tensor::from_vec(vec![c], bias).unwrap()),
            ("g".to_string(), Tensor::from_vec(gain_shape, gain).unwrap()),
            ("k".to_string(), Tensor::from_vec(vec![], vec![0.70710677f32]).unwrap()),
        ];
        let g = Graph {
            name: "biased_gelu".into(),
            opset: 13,
            nodes,
            initializers: inits.into_iter().collect(),
            inputs: vec![value("in")],
            outputs: vec![value("out")],
        };
        let dtype = HashMap::from([("a".to_string(), DType::I8), ("y".to_string(), DType::I8)]);
        (g, dtype)
    }

    fn run_shaped(g: &Graph, shape: &[usize]) -> Result<Vec<f32>> {
        // Values across the quantizer's whole range (and past it), ties included.
        let n: usize = shape.iter().product();
        let x: Vec<f32> = (0..n).map(|i| ((i * 37) % 2700) as f32 / 500.0 - 2.7).collect();
        let feeds = HashMap::from([("in".to_string(), Tensor::from_vec(shape.to_vec(), x)?)]);
        exec::run(g, feeds)?.remove(0).1.into_vec::<f32>()
    }

    #[test]
    fn islands_with_channel_constants_become_per_channel_tables() {
        for gain in [vec![5], vec![1, 1, 5], vec![1]] {
            let (g, dtype) = biased_gelu(5, gain.clone());
            let mut fused = g.clone();
            fuse_tables(&mut fused, &dtype).unwrap();
            let names: Vec<&str> = fused.nodes.iter().map(|n| n.op.op_type()).collect();
            assert_eq!(names, ["Requantize", "QIslandTable", "Dequantize"], "gain {gain:?}");
            for shape in [[3usize, 7, 5], [2, 270, 5]] {
                assert_eq!(run_shaped(&g, &shape).unwrap(), run_shaped(&fused, &shape).unwrap());
            }
            assert_eq!(expand_tables(&fused), g);
            // Another last axis than the constants' is refused, not looked up wrongly.
            let err = run_shaped(&fused, &[3, 7, 4]).unwrap_err().to_string();
            assert!(err.contains("per channel") && err.contains("requant"), "{err}");
            if gain.len() == 3 {
                // A rank-1 input would be broadcast to rank 3 by the [1, 1, 5] constant.
                assert!(run_shaped(&fused, &[5]).is_err());
            }
        }
    }

    #[test]
    fn islands_with_two_channel_counts_stay() {
        let (g, dtype) = biased_gelu(5, vec![4]);
        let mut fused = g.clone();
        fuse_tables(&mut fused, &dtype).unwrap();
        assert_eq!(fused, g);
    }
}
