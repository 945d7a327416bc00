//! GRU4Rec's official recipe on a real session log: session-parallel mini-batches with BPR-max
//! (and the other losses) on the DIGINETICA sample in `SEQREC_DATA_DIR`.

use seqrec_data::{
    Dataset, EvalBatcher, Format, PrepareConfig, ReadOptions, Sequences, Split, prepare, read_log,
};
use seqrec_metrics::{Exclude, Metric, NanPolicy, rank_full};
use seqrec_models::{Gru4rec, Gru4recBatching, Gru4recConfig, Gru4recLoss, Model};

fn data_dir() -> std::path::PathBuf {
    std::env::var_os("SEQREC_DATA_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data")
        })
}

/// The DIGINETICA sample, sessions as sequences, every view kept; fails if the file is missing.
fn diginetica() -> Dataset {
    let path = data_dir().join("diginetica-sample-item-views.csv");
    let opts = ReadOptions {
        format: Some(Format::Delimited { delimiter: b';' }),
        ..ReadOptions::default()
    };
    let log = read_log(&path, &opts)
        .unwrap_or_else(|e| panic!("{}: {e} (set SEQREC_DATA_DIR)", path.display()));
    assert!(
        log.sessions,
        "the session_id column makes sessions the sequences"
    );
    let ds = prepare(&log, &PrepareConfig::default()).unwrap();
    // The sample's README: 12,391 views in 2,986 sessions over 7,139 items.
    assert_eq!(
        (ds.n_users(), ds.n_items(), ds.n_events()),
        (2986, 7139, 12_391)
    );
    ds
}

/// Recall@20 and MRR@20 of the validation cases (full ranking, session items excluded).
fn recall_mrr20(m: &mut Gru4rec, ds: &Dataset, split: &Split) -> (f64, f64) {
    let cases = split.valid();
    let mut eb = EvalBatcher::new(ds, cases, 512, m.max_history(), None).unwrap();
    let width = ds.n_items() + 1;
    let (mut recall, mut mrr) = (0.0, 0.0);
    while let Some(b) = eb.next_batch() {
        let (rows, l) = (b.rows, b.maxlen);
        let mut scores = vec![0f32; rows * width];
        m.score(&b.inputs[..rows * l], rows, &mut scores);
        for r in 0..rows {
            let mut hist = cases[b.case_index[r]].input_items(ds).to_vec();
            hist.sort_unstable();
            hist.dedup();
            let rank = rank_full(
                &scores[r * width..(r + 1) * width],
                b.targets[r],
                Exclude::Sorted(&hist),
                NanPolicy::Error,
            )
            .unwrap();
            recall += Metric::Recall(20).value(rank);
            mrr += Metric::MrrAt(20).value(rank);
        }
    }
    let n = cases.len() as f64;
    (recall / n, mrr / n)
}

fn session_config(loss: Gru4recLoss) -> Gru4recConfig {
    Gru4recConfig {
        embedding_dim: 32,
        hidden_size: 32,
        loss,
        bpreg: 1.0,
        n_negatives: 256,
        batching: Gru4recBatching::SessionParallel,
        batch_size: 64,
        maxlen: 50,
        lr: 1e-2,
        dropout_embedding: 0.0,
        dropout_hidden: 0.0,
        ..Gru4recConfig::default()
    }
}

/// Session-parallel BPR-max training on DIGINETICA: the loss falls, and validation Recall@20 rises
/// above the untrained model's. (A short run; the figures of a longer one are in the report.)
#[test]
fn diginetica_session_parallel_bpr_max_learns() {
    let ds = diginetica();
    let split = Split::leave_one_out(&ds);
    let train = split.train_sequences(&ds).unwrap();
    let mut m = Gru4rec::new(session_config(Gru4recLoss::BprMax), &train, 0).unwrap();
    let (r0, _) = recall_mrr20(&mut m, &ds, &split);
    let mut steps = Vec::new();
    let first = m.train_epoch(&train, 0, &mut |s| steps.push(*s)).unwrap();
    // Every training session with two or more events enters a lane exactly once per epoch.
    let sessions = (0..train.len())
        .filter(|&k| train.items(k).len() >= 2)
        .count();
    assert_eq!(first.sequences, sessions);
    assert_eq!(first.steps, steps.len());
    assert!(steps.iter().all(|s| s.steps == first.steps));
    let mut last = first.loss;
    for e in 1..3 {
        last = m.train_epoch(&train, e, &mut |_| {}).unwrap().loss;
    }
    let (r1, mrr1) = recall_mrr20(&mut m, &ds, &split);
    eprintln!(
        "{} steps/epoch; loss {} -> {last}; valid Recall@20 {r0} -> {r1}, MRR@20 {mrr1}",
        first.steps, first.loss
    );
    assert!(last < first.loss, "loss {} -> {last}", first.loss);
    assert!(
        r1 > r0 + 0.015 && mrr1 > 0.0,
        "Recall@20 {r0} -> {r1}, MRR@20 {mrr1}"
    );
}

/// The same seed gives the same session-parallel run for every loss (lanes, negatives and
/// dropout are keyed by seed, epoch and step).
#[test]
fn session_parallel_runs_are_deterministic() {
    let ds = diginetica();
    let split = Split::leave_one_out(&ds);
    let train: Sequences<'_> = split.train_sequences(&ds).unwrap();
    for loss in [Gru4recLoss::Ce, Gru4recLoss::SampledCe, Gru4recLoss::BprMax] {
        let cfg = Gru4recConfig {
            hidden_size: 16,
            embedding_dim: 16,
            n_negatives: 64,
            batch_size: 256,
            dropout_hidden: 0.2,
            ..session_config(loss)
        };
        let run = || {
            let mut m = Gru4rec::new(cfg.clone(), &train, 5).unwrap();
            let loss = m.train_epoch(&train, 0, &mut |_| {}).unwrap().loss;
            let mut p = Vec::new();
            m.visit_params(&mut |q| p.push(q.value.to_vec()));
            (loss, p)
        };
        let (a, b) = (run(), run());
        assert!(a.0.is_finite());
        assert_eq!(a, b, "{loss:?}");
    }
}
