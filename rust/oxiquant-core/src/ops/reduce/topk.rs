//! TopK: the k largest (or smallest) elements along an axis and their indices, ties broken
//! by the lower index (as onnxruntime does).

use crate::error::{Error, Result};
use crate::onnx::attrs::AttrValue;
use crate::ops::facts::{constant, expect_dtype, fact_axis, fact_error, in_op, optional, required};
use crate::ops::{input, norm_axis, Class, DimFact, FromOnnx, NodeFacts, Op, ParseCtx, ValueFact};
use crate::tensor::{check_alloc, DType, Tensor, TensorData};
use std::cmp::Ordering;

#[derive(Debug, Clone, PartialEq)]
pub struct TopK {
    pub axis: i64,
    /// The `k` attribute (opset < 10); an input from opset 10.
    pub k: Option<i64>,
    pub largest: bool,
}

const DTYPES: &[DType] = &[DType::F32, DType::I32, DType::I64, DType::U8, DType::I8];

impl FromOnnx for TopK {
    fn from_onnx(cx: &ParseCtx) -> Result<Self> {
        let k =
            if cx.opset < 10 {
                Some(cx.attrs.int_opt("k")?.ok_or_else(|| {
                    Error::format(format!("node '{}' (TopK): attribute 'k' is required", cx.attrs.node))
                })?)
            } else {
                None
            };
        let (largest, sorted) = if cx.opset >= 11 {
            (cx.attrs.int("largest", 1)? != 0, cx.attrs.int("sorted", 1)? != 0)
        } else {
            (true, true)
        };
        if !sorted {
            // The order is left to the implementation; onnxruntime's is not reproduced.
            return Err(cx.attrs.unsupported("sorted=0 (onnxruntime's unsorted order)"));
        }
        Ok(TopK {
            axis: cx.attrs.int("axis", -1)?,
            k,
            largest,
        })
    }
}

fn k_of(t: &Tensor) -> Result<i64> {
    match t.to_i64_vec()?.as_slice() {
        [k] if t.rank() <= 1 => Ok(*k),
        _ => Err(Error::shape(format!(
            "TopK: K must hold one value, got shape {:?}",
            t.shape()
        ))),
    }
}

/// The order of two (value, index) pairs: the wanted values first, then the lower index.
fn order<T: PartialOrd>(a: &(T, usize), b: &(T, usize), largest: bool) -> Ordering {
    let by_value = if largest {
        b.0.partial_cmp(&a.0)
    } else {
        a.0.partial_cmp(&b.0)
    };
    match by_value {
        Some(Ordering::Equal) | None => a.1.cmp(&b.1),
        Some(o) => o,
    }
}

fn topk<T: PartialOrd + Copy>(
    v: &[T],
    outer: usize,
    len: usize,
    inner: usize,
    k: usize,
    largest: bool,
) -> (Vec<T>, Vec<i64>) {
    let mut vals = Vec::with_capacity(outer * k * inner);
    let mut idx = vec![0i64; outer * k * inner];
    let mut out = Vec::with_capacity(outer * k * inner);
    let mut col: Vec<(T, usize)> = Vec::with_capacity(len);
    for o in 0..outer {
        for i in 0..inner {
            col.clear();
            col.extend((0..len).map(|j| (v[(o * len + j) * inner + i], j)));
            col.sort_by(|a, b| order(a, b, largest));
            for (j, &(x, at)) in col.iter().take(k).enumerate() {
                out.push(((o * k + j) * inner + i, x, at));
            }
        }
    }
    out.sort_unstable_by_key(|e| e.0);
    for (pos, x, at) in out {
        vals.push(x);
        idx[pos] = at as i64;
    }
    (vals, idx)
}

