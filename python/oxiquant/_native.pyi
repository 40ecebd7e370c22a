"""Type stub of the native module `oxiquant._native` (hand-written; checked against the module
by tests/test_stub.py and by `python -m mypy.stubtest oxiquant._native` in scripts/test.sh)."""

from typing import Any, Literal, Optional, Union, final

import numpy as np
from typing_extensions import TypeAlias

__all__ = [
    "CLIPPING_METHODS",
    "MAX_OPSET",
    "PRESETS",
    "REGISTERED_OPS",
    "InternalError",
    "InvalidArgumentError",
    "ModelFormatError",
    "NativeModel",
    "OxiquantError",
    "ShapeError",
    "UnsupportedOpError",
    "__version__",
    "_guard_selftest",
    "check_bits",
    "check_quantize_options",
    "clip_from_values",
    "get_num_threads",
    "integer_kernel",
    "set_num_threads",
]

__version__: str
MAX_OPSET: int
REGISTERED_OPS: list[tuple[str, str, int, int]]
CLIPPING_METHODS: list[str]
PRESETS: list[str]

# The strings the bindings accept (rust/oxiquant-py/src/lib.rs; clipping names are parsed by
# `Clipping::parse`, which also takes them in upper case).
_ExportFormat: TypeAlias = Literal["fake", "qdq", "qoperator"]
_WeightType: TypeAlias = Literal["auto", "uint8", "int8"]
_RunMode: TypeAlias = Literal["int", "fake"]
_Clipping: TypeAlias = Literal["max", "mse", "kl", "entropy", "sigma3", "sigma4", "sigma5", "percentile"]
_WeightClipping: TypeAlias = Literal["max", "mse"]

class OxiquantError(Exception):
    """Base class of every error oxiquant raises."""

class UnsupportedOpError(OxiquantError):
    """The model uses ops oxiquant cannot run."""

    unsupported: list[tuple[str, str, int, str]]
    """(op_type, first_node, count, reason) for each unsupported op type."""

class ModelFormatError(OxiquantError):
    """The model file or graph is unreadable or invalid."""

class ShapeError(OxiquantError):
    """A tensor has the wrong shape or dtype."""

class InvalidArgumentError(OxiquantError):
    """An argument is outside its domain."""

class InternalError(OxiquantError):
    """A bug in oxiquant (a caught Rust panic)."""

# (name, ONNX element type, shape or None)
_ValueInfo: TypeAlias = tuple[str, int, Optional[list[Any]]]
# (name, op_type, domain, inputs, outputs, [(attribute name, kind, value)]); the attribute
# kinds are those of `oxiquant.onnx_io` ("int", "float", "string", "tensor", lists ...).
_NodeParts: TypeAlias = tuple[str, str, str, list[str], list[str], list[tuple[str, str, Any]]]

