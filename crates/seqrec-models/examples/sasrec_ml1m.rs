//! Trains SASRec on ML-1M (`ml-1m-sasrec.txt`, leave-one-out) for a few epochs and reports full-ranking
//! HR@10 / NDCG@10 on the validation targets (seen items excluded, as Klenitskiy & Vasilev 2023),
//! next to MostPop. A quick sanity run, not the reproduction (that is `cargo xtask train`).
//!
//! Run: `cargo run --release -p seqrec-models --example sasrec_ml1m -- [bce|ce] [epochs]`
//! (needs `SEQREC_DATA_DIR` or `../shared/data`).

use std::path::PathBuf;
use std::time::Instant;

use seqrec_data::{Dataset, Id, Split, Vocab};
use seqrec_metrics::{Exclude, NanPolicy, rank_full};
use seqrec_models::{Model, MostPop, Sasrec, SasrecConfig, SasrecLoss};

fn load_ml1m() -> Dataset {
    let dir = std::env::var_os("SEQREC_DATA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data"));
    let path = dir.join("ml-1m-sasrec.txt");
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

/// HR@10 and NDCG@10 over the validation cases, histories right-aligned in `model.max_history()`.
fn evaluate(model: &mut dyn Model, ds: &Dataset, split: &Split) -> (f64, f64) {
    let l = model.max_history();
    let cols = model.n_items() + 1;
    let (mut hr, mut ndcg) = (0.0, 0.0);
    let cases = split.valid();
    for chunk in cases.chunks(256) {
        let mut hist = vec![0u32; chunk.len() * l];
        for (r, c) in chunk.iter().enumerate() {
            let items = c.input_items(ds);
            let n = items.len().min(l);
            hist[(r + 1) * l - n..(r + 1) * l].copy_from_slice(&items[items.len() - n..]);
        }
        let mut scores = vec![0.0f32; chunk.len() * cols];
        model.score(&hist, chunk.len(), &mut scores);
        for (r, c) in chunk.iter().enumerate() {
            let t = c.target(ds);
            let mut seen: Vec<u32> = c
                .input_items(ds)
                .iter()
                .copied()
                .filter(|&i| i != t)
                .collect();
            seen.sort_unstable();
            seen.dedup();
            let row = &scores[r * cols..(r + 1) * cols];
            let rank = rank_full(row, t, Exclude::Sorted(&seen), NanPolicy::Error).unwrap();
            if rank < 10 {
                hr += 1.0;
                ndcg += 1.0 / (rank as f64 + 2.0).log2();
            }
        }
    }
    (hr / cases.len() as f64, ndcg / cases.len() as f64)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let loss = match args.get(1).map(String::as_str) {
        None | Some("bce") => SasrecLoss::Bce,
        Some("ce") => SasrecLoss::Ce,
        Some(other) => panic!("loss must be bce or ce, got {other}"),
    };
    let epochs: usize = args.get(2).map_or(3, |e| e.parse().expect("epochs"));
    let ds = load_ml1m();
    let split = Split::leave_one_out(&ds);
    let train = split.train_sequences(&ds).unwrap();
    let mut pop = MostPop::new(&train);
    pop.train_epoch(&train, 0, &mut |_| {}).unwrap();
    let (h, n) = evaluate(&mut pop, &ds, &split);
    println!("mostpop: valid HR@10 {h:.4} NDCG@10 {n:.4}");
    let config = SasrecConfig {
        loss,
        ..SasrecConfig::default()
    };
    let mut model = Sasrec::new(config, &train, 42).unwrap();
    for epoch in 0..epochs {
        let t = Instant::now();
        let r = model.train_epoch(&train, epoch, &mut |_| {}).unwrap();
        let train_s = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let (h, n) = evaluate(&mut model, &ds, &split);
        println!(
            "sasrec {loss:?} epoch {epoch}: loss {:.4} ({} steps, {train_s:.1} s), valid HR@10 {h:.4} NDCG@10 {n:.4} (eval {:.1} s)",
            r.loss,
            r.steps,
            t.elapsed().as_secs_f64()
        );
    }
}
