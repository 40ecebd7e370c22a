//! Softmax, BatchNormalization (inference) and LRN.

use super::{input, norm_axis};
use crate::error::{Error, Result};
use crate::tensor::Tensor;
use rayon::prelude::*;

/// Softmax along `axis`; `legacy` (opset < 13) flattens to 2-D at `axis` first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Softmax {
    pub axis: i64,
    pub legacy: bool,
}

impl Softmax {
    pub fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0, "input")?;
        let s = x.shape();
        let axis = norm_axis(self.axis, s.len())?;
        // Softmax runs over `len` values `inner` apart, in blocks of `len * inner`.
        let (len, inner) = if self.legacy {
            (s[axis..].iter().product::<usize>(), 1)
        } else {
            (s[axis], s[axis + 1..].iter().product())
        };
        let mut y = x.clone();
        let v = y.as_mut_slice::<f32>()?;
        if len == 0 || inner == 0 {
            // Empty (a zero-size axis after `axis`, too): nothing to normalize.
            return Ok(vec![y]);
        }
        v.par_chunks_mut(len * inner).for_each(|blk| {
            for i in 0..inner {
                let mx = (0..len).map(|k| blk[k * inner + i]).fold(f32::NEG_INFINITY, f32::max);
                let mut sum = 0f32;
                for k in 0..len {
                    let e = (blk[k * inner + i] - mx).exp();
                    blk[k * inner + i] = e;
                    sum += e;
                }
                for k in 0..len {
                    blk[k * inner + i] /= sum;
                }
            }
        });
        Ok(vec![y])
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

/// Local response normalization across channels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Lrn {
    pub size: usize,
    pub alpha: f32,
    pub beta: f32,
    pub bias: f32,
}

impl Lrn {
    pub fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
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
