//! LRN: local response normalization across channels.

use crate::error::{Error, Result};
use crate::onnx::attrs::AttrValue;
use crate::ops::facts::{expect_min_rank, float_like, required};
use crate::ops::{input, FromOnnx, Op, ParseCtx, ValueFact};
use crate::tensor::Tensor;
use rayon::prelude::*;

/// Local response normalization across channels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Lrn {
    pub size: usize,
    pub alpha: f32,
    pub beta: f32,
    pub bias: f32,
}

impl Lrn {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0, "X")?;
        let s = x.shape();
        if s.len() < 3 {
            return Err(Error::shape(format!(
                "LRN needs an input [N, C, spatial...], got {s:?}"
            )));
        }
        let (c, inner) = (s[1], s[2..].iter().product::<usize>());
        let xv = x.as_slice::<f32>()?;
        let lo = (self.size - 1) / 2;
        let hi = self.size - 1 - lo;
        let mut y = vec![0f32; xv.len()];
        y.par_chunks_mut(inner.max(1)).enumerate().for_each(|(i, plane)| {
            let (n, ch) = (i / c, i % c);
            let c0 = ch.saturating_sub(lo);
            let c1 = (ch + hi).min(c - 1);
            for (k, out) in plane.iter_mut().enumerate() {
                let mut sq = 0f32;
                for cc in c0..=c1 {
                    let v = xv[(n * c + cc) * inner + k];
                    sq += v * v;
                }
                let v = xv[(n * c + ch) * inner + k];
                *out = v / (self.bias + self.alpha / self.size as f32 * sq).powf(self.beta);
            }
        });
        Ok(vec![Tensor::from_vec(s.to_vec(), y)?])
    }
}

impl FromOnnx for Lrn {
    fn from_onnx(cx: &ParseCtx) -> Result<Self> {
        let a = cx.attrs;
        let size = a
            .int_opt("size")?
            .ok_or_else(|| Error::format(format!("node '{}' (LRN): size is required", a.node)))?;
        if size < 1 {
            return Err(Error::format(format!(
                "node '{}' (LRN): size must be >= 1, got {size}",
                a.node
            )));
        }
        Ok(Lrn {
            size: size as usize,
            alpha: a.float("alpha", 1e-4)?,
            beta: a.float("beta", 0.75)?,
            bias: a.float("bias", 1.0)?,
        })
    }
}

impl Op for Lrn {
    fn op_type(&self) -> &'static str {
        "LRN"
    }
    fn to_attrs(&self, _opset: i64) -> Vec<(String, AttrValue)> {
        vec![
            ("size".into(), AttrValue::Int(self.size as i64)),
            ("alpha".into(), AttrValue::Float(self.alpha)),
            ("beta".into(), AttrValue::Float(self.beta)),
            ("bias".into(), AttrValue::Float(self.bias)),
        ]
    }
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        self.run(inputs)
    }
    fn output_facts(&self, inputs: &[Option<&ValueFact>], _constants: &[Option<&Tensor>]) -> Result<Vec<ValueFact>> {
        expect_min_rank("LRN", required(inputs, 0, "LRN", "X")?, "X", 3, "[N, C, spatial...]")?;
        float_like("LRN", inputs, "X")
    }
}
