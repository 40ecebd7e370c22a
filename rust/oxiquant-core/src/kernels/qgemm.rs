//! Exact integer matrix product for quantized layers: `C[m][n] = sum_k A[m][k] * B[k][n]`
//! with 8-bit operands (i8 weights, i8 or u8 activations) and i32 accumulators.
//!
//! Operands are widened to i16 and multiplied in pairs along `k` (AVX2 `vpmaddwd`: two
//! products summed into one i32 lane), which is exact for any 8-bit values. The faster
//! `vpmaddubsw` (u8 x i8 pairs summed into a *saturating* i16) is not used: 255 * 127 * 2
//! overflows i16, which is why onnxruntime's AVX2 u8s8 kernels can differ from the exact
//! result on 8-bit weights. Exactness is the point of the integer engine.
//!
//! Layouts: `A` (weights) is packed once per layer into blocks of `MR` rows, `[k2][MR]` of
//! i32 words each holding the pair `(A[r][2kk], A[r][2kk+1])`; `B` is packed per call into
//! panels of `NR` columns, `[k2][NR][2]` i16. `k2 = ceil(k / 2)`; padding is zero.

#[cfg(target_arch = "x86_64")]
use super::requant::RowAvx2;
use super::requant::{QElem, RowsRequant};
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// Rows (output channels) per micro-tile.
pub const MR: usize = 6;
/// Columns (pixels) per micro-tile: two vectors of eight i32 lanes. 6 x 16 keeps twelve
/// accumulators, two B vectors and one broadcast in the sixteen AVX2 registers.
pub const NR: usize = 16;

/// Packs an `i16` pair into the i32 word `vpmaddwd` reads (low half first).
#[inline]
fn pair(lo: i16, hi: i16) -> i32 {
    ((hi as i32) << 16) | (lo as u16 as i32)
}

/// Weights `[m][k]` packed once for `qgemm`.
#[derive(Debug, Clone, PartialEq)]
pub struct PackedA {
    pub m: usize,
    pub k: usize,
    data: Vec<i32>,
}

impl PackedA {
    /// `w` is row-major `[m][k]`.
    pub fn new<T: QAct>(w: &[T], m: usize, k: usize) -> PackedA {
        PackedA::centered(w, m, k, 0)
    }

    /// Packs `w - zero` (activations with a zero point, rows of a Gemm input). The values
    /// must fit i16: 8-bit values minus an 8-bit zero point do.
    pub fn centered<T: QAct>(w: &[T], m: usize, k: usize, zero: i16) -> PackedA {
        let k2 = k.div_ceil(2);
        let blocks = m.div_ceil(MR);
        let mut data = vec![0i32; blocks * k2 * MR];
        for row in 0..m {
            let (b, r) = (row / MR, row % MR);
            let src = &w[row * k..(row + 1) * k];
            for kk in 0..k2 {
                let lo = src[2 * kk].widen() - zero;
                let hi = src.get(2 * kk + 1).map_or(0, |&v| v.widen() - zero);
                data[(b * k2 + kk) * MR + r] = pair(lo, hi);
            }
        }
        PackedA { m, k, data }
    }

    fn k2(&self) -> usize {
        self.k.div_ceil(2)
    }

    /// The packed words of row block `b` (`[k2][MR]`).
    pub fn block_words(&self, b: usize) -> &[i32] {
        let len = self.k2() * MR;
        &self.data[b * len..(b + 1) * len]
    }

    /// The original value `A[row][k]` (for the reference kernel and tests).
    pub fn get(&self, row: usize, k: usize) -> i32 {
        let word = self.data[((row / MR) * self.k2() + k / 2) * MR + row % MR];
        if k.is_multiple_of(2) {
            word as i16 as i32
        } else {
            word >> 16
        }
    }
}

/// Activation values that widen to i16 exactly.
pub trait QAct: Copy + Send + Sync + 'static {
    fn widen(self) -> i16;
}
impl QAct for i8 {
    #[inline]
    fn widen(self) -> i16 {
        self as i16
    }
}
impl QAct for u8 {
    #[inline]
    fn widen(self) -> i16 {
        self as i16
    }
}
impl QAct for i16 {
    #[inline]
    fn widen(self) -> i16 {
        self
    }
}

