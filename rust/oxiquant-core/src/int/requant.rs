//! Requantization (`Requantize`: to an 8-bit container by an exact fixed-point factor, or
//! ONNX QuantizeLinear's f32 quotient for float inputs) and dequantization (`Dequantize`).

use super::{bounds_of, channel_planes, container, to_i32s, widest_input, work_blocks};
use crate::error::{Error, Result};
use crate::kernels::requant::{
    quantize_one, quantize_row, requant_row, requant_row_ref, FixedPoint, FloatScale, QElem, Rounding, RowOut,
};
use crate::tensor::{DType, Tensor, TensorData};
use rayon::prelude::*;

/// Requantization to an 8-bit container: `clamp(round_half_even((x - x_zero) * factor) +
/// zero, lo, hi)`, the product rounded as `rounding` says.
#[derive(Debug, Clone, PartialEq)]
pub struct Requant {
    /// One factor, or one per channel (axis 1 of the tensor).
    pub scale: Vec<FixedPoint>,
    /// The same factors as the f32 the fake-quantized graph holds (for float inputs).
    pub factor: Vec<f32>,
    /// Clamp bounds in stored units (the zero point included).
    pub lo: i32,
    pub hi: i32,
    /// I8 or U8.
    pub out: DType,
    /// Output zero point, added after rounding.
    pub zero: i32,
    /// Zero point of integer inputs, subtracted before the product.
    pub x_zero: i32,
    pub rounding: Rounding,
    /// Float inputs: `Some(scales)` quantizes them as ONNX QuantizeLinear does,
    /// `round_half_even(x / scale) + zero` with the f32 division; `None` multiplies by
    /// `factor` exactly (oxiquant's own input quantizers).
    pub divide_by: Option<Vec<f32>>,
}

