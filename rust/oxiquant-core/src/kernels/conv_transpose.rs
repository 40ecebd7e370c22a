//! Transposed convolution (ConvTranspose), NC + 1 to 3 spatial dimensions, groups, strides,
//! dilations and per-side pads. The fast path is one GEMM per image and group (the weight's
//! columns times the input plane) followed by col2im, which scatters each column entry to the
//! output position it feeds; the reference is the plain scatter loop of the definition.
//!
//! Layouts: input [n, c, d, h, w], weight [c, m / group, kd, kh, kw], output [n, m, od, oh,
//! ow]; lower ranks run with leading spatial sizes of 1 (and kernel, stride, dilation 1, pad 0).

use super::gemm::{sgemm, MatRef};
use rayon::prelude::*;

/// The geometry of one transposed convolution, spatial axes lifted to three.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvTransposeShape {
    pub n: usize,
    pub c: usize,
    pub m: usize,
    pub group: usize,
    /// Input spatial sizes.
    pub input: [usize; 3],
    pub kernel: [usize; 3],
    pub strides: [usize; 3],
    pub dilations: [usize; 3],
    /// Pads at the beginning of each spatial axis (the end pads only shorten the output).
    pub pads_begin: [usize; 3],
    /// Output spatial sizes.
    pub out: [usize; 3],
}

impl ConvTransposeShape {
    fn cg(&self) -> usize {
        self.c / self.group
    }
    fn mg(&self) -> usize {
        self.m / self.group
    }
    fn kernel_len(&self) -> usize {
        self.kernel.iter().product()
    }
    fn in_plane(&self) -> usize {
        self.input.iter().product()
    }
    fn out_plane(&self) -> usize {
        self.out.iter().product()
    }
    pub fn output_len(&self) -> usize {
        self.n * self.m * self.out_plane()
    }

    /// The output index along axis `d` fed by input index `i` through kernel tap `k`.
    fn target(&self, d: usize, i: usize, k: usize) -> Option<usize> {
        let o = (i * self.strides[d] + k * self.dilations[d]).checked_sub(self.pads_begin[d])?;
        (o < self.out[d]).then_some(o)
    }

    /// Per axis, per kernel tap: the input indices whose target lies in the output, as a
    /// range `lo..hi` (the targets step by the stride from `first`).
    fn tap_ranges(&self, d: usize) -> Vec<(usize, usize, usize)> {
        (0..self.kernel[d])
            .map(|k| {
                let mut lo = 0;
                while lo < self.input[d] && self.target(d, lo, k).is_none() {
                    lo += 1;
                }
                let mut hi = lo;
                while hi < self.input[d] && self.target(d, hi, k).is_some() {
                    hi += 1;
                }
                let first = self.target(d, lo, k).unwrap_or(0);
                (lo, hi, first)
            })
            .collect()
    }
}

