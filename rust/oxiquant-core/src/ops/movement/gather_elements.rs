//! GatherElements and ScatterElements (and Scatter, its name before opset 11): element-wise
//! indexing along one axis, with the reductions of ScatterElements from opsets 16 and 18.

use crate::error::{Error, Result};
use crate::onnx::attrs::AttrValue;
use crate::ops::facts::{expect_dtype, fact_axis, fact_error, required, unify_dim};
use crate::ops::ptq_rules::{Class, NodeFacts};
use crate::ops::{attr, input, norm_axis, FromOnnx, Op, ParseCtx, ValueFact};
use crate::tensor::{check_alloc, strides, DType, Tensor, TensorData};

pub(crate) const INDEX_TYPES: &[DType] = &[DType::I64, DType::I32];

/// The elements of `t` at flat `offsets`, as a tensor of `shape`.
pub(crate) fn pick(t: &Tensor, shape: Vec<usize>, offsets: &[usize]) -> Result<Tensor> {
    fn take<T: Copy>(v: &[T], o: &[usize]) -> Vec<T> {
        o.iter().map(|&i| v[i]).collect()
    }
    let data = crate::dispatch_data!(t.data(), v => crate::tensor::Element::wrap(take(v, offsets)));
    Tensor::new(shape, data)
}

/// How a scatter combines an update with the element it lands on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reduction {
    None,
    Add,
    Mul,
    Max,
    Min,
}

impl Reduction {
    /// The `reduction` attribute (opset 16: none/add/mul, 18: max/min too).
    pub(crate) fn parse(cx: &ParseCtx) -> Result<Reduction> {
        if cx.opset < 16 {
            return Ok(Reduction::None);
        }
        Ok(match cx.attrs.string("reduction", "none")?.as_str() {
            "none" => Reduction::None,
            "add" => Reduction::Add,
            "mul" => Reduction::Mul,
            "max" if cx.opset >= 18 => Reduction::Max,
            "min" if cx.opset >= 18 => Reduction::Min,
            other => {
                return Err(cx
                    .attrs
                    .unsupported(format!("reduction '{other}' in opset {}", cx.opset)))
            }
        })
    }
    pub(crate) fn name(self) -> &'static str {
        match self {
            Reduction::None => "none",
            Reduction::Add => "add",
            Reduction::Mul => "mul",
            Reduction::Max => "max",
            Reduction::Min => "min",
        }
    }
    pub(crate) fn to_attrs(self) -> Vec<(String, AttrValue)> {
        match self {
            Reduction::None => Vec::new(),
            r => attr("reduction", AttrValue::String(r.name().into())),
        }
    }
}

/// Writes `upd[src]` into a copy of `data` at `dst`, pair by pair in order, combined by `red`.
pub(crate) fn scatter_pairs(data: &Tensor, upd: &Tensor, pairs: &[(usize, usize)], red: Reduction) -> Result<Tensor> {
    macro_rules! apply {
        ($d:expr, $u:expr, $add:expr, $mul:expr) => {{
            let mut out = $d.clone();
            for &(dst, src) in pairs {
                let (a, b) = (out[dst], $u[src]);
                out[dst] = match red {
                    Reduction::None => b,
                    Reduction::Add => $add(a, b),
                    Reduction::Mul => $mul(a, b),
                    Reduction::Max => {
                        if b > a {
                            b
                        } else {
                            a
                        }
                    }
                    Reduction::Min => {
                        if b < a {
                            b
                        } else {
                            a
                        }
                    }
                };
            }
            out
        }};
    }
    let data_out = match (data.data(), upd.data()) {
        (TensorData::F32(d), TensorData::F32(u)) => {
            TensorData::F32(apply!(d, u, |a: f32, b: f32| a + b, |a: f32, b: f32| a * b))
        }
        (TensorData::U8(d), TensorData::U8(u)) => TensorData::U8(apply!(d, u, u8::wrapping_add, u8::wrapping_mul)),
        (TensorData::I8(d), TensorData::I8(u)) => TensorData::I8(apply!(d, u, i8::wrapping_add, i8::wrapping_mul)),
        (TensorData::I32(d), TensorData::I32(u)) => TensorData::I32(apply!(d, u, i32::wrapping_add, i32::wrapping_mul)),
        (TensorData::I64(d), TensorData::I64(u)) => TensorData::I64(apply!(d, u, i64::wrapping_add, i64::wrapping_mul)),
        (TensorData::I16(d), TensorData::I16(u)) => TensorData::I16(apply!(d, u, i16::wrapping_add, i16::wrapping_mul)),
        (TensorData::U16(d), TensorData::U16(u)) => TensorData::U16(apply!(d, u, u16::wrapping_add, u16::wrapping_mul)),
        (TensorData::U32(d), TensorData::U32(u)) => TensorData::U32(apply!(d, u, u32::wrapping_add, u32::wrapping_mul)),
        (TensorData::U64(d), TensorData::U64(u)) => TensorData::U64(apply!(d, u, u64::wrapping_add, u64::wrapping_mul)),
        (TensorData::Bool(d), TensorData::Bool(u)) if red == Reduction::None => {
            TensorData::Bool(apply!(d, u, |a: bool, _b: bool| a, |a: bool, _b: bool| a))
        }
        _ => {
            return Err(Error::shape(format!(
                "updates ({}) must have the data's type ({}); bool takes no reduction",
                upd.dtype(),
                data.dtype()
            )))
        }
    };
    Tensor::new(data.shape().to_vec(), data_out)
}

