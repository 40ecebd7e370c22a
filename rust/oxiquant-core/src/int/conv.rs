//! Quantized convolution (`QConv`) and the choice of its kernel: the byte-product kernel when
//! it is exact on the input, else the packed product for 1x1 convolutions, else the direct
//! pair kernel (`kernels::qconv_u8s8`, `kernels::qgemm`, `kernels::qconv_direct`).

use super::{accumulator_bound, filled_chunks, weights_as_i8, Requant};
use crate::error::{Error, Result};
use crate::kernels::conv::ConvShape;
use crate::kernels::qconv_u8s8::{self, ByteInput, ByteOperand, QuadImage, QuadWeights, RunPlan};
use crate::kernels::qgemm::{self, Kernel, PackedA};
use crate::kernels::requant::{QElem, RowConsts, EXACT_F32_BOUND};
use crate::kernels::{depthwise, qconv_direct};
use crate::ops::nn::Conv;
use crate::tensor::{DType, Tensor};

/// Quantized convolution: integer weights and bias, exact i32 accumulation over the input
/// minus its zero point (so that padding is the zero point, the input's real zero), and the
/// requantization of the Scaling node that followed the float Conv as its epilogue.
#[derive(Debug, Clone, PartialEq)]
pub struct QConv {
    pub conv: Conv,
    pub weight_shape: Vec<usize>,
    /// The weights minus their zero point (kept for export): i8 values, or uint8 ones
    /// centered on an arbitrary zero point, in [-255, 255].
    pub weight: Vec<i16>,
    /// Zero point of the input (0 for oxiquant's own models).
    pub x_zero: i32,
    /// One packed weight matrix per group (in the direct kernel's `k` order).
    packed: Vec<PackedA>,
    /// The same for the byte-product kernel, when the weights fit i8 (oxiquant's own
    /// models; uint8 weights centered on a zero point do not).
    quads: Option<Vec<QuadWeights>>,
    pub bias: Vec<i32>,
    pub requant: Requant,
    /// A bound on every `|acc + bias|` (from the weights' magnitudes and the widest centered
    /// 8-bit input): picks the fast requantization when it is exact.
    acc_bound: i64,
}

impl QConv {
    /// `weight` holds the weights minus their zero point; `x_zero` is the input's zero point.
    pub fn new(
        conv: Conv,
        weight: &[i16],
        weight_shape: Vec<usize>,
        bias: Vec<i32>,
        requant: Requant,
        x_zero: i32,
    ) -> Result<QConv> {
        let m = *weight_shape.first().unwrap_or(&0);
        let g = conv.group;
        if weight_shape.len() < 3 || m == 0 || !m.is_multiple_of(g) || bias.len() != m {
            return Err(Error::shape(format!(
                "quantized Conv: weight {weight_shape:?} with group {g} and {} bias values",
                bias.len()
            )));
        }
        let k: usize = weight_shape[1..].iter().product();
        if weight.len() != m * k {
            return Err(Error::shape(format!(
                "quantized Conv: {} weights for shape {weight_shape:?}",
                weight.len()
            )));
        }
        let (kh, kw) = match weight_shape[2..] {
            [kw] => (1, kw),
            [kh, kw] => (kh, kw),
            _ => {
                return Err(Error::shape(format!(
                    "quantized Conv: weight {weight_shape:?} is not 1-D or 2-D"
                )))
            }
        };
        let (mg, cg) = (m / g, weight_shape[1]);
        let packed = (0..g)
            .map(|gi| qconv_direct::pack_weights(&weight[gi * mg * k..(gi + 1) * mg * k], mg, cg, kh, kw))
            .collect();
        let quads = weights_as_i8(weight, "").ok().map(|w8| {
            (0..g)
                .map(|gi| QuadWeights::new(&w8[gi * mg * k..(gi + 1) * mg * k], mg, cg, kh, kw))
                .collect()
        });
        let acc_bound = accumulator_bound(weight, m, &bias, x_zero, "Conv")?;
        Ok(QConv {
            conv,
            weight_shape,
            weight: weight.to_vec(),
            x_zero,
            packed,
            quads,
            bias,
            requant,
            acc_bound,
        })
    }

