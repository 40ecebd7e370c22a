//! One file past 800 lines because it is one pass (`Import`) whose rewrites all read and
//! update the same tracking state (`ints`, `deq`, `cdeq`); split by op, that state would be
//! spread over files that only make sense together.
//!
//! Lowers a model quantized by another tool (onnxruntime's `quantize_static` and the like)
//! to the integer engine: QDQ models (QuantizeLinear / DequantizeLinear around float ops)
//! and QOperator models (QLinearConv, QLinearMatMul, com.microsoft QGemm, QLinearAdd ...).
//!
//! One pass over the graph in topological order, tracking which values are integer tensors
//! (`ints`), which float values are the dequantization of an integer activation (`deq`:
//! `DequantizeLinear(x)` with one scale and zero point) and which are dequantized constants
//! (`cdeq`: quantized weights and biases). Rewrites:
//! - `DQ(x), DQ(w)[, DQ(b)] -> Conv / Gemm / MatMul [-> Relu / Clip] -> Q`, and QLinearConv,
//!   QLinearMatMul, QGemm -> `QConv` / `QGemm` (input zero point, centered weights,
//!   multiplier `x_scale * w_scale / y_scale` in f32, the f32 product rounded half to even
//!   as onnxruntime does, a fused Relu / Clip as clamp bounds);
//! - `DQ(a), DQ(b) -> Add [-> Relu] -> Q`, and QLinearAdd -> `QAdd` (each side on its scale);
//! - `DQ -> MaxPool -> Q` -> integer max pooling (+ a requantization table when the
//!   parameters change); `DQ -> AveragePool / GlobalAveragePool -> Q` and the QLinear pools
//!   -> `QAvgPool`;
//! - `DQ(x_i) -> Concat -> Q`, QLinearConcat -> each input requantized by table, then Concat;
//! - `DQ -> Q` and `DQ -> element-wise op (Relu, Clip, LeakyRelu, Sigmoid ...) -> Q`,
//!   QLinearLeakyRelu, QLinearSigmoid -> a 256-entry table (the ONNX definition, exact);
//! - shape ops (Reshape, Flatten, Transpose, Squeeze, Unsqueeze, Identity) and MaxPool on a
//!   dequantized value run on the integers, whose dequantization moves after them;
//! - QuantizeLinear of a float value -> `Requantize` (ONNX's f32 division);
//! - anything else that reads a dequantized value gets it from a `Dequantize` node and runs
//!   in float (a float island), listed in `Imported::float_nodes` with the reason.

use crate::error::{Error, Result};
use crate::graph::{Graph, NameGen, Node};
use crate::int::{requant_table, AddInput, Dequant, IntOp, QAdd, QAvgPool, QConv, QGemm, Requant, Table};
use crate::ops::qlinear::{dequantize, Param, Params, QOp};
use crate::ops::MatMul;
use crate::ops::{clamp_interval, BinaryOp, Conv, Op, Unary};
use crate::ops::{Clip, Concat, Gather, Gemm, GlobalPool, Identity, Pad, Pool};
use crate::tensor::{DType, Tensor};
use std::collections::{HashMap, HashSet};

/// The integer-engine graph of a quantized model and what stays in float.
#[derive(Debug, Clone)]
pub struct Imported {
    pub graph: Graph,
    /// (node, op, why) for every node computed in float on dequantized values.
    pub float_nodes: Vec<(String, String, String)>,
}

impl Imported {
    /// A one-line summary of the float islands (None when everything runs on integers).
    pub fn note(&self) -> Option<String> {
        if self.float_nodes.is_empty() {
            return None;
        }
        let list: Vec<String> = self
            .float_nodes
            .iter()
            .take(6)
            .map(|(n, op, why)| format!("'{n}' ({op}): {why}"))
            .collect();
        let more = self.float_nodes.len().saturating_sub(6);
        Some(format!(
            "{} node(s) run in float between a Dequantize and a Quantize: {}{}",
            self.float_nodes.len(),
            list.join("; "),
            if more > 0 {
                format!("; and {more} more")
            } else {
                String::new()
            }
        ))
    }
}

/// Whether the graph holds quantized ONNX ops (a model quantized by another tool).
pub fn is_quantized_model(graph: &Graph) -> bool {
    graph.nodes.iter().any(|n| n.op.is::<QOp>())
}

/// A float value that is the dequantization of an integer activation.
#[derive(Debug, Clone)]
struct Deq {
    int: String,
    p: Param,
    dtype: DType,
    /// The DequantizeLinear node (named by the Dequantize node if it is materialized).
    node: String,
}

/// A dequantized constant (weight or bias).
#[derive(Debug, Clone)]
struct ConstDeq {
    q: Tensor,
    p: Params,
    axis: i64,
}

/// The quantizer that ends a fused pattern: its node, parameters and output dtype, and the
/// clamp (in stored units) of a Relu / Clip between the op and it.
struct Quantizer {
    q: usize,
    clamp_node: Option<usize>,
    p: Param,
    dtype: DType,
    out: String,
    lo: i32,
    hi: i32,
}

fn range_of(dt: DType) -> (i32, i32) {
    if dt == DType::I8 {
        (-128, 127)
    } else {
        (0, 255)
    }
}

