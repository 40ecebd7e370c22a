//! Where: `condition ? X : Y` element by element, the three broadcast; X and Y of one dtype
//! (any), the condition bool.

use super::{broadcast_facts, broadcast_many, broadcast_offsets, same_dtype2};
use crate::error::{Error, Result};
use crate::ops::facts::{expect_dtype, fact_error, required};
use crate::ops::{input, DataInputs, FromOnnx, Op, ParseCtx, ValueFact};
use crate::tensor::{check_alloc, DType, Tensor};

#[derive(Debug, Clone, PartialEq)]
pub struct Where;

fn select<T: Copy + crate::tensor::Element>(
    c: &[bool],
    sc: &[usize],
    x: &[T],
    sx: &[usize],
    y: &[T],
    sy: &[usize],
) -> Result<Tensor> {
    let shape = broadcast_many(&[sc, sx, sy])?;
    check_alloc(&shape, std::mem::size_of::<T>())?;
    let (oc, ox, oy) = (
        broadcast_offsets(sc, &shape),
        broadcast_offsets(sx, &shape),
        broadcast_offsets(sy, &shape),
    );
    let v: Vec<T> = (0..oc.len())
        .map(|k| if c[oc[k]] { x[ox[k]] } else { y[oy[k]] })
        .collect();
    Tensor::from_vec(shape, v)
}

impl FromOnnx for Where {
    fn from_onnx(_cx: &ParseCtx) -> Result<Self> {
        Ok(Where)
    }
}

impl Op for Where {
    fn op_type(&self) -> &'static str {
        "Where"
    }
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let c = input(inputs, 0, "condition")?;
        let (x, y) = (input(inputs, 1, "X")?, input(inputs, 2, "Y")?);
        let cv = c.as_slice::<bool>()?;
        let out = same_dtype2!(x, y, xv, yv => select(cv, c.shape(), xv, x.shape(), yv, y.shape()), {
            Err(Error::shape(format!(
                "Where needs X and Y of the same dtype, got {} {:?} and {} {:?}",
                x.dtype(),
                x.shape(),
                y.dtype(),
                y.shape()
            )))
        })?;
        Ok(vec![out])
    }
    fn output_facts(&self, inputs: &[Option<&ValueFact>], _constants: &[Option<&Tensor>]) -> Result<Vec<ValueFact>> {
        let c = required(inputs, 0, "Where", "condition")?;
        let (x, y) = (required(inputs, 1, "Where", "X")?, required(inputs, 2, "Where", "Y")?);
        expect_dtype("Where", c, "condition", &[DType::Bool])?;
        let dtype = match (x.dtype, y.dtype) {
            (Some(p), Some(q)) if p != q => {
                return Err(fact_error(
                    "Where",
                    format!("X and Y must have the same dtype, got {x} and {y}"),
                ))
            }
            (Some(p), _) | (_, Some(p)) => Some(p),
            _ => None,
        };
        Ok(vec![ValueFact::new(dtype, broadcast_facts("Where", &[c, x, y])?)])
    }
    fn data_inputs(&self) -> DataInputs {
        DataInputs::All
    }
}
