//! Optional step after `prepare_network`: outlier channel splitting of the values that float
//! islands hand to MatMuls (a transformer's LayerNorm outputs, read by its q, k, v and
//! feed-forward layers).
//!
//! Such a value is requantized per tensor, but a few of its channels (the last axis, which
//! the MatMuls contract) reach many times the range of the rest: one 8-bit grid then either
//! rounds the ordinary channels coarsely or clips the outliers, which the next layer's
//! output depends on. Splitting channel `j` into `n_j` copies of `x_j / n_j`, and repeating
//! its weight row `n_j` times, leaves the product unchanged (`x_j w_j = n_j (x_j / n_j) w_j`)
//! and divides the channel's range by `n_j`, so that every channel fits within `ratio` times
//! the median channel's range. The weights are not touched (rows repeated, not scaled), and
//! the integer engine and the exports see a plain MatMul with a longer inner dimension.
//!
//! In the graph: `value -> Mul(1 / n) -> Gather(axis = -1, repeated indices) -> MatMuls`, the
//! Mul joining the island before it (its quantizer comes after the Mul), the Gather moving
//! integers. Other readers of the value (a residual Add) keep reading it unchanged. The
//! quantizer of a split value keeps its whole range (`adjust_ranges` uses max clipping for it):
//! its largest values are now the split channels, which clipping would cut again.
//!
//! A value that islands hand to convolutions only (a speech model's STFT magnitudes, whose
//! low-frequency channels reach 40x the median) is smoothed instead (SmoothQuant's
//! migration) when its spread exceeds `SMOOTH_MIN_SPREAD` too: channel `c` (axis 1) is
//! divided by `s_c = m_c^a / w_c^(1 - a)` (`m_c` its calibration maximum, `w_c` the largest
//! weight reading it, `a = SMOOTH_ALPHA`, the `s` normalized to a geometric mean of 1) and the
//! weights' input channel `c` multiplied by it: `value -> Mul(1 / s) -> Convs`, the Mul joining
//! the island. Splitting a convolution's input channels was measured too and lost to
//! smoothing on that model (benches/RESULTS.md).

use super::insert_scaling::node_classes;
use super::{PtqState, Stage};
use crate::error::{Error, Result};
use crate::exec::Executor;
use crate::graph::{Graph, Node};
use crate::ops::{BinaryOp, Class, Conv, Gather, MatMul};
use crate::tensor::{DType, Tensor};
use rayon::prelude::*;
use std::collections::{BTreeMap, HashMap};

/// SmoothQuant's migration strength for convolution inputs: the share of a channel's range
/// moved into the weights. 0.35-0.45 all lift the speech model's decisions above
/// onnxruntime's, 0.5 does not (benches/RESULTS.md, "Real trained models").
pub const SMOOTH_ALPHA: f32 = 0.4;

/// The channel spread (largest channel range over the median one) below which a
/// convolution's input is not smoothed, whatever the split ratio: moving range into the
/// weights costs their precision, and it paid only on the speech model's STFT magnitudes
/// (spread 41); on the OCR models' inputs (spread 3-9) it lost up to 0.9 dB.
pub const SMOOTH_MIN_SPREAD: f32 = 16.0;

/// How a value's outlier channels were handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// Channels split into copies (MatMul readers).
    Split,
    /// Channels rescaled against the weights (convolution readers).
    Smooth,
}

impl Method {
    pub fn name(self) -> &'static str {
        match self {
            Method::Split => "split",
            Method::Smooth => "smooth",
        }
    }
}

/// What `split_outlier_channels` did to one value.
#[derive(Debug, Clone, PartialEq)]
pub struct SplitValue {
    pub method: Method,
    /// Channels of the value (its last axis).
    pub channels: usize,
    /// Channels added by the split (the MatMuls' inner dimension grows by this much; 0 when
    /// smoothed).
    pub added: usize,
    /// Largest channel range over the median channel range, before and after.
    pub ratio_before: f32,
    pub ratio_after: f32,
    /// The MatMuls (or convolutions) that read the value.
    pub readers: Vec<String>,
    /// The Mul node whose output the quantizer reads.
    pub scale_node: String,
}

/// By value name.
pub type SplitReport = BTreeMap<String, SplitValue>;

