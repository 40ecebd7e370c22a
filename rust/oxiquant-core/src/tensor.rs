//! Owned dense tensors (row-major) of the few element types the engine needs.

use crate::error::{Error, Result};
use std::fmt;

/// Element types, with their ONNX `TensorProto.DataType` codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    U8,
    I8,
    I32,
    I64,
    Bool,
    I16,
    U16,
    U32,
    U64,
}

impl DType {
    /// The integer types (not bool), narrowest first.
    pub const INTEGERS: [DType; 8] = [
        DType::U8,
        DType::I8,
        DType::U16,
        DType::I16,
        DType::U32,
        DType::I32,
        DType::U64,
        DType::I64,
    ];
    /// float32 and the integer types: what the arithmetic ops and Min/Max take.
    pub const NUMERIC: [DType; 9] = [
        DType::F32,
        DType::U8,
        DType::I8,
        DType::U16,
        DType::I16,
        DType::U32,
        DType::I32,
        DType::U64,
        DType::I64,
    ];
    pub fn onnx_code(self) -> i32 {
        match self {
            DType::F32 => 1,
            DType::U8 => 2,
            DType::I8 => 3,
            DType::I32 => 6,
            DType::I64 => 7,
            DType::Bool => 9,
            DType::I16 => 5,
            DType::U16 => 4,
            DType::U32 => 12,
            DType::U64 => 13,
        }
    }
    pub fn from_onnx_code(code: i32) -> Option<DType> {
        Some(match code {
            1 => DType::F32,
            2 => DType::U8,
            3 => DType::I8,
            6 => DType::I32,
            7 => DType::I64,
            9 => DType::Bool,
            5 => DType::I16,
            4 => DType::U16,
            12 => DType::U32,
            13 => DType::U64,
            _ => return None,
        })
    }
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "float32",
            DType::U8 => "uint8",
            DType::I8 => "int8",
            DType::I32 => "int32",
            DType::I64 => "int64",
            DType::Bool => "bool",
            DType::I16 => "int16",
            DType::U16 => "uint16",
            DType::U32 => "uint32",
            DType::U64 => "uint64",
        }
    }
    /// Integer types other than bool (signed or unsigned, any width).
    pub fn is_integer(self) -> bool {
        !matches!(self, DType::F32 | DType::Bool)
    }
    /// The size of one element in bytes.
    pub fn size(self) -> usize {
        match self {
            DType::U8 | DType::I8 | DType::Bool => 1,
            DType::I16 | DType::U16 => 2,
            DType::F32 | DType::I32 | DType::U32 => 4,
            DType::I64 | DType::U64 => 8,
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The element buffer of a tensor.
#[derive(Debug, Clone, PartialEq)]
pub enum TensorData {
    F32(Vec<f32>),
    U8(Vec<u8>),
    I8(Vec<i8>),
    I32(Vec<i32>),
    I64(Vec<i64>),
    Bool(Vec<bool>),
    I16(Vec<i16>),
    U16(Vec<u16>),
    U32(Vec<u32>),
    U64(Vec<u64>),
}

/// Runs `$body` with `$v` bound to the typed vector inside a `TensorData`.
#[macro_export]
macro_rules! dispatch_data {
    ($data:expr, $v:ident => $body:expr) => {
        match $data {
            $crate::tensor::TensorData::F32($v) => $body,
            $crate::tensor::TensorData::U8($v) => $body,
            $crate::tensor::TensorData::I8($v) => $body,
            $crate::tensor::TensorData::I32($v) => $body,
            $crate::tensor::TensorData::I64($v) => $body,
            $crate::tensor::TensorData::Bool($v) => $body,
            $crate::tensor::TensorData::I16($v) => $body,
            $crate::tensor::TensorData::U16($v) => $body,
            $crate::tensor::TensorData::U32($v) => $body,
            $crate::tensor::TensorData::U64($v) => $body,
        }
    };
}

/// A dense row-major tensor that owns its data.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    shape: Vec<usize>,
    data: TensorData,
}

/// Element types that a `Tensor` can hold, for generic constructors and accessors.
pub trait Element: Copy + Send + Sync + 'static + PartialOrd + fmt::Debug {
    const DTYPE: DType;
    fn wrap(v: Vec<Self>) -> TensorData;
    fn slice(d: &TensorData) -> Option<&[Self]>;
    fn slice_mut(d: &mut TensorData) -> Option<&mut [Self]>;
    fn into_vec(d: TensorData) -> std::result::Result<Vec<Self>, TensorData>;
    fn zero() -> Self;
}

