//! Float activations built on `exp`, eight lanes at a time: `sigmoid_slice` (Sigmoid, and
//! the SiLU of YOLO-style detectors, where calling libm's `expf` per element took a third of
//! the float run time) and `erf_slice` (the Gelu of BERT-style encoders written with Erf,
//! a fifth of their float run time in libm's f64 `erf`), and `exp_shifted` (Softmax's
//! exponentials and their sum).
//!
//! Each vector kernel has a scalar twin that performs the same IEEE operations in the same
//! order (fused multiply-adds as `f32::mul_add`, the round-to-nearest-even of
//! `vroundps`, and `vmaxps`/`vminps`'s NaN rule), so the two give the same bits: a tensor's
//! values never depend on where they sit in it (the vector body or the scalar tail), nor on
//! the CPU's kernel level. The integer engine's lookup tables, built by evaluating the float
//! island on 256 values, therefore match the fake-quantized graph on whole tensors.
//!
//! `exp` is Cephes' `expf` scheme: `n = round(x log2 e)`, `r = x - n ln 2` in two parts, a
//! degree-7 polynomial for `e^r` on `|r| <= ln2 / 2`, and `2^n` put in the exponent bits;
//! about 1 ULP against the correctly rounded value.

#[cfg(target_arch = "x86_64")]
use rayon::prelude::*;

/// Below this many elements the work stays on the calling thread.
#[cfg(target_arch = "x86_64")]
const PAR_MIN: usize = 1 << 15;

const LOG2E: f32 = std::f32::consts::LOG2_E;
// ln 2 split so that `n * LN2_HI` is exact for |n| <= 127.
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
// Cephes `expf` coefficients of `(e^r - 1 - r) / r^2`.
const P: [f32; 6] = [
    1.987_569_1e-4,
    1.398_199_9e-3,
    8.333_452e-3,
    4.166_579_6e-2,
    1.666_666_5e-1,
    0.5,
];
// erf(x) / x on |x| < 1, a polynomial in x^2 (least squares in f64 against `erf`; 2e-7
// relative in f32, the evaluation's own rounding).
const ERF_SMALL: [f32; 7] = [
    8.006_235e-5,
    -8.053_582e-4,
    5.192_941_5e-3,
    -2.685_606_3e-2,
    1.128_363_5e-1,
    -3.761_263e-1,
    std::f32::consts::FRAC_2_SQRT_PI,
];
// e^(x^2) erfc(x) on 1 <= x <= 4, a polynomial in u = (x - 2.5) / 1.5 (Chebyshev least
// squares in f64; 2e-7 relative in f32).
const ERFCX: [f32; 12] = [
    -3.627_375_2e-5,
    9.460_671e-5,
    -1.456_225_7e-4,
    3.720_123e-4,
    -1.015_575_3e-3,
    2.422_577_7e-3,
    -5.567_948_3e-3,
    1.248_51e-2,
    -2.700_562_6e-2,
    5.611_084e-2,
    -1.115_21e-1,
    2.108_063_5e-1,
];
/// Where `erf` is 1 in f32 (erfc(4) = 1.5e-8, below half an ULP of 1).
const ERF_ONE: f32 = 4.0;

/// `exp`'s argument range: `2^n` stays a normal float (n in [-126, 127]) and the result
/// finite. Sigmoid clamps its exponent here: beyond, its value is 1, or below 1e-38.
const EXP_LO: f32 = -87.0;
const EXP_HI: f32 = 88.0;

/// `vmaxps(a, b)`: `a > b ? a : b` (the second operand when either is NaN).
#[inline(always)]
fn max_like(a: f32, b: f32) -> f32 {
    if a > b {
        a
    } else {
        b
    }
}

/// `vminps(a, b)`: `a < b ? a : b`.
#[inline(always)]
fn min_like(a: f32, b: f32) -> f32 {
    if a < b {
        a
    } else {
        b
    }
}

