//! The integer convolution (`QConv`, fused requantization included) against the f32
//! convolution (`conv2d`'s pick) on the layer shapes of ResNet-20 (CIFAR) and ResNet-50, 1
//! and 2 threads. Two integer inputs: post-ReLU activations in [0, 127] with weights
//! distributed like trained ones (|w| mean about 17 of 127), which take the AVX2
//! byte-product kernel (`qconv_u8s8`, "byte"); and full-range signed activations with
//! weights of +-127, for which no run of byte products is exact, so AVX2 takes the i16-pair
//! kernel (`qconv_direct`, "pair"). On a CPU with VNNI, the same two inputs through the
//! byte kernel with `vpdpbusd` ("vnni relu", "vnni full": exact on both). Prints
//! multiply-accumulates per second and the ratios; timings alternate between the paths.
//!
//! Run: `cargo bench -p oxiquant-core --bench qconv_kernels` (results in benches/RESULTS.md).

use oxiquant_core::int::{QConv, Requant};
use oxiquant_core::kernels::conv::conv2d;
use oxiquant_core::kernels::qgemm::Kernel;
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
        let vnni = Kernel::available().into_iter().rfind(|k| k.has_byte_dot());
        #[cfg(target_arch = "x86_64")]
        let avx2 = Kernel::available().into_iter().find(|&k| k == Kernel::Avx2);
        #[cfg(not(target_arch = "x86_64"))]
        let avx2: Option<Kernel> = None;
        let Some(avx2) = avx2 else {
            println!("no AVX2: nothing to compare");
            return;
        };
        println!(
            "{threads} thread(s)          byte GMAC/s  pair GMAC/s  f32 GMAC/s  byte/f32  pair/f32{}",
            if vnni.is_some() {
                "  vnni relu  vnni full  relu/f32  full/f32"
            } else {
                ""
            }
        );
        for &(name, n, c, h, m, stride, k) in &conv_shapes::LAYERS {
            let Some(s) = conv_shapes::geometry(n, c, h, m, stride, k) else {
                continue;
            };
            let out = s.out;
            let xf: Vec<f32> = (0..n * c * h * h).map(|i| (i % 13) as f32 - 6.0).collect();
            let wf: Vec<f32> = (0..m * c * k * k).map(|i| (i % 7) as f32 - 3.0).collect();
            let bf = vec![5f32; m];
            // A fixed pseudo-random sequence; a sum of four uniforms is close to a normal.
            let mut st = 0x9E37_79B9_7F4A_7C15u64;
            let mut next = move || {
                st ^= st << 13;
                st ^= st >> 7;
                st ^= st << 17;
                (st >> 40) as f64 / (1u64 << 24) as f64
            };
            let w_trained: Vec<i16> = (0..m * c * k * k)
                .map(|_| {
                    ((next() + next() + next() + next() - 2.0) * 0.29 * 127.0)
                        .round()
                        .clamp(-127.0, 127.0) as i16
                })
                .collect();
            let x_relu: Vec<i8> = (0..n * c * h * h).map(|_| (next() * 128.0) as i8).collect();
            let w_full: Vec<i16> = (0..m * c * k * k)
                .map(|i| if i % 3 == 0 { -127 } else { 127 })
                .collect();
            let x_full: Vec<i8> = (0..n * c * h * h).map(|_| (next() * 255.0 - 127.0) as i8).collect();
            let conv = Conv {
                kernel_shape: None,
                strides: Some(vec![stride, stride]),
                dilations: None,
                padding: Padding::Explicit(vec![k / 2; 4]),
                group: 1,
            };
            let qconv = |w: &[i16]| {
                let rq = Requant::new(vec![0.0001], -128, 127).ok()?;
                QConv::new(conv.clone(), w, vec![m, c, k, k], vec![5; m], rq, 0).ok()
            };
            let (Some(qb), Some(qp), Ok(xb), Ok(xp)) = (
                qconv(&w_trained),
                qconv(&w_full),
                Tensor::from_vec(vec![n, c, h, h], x_relu),
                Tensor::from_vec(vec![n, c, h, h], x_full),
            ) else {
                return;
            };
            let macs = (n * m * out[0] * out[1] * c * k * k) as f64;
            let (mut byte, mut pair, mut fl, mut vb, mut vp) = (0.0, 0.0, 0.0, 0.0, 0.0);
            pool.install(|| {
                for _ in 0..2 {
                    byte += time(&|| drop(black_box(qb.eval_with(&xb, avx2))), macs);
                    pair += time(&|| drop(black_box(qp.eval_with(&xp, avx2))), macs);
                    fl += time(&|| drop(black_box(conv2d(&xf, &wf, Some(&bf), &s))), macs);
                    if let Some(v) = vnni {
                        vb += time(&|| drop(black_box(qb.eval_with(&xb, v))), macs);
                        vp += time(&|| drop(black_box(qp.eval_with(&xp, v))), macs);
                    }
                }
            });
            let vnni_cols = if vnni.is_some() {
                format!(
                    " {:>10.1} {:>10.1} {:>8.2}x {:>8.2}x",
                    vb / 2.0,
                    vp / 2.0,
                    vb / fl,
                    vp / fl
                )
            } else {
                String::new()
            };
            println!(
                "  {name:<18} {:>9.1} {:>12.1} {:>11.1}  {:>7.2}x {:>8.2}x{vnni_cols}",
                byte / 2.0,
                pair / 2.0,
                fl / 2.0,
                byte / fl,
                pair / fl
            );
        }
    }
}
