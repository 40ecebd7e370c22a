//! AffineGrid (opset 20): the sampling grid of GridSample for a batch of affine matrices.
//! `theta` [N, 2, 3] with `size` (N, C, H, W) gives [N, H, W, 2]; `theta` [N, 3, 4] with
//! `size` (N, C, D, H, W) gives [N, D, H, W, 3]. Each output point is `theta` applied to the
//! normalized coordinates (x, y[, z], 1) of its pixel (centres in [-1, 1], or corners with
//! `align_corners`).

use crate::error::{Error, Result};
use crate::onnx::attrs::AttrValue;
use crate::ops::facts::{constant, expect_dtype, fact_error, required, unify_dim};
use crate::ops::{input, DimFact, FromOnnx, Op, ParseCtx, ValueFact};
use crate::tensor::{DType, Tensor};

#[derive(Debug, Clone, PartialEq)]
pub struct AffineGrid {
    pub align_corners: bool,
}

impl FromOnnx for AffineGrid {
    fn from_onnx(cx: &ParseCtx) -> Result<Self> {
        let a = cx.attrs;
        match a.int("align_corners", 0)? {
            0 => Ok(AffineGrid { align_corners: false }),
            1 => Ok(AffineGrid { align_corners: true }),
            v => Err(a.unsupported(format!("align_corners = {v} (0 or 1)"))),
        }
    }
}

impl AffineGrid {
    /// The normalized coordinate of pixel `i` of `len`.
    fn coord(&self, i: usize, len: usize) -> f32 {
        if self.align_corners {
            if len <= 1 {
                -1.0
            } else {
                -1.0 + 2.0 * i as f32 / (len - 1) as f32
            }
        } else {
            (2 * i + 1) as f32 / len as f32 - 1.0
        }
    }

    /// The output shape for `theta`'s and `size`'s values, checked.
    fn shape(ts: &[usize], size: &[i64]) -> Result<Vec<usize>> {
        let r = size.len().saturating_sub(2);
        let sizes: Option<Vec<usize>> = size.iter().map(|&v| usize::try_from(v).ok()).collect();
        match sizes {
            Some(s) if (r == 2 || r == 3) && ts == [s[0], r, r + 1] => {
                let mut out = vec![s[0]];
                out.extend_from_slice(&s[2..]);
                out.push(r);
                Ok(out)
            }
            _ => Err(Error::shape(format!(
                "AffineGrid needs theta [N, 2, 3] with size (N, C, H, W) or theta [N, 3, 4] with size (N, C, D, H, W), got theta {ts:?} and size {size:?}"
            ))),
        }
    }
}

impl Op for AffineGrid {
    fn op_type(&self) -> &'static str {
        "AffineGrid"
    }
    fn to_attrs(&self, _opset: i64) -> Vec<(String, AttrValue)> {
        if self.align_corners {
            vec![("align_corners".into(), AttrValue::Int(1))]
        } else {
            Vec::new()
        }
    }
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let theta = input(inputs, 0, "theta")?;
        let size = input(inputs, 1, "size")?.to_i64_vec()?;
        let shape = Self::shape(theta.shape(), &size)?;
        let tv = theta.as_slice::<f32>()?;
        let r = shape.len() - 2;
        // Spatial sizes, outermost first; the coordinates list the innermost (x) first.
        let spatial = &shape[1..=r];
        let points: usize = spatial.iter().product();
        let mut y: Vec<f32> = Vec::with_capacity(shape[0] * points * r);
        let mut base = vec![0.0f32; r + 1];
        for t in tv.chunks_exact(r * (r + 1)) {
            for p in 0..points {
                let mut rest = p;
                for d in (0..r).rev() {
                    let len = spatial[d];
                    base[r - 1 - d] = self.coord(rest % len, len);
                    rest /= len;
                }
                base[r] = 1.0;
                for row in t.chunks_exact(r + 1) {
                    y.push(row.iter().zip(&base).map(|(a, b)| a * b).sum());
                }
            }
        }
        Ok(vec![Tensor::from_vec(shape, y)?])
    }
    fn output_facts(&self, inputs: &[Option<&ValueFact>], constants: &[Option<&Tensor>]) -> Result<Vec<ValueFact>> {
        const OP: &str = "AffineGrid";
        let theta = required(inputs, 0, OP, "theta")?;
        let size = required(inputs, 1, OP, "size")?;
        expect_dtype(OP, theta, "theta", &[DType::F32])?;
        expect_dtype(OP, size, "size", &[DType::I64])?;
        if let (Some(ts), Some(s)) = (theta.concrete_shape(), constant(constants, 1)) {
            return Ok(vec![ValueFact::concrete(
                DType::F32,
                &Self::shape(&ts, &s.to_i64_vec()?)?,
            )]);
        }
        let r = match (theta.dim(1).known(), size.dim(0).known()) {
            (Some(a), Some(b)) if b != a + 2 => {
                return Err(fact_error(
                    OP,
                    format!(
                        "theta {} and size {} disagree",
                        theta.shape_string(),
                        size.shape_string()
                    ),
                ))
            }
            (Some(a), _) => Some(a),
            (_, Some(b)) => Some(b.saturating_sub(2)),
            _ => None,
        };
        if let Some(r) = r.filter(|r| !(2..=3).contains(r)) {
            return Err(fact_error(OP, format!("only 2-D and 3-D grids exist, got {r}")));
        }
        let mut dims = None;
        if let Some(r) = r {
            let mut n = theta.dim(0);
            let mut d = vec![DimFact::Unknown; r];
            if let Some(s) = constant(constants, 1) {
                let v = s.to_i64_vec()?;
                if v.len() == r + 2 {
                    n = unify_dim(OP, &n, &DimFact::Known(v[0].max(0) as usize), || "the batch".into())?;
                    d = v[2..].iter().map(|&k| DimFact::Known(k.max(0) as usize)).collect();
                }
            }
            let mut all = vec![n];
            all.extend(d);
            all.push(DimFact::Known(r));
            dims = Some(all);
        }
        Ok(vec![ValueFact::new(Some(DType::F32), dims)])
    }
}