/// `e^x` for `x` in `[EXP_LO, EXP_HI]` (NaN gives NaN): the scalar twin of `exp_avx2`.
#[inline(always)]
fn exp_in_range(x: f32) -> f32 {
    let n = (x * LOG2E).round_ties_even();
    let r = n.mul_add(-LN2_HI, x);
    let r = n.mul_add(-LN2_LO, r);
    let mut p = P[0];
    for &c in &P[1..] {
        p = p.mul_add(r, c);
    }
    let r2 = r * r;
    let p = p.mul_add(r2, r) + 1.0;
    // n is integral in [-126, 127] (NaN casts to 0; p is NaN then).
    let scale = f32::from_bits(((n as i32 + 127) as u32) << 23);
    p * scale
}

/// `1 / (1 + e^-x)`, the scalar twin of the vector kernel (about 2 ULP from the exact
/// logistic; below -87 it returns at most 1.6e-38 instead of smaller subnormals).
#[inline]
pub fn sigmoid(x: f32) -> f32 {
    let t = min_like(EXP_HI, max_like(EXP_LO, -x));
    1.0 / (1.0 + exp_in_range(t))
}

/// `e^(x - shift)`, 0 where `x - shift` is below `EXP_LO` (Softmax's masked positions hold
/// -inf), NaN where it is NaN.
#[inline(always)]
fn exp_shifted_one(x: f32, shift: f32) -> f32 {
    let t = x - shift;
    let e = exp_in_range(min_like(EXP_HI, max_like(EXP_LO, t)));
    if t < EXP_LO {
        0.0
    } else {
        e
    }
}

/// The scalar twin of the vector `exp_shifted`: the same exponentials, summed in the same
/// order (eight running sums over the vector body, added lane by lane, then the tail).
pub fn exp_shifted_ref(x: &mut [f32], shift: f32) -> f32 {
    let mut lanes = [0f32; 8];
    let body = x.len() / 8 * 8;
    for (i, v) in x[..body].iter_mut().enumerate() {
        *v = exp_shifted_one(*v, shift);
        lanes[i % 8] += *v;
    }
    let mut sum = lanes.iter().fold(0f32, |s, &l| s + l);
    for v in &mut x[body..] {
        *v = exp_shifted_one(*v, shift);
        sum += *v;
    }
    sum
}

/// `x[i] = e^(x[i] - shift)` (0 below `e^-87`), and their sum: Softmax's numerators over
/// one row. The same bits as `exp_shifted_ref`.
pub fn exp_shifted(x: &mut [f32], shift: f32) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if simd() {
        // SAFETY: AVX2 and FMA are present (`simd`).
        return unsafe { avx2::exp_shifted(x, shift) };
    }
    exp_shifted_ref(x, shift)
}

/// Horner's rule with fused multiply-adds, highest coefficient first.
#[inline(always)]
fn horner(c: &[f32], x: f32) -> f32 {
    let mut p = c[0];
    for &k in &c[1..] {
        p = p.mul_add(x, k);
    }
    p
}

