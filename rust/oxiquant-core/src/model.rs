//! A model as the user holds it: its graph, its PTQ state and the plans compiled from them
//! (the float inference plan, the integer engine's graph). Every edit goes through
//! `Model::edit`, which drops what the edit invalidates, so no caller resets a cache by hand.
//! The Python bindings wrap this type and only convert arguments and results.

use crate::error::{Error, Result};
use crate::exec;
use crate::graph::Graph;
use crate::onnx::export_qdq::{WeightChoice, WeightType};
use crate::onnx::{export_qdq, export_qop, import_quantized, RawGraph};
use crate::ops::Scaling;
use crate::passes;
use crate::ptq::prepare::PrepareReport;
use crate::ptq::quantize::QuantizeOptions;
use crate::ptq::{self, Clipping, PtqState, Stage};
use crate::tensor::Tensor;
use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;
use std::sync::{Arc, OnceLock};

/// Values by name, in the order they were asked for.
pub type NamedTensors = Vec<(String, Tensor)>;

/// Which graph `run` executes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunMode {
    /// The integer engine for a quantized model it can hold, else the graph as it is.
    Auto,
    /// The integer engine (an error when the model has none).
    Int,
    /// The quantized graph in float arithmetic.
    Fake,
}

impl FromStr for RunMode {
    type Err = Error;
    fn from_str(s: &str) -> Result<RunMode> {
        match s {
            "int" => Ok(RunMode::Int),
            "fake" => Ok(RunMode::Fake),
            other => Err(Error::InvalidArgument(format!(
                "mode must be 'int' or 'fake', got '{other}'"
            ))),
        }
    }
}

/// The ONNX form a model is written as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    /// Quantizers as Mul / Round / Clip on integer-valued floats.
    Fake,
    /// QuantizeLinear / DequantizeLinear pairs around float ops.
    Qdq,
    /// QLinearConv & co., from the integer engine's graph.
    QOperator,
}

impl FromStr for ExportFormat {
    type Err = Error;
    fn from_str(s: &str) -> Result<ExportFormat> {
        match s {
            "fake" => Ok(ExportFormat::Fake),
            "qdq" => Ok(ExportFormat::Qdq),
            "qoperator" => Ok(ExportFormat::QOperator),
            other => Err(Error::InvalidArgument(format!(
                "unknown export format '{other}'; expected 'fake', 'qdq' or 'qoperator'"
            ))),
        }
    }
}

impl FromStr for WeightType {
    type Err = Error;
    fn from_str(s: &str) -> Result<WeightType> {
        match s {
            "uint8" => Ok(WeightType::Uint8),
            "int8" => Ok(WeightType::Int8),
            other => Err(Error::InvalidArgument(format!(
                "weight_type must be 'auto', 'uint8' or 'int8', got '{other}'"
            ))),
        }
    }
}

impl FromStr for WeightChoice {
    type Err = Error;
    fn from_str(s: &str) -> Result<WeightChoice> {
        match s {
            "auto" => Ok(WeightChoice::Auto),
            other => other.parse().map(WeightChoice::Fixed),
        }
    }
}

/// Which engine `run` uses by default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Engine {
    /// A float model (or one in the middle of the pipeline).
    Float,
    /// The integer engine, with what of the model stays in float (other tools' models).
    Int { note: Option<String> },
    /// A quantized model the integer engine cannot hold (the reason): runs the fake graph.
    Fake { why: String },
}

/// Whether a model runs on the integer engine.
#[derive(Debug, Clone)]
enum IntPlan {
    None,
    Ready(Arc<Graph>, Option<String>),
    Unavailable(String),
}

impl IntPlan {
    fn of(graph: &Graph, st: &PtqState) -> IntPlan {
        if st.stage == Stage::Float && import_quantized::is_quantized_model(graph) {
            // A model quantized by another tool (QDQ or QOperator).
            match import_quantized::import_quantized(graph) {
                Ok(imp) => {
                    let note = imp.note();
                    IntPlan::Ready(Arc::new(imp.graph), note)
                }
                Err(e) => IntPlan::Unavailable(e.to_string()),
            }
        } else if st.stage != Stage::Quantized {
            IntPlan::None
        } else if st.no_quant {
            IntPlan::Unavailable("it was quantized with no_quant=True (its values are not integers)".into())
        } else {
            match crate::int::lower::lower_to_integer(graph, st) {
                Ok(ig) => IntPlan::Ready(Arc::new(ig), None),
                Err(e) => IntPlan::Unavailable(e.to_string()),
            }
        }
    }
}

