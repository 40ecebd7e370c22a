//! Winograd F(2x2, 3x3) convolution for 3x3, stride-1, single-group layers: each 2x2
//! block of outputs costs 16 multiplications per (input, output) channel pair instead of
//! 36, 2.25x fewer. `conv2d` runs it where it measured faster than the direct kernel
//! (`suits`: 64-128 channels on 28x28 outputs or more, e.g. ResNet-50's first two stages).
//!
//! Per 4x4 input tile `d` and 3x3 kernel `g`: `Y = A^T [(G g G^T) . (B^T d B)] A`. The 16
//! points of the transformed tile are independent: for each point, the products over input
//! channels are one product `M[k][tile] = sum_c U[c][k] V[c][tile]` (`products`), a
//! register-blocked kernel with the tiles as vector lanes.
//!
//! Why F(2x2) and not F(4x4) (4x fewer multiplications): its transforms have only 0, +-1
//! and 1/2 entries, so it rounds about as the direct sum does, and on integer-valued data
//! (fake-quantized models) the input and output transforms are exact; F(4x4)'s 1/6 and 1/24
//! are not. Layers whose weights are all integers keep the direct kernel all the same
//! (`suits`), so that a fake-quantized graph's sums stay exact under the same bound as
//! before.

use super::conv::ConvShape;
use super::conv_direct::{best_simd, Epilogue, OutPtr, Simd};
use rayon::prelude::*;

/// Points of a transformed tile (4x4).
const POINTS: usize = 16;
/// Tile counts are padded to a multiple of this (one AVX-512 vector), so that every
/// vector the products load or store lies inside its row.
const LANES: usize = 16;
/// Output channels are padded to a multiple of this (the kernels' row blocks divide it).
const KPAD: usize = 8;

/// Shapes this kernel computes: 3x3, stride 1, no dilation, one group (any pads).
pub fn handles(s: &ConvShape) -> bool {
    s.group == 1 && s.win.kernel == [3, 3] && s.win.strides == [1, 1] && s.win.dilations == [1, 1]
}

/// Whether the Winograd kernel runs this layer (else the direct one or im2col): the
/// channel rule of `suits_layer` and the size rule of `worth`.
pub fn suits(s: &ConvShape, wt: &[f32]) -> bool {
    suits_layer(s, wt) && worth(s)
}

/// The part of `suits` that does not depend on the input size (inference plans transform
/// the weights once with it): a shape it handles; 64 to 128 channels or so, where it beats
/// the direct kernel — with fewer, the transforms and the traffic through the transformed
/// tiles cost more than the saved products; with `c * m` above 128 x 128 the transformed
/// weights outgrow the cache (benches/RESULTS.md, "Measured design choices (fp32)"); and weights that are not all integers (see the module
/// doc).
pub fn suits_layer(s: &ConvShape, wt: &[f32]) -> bool {
    handles(s) && s.c >= 64 && s.m >= 64 && s.c * s.m <= 128 * 128 && !wt.iter().all(|w| w.fract() == 0.0)
}

/// The size rule: outputs of 28 x 28 or more (a ResNet-50 stage; on 8 x 8 outputs, with
/// only 16 tiles per image, it loses to the direct kernel: benches/RESULTS.md, "Measured design choices (fp32)").
pub fn worth(s: &ConvShape) -> bool {
    s.out[0] * s.out[1] >= 28 * 28
}

