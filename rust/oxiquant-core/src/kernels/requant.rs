//! One file past 800 lines because a third of it is the property tests that hold each fast
//! row (f64 lanes, f32 lanes, the input quantizers) to the integer reference beside it, and
//! all of them share `FixedPoint`, `RowOut` and the exactness bounds.
//!
//! Requantization: `y = clamp(round_half_even(x * f) + zero, lo, hi)` for integer `x` and a
//! factor `f` that is an f32, i.e. exactly the fixed-point number `mult * 2^-shift` with a
//! 24-bit `mult`, and an output zero point `zero` (0 for oxiquant's own models).
//!
//! Two roundings of the product (`Rounding`): `Exact` rounds the exact product `x * f`
//! (oxiquant's own models); `F32` rounds the f32 product `f32(x) * f` as onnxruntime's
//! requantization (`MlasRequantizeOutput`) does, so that models quantized by other tools give
//! onnxruntime's integers wherever its kernels are exact. The two differ only where the f32
//! product lands on the other side of a .5 tie than the exact one.
//!
//! The reference (`FixedPoint::apply`) is integer-only: an i64 product and a rounding shift,
//! as integer hardware does it. The fast kernel computes the same exact product in f64 lanes
//! (AVX2: four per instruction), which is exact while `|x| < 2^29` (29 + 24 bits fit the
//! 53-bit significand) and then rounds with the FPU's ties-to-even mode: the two are equal
//! bit for bit on that domain (property-tested below); callers fall back to the reference
//! outside it.

use crate::tensor::Element;

/// `|x|` below this bound makes the f64 product with an f32 factor exact.
pub const EXACT_F64_BOUND: i64 = 1 << 29;
/// `|x|` below this bound is an exact f32 (the fast `F32` rounding then equals the reference).
pub const EXACT_F32_BOUND: i64 = 1 << 24;

/// How `x * f` is rounded to an integer (half to even in both cases).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Rounding {
    /// The exact product (integer-only reference: `FixedPoint::apply`).
    #[default]
    Exact,
    /// The f32 product `f32(x) * f`, rounded to f32 first (onnxruntime's arithmetic).
    F32,
}

impl Rounding {
    /// `|x|` below this keeps the fast kernel equal to the reference.
    pub fn fast_bound(self) -> i64 {
        match self {
            Rounding::Exact => EXACT_F64_BOUND,
            Rounding::F32 => EXACT_F32_BOUND,
        }
    }
}

/// What a requantized row is turned into: rounding, zero point and clamp bounds (stored units).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowOut {
    pub rounding: Rounding,
    pub zero: i32,
    pub lo: i32,
    pub hi: i32,
}

impl RowOut {
    /// Exact rounding, zero point 0 (oxiquant's own quantizers).
    pub fn exact(lo: i32, hi: i32) -> RowOut {
        RowOut {
            rounding: Rounding::Exact,
            zero: 0,
            lo,
            hi,
        }
    }
}

/// An exact rational factor `mult * 2^-shift`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FixedPoint {
    pub mult: i64,
    pub shift: i32,
}

impl FixedPoint {
    /// The f32 `f` exactly: `mult` is its significand (at most 24 bits), `shift` its exponent.
    /// `None` for NaN and infinities.
    pub fn from_f32(f: f32) -> Option<FixedPoint> {
        if !f.is_finite() {
            return None;
        }
        if f == 0.0 {
            return Some(FixedPoint { mult: 0, shift: 0 });
        }
        let bits = f.to_bits();
        let exp = ((bits >> 23) & 0xff) as i32;
        let frac = (bits & 0x7f_ffff) as i64;
        let (mut m, e) = if exp == 0 {
            (frac, -149)
        } else {
            (frac | 0x80_0000, exp - 150)
        };
        let mut shift = -e;
        while m % 2 == 0 && shift > 0 {
            m /= 2;
            shift -= 1;
        }
        if bits >> 31 == 1 {
            m = -m;
        }
        Some(FixedPoint { mult: m, shift })
    }

    pub fn value(&self) -> f64 {
        self.mult as f64 * 2f64.powi(-self.shift)
    }

    /// `round_half_even(x * mult * 2^-shift)`, exact for `|x| < 2^38`, saturating at the
    /// i64 range.
    #[inline]
    pub fn apply(&self, x: i64) -> i64 {
        let p = x * self.mult; // |x| < 2^38 and |mult| < 2^25: no overflow
        if self.shift <= 0 {
            let s = (-self.shift) as u32;
            return if p == 0 {
                0
            } else if s >= 63 || p.unsigned_abs() > (i64::MAX as u64) >> s {
                if p > 0 {
                    i64::MAX
                } else {
                    i64::MIN
                }
            } else {
                p << s
            };
        }
        if self.shift >= 63 {
            // |p| < 2^63, so |p| * 2^-shift < 1/2.
            return 0;
        }
        let s = self.shift as u32;
        let q = p >> s; // floor
        let r = p - (q << s);
        let half = 1i64 << (s - 1);
        if r > half || (r == half && q & 1 == 1) {
            q + 1
        } else {
            q
        }
    }
}

/// `round_half_even(a / b)` for `b > 0`, exact (integer average pooling).
pub fn div_round_even(a: i64, b: i64) -> i64 {
    let q = a.div_euclid(b);
    let r2 = 2 * a.rem_euclid(b);
    if r2 > b || (r2 == b && q & 1 == 1) {
        q + 1
    } else {
        q
    }
}

/// Element types of quantized activations (one byte each).
pub trait QElem: super::qgemm::QAct + Element {
    const MIN: i32;
    const MAX: i32;
    const UNSIGNED: bool;
    fn from_i32(v: i32) -> Self;
    fn to_i32(self) -> i32;
}
impl QElem for i8 {
    const MIN: i32 = i8::MIN as i32;
    const MAX: i32 = i8::MAX as i32;
    const UNSIGNED: bool = false;
    #[inline]
    fn from_i32(v: i32) -> i8 {
        v.clamp(<Self as QElem>::MIN, <Self as QElem>::MAX) as i8
    }
    #[inline]
    fn to_i32(self) -> i32 {
        self as i32
    }
}
impl QElem for u8 {
    const MIN: i32 = 0;
    const MAX: i32 = u8::MAX as i32;
    const UNSIGNED: bool = true;
    #[inline]
    fn from_i32(v: i32) -> u8 {
        v.clamp(<Self as QElem>::MIN, <Self as QElem>::MAX) as u8
    }
    #[inline]
    fn to_i32(self) -> i32 {
        self as i32
    }
}

