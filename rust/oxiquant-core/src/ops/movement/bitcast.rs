//! BitCast: the same bits read as another element type of the same width (little endian),
//! the shape unchanged. Unlike Cast no value is converted: uint32 4294967295 is int32 -1,
//! float32 1.0 is int32 1065353216. bool is one byte holding 0 or 1; a byte read as bool is
//! true when it is not 0.

use crate::error::{Error, Result};
use crate::onnx::attrs::AttrValue;
use crate::ops::facts::{fact_error, required};
use crate::ops::{attr, input, FromOnnx, Op, ParseCtx, ValueFact};
use crate::tensor::{DType, Element, Tensor, TensorData};

/// An element as little-endian bytes, and back.
trait LeBytes: Element {
    fn put(self, out: &mut Vec<u8>);
    /// `b` holds exactly `DTYPE.size()` bytes.
    fn get(b: &[u8]) -> Self;
}

macro_rules! le_bytes {
    ($($t:ty),*) => {$(
        impl LeBytes for $t {
            fn put(self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
            fn get(b: &[u8]) -> Self {
                let mut a = [0u8; std::mem::size_of::<$t>()];
                a.copy_from_slice(b);
                <$t>::from_le_bytes(a)
            }
        }
    )*};
}
le_bytes!(f32, u8, i8, i16, u16, i32, u32, i64, u64);

impl LeBytes for bool {
    fn put(self, out: &mut Vec<u8>) {
        out.push(self as u8);
    }
    fn get(b: &[u8]) -> Self {
        b[0] != 0
    }
}

fn to_bytes<T: LeBytes>(v: &[T]) -> Vec<u8> {
    let mut out = Vec::with_capacity(v.len() * T::DTYPE.size());
    for &x in v {
        x.put(&mut out);
    }
    out
}

fn from_bytes<T: LeBytes>(b: &[u8]) -> TensorData {
    T::wrap(b.chunks_exact(T::DTYPE.size()).map(T::get).collect())
}

/// The bytes of `t` read as `to`, which must have the width of `t`'s dtype.
pub fn bitcast(t: &Tensor, to: DType) -> Result<Tensor> {
    if t.dtype().size() != to.size() {
        return Err(Error::shape(format!(
            "BitCast: cannot reinterpret {} ({} bytes) as {to} ({} bytes); the widths must match",
            t.dtype(),
            t.dtype().size(),
            to.size()
        )));
    }
    if t.dtype() == to {
        return Ok(t.clone());
    }
    let bytes = crate::dispatch_data!(t.data(), v => to_bytes(v));
    let data = match to {
        DType::F32 => from_bytes::<f32>(&bytes),
        DType::U8 => from_bytes::<u8>(&bytes),
        DType::I8 => from_bytes::<i8>(&bytes),
        DType::I16 => from_bytes::<i16>(&bytes),
        DType::U16 => from_bytes::<u16>(&bytes),
        DType::I32 => from_bytes::<i32>(&bytes),
        DType::U32 => from_bytes::<u32>(&bytes),
        DType::I64 => from_bytes::<i64>(&bytes),
        DType::U64 => from_bytes::<u64>(&bytes),
        DType::Bool => from_bytes::<bool>(&bytes),
    };
    Tensor::new(t.shape().to_vec(), data)
}

#[derive(Debug, Clone, PartialEq)]
pub struct BitCast {
    pub to: DType,
}

impl FromOnnx for BitCast {
    fn from_onnx(cx: &ParseCtx) -> Result<Self> {
        let a = cx.attrs;
        let code = a.int("to", 0)?;
        let to = i32::try_from(code)
            .ok()
            .and_then(DType::from_onnx_code)
            .ok_or_else(|| a.unsupported(format!("bitcast to ONNX dtype {code}")))?;
        Ok(BitCast { to })
    }
}

impl Op for BitCast {
    fn op_type(&self) -> &'static str {
        "BitCast"
    }
    fn to_attrs(&self, _opset: i64) -> Vec<(String, AttrValue)> {
        attr("to", AttrValue::Int(self.to.onnx_code() as i64))
    }
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        Ok(vec![bitcast(input(inputs, 0, "input")?, self.to)?])
    }
    fn output_facts(&self, inputs: &[Option<&ValueFact>], _constants: &[Option<&Tensor>]) -> Result<Vec<ValueFact>> {
        let x = required(inputs, 0, "BitCast", "input")?;
        if let Some(d) = x.dtype {
            if d.size() != self.to.size() {
                return Err(fact_error(
                    "BitCast",
                    format!(
                        "cannot reinterpret {x} ({} bytes) as {} ({} bytes); the widths must match",
                        d.size(),
                        self.to,
                        self.to.size()
                    ),
                ));
            }
        }
        Ok(vec![ValueFact::new(Some(self.to), x.shape.clone())])
    }
    fn carries_activation(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn reinterprets_known_patterns() {
        let x = Tensor::from_vec(vec![3], vec![1.0f32, -2.5, 0.0]).unwrap();
        let y = bitcast(&x, DType::I32).unwrap();
        assert_eq!(y.as_slice::<i32>().unwrap(), &[1065353216, -1071644672, 0]);
        let u = Tensor::from_vec(vec![2], vec![u64::MAX, 1u64 << 63]).unwrap();
        assert_eq!(
            bitcast(&u, DType::I64).unwrap().as_slice::<i64>().unwrap(),
            &[-1, i64::MIN]
        );
        let e = bitcast(&x, DType::I16).unwrap_err().to_string();
        assert!(e.contains("float32 (4 bytes) as int16 (2 bytes)"), "{e}");
    }

    proptest! {
        /// A round trip through a type of the same width gives the bits back, and each step
        /// equals the value computed by the standard library's own conversions.
        #[test]
        fn round_trips_and_matches_std(v in prop::collection::vec(any::<u32>(), 0..20)) {
            let t = Tensor::from_vec(vec![v.len()], v.clone()).unwrap();
            let f = bitcast(&t, DType::F32).unwrap();
            let want: Vec<u32> = f.as_slice::<f32>().unwrap().iter().map(|x| x.to_bits()).collect();
            prop_assert_eq!(&want, &v);
            let i = bitcast(&f, DType::I32).unwrap();
            prop_assert_eq!(i.as_slice::<i32>().unwrap(), &v.iter().map(|&x| x as i32).collect::<Vec<_>>()[..]);
            let back = bitcast(&i, DType::U32).unwrap();
            prop_assert_eq!(back.as_slice::<u32>().unwrap(), &v[..]);
        }
    }
}