@final
class NativeModel:
    """A network held by the Rust core."""

    @staticmethod
    def from_parts(
        name: str,
        opset: int,
        nodes: list[_NodeParts],
        initializers: list[tuple[str, np.ndarray]],
        inputs: list[_ValueInfo],
        outputs: list[_ValueInfo],
    ) -> NativeModel: ...
    def to_parts(self, format: _ExportFormat = "fake", weight_type: _WeightType = "auto") -> dict[str, Any]: ...
    def run(
        self,
        feeds: dict[str, np.ndarray],
        num_threads: Optional[int] = None,
        fetch: Optional[list[str]] = None,
        mode: Optional[_RunMode] = None,
    ) -> dict[str, np.ndarray]: ...
    def engine(self) -> tuple[Literal["int", "fake", "float"], Optional[str]]: ...
    def plan_op_counts(self) -> dict[str, int]: ...
    def int_op_counts(self) -> dict[str, int]: ...
    def fold_constants(self) -> int: ...
    def summary(self) -> dict[str, Any]: ...
    @property
    def input_names(self) -> list[str]: ...
    @property
    def output_names(self) -> list[str]: ...
    @property
    def inputs(self) -> list[_ValueInfo]: ...
    def value_names(self) -> list[str]: ...
    def quantizers(self) -> list[dict[str, Any]]:
        """Every Scaling node in graph order: "name", "reads", "writes", "step" (None when it
        does not quantize), and the keys of `ptq_info()["activations"]` when it has them."""
    def ptq_prepare(self) -> dict[str, int]: ...
    def ptq_equalize(self, max_sweeps: int = 100, tolerance: float = 1e-4) -> dict[str, Any]: ...
    def ptq_split_channels_begin(self) -> list[str]: ...
    def ptq_split_channels_batches(
        self, batches: list[dict[str, np.ndarray]], num_threads: Optional[int] = None
    ) -> None: ...
    def ptq_split_channels_finish(self, ratio: float) -> dict[str, Any]: ...
    def ptq_exclude(self, names: list[str]) -> None: ...
    def ptq_insert_scaling_nodes(self) -> None: ...
    def ptq_normalize_parameters(self, per_channel: bool) -> None: ...
    def ptq_calibration_begin(self, histograms: bool = True, layer_samples: int = 0) -> None: ...
    def ptq_calibration_batches(
        self, batches: list[dict[str, np.ndarray]], num_threads: Optional[int] = None
    ) -> None: ...
    def ptq_calibration_finish(self) -> None: ...
    def ptq_calibration_abort(self) -> None: ...
    def ptq_adjust_ranges(
        self,
        clipping: _Clipping,
        nb_bits: int,
        optimize_signs: bool,
        num_threads: Optional[int] = None,
        activation_bits: Optional[dict[str, int]] = None,
    ) -> None: ...
    def ptq_input_quantizer(self, node: str) -> Optional[str]: ...
    def ptq_quantizer_widths(self, asked: dict[str, int]) -> dict[str, int]: ...
    def ptq_activation_groups(self) -> list[list[str]]: ...
    def ptq_normalize_activations(self) -> None: ...
    def ptq_round_weights(
        self,
        weight_bits: int,
        weight_clipping: _WeightClipping,
        gptq: bool,
        bias_correction: bool,
        layer_bits: Optional[dict[str, int]] = None,
        damp: float = 0.01,
        num_threads: Optional[int] = None,
        input_batches: Optional[list[dict[str, Any]]] = None,
        act_bits: Optional[int] = None,
        optimize_signs: bool = True,
        single_shift: bool = False,
    ) -> None: ...
    def ptq_affine_nodes(self) -> list[str]: ...
    def ptq_quantize(
        self,
        act_bits: int,
        weight_bits: Optional[int],
        optimize_signs: bool,
        single_shift: bool,
        no_quant: bool,
        dequantize_outputs: bool,
        weight_clipping: _WeightClipping,
        layer_bits: Optional[dict[str, int]] = None,
    ) -> None: ...
    def ptq_info(self) -> dict[str, Any]: ...
    def ptq_scales(self) -> dict[str, list[float]]: ...
    def ptq_units(self) -> dict[str, list[float]]: ...
    def copy(self) -> NativeModel: ...
    def __deepcopy__(self, memo: Any) -> NativeModel: ...

def clip_from_values(
    values: list[float], method: _Clipping, nb_bits: int, signed: bool
) -> tuple[float, list[int], list[int], float]: ...
def check_quantize_options(
    nb_bits: int,
    clipping: Optional[_Clipping] = None,
    weight_bits: Optional[int] = None,
    weight_clipping: Optional[_WeightClipping] = None,
    preset: Literal["best", "aidge"] = "best",
    per_channel: Optional[bool] = None,
    optimize_signs: Optional[bool] = None,
    gptq: Optional[bool] = None,
    bias_correction: Optional[bool] = None,
    input_aware: Optional[bool] = None,
    split_channels: Optional[Union[float, bool]] = None,
) -> dict[str, Any]:
    """Checks `quantize_network`'s arguments and fills in the ones left as None from the
    preset: {preset, nb_bits, weight_bits, clipping, weight_clipping, per_channel,
    optimize_signs, histograms, gptq, bias_correction, input_aware, split_channels}."""

def check_bits(value: int, what: str = "nb_bits") -> int: ...
def set_num_threads(n: Optional[int] = None) -> None: ...
def get_num_threads() -> int: ...
def integer_kernel() -> Literal["reference", "avx2", "avxvnni", "avx512vnni"]: ...
def _guard_selftest(in_pool: bool = False) -> None:
    """Test hook: panics on purpose inside the panic guard (in a rayon worker when `in_pool`),
    which must come out as `InternalError` with the process intact."""
