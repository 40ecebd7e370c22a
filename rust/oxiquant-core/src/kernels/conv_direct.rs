//! Direct convolution for single-group convolutions (most 3x3 and 1x1 layers of CNNs): no
//! im2col matrix. The input image is copied once into a zero-padded buffer (small images a
//! few at a time, one after the other, so that a kernel call can take pixels of two); then,
//! for a run of output pixels along one row, the patch element `(c, i, j)` of every pixel
//! is a contiguous run of that buffer at a fixed offset. A register-blocked kernel
//! (6 output channels x 16 pixels: twelve AVX2 accumulators, which fit the 16 registers
//! without spilling; a 4 x 24 tile spilled one and ran at half the speed) reads those runs
//! in place, with FMA when the CPU has it. With AVX-512, 8 x 48 pixels: 24 of the 32
//! 512-bit registers accumulate, three pixel vectors and eight weights loaded per 24 FMAs
//! (and 16 output channels, as in CIFAR ResNets, fill two panels exactly).
//!
//! Why not the GEMM crate here: with few output channels (16-64, as in CIFAR ResNets) the
//! product is too flat for its packing to pay off (benches/RESULTS.md, "Measured design choices (fp32)").

use super::conv::ConvShape;
use super::cpu::{self, CpuFeatures};
use rayon::prelude::*;

/// Output channels per AVX2 (and portable) kernel call (and pixels: two vectors of
/// `LANES`). Not 4 x 16 (eight accumulators, for channel counts like 16 that 6 does not
/// divide): eight FMA chains do not hide the FMA latency (benches/RESULTS.md, "Measured design choices (fp32)").
const MR: usize = 6;
/// Output channels per AVX-512 kernel call.
const MR_WIDE: usize = 8;
/// Pixels per vector.
const LANES: usize = 8;
/// Runs of `LANES` pixels per kernel call, at most: two for AVX2 (twelve 256-bit
/// accumulators), six for AVX-512 (three 512-bit vectors per row).
const RUNS: usize = 6;

/// Output channels per panel of packed weights for a kernel kind.
fn panel_rows(simd: Simd) -> usize {
    if simd == Simd::Avx512 {
        MR_WIDE
    } else {
        MR
    }
}

/// Whether `direct_conv` handles this shape and beats im2col + GEMM on it. Measured
/// (benches/RESULTS.md, ResNet-20 and ResNet-50 layers): it wins on spatial kernels up to
/// K = 1152 (1.1-2x) and on 1x1 layers with few outputs; the GEMM crate wins on 1x1 layers
/// with 64+ outputs and on 3x3 layers with 256+ input channels, where its cache blocking of
/// the long K dimension pays.
pub fn supported(s: &ConvShape) -> bool {
    let k = s.c * s.win.kernel[0] * s.win.kernel[1];
    let spatial = s.win.kernel[0] * s.win.kernel[1] > 1;
    let worth = if spatial { k <= 1152 } else { s.m <= 32 };
    handles(s) && s.m >= 4 && worth
}

/// Shapes the kernel computes correctly (any kernel, dilation and vertical stride).
pub fn handles(s: &ConvShape) -> bool {
    s.group == 1 && (1..=4).contains(&s.win.strides[1])
}

/// Weights `[m, k]` as panels of rows interleaved by `k`, for this CPU's best kernel:
/// `p[panel][k][r]`; rows past `m` are zero. Inference plans pack once per model
/// (`ops::fused`); `direct_conv` packs per call.
pub fn pack_weights(wt: &[f32], m: usize, k: usize) -> Vec<f32> {
    pack_weights_for(wt, m, k, best_simd())
}

/// `pack_weights` for the kernel kind `simd` (panels of 6 or 8 rows).
pub(crate) fn pack_weights_for(wt: &[f32], m: usize, k: usize, simd: Simd) -> Vec<f32> {
    let mr = panel_rows(simd);
    let panels = m.div_ceil(mr);
    let mut p = vec![0f32; panels * k * mr];
    for row in 0..m {
        let (panel, r) = (row / mr, row % mr);
        for kk in 0..k {
            p[(panel * k + kk) * mr + r] = wt[row * k + kk];
        }
    }
    p
}

/// The zero-padded image split into `sw` column phases (`sw` = horizontal stride): phase
/// `q` holds padded columns `q, q + sw, q + 2 sw, ...`, so that the patch element of
/// consecutive output pixels is contiguous whatever the stride. Layout
/// `[q][c][hp][wq]`, then slack so that full vectors read past the last row stay inside.
struct Padded {
    buf: Vec<f32>,
    hp: usize,
    wq: usize,
    /// Length of one image's phases (several images follow each other, see `pad_images`).
    image_len: usize,
}

