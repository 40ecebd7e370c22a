//! BitwiseAnd, BitwiseOr, BitwiseXor, BitShift (broadcast, two operands of one integer type)
//! and BitwiseNot, on every integer type.

use super::{binary_facts, map2};
use crate::error::{Error, Result};
use crate::onnx::attrs::AttrValue;
use crate::ops::facts::{expect_dtype, required};
use crate::ops::{attr, input, DataInputs, FromOnnx, Op, ParseCtx, ValueFact};
use crate::tensor::{DType, Tensor, TensorData};

const INTS: [DType; 8] = DType::INTEGERS;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bitwise {
    And,
    Or,
    Xor,
    /// BitShift; `left` is the direction. Shifts by a negative amount or by the type's width
    /// or more shift every bit out.
    Shift {
        left: bool,
    },
}

trait Bits: Copy {
    fn and(self, o: Self) -> Self;
    fn or(self, o: Self) -> Self;
    fn xor(self, o: Self) -> Self;
    fn not(self) -> Self;
    fn shift(self, by: Self, left: bool) -> Self;
}
macro_rules! bits {
    ($($t:ty),*) => {$(
        impl Bits for $t {
            fn and(self, o: Self) -> Self { self & o }
            fn or(self, o: Self) -> Self { self | o }
            fn xor(self, o: Self) -> Self { self ^ o }
            fn not(self) -> Self { !self }
            #[allow(unused_comparisons)]
            fn shift(self, by: Self, left: bool) -> Self {
                let by = by as i128;
                if by < 0 || by >= <$t>::BITS as i128 {
                    // As numpy: every bit shifted out, the sign kept by a right shift.
                    return if !left && self < 0 { !0 } else { 0 };
                }
                if left { self << by as u32 } else { self >> by as u32 }
            }
        }
    )*};
}
bits!(i8, u8, i16, u16, i32, u32, i64, u64);

impl Bitwise {
    pub fn name(self) -> &'static str {
        match self {
            Bitwise::And => "BitwiseAnd",
            Bitwise::Or => "BitwiseOr",
            Bitwise::Xor => "BitwiseXor",
            Bitwise::Shift { .. } => "BitShift",
        }
    }
    fn f<T: Bits>(self, a: T, b: T) -> T {
        match self {
            Bitwise::And => a.and(b),
            Bitwise::Or => a.or(b),
            Bitwise::Xor => a.xor(b),
            Bitwise::Shift { left } => a.shift(b, left),
        }
    }
}

impl FromOnnx for Bitwise {
    fn from_onnx(cx: &ParseCtx) -> Result<Self> {
        let a = cx.attrs;
        Ok(match cx.op_type {
            "BitwiseAnd" => Bitwise::And,
            "BitwiseOr" => Bitwise::Or,
            "BitwiseXor" => Bitwise::Xor,
            "BitShift" => match a.string("direction", "")?.as_str() {
                "LEFT" => Bitwise::Shift { left: true },
                "RIGHT" => Bitwise::Shift { left: false },
                other => return Err(a.unsupported(format!("direction='{other}' (LEFT or RIGHT)"))),
            },
            other => return Err(a.unsupported(format!("{other} is not a bitwise op"))),
        })
    }
}

impl Op for Bitwise {
    fn op_type(&self) -> &'static str {
        self.name()
    }
    fn to_attrs(&self, _opset: i64) -> Vec<(String, AttrValue)> {
        match self {
            Bitwise::Shift { left } => attr(
                "direction",
                AttrValue::String(if *left { "LEFT" } else { "RIGHT" }.into()),
            ),
            _ => Vec::new(),
        }
    }
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let (a, b) = (input(inputs, 0, "A")?, input(inputs, 1, "B")?);
        let op = *self;
        let out = match (a.data(), b.data()) {
            (TensorData::I8(x), TensorData::I8(y)) => map2(x, a.shape(), y, b.shape(), |p, q| op.f(p, q)),
            (TensorData::U8(x), TensorData::U8(y)) => map2(x, a.shape(), y, b.shape(), |p, q| op.f(p, q)),
            (TensorData::I32(x), TensorData::I32(y)) => map2(x, a.shape(), y, b.shape(), |p, q| op.f(p, q)),
            (TensorData::I64(x), TensorData::I64(y)) => map2(x, a.shape(), y, b.shape(), |p, q| op.f(p, q)),
            (TensorData::I16(x), TensorData::I16(y)) => map2(x, a.shape(), y, b.shape(), |p, q| op.f(p, q)),
            (TensorData::U16(x), TensorData::U16(y)) => map2(x, a.shape(), y, b.shape(), |p, q| op.f(p, q)),
            (TensorData::U32(x), TensorData::U32(y)) => map2(x, a.shape(), y, b.shape(), |p, q| op.f(p, q)),
            (TensorData::U64(x), TensorData::U64(y)) => map2(x, a.shape(), y, b.shape(), |p, q| op.f(p, q)),
            _ => Err(Error::shape(format!(
                "{} needs two operands of one integer dtype, got {} {:?} and {} {:?}",
                self.name(),
                a.dtype(),
                a.shape(),
                b.dtype(),
                b.shape()
            ))),
        }?;
        Ok(vec![out])
    }
    fn output_facts(&self, inputs: &[Option<&ValueFact>], _constants: &[Option<&Tensor>]) -> Result<Vec<ValueFact>> {
        binary_facts(self.name(), inputs, &INTS)
    }
    fn data_inputs(&self) -> DataInputs {
        DataInputs::All
    }
    fn carries_activation(&self) -> bool {
        false
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct BitwiseNot;

impl FromOnnx for BitwiseNot {
    fn from_onnx(_cx: &ParseCtx) -> Result<Self> {
        Ok(BitwiseNot)
    }
}

impl Op for BitwiseNot {
    fn op_type(&self) -> &'static str {
        "BitwiseNot"
    }
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0, "X")?;
        let data = match x.data() {
            TensorData::I8(v) => TensorData::I8(v.iter().map(|&e| e.not()).collect()),
            TensorData::U8(v) => TensorData::U8(v.iter().map(|&e| e.not()).collect()),
            TensorData::I32(v) => TensorData::I32(v.iter().map(|&e| e.not()).collect()),
            TensorData::I64(v) => TensorData::I64(v.iter().map(|&e| e.not()).collect()),
            TensorData::I16(v) => TensorData::I16(v.iter().map(|&e| e.not()).collect()),
            TensorData::U16(v) => TensorData::U16(v.iter().map(|&e| e.not()).collect()),
            TensorData::U32(v) => TensorData::U32(v.iter().map(|&e| e.not()).collect()),
            TensorData::U64(v) => TensorData::U64(v.iter().map(|&e| e.not()).collect()),
            _ => {
                return Err(Error::shape(format!(
                    "BitwiseNot needs an integer input, got {} {:?}",
                    x.dtype(),
                    x.shape()
                )))
            }
        };
        Ok(vec![Tensor::new(x.shape().to_vec(), data)?])
    }
    fn output_facts(&self, inputs: &[Option<&ValueFact>], _constants: &[Option<&Tensor>]) -> Result<Vec<ValueFact>> {
        let x = required(inputs, 0, "BitwiseNot", "X")?;
        expect_dtype("BitwiseNot", x, "X", &INTS)?;
        Ok(vec![x.clone()])
    }
    fn carries_activation(&self) -> bool {
        false
    }
}
