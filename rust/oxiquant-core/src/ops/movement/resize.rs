//! Resize and Upsample: nearest-neighbour sampling (any element type), and linear and cubic
//! interpolation (float32), with every coordinate transformation, `axes`,
//! `keep_aspect_ratio_policy`, tf_crop_and_resize's region of interest and extrapolation,
//! and antialiasing.
//!
//! Linear and cubic run one axis at a time: each output index along an axis is a weighted
//! sum of a few input indices (`taps`), which for the separable N-linear and N-cubic
//! filters of the definition is the same as weighting each input element by the product
//! of its per-axis weights.

use super::take_tables;
use crate::error::{Error, Result};
use crate::onnx::attrs::AttrValue;
use crate::ops::facts::{constant, expect_dtype, fact_error, in_op, optional, required};
use crate::ops::{input, norm_axis, Class, DimFact, FromOnnx, NodeFacts, Op, ParseCtx, SignRule, ValueFact};
use crate::tensor::{check_alloc, strides, DType, Tensor};
use rayon::prelude::*;

/// How output values are computed from the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResizeMode {
    Nearest,
    Linear,
    Cubic,
}

/// Resize / Upsample.
#[derive(Debug, Clone, PartialEq)]
pub struct Resize {
    pub mode: ResizeMode,
    pub coord_mode: String,
    pub nearest_mode: String,
    pub cubic_coeff_a: f32,
    pub exclude_outside: bool,
    pub extrapolation_value: f32,
    pub antialias: bool,
    /// The axes `scales`, `sizes` and `roi` are given for (Resize-18+; all when absent).
    pub axes: Option<Vec<i64>>,
    /// "stretch", "not_larger" or "not_smaller" (with `sizes`).
    pub keep_aspect_ratio_policy: String,
    /// Scales given as an attribute (Upsample-7).
    pub scales: Option<Vec<f32>>,
    /// Index of the `scales` input (1 for Upsample-9 and Resize-10, 2 for Resize-11+).
    pub scales_input: usize,
    /// Exported as the legacy `Upsample` op it was read from.
    pub upsample: bool,
}

/// One axis of a resize: sizes, the scale of the coordinate transformation and the region
/// of interest (tf_crop_and_resize).
#[derive(Debug, Clone, Copy, PartialEq)]
struct AxisPlan {
    len_in: usize,
    len_out: usize,
    scale: f32,
    roi: (f32, f32),
}

/// The values of the shape-setting inputs (each `None` when omitted or empty).
struct ShapeInputs {
    scales: Option<Vec<f32>>,
    sizes: Option<Vec<i64>>,
    roi: Option<Vec<f32>>,
}

impl Resize {
    fn crop(&self) -> bool {
        self.coord_mode == "tf_crop_and_resize"
    }

    /// The axes the shape inputs are given for, normalized, for an input of rank `r`.
    fn axes(&self, r: usize) -> Result<Vec<usize>> {
        let Some(axes) = &self.axes else {
            return Ok((0..r).collect());
        };
        let mut out = Vec::with_capacity(axes.len());
        for &a in axes {
            let a = norm_axis(a, r).map_err(in_op("Resize"))?;
            if out.contains(&a) {
                return Err(Error::shape(format!("Resize: axes {axes:?} repeat an axis")));
            }
            out.push(a);
        }
        Ok(out)
    }

    /// The shape-setting inputs given at run time (Upsample-7's scales attribute included).
    fn shape_inputs(&self, inputs: &[Option<&Tensor>]) -> Result<ShapeInputs> {
        let get = |i: usize| inputs.get(i).copied().flatten().filter(|t| !t.is_empty());
        let scales = match (&self.scales, get(self.scales_input)) {
            (Some(s), _) => Some(s.clone()),
            (None, Some(t)) => Some(t.as_slice::<f32>()?.to_vec()),
            (None, None) => None,
        };
        let sizes = if self.scales_input == 2 {
            get(3).map(|t| t.to_i64_vec()).transpose()?
        } else {
            None
        };
        let roi = if self.scales_input == 2 {
            get(1).map(|t| t.to_f32_vec())
        } else {
            None
        };
        Ok(ShapeInputs { scales, sizes, roi })
    }

