//! LogSoftmax and Hardmax, with Softmax's axis rules (opset < 13: flattened to 2-D at
//! `axis`, default 1; from 13: one axis, default -1).

use super::softmax::{axis_attr, lanes};
use crate::error::Result;
use crate::onnx::attrs::AttrValue;
use crate::ops::facts::{fact_axis, float_like, required};
use crate::ops::{input, FromOnnx, NodeFacts, Op, ParseCtx, SignRule, ValueFact};
use crate::tensor::Tensor;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SoftmaxLike {
    /// Hardmax; LogSoftmax otherwise.
    pub hard: bool,
    pub axis: i64,
    pub legacy: bool,
}

impl FromOnnx for SoftmaxLike {
    fn from_onnx(cx: &ParseCtx) -> Result<Self> {
        let (axis, legacy) = axis_attr(cx)?;
        Ok(SoftmaxLike {
            hard: cx.op_type == "Hardmax",
            axis,
            legacy,
        })
    }
}

impl Op for SoftmaxLike {
    fn op_type(&self) -> &'static str {
        if self.hard {
            "Hardmax"
        } else {
            "LogSoftmax"
        }
    }
    fn to_attrs(&self, _opset: i64) -> Vec<(String, AttrValue)> {
        vec![("axis".into(), AttrValue::Int(self.axis))]
    }
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0, "input")?;
        let (len, inner) = lanes(x.shape(), self.axis, self.legacy)?;
        let mut y = x.clone();
        let v = y.as_mut_slice::<f32>()?;
        if len == 0 || inner == 0 {
            return Ok(vec![y]);
        }
        for blk in v.chunks_mut(len * inner) {
            for i in 0..inner {
                let at = |k: usize| k * inner + i;
                if self.hard {
                    // The first maximum (NaN never wins).
                    let mut best = 0;
                    for k in 1..len {
                        if blk[at(k)] > blk[at(best)] {
                            best = k;
                        }
                    }
                    for k in 0..len {
                        blk[at(k)] = (k == best) as u8 as f32;
                    }
                } else {
                    let mx = (0..len).map(|k| blk[at(k)]).fold(f32::NEG_INFINITY, f32::max);
                    let sum: f32 = (0..len).map(|k| (blk[at(k)] - mx).exp()).sum();
                    let ls = sum.ln();
                    for k in 0..len {
                        blk[at(k)] = blk[at(k)] - mx - ls;
                    }
                }
            }
        }
        Ok(vec![y])
    }
    fn output_facts(&self, inputs: &[Option<&ValueFact>], _constants: &[Option<&Tensor>]) -> Result<Vec<ValueFact>> {
        let op = self.op_type();
        if let Some(r) = required(inputs, 0, op, "input")?.rank() {
            fact_axis(op, self.axis, r)?;
        }
        float_like(op, inputs, "input")
    }
    fn sign_rule(&self, _n: &NodeFacts) -> SignRule {
        if self.hard {
            SignRule::NonNegative
        } else {
            SignRule::Unknown
        }
    }
}
