//! The convolution layers both kernel benchmarks time (`conv_kernels`, `qconv_kernels`):
//! shapes of ResNet-20 (CIFAR) and ResNet-50, and their geometry.

use oxiquant_core::kernels::conv::{ConvShape, Window2d};

/// (name, batch, in channels, size, out channels, stride, kernel)
pub const LAYERS: [(&str, usize, usize, usize, usize, usize, usize); 11] = [
    ("R20 stem", 32, 3, 32, 16, 1, 3),
    ("R20 stage1", 32, 16, 32, 16, 1, 3),
    ("R20 down2", 32, 16, 32, 32, 2, 3),
    ("R20 stage2", 32, 32, 16, 32, 1, 3),
    ("R20 stage3", 32, 64, 8, 64, 1, 3),
    ("R20 stage1 b1", 1, 16, 32, 16, 1, 3),
    ("R50 stem", 1, 3, 224, 64, 2, 7),
    ("R50 3x3 c64", 1, 64, 56, 64, 1, 3),
    ("R50 3x3 c128", 1, 128, 28, 128, 1, 3),
    ("R50 3x3 c256", 1, 256, 14, 256, 1, 3),
    ("R50 1x1 64->256", 1, 64, 56, 256, 1, 1),
];

/// The geometry of a square layer with "same" padding (`None` if the input is too small).
pub fn geometry(n: usize, c: usize, h: usize, m: usize, stride: usize, k: usize) -> Option<ConvShape> {
    let win = Window2d {
        kernel: [k, k],
        strides: [stride, stride],
        dilations: [1, 1],
        pads: [k / 2; 4],
    };
    let out = win.output_size(h, h, false)?;
    Some(ConvShape {
        n,
        c,
        h,
        w: h,
        m,
        group: 1,
        win,
        out,
    })
}

/// A rayon pool of `threads` threads, or a message on stderr.
pub fn pool(threads: usize) -> Option<rayon::ThreadPool> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|e| eprintln!("cannot build a thread pool: {e}"))
        .ok()
}
