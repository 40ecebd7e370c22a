//! Data movement and shape ops, for any element type: Flatten, Reshape, Transpose, Concat,
//! Slice, Pad, Squeeze, Unsqueeze, Resize (nearest), Gather, Shape, Cast, ConstantOfShape.

use super::{input, norm_axis};
use crate::dispatch_data;
use crate::error::{Error, Result};
use crate::tensor::{check_alloc, numel, strides, DType, Tensor, TensorData};
use rayon::prelude::*;

/// Gathers `t`'s elements into a tensor of `shape`: along every axis `d`, output index `o`
/// reads input offset `tables[d][o]` (summed over axes), or `fill` when any of them is
/// `None` (padding). The last axis runs in a tight loop per row, so Slice, Pad and
/// Transpose cost one pass over the output.
fn take_tables(t: &Tensor, shape: Vec<usize>, tables: &[Vec<Option<usize>>], fill: f64) -> Result<Tensor> {
    /// How one output row of the last axis reads its input: a contiguous run (a copy),
    /// offsets without padding, or offsets with padding.
    enum Row<'a> {
        Run(usize),
        Offsets(Vec<usize>),
        Padded(&'a [Option<usize>]),
    }
    /// Fills `out` (the rows of `outer`'s index space, in order) from `v` at `base`.
    fn rows<T: Copy>(v: &[T], outer: &[Vec<Option<usize>>], row: &Row, base: Option<usize>, fill: T, out: &mut [T]) {
        match outer.split_first() {
            None => match (base, row) {
                (Some(b), Row::Run(s)) => out.copy_from_slice(&v[b + s..b + s + out.len()]),
                (Some(b), Row::Offsets(o)) => {
                    for (d, &o) in out.iter_mut().zip(o) {
                        *d = v[b + o];
                    }
                }
                (Some(b), Row::Padded(p)) => {
                    for (d, o) in out.iter_mut().zip(p.iter()) {
                        *d = o.map_or(fill, |o| v[b + o]);
                    }
                }
                (None, _) => out.fill(fill),
            },
            Some((t, rest)) => {
                let sub = out.len() / t.len().max(1);
                for (o, chunk) in t.iter().zip(out.chunks_mut(sub.max(1))) {
                    let b = base.zip(*o).map(|(b, o)| b + o);
                    rows(v, rest, row, b, fill, chunk);
                }
            }
        }
    }
    fn gather<T: Copy + Send + Sync>(v: &[T], tables: &[Vec<Option<usize>>], fill: T) -> Vec<T> {
        let n: usize = tables.iter().map(|t| t.len()).product();
        if n == 0 {
            return Vec::new();
        }
        let Some((last, outer)) = tables.split_last() else {
            return vec![v[0]];
        };
        let row = if last.iter().enumerate().all(|(i, o)| *o == last[0].map(|s| s + i)) && last[0].is_some() {
            Row::Run(last[0].unwrap_or(0))
        } else if last.iter().all(Option::is_some) {
            Row::Offsets(last.iter().flatten().copied().collect())
        } else {
            Row::Padded(last)
        };
        let mut out = vec![fill; n];
        // Large outputs (a batch's shortcut Slice and Pad) in parallel over the first axis
        // longer than one, of the first two; small ones are not worth a task split.
        const PARALLEL_MIN: usize = 1 << 15;
        let split = if n < PARALLEL_MIN {
            None
        } else if outer.first().is_some_and(|t| t.len() > 1) {
            Some((0, Some(0)))
        } else if outer.len() > 1 && outer[1].len() > 1 {
            Some((1, outer[0][0]))
        } else {
            None
        };
        match split {
            Some((axis, base)) => {
                let (t, rest) = (&outer[axis], &outer[axis + 1..]);
                let sub = n / t.len();
                out.par_chunks_mut(sub).zip(t.par_iter()).for_each(|(chunk, o)| {
                    let b = base.zip(*o).map(|(b, o)| b + o);
                    rows(v, rest, &row, b, fill, chunk);
                });
            }
            None => rows(v, outer, &row, Some(0), fill, &mut out),
        }
        out
    }
    let data = match t.data() {
        TensorData::F32(v) => TensorData::F32(gather(v, tables, fill as f32)),
        TensorData::U8(v) => TensorData::U8(gather(v, tables, fill as u8)),
        TensorData::I8(v) => TensorData::I8(gather(v, tables, fill as i8)),
        TensorData::I32(v) => TensorData::I32(gather(v, tables, fill as i32)),
        TensorData::I64(v) => TensorData::I64(gather(v, tables, fill as i64)),
        TensorData::Bool(v) => TensorData::Bool(gather(v, tables, fill != 0.0)),
    };
    Tensor::new(shape, data)
}

