//! Parse + prepare speed of `seqrec-data` on ML-1M and a synthetic log, and cache load time.
//!
//! Run: `cargo bench -p seqrec-benches --bench data_prepare` (needs `SEQREC_DATA_DIR` or
//! `<workspace>/../shared/data`).

use std::path::PathBuf;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use seqrec_data::synth::{SynthConfig, write_movielens};
use seqrec_data::{PrepareConfig, ReadOptions, cache, prepare, read_log, read_log_from};

fn data(name: &str) -> PathBuf {
    let dir = std::env::var_os("SEQREC_DATA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data"));
    let p = dir.join(name);
    assert!(
        p.is_file(),
        "missing dataset {} (set SEQREC_DATA_DIR)",
        p.display()
    );
    p
}

fn ml1m(c: &mut Criterion) {
    let src = data("ml-1m-ratings.dat");
    let opts = ReadOptions::default();
    let cfg = PrepareConfig::sasrec();
    let mut g = c.benchmark_group("ml1m");
    g.sample_size(20).measurement_time(Duration::from_secs(8));
    g.throughput(Throughput::Elements(1_000_209));
    g.bench_function("read", |b| b.iter(|| read_log(&src, &opts).unwrap()));
    let par = ReadOptions {
        parallel: true,
        ..ReadOptions::default()
    };
    g.bench_function("read_parallel", |b| {
        b.iter(|| read_log(&src, &par).unwrap())
    });
    g.bench_function("read_prepare_sasrec", |b| {
        b.iter(|| prepare(&read_log(&src, &opts).unwrap(), &cfg).unwrap())
    });
    let log = read_log(&src, &opts).unwrap();
    g.bench_function("prepare_sasrec", |b| {
        b.iter(|| prepare(&log, &cfg).unwrap())
    });
    let ds = prepare(&log, &cfg).unwrap();
    let dir = std::env::temp_dir().join(format!("seqrec-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = cache::cache_path(&dir, &src);
    let key = cache::CacheKey::new(&src, &opts, &cfg).unwrap();
    cache::save(&path, &key, &ds).unwrap();
    g.bench_function("cache_load", |b| {
        b.iter(|| cache::load(&path, &key).unwrap())
    });
    g.bench_function("cache_save", |b| {
        b.iter(|| cache::save(&path, &key, &ds).unwrap())
    });
    g.finish();
    std::fs::remove_dir_all(&dir).unwrap();
}

fn synthetic(c: &mut Criterion) {
    const EVENTS: u64 = 5_000_000;
    let mut text = Vec::new();
    write_movielens(
        &mut text,
        &SynthConfig {
            events: EVENTS,
            ..SynthConfig::default()
        },
    )
    .unwrap();
    let opts = ReadOptions::default();
    let mut g = c.benchmark_group("synth5m");
    g.sample_size(10).measurement_time(Duration::from_secs(10));
    g.throughput(Throughput::Elements(EVENTS));
    g.bench_function("read", |b| {
        b.iter(|| read_log_from(text.as_slice(), "synth.dat".as_ref(), &opts).unwrap())
    });
    let log = read_log_from(text.as_slice(), "synth.dat".as_ref(), &opts).unwrap();
    g.bench_function("prepare_5core", |b| {
        let cfg = PrepareConfig::builder()
            .min_user_events(5)
            .min_item_events(5)
            .build()
            .unwrap();
        b.iter(|| prepare(&log, &cfg).unwrap())
    });
    g.finish();
}

criterion_group!(benches, ml1m, synthetic);
criterion_main!(benches);