macro_rules! impl_element {
    ($t:ty, $variant:ident, $zero:expr) => {
        impl Element for $t {
            const DTYPE: DType = DType::$variant;
            fn wrap(v: Vec<Self>) -> TensorData {
                TensorData::$variant(v)
            }
            fn slice(d: &TensorData) -> Option<&[Self]> {
                match d {
                    TensorData::$variant(v) => Some(v),
                    _ => None,
                }
            }
            fn slice_mut(d: &mut TensorData) -> Option<&mut [Self]> {
                match d {
                    TensorData::$variant(v) => Some(v),
                    _ => None,
                }
            }
            fn into_vec(d: TensorData) -> std::result::Result<Vec<Self>, TensorData> {
                match d {
                    TensorData::$variant(v) => Ok(v),
                    other => Err(other),
                }
            }
            fn zero() -> Self {
                $zero
            }
        }
    };
}
impl_element!(f32, F32, 0.0);
impl_element!(u8, U8, 0);
impl_element!(i8, I8, 0);
impl_element!(i32, I32, 0);
impl_element!(i64, I64, 0);
impl_element!(bool, Bool, false);
impl_element!(i16, I16, 0);
impl_element!(u16, U16, 0);
impl_element!(u32, U32, 0);
impl_element!(u64, U64, 0);

/// The element count of `shape`, saturating at `usize::MAX` instead of wrapping: a shape
/// read from a model (a Reshape target, say) whose product overflows then never matches a
/// buffer's length, so it is refused where a wrapped product could have matched.
pub fn numel(shape: &[usize]) -> usize {
    shape.iter().fold(1usize, |n, &d| n.saturating_mul(d))
}

/// The element count of `shape`, or `None` when it overflows `usize`.
pub fn checked_numel(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d))
}

/// Refuses a shape whose non-zero dimensions multiply past `usize` (an empty tensor of
/// shape [2^40, 2^40, 0] is otherwise valid), so that any product of a tensor's dimensions
/// the kernels compute is exact.
fn check_dims(shape: &[usize]) -> Result<()> {
    let fits = shape
        .iter()
        .filter(|&&d| d != 0)
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .is_some();
    if fits {
        Ok(())
    } else {
        Err(Error::shape(format!("the dimensions of {shape:?} overflow")))
    }
}

/// Outputs up to this size are allocated without asking first.
const PROBE_BYTES: usize = 1 << 30;

/// RAM plus swap in bytes, on Linux (from /proc/meminfo, read once); `None` elsewhere.
fn machine_memory() -> Option<u64> {
    static MEM: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    *MEM.get_or_init(|| {
        let info = std::fs::read_to_string("/proc/meminfo").ok()?;
        let kib = |key: &str| {
            info.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
        };
        Some((kib("MemTotal:")? + kib("SwapTotal:").unwrap_or(0)) * 1024)
    })
}

