//! IsNaN and IsInf: which float32 elements are NaN, or infinite (of the signs asked for).

use crate::error::Result;
use crate::onnx::attrs::AttrValue;
use crate::ops::facts::{expect_dtype, required};
use crate::ops::{input, FromOnnx, Op, ParseCtx, ValueFact};
use crate::tensor::{DType, Tensor};

fn map_bool(x: &Tensor, f: impl Fn(f32) -> bool) -> Result<Tensor> {
    let v: Vec<bool> = x.as_slice::<f32>()?.iter().map(|&v| f(v)).collect();
    Tensor::from_vec(x.shape().to_vec(), v)
}

fn bool_facts(op: &str, inputs: &[Option<&ValueFact>]) -> Result<Vec<ValueFact>> {
    let x = required(inputs, 0, op, "X")?;
    expect_dtype(op, x, "X", &[DType::F32])?;
    Ok(vec![ValueFact::new(Some(DType::Bool), x.shape.clone())])
}

#[derive(Debug, Clone, PartialEq)]
pub struct IsNaN;

impl FromOnnx for IsNaN {
    fn from_onnx(_cx: &ParseCtx) -> Result<Self> {
        Ok(IsNaN)
    }
}

impl Op for IsNaN {
    fn op_type(&self) -> &'static str {
        "IsNaN"
    }
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        Ok(vec![map_bool(input(inputs, 0, "X")?, f32::is_nan)?])
    }
    fn output_facts(&self, inputs: &[Option<&ValueFact>], _constants: &[Option<&Tensor>]) -> Result<Vec<ValueFact>> {
        bool_facts("IsNaN", inputs)
    }
    fn carries_activation(&self) -> bool {
        false
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct IsInf {
    pub detect_negative: bool,
    pub detect_positive: bool,
}

impl FromOnnx for IsInf {
    fn from_onnx(cx: &ParseCtx) -> Result<Self> {
        let a = cx.attrs;
        Ok(IsInf {
            detect_negative: a.int("detect_negative", 1)? != 0,
            detect_positive: a.int("detect_positive", 1)? != 0,
        })
    }
}

impl Op for IsInf {
    fn op_type(&self) -> &'static str {
        "IsInf"
    }
    fn to_attrs(&self, _opset: i64) -> Vec<(String, AttrValue)> {
        let mut v = Vec::new();
        if !self.detect_negative {
            v.push(("detect_negative".into(), AttrValue::Int(0)));
        }
        if !self.detect_positive {
            v.push(("detect_positive".into(), AttrValue::Int(0)));
        }
        v
    }
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let (neg, pos) = (self.detect_negative, self.detect_positive);
        let out = map_bool(input(inputs, 0, "X")?, |v| {
            (pos && v == f32::INFINITY) || (neg && v == f32::NEG_INFINITY)
        })?;
        Ok(vec![out])
    }
    fn output_facts(&self, inputs: &[Option<&ValueFact>], _constants: &[Option<&Tensor>]) -> Result<Vec<ValueFact>> {
        bool_facts("IsInf", inputs)
    }
    fn carries_activation(&self) -> bool {
        false
    }
}
