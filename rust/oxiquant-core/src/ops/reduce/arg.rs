//! ArgMax and ArgMin (keepdims, select_last_index from opset 12).

use crate::error::{Error, Result};
use crate::onnx::attrs::AttrValue;
use crate::ops::facts::{expect_dtype, fact_axis, required};
use crate::ops::{input, norm_axis, Class, DimFact, FromOnnx, NodeFacts, Op, ParseCtx, ValueFact};
use crate::tensor::{DType, Tensor, TensorData};

#[derive(Debug, Clone, PartialEq)]
pub struct ArgReduce {
    /// ArgMax; ArgMin otherwise.
    pub max: bool,
    pub axis: i64,
    pub keepdims: bool,
    pub select_last_index: bool,
}

const DTYPES: &[DType] = &[DType::F32, DType::I32, DType::I64, DType::U8, DType::I8];

impl FromOnnx for ArgReduce {
    fn from_onnx(cx: &ParseCtx) -> Result<Self> {
        Ok(ArgReduce {
            max: cx.op_type == "ArgMax",
            axis: cx.attrs.int("axis", 0)?,
            keepdims: cx.attrs.int("keepdims", 1)? != 0,
            select_last_index: cx.opset >= 12 && cx.attrs.int("select_last_index", 0)? != 0,
        })
    }
}

/// The index of the best of `len` values `inner` apart from `base` in `v`.
fn best<T: PartialOrd + Copy>(v: &[T], base: usize, len: usize, inner: usize, max: bool, last: bool) -> i64 {
    let mut bi = 0;
    let mut b = v[base];
    for k in 1..len {
        let x = v[base + k * inner];
        let better = if max { x > b } else { x < b };
        if better || (last && x == b) {
            bi = k;
            b = x;
        }
    }
    bi as i64
}

impl Op for ArgReduce {
    fn op_type(&self) -> &'static str {
        if self.max {
            "ArgMax"
        } else {
            "ArgMin"
        }
    }
    fn to_attrs(&self, _opset: i64) -> Vec<(String, AttrValue)> {
        let mut v = vec![("axis".to_string(), AttrValue::Int(self.axis))];
        if !self.keepdims {
            v.push(("keepdims".into(), AttrValue::Int(0)));
        }
        if self.select_last_index {
            v.push(("select_last_index".into(), AttrValue::Int(1)));
        }
        v
    }
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0, "data")?;
        let s = x.shape();
        let a = norm_axis(self.axis, s.len())?;
        let len = s[a];
        let outer: usize = s[..a].iter().product();
        let inner: usize = s[a + 1..].iter().product();
        let mut shape = s.to_vec();
        if self.keepdims {
            shape[a] = 1;
        } else {
            shape.remove(a);
        }
        if len == 0 && outer * inner > 0 {
            return Err(Error::shape(format!("{}: axis {a} of {s:?} is empty", self.op_type())));
        }
        let mut out = Vec::with_capacity(outer * inner);
        let (m, l) = (self.max, self.select_last_index);
        for o in 0..outer {
            for i in 0..inner {
                let base = o * len * inner + i;
                out.push(match x.data() {
                    TensorData::F32(v) => best(v, base, len, inner, m, l),
                    TensorData::I32(v) => best(v, base, len, inner, m, l),
                    TensorData::I64(v) => best(v, base, len, inner, m, l),
                    TensorData::U8(v) => best(v, base, len, inner, m, l),
                    TensorData::I8(v) => best(v, base, len, inner, m, l),
                    TensorData::I16(v) => best(v, base, len, inner, m, l),
                    TensorData::U16(v) => best(v, base, len, inner, m, l),
                    TensorData::U32(v) => best(v, base, len, inner, m, l),
                    TensorData::U64(v) => best(v, base, len, inner, m, l),
                    TensorData::Bool(_) => {
                        return Err(Error::shape(format!("{}: bool input is not supported", self.op_type())))
                    }
                });
            }
        }
        Ok(vec![Tensor::from_vec(shape, out)?])
    }
    fn output_facts(&self, inputs: &[Option<&ValueFact>], _constants: &[Option<&Tensor>]) -> Result<Vec<ValueFact>> {
        let op = self.op_type();
        let x = required(inputs, 0, op, "data")?;
        expect_dtype(op, x, "data", DTYPES)?;
        let shape = match &x.shape {
            Some(s) => {
                let a = fact_axis(op, self.axis, s.len())?;
                let mut s = s.clone();
                if self.keepdims {
                    s[a] = DimFact::Known(1);
                } else {
                    s.remove(a);
                }
                Some(s)
            }
            None => None,
        };
        Ok(vec![ValueFact::new(Some(DType::I64), shape)])
    }
    fn ptq_class(&self, _n: &NodeFacts) -> Class {
        Class::Passive
    }
    fn carries_activation(&self) -> bool {
        false
    }
}
