"""oxiquant: post-training quantization of ONNX networks on a Rust CPU engine.

import oxiquant
model = oxiquant.load("resnet20.onnx")
out = model.run(x)            # dict of output name -> numpy array
"""

from oxiquant._errors import (
    InternalError,
    InvalidArgumentError,
    ModelFormatError,
    OxiquantError,
    ShapeError,
    UnsupportedOpError,
)
from oxiquant._native import MAX_OPSET, get_num_threads, set_num_threads
from oxiquant._native import __version__ as __version__
from oxiquant.model import Model, load

__all__ = [
    "MAX_OPSET",
    "InternalError",
    "InvalidArgumentError",
    "Model",
    "ModelFormatError",
    "OxiquantError",
    "ShapeError",
    "UnsupportedOpError",
    "get_num_threads",
    "load",
    "set_num_threads",
]
