//! 2-D convolution (1-D runs as 2-D with height 1), NCHW, groups, strides, dilations and
//! asymmetric pads. Paths: Winograd F(2x2, 3x3) for wide 3x3 layers (`conv_winograd`), the
//! direct kernel for most other single-group layers (`conv_direct`), the plane kernel of
//! `depthwise` for depthwise layers, im2col + GEMM for the rest.

use super::gemm::{sgemm, MatRef};
use rayon::prelude::*;

/// Geometry of one convolution or pooling window over a 2-D plane.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window2d {
    pub kernel: [usize; 2],
    pub strides: [usize; 2],
    pub dilations: [usize; 2],
    /// [top, left, bottom, right]
    pub pads: [usize; 4],
}

impl Window2d {
    pub fn output_size(&self, in_h: usize, in_w: usize, ceil_mode: bool) -> Option<[usize; 2]> {
        let mut out = [0usize; 2];
        for d in 0..2 {
            // Checked: kernel, dilations and pads come from the model file.
            let input = [in_h, in_w][d]
                .checked_add(self.pads[d])?
                .checked_add(self.pads[d + 2])?;
            let span = self.kernel[d]
                .checked_sub(1)?
                .checked_mul(self.dilations[d])?
                .checked_add(1)?;
            if input < span || self.strides[d] == 0 {
                return None;
            }
            let num = input - span;
            let mut o = if ceil_mode {
                num.div_ceil(self.strides[d]) + 1
            } else {
                num / self.strides[d] + 1
            };
            // The last window must start inside the input or its leading pad.
            if ceil_mode && (o - 1) * self.strides[d] >= [in_h, in_w][d] + self.pads[d] {
                o -= 1;
            }
            out[d] = o;
        }
        Some(out)
    }
}

/// Shapes of a convolution: input [n, c, h, w], weight [m, c / group, kh, kw].
#[derive(Clone, Copy, Debug)]
pub struct ConvShape {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub m: usize,
    pub group: usize,
    pub win: Window2d,
    pub out: [usize; 2],
}

impl ConvShape {
    fn cg(&self) -> usize {
        self.c / self.group
    }
    fn mg(&self) -> usize {
        self.m / self.group
    }
    fn ksize(&self) -> usize {
        self.cg() * self.win.kernel[0] * self.win.kernel[1]
    }
    pub fn output_len(&self) -> usize {
        self.n * self.m * self.out[0] * self.out[1]
    }
}

/// Writes the im2col matrix [cg * kh * kw, oh * ow] of one image's channel group.
fn im2col(x: &[f32], s: &ConvShape, col: &mut [f32], parallel: bool) {
    let [kh, kw] = s.win.kernel;
    let [oh, ow] = s.out;
    let (h, w) = (s.h as isize, s.w as isize);
    let [sh, sw] = s.win.strides;
    let [dh, dw] = s.win.dilations;
    let (pt, pl) = (s.win.pads[0] as isize, s.win.pads[1] as isize);
    let fill_row = |(row, dst): (usize, &mut [f32])| {
        let c = row / (kh * kw);
        let i = (row / kw) % kh;
        let j = row % kw;
        let plane = &x[c * s.h * s.w..(c + 1) * s.h * s.w];
        for y in 0..oh {
            let iy = (y * sh + i * dh) as isize - pt;
            let drow = &mut dst[y * ow..(y + 1) * ow];
            if iy < 0 || iy >= h {
                drow.iter_mut().for_each(|v| *v = 0.0);
                continue;
            }
            let src = &plane[iy as usize * s.w..(iy as usize + 1) * s.w];
            let off = (j * dw) as isize - pl;
            if sw == 1 && off >= 0 && off + ow as isize <= w {
                drow.copy_from_slice(&src[off as usize..off as usize + ow]);
            } else {
                for (xo, d) in drow.iter_mut().enumerate() {
                    let ix = (xo * sw) as isize + off;
                    *d = if ix >= 0 && ix < w { src[ix as usize] } else { 0.0 };
                }
            }
        }
    };
    // Copying the patches is memory-bound and, on large planes, as long as a fair part of
    // the product: split it across threads when the product itself is split.
    if parallel {
        col.par_chunks_mut(oh * ow).enumerate().for_each(fill_row);
    } else {
        col.chunks_mut(oh * ow).enumerate().for_each(fill_row);
    }
}

fn is_pointwise(s: &ConvShape) -> bool {
    s.win.kernel == [1, 1] && s.win.strides == [1, 1] && s.win.pads == [0; 4]
}

