//! Transpose.

use super::take_tables;
use crate::error::{Error, Result};
use crate::onnx::attrs::AttrValue;
use crate::ops::facts::{fact_error, required};
use crate::ops::{attr, input, DimFact, FromOnnx, Op, ParseCtx, ValueFact};
use crate::tensor::{strides, Tensor};

pub fn transpose(perm: &Option<Vec<usize>>, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    let x = input(inputs, 0, "data")?;
    let r = x.rank();
    let perm: Vec<usize> = perm.clone().unwrap_or_else(|| (0..r).rev().collect());
    let mut sorted = perm.clone();
    sorted.sort_unstable();
    if sorted != (0..r).collect::<Vec<_>>() {
        return Err(Error::shape(format!(
            "Transpose perm {perm:?} is not a permutation of the {r} axes of {:?}",
            x.shape()
        )));
    }
    let st = strides(x.shape());
    let shape: Vec<usize> = perm.iter().map(|&p| x.shape()[p]).collect();
    let tables: Vec<Vec<Option<usize>>> = perm
        .iter()
        .map(|&p| (0..x.shape()[p]).map(|o| Some(o * st[p])).collect())
        .collect();
    Ok(vec![take_tables(x, shape, &tables, 0.0)?])
}

#[derive(Debug, Clone, PartialEq)]
pub struct Transpose {
    pub perm: Option<Vec<usize>>,
}

impl FromOnnx for Transpose {
    fn from_onnx(cx: &ParseCtx) -> Result<Self> {
        Ok(Transpose {
            perm: cx.attrs.usizes_opt("perm")?,
        })
    }
}

impl Op for Transpose {
    fn op_type(&self) -> &'static str {
        "Transpose"
    }
    fn to_attrs(&self, _opset: i64) -> Vec<(String, AttrValue)> {
        match &self.perm {
            Some(p) => attr("perm", AttrValue::Ints(p.iter().map(|&x| x as i64).collect())),
            None => Vec::new(),
        }
    }
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        transpose(&self.perm, inputs)
    }
    fn output_facts(&self, inputs: &[Option<&ValueFact>], _constants: &[Option<&Tensor>]) -> Result<Vec<ValueFact>> {
        let x = required(inputs, 0, "Transpose", "data")?;
        let Some(r) = x.rank().or(self.perm.as_ref().map(Vec::len)) else {
            return Ok(vec![ValueFact::new(x.dtype, None)]);
        };
        let perm: Vec<usize> = self.perm.clone().unwrap_or_else(|| (0..r).rev().collect());
        let mut sorted = perm.clone();
        sorted.sort_unstable();
        if sorted != (0..r).collect::<Vec<_>>() {
            return Err(fact_error(
                "Transpose",
                format!("perm {perm:?} is not a permutation of the {r} axes of {x}"),
            ));
        }
        let shape = perm
            .iter()
            .map(|&p| x.shape.as_ref().map_or(DimFact::Unknown, |s| s[p].clone()));
        Ok(vec![ValueFact::new(x.dtype, Some(shape.collect()))])
    }
    fn moves_data_only(&self) -> bool {
        true
    }
}