/// `count` images (`x` holds them, `[count, c, h, w]`) padded one after the other into one
/// buffer, image `g` from `g * image_len` on: a kernel call can then take runs from
/// several images (small planes leave a partial call per image otherwise).
fn pad_images(x: &[f32], count: usize, s: &ConvShape, parallel: bool) -> Padded {
    let [pt, pl, pb, pr] = s.win.pads;
    let sw = s.win.strides[1];
    let (hp, wp) = (s.h + pt + pb, s.w + pl + pr);
    let wq = wp.div_ceil(sw);
    let image_len = sw * s.c * hp * wq;
    let len = count * image_len + wq + 4 * LANES;
    if sw == 1 {
        // One plane per image and channel, every value written once (the pads as zeros):
        // zeroing the whole buffer first costs a pass (benches/RESULTS.md, "Measured design choices (fp32)").
        // Copied in parallel when the images alone do not keep the threads busy (batch 1),
        // else this copy runs alone before the product.
        let mut buf: Vec<f32> = Vec::with_capacity(len);
        let (planes, slack) = buf.spare_capacity_mut()[..len].split_at_mut(count * image_len);
        let zero = std::mem::MaybeUninit::new(0f32);
        slack.fill(zero);
        // Plane `c` of the buffer (image `c / s.c`) holds input plane `c` of `x`.
        let fill = |(c, plane): (usize, &mut [std::mem::MaybeUninit<f32>])| {
            for (r, row) in plane.chunks_exact_mut(wq).enumerate() {
                match r.checked_sub(pt).filter(|&y| y < s.h) {
                    Some(y) => {
                        let src = &x[(c * s.h + y) * s.w..(c * s.h + y + 1) * s.w];
                        row[..pl].fill(zero);
                        for (d, &v) in row[pl..pl + s.w].iter_mut().zip(src) {
                            *d = std::mem::MaybeUninit::new(v);
                        }
                        row[pl + s.w..].fill(zero);
                    }
                    None => row.fill(zero),
                }
            }
        };
        if parallel {
            planes.par_chunks_mut(hp * wq).enumerate().for_each(fill);
        } else {
            planes.chunks_mut(hp * wq).enumerate().for_each(fill);
        }
        // SAFETY: the loops above wrote every value below `len`: each plane's `hp` rows of
        // `wq` (pads, then the input row, then pads; or a pad row), then the slack.
        unsafe { buf.set_len(len) };
        return Padded { buf, hp, wq, image_len };
    }
    let mut buf = vec![0f32; len];
    let plane_in = s.c * s.h * s.w;
    for g in 0..count {
        let dst = &mut buf[g * image_len..(g + 1) * image_len];
        split_phases(&x[g * plane_in..(g + 1) * plane_in], s, dst, hp, wq);
    }
    Padded { buf, hp, wq, image_len }
}

/// The column phases of `pad_images` for strides above 1 (the buffer is zeroed): input
/// columns landing in phase q are every sw-th from the first one, and land side by side
/// from padded column (first + pl) / sw on. Compiled for AVX2 too, where the CPU has it, so
/// that the strided copies vectorize (a scalar loop with a division per value dominated
/// stride-2 layers: benches/RESULTS.md, "Measured design choices (fp32)").
fn split_phases(x: &[f32], s: &ConvShape, buf: &mut [f32], hp: usize, wq: usize) {
    #[inline(always)]
    fn body(x: &[f32], s: &ConvShape, buf: &mut [f32], hp: usize, wq: usize) {
        let (pt, pl, sw) = (s.win.pads[0], s.win.pads[1], s.win.strides[1]);
        // (phase, first input column, columns, first padded column of the phase)
        let phases: Vec<(usize, usize, usize, usize)> = (0..sw)
            .map(|q| (q, (q + sw - pl % sw) % sw))
            .filter(|&(_, first)| first < s.w)
            .map(|(q, first)| (q, first, (s.w - first).div_ceil(sw), (first + pl) / sw))
            .collect();
        for c in 0..s.c {
            for y in 0..s.h {
                let src = &x[(c * s.h + y) * s.w..(c * s.h + y + 1) * s.w];
                for &(q, first, n, col) in &phases {
                    let at = ((q * s.c + c) * hp + y + pt) * wq + col;
                    let dst = &mut buf[at..at + n];
                    match sw {
                        2 => every_nth::<2>(&src[first..], dst),
                        3 => every_nth::<3>(&src[first..], dst),
                        4 => every_nth::<4>(&src[first..], dst),
                        _ => dst
                            .iter_mut()
                            .zip(src[first..].iter().step_by(sw))
                            .for_each(|(d, &v)| *d = v),
                    }
                }
            }
        }
    }
    #[cfg(target_arch = "x86_64")]
    if cpu::features().avx2 {
        #[target_feature(enable = "avx2")]
        unsafe fn avx2(x: &[f32], s: &ConvShape, buf: &mut [f32], hp: usize, wq: usize) {
            body(x, s, buf, hp, wq)
        }
        // SAFETY: the feature table (`cpu::features`) says the CPU has AVX2.
        return unsafe { avx2(x, s, buf, hp, wq) };
    }
    body(x, s, buf, hp, wq)
}

