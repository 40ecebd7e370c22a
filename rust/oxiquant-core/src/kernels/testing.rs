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
