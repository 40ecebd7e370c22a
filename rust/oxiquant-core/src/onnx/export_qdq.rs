//! QDQ export of a quantized graph: standard ONNX that any runtime with QuantizeLinear /
//! DequantizeLinear runs, and that onnxruntime fuses into its integer kernels.
//!
//! The quantized graph holds integers in f32 (see `quantize`). The export keeps that "integer
//! unit" form: every quantizer `clamp(round(x * f))` becomes `QuantizeLinear(x, 1/f)` ->
//! `DequantizeLinear(., 1)`, weights become int8 initializers read through
//! `DequantizeLinear(., r)` and biases int32 ones read through `DequantizeLinear(., r)`, where
//! `r` is 1, or, when the quantizer after an affine node has one factor per channel, that
//! factor over its largest one (ONNX runtimes requantize a convolution's output with one
//! scale, so the per-channel part moves into the weight scales: `x_scale * w_scale[c] /
//! y_scale` is then exactly the factor). Rounding is half to even in both, the integer ranges
//! are the two's complement ones ONNX saturates to; narrower widths than the 8-bit container
//! get a Clip. The dequantizers (float islands, outputs) stay multiplications.
//!
//! The form is the one onnxruntime fuses whole (checked on its optimized graph by
//! tests/interop/test_export_fusion.py): every activation is uint8 (a signed quantizer's
//! integers with zero point 128), since its DQ -> op -> Q fusions need one type on both sides;
//! every affine node reads a DequantizeLinear (values that went through Relu, MaxPool,
//! Concat, Split, nearest Resize ... after a quantizer are requantized with scale 1, the zero
//! point from their known integer range); a Relu or Clip that is the identity on the
//! integers it reads is left out. Weights (one scale per output channel where the factors
//! differ) have zero points all 0 (int8) or 128 (uint8), biases int32 read through a DequantizeLinear whose
//! scale is the input scale (1) times the weight scale, as onnxruntime's QLinearConv / QGemm
//! fusions require.

use super::ort_rounding;
use crate::error::{Error, Result};
use crate::graph::{Graph, NameGen};
use crate::onnx::{AttrValue, RawGraph, RawNode};
use crate::ops::movement::Split;
use crate::ops::{
    Clip, Concat, Conv, Dropout, Flatten, Gemm, GlobalPool, Identity, MatMul, Pad, PadMode, Pool, Reshape, Resize,
    Scaling, Slice, Squeeze, Transpose, Unary, Unsqueeze,
};
use crate::ptq::{PtqState, Stage};
use crate::tensor::Tensor;
use std::collections::{HashMap, HashSet};
use std::ops::RangeInclusive;

struct Writer {
    names: NameGen,
    nodes: Vec<RawNode>,
    inits: Vec<(String, Tensor)>,
    /// Initializers to store as INT4 (true) or UINT4 (false): their values are held in i8/u8
    /// (weights of 4 bits or fewer).
    int4: Vec<(String, bool)>,
}

impl Writer {
    fn fresh(&mut self, base: &str) -> String {
        self.names.fresh(base)
    }
    fn init(&mut self, base: &str, t: Tensor) -> String {
        let name = self.fresh(base);
        self.inits.push((name.clone(), t));
        name
    }
    /// `DequantizeLinear(ints, scale, 0)` over new initializers, `scale` one value or one per
    /// channel along `axis`; returns the name of the dequantized value.
    fn dequantized<T: crate::tensor::Element + Copy>(
        &mut self,
        base: &str,
        ints: Tensor,
        zero_point: T,
        scale: &[f32],
        axis: i64,
    ) -> Result<String> {
        let q = self.init(&format!("{base}_q"), ints);
        let zero = if scale.len() == 1 {
            Tensor::scalar(zero_point)
        } else {
            Tensor::from_vec(vec![scale.len()], vec![zero_point; scale.len()])?
        };
        let zp = self.init(&format!("{base}_zero_point"), zero);
        let sc = self.init(&format!("{base}_scale"), scalar_or_vec(scale)?);
        let out = self.fresh(base);
        self.node(
            &format!("{base}_dequantize"),
            "DequantizeLinear",
            vec![q, sc, zp],
            out.clone(),
            axis_attr(scale, axis),
        );
        Ok(out)
    }

