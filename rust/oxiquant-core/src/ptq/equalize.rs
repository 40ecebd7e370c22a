//! Optional step after `prepare_network`: cross-layer equalization (Nagel et al., "Data-Free
//! Quantization", 2019), on multi-branch graphs.
//!
//! Dividing output channel `i` of a layer (its weight row and its bias) by `s_i > 0` and
//! multiplying input channel `i` of every layer reading it by `s_i` leaves the function
//! unchanged when only positively homogeneous ops (`f(a x) = a f(x)`, `a > 0`) sit between
//! them. Channels are tied into *equalization groups* that share one factor:
//!
//! - Relu, LeakyRelu, max/average pooling, global pooling and a Clip with no bound other than
//!   0 below pass channel `i` through;
//! - Add, Sub and Sum tie channel `i` of every operand and of the result (the branches that
//!   meet at a residual Add share one factor, and so do the layers reading the sum);
//! - Concat along the channel axis hands each operand its slice of the result's channels;
//! - a Conv or Gemm ends a group on its input side (it absorbs the factor in its input
//!   columns) and starts a new one on its output side; a grouped or depthwise Conv does both,
//!   so its channel factors pass through it.
//!
//! Anything else that reads a channel (a Clip with an upper bound such as ReLU6, a Mul, a
//! reshape, a graph output) pins its group's factor at 1. ReLU6 (`Clip(0, 6)`) would need
//! its bound divided per channel, which ONNX's scalar Clip cannot state, so the pass stops
//! there rather than change the function.
//!
//! The factor of a group is `s = sqrt(r1 / r2)`, `r1` the largest `max|W|` over the group's
//! producing rows, `r2` the largest over its consuming columns: both sides end with range
//! `sqrt(r1 r2)`. Groups are swept in graph order until no factor moves by more than
//! `tolerance` (relative) or `max_sweeps` is reached.

use super::affine::{AffineParams, Layout};
use super::{PtqState, Stage};
use crate::error::{Error, Result};
use crate::graph::Graph;
use crate::ops::{Clip, Concat, Conv, Gemm};
use std::collections::{BTreeMap, HashMap};

/// Options of `equalize`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EqualizeOptions {
    pub max_sweeps: usize,
    pub tolerance: f32,
}

impl Default for EqualizeOptions {
    fn default() -> Self {
        EqualizeOptions {
            max_sweeps: 100,
            tolerance: 1e-4,
        }
    }
}

/// What `equalize` did.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct EqualizeReport {
    /// Groups of channels that got a factor, and the channels they hold.
    pub groups: usize,
    pub channels: usize,
    /// Channels pinned at 1 (they meet an op the factor cannot cross).
    pub pinned_channels: usize,
    pub sweeps: usize,
    /// Per affine node: the smallest output channel's `max|W|` over the largest, before and
    /// after (1: all channels span the same range, what per-tensor weights want).
    pub layers: BTreeMap<String, (f32, f32)>,
}

/// How a layer's weight maps channels to elements.
struct Layer {
    node: usize,
    params: AffineParams,
    /// Conv: elements per output row, per (row, input channel) block, input channels per
    /// group and output channels per group; Gemm: rows of `[out, in]` or columns of `[in, out]`.
    row: usize,
    inner: usize,
    in_per_group: usize,
    out_per_group: usize,
    in_channels: usize,
}

impl Layer {
    /// Weight indices of output channel `c`.
    fn out_indices(&self, c: usize, mut f: impl FnMut(usize)) {
        match self.params.layout {
            Layout::Rows => (c * self.row..(c + 1) * self.row).for_each(f),
            Layout::Columns => {
                let n = self.params.channels;
                (0..self.in_channels).for_each(|k| f(k * n + c))
            }
        }
    }

    /// Weight indices of input channel `j`.
    fn in_indices(&self, j: usize, mut f: impl FnMut(usize)) {
        match self.params.layout {
            Layout::Rows => {
                let g = j / self.in_per_group;
                let jj = j % self.in_per_group;
                for o in g * self.out_per_group..(g + 1) * self.out_per_group {
                    let start = o * self.row + jj * self.inner;
                    (start..start + self.inner).for_each(&mut f);
                }
            }
            Layout::Columns => {
                let n = self.params.channels;
                (j * n..(j + 1) * n).for_each(f)
            }
        }
    }

