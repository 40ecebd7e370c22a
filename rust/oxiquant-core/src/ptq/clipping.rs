//! Step 5, `adjust_ranges`: replaces a tensor's range `R` by a clipping value `c <= R` that
//! suits the target bit width. Every method works on the streaming histograms of
//! `calibrate` (signed tensors use the histogram of `|x|`, unsigned ones that of `max(x,0)`).
//!
//! - `Max`: `c = R`. No clipping error; the rounding step is as coarse as the outliers ask.
//! - `Mse`: minimizes the expected squared error of quantize-dequantize: rounding error
//!   inside `[-c, c]` plus clipping error outside, each bin counted at its centre.
//! - `Kl`: minimizes the KL divergence between the histogram and its quantized version (the
//!   TensorRT entropy calibration): keeps the shape of the distribution.
//! - `Sigma(k)`: `c = mean + k * std` of the magnitudes, capped at `R`: a cheap outlier cut
//!   that assumes a bell-shaped distribution.
//! - `Percentile`: the upper edge of the histogram bin where the cumulative count reaches
//!   99.999 % of the values, zeros included (onnxruntime's Percentile calibration and its
//!   default percentile): drops the rarest outliers whatever the bit width.

use super::calibrate::RangeStats;
use crate::error::{Error, Result};
use rayon::prelude::*;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Clipping {
    Max,
    Mse,
    Kl,
    Sigma(u32),
    Percentile,
}

/// The share of values `Percentile` keeps inside the clipping value, in percent.
pub const PERCENTILE: f64 = 99.999;

impl Clipping {
    /// The activation clipping methods, as `parse` reads them.
    pub const NAMES: [&'static str; 7] = ["max", "mse", "kl", "sigma3", "sigma4", "sigma5", "percentile"];

    /// An activation clipping method by name (case-insensitive; "entropy" is "kl").
    pub fn parse(s: &str) -> Result<Clipping> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "max" => Clipping::Max,
            "mse" => Clipping::Mse,
            "kl" | "entropy" => Clipping::Kl,
            "sigma3" => Clipping::Sigma(3),
            "sigma4" => Clipping::Sigma(4),
            "sigma5" => Clipping::Sigma(5),
            "percentile" => Clipping::Percentile,
            _ => return Err(Clipping::unknown(&format!("'{s}'"))),
        })
    }

    /// The error for a clipping argument that names no method (`shown`: the value as the
    /// caller wrote it).
    pub fn unknown(shown: &str) -> Error {
        Error::InvalidArgument(format!(
            "clipping must be one of {}; got {shown}",
            Clipping::NAMES.join(", ")
        ))
    }

    /// A weight clipping method: "max" (keep max|W|) or "mse".
    pub fn parse_weight(s: &str) -> Result<Clipping> {
        match s {
            "max" => Ok(Clipping::Max),
            "mse" => Ok(Clipping::Mse),
            _ => Err(Error::InvalidArgument(format!(
                "weight_clipping must be 'max' or 'mse', got '{s}'"
            ))),
        }
    }

    /// Whether the method needs the calibration histograms (not only the extremes).
    pub fn needs_histograms(self) -> bool {
        matches!(self, Clipping::Mse | Clipping::Kl | Clipping::Percentile)
    }

    pub fn name(self) -> String {
        match self {
            Clipping::Max => "max".into(),
            Clipping::Mse => "mse".into(),
            Clipping::Kl => "kl".into(),
            Clipping::Sigma(k) => format!("sigma{k}"),
            Clipping::Percentile => "percentile".into(),
        }
    }
}

/// Largest integer level of an `bits`-bit tensor: `2^(n-1) - 1` signed, `2^n - 1` unsigned.
pub fn levels(bits: u32, signed: bool) -> u32 {
    if signed {
        (1u32 << (bits - 1)) - 1
    } else {
        (1u32 << bits) - 1
    }
}

