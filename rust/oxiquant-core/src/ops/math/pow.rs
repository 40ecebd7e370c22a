//! Pow: `base ^ exponent`, broadcast; the output has the base's type (float32, int32 or
//! int64), the exponent any of those. Integer powers with a non-negative integer exponent are
//! exact (wrapping on overflow); the others are computed in f64 and converted (truncating
//! toward zero for an integer base).

use crate::error::{Error, Result};
use crate::ops::facts::{expect_dtype, required};
use crate::ops::logic::{broadcast_facts, broadcast_many, broadcast_offsets};
use crate::ops::{input, FromOnnx, Op, ParseCtx, ValueFact};
use crate::tensor::{check_alloc, DType, Tensor, TensorData};

#[derive(Debug, Clone, PartialEq)]
pub struct Pow;

const TYPES: [DType; 3] = [DType::F32, DType::I32, DType::I64];

impl FromOnnx for Pow {
    fn from_onnx(cx: &ParseCtx) -> Result<Self> {
        let a = cx.attrs;
        if a.int("broadcast", 1)? != 1 || a.has("axis") {
            return Err(a.unsupported("legacy broadcast/axis attributes (opset < 7)"));
        }
        Ok(Pow)
    }
}

fn int_pow(b: i64, e: f64) -> i64 {
    if e >= 0.0 && e.fract() == 0.0 && e <= u32::MAX as f64 {
        b.wrapping_pow(e as u32)
    } else {
        (b as f64).powf(e) as i64
    }
}

impl Op for Pow {
    fn elementwise(&self) -> bool {
        true
    }
    fn op_type(&self) -> &'static str {
        "Pow"
    }
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let (x, y) = (input(inputs, 0, "X")?, input(inputs, 1, "Y")?);
        if !TYPES.contains(&x.dtype()) || !TYPES.contains(&y.dtype()) {
            return Err(Error::shape(format!(
                "Pow needs float32, int32 or int64 operands, got {} {:?} and {} {:?}",
                x.dtype(),
                x.shape(),
                y.dtype(),
                y.shape()
            )));
        }
        let shape = broadcast_many(&[x.shape(), y.shape()])?;
        check_alloc(&shape, 8)?;
        let (ox, oy) = (
            broadcast_offsets(x.shape(), &shape),
            broadcast_offsets(y.shape(), &shape),
        );
        let e: Vec<f64> = match y.data() {
            TensorData::F32(v) => v.iter().map(|&q| q as f64).collect(),
            TensorData::I32(v) => v.iter().map(|&q| q as f64).collect(),
            _ => y.to_i64_vec()?.iter().map(|&q| q as f64).collect(),
        };
        let data = match x.data() {
            TensorData::F32(b) => TensorData::F32(
                ox.iter()
                    .zip(&oy)
                    .map(|(&i, &j)| (b[i] as f64).powf(e[j]) as f32)
                    .collect(),
            ),
            TensorData::I32(b) => TensorData::I32(
                ox.iter()
                    .zip(&oy)
                    .map(|(&i, &j)| int_pow(b[i] as i64, e[j]) as i32)
                    .collect(),
            ),
            _ => {
                let b = x.to_i64_vec()?;
                TensorData::I64(ox.iter().zip(&oy).map(|(&i, &j)| int_pow(b[i], e[j])).collect())
            }
        };
        Ok(vec![Tensor::new(shape, data)?])
    }
    fn output_facts(&self, inputs: &[Option<&ValueFact>], _constants: &[Option<&Tensor>]) -> Result<Vec<ValueFact>> {
        let (x, y) = (required(inputs, 0, "Pow", "X")?, required(inputs, 1, "Pow", "Y")?);
        expect_dtype("Pow", x, "X", &TYPES)?;
        expect_dtype("Pow", y, "Y", &TYPES)?;
        Ok(vec![ValueFact::new(x.dtype, broadcast_facts("Pow", &[x, y])?)])
    }
}
