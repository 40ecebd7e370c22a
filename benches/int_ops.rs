//! The integer engine's memory-bound ops on ResNet-50 shapes at batch 32: the stem's
//! `QMaxPool` (3x3, stride 2, pad 1 over [32, 64, 112, 112] i8) and the residual merges'
//! `QAddRequantize` (per-tensor, and with a per-channel requantization of the shortcut
//! folded in, as `ptq::lower_int` builds it). Prints the median of the timed runs, 1 and 2
//! threads.
//!
//! Run: `cargo bench -p oxiquant-core --bench int_ops`.

use oxiquant_core::int::{FoldedRequant, IntOp, Requant, SmallSums};
use oxiquant_core::ops::{Padding, Pool};
use oxiquant_core::tensor::{DType, Tensor};

use std::hint::black_box;
use std::time::Instant;

/// Median milliseconds of `f` over enough runs to take about a second (at least 5).
fn median_ms(f: &dyn Fn()) -> f64 {
    f();
    let t = Instant::now();
    f();
    let once = t.elapsed().as_secs_f64();
    let runs = ((1.0 / once.max(1e-6)) as usize).clamp(5, 200);
    let mut ms: Vec<f64> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    ms.sort_by(f64::total_cmp);
    ms[runs / 2]
}

fn bytes(n: usize, seed: u64) -> Vec<i8> {
    let mut st = seed | 1;
    (0..n)
        .map(|_| {
            st ^= st << 13;
            st ^= st >> 7;
            st ^= st << 17;
            (st >> 32) as i8
        })
        .collect()
}

fn main() {
    let pool = Pool {
        max: true,
        kernel_shape: vec![3, 3],
        strides: Some(vec![2, 2]),
        dilations: None,
        padding: Padding::Explicit(vec![1; 4]),
        ceil_mode: false,
        count_include_pad: false,
    };
    let Ok(stem) = Tensor::from_vec(vec![32, 64, 112, 112], bytes(32 * 64 * 112 * 112, 7)) else {
        return;
    };
    let maxpool = IntOp::Pool(pool);
    // The four stages' merges: (channels, size, count in ResNet-50).
    let merges = [(256usize, 56usize, 3usize), (512, 28, 4), (1024, 14, 6), (2048, 7, 3)];
    let mut adds = Vec::new();
    for &(c, s, count) in &merges {
        let (Ok(a), Ok(b)) = (
            Tensor::from_vec(vec![32, c, s, s], bytes(32 * c * s * s, 11)),
            Tensor::from_vec(vec![32, c, s, s], bytes(32 * c * s * s, 13)),
        ) else {
            return;
        };
        let factors: Vec<f32> = (0..c).map(|i| 0.5 + (i % 17) as f32 * 0.05).collect();
        let (Ok(out), Ok(pre)) = (Requant::new(vec![0.7], -128, 127), Requant::new(factors, -128, 127)) else {
            return;
        };
        let Ok(folded) = FoldedRequant::new("f".into(), "v".into(), pre, DType::I8) else {
            return;
        };
        let plain = IntOp::AddRequant {
            sub: false,
            requant: out.clone(),
            folded: [None, None],
            small: SmallSums::default(),
        };
        let with_table = IntOp::AddRequant {
            sub: false,
            requant: out,
            folded: [None, Some(Box::new(folded))],
            small: SmallSums::default(),
        };
        adds.push((c, s, count, a, b, plain, with_table));
    }
    for threads in [1, 2] {
        let tp = match rayon::ThreadPoolBuilder::new().num_threads(threads).build() {
            Ok(tp) => tp,
            Err(e) => return eprintln!("cannot build a thread pool: {e}"),
        };
        tp.install(|| {
            let ms = median_ms(&|| drop(black_box(maxpool.eval(&[Some(&stem)]))));
            println!("{threads} thread(s)  QMaxPool 3x3/s2 [32, 64, 112, 112] i8: {ms:8.2} ms");
            let (mut plain_total, mut table_total) = (0.0, 0.0);
            for (c, s, count, a, b, plain, with_table) in &adds {
                let args = [Some(a), Some(b)];
                let p = median_ms(&|| drop(black_box(plain.eval(&args))));
                let t = median_ms(&|| drop(black_box(with_table.eval(&args))));
                println!(
                    "  QAddRequantize [32, {c:4}, {s:2}, {s:2}] x{count}: plain {p:7.2} ms, folded per-channel {t:7.2} ms"
                );
                plain_total += p * *count as f64;
                table_total += t * *count as f64;
            }
            println!("  QAddRequantize, 16 merges: plain {plain_total:7.2} ms, folded {table_total:7.2} ms");
        });
    }
}
