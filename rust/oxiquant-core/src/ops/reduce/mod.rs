//! Reductions over axes (ReduceMean, ReduceSum, ...), ArgMax/ArgMin, TopK and CumSum.

mod arg;
mod cumsum;
mod over_axes;
mod topk;

pub use arg::ArgReduce;
pub use cumsum::CumSum;
pub use over_axes::{Reduce, ReduceKind};
pub use topk::TopK;

use crate::error::{Error, Result};

/// The distinct axes of `axes` (negative from the end) against a rank, sorted.
pub(crate) fn axes_set(axes: &[i64], rank: usize, op: &str) -> Result<Vec<usize>> {
    let mut out = Vec::with_capacity(axes.len());
    for &a in axes {
        let r = rank as i64;
        let n = if a < 0 { a + r } else { a };
        if n < 0 || n >= r.max(1) || (rank == 0 && n != 0) {
            return Err(Error::shape(format!("{op}: axis {a} out of range for rank {rank}")));
        }
        if out.contains(&(n as usize)) {
            return Err(Error::shape(format!("{op}: axis {a} repeated in {axes:?}")));
        }
        out.push(n as usize);
    }
    out.sort_unstable();
    Ok(out)
}

/// Visits every element of a tensor of `shape` in order with the flat offset of the output
/// element it reduces into (the axes of `mask` collapsed to one).
pub(crate) fn for_each_reduced(shape: &[usize], mask: &[bool], mut f: impl FnMut(usize, usize)) {
    let n: usize = shape.iter().product();
    if n == 0 {
        return;
    }
    let r = shape.len();
    // Output strides: 0 along reduced axes.
    let mut ost = vec![0usize; r];
    let mut acc = 1;
    for d in (0..r).rev() {
        if !mask[d] {
            ost[d] = acc;
            acc *= shape[d];
        }
    }
    let mut idx = vec![0usize; r];
    let mut o = 0usize;
    for i in 0..n {
        f(i, o);
        // Odometer step.
        for d in (0..r).rev() {
            idx[d] += 1;
            o += ost[d];
            if idx[d] < shape[d] {
                break;
            }
            o -= ost[d] * idx[d];
            idx[d] = 0;
        }
    }
}
