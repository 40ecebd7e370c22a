//! Integer pooling: max and average on one scale (`QMaxPool`, `QAveragePool`, the global
//! forms), with the choice of the max-pooling kernel, and average pooling into other
//! parameters (`QAvgPool`, onnxruntime's arithmetic).

use super::{bounds_of, to_i32s};
use crate::error::{Error, Result};
use crate::kernels::pool::{padded_count, PoolKind};
use crate::kernels::qgemm::Kernel;
#[cfg(target_arch = "x86_64")]
use crate::kernels::qpool::max_pool_plane_avx2;
use crate::kernels::qpool::{max_pool_plane, Plane};
use crate::kernels::requant::{div_round_even, QElem};
use crate::ops::nn::{Pool, PoolPlan};
use crate::tensor::{DType, Tensor};
use rayon::prelude::*;

/// Integer pooling: max, or average with the mean rounded half to even (the Round node the
/// fake-quantized graph puts after it). Undilated max pooling runs by rows
/// (`max_pool_rows`), the rest through the reference loop.
pub(super) fn qpool(pool: &Pool, x: &Tensor) -> Result<Tensor> {
    let p = pool.plan(x.shape())?;
    if p.kind == PoolKind::Max && p.win.dilations == [1, 1] {
        max_pool_rows(&p, x, Kernel::detect())
    } else {
        qpool_ref(&p, x)
    }
}

/// Max pooling without dilation, one output row at a time (`kernels::qpool`): the element-wise max of the
/// window's input rows, then of each run of `kernel[1]` columns of that row, both over
/// contiguous slices (vectorized), then every `strides[1]`-th of those. Windows cut by the
/// padding take the max of what is left (padding never contributes); none left gives 0, as
/// in `qpool_ref`.
fn max_pool_rows(p: &PoolPlan, x: &Tensor, kernel: Kernel) -> Result<Tensor> {
    with_qelem!(x.dtype(), T => {
        let xv = x.as_slice::<T>()?;
        let plane = p.h * p.w;
        let plane_out = p.out[0] * p.out[1];
        let plane_geometry = Plane { h: p.h, w: p.w, win: p.win, out: p.out };
        let mut y = vec![T::from_i32(0); p.planes * plane_out];
        if plane_out > 0 {
            let scratch = || (vec![T::from_i32(0); p.w], vec![T::from_i32(0); p.w]);
            y.par_chunks_mut(plane_out).enumerate().for_each_init(scratch, |(rows, runs), (pi, o)| {
                let x = &xv[pi * plane..(pi + 1) * plane];
                match kernel {
                    Kernel::Reference => max_pool_plane(x, &plane_geometry, o, rows, runs),
                    // SAFETY: the SIMD kinds are only constructed after AVX2 was detected.
                    #[cfg(target_arch = "x86_64")]
                    Kernel::Avx2 | Kernel::AvxVnni | Kernel::Avx512Vnni => unsafe {
                        max_pool_plane_avx2(x, &plane_geometry, o, rows, runs)
                    },
                }
            });
        }
        Tensor::from_vec(p.shape.clone(), y)
    })
}

/// Reference integer pooling: every window element by element, with bounds checks.
fn qpool_ref(p: &PoolPlan, x: &Tensor) -> Result<Tensor> {
    with_qelem!(x.dtype(), T => {
        let xv = x.as_slice::<T>()?;
        let plane_out = p.out[0] * p.out[1];
        let mut y = vec![T::from_i32(0); p.planes * plane_out];
        let win = p.win;
        y.par_chunks_mut(plane_out.max(1)).enumerate().for_each(|(pi, o)| {
            let plane = &xv[pi * p.h * p.w..(pi + 1) * p.h * p.w];
            for oy in 0..p.out[0] {
                let y0 = (oy * win.strides[0]) as isize - win.pads[0] as isize;
                for ox in 0..p.out[1] {
                    let x0 = (ox * win.strides[1]) as isize - win.pads[1] as isize;
                    let (mut mx, mut sum, mut count) = (i32::MIN, 0i64, 0i64);
                    for i in 0..win.kernel[0] {
                        let iy = y0 + (i * win.dilations[0]) as isize;
                        if iy < 0 || iy >= p.h as isize {
                            continue;
                        }
                        for j in 0..win.kernel[1] {
                            let ix = x0 + (j * win.dilations[1]) as isize;
                            if ix < 0 || ix >= p.w as isize {
                                continue;
                            }
                            let v = plane[iy as usize * p.w + ix as usize].to_i32();
                            mx = mx.max(v);
                            sum += v as i64;
                            count += 1;
                        }
                    }
                    let v = match p.kind {
                        PoolKind::Max => if count == 0 { 0 } else { mx },
                        PoolKind::Avg { count_include_pad } => {
                            let n = if count_include_pad { padded_count(&win, p.h, p.w, y0, x0) as i64 } else { count };
                            div_round_even(sum, n.max(1)) as i32
                        }
                    };
                    o[oy * p.out[1] + ox] = T::from_i32(v);
                }
            }
        });
        Tensor::from_vec(p.shape.clone(), y)
    })
}

