//! Slice: starts/ends/axes as attributes (opset < 10) or as inputs with steps.

use super::{ints_input, take_tables};
use crate::error::{Error, Result};
use crate::onnx::attrs::AttrValue;
use crate::ops::facts::{constant, fact_axis, fact_error, in_op, optional, required};
use crate::ops::{input, norm_axis, DimFact, FromOnnx, Op, ParseCtx, ValueFact};
use crate::tensor::{strides, Tensor};

/// Slice parameters given as attributes (opset < 10); later opsets pass them as inputs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SliceAttrs {
    pub starts: Vec<i64>,
    pub ends: Vec<i64>,
    pub axes: Option<Vec<i64>>,
}

/// The first index and the count of elements that a slice `start..end` by `step` (not 0)
/// takes from an axis of `dim` elements, with ONNX's clamping of out-of-range bounds.
fn slice_range(start: i64, end: i64, step: i64, dim: i64) -> (i64, usize) {
    if dim == 0 {
        // Nothing to take (and no index to clamp to when the step is negative).
        return (0, 0);
    }
    let fix = |v: i64| if v < 0 { v.saturating_add(dim) } else { v };
    let (s, e) = if step > 0 {
        (fix(start).clamp(0, dim), fix(end).clamp(0, dim))
    } else {
        (fix(start).clamp(0, dim - 1), fix(end).clamp(-1, dim - 1))
    };
    let count = if step > 0 {
        ((e - s).max(0) as u64).div_ceil(step as u64)
    } else {
        ((s - e).max(0) as u64).div_ceil(step.unsigned_abs())
    } as usize;
    (s, count)
}

/// Slice's parameters `(starts, ends, axes, steps)`, from the attributes or the constant
/// inputs; `None` when one of them is computed by the graph.
type SliceParams = (Vec<i64>, Vec<i64>, Option<Vec<i64>>, Option<Vec<i64>>);

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
        let (s, count) = slice_range(starts[i], ends[i], step, dim);
        tables[d] = (0..count)
            .map(|o| Some((s + o as i64 * step) as usize * st[d]))
            .collect();
        shape[d] = count;
    }
    Ok(vec![take_tables(x, shape, &tables, 0.0)?])
}

/// The output's facts (see `Op::output_facts`).
fn slice_facts(
    attrs: &Option<SliceAttrs>,
    inputs: &[Option<&ValueFact>],
    constants: &[Option<&Tensor>],
) -> Result<Vec<ValueFact>> {
    const OP: &str = "Slice";
    let x = required(inputs, 0, OP, "data")?;
    let ints = |i: usize| {
        constant(constants, i)
            .map(|t| t.to_i64_vec())
            .transpose()
            .map_err(in_op(OP))
    };
    // An omitted optional input is known (its default); a computed one is not.
    let opt_ints = |i: usize| -> Result<Option<Option<Vec<i64>>>> {
        match optional(inputs, i) {
            None => Ok(Some(None)),
            Some(_) => Ok(ints(i)?.map(Some)),
        }
    };
    let params: Option<SliceParams> = match attrs {
        Some(a) => Some((a.starts.clone(), a.ends.clone(), a.axes.clone(), None)),
        None => {
            required(inputs, 1, OP, "starts")?;
            required(inputs, 2, OP, "ends")?;
            match (ints(1)?, ints(2)?, opt_ints(3)?, opt_ints(4)?) {
                (Some(s), Some(e), Some(a), Some(st)) => Some((s, e, a, st)),
                _ => None,
            }
        }
    };
    let Some(shape_in) = &x.shape else {
        return Ok(vec![ValueFact::new(x.dtype, None)]);
    };
    let r = shape_in.len();
    let Some((starts, ends, axes, steps)) = params else {
        return Ok(vec![ValueFact::new(x.dtype, Some(vec![DimFact::Unknown; r]))]);
    };
    let axes: Vec<i64> = axes.unwrap_or_else(|| (0..starts.len() as i64).collect());
    let steps = steps.unwrap_or_else(|| vec![1; starts.len()]);
    if ends.len() != starts.len() || axes.len() != starts.len() || steps.len() != starts.len() {
        return Err(fact_error(
            OP,
            format!("starts {starts:?}, ends {ends:?}, axes {axes:?} and steps {steps:?} differ in length"),
        ));
    }
    let mut shape = shape_in.clone();
    for i in 0..starts.len() {
        let d = fact_axis(OP, axes[i], r)?;
        if steps[i] == 0 {
            return Err(fact_error(OP, "step must not be 0"));
        }
        shape[d] = match shape_in[d].known() {
            Some(dim) => DimFact::Known(slice_range(starts[i], ends[i], steps[i], dim as i64).1),
            // The whole axis of a free size (start 0, end past any size, step 1) keeps it.
            None if starts[i] == 0 && ends[i] >= i32::MAX as i64 && steps[i] == 1 => shape_in[d].clone(),
            None => DimFact::Unknown,
        };
    }
    Ok(vec![ValueFact::new(x.dtype, Some(shape))])
}

#[derive(Debug, Clone, PartialEq)]
pub struct Slice {
    /// The attributes of opset < 10 (later opsets pass them as inputs).
    pub attrs: Option<SliceAttrs>,
}

impl FromOnnx for Slice {
    fn from_onnx(cx: &ParseCtx) -> Result<Self> {
        let a = cx.attrs;
        Ok(Slice {
            attrs: if cx.opset < 10 {
                Some(SliceAttrs {
                    starts: a.ints_opt("starts")?.unwrap_or_default(),
                    ends: a.ints_opt("ends")?.unwrap_or_default(),
                    axes: a.ints_opt("axes")?,
                })
            } else {
                None
            },
        })
    }
}

impl Op for Slice {
    fn op_type(&self) -> &'static str {
        "Slice"
    }
    fn to_attrs(&self, _opset: i64) -> Vec<(String, AttrValue)> {
        let Some(s) = &self.attrs else { return Vec::new() };
        let mut v = vec![
            ("starts".to_string(), AttrValue::Ints(s.starts.clone())),
            ("ends".to_string(), AttrValue::Ints(s.ends.clone())),
        ];
        if let Some(ax) = &s.axes {
            v.push(("axes".into(), AttrValue::Ints(ax.clone())));
        }
        v
    }
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        slice(&self.attrs, inputs)
    }
    fn output_facts(&self, inputs: &[Option<&ValueFact>], constants: &[Option<&Tensor>]) -> Result<Vec<ValueFact>> {
        slice_facts(&self.attrs, inputs, constants)
    }
    fn moves_data_only(&self) -> bool {
        true
    }
}
