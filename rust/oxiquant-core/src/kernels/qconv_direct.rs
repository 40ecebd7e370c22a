//! Direct integer convolution: the patches are read in place, no im2col matrix.
//!
//! The image of one channel group is copied once into a zero-padded i16 buffer with the
//! channels interleaved in pairs (`[phase][c / 2][row][col][2]`, the columns split into
//! `stride` phases). For a run of consecutive output pixels of one row, the pair of patch
//! elements `(c, c + 1)` at kernel position `(i, j)` is then one contiguous run of that
//! buffer, at an offset that depends only on `(i, j, c / 2)`: exactly the operand layout the
//! pair-product kernel (`vpmaddwd`) needs. The weights are packed once with `k` ordered
//! `(i, j, c)` so that their pairs line up.
//!
//! Measured against the im2col + packed product (benches/RESULTS.md): copying the patches
//! cost more than the products on layers with few output channels.

use super::conv::ConvShape;
use super::qgemm::{split_tasks, Kernel, OutPtr, PackedA, QAct, MR, NR};

/// Weights `[m][cg][kh][kw]` (i8, or i16 centered on their zero point) reordered to
/// `[m][kh][kw][cg rounded up to even]` and packed.
pub fn pack_weights<T: QAct + Default>(w: &[T], m: usize, cg: usize, kh: usize, kw: usize) -> PackedA {
    let cp = cg.div_ceil(2) * 2;
    let k = kh * kw * cp;
    let mut r = vec![T::default(); m * k];
    for o in 0..m {
        for c in 0..cg {
            for i in 0..kh {
                for j in 0..kw {
                    r[o * k + (i * kw + j) * cp + c] = w[((o * cg + c) * kh + i) * kw + j];
                }
            }
        }
    }
    PackedA::new(&r, m, k)
}

/// One group's image, padded, pair-interleaved and phase-split (see the module doc).
pub struct PairImage {
    buf: Vec<i16>,
    hp: usize,
    wq: usize,
    pairs: usize,
    phases: usize,
}

impl PairImage {
    pub fn new() -> PairImage {
        PairImage {
            buf: Vec::new(),
            hp: 0,
            wq: 0,
            pairs: 0,
            phases: 1,
        }
    }

    /// Fills from `x` (`cg` planes of `h x w`) minus `zero` (the input's zero point) for the
    /// geometry `s`. Padding holds 0, i.e. the value `zero`: the real zero of the input.
    pub fn fill<T: QAct>(&mut self, x: &[T], cg: usize, zero: i16, s: &ConvShape) {
        let [pt, pl, pb, pr] = s.win.pads;
        let sw = s.win.strides[1];
        self.hp = s.h + pt + pb;
        let wp = s.w + pl + pr;
        self.wq = wp.div_ceil(sw);
        self.pairs = cg.div_ceil(2);
        self.phases = sw;
        let plane = self.hp * self.wq * 2;
        // Slack: a full tile read at the last offset stays inside the buffer.
        let len = sw * self.pairs * plane + 2 * NR * 2;
        self.buf.clear();
        self.buf.resize(len, 0);
        for q in 0..sw {
            // Padded column `xq * sw + q` holds input column `xq * sw + q - pl`: the columns
            // in `lo..hi` hold input, the others padding (0, left from the resize).
            let lo = pl.saturating_sub(q).div_ceil(sw);
            let hi = (s.w + pl).saturating_sub(q).div_ceil(sw).min(self.wq);
            if lo >= hi {
                continue;
            }
            let col0 = lo * sw + q - pl;
            for cp in 0..self.pairs {
                let base = (q * self.pairs + cp) * plane;
                let (c0, c1) = (2 * cp, (2 * cp + 1 < cg).then_some(2 * cp + 1));
                for y in 0..s.h {
                    let row = base + (y + pt) * self.wq * 2;
                    let dst = &mut self.buf[row + lo * 2..row + hi * 2];
                    let plane_row = |c: usize| &x[(c * s.h + y) * s.w + col0..(c * s.h + y + 1) * s.w];
                    let a = plane_row(c0);
                    // Two channels side by side, pixel by pixel (the second absent: 0).
                    match (c1.map(plane_row), sw) {
                        (Some(b), 1) => {
                            for ((d, &u), &v) in dst.chunks_exact_mut(2).zip(a).zip(b) {
                                d[0] = u.widen() - zero;
                                d[1] = v.widen() - zero;
                            }
                        }
                        (Some(b), _) => {
                            for ((d, &u), &v) in dst
                                .chunks_exact_mut(2)
                                .zip(a.iter().step_by(sw))
                                .zip(b.iter().step_by(sw))
                            {
                                d[0] = u.widen() - zero;
                                d[1] = v.widen() - zero;
                            }
                        }
                        (None, _) => {
                            for (d, &u) in dst.chunks_exact_mut(2).zip(a.iter().step_by(sw)) {
                                d[0] = u.widen() - zero;
                            }
                        }
                    }
                }
            }
        }
    }
}

