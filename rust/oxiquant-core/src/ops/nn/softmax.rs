//! Softmax.

use crate::error::Result;
use crate::kernels::activation::exp_shifted;
use crate::onnx::attrs::AttrValue;
use crate::ops::facts::{fact_axis, float_like, required};
use crate::ops::{input, norm_axis, FromOnnx, NodeFacts, Op, ParseCtx, SignRule, ValueFact};
use crate::tensor::Tensor;
use rayon::prelude::*;

/// Softmax along `axis`; `legacy` (opset < 13) flattens to 2-D at `axis` first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Softmax {
    pub axis: i64,
    pub legacy: bool,
}

/// The `axis` attribute of the softmax family and whether the pre-13 rule applies: before
/// opset 13 the input is flattened to 2-D at `axis` (default 1); from 13 one axis (default -1).
pub(crate) fn axis_attr(cx: &ParseCtx) -> Result<(i64, bool)> {
    let legacy = cx.opset < 13;
    Ok((cx.attrs.int("axis", if legacy { 1 } else { -1 })?, legacy))
}

/// How the softmax family walks `shape`: over `len` values `inner` apart, in blocks of
/// `len * inner`.
pub(crate) fn lanes(shape: &[usize], axis: i64, legacy: bool) -> Result<(usize, usize)> {
    let axis = norm_axis(axis, shape.len())?;
    Ok(if legacy {
        (shape[axis..].iter().product(), 1)
    } else {
        (shape[axis], shape[axis + 1..].iter().product())
    })
}

impl Softmax {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0, "input")?;
        let (len, inner) = lanes(x.shape(), self.axis, self.legacy)?;
        let mut y = x.clone();
        let v = y.as_mut_slice::<f32>()?;
        if len == 0 || inner == 0 {
            // Empty (a zero-size axis after `axis`, too): nothing to normalize.
            return Ok(vec![y]);
        }
        if inner == 1 {
            // Rows along the last axis (attention scores): the vector exponentials.
            v.par_chunks_mut(len).for_each(|row| {
                let mx = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let sum = exp_shifted(row, mx);
                row.iter_mut().for_each(|e| *e /= sum);
            });
            return Ok(vec![y]);
        }
        v.par_chunks_mut(len * inner).for_each(|blk| {
            for i in 0..inner {
                let mx = (0..len).map(|k| blk[k * inner + i]).fold(f32::NEG_INFINITY, f32::max);
                let mut sum = 0f32;
                for k in 0..len {
                    let e = (blk[k * inner + i] - mx).exp();
                    blk[k * inner + i] = e;
                    sum += e;
                }
                for k in 0..len {
                    blk[k * inner + i] /= sum;
                }
            }
        });
        Ok(vec![y])
    }
}

impl FromOnnx for Softmax {
    fn from_onnx(cx: &ParseCtx) -> Result<Self> {
        let (axis, legacy) = axis_attr(cx)?;
        Ok(Softmax { axis, legacy })
    }
}

impl Op for Softmax {
    fn op_type(&self) -> &'static str {
        "Softmax"
    }
    fn to_attrs(&self, _opset: i64) -> Vec<(String, AttrValue)> {
        vec![("axis".into(), AttrValue::Int(self.axis))]
    }
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        self.run(inputs)
    }
    fn output_facts(&self, inputs: &[Option<&ValueFact>], _constants: &[Option<&Tensor>]) -> Result<Vec<ValueFact>> {
        if let Some(r) = required(inputs, 0, "Softmax", "input")?.rank() {
            fact_axis("Softmax", self.axis, r)?;
        }
        float_like("Softmax", inputs, "input")
    }
    fn sign_rule(&self, _n: &NodeFacts) -> SignRule {
        // Probabilities: its requantizer (before a MatMul with V) can be unsigned.
        SignRule::NonNegative
    }
}