pub(super) fn qglobal_pool(max: bool, x: &Tensor) -> Result<Tensor> {
    let xs = x.shape();
    if xs.len() < 3 {
        return Err(Error::shape(format!(
            "global pooling needs an input [N, C, spatial...], got {xs:?}"
        )));
    }
    let planes = xs[0] * xs[1];
    let plane: usize = xs[2..].iter().product();
    let mut shape = vec![xs[0], xs[1]];
    shape.extend(std::iter::repeat_n(1, xs.len() - 2));
    with_qelem!(x.dtype(), T => {
        let xv = x.as_slice::<T>()?;
        let y: Vec<T> = (0..planes)
            .into_par_iter()
            .map(|p| {
                let s = &xv[p * plane..(p + 1) * plane];
                let v = if max {
                    s.iter().map(|v| v.to_i32()).max().unwrap_or(0)
                } else {
                    div_round_even(s.iter().map(|v| v.to_i32() as i64).sum(), plane.max(1) as i64) as i32
                };
                T::from_i32(v)
            })
            .collect();
        Tensor::from_vec(shape.clone(), y)
    })
}

/// Average pooling of a quantized tensor into other parameters (QLinearAveragePool,
/// QLinearGlobalAveragePool, DequantizeLinear -> AveragePool -> QuantizeLinear), in the
/// arithmetic of onnxruntime's kernels so that the integers match them: global pooling sums
/// `x - x_zero` exactly and requantizes the sum by `x_scale / (y_scale * count)` (f32
/// product, rounded half to even); windowed pooling sums the dequantized values
/// `x_scale * (x - x_zero)` in f32 in window order, divides by the count and rounds
/// `mean / y_scale + y_zero` half to even.
#[derive(Debug, Clone, PartialEq)]
pub struct QAvgPool {
    /// `None`: global pooling.
    pub pool: Option<Pool>,
    pub x_scale: f32,
    pub x_zero: i32,
    pub y_scale: f32,
    pub y_zero: i32,
    pub out: DType,
}

impl QAvgPool {
    /// Global pooling: the exact sum of `x - x_zero` over `count` values.
    fn quantize_sum(&self, sum: i64, count: usize) -> i32 {
        let (lo, hi) = bounds_of(self.out).unwrap_or((-128, 127));
        let f = self.x_scale / (self.y_scale * count as f32);
        let r = ((sum as f32) * f).round_ties_even();
        ((r as i32).saturating_add(self.y_zero)).clamp(lo, hi)
    }

    /// Windowed pooling: the f32 sum of the dequantized values over `count` values.
    fn quantize_real_sum(&self, sum: f32, count: usize) -> i32 {
        let (lo, hi) = bounds_of(self.out).unwrap_or((-128, 127));
        let mean = sum / count.max(1) as f32;
        let r = (mean / self.y_scale + self.y_zero as f32).round_ties_even();
        (r as i32).clamp(lo, hi)
    }

