//! The integer engine's op dialect. Never parsed from ONNX: `int::lower` builds it from a
//! quantized graph, `onnx::import_quantized` from a model quantized by
//! another tool (QDQ or QOperator). Activations are i8 or u8 (the container of a
//! quantizer's range) with a zero point (0 for oxiquant's own models), weights i8 or uint8
//! centered on their zero point, accumulators and merge sums i32, every step exact integer
//! arithmetic up to the rounding of the requantization (`kernels::requant::Rounding`).
//!
//! Requantization multiplies by a fixed-point factor `mult * 2^-shift` where `mult` is the
//! 24-bit significand of the f32 factor of the fake-quantized graph, so the multiplier is
//! *exactly* that factor; the product is taken in i64 and rounded half to even. The
//! fake-quantized graph (`run(mode="fake")`) computes the same product in f64, which is also
//! exact, so both agree bit for bit as long as its f32 accumulators are exact (sums below
//! 2^24 in magnitude; see docs/integer-engine.md).

pub mod lower;

use crate::error::{Error, Result};
use crate::kernels::elementwise::binary;
use crate::kernels::pool::{padded_count, PoolKind};
use crate::kernels::qconv_direct;
use crate::kernels::qconv_u8s8::{self, ByteInput, ByteOperand, QuadImage, QuadWeights, RunPlan};
use crate::kernels::qgemm::{self, Kernel, PackedA};
use crate::kernels::requant::{
    div_round_even, quantize_one, quantize_row, requant_row, requant_row_ref, FixedPoint, FloatScale, QElem, Rounding,
    RowOut, SmallF32, EXACT_F32_BOUND,
};
#[cfg(target_arch = "x86_64")]
use crate::kernels::requant::{RowAvx2, SmallF32Avx2};
use crate::ops::nn::{Conv, Pool, PoolPlan};
use crate::ops::{input, Class, NodeFacts, Op};
use crate::tensor::{DType, Tensor, TensorData};
use rayon::prelude::*;
use std::sync::OnceLock;

/// The container for integers in `[lo, hi]`: i8, else u8, else none (wider than 8 bits).
pub fn container(lo: i32, hi: i32) -> Option<DType> {
    if lo >= i8::MIN as i32 && hi <= i8::MAX as i32 {
        Some(DType::I8)
    } else if lo >= 0 && hi <= u8::MAX as i32 {
        Some(DType::U8)
    } else {
        None
    }
}

/// `(channels, plane size)` for `c` factors over a tensor of `shape`: one factor covers the
/// whole tensor; several apply along axis 1 (`[N, c, ...]`), or it is an error naming `what`.
fn channel_planes(c: usize, shape: &[usize], what: &str) -> Result<(usize, usize)> {
    if c == 1 {
        return Ok((1, shape.iter().product::<usize>().max(1)));
    }
    if shape.len() < 2 || shape[1] != c {
        return Err(Error::shape(format!(
            "{what} has {c} per-channel factors but its input has shape {shape:?} (expected [N, {c}, ...])"
        )));
    }
    Ok((c, shape[2..].iter().product()))
}

/// Elements per parallel block of an element-wise op whose factors are all per-tensor (a
/// whole tensor as one block would run on one thread).
const BLOCK: usize = 1 << 14;

/// How an element-wise op with factor lists of `counts` lengths splits a tensor of `shape`
/// into blocks: `(block length, channels)`, block `i` lying in channel `i % channels`. The
/// planes of axis 1 when some list is per-channel (all such lists must match it), else
/// blocks of `BLOCK` elements in channel 0.
fn work_blocks(shape: &[usize], counts: &[usize], what: &str) -> Result<(usize, usize)> {
    let mut blocks = None;
    for &c in counts.iter().filter(|&&c| c > 1) {
        let (c, inner) = channel_planes(c, shape, what)?;
        blocks = Some((inner, c));
    }
    Ok(blocks.unwrap_or_else(|| (BLOCK.min(shape.iter().product::<usize>()), 1)))
}

/// Integer values of a tensor held in any integer container (or integer-valued floats).
fn to_i32s(t: &Tensor) -> Result<Vec<i32>> {
    Ok(match t.data() {
        TensorData::I8(v) => v.iter().map(|&x| x as i32).collect(),
        TensorData::U8(v) => v.iter().map(|&x| x as i32).collect(),
        TensorData::I32(v) => v.clone(),
        _ => {
            return Err(Error::shape(format!(
                "integer op got a {} tensor, expected i8, u8 or i32",
                t.dtype().name()
            )))
        }
    })
}