/// Reference: `dst[i] = clamp(round(acc[i] + bias) + zero, lo, hi)` with the product rounded
/// as `out.rounding` says: integer-only for `Exact`, IEEE f32 arithmetic for `F32`.
pub fn requant_row_ref<O: QElem>(acc: &[i32], bias: i32, fp: &FixedPoint, out: RowOut, dst: &mut [O]) {
    let f = fp.value() as f32;
    for (d, &a) in dst.iter_mut().zip(acc) {
        let x = a as i64 + bias as i64;
        let r = match out.rounding {
            Rounding::Exact => fp.apply(x),
            // `as` saturates: out-of-range products clamp to the bounds below.
            Rounding::F32 => ((x as f32) * f).round_ties_even() as i64,
        };
        let v = r.saturating_add(out.zero as i64).clamp(out.lo as i64, out.hi as i64);
        *d = O::from_i32(v as i32);
    }
}

/// Fast requantization of one row. Requires `|acc[i] + bias| < out.rounding.fast_bound()`
/// (callers check it once per layer from the weights' magnitude, or per row) and `lo..=hi`
/// inside `O`'s range; then equal to `requant_row_ref`. The product is the exact f64 one,
/// rounded to f32 first for `Rounding::F32` (then equal to the IEEE f32 product, the operand
/// being an exact f32 under the bound).
pub fn requant_row<O: QElem>(acc: &[i32], bias: i32, f: f32, out: RowOut, dst: &mut [O]) {
    requant_row_with(acc, bias, f, out, false, dst)
}

/// `requant_row` for sums known to be small: every `|acc[i] + bias|` below 2^24
/// (`EXACT_F32_BOUND`), where the AVX2 kernel may requantize in f32 lanes
/// (`RowAvx2::with_small_sums`, eight conversions per instruction). Same result.
pub fn requant_row_small<O: QElem>(acc: &[i32], bias: i32, f: f32, out: RowOut, dst: &mut [O]) {
    requant_row_with(acc, bias, f, out, true, dst)
}

fn requant_row_with<O: QElem>(acc: &[i32], bias: i32, f: f32, out: RowOut, small: bool, dst: &mut [O]) {
    #[cfg(target_arch = "x86_64")]
    if super::cpu::features().avx2 {
        let n = acc.len().min(dst.len());
        // SAFETY: `cpu::features` has AVX2; `dst` has `n` one-byte elements (i8 or u8).
        // The constants are made in place (a `RowConsts` moved around per call cost more
        // than the row on ResNet-20's direct convolutions).
        unsafe {
            requant_row_avx2_once(
                &acc[..n],
                bias,
                f as f64,
                out,
                small,
                O::UNSIGNED,
                dst.as_mut_ptr() as *mut u8,
            )
        };
        return;
    }
    RowConsts::new::<O>(bias, f, out, small).apply(acc, dst)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn requant_row_avx2_once(
    acc: &[i32],
    bias: i32,
    f: f64,
    out: RowOut,
    small: bool,
    unsigned: bool,
    dst: *mut u8,
) {
    let row = RowAvx2::new(bias, f, out, unsigned).with_small_sums_if(small);
    // SAFETY: as the caller's: AVX2, `dst` holds `acc.len()` bytes.
    unsafe { requant_row_avx2(&row, acc, dst) }
}

/// One channel's requantization (`requant_row`, or `requant_row_small` when `small`) with
/// its constants set up once, for callers that requantize many short rows of the same
/// channel (a depthwise plane's rows, a packed product's tiles): the setup cost as much as
/// the two vectors of a 16-value row.
#[derive(Clone, Copy)]
pub struct RowConsts {
    bias: i32,
    f: f32,
    out: RowOut,
    unsigned: bool,
    #[cfg(target_arch = "x86_64")]
    simd: Option<RowAvx2>,
}

impl RowConsts {
    /// For output type `O`; `small` promises every `|acc + bias|` below 2^24.
    pub fn new<O: QElem>(bias: i32, f: f32, out: RowOut, small: bool) -> RowConsts {
        RowConsts {
            bias,
            f,
            out,
            unsigned: O::UNSIGNED,
            #[cfg(target_arch = "x86_64")]
            simd: super::cpu::features().avx2.then(|| {
                // SAFETY: `cpu::features` has AVX2.
                unsafe { RowAvx2::new(bias, f as f64, out, O::UNSIGNED) }.with_small_sums_if(small)
            }),
        }
    }

    /// `dst[i]` from `acc[i]`, as `requant_row` (same conditions); `O` must be the type
    /// given to `new`.
    pub fn apply<O: QElem>(&self, acc: &[i32], dst: &mut [O]) {
        assert_eq!(O::UNSIGNED, self.unsigned, "RowConsts: output type differs from new's");
        let n = acc.len().min(dst.len());
        #[cfg(target_arch = "x86_64")]
        if let Some(row) = &self.simd {
            // SAFETY: `simd` exists only with AVX2; `dst` has `n` one-byte elements.
            unsafe { requant_row_avx2(row, &acc[..n], dst.as_mut_ptr() as *mut u8) };
            return;
        }
        let f32_product = self.out.rounding == Rounding::F32;
        let (f, lo, hi, zero) = (
            self.f as f64,
            self.out.lo as f64,
            self.out.hi as f64,
            self.out.zero as f64,
        );
        for (d, &a) in dst[..n].iter_mut().zip(&acc[..n]) {
            let mut p = (a as i64 + self.bias as i64) as f64 * f;
            if f32_product {
                p = p as f32 as f64;
            }
            let y = (p.round_ties_even() + zero).clamp(lo, hi);
            *d = O::from_i32(y as i32);
        }
    }
}

/// The requantization of each output row of a layer (or group), for the kernels that
/// requantize their tiles in registers (`qconv_u8s8::conv_requant`, `qgemm::qgemm_requant`):
/// `requant_row`'s arguments, whose conditions apply (every `acc + bias[row]` below the
/// rounding's fast bound in magnitude).
pub struct RowsRequant {
    pub bias: Vec<i32>,
    pub factor: Vec<f32>,
    pub out: RowOut,
    /// Every `|acc + bias|` is below 2^24 (`RowAvx2::with_small_sums`).
    pub small_sums: bool,
}

impl RowsRequant {
    /// The AVX2 constants of the first `m` rows, for output type `O`.
    ///
    /// # Safety
    /// The CPU must have AVX2.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    pub(crate) unsafe fn simd_rows<O: QElem>(&self, m: usize) -> Vec<RowAvx2> {
        (0..m)
            .map(|r| {
                RowAvx2::new(self.bias[r], self.factor[r] as f64, self.out, O::UNSIGNED)
                    .with_small_sums_if(self.small_sums)
            })
            .collect()
    }

    /// Row `r` requantized plainly (`requant_row`), for the kernels' non-SIMD paths.
    pub fn row<O: QElem>(&self, r: usize, acc: &[i32], dst: &mut [O]) {
        requant_row(acc, self.bias[r], self.factor[r], self.out, dst)
    }
}

