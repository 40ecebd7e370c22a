//! The ONNX quantized operators that other tools (onnxruntime's quantizer and others) write:
//! QuantizeLinear / DequantizeLinear (QDQ models) and the QOperator ops QLinearConv,
//! QLinearMatMul and the com.microsoft QGemm, QLinearAdd, QLinearConcat,
//! QLinearAveragePool, QLinearGlobalAveragePool, QLinearLeakyRelu and QLinearSigmoid.
//!
//! Evaluated here as the ONNX definitions state them (the "reference" path, `run(mode="fake")`
//! for such a model): DequantizeLinear is `(x - zero) * scale` in f32, QuantizeLinear is
//! `saturate(round_half_even(x / scale) + zero)` with the f32 quotient; the integer products
//! (QLinearConv, QLinearMatMul, QGemm) accumulate `(x - x_zero) * (w - w_zero)` (exact in f32
//! below 2^24) and requantize by the f32 multiplier `x_scale * w_scale / y_scale`; the other
//! contrib ops dequantize, apply the float op and quantize. `ptq::import_quantized` lowers
//! them to the integer engine.

use crate::error::{Error, Result};
use crate::onnx::attrs::{AttrReader, AttrValue};
use crate::ops::facts::{expect_dtype, fact_error, in_op, optional, required};
use crate::ops::{
    input, norm_axis, Class, Concat, Conv, FromOnnx, GlobalPool, NodeFacts, Op, ParseCtx, Pool, Unary, ValueFact,
};
use crate::tensor::{DType, Tensor, TensorData};

pub const MS_DOMAIN: &str = "com.microsoft";

/// A quantized ONNX op.
#[derive(Debug, Clone, PartialEq)]
pub enum QOp {
    QuantizeLinear {
        axis: i64,
        out: Option<DType>,
    },
    DequantizeLinear {
        axis: i64,
    },
    QLinearConv(Conv),
    QLinearMatMul,
    /// com.microsoft QGemm (alpha 1; `C` an int32 bias in accumulator units).
    QGemm {
        trans_a: bool,
        trans_b: bool,
    },
    QLinearAdd,
    QLinearConcat {
        axis: i64,
    },
    QLinearAveragePool(Pool),
    QLinearGlobalAveragePool,
    QLinearLeakyRelu {
        alpha: f32,
    },
    QLinearSigmoid,
}