/// The clipping value (in the units of the statistics) for `bits` and the sign.
pub fn clip_value(stats: &RangeStats, method: Clipping, bits: u32, signed: bool) -> f32 {
    let max = if signed { stats.max_abs } else { stats.max.max(0.0) };
    if max <= 0.0 || stats.range <= 0.0 {
        return max.max(0.0);
    }
    if !stats.histograms && method.needs_histograms() {
        // `adjust_ranges` refuses this case before getting here; MAX is the safe answer.
        return max;
    }
    let c = match method {
        Clipping::Max => max,
        Clipping::Mse => mse_clip(
            &stats.clipping_histogram(signed),
            stats.range,
            max,
            levels(bits, signed).max(1),
        ),
        Clipping::Kl => kl_clip(
            &stats.clipping_histogram(signed),
            stats.range,
            max,
            levels(bits, signed).max(1) as usize + 1,
        ),
        Clipping::Sigma(k) => {
            let n = stats.count.max(1) as f64;
            let (s, s2) = if signed {
                (stats.sum_abs, stats.sum_sq)
            } else {
                (stats.sum_pos, stats.sum_sq_pos)
            };
            let mean = s / n;
            let std = (s2 / n - mean * mean).max(0.0).sqrt();
            (mean + k as f64 * std) as f32
        }
        // Of all the values, exact zeros included (onnxruntime's definition).
        Clipping::Percentile => percentile_clip(
            if signed { &stats.hist_abs } else { &stats.hist_pos },
            stats.range,
            PERCENTILE,
        ),
    };
    c.min(max)
}

/// The upper edge of the first bin at which the cumulative count reaches `percent` % of the
/// histogram's total.
pub fn percentile_clip(hist: &[u64], range: f32, percent: f64) -> f32 {
    let total: u64 = hist.iter().sum();
    if total == 0 || hist.is_empty() {
        return range;
    }
    let target = total as f64 * percent / 100.0;
    let mut seen = 0u64;
    for (i, &h) in hist.iter().enumerate() {
        seen += h;
        if seen as f64 >= target {
            return range * (i + 1) as f32 / hist.len() as f32;
        }
    }
    range
}

/// Expected squared error of quantizing the histogram with clipping value `c` and `l`
/// positive levels (each bin at its centre).
pub fn quantization_error(hist: &[u64], range: f32, c: f32, l: u32) -> f64 {
    let w = range as f64 / hist.len() as f64;
    let step = c as f64 / l as f64;
    let top = l as f64;
    hist.iter()
        .enumerate()
        .filter(|(_, &h)| h > 0)
        .map(|(i, &h)| {
            let x = (i as f64 + 0.5) * w;
            let q = (x / step).round().min(top) * step;
            h as f64 * (x - q) * (x - q)
        })
        .sum()
}

/// Number of candidate clipping values tried by the MSE search.
const MSE_CANDIDATES: usize = 400;

fn mse_clip(hist: &[u64], range: f32, max: f32, l: u32) -> f32 {
    // Candidates spread over (0, max]; `max` itself is one of them.
    let best = (1..=MSE_CANDIDATES)
        .into_par_iter()
        .map(|j| {
            let c = max * j as f32 / MSE_CANDIDATES as f32;
            (quantization_error(hist, range, c, l), j)
        })
        .reduce(
            || (f64::INFINITY, MSE_CANDIDATES),
            |a, b| if b.0 < a.0 || (b.0 == a.0 && b.1 > a.1) { b } else { a },
        );
    max * best.1 as f32 / MSE_CANDIDATES as f32
}

/// KL divergence of `p` from `q` (both unnormalized; bins where `p` is 0 add nothing, bins
/// where only `q` is 0 get a tiny `q`).
fn kl_divergence(p: &[f64], q: &[f64]) -> f64 {
    let (sp, sq): (f64, f64) = (p.iter().sum(), q.iter().sum());
    if sp <= 0.0 || sq <= 0.0 {
        return f64::INFINITY;
    }
    p.iter()
        .zip(q)
        .filter(|(&a, _)| a > 0.0)
        .map(|(&a, &b)| {
            let pa = a / sp;
            let qb = (b / sq).max(1e-12);
            pa * (pa / qb).ln()
        })
        .sum()
}

