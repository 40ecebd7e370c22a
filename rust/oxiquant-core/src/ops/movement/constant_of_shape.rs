//! ConstantOfShape: a tensor of a given shape filled with one value.

use crate::dispatch_data;
use crate::error::{Error, Result};
use crate::onnx::attrs::AttrValue;
use crate::ops::facts::{constant, expect_dtype, fact_error, in_op, required};
use crate::ops::{attr, input, Class, DimFact, FromOnnx, NodeFacts, Op, ParseCtx, ValueFact};
use crate::tensor::DType;
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
    fn output_facts(&self, inputs: &[Option<&ValueFact>], constants: &[Option<&Tensor>]) -> Result<Vec<ValueFact>> {
        let op = "ConstantOfShape";
        let x = required(inputs, 0, op, "input")?;
        expect_dtype(
            op,
            x,
            "input",
            &[DType::I64, DType::I32, DType::I8, DType::U8, DType::Bool],
        )?;
        if self.value.is_empty() {
            return Err(fact_error(op, "value is empty"));
        }
        // The shape is the input's values: known when it is a constant, else only its rank.
        let shape = match constant(constants, 0) {
            Some(t) => {
                let spec = t.to_i64_vec().map_err(in_op(op))?;
                if spec.iter().any(|&d| d < 0) {
                    return Err(fact_error(op, format!("shape {spec:?} has a negative dimension")));
                }
                Some(spec.iter().map(|&d| DimFact::Known(d as usize)).collect())
            }
            None => x.numel().map(|k| vec![DimFact::Unknown; k]),
        };
        Ok(vec![ValueFact::new(Some(self.value.dtype()), shape)])
    }
    fn ptq_class(&self, _n: &NodeFacts) -> Class {
        Class::Passive
    }
    fn carries_activation(&self) -> bool {
        false
    }
}
