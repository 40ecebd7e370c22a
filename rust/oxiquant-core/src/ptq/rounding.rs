//! Step 6b, `round_weights` (optional, between `normalize_activations` and
//! `quantize_normalized_network`): puts every affine node's normalized weights on their
//! quantization grid, with two passes that use the calibration inputs gathered by
//! `compute_ranges` (`layer_stats`):
//!
//! - GPTQ rounding: per channel group, with `H = X^T X` of the layer's input rows, the
//!   columns are rounded in order and each one's rounding error is spread over the columns
//!   not yet rounded through the upper Cholesky factor `U` of `(H + damp I)^-1`, so that the
//!   layer's output error on the calibration rows stays small (round-to-nearest ignores
//!   how the inputs correlate);
//! - bias correction: the expected output shift the rounding causes, `(W_q - W) E[x]` per
//!   output channel with `E[x]` the mean input row over the calibration samples, is taken out
//!   of the bias, so that the layer's mean output is the float one.
//!
//! The grid is the one `quantize_normalized_network` uses: `alpha * k / Q` in normalized
//! units (`alpha` from the weight clipping, `Q = 2^(bits-1) - 1`); that step then keeps the
//! rounded weights as they are (it checks the bit width is the same).

use super::affine::AffineParams;
use super::classify::Class;
use super::clipping::{levels, Clipping};
use super::input_aware::PairStats;
use super::insert_scaling::node_classes;
use super::layer_stats::{channel_rows, set_channel_rows, LayerStats};
use super::quantize::weight_clip_fraction;
use super::{PtqState, Stage};
use crate::error::{Error, Result};
use crate::graph::Graph;
use crate::ops::Gemm;
use rayon::prelude::*;
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq)]
pub struct RoundingOptions {
    pub weight_bits: u32,
    /// Bit widths of single affine nodes (by node name), overriding `weight_bits`.
    pub layer_bits: BTreeMap<String, u32>,
    pub weight_clipping: Clipping,
    pub gptq: bool,
    pub bias_correction: bool,
    /// GPTQ's damping, as a fraction of the mean diagonal of `H`.
    pub damp: f64,
}

impl RoundingOptions {
    pub fn new(weight_bits: u32) -> RoundingOptions {
        RoundingOptions {
            weight_bits,
            layer_bits: BTreeMap::new(),
            weight_clipping: Clipping::Max,
            gptq: true,
            bias_correction: true,
            damp: 0.01,
        }
    }
    pub fn bits_of(&self, node: &str) -> u32 {
        self.layer_bits.get(node).copied().unwrap_or(self.weight_bits)
    }
}

/// Round-to-nearest of `w` (in grid units) onto the integers in `[-q, q]`.
fn nearest(w: f64, q: f64) -> f64 {
    w.round_ties_even().clamp(-q, q)
}

/// `sum a[i] * b[i]` with four accumulators (the loops below are dot products of rows).
fn dot(a: &[f64], b: &[f64]) -> f64 {
    let mut acc = [0f64; 4];
    let (ca, cb) = (a.chunks_exact(4), b.chunks_exact(4));
    let tail: f64 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..4 {
            acc[i] += x[i] * y[i];
        }
    }
    acc[0] + acc[1] + acc[2] + acc[3] + tail
}

/// Lower Cholesky factor of the symmetric positive definite `a` (`n x n`, row-major), or
/// None when it is not positive definite.
pub fn cholesky(a: &[f64], n: usize) -> Option<Vec<f64>> {
    let mut l = vec![0f64; n * n];
    for i in 0..n {
        for j in 0..=i {
            let s = dot(&l[i * n..i * n + j], &l[j * n..j * n + j]);
            let v = a[i * n + j] - s;
            if i == j {
                if v <= 0.0 || !v.is_finite() {
                    return None;
                }
                l[i * n + i] = v.sqrt();
            } else {
                l[i * n + j] = v / l[j * n + j];
            }
        }
    }
    Some(l)
}

