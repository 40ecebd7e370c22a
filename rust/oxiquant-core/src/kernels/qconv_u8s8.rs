//! One file past 800 lines because the run plans, the interleaved operand layouts, the
//! packing loops and the tile kernels below must agree on one byte layout and one
//! exactness argument; split apart, each half would be unreadable without the other.
//!
//! Direct integer convolution on byte products: u8 activations times i8 weights, four
//! channels per 32-bit lane (AVX2 `vpmaddubsw`: 32 products per instruction, summed in pairs
//! into i16), the i16 sums accumulated over a *run* of `k` steps and widened to i32 once per
//! run (`vpmaddwd` by ones).
//!
//! Why: on this generation of AMD and Intel cores, `vpmaddubsw` + `vpaddw` computes 32
//! products in about the time `vpmaddwd` + `vpaddd` computes 16 (the pair kernel of
//! `qconv_direct`) or two FMAs compute 16 in f32; widening every step, as onnxruntime's
//! AVX2 kernel does, gives most of that back.
//!
//! Exactness: `vpmaddubsw` saturates each pair sum to i16, and the run sums wrap in i16.
//! Both are exact when every partial sum of one i16 lane fits i16. With activations in
//! `[0, amax]`, a lane's sums lie between `amax` times the sum of its negative weights and
//! `amax` times the sum of its positive ones, so the weights decide where each run must
//! end: once per layer, for each block of `MR` output channels, the steps are cut greedily
//! into the longest runs that stay exact up to a cap on `amax` (`RunPlan`; caps 63, 127 and
//! 255), and the caller measures `amax` on its input and takes the plan of the smallest
//! cap above it (`QuadWeights::plan_for`). When no plan fits (a single step can leave i16:
//! large weights with activations that use all eight bits), the caller uses the pair
//! kernel instead.
//!
//! With VNNI (`Kernel::has_byte_dot`: `vpdpbusd` sums the four products of a lane straight
//! into its i32 sum) there is nothing to plan: every input is exact, the runs are one per
//! block, and signed inputs with large weights (a network's first layer) take this kernel
//! too.
//!
//! Activations enter as bytes `x + offset` (`offset` 128 moves i8 values to u8; 0 keeps
//! them); the zero point and the offset come back through the weights' row sums:
//! `sum (x - z) w = sum (x + offset) w - (z + offset) sum w`, with the padding holding
//! `z + offset` so that it adds nothing.
//!
//! Layout: as `qconv_direct`, but with channels interleaved by four and the quads of one
//! row side by side: `[phase][row][c / 4][col][4]` u8, the weights `[m][kh][kw][cg rounded up to 4]`
//! packed in blocks of `MR` rows, `[k4][MR]` words of four i8.

use super::conv::ConvShape;
use super::qconv_direct::{for_each_tile, last_start, TileOut};
use super::qgemm::{split_tasks, Kernel, MR, NR};
#[cfg(target_arch = "x86_64")]
use super::requant::RowAvx2;
pub use super::requant::RowsRequant;
use super::requant::{requant_row, QElem};
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// The caps on the largest input byte for which `QuadWeights` plans its runs, smallest
/// first: post-ReLU activations of a signed 8-bit range reach 127, other 8-bit ones 255.
pub const CAPS: [u8; 3] = [63, 127, 255];

/// Where the runs end, for inputs up to `cap`: per block of `MR` output channels, run
/// lengths in steps (`k` steps of four channels) that add up to all the steps.
#[derive(Debug, Clone, PartialEq)]
pub struct RunPlan {
    pub cap: u8,
    runs: Vec<Vec<u32>>,
}

impl RunPlan {
    /// The plan for inputs in `[0, cap]`, `None` when a single step can leave i16.
    /// `q` is `[m][k4][4]`.
    fn new(q: &[[i8; 4]], m: usize, k4: usize, cap: u8) -> Option<RunPlan> {
        // Each lane's same-sign sums times `cap` must stay within i16::MAX.
        let limit = i16::MAX as i32 / (cap as i32).max(1);
        let lanes = |o: usize, t: usize| {
            let quad = q[o * k4 + t];
            [0, 2].map(|h| {
                let (a, b) = (quad[h] as i32, quad[h + 1] as i32);
                (a.max(0) + b.max(0), -(a.min(0) + b.min(0)))
            })
        };
        let mut runs = Vec::with_capacity(m.div_ceil(MR));
        for b in 0..m.div_ceil(MR) {
            let rows = b * MR..(b * MR + MR).min(m);
            let mut sums = vec![[(0i32, 0i32); 2]; rows.len()];
            let (mut block, mut len) = (Vec::new(), 0u32);
            for t in 0..k4 {
                let fits = |sums: &[[(i32, i32); 2]]| {
                    rows.clone().zip(sums).all(|(o, s)| {
                        lanes(o, t)
                            .iter()
                            .zip(s)
                            .all(|(l, s)| s.0 + l.0 <= limit && s.1 + l.1 <= limit)
                    })
                };
                if !fits(&sums) {
                    if len == 0 {
                        return None;
                    }
                    block.push(len);
                    len = 0;
                    sums.iter_mut().for_each(|s| *s = [(0, 0); 2]);
                    if !fits(&sums) {
                        return None;
                    }
                }
                for (o, s) in rows.clone().zip(sums.iter_mut()) {
                    for (l, s) in lanes(o, t).iter().zip(s.iter_mut()) {
                        s.0 += l.0;
                        s.1 += l.1;
                    }
                }
                len += 1;
            }
            if len > 0 {
                block.push(len);
            }
            runs.push(block);
        }
        Some(RunPlan { cap, runs })
    }

    /// One run per block over all `k4` steps: what kernels that sum byte products exactly
    /// in i32 (`Kernel::has_byte_dot`) run with, on any input.
    fn whole(m: usize, k4: usize) -> RunPlan {
        let block = if k4 == 0 { Vec::new() } else { vec![k4 as u32] };
        RunPlan {
            cap: u8::MAX,
            runs: vec![block; m.div_ceil(MR)],
        }
    }

    /// The run lengths of block `b`.
    pub fn block(&self, b: usize) -> &[u32] {
        &self.runs[b]
    }
}

/// Weights packed for the byte-product kernel, with what exactness needs.
#[derive(Debug, Clone, PartialEq)]
pub struct QuadWeights {
    pub m: usize,
    k4: usize,
    data: Vec<i32>,
    /// `sum_k w[row][k]` per output row (the zero-point correction).
    pub row_sums: Vec<i32>,
    /// The feasible plans, by increasing cap.
    plans: Vec<RunPlan>,
    /// `RunPlan::whole`.
    whole: RunPlan,
}

fn word(b: [i8; 4]) -> i32 {
    i32::from_le_bytes(b.map(|v| v as u8))
}

impl QuadWeights {
    /// `w` is `[m][cg][kh][kw]`.
    pub fn new(w: &[i8], m: usize, cg: usize, kh: usize, kw: usize) -> QuadWeights {
        let quads = cg.div_ceil(4);
        let k4 = kh * kw * quads;
        // `[m][k4][4]`, k ordered (i, j, c).
        let mut q = vec![[0i8; 4]; m * k4];
        for o in 0..m {
            for c in 0..cg {
                for i in 0..kh {
                    for j in 0..kw {
                        q[o * k4 + (i * kw + j) * quads + c / 4][c % 4] = w[((o * cg + c) * kh + i) * kw + j];
                    }
                }
            }
        }
        let blocks = m.div_ceil(MR);
        let mut data = vec![0i32; blocks * k4 * MR];
        for o in 0..m {
            for t in 0..k4 {
                data[((o / MR) * k4 + t) * MR + o % MR] = word(q[o * k4 + t]);
            }
        }
        let row_sums = (0..m)
            .map(|o| q[o * k4..(o + 1) * k4].iter().flatten().map(|&v| v as i32).sum())
            .collect();
        let plans = CAPS.iter().filter_map(|&cap| RunPlan::new(&q, m, k4, cap)).collect();
        QuadWeights {
            m,
            k4,
            data,
            row_sums,
            plans,
            whole: RunPlan::whole(m, k4),
        }
    }

