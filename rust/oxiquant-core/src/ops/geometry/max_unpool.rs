//! MaxUnpool: the partial inverse of MaxPool. Each value of `X` [N, C, D1..] goes to the
//! place its index in `I` (MaxPool's Indices: a flat index into the whole unpooled tensor of
//! `(in - 1) * stride - pads + kernel` per spatial axis) names; every other place is zero. A
//! larger `output_shape` holds that tensor in its leading corner (onnx's reference and node
//! case; onnxruntime scatters into `output_shape`'s own layout). Any element type.

use crate::error::{Error, Result};
use crate::onnx::attrs::AttrValue;
use crate::ops::facts::{constant, expect_dtype, fact_error, optional, required, unify_dim};
use crate::ops::{input, DimFact, FromOnnx, Op, ParseCtx, ValueFact};
use crate::tensor::{DType, Element, Tensor};

#[derive(Debug, Clone, PartialEq)]
pub struct MaxUnpool {
    pub kernel_shape: Vec<usize>,
    /// Begins then ends; empty: zeros.
    pub pads: Vec<usize>,
    /// Empty: ones.
    pub strides: Vec<usize>,
}

impl FromOnnx for MaxUnpool {
    fn from_onnx(cx: &ParseCtx) -> Result<Self> {
        let a = cx.attrs;
        let kernel_shape = a
            .usizes_opt("kernel_shape")?
            .ok_or_else(|| a.unsupported("a missing kernel_shape (it is required)"))?;
        let r = kernel_shape.len();
        let pads = a.usizes_opt("pads")?.unwrap_or_default();
        let strides = a.usizes_opt("strides")?.unwrap_or_default();
        if r == 0 || (!pads.is_empty() && pads.len() != 2 * r) || (!strides.is_empty() && strides.len() != r) {
            return Err(a.unsupported(format!(
                "kernel_shape {kernel_shape:?}, pads {pads:?}, strides {strides:?} of different ranks"
            )));
        }
        Ok(MaxUnpool {
            kernel_shape,
            pads,
            strides,
        })
    }
}

impl MaxUnpool {
    /// The default output size of spatial axis `d` for an input of `len`.
    fn default_len(&self, d: usize, len: usize) -> Option<usize> {
        let r = self.kernel_shape.len();
        let stride = self.strides.get(d).copied().unwrap_or(1);
        let pads = self.pads.get(d).copied().unwrap_or(0) + self.pads.get(d + r).copied().unwrap_or(0);
        (len.checked_sub(1)? * stride + self.kernel_shape[d]).checked_sub(pads)
    }

    fn out_shape(&self, xs: &[usize], given: Option<&Tensor>) -> Result<Vec<usize>> {
        let r = self.kernel_shape.len();
        if xs.len() != r + 2 {
            return Err(Error::shape(format!(
                "MaxUnpool with a {r}-D kernel needs X [N, C, {r} spatial axes], got {xs:?}"
            )));
        }
        if let Some(t) = given {
            let v = t.to_i64_vec()?;
            let s: Option<Vec<usize>> = v.iter().map(|&d| usize::try_from(d).ok()).collect();
            return match s {
                Some(s) if s.len() == xs.len() && s[..2] == xs[..2] => Ok(s),
                _ => Err(Error::shape(format!(
                    "MaxUnpool: output_shape {v:?} must keep X's {:?} batch and channels",
                    &xs[..2]
                ))),
            };
        }
        let mut out = xs[..2].to_vec();
        for d in 0..r {
            out.push(self.default_len(d, xs[d + 2]).ok_or_else(|| {
                Error::shape(format!(
                    "MaxUnpool: pads exceed the output of X {xs:?} along axis {}",
                    d + 2
                ))
            })?);
        }
        Ok(out)
    }
}

fn scatter<T: Element>(x: &[T], idx: &[i64], len: usize) -> Result<Vec<T>> {
    let mut y = vec![T::zero(); len];
    for (&v, &i) in x.iter().zip(idx) {
        let k = usize::try_from(i)
            .ok()
            .filter(|&k| k < len)
            .ok_or_else(|| Error::shape(format!("MaxUnpool: index {i} outside the output's {len} elements")))?;
        y[k] = v;
    }
    Ok(y)
}