/// The inverse of the symmetric positive definite `a` (`n x n`), or None when it is not
/// positive definite: `a^-1 = L^-T L^-1` from its Cholesky factor (rows in parallel).
pub fn spd_inverse(a: &[f64], n: usize) -> Option<Vec<f64>> {
    let l = cholesky(a, n)?;
    // mt = (L^-1)^T, row c holding column c of L^-1 (zero above the diagonal of L^-1, so
    // row c is zero before index c): forward substitution for L m = e_c.
    let mut mt = vec![0f64; n * n];
    mt.par_chunks_mut(n.max(1)).enumerate().for_each(|(c, row)| {
        row[c] = 1.0 / l[c * n + c];
        for i in c + 1..n {
            let s = dot(&l[i * n + c..i * n + i], &row[c..i]);
            row[i] = -s / l[i * n + i];
        }
    });
    // a^-1 = L^-T L^-1: (i, j) = sum_p M_{pi} M_{pj} = row i of mt . row j of mt (p >= i, j).
    let mut inv = vec![0f64; n * n];
    inv.par_chunks_mut(n.max(1)).enumerate().for_each(|(i, row)| {
        for (j, v) in row.iter_mut().enumerate() {
            let p = i.max(j);
            *v = dot(&mt[i * n + p..i * n + n], &mt[j * n + p..j * n + n]);
        }
    });
    Some(inv)
}

/// The upper factor `U` with `U^T U = a^-1` (what GPTQ propagates errors with).
pub fn inverse_upper_factor(a: &[f64], n: usize) -> Option<Vec<f64>> {
    let inv = spd_inverse(a, n)?;
    let lo = cholesky(&inv, n)?;
    // U = lo^T.
    let mut u = vec![0f64; n * n];
    for i in 0..n {
        for j in 0..=i {
            u[j * n + i] = lo[i * n + j];
        }
    }
    Some(u)
}

/// `c[m x n] = a[m x k] * b[k x n]` in f64, operands as row-major slices with `a` or `b`
/// read transposed when asked (the product runs on the current rayon pool).
pub fn dgemm(m: usize, n: usize, k: usize, a: &[f64], a_t: bool, b: &[f64], b_t: bool) -> Vec<f64> {
    let mut c = vec![0f64; m * n];
    if m == 0 || n == 0 || k == 0 {
        return c;
    }
    // Strides: element (i, p) of a at i * ars + p * acs.
    let (ars, acs) = if a_t { (1, m) } else { (k, 1) };
    let (brs, bcs) = if b_t { (1, k) } else { (n, 1) };
    assert!(a.len() >= m * k && b.len() >= k * n, "dgemm operand too short");
    let threads = rayon::current_num_threads();
    let par = if threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: every index read or written lies inside the slices (checked above: `a` holds
    // m * k elements, `b` k * n, `c` m * n, whatever the orientation).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n as isize,
            false,
            a.as_ptr(),
            acs as isize,
            ars as isize,
            b.as_ptr(),
            bcs as isize,
            brs as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            par,
        );
    }
    c
}

/// The damped Hessian of one group: `H + damp * mean(diag H) * I`, with the columns no
/// calibration row ever touched given a unit diagonal (their weights do not matter).
fn damped(gram: &[f64], k: usize, damp: f64) -> Vec<f64> {
    let mut h = gram.to_vec();
    let mean = (0..k).map(|i| h[i * k + i]).sum::<f64>() / k.max(1) as f64;
    let add = if mean > 0.0 { damp * mean } else { 1.0 };
    for i in 0..k {
        if h[i * k + i] <= 0.0 {
            for j in 0..k {
                h[i * k + j] = 0.0;
                h[j * k + i] = 0.0;
            }
            h[i * k + i] = 1.0;
        }
        h[i * k + i] += add;
    }
    h
}

/// GPTQ on one row `w` (grid units): columns rounded in order, each error spread over the
/// later columns through `u`.
pub fn gptq_row(w: &mut [f64], u: &[f64], q: f64) {
    let k = w.len();
    for i in 0..k {
        let r = nearest(w[i], q);
        let e = (w[i] - r) / u[i * k + i];
        w[i] = r;
        for j in i + 1..k {
            w[j] -= e * u[i * k + j];
        }
    }
}