/// One Scaling node of a model in the pipeline, as data: where it sits in the graph and what
/// the pipeline decided for it. A quantizer when `step` is set.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantizerInfo {
    /// The Scaling node's name (also the name of the Mul it is exported as).
    pub node: String,
    /// The value it reads.
    pub reads: String,
    /// The value it writes (the last of Mul / Round / Clip in the fake export).
    pub writes: String,
    /// What the pipeline knows of it (`None` for a Scaling node it added without a role, such
    /// as the dequantization of a graph output).
    pub info: Option<ptq::ScalingInfo>,
}

/// A network held by the core.
#[derive(Debug, Clone)]
pub struct Model {
    graph: Graph,
    ptq: PtqState,
    int_plan: IntPlan,
    /// `graph` with BatchNormalization folded and convolutions fused, built at the first `run`
    /// that needs it; `None` inside when the plan would be `graph` itself.
    float_plan: OnceLock<Option<Arc<Graph>>>,
}

impl Model {
    /// A checked model from ONNX-shaped parts (a model quantized by another tool is lowered to
    /// the integer engine at once).
    pub fn from_raw(raw: RawGraph) -> Result<Model> {
        Ok(Model::new(Graph::from_raw(raw)?))
    }

    pub fn new(graph: Graph) -> Model {
        let ptq = PtqState::default();
        let int_plan = IntPlan::of(&graph, &ptq);
        Model {
            graph,
            ptq,
            int_plan,
            float_plan: OnceLock::new(),
        }
    }

    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    pub fn ptq(&self) -> &PtqState {
        &self.ptq
    }

    /// Runs `f` on the graph and the PTQ state; what they compile to is rebuilt after it.
    fn edit<R>(&mut self, f: impl FnOnce(&mut Graph, &mut PtqState) -> Result<R>) -> Result<R> {
        self.float_plan = OnceLock::new();
        let r = f(&mut self.graph, &mut self.ptq)?;
        self.int_plan = IntPlan::of(&self.graph, &self.ptq);
        Ok(r)
    }

    /// The float inference plan of `graph`, built on first use (`None`: run `graph`).
    fn float_plan(&self) -> Result<Option<Arc<Graph>>> {
        if let Some(p) = self.float_plan.get() {
            return Ok(p.clone());
        }
        let p = if passes::inference_plan::changes(&self.graph) {
            Some(Arc::new(passes::inference_plan(&self.graph)?))
        } else {
            None
        };
        // Two threads may build it at once; either result is the same plan.
        Ok(self.float_plan.get_or_init(|| p).clone())
    }

    /// Which engine `run` uses with `RunMode::Auto`.
    pub fn engine(&self) -> Engine {
        match &self.int_plan {
            IntPlan::Ready(_, note) => Engine::Int { note: note.clone() },
            IntPlan::Unavailable(why) => Engine::Fake { why: why.clone() },
            IntPlan::None => Engine::Float,
        }
    }

    /// Runs the model; returns the outputs, then the values named in `fetch`.
    pub fn run(
        &self,
        feeds: HashMap<String, Tensor>,
        fetch: &[String],
        mode: RunMode,
    ) -> Result<(NamedTensors, NamedTensors)> {
        let graph: &Graph = match (mode, &self.int_plan) {
            (RunMode::Auto | RunMode::Int, IntPlan::Ready(g, _)) => g,
            (RunMode::Auto, _) => &self.graph,
            (RunMode::Fake | RunMode::Int, IntPlan::None) => {
                return Err(Error::InvalidArgument(format!(
                    "mode='{}' applies to quantized models; this one is at stage '{}'",
                    if mode == RunMode::Int { "int" } else { "fake" },
                    self.ptq.stage.name()
                )))
            }
            (RunMode::Fake, _) => &self.graph,
            (RunMode::Int, IntPlan::Unavailable(why)) => {
                return Err(Error::InvalidArgument(format!(
                    "the integer engine cannot run this model: {why}"
                )))
            }
        };
        // The float graph runs through its inference plan, unless the caller fetches
        // intermediate values (which the plan may have fused away).
        let planned = std::ptr::eq(graph, &self.graph) && fetch.is_empty();
        let plan = if planned { self.float_plan()? } else { None };
        exec::run_fetching(plan.as_deref().unwrap_or(graph), feeds, fetch)
    }

