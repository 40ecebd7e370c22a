//! Max and average pooling over NCHW planes (1-D runs as 2-D with height 1).

use super::conv::Window2d;
use rayon::prelude::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoolKind {
    Max,
    /// Average; `count_include_pad` divides by the window clipped to the padded input
    /// instead of the real input (ONNX semantics).
    Avg {
        count_include_pad: bool,
    },
}

/// Pools `planes` planes of `h x w` into planes of `out[0] x out[1]`.
pub fn pool2d(
    x: &[f32],
    planes: usize,
    h: usize,
    w: usize,
    win: &Window2d,
    out: [usize; 2],
    kind: PoolKind,
) -> Vec<f32> {
    let plane_out = out[0] * out[1];
    let mut y = vec![0f32; planes * plane_out];
    y.par_chunks_mut(plane_out.max(1)).enumerate().for_each(|(p, o)| {
        let plane = &x[p * h * w..(p + 1) * h * w];
        match kind {
            PoolKind::Max => max_plane(plane, h, w, win, out, o),
            PoolKind::Avg { count_include_pad } => avg_plane(plane, h, w, win, out, count_include_pad, o),
        }
    });
    y
}

/// `max(m, v)` as the pooling sees it: a NaN, once met, stays.
#[inline(always)]
fn nan_max(m: f32, v: f32) -> f32 {
    if v > m || v.is_nan() {
        v
    } else {
        m
    }
}

/// Max pooling of one plane in two passes per output row: the element-wise max of the
/// window's input rows (contiguous, so it vectorizes), then the max over each window's
/// columns of that row, faster than the one-output-at-a-time loop below
/// (benches/RESULTS.md, "Measured design choices (fp32)").
fn max_plane(x: &[f32], h: usize, w: usize, win: &Window2d, out: [usize; 2], o: &mut [f32]) {
    let [kh, kw] = win.kernel;
    let pl = win.pads[1];
    // The rows' max with -inf columns around it: pads on the left, and on the right as far
    // as the last window reaches (ceil mode can reach past the end pad), so that the
    // column pass needs no bounds checks.
    let reach = out[1].saturating_sub(1) * win.strides[1] + kw.saturating_sub(1) * win.dilations[1] + 1;
    let mut rows_max = vec![f32::NEG_INFINITY; reach.max(pl + w)];
    for (oy, orow) in o.chunks_exact_mut(out[1].max(1)).enumerate().take(out[0]) {
        let span = &mut rows_max[pl..pl + w];
        span.fill(f32::NEG_INFINITY);
        for i in 0..kh {
            let iy = (oy * win.strides[0] + i * win.dilations[0]).checked_sub(win.pads[0]);
            let Some(row) = iy.filter(|&y| y < h).map(|y| &x[y * w..(y + 1) * w]) else {
                continue;
            };
            for (m, &v) in span.iter_mut().zip(row) {
                *m = nan_max(*m, v);
            }
        }
        for (ox, d) in orow.iter_mut().enumerate() {
            let first = ox * win.strides[1];
            let taps = (0..kw).map(|j| rows_max[first + j * win.dilations[1]]);
            *d = taps.fold(f32::NEG_INFINITY, nan_max);
        }
    }
}

/// Average pooling of one plane, one output at a time (too small a share of ResNet-50 to be
/// worth the two-pass form of `max_plane`: benches/RESULTS.md, "Measured design choices (fp32)").
fn avg_plane(x: &[f32], h: usize, w: usize, win: &Window2d, out: [usize; 2], count_include_pad: bool, o: &mut [f32]) {
    let (h_i, w_i) = (h as isize, w as isize);
    for oy in 0..out[0] {
        let y0 = (oy * win.strides[0]) as isize - win.pads[0] as isize;
        for ox in 0..out[1] {
            let x0 = (ox * win.strides[1]) as isize - win.pads[1] as isize;
            let mut sum = 0f32;
            let mut count = 0usize;
            for i in 0..win.kernel[0] {
                let iy = y0 + (i * win.dilations[0]) as isize;
                if iy < 0 || iy >= h_i {
                    continue;
                }
                let row = &x[iy as usize * w..(iy as usize + 1) * w];
                for j in 0..win.kernel[1] {
                    let ix = x0 + (j * win.dilations[1]) as isize;
                    if ix < 0 || ix >= w_i {
                        continue;
                    }
                    sum += row[ix as usize];
                    count += 1;
                }
            }
            let divisor = if count_include_pad {
                padded_count(win, h, w, y0, x0).max(1)
            } else {
                count
            };
            o[oy * out[1] + ox] = if divisor == 0 { 0.0 } else { sum / divisor as f32 };
        }
    }
}

/// Size of the window at (`y0`, `x0`) clipped to the padded extent
/// `[-pad_begin, size + pad_end)`: the divisor of `count_include_pad` averaging.
pub fn padded_count(win: &Window2d, h: usize, w: usize, y0: isize, x0: isize) -> usize {
    let ext = |start: isize, k: usize, d: usize, size: usize, pb: usize, pe: usize| {
        let lo = -(pb as isize);
        let hi = (size + pe) as isize;
        (0..k)
            .filter(|&t| {
                let p = start + (t * d) as isize;
                p >= lo && p < hi
            })
            .count()
    };
    ext(y0, win.kernel[0], win.dilations[0], h, win.pads[0], win.pads[2])
        * ext(x0, win.kernel[1], win.dilations[1], w, win.pads[1], win.pads[3])
}