    /// Every axis's sizes, scale and region of interest for input shape `shape`.
    fn plan(&self, shape: &[usize], v: &ShapeInputs) -> Result<Vec<AxisPlan>> {
        let r = shape.len();
        let axes = self.axes(r)?;
        let mut plan: Vec<AxisPlan> = shape
            .iter()
            .map(|&n| AxisPlan {
                len_in: n,
                len_out: n,
                scale: 1.0,
                roi: (0.0, 1.0),
            })
            .collect();
        if self.crop() {
            if let Some(roi) = &v.roi {
                if roi.len() != 2 * axes.len() {
                    return Err(Error::shape(format!(
                        "Resize: roi {roi:?} should have {} values for input {shape:?}",
                        2 * axes.len()
                    )));
                }
                for (i, &a) in axes.iter().enumerate() {
                    plan[a].roi = (roi[i], roi[i + axes.len()]);
                }
            }
        }
        if let Some(s) = &v.sizes {
            if s.len() != axes.len() || s.iter().any(|&v| v < 0) {
                return Err(Error::shape(format!("Resize sizes {s:?} do not fit input {shape:?}")));
            }
            if self.keep_aspect_ratio_policy == "stretch" {
                for (&a, &n) in axes.iter().zip(s) {
                    plan[a].len_out = n as usize;
                    plan[a].scale = n as f32 / shape[a].max(1) as f32;
                }
            } else {
                // One scale for all the axes: the largest (smallest) that keeps the output
                // within (around) the sizes.
                let ratios = axes.iter().zip(s).map(|(&a, &n)| n as f32 / shape[a].max(1) as f32);
                let scale = if self.keep_aspect_ratio_policy == "not_larger" {
                    ratios.fold(f32::INFINITY, f32::min)
                } else {
                    ratios.fold(f32::NEG_INFINITY, f32::max)
                };
                for &a in &axes {
                    plan[a].len_out = (scale * shape[a] as f32).round() as usize;
                    plan[a].scale = scale;
                }
            }
        } else if let Some(sc) = &v.scales {
            if sc.len() != axes.len() || sc.iter().any(|&v| v.is_nan() || v <= 0.0 || v.is_infinite()) {
                return Err(Error::shape(format!("Resize scales {sc:?} do not fit input {shape:?}")));
            }
            for (&a, &s) in axes.iter().zip(sc) {
                let p = &mut plan[a];
                // The input size times the scale, also for tf_crop_and_resize (as onnxruntime
                // computes it, the region of interest does not count).
                let out = (p.len_in as f32 * s).floor();
                if !(0.0..=1e15).contains(&out) {
                    return Err(Error::shape(format!(
                        "Resize: scale {s} and roi {:?} give no valid size for axis {a} of input {shape:?}",
                        p.roi
                    )));
                }
                p.len_out = out as usize;
                p.scale = s;
            }
        } else {
            return Err(Error::shape("Resize needs scales or sizes".to_string()));
        }
        Ok(plan)
    }

    /// Whether an axis is copied as it is (as onnxruntime does), even where a mode's formula
    /// would shift it (tf_half_pixel_for_nn with ceil).
    fn is_identity(&self, p: &AxisPlan) -> bool {
        p.scale == 1.0 && p.len_out == p.len_in && !self.crop()
    }