    /// The weights as i8, for the QOperator export of oxiquant's own models.
    pub fn weight_i8(&self) -> Result<Vec<i8>> {
        weights_as_i8(&self.weight, "quantized Conv")
    }

    pub fn eval(&self, x: &Tensor) -> Result<Tensor> {
        self.eval_with(x, Kernel::detect())
    }

    /// `eval` with a given kernel family (one of `Kernel::available()`: benchmarks and tests
    /// compare them).
    pub fn eval_with(&self, x: &Tensor, kernel: Kernel) -> Result<Tensor> {
        let s = self.conv.geometry(x.shape(), &self.weight_shape)?;
        let mut shape = vec![s.n, s.m];
        if x.rank() == 3 {
            shape.push(s.out[1]);
        } else {
            shape.extend_from_slice(&s.out);
        }
        with_qelem!(x.dtype(), T => {
            let xv = x.as_slice::<T>()?;
            with_qelem!(self.requant.out, O => {
                let y = self.run::<T, O>(xv, &s, kernel);
                Tensor::from_vec(shape, y)
            })
        })
    }

    /// The byte-product kernel's plan for group `g` of one image, given how its input becomes
    /// bytes (measured by the caller), when it is exact on this input (`qconv_u8s8`): its
    /// weights, the input's bytes, where the runs end, and the biases minus the byte offset's
    /// contribution.
    fn byte_plan(
        &self,
        g: usize,
        input: Option<ByteInput>,
        kernel: Kernel,
    ) -> Option<(&QuadWeights, ByteInput, &RunPlan, Vec<i32>)> {
        let q = &self.quads.as_ref()?[g];
        let input = input?;
        let run = q.plan(kernel, input.amax)?;
        let c0 = g * q.m;
        let shift = input.shift() as i64;
        let bias = q
            .row_sums
            .iter()
            .zip(&self.bias[c0..c0 + q.m])
            .map(|(&sum, &b)| i32::try_from(b as i64 - shift * sum as i64).ok())
            .collect::<Option<Vec<i32>>>()?;
        Some((q, input, run, bias))
    }

    /// The fused requantization of output channels `c0..c0 + bias.len()` (one group), with
    /// `bias` the channels' integer biases (shifted by the byte kernels' offset, or not).
    fn rows_requant(&self, c0: usize, bias: Vec<i32>) -> qconv_u8s8::RowsRequant {
        let rq = &self.requant;
        qconv_u8s8::RowsRequant {
            factor: (c0..c0 + bias.len())
                .map(|c| rq.factor[if rq.factor.len() == 1 { 0 } else { c }])
                .collect(),
            bias,
            out: rq.row_out(),
            small_sums: self.acc_bound < EXACT_F32_BOUND,
        }
    }

    /// Depthwise layers (`depthwise::handles`): one plane per task, the exact i32 sums of
    /// `depthwise::plane`, then the same requantization as the other kernels.
    fn run_depthwise<T: QElem + Ord, O: QElem>(&self, x: &[T], s: &ConvShape, kernel: Kernel) -> Vec<O> {
        use rayon::prelude::*;
        let g = depthwise::Geometry::new(s);
        let (plane_in, npix, ow) = (s.h * s.w, s.out[0] * s.out[1], s.out[1]);
        let (mg, ks) = (s.m / s.group, s.win.kernel[0] * s.win.kernel[1]);
        let len = s.n * s.m * npix;
        let mut y: Vec<O> = Vec::with_capacity(len);
        if npix > 0 {
            let path = depthwise::Path::for_int(kernel);
            #[cfg(target_arch = "x86_64")]
            if path == depthwise::Path::Avx2 && self.acc_bound < self.requant.rounding.fast_bound() {
                self.run_depthwise_avx2::<T, O>(x, s, &g, &mut y);
                // SAFETY: `run_depthwise_avx2` wrote each of the `len` elements.
                unsafe { y.set_len(len) };
                return y;
            }
            let w32: Vec<i32> = self.weight.iter().map(|&v| v as i32).collect();
            let zero = self.x_zero as i16;
            y.spare_capacity_mut()[..len]
                .par_chunks_mut(npix)
                .enumerate()
                .for_each_init(depthwise::Scratch::default, |scratch, (idx, out)| {
                    let (img, m) = (idx / s.m, idx % s.m);
                    let xi = &x[(img * s.c + m / mg) * plane_in..][..plane_in];
                    let dst = qconv_u8s8::zeroed(out);
                    let widen = |v: T| v.widen() - zero;
                    let rq = &self.requant;
                    let consts = (self.acc_bound < rq.rounding.fast_bound()).then(|| {
                        let f = rq.factor[if rq.factor.len() == 1 { 0 } else { m }];
                        RowConsts::new::<O>(self.bias[m], f, rq.row_out(), self.acc_bound < EXACT_F32_BOUND)
                    });
                    depthwise::plane(
                        &g,
                        xi,
                        widen,
                        &w32[m * ks..(m + 1) * ks],
                        0,
                        path,
                        scratch,
                        |row, acc| {
                            let d = &mut dst[row * ow..(row + 1) * ow];
                            match &consts {
                                Some(rc) => rc.apply(acc, d),
                                None => self.requant.row(m, acc, self.bias[m], self.acc_bound, d),
                            }
                        },
                    );
                });
        }
        // SAFETY: the chunks tile the `len` elements and `zeroed` wrote each of them.
        unsafe { y.set_len(len) };
        y
    }