/// The whole row: groups of eight, then the last few through one padded group (the lanes
/// are independent, so the padding's lanes are computed and dropped).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn requant_row_avx2(row: &RowAvx2, acc: &[i32], dst: *mut u8) {
    use std::arch::x86_64::*;
    // SAFETY: loads read acc[i..i + 8] and stores write dst[i..i + 8] with i + 8 <= acc.len();
    // the tail goes through local arrays and copies `acc.len() - i` bytes into `dst[i..]`.
    unsafe {
        let mut i = 0;
        while i + 8 <= acc.len() {
            let a = _mm256_loadu_si256(acc.as_ptr().add(i) as *const __m256i);
            _mm_storel_epi64(dst.add(i) as *mut __m128i, row.bytes8(a));
            i += 8;
        }
        let rest = acc.len() - i;
        if rest > 0 {
            let mut lanes = [0i32; 8];
            lanes[..rest].copy_from_slice(&acc[i..]);
            let mut bytes = [0u8; 16];
            let a = _mm256_loadu_si256(lanes.as_ptr() as *const __m256i);
            _mm_storeu_si128(bytes.as_mut_ptr() as *mut __m128i, row.bytes8(a));
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), dst.add(i), rest);
        }
    }
}

/// Reference for `requant_cols`: element `j` is requantized with its own bias `bias[j]` and
/// factor `fp[j]` (the columns of a Gemm are its output channels).
pub fn requant_cols_ref<O: QElem>(acc: &[i32], bias: &[i32], fp: &[FixedPoint], out: RowOut, dst: &mut [O]) {
    for (((d, &a), &b), fp) in dst.iter_mut().zip(acc).zip(bias).zip(fp) {
        requant_row_ref(&[a], b, fp, out, std::slice::from_mut(d));
    }
}

/// Fast requantization of a run of columns, each with its own bias and factor (`f[j]`, the
/// f32 of `requant_cols_ref`'s `fp[j]`). Same conditions and result as `requant_row`: every
/// `|acc[j] + bias[j]|` below `out.rounding.fast_bound()`, `lo..=hi` inside `O`.
pub fn requant_cols<O: QElem>(acc: &[i32], bias: &[i32], f: &[f32], out: RowOut, dst: &mut [O]) {
    let n = acc.len().min(dst.len()).min(bias.len()).min(f.len());
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if n >= 8 && super::cpu::features().avx2 {
        // SAFETY: `cpu::features` has AVX2; `dst` has `n` one-byte elements (i8 or u8).
        done = unsafe {
            requant_cols_avx2(
                &acc[..n],
                &bias[..n],
                &f[..n],
                out,
                O::UNSIGNED,
                dst.as_mut_ptr() as *mut u8,
            )
        };
    }
    for j in done..n {
        requant_row(&acc[j..j + 1], bias[j], f[j], out, &mut dst[j..j + 1]);
    }
}

/// Processes whole groups of eight columns; returns how many it wrote.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn requant_cols_avx2(acc: &[i32], bias: &[i32], f: &[f32], out: RowOut, unsigned: bool, dst: *mut u8) -> usize {
    use std::arch::x86_64::*;
    // SAFETY: loads read acc, bias and f at [i..i + 8] and stores write dst[i..i + 8], with
    // i + 8 <= n <= the length of each.
    unsafe {
        let (lo, hi, zero) = (
            _mm256_set1_pd(out.lo as f64),
            _mm256_set1_pd(out.hi as f64),
            _mm256_set1_pd(out.zero as f64),
        );
        let f32_product = out.rounding == Rounding::F32;
        let n = acc.len();
        let mut i = 0;
        while i + 8 <= n {
            // Wrapping i32 add: exact, the true sum being below the fast bound.
            let a = _mm256_add_epi32(
                _mm256_loadu_si256(acc.as_ptr().add(i) as *const __m256i),
                _mm256_loadu_si256(bias.as_ptr().add(i) as *const __m256i),
            );
            let fv = _mm256_loadu_ps(f.as_ptr().add(i));
            let conv = |h: __m128i, fh: __m128| {
                // The exact product of an i32 below 2^29 and an f32 (53-bit significand).
                let mut p = _mm256_mul_pd(_mm256_cvtepi32_pd(h), _mm256_cvtps_pd(fh));
                if f32_product {
                    p = _mm256_cvtps_pd(_mm256_cvtpd_ps(p));
                }
                let r = _mm256_round_pd::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(p);
                _mm256_cvtpd_epi32(_mm256_min_pd(_mm256_max_pd(_mm256_add_pd(r, zero), lo), hi))
            };
            let lo4 = conv(_mm256_castsi256_si128(a), _mm256_castps256_ps128(fv));
            let hi4 = conv(_mm256_extracti128_si256::<1>(a), _mm256_extractf128_ps::<1>(fv));
            let words = _mm_packs_epi32(lo4, hi4);
            let bytes = if unsigned {
                _mm_packus_epi16(words, words)
            } else {
                _mm_packs_epi16(words, words)
            };
            _mm_storel_epi64(dst.add(i) as *mut __m128i, bytes);
            i += 8;
        }
        i
    }
}

/// `requant_row`'s arithmetic for one row, in AVX2 registers, for kernels that requantize
/// their accumulators before storing them. The same conditions apply: every `acc + bias`
/// below `out.rounding.fast_bound()` in magnitude, `lo..=hi` inside the output type.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
pub(crate) struct RowAvx2 {
    bias: std::arch::x86_64::__m256i,
    f: std::arch::x86_64::__m256d,
    lo: std::arch::x86_64::__m256d,
    hi: std::arch::x86_64::__m256d,
    zero: std::arch::x86_64::__m256d,
    f32_product: bool,
    unsigned: bool,
    /// The zero point is not 0.
    shifted: bool,
    /// `lo..=hi` is narrower than the container, or a product could leave i32: the bounds
    /// need `min`/`max` (else the saturating packs clamp alone).
    clamped: bool,
    /// The f32 lanes (`with_small_sums`): `None`, or whether their rounding needs the
    /// near-tie check.
    lanes32: Option<bool>,
    /// The factor as `new` received it.
    factor: f64,
    f32: std::arch::x86_64::__m256,
    zero_i: std::arch::x86_64::__m256i,
    lo_i: std::arch::x86_64::__m256i,
    hi_i: std::arch::x86_64::__m256i,
}