    /// The plan for inputs in `[0, amax]` with the longest runs, if any.
    pub fn plan_for(&self, amax: u8) -> Option<&RunPlan> {
        self.plans.iter().find(|p| amax <= p.cap)
    }

    /// The plan `kernel` runs with on inputs in `[0, amax]`: any input when it sums byte
    /// products exactly (`Kernel::has_byte_dot`), else `plan_for`.
    pub fn plan(&self, kernel: Kernel, amax: u8) -> Option<&RunPlan> {
        if kernel.has_byte_dot() {
            Some(&self.whole)
        } else {
            self.plan_for(amax)
        }
    }

    fn block_words(&self, b: usize) -> &[i32] {
        let len = self.k4 * MR;
        &self.data[b * len..(b + 1) * len]
    }
}

/// How an input becomes bytes: the offset added to every value, and the byte the padding
/// holds (the zero point plus the offset).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteInput {
    pub offset: i32,
    pub pad: u8,
    /// The largest byte of the image, padding included.
    pub amax: u8,
}

impl ByteInput {
    /// Measures `x` (with zero point `zero`): i8 values stay as they are when none is
    /// negative, else move up by 128. `None` when the zero point cannot be a byte (an i8
    /// input whose zero point is below -128 + offset cannot happen; kept total anyway).
    pub fn measure<T: QElem + Ord>(x: &[T], zero: i32) -> Option<ByteInput> {
        let (lo, hi) = extremes(x).map_or((0, 0), |(lo, hi)| (lo.to_i32(), hi.to_i32()));
        let mut input = ByteInput::new(if T::UNSIGNED || (lo >= 0 && zero >= 0) { 0 } else { 128 }, zero)?;
        let top = if x.is_empty() { 0 } else { hi + input.offset };
        input.amax = u8::try_from(top.max(input.pad as i32)).ok()?;
        Some(input)
    }

    /// Bytes `x + offset` for an input of zero point `zero` (`amax` the padding byte until
    /// measured), `None` when the padding byte `zero + offset` is not a byte.
    fn new(offset: i32, zero: i32) -> Option<ByteInput> {
        let pad = u8::try_from(zero + offset).ok()?;
        Some(ByteInput { offset, pad, amax: pad })
    }

    /// What `sum (x + offset) w` exceeds `sum (x - zero) w` by, per unit of `sum w`.
    pub fn shift(&self) -> i32 {
        self.pad as i32
    }
}

/// The smallest and largest value of `x`, `None` when it is empty.
///
/// Why lanes: `Iterator::min` and `max` did not vectorize here (two scalar passes, a
/// visible share of a 1x1 convolution: benches/RESULTS.md, "Measured design choices (integer engine)"); 32 running minima and maxima compile to
/// byte-vector `pminsb`/`pmaxsb` (or their unsigned forms) over one pass.
fn extremes<T: QElem + Ord>(x: &[T]) -> Option<(T, T)> {
    const LANES: usize = 32;
    let first = *x.first()?;
    let (mut lo, mut hi) = ([first; LANES], [first; LANES]);
    let mut chunks = x.chunks_exact(LANES);
    for c in &mut chunks {
        for i in 0..LANES {
            lo[i] = lo[i].min(c[i]);
            hi[i] = hi[i].max(c[i]);
        }
    }
    for &v in chunks.remainder() {
        lo[0] = lo[0].min(v);
        hi[0] = hi[0].max(v);
    }
    Some((lo.into_iter().min()?, hi.into_iter().max()?))
}

/// `x` as the bytes it is made of (`QElem`s are one byte: i8 or u8).
fn as_bytes<T: QElem>(x: &[T]) -> &[u8] {
    const { assert!(std::mem::size_of::<T>() == 1) };
    // SAFETY: `T` is one plain byte, so the slice is as many bytes, equally aligned.
    unsafe { std::slice::from_raw_parts(x.as_ptr() as *const u8, x.len()) }
}

/// One group's image as bytes, padded, quad-interleaved and phase-split.
pub struct QuadImage {
    buf: Vec<u8>,
    quads: usize,
    /// Distances in pixels (four bytes) between consecutive rows, quads and phases.
    pitch: usize,
    quad_stride: usize,
    phase_stride: usize,
}

impl QuadImage {
    pub fn new() -> QuadImage {
        QuadImage {
            buf: Vec::new(),
            quads: 0,
            pitch: 0,
            quad_stride: 0,
            phase_stride: 0,
        }
    }

    /// Fills from `x` (`cg` planes of `h x w`) as `x + input.offset`, the padding (and the
    /// channels that round `cg` up to four, whose weights are zero) holding `input.pad`.
    pub fn fill<T: QElem>(&mut self, x: &[T], cg: usize, input: ByteInput, s: &ConvShape) {
        let [pt, pl, pb, pr] = s.win.pads;
        let sw = s.win.strides[1];
        let hp = s.h + pt + pb;
        let wp = s.w + pl + pr;
        let wq = wp.div_ceil(sw);
        self.quads = cg.div_ceil(4);
        // `[phase][row][quad][col]`: a tile's steps read the rows of its patch, each a few
        // KB wide, rather than one piece of each quad's plane; planes (`qconv_direct`'s
        // layout) touch more pages and lines per tile than the TLB and L1 hold
        // (benches/RESULTS.md, "Measured design choices (integer engine)").
        self.quad_stride = wq;
        self.pitch = self.quads * wq;
        self.phase_stride = hp * self.quads * wq;
        // Slack: a full tile read at the last offset stays inside the buffer.
        let len = (sw * self.phase_stride + NR) * 4;
        self.buf.clear();
        self.buf.resize(len, input.pad);
        for q in 0..sw {
            // Padded column `xq * sw + q` holds input column `xq * sw + q - pl`: the first
            // `xq` that lands inside the image, and how many do.
            let first = (pl + sw - 1 - q) / sw;
            let Some(col0) = (first * sw + q).checked_sub(pl) else {
                continue;
            };
            let count = s.w.saturating_sub(col0).div_ceil(sw).min(wq.saturating_sub(first));
            if count == 0 {
                continue;
            }
            for cq in 0..self.quads {
                for y in 0..s.h {
                    let rows: [Option<&[T]>; 4] = std::array::from_fn(|e| {
                        let c = 4 * cq + e;
                        (c < cg).then(|| &x[(c * s.h + y) * s.w + col0..(c * s.h + y + 1) * s.w])
                    });
                    let row = 4 * (q * self.phase_stride + cq * self.quad_stride + (y + pt) * self.pitch + first);
                    interleave4(rows, sw, input, &mut self.buf[row..row + count * 4]);
                }
            }
        }
    }
}