/// Whether node `n` is a MatMul reading `value` as its first operand against a constant
/// float matrix `[k, n]`.
fn weight_reader(graph: &Graph, n: &Node, value: &str) -> bool {
    n.op.is::<MatMul>()
        && n.inputs.len() == 2
        && n.inputs[0] == value
        && graph
            .initializers
            .get(&n.inputs[1])
            .is_some_and(|w| w.dtype() == DType::F32 && w.rank() == 2)
}

/// Whether node `n` is a convolution of one group reading `value` as its data input, with a
/// constant float weight `[O, C, k...]`.
fn conv_reader(graph: &Graph, n: &Node, value: &str) -> bool {
    n.op.downcast_ref::<Conv>().is_some_and(|c| c.group == 1)
        && n.inputs.len() >= 2
        && n.inputs[0] == value
        && graph
            .initializers
            .get(&n.inputs[1])
            .is_some_and(|w| w.dtype() == DType::F32 && w.rank() >= 3)
}

/// Whether every reader of `value` is a quantized convolution that `conv_reader` accepts
/// (scaling the value then changes no other reader).
fn smoothable(graph: &Graph, value: &str, classes: &HashMap<String, Class>) -> bool {
    let reads = graph.consumers(value);
    !reads.is_empty()
        && reads.iter().all(|&(c, _)| {
            let r = &graph.nodes[c];
            conv_reader(graph, r, value) && matches!(classes.get(&r.name), Some(Class::Affine))
        })
}

/// The values a split may apply to: outputs of float islands (not graph outputs) read by at
/// least one MatMul with a constant weight matrix (split), or read only by convolutions
/// (smoothed), in graph order.
pub fn candidates(graph: &Graph, state: &PtqState) -> Vec<String> {
    let classes = node_classes(graph, &state.excluded);
    let mut out = Vec::new();
    for n in &graph.nodes {
        if !matches!(classes.get(&n.name), Some(Class::FloatIsland(_))) {
            continue;
        }
        for v in &n.outputs {
            let reads = graph.consumers(v);
            if !graph.is_graph_output(v)
                && (reads.iter().any(|&(c, _)| {
                    let r = &graph.nodes[c];
                    weight_reader(graph, r, v) && matches!(classes.get(&r.name), Some(Class::Affine))
                }) || smoothable(graph, v, &classes))
            {
                out.push(v.clone());
            }
        }
    }
    out
}

/// The axis of `value` whose channels are measured: 1 for a value only convolutions read
/// (smoothed), 0 meaning the last one for a MatMul's (split).
fn channel_axis(graph: &Graph, value: &str) -> usize {
    let reads = graph.consumers(value);
    let by_conv = !reads.is_empty() && reads.iter().all(|&(c, _)| conv_reader(graph, &graph.nodes[c], value));
    usize::from(by_conv)
}

/// Running per-channel maxima of `|x|` over the channel axis (`channel_axis`), by value.
pub type ChannelMaxima = HashMap<String, Vec<f32>>;

fn merge_max(acc: &mut ChannelMaxima, value: &str, m: Vec<f32>) -> Result<()> {
    match acc.get_mut(value) {
        None => {
            acc.insert(value.to_string(), m);
        }
        Some(a) if a.len() == m.len() => a.iter_mut().zip(m).for_each(|(x, y)| *x = x.max(y)),
        Some(a) => {
            return Err(Error::InvalidArgument(format!(
                "split_outlier_channels: value '{value}' has {} channels in one batch and {} in another",
                a.len(),
                m.len()
            )))
        }
    }
    Ok(())
}

