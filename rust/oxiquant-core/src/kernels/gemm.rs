//! fp32 matrix products, the workhorse of Conv, Gemm and MatMul.
//!
//! The fast path calls the `gemm` crate, chosen over `matrixmultiply` for its built-in
//! rayon split, which keeps both threads busy on the small-N products of late layers where
//! splitting N by hand starves one (benches/RESULTS.md, "GEMM crate choice"). It also
//! dispatches AVX2/AVX-512 kernels at run time, so one wheel fits all CPUs.

/// A strided view of a row-major matrix operand: element (i, j) is at `i * rs + j * cs`.
#[derive(Clone, Copy, Debug)]
pub struct MatRef<'a> {
    pub data: &'a [f32],
    pub rs: usize,
    pub cs: usize,
}

impl<'a> MatRef<'a> {
    /// A row-major `rows x cols` matrix, optionally transposed.
    pub fn row_major(data: &'a [f32], cols: usize, transposed: bool) -> MatRef<'a> {
        if transposed {
            MatRef { data, rs: 1, cs: cols }
        } else {
            MatRef { data, rs: cols, cs: 1 }
        }
    }
}

/// `c[m x n] (row-major, contiguous) = (accumulate ? c : 0) + alpha * a[m x k] * b[k x n]`.
///
/// `threads > 1` lets the product itself run on the current rayon pool; callers that already
/// parallelize over images or groups pass 1.
pub fn sgemm(
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    a: MatRef<'_>,
    b: MatRef<'_>,
    c: &mut [f32],
    accumulate: bool,
    threads: usize,
) {
    debug_assert!(c.len() >= m * n);
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            c[..m * n].iter_mut().for_each(|v| *v = 0.0);
        }
        return;
    }
    // Bounds the strided reads below so that the unsafe call cannot go out of the slices.
    let a_last = (m - 1) * a.rs + (k - 1) * a.cs;
    let b_last = (k - 1) * b.rs + (n - 1) * b.cs;
    assert!(
        a_last < a.data.len() && b_last < b.data.len(),
        "sgemm operand too short"
    );
    let par = if threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: every index the product reads or writes lies inside the slices (checked above),
    // and `c` is borrowed mutably so nothing else aliases it.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            a.data.as_ptr(),
            a.cs as isize,
            a.rs as isize,
            b.data.as_ptr(),
            b.cs as isize,
            b.rs as isize,
            if accumulate { 1.0 } else { 0.0 },
            alpha,
            false,
            false,
            false,
            par,
        );
    }
}

/// Plain triple loop: the reference `sgemm` is tested against.
pub fn sgemm_ref(
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    a: MatRef<'_>,
    b: MatRef<'_>,
    c: &mut [f32],
    accumulate: bool,
) {
    for i in 0..m {
        for j in 0..n {
            let mut acc = 0f64;
            for p in 0..k {
                acc += a.data[i * a.rs + p * a.cs] as f64 * b.data[p * b.rs + j * b.cs] as f64;
            }
            let prev = if accumulate { c[i * n + j] } else { 0.0 };
            c[i * n + j] = prev + alpha * acc as f32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn fill(len: usize, seed: u32) -> Vec<f32> {
        (0..len)
            .map(|i| {
                let x = (i as u32).wrapping_mul(2654435761).wrapping_add(seed);
                (x % 1000) as f32 / 500.0 - 1.0
            })
            .collect()
    }

    proptest! {
        #[test]
        fn fast_matches_reference(m in 1usize..40, n in 1usize..40, k in 0usize..70,
                                  ta in any::<bool>(), tb in any::<bool>(),
                                  acc in any::<bool>(), threads in 1usize..3, seed in 0u32..100) {
            let a = fill(m * k.max(1), seed);
            let b = fill(k.max(1) * n, seed + 1);
            let c0 = fill(m * n, seed + 2);
            let am = MatRef::row_major(&a, if ta { m } else { k.max(1) }, ta);
            let bm = MatRef::row_major(&b, if tb { k.max(1) } else { n }, tb);
            let mut fast = c0.clone();
            let mut slow = c0.clone();
            sgemm(m, n, k, 0.5, am, bm, &mut fast, acc, threads);
            sgemm_ref(m, n, k, 0.5, am, bm, &mut slow, acc);
            for (x, y) in fast.iter().zip(&slow) {
                prop_assert!((x - y).abs() <= 1e-4 * (1.0 + y.abs()), "{x} vs {y}");
            }
        }
    }
}
