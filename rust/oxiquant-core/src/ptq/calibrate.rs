//! One file past 800 lines because the streaming statistics, their SIMD builds and the
//! batch-merging property tests must agree on one binning rule (see `RangeStats::grow`).
//!
//! Step 4, `compute_ranges`: runs the parameter-normalized network over calibration batches
//! and records, for every Scaling node output, its largest magnitude and histograms of `|x|`
//! and of `max(x, 0)`. Streaming: the statistics have a fixed size, whatever the number of
//! samples; batches are merged as they come (the histogram range is a power of two that
//! doubles when a batch exceeds it, merging bins pairwise, so no sample is ever kept and the
//! result does not depend on the batch size).

use super::layer_stats::{self, LayerStats, RowSource};
use super::{PtqState, Stage};
use crate::error::{Error, Result};
use crate::exec::Executor;
use crate::graph::Graph;
use crate::ops::Scaling;
use crate::tensor::Tensor;
use rayon::prelude::*;
use std::collections::HashMap;

/// Number of histogram bins over `[0, range]`.
pub const BINS: usize = 2048;

/// Values per parallel task of the statistics passes.
const CHUNK: usize = 1 << 15;

/// Running statistics of one tensor over the calibration set.
#[derive(Debug, Clone, PartialEq)]
pub struct RangeStats {
    /// Upper edge of the histograms: the smallest power of two >= `max_abs`.
    pub range: f32,
    /// `max |x|` and `max x` seen.
    pub max_abs: f32,
    pub max: f32,
    pub min: f32,
    /// Histogram of `|x|` and of `max(x, 0)` over `[0, range]`, `BINS` bins each.
    pub hist_abs: Vec<u64>,
    pub hist_pos: Vec<u64>,
    /// How many values were exactly 0, and how many were <= 0 (counted in bin 0 of
    /// `hist_abs` and `hist_pos`): exactly representable, so the clipping searches leave
    /// them out instead of treating them as values at the bin's centre.
    pub zeros_abs: u64,
    pub zeros_pos: u64,
    /// How many values had `|x|` (for `hist_abs`) or `x` (for `hist_pos`) exactly equal to
    /// `range` (0 while the range is 0). Such a value lies on the upper edge of the
    /// histograms and is counted in their last bin; when the range doubles, its bin is the
    /// first of the upper half (`BINS / 2`), not the one the last bin merges into, and
    /// `grow` moves it there. Without this count, the bin of a value at a power of two
    /// would depend on how the samples were split into batches and in which order.
    pub top_abs: u64,
    pub top_pos: u64,
    pub count: u64,
    /// Sums of `|x|`, `x^2`, `max(x,0)`, `max(x,0)^2` (for the sigma clipping).
    pub sum_abs: f64,
    pub sum_sq: f64,
    pub sum_pos: f64,
    pub sum_sq_pos: f64,
    /// Whether the histograms are kept (MSE and KL clipping need them; MAX and SIGMA do not,
    /// and skipping them saves a pass over every tensor).
    pub histograms: bool,
}

/// The smallest power of two >= `x` (for `x > 0`).
fn pow2_at_least(x: f32) -> f32 {
    let mut p = 2f32.powi(x.log2().floor() as i32);
    while p < x {
        p *= 2.0;
    }
    p
}

/// Extremes and sums of one chunk.
struct Moments {
    min: f32,
    max: f32,
    /// Sums of |x|, x^2, max(x,0), max(x,0)^2.
    sums: [f64; 4],
    zeros: u64,
    finite: bool,
}

impl Moments {
    fn empty() -> Moments {
        Moments {
            min: f32::INFINITY,
            max: f32::NEG_INFINITY,
            sums: [0.0; 4],
            zeros: 0,
            finite: true,
        }
    }
    fn merge(a: Moments, b: Moments) -> Moments {
        Moments {
            min: a.min.min(b.min),
            max: a.max.max(b.max),
            sums: [0, 1, 2, 3].map(|i| a.sums[i] + b.sums[i]),
            zeros: a.zeros + b.zeros,
            finite: a.finite && b.finite,
        }
    }
}

/// One chunk's moments in sixteen f32 lanes (a chunk is at most 32K values, so f32 partial
/// sums lose at most about 1e-4 relative, plenty for the sigma clipping). Sixteen lanes on
/// every CPU, so that the sums do not depend on which kernel ran.
fn chunk_moments(c: &[f32]) -> Moments {
    #[cfg(target_arch = "x86_64")]
    if crate::kernels::cpu::features().avx512f {
        // SAFETY: AVX-512 F was detected just above.
        return unsafe { simd::chunk_moments_avx512(c) };
    }
    #[cfg(target_arch = "x86_64")]
    if crate::kernels::cpu::features().avx2 {
        // SAFETY: AVX2 was detected just above.
        return unsafe { simd::chunk_moments(c) };
    }
    chunk_moments_body(c)
}