impl QOp {
    pub fn kind_name(&self) -> &'static str {
        match self {
            QOp::QuantizeLinear { .. } => "QuantizeLinear",
            QOp::DequantizeLinear { .. } => "DequantizeLinear",
            QOp::QLinearConv(_) => "QLinearConv",
            QOp::QLinearMatMul => "QLinearMatMul",
            QOp::QGemm { .. } => "QGemm",
            QOp::QLinearAdd => "QLinearAdd",
            QOp::QLinearConcat { .. } => "QLinearConcat",
            QOp::QLinearAveragePool(_) => "QLinearAveragePool",
            QOp::QLinearGlobalAveragePool => "QLinearGlobalAveragePool",
            QOp::QLinearLeakyRelu { .. } => "QLinearLeakyRelu",
            QOp::QLinearSigmoid => "QLinearSigmoid",
        }
    }

    pub fn kind_domain(&self) -> &'static str {
        match self {
            QOp::QuantizeLinear { .. } | QOp::DequantizeLinear { .. } | QOp::QLinearConv(_) | QOp::QLinearMatMul => "",
            _ => MS_DOMAIN,
        }
    }

    /// The `ai.onnx` quantized ops (`None` when `op_type` is not one).
    fn parse_onnx(op_type: &str, a: &AttrReader<'_>, opset: i64) -> Result<Option<QOp>> {
        Ok(Some(match op_type {
            "QuantizeLinear" => {
                // saturate only applies to float8 outputs, which are not supported.
                a.ignore(&["saturate"]);
                if a.int("block_size", 0)? != 0 {
                    return Err(a.unsupported("blocked quantization (block_size > 0)"));
                }
                let out = match a.int("output_dtype", 0)? {
                    0 => None,
                    2 => Some(DType::U8),
                    3 => Some(DType::I8),
                    other => {
                        return Err(a.unsupported(format!("output_dtype {other} (only uint8 and int8 are supported)")))
                    }
                };
                QOp::QuantizeLinear {
                    axis: if opset >= 13 { a.int("axis", 1)? } else { 1 },
                    out,
                }
            }
            "DequantizeLinear" => {
                if a.int("block_size", 0)? != 0 {
                    return Err(a.unsupported("blocked quantization (block_size > 0)"));
                }
                QOp::DequantizeLinear {
                    axis: if opset >= 13 { a.int("axis", 1)? } else { 1 },
                }
            }
            "QLinearConv" => QOp::QLinearConv(Conv::parse(a)?),
            "QLinearMatMul" => QOp::QLinearMatMul,
            _ => return Ok(None),
        }))
    }

    /// The com.microsoft ops.
    fn parse_ms(op_type: &str, a: &AttrReader<'_>) -> Result<QOp> {
        let no_channels_last = || -> Result<()> {
            if a.int("channels_last", 0)? != 0 {
                return Err(a.unsupported("channels_last=1 (only NCHW is supported)"));
            }
            Ok(())
        };
        Ok(match op_type {
            "QGemm" => {
                if a.float("alpha", 1.0)? != 1.0 {
                    return Err(a.unsupported("alpha != 1"));
                }
                QOp::QGemm {
                    trans_a: a.int("transA", 0)? != 0,
                    trans_b: a.int("transB", 0)? != 0,
                }
            }
            "QLinearAdd" => QOp::QLinearAdd,
            "QLinearConcat" => QOp::QLinearConcat {
                axis: a.int("axis", 1)?,
            },
            "QLinearAveragePool" => {
                no_channels_last()?;
                QOp::QLinearAveragePool(Pool::parse(a, false)?)
            }
            "QLinearGlobalAveragePool" => {
                no_channels_last()?;
                QOp::QLinearGlobalAveragePool
            }
            "QLinearLeakyRelu" => QOp::QLinearLeakyRelu {
                alpha: a.float("alpha", 0.01)?,
            },
            "QLinearSigmoid" => QOp::QLinearSigmoid,
            _ => return Err(a.unsupported(format!("com.microsoft op {op_type} is not supported"))),
        })
    }

    pub fn attrs(&self, opset: i64) -> Vec<(String, AttrValue)> {
        match self {
            QOp::QuantizeLinear { axis, out } => {
                let mut v = Vec::new();
                if *axis != 1 && opset >= 13 {
                    v.push(("axis".to_string(), AttrValue::Int(*axis)));
                }
                if let Some(dt) = out {
                    v.push(("output_dtype".to_string(), AttrValue::Int(dt.onnx_code() as i64)));
                }
                v
            }
            QOp::DequantizeLinear { axis } if *axis != 1 && opset >= 13 => {
                vec![("axis".to_string(), AttrValue::Int(*axis))]
            }
            QOp::QLinearConv(c) => c.attrs(),
            QOp::QGemm { trans_a, trans_b } => {
                let mut v = Vec::new();
                if *trans_a {
                    v.push(("transA".to_string(), AttrValue::Int(1)));
                }
                if *trans_b {
                    v.push(("transB".to_string(), AttrValue::Int(1)));
                }
                v
            }
            QOp::QLinearConcat { axis } => vec![("axis".to_string(), AttrValue::Int(*axis))],
            QOp::QLinearAveragePool(p) => p.attrs(),
            QOp::QLinearLeakyRelu { alpha } => vec![("alpha".to_string(), AttrValue::Float(*alpha))],
            _ => Vec::new(),
        }
    }

    /// Reference evaluation (see the module doc).
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        // Scales and zero points computed by the graph were not seen at load time.
        self.check_params(inputs)?;
        let x = input(inputs, 0, "x")?;
        let y = match self {
            QOp::QuantizeLinear { axis, out } => {
                let p = Params::read(inputs, 1, 2, "y")?;
                let dt = match (inputs.get(2).copied().flatten(), out) {
                    (Some(z), _) => z.dtype(),
                    (None, Some(d)) => *d,
                    (None, None) => DType::U8,
                };
                quantize(&x.to_f32s()?, x.shape(), &p, *axis, dt)?
            }
            QOp::DequantizeLinear { axis } => {
                let p = Params::read(inputs, 1, 2, "x")?;
                Tensor::from_vec(x.shape().to_vec(), dequantize(x, &p, *axis)?)?
            }
            QOp::QLinearConv(c) => {
                let px = Params::read(inputs, 1, 2, "x")?.per_tensor("x")?;
                let w = input(inputs, 3, "w")?;
                let pw = Params::read(inputs, 4, 5, "w")?;
                let py = Params::read(inputs, 6, 7, "y")?.per_tensor("y")?;
                let xc = centered(x, &Params::one(px), 1)?;
                let wc = centered(w, &pw, 0)?;
                let bias = inputs.get(8).copied().flatten().map(|b| b.to_f32_vec());
                let bias_t = match bias {
                    Some(b) => Some(Tensor::from_vec(vec![b.len()], b)?),
                    None => None,
                };
                let acc = c.eval(&[Some(&xc), Some(&wc), bias_t.as_ref()])?.swap_remove(0);
                requantize(acc, &px, &pw, &py, 1, out_dtype(inputs, 7)?)?
            }
            QOp::QLinearMatMul => {
                let pa = Params::read(inputs, 1, 2, "a")?.per_tensor("a")?;
                let b = input(inputs, 3, "b")?;
                let pb = Params::read(inputs, 4, 5, "b")?;
                let py = Params::read(inputs, 6, 7, "y")?.per_tensor("y")?;
                let ac = centered(x, &Params::one(pa), 0)?;
                // Per-column parameters of b lie on its last axis.
                let bc = centered(b, &pb, b.rank().saturating_sub(1) as i64)?;
                let acc = crate::ops::nn::matmul(&[Some(&ac), Some(&bc)])?.swap_remove(0);
                let axis = acc.rank().saturating_sub(1);
                requantize(acc, &pa, &pb, &py, axis, out_dtype(inputs, 7)?)?
            }
            QOp::QGemm { trans_a, trans_b } => {
                let pa = Params::read(inputs, 1, 2, "a")?.per_tensor("a")?;
                let b = input(inputs, 3, "b")?;
                let pb = Params::read(inputs, 4, 5, "b")?;
                let py = match inputs.get(7).copied().flatten() {
                    Some(_) => Params::read(inputs, 7, 8, "y")?.per_tensor("y")?,
                    None => {
                        return Err(Error::InvalidArgument(
                            "QGemm without y_scale (a float output) is not supported".into(),
                        ))
                    }
                };
                let ac = centered(x, &Params::one(pa), 0)?;
                // Per-output-column parameters: axis 0 of B when transposed, else axis 1.
                let bc = centered(b, &pb, if *trans_b { 0 } else { 1 })?;
                let c = inputs.get(6).copied().flatten().map(|c| c.cast(DType::F32));
                let g = crate::ops::Gemm {
                    alpha: 1.0,
                    beta: 1.0,
                    trans_a: *trans_a,
                    trans_b: *trans_b,
                };
                let acc = g.eval(&[Some(&ac), Some(&bc), c.as_ref()])?.swap_remove(0);
                requantize(acc, &pa, &pb, &py, 1, out_dtype(inputs, 8)?)?
            }
            QOp::QLinearAdd => {
                let pa = Params::read(inputs, 1, 2, "A")?.per_tensor("A")?;
                let b = input(inputs, 3, "B")?;
                let pb = Params::read(inputs, 4, 5, "B")?.per_tensor("B")?;
                let pc = Params::read(inputs, 6, 7, "C")?;
                let fa = Tensor::from_vec(x.shape().to_vec(), dequantize(x, &Params::one(pa), 1)?)?;
                let fb = Tensor::from_vec(b.shape().to_vec(), dequantize(b, &Params::one(pb), 1)?)?;
                let s = crate::ops::BinaryOp::Add.apply(&fa, &fb)?;
                quantize(s.as_slice::<f32>()?, s.shape(), &pc, 1, out_dtype(inputs, 7)?)?
            }
            QOp::QLinearConcat { axis } => {
                let py = Params::read(inputs, 0, 1, "Y")?;
                let dt = out_dtype(inputs, 1)?;
                let rest = &inputs[2..];
                if rest.is_empty() || !rest.len().is_multiple_of(3) {
                    return Err(Error::shape(format!(
                        "QLinearConcat takes Y_scale, Y_zero_point and (tensor, scale, zero point) triples; got {} inputs",
                        inputs.len()
                    )));
                }
                let mut parts = Vec::new();
                for k in 0..rest.len() / 3 {
                    let t = input(rest, 3 * k, "input")?;
                    let p = Params::read(rest, 3 * k + 1, 3 * k + 2, "input")?;
                    let f = dequantize(t, &p, 1)?;
                    parts.push(quantize(&f, t.shape(), &py, 1, dt)?);
                }
                let refs: Vec<Option<&Tensor>> = parts.iter().map(Some).collect();
                crate::ops::movement::concat(*axis, &refs)?.swap_remove(0)
            }
            QOp::QLinearAveragePool(_)
            | QOp::QLinearGlobalAveragePool
            | QOp::QLinearLeakyRelu { .. }
            | QOp::QLinearSigmoid => {
                let px = Params::read(inputs, 1, 2, "X")?;
                let py = Params::read(inputs, 3, 4, "Y")?;
                let f = Tensor::from_vec(x.shape().to_vec(), dequantize(x, &px, 1)?)?;
                let op = self.float_op().unwrap_or_else(|| Box::new(crate::ops::Identity));
                let r = op.eval(&[Some(&f)])?.swap_remove(0);
                quantize(r.as_slice::<f32>()?, r.shape(), &py, 1, out_dtype(inputs, 4)?)?
            }
        };
        Ok(vec![y])
    }

    /// The output's facts, following `run`: the shape of the float op it stands for (on the
    /// quantized inputs' shapes), the dtype of the output's zero point (uint8 without one).
    fn facts(&self, inputs: &[Option<&ValueFact>], constants: &[Option<&Tensor>]) -> Result<ValueFact> {
        let op = self.kind_name();
        const QUANTIZED: [DType; 3] = [DType::U8, DType::I8, DType::I32];
        // A quantized input as the float tensor the reference computes on.
        let q = |i: usize, name: &str| -> Result<ValueFact> {
            let f = required(inputs, i, op, name)?;
            expect_dtype(op, f, name, &QUANTIZED)?;
            Ok(ValueFact::new(Some(DType::F32), f.shape.clone()))
        };
        let zero_dtype = |zi: usize| optional(inputs, zi).map_or(Some(DType::U8), |z| z.dtype);
        let only = |mut v: Vec<ValueFact>| v.swap_remove(0);
        let (shape, dtype) = match self {
            QOp::QuantizeLinear { out, .. } => {
                let x = required(inputs, 0, op, "x")?;
                expect_dtype(op, x, "x", &[DType::F32])?;
                let dtype = match (optional(inputs, 2), out) {
                    (Some(z), _) => z.dtype,
                    (None, Some(d)) => Some(*d),
                    (None, None) => Some(DType::U8),
                };
                (x.shape.clone(), dtype)
            }
            QOp::DequantizeLinear { .. } => (q(0, "x")?.shape, Some(DType::F32)),
            QOp::QLinearConv(c) => {
                let (x, w) = (q(0, "x")?, q(3, "w")?);
                // The bias is int32; only its length matters.
                let b = optional(inputs, 8).map(|b| ValueFact::new(Some(DType::F32), b.shape.clone()));
                (c.facts(op, &[Some(&x), Some(&w), b.as_ref()])?.shape, zero_dtype(7))
            }
            QOp::QLinearMatMul => {
                let (a, b) = (q(0, "a")?, q(3, "b")?);
                (
                    crate::ops::nn::matmul_facts(op, &[Some(&a), Some(&b)])?.shape,
                    zero_dtype(7),
                )
            }
            QOp::QGemm { trans_a, trans_b } => {
                if optional(inputs, 7).is_none() {
                    return Err(fact_error(op, "without y_scale (a float output) is not supported"));
                }
                let (a, b) = (q(0, "a")?, q(3, "b")?);
                let c = optional(inputs, 6).map(|c| ValueFact::new(Some(DType::F32), c.shape.clone()));
                let g = crate::ops::Gemm {
                    alpha: 1.0,
                    beta: 1.0,
                    trans_a: *trans_a,
                    trans_b: *trans_b,
                };
                let y = g
                    .output_facts(&[Some(&a), Some(&b), c.as_ref()], &[])
                    .map_err(in_op(op))?;
                (only(y).shape, zero_dtype(8))
            }
            QOp::QLinearAdd => {
                let (a, b) = (q(0, "A")?, q(3, "B")?);
                (
                    crate::ops::BinaryOp::Add.facts(&a, &b).map_err(in_op(op))?.shape,
                    zero_dtype(7),
                )
            }
            QOp::QLinearConcat { axis } => {
                let rest = inputs.get(2..).unwrap_or(&[]);
                if rest.is_empty() || !rest.len().is_multiple_of(3) {
                    return Err(fact_error(
                        op,
                        format!(
                            "takes Y_scale, Y_zero_point and (tensor, scale, zero point) triples; got {} inputs",
                            inputs.len()
                        ),
                    ));
                }
                let parts = (0..rest.len() / 3)
                    .map(|k| q(2 + 3 * k, "input"))
                    .collect::<Result<Vec<_>>>()?;
                let refs: Vec<Option<&ValueFact>> = parts.iter().map(Some).collect();
                let y = Concat { axis: *axis }.output_facts(&refs, &[]).map_err(in_op(op))?;
                (only(y).shape, zero_dtype(1))
            }
            QOp::QLinearAveragePool(_)
            | QOp::QLinearGlobalAveragePool
            | QOp::QLinearLeakyRelu { .. }
            | QOp::QLinearSigmoid => {
                let x = q(0, "X")?;
                let float = self.float_op().unwrap_or_else(|| Box::new(crate::ops::Identity));
                let y = float
                    .output_facts(&[Some(&x)], constants.get(..1).unwrap_or(&[]))
                    .map_err(in_op(op))?;
                (only(y).shape, zero_dtype(4))
            }
        };
        Ok(ValueFact::new(dtype, shape))
    }

    /// The scale / zero point pairs among the op's inputs (ONNX order) and the quantized
    /// tensor each describes; `n_inputs` sizes QLinearConcat's variadic triples.
    fn param_slots(&self, n_inputs: usize) -> Vec<ParamSlot> {
        let slot = |what, scale, tensor| ParamSlot {
            what,
            scale,
            zero: scale + 1,
            tensor,
            int32_zero: false,
        };
        match self {
            QOp::QuantizeLinear { .. } => vec![slot("y", 1, None)],
            QOp::DequantizeLinear { .. } => vec![ParamSlot {
                int32_zero: true,
                ..slot("x", 1, Some(0))
            }],
            QOp::QLinearConv(_) | QOp::QLinearMatMul => {
                let (a, b) = if matches!(self, QOp::QLinearConv(_)) {
                    ("x", "w")
                } else {
                    ("a", "b")
                };
                vec![slot(a, 1, Some(0)), slot(b, 4, Some(3)), slot("y", 6, None)]
            }
            QOp::QGemm { .. } => vec![slot("a", 1, Some(0)), slot("b", 4, Some(3)), slot("y", 7, None)],
            QOp::QLinearAdd => vec![slot("A", 1, Some(0)), slot("B", 4, Some(3)), slot("C", 6, None)],
            QOp::QLinearConcat { .. } => {
                let mut v = vec![slot("Y", 0, None)];
                v.extend((0..n_inputs.saturating_sub(2) / 3).map(|k| slot("input", 3 + 3 * k, Some(2 + 3 * k))));
                v
            }
            QOp::QLinearAveragePool(_)
            | QOp::QLinearGlobalAveragePool
            | QOp::QLinearLeakyRelu { .. }
            | QOp::QLinearSigmoid => vec![slot("X", 1, Some(0)), slot("Y", 3, None)],
        }
    }

    /// Checks the scales and zero points among `inputs` (`None`: unknown, not checked):
    /// every scale positive and finite; every zero point of the quantized type (uint8 or
    /// int8, the type of the tensor it describes, or of `output_dtype`), except the int32
    /// one of a DequantizeLinear, which must be 0. Called at load time on the constants
    /// (`Op::check_constant_inputs`) and before every evaluation on the actual values.
    pub fn check_params(&self, inputs: &[Option<&Tensor>]) -> Result<()> {
        let op = self.kind_name();
        for ps in self.param_slots(inputs.len()) {
            let what = ps.what;
            let Some(s) = inputs.get(ps.scale).copied().flatten() else {
                continue;
            };
            let z = inputs.get(ps.zero).copied().flatten();
            let p = Params::from_tensors(s, z, what)?;
            let Some(zdt) = p.dtype else { continue };
            if zdt == DType::I32 {
                if !ps.int32_zero {
                    return Err(Error::format(format!(
                        "{what}_zero_point must be uint8 or int8 (the quantized type of {op}), got int32 {:?}",
                        &p.zero[..p.zero.len().min(4)]
                    )));
                }
                if let Some(v) = p.zero.iter().find(|&&v| v != 0) {
                    return Err(Error::format(format!(
                        "{what}_zero_point of an int32 {op} must be 0, got {v}"
                    )));
                }
            }
            let tensor_dt = match ps.tensor {
                Some(t) => inputs.get(t).copied().flatten().map(|t| t.dtype()),
                None => match self {
                    QOp::QuantizeLinear { out, .. } => *out,
                    _ => None,
                },
            };
            if let Some(tdt) = tensor_dt {
                if tdt != zdt {
                    let of = if ps.tensor.is_some() {
                        format!("{what} is {}", tdt.name())
                    } else {
                        format!("output_dtype is {}", tdt.name())
                    };
                    return Err(Error::format(format!(
                        "{what}_zero_point is {} but {of}: they must be the same type",
                        zdt.name()
                    )));
                }
            }
        }
        Ok(())
    }

    /// The float op that a dequantize -> op -> quantize contrib op applies.
    pub fn float_op(&self) -> Option<Box<dyn Op>> {
        Some(match self {
            QOp::QLinearAveragePool(p) => Box::new(p.clone()),
            QOp::QLinearGlobalAveragePool => Box::new(GlobalPool { max: false }),
            QOp::QLinearLeakyRelu { alpha } => Box::new(Unary::LeakyRelu { alpha: *alpha }),
            QOp::QLinearSigmoid => Box::new(Unary::Sigmoid),
            _ => return None,
        })
    }
}