/// Number of i16 values of a packed `B` with `k` rows and `n` columns.
pub fn packed_b_len(k: usize, n: usize) -> usize {
    n.div_ceil(NR) * k.div_ceil(2) * NR * 2
}

/// Index in a packed `B` (`k` rows) of element `(row, col)`.
#[inline]
pub fn packed_b_index(k2: usize, row: usize, col: usize) -> usize {
    (((col / NR) * k2 + row / 2) * NR + col % NR) * 2 + row % 2
}

/// Packs row-major `b[k][n]` minus `zero` (an activation's zero point; 0 for oxiquant's own
/// models), in parallel over panels when `parallel`.
pub fn pack_b_rows<T: QAct>(b: &[T], k: usize, n: usize, zero: i16, out: &mut Vec<i16>, parallel: bool) {
    let k2 = k.div_ceil(2);
    out.clear();
    out.resize(packed_b_len(k, n), 0);
    if n == 0 || k == 0 {
        return;
    }
    let panel = |(p, dst): (usize, &mut [i16])| {
        let (c0, cols) = (p * NR, NR.min(n - p * NR));
        for (kk, d) in dst.chunks_exact_mut(NR * 2).enumerate() {
            let r0 = &b[2 * kk * n + c0..2 * kk * n + c0 + cols];
            if 2 * kk + 1 < k {
                let r1 = &b[(2 * kk + 1) * n + c0..(2 * kk + 1) * n + c0 + cols];
                for ((pair, &x0), &x1) in d.chunks_exact_mut(2).zip(r0).zip(r1) {
                    pair[0] = x0.widen() - zero;
                    pair[1] = x1.widen() - zero;
                }
            } else {
                for (pair, &x0) in d.chunks_exact_mut(2).zip(r0) {
                    pair[0] = x0.widen() - zero;
                }
            }
        }
    };
    if parallel {
        out.par_chunks_mut(k2 * NR * 2).enumerate().for_each(panel);
    } else {
        out.chunks_mut(k2 * NR * 2).enumerate().for_each(panel);
    }
}

/// Packs the transpose of row-major `x[n][k]` (a batch of rows, as Gemm reads it).
pub fn pack_b_transposed<T: QAct>(x: &[T], n: usize, k: usize, out: &mut Vec<i16>) {
    let k2 = k.div_ceil(2);
    out.clear();
    out.resize(packed_b_len(k, n), 0);
    for col in 0..n {
        let src = &x[col * k..(col + 1) * k];
        for (row, &v) in src.iter().enumerate() {
            out[packed_b_index(k2, row, col)] = v.widen();
        }
    }
}

/// One micro-tile, plain Rust: `tile[r][j] = sum_kk madd(a[kk][r], b[kk][j])`.
fn tile_ref(a: &[i32], b: &[i16], k2: usize, tile: &mut [[i32; NR]; MR]) {
    *tile = [[0; NR]; MR];
    for kk in 0..k2 {
        let bv = &b[kk * NR * 2..(kk + 1) * NR * 2];
        for (r, row) in tile.iter_mut().enumerate() {
            let w = a[kk * MR + r];
            let (w0, w1) = (w as i16 as i32, w >> 16);
            for (j, acc) in row.iter_mut().enumerate() {
                *acc += w0 * bv[2 * j] as i32 + w1 * bv[2 * j + 1] as i32;
            }
        }
    }
}

/// The sums of the first `R` rows of a micro-tile, two vectors of eight columns per row.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn tile_sums<const R: usize>(a: &[i32], b: &[i16], k2: usize) -> [[std::arch::x86_64::__m256i; 2]; R] {
    // SAFETY: the caller checked AVX2 and `a.len() >= k2 * MR`, `b.len() >= k2 * NR * 2`
    // (R <= MR).
    unsafe {
        use std::arch::x86_64::*;

        let mut acc = [[_mm256_setzero_si256(); 2]; R];
        let (ap, bp) = (a.as_ptr(), b.as_ptr());
        for kk in 0..k2 {
            let b0 = _mm256_loadu_si256(bp.add(kk * NR * 2) as *const __m256i);
            let b1 = _mm256_loadu_si256(bp.add(kk * NR * 2 + 16) as *const __m256i);
            for (r, acc_r) in acc.iter_mut().enumerate() {
                let w = _mm256_set1_epi32(*ap.add(kk * MR + r));
                acc_r[0] = _mm256_add_epi32(acc_r[0], _mm256_madd_epi16(w, b0));
                acc_r[1] = _mm256_add_epi32(acc_r[1], _mm256_madd_epi16(w, b1));
            }
        }
        acc
    }
}

