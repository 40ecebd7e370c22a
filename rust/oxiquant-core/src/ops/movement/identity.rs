//! Identity.

use crate::error::Result;
use crate::ops::facts::required;
use crate::ops::{input, FromOnnx, Op, ParseCtx, ValueFact};
use crate::tensor::Tensor;

#[derive(Debug, Clone, PartialEq)]
pub struct Identity;

impl FromOnnx for Identity {
    fn from_onnx(_cx: &ParseCtx) -> Result<Self> {
        Ok(Identity)
    }
}

impl Op for Identity {
    fn op_type(&self) -> &'static str {
        "Identity"
    }
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        Ok(vec![input(inputs, 0, "input")?.clone()])
    }
    fn output_facts(&self, inputs: &[Option<&ValueFact>], _constants: &[Option<&Tensor>]) -> Result<Vec<ValueFact>> {
        Ok(vec![required(inputs, 0, "Identity", "input")?.clone()])
    }
    fn has_in_place(&self) -> bool {
        true
    }
    fn eval_in_place(&self, x: Tensor, _rest: &[Option<&Tensor>]) -> Result<Tensor> {
        Ok(x)
    }
    fn moves_data_only(&self) -> bool {
        true
    }
}