/// In the f32 lanes, a product this close to a rounding tie (or closer) is redone in f64:
/// below 2^9 the f32 product is within 2^-15 of the exact one, and past it the output
/// saturates whichever way the tie goes.
#[cfg(target_arch = "x86_64")]
const NEAR_TIE: f32 = 0.5 - 1.0 / 16384.0;

#[cfg(target_arch = "x86_64")]
impl RowAvx2 {
    #[target_feature(enable = "avx2")]
    pub(crate) fn new(bias: i32, f: f64, out: RowOut, unsigned: bool) -> RowAvx2 {
        use std::arch::x86_64::*;
        let container = if unsigned { (0, 255) } else { (-128, 127) };
        // Under the bound, `round(a f) + zero` stays inside i32, where `vcvtpd2dq` is exact
        // and the packs saturate to the container's range exactly.
        let fits_i32 = f.abs() * out.rounding.fast_bound() as f64 + (out.zero as f64).abs() < i32::MAX as f64;
        RowAvx2 {
            shifted: out.zero != 0,
            clamped: (out.lo, out.hi) != container || !fits_i32,
            bias: _mm256_set1_epi32(bias),
            f: _mm256_set1_pd(f),
            lo: _mm256_set1_pd(out.lo as f64),
            hi: _mm256_set1_pd(out.hi as f64),
            zero: _mm256_set1_pd(out.zero as f64),
            f32_product: out.rounding == Rounding::F32,
            unsigned,
            lanes32: None,
            factor: f,
            f32: _mm256_set1_ps(f as f32),
            zero_i: _mm256_set1_epi32(out.zero),
            lo_i: _mm256_set1_epi32(out.lo),
            hi_i: _mm256_set1_epi32(out.hi),
        }
    }

    /// Lets `bytes8` requantize in f32 lanes (eight conversions per instruction against
    /// four in f64), for a caller whose every `|acc + bias|` is below 2^24, where the f32
    /// conversion is exact. With `Rounding::F32` or a power-of-two factor the f32 product
    /// is the arithmetic itself; otherwise a vector whose products come near a rounding tie
    /// is redone in f64. Factors of 64 and more keep f64 (products past i32).
    pub(crate) fn with_small_sums(mut self) -> RowAvx2 {
        // The factor `new` received (an f32 widened to f64 by every caller; else no lanes).
        let f = self.factor as f32;
        if f as f64 == self.factor && f.is_finite() && f.abs() < 64.0 && f != 0.0 {
            let power_of_two = f.abs().to_bits() & 0x007f_ffff == 0 && f.is_normal();
            self.lanes32 = Some(!(self.f32_product || power_of_two));
        }
        self
    }

    /// `with_small_sums` when `small` (the caller's bound on every `|acc + bias|` is below
    /// 2^24), else the row as it is.
    pub(crate) fn with_small_sums_if(self, small: bool) -> RowAvx2 {
        if small {
            self.with_small_sums()
        } else {
            self
        }
    }

    /// Eight accumulators requantized, as bytes in the low half.
    #[inline]
    #[target_feature(enable = "avx2")]
    pub(crate) fn bytes8(&self, acc: std::arch::x86_64::__m256i) -> std::arch::x86_64::__m128i {
        use std::arch::x86_64::*;
        // Wrapping i32 add: exact, the true sum being below the fast bound.
        let a = _mm256_add_epi32(acc, self.bias);
        if let Some(checked) = self.lanes32 {
            let p = _mm256_mul_ps(_mm256_cvtepi32_ps(a), self.f32);
            // Half to even under the default MXCSR.
            let mut r = _mm256_cvtps_epi32(p);
            let near_tie = checked && {
                let d = _mm256_sub_ps(p, _mm256_cvtepi32_ps(r));
                let ad = _mm256_andnot_ps(_mm256_set1_ps(-0.0), d);
                _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_GE_OQ>(ad, _mm256_set1_ps(NEAR_TIE))) != 0
            };
            if !near_tie {
                if self.shifted {
                    r = _mm256_add_epi32(r, self.zero_i);
                }
                if self.clamped {
                    r = _mm256_min_epi32(_mm256_max_epi32(r, self.lo_i), self.hi_i);
                }
                let words = _mm_packs_epi32(_mm256_castsi256_si128(r), _mm256_extracti128_si256::<1>(r));
                return if self.unsigned {
                    _mm_packus_epi16(words, words)
                } else {
                    _mm_packs_epi16(words, words)
                };
            }
        }
        let conv = |h: __m128i| {
            let mut p = _mm256_mul_pd(_mm256_cvtepi32_pd(h), self.f);
            if self.f32_product {
                // Round to f32 (nearest even) and back: the IEEE f32 product.
                p = _mm256_cvtps_pd(_mm256_cvtpd_ps(p));
            }
            // Steps skipped when they change nothing (on small layers each instruction here
            // counts: benches/RESULTS.md, "Measured design choices (integer engine)"). Without a
            // zero point the conversion rounds: `vcvtpd2dq` rounds half to even under the
            // default MXCSR (Rust code never changes it), and clamping to integer bounds
            // commutes with rounding. With one, rounding comes first: `p + zero` could
            // round away the bits that break a tie.
            let mut r = p;
            if self.shifted {
                r = _mm256_round_pd::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(r);
                r = _mm256_add_pd(r, self.zero);
            }
            if self.clamped {
                r = _mm256_min_pd(_mm256_max_pd(r, self.lo), self.hi);
            }
            _mm256_cvtpd_epi32(r)
        };
        let lo4 = conv(_mm256_castsi256_si128(a));
        let hi4 = conv(_mm256_extracti128_si256::<1>(a));
        let words = _mm_packs_epi32(lo4, hi4);
        if self.unsigned {
            _mm_packus_epi16(words, words)
        } else {
            _mm_packs_epi16(words, words)
        }
    }
}