/// ONNX QuantizeLinear of one real value (for clamp bounds).
fn quantize_one(v: f32, p: Param, dt: DType) -> i32 {
    let (lo, hi) = range_of(dt);
    if v == f32::INFINITY {
        return hi;
    }
    if v == f32::NEG_INFINITY {
        return lo;
    }
    (((v / p.scale).round_ties_even() as f64 + p.zero as f64).clamp(lo as f64, hi as f64)) as i32
}

struct Import<'g> {
    src: &'g Graph,
    ints: HashMap<String, DType>,
    deq: HashMap<String, Deq>,
    cdeq: HashMap<String, ConstDeq>,
    materialized: HashSet<String>,
    absorbed: HashSet<usize>,
    nodes: Vec<Node>,
    inits: Vec<(String, Tensor)>,
    names: NameGen,
    floats: Vec<(String, String, String)>,
}

impl<'g> Import<'g> {
    fn konst(&self, v: &str) -> Option<&'g Tensor> {
        self.src.initializers.get(v)
    }

    /// Scale and zero point at inputs `si` / `zi` of `node`, if both are constants.
    fn params(&self, node: &Node, si: usize, zi: usize, what: &str) -> Result<Option<Params>> {
        let Some(s) = node.inputs.get(si).and_then(|v| self.konst(v)) else {
            return Ok(None);
        };
        let z = match node.inputs.get(zi).filter(|v| !v.is_empty()) {
            Some(v) => match self.konst(v) {
                Some(t) => Some(t),
                None => return Ok(None),
            },
            None => None,
        };
        Params::from_tensors(s, z, what).map(Some)
    }

    /// The sole reader of `idx`'s output, if that value is not a graph output.
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

    /// The per-tensor QuantizeLinear node `q`, as a `Quantizer`.
    fn quantizer_at(&self, q: usize) -> Result<Option<Quantizer>> {
        let n = &self.src.nodes[q];
        let Some(QOp::QuantizeLinear { out, .. }) = n.op.downcast_ref::<QOp>() else {
            return Ok(None);
        };
        let Some(ps) = self.params(n, 1, 2, "y")? else {
            return Ok(None);
        };
        let Ok(p) = ps.per_tensor("y") else { return Ok(None) };
        let dtype = ps.dtype.or(*out).unwrap_or(DType::U8);
        if !matches!(dtype, DType::U8 | DType::I8) {
            return Ok(None);
        }
        let (lo, hi) = range_of(dtype);
        Ok(Some(Quantizer {
            q,
            clamp_node: None,
            p,
            dtype,
            out: n.outputs[0].clone(),
            lo,
            hi,
        }))
    }

    /// The quantizer reading `idx`'s output, directly or (`through_clamp`) after a Relu or a
    /// constant Clip, which becomes its clamp bounds.
    fn quantizer_after(&self, idx: usize, through_clamp: bool) -> Result<Option<Quantizer>> {
        let Some(r) = self.sole_reader(idx) else {
            return Ok(None);
        };
        if let Some(q) = self.quantizer_at(r)? {
            return Ok(Some(q));
        }
        if !through_clamp {
            return Ok(None);
        }
        let rn = &self.src.nodes[r];
        let real = clamp_interval(rn.op.as_ref(), &rn.inputs, &self.src.initializers)?;
        let (Some((rlo, rhi)), Some(q2)) = (real, self.sole_reader(r)) else {
            return Ok(None);
        };
        let Some(mut q) = self.quantizer_at(q2)? else {
            return Ok(None);
        };
        q.lo = q.lo.max(quantize_one(rlo, q.p, q.dtype));
        q.hi = q.hi.min(quantize_one(rhi, q.p, q.dtype)).max(q.lo);
        q.clamp_node = Some(r);
        Ok(Some(q))
    }

    fn absorb(&mut self, q: &Quantizer) {
        self.absorbed.insert(q.q);
        if let Some(c) = q.clamp_node {
            self.absorbed.insert(c);
        }
    }

    fn emit(&mut self, name: &str, op: IntOp, inputs: Vec<String>, out: String, dt: Option<DType>) {
        if let Some(d) = dt {
            self.ints.insert(out.clone(), d);
        }
        self.nodes.push(Node {
            name: name.to_string(),
            op: Box::new(op),
            inputs,
            outputs: vec![out],
        });
    }

    /// Makes the float value `v` available: a `Dequantize` node for a dequantized activation,
    /// an initializer for a dequantized constant.
    fn materialize(&mut self, v: &str) -> Result<()> {
        if self.materialized.contains(v) {
            return Ok(());
        }
        if let Some(d) = self.deq.get(v).cloned() {
            self.materialized.insert(v.to_string());
            let op = IntOp::Dequant(Dequant {
                factor: vec![d.p.scale],
                zero: vec![d.p.zero],
            });
            self.emit(&d.node, op, vec![d.int], v.to_string(), None);
        } else if let Some(c) = self.cdeq.get(v).cloned() {
            self.materialized.insert(v.to_string());
            let f = Tensor::from_vec(c.q.shape().to_vec(), dequantize(&c.q, &c.p, c.axis)?)?;
            self.inits.push((v.to_string(), f));
        }
        Ok(())
    }

    /// Keeps `node` as it is (float, or a reference quantized op), materializing the
    /// dequantized values it reads; `why` (when it read any) goes to the float-node list.
    fn keep(&mut self, node: &Node, why: &str) -> Result<()> {
        let mut read_deq = false;
        for v in &node.inputs {
            if self.deq.contains_key(v) {
                read_deq = true;
            }
            self.materialize(v)?;
        }
        let reads_int = node.inputs.iter().any(|v| self.ints.contains_key(v));
        if read_deq || reads_int {
            self.floats
                .push((node.name.clone(), node.op.op_type().to_string(), why.to_string()));
        }
        self.nodes.push(node.clone());
        Ok(())
    }

    fn node(&mut self, idx: usize) -> Result<()> {
        let src = self.src;
        let node = &src.nodes[idx];
        let first = node.inputs.first().cloned().unwrap_or_default();
        let op = node.op.as_ref();
        let unary_or_clip = op.is::<Unary>() || op.is::<Clip>();
        // Reshapes, transposes, slices, pads and the identities (Gather is not followed here).
        let moves_ints = op.moves_data_only() && !op.is::<Gather>();
        let pool = op.downcast_ref::<Pool>();
        let global_pool = op.downcast_ref::<GlobalPool>();
        if let Some(q) = op.downcast_ref::<QOp>() {
            return self.qop(idx, q);
        }
        if (op.is::<Conv>() || op.is::<Gemm>() || op.is::<MatMul>()) && self.deq.contains_key(&first) {
            if !self.affine_qdq(idx)? {
                self.keep(node, "no quantized weight or no QuantizeLinear after it")?;
            }
            return Ok(());
        }
        if op.downcast_ref::<BinaryOp>() == Some(&BinaryOp::Add) && node.inputs.iter().all(|v| self.deq.contains_key(v))
        {
            return match self.quantizer_after(idx, true)? {
                Some(q) => {
                    let (a, b) = (self.deq[&node.inputs[0]].clone(), self.deq[&node.inputs[1]].clone());
                    self.add(node, (&a.int, a.p), (&b.int, b.p), &q);
                    Ok(())
                }
                None => self.keep(node, "no QuantizeLinear after it"),
            };
        }
        if let Some(&Concat { axis }) = op.downcast_ref::<Concat>() {
            if node.inputs.iter().all(|v| self.deq.contains_key(v)) {
                return match self.quantizer_after(idx, false)? {
                    Some(q) => {
                        let parts: Vec<(String, Param, DType)> = node
                            .inputs
                            .iter()
                            .map(|v| {
                                let d = &self.deq[v];
                                (d.int.clone(), d.p, d.dtype)
                            })
                            .collect();
                        self.concat(node, axis, &parts, &q)
                    }
                    None => self.keep(node, "no QuantizeLinear after it"),
                };
            }
        }
        if (pool.is_some() || global_pool.is_some()) && self.deq.contains_key(&first) {
            return self.pool_qdq(idx);
        }
        if unary_or_clip && self.deq.contains_key(&first) {
            let d = self.deq[&first].clone();
            let consts_only = node
                .inputs
                .iter()
                .skip(1)
                .all(|v| v.is_empty() || self.konst(v).is_some());
            return match self.quantizer_after(idx, false)? {
                Some(q) if consts_only => {
                    let t = self.float_table(node, op, &d, &q)?;
                    self.absorb(&q);
                    self.emit(
                        &node.name,
                        IntOp::Table(Box::new(t)),
                        vec![d.int],
                        q.out.clone(),
                        Some(q.dtype),
                    );
                    Ok(())
                }
                _ => self.keep(node, "no QuantizeLinear after it"),
            };
        }
        if moves_ints && self.deq.contains_key(&first) {
            let d = self.deq[&first].clone();
            return self.shape_on_ints(idx, &d);
        }
        // QOperator models move integers through shape ops and MaxPool as they are.
        if moves_ints && self.ints.contains_key(&first) {
            let dt = self.ints[&first];
            self.ints.insert(node.outputs[0].clone(), dt);
            self.nodes.push(node.clone());
            return Ok(());
        }
        if let Some(p) = pool.filter(|p| p.max && self.ints.contains_key(&first)) {
            let dt = self.ints[&first];
            self.emit(
                &node.name,
                IntOp::Pool(p.clone()),
                vec![first],
                node.outputs[0].clone(),
                Some(dt),
            );
            return Ok(());
        }
        if global_pool.is_some_and(|g| g.max) && self.ints.contains_key(&first) {
            let dt = self.ints[&first];
            let op = IntOp::GlobalPool { max: true };
            self.emit(&node.name, op, vec![first], node.outputs[0].clone(), Some(dt));
            return Ok(());
        }
        self.keep(
            node,
            "no integer form for this op between DequantizeLinear and QuantizeLinear",
        )
    }

    /// A shape op on a dequantized value: the op on the integers, dequantized after it (or
    /// requantized into the parameters of the QuantizeLinear that follows).
    fn shape_on_ints(&mut self, idx: usize, d: &Deq) -> Result<()> {
        let src = self.src;
        let node = &src.nodes[idx];
        let q = self.quantizer_after(idx, false)?;
        let mut inputs = node.inputs.clone();
        inputs[0] = d.int.clone();
        for v in inputs.iter().skip(1) {
            self.materialize(v)?;
        }
        let mut op = node.op.clone();
        if let Some(p) = op.downcast_mut::<Pad>() {
            // A constant pad value is a real number: its quantized value on the integers.
            if p.mode == crate::ops::PadMode::Constant {
                let real = match (&p.pads, inputs.get(2).filter(|v| !v.is_empty())) {
                    (Some(_), _) => p.value,
                    (None, Some(v)) => match self.konst(v) {
                        Some(t) if t.len() == 1 => t.to_f32_vec()[0],
                        _ => return self.keep(node, "Pad with a non-constant value"),
                    },
                    (None, None) => 0.0,
                };
                let stored = quantize_one(real, d.p, d.dtype);
                if p.pads.is_some() {
                    p.value = stored as f32;
                } else {
                    let name = self.names.fresh(&format!("{}_value", node.name));
                    let t = crate::ops::qlinear::ints_to_tensor(vec![], vec![stored], d.dtype)?;
                    self.inits.push((name.clone(), t));
                    inputs.resize(inputs.len().max(3), String::new());
                    inputs[2] = name;
                }
            }
        }
        let moved = self.names.fresh(&format!("{}_int", node.outputs[0]));
        self.ints.insert(moved.clone(), d.dtype);
        self.nodes.push(Node {
            name: node.name.clone(),
            op,
            inputs,
            outputs: vec![moved.clone()],
        });
        self.requantize_into(node, &moved, d.p, d.dtype, q)
    }

    /// The integer value `v` (parameters `p`) of node `node`'s output: requantized into the
    /// following quantizer `q` (absorbing it), or recorded as dequantizable.
    fn requantize_into(&mut self, node: &Node, v: &str, p: Param, dt: DType, q: Option<Quantizer>) -> Result<()> {
        match q {
            Some(q) => {
                self.absorb(&q);
                let t = requant_table(dt, p.scale, p.zero, q.dtype, q.p.scale, q.p.zero)?;
                let op = if t.is_identity() {
                    IntOp::Pass
                } else {
                    IntOp::Table(Box::new(t))
                };
                let name = self.names.fresh(&format!("{}_requantize", node.name));
                self.emit(&name, op, vec![v.to_string()], q.out.clone(), Some(q.dtype));
            }
            None => {
                self.deq.insert(
                    node.outputs[0].clone(),
                    Deq {
                        int: v.to_string(),
                        p,
                        dtype: dt,
                        node: self.names.fresh(&format!("{}_dequantize", node.name)),
                    },
                );
            }
        }
        Ok(())
    }

    /// Table of `QuantizeLinear(op(DequantizeLinear(x)))` for an element-wise `op`.
    fn float_table(&self, node: &Node, op: &dyn Op, d: &Deq, q: &Quantizer) -> Result<Table> {
        let (lo, hi) = range_of(d.dtype);
        let xs: Vec<f32> = (lo..=hi).map(|x| (x - d.p.zero) as f32 * d.p.scale).collect();
        let xt = Tensor::from_vec(vec![xs.len()], xs)?;
        let mut args: Vec<Option<&Tensor>> = vec![Some(&xt)];
        args.extend(node.inputs.iter().skip(1).map(|v| self.konst(v)));
        let y = op.eval(&args)?.swap_remove(0);
        let ys = y.as_slice::<f32>()?.to_vec();
        if ys.len() != (hi - lo + 1) as usize {
            return Err(Error::shape(format!(
                "node '{}' ({}) is not element-wise on its input",
                node.name,
                op.op_type()
            )));
        }
        Table::build(d.dtype, q.dtype, |x| quantize_one(ys[(x - lo) as usize], q.p, q.dtype))
    }

    fn add(&mut self, node: &Node, a: (&str, Param), b: (&str, Param), q: &Quantizer) {
        let op = IntOp::QAdd(QAdd {
            a: AddInput {
                ratio: a.1.scale / q.p.scale,
                zero: a.1.zero,
            },
            b: AddInput {
                ratio: b.1.scale / q.p.scale,
                zero: b.1.zero,
            },
            zero: q.p.zero,
            lo: q.lo,
            hi: q.hi,
            out: q.dtype,
        });
        self.absorb(q);
        self.emit(
            &node.name,
            op,
            vec![a.0.to_string(), b.0.to_string()],
            q.out.clone(),
            Some(q.dtype),
        );
    }

    fn concat(&mut self, node: &Node, axis: i64, parts: &[(String, Param, DType)], q: &Quantizer) -> Result<()> {
        let mut inputs = Vec::new();
        for (k, (v, p, dt)) in parts.iter().enumerate() {
            let t = requant_table(*dt, p.scale, p.zero, q.dtype, q.p.scale, q.p.zero)?;
            if t.is_identity() {
                inputs.push(v.clone());
            } else {
                let out = self.names.fresh(&format!("{v}_requantized"));
                let name = self.names.fresh(&format!("{}_requantize_{k}", node.name));
                self.emit(
                    &name,
                    IntOp::Table(Box::new(t)),
                    vec![v.clone()],
                    out.clone(),
                    Some(q.dtype),
                );
                inputs.push(out);
            }
        }
        self.absorb(q);
        self.ints.insert(q.out.clone(), q.dtype);
        self.nodes.push(Node {
            name: node.name.clone(),
            op: Box::new(Concat { axis }),
            inputs,
            outputs: vec![q.out.clone()],
        });
        Ok(())
    }

    fn pool_qdq(&mut self, idx: usize) -> Result<()> {
        let src = self.src;
        let node = &src.nodes[idx];
        let d = self.deq[&node.inputs[0]].clone();
        let q = self.quantizer_after(idx, false)?;
        let pool = node.op.downcast_ref::<Pool>();
        let global_max = node.op.downcast_ref::<GlobalPool>().is_some_and(|g| g.max);
        match (pool, q) {
            (Some(p), q) if p.max => {
                let v = self.names.fresh(&format!("{}_int", node.outputs[0]));
                self.emit(
                    &node.name,
                    IntOp::Pool(p.clone()),
                    vec![d.int.clone()],
                    v.clone(),
                    Some(d.dtype),
                );
                self.requantize_into(node, &v, d.p, d.dtype, q)
            }
            (None, q) if global_max => {
                let v = self.names.fresh(&format!("{}_int", node.outputs[0]));
                let op = IntOp::GlobalPool { max: true };
                self.emit(&node.name, op, vec![d.int.clone()], v.clone(), Some(d.dtype));
                self.requantize_into(node, &v, d.p, d.dtype, q)
            }
            (pool, Some(q)) => {
                let pool = pool.cloned();
                self.avg_pool(&node.name, pool, &d.int, d.p, &q)
            }
            (_, None) => self.keep(node, "no QuantizeLinear after it"),
        }
    }

    fn avg_pool(
        &mut self,
        name: &str,
        pool: Option<crate::ops::Pool>,
        x: &str,
        px: Param,
        q: &Quantizer,
    ) -> Result<()> {
        let op = IntOp::AvgPool(Box::new(QAvgPool {
            pool,
            x_scale: px.scale,
            x_zero: px.zero,
            y_scale: q.p.scale,
            y_zero: q.p.zero,
            out: q.dtype,
        }));
        self.absorb(q);
        self.emit(name, op, vec![x.to_string()], q.out.clone(), Some(q.dtype));
        Ok(())
    }

    /// `DQ(x), DQ(w)[, DQ(b)] -> Conv / Gemm / MatMul [-> Relu / Clip] -> Q`; false when the
    /// pattern does not hold (the node then stays in float).
    fn affine_qdq(&mut self, idx: usize) -> Result<bool> {
        let src = self.src;
        let node = &src.nodes[idx];
        let d = self.deq[&node.inputs[0]].clone();
        let Some(w) = node.inputs.get(1).and_then(|v| self.cdeq.get(v)).cloned() else {
            return Ok(false);
        };
        let bias = match node.inputs.get(2).filter(|v| !v.is_empty()) {
            None => None,
            Some(v) => match (self.cdeq.get(v), self.konst(v)) {
                (Some(c), _) => Some(Tensor::from_vec(c.q.shape().to_vec(), dequantize(&c.q, &c.p, c.axis)?)?),
                (None, Some(t)) if t.dtype() == DType::F32 => Some(t.clone()),
                _ => return Ok(false),
            },
        };
        // Biases as onnxruntime writes them: int32 with scale x_scale * w_scale, zero 0.
        let int_bias = node.inputs.get(2).and_then(|v| self.cdeq.get(v)).cloned();
        let Some(q) = self.quantizer_after(idx, true)? else {
            return Ok(false);
        };
        let kind = if let Some(c) = node.op.downcast_ref::<Conv>() {
            Affine::Conv(c.clone())
        } else if let Some(g) = node.op.downcast_ref::<Gemm>() {
            if !g.trans_a && g.alpha == 1.0 && g.beta == 1.0 {
                Affine::Gemm { trans_b: g.trans_b }
            } else {
                return Ok(false);
            }
        } else if node.op.is::<MatMul>() {
            Affine::Gemm { trans_b: false }
        } else {
            return Ok(false);
        };
        let spec = AffineSpec {
            x: d.int.clone(),
            px: d.p,
            w: &w.q,
            pw: &w.p,
            w_axis: w.axis,
            bias: BiasSpec {
                int: int_bias.as_ref().map(|c| (&c.q, &c.p)),
                real: bias.as_ref(),
            },
            matmul: node.op.is::<MatMul>(),
        };
        match self.affine_op(&node.name, kind, &spec, &q) {
            Ok(op) => {
                self.absorb(&q);
                self.emit(&node.name, op, vec![spec.x.clone()], q.out.clone(), Some(q.dtype));
                Ok(true)
            }
            Err(e) => {
                self.floats
                    .push((node.name.clone(), node.op.op_type().to_string(), e.to_string()));
                Ok(false)
            }
        }
    }

    /// The `QConv` / `QGemm` of an affine layer.
    fn affine_op(&self, name: &str, kind: Affine, s: &AffineSpec<'_>, q: &Quantizer) -> Result<IntOp> {
        let wv: Vec<i32> = s.w.to_i64_vec()?.into_iter().map(|v| v as i32).collect();
        if !matches!(s.w.dtype(), DType::U8 | DType::I8) {
            return Err(Error::InvalidArgument(format!(
                "node '{name}': weights of dtype {} (8-bit weights expected)",
                s.w.dtype().name()
            )));
        }
        let ws = s.w.shape();
        let nscale = s.pw.scale.len();
        // The output-channel axis of the weight: 0 for Conv and transposed Gemm, 1 otherwise.
        let (m, k, out_axis) = match &kind {
            Affine::Conv(_) => (ws.first().copied().unwrap_or(0), ws[1..].iter().product(), 0usize),
            Affine::Gemm { trans_b } if ws.len() == 2 => {
                if *trans_b {
                    (ws[0], ws[1], 0)
                } else {
                    (ws[1], ws[0], 1)
                }
            }
            _ => {
                return Err(Error::InvalidArgument(format!(
                    "node '{name}': weight of shape {ws:?} (2-D expected)"
                )))
            }
        };
        if nscale != 1 {
            let axis = crate::ops::norm_axis(s.w_axis, ws.len())?;
            if axis != out_axis || nscale != m {
                return Err(Error::InvalidArgument(format!(
                    "node '{name}': {nscale} weight scales on axis {} (per output channel on axis {out_axis} expected)",
                    s.w_axis
                )));
            }
        }
        let ch = |c: usize| if nscale == 1 { 0 } else { c };
        // Centered weights as [m][k].
        let mut w16 = vec![0i16; m * k];
        for r in 0..m {
            for j in 0..k {
                let v = if out_axis == 0 { wv[r * k + j] } else { wv[j * m + r] };
                w16[r * k + j] = (v - s.pw.zero[ch(r)]) as i16;
            }
        }
        let acc_scale: Vec<f32> = (0..m).map(|c| s.px.scale * s.pw.scale[ch(c)]).collect();
        let bias = s.bias.resolve(&acc_scale, m, name)?;
        let factors: Vec<f32> = if nscale == 1 {
            vec![s.px.scale * s.pw.scale[0] / q.p.scale]
        } else {
            (0..m).map(|c| s.px.scale * s.pw.scale[c] / q.p.scale).collect()
        };
        let mut rq = Requant::onnx(factors, q.dtype, q.p.zero)?;
        rq.lo = q.lo;
        rq.hi = q.hi;
        Ok(match kind {
            Affine::Conv(c) => IntOp::Conv(Box::new(QConv::new(c, &w16, ws.to_vec(), bias, rq, s.px.zero)?)),
            Affine::Gemm { .. } => {
                let mut g = QGemm::new(&w16, m, k, bias, rq, s.px.zero)?;
                g.matmul = s.matmul;
                IntOp::Gemm(Box::new(g))
            }
        })
    }

    /// A QOperator op, or QuantizeLinear / DequantizeLinear.
    fn qop(&mut self, idx: usize, q: &QOp) -> Result<()> {
        let src = self.src;
        let node = &src.nodes[idx];
        let first = node.inputs.first().cloned().unwrap_or_default();
        let out = node.outputs[0].clone();
        match q {
            QOp::DequantizeLinear { axis } => {
                let Some(p) = self.params(node, 1, 2, "x")? else {
                    return self.keep(node, "DequantizeLinear with a non-constant scale or zero point");
                };
                if let Some(c) = self.konst(&first) {
                    self.cdeq.insert(
                        out,
                        ConstDeq {
                            q: c.clone(),
                            p,
                            axis: *axis,
                        },
                    );
                    return Ok(());
                }
                match (self.ints.get(&first).copied(), p.per_tensor("x")) {
                    (Some(dt), Ok(one)) => {
                        self.deq.insert(
                            out,
                            Deq {
                                int: first,
                                p: one,
                                dtype: dt,
                                node: node.name.clone(),
                            },
                        );
                        Ok(())
                    }
                    // Per-axis activations: the reference op (integers in, floats out).
                    _ => self.keep(node, "per-axis dequantization of an activation"),
                }
            }
            QOp::QuantizeLinear { .. } => {
                let Some(qz) = self.quantizer_at(idx)? else {
                    return self.keep(node, "per-axis or non-constant quantization of an activation");
                };
                if let Some(d) = self.deq.get(&first).cloned() {
                    // DequantizeLinear -> QuantizeLinear: a requantization.
                    let t = requant_table(d.dtype, d.p.scale, d.p.zero, qz.dtype, qz.p.scale, qz.p.zero)?;
                    let op = if t.is_identity() {
                        IntOp::Pass
                    } else {
                        IntOp::Table(Box::new(t))
                    };
                    self.emit(&node.name, op, vec![d.int], out, Some(qz.dtype));
                    return Ok(());
                }
                self.materialize(&first)?;
                let mut rq = Requant::onnx(vec![1.0 / qz.p.scale], qz.dtype, qz.p.zero)?;
                rq.divide_by = Some(vec![qz.p.scale]);
                self.emit(&node.name, IntOp::Requant(rq), vec![first], out, Some(qz.dtype));
                Ok(())
            }
            _ => match self.qlinear(idx, q) {
                Ok(true) => Ok(()),
                Ok(false) => self.keep(node, "runs as ONNX defines it (a non-constant parameter)"),
                Err(e) => self.keep(node, &format!("runs as ONNX defines it: {e}")),
            },
        }
    }

    /// The QOperator ops proper; false when a parameter is not constant.
    fn qlinear(&mut self, idx: usize, q: &QOp) -> Result<bool> {
        let src = self.src;
        let node = &src.nodes[idx];
        let x = node.inputs.first().cloned().unwrap_or_default();
        let out = node.outputs[0].clone();
        let int_or_const = |s: &Self, v: &str| s.ints.get(v).copied().or(s.konst(v).map(|t| t.dtype()));
        let Some(xdt) = int_or_const(self, &x) else {
            return Ok(false);
        };
        // The output quantizer of ops whose y_scale / y_zero_point sit at (si, zi).
        let quantizer = |s: &Self, si: usize, zi: usize| -> Result<Option<Quantizer>> {
            let Some(ps) = s.params(node, si, zi, "y")? else {
                return Ok(None);
            };
            let p = ps.per_tensor("y")?;
            let dtype = ps.dtype.unwrap_or(DType::U8);
            let (lo, hi) = range_of(dtype);
            Ok(Some(Quantizer {
                q: idx,
                clamp_node: None,
                p,
                dtype,
                out: out.clone(),
                lo,
                hi,
            }))
        };
        let op = match q {
            QOp::QLinearConv(_) | QOp::QLinearMatMul | QOp::QGemm { .. } => {
                let (yi, bias_i) = match q {
                    QOp::QLinearConv(_) => (6, Some(8)),
                    QOp::QLinearMatMul => (6, None),
                    _ => (7, Some(6)),
                };
                let (Some(px), Some(pw), Some(w), Some(qz)) = (
                    self.params(node, 1, 2, "x")?,
                    self.params(node, 4, 5, "w")?,
                    node.inputs.get(3).and_then(|v| self.konst(v)),
                    quantizer(self, yi, yi + 1)?,
                ) else {
                    return Ok(false);
                };
                let bias_t = match bias_i.and_then(|i| node.inputs.get(i)).filter(|v| !v.is_empty()) {
                    Some(v) => match self.konst(v) {
                        Some(t) => Some(t),
                        None => return Ok(false),
                    },
                    None => None,
                };
                let (kind, w_axis) = match q {
                    QOp::QLinearConv(c) => (Affine::Conv(c.clone()), 0),
                    QOp::QLinearMatMul => (Affine::Gemm { trans_b: false }, 1),
                    QOp::QGemm {
                        trans_a: false,
                        trans_b,
                    } => (Affine::Gemm { trans_b: *trans_b }, if *trans_b { 0 } else { 1 }),
                    _ => return Err(Error::InvalidArgument("QGemm with transA=1".into())),
                };
                // The bias is int32 in accumulator units (scale x_scale * w_scale).
                let unit = Params {
                    scale: vec![],
                    zero: vec![],
                    dtype: None,
                };
                let spec = AffineSpec {
                    x: x.clone(),
                    px: px.per_tensor("x")?,
                    w,
                    pw: &pw,
                    w_axis,
                    bias: BiasSpec {
                        int: bias_t.map(|t| (t, &unit)),
                        real: None,
                    },
                    matmul: matches!(q, QOp::QLinearMatMul),
                };
                let op = self.affine_op(&node.name, kind, &spec, &qz)?;
                (op, vec![x], qz)
            }
            QOp::QLinearAdd => {
                let b = node.inputs.get(3).cloned().unwrap_or_default();
                let (Some(pa), Some(pb), Some(qz), Some(_)) = (
                    self.params(node, 1, 2, "A")?,
                    self.params(node, 4, 5, "B")?,
                    quantizer(self, 6, 7)?,
                    int_or_const(self, &b),
                ) else {
                    return Ok(false);
                };
                self.add(node, (&x, pa.per_tensor("A")?), (&b, pb.per_tensor("B")?), &qz);
                return Ok(true);
            }
            QOp::QLinearConcat { axis } => {
                let Some(qz) = quantizer(self, 0, 1)? else {
                    return Ok(false);
                };
                let rest = &node.inputs[2..];
                let mut parts = Vec::new();
                for k in 0..rest.len() / 3 {
                    let v = &rest[3 * k];
                    let (Some(dt), Some(p)) = (
                        int_or_const(self, v),
                        self.params(node, 2 + 3 * k + 1, 2 + 3 * k + 2, "x")?,
                    ) else {
                        return Ok(false);
                    };
                    parts.push((v.clone(), p.per_tensor("x")?, dt));
                }
                self.concat(node, *axis, &parts, &qz)?;
                return Ok(true);
            }
            QOp::QLinearAveragePool(_) | QOp::QLinearGlobalAveragePool => {
                let (Some(px), Some(qz)) = (self.params(node, 1, 2, "x")?, quantizer(self, 3, 4)?) else {
                    return Ok(false);
                };
                let pool = match q {
                    QOp::QLinearAveragePool(p) => Some(p.clone()),
                    _ => None,
                };
                self.avg_pool(&node.name, pool, &x, px.per_tensor("x")?, &qz)?;
                return Ok(true);
            }
            QOp::QLinearLeakyRelu { .. } | QOp::QLinearSigmoid => {
                let (Some(px), Some(qz)) = (self.params(node, 1, 2, "x")?, quantizer(self, 3, 4)?) else {
                    return Ok(false);
                };
                let d = Deq {
                    int: x.clone(),
                    p: px.per_tensor("x")?,
                    dtype: xdt,
                    node: node.name.clone(),
                };
                let op: Box<dyn Op> = q.float_op().unwrap_or_else(|| Box::new(Identity));
                let bare = Node {
                    inputs: vec![x.clone()],
                    ..node.clone()
                };
                let t = self.float_table(&bare, op.as_ref(), &d, &qz)?;
                (IntOp::Table(Box::new(t)), vec![x], qz)
            }
            QOp::QuantizeLinear { .. } | QOp::DequantizeLinear { .. } => return Ok(false),
        };
        let (op, inputs, qz) = op;
        self.emit(&node.name, op, inputs, out, Some(qz.dtype));
        Ok(true)
    }
}