fn ints_input(inputs: &[Option<&Tensor>], i: usize, what: &str) -> Result<Option<Vec<i64>>> {
    inputs
        .get(i)
        .copied()
        .flatten()
        .map(|t| t.to_i64_vec())
        .transpose()
        .map_err(|e| Error::shape(format!("{what}: {e}")))
}

/// The 2-D shape Flatten gives `shape` at `axis`.
pub fn flatten_shape(axis: i64, shape: &[usize]) -> Result<Vec<usize>> {
    let a = if axis < 0 { axis + shape.len() as i64 } else { axis };
    if a < 0 || a > shape.len() as i64 {
        return Err(Error::shape(format!(
            "Flatten axis {axis} out of range for shape {shape:?}"
        )));
    }
    let a = a as usize;
    Ok(vec![shape[..a].iter().product(), shape[a..].iter().product()])
}

pub fn flatten(axis: i64, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    let x = input(inputs, 0, "input")?;
    let shape = flatten_shape(axis, x.shape())?;
    Ok(vec![x.clone().reshape(shape)?])
}

/// The output shape of Reshape (0 copies a dimension unless `allowzero`, -1 is inferred).
pub fn reshape_target(input: &[usize], spec: &[i64], allowzero: bool) -> Result<Vec<usize>> {
    let mut out = Vec::with_capacity(spec.len());
    let mut infer = None;
    for (i, &d) in spec.iter().enumerate() {
        match d {
            -1 if infer.is_none() => {
                infer = Some(i);
                out.push(1);
            }
            0 if !allowzero => out.push(*input.get(i).ok_or_else(|| {
                Error::shape(format!(
                    "Reshape shape {spec:?}: 0 at position {i} but input {input:?} has no such dim"
                ))
            })?),
            d if d >= 0 => out.push(d as usize),
            _ => return Err(Error::shape(format!("Reshape shape {spec:?} is invalid"))),
        }
    }
    let total = numel(input);
    if let Some(i) = infer {
        let known = numel(&out);
        if known == 0 || !total.is_multiple_of(known) {
            return Err(Error::shape(format!("cannot reshape {input:?} to {spec:?}")));
        }
        out[i] = total / known;
    }
    if numel(&out) != total {
        return Err(Error::shape(format!(
            "cannot reshape {input:?} ({total} elements) to {spec:?}"
        )));
    }
    Ok(out)
}

pub fn reshape(allowzero: bool, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    let x = input(inputs, 0, "data")?;
    let spec = input(inputs, 1, "shape")?.to_i64_vec()?;
    let shape = reshape_target(x.shape(), &spec, allowzero)?;
    Ok(vec![x.clone().reshape(shape)?])
}

pub fn transpose(perm: &Option<Vec<usize>>, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    let x = input(inputs, 0, "data")?;
    let r = x.rank();
    let perm: Vec<usize> = perm.clone().unwrap_or_else(|| (0..r).rev().collect());
    let mut sorted = perm.clone();
    sorted.sort_unstable();
    if sorted != (0..r).collect::<Vec<_>>() {
        return Err(Error::shape(format!(
            "Transpose perm {perm:?} is not a permutation of the {r} axes of {:?}",
            x.shape()
        )));
    }
    let st = strides(x.shape());
    let shape: Vec<usize> = perm.iter().map(|&p| x.shape()[p]).collect();
    let tables: Vec<Vec<Option<usize>>> = perm
        .iter()
        .map(|&p| (0..x.shape()[p]).map(|o| Some(o * st[p])).collect())
        .collect();
    Ok(vec![take_tables(x, shape, &tables, 0.0)?])
}