/// `dst[4 * i + e] = rows[e][i * step] + input.offset` for every pixel `i` of `dst`
/// (`input.pad` for a missing channel).
fn interleave4<T: QElem>(rows: [Option<&[T]>; 4], step: usize, input: ByteInput, dst: &mut [u8]) {
    let count = dst.len() / 4;
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if step <= 2 && (input.offset == 0 || input.offset == 128) {
        let bytes = rows.map(|r| r.map(as_bytes));
        done = if step == 2 {
            interleave4_sse2::<2>(bytes, input, dst)
        } else {
            interleave4_sse2::<1>(bytes, input, dst)
        };
    }
    for (i, d) in dst.chunks_exact_mut(4).enumerate().take(count).skip(done) {
        for (d, r) in d.iter_mut().zip(&rows) {
            *d = r.map_or(input.pad, |r| (r[i * step].to_i32() + input.offset) as u8);
        }
    }
}

/// `interleave4` for steps of 1 or 2 (`STEP`), sixteen (then eight) pixels at a time (SSE2,
/// part of x86-64): returns how many pixels it wrote. Adding 128 to an i8 is flipping its
/// top bit; a step of 2 keeps the even bytes of 32.
#[cfg(target_arch = "x86_64")]
fn interleave4_sse2<const STEP: usize>(rows: [Option<&[u8]>; 4], input: ByteInput, dst: &mut [u8]) -> usize {
    use std::arch::x86_64::*;
    // Pixels whose loads stay inside every row: a step-2 load of 16 pixels reads 32 bytes.
    let shortest = rows.iter().flatten().map(|r| r.len()).min().unwrap_or(usize::MAX);
    let count = (dst.len() / 4).min(shortest / STEP);
    let mut i = 0;
    // SAFETY: loads read r[STEP i..STEP (i + 16)] (then 8) with STEP (i + 16) <= STEP count
    // <= r.len(); stores write dst[4i..4i + 64] (32) with 4 (i + 16) <= dst.len().
    unsafe {
        let flip = _mm_set1_epi8(if input.offset == 128 { -128 } else { 0 });
        let pad = _mm_set1_epi8(input.pad as i8);
        let even = _mm_set1_epi16(0xff);
        let load16 = |r: &[u8], i: usize| {
            if STEP == 2 {
                let p = r.as_ptr().add(2 * i);
                let lo = _mm_and_si128(_mm_loadu_si128(p as *const __m128i), even);
                let hi = _mm_and_si128(_mm_loadu_si128(p.add(16) as *const __m128i), even);
                _mm_packus_epi16(lo, hi)
            } else {
                _mm_loadu_si128(r.as_ptr().add(i) as *const __m128i)
            }
        };
        let load8 = |r: &[u8], i: usize| {
            if STEP == 2 {
                let lo = _mm_and_si128(_mm_loadu_si128(r.as_ptr().add(2 * i) as *const __m128i), even);
                _mm_packus_epi16(lo, lo)
            } else {
                _mm_loadl_epi64(r.as_ptr().add(i) as *const __m128i)
            }
        };
        while i + 16 <= count {
            let v = rows.map(|r| r.map_or(pad, |r| _mm_xor_si128(load16(r, i), flip)));
            let (ab_lo, ab_hi) = (_mm_unpacklo_epi8(v[0], v[1]), _mm_unpackhi_epi8(v[0], v[1]));
            let (cd_lo, cd_hi) = (_mm_unpacklo_epi8(v[2], v[3]), _mm_unpackhi_epi8(v[2], v[3]));
            let out = [
                _mm_unpacklo_epi16(ab_lo, cd_lo),
                _mm_unpackhi_epi16(ab_lo, cd_lo),
                _mm_unpacklo_epi16(ab_hi, cd_hi),
                _mm_unpackhi_epi16(ab_hi, cd_hi),
            ];
            for (k, o) in out.iter().enumerate() {
                _mm_storeu_si128(dst.as_mut_ptr().add(4 * i + 16 * k) as *mut __m128i, *o);
            }
            i += 16;
        }
        // Eight more pixels (rows of 8 or 24 pixels, as in CIFAR's last stage).
        if i + 8 <= count {
            let v = rows.map(|r| r.map_or(pad, |r| _mm_xor_si128(load8(r, i), flip)));
            let (ab, cd) = (_mm_unpacklo_epi8(v[0], v[1]), _mm_unpacklo_epi8(v[2], v[3]));
            _mm_storeu_si128(dst.as_mut_ptr().add(4 * i) as *mut __m128i, _mm_unpacklo_epi16(ab, cd));
            _mm_storeu_si128(
                dst.as_mut_ptr().add(4 * i + 16) as *mut __m128i,
                _mm_unpackhi_epi16(ab, cd),
            );
            i += 8;
        }
    }
    i
}

impl Default for QuadImage {
    fn default() -> Self {
        Self::new()
    }
}

/// Offsets (in bytes) of the quad runs, in the weights' `k4` order `(i, j, c / 4)`.
fn offsets(img: &QuadImage, s: &ConvShape) -> Vec<usize> {
    let [kh, kw] = s.win.kernel;
    let [dh, dw] = s.win.dilations;
    let sw = s.win.strides[1];
    let mut v = Vec::with_capacity(kh * kw * img.quads);
    for i in 0..kh {
        for j in 0..kw {
            let (q, xq) = ((j * dw) % sw, (j * dw) / sw);
            for g in 0..img.quads {
                v.push(4 * (q * img.phase_stride + i * dh * img.pitch + g * img.quad_stride + xq));
            }
        }
    }
    v
}

/// One tile from in-place operands, plain Rust: the exact sums (equal to the SIMD kernel's
/// whenever the run plan was chosen for the input).
fn tile_ref(a: &[i32], b: &[u8], offs: &[usize], tile: &mut [[i32; NR]; MR]) {
    *tile = [[0; NR]; MR];
    for (kk, &off) in offs.iter().enumerate() {
        let bv = &b[off..off + NR * 4];
        for (r, row) in tile.iter_mut().enumerate() {
            let w = a[kk * MR + r].to_le_bytes().map(|v| v as i8 as i32);
            for (j, acc) in row.iter_mut().enumerate() {
                let px = &bv[4 * j..4 * j + 4];
                *acc += (0..4).map(|e| px[e] as i32 * w[e]).sum::<i32>();
            }
        }
    }
}

/// The accumulators of one tile: `V` vectors of eight pixels per row (as in
/// `qconv_direct`), the steps summed in i16 over each of `runs` and widened after it.
///
/// # Safety
/// AVX2 is available; every `off + 32 * V` is inside `b`, `a` holds `offs.len() * MR`
/// words and `runs` adds up to at most `offs.len()`.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn accumulate<const V: usize>(
    a: &[i32],
    b: &[u8],
    offs: &[usize],
    runs: &[u32],
) -> [[std::arch::x86_64::__m256i; V]; MR] {
    use std::arch::x86_64::*;
    // SAFETY: the reads stay inside `a` and `b` by the caller's contract.
    unsafe {
        let ones = _mm256_set1_epi16(1);
        let mut wide = [[_mm256_setzero_si256(); V]; MR];
        let (ap, bp) = (a.as_ptr(), b.as_ptr());
        let mut t0 = 0;
        for &len in runs {
            let chunk = offs.get_unchecked(t0..t0 + len as usize);
            let mut acc = [[_mm256_setzero_si256(); V]; MR];
            let a0 = ap.add(t0 * MR);
            t0 += len as usize;
            for (kk, &off) in chunk.iter().enumerate() {
                let bv = pixels::<V>(bp.add(off));
                for (r, acc_r) in acc.iter_mut().enumerate() {
                    let w = _mm256_set1_epi32(*a0.add(kk * MR + r));
                    for (acc_v, b) in acc_r.iter_mut().zip(&bv) {
                        *acc_v = _mm256_add_epi16(*acc_v, _mm256_maddubs_epi16(*b, w));
                    }
                }
            }
            for (wide_r, acc_r) in wide.iter_mut().zip(&acc) {
                for (w, a) in wide_r.iter_mut().zip(acc_r) {
                    *w = _mm256_add_epi32(*w, _mm256_madd_epi16(*a, ones));
                }
            }
        }
        wide
    }
}

