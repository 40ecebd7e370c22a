//! Step 4, `compute_ranges`: runs the parameter-normalized network over calibration batches
//! and records, for every Scaling node output, its largest magnitude and histograms of `|x|`
//! and of `max(x, 0)`. Streaming: the statistics have a fixed size, whatever the number of
//! samples; batches are merged as they come (the histogram range doubles when a batch
//! exceeds it, merging bins pairwise, so no sample is ever kept).

use super::{PtqState, Stage};
use crate::error::{Error, Result};
use crate::exec::Executor;
use crate::graph::Graph;
use crate::ops::Op;
use crate::tensor::Tensor;
use rayon::prelude::*;
use std::collections::HashMap;

/// Number of histogram bins over `[0, range]`.
pub const BINS: usize = 2048;

/// Running statistics of one tensor over the calibration set.
#[derive(Debug, Clone, PartialEq)]
pub struct RangeStats {
    /// Upper edge of the histograms (a power-of-two multiple of the first batch's max).
    pub range: f32,
    /// `max |x|` and `max x` seen.
    pub max_abs: f32,
    pub max: f32,
    pub min: f32,
    /// Histogram of `|x|` and of `max(x, 0)` over `[0, range]`, `BINS` bins each.
    pub hist_abs: Vec<u64>,
    pub hist_pos: Vec<u64>,
    pub count: u64,
    /// Sums of `|x|`, `x^2`, `max(x,0)`, `max(x,0)^2` (for the sigma clipping).
    pub sum_abs: f64,
    pub sum_sq: f64,
    pub sum_pos: f64,
    pub sum_sq_pos: f64,
}