/// Runs `$body` with `$T` the element type of a quantized activation dtype.
macro_rules! with_qelem {
    ($dtype:expr, $T:ident => $body:expr) => {
        match $dtype {
            DType::I8 => {
                type $T = i8;
                $body
            }
            DType::U8 => {
                type $T = u8;
                $body
            }
            other => Err(Error::shape(format!(
                "quantized activations are i8 or u8, got {}",
                other.name()
            ))),
        }
    };
}

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

    fn row_out(&self) -> RowOut {
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

/// Quantized convolution: integer weights and bias, exact i32 accumulation over the input
/// minus its zero point (so that padding is the zero point, the input's real zero), and the
/// requantization of the Scaling node that followed the float Conv as its epilogue.
#[derive(Debug, Clone, PartialEq)]
pub struct QConv {
    pub conv: Conv,
    pub weight_shape: Vec<usize>,
    /// The weights minus their zero point (kept for export): i8 values, or uint8 ones
    /// centered on an arbitrary zero point, in [-255, 255].
    pub weight: Vec<i16>,
    /// Zero point of the input (0 for oxiquant's own models).
    pub x_zero: i32,
    /// One packed weight matrix per group (in the direct kernel's `k` order).
    packed: Vec<PackedA>,
    /// The same for the byte-product kernel, when the weights fit i8 (oxiquant's own
    /// models; uint8 weights centered on a zero point do not).
    quads: Option<Vec<QuadWeights>>,
    pub bias: Vec<i32>,
    pub requant: Requant,
    /// A bound on every `|acc + bias|` (from the weights' magnitudes and the widest centered
    /// 8-bit input): picks the fast requantization when it is exact.
    acc_bound: i64,
}

/// The widest `|x - x_zero|` of an 8-bit input (i8 or u8 container).
fn widest_input(x_zero: i32) -> i64 {
    let z = x_zero as i64;
    [255 - z, z + 128, z.abs()].into_iter().max().unwrap_or(255).max(0)
}

/// A bound on `|acc + bias|` over all rows: `max_r sum_k |w[r][k]| * widest + |bias[r]|`.
/// Fails when the products alone could leave the i32 accumulators (the bias is added in
/// i64 by the requantization).
fn accumulator_bound(w: &[i16], rows: usize, bias: &[i32], x_zero: i32, what: &str) -> Result<i64> {
    let k = w.len() / rows.max(1);
    let widest = widest_input(x_zero);
    let (mut products, mut bound) = (0i64, 0i64);
    for r in 0..rows {
        let s: i64 = w[r * k..(r + 1) * k].iter().map(|&v| (v as i64).abs()).sum();
        products = products.max(s * widest);
        bound = bound.max(s * widest + (bias[r] as i64).abs());
    }
    if products > i32::MAX as i64 {
        return Err(Error::InvalidArgument(format!(
            "quantized {what}: accumulators could reach {products}, past the i32 range"
        )));
    }
    Ok(bound)
}

/// Weights as i8 (oxiquant's own models, whose weights are always i8; the QOperator export).
fn weights_as_i8(w: &[i16], what: &str) -> Result<Vec<i8>> {
    w.iter()
        .map(|&v| {
            i8::try_from(v).map_err(|_| {
                Error::InvalidArgument(format!(
                    "{what}: centered weight {v} does not fit int8 (a model loaded with uint8 weights)"
                ))
            })
        })
        .collect()
}

impl QConv {
    /// `weight` holds the weights minus their zero point; `x_zero` is the input's zero point.
    pub fn new(
        conv: Conv,
        weight: &[i16],
        weight_shape: Vec<usize>,
        bias: Vec<i32>,
        requant: Requant,
        x_zero: i32,
    ) -> Result<QConv> {
        let m = *weight_shape.first().unwrap_or(&0);
        let g = conv.group;
        if weight_shape.len() < 3 || m == 0 || !m.is_multiple_of(g) || bias.len() != m {
            return Err(Error::shape(format!(
                "quantized Conv: weight {weight_shape:?} with group {g} and {} bias values",
                bias.len()
            )));
        }
        let k: usize = weight_shape[1..].iter().product();
        if weight.len() != m * k {
            return Err(Error::shape(format!(
                "quantized Conv: {} weights for shape {weight_shape:?}",
                weight.len()
            )));
        }
        let (kh, kw) = match weight_shape[2..] {
            [kw] => (1, kw),
            [kh, kw] => (kh, kw),
            _ => {
                return Err(Error::shape(format!(
                    "quantized Conv: weight {weight_shape:?} is not 1-D or 2-D"
                )))
            }
        };
        let (mg, cg) = (m / g, weight_shape[1]);
        let packed = (0..g)
            .map(|gi| qconv_direct::pack_weights(&weight[gi * mg * k..(gi + 1) * mg * k], mg, cg, kh, kw))
            .collect();
        let quads = weights_as_i8(weight, "").ok().map(|w8| {
            (0..g)
                .map(|gi| QuadWeights::new(&w8[gi * mg * k..(gi + 1) * mg * k], mg, cg, kh, kw))
                .collect()
        });
        let acc_bound = accumulator_bound(weight, m, &bias, x_zero, "Conv")?;
        Ok(QConv {
            conv,
            weight_shape,
            weight: weight.to_vec(),
            x_zero,
            packed,
            quads,
            bias,
            requant,
            acc_bound,
        })
    }

    /// The weights as i8, for the QOperator export of oxiquant's own models.
    pub fn weight_i8(&self) -> Result<Vec<i8>> {
        weights_as_i8(&self.weight, "quantized Conv")
    }

    pub fn eval(&self, x: &Tensor) -> Result<Tensor> {
        self.eval_with(x, Kernel::detect())
    }

    /// `eval` with a given kernel family (one of `Kernel::available()`: benchmarks and tests
    /// compare them).
    pub fn eval_with(&self, x: &Tensor, kernel: Kernel) -> Result<Tensor> {
        let s = self.conv.geometry(x.shape(), &self.weight_shape)?;
        let mut shape = vec![s.n, s.m];
        if x.rank() == 3 {
            shape.push(s.out[1]);
        } else {
            shape.extend_from_slice(&s.out);
        }
        with_qelem!(x.dtype(), T => {
            let xv = x.as_slice::<T>()?;
            with_qelem!(self.requant.out, O => {
                let y = self.run::<T, O>(xv, &s, kernel);
                Tensor::from_vec(shape, y)
            })
        })
    }

    /// The byte-product kernel's plan for group `g` of one image, given how its input becomes
    /// bytes (measured by the caller), when it is exact on this input (`qconv_u8s8`): its
    /// weights, the input's bytes, where the runs end, and the biases minus the byte offset's
    /// contribution.
    fn byte_plan(
        &self,
        g: usize,
        input: Option<ByteInput>,
        kernel: Kernel,
    ) -> Option<(&QuadWeights, ByteInput, &RunPlan, Vec<i32>)> {
        let q = &self.quads.as_ref()?[g];
        let input = input?;
        let run = q.plan(kernel, input.amax)?;
        let c0 = g * q.m;
        let shift = input.shift() as i64;
        let bias = q
            .row_sums
            .iter()
            .zip(&self.bias[c0..c0 + q.m])
            .map(|(&sum, &b)| i32::try_from(b as i64 - shift * sum as i64).ok())
            .collect::<Option<Vec<i32>>>()?;
        Some((q, input, run, bias))
    }

    fn run<T: QElem + Ord, O: QElem>(&self, x: &[T], s: &crate::kernels::conv::ConvShape, kernel: Kernel) -> Vec<O> {
        let (cg, mg) = (s.c / s.group, s.m / s.group);
        let npix = s.out[0] * s.out[1];
        let img_in = s.c * s.h * s.w;
        let img_out = s.m * npix;
        if img_out == 0 {
            return vec![O::from_i32(0); s.n * img_out];
        }
        // 1x1 convolutions are plain matrix products: the packed-panel product reads its
        // operand contiguously, where the direct kernel would stride over every channel
        // plane for each tile (measured 0.72x of the f32 kernel on ResNet-50's 1x1 layers).
        // Strided ones too, over their input's subsampled pixels (measured 0.75x when
        // ResNet-50's stride-2 projections took the direct kernel).
        let pointwise = s.win.kernel == [1, 1] && s.win.pads == [0; 4];
        let strided = s.win.strides != [1, 1];
        let zero = self.x_zero as i16;
        let one_image = |(img, out): (usize, &mut [std::mem::MaybeUninit<O>]), parallel: bool| {
            let mut pairs = qconv_direct::PairImage::new();
            let mut quads = QuadImage::new();
            let mut panels: Vec<i16> = Vec::new();
            let mut byte_panels: Vec<u8> = Vec::new();
            let mut picked: Vec<T> = Vec::new();
            for g in 0..s.group {
                let mut xg = &x[img * img_in + g * cg * s.h * s.w..img * img_in + (g + 1) * cg * s.h * s.w];
                if pointwise && strided {
                    subsample(xg, cg, s, &mut picked);
                    xg = &picked;
                }
                let c0 = g * mg;
                // Every branch below initializes all of it: `conv_requant` writes each
                // output (or zeroes first), the others start from `zeroed`.
                let dst = &mut out[c0 * npix..(c0 + mg) * npix];
                let epilogue = |row: usize, acc: &[i32], dst: &mut [O]| {
                    self.requant
                        .row(c0 + row, acc, self.bias[c0 + row], self.acc_bound, dst)
                };
                // A 1x1 input is measured while it is packed; the other kernels measure
                // theirs first (`quads.fill` needs the offset).
                let input = match (&self.quads, pointwise) {
                    (None, _) => None,
                    (Some(_), true) => qconv_u8s8::pack_panels(xg, cg, npix, self.x_zero, &mut byte_panels, parallel),
                    (Some(_), false) => ByteInput::measure(xg, self.x_zero),
                };
                if let Some((q, input, run, bias)) = self.byte_plan(g, input, kernel) {
                    let operand = if pointwise {
                        ByteOperand::Panels {
                            buf: &byte_panels,
                            npix,
                        }
                    } else {
                        quads.fill(xg, cg, input, s);
                        ByteOperand::Image { img: &quads, s }
                    };
                    if self.acc_bound < self.requant.rounding.fast_bound() {
                        let rq = &self.requant;
                        let factor = (c0..c0 + mg).map(|c| rq.factor[if rq.factor.len() == 1 { 0 } else { c }]);
                        let rows = qconv_u8s8::RowsRequant {
                            bias,
                            factor: factor.collect(),
                            out: rq.row_out(),
                            small_sums: self.acc_bound < EXACT_F32_BOUND,
                        };
                        qconv_u8s8::conv_requant(q, &operand, run, dst, parallel, kernel, &rows);
                    } else {
                        let dst = qconv_u8s8::zeroed(dst);
                        qconv_u8s8::conv(q, &operand, run, dst, parallel, kernel, |row, acc, dst| {
                            self.requant.row(c0 + row, acc, bias[row], self.acc_bound, dst)
                        });
                    }
                } else if pointwise {
                    qgemm::pack_b_rows(xg, cg, npix, zero, &mut panels, parallel);
                    qgemm::qgemm(
                        kernel,
                        &self.packed[g],
                        &panels,
                        npix,
                        qconv_u8s8::zeroed(dst),
                        parallel,
                        |row, _, acc, d| epilogue(row, acc, d),
                    );
                } else {
                    pairs.fill(xg, cg, zero, s);
                    let dst = qconv_u8s8::zeroed(dst);
                    qconv_direct::conv(&self.packed[g], &pairs, s, dst, parallel, kernel, epilogue);
                }
            }
        };
        // The groups' outputs tile the image's (`geometry` checks `m % group == 0`).
        assert_eq!(mg * s.group, s.m, "qconv: groups do not tile the output channels");
        // One image: its kernels split the work; several: one image per task.
        let parallel_in_image = s.n == 1;
        // SAFETY: `one_image` initializes every element of its chunk (the groups' outputs
        // tile it, and each group's branch initializes all of its outputs).
        unsafe { filled_chunks(s.n * img_out, img_out, |i, out| one_image((i, out), parallel_in_image)) }
    }
}

/// A vector of `len` elements made by `fill(i, chunk)` on its chunks of `chunk`, in
/// parallel, with nothing written first (a kernel that writes every output then writes it
/// once).
///
/// Why: `vec![0; len]` zeroes the whole output on the calling thread before the parallel
/// loop starts (a memory allocator reusing freed memory must clear it): ResNet-50's
/// outputs at batch 32 are about 290 MB per run, which were written twice, once by one
/// thread.
///
/// # Safety
/// `fill` writes every element of the chunk it receives.
unsafe fn filled_chunks<O: QElem>(
    len: usize,
    chunk: usize,
    fill: impl Fn(usize, &mut [std::mem::MaybeUninit<O>]) + Sync,
) -> Vec<O> {
    let mut y: Vec<O> = Vec::with_capacity(len);
    y.spare_capacity_mut()[..len]
        .par_chunks_mut(chunk.max(1))
        .enumerate()
        .for_each(|(i, part)| {
            if cfg!(debug_assertions) {
                // A pattern no test expects everywhere: an output `fill` misses shows.
                part.fill(std::mem::MaybeUninit::new(O::from_i32(0x5a)));
            }
            fill(i, part)
        });
    // SAFETY: `fill` initialized all `len` elements (the caller's contract; a panic in it
    // propagates before this line, leaving the vector empty).
    unsafe { y.set_len(len) };
    y
}

/// The pixels a strided 1x1 convolution reads, `[cg][out_h][out_w]`, into `dst`.
fn subsample<T: Copy>(x: &[T], cg: usize, s: &crate::kernels::conv::ConvShape, dst: &mut Vec<T>) {
    let ([oh, ow], [sh, sw]) = (s.out, s.win.strides);
    dst.clear();
    for plane in x.chunks_exact(s.h * s.w).take(cg) {
        for oy in 0..oh {
            let row = &plane[oy * sh * s.w..];
            dst.extend((0..ow).map(|ox| row[ox * sw]));
        }
    }
}

/// Quantized Gemm / MatMul with a constant weight: `Y[r][m] = requant(sum_k X[r][k] W[m][k] + b[m])`
/// over the rows `r` of the input's leading dimensions.
#[derive(Debug, Clone, PartialEq)]
pub struct QGemm {
    pub k: usize,
    pub m: usize,
    /// The weight `[m][k]` minus its zero point (kept for export).
    pub weight: Vec<i16>,
    /// Zero point of the input (0 for oxiquant's own models).
    pub x_zero: i32,
    /// It came from a MatMul (no bias; any input rank) rather than a Gemm.
    pub matmul: bool,
    /// The weight as the packed right operand `[k][m]`.
    packed: Vec<i16>,
    pub bias: Vec<i32>,
    pub requant: Requant,
    acc_bound: i64,
}

impl QGemm {
    /// `weight` is `[m][k]` (output features by inputs) minus its zero point; `x_zero` is
    /// the input's zero point.
    pub fn new(weight: &[i16], m: usize, k: usize, bias: Vec<i32>, requant: Requant, x_zero: i32) -> Result<QGemm> {
        if weight.len() != m * k || bias.len() != m {
            return Err(Error::shape(format!(
                "quantized Gemm: {} weights and {} bias values for {m} x {k}",
                weight.len(),
                bias.len()
            )));
        }
        let mut packed = Vec::new();
        qgemm::pack_b_transposed(weight, m, k, &mut packed);
        let acc_bound = accumulator_bound(weight, m, &bias, x_zero, "Gemm")?;
        Ok(QGemm {
            k,
            m,
            weight: weight.to_vec(),
            x_zero,
            matmul: false,
            packed,
            bias,
            requant,
            acc_bound,
        })
    }

    /// The weights as i8, for the QOperator export of oxiquant's own models.
    pub fn weight_i8(&self) -> Result<Vec<i8>> {
        weights_as_i8(&self.weight, "quantized Gemm")
    }

    pub fn eval(&self, x: &Tensor) -> Result<Tensor> {
        let xs = x.shape();
        if xs.is_empty() || *xs.last().unwrap_or(&0) != self.k {
            return Err(Error::shape(format!(
                "quantized Gemm expects an input [..., {}], got {xs:?}",
                self.k
            )));
        }
        let rows = x.len() / self.k.max(1);
        let mut shape = xs.to_vec();
        if let Some(last) = shape.last_mut() {
            *last = self.m;
        }
        let kernel = Kernel::detect();
        with_qelem!(x.dtype(), T => {
            let a = PackedA::centered(x.as_slice::<T>()?, rows, self.k, self.x_zero as i16);
            with_qelem!(self.requant.out, O => {
                let mut y = vec![O::from_i32(0); rows * self.m];
                // Parallel over row blocks and weight panels once the product is worth a
                // task split (ResNet-50's classifier at batch 1, 2M products, ran on one
                // thread when this looked at the rows alone).
                let parallel = rows > qgemm::MR || rows * self.m * self.k >= 1 << 18;
                qgemm::qgemm(kernel, &a, &self.packed, self.m, &mut y, parallel, |_, c0, acc, dst| {
                    // Columns are output features: one channel (factor, bias) per element.
                    for (j, (a, d)) in acc.iter().zip(dst.chunks_mut(1)).enumerate() {
                        let c = c0 + j;
                        self.requant.row(c, std::slice::from_ref(a), self.bias[c], self.acc_bound, d);
                    }
                });
                Tensor::from_vec(shape.clone(), y)
            })
        })
    }
}

/// Integer pooling: max, or average with the mean rounded half to even (the Round node the
/// fake-quantized graph puts after it). Undilated max pooling runs by rows
/// (`max_pool_rows`), the rest through the reference loop.
fn qpool(pool: &Pool, x: &Tensor) -> Result<Tensor> {
    let p = pool.plan(x.shape())?;
    if p.kind == PoolKind::Max && p.win.dilations == [1, 1] {
        max_pool_rows(&p, x, Kernel::detect())
    } else {
        qpool_ref(&p, x)
    }
}

/// Max pooling without dilation, one output row at a time: the element-wise max of the
/// window's input rows, then of each run of `kernel[1]` columns of that row, both over
/// contiguous slices (vectorized), then every `strides[1]`-th of those. Windows cut by the
/// padding take the max of what is left (padding never contributes); none left gives 0, as
/// in `qpool_ref`.
fn max_pool_rows(p: &PoolPlan, x: &Tensor, kernel: Kernel) -> Result<Tensor> {
    with_qelem!(x.dtype(), T => {
        let xv = x.as_slice::<T>()?;
        let plane = p.h * p.w;
        let plane_out = p.out[0] * p.out[1];
        let mut y = vec![T::from_i32(0); p.planes * plane_out];
        if plane_out > 0 {
            let scratch = || (vec![T::from_i32(0); p.w], vec![T::from_i32(0); p.w]);
            y.par_chunks_mut(plane_out).enumerate().for_each_init(scratch, |(rows, runs), (pi, o)| {
                let x = &xv[pi * plane..(pi + 1) * plane];
                match kernel {
                    Kernel::Reference => max_pool_plane(x, p, o, rows, runs),
                    // SAFETY: the SIMD kinds are only constructed after AVX2 was detected.
                    #[cfg(target_arch = "x86_64")]
                    Kernel::Avx2 | Kernel::AvxVnni | Kernel::Avx512Vnni => unsafe {
                        max_pool_plane_avx2(x, p, o, rows, runs)
                    },
                }
            });
        }
        Tensor::from_vec(p.shape.clone(), y)
    })
}

/// `max_pool_plane` compiled for AVX2 (byte max in 32 lanes, `vpmaxsb` for i8).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn max_pool_plane_avx2<T: QElem + Ord>(x: &[T], p: &PoolPlan, o: &mut [T], rows: &mut [T], runs: &mut [T]) {
    max_pool_plane(x, p, o, rows, runs)
}