/// The rows of one group rounded by GPTQ against `gram` (None when `H` could not be
/// factored even with more damping: the caller falls back to round-to-nearest).
pub fn gptq_rows(rows: &mut [Vec<f64>], gram: &[f64], k: usize, q: f64, damp: f64) -> Option<()> {
    let mut d = damp;
    let u = loop {
        if let Some(u) = inverse_upper_factor(&damped(gram, k, d), k) {
            break u;
        }
        d *= 10.0;
        if d > 10.0 {
            return None;
        }
    };
    // GPTQ is greedy and the clamp to [-q, q] can defeat its error feedback: each row keeps
    // whichever of GPTQ and round-to-nearest has the smaller output error on the calibration
    // rows, `d^T H d` with `d` the row's rounding change (undamped H: exactly the summed
    // squared output error).
    rows.par_iter_mut().for_each(|w| {
        let orig = w.clone();
        gptq_row(w, &u, q);
        let nearest_row: Vec<f64> = orig.iter().map(|&v| nearest(v, q)).collect();
        if nearest_row != *w && output_error(&orig, &nearest_row, gram, k) < output_error(&orig, w, gram, k) {
            w.copy_from_slice(&nearest_row);
        }
    });
    Some(())
}

/// The damping of the least-squares move of input-aware rounding, a fraction of the mean
/// diagonal of `H~`: a strong pull towards the float weights (single runs of ResNet-20 W4A4,
/// the `--act4` bench's split: 85.5 % top-1 at 0.01, 85.8 at 0.1, 86.3-86.7 at 1, 86.3 at 3,
/// 85.7 at 10).
pub const FIT_DAMP: f64 = 1.0;

/// Input-aware rounding of the rows of one group (grid units; see `input_aware`): each row
/// `w` moves to `w* = w + (H~ + l I)^-1 (C - H~) w` (`l`: `FIT_DAMP`), then is rounded
/// (GPTQ against `H~` damped by `damp`, or to nearest), keeping whichever of that, `w*` to
/// nearest and `w` to nearest has the smallest `|X~ w_q - X w|^2` on the calibration rows,
/// then (with `fit`) refined by coordinate descent on that error (`refine`) (`fit: false`: `w* = w`). None when
/// `H~` could not be factored.
pub fn input_aware_rows(
    rows: &mut [Vec<f64>],
    hq: &[f64],
    c: &[f64],
    k: usize,
    q: f64,
    damp: f64,
    gptq: bool,
    fit: bool,
) -> Option<()> {
    let n = rows.len();
    if n == 0 || k == 0 {
        return Some(());
    }
    // U for GPTQ against H~, and (with `fit`) the inverse of the more damped H~ + l I.
    let mut d = damp;
    let mut dl = FIT_DAMP.max(damp);
    let (minv, u) = loop {
        let u = if gptq {
            inverse_upper_factor(&damped(hq, k, d), k)
        } else {
            Some(Vec::new())
        };
        let m = if fit {
            spd_inverse(&damped(hq, k, dl), k)
        } else {
            Some(Vec::new())
        };
        if let (Some(m), Some(u)) = (m, u) {
            break (m, u);
        }
        d *= 10.0;
        dl = dl.max(d);
        if d > 10.0 {
            return None;
        }
    };
    let w: Vec<f64> = rows.iter().flat_map(|r| r.iter().copied()).collect();
    // Row r of `cw` is `C w_r`: the cross term of |X~ w_q - X w|^2 = w_q^T H~ w_q - 2 w_q^T C w + const.
    let cw = dgemm(n, k, k, &w, false, c, true);
    // target = w + (H~ + l I)^-1 (C - H~) w, row by row (both matrices symmetric but C).
    let target: Vec<f64> = if fit {
        let hw = dgemm(n, k, k, &w, false, hq, false);
        let r: Vec<f64> = cw.iter().zip(&hw).map(|(a, b)| a - b).collect();
        let z = dgemm(n, k, k, &r, false, &minv, false);
        w.iter().zip(&z).map(|(a, b)| a + b).collect()
    } else {
        w.clone()
    };
    // Candidates: w to nearest, the target to nearest, GPTQ of the target against H~.
    let mut cands: Vec<Vec<f64>> = vec![w.iter().map(|&v| nearest(v, q)).collect()];
    if fit {
        cands.push(target.iter().map(|&v| nearest(v, q)).collect());
    }
    if gptq {
        let mut g = target.clone();
        g.par_chunks_mut(k).for_each(|row| gptq_row(row, &u, q));
        cands.push(g);
    }
    // Each candidate's objective `v^T H~ v - 2 v . cw` per row, with `H~ v` kept for the descent.
    let hv: Vec<Vec<f64>> = cands.iter().map(|v| dgemm(n, k, k, v, false, hq, false)).collect();
    rows.par_iter_mut().enumerate().for_each(|(r, out)| {
        let span = r * k..(r + 1) * k;
        let cwr = &cw[span.clone()];
        let mut best = 0;
        let mut best_cost = f64::INFINITY;
        for (i, (v, h)) in cands.iter().zip(&hv).enumerate() {
            let v = &v[span.clone()];
            let cost = dot(v, &h[span.clone()]) - 2.0 * dot(v, cwr);
            if cost < best_cost {
                best_cost = cost;
                best = i;
            }
        }
        out.copy_from_slice(&cands[best][span.clone()]);
        // Only with enough rows: on few (a classifier's 1280 inputs seen 100 times) the
        // descent fits the calibration rows' noise.
        if fit {
            let g: Vec<f64> = hv[best][span].iter().zip(cwr).map(|(a, b)| a - b).collect();
            refine_from(out, hq, g, k, q, 3);
        }
    });
    Some(())
}

