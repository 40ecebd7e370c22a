"""`Model`: a network held by the Rust core, with ONNX in and out."""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Union

import numpy as np
import onnx
import onnx.version_converter
from onnx import helper

from oxiquant import onnx_io
from oxiquant._errors import InvalidArgumentError, ModelFormatError, ShapeError
from oxiquant._native import NativeModel

Inputs = Union[np.ndarray, Mapping[str, np.ndarray], Sequence[np.ndarray]]

#: The forms `Model.to_onnx` / `Model.save` can write (the command line offers these).
EXPORT_FORMATS = ("fake", "qdq", "qoperator")
#: The first ai.onnx opset with per-channel QuantizeLinear; quantization raises older models to it.
QDQ_MIN_OPSET = 13


def _dtype_name(elem: int) -> str:
    return str(helper.tensor_dtype_to_np_dtype(elem))


def _shape_str(shape: list[Any] | None) -> str:
    if shape is None:
        return "[any]"
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


class Model:
    """A neural network loaded into oxiquant's engine. Build one with `oxiquant.load`."""

    # Set by `quantize_network(weight_bits_budget=...)` and `(activation_bits_budget=...)`;
    # shown as quant_info["bit_allocation"] and quant_info["activation_bit_allocation"].
    _bit_allocation: dict[str, Any] | None = None
    _activation_allocation: dict[str, Any] | None = None

    def __init__(
        self, native: NativeModel, ir_version: int | None = None, float_types: Mapping[str, np.dtype] | None = None
    ) -> None:
        self._native = native
        self._ir_version = ir_version
        self._float_types = dict(float_types or {})

    @property
    def float_types(self) -> dict[str, str]:
        """Graph inputs and outputs the model declares float16 or float64: the engine computes
        them in float32; `run` takes and returns them in the declared type."""
        return {k: str(v) for k, v in self._float_types.items()}

    # -- inspection --------------------------------------------------------------------
    @property
    def input_names(self) -> list[str]:
        """Names of the inputs `run` needs."""
        return list(self._native.input_names)

    @property
    def output_names(self) -> list[str]:
        return list(self._native.output_names)

    @property
    def inputs(self) -> list[tuple[str, str, list[Any] | None]]:
        """(name, numpy dtype name, shape) of each input; symbolic dims are str or None."""
        return [(n, self._declared(n, e), s) for n, e, s in self._native.inputs]

    def _declared(self, name: str, elem: int) -> str:
        t = self._float_types.get(name)
        return str(t) if t is not None else _dtype_name(elem)

    def op_counts(self) -> dict[str, int]:
        return dict(self._native.summary()["op_counts"])

    @property
    def num_parameters(self) -> int:
        return int(self._native.summary()["num_parameters"])

    def summary(self) -> str:
        """A human-readable description: inputs, outputs, op counts, parameter count."""
        s = self._native.summary()
        lines = [
            f"Model '{s['name']}' (ai.onnx opset {s['opset']}): {s['num_nodes']} nodes, "
            f"{s['num_parameters']:,} parameters"
        ]
        for n, e, shape in s["inputs"]:
            lines.append(f"  input  {n}: {self._declared(n, e)} {_shape_str(shape)}")
        for n, e, shape in s["outputs"]:
            lines.append(f"  output {n}: {self._declared(n, e)} {_shape_str(shape)}")
        if self._float_types:
            kinds = " and ".join(sorted({str(t) for t in self._float_types.values()}))
            lines.append(f"  {kinds} values are computed in float32")
        ops = ", ".join(f"{k} x{v}" for k, v in sorted(s["op_counts"].items(), key=lambda kv: (-kv[1], kv[0])))
        lines.append(f"  ops: {ops}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        s = self._native.summary()
        return (
            f"<oxiquant.Model '{s['name']}': {s['num_nodes']} nodes, {s['num_parameters']:,} parameters, "
            f"inputs {self.input_names}, outputs {self.output_names}>"
        )

    @property
    def quant_info(self) -> dict[str, Any]:
        """The quantization state as plain data: `stage`, `activations` (per Scaling node: role,
        tensor, range, clip, clipping, bits, signed, scale, step, codes: the lowest and highest
        integer of its grid), `weights` (per affine node:
        weight_scale, weight_bits, weight_clip), `float_nodes` (node, op, why it stays float),
        `warnings`, `equalization` (what `equalize_layers` did, or None), `bit_allocation`
        (per layer: weight count, sensitivity and width, when `weight_bits_budget` chose them)
        and `activation_bit_allocation` (per group of quantizers sharing a width: its
        quantizers, activation elements, sensitivity and width, when `activation_bits_budget`
        chose them)."""
        info = dict(self._native.ptq_info())
        info["bit_allocation"] = self._bit_allocation
        info["activation_bit_allocation"] = self._activation_allocation
        return info

    @property
    def is_quantized(self) -> bool:
        return self._native.ptq_info()["stage"] == "quantized"

    # -- running -----------------------------------------------------------------------
    def _feeds(self, inputs: Inputs) -> dict[str, np.ndarray]:
        names = self.input_names
        if isinstance(inputs, np.ndarray):
            if len(names) != 1:
                raise ShapeError(f"the model has {len(names)} inputs {names}; pass a dict of arrays")
            feeds = {names[0]: inputs}
        elif isinstance(inputs, Mapping):
            feeds = dict(inputs)
        elif isinstance(inputs, Sequence) and not isinstance(inputs, (str, bytes)):
            if len(inputs) != len(names):
                raise ShapeError(f"got {len(inputs)} arrays for the model's {len(names)} inputs {names}")
            feeds = dict(zip(names, inputs))
        else:
            raise ShapeError(f"inputs must be a numpy array, a dict or a list of arrays, got {type(inputs).__name__}")
        expected = {n: self._declared(n, e) for n, e, _ in self._native.inputs}
        out = {}
        for k, v in feeds.items():
            arr = np.asarray(v)
            want = expected.get(k)
            if k in self._float_types and arr.dtype in (self._float_types[k], np.float32):
                arr = arr.astype(np.float32)
            elif want is not None and arr.dtype != np.dtype(want):
                raise ShapeError(f"input '{k}' expects {want}, got {arr.dtype} (convert it, e.g. x.astype(np.{want}))")
            out[k] = arr
        return out

    def run(
        self,
        inputs: Inputs,
        num_threads: int | None = None,
        fetch: Sequence[str] | None = None,
        mode: str | None = None,
    ) -> dict[str, np.ndarray]:
        """Runs the model; returns {output name: array}.

        `inputs` is one array (single-input models), a dict name -> array, or a list of arrays in
        input order. `num_threads` defaults to `oxiquant.get_num_threads()`. `fetch` names
        intermediate values to return as well (e.g. the tensors listed in `quant_info`). The GIL
        is released while the engine runs.

        For a quantized model, `mode` picks the arithmetic: "int" (the default when the
        integer engine can hold the model, see `engine`): i8/u8 activations, i8 weights, i32
        accumulators and exact fixed-point requantization; "fake": the same quantized graph
        computed in f32 (integers held in floats). Both give the same values wherever the f32
        sums are exact (docs/integer-engine.md). For a QDQ / QOperator model quantized by
        another tool, "int" runs it on the integer engine (onnxruntime's rounding) and "fake"
        runs the graph as loaded, each quantized op evaluated as ONNX defines it."""
        names = None if fetch is None else [str(n) for n in fetch]
        out = dict(self._native.run(self._feeds(inputs), num_threads, names, mode))
        for k, t in self._float_types.items():
            if k in out:
                out[k] = out[k].astype(t)
        return out

    @property
    def engine(self) -> str:
        """What `run` uses by default: "int" (the integer engine; also for QDQ / QOperator
        models quantized by other tools), "fake" (a quantized model the integer engine cannot
        hold, e.g. wider than 8 bits: see `engine_note`) or "float"."""
        return self._native.engine()[0]

    @property
    def engine_note(self) -> str | None:
        """Why a quantized model does not run on the integer engine, or, for a model
        quantized by another tool, which nodes run in float between a Dequantize and a
        Quantize and why (None when everything runs on integers)."""
        return self._native.engine()[1]

    # -- ONNX out ----------------------------------------------------------------------
    def to_onnx(self, format: str = "fake", weight_type: str = "auto") -> onnx.ModelProto:
        """The model as an ONNX ModelProto.

        For a quantized model, `format` picks the form: "fake" (default; quantizers as
        Mul/Round/Clip on integer-valued floats, the arithmetic of `run(mode="fake")`) or
        "qdq" (QuantizeLinear/DequantizeLinear pairs, 8-bit weights, int32 biases: standard
        quantized ONNX that onnxruntime runs with its integer kernels; up to 8 bits, opset
        >= 13) or "qoperator" (the integer engine's graph as QLinearConv, QLinearMatMul and
        com.microsoft QGemm / QLinearAdd / QLinearAveragePool / QLinearGlobalAveragePool, for
        runtimes that only run integer operators). `weight_type` for "qdq" and "qoperator":
        "auto" (default: "int8" when every weight lies within +-64, as with `weight_bits=7` or
        fewer, else "uint8"; both exact), "uint8" (the weight plus 128 with zero point 128,
        which onnxruntime multiplies exactly on every CPU) or "int8" (onnxruntime's fastest x86
        kernels; without VNNI they sum u8 x s8 pairs into saturating int16, which 8-bit
        weights can overflow, 7-bit ones cannot). A float model is the same in every format."""
        # The core checks `format` and `weight_type`, and that the model can take the format.
        return onnx_io.parts_to_proto(self._native.to_parts(format, weight_type), self._ir_version)

    def save(self, path: str | os.PathLike[str], format: str = "fake", weight_type: str = "auto") -> Path:
        """Writes the model as an ONNX file (weights go to external data past 1 GiB); returns
        the path, so that `oxiquant.load(m.save(p))` round-trips. `format` and `weight_type`
        as in `to_onnx`."""
        return onnx_io.write_model(self.to_onnx(format, weight_type), path)

    def _raise_opset(self, opset: int) -> None:
        """Converts a float model below `opset` to it with `onnx.version_converter`, warning."""
        old = int(self._native.summary()["opset"])
        if old >= opset:
            return
        if self.is_quantized:
            raise InvalidArgumentError(f"the model is already quantized at opset {old}; convert the float model")
        try:
            converted = onnx.version_converter.convert_version(self.to_onnx("fake"), opset)
        except Exception as e:  # the converter raises RuntimeError and ValidationError
            raise ModelFormatError(
                f"the model is at ai.onnx opset {old}; quantization needs opset {opset} (per-channel "
                f"QuantizeLinear) and onnx.version_converter could not convert it: {e}"
            ) from None
        native = NativeModel.from_parts(**onnx_io.proto_to_parts(converted))
        native.fold_constants()
        self._native = native
        warnings.warn(
            f"oxiquant: the model was converted from ai.onnx opset {old} to {opset} "
            "(onnx.version_converter) so that its quantized form can be exported as QDQ / QOperator",
            stacklevel=3,
        )

    def copy(self) -> Model:
        c = Model(self._native.copy(), self._ir_version, self._float_types)
        c._bit_allocation, c._activation_allocation = self._bit_allocation, self._activation_allocation
        return c

    def __copy__(self) -> Model:
        return self.copy()

    def __deepcopy__(self, memo: dict[int, Any]) -> Model:
        return self.copy()


def load(source: onnx_io.ModelSource, fold_constants: bool = True) -> Model:
    """Loads an ONNX model (a path, raw bytes or an onnx.ModelProto; external data included).

    Constant subgraphs (Constant, ConstantOfShape, Shape/Gather chains over static shapes) are
    folded unless `fold_constants=False`. Raises `UnsupportedOpError` listing every op type the
    engine cannot run with its first node, or `ModelFormatError` for an invalid model."""
    proto = onnx_io.read_model(source)
    native = NativeModel.from_parts(**onnx_io.proto_to_parts(proto))
    if fold_constants:
        native.fold_constants()
    return Model(native, int(proto.ir_version) or None, onnx_io.float_types(proto))
