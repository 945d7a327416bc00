//! Evaluation throughput of `seqrec-train` on ML-1M (`ml-1m-sasrec.txt`, 6,040 test users, 3,416
//! items): score (MostPop, a copy per row), rank the target with ties against the model, top-20 for
//! the catalogue metrics, aggregate. Measures the evaluation pipeline itself, not a model's scoring.
//!
//! Run: `cargo bench -p seqrec-benches --bench train_eval`. Sampled protocols include drawing the
//! 100 negatives of every case.
//!
//! Measured 2026-11-25 on the 2-vCPU dev machine (medians, 10 samples): full 121.7 ms (1 thread),
//! 110.7 ms (2 threads); sampled-uniform 55.6 ms (1 thread), 53.4 ms (2 threads).

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use seqrec_models::{Model, MostPop};
use seqrec_train::run::Experiment;
use seqrec_train::{Protocol, Stage, TrainConfig, evaluate, popularity_before, run};

fn bench_eval(c: &mut Criterion) {
    let mut cfg = TrainConfig::default();
    cfg.data.dataset = "ml-1m-sasrec".into();
    cfg.data.cache_dir = std::env::temp_dir().join("seqrec-bench-cache");
    let exp = Experiment::load(&cfg).expect("ml-1m-sasrec.txt (set SEQREC_DATA_DIR)");
    let train = exp.train().unwrap();
    let mut model = MostPop::new(&train);
    model.train_epoch(&train, 0, &mut |_| {}).unwrap();
    let pop = popularity_before(&exp.ds, &exp.split, Stage::Test);
    let mut g = c.benchmark_group("eval_ml1m_test");
    g.sample_size(10);
    for threads in [1, 2] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        for protocol in [Protocol::Full, Protocol::SampledUniform] {
            cfg.eval.protocol = protocol;
            let settings = run::eval_settings(&cfg).unwrap();
            g.bench_function(format!("{}_threads{threads}", protocol.name()), |b| {
                b.iter(|| {
                    pool.install(|| {
                        black_box(
                            evaluate(&mut model, &exp.ds, exp.split.test(), &pop, &settings)
                                .unwrap(),
                        )
                    })
                })
            });
        }
    }
    g.finish();
}

criterion_group!(benches, bench_eval);
criterion_main!(benches);
