//! QOperator export: the integer engine's graph as ONNX integer operators, for runtimes that
//! only run those: QLinearConv, QLinearMatMul, QuantizeLinear / DequantizeLinear at the
//! edges, and the com.microsoft contrib ops where the standard has none (QGemm, QLinearAdd,
//! QLinearAveragePool, QLinearGlobalAveragePool).
//!
//! Like the QDQ export it works in integer units: every activation scale is 1 with zero
//! point 0, so a layer's requantization factor `f` is carried by `y_scale = 1 / f` (and, per
//! channel, by the weight scales `f_c / max f`). Weights are uint8 with zero point 128 by
//! default (see `export_qdq::WeightType`). A clamp narrower than the 8-bit container (a fused
//! Relu, a width below 8 bits) becomes a Clip on the integers.

use super::export_qdq::WeightType;
use super::ort_rounding;
use crate::error::{Error, Result};
use crate::graph::{Graph, NameGen};
use crate::int::{IntOp, Requant};
use crate::onnx::{AttrValue, RawGraph, RawNode};
use crate::ops::Pad;
use crate::ops::{MatMul, Op, Pool};
use crate::ops::{Scaling, Shape};
use crate::tensor::{DType, Tensor};
use std::collections::HashMap;

const MS: &str = "com.microsoft";

struct Writer {
    names: NameGen,
    nodes: Vec<RawNode>,
    inits: Vec<(String, Tensor)>,
    /// Integer values and their container.
    dtype: HashMap<String, DType>,
}

impl Writer {
    fn init(&mut self, base: &str, t: Tensor) -> String {
        let name = self.names.fresh(base);
        self.inits.push((name.clone(), t));
        name
    }
    fn f32s(&mut self, base: &str, v: &[f32]) -> Result<String> {
        let t = if v.len() == 1 {
            Tensor::scalar(v[0])
        } else {
            Tensor::from_vec(vec![v.len()], v.to_vec())?
        };
        Ok(self.init(base, t))
    }
    /// The integer `v` of a value held in the engine's container `dt`, as the export holds
    /// it: every 8-bit activation is uint8, the engine's int8 ones shifted by the zero point
    /// 128 (onnxruntime's integer kernels take uint8 x uint8 exactly; it has no int8 x uint8
    /// QLinearConv). Used for zero points (`v = 0`) and clamp bounds.
    fn int_scalar(&mut self, base: &str, dt: DType, v: i32) -> Result<String> {
        let t = match dt {
            DType::I8 => Tensor::scalar(v.saturating_add(128).clamp(0, 255) as u8),
            DType::U8 => Tensor::scalar(v.clamp(0, 255) as u8),
            DType::I32 => Tensor::scalar(v),
            other => {
                return Err(Error::InvalidArgument(format!(
                    "QOperator export: no integer container {}",
                    other.name()
                )))
            }
        };
        Ok(self.init(base, t))
    }
    fn node(
        &mut self,
        name: &str,
        op: &str,
        domain: &str,
        inputs: Vec<String>,
        output: String,
        attrs: Vec<(String, AttrValue)>,
    ) {
        let name = self.names.fresh(name);
        self.nodes.push(RawNode {
            name,
            op_type: op.to_string(),
            domain: domain.to_string(),
            inputs,
            outputs: vec![output],
            attrs,
        });
    }
    fn fresh(&mut self, base: &str) -> String {
        self.names.fresh(base)
    }

    /// Zero point(s) of values held in the engine's container `dt`: one, or `n` for a
    /// per-channel (axis 1) scale.
    fn zero_points(&mut self, base: &str, dt: DType, n: usize) -> Result<String> {
        if n == 1 {
            return self.int_scalar(base, dt, 0);
        }
        let t = match dt {
            DType::U8 => Tensor::from_vec(vec![n], vec![0u8; n])?,
            DType::I32 => Tensor::from_vec(vec![n], vec![0i32; n])?,
            _ => Tensor::from_vec(vec![n], vec![128u8; n])?,
        };
        Ok(self.init(base, t))
    }

