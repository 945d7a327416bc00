//! GRU / LSTM forward + backward (full BPTT) at the GRU4Rec-like shape of the PyTorch comparison in
//! `scripts/bench_torch_rnn.py`: 1 layer, input 100, hidden 100, batch 128, length 50, f32, on 1 and 2
//! rayon threads. `dy` is all ones (the gradient of `sum(y)`), no padding.
//!
//! Two groups: wall-clock time on 1 and 2 threads, and, for 1 thread, the CPU time of the running thread
//! (from `/proc/thread-self/schedstat`), which is far less disturbed by other processes on a shared machine
//! (`scripts/bench_torch_rnn.py` reports PyTorch's `time.thread_time()` to match).
//!
//! Run: `cargo bench -p seqrec-benches --bench rnn`

use criterion::{Criterion, criterion_group, criterion_main};
use seqrec_nn::{Gru, Lstm, Module, RnnConfig, init::Rng};
use seqrec_tensor::Tensor;
use std::hint::black_box;
use std::time::Duration;

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

    // CPU time of the measuring thread (1 thread): nanoseconds on CPU from the kernel's scheduler stats.
    let mut group = c.benchmark_group("rnn_fwd_bwd_b128_t50_d100_cputime");
    group.sample_size(20);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let mut gru = Gru::<f32>::new("gru", cfg, &mut rng).unwrap();
    let mut lstm = Lstm::<f32>::new("lstm", cfg, &mut rng).unwrap();
    let mut gl = gru.zero_state(BATCH);
    let mut gc = gru.new_cache(BATCH, SEQ);
    let mut ll = lstm.zero_state(BATCH);
    let mut lc = lstm.new_cache(BATCH, SEQ);
    group.bench_function("gru/threads=1", |b| {
        pool.install(|| {
            b.iter_custom(|iters| {
                let t0 = thread_cpu_ns();
                for _ in 0..iters {
                    gru.zero_grad();
                    gru.forward(&mut y, &mut gl, &mut gc, &x, None, None);
                    gru.backward(Some(&mut dx), None, &dy, None, &x, None, &mut gc);
                    black_box(&dx);
                }
                Duration::from_nanos(thread_cpu_ns() - t0)
            })
        })
    });
    group.bench_function("lstm/threads=1", |b| {
        pool.install(|| {
            b.iter_custom(|iters| {
                let t0 = thread_cpu_ns();
                for _ in 0..iters {
                    lstm.zero_grad();
                    lstm.forward(&mut y, &mut ll, &mut lc, &x, None, None);
                    lstm.backward(Some(&mut dx), None, &dy, None, &x, None, &mut lc);
                    black_box(&dx);
                }
                Duration::from_nanos(thread_cpu_ns() - t0)
            })
        })
    });
    group.finish();
}

/// Nanoseconds the calling thread has spent on a CPU (first field of `/proc/thread-self/schedstat`).
fn thread_cpu_ns() -> u64 {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat")
        .expect("/proc/thread-self/schedstat");
    s.split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .expect("schedstat format")
}

criterion_group!(benches, bench_rnn);
criterion_main!(benches);
