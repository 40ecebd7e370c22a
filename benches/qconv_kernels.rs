//! The integer convolution (`QConv`: exact i16-pair products, i32 accumulators, fused
//! requantization) against the f32 convolution (`conv2d`'s pick) on the layer shapes of
//! ResNet-20 (CIFAR) and ResNet-50, 1 and 2 threads. Prints multiply-accumulates per second
//! and the int/f32 ratio; timings alternate between the two paths.
//!
//! Run: `cargo bench -p oxiquant-core --bench qconv_kernels` (results in benches/RESULTS.md).

use oxiquant_core::kernels::conv::conv2d;
use oxiquant_core::ops::quantized::{QConv, Requant};
use oxiquant_core::ops::{Conv, Padding};
use oxiquant_core::tensor::Tensor;
#[path = "conv_shapes.rs"]
mod conv_shapes;

use std::hint::black_box;
use std::time::Instant;

fn time(f: &dyn Fn(), macs: f64) -> f64 {
    f();
    let iters = ((1e9 / macs) as usize).clamp(3, 500);
    let t = Instant::now();
    for _ in 0..iters {
        f();
    }
    macs * iters as f64 / t.elapsed().as_secs_f64() / 1e9
}

fn main() {
    for threads in [1, 2] {
        let Some(pool) = conv_shapes::pool(threads) else {
            return;
        };
        println!("{threads} thread(s)          int8 GMAC/s  f32 GMAC/s  int/f32");
        for &(name, n, c, h, m, stride, k) in &conv_shapes::LAYERS {
            let Some(s) = conv_shapes::geometry(n, c, h, m, stride, k) else {
                continue;
            };
            let out = s.out;
            let xf: Vec<f32> = (0..n * c * h * h).map(|i| (i % 13) as f32 - 6.0).collect();
            let wf: Vec<f32> = (0..m * c * k * k).map(|i| (i % 7) as f32 - 3.0).collect();
            let bf = vec![5f32; m];
            let xi: Vec<i8> = xf.iter().map(|&v| v as i8).collect();
            let wi: Vec<i8> = wf.iter().map(|&v| v as i8).collect();
            let conv = Conv {
                kernel_shape: None,
                strides: Some(vec![stride, stride]),
                dilations: None,
                padding: Padding::Explicit(vec![k / 2; 4]),
                group: 1,
            };
            let (Ok(rq), Ok(x)) = (
                Requant::new(vec![0.01], -128, 127),
                Tensor::from_vec(vec![n, c, h, h], xi),
            ) else {
                return;
            };
            let Ok(q) = QConv::new(
                conv,
                &wi.iter().map(|&v| v as i16).collect::<Vec<_>>(),
                vec![m, c, k, k],
                vec![5; m],
                rq,
                0,
            ) else {
                return;
            };
            let macs = (n * m * out[0] * out[1] * c * k * k) as f64;
            let (mut qi, mut fl) = (0.0, 0.0);
            pool.install(|| {
                for _ in 0..2 {
                    qi += time(&|| drop(black_box(q.eval(&x))), macs);
                    fl += time(&|| drop(black_box(conv2d(&xf, &wf, Some(&bf), &s))), macs);
                }
            });
            println!("  {name:<18} {:>9.1} {:>11.1}  {:>6.2}x", qi / 2.0, fl / 2.0, qi / fl);
        }
    }
}
