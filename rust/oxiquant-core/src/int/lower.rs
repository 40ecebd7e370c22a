//! Lowers a quantized graph (step 7's output: integers held in f32) to the integer engine's
//! graph: i8/u8 activations, i8 weights packed once, i32 biases and accumulators, and
//! requantization by exact fixed-point multipliers.
//!
//! Rewrites, in topological order, with the dtype of every value tracked:
//! - Conv / Gemm / MatMul with a quantized input + the quantizer after it (+ a Relu or Clip
//!   after that) -> one `QConv` / `QGemm` whose epilogue requantizes and clamps;
//! - Conv / Gemm / MatMul with a quantized input + a dequantizer after it (only float
//!   islands read its output) -> the op itself on the exact integers in f32, as the
//!   fake-quantized graph computes it, then the dequantizer's product;
//! - a quantizer (Scaling with bounds) -> `Requantize` (float in for the input quantizers);
//! - a Scaling without bounds on integers -> `Dequantize` (into a float island or output);
//! - Relu / Clip -> integer clamp; pooling -> integer pooling (the average rounded half to
//!   even, so the Round the fake graph puts after it becomes a no-op); Add / Sub / Sum ->
//!   i32 sums; shape ops (Reshape, Flatten, Concat, Slice, Pad, Transpose ...) run as they
//!   are on integer tensors; any other op on integers runs in float on the exact integer
//!   values and is rounded back (`FloatOnIntegers`);
//! - integer graph outputs get a final conversion to f32 (the values are unchanged);
//! - a `Requantize` of 8-bit integers read only by an `AddRequant` (a rebalanced residual
//!   shortcut) is folded into it (`fold_add_requants`).
//!
//! Widths above 8 bits have no 8-bit container: the lowering refuses them with a message.

use super::{Dequant, FoldedRequant, IntOp, QConv, QGemm, Requant, SmallSums};
use crate::error::{Error, Result};
use crate::graph::{Graph, Node};
use crate::ops::{clamp_interval, BinaryOp, Clip, Concat, Conv, Gemm, GlobalPool, MatMul, Pool, Scaling, Sum, Unary};
use crate::ptq::{PtqState, Stage};
use crate::tensor::{DType, Tensor};
use std::collections::{HashMap, HashSet};

fn err(node: &Node, msg: impl std::fmt::Display) -> Error {
    Error::InvalidArgument(format!(
        "integer lowering: node '{}' ({}): {msg}",
        node.name,
        node.op.op_type()
    ))
}

/// Integer values of a weight or bias that quantization left as integer-valued floats.
fn integers(node: &Node, t: &Tensor, lo: f32, hi: f32, what: &str) -> Result<Vec<i64>> {
    let v = t.to_f32_vec();
    v.iter()
        .map(|&x| {
            if x.fract() != 0.0 || !(lo..=hi).contains(&x) {
                Err(err(
                    node,
                    format!("{what} value {x} is not an integer in [{lo}, {hi}] (was the model quantized to at most 8 bits?)"),
                ))
            } else {
                Ok(x as i64)
            }
        })
        .collect()
}

fn weights_i8(node: &Node, t: &Tensor) -> Result<Vec<i16>> {
    Ok(integers(node, t, -128.0, 127.0, "weight")?
        .into_iter()
        .map(|v| v as i16)
        .collect())
}

fn bias_i32(node: &Node, t: Option<&Tensor>, m: usize) -> Result<Vec<i32>> {
    let Some(t) = t else { return Ok(vec![0; m]) };
    let limit = crate::ptq::quantize::BIAS_LIMIT;
    let v = integers(node, t, -limit, limit, "bias")?;
    match v.len() {
        1 => Ok(vec![v[0] as i32; m]),
        n if n == m => Ok(v.into_iter().map(|x| x as i32).collect()),
        n => Err(err(node, format!("bias has {n} values for {m} outputs"))),
    }
}