#[inline(always)]
fn chunk_moments_body(c: &[f32]) -> Moments {
    const L: usize = 16;
    let (mut lo, mut hi) = ([f32::INFINITY; L], [f32::NEG_INFINITY; L]);
    let (mut sa, mut ss, mut sp, mut ssp, mut nan) = ([0f32; L], [0f32; L], [0f32; L], [0f32; L], [0f32; L]);
    let mut zeros = [0u32; L];
    let mut lanes = c.chunks_exact(L);
    for v in &mut lanes {
        for i in 0..L {
            let x = v[i];
            let a = x.abs();
            let p = if x > 0.0 { x } else { 0.0 };
            lo[i] = if x < lo[i] { x } else { lo[i] };
            hi[i] = if x > hi[i] { x } else { hi[i] };
            sa[i] += a;
            ss[i] += a * a;
            sp[i] += p;
            ssp[i] += p * p;
            // NaN and infinities make this NaN.
            nan[i] += x * 0.0;
            zeros[i] += (x == 0.0) as u32;
        }
    }
    let mut m = Moments::empty();
    for i in 0..L {
        m.min = m.min.min(lo[i]);
        m.max = m.max.max(hi[i]);
        m.sums[0] += sa[i] as f64;
        m.sums[1] += ss[i] as f64;
        m.sums[2] += sp[i] as f64;
        m.sums[3] += ssp[i] as f64;
        m.finite &= nan[i] == 0.0;
        m.zeros += zeros[i] as u64;
    }
    for &x in lanes.remainder() {
        let p = x.max(0.0) as f64;
        m.min = m.min.min(x);
        m.max = m.max.max(x);
        m.sums[0] += x.abs() as f64;
        m.sums[1] += (x as f64) * (x as f64);
        m.sums[2] += p;
        m.sums[3] += p * p;
        m.finite &= x.is_finite();
        m.zeros += (x == 0.0) as u64;
    }
    m
}

/// Bin of `v` in the two-sided table of `chunk_histogram`: `|v| * scale` truncated (at most
/// the last bin), plus `BINS` for negative values (-0.0 counts as positive, like 0.0).
#[inline(always)]
fn bin_of(v: f32, scale: f32) -> usize {
    ((v.abs() * scale) as usize).min(BINS - 1) + (v < 0.0) as usize * BINS
}

/// Counts of `bin_of` over one chunk (finite values). The plain loop, kept as the reference.
#[cfg(test)]
fn chunk_histogram_ref(c: &[f32], scale: f32) -> Vec<u32> {
    let mut t = vec![0u32; 2 * BINS];
    for &v in c {
        t[bin_of(v, scale)] += 1;
    }
    t
}

/// `chunk_histogram_ref` (AVX2 where the CPU has it; benches/RESULTS.md, "Measured design
/// choices (calibration)"):
/// indices for eight values at a time, counted into two u16 tables in turn, so that
/// neighbouring values in one bin do not wait on each other's increment. u16 cannot
/// overflow: a chunk holds at most `CHUNK` = 2^15 values.
fn chunk_histogram(c: &[f32], scale: f32) -> Vec<u32> {
    #[cfg(target_arch = "x86_64")]
    if crate::kernels::cpu::features().avx2 {
        // SAFETY: AVX2 was detected just above.
        return unsafe { simd::chunk_histogram(c, scale) };
    }
    chunk_histogram_body(c, scale)
}

/// The statistics loops for AVX2 and AVX-512 (the crate targets baseline x86-64: SSE2, 4
/// lanes): the moments are the portable code compiled again (same results; its speed-up is in
/// benches/RESULTS.md), the histogram has explicit AVX2 vector index code.
#[cfg(target_arch = "x86_64")]
mod simd {
    use super::{chunk_moments_body, Moments};

