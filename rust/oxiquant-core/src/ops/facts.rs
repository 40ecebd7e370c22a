//! What is known of a value before the graph runs: its element type and its shape, each
//! possibly unknown, dimensions possibly symbolic (a batch size `N`). Each op states how its
//! outputs follow from its inputs' facts ([`super::Op::output_facts`]); `Graph::infer_facts`
//! propagates them from the declared inputs and the initializers through the nodes.
//!
//! The rule every op follows: when the inputs' facts are concrete (known dtype and shape,
//! which is what a tensor gives) and the inputs that set a shape (Reshape's `shape`, Slice's
//! `starts`, ...) are constants, the facts of the outputs are exactly the dtype and shape
//! that `eval` returns; with less known, whatever is stated is still what `eval` returns when
//! it succeeds. A fact contradicting the op (a Conv whose weight does not fit its input's
//! channels) is an `Error::Shape` naming the op and what it expected.

use crate::error::{Error, Result};
use crate::graph::{Dim, ValueInfo};
use crate::tensor::{DType, Tensor};
use std::fmt;

/// One dimension of a value before running.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum DimFact {
    Known(usize),
    /// A named free dimension (the batch size `N` of a declared input): the same name is the
    /// same size wherever it appears.
    Symbol(String),
    Unknown,
}

impl DimFact {
    pub fn known(&self) -> Option<usize> {
        match self {
            DimFact::Known(d) => Some(*d),
            _ => None,
        }
    }
}

impl From<&Dim> for DimFact {
    /// A declared dimension: fixed is known, named is a symbol, unnamed ("") is unknown.
    fn from(d: &Dim) -> DimFact {
        match d {
            Dim::Fixed(n) => DimFact::Known(*n),
            Dim::Symbolic(s) if s.is_empty() => DimFact::Unknown,
            Dim::Symbolic(s) => DimFact::Symbol(s.clone()),
        }
    }
}

impl fmt::Display for DimFact {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DimFact::Known(d) => write!(f, "{d}"),
            DimFact::Symbol(s) => f.write_str(s),
            DimFact::Unknown => f.write_str("?"),
        }
    }
}

/// What is known of a value before running: `None` is unknown (for `shape`: even the rank).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ValueFact {
    pub dtype: Option<DType>,
    pub shape: Option<Vec<DimFact>>,
}

impl ValueFact {
    /// Nothing known.
    pub fn unknown() -> ValueFact {
        ValueFact::default()
    }

    pub fn new(dtype: Option<DType>, shape: Option<Vec<DimFact>>) -> ValueFact {
        ValueFact { dtype, shape }
    }

    /// A known dtype and a concrete shape.
    pub fn concrete(dtype: DType, shape: &[usize]) -> ValueFact {
        ValueFact::new(Some(dtype), Some(shape.iter().map(|&d| DimFact::Known(d)).collect()))
    }

    /// What a tensor is.
    pub fn of_tensor(t: &Tensor) -> ValueFact {
        ValueFact::concrete(t.dtype(), t.shape())
    }

    /// What a graph input or output declares.
    pub fn of_value_info(v: &ValueInfo) -> ValueFact {
        ValueFact::new(
            Some(v.dtype),
            v.shape.as_ref().map(|s| s.iter().map(DimFact::from).collect()),
        )
    }

    pub fn rank(&self) -> Option<usize> {
        self.shape.as_ref().map(Vec::len)
    }

    /// The dimensions when every one is known.
    pub fn concrete_shape(&self) -> Option<Vec<usize>> {
        self.shape.as_ref()?.iter().map(DimFact::known).collect()
    }

    /// Dimension `d` (`Unknown` when the shape is unknown).
    pub fn dim(&self, d: usize) -> DimFact {
        self.shape
            .as_ref()
            .and_then(|s| s.get(d).cloned())
            .unwrap_or(DimFact::Unknown)
    }

    /// The element count when every dimension is known.
    pub fn numel(&self) -> Option<usize> {
        self.concrete_shape().map(|s| crate::tensor::numel(&s))
    }

    /// Whether `t` is consistent with everything this states (symbols are free).
    pub fn admits(&self, t: &Tensor) -> bool {
        self.dtype.is_none_or(|d| d == t.dtype())
            && self.shape.as_ref().is_none_or(|s| {
                s.len() == t.rank() && s.iter().zip(t.shape()).all(|(f, &n)| f.known().is_none_or(|k| k == n))
            })
    }

