//! GatherND and ScatterND: indexing by tuples of the leading axes (after GatherND's batch
//! axes).

use super::gather_elements::{pick, scatter_class, scatter_facts, scatter_pairs, Reduction};
use crate::error::{Error, Result};
use crate::onnx::attrs::AttrValue;
use crate::ops::facts::{expect_dtype, fact_error, required};
use crate::ops::ptq_rules::{Class, NodeFacts};
use crate::ops::{attr, input, DimFact, FromOnnx, Op, ParseCtx, ValueFact};
use crate::tensor::{check_alloc, strides, Tensor};

/// For every index tuple (the last axis of `indices`) after `b` batch axes, the flat offset of
/// the slice it selects in `data`; also the slice length.
fn tuple_offsets(data: &[usize], indices: &Tensor, b: usize, what: &str) -> Result<(Vec<usize>, usize)> {
    let is = indices.shape();
    let Some(&k) = is.last() else {
        return Err(Error::shape(format!("{what}: indices must have rank >= 1")));
    };
    if is.len() <= b || data.len() < b + k || data[..b] != is[..b] {
        return Err(Error::shape(format!(
            "{what}: indices {is:?} do not fit data {data:?} with {b} batch axes"
        )));
    }
    let idx = indices.to_i64_vec()?;
    let batch: usize = data[..b].iter().product();
    let per_batch: usize = data[b..].iter().product();
    let inner: usize = data[b + k..].iter().product();
    let st = strides(&data[b..]);
    let tuples: usize = is[..is.len() - 1].iter().product();
    let per = tuples / batch.max(1);
    let mut out = Vec::with_capacity(tuples);
    for t in 0..tuples {
        let mut off = (t / per.max(1)) * per_batch;
        for j in 0..k {
            let dim = data[b + j] as i64;
            let i = idx[t * k + j];
            let v = if i < 0 { i + dim } else { i };
            if v < 0 || v >= dim {
                return Err(Error::shape(format!(
                    "{what}: index {i} out of range for axis {} of size {dim}",
                    b + j
                )));
            }
            off += v as usize * st[j];
        }
        out.push(off);
    }
    Ok((out, inner))
}

#[derive(Debug, Clone, PartialEq)]
pub struct GatherND {
    pub batch_dims: usize,
}

impl FromOnnx for GatherND {
    fn from_onnx(cx: &ParseCtx) -> Result<Self> {
        let b = cx.attrs.int("batch_dims", 0)?;
        Ok(GatherND {
            batch_dims: usize::try_from(b).map_err(|_| cx.attrs.unsupported(format!("batch_dims {b}")))?,
        })
    }
}

impl Op for GatherND {
    fn op_type(&self) -> &'static str {
        "GatherND"
    }
    fn to_attrs(&self, _opset: i64) -> Vec<(String, AttrValue)> {
        if self.batch_dims == 0 {
            Vec::new()
        } else {
            attr("batch_dims", AttrValue::Int(self.batch_dims as i64))
        }
    }
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0, "data")?;
        let idx = input(inputs, 1, "indices")?;
        let (bases, inner) = tuple_offsets(x.shape(), idx, self.batch_dims, "GatherND")?;
        let is = idx.shape();
        let k = is[is.len() - 1];
        let mut shape = is[..is.len() - 1].to_vec();
        shape.extend_from_slice(&x.shape()[self.batch_dims + k..]);
        check_alloc(&shape, 8)?;
        let offs: Vec<usize> = bases.iter().flat_map(|&b| b..b + inner).collect();
        Ok(vec![pick(x, shape, &offs)?])
    }
    fn output_facts(&self, inputs: &[Option<&ValueFact>], _constants: &[Option<&Tensor>]) -> Result<Vec<ValueFact>> {
        let op = "GatherND";
        let x = required(inputs, 0, op, "data")?;
        let idx = required(inputs, 1, op, "indices")?;
        expect_dtype(op, idx, "indices", &[crate::tensor::DType::I64])?;
        let shape = match (&x.shape, &idx.shape) {
            (Some(xs), Some(is)) => match is.last().and_then(DimFact::known) {
                Some(k) => {
                    let b = self.batch_dims;
                    if is.len() <= b || xs.len() < b + k {
                        return Err(fact_error(op, format!("indices {idx} do not fit data {x}")));
                    }
                    Some([&is[..is.len() - 1], &xs[b + k..]].concat())
                }
                None => None,
            },
            _ => None,
        };
        Ok(vec![ValueFact::new(x.dtype, shape)])
    }
    fn moves_data_only(&self) -> bool {
        true
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ScatterND {
    pub reduction: Reduction,
}

impl FromOnnx for ScatterND {
    fn from_onnx(cx: &ParseCtx) -> Result<Self> {
        Ok(ScatterND {
            reduction: Reduction::parse(cx)?,
        })
    }
}

impl Op for ScatterND {
    fn op_type(&self) -> &'static str {
        "ScatterND"
    }
    fn to_attrs(&self, _opset: i64) -> Vec<(String, AttrValue)> {
        self.reduction.to_attrs()
    }
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0, "data")?;
        let idx = input(inputs, 1, "indices")?;
        let upd = input(inputs, 2, "updates")?;
        let (bases, inner) = tuple_offsets(x.shape(), idx, 0, "ScatterND")?;
        let is = idx.shape();
        let k = is[is.len() - 1];
        let want: Vec<usize> = [&is[..is.len() - 1], &x.shape()[k..]].concat();
        if upd.shape() != want {
            return Err(Error::shape(format!(
                "ScatterND: updates {:?} must have shape {want:?}",
                upd.shape()
            )));
        }
        let pairs: Vec<(usize, usize)> = bases
            .iter()
            .enumerate()
            .flat_map(|(m, &b)| (0..inner).map(move |e| (b + e, m * inner + e)))
            .collect();
        Ok(vec![scatter_pairs(x, upd, &pairs, self.reduction)?])
    }
    fn output_facts(&self, inputs: &[Option<&ValueFact>], _constants: &[Option<&Tensor>]) -> Result<Vec<ValueFact>> {
        scatter_facts("ScatterND", inputs)
    }
    fn ptq_class(&self, _n: &NodeFacts) -> Class {
        scatter_class()
    }
}
