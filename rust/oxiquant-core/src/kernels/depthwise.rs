//! Depthwise convolution (one input channel per group, `group == c`, any channel
//! multiplier), float and integer, vectorized along whole planes.
//!
//! Each input plane is copied once into a zero-padded buffer split into `sh x sw` phases
//! (padded row `r` goes to row phase `r % sh`, index `r / sh`; columns likewise), every
//! phase plane `hq` rows of `wq` values. Output pixel `(y, x)` at kernel tap `(i, j)` then
//! reads phase `((i * dh) % sh, (j * dw) % sw)` at `(y + i * dh / sh, x + j * dw / sw)`: in
//! the flat index `t = y * wq + x` that is `buf[offset(i, j) + t]`, one contiguous run per
//! tap for all the rows at once. The kernel accumulates `acc[t] += w(i, j) * buf[offset + t]`
//! over blocks of whole rows (vectors stay full whatever the plane's width: on 7x7 planes a
//! run is 7 rows long, not 7 values), then hands each output row (the first `ow` values of
//! its `wq`) to the caller's store: the float epilogue (bias, residual, clamp), or the
//! integer requantization. The columns past `ow` are computed and dropped.
//!
//! Paths: the plain loop (`Simd::None`, the reference level), the same loop compiled for
//! AVX2 (integer) or AVX2 + FMA (float, multiply-adds fused). `conv::conv2d_ref` and
//! `qconv_direct::conv_ref` are the references they are tested against.

use super::conv::ConvShape;
use super::conv_direct::Epilogue;

/// Whether `s` is depthwise: more than one group, one input channel per group.
pub fn handles(s: &ConvShape) -> bool {
    s.group > 1 && s.group == s.c && s.m.is_multiple_of(s.group)
}

/// Values of the padded buffer and the accumulators they sum into.
pub trait Lane: Copy + Default + Send + Sync {
    type Acc: Copy + Default + Send + Sync;
    /// Whether the AVX2 path fuses the multiply-add (floats: needs FMA as well).
    const FUSED: bool;
    /// `acc + w * x`, rounded after each operation.
    fn madd(acc: Self::Acc, w: Self::Acc, x: Self) -> Self::Acc;
    /// `acc + w * x`, fused where the type has a fused form (f32: one rounding).
    fn madd_fused(acc: Self::Acc, w: Self::Acc, x: Self) -> Self::Acc;
}

impl Lane for f32 {
    type Acc = f32;
    const FUSED: bool = true;
    #[inline(always)]
    fn madd(acc: f32, w: f32, x: f32) -> f32 {
        acc + w * x
    }
    #[inline(always)]
    fn madd_fused(acc: f32, w: f32, x: f32) -> f32 {
        x.mul_add(w, acc)
    }
}

/// Integer inputs minus their zero point (in [-255, 255]), summed exactly in i32 (the
/// caller's accumulator bound keeps every sum inside i32).
impl Lane for i16 {
    type Acc = i32;
    const FUSED: bool = false;
    #[inline(always)]
    fn madd(acc: i32, w: i32, x: i16) -> i32 {
        acc.wrapping_add(w.wrapping_mul(x as i32))
    }
    #[inline(always)]
    fn madd_fused(acc: i32, w: i32, x: i16) -> i32 {
        Self::madd(acc, w, x)
    }
}

/// Which loop runs: plain, or compiled for AVX2 (+ FMA for floats).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Path {
    Plain,
    #[cfg(target_arch = "x86_64")]
    Avx2,
}

impl Path {
    /// The float path of this process (AVX2 + FMA when `cpu::features()` allows both).
    pub fn for_f32() -> Path {
        #[cfg(target_arch = "x86_64")]
        if super::conv_direct::best_simd() != super::conv_direct::Simd::None {
            return Path::Avx2;
        }
        Path::Plain
    }