/// The first `R` rows of a micro-tile (the others are left as they are): a block whose
/// last rows are padding (a Gemm over a batch of one: one row of six) multiplies only the
/// rows it has.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn tile_avx2<const R: usize>(a: &[i32], b: &[i16], k2: usize, tile: &mut [[i32; NR]; MR]) {
    // SAFETY: as `tile_sums`; the stores stay inside `tile` (R <= MR).
    unsafe {
        use std::arch::x86_64::*;
        for (row, acc_r) in tile.iter_mut().zip(tile_sums::<R>(a, b, k2)) {
            _mm256_storeu_si256(row.as_mut_ptr() as *mut __m256i, acc_r[0]);
            _mm256_storeu_si256(row.as_mut_ptr().add(8) as *mut __m256i, acc_r[1]);
        }
    }
}

/// `tile_avx2::<R>` requantized in registers: row `r` of the block goes through `rows[r]`
/// into the `cols` (at most `NR`) bytes at `dst[r]`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn tile_avx2_requant<const R: usize>(
    a: &[i32],
    b: &[i16],
    k2: usize,
    rows: &[RowAvx2],
    dst: &[*mut u8],
    cols: usize,
) {
    // SAFETY: as `tile_sums`; each `dst[r]` (r < R <= rows.len(), dst.len()) has `cols`
    // writable bytes.
    unsafe {
        use std::arch::x86_64::*;

        let acc = tile_sums::<R>(a, b, k2);
        for (r, acc_r) in acc.iter().enumerate() {
            let (row, d) = (&rows[r], dst[r]);
            if cols == NR {
                let lo = row.bytes8(acc_r[0]);
                let hi = row.bytes8(acc_r[1]);
                _mm_storeu_si128(d as *mut __m128i, _mm_unpacklo_epi64(lo, hi));
            } else {
                let mut tmp = [0u8; 16];
                _mm_storel_epi64(tmp.as_mut_ptr() as *mut __m128i, row.bytes8(acc_r[0]));
                if cols > 8 {
                    _mm_storel_epi64(tmp.as_mut_ptr().add(8) as *mut __m128i, row.bytes8(acc_r[1]));
                }
                std::ptr::copy_nonoverlapping(tmp.as_ptr(), d, cols);
            }
        }
    }
}

/// Which micro-kernel runs: the process's kernel level (`cpu::kernel()`), defined with the
/// CPU-feature table in `kernels::cpu`.
pub use super::cpu::Kernel;

/// The tile's first `rows` rows (at least; the reference computes all of them).
fn run_tile(kernel: Kernel, a: &[i32], b: &[i16], k2: usize, tile: &mut [[i32; NR]; MR], rows: usize) {
    // Checked here, once per tile, because the AVX2 kernel reads through raw pointers.
    assert!(a.len() >= k2 * MR && b.len() >= k2 * NR * 2, "qgemm: short operand");
    match kernel {
        Kernel::Reference => tile_ref(a, b, k2, tile),
        // SAFETY: the SIMD kinds are only constructed after AVX2 was detected.
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx2 | Kernel::AvxVnni | Kernel::Avx512Vnni => unsafe {
            match rows {
                1 => tile_avx2::<1>(a, b, k2, tile),
                2 => tile_avx2::<2>(a, b, k2, tile),
                3 => tile_avx2::<3>(a, b, k2, tile),
                4 => tile_avx2::<4>(a, b, k2, tile),
                5 => tile_avx2::<5>(a, b, k2, tile),
                _ => tile_avx2::<MR>(a, b, k2, tile),
            }
        },
    }
}