/// Checks, before an op allocates an output whose shape comes from the model (attributes,
/// shape inputs, pads, scales), that a tensor of `shape` with `elem_size`-byte elements can
/// exist: its size must not overflow and, past 1 GiB, must fit in the machine's memory (RAM
/// plus swap where the OS says, and a trial reservation). Allocators reserve address space
/// lazily, so without this a hostile model would get a multi-terabyte buffer and the process
/// would be killed when the op writes it; with it, the model gets an error naming the shape.
/// An empty output is checked as if its zero dimensions were 1: ops build per-axis index
/// tables, and [0, 2^60] is no more reasonable than [1, 2^60]. Returns the element count.
pub fn check_alloc(shape: &[usize], elem_size: usize) -> Result<usize> {
    let nonzero: Vec<usize> = shape.iter().map(|&d| d.max(1)).collect();
    let n = checked_numel(&nonzero)
        .filter(|n| n.checked_mul(elem_size).is_some_and(|b| b <= isize::MAX as usize))
        .ok_or_else(|| {
            Error::shape(format!(
                "an output of shape {shape:?} would have more elements than memory can address"
            ))
        })?;
    let bytes = n * elem_size;
    if bytes > PROBE_BYTES {
        let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
        let too_big = || {
            Error::shape(format!(
                "an output of shape {shape:?} needs {:.1} GiB, which cannot be allocated{}",
                gib(bytes as u64),
                machine_memory()
                    .map(|m| format!(" (this machine has {:.1} GiB of RAM and swap)", gib(m)))
                    .unwrap_or_default()
            ))
        };
        if machine_memory().is_some_and(|m| bytes as u64 > m) {
            return Err(too_big());
        }
        let mut probe: Vec<u8> = Vec::new();
        probe.try_reserve_exact(bytes).map_err(|_| too_big())?;
    }
    Ok(numel(shape))
}

impl Tensor {
    /// Builds a tensor, checking that the data length matches the shape.
    pub fn new(shape: Vec<usize>, data: TensorData) -> Result<Tensor> {
        check_dims(&shape)?;
        let n = numel(&shape);
        let len = dispatch_data!(&data, v => v.len());
        if n != len {
            return Err(Error::shape(format!(
                "tensor of shape {shape:?} needs {n} elements, got {len}"
            )));
        }
        Ok(Tensor { shape, data })
    }
    pub fn from_vec<T: Element>(shape: Vec<usize>, v: Vec<T>) -> Result<Tensor> {
        Tensor::new(shape, T::wrap(v))
    }
    pub fn zeros<T: Element>(shape: Vec<usize>) -> Tensor {
        let n = numel(&shape);
        Tensor {
            shape,
            data: T::wrap(vec![T::zero(); n]),
        }
    }
    pub fn scalar<T: Element>(v: T) -> Tensor {
        Tensor {
            shape: vec![],
            data: T::wrap(vec![v]),
        }
    }
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }
    pub fn rank(&self) -> usize {
        self.shape.len()
    }
    pub fn len(&self) -> usize {
        numel(&self.shape)
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn dtype(&self) -> DType {
        match &self.data {
            TensorData::F32(_) => DType::F32,
            TensorData::U8(_) => DType::U8,
            TensorData::I8(_) => DType::I8,
            TensorData::I32(_) => DType::I32,
            TensorData::I64(_) => DType::I64,
            TensorData::Bool(_) => DType::Bool,
            TensorData::I16(_) => DType::I16,
            TensorData::U16(_) => DType::U16,
            TensorData::U32(_) => DType::U32,
            TensorData::U64(_) => DType::U64,
        }
    }
    pub fn data(&self) -> &TensorData {
        &self.data
    }
    pub fn into_parts(self) -> (Vec<usize>, TensorData) {
        (self.shape, self.data)
    }
    /// Typed view of the elements; a `Shape` error names the expected and actual dtype.
    pub fn as_slice<T: Element>(&self) -> Result<&[T]> {
        T::slice(&self.data).ok_or_else(|| {
            Error::shape(format!(
                "expected a {} tensor, got {} of shape {:?}",
                T::DTYPE,
                self.dtype(),
                self.shape
            ))
        })
    }
    pub fn as_mut_slice<T: Element>(&mut self) -> Result<&mut [T]> {
        let (dt, shape) = (self.dtype(), self.shape.clone());
        T::slice_mut(&mut self.data)
            .ok_or_else(|| Error::shape(format!("expected a {} tensor, got {dt} of shape {shape:?}", T::DTYPE)))
    }
    pub fn into_vec<T: Element>(self) -> Result<Vec<T>> {
        let shape = self.shape;
        T::into_vec(self.data).map_err(|d| {
            let t = Tensor { shape, data: d };
            Error::shape(format!(
                "expected a {} tensor, got {} of shape {:?}",
                T::DTYPE,
                t.dtype(),
                t.shape
            ))
        })
    }
    /// Same data, new shape (element count must match).
    pub fn reshape(self, shape: Vec<usize>) -> Result<Tensor> {
        check_dims(&shape)?;
        if numel(&shape) != self.len() {
            return Err(Error::shape(format!(
                "cannot reshape {:?} ({} elements) to {:?}",
                self.shape,
                self.len(),
                shape
            )));
        }
        Ok(Tensor { shape, data: self.data })
    }
    /// Integer values of a small index tensor (shape inputs, axes, pads), any int dtype.
    /// A uint64 value above `i64::MAX` is refused rather than wrapped.
    pub fn to_i64_vec(&self) -> Result<Vec<i64>> {
        if let TensorData::I64(v) = &self.data {
            return Ok(v.clone());
        }
        if !self.dtype().is_integer() && self.dtype() != DType::Bool {
            return Err(Error::shape(format!(
                "expected an integer tensor, got {} of shape {:?}",
                self.dtype(),
                self.shape
            )));
        }
        dispatch_data!(&self.data, v => v
            .iter()
            .map(|&x| {
                i64::try_from(x.to_i128()).map_err(|_| {
                    Error::shape(format!(
                        "the {} value {} does not fit in int64 (shape {:?})",
                        self.dtype(),
                        x.to_i128(),
                        self.shape
                    ))
                })
            })
            .collect())
    }
    /// Float values of any tensor (used by scalar inputs like Clip's min/max).
    pub fn to_f32_vec(&self) -> Vec<f32> {
        dispatch_data!(&self.data, v => v.iter().map(|&x| x.to_f32()).collect())
    }
    /// Converts to another dtype with ONNX Cast semantics: integer to integer wraps (keeps
    /// the low bits, like numpy's `astype`), float to integer truncates toward zero and then
    /// wraps, integer to float rounds to nearest, anything to bool is `!= 0`.
    pub fn cast(&self, to: DType) -> Tensor {
        let shape = self.shape.clone();
        if to == self.dtype() {
            return self.clone();
        }
        let data = dispatch_data!(&self.data, v => cast_slice(v, to));
        Tensor { shape, data }
    }
}

