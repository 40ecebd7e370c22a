//! Typed ops: the `Op` enum, its mapping from and to ONNX, and evaluation through the kernels.
//!
//! Adding an op: a variant here (with its attributes), a `parse` arm, a `to_onnx` arm, an
//! `eval` arm calling the op family's file, and a row in the README's supported-ops table.

pub mod conv;
pub mod elementwise;
pub mod fused;
pub mod matmul;
pub mod norm;
pub mod pool;
pub mod qlinear;
pub mod quantized;
pub mod scaling;
pub mod shape;

use crate::error::{Error, Result};
use crate::graph::{AttrReader, AttrValue};
use crate::tensor::{DType, Tensor};
pub use conv::{Conv, Padding};
pub use elementwise::{BinaryOp, Clip, Unary};
pub use matmul::Gemm;
pub use norm::{Lrn, Softmax};
pub use pool::Pool;
pub use scaling::{QuantBounds, Scaling};
pub use shape::{Pad, PadMode, Resize, SliceAttrs};

/// Newest `ai.onnx` opset whose semantics the engine follows for every op it knows.
pub const MAX_OPSET: i64 = 23;

#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    Conv(Conv),
    Gemm(Gemm),
    MatMul,
    Binary(BinaryOp),
    Sum,
    Unary(Unary),
    Clip(Clip),
    Softmax(Softmax),
    BatchNorm {
        epsilon: f32,
    },
    Lrn(Lrn),
    Pool(Pool),
    GlobalPool {
        max: bool,
    },
    Flatten {
        axis: i64,
    },
    Reshape {
        allowzero: bool,
    },
    Transpose {
        perm: Option<Vec<usize>>,
    },
    Concat {
        axis: i64,
    },
    Slice(Option<SliceAttrs>),
    Pad(Pad),
    Squeeze {
        axes: Option<Vec<i64>>,
    },
    Unsqueeze {
        axes: Option<Vec<i64>>,
    },
    Identity,
    Dropout,
    Resize(Resize),
    Constant(Tensor),
    ConstantOfShape(Tensor),
    Shape {
        start: i64,
        end: Option<i64>,
    },
    Gather {
        axis: i64,
    },
    Cast {
        to: DType,
    },
    /// PTQ scaling / requantization point (not an ONNX op; exported as Mul [+ Round + Clip]).
    Scaling(Scaling),
    /// An op of the integer engine (built by `ptq::lower_int`, never parsed or exported).
    Int(quantized::IntOp),
    /// A convolution with packed weights and fused followers (built by
    /// `passes::inference_plan`, never parsed or exported).
    FusedConv(Box<fused::FusedConv>),
    /// A quantized ONNX op (QuantizeLinear, DequantizeLinear, QLinearConv ...) of a model
    /// quantized by another tool, evaluated as ONNX defines it.
    Q(qlinear::QOp),
}

/// The required input `i` of a node, or an error naming it.
pub(crate) fn input<'a>(inputs: &[Option<&'a Tensor>], i: usize, name: &str) -> Result<&'a Tensor> {
    inputs
        .get(i)
        .copied()
        .flatten()
        .ok_or_else(|| Error::shape(format!("missing required input #{i} ({name})")))
}

/// A possibly negative axis, checked against the rank (a scalar has no axis: callers index
/// the shape with the result).
pub(crate) fn norm_axis(axis: i64, rank: usize) -> Result<usize> {
    let r = rank as i64;
    let a = if axis < 0 { axis + r } else { axis };
    if a < 0 || a >= r {
        return Err(Error::shape(format!("axis {axis} out of range for rank {rank}")));
    }
    Ok(a as usize)
}

/// Dropout for inference: the identity. Opset 12 and newer can ask for training through the
/// `training_mode` input; with a non-zero ratio that drops random elements, which the engine
/// does not do, so it is refused rather than silently computed as the identity.
fn check_dropout_inference(inputs: &[Option<&Tensor>]) -> Result<()> {
    let first = |i: usize| {
        inputs
            .get(i)
            .copied()
            .flatten()
            .and_then(|t| t.to_f32_vec().first().copied())
    };
    let training = first(2).is_some_and(|v| v != 0.0);
    if training && first(1).unwrap_or(0.5) != 0.0 {
        return Err(Error::UnsupportedOp(vec![crate::error::UnsupportedEntry {
            op_type: "Dropout".into(),
            domain: String::new(),
            // The executor prefixes the error with the node's name.
            first_node: "this node".into(),
            count: 1,
            reason: "training_mode=true with a non-zero ratio (only inference is supported)".into(),
        }]));
    }
    Ok(())
}

