//! The Scaling op of the PTQ pipeline: `y = x * factor` (one factor, or one per channel of
//! axis 1, or of the last axis after a MatMul), optionally followed by a quantizer
//! `y = clamp(round_half_even(y), lo, hi)`.
//! It is not an ONNX op: export lowers it to Mul (+ Round + Clip).

use crate::error::{Error, Result};
use crate::ops::facts::{expect_dtype, fact_error, required};
use crate::ops::{input, Class, NodeFacts, Op, SignRule, ValueFact};
use crate::tensor::{DType, Tensor};
use rayon::prelude::*;

/// Integer bounds of a quantizer, held as floats (the fake-quantized graph computes in f32;
/// every value it produces is an integer in `[lo, hi]`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QuantBounds {
    pub lo: f32,
    pub hi: f32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Scaling {
    /// One factor, or one per channel (axis 1, or the last axis: `last_axis`) of the input.
    pub factor: Vec<f32>,
    /// Rank of the tensor it applies to, needed to lay a per-channel factor out for export
    /// (`[C, 1, 1]` for a 4-D activation). 0 when unknown (only valid for one factor).
    pub rank: usize,
    pub quant: Option<QuantBounds>,
    /// The channels are the last axis (a MatMul's output features, `[..., C]`), not axis 1.
    pub last_axis: bool,
}

impl Scaling {
    pub fn identity() -> Scaling {
        Scaling {
            factor: vec![1.0],
            rank: 0,
            quant: None,
            last_axis: false,
        }
    }

    /// The factor laid out to broadcast against the input (numpy rules).
    pub fn factor_tensor(&self) -> Result<Tensor> {
        if self.factor.len() == 1 {
            return Tensor::from_vec(vec![1], self.factor.clone());
        }
        if self.last_axis {
            // `[C]` broadcasts along the last axis.
            return Tensor::from_vec(vec![self.factor.len()], self.factor.clone());
        }
        if self.rank < 2 {
            return Err(Error::shape(format!(
                "a per-channel Scaling factor ({} values) needs the input rank, got {}",
                self.factor.len(),
                self.rank
            )));
        }
        let mut shape = vec![self.factor.len()];
        shape.resize(self.rank - 1, 1);
        Tensor::from_vec(shape, self.factor.clone())
    }

    #[inline]
    fn apply(v: f32, f: f32, q: Option<QuantBounds>) -> f32 {
        match q {
            // The exact product rounded, as the integer engine's requantization (NaN stays NaN:
            // calibration catches it before quantizing).
            Some(b) => crate::kernels::requant::quantize_f32_ref(v, f, b.lo, b.hi),
            None => v * f,
        }
    }

    /// `apply` over a slice; quantizers go through the vectorized kernel (same results).
    fn apply_slice(x: &mut [f32], f: f32, q: Option<QuantBounds>) {
        match q {
            Some(b) => crate::kernels::requant::quantize_f32_in_place(x, f, b.lo, b.hi),
            None => x.iter_mut().for_each(|v| *v *= f),
        }
    }

    pub fn scale_in_place(&self, mut x: Tensor) -> Result<Tensor> {
        // A fresh Scaling node (factor 1, no quantizer) is the identity: calibration runs
        // through forty of them on ResNet-20, so do not touch the data.
        if self.quant.is_none() && self.factor.iter().all(|&f| f == 1.0) {
            return Ok(x);
        }
        let shape = x.shape().to_vec();
        let q = self.quant;
        let data = x.as_mut_slice::<f32>()?;
        if self.factor.len() == 1 {
            let f = self.factor[0];
            data.par_chunks_mut(1 << 14).for_each(|c| Self::apply_slice(c, f, q));
            return Ok(x);
        }
        let c = self.factor.len();
        if self.last_axis {
            if shape.last() != Some(&c) {
                return Err(Error::shape(format!(
                    "Scaling has {c} per-channel factors but its input has shape {shape:?} (expected [..., {c}])"
                )));
            }
            data.par_chunks_mut(c * 256).for_each(|rows| {
                for row in rows.chunks_mut(c) {
                    for (v, &f) in row.iter_mut().zip(&self.factor) {
                        *v = Self::apply(*v, f, q);
                    }
                }
            });
            return Ok(x);
        }
        if shape.len() < 2 || shape[1] != c {
            return Err(Error::shape(format!(
                "Scaling has {c} per-channel factors but its input has shape {shape:?} (expected [N, {c}, ...])"
            )));
        }
        let inner: usize = shape[2..].iter().product();
        if inner == 0 {
            return Ok(x);
        }
        data.par_chunks_mut(inner).enumerate().for_each(|(i, plane)| {
            let f = self.factor[i % c];
            Self::apply_slice(plane, f, q);
        });
        Ok(x)
    }

