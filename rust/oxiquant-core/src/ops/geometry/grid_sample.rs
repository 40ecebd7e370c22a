//! GridSample: samples `X` [N, C, D1..Dr] at the normalized points of `grid`
//! [N, O1..Or, r] (the last axis lists the coordinates innermost first: x of the last spatial
//! axis, then y, ...), by nearest, (multi)linear or (multi)cubic interpolation, with zeros,
//! border or reflection padding. Opsets 16 to 19 spell the modes `bilinear` / `bicubic` and
//! take 4-D inputs only; from opset 20, `linear` / `cubic` and any rank.

use crate::error::{Error, Result};
use crate::onnx::attrs::AttrValue;
use crate::ops::facts::{expect_dtype, fact_error, required, unify_dim};
use crate::ops::{input, DataInputs, DimFact, FromOnnx, Op, ParseCtx, ValueFact};
use crate::tensor::{strides, DType, Tensor};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SampleMode {
    Nearest,
    Linear,
    Cubic,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SamplePadding {
    Zeros,
    Border,
    Reflection,
}

#[derive(Debug, Clone, PartialEq)]
pub struct GridSample {
    pub mode: SampleMode,
    pub padding: SamplePadding,
    pub align_corners: bool,
    /// Opsets 16 to 19: 4-D only, the old mode names.
    pub old_spelling: bool,
}

impl FromOnnx for GridSample {
    fn from_onnx(cx: &ParseCtx) -> Result<Self> {
        let a = cx.attrs;
        let old_spelling = cx.opset < 20;
        let default = if old_spelling { "bilinear" } else { "linear" };
        let mode = match (a.string("mode", default)?.as_str(), old_spelling) {
            ("nearest", _) => SampleMode::Nearest,
            ("bilinear", true) | ("linear", false) => SampleMode::Linear,
            ("bicubic", true) | ("cubic", false) => SampleMode::Cubic,
            (other, _) => {
                return Err(a.unsupported(format!("mode '{other}' (not a mode of GridSample-{})", cx.opset)));
            }
        };
        let padding = match a.string("padding_mode", "zeros")?.as_str() {
            "zeros" => SamplePadding::Zeros,
            "border" => SamplePadding::Border,
            "reflection" => SamplePadding::Reflection,
            other => return Err(a.unsupported(format!("padding_mode '{other}'"))),
        };
        let align_corners = match a.int("align_corners", 0)? {
            0 => false,
            1 => true,
            v => return Err(a.unsupported(format!("align_corners = {v} (0 or 1)"))),
        };
        Ok(GridSample {
            mode,
            padding,
            align_corners,
            old_spelling,
        })
    }
}

/// The pixel coordinate of normalized `n` along an axis of `len` pixels.
fn denormalize(n: f32, len: usize, align_corners: bool) -> f32 {
    if align_corners {
        (n + 1.0) / 2.0 * (len as f32 - 1.0)
    } else {
        ((n + 1.0) * len as f32 - 1.0) / 2.0
    }
}

/// `x` reflected at the borders `lo` and `hi` until it lies between them.
fn reflect(x: f32, lo: f32, hi: f32) -> f32 {
    let range = hi - lo;
    if range <= 0.0 {
        return lo;
    }
    let fold = |d: f32, near: f32, far: f32, sign: f32| {
        let n = (d / range) as i64;
        let r = d - n as f32 * range;
        if n % 2 == 0 {
            near + sign * r
        } else {
            far - sign * r
        }
    };
    if x < lo {
        fold(lo - x, lo, hi, 1.0)
    } else if x > hi {
        fold(x - hi, hi, lo, -1.0)
    } else {
        x
    }
}

/// Keys' cubic convolution weights (a = -0.75) of the four taps around fraction `t`.
fn cubic_weights(t: f32) -> [f32; 4] {
    const A: f32 = -0.75;
    let t = t.abs();
    let (t1, u, u1) = (t + 1.0, 1.0 - t, 2.0 - t);
    [
        ((A * t1 - 5.0 * A) * t1 + 8.0 * A) * t1 - 4.0 * A,
        ((A + 2.0) * t - (A + 3.0)) * t * t + 1.0,
        ((A + 2.0) * u - (A + 3.0)) * u * u + 1.0,
        ((A * u1 - 5.0 * A) * u1 + 8.0 * A) * u1 - 4.0 * A,
    ]
}

impl GridSample {
    /// The input pixel index `i` along an axis of `len` stands for, or `None` for a zero.
    fn tap(&self, i: i64, len: usize, lo: f32, hi: f32) -> Option<usize> {
        let n = len as i64;
        match self.padding {
            SamplePadding::Zeros => (0..n).contains(&i).then_some(i as usize),
            SamplePadding::Border => Some(i.clamp(0, n - 1) as usize),
            SamplePadding::Reflection => Some((reflect(i as f32, lo, hi) as i64).clamp(0, n - 1) as usize),
        }
    }

    fn check(&self, xs: &[usize], gs: &[usize]) -> Result<(usize, Vec<usize>)> {
        let r = xs.len().saturating_sub(2);
        if xs.len() < 3 || gs.len() != xs.len() || gs[gs.len() - 1] != r || gs[0] != xs[0] {
            return Err(Error::shape(format!(
                "GridSample needs X [N, C, D1..Dr] and grid [N, O1..Or, r], got X {xs:?} and grid {gs:?}"
            )));
        }
        if self.old_spelling && r != 2 {
            return Err(Error::shape(format!(
                "GridSample before opset 20 samples 4-D inputs only, got X {xs:?}"
            )));
        }
        let mut out = vec![xs[0], xs[1]];
        out.extend_from_slice(&gs[1..gs.len() - 1]);
        Ok((r, out))
    }

    fn run(&self, x: &Tensor, grid: &Tensor) -> Result<Tensor> {
        let (xs, gs) = (x.shape(), grid.shape());
        let (r, out_shape) = self.check(xs, gs)?;
        let xv = x.as_slice::<f32>()?;
        let gv = grid.as_slice::<f32>()?;
        let (n, c) = (xs[0], xs[1]);
        let dims = &xs[2..];
        let points: usize = gs[1..gs.len() - 1].iter().product();
        let plane: usize = dims.iter().product();
        let mut y = vec![0.0f32; n * c * points];
        if y.is_empty() {
            return Tensor::from_vec(out_shape, y);
        }
        if plane == 0 {
            return Err(Error::shape(format!("GridSample has nothing to sample in X {xs:?}")));
        }
        let st = strides(dims);
        let bounds: Vec<(f32, f32)> = dims
            .iter()
            .map(|&d| {
                if self.align_corners {
                    (0.0, d as f32 - 1.0)
                } else {
                    (-0.5, d as f32 - 0.5)
                }
            })
            .collect();
        let mut coord = vec![0.0f32; r];
        // Per axis: the input index (None: a zero) and weight of each tap.
        let mut taps: Vec<Vec<(Option<usize>, f32)>> = vec![Vec::with_capacity(4); r];
        for b in 0..n {
            for p in 0..points {
                let g = &gv[(b * points + p) * r..(b * points + p + 1) * r];
                for d in 0..r {
                    let mut v = denormalize(g[r - 1 - d], dims[d], self.align_corners);
                    if self.mode == SampleMode::Nearest {
                        v = v.round_ties_even();
                    }
                    let (lo, hi) = bounds[d];
                    // Cubic taps are padded one by one from the unclamped point (as
                    // onnxruntime and PyTorch do; onnx's reference clamps the point first,
                    // which differs with border padding).
                    if (v < lo || v > hi) && self.mode != SampleMode::Cubic {
                        v = match self.padding {
                            SamplePadding::Zeros => v,
                            SamplePadding::Border => v.clamp(0.0, dims[d] as f32 - 1.0),
                            SamplePadding::Reflection => reflect(v, lo, hi),
                        };
                    }
                    coord[d] = v;
                }
                for d in 0..r {
                    let (lo, hi) = bounds[d];
                    let v = coord[d];
                    let t = &mut taps[d];
                    t.clear();
                    match self.mode {
                        SampleMode::Nearest => {
                            // NaN coordinates sample nothing.
                            let i = if v.is_finite() { v as i64 } else { i64::MIN };
                            t.push((self.tap(i, dims[d], lo, hi), 1.0));
                        }
                        SampleMode::Linear => {
                            let f = v.floor();
                            let i = if f.is_finite() { f as i64 } else { i64::MIN };
                            let w = v - f;
                            t.push((self.tap(i, dims[d], lo, hi), 1.0 - w));
                            t.push((self.tap(i.saturating_add(1), dims[d], lo, hi), w));
                        }
                        SampleMode::Cubic => {
                            let f = v.floor();
                            let i = if f.is_finite() { f as i64 } else { i64::MIN + 2 };
                            let w = cubic_weights(v - f);
                            for (k, wk) in w.iter().enumerate() {
                                t.push((self.tap(i.saturating_add(k as i64 - 1), dims[d], lo, hi), *wk));
                            }
                        }
                    }
                }
                for ch in 0..c {
                    let img = &xv[(b * c + ch) * plane..(b * c + ch + 1) * plane];
                    y[(b * c + ch) * points + p] = interpolate(img, &st, &taps);
                }
            }
        }
        Tensor::from_vec(out_shape, y)
    }
}

/// The separable interpolation of `img` (strides `st`) with the taps of each axis (at least
/// one axis): the innermost axis is summed first, as onnxruntime does.
fn interpolate(img: &[f32], st: &[usize], taps: &[Vec<(Option<usize>, f32)>]) -> f32 {
    // Recursive over the axes, outermost first; the innermost is a weighted sum.
    fn go(img: &[f32], st: &[usize], taps: &[Vec<(Option<usize>, f32)>], d: usize, base: Option<usize>) -> f32 {
        let mut acc = 0.0f32;
        for &(i, w) in &taps[d] {
            let idx = match (base, i) {
                (Some(b), Some(i)) => Some(b + i * st[d]),
                _ => None,
            };
            let v = if d + 1 == taps.len() {
                idx.map_or(0.0, |k| img[k])
            } else {
                go(img, st, taps, d + 1, idx)
            };
            acc += w * v;
        }
        acc
    }
    go(img, st, taps, 0, Some(0))
}

impl Op for GridSample {
    fn op_type(&self) -> &'static str {
        "GridSample"
    }
    fn to_attrs(&self, opset: i64) -> Vec<(String, AttrValue)> {
        let mut out = Vec::new();
        let old = opset < 20;
        match self.mode {
            SampleMode::Linear => {}
            SampleMode::Nearest => out.push(("mode".into(), AttrValue::String("nearest".into()))),
            SampleMode::Cubic => out.push((
                "mode".into(),
                AttrValue::String(if old { "bicubic" } else { "cubic" }.into()),
            )),
        }
        match self.padding {
            SamplePadding::Zeros => {}
            SamplePadding::Border => out.push(("padding_mode".into(), AttrValue::String("border".into()))),
            SamplePadding::Reflection => out.push(("padding_mode".into(), AttrValue::String("reflection".into()))),
        }
        if self.align_corners {
            out.push(("align_corners".into(), AttrValue::Int(1)));
        }
        out
    }
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0, "X")?;
        let grid = input(inputs, 1, "grid")?;
        Ok(vec![self.run(x, grid)?])
    }
    fn output_facts(&self, inputs: &[Option<&ValueFact>], _constants: &[Option<&Tensor>]) -> Result<Vec<ValueFact>> {
        const OP: &str = "GridSample";
        let x = required(inputs, 0, OP, "X")?;
        let g = required(inputs, 1, OP, "grid")?;
        expect_dtype(OP, x, "X", &[DType::F32])?;
        expect_dtype(OP, g, "grid", &[DType::F32])?;
        let rank = match (x.rank(), g.rank()) {
            (Some(a), Some(b)) if a != b || a < 3 => {
                return Err(fact_error(
                    OP,
                    format!(
                        "X [N, C, D1..Dr] and grid [N, O1..Or, r] need one rank of at least 3, got X {} and grid {}",
                        x.shape_string(),
                        g.shape_string()
                    ),
                ))
            }
            (Some(a), _) | (_, Some(a)) => a,
            (None, None) => return Ok(vec![ValueFact::new(Some(DType::F32), None)]),
        };
        if rank < 3 || (self.old_spelling && rank != 4) {
            return Err(fact_error(
                OP,
                format!("X must be [N, C, H, W], got {}", x.shape_string()),
            ));
        }
        if let Some(k) = g.dim(rank - 1).known() {
            if k != rank - 2 {
                return Err(fact_error(
                    OP,
                    format!("grid {} must end in {} coordinates", g.shape_string(), rank - 2),
                ));
            }
        }
        let n = unify_dim(OP, &x.dim(0), &g.dim(0), || "the batch of X and grid".into())?;
        let mut dims: Vec<DimFact> = vec![n, x.dim(1)];
        dims.extend((1..rank - 1).map(|d| g.dim(d)));
        Ok(vec![ValueFact::new(Some(DType::F32), Some(dims))])
    }
    fn data_inputs(&self) -> DataInputs {
        // The grid is an activation as much as X.
        DataInputs::All
    }
}
