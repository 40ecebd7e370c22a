//! Element-wise functions of one 8-bit tensor by a 256-entry table (`QLookupTable`): how
//! models quantized by other tools requantize or apply a float op between their
//! DequantizeLinear and QuantizeLinear.

use super::{bounds_of, to_i32s};
use crate::error::{Error, Result};
use crate::kernels::requant::QElem;
use crate::tensor::{DType, Tensor};
use rayon::prelude::*;

/// An element-wise function of one 8-bit tensor as a 256-entry table, indexed by the input
/// value: how a model made by another tool requantizes (DequantizeLinear -> QuantizeLinear
/// with other parameters, QLinearConcat's inputs) or applies a float op between a
/// DequantizeLinear and a QuantizeLinear (Relu, LeakyRelu, Sigmoid ...). Each entry is the
/// ONNX definition computed once in f32 for that input value, so the table is exact.
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    /// `values[x - min(input)]`, already inside `out`'s range.
    pub values: Vec<i32>,
    pub input: DType,
    pub out: DType,
}

impl Table {
    /// The table of `f` (stored input value -> stored output value, clamped to `out`).
    pub fn build(input: DType, out: DType, f: impl Fn(i32) -> i32) -> Result<Table> {
        let (lo, hi) = bounds_of(input)?;
        let (olo, ohi) = bounds_of(out)?;
        Ok(Table {
            values: (lo..=hi).map(|x| f(x).clamp(olo, ohi)).collect(),
            input,
            out,
        })
    }

    /// Whether the table is the identity (same container, every value mapped to itself).
    pub fn is_identity(&self) -> bool {
        let lo = if self.input == DType::I8 { -128 } else { 0 };
        self.input == self.out && self.values.iter().enumerate().all(|(i, &v)| v == lo + i as i32)
    }

    pub fn eval(&self, x: &Tensor) -> Result<Tensor> {
        if x.dtype() != self.input {
            return Err(Error::shape(format!(
                "table lookup expects a {} tensor, got {}",
                self.input.name(),
                x.dtype().name()
            )));
        }
        let shape = x.shape().to_vec();
        let lo = if self.input == DType::I8 { -128 } else { 0 };
        let v = to_i32s(x)?;
        with_qelem!(self.out, O => {
            let y: Vec<O> = v.par_iter().map(|&a| O::from_i32(self.values[(a - lo) as usize])).collect();
            Tensor::from_vec(shape.clone(), y)
        })
    }
}

/// The ONNX requantization of one quantized value into another's parameters:
/// `QuantizeLinear(DequantizeLinear(x))`, in f32 as the ONNX definitions (and onnxruntime's
/// lookup tables) compute it.
pub fn requant_table(input: DType, x_scale: f32, x_zero: i32, out: DType, y_scale: f32, y_zero: i32) -> Result<Table> {
    Table::build(input, out, |x| {
        let real = (x - x_zero) as f32 * x_scale;
        ((real / y_scale).round_ties_even() as i32).saturating_add(y_zero)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_requantizes_like_dequantize_then_quantize() {
        let t = requant_table(DType::U8, 0.02, 128, DType::I8, 0.03, -3).unwrap();
        let x = Tensor::from_vec(vec![4], vec![0u8, 128, 200, 255]).unwrap();
        let got = t.eval(&x).unwrap();
        let want: Vec<i8> = [0u8, 128, 200, 255]
            .iter()
            .map(|&v| {
                let real = (v as i32 - 128) as f32 * 0.02f32;
                (((real / 0.03f32).round_ties_even() as i32) - 3).clamp(-128, 127) as i8
            })
            .collect();
        assert_eq!(got.as_slice::<i8>().unwrap(), &want[..]);
        assert!(requant_table(DType::U8, 0.5, 3, DType::U8, 0.5, 3)
            .unwrap()
            .is_identity());
    }
}