    /// The input coordinate output index `o` of axis `p` samples.
    fn original(&self, o: usize, p: &AxisPlan) -> f32 {
        let (xo, scale, len_in, len_out) = (o as f32, p.scale, p.len_in, p.len_out);
        match self.coord_mode.as_str() {
            "asymmetric" => xo / scale,
            "align_corners" if len_out > 1 => xo * (len_in as f32 - 1.0) / (len_out as f32 - 1.0),
            "align_corners" => 0.0,
            "pytorch_half_pixel" if len_out > 1 => (xo + 0.5) / scale - 0.5,
            "pytorch_half_pixel" => 0.0,
            "tf_half_pixel_for_nn" => (xo + 0.5) / scale,
            "tf_crop_and_resize" => {
                let (start, end) = p.roi;
                let span = len_in as f32 - 1.0;
                if len_out > 1 {
                    start * span + xo * (end - start) * span / (len_out as f32 - 1.0)
                } else {
                    0.5 * (start + end) * span
                }
            }
            "half_pixel_symmetric" => {
                // Centres the sampled grid when the scaled width is fractional. The last step
                // in f64, as onnxruntime does, so that exact integers stay exact for
                // floor/ceil.
                let adjustment = len_out as f32 / (len_in as f32 * scale);
                let offset = len_in as f32 / 2.0 * (1.0 - adjustment);
                (offset as f64 + (xo as f64 + 0.5) / scale as f64 - 0.5) as f32
            }
            // half_pixel (other modes are refused when the node is read)
            _ => (xo + 0.5) / scale - 0.5,
        }
    }

    /// Whether tf_crop_and_resize samples outside the input at `orig` (the output takes the
    /// extrapolation value there).
    fn outside(&self, orig: f32, len_in: usize) -> bool {
        self.crop() && (orig < 0.0 || orig > len_in as f32 - 1.0)
    }

