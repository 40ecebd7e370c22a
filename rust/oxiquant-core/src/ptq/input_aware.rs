//! Input-aware rounding (`round_weights` with calibration batches; the closed-form idea of
//! QDrop's and "asymmetric" reconstruction): GPTQ fits each layer's rounded weights to its
//! FLOAT inputs, but in the quantized network the layer reads inputs that earlier layers'
//! rounding and the activation quantizers have already changed. Here each affine node's
//! weights are fitted to the inputs it will really see.
//!
//! Per affine node and channel group, over the first calibration samples, with `X` the
//! node's input rows in the float network and `X~` the same rows in the quantized network
//! (activations on their integer grids, earlier weights rounded), both in the stored units
//! of the normalized graph:
//!
//! - `H~ = X~^T X~` and `C = X~^T X`, and the mean rows of both;
//! - each weight row `w` is moved to the damped least-squares target
//!   `w* = w + (H~ + l I)^-1 (C - H~) w`, the minimizer of `|X~ w* - X w|^2 + l |w* - w|^2`
//!   (`l`: `rounding::FIT_DAMP` times the mean diagonal of `H~`); with `X~ = X` it is `w`;
//! - `w*` is rounded by GPTQ against `H~`, and each row keeps whichever of that, `w*` to
//!   nearest and `w` to nearest has the smallest output error `|X~ w_q - X w|^2` on the
//!   calibration rows, then coordinate descent on that error moves single weights by one
//!   step while it falls;
//! - bias correction makes the mean outputs equal: `b -= w_q E[x~] - w E[x]`, which also
//!   takes out the mean shift that earlier layers' quantization left in the input.
//!
//! The statistics read about `ROWS_PER_WEIGHT * k` rows per layer: where the samples hold
//! more (window positions of large feature maps), a fixed hash of (sample, position) keeps
//! one row in `stride` (`Subsample`), every image contributing, and only the kept windows
//! are unfolded (`patches_at`). The products over all rows of a layer (`H~ w`, `C w`, the
//! least-squares move, each candidate's objective) are f64 GEMMs.
//!
//! The quantized network is made by the usual passes on a copy (`round_weights` then
//! `quantize_normalized_network`), then run node by node over the batches beside the float
//! one: each affine node is rounded when the run reaches it, and its new integer weights and
//! bias go into the quantized network before it runs, so every layer is fitted to the
//! inputs its predecessors' final rounding gives (fitting all layers to one quantized run
//! at once over-corrects: each layer and its predecessors compensate the same error).

use super::affine::AffineParams;
use super::clipping::levels;
use super::layer_stats::{geometry, patches, watched_inputs, RowSource};
use super::quantize::{quantize_network, QuantizeOptions};
use super::rounding::{apply_rounded, round_node, round_weights, RoundingOptions};
use super::{PtqState, Stage};
use crate::error::{Error, Result};
use crate::graph::Graph;
use crate::kernels::conv::ConvShape;
use crate::kernels::gemm::{sgemm, MatRef};
use crate::tensor::Tensor;
use rayon::prelude::*;
use std::collections::HashMap;

/// The paired input statistics of one affine node (see the module doc).
#[derive(Debug, Clone, PartialEq)]
pub struct PairStats {
    pub groups: usize,
    pub k: usize,
    /// Sums of the quantized and of the float rows, `groups * k` each.
    pub sum_q: Vec<f64>,
    pub sum_f: Vec<f64>,
    /// `X~^T X~` and `X~^T X` per group, `groups * k * k` each (row-major).
    pub gram_q: Vec<f64>,
    pub cross: Vec<f64>,
    /// Rows summed per group.
    pub rows: u64,
}

impl PairStats {
    pub fn empty(groups: usize, k: usize) -> PairStats {
        PairStats {
            groups,
            k,
            sum_q: vec![0.0; groups * k],
            sum_f: vec![0.0; groups * k],
            gram_q: vec![0.0; groups * k * k],
            cross: vec![0.0; groups * k * k],
            rows: 0,
        }
    }

    pub fn merge(&mut self, o: &PairStats) {
        let add = |a: &mut Vec<f64>, b: &Vec<f64>| a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
        add(&mut self.sum_q, &o.sum_q);
        add(&mut self.sum_f, &o.sum_f);
        add(&mut self.gram_q, &o.gram_q);
        add(&mut self.cross, &o.cross);
        self.rows += o.rows;
    }