    /// The shape as `[N, 3, ?]`, `[any]` when not even the rank is known.
    pub fn shape_string(&self) -> String {
        match &self.shape {
            None => "[any]".into(),
            Some(s) => format!("[{}]", s.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")),
        }
    }
}

impl fmt::Display for ValueFact {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.dtype {
            Some(d) => write!(f, "{d} {}", self.shape_string()),
            None => write!(f, "? {}", self.shape_string()),
        }
    }
}

// ---- helpers for the ops' `output_facts` ----

/// A shape error naming the op.
pub(crate) fn fact_error(op: &str, msg: impl fmt::Display) -> Error {
    Error::shape(format!("{op}: {msg}"))
}

/// Names the op in a shape error raised by a helper shared with `eval` (whose message says
/// what was expected but not which op expected it).
pub(crate) fn in_op(op: &'static str) -> impl Fn(Error) -> Error {
    move |e| match e {
        Error::Shape(m) if !m.starts_with(op) => Error::Shape(format!("{op}: {m}")),
        e => e,
    }
}

/// The fact of required input `i`, or an error naming it.
pub(crate) fn required<'a>(inputs: &[Option<&'a ValueFact>], i: usize, op: &str, name: &str) -> Result<&'a ValueFact> {
    inputs
        .get(i)
        .copied()
        .flatten()
        .ok_or_else(|| fact_error(op, format!("missing required input #{i} ({name})")))
}

/// The fact of optional input `i` (`None` when omitted).
pub(crate) fn optional<'a>(inputs: &[Option<&'a ValueFact>], i: usize) -> Option<&'a ValueFact> {
    inputs.get(i).copied().flatten()
}

/// The value of input `i` when it is a constant.
pub(crate) fn constant<'a>(constants: &[Option<&'a Tensor>], i: usize) -> Option<&'a Tensor> {
    constants.get(i).copied().flatten()
}

/// Refuses a known dtype outside `allowed`.
pub(crate) fn expect_dtype(op: &str, f: &ValueFact, name: &str, allowed: &[DType]) -> Result<()> {
    match f.dtype {
        Some(d) if !allowed.contains(&d) => {
            let names: Vec<&str> = allowed.iter().map(|d| d.name()).collect();
            Err(fact_error(
                op,
                format!("{name} must be {}, got {d} {}", names.join(" or "), f.shape_string()),
            ))
        }
        _ => Ok(()),
    }
}

/// Refuses a known rank below `min`.
pub(crate) fn expect_min_rank(op: &str, f: &ValueFact, name: &str, min: usize, layout: &str) -> Result<()> {
    match f.rank() {
        Some(r) if r < min => Err(fact_error(
            op,
            format!("{name} must be {layout}, got {}", f.shape_string()),
        )),
        _ => Ok(()),
    }
}

/// An element-wise op on float32: the output is its input's shape, float32.
pub(crate) fn float_like(op: &str, inputs: &[Option<&ValueFact>], name: &str) -> Result<Vec<ValueFact>> {
    let x = required(inputs, 0, op, name)?;
    expect_dtype(op, x, name, &[DType::F32])?;
    Ok(vec![ValueFact::new(Some(DType::F32), x.shape.clone())])
}

/// Two facts of one dimension that must be equal: the better known one (an error when two
/// known sizes differ).
pub(crate) fn unify_dim(op: &str, a: &DimFact, b: &DimFact, what: impl Fn() -> String) -> Result<DimFact> {
    Ok(match (a, b) {
        (DimFact::Known(x), DimFact::Known(y)) if x != y => return Err(fact_error(op, what())),
        (DimFact::Known(_), _) => a.clone(),
        (_, DimFact::Known(_)) => b.clone(),
        (DimFact::Symbol(x), DimFact::Symbol(y)) if x == y => a.clone(),
        (DimFact::Symbol(_), DimFact::Unknown) => a.clone(),
        (DimFact::Unknown, DimFact::Symbol(_)) => b.clone(),
        _ => DimFact::Unknown,
    })
}