/// Prefix sums of a histogram that make one KL evaluation O(levels) instead of O(bins).
struct KlTables {
    /// Sums over bins `..k` of the count, of `count * ln(count)`, and of non-empty bins.
    h: Vec<f64>,
    hl: Vec<f64>,
    nz: Vec<usize>,
    hist: Vec<f64>,
}

impl KlTables {
    fn new(hist: &[u64]) -> KlTables {
        let n = hist.len();
        let (mut h, mut hl, mut nz) = (vec![0f64; n + 1], vec![0f64; n + 1], vec![0usize; n + 1]);
        for (k, &c) in hist.iter().enumerate() {
            let c = c as f64;
            h[k + 1] = h[k] + c;
            hl[k + 1] = hl[k] + if c > 0.0 { c * c.ln() } else { 0.0 };
            nz[k + 1] = nz[k] + (c > 0.0) as usize;
        }
        KlTables {
            h,
            hl,
            nz,
            hist: hist.iter().map(|&c| c as f64).collect(),
        }
    }

    /// The same quantity as `kl_for_threshold`, from the prefix sums: with `pn = p / P` and
    /// `qn = q / Q`, `KL = sum pn ln pn - sum_levels (P_j / P) ln qn_j`, because `q` is
    /// constant over the non-empty bins of a level.
    fn kl(&self, i: usize, nq: usize) -> f64 {
        let total = self.h[self.hist.len()];
        let outliers = total - self.h[i];
        let p_last = self.hist[i - 1] + outliers;
        let (p_sum, q_sum) = (total, self.h[i]);
        if p_sum <= 0.0 || q_sum <= 0.0 {
            return f64::INFINITY;
        }
        let p_ln_p = self.hl[i - 1] + if p_last > 0.0 { p_last * p_last.ln() } else { 0.0 };
        let mut cross = 0.0;
        for j in 0..nq {
            let (start, end) = (j * i / nq, ((j + 1) * i / nq).max(j * i / nq + 1).min(i));
            let level_total = self.h[end] - self.h[start];
            let mut nonzero = self.nz[end] - self.nz[start];
            let mut p_level = level_total;
            if end == i {
                // The last kept bin also holds the outliers.
                p_level += outliers;
                if self.hist[i - 1] == 0.0 && outliers > 0.0 {
                    nonzero += 1;
                }
            }
            if nonzero == 0 || p_level <= 0.0 {
                continue;
            }
            let qn = (level_total / nonzero as f64 / q_sum).max(1e-12);
            cross += p_level * qn.ln();
        }
        (p_ln_p - cross) / p_sum - p_sum.ln()
    }
}

/// The KL divergence when the first `i` bins are kept (outliers folded into the last one)
/// and represented by `nq` levels. Plain reference for `KlTables::kl`.
pub fn kl_for_threshold(hist: &[u64], i: usize, nq: usize) -> f64 {
    let mut p: Vec<f64> = hist[..i].iter().map(|&h| h as f64).collect();
    let outliers: u64 = hist[i..].iter().sum();
    p[i - 1] += outliers as f64;
    let mut q = vec![0f64; i];
    for j in 0..nq {
        let (start, end) = (j * i / nq, ((j + 1) * i / nq).max(j * i / nq + 1).min(i));
        let total: f64 = hist[start..end].iter().map(|&h| h as f64).sum();
        let nonzero = p[start..end].iter().filter(|&&v| v > 0.0).count();
        if nonzero > 0 {
            for k in start..end {
                if p[k] > 0.0 {
                    q[k] = total / nonzero as f64;
                }
            }
        }
    }
    kl_divergence(&p, &q)
}

