//! Statistics of the inputs of every affine node over (part of) the calibration set, for the
//! weight-rounding passes (`rounding`): per channel group, the sum of the input rows (their
//! mean drives bias correction) and the Gram matrix `X^T X` of the rows (the Hessian of the
//! layer's squared output error, which GPTQ rounds against).
//!
//! A row is what one output value is computed from: one im2col patch of a convolution
//! (`[C/g, kh, kw]`, in the weight's order, zero where the window reaches into the padding),
//! or one row of a Gemm / MatMul input. Gathered during `compute_ranges` when asked for, on
//! the first `samples` samples.

use super::affine::{AffineParams, Layout};
use super::classify::Class;
use super::insert_scaling::node_classes;
use crate::error::{Error, Result};
use crate::graph::Graph;
use crate::kernels::conv::ConvShape;
use crate::kernels::gemm::{sgemm, MatRef};
use crate::ops::{Conv, Gemm};
use crate::tensor::Tensor;

/// The input statistics of one affine node.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerStats {
    /// Channel groups (a convolution's `group`; 1 otherwise) and row length per group.
    pub groups: usize,
    pub k: usize,
    /// Sum of the rows, `groups * k`.
    pub sum: Vec<f64>,
    /// `X^T X` per group, `groups * k * k` (row-major, symmetric).
    pub gram: Vec<f64>,
    /// Number of rows summed (per group).
    pub rows: u64,
    /// The input's scale `S` when the rows were seen (real = stored * S).
    pub scale: f32,
}

impl LayerStats {
    pub fn empty(groups: usize, k: usize, scale: f32) -> LayerStats {
        LayerStats {
            groups,
            k,
            sum: vec![0.0; groups * k],
            gram: vec![0.0; groups * k * k],
            rows: 0,
            scale,
        }
    }

    pub fn merge(&mut self, other: &LayerStats) {
        self.sum.iter_mut().zip(&other.sum).for_each(|(a, b)| *a += b);
        self.gram.iter_mut().zip(&other.gram).for_each(|(a, b)| *a += b);
        self.rows += other.rows;
    }

    /// Mean row of group `g`, in the stored units of the input at collection time.
    pub fn mean(&self, g: usize) -> Vec<f64> {
        let n = self.rows.max(1) as f64;
        self.sum[g * self.k..(g + 1) * self.k].iter().map(|s| s / n).collect()
    }

    /// Adds rows of group `g`: `x` is `[rows, k]` row-major, or with `by_column` its
    /// transpose `[k, rows]` (the im2col layout: one line per row element).
    fn add_rows(&mut self, g: usize, x: &[f32], by_column: bool, gram32: &mut Vec<f32>) {
        let k = self.k;
        let rows = x.len() / k.max(1);
        if rows == 0 {
            return;
        }
        let sum = &mut self.sum[g * k..(g + 1) * k];
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
        gram32.clear();
        gram32.resize(k * k, 0.0);
        // X^T X, with X = [rows, k] (x itself, or the transpose of x).
        let (a, b) = if by_column {
            (MatRef::row_major(x, rows, false), MatRef::row_major(x, rows, true))
        } else {
            (MatRef::row_major(x, k, true), MatRef::row_major(x, k, false))
        };
        sgemm(k, k, rows, 1.0, a, b, gram32, false, 1);
        for (a, &b) in self.gram[g * k * k..(g + 1) * k * k].iter_mut().zip(gram32.iter()) {
            *a += b as f64;
        }
    }
}

/// How the rows of one affine node are cut from its input.
#[derive(Debug, Clone)]
pub enum RowSource {
    Conv(Conv),
    /// Gemm without transA, MatMul: the input's last axis is `k`.
    Matrix,
}

/// The affine nodes whose inputs can be gathered: node name -> (input value, row source).
pub fn watched_inputs(
    graph: &Graph,
    excluded: &std::collections::BTreeSet<String>,
) -> Vec<(String, String, RowSource)> {
    let classes = node_classes(graph, excluded);
    let mut out = Vec::new();
    for (idx, n) in graph.nodes.iter().enumerate() {
        if classes.get(&n.name) != Some(&Class::Affine) {
            continue;
        }
        if AffineParams::read(graph, idx).is_err() {
            continue;
        }
        let Some(x) = n.inputs.first() else { continue };
        let src = if let Some(c) = n.op.downcast_ref::<Conv>() {
            RowSource::Conv(c.clone())
        } else if n.op.downcast_ref::<Gemm>().is_some_and(|g| g.trans_a) {
            continue;
        } else {
            RowSource::Matrix
        };
        out.push((n.name.clone(), x.clone(), src));
    }
    out
}

/// The group count and row length of node `name` for input `x` and weight `w`.
pub(crate) fn geometry(
    name: &str,
    src: &RowSource,
    x: &Tensor,
    w: &[usize],
) -> Result<(usize, usize, Option<ConvShape>)> {
    match src {
        RowSource::Conv(c) => {
            let s = c.geometry(x.shape(), w)?;
            let k = w[1..].iter().product();
            Ok((s.group, k, Some(s)))
        }
        RowSource::Matrix => {
            let k = x.shape().last().copied().unwrap_or(0);
            if k == 0 {
                return Err(Error::shape(format!("node '{name}': an input with an empty last axis")));
            }
            Ok((1, k, None))
        }
    }
}

