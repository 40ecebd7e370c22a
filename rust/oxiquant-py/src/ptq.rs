//! Conversions of the PTQ state to plain Python data (dicts, lists, floats).

use oxiquant_core::model::QuantizerInfo;
use oxiquant_core::ptq::{PtqState, RangeStats, ScalingInfo};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

fn stats_dict<'py>(py: Python<'py>, s: &RangeStats) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("max_abs", s.max_abs)?;
    d.set_item("min", s.min)?;
    d.set_item("max", s.max)?;
    d.set_item("count", s.count)?;
    Ok(d)
}

/// The per-layer information of a model in the pipeline, as plain Python data.
pub fn info_to_py<'py>(py: Python<'py>, st: &PtqState) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("stage", st.stage.name())?;
    d.set_item("per_channel", st.per_channel)?;
    d.set_item("no_quant", st.no_quant)?;
    d.set_item("dequantized_outputs", st.dequantized_outputs)?;
    d.set_item("calibration_samples", st.samples_seen)?;
    d.set_item("calibration_batches", st.batches_seen)?;
    let layers = PyList::empty(py);
    for (name, i) in &st.scaling {
        layers.append(scaling_dict(py, name, i, st)?)?;
    }
    d.set_item("activations", layers)?;
    let weights = PyList::empty(py);
    for (name, a) in &st.affine {
        let w = PyDict::new(py);
        w.set_item("name", name)?;
        w.set_item("weight_scale", a.weight_scale.clone())?;
        w.set_item("weight_bits", a.weight_bits)?;
        w.set_item("weight_clip", a.weight_clip.clone())?;
        weights.append(w)?;
    }
    d.set_item("weights", weights)?;
    let fl = PyList::empty(py);
    for (n, op, why) in &st.float_nodes {
        fl.append((n, op, why))?;
    }
    d.set_item("float_nodes", fl)?;
    d.set_item("warnings", st.warnings.clone())?;
    let eq = match &st.equalization {
        Some(r) => Some(crate::equalization_dict(py, r)?),
        None => None,
    };
    d.set_item("equalization", eq)?;
    let split = match &st.split {
        Some(r) => Some(crate::split_dict(py, r)?),
        None => None,
    };
    d.set_item("split_channels", split)?;
    Ok(d)
}

/// One Scaling node's entry of `quant_info["activations"]`.
fn scaling_dict<'py>(py: Python<'py>, name: &str, i: &ScalingInfo, st: &PtqState) -> PyResult<Bound<'py, PyDict>> {
    let l = PyDict::new(py);
    l.set_item("name", name)?;
    l.set_item("role", i.role.name())?;
    l.set_item("tensor", &i.output)?;
    let scale = st.scales.get(&i.output).and_then(|s| s.first().copied());
    l.set_item("scale", scale)?;
    match &i.stats {
        Some(s) => {
            l.set_item("range", s.max_abs * i.calib_scale)?;
            l.set_item("min", s.min * i.calib_scale)?;
            l.set_item("max", s.max * i.calib_scale)?;
        }
        None => {
            l.set_item("range", py.None())?;
            l.set_item("min", py.None())?;
            l.set_item("max", py.None())?;
        }
    }
    l.set_item("clip", i.clip)?;
    l.set_item("clipping", i.clipping.map(|c| c.name()))?;
    l.set_item("bits", i.bits)?;
    l.set_item("signed", i.signed)?;
    l.set_item("step", i.step)?;
    l.set_item("codes", i.codes.map(|(lo, hi)| vec![lo, hi]))?;
    l.set_item("power_of_two", i.power_of_two)?;
    if let Some(s) = &i.stats {
        l.set_item("stats", stats_dict(py, s)?)?;
    }
    Ok(l)
}

/// A Scaling node of the graph with the values it reads and writes, and, when the pipeline
/// has information on it, that information (the keys of `quant_info["activations"]`).
pub fn quantizer_to_py<'py>(py: Python<'py>, q: &QuantizerInfo, st: &PtqState) -> PyResult<Bound<'py, PyDict>> {
    let d = match &q.info {
        Some(i) => scaling_dict(py, &q.node, i, st)?,
        None => {
            let d = PyDict::new(py);
            d.set_item("name", &q.node)?;
            d.set_item("step", py.None())?;
            d
        }
    };
    d.set_item("reads", &q.reads)?;
    d.set_item("writes", &q.writes)?;
    Ok(d)
}