/// One plane of `max_pool_rows`: `x` is `h x w`, `o` is `out[0] x out[1]`, `rows` and
/// `runs` hold `w` values each.
#[inline(always)]
fn max_pool_plane<T: QElem + Ord>(x: &[T], p: &PoolPlan, o: &mut [T], rows: &mut [T], runs: &mut [T]) {
    let (h, w, win) = (p.h, p.w, &p.win);
    let [kh, kw] = win.kernel;
    let [sh, sw] = win.strides;
    let (top, left) = (win.pads[0], win.pads[1]);
    // Outputs `first..last` of a row have their whole window inside the row.
    let first = left.div_ceil(sw).min(p.out[1]);
    let last = if w + left >= kw {
        ((w + left - kw) / sw + 1).min(p.out[1])
    } else {
        0
    }
    .max(first);
    // Every window start `s` of the row: `runs[s] = max(rows[s..s + kw])`.
    let starts = (w + 1).saturating_sub(kw);
    let zero = T::from_i32(0);
    if w == 0 {
        // Every window is padding only.
        o.fill(zero);
        return;
    }
    for (oy, o) in o.chunks_exact_mut(p.out[1]).enumerate() {
        let y0 = (oy * sh) as isize - top as isize;
        let (lo, hi) = (y0.max(0) as usize, (y0 + kh as isize).clamp(0, h as isize) as usize);
        if lo >= hi {
            o.fill(zero);
            continue;
        }
        rows.copy_from_slice(&x[lo * w..(lo + 1) * w]);
        for r in x[(lo + 1) * w..hi * w].chunks_exact(w) {
            rows.iter_mut().zip(r).for_each(|(m, &v)| *m = (*m).max(v));
        }
        if last > first {
            let runs = &mut runs[..starts];
            runs.copy_from_slice(&rows[..starts]);
            for j in 1..kw {
                runs.iter_mut().zip(&rows[j..]).for_each(|(m, &v)| *m = (*m).max(v));
            }
            let picks = runs[first * sw - left..].iter().step_by(sw);
            o[first..last].iter_mut().zip(picks).for_each(|(d, &v)| *d = v);
        }
        // Windows cut by the left or right edge.
        for ox in (0..first).chain(last..p.out[1]) {
            let x0 = (ox * sw) as isize - left as isize;
            let (a, b) = (x0.max(0) as usize, (x0 + kw as isize).clamp(0, w as isize) as usize);
            o[ox] = rows.get(a..b).and_then(|s| s.iter().copied().max()).unwrap_or(zero);
        }
    }
}

/// Reference integer pooling: every window element by element, with bounds checks.
fn qpool_ref(p: &PoolPlan, x: &Tensor) -> Result<Tensor> {
    with_qelem!(x.dtype(), T => {
        let xv = x.as_slice::<T>()?;
        let plane_out = p.out[0] * p.out[1];
        let mut y = vec![T::from_i32(0); p.planes * plane_out];
        let win = p.win;
        y.par_chunks_mut(plane_out.max(1)).enumerate().for_each(|(pi, o)| {
            let plane = &xv[pi * p.h * p.w..(pi + 1) * p.h * p.w];
            for oy in 0..p.out[0] {
                let y0 = (oy * win.strides[0]) as isize - win.pads[0] as isize;
                for ox in 0..p.out[1] {
                    let x0 = (ox * win.strides[1]) as isize - win.pads[1] as isize;
                    let (mut mx, mut sum, mut count) = (i32::MIN, 0i64, 0i64);
                    for i in 0..win.kernel[0] {
                        let iy = y0 + (i * win.dilations[0]) as isize;
                        if iy < 0 || iy >= p.h as isize {
                            continue;
                        }
                        for j in 0..win.kernel[1] {
                            let ix = x0 + (j * win.dilations[1]) as isize;
                            if ix < 0 || ix >= p.w as isize {
                                continue;
                            }
                            let v = plane[iy as usize * p.w + ix as usize].to_i32();
                            mx = mx.max(v);
                            sum += v as i64;
                            count += 1;
                        }
                    }
                    let v = match p.kind {
                        PoolKind::Max => if count == 0 { 0 } else { mx },
                        PoolKind::Avg { count_include_pad } => {
                            let n = if count_include_pad { padded_count(&win, p.h, p.w, y0, x0) as i64 } else { count };
                            div_round_even(sum, n.max(1)) as i32
                        }
                    };
                    o[oy * p.out[1] + ox] = T::from_i32(v);
                }
            }
        });
        Tensor::from_vec(p.shape.clone(), y)
    })
}

fn qglobal_pool(max: bool, x: &Tensor) -> Result<Tensor> {
    let xs = x.shape();
    if xs.len() < 3 {
        return Err(Error::shape(format!(
            "global pooling needs an input [N, C, spatial...], got {xs:?}"
        )));
    }
    let planes = xs[0] * xs[1];
    let plane: usize = xs[2..].iter().product();
    let mut shape = vec![xs[0], xs[1]];
    shape.extend(std::iter::repeat_n(1, xs.len() - 2));
    with_qelem!(x.dtype(), T => {
        let xv = x.as_slice::<T>()?;
        let y: Vec<T> = (0..planes)
            .into_par_iter()
            .map(|p| {
                let s = &xv[p * plane..(p + 1) * plane];
                let v = if max {
                    s.iter().map(|v| v.to_i32()).max().unwrap_or(0)
                } else {
                    div_round_even(s.iter().map(|v| v.to_i32() as i64).sum(), plane.max(1) as i64) as i32
                };
                T::from_i32(v)
            })
            .collect();
        Tensor::from_vec(shape.clone(), y)
    })
}

/// The range of an 8-bit container.
fn bounds_of(dt: DType) -> Result<(i32, i32)> {
    match dt {
        DType::U8 => Ok((0, 255)),
        DType::I8 => Ok((-128, 127)),
        other => Err(Error::shape(format!(
            "quantized tensors are uint8 or int8, got {}",
            other.name()
        ))),
    }
}

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

/// One input of a quantized Add: the ratio of its scale to the output's, and its zero point.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AddInput {
    pub ratio: f32,
    pub zero: i32,
}

/// Add of two quantized tensors with their own scales and zero points (onnxruntime's
/// QLinearAdd, and DequantizeLinear x2 -> Add -> QuantizeLinear), in f32 the way
/// onnxruntime's AVX2 kernel computes it, so that the integers match it:
/// `ra = sa / sy`, `rb = sb / sy`, `fixed = zy - (ra * za + rb * zb)`,
/// `y = clamp(round_half_even(fma(a, ra, fma(b, rb, fixed))), lo, hi)` (`fma`: one rounding),
/// and for a one-element `b`: `fma(a, ra, fixed + b * rb)`. Broadcasts.
#[derive(Debug, Clone, PartialEq)]
pub struct QAdd {
    pub a: AddInput,
    pub b: AddInput,
    pub zero: i32,
    pub lo: i32,
    pub hi: i32,
    pub out: DType,
}