/// numpy broadcasting of two shapes. A symbol against 1 stays the symbol; against a known
/// size > 1 it must be that size (or 1), so the output is that size.
pub(crate) fn broadcast_dims(op: &str, a: &[DimFact], b: &[DimFact]) -> Result<Vec<DimFact>> {
    use DimFact::*;
    let r = a.len().max(b.len());
    let one = Known(1);
    let mut out = Vec::with_capacity(r);
    for i in 0..r {
        let da = if i + a.len() >= r { &a[i + a.len() - r] } else { &one };
        let db = if i + b.len() >= r { &b[i + b.len() - r] } else { &one };
        out.push(match (da, db) {
            (Known(x), Known(y)) if x == y || *y == 1 => Known(*x),
            (Known(1), Known(y)) => Known(*y),
            (Known(_), Known(_)) => {
                let s = |v: &[DimFact]| v.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ");
                return Err(fact_error(
                    op,
                    format!("shapes [{}] and [{}] do not broadcast", s(a), s(b)),
                ));
            }
            (Known(1), other) | (other, Known(1)) => other.clone(),
            (Known(x), _) | (_, Known(x)) => Known(*x),
            (Symbol(x), Symbol(y)) if x == y => Symbol(x.clone()),
            _ => Unknown,
        });
    }
    Ok(out)
}

/// The product of dimensions: known when all are, the symbol when it is the only unknown
/// among ones, 0 when one is 0.
pub(crate) fn dim_product(dims: &[DimFact]) -> DimFact {
    if dims.contains(&DimFact::Known(0)) {
        return DimFact::Known(0);
    }
    let mut known = 1usize;
    let mut other: Vec<&DimFact> = Vec::new();
    for d in dims {
        match d {
            DimFact::Known(k) => known = known.saturating_mul(*k),
            d => other.push(d),
        }
    }
    match other.as_slice() {
        [] => DimFact::Known(known),
        [DimFact::Symbol(s)] if known == 1 => DimFact::Symbol(s.clone()),
        _ => DimFact::Unknown,
    }
}

/// A possibly negative axis against a rank, or an error naming the op.
pub(crate) fn fact_axis(op: &str, axis: i64, rank: usize) -> Result<usize> {
    super::norm_axis(axis, rank).map_err(|e| match e {
        Error::Shape(m) => fact_error(op, m),
        e => e,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use DimFact::*;

    #[test]
    fn broadcasting_keeps_symbols_against_ones_and_takes_known_sizes() {
        let n = || Symbol("N".into());
        let got = broadcast_dims("Add", &[n(), Known(3), Known(1)], &[Known(3), Known(5)]).unwrap();
        assert_eq!(got, vec![n(), Known(3), Known(5)]);
        let got = broadcast_dims("Add", &[n(), Unknown], &[Known(1), Known(4)]).unwrap();
        assert_eq!(got, vec![n(), Known(4)]);
        assert_eq!(
            broadcast_dims("Add", &[n()], &[Symbol("M".into())]).unwrap(),
            vec![Unknown]
        );
        let e = broadcast_dims("Mul", &[Known(2), Known(3)], &[Known(4)]).unwrap_err();
        assert!(e.to_string().contains("Mul") && e.to_string().contains("[2, 3]"), "{e}");
    }

    #[test]
    fn products_and_declared_dims() {
        assert_eq!(dim_product(&[Known(2), Known(3)]), Known(6));
        assert_eq!(dim_product(&[Symbol("N".into()), Known(1)]), Symbol("N".into()));
        assert_eq!(dim_product(&[Symbol("N".into()), Known(2)]), Unknown);
        assert_eq!(dim_product(&[Unknown, Known(0)]), Known(0));
        assert_eq!(DimFact::from(&Dim::Symbolic(String::new())), Unknown);
        assert_eq!(DimFact::from(&Dim::Symbolic("N".into())), Symbol("N".into()));
        let f = ValueFact::new(Some(DType::F32), Some(vec![Symbol("N".into()), Known(3), Unknown]));
        assert_eq!(f.to_string(), "float32 [N, 3, ?]");
        assert!(f.admits(&Tensor::zeros::<f32>(vec![7, 3, 2])));
        assert!(!f.admits(&Tensor::zeros::<f32>(vec![7, 4, 2])));
    }
}
