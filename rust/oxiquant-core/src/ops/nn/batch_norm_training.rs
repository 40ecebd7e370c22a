//! BatchNormalization in training mode (opset 14 and newer, `training_mode=1`): normalizes
//! with the batch's own per-channel mean and (population) variance and returns the running
//! statistics `input * momentum + batch * (1 - momentum)` as its optional outputs. Deterministic
//! (nothing random), computed in f64. A float island for the PTQ.

use super::batch_norm::{checked_inputs, BatchNorm};
use crate::error::{Error, Result};
use crate::onnx::attrs::AttrValue;
use crate::ops::{input, FromOnnx, Op, ParseCtx, ValueFact};
use crate::tensor::{DType, Tensor};

#[derive(Debug, Clone, PartialEq)]
pub struct BatchNormTraining {
    pub epsilon: f32,
    pub momentum: f32,
    /// 1 (Y), or 3 (Y, running_mean, running_var).
    pub outputs: usize,
}

/// BatchNormalization's parser: the training form when `training_mode=1`, else inference.
pub fn parse_batch_norm(cx: &ParseCtx) -> Result<Box<dyn crate::ops::Op>> {
    if cx.opset >= 14 && cx.attrs.int("training_mode", 0)? != 0 {
        Ok(Box::new(BatchNormTraining::from_onnx(cx)?))
    } else {
        Ok(Box::new(BatchNorm::from_onnx(cx)?))
    }
}

impl FromOnnx for BatchNormTraining {
    fn from_onnx(cx: &ParseCtx) -> Result<Self> {
        let a = cx.attrs;
        a.int("training_mode", 0)?;
        let outputs = match cx.outputs {
            1 => 1,
            3 => 3,
            n => return Err(a.unsupported(format!("{n} outputs in training mode (1 or 3)"))),
        };
        Ok(BatchNormTraining {
            epsilon: a.float("epsilon", 1e-5)?,
            momentum: a.float("momentum", 0.9)?,
            outputs,
        })
    }
}

impl Op for BatchNormTraining {
    fn op_type(&self) -> &'static str {
        "BatchNormalization"
    }
    fn to_attrs(&self, _opset: i64) -> Vec<(String, AttrValue)> {
        vec![
            ("epsilon".into(), AttrValue::Float(self.epsilon)),
            ("momentum".into(), AttrValue::Float(self.momentum)),
            ("training_mode".into(), AttrValue::Int(1)),
        ]
    }
    fn num_outputs(&self) -> usize {
        self.outputs
    }
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0, "X")?;
        let s = x.shape();
        if s.len() < 2 {
            return Err(Error::shape(format!(
                "BatchNormalization: X must be [N, C, ...], got {s:?}"
            )));
        }
        let (n, c) = (s[0], s[1]);
        let inner: usize = s[2..].iter().product();
        let mut params = Vec::with_capacity(4);
        for (i, name) in ["scale", "B", "input_mean", "input_var"].into_iter().enumerate() {
            let p = input(inputs, i + 1, name)?;
            if p.len() != c {
                return Err(Error::shape(format!(
                    "BatchNormalization: {name} has shape {:?}, expected {c} values (one per channel)",
                    p.shape()
                )));
            }
            params.push(p.as_slice::<f32>()?);
        }
        let xv = x.as_slice::<f32>()?;
        let count = (n * inner) as f64;
        let mut y = vec![0f32; xv.len()];
        let (mut run_mean, mut run_var) = (vec![0f32; c], vec![0f32; c]);
        let m = f64::from(self.momentum);
        for ch in 0..c {
            let planes = (0..n).map(|b| (b * c + ch) * inner);
            let mut sum = 0f64;
            for o in planes.clone() {
                sum += xv[o..o + inner].iter().map(|&v| f64::from(v)).sum::<f64>();
            }
            let mean = if count > 0.0 { sum / count } else { 0.0 };
            let mut sq = 0f64;
            for o in planes.clone() {
                sq += xv[o..o + inner]
                    .iter()
                    .map(|&v| (f64::from(v) - mean).powi(2))
                    .sum::<f64>();
            }
            let var = if count > 0.0 { sq / count } else { 0.0 };
            let k = f64::from(params[0][ch]) / (var + f64::from(self.epsilon)).sqrt();
            let bias = f64::from(params[1][ch]);
            for o in planes {
                for (dst, &v) in y[o..o + inner].iter_mut().zip(&xv[o..o + inner]) {
                    *dst = ((f64::from(v) - mean) * k + bias) as f32;
                }
            }
            run_mean[ch] = (f64::from(params[2][ch]) * m + mean * (1.0 - m)) as f32;
            run_var[ch] = (f64::from(params[3][ch]) * m + var * (1.0 - m)) as f32;
        }
        let mut out = vec![Tensor::from_vec(s.to_vec(), y)?];
        if self.outputs == 3 {
            out.push(Tensor::from_vec(vec![c], run_mean)?);
            out.push(Tensor::from_vec(vec![c], run_var)?);
        }
        Ok(out)
    }
    fn output_facts(&self, inputs: &[Option<&ValueFact>], _constants: &[Option<&Tensor>]) -> Result<Vec<ValueFact>> {
        let x = checked_inputs(inputs, ["scale", "B", "input_mean", "input_var"])?;
        let mut out = vec![ValueFact::new(Some(DType::F32), x.shape.clone())];
        if self.outputs == 3 {
            let c = ValueFact::new(Some(DType::F32), x.shape.as_ref().map(|_| vec![x.dim(1)]));
            out.push(c.clone());
            out.push(c);
        }
        Ok(out)
    }
}
