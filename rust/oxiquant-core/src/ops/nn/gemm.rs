//! Gemm over the fp32 GEMM kernel.

use super::conv::empty_weight;
use crate::error::{Error, Result};
use crate::kernels::elementwise::broadcast_shape;
use crate::kernels::gemm::{sgemm, MatRef};
use crate::onnx::attrs::{AttrReader, AttrValue};
use crate::ops::facts::{expect_dtype, fact_error, optional, required, unify_dim};
use crate::ops::{input, Class, DataInputs, FromOnnx, NodeFacts, Op, ParseCtx, ValueFact};
use crate::tensor::{DType, Tensor};

#[derive(Debug, Clone, PartialEq)]
pub struct Gemm {
    pub alpha: f32,
    pub beta: f32,
    pub trans_a: bool,
    pub trans_b: bool,
}

impl Gemm {
    pub fn parse(a: &AttrReader<'_>) -> Result<Gemm> {
        if a.int("broadcast", 1)? != 1 {
            return Err(a.unsupported("broadcast=0"));
        }
        Ok(Gemm {
            alpha: a.float("alpha", 1.0)?,
            beta: a.float("beta", 1.0)?,
            trans_a: a.int("transA", 0)? != 0,
            trans_b: a.int("transB", 0)? != 0,
        })
    }

    pub fn attrs(&self) -> Vec<(String, AttrValue)> {
        let mut v = Vec::new();
        if self.alpha != 1.0 {
            v.push(("alpha".into(), AttrValue::Float(self.alpha)));
        }
        if self.beta != 1.0 {
            v.push(("beta".into(), AttrValue::Float(self.beta)));
        }
        if self.trans_a {
            v.push(("transA".into(), AttrValue::Int(1)));
        }
        if self.trans_b {
            v.push(("transB".into(), AttrValue::Int(1)));
        }
        v
    }

