//! GlobalAveragePool and GlobalMaxPool.

use super::pool::is_8bit;
use crate::error::{Error, Result};
use crate::kernels::pool::global_pool;
use crate::ops::facts::{expect_dtype, expect_min_rank, required};
use crate::ops::{input, Class, DimFact, FromOnnx, NodeFacts, Op, ParseCtx, SignRule, ValueFact};
use crate::tensor::{DType, Tensor};

#[derive(Debug, Clone, PartialEq)]
pub struct GlobalPool {
    pub max: bool,
}

impl FromOnnx for GlobalPool {
    fn from_onnx(cx: &ParseCtx) -> Result<Self> {
        Ok(GlobalPool {
            max: cx.op_type == "GlobalMaxPool",
        })
    }
}

impl Op for GlobalPool {
    fn op_type(&self) -> &'static str {
        if self.max {
            "GlobalMaxPool"
        } else {
            "GlobalAveragePool"
        }
    }
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        if self.max && is_8bit(inputs) {
            return crate::int::IntOp::GlobalPool { max: true }.eval(inputs);
        }
        eval_global(self.max, inputs)
    }
    fn output_facts(&self, inputs: &[Option<&ValueFact>], _constants: &[Option<&Tensor>]) -> Result<Vec<ValueFact>> {
        let op = self.op_type();
        Ok(vec![global_facts(op, self.max, required(inputs, 0, op, "X")?)?])
    }
    fn ptq_class(&self, _n: &NodeFacts) -> Class {
        Class::Seamless
    }
    fn sign_rule(&self, _n: &NodeFacts) -> SignRule {
        SignRule::FollowsInputs
    }
    fn needs_round(&self) -> bool {
        !self.max
    }
}

/// `[N, C, 1, ...]` of the input's dtype (float32; max pooling also uint8 and int8).
pub(crate) fn global_facts(op: &str, max: bool, x: &ValueFact) -> Result<ValueFact> {
    expect_min_rank(op, x, "X", 3, "[N, C, spatial...]")?;
    let dtype = if max {
        expect_dtype(op, x, "X", &[DType::F32, DType::U8, DType::I8])?;
        x.dtype
    } else {
        expect_dtype(op, x, "X", &[DType::F32])?;
        Some(DType::F32)
    };
    let shape = x.rank().map(|r| {
        let mut s = vec![x.dim(0), x.dim(1)];
        s.resize(r, DimFact::Known(1));
        s
    });
    Ok(ValueFact::new(dtype, shape))
}

pub fn eval_global(max: bool, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    let x = input(inputs, 0, "X")?;
    let xs = x.shape();
    if xs.len() < 3 {
        return Err(Error::shape(format!(
            "global pooling needs an input [N, C, spatial...], got {xs:?}"
        )));
    }
    let planes = xs[0] * xs[1];
    let plane: usize = xs[2..].iter().product();
    let y = global_pool(x.as_slice::<f32>()?, planes, plane, max);
    let mut shape = vec![xs[0], xs[1]];
    shape.extend(std::iter::repeat_n(1, xs.len() - 2));
    Ok(vec![Tensor::from_vec(shape, y)?])
}
