//! seqrec-tensor kernels at recommender shapes, on 1 and 2 rayon threads.
//!
//! GEMM throughput is reported as elements/s with one element = one FLOP (2 m n k per product), so
//! criterion's `Gelem/s` reads as GFLOP/s. Compare with `python3 scripts/bench_torch.py` (same shapes).
//!
//! Run: `cargo bench -p seqrec-benches --bench gemm` (filter e.g. `-- gemm/logits`).

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use seqrec_tensor::{self as st, Mask, Tensor, Transpose};
use std::hint::black_box;
use std::time::Duration;

fn rand_tensor(shape: &[usize], seed: u64) -> Tensor<f32> {
    Tensor::from_fn(shape, |i| {
        ((st::splitmix64(seed ^ i as u64) >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    })
}

fn pool(threads: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
}

/// (name, m, k, n, transpose of B): B is stored [k, n], or [n, k] when transposed (logits against an
/// item-embedding table [items, d] are `h E^T`).
const GEMMS: [(&str, usize, usize, usize, Transpose); 4] = [
    ("proj_25600x50x50", 25_600, 50, 50, Transpose::No),
    ("logits_25600x50x3416", 25_600, 50, 3_416, Transpose::No),
    ("logits_nt_25600x50x3416", 25_600, 50, 3_416, Transpose::Yes),
    ("ffn_128x100x300", 128, 100, 300, Transpose::No),
];

fn bench_gemm(c: &mut Criterion) {
    let mut g = c.benchmark_group("gemm");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    for (name, m, k, n, tb) in GEMMS {
        let a = rand_tensor(&[m, k], 1);
        let b = match tb {
            Transpose::No => rand_tensor(&[k, n], 2),
            Transpose::Yes => rand_tensor(&[n, k], 2),
        };
        let mut out = Tensor::zeros(&[m, n]);
        g.throughput(Throughput::Elements((2 * m * n * k) as u64));
        for threads in [1, 2] {
            let p = pool(threads);
            g.bench_with_input(
                BenchmarkId::new(name, format!("{threads}t")),
                &threads,
                |bch, _| {
                    p.install(|| {
                        bch.iter(|| {
                            st::gemm(&mut out, 1.0, &a, Transpose::No, &b, tb, 0.0);
                            black_box(&out);
                        })
                    })
                },
            );
        }
    }
    g.finish();

    // CPU time of the measuring thread (1 thread), far less disturbed by other processes on a shared
    // machine than wall time; `scripts/bench_torch.py` prints PyTorch's `time.thread_time()` to match.
    let mut g = c.benchmark_group("gemm_cputime");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    let p = pool(1);
    for (name, m, k, n, tb) in GEMMS {
        let a = rand_tensor(&[m, k], 1);
        let b = match tb {
            Transpose::No => rand_tensor(&[k, n], 2),
            Transpose::Yes => rand_tensor(&[n, k], 2),
        };
        let mut out = Tensor::zeros(&[m, n]);
        g.throughput(Throughput::Elements((2 * m * n * k) as u64));
        g.bench_function(BenchmarkId::new(name, "1t"), |bch| {
            p.install(|| {
                bch.iter_custom(|iters| {
                    let t0 = thread_cpu_ns();
                    for _ in 0..iters {
                        st::gemm(&mut out, 1.0, &a, Transpose::No, &b, tb, 0.0);
                        black_box(&out);
                    }
                    Duration::from_nanos(thread_cpu_ns() - t0)
                })
            })
        });
    }
    g.finish();
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

fn bench_rows(c: &mut Criterion) {
    let mut g = c.benchmark_group("rows");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    let x = rand_tensor(&[25_600, 3_416], 3);
    let mut y = Tensor::zeros(&[25_600, 3_416]);
    g.throughput(Throughput::Elements(x.numel() as u64));
    for threads in [1, 2] {
        let p = pool(threads);
        g.bench_function(
            BenchmarkId::new("softmax_25600x3416", format!("{threads}t")),
            |bch| p.install(|| bch.iter(|| st::softmax_forward(&mut y, &x, Mask::None))),
        );
    }
    let dy = rand_tensor(&[25_600, 3_416], 8);
    let mut dx = Tensor::zeros(&[25_600, 3_416]);
    st::softmax_forward(&mut y, &x, Mask::None);
    for threads in [1, 2] {
        let p = pool(threads);
        g.bench_function(
            BenchmarkId::new("softmax_bwd_25600x3416", format!("{threads}t")),
            |bch| p.install(|| bch.iter(|| st::softmax_backward(&mut dx, &dy, &y))),
        );
    }
    drop((x, y, dy, dx));
    let (r, cdim) = (25_600, 50);
    let x = rand_tensor(&[r, cdim], 4);
    let gamma = rand_tensor(&[cdim], 5);
    let beta = rand_tensor(&[cdim], 6);
    let dout = rand_tensor(&[r, cdim], 7);
    let (mut y, mut mean, mut rstd) = (
        Tensor::zeros(&[r, cdim]),
        Tensor::zeros(&[r]),
        Tensor::zeros(&[r]),
    );
    let (mut dx, mut dg, mut db) = (
        Tensor::zeros(&[r, cdim]),
        Tensor::zeros(&[cdim]),
        Tensor::zeros(&[cdim]),
    );
    g.throughput(Throughput::Elements((r * cdim) as u64));
    for threads in [1, 2] {
        let p = pool(threads);
        g.bench_function(
            BenchmarkId::new("layernorm_fwd_25600x50", format!("{threads}t")),
            |bch| {
                p.install(|| {
                    bch.iter(|| {
                        st::layernorm_forward(&mut y, &mut mean, &mut rstd, &x, &gamma, &beta, 1e-5)
                    })
                })
            },
        );
        g.bench_function(
            BenchmarkId::new("layernorm_bwd_25600x50", format!("{threads}t")),
            |bch| {
                p.install(|| {
                    bch.iter(|| {
                        st::layernorm_backward(
                            &mut dx, &mut dg, &mut db, &dout, &x, &mean, &rstd, &gamma,
                        )
                    })
                })
            },
        );
    }
    g.finish();
}

/// The serving forward's projections (`x [512, 50] W^T + b`, one group of packed positions at
/// `d = 50`; the feed-forward's first layer at `d_ff = 200`) in `f32` (the AVX-512 GEMM) and in
/// bf16 on AMX tiles, one thread. Skips the AMX side on a CPU without it.
fn bench_linear_bf16(c: &mut Criterion) {
    let mut g = c.benchmark_group("linear_512");
    g.sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    let p = pool(1);
    for (m, k, n) in [(512, 50, 50), (512, 50, 200)] {
        let x = rand_tensor(&[m, k], 1);
        let w = rand_tensor(&[n, k], 2);
        let bias = rand_tensor(&[n], 3);
        let mut out = vec![0.0f32; m * n];
        g.throughput(Throughput::Elements((2 * m * n * k) as u64));
        let name = format!("{m}x{k}x{n}");
        g.bench_function(BenchmarkId::new("f32", &name), |bch| {
            p.install(|| {
                bch.iter(|| {
                    let o = out.as_mut_slice();
                    st::gemm_slice(
                        (m, k, n),
                        1.0,
                        x.as_slice(),
                        Transpose::No,
                        w.as_slice(),
                        Transpose::Yes,
                        0.0,
                        o,
                    );
                    for row in o.chunks_exact_mut(n) {
                        for (v, &b) in row.iter_mut().zip(bias.as_slice()) {
                            *v += b;
                        }
                    }
                    black_box(&out);
                })
            })
        });
        if !st::amx::available() {
            continue;
        }
        let mut packed = st::amx::PackedB::new();
        let mut scratch = st::amx::AmxScratch::new();
        // The serving forward packs on every call (not per group): after the first, unchanged
        // weights cost one comparison, timed on its own.
        g.bench_function(BenchmarkId::new("amx_pack_unchanged", &name), |bch| {
            bch.iter(|| {
                packed.pack(w.as_slice(), n, k);
                black_box(&packed);
            })
        });
        g.bench_function(BenchmarkId::new("amx_bf16", &name), |bch| {
            bch.iter(|| {
                scratch.linear(&mut out, x.as_slice(), &packed, Some(bias.as_slice()));
                black_box(&out);
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench_gemm, bench_rows, bench_linear_bf16);
criterion_main!(benches);
