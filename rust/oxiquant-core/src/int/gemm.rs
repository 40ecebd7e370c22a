//! Quantized Gemm / MatMul with a constant weight (`QGemm`), on the packed integer product
//! (`kernels::qgemm`).

use super::{accumulator_bound, weights_as_i8, Requant};
use crate::error::{Error, Result};
use crate::kernels::qgemm::{self, Kernel, PackedA};
use crate::kernels::requant::{requant_cols, QElem};
use crate::tensor::{DType, Tensor};

/// Quantized Gemm / MatMul with a constant weight: `Y[r][m] = requant(sum_k X[r][k] W[m][k] + b[m])`
/// over the rows `r` of the input's leading dimensions.
#[derive(Debug, Clone, PartialEq)]
pub struct QGemm {
    pub k: usize,
    pub m: usize,
    /// The weight `[m][k]` minus its zero point (kept for export).
    pub weight: Vec<i16>,
    /// Zero point of the input (0 for oxiquant's own models).
    pub x_zero: i32,
    /// It came from a MatMul (no bias; any input rank) rather than a Gemm.
    pub matmul: bool,
    /// The weight as the packed right operand `[k][m]`.
    packed: Vec<i16>,
    pub bias: Vec<i32>,
    pub requant: Requant,
    acc_bound: i64,
    /// The requantization factor of each output feature (`requant.factor` expanded).
    col_factor: Vec<f32>,
}

impl QGemm {
    /// `weight` is `[m][k]` (output features by inputs) minus its zero point; `x_zero` is
    /// the input's zero point.
    pub fn new(weight: &[i16], m: usize, k: usize, bias: Vec<i32>, requant: Requant, x_zero: i32) -> Result<QGemm> {
        if weight.len() != m * k || bias.len() != m {
            return Err(Error::shape(format!(
                "quantized Gemm: {} weights and {} bias values for {m} x {k}",
                weight.len(),
                bias.len()
            )));
        }
        let mut packed = Vec::new();
        qgemm::pack_b_transposed(weight, m, k, &mut packed);
        let acc_bound = accumulator_bound(weight, m, &bias, x_zero, "Gemm")?;
        let col_factor = match requant.factor.len() {
            1 => vec![requant.factor[0]; m],
            n if n == m => requant.factor.clone(),
            n => {
                return Err(Error::shape(format!(
                    "quantized Gemm: {n} requantization factors for {m} output features"
                )))
            }
        };
        Ok(QGemm {
            k,
            m,
            weight: weight.to_vec(),
            x_zero,
            matmul: false,
            packed,
            bias,
            requant,
            acc_bound,
            col_factor,
        })
    }

    /// Whether every accumulator plus bias is an integer an f32 holds exactly (below 2^24 in
    /// magnitude): then `eval_to_float` gives what the fake-quantized graph's f32 product
    /// gives on the same integers.
    pub fn exact_in_f32(&self) -> bool {
        self.acc_bound < 1 << 24
    }

    /// `sum_k X[r][k] W[m][k] + b[m]` as f32, not requantized: the layer of a dequantizer
    /// (its output stays float). Exact when `exact_in_f32`.
    pub fn eval_to_float(&self, x: &Tensor) -> Result<Tensor> {
        let (rows, shape) = self.rows_and_shape(x)?;
        let kernel = Kernel::detect();
        with_qelem!(x.dtype(), T => {
            let a = PackedA::centered(x.as_slice::<T>()?, rows, self.k, self.x_zero as i16);
            let mut y = vec![0f32; rows * self.m];
            let parallel = self.parallel(rows);
            qgemm::qgemm(kernel, &a, &self.packed, self.m, &mut y, parallel, |_, c0, acc, dst| {
                for ((d, &a), &b) in dst.iter_mut().zip(acc).zip(&self.bias[c0..]) {
                    *d = (a + b) as f32;
                }
            });
            Tensor::from_vec(shape, y)
        })
    }