    /// The statistics of the quantized rows multiplied by `f` (`X~` becomes `f X~`).
    pub fn scale_quantized(&mut self, f: f64) {
        self.sum_q.iter_mut().chain(self.cross.iter_mut()).for_each(|v| *v *= f);
        self.gram_q.iter_mut().for_each(|v| *v *= f * f);
    }

    /// Mean quantized and float rows of group `g`.
    pub fn means(&self, g: usize) -> (Vec<f64>, Vec<f64>) {
        let n = self.rows.max(1) as f64;
        let span = g * self.k..(g + 1) * self.k;
        (
            self.sum_q[span.clone()].iter().map(|s| s / n).collect(),
            self.sum_f[span].iter().map(|s| s / n).collect(),
        )
    }

    /// Adds rows of group `g`, quantized `xq` and float `xf` in the same layout: `[rows, k]`
    /// row-major, or with `by_column` its transpose `[k, rows]`.
    fn add_rows(&mut self, g: usize, xq: &[f32], xf: &[f32], by_column: bool, buf: &mut Vec<f32>) {
        let k = self.k;
        let rows = xq.len() / k.max(1);
        if rows == 0 {
            return;
        }
        for (x, sum) in [(xq, &mut self.sum_q), (xf, &mut self.sum_f)] {
            let sum = &mut sum[g * k..(g + 1) * k];
            if by_column {
                for (s, line) in sum.iter_mut().zip(x.chunks_exact(rows)) {
                    *s += line.iter().map(|&v| v as f64).sum::<f64>();
                }
            } else {
                for r in x.chunks_exact(k) {
                    for (s, &v) in sum.iter_mut().zip(r) {
                        *s += v as f64;
                    }
                }
            }
        }
        // A^T B with A = X~ and B = X or X~ (both [rows, k]).
        let pair = |a: &[f32], b: &[f32], out: &mut Vec<f32>| {
            out.clear();
            out.resize(k * k, 0.0);
            let (ma, mb) = if by_column {
                (MatRef::row_major(a, rows, false), MatRef::row_major(b, rows, true))
            } else {
                (MatRef::row_major(a, k, true), MatRef::row_major(b, k, false))
            };
            sgemm(k, k, rows, 1.0, ma, mb, out, false, 1);
        };
        pair(xq, xq, buf);
        for (a, &b) in self.gram_q[g * k * k..(g + 1) * k * k].iter_mut().zip(buf.iter()) {
            *a += b as f64;
        }
        pair(xq, xf, buf);
        for (a, &b) in self.cross[g * k * k..(g + 1) * k * k].iter_mut().zip(buf.iter()) {
            *a += b as f64;
        }
    }
}

/// Adds the rows of one batch's input of affine node `name` (weight shape `w`): `xq` in the
/// quantized network, `xf` in the float one, same shape and units.
pub fn observe_pair(
    name: &str,
    src: &RowSource,
    xq: &Tensor,
    xf: &Tensor,
    w: &[usize],
    sel: Subsample,
    stats: &mut Option<PairStats>,
) -> Result<()> {
    if xq.shape() != xf.shape() {
        return Err(Error::shape(format!(
            "node '{name}': its input has shape {:?} in the quantized network but {:?} in the float one",
            xq.shape(),
            xf.shape()
        )));
    }
    let (groups, k, conv) = geometry(name, src, xf, w)?;
    let st = stats.get_or_insert_with(|| PairStats::empty(groups, k));
    if st.groups != groups || st.k != k {
        return Err(Error::shape(format!(
            "node '{name}': the input rows changed shape between batches ({} x {} then {groups} x {k})",
            st.groups, st.k
        )));
    }
    let (dq, df) = (xq.as_slice::<f32>()?, xf.as_slice::<f32>()?);
    let mut buf = Vec::new();
    match conv {
        None => {
            let rows = df.len() / k;
            let n = xf.shape().first().copied().unwrap_or(1).max(1);
            let per_sample = (rows / n).max(1);
            if sel.stride <= 1 {
                st.add_rows(0, dq, df, false, &mut buf);
                st.rows += rows as u64;
            } else {
                let kept: Vec<usize> = (0..rows)
                    .filter(|&r| sel.keep(sel.first + r / per_sample, r % per_sample))
                    .collect();
                let pick = |x: &[f32]| -> Vec<f32> {
                    kept.iter()
                        .flat_map(|&r| x[r * k..(r + 1) * k].iter().copied())
                        .collect()
                };
                st.add_rows(0, &pick(dq), &pick(df), false, &mut buf);
                st.rows += kept.len() as u64;
            }
        }
        Some(s) => {
            let (mut cq, mut cf) = (Vec::new(), Vec::new());
            let plane = s.h * s.w;
            let npos = s.out[0] * s.out[1];
            let identity = s.win.kernel == [1, 1] && s.win.strides == [1, 1] && s.win.pads == [0; 4];
            let cg = s.c / s.group;
            for img in 0..s.n {
                let span = img * s.c * plane..(img + 1) * s.c * plane;
                let (qi, fi) = (&dq[span.clone()], &df[span]);
                // The window positions kept for this image (all of them without subsampling).
                let kept: Option<Vec<usize>> =
                    (sel.stride > 1).then(|| (0..npos).filter(|&p| sel.keep(sel.first + img, p)).collect());
                for g in 0..groups {
                    match &kept {
                        None if identity => {
                            let sub = g * cg * plane..(g + 1) * cg * plane;
                            st.add_rows(g, &qi[sub.clone()], &fi[sub], true, &mut buf);
                        }
                        None => {
                            patches(qi, &s, g, &mut cq);
                            patches(fi, &s, g, &mut cf);
                            st.add_rows(g, &cq, &cf, true, &mut buf);
                        }
                        Some(kept) => {
                            patches_at(qi, &s, g, kept, &mut cq);
                            patches_at(fi, &s, g, kept, &mut cf);
                            st.add_rows(g, &cq, &cf, true, &mut buf);
                        }
                    }
                }
                st.rows += kept.as_ref().map_or(npos, |v| v.len()) as u64;
            }
        }
    }
    Ok(())
}

