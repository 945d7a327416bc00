//! GRU4Rec training step and scoring at ML-1M scale (`ml-1m-sasrec.txt`: 6,040 users, 3,416 items).
//!
//! One training step = one `Gru4rec::train_epoch` over 128 users spread evenly over the catalogue of
//! users (every 47th), i.e. exactly one batch of 128 right-aligned windows of maxlen 200 with the
//! paper-default config (embedding 64, hidden 64, dropout 0.1, Adam): forward, fused loss + gradient,
//! BPTT, Adam. An ML-1M epoch is 48 such batches (6,040 / 128), so seconds per epoch ~ 48 x median.
//!
//! Run: `cargo bench -p seqrec-benches --bench gru4rec_epoch`.

use std::hint::black_box;
use std::path::PathBuf;

use criterion::{Criterion, criterion_group, criterion_main};
use seqrec_data::{Dataset, Id, Sequences, Split, Vocab};
use seqrec_models::{Gru4rec, Gru4recConfig, Gru4recLoss, Model};

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

fn bench(c: &mut Criterion) {
    let ds = load_ml1m();
    let split = Split::leave_one_out(&ds);
    let train = split.train_sequences(&ds).unwrap();
    // 128 users spread over the dataset, with their training prefixes: one batch.
    let picked: Vec<(Id, usize)> = (0..128)
        .map(|k| train.user(k * 47))
        .map(|u| (u, ds.items_of(u).len() - 2))
        .collect();
    let one_batch = Sequences::from_prefixes(&ds, picked);
    let mut group = c.benchmark_group("gru4rec_ml1m");
    group.sample_size(10);
    for (name, loss) in [
        ("ce", Gru4recLoss::Ce),
        ("sampled_ce", Gru4recLoss::SampledCe),
    ] {
        let cfg = Gru4recConfig {
            loss,
            ..Gru4recConfig::default()
        };
        let mut model = Gru4rec::new(cfg, &train, 0).unwrap();
        let mut epoch = 0;
        group.bench_function(format!("train_step_b128_l200_h64_{name}"), |b| {
            b.iter(|| {
                let r = model.train_epoch(&one_batch, epoch, &mut |_| {}).unwrap();
                epoch += 1;
                black_box(r.loss)
            })
        });
    }
    let mut model = Gru4rec::new(Gru4recConfig::default(), &train, 0).unwrap();
    let l = model.max_history();
    let mut hist = vec![0u32; 128 * l];
    for (r, k) in (0..128).map(|k| k * 47).enumerate() {
        let items = train.items(k);
        let items = &items[items.len().saturating_sub(l)..];
        hist[(r + 1) * l - items.len()..(r + 1) * l].copy_from_slice(items);
    }
    let mut scores = vec![0.0f32; 128 * (model.n_items() + 1)];
    group.bench_function("score_b128_l200_h64", |b| {
        b.iter(|| {
            model.score(black_box(&hist), 128, &mut scores);
            black_box(scores[1])
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
