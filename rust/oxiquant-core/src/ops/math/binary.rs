//! Add, Sub, Mul, Div with broadcasting (float32, int32, int64).

use crate::error::{Error, Result};
use crate::kernels::elementwise::{binary, binary_inplace};
use crate::onnx::attrs::AttrValue;
use crate::ops::{input, Class, DataInputs, FromOnnx, NodeFacts, Op, ParseCtx, SignRule};
use crate::tensor::{Tensor, TensorData};

/// The four arithmetic ops, one type: they share broadcasting, dtypes and kernels.
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

impl FromOnnx for BinaryOp {
    fn from_onnx(cx: &ParseCtx) -> Result<Self> {
        let a = cx.attrs;
        if a.int("broadcast", 1)? != 1 || a.has("axis") {
            return Err(a.unsupported("legacy broadcast/axis attributes (opset < 7)"));
        }
        Ok(match cx.op_type {
            "Add" => BinaryOp::Add,
            "Sub" => BinaryOp::Sub,
            "Mul" => BinaryOp::Mul,
            "Div" => BinaryOp::Div,
            other => return Err(a.unsupported(format!("{other} is not an arithmetic op"))),
        })
    }
}

impl Op for BinaryOp {
    fn op_type(&self) -> &'static str {
        self.name()
    }
    fn to_attrs(&self, _opset: i64) -> Vec<(String, AttrValue)> {
        Vec::new()
    }
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        Ok(vec![self.apply(input(inputs, 0, "A")?, input(inputs, 1, "B")?)?])
    }
    fn has_in_place(&self) -> bool {
        true
    }
    fn eval_in_place(&self, x: Tensor, rest: &[Option<&Tensor>]) -> Result<Tensor> {
        let b = rest
            .first()
            .copied()
            .flatten()
            .ok_or_else(|| Error::shape("missing required input #1 (B)"))?;
        self.apply_in_place(x, b)
    }
    fn ptq_class(&self, n: &NodeFacts) -> Class {
        match self {
            BinaryOp::Add | BinaryOp::Sub => {
                if (0..n.inputs.len()).all(|i| n.is_activation(i)) {
                    Class::Merging
                } else {
                    Class::FloatIsland("Add/Sub/Sum/Concat with a constant operand".into())
                }
            }
            _ => Class::FloatIsland("Mul/Div is not scale-invariant".into()),
        }
    }
    fn data_inputs(&self) -> DataInputs {
        DataInputs::All
    }
    fn sign_rule(&self, _n: &NodeFacts) -> SignRule {
        match self {
            BinaryOp::Add => SignRule::FollowsInputs,
            _ => SignRule::Unknown,
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
            let got = Op::eval_in_place(&op, a.clone(), &[Some(&b)]);
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