    fn out_max(&self, c: usize) -> f32 {
        let mut m = 0f32;
        self.out_indices(c, |i| m = m.max(self.params.weight[i].abs()));
        m
    }

    fn in_max(&self, j: usize) -> f32 {
        let mut m = 0f32;
        self.in_indices(j, |i| m = m.max(self.params.weight[i].abs()));
        m
    }

    fn range_ratio(&self) -> f32 {
        let m: Vec<f32> = (0..self.params.channels).map(|c| self.out_max(c)).collect();
        let hi = super::max_of(&m);
        let lo = m.iter().copied().fold(f32::INFINITY, f32::min);
        if hi > 0.0 {
            lo / hi
        } else {
            1.0
        }
    }
}

/// Reads node `idx` as an equalizable layer: a Conv (any group count) or a 2-D Gemm whose
/// input is not transposed, with constant weights.
fn layer(graph: &Graph, idx: usize) -> Option<Layer> {
    let n = &graph.nodes[idx];
    let conv = n.op.downcast_ref::<Conv>();
    let gemm = n.op.downcast_ref::<Gemm>();
    if conv.is_none() && gemm.is_none_or(|g| g.trans_a) {
        return None;
    }
    let params = AffineParams::read(graph, idx).ok()?;
    let shape = params.weight_shape.clone();
    let out = params.channels;
    if let Some(c) = conv {
        let group = c.group.max(1);
        if shape.len() < 3 || out == 0 || out % group != 0 {
            return None;
        }
        let inner: usize = shape[2..].iter().product();
        Some(Layer {
            node: idx,
            row: shape[1] * inner,
            inner,
            in_per_group: shape[1],
            out_per_group: out / group,
            in_channels: shape[1] * group,
            params,
        })
    } else {
        let in_channels = match params.layout {
            Layout::Rows => shape[1],
            Layout::Columns => shape[0],
        };
        Some(Layer {
            node: idx,
            row: in_channels,
            inner: 1,
            in_per_group: in_channels,
            out_per_group: out,
            in_channels,
            params,
        })
    }
}

/// A group's (layer, channel) members: producing rows, consuming columns.
type Sides = (Vec<(usize, usize)>, Vec<(usize, usize)>);

/// Union-find over channel ids, with a "pinned" flag per root.
struct Groups {
    parent: Vec<usize>,
    pinned: Vec<bool>,
}

impl Groups {
    fn add(&mut self, n: usize) -> usize {
        let base = self.parent.len();
        self.parent.extend(base..base + n);
        self.pinned.extend(std::iter::repeat_n(false, n));
        base
    }
    fn find(&mut self, mut x: usize) -> usize {
        while self.parent[x] != x {
            self.parent[x] = self.parent[self.parent[x]];
            x = self.parent[x];
        }
        x
    }
    fn union(&mut self, a: usize, b: usize) {
        let (ra, rb) = (self.find(a), self.find(b));
        if ra != rb {
            self.parent[rb] = ra;
            self.pinned[ra] |= self.pinned[rb];
        }
    }
    fn pin(&mut self, a: usize) {
        let r = self.find(a);
        self.pinned[r] = true;
    }
}

/// A value whose channels (axis 1) the pass follows: first channel id, count, rank.
#[derive(Clone, Copy)]
struct Tracked {
    base: usize,
    channels: usize,
    rank: usize,
}

/// Whether a Clip is positively homogeneous as it stands: no bound but 0 below.
fn clip_homogeneous(graph: &Graph, idx: usize) -> bool {
    let n = &graph.nodes[idx];
    let Some(c) = n.op.downcast_ref::<Clip>() else {
        return false;
    };
    let mut consts = vec![None];
    for slot in 1..n.inputs.len() {
        let v = &n.inputs[slot];
        if v.is_empty() {
            consts.push(None);
        } else if let Some(t) = graph.initializers.get(v) {
            consts.push(Some(t));
        } else {
            return false; // a bound computed at run time
        }
    }
    match c.bounds(&consts) {
        Ok((lo, hi)) => (lo == 0.0 || lo == f32::NEG_INFINITY) && hi == f32::INFINITY,
        Err(_) => false,
    }
}