    /// `chunk_histogram_body` with the bin indices computed by explicit vector code: the
    /// compiler keeps the saturating float-to-int cast scalar (it must handle NaN, which
    /// cannot occur here).
    ///
    /// SAFETY: the CPU must have AVX2.
    #[target_feature(enable = "avx2")]
    pub unsafe fn chunk_histogram(c: &[f32], scale: f32) -> Vec<u32> {
        use super::{bin_of, BINS};
        use std::arch::x86_64::*;
        let mut t = [vec![0u16; 2 * BINS], vec![0u16; 2 * BINS]];
        let mut lanes = c.chunks_exact(8);
        let mut idx = [0i32; 8];
        let (s, last) = (_mm256_set1_ps(scale), _mm256_set1_ps((BINS - 1) as f32));
        let abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(i32::MAX));
        let neg_offset = _mm256_set1_epi32(BINS as i32);
        for v in &mut lanes {
            // SAFETY: `v` has 8 values; `idx` has room for 8.
            unsafe {
                let x = _mm256_loadu_ps(v.as_ptr());
                let f = _mm256_min_ps(_mm256_mul_ps(_mm256_and_ps(x, abs_mask), s), last);
                let neg = _mm256_castps_si256(_mm256_cmp_ps::<_CMP_LT_OQ>(x, _mm256_setzero_ps()));
                let i = _mm256_add_epi32(_mm256_cvttps_epi32(f), _mm256_and_si256(neg, neg_offset));
                _mm256_storeu_si256(idx.as_mut_ptr().cast(), i);
            }
            for (l, &i) in idx.iter().enumerate() {
                t[l & 1][i as usize] += 1;
            }
        }
        let mut out: Vec<u32> = t[0].iter().zip(&t[1]).map(|(&a, &b)| a as u32 + b as u32).collect();
        for &v in lanes.remainder() {
            out[bin_of(v, scale)] += 1;
        }
        out
    }

    /// SAFETY: the CPU must have AVX2.
    #[target_feature(enable = "avx2")]
    pub unsafe fn chunk_moments(c: &[f32]) -> Moments {
        chunk_moments_body(c)
    }

    /// The moments with AVX-512 (one 512-bit vector per sixteen lanes).
    ///
    /// SAFETY: the CPU must have AVX-512 F.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn chunk_moments_avx512(c: &[f32]) -> Moments {
        chunk_moments_body(c)
    }
}

/// The portable version of `chunk_histogram`.
fn chunk_histogram_body(c: &[f32], scale: f32) -> Vec<u32> {
    debug_assert!(c.len() <= CHUNK);
    const LANES: usize = 8;
    let last = (BINS - 1) as f32;
    let mut t = [vec![0u16; 2 * BINS], vec![0u16; 2 * BINS]];
    let mut lanes = c.chunks_exact(LANES);
    let mut idx = [0usize; LANES];
    for v in &mut lanes {
        for l in 0..LANES {
            // NaN is impossible here (the moments pass refused it); `min` then bounds it.
            let f = (v[l].abs() * scale).min(last);
            idx[l] = f as i32 as usize + (v[l] < 0.0) as usize * BINS;
        }
        for (l, &i) in idx.iter().enumerate() {
            t[l & 1][i] += 1;
        }
    }
    let mut out: Vec<u32> = t[0].iter().zip(&t[1]).map(|(&a, &b)| a as u32 + b as u32).collect();
    for &v in lanes.remainder() {
        out[bin_of(v, scale)] += 1;
    }
    out
}

impl RangeStats {
    pub fn new() -> RangeStats {
        RangeStats {
            range: 0.0,
            max_abs: 0.0,
            max: f32::NEG_INFINITY,
            min: f32::INFINITY,
            hist_abs: vec![0; BINS],
            hist_pos: vec![0; BINS],
            zeros_abs: 0,
            zeros_pos: 0,
            top_abs: 0,
            top_pos: 0,
            count: 0,
            sum_abs: 0.0,
            sum_sq: 0.0,
            sum_pos: 0.0,
            sum_sq_pos: 0.0,
            histograms: true,
        }
    }

    /// Statistics without histograms (extremes, zeros and sums only).
    pub fn without_histograms() -> RangeStats {
        RangeStats {
            histograms: false,
            hist_abs: Vec::new(),
            hist_pos: Vec::new(),
            ..RangeStats::new()
        }
    }

    /// Width of one bin.
    pub fn bin_width(&self) -> f32 {
        self.range / BINS as f32
    }

