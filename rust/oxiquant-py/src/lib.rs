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
use oxiquant_core::onnx::{self as core_onnx, RawGraph};
use oxiquant_core::ptq::{self as core_ptq, Clipping, PtqState};
use oxiquant_core::{exec, passes, Graph};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use std::sync::{Arc, OnceLock};

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A network held by the Rust core.
#[pyclass(module = "oxiquant._native", name = "NativeModel")]
#[derive(Clone)]
struct NativeModel {
    graph: Graph,
    ptq: PtqState,
    /// The integer engine's graph, lowered once when the model is quantized.
    int_plan: IntPlan,
    /// `graph` with BatchNormalization folded and convolutions fused
    /// (`passes::inference_plan`), built at the first `run` that needs it; `None` when the
    /// plan would be `graph` itself (no copy of the weights). Every method that edits
    /// `graph` clears it.
    float_plan: OnceLock<Option<Arc<Graph>>>,
}

impl NativeModel {
    /// The float inference plan of `graph`, built on first use (`None`: run `graph`).
    fn float_plan(&self) -> oxiquant_core::Result<Option<Arc<Graph>>> {
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
}

impl IntPlan {
    fn of(graph: &Graph, st: &PtqState) -> IntPlan {
        if st.stage == core_ptq::Stage::Float && core_onnx::import_quantized::is_quantized_model(graph) {
            // A model quantized by another tool (QDQ or QOperator).
            match core_onnx::import_quantized::import_quantized(graph) {
                Ok(imp) => {
                    let note = imp.note();
                    IntPlan::Ready(Arc::new(imp.graph), note)
                }
                Err(e) => IntPlan::Unavailable(e.to_string()),
            }
        } else if st.stage != core_ptq::Stage::Quantized {
            IntPlan::None
        } else if st.no_quant {
            IntPlan::Unavailable("it was quantized with no_quant=True (its values are not integers)".into())
        } else {
            match oxiquant_core::int::lower::lower_to_integer(graph, st) {
                Ok(ig) => IntPlan::Ready(Arc::new(ig), None),
                Err(e) => IntPlan::Unavailable(e.to_string()),
            }
        }
    }
}

/// Whether a model runs on the integer engine.
#[derive(Clone)]
enum IntPlan {
    /// Not quantized (a float model, or one in the middle of the pipeline).
    None,
    /// The integer graph, and what of it stays in float (models quantized by other tools).
    Ready(Arc<Graph>, Option<String>),
    /// Quantized, but the integer engine cannot hold it (the reason).
    Unavailable(String),
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
        let (graph, int_plan) = py.detach(|| {
            guard("model loading", || {
                let g = Graph::from_raw(raw)?;
                let plan = IntPlan::of(&g, &PtqState::default());
                Ok((g, plan))
            })
        })?;
        Ok(NativeModel {
            graph,
            ptq: PtqState::default(),
            int_plan,
            float_plan: OnceLock::new(),
        })
    }

