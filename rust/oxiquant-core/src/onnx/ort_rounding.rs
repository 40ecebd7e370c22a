//! Scales for the exports that make onnxruntime round as oxiquant does, where its inputs are
//! 8-bit integers and so can all be checked.
//!
//! oxiquant requantizes an integer `d` to `round_half_even(d * f)` with the exact product
//! (`FixedPoint`). onnxruntime computes the same thing in f32: `d * s` (DequantizeLinear) or
//! `d / s` (QuantizeLinear), rounded to an f32 before it is rounded to an integer. Where the
//! exact value lies within half an f32 step of a tie (`k + 1/2`), that double rounding can
//! land on the other integer. Such near-ties are common: clipping values come from a grid,
//! so a branch factor is often a ratio like 197/198, and 99 * f32(197/198) = 98.5000024 is
//! the f32 98.5, which rounds to even (98) where the exact product rounds to 99. A Gemm
//! further on can turn that one step into several.
//!
//! An 8-bit input has at most 256 values, so a scale is checked on all of them and, if one
//! disagrees, replaced by the nearest f32 on which none does (within `ULPS`; one ulp away on
//! every factor tried). If none does, the plain scale is kept and onnxruntime may differ by
//! one step on the inputs that disagree.

use crate::kernels::requant::FixedPoint;
use std::ops::RangeInclusive;

/// How far (in f32 steps) a scale may move.
const ULPS: u32 = 8;

/// The f32 nearest to `start` (itself first, then 1, 2 ... `ULPS` steps up or down, same
/// sign) on which `agrees` holds; `start` if none does.
fn nearest_agreeing(start: f32, agrees: impl Fn(f32) -> bool) -> f32 {
    if !start.is_finite() || start == 0.0 || agrees(start) {
        return start;
    }
    let b = start.to_bits();
    (1..=ULPS)
        .flat_map(|k| [b.checked_add(k), b.checked_sub(k)])
        .flatten()
        .map(f32::from_bits)
        .find(|&s| s.is_finite() && s != 0.0 && s.signum() == start.signum() && agrees(s))
        .unwrap_or(start)
}

/// The exact requantization of integers `inputs` by `f`, then `out` (zero point and clamp),
/// against onnxruntime's f32 form `rounded(d, s)`: true when they agree on every input.
fn agrees_on(f: f32, inputs: &RangeInclusive<i64>, out: &impl Fn(i64) -> i64, rounded: impl Fn(i64) -> f32) -> bool {
    let Some(fp) = FixedPoint::from_f32(f) else {
        return false;
    };
    inputs
        .clone()
        .all(|d| out(fp.apply(d)) == out(rounded(d).round_ties_even() as i64))
}

/// The scale `s` of `DequantizeLinear(x, s) -> QuantizeLinear(., 1)` (onnxruntime:
/// `round(f32(d * s))`) for integers `d` in `inputs`, requantized by `f` then passed to `out`.
pub fn product_scale(f: f32, inputs: RangeInclusive<i64>, out: impl Fn(i64) -> i64) -> f32 {
    nearest_agreeing(f, |s| agrees_on(f, &inputs, &out, |d| d as f32 * s))
}

/// The scale `s` of `QuantizeLinear(x, s)` (onnxruntime: `round(f32(d / s))`) for integers
/// `d` in `inputs`, requantized by `f` then passed to `out`; near `1 / f`.
pub fn division_scale(f: f32, inputs: RangeInclusive<i64>, out: impl Fn(i64) -> i64) -> f32 {
    nearest_agreeing(1.0 / f, |s| agrees_on(f, &inputs, &out, |d| d as f32 / s))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exact(f: f32, d: i64) -> i64 {
        FixedPoint::from_f32(f).unwrap().apply(d)
    }

    #[test]
    fn product_scales_are_nudged_off_f32_ties() {
        // 197/198: 99 * f is 98.5000024.., which rounds to the f32 98.5 and then to even.
        let f = 197.0f32 / 198.0;
        assert_ne!(exact(f, 99), (99.0 * f).round_ties_even() as i64);
        let s = product_scale(f, -128..=127, |v| v);
        assert!((s.to_bits() as i64 - f.to_bits() as i64).abs() <= ULPS as i64);
        for d in -128..=127 {
            assert_eq!(exact(f, d), (d as f32 * s).round_ties_even() as i64, "input {d}");
        }
    }

    #[test]
    fn division_scales_are_nudged_off_f32_ties() {
        let f = 197.0f32 / 198.0;
        assert_ne!(exact(f, 99), (99.0 / (1.0 / f)).round_ties_even() as i64);
        let s = division_scale(f, 0..=255, |v| v);
        for d in 0..=255 {
            assert_eq!(
                exact(f, d),
                (d as f32 / s).round_ties_even() as i64,
                "factor {f}, input {d}"
            );
        }
    }

    #[test]
    fn exact_ties_cannot_always_be_matched_by_a_division() {
        // 2 * 1.75 = 3.5 exactly (rounded to even: 4), but no f32 near 4/7 divides 2 into
        // exactly 3.5 and 6 into exactly 10.5 at once: the plain reciprocal is kept.
        assert_eq!(division_scale(1.75, 0..=255, |v| v), 1.0 / 1.75);
    }

    #[test]
    fn scales_without_near_ties_are_kept() {
        for f in [0.5f32, 1.0, 0.75, 0.25, 3.0] {
            assert_eq!(product_scale(f, 0..=255, |v| v), f);
            assert_eq!(division_scale(f, 0..=255, |v| v), 1.0 / f);
        }
    }

    #[test]
    fn disagreements_outside_the_clamp_do_not_count() {
        // 0.3 has near-ties (15 * f32(0.3) = 4.5000002 rounds to the f32 4.5); clamped to
        // [0, 2] they no longer matter.
        assert_ne!(product_scale(0.3, 0..=255, |v| v), 0.3);
        assert_eq!(product_scale(0.3, 0..=255, |v| v.clamp(0, 2)), 0.3);
    }
}