/// One image, one group: out[mg, oh*ow] = W_g[mg, ksize] x col + bias.
fn conv_group(
    x_img: &[f32],
    wt: &[f32],
    bias: Option<&[f32]>,
    s: &ConvShape,
    g: usize,
    out: &mut [f32],
    col: &mut Vec<f32>,
    threads: usize,
) {
    let (cg, mg, ks) = (s.cg(), s.mg(), s.ksize());
    let plane_out = s.out[0] * s.out[1];
    let xg = &x_img[g * cg * s.h * s.w..(g + 1) * cg * s.h * s.w];
    let wg = &wt[g * mg * ks..(g + 1) * mg * ks];
    let b_mat: &[f32] = if is_pointwise(s) {
        xg
    } else {
        col.resize(ks * plane_out, 0.0);
        im2col(xg, s, col, threads > 1);
        col
    };
    let accumulate = if let Some(b) = bias {
        for (oc, row) in out.chunks_mut(plane_out).enumerate() {
            row.iter_mut().for_each(|v| *v = b[g * mg + oc]);
        }
        true
    } else {
        false
    };
    sgemm(
        mg,
        plane_out,
        ks,
        1.0,
        MatRef::row_major(wg, ks, false),
        MatRef::row_major(b_mat, plane_out, false),
        out,
        accumulate,
        threads,
    );
}

/// Fast convolution. `x`: [n, c, h, w]; `wt`: [m, c/group, kh, kw]; returns [n, m, oh, ow].
pub fn conv2d(x: &[f32], wt: &[f32], bias: Option<&[f32]>, s: &ConvShape) -> Vec<f32> {
    let mut out = vec![0f32; s.output_len()];
    if super::depthwise::handles(s) {
        super::depthwise::conv_f32(x, wt, bias, s, &mut out, super::conv_direct::Epilogue::NONE);
        return out;
    }
    if super::conv_winograd::suits(s, wt) {
        let u = super::conv_winograd::transform_weights(wt, s.m, s.c);
        super::conv_winograd::winograd_conv(x, &u, bias, s, &mut out, super::conv_direct::Epilogue::NONE);
        return out;
    }
    if super::conv_direct::supported(s) {
        super::conv_direct::direct_conv(x, wt, bias, s, &mut out);
        return out;
    }
    conv2d_im2col_into(x, wt, bias, s, &mut out);
    out
}

/// Weights prepared once per model for the kernel that runs the layer.
#[derive(Clone, Debug, PartialEq)]
pub enum PackedWeights {
    /// Panels for the direct kernel (`conv_direct::pack_weights`).
    Direct(Vec<f32>),
    /// Transformed for the Winograd kernel (`conv_winograd::transform_weights`), and the
    /// direct kernel's panels for inputs too small for it to pay (`conv_winograd::worth`):
    /// the plan does not know the input size.
    Winograd { transformed: Vec<f32>, direct: Vec<f32> },
}

impl PackedWeights {
    /// The weights `wt` [m, c / group, kh, kw] prepared for the kernel `conv2d` would pick
    /// (Winograd by its channel rule alone: the input size is not known yet), or `None`
    /// when that kernel takes them as they are.
    pub fn for_layer(wt: &[f32], s: &ConvShape) -> Option<PackedWeights> {
        let k = s.c * s.win.kernel[0] * s.win.kernel[1];
        if super::conv_winograd::suits_layer(s, wt) {
            Some(PackedWeights::Winograd {
                transformed: super::conv_winograd::transform_weights(wt, s.m, s.c),
                direct: super::conv_direct::pack_weights(wt, s.m, k),
            })
        } else if super::conv_direct::supported(s) {
            Some(PackedWeights::Direct(super::conv_direct::pack_weights(wt, s.m, k)))
        } else {
            None
        }
    }
}

