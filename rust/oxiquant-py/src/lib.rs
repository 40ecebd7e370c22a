//! `oxiquant._native`: the PyO3 face of the core. Conversions, exceptions and GIL release
//! only; all logic lives in `oxiquant-core`.

mod convert;
mod errors;
mod ptq;
mod threads;

use convert::{
    attr_to_py, feeds_from_py, node_from_py, tensor_from_py, tensor_to_py, value_info_from_py, value_info_to_py,
    PyNode, PyValueInfo,
};
use errors::guard;
use oxiquant_core::model::{Engine, ExportFormat, RunMode};
use oxiquant_core::onnx::export_qdq::WeightChoice;
use oxiquant_core::onnx::RawGraph;
use oxiquant_core::ptq::quantize::QuantizeOptions;
use oxiquant_core::ptq::{self as core_ptq, Clipping};
use oxiquant_core::Model;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyList};
use std::collections::{BTreeMap, HashMap};

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A network held by the Rust core (`oxiquant_core::Model`).
#[pyclass(module = "oxiquant._native", name = "NativeModel")]
#[derive(Clone)]
struct NativeModel {
    model: Model,
}

/// A bit width from Python: an int (not a bool), checked by the core.
fn bits_arg(v: &Bound<'_, PyAny>, what: &str) -> PyResult<u32> {
    let n = if v.is_instance_of::<PyBool>() {
        None
    } else {
        v.extract::<i64>().ok()
    };
    match n {
        Some(n) => core_ptq::check_bits(what, n).map_err(errors::to_py),
        None => Err(errors::InvalidArgumentError::new_err(format!(
            "{what} must be an integer between {} and {}, got {}",
            core_ptq::MIN_BITS,
            core_ptq::MAX_BITS,
            v.repr()?
        ))),
    }
}

/// An activation clipping method from Python (a name, case-insensitive).
fn clipping_arg(v: &Bound<'_, PyAny>) -> PyResult<Clipping> {
    match v.extract::<String>() {
        Ok(s) => Clipping::parse(&s).map_err(errors::to_py),
        Err(_) => Err(errors::to_py(Clipping::unknown(&v.repr()?.to_string()))),
    }
}

/// A weight clipping method from Python ("max" or "mse").
fn weight_clipping_arg(v: &Bound<'_, PyAny>) -> PyResult<Clipping> {
    let s = match v.extract::<String>() {
        Ok(s) => s,
        Err(_) => v.repr()?.to_string(),
    };
    Clipping::parse_weight(&s).map_err(errors::to_py)
}

/// `{name: bits}` with every width checked; `what` names the argument in errors.
fn bits_map_arg(v: Option<BTreeMap<String, Bound<'_, PyAny>>>, what: &str) -> PyResult<BTreeMap<String, u32>> {
    v.unwrap_or_default()
        .into_iter()
        .map(|(k, b)| Ok((k.clone(), bits_arg(&b, &format!("{what}['{k}']"))?)))
        .collect()
}

fn parse<T: std::str::FromStr<Err = oxiquant_core::Error>>(s: &str) -> PyResult<T> {
    s.parse::<T>().map_err(errors::to_py)
}

