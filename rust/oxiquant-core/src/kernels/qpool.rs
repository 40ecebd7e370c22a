//! Integer max pooling of one plane by rows (the integer engine's `QMaxPool`): the portable
//! loop, and the same loop compiled for AVX2 (byte max in 32 lanes). The reference is the
//! element-by-element loop of `int::pool`, and the property test there compares them.

use super::conv::Window2d;
use super::requant::QElem;

/// The geometry of one plane: input `h x w`, the window, output `out[0] x out[1]`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Plane {
    pub h: usize,
    pub w: usize,
    pub win: Window2d,
    pub out: [usize; 2],
}

/// `max_pool_plane` compiled for AVX2 (byte max in 32 lanes, `vpmaxsb` for i8).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn max_pool_plane_avx2<T: QElem + Ord>(
    x: &[T],
    p: &Plane,
    o: &mut [T],
    rows: &mut [T],
    runs: &mut [T],
) {
    max_pool_plane(x, p, o, rows, runs)
}

/// Max pooling of one plane, undilated (`int`'s `max_pool_rows`, see there): `x` is `h x w`, `o` is `out[0] x out[1]`, `rows` and
/// `runs` hold `w` values each.
#[inline(always)]
pub(crate) fn max_pool_plane<T: QElem + Ord>(x: &[T], p: &Plane, o: &mut [T], rows: &mut [T], runs: &mut [T]) {
    let (h, w, win) = (p.h, p.w, &p.win);
    let [kh, kw] = win.kernel;
    let [sh, sw] = win.strides;
    let (top, left) = (win.pads[0], win.pads[1]);
    // Outputs `first..last` of a row have their whole window inside the row.
    let first = left.div_ceil(sw).min(p.out[1]);
    let last = if w + left >= kw {
        ((w + left - kw) / sw + 1).min(p.out[1])
    } else {
        0
    }
    .max(first);
    // Every window start `s` of the row: `runs[s] = max(rows[s..s + kw])`.
    let starts = (w + 1).saturating_sub(kw);
    let zero = T::from_i32(0);
    if w == 0 {
        // Every window is padding only.
        o.fill(zero);
        return;
    }
    for (oy, o) in o.chunks_exact_mut(p.out[1]).enumerate() {
        let y0 = (oy * sh) as isize - top as isize;
        let (lo, hi) = (y0.max(0) as usize, (y0 + kh as isize).clamp(0, h as isize) as usize);
        if lo >= hi {
            o.fill(zero);
            continue;
        }
        rows.copy_from_slice(&x[lo * w..(lo + 1) * w]);
        for r in x[(lo + 1) * w..hi * w].chunks_exact(w) {
            rows.iter_mut().zip(r).for_each(|(m, &v)| *m = (*m).max(v));
        }
        if last > first {
            let runs = &mut runs[..starts];
            runs.copy_from_slice(&rows[..starts]);
            for j in 1..kw {
                runs.iter_mut().zip(&rows[j..]).for_each(|(m, &v)| *m = (*m).max(v));
            }
            let picks = runs[first * sw - left..].iter().step_by(sw);
            o[first..last].iter_mut().zip(picks).for_each(|(d, &v)| *d = v);
        }
        // Windows cut by the left or right edge.
        for ox in (0..first).chain(last..p.out[1]) {
            let x0 = (ox * sw) as isize - left as isize;
            let (a, b) = (x0.max(0) as usize, (x0 + kw as isize).clamp(0, w as isize) as usize);
            o[ox] = rows.get(a..b).and_then(|s| s.iter().copied().max()).unwrap_or(zero);
        }
    }
}