    fn nearest_index(&self, orig: f32, scale: f32) -> f32 {
        match self.nearest_mode.as_str() {
            "floor" => orig.floor(),
            "ceil" => orig.ceil(),
            "round_prefer_ceil" => (orig + 0.5).floor(),
            // Resize-10 and Upsample, which predate nearest_mode: onnxruntime's rule, the
            // reference for these versions (the spec names none).
            "simple" if scale < 1.0 => orig.ceil(),
            "simple" => orig.floor(),
            // round_prefer_floor: halves go down (other modes are refused when read)
            _ => {
                if orig.fract() == 0.5 {
                    orig.floor()
                } else {
                    orig.round()
                }
            }
        }
    }

    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0, "X")?;
        let plan = self.plan(x.shape(), &self.shape_inputs(inputs)?)?;
        let out_shape: Vec<usize> = plan.iter().map(|p| p.len_out).collect();
        if let Some(d) = (0..plan.len()).find(|&d| plan[d].len_in == 0 && plan[d].len_out > 0) {
            return Err(Error::shape(format!(
                "Resize: axis {d} of input {:?} is empty, it cannot be resized to {} elements",
                x.shape(),
                out_shape[d]
            )));
        }
        check_alloc(&out_shape, 8)?;
        check_alloc(&[out_shape.iter().fold(0usize, |s, &d| s.saturating_add(d))], 16)?;
        if self.mode == ResizeMode::Nearest {
            return Ok(vec![self.nearest(x, &plan, out_shape)?]);
        }
        if x.dtype() != DType::F32 {
            return Err(Error::shape(format!(
                "Resize: {} interpolation computes float32 only, got X of {} {:?}",
                if self.mode == ResizeMode::Linear {
                    "linear"
                } else {
                    "cubic"
                },
                x.dtype(),
                x.shape()
            )));
        }
        let mut data = x.as_slice::<f32>()?.to_vec();
        let mut shape = x.shape().to_vec();
        let mut outside: Vec<Option<Vec<bool>>> = vec![None; plan.len()];
        for (d, p) in plan.iter().enumerate() {
            if self.is_identity(p) {
                continue;
            }
            let (taps, out) = self.taps(p);
            if out.iter().any(|&o| o) {
                outside[d] = Some(out);
            }
            data = apply_axis(&data, &shape, d, &taps);
            shape[d] = p.len_out;
        }
        if outside.iter().any(Option::is_some) {
            fill_outside(&mut data, &shape, &outside, self.extrapolation_value);
        }
        Ok(vec![Tensor::from_vec(shape, data)?])
    }

    fn nearest(&self, x: &Tensor, plan: &[AxisPlan], out_shape: Vec<usize>) -> Result<Tensor> {
        let st = strides(x.shape());
        let tables: Vec<Vec<Option<usize>>> = plan
            .iter()
            .enumerate()
            .map(|(d, p)| {
                if self.is_identity(p) {
                    return (0..p.len_out).map(|o| Some(o * st[d])).collect();
                }
                (0..p.len_out)
                    .map(|o| {
                        let orig = self.original(o, p);
                        if self.outside(orig, p.len_in) {
                            return None;
                        }
                        let idx = self.nearest_index(orig, p.scale);
                        let i = (idx.max(0.0) as usize).min(p.len_in.saturating_sub(1));
                        Some(i * st[d])
                    })
                    .collect()
            })
            .collect();
        take_tables(x, out_shape, &tables, self.extrapolation_value as f64)
    }

    /// Per output index of one axis: the input indices it reads with their weights, and
    /// whether it lies outside the input (tf_crop_and_resize).
    fn taps(&self, p: &AxisPlan) -> (Vec<Vec<(usize, f32)>>, Vec<bool>) {
        let mut outside = Vec::with_capacity(p.len_out);
        let last = p.len_in as isize - 1;
        let taps = (0..p.len_out)
            .map(|o| {
                let orig = self.original(o, p);
                outside.push(self.outside(orig, p.len_in));
                if self.antialias && p.scale < 1.0 {
                    return self.antialias_taps(orig, p);
                }
                match self.mode {
                    ResizeMode::Linear => {
                        let c = orig.max(0.0).min(last as f32);
                        let i1 = (c as isize).min(last);
                        let i2 = (i1 + 1).min(last);
                        if i1 == i2 {
                            vec![(i1 as usize, 1.0)]
                        } else {
                            // The weight of each neighbour is the distance to the other.
                            vec![(i1 as usize, i2 as f32 - c), (i2 as usize, c - i1 as f32)]
                        }
                    }
                    _ => {
                        let base = orig.floor();
                        let coeffs = cubic_coeffs(orig - base, self.cubic_coeff_a);
                        let base = base as isize - 1;
                        let inside = |i: isize| (0..=last).contains(&i);
                        let sum: f32 = if self.exclude_outside {
                            (0..4).filter(|&k| inside(base + k)).map(|k| coeffs[k as usize]).sum()
                        } else {
                            1.0
                        };
                        (0..4isize)
                            .filter(|&k| !self.exclude_outside || inside(base + k))
                            .map(|k| {
                                let i = (base + k).clamp(0, last) as usize;
                                let w = coeffs[k as usize];
                                (i, if self.exclude_outside { w / sum } else { w })
                            })
                            .collect()
                    }
                }
            })
            .collect();
        (taps, outside)
    }

    /// Downscaling with antialiasing: the interpolation filter stretched by 1 / scale over
    /// the input, its weights normalized to sum to 1. Without exclude_outside, the weights of
    /// indices outside the input go to the nearest edge (as onnxruntime does); with it, they
    /// are dropped.
    fn antialias_taps(&self, orig: f32, p: &AxisPlan) -> Vec<(usize, f32)> {
        let scale = p.scale;
        let half = if self.mode == ResizeMode::Linear { 1.0 } else { 2.0 };
        let support = half / scale;
        let window = support.ceil() as isize * 2 + 1;
        let center = orig + 0.5;
        let lo = (center - support + 0.5).floor() as isize;
        let hi = lo + ((center + support + 0.5).floor() as isize - lo).clamp(0, window);
        let len = p.len_in as isize;
        if lo.clamp(0, len) >= hi.clamp(0, len) {
            return Vec::new();
        }
        let (lo, hi) = if self.exclude_outside {
            (lo.clamp(0, len), hi.clamp(0, len))
        } else {
            (lo, hi)
        };
        let mut taps: Vec<(usize, f32)> = (lo..hi)
            .map(|i| {
                let t = (i as f32 - center + 0.5) * scale;
                let w = if self.mode == ResizeMode::Linear {
                    (1.0 - t.abs()).max(0.0)
                } else {
                    cubic_kernel(t, self.cubic_coeff_a)
                };
                (i.clamp(0, len - 1) as usize, w)
            })
            .collect();
        let sum: f32 = taps.iter().map(|t| t.1).sum();
        if sum != 0.0 {
            taps.iter_mut().for_each(|t| t.1 /= sum);
        }
        taps
    }
}