impl QAdd {
    fn fixed(&self) -> f32 {
        let (a, b) = (self.a, self.b);
        self.zero as f32 - (a.ratio * a.zero as f32 + b.ratio * b.zero as f32)
    }

    /// One output value (the reference arithmetic).
    #[inline]
    pub fn apply(&self, fixed: f32, a: i32, b: i32) -> i32 {
        let v = (a as f32).mul_add(self.a.ratio, (b as f32).mul_add(self.b.ratio, fixed));
        (v.round_ties_even() as i32).clamp(self.lo, self.hi)
    }

    pub fn eval(&self, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        let (av, bv) = (to_i32s(a)?, to_i32s(b)?);
        let fixed = self.fixed();
        let (y, shape) = if bv.len() == 1 && a.shape().len() >= b.shape().len() {
            let fixed_b = fixed + bv[0] as f32 * self.b.ratio;
            let y: Vec<i32> = av
                .par_iter()
                .map(|&p| ((p as f32).mul_add(self.a.ratio, fixed_b).round_ties_even() as i32).clamp(self.lo, self.hi))
                .collect();
            (y, a.shape().to_vec())
        } else {
            binary(&av, a.shape(), &bv, b.shape(), |p, q| self.apply(fixed, p, q))?
        };
        with_qelem!(self.out, O => Tensor::from_vec(shape.clone(), y.iter().map(|&v| O::from_i32(v)).collect::<Vec<O>>()))
    }
}

/// Average pooling of a quantized tensor into other parameters (QLinearAveragePool,
/// QLinearGlobalAveragePool, DequantizeLinear -> AveragePool -> QuantizeLinear), in the
/// arithmetic of onnxruntime's kernels so that the integers match them: global pooling sums
/// `x - x_zero` exactly and requantizes the sum by `x_scale / (y_scale * count)` (f32
/// product, rounded half to even); windowed pooling sums the dequantized values
/// `x_scale * (x - x_zero)` in f32 in window order, divides by the count and rounds
/// `mean / y_scale + y_zero` half to even.
#[derive(Debug, Clone, PartialEq)]
pub struct QAvgPool {
    /// `None`: global pooling.
    pub pool: Option<Pool>,
    pub x_scale: f32,
    pub x_zero: i32,
    pub y_scale: f32,
    pub y_zero: i32,
    pub out: DType,
}

impl QAvgPool {
    /// Global pooling: the exact sum of `x - x_zero` over `count` values.
    fn quantize_sum(&self, sum: i64, count: usize) -> i32 {
        let (lo, hi) = bounds_of(self.out).unwrap_or((-128, 127));
        let f = self.x_scale / (self.y_scale * count as f32);
        let r = ((sum as f32) * f).round_ties_even();
        ((r as i32).saturating_add(self.y_zero)).clamp(lo, hi)
    }

    /// Windowed pooling: the f32 sum of the dequantized values over `count` values.
    fn quantize_real_sum(&self, sum: f32, count: usize) -> i32 {
        let (lo, hi) = bounds_of(self.out).unwrap_or((-128, 127));
        let mean = sum / count.max(1) as f32;
        let r = (mean / self.y_scale + self.y_zero as f32).round_ties_even();
        (r as i32).clamp(lo, hi)
    }

    pub fn eval(&self, x: &Tensor) -> Result<Tensor> {
        let xv = to_i32s(x)?;
        let zx = self.x_zero;
        let (shape, y): (Vec<usize>, Vec<i32>) = match &self.pool {
            None => {
                let xs = x.shape();
                if xs.len() < 3 {
                    return Err(Error::shape(format!(
                        "global pooling needs an input [N, C, spatial...], got {xs:?}"
                    )));
                }
                let plane: usize = xs[2..].iter().product();
                let mut shape = vec![xs[0], xs[1]];
                shape.extend(std::iter::repeat_n(1, xs.len() - 2));
                let y = (0..xs[0] * xs[1])
                    .into_par_iter()
                    .map(|p| {
                        let sum: i64 = xv[p * plane..(p + 1) * plane].iter().map(|&v| (v - zx) as i64).sum();
                        self.quantize_sum(sum, plane)
                    })
                    .collect();
                (shape, y)
            }
            Some(pool) => {
                let p = pool.plan(x.shape())?;
                let win = p.win;
                let plane_out = p.out[0] * p.out[1];
                let mut y = vec![0i32; p.planes * plane_out];
                y.par_chunks_mut(plane_out.max(1)).enumerate().for_each(|(pi, o)| {
                    let plane = &xv[pi * p.h * p.w..(pi + 1) * p.h * p.w];
                    for oy in 0..p.out[0] {
                        let y0 = (oy * win.strides[0]) as isize - win.pads[0] as isize;
                        for ox in 0..p.out[1] {
                            let x0 = (ox * win.strides[1]) as isize - win.pads[1] as isize;
                            let (mut sum, mut count) = (0f32, 0usize);
                            for i in 0..win.kernel[0] {
                                let iy = y0 + (i * win.dilations[0]) as isize;
                                if iy < 0 || iy >= p.h as isize {
                                    continue;
                                }
                                for j in 0..win.kernel[1] {
                                    let ix = x0 + (j * win.dilations[1]) as isize;
                                    if ix >= 0 && ix < p.w as isize {
                                        let v = plane[iy as usize * p.w + ix as usize] - zx;
                                        sum += self.x_scale * v as f32;
                                        count += 1;
                                    }
                                }
                            }
                            // Padding counts as the real zero (the zero point) when included.
                            if pool.count_include_pad {
                                count = padded_count(&win, p.h, p.w, y0, x0);
                            }
                            o[oy * p.out[1] + ox] = self.quantize_real_sum(sum, count);
                        }
                    }
                });
                (p.shape.clone(), y)
            }
        };
        with_qelem!(self.out, O => Tensor::from_vec(shape.clone(), y.iter().map(|&v| O::from_i32(v)).collect::<Vec<O>>()))
    }
}

/// A `Requantize` of an 8-bit input folded into the `AddRequant` that was its only reader
/// (the rebalanced shortcut of a residual block): applied element by element in the add
/// loop, by table, with no intermediate tensor. Its names are kept so that exports restore
/// the node.
#[derive(Debug, Clone, PartialEq)]
pub struct FoldedRequant {
    /// Name of the folded node.
    pub node: String,
    /// The value it wrote, which the add read (no longer computed).
    pub output: String,
    pub requant: Requant,
    /// The container of its input (the value the add now reads).
    pub input: DType,
    /// `requant.lut(input)` per channel, each entry minus `base` as a byte (the outputs are
    /// 8-bit, so a channel's table is four cache lines).
    lut: Vec<u8>,
    /// The minimum of the requantization's container, added back to every entry.
    base: i32,
    /// Per channel, the same requantization in f32 lanes, when it equals the table on every
    /// input (`SmallF32::verified`; `None` when any channel differs).
    small: Option<Vec<SmallF32>>,
}

/// Entries of a channel's table.
const LUT_LEN: usize = 256;

/// One channel's table of a folded requantization: `base + bytes[x - min(input)]`.
#[derive(Clone, Copy)]
struct ByteLut<'a> {
    bytes: &'a [u8; LUT_LEN],
    base: i32,
}

impl FoldedRequant {
    pub fn new(node: String, output: String, requant: Requant, input: DType) -> Result<FoldedRequant> {
        let base = bounds_of(requant.out)?.0;
        let exact = requant.lut(input)?;
        let (in_lo, in_hi) = bounds_of(input)?;
        let small = (0..requant.scale.len())
            .map(|c| {
                let table = &exact[c * LUT_LEN..(c + 1) * LUT_LEN];
                let f = requant.factor[if requant.factor.len() == 1 { 0 } else { c }];
                SmallF32::verified(-requant.x_zero, f, requant.row_out(), in_lo..=in_hi, |x| {
                    table[(x - in_lo) as usize]
                })
            })
            .collect();
        let lut: Vec<u8> = exact.iter().map(|&v| (v - base) as u8).collect();
        Ok(FoldedRequant {
            node,
            output,
            requant,
            input,
            lut,
            base,
            small,
        })
    }

    /// The f32 form of channel `c`, if verified.
    fn small(&self, c: usize) -> Option<&SmallF32> {
        let v = self.small.as_ref()?;
        v.get(if v.len() == 1 { 0 } else { c })
    }

    /// The table of channel `c` (a fixed size: a byte index needs no bounds check).
    fn table(&self, c: usize) -> Option<ByteLut<'_>> {
        let c = if self.requant.scale.len() == 1 { 0 } else { c };
        let bytes = self.lut.get(c * 256..c * 256 + LUT_LEN)?.try_into().ok()?;
        Some(ByteLut { bytes, base: self.base })
    }
}

/// The integer ops, one `Op` type (the dialect is closed: only the lowering builds them).
#[derive(Debug, Clone, PartialEq)]
pub enum IntOp {
    /// Float or integer in, i8/u8 out.
    Requant(Requant),
    /// Integer in, f32 out.
    Dequant(Dequant),
    Conv(Box<QConv>),
    Gemm(Box<QGemm>),
    /// Relu / Clip on integers: type preserving.
    Clip {
        lo: i32,
        hi: i32,
    },
    Pool(Pool),
    GlobalPool {
        max: bool,
    },
    /// Add / Sub / Sum of integers on a shared scale: i32 out.
    Add {
        sub: bool,
    },
    /// Add / Sub of two integer tensors followed by the quantizer after the merge.
    AddRequant {
        sub: bool,
        requant: Requant,
        /// Requantizations of the inputs folded into the add (see `FoldedRequant`).
        folded: [Option<Box<FoldedRequant>>; 2],
        /// The f32 form of the add, found at the first run (`SmallSums`).
        small: SmallSums,
    },
    /// A float op applied to integer values (converted exactly to f32), its result rounded
    /// half to even into the container `out` (the inputs', or i32 when they differ). Used for
    /// the ops the fake-quantized graph runs in float on integer values (e.g. LeakyRelu
    /// followed by Round).
    Float {
        op: Box<dyn Op>,
        out: DType,
    },
    /// Identity on integers (a Round/Floor after an op that already produces integers).
    Pass,
    /// An element-wise function of an 8-bit tensor by table lookup (requantization into
    /// other parameters, or a float op between DequantizeLinear and QuantizeLinear).
    Table(Box<Table>),
    /// Add of two quantized tensors with their own scales and zero points.
    QAdd(QAdd),
    /// Average pooling with zero points and a requantization.
    AvgPool(Box<QAvgPool>),
}

