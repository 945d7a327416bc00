//! LSTM + attention training step and scoring at ML-1M scale (`ml-1m-sasrec.txt`: 6,040 users,
//! 3,416 items), next to `gru4rec_epoch` (same batch, same widths).
//!
//! One training step = one `LstmAttn::train_epoch` over 128 users spread over the catalogue of users
//! (every 47th): one batch of 128 right-aligned windows of maxlen 200 with the default config
//! (embedding 64, LSTM 64, attention 64, MLP 128, tied output, full softmax over every position),
//! for each context fusion. An ML-1M epoch is 48 such batches, so seconds per epoch ~ 48 x median.
//!
//! Run: `cargo bench -p seqrec-benches --bench lstm_attn_epoch`.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use seqrec_data::{Id, Sequences, Split};
use seqrec_models::{ContextFusion, LstmAttn, LstmAttnConfig, Model};

fn bench(c: &mut Criterion) {
    let ds = seqrec_benches::ml1m_sasrec();
    let split = Split::leave_one_out(&ds);
    let train = split.train_sequences(&ds).unwrap();
    let picked: Vec<(Id, usize)> = (0..128)
        .map(|k| train.user(k * 47))
        .map(|u| (u, ds.items_of(u).len() - 2))
        .collect();
    let one_batch = Sequences::from_prefixes(&ds, picked);
    let mut group = c.benchmark_group("lstm_attn_ml1m");
    group.sample_size(10);
    for (name, context) in [
        ("none", ContextFusion::None),
        ("concat", ContextFusion::Concat),
        ("attention", ContextFusion::Attention),
    ] {
        let cfg = LstmAttnConfig {
            context,
            ..LstmAttnConfig::default()
        };
        let mut model = LstmAttn::new(cfg, &train, 0).unwrap();
        let mut epoch = 0;
        group.bench_function(format!("train_step_b128_l200_h64_{name}"), |b| {
            b.iter(|| {
                let r = model.train_epoch(&one_batch, epoch, &mut |_| {}).unwrap();
                epoch += 1;
                black_box(r.loss)
            })
        });
    }
    let mut model = LstmAttn::new(LstmAttnConfig::default(), &train, 0).unwrap();
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