/// Scatters the columns of one output channel (`cols`: [kernel_len, in_plane]) into its
/// output plane.
fn col2im_channel(cols: &[f32], s: &ConvTransposeShape, taps: &[Vec<(usize, usize, usize)>; 3], out: &mut [f32]) {
    let [_, ih, iw] = s.input;
    let [_, oh, ow] = s.out;
    let [kd, kh, kw] = s.kernel;
    let [sd, sh, sw] = s.strides;
    let in_plane = s.in_plane();
    for a in 0..kd {
        let (za, zb, zo) = taps[0][a];
        for b in 0..kh {
            let (ya, yb, yo) = taps[1][b];
            for e in 0..kw {
                let (xa, xb, xo) = taps[2][e];
                if xa >= xb {
                    continue;
                }
                let row = &cols[((a * kh + b) * kw + e) * in_plane..][..in_plane];
                for (zi, z) in (za..zb).enumerate() {
                    let oz = zo + zi * sd;
                    for (yi, y) in (ya..yb).enumerate() {
                        let oy = yo + yi * sh;
                        let src = &row[(z * ih + y) * iw + xa..(z * ih + y) * iw + xb];
                        let dst = &mut out[(oz * oh + oy) * ow..(oz * oh + oy + 1) * ow];
                        if sw == 1 {
                            for (d, v) in dst[xo..xo + src.len()].iter_mut().zip(src) {
                                *d += v;
                            }
                        } else {
                            for (j, v) in src.iter().enumerate() {
                                dst[xo + j * sw] += v;
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Fast transposed convolution: returns [n, m, out...].
pub fn conv_transpose(x: &[f32], wt: &[f32], bias: Option<&[f32]>, s: &ConvTransposeShape) -> Vec<f32> {
    let (cg, mg, kl) = (s.cg(), s.mg(), s.kernel_len());
    let (in_plane, out_plane) = (s.in_plane(), s.out_plane());
    let mut y = vec![0f32; s.output_len()];
    if y.is_empty() {
        return y;
    }
    let taps = [s.tap_ranges(0), s.tap_ranges(1), s.tap_ranges(2)];
    let image = |(img, y_img): (usize, &mut [f32]), threads: usize| {
        let mut cols = vec![0f32; mg * kl * in_plane];
        for g in 0..s.group {
            let xg = &x[(img * s.c + g * cg) * in_plane..][..cg * in_plane];
            let wg = &wt[g * cg * mg * kl..][..cg * mg * kl];
            // cols[mg * kl, in_plane] = W_g^T (W_g is [cg, mg * kl]) x X_g [cg, in_plane].
            sgemm(
                mg * kl,
                in_plane,
                cg,
                1.0,
                MatRef::row_major(wg, mg * kl, true),
                MatRef::row_major(xg, in_plane, false),
                &mut cols,
                false,
                threads,
            );
            let y_g = &mut y_img[g * mg * out_plane..][..mg * out_plane];
            let scatter = |(oc, plane): (usize, &mut [f32])| {
                if let Some(b) = bias {
                    plane.iter_mut().for_each(|v| *v = b[g * mg + oc]);
                }
                col2im_channel(&cols[oc * kl * in_plane..][..kl * in_plane], s, &taps, plane);
            };
            if threads > 1 {
                y_g.par_chunks_mut(out_plane).enumerate().for_each(scatter);
            } else {
                y_g.chunks_mut(out_plane).enumerate().for_each(scatter);
            }
        }
    };
    let img_len = s.m * out_plane;
    if s.n > 1 {
        y.par_chunks_mut(img_len).enumerate().for_each(|p| image(p, 1));
    } else {
        image((0, &mut y[..]), rayon::current_num_threads());
    }
    y
}

/// Reference: every input element times every weight tap, added at the output position it
/// reaches (positions outside the output dropped), plus the bias.
pub fn conv_transpose_ref(x: &[f32], wt: &[f32], bias: Option<&[f32]>, s: &ConvTransposeShape) -> Vec<f32> {
    let (cg, mg) = (s.cg(), s.mg());
    let [id, ih, iw] = s.input;
    let [kd, kh, kw] = s.kernel;
    let [_, oh, ow] = s.out;
    let out_plane = s.out_plane();
    let mut y = vec![0f32; s.output_len()];
    for img in 0..s.n {
        for m in 0..s.m {
            let base = (img * s.m + m) * out_plane;
            if let Some(b) = bias {
                y[base..base + out_plane].iter_mut().for_each(|v| *v = b[m]);
            }
            let (g, om) = (m / mg, m % mg);
            for ci in 0..cg {
                let c = g * cg + ci;
                for z in 0..id {
                    for yy in 0..ih {
                        for xx in 0..iw {
                            let xv = x[(((img * s.c + c) * id + z) * ih + yy) * iw + xx];
                            for a in 0..kd {
                                for b in 0..kh {
                                    for e in 0..kw {
                                        let (Some(oz), Some(oy), Some(ox)) =
                                            (s.target(0, z, a), s.target(1, yy, b), s.target(2, xx, e))
                                        else {
                                            continue;
                                        };
                                        let wv = wt[(((c * mg + om) * kd + a) * kh + b) * kw + e];
                                        y[base + (oz * oh + oy) * ow + ox] += xv * wv;
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    y
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testing::fill;
    use proptest::prelude::*;

    fn axis() -> impl Strategy<Value = (usize, usize, usize, usize, usize, usize)> {
        // input, kernel, stride, dilation, pad, extra output (output_padding or a larger
        // output_shape)
        (1usize..5, 1usize..4, 1usize..4, 1usize..3, 0usize..3, 0usize..3)
    }

    proptest! {
        #[test]
        fn fast_matches_reference(
            axes in prop::collection::vec(axis(), 1..=3),
            n in 1usize..3, g in 1usize..3, cg in 1usize..3, mg in 1usize..3,
            bias in any::<bool>(), seed in 0u64..1000,
        ) {
            let mut s = ConvTransposeShape {
                n, c: g * cg, m: g * mg, group: g,
                input: [1; 3], kernel: [1; 3], strides: [1; 3], dilations: [1; 3],
                pads_begin: [0; 3], out: [1; 3],
            };
            let off = 3 - axes.len();
            for (i, &(inp, k, st, dl, pad, extra)) in axes.iter().enumerate() {
                let d = off + i;
                s.input[d] = inp;
                s.kernel[d] = k;
                s.strides[d] = st;
                s.dilations[d] = dl;
                s.pads_begin[d] = pad;
                let full = (inp - 1) * st + (k - 1) * dl + 1 + extra;
                s.out[d] = full.saturating_sub(pad).max(1);
            }
            let x = fill(n * s.c * s.in_plane(), seed);
            let w = fill(s.c * mg * s.kernel_len(), seed + 1);
            let b = fill(s.m, seed + 2);
            let b = bias.then_some(&b[..]);
            let fast = conv_transpose(&x, &w, b, &s);
            let slow = conv_transpose_ref(&x, &w, b, &s);
            prop_assert_eq!(fast.len(), slow.len());
            for (i, (p, q)) in fast.iter().zip(&slow).enumerate() {
                prop_assert!((p - q).abs() <= 1e-4 * (1.0 + q.abs()), "{i}: {p} vs {q} in {s:?}");
            }
        }
    }
}
