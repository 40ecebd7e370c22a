//! Post-training quantization: the Aidge PTQ as passes over the graph, one module each.
//!
//! Order (each pass checks that the previous one ran): `prepare` -> `insert_scaling` ->
//! `normalize_params` -> `calibrate` (compute ranges, streaming over batches) ->
//! `clipping` (adjust ranges) -> `normalize_acts` -> `quantize`.
//!
//! Notation (see docs/algorithm.md): every float activation `t` of the transformed graph
//! stores `t_real / S(t)`; `PtqState::scales` holds `S` for every value (one number, or one
//! per channel between an affine node and its Scaling node).

pub mod act_bits;
pub mod adjust;
pub mod affine;
pub mod calibrate;
pub mod classify;
pub mod clipping;
pub mod equalize;
pub mod exclude;
pub mod input_aware;
pub mod insert_scaling;
pub mod integer_matmul;
pub mod layer_stats;
pub mod normalize_acts;
pub mod normalize_params;
pub mod prepare;
pub mod preset;
pub mod quantize;
pub mod rounding;
pub mod signs;
pub mod split_channels;

use crate::error::{Error, Result};
use crate::graph::Graph;
use std::collections::{BTreeMap, BTreeSet, HashMap};

pub use calibrate::RangeStats;
pub use classify::{classify, Class};
pub use clipping::Clipping;
pub use preset::{Preset, Settings};

/// How far a model has gone through the pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub enum Stage {
    #[default]
    Float,
    Prepared,
    ScalingInserted,
    ParamsNormalized,
    Calibrated,
    RangesAdjusted,
    ActsNormalized,
    Quantized,
}

impl Stage {
    pub fn name(self) -> &'static str {
        match self {
            Stage::Float => "float",
            Stage::Prepared => "prepared",
            Stage::ScalingInserted => "scaling nodes inserted",
            Stage::ParamsNormalized => "parameters normalized",
            Stage::Calibrated => "ranges computed",
            Stage::RangesAdjusted => "ranges adjusted",
            Stage::ActsNormalized => "activations normalized",
            Stage::Quantized => "quantized",
        }
    }
}

/// Why a Scaling node is where it is; decides how its factor is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// After a graph input: quantizes the real input with a calibrated range.
    Input,
    /// After an affine node (Conv, Gemm, MatMul): the requantization of its accumulator.
    Affine,
    /// After a merging node (Add, Sum, Sub, Concat).
    Merge,
    /// On one input edge of a merging node, so that the branch can be rebalanced alone.
    Branch,
    /// After a float island: requantizes its real output with a calibrated range.
    IslandOutput,
    /// Before a float island: turns stored values back into real ones (never quantized).
    Dequant,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Input => "input",
            Role::Affine => "affine",
            Role::Merge => "merge",
            Role::Branch => "branch",
            Role::IslandOutput => "island_output",
            Role::Dequant => "dequant",
        }
    }
    /// Roles whose output scale comes from a calibrated range.
    pub fn calibrated(self) -> bool {
        !matches!(self, Role::Dequant)
    }
}

/// What the pipeline knows about one Scaling node.
#[derive(Debug, Clone, PartialEq)]
pub struct ScalingInfo {
    pub role: Role,
    /// The value the node writes.
    pub output: String,
    /// Statistics of its output over the calibration set (stored units at calibration time).
    pub stats: Option<RangeStats>,
    /// Its output scale `S` when the statistics were taken: real = stored * S.
    pub calib_scale: f32,
    /// The range kept after clipping, in real units, and the method that chose it.
    pub clip: Option<f32>,
    pub clipping: Option<Clipping>,
    /// The node's scale over its clip: 1, or below 1 for `signs::Grid::UnsignedSharedUnit`,
    /// whose top code stands for twice its scale (set by `adjust_ranges`).
    pub scale_per_clip: f32,
    /// Filled by `quantize`.
    pub bits: Option<u32>,
    pub signed: bool,
    /// Real value of one integer step (`S / Q`), after quantization.
    pub step: Option<f32>,
    /// The lowest and highest code of its grid, after quantization.
    pub codes: Option<(i32, i32)>,
    /// Whether `single_shift` could make its factor a power of two.
    pub power_of_two: Option<bool>,
}

