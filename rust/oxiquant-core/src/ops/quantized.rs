//! Integer ops of the quantized engine. They are never parsed from ONNX: `ptq::lower_int`
//! builds them from a quantized graph. Activations are i8 or u8 (the container of a
//! quantizer's range), accumulators and merge sums i32, every step exact integer arithmetic.
//!
//! Requantization multiplies by a fixed-point factor `mult * 2^-shift` where `mult` is the
//! 24-bit significand of the f32 factor of the fake-quantized graph, so the multiplier is
//! *exactly* that factor; the product is taken in i64 and rounded half to even. The
//! fake-quantized graph (`run(mode="fake")`) computes the same product in f64, which is also
//! exact, so both agree bit for bit as long as its f32 accumulators are exact (sums below
//! 2^24 in magnitude; see docs/integer-engine.md).

use super::conv::Conv;
use super::pool::Pool;
use super::Op;
use crate::error::{Error, Result};
use crate::kernels::elementwise::binary;
use crate::kernels::pool::padded_count;
use crate::kernels::qconv_direct;
use crate::kernels::qgemm::{self, Kernel, PackedA};
use crate::kernels::requant::{div_round_even, requant_row, requant_row_ref, FixedPoint, QElem, EXACT_F64_BOUND};
use crate::tensor::{DType, Tensor, TensorData};
use rayon::prelude::*;

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

/// Requantization to an 8-bit container: `clamp(round_half_even(x * factor), lo, hi)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Requant {
    /// One factor, or one per channel (axis 1 of the tensor).
    pub scale: Vec<FixedPoint>,
    /// The same factors as the f32 the fake-quantized graph holds (for float inputs).
    pub factor: Vec<f32>,
    pub lo: i32,
    pub hi: i32,
    /// I8 or U8.
    pub out: DType,
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
        })
    }

    /// Tighter bounds (a Relu or Clip fused after the quantizer).
    pub fn clamp_to(&mut self, lo: i32, hi: i32) {
        self.lo = self.lo.max(lo);
        self.hi = self.hi.min(hi).max(self.lo);
    }

    /// Requantizes `acc + bias` of channel `c` into `dst`; `exact_f64` says that every
    /// `|acc + bias|` is below `EXACT_F64_BOUND` (then the fast kernel is exact).
    #[inline]
    pub fn row<O: QElem>(&self, c: usize, acc: &[i32], bias: i32, exact_f64: bool, dst: &mut [O]) {
        let c = if self.scale.len() == 1 { 0 } else { c };
        if exact_f64 {
            requant_row(acc, bias, self.factor[c], self.lo, self.hi, dst);
        } else {
            requant_row_ref(acc, bias, &self.scale[c], self.lo, self.hi, dst);
        }
    }

    /// Quantizes one float (an input quantizer): the product in f64 is exact for f32 operands.
    #[inline]
    pub fn apply_f32(&self, c: usize, x: f32) -> i32 {
        let f = if self.factor.len() == 1 {
            self.factor[0]
        } else {
            self.factor[c]
        };
        let y = (x as f64 * f as f64).round_ties_even();
        // NaN maps to 0 (`as` saturates infinities to the bounds).
        (y.clamp(self.lo as f64, self.hi as f64)) as i32
    }

    fn channels_of(&self, shape: &[usize]) -> Result<(usize, usize)> {
        channel_planes(self.scale.len(), shape, "requantization")
    }

    /// Requantizes integers `x` (any container) of channel `c` into `dst`, in blocks.
    fn ints<O: QElem, I: Copy + Into<i64>>(&self, c: usize, x: &[I], dst: &mut [O]) {
        let mut buf = [0i32; 256];
        for (xs, ds) in x.chunks(256).zip(dst.chunks_mut(256)) {
            let mut exact = true;
            for (b, &v) in buf.iter_mut().zip(xs) {
                let v: i64 = v.into();
                exact &= v.abs() < EXACT_F64_BOUND;
                *b = v as i32;
            }
            self.row(c, &buf[..xs.len()], 0, exact, ds);
        }
    }

    pub fn eval(&self, x: &Tensor) -> Result<Tensor> {
        let shape = x.shape().to_vec();
        let (c, inner) = self.channels_of(&shape)?;
        with_qelem!(self.out, O => {
            let mut y = vec![O::from_i32(0); x.len()];
            if inner > 0 {
                let planes = y.par_chunks_mut(inner).enumerate();
                match x.data() {
                    TensorData::F32(v) => planes.zip(v.par_chunks(inner)).for_each(|((i, o), s)| {
                        o.iter_mut().zip(s).for_each(|(o, &s)| *o = O::from_i32(self.apply_f32(i % c, s)))
                    }),
                    TensorData::I8(v) => planes.zip(v.par_chunks(inner)).for_each(|((i, o), s)| self.ints(i % c, s, o)),
                    TensorData::U8(v) => planes.zip(v.par_chunks(inner)).for_each(|((i, o), s)| self.ints(i % c, s, o)),
                    TensorData::I32(v) => planes.zip(v.par_chunks(inner)).for_each(|((i, o), s)| self.ints(i % c, s, o)),
                    _ => return Err(Error::shape(format!("cannot requantize a {} tensor", x.dtype().name()))),
                }
            }
            Tensor::from_vec(shape, y)
        })
    }
}