/// `dst[j] = src[S * j]` for every `j < dst.len()` (`dst.len() == src.len().div_ceil(S)`).
#[inline(always)]
fn every_nth<const S: usize>(src: &[f32], dst: &mut [f32]) {
    let groups = src.chunks_exact(S);
    let tail = groups.remainder().first().copied();
    let n = dst.len();
    for (d, g) in dst.iter_mut().zip(groups) {
        *d = g[0];
    }
    if let Some(v) = tail {
        dst[n - 1] = v;
    }
}

/// Offsets in the padded image of every patch element `(c, i, j)`, in weight order.
fn patch_offsets(s: &ConvShape, hp: usize, wq: usize) -> Vec<usize> {
    let [kh, kw] = s.win.kernel;
    let [dh, dw] = s.win.dilations;
    let sw = s.win.strides[1];
    let mut offs = Vec::with_capacity(s.c * kh * kw);
    for c in 0..s.c {
        for i in 0..kh {
            for j in 0..kw {
                let (q, col) = ((j * dw) % sw, (j * dw) / sw);
                offs.push(((q * s.c + c) * hp + i * dh) * wq + col);
            }
        }
    }
    offs
}

/// Where a tile's results go: row `r` (output channel `first + r`, for `r < rows`), run `v`
/// of `n_px[v]` pixels starts at `out[dst[v] + r * plane]`, after `bias[r]` and the
/// epilogue.
struct Store<'a> {
    dst: [usize; RUNS],
    n_px: [usize; RUNS],
    plane: usize,
    rows: usize,
    bias: &'a [f32; MR_WIDE],
    epi: Epilogue,
}