#[pymethods]
impl NativeModel {
    /// Builds a model from ONNX-shaped parts (see `oxiquant.onnx_io`).
    #[staticmethod]
    #[pyo3(signature = (name, opset, nodes, initializers, inputs, outputs))]
    fn from_parts(
        py: Python<'_>,
        name: String,
        opset: i64,
        nodes: Vec<PyNode<'_>>,
        initializers: Vec<(String, Bound<'_, PyAny>)>,
        inputs: Vec<PyValueInfo<'_>>,
        outputs: Vec<PyValueInfo<'_>>,
    ) -> PyResult<NativeModel> {
        let nodes = nodes.into_iter().map(node_from_py).collect::<PyResult<Vec<_>>>()?;
        let initializers = initializers
            .into_iter()
            .map(|(n, a)| {
                let t = tensor_from_py(&a, &format!("initializer '{n}'"))?;
                Ok((n, t))
            })
            .collect::<PyResult<Vec<_>>>()?;
        let inputs = inputs
            .into_iter()
            .map(value_info_from_py)
            .collect::<PyResult<Vec<_>>>()?;
        let outputs = outputs
            .into_iter()
            .map(value_info_from_py)
            .collect::<PyResult<Vec<_>>>()?;
        let raw = RawGraph {
            name,
            opset,
            nodes,
            initializers,
            inputs,
            outputs,
        };
        let model = py.detach(|| guard("model loading", || Model::from_raw(raw)))?;
        Ok(NativeModel { model })
    }

    /// The model as ONNX-shaped parts: a dict with name, opset, nodes, initializers, inputs,
    /// outputs (the inverse of `from_parts`). `format`: "fake" (quantizers as Mul/Round/Clip
    /// on integer-valued floats) or "qdq" (QuantizeLinear/DequantizeLinear, 8-bit weights of
    /// `weight_type` "auto" (int8 where onnxruntime multiplies them exactly, else uint8),
    /// "uint8" (zero point 128) or "int8") or "qoperator" (QLinearConv & co., from the
    /// integer engine's graph).
    #[pyo3(signature = (format="fake", weight_type="auto"))]
    fn to_parts<'py>(&self, py: Python<'py>, format: &str, weight_type: &str) -> PyResult<Bound<'py, PyDict>> {
        let wt: WeightChoice = parse(weight_type)?;
        let format: ExportFormat = parse(format)?;
        let what = match format {
            ExportFormat::Fake => "export",
            ExportFormat::Qdq => "QDQ export",
            ExportFormat::QOperator => "QOperator export",
        };
        let (raw, int4_names) = py.detach(|| guard(what, || self.model.to_raw(format, wt)))?;
        let d = PyDict::new(py);
        // (initializer, signed) pairs to store as INT4 / UINT4.
        d.set_item("int4", int4_names)?;
        d.set_item("name", raw.name)?;
        d.set_item("opset", raw.opset)?;
        let nodes = PyList::empty(py);
        for n in &raw.nodes {
            let attrs = PyList::empty(py);
            for (k, v) in &n.attrs {
                let (kind, val) = attr_to_py(py, v)?;
                attrs.append((k, kind, val))?;
            }
            nodes.append((&n.name, &n.op_type, &n.domain, &n.inputs, &n.outputs, attrs))?;
        }
        d.set_item("nodes", nodes)?;
        let inits = PyList::empty(py);
        for (k, t) in raw.initializers {
            inits.append((k, tensor_to_py(py, t)?))?;
        }
        d.set_item("initializers", inits)?;
        let ins = raw
            .inputs
            .iter()
            .map(|v| value_info_to_py(py, v))
            .collect::<PyResult<Vec<_>>>()?;
        let outs = raw
            .outputs
            .iter()
            .map(|v| value_info_to_py(py, v))
            .collect::<PyResult<Vec<_>>>()?;
        d.set_item("inputs", ins)?;
        d.set_item("outputs", outs)?;
        Ok(d)
    }

    /// Runs the model. `feeds` maps input names to numpy arrays; returns output name -> array,
    /// followed by the intermediate values named in `fetch` (copied as they are produced).
    /// `mode`: None (the integer engine for a quantized model that it can hold, else the
    /// graph as it is), "int" or "fake" (the quantized graph in float arithmetic).
    #[pyo3(signature = (feeds, num_threads=None, fetch=None, mode=None))]
    fn run<'py>(
        &self,
        py: Python<'py>,
        feeds: &Bound<'py, PyDict>,
        num_threads: Option<usize>,
        fetch: Option<Vec<String>>,
        mode: Option<&str>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let mode = match mode {
            None => RunMode::Auto,
            Some(m) => parse(m)?,
        };
        let feeds = feeds_from_py(feeds)?;
        let pool = threads::pool(num_threads)?;
        let fetch = fetch.unwrap_or_default();
        let (outs, fetched) =
            py.detach(|| guard("inference", || pool.install(|| self.model.run(feeds, &fetch, mode))))?;
        let d = PyDict::new(py);
        for (k, t) in outs.into_iter().chain(fetched) {
            d.set_item(k, tensor_to_py(py, t)?)?;
        }
        Ok(d)
    }

    /// "int" when `run` uses the integer engine by default, "fake" for a quantized model it
    /// cannot hold (with the reason), "float" otherwise.
    fn engine(&self) -> (String, Option<String>) {
        match self.model.engine() {
            Engine::Int { note } => ("int".into(), note),
            Engine::Fake { why } => ("fake".into(), Some(why)),
            Engine::Float => ("float".into(), None),
        }
    }

    /// Op counts of the float inference plan `run` executes for this graph (fused
    /// convolutions show as e.g. "Conv+Add+Clip"); builds the plan if needed.
    fn plan_op_counts(&self, py: Python<'_>) -> PyResult<BTreeMap<String, usize>> {
        py.detach(|| guard("inference plan", || self.model.plan_op_counts()))
    }

    /// Op counts of the integer engine's graph (empty when there is none).
    fn int_op_counts(&self) -> BTreeMap<String, usize> {
        self.model.int_op_counts()
    }

    /// Folds constant subgraphs in place; returns the number of nodes removed.
    fn fold_constants(&mut self, py: Python<'_>) -> PyResult<usize> {
        let m = &mut self.model;
        py.detach(|| guard("constant folding", || m.fold_constants()))
    }

    /// Op counts, parameter count, inputs and outputs.
    fn summary<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let g = self.model.graph();
        let d = PyDict::new(py);
        d.set_item("name", &g.name)?;
        d.set_item("opset", g.opset)?;
        d.set_item("op_counts", g.op_counts())?;
        d.set_item("num_nodes", g.nodes.len())?;
        d.set_item("num_parameters", g.num_parameters())?;
        let ins = g
            .runtime_inputs()
            .map(|v| value_info_to_py(py, v))
            .collect::<PyResult<Vec<_>>>()?;
        let outs = g
            .outputs
            .iter()
            .map(|v| value_info_to_py(py, v))
            .collect::<PyResult<Vec<_>>>()?;
        d.set_item("inputs", ins)?;
        d.set_item("outputs", outs)?;
        Ok(d)
    }

    /// Names of the inputs the caller must feed.
    #[getter]
    fn input_names(&self) -> Vec<String> {
        self.model.graph().runtime_inputs().map(|v| v.name.clone()).collect()
    }

    #[getter]
    fn output_names(&self) -> Vec<String> {
        self.model.graph().outputs.iter().map(|v| v.name.clone()).collect()
    }

    /// Runtime inputs as (name, onnx elem type, shape) tuples.
    #[getter]
    fn inputs<'py>(&self, py: Python<'py>) -> PyResult<Vec<Bound<'py, pyo3::types::PyTuple>>> {
        self.model
            .graph()
            .runtime_inputs()
            .map(|v| value_info_to_py(py, v))
            .collect()
    }

    /// Every value name of the graph (inputs and node outputs).
    fn value_names(&self) -> Vec<String> {
        self.model.value_names()
    }

    /// Every Scaling node in graph order, as dicts (see `ptq::quantizer_to_py`).
    fn quantizers<'py>(&self, py: Python<'py>) -> PyResult<Vec<Bound<'py, PyDict>>> {
        let st = self.model.ptq();
        self.model
            .quantizers()
            .iter()
            .map(|q| ptq::quantizer_to_py(py, q, st))
            .collect()
    }

    /// PTQ step 1 (in place). Returns what changed.
    fn ptq_prepare<'py>(&mut self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let m = &mut self.model;
        let r = py.detach(|| guard("prepare_network", || m.prepare()))?;
        let d = PyDict::new(py);
        d.set_item("folded_constants", r.folded_constants)?;
        d.set_item("folded_batchnorms", r.folded_batchnorms)?;
        d.set_item("removed_passthroughs", r.removed_passthroughs)?;
        Ok(d)
    }

    /// PTQ step 1b (in place, optional): cross-layer equalization. Returns what it did.
    #[pyo3(signature = (max_sweeps=100, tolerance=1e-4))]
    fn ptq_equalize<'py>(
        &mut self,
        py: Python<'py>,
        max_sweeps: usize,
        tolerance: f32,
    ) -> PyResult<Bound<'py, PyDict>> {
        let opts = core_ptq::equalize::EqualizeOptions { max_sweeps, tolerance };
        let m = &mut self.model;
        let r = py.detach(|| guard("equalize_layers", || m.equalize(&opts)))?;
        equalization_dict(py, &r)
    }

    /// PTQ step 1d (optional), part 1: starts gathering per-channel maxima for
    /// `split_outlier_channels`; returns the values it may split.
    fn ptq_split_channels_begin(&mut self) -> PyResult<Vec<String>> {
        guard("split_outlier_channels", || self.model.split_channels_begin())
    }

    /// PTQ step 1d, part 2: runs calibration batches (side by side, one per thread).
    #[pyo3(signature = (batches, num_threads=None))]
    fn ptq_split_channels_batches(
        &mut self,
        py: Python<'_>,
        batches: Vec<Bound<'_, PyDict>>,
        num_threads: Option<usize>,
    ) -> PyResult<()> {
        let batches = batches.iter().map(feeds_from_py).collect::<PyResult<Vec<_>>>()?;
        let pool = threads::pool(num_threads)?;
        let m = &mut self.model;
        py.detach(|| {
            guard("split_outlier_channels", || {
                pool.install(|| m.split_channels_batches(batches))
            })
        })
    }

    /// PTQ step 1d, part 3: splits the outlier channels found; returns what it did.
    fn ptq_split_channels_finish<'py>(&mut self, py: Python<'py>, ratio: f32) -> PyResult<Bound<'py, PyDict>> {
        let m = &mut self.model;
        let r = py.detach(|| guard("split_outlier_channels", || m.split_channels_finish(ratio)))?;
        split_dict(py, &r)
    }

    /// PTQ step 1c (in place, optional): nodes kept in float.
    fn ptq_exclude(&mut self, names: Vec<String>) -> PyResult<()> {
        guard("exclude_layers", || self.model.exclude(&names))
    }

    /// PTQ step 2 (in place).
    fn ptq_insert_scaling_nodes(&mut self, py: Python<'_>) -> PyResult<()> {
        let m = &mut self.model;
        py.detach(|| guard("insert_scaling_nodes", || m.insert_scaling_nodes()))
    }

    /// PTQ step 3 (in place).
    fn ptq_normalize_parameters(&mut self, py: Python<'_>, per_channel: bool) -> PyResult<()> {
        let m = &mut self.model;
        py.detach(|| guard("normalize_parameters", || m.normalize_parameters(per_channel)))
    }

    /// PTQ step 4, part 1: clears the statistics (`histograms`: keep the histograms that
    /// MSE and KL clipping need).
    /// `layer_samples`: how many samples also gather the affine nodes' input statistics
    /// (for `ptq_round_weights`; 0: none).
    #[pyo3(signature = (histograms=true, layer_samples=0))]
    fn ptq_calibration_begin(&mut self, histograms: bool, layer_samples: usize) -> PyResult<()> {
        guard("compute_ranges", || {
            self.model.calibration_begin_with(histograms, layer_samples)
        })
    }

    /// PTQ step 4, part 2: runs calibration batches (side by side, one per thread) and
    /// merges their statistics in order.
    #[pyo3(signature = (batches, num_threads=None))]
    fn ptq_calibration_batches(
        &mut self,
        py: Python<'_>,
        batches: Vec<Bound<'_, PyDict>>,
        num_threads: Option<usize>,
    ) -> PyResult<()> {
        let batches = batches.iter().map(feeds_from_py).collect::<PyResult<Vec<_>>>()?;
        let pool = threads::pool(num_threads)?;
        let m = &mut self.model;
        py.detach(|| guard("compute_ranges", || pool.install(|| m.calibration_batches(batches))))
    }

    /// PTQ step 4, part 3: closes the calibration.
    fn ptq_calibration_finish(&mut self) -> PyResult<()> {
        guard("compute_ranges", || self.model.calibration_finish())
    }

    /// PTQ step 4, on failure: puts the model back as it was before `ptq_calibration_begin`.
    fn ptq_calibration_abort(&mut self) {
        self.model.calibration_abort();
    }

    /// PTQ step 5.
    #[pyo3(signature = (clipping, nb_bits, optimize_signs, num_threads=None, activation_bits=None))]
    fn ptq_adjust_ranges(
        &mut self,
        py: Python<'_>,
        clipping: &Bound<'_, PyAny>,
        nb_bits: &Bound<'_, PyAny>,
        optimize_signs: bool,
        num_threads: Option<usize>,
        activation_bits: Option<BTreeMap<String, Bound<'_, PyAny>>>,
    ) -> PyResult<()> {
        let method = clipping_arg(clipping)?;
        let nb_bits = bits_arg(nb_bits, "nb_bits")?;
        let widths = bits_map_arg(activation_bits, "activation_bits")?;
        let pool = threads::pool(num_threads)?;
        let m = &mut self.model;
        py.detach(|| {
            guard("adjust_ranges", || {
                pool.install(|| m.adjust_ranges_mixed(method, nb_bits, optimize_signs, widths))
            })
        })
    }

    /// The quantizer whose codes affine node `node` reads (after `insert_scaling_nodes`).
    fn ptq_input_quantizer(&self, node: &str) -> PyResult<Option<String>> {
        guard("input_quantizer", || self.model.input_quantizer(node))
    }

    /// `{quantizer or alias: bits}` as `{Scaling node: bits}` (the names `activation_bits` takes).
    fn ptq_quantizer_widths(&self, asked: BTreeMap<String, Bound<'_, PyAny>>) -> PyResult<BTreeMap<String, u32>> {
        let widths = bits_map_arg(Some(asked), "activation_bits")?;
        guard("activation_bits", || self.model.quantizer_widths(&widths))
    }

    /// The quantizers, in the groups that share one width (the inputs of one merge).
    fn ptq_activation_groups(&self) -> Vec<Vec<String>> {
        self.model.activation_groups()
    }

    /// PTQ step 6 (in place).
    fn ptq_normalize_activations(&mut self, py: Python<'_>) -> PyResult<()> {
        let m = &mut self.model;
        py.detach(|| guard("normalize_activations", || m.normalize_activations()))
    }

    /// PTQ step 6b (in place, optional): GPTQ rounding and bias correction of the weights.
    #[allow(clippy::too_many_arguments)]
    /// With `input_batches`, each layer is fitted to its inputs in the network quantized to
    /// `act_bits` activations (`input_aware`), layer by layer.
    #[pyo3(signature = (weight_bits, weight_clipping, gptq, bias_correction, layer_bits=None, damp=0.01, num_threads=None, input_batches=None, act_bits=None, optimize_signs=true, single_shift=false))]
    fn ptq_round_weights(
        &mut self,
        py: Python<'_>,
        weight_bits: &Bound<'_, PyAny>,
        weight_clipping: &Bound<'_, PyAny>,
        gptq: bool,
        bias_correction: bool,
        layer_bits: Option<BTreeMap<String, Bound<'_, PyAny>>>,
        damp: f64,
        num_threads: Option<usize>,
        input_batches: Option<Vec<Bound<'_, PyDict>>>,
        act_bits: Option<&Bound<'_, PyAny>>,
        optimize_signs: bool,
        single_shift: bool,
    ) -> PyResult<()> {
        let mut opts = core_ptq::rounding::RoundingOptions::new(bits_arg(weight_bits, "weight_bits")?);
        opts.weight_clipping = weight_clipping_arg(weight_clipping)?;
        opts.gptq = gptq;
        opts.bias_correction = bias_correction;
        opts.damp = damp;
        opts.layer_bits = bits_map_arg(layer_bits, "layer_bits")?;
        let pool = threads::pool(num_threads)?;
        let m = &mut self.model;
        if let Some(batches) = input_batches {
            let batches = batches.iter().map(feeds_from_py).collect::<PyResult<Vec<_>>>()?;
            let act_bits = match act_bits {
                Some(b) if !b.is_none() => bits_arg(b, "nb_bits")?,
                _ => {
                    return Err(errors::to_py(oxiquant_core::error::Error::InvalidArgument(
                        "round_weights: input-aware rounding needs nb_bits (the activations' bit width)".into(),
                    )))
                }
            };
            let mut quant = QuantizeOptions::new(act_bits);
            quant.optimize_signs = optimize_signs;
            quant.single_shift = single_shift;
            return py.detach(|| {
                guard("round_weights", || {
                    pool.install(|| m.round_weights_input_aware(&opts, &quant, batches))
                })
            });
        }
        py.detach(|| guard("round_weights", || pool.install(|| m.round_weights(&opts))))
    }

    /// The affine nodes (Conv, Gemm, MatMul) in graph order.
    fn ptq_affine_nodes(&self) -> Vec<String> {
        core_ptq::rounding::affine_nodes(self.model.graph(), &self.model.ptq().excluded)
    }

    /// PTQ step 7 (in place). `weight_bits=None`: as `act_bits`.
    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (act_bits, weight_bits, optimize_signs, single_shift, no_quant, dequantize_outputs, weight_clipping, layer_bits=None))]
    fn ptq_quantize(
        &mut self,
        py: Python<'_>,
        act_bits: &Bound<'_, PyAny>,
        weight_bits: Option<&Bound<'_, PyAny>>,
        optimize_signs: bool,
        single_shift: bool,
        no_quant: bool,
        dequantize_outputs: bool,
        weight_clipping: &Bound<'_, PyAny>,
        layer_bits: Option<BTreeMap<String, Bound<'_, PyAny>>>,
    ) -> PyResult<()> {
        let act_bits = bits_arg(act_bits, "nb_bits")?;
        if layer_bits.is_some() {
            let lb = bits_map_arg(layer_bits, "layer_bits")?;
            guard("quantize_normalized_network", || self.model.set_layer_bits(lb))?;
        }
        let weight_bits = match weight_bits {
            Some(b) if !b.is_none() => bits_arg(b, "weight_bits")?,
            _ => act_bits,
        };
        let weight_clipping = weight_clipping_arg(weight_clipping)?;
        let opts = QuantizeOptions {
            act_bits,
            weight_bits,
            optimize_signs,
            single_shift,
            no_quant,
            dequantize_outputs,
            weight_clipping,
        };
        let m = &mut self.model;
        py.detach(|| guard("quantize_normalized_network", || m.quantize(&opts)))
    }

    /// The PTQ state as plain data (stage, per-layer ranges, scales, bit widths ...).
    fn ptq_info<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        ptq::info_to_py(py, self.model.ptq())
    }

    /// Scale `S` of every activation (stored = real / S).
    fn ptq_scales(&self) -> HashMap<String, Vec<f32>> {
        self.model.ptq().scales.clone()
    }

    /// Integer unit of every quantized value (int = stored * unit).
    fn ptq_units(&self) -> HashMap<String, Vec<f32>> {
        self.model.ptq().units.clone()
    }

    fn copy(&self) -> NativeModel {
        self.clone()
    }

    fn __deepcopy__(&self, _memo: &Bound<'_, PyAny>) -> NativeModel {
        self.clone()
    }
}

