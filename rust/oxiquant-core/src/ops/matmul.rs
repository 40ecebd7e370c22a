//! Gemm and MatMul over the fp32 GEMM kernel.

use super::{input, AttrReader};
use crate::error::{Error, Result};
use crate::graph::AttrValue;
use crate::kernels::elementwise::broadcast_shape;
use crate::kernels::gemm::{sgemm, MatRef};
use crate::tensor::{numel, Tensor};
use rayon::prelude::*;

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

    pub fn to_attrs(&self) -> Vec<(String, AttrValue)> {
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

    pub fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
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