impl FromOnnx for QOp {
    fn from_onnx(cx: &ParseCtx) -> Result<Self> {
        match QOp::parse_onnx(cx.op_type, cx.attrs, cx.opset)? {
            Some(q) => Ok(q),
            None => QOp::parse_ms(cx.op_type, cx.attrs),
        }
    }
}

impl Op for QOp {
    fn op_type(&self) -> &'static str {
        self.kind_name()
    }
    fn domain(&self) -> &'static str {
        self.kind_domain()
    }
    fn to_attrs(&self, opset: i64) -> Vec<(String, AttrValue)> {
        self.attrs(opset)
    }
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        self.run(inputs)
    }
    fn output_facts(&self, inputs: &[Option<&ValueFact>], constants: &[Option<&Tensor>]) -> Result<Vec<ValueFact>> {
        Ok(vec![self.facts(inputs, constants)?])
    }
    fn check_constant_inputs(&self, inputs: &[Option<&Tensor>]) -> Result<()> {
        self.check_params(inputs)
    }
    /// Not DequantizeLinear, whose constant inputs (quantized weights and biases) the
    /// quantized-model import reads as integers.
    fn foldable(&self) -> bool {
        !matches!(self, QOp::DequantizeLinear { .. })
    }
    fn ptq_class(&self, _n: &NodeFacts) -> Class {
        Class::FloatIsland(format!("{} belongs to an already quantized model", self.kind_name()))
    }
}