/// The cubic convolution kernel of coefficient `a` (Keys) at distance `t`.
fn cubic_kernel(t: f32, a: f32) -> f32 {
    let t = t.abs();
    if t <= 1.0 {
        ((a + 2.0) * t - (a + 3.0)) * t * t + 1.0
    } else if t < 2.0 {
        ((a * t - 5.0 * a) * t + 8.0 * a) * t - 4.0 * a
    } else {
        0.0
    }
}

/// The weights of the four neighbours floor(x) - 1 ..= floor(x) + 2 at fraction `s`.
fn cubic_coeffs(s: f32, a: f32) -> [f32; 4] {
    [
        cubic_kernel(s + 1.0, a),
        cubic_kernel(s, a),
        cubic_kernel(1.0 - s, a),
        cubic_kernel(2.0 - s, a),
    ]
}

/// Resamples axis `d` of `src` (shape `shape`): output index `j` is the weighted sum of the
/// input indices of `taps[j]`.
fn apply_axis(src: &[f32], shape: &[usize], d: usize, taps: &[Vec<(usize, f32)>]) -> Vec<f32> {
    let outer: usize = shape[..d].iter().product();
    let inner: usize = shape[d + 1..].iter().product();
    let (len_in, len_out) = (shape[d], taps.len());
    let mut out = vec![0f32; outer * len_out * inner];
    if out.is_empty() {
        return out;
    }
    let block = |(o, dst): (usize, &mut [f32])| {
        let src = &src[o * len_in * inner..][..len_in * inner];
        for (j, t) in taps.iter().enumerate() {
            let row = &mut dst[j * inner..][..inner];
            for &(i, w) in t {
                for (y, &v) in row.iter_mut().zip(&src[i * inner..][..inner]) {
                    *y += w * v;
                }
            }
        }
    };
    if out.len() >= 1 << 15 && outer > 1 {
        out.par_chunks_mut(len_out * inner).enumerate().for_each(block);
    } else {
        out.chunks_mut(len_out * inner).enumerate().for_each(block);
    }
    out
}

/// Sets the elements whose index lies outside the input along some axis to `value`.
fn fill_outside(data: &mut [f32], shape: &[usize], outside: &[Option<Vec<bool>>], value: f32) {
    let st = strides(shape);
    for (i, v) in data.iter_mut().enumerate() {
        let out = outside
            .iter()
            .enumerate()
            .any(|(d, o)| o.as_ref().is_some_and(|o| o[(i / st[d]) % shape[d]]));
        if out {
            *v = value;
        }
    }
}

