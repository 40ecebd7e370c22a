//! CenterCropPad (crop or zero-pad each axis around its centre to a given size), Compress
//! (the slices of an axis where a condition holds) and ReverseSequence (each batch entry's
//! first `len` time steps reversed), on any element type.

use super::take_tables;
use crate::error::{Error, Result};
use crate::onnx::attrs::AttrValue;
use crate::ops::facts::{constant, expect_dtype, fact_axis, fact_error, required, unify_dim, DimFact};
use crate::ops::{input, norm_axis, FromOnnx, Op, ParseCtx, ValueFact};
use crate::tensor::{strides, DType, Tensor, TensorData};

/// Every axis read whole, as `take_tables` tables.
fn whole_tables(shape: &[usize]) -> Vec<Vec<Option<usize>>> {
    shape
        .iter()
        .zip(strides(shape))
        .map(|(&d, st)| (0..d).map(|i| Some(i * st)).collect())
        .collect()
}

#[derive(Debug, Clone, PartialEq)]
pub struct CenterCropPad {
    pub axes: Option<Vec<i64>>,
}

impl FromOnnx for CenterCropPad {
    fn from_onnx(cx: &ParseCtx) -> Result<Self> {
        Ok(CenterCropPad {
            axes: cx.attrs.ints_opt("axes")?,
        })
    }
}

impl CenterCropPad {
    /// The normalized axes and their target sizes.
    fn plan(&self, rank: usize, shape: &[i64]) -> Result<Vec<(usize, usize)>> {
        let axes: Vec<i64> = match &self.axes {
            Some(a) => a.clone(),
            None => (0..rank as i64).collect(),
        };
        if axes.len() != shape.len() {
            return Err(Error::shape(format!(
                "CenterCropPad: shape has {} values for {} axes",
                shape.len(),
                axes.len()
            )));
        }
        let mut out = Vec::with_capacity(axes.len());
        for (&a, &n) in axes.iter().zip(shape) {
            let a = norm_axis(a, rank)?;
            if n < 0 || out.iter().any(|&(b, _)| b == a) {
                return Err(Error::shape(format!(
                    "CenterCropPad: sizes must be >= 0 on distinct axes, got {n} on axis {a}"
                )));
            }
            out.push((a, n as usize));
        }
        Ok(out)
    }
}

