//! Shrink: `x + bias` below `-lambd`, `x - bias` above `lambd`, 0 between; element-wise on
//! float32.

use crate::error::Result;
use crate::onnx::attrs::AttrValue;
use crate::ops::facts::float_like;
use crate::ops::{input, FromOnnx, Op, ParseCtx, ValueFact};
use crate::tensor::Tensor;

#[derive(Debug, Clone, PartialEq)]
pub struct Shrink {
    pub lambd: f32,
    pub bias: f32,
}

impl Shrink {
    #[inline]
    pub fn apply(&self, x: f32) -> f32 {
        if x < -self.lambd {
            x + self.bias
        } else if x > self.lambd {
            x - self.bias
        } else {
            0.0
        }
    }
}

impl FromOnnx for Shrink {
    fn from_onnx(cx: &ParseCtx) -> Result<Self> {
        Ok(Shrink {
            lambd: cx.attrs.float("lambd", 0.5)?,
            bias: cx.attrs.float("bias", 0.0)?,
        })
    }
}

impl Op for Shrink {
    fn elementwise(&self) -> bool {
        true
    }
    fn op_type(&self) -> &'static str {
        "Shrink"
    }
    fn to_attrs(&self, _opset: i64) -> Vec<(String, AttrValue)> {
        vec![
            ("lambd".to_string(), AttrValue::Float(self.lambd)),
            ("bias".to_string(), AttrValue::Float(self.bias)),
        ]
    }
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0, "input")?.clone();
        Ok(vec![self.eval_in_place(x, &[])?])
    }
    fn output_facts(&self, inputs: &[Option<&ValueFact>], _constants: &[Option<&Tensor>]) -> Result<Vec<ValueFact>> {
        float_like("Shrink", inputs, "input")
    }
    fn has_in_place(&self) -> bool {
        true
    }
    fn eval_in_place(&self, mut x: Tensor, _rest: &[Option<&Tensor>]) -> Result<Tensor> {
        for v in x.as_mut_slice::<f32>()? {
            *v = self.apply(*v);
        }
        Ok(x)
    }
}
