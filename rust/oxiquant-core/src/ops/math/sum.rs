//! Sum: variadic addition with broadcasting.

use crate::error::Result;
use crate::ops::facts::required;
use crate::ops::{input, BinaryOp, Class, DataInputs, FromOnnx, NodeFacts, Op, ParseCtx, SignRule, ValueFact};
use crate::tensor::Tensor;

#[derive(Debug, Clone, PartialEq)]
pub struct Sum;

impl FromOnnx for Sum {
    fn from_onnx(_cx: &ParseCtx) -> Result<Self> {
        Ok(Sum)
    }
}

impl Op for Sum {
    fn elementwise(&self) -> bool {
        true
    }
    fn op_type(&self) -> &'static str {
        "Sum"
    }
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let mut acc = input(inputs, 0, "data_0")?.clone();
        for i in 1..inputs.len() {
            acc = BinaryOp::Add.apply(&acc, input(inputs, i, "data_i")?)?;
        }
        Ok(vec![acc])
    }
    fn output_facts(&self, inputs: &[Option<&ValueFact>], _constants: &[Option<&Tensor>]) -> Result<Vec<ValueFact>> {
        // As `eval`: the inputs added in turn (every one required), so shapes broadcast.
        let mut acc = required(inputs, 0, "Sum", "data_0")?.clone();
        for i in 1..inputs.len() {
            acc = BinaryOp::Add
                .facts(&acc, required(inputs, i, "Sum", "data_i")?)
                .map_err(crate::ops::facts::in_op("Sum"))?;
        }
        Ok(vec![acc])
    }
    fn ptq_class(&self, n: &NodeFacts) -> Class {
        BinaryOp::Add.ptq_class(n)
    }
    fn data_inputs(&self) -> DataInputs {
        DataInputs::All
    }
    fn sign_rule(&self, _n: &NodeFacts) -> SignRule {
        SignRule::FollowsInputs
    }
}
