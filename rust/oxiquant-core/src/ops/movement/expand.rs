//! Expand (numpy broadcasting of the input to a shape input) and Tile.

use super::take_tables;
use crate::error::{Error, Result};
use crate::ops::facts::{broadcast_dims, constant, expect_dtype, fact_error, in_op, required};
use crate::ops::{input, DimFact, FromOnnx, Op, ParseCtx, ValueFact};
use crate::tensor::{check_alloc, strides, DType, Tensor};

const INDEX_TYPES: &[DType] = &[DType::I64];

/// The broadcast of `a` and `b`, or an error naming both.
fn broadcast(a: &[usize], b: &[usize]) -> Result<Vec<usize>> {
    let r = a.len().max(b.len());
    (0..r)
        .map(|i| {
            let da = if i + a.len() >= r { a[i + a.len() - r] } else { 1 };
            let db = if i + b.len() >= r { b[i + b.len() - r] } else { 1 };
            match (da, db) {
                (x, y) if x == y || y == 1 => Ok(x),
                (1, y) => Ok(y),
                _ => Err(Error::shape(format!("Expand: shapes {a:?} and {b:?} do not broadcast"))),
            }
        })
        .collect()
}

/// Non-negative sizes of a shape input.
fn sizes(t: &Tensor, what: &str) -> Result<Vec<usize>> {
    t.to_i64_vec()?
        .iter()
        .map(|&v| usize::try_from(v).map_err(|_| Error::shape(format!("{what} {v} is negative"))))
        .collect()
}

#[derive(Debug, Clone, PartialEq)]
pub struct Expand;

impl FromOnnx for Expand {
    fn from_onnx(_cx: &ParseCtx) -> Result<Self> {
        Ok(Expand)
    }
}

impl Op for Expand {
    fn op_type(&self) -> &'static str {
        "Expand"
    }
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0, "input")?;
        let target = sizes(input(inputs, 1, "shape")?, "Expand: shape size")?;
        let shape = broadcast(x.shape(), &target)?;
        check_alloc(&shape, 8)?;
        let r = shape.len();
        let off = r - x.rank();
        let st = strides(x.shape());
        let tables: Vec<Vec<Option<usize>>> = (0..r)
            .map(|d| {
                let (dim, stride) = if d < off {
                    (1, 0)
                } else {
                    (x.shape()[d - off], st[d - off])
                };
                (0..shape[d])
                    .map(|o| Some(if dim == 1 { 0 } else { o * stride }))
                    .collect()
            })
            .collect();
        Ok(vec![take_tables(x, shape, &tables, 0.0)?])
    }
    fn output_facts(&self, inputs: &[Option<&ValueFact>], constants: &[Option<&Tensor>]) -> Result<Vec<ValueFact>> {
        let op = "Expand";
        let x = required(inputs, 0, op, "input")?;
        let s = required(inputs, 1, op, "shape")?;
        expect_dtype(op, s, "shape", INDEX_TYPES)?;
        let target: Option<Vec<DimFact>> = match constant(constants, 1) {
            Some(t) => Some(
                sizes(t, "shape size")
                    .map_err(in_op(op))?
                    .into_iter()
                    .map(DimFact::Known)
                    .collect(),
            ),
            None => None,
        };
        let shape = match (&x.shape, target) {
            (Some(xs), Some(t)) => Some(broadcast_dims(op, xs, &t)?),
            (xs, None) => match (xs, s.shape.as_ref().and_then(|s| s.first()).and_then(DimFact::known)) {
                (Some(xs), Some(n)) => Some(vec![DimFact::Unknown; n.max(xs.len())]),
                _ => None,
            },
            (None, Some(_)) => None,
        };
        Ok(vec![ValueFact::new(x.dtype, shape)])
    }
    fn moves_data_only(&self) -> bool {
        true
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Tile;

impl FromOnnx for Tile {
    fn from_onnx(_cx: &ParseCtx) -> Result<Self> {
        Ok(Tile)
    }
}

impl Op for Tile {
    fn op_type(&self) -> &'static str {
        "Tile"
    }
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0, "input")?;
        let reps = sizes(input(inputs, 1, "repeats")?, "Tile: repeat")?;
        if reps.len() != x.rank() {
            return Err(Error::shape(format!(
                "Tile: {} repeats for an input of shape {:?}",
                reps.len(),
                x.shape()
            )));
        }
        let shape: Vec<usize> = x
            .shape()
            .iter()
            .zip(&reps)
            .map(|(&d, &r)| d.saturating_mul(r))
            .collect();
        check_alloc(&shape, 8)?;
        let st = strides(x.shape());
        let tables: Vec<Vec<Option<usize>>> = (0..shape.len())
            .map(|d| (0..shape[d]).map(|o| Some((o % x.shape()[d]) * st[d])).collect())
            .collect();
        Ok(vec![take_tables(x, shape, &tables, 0.0)?])
    }
    fn output_facts(&self, inputs: &[Option<&ValueFact>], constants: &[Option<&Tensor>]) -> Result<Vec<ValueFact>> {
        let op = "Tile";
        let x = required(inputs, 0, op, "input")?;
        let r = required(inputs, 1, op, "repeats")?;
        expect_dtype(op, r, "repeats", INDEX_TYPES)?;
        let Some(xs) = &x.shape else {
            return Ok(vec![ValueFact::new(x.dtype, None)]);
        };
        let shape = match constant(constants, 1) {
            Some(t) => {
                let reps = sizes(t, "repeat").map_err(in_op(op))?;
                if reps.len() != xs.len() {
                    return Err(fact_error(op, format!("{} repeats for an input {x}", reps.len())));
                }
                xs.iter()
                    .zip(&reps)
                    .map(|(d, &k)| match (d, k) {
                        (_, 0) => DimFact::Known(0),
                        (_, 1) => d.clone(),
                        (DimFact::Known(n), k) => DimFact::Known(n * k),
                        _ => DimFact::Unknown,
                    })
                    .collect()
            }
            None => vec![DimFact::Unknown; xs.len()],
        };
        Ok(vec![ValueFact::new(x.dtype, Some(shape))])
    }
    fn moves_data_only(&self) -> bool {
        true
    }
}