/// Mean (or max) over each whole plane.
pub fn global_pool(x: &[f32], planes: usize, plane: usize, max: bool) -> Vec<f32> {
    (0..planes)
        .into_par_iter()
        .map(|p| {
            let s = &x[p * plane..(p + 1) * plane];
            if max {
                s.iter().copied().fold(f32::NEG_INFINITY, f32::max)
            } else {
                (s.iter().map(|&v| v as f64).sum::<f64>() / plane.max(1) as f64) as f32
            }
        })
        .collect()
}

/// Reference pooling: one output at a time, in f64, straight from the definition.
pub fn pool2d_ref(
    x: &[f32],
    planes: usize,
    h: usize,
    w: usize,
    win: &Window2d,
    out: [usize; 2],
    kind: PoolKind,
) -> Vec<f32> {
    let mut y = Vec::with_capacity(planes * out[0] * out[1]);
    for p in 0..planes {
        for oy in 0..out[0] {
            for ox in 0..out[1] {
                let mut vals = Vec::new();
                let mut padded = 0usize;
                for i in 0..win.kernel[0] {
                    for j in 0..win.kernel[1] {
                        let iy = (oy * win.strides[0] + i * win.dilations[0]) as isize - win.pads[0] as isize;
                        let ix = (ox * win.strides[1] + j * win.dilations[1]) as isize - win.pads[1] as isize;
                        let in_padded = iy >= -(win.pads[0] as isize)
                            && iy < (h + win.pads[2]) as isize
                            && ix >= -(win.pads[1] as isize)
                            && ix < (w + win.pads[3]) as isize;
                        if in_padded {
                            padded += 1;
                        }
                        if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w {
                            vals.push(x[(p * h + iy as usize) * w + ix as usize] as f64);
                        }
                    }
                }
                let v = match kind {
                    PoolKind::Max => vals.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                    PoolKind::Avg { count_include_pad } => {
                        let n = if count_include_pad { padded } else { vals.len() };
                        if n == 0 {
                            0.0
                        } else {
                            vals.iter().sum::<f64>() / n as f64
                        }
                    }
                };
                y.push(v as f32);
            }
        }
    }
    y
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn fast_matches_reference(planes in 1usize..4, h in 1usize..9, w in 1usize..9, kh in 1usize..4, kw in 1usize..4,
                                  sh in 1usize..3, sw in 1usize..3, dh in 1usize..3, dw in 1usize..3,
                                  pads in proptest::array::uniform4(0usize..2), ceil in any::<bool>(),
                                  kind in 0u8..3, seed in 0u32..1000) {
            // ONNX requires pads smaller than the kernel.
            let pads = [pads[0].min(kh - 1), pads[1].min(kw - 1), pads[2].min(kh - 1), pads[3].min(kw - 1)];
            let win = Window2d { kernel: [kh, kw], strides: [sh, sw], dilations: [dh, dw], pads };
            let Some(out) = win.output_size(h, w, ceil) else { return Ok(()); };
            let kind = match kind { 0 => PoolKind::Max, 1 => PoolKind::Avg { count_include_pad: false }, _ => PoolKind::Avg { count_include_pad: true } };
            let x: Vec<f32> = (0..planes * h * w).map(|i| ((i as u32 * 7919 + seed) % 211) as f32 / 50.0 - 2.0).collect();
            let fast = pool2d(&x, planes, h, w, &win, out, kind);
            let slow = pool2d_ref(&x, planes, h, w, &win, out, kind);
            for (a, r) in fast.iter().zip(&slow) {
                prop_assert!((a - r).abs() <= 1e-5 * (1.0 + r.abs()) || (a.is_infinite() && r.is_infinite()), "{a} vs {r}");
            }
        }
    }

    #[test]
    fn max_pool_propagates_nan_to_every_window_that_holds_it() {
        let win = Window2d {
            kernel: [3, 3],
            strides: [2, 2],
            dilations: [1, 1],
            pads: [1, 1, 1, 1],
        };
        let (h, w) = (7, 9);
        let out = win.output_size(h, w, false).unwrap();
        for at in [0, 4, 31, 62] {
            let mut x: Vec<f32> = (0..h * w).map(|i| (i % 11) as f32 - 5.0).collect();
            x[at] = f32::NAN;
            let got = pool2d(&x, 1, h, w, &win, out, PoolKind::Max);
            let (ay, ax) = ((at / w) as isize, (at % w) as isize);
            for oy in 0..out[0] {
                for ox in 0..out[1] {
                    let (y0, x0) = (2 * oy as isize - 1, 2 * ox as isize - 1);
                    let holds = (y0..y0 + 3).contains(&ay) && (x0..x0 + 3).contains(&ax);
                    let g = got[oy * out[1] + ox];
                    assert_eq!(g.is_nan(), holds, "NaN at {at}, output ({oy}, {ox}): {g}");
                }
            }
        }
    }
}