/// `y` of shape `from` in the leading corner of a zero tensor of shape `to` (each axis at
/// least as large).
fn embed<T: Element>(y: &[T], from: &[usize], to: &[usize]) -> Vec<T> {
    if from == to {
        return y.to_vec();
    }
    let mut out = vec![T::zero(); crate::tensor::numel(to)];
    let (fs, ts) = (crate::tensor::strides(from), crate::tensor::strides(to));
    for (k, &v) in y.iter().enumerate() {
        let at: usize = (0..from.len()).map(|d| (k / fs[d]) % from[d] * ts[d]).sum();
        out[at] = v;
    }
    out
}

impl Op for MaxUnpool {
    fn op_type(&self) -> &'static str {
        "MaxUnpool"
    }
    fn to_attrs(&self, _opset: i64) -> Vec<(String, AttrValue)> {
        let ints = |v: &[usize]| AttrValue::Ints(v.iter().map(|&x| x as i64).collect());
        let mut out = vec![("kernel_shape".to_string(), ints(&self.kernel_shape))];
        if !self.pads.is_empty() {
            out.push(("pads".into(), ints(&self.pads)));
        }
        if !self.strides.is_empty() {
            out.push(("strides".into(), ints(&self.strides)));
        }
        out
    }
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0, "X")?;
        let i = input(inputs, 1, "I")?;
        if i.shape() != x.shape() || i.dtype() != DType::I64 {
            return Err(Error::shape(format!(
                "MaxUnpool: I must be int64 of X's shape {:?}, got {} {:?}",
                x.shape(),
                i.dtype(),
                i.shape()
            )));
        }
        let shape = self.out_shape(x.shape(), inputs.get(2).copied().flatten())?;
        // The indices address the default output; a larger output_shape holds it in its
        // leading corner.
        let inferred = self.out_shape(x.shape(), None)?;
        if shape.iter().zip(&inferred).any(|(o, d)| o < d) {
            return Err(Error::shape(format!(
                "MaxUnpool: output_shape {shape:?} is smaller than the unpooled {inferred:?}"
            )));
        }
        let len = crate::tensor::numel(&inferred);
        let idx = i.as_slice::<i64>()?;
        let data =
            crate::dispatch_data!(x.data(), v => Element::wrap(embed(&scatter(v, idx, len)?, &inferred, &shape)));
        Ok(vec![Tensor::new(shape, data)?])
    }
    fn output_facts(&self, inputs: &[Option<&ValueFact>], constants: &[Option<&Tensor>]) -> Result<Vec<ValueFact>> {
        const OP: &str = "MaxUnpool";
        let x = required(inputs, 0, OP, "X")?;
        let i = required(inputs, 1, OP, "I")?;
        expect_dtype(OP, i, "I", &[DType::I64])?;
        let r = self.kernel_shape.len();
        for f in [x, i] {
            if f.rank().is_some_and(|k| k != r + 2) {
                return Err(fact_error(
                    OP,
                    format!("X and I must be [N, C, {r} spatial axes], got {}", f.shape_string()),
                ));
            }
        }
        let given = optional(inputs, 2);
        if given.is_some() {
            if let (Some(t), Some(xs)) = (constant(constants, 2), x.concrete_shape()) {
                let shape = self.out_shape(&xs, Some(t))?;
                return Ok(vec![ValueFact::new(
                    x.dtype,
                    Some(shape.into_iter().map(DimFact::Known).collect()),
                )]);
            }
            let mut dims = vec![x.dim(0), x.dim(1)];
            dims.extend(vec![DimFact::Unknown; r]);
            return Ok(vec![ValueFact::new(x.dtype, Some(dims))]);
        }
        let mut dims = Vec::with_capacity(r + 2);
        for d in 0..r + 2 {
            let u = unify_dim(OP, &x.dim(d), &i.dim(d), || format!("dimension {d} of X and I"))?;
            dims.push(match (d, u.known()) {
                (0 | 1, _) => u,
                (_, Some(len)) => self.default_len(d - 2, len).map_or(DimFact::Unknown, DimFact::Known),
                _ => DimFact::Unknown,
            });
        }
        Ok(vec![ValueFact::new(x.dtype, Some(dims))])
    }
    fn moves_data_only(&self) -> bool {
        true
    }
}