    /// `DequantizeLinear(x, factor)` of integers held in `dt` (one factor, or one per
    /// channel of axis 1), written to `out`.
    fn dequantize(&mut self, name: &str, x: &str, dt: DType, factor: &[f32], out: &str) -> Result<()> {
        let scale = self.f32s(&format!("{name}_scale"), factor)?;
        let zp = self.zero_points(&format!("{name}_zero_point"), dt, factor.len())?;
        self.node(
            &format!("{name}_dequantize"),
            "DequantizeLinear",
            "",
            vec![x.to_string(), scale, zp],
            out.to_string(),
            axis_1(factor.len()),
        );
        Ok(())
    }

    /// `DequantizeLinear(x, 1)`: the integers as floats.
    fn dequantize_unit(&mut self, x: &str) -> Result<String> {
        let dt = self.dtype.get(x).copied().unwrap_or(DType::I32);
        let out = self.fresh(&format!("{x}_float"));
        self.dequantize(x, x, dt, &[1.0], &out)?;
        Ok(out)
    }

    /// `QuantizeLinear(x, 1/f)` into `rq`'s container, then its clamp; writes `out`.
    fn quantize(&mut self, name: &str, x: &str, rq: &Requant, out: &str) -> Result<()> {
        let inv: Vec<f32> = rq.factor.iter().map(|f| 1.0 / f).collect();
        let scale = self.f32s(&format!("{name}_scale"), &inv)?;
        let zp = self.zero_points(&format!("{name}_zero_point"), rq.out, inv.len())?;
        let q = self.clamped_target(name, rq, out);
        self.node(
            &format!("{name}_quantize"),
            "QuantizeLinear",
            "",
            vec![x.to_string(), scale, zp],
            q.clone(),
            axis_1(inv.len()),
        );
        self.clamp(name, rq, &q, out)
    }

    /// A `Requantize` of `x` (float, or integers held in `x_dt`) into `out`.
    fn requantize(&mut self, name: &str, x: &str, x_dt: Option<DType>, rq: &Requant, out: &str) -> Result<()> {
        match x_dt {
            None => self.quantize(name, x, rq, out),
            Some(dt) => {
                // DequantizeLinear(x, s) -> QuantizeLinear(., 1): one rounding of x * s, with s
                // chosen so that onnxruntime's f32 product rounds as the exact one does.
                let f = self.fresh(&format!("{name}_real"));
                let scales = ort_rounding_factors(rq, dt);
                self.dequantize(&format!("{name}_in"), x, dt, &scales, &f)?;
                let unit = Requant {
                    factor: vec![1.0],
                    ..rq.clone()
                };
                self.quantize(name, &f, &unit, out)
            }
        }
    }

    /// Where an op producing `rq`'s container writes before its clamp (or `out` if none).
    fn clamped_target(&mut self, name: &str, rq: &Requant, out: &str) -> String {
        if needs_clamp(rq) {
            self.fresh(&format!("{name}_wide"))
        } else {
            out.to_string()
        }
    }

    /// The Clip for bounds narrower than the container, from `from` to `out`.
    fn clamp(&mut self, name: &str, rq: &Requant, from: &str, out: &str) -> Result<()> {
        self.dtype.insert(from.to_string(), rq.out);
        self.dtype.insert(out.to_string(), rq.out);
        if needs_clamp(rq) {
            let lo = self.int_scalar(&format!("{name}_lo"), rq.out, rq.lo)?;
            let hi = self.int_scalar(&format!("{name}_hi"), rq.out, rq.hi)?;
            self.node(
                &format!("{name}_clamp"),
                "Clip",
                "",
                vec![from.to_string(), lo, hi],
                out.to_string(),
                Vec::new(),
            );
        }
        Ok(())
    }
}

