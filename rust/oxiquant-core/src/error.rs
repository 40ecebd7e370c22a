//! The one error type of the core. Every message names what went wrong and where (node, op,
//! shape), because it is what the Python user reads.

use thiserror::Error;

/// Errors raised by the core. The bindings map each variant to an `OxiquantError` subclass.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum Error {
    /// One or more ops the engine does not implement; one entry per op type with the first
    /// node that uses it.
    #[error("unsupported op(s): {}", format_unsupported(.0))]
    UnsupportedOp(Vec<UnsupportedEntry>),

    /// The model itself is malformed (dangling edge, cycle, duplicate name, bad attribute).
    #[error("invalid model: {0}")]
    ModelFormat(String),

    /// A tensor does not have the shape or dtype an op or the model expects.
    #[error("shape error: {0}")]
    Shape(String),

    /// A node failed while running; wraps the cause with the node's name and op.
    #[error("node '{node}' ({op}): {source}")]
    Node {
        node: String,
        op: String,
        #[source]
        source: Box<Error>,
    },

    /// An argument given by the caller is out of its domain (a thread count of 0, ...).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

/// One unsupported op type and where it first appears.
#[derive(Debug, Clone, PartialEq)]
pub struct UnsupportedEntry {
    pub op_type: String,
    pub domain: String,
    pub first_node: String,
    pub count: usize,
    pub reason: String,
}

fn format_unsupported(entries: &[UnsupportedEntry]) -> String {
    entries
        .iter()
        .map(|e| {
            let dom = if e.domain.is_empty() || e.domain == "ai.onnx" {
                String::new()
            } else {
                format!("{}::", e.domain)
            };
            let mut s = format!(
                "{dom}{} ({} node{}, first '{}')",
                e.op_type,
                e.count,
                if e.count == 1 { "" } else { "s" },
                e.first_node
            );
            if !e.reason.is_empty() {
                s.push_str(": ");
                s.push_str(&e.reason);
            }
            s
        })
        .collect::<Vec<_>>()
        .join("; ")
}

impl Error {
    pub fn shape(msg: impl Into<String>) -> Self {
        Error::Shape(msg.into())
    }
    pub fn format(msg: impl Into<String>) -> Self {
        Error::ModelFormat(msg.into())
    }
    /// Attach the node and op that were running when `self` happened.
    pub fn at_node(self, node: &str, op: &str) -> Self {
        match self {
            // Already located: keep the innermost location.
            e @ Error::Node { .. } => e,
            e => Error::Node {
                node: node.to_string(),
                op: op.to_string(),
                source: Box::new(e),
            },
        }
    }
    /// The variant that decides the Python exception class (looks through `Node`).
    pub fn kind(&self) -> &Error {
        match self {
            Error::Node { source, .. } => source.kind(),
            e => e,
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;
