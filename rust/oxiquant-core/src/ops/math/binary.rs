//! Add, Sub, Mul, Div with broadcasting (float32 and every integer type, each in its own width).

use crate::error::{Error, Result};
use crate::kernels::elementwise::{binary, binary_inplace};
use crate::onnx::attrs::AttrValue;
use crate::ops::facts::{broadcast_dims, expect_dtype, fact_error, required};
use crate::ops::{input, Class, DataInputs, FromOnnx, NodeFacts, Op, ParseCtx, SignRule, ValueFact};
use crate::tensor::{DType, Tensor, TensorData};

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
        macro_rules! int_arith {
            ($x:expr, $y:expr, $t:ty) => {
                arith!(
                    $x,
                    $y,
                    |p: $t, q: $t| p.wrapping_add(q),
                    |p: $t, q: $t| p.wrapping_sub(q),
                    |p: $t, q: $t| p.wrapping_mul(q),
                    |p: $t, q: $t| if q == 0 { 0 } else { p.wrapping_div(q) }
                )
            };
        }
        match (a.data(), b.data()) {
            (TensorData::F32(x), TensorData::F32(y)) => {
                arith!(x, y, |p, q| p + q, |p, q| p - q, |p, q| p * q, |p, q| p / q)
            }
            // Integers wrap on overflow (two's complement, as numpy and ONNX runtimes do; shape
            // arithmetic from a model must not panic), each type in its own width. Division
            // truncates toward zero; MIN / -1 wraps to MIN (as the int8/int16 promotion to int
            // in C gives); by zero it yields 0 instead of a panic.
            (TensorData::I64(x), TensorData::I64(y)) => int_arith!(x, y, i64),
            (TensorData::I32(x), TensorData::I32(y)) => int_arith!(x, y, i32),
            (TensorData::I16(x), TensorData::I16(y)) => int_arith!(x, y, i16),
            (TensorData::I8(x), TensorData::I8(y)) => int_arith!(x, y, i8),
            (TensorData::U64(x), TensorData::U64(y)) => int_arith!(x, y, u64),
            (TensorData::U32(x), TensorData::U32(y)) => int_arith!(x, y, u32),
            (TensorData::U16(x), TensorData::U16(y)) => int_arith!(x, y, u16),
            (TensorData::U8(x), TensorData::U8(y)) => int_arith!(x, y, u8),
            _ => Err(Error::shape(format!(
                "{} needs two float32 or integer operands of the same dtype, got {} {:?} and {} {:?}",
                self.name(),
                a.dtype(),
                a.shape(),
                b.dtype(),
                b.shape()
            ))),
        }
    }

    /// The output of `apply` on operands `a` and `b`: their common dtype (float32 or an
    /// integer type), their shapes broadcast.
    pub fn facts(self, a: &ValueFact, b: &ValueFact) -> Result<ValueFact> {
        let op = self.name();
        expect_dtype(op, a, "A", &DType::NUMERIC)?;
        expect_dtype(op, b, "B", &DType::NUMERIC)?;
        let dtype = match (a.dtype, b.dtype) {
            (Some(x), Some(y)) if x != y => {
                return Err(fact_error(
                    op,
                    format!("operands must have the same dtype, got {a} and {b}"),
                ))
            }
            (Some(x), _) | (_, Some(x)) => Some(x),
            _ => None,
        };
        let shape = match (&a.shape, &b.shape) {
            (Some(x), Some(y)) => Some(broadcast_dims(op, x, y)?),
            _ => None,
        };
        Ok(ValueFact::new(dtype, shape))
    }

    /// `apply` writing into `a` when both are float32 of the same shape (a residual Add,
    /// for instance), with the same arithmetic; other operands go through `apply`.
    pub fn apply_in_place(self, mut a: Tensor, b: &Tensor) -> Result<Tensor> {
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
    fn elementwise(&self) -> bool {
        true
    }
    fn op_type(&self) -> &'static str {
        self.name()
    }
    fn to_attrs(&self, _opset: i64) -> Vec<(String, AttrValue)> {
        Vec::new()
    }
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        Ok(vec![self.apply(input(inputs, 0, "A")?, input(inputs, 1, "B")?)?])
    }
    fn output_facts(&self, inputs: &[Option<&ValueFact>], _constants: &[Option<&Tensor>]) -> Result<Vec<ValueFact>> {
        let op = self.name();
        Ok(vec![
            self.facts(required(inputs, 0, op, "A")?, required(inputs, 1, op, "B")?)?
        ])
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
pub(crate) mod tests {
    use super::*;
    use crate::ops::Op;
    use proptest::prelude::*;

    /// Two shapes that broadcast (numpy rules) by construction: each is `full` with some
    /// leading dimensions dropped and some others set to 1, or both are `full` itself (the
    /// same-shape case, which `eval_in_place` writes into its first operand).
    pub(crate) fn broadcastable() -> impl Strategy<Value = (Vec<usize>, Vec<usize>)> {
        prop::collection::vec(1usize..5, 0..5).prop_flat_map(|full| {
            let r = full.len();
            let side = move |full: Vec<usize>| {
                (0..=r, prop::collection::vec(prop::bool::weighted(0.7), r)).prop_map(move |(drop, keep)| {
                    (drop..r)
                        .map(|i| if keep[i] { full[i] } else { 1 })
                        .collect::<Vec<usize>>()
                })
            };
            prop_oneof![
                1 => Just((full.clone(), full.clone())),
                3 => (side(full.clone()), side(full.clone())),
            ]
        })
    }

    /// `op` on the broadcast operands, element by element from the multi-index (plain loops,
    /// independent of the kernels' stride tables).
    fn reference(op: BinaryOp, a: &[f32], sa: &[usize], b: &[f32], sb: &[usize]) -> (Vec<usize>, Vec<f32>) {
        let r = sa.len().max(sb.len());
        let pad = |s: &[usize]| [vec![1; r - s.len()], s.to_vec()].concat();
        let (pa, pb) = (pad(sa), pad(sb));
        let out: Vec<usize> = pa.iter().zip(&pb).map(|(&x, &y)| x.max(y)).collect();
        let n: usize = out.iter().product();
        let flat = |idx: &[usize], s: &[usize]| {
            idx.iter()
                .zip(s)
                .fold(0, |acc, (&i, &d)| acc * d + if d == 1 { 0 } else { i })
        };
        let mut v = Vec::with_capacity(n);
        for k in 0..n {
            let mut idx = vec![0; r];
            let mut rest = k;
            for d in (0..r).rev() {
                idx[d] = rest % out[d];
                rest /= out[d];
            }
            let (x, y) = (a[flat(&idx, &pa)], b[flat(&idx, &pb)]);
            v.push(match op {
                BinaryOp::Add => x + y,
                BinaryOp::Sub => x - y,
                BinaryOp::Mul => x * y,
                BinaryOp::Div => x / y,
            });
        }
        (out, v)
    }

    proptest! {
        /// In place (the executor's path when the first operand is free) and out of place
        /// give the same values, bit for bit, and both the numpy broadcast computed by plain
        /// loops, for every pair of shapes that broadcast.
        #[test]
        fn in_place_binary_matches_apply(op in 0usize..4, (sa, sb) in broadcastable(), seed in any::<u64>()) {
            let op = [BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul, BinaryOp::Div][op];
            let mut s = seed | 1;
            let mut next = || { s ^= s << 13; s ^= s >> 7; s ^= s << 17; (s % 2001) as f32 / 100.0 - 10.0 };
            let va: Vec<f32> = (0..sa.iter().product()).map(|_| next()).collect();
            let vb: Vec<f32> = (0..sb.iter().product()).map(|_| next()).collect();
            let a = Tensor::from_vec(sa.clone(), va.clone()).unwrap();
            let b = Tensor::from_vec(sb.clone(), vb.clone()).unwrap();
            let want = op.apply(&a, &b).unwrap();
            let got = Op::eval_in_place(&op, a, &[Some(&b)]).unwrap();
            let (shape, plain) = reference(op, &va, &sa, &vb, &sb);
            prop_assert_eq!(got.shape(), &shape[..]);
            prop_assert_eq!(want.shape(), &shape[..]);
            let bits = |t: &Tensor| t.as_slice::<f32>().unwrap().iter().map(|x| x.to_bits()).collect::<Vec<u32>>();
            prop_assert_eq!(bits(&got), bits(&want));
            prop_assert_eq!(bits(&want), plain.iter().map(|x| x.to_bits()).collect::<Vec<u32>>());
        }
    }

    /// Shapes that do not broadcast fail both ways, with a message naming both shapes.
    #[test]
    fn shapes_that_do_not_broadcast_fail_in_place_and_out_of_place() {
        for (sa, sb) in [
            (vec![2, 3, 5], vec![2, 3, 5, 1]),
            (vec![3], vec![4]),
            (vec![2, 1, 4], vec![3, 5]),
        ] {
            let t = |s: &Vec<usize>| Tensor::from_vec(s.clone(), vec![1.0f32; s.iter().product()]).unwrap();
            let (a, b) = (t(&sa), t(&sb));
            let out = BinaryOp::Add.apply(&a, &b).unwrap_err().to_string();
            let inp = Op::eval_in_place(&BinaryOp::Add, a, &[Some(&b)])
                .unwrap_err()
                .to_string();
            assert!(
                out.contains(&format!("{sa:?}")) && out.contains(&format!("{sb:?}")),
                "{out}"
            );
            assert_eq!(inp, out);
        }
    }
}
