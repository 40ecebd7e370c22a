"""ONNX protobuf <-> the plain parts the native core takes.

All protobuf handling lives here (with the `onnx` package); the core only sees names,
attribute values and numpy arrays."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Union

import numpy as np
import onnx
from onnx import AttributeProto, TensorProto, helper, numpy_helper

from oxiquant._errors import ModelFormatError

ModelSource = Union[str, "os.PathLike[str]", bytes, onnx.ModelProto]

# Protobuf refuses messages above 2 GiB; larger models must keep weights as external data.
_PROTOBUF_LIMIT = 2**31 - 1
_EXTERNAL_THRESHOLD = 1 << 30

_ATTR_KINDS = {
    AttributeProto.INT: "int",
    AttributeProto.FLOAT: "float",
    AttributeProto.STRING: "string",
    AttributeProto.INTS: "ints",
    AttributeProto.FLOATS: "floats",
    AttributeProto.STRINGS: "strings",
    AttributeProto.TENSOR: "tensor",
}
_KIND_TYPES = {
    "int": AttributeProto.INT,
    "float": AttributeProto.FLOAT,
    "string": AttributeProto.STRING,
    "ints": AttributeProto.INTS,
    "floats": AttributeProto.FLOATS,
    "strings": AttributeProto.STRINGS,
    "tensor": AttributeProto.TENSOR,
}
_NUMPY_OK = {
    np.dtype(t)
    for t in (np.float32, np.int64, np.int32, np.int16, np.int8, np.uint64, np.uint32, np.uint16, np.uint8, np.bool_)
}
# Float types the engine computes in float32: their tensors are converted at load, their
# graph inputs and outputs keep the declared type at the API (`Model.float_types`).
WIDER_FLOATS = {TensorProto.FLOAT16: np.float16, TensorProto.DOUBLE: np.float64}


def read_model(source: ModelSource) -> onnx.ModelProto:
    """Reads a ModelProto from a path, raw bytes or a ModelProto (returned as is)."""
    if isinstance(source, onnx.ModelProto):
        return source
    if isinstance(source, (bytes, bytearray)):
        try:
            model = onnx.load_model_from_string(bytes(source))
        except Exception as e:  # protobuf raises DecodeError and others
            raise ModelFormatError(f"the bytes given are not an ONNX model: {e}") from None
        return _check_nonempty(model, "the bytes given")
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise ModelFormatError(f"no ONNX file at '{path}'")
        try:
            model = onnx.load(str(path), load_external_data=True)
        except Exception as e:
            raise ModelFormatError(f"'{path}' is not a readable ONNX model: {type(e).__name__}: {e}") from None
        return _check_nonempty(model, f"'{path}'")
    raise ModelFormatError(
        f"cannot load a model from {type(source).__name__}; give a path, bytes or an onnx.ModelProto"
    )


def _check_nonempty(model: onnx.ModelProto, what: str) -> onnx.ModelProto:
    # Protobuf happily parses an empty or lucky-garbage file as an empty message.
    if not model.HasField("graph") or not model.opset_import:
        raise ModelFormatError(f"{what} holds no ONNX graph (empty, truncated or not an ONNX file)")
    return model


def _tensor_to_numpy(t: TensorProto, where: str) -> np.ndarray:
    try:
        arr = numpy_helper.to_array(t)
    except Exception as e:
        raise ModelFormatError(f"{where}: cannot read tensor '{t.name}': {e}") from None
    if t.data_type in WIDER_FLOATS:
        arr = arr.astype(np.float32)
    if arr.dtype not in _NUMPY_OK:
        raise ModelFormatError(
            f"{where}: tensor '{t.name}' has dtype {arr.dtype}; oxiquant supports float32 (float16 and "
            "float64 computed in float32), int64, int32, int16, int8, uint64, uint32, uint16, uint8 and bool"
        )
    # (np.ascontiguousarray would turn a 0-d scalar into shape [1].)
    return np.asarray(arr, order="C")


def _attr_to_part(node_name: str, a: AttributeProto) -> tuple[str, str, Any] | None:
    if a.type == AttributeProto.GRAPH:
        # The branches of If, the body of Loop and Scan: the same parts, recursively.
        return (a.name, "graph", _graph_parts(a.g))
    kind = _ATTR_KINDS.get(a.type)
    if kind is None:
        # Lists of subgraphs and sparse tensors belong to no op the core implements; it
        # reports the op as unsupported by its type.
        return None
    value: Any
    if kind == "int":
        value = int(a.i)
        if a.name == "to" and value in WIDER_FLOATS:
            # Cast to float16/float64: the engine computes those in float32.
            value = TensorProto.FLOAT
    elif kind == "float":
        value = float(a.f)
    elif kind == "string":
        value = a.s.decode("utf-8", errors="replace")
    elif kind == "ints":
        value = [int(v) for v in a.ints]
    elif kind == "floats":
        value = [float(v) for v in a.floats]
    elif kind == "strings":
        value = [s.decode("utf-8", errors="replace") for s in a.strings]
    else:
        value = _tensor_to_numpy(a.t, f"node '{node_name}' attribute '{a.name}'")
    return (a.name, kind, value)


def _value_info_part(v: onnx.ValueInfoProto, subgraph: bool = False) -> tuple[str, int, list[Any] | None]:
    tt = v.type.tensor_type
    if subgraph and not v.type.HasField("tensor_type") and v.type.WhichOneof("value") is None:
        # A subgraph may leave its values untyped: the core takes their facts from what the
        # control-flow node is given.
        return (v.name, TensorProto.FLOAT, None)
    if not v.type.HasField("tensor_type"):
        raise ModelFormatError(f"graph value '{v.name}' is not a tensor (sequences and maps are not supported)")
    if subgraph and tt.elem_type == TensorProto.UNDEFINED:
        return (v.name, TensorProto.FLOAT, None)
    shape: list[Any] | None = None
    if tt.HasField("shape"):
        shape = []
        for d in tt.shape.dim:
            if d.HasField("dim_value") and d.dim_value == -1:
                # Several exporters write -1 for a dynamic dimension.
                shape.append(None)
            elif d.HasField("dim_value"):
                shape.append(int(d.dim_value))
            elif d.HasField("dim_param"):
                shape.append(d.dim_param)
            else:
                shape.append(None)
    elem = int(tt.elem_type)
    return (v.name, TensorProto.FLOAT if elem in WIDER_FLOATS else elem, shape)


def float_types(model: onnx.ModelProto) -> dict[str, np.dtype]:
    """The graph inputs and outputs declared float16 or float64 (computed in float32)."""
    g = model.graph
    out = {}
    for v in [*g.input, *g.output]:
        elem = v.type.tensor_type.elem_type if v.type.HasField("tensor_type") else 0
        if elem in WIDER_FLOATS:
            out[v.name] = np.dtype(WIDER_FLOATS[elem])
    return out


def model_opset(model: onnx.ModelProto) -> int:
    for o in model.opset_import:
        if o.domain in ("", "ai.onnx"):
            return int(o.version)
    raise ModelFormatError("the model imports no ai.onnx opset")


def _graph_parts(g: onnx.GraphProto, subgraph: bool = True) -> dict[str, Any]:
    """A graph's name, nodes (subgraph attributes as nested parts), initializers, inputs and
    outputs."""
    if len(g.sparse_initializer):
        raise ModelFormatError("sparse initializers are not supported")
    nodes = []
    for n in g.node:
        attrs = [p for p in (_attr_to_part(n.name or n.op_type, a) for a in n.attribute) if p is not None]
        nodes.append((n.name, n.op_type, n.domain, list(n.input), list(n.output), attrs))
    inits = [(t.name, _tensor_to_numpy(t, "initializer")) for t in g.initializer]
    return {
        "name": g.name or "graph",
        "nodes": nodes,
        "initializers": inits,
        "inputs": [_value_info_part(v, subgraph) for v in g.input],
        "outputs": [_value_info_part(v, subgraph) for v in g.output],
    }


def proto_to_parts(model: onnx.ModelProto) -> dict[str, Any]:
    """The arguments of `NativeModel.from_parts` for a ModelProto."""
    return {"opset": model_opset(model), **_graph_parts(model.graph, subgraph=False)}


def _value_info(name: str, elem: int, shape: list[Any] | None) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem, shape)


def _initializer(name: str, a: np.ndarray, int4_signed: bool | None) -> onnx.TensorProto:
    """An initializer; `int4_signed` set stores the (i8 / u8 held) values as INT4 / UINT4."""
    if int4_signed is None:
        return numpy_helper.from_array(a, name)
    kind = onnx.TensorProto.INT4 if int4_signed else onnx.TensorProto.UINT4
    return helper.make_tensor(name, kind, list(a.shape), a.astype(np.int64).ravel().tolist())


def _parts_to_graph(parts: dict[str, Any]) -> onnx.GraphProto:
    init_names = {name for name, _ in parts["initializers"]}
    int4 = dict(parts.get("int4", []))
    nodes = []
    for name, op_type, domain, inputs, outputs, attrs in parts["nodes"]:
        node = helper.make_node(op_type, inputs, outputs, name=name, domain=domain or None)
        for key, kind, value in attrs:
            if kind == "graph":
                node.attribute.append(helper.make_attribute(key, _parts_to_graph(value)))
                continue
            if kind == "tensor":
                value = numpy_helper.from_array(np.asarray(value))
            node.attribute.append(helper.make_attribute(key, value, attr_type=_KIND_TYPES[kind]))
        nodes.append(node)
    return helper.make_graph(
        nodes,
        parts["name"],
        [_value_info(*v) for v in parts["inputs"] if v[0] not in init_names],
        [_value_info(*v) for v in parts["outputs"]],
        initializer=[_initializer(name, np.asarray(a), int4.get(name)) for name, a in parts["initializers"]],
    )


def parts_to_proto(parts: dict[str, Any], ir_version: int | None = None, producer: str = "oxiquant") -> onnx.ModelProto:
    """Builds a ModelProto from the dict returned by `NativeModel.to_parts` (subgraph
    attributes, kind "graph", as nested parts)."""
    graph = _parts_to_graph(parts)
    opsets = [helper.make_opsetid("", int(parts["opset"]))]
    # Contrib ops of the QOperator export (QLinearAdd, QGemm ...).
    if any(domain == "com.microsoft" for _, _, domain, *_ in parts["nodes"]):
        opsets.append(helper.make_opsetid("com.microsoft", 1))
    model = helper.make_model(graph, opset_imports=opsets, producer_name=producer)
    min_ir = helper.find_min_ir_version_for(opsets[:1])
    model.ir_version = max(min_ir, ir_version or min_ir)
    return model


def write_model(model: onnx.ModelProto, path: str | os.PathLike[str]) -> Path:
    """Saves a model; weights go to an external data file beside it when the model is too
    large for one protobuf message."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    size = model.ByteSize() if model.ByteSize() < _PROTOBUF_LIMIT else _PROTOBUF_LIMIT
    if size >= _EXTERNAL_THRESHOLD:
        onnx.save_model(
            model,
            str(path),
            save_as_external_data=True,
            all_tensors_to_one_file=True,
            location=path.name + ".data",
        )
    else:
        onnx.save_model(model, str(path))
    return path