/// The `QGemm` of a Gemm / MatMul node with constant weight `w` (and bias), requantized by `rq`.
fn qgemm(node: &Node, w: &Tensor, bias_t: Option<&Tensor>, rq: Requant) -> Result<QGemm> {
    let gemm = node.op.downcast_ref::<Gemm>();
    let trans_b = gemm.is_some_and(|g| g.trans_b);
    if gemm.is_some_and(|g| g.trans_a) || w.rank() != 2 {
        return Err(err(node, "needs transA=0 and a 2-D weight"));
    }
    let (r, c) = (w.shape()[0], w.shape()[1]);
    let wv = weights_i8(node, w)?;
    // To [m][k] (output features by inputs).
    let (m, k, wmk) = if trans_b {
        (r, c, wv)
    } else {
        let mut t = vec![0i16; r * c];
        for i in 0..r {
            for j in 0..c {
                t[j * r + i] = wv[i * c + j];
            }
        }
        (c, r, t)
    };
    if rq.scale.len() > 1 && rq.scale.len() != m {
        return Err(err(node, "per-channel factors do not match the output features"));
    }
    let mut g = QGemm::new(&wmk, m, k, bias_i32(node, bias_t, m)?, rq, 0).map_err(|e| err(node, e))?;
    g.matmul = node.op.is::<MatMul>();
    Ok(g)
}

/// Bounds of a Relu or constant Clip on integers, if `node` is one.
fn clamp_bounds(graph: &Graph, node: &Node) -> Result<Option<(i32, i32)>> {
    Ok(
        clamp_interval(node.op.as_ref(), &node.inputs, &graph.initializers)?.map(|(lo, hi)| {
            let lo = if lo.is_finite() {
                lo.ceil().max(i32::MIN as f32) as i32
            } else {
                i32::MIN
            };
            let hi = if hi.is_finite() {
                hi.floor().min(i32::MAX as f32) as i32
            } else {
                i32::MAX
            };
            (lo, hi)
        }),
    )
}

struct Lowering<'g> {
    src: &'g Graph,
    /// Dtype of every integer value (absent: float).
    dtype: HashMap<String, DType>,
    /// Nodes already folded into an earlier one.
    absorbed: HashSet<usize>,
    nodes: Vec<Node>,
}

