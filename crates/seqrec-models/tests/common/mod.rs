//! Helpers shared by the model tests that read real data: MovieLens-100k, prepared with the SASRec
//! recipe and split leave-one-out, and a full-ranking validation NDCG@10.

#![allow(dead_code)]

use seqrec_data::{Dataset, PrepareConfig, ReadOptions, Split, prepare, read_log};
use seqrec_metrics::{Exclude, NanPolicy, rank_full};
use seqrec_models::Model;

/// `$SEQREC_DATA_DIR`, else `../shared/data` beside the workspace.
pub fn data_dir() -> std::path::PathBuf {
    std::env::var_os("SEQREC_DATA_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data")
        })
}

/// ML-100k (`ml-100k-u.data`) with the SASRec recipe and its leave-one-out split. Fails (does not
/// skip) when the file is missing.
pub fn ml100k() -> (Dataset, Split) {
    let path = data_dir().join("ml-100k-u.data");
    let log = read_log(&path, &ReadOptions::default())
        .unwrap_or_else(|e| panic!("{}: {e} (set SEQREC_DATA_DIR)", path.display()));
    let ds = prepare(&log, &PrepareConfig::sasrec()).unwrap();
    let split = Split::leave_one_out(&ds);
    (ds, split)
}

/// Mean NDCG@10 over the first `limit` validation cases, ranking the target against every item not
/// in the history (ties count against the model).
pub fn valid_ndcg10(model: &mut dyn Model, ds: &Dataset, split: &Split, limit: usize) -> f64 {
    let l = model.max_history();
    let cols = model.n_items() + 1;
    let cases = &split.valid()[..limit.min(split.valid().len())];
    let mut histories = vec![0u32; cases.len() * l];
    for (r, case) in cases.iter().enumerate() {
        let items = case.input_items(ds);
        let h = &items[items.len().saturating_sub(l)..];
        histories[r * l + l - h.len()..(r + 1) * l].copy_from_slice(h);
    }
    let mut scores = vec![0.0f32; cases.len() * cols];
    model.score(&histories, cases.len(), &mut scores);
    let mut total = 0.0;
    for (r, case) in cases.iter().enumerate() {
        let t = case.target(ds);
        let mut seen: Vec<u32> = case
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
            total += 1.0 / ((rank + 2) as f64).log2();
        }
    }
    total / cases.len() as f64
}