/// `erf(x)`, the scalar twin of the vector kernel: `x P(x^2)` below 1 in magnitude, else
/// `1 - e^(-x^2) Q(x)` up to 4 and 1 beyond (within 3 ULP of the exact value).
#[inline]
pub fn erf(x: f32) -> f32 {
    let ax = x.abs();
    let y = if ax < 1.0 {
        ax * horner(&ERF_SMALL, ax * ax)
    } else {
        let a = min_like(ERF_ONE, ax);
        let q = horner(&ERFCX, a.mul_add(1.0 / 1.5, -2.5 / 1.5));
        1.0 - exp_in_range(-(a * a)) * q
    };
    y.copysign(x)
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::*;
    use std::arch::x86_64::*;

    /// Eight `exp_in_range`, the same operations.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn exp(x: __m256) -> __m256 {
        let n = _mm256_round_ps(
            _mm256_mul_ps(x, _mm256_set1_ps(LOG2E)),
            _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC,
        );
        let r = _mm256_fmadd_ps(n, _mm256_set1_ps(-LN2_HI), x);
        let r = _mm256_fmadd_ps(n, _mm256_set1_ps(-LN2_LO), r);
        let mut p = _mm256_set1_ps(P[0]);
        for &c in &P[1..] {
            p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c));
        }
        let r2 = _mm256_mul_ps(r, r);
        let p = _mm256_add_ps(_mm256_fmadd_ps(p, r2, r), _mm256_set1_ps(1.0));
        let e = _mm256_slli_epi32::<23>(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)));
        _mm256_mul_ps(p, _mm256_castsi256_ps(e))
    }

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn horner(c: &[f32], x: __m256) -> __m256 {
        let mut p = _mm256_set1_ps(c[0]);
        for &k in &c[1..] {
            p = _mm256_fmadd_ps(p, x, _mm256_set1_ps(k));
        }
        p
    }

    /// `erf` over `x` in place: both branches on every lane, blended; the tail by the twin.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn erf_inplace(x: &mut [f32]) {
        let sign = _mm256_set1_ps(-0.0);
        let (one, top) = (_mm256_set1_ps(1.0), _mm256_set1_ps(ERF_ONE));
        let (scale, shift) = (_mm256_set1_ps(1.0 / 1.5), _mm256_set1_ps(-2.5 / 1.5));
        let mut chunks = x.chunks_exact_mut(8);
        for c in &mut chunks {
            // SAFETY: `c` holds eight floats.
            let v = unsafe { _mm256_loadu_ps(c.as_ptr()) };
            let ax = _mm256_andnot_ps(sign, v);
            let small = _mm256_mul_ps(ax, horner(&ERF_SMALL, _mm256_mul_ps(ax, ax)));
            let a = _mm256_min_ps(top, ax);
            let q = horner(&ERFCX, _mm256_fmadd_ps(a, scale, shift));
            let e = exp(_mm256_xor_ps(_mm256_mul_ps(a, a), sign));
            let large = _mm256_sub_ps(one, _mm256_mul_ps(e, q));
            let y = _mm256_blendv_ps(large, small, _mm256_cmp_ps::<_CMP_LT_OQ>(ax, one));
            // y >= 0 (or NaN): or-ing the input's sign bit is `copysign`.
            // SAFETY: as the load.
            unsafe { _mm256_storeu_ps(c.as_mut_ptr(), _mm256_or_ps(y, _mm256_and_ps(v, sign))) };
        }
        for v in chunks.into_remainder() {
            *v = erf(*v);
        }
    }

    /// `exp_shifted_ref`'s operations, eight lanes at a time.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn exp_shifted(x: &mut [f32], shift: f32) -> f32 {
        let (lo, hi, sh) = (_mm256_set1_ps(EXP_LO), _mm256_set1_ps(EXP_HI), _mm256_set1_ps(shift));
        let mut acc = _mm256_setzero_ps();
        let body = x.len() / 8 * 8;
        let (head, tail) = x.split_at_mut(body);
        for c in head.chunks_exact_mut(8) {
            // SAFETY: `c` holds eight floats.
            let t = _mm256_sub_ps(unsafe { _mm256_loadu_ps(c.as_ptr()) }, sh);
            let e = exp(_mm256_min_ps(hi, _mm256_max_ps(lo, t)));
            let e = _mm256_andnot_ps(_mm256_cmp_ps::<_CMP_LT_OQ>(t, lo), e);
            acc = _mm256_add_ps(acc, e);
            // SAFETY: as the load.
            unsafe { _mm256_storeu_ps(c.as_mut_ptr(), e) };
        }
        let mut lanes = [0f32; 8];
        // SAFETY: `lanes` holds eight floats.
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), acc) };
        let mut sum = lanes.iter().fold(0f32, |s, &l| s + l);
        for v in tail {
            *v = exp_shifted_one(*v, shift);
            sum += *v;
        }
        sum
    }

    /// `sigmoid` over `x` in place: eight lanes, the tail by the twin.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn sigmoid_inplace(x: &mut [f32]) {
        let (lo, hi, one) = (_mm256_set1_ps(EXP_LO), _mm256_set1_ps(EXP_HI), _mm256_set1_ps(1.0));
        let sign = _mm256_set1_ps(-0.0);
        let mut chunks = x.chunks_exact_mut(8);
        for c in &mut chunks {
            // SAFETY: `c` holds eight floats.
            let v = unsafe { _mm256_loadu_ps(c.as_ptr()) };
            let t = _mm256_min_ps(hi, _mm256_max_ps(lo, _mm256_xor_ps(v, sign)));
            let y = _mm256_div_ps(one, _mm256_add_ps(one, exp(t)));
            // SAFETY: as the load.
            unsafe { _mm256_storeu_ps(c.as_mut_ptr(), y) };
        }
        for v in chunks.into_remainder() {
            *v = sigmoid(*v);
        }
    }
}