/// Ops that pass channel `i` through unchanged and commute with a positive factor.
fn passes_channels(graph: &Graph, idx: usize) -> bool {
    let n = &graph.nodes[idx];
    match n.op.op_type() {
        "Relu" | "LeakyRelu" | "AveragePool" | "GlobalAveragePool" | "GlobalMaxPool" => n.outputs.len() == 1,
        // MaxPool's optional Indices output does not depend on a positive factor, but keep
        // it simple: one output.
        "MaxPool" => n.outputs.len() == 1 || n.outputs[1..].iter().all(String::is_empty),
        "Clip" => clip_homogeneous(graph, idx),
        _ => false,
    }
}

/// Equalizes the weight ranges of layers joined through homogeneous ops; see the module
/// documentation. The model must be prepared (BatchNorm folded) and not yet given Scaling
/// nodes.
pub fn equalize(graph: &mut Graph, state: &mut PtqState, opts: &EqualizeOptions) -> Result<EqualizeReport> {
    state.expect("equalize_layers", Stage::Prepared, &[])?;
    if opts.max_sweeps == 0 || !(opts.tolerance > 0.0 && opts.tolerance.is_finite()) {
        return Err(Error::InvalidArgument(format!(
            "equalize_layers: max_sweeps must be >= 1 and tolerance > 0, got {} and {}",
            opts.max_sweeps, opts.tolerance
        )));
    }
    let mut groups = Groups {
        parent: Vec::new(),
        pinned: Vec::new(),
    };
    let mut tracked: HashMap<String, Tracked> = HashMap::new();
    let mut layers: Vec<Layer> = Vec::new();
    // (layer, output channel id base) and (layer, input channel id base).
    let mut produces: Vec<(usize, usize)> = Vec::new();
    let mut consumes: Vec<(usize, usize)> = Vec::new();
    let pin_value = |groups: &mut Groups, t: &Tracked| (0..t.channels).for_each(|c| groups.pin(t.base + c));

    for idx in 0..graph.nodes.len() {
        let n = &graph.nodes[idx];
        let ins: Vec<Option<Tracked>> = n.inputs.iter().map(|v| tracked.get(v).copied()).collect();
        if let Some(l) = layer(graph, idx) {
            let rank = if l.params.layout == Layout::Rows && n.op.is::<Conv>() {
                l.params.weight_shape.len()
            } else {
                2
            };
            let li = layers.len();
            match ins.first().copied().flatten() {
                Some(t) if t.channels == l.in_channels && t.rank == rank => consumes.push((li, t.base)),
                Some(t) => pin_value(&mut groups, &t),
                None => {}
            }
            for t in ins.iter().skip(1).flatten() {
                pin_value(&mut groups, t); // an activation as weight or bias
            }
            let base = groups.add(l.params.channels);
            produces.push((li, base));
            tracked.insert(
                n.outputs[0].clone(),
                Tracked {
                    base,
                    channels: l.params.channels,
                    rank,
                },
            );
            layers.push(l);
            continue;
        }
        let first = ins.first().copied().flatten();
        let op = n.op.op_type();
        let merged: Option<Tracked> = if passes_channels(graph, idx) {
            first.filter(|_| ins.iter().skip(1).all(Option::is_none))
        } else if matches!(op, "Add" | "Sub" | "Sum") && !ins.is_empty() {
            match first {
                Some(t0)
                    if ins
                        .iter()
                        .all(|t| t.is_some_and(|t| t.channels == t0.channels && t.rank == t0.rank)) =>
                {
                    let base = groups.add(t0.channels);
                    for t in ins.iter().flatten() {
                        (0..t0.channels).for_each(|c| groups.union(base + c, t.base + c));
                    }
                    Some(Tracked { base, ..t0 })
                }
                _ => None,
            }
        } else if let Some(cat) = n.op.downcast_ref::<Concat>() {
            let rank = first.map(|t| t.rank).unwrap_or(0);
            let axis = if cat.axis < 0 { cat.axis + rank as i64 } else { cat.axis };
            if rank >= 2 && axis == 1 && ins.iter().all(|t| t.is_some_and(|t| t.rank == rank)) {
                let total: usize = ins.iter().flatten().map(|t| t.channels).sum();
                let base = groups.add(total);
                let mut off = 0;
                for t in ins.iter().flatten() {
                    (0..t.channels).for_each(|c| groups.union(base + off + c, t.base + c));
                    off += t.channels;
                }
                Some(Tracked {
                    base,
                    channels: total,
                    rank,
                })
            } else {
                None
            }
        } else {
            None
        };
        match merged {
            Some(t) => {
                // A fresh set of ids tied to the inputs' (pass-through ops reuse the input's).
                let t = if passes_channels(graph, idx) {
                    let base = groups.add(t.channels);
                    (0..t.channels).for_each(|c| groups.union(base + c, t.base + c));
                    Tracked { base, ..t }
                } else {
                    t
                };
                tracked.insert(n.outputs[0].clone(), t);
            }
            None => {
                for t in ins.iter().flatten() {
                    pin_value(&mut groups, t);
                }
            }
        }
    }
    for o in &graph.outputs {
        if let Some(t) = tracked.get(&o.name).copied() {
            pin_value(&mut groups, &t);
        }
    }

    // Members of every free group: (layer, channel) on each side.
    let mut members: BTreeMap<usize, Sides> = BTreeMap::new();
    let mut report = EqualizeReport::default();
    for &(li, base) in &produces {
        for c in 0..layers[li].params.channels {
            let r = groups.find(base + c);
            if groups.pinned[r] {
                report.pinned_channels += 1;
            } else {
                members.entry(r).or_default().0.push((li, c));
            }
        }
    }
    for &(li, base) in &consumes {
        for j in 0..layers[li].in_channels {
            let r = groups.find(base + j);
            if !groups.pinned[r] {
                members.entry(r).or_default().1.push((li, j));
            }
        }
    }
    // A group needs both sides (a producer whose channel no layer reads keeps its factor).
    let members: Vec<_> = members
        .into_values()
        .filter(|(p, c)| !p.is_empty() && !c.is_empty())
        .collect();
    report.groups = members.len();
    report.channels = members.iter().map(|(p, _)| p.len()).sum();
    let before: Vec<f32> = layers.iter().map(Layer::range_ratio).collect();

    for sweep in 0..opts.max_sweeps {
        report.sweeps = sweep + 1;
        let mut moved = 0f32;
        for (prods, cons) in &members {
            let r1 = prods.iter().map(|&(l, c)| layers[l].out_max(c)).fold(0f32, f32::max);
            let r2 = cons.iter().map(|&(l, j)| layers[l].in_max(j)).fold(0f32, f32::max);
            if !(r1 > 0.0 && r2 > 0.0 && r1.is_finite() && r2.is_finite()) {
                continue;
            }
            let s = (r1 / r2).sqrt();
            if !(s.is_finite() && s > 0.0) {
                continue;
            }
            moved = moved.max((s - 1.0).abs());
            for &(l, c) in prods {
                let layer = &mut layers[l];
                let mut idxs = Vec::new();
                layer.out_indices(c, |i| idxs.push(i));
                idxs.into_iter().for_each(|i| layer.params.weight[i] /= s);
                layer.params.bias[c] /= s;
            }
            for &(l, j) in cons {
                let layer = &mut layers[l];
                let mut idxs = Vec::new();
                layer.in_indices(j, |i| idxs.push(i));
                idxs.into_iter().for_each(|i| layer.params.weight[i] *= s);
            }
        }
        if moved < opts.tolerance {
            break;
        }
    }

    for (l, b) in layers.into_iter().zip(before) {
        let after = l.range_ratio();
        report.layers.insert(graph.nodes[l.node].name.clone(), (b, after));
        if report.groups > 0 {
            l.params.write(graph, l.node)?;
        }
    }
    state.equalization = Some(report.clone());
    Ok(report)
}