impl IntOp {
    pub fn name(&self) -> &'static str {
        match self {
            IntOp::Requant(_) => "Requantize",
            IntOp::Dequant(_) => "Dequantize",
            IntOp::Conv(_) => "QConv",
            IntOp::Gemm(_) => "QGemm",
            IntOp::Clip { .. } => "QClip",
            IntOp::Pool(p) if p.max => "QMaxPool",
            IntOp::Pool(_) => "QAveragePool",
            IntOp::GlobalPool { max: true } => "QGlobalMaxPool",
            IntOp::GlobalPool { max: false } => "QGlobalAveragePool",
            IntOp::Add { sub: false } => "QAdd",
            IntOp::Add { sub: true } => "QSub",
            IntOp::AddRequant { sub: false, .. } => "QAddRequantize",
            IntOp::AddRequant { sub: true, .. } => "QSubRequantize",
            IntOp::Float { .. } => "FloatOnIntegers",
            IntOp::Pass => "Pass",
            IntOp::Table(_) => "QLookupTable",
            IntOp::QAdd(_) => "QAddZeroPoints",
            IntOp::AvgPool(p) if p.pool.is_none() => "QGlobalAveragePoolRequantize",
            IntOp::AvgPool(_) => "QAveragePoolRequantize",
        }
    }

    pub fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0, "X")?;
        let y = match self {
            IntOp::Requant(r) => r.eval(x)?,
            IntOp::Dequant(d) => d.eval(x)?,
            IntOp::Conv(c) => c.eval(x)?,
            IntOp::Gemm(g) => g.eval(x)?,
            IntOp::Clip { lo, hi } => clip(x, *lo, *hi)?,
            IntOp::Pool(p) => qpool(p, x)?,
            IntOp::GlobalPool { max } => qglobal_pool(*max, x)?,
            IntOp::AddRequant {
                sub,
                requant,
                folded,
                small,
            } => {
                let b = input(inputs, 1, "B")?;
                let fits = |t: &Tensor, f: &Option<Box<FoldedRequant>>| f.as_ref().is_none_or(|f| f.input == t.dtype());
                if inputs.len() == 2 && x.shape() == b.shape() && fits(x, &folded[0]) && fits(b, &folded[1]) {
                    let pre = [folded[0].as_deref(), folded[1].as_deref()];
                    with_qelem!(x.dtype(), A => with_qelem!(b.dtype(), B => with_qelem!(requant.out, O => {
                        add_requant::<A, B, O>(x, b, *sub, requant, pre, small, Kernel::detect())
                    })))?
                } else {
                    // Broadcasting or unexpected containers: the folded nodes as they were.
                    let mut ts: Vec<Tensor> = Vec::new();
                    for (i, f) in folded.iter().enumerate() {
                        if let Some(f) = f {
                            ts.push(f.requant.eval(input(inputs, i, "X")?)?);
                        }
                    }
                    let mut it = ts.iter();
                    let args: Vec<Option<&Tensor>> = inputs
                        .iter()
                        .enumerate()
                        .map(|(i, t)| match folded.get(i) {
                            Some(Some(_)) => it.next(),
                            _ => *t,
                        })
                        .collect();
                    let sum = IntOp::Add { sub: *sub }.eval(&args)?.swap_remove(0);
                    requant.eval(&sum)?
                }
            }
            IntOp::Add { sub } => {
                let mut acc = (to_i32s(x)?, x.shape().to_vec());
                for (i, t) in inputs.iter().enumerate().skip(1) {
                    let t = t.ok_or_else(|| Error::shape(format!("integer add: input {i} is missing")))?;
                    let v = to_i32s(t)?;
                    let f = if *sub { i32::wrapping_sub } else { i32::wrapping_add };
                    acc = binary(&acc.0, &acc.1, &v, t.shape(), f)?;
                }
                Tensor::from_vec(acc.1, acc.0)?
            }
            IntOp::Float { op, out } => {
                // Integer inputs as exact floats; float and i64 (shape) inputs as they are.
                let floats: Vec<Option<Tensor>> = inputs
                    .iter()
                    .map(|t| match t {
                        Some(t) if !matches!(t.dtype(), DType::F32 | DType::I64) => {
                            Tensor::from_vec(t.shape().to_vec(), t.to_f32_vec()).map(Some)
                        }
                        _ => Ok(None),
                    })
                    .collect::<Result<_>>()?;
                let args: Vec<Option<&Tensor>> = inputs
                    .iter()
                    .zip(&floats)
                    .map(|(orig, conv)| conv.as_ref().or(*orig))
                    .collect();
                let y = op.eval(&args)?.swap_remove(0);
                let (shape, v) = (y.shape().to_vec(), y.to_f32_vec());
                let ints = v.iter().map(|&f| f.round_ties_even() as i32);
                match out {
                    DType::I8 => Tensor::from_vec(shape, ints.map(i8::from_i32).collect::<Vec<_>>())?,
                    DType::U8 => Tensor::from_vec(shape, ints.map(u8::from_i32).collect::<Vec<_>>())?,
                    _ => Tensor::from_vec(shape, ints.collect::<Vec<_>>())?,
                }
            }
            IntOp::Pass => x.clone(),
            IntOp::Table(t) => t.eval(x)?,
            IntOp::QAdd(q) => q.eval(x, input(inputs, 1, "B")?)?,
            IntOp::AvgPool(p) => p.eval(x)?,
        };
        Ok(vec![y])
    }
}

/// How `gather` combines the values it reads with `dst`.
impl Op for IntOp {
    fn op_type(&self) -> &'static str {
        self.name()
    }
    fn no_onnx_form(&self) -> Option<&'static str> {
        Some("belongs to the integer engine and has no ONNX form; export the quantized model instead")
    }
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        IntOp::eval(self, inputs)
    }
    fn ptq_class(&self, _n: &NodeFacts) -> Class {
        Class::FloatIsland(format!("{} is an op of the integer engine", self.name()))
    }
}

#[derive(Clone, Copy)]
enum Gather {
    Set,
    Add,
    Sub,
}

/// Writes the values of `x` (through `table`, indexed by `x - min`, without its base, when its
/// requantization was folded here) into `dst`, or adds them to it, or subtracts them from it.
fn gather<T: QElem>(dst: &mut [i32], x: &[T], table: Option<&[u8; LUT_LEN]>, mode: Gather) {
    // One loop per mode, so that none branches per element.
    match mode {
        Gather::Set => gather_with(dst, x, table, |_, v| v),
        Gather::Add => gather_with(dst, x, table, |d, v| d + v),
        Gather::Sub => gather_with(dst, x, table, |d, v| d - v),
    }
}

#[inline(always)]
fn gather_with<T: QElem>(dst: &mut [i32], x: &[T], table: Option<&[u8; LUT_LEN]>, op: impl Fn(i32, i32) -> i32) {
    match table {
        Some(t) => dst
            .iter_mut()
            .zip(x)
            .for_each(|(d, &v)| *d = op(*d, t[(v.to_i32() - <T as QElem>::MIN) as u8 as usize] as i32)),
        None => dst.iter_mut().zip(x).for_each(|(d, &v)| *d = op(*d, v.to_i32())),
    }
}

/// The table of channel `ch` of a folded requantization, if any.
fn table_of(f: Option<&FoldedRequant>, ch: usize) -> Result<Option<ByteLut<'_>>> {
    match f {
        None => Ok(None),
        Some(f) => f
            .table(ch)
            .map(Some)
            .ok_or_else(|| Error::shape(format!("folded requantization '{}': no table for channel {ch}", f.node))),
    }
}

/// One input of a block of `add_requant`: its values, through a table (without its base) or not.
#[derive(Clone, Copy)]
struct Operand<'a, T> {
    x: &'a [T],
    lut: Option<&'a [u8; LUT_LEN]>,
}