/// Runs the float graph over `batches` (side by side on the current rayon pool) and folds
/// the per-channel maxima of `values` into `acc`.
pub fn observe(
    graph: &Graph,
    values: &[String],
    batches: Vec<HashMap<String, Tensor>>,
    acc: &mut ChannelMaxima,
) -> Result<()> {
    let exec = Executor::new(graph)?;
    // 0: the last axis; 1: axis 1.
    let axes: HashMap<&str, usize> = values.iter().map(|v| (v.as_str(), channel_axis(graph, v))).collect();
    let results: Vec<Result<ChannelMaxima>> = batches
        .into_par_iter()
        .with_max_len(1)
        .map(|feeds| {
            let mut local = ChannelMaxima::new();
            let mut failed: Option<Error> = None;
            let mut obs = |name: &str, t: &Tensor| {
                let Some(&axis) = axes.get(name) else { return };
                if failed.is_some() {
                    return;
                }
                let shape = t.shape();
                let Ok(x) = t.as_slice::<f32>() else { return };
                // NaN never wins a max: a NaN channel keeps its other values.
                let m = if axis == 1 && shape.len() >= 2 && shape[1] > 0 {
                    let mut m = vec![0f32; shape[1]];
                    fold_axis1_max(x, shape[2..].iter().product(), &mut m);
                    m
                } else if axis == 0 && shape.last().is_some_and(|&k| k > 0) {
                    let k = shape[shape.len() - 1];
                    let mut m = vec![0f32; k];
                    for row in x.chunks_exact(k) {
                        for (a, &v) in m.iter_mut().zip(row) {
                            *a = a.max(v.abs());
                        }
                    }
                    m
                } else {
                    return;
                };
                if let Err(e) = merge_max(&mut local, name, m) {
                    failed = Some(e);
                }
            };
            exec.run(feeds, Some(&mut obs))?;
            match failed {
                Some(e) => Err(e),
                None => Ok(local),
            }
        })
        .collect();
    for r in results {
        for (v, m) in r? {
            merge_max(acc, &v, m)?;
        }
    }
    Ok(())
}

/// Per channel of axis 1, the largest `|x|` of `x` (`[.., k, inner]` row-major) folded into
/// `m` (NaN never wins a max: a NaN channel keeps its other values).
fn fold_axis1_max(x: &[f32], inner: usize, m: &mut [f32]) {
    let k = m.len();
    for (i, plane) in x.chunks_exact(inner.max(1)).enumerate() {
        let a = &mut m[i % k];
        *a = plane.iter().fold(*a, |a, &v| a.max(v.abs()));
    }
}

/// Points every reader at `input` and gives it `new_weight(its weight)`. A weight several
/// readers share is rewritten once; one that another node also reads keeps its own copy (the
/// readers get `{name}/{suffix}`). Returns the readers' names.
fn rewrite_readers(
    graph: &mut Graph,
    readers: &[usize],
    input: &str,
    suffix: &str,
    new_weight: impl Fn(&Tensor) -> Result<Tensor>,
) -> Result<Vec<String>> {
    let mut done: HashMap<String, String> = HashMap::new();
    let mut names = Vec::new();
    for &c in readers {
        let w_name = graph.nodes[c].inputs[1].clone();
        if let Some(nw) = done.get(&w_name) {
            graph.nodes[c].inputs[1] = nw.clone();
        } else {
            let w = new_weight(&graph.initializers[&w_name])?;
            let shared = graph.consumers(&w_name).iter().any(|&(o, _)| !readers.contains(&o));
            let new_w = if shared {
                graph.fresh_name(&format!("{w_name}/{suffix}"))
            } else {
                w_name.clone()
            };
            graph.initializers.insert(new_w.clone(), w);
            graph.nodes[c].inputs[1] = new_w.clone();
            done.insert(w_name, new_w);
        }
        graph.nodes[c].inputs[0] = input.to_string();
        names.push(graph.nodes[c].name.clone());
    }
    Ok(names)
}

fn median(x: &[f32]) -> f32 {
    let mut s: Vec<f32> = x.to_vec();
    s.sort_by(f32::total_cmp);
    s[s.len() / 2]
}

/// How many copies each channel becomes so that no channel's range exceeds `ratio` times
/// the median channel range (1 for every channel when none does, or when the median is 0).
pub fn copies(maxima: &[f32], ratio: f32) -> Vec<usize> {
    if maxima.is_empty() {
        return Vec::new();
    }
    let bound = ratio * median(maxima);
    maxima
        .iter()
        .map(|&m| {
            if bound > 0.0 && m.is_finite() && m > bound {
                (m / bound).ceil() as usize
            } else {
                1
            }
        })
        .collect()
}