    /// The model as ONNX-shaped parts, and the initializers to store as 4-bit integers
    /// (name, signed). `WeightChoice::Auto` exports int8 weights where onnxruntime's u8 x s8
    /// kernels are exact on them (`export_qdq::int8_pairs_exact`), else uint8.
    pub fn to_raw(&self, format: ExportFormat, weights: WeightChoice) -> Result<(RawGraph, Vec<(String, bool)>)> {
        match weights {
            WeightChoice::Fixed(wt) => self.to_raw_with(format, wt),
            WeightChoice::Auto => {
                let (raw, int4) = self.to_raw_with(format, WeightType::Int8)?;
                if export_qdq::int8_pairs_exact(&raw) {
                    Ok((raw, int4))
                } else {
                    self.to_raw_with(format, WeightType::Uint8)
                }
            }
        }
    }

    fn to_raw_with(&self, format: ExportFormat, weight_type: WeightType) -> Result<(RawGraph, Vec<(String, bool)>)> {
        match format {
            ExportFormat::Fake => Ok((self.graph.to_raw()?, Vec::new())),
            ExportFormat::Qdq if self.ptq.stage != Stage::Quantized => Err(Error::InvalidArgument(
                "format='qdq' needs a quantized model (see oxiquant.quantize_network)".into(),
            )),
            ExportFormat::Qdq => export_qdq::to_qdq(&self.graph, &self.ptq, weight_type),
            ExportFormat::QOperator => match &self.int_plan {
                IntPlan::Ready(g, _) => Ok((export_qop::to_qoperator(g, weight_type)?, Vec::new())),
                IntPlan::Unavailable(why) => Err(Error::InvalidArgument(format!(
                    "QOperator export needs the integer engine's graph, which this model has not: {why}"
                ))),
                IntPlan::None => Err(Error::InvalidArgument(
                    "format='qoperator' needs a quantized model (see oxiquant.quantize_network)".into(),
                )),
            },
        }
    }

    /// Op counts of the float inference plan `run` executes (builds it if needed).
    pub fn plan_op_counts(&self) -> Result<BTreeMap<String, usize>> {
        Ok(self.float_plan()?.as_deref().unwrap_or(&self.graph).op_counts())
    }

    /// Op counts of the integer engine's graph (empty when there is none).
    pub fn int_op_counts(&self) -> BTreeMap<String, usize> {
        match &self.int_plan {
            IntPlan::Ready(g, _) => g.op_counts(),
            _ => Default::default(),
        }
    }

    /// Every value name of the graph: its inputs and every node output.
    pub fn value_names(&self) -> Vec<String> {
        let g = &self.graph;
        g.inputs
            .iter()
            .map(|v| v.name.clone())
            .chain(g.nodes.iter().flat_map(|n| n.outputs.iter().cloned()))
            .collect()
    }

    /// Every Scaling node in graph order, with what the pipeline knows of it.
    pub fn quantizers(&self) -> Vec<QuantizerInfo> {
        self.graph
            .nodes
            .iter()
            .filter(|n| n.op.is::<Scaling>())
            .filter_map(|n| {
                Some(QuantizerInfo {
                    node: n.name.clone(),
                    reads: n.inputs.first()?.clone(),
                    writes: n.outputs.first()?.clone(),
                    info: self.ptq.scaling.get(&n.name).cloned(),
                })
            })
            .collect()
    }

    /// Folds constant subgraphs; returns the number of nodes removed.
    pub fn fold_constants(&mut self) -> Result<usize> {
        self.edit(|g, _| passes::fold_constants(g))
    }

    // ---- The PTQ steps, in order (each checks that the one before it ran) ----

    pub fn prepare(&mut self) -> Result<PrepareReport> {
        self.edit(ptq::prepare::prepare)
    }

