//! Special functions of the activations, in f64: erf (no `std` form), exact and tanh Gelu,
//! Mish. Accurate to well below f32's precision, so the f32 results are correctly rounded
//! or within an ulp. `erf` is musl's (the `libm` crate: a few ns a value);
//! `erf_series` is its plain reference twin, which the tests compare it with.

#[cfg(test)]
use std::f64::consts::FRAC_2_SQRT_PI;
use std::f64::consts::SQRT_2;

/// The error function (musl's rational approximations, within an ulp of f64).
pub fn erf(x: f64) -> f64 {
    libm::erf(x)
}

/// The error function: its Taylor series below 2.5 (alternating, 60 terms are ample in f64
/// there), the continued fraction of erfc above (Lentz's method). The reference twin of
/// `erf`: exact but about 40 ns a value.
#[cfg(test)]
pub fn erf_series(x: f64) -> f64 {
    if x.is_nan() {
        return x;
    }
    let a = x.abs();
    let r = if a < 2.5 {
        // erf x = 2/sqrt(pi) sum (-1)^n x^(2n+1) / (n! (2n+1))
        let (mut term, mut sum) = (a, a);
        let x2 = a * a;
        for n in 1..80 {
            term *= -x2 / n as f64;
            let t = term / (2 * n + 1) as f64;
            sum += t;
            if t.abs() < 1e-17 * sum.abs() {
                break;
            }
        }
        FRAC_2_SQRT_PI * sum
    } else {
        1.0 - erfc_large(a)
    };
    r.copysign(x)
}

/// erfc(x) for x >= 2.5: e^(-x^2)/sqrt(pi) * 1/(x + 1/2 / (x + 1 / (x + 3/2 / (x + ...)))).
#[cfg(test)]
fn erfc_large(x: f64) -> f64 {
    if x > 27.0 {
        return 0.0;
    }
    // Lentz's algorithm on b0 + a1/(b1 + a2/(b2 + ...)) with b_k = x, a_k = k/2.
    let tiny = 1e-300;
    let mut f = x;
    let (mut c, mut d) = (x, 0.0);
    for k in 1..200 {
        let ak = k as f64 / 2.0;
        d = x + ak * d;
        d = if d == 0.0 { tiny } else { d };
        c = x + ak / c;
        c = if c == 0.0 { tiny } else { c };
        d = 1.0 / d;
        let delta = c * d;
        f *= delta;
        if (delta - 1.0).abs() < 1e-16 {
            break;
        }
    }
    (-x * x).exp() / (f * std::f64::consts::PI.sqrt())
}

/// `x Φ(x) = x (1 + erf(x / sqrt 2)) / 2`.
pub fn gelu(x: f64) -> f64 {
    0.5 * x * (1.0 + erf(x / SQRT_2))
}

/// `x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) / 2`.
pub fn gelu_tanh(x: f64) -> f64 {
    let k = (2.0 / std::f64::consts::PI).sqrt();
    0.5 * x * (1.0 + (k * (x + 0.044715 * x * x * x)).tanh())
}

/// `x tanh(softplus(x))`.
pub fn mish(x: f64) -> f64 {
    let sp = if x > 0.0 {
        x + (-x).exp().ln_1p()
    } else {
        x.exp().ln_1p()
    };
    x * sp.tanh()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// erf by the definition, 2/sqrt(pi) times the integral of e^(-t^2) from 0 to x
    /// (composite Simpson's rule, 20000 intervals).
    fn erf_integral(x: f64) -> f64 {
        let n = 20000;
        let h = x / n as f64;
        let f = |t: f64| (-t * t).exp();
        let mut s = f(0.0) + f(x);
        for i in 1..n {
            s += f(i as f64 * h) * if i % 2 == 1 { 4.0 } else { 2.0 };
        }
        FRAC_2_SQRT_PI * s * h / 3.0
    }

    proptest! {
        #[test]
        fn erf_matches_the_integral(x in -6f64..6f64) {
            let (got, want) = (erf_series(x), erf_integral(x));
            prop_assert!((got - want).abs() <= 1e-13, "{x}: {got} vs {want}");
        }

        /// The fast erf and its reference twin agree far below f32's precision (the series
        /// loses a few f64 ulps to cancellation near 2.5), and so give the same f32 (within
        /// an ulp where the f64 value sits on a rounding boundary).
        #[test]
        fn fast_erf_matches_the_series(x in -9f64..9f64) {
            let (got, want) = (erf(x), erf_series(x));
            prop_assert!((got - want).abs() <= 1e-13, "{x}: {got} vs {want}");
            let (g, w) = (got as f32, want as f32);
            prop_assert!((g.to_bits() as i64 - w.to_bits() as i64).abs() <= 1, "{x}: {g} vs {w}");
        }

        /// In the tail erfc itself (the series would lose it) against the integral from x to
        /// x + 12, beyond which e^(-t^2) is negligible.
        #[test]
        fn erfc_tail_is_relatively_accurate(x in 2.5f64..9f64) {
            let n = 40000;
            let h = 12.0 / n as f64;
            let f = |t: f64| (-t * t).exp();
            let mut s = f(x) + f(x + 12.0);
            for i in 1..n {
                s += f(x + i as f64 * h) * if i % 2 == 1 { 4.0 } else { 2.0 };
            }
            let want = FRAC_2_SQRT_PI * s * h / 3.0;
            let got = erfc_large(x);
            prop_assert!((got - want).abs() <= 1e-9 * want, "{x}: {got} vs {want}");
        }
    }

    #[test]
    fn special_values() {
        for f in [erf, erf_series] {
            assert_eq!(f(0.0), 0.0);
            assert_eq!(f(f64::INFINITY), 1.0);
            assert_eq!(f(f64::NEG_INFINITY), -1.0);
            assert!(f(f64::NAN).is_nan());
        }
        assert_eq!(erf(0.0), 0.0);
        assert_eq!(erf(f64::INFINITY), 1.0);
        assert_eq!(erf(f64::NEG_INFINITY), -1.0);
        assert!(erf(f64::NAN).is_nan());
        assert!(mish(f64::NAN).is_nan());
        assert_eq!(mish(1000.0), 1000.0);
    }
}
