//! EASE on ML-1M (SASRec recipe: 6,040 users, 3,416 items): the closed-form fit (sparse Gram matrix,
//! Cholesky inverse, B = I - P / diag(P)), the inverse of `G + 250 I` alone (pure Rust, and LAPACK
//! with `--features openblas`), and the scoring of one evaluation batch of 256 whole histories against
//! every item (`h B`, rows in parallel).
//!
//! Run: `cargo bench -p seqrec-benches --bench ease` (pure Rust: `fit` uses `seqrec_models::spd`), or
//! `cargo bench -p seqrec-benches --bench ease --features openblas` (needs libopenblas-dev: `fit` then
//! goes through LAPACK, and `inverse_lapack` runs beside `inverse_rust`).
//!
//! Measured 2026-11-25 on the 2-vCPU dev machine at load average ~12-13 (medians, 10 samples), LAPACK
//! fit: 3.93 s (7.82 s with the Gram matrix by dense GEMM, before the sparse count); score 256
//! histories 80.2 ms.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use seqrec_data::EvalBatcher;
use seqrec_models::ease::gram_reference;
use seqrec_models::spd::spd_inverse_in_place;
use seqrec_models::{Ease, EaseConfig, Model};
use seqrec_train::TrainConfig;
use seqrec_train::run::Experiment;

fn bench_ease(c: &mut Criterion) {
    let mut cfg = TrainConfig::default();
    cfg.data.dataset = "ml-1m".into();
    cfg.data.cache_dir = std::env::temp_dir().join("seqrec-bench-cache");
    let exp = Experiment::load(&cfg).expect("ml-1m-ratings.dat (set SEQREC_DATA_DIR)");
    let train = exp.train().unwrap();
    let mut g = c.benchmark_group("ease_ml1m");
    g.sample_size(10);
    g.bench_function("fit", |b| {
        b.iter(|| {
            let mut m = Ease::new(EaseConfig::default(), &train).unwrap();
            m.fit(&train).unwrap();
            black_box(m.weights()[1])
        })
    });
    // The inverse alone, on G + 250 I (the copy of the 93 MB input is inside the timing, as in the fit).
    let n = train.n_items();
    let mut a = gram_reference(&train);
    for i in 0..n {
        a[i * n + i] += EaseConfig::default().lambda;
    }
    g.bench_function("inverse_rust", |b| {
        b.iter(|| {
            let mut p = a.clone();
            spd_inverse_in_place(&mut p, n).unwrap();
            black_box(p[1])
        })
    });
    #[cfg(feature = "openblas")]
    g.bench_function("inverse_lapack", |b| {
        b.iter(|| {
            let p = seqrec_models::spd::spd_inverse_lapack(a.clone(), n).unwrap();
            black_box(p[1])
        })
    });
    drop(a);
    let mut model = Ease::new(EaseConfig::default(), &train).unwrap();
    model.fit(&train).unwrap();
    let mut batcher =
        EvalBatcher::new(&exp.ds, exp.split.test(), 256, model.max_history(), None).unwrap();
    let batch = batcher.next_batch().unwrap();
    let (rows, l) = (batch.rows, batch.maxlen);
    let inputs = batch.inputs[..rows * l].to_vec();
    let mut scores = vec![0f32; rows * (model.n_items() + 1)];
    g.bench_function("score_256_histories", |b| {
        b.iter(|| {
            model.score(black_box(&inputs), rows, &mut scores);
            black_box(scores[1])
        })
    });
    g.finish();
}

criterion_group!(benches, bench_ease);
criterion_main!(benches);