/// Whether this process runs the AVX2 + FMA kernels (`cpu::features()`).
#[cfg(target_arch = "x86_64")]
fn simd() -> bool {
    let f = super::cpu::features();
    f.avx2 && f.fma
}

/// `f` over `x` in place, in parallel for large tensors: `vector` when the CPU allows it
/// (it must give `twin`'s bits on every element), else `twin` element by element.
#[cfg(target_arch = "x86_64")]
fn apply(x: &mut [f32], twin: fn(f32) -> f32, vector: unsafe fn(&mut [f32])) {
    let block = |x: &mut [f32]| {
        if simd() {
            // SAFETY: `vector` needs AVX2 and FMA, present (`simd`).
            unsafe { vector(x) };
        } else {
            x.iter_mut().for_each(|v| *v = twin(*v));
        }
    };
    if x.len() >= PAR_MIN {
        x.par_chunks_mut(4096).for_each(block);
    } else {
        block(x);
    }
}

/// `x[i] = sigmoid(x[i])`; the same bits as `sigmoid` on each element.
pub fn sigmoid_slice(x: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    apply(x, sigmoid, avx2::sigmoid_inplace);
    #[cfg(not(target_arch = "x86_64"))]
    x.iter_mut().for_each(|v| *v = sigmoid(*v));
}