    /// The integer path for kernel level `k` (a SIMD level implies AVX2).
    pub fn for_int(k: super::qgemm::Kernel) -> Path {
        #[cfg(target_arch = "x86_64")]
        if k.is_simd() {
            return Path::Avx2;
        }
        let _ = k;
        Path::Plain
    }

    /// Every path this CPU runs (the tests compare them).
    pub fn available() -> Vec<Path> {
        let mut v = vec![Path::Plain];
        #[cfg(target_arch = "x86_64")]
        {
            let f = super::cpu::CpuFeatures::hardware();
            if f.avx2 && f.fma {
                v.push(Path::Avx2);
            }
        }
        v
    }
}

/// Where each plane's values go and where each tap reads, for one geometry.
#[derive(Clone, Debug)]
pub struct Geometry {
    w: usize,
    pl: usize,
    sh: usize,
    sw: usize,
    wq: usize,
    /// Elements per phase plane (`hq * wq` and the slack the last row's runs read past).
    phase_len: usize,
    /// Start of each tap's run, taps in the weights' order `(i, j)`.
    offsets: Vec<usize>,
    oh: usize,
    ow: usize,
    /// Output rows per block (about 1024 accumulators: they stay in L1 across the taps).
    block_rows: usize,
    /// Where input row `yy` starts in the buffer (its row phase and index).
    row_starts: Vec<usize>,
    /// Per column phase: the first input column with it, where that column lands relative
    /// to its row's start, and how many columns it has. Computed once: `fill` runs per
    /// plane, and the divisions cost more than a short row's copy.
    col_phases: Vec<(usize, usize, usize)>,
}

impl Geometry {
    pub fn new(s: &ConvShape) -> Geometry {
        let [kh, kw] = s.win.kernel;
        let [sh, sw] = s.win.strides;
        let [dh, dw] = s.win.dilations;
        let [pt, pl, pb, pr] = s.win.pads;
        let hq = (s.h + pt + pb).div_ceil(sh);
        let wq = (s.w + pl + pr).div_ceil(sw);
        // A tap's run for the last output row ends at most this far past its phase plane.
        let slack = (kw.saturating_sub(1) * dw) / sw;
        let phase_len = hq * wq + slack;
        let mut offsets = Vec::with_capacity(kh * kw);
        for i in 0..kh {
            for j in 0..kw {
                let phase = ((i * dh) % sh) * sw + (j * dw) % sw;
                offsets.push(phase * phase_len + (i * dh / sh) * wq + j * dw / sw);
            }
        }
        let row_starts = (0..s.h)
            .map(|yy| {
                let r = yy + pt;
                (r % sh) * sw * phase_len + (r / sh) * wq
            })
            .collect();
        // Padded column `c = xx + pl` goes to phase `c % sw`, index `c / sw`; the columns
        // of one phase are every `sw`-th from the first `xx0` with that phase.
        let col_phases = (0..sw)
            .filter_map(|ph| {
                let xx0 = (ph + sw - pl % sw) % sw;
                (xx0 < s.w).then(|| (xx0, ph * phase_len + (xx0 + pl) / sw, (s.w - xx0).div_ceil(sw)))
            })
            .collect();
        Geometry {
            w: s.w,
            pl,
            sh,
            sw,
            wq,
            phase_len,
            offsets,
            row_starts,
            col_phases,
            oh: s.out[0],
            ow: s.out[1],
            block_rows: (1024 / wq.max(1)).max(1),
        }
    }

    fn buf_len(&self) -> usize {
        // The integer kernel's runs go up to `TAIL` values past the float path's.
        self.sh * self.sw * self.phase_len + TAIL
    }