/// Adds the rows of input `x` of an affine node (weight shape `w`) to `stats` (created on
/// first use with input scale `scale`).
pub fn observe(
    name: &str,
    src: &RowSource,
    x: &Tensor,
    w: &[usize],
    scale: f32,
    stats: &mut Option<LayerStats>,
) -> Result<()> {
    let (groups, k, conv) = geometry(name, src, x, w)?;
    let st = stats.get_or_insert_with(|| LayerStats::empty(groups, k, scale));
    if st.groups != groups || st.k != k {
        return Err(Error::shape(format!(
            "node '{name}': the input rows changed shape between batches ({} x {} then {groups} x {k})",
            st.groups, st.k
        )));
    }
    let data = x.as_slice::<f32>()?;
    let mut gram = Vec::new();
    match conv {
        None => {
            st.add_rows(0, data, false, &mut gram);
            st.rows += (data.len() / k) as u64;
        }
        Some(s) => {
            let mut cols = Vec::new();
            let plane = s.h * s.w;
            // A 1x1 window with stride 1 and no padding reads the input as it is.
            let identity = s.win.kernel == [1, 1] && s.win.strides == [1, 1] && s.win.pads == [0; 4];
            let cg = s.c / s.group;
            for img in 0..s.n {
                let xi = &data[img * s.c * plane..(img + 1) * s.c * plane];
                for g in 0..groups {
                    if identity {
                        st.add_rows(g, &xi[g * cg * plane..(g + 1) * cg * plane], true, &mut gram);
                    } else {
                        patches(xi, &s, g, &mut cols);
                        st.add_rows(g, &cols, true, &mut gram);
                    }
                }
            }
            st.rows += (s.n * s.out[0] * s.out[1]) as u64;
        }
    }
    Ok(())
}