    pub fn eval(&self, x: &Tensor) -> Result<Tensor> {
        let xv = to_i32s(x)?;
        let zx = self.x_zero;
        let (shape, y): (Vec<usize>, Vec<i32>) = match &self.pool {
            None => {
                let xs = x.shape();
                if xs.len() < 3 {
                    return Err(Error::shape(format!(
                        "global pooling needs an input [N, C, spatial...], got {xs:?}"
                    )));
                }
                let plane: usize = xs[2..].iter().product();
                let mut shape = vec![xs[0], xs[1]];
                shape.extend(std::iter::repeat_n(1, xs.len() - 2));
                let y = (0..xs[0] * xs[1])
                    .into_par_iter()
                    .map(|p| {
                        let sum: i64 = xv[p * plane..(p + 1) * plane].iter().map(|&v| (v - zx) as i64).sum();
                        self.quantize_sum(sum, plane)
                    })
                    .collect();
                (shape, y)
            }
            Some(pool) => {
                let p = pool.plan(x.shape())?;
                let win = p.win;
                let plane_out = p.out[0] * p.out[1];
                let mut y = vec![0i32; p.planes * plane_out];
                y.par_chunks_mut(plane_out.max(1)).enumerate().for_each(|(pi, o)| {
                    let plane = &xv[pi * p.h * p.w..(pi + 1) * p.h * p.w];
                    for oy in 0..p.out[0] {
                        let y0 = (oy * win.strides[0]) as isize - win.pads[0] as isize;
                        for ox in 0..p.out[1] {
                            let x0 = (ox * win.strides[1]) as isize - win.pads[1] as isize;
                            let (mut sum, mut count) = (0f32, 0usize);
                            for i in 0..win.kernel[0] {
                                let iy = y0 + (i * win.dilations[0]) as isize;
                                if iy < 0 || iy >= p.h as isize {
                                    continue;
                                }
                                for j in 0..win.kernel[1] {
                                    let ix = x0 + (j * win.dilations[1]) as isize;
                                    if ix >= 0 && ix < p.w as isize {
                                        let v = plane[iy as usize * p.w + ix as usize] - zx;
                                        sum += self.x_scale * v as f32;
                                        count += 1;
                                    }
                                }
                            }
                            // Padding counts as the real zero (the zero point) when included.
                            if pool.count_include_pad {
                                count = padded_count(&win, p.h, p.w, y0, x0);
                            }
                            o[oy * p.out[1] + ox] = self.quantize_real_sum(sum, count);
                        }
                    }
                });
                (p.shape.clone(), y)
            }
        };
        with_qelem!(self.out, O => Tensor::from_vec(shape.clone(), y.iter().map(|&v| O::from_i32(v)).collect::<Vec<O>>()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::Padding;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        /// Max pooling by rows (every kernel this CPU runs) against the reference loop: 1-D
        /// and 2-D, kernels 1-4, strides 1-3, pads up to 4 (windows partly or wholly in the
        /// padding), ceil mode, i8 and u8 with the container extremes over-represented.
        #[test]
        fn max_pool_rows_matches_the_reference(
            n in 1usize..3, c in 1usize..4, h in 0usize..12, w in 0usize..40, kernel in (1usize..5, 1usize..5),
            strides in (1usize..4, 1usize..4), pads in proptest::array::uniform4(0usize..5), ceil_mode in any::<bool>(),
            one_d in any::<bool>(), unsigned in any::<bool>(), seed in any::<u64>(),
        ) {
            let mut st = seed | 1;
            let mut next = move || { st ^= st << 13; st ^= st >> 7; st ^= st << 17; st };
            let (min, max) = if unsigned { (0u8, 255u8) } else { (0x80, 0x7f) };
            let h = if one_d { 1 } else { h };
            let bytes: Vec<u8> = (0..n * c * h * w)
                .map(|_| match next() % 4 { 0 => min, 1 => max, _ => next() as u8 })
                .collect();
            let (shape, kernel_shape, strides, pads) = if one_d {
                (vec![n, c, w], vec![kernel.1], vec![strides.1], vec![pads[1], pads[3]])
            } else {
                (vec![n, c, h, w], vec![kernel.0, kernel.1], vec![strides.0, strides.1], pads.to_vec())
            };
            let x = if unsigned {
                Tensor::from_vec(shape.clone(), bytes).unwrap()
            } else {
                Tensor::from_vec(shape.clone(), bytes.into_iter().map(|b| b as i8).collect::<Vec<_>>()).unwrap()
            };
            let pool = Pool {
                max: true, kernel_shape, strides: Some(strides), dilations: None,
                padding: Padding::Explicit(pads), ceil_mode, count_include_pad: false,
            };
            let plan = pool.plan(&shape);
            prop_assume!(plan.is_ok());
            let plan = plan.unwrap();
            let want = qpool_ref(&plan, &x).unwrap();
            for kernel in Kernel::available() {
                let got = max_pool_rows(&plan, &x, kernel).unwrap();
                prop_assert_eq!(got.shape(), want.shape());
                prop_assert_eq!(got.to_f32_vec(), want.to_f32_vec(), "{:?}", kernel);
            }
        }
    }
}