/// Where one scale / zero point pair sits among a quantized op's inputs.
struct ParamSlot {
    /// How ONNX names the pair (`{what}_scale`, `{what}_zero_point`).
    what: &'static str,
    scale: usize,
    zero: usize,
    /// The input holding the quantized tensor the pair describes (`None`: the output).
    tensor: Option<usize>,
    /// Whether an int32 zero point (of value 0) is allowed: DequantizeLinear's.
    int32_zero: bool,
}

/// Scales and zero points of a quantized tensor (one, or one per slice of an axis).
#[derive(Debug, Clone, PartialEq)]
pub struct Params {
    pub scale: Vec<f32>,
    /// Same length as `scale` (0 when the model gives none).
    pub zero: Vec<i32>,
    /// The zero point's dtype (the quantized tensor's), if given.
    pub dtype: Option<DType>,
}

/// One scale and zero point.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Param {
    pub scale: f32,
    pub zero: i32,
}

impl Params {
    /// Reads the scale at input `si` and the optional zero point at `zi`; `what` names them.
    pub fn read(inputs: &[Option<&Tensor>], si: usize, zi: usize, what: &str) -> Result<Params> {
        let s = input(inputs, si, &format!("{what}_scale"))?;
        let z = inputs.get(zi).copied().flatten();
        Params::from_tensors(s, z, what)
    }