    /// `run_depthwise` on AVX2 when the sums stay under the requantization's fast bound:
    /// tap pairs through `vpmaddwd`, requantized in registers (`plane_requant_avx2`).
    /// Writes all `n * m * npix` elements of `y`'s spare capacity.
    #[cfg(target_arch = "x86_64")]
    fn run_depthwise_avx2<T: QElem + Ord, O: QElem>(
        &self,
        x: &[T],
        s: &ConvShape,
        g: &depthwise::Geometry,
        y: &mut Vec<O>,
    ) {
        use crate::kernels::requant::RowAvx2;
        use rayon::prelude::*;
        let (plane_in, npix) = (s.h * s.w, s.out[0] * s.out[1]);
        let (mg, ks) = (s.m / s.group, s.win.kernel[0] * s.win.kernel[1]);
        let len = s.n * s.m * npix;
        let taps = g.tap_pairs();
        let starts: Vec<usize> = taps.iter().map(|t| t.0).collect();
        let rq = &self.requant;
        let small = self.acc_bound < EXACT_F32_BOUND;
        let zero = self.x_zero as i16;
        // Each plane's constants are made in its task: at batch 1 the layers are short, and
        // setting up all channels' first, serially, was 3 % of the EfficientNet-style net.
        y.spare_capacity_mut()[..len]
            .par_chunks_mut(npix)
            .enumerate()
            .for_each_init(
                || (depthwise::Scratch::default(), Vec::with_capacity(taps.len())),
                |(scratch, words), (idx, out)| {
                    let (img, m) = (idx / s.m, idx % s.m);
                    let xi = &x[(img * s.c + m / mg) * plane_in..][..plane_in];
                    // `vpmaddwd` words of the channel's pairs: `w_a` low, `w_b` (or 0) high.
                    let w = &self.weight[m * ks..(m + 1) * ks];
                    words.clear();
                    words.extend(
                        taps.iter()
                            .map(|&(_, a, b)| (b.map_or(0, |b| w[b] as i32) << 16) | (w[a] as u16 as i32)),
                    );
                    let f = rq.factor[if rq.factor.len() == 1 { 0 } else { m }];
                    // SAFETY: AVX2 (the caller's check, `Path::Avx2`); `out` is this plane's
                    // `oh * ow` elements of one byte each (`O` is i8 or u8).
                    unsafe {
                        let row =
                            RowAvx2::new(self.bias[m], f as f64, rq.row_out(), O::UNSIGNED).with_small_sums_if(small);
                        depthwise::plane_requant_avx2(
                            g,
                            xi,
                            |v: T| v.widen() - zero,
                            &starts,
                            words,
                            &row,
                            scratch,
                            out.as_mut_ptr() as *mut u8,
                        )
                    }
                },
            );
    }

