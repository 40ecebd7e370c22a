//! numpy <-> core tensor and ONNX-part conversions. Inputs are copied into owned Rust values
//! so that the heavy work can run without the GIL.

use crate::errors::{ModelFormatError, ShapeError};
use numpy::ndarray::{ArrayD, IxDyn};
use numpy::{IntoPyArray, PyReadonlyArrayDyn, PyUntypedArrayMethods};
use oxiquant_core::graph::{Dim, ValueInfo};
use oxiquant_core::onnx::{AttrValue, RawGraph, RawNode};
use oxiquant_core::tensor::{DType, Element, TensorData};
use oxiquant_core::Tensor;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyTuple};

fn copy_array<T: Element + numpy::Element>(arr: PyReadonlyArrayDyn<'_, T>) -> PyResult<Tensor> {
    let shape = arr.shape().to_vec();
    let data: Vec<T> = match arr.as_slice() {
        Ok(s) => s.to_vec(),
        Err(_) => arr.as_array().iter().copied().collect(),
    };
    Tensor::from_vec(shape, data).map_err(crate::errors::to_py)
}

/// Copies a numpy array into a tensor; `what` names it in errors.
pub fn tensor_from_py(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<Tensor> {
    if let Ok(a) = obj.extract::<PyReadonlyArrayDyn<'_, f32>>() {
        return copy_array(a);
    }
    if let Ok(a) = obj.extract::<PyReadonlyArrayDyn<'_, i64>>() {
        return copy_array(a);
    }
    if let Ok(a) = obj.extract::<PyReadonlyArrayDyn<'_, i32>>() {
        return copy_array(a);
    }
    if let Ok(a) = obj.extract::<PyReadonlyArrayDyn<'_, i8>>() {
        return copy_array(a);
    }
    if let Ok(a) = obj.extract::<PyReadonlyArrayDyn<'_, u8>>() {
        return copy_array(a);
    }
    if let Ok(a) = obj.extract::<PyReadonlyArrayDyn<'_, bool>>() {
        return copy_array(a);
    }
    if let Ok(a) = obj.extract::<PyReadonlyArrayDyn<'_, i16>>() {
        return copy_array(a);
    }
    if let Ok(a) = obj.extract::<PyReadonlyArrayDyn<'_, u16>>() {
        return copy_array(a);
    }
    if let Ok(a) = obj.extract::<PyReadonlyArrayDyn<'_, u32>>() {
        return copy_array(a);
    }
    if let Ok(a) = obj.extract::<PyReadonlyArrayDyn<'_, u64>>() {
        return copy_array(a);
    }
    let desc = obj
        .getattr("dtype")
        .map(|d| d.to_string())
        .unwrap_or_else(|_| obj.get_type().name().map(|n| n.to_string()).unwrap_or_default());
    Err(ShapeError::new_err(format!(
        "{what}: expected a numpy array of float32, int64, int32, int16, int8, uint64, uint32, uint16, uint8 or bool, got {desc}"
    )))
}

pub fn tensor_to_py<'py>(py: Python<'py>, t: Tensor) -> PyResult<Bound<'py, PyAny>> {
    let (shape, data) = t.into_parts();
    fn arr<'py, T: numpy::Element>(py: Python<'py>, shape: &[usize], v: Vec<T>) -> PyResult<Bound<'py, PyAny>> {
        let a = ArrayD::from_shape_vec(IxDyn(shape), v).map_err(|e| ShapeError::new_err(e.to_string()))?;
        Ok(a.into_pyarray(py).into_any())
    }
    match data {
        TensorData::F32(v) => arr(py, &shape, v),
        TensorData::U8(v) => arr(py, &shape, v),
        TensorData::I8(v) => arr(py, &shape, v),
        TensorData::I32(v) => arr(py, &shape, v),
        TensorData::I64(v) => arr(py, &shape, v),
        TensorData::Bool(v) => arr(py, &shape, v),
        TensorData::I16(v) => arr(py, &shape, v),
        TensorData::U16(v) => arr(py, &shape, v),
        TensorData::U32(v) => arr(py, &shape, v),
        TensorData::U64(v) => arr(py, &shape, v),
    }
}