/// Coordinate descent on `v^T H v - 2 v^T b` over the integers in `[-q, q]`: each weight in
/// turn moves one step up or down when that lowers the objective, for at most `sweeps`
/// sweeps (or until none moves). The objective never rises.
pub fn refine(v: &mut [f64], h: &[f64], b: &[f64], k: usize, q: f64, sweeps: usize) {
    // g = H v - b: half the gradient.
    let g: Vec<f64> = (0..k).map(|i| dot(&h[i * k..(i + 1) * k], v) - b[i]).collect();
    refine_from(v, h, g, k, q, sweeps);
}

/// `refine` given `g = H v - b` (half the gradient at `v`).
fn refine_from(v: &mut [f64], h: &[f64], mut g: Vec<f64>, k: usize, q: f64, sweeps: usize) {
    for _ in 0..sweeps {
        let mut moved = false;
        for i in 0..k {
            let hii = h[i * k + i];
            if hii <= 0.0 {
                continue;
            }
            // Change of the objective for v_i += d: d^2 H_ii + 2 d g_i.
            let d = if -2.0 * g[i] > hii && v[i] + 1.0 <= q {
                1.0
            } else if 2.0 * g[i] > hii && v[i] - 1.0 >= -q {
                -1.0
            } else {
                continue;
            };
            v[i] += d;
            // Column i of the symmetric H is its row i.
            for (gj, &hji) in g.iter_mut().zip(&h[i * k..(i + 1) * k]) {
                *gj += d * hji;
            }
            moved = true;
        }
        if !moved {
            break;
        }
    }
}

/// `d^T H d` with `d = rounded - orig` (H symmetric: the upper triangle read once).
fn output_error(orig: &[f64], rounded: &[f64], h: &[f64], k: usize) -> f64 {
    let d: Vec<f64> = rounded.iter().zip(orig).map(|(r, o)| r - o).collect();
    (0..k)
        .filter(|&i| d[i] != 0.0)
        .map(|i| d[i] * (h[i * k + i] * d[i] + 2.0 * dot(&h[i * k + i + 1..(i + 1) * k], &d[i + 1..])))
        .sum()
}

/// New weights and bias of one affine node.
pub(crate) struct Rounded {
    pub idx: usize,
    pub params: AffineParams,
    pub alpha: Vec<f32>,
    pub bits: u32,
    pub note: Option<String>,
}