/// `conv2d` for inference plans: `packed` holds the weights prepared for the kernel the
/// plan chose (`PackedWeights::for_layer`); `residual` (the output's length), when given, is
/// added and becomes the output buffer; the sum is then clamped to `[lo, hi]`. The direct
/// and Winograd kernels do all of it as they store each value; the other paths run the
/// plain convolution, then one pass over the output.
#[allow(clippy::too_many_arguments)]
pub fn conv2d_fused(
    x: &[f32],
    wt: &[f32],
    packed: Option<&PackedWeights>,
    bias: Option<&[f32]>,
    s: &ConvShape,
    residual: Option<Vec<f32>>,
    lo: f32,
    hi: f32,
) -> Vec<f32> {
    use super::conv_direct::{best_simd, direct_conv_packed, supported, Epilogue};
    let epi = Epilogue {
        accumulate: residual.is_some(),
        lo,
        hi,
    };
    debug_assert!(residual.as_ref().is_none_or(|r| r.len() == s.output_len()));
    match packed {
        Some(PackedWeights::Winograd { transformed, .. })
            if super::conv_winograd::handles(s) && super::conv_winograd::worth(s) =>
        {
            let mut out = residual.unwrap_or_else(|| vec![0f32; s.output_len()]);
            super::conv_winograd::winograd_conv(x, transformed, bias, s, &mut out, epi);
            return out;
        }
        // Inputs smaller than the Winograd kernel pays on run the direct one (the Winograd
        // rule, 3x3 stride 1 with 64-128 channels, implies it handles the layer).
        Some(PackedWeights::Direct(p) | PackedWeights::Winograd { direct: p, .. }) if supported(s) => {
            let mut out = residual.unwrap_or_else(|| vec![0f32; s.output_len()]);
            direct_conv_packed(x, p, bias, s, &mut out, epi, best_simd());
            return out;
        }
        _ => {}
    }
    if super::depthwise::handles(s) {
        let mut out = residual.unwrap_or_else(|| vec![0f32; s.output_len()]);
        super::depthwise::conv_f32(x, wt, bias, s, &mut out, epi);
        return out;
    }
    let mut y = conv2d(x, wt, bias, s);
    match residual {
        Some(mut r) => {
            r.par_chunks_mut(1 << 14)
                .zip(y.par_chunks(1 << 14))
                .for_each(|(r, y)| r.iter_mut().zip(y).for_each(|(r, &v)| *r = epi.apply(v, *r)));
            r
        }
        None => {
            if !epi.is_none() {
                super::elementwise::unary_inplace(&mut y, |v| epi.apply(v, 0.0));
            }
            y
        }
    }
}

/// The im2col + GEMM path alone (for the kernel benchmark; `conv2d` picks the best path).
pub fn conv2d_im2col(x: &[f32], wt: &[f32], bias: Option<&[f32]>, s: &ConvShape) -> Vec<f32> {
    let mut out = vec![0f32; s.output_len()];
    conv2d_im2col_into(x, wt, bias, s, &mut out);
    out
}

fn conv2d_im2col_into(x: &[f32], wt: &[f32], bias: Option<&[f32]>, s: &ConvShape, out: &mut [f32]) {
    let plane_in = s.h * s.w;
    let plane_out = s.out[0] * s.out[1];
    let threads = rayon::current_num_threads();
    let img_out = s.m * plane_out;
    let grp_out = s.mg() * plane_out;
    let jobs = s.n * s.group;
    // Large products run one after the other, each split across threads (better cache use
    // than one image per thread); small ones run one per thread.
    let product = s.mg() * plane_out * s.ksize();
    if jobs >= threads && threads > 1 && product < (1 << 23) {
        // Enough independent (image, group) products to keep every thread busy.
        out.par_chunks_mut(grp_out)
            .enumerate()
            .for_each_init(Vec::new, |col, (idx, o)| {
                let (img, g) = (idx / s.group, idx % s.group);
                conv_group(
                    &x[img * s.c * plane_in..(img + 1) * s.c * plane_in],
                    wt,
                    bias,
                    s,
                    g,
                    o,
                    col,
                    1,
                );
            });
    } else {
        let mut col = Vec::new();
        for (img, o_img) in out.chunks_mut(img_out).enumerate() {
            for (g, o) in o_img.chunks_mut(grp_out).enumerate() {
                conv_group(
                    &x[img * s.c * plane_in..(img + 1) * s.c * plane_in],
                    wt,
                    bias,
                    s,
                    g,
                    o,
                    &mut col,
                    threads,
                );
            }
        }
    }
}

