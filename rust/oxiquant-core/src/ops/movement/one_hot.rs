//! OneHot: the values' "off" everywhere but at each index along a new axis of `depth`.

use super::gather_elements::pick;
use crate::error::{Error, Result};
use crate::onnx::attrs::AttrValue;
use crate::ops::facts::{constant, fact_error, in_op, required};
use crate::ops::{attr, input, norm_axis, Class, DimFact, FromOnnx, NodeFacts, Op, ParseCtx, ValueFact};
use crate::tensor::{check_alloc, Tensor, TensorData};

#[derive(Debug, Clone, PartialEq)]
pub struct OneHot {
    pub axis: i64,
}

impl FromOnnx for OneHot {
    fn from_onnx(cx: &ParseCtx) -> Result<Self> {
        Ok(OneHot {
            axis: cx.attrs.int("axis", -1)?,
        })
    }
}

/// The depth input's value (a one-element tensor of any numeric type, floats truncated).
fn depth_of(t: &Tensor) -> Result<usize> {
    if t.len() != 1 {
        return Err(Error::shape(format!(
            "OneHot: depth must have one element, got {:?}",
            t.shape()
        )));
    }
    let d = match t.data() {
        TensorData::F32(v) => v[0] as i64,
        _ => t.to_i64_vec()?[0],
    };
    usize::try_from(d)
        .ok()
        .filter(|&d| d > 0)
        .ok_or_else(|| Error::shape(format!("OneHot: depth {d} must be positive")))
}

impl Op for OneHot {
    fn op_type(&self) -> &'static str {
        "OneHot"
    }
    fn to_attrs(&self, _opset: i64) -> Vec<(String, AttrValue)> {
        attr("axis", AttrValue::Int(self.axis))
    }
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let idx = input(inputs, 0, "indices")?;
        let depth = depth_of(input(inputs, 1, "depth")?)?;
        let values = input(inputs, 2, "values")?;
        if values.len() != 2 || values.rank() != 1 {
            return Err(Error::shape(format!(
                "OneHot: values must be [off, on], got shape {:?}",
                values.shape()
            )));
        }
        let a = norm_axis(self.axis, idx.rank() + 1)?;
        let mut shape = idx.shape().to_vec();
        shape.insert(a, depth);
        check_alloc(&shape, 8)?;
        let ids: Vec<i64> = match idx.data() {
            TensorData::F32(v) => v.iter().map(|&x| x as i64).collect(),
            _ => idx.to_i64_vec()?,
        };
        let outer: usize = idx.shape()[..a].iter().product();
        let inner: usize = idx.shape()[a..].iter().product();
        let dd = depth as i64;
        let mut offs = vec![0usize; outer * depth * inner];
        for o in 0..outer {
            for i in 0..inner {
                let v = ids[o * inner + i];
                let v = if v < 0 { v + dd } else { v };
                if (0..dd).contains(&v) {
                    offs[(o * depth + v as usize) * inner + i] = 1;
                }
            }
        }
        Ok(vec![pick(values, shape, &offs)?])
    }
    fn output_facts(&self, inputs: &[Option<&ValueFact>], constants: &[Option<&Tensor>]) -> Result<Vec<ValueFact>> {
        let op = "OneHot";
        let idx = required(inputs, 0, op, "indices")?;
        required(inputs, 1, op, "depth")?;
        let values = required(inputs, 2, op, "values")?;
        if values.numel().is_some_and(|n| n != 2) || values.rank().is_some_and(|r| r != 1) {
            return Err(fact_error(op, format!("values must be [off, on], got {values}")));
        }
        let depth = match constant(constants, 1) {
            Some(t) => DimFact::Known(depth_of(t).map_err(in_op(op))?),
            None => DimFact::Unknown,
        };
        let shape = match &idx.shape {
            Some(s) => {
                let a = crate::ops::facts::fact_axis(op, self.axis, s.len() + 1)?;
                let mut s = s.clone();
                s.insert(a, depth);
                Some(s)
            }
            None => None,
        };
        Ok(vec![ValueFact::new(values.dtype, shape)])
    }
    fn ptq_class(&self, _n: &NodeFacts) -> Class {
        Class::Passive
    }
    fn carries_activation(&self) -> bool {
        false
    }
}