impl Requant {
    pub fn new(factor: Vec<f32>, lo: i32, hi: i32) -> Result<Requant> {
        let out = container(lo, hi).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "the integer engine holds activations in 8 bits; the range [{lo}, {hi}] needs more"
            ))
        })?;
        if factor.is_empty() {
            return Err(Error::InvalidArgument("requantization without a factor".into()));
        }
        let scale = factor
            .iter()
            .map(|&f| {
                FixedPoint::from_f32(f)
                    .ok_or_else(|| Error::InvalidArgument(format!("requantization factor {f} is not finite")))
            })
            .collect::<Result<_>>()?;
        Ok(Requant {
            scale,
            factor,
            lo,
            hi,
            out,
            zero: 0,
            x_zero: 0,
            rounding: Rounding::Exact,
            divide_by: None,
        })
    }

    /// A requantization to an ONNX quantized tensor of `dtype` (uint8 or int8) with zero
    /// point `zero`, rounding the f32 product as onnxruntime does; clamps to the dtype's
    /// range.
    pub fn onnx(factor: Vec<f32>, dtype: DType, zero: i32) -> Result<Requant> {
        let (lo, hi) = match dtype {
            DType::U8 => (0, 255),
            DType::I8 => (-128, 127),
            other => {
                return Err(Error::InvalidArgument(format!(
                    "the integer engine holds quantized tensors as uint8 or int8, not {}",
                    other.name()
                )))
            }
        };
        if zero < lo || zero > hi {
            return Err(Error::InvalidArgument(format!(
                "zero point {zero} is outside the range of {}",
                dtype.name()
            )));
        }
        let mut r = Requant::new(factor, lo, hi)?;
        r.out = dtype;
        r.zero = zero;
        r.rounding = Rounding::F32;
        Ok(r)
    }

    pub(crate) fn row_out(&self) -> RowOut {
        RowOut {
            rounding: self.rounding,
            zero: self.zero,
            lo: self.lo,
            hi: self.hi,
        }
    }

    /// Tighter bounds (a Relu or Clip fused after the quantizer).
    pub fn clamp_to(&mut self, lo: i32, hi: i32) {
        self.lo = self.lo.max(lo);
        self.hi = self.hi.min(hi).max(self.lo);
    }

    /// Requantizes `acc + bias` of channel `c` into `dst`; `bound` is a bound on every
    /// `|acc + bias|`: below the rounding's `fast_bound` the fast kernel equals the reference.
    #[inline]
    pub fn row<O: QElem>(&self, c: usize, acc: &[i32], bias: i32, bound: i64, dst: &mut [O]) {
        let c = if self.scale.len() == 1 { 0 } else { c };
        if bound < self.rounding.fast_bound() {
            requant_row(acc, bias, self.factor[c], self.row_out(), dst);
        } else {
            requant_row_ref(acc, bias, &self.scale[c], self.row_out(), dst);
        }
    }

    /// How channel `c` scales floats: the product in f64 is exact for f32 operands; with
    /// `divide_by`, the f32 quotient of ONNX QuantizeLinear.
    fn float_scale(&self, c: usize) -> FloatScale {
        let pick = |v: &[f32]| if v.len() == 1 { v[0] } else { v[c] };
        match &self.divide_by {
            Some(s) => FloatScale::Div(pick(s)),
            None => FloatScale::Mul(pick(&self.factor)),
        }
    }

    /// Quantizes one float of channel `c` (an input quantizer).
    #[inline]
    pub fn apply_f32(&self, c: usize, x: f32) -> i32 {
        quantize_one(x, self.float_scale(c), self.row_out())
    }

    fn channels_of(&self, shape: &[usize]) -> Result<(usize, usize)> {
        channel_planes(self.scale.len(), shape, "requantization")
    }

    /// Requantizes integers `x` (any container) of channel `c` into `dst`, in blocks;
    /// `known` bounds every `|x - x_zero|` a priori (8-bit inputs), else each block is
    /// measured to pick the row kernel.
    fn ints<O: QElem, I: Copy + Into<i64>>(&self, c: usize, x: &[I], dst: &mut [O], known: Option<i64>) {
        let mut buf = [0i32; 256];
        for (xs, ds) in x.chunks(256).zip(dst.chunks_mut(256)) {
            let buf = &mut buf[..xs.len()];
            let bound = match known {
                Some(b) => {
                    // A plain widening loop, which the compiler vectorizes.
                    buf.iter_mut().zip(xs).for_each(|(b, &v)| *b = v.into() as i32);
                    b
                }
                None => {
                    let mut bound = 0i64;
                    for (b, &v) in buf.iter_mut().zip(xs) {
                        let v: i64 = v.into();
                        bound = bound.max((v - self.x_zero as i64).abs());
                        *b = v as i32;
                    }
                    bound
                }
            };
            self.row(c, buf, -self.x_zero, bound, ds);
        }
    }

    /// This requantization of every value of the 8-bit container `input`, per channel:
    /// `lut[c * 256 + (x - min)]`, the stored outputs as `eval` computes them.
    pub fn lut(&self, input: DType) -> Result<Vec<i32>> {
        let (lo, hi) = bounds_of(input)?;
        let xs: Vec<i32> = (lo..=hi).collect();
        with_qelem!(self.out, O => {
            let mut out = Vec::with_capacity(self.scale.len() * xs.len());
            let mut row = vec![O::from_i32(0); xs.len()];
            for c in 0..self.scale.len() {
                self.ints(c, &xs, &mut row, None);
                out.extend(row.iter().map(|&v| v.to_i32()));
            }
            Ok(out)
        })
    }

    /// Whether an 8-bit input of `len` values in `c` channels is requantized by table: each
    /// channel's 256 outputs cost as much as 256 values, so only with many values per
    /// channel.
    fn tabled(&self, len: usize, c: usize) -> bool {
        c == self.scale.len() && self.divide_by.is_none() && len >= TABLE_MIN_PER_CHANNEL * c
    }

    /// 8-bit inputs by table: each channel's 256 outputs computed once (`lut`, the same
    /// values as the rows), then looked up. A Concat's requantization in a YOLO-style neck
    /// took 1.2 ns a value through the row kernel.
    fn by_table<O: QElem, I: Copy + Into<i64> + Sync>(
        &self,
        v: &[I],
        input: DType,
        c: usize,
        inner: usize,
        y: &mut [O],
    ) -> Result<()> {
        let lo = bounds_of(input)?.0 as i64;
        let lut: Vec<O> = self.lut(input)?.into_iter().map(O::from_i32).collect();
        y.par_chunks_mut(inner)
            .zip(v.par_chunks(inner))
            .enumerate()
            .for_each(|(i, (o, s))| {
                let t: &[O; 256] = lut[(i % c) * 256..][..256].try_into().expect("256 entries per channel");
                for (d, &x) in o.iter_mut().zip(s) {
                    *d = t[(x.into() - lo) as u8 as usize];
                }
            });
        Ok(())
    }

    pub fn eval(&self, x: &Tensor) -> Result<Tensor> {
        let shape = x.shape().to_vec();
        self.channels_of(&shape)?;
        let counts = [self.scale.len(), self.divide_by.as_ref().map_or(1, Vec::len)];
        let (inner, c) = work_blocks(&shape, &counts, "requantization")?;
        // 8-bit inputs: |x - x_zero| is bounded a priori.
        let wide = Some(widest_input(self.x_zero));
        with_qelem!(self.out, O => {
            let mut y = vec![O::from_i32(0); x.len()];
            if inner > 0 {
                let blocks = y.par_chunks_mut(inner).enumerate();
                match x.data() {
                    TensorData::F32(v) => blocks
                        .zip(v.par_chunks(inner))
                        .for_each(|((i, o), s)| quantize_row(s, self.float_scale(i % c), self.row_out(), o)),
                    TensorData::I8(v) if self.tabled(v.len(), c) => self.by_table(v, DType::I8, c, inner, &mut y)?,
                    TensorData::U8(v) if self.tabled(v.len(), c) => self.by_table(v, DType::U8, c, inner, &mut y)?,
                    TensorData::I8(v) => blocks.zip(v.par_chunks(inner)).for_each(|((i, o), s)| self.ints(i % c, s, o, wide)),
                    TensorData::U8(v) => blocks.zip(v.par_chunks(inner)).for_each(|((i, o), s)| self.ints(i % c, s, o, wide)),
                    TensorData::I32(v) => blocks.zip(v.par_chunks(inner)).for_each(|((i, o), s)| self.ints(i % c, s, o, None)),
                    _ => return Err(Error::shape(format!("cannot requantize a {} tensor", x.dtype().name()))),
                }
            }
            Tensor::from_vec(shape, y)
        })
    }
}

