//! Element-wise kernels: numpy-style broadcasting binary ops, and unary activations.

use crate::error::{Error, Result};
use crate::tensor::{numel, strides};
use rayon::prelude::*;

/// Below this many elements the work is done on the calling thread.
const PAR_MIN: usize = 1 << 15;

/// The numpy broadcast of two shapes, or a message naming both.
pub fn broadcast_shape(a: &[usize], b: &[usize]) -> Result<Vec<usize>> {
    let r = a.len().max(b.len());
    let mut out = vec![0; r];
    for i in 0..r {
        let da = if i + a.len() >= r { a[i + a.len() - r] } else { 1 };
        let db = if i + b.len() >= r { b[i + b.len() - r] } else { 1 };
        out[i] = if da == db || db == 1 {
            da
        } else if da == 1 {
            db
        } else {
            return Err(Error::shape(format!("shapes {a:?} and {b:?} do not broadcast")));
        };
    }
    Ok(out)
}

/// Strides of `shape` read as if broadcast to `out` (0 along broadcast dimensions).
fn broadcast_strides(shape: &[usize], out: &[usize]) -> Vec<usize> {
    let st = strides(shape);
    let off = out.len() - shape.len();
    (0..out.len())
        .map(|i| if i < off || shape[i - off] == 1 { 0 } else { st[i - off] })
        .collect()
}

/// `out[i] = f(a[i], b[i])` with broadcasting.
pub fn binary<T, F>(a: &[T], sa: &[usize], b: &[T], sb: &[usize], f: F) -> Result<(Vec<T>, Vec<usize>)>
where
    T: Copy + Send + Sync + Default,
    F: Fn(T, T) -> T + Sync,
{
    let shape = broadcast_shape(sa, sb)?;
    let n = crate::tensor::check_alloc(&shape, std::mem::size_of::<T>())?;
    let mut out = vec![T::default(); n];
    if n == 0 {
        return Ok((out, shape));
    }
    if sa == sb {
        let go = |(o, (x, y)): (&mut T, (&T, &T))| *o = f(*x, *y);
        if n >= PAR_MIN {
            out.par_iter_mut().zip(a.par_iter().zip(b.par_iter())).for_each(go);
        } else {
            out.iter_mut().zip(a.iter().zip(b.iter())).for_each(go);
        }
        return Ok((out, shape));
    }
    let ba = broadcast_strides(sa, &shape);
    let bb = broadcast_strides(sb, &shape);
    let last = *shape.last().unwrap_or(&1);
    let (la, lb) = (*ba.last().unwrap_or(&0), *bb.last().unwrap_or(&0));
    let outer = &shape[..shape.len().saturating_sub(1)];
    let outer_strides = strides(outer);
    let row = |r: usize, o: &mut [T]| {
        let (mut oa, mut ob) = (0usize, 0usize);
        let mut rem = r;
        for d in 0..outer.len() {
            let idx = rem / outer_strides[d];
            rem %= outer_strides[d];
            oa += idx * ba[d];
            ob += idx * bb[d];
        }
        // Contiguous or broadcast last axes as slices, so that the loop vectorizes (a bias
        // Add over a transformer's rows: 1-2 ns an element through the strided form).
        match (la, lb) {
            (1, 1) => o
                .iter_mut()
                .zip(&a[oa..oa + last])
                .zip(&b[ob..ob + last])
                .for_each(|((v, &x), &y)| *v = f(x, y)),
            (1, 0) => {
                let y = b[ob];
                o.iter_mut().zip(&a[oa..oa + last]).for_each(|(v, &x)| *v = f(x, y));
            }
            (0, 1) => {
                let x = a[oa];
                o.iter_mut().zip(&b[ob..ob + last]).for_each(|(v, &y)| *v = f(x, y));
            }
            _ => {
                for (k, v) in o.iter_mut().enumerate() {
                    *v = f(a[oa + k * la], b[ob + k * lb]);
                }
            }
        }
    };
    if n >= PAR_MIN {
        out.par_chunks_mut(last).enumerate().for_each(|(r, o)| row(r, o));
    } else {
        out.chunks_mut(last).enumerate().for_each(|(r, o)| row(r, o));
    }
    Ok((out, shape))
}