/// For every element of `indices` (same rank as `data`), its flat offset in `data`, the
/// index along `axis` read from `indices` (negative from the end).
fn element_offsets(data: &[usize], indices: &Tensor, axis: usize, what: &str) -> Result<Vec<usize>> {
    let is = indices.shape();
    if is.len() != data.len() {
        return Err(Error::shape(format!(
            "{what}: indices of shape {is:?} must have the rank of data {data:?}"
        )));
    }
    if let Some(d) = (0..is.len()).find(|&d| d != axis && is[d] > data[d]) {
        return Err(Error::shape(format!(
            "{what}: indices of shape {is:?} exceed data {data:?} on axis {d}"
        )));
    }
    let idx = indices.to_i64_vec()?;
    let ds = strides(data);
    let ist = strides(is);
    let dim = data[axis] as i64;
    idx.iter()
        .enumerate()
        .map(|(flat, &i)| {
            let j = if i < 0 { i + dim } else { i };
            if j < 0 || j >= dim {
                return Err(Error::shape(format!(
                    "{what}: index {i} out of range for axis {axis} of size {dim}"
                )));
            }
            let mut off = 0;
            let mut rest = flat;
            for d in 0..is.len() {
                let k = rest / ist[d];
                rest %= ist[d];
                off += if d == axis { j as usize } else { k } * ds[d];
            }
            Ok(off)
        })
        .collect()
}

#[derive(Debug, Clone, PartialEq)]
pub struct GatherElements {
    pub axis: i64,
}

impl FromOnnx for GatherElements {
    fn from_onnx(cx: &ParseCtx) -> Result<Self> {
        Ok(GatherElements {
            axis: cx.attrs.int("axis", 0)?,
        })
    }
}

