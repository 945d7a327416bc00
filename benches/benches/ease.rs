//! EASE on ML-1M (SASRec recipe: 6,040 users, 3,416 items): the closed-form fit (dense binary X, Gram
//! matrix by GEMM, Cholesky inverse through OpenBLAS, B = I - P / diag(P)) and the scoring of one
//! evaluation batch of 256 whole histories against every item (`h B`, rows in parallel).
//!
//! Run: `cargo bench -p seqrec-benches --bench ease` (needs the `ease` feature, on by default through
//! seqrec-train, and libopenblas).
//!
//! Measured 2026-11-25 on the 2-vCPU dev machine at load average ~12-13 (medians, 10 samples): fit 3.93 s
//! (7.82 s with the Gram matrix by dense GEMM, before the sparse count); score 256 histories 80.2 ms.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use seqrec_data::EvalBatcher;
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