/// The `8 * V` pixels (four bytes each) of one step at `p`.
///
/// # Safety
/// AVX2 is available and `32 * V` bytes at `p` are readable.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn pixels<const V: usize>(p: *const u8) -> [std::arch::x86_64::__m256i; V] {
    use std::arch::x86_64::*;
    // A plain loop, not a closure: a closure would not carry this function's AVX2 feature.
    let mut out = [_mm256_setzero_si256(); V];
    for (v, o) in out.iter_mut().enumerate() {
        // SAFETY: forwarded from the caller.
        *o = unsafe { _mm256_loadu_si256(p.add(32 * v) as *const __m256i) };
    }
    out
}

/// Below this mean run length (in steps), a block widens after every step instead.
///
/// Why: the run loop holds `MR x V` i16 sums next to as many i32 ones, more than the 16
/// AVX2 registers, so each run ends with spills; widening every step keeps only the i32
/// sums. Short runs gain, long runs (trained weights) are unchanged, and 4 beat the other
/// thresholds tried (benches/RESULTS.md, "Measured design choices (integer engine)").
const WIDEN_EACH_STEP_BELOW: usize = 4;

/// Whether a block with these runs over `steps` steps widens after every step.
fn widens_each_step(runs: &[u32], steps: usize) -> bool {
    runs.len() * WIDEN_EACH_STEP_BELOW > steps
}

/// `accumulate` with every step widened at once (onnxruntime's AVX2 sequence): exact when
/// one step fits i16, which every block of a `RunPlan` satisfies.
///
/// # Safety
/// As `accumulate`.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn accumulate_each_step<const V: usize>(
    a: &[i32],
    b: &[u8],
    offs: &[usize],
) -> [[std::arch::x86_64::__m256i; V]; MR] {
    use std::arch::x86_64::*;
    // SAFETY: the reads stay inside `a` and `b` by the caller's contract.
    unsafe {
        let ones = _mm256_set1_epi16(1);
        let mut wide = [[_mm256_setzero_si256(); V]; MR];
        let (ap, bp) = (a.as_ptr(), b.as_ptr());
        for (kk, &off) in offs.iter().enumerate() {
            let bv = pixels::<V>(bp.add(off));
            for (r, wide_r) in wide.iter_mut().enumerate() {
                let w = _mm256_set1_epi32(*ap.add(kk * MR + r));
                for (acc, b) in wide_r.iter_mut().zip(&bv) {
                    *acc = _mm256_add_epi32(*acc, _mm256_madd_epi16(_mm256_maddubs_epi16(*b, w), ones));
                }
            }
        }
        wide
    }
}

/// `accumulate` on a CPU with a 256-bit `vpdpbusd`: each step adds its four products per
/// lane straight into the i32 sums, exact for any bytes, so the runs are not needed.
/// One copy per encoding of the instruction (the intrinsics differ by target feature).
macro_rules! accumulate_dot {
    ($name:ident, $features:literal, $dot:ident) => {
        /// # Safety
        /// The CPU has these features; the reads as in `accumulate`.
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = $features)]
        unsafe fn $name<const V: usize>(a: &[i32], b: &[u8], offs: &[usize]) -> [[std::arch::x86_64::__m256i; V]; MR] {
            use std::arch::x86_64::*;
            // SAFETY: the reads stay inside `a` and `b` by the caller's contract.
            unsafe {
                let (ap, bp) = (a.as_ptr(), b.as_ptr());
                let mut acc = [[_mm256_setzero_si256(); V]; MR];
                // Each step adds into `MR x V` chains of `vpdpbusd`; with one vector per row,
                // 6 chains do not cover its latency, so steps go in pairs, the second into a
                // set of sums of its own, added at the end.
                let mut odd = [[_mm256_setzero_si256(); V]; MR];
                let width = if V == 1 { 2 } else { 1 };
                let whole = offs.len() / width * width;
                for t in (0..whole).step_by(width) {
                    for h in 0..width {
                        let kk = t + h;
                        let set = if h == 0 { &mut acc } else { &mut odd };
                        let bv = pixels::<V>(bp.add(*offs.get_unchecked(kk)));
                        for (r, acc_r) in set.iter_mut().enumerate() {
                            let w = _mm256_set1_epi32(*ap.add(kk * MR + r));
                            for (acc_v, b) in acc_r.iter_mut().zip(&bv) {
                                *acc_v = $dot(*acc_v, *b, w);
                            }
                        }
                    }
                }
                for (kk, &off) in offs.iter().enumerate().skip(whole) {
                    let bv = pixels::<V>(bp.add(off));
                    for (r, acc_r) in acc.iter_mut().enumerate() {
                        let w = _mm256_set1_epi32(*ap.add(kk * MR + r));
                        for (acc_v, b) in acc_r.iter_mut().zip(&bv) {
                            *acc_v = $dot(*acc_v, *b, w);
                        }
                    }
                }
                if width == 2 {
                    for (e, o) in acc.iter_mut().zip(&odd) {
                        for (e, o) in e.iter_mut().zip(o) {
                            *e = _mm256_add_epi32(*e, *o);
                        }
                    }
                }
                acc
            }
        }
    };
}
accumulate_dot!(accumulate_dot_vex, "avx2,avxvnni", _mm256_dpbusd_avx_epi32);
accumulate_dot!(accumulate_dot_evex, "avx2,avx512vnni,avx512vl", _mm256_dpbusd_epi32);

/// `accumulate_dot_evex` with 512-bit vectors for full tiles (`V == 2`: a row's 16 pixels in
/// one register, half the instructions), its sums handed back as the two 256-bit halves.
///
/// # Safety
/// As `accumulate_dot_evex`, and the CPU has AVX-512 F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,avx512f,avx512vnni,avx512vl")]
unsafe fn accumulate_dot_zmm<const V: usize>(
    a: &[i32],
    b: &[u8],
    offs: &[usize],
) -> [[std::arch::x86_64::__m256i; V]; MR] {
    use std::arch::x86_64::*;
    // SAFETY: the reads stay inside `a` and `b` by the caller's contract (a full tile
    // reads the same 64 bytes per step as two 256-bit loads).
    unsafe {
        if V != 2 {
            return accumulate_dot_evex::<V>(a, b, offs);
        }
        let (ap, bp) = (a.as_ptr(), b.as_ptr());
        // Two sets of sums, even and odd steps: 6 chains alone do not cover the latency.
        let mut acc = [[_mm512_setzero_si512(); MR]; 2];
        let whole = offs.len() / 2 * 2;
        for t in (0..whole).step_by(2) {
            for (h, set) in acc.iter_mut().enumerate() {
                let kk = t + h;
                let bv = _mm512_loadu_si512(bp.add(*offs.get_unchecked(kk)) as *const __m512i);
                for (r, acc_r) in set.iter_mut().enumerate() {
                    *acc_r = _mm512_dpbusd_epi32(*acc_r, bv, _mm512_set1_epi32(*ap.add(kk * MR + r)));
                }
            }
        }
        for (kk, &off) in offs.iter().enumerate().skip(whole) {
            let bv = _mm512_loadu_si512(bp.add(off) as *const __m512i);
            for (r, acc_r) in acc[0].iter_mut().enumerate() {
                *acc_r = _mm512_dpbusd_epi32(*acc_r, bv, _mm512_set1_epi32(*ap.add(kk * MR + r)));
            }
        }
        let mut out = [[_mm256_setzero_si256(); V]; MR];
        for ((o, e), d) in out.iter_mut().zip(acc[0]).zip(acc[1]) {
            let sum = _mm512_add_epi32(e, d);
            o[0] = _mm512_castsi512_si256(sum);
            o[V - 1] = _mm512_extracti64x4_epi64::<1>(sum);
        }
        out
    }
}