/// The scales of a `DequantizeLinear(x, s) -> QuantizeLinear(., 1)` pair with which
/// onnxruntime gives `rq`'s exact results on every 8-bit input held in `dt`
/// (`ort_rounding`: its f32 product can round across a tie).
fn ort_rounding_factors(rq: &Requant, dt: DType) -> Vec<f32> {
    let inputs = match dt {
        DType::I8 => -128..=127,
        DType::U8 => 0..=255,
        // 32-bit inputs cannot be checked exhaustively (and do not reach a requantization
        // the export writes this way).
        _ => return rq.factor.clone(),
    };
    let x_zero = rq.x_zero as i64;
    let inputs = inputs.start() - x_zero..=inputs.end() - x_zero;
    let out = |r: i64| (r + rq.zero as i64).clamp(rq.lo as i64, rq.hi as i64);
    rq.factor
        .iter()
        .map(|&f| ort_rounding::product_scale(f, inputs.clone(), out))
        .collect()
}

/// A factor broadcast along axis 1 of a 4-D tensor (or one value).
fn d_factor_tensor(f: &[f32]) -> Result<Tensor> {
    if f.len() == 1 {
        Tensor::from_vec(vec![1], f.to_vec())
    } else {
        Tensor::from_vec(vec![f.len(), 1, 1], f.to_vec())
    }
}

/// The `axis` attribute of a per-channel (axis 1) Q/DQ with `n` scales.
fn axis_1(n: usize) -> Vec<(String, AttrValue)> {
    if n > 1 {
        vec![("axis".to_string(), AttrValue::Int(1))]
    } else {
        Vec::new()
    }
}

fn needs_clamp(rq: &Requant) -> bool {
    let (lo, hi) = if rq.out == DType::U8 { (0, 255) } else { (-128, 127) };
    rq.lo > lo || rq.hi < hi
}

/// Weights as the chosen 8-bit type, with their zero point (one per channel when `per_ch`).
fn weight_tensors(
    w: &mut Writer,
    base: &str,
    vals: &[i8],
    shape: Vec<usize>,
    channels: usize,
    wt: WeightType,
) -> Result<(String, String)> {
    let (t, zp) = match wt {
        WeightType::Int8 => (
            Tensor::from_vec(shape, vals.to_vec())?,
            if channels > 1 {
                Tensor::from_vec(vec![channels], vec![0i8; channels])?
            } else {
                Tensor::scalar(0i8)
            },
        ),
        WeightType::Uint8 => (
            Tensor::from_vec(shape, vals.iter().map(|&v| (v as i16 + 128) as u8).collect::<Vec<_>>())?,
            if channels > 1 {
                Tensor::from_vec(vec![channels], vec![128u8; channels])?
            } else {
                Tensor::scalar(128u8)
            },
        ),
    };
    Ok((
        w.init(&format!("{base}_quantized"), t),
        w.init(&format!("{base}_zero_point"), zp),
    ))
}

/// Weight scales and output scale of a layer's requantization: the whole factor goes into
/// the weight scale and the output scale is 1, so that the multiplier a runtime computes,
/// `x_scale * w_scale / y_scale`, is exactly the factor (no rounded reciprocal).
fn layer_scales(rq: &Requant) -> (Vec<f32>, f32) {
    (rq.factor.clone(), 1.0)
}

fn pool_attrs(p: &Pool, opset: i64) -> Vec<(String, AttrValue)> {
    p.to_attrs(opset)
}