    /// Doubles the range `k` times, merging bins pairwise; the values that were exactly at
    /// the old range move from where the last bin merges (`(BINS - 1) >> k`) to their own
    /// bin (`BINS >> k`), so that every value ends in `floor(|x| * BINS / range)` as if the
    /// range had been the new one from the start.
    fn grow(&mut self, k: u32) {
        if k == 0 {
            return;
        }
        let k = k.min(63);
        for (h, top) in [
            (&mut self.hist_abs, &mut self.top_abs),
            (&mut self.hist_pos, &mut self.top_pos),
        ] {
            if h.is_empty() {
                continue;
            }
            let mut merged = vec![0u64; BINS];
            for (i, &c) in h.iter().enumerate() {
                merged[i >> k] += c;
            }
            merged[(BINS - 1) >> k] -= *top;
            merged[BINS >> k] += *top;
            *top = 0;
            *h = merged;
        }
        self.range *= 2f32.powi(k as i32);
    }

    /// Adds a tensor's values. Fails on NaN or infinity.
    ///
    /// Two passes over the data, each split across threads: extremes and sums (eight lanes,
    /// so that it vectorizes), then one histogram increment per value (positive and negative
    /// magnitudes in one table, so the sign costs no branch).
    pub fn update(&mut self, x: &[f32]) -> Result<()> {
        if x.is_empty() {
            return Ok(());
        }
        let moments = x
            .par_chunks(CHUNK)
            .map(chunk_moments)
            .reduce(Moments::empty, Moments::merge);
        if !moments.finite {
            return Err(Error::InvalidArgument("a value is NaN or infinite".into()));
        }
        let (lo, hi) = (moments.min, moments.max);
        let m = lo.abs().max(hi.abs());
        self.min = self.min.min(lo);
        self.max = self.max.max(hi);
        self.max_abs = self.max_abs.max(m);
        // The range is always a power of two: then it depends only on the largest value,
        // never on how the samples were split into batches, and growing it merges bins
        // exactly (the edges of the coarser histogram are edges of the finer one).
        if m > self.range {
            let target = pow2_at_least(m);
            if self.range == 0.0 {
                self.range = target;
            } else {
                while self.range < target {
                    self.grow(1);
                }
            }
        }
        self.zeros_abs += moments.zeros;
        self.sum_abs += moments.sums[0];
        self.sum_sq += moments.sums[1];
        self.sum_pos += moments.sums[2];
        self.sum_sq_pos += moments.sums[3];
        self.count += x.len() as u64;
        if !self.histograms {
            return Ok(());
        }
        let range = self.range;
        let scale = if range > 0.0 { BINS as f32 / range } else { 0.0 };
        // Bins 0..BINS: positive values and zeros; BINS..2*BINS: negative magnitudes.
        let table = x
            .par_chunks(CHUNK)
            .map(|c| chunk_histogram(c, scale))
            .reduce_with(|mut a, b| {
                a.iter_mut().zip(&b).for_each(|(x, y)| *x += y);
                a
            });
        if let Some(t) = table {
            let (pos, neg) = t.split_at(BINS);
            let negatives: u64 = neg.iter().map(|&c| c as u64).sum();
            for i in 0..BINS {
                self.hist_abs[i] += (pos[i] + neg[i]) as u64;
                self.hist_pos[i] += pos[i] as u64;
            }
            self.hist_pos[0] += negatives;
            self.zeros_pos += moments.zeros + negatives;
        }
        // Values on the upper edge (rare: the batch's largest magnitude is the range itself).
        if range > 0.0 && m == range {
            self.top_abs += x.iter().filter(|v| v.abs() == range).count() as u64;
            if hi == range {
                self.top_pos += x.iter().filter(|&&v| v == range).count() as u64;
            }
        }
        Ok(())
    }

    /// Adds the statistics of other samples, as if `update` had seen them after this one's.
    /// Exact: both ranges are powers of two, so the finer histogram's bins merge pairwise
    /// into the coarser one's, as `update` does when the range grows.
    pub fn merge(&mut self, mut other: RangeStats) {
        if other.count == 0 {
            return;
        }
        if self.range == 0.0 {
            // Only zeros so far (all in bin 0, whatever the range), or nothing.
            self.range = other.range;
        } else if other.range > self.range {
            self.grow((other.range / self.range).log2().round() as u32);
        } else if other.range > 0.0 && other.range < self.range {
            other.grow((self.range / other.range).log2().round() as u32);
        }
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        self.max_abs = self.max_abs.max(other.max_abs);
        for (mine, theirs) in [
            (&mut self.hist_abs, &other.hist_abs),
            (&mut self.hist_pos, &other.hist_pos),
        ] {
            mine.iter_mut().zip(theirs).for_each(|(a, b)| *a += b);
        }
        self.zeros_abs += other.zeros_abs;
        self.zeros_pos += other.zeros_pos;
        // Both at the same range now (a grown side's values at its old range were moved).
        self.top_abs += other.top_abs;
        self.top_pos += other.top_pos;
        self.count += other.count;
        self.sum_abs += other.sum_abs;
        self.sum_sq += other.sum_sq;
        self.sum_pos += other.sum_pos;
        self.sum_sq_pos += other.sum_sq_pos;
    }