/// `x[i] = erf(x[i])`; the same bits as `erf` on each element.
pub fn erf_slice(x: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    apply(x, erf, avx2::erf_inplace);
    #[cfg(not(target_arch = "x86_64"))]
    x.iter_mut().for_each(|v| *v = erf(*v));
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Distance in representable floats (same sign, finite).
    fn ulps(a: f32, b: f32) -> u32 {
        (a.to_bits() as i64 - b.to_bits() as i64).unsigned_abs() as u32
    }

    /// `slice` over `v` gives `twin`'s bits on every element (any NaN for NaN).
    fn same_as_twin(v: &[f32], slice: fn(&mut [f32]), twin: fn(f32) -> f32) -> Result<(), TestCaseError> {
        let mut fast = v.to_vec();
        slice(&mut fast);
        for (x, y) in v.iter().zip(&fast) {
            let want = twin(*x);
            prop_assert!(
                y.to_bits() == want.to_bits() || (y.is_nan() && want.is_nan()),
                "{x}: {y} against {want}"
            );
        }
        Ok(())
    }

    fn exact_sigmoid(x: f32) -> f32 {
        let x = x as f64;
        (1.0 / (1.0 + (-x).exp())) as f32
    }

    proptest! {
        /// The vector kernel gives the twin's bits on every element, at every offset.
        #[test]
        fn vector_kernel_is_the_twin(
            v in proptest::collection::vec(prop_oneof![-100f32..100f32, -10f32..10f32, any::<f32>()], 0..70),
        ) {
            same_as_twin(&v, sigmoid_slice, sigmoid)?;
        }

        /// Within 3 ULP of the correctly rounded logistic down to 1e-37.
        #[test]
        fn twin_is_accurate(x in -86f32..40f32) {
            let (got, want) = (sigmoid(x), exact_sigmoid(x));
            prop_assert!(ulps(got, want) <= 3, "sigmoid({x}) = {got}, exact {want}");
        }
    }

    proptest! {
        /// The erf kernel gives the twin's bits on every element, at every offset.
        #[test]
        fn erf_vector_kernel_is_the_twin(
            v in proptest::collection::vec(prop_oneof![-5f32..5f32, -1.2f32..1.2f32, any::<f32>()], 0..70),
        ) {
            same_as_twin(&v, erf_slice, erf)?;
        }

        /// Within 4 ULP of libm's f64 `erf` rounded to f32, on both branches.
        #[test]
        fn erf_twin_is_accurate(x in prop_oneof![-6f32..6f32, -1e-3f32..1e-3f32]) {
            let (got, want) = (erf(x), libm::erf(x as f64) as f32);
            prop_assert!(ulps(got, want) <= 4 || (got == 0.0 && want == 0.0), "erf({x}) = {got}, exact {want}");
        }
    }

    proptest! {
        /// Softmax's exponentials and sum: the vector kernel gives the twin's bits, and
        /// each value is within 2 ULP of libm's `expf`.
        #[test]
        fn exp_shifted_is_the_twin(
            v in proptest::collection::vec(prop_oneof![-100f32..20f32, Just(f32::NEG_INFINITY), any::<f32>()], 0..70),
            shift in -5f32..5f32,
        ) {
            let (mut fast, mut twin) = (v.clone(), v.clone());
            let (s1, s2) = (exp_shifted(&mut fast, shift), exp_shifted_ref(&mut twin, shift));
            prop_assert!(s1.to_bits() == s2.to_bits() || (s1.is_nan() && s2.is_nan()));
            for ((x, a), b) in v.iter().zip(&fast).zip(&twin) {
                prop_assert!(a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()), "{x}: {a} against {b}");
                let t = x - shift;
                if (-87f32..88f32).contains(&t) {
                    prop_assert!(ulps(*a, t.exp()) <= 2, "exp({t}) = {a}, libm {}", t.exp());
                } else if t < -87.0 {
                    prop_assert_eq!(*a, 0.0);
                }
            }
        }
    }

    #[test]
    fn erf_special_values() {
        let mut v = vec![
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            0.0,
            -0.0,
            4.5,
            -30.0,
            1e-30,
            1.0,
            -1.0,
        ];
        let want: Vec<f32> = v.iter().map(|&x| erf(x)).collect();
        erf_slice(&mut v);
        assert!(v[0].is_nan() && want[0].is_nan());
        assert_eq!(&v[1..], &want[1..]);
        assert_eq!((v[1], v[2], v[5], v[6]), (1.0, -1.0, 1.0, -1.0));
        assert!(v[3].to_bits() == 0 && v[4].to_bits() == (-0.0f32).to_bits());
        let worst = (-4200..4200)
            .map(|i| i as f32 * 1e-3)
            .map(|x| ulps(erf(x), libm::erf(x as f64) as f32))
            .max();
        assert!(worst <= Some(4), "worst {worst:?} ULP");
    }

    #[test]
    fn special_values() {
        let mut v = vec![
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            0.0,
            -0.0,
            87.5,
            -87.5,
            1e30,
            -1e30,
        ];
        let want: Vec<f32> = v.iter().map(|&x| sigmoid(x)).collect();
        sigmoid_slice(&mut v);
        assert!(v[0].is_nan() && want[0].is_nan());
        assert_eq!(&v[1..], &want[1..]);
        assert_eq!((v[1], v[3], v[4], v[5]), (1.0, 0.5, 0.5, 1.0));
        assert!(v[2] >= 0.0 && v[2] < 1e-37 && v[6] < 1e-37 && v[8] < 1e-37);
        // The whole range against f64, on a grid.
        let worst = (-8600..4000)
            .map(|i| i as f32 * 0.01)
            .map(|x| ulps(sigmoid(x), exact_sigmoid(x)))
            .max();
        assert!(worst <= Some(3), "worst {worst:?} ULP");
    }
}