fn ints(v: &[i64]) -> AttrValue {
    AttrValue::Ints(v.to_vec())
}

impl Op {
    /// Maps an ONNX node (`ai.onnx` domain) to a typed op, reading every attribute.
    pub fn parse(op_type: &str, domain: &str, attrs: &AttrReader<'_>, opset: i64) -> Result<Op> {
        if domain == qlinear::MS_DOMAIN {
            let op = Op::Q(qlinear::QOp::parse_ms(op_type, attrs)?);
            attrs.finish()?;
            return Ok(op);
        }
        if !(domain.is_empty() || domain == "ai.onnx") {
            return Err(attrs.unsupported(format!("domain '{domain}' is not supported")));
        }
        let a = attrs;
        if let Some(q) = qlinear::QOp::parse_onnx(op_type, a, opset)? {
            a.finish()?;
            return Ok(Op::Q(q));
        }
        let op = match op_type {
            "Conv" => Op::Conv(Conv::parse(a)?),
            "Gemm" => Op::Gemm(Gemm::parse(a)?),
            "MatMul" => Op::MatMul,
            "Add" | "Sub" | "Mul" | "Div" => {
                if a.int("broadcast", 1)? != 1 || a.has("axis") {
                    return Err(a.unsupported("legacy broadcast/axis attributes (opset < 7)"));
                }
                Op::Binary(match op_type {
                    "Add" => BinaryOp::Add,
                    "Sub" => BinaryOp::Sub,
                    "Mul" => BinaryOp::Mul,
                    _ => BinaryOp::Div,
                })
            }
            "Sum" => Op::Sum,
            "Relu" => Op::Unary(Unary::Relu),
            "LeakyRelu" => Op::Unary(Unary::LeakyRelu {
                alpha: a.float("alpha", 0.01)?,
            }),
            "Sigmoid" => Op::Unary(Unary::Sigmoid),
            "Tanh" => Op::Unary(Unary::Tanh),
            "HardSigmoid" => Op::Unary(Unary::HardSigmoid {
                alpha: a.float("alpha", 0.2)?,
                beta: a.float("beta", 0.5)?,
            }),
            "HardSwish" => Op::Unary(Unary::HardSwish),
            "Exp" => Op::Unary(Unary::Exp),
            "Neg" => Op::Unary(Unary::Neg),
            "Abs" => Op::Unary(Unary::Abs),
            "Sqrt" => Op::Unary(Unary::Sqrt),
            "Round" => Op::Unary(Unary::Round),
            "Floor" => Op::Unary(Unary::Floor),
            "Clip" => Op::Clip(Clip {
                min: a.float_opt("min")?,
                max: a.float_opt("max")?,
            }),
            "Softmax" => Op::Softmax(Softmax {
                axis: a.int("axis", if opset < 13 { 1 } else { -1 })?,
                legacy: opset < 13,
            }),
            "BatchNormalization" => {
                a.ignore(&["momentum"]);
                if a.int("spatial", 1)? != 1 {
                    return Err(a.unsupported("spatial=0"));
                }
                if a.int("training_mode", 0)? != 0 {
                    return Err(a.unsupported("training_mode=1 (only inference is supported)"));
                }
                if opset < 7 && a.has("is_test") {
                    a.ignore(&["is_test"]);
                }
                Op::BatchNorm {
                    epsilon: a.float("epsilon", 1e-5)?,
                }
            }
            "LRN" => {
                let size = a
                    .int_opt("size")?
                    .ok_or_else(|| Error::format(format!("node '{}' (LRN): size is required", a.node)))?;
                if size < 1 {
                    return Err(Error::format(format!(
                        "node '{}' (LRN): size must be >= 1, got {size}",
                        a.node
                    )));
                }
                Op::Lrn(Lrn {
                    size: size as usize,
                    alpha: a.float("alpha", 1e-4)?,
                    beta: a.float("beta", 0.75)?,
                    bias: a.float("bias", 1.0)?,
                })
            }
            "MaxPool" => Op::Pool(Pool::parse(a, true)?),
            "AveragePool" => Op::Pool(Pool::parse(a, false)?),
            "GlobalAveragePool" => Op::GlobalPool { max: false },
            "GlobalMaxPool" => Op::GlobalPool { max: true },
            "Flatten" => Op::Flatten {
                axis: a.int("axis", 1)?,
            },
            "Reshape" => {
                if a.has("shape") {
                    return Err(a.unsupported("shape as an attribute (opset < 5)"));
                }
                Op::Reshape {
                    allowzero: a.int("allowzero", 0)? != 0,
                }
            }
            "Transpose" => Op::Transpose {
                perm: a.usizes_opt("perm")?,
            },
            "Concat" => Op::Concat {
                axis: a.int("axis", 1)?,
            },
            "Slice" => {
                if opset < 10 {
                    let starts = a.ints_opt("starts")?.unwrap_or_default();
                    let ends = a.ints_opt("ends")?.unwrap_or_default();
                    Op::Slice(Some(SliceAttrs {
                        starts,
                        ends,
                        axes: a.ints_opt("axes")?,
                    }))
                } else {
                    Op::Slice(None)
                }
            }
            "Pad" => {
                let mode = match a.string("mode", "constant")?.as_str() {
                    "constant" => PadMode::Constant,
                    "reflect" => PadMode::Reflect,
                    "edge" => PadMode::Edge,
                    other => return Err(a.unsupported(format!("mode '{other}'"))),
                };
                let pads = if opset < 11 {
                    a.ints_opt("pads")?.or(a.ints_opt("paddings")?)
                } else {
                    None
                };
                Op::Pad(Pad {
                    mode,
                    pads,
                    value: a.float("value", 0.0)?,
                })
            }
            "Squeeze" => Op::Squeeze {
                axes: a.ints_opt("axes")?,
            },
            "Unsqueeze" => Op::Unsqueeze {
                axes: a.ints_opt("axes")?,
            },
            "Identity" => Op::Identity,
            "Dropout" => {
                a.ignore(&["ratio", "seed", "is_test"]);
                Op::Dropout
            }
            "Resize" | "Upsample" => {
                let mode = a.string("mode", "nearest")?;
                if mode != "nearest" {
                    return Err(a.unsupported(format!("mode '{mode}' (only nearest is supported)")));
                }
                let legacy = op_type == "Upsample" || opset < 11;
                a.ignore(&["cubic_coeff_a", "exclude_outside", "extrapolation_value"]);
                if a.int("antialias", 0)? != 0
                    || a.has("axes")
                    || a.string("keep_aspect_ratio_policy", "stretch")? != "stretch"
                {
                    return Err(a.unsupported("antialias, axes and keep_aspect_ratio_policy are not supported"));
                }
                let coord = if legacy {
                    "asymmetric".to_string()
                } else {
                    a.string("coordinate_transformation_mode", "half_pixel")?
                };
                let nearest = if legacy {
                    "simple".to_string()
                } else {
                    a.string("nearest_mode", "round_prefer_floor")?
                };
                if coord == "tf_crop_and_resize" {
                    return Err(a.unsupported("coordinate_transformation_mode tf_crop_and_resize"));
                }
                const COORD_MODES: [&str; 6] = [
                    "half_pixel",
                    "half_pixel_symmetric",
                    "pytorch_half_pixel",
                    "align_corners",
                    "asymmetric",
                    "tf_half_pixel_for_nn",
                ];
                if !COORD_MODES.contains(&coord.as_str()) {
                    return Err(a.unsupported(format!("coordinate_transformation_mode '{coord}'")));
                }
                const NEAREST_MODES: [&str; 4] = ["round_prefer_floor", "round_prefer_ceil", "floor", "ceil"];
                if !legacy && !NEAREST_MODES.contains(&nearest.as_str()) {
                    return Err(a.unsupported(format!("nearest_mode '{nearest}'")));
                }
                Op::Resize(Resize {
                    coord_mode: coord,
                    nearest_mode: nearest,
                    scales: a.floats_opt("scales")?,
                    scales_input: if legacy { 1 } else { 2 },
                    upsample: op_type == "Upsample",
                })
            }
            "Constant" => {
                let t = if let Some(t) = a.tensor_opt("value")? {
                    t
                } else if let Some(v) = a.float_opt("value_float")? {
                    Tensor::scalar(v)
                } else if let Some(v) = a.floats_opt("value_floats")? {
                    Tensor::from_vec(vec![v.len()], v)?
                } else if let Some(v) = a.int_opt("value_int")? {
                    Tensor::scalar(v)
                } else if let Some(v) = a.ints_opt("value_ints")? {
                    Tensor::from_vec(vec![v.len()], v)?
                } else {
                    return Err(a.unsupported("Constant without a value, value_float(s) or value_int(s)"));
                };
                Op::Constant(t)
            }
            // The default value is a one-element 1-D tensor, as the attribute must be (it is
            // written back as such).
            "ConstantOfShape" => Op::ConstantOfShape(match a.tensor_opt("value")? {
                Some(t) => t,
                None => Tensor::from_vec(vec![1], vec![0f32])?,
            }),
            "Shape" => Op::Shape {
                start: a.int("start", 0)?,
                end: a.int_opt("end")?,
            },
            "Gather" => Op::Gather {
                axis: a.int("axis", 0)?,
            },
            "Cast" => {
                let code = a.int("to", 0)?;
                let to = DType::from_onnx_code(code as i32)
                    .ok_or_else(|| a.unsupported(format!("cast to ONNX dtype {code}")))?;
                a.ignore(&["saturate"]);
                Op::Cast { to }
            }
            _ => return Err(a.unsupported("")),
        };
        a.finish()?;
        Ok(op)
    }