    pub fn from_tensors(s: &Tensor, z: Option<&Tensor>, what: &str) -> Result<Params> {
        let scale = s.as_slice::<f32>().map_err(|_| {
            Error::shape(format!(
                "{what}_scale must be float32, got {} (float16 and bfloat16 scales are not supported)",
                s.dtype().name()
            ))
        })?;
        if scale.is_empty() || s.rank() > 1 {
            return Err(Error::shape(format!(
                "{what}_scale must be a scalar or 1-D, got shape {:?} (blocked quantization is not supported)",
                s.shape()
            )));
        }
        // ONNX defines no computation for these (a scale divides; its sign would flip every
        // value): refused rather than run.
        if let Some((i, v)) = scale.iter().enumerate().find(|(_, v)| !(v.is_finite() && **v > 0.0)) {
            let at = if scale.len() > 1 {
                format!(" (element {i} of {})", scale.len())
            } else {
                String::new()
            };
            return Err(Error::format(format!(
                "{what}_scale must be positive and finite, got {v}{at}"
            )));
        }
        let (zero, dtype) = match z {
            None => (vec![0; scale.len()], None),
            Some(z) => {
                if !matches!(z.dtype(), DType::U8 | DType::I8 | DType::I32) {
                    return Err(Error::shape(format!(
                        "{what}_zero_point has dtype {}; uint8, int8 and int32 are supported",
                        z.dtype().name()
                    )));
                }
                let v: Vec<i32> = z.to_i64_vec()?.into_iter().map(|v| v as i32).collect();
                if v.len() != scale.len() {
                    return Err(Error::shape(format!(
                        "{what}_zero_point has {} values for {} scales",
                        v.len(),
                        scale.len()
                    )));
                }
                (v, Some(z.dtype()))
            }
        };
        Ok(Params {
            scale: scale.to_vec(),
            zero,
            dtype,
        })
    }