/// Which input rows the paired statistics read: with `stride > 1`, about one in `stride`
/// (chosen by a hash of the sample's index and the row's position in it, so that every
/// image contributes and a regular grid of positions is not favoured); `first` is the
/// index of the batch's first sample in the calibration set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subsample {
    pub stride: usize,
    pub first: usize,
}

impl Subsample {
    pub const ALL: Subsample = Subsample { stride: 1, first: 0 };

    /// Whether row `pos` of sample `sample` is kept.
    pub fn keep(self, sample: usize, pos: usize) -> bool {
        if self.stride <= 1 {
            return true;
        }
        // splitmix64 of the pair.
        let mut z = ((sample as u64) << 32 ^ pos as u64).wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        z.is_multiple_of(self.stride as u64)
    }
}

/// The columns `kept` (output positions) of the im2col matrix `patches` gives for channel
/// group `g` of one image, as a `[C/g * kh * kw, kept.len()]` matrix (0 in the padding).
pub fn patches_at(x: &[f32], s: &ConvShape, g: usize, kept: &[usize], cols: &mut Vec<f32>) {
    let [kh, kw] = s.win.kernel;
    let ow = s.out[1].max(1);
    let [sh, sw] = s.win.strides;
    let [dh, dw] = s.win.dilations;
    let (pt, pl) = (s.win.pads[0] as isize, s.win.pads[1] as isize);
    let cg = s.c / s.group;
    cols.clear();
    cols.reserve(cg * kh * kw * kept.len());
    for c in 0..cg {
        let plane = &x[(g * cg + c) * s.h * s.w..(g * cg + c + 1) * s.h * s.w];
        for i in 0..kh {
            for j in 0..kw {
                cols.extend(kept.iter().map(|&p| {
                    let iy = ((p / ow) * sh + i * dh) as isize - pt;
                    let ix = ((p % ow) * sw + j * dw) as isize - pl;
                    if iy < 0 || ix < 0 || iy >= s.h as isize || ix >= s.w as isize {
                        0.0
                    } else {
                        plane[iy as usize * s.w + ix as usize]
                    }
                }));
            }
        }
    }
}

/// The rows per weight (`k`) the paired statistics of a layer aim for: beyond it the
/// statistics are subsampled (`Subsample`), which makes the pass several times cheaper on
/// convolutions with large outputs. ResNet-20 W4A4 (the `--act4` bench's split), output SQNR
/// and top-1: every row 8.67 dB, 86.30 %; 256 rows per weight 8.50 dB, 85.50 %; 128 8.58 dB,
/// 86.30 %; 64 8.59 dB, 86.13 %; 32 8.55 dB, 85.97 %; 16 8.53 dB, 85.90 %.
pub const ROWS_PER_WEIGHT: usize = 128;