/// Dequantization: an integer tensor times a float factor (per channel of axis 1 or one).
#[derive(Debug, Clone, PartialEq)]
pub struct Dequant {
    pub factor: Vec<f32>,
}

impl Dequant {
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
                    o.iter_mut().zip(s).for_each(|(o, &s)| *o = s as f32 * f);
                });
        }
        Tensor::from_vec(shape, y)
    }
}

/// Quantized convolution: integer weights and bias, exact i32 accumulation, and the
/// requantization of the Scaling node that followed the float Conv as its epilogue.
#[derive(Debug, Clone, PartialEq)]
pub struct QConv {
    pub conv: Conv,
    pub weight_shape: Vec<usize>,
    /// The weights as given (kept for export).
    pub weight: Vec<i8>,
    /// One packed weight matrix per group (in the direct kernel's `k` order).
    packed: Vec<PackedA>,
    pub bias: Vec<i32>,
    pub requant: Requant,
    /// Whether every accumulator plus bias stays below `EXACT_F64_BOUND` (from the weights'
    /// magnitudes and the widest 8-bit input), so that the fast requantization is exact.
    exact_f64: bool,
}

/// Whether `sum_k |w[row][k]| * 255 + |bias[row]|` stays below `EXACT_F64_BOUND` for every row.
fn accumulators_fit(w: &[i8], rows: usize, bias: &[i32]) -> bool {
    let k = w.len() / rows.max(1);
    (0..rows).all(|r| {
        let s: i64 = w[r * k..(r + 1) * k].iter().map(|&v| (v as i64).abs()).sum();
        s * 255 + (bias[r] as i64).abs() < EXACT_F64_BOUND
    })
}

