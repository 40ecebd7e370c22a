//! Shape: the dimensions of a tensor (optionally a range of them) as int64.

use crate::error::Result;
use crate::onnx::attrs::AttrValue;
use crate::ops::facts::required;
use crate::ops::{input, Class, DimFact, FromOnnx, NodeFacts, Op, ParseCtx, ValueFact};
use crate::tensor::{DType, Tensor};

/// The range of dimensions `[start, end)` that Shape returns for a tensor of rank `rank`.
fn dim_range(start: i64, end: Option<i64>, rank: usize) -> (usize, usize) {
    let r = rank as i64;
    let clampi = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
    let (s, e) = (clampi(start), clampi(end.unwrap_or(r)));
    (s, e.max(s))
}

/// What Shape returns for an input of dimensions `dims` (for values known before running).
pub fn shape_value(start: i64, end: Option<i64>, dims: &[usize]) -> Result<Tensor> {
    let (s, e) = dim_range(start, end, dims.len());
    let v: Vec<i64> = dims[s..e].iter().map(|&d| d as i64).collect();
    Tensor::from_vec(vec![v.len()], v)
}

pub fn shape_of(start: i64, end: Option<i64>, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    Ok(vec![shape_value(start, end, input(inputs, 0, "data")?.shape())?])
}

#[derive(Debug, Clone, PartialEq)]
pub struct Shape {
    pub start: i64,
    pub end: Option<i64>,
}

impl FromOnnx for Shape {
    fn from_onnx(cx: &ParseCtx) -> Result<Self> {
        Ok(Shape {
            start: cx.attrs.int("start", 0)?,
            end: cx.attrs.int_opt("end")?,
        })
    }
}

impl Op for Shape {
    fn op_type(&self) -> &'static str {
        "Shape"
    }
    fn to_attrs(&self, _opset: i64) -> Vec<(String, AttrValue)> {
        let mut v = Vec::new();
        if self.start != 0 {
            v.push(("start".to_string(), AttrValue::Int(self.start)));
        }
        if let Some(e) = self.end {
            v.push(("end".into(), AttrValue::Int(e)));
        }
        v
    }
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        shape_of(self.start, self.end, inputs)
    }
    fn output_facts(&self, inputs: &[Option<&ValueFact>], _constants: &[Option<&Tensor>]) -> Result<Vec<ValueFact>> {
        // Its length is known with the input's rank (its values are not facts).
        let x = required(inputs, 0, "Shape", "data")?;
        let len = x.rank().map(|r| {
            let (s, e) = dim_range(self.start, self.end, r);
            e - s
        });
        Ok(vec![ValueFact::new(
            Some(DType::I64),
            Some(vec![len.map_or(DimFact::Unknown, DimFact::Known)]),
        )])
    }
    fn ptq_class(&self, _n: &NodeFacts) -> Class {
        Class::Passive
    }
    fn carries_activation(&self) -> bool {
        false
    }
}
