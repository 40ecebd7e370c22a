//! Swish (opset 24: `x * sigmoid(alpha * x)`, element-wise) and MeanVarianceNormalization
//! (`(x - mean) / (std + 1e-9)` over `axes`, default [0, 2, 3]).

use crate::error::{Error, Result};
use crate::onnx::attrs::AttrValue;
use crate::ops::facts::{fact_axis, float_like, required};
use crate::ops::{input, norm_axis, FromOnnx, Op, ParseCtx, ValueFact};
use crate::tensor::{strides, Tensor};

#[derive(Debug, Clone, PartialEq)]
pub struct Swish {
    pub alpha: f32,
}

impl FromOnnx for Swish {
    fn from_onnx(cx: &ParseCtx) -> Result<Self> {
        Ok(Swish {
            alpha: cx.attrs.float("alpha", 1.0)?,
        })
    }
}

impl Swish {
    fn apply(&self, v: &mut [f32]) {
        for x in v {
            *x *= 1.0 / (1.0 + (-self.alpha * *x).exp());
        }
    }
}

impl Op for Swish {
    fn op_type(&self) -> &'static str {
        "Swish"
    }
    fn to_attrs(&self, _opset: i64) -> Vec<(String, AttrValue)> {
        if self.alpha == 1.0 {
            Vec::new()
        } else {
            vec![("alpha".into(), AttrValue::Float(self.alpha))]
        }
    }
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        Ok(vec![self.eval_in_place(input(inputs, 0, "X")?.clone(), &[])?])
    }
    fn has_in_place(&self) -> bool {
        true
    }
    fn eval_in_place(&self, mut x: Tensor, _rest: &[Option<&Tensor>]) -> Result<Tensor> {
        self.apply(x.as_mut_slice::<f32>()?);
        Ok(x)
    }
    fn output_facts(&self, inputs: &[Option<&ValueFact>], _constants: &[Option<&Tensor>]) -> Result<Vec<ValueFact>> {
        float_like("Swish", inputs, "X")
    }
    fn elementwise(&self) -> bool {
        true
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct MeanVarianceNorm {
    pub axes: Vec<i64>,
}

impl FromOnnx for MeanVarianceNorm {
    fn from_onnx(cx: &ParseCtx) -> Result<Self> {
        Ok(MeanVarianceNorm {
            axes: cx.attrs.ints_opt("axes")?.unwrap_or_else(|| vec![0, 2, 3]),
        })
    }
}

impl MeanVarianceNorm {
    fn run(&self, x: &Tensor) -> Result<Tensor> {
        let xs = x.shape();
        let mut reduced = vec![false; xs.len()];
        for &a in &self.axes {
            let d = norm_axis(a, xs.len()).map_err(|e| Error::shape(format!("MeanVarianceNormalization: {e}")))?;
            reduced[d] = true;
        }
        let xv = x.as_slice::<f32>()?;
        let st = strides(xs);
        // The group of each element: its index with the reduced axes dropped.
        let kept: Vec<usize> = (0..xs.len()).filter(|&d| !reduced[d]).collect();
        let groups: usize = kept.iter().map(|&d| xs[d]).product();
        let group_of = |i: usize| kept.iter().fold(0, |g, &d| g * xs[d] + (i / st[d]) % xs[d]);
        let mut sum = vec![0.0f64; groups];
        let mut count = vec![0usize; groups];
        for (i, &v) in xv.iter().enumerate() {
            let g = group_of(i);
            sum[g] += v as f64;
            count[g] += 1;
        }
        let mean: Vec<f64> = sum.iter().zip(&count).map(|(s, &c)| s / c.max(1) as f64).collect();
        let mut sq = vec![0.0f64; groups];
        for (i, &v) in xv.iter().enumerate() {
            let g = group_of(i);
            sq[g] += (v as f64 - mean[g]).powi(2);
        }
        let scale: Vec<f64> = sq
            .iter()
            .zip(&count)
            .map(|(s, &c)| 1.0 / ((s / c.max(1) as f64).sqrt() + 1e-9))
            .collect();
        let y: Vec<f32> = xv
            .iter()
            .enumerate()
            .map(|(i, &v)| {
                let g = group_of(i);
                ((v as f64 - mean[g]) * scale[g]) as f32
            })
            .collect();
        Tensor::from_vec(xs.to_vec(), y)
    }
}

impl Op for MeanVarianceNorm {
    fn op_type(&self) -> &'static str {
        "MeanVarianceNormalization"
    }
    fn to_attrs(&self, _opset: i64) -> Vec<(String, AttrValue)> {
        // Always written: onnx's checker fails the function body of the default axes.
        vec![("axes".into(), AttrValue::Ints(self.axes.clone()))]
    }
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        Ok(vec![self.run(input(inputs, 0, "X")?)?])
    }
    fn output_facts(&self, inputs: &[Option<&ValueFact>], _constants: &[Option<&Tensor>]) -> Result<Vec<ValueFact>> {
        const OP: &str = "MeanVarianceNormalization";
        let x = required(inputs, 0, OP, "X")?;
        if let Some(r) = x.rank() {
            for &a in &self.axes {
                fact_axis(OP, a, r)?;
            }
        }
        float_like(OP, inputs, "X")
    }
}
