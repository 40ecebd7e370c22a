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
    h: usize,
    w: usize,
    pt: usize,
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
        Geometry {
            h: s.h,
            w: s.w,
            pt,
            pl,
            sh,
            sw,
            wq,
            phase_len,
            offsets,
            oh: s.out[0],
            ow: s.out[1],
            block_rows: (1024 / wq.max(1)).max(1),
        }
    }

    fn buf_len(&self) -> usize {
        self.sh * self.sw * self.phase_len
    }

    /// Copies one input plane (`h x w`), each value mapped by `f`, into `buf`.
    fn fill<X: Copy, L: Lane>(&self, x: &[X], f: impl Fn(X) -> L, buf: &mut Vec<L>) {
        buf.clear();
        buf.resize(self.buf_len(), L::default());
        for (yy, src) in x.chunks_exact(self.w).take(self.h).enumerate() {
            let r = yy + self.pt;
            let row = (r % self.sh) * self.sw * self.phase_len + (r / self.sh) * self.wq;
            if self.sw == 1 {
                let dst = &mut buf[row + self.pl..row + self.pl + self.w];
                dst.iter_mut().zip(src).for_each(|(d, &v)| *d = f(v));
            } else {
                // Column phase by phase: padded column `c = xx + pl` goes to phase `c % sw`,
                // index `c / sw`; the columns of one phase are every `sw`-th from the first
                // `xx0` with that phase, and land side by side.
                for ph in 0..self.sw {
                    let xx0 = (ph + self.sw - self.pl % self.sw) % self.sw;
                    if xx0 >= self.w {
                        continue;
                    }
                    let start = row + ph * self.phase_len + (xx0 + self.pl) / self.sw;
                    let cols = (self.w - xx0).div_ceil(self.sw);
                    let dst = &mut buf[start..start + cols];
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
