//! Reshape (shape as an input; 0 copies a dimension unless `allowzero`, -1 is inferred).

use crate::error::{Error, Result};
use crate::onnx::attrs::AttrValue;
use crate::ops::{attr, input, Class, FromOnnx, NodeFacts, Op, ParseCtx, SignRule};
use crate::tensor::{numel, Tensor};

/// The output shape of Reshape (0 copies a dimension unless `allowzero`, -1 is inferred).
pub fn reshape_target(input: &[usize], spec: &[i64], allowzero: bool) -> Result<Vec<usize>> {
    let mut out = Vec::with_capacity(spec.len());
    let mut infer = None;
    for (i, &d) in spec.iter().enumerate() {
        match d {
            -1 if infer.is_none() => {
                infer = Some(i);
                out.push(1);
            }
            0 if !allowzero => out.push(*input.get(i).ok_or_else(|| {
                Error::shape(format!(
                    "Reshape shape {spec:?}: 0 at position {i} but input {input:?} has no such dim"
                ))
            })?),
            d if d >= 0 => out.push(d as usize),
            _ => return Err(Error::shape(format!("Reshape shape {spec:?} is invalid"))),
        }
    }
    let total = numel(input);
    if let Some(i) = infer {
        let known = numel(&out);
        if known == 0 || !total.is_multiple_of(known) {
            return Err(Error::shape(format!("cannot reshape {input:?} to {spec:?}")));
        }
        out[i] = total / known;
    }
    if numel(&out) != total {
        return Err(Error::shape(format!(
            "cannot reshape {input:?} ({total} elements) to {spec:?}"
        )));
    }
    Ok(out)
}

pub fn reshape(allowzero: bool, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    let x = input(inputs, 0, "data")?;
    let spec = input(inputs, 1, "shape")?.to_i64_vec()?;
    let shape = reshape_target(x.shape(), &spec, allowzero)?;
    Ok(vec![x.clone().reshape(shape)?])
}

#[derive(Debug, Clone, PartialEq)]
pub struct Reshape {
    pub allowzero: bool,
}

impl FromOnnx for Reshape {
    fn from_onnx(cx: &ParseCtx) -> Result<Self> {
        if cx.attrs.has("shape") {
            return Err(cx.attrs.unsupported("shape as an attribute (opset < 5)"));
        }
        Ok(Reshape {
            allowzero: cx.attrs.int("allowzero", 0)? != 0,
        })
    }
}

impl Op for Reshape {
    fn op_type(&self) -> &'static str {
        "Reshape"
    }
    fn to_attrs(&self, _opset: i64) -> Vec<(String, AttrValue)> {
        if self.allowzero {
            attr("allowzero", AttrValue::Int(1))
        } else {
            Vec::new()
        }
    }
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        reshape(self.allowzero, inputs)
    }
    fn has_in_place(&self) -> bool {
        true
    }
    fn eval_in_place(&self, x: Tensor, rest: &[Option<&Tensor>]) -> Result<Tensor> {
        let spec = rest
            .first()
            .copied()
            .flatten()
            .ok_or_else(|| Error::shape("missing required input #1 (shape)"))?
            .to_i64_vec()?;
        let shape = reshape_target(x.shape(), &spec, self.allowzero)?;
        x.reshape(shape)
    }
    fn moves_data_only(&self) -> bool {
        true
    }
    fn ptq_class(&self, _n: &NodeFacts) -> Class {
        Class::Seamless
    }
    fn sign_rule(&self, _n: &NodeFacts) -> SignRule {
        SignRule::FollowsInputs
    }
}