    /// The taps paired for the integer kernel: `(start of the run, tap a, tap b)`, where
    /// tap b's run starts one value after tap a's (horizontal neighbours at stride 1, taps
    /// two apart at stride 2), so that one `vpmaddwd` of the buffer at `start + t` by the
    /// weights `(w_a, w_b)` sums both; a tap with no such partner is paired with a zero
    /// weight. 3x3: six products for nine taps; 5x5: fifteen for twenty-five.
    pub fn tap_pairs(&self) -> Vec<(usize, usize, Option<usize>)> {
        let mut used = vec![false; self.offsets.len()];
        let mut pairs = Vec::with_capacity(self.offsets.len());
        for a in 0..self.offsets.len() {
            if used[a] {
                continue;
            }
            used[a] = true;
            let b = (0..self.offsets.len()).find(|&b| !used[b] && self.offsets[b] == self.offsets[a] + 1);
            if let Some(b) = b {
                used[b] = true;
            }
            pairs.push((self.offsets[a], a, b));
        }
        pairs
    }

    /// Copies one input plane (`h x w`), each value mapped by `f`, into `buf`.
    #[inline(always)]
    fn fill<X: Copy, L: Lane>(&self, x: &[X], f: impl Fn(X) -> L, buf: &mut Vec<L>) {
        buf.clear();
        buf.resize(self.buf_len(), L::default());
        for (src, &row) in x.chunks_exact(self.w).zip(&self.row_starts) {
            if self.sw == 1 {
                let dst = &mut buf[row + self.pl..row + self.pl + self.w];
                dst.iter_mut().zip(src).for_each(|(d, &v)| *d = f(v));
            } else if let [(0, e0, ne), (1, o0, no)] | [(1, o0, no), (0, e0, ne)] = self.col_phases[..] {
                // Stride 2: even and odd columns in one pass (vectorizes as a deinterleave).
                let (ev, od) = (row + e0, row + o0);
                for (i, pair) in src.chunks_exact(2).enumerate() {
                    buf[ev + i] = f(pair[0]);
                    buf[od + i] = f(pair[1]);
                }
                if ne > no {
                    buf[ev + ne - 1] = f(src[self.w - 1]);
                }
            } else {
                for &(xx0, off, cols) in &self.col_phases {
                    let dst = &mut buf[row + off..row + off + cols];
                    dst.iter_mut()
                        .zip(src[xx0..].iter().step_by(self.sw))
                        .for_each(|(d, &v)| *d = f(v));
                }
            }
        }
    }
}