    fn node(&mut self, name: &str, op: &str, inputs: Vec<String>, output: String, attrs: Vec<(String, AttrValue)>) {
        let name = self.fresh(name);
        self.nodes.push(RawNode {
            name,
            op_type: op.to_string(),
            domain: String::new(),
            inputs,
            outputs: vec![output],
            attrs,
        });
    }
}

fn scalar_or_vec(v: &[f32]) -> Result<Tensor> {
    if v.len() == 1 {
        Ok(Tensor::scalar(v[0]))
    } else {
        Tensor::from_vec(vec![v.len()], v.to_vec())
    }
}

fn axis_attr(v: &[f32], axis: i64) -> Vec<(String, AttrValue)> {
    if v.len() > 1 {
        vec![("axis".to_string(), AttrValue::Int(axis))]
    } else {
        Vec::new()
    }
}

/// Converts integer-valued floats to a narrower integer type, failing (naming the tensor)
/// if one does not fit.
fn to_ints<T: TryFrom<i64> + crate::tensor::Element>(v: &[f32], shape: Vec<usize>, what: &str) -> Result<Tensor> {
    let out: Option<Vec<T>> = v.iter().map(|&x| T::try_from(x as i64).ok()).collect();
    let out = out.ok_or_else(|| {
        Error::InvalidArgument(format!(
            "QDQ export: {what} has values outside the range of its integer type"
        ))
    })?;
    Tensor::from_vec(shape, out)
}

/// The integer type of exported weights.
///
/// The default is `Uint8`, exact on every CPU. `Int8` is onnxruntime's fast path on x86
/// (u8 x s8), but on CPUs without AVX-VNNI (AVX2 only) those kernels add pairs of products
/// into a saturating int16, which 8-bit weights with 8-bit activations overflow: on the
/// trained ResNet-20 (benches/export_agreement.py, 1000 CIFAR-10 images) int8 weights change
/// 59 top-1 predictions against oxiquant's engine (largest logit difference 13), uint8 ones
/// none. Weights of 7 bits or fewer (`weight_bits=7`) cannot overflow: with them `Int8` is
/// exact too. The speed of each is in benches/bench_zoo.py's table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightType {
    Int8,
    /// `w + 128` with zero point 128: onnxruntime then multiplies u8 x u8 pairs widened to
    /// 16 bits, exact on every CPU, where its AVX2 u8 x s8 kernels sum pairs into a saturating
    /// int16 and can overflow with 8-bit weights.
    Uint8,
}

/// The weight type an export was asked for: one of them, or `Auto` (the default), which
/// takes `Int8` when no u8 x s8 pair can overflow onnxruntime's saturating i16 sums (every
/// int8 weight within +-64: weights of 7 bits or fewer) and `Uint8` otherwise. With 7-bit
/// weights the int8 form runs on onnxruntime's fastest x86 kernels and gives the integer
/// engine's results on every CPU (benches/RESULTS.md, "Model zoo throughput").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightChoice {
    Auto,
    Fixed(WeightType),
}

/// Whether every int8 tensor of `raw` (weights and their zero points; activations are
/// uint8), in subgraphs too, lies within +-64: then `255 * 64 * 2 = 32640` bounds every pair
/// sum of onnxruntime's AVX2 u8 x s8 kernels, and they are exact.
pub fn int8_pairs_exact(raw: &RawGraph) -> bool {
    let small = |t: &Tensor| t.dtype() != crate::tensor::DType::I8 || t.to_f32_vec().iter().all(|v| v.abs() <= 64.0);
    raw.initializers.iter().all(|(_, t)| small(t))
        && raw.nodes.iter().all(|n| {
            n.attrs.iter().all(|(_, a)| match a {
                AttrValue::Tensor(t) => small(t),
                AttrValue::Graph(g) => int8_pairs_exact(g),
                _ => true,
            })
        })
}