    /// Optional, between `prepare` and `insert_scaling_nodes`: cross-layer equalization.
    pub fn equalize(&mut self, opts: &ptq::equalize::EqualizeOptions) -> Result<ptq::equalize::EqualizeReport> {
        self.edit(|g, st| ptq::equalize::equalize(g, st, opts))
    }

    /// Optional, between `prepare` and `insert_scaling_nodes`: nodes kept in float.
    pub fn exclude(&mut self, names: &[String]) -> Result<()> {
        self.edit(|g, st| ptq::exclude::exclude(g, st, names))
    }

    /// Optional, between `prepare` and `insert_scaling_nodes`: starts gathering the
    /// per-channel maxima that `split_outlier_channels` needs; returns the values it may
    /// split (none: no need to run the calibration data).
    pub fn split_channels_begin(&mut self) -> Result<Vec<String>> {
        self.ptq.expect("split_outlier_channels", Stage::Prepared, &[])?;
        let values = ptq::split_channels::candidates(&self.graph, &self.ptq);
        self.ptq.channel_maxima = Some((values.clone(), Default::default()));
        Ok(values)
    }

    /// Runs calibration batches side by side (current rayon pool) for the maxima.
    pub fn split_channels_batches(&mut self, batches: Vec<HashMap<String, Tensor>>) -> Result<()> {
        let (values, acc) = self
            .ptq
            .channel_maxima
            .as_mut()
            .ok_or_else(|| Error::InvalidArgument("split_outlier_channels: no gathering in progress".into()))?;
        ptq::split_channels::observe(&self.graph, values, batches, acc)
    }

    /// Splits the outlier channels found (`ptq::split_channels`).
    pub fn split_channels_finish(&mut self, ratio: f32) -> Result<ptq::split_channels::SplitReport> {
        let (_, maxima) = self.ptq.channel_maxima.take().unwrap_or_default();
        self.edit(|g, st| ptq::split_channels::split_outlier_channels(g, st, &maxima, ratio))
    }

    pub fn insert_scaling_nodes(&mut self) -> Result<()> {
        self.edit(ptq::insert_scaling::insert_scaling_nodes)
    }

    pub fn normalize_parameters(&mut self, per_channel: bool) -> Result<()> {
        self.edit(|g, st| ptq::normalize_params::normalize_parameters(g, st, per_channel))
    }

    /// Starts a calibration; `histograms` keeps what MSE and KL clipping need.
    pub fn calibration_begin(&mut self, histograms: bool) -> Result<()> {
        ptq::calibrate::begin(&mut self.ptq, histograms)
    }

    /// `calibration_begin`, also gathering the affine nodes' input statistics over the first
    /// `layer_samples` samples (for `round_weights`).
    pub fn calibration_begin_with(&mut self, histograms: bool, layer_samples: usize) -> Result<()> {
        ptq::calibrate::begin_with(&mut self.ptq, histograms, layer_samples)
    }

    /// Runs calibration batches side by side (one per thread of the current rayon pool).
    pub fn calibration_batches(&mut self, batches: Vec<HashMap<String, Tensor>>) -> Result<()> {
        ptq::calibrate::observe_batches(&self.graph, &mut self.ptq, batches)
    }

    pub fn calibration_finish(&mut self) -> Result<()> {
        ptq::calibrate::finish(&mut self.ptq)
    }

    /// Puts the model back as it was before `calibration_begin`.
    pub fn calibration_abort(&mut self) {
        ptq::calibrate::abort(&mut self.ptq);
    }

    pub fn adjust_ranges(&mut self, clipping: Clipping, nb_bits: u32, optimize_signs: bool) -> Result<()> {
        ptq::adjust::adjust_ranges(&self.graph, &mut self.ptq, clipping, nb_bits, optimize_signs)
    }

    /// `adjust_ranges` with activation widths of single quantizers (mixed activation
    /// precision), keyed by Scaling node or by the value it writes (`ptq::act_bits`). On
    /// failure the model keeps the widths it had.
    pub fn adjust_ranges_mixed(
        &mut self,
        clipping: Clipping,
        nb_bits: u32,
        optimize_signs: bool,
        act_bits: std::collections::BTreeMap<String, u32>,
    ) -> Result<()> {
        let old = std::mem::replace(&mut self.ptq.act_bits, act_bits);
        let r = self.adjust_ranges(clipping, nb_bits, optimize_signs);
        if r.is_err() {
            self.ptq.act_bits = old;
        }
        r
    }