#[inline(always)]
fn accumulate<L: Lane, const FUSED: bool>(buf: &[L], offsets: &[usize], w: &[L::Acc], t0: usize, acc: &mut [L::Acc]) {
    let n = acc.len();
    for (&off, &wv) in offsets.iter().zip(w) {
        let src = &buf[off + t0..off + t0 + n];
        for (a, &x) in acc.iter_mut().zip(src) {
            *a = if FUSED {
                L::madd_fused(*a, wv, x)
            } else {
                L::madd(*a, wv, x)
            };
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn accumulate_avx2_fma<L: Lane>(buf: &[L], offsets: &[usize], w: &[L::Acc], t0: usize, acc: &mut [L::Acc]) {
    accumulate::<L, true>(buf, offsets, w, t0, acc)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn accumulate_avx2<L: Lane>(buf: &[L], offsets: &[usize], w: &[L::Acc], t0: usize, acc: &mut [L::Acc]) {
    accumulate::<L, false>(buf, offsets, w, t0, acc)
}

/// Scratch of one task (reused across its planes).
#[derive(Default)]
pub struct Scratch<L: Lane> {
    buf: Vec<L>,
    acc: Vec<L::Acc>,
    /// The integer kernel's requantized outputs, `wq` per row.
    bytes: Vec<u8>,
}

/// Values past a phase plane's slack that `plane_requant_avx2` may read: its last run of 16
/// outputs ends up to 15 past the plane's last output, and its odd half reads one further.
const TAIL: usize = 32;

/// One integer plane requantized in registers: `x` is the input channel (`h x w`, mapped to
/// i16 by `f`: the value minus its zero point), `pairs` the starts of `g.tap_pairs()`,
/// `words[i]` the weights of pair `i` as `vpmaddwd` reads them (`w_a` low, `w_b` high, 0
/// for a single tap); `dst` receives the `oh x ow` outputs through `row`.
///
/// Runs of 16 outputs keep their sums in two registers across all taps: the pair loaded at
/// `start + t` gives the even outputs `t, t + 2, ...`, the one at `start + t + 1` the odd
/// ones, interleaved back before requantizing. The sums are those of `plane` (exact i32:
/// the caller's accumulator bound keeps them below the requantization's fast bound; the
/// columns past `ow` read neighbouring values of the same buffer, stay under the same bound
/// and are dropped).
///
/// # Safety
/// The CPU must have AVX2; `dst` must have `oh * ow` writable bytes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn plane_requant_avx2<X: Copy>(
    g: &Geometry,
    x: &[X],
    f: impl Fn(X) -> i16,
    pairs: &[usize],
    words: &[i32],
    row: &super::requant::RowAvx2,
    scratch: &mut Scratch<i16>,
    dst: *mut u8,
) {
    use std::arch::x86_64::*;
    g.fill(x, f, &mut scratch.buf);
    let n_out = g.oh * g.wq;
    let chunks = n_out.div_ceil(16);
    scratch.bytes.resize(chunks * 16, 0);
    let buf = &scratch.buf;
    let last = pairs.iter().max().copied().unwrap_or(0) + chunks * 16 + 16;
    assert!(
        last <= buf.len() && words.len() >= pairs.len(),
        "depthwise: runs past the buffer"
    );
    // SAFETY: every load reads 16 values at `start + t (+ 1)` with `t + 16 <= chunks * 16`,
    // inside `buf` (checked above); stores write `bytes[t..t + 16]`, inside its `chunks * 16`;
    // `dst` has `oh * ow` bytes (the caller's promise) and each row copies `ow <= wq` bytes.
    unsafe {
        let bp = buf.as_ptr();
        let out = scratch.bytes.as_mut_ptr();
        for c in 0..chunks {
            let t = c * 16;
            let (mut even, mut odd) = (_mm256_setzero_si256(), _mm256_setzero_si256());
            for (&start, &w) in pairs.iter().zip(words) {
                let wv = _mm256_set1_epi32(w);
                let p = bp.add(start + t);
                even = _mm256_add_epi32(even, _mm256_madd_epi16(_mm256_loadu_si256(p as *const __m256i), wv));
                odd = _mm256_add_epi32(
                    odd,
                    _mm256_madd_epi16(_mm256_loadu_si256(p.add(1) as *const __m256i), wv),
                );
            }
            // even = [t, t+2, ..., t+14], odd = [t+1, ..., t+15]: within each 128-bit lane
            // the unpacks give outputs in order, the permutes put the lanes in order.
            let lo = _mm256_unpacklo_epi32(even, odd);
            let hi = _mm256_unpackhi_epi32(even, odd);
            let first = _mm256_permute2x128_si256::<0x20>(lo, hi);
            let second = _mm256_permute2x128_si256::<0x31>(lo, hi);
            let bytes = _mm_unpacklo_epi64(row.bytes8(first), row.bytes8(second));
            _mm_storeu_si128(out.add(t) as *mut __m128i, bytes);
        }
        for y in 0..g.oh {
            std::ptr::copy_nonoverlapping(out.add(y * g.wq), dst.add(y * g.ow), g.ow);
        }
    }
}

/// Convolves one plane: `x` is the input channel (`h x w`, each value mapped to the lane
/// type by `f`), `w` its kernel (`kh * kw` taps), `init` the accumulators' start (the float
/// bias, or 0); `store(y, acc)` receives output row `y` (`ow` accumulators).
pub fn plane<X: Copy, L: Lane>(
    g: &Geometry,
    x: &[X],
    f: impl Fn(X) -> L,
    w: &[L::Acc],
    init: L::Acc,
    path: Path,
    scratch: &mut Scratch<L>,
    mut store: impl FnMut(usize, &[L::Acc]),
) {
    g.fill(x, f, &mut scratch.buf);
    let acc = &mut scratch.acc;
    let mut y0 = 0;
    while y0 < g.oh {
        let rows = g.block_rows.min(g.oh - y0);
        let t0 = y0 * g.wq;
        acc.clear();
        acc.resize(rows * g.wq, init);
        match path {
            Path::Plain => accumulate::<L, false>(&scratch.buf, &g.offsets, w, t0, acc),
            #[cfg(target_arch = "x86_64")]
            Path::Avx2 => {
                // SAFETY: `Path::Avx2` exists only when the CPU has AVX2 (and FMA for the
                // float path, which alone uses the fused form): `Path::for_f32`,
                // `Path::for_int`, `Path::available`.
                unsafe {
                    if L::FUSED {
                        accumulate_avx2_fma(&scratch.buf, &g.offsets, w, t0, acc)
                    } else {
                        accumulate_avx2(&scratch.buf, &g.offsets, w, t0, acc)
                    }
                }
            }
        }
        for r in 0..rows {
            store(y0 + r, &acc[r * g.wq..r * g.wq + g.ow]);
        }
        y0 += rows;
    }
}

/// Float depthwise convolution of `x` [n, c, h, w] with `wt` [m, 1, kh, kw] into `out`
/// [n, m, oh, ow] (`handles(s)`), each value `epi.apply(acc + bias, out's value)`: the
/// residual (when `epi.accumulate`) is what `out` holds. Parallel over output planes.
pub fn conv_f32(x: &[f32], wt: &[f32], bias: Option<&[f32]>, s: &ConvShape, out: &mut [f32], epi: Epilogue) {
    use rayon::prelude::*;
    let g = Geometry::new(s);
    let (plane_in, npix) = (s.h * s.w, s.out[0] * s.out[1]);
    let (mg, ks, ow) = (s.m / s.group, s.win.kernel[0] * s.win.kernel[1], s.out[1]);
    if npix == 0 {
        return;
    }
    let path = Path::for_f32();
    out.par_chunks_mut(npix)
        .enumerate()
        .for_each_init(Scratch::default, |scratch, (idx, o)| {
            let (img, m) = (idx / s.m, idx % s.m);
            let xi = &x[(img * s.c + m / mg) * plane_in..][..plane_in];
            let b = bias.map_or(0.0, |b| b[m]);
            plane(
                &g,
                xi,
                |v| v,
                &wt[m * ks..(m + 1) * ks],
                b,
                path,
                scratch,
                |y, acc| {
                    for (d, &v) in o[y * ow..(y + 1) * ow].iter_mut().zip(acc) {
                        *d = epi.apply(v, *d);
                    }
                },
            );
        });
}

#[cfg(test)]
mod tests {
    use super::super::conv::{conv2d_ref, Window2d};
    use super::super::testing::fill;
    use super::*;
    use proptest::prelude::*;

    /// Random depthwise float layers through one path, stored plainly.
    fn run_f32(x: &[f32], wt: &[f32], bias: &[f32], s: &ConvShape, path: Path) -> Vec<f32> {
        let g = Geometry::new(s);
        let (plane_in, npix) = (s.h * s.w, s.out[0] * s.out[1]);
        let (mg, ks) = (s.m / s.group, s.win.kernel[0] * s.win.kernel[1]);
        let mut out = vec![0f32; s.output_len()];
        let mut scratch = Scratch::default();
        for (idx, o) in out.chunks_mut(npix).enumerate() {
            let (img, m) = (idx / s.m, idx % s.m);
            let xi = &x[(img * s.c + m / mg) * plane_in..][..plane_in];
            plane(
                &g,
                xi,
                |v| v,
                &wt[m * ks..(m + 1) * ks],
                bias[m],
                path,
                &mut scratch,
                |y, acc| o[y * s.out[1]..(y + 1) * s.out[1]].copy_from_slice(acc),
            );
        }
        out
    }

    fn shape(
        n: usize,
        c: usize,
        mult: usize,
        h: usize,
        w: usize,
        k: [usize; 2],
        st: [usize; 2],
        d: [usize; 2],
        pads: [usize; 4],
    ) -> Option<ConvShape> {
        let win = Window2d {
            kernel: k,
            strides: st,
            dilations: d,
            pads,
        };
        let out = win.output_size(h, w, false)?;
        Some(ConvShape {
            n,
            c,
            h,
            w,
            m: c * mult,
            group: c,
            win,
            out,
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Every path against the seven-loop reference: 1x1 to 5x5 kernels, strides 1 to 3,
        /// dilations, any pads, channel multipliers.
        #[test]
        fn float_paths_match_reference(n in 1usize..3, c in 2usize..6, mult in 1usize..3,
                                       h in 1usize..16, w in 1usize..16,
                                       k in prop_oneof![Just(1usize), Just(3), Just(5)], kw_alt in any::<bool>(),
                                       sh in 1usize..4, sw in 1usize..4, dh in 1usize..3, dw in 1usize..3,
                                       pads in proptest::array::uniform4(0usize..4), seed in 0u64..1000) {
            let kw = if kw_alt { 3 } else { k };
            let Some(s) = shape(n, c, mult, h, w, [k, kw], [sh, sw], [dh, dw], pads) else { return Ok(()); };
            let x = fill(n * c * h * w, seed);
            let wt = fill(s.m * k * kw, seed + 1);
            let b = fill(s.m, seed + 2);
            let want = conv2d_ref(&x, &wt, Some(&b), &s);
            for path in Path::available() {
                let got = run_f32(&x, &wt, &b, &s, path);
                for (a, r) in got.iter().zip(&want) {
                    prop_assert!((a - r).abs() <= 1e-5 * (1.0 + r.abs()), "{path:?}: {a} vs {r}");
                }
            }
        }

        /// The AVX2 kernel that pairs taps and requantizes in registers, against the
        /// reference sums requantized by the reference row: 3x3 and 5x5, strides 1 and 2,
        /// dilations, any pads, u8 and i8 outputs.
        #[test]
        fn requantizing_kernel_matches_reference(c in 1usize..4, h in 1usize..24, w in 1usize..24,
                                                 k in prop_oneof![Just(3usize), Just(5)],
                                                 sh in 1usize..3, sw in 1usize..3, d in 1usize..3,
                                                 pads in proptest::array::uniform4(0usize..3),
                                                 zero in -128i32..128, unsigned_out in any::<bool>(),
                                                 exp in 6i32..14, bias in -5000i32..5000, seed in any::<u64>()) {
            use super::super::requant::{requant_row_ref, FixedPoint, RowAvx2, RowOut};
            if !Path::available().contains(&Path::Avx2) { return Ok(()); }
            let Some(s) = shape(1, c, 1, h, w, [k, k], [sh, sw], [d, d], pads) else { return Ok(()); };
            let mut st = seed | 1;
            let mut next = || { st ^= st << 13; st ^= st >> 7; st ^= st << 17; st };
            let x: Vec<u8> = (0..c * h * w).map(|_| next() as u8).collect();
            let wt: Vec<i8> = (0..c * k * k).map(|_| next() as i8).collect();
            let f = (1.0 + (next() % 1000) as f32 / 1000.0) * 2f32.powi(-exp);
            let out = if unsigned_out { RowOut::exact(0, 255) } else { RowOut::exact(-128, 127) };
            let g = Geometry::new(&s);
            let taps = g.tap_pairs();
            let mut covered: Vec<usize> = taps.iter().flat_map(|&(_, a, b)| std::iter::once(a).chain(b)).collect();
            covered.sort_unstable();
            prop_assert_eq!(covered, (0..k * k).collect::<Vec<_>>(), "every tap once");
            let starts: Vec<usize> = taps.iter().map(|t| t.0).collect();
            let npix = s.out[0] * s.out[1];
            let one = super::super::conv::ConvShape { c: 1, m: 1, group: 1, ..s };
            let mut scratch = Scratch::default();
            for ch in 0..c {
                let xs: Vec<i16> = x[ch * h * w..(ch + 1) * h * w].iter().map(|&v| v as i16 - zero as i16).collect();
                let wc = &wt[ch * k * k..(ch + 1) * k * k];
                let sums: Vec<i32> = super::super::qconv_direct::conv_ref(&xs, wc, &one, 1, 1).iter().map(|&v| v as i32).collect();
                let words: Vec<i32> = taps.iter().map(|&(_, a, b)| (b.map_or(0, |b| wc[b] as i32) << 16) | (wc[a] as i16 as u16 as i32)).collect();
                let mut want = vec![0u8; npix];
                let mut got = vec![0u8; npix];
                let fp = FixedPoint::from_f32(f).expect("a normal factor");
                // SAFETY: AVX2 checked above; `got` has `oh * ow` bytes.
                unsafe {
                    if unsigned_out {
                        requant_row_ref::<u8>(&sums, bias, &fp, out, &mut want);
                    } else {
                        let mut signed = vec![0i8; npix];
                        requant_row_ref::<i8>(&sums, bias, &fp, out, &mut signed);
                        want = signed.iter().map(|&v| v as u8).collect();
                    }
                    let row = RowAvx2::new(bias, f as f64, out, unsigned_out).with_small_sums();
                    plane_requant_avx2(&g, &x[ch * h * w..(ch + 1) * h * w], |v: u8| v as i16 - zero as i16,
                                       &starts, &words, &row, &mut scratch, got.as_mut_ptr());
                }
                prop_assert_eq!(&got, &want, "channel {}", ch);
            }
        }

        /// The integer accumulators, every path, exactly equal to the reference sums.
        #[test]
        fn integer_paths_match_reference(c in 2usize..6, h in 1usize..20, w in 1usize..20,
                                         k in prop_oneof![Just(3usize), Just(5)],
                                         sh in 1usize..3, sw in 1usize..3,
                                         pads in proptest::array::uniform4(0usize..3),
                                         zero in -128i32..128, seed in any::<u64>()) {
            let Some(s) = shape(1, c, 1, h, w, [k, k], [sh, sw], [1, 1], pads) else { return Ok(()); };
            let mut st = seed | 1;
            let mut next = || { st ^= st << 13; st ^= st >> 7; st ^= st << 17; st };
            let x: Vec<u8> = (0..c * h * w).map(|_| next() as u8).collect();
            let wt: Vec<i8> = (0..c * k * k).map(|_| next() as i8).collect();
            let g = Geometry::new(&s);
            let npix = s.out[0] * s.out[1];
            let one = super::super::conv::ConvShape { c: 1, m: 1, group: 1, ..s };
            for path in Path::available() {
                let mut scratch = Scratch::default();
                for ch in 0..c {
                    let xs: Vec<i16> = x[ch * h * w..(ch + 1) * h * w].iter().map(|&v| v as i16 - zero as i16).collect();
                    let want = super::super::qconv_direct::conv_ref(&xs, &wt[ch * k * k..(ch + 1) * k * k], &one, 1, 1);
                    let w32: Vec<i32> = wt[ch * k * k..(ch + 1) * k * k].iter().map(|&v| v as i32).collect();
                    let mut got = vec![0i64; npix];
                    plane(&g, &x[ch * h * w..(ch + 1) * h * w], |v: u8| v as i16 - zero as i16, &w32, 0, path, &mut scratch, |y, acc| {
                        for (d, &a) in got[y * s.out[1]..].iter_mut().zip(acc) { *d = a as i64; }
                    });
                    prop_assert_eq!(&got, &want, "{:?} channel {}", path, ch);
                }
            }
        }
    }
}