/// `requant(a ± b)` for same-shape 8-bit tensors, each input first through its folded
/// requantization if any, without an intermediate tensor.
#[allow(clippy::too_many_arguments)]
fn add_requant<A: QElem, B: QElem, O: QElem>(
    a: &Tensor,
    b: &Tensor,
    sub: bool,
    rq: &Requant,
    pre: [Option<&FoldedRequant>; 2],
    small: &SmallSums,
    kernel: Kernel,
) -> Result<Tensor> {
    let shape = a.shape().to_vec();
    let counts = [
        rq.scale.len(),
        pre[0].map_or(1, |f| f.requant.scale.len()),
        pre[1].map_or(1, |f| f.requant.scale.len()),
    ];
    let (inner, c) = work_blocks(&shape, &counts, "quantized add")?;
    let (av, bv) = (a.as_slice::<A>()?, b.as_slice::<B>()?);
    let folded = pre.iter().any(|f| f.is_some());
    #[cfg(target_arch = "x86_64")]
    if let (true, Some(out)) = (kernel.is_simd(), small.get::<A, B, O>(sub, rq, pre)?) {
        // Every step in f32 lanes, each checked exact on all its inputs (`SmallF32`):
        // ResNet-50's first merge (256 x 56 x 56, one image, folded shortcut, one thread)
        // took 0.36-0.44 ms against 0.68-0.90 with the two tables, alternating in one
        // process; without a folded input 0.20-0.28 against 0.42-0.67 (f64 lanes).
        let fill = |i: usize, o: &mut [std::mem::MaybeUninit<O>]| {
            let ch = i % c;
            let span = i * inner..i * inner + o.len();
            let (xa, xb) = (&av[span.clone()], &bv[span]);
            let (fa, fb) = (pre[0].and_then(|f| f.small(ch)), pre[1].and_then(|f| f.small(ch)));
            // SAFETY: `Avx2` is only constructed after the feature was detected.
            unsafe { add_small_avx2(xa, xb, sub, [fa, fb], &out, o) }
        };
        // The output is written once, not zeroed first.
        // SAFETY: each chunk spans `inner` elements of `av` and `bv` (same shapes), and
        // `add_small_avx2` (`by_eights`) writes all of them.
        let y = unsafe { filled_chunks::<O>(av.len(), inner, fill) };
        return Tensor::from_vec(shape, y);
    }
    let mut y = vec![O::from_i32(0); av.len()];
    if inner > 0 && rq.scale.len() == 1 && (folded || kernel == Kernel::Reference) {
        // One output requantization: every output is one of 511 sums' (the tables' bases
        // are the same for every channel), so a table of them replaces the arithmetic.
        // With a folded input (cargo bench --bench int_ops, ResNet-50's 16 merges at batch
        // 32) it took 0.70x the time on one thread and 0.81x on two; with none, the AVX2
        // arithmetic stays ahead (the table 1.25x slower on one thread).
        let base = |f: Option<&FoldedRequant>, min: i32| f.map_or(min, |f| f.base);
        let (base_a, base_b) = (base(pre[0], A::MIN), base(pre[1], B::MIN));
        let sums = SumTable::new(sub, if sub { base_a - base_b } else { base_a + base_b }, rq)?;
        y.par_chunks_mut(inner)
            .zip(av.par_chunks(inner).zip(bv.par_chunks(inner)))
            .enumerate()
            .try_for_each(|(i, (o, (xa, xb)))| {
                let ch = i % c;
                let a = Operand {
                    x: xa,
                    lut: table_of(pre[0], ch)?.map(|t| t.bytes),
                };
                let b = Operand {
                    x: xb,
                    lut: table_of(pre[1], ch)?.map(|t| t.bytes),
                };
                sums.apply(a, b, o);
                Ok::<(), Error>(())
            })?;
    } else if inner > 0 {
        y.par_chunks_mut(inner)
            .zip(av.par_chunks(inner).zip(bv.par_chunks(inner)))
            .enumerate()
            .try_for_each(|(i, (o, (xa, xb)))| {
                let ch = i % c;
                let (ta, tb) = (table_of(pre[0], ch)?, table_of(pre[1], ch)?);
                // The tables' bases, taken out of the lookups, come back as the bias.
                let (base_a, base_b) = (ta.map_or(0, |t| t.base), tb.map_or(0, |t| t.base));
                let bias = if sub { base_a - base_b } else { base_a + base_b };
                let a = Operand {
                    x: xa,
                    lut: ta.map(|t| t.bytes),
                };
                let b = Operand {
                    x: xb,
                    lut: tb.map(|t| t.bytes),
                };
                match kernel {
                    Kernel::Reference => add_requant_block(a, b, sub, bias, rq, ch, o),
                    // SAFETY: the SIMD kinds are only constructed after AVX2 was detected.
                    #[cfg(target_arch = "x86_64")]
                    Kernel::Avx2 | Kernel::AvxVnni | Kernel::Avx512Vnni => unsafe {
                        let c = if rq.scale.len() == 1 { 0 } else { ch };
                        add_requant_avx2(a, b, sub, bias, rq.factor[c] as f64, rq.row_out(), o)
                    },
                }
                Ok::<(), Error>(())
            })?;
    }
    Tensor::from_vec(shape, y)
}

/// `small_sum` of an `AddRequant`, kept from its first run (the op's fields do not change
/// after lowering; `fold_add_requants` resets it when it folds an input).
///
/// Why: checking the form takes a few hundred exact requantizations, 2.5-7 us per merge;
/// done at every run, it and its rounding were 1.6 % of ResNet-20's time at batch 1.
#[derive(Debug, Clone, Default)]
pub struct SmallSums(Box<OnceLock<(u8, Option<SmallF32>)>>);

impl SmallSums {
    /// The form for these containers: the one found at the first run, or computed again
    /// when the containers differ from that run's (one graph, one set of containers).
    fn get<A: QElem, B: QElem, O: QElem>(
        &self,
        sub: bool,
        rq: &Requant,
        pre: [Option<&FoldedRequant>; 2],
    ) -> Result<Option<SmallF32>> {
        let key = A::UNSIGNED as u8 | (B::UNSIGNED as u8) << 1 | (O::UNSIGNED as u8) << 2;
        if let Some((k, v)) = self.0.get() {
            if *k == key {
                return Ok(*v);
            }
        }
        let v = small_sum::<A, B, O>(sub, rq, pre)?;
        // Two threads may compute it at once; both get the same value.
        let _ = self.0.set((key, v));
        Ok(v)
    }
}

/// A cache: every `SmallSums` equals every other (the ops compare by their definition).
impl PartialEq for SmallSums {
    fn eq(&self, _: &SmallSums) -> bool {
        true
    }
}

/// The f32 form of `add_requant` with one output factor, when every folded input has one and
/// the output's equals the exact requantization on every sum the operands can make.
fn small_sum<A: QElem, B: QElem, O: QElem>(
    sub: bool,
    rq: &Requant,
    pre: [Option<&FoldedRequant>; 2],
) -> Result<Option<SmallF32>> {
    if rq.scale.len() != 1 {
        return Ok(None);
    }
    // Each operand's values: its container's, or its folded requantization's bounds.
    let range = |f: Option<&FoldedRequant>, lo: i32, hi: i32| match f {
        None => Some((lo, hi)),
        Some(f) => f.small.as_ref().map(|_| (f.requant.lo, f.requant.hi)),
    };
    let (Some((alo, ahi)), Some((blo, bhi))) = (range(pre[0], A::MIN, A::MAX), range(pre[1], B::MIN, B::MAX)) else {
        return Ok(None);
    };
    let (first, last) = if sub {
        (alo - bhi, ahi - blo)
    } else {
        (alo + blo, ahi + bhi)
    };
    let sums: Vec<i32> = (first..=last).collect();
    let mut exact = vec![O::from_i32(0); sums.len()];
    // The exact row requantization (|sum| stays far below its fast bound).
    rq.row(0, &sums, 0, 1024, &mut exact);
    Ok(SmallF32::verified(0, rq.factor[0], rq.row_out(), first..=last, |v| {
        exact[(v - first) as usize].to_i32()
    }))
}

/// `out(fa(a) ± fb(b))` for eight elements at a time in AVX2 lanes (`fa`, `fb` the folded
/// requantizations, if any), the last few through padded copies.
///
/// # Safety
/// AVX2 is available.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn add_small_avx2<A: QElem, B: QElem, O: QElem>(
    a: &[A],
    b: &[B],
    sub: bool,
    folded: [Option<&SmallF32>; 2],
    out: &SmallF32,
    dst: &mut [std::mem::MaybeUninit<O>],
) {
    use std::arch::x86_64::*;
    let [fa, fb] = folded.map(|f| f.map(|f| SmallF32Avx2::new(f)));
    let out = SmallF32Avx2::new(out);
    // b or -b: (b ^ m) - m with m all ones negates.
    let m = _mm256_set1_epi32(if sub { -1 } else { 0 });
    let eight = |pa: *const A, pb: *const B| {
        // SAFETY: the callers below pass eight readable elements.
        let (mut va, mut vb) = unsafe { (operand8(pa), operand8(pb)) };
        if let Some(f) = &fa {
            va = f.lanes(va);
        }
        if let Some(f) = &fb {
            vb = f.lanes(vb);
        }
        let y = out.lanes(_mm256_add_epi32(va, _mm256_sub_epi32(_mm256_xor_si256(vb, m), m)));
        // The lanes are inside O's range, so the saturating packs are exact.
        let words = _mm_packs_epi32(_mm256_castsi256_si128(y), _mm256_extracti128_si256::<1>(y));
        if O::UNSIGNED {
            _mm_packus_epi16(words, words)
        } else {
            _mm_packs_epi16(words, words)
        }
    };
    // SAFETY: AVX2 is available (this function's contract).
    unsafe { by_eights(a, b, dst, eight) }
}

/// `dst[i..i + 8]` from `eight(&a[i], &b[i])` (eight output bytes in the low half) over
/// the elements all three slices hold, the last few through padded copies so that they
/// get the same arithmetic. Writes every element of `dst` when `a` and `b` are as long.
///
/// # Safety
/// AVX2 is available, and `eight` reads at most eight elements from each pointer.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn by_eights<A: QElem, B: QElem, O: QElem>(
    a: &[A],
    b: &[B],
    dst: &mut [std::mem::MaybeUninit<O>],
    eight: impl Fn(*const A, *const B) -> std::arch::x86_64::__m128i,
) {
    use std::arch::x86_64::*;
    let n = dst.len().min(a.len()).min(b.len());
    let mut i = 0;
    while i + 8 <= n {
        // SAFETY: i + 8 <= n, within all three slices; O is one byte.
        unsafe {
            let y = eight(a.as_ptr().add(i), b.as_ptr().add(i));
            _mm_storel_epi64(dst.as_mut_ptr().add(i) as *mut __m128i, y);
        }
        i += 8;
    }
    if i < n {
        let (mut ta, mut tb, mut to) = ([A::from_i32(0); 8], [B::from_i32(0); 8], [O::from_i32(0); 8]);
        ta[..n - i].copy_from_slice(&a[i..n]);
        tb[..n - i].copy_from_slice(&b[i..n]);
        // SAFETY: the copies hold eight elements; `to` is eight bytes.
        unsafe { _mm_storel_epi64(to.as_mut_ptr() as *mut __m128i, eight(ta.as_ptr(), tb.as_ptr())) };
        for (d, &v) in dst[i..n].iter_mut().zip(&to) {
            d.write(v);
        }
    }
}

/// The requantized value of every `a ± b` of two bytes (`a - min(A)` or a table's byte,
/// the same for `b`): 511 entries, indexed by `a + b` or `a - b + 255`.
struct SumTable<O> {
    sub: bool,
    out: Vec<O>,
}

impl<O: QElem> SumTable<O> {
    /// `bias`: what the true sum exceeds the bytes' sum by (the bases of both operands).
    fn new(sub: bool, bias: i32, rq: &Requant) -> Result<SumTable<O>> {
        let first = if sub { -255 } else { 0 };
        let sums: Vec<i32> = (first..first + 511).collect();
        let mut out = vec![O::from_i32(0); sums.len()];
        // The exact row requantization (|sum + bias| stays below 1024 + the bases).
        rq.row(0, &sums, bias, 1024 + bias.abs() as i64, &mut out);
        Ok(SumTable { sub, out })
    }

