//! Element-wise activations, roundings and elementary functions of float32 tensors, one
//! type: the op is a kind. Abs, Neg, Sign and Relu also run on integers.

use crate::error::{Error, Result};
use crate::kernels::activation::{self, sigmoid, sigmoid_slice};
use crate::kernels::elementwise::unary_inplace;
use crate::onnx::attrs::AttrValue;
use crate::ops::facts::{expect_dtype, required};
use crate::ops::{input, Class, FromOnnx, NodeFacts, Op, ParseCtx, SignRule, ValueFact};
use crate::tensor::{DType, Tensor, TensorData};

use super::special::{gelu, gelu_tanh, mish};

/// Activations applied element by element.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Unary {
    Relu,
    LeakyRelu {
        alpha: f32,
    },
    Sigmoid,
    Tanh,
    HardSigmoid {
        alpha: f32,
        beta: f32,
    },
    HardSwish,
    Exp,
    Neg,
    Abs,
    Sqrt,
    /// Round half to even (ONNX Round).
    Round,
    Floor,
    // ---- activations ----
    Erf,
    /// Gelu-20: exact (`x Φ(x)`) or its tanh approximation.
    Gelu {
        tanh: bool,
    },
    Elu {
        alpha: f32,
    },
    Selu {
        alpha: f32,
        gamma: f32,
    },
    Celu {
        alpha: f32,
    },
    Softsign,
    Mish,
    ThresholdedRelu {
        alpha: f32,
    },
    // ---- elementary functions ----
    Reciprocal,
    Ceil,
    Sign,
    Log,
    Sin,
    Cos,
    Tan,
    Asin,
    Acos,
    Atan,
    Sinh,
    Cosh,
    Asinh,
    Acosh,
    Atanh,
}

const SELU_ALPHA: f32 = 1.673_263_2;
const SELU_GAMMA: f32 = 1.050_701;

