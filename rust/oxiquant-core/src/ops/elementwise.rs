//! Broadcasting arithmetic (Add, Sub, Mul, Div, Sum) and unary activations.

use super::input;
use crate::error::{Error, Result};
use crate::kernels::elementwise::{binary, binary_inplace, sigmoid, unary_inplace};
use crate::tensor::{Tensor, TensorData};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
}

impl BinaryOp {
    pub fn name(self) -> &'static str {
        match self {
            BinaryOp::Add => "Add",
            BinaryOp::Sub => "Sub",
            BinaryOp::Mul => "Mul",
            BinaryOp::Div => "Div",
        }
    }

    pub fn apply(self, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        macro_rules! arith {
            ($x:expr, $y:expr, $add:expr, $sub:expr, $mul:expr, $div:expr) => {{
                let (v, s) = match self {
                    BinaryOp::Add => binary($x, a.shape(), $y, b.shape(), $add)?,
                    BinaryOp::Sub => binary($x, a.shape(), $y, b.shape(), $sub)?,
                    BinaryOp::Mul => binary($x, a.shape(), $y, b.shape(), $mul)?,
                    BinaryOp::Div => binary($x, a.shape(), $y, b.shape(), $div)?,
                };
                Tensor::from_vec(s, v)
            }};
        }
        match (a.data(), b.data()) {
            (TensorData::F32(x), TensorData::F32(y)) => {
                arith!(x, y, |p, q| p + q, |p, q| p - q, |p, q| p * q, |p, q| p / q)
            }
            // Integers wrap on overflow (two's complement, as numpy and ONNX runtimes do; shape
            // arithmetic from a model must not panic). Division truncates toward zero; by zero
            // (or i64::MIN / -1) it yields 0 instead of a panic.
            (TensorData::I64(x), TensorData::I64(y)) => arith!(
                x,
                y,
                |p: i64, q: i64| p.wrapping_add(q),
                |p: i64, q: i64| p.wrapping_sub(q),
                |p: i64, q: i64| p.wrapping_mul(q),
                |p: i64, q: i64| p.checked_div(q).unwrap_or(0)
            ),
            (TensorData::I32(x), TensorData::I32(y)) => arith!(
                x,
                y,
                |p: i32, q: i32| p.wrapping_add(q),
                |p: i32, q: i32| p.wrapping_sub(q),
                |p: i32, q: i32| p.wrapping_mul(q),
                |p: i32, q: i32| p.checked_div(q).unwrap_or(0)
            ),
            _ => Err(Error::shape(format!(
                "{} needs two float32, int64 or int32 operands of the same dtype, got {} {:?} and {} {:?}",
                self.name(),
                a.dtype(),
                a.shape(),
                b.dtype(),
                b.shape()
            ))),
        }
    }

    /// `apply` writing into `a` when both are float32 of the same shape (a residual Add,
    /// for instance), with the same arithmetic; other operands go through `apply`.
    pub fn apply_in_place(self, mut a: Tensor, b: &Tensor) -> Result<Tensor> {
        use crate::tensor::DType;
        if a.shape() != b.shape() || a.dtype() != DType::F32 || b.dtype() != DType::F32 {
            return self.apply(&a, b);
        }
        let y = b.as_slice::<f32>()?;
        let x = a.as_mut_slice::<f32>()?;
        match self {
            BinaryOp::Add => binary_inplace(x, y, |p, q| p + q),
            BinaryOp::Sub => binary_inplace(x, y, |p, q| p - q),
            BinaryOp::Mul => binary_inplace(x, y, |p, q| p * q),
            BinaryOp::Div => binary_inplace(x, y, |p, q| p / q),
        }
        Ok(a)
    }
}

pub fn eval_binary(op: BinaryOp, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    Ok(vec![op.apply(input(inputs, 0, "A")?, input(inputs, 1, "B")?)?])
}

/// Variadic Sum with broadcasting.
pub fn eval_sum(inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    let mut acc = input(inputs, 0, "data_0")?.clone();
    for i in 1..inputs.len() {
        acc = BinaryOp::Add.apply(&acc, input(inputs, i, "data_i")?)?;
    }
    Ok(vec![acc])
}

/// Activations applied element by element.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Unary {
    Relu,
    LeakyRelu {
        alpha: f32,
    },
    Sigmoid,
    Tanh,
    HardSigmoid {
        alpha: f32,
        beta: f32,
    },
    HardSwish,
    Exp,
    Neg,
    Abs,
    Sqrt,
    /// Round half to even (ONNX Round).
    Round,
    Floor,
}

