//! Squeeze: axes as an attribute (opset < 13) or an input.

use super::ints_input;
use crate::error::{Error, Result};
use crate::onnx::attrs::AttrValue;
use crate::ops::facts::{constant, fact_axis, fact_error, in_op, optional, required};
use crate::ops::{attr, input, norm_axis, DimFact, FromOnnx, Op, ParseCtx, ValueFact};
use crate::tensor::Tensor;

pub fn squeeze(axes: &Option<Vec<i64>>, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    let x = input(inputs, 0, "data")?;
    let r = x.rank();
    let axes: Option<Vec<i64>> = axes.clone().or(ints_input(inputs, 1, "axes")?);
    let drop: Vec<usize> = match axes {
        Some(a) => a.iter().map(|&v| norm_axis(v, r)).collect::<Result<_>>()?,
        None => (0..r).filter(|&d| x.shape()[d] == 1).collect(),
    };
    for &d in &drop {
        if x.shape()[d] != 1 {
            return Err(Error::shape(format!("Squeeze axis {d} of {:?} is not 1", x.shape())));
        }
    }
    let shape = (0..r).filter(|d| !drop.contains(d)).map(|d| x.shape()[d]).collect();
    Ok(vec![x.clone().reshape(shape)?])
}

#[derive(Debug, Clone, PartialEq)]
pub struct Squeeze {
    pub axes: Option<Vec<i64>>,
}

impl FromOnnx for Squeeze {
    fn from_onnx(cx: &ParseCtx) -> Result<Self> {
        Ok(Squeeze {
            axes: cx.attrs.ints_opt("axes")?,
        })
    }
}

impl Op for Squeeze {
    fn op_type(&self) -> &'static str {
        "Squeeze"
    }
    fn to_attrs(&self, _opset: i64) -> Vec<(String, AttrValue)> {
        match &self.axes {
            Some(a) => attr("axes", AttrValue::Ints(a.clone())),
            None => Vec::new(),
        }
    }
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        squeeze(&self.axes, inputs)
    }
    fn output_facts(&self, inputs: &[Option<&ValueFact>], constants: &[Option<&Tensor>]) -> Result<Vec<ValueFact>> {
        let op = "Squeeze";
        let x = required(inputs, 0, op, "data")?;
        let axes = match (&self.axes, optional(inputs, 1)) {
            (Some(a), _) => Some(a.clone()),
            (None, None) => None,
            (None, Some(_)) => match constant(constants, 1) {
                Some(t) => Some(t.to_i64_vec().map_err(in_op(op))?),
                // Axes computed by the graph (possibly repeated): not even the rank is known.
                None => return Ok(vec![ValueFact::new(x.dtype, None)]),
            },
        };
        let Some(s) = &x.shape else {
            return Ok(vec![ValueFact::new(x.dtype, None)]);
        };
        let r = s.len();
        let drop: Vec<usize> = match axes {
            Some(a) => a.iter().map(|&v| fact_axis(op, v, r)).collect::<Result<_>>()?,
            // Every dimension of size 1: known only when every size is.
            None if s.iter().all(|d| d.known().is_some()) => (0..r).filter(|&d| s[d] == DimFact::Known(1)).collect(),
            None => return Ok(vec![ValueFact::new(x.dtype, None)]),
        };
        if let Some(&d) = drop.iter().find(|&&d| s[d].known().is_some_and(|n| n != 1)) {
            return Err(fact_error(op, format!("axis {d} of {x} is not 1")));
        }
        let shape = (0..r).filter(|d| !drop.contains(d)).map(|d| s[d].clone()).collect();
        Ok(vec![ValueFact::new(x.dtype, Some(shape))])
    }
    fn moves_data_only(&self) -> bool {
        true
    }
}
