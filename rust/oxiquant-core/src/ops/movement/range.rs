//! Range, Size and NonZero: values computed from shapes and scalars (no activation flows
//! through them).

use crate::error::{Error, Result};
use crate::ops::facts::{constant, expect_dtype, fact_error, required};
use crate::ops::{input, Class, DimFact, FromOnnx, NodeFacts, Op, ParseCtx, ValueFact};
use crate::tensor::{check_alloc, numel, DType, Tensor, TensorData};

#[derive(Debug, Clone, PartialEq)]
pub struct Range;

impl FromOnnx for Range {
    fn from_onnx(cx: &ParseCtx) -> Result<Self> {
        // Range-27's `stash_type` (the type of the intermediate computation): the default,
        // float, is what every older Range does; another one is refused.
        if let Some(t) = cx.attrs.int_opt("stash_type")? {
            if t != 1 {
                return Err(cx.attrs.unsupported(format!("stash_type {t}")));
            }
        }
        Ok(Range)
    }
}

/// The element count of `start..limit` by `delta`, as onnxruntime computes it (in f64).
fn range_len(start: f64, limit: f64, delta: f64) -> Result<usize> {
    if delta == 0.0 {
        return Err(Error::shape("Range: delta is 0".to_string()));
    }
    let n = ((limit - start) / delta).ceil();
    if n.is_nan() {
        return Err(Error::shape(format!(
            "Range: no element count from start {start}, limit {limit}, delta {delta}"
        )));
    }
    let n = n.max(0.0);
    if n > (1u64 << 40) as f64 {
        return Err(Error::shape(format!("Range: {n} elements is too many")));
    }
    Ok(n as usize)
}

fn scalar_of(t: &Tensor, what: &str) -> Result<()> {
    if t.len() != 1 || t.rank() > 1 {
        return Err(Error::shape(format!(
            "Range: {what} must be a scalar, got shape {:?}",
            t.shape()
        )));
    }
    Ok(())
}

fn range_of(inputs: &[Option<&Tensor>]) -> Result<Tensor> {
    let s = input(inputs, 0, "start")?;
    let l = input(inputs, 1, "limit")?;
    let d = input(inputs, 2, "delta")?;
    for (t, w) in [(s, "start"), (l, "limit"), (d, "delta")] {
        scalar_of(t, w)?;
        if t.dtype() != s.dtype() {
            return Err(Error::shape(format!(
                "Range: {w} is {}, start is {}",
                t.dtype(),
                s.dtype()
            )));
        }
    }
    let data = match (s.data(), l.data(), d.data()) {
        (TensorData::F32(s), TensorData::F32(l), TensorData::F32(d)) => {
            // The difference in f32, as onnxruntime takes it; the values by accumulation.
            let n = range_len(0.0, (l[0] - s[0]) as f64, d[0] as f64)?;
            check_alloc(&[n], 4)?;
            let mut v = Vec::with_capacity(n);
            let mut x = s[0];
            for _ in 0..n {
                v.push(x);
                x += d[0];
            }
            TensorData::F32(v)
        }
        (TensorData::I64(s), TensorData::I64(l), TensorData::I64(d)) => {
            let n = range_len(s[0] as f64, l[0] as f64, d[0] as f64)?;
            check_alloc(&[n], 8)?;
            TensorData::I64((0..n as i64).map(|i| s[0].wrapping_add(i.wrapping_mul(d[0]))).collect())
        }
        (TensorData::I32(s), TensorData::I32(l), TensorData::I32(d)) => {
            let n = range_len(s[0] as f64, l[0] as f64, d[0] as f64)?;
            check_alloc(&[n], 4)?;
            TensorData::I32((0..n as i32).map(|i| s[0].wrapping_add(i.wrapping_mul(d[0]))).collect())
        }
        _ => {
            return Err(Error::shape(format!(
                "Range: inputs must be float32, int32 or int64, got {}",
                s.dtype()
            )))
        }
    };
    let n = crate::dispatch_data!(&data, v => v.len());
    Tensor::new(vec![n], data)
}

