//! Unique: the distinct elements (or slices along an axis) of a tensor, sorted or in order
//! of first occurrence, with the index of each one's first occurrence, the index of each
//! element's (slice's) value among them and their counts.

use super::take_tables;
use crate::error::Result;
use crate::onnx::attrs::AttrValue;
use crate::ops::facts::{fact_axis, required, DimFact};
use crate::ops::{input, norm_axis, FromOnnx, Op, ParseCtx, ValueFact};
use crate::tensor::{strides, DType, Tensor};
use std::cmp::Ordering;

#[derive(Debug, Clone, PartialEq)]
pub struct Unique {
    pub sorted: bool,
    pub axis: Option<i64>,
    /// How many of the four outputs the node declares.
    pub outputs: usize,
}

impl FromOnnx for Unique {
    fn from_onnx(cx: &ParseCtx) -> Result<Self> {
        Ok(Unique {
            sorted: cx.attrs.int("sorted", 1)? != 0,
            axis: cx.attrs.int_opt("axis")?,
            outputs: cx.outputs.clamp(1, 4),
        })
    }
}

/// Slices `0..n` of `keys` (`n` rows of `w` keys): the first occurrence of each distinct
/// one (sorted or in order of appearance), each row's position among them, their counts.
fn distinct<T: PartialOrd + Copy>(keys: &[T], n: usize, w: usize, sorted: bool) -> (Vec<usize>, Vec<i64>, Vec<i64>) {
    let row = |i: usize| &keys[i * w..(i + 1) * w];
    let cmp = |a: usize, b: usize| {
        row(a)
            .iter()
            .zip(row(b))
            .map(|(x, y)| x.partial_cmp(y).unwrap_or(Ordering::Equal))
            .find(|o| *o != Ordering::Equal)
            .unwrap_or(Ordering::Equal)
    };
    // Rows in value order (stable: the first occurrence leads each run of equals).
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| cmp(a, b));
    let mut group = vec![0usize; n];
    let mut firsts: Vec<usize> = Vec::new();
    for (k, &i) in order.iter().enumerate() {
        if k == 0 || cmp(order[k - 1], i) != Ordering::Equal {
            firsts.push(i);
        }
        group[i] = firsts.len() - 1;
    }
    // Output order of the groups: by value, or by first occurrence.
    let mut rank: Vec<usize> = (0..firsts.len()).collect();
    if !sorted {
        rank.sort_by_key(|&g| firsts[g]);
    }
    let mut pos = vec![0usize; firsts.len()];
    for (p, &g) in rank.iter().enumerate() {
        pos[g] = p;
    }
    let first: Vec<usize> = rank.iter().map(|&g| firsts[g]).collect();
    let inverse: Vec<i64> = group.iter().map(|&g| pos[g] as i64).collect();
    let mut counts = vec![0i64; first.len()];
    for &v in &inverse {
        counts[v as usize] += 1;
    }
    (first, inverse, counts)
}

impl Op for Unique {
    fn op_type(&self) -> &'static str {
        "Unique"
    }
    fn to_attrs(&self, _opset: i64) -> Vec<(String, AttrValue)> {
        let mut v = vec![("sorted".to_string(), AttrValue::Int(self.sorted as i64))];
        if let Some(a) = self.axis {
            v.push(("axis".to_string(), AttrValue::Int(a)));
        }
        v
    }
    fn num_outputs(&self) -> usize {
        self.outputs
    }
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0, "X")?;
        let (x, a) = match self.axis {
            Some(a) => (x.clone(), norm_axis(a, x.rank())?),
            None => (x.clone().reshape(vec![x.len()])?, 0),
        };
        let s = x.shape().to_vec();
        let st = strides(&s);
        let n = s[a];
        let w = x.len().checked_div(n).unwrap_or(0);
        // Each slice's elements in order: the axis moved to the front.
        let mut front = s.clone();
        front.remove(a);
        front.insert(0, n);
        let mut tables: Vec<Vec<Option<usize>>> = Vec::with_capacity(s.len());
        tables.push((0..n).map(|i| Some(i * st[a])).collect());
        for (d, (&len, &stride)) in s.iter().zip(&st).enumerate() {
            if d != a {
                tables.push((0..len).map(|i| Some(i * stride)).collect());
            }
        }
        let rows = take_tables(&x, front, &tables, 0.0)?;
        let (first, inverse, counts) = crate::dispatch_data!(rows.data(), v => distinct(v, n, w, self.sorted));
        let mut y_tables: Vec<Vec<Option<usize>>> = s
            .iter()
            .zip(&st)
            .map(|(&len, &stride)| (0..len).map(|i| Some(i * stride)).collect())
            .collect();
        y_tables[a] = first.iter().map(|&i| Some(i * st[a])).collect();
        let mut y_shape = s.clone();
        y_shape[a] = first.len();
        let k = first.len();
        let outs = vec![
            take_tables(&x, y_shape, &y_tables, 0.0)?,
            Tensor::from_vec(vec![k], first.iter().map(|&i| i as i64).collect::<Vec<_>>())?,
            Tensor::from_vec(vec![n], inverse)?,
            Tensor::from_vec(vec![k], counts)?,
        ];
        Ok(outs.into_iter().take(self.outputs).collect())
    }
    fn output_facts(&self, inputs: &[Option<&ValueFact>], constants: &[Option<&Tensor>]) -> Result<Vec<ValueFact>> {
        let op = "Unique";
        let x = required(inputs, 0, op, "X")?;
        // The output sizes depend on the values: known when the input is a constant.
        if let Some(Some(t)) = constants.first() {
            return Ok(self.eval(&[Some(t)])?.iter().map(ValueFact::of_tensor).collect());
        }
        let (y, n) = match (self.axis, &x.shape) {
            (None, _) => (
                Some(vec![DimFact::Unknown]),
                x.numel().map_or(DimFact::Unknown, DimFact::Known),
            ),
            (Some(a), Some(s)) => {
                let a = fact_axis(op, a, s.len())?;
                let mut y = s.clone();
                y[a] = DimFact::Unknown;
                (Some(y), s[a].clone())
            }
            (Some(_), None) => (None, DimFact::Unknown),
        };
        let i64s = |d: DimFact| ValueFact::new(Some(DType::I64), Some(vec![d]));
        let outs = vec![
            ValueFact::new(x.dtype, y),
            i64s(DimFact::Unknown),
            i64s(n),
            i64s(DimFact::Unknown),
        ];
        Ok(outs.into_iter().take(self.outputs).collect())
    }
    fn moves_data_only(&self) -> bool {
        // Selects elements; the other outputs are indices.
        false
    }
    fn carries_activation(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distinct_rows_sorted_and_in_order_of_appearance() {
        let v = [2, 1, 2, 3, 1];
        let (f, inv, c) = distinct(&v, 5, 1, true);
        assert_eq!((f, inv, c), (vec![1, 0, 3], vec![1, 0, 1, 2, 0], vec![2, 2, 1]));
        let (f, inv, c) = distinct(&v, 5, 1, false);
        assert_eq!((f, inv, c), (vec![0, 1, 3], vec![0, 1, 0, 2, 1], vec![2, 2, 1]));
    }
}