impl Resize {
    /// The output's facts: the input's dtype and the shape `run` computes when the input's
    /// shape and the shape-setting inputs are known; otherwise what is known per axis (the
    /// sizes, or each dimension times its scale, rounded down; a free dimension keeps its
    /// name under a scale of 1).
    fn facts(&self, inputs: &[Option<&ValueFact>], constants: &[Option<&Tensor>]) -> Result<Vec<ValueFact>> {
        let op = self.op_type();
        let x = required(inputs, 0, op, "X")?;
        if self.mode != ResizeMode::Nearest {
            expect_dtype(op, x, "X", &[DType::F32])?;
        }
        let rank = x.rank();
        // The value of a shape-setting input: Ok(None) when omitted or empty, Err(()) when
        // given but not a constant.
        let value = |i: usize| -> std::result::Result<Option<&Tensor>, ()> {
            match (optional(inputs, i), constant(constants, i)) {
                (None, _) => Ok(None),
                (Some(_), Some(t)) => Ok((!t.is_empty()).then_some(t)),
                (Some(f), None) if f.numel() == Some(0) => Ok(None),
                (Some(_), None) => Err(()),
            }
        };
        let unknown = |r: Option<usize>| Ok(vec![ValueFact::new(x.dtype, r.map(|r| vec![DimFact::Unknown; r]))]);
        let modern = self.scales_input == 2;
        let sizes = if modern { value(3) } else { Ok(None) };
        let scales = match &self.scales {
            Some(_) => Ok(None),
            None => value(self.scales_input),
        };
        let roi = if modern && self.crop() { value(1) } else { Ok(None) };
        let (Ok(sizes), Ok(scales), Ok(roi)) = (sizes, scales, roi) else {
            let r = rank.or_else(|| {
                let f = optional(inputs, if modern { 3 } else { self.scales_input })?;
                f.numel().filter(|&n| n > 0 && self.axes.is_none())
            });
            return unknown(r.or(rank));
        };
        let v = ShapeInputs {
            scales: match (&self.scales, scales) {
                (Some(s), _) => Some(s.clone()),
                (None, Some(t)) => Some(t.as_slice::<f32>().map_err(in_op(op))?.to_vec()),
                (None, None) => None,
            },
            sizes: sizes.map(|t| t.to_i64_vec()).transpose().map_err(in_op(op))?,
            roi: roi.map(|t| t.to_f32_vec()),
        };
        if v.scales.is_none() && v.sizes.is_none() {
            return Err(fact_error(op, "needs scales or sizes"));
        }
        let Some(dims) = &x.shape else {
            let given = v.sizes.as_ref().map(Vec::len).or(v.scales.as_ref().map(Vec::len));
            return unknown(if self.axes.is_none() { given } else { None });
        };
        // The sizes each axis's output depends on: its own (others too with a keep-aspect
        // policy, which mixes the axes' ratios).
        let known: Option<Vec<usize>> = dims.iter().map(DimFact::known).collect();
        if let Some(shape) = known {
            let plan = self.plan(&shape, &v).map_err(in_op(op))?;
            let out = plan.iter().map(|p| DimFact::Known(p.len_out)).collect();
            return Ok(vec![ValueFact::new(x.dtype, Some(out))]);
        }
        let axes = self.axes(dims.len()).map_err(in_op(op))?;
        let mut out = dims.clone();
        if let Some(s) = &v.sizes {
            if s.len() != axes.len() || s.iter().any(|&n| n < 0) {
                return Err(fact_error(op, format!("sizes {s:?} do not fit input {x}")));
            }
            for (&a, &n) in axes.iter().zip(s) {
                out[a] = if self.keep_aspect_ratio_policy == "stretch" {
                    DimFact::Known(n as usize)
                } else {
                    DimFact::Unknown
                };
            }
        } else if let Some(sc) = &v.scales {
            if sc.len() != axes.len() || sc.iter().any(|&s| s.is_nan() || s <= 0.0 || s.is_infinite()) {
                return Err(fact_error(op, format!("scales {sc:?} do not fit input {x}")));
            }
            for (&a, &s) in axes.iter().zip(sc) {
                out[a] = match dims[a].known() {
                    Some(i) => DimFact::Known((i as f32 * s).floor() as usize),
                    None if s == 1.0 => dims[a].clone(),
                    None => DimFact::Unknown,
                };
            }
        }
        Ok(vec![ValueFact::new(x.dtype, Some(out))])
    }
}