/// A graph run node by node over a set of batches (one tensor per batch for every live
/// value), so that a node's parameters can be changed after the nodes before it have run.
struct Stepper {
    g: Graph,
    pos: usize,
    vals: HashMap<String, Vec<Tensor>>,
    /// Readers still to run, per value.
    left: HashMap<String, usize>,
}

impl Stepper {
    fn new(g: Graph, feeds: &[HashMap<String, Tensor>]) -> Stepper {
        let mut left: HashMap<String, usize> = HashMap::new();
        for n in &g.nodes {
            for v in n.inputs.iter().filter(|v| !v.is_empty()) {
                *left.entry(v.clone()).or_default() += 1;
            }
        }
        let mut vals: HashMap<String, Vec<Tensor>> = HashMap::new();
        for f in feeds {
            for (k, t) in f {
                vals.entry(k.clone()).or_default().push(t.clone());
            }
        }
        Stepper { g, pos: 0, vals, left }
    }

    fn done(&self) -> bool {
        self.pos >= self.g.nodes.len()
    }

    /// Runs the next node on every batch (side by side).
    fn step(&mut self, batches: usize) -> Result<()> {
        let node = &self.g.nodes[self.pos];
        let (g, vals) = (&self.g, &self.vals);
        let outs: Vec<Result<Vec<Tensor>>> = (0..batches)
            .into_par_iter()
            .with_max_len(1)
            .map(|b| {
                let args: Vec<Option<&Tensor>> = node
                    .inputs
                    .iter()
                    .map(|v| {
                        if v.is_empty() {
                            None
                        } else if let Some(t) = g.initializers.get(v) {
                            Some(t)
                        } else {
                            vals.get(v).and_then(|ts| ts.get(b))
                        }
                    })
                    .collect();
                node.op
                    .eval(&args)
                    .map_err(|e| e.at_node(&node.name, node.op.op_type()))
            })
            .collect();
        let mut per_output: Vec<Vec<Tensor>> = vec![Vec::with_capacity(batches); node.outputs.len()];
        for r in outs {
            for (slot, t) in per_output.iter_mut().zip(r?) {
                slot.push(t);
            }
        }
        let node = self.g.nodes[self.pos].clone();
        for (o, ts) in node.outputs.iter().zip(per_output) {
            self.vals.insert(o.clone(), ts);
        }
        for v in node.inputs.iter().filter(|v| !v.is_empty()) {
            if let Some(c) = self.left.get_mut(v) {
                *c -= 1;
                if *c == 0 {
                    self.vals.remove(v);
                }
            }
        }
        self.pos += 1;
        Ok(())
    }

    /// Runs nodes until the one named `name` is next (the end when it is not there).
    fn run_to(&mut self, name: &str, batches: usize) -> Result<()> {
        while !self.done() && self.g.nodes[self.pos].name != name {
            self.step(batches)?;
        }
        Ok(())
    }
}