/// Dequantization: an integer tensor minus its zero point times a float factor (per channel
/// of axis 1 or one), `(x - zero) * factor` in f32 as ONNX DequantizeLinear.
#[derive(Debug, Clone, PartialEq)]
pub struct Dequant {
    pub factor: Vec<f32>,
    /// One zero point, or one per factor; empty: 0.
    pub zero: Vec<i32>,
}

impl Dequant {
    /// Zero point 0 (oxiquant's own integers).
    pub fn unit_zero(factor: Vec<f32>) -> Dequant {
        Dequant {
            factor,
            zero: Vec::new(),
        }
    }

    pub fn eval(&self, x: &Tensor) -> Result<Tensor> {
        let shape = x.shape().to_vec();
        let (c, inner) = channel_planes(self.factor.len(), &shape, "dequantization")?;
        let v = to_i32s(x)?;
        let mut y = vec![0f32; v.len()];
        if inner > 0 {
            y.par_chunks_mut(inner)
                .zip(v.par_chunks(inner))
                .enumerate()
                .for_each(|(i, (o, s))| {
                    let f = self.factor[i % c];
                    let z = match self.zero.len() {
                        0 => 0,
                        1 => self.zero[0],
                        _ => self.zero[i % c],
                    };
                    o.iter_mut().zip(s).for_each(|(o, &s)| *o = (s - z) as f32 * f);
                });
        }
        Tensor::from_vec(shape, y)
    }
}

