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

use super::insert_scaling::node_classes;
use super::{PtqState, Stage};
use crate::error::{Error, Result};
use crate::exec::Executor;
use crate::graph::{Graph, Node};
use crate::ops::{BinaryOp, Class, Gather, MatMul};
use crate::tensor::{DType, Tensor};
use rayon::prelude::*;
use std::collections::{BTreeMap, HashMap};

/// What `split_outlier_channels` did to one value.
#[derive(Debug, Clone, PartialEq)]
pub struct SplitValue {
    /// Channels of the value (its last axis).
    pub channels: usize,
    /// Channels added by the split (the MatMuls' inner dimension grows by this much).
    pub added: usize,
    /// Largest channel range over the median channel range, before and after.
    pub ratio_before: f32,
    pub ratio_after: f32,
    /// The MatMuls that read the split value.
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

/// The values a split may apply to: outputs of float islands (not graph outputs) read by at
/// least one MatMul with a constant weight matrix, in graph order.
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
                && reads.iter().any(|&(c, _)| {
                    let r = &graph.nodes[c];
                    weight_reader(graph, r, v) && matches!(classes.get(&r.name), Some(Class::Affine))
                })
            {
                out.push(v.clone());
            }
        }
    }
    out
}

/// Running per-channel maxima of `|x|` over the last axis, by value.
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
    let results: Vec<Result<ChannelMaxima>> = batches
        .into_par_iter()
        .with_max_len(1)
        .map(|feeds| {
            let mut local = ChannelMaxima::new();
            let mut failed: Option<Error> = None;
            let mut obs = |name: &str, t: &Tensor| {
                if failed.is_some() || !values.iter().any(|v| v == name) {
                    return;
                }
                match (t.as_slice::<f32>(), t.shape().last()) {
                    (Ok(x), Some(&k)) if k > 0 => {
                        let mut m = vec![0f32; k];
                        for row in x.chunks_exact(k) {
                            for (a, &v) in m.iter_mut().zip(row) {
                                // NaN never wins a max: a NaN channel keeps its other values.
                                *a = a.max(v.abs());
                            }
                        }
                        if let Err(e) = merge_max(&mut local, name, m) {
                            failed = Some(e);
                        }
                    }
                    _ => {}
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
        let mut names = Vec::new();
        let mut done: HashMap<String, String> = HashMap::new();
        for &c in &readers {
            let w_name = graph.nodes[c].inputs[1].clone();
            if let Some(nw) = done.get(&w_name) {
                // A weight two readers share is repeated once.
                graph.nodes[c].inputs[1] = nw.clone();
            } else {
                let w = &graph.initializers[&w_name];
                let cols = w.shape()[1];
                let src = w.as_slice::<f32>()?;
                let rows: Vec<f32> = index
                    .iter()
                    .flat_map(|&j| src[j as usize * cols..(j as usize + 1) * cols].iter().copied())
                    .collect();
                let repeated = Tensor::from_vec(vec![index.len(), cols], rows)?;
                // A weight another node also reads keeps its own copy.
                let shared = graph.consumers(&w_name).iter().any(|&(o, _)| !readers.contains(&o));
                let new_w = if shared {
                    graph.fresh_name(&format!("{w_name}/split"))
                } else {
                    w_name.clone()
                };
                graph.initializers.insert(new_w.clone(), repeated);
                graph.nodes[c].inputs[1] = new_w.clone();
                done.insert(w_name, new_w);
            }
            graph.nodes[c].inputs[0] = split.clone();
            names.push(graph.nodes[c].name.clone());
        }
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

    fn feeds(seed: u32) -> HashMap<String, Tensor> {
        let x: Vec<f32> = (0..96u32)
            .map(|i| (((i * 7919 + seed * 104_729) % 1000) as f32 / 500.0) - 1.0)
            .collect();
        HashMap::from([("x".to_string(), Tensor::from_vec(vec![6, 16], x).unwrap())])
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
        for (s, b) in before.iter().enumerate() {
            let a = exec::run(&graph, feeds(s as u32)).unwrap();
            let (x, y) = (a[0].1.as_slice::<f32>().unwrap(), b[0].1.as_slice::<f32>().unwrap());
            for (p, q) in x.iter().zip(y) {
                assert!((p - q).abs() <= 1e-4 * (1.0 + q.abs()), "{p} vs {q}");
            }
        }
        // A ratio below 1 could never be met.
        assert!(split_outlier_channels(&mut graph, &mut state, &acc, 0.5).is_err());
    }
}