/// The im2col matrix `[C/g * kh * kw, oh * ow]` of channel group `g` of one image: line
/// `(c, i, j)` holds, for every output position, the input under kernel element `(i, j)` of
/// channel `c` (0 in the padding).
pub fn patches(x: &[f32], s: &ConvShape, g: usize, cols: &mut Vec<f32>) {
    let [kh, kw] = s.win.kernel;
    let [oh, ow] = s.out;
    let [sh, sw] = s.win.strides;
    let [dh, dw] = s.win.dilations;
    let (pt, pl) = (s.win.pads[0] as isize, s.win.pads[1] as isize);
    let cg = s.c / s.group;
    let npos = oh * ow;
    cols.clear();
    cols.resize(cg * kh * kw * npos, 0.0);
    for c in 0..cg {
        let plane = &x[(g * cg + c) * s.h * s.w..(g * cg + c + 1) * s.h * s.w];
        for i in 0..kh {
            for j in 0..kw {
                let line = &mut cols[((c * kh + i) * kw + j) * npos..((c * kh + i) * kw + j + 1) * npos];
                let off = (j * dw) as isize - pl;
                for y in 0..oh {
                    let iy = (y * sh + i * dh) as isize - pt;
                    if iy < 0 || iy >= s.h as isize {
                        continue;
                    }
                    let src = &plane[iy as usize * s.w..(iy as usize + 1) * s.w];
                    let dst = &mut line[y * ow..(y + 1) * ow];
                    if sw == 1 && off >= 0 && off + ow as isize <= s.w as isize {
                        dst.copy_from_slice(&src[off as usize..off as usize + ow]);
                    } else {
                        for (xo, d) in dst.iter_mut().enumerate() {
                            let ix = (xo * sw) as isize + off;
                            if ix >= 0 && ix < s.w as isize {
                                *d = src[ix as usize];
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Weight rows of one affine node per output channel, in the order of the input rows.
pub fn channel_rows(a: &AffineParams) -> Vec<Vec<f32>> {
    (0..a.channels).map(|c| a.channel(c)).collect()
}

/// Writes per-channel rows back into the weight.
pub fn set_channel_rows(a: &mut AffineParams, rows: &[Vec<f32>]) {
    let ch = a.channels.max(1);
    match a.layout {
        Layout::Rows => {
            let block = a.weight.len() / ch;
            for (c, r) in rows.iter().enumerate() {
                a.weight[c * block..(c + 1) * block].copy_from_slice(r);
            }
        }
        Layout::Columns => {
            for (c, r) in rows.iter().enumerate() {
                for (i, &v) in r.iter().enumerate() {
                    a.weight[i * ch + c] = v;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::conv::conv2d_ref;
    use crate::ops::Padding;

    /// The patches times the weight rows are the convolution (reference loop).
    #[test]
    fn patches_times_weights_are_the_convolution() {
        let conv = Conv {
            kernel_shape: None,
            strides: Some(vec![2, 1]),
            dilations: None,
            padding: Padding::Explicit(vec![1, 0, 1, 2]),
            group: 2,
        };
        let (xs, ws) = ([2usize, 4, 5, 6], [6usize, 2, 3, 2]);
        let x: Vec<f32> = (0..xs.iter().product::<usize>())
            .map(|i| ((i * 37 % 11) as f32) - 5.0)
            .collect();
        let w: Vec<f32> = (0..ws.iter().product::<usize>())
            .map(|i| ((i * 13 % 7) as f32) - 3.0)
            .collect();
        let s = conv.geometry(&xs, &ws).unwrap();
        let want = conv2d_ref(&x, &w, None, &s);
        let k = 2 * 3 * 2;
        let (mg, plane_out, plane_in) = (3, s.out[0] * s.out[1], 4 * 5 * 6);
        let mut rows = Vec::new();
        for img in 0..2 {
            for g in 0..2 {
                patches(&x[img * plane_in..(img + 1) * plane_in], &s, g, &mut rows);
                for m in 0..mg {
                    let oc = g * mg + m;
                    for p in 0..plane_out {
                        let got: f32 = (0..k).map(|i| rows[i * plane_out + p] * w[oc * k + i]).sum();
                        let exp = want[(img * 6 + oc) * plane_out + p];
                        assert!((got - exp).abs() < 1e-4, "{got} vs {exp}");
                    }
                }
            }
        }
    }

    /// The statistics `observe` gathers equal plain loops over every window position.
    #[test]
    fn statistics_are_the_plain_sums_over_the_windows() {
        let cases = [
            (vec![1, 1], vec![1, 1], vec![0, 0, 0, 0], 1, [2usize, 3, 5, 4], 2),
            (vec![3, 3], vec![1, 1], vec![1, 1, 1, 1], 1, [2, 3, 5, 4], 4),
            (vec![3, 2], vec![2, 1], vec![1, 0, 0, 1], 3, [1, 3, 6, 5], 3),
            (vec![1, 1], vec![2, 2], vec![0, 0, 0, 0], 1, [1, 2, 5, 5], 3),
        ];
        for (ks, strides, pads, group, xs, m) in cases {
            let conv = Conv {
                kernel_shape: None,
                strides: Some(strides),
                dilations: None,
                padding: Padding::Explicit(pads),
                group,
            };
            let ws = [m * group, xs[1] / group, ks[0], ks[1]];
            let x: Vec<f32> = (0..xs.iter().product::<usize>())
                .map(|i| ((i * 29 % 13) as f32) * 0.25 - 1.0)
                .collect();
            let t = Tensor::from_vec(xs.to_vec(), x.clone()).unwrap();
            let mut st = None;
            observe("c", &RowSource::Conv(conv.clone()), &t, &ws, 1.0, &mut st).unwrap();
            let st = st.unwrap();
            let s = conv.geometry(&xs, &ws).unwrap();
            let cg = xs[1] / group;
            let k = cg * ks[0] * ks[1];
            assert_eq!(
                (st.groups, st.k, st.rows),
                (group, k, (xs[0] * s.out[0] * s.out[1]) as u64)
            );
            for g in 0..group {
                let mut sum = vec![0f64; k];
                let mut gram = vec![0f64; k * k];
                for n in 0..xs[0] {
                    for oy in 0..s.out[0] {
                        for ox in 0..s.out[1] {
                            let mut row = vec![0f64; k];
                            for c in 0..cg {
                                for i in 0..ks[0] {
                                    for j in 0..ks[1] {
                                        let iy = (oy * s.win.strides[0] + i) as isize - s.win.pads[0] as isize;
                                        let ix = (ox * s.win.strides[1] + j) as isize - s.win.pads[1] as isize;
                                        if iy >= 0 && ix >= 0 && (iy as usize) < xs[2] && (ix as usize) < xs[3] {
                                            let ci = g * cg + c;
                                            row[(c * ks[0] + i) * ks[1] + j] = x
                                                [((n * xs[1] + ci) * xs[2] + iy as usize) * xs[3] + ix as usize]
                                                as f64;
                                        }
                                    }
                                }
                            }
                            for a in 0..k {
                                sum[a] += row[a];
                                for b in 0..k {
                                    gram[a * k + b] += row[a] * row[b];
                                }
                            }
                        }
                    }
                }
                for a in 0..k {
                    assert!((st.sum[g * k + a] - sum[a]).abs() < 1e-4);
                    for b in 0..k {
                        let got = st.gram[(g * k + a) * k + b];
                        assert!((got - gram[a * k + b]).abs() < 1e-3, "{got} vs {}", gram[a * k + b]);
                    }
                }
            }
        }
        // A matrix input: its rows as they are.
        let t = Tensor::from_vec(vec![3, 2], vec![1.0f32, 2.0, -1.0, 0.5, 3.0, 0.0]).unwrap();
        let mut st = None;
        observe("g", &RowSource::Matrix, &t, &[4, 2], 1.0, &mut st).unwrap();
        let st = st.unwrap();
        assert_eq!(st.sum, vec![3.0, 2.5]);
        assert_eq!(st.gram, vec![11.0, 1.5, 1.5, 4.25]);
    }
}
