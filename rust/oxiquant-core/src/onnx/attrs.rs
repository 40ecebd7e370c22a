//! ONNX-style node attributes and a reader that refuses attributes an op does not honour.

use crate::error::{Error, Result, UnsupportedEntry};
use crate::tensor::Tensor;
use std::cell::RefCell;

#[derive(Debug, Clone, PartialEq)]
pub enum AttrValue {
    Int(i64),
    Float(f32),
    String(String),
    Ints(Vec<i64>),
    Floats(Vec<f32>),
    Strings(Vec<String>),
    Tensor(Tensor),
    /// A subgraph (the branches of If, the body of Loop and Scan); its `opset` is the
    /// enclosing graph's.
    Graph(Box<super::RawGraph>),
}

impl AttrValue {
    pub fn kind(&self) -> &'static str {
        match self {
            AttrValue::Int(_) => "int",
            AttrValue::Float(_) => "float",
            AttrValue::String(_) => "string",
            AttrValue::Ints(_) => "ints",
            AttrValue::Floats(_) => "floats",
            AttrValue::Strings(_) => "strings",
            AttrValue::Tensor(_) => "tensor",
            AttrValue::Graph(_) => "graph",
        }
    }
}

/// Reads the attributes of one node. Every read marks the attribute as understood, so that
/// `finish` can refuse a model that relies on an attribute the engine would silently ignore.
pub struct AttrReader<'a> {
    pub node: &'a str,
    pub op: &'a str,
    list: &'a [(String, AttrValue)],
    seen: RefCell<Vec<bool>>,
}

impl<'a> AttrReader<'a> {
    pub fn new(node: &'a str, op: &'a str, list: &'a [(String, AttrValue)]) -> Self {
        AttrReader {
            node,
            op,
            list,
            seen: RefCell::new(vec![false; list.len()]),
        }
    }

    fn get(&self, name: &str) -> Option<&'a AttrValue> {
        let i = self.list.iter().position(|(n, _)| n == name)?;
        self.seen.borrow_mut()[i] = true;
        Some(&self.list[i].1)
    }

    fn wrong(&self, name: &str, want: &str, got: &AttrValue) -> Error {
        Error::format(format!(
            "node '{}' ({}): attribute '{name}' should be {want}, got {}",
            self.node,
            self.op,
            got.kind()
        ))
    }

    pub fn has(&self, name: &str) -> bool {
        self.list.iter().any(|(n, _)| n == name)
    }

    pub fn int_opt(&self, name: &str) -> Result<Option<i64>> {
        match self.get(name) {
            None => Ok(None),
            Some(AttrValue::Int(v)) => Ok(Some(*v)),
            Some(other) => Err(self.wrong(name, "an int", other)),
        }
    }
    pub fn int(&self, name: &str, default: i64) -> Result<i64> {
        Ok(self.int_opt(name)?.unwrap_or(default))
    }
    pub fn float_opt(&self, name: &str) -> Result<Option<f32>> {
        match self.get(name) {
            None => Ok(None),
            Some(AttrValue::Float(v)) => Ok(Some(*v)),
            Some(AttrValue::Int(v)) => Ok(Some(*v as f32)),
            Some(other) => Err(self.wrong(name, "a float", other)),
        }
    }
    pub fn float(&self, name: &str, default: f32) -> Result<f32> {
        Ok(self.float_opt(name)?.unwrap_or(default))
    }
    pub fn ints_opt(&self, name: &str) -> Result<Option<Vec<i64>>> {
        match self.get(name) {
            None => Ok(None),
            Some(AttrValue::Ints(v)) => Ok(Some(v.clone())),
            Some(AttrValue::Int(v)) => Ok(Some(vec![*v])),
            Some(other) => Err(self.wrong(name, "a list of ints", other)),
        }
    }
    /// Non-negative ints (kernel sizes, strides, pads).
    pub fn usizes_opt(&self, name: &str) -> Result<Option<Vec<usize>>> {
        match self.ints_opt(name)? {
            None => Ok(None),
            Some(v) => v
                .iter()
                .map(|&x| usize::try_from(x))
                .collect::<std::result::Result<Vec<_>, _>>()
                .map(Some)
                .map_err(|_| {
                    Error::format(format!(
                        "node '{}' ({}): attribute '{name}' must be non-negative, got {v:?}",
                        self.node, self.op
                    ))
                }),
        }
    }
    pub fn floats_opt(&self, name: &str) -> Result<Option<Vec<f32>>> {
        match self.get(name) {
            None => Ok(None),
            Some(AttrValue::Floats(v)) => Ok(Some(v.clone())),
            Some(AttrValue::Ints(v)) => Ok(Some(v.iter().map(|&x| x as f32).collect())),
            Some(other) => Err(self.wrong(name, "a list of floats", other)),
        }
    }
    pub fn string_opt(&self, name: &str) -> Result<Option<String>> {
        match self.get(name) {
            None => Ok(None),
            Some(AttrValue::String(v)) => Ok(Some(v.clone())),
            Some(other) => Err(self.wrong(name, "a string", other)),
        }
    }
    pub fn string(&self, name: &str, default: &str) -> Result<String> {
        Ok(self.string_opt(name)?.unwrap_or_else(|| default.to_string()))
    }
    pub fn strings_opt(&self, name: &str) -> Result<Option<Vec<String>>> {
        match self.get(name) {
            None => Ok(None),
            Some(AttrValue::Strings(v)) => Ok(Some(v.clone())),
            Some(other) => Err(self.wrong(name, "a list of strings", other)),
        }
    }
    pub fn tensor_opt(&self, name: &str) -> Result<Option<Tensor>> {
        match self.get(name) {
            None => Ok(None),
            Some(AttrValue::Tensor(t)) => Ok(Some(t.clone())),
            Some(other) => Err(self.wrong(name, "a tensor", other)),
        }
    }
    /// A required subgraph attribute.
    pub fn graph(&self, name: &str) -> Result<super::RawGraph> {
        match self.get(name) {
            None => Err(Error::format(format!(
                "node '{}' ({}): the subgraph attribute '{name}' is missing",
                self.node, self.op
            ))),
            Some(AttrValue::Graph(g)) => Ok((**g).clone()),
            Some(other) => Err(self.wrong(name, "a graph", other)),
        }
    }
    /// Marks attributes that are valid but change nothing for inference (e.g. Dropout's ratio).
    pub fn ignore(&self, names: &[&str]) {
        for n in names {
            let _ = self.get(n);
        }
    }

    /// An unsupported-op error for this node, with a reason.
    pub fn unsupported(&self, reason: impl Into<String>) -> Error {
        Error::UnsupportedOp(vec![UnsupportedEntry {
            op_type: self.op.to_string(),
            domain: String::new(),
            first_node: self.node.to_string(),
            count: 1,
            reason: reason.into(),
        }])
    }

    /// Fails if an attribute was never read: the op would ignore it and compute something else.
    pub fn finish(&self) -> Result<()> {
        let seen = self.seen.borrow();
        let unread: Vec<&str> = self
            .list
            .iter()
            .zip(seen.iter())
            .filter(|(_, s)| !**s)
            .map(|((n, _), _)| n.as_str())
            .collect();
        if unread.is_empty() {
            Ok(())
        } else {
            Err(self.unsupported(format!("attribute(s) {unread:?} not supported")))
        }
    }
}
