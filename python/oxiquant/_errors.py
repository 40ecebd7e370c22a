"""The exception hierarchy. The classes are defined once, in the native module, and
re-exported here so that `except oxiquant.OxiquantError` catches everything oxiquant raises."""

from oxiquant._native import (
    InternalError,
    InvalidArgumentError,
    ModelFormatError,
    OxiquantError,
    ShapeError,
    UnsupportedOpError,
)

__all__ = [
    "InternalError",
    "InvalidArgumentError",
    "ModelFormatError",
    "OxiquantError",
    "ShapeError",
    "UnsupportedOpError",
]
