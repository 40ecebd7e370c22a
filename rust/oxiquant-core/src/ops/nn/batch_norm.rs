//! BatchNormalization (inference).

use crate::error::{Error, Result};
use crate::onnx::attrs::AttrValue;
use crate::ops::facts::{expect_dtype, expect_min_rank, fact_error, required};
use crate::ops::{input, Class, FromOnnx, NodeFacts, Op, ParseCtx, ValueFact};
use crate::tensor::{DType, Tensor};
use rayon::prelude::*;

#[derive(Debug, Clone, PartialEq)]
pub struct BatchNorm {
    pub epsilon: f32,
}

impl FromOnnx for BatchNorm {
    fn from_onnx(cx: &ParseCtx) -> Result<Self> {
        let a = cx.attrs;
        a.ignore(&["momentum"]);
        if a.int("spatial", 1)? != 1 {
            return Err(a.unsupported("spatial=0"));
        }
        if a.int("training_mode", 0)? != 0 {
            return Err(a.unsupported("training_mode=1 (only inference is supported)"));
        }
        if cx.opset < 7 && a.has("is_test") {
            a.ignore(&["is_test"]);
        }
        Ok(BatchNorm {
            epsilon: a.float("epsilon", 1e-5)?,
        })
    }
}

impl Op for BatchNorm {
    fn op_type(&self) -> &'static str {
        "BatchNormalization"
    }
    fn to_attrs(&self, _opset: i64) -> Vec<(String, AttrValue)> {
        vec![("epsilon".into(), AttrValue::Float(self.epsilon))]
    }
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        batch_norm(self.epsilon, inputs)
    }
    fn output_facts(&self, inputs: &[Option<&ValueFact>], _constants: &[Option<&Tensor>]) -> Result<Vec<ValueFact>> {
        let x = checked_inputs(inputs, ["scale", "B", "mean", "var"])?;
        Ok(vec![x.clone()])
    }
    fn has_in_place(&self) -> bool {
        true
    }
    fn eval_in_place(&self, x: Tensor, rest: &[Option<&Tensor>]) -> Result<Tensor> {
        let mut all: Vec<Option<&Tensor>> = Vec::with_capacity(rest.len() + 1);
        all.push(None);
        all.extend_from_slice(rest);
        batch_norm_in_place(self.epsilon, x, &all)
    }
    fn ptq_class(&self, _n: &NodeFacts) -> Class {
        Class::FloatIsland("BatchNormalization not preceded by a Conv/Gemm it can be folded into".into())
    }
}

/// Per-channel (dim 1) parameters as four slices of length C.
fn channel_params<'a>(inputs: &[Option<&'a Tensor>], c: usize, names: &[&str]) -> Result<Vec<&'a [f32]>> {
    names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let t = input(inputs, i + 1, name)?;
            if t.len() != c {
                return Err(Error::shape(format!(
                    "{name} has shape {:?}, expected {c} values (one per channel)",
                    t.shape()
                )));
            }
            t.as_slice::<f32>()
        })
        .collect()
}

/// Inference BatchNormalization: per channel `y = (x - mean) / sqrt(var + eps) * scale + b`.
pub fn batch_norm(epsilon: f32, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    let x = input(inputs, 0, "X")?;
    Ok(vec![batch_norm_in_place(epsilon, x.clone(), inputs)?])
}

/// BatchNormalization writing into `x` (`inputs[0]` is ignored; 1..=4 are the parameters).
pub fn batch_norm_in_place(epsilon: f32, mut x: Tensor, inputs: &[Option<&Tensor>]) -> Result<Tensor> {
    let s = x.shape().to_vec();
    if s.len() < 2 {
        return Err(Error::shape(format!(
            "BatchNormalization needs an input [N, C, ...], got {s:?}"
        )));
    }
    let c = s[1];
    let p = channel_params(inputs, c, &["scale", "B", "mean", "var"])?;
    let (mul, add) = batch_norm_affine(p[0], p[1], p[2], p[3], epsilon);
    let inner: usize = s[2..].iter().product();
    x.as_mut_slice::<f32>()?
        .par_chunks_mut(inner.max(1))
        .enumerate()
        .for_each(|(i, plane)| {
            let ch = i % c;
            plane.iter_mut().for_each(|v| *v = *v * mul[ch] + add[ch]);
        });
    Ok(x)
}

/// BatchNormalization as a per-channel affine map `y = x * mul + add` (also used to fold it).
pub fn batch_norm_affine(scale: &[f32], b: &[f32], mean: &[f32], var: &[f32], epsilon: f32) -> (Vec<f32>, Vec<f32>) {
    let mul: Vec<f32> = scale.iter().zip(var).map(|(&g, &v)| g / (v + epsilon).sqrt()).collect();
    let add = b.iter().zip(mean).zip(&mul).map(|((&bb, &m), &k)| bb - m * k).collect();
    (mul, add)
}

/// BatchNormalization's input facts checked (X float of rank >= 2; the four parameters float,
/// one value per channel, named `params` in messages); returns X's facts.
pub(super) fn checked_inputs<'a>(inputs: &[Option<&'a ValueFact>], params: [&str; 4]) -> Result<&'a ValueFact> {
    let op = "BatchNormalization";
    let x = required(inputs, 0, op, "X")?;
    expect_dtype(op, x, "X", &[DType::F32])?;
    expect_min_rank(op, x, "X", 2, "[N, C, ...]")?;
    for (i, name) in params.into_iter().enumerate() {
        let p = required(inputs, i + 1, op, name)?;
        expect_dtype(op, p, name, &[DType::F32])?;
        if let (Some(n), Some(c)) = (p.numel(), x.dim(1).known()) {
            if n != c {
                return Err(fact_error(
                    op,
                    format!(
                        "{name} has shape {}, expected {c} values (one per channel)",
                        p.shape_string()
                    ),
                ));
            }
        }
    }
    Ok(x)
}