impl Unary {
    pub fn name(self) -> &'static str {
        match self {
            Unary::Relu => "Relu",
            Unary::LeakyRelu { .. } => "LeakyRelu",
            Unary::Sigmoid => "Sigmoid",
            Unary::Tanh => "Tanh",
            Unary::HardSigmoid { .. } => "HardSigmoid",
            Unary::HardSwish => "HardSwish",
            Unary::Exp => "Exp",
            Unary::Neg => "Neg",
            Unary::Abs => "Abs",
            Unary::Sqrt => "Sqrt",
            Unary::Round => "Round",
            Unary::Floor => "Floor",
            Unary::Erf => "Erf",
            Unary::Gelu { .. } => "Gelu",
            Unary::Elu { .. } => "Elu",
            Unary::Selu { .. } => "Selu",
            Unary::Celu { .. } => "Celu",
            Unary::Softsign => "Softsign",
            Unary::Mish => "Mish",
            Unary::ThresholdedRelu { .. } => "ThresholdedRelu",
            Unary::Reciprocal => "Reciprocal",
            Unary::Ceil => "Ceil",
            Unary::Sign => "Sign",
            Unary::Log => "Log",
            Unary::Sin => "Sin",
            Unary::Cos => "Cos",
            Unary::Tan => "Tan",
            Unary::Asin => "Asin",
            Unary::Acos => "Acos",
            Unary::Atan => "Atan",
            Unary::Sinh => "Sinh",
            Unary::Cosh => "Cosh",
            Unary::Asinh => "Asinh",
            Unary::Acosh => "Acosh",
            Unary::Atanh => "Atanh",
        }
    }

    /// The op on an integer tensor (wrapping, as two's complement: `Abs(-128i8)` is -128).
    fn apply_int(self, x: &Tensor) -> Result<Tensor> {
        macro_rules! signed {
            ($v:expr, $variant:ident) => {
                TensorData::$variant(
                    $v.iter()
                        .map(|&e| match self {
                            Unary::Abs => e.wrapping_abs(),
                            Unary::Neg => e.wrapping_neg(),
                            Unary::Relu => e.max(0),
                            _ => e.signum(),
                        })
                        .collect(),
                )
            };
        }
        let data = match (x.data(), self) {
            (TensorData::I8(v), Unary::Abs | Unary::Neg | Unary::Relu | Unary::Sign) => signed!(v, I8),
            (TensorData::I32(v), Unary::Abs | Unary::Neg | Unary::Relu | Unary::Sign) => signed!(v, I32),
            (TensorData::I64(v), Unary::Abs | Unary::Neg | Unary::Relu | Unary::Sign) => signed!(v, I64),
            (TensorData::U8(v), Unary::Abs | Unary::Relu) => TensorData::U8(v.clone()),
            (TensorData::U8(v), Unary::Sign) => TensorData::U8(v.iter().map(|&e| (e > 0) as u8).collect()),
            (TensorData::I16(v), Unary::Abs | Unary::Neg | Unary::Relu | Unary::Sign) => signed!(v, I16),
            (TensorData::U16(v), Unary::Abs | Unary::Relu) => TensorData::U16(v.clone()),
            (TensorData::U16(v), Unary::Sign) => TensorData::U16(v.iter().map(|&e| (e > 0) as u16).collect()),
            (TensorData::U32(v), Unary::Abs | Unary::Relu) => TensorData::U32(v.clone()),
            (TensorData::U32(v), Unary::Sign) => TensorData::U32(v.iter().map(|&e| (e > 0) as u32).collect()),
            (TensorData::U64(v), Unary::Abs | Unary::Relu) => TensorData::U64(v.clone()),
            (TensorData::U64(v), Unary::Sign) => TensorData::U64(v.iter().map(|&e| (e > 0) as u64).collect()),
            _ => {
                let names: Vec<&str> = self.dtypes().iter().map(|d| d.name()).collect();
                return Err(Error::shape(format!(
                    "{} needs a {} input, got {} {:?}",
                    self.name(),
                    names.join(" or "),
                    x.dtype(),
                    x.shape()
                )));
            }
        };
        Tensor::new(x.shape().to_vec(), data)
    }

    /// The element types the op reads.
    fn dtypes(self) -> &'static [DType] {
        match self {
            Unary::Abs | Unary::Sign | Unary::Relu => &DType::NUMERIC,
            Unary::Neg => &[DType::F32, DType::I8, DType::I16, DType::I32, DType::I64],
            _ => &[DType::F32],
        }
    }

    pub fn f(self, v: f32) -> f32 {
        match self {
            // Not `v.max(0.0)`, which turns NaN into 0: NaN propagates, as in onnxruntime.
            Unary::Relu => {
                if v < 0.0 {
                    0.0
                } else {
                    v
                }
            }
            Unary::LeakyRelu { alpha } => {
                if v < 0.0 {
                    alpha * v
                } else {
                    v
                }
            }
            Unary::Sigmoid => sigmoid(v),
            Unary::Tanh => v.tanh(),
            Unary::HardSigmoid { alpha, beta } => (alpha * v + beta).clamp(0.0, 1.0),
            Unary::HardSwish => v * (v / 6.0 + 0.5).clamp(0.0, 1.0),
            Unary::Exp => v.exp(),
            Unary::Neg => -v,
            Unary::Abs => v.abs(),
            Unary::Sqrt => v.sqrt(),
            Unary::Round => v.round_ties_even(),
            Unary::Floor => v.floor(),
            Unary::Erf => activation::erf(v),
            Unary::Gelu { tanh: false } => gelu(v as f64) as f32,
            Unary::Gelu { tanh: true } => gelu_tanh(v as f64) as f32,
            Unary::Elu { alpha } => {
                if v < 0.0 {
                    (alpha as f64 * (v as f64).exp_m1()) as f32
                } else {
                    v
                }
            }
            Unary::Selu { alpha, gamma } => {
                if v > 0.0 {
                    gamma * v
                } else {
                    (gamma as f64 * alpha as f64 * (v as f64).exp_m1()) as f32
                }
            }
            Unary::Celu { alpha } => {
                // max(0, x) + min(0, alpha (e^(x/alpha) - 1)); NaN stays NaN.
                if v > 0.0 {
                    v
                } else {
                    (alpha as f64 * (v as f64 / alpha as f64).exp_m1()) as f32
                }
            }
            Unary::Softsign => v / (1.0 + v.abs()),
            Unary::Mish => mish(v as f64) as f32,
            // NaN is not > alpha: 0, as onnxruntime.
            Unary::ThresholdedRelu { alpha } => {
                if v > alpha {
                    v
                } else {
                    0.0
                }
            }
            Unary::Reciprocal => 1.0 / v,
            Unary::Ceil => v.ceil(),
            Unary::Sign => {
                if v > 0.0 {
                    1.0
                } else if v < 0.0 {
                    -1.0
                } else {
                    v // 0, -0 and NaN
                }
            }
            Unary::Log => v.ln(),
            Unary::Sin => v.sin(),
            Unary::Cos => v.cos(),
            Unary::Tan => v.tan(),
            Unary::Asin => v.asin(),
            Unary::Acos => v.acos(),
            Unary::Atan => v.atan(),
            Unary::Sinh => v.sinh(),
            Unary::Cosh => v.cosh(),
            Unary::Asinh => v.asinh(),
            Unary::Acosh => v.acosh(),
            Unary::Atanh => v.atanh(),
        }
    }

    pub fn eval(self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0, "X")?;
        if x.dtype() != DType::F32 {
            return Ok(vec![self.apply_int(x)?]);
        }
        let mut y = x.clone();
        self.apply_slice(y.as_mut_slice::<f32>()?);
        Ok(vec![y])
    }

    /// Applies the op to every element. The variant is matched once, outside the loop, so
    /// that each loop is specialized (and vectorized where the op allows).
    pub fn apply_slice(self, x: &mut [f32]) {
        match self {
            Unary::Relu => unary_inplace(x, |v| Unary::Relu.f(v)),
            Unary::LeakyRelu { alpha } => unary_inplace(x, |v| Unary::LeakyRelu { alpha }.f(v)),
            Unary::Round => unary_inplace(x, |v| v.round_ties_even()),
            Unary::Abs => unary_inplace(x, |v| v.abs()),
            Unary::Neg => unary_inplace(x, |v| -v),
            Unary::Sigmoid => sigmoid_slice(x),
            Unary::Erf => activation::erf_slice(x),
            other => unary_inplace(x, |v| other.f(v)),
        }
    }
}

