//! LSTM + attention end to end: learning on real MovieLens-100k data (with context from the real
//! timestamps), determinism, exact resume through a checkpoint, context handling in scoring, config
//! errors. (The whole-model `f64` gradient checks live next to the code, in `src/lstm_attn.rs`.)

use seqrec_data::{
    Dataset, EvalBatcher, PrepareConfig, ReadOptions, Sequences, Split, prepare, read_log,
};
use seqrec_metrics::{Exclude, Metric, NanPolicy, rank_full};
use seqrec_models::{ContextFusion, HistoryContext, LstmAttn, LstmAttnConfig, Model, ModelError};

fn data_dir() -> std::path::PathBuf {
    std::env::var_os("SEQREC_DATA_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data")
        })
}

/// MovieLens-100k, every rating an interaction; fails if the file is missing.
fn ml100k() -> Dataset {
    let path = data_dir().join("ml-100k-u.data");
    let log = read_log(&path, &ReadOptions::default())
        .unwrap_or_else(|e| panic!("{}: {e} (set SEQREC_DATA_DIR)", path.display()));
    let ds = prepare(&log, &PrepareConfig::default()).unwrap();
    assert_eq!(
        (ds.n_users(), ds.n_items(), ds.n_events()),
        (943, 1682, 100_000)
    );
    ds
}

fn small(context: ContextFusion) -> LstmAttnConfig {
    LstmAttnConfig {
        embedding_dim: 32,
        hidden_size: 32,
        attention_dim: 16,
        mlp_hidden: 32,
        context,
        context_dim: 8,
        maxlen: 30,
        batch_size: 64,
        lr: 3e-3,
        ..LstmAttnConfig::default()
    }
}

/// Mean full-ranking NDCG@10 (history excluded) of `cases`, scored with context when the model
/// asks for it (as `seqrec-train`'s evaluation does).
fn ndcg10(m: &mut LstmAttn, ds: &Dataset, split: &Split) -> f64 {
    let cases = split.valid();
    let mut eb = EvalBatcher::new(ds, cases, 256, m.max_history(), m.context()).unwrap();
    let width = ds.n_items() + 1;
    let mut sum = 0.0;
    while let Some(b) = eb.next_batch() {
        let (rows, l) = (b.rows, b.maxlen);
        let mut scores = vec![0f32; rows * width];
        let ctx = HistoryContext {
            time_buckets: &b.time_buckets[..rows * l],
            positions: &b.positions[..rows * l],
        };
        m.score_with_context(&b.inputs[..rows * l], ctx, rows, &mut scores);
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
            sum += Metric::Ndcg(10).value(rank);
        }
    }
    sum / cases.len() as f64
}

/// On ML-100k (leave-one-out) a few epochs lower the loss and lift validation NDCG@10 well above
/// the untrained model's, with attention-conditioned context from the real timestamps.
#[test]
fn ml100k_smoke_loss_falls_and_ndcg_beats_untrained() {
    let ds = ml100k();
    let split = Split::leave_one_out(&ds);
    let train = split.train_sequences(&ds).unwrap();
    let mut m = LstmAttn::new(small(ContextFusion::Attention), &train, 1).unwrap();
    let before = ndcg10(&mut m, &ds, &split);
    let losses: Vec<f64> = (0..3)
        .map(|e| m.train_epoch(&train, e, &mut |_| {}).unwrap().loss)
        .collect();
    let after = ndcg10(&mut m, &ds, &split);
    // ln 1682 = 7.43 at the start.
    assert!((losses[0] - 1682f64.ln()).abs() < 0.6, "{losses:?}");
    assert!(losses[2] < losses[0] - 0.3, "{losses:?}");
    assert!(
        after > before + 0.01 && after > 0.02,
        "NDCG@10 {before} -> {after}"
    );
}

fn cyclic(n_users: usize, n_items: usize, len: usize) -> Dataset {
    let users = seqrec_data::Vocab::from_originals((0..n_users).map(|u| format!("u{u}")).collect())
        .unwrap();
    let items = seqrec_data::Vocab::from_originals((0..n_items).map(|i| format!("i{i}")).collect())
        .unwrap();
    let seqs = (0..n_users)
        .map(|u| {
            let items: Vec<u32> = (0..len).map(|t| ((u + t) % n_items + 1) as u32).collect();
            // gaps 0, 1, 2, 3, .. seconds so the time buckets vary
            let times: Vec<i64> = (0..len as i64).map(|t| t * (t + 1) / 2).collect();
            (items, times)
        })
        .collect();
    Dataset::from_sequences(users, items, seqs).unwrap()
}