/// A raw output pointer shared by tasks that write disjoint parts of one buffer (here and
/// in `qconv_direct`).
pub(crate) struct OutPtr<O>(pub(crate) *mut O);
impl<O> Clone for OutPtr<O> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<O> Copy for OutPtr<O> {}
impl<O> OutPtr<O> {
    /// A method (not a field access) so that closures capture the whole `Sync` wrapper.
    pub(crate) fn get(self) -> *mut O {
        self.0
    }
}
// SAFETY: tasks only write disjoint (row block x panel range) rectangles of the buffer.
unsafe impl<O: Send> Send for OutPtr<O> {}
unsafe impl<O: Send> Sync for OutPtr<O> {}

/// Computes `C = A x B` for packed `a` and packed `b` (`n` columns) into `out` (`[m][n]`):
/// `epilogue(row, first column, accumulators, destination)` turns each run of up to `NR`
/// accumulators of one row into output values. When `parallel`, the (row block x panel range) tiles are
/// spread over the rayon pool.
pub fn qgemm<O, F>(kernel: Kernel, a: &PackedA, b: &[i16], n: usize, out: &mut [O], parallel: bool, epilogue: F)
where
    O: Send,
    F: Fn(usize, usize, &[i32], &mut [O]) + Sync,
{
    qgemm_with(
        kernel,
        a,
        b,
        n,
        out,
        parallel,
        |_| (),
        |_, row, c0, acc, dst| epilogue(row, c0, acc, dst),
    )
}

/// `qgemm` whose epilogue also receives a state made once per task by `init(row block)`:
/// per-row constants set up once for all of the block's tiles rather than once per tile row.
#[allow(clippy::too_many_arguments)]
pub fn qgemm_with<O, S, I, F>(
    kernel: Kernel,
    a: &PackedA,
    b: &[i16],
    n: usize,
    out: &mut [O],
    parallel: bool,
    init: I,
    epilogue: F,
) where
    O: Send,
    I: Fn(usize) -> S + Sync,
    F: Fn(&S, usize, usize, &[i32], &mut [O]) + Sync,
{
    let k2 = a.k2();
    let panels = n.div_ceil(NR);
    assert!(
        b.len() >= panels * k2 * NR * 2 && out.len() >= a.m * n,
        "qgemm: short buffer"
    );
    if n == 0 || a.m == 0 {
        return;
    }
    let blocks = a.m.div_ceil(MR);
    let ptr = OutPtr(out.as_mut_ptr());
    let m = a.m;
    let task = |bi: usize, p0: usize, p1: usize| {
        let ab = a.block_words(bi);
        let rows = MR.min(m - bi * MR);
        let mut tile = [[0i32; NR]; MR];
        let state = init(bi);
        for p in p0..p1 {
            run_tile(
                kernel,
                ab,
                &b[p * k2 * NR * 2..(p + 1) * k2 * NR * 2],
                k2,
                &mut tile,
                rows,
            );
            let (c0, cols) = (p * NR, NR.min(n - p * NR));
            for (r, row) in tile.iter().enumerate() {
                let grow = bi * MR + r;
                if grow >= m {
                    break;
                }
                // SAFETY: (row grow, columns c0..c0+cols) lies in `out` ([m][n]) and belongs
                // to this task's tile only.
                let dst = unsafe { std::slice::from_raw_parts_mut(ptr.get().add(grow * n + c0), cols) };
                epilogue(&state, grow, c0, &row[..cols], dst);
            }
        }
    };
    split_tasks(blocks, panels, parallel, task);
}