    /// The rows of input `x` (`[..., k]`) and the output's shape (`[..., m]`).
    fn rows_and_shape(&self, x: &Tensor) -> Result<(usize, Vec<usize>)> {
        let xs = x.shape();
        if xs.is_empty() || *xs.last().unwrap_or(&0) != self.k {
            return Err(Error::shape(format!(
                "quantized Gemm expects an input [..., {}], got {xs:?}",
                self.k
            )));
        }
        let mut shape = xs.to_vec();
        if let Some(last) = shape.last_mut() {
            *last = self.m;
        }
        Ok((x.len() / self.k.max(1), shape))
    }

    /// Parallel over row blocks and weight panels once the product is worth a task split
    /// (ResNet-50's classifier at batch 1, 2M products, ran on one thread when this looked
    /// at the rows alone).
    fn parallel(&self, rows: usize) -> bool {
        rows > qgemm::MR || rows * self.m * self.k >= 1 << 18
    }

    /// The weights as i8, for the QOperator export of oxiquant's own models.
    pub fn weight_i8(&self) -> Result<Vec<i8>> {
        weights_as_i8(&self.weight, "quantized Gemm")
    }

    pub fn eval(&self, x: &Tensor) -> Result<Tensor> {
        let (rows, shape) = self.rows_and_shape(x)?;
        let kernel = Kernel::detect();
        with_qelem!(x.dtype(), T => {
            let a = PackedA::centered(x.as_slice::<T>()?, rows, self.k, self.x_zero as i16);
            with_qelem!(self.requant.out, O => {
                let mut y = vec![O::from_i32(0); rows * self.m];
                let parallel = self.parallel(rows);
                let fast = self.acc_bound < self.requant.rounding.fast_bound();
                let out = self.requant.row_out();
                qgemm::qgemm(kernel, &a, &self.packed, self.m, &mut y, parallel, |_, c0, acc, dst| {
                    // Columns are output features: one channel (factor, bias) per element.
                    let cols = c0..c0 + acc.len();
                    if fast {
                        requant_cols(acc, &self.bias[cols.clone()], &self.col_factor[cols], out, dst);
                    } else {
                        for (j, (a, d)) in acc.iter().zip(dst.chunks_mut(1)).enumerate() {
                            let c = c0 + j;
                            self.requant.row(c, std::slice::from_ref(a), self.bias[c], self.acc_bound, d);
                        }
                    }
                });
                Tensor::from_vec(shape.clone(), y)
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The float-output product against the plain integer reference plus bias.
        #[test]
        fn to_float_matches_the_reference(
            rows in 1usize..40, k in 1usize..70, m in 1usize..40, seed in any::<u64>(),
        ) {
            let mut s = seed | 1;
            let mut next = || { s ^= s << 13; s ^= s >> 7; s ^= s << 17; s };
            let x: Vec<i8> = (0..rows * k).map(|_| (next() % 256) as u8 as i8).collect();
            let w: Vec<i16> = (0..m * k).map(|_| (next() % 255) as i16 - 127).collect();
            let bias: Vec<i32> = (0..m).map(|_| (next() % 20001) as i32 - 10000).collect();
            let g = QGemm::new(&w, m, k, bias.clone(), Requant::new(vec![1.0], -128, 127).unwrap(), 0).unwrap();
            prop_assert!(g.exact_in_f32());
            let y = g.eval_to_float(&Tensor::from_vec(vec![rows, k], x.clone()).unwrap()).unwrap();
            // The reference's right operand is `[k][m]`.
            let mut wkm = vec![0i16; k * m];
            for i in 0..m {
                for j in 0..k {
                    wkm[j * m + i] = w[i * k + j];
                }
            }
            let want = crate::kernels::qgemm::qgemm_ref(&x, &wkm, rows, k, m);
            let want: Vec<f32> = want.iter().enumerate().map(|(i, &a)| (a + bias[i % m]) as f32).collect();
            prop_assert_eq!(y.as_slice::<f32>().unwrap(), &want[..]);
        }
    }
}