/// Partial statistics of one chunk.
struct Partial {
    hist_abs: Vec<u64>,
    hist_pos: Vec<u64>,
    sums: [f64; 4],
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
            count: 0,
            sum_abs: 0.0,
            sum_sq: 0.0,
            sum_pos: 0.0,
            sum_sq_pos: 0.0,
        }
    }

    /// Width of one bin.
    pub fn bin_width(&self) -> f32 {
        self.range / BINS as f32
    }

    /// Doubles the range `k` times, merging bins pairwise.
    fn grow(&mut self, k: u32) {
        for h in [&mut self.hist_abs, &mut self.hist_pos] {
            let mut merged = vec![0u64; BINS];
            for (i, &c) in h.iter().enumerate() {
                merged[i >> k.min(63)] += c;
            }
            *h = merged;
        }
        self.range *= 2f32.powi(k as i32);
    }

    /// Adds a tensor's values. Fails on NaN or infinity.
    pub fn update(&mut self, x: &[f32]) -> Result<()> {
        if x.is_empty() {
            return Ok(());
        }
        const CHUNK: usize = 1 << 15;
        let (lo, hi, finite) = x
            .par_chunks(CHUNK)
            .map(|c| {
                c.iter()
                    .fold((f32::INFINITY, f32::NEG_INFINITY, true), |(lo, hi, ok), &v| {
                        (lo.min(v), hi.max(v), ok && v.is_finite())
                    })
            })
            .reduce(
                || (f32::INFINITY, f32::NEG_INFINITY, true),
                |a, b| (a.0.min(b.0), a.1.max(b.1), a.2 && b.2),
            );
        if !finite {
            return Err(Error::InvalidArgument("a value is NaN or infinite".into()));
        }
        let m = lo.abs().max(hi.abs());
        self.min = self.min.min(lo);
        self.max = self.max.max(hi);
        self.max_abs = self.max_abs.max(m);
        if self.range == 0.0 {
            // The first non-zero batch sets the range; all-zero batches only count zeros.
            if m > 0.0 {
                let zeros = (self.hist_abs[0], self.hist_pos[0]);
                self.range = m;
                self.hist_abs[0] = zeros.0;
                self.hist_pos[0] = zeros.1;
            }
        } else if m > self.range {
            let k = (m / self.range).log2().ceil().max(1.0) as u32;
            self.grow(k);
            while self.range < m {
                self.grow(1);
            }
        }
        let range = self.range;
        let scale = if range > 0.0 { BINS as f32 / range } else { 0.0 };
        let bin = |v: f32| ((v * scale) as usize).min(BINS - 1);
        let p = x
            .par_chunks(CHUNK)
            .map(|c| {
                let mut part = Partial {
                    hist_abs: vec![0; BINS],
                    hist_pos: vec![0; BINS],
                    sums: [0.0; 4],
                };
                let (mut sa, mut ss, mut sp, mut ssp) = (0f64, 0f64, 0f64, 0f64);
                for &v in c {
                    let a = v.abs();
                    let pos = if v > 0.0 { v } else { 0.0 };
                    part.hist_abs[bin(a)] += 1;
                    part.hist_pos[bin(pos)] += 1;
                    sa += a as f64;
                    ss += (a as f64) * (a as f64);
                    sp += pos as f64;
                    ssp += (pos as f64) * (pos as f64);
                }
                part.sums = [sa, ss, sp, ssp];
                part
            })
            .reduce_with(|mut a, b| {
                a.hist_abs.iter_mut().zip(&b.hist_abs).for_each(|(x, y)| *x += y);
                a.hist_pos.iter_mut().zip(&b.hist_pos).for_each(|(x, y)| *x += y);
                for i in 0..4 {
                    a.sums[i] += b.sums[i];
                }
                a
            });
        if let Some(p) = p {
            self.hist_abs.iter_mut().zip(&p.hist_abs).for_each(|(x, y)| *x += y);
            self.hist_pos.iter_mut().zip(&p.hist_pos).for_each(|(x, y)| *x += y);
            self.sum_abs += p.sums[0];
            self.sum_sq += p.sums[1];
            self.sum_pos += p.sums[2];
            self.sum_sq_pos += p.sums[3];
        }
        self.count += x.len() as u64;
        Ok(())
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

/// Starts a fresh calibration (statistics cleared).
pub fn begin(state: &mut PtqState) -> Result<()> {
    state.expect(
        "compute_ranges",
        Stage::ParamsNormalized,
        &[Stage::Calibrated, Stage::RangesAdjusted],
    )?;
    for info in state.scaling.values_mut() {
        info.stats = Some(RangeStats::new());
        info.clip = None;
        info.clipping = None;
    }
    state.batches_seen = 0;
    state.samples_seen = 0;
    state.stage = Stage::ParamsNormalized;
    Ok(())
}

/// Runs one batch and merges its statistics. `begin` must have been called.
pub fn observe_batch(graph: &Graph, state: &mut PtqState, feeds: HashMap<String, Tensor>) -> Result<()> {
    state.expect("compute_ranges", Stage::ParamsNormalized, &[Stage::Calibrated])?;
    let batch = feeds
        .values()
        .next()
        .and_then(|t| t.shape().first().copied())
        .unwrap_or(1);
    // Output value -> Scaling node name.
    let watched: HashMap<String, String> = graph
        .nodes
        .iter()
        .filter(|n| matches!(n.op, Op::Scaling(_)))
        .filter(|n| state.scaling.get(&n.name).is_some_and(|i| i.role.calibrated()))
        .map(|n| (n.outputs[0].clone(), n.name.clone()))
        .collect();
    let exec = Executor::new(graph)?;
    let mut failure: Option<Error> = None;
    {
        let scaling = &mut state.scaling;
        let mut observer = |value: &str, t: &Tensor| {
            if failure.is_some() {
                return;
            }
            let Some(node) = watched.get(value) else { return };
            let Some(stats) = scaling.get_mut(node).and_then(|i| i.stats.as_mut()) else {
                return;
            };
            let res = t.as_slice::<f32>().and_then(|x| stats.update(x));
            if let Err(e) = res {
                failure = Some(Error::InvalidArgument(format!(
                    "calibration: the output of '{node}' ('{value}'): {e}; check the calibration data for NaN/Inf"
                )));
            }
        };
        exec.run(feeds, Some(&mut observer))?;
    }
    if let Some(e) = failure {
        return Err(e);
    }
    state.batches_seen += 1;
    state.samples_seen += batch;
    Ok(())
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
    Ok(())
}