/// `acc[r][v*8 + l] = sum_k w[k][r] * img[offs[k] + bases[v] + l]` for `nv` runs of 8
/// pixels and panels of `mr` rows, then stored through `st`. Portable version (and the
/// reference for the SIMD ones).
#[allow(clippy::too_many_arguments)]
fn tile_portable(
    nv: usize,
    mr: usize,
    w: &[f32],
    img: &[f32],
    offs: &[usize],
    bases: &[usize; RUNS],
    out: OutPtr,
    st: &Store<'_>,
) {
    let mut a = [[0f32; RUNS * LANES]; MR_WIDE];
    for (kk, &o) in offs.iter().enumerate() {
        let wk = &w[kk * mr..kk * mr + mr];
        for v in 0..nv {
            let px = &img[o + bases[v]..o + bases[v] + LANES];
            for r in 0..mr {
                for (l, &x) in px.iter().enumerate() {
                    a[r][v * LANES + l] += wk[r] * x;
                }
            }
        }
    }
    for (r, ar) in a.iter().enumerate().take(st.rows) {
        for v in 0..nv {
            // SAFETY: `direct_conv_packed` builds `st` so that this run lies inside `out`
            // and belongs to rows only this task writes.
            let dst = unsafe { std::slice::from_raw_parts_mut(out.at(st.dst[v] + r * st.plane), st.n_px[v]) };
            for (d, &x) in dst.iter_mut().zip(&ar[v * LANES..]) {
                *d = st.epi.apply(x + st.bias[r], *d);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{OutPtr, Store, LANES, MR, RUNS};
    use std::arch::x86_64::*;

    /// SAFETY: the caller checked AVX2 and FMA, `w.len() >= offs.len() * MR`,
    /// `offs[k] + bases[v] + LANES <= img.len()` for every k and v < NV, and that `st`
    /// addresses runs inside `out` that no other thread writes.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn tile<const NV: usize>(
        w: &[f32],
        img: &[f32],
        offs: &[usize],
        bases: &[usize; RUNS],
        out: OutPtr,
        st: &Store<'_>,
    ) {
        // SAFETY: see the function's contract.
        unsafe {
            let mut c = [[_mm256_setzero_ps(); NV]; MR];
            let wp = w.as_ptr();
            let ip = img.as_ptr();
            for (kk, &o) in offs.iter().enumerate() {
                let mut x = [_mm256_setzero_ps(); NV];
                for (v, xv) in x.iter_mut().enumerate() {
                    *xv = _mm256_loadu_ps(ip.add(o + bases[v]));
                }
                for (r, cr) in c.iter_mut().enumerate() {
                    let a = _mm256_broadcast_ss(&*wp.add(kk * MR + r));
                    for v in 0..NV {
                        cr[v] = _mm256_fmadd_ps(a, x[v], cr[v]);
                    }
                }
            }
            store(&c, out, st);
        }
    }

    /// The epilogue in registers for full runs: (acc + bias) [+ out], then clamped; partial
    /// runs through `Epilogue::apply`. `R` rows of sums, `st.rows` of them stored.
    ///
    /// SAFETY: the caller checked AVX2 and FMA, and that `st` addresses runs inside `out`
    /// that no other thread writes.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn store<const R: usize, const NV: usize>(c: &[[__m256; NV]; R], out: OutPtr, st: &Store<'_>) {
        // SAFETY: see the function's contract.
        unsafe {
            // max/min take the bound first so that a NaN passes through, as `Clip::apply`.
            let (lo, hi) = (_mm256_set1_ps(st.epi.lo), _mm256_set1_ps(st.epi.hi));
            for (r, cr) in c.iter().enumerate().take(st.rows) {
                let b = _mm256_set1_ps(st.bias[r]);
                for v in 0..NV {
                    let p = out.at(st.dst[v] + r * st.plane);
                    let mut y = _mm256_add_ps(cr[v], b);
                    if st.n_px[v] == LANES {
                        if st.epi.accumulate {
                            y = _mm256_add_ps(y, _mm256_loadu_ps(p));
                        }
                        y = _mm256_min_ps(hi, _mm256_max_ps(lo, y));
                        _mm256_storeu_ps(p, y);
                    } else {
                        let mut tmp = [0f32; LANES];
                        _mm256_storeu_ps(tmp.as_mut_ptr(), y);
                        let dst = std::slice::from_raw_parts_mut(p, st.n_px[v]);
                        for (d, &x) in dst.iter_mut().zip(&tmp) {
                            *d = st.epi.apply(x, *d);
                        }
                    }
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{avx2, OutPtr, Store, LANES, MR_WIDE, RUNS};
    use std::arch::x86_64::*;

    /// `MR_WIDE` output channels x `V` vectors of 16 pixels (runs `2v` and `2v + 1`: one load
    /// when they are contiguous, two halves joined otherwise). With `V == 3`, 24
    /// accumulators; each step loads 3 vectors and 8 weights for 24 FMAs. With `V == 1`
    /// the steps alternate between two sets of sums, so that 16 chains cover the FMA
    /// latency. The sums go back to 256-bit halves for the AVX2 epilogue.
    ///
    /// SAFETY: the caller checked AVX-512 F, AVX2 and FMA, `w.len() >= offs.len() *
    /// MR_WIDE`, `offs[k] + bases[r] + LANES <= img.len()` for every k and r < 2V, and that
    /// `st` addresses runs inside `out` that no other thread writes.
    #[target_feature(enable = "avx2,fma,avx512f")]
    pub unsafe fn tile<const V: usize, const NV: usize>(
        w: &[f32],
        img: &[f32],
        offs: &[usize],
        bases: &[usize; RUNS],
        out: OutPtr,
        st: &Store<'_>,
    ) {
        // SAFETY: see the function's contract.
        unsafe {
            let (wp, ip) = (w.as_ptr(), img.as_ptr());
            let joined: [bool; V] = std::array::from_fn(|v| bases[2 * v + 1] == bases[2 * v] + LANES);
            let pixels = |o: usize, v: usize| {
                if joined[v] {
                    _mm512_loadu_ps(ip.add(o + bases[2 * v]))
                } else {
                    let lo = _mm512_castps256_ps512(_mm256_loadu_ps(ip.add(o + bases[2 * v])));
                    let hi = _mm256_castps_pd(_mm256_loadu_ps(ip.add(o + bases[2 * v + 1])));
                    _mm512_castpd_ps(_mm512_insertf64x4::<1>(_mm512_castps_pd(lo), hi))
                }
            };
            let mut sums = [[[_mm512_setzero_ps(); V]; MR_WIDE]; 2];
            let width = if V == 1 { 2 } else { 1 };
            let whole = offs.len() / width * width;
            for t in (0..whole).step_by(width) {
                for (h, set) in sums.iter_mut().enumerate().take(width) {
                    let kk = t + h;
                    let o = *offs.get_unchecked(kk);
                    let x: [__m512; V] = std::array::from_fn(|v| pixels(o, v));
                    for (r, c) in set.iter_mut().enumerate() {
                        let a = _mm512_set1_ps(*wp.add(kk * MR_WIDE + r));
                        for (c, x) in c.iter_mut().zip(&x) {
                            *c = _mm512_fmadd_ps(a, *x, *c);
                        }
                    }
                }
            }
            for (kk, &o) in offs.iter().enumerate().skip(whole) {
                let x: [__m512; V] = std::array::from_fn(|v| pixels(o, v));
                for (r, c) in sums[0].iter_mut().enumerate() {
                    let a = _mm512_set1_ps(*wp.add(kk * MR_WIDE + r));
                    for (c, x) in c.iter_mut().zip(&x) {
                        *c = _mm512_fmadd_ps(a, *x, *c);
                    }
                }
            }
            let mut c = [[_mm512_setzero_ps(); V]; MR_WIDE];
            for ((cr, e), d) in c.iter_mut().zip(sums[0]).zip(sums[1]) {
                for v in 0..V {
                    cr[v] = if width == 2 { _mm512_add_ps(e[v], d[v]) } else { e[v] };
                }
            }
            store::<V, NV>(&c, out, st);
        }
    }

    /// The epilogue of `tile`: where every pair of runs is full and contiguous in the
    /// output (all but a plane's last pixels), one 512-bit operation per vector; else
    /// through 256-bit halves and `avx2::store`. On a short product (the 3-channel stem:
    /// 27 steps) the halves' epilogue took about a third of the tile.
    ///
    /// SAFETY: the caller checked AVX-512 F, AVX2 and FMA, and that `st` addresses runs
    /// inside `out` that no other thread writes.
    #[target_feature(enable = "avx2,fma,avx512f")]
    unsafe fn store<const V: usize, const NV: usize>(c: &[[__m512; V]; MR_WIDE], out: OutPtr, st: &Store<'_>) {
        // SAFETY: see the function's contract.
        unsafe {
            let whole = (0..V).all(|v| {
                st.n_px[2 * v] == LANES && st.n_px[2 * v + 1] == LANES && st.dst[2 * v + 1] == st.dst[2 * v] + LANES
            });
            if whole {
                // max/min take the bound first so that a NaN passes through, as `Clip::apply`.
                let (lo, hi) = (_mm512_set1_ps(st.epi.lo), _mm512_set1_ps(st.epi.hi));
                for (r, cr) in c.iter().enumerate().take(st.rows) {
                    let b = _mm512_set1_ps(st.bias[r]);
                    for (v, &sum) in cr.iter().enumerate() {
                        let p = out.at(st.dst[2 * v] + r * st.plane);
                        let mut y = _mm512_add_ps(sum, b);
                        if st.epi.accumulate {
                            y = _mm512_add_ps(y, _mm512_loadu_ps(p));
                        }
                        _mm512_storeu_ps(p, _mm512_min_ps(hi, _mm512_max_ps(lo, y)));
                    }
                }
                return;
            }
            let mut halves = [[_mm256_setzero_ps(); NV]; MR_WIDE];
            for (h, cr) in halves.iter_mut().zip(c) {
                for (v, &sum) in cr.iter().enumerate() {
                    h[2 * v] = _mm512_castps512_ps256(sum);
                    h[2 * v + 1] = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(sum)));
                }
            }
            avx2::store(&halves, out, st);
        }
    }
}

/// Which tile kernel runs: the plain one, AVX2 + FMA (6 channels, tiles of up to two
/// runs), or AVX-512 (8 channels, tiles of up to six runs, three 512-bit vectors per row).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Simd {
    None,
    Avx2,
    Avx512,
}

impl Simd {
    /// The kinds a CPU with features `f` runs, the best last.
    pub(crate) fn available_on(f: CpuFeatures) -> Vec<Simd> {
        let mut v = vec![Simd::None];
        if f.avx2 && f.fma {
            v.push(Simd::Avx2);
            if f.avx512f {
                v.push(Simd::Avx512);
            }
        }
        v
    }

    /// The best kind for features `f`.
    pub(crate) fn best_on(f: CpuFeatures) -> Simd {
        Simd::available_on(f).last().copied().unwrap_or(Simd::None)
    }
}

/// The kinds this CPU runs, the best last (the tests compare them).
#[cfg(test)]
pub(crate) fn available_simd() -> Vec<Simd> {
    Simd::available_on(CpuFeatures::hardware())
}

/// Runs the best tile kernel for `nv` vectors.
#[inline]
#[allow(clippy::too_many_arguments)]
fn tile(
    nv: usize,
    simd: Simd,
    w: &[f32],
    img: &[f32],
    offs: &[usize],
    max_off: usize,
    bases: &[usize; RUNS],
    out: OutPtr,
    st: &Store<'_>,
) {
    // Bounds for the unchecked SIMD loads (the portable path checks by slicing).
    let top = max_off + bases[..nv].iter().max().copied().unwrap_or(0);
    let in_bounds = top + LANES <= img.len() && w.len() >= offs.len() * panel_rows(simd);
    #[cfg(target_arch = "x86_64")]
    if simd == Simd::Avx512 && in_bounds && nv > 0 {
        // SAFETY: the features were detected by the caller (`simd`, from
        // `available_simd`), the input bounds checked above, and the output runs are the
        // caller's (see `direct_conv_packed`, which also pairs the runs: `nv` is even).
        unsafe {
            match nv {
                6 => avx512::tile::<3, 6>(w, img, offs, bases, out, st),
                4 => avx512::tile::<2, 4>(w, img, offs, bases, out, st),
                _ => avx512::tile::<1, 2>(w, img, offs, bases, out, st),
            }
        }
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if simd == Simd::Avx2 && in_bounds {
        // SAFETY: as above, for AVX2 and FMA.
        unsafe {
            match nv {
                2 => avx2::tile::<2>(w, img, offs, bases, out, st),
                1 => avx2::tile::<1>(w, img, offs, bases, out, st),
                _ => tile_portable(nv, MR, w, img, offs, bases, out, st),
            }
        }
        return;
    }
    let _ = in_bounds;
    tile_portable(nv, panel_rows(simd), w, img, offs, bases, out, st)
}

/// The tile kernel of this process: the best the CPU-feature table (`cpu::features()`,
/// capped by `OXIQUANT_KERNEL`) allows.
pub(crate) fn best_simd() -> Simd {
    static BEST: std::sync::OnceLock<Simd> = std::sync::OnceLock::new();
    *BEST.get_or_init(|| Simd::best_on(cpu::features()))
}

/// Raw output pointer shared by tasks that write disjoint output rows (here and in
/// `conv_winograd`).
#[derive(Clone, Copy)]
pub(crate) struct OutPtr(pub(crate) *mut f32);
// SAFETY: tasks write disjoint elements (distinct (image, row) pairs, see
// `direct_conv_packed`; distinct tile rows, see `conv_winograd::winograd_conv_with`).
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

impl OutPtr {
    /// Through a method, so that closures capture the whole (Send) wrapper.
    pub(crate) fn at(self, i: usize) -> *mut f32 {
        self.0.wrapping_add(i)
    }
}

/// Convolution of `x` [n, c, h, w] by `wt` [m, c, kh, kw] for shapes where `supported`.
pub fn direct_conv(x: &[f32], wt: &[f32], bias: Option<&[f32]>, s: &ConvShape, out: &mut [f32]) {
    let packed = pack_weights(wt, s.m, s.c * s.win.kernel[0] * s.win.kernel[1]);
    direct_conv_packed(x, &packed, bias, s, out, Epilogue::NONE, best_simd())
}

/// What happens to `acc + bias` before it is stored: added to what `out` holds (a residual
/// branch copied there first), then clamped to `[lo, hi]` (a fused Relu or Clip). Fusing
/// saves a pass over the output per folded op.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Epilogue {
    pub accumulate: bool,
    pub lo: f32,
    pub hi: f32,
}

impl Epilogue {
    pub const NONE: Epilogue = Epilogue {
        accumulate: false,
        lo: f32::NEG_INFINITY,
        hi: f32::INFINITY,
    };

    /// `v` (the convolution plus bias) combined with `prev`, the value `out` held.
    /// The sum is rounded as the unfused graph rounds it: `(acc + bias) + residual`.
    #[inline(always)]
    pub fn apply(self, v: f32, prev: f32) -> f32 {
        let v = if self.accumulate { v + prev } else { v };
        super::elementwise::clip(v, self.lo, self.hi)
    }

    pub fn is_none(self) -> bool {
        self == Epilogue::NONE
    }
}

/// Runs per task (a multiple of `unit`, the runs of one kernel call), out of `runs` per
/// group of images. At most about 1 MFLOP, so that the input rows a task reads stay in L1
/// across its channel panels (whole-image tasks were slower: benches/RESULTS.md, "Measured design choices (fp32)"); within that, the split
/// that finishes first when `groups` groups' tasks are
/// shared by `threads`, counting a fixed cost per task (a fixed block size left one thread
/// a third more work than the other on 32-row planes at batch 1).
fn runs_per_task(runs: usize, unit: usize, run_flops: usize, groups: usize, threads: usize) -> usize {
    /// About 3 us of work at this machine's speed: rayon's cost of a task.
    const TASK_COST: usize = 200_000;
    let threads = threads.max(1);
    let cap = ((1 << 20) / run_flops.max(1)).max(1).next_multiple_of(unit);
    let mut best = (usize::MAX, unit);
    for r in (unit..=runs.next_multiple_of(unit).min(cap)).step_by(unit) {
        let tasks = groups * runs.div_ceil(r);
        let per_thread = tasks.div_ceil(threads);
        let cost = per_thread.saturating_mul(r.min(runs) * run_flops + TASK_COST);
        // Ties go to the larger block (fewer tasks).
        if cost <= best.0 {
            best = (cost, r);
        }
    }
    best.1
}

/// Greatest common divisor (the images per group in `direct_conv_packed`).
fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// `direct_conv` with weights packed by `pack_weights` and an epilogue.
pub(crate) fn direct_conv_packed(
    x: &[f32],
    packed: &[f32],
    bias: Option<&[f32]>,
    s: &ConvShape,
    out: &mut [f32],
    epi: Epilogue,
    simd: Simd,
) {
    let [kh, kw] = s.win.kernel;
    let k = s.c * kh * kw;
    let [oh, ow] = s.out;
    let sh = s.win.strides[0];
    let plane_in = s.c * s.h * s.w;
    let plane_out = oh * ow;
    let mr = panel_rows(simd);
    assert!(
        out.len() >= s.n * s.m * plane_out && x.len() >= s.n * plane_in && packed.len() >= s.m.div_ceil(mr) * k * mr
    );
    let panels = s.m.div_ceil(mr);
    let optr = OutPtr(out.as_mut_ptr());
    let out_len = out.len();
    // Runs of up to 8 output pixels along a row; a kernel call takes two of them (six with
    // AVX-512), from one row or more (small planes), so that its accumulators stay busy.
    let segs_per_row = ow.div_ceil(LANES);
    let runs_per_call = if simd == Simd::Avx512 { RUNS } else { 2 };
    let runs_per_image = oh * segs_per_row;
    // Images padded together, so that their runs fill whole kernel calls: an 8x8 plane has
    // 8 runs, and alone it would end in a call of 2 of the 6 (a third of the accumulators
    // busy for the same weight loads).
    let group = (runs_per_call / gcd(runs_per_image.max(1), runs_per_call))
        .min(s.n)
        .max(1);
    let groups = s.n.div_ceil(group);
    let run_flops = 2 * s.m * LANES.min(ow) * k;
    let threads = rayon::current_num_threads();
    let runs_per_task = runs_per_task(group * runs_per_image, runs_per_call, run_flops, groups, threads);
    let pad_parallel = groups < threads && s.c >= 8;
    (0..groups).into_par_iter().for_each(|gi| {
        let first = gi * group;
        let count = group.min(s.n - first);
        let Padded { buf, hp, wq, image_len } =
            pad_images(&x[first * plane_in..(first + count) * plane_in], count, s, pad_parallel);
        let offs = patch_offsets(s, hp, wq);
        let max_off = offs.iter().max().copied().unwrap_or(0);
        let runs = count * runs_per_image;
        // Run `i` -> (buffer offset, output offset of its first channel's plane, pixels).
        let run = |i: usize| {
            let (g, r) = (i / runs_per_image, i % runs_per_image);
            let (y, x0) = (r / segs_per_row, (r % segs_per_row) * LANES);
            let img = first + g;
            (
                g * image_len + y * sh * wq + x0,
                img * s.m * plane_out + y * ow + x0,
                LANES.min(ow - x0),
            )
        };
        let starts: Vec<usize> = (0..runs).step_by(runs_per_task).collect();
        starts.par_iter().for_each(|&r0| {
            let segs: Vec<(usize, usize, usize)> = (r0..(r0 + runs_per_task).min(runs)).map(run).collect();
            for p in 0..panels {
                let w = &packed[p * k * mr..(p + 1) * k * mr];
                let rows = mr.min(s.m - p * mr);
                let mut b = [0f32; MR_WIDE];
                if let Some(bias) = bias {
                    b[..rows].copy_from_slice(&bias[p * mr..p * mr + rows]);
                }
                for call in segs.chunks(runs_per_call) {
                    let mut st = Store {
                        dst: [0; RUNS],
                        n_px: [0; RUNS],
                        plane: plane_out,
                        rows,
                        bias: &b,
                        epi,
                    };
                    let mut bases = [0usize; RUNS];
                    for (v, sg) in call.iter().enumerate() {
                        bases[v] = sg.0;
                        st.dst[v] = sg.1 + p * mr * plane_out;
                        st.n_px[v] = sg.2;
                        debug_assert!(st.dst[v] + (rows - 1) * plane_out + sg.2 <= out_len);
                    }
                    let mut nv = call.len();
                    if simd == Simd::Avx512 && nv % 2 == 1 {
                        // The 512-bit tile takes runs in pairs: an odd last run is read twice
                        // and its copy stored nowhere.
                        bases[nv] = bases[nv - 1];
                        st.dst[nv] = st.dst[nv - 1];
                        nv += 1;
                    }
                    tile(nv, simd, w, &buf, &offs, max_off, &bases, optr, &st);
                }
            }
        });
    });
}

#[cfg(test)]
mod tests {
    use super::super::conv::{conv2d_ref, Window2d};
    use super::*;
    use crate::kernels::testing::{epilogue_ref, fill};
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(120))]
        #[test]
        fn matches_reference(n in 1usize..5, c in 1usize..6, m in 1usize..14, h in 1usize..12, w in 8usize..30,
                             kh in 1usize..4, kw in 1usize..4, sh in 1usize..3, sw in 1usize..5, dh in 1usize..3, dw in 1usize..3,
                             pads in proptest::array::uniform4(0usize..3), with_bias in any::<bool>(),
                             accumulate in any::<bool>(), clamp in 0usize..3,
                             simd in 0usize..3, seed in 0u64..1000) {
            let win = Window2d { kernel: [kh, kw], strides: [sh, sw], dilations: [dh, dw], pads };
            let Some(out) = win.output_size(h, w, false) else { return Ok(()); };
            let s = ConvShape { n, c, h, w, m, group: 1, win, out };
            if !handles(&s) { return Ok(()); }
            let x = fill(n * c * h * w, seed);
            let wt = fill(m * c * kh * kw, seed + 7);
            let b = fill(m, seed + 9);
            let bias = with_bias.then_some(&b[..]);
            // No clamp, a Relu, or a tight Clip that most values hit.
            let (lo, hi) = [(f32::NEG_INFINITY, f32::INFINITY), (0.0, f32::INFINITY), (-0.3, 0.2)][clamp];
            let epi = Epilogue { accumulate, lo, hi };
            let conv = conv2d_ref(&x, &wt, bias, &s);
            let residual = fill(conv.len(), seed + 11);
            let want = epilogue_ref(&conv, &residual, accumulate, lo, hi);
            let mut got = if accumulate { residual.clone() } else { vec![f32::NAN; want.len()] };
            let kind = available_simd()[simd % available_simd().len()];
            let packed = pack_weights_for(&wt, m, c * kh * kw, kind);
            direct_conv_packed(&x, &packed, bias, &s, &mut got, epi, kind);
            for (a, b) in got.iter().zip(&want) {
                prop_assert!((a - b).abs() <= 1e-4 * (1.0 + b.abs()), "{a} vs {b}");
            }
        }

        #[test]
        fn epilogue_keeps_nan_like_clip(v in -2f32..2.0, nan in any::<bool>()) {
            // Through the SIMD store too: a 1-channel 1x1 convolution of one 8-pixel row.
            let v = if nan { f32::NAN } else { v };
            let win = Window2d { kernel: [1, 1], strides: [1, 1], dilations: [1, 1], pads: [0; 4] };
            let s = ConvShape { n: 1, c: 1, h: 1, w: 8, m: 1, group: 1, win, out: [1, 8] };
            let epi = Epilogue { accumulate: false, lo: 0.0, hi: 1.0 };
            for simd in available_simd() {
                let mut got = vec![0f32; 8];
                direct_conv_packed(&[v; 8], &pack_weights_for(&[1.0], 1, 1, simd), None, &s, &mut got, epi, simd);
                let want = super::super::elementwise::clip(v, 0.0, 1.0);
                prop_assert!(got.iter().all(|g| g.to_bits() == want.to_bits()), "{got:?} vs {want}");
            }
        }
    }
}
