//! GRU / LSTM forward + backward (full BPTT) at the GRU4Rec-like shape of the PyTorch comparison in
//! `scripts/bench_torch_rnn.py`: 1 layer, input 100, hidden 100, batch 128, length 50, f32, on 1 and 2
//! rayon threads. `dy` is all ones (the gradient of `sum(y)`), no padding.
//!
//! Run: `cargo bench -p seqrec-benches --bench rnn`

use criterion::{Criterion, criterion_group, criterion_main};
use seqrec_nn::{Gru, Lstm, Module, RnnConfig, init::Rng};
use seqrec_tensor::Tensor;
use std::hint::black_box;

const BATCH: usize = 128;
const SEQ: usize = 50;
const D: usize = 100;

fn bench_rnn(c: &mut Criterion) {
    let cfg = RnnConfig {
        input_size: D,
        hidden_size: D,
        num_layers: 1,
    };
    let mut rng = Rng::new(0);
    let x = rng.normal_tensor::<f32>(&[BATCH, SEQ, D], 1.0);
    let dy = Tensor::<f32>::full(&[BATCH, SEQ, D], 1.0);
    let mut y = Tensor::<f32>::zeros(&[BATCH, SEQ, D]);
    let mut dx = Tensor::<f32>::zeros(&[BATCH, SEQ, D]);
    let mut group = c.benchmark_group("rnn_fwd_bwd_b128_t50_d100");
    group.sample_size(20);
    for threads in [1, 2] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        let mut gru = Gru::<f32>::new("gru", cfg, &mut rng).unwrap();
        let mut last = gru.zero_state(BATCH);
        let mut cache = gru.new_cache(BATCH, SEQ);
        group.bench_function(format!("gru/threads={threads}"), |b| {
            pool.install(|| {
                b.iter(|| {
                    gru.zero_grad();
                    gru.forward(&mut y, &mut last, &mut cache, &x, None, None);
                    gru.backward(Some(&mut dx), None, &dy, None, &x, None, &mut cache);
                    black_box(&dx);
                })
            })
        });
        let mut lstm = Lstm::<f32>::new("lstm", cfg, &mut rng).unwrap();
        let mut last = lstm.zero_state(BATCH);
        let mut cache = lstm.new_cache(BATCH, SEQ);
        group.bench_function(format!("lstm/threads={threads}"), |b| {
            pool.install(|| {
                b.iter(|| {
                    lstm.zero_grad();
                    lstm.forward(&mut y, &mut last, &mut cache, &x, None, None);
                    lstm.backward(Some(&mut dx), None, &dy, None, &x, None, &mut cache);
                    black_box(&dx);
                })
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_rnn);
criterion_main!(benches);
