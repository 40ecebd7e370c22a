//! Clip: bounds from attributes (opset < 11) or from optional inputs 1 and 2.

use crate::error::{Error, Result};
use crate::kernels::elementwise::unary_inplace;
use crate::onnx::attrs::AttrValue;
use crate::ops::facts::{expect_dtype, fact_error, optional, required};
use crate::ops::{input, Class, FromOnnx, NodeFacts, Op, ParseCtx, SignRule, Unary, ValueFact};
use crate::tensor::{DType, Element, Tensor};
use std::collections::BTreeMap;

/// Clip with bounds from attributes (opset < 11) or from optional inputs 1 and 2.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Clip {
    pub min: Option<f32>,
    pub max: Option<f32>,
}

impl Clip {
    pub fn bounds(&self, inputs: &[Option<&Tensor>]) -> Result<(f32, f32)> {
        let scalar = |i: usize, what: &str| -> Result<Option<f32>> {
            match inputs.get(i).copied().flatten() {
                None => Ok(None),
                Some(t) if t.len() == 1 => Ok(Some(t.to_f32_vec()[0])),
                Some(t) => Err(Error::shape(format!(
                    "Clip {what} must be a scalar, got shape {:?}",
                    t.shape()
                ))),
            }
        };
        let lo = scalar(1, "min")?.or(self.min).unwrap_or(f32::NEG_INFINITY);
        let hi = scalar(2, "max")?.or(self.max).unwrap_or(f32::INFINITY);
        Ok((lo, hi))
    }

    pub fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0, "input")?;
        if x.dtype() != DType::F32 {
            return Ok(vec![clip_int(x, inputs)?]);
        }
        let (lo, hi) = self.bounds(inputs)?;
        let mut y = x.clone();
        unary_inplace(y.as_mut_slice::<f32>()?, |v| Clip::apply(v, lo, hi));
        Ok(vec![y])
    }

    /// `min(max(v, lo), hi)` as onnxruntime computes it: lo > hi yields hi, and NaN stays NaN
    /// (`f32::max`/`f32::min` would replace it by a bound).
    #[inline]
    pub fn apply(v: f32, lo: f32, hi: f32) -> f32 {
        crate::kernels::elementwise::clip(v, lo, hi)
    }
}

/// Clip on an integer tensor: the bounds (inputs 1 and 2, optional) are scalars of its type,
/// compared in that type (no float rounding); `min > max` gives `max`, as onnxruntime does.
fn clip_int(x: &Tensor, inputs: &[Option<&Tensor>]) -> Result<Tensor> {
    fn typed<T: Element>(v: &[T], x: &Tensor, inputs: &[Option<&Tensor>]) -> Result<Vec<T>> {
        let bound = |i: usize, what: &str| -> Result<Option<T>> {
            match inputs.get(i).copied().flatten() {
                None => Ok(None),
                Some(t) if t.len() == 1 && t.dtype() == x.dtype() => Ok(t.as_slice::<T>()?.first().copied()),
                Some(t) => Err(Error::shape(format!(
                    "Clip {what} must be a {} scalar like the input, got {} of shape {:?}",
                    x.dtype(),
                    t.dtype(),
                    t.shape()
                ))),
            }
        };
        let (lo, hi) = (bound(1, "min")?, bound(2, "max")?);
        Ok(v.iter()
            .map(|&e| {
                let e = match lo {
                    Some(l) if e < l => l,
                    _ => e,
                };
                match hi {
                    Some(h) if e > h => h,
                    _ => e,
                }
            })
            .collect())
    }
    if !DType::INTEGERS.contains(&x.dtype()) {
        return Err(Error::shape(format!(
            "Clip needs a float32 or integer input, got {} {:?}",
            x.dtype(),
            x.shape()
        )));
    }
    let data = crate::dispatch_data!(x.data(), v => Element::wrap(typed(v, x, inputs)?));
    Tensor::new(x.shape().to_vec(), data)
}