impl Default for PairImage {
    fn default() -> Self {
        Self::new()
    }
}

/// Offsets (in i16) of the pair runs, in the weights' `k`-pair order `(i, j, c / 2)`.
fn offsets(img: &PairImage, s: &ConvShape) -> Vec<usize> {
    patch_offsets(s, img.pairs, img.hp, img.wq, 2)
}

/// Where each kernel position's run starts in a padded, phase-split image
/// `[phase][group][hp][wq][width]` (`groups` channel groups of `width` interleaved
/// channels, rows of `wq` pixels per phase), in elements, in the weights' order
/// `(i, j, group)`. Shared by the pair and byte kernels.
pub(crate) fn patch_offsets(s: &ConvShape, groups: usize, hp: usize, wq: usize, width: usize) -> Vec<usize> {
    let [kh, kw] = s.win.kernel;
    let [dh, dw] = s.win.dilations;
    let sw = s.win.strides[1];
    let mut v = Vec::with_capacity(kh * kw * groups);
    for i in 0..kh {
        for j in 0..kw {
            let (q, xq) = ((j * dw) % sw, (j * dw) / sw);
            for g in 0..groups {
                v.push((((q * groups + g) * hp + i * dh) * wq + xq) * width);
            }
        }
    }
    v
}

/// One tile from in-place operands, plain Rust.
fn tile_ref(a: &[i32], b: &[i16], offs: &[usize], tile: &mut [[i32; NR]; MR]) {
    *tile = [[0; NR]; MR];
    for (kk, &off) in offs.iter().enumerate() {
        let bv = &b[off..off + NR * 2];
        for (r, row) in tile.iter_mut().enumerate() {
            let w = a[kk * MR + r];
            let (w0, w1) = (w as i16 as i32, w >> 16);
            for (j, acc) in row.iter_mut().enumerate() {
                *acc += w0 * bv[2 * j] as i32 + w1 * bv[2 * j + 1] as i32;
            }
        }
    }
}

/// `V` vectors of eight pixels per row (2: the full tile; 1: rows of at most eight pixels,
/// as in the last stages of CIFAR and ImageNet ResNets, where a full tile would be half wasted).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn tile_avx2<const V: usize>(a: &[i32], b: &[i16], offs: &[usize], tile: &mut [[i32; NR]; MR]) {
    use std::arch::x86_64::*;
    // SAFETY: the caller checked that every `off + 2 * NR` is inside `b` and that `a` holds
    // `offs.len() * MR` words.
    unsafe {
        let mut acc = [[_mm256_setzero_si256(); V]; MR];
        let (ap, bp) = (a.as_ptr(), b.as_ptr());
        for (kk, &off) in offs.iter().enumerate() {
            let mut bv = [_mm256_setzero_si256(); V];
            for (v, b) in bv.iter_mut().enumerate() {
                *b = _mm256_loadu_si256(bp.add(off + 16 * v) as *const __m256i);
            }
            for (r, acc_r) in acc.iter_mut().enumerate() {
                let w = _mm256_set1_epi32(*ap.add(kk * MR + r));
                for (acc_v, b) in acc_r.iter_mut().zip(&bv) {
                    *acc_v = _mm256_add_epi32(*acc_v, _mm256_madd_epi16(w, *b));
                }
            }
        }
        for (row, acc_r) in tile.iter_mut().zip(acc) {
            for (v, acc_v) in acc_r.iter().enumerate() {
                _mm256_storeu_si256(row.as_mut_ptr().add(8 * v) as *mut __m256i, *acc_v);
            }
        }
    }
}

/// One tile; `cols` is how many of its pixels are used.
fn tile(kernel: Kernel, a: &[i32], b: &[i16], offs: &[usize], t: &mut [[i32; NR]; MR], cols: usize) {
    #[cfg(target_arch = "x86_64")]
    if kernel.is_simd() {
        // SAFETY: a SIMD `Kernel` only exists when AVX2 was detected; bounds checked by `conv`.
        unsafe {
            if cols <= 8 {
                tile_avx2::<1>(a, b, offs, t)
            } else {
                tile_avx2::<2>(a, b, offs, t)
            }
        };
        return;
    }
    let _ = (kernel, cols);
    tile_ref(a, b, offs, t)
}