/// Splits the outlier channels of every value in `maxima` (see the module doc). Values whose
/// channels all lie within `ratio` times the median are left as they are.
pub fn split_outlier_channels(
    graph: &mut Graph,
    state: &mut PtqState,
    maxima: &ChannelMaxima,
    ratio: f32,
) -> Result<SplitReport> {
    state.expect("split_outlier_channels", Stage::Prepared, &[])?;
    if !(ratio.is_finite() && ratio >= 1.0) {
        return Err(Error::InvalidArgument(format!(
            "split_outlier_channels: ratio must be a number >= 1, got {ratio}"
        )));
    }
    let mut report = SplitReport::new();
    for value in candidates(graph, state) {
        let Some(m) = maxima.get(&value) else { continue };
        if channel_axis(graph, &value) == 1 {
            if let Some(r) = smooth(graph, &value, m, ratio)? {
                report.insert(value, r);
            }
            continue;
        }
        let n = copies(m, ratio);
        let added: usize = n.iter().map(|c| c - 1).sum();
        if added == 0 {
            continue;
        }
        let k = m.len();
        let readers: Vec<usize> = graph
            .consumers(&value)
            .into_iter()
            .filter(|&(c, _)| weight_reader(graph, &graph.nodes[c], &value))
            .map(|(c, _)| c)
            .collect();
        // Every reader's weights must have `k` rows, or the maxima are not of this value's
        // inner dimension (a MatMul broadcasting a vector): leave the value alone.
        if readers
            .iter()
            .any(|&c| graph.initializers[&graph.nodes[c].inputs[1]].shape()[0] != k)
        {
            continue;
        }
        let index: Vec<i64> = n
            .iter()
            .enumerate()
            .flat_map(|(j, &c)| std::iter::repeat_n(j as i64, c))
            .collect();
        let inv: Vec<f32> = n.iter().map(|&c| 1.0 / c as f32).collect();
        let scale_node = graph.fresh_name(&format!("{value}/split_scale"));
        let gather_node = graph.fresh_name(&format!("{value}/split"));
        let scaled = graph.fresh_name(&format!("{value}/split_scaled"));
        let split = graph.fresh_name(&format!("{value}/split_out"));
        let inv_name = graph.fresh_name(&format!("{value}/split_inv"));
        let idx_name = graph.fresh_name(&format!("{value}/split_index"));
        graph
            .initializers
            .insert(inv_name.clone(), Tensor::from_vec(vec![k], inv)?);
        graph
            .initializers
            .insert(idx_name.clone(), Tensor::from_vec(vec![index.len()], index.clone())?);
        let names = rewrite_readers(graph, &readers, &split, "split", |w| {
            let cols = w.shape()[1];
            let src = w.as_slice::<f32>()?;
            let rows: Vec<f32> = index
                .iter()
                .flat_map(|&j| src[j as usize * cols..(j as usize + 1) * cols].iter().copied())
                .collect();
            Tensor::from_vec(vec![index.len(), cols], rows)
        })?;
        let at = graph.producer(&value).map_or(0, |p| p + 1);
        graph.nodes.insert(
            at,
            Node {
                name: scale_node.clone(),
                op: Box::new(BinaryOp::Mul),
                inputs: vec![value.clone(), inv_name],
                outputs: vec![scaled.clone()],
            },
        );
        graph.nodes.insert(
            at + 1,
            Node {
                name: gather_node,
                op: Box::new(Gather { axis: -1 }),
                inputs: vec![scaled.clone(), idx_name],
                outputs: vec![split],
            },
        );
        let med = median(m);
        let after = m.iter().zip(&n).map(|(&x, &c)| x / c as f32).fold(0f32, f32::max);
        let before = m.iter().copied().fold(0f32, f32::max);
        state.split_values.insert(scaled);
        report.insert(
            value,
            SplitValue {
                method: Method::Split,
                channels: k,
                added,
                ratio_before: if med > 0.0 { before / med } else { 0.0 },
                ratio_after: if med > 0.0 { after / med } else { 0.0 },
                readers: names,
                scale_node,
            },
        );
    }
    graph.sort()?;
    state.split = Some(report.clone());
    Ok(report)
}