/// Direct seven-loop convolution: the reference `conv2d` is tested against.
pub fn conv2d_ref(x: &[f32], wt: &[f32], bias: Option<&[f32]>, s: &ConvShape) -> Vec<f32> {
    let mut out = vec![0f32; s.output_len()];
    let (cg, mg) = (s.cg(), s.mg());
    let [kh, kw] = s.win.kernel;
    let [oh, ow] = s.out;
    for n in 0..s.n {
        for m in 0..s.m {
            let g = m / mg;
            for y in 0..oh {
                for xo in 0..ow {
                    let mut acc = bias.map_or(0.0, |b| b[m]) as f64;
                    for c in 0..cg {
                        for i in 0..kh {
                            for j in 0..kw {
                                let iy =
                                    (y * s.win.strides[0] + i * s.win.dilations[0]) as isize - s.win.pads[0] as isize;
                                let ix =
                                    (xo * s.win.strides[1] + j * s.win.dilations[1]) as isize - s.win.pads[1] as isize;
                                if iy < 0 || ix < 0 || iy >= s.h as isize || ix >= s.w as isize {
                                    continue;
                                }
                                let xv = x[((n * s.c + g * cg + c) * s.h + iy as usize) * s.w + ix as usize];
                                let wv = wt[((m * cg + c) * kh + i) * kw + j];
                                acc += xv as f64 * wv as f64;
                            }
                        }
                    }
                    out[((n * s.m + m) * oh + y) * ow + xo] = acc as f32;
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testing::same_3x3;
    use proptest::prelude::*;

    fn fill(len: usize, seed: u64) -> Vec<f32> {
        let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (0..len)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((state >> 33) % 2001) as f32 / 1000.0 - 1.0
            })
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        #[test]
        fn fast_matches_reference(n in 1usize..3, cg in 1usize..4, mg in 1usize..4, group in 1usize..4,
                                  depthwise in any::<bool>(), h in 1usize..9, w in 1usize..9,
                                  kh in 1usize..4, kw in 1usize..4, sh in 1usize..3, sw in 1usize..3,
                                  dh in 1usize..3, dw in 1usize..3, pads in proptest::array::uniform4(0usize..3),
                                  with_bias in any::<bool>(), seed in 0u64..1000) {
            let (cg, mg) = if depthwise { (1, 1) } else { (cg, mg) };
            let win = Window2d { kernel: [kh, kw], strides: [sh, sw], dilations: [dh, dw], pads };
            let Some(out) = win.output_size(h, w, false) else { return Ok(()); };
            let s = ConvShape { n, c: cg * group, h, w, m: mg * group, group, win, out };
            let x = fill(n * s.c * h * w, seed);
            let wt = fill(s.m * cg * kh * kw, seed + 1);
            let b = fill(s.m, seed + 2);
            let bias = with_bias.then_some(b.as_slice());
            let fast = conv2d(&x, &wt, bias, &s);
            let slow = conv2d_ref(&x, &wt, bias, &s);
            for (a, r) in fast.iter().zip(&slow) {
                prop_assert!((a - r).abs() <= 1e-4 * (1.0 + r.abs()), "{a} vs {r}");
            }
        }
    }

    #[test]
    fn conv2d_runs_winograd_on_wide_layers_and_matches_reference() {
        let s = same_3x3(1, 64, 28, 29, 72);
        let x = fill(s.c * s.h * s.w, 3);
        let wt = fill(s.m * s.c * 9, 4);
        let b = fill(s.m, 5);
        assert!(super::super::conv_winograd::suits(&s, &wt));
        let fast = conv2d(&x, &wt, Some(&b), &s);
        let slow = conv2d_ref(&x, &wt, Some(&b), &s);
        for (a, r) in fast.iter().zip(&slow) {
            assert!((a - r).abs() <= 1e-4 * (1.0 + r.abs()), "{a} vs {r}");
        }
    }

    #[test]
    fn winograd_packing_runs_its_direct_panels_on_small_inputs() {
        // The plan packs a wide 3x3 layer for Winograd without knowing the input size; an
        // 8x8 input (too small for Winograd to pay) must run the packed direct panels, not
        // repack per call. Panels of other weights make the choice visible.
        let s = same_3x3(1, 64, 8, 8, 64);
        let x = fill(s.c * 64, 6);
        let (wt, other) = (fill(s.m * s.c * 9, 7), fill(s.m * s.c * 9, 8));
        let Some(PackedWeights::Winograd { transformed, .. }) = PackedWeights::for_layer(&wt, &s) else {
            panic!("a 64-channel 3x3 layer packs for Winograd");
        };
        let direct = super::super::conv_direct::pack_weights(&other, s.m, s.c * 9);
        let packed = PackedWeights::Winograd { transformed, direct };
        let got = conv2d_fused(&x, &wt, Some(&packed), None, &s, None, f32::NEG_INFINITY, f32::INFINITY);
        let want = conv2d_ref(&x, &other, None, &s);
        for (a, r) in got.iter().zip(&want) {
            assert!((a - r).abs() <= 1e-4 * (1.0 + r.abs()), "{a} vs {r}");
        }
    }

    #[test]
    fn output_size_ceil_mode_drops_window_starting_in_pad() {
        let win = Window2d {
            kernel: [2, 2],
            strides: [2, 2],
            dilations: [1, 1],
            pads: [0, 0, 1, 1],
        };
        assert_eq!(win.output_size(4, 4, true), Some([2, 2]));
        assert_eq!(win.output_size(5, 5, true), Some([3, 3]));
        assert_eq!(win.output_size(5, 5, false), Some([3, 3]));
    }
}
