//! seqrec-metrics: ranking and top-k per user at ML-1M (3,417 entries) and a 50k-item catalogue, against the
//! plain oracles; the end-of-run statistics at ML-1M's 6,040 users.
//!
//! `cargo bench -p seqrec-benches --bench metrics`

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use seqrec_metrics::reference::{rank_naive, top_k_naive};
use seqrec_metrics::{
    Cutoffs, Exclude, MetricAccumulator, NanPolicy, TopK, paired_test, rank_full, rank_sampled,
};

/// Deterministic pseudo-random scores (xorshift), with some ties from rounding to 1/1024.
fn scores(n: usize, seed: u64) -> Vec<f32> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ((x >> 40) as f32 / (1u64 << 24) as f32 * 1024.0).round() / 1024.0
        })
        .collect()
}

fn ranking(c: &mut Criterion) {
    let mut g = c.benchmark_group("metrics_rank");
    for n in [3417usize, 50_001] {
        let row = scores(n, 1);
        // A 165-item history (ML-1M's median is ~96, mean ~165), sorted.
        let hist: Vec<u32> = (0..165).map(|i| 1 + i * (n as u32 - 2) / 165).collect();
        let target = (n / 3) as u32;
        g.bench_with_input(BenchmarkId::new("rank_full", n), &n, |b, _| {
            b.iter(|| {
                rank_full(
                    black_box(&row),
                    target,
                    Exclude::Sorted(&hist),
                    NanPolicy::Error,
                )
                .unwrap()
            })
        });
        g.bench_with_input(BenchmarkId::new("rank_full_no_exclusion", n), &n, |b, _| {
            b.iter(|| {
                rank_full(
                    black_box(&row),
                    target,
                    Exclude::Nothing,
                    NanPolicy::RankWorst,
                )
                .unwrap()
            })
        });
        g.bench_with_input(BenchmarkId::new("rank_naive_oracle", n), &n, |b, _| {
            b.iter(|| rank_naive(black_box(&row), target, &hist))
        });
        for k in [10usize, 100] {
            let mut top = TopK::new(k);
            g.bench_with_input(BenchmarkId::new(format!("top_k_{k}"), n), &n, |b, _| {
                b.iter(|| {
                    top.select(black_box(&row), Exclude::Sorted(&hist)).unwrap();
                    top.ids()[0]
                })
            });
        }
        g.bench_with_input(
            BenchmarkId::new("top_k_10_full_sort_oracle", n),
            &n,
            |b, _| b.iter(|| top_k_naive(black_box(&row), 10, &hist)[0].0),
        );
    }
    let row = scores(3417, 2);
    let negs: Vec<u32> = (0..100).map(|i| 2 + i * 33).collect();
    g.bench_function("rank_sampled_100", |b| {
        b.iter(|| rank_sampled(black_box(&row), 1, &negs, NanPolicy::Error).unwrap())
    });
    g.finish();
}

fn end_of_run(c: &mut Criterion) {
    let mut g = c.benchmark_group("metrics_report");
    let ranks_a: Vec<usize> = scores(6040, 3)
        .iter()
        .map(|s| (s * 500.0) as usize)
        .collect();
    let ranks_b: Vec<usize> = scores(6040, 4)
        .iter()
        .map(|s| (s * 500.0) as usize)
        .collect();
    g.bench_function("accumulate_finish_6040", |b| {
        b.iter(|| {
            let mut acc = MetricAccumulator::new(Cutoffs::default());
            for (u, &r) in ranks_a.iter().enumerate() {
                acc.add(u as u32, r);
            }
            acc.finish().unwrap().mrr
        })
    });
    let col = |ranks: &[usize]| {
        let mut acc = MetricAccumulator::new(Cutoffs::default());
        ranks
            .iter()
            .enumerate()
            .for_each(|(u, &r)| acc.add(u as u32, r));
        acc.finish()
            .unwrap()
            .per_user(seqrec_metrics::Metric::Ndcg(10))
    };
    let (a, b_) = (col(&ranks_a), col(&ranks_b));
    g.bench_function("paired_test_ndcg10_6040", |b| {
        b.iter(|| {
            paired_test(black_box(&a), black_box(&b_))
                .unwrap()
                .wilcoxon
                .p_value
        })
    });
    g.finish();
}

criterion_group!(benches, ranking, end_of_run);
criterion_main!(benches);
