"""Type stub of the native module `oxiquant._native` (hand-written; checked against the module
by tests/test_stub.py)."""

from typing import Any, Optional

import numpy as np

__version__: str
MAX_OPSET: int

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

ValueInfo = tuple[str, int, Optional[list[Any]]]
NodeParts = tuple[str, str, str, list[str], list[str], list[tuple[str, str, Any]]]

class NativeModel:
    """A network held by the Rust core."""

    @staticmethod
    def from_parts(
        name: str,
        opset: int,
        nodes: list[NodeParts],
        initializers: list[tuple[str, np.ndarray]],
        inputs: list[ValueInfo],
        outputs: list[ValueInfo],
    ) -> NativeModel: ...
    def to_parts(self, format: str = "fake", weight_type: str = "uint8") -> dict[str, Any]: ...
    def run(
        self,
        feeds: dict[str, np.ndarray],
        num_threads: Optional[int] = None,
        fetch: Optional[list[str]] = None,
        mode: Optional[str] = None,
    ) -> dict[str, np.ndarray]: ...
    def engine(self) -> tuple[str, Optional[str]]: ...
    def plan_op_counts(self) -> dict[str, int]: ...
    def int_op_counts(self) -> dict[str, int]: ...
    def fold_constants(self) -> int: ...
    def summary(self) -> dict[str, Any]: ...
    @property
    def input_names(self) -> list[str]: ...
    @property
    def output_names(self) -> list[str]: ...
    @property
    def inputs(self) -> list[ValueInfo]: ...
    def ptq_prepare(self) -> dict[str, int]: ...
    def ptq_insert_scaling_nodes(self) -> None: ...
    def ptq_normalize_parameters(self, per_channel: bool) -> None: ...
    def ptq_calibration_begin(self, histograms: bool = True) -> None: ...
    def ptq_calibration_batches(
        self, batches: list[dict[str, np.ndarray]], num_threads: Optional[int] = None
    ) -> None: ...
    def ptq_calibration_finish(self) -> None: ...
    def ptq_calibration_abort(self) -> None: ...
    def ptq_adjust_ranges(
        self, clipping: str, nb_bits: int, optimize_signs: bool, num_threads: Optional[int] = None
    ) -> None: ...
    def ptq_normalize_activations(self) -> None: ...
    def ptq_quantize(
        self,
        act_bits: int,
        weight_bits: int,
        optimize_signs: bool,
        single_shift: bool,
        no_quant: bool,
        dequantize_outputs: bool,
        weight_clipping: str,
    ) -> None: ...
    def ptq_info(self) -> dict[str, Any]: ...
    def ptq_scales(self) -> dict[str, list[float]]: ...
    def ptq_units(self) -> dict[str, list[float]]: ...
    def copy(self) -> NativeModel: ...
    def __deepcopy__(self, memo: Any) -> NativeModel: ...

def clip_from_values(
    values: list[float], method: str, nb_bits: int, signed: bool
) -> tuple[float, list[int], list[int], float]: ...
def set_num_threads(n: Optional[int] = None) -> None: ...
def get_num_threads() -> int: ...
def integer_kernel() -> str: ...
