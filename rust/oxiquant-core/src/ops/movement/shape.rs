//! Shape: the dimensions of a tensor (optionally a range of them) as int64.

use crate::error::Result;
use crate::onnx::attrs::AttrValue;
use crate::ops::{input, Class, FromOnnx, NodeFacts, Op, ParseCtx};
use crate::tensor::Tensor;

pub fn shape_of(start: i64, end: Option<i64>, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    let x = input(inputs, 0, "data")?;
    let r = x.rank() as i64;
    let clampi = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
    let (s, e) = (clampi(start), clampi(end.unwrap_or(r)));
    let dims: Vec<i64> = x.shape()[s..e.max(s)].iter().map(|&d| d as i64).collect();
    Ok(vec![Tensor::from_vec(vec![dims.len()], dims)?])
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
    fn ptq_class(&self, _n: &NodeFacts) -> Class {
        Class::Passive
    }
    fn carries_activation(&self) -> bool {
        false
    }
}