/// Checks the arguments of `quantize_network` before any work starts and fills in what the
/// caller left out (`None`) from the preset; returns the settings the pipeline will use, with
/// whether calibration needs histograms.
#[pyfunction]
#[allow(clippy::too_many_arguments)]
#[pyo3(signature = (nb_bits, clipping=None, weight_bits=None, weight_clipping=None, preset="best", per_channel=None, optimize_signs=None, gptq=None, bias_correction=None, input_aware=None, split_channels=None))]
fn check_quantize_options<'py>(
    py: Python<'py>,
    nb_bits: &Bound<'py, PyAny>,
    clipping: Option<&Bound<'py, PyAny>>,
    weight_bits: Option<&Bound<'py, PyAny>>,
    weight_clipping: Option<&Bound<'py, PyAny>>,
    preset: &str,
    per_channel: Option<bool>,
    optimize_signs: Option<bool>,
    gptq: Option<bool>,
    bias_correction: Option<bool>,
    input_aware: Option<bool>,
    split_channels: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyDict>> {
    let preset = core_ptq::Preset::parse(preset).map_err(errors::to_py)?;
    let split = match split_channels {
        Some(v) if !v.is_none() => Some(split_ratio_arg(v)?),
        _ => None,
    };
    let bits = bits_arg(nb_bits, "nb_bits")?;
    let wbits = match weight_bits {
        Some(b) if !b.is_none() => bits_arg(b, "weight_bits")?,
        _ => bits,
    };
    let base = preset.settings(bits, wbits);
    let clipping = match clipping {
        Some(c) if !c.is_none() => clipping_arg(c)?,
        _ => base.clipping,
    };
    let weight_clipping = match weight_clipping {
        Some(c) if !c.is_none() => weight_clipping_arg(c)?,
        _ => base.weight_clipping,
    };
    let d = PyDict::new(py);
    d.set_item("preset", preset.name())?;
    d.set_item("nb_bits", bits)?;
    d.set_item("weight_bits", wbits)?;
    d.set_item("clipping", clipping.name())?;
    d.set_item("weight_clipping", weight_clipping.name())?;
    d.set_item("per_channel", per_channel.unwrap_or(base.per_channel))?;
    d.set_item("optimize_signs", optimize_signs.unwrap_or(base.optimize_signs))?;
    d.set_item("histograms", clipping.needs_histograms())?;
    d.set_item("gptq", gptq.unwrap_or(base.gptq))?;
    d.set_item("bias_correction", bias_correction.unwrap_or(base.bias_correction))?;
    d.set_item("input_aware", input_aware.unwrap_or(base.input_aware))?;
    d.set_item("split_channels", split.unwrap_or(base.split_ratio))?;
    Ok(d)
}

