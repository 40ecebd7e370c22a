"""oxiquant: post-training quantization of ONNX networks on a Rust CPU engine.

import oxiquant
model = oxiquant.load("resnet20.onnx")
out = model.run(x)            # dict of output name -> numpy array
qmodel = oxiquant.quantize_network(model, nb_bits=8, calibration_set=calib)
print(oxiquant.format_report(oxiquant.layer_report(model, qmodel, calib[:16])))
"""

import os as _os

# The engine allocates activation buffers of up to hundreds of MB at every node. Its
# allocator (mimalloc) would hand freed ones back to the OS after 10 ms and page-fault them
# in again on the next run (kernel page clearing: benches/RESULTS.md, "Measured design
# choices (fp32)"); keep them for reuse instead, as onnxruntime's arena does. Set before the native module
# loads, when mimalloc reads its options; a MIMALLOC_PURGE_DELAY of the user's own wins.
_os.environ.setdefault("MIMALLOC_PURGE_DELAY", "-1")

from oxiquant._errors import (
    InternalError,
    InvalidArgumentError,
    ModelFormatError,
    OxiquantError,
    ShapeError,
    UnsupportedOpError,
)
from oxiquant._native import MAX_OPSET, get_num_threads, integer_kernel, set_num_threads
from oxiquant._native import __version__ as __version__
from oxiquant.model import Model, load
from oxiquant.ptq import (
    adjust_ranges,
    affine_layers,
    compute_ranges,
    equalize_layers,
    exclude_layers,
    insert_scaling_nodes,
    normalize_activations,
    normalize_parameters,
    prepare_network,
    quantize_network,
    quantize_normalized_network,
    round_weights,
    split_outlier_channels,
)
from oxiquant.report import format_report, layer_report

__all__ = [
    "MAX_OPSET",
    "InternalError",
    "InvalidArgumentError",
    "Model",
    "ModelFormatError",
    "OxiquantError",
    "ShapeError",
    "UnsupportedOpError",
    "adjust_ranges",
    "affine_layers",
    "compute_ranges",
    "equalize_layers",
    "exclude_layers",
    "format_report",
    "get_num_threads",
    "insert_scaling_nodes",
    "integer_kernel",
    "layer_report",
    "load",
    "normalize_activations",
    "normalize_parameters",
    "prepare_network",
    "quantize_network",
    "quantize_normalized_network",
    "round_weights",
    "set_num_threads",
    "split_outlier_channels",
]