/// The uint8 zero point that holds integers of a quantizer's range: 0 for unsigned ones,
/// 128 for signed ones (`[-128, 127]` is `[0, 255]` shifted). Every activation is uint8:
/// onnxruntime fuses DQ -> Conv/MatMul/Add/... -> Q only where the input and output types
/// are the same, and its x86 integer kernels take uint8 activations (int8 ones only with
/// int8 weights, and not on every CPU).
fn activation_zero_point(signed: bool) -> u8 {
    if signed {
        128
    } else {
        0
    }
}

/// The uint8 zero point for integers known to lie in `r`, if one holds them all.
fn zero_point_of_range(r: &RangeInclusive<i64>) -> Option<u8> {
    if *r.start() >= 0 && *r.end() <= 255 {
        Some(0)
    } else if *r.start() >= -128 && *r.end() <= 127 {
        Some(128)
    } else {
        None
    }
}

/// Requantizes `value` (integers in the unit of the quantizers, held by a uint8 with zero
/// point `zero_point`) through `QuantizeLinear(., 1)` -> `DequantizeLinear(., 1)`: exact, and
/// it shows onnxruntime the DQ -> op -> Q pattern it fuses into integer kernels. Returns the
/// dequantized value.
fn requantize_unit(w: &mut Writer, value: &str, zero_point: u8) -> String {
    let zp = w.init(&format!("{value}_zero_point"), Tensor::scalar(zero_point));
    let one = w.init(&format!("{value}_unit"), Tensor::scalar(1.0f32));
    let q = w.fresh(&format!("{value}_q"));
    let out = w.fresh(&format!("{value}_dq"));
    w.node(
        &format!("{value}_requantize"),
        "QuantizeLinear",
        vec![value.to_string(), one.clone(), zp.clone()],
        q.clone(),
        Vec::new(),
    );
    w.node(
        &format!("{value}_dequantize"),
        "DequantizeLinear",
        vec![q, one, zp],
        out.clone(),
        Vec::new(),
    );
    out
}

/// Gives the DequantizeLinear that writes `value` the scale `factor` (in place of its unit
/// scale, an initializer of its own) and the output `output`. False, changing nothing, if
/// `value` is not written by such a node.
fn fold_into_dequantize(w: &mut Writer, value: &str, factor: f32, output: &str) -> bool {
    let Some(i) = w
        .nodes
        .iter()
        .rposition(|d| d.op_type == "DequantizeLinear" && d.outputs.first().is_some_and(|o| o == value))
    else {
        return false;
    };
    let Some(scale) = w.nodes[i].inputs.get(1).cloned() else {
        return false;
    };
    let readers = w.nodes.iter().filter(|m| m.inputs.contains(&scale)).count();
    let Some(unit) = w.inits.iter_mut().find(|(k, _)| *k == scale) else {
        return false;
    };
    if readers != 1 || unit.1.len() != 1 || unit.1.to_f32_vec()[0] != 1.0 {
        return false;
    }
    unit.1 = Tensor::scalar(factor);
    w.nodes[i].outputs[0] = output.to_string();
    true
}