    /// `[M, N]` float32 from A `[M, K]` and B `[K, N]` (as transposed), C broadcasting to it.
    fn facts(&self, inputs: &[Option<&ValueFact>]) -> Result<ValueFact> {
        let op = "Gemm";
        let a = required(inputs, 0, op, "A")?;
        let b = required(inputs, 1, op, "B")?;
        expect_dtype(op, a, "A", &[DType::F32])?;
        expect_dtype(op, b, "B", &[DType::F32])?;
        if a.rank().is_some_and(|r| r != 2) || b.rank().is_some_and(|r| r != 2) {
            return Err(fact_error(op, format!("needs 2-D A and B, got {a} and {b}")));
        }
        let pick = |f: &ValueFact, t: bool| if t { (f.dim(1), f.dim(0)) } else { (f.dim(0), f.dim(1)) };
        let (mut m, k) = pick(a, self.trans_a);
        let (kb, mut n) = pick(b, self.trans_b);
        unify_dim(op, &k, &kb, || {
            format!(
                "inner dimensions differ: A {a} (transA={}) and B {b} (transB={})",
                self.trans_a as u8, self.trans_b as u8
            )
        })?;
        if let Some(c) = optional(inputs, 2).filter(|_| self.beta != 0.0) {
            expect_dtype(op, c, "C", &[DType::F32])?;
            if let Some(cs) = &c.shape {
                let want = format!("[{m}, {n}]");
                let bad = || format!("C of shape {} does not broadcast to {want}", c.shape_string());
                if cs.len() > 2 {
                    return Err(fact_error(op, bad()));
                }
                // A size of C other than 1 is the output's.
                let off = 2 - cs.len();
                for (i, d) in cs.iter().enumerate() {
                    if d.known() == Some(1) || d.known().is_none() {
                        continue;
                    }
                    let target = if i + off == 0 { &mut m } else { &mut n };
                    *target = unify_dim(op, target, d, bad)?;
                }
            }
        }
        Ok(ValueFact::new(Some(DType::F32), Some(vec![m, n])))
    }

    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let a = input(inputs, 0, "A")?;
        let b = input(inputs, 1, "B")?;
        if a.rank() != 2 || b.rank() != 2 {
            return Err(Error::shape(format!(
                "Gemm needs 2-D A and B, got {:?} and {:?}",
                a.shape(),
                b.shape()
            )));
        }
        let (m, k) = if self.trans_a {
            (a.shape()[1], a.shape()[0])
        } else {
            (a.shape()[0], a.shape()[1])
        };
        let (kb, n) = if self.trans_b {
            (b.shape()[1], b.shape()[0])
        } else {
            (b.shape()[0], b.shape()[1])
        };
        if k != kb {
            return Err(Error::shape(format!(
                "Gemm inner dimensions differ: A {:?} (transA={}) and B {:?} (transB={})",
                a.shape(),
                self.trans_a as u8,
                b.shape(),
                self.trans_b as u8
            )));
        }
        crate::tensor::check_alloc(&[m, n], 4)?;
        let mut y = vec![0f32; m * n];
        let mut accumulate = false;
        if let Some(c) = inputs.get(2).copied().flatten() {
            if self.beta != 0.0 {
                let shape = broadcast_shape(&[m, n], c.shape())?;
                if shape != [m, n] {
                    return Err(Error::shape(format!(
                        "Gemm C of shape {:?} does not broadcast to [{m}, {n}]",
                        c.shape()
                    )));
                }
                let (cv, _) =
                    crate::kernels::elementwise::binary(&y, &[m, n], c.as_slice::<f32>()?, c.shape(), |_, c| c)?;
                y = cv;
                if self.beta != 1.0 {
                    y.iter_mut().for_each(|v| *v *= self.beta);
                }
                accumulate = true;
            }
        }
        let am = MatRef::row_major(a.as_slice::<f32>()?, a.shape()[1], self.trans_a);
        let bm = MatRef::row_major(b.as_slice::<f32>()?, b.shape()[1], self.trans_b);
        sgemm(
            m,
            n,
            k,
            self.alpha,
            am,
            bm,
            &mut y,
            accumulate,
            rayon::current_num_threads(),
        );
        Ok(vec![Tensor::from_vec(vec![m, n], y)?])
    }
}

impl FromOnnx for Gemm {
    fn from_onnx(cx: &ParseCtx) -> Result<Self> {
        Gemm::parse(cx.attrs)
    }
}

impl Op for Gemm {
    /// Both operands: a product of two activations (attention's QK^T), or a constant A
    /// times an activation B, carries an activation too.
    fn data_inputs(&self) -> DataInputs {
        DataInputs::All
    }
    fn op_type(&self) -> &'static str {
        "Gemm"
    }
    fn to_attrs(&self, _opset: i64) -> Vec<(String, AttrValue)> {
        self.attrs()
    }
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        self.run(inputs)
    }
    fn output_facts(&self, inputs: &[Option<&ValueFact>], _constants: &[Option<&Tensor>]) -> Result<Vec<ValueFact>> {
        Ok(vec![self.facts(inputs)?])
    }
    fn ptq_class(&self, n: &NodeFacts) -> Class {
        let island = |why: &str| Class::FloatIsland(why.to_string());
        let bias_ok = n.input(2).is_empty()
            || n.constant(2)
                .is_some_and(|c| c.len() == 1 || (c.shape().iter().rev().skip(1).all(|&d| d == 1)));
        if empty_weight(n) {
            island("an empty weight tensor")
        } else if self.trans_a {
            island("Gemm with transA=1")
        } else if !n.is_constant(1) {
            island("Gemm with a non-constant B")
        } else if !bias_ok {
            island("Gemm with a non-constant or 2-D (per-row) C")
        } else if self.alpha != 1.0 || self.beta != 1.0 {
            island("Gemm with alpha/beta != 1 (prepare_network folds them)")
        } else {
            Class::Affine
        }
    }
}