/// `split_channels`: False or 0 (off), True (the default ratio) or a ratio >= 1.
fn split_ratio_arg(v: &Bound<'_, PyAny>) -> PyResult<Option<f32>> {
    if let Ok(b) = v.cast::<PyBool>() {
        return Ok(b.is_true().then_some(core_ptq::preset::DEFAULT_SPLIT_RATIO));
    }
    match v.extract::<f64>() {
        Ok(0.0) => Ok(None),
        Ok(r) if r.is_finite() && r >= 1.0 => Ok(Some(r as f32)),
        _ => Err(errors::InvalidArgumentError::new_err(format!(
            "split_channels must be False, True or a ratio >= 1 (largest channel range over the median), got {}",
            v.repr()?
        ))),
    }
}

/// Checks a bit width argument (`what` names it in the error).
#[pyfunction]
#[pyo3(signature = (value, what="nb_bits"))]
fn check_bits(value: &Bound<'_, PyAny>, what: &str) -> PyResult<u32> {
    bits_arg(value, what)
}

/// Statistics of `values` and the clipping value `method` picks for them: returns
/// (clip, hist_abs, hist_pos, range). For tests against an independent reference.
#[pyfunction]
fn clip_from_values(
    values: Vec<f32>,
    method: &str,
    nb_bits: i64,
    signed: bool,
) -> PyResult<(f32, Vec<u64>, Vec<u64>, f32)> {
    let method = Clipping::parse(method).map_err(errors::to_py)?;
    guard("clip_from_values", || {
        let nb_bits = core_ptq::check_bits("nb_bits", nb_bits)?;
        let mut s = core_ptq::RangeStats::new();
        s.update(&values)?;
        let c = core_ptq::clipping::clip_value(&s, method, nb_bits, signed);
        Ok((c, s.hist_abs, s.hist_pos, s.range))
    })
}

