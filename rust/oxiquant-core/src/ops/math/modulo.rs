//! Mod: the remainder of a broadcast division. `fmod=0` takes the divisor's sign, as Python's
//! `%` (for floats defined from opset 28 on; computed at every opset); `fmod=1` the
//! dividend's, as C's `fmod`. A zero integer divisor gives
//! 0 (as Div does), not a panic.

use crate::error::{Error, Result};
use crate::onnx::attrs::AttrValue;
use crate::ops::logic::{binary_facts, map2};
use crate::ops::{attr, input, FromOnnx, Op, ParseCtx, ValueFact};
use crate::tensor::{DType, Tensor};

#[derive(Debug, Clone, PartialEq)]
pub struct Mod {
    pub fmod: bool,
}

impl FromOnnx for Mod {
    fn from_onnx(cx: &ParseCtx) -> Result<Self> {
        let a = cx.attrs;
        let fmod = match a.int("fmod", 0)? {
            0 => false,
            1 => true,
            v => return Err(a.unsupported(format!("fmod={v} (0 or 1)"))),
        };
        Ok(Mod { fmod })
    }
}

/// The remainder with the divisor's sign (numpy's `mod`): `x - floor(x / y) y` computed
/// from the exact `fmod`; a zero remainder takes the divisor's sign.
fn float_mod(x: f32, y: f32) -> f32 {
    let r = x % y;
    if r == 0.0 {
        0f32.copysign(y)
    } else if (r < 0.0) != (y < 0.0) {
        r + y
    } else {
        r
    }
}

/// Integer remainder as `Mod` defines it.
trait IntRem: Copy + PartialOrd {
    fn rem(self, d: Self, fmod: bool) -> Self;
}
macro_rules! int_rem {
    ($($t:ty),*) => {$(
        impl IntRem for $t {
            fn rem(self, d: Self, fmod: bool) -> Self {
                if d == 0 {
                    return 0;
                }
                let r = self.wrapping_rem(d);
                #[allow(unused_comparisons)]
                if !fmod && r != 0 && ((r < 0) != (d < 0)) {
                    r.wrapping_add(d)
                } else {
                    r
                }
            }
        }
    )*};
}
int_rem!(u8, i8, u16, i16, u32, i32, u64, i64);

impl Op for Mod {
    fn elementwise(&self) -> bool {
        true
    }
    fn op_type(&self) -> &'static str {
        "Mod"
    }
    fn to_attrs(&self, _opset: i64) -> Vec<(String, AttrValue)> {
        if self.fmod {
            attr("fmod", AttrValue::Int(1))
        } else {
            Vec::new()
        }
    }
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let (a, b) = (input(inputs, 0, "A")?, input(inputs, 1, "B")?);
        let fmod = self.fmod;
        let bad = || {
            Error::shape(format!(
                "Mod needs two operands of one numeric dtype, got {} {:?} and {} {:?}",
                a.dtype(),
                a.shape(),
                b.dtype(),
                b.shape()
            ))
        };
        use crate::tensor::TensorData as D;
        let out = match (a.data(), b.data()) {
            (D::F32(x), D::F32(y)) if fmod => map2(x, a.shape(), y, b.shape(), |p, q| p % q),
            (D::F32(x), D::F32(y)) => map2(x, a.shape(), y, b.shape(), float_mod),
            (D::U8(x), D::U8(y)) => map2(x, a.shape(), y, b.shape(), |p, q| p.rem(q, fmod)),
            (D::I8(x), D::I8(y)) => map2(x, a.shape(), y, b.shape(), |p, q| p.rem(q, fmod)),
            (D::I32(x), D::I32(y)) => map2(x, a.shape(), y, b.shape(), |p, q| p.rem(q, fmod)),
            (D::I64(x), D::I64(y)) => map2(x, a.shape(), y, b.shape(), |p, q| p.rem(q, fmod)),
            (D::I16(x), D::I16(y)) => map2(x, a.shape(), y, b.shape(), |p, q| p.rem(q, fmod)),
            (D::U16(x), D::U16(y)) => map2(x, a.shape(), y, b.shape(), |p, q| p.rem(q, fmod)),
            (D::U32(x), D::U32(y)) => map2(x, a.shape(), y, b.shape(), |p, q| p.rem(q, fmod)),
            (D::U64(x), D::U64(y)) => map2(x, a.shape(), y, b.shape(), |p, q| p.rem(q, fmod)),
            _ => Err(bad()),
        }?;
        Ok(vec![out])
    }
    fn output_facts(&self, inputs: &[Option<&ValueFact>], _constants: &[Option<&Tensor>]) -> Result<Vec<ValueFact>> {
        binary_facts("Mod", inputs, &DType::NUMERIC)
    }
}