    /// The model as ONNX-shaped parts: a dict with name, opset, nodes, initializers, inputs,
    /// outputs (the inverse of `from_parts`). `format`: "fake" (quantizers as Mul/Round/Clip
    /// on integer-valued floats) or "qdq" (QuantizeLinear/DequantizeLinear, 8-bit weights of
    /// `weight_type` "uint8" (zero point 128) or "int8") or "qoperator" (QLinearConv & co.,
    /// from the integer engine's graph).
    #[pyo3(signature = (format="fake", weight_type="uint8"))]
    fn to_parts<'py>(&self, py: Python<'py>, format: &str, weight_type: &str) -> PyResult<Bound<'py, PyDict>> {
        let wt = match weight_type {
            "uint8" => core_onnx::export_qdq::WeightType::Uint8,
            "int8" => core_onnx::export_qdq::WeightType::Int8,
            other => {
                return Err(errors::InvalidArgumentError::new_err(format!(
                    "weight_type must be 'uint8' or 'int8', got '{other}'"
                )))
            }
        };
        let mut int4_names: Vec<(String, bool)> = Vec::new();
        let raw = match format {
            "fake" => self.graph.to_raw().map_err(errors::to_py)?,
            "qdq" => {
                let (raw, int4) = guard("QDQ export", || {
                    core_onnx::export_qdq::to_qdq(&self.graph, &self.ptq, wt)
                })?;
                int4_names = int4;
                raw
            }
            "qoperator" => match &self.int_plan {
                IntPlan::Ready(g, _) => guard("QOperator export", || core_onnx::export_qop::to_qoperator(g, wt))?,
                IntPlan::Unavailable(why) => {
                    return Err(errors::InvalidArgumentError::new_err(format!(
                        "QOperator export needs the integer engine's graph, which this model has not: {why}"
                    )))
                }
                IntPlan::None => {
                    return Err(errors::InvalidArgumentError::new_err(
                        "format='qoperator' needs a quantized model (see oxiquant.quantize_network)",
                    ))
                }
            },
            other => {
                return Err(errors::InvalidArgumentError::new_err(format!(
                    "unknown export format '{other}'; expected 'fake', 'qdq' or 'qoperator'"
                )))
            }
        };
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
        let graph: &Graph = match (mode, &self.int_plan) {
            (None, IntPlan::Ready(g, _)) | (Some("int"), IntPlan::Ready(g, _)) => g,
            (None, _) => &self.graph,
            (Some("fake"), IntPlan::None) | (Some("int"), IntPlan::None) => {
                return Err(errors::InvalidArgumentError::new_err(format!(
                    "mode='{}' applies to quantized models; this one is at stage '{}'",
                    mode.unwrap_or_default(),
                    self.ptq.stage.name()
                )))
            }
            (Some("fake"), _) => &self.graph,
            (Some("int"), IntPlan::Unavailable(why)) => {
                return Err(errors::InvalidArgumentError::new_err(format!(
                    "the integer engine cannot run this model: {why}"
                )))
            }
            (Some(other), _) => {
                return Err(errors::InvalidArgumentError::new_err(format!(
                    "mode must be 'int' or 'fake', got '{other}'"
                )))
            }
        };
        let feeds = feeds_from_py(feeds)?;
        let pool = threads::pool(num_threads)?;
        let fetch = fetch.unwrap_or_default();
        // The float graph runs through its inference plan, unless the caller fetches
        // intermediate values (which the plan may have fused away).
        let planned = std::ptr::eq(graph, &self.graph) && fetch.is_empty();
        let (outs, fetched) = py.detach(|| {
            guard("inference", || {
                let plan = if planned { self.float_plan()? } else { None };
                let graph = plan.as_deref().unwrap_or(graph);
                pool.install(|| exec::run_fetching(graph, feeds, &fetch))
            })
        })?;
        let d = PyDict::new(py);
        for (k, t) in outs.into_iter().chain(fetched) {
            d.set_item(k, tensor_to_py(py, t)?)?;
        }
        Ok(d)
    }

    /// "int" when `run` uses the integer engine by default, "fake" for a quantized model it
    /// cannot hold (with the reason), "float" otherwise.
    fn engine(&self) -> (String, Option<String>) {
        match &self.int_plan {
            IntPlan::Ready(_, note) => ("int".into(), note.clone()),
            IntPlan::Unavailable(why) => ("fake".into(), Some(why.clone())),
            IntPlan::None => ("float".into(), None),
        }
    }

    /// Op counts of the float inference plan `run` executes for this graph (fused
    /// convolutions show as e.g. "Conv+Add+Clip"); builds the plan if needed.
    fn plan_op_counts(&self, py: Python<'_>) -> PyResult<std::collections::BTreeMap<String, usize>> {
        py.detach(|| {
            guard("inference plan", || {
                Ok(self.float_plan()?.as_deref().unwrap_or(&self.graph).op_counts())
            })
        })
    }

    /// Op counts of the integer engine's graph (empty when there is none).
    fn int_op_counts(&self) -> std::collections::BTreeMap<String, usize> {
        match &self.int_plan {
            IntPlan::Ready(g, _) => g.op_counts(),
            _ => Default::default(),
        }
    }

    /// Folds constant subgraphs in place; returns the number of nodes removed.
    fn fold_constants(&mut self, py: Python<'_>) -> PyResult<usize> {
        self.float_plan = OnceLock::new();
        let (g, st) = (&mut self.graph, &self.ptq);
        let (n, plan) = py.detach(|| {
            guard("constant folding", || {
                let n = passes::fold_constants(g)?;
                Ok((n, IntPlan::of(g, st)))
            })
        })?;
        self.int_plan = plan;
        Ok(n)
    }

    /// Op counts, parameter count, inputs and outputs.
    fn summary<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        d.set_item("name", &self.graph.name)?;
        d.set_item("opset", self.graph.opset)?;
        d.set_item("op_counts", self.graph.op_counts())?;
        d.set_item("num_nodes", self.graph.nodes.len())?;
        d.set_item("num_parameters", self.graph.num_parameters())?;
        let ins = self
            .graph
            .runtime_inputs()
            .map(|v| value_info_to_py(py, v))
            .collect::<PyResult<Vec<_>>>()?;
        let outs = self
            .graph
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
        self.graph.runtime_inputs().map(|v| v.name.clone()).collect()
    }

    #[getter]
    fn output_names(&self) -> Vec<String> {
        self.graph.outputs.iter().map(|v| v.name.clone()).collect()
    }

    /// Runtime inputs as (name, onnx elem type, shape) tuples.
    #[getter]
    fn inputs<'py>(&self, py: Python<'py>) -> PyResult<Vec<Bound<'py, pyo3::types::PyTuple>>> {
        self.graph.runtime_inputs().map(|v| value_info_to_py(py, v)).collect()
    }

    /// PTQ step 1 (in place). Returns what changed.
    fn ptq_prepare<'py>(&mut self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        self.float_plan = OnceLock::new();
        let (g, st) = (&mut self.graph, &mut self.ptq);
        let r = py.detach(|| guard("prepare_network", || core_ptq::prepare::prepare(g, st)))?;
        let d = PyDict::new(py);
        d.set_item("folded_constants", r.folded_constants)?;
        d.set_item("folded_batchnorms", r.folded_batchnorms)?;
        d.set_item("removed_passthroughs", r.removed_passthroughs)?;
        Ok(d)
    }

    /// PTQ step 2 (in place).
    fn ptq_insert_scaling_nodes(&mut self, py: Python<'_>) -> PyResult<()> {
        self.float_plan = OnceLock::new();
        let (g, st) = (&mut self.graph, &mut self.ptq);
        py.detach(|| {
            guard("insert_scaling_nodes", || {
                core_ptq::insert_scaling::insert_scaling_nodes(g, st)
            })
        })
    }

    /// PTQ step 3 (in place).
    fn ptq_normalize_parameters(&mut self, py: Python<'_>, per_channel: bool) -> PyResult<()> {
        self.float_plan = OnceLock::new();
        let (g, st) = (&mut self.graph, &mut self.ptq);
        py.detach(|| {
            guard("normalize_parameters", || {
                core_ptq::normalize_params::normalize_parameters(g, st, per_channel)
            })
        })
    }

    /// PTQ step 4, part 1: clears the statistics (`histograms`: keep the histograms that
    /// MSE and KL clipping need).
    #[pyo3(signature = (histograms=true))]
    fn ptq_calibration_begin(&mut self, histograms: bool) -> PyResult<()> {
        guard("compute_ranges", || {
            core_ptq::calibrate::begin(&mut self.ptq, histograms)
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
        let (g, st) = (&self.graph, &mut self.ptq);
        py.detach(|| {
            guard("compute_ranges", || {
                pool.install(|| core_ptq::calibrate::observe_batches(g, st, batches))
            })
        })
    }

    /// PTQ step 4, part 3: closes the calibration.
    fn ptq_calibration_finish(&mut self) -> PyResult<()> {
        guard("compute_ranges", || core_ptq::calibrate::finish(&mut self.ptq))
    }

    /// PTQ step 4, on failure: puts the model back as it was before `ptq_calibration_begin`.
    fn ptq_calibration_abort(&mut self) {
        core_ptq::calibrate::abort(&mut self.ptq);
    }

    /// PTQ step 5.
    #[pyo3(signature = (clipping, nb_bits, optimize_signs, num_threads=None))]
    fn ptq_adjust_ranges(
        &mut self,
        py: Python<'_>,
        clipping: &str,
        nb_bits: u32,
        optimize_signs: bool,
        num_threads: Option<usize>,
    ) -> PyResult<()> {
        let method = Clipping::parse(clipping).map_err(errors::to_py)?;
        let pool = threads::pool(num_threads)?;
        let (g, st) = (&self.graph, &mut self.ptq);
        py.detach(|| {
            guard("adjust_ranges", || {
                pool.install(|| core_ptq::adjust::adjust_ranges(g, st, method, nb_bits, optimize_signs))
            })
        })
    }

    /// PTQ step 6 (in place).
    fn ptq_normalize_activations(&mut self, py: Python<'_>) -> PyResult<()> {
        self.float_plan = OnceLock::new();
        let (g, st) = (&mut self.graph, &mut self.ptq);
        py.detach(|| {
            guard("normalize_activations", || {
                core_ptq::normalize_acts::normalize_activations(g, st)
            })
        })
    }

    /// PTQ step 7 (in place).
    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (act_bits, weight_bits, optimize_signs, single_shift, no_quant, dequantize_outputs, weight_clipping))]
    fn ptq_quantize(
        &mut self,
        py: Python<'_>,
        act_bits: u32,
        weight_bits: u32,
        optimize_signs: bool,
        single_shift: bool,
        no_quant: bool,
        dequantize_outputs: bool,
        weight_clipping: &str,
    ) -> PyResult<()> {
        let weight_clipping = match weight_clipping {
            "max" => Clipping::Max,
            "mse" => Clipping::Mse,
            other => {
                return Err(errors::InvalidArgumentError::new_err(format!(
                    "weight_clipping must be 'max' or 'mse', got '{other}'"
                )))
            }
        };
        let opts = core_ptq::quantize::QuantizeOptions {
            act_bits,
            weight_bits,
            optimize_signs,
            single_shift,
            no_quant,
            dequantize_outputs,
            weight_clipping,
        };
        self.float_plan = OnceLock::new();
        let (g, st) = (&mut self.graph, &mut self.ptq);
        let plan = py.detach(|| {
            guard("quantize_normalized_network", || {
                core_ptq::quantize::quantize_network(g, st, &opts)?;
                Ok(IntPlan::of(g, st))
            })
        })?;
        self.int_plan = plan;
        Ok(())
    }

    /// The PTQ state as plain data (stage, per-layer ranges, scales, bit widths ...).
    fn ptq_info<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        ptq::info_to_py(py, &self.ptq)
    }

    /// Scale `S` of every activation (stored = real / S).
    fn ptq_scales(&self) -> std::collections::HashMap<String, Vec<f32>> {
        self.ptq.scales.clone()
    }

    /// Integer unit of every quantized value (int = stored * unit).
    fn ptq_units(&self) -> std::collections::HashMap<String, Vec<f32>> {
        self.ptq.units.clone()
    }

    fn copy(&self) -> NativeModel {
        self.clone()
    }

    fn __deepcopy__(&self, _memo: &Bound<'_, PyAny>) -> NativeModel {
        self.clone()
    }
}

/// Statistics of `values` and the clipping value `method` picks for them: returns
/// (clip, hist_abs, hist_pos, range). For tests against an independent reference.
#[pyfunction]
fn clip_from_values(
    values: Vec<f32>,
    method: &str,
    nb_bits: u32,
    signed: bool,
) -> PyResult<(f32, Vec<u64>, Vec<u64>, f32)> {
    let method = Clipping::parse(method).map_err(errors::to_py)?;
    guard("clip_from_values", || {
        core_ptq::check_bits("clip_from_values", nb_bits)?;
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
    m.add_function(wrap_pyfunction!(errors::_guard_selftest, m)?)?;
    m.add("OxiquantError", py.get_type::<errors::OxiquantError>())?;
    m.add("UnsupportedOpError", py.get_type::<errors::UnsupportedOpError>())?;
    m.add("ModelFormatError", py.get_type::<errors::ModelFormatError>())?;
    m.add("ShapeError", py.get_type::<errors::ShapeError>())?;
    m.add("InvalidArgumentError", py.get_type::<errors::InvalidArgumentError>())?;
    m.add("InternalError", py.get_type::<errors::InternalError>())?;
    m.add("MAX_OPSET", oxiquant_core::ops::MAX_OPSET)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
