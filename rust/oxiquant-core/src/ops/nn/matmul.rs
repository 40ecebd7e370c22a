//! MatMul (numpy semantics) over the fp32 GEMM kernel.

use super::conv::empty_weight;
use crate::error::{Error, Result};
use crate::kernels::elementwise::broadcast_shape;
use crate::kernels::gemm::{sgemm, MatRef};
use crate::ops::facts::{broadcast_dims, expect_dtype, fact_error, required, unify_dim};
use crate::ops::{input, Class, DataInputs, DimFact, FromOnnx, NodeFacts, Op, ParseCtx, ValueFact};
use crate::tensor::{numel, DType, Tensor};
use rayon::prelude::*;

#[derive(Debug, Clone, PartialEq)]
pub struct MatMul;

impl FromOnnx for MatMul {
    fn from_onnx(_cx: &ParseCtx) -> Result<Self> {
        Ok(MatMul)
    }
}

impl Op for MatMul {
    /// Both operands: a product of two activations (attention's QK^T), or a constant A
    /// times an activation B, carries an activation too.
    fn data_inputs(&self) -> DataInputs {
        DataInputs::All
    }
    fn op_type(&self) -> &'static str {
        "MatMul"
    }
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        matmul(inputs)
    }
    fn output_facts(&self, inputs: &[Option<&ValueFact>], _constants: &[Option<&Tensor>]) -> Result<Vec<ValueFact>> {
        Ok(vec![matmul_facts("MatMul", inputs)?])
    }
    fn ptq_class(&self, n: &NodeFacts) -> Class {
        if empty_weight(n) {
            Class::FloatIsland("an empty weight tensor".into())
        } else if n.constant(1).is_some_and(|w| w.rank() == 2) && !n.is_activation(1) {
            Class::Affine
        } else {
            Class::FloatIsland("MatMul of two activations (or with a weight of rank != 2)".into())
        }
    }
}

/// The output of `matmul` (named `op` in errors): float32, the batch dimensions broadcast,
/// then `M` unless A is 1-D and `N` unless B is.
pub(crate) fn matmul_facts(op: &str, inputs: &[Option<&ValueFact>]) -> Result<ValueFact> {
    let a = required(inputs, 0, op, "A")?;
    let b = required(inputs, 1, op, "B")?;
    expect_dtype(op, a, "A", &[DType::F32])?;
    expect_dtype(op, b, "B", &[DType::F32])?;
    if a.rank() == Some(0) || b.rank() == Some(0) {
        return Err(fact_error(op, format!("operands must have rank >= 1, got {a} and {b}")));
    }
    let (Some(sa), Some(sb)) = (&a.shape, &b.shape) else {
        return Ok(ValueFact::new(Some(DType::F32), None));
    };
    let (mut sa, mut sb) = (sa.clone(), sb.clone());
    let (a1, b1) = (sa.len() == 1, sb.len() == 1);
    if a1 {
        sa.insert(0, DimFact::Known(1));
    }
    if b1 {
        sb.push(DimFact::Known(1));
    }
    let (m, k) = (&sa[sa.len() - 2], &sa[sa.len() - 1]);
    let (kb, n) = (&sb[sb.len() - 2], &sb[sb.len() - 1]);
    unify_dim(op, k, kb, || format!("inner dimensions differ: {a} x {b}"))?;
    let mut shape = broadcast_dims(op, &sa[..sa.len() - 2], &sb[..sb.len() - 2])?;
    if !a1 {
        shape.push(m.clone());
    }
    if !b1 {
        shape.push(n.clone());
    }
    Ok(ValueFact::new(Some(DType::F32), Some(shape)))
}

/// numpy `matmul`: 1-D operands are promoted, leading dimensions broadcast.
pub fn matmul(inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    let a = input(inputs, 0, "A")?;
    let b = input(inputs, 1, "B")?;
    if a.rank() == 0 || b.rank() == 0 {
        return Err(Error::shape("MatMul operands must have rank >= 1".to_string()));
    }
    let mut sa = a.shape().to_vec();
    let mut sb = b.shape().to_vec();
    let (a1, b1) = (sa.len() == 1, sb.len() == 1);
    if a1 {
        sa.insert(0, 1);
    }
    if b1 {
        sb.push(1);
    }
    let (m, k) = (sa[sa.len() - 2], sa[sa.len() - 1]);
    let (kb, n) = (sb[sb.len() - 2], sb[sb.len() - 1]);
    if k != kb {
        return Err(Error::shape(format!(
            "MatMul inner dimensions differ: {:?} x {:?}",
            a.shape(),
            b.shape()
        )));
    }
    let batch = broadcast_shape(&sa[..sa.len() - 2], &sb[..sb.len() - 2])?;
    let nb = numel(&batch);
    let (av, bv) = (a.as_slice::<f32>()?, b.as_slice::<f32>()?);
    // Offsets of each broadcast batch in A and B.
    let offsets = |s: &[usize], mat: usize| -> Vec<usize> {
        let bs = &s[..s.len() - 2];
        (0..nb)
            .map(|i| {
                let mut rem = i;
                let mut off = 0;
                let mut stride = 1;
                let mut idx = vec![0; batch.len()];
                for d in (0..batch.len()).rev() {
                    idx[d] = rem % batch[d];
                    rem /= batch[d];
                }
                for d in (0..bs.len()).rev() {
                    let bd = idx[d + batch.len() - bs.len()];
                    off += if bs[d] == 1 { 0 } else { bd } * stride;
                    stride *= bs[d];
                }
                off * mat
            })
            .collect()
    };
    let (oa, ob) = (offsets(&sa, m * k), offsets(&sb, k * n));
    crate::tensor::check_alloc(&[nb, m, n], 4)?;
    let mut y = vec![0f32; nb * m * n];
    let threads = rayon::current_num_threads();
    let one = |i: usize, out: &mut [f32], t: usize| {
        let am = MatRef::row_major(&av[oa[i]..oa[i] + m * k], k, false);
        let bm = MatRef::row_major(&bv[ob[i]..ob[i] + k * n], n, false);
        sgemm(m, n, k, 1.0, am, bm, out, false, t);
    };
    if nb >= threads && threads > 1 {
        y.par_chunks_mut((m * n).max(1))
            .enumerate()
            .for_each(|(i, out)| one(i, out, 1));
    } else {
        y.chunks_mut((m * n).max(1))
            .enumerate()
            .for_each(|(i, out)| one(i, out, threads));
    }
    let mut shape = batch;
    if !a1 {
        shape.push(m);
    }
    if !b1 {
        shape.push(n);
    }
    Ok(vec![Tensor::from_vec(shape, y)?])
}
