//! Concat along an axis (any element type).

use crate::error::{Error, Result};
use crate::onnx::attrs::AttrValue;
use crate::ops::facts::{fact_axis, fact_error, required, unify_dim};
use crate::ops::{
    attr, input, norm_axis, Class, DataInputs, DimFact, FromOnnx, NodeFacts, Op, ParseCtx, SignRule, ValueFact,
};
use crate::tensor::{numel, Tensor, TensorData};

pub fn concat(axis: i64, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    let first = input(inputs, 0, "inputs[0]")?;
    let r = first.rank();
    let a = norm_axis(axis, r)?;
    let parts: Vec<&Tensor> = inputs.iter().flatten().copied().collect();
    let mut shape = first.shape().to_vec();
    shape[a] = 0;
    for t in &parts {
        let ok =
            t.rank() == r && t.dtype() == first.dtype() && (0..r).all(|d| d == a || t.shape()[d] == first.shape()[d]);
        if !ok {
            return Err(Error::shape(format!(
                "Concat on axis {axis}: input {} {:?} does not match {} {:?}",
                t.dtype(),
                t.shape(),
                first.dtype(),
                first.shape()
            )));
        }
        shape[a] += t.shape()[a];
    }
    let outer: usize = shape[..a].iter().product();
    let inner: usize = shape[a + 1..].iter().product();
    macro_rules! cat {
        ($variant:ident) => {{
            let mut out = Vec::with_capacity(numel(&shape));
            let slices: Vec<_> = parts
                .iter()
                .map(|t| match t.data() {
                    TensorData::$variant(v) => v.as_slice(),
                    _ => &[],
                })
                .collect();
            for o in 0..outer {
                for (t, s) in parts.iter().zip(&slices) {
                    let blk = t.shape()[a] * inner;
                    out.extend_from_slice(&s[o * blk..(o + 1) * blk]);
                }
            }
            TensorData::$variant(out)
        }};
    }
    let data = match first.data() {
        TensorData::F32(_) => cat!(F32),
        TensorData::U8(_) => cat!(U8),
        TensorData::I8(_) => cat!(I8),
        TensorData::I32(_) => cat!(I32),
        TensorData::I64(_) => cat!(I64),
        TensorData::Bool(_) => cat!(Bool),
        TensorData::I16(_) => cat!(I16),
        TensorData::U16(_) => cat!(U16),
        TensorData::U32(_) => cat!(U32),
        TensorData::U64(_) => cat!(U64),
    };
    Ok(vec![Tensor::new(shape, data)?])
}

#[derive(Debug, Clone, PartialEq)]
pub struct Concat {
    pub axis: i64,
}

impl FromOnnx for Concat {
    fn from_onnx(cx: &ParseCtx) -> Result<Self> {
        Ok(Concat {
            axis: cx.attrs.int("axis", 1)?,
        })
    }
}

impl Op for Concat {
    fn op_type(&self) -> &'static str {
        "Concat"
    }
    fn to_attrs(&self, _opset: i64) -> Vec<(String, AttrValue)> {
        attr("axis", AttrValue::Int(self.axis))
    }
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        concat(self.axis, inputs)
    }
    fn output_facts(&self, inputs: &[Option<&ValueFact>], _constants: &[Option<&Tensor>]) -> Result<Vec<ValueFact>> {
        let op = "Concat";
        let first = required(inputs, 0, op, "inputs[0]")?;
        // As `eval`: the first input is required, omitted others are skipped.
        let parts: Vec<&ValueFact> = inputs.iter().flatten().copied().collect();
        let mismatch =
            |p: &ValueFact| fact_error(op, format!("on axis {}: input {p} does not match {first}", self.axis));
        let mut dtype = None;
        for p in &parts {
            match (dtype, p.dtype) {
                (Some(d), Some(e)) if d != e => return Err(mismatch(p)),
                (None, e) => dtype = e,
                _ => {}
            }
        }
        let Some(r) = parts.iter().find_map(|p| p.rank()) else {
            return Ok(vec![ValueFact::new(dtype, None)]);
        };
        let a = fact_axis(op, self.axis, r)?;
        let mut shape = vec![DimFact::Unknown; r];
        for p in &parts {
            let Some(s) = &p.shape else { continue };
            if s.len() != r {
                return Err(mismatch(p));
            }
            for d in (0..r).filter(|&d| d != a) {
                shape[d] = unify_dim(op, &shape[d], &s[d], || {
                    format!("on axis {}: input {p} does not match {first}", self.axis)
                })?;
            }
        }
        shape[a] = match parts.as_slice() {
            [one] => one.dim(a),
            _ => parts
                .iter()
                .map(|p| p.dim(a).known())
                .sum::<Option<usize>>()
                .map_or(DimFact::Unknown, DimFact::Known),
        };
        Ok(vec![ValueFact::new(dtype, Some(shape))])
    }
    fn ptq_class(&self, n: &NodeFacts) -> Class {
        crate::ops::BinaryOp::Add.ptq_class(n)
    }
    fn data_inputs(&self) -> DataInputs {
        DataInputs::All
    }
    fn sign_rule(&self, _n: &NodeFacts) -> SignRule {
        SignRule::FollowsInputs
    }
}