impl QConv {
    pub fn new(conv: Conv, weight: &[i8], weight_shape: Vec<usize>, bias: Vec<i32>, requant: Requant) -> Result<QConv> {
        let m = *weight_shape.first().unwrap_or(&0);
        let g = conv.group;
        if weight_shape.len() < 3 || m == 0 || m % g != 0 || bias.len() != m {
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
        let exact_f64 = accumulators_fit(weight, m, &bias);
        Ok(QConv {
            conv,
            weight_shape,
            weight: weight.to_vec(),
            packed,
            bias,
            requant,
            exact_f64,
        })
    }

    pub fn eval(&self, x: &Tensor) -> Result<Tensor> {
        let s = self.conv.geometry(x.shape(), &self.weight_shape)?;
        let mut shape = vec![s.n, s.m];
        if x.rank() == 3 {
            shape.push(s.out[1]);
        } else {
            shape.extend_from_slice(&s.out);
        }
        let kernel = Kernel::detect();
        with_qelem!(x.dtype(), T => {
            let xv = x.as_slice::<T>()?;
            with_qelem!(self.requant.out, O => {
                let y = self.run::<T, O>(xv, &s, kernel);
                Tensor::from_vec(shape, y)
            })
        })
    }

    fn run<T: QElem, O: QElem>(&self, x: &[T], s: &crate::kernels::conv::ConvShape, kernel: Kernel) -> Vec<O> {
        let (cg, mg) = (s.c / s.group, s.m / s.group);
        let npix = s.out[0] * s.out[1];
        let img_in = s.c * s.h * s.w;
        let img_out = s.m * npix;
        let mut y = vec![O::from_i32(0); s.n * img_out];
        if img_out == 0 {
            return y;
        }
        // 1x1 convolutions are plain matrix products: the packed-panel product reads its
        // operand contiguously, where the direct kernel would stride over every channel
        // plane for each tile (measured 0.72x of the f32 kernel on ResNet-50's 1x1 layers).
        let pointwise = s.win.kernel == [1, 1] && s.win.strides == [1, 1] && s.win.pads == [0; 4];
        let one_image = |(img, out): (usize, &mut [O]), parallel: bool| {
            let mut pairs = qconv_direct::PairImage::new();
            let mut panels: Vec<i16> = Vec::new();
            for g in 0..s.group {
                let xg = &x[img * img_in + g * cg * s.h * s.w..img * img_in + (g + 1) * cg * s.h * s.w];
                let c0 = g * mg;
                let dst = &mut out[c0 * npix..(c0 + mg) * npix];
                let epilogue = |row: usize, acc: &[i32], dst: &mut [O]| {
                    self.requant
                        .row(c0 + row, acc, self.bias[c0 + row], self.exact_f64, dst)
                };
                if pointwise {
                    qgemm::pack_b_rows(xg, cg, npix, &mut panels, parallel);
                    qgemm::qgemm(
                        kernel,
                        &self.packed[g],
                        &panels,
                        npix,
                        dst,
                        parallel,
                        |row, _, acc, d| epilogue(row, acc, d),
                    );
                } else {
                    pairs.fill(xg, cg, s);
                    qconv_direct::conv(&self.packed[g], &pairs, s, dst, parallel, kernel, epilogue);
                }
            }
        };
        if s.n == 1 {
            one_image((0, &mut y), true);
        } else {
            y.par_chunks_mut(img_out).enumerate().for_each(|p| one_image(p, false));
        }
        y
    }
}

/// Quantized Gemm / MatMul with a constant weight: `Y[r][m] = requant(sum_k X[r][k] W[m][k] + b[m])`
/// over the rows `r` of the input's leading dimensions.
#[derive(Debug, Clone, PartialEq)]
pub struct QGemm {
    pub k: usize,
    pub m: usize,
    /// The weight `[m][k]` (kept for export).
    pub weight: Vec<i8>,
    /// It came from a MatMul (no bias; any input rank) rather than a Gemm.
    pub matmul: bool,
    /// The weight as the packed right operand `[k][m]`.
    packed: Vec<i16>,
    pub bias: Vec<i32>,
    pub requant: Requant,
    exact_f64: bool,
}

impl QGemm {
    /// `weight` is `[m][k]` (output features by inputs).
    pub fn new(weight: &[i8], m: usize, k: usize, bias: Vec<i32>, requant: Requant) -> Result<QGemm> {
        if weight.len() != m * k || bias.len() != m {
            return Err(Error::shape(format!(
                "quantized Gemm: {} weights and {} bias values for {m} x {k}",
                weight.len(),
                bias.len()
            )));
        }
        let mut packed = Vec::new();
        qgemm::pack_b_transposed(weight, m, k, &mut packed);
        let exact_f64 = accumulators_fit(weight, m, &bias);
        Ok(QGemm {
            k,
            m,
            weight: weight.to_vec(),
            matmul: false,
            packed,
            bias,
            requant,
            exact_f64,
        })
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
            let a = PackedA::new(x.as_slice::<T>()?, rows, self.k);
            with_qelem!(self.requant.out, O => {
                let mut y = vec![O::from_i32(0); rows * self.m];
                qgemm::qgemm(kernel, &a, &self.packed, self.m, &mut y, rows > qgemm::MR, |_, c0, acc, dst| {
                    // Columns are output features: one channel (factor, bias) per element.
                    for (j, (a, d)) in acc.iter().zip(dst.chunks_mut(1)).enumerate() {
                        let c = c0 + j;
                        self.requant.row(c, std::slice::from_ref(a), self.bias[c], self.exact_f64, d);
                    }
                });
                Tensor::from_vec(shape.clone(), y)
            })
        })
    }
}

/// Integer pooling: max, or average with the mean rounded half to even (the Round node the
/// fake-quantized graph puts after it).
fn qpool(pool: &Pool, x: &Tensor) -> Result<Tensor> {
    let p = pool.plan(x.shape())?;
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
                        crate::kernels::pool::PoolKind::Max => if count == 0 { 0 } else { mx },
                        crate::kernels::pool::PoolKind::Avg { count_include_pad } => {
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

/// The integer ops (one enum variant of `Op`).
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
    },
    /// A float op applied to integer values (converted exactly to f32), its result rounded
    /// half to even into the container `out` (the inputs', or i32 when they differ). Used for
    /// the ops the fake-quantized graph runs in float on integer values (e.g. LeakyRelu
    /// followed by Round).
    Float {
        op: Box<Op>,
        out: DType,
    },
    /// Identity on integers (a Round/Floor after an op that already produces integers).
    Pass,
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
        }
    }

    pub fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = super::input(inputs, 0, "X")?;
        let y = match self {
            IntOp::Requant(r) => r.eval(x)?,
            IntOp::Dequant(d) => d.eval(x)?,
            IntOp::Conv(c) => c.eval(x)?,
            IntOp::Gemm(g) => g.eval(x)?,
            IntOp::Clip { lo, hi } => clip(x, *lo, *hi)?,
            IntOp::Pool(p) => qpool(p, x)?,
            IntOp::GlobalPool { max } => qglobal_pool(*max, x)?,
            IntOp::AddRequant { sub, requant } => {
                let b = super::input(inputs, 1, "B")?;
                if inputs.len() == 2 && x.shape() == b.shape() {
                    with_qelem!(x.dtype(), A => with_qelem!(b.dtype(), B => with_qelem!(requant.out, O => {
                        add_requant::<A, B, O>(x, b, *sub, requant)
                    })))?
                } else {
                    let sum = IntOp::Add { sub: *sub }.eval(inputs)?.swap_remove(0);
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
        };
        Ok(vec![y])
    }
}