pub fn concat(axis: i64, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    let first = input(inputs, 0, "inputs[0]")?;
    let r = first.rank();
    let a = norm_axis(axis, r)?;
    let parts: Vec<&Tensor> = inputs.iter().flatten().copied().collect();
    let mut shape = first.shape().to_vec();
    shape[a] = 0;
    for t in &parts {
        let ok =
            t.rank() == r && t.dtype() == first.dtype() && (0..r).all(|d| d == a || t.shape()[d] == first.shape()[d]);
        if !ok {
            return Err(Error::shape(format!(
                "Concat on axis {axis}: input {} {:?} does not match {} {:?}",
                t.dtype(),
                t.shape(),
                first.dtype(),
                first.shape()
            )));
        }
        shape[a] += t.shape()[a];
    }
    let outer: usize = shape[..a].iter().product();
    let inner: usize = shape[a + 1..].iter().product();
    macro_rules! cat {
        ($variant:ident) => {{
            let mut out = Vec::with_capacity(numel(&shape));
            let slices: Vec<_> = parts
                .iter()
                .map(|t| match t.data() {
                    TensorData::$variant(v) => v.as_slice(),
                    _ => &[],
                })
                .collect();
            for o in 0..outer {
                for (t, s) in parts.iter().zip(&slices) {
                    let blk = t.shape()[a] * inner;
                    out.extend_from_slice(&s[o * blk..(o + 1) * blk]);
                }
            }
            TensorData::$variant(out)
        }};
    }
    let data = match first.data() {
        TensorData::F32(_) => cat!(F32),
        TensorData::U8(_) => cat!(U8),
        TensorData::I8(_) => cat!(I8),
        TensorData::I32(_) => cat!(I32),
        TensorData::I64(_) => cat!(I64),
        TensorData::Bool(_) => cat!(Bool),
    };
    Ok(vec![Tensor::new(shape, data)?])
}

/// Slice parameters given as attributes (opset < 10); later opsets pass them as inputs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SliceAttrs {
    pub starts: Vec<i64>,
    pub ends: Vec<i64>,
    pub axes: Option<Vec<i64>>,
}

pub fn slice(attrs: &Option<SliceAttrs>, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    let x = input(inputs, 0, "data")?;
    let (starts, ends, axes, steps) = match attrs {
        Some(a) => (a.starts.clone(), a.ends.clone(), a.axes.clone(), None),
        None => (
            input(inputs, 1, "starts")?.to_i64_vec()?,
            input(inputs, 2, "ends")?.to_i64_vec()?,
            ints_input(inputs, 3, "axes")?,
            ints_input(inputs, 4, "steps")?,
        ),
    };
    let r = x.rank();
    let axes: Vec<i64> = axes.unwrap_or_else(|| (0..starts.len() as i64).collect());
    let steps = steps.unwrap_or_else(|| vec![1; starts.len()]);
    if ends.len() != starts.len() || axes.len() != starts.len() || steps.len() != starts.len() {
        return Err(Error::shape(format!(
            "Slice: starts {starts:?}, ends {ends:?}, axes {axes:?} and steps {steps:?} differ in length"
        )));
    }
    let st = strides(x.shape());
    let mut tables: Vec<Vec<Option<usize>>> = (0..r)
        .map(|d| (0..x.shape()[d]).map(|o| Some(o * st[d])).collect())
        .collect();
    let mut shape = x.shape().to_vec();
    for i in 0..starts.len() {
        let d = norm_axis(axes[i], r)?;
        let dim = x.shape()[d] as i64;
        let step = steps[i];
        if step == 0 {
            return Err(Error::shape("Slice step must not be 0".to_string()));
        }
        let fix = |v: i64| if v < 0 { v.saturating_add(dim) } else { v };
        let (s, e) = if step > 0 {
            (fix(starts[i]).clamp(0, dim), fix(ends[i]).clamp(0, dim))
        } else {
            (fix(starts[i]).clamp(0, dim - 1), fix(ends[i]).clamp(-1, dim - 1))
        };
        let count = if step > 0 {
            ((e - s).max(0) as u64).div_ceil(step as u64)
        } else {
            ((s - e).max(0) as u64).div_ceil(step.unsigned_abs())
        } as usize;
        tables[d] = (0..count)
            .map(|o| Some((s + o as i64 * step) as usize * st[d]))
            .collect();
        shape[d] = count;
    }
    Ok(vec![take_tables(x, shape, &tables, 0.0)?])
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PadMode {
    Constant,
    Reflect,
    Edge,
}

/// Pad with pads/value from attributes (opset < 11) or from inputs.
#[derive(Debug, Clone, PartialEq)]
pub struct Pad {
    pub mode: PadMode,
    pub pads: Option<Vec<i64>>,
    pub value: f32,
}

impl PadMode {
    pub fn name(self) -> &'static str {
        match self {
            PadMode::Constant => "constant",
            PadMode::Reflect => "reflect",
            PadMode::Edge => "edge",
        }
    }
}