/// `qgemm` followed by the requantization of each row (`rows`, row `r` of `a` through
/// `rows.bias[r]` and `rows.factor[r]`), done in registers by the SIMD kernels. `out`
/// (`[m][n]`) need not be initialized: every element is written.
///
/// Why: on layers with few input channels (MobileNetV2's 1x1 layers, `k` of 16 to 160) a
/// call per tile row to requantize 16 stored sums cost as much as the products
/// (benches/RESULTS.md, "Measured design choices (integer engine)").
pub fn qgemm_requant<O: QElem>(
    kernel: Kernel,
    a: &PackedA,
    b: &[i16],
    n: usize,
    out: &mut [MaybeUninit<O>],
    parallel: bool,
    rows: &RowsRequant,
) {
    assert!(
        rows.bias.len() >= a.m && rows.factor.len() >= a.m,
        "qgemm: short requantization"
    );
    #[cfg(target_arch = "x86_64")]
    if kernel.is_simd() {
        let k2 = a.k2();
        let panels = n.div_ceil(NR);
        assert!(
            b.len() >= panels * k2 * NR * 2 && out.len() >= a.m * n,
            "qgemm: short buffer"
        );
        if n == 0 || a.m == 0 {
            return;
        }
        // SAFETY: a SIMD `Kernel` only exists when AVX2 was detected.
        let consts = unsafe { rows.simd_rows::<O>(a.m) };
        // `MaybeUninit<O>` has the layout of `O`, a single byte (i8 or u8).
        let ptr = OutPtr(out.as_mut_ptr() as *mut u8);
        let m = a.m;
        let task = |bi: usize, p0: usize, p1: usize| {
            let ab = a.block_words(bi);
            let nr = MR.min(m - bi * MR);
            let rs = &consts[bi * MR..bi * MR + nr];
            for p in p0..p1 {
                let bp = &b[p * k2 * NR * 2..(p + 1) * k2 * NR * 2];
                let (c0, cols) = (p * NR, NR.min(n - p * NR));
                let mut dst = [std::ptr::null_mut::<u8>(); MR];
                for (r, d) in dst.iter_mut().enumerate().take(nr) {
                    // SAFETY: (row bi*MR + r, columns c0..c0+cols) lies in `out` ([m][n]) and
                    // belongs to this task's tile only.
                    *d = unsafe { ptr.get().add((bi * MR + r) * n + c0) };
                }
                let d = &dst[..nr];
                assert!(ab.len() >= k2 * MR && bp.len() >= k2 * NR * 2, "qgemm: short operand");
                // SAFETY: AVX2 detected; operands checked just above; `d` has `nr` pointers
                // to `cols` writable bytes each.
                unsafe {
                    match nr {
                        1 => tile_avx2_requant::<1>(ab, bp, k2, rs, d, cols),
                        2 => tile_avx2_requant::<2>(ab, bp, k2, rs, d, cols),
                        3 => tile_avx2_requant::<3>(ab, bp, k2, rs, d, cols),
                        4 => tile_avx2_requant::<4>(ab, bp, k2, rs, d, cols),
                        5 => tile_avx2_requant::<5>(ab, bp, k2, rs, d, cols),
                        _ => tile_avx2_requant::<MR>(ab, bp, k2, rs, d, cols),
                    }
                }
            }
        };
        split_tasks(m.div_ceil(MR), panels, parallel, task);
        return;
    }
    let out = super::qconv_u8s8::zeroed(out);
    qgemm(kernel, a, b, n, out, parallel, |row, _, acc, dst| {
        rows.row(row, acc, dst)
    });
}

/// Runs `task(block, first unit, end unit)` over `blocks` row blocks x `units` (panels, or
/// output rows), all of one block's units in order when not `parallel`; when `parallel`,
/// cut into enough tasks to balance the rayon pool even when there are few row blocks.
/// Shared by the integer products and direct convolutions.
pub(crate) fn split_tasks(blocks: usize, units: usize, parallel: bool, task: impl Fn(usize, usize, usize) + Sync) {
    if parallel {
        let want = 4 * rayon::current_num_threads();
        let per = (blocks * units).div_ceil(want).max(1).min(units.max(1));
        let chunks = units.div_ceil(per);
        (0..blocks * chunks).into_par_iter().for_each(|t| {
            let (bi, ch) = (t / chunks, t % chunks);
            task(bi, ch * per, ((ch + 1) * per).min(units));
        });
    } else {
        for bi in 0..blocks {
            task(bi, 0, units);
        }
    }
}