impl Op for GatherElements {
    fn op_type(&self) -> &'static str {
        "GatherElements"
    }
    fn to_attrs(&self, _opset: i64) -> Vec<(String, AttrValue)> {
        attr("axis", AttrValue::Int(self.axis))
    }
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0, "data")?;
        let idx = input(inputs, 1, "indices")?;
        let a = norm_axis(self.axis, x.rank())?;
        check_alloc(idx.shape(), 8)?;
        let offs = element_offsets(x.shape(), idx, a, "GatherElements")?;
        Ok(vec![pick(x, idx.shape().to_vec(), &offs)?])
    }
    fn output_facts(&self, inputs: &[Option<&ValueFact>], _constants: &[Option<&Tensor>]) -> Result<Vec<ValueFact>> {
        let op = "GatherElements";
        let x = required(inputs, 0, op, "data")?;
        let idx = required(inputs, 1, op, "indices")?;
        expect_dtype(op, idx, "indices", INDEX_TYPES)?;
        if let Some(r) = x.rank().or(idx.rank()) {
            fact_axis(op, self.axis, r)?;
            if idx.rank().is_some_and(|q| q != r) || x.rank().is_some_and(|q| q != r) {
                return Err(fact_error(op, format!("indices {idx} must have the rank of data {x}")));
            }
        }
        Ok(vec![ValueFact::new(x.dtype, idx.shape.clone())])
    }
    fn moves_data_only(&self) -> bool {
        true
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ScatterElements {
    pub axis: i64,
    pub reduction: Reduction,
    /// Read as the deprecated `Scatter` (opsets 9 and 10), written back under that name.
    pub legacy: bool,
}

impl FromOnnx for ScatterElements {
    fn from_onnx(cx: &ParseCtx) -> Result<Self> {
        Ok(ScatterElements {
            axis: cx.attrs.int("axis", 0)?,
            reduction: Reduction::parse(cx)?,
            legacy: cx.op_type == "Scatter",
        })
    }
}

/// The facts of a scatter: the data's, once data and updates agree.
pub(crate) fn scatter_facts(op: &str, inputs: &[Option<&ValueFact>]) -> Result<Vec<ValueFact>> {
    let x = required(inputs, 0, op, "data")?;
    let idx = required(inputs, 1, op, "indices")?;
    let upd = required(inputs, 2, op, "updates")?;
    expect_dtype(op, idx, "indices", INDEX_TYPES)?;
    if let (Some(a), Some(b)) = (x.dtype, upd.dtype) {
        if a != b {
            return Err(fact_error(op, format!("updates {upd} must have the type of data {x}")));
        }
    }
    Ok(vec![ValueFact::new(x.dtype.or(upd.dtype), x.shape.clone())])
}

impl Op for ScatterElements {
    fn op_type(&self) -> &'static str {
        if self.legacy {
            "Scatter"
        } else {
            "ScatterElements"
        }
    }
    fn to_attrs(&self, _opset: i64) -> Vec<(String, AttrValue)> {
        let mut v = attr("axis", AttrValue::Int(self.axis));
        v.extend(self.reduction.to_attrs());
        v
    }
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0, "data")?;
        let idx = input(inputs, 1, "indices")?;
        let upd = input(inputs, 2, "updates")?;
        let a = norm_axis(self.axis, x.rank())?;
        if upd.shape() != idx.shape() {
            return Err(Error::shape(format!(
                "ScatterElements: updates {:?} must have the shape of indices {:?}",
                upd.shape(),
                idx.shape()
            )));
        }
        let offs = element_offsets(x.shape(), idx, a, "ScatterElements")?;
        let pairs: Vec<(usize, usize)> = offs.into_iter().enumerate().map(|(s, d)| (d, s)).collect();
        Ok(vec![scatter_pairs(x, upd, &pairs, self.reduction)?])
    }
    fn output_facts(&self, inputs: &[Option<&ValueFact>], _constants: &[Option<&Tensor>]) -> Result<Vec<ValueFact>> {
        let op = "ScatterElements";
        let out = scatter_facts(op, inputs)?;
        let (idx, upd) = (required(inputs, 1, op, "indices")?, required(inputs, 2, op, "updates")?);
        if let (Some(a), Some(b)) = (&idx.shape, &upd.shape) {
            if a.len() != b.len() {
                return Err(fact_error(
                    op,
                    format!("updates {upd} must have the shape of indices {idx}"),
                ));
            }
            for (p, q) in a.iter().zip(b) {
                unify_dim(op, p, q, || {
                    format!("updates {upd} must have the shape of indices {idx}")
                })?;
            }
        }
        if let Some(r) = out[0].rank() {
            fact_axis(op, self.axis, r)?;
        }
        Ok(out)
    }
    fn ptq_class(&self, _n: &NodeFacts) -> Class {
        scatter_class()
    }
}

/// A scatter writes its updates into its data: both would need one scale, which the PTQ
/// does not arrange for it, so it runs in float.
pub(crate) fn scatter_class() -> Class {
    Class::FloatIsland("a scatter mixes two activations".into())
}
