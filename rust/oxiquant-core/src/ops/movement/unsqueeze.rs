//! Unsqueeze: axes as an attribute (opset < 13) or an input.

use crate::error::{Error, Result};
use crate::onnx::attrs::AttrValue;
use crate::ops::facts::{constant, fact_axis, fact_error, in_op, required};
use crate::ops::{attr, input, norm_axis, DimFact, FromOnnx, Op, ParseCtx, ValueFact};
use crate::tensor::Tensor;

pub fn unsqueeze(axes: &Option<Vec<i64>>, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    let x = input(inputs, 0, "data")?;
    let axes = match axes.clone() {
        Some(a) => a,
        None => input(inputs, 1, "axes")?.to_i64_vec()?,
    };
    let r = x.rank() + axes.len();
    let mut ins: Vec<usize> = axes.iter().map(|&a| norm_axis(a, r)).collect::<Result<_>>()?;
    ins.sort_unstable();
    ins.dedup();
    if ins.len() != axes.len() {
        return Err(Error::shape(format!("Unsqueeze axes {axes:?} repeat an axis")));
    }
    let mut shape = Vec::with_capacity(r);
    let mut src = x.shape().iter();
    for d in 0..r {
        if ins.contains(&d) {
            shape.push(1);
        } else {
            shape.push(
                *src.next()
                    .ok_or_else(|| Error::shape(format!("Unsqueeze axes {axes:?} invalid for {:?}", x.shape())))?,
            );
        }
    }
    Ok(vec![x.clone().reshape(shape)?])
}

#[derive(Debug, Clone, PartialEq)]
pub struct Unsqueeze {
    pub axes: Option<Vec<i64>>,
}

impl FromOnnx for Unsqueeze {
    fn from_onnx(cx: &ParseCtx) -> Result<Self> {
        Ok(Unsqueeze {
            axes: cx.attrs.ints_opt("axes")?,
        })
    }
}

impl Op for Unsqueeze {
    fn op_type(&self) -> &'static str {
        "Unsqueeze"
    }
    fn to_attrs(&self, _opset: i64) -> Vec<(String, AttrValue)> {
        match &self.axes {
            Some(a) => attr("axes", AttrValue::Ints(a.clone())),
            None => Vec::new(),
        }
    }
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        unsqueeze(&self.axes, inputs)
    }
    fn output_facts(&self, inputs: &[Option<&ValueFact>], constants: &[Option<&Tensor>]) -> Result<Vec<ValueFact>> {
        let op = "Unsqueeze";
        let x = required(inputs, 0, op, "data")?;
        let axes = match &self.axes {
            Some(a) => a.clone(),
            None => {
                let f = required(inputs, 1, op, "axes")?;
                match constant(constants, 1) {
                    Some(t) => t.to_i64_vec().map_err(in_op(op))?,
                    // Axes computed by the graph: one more dimension per axis, all unknown.
                    None => {
                        let r = x.rank().zip(f.numel()).map(|(r, k)| vec![DimFact::Unknown; r + k]);
                        return Ok(vec![ValueFact::new(x.dtype, r)]);
                    }
                }
            }
        };
        let Some(s) = &x.shape else {
            return Ok(vec![ValueFact::new(x.dtype, None)]);
        };
        let r = s.len() + axes.len();
        let mut ins: Vec<usize> = axes.iter().map(|&a| fact_axis(op, a, r)).collect::<Result<_>>()?;
        ins.sort_unstable();
        ins.dedup();
        if ins.len() != axes.len() {
            return Err(fact_error(op, format!("axes {axes:?} repeat an axis")));
        }
        let mut src = s.iter();
        let shape = (0..r)
            .map(|d| {
                if ins.contains(&d) {
                    DimFact::Known(1)
                } else {
                    src.next().cloned().unwrap_or(DimFact::Unknown)
                }
            })
            .collect();
        Ok(vec![ValueFact::new(x.dtype, Some(shape))])
    }
    fn moves_data_only(&self) -> bool {
        true
    }
}
