//! And, Or, Xor on two broadcast bool operands; Not on one.

use super::{broadcast_facts, map2};
use crate::error::Result;
use crate::ops::facts::{expect_dtype, required};
use crate::ops::{input, DataInputs, FromOnnx, Op, ParseCtx, ValueFact};
use crate::tensor::{DType, Tensor};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logical {
    And,
    Or,
    Xor,
}

impl Logical {
    pub fn name(self) -> &'static str {
        match self {
            Logical::And => "And",
            Logical::Or => "Or",
            Logical::Xor => "Xor",
        }
    }
}

impl FromOnnx for Logical {
    fn from_onnx(cx: &ParseCtx) -> Result<Self> {
        let a = cx.attrs;
        if a.int("broadcast", 1)? != 1 || a.has("axis") {
            return Err(a.unsupported("legacy broadcast/axis attributes (opset < 7)"));
        }
        Ok(match cx.op_type {
            "And" => Logical::And,
            "Or" => Logical::Or,
            "Xor" => Logical::Xor,
            other => return Err(a.unsupported(format!("{other} is not a logical op"))),
        })
    }
}

impl Op for Logical {
    fn op_type(&self) -> &'static str {
        self.name()
    }
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let (a, b) = (input(inputs, 0, "A")?, input(inputs, 1, "B")?);
        let (x, y) = (a.as_slice::<bool>()?, b.as_slice::<bool>()?);
        let out = match self {
            Logical::And => map2(x, a.shape(), y, b.shape(), |p, q| p & q),
            Logical::Or => map2(x, a.shape(), y, b.shape(), |p, q| p | q),
            Logical::Xor => map2(x, a.shape(), y, b.shape(), |p, q| p ^ q),
        }?;
        Ok(vec![out])
    }
    fn output_facts(&self, inputs: &[Option<&ValueFact>], _constants: &[Option<&Tensor>]) -> Result<Vec<ValueFact>> {
        let op = self.name();
        let (a, b) = (required(inputs, 0, op, "A")?, required(inputs, 1, op, "B")?);
        expect_dtype(op, a, "A", &[DType::Bool])?;
        expect_dtype(op, b, "B", &[DType::Bool])?;
        Ok(vec![ValueFact::new(Some(DType::Bool), broadcast_facts(op, &[a, b])?)])
    }
    fn data_inputs(&self) -> DataInputs {
        DataInputs::All
    }
    fn carries_activation(&self) -> bool {
        false
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Not;

impl FromOnnx for Not {
    fn from_onnx(_cx: &ParseCtx) -> Result<Self> {
        Ok(Not)
    }
}

impl Op for Not {
    fn op_type(&self) -> &'static str {
        "Not"
    }
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0, "X")?;
        let v: Vec<bool> = x.as_slice::<bool>()?.iter().map(|&b| !b).collect();
        Ok(vec![Tensor::from_vec(x.shape().to_vec(), v)?])
    }
    fn output_facts(&self, inputs: &[Option<&ValueFact>], _constants: &[Option<&Tensor>]) -> Result<Vec<ValueFact>> {
        let x = required(inputs, 0, "Not", "X")?;
        expect_dtype("Not", x, "X", &[DType::Bool])?;
        Ok(vec![ValueFact::new(Some(DType::Bool), x.shape.clone())])
    }
    fn carries_activation(&self) -> bool {
        false
    }
}
