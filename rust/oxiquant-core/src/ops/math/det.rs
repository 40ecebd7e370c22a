//! Det: the determinant of each square matrix of `[*, M, M]` (float32), by Gaussian
//! elimination with partial pivoting in float64.

use crate::error::{Error, Result};
use crate::ops::facts::{expect_dtype, expect_min_rank, fact_error, required, unify_dim};
use crate::ops::{input, FromOnnx, Op, ParseCtx, ValueFact};
use crate::tensor::{DType, Tensor};

#[derive(Debug, Clone, PartialEq)]
pub struct Det;

impl FromOnnx for Det {
    fn from_onnx(_cx: &ParseCtx) -> Result<Self> {
        Ok(Det)
    }
}

/// The determinant of the `m x m` row-major matrix `a`.
pub fn determinant(a: &[f32], m: usize) -> f64 {
    let mut w: Vec<f64> = a.iter().map(|&v| f64::from(v)).collect();
    let mut det = 1.0f64;
    for col in 0..m {
        let mut piv = col;
        for r in col + 1..m {
            if w[r * m + col].abs() > w[piv * m + col].abs() {
                piv = r;
            }
        }
        let p = w[piv * m + col];
        if p == 0.0 {
            return 0.0;
        }
        if piv != col {
            for k in 0..m {
                w.swap(piv * m + k, col * m + k);
            }
            det = -det;
        }
        det *= p;
        for r in col + 1..m {
            let f = w[r * m + col] / p;
            if f != 0.0 {
                for k in col..m {
                    w[r * m + k] -= f * w[col * m + k];
                }
            }
        }
    }
    det
}

impl Op for Det {
    fn op_type(&self) -> &'static str {
        "Det"
    }
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0, "X")?;
        let s = x.shape();
        let r = s.len();
        if r < 2 || s[r - 1] != s[r - 2] {
            return Err(Error::shape(format!("Det: X must be [*, M, M], got {s:?}")));
        }
        let m = s[r - 1];
        let v = x.as_slice::<f32>()?;
        let batch: usize = s[..r - 2].iter().product();
        let out: Vec<f32> = (0..batch)
            .map(|b| determinant(&v[b * m * m..(b + 1) * m * m], m) as f32)
            .collect();
        Ok(vec![Tensor::from_vec(s[..r - 2].to_vec(), out)?])
    }
    fn output_facts(&self, inputs: &[Option<&ValueFact>], _constants: &[Option<&Tensor>]) -> Result<Vec<ValueFact>> {
        let x = required(inputs, 0, "Det", "X")?;
        expect_dtype("Det", x, "X", &[DType::F32])?;
        expect_min_rank("Det", x, "X", 2, "[*, M, M]")?;
        let shape = match &x.shape {
            Some(s) => {
                let r = s.len();
                unify_dim("Det", &s[r - 1], &s[r - 2], || {
                    format!("X must be [*, M, M], got {}", x.shape_string())
                })
                .map_err(|e| match e {
                    Error::Shape(m) => fact_error("Det", m.trim_start_matches("Det: ")),
                    e => e,
                })?;
                Some(s[..r - 2].to_vec())
            }
            None => None,
        };
        Ok(vec![ValueFact::new(Some(DType::F32), shape)])
    }
    fn carries_activation(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The Leibniz formula (sum over permutations), the definition.
    fn leibniz(a: &[f32], m: usize) -> f64 {
        fn perms(m: usize) -> Vec<Vec<usize>> {
            if m == 0 {
                return vec![vec![]];
            }
            let mut out = Vec::new();
            for p in perms(m - 1) {
                for i in 0..=p.len() {
                    let mut q = p.clone();
                    q.insert(i, m - 1);
                    out.push(q);
                }
            }
            out
        }
        perms(m)
            .into_iter()
            .map(|p| {
                let inversions = (0..m)
                    .flat_map(|i| (i + 1..m).map(move |j| (i, j)))
                    .filter(|&(i, j)| p[i] > p[j])
                    .count();
                let sign = if inversions % 2 == 0 { 1.0 } else { -1.0 };
                sign * (0..m).map(|i| f64::from(a[i * m + p[i]])).product::<f64>()
            })
            .sum()
    }

    proptest! {
        #[test]
        fn elimination_matches_the_leibniz_formula(m in 0usize..5, seed in any::<u64>()) {
            let a = crate::testing::values(m * m, seed);
            let (got, want) = (determinant(&a, m), leibniz(&a, m));
            prop_assert!((got - want).abs() <= 1e-9 * (1.0 + want.abs()), "{got} vs {want}");
        }
    }
}
