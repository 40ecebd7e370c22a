//! Generated values: the window functions (HannWindow, HammingWindow, BlackmanWindow) of a
//! size given as an input, and EyeLike (a 2-D tensor with ones on one diagonal).

use crate::error::{Error, Result};
use crate::onnx::attrs::AttrValue;
use crate::ops::facts::{constant, expect_dtype, fact_error, required, DimFact};
use crate::ops::{input, Class, FromOnnx, NodeFacts, Op, ParseCtx, ValueFact};
use crate::tensor::{DType, Tensor};
use std::f64::consts::PI;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowKind {
    Hann,
    Hamming,
    Blackman,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    pub kind: WindowKind,
    /// Periodic (the window of `size + 1` points without its last); symmetric otherwise.
    pub periodic: bool,
    pub dtype: DType,
}

fn dtype_attr(cx: &ParseCtx, name: &str, default: i64) -> Result<Option<DType>> {
    match cx.attrs.int_opt(name)? {
        None if default == 0 => Ok(None),
        v => {
            let code = v.unwrap_or(default);
            // float16 and float64 are computed in float32, as everywhere in the engine.
            let code = if code == 10 || code == 11 { 1 } else { code };
            DType::from_onnx_code(code as i32).map(Some).ok_or_else(|| {
                cx.attrs
                    .unsupported(format!("{name}={code} (an element type the engine lacks)"))
            })
        }
    }
}

impl FromOnnx for Window {
    fn from_onnx(cx: &ParseCtx) -> Result<Self> {
        let kind = match cx.op_type {
            "HannWindow" => WindowKind::Hann,
            "HammingWindow" => WindowKind::Hamming,
            _ => WindowKind::Blackman,
        };
        Ok(Window {
            kind,
            periodic: cx.attrs.int("periodic", 1)? != 0,
            dtype: dtype_attr(cx, "output_datatype", 1)?.unwrap_or(DType::F32),
        })
    }
}

impl Window {
    /// Element `n` of a window of `size` points.
    pub fn value(&self, n: usize, size: usize) -> f64 {
        let period = if self.periodic { size } else { size.saturating_sub(1) };
        let t = 2.0 * PI * n as f64 / period as f64;
        match self.kind {
            WindowKind::Hann => 0.5 - 0.5 * t.cos(),
            WindowKind::Hamming => 25.0 / 46.0 - (21.0 / 46.0) * t.cos(),
            WindowKind::Blackman => 0.42 - 0.5 * t.cos() + 0.08 * (2.0 * t).cos(),
        }
    }
}

fn size_of(op: &str, t: &Tensor) -> Result<usize> {
    match t.to_i64_vec()?.as_slice() {
        [n] if t.rank() == 0 && *n >= 0 => Ok(*n as usize),
        _ => Err(Error::shape(format!(
            "{op}: size must be a non-negative scalar, got {:?} of shape {:?}",
            t.to_i64_vec()?,
            t.shape()
        ))),
    }
}

impl Op for Window {
    fn op_type(&self) -> &'static str {
        match self.kind {
            WindowKind::Hann => "HannWindow",
            WindowKind::Hamming => "HammingWindow",
            WindowKind::Blackman => "BlackmanWindow",
        }
    }
    fn to_attrs(&self, _opset: i64) -> Vec<(String, AttrValue)> {
        vec![
            ("periodic".to_string(), AttrValue::Int(self.periodic as i64)),
            (
                "output_datatype".to_string(),
                AttrValue::Int(self.dtype.onnx_code() as i64),
            ),
        ]
    }
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let n = size_of(self.op_type(), input(inputs, 0, "size")?)?;
        let v: Vec<f32> = (0..n).map(|i| self.value(i, n) as f32).collect();
        Ok(vec![Tensor::from_vec(vec![n], v)?.cast(self.dtype)])
    }
    fn output_facts(&self, inputs: &[Option<&ValueFact>], constants: &[Option<&Tensor>]) -> Result<Vec<ValueFact>> {
        let op = self.op_type();
        let s = required(inputs, 0, op, "size")?;
        expect_dtype(op, s, "size", &[DType::I32, DType::I64])?;
        if s.rank().is_some_and(|r| r != 0) {
            return Err(fact_error(
                op,
                format!("size must be a scalar, got {}", s.shape_string()),
            ));
        }
        let dim = match constant(constants, 0) {
            Some(t) => DimFact::Known(size_of(op, t)?),
            None => DimFact::Unknown,
        };
        Ok(vec![ValueFact::new(Some(self.dtype), Some(vec![dim]))])
    }
    fn carries_activation(&self) -> bool {
        false
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct EyeLike {
    /// The output type (the input's when `None`).
    pub dtype: Option<DType>,
    pub k: i64,
}

impl FromOnnx for EyeLike {
    fn from_onnx(cx: &ParseCtx) -> Result<Self> {
        Ok(EyeLike {
            dtype: dtype_attr(cx, "dtype", 0)?,
            k: cx.attrs.int("k", 0)?,
        })
    }
}

impl Op for EyeLike {
    fn op_type(&self) -> &'static str {
        "EyeLike"
    }
    fn to_attrs(&self, _opset: i64) -> Vec<(String, AttrValue)> {
        let mut v = vec![("k".to_string(), AttrValue::Int(self.k))];
        if let Some(d) = self.dtype {
            v.push(("dtype".to_string(), AttrValue::Int(d.onnx_code() as i64)));
        }
        v
    }
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0, "input")?;
        let s = x.shape();
        if s.len() != 2 {
            return Err(Error::shape(format!("EyeLike: input must be 2-D, got {s:?}")));
        }
        let (r, c) = (s[0], s[1]);
        let mut v = vec![0f32; r * c];
        for i in 0..r {
            let j = i as i64 + self.k;
            if (0..c as i64).contains(&j) {
                v[i * c + j as usize] = 1.0;
            }
        }
        Ok(vec![
            Tensor::from_vec(vec![r, c], v)?.cast(self.dtype.unwrap_or(x.dtype()))
        ])
    }
    fn output_facts(&self, inputs: &[Option<&ValueFact>], _constants: &[Option<&Tensor>]) -> Result<Vec<ValueFact>> {
        let x = required(inputs, 0, "EyeLike", "input")?;
        if x.rank().is_some_and(|r| r != 2) {
            return Err(fact_error(
                "EyeLike",
                format!("input must be 2-D, got {}", x.shape_string()),
            ));
        }
        let dtype = self.dtype.or(x.dtype);
        Ok(vec![ValueFact::new(dtype, x.shape.clone())])
    }
    fn ptq_class(&self, _n: &NodeFacts) -> Class {
        // Reads only its input's shape.
        Class::Passive
    }
    fn carries_activation(&self) -> bool {
        false
    }
}