fn tiny(context: ContextFusion) -> LstmAttnConfig {
    LstmAttnConfig {
        embedding_dim: 8,
        hidden_size: 8,
        attention_dim: 4,
        mlp_hidden: 8,
        context,
        context_dim: 4,
        max_position: 16,
        batch_size: 8,
        maxlen: 12,
        lr: 1e-2,
        dropout_embedding: 0.2,
        dropout_hidden: 0.2,
        ..LstmAttnConfig::default()
    }
}

fn params(m: &LstmAttn) -> Vec<(String, Vec<f32>)> {
    let mut out = Vec::new();
    m.visit_params(&mut |p| out.push((p.name.clone(), p.value.to_vec())));
    out
}

#[test]
fn same_seed_gives_identical_runs_and_another_seed_differs() {
    let ds = cyclic(20, 9, 14);
    let seqs = Sequences::all(&ds);
    for fusion in [ContextFusion::None, ContextFusion::Concat] {
        let run = |seed| {
            let mut m = LstmAttn::new(tiny(fusion), &seqs, seed).unwrap();
            let l: Vec<f64> = (0..2)
                .map(|e| m.train_epoch(&seqs, e, &mut |_| {}).unwrap().loss)
                .collect();
            (l, params(&m))
        };
        let (a, b, c) = (run(3), run(3), run(4));
        assert_eq!(a, b);
        assert_ne!(a.1, c.1);
    }
}