enum Affine {
    Conv(Conv),
    /// Gemm or MatMul (`trans_b`: the weight is `[m][k]`).
    Gemm {
        trans_b: bool,
    },
}

/// The bias of an affine layer: quantized (int32 and its parameters; empty parameters: in
/// accumulator units already) or real.
struct BiasSpec<'a> {
    int: Option<(&'a Tensor, &'a Params)>,
    real: Option<&'a Tensor>,
}

impl BiasSpec<'_> {
    /// The bias in accumulator units (`acc_scale[c] = x_scale * w_scale[c]`): the int32 values
    /// as they are when their scale is the accumulator's (as onnxruntime writes them), else
    /// the real bias divided by the accumulator scale, rounded half to even.
    fn resolve(&self, acc_scale: &[f32], m: usize, name: &str) -> Result<Vec<i32>> {
        let per = |len: usize| -> Result<()> {
            if len == 1 || len == m {
                Ok(())
            } else {
                Err(Error::InvalidArgument(format!(
                    "node '{name}': bias has {len} values for {m} outputs"
                )))
            }
        };
        let pick = |v: &[f32], c: usize| if v.len() == 1 { v[0] } else { v[c] };
        if let Some((t, p)) = self.int {
            per(t.len())?;
            let v: Vec<i64> = t.to_i64_vec()?;
            let get = |c: usize| if v.len() == 1 { v[0] } else { v[c] };
            let units = p.scale.is_empty()
                || (p.zero.iter().all(|&z| z == 0)
                    && (0..m).all(|c| pick(&p.scale, c).to_bits() == acc_scale[c].to_bits()));
            if units {
                return (0..m)
                    .map(|c| {
                        i32::try_from(get(c))
                            .map_err(|_| Error::InvalidArgument(format!("node '{name}': bias {} past int32", get(c))))
                    })
                    .collect();
            }
            let real: Vec<f32> = (0..m)
                .map(|c| {
                    let k = if p.scale.len() == 1 { 0 } else { c };
                    (get(c) - p.zero[k] as i64) as f32 * p.scale[k]
                })
                .collect();
            return Ok((0..m)
                .map(|c| (real[c] / acc_scale[c]).round_ties_even() as i32)
                .collect());
        }
        match self.real {
            None => Ok(vec![0; m]),
            Some(t) => {
                per(t.len())?;
                let v = t.to_f32_vec();
                Ok((0..m)
                    .map(|c| (pick(&v, c) / acc_scale[c]).round_ties_even() as i32)
                    .collect())
            }
        }
    }
}

