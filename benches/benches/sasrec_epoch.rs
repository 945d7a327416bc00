//! One SASRec training step at the paper's ML-1M shape (batch 128, maxlen 200, d 50, 2 blocks, 1 head,
//! dropout 0.2, 3,416 items) for both losses, and scoring 128 histories against the catalogue.
//!
//! The batch is 128 real ML-1M users (every 47th, leave-one-out training prefixes), so the mix of
//! padded and full windows matches the whole data set; the bench prints the mean number of targets per
//! row for the subset and for all 6,040 users. An epoch is 48 such steps (6,040 / 128 rounded up).
//!
//! Run: `cargo bench -p seqrec-benches --bench sasrec_epoch` (needs `SEQREC_DATA_DIR` or
//! `../shared/data`).

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use seqrec_data::{SasrecBatcher, SasrecConfig as BatchConfig, Sequences, Split};
use seqrec_models::{Model, Precision, Sasrec, SasrecConfig, SasrecLoss};

fn targets_per_row(seqs: &Sequences<'_>) -> f64 {
    let b = SasrecBatcher::new(seqs.clone(), BatchConfig::default()).unwrap();
    b.n_targets() as f64 / b.n_windows() as f64
}

fn bench(c: &mut Criterion) {
    let ds = seqrec_benches::ml1m_sasrec();
    assert_eq!(ds.n_items(), 3416);
    let split = Split::leave_one_out(&ds);
    let all = split.train_sequences(&ds).unwrap();
    let subset = Sequences::from_prefixes(
        &ds,
        (0..128u32).map(|k| {
            let u = 1 + k * 47;
            (u, split.train_len(u))
        }),
    );
    eprintln!(
        "targets per row: subset {:.1}, all users {:.1}",
        targets_per_row(&subset),
        targets_per_row(&all)
    );
    let mut g = c.benchmark_group("sasrec_ml1m");
    g.sample_size(10);
    for loss in [SasrecLoss::Bce, SasrecLoss::Ce] {
        let config = SasrecConfig {
            loss,
            ..SasrecConfig::default()
        };
        let mut model = Sasrec::new(config, &subset, 0).unwrap();
        let mut epoch = 0;
        g.bench_function(format!("train_step_{loss:?}").to_lowercase(), |b| {
            b.iter(|| {
                epoch += 1;
                let r = model.train_epoch(&subset, epoch, &mut |_| {}).unwrap();
                assert_eq!(r.steps, 1);
                black_box(r.loss)
            })
        });
    }
    // Scoring: 128 histories (the subset's training prefixes, right-aligned) against all items.
    let mut model = Sasrec::new(SasrecConfig::default(), &subset, 0).unwrap();
    let l = model.max_history();
    let mut histories = vec![0u32; 128 * l];
    for k in 0..subset.len() {
        let items = subset.items(k);
        let n = items.len().min(l);
        histories[(k + 1) * l - n..(k + 1) * l].copy_from_slice(&items[items.len() - n..]);
    }
    let mut scores = vec![0.0f32; 128 * (ds.n_items() + 1)];
    g.bench_function("score_128", |b| {
        b.iter(|| {
            model.score(&histories, 128, &mut scores);
            black_box(scores[1])
        })
    });
    // The server's heaviest batch: 64 full windows (the last 200 training items of the first 64
    // users with that many) through the inference-only forward that serving uses.
    let long: Vec<u32> = (1..=ds.n_users() as u32)
        .filter(|&u| split.train_len(u) >= l)
        .take(64)
        .collect();
    assert_eq!(long.len(), 64);
    let mut windows = Vec::with_capacity(64 * l);
    for &u in &long {
        let items = split.train_items(&ds, u);
        windows.extend_from_slice(&items[items.len() - l..]);
    }
    g.bench_function("serve_64x200", |b| {
        b.iter(|| {
            model.score_serving(&windows, 64, &mut scores[..64 * (ds.n_items() + 1)]);
            black_box(scores[1])
        })
    });
    // The same batch with the projections and feed-forwards in bf16 on AMX tiles (`serve
    // --precision bf16`), where the CPU has them.
    if model.set_serving_precision(Precision::Bf16).is_ok() {
        g.bench_function("serve_64x200_bf16", |b| {
            b.iter(|| {
                model.score_serving(&windows, 64, &mut scores[..64 * (ds.n_items() + 1)]);
                black_box(scores[1])
            })
        });
        model.set_serving_precision(Precision::F32).unwrap();
    }
    g.finish();
}

/// The three GEMMs of one chunk of the full cross-entropy (2,455 rows, the chunk size at 3,417
/// columns), and the transposed alternative for the item-table gradient (`det_hvt_dl`, measured 2.5x
/// slower than `de_dlt_hv` here, hence not used).
fn bench_ce_gemms(c: &mut Criterion) {
    use seqrec_tensor::{Tensor, Transpose, gemm};
    let (m, n, d) = (2455, 3417, 50);
    let mut rng = seqrec_nn::init::Rng::new(1);
    let hv = rng.normal_tensor::<f32>(&[m, d], 1.0);
    let e = rng.normal_tensor::<f32>(&[n, d], 1.0);
    let dl = rng.normal_tensor::<f32>(&[m, n], 1.0);
    let mut logits = Tensor::zeros(&[m, n]);
    let mut dhv = Tensor::zeros(&[m, d]);
    let mut de = Tensor::zeros(&[n, d]);
    let mut de_t = Tensor::zeros(&[d, n]);
    let mut g = c.benchmark_group("sasrec_ce_gemm");
    g.sample_size(10);
    g.bench_function("logits_hv_et", |b| {
        b.iter(|| {
            gemm(
                &mut logits,
                1.0,
                &hv,
                Transpose::No,
                &e,
                Transpose::Yes,
                0.0,
            )
        })
    });
    g.bench_function("dhv_dl_e", |b| {
        b.iter(|| gemm(&mut dhv, 1.0, &dl, Transpose::No, &e, Transpose::No, 0.0))
    });
    g.bench_function("de_dlt_hv", |b| {
        b.iter(|| gemm(&mut de, 1.0, &dl, Transpose::Yes, &hv, Transpose::No, 1.0))
    });
    g.bench_function("det_hvt_dl", |b| {
        b.iter(|| gemm(&mut de_t, 1.0, &hv, Transpose::Yes, &dl, Transpose::No, 1.0))
    });
    g.finish();
}

criterion_group!(benches, bench, bench_ce_gemms);
criterion_main!(benches);