/// Convolves one group of one image: `out` is `[mg][oh * ow]`; `epilogue(row, accs, dst)`
/// turns the accumulators of output channel `row` for a run of pixels into output values.
/// `kernel` picks the tile (`Kernel::detect()`, or the reference).
pub fn conv<O, F>(
    a: &PackedA,
    img: &PairImage,
    s: &ConvShape,
    out: &mut [O],
    parallel: bool,
    kernel: Kernel,
    epilogue: F,
) where
    O: Send,
    F: Fn(usize, &[i32], &mut [O]) + Sync,
{
    let offs = offsets(img, s);
    assert!(a.k == offs.len() * 2, "qconv: bad operands");
    let max_off = offs.iter().copied().max().unwrap_or(0);
    assert!(
        last_start(s, img.wq) * 2 + max_off + 2 * NR <= img.buf.len(),
        "qconv: image too small"
    );
    let out = TileOut::new(out, a.m, s.out[0] * s.out[1]);
    for_each_tile(a.m, s, img.wq, parallel, |bi, start, pix0, cols| {
        let mut t = [[0i32; NR]; MR];
        tile(kernel, a.block_words(bi), &img.buf[start * 2..], &offs, &mut t, cols);
        out.finish(&t, bi, pix0, cols, &epilogue);
    });
}

/// The pixel (of the padded, phase-split image) where the last tile of `for_each_tile` starts.
pub(crate) fn last_start(s: &ConvShape, wq: usize) -> usize {
    let [oh, ow] = s.out;
    (oh.max(1) - 1) * s.win.strides[0] * wq + ow.max(1) - 1
}

/// The loop shared by the direct kernels: `work(block, start, pix0, cols)` for every block
/// of `MR` output channels and run of at most `NR` pixels of one output row, whose first
/// patch starts at pixel `start` of the padded, phase-split image (rows of `wq` pixels) and
/// whose first output is pixel `pix0` of the output plane. The caller checks that its reads
/// from `last_start(s, wq)` stay inside its image.
pub(crate) fn for_each_tile<T>(m: usize, s: &ConvShape, wq: usize, parallel: bool, work: T)
where
    T: Fn(usize, usize, usize, usize) + Sync,
{
    let [oh, ow] = s.out;
    if oh * ow == 0 || m == 0 {
        return;
    }
    let sh = s.win.strides[0];
    let blocks = m.div_ceil(MR);
    let task = |bi: usize, y0: usize, y1: usize| {
        for oy in y0..y1 {
            for ox0 in (0..ow).step_by(NR) {
                work(bi, oy * sh * wq + ox0, oy * ow + ox0, NR.min(ow - ox0));
            }
        }
    };
    split_tasks(blocks, oh, parallel, task);
}

/// The output `[m][npix]` of a direct convolution, written by the tiles of `for_each_tile`
/// (each tile owns its rows x pixels rectangle).
pub(crate) struct TileOut<O> {
    ptr: OutPtr<O>,
    m: usize,
    npix: usize,
}

impl<O: Send> TileOut<O> {
    pub(crate) fn new(out: &mut [O], m: usize, npix: usize) -> TileOut<O> {
        TileOut::over(out.as_mut_ptr(), out.len(), m, npix)
    }

    /// Over memory not yet initialized, for a kernel that writes every output through
    /// `run_ptr` (raw pointers, no reference to an uninitialized value).
    pub(crate) fn new_uninit(out: &mut [std::mem::MaybeUninit<O>], m: usize, npix: usize) -> TileOut<O> {
        // `MaybeUninit<O>` has the layout of `O`.
        TileOut::over(out.as_mut_ptr() as *mut O, out.len(), m, npix)
    }

    /// The `len` elements at `ptr`, borrowed mutably by the caller for the tiles' lifetime.
    fn over(ptr: *mut O, len: usize, m: usize, npix: usize) -> TileOut<O> {
        assert!(len >= m * npix, "qconv: output too small");
        TileOut {
            ptr: OutPtr(ptr),
            m,
            npix,
        }
    }

    /// How many of block `bi`'s rows exist.
    pub(crate) fn rows(&self, bi: usize) -> usize {
        MR.min(self.m - bi * MR)
    }

