//! GRU4Rec end to end on small synthetic data: determinism, exact resume, learning a deterministic
//! pattern, padding invariance of scores, checkpoint and config errors. (The whole-model `f64`
//! gradient checks live next to the code, in `src/gru4rec.rs`, since they need the generic core.)

use seqrec_data::{Dataset, Sequences, Vocab};
use seqrec_models::{Gru4rec, Gru4recConfig, Gru4recLoss, Model, ModelError};

/// `n_users` users walking the cycle `1 -> 2 -> .. -> n_items -> 1`, each starting at
/// `u % n_items + 1`, with `len` events.
fn cyclic(n_users: usize, n_items: usize, len: usize) -> Dataset {
    let users = Vocab::from_originals((0..n_users).map(|u| format!("u{u}")).collect()).unwrap();
    let items = Vocab::from_originals((0..n_items).map(|i| format!("i{i}")).collect()).unwrap();
    let seqs = (0..n_users)
        .map(|u| {
            let items: Vec<u32> = (0..len).map(|t| ((u + t) % n_items + 1) as u32).collect();
            let times: Vec<i64> = (0..len as i64).collect();
            (items, times)
        })
        .collect();
    Dataset::from_sequences(users, items, seqs).unwrap()
}

fn small_config(loss: Gru4recLoss) -> Gru4recConfig {
    Gru4recConfig {
        embedding_dim: 8,
        hidden_size: 16,
        loss,
        n_negatives: 4,
        batch_size: 8,
        maxlen: 12,
        lr: 1e-2,
        dropout_embedding: 0.2,
        dropout_hidden: 0.2,
        clip_grad_norm: Some(5.0),
        ..Gru4recConfig::default()
    }
}

fn params(m: &Gru4rec) -> Vec<(String, Vec<f32>)> {
    let mut out = Vec::new();
    m.visit_params(&mut |p| out.push((p.name.clone(), p.value.to_vec())));
    out
}

/// Right-aligned `[batch, maxlen]` histories of the given item lists.
fn histories(rows: &[&[u32]], maxlen: usize) -> Vec<u32> {
    let mut h = vec![0u32; rows.len() * maxlen];
    for (r, items) in rows.iter().enumerate() {
        let items = &items[items.len().saturating_sub(maxlen)..];
        h[(r + 1) * maxlen - items.len()..(r + 1) * maxlen].copy_from_slice(items);
    }
    h
}

fn scores(m: &mut Gru4rec, rows: &[&[u32]]) -> Vec<f32> {
    let h = histories(rows, m.max_history());
    let mut s = vec![0.0; rows.len() * (m.n_items() + 1)];
    m.score(&h, rows.len(), &mut s);
    s
}

fn train(m: &mut Gru4rec, seqs: &Sequences<'_>, epochs: std::ops::Range<usize>) -> Vec<f64> {
    epochs
        .map(|e| m.train_epoch(seqs, e, &mut |_| {}).unwrap().loss)
        .collect()
}

#[test]
fn same_seed_gives_identical_runs_and_another_seed_differs() {
    let ds = cyclic(20, 9, 10);
    let seqs = Sequences::all(&ds);
    for loss in [Gru4recLoss::Ce, Gru4recLoss::SampledCe] {
        let run = |seed| {
            let mut m = Gru4rec::new(small_config(loss), &seqs, seed).unwrap();
            let losses = train(&mut m, &seqs, 0..2);
            let s = scores(&mut m, &[&[1, 2, 3], &[4]]);
            (losses, params(&m), s)
        };
        let (a, b, c) = (run(3), run(3), run(4));
        assert_eq!(a, b, "{loss:?}: same seed must give bit-identical runs");
        assert_ne!(
            a.1, c.1,
            "{loss:?}: another seed must give other parameters"
        );
    }
}

#[test]
fn resume_from_checkpoint_equals_uninterrupted_run() {
    let ds = cyclic(20, 9, 10);
    let seqs = Sequences::all(&ds);
    for loss in [Gru4recLoss::Ce, Gru4recLoss::SampledCe] {
        let cfg = small_config(loss);
        let mut straight = Gru4rec::new(cfg.clone(), &seqs, 7).unwrap();
        let straight_losses = train(&mut straight, &seqs, 0..2);

        let dir = std::env::temp_dir().join(format!(
            "seqrec-gru4rec-resume-{loss:?}-{}",
            std::process::id()
        ));
        let mut first = Gru4rec::new(cfg.clone(), &seqs, 7).unwrap();
        let l0 = train(&mut first, &seqs, 0..1);
        first.save(&dir).unwrap();
        // A fresh model (other initial weights) takes everything from the checkpoint.
        let mut resumed = Gru4rec::new(cfg, &seqs, 7).unwrap();
        resumed.load(&dir).unwrap();
        assert_eq!(resumed.optimizer_steps(), first.optimizer_steps());
        let l1 = train(&mut resumed, &seqs, 1..2);
        std::fs::remove_dir_all(&dir).unwrap();

        assert_eq!(straight_losses, [l0[0], l1[0]], "{loss:?}: losses");
        assert_eq!(params(&straight), params(&resumed), "{loss:?}: parameters");
        assert_eq!(
            scores(&mut straight, &[&[5, 6]]),
            scores(&mut resumed, &[&[5, 6]])
        );
    }
}

