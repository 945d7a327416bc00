//! Fused losses, forward + backward (loss and `dlogits` in one call):
//! full softmax cross-entropy over 3,416 items for 25,600 positions (SASRec+ on ML-1M scale, batch
//! 128 x 200), and SASRec's BCE over 25,600 (positive, negative) pairs. Compare with
//! `scripts/bench_torch_loss.py` (same shapes).

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use seqrec_nn::init::Rng;
use seqrec_nn::loss::{bce_with_logits, softmax_cross_entropy};
use seqrec_tensor::Tensor;

const ROWS: usize = 25_600;
const ITEMS: usize = 3_416;

fn cross_entropy(c: &mut Criterion) {
    let mut rng = Rng::new(0);
    let logits: Tensor<f32> = rng.normal_tensor(&[ROWS, ITEMS], 2.0);
    // About 10% padding targets, as in left-padded sequences.
    let targets: Vec<u32> = (0..ROWS)
        .map(|_| {
            if rng.uniform01() < 0.1 {
                0
            } else {
                1 + (rng.next_u64() % (ITEMS as u64 - 1)) as u32
            }
        })
        .collect();
    let mut dlogits = Tensor::zeros(&[ROWS, ITEMS]);
    let mut g = c.benchmark_group("loss");
    g.sample_size(20);
    g.throughput(Throughput::Elements((ROWS * ITEMS) as u64));
    g.bench_function("softmax_cross_entropy_f32_25600x3416_fwd_bwd", |b| {
        b.iter(|| {
            black_box(softmax_cross_entropy(
                Some(&mut dlogits),
                black_box(&logits),
                &targets,
                0,
            ))
        })
    });
    g.bench_function("softmax_cross_entropy_f32_25600x3416_fwd_only", |b| {
        b.iter(|| black_box(softmax_cross_entropy(None, black_box(&logits), &targets, 0)))
    });
    // A cache-resident slice of the same problem: the kernel's compute rate without memory traffic.
    let small_rows = 256;
    let small = Tensor::from_vec(
        &[small_rows, ITEMS],
        logits.as_slice()[..small_rows * ITEMS].to_vec(),
    )
    .unwrap();
    let mut dsmall = Tensor::zeros(&[small_rows, ITEMS]);
    g.throughput(Throughput::Elements((small_rows * ITEMS) as u64));
    g.bench_function("softmax_cross_entropy_f32_256x3416_fwd_bwd", |b| {
        b.iter(|| {
            black_box(softmax_cross_entropy(
                Some(&mut dsmall),
                black_box(&small),
                &targets[..small_rows],
                0,
            ))
        })
    });
    g.finish();
}

fn bce(c: &mut Criterion) {
    let mut rng = Rng::new(1);
    let logits: Tensor<f32> = rng.normal_tensor(&[ROWS, 2], 2.0);
    let valid: Vec<bool> = (0..ROWS).map(|_| rng.uniform01() >= 0.1).collect();
    let mut dlogits = Tensor::zeros(&[ROWS, 2]);
    let mut g = c.benchmark_group("loss");
    g.sample_size(50);
    g.throughput(Throughput::Elements((ROWS * 2) as u64));
    g.bench_function("bce_with_logits_f32_25600x2_fwd_bwd", |b| {
        b.iter(|| {
            black_box(bce_with_logits(
                Some(&mut dlogits),
                black_box(&logits),
                &valid,
            ))
        })
    });
    g.finish();
}

criterion_group!(benches, cross_entropy, bce);
criterion_main!(benches);