impl Pad {
    pub fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0, "data")?;
        let r = x.rank();
        let (pads_in, value) = match &self.pads {
            Some(p) => (p.clone(), self.value as f64),
            None => {
                let p = input(inputs, 1, "pads")?.to_i64_vec()?;
                let v = match inputs.get(2).copied().flatten() {
                    Some(t) if t.len() == 1 => t.to_f32_vec()[0] as f64,
                    Some(t) => {
                        return Err(Error::shape(format!(
                            "Pad constant_value must be a scalar, got {:?}",
                            t.shape()
                        )))
                    }
                    None => 0.0,
                };
                (p, v)
            }
        };
        let axes: Vec<usize> = match ints_input(inputs, 3, "axes")? {
            Some(a) => a.iter().map(|&v| norm_axis(v, r)).collect::<Result<_>>()?,
            None => (0..r).collect(),
        };
        if pads_in.len() != 2 * axes.len() {
            return Err(Error::shape(format!(
                "Pad: pads {pads_in:?} should have {} values for input {:?}",
                2 * axes.len(),
                x.shape()
            )));
        }
        let mut pads = vec![0i64; 2 * r];
        for (i, &a) in axes.iter().enumerate() {
            pads[a] = pads_in[i];
            pads[a + r] = pads_in[i + axes.len()];
        }
        // The output size, checked before the index tables (one entry per output row) exist.
        let out_shape: Vec<usize> = (0..r)
            .map(|d| {
                (x.shape()[d] as i64)
                    .saturating_add(pads[d])
                    .saturating_add(pads[d + r])
                    .max(0) as usize
            })
            .collect();
        check_alloc(&out_shape, 8)?;
        // ... and the index tables, one Option<usize> per output row of every axis.
        check_alloc(&[out_shape.iter().fold(0usize, |s, &d| s.saturating_add(d))], 16)?;
        let st = strides(x.shape());
        let mut shape = Vec::with_capacity(r);
        let mut tables = Vec::with_capacity(r);
        for d in 0..r {
            let dim = x.shape()[d] as i64;
            let out = dim
                .checked_add(pads[d])
                .and_then(|v| v.checked_add(pads[d + r]))
                .ok_or_else(|| Error::shape(format!("Pad: pads {pads:?} overflow axis {d}")))?;
            if out < 0 || pads[d] < -dim || pads[d + r] < -dim {
                return Err(Error::shape(format!(
                    "Pad: pads {pads:?} remove more than the {dim} elements of axis {d}"
                )));
            }
            if self.mode != PadMode::Constant && dim == 0 && out > 0 {
                return Err(Error::shape(format!(
                    "Pad mode {} cannot pad an empty axis",
                    self.mode.name()
                )));
            }
            if self.mode == PadMode::Reflect
                && (pads[d] >= dim || pads[d + r] >= dim)
                && (pads[d] > 0 || pads[d + r] > 0)
            {
                return Err(Error::shape(format!(
                    "Pad mode reflect: pads {pads:?} must be smaller than axis {d} of size {dim}"
                )));
            }
            shape.push(out as usize);
            tables.push(
                (0..out)
                    .map(|o| {
                        let i = o - pads[d];
                        let src = if (0..dim).contains(&i) {
                            Some(i)
                        } else {
                            match self.mode {
                                PadMode::Constant => None,
                                PadMode::Edge => Some(i.clamp(0, dim - 1)),
                                PadMode::Reflect => Some(if i < 0 { -i } else { 2 * (dim - 1) - i }),
                            }
                        };
                        src.map(|s| s as usize * st[d])
                    })
                    .collect::<Vec<_>>(),
            );
        }
        Ok(vec![take_tables(x, shape, &tables, value)?])
    }
}

pub fn squeeze(axes: &Option<Vec<i64>>, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    let x = input(inputs, 0, "data")?;
    let r = x.rank();
    let axes: Option<Vec<i64>> = axes.clone().or(ints_input(inputs, 1, "axes")?);
    let drop: Vec<usize> = match axes {
        Some(a) => a.iter().map(|&v| norm_axis(v, r)).collect::<Result<_>>()?,
        None => (0..r).filter(|&d| x.shape()[d] == 1).collect(),
    };
    for &d in &drop {
        if x.shape()[d] != 1 {
            return Err(Error::shape(format!("Squeeze axis {d} of {:?} is not 1", x.shape())));
        }
    }
    let shape = (0..r).filter(|d| !drop.contains(d)).map(|d| x.shape()[d]).collect();
    Ok(vec![x.clone().reshape(shape)?])
}

