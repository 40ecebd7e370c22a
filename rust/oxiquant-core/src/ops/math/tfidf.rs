//! TfIdfVectorizer: counts the n-grams of a pool (integer tokens) in each row of an int32 or
//! int64 tensor, with skips, and writes the counts (TF), their indicator times a weight
//! (IDF) or their product with it (TFIDF) as float32, one column per pooled n-gram
//! (`ngram_indexes`). Counting follows onnxruntime: for each skip distance `d` from 1 to
//! `max_skip_count + 1`, each start position and each length `n` from `min_gram_length` to
//! `max_gram_length`, the tokens at `start, start + d, ...` are one n-gram; unigrams are
//! counted once (their count does not depend on the skip).

use crate::error::{Error, Result};
use crate::onnx::attrs::AttrValue;
use crate::ops::facts::{expect_dtype, fact_error, required};
use crate::ops::{input, DimFact, FromOnnx, Op, ParseCtx, ValueFact};
use crate::tensor::{DType, Tensor};
use std::collections::HashMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TfIdfMode {
    Tf,
    Idf,
    TfIdf,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TfIdfVectorizer {
    pub min_gram: usize,
    pub max_gram: usize,
    pub max_skip: usize,
    pub mode: TfIdfMode,
    pub ngram_counts: Vec<i64>,
    pub ngram_indexes: Vec<i64>,
    pub pool: Vec<i64>,
    pub weights: Option<Vec<f32>>,
    /// Each pooled n-gram and its output column.
    columns: Vec<(Vec<i64>, usize)>,
    /// The number of output columns (the largest index plus one).
    width: usize,
}

/// The pool split into its n-grams, each with its column; errors name what is inconsistent.
fn pool_ngrams(counts: &[i64], indexes: &[i64], pool: &[i64]) -> std::result::Result<Vec<(Vec<i64>, usize)>, String> {
    let mut out = Vec::new();
    for (i, &start) in counts.iter().enumerate() {
        let end = counts.get(i + 1).copied().unwrap_or(pool.len() as i64);
        let n = i + 1;
        if start < 0 || end < start || end as usize > pool.len() || !((end - start) as usize).is_multiple_of(n) {
            return Err(format!(
                "ngram_counts {counts:?} does not split a pool of {} values into {n}-grams",
                pool.len()
            ));
        }
        for g in pool[start as usize..end as usize].chunks(n) {
            out.push(g.to_vec());
        }
    }
    if out.len() != indexes.len() {
        return Err(format!(
            "the pool holds {} n-grams but ngram_indexes has {} values",
            out.len(),
            indexes.len()
        ));
    }
    out.into_iter()
        .zip(indexes)
        .map(|(g, &c)| {
            usize::try_from(c)
                .map(|c| (g, c))
                .map_err(|_| format!("negative ngram index {c}"))
        })
        .collect()
}

impl FromOnnx for TfIdfVectorizer {
    fn from_onnx(cx: &ParseCtx) -> Result<Self> {
        let a = cx.attrs;
        if a.has("pool_strings") {
            return Err(a.unsupported("pool_strings (string tensors are not supported)"));
        }
        let mode = match a.string("mode", "")?.as_str() {
            "TF" => TfIdfMode::Tf,
            "IDF" => TfIdfMode::Idf,
            "TFIDF" => TfIdfMode::TfIdf,
            other => return Err(a.unsupported(format!("mode '{other}' (TF, IDF or TFIDF)"))),
        };
        let int = |name: &str| -> Result<usize> {
            let v = a.int(name, -1)?;
            usize::try_from(v).map_err(|_| a.unsupported(format!("{name} {v} (a non-negative value is required)")))
        };
        let (min_gram, max_gram, max_skip) = (int("min_gram_length")?, int("max_gram_length")?, int("max_skip_count")?);
        if min_gram == 0 || max_gram < min_gram {
            return Err(a.unsupported(format!(
                "min_gram_length {min_gram} and max_gram_length {max_gram} (1 <= min <= max)"
            )));
        }
        let ngram_counts = a.ints_opt("ngram_counts")?.unwrap_or_default();
        let ngram_indexes = a.ints_opt("ngram_indexes")?.unwrap_or_default();
        let pool = a.ints_opt("pool_int64s")?.unwrap_or_default();
        let weights = a.floats_opt("weights")?;
        let columns = pool_ngrams(&ngram_counts, &ngram_indexes, &pool).map_err(|m| a.unsupported(m))?;
        let width = columns.iter().map(|(_, c)| c + 1).max().unwrap_or(0);
        if let Some(w) = &weights {
            if w.len() < width {
                return Err(a.unsupported(format!("{} weights for {width} output columns", w.len())));
            }
        }
        Ok(TfIdfVectorizer {
            min_gram,
            max_gram,
            max_skip,
            mode,
            ngram_counts,
            ngram_indexes,
            pool,
            weights,
            columns,
            width,
        })
    }
}

impl TfIdfVectorizer {
    /// The counts of one row of tokens, one per column.
    fn count_row(&self, row: &[i64], map: &HashMap<&[i64], usize>, out: &mut [f32]) {
        let mut first = self.min_gram;
        let mut gram: Vec<i64> = Vec::with_capacity(self.max_gram);
        for d in 1..=self.max_skip.saturating_add(1) {
            for start in 0..row.len() {
                gram.clear();
                for n in 1..=self.max_gram {
                    let Some(&t) = (n - 1).checked_mul(d).and_then(|o| row.get(start + o)) else {
                        break;
                    };
                    gram.push(t);
                    if n >= first {
                        if let Some(&c) = map.get(gram.as_slice()) {
                            out[c] += 1.0;
                        }
                    }
                }
            }
            if first == 1 {
                first = 2;
                if first > self.max_gram {
                    break;
                }
            }
        }
    }
}

impl Op for TfIdfVectorizer {
    fn op_type(&self) -> &'static str {
        "TfIdfVectorizer"
    }
    fn to_attrs(&self, _opset: i64) -> Vec<(String, AttrValue)> {
        let mode = match self.mode {
            TfIdfMode::Tf => "TF",
            TfIdfMode::Idf => "IDF",
            TfIdfMode::TfIdf => "TFIDF",
        };
        let mut v = vec![
            ("min_gram_length".into(), AttrValue::Int(self.min_gram as i64)),
            ("max_gram_length".into(), AttrValue::Int(self.max_gram as i64)),
            ("max_skip_count".into(), AttrValue::Int(self.max_skip as i64)),
            ("mode".into(), AttrValue::String(mode.into())),
            ("ngram_counts".into(), AttrValue::Ints(self.ngram_counts.clone())),
            ("ngram_indexes".into(), AttrValue::Ints(self.ngram_indexes.clone())),
            ("pool_int64s".into(), AttrValue::Ints(self.pool.clone())),
        ];
        if let Some(w) = &self.weights {
            v.push(("weights".into(), AttrValue::Floats(w.clone())));
        }
        v
    }
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0, "X")?;
        if !matches!(x.dtype(), DType::I32 | DType::I64) || !(x.rank() == 1 || x.rank() == 2) {
            return Err(Error::shape(format!(
                "TfIdfVectorizer: X must be int32 or int64 of shape [C] or [N, C], got {} {:?}",
                x.dtype(),
                x.shape()
            )));
        }
        let v = x.to_i64_vec()?;
        let (rows, c) = if x.rank() == 1 {
            (1, x.len())
        } else {
            (x.shape()[0], x.shape()[1])
        };
        let map: HashMap<&[i64], usize> = self.columns.iter().map(|(g, c)| (g.as_slice(), *c)).collect();
        let w = self.width;
        crate::tensor::check_alloc(&[rows, w], 4)?;
        let mut y = vec![0f32; rows * w];
        for r in 0..rows {
            let out = &mut y[r * w..(r + 1) * w];
            self.count_row(&v[r * c..(r + 1) * c], &map, out);
            match (self.mode, &self.weights) {
                (TfIdfMode::Tf, _) | (TfIdfMode::TfIdf, None) => {}
                (TfIdfMode::Idf, None) => out.iter_mut().for_each(|o| *o = if *o > 0.0 { 1.0 } else { 0.0 }),
                (TfIdfMode::Idf, Some(wt)) => {
                    out.iter_mut()
                        .zip(wt)
                        .for_each(|(o, &k)| *o = if *o > 0.0 { k } else { 0.0 });
                }
                (TfIdfMode::TfIdf, Some(wt)) => out.iter_mut().zip(wt).for_each(|(o, &k)| *o *= k),
            }
        }
        let shape = if x.rank() == 1 { vec![w] } else { vec![rows, w] };
        Ok(vec![Tensor::from_vec(shape, y)?])
    }
    fn output_facts(&self, inputs: &[Option<&ValueFact>], _constants: &[Option<&Tensor>]) -> Result<Vec<ValueFact>> {
        let op = "TfIdfVectorizer";
        let x = required(inputs, 0, op, "X")?;
        expect_dtype(op, x, "X", &[DType::I32, DType::I64])?;
        let w = DimFact::Known(self.width);
        let shape = match x.rank() {
            None => None,
            Some(1) => Some(vec![w]),
            Some(2) => Some(vec![x.dim(0), w]),
            Some(_) => {
                return Err(fact_error(
                    op,
                    format!("X must be [C] or [N, C], got {}", x.shape_string()),
                ))
            }
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

    /// The counts by the definition: every (start, skip distance, length) tuple whose
    /// tokens form a pooled n-gram, unigrams at skip distance 1 only.
    fn counts_ref(row: &[i64], grams: &[(Vec<i64>, usize)], min: usize, max: usize, skip: usize, w: usize) -> Vec<f32> {
        let mut out = vec![0f32; w];
        for (g, c) in grams {
            let n = g.len();
            if n < min || n > max {
                continue;
            }
            let dists = if n == 1 { 1 } else { skip + 1 };
            for d in 1..=dists {
                for s in 0..row.len() {
                    if s + (n - 1) * d < row.len() && (0..n).all(|k| row[s + k * d] == g[k]) {
                        out[*c] += 1.0;
                    }
                }
            }
        }
        out
    }

    proptest! {
        #[test]
        fn counting_matches_the_definition(
            row in prop::collection::vec(0i64..4, 0..12),
            min in 1usize..3,
            extra in 0usize..2,
            skip in 0usize..3,
        ) {
            let max = min + extra;
            // Every unigram and bigram over tokens 0..3, each its own column.
            let uni: Vec<i64> = (0..3).collect();
            let bi: Vec<i64> = (0..3).flat_map(|a| (0..3).flat_map(move |b| [a, b])).collect();
            let pool: Vec<i64> = uni.iter().chain(&bi).copied().collect();
            let indexes: Vec<i64> = (0..12).collect();
            let columns = pool_ngrams(&[0, 3], &indexes, &pool).unwrap();
            let op = TfIdfVectorizer {
                min_gram: min, max_gram: max, max_skip: skip, mode: TfIdfMode::Tf,
                ngram_counts: vec![0, 3], ngram_indexes: indexes, pool, weights: None,
                columns: columns.clone(), width: 12,
            };
            let map: HashMap<&[i64], usize> = columns.iter().map(|(g, c)| (g.as_slice(), *c)).collect();
            let mut got = vec![0f32; 12];
            op.count_row(&row, &map, &mut got);
            prop_assert_eq!(got, counts_ref(&row, &columns, min, max, skip, 12));
        }
    }
}