impl Op for CenterCropPad {
    fn op_type(&self) -> &'static str {
        "CenterCropPad"
    }
    fn to_attrs(&self, _opset: i64) -> Vec<(String, AttrValue)> {
        self.axes
            .as_ref()
            .map(|a| vec![("axes".to_string(), AttrValue::Ints(a.clone()))])
            .unwrap_or_default()
    }
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0, "input_data")?;
        let target = input(inputs, 1, "shape")?.to_i64_vec()?;
        let s = x.shape().to_vec();
        let mut tables = whole_tables(&s);
        let st = strides(&s);
        let mut out_shape = s.clone();
        for (a, n) in self.plan(s.len(), &target)? {
            let d = s[a];
            tables[a] = if n <= d {
                let start = (d - n) / 2;
                (start..start + n).map(|i| Some(i * st[a])).collect()
            } else {
                let before = (n - d) / 2;
                (0..n)
                    .map(|o| o.checked_sub(before).filter(|&i| i < d).map(|i| i * st[a]))
                    .collect()
            };
            out_shape[a] = n;
        }
        Ok(vec![take_tables(x, out_shape, &tables, 0.0)?])
    }
    fn output_facts(&self, inputs: &[Option<&ValueFact>], constants: &[Option<&Tensor>]) -> Result<Vec<ValueFact>> {
        let op = "CenterCropPad";
        let x = required(inputs, 0, op, "input_data")?;
        let sh = required(inputs, 1, op, "shape")?;
        expect_dtype(op, sh, "shape", &[DType::I32, DType::I64])?;
        let Some(rank) = x.rank() else {
            return Ok(vec![ValueFact::new(x.dtype, None)]);
        };
        let mut dims = x.shape.clone().unwrap_or_default();
        match constant(constants, 1) {
            Some(t) => {
                for (a, n) in self.plan(rank, &t.to_i64_vec()?).map_err(|e| fact_error(op, e))? {
                    dims[a] = DimFact::Known(n);
                }
            }
            None => {
                let axes: Vec<i64> = self.axes.clone().unwrap_or_else(|| (0..rank as i64).collect());
                for a in axes {
                    dims[fact_axis(op, a, rank)?] = DimFact::Unknown;
                }
            }
        }
        Ok(vec![ValueFact::new(x.dtype, Some(dims))])
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Compress {
    pub axis: Option<i64>,
}

impl FromOnnx for Compress {
    fn from_onnx(cx: &ParseCtx) -> Result<Self> {
        Ok(Compress {
            axis: cx.attrs.int_opt("axis")?,
        })
    }
}

/// The indices where `cond` holds, each below `len`.
fn kept(cond: &Tensor, len: usize) -> Result<Vec<usize>> {
    if cond.rank() != 1 {
        return Err(Error::shape(format!(
            "Compress: condition must be 1-D, got shape {:?}",
            cond.shape()
        )));
    }
    let c: Vec<bool> = match cond.data() {
        TensorData::Bool(v) => v.clone(),
        _ => {
            return Err(Error::shape(format!(
                "Compress: condition must be bool, got {}",
                cond.dtype()
            )))
        }
    };
    let idx: Vec<usize> = c.iter().enumerate().filter(|(_, &b)| b).map(|(i, _)| i).collect();
    match idx.last() {
        Some(&i) if i >= len => Err(Error::shape(format!(
            "Compress: condition selects index {i} of an axis of {len}"
        ))),
        _ => Ok(idx),
    }
}

impl Op for Compress {
    fn op_type(&self) -> &'static str {
        "Compress"
    }
    fn to_attrs(&self, _opset: i64) -> Vec<(String, AttrValue)> {
        self.axis
            .map(|a| vec![("axis".to_string(), AttrValue::Int(a))])
            .unwrap_or_default()
    }
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0, "input")?;
        let cond = input(inputs, 1, "condition")?;
        let (x, a) = match self.axis {
            Some(a) => (x.clone(), norm_axis(a, x.rank())?),
            None => (x.clone().reshape(vec![x.len()])?, 0),
        };
        let s = x.shape().to_vec();
        let idx = kept(cond, s[a])?;
        let mut tables = whole_tables(&s);
        let st = strides(&s);
        let mut out_shape = s.clone();
        out_shape[a] = idx.len();
        tables[a] = idx.iter().map(|&i| Some(i * st[a])).collect();
        Ok(vec![take_tables(&x, out_shape, &tables, 0.0)?])
    }
    fn output_facts(&self, inputs: &[Option<&ValueFact>], constants: &[Option<&Tensor>]) -> Result<Vec<ValueFact>> {
        let op = "Compress";
        let x = required(inputs, 0, op, "input")?;
        let c = required(inputs, 1, op, "condition")?;
        expect_dtype(op, c, "condition", &[DType::Bool])?;
        let count = constant(constants, 1)
            .map(|t| t.data().clone())
            .and_then(|d| match d {
                TensorData::Bool(v) => Some(DimFact::Known(v.iter().filter(|&&b| b).count())),
                _ => None,
            })
            .unwrap_or(DimFact::Unknown);
        let shape = match (self.axis, &x.shape) {
            (None, _) => Some(vec![count]),
            (Some(a), Some(s)) => {
                let mut s = s.clone();
                let a = fact_axis(op, a, s.len())?;
                s[a] = count;
                Some(s)
            }
            (Some(_), None) => None,
        };
        Ok(vec![ValueFact::new(x.dtype, shape)])
    }
    fn moves_data_only(&self) -> bool {
        true
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ReverseSequence {
    pub batch_axis: usize,
    pub time_axis: usize,
}

impl FromOnnx for ReverseSequence {
    fn from_onnx(cx: &ParseCtx) -> Result<Self> {
        let b = cx.attrs.int("batch_axis", 1)?;
        let t = cx.attrs.int("time_axis", 0)?;
        if !matches!((b, t), (0, 1) | (1, 0)) {
            return Err(cx
                .attrs
                .unsupported(format!("batch_axis={b}, time_axis={t} (one must be 0, the other 1)")));
        }
        Ok(ReverseSequence {
            batch_axis: b as usize,
            time_axis: t as usize,
        })
    }
}

/// `t`'s elements at flat offsets `idx`, in `shape`.
fn take_flat(t: &Tensor, shape: Vec<usize>, idx: &[usize]) -> Result<Tensor> {
    fn pick<T: Copy>(v: &[T], idx: &[usize]) -> Vec<T> {
        idx.iter().map(|&i| v[i]).collect()
    }
    let data = crate::dispatch_data!(t.data(), v => crate::tensor::Element::wrap(pick(v, idx)));
    Tensor::new(shape, data)
}

impl Op for ReverseSequence {
    fn op_type(&self) -> &'static str {
        "ReverseSequence"
    }
    fn to_attrs(&self, _opset: i64) -> Vec<(String, AttrValue)> {
        vec![
            ("batch_axis".to_string(), AttrValue::Int(self.batch_axis as i64)),
            ("time_axis".to_string(), AttrValue::Int(self.time_axis as i64)),
        ]
    }
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0, "input")?;
        let lens = input(inputs, 1, "sequence_lens")?.to_i64_vec()?;
        let s = x.shape().to_vec();
        if s.len() < 2 || lens.len() != s[self.batch_axis] {
            return Err(Error::shape(format!(
                "ReverseSequence: input must be of rank >= 2 with {} sequence lengths on axis {}, got {:?}",
                lens.len(),
                self.batch_axis,
                s
            )));
        }
        let steps = s[self.time_axis];
        if let Some(l) = lens.iter().find(|&&l| l < 0 || l as usize > steps) {
            return Err(Error::shape(format!(
                "ReverseSequence: sequence length {l} outside [0, {steps}]"
            )));
        }
        let st = strides(&s);
        let inner: usize = s[2..].iter().product();
        let mut idx = Vec::with_capacity(x.len());
        for i0 in 0..s[0] {
            for i1 in 0..s[1] {
                let (b, t) = if self.batch_axis == 0 { (i0, i1) } else { (i1, i0) };
                let len = lens[b] as usize;
                let src_t = if t < len { len - 1 - t } else { t };
                let (j0, j1) = if self.batch_axis == 0 { (b, src_t) } else { (src_t, b) };
                let base = j0 * st[0] + j1 * st[1];
                idx.extend(base..base + inner);
            }
        }
        Ok(vec![take_flat(x, s, &idx)?])
    }
    fn output_facts(&self, inputs: &[Option<&ValueFact>], _constants: &[Option<&Tensor>]) -> Result<Vec<ValueFact>> {
        let op = "ReverseSequence";
        let x = required(inputs, 0, op, "input")?;
        let l = required(inputs, 1, op, "sequence_lens")?;
        expect_dtype(op, l, "sequence_lens", &[DType::I64])?;
        if let Some(r) = x.rank() {
            if r < 2 {
                return Err(fact_error(
                    op,
                    format!("input must be of rank >= 2, got {}", x.shape_string()),
                ));
            }
        }
        if let Some(ls) = &l.shape {
            if ls.len() != 1 {
                return Err(fact_error(
                    op,
                    format!("sequence_lens must be 1-D, got {}", l.shape_string()),
                ));
            }
            unify_dim(op, &ls[0], &x.dim(self.batch_axis), || {
                format!(
                    "sequence_lens {} does not fit the batch axis of input {}",
                    l.shape_string(),
                    x.shape_string()
                )
            })?;
        }
        Ok(vec![x.clone()])
    }
    fn moves_data_only(&self) -> bool {
        true
    }
}