    fn apply<A: QElem, B: QElem>(&self, a: Operand<A>, b: Operand<B>, dst: &mut [O]) {
        // One loop per case, so that none branches per element.
        match (a.lut, b.lut) {
            (None, None) => self.each(a.x, b.x, dst, |v| byte_of(v), |v| byte_of(v)),
            (Some(ta), None) => self.each(a.x, b.x, dst, |v| ta[byte_of(v)] as usize, |v| byte_of(v)),
            (None, Some(tb)) => self.each(a.x, b.x, dst, |v| byte_of(v), |v| tb[byte_of(v)] as usize),
            (Some(ta), Some(tb)) => self.each(a.x, b.x, dst, |v| ta[byte_of(v)] as usize, |v| tb[byte_of(v)] as usize),
        }
    }

    #[inline(always)]
    fn each<A: Copy, B: Copy>(
        &self,
        a: &[A],
        b: &[B],
        dst: &mut [O],
        fa: impl Fn(A) -> usize,
        fb: impl Fn(B) -> usize,
    ) {
        // Fixed-size table: the index (at most 510) needs no bounds check.
        let Ok(out): std::result::Result<&[O; 511], _> = self.out.as_slice().try_into() else {
            return;
        };
        let it = dst.iter_mut().zip(a.iter().zip(b));
        if self.sub {
            it.for_each(|(d, (&x, &y))| *d = out[(fa(x) + 255 - fb(y)).min(510)]);
        } else {
            it.for_each(|(d, (&x, &y))| *d = out[(fa(x) + fb(y)).min(510)]);
        }
    }
}

/// A byte's offset from its container's minimum (0..=255).
#[inline(always)]
fn byte_of<T: QElem>(v: T) -> usize {
    (v.to_i32() - T::MIN) as u8 as usize
}

/// One block of `add_requant` in portable code: the sums in a buffer, then `Requant::row`.
fn add_requant_block<A: QElem, B: QElem, O: QElem>(
    a: Operand<A>,
    b: Operand<B>,
    sub: bool,
    bias: i32,
    rq: &Requant,
    ch: usize,
    o: &mut [O],
) {
    let second = if sub { Gather::Sub } else { Gather::Add };
    let mut buf = [0i32; 256];
    for ((os, xa), xb) in o.chunks_mut(256).zip(a.x.chunks(256)).zip(b.x.chunks(256)) {
        let buf = &mut buf[..os.len()];
        gather(buf, xa, a.lut, Gather::Set);
        gather(buf, xb, b.lut, second);
        // Sums of two 8-bit values (and the bases) are far below the exactness bound.
        rq.row(ch, buf, bias, 1024, os);
    }
}

/// Eight values of `x` from `p` as i32 lanes.
///
/// # Safety
/// AVX2 is available and `p` points to eight readable elements.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn operand8<T: QElem>(p: *const T) -> std::arch::x86_64::__m256i {
    use std::arch::x86_64::*;
    // SAFETY: the caller guarantees eight readable bytes at `p` (T is one byte).
    let bytes = unsafe { _mm_loadl_epi64(p as *const __m128i) };
    if T::UNSIGNED {
        _mm256_cvtepu8_epi32(bytes)
    } else {
        _mm256_cvtepi8_epi32(bytes)
    }
}

/// `dst[i] = lut[x[i] - min]` (the table's raw bytes).
#[inline(always)]
fn map_bytes<T: QElem>(dst: &mut [u8], x: &[T], lut: &[u8; LUT_LEN]) {
    dst.iter_mut()
        .zip(x)
        .for_each(|(d, &v)| *d = lut[(v.to_i32() - <T as QElem>::MIN) as u8 as usize]);
}

/// One block of `add_requant` in AVX2: inputs with a table go through it into a byte buffer
/// (scalar lookups, which beat the AVX2 gather here), then eight sums at a time are
/// requantized straight from the bytes, no i32 buffer in between.
///
/// # Safety
/// AVX2 is available.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn add_requant_avx2<A: QElem, B: QElem, O: QElem>(
    a: Operand<A>,
    b: Operand<B>,
    sub: bool,
    bias: i32,
    f: f64,
    out: RowOut,
    dst: &mut [O],
) {
    // Sums of two 8-bit values (and the bases) are far below the fast kernel's bound.
    let row = RowAvx2::new(bias, f, out, O::UNSIGNED);
    let (mut ma, mut mb) = ([0u8; 256], [0u8; 256]);
    for ((o, xa), xb) in dst.chunks_mut(256).zip(a.x.chunks(256)).zip(b.x.chunks(256)) {
        let n = o.len();
        // SAFETY (all four): AVX2 is available.
        match (a.lut, b.lut) {
            (None, None) => unsafe { add_bytes_avx2(xa, xb, sub, &row, o) },
            (Some(ta), None) => {
                map_bytes(&mut ma[..n], xa, ta);
                unsafe { add_bytes_avx2(&ma[..n], xb, sub, &row, o) }
            }
            (None, Some(tb)) => {
                map_bytes(&mut mb[..n], xb, tb);
                unsafe { add_bytes_avx2(xa, &mb[..n], sub, &row, o) }
            }
            (Some(ta), Some(tb)) => {
                map_bytes(&mut ma[..n], xa, ta);
                map_bytes(&mut mb[..n], xb, tb);
                unsafe { add_bytes_avx2(&ma[..n], &mb[..n], sub, &row, o) }
            }
        }
    }
}

/// `row` applied to `a ± b`, eight at a time.
///
/// # Safety
/// AVX2 is available.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn add_bytes_avx2<A: QElem, B: QElem, O: QElem>(a: &[A], b: &[B], sub: bool, row: &RowAvx2, dst: &mut [O]) {
    use std::arch::x86_64::*;
    // b or -b: (b ^ m) - m with m all ones negates.
    let m = _mm256_set1_epi32(if sub { -1 } else { 0 });
    // SAFETY: AVX2 is available; `sum8` reads eight elements from each pointer. Seen as
    // `MaybeUninit`, `dst` only receives initialized values.
    unsafe {
        let dst = &mut *(dst as *mut [O] as *mut [std::mem::MaybeUninit<O>]);
        by_eights(a, b, dst, |pa, pb| sum8(pa, pb, m, row))
    }
}

/// Eight requantized `a + (b ^ m) - m` from eight elements at `pa` and `pb`.
///
/// # Safety
/// AVX2 is available and `pa`, `pb` point to eight readable elements.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn sum8<A: QElem, B: QElem>(
    pa: *const A,
    pb: *const B,
    m: std::arch::x86_64::__m256i,
    row: &RowAvx2,
) -> std::arch::x86_64::__m128i {
    use std::arch::x86_64::*;
    // SAFETY: forwarded from the caller.
    let (va, vb) = unsafe { (operand8(pa), operand8(pb)) };
    row.bytes8(_mm256_add_epi32(va, _mm256_sub_epi32(_mm256_xor_si256(vb, m), m)))
}