    fn run<T: QElem + Ord, O: QElem>(&self, x: &[T], s: &ConvShape, kernel: Kernel) -> Vec<O> {
        if depthwise::handles(s) {
            return self.run_depthwise(x, s, kernel);
        }
        let (cg, mg) = (s.c / s.group, s.m / s.group);
        let npix = s.out[0] * s.out[1];
        let img_in = s.c * s.h * s.w;
        let img_out = s.m * npix;
        if img_out == 0 {
            return vec![O::from_i32(0); s.n * img_out];
        }
        // 1x1 convolutions are plain matrix products: the packed-panel product reads its
        // operand contiguously, where the direct kernel would stride over every channel
        // plane for each tile. Strided ones too, over their input's subsampled pixels
        // (benches/RESULTS.md, "Measured design choices (integer engine)").
        let pointwise = s.win.kernel == [1, 1] && s.win.pads == [0; 4];
        let strided = s.win.strides != [1, 1];
        let zero = self.x_zero as i16;
        let one_image = |(img, out): (usize, &mut [std::mem::MaybeUninit<O>]), parallel: bool| {
            let mut pairs = qconv_direct::PairImage::new();
            let mut quads = QuadImage::new();
            let mut panels: Vec<i16> = Vec::new();
            let mut byte_panels: Vec<u8> = Vec::new();
            let mut picked: Vec<T> = Vec::new();
            for g in 0..s.group {
                let mut xg = &x[img * img_in + g * cg * s.h * s.w..img * img_in + (g + 1) * cg * s.h * s.w];
                if pointwise && strided {
                    subsample(xg, cg, s, &mut picked);
                    xg = &picked;
                }
                let c0 = g * mg;
                // Every branch below initializes all of it: `conv_requant` writes each
                // output (or zeroes first), the others start from `zeroed`.
                let dst = &mut out[c0 * npix..(c0 + mg) * npix];
                let epilogue = |row: usize, acc: &[i32], dst: &mut [O]| {
                    self.requant
                        .row(c0 + row, acc, self.bias[c0 + row], self.acc_bound, dst)
                };
                // A 1x1 input is measured while it is packed; the other kernels measure
                // theirs first (`quads.fill` needs the offset).
                let input = match (&self.quads, pointwise) {
                    (None, _) => None,
                    (Some(_), true) => qconv_u8s8::pack_panels(xg, cg, npix, self.x_zero, &mut byte_panels, parallel),
                    (Some(_), false) => ByteInput::measure(xg, self.x_zero),
                };
                if let Some((q, input, run, bias)) = self.byte_plan(g, input, kernel) {
                    let operand = if pointwise {
                        ByteOperand::Panels {
                            buf: &byte_panels,
                            npix,
                        }
                    } else {
                        quads.fill(xg, cg, input, s);
                        ByteOperand::Image { img: &quads, s }
                    };
                    if self.acc_bound < self.requant.rounding.fast_bound() {
                        let rows = self.rows_requant(c0, bias);
                        qconv_u8s8::conv_requant(q, &operand, run, dst, parallel, kernel, &rows);
                    } else {
                        let dst = qconv_u8s8::zeroed(dst);
                        qconv_u8s8::conv(q, &operand, run, dst, parallel, kernel, |row, acc, dst| {
                            self.requant.row(c0 + row, acc, bias[row], self.acc_bound, dst)
                        });
                    }
                } else if pointwise {
                    qgemm::pack_b_rows(xg, cg, npix, zero, &mut panels, parallel);
                    if self.acc_bound < self.requant.rounding.fast_bound() {
                        let rows = self.rows_requant(c0, self.bias[c0..c0 + mg].to_vec());
                        qgemm::qgemm_requant(kernel, &self.packed[g], &panels, npix, dst, parallel, &rows);
                    } else {
                        let dst = qconv_u8s8::zeroed(dst);
                        qgemm::qgemm(
                            kernel,
                            &self.packed[g],
                            &panels,
                            npix,
                            dst,
                            parallel,
                            |row, _, acc, d| epilogue(row, acc, d),
                        );
                    }
                } else {
                    pairs.fill(xg, cg, zero, s);
                    let dst = qconv_u8s8::zeroed(dst);
                    qconv_direct::conv(&self.packed[g], &pairs, s, dst, parallel, kernel, epilogue);
                }
            }
        };
        // The groups' outputs tile the image's (`geometry` checks `m % group == 0`).
        assert_eq!(mg * s.group, s.m, "qconv: groups do not tile the output channels");
        // One image: its kernels split the work; several: one image per task.
        let parallel_in_image = s.n == 1;
        // SAFETY: `one_image` initializes every element of its chunk (the groups' outputs
        // tile it, and each group's branch initializes all of its outputs).
        unsafe { filled_chunks(s.n * img_out, img_out, |i, out| one_image((i, out), parallel_in_image)) }
    }
}