/// Next item of the cycle is deterministic: after a few epochs the model ranks it first for almost
/// every history, and the training loss falls.
#[test]
fn learns_a_deterministic_next_item_pattern() {
    let n_items = 10;
    let ds = cyclic(40, n_items, 14);
    let seqs = Sequences::all(&ds);
    for loss in [Gru4recLoss::Ce, Gru4recLoss::SampledCe] {
        let cfg = Gru4recConfig {
            dropout_embedding: 0.0,
            dropout_hidden: 0.0,
            ..small_config(loss)
        };
        let mut m = Gru4rec::new(cfg, &seqs, 1).unwrap();
        let losses = train(&mut m, &seqs, 0..40);
        assert!(
            losses[39] < 0.25 * losses[0],
            "{loss:?}: loss did not fall enough: {losses:?}"
        );
        // Histories of 1..4 consecutive items ending at every item.
        let mut hist: Vec<Vec<u32>> = Vec::new();
        let mut want = Vec::new();
        for end in 1..=n_items as u32 {
            for len in 1..=4u32 {
                hist.push(
                    (0..len)
                        .map(|k| {
                            (end as i64 - 1 - (len - 1 - k) as i64).rem_euclid(n_items as i64)
                                as u32
                                + 1
                        })
                        .collect(),
                );
                want.push(end % n_items as u32 + 1);
            }
        }
        let rows: Vec<&[u32]> = hist.iter().map(|v| v.as_slice()).collect();
        let s = scores(&mut m, &rows);
        let hits = s
            .chunks_exact(n_items + 1)
            .zip(&want)
            .filter(|&(row, &w)| {
                let best = (1..=n_items)
                    .max_by(|&a, &b| row[a].total_cmp(&row[b]))
                    .unwrap();
                best == w as usize
            })
            .count();
        let hr1 = hits as f64 / want.len() as f64;
        assert!(hr1 >= 0.95, "{loss:?}: HR@1 = {hr1}");
    }
}

/// Scores depend only on the real items of a history: not on the amount of left padding (a model
/// with a longer window and the same weights), nor on the other rows of the batch.
#[test]
fn scores_are_invariant_to_padding_and_batch_neighbours() {
    let ds = cyclic(20, 9, 10);
    let seqs = Sequences::all(&ds);
    let short_cfg = Gru4recConfig {
        maxlen: 3,
        ..small_config(Gru4recLoss::Ce)
    };
    let mut long = Gru4rec::new(
        Gru4recConfig {
            maxlen: 11,
            ..short_cfg.clone()
        },
        &seqs,
        5,
    )
    .unwrap();
    train(&mut long, &seqs, 0..1);
    let dir = std::env::temp_dir().join(format!("seqrec-gru4rec-pad-{}", std::process::id()));
    long.save(&dir).unwrap();
    let mut short = Gru4rec::new(short_cfg, &seqs, 5).unwrap();
    // The saved config differs only in maxlen, which shapes no tensor.
    short.load(&dir).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();

    let a = scores(&mut long, &[&[4, 8, 2]]);
    let b = scores(&mut short, &[&[4, 8, 2]]);
    let c = scores(
        &mut long,
        &[&[1, 2, 3, 4, 5, 6, 7, 8, 9, 1, 2], &[4, 8, 2], &[]],
    );
    let n = long.n_items() + 1;
    assert!(a[0] == f32::NEG_INFINITY, "padding column");
    for j in 1..n {
        assert!(
            (a[j] - b[j]).abs() <= 1e-5 * (1.0 + a[j].abs()),
            "item {j}: {} vs {}",
            a[j],
            b[j]
        );
        assert!(
            (a[j] - c[n + j]).abs() <= 1e-5 * (1.0 + a[j].abs()),
            "item {j}: batch row"
        );
    }
    // An empty history scores every item by its output bias alone: the rows differ from a real one.
    assert_ne!(&c[2 * n + 1..3 * n], &a[1..]);
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]

    /// Any history scores the same alone and in a batch beside arbitrary other histories, and the
    /// same in a window of 11 as the window-sized suffix in a window of 4 when it fits.
    #[test]
    fn scores_do_not_depend_on_neighbours_or_padding(
        hist in proptest::collection::vec(1u32..=9, 0..=4),
        others in proptest::collection::vec(proptest::collection::vec(1u32..=9, 0..=11), 1..4),
    ) {
        let ds = cyclic(12, 9, 8);
        let seqs = Sequences::all(&ds);
        let cfg = Gru4recConfig { maxlen: 4, ..small_config(Gru4recLoss::Ce) };
        let mut short = Gru4rec::new(cfg.clone(), &seqs, 9).unwrap();
        let mut long = Gru4rec::new(Gru4recConfig { maxlen: 11, ..cfg }, &seqs, 9).unwrap();
        let alone = scores(&mut short, &[&hist]);
        let mut rows: Vec<&[u32]> = others.iter().map(|v| v.as_slice()).collect();
        let at = others.len() / 2;
        rows.insert(at, &hist);
        let batch = scores(&mut long, &rows);
        let n = short.n_items() + 1;
        for j in 1..n {
            let (a, b) = (alone[j], batch[at * n + j]);
            proptest::prop_assert!((a - b).abs() <= 1e-5 * (1.0 + a.abs()), "item {}: {} vs {}", j, a, b);
        }
    }
}