fn attr_from_py(node: &str, name: &str, kind: &str, value: &Bound<'_, PyAny>) -> PyResult<AttrValue> {
    let bad = |e: PyErr| ModelFormatError::new_err(format!("node '{node}': attribute '{name}' ({kind}): {e}"));
    Ok(match kind {
        "int" => AttrValue::Int(value.extract().map_err(bad)?),
        "float" => AttrValue::Float(value.extract().map_err(bad)?),
        "string" => AttrValue::String(value.extract().map_err(bad)?),
        "ints" => AttrValue::Ints(value.extract().map_err(bad)?),
        "floats" => AttrValue::Floats(value.extract().map_err(bad)?),
        "strings" => AttrValue::Strings(value.extract().map_err(bad)?),
        "tensor" => AttrValue::Tensor(tensor_from_py(value, &format!("node '{node}' attribute '{name}'"))?),
        "graph" => AttrValue::Graph(Box::new(graph_from_py(
            value.cast::<PyDict>().map_err(|e| bad(e.into()))?,
        )?)),
        other => {
            return Err(ModelFormatError::new_err(format!(
                "node '{node}': attribute '{name}' has unsupported kind '{other}'"
            )))
        }
    })
}

pub fn attr_to_py<'py>(py: Python<'py>, a: &AttrValue) -> PyResult<(String, Bound<'py, PyAny>)> {
    Ok(match a {
        AttrValue::Int(v) => ("int".into(), v.into_pyobject(py)?.into_any()),
        AttrValue::Float(v) => ("float".into(), v.into_pyobject(py)?.into_any()),
        AttrValue::String(v) => ("string".into(), v.into_pyobject(py)?.into_any()),
        AttrValue::Ints(v) => ("ints".into(), PyList::new(py, v)?.into_any()),
        AttrValue::Floats(v) => ("floats".into(), PyList::new(py, v)?.into_any()),
        AttrValue::Strings(v) => ("strings".into(), PyList::new(py, v)?.into_any()),
        AttrValue::Tensor(t) => ("tensor".into(), tensor_to_py(py, t.clone())?),
        AttrValue::Graph(g) => ("graph".into(), graph_to_py(py, g)?.into_any()),
    })
}

fn item<'py>(d: &Bound<'py, PyDict>, key: &str) -> PyResult<Bound<'py, PyAny>> {
    d.get_item(key)?
        .ok_or_else(|| ModelFormatError::new_err(format!("subgraph parts lack '{key}'")))
}

/// A subgraph attribute's parts (name, nodes, initializers, inputs, outputs: as `from_parts`
/// takes them); its opset is the enclosing graph's.
pub fn graph_from_py(d: &Bound<'_, PyDict>) -> PyResult<RawGraph> {
    let name: String = item(d, "name")?.extract()?;
    let nodes = item(d, "nodes")?
        .extract::<Vec<PyNode<'_>>>()?
        .into_iter()
        .map(node_from_py)
        .collect::<PyResult<Vec<_>>>()?;
    let initializers = item(d, "initializers")?
        .extract::<Vec<(String, Bound<'_, PyAny>)>>()?
        .into_iter()
        .map(|(n, a)| {
            let t = tensor_from_py(&a, &format!("initializer '{n}'"))?;
            Ok((n, t))
        })
        .collect::<PyResult<Vec<_>>>()?;
    let infos = |key: &str| -> PyResult<Vec<ValueInfo>> {
        item(d, key)?
            .extract::<Vec<PyValueInfo<'_>>>()?
            .into_iter()
            .map(value_info_from_py)
            .collect()
    };
    Ok(RawGraph {
        name,
        opset: 0,
        nodes,
        initializers,
        inputs: infos("inputs")?,
        outputs: infos("outputs")?,
    })
}

/// The parts of a subgraph attribute (the inverse of `graph_from_py`).
pub fn graph_to_py<'py>(py: Python<'py>, g: &RawGraph) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("name", &g.name)?;
    let nodes = PyList::empty(py);
    for n in &g.nodes {
        let attrs = PyList::empty(py);
        for (k, v) in &n.attrs {
            let (kind, val) = attr_to_py(py, v)?;
            attrs.append((k, kind, val))?;
        }
        nodes.append((&n.name, &n.op_type, &n.domain, &n.inputs, &n.outputs, attrs))?;
    }
    d.set_item("nodes", nodes)?;
    let inits = PyList::empty(py);
    for (k, t) in &g.initializers {
        inits.append((k, tensor_to_py(py, t.clone())?))?;
    }
    d.set_item("initializers", inits)?;
    let ins = g
        .inputs
        .iter()
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