/// Values per channel from which an 8-bit input is requantized by table (`Requant::tabled`).
const TABLE_MIN_PER_CHANNEL: usize = 4096;

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// `Requant::eval` on 8-bit and i32 inputs (blocks of the tensor, the bound known a
        /// priori for 8 bits) against the integer reference element by element.
        #[test]
        fn requantize_eval_matches_the_reference(
            x in proptest::collection::vec(any::<u8>(), 0..700), f in 1e-3f32..4.0, x_zero in -128i32..256,
            zero in -128i32..128, f32_rounding in any::<bool>(), input in 0usize..3,
        ) {
            let mut r = Requant::new(vec![f], -128, 127).unwrap();
            (r.x_zero, r.zero) = (x_zero, zero);
            r.rounding = if f32_rounding { Rounding::F32 } else { Rounding::Exact };
            let t = match input {
                0 => Tensor::from_vec(vec![x.len()], x.clone()).unwrap(),
                1 => Tensor::from_vec(vec![x.len()], x.iter().map(|&v| v as i8).collect::<Vec<_>>()).unwrap(),
                _ => Tensor::from_vec(vec![x.len()], x.iter().map(|&v| (v as i32 - 100) * 1000).collect::<Vec<_>>()).unwrap(),
            };
            let xs: Vec<i32> = t.to_f32_vec().iter().map(|&v| v as i32).collect();
            let mut want = vec![0i8; xs.len()];
            requant_row_ref(&xs, -x_zero, &r.scale[0], r.row_out(), &mut want);
            let got = r.eval(&t).unwrap();
            prop_assert_eq!(got.as_slice::<i8>().unwrap(), &want[..]);
        }
    }

    proptest! {
        /// Large 8-bit tensors (requantized by table), one factor or one per channel,
        /// against the integer reference element by element.
        #[test]
        fn requantize_by_table_matches_the_reference(
            c in 1usize..4, plane in 4096usize..6000, f in prop::collection::vec(1e-3f32..4.0, 3),
            x_zero in -128i32..256, zero in -128i32..128, f32_rounding in any::<bool>(), signed in any::<bool>(),
            per_channel in any::<bool>(), seed in any::<u64>(),
        ) {
            let factors = if per_channel { f[..c].to_vec() } else { vec![f[0]] };
            let mut r = Requant::new(factors.clone(), 0, 255).unwrap();
            (r.x_zero, r.zero) = (x_zero, zero);
            r.rounding = if f32_rounding { Rounding::F32 } else { Rounding::Exact };
            let mut s = seed | 1;
            let bytes: Vec<u8> = (0..c * plane).map(|_| { s ^= s << 13; s ^= s >> 7; s ^= s << 17; (s >> 20) as u8 }).collect();
            let t = if signed {
                Tensor::from_vec(vec![1, c, plane], bytes.iter().map(|&v| v as i8).collect::<Vec<_>>()).unwrap()
            } else {
                Tensor::from_vec(vec![1, c, plane], bytes.clone()).unwrap()
            };
            let channels = if per_channel { c } else { 1 };
            prop_assert!(r.tabled(t.len(), channels));
            let xs: Vec<i32> = t.to_f32_vec().iter().map(|&v| v as i32).collect();
            let mut want = vec![0u8; xs.len()];
            for (ch, (row, w)) in xs.chunks(plane).zip(want.chunks_mut(plane)).enumerate() {
                let scale = &r.scale[if per_channel { ch } else { 0 }];
                requant_row_ref(row, -x_zero, scale, r.row_out(), w);
            }
            let got = r.eval(&t).unwrap();
            prop_assert_eq!(got.as_slice::<u8>().unwrap(), &want[..]);
        }
    }

    #[test]
    fn zero_points_in_requantization_and_dequantization() {
        // uint8 with zero point 100: (x - 7) * 0.5 rounded half to even, plus 100.
        let mut r = Requant::onnx(vec![0.5], DType::U8, 100).unwrap();
        r.x_zero = 7;
        let x = Tensor::from_vec(vec![4], vec![7i32, 10, 4, 1000]).unwrap();
        assert_eq!(r.eval(&x).unwrap().as_slice::<u8>().unwrap(), &[100, 102, 98, 255]);
        // Float input, ONNX QuantizeLinear: round(x / 0.1) + 100.
        r.divide_by = Some(vec![0.1]);
        let f = Tensor::from_vec(vec![3], vec![0.25f32, -0.35, 1e9]).unwrap();
        let want: Vec<u8> = [0.25f32, -0.35, 1e9]
            .iter()
            .map(|&v| ((v / 0.1f32).round_ties_even() + 100.0).clamp(0.0, 255.0) as u8)
            .collect();
        assert_eq!(r.eval(&f).unwrap().as_slice::<u8>().unwrap(), &want[..]);
        let d = Dequant {
            factor: vec![0.5],
            zero: vec![100],
        };
        let q = Tensor::from_vec(vec![2], vec![100u8, 104]).unwrap();
        assert_eq!(d.eval(&q).unwrap().as_slice::<f32>().unwrap(), &[0.0, 2.0]);
    }

    #[test]
    fn requant_saturates_and_picks_the_container() {
        let r = Requant::new(vec![0.5], -128, 127).unwrap();
        assert_eq!(r.out, DType::I8);
        let x = Tensor::from_vec(vec![4], vec![1000i32, -1000, 3, -3]).unwrap();
        assert_eq!(r.eval(&x).unwrap().as_slice::<i8>().unwrap(), &[127, -128, 2, -2]);
        assert_eq!(Requant::new(vec![1.0], 0, 255).unwrap().out, DType::U8);
        assert!(Requant::new(vec![1.0], -2048, 2047).is_err());
    }
}
