//! Batching and negative-sampling throughput on ML-1M (`ml-1m-sasrec.txt`).
//!
//! Target: one full epoch of SASRec batches (6,040 users, maxlen 200, batch 128, one uniform
//! negative per position excluding the user's training items) in under 100 ms.
//!
//! Run: `cargo bench -p seqrec-benches --bench data_batches`.

use std::hint::black_box;
use std::path::PathBuf;

use criterion::{Criterion, criterion_group, criterion_main};
use seqrec_data::{
    ContextConfig, Dataset, Distribution, Id, NegativeSampler, Negatives, SasrecBatcher,
    SasrecConfig, SessionParallel, Split, Vocab, WindowMode, sample_eval_negatives,
};

fn data_dir() -> PathBuf {
    std::env::var_os("SEQREC_DATA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data"))
}

/// Parses `user item` lines (1-based dense ids, time order); timestamps are line numbers.
fn load_ml1m() -> Dataset {
    let path = data_dir().join("ml-1m-sasrec.txt");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (set SEQREC_DATA_DIR)", path.display()));
    let mut seqs: Vec<(Vec<Id>, Vec<i64>)> = Vec::new();
    let mut n_items = 0;
    for (line_no, line) in text.lines().enumerate() {
        let mut f = line.split_ascii_whitespace();
        let u: usize = f.next().unwrap().parse().unwrap();
        let i: Id = f.next().unwrap().parse().unwrap();
        if seqs.len() < u {
            seqs.resize(u, (Vec::new(), Vec::new()));
        }
        seqs[u - 1].0.push(i);
        seqs[u - 1].1.push(line_no as i64);
        n_items = n_items.max(i as usize);
    }
    let users = Vocab::from_originals((1..=seqs.len()).map(|u| u.to_string()).collect()).unwrap();
    let items = Vocab::from_originals((1..=n_items).map(|i| i.to_string()).collect()).unwrap();
    Dataset::from_sequences(users, items, seqs).unwrap()
}

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
    let ds = load_ml1m();
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