    pub fn one(p: Param) -> Params {
        Params {
            scale: vec![p.scale],
            zero: vec![p.zero],
            dtype: None,
        }
    }

    /// The one scale and zero point of a per-tensor quantization, or an error.
    pub fn per_tensor(&self, what: &str) -> Result<Param> {
        if self.scale.len() != 1 {
            return Err(Error::shape(format!(
                "{what} must be quantized per tensor, got {} scales",
                self.scale.len()
            )));
        }
        Ok(Param {
            scale: self.scale[0],
            zero: self.zero[0],
        })
    }

    /// (index of the parameter for each element, as a closure over flat indices): one
    /// parameter, or one per slice of `axis` of `shape`.
    fn indexer(&self, shape: &[usize], axis: i64) -> Result<impl Fn(usize) -> usize> {
        let n = self.scale.len();
        let (inner, dim) = if n == 1 {
            (1usize, 1usize)
        } else {
            let a = norm_axis(axis, shape.len())?;
            if shape[a] != n {
                return Err(Error::shape(format!(
                    "{n} per-axis scales for axis {axis} of shape {shape:?}"
                )));
            }
            (shape[a + 1..].iter().product(), n)
        };
        Ok(move |i: usize| if dim == 1 { 0 } else { (i / inner.max(1)) % dim })
    }
}

