//! Convolution kernels side by side: `conv2d`'s pick, the direct kernel, the Winograd
//! F(2x2, 3x3) kernel (3x3 stride-1 layers) and im2col + the `gemm` crate, on the layer
//! shapes of ResNet-20 (CIFAR) and ResNet-50, 1 and 2 threads.
//!
//! Run: `cargo bench -p oxiquant-core --bench conv_kernels` (prints GFLOP/s and the ratio;
//! results in benches/RESULTS.md). Timings alternate between the paths. GFLOP/s count the
//! direct convolution's multiply-adds for every kernel, so they compare as speeds.

use oxiquant_core::kernels::conv::{conv2d, conv2d_im2col};
use oxiquant_core::kernels::conv_direct::{direct_conv, Epilogue};
use oxiquant_core::kernels::conv_winograd::{handles, transform_weights, winograd_conv};
#[path = "conv_shapes.rs"]
mod conv_shapes;

use std::hint::black_box;
use std::time::Instant;

// The Python module's allocator (mimalloc), so that buffers are reused as in the engine: with
// the system allocator, every call's output and Winograd's transformed tiles came back from
// the OS with page faults (benches/RESULTS.md, "Measured design choices (fp32)").
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn time(f: &dyn Fn() -> Vec<f32>, flops: f64) -> f64 {
    black_box(f());
    let iters = ((2e9 / flops) as usize).clamp(3, 500);
    let t = Instant::now();
    for _ in 0..iters {
        black_box(f());
    }
    flops * iters as f64 / t.elapsed().as_secs_f64() / 1e9
}

fn main() {
    for threads in [1, 2] {
        let Some(pool) = conv_shapes::pool(threads) else {
            return;
        };
        println!("{threads} thread(s)          picked       direct     winograd  im2col+gemm  winograd/direct");
        for &(name, n, c, h, m, stride, k) in &conv_shapes::LAYERS {
            let Some(s) = conv_shapes::geometry(n, c, h, m, stride, k) else {
                continue;
            };
            let out = s.out;
            let x: Vec<f32> = (0..n * c * h * h).map(|i| (i % 13) as f32 * 0.1 - 0.6).collect();
            let wt: Vec<f32> = (0..m * c * k * k).map(|i| (i % 7) as f32 * 0.1 - 0.3).collect();
            let b = vec![0.5f32; m];
            let flops = 2.0 * (n * m * out[0] * out[1] * c * k * k) as f64;
            let u = handles(&s).then(|| transform_weights(&wt, m, c));
            let direct = || {
                let mut o = vec![0f32; s.output_len()];
                direct_conv(&x, &wt, Some(&b), &s, &mut o);
                o
            };
            let winograd = |u: &[f32]| {
                let mut o = vec![0f32; s.output_len()];
                winograd_conv(&x, u, Some(&b), &s, &mut o, Epilogue::NONE);
                o
            };
            let (mut p, mut d, mut w, mut g) = (0.0, 0.0, 0.0, 0.0);
            pool.install(|| {
                for _ in 0..2 {
                    p += time(&|| conv2d(&x, &wt, Some(&b), &s), flops);
                    d += time(&direct, flops);
                    if let Some(u) = &u {
                        w += time(&|| winograd(u), flops);
                    }
                    g += time(&|| conv2d_im2col(&x, &wt, Some(&b), &s), flops);
                }
            });
            let wino = if u.is_some() {
                format!("{:>7.1} GF/s", w / 2.0)
            } else {
                format!("{:>12}", "-")
            };
            let ratio = if u.is_some() {
                format!("{:.2}x", w / d)
            } else {
                "-".into()
            };
            println!(
                "  {name:<18} {:>7.1} GF/s {:>7.1} GF/s {wino} {:>7.1} GF/s  {ratio}",
                p / 2.0,
                d / 2.0,
                g / 2.0,
            );
        }
    }
}