/// (name, op_type, domain, inputs, outputs, [(attr, kind, value)])
pub type PyNode<'py> = (
    String,
    String,
    String,
    Vec<String>,
    Vec<String>,
    Vec<(String, String, Bound<'py, PyAny>)>,
);

pub fn node_from_py(n: PyNode<'_>) -> PyResult<RawNode> {
    let (name, op_type, domain, inputs, outputs, attrs) = n;
    let attrs = attrs
        .iter()
        .map(|(k, kind, v)| Ok((k.clone(), attr_from_py(&name, k, kind, v)?)))
        .collect::<PyResult<Vec<_>>>()?;
    Ok(RawNode {
        name,
        op_type,
        domain,
        inputs,
        outputs,
        attrs,
    })
}

/// (name, onnx elem type, shape or None; each dim an int, a str or None)
pub type PyValueInfo<'py> = (String, i32, Option<Vec<Bound<'py, PyAny>>>);

pub fn value_info_from_py(v: PyValueInfo<'_>) -> PyResult<ValueInfo> {
    let (name, code, shape) = v;
    let dtype = DType::from_onnx_code(code).ok_or_else(|| {
        ModelFormatError::new_err(format!(
            "value '{name}' has ONNX element type {code}, which oxiquant does not support"
        ))
    })?;
    let shape = match shape {
        None => None,
        Some(dims) => Some(
            dims.iter()
                .map(|d| {
                    if d.is_none() {
                        Ok(Dim::Symbolic(String::new()))
                    } else if let Ok(n) = d.extract::<i64>() {
                        usize::try_from(n).map(Dim::Fixed).map_err(|_| {
                            ModelFormatError::new_err(format!("value '{name}' has a negative dimension {n}"))
                        })
                    } else {
                        Ok(Dim::Symbolic(d.extract::<String>()?))
                    }
                })
                .collect::<PyResult<Vec<_>>>()?,
        ),
    };
    Ok(ValueInfo { name, dtype, shape })
}

pub fn value_info_to_py<'py>(py: Python<'py>, v: &ValueInfo) -> PyResult<Bound<'py, PyTuple>> {
    let shape: Option<Vec<Bound<'py, PyAny>>> = v
        .shape
        .as_ref()
        .map(|s| {
            s.iter()
                .map(|d| match d {
                    Dim::Fixed(n) => Ok(n.into_pyobject(py)?.into_any()),
                    Dim::Symbolic(s) if s.is_empty() => Ok(py.None().into_bound(py)),
                    Dim::Symbolic(s) => Ok(s.into_pyobject(py)?.into_any()),
                })
                .collect::<PyResult<Vec<_>>>()
        })
        .transpose()?;
    PyTuple::new(
        py,
        [
            v.name.clone().into_pyobject(py)?.into_any(),
            v.dtype.onnx_code().into_pyobject(py)?.into_any(),
            shape.into_pyobject(py)?.into_any(),
        ],
    )
}

pub fn feeds_from_py(feeds: &Bound<'_, PyDict>) -> PyResult<std::collections::HashMap<String, Tensor>> {
    let mut out = std::collections::HashMap::new();
    for (k, v) in feeds.iter() {
        let name: String = k.extract()?;
        let t = tensor_from_py(&v, &format!("input '{name}'"))?;
        out.insert(name, t);
    }
    Ok(out)
}