/// How a SIMD tile sums its steps (the `MODE` of `sums`).
const BY_RUNS: u8 = 0;
const EACH_STEP: u8 = 1;
const DOT_VEX: u8 = 2;
const DOT_EVEX: u8 = 3;

/// The `MODE` for `kernel` (a SIMD one) on a block with these runs over `steps` steps.
fn sum_mode(kernel: Kernel, runs: &[u32], steps: usize) -> u8 {
    match kernel {
        #[cfg(target_arch = "x86_64")]
        Kernel::AvxVnni => DOT_VEX,
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx512Vnni => DOT_EVEX,
        _ if widens_each_step(runs, steps) => EACH_STEP,
        _ => BY_RUNS,
    }
}

/// A tile's i32 sums: by runs, widened after each step, or by `vpdpbusd` (`MODE`).
///
/// # Safety
/// As `accumulate`; for the `DOT_*` modes the CPU has that instruction (`sum_mode` of a
/// detected `Kernel`).
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn sums<const V: usize, const MODE: u8>(
    a: &[i32],
    b: &[u8],
    offs: &[usize],
    runs: &[u32],
) -> [[std::arch::x86_64::__m256i; V]; MR] {
    // SAFETY: forwarded from the caller.
    unsafe {
        match MODE {
            EACH_STEP => accumulate_each_step::<V>(a, b, offs),
            DOT_VEX => accumulate_dot_vex::<V>(a, b, offs),
            DOT_EVEX => accumulate_dot_zmm::<V>(a, b, offs),
            _ => accumulate::<V>(a, b, offs, runs),
        }
    }
}

/// Calls `$f::<V, MODE>($args)` for a tile of `$cols` columns and mode `$mode`.
macro_rules! with_tile_consts {
    ($f:ident, $cols:expr, $mode:expr, ($($arg:expr),*)) => {
        match ($cols <= 8, $mode) {
            (true, BY_RUNS) => $f::<1, BY_RUNS>($($arg),*),
            (false, BY_RUNS) => $f::<2, BY_RUNS>($($arg),*),
            (true, EACH_STEP) => $f::<1, EACH_STEP>($($arg),*),
            (false, EACH_STEP) => $f::<2, EACH_STEP>($($arg),*),
            (true, DOT_VEX) => $f::<1, DOT_VEX>($($arg),*),
            (false, DOT_VEX) => $f::<2, DOT_VEX>($($arg),*),
            (true, _) => $f::<1, DOT_EVEX>($($arg),*),
            (false, _) => $f::<2, DOT_EVEX>($($arg),*),
        }
    };
}

/// One tile's accumulators into `tile`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn tile_avx2<const V: usize, const MODE: u8>(
    a: &[i32],
    b: &[u8],
    offs: &[usize],
    runs: &[u32],
    tile: &mut [[i32; NR]; MR],
) {
    use std::arch::x86_64::*;
    // SAFETY: as `accumulate`; `tile` rows hold `8 * V` lanes.
    unsafe {
        let wide = sums::<V, MODE>(a, b, offs, runs);
        for (row, wide_r) in tile.iter_mut().zip(wide) {
            for (v, w) in wide_r.iter().enumerate() {
                _mm256_storeu_si256(row.as_mut_ptr().add(8 * v) as *mut __m256i, *w);
            }
        }
    }
}

/// One tile requantized in registers: row `r` of the block goes through `rows[r]` into the
/// `cols` bytes at `dst[r]`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn tile_avx2_requant<const V: usize, const MODE: u8>(
    a: &[i32],
    b: &[u8],
    offs: &[usize],
    runs: &[u32],
    rows: &[RowAvx2],
    dst: &[*mut u8],
    cols: usize,
) {
    use std::arch::x86_64::*;
    // SAFETY: as `accumulate`; each `dst[r]` has `cols <= 8 * V` writable bytes.
    unsafe {
        let wide = sums::<V, MODE>(a, b, offs, runs);
        for ((row, &d), wide_r) in rows.iter().zip(dst).zip(&wide) {
            for (v, w) in wide_r.iter().enumerate() {
                let bytes = row.bytes8(*w);
                let n = cols.saturating_sub(8 * v).min(8);
                if n == 8 {
                    _mm_storel_epi64(d.add(8 * v) as *mut __m128i, bytes);
                } else if n > 0 {
                    let mut tmp = [0u8; 16];
                    _mm_storeu_si128(tmp.as_mut_ptr() as *mut __m128i, bytes);
                    std::ptr::copy_nonoverlapping(tmp.as_ptr(), d.add(8 * v), n);
                }
            }
        }
    }
}

fn tile(kernel: Kernel, a: &[i32], b: &[u8], offs: &[usize], runs: &[u32], t: &mut [[i32; NR]; MR], cols: usize) {
    #[cfg(target_arch = "x86_64")]
    if kernel.is_simd() {
        // SAFETY: a SIMD `Kernel` only exists when AVX2 (and, for the VNNI kinds, its
        // instruction) was detected; bounds checked by `conv`.
        unsafe {
            with_tile_consts!(
                tile_avx2,
                cols,
                sum_mode(kernel, runs, offs.len()),
                (a, b, offs, runs, t)
            )
        };
        return;
    }
    let _ = (kernel, cols, runs);
    tile_ref(a, b, offs, t)
}

/// What the byte kernel reads for one group of one image.
pub enum ByteOperand<'a> {
    /// A direct convolution over a padded, quad-interleaved image.
    Image { img: &'a QuadImage, s: &'a ConvShape },
    /// A matrix product (1x1 convolution) over `pack_panels`' panels of `npix` pixels.
    Panels { buf: &'a [u8], npix: usize },
}

/// Packs `x` (`cg` rows of `npix` pixels, a 1x1 convolution's input, zero point `zero`)
/// into panels of `NR` pixels, `[npix / NR][k4][NR][4]` bytes, as `x + offset` (the
/// padding byte `zero + offset` in the channels that round `cg` up to four and in the
/// pixels past `npix`), and returns how it made them bytes: the `ByteInput` that
/// `ByteInput::measure` gives. `None` when the zero point cannot be a byte.
///
/// Each tile then reads its operand contiguously; the direct kernel would read one 64-byte
/// piece from each of `cg / 4` planes per tile.
///
/// Why it measures as it packs: a separate pass for the extremes read the input once more
/// (benches/RESULTS.md, "Measured design choices (integer engine)"). It packs with the offset of 0 whenever
/// that can be right and packs again with 128 when a value turns out negative (a signed
/// input, such as a network's first layer).
pub fn pack_panels<T: QElem>(
    x: &[T],
    cg: usize,
    npix: usize,
    zero: i32,
    out: &mut Vec<u8>,
    parallel: bool,
) -> Option<ByteInput> {
    let mut input = ByteInput::new(if T::UNSIGNED || zero >= 0 { 0 } else { 128 }, zero)?;
    let mut top = pack_panels_with(x, cg, npix, input, out, parallel);
    // With the offset 0 on i8 values, a byte with its top bit set is a negative value.
    if top >= 128 && input.offset == 0 && !T::UNSIGNED {
        input = ByteInput::new(128, zero)?;
        top = pack_panels_with(x, cg, npix, input, out, parallel);
    }
    input.amax = top.max(input.pad);
    Some(input)
}