/// SmoothQuant's factors of one value: `s_c = m_c^a / w_c^(1 - a)`, geometric mean 1 (so
/// that the value's overall scale stays where it was); 1 for a channel that is 0 on the
/// calibration set or that no weight reads.
pub fn smooth_factors(maxima: &[f32], weight_max: &[f32], alpha: f32) -> Vec<f32> {
    let raw: Vec<f64> = maxima
        .iter()
        .zip(weight_max)
        .map(|(&m, &w)| {
            let f = (m as f64).powf(alpha as f64) / (w as f64).powf(1.0 - alpha as f64);
            if m > 0.0 && w > 0.0 && f.is_finite() && f > 0.0 {
                f
            } else {
                0.0
            }
        })
        .collect();
    let logs: Vec<f64> = raw.iter().filter(|&&f| f > 0.0).map(|f| f.ln()).collect();
    if logs.is_empty() {
        return vec![1.0; maxima.len()];
    }
    let mean = (logs.iter().sum::<f64>() / logs.len() as f64).exp();
    raw.iter()
        .map(|&f| if f > 0.0 { (f / mean) as f32 } else { 1.0 })
        .collect()
}

/// Smooths `value` (read by convolutions only) when its largest channel exceeds `ratio`
/// times the median, and at least `SMOOTH_MIN_SPREAD` times: `value -> Mul(1 / s) -> Convs`,
/// each reader's weight input channel `c` times `s_c`. None when no channel exceeds the
/// bound or the weights do not match.
fn smooth(graph: &mut Graph, value: &str, m: &[f32], ratio: f32) -> Result<Option<SplitValue>> {
    let k = m.len();
    let med = median(m);
    let before = m.iter().copied().fold(0f32, f32::max);
    if !(med > 0.0 && before > ratio.max(SMOOTH_MIN_SPREAD) * med) {
        return Ok(None);
    }
    let readers: Vec<usize> = graph.consumers(value).into_iter().map(|(c, _)| c).collect();
    let weight_of = |g: &Graph, c: usize| g.initializers[&g.nodes[c].inputs[1]].clone();
    if readers.iter().any(|&c| weight_of(graph, c).shape()[1] != k) {
        return Ok(None);
    }
    // The largest weight reading each input channel, over every reader.
    let mut w_max = vec![0f32; k];
    for &c in &readers {
        let w = weight_of(graph, c);
        fold_axis1_max(w.as_slice::<f32>()?, w.shape()[2..].iter().product(), &mut w_max);
    }
    let s = smooth_factors(m, &w_max, SMOOTH_ALPHA);
    let scale_node = graph.fresh_name(&format!("{value}/smooth_scale"));
    let scaled = graph.fresh_name(&format!("{value}/smoothed"));
    let inv_name = graph.fresh_name(&format!("{value}/smooth_inv"));
    let rank = weight_of(graph, readers[0]).rank();
    let names = rewrite_readers(graph, &readers, &scaled, "smooth", |w| {
        let inner: usize = w.shape()[2..].iter().product();
        let mut v = w.as_slice::<f32>()?.to_vec();
        for (i, chunk) in v.chunks_exact_mut(inner.max(1)).enumerate() {
            let f = s[i % k];
            chunk.iter_mut().for_each(|x| *x *= f);
        }
        Tensor::from_vec(w.shape().to_vec(), v)
    })?;
    let mut shape = vec![1usize; rank.max(2)];
    shape[1] = k;
    let inv: Vec<f32> = s.iter().map(|&f| 1.0 / f).collect();
    graph
        .initializers
        .insert(inv_name.clone(), Tensor::from_vec(shape, inv)?);
    let at = graph.producer(value).map_or(0, |p| p + 1);
    graph.nodes.insert(
        at,
        Node {
            name: scale_node.clone(),
            op: Box::new(BinaryOp::Mul),
            inputs: vec![value.to_string(), inv_name],
            outputs: vec![scaled],
        },
    );
    let after: Vec<f32> = m.iter().zip(&s).map(|(&x, &f)| x / f).collect();
    let med_after = median(&after);
    Ok(Some(SplitValue {
        method: Method::Smooth,
        channels: k,
        added: 0,
        ratio_before: before / med,
        ratio_after: if med_after > 0.0 {
            after.iter().copied().fold(0f32, f32::max) / med_after
        } else {
            0.0
        },
        readers: names,
        scale_node,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec;
    use crate::testing::graph_builder::GraphBuilder;

    #[test]
    fn copies_bound_every_channel() {
        let m = [1.0, 1.0, 1.0, 9.0, 4.5, 0.0];
        let n = copies(&m, 4.0);
        assert_eq!(n, vec![1, 1, 1, 3, 2, 1]);
        for (x, c) in m.iter().zip(&n) {
            assert!(x / *c as f32 <= 4.0);
        }
        assert_eq!(copies(&[0.0, 0.0, 5.0], 4.0), vec![1, 1, 1]);
    }

    /// LayerNorm (one channel scaled 20x by gamma) -> MatMul, with a residual Add reading the
    /// LayerNorm output too.
    fn layer_norm_graph() -> Graph {
        let gamma: Vec<f32> = (0..16)
            .map(|i| if i == 5 { 20.0 } else { 1.0 + 0.05 * i as f32 })
            .collect();
        GraphBuilder::new()
            .opset(17)
            .input("x", &[6, 16])
            .init("gamma", Tensor::from_vec(vec![16], gamma).unwrap())
            .weights("w", &[16, 16], 7)
            .node("LayerNormalization", &["x", "gamma"], &["h"])
            .named("ln")
            .node("MatMul", &["h", "w"], &["m"])
            .named("mm")
            .node("Add", &["m", "h"], &["y"])
            .named("res")
            .output("y")
            .build()
    }

    /// Input "x" of `shape`, deterministic values in [-1, 1) that differ by `seed`.
    fn seeded_feeds(shape: &[usize], seed: u32) -> HashMap<String, Tensor> {
        let n = shape.iter().product::<usize>() as u32;
        let x: Vec<f32> = (0..n)
            .map(|i| (((i * 7919 + seed * 104_729) % 1000) as f32 / 500.0) - 1.0)
            .collect();
        HashMap::from([("x".to_string(), Tensor::from_vec(shape.to_vec(), x).unwrap())])
    }

    fn feeds(seed: u32) -> HashMap<String, Tensor> {
        seeded_feeds(&[6, 16], seed)
    }

    /// Every output of `graph` on seeds 0.. equals `before` (the outputs before a rewrite).
    fn assert_same_outputs(graph: &Graph, before: &[Vec<(String, Tensor)>], feeds: fn(u32) -> HashMap<String, Tensor>) {
        for (s, b) in before.iter().enumerate() {
            let a = exec::run(graph, feeds(s as u32)).unwrap();
            for (got, want) in a.iter().zip(b) {
                let (x, y) = (got.1.as_slice::<f32>().unwrap(), want.1.as_slice::<f32>().unwrap());
                for (p, q) in x.iter().zip(y) {
                    assert!((p - q).abs() <= 1e-4 * (1.0 + q.abs()), "{p} vs {q}");
                }
            }
        }
    }

    #[test]
    fn split_keeps_the_function_and_bounds_the_channels() {
        let mut graph = layer_norm_graph();
        let mut state = PtqState {
            stage: Stage::Prepared,
            ..Default::default()
        };
        let values = candidates(&graph, &state);
        assert_eq!(values, vec!["h".to_string()]);
        let mut acc = ChannelMaxima::new();
        observe(&graph, &values, vec![feeds(1), feeds(2)], &mut acc).unwrap();
        let before: Vec<_> = (0..3).map(|s| exec::run(&graph, feeds(s)).unwrap()).collect();
        let report = split_outlier_channels(&mut graph, &mut state, &acc, 4.0).unwrap();
        let r = &report["h"];
        assert!(r.added > 0 && r.ratio_before > 4.0 && r.ratio_after <= 4.0, "{r:?}");
        assert_eq!(r.readers, vec!["mm".to_string()]);
        assert_eq!(graph.initializers["w"].shape(), &[16 + r.added, 16]);
        // The residual Add still reads the LayerNorm output itself.
        let res = &graph.nodes[graph.node_index("res").unwrap()];
        assert!(res.inputs.contains(&"h".to_string()));
        assert_same_outputs(&graph, &before, feeds);
        // A ratio below 1 could never be met.
        assert!(split_outlier_channels(&mut graph, &mut state, &acc, 0.5).is_err());
    }

    /// Sqrt (an island; one input channel 20-50x the others) -> Conv, and the same value read
    /// by a second Conv sharing nothing.
    fn conv_graph(big: f32) -> Graph {
        let gain: Vec<f32> = (0..6).map(|i| if i == 2 { big } else { 1.0 + i as f32 }).collect();
        GraphBuilder::new()
            .input("x", &[2, 6, 5])
            .init("gain", Tensor::from_vec(vec![1, 6, 1], gain).unwrap())
            .weights("w1", &[4, 6, 3], 3)
            .weights("w2", &[3, 6, 1], 4)
            .node("Mul", &["x", "x"], &["sq"])
            .named("square")
            .node("Mul", &["sq", "gain"], &["p"])
            .named("gain_mul")
            .node("Sqrt", &["p"], &["h"])
            .named("sqrt")
            .node("Conv", &["h", "w1"], &["y1"])
            .attr("pads", crate::testing::graph_builder::ints(&[1, 1]))
            .named("conv1")
            .node("Conv", &["h", "w2"], &["y2"])
            .named("conv2")
            .output("y1")
            .output("y2")
            .build()
    }

    fn conv_feeds(seed: u32) -> HashMap<String, Tensor> {
        seeded_feeds(&[2, 6, 5], seed)
    }

    #[test]
    fn smoothing_keeps_the_function_and_narrows_the_channels() {
        let mut graph = conv_graph(2500.0);
        let mut state = PtqState {
            stage: Stage::Prepared,
            ..Default::default()
        };
        let values = candidates(&graph, &state);
        assert_eq!(values, vec!["h".to_string()]);
        let mut acc = ChannelMaxima::new();
        observe(&graph, &values, vec![conv_feeds(1), conv_feeds(2)], &mut acc).unwrap();
        // The maxima are per axis-1 channel, computed apart: max |x_c| * sqrt(gain_c).
        let m = &acc["h"];
        assert_eq!(m.len(), 6);
        for c in 0..6 {
            let g = if c == 2 { 2500f32 } else { 1.0 + c as f32 };
            let mut want = 0f32;
            for seed in [1, 2] {
                let f = conv_feeds(seed);
                let x = f["x"].as_slice::<f32>().unwrap();
                for n in 0..2 {
                    for t in 0..5 {
                        want = want.max(x[n * 30 + c * 5 + t].abs());
                    }
                }
            }
            want *= g.sqrt();
            assert!((m[c] - want).abs() <= 1e-5 * want, "channel {c}: {} vs {want}", m[c]);
        }
        let before: Vec<_> = (0..3).map(|s| exec::run(&graph, conv_feeds(s)).unwrap()).collect();
        let report = split_outlier_channels(&mut graph, &mut state, &acc, 3.0).unwrap();
        let r = &report["h"];
        assert_eq!(r.method, Method::Smooth);
        assert_eq!(r.added, 0);
        assert!(r.ratio_before > 3.0 && r.ratio_after < r.ratio_before, "{r:?}");
        assert_eq!(r.readers, vec!["conv1".to_string(), "conv2".to_string()]);
        assert!(state.split_values.is_empty(), "a smoothed value keeps its clipping");
        assert_same_outputs(&graph, &before, conv_feeds);
    }

    /// A spread above the split ratio but below `SMOOTH_MIN_SPREAD` is left alone.
    #[test]
    fn a_moderate_spread_is_not_smoothed() {
        let mut graph = conv_graph(100.0);
        let mut state = PtqState {
            stage: Stage::Prepared,
            ..Default::default()
        };
        let values = candidates(&graph, &state);
        let mut acc = ChannelMaxima::new();
        observe(&graph, &values, vec![conv_feeds(1)], &mut acc).unwrap();
        let m = &acc["h"];
        let spread = m.iter().copied().fold(0f32, f32::max) / median(m);
        assert!(spread > 3.0 && spread < SMOOTH_MIN_SPREAD, "spread {spread}");
        let nodes = graph.nodes.len();
        let report = split_outlier_channels(&mut graph, &mut state, &acc, 3.0).unwrap();
        assert!(report.is_empty() && graph.nodes.len() == nodes);
    }

    #[test]
    fn smoothing_factors_follow_the_ranges_and_keep_the_overall_scale() {
        let s = smooth_factors(&[1.0, 4.0, 0.0, 16.0], &[1.0, 1.0, 1.0, 0.0], 0.5);
        // Channel 2 (never non-zero) and channel 3 (no weight) are left alone.
        assert_eq!((s[2], s[3]), (1.0, 1.0));
        assert!((s[1] / s[0] - 2.0).abs() < 1e-6, "{s:?}");
        assert!((s[0] * s[1] - 1.0).abs() < 1e-6, "{s:?}");
    }
}