/// The QOperator graph of an integer-engine graph (`int::lower::lower_to_integer`).
pub fn to_qoperator(graph: &Graph, weight_type: WeightType) -> Result<RawGraph> {
    // Tables of float islands are written as the island's ops.
    let expanded = crate::int::fuse_tables::expand_tables(graph);
    let graph = &expanded;
    if graph.opset < 13 {
        return Err(Error::InvalidArgument(format!(
            "QOperator export needs ai.onnx opset >= 13; the model is at opset {}",
            graph.opset
        )));
    }
    let mut w = Writer {
        names: NameGen::new(graph),
        nodes: Vec::new(),
        inits: Vec::new(),
        dtype: HashMap::new(),
    };
    let one = |w: &mut Writer, base: &str| w.f32s(base, &[1.0]);
    for n in &graph.nodes {
        // Requantizations folded into an add come back as the nodes they were, before it.
        let restored;
        let n = match n.op.downcast_ref::<IntOp>() {
            Some(IntOp::AddRequant { folded, .. }) if folded.iter().any(Option::is_some) => {
                let mut r = n.clone();
                for (slot, f) in folded.iter().enumerate() {
                    if let (Some(f), Some(x)) = (f, r.inputs.get_mut(slot)) {
                        let x_dt = w.dtype.get(x.as_str()).copied();
                        w.requantize(&f.node, x, x_dt, &f.requant, &f.output)?;
                        *x = f.output.clone();
                    }
                }
                restored = r;
                &restored
            }
            _ => n,
        };
        let x = n.inputs.first().cloned().unwrap_or_default();
        let out = n.outputs.first().cloned().unwrap_or_default();
        let x_dt = w.dtype.get(&x).copied();
        if let Some(sc) = n.op.downcast_ref::<Scaling>() {
            // A scaling left in float (into or out of a float island): a multiplication.
            if sc.quant.is_some() {
                return Err(Error::InvalidArgument(format!(
                    "QOperator export: quantizer '{}' was not lowered to the integer engine",
                    n.name
                )));
            }
            let f = w.init(&format!("{}_factor", n.name), sc.factor_tensor()?);
            w.node(&n.name, "Mul", "", vec![x, f], out, Vec::new());
            continue;
        }
        let Some(iop) = n.op.downcast_ref::<IntOp>() else {
            // Float ops, and shape ops that also run on integers as they are.
            let mut inputs = n.inputs.clone();
            if let (true, Some(dt)) = (n.op.is::<Pad>(), x_dt) {
                // Padding with the integer 0 is padding with the zero point.
                inputs.resize(inputs.len().max(3), String::new());
                inputs[2] = w.int_scalar(&format!("{}_value", n.name), dt, 0)?;
            }
            if let Some(dt) = x_dt {
                if !n.op.is::<Shape>() {
                    for o in &n.outputs {
                        w.dtype.insert(o.clone(), dt);
                    }
                }
            }
            w.nodes.push(RawNode {
                name: n.name.clone(),
                op_type: n.op.op_type().to_string(),
                domain: String::new(),
                inputs,
                outputs: n.outputs.clone(),
                attrs: n.op.to_attrs(graph.opset),
            });
            continue;
        };
        match iop {
            IntOp::Requant(rq) => w.requantize(&n.name, &x, x_dt, rq, &out)?,
            IntOp::Dequant(d) if x_dt.is_none() => {
                let f = w.init(&format!("{}_factor", n.name), d_factor_tensor(&d.factor)?);
                w.node(&n.name, "Mul", "", vec![x, f], out, Vec::new());
            }
            IntOp::Dequant(d) => w.dequantize(&n.name, &x, x_dt.unwrap_or(DType::I32), &d.factor, &out)?,
            IntOp::Conv(c) => {
                let dt = x_dt.unwrap_or(DType::I8);
                let (ws, ys) = layer_scales(&c.requant);
                let m = c.weight_shape[0];
                let per_ch = ws.len() > 1;
                let (wq, wzp) = weight_tensors(
                    &mut w,
                    &format!("{}_weight", n.name),
                    &c.weight_i8()?,
                    c.weight_shape.clone(),
                    if per_ch { m } else { 1 },
                    weight_type,
                )?;
                let xs = one(&mut w, &format!("{}_x_scale", n.name))?;
                let xzp = w.int_scalar(&format!("{}_x_zero_point", n.name), dt, 0)?;
                let wsc = w.f32s(&format!("{}_w_scale", n.name), &ws)?;
                let ysc = w.f32s(&format!("{}_y_scale", n.name), &[ys])?;
                let yzp = w.int_scalar(&format!("{}_y_zero_point", n.name), c.requant.out, 0)?;
                let b = w.init(&format!("{}_bias", n.name), Tensor::from_vec(vec![m], c.bias.clone())?);
                let target = w.clamped_target(&n.name, &c.requant, &out);
                w.node(
                    &n.name,
                    "QLinearConv",
                    "",
                    vec![x, xs, xzp, wq, wsc, wzp, ysc, yzp, b],
                    target.clone(),
                    c.conv.attrs(),
                );
                w.clamp(&n.name, &c.requant, &target, &out)?;
            }
            IntOp::Gemm(g) => {
                let dt = x_dt.unwrap_or(DType::I8);
                let (ws, ys) = layer_scales(&g.requant);
                let per_ch = ws.len() > 1;
                let xs = one(&mut w, &format!("{}_a_scale", n.name))?;
                let xzp = w.int_scalar(&format!("{}_a_zero_point", n.name), dt, 0)?;
                let wsc = w.f32s(&format!("{}_b_scale", n.name), &ws)?;
                let ysc = w.f32s(&format!("{}_y_scale", n.name), &[ys])?;
                let yzp = w.int_scalar(&format!("{}_y_zero_point", n.name), g.requant.out, 0)?;
                let target = w.clamped_target(&n.name, &g.requant, &out);
                if g.matmul {
                    if g.bias.iter().any(|&b| b != 0) {
                        return Err(Error::InvalidArgument(format!(
                            "QOperator export: MatMul '{}' has a bias",
                            n.name
                        )));
                    }
                    // B = W^T, [k][m].
                    let wi8 = g.weight_i8()?;
                    let mut t = vec![0i8; g.k * g.m];
                    for r in 0..g.m {
                        for c in 0..g.k {
                            t[c * g.m + r] = wi8[r * g.k + c];
                        }
                    }
                    let (wq, wzp) = weight_tensors(
                        &mut w,
                        &format!("{}_weight", n.name),
                        &t,
                        vec![g.k, g.m],
                        if per_ch { g.m } else { 1 },
                        weight_type,
                    )?;
                    w.node(
                        &n.name,
                        "QLinearMatMul",
                        "",
                        vec![x, xs, xzp, wq, wsc, wzp, ysc, yzp],
                        target.clone(),
                        Vec::new(),
                    );
                } else {
                    let (wq, wzp) = weight_tensors(
                        &mut w,
                        &format!("{}_weight", n.name),
                        &g.weight_i8()?,
                        vec![g.m, g.k],
                        if per_ch { g.m } else { 1 },
                        weight_type,
                    )?;
                    let b = w.init(
                        &format!("{}_bias", n.name),
                        Tensor::from_vec(vec![g.m], g.bias.clone())?,
                    );
                    w.node(
                        &n.name,
                        "QGemm",
                        MS,
                        vec![x, xs, xzp, wq, wsc, wzp, b, ysc, yzp],
                        target.clone(),
                        vec![("transB".to_string(), AttrValue::Int(1))],
                    );
                }
                w.clamp(&n.name, &g.requant, &target, &out)?;
            }
            IntOp::AddRequant { sub: false, requant, .. } if requant.factor.len() == 1 => {
                let a_dt = x_dt.unwrap_or(DType::I8);
                let b_dt = w.dtype.get(&n.inputs[1]).copied().unwrap_or(DType::I8);
                // Input scales f and output scale 1: the ratios the runtime takes are exactly f.
                let s1 = w.f32s(&format!("{}_ab_scale", n.name), &[requant.factor[0]])?;
                let azp = w.int_scalar(&format!("{}_a_zero_point", n.name), a_dt, 0)?;
                let bzp = w.int_scalar(&format!("{}_b_zero_point", n.name), b_dt, 0)?;
                let cs = one(&mut w, &format!("{}_c_scale", n.name))?;
                let czp = w.int_scalar(&format!("{}_c_zero_point", n.name), requant.out, 0)?;
                let target = w.clamped_target(&n.name, requant, &out);
                w.node(
                    &n.name,
                    "QLinearAdd",
                    MS,
                    vec![x, s1.clone(), azp, n.inputs[1].clone(), s1, bzp, cs, czp],
                    target.clone(),
                    Vec::new(),
                );
                w.clamp(&n.name, requant, &target, &out)?;
            }
            IntOp::AddRequant { sub, requant, .. } => {
                let a = w.dequantize_unit(&x)?;
                let b = w.dequantize_unit(&n.inputs[1])?;
                let s = w.fresh(&format!("{}_sum", n.name));
                w.node(
                    &n.name,
                    if *sub { "Sub" } else { "Add" },
                    "",
                    vec![a, b],
                    s.clone(),
                    Vec::new(),
                );
                w.quantize(&format!("{}_requantize", n.name), &s, requant, &out)?;
            }
            IntOp::Add { sub } => {
                // Sums of shifted uint8 values need their zero points: add the exact floats.
                let mut acc = w.dequantize_unit(&x)?;
                for (i, v) in n.inputs.iter().enumerate().skip(1) {
                    let b = w.dequantize_unit(v)?;
                    let o = if i + 1 == n.inputs.len() {
                        out.clone()
                    } else {
                        w.fresh(&format!("{}_partial", n.name))
                    };
                    w.node(
                        &n.name,
                        if *sub { "Sub" } else { "Add" },
                        "",
                        vec![acc, b],
                        o.clone(),
                        Vec::new(),
                    );
                    acc = o;
                }
                if n.inputs.len() == 1 {
                    w.node(&n.name, "Identity", "", vec![acc], out.clone(), Vec::new());
                }
                // A float value from here on (its readers quantize or scale it).
            }
            IntOp::Clip { lo, hi } => {
                let dt = x_dt.unwrap_or(DType::I32);
                let (tlo, thi) = match dt {
                    DType::I8 => (-128, 127),
                    DType::U8 => (0, 255),
                    _ => (i32::MIN, i32::MAX),
                };
                let l = w.int_scalar(&format!("{}_lo", n.name), dt, (*lo).clamp(tlo, thi))?;
                let h = w.int_scalar(&format!("{}_hi", n.name), dt, (*hi).clamp(tlo, thi))?;
                w.node(&n.name, "Clip", "", vec![x, l, h], out.clone(), Vec::new());
                w.dtype.insert(out, dt);
            }
            IntOp::Pool(p) if p.max => {
                w.node(
                    &n.name,
                    "MaxPool",
                    "",
                    vec![x.clone()],
                    out.clone(),
                    pool_attrs(p, graph.opset),
                );
                w.dtype.insert(out, x_dt.unwrap_or(DType::I8));
            }
            IntOp::Pool(p) => {
                let dt = x_dt.unwrap_or(DType::I8);
                let s1 = one(&mut w, &format!("{}_scale", n.name))?;
                let zp = w.int_scalar(&format!("{}_zero_point", n.name), dt, 0)?;
                let mut attrs = pool_attrs(p, graph.opset);
                attrs.retain(|(k, _)| k != "dilations");
                w.node(
                    &n.name,
                    "QLinearAveragePool",
                    MS,
                    vec![x, s1.clone(), zp.clone(), s1, zp],
                    out.clone(),
                    attrs,
                );
                w.dtype.insert(out, dt);
            }
            IntOp::GlobalPool { max: false } => {
                let dt = x_dt.unwrap_or(DType::I8);
                let s1 = one(&mut w, &format!("{}_scale", n.name))?;
                let zp = w.int_scalar(&format!("{}_zero_point", n.name), dt, 0)?;
                w.node(
                    &n.name,
                    "QLinearGlobalAveragePool",
                    MS,
                    vec![x, s1.clone(), zp.clone(), s1, zp],
                    out.clone(),
                    vec![("channels_last".to_string(), AttrValue::Int(0))],
                );
                w.dtype.insert(out, dt);
            }
            IntOp::Float { op, out: Some(DType::I32) } if op.is::<MatMul>() => {
                // The integer product of two quantized activations: written as the MatMul of
                // their unit-scale dequantized values (integer-valued floats, exact below
                // 2^24), which the Requantize after it quantizes as it quantizes a float
                // (a QuantizeLinear to int32 would need opset 21).
                let mut inputs = Vec::new();
                for v in &n.inputs {
                    inputs.push(if w.dtype.contains_key(v) {
                        w.dequantize_unit(v)?
                    } else {
                        v.clone()
                    });
                }
                w.node(&n.name, "MatMul", "", inputs, out.clone(), Vec::new());
            }
            IntOp::Float { op, out: None } | IntOp::GemmToFloat { op, .. } => {
                // Not an activation (shape arithmetic, a cast, a comparison): the op on the
                // exact integer values, its result as it is.
                let mut inputs = Vec::new();
                for v in &n.inputs {
                    inputs.push(if w.dtype.contains_key(v) {
                        w.dequantize_unit(v)?
                    } else {
                        v.clone()
                    });
                }
                w.node(&n.name, op.op_type(), "", inputs, out.clone(), op.to_attrs(graph.opset));
            }
            IntOp::GlobalPool { max: true } | IntOp::Float { .. } => {
                // Through floats: the op on the exact integer values, rounded back.
                let dt = match iop {
                    IntOp::Float { out: Some(out), .. } => *out,
                    _ => x_dt.unwrap_or(DType::I8),
                };
                let mut inputs = Vec::new();
                for v in &n.inputs {
                    inputs.push(if w.dtype.contains_key(v) {
                        w.dequantize_unit(v)?
                    } else {
                        v.clone()
                    });
                }
                let (op_type, attrs) = match iop {
                    IntOp::Float { op, .. } => (op.op_type(), op.to_attrs(graph.opset)),
                    _ => ("GlobalMaxPool", Vec::new()),
                };
                let f = w.fresh(&format!("{}_float", n.name));
                w.node(&n.name, op_type, "", inputs, f.clone(), attrs);
                let s1 = one(&mut w, &format!("{}_unit", n.name))?;
                let zp = w.int_scalar(&format!("{}_zero_point", n.name), dt, 0)?;
                w.node(
                    &format!("{}_requantize", n.name),
                    "QuantizeLinear",
                    "",
                    vec![f, s1, zp],
                    out.clone(),
                    Vec::new(),
                );
                w.dtype.insert(out, dt);
            }
            IntOp::IslandTable(_) => {
                return Err(Error::InvalidArgument(format!(
                    "QOperator export: table '{}' was not expanded into its island",
                    n.name
                )))
            }
            IntOp::Table(_) | IntOp::QAdd(_) | IntOp::AvgPool(_) => {
                return Err(Error::InvalidArgument(format!(
                    "QOperator export: node '{}' ({}) comes from a model quantized by another tool; save that model as it was loaded",
                    n.name,
                    iop.name()
                )))
            }
            IntOp::Pass => {
                w.node(&n.name, "Identity", "", vec![x], out.clone(), Vec::new());
                if let Some(dt) = x_dt {
                    w.dtype.insert(out, dt);
                }
            }
        }
    }
    let mut initializers: Vec<(String, Tensor)> =
        graph.initializers.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    initializers.extend(w.inits);
    Ok(RawGraph {
        name: graph.name.clone(),
        opset: graph.opset,
        nodes: w.nodes,
        initializers,
        inputs: graph.inputs.clone(),
        outputs: graph.outputs.clone(),
    })
}