pub fn unsqueeze(axes: &Option<Vec<i64>>, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    let x = input(inputs, 0, "data")?;
    let axes = match axes.clone() {
        Some(a) => a,
        None => input(inputs, 1, "axes")?.to_i64_vec()?,
    };
    let r = x.rank() + axes.len();
    let mut ins: Vec<usize> = axes.iter().map(|&a| norm_axis(a, r)).collect::<Result<_>>()?;
    ins.sort_unstable();
    ins.dedup();
    if ins.len() != axes.len() {
        return Err(Error::shape(format!("Unsqueeze axes {axes:?} repeat an axis")));
    }
    let mut shape = Vec::with_capacity(r);
    let mut src = x.shape().iter();
    for d in 0..r {
        if ins.contains(&d) {
            shape.push(1);
        } else {
            shape.push(
                *src.next()
                    .ok_or_else(|| Error::shape(format!("Unsqueeze axes {axes:?} invalid for {:?}", x.shape())))?,
            );
        }
    }
    Ok(vec![x.clone().reshape(shape)?])
}

/// Resize / Upsample with nearest-neighbour sampling.
#[derive(Debug, Clone, PartialEq)]
pub struct Resize {
    pub coord_mode: String,
    pub nearest_mode: String,
    /// Scales given as an attribute (Upsample-7).
    pub scales: Option<Vec<f32>>,
    /// Index of the `scales` input (1 for Upsample-9 and Resize-10, 2 for Resize-11+).
    pub scales_input: usize,
    /// Exported as the legacy `Upsample` op it was read from.
    pub upsample: bool,
}

impl Resize {
    pub fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0, "X")?;
        let r = x.rank();
        let scales_t = inputs
            .get(self.scales_input)
            .copied()
            .flatten()
            .filter(|t| !t.is_empty());
        let sizes_t = if self.scales_input == 2 {
            inputs.get(3).copied().flatten().filter(|t| !t.is_empty())
        } else {
            None
        };
        let (scales, out_shape): (Vec<f32>, Vec<usize>) = if let Some(sz) = sizes_t {
            let s = sz.to_i64_vec()?;
            if s.len() != r || s.iter().any(|&v| v < 0) {
                return Err(Error::shape(format!(
                    "Resize sizes {s:?} do not fit input {:?}",
                    x.shape()
                )));
            }
            let out: Vec<usize> = s.iter().map(|&v| v as usize).collect();
            (
                out.iter()
                    .zip(x.shape())
                    .map(|(&o, &i)| o as f32 / i.max(1) as f32)
                    .collect(),
                out,
            )
        } else {
            let sc = match (&self.scales, scales_t) {
                (Some(s), _) => s.clone(),
                (None, Some(t)) => t.as_slice::<f32>()?.to_vec(),
                (None, None) => return Err(Error::shape("Resize needs scales or sizes".to_string())),
            };
            if sc.len() != r || sc.iter().any(|&v| v.is_nan() || v <= 0.0 || v.is_infinite()) {
                return Err(Error::shape(format!(
                    "Resize scales {sc:?} do not fit input {:?}",
                    x.shape()
                )));
            }
            let out = x
                .shape()
                .iter()
                .zip(&sc)
                .map(|(&i, &s)| (i as f32 * s).floor() as usize)
                .collect();
            (sc, out)
        };
        check_alloc(&out_shape, 8)?;
        check_alloc(&[out_shape.iter().fold(0usize, |s, &d| s.saturating_add(d))], 16)?;
        let st = strides(x.shape());
        let tables: Vec<Vec<Option<usize>>> = (0..r)
            .map(|d| {
                let (len_in, len_out, scale) = (x.shape()[d], out_shape[d], scales[d]);
                if scale == 1.0 && len_out == len_in {
                    // An axis that is not resized is copied as is (as onnxruntime does), even
                    // where a mode's formula would shift it (tf_half_pixel_for_nn with ceil).
                    return (0..len_out).map(|o| Some(o * st[d])).collect();
                }
                (0..len_out)
                    .map(|o| {
                        let xo = o as f32;
                        let orig = match self.coord_mode.as_str() {
                            "asymmetric" => xo / scale,
                            "align_corners" if len_out > 1 => xo * (len_in as f32 - 1.0) / (len_out as f32 - 1.0),
                            "align_corners" => 0.0,
                            "pytorch_half_pixel" if len_out > 1 => (xo + 0.5) / scale - 0.5,
                            "pytorch_half_pixel" => 0.0,
                            "tf_half_pixel_for_nn" => (xo + 0.5) / scale,
                            "half_pixel_symmetric" => {
                                // Centres the sampled grid when the scaled width is fractional.
                                // The last step in f64, as onnxruntime does, so that exact
                                // integers stay exact for floor/ceil.
                                let adjustment = len_out as f32 / (len_in as f32 * scale);
                                let offset = len_in as f32 / 2.0 * (1.0 - adjustment);
                                (offset as f64 + (xo as f64 + 0.5) / scale as f64 - 0.5) as f32
                            }
                            // half_pixel (other modes are refused when the node is read)
                            _ => (xo + 0.5) / scale - 0.5,
                        };
                        let idx = match self.nearest_mode.as_str() {
                            "floor" => orig.floor(),
                            "ceil" => orig.ceil(),
                            "round_prefer_ceil" => (orig + 0.5).floor(),
                            // Resize-10 and Upsample, which predate nearest_mode: onnxruntime's
                            // rule, the reference for these versions (the spec names none).
                            "simple" if scale < 1.0 => orig.ceil(),
                            "simple" => orig.floor(),
                            // round_prefer_floor (other modes are refused when the node is read)
                            _ => {
                                // round_prefer_floor: halves go down
                                if orig.fract() == 0.5 {
                                    orig.floor()
                                } else {
                                    orig.round()
                                }
                            }
                        };
                        let i = (idx.max(0.0) as usize).min(len_in.saturating_sub(1));
                        Some(i * st[d])
                    })
                    .collect()
            })
            .collect();
        Ok(vec![take_tables(x, out_shape, &tables, 0.0)?])
    }
}