    /// The ONNX op type this op exports as.
    pub fn op_type(&self) -> &'static str {
        match self {
            Op::Conv(_) => "Conv",
            Op::Gemm(_) => "Gemm",
            Op::MatMul => "MatMul",
            Op::Binary(b) => b.name(),
            Op::Sum => "Sum",
            Op::Unary(u) => u.name(),
            Op::Clip(_) => "Clip",
            Op::Softmax(_) => "Softmax",
            Op::BatchNorm { .. } => "BatchNormalization",
            Op::Lrn(_) => "LRN",
            Op::Pool(p) => {
                if p.max {
                    "MaxPool"
                } else {
                    "AveragePool"
                }
            }
            Op::GlobalPool { max: true } => "GlobalMaxPool",
            Op::GlobalPool { max: false } => "GlobalAveragePool",
            Op::Flatten { .. } => "Flatten",
            Op::Reshape { .. } => "Reshape",
            Op::Transpose { .. } => "Transpose",
            Op::Concat { .. } => "Concat",
            Op::Slice(_) => "Slice",
            Op::Pad(_) => "Pad",
            Op::Squeeze { .. } => "Squeeze",
            Op::Unsqueeze { .. } => "Unsqueeze",
            Op::Identity => "Identity",
            Op::Dropout => "Dropout",
            Op::Resize(r) => {
                if r.upsample {
                    "Upsample"
                } else {
                    "Resize"
                }
            }
            Op::Constant(_) => "Constant",
            Op::ConstantOfShape(_) => "ConstantOfShape",
            Op::Shape { .. } => "Shape",
            Op::Gather { .. } => "Gather",
            Op::Cast { .. } => "Cast",
            Op::Scaling(_) => "Scaling",
            Op::Int(i) => i.name(),
            Op::FusedConv(f) => f.name(),
            Op::Q(q) => q.name(),
        }
    }

    /// The ONNX domain of the op ("" for ai.onnx).
    pub fn domain(&self) -> &'static str {
        match self {
            Op::Q(q) => q.domain(),
            _ => "",
        }
    }

    /// Whether constant folding may evaluate the op: not DequantizeLinear, whose constant
    /// inputs (quantized weights and biases) the quantized-model import reads as integers.
    pub fn foldable(&self) -> bool {
        !matches!(self, Op::Q(qlinear::QOp::DequantizeLinear { .. }))
    }

    /// Attributes to write back to ONNX (only non-defaults, so they are valid in old opsets).
    pub fn to_attrs(&self, opset: i64) -> Vec<(String, AttrValue)> {
        let one = |k: &str, v: AttrValue| vec![(k.to_string(), v)];
        match self {
            Op::Conv(c) => c.to_attrs(),
            Op::Gemm(g) => g.to_attrs(),
            Op::Unary(Unary::LeakyRelu { alpha }) => one("alpha", AttrValue::Float(*alpha)),
            Op::Unary(Unary::HardSigmoid { alpha, beta }) => vec![
                ("alpha".into(), AttrValue::Float(*alpha)),
                ("beta".into(), AttrValue::Float(*beta)),
            ],
            Op::Clip(c) => {
                let mut v = Vec::new();
                if let Some(m) = c.min {
                    v.push(("min".into(), AttrValue::Float(m)));
                }
                if let Some(m) = c.max {
                    v.push(("max".into(), AttrValue::Float(m)));
                }
                v
            }
            Op::Softmax(s) => one("axis", AttrValue::Int(s.axis)),
            Op::BatchNorm { epsilon } => one("epsilon", AttrValue::Float(*epsilon)),
            Op::Lrn(l) => vec![
                ("size".into(), AttrValue::Int(l.size as i64)),
                ("alpha".into(), AttrValue::Float(l.alpha)),
                ("beta".into(), AttrValue::Float(l.beta)),
                ("bias".into(), AttrValue::Float(l.bias)),
            ],
            Op::Pool(p) => p.to_attrs(),
            Op::Flatten { axis } => one("axis", AttrValue::Int(*axis)),
            Op::Reshape { allowzero: true } => one("allowzero", AttrValue::Int(1)),
            Op::Transpose { perm: Some(p) } => one("perm", AttrValue::Ints(p.iter().map(|&x| x as i64).collect())),
            Op::Concat { axis } => one("axis", AttrValue::Int(*axis)),
            Op::Slice(Some(s)) => {
                let mut v = vec![
                    ("starts".to_string(), ints(&s.starts)),
                    ("ends".to_string(), ints(&s.ends)),
                ];
                if let Some(ax) = &s.axes {
                    v.push(("axes".into(), ints(ax)));
                }
                v
            }
            Op::Pad(p) => {
                let mut v = Vec::new();
                if p.mode != PadMode::Constant {
                    v.push(("mode".to_string(), AttrValue::String(p.mode.name().into())));
                }
                if let Some(pads) = &p.pads {
                    v.push(("pads".into(), ints(pads)));
                    if p.value != 0.0 {
                        v.push(("value".into(), AttrValue::Float(p.value)));
                    }
                }
                v
            }
            Op::Squeeze { axes: Some(a) } | Op::Unsqueeze { axes: Some(a) } => one("axes", ints(a)),
            Op::Resize(r) => {
                let mut v = Vec::new();
                if let Some(s) = &r.scales {
                    v.push(("scales".to_string(), AttrValue::Floats(s.clone())));
                }
                if opset >= 11 && !r.upsample && r.scales.is_none() {
                    v.push((
                        "coordinate_transformation_mode".into(),
                        AttrValue::String(r.coord_mode.clone()),
                    ));
                    v.push(("nearest_mode".into(), AttrValue::String(r.nearest_mode.clone())));
                }
                v.push(("mode".into(), AttrValue::String("nearest".into())));
                v
            }
            Op::Constant(t) => one("value", AttrValue::Tensor(t.clone())),
            Op::ConstantOfShape(t) => one("value", AttrValue::Tensor(t.clone())),
            Op::Shape { start, end } => {
                let mut v = Vec::new();
                if *start != 0 {
                    v.push(("start".to_string(), AttrValue::Int(*start)));
                }
                if let Some(e) = end {
                    v.push(("end".into(), AttrValue::Int(*e)));
                }
                v
            }
            Op::Gather { axis } => one("axis", AttrValue::Int(*axis)),
            Op::Cast { to } => one("to", AttrValue::Int(to.onnx_code() as i64)),
            Op::Q(q) => q.to_attrs(opset),
            _ => Vec::new(),
        }
    }

    /// Number of outputs the engine computes (extra ONNX outputs such as Dropout's mask or
    /// MaxPool's indices are not produced).
    pub fn num_outputs(&self) -> usize {
        1
    }

    /// Whether `eval_in_place` can reuse the first input's buffer as the output.
    pub fn has_in_place(&self) -> bool {
        if let Op::FusedConv(f) = self {
            // Its first input is the residual, whose buffer becomes the output.
            return f.residual;
        }
        matches!(
            self,
            Op::Unary(_)
                | Op::Binary(_)
                | Op::Scaling(_)
                | Op::Clip(_)
                | Op::Identity
                | Op::Dropout
                | Op::BatchNorm { .. }
                | Op::Reshape { .. }
                | Op::Flatten { .. }
        )
    }

    /// Runs the op writing into its first input `x`, which no one else needs any more (the
    /// executor hands it over after its last reader). Saves an allocation and a copy per
    /// activation. `rest` are the inputs after the first. Only for ops with `has_in_place`.
    pub fn eval_in_place(&self, mut x: Tensor, rest: &[Option<&Tensor>]) -> Result<Tensor> {
        let mut all: Vec<Option<&Tensor>> = Vec::with_capacity(rest.len() + 1);
        all.push(None);
        all.extend_from_slice(rest);
        match self {
            Op::Unary(u) => {
                u.apply_slice(x.as_mut_slice::<f32>()?);
                Ok(x)
            }
            Op::Clip(c) => {
                let (lo, hi) = c.bounds(&all)?;
                crate::kernels::elementwise::unary_inplace(x.as_mut_slice::<f32>()?, |v| Clip::apply(v, lo, hi));
                Ok(x)
            }
            Op::Identity => Ok(x),
            Op::FusedConv(f) if f.residual => f.eval_into(Some(x), rest),
            Op::Scaling(sc) => sc.eval_in_place(x),
            Op::Binary(op) => op.apply_in_place(x, input(&all, 1, "B")?),
            Op::Dropout => {
                check_dropout_inference(&all)?;
                Ok(x)
            }
            Op::BatchNorm { epsilon } => norm::batch_norm_in_place(*epsilon, x, &all),
            Op::Reshape { allowzero } => {
                let spec = input(&all, 1, "shape")?.to_i64_vec()?;
                let shape = shape::reshape_target(x.shape(), &spec, *allowzero)?;
                x.reshape(shape)
            }
            Op::Flatten { axis } => {
                let shape = shape::flatten_shape(*axis, x.shape())?;
                x.reshape(shape)
            }
            _ => {
                all[0] = Some(&x);
                Ok(self.eval(&all)?.swap_remove(0))
            }
        }
    }

    /// Runs the op on its inputs (`None` for an omitted optional input).
    pub fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        match self {
            Op::Conv(c) => c.eval(inputs),
            Op::Gemm(g) => g.eval(inputs),
            Op::MatMul => matmul::matmul(inputs),
            Op::Binary(b) => elementwise::eval_binary(*b, inputs),
            Op::Sum => elementwise::eval_sum(inputs),
            Op::Unary(u) => u.eval(inputs),
            Op::Clip(c) => c.eval(inputs),
            Op::Softmax(s) => s.eval(inputs),
            Op::BatchNorm { epsilon } => norm::batch_norm(*epsilon, inputs),
            Op::Lrn(l) => l.eval(inputs),
            // Max pooling also runs on quantized tensors (QOperator models pool uint8 values).
            Op::Pool(p) if p.max && is_8bit(inputs) => quantized::IntOp::Pool(p.clone()).eval(inputs),
            Op::GlobalPool { max: true } if is_8bit(inputs) => quantized::IntOp::GlobalPool { max: true }.eval(inputs),
            Op::Pool(p) => p.eval(inputs),
            Op::GlobalPool { max } => pool::eval_global(*max, inputs),
            Op::Flatten { axis } => shape::flatten(*axis, inputs),
            Op::Reshape { allowzero } => shape::reshape(*allowzero, inputs),
            Op::Transpose { perm } => shape::transpose(perm, inputs),
            Op::Concat { axis } => shape::concat(*axis, inputs),
            Op::Slice(s) => shape::slice(s, inputs),
            Op::Pad(p) => p.eval(inputs),
            Op::Squeeze { axes } => shape::squeeze(axes, inputs),
            Op::Unsqueeze { axes } => shape::unsqueeze(axes, inputs),
            Op::Identity => Ok(vec![input(inputs, 0, "input")?.clone()]),
            Op::Dropout => {
                check_dropout_inference(inputs)?;
                Ok(vec![input(inputs, 0, "data")?.clone()])
            }
            Op::Resize(r) => r.eval(inputs),
            Op::Constant(t) => Ok(vec![t.clone()]),
            Op::ConstantOfShape(v) => shape::constant_of_shape(v, inputs),
            Op::Shape { start, end } => shape::shape_of(*start, *end, inputs),
            Op::Gather { axis } => shape::gather(*axis, inputs),
            Op::Cast { to } => shape::cast(*to, inputs),
            Op::Scaling(sc) => sc.eval(inputs),
            Op::Int(i) => i.eval(inputs),
            Op::FusedConv(f) => f.eval(inputs),
            Op::Q(q) => q.eval(inputs),
        }
    }
}

/// Whether the first input is an 8-bit integer tensor.
fn is_8bit(inputs: &[Option<&Tensor>]) -> bool {
    matches!(
        inputs.first().copied().flatten().map(Tensor::dtype),
        Some(DType::U8 | DType::I8)
    )
}