/// Exact conversions of one element, for `Tensor::cast` and the index/float views. Every
/// integer type fits in `i128`, so `to_i128` is exact for them; for float32 it truncates
/// toward zero (saturating at the `i128` range, NaN to 0).
pub trait CastElement: Element {
    fn to_i128(self) -> i128;
    fn to_f32(self) -> f32;
    /// Exact for float32 and for integers up to 2^53 in magnitude.
    fn to_f64(self) -> f64;
    fn is_nonzero(self) -> bool;
    /// A fill value (a pad or extrapolation constant) as this type: truncated toward zero
    /// and wrapped for integers, `!= 0` for bool.
    fn from_f64(x: f64) -> Self;
}

macro_rules! impl_cast_int {
    ($($t:ty),*) => {$(
        impl CastElement for $t {
            fn to_i128(self) -> i128 {
                self as i128
            }
            fn to_f32(self) -> f32 {
                self as f32
            }
            fn to_f64(self) -> f64 {
                self as f64
            }
            fn is_nonzero(self) -> bool {
                self != 0
            }
            fn from_f64(x: f64) -> Self {
                (x as i128) as $t
            }
        }
    )*};
}
impl_cast_int!(u8, i8, i16, u16, i32, u32, i64, u64);

impl CastElement for f32 {
    fn to_i128(self) -> i128 {
        self as i128
    }
    fn to_f32(self) -> f32 {
        self
    }
    fn to_f64(self) -> f64 {
        self as f64
    }
    fn is_nonzero(self) -> bool {
        self != 0.0
    }
    fn from_f64(x: f64) -> Self {
        x as f32
    }
}