/// Rounds every affine node's weights against its inputs in the quantized network (see the
/// module doc), layer by layer in graph order: `quant` says how the activations will be
/// quantized (its weight settings are taken from `opts`), `batches` are calibration batches.
pub fn round_weights_input_aware(
    graph: &mut Graph,
    state: &mut PtqState,
    opts: &RoundingOptions,
    quant: &QuantizeOptions,
    batches: Vec<HashMap<String, Tensor>>,
) -> Result<()> {
    state.expect("round_weights", Stage::ActsNormalized, &[])?;
    if batches.is_empty() {
        return Err(Error::InvalidArgument(
            "round_weights: input-aware rounding needs calibration batches (none were given)".into(),
        ));
    }
    if quant.single_shift {
        return Err(Error::InvalidArgument(
            "round_weights: input-aware rounding does not support single_shift (it folds factors into the weights)"
                .into(),
        ));
    }
    super::check_bits("nb_bits", quant.act_bits as i64)?;
    let qopts = QuantizeOptions {
        weight_bits: opts.weight_bits,
        weight_clipping: opts.weight_clipping,
        no_quant: false,
        dequantize_outputs: false,
        ..quant.clone()
    };
    // Start: the rounding `round_weights` gives without the quantized inputs (it stays for
    // any node the pass cannot reach), and the network quantized from it.
    let (mut g0, mut s0) = (graph.clone(), state.clone());
    let first = if state.layer_samples == 0 {
        RoundingOptions {
            gptq: false,
            bias_correction: false,
            ..opts.clone()
        }
    } else {
        opts.clone()
    };
    round_weights(&mut g0, &mut s0, &first)?;
    let (mut gq, mut sq) = (g0.clone(), s0.clone());
    quantize_network(&mut gq, &mut sq, &qopts)?;
    let nb = batches.len();
    // Index of each batch's first sample, and the sample count.
    let mut firsts = Vec::with_capacity(nb);
    let mut samples = 0usize;
    for b in &batches {
        firsts.push(samples);
        samples += b.values().next().and_then(|t| t.shape().first().copied()).unwrap_or(1);
    }

    let mut fl = Stepper::new(graph.clone(), &batches);
    let mut qs = Stepper::new(gq, &batches);
    let watched: HashMap<String, (String, RowSource)> = watched_inputs(graph, &state.excluded)
        .into_iter()
        .map(|(n, x, src)| (n, (x, src)))
        .collect();
    let mut results = Vec::new();
    while !qs.done() {
        let name = qs.g.nodes[qs.pos].name.clone();
        let Some((x, src)) = watched.get(&name) else {
            qs.step(nb)?;
            continue;
        };
        let (Some(fidx), Some(u)) = (graph.node_index(&name), sq.units.get(x).filter(|u| u.len() == 1)) else {
            qs.step(nb)?;
            continue;
        };
        let u = u[0];
        fl.run_to(&name, nb)?;
        let w = graph.nodes[fidx]
            .inputs
            .get(1)
            .and_then(|v| graph.initializers.get(v))
            .map(|t| t.shape().to_vec())
            .unwrap_or_default();
        let (Some(xq), Some(xf)) = (qs.vals.get(x), fl.vals.get(x)) else {
            qs.step(nb)?;
            continue;
        };
        let stride = match xf.first() {
            Some(t) => {
                let (_, k, conv) = geometry(&name, src, t, &w)?;
                let n = t.shape().first().copied().unwrap_or(1).max(1);
                let per_sample = conv.map_or(t.len() / k.max(1) / n, |s| s.out[0] * s.out[1]);
                (samples * per_sample) / (ROWS_PER_WEIGHT * k).max(1)
            }
            None => 1,
        }
        .max(1);
        let parts: Vec<Result<Option<PairStats>>> = xq
            .par_iter()
            .zip(xf.par_iter())
            .zip(firsts.par_iter())
            .with_max_len(1)
            .map(|((tq, tf), &first)| {
                let mut st = None;
                observe_pair(&name, src, tq, tf, &w, Subsample { stride, first }, &mut st)?;
                Ok(st)
            })
            .collect();
        let mut pair: Option<PairStats> = None;
        for p in parts {
            if let Some(p) = p? {
                match pair.as_mut() {
                    Some(a) => a.merge(&p),
                    None => pair = Some(p),
                }
            }
        }
        let Some(mut pair) = pair else {
            qs.step(nb)?;
            continue;
        };
        // The quantized network holds the inputs in real units: `u` times the stored ones.
        pair.scale_quantized(1.0 / u as f64);
        let r = round_node(graph, state, fidx, opts, Some(&pair))?;
        // The node in the quantized network takes the new weights, on the integer grid
        // `quantize_normalized_network` puts them on (the same alpha: it keeps the rounding).
        let qidx = qs.pos;
        let qw = levels(r.bits, true) as f32;
        let mut a = AffineParams::read(&qs.g, qidx)?;
        a.weight.copy_from_slice(&r.params.weight);
        a.bias.copy_from_slice(&r.params.bias);
        let alpha = r.alpha.clone();
        a.for_each_mut(|c, v| *v = (*v * qw / alpha[c]).round_ties_even().clamp(-qw, qw));
        for (c, b) in a.bias.iter_mut().enumerate() {
            *b = (*b * u * qw / alpha[c]).round_ties_even();
        }
        a.write(&mut qs.g, qidx)?;
        qs.step(nb)?;
        results.push(r);
    }
    apply_rounded(&mut g0, &mut s0, results)?;
    *graph = g0;
    *state = s0;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::{Conv, Padding};
    use crate::ptq::rounding::{input_aware_rows, refine};

    fn lcg(seed: u64) -> impl FnMut() -> f64 {
        let mut s = seed;
        move || {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 33) as f64 / (1u64 << 31) as f64) - 0.5
        }
    }

    /// `A^T B` of two `[rows, k]` matrices.
    fn at_b(a: &[f64], b: &[f64], rows: usize, k: usize) -> Vec<f64> {
        let mut m = vec![0f64; k * k];
        for r in 0..rows {
            for i in 0..k {
                for j in 0..k {
                    m[i * k + j] += a[r * k + i] * b[r * k + j];
                }
            }
        }
        m
    }

    /// `|Xq v - Xf w|^2` over the rows.
    fn output_error(xq: &[f64], xf: &[f64], v: &[f64], w: &[f64], rows: usize, k: usize) -> f64 {
        (0..rows)
            .map(|r| {
                let a: f64 = (0..k).map(|i| xq[r * k + i] * v[i]).sum();
                let b: f64 = (0..k).map(|i| xf[r * k + i] * w[i]).sum();
                (a - b) * (a - b)
            })
            .sum()
    }

    #[test]
    fn rounding_against_quantized_inputs_beats_nearest_on_the_real_error() {
        for seed in 0..6u64 {
            let mut r = lcg(seed);
            let (rows, k, q) = (200, 12, 7.0);
            let xf: Vec<f64> = (0..rows * k).map(|_| r() * 4.0).collect();
            // The quantized inputs: the float ones on a coarse grid, plus a systematic shift.
            let xq: Vec<f64> = xf.iter().map(|v| (v * 2.0).round() / 2.0 + 0.05).collect();
            let (hq, c) = (at_b(&xq, &xq, rows, k), at_b(&xq, &xf, rows, k));
            let ws: Vec<Vec<f64>> = (0..5).map(|_| (0..k).map(|_| r() * 12.0).collect()).collect();
            for gptq in [false, true] {
                let mut got = ws.clone();
                input_aware_rows(&mut got, &hq, &c, k, q, 0.01, gptq, true).unwrap();
                for (w, g) in ws.iter().zip(&got) {
                    assert!(g.iter().all(|v| v.fract() == 0.0 && v.abs() <= q), "{g:?}");
                    let nearest: Vec<f64> = w.iter().map(|v| v.round_ties_even().clamp(-q, q)).collect();
                    let (e, e0) = (
                        output_error(&xq, &xf, g, w, rows, k),
                        output_error(&xq, &xf, &nearest, w, rows, k),
                    );
                    assert!(e <= e0 * (1.0 + 1e-9), "seed {seed}: {e} > nearest's {e0}");
                }
            }
        }
    }

    #[test]
    fn refine_never_raises_the_objective_and_stays_on_the_grid() {
        for seed in 0..8u64 {
            let mut r = lcg(seed);
            let (rows, k, q) = (40, 9, 3.0);
            let x: Vec<f64> = (0..rows * k).map(|_| r()).collect();
            let h = at_b(&x, &x, rows, k);
            let b: Vec<f64> = (0..k).map(|_| r() * 10.0).collect();
            let obj = |v: &[f64]| -> f64 {
                let hv: f64 = (0..k)
                    .map(|i| v[i] * (0..k).map(|j| h[i * k + j] * v[j]).sum::<f64>())
                    .sum();
                hv - 2.0 * (0..k).map(|i| v[i] * b[i]).sum::<f64>()
            };
            let mut v: Vec<f64> = (0..k).map(|_| (r() * 6.0).round()).collect();
            let before = obj(&v);
            refine(&mut v, &h, &b, k, q, 5);
            assert!(obj(&v) <= before + 1e-9);
            assert!(v.iter().all(|x| x.fract() == 0.0 && x.abs() <= q));
        }
    }

    fn conv_shape(kernel: [usize; 2], strides: [usize; 2], pads: [usize; 4], group: usize) -> (Conv, Vec<usize>) {
        let c = Conv {
            kernel_shape: Some(kernel.to_vec()),
            strides: Some(strides.to_vec()),
            dilations: None,
            padding: Padding::Explicit(pads.to_vec()),
            group,
        };
        (c, vec![6, 6 / group, kernel[0], kernel[1]])
    }

    #[test]
    fn windows_at_kept_positions_are_the_columns_of_the_full_unfolding() {
        let x: Vec<f32> = (0..2 * 6 * 7 * 5).map(|i| (i as f32 * 0.37).sin()).collect();
        let t = Tensor::from_vec(vec![2, 6, 7, 5], x.clone()).unwrap();
        for (kernel, strides, pads, group) in [
            ([3, 3], [1, 1], [1, 1, 1, 1], 1),
            ([3, 2], [2, 1], [0, 1, 2, 0], 2),
            ([1, 1], [1, 1], [0, 0, 0, 0], 3),
            ([3, 3], [2, 2], [1, 1, 1, 1], 6),
        ] {
            let (c, w) = conv_shape(kernel, strides, pads, group);
            let (groups, k, s) = geometry("c", &RowSource::Conv(c), &t, &w).unwrap();
            let s = s.unwrap();
            let npos = s.out[0] * s.out[1];
            let kept: Vec<usize> = (0..npos).filter(|p| p % 3 != 1).collect();
            let img = &x[6 * 35..];
            let (mut full, mut some) = (Vec::new(), Vec::new());
            for g in 0..groups {
                patches(img, &s, g, &mut full);
                patches_at(img, &s, g, &kept, &mut some);
                assert_eq!(some.len(), k * kept.len());
                for line in 0..k {
                    for (j, &p) in kept.iter().enumerate() {
                        assert_eq!(some[line * kept.len() + j], full[line * npos + p], "{kernel:?} g{g}");
                    }
                }
            }
        }
    }

    #[test]
    fn subsampled_statistics_are_the_sums_over_the_kept_rows() {
        let sel = Subsample { stride: 4, first: 10 };
        let kept = (0..4000).filter(|&p| sel.keep(7, p)).count();
        assert!((700..1300).contains(&kept), "{kept} of 4000 kept at stride 4");
        assert!((0..50).all(|p| Subsample::ALL.keep(3, p)));
        // Rows of a [3, 5, 2] input: sample i, row r kept when keep(10 + i, r).
        let xq: Vec<f32> = (0..30).map(|i| (i as f32 * 0.7).cos()).collect();
        let xf: Vec<f32> = (0..30).map(|i| (i as f32 * 0.3).sin()).collect();
        let (tq, tf) = (
            Tensor::from_vec(vec![3, 5, 2], xq.clone()).unwrap(),
            Tensor::from_vec(vec![3, 5, 2], xf.clone()).unwrap(),
        );
        let mut st = None;
        observe_pair("m", &RowSource::Matrix, &tq, &tf, &[2, 4], sel, &mut st).unwrap();
        let st = st.unwrap();
        let rows: Vec<usize> = (0..15).filter(|&r| sel.keep(10 + r / 5, r % 5)).collect();
        let pick = |x: &[f32]| -> Vec<f64> {
            rows.iter()
                .flat_map(|&r| [x[2 * r] as f64, x[2 * r + 1] as f64])
                .collect()
        };
        let (q, f) = (pick(&xq), pick(&xf));
        assert_eq!(st.rows, rows.len() as u64);
        let close = |a: &[f64], b: &[f64]| a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-5);
        assert!(close(&st.gram_q, &at_b(&q, &q, rows.len(), 2)));
        assert!(close(&st.cross, &at_b(&q, &f, rows.len(), 2)));
    }

    #[test]
    fn paired_statistics_are_the_plain_sums() {
        let xq = Tensor::from_vec(vec![3, 2], vec![1.0f32, 2.0, -1.0, 0.5, 3.0, 0.0]).unwrap();
        let xf = Tensor::from_vec(vec![3, 2], vec![1.5f32, 2.0, -0.5, 0.25, 2.0, 1.0]).unwrap();
        let mut st = None;
        observe_pair("m", &RowSource::Matrix, &xq, &xf, &[2, 4], Subsample::ALL, &mut st).unwrap();
        let st = st.unwrap();
        let (q, f) = (xq.as_slice::<f32>().unwrap(), xf.as_slice::<f32>().unwrap());
        let to64 = |v: &[f32]| v.iter().map(|&x| x as f64).collect::<Vec<f64>>();
        assert_eq!(st.gram_q, at_b(&to64(q), &to64(q), 3, 2));
        assert_eq!(st.cross, at_b(&to64(q), &to64(f), 3, 2));
        assert_eq!(
            (st.sum_q.clone(), st.sum_f.clone(), st.rows),
            (vec![3.0, 2.5], vec![3.0, 3.25], 3)
        );
        let other = Tensor::from_vec(vec![2, 3], vec![0.0f32; 6]).unwrap();
        assert!(observe_pair("m", &RowSource::Matrix, &xq, &other, &[2, 4], Subsample::ALL, &mut None).is_err());
    }
}