impl FromOnnx for Resize {
    fn from_onnx(cx: &ParseCtx) -> Result<Self> {
        let a = cx.attrs;
        let mode = match a.string("mode", "nearest")?.as_str() {
            "nearest" => ResizeMode::Nearest,
            "linear" => ResizeMode::Linear,
            "cubic" if cx.op_type != "Upsample" && cx.opset >= 11 => ResizeMode::Cubic,
            other => return Err(a.unsupported(format!("mode '{other}'"))),
        };
        let upsample = cx.op_type == "Upsample";
        let legacy = upsample || cx.opset < 11;
        let coord = if legacy {
            "asymmetric".to_string()
        } else {
            a.string("coordinate_transformation_mode", "half_pixel")?
        };
        let nearest = if legacy {
            "simple".to_string()
        } else {
            a.string("nearest_mode", "round_prefer_floor")?
        };
        const COORD_MODES: [&str; 7] = [
            "half_pixel",
            "half_pixel_symmetric",
            "pytorch_half_pixel",
            "align_corners",
            "asymmetric",
            "tf_half_pixel_for_nn",
            "tf_crop_and_resize",
        ];
        if !COORD_MODES.contains(&coord.as_str()) {
            return Err(a.unsupported(format!("coordinate_transformation_mode '{coord}'")));
        }
        const NEAREST_MODES: [&str; 4] = ["round_prefer_floor", "round_prefer_ceil", "floor", "ceil"];
        if !legacy && !NEAREST_MODES.contains(&nearest.as_str()) {
            return Err(a.unsupported(format!("nearest_mode '{nearest}'")));
        }
        let policy = a.string("keep_aspect_ratio_policy", "stretch")?;
        if !["stretch", "not_larger", "not_smaller"].contains(&policy.as_str()) {
            return Err(a.unsupported(format!("keep_aspect_ratio_policy '{policy}'")));
        }
        Ok(Resize {
            mode,
            coord_mode: coord,
            nearest_mode: nearest,
            cubic_coeff_a: a.float("cubic_coeff_a", -0.75)?,
            exclude_outside: a.int("exclude_outside", 0)? != 0,
            extrapolation_value: a.float("extrapolation_value", 0.0)?,
            antialias: a.int("antialias", 0)? != 0,
            axes: a.ints_opt("axes")?,
            keep_aspect_ratio_policy: policy,
            scales: a.floats_opt("scales")?,
            scales_input: if legacy { 1 } else { 2 },
            upsample,
        })
    }
}