/// A requantization of small integers in f32 lanes:
/// `clamp(round_half_even(f32(v + bias) * f) + zero, lo, hi)`, with the f32 product.
///
/// Why: on 8-bit operands (a residual merge, a folded requantization of its shortcut) the
/// exact f64 form converts four lanes per instruction and the tables look up one value at a
/// time; f32 converts and multiplies eight. It is not exact in general (the f32 product can
/// land on the other side of a rounding tie), so it only exists through `verified`, which
/// compares it with the exact outputs on every input of the (bounded) domain.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SmallF32 {
    pub bias: i32,
    pub f: f32,
    pub out: RowOut,
}

impl SmallF32 {
    /// The scalar model of the lanes.
    #[inline]
    pub fn apply(&self, v: i32) -> i32 {
        let p = (v + self.bias) as f32 * self.f;
        (p.round_ties_even() as i32 + self.out.zero).clamp(self.out.lo, self.out.hi)
    }

    /// The form, when `apply(v) == want(v)` for every `v` of `domain` (whose products stay
    /// far inside the i32 range the lanes convert to, and whose `v + bias` are exact f32).
    pub fn verified(
        bias: i32,
        f: f32,
        out: RowOut,
        domain: std::ops::RangeInclusive<i32>,
        want: impl Fn(i32) -> i32,
    ) -> Option<SmallF32> {
        let s = SmallF32 { bias, f, out };
        let (first, last) = (*domain.start() as i64 + bias as i64, *domain.end() as i64 + bias as i64);
        let widest = first.abs().max(last.abs());
        let small = f.is_finite() && widest < 1 << 20 && widest as f64 * (f as f64).abs() < (1u64 << 30) as f64;
        (small && out.zero.abs() < 1 << 16 && domain.into_iter().all(|v| s.apply(v) == want(v))).then_some(s)
    }
}

/// `SmallF32` in AVX2 lanes.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
pub(crate) struct SmallF32Avx2 {
    bias: std::arch::x86_64::__m256i,
    f: std::arch::x86_64::__m256,
    zero: std::arch::x86_64::__m256i,
    lo: std::arch::x86_64::__m256i,
    hi: std::arch::x86_64::__m256i,
}

#[cfg(target_arch = "x86_64")]
impl SmallF32Avx2 {
    #[target_feature(enable = "avx2")]
    pub(crate) fn new(s: &SmallF32) -> SmallF32Avx2 {
        use std::arch::x86_64::*;
        SmallF32Avx2 {
            bias: _mm256_set1_epi32(s.bias),
            f: _mm256_set1_ps(s.f),
            zero: _mm256_set1_epi32(s.out.zero),
            lo: _mm256_set1_epi32(s.out.lo),
            hi: _mm256_set1_epi32(s.out.hi),
        }
    }

    /// Eight values requantized (`vcvtps2dq` rounds half to even under the default MXCSR).
    #[inline]
    #[target_feature(enable = "avx2")]
    pub(crate) fn lanes(&self, v: std::arch::x86_64::__m256i) -> std::arch::x86_64::__m256i {
        use std::arch::x86_64::*;
        let p = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_add_epi32(v, self.bias)), self.f);
        let r = _mm256_add_epi32(_mm256_cvtps_epi32(p), self.zero);
        _mm256_min_epi32(_mm256_max_epi32(r, self.lo), self.hi)
    }
}

/// How an input quantizer brings a float to the integer scale before rounding.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FloatScale {
    /// `x * f` in f64: exact for f32 operands (oxiquant's own quantizers).
    Mul(f32),
    /// The f32 quotient `x / s` of ONNX QuantizeLinear.
    Div(f32),
}

/// Reference for one float: `clamp(round_half_even(scaled x) + zero, lo, hi)`; NaN gives 0
/// (`as` saturates infinities to the bounds).
#[inline]
pub fn quantize_one(x: f32, s: FloatScale, out: RowOut) -> i32 {
    let y = match s {
        FloatScale::Div(d) => (x / d).round_ties_even() as f64,
        FloatScale::Mul(f) => (x as f64 * f as f64).round_ties_even(),
    };
    ((y + out.zero as f64).clamp(out.lo as f64, out.hi as f64)) as i32
}

/// Reference row of `quantize_one` (`out.rounding` plays no part: floats are rounded once).
pub fn quantize_row_ref<O: QElem>(x: &[f32], s: FloatScale, out: RowOut, dst: &mut [O]) {
    for (d, &v) in dst.iter_mut().zip(x) {
        *d = O::from_i32(quantize_one(v, s, out));
    }
}

/// `quantize_row_ref` in AVX2 lanes when available (the same IEEE operations, so the same
/// integers); requires `lo..=hi` inside `O`'s range.
pub fn quantize_row<O: QElem>(x: &[f32], s: FloatScale, out: RowOut, dst: &mut [O]) {
    let n = x.len().min(dst.len());
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if n >= 8 && super::cpu::features().avx2 {
        // SAFETY: `cpu::features` has AVX2; `dst` has `n` one-byte elements (i8 or u8).
        done = unsafe { quantize_row_avx2(&x[..n], s, out, O::UNSIGNED, dst.as_mut_ptr() as *mut u8) };
    }
    quantize_row_ref(&x[done..n], s, out, &mut dst[done..n]);
}

/// Processes whole groups of eight; returns how many elements it wrote.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn quantize_row_avx2(x: &[f32], s: FloatScale, out: RowOut, unsigned: bool, dst: *mut u8) -> usize {
    use std::arch::x86_64::*;
    const NEAREST: i32 = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
    // SAFETY: loads read x[i..i + 8] and stores write dst[i..i + 8] with i + 8 <= x.len().
    unsafe {
        let (vlo, vhi, vz) = (
            _mm256_set1_pd(out.lo as f64),
            _mm256_set1_pd(out.hi as f64),
            _mm256_set1_pd(out.zero as f64),
        );
        let (div, k) = match s {
            FloatScale::Mul(f) => (false, f),
            FloatScale::Div(d) => (true, d),
        };
        let (vf, vd) = (_mm256_set1_pd(k as f64), _mm256_set1_ps(k));
        let finish = |r: __m256d| {
            let nan = _mm256_cmp_pd::<_CMP_UNORD_Q>(r, r);
            let c = _mm256_min_pd(_mm256_max_pd(_mm256_add_pd(r, vz), vlo), vhi);
            // NaN -> +0.0 -> 0, as `as i32` does in the reference.
            _mm256_cvtpd_epi32(_mm256_andnot_pd(nan, c))
        };
        let mut i = 0;
        while i + 8 <= x.len() {
            let v = _mm256_loadu_ps(x.as_ptr().add(i));
            let (l, h) = if div {
                let q = _mm256_round_ps::<NEAREST>(_mm256_div_ps(v, vd));
                (
                    _mm256_cvtps_pd(_mm256_castps256_ps128(q)),
                    _mm256_cvtps_pd(_mm256_extractf128_ps::<1>(q)),
                )
            } else {
                let p = |h: __m128| _mm256_round_pd::<NEAREST>(_mm256_mul_pd(_mm256_cvtps_pd(h), vf));
                (p(_mm256_castps256_ps128(v)), p(_mm256_extractf128_ps::<1>(v)))
            };
            let words = _mm_packs_epi32(finish(l), finish(h));
            let bytes = if unsigned {
                _mm_packus_epi16(words, words)
            } else {
                _mm_packs_epi16(words, words)
            };
            _mm_storel_epi64(dst.add(i) as *mut __m128i, bytes);
            i += 8;
        }
        i
    }
}

