//! Flatten: to 2-D at an axis.

use crate::error::{Error, Result};
use crate::onnx::attrs::AttrValue;
use crate::ops::facts::{dim_product, fact_error, required};
use crate::ops::{attr, input, DimFact, FromOnnx, Op, ParseCtx, ValueFact};
use crate::tensor::Tensor;

/// The 2-D shape Flatten gives `shape` at `axis`.
pub fn flatten_shape(axis: i64, shape: &[usize]) -> Result<Vec<usize>> {
    let a = if axis < 0 { axis + shape.len() as i64 } else { axis };
    if a < 0 || a > shape.len() as i64 {
        return Err(Error::shape(format!(
            "Flatten axis {axis} out of range for shape {shape:?}"
        )));
    }
    let a = a as usize;
    Ok(vec![shape[..a].iter().product(), shape[a..].iter().product()])
}

pub fn flatten(axis: i64, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    let x = input(inputs, 0, "input")?;
    let shape = flatten_shape(axis, x.shape())?;
    Ok(vec![x.clone().reshape(shape)?])
}

#[derive(Debug, Clone, PartialEq)]
pub struct Flatten {
    pub axis: i64,
}

impl FromOnnx for Flatten {
    fn from_onnx(cx: &ParseCtx) -> Result<Self> {
        Ok(Flatten {
            axis: cx.attrs.int("axis", 1)?,
        })
    }
}

impl Op for Flatten {
    fn op_type(&self) -> &'static str {
        "Flatten"
    }
    fn to_attrs(&self, _opset: i64) -> Vec<(String, AttrValue)> {
        attr("axis", AttrValue::Int(self.axis))
    }
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        flatten(self.axis, inputs)
    }
    fn output_facts(&self, inputs: &[Option<&ValueFact>], _constants: &[Option<&Tensor>]) -> Result<Vec<ValueFact>> {
        let x = required(inputs, 0, "Flatten", "input")?;
        let shape = match &x.shape {
            Some(s) => {
                let r = s.len() as i64;
                let a = if self.axis < 0 { self.axis + r } else { self.axis };
                if a < 0 || a > r {
                    return Err(fact_error(
                        "Flatten",
                        format!("axis {} out of range for shape {}", self.axis, x.shape_string()),
                    ));
                }
                let a = a as usize;
                vec![dim_product(&s[..a]), dim_product(&s[a..])]
            }
            // Rank unknown: still 2-D, and the first dimension is 1 at axis 0.
            None if self.axis == 0 => vec![DimFact::Known(1), DimFact::Unknown],
            None => vec![DimFact::Unknown, DimFact::Unknown],
        };
        Ok(vec![ValueFact::new(x.dtype, Some(shape))])
    }
    fn has_in_place(&self) -> bool {
        true
    }
    fn eval_in_place(&self, x: Tensor, _rest: &[Option<&Tensor>]) -> Result<Tensor> {
        let shape = flatten_shape(self.axis, x.shape())?;
        x.reshape(shape)
    }
    fn moves_data_only(&self) -> bool {
        true
    }
}