impl FromOnnx for Unary {
    fn from_onnx(cx: &ParseCtx) -> Result<Self> {
        let a = cx.attrs;
        Ok(match cx.op_type {
            "Relu" => Unary::Relu,
            "LeakyRelu" => Unary::LeakyRelu {
                alpha: a.float("alpha", 0.01)?,
            },
            "Sigmoid" => Unary::Sigmoid,
            "Tanh" => Unary::Tanh,
            "HardSigmoid" => Unary::HardSigmoid {
                alpha: a.float("alpha", 0.2)?,
                beta: a.float("beta", 0.5)?,
            },
            "HardSwish" => Unary::HardSwish,
            "Exp" => Unary::Exp,
            "Neg" => Unary::Neg,
            "Abs" => Unary::Abs,
            "Sqrt" => Unary::Sqrt,
            "Round" => Unary::Round,
            "Floor" => Unary::Floor,
            "Erf" => Unary::Erf,
            "Gelu" => match a.string("approximate", "none")?.as_str() {
                "none" => Unary::Gelu { tanh: false },
                "tanh" => Unary::Gelu { tanh: true },
                other => return Err(a.unsupported(format!("approximate='{other}' (none or tanh)"))),
            },
            "Elu" => Unary::Elu {
                alpha: a.float("alpha", 1.0)?,
            },
            "Selu" => Unary::Selu {
                alpha: a.float("alpha", SELU_ALPHA)?,
                gamma: a.float("gamma", SELU_GAMMA)?,
            },
            "Celu" => {
                let alpha = a.float("alpha", 1.0)?;
                if alpha == 0.0 {
                    return Err(a.unsupported("alpha=0 (Celu divides by alpha)"));
                }
                Unary::Celu { alpha }
            }
            "Softsign" => Unary::Softsign,
            "Mish" => Unary::Mish,
            "ThresholdedRelu" => Unary::ThresholdedRelu {
                alpha: a.float("alpha", 1.0)?,
            },
            "Reciprocal" => Unary::Reciprocal,
            "Ceil" => Unary::Ceil,
            "Sign" => Unary::Sign,
            "Log" => Unary::Log,
            "Sin" => Unary::Sin,
            "Cos" => Unary::Cos,
            "Tan" => Unary::Tan,
            "Asin" => Unary::Asin,
            "Acos" => Unary::Acos,
            "Atan" => Unary::Atan,
            "Sinh" => Unary::Sinh,
            "Cosh" => Unary::Cosh,
            "Asinh" => Unary::Asinh,
            "Acosh" => Unary::Acosh,
            "Atanh" => Unary::Atanh,
            other => return Err(a.unsupported(format!("{other} is not an element-wise activation"))),
        })
    }
}