/// Rounds one affine node (`pair`: its inputs in the quantized network, `input_aware`).
pub(crate) fn round_node(
    graph: &Graph,
    state: &PtqState,
    idx: usize,
    opts: &RoundingOptions,
    pair: Option<&PairStats>,
) -> Result<Rounded> {
    let node = &graph.nodes[idx];
    let mut a = AffineParams::read(graph, idx)?;
    let bits = opts.bits_of(&node.name);
    let q = levels(bits, true);
    let qf = q as f64;
    let per_channel = super::channelwise(graph, state, idx, &a);
    let alpha: Vec<f32> = match opts.weight_clipping {
        Clipping::Max => vec![1.0; a.channels],
        _ if per_channel => (0..a.channels)
            .map(|c| weight_clip_fraction(&a.channel(c), q))
            .collect(),
        _ => vec![weight_clip_fraction(&a.weight, q); a.channels],
    };
    let float_rows = channel_rows(&a);
    let mut rows: Vec<Vec<f64>> = float_rows
        .iter()
        .zip(&alpha)
        .map(|(r, &al)| r.iter().map(|&w| w as f64 * qf / al as f64).collect())
        .collect();
    let stats: Option<&LayerStats> = state.layer_stats.get(&node.name);
    let mut note = None;
    let mut done = vec![false; rows.len()];
    let k_w = float_rows.first().map_or(0, |r| r.len());
    // Gemm computes alpha * x W + beta * b.
    let pair = pair.filter(|p| p.rows > 0 && p.k == k_w && rows.len().is_multiple_of(p.groups.max(1)));
    if let Some(p) = pair {
        let per_group = rows.len() / p.groups.max(1);
        // The least-squares move needs many more rows than unknowns (else it fits the
        // calibration rows' noise): below 4 rows per weight the rows are rounded as they are.
        let fit = p.rows >= 4 * p.k as u64;
        for g in 0..p.groups {
            let span = g * per_group..(g + 1) * per_group;
            let kk = g * p.k * p.k..(g + 1) * p.k * p.k;
            let (hq, c) = (&p.gram_q[kk.clone()], &p.cross[kk]);
            if input_aware_rows(&mut rows[span.clone()], hq, c, p.k, qf, opts.damp, opts.gptq, fit).is_some() {
                done[span].iter_mut().for_each(|d| *d = true);
            } else {
                note = Some(format!(
                    "node '{}': the quantized input's Hessian could not be factored; its weights are rounded to nearest",
                    node.name
                ));
            }
        }
    } else if opts.gptq {
        if let Some(st) = stats.filter(|s| s.rows > 0 && s.k == float_rows.first().map_or(0, |r| r.len())) {
            let per_group = rows.len() / st.groups.max(1);
            for g in 0..st.groups {
                let gram = &st.gram[g * st.k * st.k..(g + 1) * st.k * st.k];
                let span = g * per_group..(g + 1) * per_group;
                if gptq_rows(&mut rows[span.clone()], gram, st.k, qf, opts.damp).is_some() {
                    done[span].iter_mut().for_each(|d| *d = true);
                } else {
                    note = Some(format!(
                        "node '{}': the input Hessian could not be factored; its weights are rounded to nearest",
                        node.name
                    ));
                }
            }
        } else {
            note = Some(format!(
                "node '{}': no calibration input statistics; its weights are rounded to nearest",
                node.name
            ));
        }
    }
    for (r, d) in rows.iter_mut().zip(&done) {
        if !d {
            r.iter_mut().for_each(|w| *w = nearest(*w, qf));
        }
    }
    let new_rows: Vec<Vec<f32>> = rows
        .iter()
        .zip(&alpha)
        .map(|(r, &al)| r.iter().map(|&v| (v * al as f64 / qf) as f32).collect())
        .collect();
    // A MatMul has no bias to correct.
    let gain = match node.op.downcast_ref::<Gemm>() {
        Some(g) if g.beta != 0.0 => g.alpha as f64 / g.beta as f64,
        _ => 1.0,
    };
    if opts.bias_correction && !node.op.is::<crate::ops::MatMul>() && pair.is_some() {
        // Mean output in the quantized network made equal to the float one's.
        if let Some(p) = pair {
            let per_group = new_rows.len() / p.groups.max(1);
            for (c, (new, old)) in new_rows.iter().zip(&float_rows).enumerate() {
                let (mq, mf) = p.means(c / per_group.max(1));
                let shift: f64 = (0..p.k).map(|i| new[i] as f64 * mq[i] - old[i] as f64 * mf[i]).sum();
                a.bias[c] -= (gain * shift) as f32;
            }
        }
    } else if opts.bias_correction && !node.op.is::<crate::ops::MatMul>() {
        if let Some(st) = stats.filter(|s| s.rows > 0) {
            let x = node.inputs.first().cloned().unwrap_or_default();
            let s_now = state.scale(&x)[0] as f64;
            let to_now = st.scale as f64 / s_now;
            let per_group = new_rows.len() / st.groups.max(1);
            for (c, (new, old)) in new_rows.iter().zip(&float_rows).enumerate() {
                let mean = st.mean(c / per_group.max(1));
                let shift: f64 = new
                    .iter()
                    .zip(old)
                    .zip(&mean)
                    .map(|((&n, &o), &m)| (n as f64 - o as f64) * m * to_now)
                    .sum();
                a.bias[c] -= (gain * shift) as f32;
            }
        }
    }
    set_channel_rows(&mut a, &new_rows);
    Ok(Rounded {
        idx,
        params: a,
        alpha,
        bits,
        note,
    })
}