/// The transformed weights `U = G g G^T`: per point, a `[c][kp]` matrix (`kp` = `m`
/// rounded up to `KPAD`, zeros past `m`), point after point.
pub fn transform_weights(wt: &[f32], m: usize, c: usize) -> Vec<f32> {
    let kp = m.next_multiple_of(KPAD);
    let mut u = vec![0f32; POINTS * c * kp];
    if wt.len() < m * c * 9 {
        return u;
    }
    // In the weights' order first (`t[k][ci][point]`, reads and writes in sequence), then
    // into `u[point][ci][k]` by blocks of KPAD output channels, whose rows of `t` stay in
    // cache. Either order alone strides through one side by kilobytes per value: the
    // unplanned `conv2d`, which transforms per call, spent a third of a 128-channel layer
    // on it at batch 1.
    let mut t = vec![0f32; m * c * POINTS];
    for (g, tile) in wt.chunks_exact(9).zip(t.chunks_exact_mut(POINTS)) {
        // G g, then (G g) G^T; G = [[1, 0, 0], [1/2, 1/2, 1/2], [1/2, -1/2, 1/2], [0, 0, 1]].
        let mut gg = [[0f32; 3]; 4];
        for j in 0..3 {
            let (g0, g1, g2) = (g[j], g[3 + j], g[6 + j]);
            gg[0][j] = g0;
            gg[1][j] = 0.5 * (g0 + g1 + g2);
            gg[2][j] = 0.5 * (g0 - g1 + g2);
            gg[3][j] = g2;
        }
        for (i, r) in gg.iter().enumerate() {
            let row = [r[0], 0.5 * (r[0] + r[1] + r[2]), 0.5 * (r[0] - r[1] + r[2]), r[2]];
            tile[i * 4..i * 4 + 4].copy_from_slice(&row);
        }
    }
    for k0 in (0..m).step_by(KPAD) {
        for p in 0..POINTS {
            for ci in 0..c {
                for k in k0..(k0 + KPAD).min(m) {
                    u[(p * c + ci) * kp + k] = t[(k * c + ci) * POINTS + p];
                }
            }
        }
    }
    u
}