/// `requant(a ± b)` for same-shape 8-bit tensors, without an i32 intermediate tensor.
fn add_requant<A: QElem, B: QElem, O: QElem>(a: &Tensor, b: &Tensor, sub: bool, rq: &Requant) -> Result<Tensor> {
    let shape = a.shape().to_vec();
    let (c, inner) = rq.channels_of(&shape)?;
    let (av, bv) = (a.as_slice::<A>()?, b.as_slice::<B>()?);
    let mut y = vec![O::from_i32(0); av.len()];
    if inner > 0 {
        y.par_chunks_mut(inner)
            .zip(av.par_chunks(inner).zip(bv.par_chunks(inner)))
            .enumerate()
            .for_each(|(i, (o, (xa, xb)))| {
                let mut buf = [0i32; 256];
                for ((os, xa), xb) in o.chunks_mut(256).zip(xa.chunks(256)).zip(xb.chunks(256)) {
                    for ((d, &p), &q) in buf.iter_mut().zip(xa).zip(xb) {
                        *d = if sub {
                            p.to_i32() - q.to_i32()
                        } else {
                            p.to_i32() + q.to_i32()
                        };
                    }
                    // Sums of two 8-bit values are far below the exactness bound.
                    rq.row(i % c, &buf[..os.len()], 0, true, os);
                }
            });
    }
    Tensor::from_vec(shape, y)
}

fn clip(x: &Tensor, lo: i32, hi: i32) -> Result<Tensor> {
    let shape = x.shape().to_vec();
    match x.data() {
        TensorData::I8(v) => Tensor::from_vec(
            shape,
            v.iter()
                .map(|&a| i8::from_i32((a as i32).clamp(lo, hi)))
                .collect::<Vec<_>>(),
        ),
        TensorData::U8(v) => Tensor::from_vec(
            shape,
            v.iter()
                .map(|&a| u8::from_i32((a as i32).clamp(lo, hi)))
                .collect::<Vec<_>>(),
        ),
        TensorData::I32(v) => Tensor::from_vec(shape, v.iter().map(|&a| a.clamp(lo, hi.max(lo))).collect::<Vec<_>>()),
        _ => Err(Error::shape(format!("integer clip got a {} tensor", x.dtype().name()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::conv::{ConvShape, Window2d};
    use crate::ops::Padding;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(40))]
        /// Both convolution paths (direct, and packed product for 1x1), grouped or not,
        /// against the definition: i64 sums, then the integer-only requantization.
        #[test]
        fn qconv_matches_the_definition(
            n in 1usize..3, cg in 1usize..5, mg in 1usize..8, group in 1usize..3, hw in 1usize..7,
            k in prop_oneof![Just(1usize), Just(3)], pad in 0usize..2, seed in any::<u64>(), unsigned in any::<bool>(),
        ) {
            let pad = if k == 1 { 0 } else { pad };
            prop_assume!(hw + 2 * pad >= k);
            let (c, m) = (cg * group, mg * group);
            let mut st = seed | 1;
            let mut next = || { st ^= st << 13; st ^= st >> 7; st ^= st << 17; st };
            let w: Vec<i8> = (0..m * cg * k * k).map(|_| next() as i8).collect();
            let bias: Vec<i32> = (0..m).map(|_| (next() % 2001) as i32 - 1000).collect();
            let conv = Conv { kernel_shape: None, strides: None, dilations: None, padding: Padding::Explicit(vec![pad; 4]), group };
            let rq = Requant::new(vec![0.0137], -128, 127).unwrap();
            let q = QConv::new(conv, &w, vec![m, cg, k, k], bias.clone(), rq.clone()).unwrap();
            let x8: Vec<u8> = (0..n * c * hw * hw).map(|_| next() as u8).collect();
            let x = if unsigned {
                Tensor::from_vec(vec![n, c, hw, hw], x8.clone()).unwrap()
            } else {
                Tensor::from_vec(vec![n, c, hw, hw], x8.iter().map(|&v| v as i8).collect::<Vec<_>>()).unwrap()
            };
            let got = q.eval(&x).unwrap();
            let got = got.as_slice::<i8>().unwrap();
            let win = Window2d { kernel: [k, k], strides: [1, 1], dilations: [1, 1], pads: [pad; 4] };
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