#[test]
fn mismatched_checkpoint_is_an_error_naming_the_tensor_and_shapes() {
    let ds = cyclic(10, 9, 6);
    let seqs = Sequences::all(&ds);
    let dir = std::env::temp_dir().join(format!("seqrec-gru4rec-mismatch-{}", std::process::id()));
    let small = Gru4rec::new(small_config(Gru4recLoss::Ce), &seqs, 0).unwrap();
    small.save(&dir).unwrap();
    let mut wide = Gru4rec::new(
        Gru4recConfig {
            embedding_dim: 6,
            ..small_config(Gru4recLoss::Ce)
        },
        &seqs,
        0,
    )
    .unwrap();
    let before = params(&wide);
    match wide.load(&dir) {
        Err(ModelError::Checkpoint { path, message }) => {
            assert!(path.ends_with("gru4rec.safetensors"), "{path}");
            assert!(message.contains("item_in.weight"), "{message}");
            assert!(
                message.contains("[9, 8]") && message.contains("[9, 6]"),
                "{message}"
            );
        }
        other => panic!("expected a checkpoint error, got {other:?}"),
    }
    // Nothing was modified by the failed load.
    assert_eq!(params(&wide), before);
    // Another catalogue size is refused before any tensor is read.
    let other_ds = cyclic(10, 7, 6);
    let mut other =
        Gru4rec::new(small_config(Gru4recLoss::Ce), &Sequences::all(&other_ds), 0).unwrap();
    assert!(matches!(
        other.load(&dir),
        Err(ModelError::Checkpoint { .. })
    ));
    std::fs::remove_dir_all(&dir).unwrap();
    let missing = dir.join("nope");
    assert!(matches!(
        wide.load(&missing),
        Err(ModelError::Checkpoint { .. })
    ));
}