/// Per affine node: the weight scale taken out by `normalize_params` and the input scale its
/// bias was last divided by.
#[derive(Debug, Clone, PartialEq)]
pub struct AffineInfo {
    pub weight_scale: Vec<f32>,
    pub bias_in_scale: f32,
    /// Filled by `quantize`.
    pub weight_bits: Option<u32>,
    /// Per-channel fraction of `max|W|` kept by weight clipping (1 = no clipping).
    pub weight_clip: Vec<f32>,
    /// The bit width `round_weights` put the weights on the grid of (None: not rounded yet).
    pub rounded_bits: Option<u32>,
}

/// The PTQ annotations of a graph, carried from pass to pass.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PtqState {
    pub stage: Stage,
    pub per_channel: bool,
    /// Accumulated scale `S` of every float activation: stored = real / S.
    pub scales: HashMap<String, Vec<f32>>,
    pub affine: BTreeMap<String, AffineInfo>,
    /// Scaling node name -> info.
    pub scaling: BTreeMap<String, ScalingInfo>,
    /// Nodes computed in float, with the reason (said in the result, never silently).
    pub float_nodes: Vec<(String, String, String)>,
    /// Notes for the user (degenerate ranges, single_shift fallbacks, ...).
    pub warnings: Vec<String>,
    pub batches_seen: usize,
    pub samples_seen: usize,
    /// Integer unit of every value after quantization: int = stored * unit.
    pub units: HashMap<String, Vec<f32>>,
    pub dequantized_outputs: bool,
    pub no_quant: bool,
    /// The `optimize_signs` the clipping values were chosen for.
    pub adjusted_signs: Option<bool>,
    /// The state before a calibration in progress (`calibrate::begin`), put back by
    /// `calibrate::abort` when it fails: a failed `compute_ranges` leaves the model as it was.
    pub calib_backup: Option<Box<PtqState>>,
    /// How many calibration samples gather the affine nodes' input statistics (0: none),
    /// and those statistics, by affine node (for `rounding`).
    pub layer_samples: usize,
    pub layer_stats: BTreeMap<String, layer_stats::LayerStats>,
    /// Weight bit widths of single affine nodes (mixed precision), overriding the
    /// `weight_bits` of `round_weights` and `quantize_normalized_network`.
    pub layer_bits: BTreeMap<String, u32>,
    /// Activation widths asked for single quantizers (by Scaling node or the value it
    /// writes), and the widths `adjust_ranges` resolved from them, by Scaling node, for the
    /// quantizers whose width is not `nb_bits` (`act_bits`).
    pub act_bits: BTreeMap<String, u32>,
    pub act_widths: BTreeMap<String, u32>,
    /// What cross-layer equalization did, when it ran (`equalize`).
    pub equalization: Option<equalize::EqualizeReport>,
    /// Nodes the user keeps in float (`exclude`): float islands whatever their op.
    pub excluded: BTreeSet<String>,
    /// The values `split_outlier_channels` may split and their per-channel maxima so far
    /// (between its calls: the candidates are found once, when the gathering begins).
    pub channel_maxima: Option<(Vec<String>, split_channels::ChannelMaxima)>,
    /// Values written by outlier channel splitting, quantized at their whole range.
    pub split_values: BTreeSet<String>,
    /// What `split_outlier_channels` did, when it ran.
    pub split: Option<split_channels::SplitReport>,
}