trait ToF32s {
    fn to_f32s(&self) -> Result<Vec<f32>>;
}
impl ToF32s for Tensor {
    fn to_f32s(&self) -> Result<Vec<f32>> {
        match self.data() {
            TensorData::F32(v) => Ok(v.clone()),
            _ => Err(Error::shape(format!(
                "QuantizeLinear takes float32 input, got {}",
                self.dtype().name()
            ))),
        }
    }
}

/// The dtype of the quantized output: the one of its zero point (input `zi`), else uint8.
fn out_dtype(inputs: &[Option<&Tensor>], zi: usize) -> Result<DType> {
    Ok(inputs.get(zi).copied().flatten().map_or(DType::U8, |z| z.dtype()))
}

fn range_of(dt: DType) -> Result<(i32, i32)> {
    match dt {
        DType::U8 => Ok((0, 255)),
        DType::I8 => Ok((-128, 127)),
        DType::I32 => Ok((i32::MIN, i32::MAX)),
        other => Err(Error::shape(format!(
            "quantized tensors are uint8, int8 or int32, not {}",
            other.name()
        ))),
    }
}

/// ONNX QuantizeLinear: `saturate(round_half_even(x / scale) + zero)`, the quotient in f32.
pub fn quantize(x: &[f32], shape: &[usize], p: &Params, axis: i64, dt: DType) -> Result<Tensor> {
    let (lo, hi) = range_of(dt)?;
    let idx = p.indexer(shape, axis)?;
    let v: Vec<i32> = x
        .iter()
        .enumerate()
        .map(|(i, &x)| {
            let k = idx(i);
            let q = (x / p.scale[k]).round_ties_even() as f64 + p.zero[k] as f64;
            q.clamp(lo as f64, hi as f64) as i32
        })
        .collect();
    ints_to_tensor(shape.to_vec(), v, dt)
}