/// The interval a Relu, or a Clip whose bounds are constants of the graph, maps its input
/// into (`-inf`/`inf` for an absent bound); `Ok(None)` for another op or a computed bound, an
/// error for a bound that is not a scalar. What the fusions and the integer lowerings fold.
pub fn clamp_interval(
    op: &dyn Op,
    inputs: &[String],
    initializers: &BTreeMap<String, Tensor>,
) -> Result<Option<(f32, f32)>> {
    if op.downcast_ref::<Unary>() == Some(&Unary::Relu) {
        return Ok(Some((0.0, f32::INFINITY)));
    }
    let Some(c) = op.downcast_ref::<Clip>() else {
        return Ok(None);
    };
    if inputs
        .iter()
        .skip(1)
        .any(|v| !v.is_empty() && !initializers.contains_key(v))
    {
        return Ok(None);
    }
    let args: Vec<Option<&Tensor>> = inputs.iter().map(|v| initializers.get(v)).collect();
    Ok(Some(c.bounds(&args)?))
}

impl Clip {
    /// Whether the lower bound is a constant >= 0.
    fn clamps_at_zero(&self, n: &NodeFacts) -> bool {
        // Bounds read as the constants present, as `bounds` reads the node's inputs (a
        // computed bound counts as absent: -inf).
        self.bounds(&n.constant_inputs())
            .map(|b| b.0)
            .unwrap_or(f32::NEG_INFINITY)
            >= 0.0
    }
}

impl FromOnnx for Clip {
    fn from_onnx(cx: &ParseCtx) -> Result<Self> {
        Ok(Clip {
            min: cx.attrs.float_opt("min")?,
            max: cx.attrs.float_opt("max")?,
        })
    }
}

impl Op for Clip {
    fn elementwise(&self) -> bool {
        true
    }
    fn op_type(&self) -> &'static str {
        "Clip"
    }
    fn to_attrs(&self, _opset: i64) -> Vec<(String, AttrValue)> {
        let mut v = Vec::new();
        if let Some(m) = self.min {
            v.push(("min".into(), AttrValue::Float(m)));
        }
        if let Some(m) = self.max {
            v.push(("max".into(), AttrValue::Float(m)));
        }
        v
    }
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        Clip::eval(self, inputs)
    }
    fn output_facts(&self, inputs: &[Option<&ValueFact>], _constants: &[Option<&Tensor>]) -> Result<Vec<ValueFact>> {
        for (i, what) in [(1, "min"), (2, "max")] {
            if let Some(f) = optional(inputs, i) {
                if f.numel().is_some_and(|n| n != 1) {
                    return Err(fact_error(
                        "Clip",
                        format!("{what} must be a scalar, got shape {}", f.shape_string()),
                    ));
                }
            }
        }
        let x = required(inputs, 0, "Clip", "input")?;
        expect_dtype("Clip", x, "input", &DType::NUMERIC)?;
        for (i, what) in [(1, "min"), (2, "max")] {
            if let (Some(f), Some(d)) = (optional(inputs, i), x.dtype) {
                if f.dtype.is_some_and(|b| b != d) {
                    return Err(fact_error(
                        "Clip",
                        format!("{what} must be {d} like the input, got {f}"),
                    ));
                }
            }
        }
        Ok(vec![ValueFact::new(x.dtype, x.shape.clone())])
    }
    fn has_in_place(&self) -> bool {
        true
    }
    fn eval_in_place(&self, mut x: Tensor, rest: &[Option<&Tensor>]) -> Result<Tensor> {
        let mut all: Vec<Option<&Tensor>> = Vec::with_capacity(rest.len() + 1);
        all.push(None);
        all.extend_from_slice(rest);
        if x.dtype() != DType::F32 {
            all[0] = Some(&x);
            return clip_int(&x, &all);
        }
        let (lo, hi) = self.bounds(&all)?;
        unary_inplace(x.as_mut_slice::<f32>()?, |v| Clip::apply(v, lo, hi));
        Ok(x)
    }
    fn ptq_class(&self, _n: &NodeFacts) -> Class {
        Class::Bounded
    }
    fn sign_rule(&self, n: &NodeFacts) -> SignRule {
        if self.clamps_at_zero(n) {
            SignRule::NonNegative
        } else {
            SignRule::FollowsInputs
        }
    }
    fn clamps_negatives(&self, n: &NodeFacts) -> bool {
        self.clamps_at_zero(n)
    }
}