fn clip(x: &Tensor, lo: i32, hi: i32) -> Result<Tensor> {
    let shape = x.shape().to_vec();
    // ONNX Clip is `min(max(x, lo), hi)`, as the float op computes it: with `lo > hi` every
    // value becomes `hi` (`i32::clamp` would panic on such a model's bounds).
    let bound = |a: i32| a.max(lo).min(hi);
    match x.data() {
        TensorData::I8(v) => Tensor::from_vec(
            shape,
            v.iter().map(|&a| i8::from_i32(bound(a as i32))).collect::<Vec<_>>(),
        ),
        TensorData::U8(v) => Tensor::from_vec(
            shape,
            v.iter().map(|&a| u8::from_i32(bound(a as i32))).collect::<Vec<_>>(),
        ),
        TensorData::I32(v) => Tensor::from_vec(shape, v.iter().map(|&a| bound(a)).collect::<Vec<_>>()),
        _ => Err(Error::shape(format!("integer clip got a {} tensor", x.dtype().name()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::conv::{ConvShape, Window2d};
    use crate::ops::Padding;
    use proptest::prelude::*;

    /// Integer Clip agrees with the float Clip (ONNX's `min(max(x, lo), hi)`), also on a
    /// model whose bounds are crossed, where it used to panic.
    #[test]
    fn integer_clip_follows_the_float_clip() {
        use crate::ops::Clip;
        let xs: Vec<i8> = vec![-128, -9, -3, 0, 4, 5, 7, 127];
        for (lo, hi) in [(-3, 5), (5, -3), (0, 0), (-200, 300)] {
            let want: Vec<f32> = xs
                .iter()
                .map(|&v| Clip::apply(v as f32, lo as f32, hi as f32))
                .collect();
            let x = Tensor::from_vec(vec![8], xs.clone()).unwrap();
            let op = IntOp::Clip { lo, hi };
            let got = op.eval(&[Some(&x)]).unwrap().remove(0);
            assert_eq!(
                got.to_f32_vec(),
                want.iter().map(|&v| v.clamp(-128.0, 127.0)).collect::<Vec<_>>(),
                "i8 [{lo}, {hi}]"
            );
            let x32 = Tensor::from_vec(vec![8], xs.iter().map(|&v| v as i32).collect::<Vec<_>>()).unwrap();
            let got = op.eval(&[Some(&x32)]).unwrap().remove(0);
            assert_eq!(got.to_f32_vec(), want, "i32 [{lo}, {hi}]");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(40))]
        /// Both convolution paths (direct, and packed product for 1x1), grouped or not,
        /// against the definition: i64 sums, then the integer-only requantization.
        #[test]
        fn qconv_matches_the_definition(
            n in 1usize..3, cg in 1usize..5, mg in 1usize..8, group in 1usize..3, hw in 1usize..7,
            k in prop_oneof![Just(1usize), Just(3)], pad in 0usize..2, stride in 1usize..3,
            seed in any::<u64>(), unsigned in any::<bool>(), narrow in any::<bool>(),
        ) {
            let pad = if k == 1 { 0 } else { pad };
            prop_assume!(hw + 2 * pad >= k);
            let (c, m) = (cg * group, mg * group);
            let mut st = seed | 1;
            let mut next = || { st ^= st << 13; st ^= st >> 7; st ^= st << 17; st };
            // Narrow weights leave the byte-product kernel a run plan; full-range ones take
            // the pair kernel on most inputs.
            let w: Vec<i8> = (0..m * cg * k * k).map(|_| if narrow { next() as i8 / 16 } else { next() as i8 }).collect();
            let bias: Vec<i32> = (0..m).map(|_| (next() % 2001) as i32 - 1000).collect();
            let conv = Conv { kernel_shape: None, strides: Some(vec![stride; 2]), dilations: None, padding: Padding::Explicit(vec![pad; 4]), group };
            let rq = Requant::new(vec![0.0137], -128, 127).unwrap();
            let w16: Vec<i16> = w.iter().map(|&v| v as i16).collect();
            let q = QConv::new(conv, &w16, vec![m, cg, k, k], bias.clone(), rq.clone(), 0).unwrap();
            let x8: Vec<u8> = (0..n * c * hw * hw).map(|_| next() as u8).collect();
            let x = if unsigned {
                Tensor::from_vec(vec![n, c, hw, hw], x8.clone()).unwrap()
            } else {
                Tensor::from_vec(vec![n, c, hw, hw], x8.iter().map(|&v| v as i8).collect::<Vec<_>>()).unwrap()
            };
            let got = q.eval(&x).unwrap();
            let got = got.as_slice::<i8>().unwrap();
            let win = Window2d { kernel: [k, k], strides: [stride; 2], dilations: [1, 1], pads: [pad; 4] };
            let out = win.output_size(hw, hw, false).unwrap();
            let s = ConvShape { n: 1, c: cg, h: hw, w: hw, m: mg, group: 1, win, out };
            let npix = out[0] * out[1];
            for img in 0..n {
                for g in 0..group {
                    let xs: Vec<i16> = (0..cg * hw * hw)
                        .map(|i| {
                            let v = x8[img * c * hw * hw + g * cg * hw * hw + i];
                            if unsigned { v as i16 } else { v as i8 as i16 }
                        })
                        .collect();
                    let acc = qconv_direct::conv_ref(&xs, &w[g * mg * cg * k * k..(g + 1) * mg * cg * k * k], &s, cg, mg);
                    for o in 0..mg {
                        for p in 0..npix {
                            let ch = g * mg + o;
                            let want = rq.scale[0].apply(acc[o * npix + p] + bias[ch] as i64).clamp(-128, 127) as i8;
                            prop_assert_eq!(got[(img * m + ch) * npix + p], want);
                        }
                    }
                }
            }
        }
    }

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

    #[test]
    fn requant_saturates_and_picks_the_container() {
        let r = Requant::new(vec![0.5], -128, 127).unwrap();
        assert_eq!(r.out, DType::I8);
        let x = Tensor::from_vec(vec![4], vec![1000i32, -1000, 3, -3]).unwrap();
        assert_eq!(r.eval(&x).unwrap().as_slice::<i8>().unwrap(), &[127, -128, 2, -2]);
        assert_eq!(Requant::new(vec![1.0], 0, 255).unwrap().out, DType::U8);
        assert!(Requant::new(vec![1.0], -2048, 2047).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        /// Max pooling by rows (every kernel this CPU runs) against the reference loop: 1-D
        /// and 2-D, kernels 1-4, strides 1-3, pads up to 4 (windows partly or wholly in the
        /// padding), ceil mode, i8 and u8 with the container extremes over-represented.
        #[test]
        fn max_pool_rows_matches_the_reference(
            n in 1usize..3, c in 1usize..4, h in 0usize..12, w in 0usize..40, kernel in (1usize..5, 1usize..5),
            strides in (1usize..4, 1usize..4), pads in proptest::array::uniform4(0usize..5), ceil_mode in any::<bool>(),
            one_d in any::<bool>(), unsigned in any::<bool>(), seed in any::<u64>(),
        ) {
            let mut st = seed | 1;
            let mut next = move || { st ^= st << 13; st ^= st >> 7; st ^= st << 17; st };
            let (min, max) = if unsigned { (0u8, 255u8) } else { (0x80, 0x7f) };
            let h = if one_d { 1 } else { h };
            let bytes: Vec<u8> = (0..n * c * h * w)
                .map(|_| match next() % 4 { 0 => min, 1 => max, _ => next() as u8 })
                .collect();
            let (shape, kernel_shape, strides, pads) = if one_d {
                (vec![n, c, w], vec![kernel.1], vec![strides.1], vec![pads[1], pads[3]])
            } else {
                (vec![n, c, h, w], vec![kernel.0, kernel.1], vec![strides.0, strides.1], pads.to_vec())
            };
            let x = if unsigned {
                Tensor::from_vec(shape.clone(), bytes).unwrap()
            } else {
                Tensor::from_vec(shape.clone(), bytes.into_iter().map(|b| b as i8).collect::<Vec<_>>()).unwrap()
            };
            let pool = Pool {
                max: true, kernel_shape, strides: Some(strides), dilations: None,
                padding: Padding::Explicit(pads), ceil_mode, count_include_pad: false,
            };
            let plan = pool.plan(&shape);
            prop_assume!(plan.is_ok());
            let plan = plan.unwrap();
            let want = qpool_ref(&plan, &x).unwrap();
            for kernel in Kernel::available() {
                let got = max_pool_rows(&plan, &x, kernel).unwrap();
                prop_assert_eq!(got.shape(), want.shape());
                prop_assert_eq!(got.to_f32_vec(), want.to_f32_vec(), "{:?}", kernel);
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]
        /// `QAddRequantize` with and without a folded requantization of either or both inputs
        /// (one factor or one per channel), any container mix, Add or Sub, output zero point
        /// and rounding, through `eval` and every kernel this CPU runs, against plain
        /// arithmetic: the folded nodes' own `eval`, an i32 add, and the integer-only
        /// reference requantization. Container extremes are over-represented.
        #[test]
        fn add_requant_matches_plain_arithmetic(
            c in 1usize..4, n in 1usize..40, seed in any::<u64>(), sub in any::<bool>(), ua in any::<bool>(),
            ub in any::<bool>(), fold in 0usize..4, per_channel in any::<bool>(), fa in 0.01f32..3.0,
            fo in 0.01f32..3.0, xz in -20i32..20, unsigned_out in any::<bool>(), zero in -3i32..4, f32_rounding in any::<bool>(),
            per_channel_out in any::<bool>(),
        ) {
            let mut st = seed | 1;
            let mut next = move || { st ^= st << 13; st ^= st >> 7; st ^= st << 17; st as u8 };
            let mut bytes = |unsigned: bool| {
                let (min, max) = if unsigned { (0u8, 255u8) } else { (0x80, 0x7f) };
                let v: Vec<u8> = (0..c * n).map(|_| match next() % 4 { 0 => min, 1 => max, _ => next() }).collect();
                if unsigned {
                    Tensor::from_vec(vec![1, c, n], v).unwrap()
                } else {
                    Tensor::from_vec(vec![1, c, n], v.into_iter().map(|b| b as i8).collect::<Vec<_>>()).unwrap()
                }
            };
            let (a, b) = (bytes(ua), bytes(ub));
            let (lo, hi) = if unsigned_out { (0, 255) } else { (-128, 127) };
            // One output factor takes the table of sums; one per channel, the arithmetic.
            let out_factors = if per_channel_out { (0..c).map(|k| fo * (1.0 + k as f32 * 0.21)).collect() } else { vec![fo] };
            let mut requant = Requant::new(out_factors, lo, hi).unwrap();
            requant.zero = zero.clamp(lo, hi);
            requant.rounding = if f32_rounding { Rounding::F32 } else { Rounding::Exact };
            // Folded requantizations: a's to i8, b's to u8 (both containers' tables).
            let folded_for = |i: usize| {
                let factors = if per_channel { (0..c).map(|k| fa * (1.0 + k as f32 * 0.37)).collect() } else { vec![fa] };
                let (lo, hi) = if i == 0 { (-128, 127) } else { (0, 255) };
                let mut pre = Requant::new(factors, lo, hi).unwrap();
                pre.x_zero = xz;
                pre
            };
            let pres = [folded_for(0), folded_for(1)];
            let folds = [fold == 0 || fold == 3, fold == 1 || fold == 3];
            let mut folded: [Option<Box<FoldedRequant>>; 2] = [None, None];
            for (i, t) in [&a, &b].into_iter().enumerate() {
                if folds[i] {
                    folded[i] = Some(Box::new(FoldedRequant::new("f".into(), "v".into(), pres[i].clone(), t.dtype()).unwrap()));
                }
            }
            let ints = |t: &Tensor, i: usize| {
                let t = if folds[i] { pres[i].eval(t).unwrap() } else { t.clone() };
                t.to_f32_vec().into_iter().map(|v| v as i32).collect::<Vec<_>>()
            };
            let (va, vb) = (ints(&a, 0), ints(&b, 1));
            let sums: Vec<i32> = va.iter().zip(&vb).map(|(&p, &q)| if sub { p - q } else { p + q }).collect();
            let mut want = vec![0i32; c * n];
            for (ch, (want, sums)) in want.chunks_mut(n).zip(sums.chunks(n)).enumerate() {
                let scale = &requant.scale[if per_channel_out { ch } else { 0 }];
                if unsigned_out {
                    let mut w = vec![0u8; n];
                    requant_row_ref(sums, 0, scale, requant.row_out(), &mut w);
                    want.iter_mut().zip(&w).for_each(|(d, &v)| *d = v as i32);
                } else {
                    let mut w = vec![0i8; n];
                    requant_row_ref(sums, 0, scale, requant.row_out(), &mut w);
                    want.iter_mut().zip(&w).for_each(|(d, &v)| *d = v as i32);
                }
            }
            let ints_of = |t: Tensor| t.to_f32_vec().iter().map(|&v| v as i32).collect::<Vec<_>>();
            let pre = [folded[0].as_deref(), folded[1].as_deref()];
            for kernel in Kernel::available() {
                let got = with_qelem!(a.dtype(), A => with_qelem!(b.dtype(), B => with_qelem!(requant.out, O => {
                    add_requant::<A, B, O>(&a, &b, sub, &requant, pre, &SmallSums::default(), kernel)
                }))).unwrap();
                prop_assert_eq!(ints_of(got), want.clone(), "{:?}", kernel);
            }
            let op = IntOp::AddRequant { sub, requant: requant.clone(), folded: folded.clone(), small: SmallSums::default() };
            // Twice: the second run takes the f32 form the first one found.
            for _ in 0..2 {
                let got = op.eval(&[Some(&a), Some(&b)]).unwrap().remove(0);
                prop_assert_eq!(ints_of(got), want.clone());
            }
        }
    }
}