pub(crate) fn ints_to_tensor(shape: Vec<usize>, v: Vec<i32>, dt: DType) -> Result<Tensor> {
    match dt {
        DType::U8 => Tensor::from_vec(shape, v.into_iter().map(|x| x.clamp(0, 255) as u8).collect::<Vec<_>>()),
        DType::I8 => Tensor::from_vec(
            shape,
            v.into_iter().map(|x| x.clamp(-128, 127) as i8).collect::<Vec<_>>(),
        ),
        _ => Tensor::from_vec(shape, v),
    }
}

fn ints_of(x: &Tensor) -> Result<Vec<i32>> {
    match x.dtype() {
        DType::U8 | DType::I8 | DType::I32 => Ok(x.to_i64_vec()?.into_iter().map(|v| v as i32).collect()),
        other => Err(Error::shape(format!(
            "a quantized tensor is uint8, int8 or int32, got {}",
            other.name()
        ))),
    }
}

/// ONNX DequantizeLinear: `(x - zero) * scale` in f32.
pub fn dequantize(x: &Tensor, p: &Params, axis: i64) -> Result<Vec<f32>> {
    let idx = p.indexer(x.shape(), axis)?;
    Ok(ints_of(x)?
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            let k = idx(i);
            (v - p.zero[k]) as f32 * p.scale[k]
        })
        .collect())
}

/// `x - zero` as exact floats (for the reference integer products).
fn centered(x: &Tensor, p: &Params, axis: i64) -> Result<Tensor> {
    let idx = p.indexer(x.shape(), axis)?;
    let v: Vec<f32> = ints_of(x)?
        .into_iter()
        .enumerate()
        .map(|(i, v)| (v - p.zero[idx(i)]) as f32)
        .collect();
    Tensor::from_vec(x.shape().to_vec(), v)
}

/// `saturate(round_half_even(acc * (x_scale * w_scale[c] / y_scale)) + y_zero)` in f32, the
/// channel `c` along `axis` of `acc` (one weight scale: the same multiplier everywhere).
fn requantize(acc: Tensor, px: &Param, pw: &Params, py: &Param, axis: usize, dt: DType) -> Result<Tensor> {
    let (lo, hi) = range_of(dt)?;
    let mult: Vec<f32> = pw.scale.iter().map(|&sw| px.scale * sw / py.scale).collect();
    let p = Params {
        scale: mult,
        zero: vec![0; pw.scale.len()],
        dtype: None,
    };
    let idx = p.indexer(acc.shape(), axis as i64)?;
    let v: Vec<i32> = acc
        .as_slice::<f32>()?
        .iter()
        .enumerate()
        .map(|(i, &a)| {
            let r = (a * p.scale[idx(i)]).round_ties_even() as f64 + py.zero as f64;
            r.clamp(lo as f64, hi as f64) as i32
        })
        .collect();
    ints_to_tensor(acc.shape().to_vec(), v, dt)
}