    /// The quantizer (Scaling node) whose codes affine node `node` reads, once the Scaling
    /// nodes are in (`ptq::act_bits::input_quantizer`).
    pub fn input_quantizer(&self, node: &str) -> Result<Option<String>> {
        ptq::act_bits::input_quantizer(&self.graph, &self.ptq, node)
    }

    /// Activation widths asked by quantizer name or alias, by Scaling node
    /// (`ptq::act_bits::named_widths`; merge groups not applied).
    pub fn quantizer_widths(
        &self,
        asked: &std::collections::BTreeMap<String, u32>,
    ) -> Result<std::collections::BTreeMap<String, u32>> {
        ptq::act_bits::named_widths(&self.graph, &self.ptq, asked)
    }

    /// The quantizers in the groups that share one width (`ptq::act_bits::width_groups`).
    pub fn activation_groups(&self) -> Vec<Vec<String>> {
        ptq::act_bits::width_groups(&self.graph, &self.ptq)
    }

    pub fn normalize_activations(&mut self) -> Result<()> {
        self.edit(ptq::normalize_acts::normalize_activations)
    }

    /// Optional, before `quantize`: GPTQ rounding and bias correction of the weights.
    pub fn round_weights(&mut self, opts: &ptq::rounding::RoundingOptions) -> Result<()> {
        self.edit(|g, st| ptq::rounding::round_weights(g, st, opts))
    }

    /// `round_weights`, each layer fitted to its inputs in the quantized network
    /// (`ptq::input_aware`): `quant` says how activations will be quantized, `batches` are
    /// calibration batches (run side by side on the current rayon pool).
    pub fn round_weights_input_aware(
        &mut self,
        opts: &ptq::rounding::RoundingOptions,
        quant: &QuantizeOptions,
        batches: Vec<HashMap<String, Tensor>>,
    ) -> Result<()> {
        self.edit(|g, st| ptq::input_aware::round_weights_input_aware(g, st, opts, quant, batches))
    }

    /// Weight bit widths of single affine nodes for `quantize` (mixed precision).
    pub fn set_layer_bits(&mut self, bits: std::collections::BTreeMap<String, u32>) -> Result<()> {
        for (n, &b) in &bits {
            ptq::check_bits(&format!("layer_bits['{n}']"), b as i64)?;
        }
        self.ptq.layer_bits = bits;
        Ok(())
    }

    /// The last step; the integer engine's graph is lowered from the result.
    pub fn quantize(&mut self, opts: &QuantizeOptions) -> Result<()> {
        self.edit(|g, st| ptq::quantize::quantize_network(g, st, opts))
    }