/// The values of `graph` that hold integers of a known range: a quantizer's outputs, and
/// what integer-preserving ops (max pooling, Relu, Round, reshapes, slices, zero padding,
/// concatenation) make of them.
fn integer_ranges(graph: &Graph) -> HashMap<String, RangeInclusive<i64>> {
    let mut ranges: HashMap<String, RangeInclusive<i64>> = HashMap::new();
    let union = |a: &RangeInclusive<i64>, b: &RangeInclusive<i64>| *a.start().min(b.start())..=*a.end().max(b.end());
    for n in &graph.nodes {
        let first = n.inputs.first().and_then(|v| ranges.get(v)).cloned();
        let op = n.op.as_ref();
        let unary = op.downcast_ref::<Unary>();
        let keeps_integers = unary == Some(&Unary::Round)
            || op.downcast_ref::<Pool>().is_some_and(|p| p.max)
            || op.downcast_ref::<GlobalPool>().is_some_and(|p| p.max)
            || op.is::<Identity>()
            || op.is::<Dropout>()
            || op.is::<Flatten>()
            || op.is::<Reshape>()
            || op.is::<Transpose>()
            || op.is::<Squeeze>()
            || op.is::<Unsqueeze>()
            || op.is::<Slice>()
            || op.is::<Split>()
            || op
                .downcast_ref::<Resize>()
                .is_some_and(|r| format!("{:?}", r.mode) == "Nearest" && r.coord_mode != "tf_crop_and_resize");
        let range = if let Some(b) = op.downcast_ref::<Scaling>().and_then(|sc| sc.quant) {
            Some(b.lo as i64..=b.hi as i64)
        } else if let Some(c) = op.downcast_ref::<Clip>() {
            // Integer bounds (from attributes or constant inputs) keep integers integers.
            let int = |v: f32| v.is_infinite() || v == v.round();
            match clip_bounds(graph, c, &n.inputs) {
                Some((lo, hi)) if int(lo) && int(hi) => first.map(|r| clamp_range(&r, lo, hi)),
                _ => None,
            }
        } else if unary == Some(&Unary::Relu) {
            first.map(|r| (*r.start()).max(0)..=(*r.end()).max(0))
        } else if keeps_integers {
            first
        } else if let Some(p) = op.downcast_ref::<Pad>() {
            match p.mode {
                PadMode::Reflect | PadMode::Edge | PadMode::Wrap => first,
                // The value as an attribute (opset < 11) or absent (zero); an input is not known.
                PadMode::Constant if n.inputs.len() < 3 && p.value == p.value.round() => {
                    first.map(|r| union(&r, &(p.value as i64..=p.value as i64)))
                }
                PadMode::Constant => None,
            }
        } else if op.is::<Concat>() {
            n.inputs
                .iter()
                .map(|v| ranges.get(v).cloned())
                .reduce(|a, b| a.zip(b).map(|(a, b)| union(&a, &b)))
                .flatten()
        } else {
            None
        };
        if let Some(r) = range {
            // Every output (Split's parts).
            for out in n.outputs.iter().filter(|o| !o.is_empty()) {
                ranges.insert(out.clone(), r.clone());
            }
        }
    }
    ranges
}

/// A Clip's bounds when they are constants (attributes or initializers); `None` otherwise.
fn clip_bounds(graph: &Graph, c: &Clip, inputs: &[String]) -> Option<(f32, f32)> {
    let mut consts: Vec<Option<&Tensor>> = vec![None];
    for v in inputs.iter().skip(1) {
        if v.is_empty() {
            consts.push(None);
        } else {
            consts.push(Some(graph.initializers.get(v)?));
        }
    }
    c.bounds(&consts).ok()
}

/// `r` clamped to `[lo, hi]` (integer or infinite bounds).
fn clamp_range(r: &RangeInclusive<i64>, lo: f32, hi: f32) -> RangeInclusive<i64> {
    let clamp = |v: i64| {
        let v = if lo.is_finite() { v.max(lo as i64) } else { v };
        if hi.is_finite() {
            v.min(hi as i64)
        } else {
            v
        }
    };
    clamp(*r.start())..=clamp(*r.end())
}