/// The pixels a strided 1x1 convolution reads, `[cg][out_h][out_w]`, into `dst`.
fn subsample<T: Copy>(x: &[T], cg: usize, s: &ConvShape, dst: &mut Vec<T>) {
    let ([oh, ow], [sh, sw]) = (s.out, s.win.strides);
    dst.clear();
    for plane in x.chunks_exact(s.h * s.w).take(cg) {
        for oy in 0..oh {
            let row = &plane[oy * sh * s.w..];
            dst.extend((0..ow).map(|ox| row[ox * sw]));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::conv::Window2d;
    use crate::ops::Padding;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(40))]
        /// Both convolution paths (direct, and packed product for 1x1), grouped or not,
        /// against the definition: i64 sums, then the integer-only requantization.
        #[test]
        fn qconv_matches_the_definition(
            n in 1usize..3, cg in 1usize..5, mg in 1usize..8, group in 1usize..3, hw in 1usize..7,
            k in prop_oneof![Just(1usize), Just(3)], pad in 0usize..2, stride in 1usize..3,
            seed in any::<u64>(), unsigned in any::<bool>(), narrow in any::<bool>(),
        ) {
            let pad = if k == 1 { 0 } else { pad };
            prop_assume!(hw + 2 * pad >= k);
            let (c, m) = (cg * group, mg * group);
            let mut st = seed | 1;
            let mut next = || { st ^= st << 13; st ^= st >> 7; st ^= st << 17; st };
            // Narrow weights leave the byte-product kernel a run plan; full-range ones take
            // the pair kernel on most inputs.
            let w: Vec<i8> = (0..m * cg * k * k).map(|_| if narrow { next() as i8 / 16 } else { next() as i8 }).collect();
            let bias: Vec<i32> = (0..m).map(|_| (next() % 2001) as i32 - 1000).collect();
            let conv = Conv { kernel_shape: None, strides: Some(vec![stride; 2]), dilations: None, padding: Padding::Explicit(vec![pad; 4]), group };
            let rq = Requant::new(vec![0.0137], -128, 127).unwrap();
            let w16: Vec<i16> = w.iter().map(|&v| v as i16).collect();
            let q = QConv::new(conv, &w16, vec![m, cg, k, k], bias.clone(), rq.clone(), 0).unwrap();
            let x8: Vec<u8> = (0..n * c * hw * hw).map(|_| next() as u8).collect();
            let x = if unsigned {
                Tensor::from_vec(vec![n, c, hw, hw], x8.clone()).unwrap()
            } else {
                Tensor::from_vec(vec![n, c, hw, hw], x8.iter().map(|&v| v as i8).collect::<Vec<_>>()).unwrap()
            };
            let got = q.eval(&x).unwrap();
            let got = got.as_slice::<i8>().unwrap();
            let win = Window2d { kernel: [k, k], strides: [stride; 2], dilations: [1, 1], pads: [pad; 4] };
            let out = win.output_size(hw, hw, false).unwrap();
            let s = ConvShape { n: 1, c: cg, h: hw, w: hw, m: mg, group: 1, win, out };
            let npix = out[0] * out[1];
            for img in 0..n {
                for g in 0..group {
                    let xs: Vec<i16> = (0..cg * hw * hw)
                        .map(|i| {
                            let v = x8[img * c * hw * hw + g * cg * hw * hw + i];
                            if unsigned { v as i16 } else { v as i8 as i16 }
                        })
                        .collect();
                    let acc = qconv_direct::conv_ref(&xs, &w[g * mg * cg * k * k..(g + 1) * mg * cg * k * k], &s, cg, mg);
                    for o in 0..mg {
                        for p in 0..npix {
                            let ch = g * mg + o;
                            let want = rq.scale[0].apply(acc[o * npix + p] + bias[ch] as i64).clamp(-128, 127) as i8;
                            prop_assert_eq!(got[(img * m + ch) * npix + p], want);
                        }
                    }
                }
            }
        }
    }
}
