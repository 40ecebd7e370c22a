//! ConstantOfShape: a tensor of a given shape filled with one value.

use crate::dispatch_data;
use crate::error::{Error, Result};
use crate::onnx::attrs::AttrValue;
use crate::ops::{attr, input, Class, FromOnnx, NodeFacts, Op, ParseCtx};
use crate::tensor::{check_alloc, Tensor};

pub fn constant_of_shape(value: &Tensor, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    let spec = input(inputs, 0, "input")?.to_i64_vec()?;
    if spec.iter().any(|&d| d < 0) {
        return Err(Error::shape(format!(
            "ConstantOfShape shape {spec:?} has a negative dimension"
        )));
    }
    let shape: Vec<usize> = spec.iter().map(|&d| d as usize).collect();
    let n = check_alloc(&shape, 8)?;
    let data = dispatch_data!(value.data(), v => {
        let first = *v.first().ok_or_else(|| Error::shape("ConstantOfShape value is empty".to_string()))?;
        crate::tensor::Element::wrap(vec![first; n])
    });
    Ok(vec![Tensor::new(shape, data)?])
}

#[derive(Debug, Clone, PartialEq)]
pub struct ConstantOfShape {
    /// A one-element 1-D tensor, as the attribute must be (it is written back as such).
    pub value: Tensor,
}

impl FromOnnx for ConstantOfShape {
    fn from_onnx(cx: &ParseCtx) -> Result<Self> {
        Ok(ConstantOfShape {
            value: match cx.attrs.tensor_opt("value")? {
                Some(t) => t,
                None => Tensor::from_vec(vec![1], vec![0f32])?,
            },
        })
    }
}

impl Op for ConstantOfShape {
    fn op_type(&self) -> &'static str {
        "ConstantOfShape"
    }
    fn to_attrs(&self, _opset: i64) -> Vec<(String, AttrValue)> {
        attr("value", AttrValue::Tensor(self.value.clone()))
    }
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        constant_of_shape(&self.value, inputs)
    }
    fn ptq_class(&self, _n: &NodeFacts) -> Class {
        Class::Passive
    }
    fn carries_activation(&self) -> bool {
        false
    }
}
