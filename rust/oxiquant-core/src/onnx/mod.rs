//! ONNX interop: ONNX-shaped graphs in and out (`graph_io`; the protobuf itself is read and
//! written on the Python side), node attributes (`attrs`), the QDQ and QOperator exports,
//! the import of models quantized by other tools, and onnxruntime's rounding rules that the
//! exports and the import follow.

pub mod attrs;
pub mod export_qdq;
pub mod export_qop;
pub mod graph_io;
pub mod import_quantized;
pub mod ort_rounding;

pub use attrs::{AttrReader, AttrValue};
pub use graph_io::{RawGraph, RawNode, MIN_OPSET};