    /// Where the outputs of `row` from pixel `pix0` start.
    pub(crate) fn run_ptr(&self, row: usize, pix0: usize) -> *mut O {
        assert!(
            row < self.m && pix0 < self.npix.max(1),
            "qconv: output run out of range"
        );
        // SAFETY: in bounds: row * npix + pix0 < m * npix <= out.len().
        unsafe { self.ptr.get().add(row * self.npix + pix0) }
    }

    /// Hands each existing row of tile `t` (block `bi`, pixels `pix0..pix0 + cols`) to
    /// `epilogue(row, accumulators, outputs)`.
    pub(crate) fn finish<F>(&self, t: &[[i32; NR]; MR], bi: usize, pix0: usize, cols: usize, epilogue: &F)
    where
        F: Fn(usize, &[i32], &mut [O]),
    {
        for (r, accs) in t.iter().enumerate().take(self.rows(bi)) {
            let row = bi * MR + r;
            // SAFETY: `for_each_tile` gives each (block, pixel run) to one task only, and
            // the run is inside the plane.
            let dst = unsafe { std::slice::from_raw_parts_mut(self.run_ptr(row, pix0), cols) };
            epilogue(row, &accs[..cols], dst);
        }
    }
}

/// Plain reference convolution of one group (i64 sums from the definition; `x` already
/// centered on its zero point, padding 0).
pub fn conv_ref<W: QAct>(x: &[i16], w: &[W], s: &ConvShape, cg: usize, mg: usize) -> Vec<i64> {
    let [kh, kw] = s.win.kernel;
    let [oh, ow] = s.out;
    let mut y = vec![0i64; mg * oh * ow];
    for o in 0..mg {
        for oy in 0..oh {
            for ox in 0..ow {
                let mut acc = 0i64;
                for c in 0..cg {
                    for i in 0..kh {
                        for j in 0..kw {
                            let iy = (oy * s.win.strides[0] + i * s.win.dilations[0]) as isize - s.win.pads[0] as isize;
                            let ix = (ox * s.win.strides[1] + j * s.win.dilations[1]) as isize - s.win.pads[1] as isize;
                            if iy >= 0 && ix >= 0 && (iy as usize) < s.h && (ix as usize) < s.w {
                                acc += x[(c * s.h + iy as usize) * s.w + ix as usize] as i64
                                    * w[((o * cg + c) * kh + i) * kw + j].widen() as i64;
                            }
                        }
                    }
                }
                y[(o * oh + oy) * ow + ox] = acc;
            }
        }
    }
    y
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::conv::Window2d;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(80))]
        #[test]
        fn direct_matches_the_definition(
            cg in 1usize..6, mg in 1usize..9, h in 1usize..9, w in 1usize..21, k in 1usize..4,
            stride in 1usize..4, dil in 1usize..3, pads in proptest::array::uniform4(0usize..3), seed in any::<u64>(),
            xz in prop_oneof![Just(0i16), 0i16..256], wz in prop_oneof![Just(0i16), 0i16..256],
        ) {
            let win = Window2d { kernel: [k, k], strides: [stride, stride], dilations: [dil, dil], pads };
            let Some(out) = win.output_size(h, w, false) else { return Ok(()) };
            let s = ConvShape { n: 1, c: cg, h, w, m: mg, group: 1, win, out };
            let mut st = seed | 1;
            let mut next = || { st ^= st << 13; st ^= st >> 7; st ^= st << 17; st };
            let x: Vec<u8> = (0..cg * h * w).map(|_| next() as u8).collect();
            // uint8 weights centered on a zero point (0: the i8 range shifted, as before).
            let wt: Vec<i16> = (0..mg * cg * k * k).map(|_| if wz == 0 { next() as i8 as i16 } else { (next() as u8) as i16 - wz }).collect();
            // Padding is the input's zero point: 0 once centered.
            let x16: Vec<i16> = x.iter().map(|&v| v as i16 - xz).collect();
            let want = conv_ref(&x16, &wt, &s, cg, mg);
            let a = pack_weights(&wt, mg, cg, k, k);
            let mut img = PairImage::new();
            img.fill(&x, cg, xz, &s);
            for kernel in Kernel::available() {
                for parallel in [false, true] {
                    let mut got = vec![0i64; mg * out[0] * out[1]];
                    conv(&a, &img, &s, &mut got, parallel, kernel, |_, acc, dst| {
                        dst.iter_mut().zip(acc).for_each(|(d, &v)| *d = v as i64)
                    });
                    prop_assert_eq!(&got, &want);
                }
            }
        }
    }
}