impl Unary {
    pub fn name(self) -> &'static str {
        match self {
            Unary::Relu => "Relu",
            Unary::LeakyRelu { .. } => "LeakyRelu",
            Unary::Sigmoid => "Sigmoid",
            Unary::Tanh => "Tanh",
            Unary::HardSigmoid { .. } => "HardSigmoid",
            Unary::HardSwish => "HardSwish",
            Unary::Exp => "Exp",
            Unary::Neg => "Neg",
            Unary::Abs => "Abs",
            Unary::Sqrt => "Sqrt",
            Unary::Round => "Round",
            Unary::Floor => "Floor",
        }
    }

    pub fn f(self, v: f32) -> f32 {
        match self {
            // Not `v.max(0.0)`, which turns NaN into 0: NaN propagates, as in onnxruntime.
            Unary::Relu => {
                if v < 0.0 {
                    0.0
                } else {
                    v
                }
            }
            Unary::LeakyRelu { alpha } => {
                if v < 0.0 {
                    alpha * v
                } else {
                    v
                }
            }
            Unary::Sigmoid => sigmoid(v),
            Unary::Tanh => v.tanh(),
            Unary::HardSigmoid { alpha, beta } => (alpha * v + beta).clamp(0.0, 1.0),
            Unary::HardSwish => v * (v / 6.0 + 0.5).clamp(0.0, 1.0),
            Unary::Exp => v.exp(),
            Unary::Neg => -v,
            Unary::Abs => v.abs(),
            Unary::Sqrt => v.sqrt(),
            Unary::Round => v.round_ties_even(),
            Unary::Floor => v.floor(),
        }
    }

    pub fn eval(self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0, "X")?;
        let mut y = x.clone();
        self.apply_slice(y.as_mut_slice::<f32>()?);
        Ok(vec![y])
    }

    /// Applies the op to every element. The variant is matched once, outside the loop, so
    /// that each loop is specialized (and vectorized where the op allows).
    pub fn apply_slice(self, x: &mut [f32]) {
        match self {
            Unary::Relu => unary_inplace(x, |v| Unary::Relu.f(v)),
            Unary::LeakyRelu { alpha } => unary_inplace(x, |v| Unary::LeakyRelu { alpha }.f(v)),
            Unary::Round => unary_inplace(x, |v| v.round_ties_even()),
            Unary::Abs => unary_inplace(x, |v| v.abs()),
            Unary::Neg => unary_inplace(x, |v| -v),
            other => unary_inplace(x, |v| other.f(v)),
        }
    }
}

/// Clip with bounds from attributes (opset < 11) or from optional inputs 1 and 2.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Clip {
    pub min: Option<f32>,
    pub max: Option<f32>,
}

impl Clip {
    pub fn bounds(&self, inputs: &[Option<&Tensor>]) -> Result<(f32, f32)> {
        let scalar = |i: usize, what: &str| -> Result<Option<f32>> {
            match inputs.get(i).copied().flatten() {
                None => Ok(None),
                Some(t) if t.len() == 1 => Ok(Some(t.to_f32_vec()[0])),
                Some(t) => Err(Error::shape(format!(
                    "Clip {what} must be a scalar, got shape {:?}",
                    t.shape()
                ))),
            }
        };
        let lo = scalar(1, "min")?.or(self.min).unwrap_or(f32::NEG_INFINITY);
        let hi = scalar(2, "max")?.or(self.max).unwrap_or(f32::INFINITY);
        Ok((lo, hi))
    }

    pub fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let (lo, hi) = self.bounds(inputs)?;
        let mut y = input(inputs, 0, "input")?.clone();
        unary_inplace(y.as_mut_slice::<f32>()?, |v| Clip::apply(v, lo, hi));
        Ok(vec![y])
    }

    /// `min(max(v, lo), hi)` as onnxruntime computes it: lo > hi yields hi, and NaN stays NaN
    /// (`f32::max`/`f32::min` would replace it by a bound).
    #[inline]
    pub fn apply(v: f32, lo: f32, hi: f32) -> f32 {
        let t = if v < lo { lo } else { v };
        if t > hi {
            hi
        } else {
            t
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::Op;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn in_place_binary_matches_apply(
            op in 0usize..4, n in 1usize..4, c in 1usize..5, broadcast in 0usize..3, seed in any::<u64>(),
        ) {
            let op = [BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul, BinaryOp::Div][op];
            let mut s = seed | 1;
            let mut next = || { s ^= s << 13; s ^= s >> 7; s ^= s << 17; (s % 2001) as f32 / 100.0 - 10.0 };
            let a = Tensor::from_vec(vec![n, c, 5], (0..n * c * 5).map(|_| next()).collect::<Vec<f32>>()).unwrap();
            // Same shape (written into `a`), or broadcast either way (the plain path).
            let bs = [vec![n, c, 5], vec![c, 1], vec![n, c, 5, 1]][broadcast].clone();
            let len = bs.iter().product();
            let b = Tensor::from_vec(bs, (0..len).map(|_| next()).collect::<Vec<f32>>()).unwrap();
            let want = op.apply(&a, &b);
            let got = Op::Binary(op).eval_in_place(a.clone(), &[Some(&b)]);
            match (got, want) {
                (Ok(g), Ok(w)) => {
                    prop_assert_eq!(g.shape(), w.shape());
                    let (g, w) = (g.as_slice::<f32>().unwrap(), w.as_slice::<f32>().unwrap());
                    prop_assert!(g.iter().zip(w).all(|(x, y)| x.to_bits() == y.to_bits()));
                }
                (Err(_), Err(_)) => {}
                (g, w) => prop_assert!(false, "in place {:?} vs apply {:?}", g.map(|t| t.shape().to_vec()), w.map(|t| t.shape().to_vec())),
            }
        }
    }
}