/// The QDQ graph, and the initializers to store as INT4 (true) / UINT4 (false). With any,
/// the graph's opset is raised to 21 (the first with 4-bit types).
pub fn to_qdq(graph: &Graph, state: &PtqState, weight_type: WeightType) -> Result<(RawGraph, Vec<(String, bool)>)> {
    state.expect("QDQ export", Stage::Quantized, &[])?;
    if state.no_quant {
        return Err(Error::InvalidArgument(
            "QDQ export: the model was made with no_quant=True and holds no integers; save it as 'fake'".into(),
        ));
    }
    if graph.opset < 13 {
        return Err(Error::InvalidArgument(format!(
            "QDQ export needs ai.onnx opset >= 13 (per-channel QuantizeLinear); the model is at opset {}. \
             Convert the float model first (onnx.version_converter.convert_version(model, 13))",
            graph.opset
        )));
    }
    for (name, info) in &state.scaling {
        if info.bits.is_some_and(|b| b > 8) {
            return Err(Error::InvalidArgument(format!(
                "QDQ export: quantizer '{name}' has {} bits; QDQ export supports up to 8",
                info.bits.unwrap_or(0)
            )));
        }
    }
    for (name, a) in &state.affine {
        if a.weight_bits.is_some_and(|b| b > 8) {
            return Err(Error::InvalidArgument(format!(
                "QDQ export: the weights of '{name}' have {} bits; QDQ export supports up to 8",
                a.weight_bits.unwrap_or(0)
            )));
        }
    }
    let mut w = Writer {
        names: NameGen::new(graph),
        nodes: Vec::new(),
        inits: Vec::new(),
        int4: Vec::new(),
    };
    // Quantizers with one factor per channel right after an affine node: that node's weights
    // carry the factors' ratios.
    let mut weight_ratio: HashMap<String, Vec<f32>> = HashMap::new();
    let mut quant_factor: HashMap<String, f32> = HashMap::new();
    for n in &graph.nodes {
        let Some(sc) = n.op.downcast_ref::<Scaling>() else {
            continue;
        };
        if sc.quant.is_none() || sc.factor.len() < 2 {
            continue;
        }
        let p = n.inputs.first().and_then(|v| graph.producer(v));
        let ok = p.is_some_and(|p| {
            state.affine.contains_key(&graph.nodes[p].name) && graph.consumers(&n.inputs[0]).len() == 1
        });
        let Some(p) = p.filter(|_| ok) else {
            return Err(Error::InvalidArgument(format!(
                "QDQ export: quantizer '{}' has per-channel factors but does not directly follow an affine node",
                n.name
            )));
        };
        let m = sc.factor.iter().copied().fold(0f32, f32::max);
        weight_ratio.insert(graph.nodes[p].name.clone(), sc.factor.iter().map(|f| f / m).collect());
        quant_factor.insert(n.name.clone(), m);
    }
    // Values renamed because the node producing them was dropped (a Relu after an unsigned
    // quantizer is the identity on its integers).
    let mut alias: HashMap<String, String> = HashMap::new();
    let resolve = |alias: &HashMap<String, String>, v: &str| alias.get(v).cloned().unwrap_or_else(|| v.to_string());
    let mut replaced_inits: HashSet<String> = HashSet::new();
    let int_ranges = integer_ranges(graph);
    // Values written by a DequantizeLinear, and the signedness of the integers every other
    // quantized value holds (from the quantizer upstream, through single-input ops).
    let mut dequantized: HashSet<String> = HashSet::new();
    let mut signed_of: HashMap<String, bool> = HashMap::new();
    for n in &graph.nodes {
        let inputs: Vec<String> = n.inputs.iter().map(|v| resolve(&alias, v)).collect();
        let scaling = n.op.downcast_ref::<Scaling>();
        if let Some(b) = scaling.and_then(|sc| sc.quant) {
            signed_of.insert(n.outputs[0].clone(), b.lo < 0.0);
            dequantized.insert(n.outputs[0].clone());
        } else if scaling.is_none()
            && (n.inputs.len() == 1 || n.op.is::<Pad>() || n.op.is::<Reshape>() || n.op.is::<Slice>())
        {
            if let Some(&sg) = inputs.first().and_then(|v| signed_of.get(v)) {
                signed_of.insert(n.outputs[0].clone(), sg);
            }
        }
        let relu_after_unsigned = n.op.downcast_ref::<Unary>() == Some(&Unary::Relu)
            && !graph.is_graph_output(&n.outputs[0])
            && graph.producer(&n.inputs[0]).is_some_and(|p| {
                graph.nodes[p]
                    .op
                    .downcast_ref::<Scaling>()
                    .is_some_and(|s| s.quant.is_some_and(|b| b.lo >= 0.0))
            });
        // A Clip whose bounds hold every integer its input can be (a ReLU6 after a quantizer
        // calibrated below 6): the identity, dropped so that it does not sit between a
        // DequantizeLinear and the op onnxruntime would fuse with it.
        let identity_clip = n.op.downcast_ref::<Clip>().is_some_and(|c| {
            !graph.is_graph_output(&n.outputs[0])
                && int_ranges
                    .get(&n.inputs[0])
                    .zip(clip_bounds(graph, c, &n.inputs))
                    .is_some_and(|(r, (lo, hi))| lo <= *r.start() as f32 && hi >= *r.end() as f32)
        });
        let affine = n.op.is::<Conv>() || n.op.is::<Gemm>() || n.op.is::<MatMul>();
        match scaling {
            Some(sc) => match sc.quant {
                Some(b) => {
                    let f = quant_factor.get(&n.name).copied().unwrap_or(sc.factor[0]);
                    let signed = b.lo < 0.0;
                    // Activations stay in 8-bit containers (with a Clip below 8 bits) at every
                    // width: onnxruntime 1.32's QDQ optimizations fail on int4 activations
                    // (a Clip or Relu before an int4 QuantizeLinear, int4 moved onto MaxPool).
                    let (lo8, hi8) = if signed { (-128.0, 127.0) } else { (0.0, 255.0) };
                    let zp = Tensor::scalar(activation_zero_point(signed));
                    let zp = w.init(&format!("{}_zero_point", n.name), zp);
                    // On 8-bit integers, a scale on which onnxruntime's f32 division rounds
                    // as the exact product does (`ort_rounding`).
                    let s = match int_ranges.get(&n.inputs[0]) {
                        Some(r) if r.end() - r.start() < 512 => {
                            let (lo, hi) = (b.lo as i64, b.hi as i64);
                            ort_rounding::division_scale(f, r.clone(), |v| v.clamp(lo, hi))
                        }
                        _ => 1.0 / f,
                    };
                    let scale = w.init(&format!("{}_scale", n.name), Tensor::scalar(s));
                    let one = w.init(&format!("{}_unit", n.name), Tensor::scalar(1.0f32));
                    let q = w.fresh(&format!("{}_q", n.outputs[0]));
                    w.node(
                        &format!("{}_quantize", n.name),
                        "QuantizeLinear",
                        vec![inputs[0].clone(), scale, zp.clone()],
                        q.clone(),
                        Vec::new(),
                    );
                    let narrower = b.lo > lo8 || b.hi < hi8;
                    let dq_out = if narrower {
                        w.fresh(&format!("{}_wide", n.outputs[0]))
                    } else {
                        n.outputs[0].clone()
                    };
                    w.node(
                        &format!("{}_dequantize", n.name),
                        "DequantizeLinear",
                        vec![q, one, zp],
                        dq_out.clone(),
                        Vec::new(),
                    );
                    if narrower {
                        let lo = w.init(&format!("{}_lo", n.name), Tensor::scalar(b.lo));
                        let hi = w.init(&format!("{}_hi", n.name), Tensor::scalar(b.hi));
                        w.node(
                            &format!("{}_clamp", n.name),
                            "Clip",
                            vec![dq_out, lo, hi],
                            n.outputs[0].clone(),
                            Vec::new(),
                        );
                    }
                }
                // A dequantizer read straight from a quantizer's DequantizeLinear (scale 1), its
                // only reader: the factor becomes that DequantizeLinear's scale, one f32
                // product of the same integer as the multiplication (bitwise the same) and one
                // pass less over the tensor (a float island after each convolution, as SiLU).
                None if sc.factor.len() == 1
                    && n.inputs[0] == inputs[0]
                    && dequantized.contains(&inputs[0])
                    && !graph.is_graph_output(&inputs[0])
                    && graph.consumers(&inputs[0]).len() == 1
                    && fold_into_dequantize(&mut w, &inputs[0], sc.factor[0], &n.outputs[0]) => {}
                None => {
                    let f = w.init(&format!("{}_factor", n.name), sc.factor_tensor()?);
                    w.node(
                        &n.name,
                        "Mul",
                        vec![inputs[0].clone(), f],
                        n.outputs[0].clone(),
                        Vec::new(),
                    );
                }
            },
            None if relu_after_unsigned || identity_clip => {
                alias.insert(n.outputs[0].clone(), inputs[0].clone());
            }
            None if affine && state.affine.contains_key(&n.name) => {
                let ratio = weight_ratio.get(&n.name).cloned().unwrap_or_else(|| vec![1.0]);
                let wname = &n.inputs[1];
                let wt = graph.initializers.get(wname).ok_or_else(|| {
                    Error::InvalidArgument(format!("QDQ export: the weight of '{}' is not a constant", n.name))
                })?;
                let axis = match n.op.downcast_ref::<Gemm>() {
                    Some(g) if !g.trans_b => 1,
                    _ => 0,
                };
                let what = format!("the weight of '{}'", n.name);
                let base = format!("{}_weight", n.name);
                let four_bits = state
                    .affine
                    .get(&n.name)
                    .and_then(|a| a.weight_bits)
                    .is_some_and(|b| b <= 4);
                let wdq = match weight_type {
                    // Weights of four bits or fewer: int4 (opset 21), whatever `weight_type`.
                    _ if four_bits => {
                        let wq = to_ints::<i8>(&wt.to_f32_vec(), wt.shape().to_vec(), &what)?;
                        let before = w.inits.len();
                        let name = w.dequantized::<i8>(&base, wq, 0, &ratio, axis)?;
                        // The values and the zero point just written.
                        let new: Vec<String> = w.inits[before..]
                            .iter()
                            .filter(|(_, t)| t.dtype() == crate::tensor::DType::I8)
                            .map(|(k, _)| k.clone())
                            .collect();
                        w.int4.extend(new.into_iter().map(|k| (k, true)));
                        name
                    }
                    WeightType::Int8 => {
                        let wq = to_ints::<i8>(&wt.to_f32_vec(), wt.shape().to_vec(), &what)?;
                        w.dequantized::<i8>(&base, wq, 0, &ratio, axis)?
                    }
                    WeightType::Uint8 => {
                        let shifted: Vec<f32> = wt.to_f32_vec().iter().map(|v| v + 128.0).collect();
                        let wq = to_ints::<u8>(&shifted, wt.shape().to_vec(), &what)?;
                        w.dequantized::<u8>(&base, wq, 128, &ratio, axis)?
                    }
                };
                replaced_inits.insert(wname.clone());
                // onnxruntime fuses DQ -> Conv -> Q: the input must come from a DequantizeLinear
                // (not, e.g., from a Relu or MaxPool after one).
                // The zero point: from the integers' range where it is known (through Concat,
                // Pad, Relu ...), else from the sign of the quantizer upstream.
                let zero_point = match (int_ranges.get(&n.inputs[0]), signed_of.get(&inputs[0])) {
                    (Some(r), _) => zero_point_of_range(r),
                    (None, Some(&sg)) => Some(activation_zero_point(sg)),
                    (None, None) => None,
                };
                let x = match zero_point {
                    Some(z) if !dequantized.contains(&inputs[0]) => requantize_unit(&mut w, &inputs[0], z),
                    _ => inputs[0].clone(),
                };
                let mut new_inputs = vec![x, wdq];
                if let Some(bname) = n.inputs.get(2).filter(|b| !b.is_empty()) {
                    let bt = graph.initializers.get(bname).ok_or_else(|| {
                        Error::InvalidArgument(format!("QDQ export: the bias of '{}' is not a constant", n.name))
                    })?;
                    let bq = to_ints::<i32>(
                        &bt.to_f32_vec(),
                        bt.shape().to_vec(),
                        &format!("the bias of '{}'", n.name),
                    )?;
                    // The bias scale is the input scale (1) times the weight scale.
                    let bdq = w.dequantized::<i32>(&format!("{}_bias", n.name), bq, 0, &ratio, 0)?;
                    replaced_inits.insert(bname.clone());
                    new_inputs.push(bdq);
                }
                w.nodes.push(RawNode {
                    name: n.name.clone(),
                    op_type: n.op.op_type().to_string(),
                    domain: String::new(),
                    inputs: new_inputs,
                    outputs: n.outputs.clone(),
                    attrs: n.op.to_attrs(graph.opset),
                });
            }
            None => {
                // (Control flow drops its outer-scope inputs and writes its bodies back.)
                let (inputs, attrs) = n.op.onnx_form(&inputs, graph.opset)?;
                w.nodes.push(RawNode {
                    name: n.name.clone(),
                    op_type: n.op.op_type().to_string(),
                    domain: String::new(),
                    inputs,
                    outputs: n.outputs.clone(),
                    attrs,
                })
            }
        }
    }
    let mut initializers: Vec<(String, Tensor)> = graph
        .initializers
        .iter()
        .filter(|(k, _)| !replaced_inits.contains(*k) || graph.consumers(k).len() > 1)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    initializers.extend(w.inits);
    let mut outputs = graph.outputs.clone();
    for o in &mut outputs {
        o.name = resolve(&alias, &o.name);
    }
    let opset = if w.int4.is_empty() {
        graph.opset
    } else {
        graph.opset.max(21)
    };
    Ok((
        RawGraph {
            name: graph.name.clone(),
            opset,
            nodes: w.nodes,
            initializers,
            inputs: graph.inputs.clone(),
            outputs,
        },
        w.int4,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(weights: Vec<i8>, sub: Option<RawGraph>) -> RawGraph {
        let n = weights.len();
        let nodes = sub
            .into_iter()
            .map(|g| RawNode {
                name: "if".into(),
                op_type: "If".into(),
                domain: String::new(),
                inputs: vec!["c".into()],
                outputs: vec!["y".into()],
                attrs: vec![("then_branch".into(), AttrValue::Graph(Box::new(g)))],
            })
            .collect();
        RawGraph {
            name: "g".into(),
            opset: 13,
            nodes,
            initializers: vec![
                ("w".into(), Tensor::from_vec(vec![n], weights).unwrap()),
                // Activation zero points are uint8: never a reason to fall back.
                ("z".into(), Tensor::scalar(255u8)),
            ],
            inputs: Vec::new(),
            outputs: Vec::new(),
        }
    }

    #[test]
    fn int8_is_exact_up_to_64_in_magnitude_in_subgraphs_too() {
        assert!(int8_pairs_exact(&graph(vec![-64, 63, 64, 0], None)));
        assert!(!int8_pairs_exact(&graph(vec![-65, 3], None)));
        assert!(!int8_pairs_exact(&graph(vec![1], Some(graph(vec![127], None)))));
        assert!(int8_pairs_exact(&graph(vec![1], Some(graph(vec![-64], None)))));
    }
}