    /// The histogram the clipping searches use: of `|x|` (signed) or `max(x, 0)` (unsigned),
    /// without the exact zeros.
    pub fn clipping_histogram(&self, signed: bool) -> Vec<u64> {
        let (mut h, z) = if signed {
            (self.hist_abs.clone(), self.zeros_abs)
        } else {
            (self.hist_pos.clone(), self.zeros_pos)
        };
        if let Some(first) = h.first_mut() {
            *first = first.saturating_sub(z);
        }
        h
    }

    /// Whether every value seen was >= 0.
    pub fn non_negative(&self) -> bool {
        self.count > 0 && self.min >= 0.0
    }
}

impl Default for RangeStats {
    fn default() -> Self {
        RangeStats::new()
    }
}

/// Starts a fresh calibration (statistics cleared); `histograms: false` keeps only what MAX
/// and SIGMA clipping need.
pub fn begin(state: &mut PtqState, histograms: bool) -> Result<()> {
    begin_with(state, histograms, 0)
}

/// `begin`, also gathering the input statistics of every affine node (`layer_stats`) over
/// the first `layer_samples` samples (0: none).
pub fn begin_with(state: &mut PtqState, histograms: bool, layer_samples: usize) -> Result<()> {
    state.expect(
        "compute_ranges",
        Stage::ParamsNormalized,
        &[Stage::Calibrated, Stage::RangesAdjusted],
    )?;
    let mut before = state.clone();
    before.calib_backup = None;
    state.calib_backup = Some(Box::new(before));
    for info in state.scaling.values_mut() {
        info.stats = Some(if histograms {
            RangeStats::new()
        } else {
            RangeStats::without_histograms()
        });
        info.clip = None;
        info.clipping = None;
        info.scale_per_clip = 1.0;
    }
    state.batches_seen = 0;
    state.samples_seen = 0;
    state.layer_samples = layer_samples;
    state.layer_stats.clear();
    state.stage = Stage::ParamsNormalized;
    Ok(())
}

/// Runs one batch and merges its statistics. `begin` must have been called.
pub fn observe_batch(graph: &Graph, state: &mut PtqState, feeds: HashMap<String, Tensor>) -> Result<()> {
    observe_batches(graph, state, vec![feeds])
}

/// Runs several batches at once, one per thread of the current pool, and merges their
/// statistics in the order given. `begin` must have been called.
///
/// Why batches side by side rather than one batch over every thread: a batch of a small
/// network is a chain of short layers, and splitting each layer across threads costs a
/// fork-join per layer and leaves threads idle at each join; whole batches keep every
/// core busy from the first layer to the last (benches/RESULTS.md, "Reading the PTQ
/// figures", has the A/B). Each batch
/// gathers its own statistics, merged afterwards (`RangeStats::merge`) in the order of
/// `batches`: the result is the same whatever the number of threads.
pub fn observe_batches(graph: &Graph, state: &mut PtqState, batches: Vec<HashMap<String, Tensor>>) -> Result<()> {
    state.expect("compute_ranges", Stage::ParamsNormalized, &[Stage::Calibrated])?;
    // Output value -> Scaling node name.
    let watched: HashMap<String, String> = graph
        .nodes
        .iter()
        .filter(|n| n.op.is::<Scaling>())
        .filter(|n| state.scaling.get(&n.name).is_some_and(|i| i.role.calibrated()))
        .map(|n| (n.outputs[0].clone(), n.name.clone()))
        .collect();
    // Empty statistics of the same kind as the running ones, for each batch to fill.
    let fresh: HashMap<String, RangeStats> = watched
        .values()
        .filter_map(|node| {
            let s = state.scaling.get(node)?.stats.as_ref()?;
            let empty = if s.histograms {
                RangeStats::new()
            } else {
                RangeStats::without_histograms()
            };
            Some((node.clone(), empty))
        })
        .collect();
    let exec = Executor::new(graph)?;
    // Which batches also gather the affine nodes' input statistics: those that start within
    // the first `layer_samples` samples.
    let layers = LayerWatch::new(graph, state);
    let mut start = state.samples_seen;
    let with_layers: Vec<bool> = batches
        .iter()
        .map(|f| {
            let on = start < state.layer_samples;
            start += f.values().next().and_then(|t| t.shape().first().copied()).unwrap_or(1);
            on
        })
        .collect();
    let results: Vec<Result<BatchStats>> = batches
        .into_par_iter()
        .zip(with_layers)
        .with_max_len(1)
        .map(|(feeds, on)| observe_one(&exec, &watched, fresh.clone(), on.then_some(&layers), feeds))
        .collect();
    // Nothing is merged unless every batch succeeded: a failed call leaves the running
    // statistics as they were.
    let results = results.into_iter().collect::<Result<Vec<_>>>()?;
    for (batch, stats, layer) in results {
        for (node, s) in stats {
            if let Some(running) = state.scaling.get_mut(&node).and_then(|i| i.stats.as_mut()) {
                running.merge(s);
            }
        }
        for (node, s) in layer {
            match state.layer_stats.get_mut(&node) {
                Some(running) => running.merge(&s),
                None => {
                    state.layer_stats.insert(node, s);
                }
            }
        }
        state.batches_seen += 1;
        state.samples_seen += batch;
    }
    Ok(())
}