impl CastElement for bool {
    fn to_i128(self) -> i128 {
        self as i128
    }
    fn to_f32(self) -> f32 {
        self as u8 as f32
    }
    fn to_f64(self) -> f64 {
        self as u8 as f64
    }
    fn is_nonzero(self) -> bool {
        self
    }
    fn from_f64(x: f64) -> Self {
        x != 0.0
    }
}

fn cast_slice<S: CastElement>(v: &[S], to: DType) -> TensorData {
    // `i128 as T` keeps the low bits of the two's-complement value: the wrapping ONNX asks
    // of integer casts.
    match to {
        DType::F32 => TensorData::F32(v.iter().map(|&x| x.to_f32()).collect()),
        DType::Bool => TensorData::Bool(v.iter().map(|&x| x.is_nonzero()).collect()),
        DType::U8 => TensorData::U8(v.iter().map(|&x| x.to_i128() as u8).collect()),
        DType::I8 => TensorData::I8(v.iter().map(|&x| x.to_i128() as i8).collect()),
        DType::I16 => TensorData::I16(v.iter().map(|&x| x.to_i128() as i16).collect()),
        DType::U16 => TensorData::U16(v.iter().map(|&x| x.to_i128() as u16).collect()),
        DType::I32 => TensorData::I32(v.iter().map(|&x| x.to_i128() as i32).collect()),
        DType::U32 => TensorData::U32(v.iter().map(|&x| x.to_i128() as u32).collect()),
        DType::I64 => TensorData::I64(v.iter().map(|&x| x.to_i128() as i64).collect()),
        DType::U64 => TensorData::U64(v.iter().map(|&x| x.to_i128() as u64).collect()),
    }
}

/// Row-major strides of a shape.
pub fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1usize; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_checks_length() {
        assert!(Tensor::from_vec(vec![2, 3], vec![0f32; 5]).is_err());
        let t = Tensor::from_vec(vec![2, 3], vec![0f32; 6]).unwrap();
        assert_eq!(t.len(), 6);
    }

    #[test]
    fn typed_access_reports_dtype() {
        let t = Tensor::from_vec(vec![2], vec![1i64, 2]).unwrap();
        let e = t.as_slice::<f32>().unwrap_err();
        assert!(e.to_string().contains("expected a float32 tensor, got int64"));
    }

    #[test]
    fn mut_slice_writes() {
        let mut t = Tensor::zeros::<f32>(vec![3]);
        t.as_mut_slice::<f32>().unwrap()[1] = 2.0;
        assert_eq!(t.as_slice::<f32>().unwrap(), &[0.0, 2.0, 0.0]);
        assert!(t.as_mut_slice::<i64>().is_err());
    }

    #[test]
    fn cast_truncates_toward_zero() {
        let t = Tensor::from_vec(vec![3], vec![-1.7f32, 0.2, 2.9]).unwrap();
        assert_eq!(t.cast(DType::I64).as_slice::<i64>().unwrap(), &[-1, 0, 2]);
    }

    #[test]
    fn integer_casts_wrap_and_stay_exact() {
        let big = Tensor::from_vec(vec![3], vec![u64::MAX, 1u64 << 63, 70_000]).unwrap();
        assert_eq!(big.cast(DType::I64).as_slice::<i64>().unwrap(), &[-1, i64::MIN, 70_000]);
        assert_eq!(big.cast(DType::U16).as_slice::<u16>().unwrap(), &[65535, 0, 4464]);
        let neg = Tensor::from_vec(vec![2], vec![-1i16, -32768]).unwrap();
        assert_eq!(
            neg.cast(DType::U32).as_slice::<u32>().unwrap(),
            &[u32::MAX, 4_294_934_528]
        );
        let odd = Tensor::from_vec(vec![1], vec![(1i64 << 62) + 1]).unwrap();
        assert_eq!(odd.cast(DType::U64).as_slice::<u64>().unwrap(), &[(1u64 << 62) + 1]);
        assert!(big.to_i64_vec().is_err());
    }

    #[test]
    fn strides_row_major() {
        assert_eq!(strides(&[2, 3, 4]), vec![12, 4, 1]);
        assert_eq!(strides(&[]), Vec::<usize>::new());
    }
}