/// `pack_panels` with a given offset and padding byte (`input.amax` is not read): returns
/// the largest byte it wrote.
fn pack_panels_with<T: QElem>(
    x: &[T],
    cg: usize,
    npix: usize,
    input: ByteInput,
    out: &mut Vec<u8>,
    parallel: bool,
) -> u8 {
    let k4 = cg.div_ceil(4);
    let panels = npix.div_ceil(NR);
    out.clear();
    out.resize(panels * k4 * NR * 4, input.pad);
    if k4 == 0 {
        return 0;
    }
    let x = &as_bytes(x)[..cg * npix];
    let pack = |(p, panel): (usize, &mut [u8])| {
        let c0 = p * NR;
        #[cfg(target_arch = "x86_64")]
        if c0 + NR <= npix && (input.offset == 0 || input.offset == 128) {
            // SSE2 is part of x86-64.
            return pack_panel_sse2(x, cg, npix, c0, input, panel);
        }
        pack_panel_ref(x, cg, npix, c0, input, panel)
    };
    if parallel {
        out.par_chunks_exact_mut(k4 * NR * 4)
            .enumerate()
            .map(pack)
            .max()
            .unwrap_or(0)
    } else {
        out.chunks_exact_mut(k4 * NR * 4)
            .enumerate()
            .map(pack)
            .max()
            .unwrap_or(0)
    }
}

/// The panel of pixels `c0..c0 + NR` (those below `npix`), plain Rust: `x` holds the bytes
/// of `cg` rows of `npix` values; `panel` comes filled with `input.pad`.
fn pack_panel_ref(x: &[u8], cg: usize, npix: usize, c0: usize, input: ByteInput, panel: &mut [u8]) -> u8 {
    for (c, row) in x.chunks_exact(npix).take(cg).enumerate() {
        let (cq, e) = (c / 4, c % 4);
        for (j, &v) in row[c0..npix.min(c0 + NR)].iter().enumerate() {
            // i8 bytes are two's complement: adding 128 to one is adding it to its byte.
            panel[(cq * NR + j) * 4 + e] = (v as i32 + input.offset) as u8;
        }
    }
    panel.iter().copied().max().unwrap_or(0)
}

/// `pack_panel_ref` of a full panel (`c0 + NR <= npix`) for offsets 0 and 128, sixteen
/// pixels of four channels per step in SSE2 registers.
///
/// Why a function of its own: `interleave4` per quad and panel spent more time choosing its
/// path than moving 64 bytes (benches/RESULTS.md, "Measured design choices (integer engine)").
#[cfg(target_arch = "x86_64")]
fn pack_panel_sse2(x: &[u8], cg: usize, npix: usize, c0: usize, input: ByteInput, panel: &mut [u8]) -> u8 {
    use std::arch::x86_64::*;
    const { assert!(NR == 16) };
    let k4 = cg.div_ceil(4);
    assert!(c0 + NR <= npix && x.len() >= cg * npix && panel.len() >= k4 * NR * 4);
    // SAFETY: SSE2 is part of x86-64; loads read x[c * npix + c0..+16] with c < cg and
    // c0 + 16 <= npix; stores write panel[64 cq..64 cq + 64] with cq < k4 (checked above).
    unsafe {
        let flip = _mm_set1_epi8(if input.offset == 128 { -128 } else { 0 });
        let pad = _mm_set1_epi8(input.pad as i8);
        let (src, dst) = (x.as_ptr().add(c0), panel.as_mut_ptr());
        let mut top = _mm_setzero_si128();
        for cq in 0..k4 {
            let v: [__m128i; 4] = std::array::from_fn(|e| {
                let c = 4 * cq + e;
                if c < cg {
                    let p = src.add(c * npix);
                    // Each panel reads 16 bytes from each of `cg` rows, too many streams
                    // for the hardware prefetcher: ask for the next line of each row
                    // (benches/RESULTS.md, integer engine's measured design choices).
                    _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(64) as *const i8);
                    _mm_xor_si128(_mm_loadu_si128(p as *const __m128i), flip)
                } else {
                    pad
                }
            });
            let (ab_lo, ab_hi) = (_mm_unpacklo_epi8(v[0], v[1]), _mm_unpackhi_epi8(v[0], v[1]));
            let (cd_lo, cd_hi) = (_mm_unpacklo_epi8(v[2], v[3]), _mm_unpackhi_epi8(v[2], v[3]));
            let d = dst.add(cq * NR * 4) as *mut __m128i;
            _mm_storeu_si128(d, _mm_unpacklo_epi16(ab_lo, cd_lo));
            _mm_storeu_si128(d.add(1), _mm_unpackhi_epi16(ab_lo, cd_lo));
            _mm_storeu_si128(d.add(2), _mm_unpacklo_epi16(ab_hi, cd_hi));
            _mm_storeu_si128(d.add(3), _mm_unpackhi_epi16(ab_hi, cd_hi));
            top = _mm_max_epu8(top, _mm_max_epu8(_mm_max_epu8(v[0], v[1]), _mm_max_epu8(v[2], v[3])));
        }
        let mut lanes = [0u8; 16];
        _mm_storeu_si128(lanes.as_mut_ptr() as *mut __m128i, top);
        lanes.into_iter().max().unwrap_or(0)
    }
}

impl ByteOperand<'_> {
    /// The read offset of each step, and the checks shared by the entry points.
    fn checked_offsets(&self, a: &QuadWeights, plan: &RunPlan) -> Vec<usize> {
        let offs = match self {
            ByteOperand::Image { img, s } => offsets(img, s),
            ByteOperand::Panels { .. } => (0..a.k4).map(|t| t * NR * 4).collect(),
        };
        assert!(
            a.k4 == offs.len() && plan.runs.len() == a.m.div_ceil(MR),
            "qconv: bad operands"
        );
        for b in &plan.runs {
            assert!(
                b.iter().map(|&l| l as usize).sum::<usize>() == a.k4,
                "qconv: bad run plan"
            );
        }
        let max_off = offs.iter().copied().max().unwrap_or(0);
        match self {
            ByteOperand::Image { img, s } => assert!(
                last_start(s, img.pitch) * 4 + max_off + 4 * NR <= img.buf.len(),
                "qconv: image too small"
            ),
            ByteOperand::Panels { buf, npix } => {
                assert!(buf.len() >= npix.div_ceil(NR) * a.k4 * NR * 4, "qconv: short panels")
            }
        }
        offs
    }

    fn npix(&self) -> usize {
        match self {
            ByteOperand::Image { s, .. } => s.out[0] * s.out[1],
            ByteOperand::Panels { npix, .. } => *npix,
        }
    }

    /// `work(block, operand from the tile's first read, pix0, cols)` for every tile of `a`'s
    /// blocks.
    fn for_each_tile<T>(&self, a: &QuadWeights, parallel: bool, work: T)
    where
        T: Fn(usize, &[u8], usize, usize) + Sync,
    {
        match self {
            ByteOperand::Image { img, s } => for_each_tile(a.m, s, img.pitch, parallel, |bi, start, pix0, cols| {
                work(bi, &img.buf[start * 4..], pix0, cols)
            }),
            ByteOperand::Panels { buf, npix } => {
                // `pack_panels`' layout: each panel holds `k4` steps of `NR` pixels x 4 bytes.
                let len = a.k4 * NR * 4;
                split_tasks(a.m.div_ceil(MR), npix.div_ceil(NR), parallel, |bi, p0, p1| {
                    for p in p0..p1 {
                        work(bi, &buf[p * len..], p * NR, NR.min(npix - p * NR));
                    }
                });
            }
        }
    }
}