impl Op for Range {
    fn op_type(&self) -> &'static str {
        "Range"
    }
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        Ok(vec![range_of(inputs)?])
    }
    fn output_facts(&self, inputs: &[Option<&ValueFact>], constants: &[Option<&Tensor>]) -> Result<Vec<ValueFact>> {
        let op = "Range";
        let mut dtype = None;
        for (i, w) in ["start", "limit", "delta"].iter().enumerate() {
            let f = required(inputs, i, op, w)?;
            expect_dtype(op, f, w, &[DType::F32, DType::I32, DType::I64])?;
            if f.numel().is_some_and(|n| n != 1) || f.rank().is_some_and(|r| r > 1) {
                return Err(fact_error(op, format!("{w} must be a scalar, got {f}")));
            }
            match (dtype, f.dtype) {
                (Some(a), Some(b)) if a != b => {
                    return Err(fact_error(op, format!("{w} is {b}, another input is {a}")));
                }
                (None, b) => dtype = b,
                _ => {}
            }
        }
        let len = if (0..3).all(|i| constant(constants, i).is_some()) {
            let consts: Vec<Option<&Tensor>> = (0..3).map(|i| constant(constants, i)).collect();
            DimFact::Known(range_of(&consts).map_err(crate::ops::facts::in_op(op))?.len())
        } else {
            DimFact::Unknown
        };
        Ok(vec![ValueFact::new(dtype, Some(vec![len]))])
    }
    fn ptq_class(&self, _n: &NodeFacts) -> Class {
        Class::Passive
    }
    fn carries_activation(&self) -> bool {
        false
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Size;

impl FromOnnx for Size {
    fn from_onnx(_cx: &ParseCtx) -> Result<Self> {
        Ok(Size)
    }
}

impl Op for Size {
    fn op_type(&self) -> &'static str {
        "Size"
    }
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0, "data")?;
        Ok(vec![Tensor::scalar(numel(x.shape()) as i64)])
    }
    fn output_facts(&self, inputs: &[Option<&ValueFact>], _constants: &[Option<&Tensor>]) -> Result<Vec<ValueFact>> {
        required(inputs, 0, "Size", "data")?;
        Ok(vec![ValueFact::concrete(DType::I64, &[])])
    }
    fn ptq_class(&self, _n: &NodeFacts) -> Class {
        Class::Passive
    }
    fn carries_activation(&self) -> bool {
        false
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct NonZero;

impl FromOnnx for NonZero {
    fn from_onnx(_cx: &ParseCtx) -> Result<Self> {
        Ok(NonZero)
    }
}

impl Op for NonZero {
    fn op_type(&self) -> &'static str {
        "NonZero"
    }
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0, "X")?;
        // A scalar counts as one element of a 1-D tensor (as numpy and onnxruntime do).
        let shape: Vec<usize> = if x.rank() == 0 { vec![1] } else { x.shape().to_vec() };
        let nz: Vec<bool> = crate::dispatch_data!(x.data(), v => v.iter().map(|&a| crate::tensor::CastElement::is_nonzero(a)).collect());
        let r = shape.len();
        let hits: Vec<usize> = nz.iter().enumerate().filter(|(_, &b)| b).map(|(i, _)| i).collect();
        let n = hits.len();
        let mut out = vec![0i64; r * n];
        for (k, &flat) in hits.iter().enumerate() {
            let mut rest = flat;
            for d in (0..r).rev() {
                out[d * n + k] = (rest % shape[d]) as i64;
                rest /= shape[d];
            }
        }
        Ok(vec![Tensor::from_vec(vec![r, n], out)?])
    }
    fn output_facts(&self, inputs: &[Option<&ValueFact>], constants: &[Option<&Tensor>]) -> Result<Vec<ValueFact>> {
        let x = required(inputs, 0, "NonZero", "X")?;
        // Its length is a count of values: known only of a constant.
        if let Some(t) = constant(constants, 0) {
            return Ok(vec![ValueFact::of_tensor(&self.eval(&[Some(t)])?[0])]);
        }
        let r = x.rank().map(|r| DimFact::Known(r.max(1))).unwrap_or(DimFact::Unknown);
        let n = if x.numel() == Some(0) {
            DimFact::Known(0)
        } else {
            DimFact::Unknown
        };
        Ok(vec![ValueFact::new(Some(DType::I64), Some(vec![r, n]))])
    }
    fn ptq_class(&self, _n: &NodeFacts) -> Class {
        Class::Passive
    }
    fn carries_activation(&self) -> bool {
        false
    }
}
