//! One training step of gSASRec and of BERT4Rec at their default ML-1M shapes, on the same 128 real
//! ML-1M users as `sasrec_epoch` (every 47th, leave-one-out training prefixes). An epoch is 48 such
//! steps (6,040 / 128 rounded up).
//!
//! - gSASRec: `GsasrecConfig::default()` (d 64, 2 blocks, 256 negatives per position, gBCE, tied
//!   output table);
//! - sampled softmax: the same network with `loss = sampled_softmax` (256 uniform negatives);
//! - gSASRec at SASRec's width (d 50, dropout 0.2), to set against `sasrec_epoch`;
//! - BERT4Rec: `Bert4recConfig::default()` (d 64, 2 blocks, 2 heads, FFN 256, mask probability 0.2,
//!   full softmax over the masked positions).
//!
//! Run: `cargo bench -p seqrec-benches --bench transformers_epoch` (needs `SEQREC_DATA_DIR` or
//! `../shared/data`).

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use seqrec_data::{Sequences, Split};
use seqrec_models::{Bert4rec, Bert4recConfig, GsasrecConfig, Model, Sasrec, SasrecLoss};

fn bench(c: &mut Criterion) {
    let ds = seqrec_benches::ml1m_sasrec();
    assert_eq!(ds.n_items(), 3416);
    let split = Split::leave_one_out(&ds);
    let subset = Sequences::from_prefixes(
        &ds,
        (0..128u32).map(|k| {
            let u = 1 + k * 47;
            (u, split.train_len(u))
        }),
    );
    let mut g = c.benchmark_group("transformers_ml1m");
    g.sample_size(10);
    // `_d50`: gSASRec's loss at SASRec's width and dropout (d 50, dropout 0.2), to compare the cost
    // of 256 negatives with `sasrec_epoch`'s one-negative and full-softmax steps at the same width.
    for (name, loss, hidden, dropout) in [
        ("gsasrec_train_step", SasrecLoss::Gbce, 64, 0.1),
        (
            "sampled_softmax_train_step",
            SasrecLoss::SampledSoftmax,
            64,
            0.1,
        ),
        ("gsasrec_d50_train_step", SasrecLoss::Gbce, 50, 0.2),
    ] {
        let config = GsasrecConfig {
            loss,
            hidden,
            dropout,
            ..GsasrecConfig::default()
        };
        let mut model = Sasrec::new(config.to_sasrec(), &subset, 0).unwrap();
        let mut epoch = 0;
        g.bench_function(name, |b| {
            b.iter(|| {
                epoch += 1;
                let r = model.train_epoch(&subset, epoch, &mut |_| {}).unwrap();
                assert_eq!(r.steps, 1);
                black_box(r.loss)
            })
        });
    }
    let mut model = Bert4rec::new(Bert4recConfig::default(), &subset, 0).unwrap();
    let mut epoch = 0;
    g.bench_function("bert4rec_train_step", |b| {
        b.iter(|| {
            epoch += 1;
            let r = model.train_epoch(&subset, epoch, &mut |_| {}).unwrap();
            assert_eq!(r.steps, 1);
            black_box(r.loss)
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