impl PtqState {
    /// Fails unless the model is exactly at `needed` (or at one of the `allowed` stages),
    /// naming the step to run next: the one after the model's current stage (not the one
    /// just before `step`, which may itself need earlier steps), or, when the model is past
    /// `step`, saying so.
    pub fn expect(&self, step: &str, needed: Stage, allowed: &[Stage]) -> Result<()> {
        if self.stage == needed || allowed.contains(&self.stage) {
            return Ok(());
        }
        let hint = if self.stage > needed {
            "the model is past this step; start again from the float model (load it again, or keep a model.copy())"
        } else {
            match self.stage {
                Stage::Float => "run prepare_network first",
                Stage::Prepared => "run insert_scaling_nodes first",
                Stage::ScalingInserted => "run normalize_parameters first",
                Stage::ParamsNormalized => "run compute_ranges first",
                Stage::Calibrated => "run adjust_ranges first",
                Stage::RangesAdjusted => "run normalize_activations first",
                Stage::ActsNormalized | Stage::Quantized => "run quantize_normalized_network first",
            }
        };
        Err(Error::InvalidArgument(format!(
            "{step}: the model is at stage '{}', this step needs '{}': {hint}",
            self.stage.name(),
            needed.name()
        )))
    }

    /// `S` of a value (1 when nothing was recorded, as for graph inputs).
    pub fn scale(&self, value: &str) -> Vec<f32> {
        self.scales.get(value).cloned().unwrap_or_else(|| vec![1.0])
    }
}

/// Runs a pass on copies of the graph and the state and keeps them only if it succeeds, so
/// that a pass which can fail after it has started editing leaves the model as it was (the
/// price: one copy of the graph while it runs).
pub(crate) fn transactional<T>(
    graph: &mut Graph,
    state: &mut PtqState,
    pass: impl FnOnce(&mut Graph, &mut PtqState) -> Result<T>,
) -> Result<T> {
    let (mut g, mut s) = (graph.clone(), state.clone());
    let out = pass(&mut g, &mut s)?;
    *graph = g;
    *state = s;
    Ok(out)
}

/// A positive finite number, or 1 (an all-zero weight channel or a constantly zero
/// activation has no scale to take out; any positive one is exact for it).
pub(crate) fn positive_or_one(x: f32) -> f32 {
    if x > 0.0 && x.is_finite() {
        x
    } else {
        1.0
    }
}

/// The largest element (the common scale a per-channel scale collapses to).
pub(crate) fn max_of(v: &[f32]) -> f32 {
    v.iter().copied().fold(0.0f32, f32::max)
}

/// Bit widths the pipeline supports.
pub const MIN_BITS: u32 = 2;
pub const MAX_BITS: u32 = 16;

/// A bit width argument, checked: `what` names the argument ("nb_bits", "weight_bits").
pub fn check_bits(what: &str, bits: i64) -> Result<u32> {
    if (MIN_BITS as i64..=MAX_BITS as i64).contains(&bits) {
        Ok(bits as u32)
    } else {
        Err(Error::InvalidArgument(format!(
            "{what} must be between {MIN_BITS} and {MAX_BITS}, got {bits}"
        )))
    }
}

/// Whether affine node `idx` has one weight scale per output channel: asked for
/// (`per_channel`) and its output channels lie along axis 1 (Conv, Gemm), or it is a MatMul
/// whose output stays float: the dequantizer after it then holds one factor per channel of
/// the last axis (`Scaling::last_axis`), where a MatMul's output features are.
pub(crate) fn channelwise(graph: &Graph, state: &PtqState, idx: usize, a: &affine::AffineParams) -> bool {
    state.per_channel
        && (a.per_channel_ok || graph.nodes[idx].op.is::<crate::ops::MatMul>() && dequantized(graph, state, idx))
}

/// Whether the only reader of node `idx`'s output is a dequantizer (the node keeps its output
/// in float).
pub(crate) fn dequantized(graph: &Graph, state: &PtqState, idx: usize) -> bool {
    let Some(out) = graph.nodes[idx].outputs.first() else {
        return false;
    };
    match graph.consumers(out)[..] {
        [(r, 0)] => state
            .scaling
            .get(&graph.nodes[r].name)
            .is_some_and(|i| i.role == Role::Dequant),
        _ => false,
    }
}

/// Whether Scaling node `idx` reads a MatMul's output directly (its channels, if any, are the
/// last axis).
pub(crate) fn after_matmul(graph: &Graph, idx: usize) -> bool {
    graph.nodes[idx]
        .inputs
        .first()
        .and_then(|v| graph.producer(v))
        .is_some_and(|p| graph.nodes[p].op.is::<crate::ops::MatMul>())
}