    /// Plain reference: one element at a time, no parallelism.
    pub fn eval_ref(&self, x: &Tensor) -> Result<Tensor> {
        let shape = x.shape().to_vec();
        let xs = x.as_slice::<f32>()?;
        let inner: usize = shape.get(2..).map(|s| s.iter().product()).unwrap_or(1);
        let c = self.factor.len();
        let out = xs
            .iter()
            .enumerate()
            .map(|(i, &v)| {
                let ch = match (c, self.last_axis) {
                    (1, _) => 0,
                    (_, true) => i % c,
                    _ => (i / inner.max(1)) % c,
                };
                Self::apply(v, self.factor[ch], self.quant)
            })
            .collect();
        Tensor::from_vec(shape, out)
    }
}

impl Op for Scaling {
    fn op_type(&self) -> &'static str {
        "Scaling"
    }
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0, "X")?.clone();
        Ok(vec![self.scale_in_place(x)?])
    }
    fn output_facts(&self, inputs: &[Option<&ValueFact>], _constants: &[Option<&Tensor>]) -> Result<Vec<ValueFact>> {
        let x = required(inputs, 0, "Scaling", "X")?;
        if self.quant.is_none() && self.factor.iter().all(|&f| f == 1.0) {
            // The identity, as `scale_in_place` returns it untouched (any dtype).
            return Ok(vec![x.clone()]);
        }
        expect_dtype("Scaling", x, "X", &[DType::F32])?;
        let c = self.factor.len();
        if c > 1 && self.last_axis {
            let last = x.rank().and_then(|r| r.checked_sub(1)).map(|r| x.dim(r).known());
            if x.rank() == Some(0) || last.flatten().is_some_and(|d| d != c) {
                return Err(fact_error(
                    "Scaling",
                    format!("{c} per-channel factors need an input [..., {c}], got {x}"),
                ));
            }
        } else if c > 1 && (x.rank().is_some_and(|r| r < 2) || x.dim(1).known().is_some_and(|d| d != c)) {
            return Err(fact_error(
                "Scaling",
                format!("{c} per-channel factors need an input [N, {c}, ...], got {x}"),
            ));
        }
        Ok(vec![ValueFact::new(Some(DType::F32), x.shape.clone())])
    }
    fn has_in_place(&self) -> bool {
        true
    }
    fn eval_in_place(&self, x: Tensor, _rest: &[Option<&Tensor>]) -> Result<Tensor> {
        self.scale_in_place(x)
    }
    fn ptq_class(&self, _n: &NodeFacts) -> Class {
        Class::Scaling
    }
    fn sign_rule(&self, _n: &NodeFacts) -> SignRule {
        // A quantizer clamped at 0 (an unsigned one), or a positive factor of its input.
        if self.quant.is_some_and(|q| q.lo >= 0.0) {
            SignRule::NonNegative
        } else {
            SignRule::FollowsInputs
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn fast_matches_reference(
            n in 1usize..3, c in 1usize..5, hw in 0usize..7, per_channel in any::<bool>(),
            quant in any::<bool>(), seed in any::<u64>(),
        ) {
            let shape = vec![n, c, hw, 2];
            let len = n * c * hw * 2;
            let mut s = seed | 1;
            let mut next = || { s ^= s << 13; s ^= s >> 7; s ^= s << 17; (s % 20001) as f32 / 100.0 - 100.0 };
            let x = Tensor::from_vec(shape, (0..len).map(|_| next()).collect::<Vec<f32>>()).unwrap();
            let factor = if per_channel { (0..c).map(|_| next() / 37.0).collect() } else { vec![next() / 37.0] };
            let sc = Scaling { factor: factor.clone(), rank: 4, quant: quant.then_some(QuantBounds { lo: -7.0, hi: 7.0 }), last_axis: false };
            let fast = sc.scale_in_place(x.clone()).unwrap();
            let slow = sc.eval_ref(&x).unwrap();
            prop_assert_eq!(fast.as_slice::<f32>().unwrap(), slow.as_slice::<f32>().unwrap());
            // Along the last axis (its length 2 here): one factor per channel of it.
            let f2 = if per_channel { vec![factor[0], -factor[0] / 3.0] } else { factor };
            let sc = Scaling { factor: f2, rank: 4, quant: quant.then_some(QuantBounds { lo: -7.0, hi: 7.0 }), last_axis: true };
            let fast = sc.scale_in_place(x.clone()).unwrap();
            let slow = sc.eval_ref(&x).unwrap();
            prop_assert_eq!(fast.as_slice::<f32>().unwrap(), slow.as_slice::<f32>().unwrap());
        }
    }

    #[test]
    fn quantizer_rounds_half_to_even_and_clamps() {
        let x = Tensor::from_vec(vec![6], vec![0.5f32, 1.5, 2.5, -2.5, 100.0, -100.0]).unwrap();
        let sc = Scaling {
            factor: vec![1.0],
            rank: 1,
            quant: Some(QuantBounds { lo: -7.0, hi: 7.0 }),
            last_axis: false,
        };
        let y = sc.scale_in_place(x).unwrap();
        assert_eq!(y.as_slice::<f32>().unwrap(), &[0.0, 2.0, 2.0, -2.0, 7.0, -7.0]);
    }
}