impl Lowering<'_> {
    fn int(&self, v: &str) -> Option<DType> {
        self.dtype.get(v).copied()
    }

    /// The only reader of `idx`'s single output, if the value is not also a graph output.
    fn sole_reader(&self, idx: usize) -> Option<usize> {
        let out = self.src.nodes[idx].outputs.first()?;
        if self.src.is_graph_output(out) {
            return None;
        }
        match self.src.consumers(out)[..] {
            [(r, 0)] => Some(r),
            _ => None,
        }
    }

    /// Whether affine node `idx` is read only by a Scaling node without quantizer bounds (a
    /// dequantizer: the layer's output stays in float).
    fn to_float_reader(&self, idx: usize) -> bool {
        self.sole_reader(idx).is_some_and(|t| {
            self.src.nodes[t]
                .op
                .downcast_ref::<Scaling>()
                .is_some_and(|sc| sc.quant.is_none())
        })
    }

    /// The requantizer of Scaling node `t`, with a following Relu/Clip folded into its
    /// bounds when that is its only reader; returns it and the value the fused chain writes.
    fn quantizer_chain(&mut self, t: usize) -> Result<(Requant, String)> {
        let node = &self.src.nodes[t];
        let Some(sc) = node.op.downcast_ref::<Scaling>() else {
            return Err(err(node, "expected the quantizer of the layer here"));
        };
        let Some(b) = sc.quant else {
            return Err(err(node, "this Scaling node has no quantizer bounds"));
        };
        let mut rq = Requant::new(sc.factor.clone(), b.lo as i32, b.hi as i32).map_err(|e| err(node, e))?;
        let mut out = node.outputs[0].clone();
        if let Some(r) = self.sole_reader(t) {
            if let Some((lo, hi)) = clamp_bounds(self.src, &self.src.nodes[r])? {
                rq.clamp_to(lo, hi);
                self.absorbed.insert(r);
                out = self.src.nodes[r].outputs[0].clone();
            }
        }
        Ok((rq, out))
    }

    fn push(&mut self, node: &Node, op: IntOp, inputs: Vec<String>, out: String, dt: DType) {
        self.dtype.insert(out.clone(), dt);
        self.nodes.push(Node {
            name: node.name.clone(),
            op: Box::new(op),
            inputs,
            outputs: vec![out],
        });
    }

    fn affine(&mut self, idx: usize) -> Result<()> {
        let node = &self.src.nodes[idx];
        let t = self
            .sole_reader(idx)
            .filter(|&t| self.src.nodes[t].op.is::<Scaling>())
            .ok_or_else(|| {
                err(
                    node,
                    "a quantized layer must be read only by its quantizer (Scaling node)",
                )
            })?;
        let (rq, out) = self.quantizer_chain(t)?;
        self.absorbed.insert(t);
        let w = self
            .src
            .initializers
            .get(node.inputs.get(1).map(String::as_str).unwrap_or(""))
            .ok_or_else(|| err(node, "its weight is not a constant"))?;
        let bias_t = node.inputs.get(2).and_then(|v| self.src.initializers.get(v));
        let dt = rq.out;
        let op = match node.op.downcast_ref::<Conv>() {
            Some(c) => {
                let m = w.shape().first().copied().unwrap_or(0);
                let conv = QConv::new(
                    c.clone(),
                    &weights_i8(node, w)?,
                    w.shape().to_vec(),
                    bias_i32(node, bias_t, m)?,
                    rq,
                    0,
                )
                .map_err(|e| err(node, e))?;
                IntOp::Conv(Box::new(conv))
            }
            None if node.op.is::<Gemm>() || node.op.is::<MatMul>() => {
                IntOp::Gemm(Box::new(qgemm(node, w, bias_t, rq)?))
            }
            _ => return Err(err(node, "not an affine op")),
        };
        self.push(node, op, vec![node.inputs[0].clone()], out, dt);
        Ok(())
    }

    fn node(&mut self, idx: usize) -> Result<()> {
        let node = &self.src.nodes[idx];
        let ints: Vec<Option<DType>> = node.inputs.iter().map(|v| self.int(v)).collect();
        let x_int = ints.first().copied().flatten();
        // Bounds of a Relu or constant Clip on integers (None otherwise).
        let clamp =
            if x_int.is_some() && (node.op.downcast_ref::<Unary>() == Some(&Unary::Relu) || node.op.is::<Clip>()) {
                clamp_bounds(self.src, node)?
            } else {
                None
            };
        let keep = |s: &mut Self| {
            s.nodes.push(node.clone());
        };
        let op = node.op.as_ref();
        let binary = op.downcast_ref::<BinaryOp>();
        let unary = op.downcast_ref::<Unary>();
        let constant_weight = node
            .inputs
            .get(1)
            .is_some_and(|w| self.src.initializers.contains_key(w));
        let affine = (op.is::<Conv>() || op.is::<Gemm>() || op.is::<MatMul>()) && constant_weight;
        if let Some(sc) = op.downcast_ref::<Scaling>() {
            match (sc.quant, x_int) {
                (Some(_), _) => {
                    let (rq, out) = self.quantizer_chain(idx)?;
                    let dt = rq.out;
                    self.push(node, IntOp::Requant(rq), vec![node.inputs[0].clone()], out, dt);
                }
                (None, Some(_)) => {
                    let op = IntOp::Dequant(Dequant::unit_zero(sc.factor.clone()));
                    self.nodes.push(Node {
                        name: node.name.clone(),
                        op: Box::new(op),
                        inputs: node.inputs.clone(),
                        outputs: node.outputs.clone(),
                    });
                }
                (None, None) => keep(self),
            }
        } else if x_int.is_none() && ints.iter().all(Option::is_none) {
            keep(self);
        } else if affine && x_int.is_some() && self.to_float_reader(idx) {
            // The layer keeps its output in float (only float islands read it): its exact
            // integer accumulator, as the fake-quantized graph's f32 product computes it,
            // goes to the dequantizer after it. A Gemm / MatMul runs on the integer kernels
            // where its sums stay below 2^24 (f32-exact); otherwise, and for a Conv, the op
            // itself runs in f32 on the integers.
            let gemm = (op.is::<Gemm>() || op.is::<MatMul>())
                .then(|| {
                    let w = self.src.initializers.get(node.inputs.get(1)?)?;
                    let bias_t = node.inputs.get(2).and_then(|v| self.src.initializers.get(v));
                    let unit = Requant::new(vec![1.0], -128, 127).ok()?;
                    qgemm(node, w, bias_t, unit).ok().filter(|g| g.exact_in_f32())
                })
                .flatten();
            let iop = match gemm {
                Some(g) => IntOp::GemmToFloat {
                    gemm: Box::new(g),
                    op: op.clone_box(),
                },
                None => IntOp::Float {
                    op: op.clone_box(),
                    out: None,
                },
            };
            // (The weight and bias stay inputs, for the QOperator export of the op.)
            self.nodes.push(Node {
                name: node.name.clone(),
                op: Box::new(iop),
                inputs: node.inputs.clone(),
                outputs: node.outputs.clone(),
            });
        } else if affine && x_int.is_some() {
            self.affine(idx)?;
        } else if matches!(unary, Some(Unary::Round | Unary::Floor)) {
            self.push(
                node,
                IntOp::Pass,
                node.inputs.clone(),
                node.outputs[0].clone(),
                x_int.unwrap_or(DType::I32),
            );
        } else if let (Some((lo, hi)), true) = (clamp, unary == Some(&Unary::Relu) || op.is::<Clip>()) {
            let dt = x_int.unwrap_or(DType::I32);
            self.push(
                node,
                IntOp::Clip { lo, hi },
                vec![node.inputs[0].clone()],
                node.outputs[0].clone(),
                dt,
            );
        } else if let Some(p) = op.downcast_ref::<Pool>() {
            let dt = x_int.unwrap_or(DType::I32);
            self.push(
                node,
                IntOp::Pool(p.clone()),
                node.inputs.clone(),
                node.outputs[0].clone(),
                dt,
            );
        } else if let Some(&GlobalPool { max }) = op.downcast_ref::<GlobalPool>() {
            let dt = x_int.unwrap_or(DType::I32);
            self.push(
                node,
                IntOp::GlobalPool { max },
                node.inputs.clone(),
                node.outputs[0].clone(),
                dt,
            );
        } else if (matches!(binary, Some(BinaryOp::Add | BinaryOp::Sub)) || op.is::<Sum>())
            && ints.iter().all(Option::is_some)
        {
            let sub = binary == Some(&BinaryOp::Sub);
            let quantizer = self.sole_reader(idx).filter(|&t| {
                self.src.nodes[t]
                    .op
                    .downcast_ref::<Scaling>()
                    .is_some_and(|sc| sc.quant.is_some())
            });
            match quantizer {
                // The merge and its quantizer in one pass.
                Some(t) if node.inputs.len() == 2 => {
                    let (requant, out) = self.quantizer_chain(t)?;
                    self.absorbed.insert(t);
                    let dt = requant.out;
                    self.push(
                        node,
                        IntOp::AddRequant {
                            sub,
                            requant,
                            folded: [None, None],
                            small: SmallSums::default(),
                        },
                        node.inputs.clone(),
                        out,
                        dt,
                    );
                }
                _ => self.push(
                    node,
                    IntOp::Add { sub },
                    node.inputs.clone(),
                    node.outputs[0].clone(),
                    DType::I32,
                ),
            }
        } else if op.is::<MatMul>() && ints.iter().all(Option::is_some) {
            // Two quantized activations (`ptq::integer_matmul`): their exact integer product
            // in i32, which the quantizer after it requantizes.
            self.push(
                node,
                IntOp::Float {
                    op: op.clone_box(),
                    out: Some(DType::I32),
                },
                node.inputs.clone(),
                node.outputs[0].clone(),
                DType::I32,
            );
        } else if op.is::<Concat>() && ints.iter().all(|d| *d == x_int) {
            self.dtype.insert(node.outputs[0].clone(), x_int.unwrap_or(DType::I32));
            keep(self);
        } else if !op.carries_activation() {
            // Shape arithmetic, casts to other types, comparisons: evaluated on the exact
            // integer values, the result is not an activation and keeps its own type.
            if node.outputs.len() != 1 {
                return Err(err(node, "has several outputs and integer inputs"));
            }
            self.nodes.push(Node {
                name: node.name.clone(),
                op: Box::new(IntOp::Float {
                    op: op.clone_box(),
                    out: None,
                }),
                inputs: node.inputs.clone(),
                outputs: node.outputs.clone(),
            });
        } else if op.moves_data_only() {
            // Every output (a Split has several) holds the input's integers.
            if let Some(d) = x_int {
                for o in &node.outputs {
                    self.dtype.insert(o.clone(), d);
                }
            }
            keep(self);
        } else {
            // Integers in, integers out: the container of the inputs, or i32 if they differ.
            let same = ints.iter().flatten().all(|d| Some(*d) == x_int);
            let dt = if same { x_int.unwrap_or(DType::I32) } else { DType::I32 };
            if node.outputs.len() != 1 {
                return Err(err(node, "has several outputs and integer inputs"));
            }
            self.push(
                node,
                IntOp::Float {
                    op: op.clone_box(),
                    out: Some(dt),
                },
                node.inputs.clone(),
                node.outputs[0].clone(),
                dt,
            );
        }
        Ok(())
    }
}