struct AffineSpec<'a> {
    x: String,
    px: Param,
    w: &'a Tensor,
    pw: &'a Params,
    w_axis: i64,
    bias: BiasSpec<'a>,
    matmul: bool,
}

/// The integer-engine graph of a model quantized by another tool (see the module doc).
pub fn import_quantized(graph: &Graph) -> Result<Imported> {
    // Loading checked the constants already; a folded graph may have made new ones.
    graph.check_constant_inputs()?;
    let mut imp = Import {
        src: graph,
        ints: graph
            .runtime_inputs()
            .filter(|i| matches!(i.dtype, DType::U8 | DType::I8))
            .map(|i| (i.name.clone(), i.dtype))
            .collect(),
        deq: HashMap::new(),
        cdeq: HashMap::new(),
        materialized: HashSet::new(),
        absorbed: HashSet::new(),
        nodes: Vec::with_capacity(graph.nodes.len()),
        inits: Vec::new(),
        names: NameGen::new(graph),
        floats: Vec::new(),
    };
    for idx in 0..graph.nodes.len() {
        if imp.absorbed.contains(&idx) {
            continue;
        }
        let (name, op) = (graph.nodes[idx].name.clone(), graph.nodes[idx].op.op_type());
        imp.node(idx).map_err(|e| e.at_node(&name, op))?;
    }
    for o in &graph.outputs {
        imp.materialize(&o.name)?;
    }
    let mut out = Graph {
        name: graph.name.clone(),
        opset: graph.opset,
        nodes: imp.nodes,
        initializers: graph.initializers.clone(),
        inputs: graph.inputs.clone(),
        outputs: graph.outputs.clone(),
    };
    out.initializers.extend(imp.inits);
    out.sort()?;
    out.prune();
    Ok(Imported {
        graph: out,
        float_nodes: imp.floats,
    })
}