fn kl_clip(hist: &[u64], range: f32, max: f32, nq: usize) -> f32 {
    let bins = hist.len();
    let w = range / bins as f32;
    // Bins beyond the largest value carry nothing: stop there.
    let last = ((max / w).ceil() as usize).clamp(1, bins);
    if last <= nq {
        return max;
    }
    let tables = KlTables::new(hist);
    let best = (nq..=last).into_par_iter().map(|i| (tables.kl(i, nq), i)).reduce(
        || (f64::INFINITY, last),
        |a, b| if b.0 < a.0 || (b.0 == a.0 && b.1 > a.1) { b } else { a },
    );
    (best.1 as f32 * w).min(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats_from(values: &[f32]) -> RangeStats {
        let mut s = RangeStats::new();
        s.update(values).unwrap();
        s
    }

    #[test]
    fn percentile_drops_the_rarest_outliers_only() {
        // 200,000 values in [0, 1) and one outlier (0.0005 % of the values): cut.
        let mut v: Vec<f32> = (0..200_000).map(|i| i as f32 / 200_000.0).collect();
        v.push(50.0);
        let s = stats_from(&v);
        let c = clip_value(&s, Clipping::Percentile, 8, true);
        assert!((1.0..=1.0 + s.bin_width()).contains(&c), "clip {c}");
        // Twenty outliers (0.01 %): kept.
        v.extend(std::iter::repeat_n(50.0, 19));
        let s = stats_from(&v);
        assert_eq!(clip_value(&s, Clipping::Percentile, 8, true), 50.0);
    }

    #[test]
    fn max_is_the_largest_magnitude() {
        let s = stats_from(&[-3.0, 1.0, 2.0]);
        assert_eq!(clip_value(&s, Clipping::Max, 8, true), 3.0);
        assert_eq!(clip_value(&s, Clipping::Max, 8, false), 2.0);
    }

    #[test]
    fn mse_cuts_a_lone_outlier_at_low_bit_width() {
        let mut v: Vec<f32> = (0..10000).map(|i| ((i % 200) as f32 - 100.0) / 100.0).collect();
        v.push(50.0);
        let s = stats_from(&v);
        let c = clip_value(&s, Clipping::Mse, 4, true);
        assert!(c < 5.0, "clip {c}");
        assert!(c >= 0.5, "clip {c}");
    }

    #[test]
    fn fast_kl_matches_the_reference() {
        let mut state = 7u64;
        for case in 0..40 {
            let n = 64 + case * 7;
            let hist: Vec<u64> = (0..n)
                .map(|k| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    // Sparse, with gaps and a heavy head, like real activations.
                    if state.is_multiple_of(5) {
                        0
                    } else {
                        (state % 1000) / (1 + k as u64 / 8)
                    }
                })
                .collect();
            let tables = KlTables::new(&hist);
            for nq in [2usize, 8, 16, 33] {
                for i in nq..=n {
                    let (a, b) = (tables.kl(i, nq), kl_for_threshold(&hist, i, nq));
                    assert!(
                        (a - b).abs() <= 1e-9 * (1.0 + b.abs()) || (a.is_infinite() && b.is_infinite()),
                        "case {case} nq {nq} i {i}: {a} vs {b}"
                    );
                }
            }
        }
    }

    #[test]
    fn sigma_is_capped_at_max() {
        let s = stats_from(&[1.0; 100]);
        assert_eq!(clip_value(&s, Clipping::Sigma(3), 8, true), 1.0);
    }

    #[test]
    fn stats_stream_like_one_batch_up_to_bin_merging() {
        let a: Vec<f32> = (0..1000).map(|i| i as f32 / 1000.0).collect();
        let b: Vec<f32> = (0..1000).map(|i| i as f32 / 100.0).collect();
        let mut s = RangeStats::new();
        s.update(&a).unwrap();
        s.update(&b).unwrap();
        assert_eq!(s.count, 2000);
        assert_eq!(s.hist_abs.iter().sum::<u64>(), 2000);
        assert!(s.range >= 9.99 && s.max_abs == 9.99);
        assert!(s.update(&[f32::NAN]).is_err());
    }
}