/// Plain reference: `C[m][n]` from unpacked operands, i64 sums checked to fit i32.
pub fn qgemm_ref<A: QAct>(a: &[A], b: &[i16], m: usize, k: usize, n: usize) -> Vec<i32> {
    let mut c = vec![0i32; m * n];
    for i in 0..m {
        for j in 0..n {
            let s: i64 = (0..k)
                .map(|kk| a[i * k + kk].widen() as i64 * b[kk * n + j] as i64)
                .sum();
            c[i * n + j] = s as i32;
        }
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn every_kernel_matches_the_reference(
            m in 1usize..20, k in 1usize..70, n in 1usize..40, seed in any::<u64>(), unsigned in any::<bool>()
        ) {
            let mut s = seed | 1;
            let mut next = || { s ^= s << 13; s ^= s >> 7; s ^= s << 17; s };
            let a: Vec<i8> = (0..m * k).map(|_| next() as i8).collect();
            // Extreme values included: -128 * -128 pairs and 255 * 127 pairs must not saturate.
            let b16: Vec<i16> = (0..k * n)
                .map(|_| if unsigned { (next() as u8) as i16 } else { (next() as i8) as i16 })
                .collect();
            let want = qgemm_ref(&a, &b16, m, k, n);
            let pa = PackedA::new(&a, m, k);
            for row in 0..m { for kk in 0..k { prop_assert_eq!(pa.get(row, kk), a[row * k + kk] as i32); } }
            let mut pb = Vec::new();
            if unsigned {
                let b8: Vec<u8> = b16.iter().map(|&v| v as u8).collect();
                pack_b_rows(&b8, k, n, 0, &mut pb, false);
            } else {
                let b8: Vec<i8> = b16.iter().map(|&v| v as i8).collect();
                pack_b_rows(&b8, k, n, 0, &mut pb, true);
            }
            let mut pt = Vec::new();
            let bt: Vec<i16> = (0..n * k).map(|i| b16[(i % k) * n + i / k]).collect();
            pack_b_transposed(&bt, n, k, &mut pt);
            prop_assert_eq!(&pt, &pb);
            for kernel in Kernel::available() {
                for parallel in [false, true] {
                    let mut out = vec![0i32; m * n];
                    qgemm(kernel, &pa, &pb, n, &mut out, parallel, |_, _, acc, dst| dst.copy_from_slice(acc));
                    prop_assert_eq!(&out[..], &want[..], "{:?}", kernel);
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        /// Centered operands (weights minus a uint8 zero point, activations minus theirs):
        /// values in [-255, 255], still exact.
        #[test]
        fn centered_operands_match_the_reference(
            m in 1usize..14, k in 1usize..40, n in 1usize..30, seed in any::<u64>(), wz in 0i16..256, xz in 0i16..256,
        ) {
            let mut s = seed | 1;
            let mut next = || { s ^= s << 13; s ^= s >> 7; s ^= s << 17; s };
            let w: Vec<i16> = (0..m * k).map(|_| (next() as u8) as i16 - wz).collect();
            let x: Vec<u8> = (0..k * n).map(|_| next() as u8).collect();
            let xc: Vec<i16> = x.iter().map(|&v| v as i16 - xz).collect();
            let want = qgemm_ref(&w, &xc, m, k, n);
            let mut pb = Vec::new();
            pack_b_rows(&x, k, n, xz, &mut pb, false);
            let pa = PackedA::new(&w, m, k);
            for kernel in Kernel::available() {
                let mut out = vec![0i32; m * n];
                qgemm(kernel, &pa, &pb, n, &mut out, true, |_, _, acc, dst| dst.copy_from_slice(acc));
                prop_assert_eq!(&out[..], &want[..], "{:?}", kernel);
            }
            // Activations as the packed left operand (a Gemm's rows), centered on the fly.
            let xt: Vec<u8> = (0..n * k).map(|i| x[(i % k) * n + i / k]).collect();
            let pa_x = PackedA::centered(&xt, n, k, xz);
            for r in 0..n { for kk in 0..k { prop_assert_eq!(pa_x.get(r, kk), xc[kk * n + r] as i32); } }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// The requantizing product, every kernel and both output types, against the
        /// reference sums requantized by the reference row (exact or f32 rounding, zero
        /// points, narrowed bounds, f32 lanes or not).
        #[test]
        fn requantizing_product_matches_the_reference(
            m in 1usize..20, k in 1usize..70, n in 1usize..40, seed in any::<u64>(),
            unsigned_out in any::<bool>(), f32_rounding in any::<bool>(), small in any::<bool>(),
            zero in -20i32..20, narrow in 0i32..30, exp in 4i32..14, parallel in any::<bool>(),
        ) {
            use crate::kernels::requant::{requant_row_ref, FixedPoint, RowOut, Rounding};
            let mut s = seed | 1;
            let mut next = || { s ^= s << 13; s ^= s >> 7; s ^= s << 17; s };
            let a: Vec<i8> = (0..m * k).map(|_| next() as i8).collect();
            let x: Vec<u8> = (0..k * n).map(|_| next() as u8).collect();
            let x16: Vec<i16> = x.iter().map(|&v| v as i16).collect();
            let sums = qgemm_ref(&a, &x16, m, k, n);
            let bias: Vec<i32> = (0..m).map(|_| (next() % 20001) as i32 - 10000).collect();
            let factor: Vec<f32> = (0..m)
                .map(|_| (1.0 + (next() % 1000) as f32 / 1000.0) * 2f32.powi(-exp))
                .collect();
            let (lo, hi) = if unsigned_out { (narrow, 255) } else { (-128 + narrow, 127) };
            let out = RowOut {
                rounding: if f32_rounding { Rounding::F32 } else { Rounding::Exact },
                zero: if unsigned_out { zero.abs() } else { zero },
                lo,
                hi,
            };
            let rows = RowsRequant { bias: bias.clone(), factor: factor.clone(), out, small_sums: small };
            let mut pb = Vec::new();
            pack_b_rows(&x, k, n, 0, &mut pb, false);
            let pa = PackedA::new(&a, m, k);
            fn check<O: QElem + PartialEq + std::fmt::Debug>(
                pa: &PackedA, pb: &[i16], n: usize, sums: &[i32], rows: &RowsRequant, parallel: bool,
            ) -> Result<(), TestCaseError> {
                let m = pa.m;
                let mut want = vec![O::from_i32(0); m * n];
                for r in 0..m {
                    let fp = FixedPoint::from_f32(rows.factor[r]).expect("a normal factor");
                    requant_row_ref(&sums[r * n..(r + 1) * n], rows.bias[r], &fp, rows.out, &mut want[r * n..(r + 1) * n]);
                }
                for kernel in Kernel::available() {
                    let mut got = vec![MaybeUninit::<O>::uninit(); m * n];
                    qgemm_requant(kernel, pa, pb, n, &mut got, parallel, rows);
                    // SAFETY: `qgemm_requant` writes every element.
                    let got: Vec<O> = got.into_iter().map(|v| unsafe { v.assume_init() }).collect();
                    prop_assert_eq!(&got, &want, "{:?}", kernel);
                }
                Ok(())
            }
            if unsigned_out {
                check::<u8>(&pa, &pb, n, &sums, &rows, parallel)?;
            } else {
                check::<i8>(&pa, &pb, n, &sums, &rows, parallel)?;
            }
        }
    }

    #[test]
    fn saturating_pairs_stay_exact() {
        // The case vpmaddubsw gets wrong: 255 * 127 + 255 * 127 = 64770 > i16::MAX.
        let (m, k, n) = (1, 2, 1);
        let a = [127i8, 127];
        let mut pb = Vec::new();
        pack_b_rows(&[255u8, 255], k, n, 0, &mut pb, false);
        for kernel in Kernel::available() {
            let mut out = vec![0; m * n];
            qgemm(
                kernel,
                &PackedA::new(&a, m, k),
                &pb,
                n,
                &mut out,
                false,
                |_, _, acc, dst| dst.copy_from_slice(acc),
            );
            assert_eq!(out[0], 64770, "{kernel:?}");
        }
        let mut pt = Vec::new();
        pack_b_transposed(&[-128i8, -128], 1, 2, &mut pt);
        let mut out = vec![0; 1];
        qgemm(
            Kernel::detect(),
            &PackedA::new(&[-128i8, -128], 1, 2),
            &pt,
            1,
            &mut out,
            false,
            |_, _, acc, dst| dst.copy_from_slice(acc),
        );
        assert_eq!(out[0], 32768);
    }
}
