//! Element-wise activations and roundings of float32 tensors, one type: the op is a kind.

use crate::error::Result;
use crate::kernels::elementwise::{sigmoid, unary_inplace};
use crate::onnx::attrs::AttrValue;
use crate::ops::facts::float_like;
use crate::ops::{input, Class, FromOnnx, NodeFacts, Op, ParseCtx, SignRule, ValueFact};
use crate::tensor::Tensor;

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
}

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
        }
    }

    pub fn eval(self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0, "X")?;
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
            _ => Vec::new(),
        }
    }
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        Unary::eval(*self, inputs)
    }
    fn output_facts(&self, inputs: &[Option<&ValueFact>], _constants: &[Option<&Tensor>]) -> Result<Vec<ValueFact>> {
        float_like(self.name(), inputs, "X")
    }
    fn has_in_place(&self) -> bool {
        true
    }
    fn eval_in_place(&self, mut x: Tensor, _rest: &[Option<&Tensor>]) -> Result<Tensor> {
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
            Unary::Relu | Unary::Abs => SignRule::NonNegative,
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