/// Computes one group of one image with the runs of `plan` (`a.plan(kernel, amax)` of the
/// input's `ByteInput`): `out` is `[mg][npix]`; `epilogue(row, accs, dst)` receives
/// `sum (x + offset) w`, i.e. the centered sums plus `input.shift() * a.row_sums[row]`.
pub fn conv<O, F>(
    a: &QuadWeights,
    b: &ByteOperand,
    plan: &RunPlan,
    out: &mut [O],
    parallel: bool,
    kernel: Kernel,
    epilogue: F,
) where
    O: Send,
    F: Fn(usize, &[i32], &mut [O]) + Sync,
{
    let offs = b.checked_offsets(a, plan);
    let out = TileOut::new(out, a.m, b.npix());
    b.for_each_tile(a, parallel, |bi, bv, pix0, cols| {
        let mut t = [[0i32; NR]; MR];
        tile(kernel, a.block_words(bi), bv, &offs, plan.block(bi), &mut t, cols);
        out.finish(&t, bi, pix0, cols, &epilogue);
    });
}

/// `conv` followed by `requant_row` of each row, done in registers by the SIMD kernel.
/// `out` (`[m][npix]`) need not be initialized: every element is written.
///
/// Why: the caller's buffer then needs no zeroing first, a pass over every output
/// (benches/RESULTS.md, "Measured design choices (integer engine)").
pub fn conv_requant<O: QElem>(
    a: &QuadWeights,
    b: &ByteOperand,
    plan: &RunPlan,
    out: &mut [MaybeUninit<O>],
    parallel: bool,
    kernel: Kernel,
    rows: &RowsRequant,
) {
    assert!(
        rows.bias.len() >= a.m && rows.factor.len() >= a.m,
        "qconv: short requantization"
    );
    let epilogue =
        |row: usize, acc: &[i32], dst: &mut [O]| requant_row(acc, rows.bias[row], rows.factor[row], rows.out, dst);
    #[cfg(target_arch = "x86_64")]
    if kernel.is_simd() {
        let offs = b.checked_offsets(a, plan);
        // SAFETY: a SIMD `Kernel` only exists when AVX2 was detected.
        let consts = unsafe { rows.simd_rows::<O>(a.m) };
        // All of `out`, so that all of it gets written (debug builds hand it over filled
        // with a pattern, `filled_chunks`, so that an output the tiles miss shows).
        assert_eq!(out.len(), a.m * b.npix(), "qconv: output size");
        // The tiles cover every block of rows and every pixel (`for_each_tile`), and each
        // writes all `cols` outputs of each of its rows.
        let out = TileOut::new_uninit(out, a.m, b.npix());
        b.for_each_tile(a, parallel, |bi, bv, pix0, cols| {
            let n = out.rows(bi);
            let mut dst = [std::ptr::null_mut::<u8>(); MR];
            for (r, d) in dst.iter_mut().enumerate().take(n) {
                // This tile owns rows bi*MR.. x pixels pix0..pix0+cols; O is one byte.
                *d = out.run_ptr(bi * MR + r, pix0) as *mut u8;
            }
            let (ab, rs) = (a.block_words(bi), &consts[bi * MR..bi * MR + n]);
            // SAFETY: AVX2 (and a VNNI kind's instruction) detected; operand bounds checked
            // by `checked_offsets`.
            unsafe {
                let (runs, d) = (plan.block(bi), &dst[..n]);
                let mode = sum_mode(kernel, runs, offs.len());
                with_tile_consts!(tile_avx2_requant, cols, mode, (ab, bv, &offs, runs, rs, d, cols))
            }
        });
        return;
    }
    conv(a, b, plan, zeroed(out), parallel, kernel, epilogue);
}

