//! Helpers shared by the kernel tests (and the inference plan's).

/// `len` reproducible values in [-1, 1] with three decimals (xorshift from `seed`).
pub(crate) fn fill(len: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) % 2001) as f32 / 1000.0 - 1.0
        })
        .collect()
}

/// What a fused convolution should store: each output plus the residual when
/// `accumulate`, then clamped to `[lo, hi]`.
pub(crate) fn epilogue_ref(conv: &[f32], residual: &[f32], accumulate: bool, lo: f32, hi: f32) -> Vec<f32> {
    conv.iter()
        .zip(residual)
        .map(|(&y, &r)| (if accumulate { y + r } else { y }).max(lo).min(hi))
        .collect()
}

/// A single-group 3x3, stride-1, "same"-padded layer of `n` images `c x h x w` to `m`
/// channels (the Winograd kernel's shape).
pub(crate) fn same_3x3(n: usize, c: usize, h: usize, w: usize, m: usize) -> super::conv::ConvShape {
    let win = super::conv::Window2d {
        kernel: [3, 3],
        strides: [1, 1],
        dilations: [1, 1],
        pads: [1; 4],
    };
    super::conv::ConvShape {
        n,
        c,
        h,
        w,
        m,
        group: 1,
        win,
        out: [h, w],
    }
}