/// One affine node reading a value: its name, row source, weight shape and input scale.
type LayerReader = (String, RowSource, Vec<usize>, f32);

/// The affine nodes whose inputs are gathered, by input value.
struct LayerWatch {
    by_value: HashMap<String, Vec<LayerReader>>,
}

impl LayerWatch {
    fn new(graph: &Graph, state: &PtqState) -> LayerWatch {
        let mut by_value: HashMap<String, Vec<LayerReader>> = HashMap::new();
        if state.layer_samples > 0 {
            for (node, x, src) in layer_stats::watched_inputs(graph, &state.excluded) {
                let Some(idx) = graph.node_index(&node) else { continue };
                let Some(w) = graph.nodes[idx].inputs.get(1).and_then(|v| graph.initializers.get(v)) else {
                    continue;
                };
                let scale = state.scale(&x)[0];
                by_value
                    .entry(x)
                    .or_default()
                    .push((node, src, w.shape().to_vec(), scale));
            }
        }
        LayerWatch { by_value }
    }
}

/// One batch's size, the statistics of its watched outputs and of its affine inputs.
type BatchStats = (usize, HashMap<String, RangeStats>, Vec<(String, LayerStats)>);

/// One batch's run.
fn observe_one(
    exec: &Executor,
    watched: &HashMap<String, String>,
    mut stats: HashMap<String, RangeStats>,
    layers: Option<&LayerWatch>,
    feeds: HashMap<String, Tensor>,
) -> Result<BatchStats> {
    let mut layer_out: Vec<(String, LayerStats)> = Vec::new();
    let batch = feeds
        .values()
        .next()
        .and_then(|t| t.shape().first().copied())
        .unwrap_or(1);
    let mut failure: Option<Error> = None;
    {
        let mut observer = |value: &str, t: &Tensor| {
            if failure.is_some() {
                return;
            }
            if let Some(readers) = layers.and_then(|l| l.by_value.get(value)) {
                for (node, src, w, scale) in readers {
                    let mut st = None;
                    match layer_stats::observe(node, src, t, w, *scale, &mut st) {
                        Ok(()) => layer_out.extend(st.map(|s| (node.clone(), s))),
                        Err(e) => {
                            failure = Some(Error::InvalidArgument(format!(
                                "calibration: the input of '{node}' ('{value}'): {e}"
                            )));
                            return;
                        }
                    }
                }
            }
            let Some(node) = watched.get(value) else { return };
            let Some(s) = stats.get_mut(node) else { return };
            let res = t.as_slice::<f32>().and_then(|x| s.update(x));
            if let Err(e) = res {
                let detail = match e {
                    Error::InvalidArgument(m) | Error::Shape(m) => m,
                    other => other.to_string(),
                };
                failure = Some(Error::InvalidArgument(format!(
                    "calibration: the output of '{node}' ('{value}'): {detail}; check the calibration data for NaN/Inf"
                )));
            }
        };
        exec.run(feeds, Some(&mut observer))?;
    }
    match failure {
        Some(e) => Err(e),
        None => Ok((batch, stats, layer_out)),
    }
}

/// Closes the calibration: every Scaling node records its current output scale (the unit
/// its statistics are in).
pub fn finish(state: &mut PtqState) -> Result<()> {
    state.expect("compute_ranges", Stage::ParamsNormalized, &[Stage::Calibrated])?;
    if state.batches_seen == 0 {
        return Err(Error::InvalidArgument(
            "compute_ranges: the calibration set is empty (no batch was given)".into(),
        ));
    }
    let scales = state.scales.clone();
    for info in state.scaling.values_mut() {
        info.calib_scale = scales.get(&info.output).and_then(|s| s.first().copied()).unwrap_or(1.0);
    }
    state.stage = Stage::Calibrated;
    state.calib_backup = None;
    Ok(())
}