/// `prod[k * tp + i] = sum_c u[c * kp + k] * v[c * tp + i]` for `k < m` and every `i < tp`
/// (`tp` a multiple of `LANES`): the products of one point. Lanes past the task's tiles
/// compute from stale values and are never read.
#[allow(clippy::too_many_arguments)]
fn products(v: &[f32], u: &[f32], c: usize, m: usize, kp: usize, tp: usize, prod: &mut [f32], simd: Simd) {
    assert!(
        tp.is_multiple_of(LANES)
            && kp.is_multiple_of(KPAD)
            && kp >= m
            && v.len() >= c * tp
            && u.len() >= c * kp
            && prod.len() >= m.next_multiple_of(KPAD) * tp
    );
    #[cfg(target_arch = "x86_64")]
    match simd {
        // SAFETY: `simd` comes from `available_simd`, which detected the features; the
        // bounds were asserted above.
        Simd::Avx512 => return unsafe { x86::products_avx512(v, u, c, m, kp, tp, prod) },
        // SAFETY: as above.
        Simd::Avx2 => return unsafe { x86::products_avx2(v, u, c, m, kp, tp, prod) },
        Simd::None => {}
    }
    let _ = simd;
    for k in 0..m {
        let row = &mut prod[k * tp..(k + 1) * tp];
        row.fill(0.0);
        for ci in 0..c {
            let w = u[ci * kp + k];
            for (p, &x) in row.iter_mut().zip(&v[ci * tp..(ci + 1) * tp]) {
                *p += w * x;
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// One ISA's version of `super::products`: blocks of `$rows` output channels x up to 3
    /// vectors of `$lanes` tiles, the accumulators in registers, plain stores (the products
    /// need no epilogue). `$vec`, `$zero`, `$load`, `$splat`, `$fma`, `$store` are the
    /// vector type and intrinsics of the ISA.
    macro_rules! products_kernel {
        ($(#[$doc:meta])* $name:ident, $features:literal, $rows:literal, $lanes:literal,
         $vec:ty, $zero:ident, $load:ident, $splat:expr, $fma:ident, $store:ident) => {
            $(#[$doc])*
            #[target_feature(enable = $features)]
            pub unsafe fn $name(v: &[f32], u: &[f32], c: usize, m: usize, kp: usize, tp: usize, prod: &mut [f32]) {
                #[inline(always)]
                #[allow(clippy::too_many_arguments)]
                unsafe fn block<const NV: usize>(
                    vp: *const f32,
                    up: *const f32,
                    c: usize,
                    kp: usize,
                    tp: usize,
                    k0: usize,
                    i0: usize,
                    pp: *mut f32,
                ) {
                    // SAFETY: see the caller.
                    unsafe {
                        let mut acc = [[$zero(); NV]; $rows];
                        for ci in 0..c {
                            let x: [$vec; NV] = std::array::from_fn(|q| $load(vp.add(ci * tp + i0 + $lanes * q)));
                            for (r, a) in acc.iter_mut().enumerate() {
                                let w = $splat(up.add(ci * kp + k0 + r));
                                for (a, x) in a.iter_mut().zip(&x) {
                                    *a = $fma(w, *x, *a);
                                }
                            }
                        }
                        for (r, a) in acc.iter().enumerate() {
                            for (q, a) in a.iter().enumerate() {
                                $store(pp.add((k0 + r) * tp + i0 + $lanes * q), *a);
                            }
                        }
                    }
                }
                // SAFETY: every load is inside `v` (c rows of tp, vectors at multiples of
                // the lane count below tp, a multiple of it) or `u` (c rows of kp, k0 +
                // rows <= kp, as kp is a multiple of KPAD); every store inside `prod`
                // (rows up to m rounded to KPAD, each of tp).
                unsafe {
                    let (vp, up, pp) = (v.as_ptr(), u.as_ptr(), prod.as_mut_ptr());
                    for k0 in (0..m).step_by($rows) {
                        let mut i0 = 0;
                        while i0 < tp {
                            let nv = ((tp - i0) / $lanes).min(3);
                            match nv {
                                3 => block::<3>(vp, up, c, kp, tp, k0, i0, pp),
                                2 => block::<2>(vp, up, c, kp, tp, k0, i0, pp),
                                _ => block::<1>(vp, up, c, kp, tp, k0, i0, pp),
                            }
                            i0 += $lanes * nv;
                        }
                    }
                }
            }
        };
    }

    products_kernel!(
        /// 8 output channels x 3 vectors of 16 tiles: 24 accumulators of the 32 registers;
        /// each step loads 3 vectors and broadcasts 8 weights for 24 FMAs.
        ///
        /// SAFETY: AVX-512 F, and the bounds `super::products` asserts.
        products_avx512, "avx512f,avx2,fma", 8, 16,
        __m512, _mm512_setzero_ps, _mm512_loadu_ps, |p: *const f32| _mm512_set1_ps(*p), _mm512_fmadd_ps, _mm512_storeu_ps
    );

    products_kernel!(
        /// 4 output channels x 3 vectors of 8 tiles: 12 accumulators of the 16 registers.
        ///
        /// SAFETY: AVX2 and FMA, and the bounds `super::products` asserts.
        products_avx2, "avx2,fma", 4, 8,
        __m256, _mm256_setzero_ps, _mm256_loadu_ps, |p: *const f32| _mm256_broadcast_ss(&*p), _mm256_fmadd_ps, _mm256_storeu_ps
    );
}

/// Scratch of one task, reused across the tasks a thread runs.
#[derive(Default)]
struct Scratch {
    /// Transformed input: `[point][c][tp]`.
    v: Vec<f32>,
    /// Products: `[point][kp][tp]` (`kp`: output channels rounded up to `KPAD`).
    prod: Vec<f32>,
    /// Padded input rows of one channel, split by row and column parity.
    split: Vec<f32>,
    /// The 4 outputs of every tile, `[4][tp]`.
    ys: Vec<f32>,
    /// Two output rows per tile row, interleaved from `ys`: `[2][2 tp]`.
    rows: Vec<f32>,
}

/// What one task covers: tile rows `ty0..ty1` of images `img0 .. img0 + imgs` (several
/// images only with all their rows: small planes).
#[derive(Clone, Copy)]
struct Task {
    img0: usize,
    imgs: usize,
    ty0: usize,
    ty1: usize,
}

thread_local! {
    /// Each thread's scratch, kept across calls (fresh buffers cost page faults each time).
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::new(Scratch::default());
}

/// Convolution of `x` [n, c, h, w] with weights transformed by `transform_weights`, for
/// shapes where `handles`; `out` [n, m, oh, ow] gets `epi` applied as in the direct kernel.
pub fn winograd_conv(x: &[f32], u: &[f32], bias: Option<&[f32]>, s: &ConvShape, out: &mut [f32], epi: Epilogue) {
    winograd_conv_with(x, u, bias, s, out, epi, best_simd())
}

/// `winograd_conv` with the given kernels (tests run every kind the CPU has).
pub(crate) fn winograd_conv_with(
    x: &[f32],
    u: &[f32],
    bias: Option<&[f32]>,
    s: &ConvShape,
    out: &mut [f32],
    epi: Epilogue,
    simd: Simd,
) {
    let [oh, ow] = s.out;
    let (th, tw) = (oh.div_ceil(2), ow.div_ceil(2));
    assert!(
        handles(s)
            && x.len() >= s.n * s.c * s.h * s.w
            && out.len() >= s.n * s.m * oh * ow
            && u.len() >= POINTS * s.m.next_multiple_of(KPAD) * s.c
    );
    if s.n == 0 || oh == 0 || ow == 0 {
        return;
    }
    // Tiles per task (counting one spare column per tile row, see `task_body`): about 256
    // for few channels, fewer for many, so that the transformed input and the products
    // (16 points each) stay within L2; then enough tasks for the threads.
    let threads = rayon::current_num_threads().max(1);
    let half = tw + 1;
    let target = (32_768 / s.c.max(s.m)).clamp(32, 256);
    let wanted_tasks = 4 * threads;
    let per_image = th * half;
    let tasks: Vec<Task> = if per_image < target && s.n > 1 {
        let imgs = (target / per_image).clamp(1, s.n.div_ceil(wanted_tasks));
        (0..s.n)
            .step_by(imgs)
            .map(|img0| Task {
                img0,
                imgs: imgs.min(s.n - img0),
                ty0: 0,
                ty1: th,
            })
            .collect()
    } else {
        let mut rows = target.div_ceil(half).clamp(1, th);
        if s.n * th.div_ceil(rows) < wanted_tasks {
            rows = rows.min((s.n * th).div_ceil(wanted_tasks).max(1));
        }
        (0..s.n)
            .flat_map(|img0| {
                (0..th).step_by(rows).map(move |ty0| Task {
                    img0,
                    imgs: 1,
                    ty0,
                    ty1: (ty0 + rows).min(th),
                })
            })
            .collect()
    };
    let optr = OutPtr(out.as_mut_ptr());
    let call = Call {
        x,
        u,
        bias,
        s,
        out: optr,
        epi,
        simd,
    };
    tasks.par_iter().for_each(|&task| {
        // Each task writes output rows 2 ty0 .. 2 ty1 of its images only (see `OutPtr`).
        SCRATCH.with_borrow_mut(|sc| run(call, task, sc))
    });
}

/// What every task of one `winograd_conv_with` call shares.
#[derive(Clone, Copy)]
struct Call<'a> {
    x: &'a [f32],
    u: &'a [f32],
    bias: Option<&'a [f32]>,
    s: &'a ConvShape,
    out: OutPtr,
    epi: Epilogue,
    simd: Simd,
}

/// Dispatches `task_body` to a copy compiled for the CPU's vector width, so that the
/// transforms' loops are vectorized with it.
fn run(call: Call<'_>, task: Task, sc: &mut Scratch) {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx2,fma,avx512f")]
        unsafe fn wide(call: Call<'_>, task: Task, sc: &mut Scratch) {
            task_body(call, task, sc)
        }
        #[target_feature(enable = "avx2,fma")]
        unsafe fn avx2(call: Call<'_>, task: Task, sc: &mut Scratch) {
            task_body(call, task, sc)
        }
        match call.simd {
            // SAFETY: `simd` comes from `available_simd`, which detected these features.
            Simd::Avx512 => return unsafe { wide(call, task, sc) },
            // SAFETY: as above.
            Simd::Avx2 => return unsafe { avx2(call, task, sc) },
            Simd::None => {}
        }
    }
    task_body(call, task, sc)
}

/// Input transform, the 16 pointwise products, output transform, for one task.
#[inline(always)]
fn task_body(call: Call<'_>, task: Task, sc: &mut Scratch) {
    let Call {
        x,
        u,
        bias,
        s,
        out,
        epi,
        simd,
    } = call;
    let [oh, ow] = s.out;
    let tw = ow.div_ceil(2);
    let (pt, pl) = (s.win.pads[0], s.win.pads[1]);
    let nrows = task.ty1 - task.ty0;
    // Tiles are numbered `i = b * block + r * half + j` (image b of the task, tile row r,
    // column j < tw): one column more than there are tiles, so that the loops below run
    // over all of an image's tiles at once (long loops vectorize; rows of 4 to 16 tiles
    // alone ran scalar). The spare column's values are never stored.
    let half = tw + 1;
    let block = nrows * half;
    let t = task.imgs * block - 1;
    // The input transform of an image writes a whole number of vectors, `n_img`, spilling
    // into the next image's tiles (written after it) or into the row's slack, so that no
    // loop ends in scalar iterations.
    let n_img = (block - 1).next_multiple_of(LANES);
    let tp = ((task.imgs - 1) * block + n_img).max(t).next_multiple_of(LANES);
    let (c_n, m_n) = (s.c, s.m);
    let kp = m_n.next_multiple_of(KPAD);
    // Padded input rows 2 r' + rho (r' <= nrows) of one channel, split by row parity rho
    // and column parity kappa: `split[(2 rho + kappa) * part + r' * half + j]` is padded
    // column 2j + kappa.
    let part = (nrows + 1) * half;
    sc.v.resize(POINTS * c_n * tp, 0.0);
    sc.prod.resize(POINTS * kp * tp, 0.0);
    sc.split.resize(4 * part + 2 * LANES, 0.0);
    sc.ys.resize(4 * tp, 0.0);
    sc.rows.resize(4 * tp, 0.0);

    // Input transform, channel by channel: V = B^T d B with
    // B^T = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]].
    for (b, c) in (0..task.imgs).flat_map(|b| (0..c_n).map(move |c| (b, c))) {
        let plane = &x[((task.img0 + b) * c_n + c) * s.h * s.w..((task.img0 + b) * c_n + c + 1) * s.h * s.w];
        // Read from the input itself: a padded copy read back at once stalled on store
        // forwarding.
        for r_in in 0..2 * nrows + 2 {
            let (rho, r1) = (r_in % 2, r_in / 2);
            let (even, odd) = sc.split[2 * rho * part..(2 * rho + 2) * part].split_at_mut(part);
            let (even, odd) = (
                &mut even[r1 * half..(r1 + 1) * half],
                &mut odd[r1 * half..(r1 + 1) * half],
            );
            match (2 * task.ty0 + r_in).checked_sub(pt).filter(|&y| y < s.h) {
                Some(iy) => split_row(&plane[iy * s.w..(iy + 1) * s.w], pl, even, odd),
                None => {
                    even.fill(0.0);
                    odd.fill(0.0);
                }
            }
        }
        // Tile row r reads padded rows 2r .. 2r + 3. B^T down the columns gives 4
        // combinations of two of them (d0 - d2, d1 + d2, d2 - d1, d1 - d3), each then B^T
        // along the row: points 4a .. 4a + 3 for combination a.
        let rows = |d: usize, kappa: usize| {
            let start = (2 * (d % 2) + kappa) * part + (d / 2) * half;
            &sc.split[start..start + n_img + 1]
        };
        for (a, (p, q, sub)) in [(0, 2, true), (1, 2, false), (2, 1, true), (1, 3, true)]
            .into_iter()
            .enumerate()
        {
            let v = four_rows(&mut sc.v, (4 * a * c_n + c) * tp + b * block, c_n * tp, n_img);
            let (ep, eq, op, oq) = (rows(p, 0), rows(q, 0), rows(p, 1), rows(q, 1));
            if sub {
                input_points::<true>(ep, eq, op, oq, v);
            } else {
                input_points::<false>(ep, eq, op, oq, v);
            }
        }
    }

    // The 16 products.
    for p in 0..POINTS {
        products(
            &sc.v[p * c_n * tp..(p + 1) * c_n * tp],
            &u[p * c_n * kp..(p + 1) * c_n * kp],
            c_n,
            m_n,
            kp,
            tp,
            &mut sc.prod[p * kp * tp..(p + 1) * kp * tp],
            simd,
        );
    }

    // Output transform: Y = A^T M A with A^T = [[1, 1, 1, 0], [0, 1, -1, -1]], plus bias and
    // the epilogue, two output rows per tile row.
    for k in 0..m_n {
        let b = bias.map_or(0.0, |b| b[k]);
        let mm: [&[f32]; POINTS] = std::array::from_fn(|p| &sc.prod[(p * kp + k) * tp..(p * kp + k + 1) * tp]);
        let (y0, y1) = sc.ys.split_at_mut(2 * tp);
        let (y00, y01) = y0.split_at_mut(tp);
        let (y10, y11) = y1.split_at_mut(tp);
        output_points(mm, b, [y00, y01, y10, y11]);
        // Output rows 2r and 2r + 1 of every tile row, columns interleaved from the tiles.
        let (top, bottom) = sc.rows.split_at_mut(2 * tp);
        interleave(y00, y01, top);
        interleave(y10, y11, bottom);
        for (b, r) in (0..task.imgs).flat_map(|b| (0..nrows).map(move |r| (b, r))) {
            let first = 2 * (b * block + r * half);
            for (dy, row) in [&*top, &*bottom].into_iter().enumerate() {
                let oy = 2 * (task.ty0 + r) + dy;
                if oy >= oh {
                    continue;
                }
                let start = (((task.img0 + b) * m_n + k) * oh + oy) * ow;
                // SAFETY: row `oy` of channel `k` of this image lies inside `out` (asserted
                // in `winograd_conv`) and only this task writes it.
                let dst = unsafe { std::slice::from_raw_parts_mut(out.at(start), ow) };
                store_row(&row[first..first + ow], dst, epi);
            }
        }
    }
}

// The loops below take their rows as separate arguments: distinct slices that LLVM knows
// do not overlap, so that it vectorizes them (written inline over the scratch, they ran
// scalar).

/// The even and odd columns of an input row padded with `pl` zeros on the left and zeros
/// past its end: `e[j] = padded[2j]`, `o[j] = padded[2j + 1]`.
#[inline(always)]
fn split_row(src: &[f32], pl: usize, e: &mut [f32], o: &mut [f32]) {
    let (w, half) = (src.len(), e.len().min(o.len()));
    let get = |p: usize| if p >= pl && p - pl < w { src[p - pl] } else { 0.0 };
    // Pairs whose both columns are inside the row: 2j >= pl and 2j + 1 < w + pl.
    let lo = pl.div_ceil(2).min(half);
    let hi = ((w + pl) / 2).clamp(lo, half);
    let inner = &src[2 * lo - pl..2 * hi - pl];
    for ((e, o), pair) in e[lo..hi].iter_mut().zip(&mut o[lo..hi]).zip(inner.chunks_exact(2)) {
        *e = pair[0];
        *o = pair[1];
    }
    for j in (0..lo).chain(hi..half) {
        e[j] = get(2 * j);
        o[j] = get(2 * j + 1);
    }
}

/// One combination of two rows, `t = p - q` (`SUB`) or `p + q`, in even (`ep`, `eq`) and
/// odd (`op`, `oq`) columns, then `B^T` along it: tile `j` reads columns `2j .. 2j + 3`,
/// i.e. `te[j], to[j], te[j + 1], to[j + 1]`.
#[inline(always)]
fn input_points<const SUB: bool>(ep: &[f32], eq: &[f32], op: &[f32], oq: &[f32], v: [&mut [f32]; 4]) {
    let [v0, v1, v2, v3] = v;
    let n = v0.len();
    let (v1, v2, v3) = (&mut v1[..n], &mut v2[..n], &mut v3[..n]);
    let (ep, eq, op, oq) = (&ep[..n + 1], &eq[..n + 1], &op[..n + 1], &oq[..n + 1]);
    let comb = |a: f32, b: f32| if SUB { a - b } else { a + b };
    for j in 0..n {
        let (e0, e1) = (comb(ep[j], eq[j]), comb(ep[j + 1], eq[j + 1]));
        let (o0, o1) = (comb(op[j], oq[j]), comb(op[j + 1], oq[j + 1]));
        v0[j] = e0 - e1;
        v1[j] = o0 + e1;
        v2[j] = e1 - o0;
        v3[j] = o0 - o1;
    }
}

/// `A^T M A + b` for each tile of a row: `m[p]` holds point `p` of every tile; `y` gets the
/// outputs (0, 0), (0, 1), (1, 0), (1, 1).
#[inline(always)]
fn output_points(m: [&[f32]; POINTS], b: f32, y: [&mut [f32]; 4]) {
    let [y00, y01, y10, y11] = y;
    let n = y00.len();
    let m: [&[f32]; POINTS] = std::array::from_fn(|p| &m[p][..n]);
    let (y01, y10, y11) = (&mut y01[..n], &mut y10[..n], &mut y11[..n]);
    for j in 0..n {
        // Rows of A^T M (columns x = 0..3), then A on the right.
        let s0: [f32; 4] = std::array::from_fn(|x| m[x][j] + m[4 + x][j] + m[8 + x][j]);
        let s1: [f32; 4] = std::array::from_fn(|x| m[4 + x][j] - m[8 + x][j] - m[12 + x][j]);
        y00[j] = s0[0] + s0[1] + s0[2] + b;
        y01[j] = s0[1] - s0[2] - s0[3] + b;
        y10[j] = s1[0] + s1[1] + s1[2] + b;
        y11[j] = s1[1] - s1[2] - s1[3] + b;
    }
}

/// `row[2j] = a[j]`, `row[2j + 1] = b[j]`.
#[inline(always)]
fn interleave(a: &[f32], b: &[f32], row: &mut [f32]) {
    for ((pair, &x), &y) in row.chunks_exact_mut(2).zip(a).zip(b) {
        pair[0] = x;
        pair[1] = y;
    }
}

/// `dst = epi(src, dst)`, in blocks of 8 that compile to vector operations (rows are
/// often 8 to 32 values: too short for the loop vectorizer).
#[inline(always)]
fn store_row(src: &[f32], dst: &mut [f32], epi: Epilogue) {
    let (lo, hi) = (epi.lo, epi.hi);
    let clip = |v: f32| super::elementwise::clip(v, lo, hi);
    let mut d8 = dst.chunks_exact_mut(8);
    let mut s8 = src.chunks_exact(8);
    for (d, s) in (&mut d8).zip(&mut s8) {
        let (d, s): (&mut [f32; 8], &[f32; 8]) = (
            d.try_into().unwrap_or_else(|_| unreachable!()),
            s.try_into().unwrap_or_else(|_| unreachable!()),
        );
        if epi.accumulate {
            *d = std::array::from_fn(|l| clip(s[l] + d[l]));
        } else {
            *d = std::array::from_fn(|l| clip(s[l]));
        }
    }
    for (d, &s) in d8.into_remainder().iter_mut().zip(s8.remainder()) {
        *d = epi.apply(s, *d);
    }
}

/// The four `len`-long runs of `buf` at `first + i * stride`, `i < 4` (`stride >= len`).
fn four_rows(buf: &mut [f32], first: usize, stride: usize, len: usize) -> [&mut [f32]; 4] {
    let (_, rest) = buf.split_at_mut(first);
    let (r0, rest) = rest.split_at_mut(stride);
    let (r1, rest) = rest.split_at_mut(stride);
    let (r2, r3) = rest.split_at_mut(stride);
    [&mut r0[..len], &mut r1[..len], &mut r2[..len], &mut r3[..len]]
}

#[cfg(test)]
mod tests {
    use super::super::conv::{conv2d_ref, Window2d};
    use super::*;
    use crate::kernels::testing::{epilogue_ref, fill, same_3x3};
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(150))]
        #[test]
        fn matches_reference(n in 1usize..3, c in 1usize..20, m in 1usize..20, h in 1usize..14, w in 1usize..14,
                             pads in proptest::array::uniform4(0usize..3), with_bias in any::<bool>(),
                             accumulate in any::<bool>(), clamp in 0usize..3, simd in 0usize..3,
                             seed in 0u64..1000) {
            let win = Window2d { kernel: [3, 3], strides: [1, 1], dilations: [1, 1], pads };
            let Some(out) = win.output_size(h, w, false) else { return Ok(()); };
            let s = ConvShape { n, c, h, w, m, group: 1, win, out };
            let x = fill(n * c * h * w, seed);
            let wt = fill(m * c * 9, seed + 7);
            let b = fill(m, seed + 9);
            let bias = with_bias.then_some(&b[..]);
            let (lo, hi) = [(f32::NEG_INFINITY, f32::INFINITY), (0.0, f32::INFINITY), (-0.3, 0.2)][clamp];
            let epi = Epilogue { accumulate, lo, hi };
            let conv = conv2d_ref(&x, &wt, bias, &s);
            let residual = fill(conv.len(), seed + 11);
            let want = epilogue_ref(&conv, &residual, accumulate, lo, hi);
            let mut got = if accumulate { residual.clone() } else { vec![f32::NAN; want.len()] };
            let kinds = super::super::conv_direct::available_simd();
            winograd_conv_with(&x, &transform_weights(&wt, m, c), bias, &s, &mut got, epi, kinds[simd % kinds.len()]);
            for (a, b) in got.iter().zip(&want) {
                prop_assert!((a - b).abs() <= 1e-4 * (1.0 + b.abs()), "{a} vs {b}");
            }
        }
    }

    #[test]
    fn integer_weights_keep_the_direct_kernel() {
        let s = same_3x3(1, 64, 28, 28, 64);
        let mut wt = vec![2.0f32; 64 * 64 * 9];
        assert!(!suits(&s, &wt));
        wt[5] = 0.25;
        assert!(suits(&s, &wt));
    }
}