/// The affine nodes (Conv, Gemm, MatMul) in graph order (mixed precision picks the first and
/// last from it).
pub fn affine_nodes(graph: &Graph, excluded: &std::collections::BTreeSet<String>) -> Vec<String> {
    let classes = node_classes(graph, excluded);
    graph
        .nodes
        .iter()
        .filter(|n| classes.get(&n.name) == Some(&Class::Affine))
        .map(|n| n.name.clone())
        .collect()
}

/// Rounds every affine node's weights onto its grid (see the module doc).
pub fn round_weights(graph: &mut Graph, state: &mut PtqState, opts: &RoundingOptions) -> Result<()> {
    round_weights_with(graph, state, opts, None)
}

/// `round_weights`, with the nodes found in `pairs` rounded against their inputs in the
/// quantized network (`input_aware`).
pub fn round_weights_with(
    graph: &mut Graph,
    state: &mut PtqState,
    opts: &RoundingOptions,
    pairs: Option<&BTreeMap<String, PairStats>>,
) -> Result<()> {
    state.expect("round_weights", Stage::ActsNormalized, &[])?;
    super::check_bits("weight_bits", opts.weight_bits as i64)?;
    for (n, &b) in &opts.layer_bits {
        super::check_bits(&format!("layer_bits['{n}']"), b as i64)?;
    }
    if (opts.gptq || opts.bias_correction) && state.layer_samples == 0 && pairs.is_none() {
        return Err(Error::InvalidArgument(
            "round_weights: gptq and bias_correction need the layers' calibration inputs; run compute_ranges with layer_statistics (a number of samples > 0)".into(),
        ));
    }
    if !(opts.damp > 0.0 && opts.damp.is_finite()) {
        return Err(Error::InvalidArgument(format!(
            "round_weights: damp must be a positive number, got {}",
            opts.damp
        )));
    }
    let classes = node_classes(graph, &state.excluded);
    let nodes: Vec<usize> = (0..graph.nodes.len())
        .filter(|&i| classes.get(&graph.nodes[i].name) == Some(&Class::Affine))
        .collect();
    for n in opts.layer_bits.keys() {
        if !nodes.iter().any(|&i| graph.nodes[i].name == *n) {
            return Err(Error::InvalidArgument(format!(
                "layer_bits: '{n}' is not an affine node (Conv, Gemm, MatMul) of the model"
            )));
        }
    }
    let g: &Graph = graph;
    let st: &PtqState = state;
    let done: Vec<Result<Rounded>> = nodes
        .par_iter()
        .with_max_len(1)
        .map(|&i| round_node(g, st, i, opts, pairs.and_then(|p| p.get(&g.nodes[i].name))))
        .collect();
    let done = done.into_iter().collect::<Result<Vec<_>>>()?;
    state.layer_bits = opts.layer_bits.clone();
    apply_rounded(graph, state, done)
}

