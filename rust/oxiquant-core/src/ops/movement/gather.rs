//! Gather along an axis.

use super::take_tables;
use crate::error::{Error, Result};
use crate::onnx::attrs::AttrValue;
use crate::ops::facts::{constant, expect_dtype, fact_axis, fact_error, in_op, required};
use crate::ops::{attr, input, norm_axis, FromOnnx, Op, ParseCtx, ValueFact};
use crate::tensor::{check_alloc, DType, Tensor};

pub fn gather(axis: i64, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    let x = input(inputs, 0, "data")?;
    let idx_t = input(inputs, 1, "indices")?;
    let a = norm_axis(axis, x.rank())?;
    let dim = x.shape()[a] as i64;
    let idx = idx_t.to_i64_vec()?;
    let outer: usize = x.shape()[..a].iter().product();
    let inner: usize = x.shape()[a + 1..].iter().product();
    let mut rows = Vec::with_capacity(idx.len());
    for &i in &idx {
        let j = if i < 0 { i + dim } else { i };
        if j < 0 || j >= dim {
            return Err(Error::shape(format!(
                "Gather index {i} out of range for axis {a} of size {dim}"
            )));
        }
        rows.push(Some(j as usize * inner));
    }
    let tables = vec![
        (0..outer).map(|o| Some(o * dim as usize * inner)).collect(),
        rows,
        (0..inner).map(Some).collect(),
    ];
    let mut shape = x.shape()[..a].to_vec();
    shape.extend_from_slice(idx_t.shape());
    shape.extend_from_slice(&x.shape()[a + 1..]);
    check_alloc(&shape, 8)?;
    Ok(vec![take_tables(x, shape, &tables, 0.0)?])
}

#[derive(Debug, Clone, PartialEq)]
pub struct Gather {
    pub axis: i64,
}

impl FromOnnx for Gather {
    fn from_onnx(cx: &ParseCtx) -> Result<Self> {
        Ok(Gather {
            axis: cx.attrs.int("axis", 0)?,
        })
    }
}

impl Op for Gather {
    fn op_type(&self) -> &'static str {
        "Gather"
    }
    fn to_attrs(&self, _opset: i64) -> Vec<(String, AttrValue)> {
        attr("axis", AttrValue::Int(self.axis))
    }
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        gather(self.axis, inputs)
    }
    fn output_facts(&self, inputs: &[Option<&ValueFact>], constants: &[Option<&Tensor>]) -> Result<Vec<ValueFact>> {
        let op = "Gather";
        let x = required(inputs, 0, op, "data")?;
        let idx = required(inputs, 1, op, "indices")?;
        expect_dtype(
            op,
            idx,
            "indices",
            &[DType::I64, DType::I32, DType::I8, DType::U8, DType::Bool],
        )?;
        let Some(s) = &x.shape else {
            return Ok(vec![ValueFact::new(x.dtype, None)]);
        };
        let a = fact_axis(op, self.axis, s.len())?;
        if let (Some(t), Some(dim)) = (constant(constants, 1), s[a].known()) {
            let dim = dim as i64;
            if let Some(i) = t
                .to_i64_vec()
                .map_err(in_op(op))?
                .into_iter()
                .find(|&i| i < -dim || i >= dim)
            {
                return Err(fact_error(
                    op,
                    format!("index {i} out of range for axis {a} of size {dim}"),
                ));
            }
        }
        let shape = idx.shape.as_ref().map(|is| [&s[..a], is, &s[a + 1..]].concat());
        Ok(vec![ValueFact::new(x.dtype, shape)])
    }
    fn moves_data_only(&self) -> bool {
        true
    }
}
