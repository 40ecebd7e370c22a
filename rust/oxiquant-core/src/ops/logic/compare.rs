//! Equal, Less, Greater, LessOrEqual, GreaterOrEqual: two operands of one dtype (any),
//! broadcast, a bool output. A comparison with NaN is false, as in IEEE 754 and onnxruntime.

use super::{broadcast_facts, map2, same_dtype2};
use crate::error::{Error, Result};
use crate::ops::facts::{fact_error, required};
use crate::ops::{input, Class, DataInputs, FromOnnx, NodeFacts, Op, ParseCtx, ValueFact};
use crate::tensor::{DType, Tensor};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compare {
    Equal,
    Less,
    Greater,
    LessOrEqual,
    GreaterOrEqual,
}

impl Compare {
    pub fn name(self) -> &'static str {
        match self {
            Compare::Equal => "Equal",
            Compare::Less => "Less",
            Compare::Greater => "Greater",
            Compare::LessOrEqual => "LessOrEqual",
            Compare::GreaterOrEqual => "GreaterOrEqual",
        }
    }

    fn test<T: PartialOrd>(self, x: T, y: T) -> bool {
        match self {
            Compare::Equal => x == y,
            Compare::Less => x < y,
            Compare::Greater => x > y,
            Compare::LessOrEqual => x <= y,
            Compare::GreaterOrEqual => x >= y,
        }
    }

    pub fn apply(self, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        same_dtype2!(a, b, x, y => map2(x, a.shape(), y, b.shape(), |p, q| self.test(p, q)), {
            Err(Error::shape(format!(
                "{} needs two operands of the same dtype, got {} {:?} and {} {:?}",
                self.name(),
                a.dtype(),
                a.shape(),
                b.dtype(),
                b.shape()
            )))
        })
    }
}

/// Facts of a two-operand op whose operands share a dtype: the output's shape, broadcast.
pub(crate) fn same_dtype_broadcast(op: &str, a: &ValueFact, b: &ValueFact) -> Result<Option<Vec<crate::ops::DimFact>>> {
    if let (Some(x), Some(y)) = (a.dtype, b.dtype) {
        if x != y {
            return Err(fact_error(
                op,
                format!("operands must have the same dtype, got {a} and {b}"),
            ));
        }
    }
    broadcast_facts(op, &[a, b])
}

impl FromOnnx for Compare {
    fn from_onnx(cx: &ParseCtx) -> Result<Self> {
        Ok(match cx.op_type {
            "Equal" => Compare::Equal,
            "Less" => Compare::Less,
            "Greater" => Compare::Greater,
            "LessOrEqual" => Compare::LessOrEqual,
            "GreaterOrEqual" => Compare::GreaterOrEqual,
            other => return Err(cx.attrs.unsupported(format!("{other} is not a comparison"))),
        })
    }
}

impl Op for Compare {
    fn op_type(&self) -> &'static str {
        self.name()
    }
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        Ok(vec![self.apply(input(inputs, 0, "A")?, input(inputs, 1, "B")?)?])
    }
    fn output_facts(&self, inputs: &[Option<&ValueFact>], _constants: &[Option<&Tensor>]) -> Result<Vec<ValueFact>> {
        let op = self.name();
        let (a, b) = (required(inputs, 0, op, "A")?, required(inputs, 1, op, "B")?);
        Ok(vec![ValueFact::new(Some(DType::Bool), same_dtype_broadcast(op, a, b)?)])
    }
    fn ptq_class(&self, _n: &NodeFacts) -> Class {
        Class::FloatIsland(format!("{} compares real values", self.name()))
    }
    fn data_inputs(&self) -> DataInputs {
        DataInputs::All
    }
    fn carries_activation(&self) -> bool {
        false
    }
}