/// Gives up a calibration started by `begin` (a batch failed, the data ran out, the user
/// interrupted): the state is put back as it was before `begin`, previous ranges included.
/// Does nothing when no calibration is in progress.
pub fn abort(state: &mut PtqState) {
    if let Some(before) = state.calib_backup.take() {
        *state = *before;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #[test]
        fn fast_histogram_matches_the_plain_loop(
            v in proptest::collection::vec(-1e3f32..1e3, 0..3000),
            zeros in 0usize..40,
            repeat in 0usize..600,
            log2_range in -3i32..12,
        ) {
            let mut v = v;
            // Exact zeros of both signs, and long runs in one bin (the u16 tables' case).
            v.extend(std::iter::repeat_n(0.0, zeros));
            v.extend(std::iter::repeat_n(-0.0, zeros));
            v.extend(std::iter::repeat_n(0.37, repeat));
            let range = 2f32.powi(log2_range);
            let v: Vec<f32> = v.iter().map(|x| x.clamp(-range, range)).collect();
            let scale = BINS as f32 / range;
            let want = chunk_histogram_ref(&v, scale);
            // The dispatched (AVX2 here) and the portable version.
            proptest::prop_assert_eq!(&chunk_histogram(&v, scale), &want);
            proptest::prop_assert_eq!(&chunk_histogram_body(&v, scale), &want);
        }
    }

    proptest::proptest! {
        #[test]
        fn every_moments_build_gives_the_same_sums_close_to_f64(
            v in proptest::collection::vec(-1e3f32..1e3, 0..3000),
            zeros in 0usize..40,
        ) {
            let mut v = v;
            v.extend(std::iter::repeat_n(0.0, zeros));
            let portable = chunk_moments_body(&v);
            let mut builds = vec![chunk_moments(&v)];
            #[cfg(target_arch = "x86_64")]
            {
                if std::arch::is_x86_feature_detected!("avx2") {
                    // SAFETY: AVX2 was detected just above.
                    builds.push(unsafe { simd::chunk_moments(&v) });
                }
                if std::arch::is_x86_feature_detected!("avx512f") {
                    // SAFETY: AVX-512 F was detected just above.
                    builds.push(unsafe { simd::chunk_moments_avx512(&v) });
                }
            }
            // Sixteen lanes everywhere: bit for bit the portable result.
            for m in &builds {
                proptest::prop_assert_eq!(m.sums, portable.sums);
                proptest::prop_assert_eq!((m.min, m.max, m.zeros, m.finite), (portable.min, portable.max, portable.zeros, portable.finite));
            }
            // Against f64 sums and plain extremes.
            let x64: Vec<f64> = v.iter().map(|&x| x as f64).collect();
            let want = [
                x64.iter().map(|x| x.abs()).sum::<f64>(),
                x64.iter().map(|x| x * x).sum::<f64>(),
                x64.iter().map(|x| x.max(0.0)).sum::<f64>(),
                x64.iter().map(|x| x.max(0.0).powi(2)).sum::<f64>(),
            ];
            for (got, want) in portable.sums.iter().zip(want) {
                proptest::prop_assert!((got - want).abs() <= 1e-4 * want.abs() + 1e-3, "{got} vs {want}");
            }
            let lo = v.iter().copied().fold(f32::INFINITY, f32::min);
            let hi = v.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            proptest::prop_assert_eq!((portable.min, portable.max), (lo, hi));
            proptest::prop_assert_eq!(portable.zeros as usize, v.iter().filter(|&&x| x == 0.0).count());
            proptest::prop_assert!(portable.finite);
        }
    }

    #[test]
    fn moments_flag_nan_and_infinity_in_every_lane() {
        for at in 0..40 {
            for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
                let mut v = vec![0.5f32; 40];
                v[at] = bad;
                assert!(!chunk_moments(&v).finite, "{bad} at {at}");
                assert!(!chunk_moments_body(&v).finite, "{bad} at {at}");
            }
        }
    }

    #[test]
    fn a_full_chunk_in_one_bin_does_not_overflow() {
        let v = vec![5.0f32; CHUNK];
        let scale = BINS as f32 / 8.0;
        assert_eq!(chunk_histogram(&v, scale), chunk_histogram_ref(&v, scale));
    }

    /// The histograms as one plain pass over every value would give them at `range`: value
    /// `x` in bin `min(floor(|x| * BINS / range), BINS - 1)` of `|x|`, and in that bin of
    /// `max(x, 0)` (negatives and zeros in bin 0), in f64 arithmetic.
    fn plain_histograms(values: &[f32], range: f32) -> (Vec<u64>, Vec<u64>) {
        let (mut abs, mut pos) = (vec![0u64; BINS], vec![0u64; BINS]);
        let bin = |v: f64| -> usize {
            if range <= 0.0 {
                0
            } else {
                ((v * BINS as f64 / range as f64).floor() as usize).min(BINS - 1)
            }
        };
        for &x in values {
            abs[bin((x as f64).abs())] += 1;
            pos[bin((x as f64).max(0.0))] += 1;
        }
        (abs, pos)
    }

    /// A calibration value: anything, small magnitudes, exact zeros, and exact powers of two
    /// of either sign (the upper edge of a histogram whose range they set).
    fn calibration_value() -> impl proptest::strategy::Strategy<Value = f32> {
        use proptest::strategy::Strategy;
        proptest::prop_oneof![
            4 => -1e3f32..1e3,
            2 => -1e-2f32..1e-2,
            1 => proptest::strategy::Just(0.0f32),
            2 => (-8i32..11, proptest::bool::ANY).prop_map(|(e, neg)| if neg { -(2f32.powi(e)) } else { 2f32.powi(e) }),
        ]
    }

    proptest::proptest! {
        /// Per-batch statistics merged in order are those of one running `update` over the
        /// same batches (what lets batches run side by side on several threads), and both
        /// hold the histograms of one plain pass over all the values at the final range,
        /// which is the smallest power of two >= the largest magnitude: so they depend
        /// neither on how the values were split into batches nor on the order of the
        /// batches. Values exactly at a power of two are generated on purpose: on the upper
        /// edge of a range they set, they are counted in the last bin until the range
        /// doubles, and then in bin `BINS / 2` (`RangeStats::top_abs`).
        #[test]
        fn merged_batch_statistics_equal_one_running_update(
            batches in proptest::collection::vec(proptest::collection::vec(calibration_value(), 0..300), 1..6),
            histograms: bool,
        ) {
            let empty = || if histograms { RangeStats::new() } else { RangeStats::without_histograms() };
            let mut running = empty();
            let mut merged = empty();
            for b in &batches {
                running.update(b).unwrap();
                let mut one = empty();
                one.update(b).unwrap();
                merged.merge(one);
            }
            proptest::prop_assert_eq!(&merged, &running);
            let mut reversed = empty();
            for b in batches.iter().rev() {
                reversed.update(b).unwrap();
            }
            let all: Vec<f32> = batches.concat();
            let max_abs = all.iter().fold(0f32, |m, x| m.max(x.abs()));
            proptest::prop_assert_eq!(running.max_abs, max_abs);
            let want_range = if max_abs == 0.0 { 0.0 } else { (-200i32..).map(|e| 2f64.powi(e)).find(|&p| p >= max_abs as f64).unwrap() as f32 };
            proptest::prop_assert_eq!(running.range, want_range);
            proptest::prop_assert_eq!(reversed.range, want_range);
            if histograms {
                let (abs, pos) = plain_histograms(&all, want_range);
                proptest::prop_assert_eq!(&running.hist_abs, &abs);
                proptest::prop_assert_eq!(&running.hist_pos, &pos);
                proptest::prop_assert_eq!(&reversed.hist_abs, &abs);
                proptest::prop_assert_eq!(&reversed.hist_pos, &pos);
            }
        }
    }

    #[test]
    fn statistics_do_not_depend_on_the_batch_split() {
        let v: Vec<f32> = (0..5000).map(|i| ((i * 7919) % 1000) as f32 / 37.0 - 9.0).collect();
        let mut whole = RangeStats::new();
        whole.update(&v).unwrap();
        for split in [1usize, 7, 100, 2500] {
            let mut parts = RangeStats::new();
            for c in v.chunks(split) {
                parts.update(c).unwrap();
            }
            assert_eq!(parts.range, whole.range);
            assert_eq!(parts.hist_abs, whole.hist_abs, "split {split}");
            assert_eq!(parts.hist_pos, whole.hist_pos, "split {split}");
            assert_eq!((parts.zeros_abs, parts.zeros_pos), (whole.zeros_abs, whole.zeros_pos));
        }
    }
}
