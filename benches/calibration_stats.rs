//! Throughput of the calibration statistics (`ptq::calibrate::RangeStats::update`), which
//! run on every Scaling node output of every calibration batch: with and without the
//! histograms that MSE and KL clipping need, 1 and 2 threads, on a ResNet-20-sized
//! activation batch (32 x 16 x 32 x 32 values, Gaussian, as after a convolution).

use oxiquant_core::ptq::calibrate::RangeStats;
use std::hint::black_box;
use std::time::Instant;

fn gaussian(n: usize) -> Vec<f32> {
    let mut s = 0x2545_F491_4F6C_DD1Du64;
    let mut next = || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 11) as f64 / (1u64 << 53) as f64
    };
    (0..n)
        .map(|_| {
            // Box-Muller.
            let (u, v) = (next().max(1e-12), next());
            ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
        })
        .collect()
}

fn main() {
    let x = gaussian(32 * 16 * 32 * 32);
    println!("values per update: {}", x.len());
    for threads in [1, 2] {
        let Ok(pool) = rayon::ThreadPoolBuilder::new().num_threads(threads).build() else {
            return;
        };
        for histograms in [false, true] {
            let ns = pool.install(|| {
                let mut st = if histograms {
                    RangeStats::new()
                } else {
                    RangeStats::without_histograms()
                };
                let _ = st.update(&x);
                let iters = 40;
                let t = Instant::now();
                for _ in 0..iters {
                    let _ = black_box(st.update(black_box(&x)));
                }
                t.elapsed().as_secs_f64() * 1e9 / (iters * x.len()) as f64
            });
            println!("{threads} thread(s), histograms {histograms:<5}: {ns:.2} ns per value");
        }
    }
}