impl Op for Resize {
    fn op_type(&self) -> &'static str {
        if self.upsample {
            "Upsample"
        } else {
            "Resize"
        }
    }
    fn to_attrs(&self, opset: i64) -> Vec<(String, AttrValue)> {
        let mut v = Vec::new();
        if let Some(s) = &self.scales {
            v.push(("scales".to_string(), AttrValue::Floats(s.clone())));
        }
        let string = |s: &str| AttrValue::String(s.to_string());
        if opset >= 11 && !self.upsample && self.scales.is_none() {
            v.push(("coordinate_transformation_mode".into(), string(&self.coord_mode)));
            v.push(("nearest_mode".into(), string(&self.nearest_mode)));
            if self.cubic_coeff_a != -0.75 {
                v.push(("cubic_coeff_a".into(), AttrValue::Float(self.cubic_coeff_a)));
            }
            if self.exclude_outside {
                v.push(("exclude_outside".into(), AttrValue::Int(1)));
            }
            if self.extrapolation_value != 0.0 {
                v.push(("extrapolation_value".into(), AttrValue::Float(self.extrapolation_value)));
            }
        }
        if self.antialias {
            v.push(("antialias".into(), AttrValue::Int(1)));
        }
        if let Some(axes) = &self.axes {
            v.push(("axes".into(), AttrValue::Ints(axes.clone())));
        }
        if self.keep_aspect_ratio_policy != "stretch" {
            v.push((
                "keep_aspect_ratio_policy".into(),
                string(&self.keep_aspect_ratio_policy),
            ));
        }
        let mode = match self.mode {
            ResizeMode::Nearest => "nearest",
            ResizeMode::Linear => "linear",
            ResizeMode::Cubic => "cubic",
        };
        v.push(("mode".into(), string(mode)));
        v
    }
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        self.run(inputs)
    }
    fn output_facts(&self, inputs: &[Option<&ValueFact>], constants: &[Option<&Tensor>]) -> Result<Vec<ValueFact>> {
        self.facts(inputs, constants)
    }
    fn ptq_class(&self, _n: &NodeFacts) -> Class {
        if self.mode == ResizeMode::Nearest {
            Class::Seamless
        } else {
            Class::FloatIsland("linear and cubic Resize compute new values".into())
        }
    }
    fn sign_rule(&self, _n: &NodeFacts) -> SignRule {
        match self.mode {
            // Copies (nearest) or convex combinations (linear) of the input's values, and the
            // extrapolation value outside a crop.
            ResizeMode::Nearest | ResizeMode::Linear if self.extrapolation_value >= 0.0 || !self.crop() => {
                SignRule::FollowsInputs
            }
            _ => SignRule::Unknown,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The N-linear and N-cubic definitions evaluated directly: every output element is the
    /// sum over all input elements of the product of their per-axis weights (in f64).
    fn direct(op: &Resize, x: &[f32], plan: &[AxisPlan]) -> Vec<f64> {
        let per_axis: Vec<Vec<Vec<(usize, f32)>>> = plan.iter().map(|p| op.taps(p).0).collect();
        let out_shape: Vec<usize> = plan.iter().map(|p| p.len_out).collect();
        let in_shape: Vec<usize> = plan.iter().map(|p| p.len_in).collect();
        let (ist, ost) = (strides(&in_shape), strides(&out_shape));
        let n: usize = out_shape.iter().product();
        (0..n)
            .map(|i| {
                let idx: Vec<usize> = (0..plan.len()).map(|d| (i / ost[d]) % out_shape[d]).collect();
                // All combinations of the per-axis taps.
                let mut acc = vec![(0usize, 1f64)];
                for d in 0..plan.len() {
                    let taps: Vec<(usize, f32)> = if op.is_identity(&plan[d]) {
                        vec![(idx[d], 1.0)]
                    } else {
                        per_axis[d][idx[d]].clone()
                    };
                    let step = ist[d];
                    acc = acc
                        .iter()
                        .flat_map(|&(off, w)| taps.iter().map(move |&(t, tw)| (off + t * step, w * tw as f64)))
                        .collect();
                }
                acc.iter().map(|&(off, w)| w * x[off] as f64).sum()
            })
            .collect()
    }

    proptest! {
        #[test]
        fn separable_passes_match_the_direct_sum(
            dims in prop::collection::vec((1usize..5, prop::sample::select(vec![0.5f32, 0.7, 1.0, 1.5, 2.0, 3.0])), 1..=3),
            cubic in any::<bool>(), antialias in any::<bool>(), exclude in any::<bool>(),
            coord in prop::sample::select(vec!["half_pixel", "asymmetric", "align_corners", "pytorch_half_pixel"]),
            seed in 0u64..1000,
        ) {
            let op = Resize {
                mode: if cubic { ResizeMode::Cubic } else { ResizeMode::Linear },
                coord_mode: coord.into(),
                nearest_mode: "round_prefer_floor".into(),
                cubic_coeff_a: -0.75,
                exclude_outside: exclude,
                extrapolation_value: 0.0,
                antialias,
                axes: None,
                keep_aspect_ratio_policy: "stretch".into(),
                scales: None,
                scales_input: 2,
                upsample: false,
            };
            let shape: Vec<usize> = dims.iter().map(|d| d.0).collect();
            let scales: Vec<f32> = dims.iter().map(|d| d.1).collect();
            let x = crate::kernels::testing::fill(shape.iter().product(), seed);
            let xt = Tensor::from_vec(shape.clone(), x.clone()).unwrap();
            let st = Tensor::from_vec(vec![scales.len()], scales.clone()).unwrap();
            let plan = op.plan(&shape, &ShapeInputs { scales: Some(scales), sizes: None, roi: None }).unwrap();
            let got = op.run(&[Some(&xt), None, Some(&st)]).unwrap().remove(0);
            let want = direct(&op, &x, &plan);
            let got = got.as_slice::<f32>().unwrap();
            prop_assert_eq!(got.len(), want.len());
            for (g, w) in got.iter().zip(&want) {
                prop_assert!((*g as f64 - w).abs() <= 1e-5 * (1.0 + w.abs()), "{} vs {}", g, w);
            }
        }
    }
}
