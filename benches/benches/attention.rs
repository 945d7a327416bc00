//! Forward + backward of a two-block causal self-attention stack at SASRec's ML-1M shape (batch 128,
//! length 200, width 50, 1 head, feed-forward width 50, dropout 0.2, training mode), on 1 and 2 rayon
//! threads. The PyTorch side is `scripts/bench_torch_attn.py` (same shapes and layer-norm placements).
//!
//! - `sasrec`: SASRec.pytorch's block (`NormPlacement::SasRec`, causal mask, padded outputs zeroed,
//!   final layer norm) on left-padded sequences;
//! - `post_ln`: two PyTorch-style post-LN `TransformerEncoderLayer`s (causal + key padding).
//!
//! Run: `cargo bench -p seqrec-benches --bench attention`. With `SEQREC_BENCH_CPU=1` each case first
//! prints the median **CPU time** (time on CPU of all the process's threads, in ns from
//! `/proc/self/task/*/schedstat`) of 10 steps: on a machine shared with other jobs wall-clock medians
//! mostly measure the contention, CPU time much less so. `scripts/bench_torch_attn.py` prints both for PyTorch.

use criterion::{Criterion, criterion_group, criterion_main};
use seqrec_nn::init::Rng;
use seqrec_nn::{
    Activation, AttentionMask, Module, NormPlacement, Phase, TransformerBlockConfig,
    TransformerEncoder, TransformerEncoderCache,
};
use seqrec_tensor::Tensor;

const B: usize = 128;
const T: usize = 200;
const D: usize = 50;

/// Left padding with lengths spread over 1..=T (ML-1M users mostly fill the 200-item window; this is
/// a harder mix), deterministic.
fn keep_flags() -> Vec<bool> {
    let mut keep = vec![false; B * T];
    for b in 0..B {
        let len = 1 + (b * 7919) % T;
        keep[b * T + (T - len)..(b + 1) * T].fill(true);
    }
    keep
}

/// CPU seconds this process's threads have run (all threads: the rayon workers too), in nanoseconds
/// from `/proc/self/task/*/schedstat` (Linux; field 1 is the time on CPU). Falls back to the 10 ms
/// ticks of `/proc/self/stat` where schedstat is missing.
fn cpu_seconds() -> f64 {
    let from_tasks = std::fs::read_dir("/proc/self/task").ok().map(|dir| {
        dir.filter_map(|e| e.ok())
            .filter_map(|e| std::fs::read_to_string(e.path().join("schedstat")).ok())
            .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
            .sum::<u64>()
    });
    if let Some(ns) = from_tasks.filter(|&ns| ns > 0) {
        return ns as f64 * 1e-9;
    }
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn bench_stack(c: &mut Criterion, name: &str, config: TransformerBlockConfig, final_norm: bool) {
    let mut rng = Rng::new(1);
    let mut enc = TransformerEncoder::<f32>::new("enc", &config, 2, final_norm, &mut rng).unwrap();
    let keep = keep_flags();
    let mut x = rng.normal_tensor::<f32>(&[B, T, D], 1.0);
    for (row, &k) in x.as_mut_slice().chunks_exact_mut(D).zip(&keep) {
        if !k {
            row.fill(0.0);
        }
    }
    let dy = rng.normal_tensor::<f32>(&[B, T, D], 1.0);
    let mut cache = TransformerEncoderCache::new(&enc, B, T);
    let mut y = Tensor::zeros(&[B, T, D]);
    let mut dx = Tensor::zeros(&[B, T, D]);
    for threads in [1, 2] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        let mut step = 0u64;
        if std::env::var_os("SEQREC_BENCH_CPU").is_some() {
            let (mut cpu, mut wall) = (Vec::new(), Vec::new());
            for _ in 0..10 {
                let (c0, w0) = (cpu_seconds(), std::time::Instant::now());
                pool.install(|| {
                    step += 1;
                    enc.zero_grad();
                    enc.forward(&mut y, &mut cache, &x, Some(&keep), Phase::Train { step });
                    enc.backward(&mut dx, &dy, &x, Some(&keep), &mut cache);
                });
                wall.push(w0.elapsed().as_secs_f64());
                cpu.push(cpu_seconds() - c0);
            }
            println!(
                "attention/{name}_fwd_bwd/threads{threads}: median of 10: cpu {:.1} ms, wall {:.1} ms",
                median(cpu) * 1e3,
                median(wall) * 1e3
            );
        }
        c.bench_function(
            &format!("attention/{name}_fwd_bwd/threads{threads}"),
            |bch| {
                bch.iter(|| {
                    pool.install(|| {
                        step += 1;
                        enc.zero_grad();
                        enc.forward(&mut y, &mut cache, &x, Some(&keep), Phase::Train { step });
                        enc.backward(&mut dx, &dy, &x, Some(&keep), &mut cache);
                    })
                })
            },
        );
    }
}

fn benches(c: &mut Criterion) {
    let mut sasrec = TransformerBlockConfig::sasrec(D, 1, 0.2, 7);
    // SASRec.pytorch's attention has only the causal mask (see TransformerBlockConfig::mask_padded_keys).
    sasrec.mask_padded_keys = false;
    bench_stack(c, "sasrec", sasrec, true);
    let post = TransformerBlockConfig {
        d_model: D,
        num_heads: 1,
        d_ff: D,
        activation: Activation::Relu,
        dropout: 0.2,
        mask: AttentionMask::Causal,
        norm: NormPlacement::Post,
        eps: 1e-5,
        zero_padded_outputs: false,
        mask_padded_keys: true,
        output_projection: true,
        seed: 7,
    };
    bench_stack(c, "post_ln", post, false);
}

criterion_group! {
    name = attention;
    config = Criterion::default().sample_size(20).measurement_time(std::time::Duration::from_secs(8));
    targets = benches
}
criterion_main!(attention);