fn temp_dir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("seqrec-lstm-attn-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// Save after one epoch, load into a fresh model: same scores, and a second epoch from the loaded
/// state equals the uninterrupted run bit for bit (parameters and Adam moments restored).
#[test]
fn save_load_round_trip_and_exact_resume() {
    let ds = cyclic(20, 9, 14);
    let seqs = Sequences::all(&ds);
    let cfg = tiny(ContextFusion::Add);
    let mut a = LstmAttn::new(cfg.clone(), &seqs, 7).unwrap();
    a.train_epoch(&seqs, 0, &mut |_| {}).unwrap();
    let dir = temp_dir("resume");
    a.save(&dir).unwrap();
    let saved = params(&a);
    let mut b = LstmAttn::new(cfg.clone(), &seqs, 7).unwrap();
    assert_ne!(params(&a), params(&b));
    b.load(&dir).unwrap();
    assert_eq!(params(&a), params(&b));
    let h: Vec<u32> = [vec![0u32; 9], vec![4, 5, 6]].concat();
    let (mut sa, mut sb) = (vec![0f32; 10], vec![0f32; 10]);
    a.score(&h, 1, &mut sa);
    b.score(&h, 1, &mut sb);
    assert_eq!(sa, sb);
    let la = a.train_epoch(&seqs, 1, &mut |_| {}).unwrap().loss;
    let lb = b.train_epoch(&seqs, 1, &mut |_| {}).unwrap().loss;
    assert_eq!(la, lb);
    assert_eq!(params(&a), params(&b));
    // Another learning rate may resume from it; another architecture is refused, and the model
    // is left untouched.
    let mut d = LstmAttn::new(
        LstmAttnConfig {
            lr: 0.5,
            ..cfg.clone()
        },
        &seqs,
        7,
    )
    .unwrap();
    d.load(&dir).unwrap();
    assert_eq!(params(&d), saved);
    let mut c = LstmAttn::new(tiny(ContextFusion::None), &seqs, 7).unwrap();
    let before = params(&c);
    assert!(matches!(c.load(&dir), Err(ModelError::Checkpoint { .. })));
    assert_eq!(params(&c), before);
    let _ = std::fs::remove_dir_all(&dir);
}

/// With context on, the time features change the scores (they are read), ids-only `score` equals
/// `score_with_context` given zero time buckets and in-window positions, and a model without
/// context ignores the context.
#[test]
fn context_reaches_the_scores() {
    let ds = cyclic(20, 9, 14);
    let seqs = Sequences::all(&ds);
    let h: Vec<u32> = [vec![0u32; 8], vec![3, 4, 5, 6]].concat();
    let pos: Vec<u32> = [vec![0u32; 8], vec![1, 2, 3, 4]].concat();
    let t1: Vec<u32> = [vec![0u32; 8], vec![1, 2, 5, 9]].concat();
    let t2: Vec<u32> = [vec![0u32; 8], vec![1, 20, 20, 20]].concat();
    let zeros = vec![0u32; 12];
    for fusion in [
        ContextFusion::Concat,
        ContextFusion::Add,
        ContextFusion::Attention,
    ] {
        let mut m = LstmAttn::new(tiny(fusion), &seqs, 1).unwrap();
        m.train_epoch(&seqs, 0, &mut |_| {}).unwrap();
        let mut run = |tb: &[u32]| {
            let mut s = vec![0f32; 10];
            let ctx = HistoryContext {
                time_buckets: tb,
                positions: &pos,
            };
            m.score_with_context(&h, ctx, 1, &mut s);
            s
        };
        let (s1, s2, s0) = (run(&t1), run(&t2), run(&zeros));
        assert_ne!(s1, s2, "{fusion:?}");
        let mut plain = vec![0f32; 10];
        m.score(&h, 1, &mut plain);
        assert_eq!(plain, s0, "{fusion:?}");
    }
    let mut m = LstmAttn::new(tiny(ContextFusion::None), &seqs, 1).unwrap();
    assert!(m.context().is_none());
    let (mut a, mut b) = (vec![0f32; 10], vec![0f32; 10]);
    m.score(&h, 1, &mut a);
    let ctx = HistoryContext {
        time_buckets: &t1,
        positions: &pos,
    };
    m.score_with_context(&h, ctx, 1, &mut b);
    assert_eq!(a, b);
}

/// Scores of a row do not depend on the other rows of the batch.
#[test]
fn batch_rows_are_scored_independently() {
    let ds = cyclic(20, 9, 14);
    let seqs = Sequences::all(&ds);
    let mut m = LstmAttn::new(tiny(ContextFusion::Attention), &seqs, 2).unwrap();
    m.train_epoch(&seqs, 0, &mut |_| {}).unwrap();
    let r1: Vec<u32> = [vec![0u32; 9], vec![1, 2, 3]].concat();
    let r2: Vec<u32> = (1..=9).chain(1..=3).collect();
    let mut alone = vec![0f32; 10];
    m.score(&r1, 1, &mut alone);
    let mut both = vec![0f32; 20];
    m.score(&[r2, r1].concat(), 2, &mut both);
    assert_eq!(both[10], f32::NEG_INFINITY); // the padding column
    for (a, b) in alone[1..].iter().zip(&both[11..]) {
        assert!((a - b).abs() <= 1e-5 * (1.0 + a.abs()), "{a} vs {b}");
    }
}

#[test]
fn config_errors_name_the_field_and_value() {
    let ds = cyclic(4, 6, 5);
    let seqs = Sequences::all(&ds);
    for (cfg, needle) in [
        (
            LstmAttnConfig {
                hidden_size: 0,
                ..LstmAttnConfig::default()
            },
            "lstm_attn.hidden_size = 0",
        ),
        (
            LstmAttnConfig {
                n_time_buckets: 2,
                ..LstmAttnConfig::default()
            },
            "lstm_attn.n_time_buckets = 2",
        ),
        (
            LstmAttnConfig {
                dropout_hidden: 1.0,
                ..LstmAttnConfig::default()
            },
            "lstm_attn.dropout_hidden = 1",
        ),
        (
            LstmAttnConfig {
                clip_grad_norm: Some(f64::NAN),
                ..LstmAttnConfig::default()
            },
            "lstm_attn.clip_grad_norm = NaN",
        ),
    ] {
        match LstmAttn::new(cfg, &seqs, 0) {
            Err(ModelError::Config(msg)) => assert!(msg.contains(needle), "{msg}"),
            other => panic!(
                "expected a config error for {needle}, got {:?}",
                other.err()
            ),
        }
    }
}