/// `x` with every element set to zero, as initialized values.
pub fn zeroed<O: QElem>(x: &mut [MaybeUninit<O>]) -> &mut [O] {
    x.iter_mut().for_each(|v| {
        v.write(O::from_i32(0));
    });
    // SAFETY: every element was just written, and `MaybeUninit<O>` has the layout of `O`.
    unsafe { &mut *(x as *mut [MaybeUninit<O>] as *mut [O]) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::conv::Window2d;
    use crate::kernels::qconv_direct::conv_ref;
    use proptest::prelude::*;

    /// The plans `kernel` can run on inputs up to `amax`: every AVX2 plan whose cap covers
    /// them, or for VNNI kernels the single-run plan, whatever the input.
    fn plans_to_check(a: &QuadWeights, kernel: Kernel, amax: u8) -> Vec<&RunPlan> {
        if kernel.has_byte_dot() {
            vec![&a.whole]
        } else {
            a.plans.iter().filter(|p| p.cap >= amax).collect()
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(96))]
        /// With every run plan whose cap covers the input, the kernels give the exact
        /// sums; activations sit at `amax` half of the time, which is where the i16 lanes
        /// come closest to their bounds.
        #[test]
        fn byte_kernel_matches_the_definition(
            cg in 1usize..10, mg in 1usize..9, h in 1usize..8, w in 1usize..40, k in 1usize..4,
            stride in 1usize..4, dil in 1usize..3, pads in proptest::array::uniform4(0usize..3), seed in any::<u64>(),
            wmax in prop_oneof![Just(1i32), Just(8), Just(40), Just(127), Just(128)],
            signed in any::<bool>(), zero in prop_oneof![Just(0i32), -20i32..20],
        ) {
            let win = Window2d { kernel: [k, k], strides: [stride, stride], dilations: [dil, dil], pads };
            let Some(out) = win.output_size(h, w, false) else { return Ok(()) };
            let s = ConvShape { n: 1, c: cg, h, w, m: mg, group: 1, win, out };
            let mut st = seed | 1;
            let mut next = move || { st ^= st << 13; st ^= st >> 7; st ^= st << 17; st };
            let wt: Vec<i8> = (0..mg * cg * k * k)
                .map(|_| ((next() % (2 * wmax as u64 + 1)) as i32 - wmax).clamp(-128, 127) as i8)
                .collect();
            let top = (next() % 256) as i32;
            let pick = |r: u64| if r.is_multiple_of(2) { top } else { (r >> 8) as i32 % (top + 1) };
            let xs: Vec<i32> = (0..cg * h * w).map(|_| pick(next())).collect();
            let a = QuadWeights::new(&wt, mg, cg, k, k);
            let check = |x16: Vec<i16>, input: ByteInput, img: &QuadImage| -> Result<(), TestCaseError> {
                let want = conv_ref(&x16, &wt, &s, cg, mg);
                // Every plan whose cap covers the input, not only the one `plan_for` picks;
                // VNNI kernels on every input (with full-range weights and bytes, no plan fits).
                for kernel in Kernel::available() {
                    for plan in plans_to_check(&a, kernel, input.amax) {
                        for parallel in [false, true] {
                            let mut got = vec![0i64; mg * out[0] * out[1]];
                            conv(&a, &ByteOperand::Image { img, s: &s }, plan, &mut got, parallel, kernel, |row, acc, dst| {
                                let shift = input.shift() as i64 * a.row_sums[row] as i64;
                                dst.iter_mut().zip(acc).for_each(|(d, &v)| *d = v as i64 - shift)
                            });
                            prop_assert_eq!(&got, &want, "cap {} {:?}", plan.cap, kernel);
                        }
                    }
                }
                Ok(())
            };
            let mut img = QuadImage::new();
            if signed {
                let x: Vec<i8> = xs.iter().map(|&v| (v - 128) as i8).collect();
                let z = zero.clamp(-128, 127);
                let Some(input) = ByteInput::measure(&x, z) else { return Ok(()) };
                img.fill(&x, cg, input, &s);
                check(x.iter().map(|&v| v as i16 - z as i16).collect(), input, &img)?;
            } else {
                let x: Vec<u8> = xs.iter().map(|&v| v as u8).collect();
                let z = zero.abs();
                let Some(input) = ByteInput::measure(&x, z) else { return Ok(()) };
                img.fill(&x, cg, input, &s);
                check(x.iter().map(|&v| v as i16 - z as i16).collect(), input, &img)?;
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// 1x1 convolutions through packed panels: the same sums as the definition.
        #[test]
        fn panels_match_the_definition(
            cg in 1usize..40, mg in 1usize..15, npix in 1usize..70, seed in any::<u64>(),
            wmax in prop_oneof![Just(3i32), Just(30), Just(127)], top in prop_oneof![Just(255u8), Just(127), 0u8..=255],
            signed in any::<bool>(),
        ) {
            let mut st = seed | 1;
            let mut next = move || { st ^= st << 13; st ^= st >> 7; st ^= st << 17; st };
            let wt: Vec<i8> = (0..mg * cg).map(|_| ((next() % (2 * wmax as u64 + 1)) as i32 - wmax) as i8).collect();
            let x: Vec<u8> = (0..cg * npix).map(|_| if next() % 2 == 0 { top } else { (next() % (top as u64 + 1)) as u8 }).collect();
            let win = Window2d { kernel: [1, 1], strides: [1, 1], dilations: [1, 1], pads: [0; 4] };
            let s = ConvShape { n: 1, c: cg, h: 1, w: npix, m: mg, group: 1, win, out: [1, npix] };
            let a = QuadWeights::new(&wt, mg, cg, 1, 1);
            // Signed inputs (moved down by 128, so mostly negative) take the offset of 128.
            let check = |x16: Vec<i16>, input: ByteInput, pack: &dyn Fn(&mut Vec<u8>, bool) -> Option<ByteInput>| -> Result<(), TestCaseError> {
                let want = conv_ref(&x16, &wt, &s, cg, mg);
                let mut buf = Vec::new();
                for kernel in Kernel::available() {
                    for (plan, parallel) in plans_to_check(&a, kernel, input.amax).into_iter().flat_map(|p| [(p, false), (p, true)]) {
                        // Packing measures the input as `ByteInput::measure` does.
                        prop_assert_eq!(pack(&mut buf, parallel), Some(input));
                        let b = ByteOperand::Panels { buf: &buf, npix };
                        let mut got = vec![0i64; mg * npix];
                        conv(&a, &b, plan, &mut got, parallel, kernel, |row, acc, dst| {
                            let shift = input.shift() as i64 * a.row_sums[row] as i64;
                            dst.iter_mut().zip(acc).for_each(|(d, &v)| *d = v as i64 - shift)
                        });
                        prop_assert_eq!(&got, &want, "cap {} {:?}", plan.cap, kernel);
                    }
                }
                Ok(())
            };
            if signed {
                let x: Vec<i8> = x.iter().map(|&v| (v as i32 - 128) as i8).collect();
                let input = ByteInput::measure(&x, 0).unwrap();
                check(x.iter().map(|&v| v as i16).collect(), input, &|buf, par| pack_panels(&x, cg, npix, 0, buf, par))?;
            } else {
                let input = ByteInput::measure(&x, 0).unwrap();
                check(x.iter().map(|&v| v as i16).collect(), input, &|buf, par| pack_panels(&x, cg, npix, 0, buf, par))?;
            }
        }

        /// The vectorized extremes against `Iterator::min` and `max`.
        #[test]
        fn extremes_match_iterators(x in proptest::collection::vec(any::<i8>(), 0..200)) {
            let want = x.iter().min().copied().zip(x.iter().max().copied());
            prop_assert_eq!(extremes(&x), want);
            let u: Vec<u8> = x.iter().map(|&v| v as u8).collect();
            prop_assert_eq!(extremes(&u), u.iter().min().copied().zip(u.iter().max().copied()));
        }
    }

    #[test]
    fn runs_end_before_a_lane_could_leave_i16() {
        // One output row, 3x3 over 8 channels (18 steps), every weight 127: a lane sums two
        // weights per step, so a run of r steps reaches amax * 254 * r.
        let w = vec![127i8; 8 * 9];
        let a = QuadWeights::new(&w, 1, 8, 3, 3);
        assert!(a.plan_for(128).is_none(), "255 * 254 > 32767: one step can saturate");
        assert_eq!(a.plan_for(127).unwrap().block(0), &[1; 18], "127 * 254 * 2 > 32767");
        assert_eq!(
            a.plan_for(40).unwrap().block(0),
            &[2; 9],
            "63 * 254 * 2 <= 32767 < 63 * 254 * 3"
        );
        // Mixed signs: the positive and negative sums are bounded separately, and a block's
        // runs end where any of its rows needs it.
        let mut w: Vec<i8> = (0..2 * 8 * 9).map(|i| if i % 2 == 0 { 100 } else { -100 }).collect();
        let a = QuadWeights::new(&w, 2, 8, 3, 3);
        assert_eq!(
            a.plan_for(127).unwrap().block(0),
            &[2; 9],
            "127 * 200 <= 32767 < 127 * 300"
        );
        w.iter_mut().for_each(|v| *v = 1);
        assert_eq!(QuadWeights::new(&w, 2, 8, 3, 3).plan_for(255).unwrap().block(0), &[18]);
        w[8 * 9..].iter_mut().for_each(|v| *v = 127);
        assert_eq!(
            QuadWeights::new(&w, 2, 8, 3, 3).plan_for(127).unwrap().block(0),
            &[1; 18]
        );
        // Seven rows: the second block (row 6) has its own runs.
        let mut w = vec![1i8; 7 * 8 * 9];
        w[..8 * 9].iter_mut().for_each(|v| *v = 127);
        let a = QuadWeights::new(&w, 7, 8, 3, 3);
        let plan = a.plan_for(127).unwrap();
        assert_eq!((plan.block(0), plan.block(1)), (&[1; 18][..], &[18][..]));
    }

    #[test]
    fn inputs_become_bytes() {
        let i = ByteInput::measure(&[0i8, 5, 127], 0).unwrap();
        assert_eq!((i.offset, i.pad, i.amax), (0, 0, 127));
        let i = ByteInput::measure(&[-3i8, 5], 0).unwrap();
        assert_eq!((i.offset, i.pad, i.amax), (128, 128, 133));
        let i = ByteInput::measure(&[3i8, 5], -2).unwrap();
        assert_eq!((i.offset, i.pad, i.amax), (128, 126, 133));
        let i = ByteInput::measure(&[3u8, 200], 250).unwrap();
        assert_eq!((i.offset, i.pad, i.amax), (0, 250, 250));
    }
}
