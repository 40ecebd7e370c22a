//! Split: the sizes as an attribute (opset < 13) or an input, or equal parts (as many as
//! `num_outputs` from opset 18, else as the node has outputs).

use super::take_tables;
use crate::error::{Error, Result};
use crate::onnx::attrs::AttrValue;
use crate::ops::facts::{constant, fact_axis, in_op, optional, required};
use crate::ops::{input, norm_axis, DimFact, FromOnnx, Op, ParseCtx, ValueFact};
use crate::tensor::Tensor;

#[derive(Debug, Clone, PartialEq)]
pub struct Split {
    pub axis: i64,
    /// The sizes given as an attribute (opset < 13).
    pub split: Option<Vec<i64>>,
    /// Opset 18's `num_outputs`: parts of `ceil(dim / n)`, the last one smaller.
    pub num_outputs: Option<usize>,
    /// How many outputs the node has.
    pub outputs: usize,
}

/// The part sizes of an axis of `dim` elements.
fn part_sizes(op: &Split, split: Option<Vec<i64>>, dim: usize) -> Result<Vec<usize>> {
    if let Some(s) = split {
        if s.len() != op.outputs || s.iter().any(|&v| v < 0) || s.iter().sum::<i64>() != dim as i64 {
            return Err(Error::shape(format!(
                "Split sizes {s:?} must be {} non-negative sizes summing to the axis size {dim}",
                op.outputs
            )));
        }
        return Ok(s.iter().map(|&v| v as usize).collect());
    }
    let n = op.outputs;
    if let Some(k) = op.num_outputs {
        let chunk = dim.div_ceil(k);
        if chunk * (k - 1) > dim {
            return Err(Error::shape(format!(
                "Split cannot cut an axis of size {dim} into {k} parts of {chunk} (the last one would be negative)"
            )));
        }
        return Ok((0..k)
            .map(|i| if i + 1 < k { chunk } else { dim - chunk * (k - 1) })
            .collect());
    }
    if !dim.is_multiple_of(n) {
        return Err(Error::shape(format!(
            "Split of an axis of size {dim} into {n} equal parts: not divisible"
        )));
    }
    Ok(vec![dim / n; n])
}

impl Split {
    fn sizes_input(&self, inputs: &[Option<&Tensor>]) -> Result<Option<Vec<i64>>> {
        match &self.split {
            Some(s) => Ok(Some(s.clone())),
            None => super::ints_input(inputs, 1, "split"),
        }
    }
}

impl FromOnnx for Split {
    fn from_onnx(cx: &ParseCtx) -> Result<Self> {
        let split = if cx.opset < 13 {
            cx.attrs.ints_opt("split")?
        } else {
            None
        };
        let num_outputs = if cx.opset >= 18 {
            match cx.attrs.int_opt("num_outputs")? {
                Some(n) if n < 1 || n as usize != cx.outputs => {
                    return Err(Error::format(format!(
                        "node '{}' (Split): num_outputs {n} but the node has {} outputs",
                        cx.attrs.node, cx.outputs
                    )))
                }
                Some(n) => Some(n as usize),
                None => None,
            }
        } else {
            None
        };
        if cx.outputs == 0 {
            return Err(Error::format(format!("node '{}' (Split) has no output", cx.attrs.node)));
        }
        Ok(Split {
            axis: cx.attrs.int("axis", 0)?,
            split,
            num_outputs,
            outputs: cx.outputs,
        })
    }
}

impl Op for Split {
    fn op_type(&self) -> &'static str {
        "Split"
    }
    fn to_attrs(&self, opset: i64) -> Vec<(String, AttrValue)> {
        let mut v = vec![("axis".to_string(), AttrValue::Int(self.axis))];
        if let Some(s) = &self.split {
            v.push(("split".into(), AttrValue::Ints(s.clone())));
        }
        if let (Some(n), true) = (self.num_outputs, opset >= 18) {
            v.push(("num_outputs".into(), AttrValue::Int(n as i64)));
        }
        v
    }
    fn num_outputs(&self) -> usize {
        self.outputs
    }
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0, "input")?;
        let a = norm_axis(self.axis, x.rank())?;
        let s = x.shape();
        let dim = s[a];
        let sizes = part_sizes(self, self.sizes_input(inputs)?, dim)?;
        let outer: usize = s[..a].iter().product();
        let inner: usize = s[a + 1..].iter().product();
        let mut start = 0;
        let mut outs = Vec::with_capacity(sizes.len());
        for &len in &sizes {
            let tables = vec![
                (0..outer).map(|o| Some(o * dim * inner)).collect(),
                (start..start + len).map(|j| Some(j * inner)).collect(),
                (0..inner).map(Some).collect(),
            ];
            let mut shape = s.to_vec();
            shape[a] = len;
            outs.push(take_tables(x, shape, &tables, 0.0)?);
            start += len;
        }
        Ok(outs)
    }
    fn output_facts(&self, inputs: &[Option<&ValueFact>], constants: &[Option<&Tensor>]) -> Result<Vec<ValueFact>> {
        let op = "Split";
        let x = required(inputs, 0, op, "input")?;
        let split = match (&self.split, optional(inputs, 1)) {
            (Some(s), _) => Some(Some(s.clone())),
            (None, None) => Some(None),
            (None, Some(_)) => constant(constants, 1)
                .map(|t| t.to_i64_vec().map_err(in_op(op)))
                .transpose()?
                .map(Some),
        };
        let Some(s) = &x.shape else {
            return Ok(vec![ValueFact::new(x.dtype, None); self.outputs]);
        };
        let a = fact_axis(op, self.axis, s.len())?;
        let sizes: Vec<DimFact> = match (split, s[a].known()) {
            (Some(Some(sp)), Some(dim)) => part_sizes(self, Some(sp), dim)
                .map_err(in_op(op))?
                .into_iter()
                .map(DimFact::Known)
                .collect(),
            (Some(Some(sp)), None) if sp.len() == self.outputs && sp.iter().all(|&v| v >= 0) => {
                sp.iter().map(|&v| DimFact::Known(v as usize)).collect()
            }
            (Some(None), Some(dim)) => part_sizes(self, None, dim)
                .map_err(in_op(op))?
                .into_iter()
                .map(DimFact::Known)
                .collect(),
            _ => vec![DimFact::Unknown; self.outputs],
        };
        Ok(sizes
            .into_iter()
            .map(|d| {
                let mut shape = s.clone();
                shape[a] = d;
                ValueFact::new(x.dtype, Some(shape))
            })
            .collect())
    }
    fn moves_data_only(&self) -> bool {
        true
    }
}
