//! Batching and negative-sampling throughput on ML-1M (`ml-1m-sasrec.txt`).
//!
//! Target: one full epoch of SASRec batches (6,040 users, maxlen 200, batch 128, one uniform
//! negative per position excluding the user's training items) in under 100 ms.
//!
//! Run: `cargo bench -p seqrec-benches --bench data_batches`.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use seqrec_data::{
    ContextConfig, Distribution, Id, NegativeSampler, Negatives, SasrecBatcher, SasrecConfig,
    SessionParallel, Split, WindowMode, sample_eval_negatives,
};

/// Runs one epoch and returns a checksum so nothing is optimised away.
fn run_epoch(b: &mut SasrecBatcher, epoch: u64) -> u64 {
    b.start_epoch(epoch);
    let mut sum = 0u64;
    while let Some(batch) = b.next_batch().unwrap() {
        sum = sum
            .wrapping_add(batch.negatives.first().copied().unwrap_or(0) as u64 + batch.rows as u64);
    }
    sum
}

fn bench(c: &mut Criterion) {
    let ds = seqrec_benches::ml1m_sasrec();
    let split = Split::leave_one_out(&ds);
    let train = split.train_sequences(&ds).unwrap();
    let uniform = NegativeSampler::uniform(ds.n_items()).unwrap();

    let sasrec = SasrecConfig {
        batch_size: 128,
        maxlen: 200,
        window: WindowMode::Last,
        negatives: Negatives::PerPosition {
            n: 1,
            sampler: uniform.clone(),
        },
        shuffle: true,
        seed: 42,
        context: None,
    };
    let mut g = c.benchmark_group("ml1m_epoch");
    g.sample_size(30);

    let mut b = SasrecBatcher::new(train.clone(), sasrec.clone()).unwrap();
    let mut epoch = 0;
    g.bench_function("sasrec_maxlen200_b128_1neg_uniform", |bench| {
        bench.iter(|| {
            epoch += 1;
            black_box(run_epoch(&mut b, epoch))
        })
    });

    let mut b = SasrecBatcher::new(
        train.clone(),
        SasrecConfig {
            context: Some(ContextConfig::default()),
            ..sasrec.clone()
        },
    )
    .unwrap();
    g.bench_function("sasrec_maxlen200_b128_1neg_uniform_context", |bench| {
        bench.iter(|| {
            epoch += 1;
            black_box(run_epoch(&mut b, epoch))
        })
    });

    let pop = NegativeSampler::for_dataset(&ds, Distribution::Popularity { alpha: 0.75 }).unwrap();
    let mut b = SasrecBatcher::new(
        train.clone(),
        SasrecConfig {
            window: WindowMode::Sliding { stride: 100 },
            negatives: Negatives::PerPosition { n: 1, sampler: pop },
            ..sasrec.clone()
        },
    )
    .unwrap();
    g.bench_function("sasrec_sliding_stride100_1neg_pop075", |bench| {
        bench.iter(|| {
            epoch += 1;
            black_box(run_epoch(&mut b, epoch))
        })
    });

    g.bench_function("sasrec_batcher_new", |bench| {
        bench.iter(|| {
            black_box(
                SasrecBatcher::new(train.clone(), sasrec.clone())
                    .unwrap()
                    .n_targets(),
            )
        })
    });

    let mut sp = SessionParallel::new(train.clone(), 128, Some(7), None).unwrap();
    g.bench_function("session_parallel_b128", |bench| {
        bench.iter(|| {
            epoch += 1;
            sp.start_epoch(epoch);
            let mut steps = 0u64;
            while let Some(s) = sp.next_step() {
                steps += s.inputs[0] as u64;
            }
            black_box(steps)
        })
    });

    let cases: Vec<(Id, Id)> = split
        .test()
        .iter()
        .map(|c| (c.user, c.target(&ds)))
        .collect();
    g.bench_function("eval_negatives_100_uniform", |bench| {
        bench.iter(|| {
            black_box(sample_eval_negatives(&ds, &cases, 100, Distribution::Uniform, 1).unwrap())
        })
    });
    g.bench_function("eval_negatives_100_popularity", |bench| {
        bench.iter(|| {
            black_box(
                sample_eval_negatives(&ds, &cases, 100, Distribution::Popularity { alpha: 1.0 }, 1)
                    .unwrap(),
            )
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
