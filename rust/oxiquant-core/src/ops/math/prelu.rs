//! PRelu: `x < 0 ? slope * x : x` on float32, the slope broadcast to X's shape (one-way:
//! the output has X's shape).

use crate::error::{Error, Result};
use crate::ops::facts::{expect_dtype, fact_error, required};
use crate::ops::logic::{broadcast_facts, map2};
use crate::ops::{input, FromOnnx, Op, ParseCtx, ValueFact};
use crate::tensor::{DType, Tensor};

#[derive(Debug, Clone, PartialEq)]
pub struct PRelu;

impl FromOnnx for PRelu {
    fn from_onnx(_cx: &ParseCtx) -> Result<Self> {
        Ok(PRelu)
    }
}

impl Op for PRelu {
    fn elementwise(&self) -> bool {
        true
    }
    fn op_type(&self) -> &'static str {
        "PRelu"
    }
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let (x, s) = (input(inputs, 0, "X")?, input(inputs, 1, "slope")?);
        let y = map2(
            x.as_slice::<f32>()?,
            x.shape(),
            s.as_slice::<f32>()?,
            s.shape(),
            |v, a| {
                if v < 0.0 {
                    a * v
                } else {
                    v
                }
            },
        )?;
        if y.shape() != x.shape() {
            return Err(Error::shape(format!(
                "PRelu: slope of shape {:?} must broadcast to X's shape {:?}",
                s.shape(),
                x.shape()
            )));
        }
        Ok(vec![y])
    }
    fn output_facts(&self, inputs: &[Option<&ValueFact>], _constants: &[Option<&Tensor>]) -> Result<Vec<ValueFact>> {
        let (x, s) = (
            required(inputs, 0, "PRelu", "X")?,
            required(inputs, 1, "PRelu", "slope")?,
        );
        expect_dtype("PRelu", x, "X", &[DType::F32])?;
        expect_dtype("PRelu", s, "slope", &[DType::F32])?;
        let shape = broadcast_facts("PRelu", &[x, s])?;
        if let (Some(b), Some(xs)) = (&shape, &x.shape) {
            if b.len() != xs.len() {
                return Err(fact_error(
                    "PRelu",
                    format!(
                        "slope {} must broadcast to X's shape {}",
                        s.shape_string(),
                        x.shape_string()
                    ),
                ));
            }
        }
        if let (Some(b), Some(xs)) = (
            shape
                .as_ref()
                .and_then(|b| b.iter().map(|d| d.known()).collect::<Option<Vec<_>>>()),
            x.concrete_shape(),
        ) {
            if b != xs {
                return Err(fact_error(
                    "PRelu",
                    format!(
                        "slope {} must broadcast to X's shape {}",
                        s.shape_string(),
                        x.shape_string()
                    ),
                ));
            }
        }
        Ok(vec![ValueFact::new(Some(DType::F32), shape)])
    }
}