pub fn gather(axis: i64, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    let x = input(inputs, 0, "data")?;
    let idx_t = input(inputs, 1, "indices")?;
    let a = norm_axis(axis, x.rank())?;
    let dim = x.shape()[a] as i64;
    let idx = idx_t.to_i64_vec()?;
    let outer: usize = x.shape()[..a].iter().product();
    let inner: usize = x.shape()[a + 1..].iter().product();
    let mut rows = Vec::with_capacity(idx.len());
    for &i in &idx {
        let j = if i < 0 { i + dim } else { i };
        if j < 0 || j >= dim {
            return Err(Error::shape(format!(
                "Gather index {i} out of range for axis {a} of size {dim}"
            )));
        }
        rows.push(Some(j as usize * inner));
    }
    let tables = vec![
        (0..outer).map(|o| Some(o * dim as usize * inner)).collect(),
        rows,
        (0..inner).map(Some).collect(),
    ];
    let mut shape = x.shape()[..a].to_vec();
    shape.extend_from_slice(idx_t.shape());
    shape.extend_from_slice(&x.shape()[a + 1..]);
    check_alloc(&shape, 8)?;
    Ok(vec![take_tables(x, shape, &tables, 0.0)?])
}

pub fn shape_of(start: i64, end: Option<i64>, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    let x = input(inputs, 0, "data")?;
    let r = x.rank() as i64;
    let clampi = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
    let (s, e) = (clampi(start), clampi(end.unwrap_or(r)));
    let dims: Vec<i64> = x.shape()[s..e.max(s)].iter().map(|&d| d as i64).collect();
    Ok(vec![Tensor::from_vec(vec![dims.len()], dims)?])
}

pub fn constant_of_shape(value: &Tensor, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    let spec = input(inputs, 0, "input")?.to_i64_vec()?;
    if spec.iter().any(|&d| d < 0) {
        return Err(Error::shape(format!(
            "ConstantOfShape shape {spec:?} has a negative dimension"
        )));
    }
    let shape: Vec<usize> = spec.iter().map(|&d| d as usize).collect();
    let n = check_alloc(&shape, 8)?;
    let data = dispatch_data!(value.data(), v => {
        let first = *v.first().ok_or_else(|| Error::shape("ConstantOfShape value is empty".to_string()))?;
        crate::tensor::Element::wrap(vec![first; n])
    });
    Ok(vec![Tensor::new(shape, data)?])
}

pub fn cast(to: DType, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    Ok(vec![input(inputs, 0, "input")?.cast(to)])
}