impl Op for Unary {
    fn elementwise(&self) -> bool {
        true
    }
    fn op_type(&self) -> &'static str {
        self.name()
    }
    fn to_attrs(&self, _opset: i64) -> Vec<(String, AttrValue)> {
        match *self {
            Unary::LeakyRelu { alpha } => vec![("alpha".into(), AttrValue::Float(alpha))],
            Unary::HardSigmoid { alpha, beta } => vec![
                ("alpha".into(), AttrValue::Float(alpha)),
                ("beta".into(), AttrValue::Float(beta)),
            ],
            Unary::Gelu { tanh: true } => vec![("approximate".into(), AttrValue::String("tanh".into()))],
            Unary::Elu { alpha } | Unary::Celu { alpha } | Unary::ThresholdedRelu { alpha } => {
                vec![("alpha".into(), AttrValue::Float(alpha))]
            }
            Unary::Selu { alpha, gamma } => vec![
                ("alpha".into(), AttrValue::Float(alpha)),
                ("gamma".into(), AttrValue::Float(gamma)),
            ],
            _ => Vec::new(),
        }
    }
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        Unary::eval(*self, inputs)
    }
    fn output_facts(&self, inputs: &[Option<&ValueFact>], _constants: &[Option<&Tensor>]) -> Result<Vec<ValueFact>> {
        let x = required(inputs, 0, self.name(), "X")?;
        expect_dtype(self.name(), x, "X", self.dtypes())?;
        let dtype = x.dtype.or((self.dtypes().len() == 1).then_some(DType::F32));
        Ok(vec![ValueFact::new(dtype, x.shape.clone())])
    }
    fn has_in_place(&self) -> bool {
        true
    }
    fn eval_in_place(&self, mut x: Tensor, _rest: &[Option<&Tensor>]) -> Result<Tensor> {
        if x.dtype() != DType::F32 {
            return self.apply_int(&x);
        }
        self.apply_slice(x.as_mut_slice::<f32>()?);
        Ok(x)
    }
    fn ptq_class(&self, _n: &NodeFacts) -> Class {
        match self {
            Unary::Relu | Unary::LeakyRelu { .. } | Unary::Abs => Class::Seamless,
            u => Class::FloatIsland(format!("{} is not scale-invariant", u.name())),
        }
    }
    fn sign_rule(&self, _n: &NodeFacts) -> SignRule {
        match self {
            Unary::Relu | Unary::Abs | Unary::Acos | Unary::Cosh | Unary::Acosh | Unary::Sqrt | Unary::Exp => {
                SignRule::NonNegative
            }
            // Sigmoid and HardSigmoid are non-negative too, but on their unsigned grid the 0.5
            // they give every zero input lands on a rounding tie, where ONNX's QuantizeLinear
            // (a division by the scale) and the engine (a multiplication by its inverse) round
            // apart: 10-15 % of a test network's outputs one step off between the exports and
            // the engine (tests/exporters.rs). They keep the signed grid.
            Unary::ThresholdedRelu { alpha } if *alpha >= 0.0 => SignRule::NonNegative,
            _ => SignRule::Unknown,
        }
    }
    fn clamps_negatives(&self, _n: &NodeFacts) -> bool {
        matches!(self, Unary::Relu)
    }
    fn needs_round(&self) -> bool {
        matches!(self, Unary::LeakyRelu { .. })
    }
}