/// Folds every `Requantize` of an 8-bit value whose output only an `AddRequant` reads into
/// that add (`FoldedRequant`): the branch balancing of a residual block then costs a table
/// lookup in the add loop instead of a pass over a tensor of its own. Same integers.
fn fold_add_requants(g: &mut Graph, dtype: &HashMap<String, DType>) -> Result<()> {
    let mut folded = HashSet::new();
    for j in 0..g.nodes.len() {
        if !matches!(g.nodes[j].op.downcast_ref::<IntOp>(), Some(IntOp::AddRequant { .. }))
            || g.nodes[j].inputs.len() != 2
        {
            continue;
        }
        for slot in 0..2 {
            let v = g.nodes[j].inputs[slot].clone();
            if g.is_graph_output(&v) || g.consumers(&v).len() != 1 {
                continue;
            }
            let Some(p) = g.producer(&v) else { continue };
            let prod = &g.nodes[p];
            let Some(IntOp::Requant(rq)) = prod.op.downcast_ref::<IntOp>() else {
                continue;
            };
            let Some(src) = prod
                .inputs
                .first()
                .filter(|_| prod.inputs.len() == 1 && prod.outputs.len() == 1)
            else {
                continue;
            };
            let Some(dt @ (DType::I8 | DType::U8)) = dtype.get(src).copied() else {
                continue;
            };
            let f = FoldedRequant::new(prod.name.clone(), v, rq.clone(), dt)?;
            let src = src.clone();
            if let Some(IntOp::AddRequant {
                folded: slots, small, ..
            }) = g.nodes[j].op.downcast_mut::<IntOp>()
            {
                slots[slot] = Some(Box::new(f));
                *small = SmallSums::default();
            }
            g.nodes[j].inputs[slot] = src;
            folded.insert(p);
        }
    }
    let mut i = 0;
    g.nodes.retain(|_| {
        i += 1;
        !folded.contains(&(i - 1))
    });
    Ok(())
}