#[test]
fn config_errors_name_the_field_and_value() {
    let ds = cyclic(4, 5, 4);
    let seqs = Sequences::all(&ds);
    let cases: Vec<(Gru4recConfig, &str)> = vec![
        (
            Gru4recConfig {
                hidden_size: 0,
                ..Default::default()
            },
            "hidden_size = 0",
        ),
        (
            Gru4recConfig {
                dropout_hidden: 1.0,
                ..Default::default()
            },
            "dropout_hidden = 1",
        ),
        (
            Gru4recConfig {
                lr: f64::NAN,
                ..Default::default()
            },
            "lr = NaN",
        ),
        (
            Gru4recConfig {
                constrained_embedding: true,
                embedding_dim: 32,
                ..Default::default()
            },
            "embedding_dim = 32",
        ),
        (
            Gru4recConfig {
                loss: Gru4recLoss::SampledCe,
                n_negatives: 0,
                ..Default::default()
            },
            "n_negatives = 0",
        ),
        (
            Gru4recConfig {
                clip_grad_norm: Some(-1.0),
                ..Default::default()
            },
            "clip_grad_norm = -1",
        ),
    ];
    for (cfg, want) in cases {
        match Gru4rec::new(cfg, &seqs, 0) {
            Err(ModelError::Config(msg)) => assert!(msg.contains(want), "{msg} lacks {want}"),
            other => panic!(
                "expected a config error for {want}, got {:?}",
                other.map(|_| ())
            ),
        }
    }
    // JSON: defaults fill missing fields, unknown fields are refused, and the loss is snake_case.
    let cfg: Gru4recConfig =
        serde_json::from_str(r#"{"hidden_size": 32, "loss": "sampled_ce"}"#).unwrap();
    assert_eq!(cfg.hidden_size, 32);
    assert_eq!(cfg.loss, Gru4recLoss::SampledCe);
    assert_eq!(cfg.maxlen, Gru4recConfig::default().maxlen);
    assert!(serde_json::from_str::<Gru4recConfig>(r#"{"hiden_size": 32}"#).is_err());
}

#[test]
fn training_data_from_another_catalogue_is_refused() {
    let ds = cyclic(4, 5, 4);
    let mut m = Gru4rec::new(small_config(Gru4recLoss::Ce), &Sequences::all(&ds), 0).unwrap();
    let other = cyclic(4, 6, 4);
    assert!(matches!(
        m.train_epoch(&Sequences::all(&other), 0, &mut |_| {}),
        Err(ModelError::Data(_))
    ));
}

fn data_dir() -> std::path::PathBuf {
    std::env::var_os("SEQREC_DATA_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data")
        })
}

/// The first `n_users` users of `ml-1m-sasrec.txt` (`user item` lines, time order); fails if the
/// file is missing.
fn ml1m_head(n_users: usize) -> Dataset {
    let path = data_dir().join("ml-1m-sasrec.txt");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (set SEQREC_DATA_DIR)", path.display()));
    let mut seqs: Vec<(Vec<u32>, Vec<i64>)> = Vec::new();
    let mut n_items = 0;
    for (line_no, line) in text.lines().enumerate() {
        let mut f = line.split_ascii_whitespace();
        let u: usize = f.next().unwrap().parse().unwrap();
        let i: u32 = f.next().unwrap().parse().unwrap();
        n_items = n_items.max(i as usize);
        if u > n_users {
            continue;
        }
        if seqs.len() < u {
            seqs.resize(u, (Vec::new(), Vec::new()));
        }
        seqs[u - 1].0.push(i);
        seqs[u - 1].1.push(line_no as i64);
    }
    let users = Vocab::from_originals((1..=seqs.len()).map(|u| u.to_string()).collect()).unwrap();
    let items = Vocab::from_originals((1..=n_items).map(|i| i.to_string()).collect()).unwrap();
    Dataset::from_sequences(users, items, seqs).unwrap()
}

/// On real ML-1M sequences with the default (paper) config: the catalogue has 3,416 items, 200
/// users make two batches of 128, and the first step's loss is the uniform-softmax value
/// `ln 3416 = 8.1362` (initial logits are tiny), for both losses' scales.
#[test]
fn ml1m_first_step_loss_is_ln_n_items() {
    let ds = ml1m_head(200);
    let seqs = Sequences::all(&ds);
    let mut m = Gru4rec::new(Gru4recConfig::default(), &seqs, 0).unwrap();
    assert_eq!(m.n_items(), 3416);
    let mut steps = Vec::new();
    let report = m.train_epoch(&seqs, 0, &mut |s| steps.push(*s)).unwrap();
    assert_eq!(report.steps, 2);
    assert_eq!(report.sequences, 200);
    assert_eq!(
        steps.iter().map(|s| s.sequences).collect::<Vec<_>>(),
        [128, 72]
    );
    let ln_n = (3416f64).ln();
    assert!(
        (steps[0].loss - ln_n).abs() < 0.02,
        "first loss {} vs ln 3416 = {ln_n}",
        steps[0].loss
    );
    assert!(steps[1].loss < steps[0].loss + 0.02, "{steps:?}");
}

/// An absurd learning rate overflows the weights after the first step: the second step's loss is
/// not finite and training stops with `NonFinite` naming the loss, epoch and step.
#[test]
fn non_finite_loss_stops_training() {
    let ds = cyclic(20, 9, 10);
    let seqs = Sequences::all(&ds);
    let cfg = Gru4recConfig {
        lr: 1e38,
        clip_grad_norm: None,
        ..small_config(Gru4recLoss::Ce)
    };
    let mut m = Gru4rec::new(cfg, &seqs, 0).unwrap();
    match m.train_epoch(&seqs, 3, &mut |_| {}) {
        Err(ModelError::NonFinite {
            what,
            epoch,
            step,
            value,
        }) => {
            assert_eq!((what, epoch, step), ("loss", 3, 1));
            assert!(!value.is_finite());
        }
        other => panic!("expected NonFinite, got {other:?}"),
    }
}