/// Reference broadcasting: unravels every output index on its own.
pub fn binary_ref<T: Copy + Default, F: Fn(T, T) -> T>(
    a: &[T],
    sa: &[usize],
    b: &[T],
    sb: &[usize],
    f: F,
) -> Result<(Vec<T>, Vec<usize>)> {
    let shape = broadcast_shape(sa, sb)?;
    let n = numel(&shape);
    let pick = |src: &[T], s: &[usize], idx: &[usize]| {
        let off = shape.len() - s.len();
        let mut flat = 0;
        for (d, &dim) in s.iter().enumerate() {
            flat = flat * dim + if dim == 1 { 0 } else { idx[d + off] };
        }
        src[flat]
    };
    let st = strides(&shape);
    let out = (0..n)
        .map(|i| {
            let idx: Vec<usize> = st.iter().zip(&shape).map(|(&s, &d)| (i / s) % d).collect();
            f(pick(a, sa, &idx), pick(b, sb, &idx))
        })
        .collect();
    Ok((out, shape))
}

/// Applies `f` to every element in place, in parallel for large tensors.
pub fn unary_inplace<F: Fn(f32) -> f32 + Sync>(x: &mut [f32], f: F) {
    if x.len() >= PAR_MIN {
        x.par_chunks_mut(4096)
            .for_each(|c| c.iter_mut().for_each(|v| *v = f(*v)));
    } else {
        x.iter_mut().for_each(|v| *v = f(*v));
    }
}

/// `x[i] = f(x[i], y[i])` (same lengths), split across threads like `unary_inplace`.
pub fn binary_inplace<F: Fn(f32, f32) -> f32 + Sync>(x: &mut [f32], y: &[f32], f: F) {
    assert_eq!(x.len(), y.len());
    if x.len() >= PAR_MIN {
        x.par_chunks_mut(4096)
            .zip(y.par_chunks(4096))
            .for_each(|(c, d)| c.iter_mut().zip(d).for_each(|(v, &w)| *v = f(*v, w)));
    } else {
        x.iter_mut().zip(y).for_each(|(v, &w)| *v = f(*v, w));
    }
}

/// `min(max(v, lo), hi)` as onnxruntime computes it: lo > hi yields hi, and NaN stays NaN
/// (`f32::max`/`f32::min` would replace it by a bound).
#[inline]
pub fn clip(v: f32, lo: f32, hi: f32) -> f32 {
    let t = if v < lo { lo } else { v };
    if t > hi {
        hi
    } else {
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn shape_pair() -> impl Strategy<Value = (Vec<usize>, Vec<usize>)> {
        proptest::collection::vec((1usize..4, any::<bool>(), any::<bool>()), 0..5).prop_flat_map(|dims| {
            let full: Vec<usize> = dims.iter().map(|d| d.0).collect();
            let a: Vec<usize> = dims.iter().map(|d| if d.1 { 1 } else { d.0 }).collect();
            let b: Vec<usize> = dims.iter().map(|d| if d.2 { 1 } else { d.0 }).collect();
            (0..=full.len()).prop_map(move |cut| (a.clone(), b[cut..].to_vec()))
        })
    }

    proptest! {
        #[test]
        fn broadcast_matches_reference((sa, sb) in shape_pair()) {
            let a: Vec<f32> = (0..numel(&sa)).map(|i| i as f32 * 0.5 - 3.0).collect();
            let b: Vec<f32> = (0..numel(&sb)).map(|i| i as f32 * 0.25 + 1.0).collect();
            let fast = binary(&a, &sa, &b, &sb, |x, y| x * 10.0 + y).unwrap();
            let slow = binary_ref(&a, &sa, &b, &sb, |x, y| x * 10.0 + y).unwrap();
            prop_assert_eq!(fast, slow);
        }
    }

    #[test]
    fn incompatible_shapes_are_named() {
        let e = broadcast_shape(&[2, 3], &[4]).unwrap_err();
        assert!(e.to_string().contains("[2, 3] and [4]"));
    }

    #[test]
    fn large_broadcast_parallel_path() {
        let sa = vec![4, 64, 16, 16];
        let sb = vec![64, 1, 1];
        let a: Vec<f32> = (0..numel(&sa)).map(|i| (i % 97) as f32).collect();
        let b: Vec<f32> = (0..64).map(|i| i as f32).collect();
        let fast = binary(&a, &sa, &b, &sb, |x, y| x - y).unwrap();
        let slow = binary_ref(&a, &sa, &b, &sb, |x, y| x - y).unwrap();
        assert_eq!(fast, slow);
    }
}