/// The integer-engine graph of a quantized graph (see the module doc).
pub fn lower_to_integer(graph: &Graph, state: &PtqState) -> Result<Graph> {
    if state.stage != Stage::Quantized {
        return Err(Error::InvalidArgument(format!(
            "the integer engine runs quantized models; this one is at stage '{}'",
            state.stage.name()
        )));
    }
    if state.no_quant {
        return Err(Error::InvalidArgument(
            "this model was quantized with no_quant=True: its values are not integers; run it with mode='fake'".into(),
        ));
    }
    let mut low = Lowering {
        src: graph,
        dtype: HashMap::new(),
        absorbed: HashSet::new(),
        nodes: Vec::with_capacity(graph.nodes.len()),
    };
    for idx in 0..graph.nodes.len() {
        if !low.absorbed.contains(&idx) {
            low.node(idx)?;
        }
    }
    let mut out = Graph {
        name: graph.name.clone(),
        opset: graph.opset,
        nodes: low.nodes,
        initializers: graph.initializers.clone(),
        inputs: graph.inputs.clone(),
        outputs: graph.outputs.clone(),
    };
    // Weights now live packed inside the integer ops.
    out.prune();
    fold_add_requants(&mut out, &low.dtype)?;
    super::fuse_tables::fuse_tables(&mut out, &low.dtype)?;
    let int_outputs: Vec<String> = out
        .outputs
        .iter()
        .filter(|o| low.dtype.contains_key(&o.name))
        .map(|o| o.name.clone())
        .collect();
    for o in int_outputs {
        out.insert_after(
            &o,
            &format!("{o}_to_float"),
            IntOp::Dequant(Dequant::unit_zero(vec![1.0])),
        )?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec;
    use crate::onnx::export_qdq::WeightType;
    use crate::onnx::export_qop::to_qoperator;
    use crate::testing::f32_value as value;

    fn node(name: &str, op: IntOp, inputs: &[&str], out: &str) -> Node {
        crate::testing::op_node(name, Box::new(op), inputs, out)
    }

    /// in -> quantizer (u8) -> a; branch: a -> Requantize (i8, per channel when asked) -> b;
    /// y = requant(a ± b) (i8); out = y as floats.
    fn residual(per_channel: bool, sub: bool) -> (Graph, HashMap<String, DType>) {
        let q = Requant::new(vec![3.0], 0, 255).unwrap();
        let branch = if per_channel {
            Requant::new(vec![0.7, 1.3, 0.5], -128, 127).unwrap()
        } else {
            Requant::new(vec![0.45], -128, 127).unwrap()
        };
        let mut add = Requant::new(vec![0.375], -128, 127).unwrap();
        add.clamp_to(0, 127);
        let g = Graph {
            name: "residual".into(),
            opset: 13,
            nodes: vec![
                node("quantizer", IntOp::Requant(q), &["in"], "a"),
                node("branch", IntOp::Requant(branch), &["a"], "b"),
                node(
                    "add",
                    IntOp::AddRequant {
                        sub,
                        requant: add,
                        folded: [None, None],
                        small: SmallSums::default(),
                    },
                    &["a", "b"],
                    "y",
                ),
                node("to_float", IntOp::Dequant(Dequant::unit_zero(vec![1.0])), &["y"], "out"),
            ],
            initializers: Default::default(),
            inputs: vec![value("in")],
            outputs: vec![value("out")],
        };
        let dtype = HashMap::from([
            ("a".to_string(), DType::U8),
            ("b".to_string(), DType::I8),
            ("y".to_string(), DType::I8),
        ]);
        (g, dtype)
    }

    #[test]
    fn branch_requantize_folds_into_the_add_with_the_same_integers() {
        for (per_channel, sub) in [(false, false), (true, false), (false, true), (true, true)] {
            let (g, dtype) = residual(per_channel, sub);
            let mut folded = g.clone();
            fold_add_requants(&mut folded, &dtype).unwrap();
            let names: Vec<&str> = folded.nodes.iter().map(|n| n.name.as_str()).collect();
            assert_eq!(names, ["quantizer", "add", "to_float"]);
            assert_eq!(folded.nodes[1].inputs, ["a", "a"]);
            // Every u8 value in every channel, ties included (x * 0.5 for odd x), over planes
            // larger than the add loop's 256-value blocks.
            let n = 2 * 3 * 20 * 20;
            let x: Vec<f32> = (0..n).map(|i| ((i * 37) % 520) as f32 / 6.0 - 2.0).collect();
            let x = Tensor::from_vec(vec![2, 3, 20, 20], x).unwrap();
            let run = |g: &Graph| {
                let feeds = HashMap::from([("in".to_string(), x.clone())]);
                exec::run(g, feeds).unwrap().remove(0).1.into_vec::<f32>().unwrap()
            };
            assert_eq!(run(&g), run(&folded), "per_channel {per_channel}, sub {sub}");
            // The QOperator export restores the folded node: the same ONNX graph.
            let (a, b) = (
                to_qoperator(&g, WeightType::Int8),
                to_qoperator(&folded, WeightType::Int8),
            );
            assert_eq!(a.unwrap(), b.unwrap());
        }
    }

    #[test]
    fn requantize_read_twice_or_returned_stays() {
        let (mut g, dtype) = residual(false, false);
        g.outputs.push(value("b"));
        let before = g.clone();
        fold_add_requants(&mut g, &dtype).unwrap();
        assert_eq!(g, before);
        // The branch also read by another node.
        let (mut g, dtype) = residual(false, false);
        g.nodes.push(node("other", IntOp::Clip { lo: 0, hi: 9 }, &["b"], "c"));
        let before = g.clone();
        fold_add_requants(&mut g, &dtype).unwrap();
        assert_eq!(g, before);
    }
}