/// Writes rounded nodes into the graph and records their grids.
pub(crate) fn apply_rounded(graph: &mut Graph, state: &mut PtqState, done: Vec<Rounded>) -> Result<()> {
    for r in done {
        let name = graph.nodes[r.idx].name.clone();
        r.params.write(graph, r.idx)?;
        if let Some(info) = state.affine.get_mut(&name) {
            info.weight_clip = r.alpha;
            info.rounded_bits = Some(r.bits);
        }
        if let Some(n) = r.note {
            state.warnings.push(n);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spd(n: usize, seed: u64) -> Vec<f64> {
        let mut s = seed;
        let mut r = || {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 33) as f64 / (1u64 << 31) as f64) - 0.5
        };
        let x: Vec<f64> = (0..n * 2 * n).map(|_| r()).collect();
        let mut a = vec![0f64; n * n];
        for i in 0..n {
            for j in 0..n {
                a[i * n + j] = (0..2 * n).map(|p| x[p * n + i] * x[p * n + j]).sum();
            }
        }
        a
    }

    #[test]
    fn inverse_upper_factor_gives_the_inverse() {
        for n in [1, 2, 5, 17] {
            let a = spd(n, n as u64);
            let u = inverse_upper_factor(&a, n).unwrap();
            // (U^T U) a = I.
            for i in 0..n {
                for j in 0..n {
                    let inv_ij = |i: usize, j: usize| (0..n).map(|p| u[p * n + i] * u[p * n + j]).sum::<f64>();
                    let v: f64 = (0..n).map(|p| inv_ij(i, p) * a[p * n + j]).sum();
                    let want = if i == j { 1.0 } else { 0.0 };
                    assert!((v - want).abs() < 1e-8, "n={n} ({i},{j}): {v}");
                }
                for j in 0..i {
                    assert_eq!(u[i * n + j], 0.0);
                }
            }
        }
        assert!(cholesky(&[1.0, 2.0, 2.0, 1.0], 2).is_none());
    }

    #[test]
    fn dgemm_is_the_plain_product_in_every_orientation() {
        let (m, n, k) = (7, 5, 9);
        let a: Vec<f64> = (0..m * k).map(|i| (i as f64 * 0.31).sin()).collect();
        let b: Vec<f64> = (0..k * n).map(|i| (i as f64 * 0.17).cos()).collect();
        // The same matrices stored transposed.
        let at: Vec<f64> = (0..k * m).map(|i| a[(i % m) * k + i / m]).collect();
        let bt: Vec<f64> = (0..n * k).map(|i| b[(i % k) * n + i / k]).collect();
        let want: Vec<f64> = (0..m * n)
            .map(|e| (0..k).map(|p| a[(e / n) * k + p] * b[p * n + e % n]).sum())
            .collect();
        for (x, xt, y, yt) in [
            (&a, false, &b, false),
            (&at, true, &b, false),
            (&a, false, &bt, true),
            (&at, true, &bt, true),
        ] {
            let got = dgemm(m, n, k, x, xt, y, yt);
            assert!(got.iter().zip(&want).all(|(g, w)| (g - w).abs() < 1e-12), "{xt} {yt}");
        }
    }

    #[test]
    fn spd_inverse_is_the_inverse() {
        for n in [1, 3, 16] {
            let a = spd(n, 7 + n as u64);
            let inv = spd_inverse(&a, n).unwrap();
            for i in 0..n {
                for j in 0..n {
                    let v: f64 = (0..n).map(|p| inv[i * n + p] * a[p * n + j]).sum();
                    assert!((v - if i == j { 1.0 } else { 0.0 }).abs() < 1e-8);
                }
            }
        }
        assert!(spd_inverse(&[1.0, 2.0, 2.0, 1.0], 2).is_none());
    }
}