/// The fake-quantized graph's quantizer on floats: `x = clamp(round_half_even(x * f), lo, hi)`
/// with the product in f64 (exact for f32 operands), NaN kept. AVX2 lanes when available.
pub fn quantize_f32_in_place(x: &mut [f32], f: f32, lo: f32, hi: f32) {
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if x.len() >= 4 && super::cpu::features().avx2 {
        // SAFETY: `cpu::features` has AVX2.
        done = unsafe { quantize_f32_avx2(x, f as f64, lo as f64, hi as f64) };
    }
    for v in &mut x[done..] {
        *v = quantize_f32_ref(*v, f, lo, hi);
    }
}

/// Reference for one value.
#[inline]
pub fn quantize_f32_ref(v: f32, f: f32, lo: f32, hi: f32) -> f32 {
    let r = ((v as f64) * (f as f64)).round_ties_even() as f32;
    if r < lo {
        lo
    } else if r > hi {
        hi
    } else {
        r
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn quantize_f32_avx2(x: &mut [f32], f: f64, lo: f64, hi: f64) -> usize {
    use std::arch::x86_64::*;
    // SAFETY: each step reads and writes x[i..i + 4] with i + 4 <= x.len().
    unsafe {
        let (vf, vlo, vhi) = (_mm256_set1_pd(f), _mm256_set1_pd(lo), _mm256_set1_pd(hi));
        let p = x.as_mut_ptr();
        let mut i = 0;
        while i + 4 <= x.len() {
            let d = _mm256_mul_pd(_mm256_cvtps_pd(_mm_loadu_ps(p.add(i))), vf);
            let r = _mm256_round_pd::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(d);
            // Bound first: max/min return their second operand when it is NaN, so NaN stays.
            let c = _mm256_min_pd(vhi, _mm256_max_pd(vlo, r));
            _mm_storeu_ps(p.add(i), _mm256_cvtpd_ps(c));
            i += 4;
        }
        i
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The f32 form is refused exactly where it differs from the exact requantization.
    #[test]
    fn small_f32_is_refused_where_the_f32_product_crosses_a_tie() {
        let out = RowOut::exact(-128, 127);
        let exact = |f: f32| move |v: i32| ((v as f64 * f as f64).round_ties_even() as i32).clamp(-128, 127);
        // 5 * f32(0.7) = 3.4999999404: exactly it rounds to 3, but its f32 product is 3.5,
        // which rounds to 4.
        let s = SmallF32 { bias: 0, f: 0.7, out };
        assert_eq!((s.apply(5), exact(0.7)(5)), (4, 3));
        assert!(SmallF32::verified(0, 0.7, out, -256..=255, exact(0.7)).is_none());
        assert!(SmallF32::verified(0, 0.7, out, 0..=4, exact(0.7)).is_some());
        // A factor with no such product on the domain, and the bias and zero point applied.
        let mut shifted = out;
        shifted.zero = 3;
        let want = |v: i32| (((v - 9) as f64 * 0.7137f32 as f64).round_ties_even() as i32 + 3).clamp(-128, 127);
        let s = SmallF32::verified(-9, 0.7137, shifted, -256..=255, want).expect("no tie crossed");
        assert!((-256..=255).all(|v| s.apply(v) == want(v)));
        // Products too large for the lanes' conversion are refused whatever they give.
        assert!(SmallF32::verified(0, 1e7, out, -256..=255, |v| s.apply(v)).is_none());
    }
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn fixed_point_is_the_float_factor_exactly(f in 1e-9f32..1e3, x in -(1i64 << 30)..(1i64 << 30)) {
            let fp = FixedPoint::from_f32(f).unwrap();
            prop_assert_eq!(fp.value(), f as f64);
            // Exact rounding of x * f, computed independently with i128 rationals.
            let (num, den) = (x as i128 * fp.mult as i128, 1i128 << fp.shift.max(0));
            let q = num.div_euclid(den);
            let r2 = 2 * num.rem_euclid(den);
            let want = if r2 > den || (r2 == den && q % 2 != 0) { q + 1 } else { q };
            prop_assert_eq!(fp.apply(x) as i128, want);
        }

        #[test]
        fn fast_row_matches_the_integer_reference(
            acc in proptest::collection::vec(-(1i32 << 28)..(1i32 << 28), 0..40),
            bias in -(1i32 << 20)..(1i32 << 20),
            // Past 4, products can leave i32 (the kernel then clamps before converting);
            // powers of two make ties frequent.
            f in prop_oneof![1e-9f32..4.0, 4.0f32..64.0, (1i32..12).prop_map(|k| 2f32.powi(-k))],
            unsigned in any::<bool>(),
            f32_rounding in any::<bool>(),
            zero in prop_oneof![Just(0i32), -128i32..256],
            // A 4-bit range in the 8-bit container (bounds the packs alone would not apply).
            narrow in any::<bool>(),
        ) {
            let fp = FixedPoint::from_f32(f).unwrap();
            let rounding = if f32_rounding { Rounding::F32 } else { Rounding::Exact };
            // Inside the fast kernel's domain for this rounding.
            let acc: Vec<i32> = acc.iter().map(|&a| a % (rounding.fast_bound() as i32 - (1 << 20))).collect();
            if unsigned {
                let hi = if narrow { 15 } else { 255 };
                let out = RowOut { rounding, zero: zero.clamp(0, hi), lo: 0, hi };
                let (mut a, mut b) = (vec![0u8; acc.len()], vec![0u8; acc.len()]);
                requant_row(&acc, bias, f, out, &mut a);
                requant_row_ref(&acc, bias, &fp, out, &mut b);
                prop_assert_eq!(a, b);
            } else {
                let (lo, hi) = if narrow { (-8, 7) } else { (-128, 127) };
                let out = RowOut { rounding, zero: zero.clamp(lo, hi), lo, hi };
                let (mut a, mut b) = (vec![0i8; acc.len()], vec![0i8; acc.len()]);
                requant_row(&acc, bias, f, out, &mut a);
                requant_row_ref(&acc, bias, &fp, out, &mut b);
                prop_assert_eq!(a, b);
            }
        }

        /// `requant_row_small` (f32 lanes) on sums below 2^24, rows of any length (the
        /// tail through a padded vector), factors that make ties frequent.
        #[test]
        fn small_row_matches_the_integer_reference(
            acc in proptest::collection::vec(-(1i32 << 23)..(1i32 << 23), 0..40),
            bias in -(1i32 << 22)..(1i32 << 22),
            f in prop_oneof![1e-9f32..4.0, 4.0f32..64.0, (1i32..12).prop_map(|k| 2f32.powi(-k)), (1i32..200).prop_map(|k| 0.5 / k as f32)],
            unsigned in any::<bool>(),
            f32_rounding in any::<bool>(),
            zero in prop_oneof![Just(0i32), -128i32..256],
            narrow in any::<bool>(),
        ) {
            let fp = FixedPoint::from_f32(f).unwrap();
            let rounding = if f32_rounding { Rounding::F32 } else { Rounding::Exact };
            let (lo, hi) = match (unsigned, narrow) {
                (true, false) => (0, 255),
                (true, true) => (0, 15),
                (false, false) => (-128, 127),
                (false, true) => (-8, 7),
            };
            let out = RowOut { rounding, zero: zero.clamp(lo, hi), lo, hi };
            if unsigned {
                let (mut a, mut b) = (vec![0u8; acc.len()], vec![0u8; acc.len()]);
                requant_row_small(&acc, bias, f, out, &mut a);
                requant_row_ref(&acc, bias, &fp, out, &mut b);
                prop_assert_eq!(a, b);
            } else {
                let (mut a, mut b) = (vec![0i8; acc.len()], vec![0i8; acc.len()]);
                requant_row_small(&acc, bias, f, out, &mut a);
                requant_row_ref(&acc, bias, &fp, out, &mut b);
                prop_assert_eq!(a, b);
            }
        }

        #[test]
        fn fast_cols_match_the_integer_reference(
            cols in proptest::collection::vec(
                (
                    -(1i32 << 28)..(1i32 << 28),
                    -(1i32 << 20)..(1i32 << 20),
                    prop_oneof![1e-9f32..4.0, 4.0f32..64.0, (1i32..12).prop_map(|k| 2f32.powi(-k))],
                ),
                0..40,
            ),
            unsigned in any::<bool>(),
            f32_rounding in any::<bool>(),
            zero in prop_oneof![Just(0i32), -128i32..256],
            narrow in any::<bool>(),
        ) {
            let rounding = if f32_rounding { Rounding::F32 } else { Rounding::Exact };
            let acc: Vec<i32> = cols.iter().map(|c| c.0 % (rounding.fast_bound() as i32 - (1 << 20))).collect();
            let bias: Vec<i32> = cols.iter().map(|c| c.1).collect();
            let f: Vec<f32> = cols.iter().map(|c| c.2).collect();
            let fp: Vec<FixedPoint> = f.iter().map(|&f| FixedPoint::from_f32(f).unwrap()).collect();
            let (lo, hi) = match (unsigned, narrow) {
                (true, false) => (0, 255),
                (true, true) => (0, 15),
                (false, false) => (-128, 127),
                (false, true) => (-8, 7),
            };
            let out = RowOut { rounding, zero: zero.clamp(lo, hi), lo, hi };
            if unsigned {
                let (mut a, mut b) = (vec![0u8; acc.len()], vec![0u8; acc.len()]);
                requant_cols(&acc, &bias, &f, out, &mut a);
                requant_cols_ref(&acc, &bias, &fp, out, &mut b);
                prop_assert_eq!(a, b);
            } else {
                let (mut a, mut b) = (vec![0i8; acc.len()], vec![0i8; acc.len()]);
                requant_cols(&acc, &bias, &f, out, &mut a);
                requant_cols_ref(&acc, &bias, &fp, out, &mut b);
                prop_assert_eq!(a, b);
            }
        }

        /// The f32 lanes of `RowAvx2::with_small_sums` give the reference's bytes: sums
        /// below 2^24, a third of them placed next to a rounding tie of `f` (where the f32
        /// product can cross it), power-of-two factors (exact ties), both roundings.
        #[test]
        fn f32_lanes_match_the_integer_reference(
            k in proptest::collection::vec((-300i32..300, -2i32..3, any::<u32>()), 1..40),
            bias in -(1i32 << 16)..(1i32 << 16),
            f in prop_oneof![1e-6f32..4.0, 4.0f32..63.0, (1i32..14).prop_map(|k| 2f32.powi(-k))],
            // A factor made so that `a0 * f` is within an f32 rounding of `t0 + 0.5`, the
            // case where the f32 product can land on the other side of the tie.
            tie in proptest::option::of((1i32..(1 << 20), 0i32..300)),
            unsigned in any::<bool>(),
            f32_rounding in any::<bool>(),
            zero in prop_oneof![Just(0i32), -128i32..256],
            narrow in any::<bool>(),
        ) {
            if !crate::kernels::cpu::CpuFeatures::hardware().avx2 {
                return Ok(());
            }
            let f = tie.map_or(f, |(a0, t0)| ((t0 as f64 + 0.5) / a0 as f64) as f32);
            let limit = (1i64 << 24) - (1 << 16) - 1;
            // Half of the sums just around a tie ((t + 0.5) / f, or +-a0), the rest anywhere.
            let acc: Vec<i32> = k.iter().map(|&(t, d, r)| {
                let near = match tie {
                    Some((a0, _)) => if t % 2 == 0 { a0 as i64 } else { -(a0 as i64) },
                    None => ((t as f64 + 0.5) / f as f64).round() as i64,
                };
                let v = if r % 2 == 0 { near + d as i64 - bias as i64 } else { (r as i64 % limit) - limit / 2 };
                v.clamp(-limit, limit) as i32
            }).collect();
            let fp = FixedPoint::from_f32(f).unwrap();
            let rounding = if f32_rounding { Rounding::F32 } else { Rounding::Exact };
            let (lo, hi) = match (unsigned, narrow) {
                (true, false) => (0, 255),
                (true, true) => (0, 15),
                (false, false) => (-128, 127),
                (false, true) => (-8, 7),
            };
            let out = RowOut { rounding, zero: zero.clamp(lo, hi), lo, hi };
            // SAFETY: AVX2 was detected.
            let row = unsafe { RowAvx2::new(bias, f as f64, out, unsigned) }.with_small_sums();
            let mut got = Vec::new();
            for chunk in acc.chunks(8) {
                let mut lanes = [0i32; 8];
                lanes[..chunk.len()].copy_from_slice(chunk);
                let mut bytes = [0u8; 16];
                // SAFETY: AVX2 was detected.
                unsafe {
                    use std::arch::x86_64::*;
                    let v = _mm256_loadu_si256(lanes.as_ptr() as *const __m256i);
                    _mm_storeu_si128(bytes.as_mut_ptr() as *mut __m128i, row.bytes8(v));
                }
                got.extend_from_slice(&bytes[..chunk.len()]);
            }
            let want: Vec<u8> = if unsigned {
                let mut w = vec![0u8; acc.len()];
                requant_row_ref(&acc, bias, &fp, out, &mut w);
                w
            } else {
                let mut w = vec![0i8; acc.len()];
                requant_row_ref(&acc, bias, &fp, out, &mut w);
                w.iter().map(|&v| v as u8).collect()
            };
            prop_assert_eq!(got, want);
        }

        /// The `F32` reference is onnxruntime's arithmetic: the f32 product, rounded half to
        /// even, computed here independently in f32 on exactly representable operands.
        #[test]
        fn f32_rounding_is_the_f32_product(x in -(1i32 << 24)..(1i32 << 24), f in 1e-6f32..2.0, zero in 0i32..256) {
            let fp = FixedPoint::from_f32(f).unwrap();
            let mut y = [0u8; 1];
            requant_row_ref(&[x], 0, &fp, RowOut { rounding: Rounding::F32, zero, lo: 0, hi: 255 }, &mut y);
            let want = (((x as f32) * f).round_ties_even() + zero as f32).clamp(0.0, 255.0) as u8;
            prop_assert_eq!(y[0], want);
        }

        #[test]
        fn fast_float_quantizer_matches_the_reference(
            x in proptest::collection::vec(-1e4f32..1e4, 0..37), f in 1e-4f32..1e3, with_nan in any::<bool>(),
        ) {
            let mut x = x;
            if with_nan && !x.is_empty() {
                x[0] = f32::NAN;
            }
            let want: Vec<f32> = x.iter().map(|&v| quantize_f32_ref(v, f, -128.0, 127.0)).collect();
            quantize_f32_in_place(&mut x, f, -128.0, 127.0);
            prop_assert_eq!(x.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), want.iter().map(|v| v.to_bits()).collect::<Vec<_>>());
        }

        /// The vector input quantizer against the scalar reference, on NaN, infinities,
        /// subnormals, huge values and exact .5 ties (halves times powers of two).
        #[test]
        fn fast_input_quantizer_matches_the_reference(
            x in proptest::collection::vec(prop_oneof![
                any::<f32>(),
                (-600i32..600).prop_map(|k| k as f32 * 0.5),
                -1e4f32..1e4,
                prop_oneof![Just(f32::NAN), Just(f32::INFINITY), Just(f32::NEG_INFINITY), Just(-0.0f32), Just(1e-45f32)],
            ], 0..45),
            k in prop_oneof![Just(0.5f32), Just(1.0), Just(2.0), Just(0.25), 1e-4f32..1e3],
            div in any::<bool>(),
            unsigned in any::<bool>(),
            zero in -128i32..256,
            narrow in 0i32..40,
        ) {
            let s = if div { FloatScale::Div(k) } else { FloatScale::Mul(k) };
            let (clo, chi) = if unsigned { (0, 255) } else { (-128, 127) };
            let out = RowOut { rounding: Rounding::Exact, zero: zero.clamp(clo, chi), lo: clo + narrow, hi: chi - narrow };
            if unsigned {
                let (mut a, mut b) = (vec![0u8; x.len()], vec![0u8; x.len()]);
                quantize_row(&x, s, out, &mut a);
                quantize_row_ref(&x, s, out, &mut b);
                prop_assert_eq!(a, b);
            } else {
                let (mut a, mut b) = (vec![0i8; x.len()], vec![0i8; x.len()]);
                quantize_row(&x, s, out, &mut a);
                quantize_row_ref(&x, s, out, &mut b);
                prop_assert_eq!(a, b);
            }
        }

        #[test]
        fn division_rounds_half_to_even(a in -100_000i64..100_000, b in 1i64..5000) {
            let q = div_round_even(a, b);
            let exact = a as f64 / b as f64;
            prop_assert!((q as f64 - exact).abs() <= 0.5);
            if (q as f64 - exact).abs() == 0.5 {
                prop_assert_eq!(q % 2, 0);
            }
        }
    }

    #[test]
    fn ties_round_to_even() {
        let half = FixedPoint::from_f32(0.5).unwrap();
        assert_eq!((half.mult, half.shift), (1, 1));
        let got: Vec<i64> = [-3, -1, 1, 3, 5].iter().map(|&x| half.apply(x)).collect();
        assert_eq!(got, vec![-2, 0, 0, 2, 2]);
        assert_eq!(FixedPoint::from_f32(4.0).unwrap().apply(3), 12);
        assert_eq!(FixedPoint::from_f32(1e-30).unwrap().apply(1 << 31), 0);
        assert!(FixedPoint::from_f32(f32::NAN).is_none());
        // The input quantizer: ties to even, NaN to 0 (not the zero point), infinities to
        // the bounds, in the vector lanes and the tail.
        let x = [
            0.5f32,
            1.5,
            2.5,
            -0.5,
            -1.5,
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            3.5,
            f32::NAN,
        ];
        let out = RowOut {
            rounding: Rounding::Exact,
            zero: 3,
            lo: -128,
            hi: 127,
        };
        let mut y = [0i8; 10];
        quantize_row(&x, FloatScale::Mul(1.0), out, &mut y);
        assert_eq!(y, [3, 5, 5, 3, 1, 0, 127, -128, 7, 0]);
        // Ties in the fast kernel too (eight lanes plus a tail).
        let acc: Vec<i32> = vec![-3, -1, 1, 3, 5, 7, 9, 11, 13];
        let mut y = vec![0i8; acc.len()];
        requant_row(&acc, 0, 0.5, RowOut::exact(-128, 127), &mut y);
        assert_eq!(y, vec![-2, 0, 0, 2, 2, 4, 4, 6, 6]);
    }
}