impl Op for TopK {
    fn op_type(&self) -> &'static str {
        "TopK"
    }
    fn to_attrs(&self, _opset: i64) -> Vec<(String, AttrValue)> {
        let mut v = vec![("axis".to_string(), AttrValue::Int(self.axis))];
        if let Some(k) = self.k {
            v.push(("k".into(), AttrValue::Int(k)));
        }
        if !self.largest {
            v.push(("largest".into(), AttrValue::Int(0)));
        }
        v
    }
    fn num_outputs(&self) -> usize {
        2
    }
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0, "X")?;
        let k = match self.k {
            Some(k) => k,
            None => k_of(input(inputs, 1, "K")?)?,
        };
        let s = x.shape();
        let a = norm_axis(self.axis, s.len())?;
        let len = s[a];
        if k < 0 || k as usize > len {
            return Err(Error::shape(format!(
                "TopK: k {k} out of range for axis {a} of size {len}"
            )));
        }
        let k = k as usize;
        let outer: usize = s[..a].iter().product();
        let inner: usize = s[a + 1..].iter().product();
        let mut shape = s.to_vec();
        shape[a] = k;
        check_alloc(&shape, 8)?;
        let l = self.largest;
        let (values, idx) = match x.data() {
            TensorData::F32(v) => {
                let (a, b) = topk(v, outer, len, inner, k, l);
                (TensorData::F32(a), b)
            }
            TensorData::I32(v) => {
                let (a, b) = topk(v, outer, len, inner, k, l);
                (TensorData::I32(a), b)
            }
            TensorData::I64(v) => {
                let (a, b) = topk(v, outer, len, inner, k, l);
                (TensorData::I64(a), b)
            }
            TensorData::U8(v) => {
                let (a, b) = topk(v, outer, len, inner, k, l);
                (TensorData::U8(a), b)
            }
            TensorData::I8(v) => {
                let (a, b) = topk(v, outer, len, inner, k, l);
                (TensorData::I8(a), b)
            }
            TensorData::I16(v) => {
                let (a, b) = topk(v, outer, len, inner, k, l);
                (TensorData::I16(a), b)
            }
            TensorData::U16(v) => {
                let (a, b) = topk(v, outer, len, inner, k, l);
                (TensorData::U16(a), b)
            }
            TensorData::U32(v) => {
                let (a, b) = topk(v, outer, len, inner, k, l);
                (TensorData::U32(a), b)
            }
            TensorData::U64(v) => {
                let (a, b) = topk(v, outer, len, inner, k, l);
                (TensorData::U64(a), b)
            }
            TensorData::Bool(_) => return Err(Error::shape("TopK: bool input is not supported".to_string())),
        };
        Ok(vec![Tensor::new(shape.clone(), values)?, Tensor::from_vec(shape, idx)?])
    }
    fn output_facts(&self, inputs: &[Option<&ValueFact>], constants: &[Option<&Tensor>]) -> Result<Vec<ValueFact>> {
        let op = "TopK";
        let x = required(inputs, 0, op, "X")?;
        expect_dtype(op, x, "X", DTYPES)?;
        let k = match (self.k, optional(inputs, 1)) {
            (Some(k), _) => Some(k),
            (None, None) => return Err(fact_error(op, "missing required input #1 (K)")),
            (None, Some(kf)) => {
                expect_dtype(op, kf, "K", &[DType::I64])?;
                constant(constants, 1).map(|t| k_of(t).map_err(in_op(op))).transpose()?
            }
        };
        let shape = match &x.shape {
            Some(s) => {
                let a = fact_axis(op, self.axis, s.len())?;
                let mut s = s.clone();
                if let (Some(k), Some(n)) = (k, s[a].known()) {
                    if k < 0 || k as usize > n {
                        return Err(fact_error(op, format!("k {k} out of range for axis {a} of {x}")));
                    }
                }
                s[a] = k.map_or(DimFact::Unknown, |k| DimFact::Known(k.max(0) as usize));
                Some(s)
            }
            None => None,
        };
        Ok(vec![
            ValueFact::new(x.dtype, shape.clone()),
            ValueFact::new(Some(DType::I64), shape),
        ])
    }
    fn ptq_class(&self, _n: &NodeFacts) -> Class {
        // Selects elements; the indices output is an integer.
        Class::FloatIsland("TopK also returns indices".into())
    }
}
