//! CumSum and CumProd along an axis given as an input (exclusive, reverse).

use crate::error::{Error, Result};
use crate::onnx::attrs::AttrValue;
use crate::ops::facts::{constant, expect_dtype, fact_axis, required};
use crate::ops::{input, norm_axis, FromOnnx, Op, ParseCtx, ValueFact};
use crate::tensor::{DType, Tensor, TensorData};

#[derive(Debug, Clone, PartialEq)]
pub struct CumSum {
    /// CumProd (products, starting from 1); CumSum otherwise.
    pub prod: bool,
    pub exclusive: bool,
    pub reverse: bool,
}

impl FromOnnx for CumSum {
    fn from_onnx(cx: &ParseCtx) -> Result<Self> {
        Ok(CumSum {
            prod: cx.op_type == "CumProd",
            exclusive: cx.attrs.int("exclusive", 0)? != 0,
            reverse: cx.attrs.int("reverse", 0)? != 0,
        })
    }
}

fn axis_of(op: &str, t: &Tensor) -> Result<i64> {
    let v = t.to_i64_vec()?;
    match (v.as_slice(), t.rank()) {
        ([a], 0 | 1) => Ok(*a),
        _ => Err(Error::shape(format!(
            "{op}: axis must be a scalar, got shape {:?}",
            t.shape()
        ))),
    }
}

#[allow(clippy::too_many_arguments)]
fn scan<T: Copy>(v: &mut [T], len: usize, inner: usize, excl: bool, rev: bool, start: T, add: impl Fn(T, T) -> T) {
    if len == 0 || inner == 0 {
        return;
    }
    for blk in v.chunks_mut(len * inner) {
        for i in 0..inner {
            let mut acc = start;
            for step in 0..len {
                let k = if rev { len - 1 - step } else { step };
                let x = blk[k * inner + i];
                if excl {
                    blk[k * inner + i] = acc;
                    acc = add(acc, x);
                } else {
                    acc = add(acc, x);
                    blk[k * inner + i] = acc;
                }
            }
        }
    }
}

impl Op for CumSum {
    fn op_type(&self) -> &'static str {
        if self.prod {
            "CumProd"
        } else {
            "CumSum"
        }
    }
    fn to_attrs(&self, _opset: i64) -> Vec<(String, AttrValue)> {
        let mut v = Vec::new();
        if self.exclusive {
            v.push(("exclusive".to_string(), AttrValue::Int(1)));
        }
        if self.reverse {
            v.push(("reverse".to_string(), AttrValue::Int(1)));
        }
        v
    }
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0, "x")?;
        let op = self.op_type();
        let a = norm_axis(axis_of(op, input(inputs, 1, "axis")?)?, x.rank())?;
        let s = x.shape();
        let (len, inner) = (s[a], s[a + 1..].iter().product::<usize>());
        let (e, r) = (self.exclusive, self.reverse);
        let mut y = x.clone();
        let shape = y.shape().to_vec();
        let (_, mut data) = y.into_parts();
        match &mut data {
            TensorData::F32(v) if self.prod => scan(v, len, inner, e, r, 1.0, |a, b| a * b),
            TensorData::I32(v) if self.prod => scan(v, len, inner, e, r, 1, i32::wrapping_mul),
            TensorData::I64(v) if self.prod => scan(v, len, inner, e, r, 1, i64::wrapping_mul),
            TensorData::F32(v) => scan(v, len, inner, e, r, 0.0, |a, b| a + b),
            TensorData::I32(v) => scan(v, len, inner, e, r, 0, i32::wrapping_add),
            TensorData::I64(v) => scan(v, len, inner, e, r, 0, i64::wrapping_add),
            _ => {
                return Err(Error::shape(format!(
                    "{op}: {} input is not supported (float32, int32, int64)",
                    x.dtype()
                )))
            }
        }
        y = Tensor::new(shape, data)?;
        Ok(vec![y])
    }
    fn output_facts(&self, inputs: &[Option<&ValueFact>], constants: &[Option<&Tensor>]) -> Result<Vec<ValueFact>> {
        let op = self.op_type();
        let x = required(inputs, 0, op, "x")?;
        let ax = required(inputs, 1, op, "axis")?;
        expect_dtype(op, x, "x", &[DType::F32, DType::I32, DType::I64])?;
        expect_dtype(op, ax, "axis", &[DType::I32, DType::I64])?;
        if let (Some(t), Some(r)) = (constant(constants, 1), x.rank()) {
            fact_axis(op, axis_of(op, t)?, r)?;
        }
        Ok(vec![x.clone()])
    }
}