/// Sets the default thread count of heavy calls (`None` restores the default).
#[pyfunction]
#[pyo3(signature = (n=None))]
fn set_num_threads(n: Option<usize>) -> PyResult<()> {
    threads::set_default(n)
}

/// The thread count heavy calls use when not told otherwise.
#[pyfunction]
fn get_num_threads() -> usize {
    threads::default_threads()
}

/// The integer kernel family the engine runs on this CPU ("avxvnni", "avx512vnni", "avx2"
/// or "reference"; `OXIQUANT_KERNEL` can pick a lesser one, read once per process).
#[pyfunction]
fn integer_kernel() -> &'static str {
    oxiquant_core::kernels::qgemm::Kernel::detect().name()
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_class::<NativeModel>()?;
    m.add_function(wrap_pyfunction!(set_num_threads, m)?)?;
    m.add_function(wrap_pyfunction!(get_num_threads, m)?)?;
    m.add_function(wrap_pyfunction!(integer_kernel, m)?)?;
    m.add_function(wrap_pyfunction!(clip_from_values, m)?)?;
    m.add_function(wrap_pyfunction!(check_quantize_options, m)?)?;
    m.add_function(wrap_pyfunction!(check_bits, m)?)?;
    m.add("CLIPPING_METHODS", Clipping::NAMES.to_vec())?;
    m.add("PRESETS", core_ptq::Preset::NAMES.to_vec())?;
    m.add_function(wrap_pyfunction!(errors::_guard_selftest, m)?)?;
    m.add("OxiquantError", py.get_type::<errors::OxiquantError>())?;
    m.add("UnsupportedOpError", py.get_type::<errors::UnsupportedOpError>())?;
    m.add("ModelFormatError", py.get_type::<errors::ModelFormatError>())?;
    m.add("ShapeError", py.get_type::<errors::ShapeError>())?;
    m.add("InvalidArgumentError", py.get_type::<errors::InvalidArgumentError>())?;
    m.add("InternalError", py.get_type::<errors::InternalError>())?;
    m.add("MAX_OPSET", oxiquant_core::ops::MAX_OPSET)?;
    m.add("REGISTERED_OPS", oxiquant_core::ops::registry::entries())?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}

/// `quant_info["equalization"]` and the result of `ptq_equalize`.
pub(crate) fn split_dict<'py>(
    py: Python<'py>,
    r: &core_ptq::split_channels::SplitReport,
) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    for (value, v) in r {
        let e = PyDict::new(py);
        e.set_item("method", v.method.name())?;
        e.set_item("channels", v.channels)?;
        e.set_item("added", v.added)?;
        e.set_item("ratio_before", v.ratio_before)?;
        e.set_item("ratio_after", v.ratio_after)?;
        e.set_item("readers", v.readers.clone())?;
        e.set_item("scale_node", &v.scale_node)?;
        d.set_item(value, e)?;
    }
    Ok(d)
}

pub(crate) fn equalization_dict<'py>(
    py: Python<'py>,
    r: &core_ptq::equalize::EqualizeReport,
) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("groups", r.groups)?;
    d.set_item("channels", r.channels)?;
    d.set_item("pinned_channels", r.pinned_channels)?;
    d.set_item("sweeps", r.sweeps)?;
    let layers = PyDict::new(py);
    for (name, (before, after)) in &r.layers {
        layers.set_item(name, (before, after))?;
    }
    d.set_item("layers", layers)?;
    Ok(d)
}
