//! Convolution kernels side by side: the direct kernel (`conv2d`'s pick) against im2col +
//! the `gemm` crate, on the layer shapes of ResNet-20 (CIFAR) and ResNet-50, 1 and 2 threads.
//!
//! Run: `cargo bench -p oxiquant-core --bench conv_kernels` (prints GFLOP/s and the ratio;
//! results in benches/RESULTS.md). Timings alternate between the two paths.

use oxiquant_core::kernels::conv::{conv2d, conv2d_im2col};
#[path = "conv_shapes.rs"]
mod conv_shapes;

use std::hint::black_box;
use std::time::Instant;

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
        println!("{threads} thread(s)          direct/picked  im2col+gemm  ratio");
        for &(name, n, c, h, m, stride, k) in &conv_shapes::LAYERS {
            let Some(s) = conv_shapes::geometry(n, c, h, m, stride, k) else {
                continue;
            };
            let out = s.out;
            let x: Vec<f32> = (0..n * c * h * h).map(|i| (i % 13) as f32 * 0.1 - 0.6).collect();
            let wt: Vec<f32> = (0..m * c * k * k).map(|i| (i % 7) as f32 * 0.1 - 0.3).collect();
            let b = vec![0.5f32; m];
            let flops = 2.0 * (n * m * out[0] * out[1] * c * k * k) as f64;
            let (mut d, mut g) = (0.0, 0.0);
            pool.install(|| {
                for _ in 0..2 {
                    d += time(&|| conv2d(&x, &wt, Some(&b), &s), flops);
                    g += time(&|| conv2d_im2col(&x, &wt, Some(&b), &s), flops);
                }
            });
            println!(
                "  {name:<18} {:>9.1} GF/s {:>9.1} GF/s  {:.2}x",
                d / 2.0,
                g / 2.0,
                d / g
            );
        }
    }
}