    /// Whether the model went through the whole pipeline.
    pub fn is_quantized(&self) -> bool {
        self.ptq.stage == Stage::Quantized
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::{Dim, ValueInfo};
    use crate::onnx::{AttrValue, RawNode};
    use crate::tensor::DType;

    fn relu_net() -> RawGraph {
        let node = |name: &str, op: &str, inputs: &[&str], out: &str| RawNode {
            name: name.into(),
            op_type: op.into(),
            domain: String::new(),
            inputs: inputs.iter().map(|s| s.to_string()).collect(),
            outputs: vec![out.into()],
            attrs: Vec::<(String, AttrValue)>::new(),
        };
        let vi = |n: &str| ValueInfo {
            name: n.into(),
            dtype: DType::F32,
            shape: Some(vec![Dim::Symbolic("N".into()), Dim::Fixed(3)]),
        };
        RawGraph {
            name: "net".into(),
            opset: 13,
            nodes: vec![node("mm", "MatMul", &["x", "w"], "h"), node("act", "Relu", &["h"], "y")],
            initializers: vec![(
                "w".into(),
                Tensor::from_vec(vec![3, 3], vec![0.5f32, -1.0, 0.25, 1.0, 0.5, -0.5, -0.25, 0.75, 1.0]).unwrap(),
            )],
            inputs: vec![vi("x")],
            outputs: vec![vi("y")],
        }
    }

    fn batch(seed: u32) -> HashMap<String, Tensor> {
        let v: Vec<f32> = (0..12).map(|i| ((i * 7 + seed * 3) % 11) as f32 / 5.0 - 1.0).collect();
        HashMap::from([("x".to_string(), Tensor::from_vec(vec![4, 3], v).unwrap())])
    }

    #[test]
    fn the_pipeline_switches_engines_and_every_edit_drops_the_plans() {
        let mut m = Model::from_raw(relu_net()).unwrap();
        assert_eq!(m.engine(), Engine::Float);
        let float_out = m.run(batch(0), &[], RunMode::Auto).unwrap().0;
        assert!(matches!(
            m.run(batch(0), &[], RunMode::Int),
            Err(Error::InvalidArgument(_))
        ));
        m.prepare().unwrap();
        m.insert_scaling_nodes().unwrap();
        m.normalize_parameters(false).unwrap();
        m.calibration_begin(false).unwrap();
        m.calibration_batches(vec![batch(0), batch(1)]).unwrap();
        m.calibration_finish().unwrap();
        m.adjust_ranges(Clipping::Max, 8, false).unwrap();
        m.normalize_activations().unwrap();
        assert_eq!(m.engine(), Engine::Float);
        m.quantize(&QuantizeOptions {
            dequantize_outputs: true,
            ..QuantizeOptions::new(8)
        })
        .unwrap();
        assert!(m.is_quantized());
        assert_eq!(m.engine(), Engine::Int { note: None });
        // The integer engine and the fake graph agree, and both stay near the float model.
        let int = m.run(batch(0), &[], RunMode::Auto).unwrap().0;
        let fake = m.run(batch(0), &[], RunMode::Fake).unwrap().0;
        let (a, b, f) = (
            int[0].1.as_slice::<f32>().unwrap(),
            fake[0].1.as_slice::<f32>().unwrap(),
            float_out[0].1.as_slice::<f32>().unwrap(),
        );
        assert_eq!(a, b);
        let max = f.iter().fold(0f32, |m, v| m.max(v.abs()));
        for (q, r) in a.iter().zip(f) {
            assert!((q - r).abs() <= max / 50.0, "{q} vs {r}");
        }
        assert!(!m.int_op_counts().is_empty());
        // A step out of order is refused and leaves the model as it was.
        assert!(m.prepare().is_err());
        assert!(m.is_quantized());
    }

    #[test]
    fn quantizers_name_the_values_they_read_and_write() {
        let mut m = Model::from_raw(relu_net()).unwrap();
        m.prepare().unwrap();
        m.insert_scaling_nodes().unwrap();
        let qs = m.quantizers();
        assert!(!qs.is_empty());
        let names = m.value_names();
        for q in &qs {
            let n = &m.graph().nodes[m.graph().node_index(&q.node).unwrap()];
            assert_eq!((&n.inputs[0], &n.outputs[0]), (&q.reads, &q.writes));
            assert!(names.contains(&q.reads) && names.contains(&q.writes));
        }
        // One after the input, one after the MatMul.
        let roles: Vec<&str> = qs
            .iter()
            .filter_map(|q| q.info.as_ref().map(|i| i.role.name()))
            .collect();
        assert_eq!(roles, ["input", "affine"]);
    }

    #[test]
    fn arguments_parse_once_with_one_message_each() {
        assert_eq!("qdq".parse::<ExportFormat>().unwrap(), ExportFormat::Qdq);
        assert!("onnx"
            .parse::<ExportFormat>()
            .unwrap_err()
            .to_string()
            .contains("'fake', 'qdq' or 'qoperator'"));
        assert!("x"
            .parse::<RunMode>()
            .unwrap_err()
            .to_string()
            .contains("mode must be 'int' or 'fake'"));
        assert!("u4"
            .parse::<WeightType>()
            .unwrap_err()
            .to_string()
            .contains("'uint8' or 'int8'"));
        let e = Clipping::parse("minmax").unwrap_err().to_string();
        assert!(
            e.contains("clipping must be one of max, mse, kl, sigma3, sigma4, sigma5, percentile; got 'minmax'"),
            "{e}"
        );
        assert!(ptq::check_bits("nb_bits", 17).is_err() && ptq::check_bits("nb_bits", 2) == Ok(2));
    }
}
