//! The training loop end to end on a synthetic log with a tiny bigram model: run directory contents,
//! determinism, resume equality and the NaN stop.

mod common;

use common::*;
use seqrec_metrics::Metric;
use seqrec_train::run::resume_config;
use seqrec_train::{RunOptions, StopReason, TrainConfig, TrainError, train_with};

fn quiet() -> RunOptions {
    RunOptions {
        quiet: true,
        stop_after_epoch: None,
    }
}

#[test]
fn run_directory_has_every_file_and_the_model_beats_mostpop() {
    let dir = scratch("files");
    let cfg = small_config(&dir);
    let s = train_with(&cfg, &bigram_factory(None), &quiet(), false).unwrap();
    assert_eq!(s.stop, StopReason::Completed);
    let run = dir.join("run");
    for f in ["config.toml", "metrics.json", "history.jsonl", "curve.png"] {
        assert!(run.join(f).is_file(), "{f} missing");
    }
    for f in ["bigram.bin", "model.json", "items.json", "best.json"] {
        assert!(run.join("best").join(f).is_file(), "best/{f} missing");
    }
    for f in ["bigram.bin", "model.json", "items.json", "trainer.json"] {
        assert!(run.join("last").join(f).is_file(), "last/{f} missing");
    }
    // No temporary checkpoint left behind.
    let leftovers: Vec<_> = std::fs::read_dir(&run)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    let png = std::fs::read(run.join("curve.png")).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    // Evaluations at epochs 2, 4, 6.
    let hist = history_without_seconds(&run);
    let epochs: Vec<u64> = hist.iter().map(|h| h["epoch"].as_u64().unwrap()).collect();
    assert_eq!(epochs, [2, 4, 6]);
    // The saved config reads back to the same config.
    assert_eq!(resume_config(&run).unwrap(), cfg);
    // items.json is the dataset's vocabulary: 30 items named i1..i30.
    let items: Vec<String> =
        serde_json::from_str(&std::fs::read_to_string(run.join("best/items.json")).unwrap())
            .unwrap();
    assert_eq!(items.len(), 30);
    assert!(items.iter().all(|i| i.starts_with('i')));
    let m = metrics_json(&run);
    assert_eq!(m["dataset_info"]["n_items"], 30);
    assert_eq!(m["dataset_info"]["n_users"], 240);
    assert_eq!(m["dataset_info"]["fingerprint"].as_str().unwrap().len(), 16);
    // The schema of docs/metrics.md: lowercase metric keys under each protocol of the test split.
    assert_eq!(m["schema"], 1);
    assert_eq!(m["model"], s.metrics["model"]);
    assert!(m["config"]["model"].is_object());
    assert!(m["train"]["epochs"].as_u64().unwrap() >= 1);
    assert!(m["train"]["seconds"].as_f64().unwrap() > 0.0);
    assert!(m["train"]["sequences_per_second"].as_f64().unwrap() > 0.0);
    for metric in ["hr@10", "ndcg@10", "mrr", "hr@5", "map@20"] {
        let v = m["test"]["full"][metric].as_f64();
        assert!(
            v.is_some_and(|v| (0.0..=1.0).contains(&v)),
            "test.full.{metric}"
        );
    }
    assert!(m["test"]["full"]["catalogue"].is_object());
    // 30 items cannot give 100 unseen negatives: the sampled protocols are left out, not failed.
    assert!(m["test"]["sampled_uniform_100"].is_null());
    assert!(m["split"].as_str().unwrap().starts_with("leave-one-out"));
    assert!(
        m["protocol"]
            .as_str()
            .unwrap()
            .starts_with("full ranking over all 30 items")
    );
    // The bigram structure makes the model far better than popularity.
    let t = s.test.as_ref().unwrap();
    let p = s.test_mostpop.as_ref().unwrap();
    assert_eq!(t.metrics.n_users, 240);
    assert!(
        t.value(Metric::Ndcg(10)) > p.value(Metric::Ndcg(10)) + 0.1,
        "{} vs {}",
        t.value(Metric::Ndcg(10)),
        p.value(Metric::Ndcg(10))
    );
    assert!(s.table.contains("NDCG@10") && s.table.contains("MostPop"));
    // A second run into the same directory is refused.
    let again = train_with(&cfg, &bigram_factory(None), &quiet(), false);
    assert!(matches!(again, Err(TrainError::RunDir { .. })), "{again:?}");
}

#[test]
fn same_config_and_seed_give_identical_metrics() {
    let dir = scratch("determinism");
    let mut a = small_config(&dir);
    a.out = dir.join("a");
    let mut b = a.clone();
    b.out = dir.join("b");
    train_with(&a, &bigram_factory(None), &quiet(), false).unwrap();
    train_with(&b, &bigram_factory(None), &quiet(), false).unwrap();
    assert_eq!(metrics_json(&a.out)["test"], metrics_json(&b.out)["test"]);
    assert_eq!(
        history_without_seconds(&a.out),
        history_without_seconds(&b.out)
    );
    assert_eq!(snapshot(&a.out.join("best")), snapshot(&b.out.join("best")));
    // Another seed trains on other quarters of the data: the history differs.
    let mut c = a.clone();
    c.out = dir.join("c");
    c.train.seed = 8;
    train_with(&c, &bigram_factory(None), &quiet(), false).unwrap();
    assert_ne!(
        history_without_seconds(&a.out),
        history_without_seconds(&c.out)
    );
}

#[test]
fn resumed_run_ends_like_an_uninterrupted_one() {
    let dir = scratch("resume");
    let mut full = small_config(&dir);
    full.out = dir.join("full");
    let mut cut = full.clone();
    cut.out = dir.join("cut");
    train_with(&full, &bigram_factory(None), &quiet(), false).unwrap();
    let opts = RunOptions {
        quiet: true,
        stop_after_epoch: Some(2),
    };
    let s = train_with(&cut, &bigram_factory(None), &opts, false).unwrap();
    assert_eq!(s.stop, StopReason::Interrupted { epoch: 3 });
    assert!(!cut.out.join("metrics.json").exists());
    let cfg: TrainConfig = resume_config(&cut.out).unwrap();
    let s = train_with(&cfg, &bigram_factory(None), &quiet(), true).unwrap();
    assert_eq!(s.stop, StopReason::Completed);
    assert_eq!(
        metrics_json(&full.out)["test"],
        metrics_json(&cut.out)["test"]
    );
    assert_eq!(
        history_without_seconds(&full.out),
        history_without_seconds(&cut.out)
    );
    assert_eq!(
        snapshot(&full.out.join("last"))[0],
        snapshot(&cut.out.join("last"))[0]
    ); // bigram.bin
    assert_eq!(
        snapshot(&full.out.join("best")),
        snapshot(&cut.out.join("best"))
    );
}

#[test]
fn nan_stop_keeps_the_last_good_checkpoint_byte_identical() {
    let dir = scratch("nan");
    let mut cfg = small_config(&dir);
    cfg.train.eval_every = 1;
    let opts = RunOptions {
        quiet: true,
        stop_after_epoch: Some(2),
    };
    train_with(&cfg, &bigram_factory(None), &opts, false).unwrap();
    let last_before = snapshot(&cfg.out.join("last"));
    let best_before = snapshot(&cfg.out.join("best"));
    // Continue with a model that diverges at epoch index 3 (after corrupting its parameters).
    let s = train_with(&cfg, &bigram_factory(Some(3)), &quiet(), true).unwrap();
    match &s.stop {
        StopReason::NonFinite { message } => {
            assert!(message.contains("non-finite loss at epoch 3"), "{message}")
        }
        other => panic!("expected a NaN stop, got {other:?}"),
    }
    assert_eq!(snapshot(&cfg.out.join("last")), last_before);
    assert_eq!(snapshot(&cfg.out.join("best")), best_before);
    // Test metrics still come from the best (finite) checkpoint.
    let m = metrics_json(&cfg.out);
    assert_eq!(
        m["train"]["stop"]["non_finite"]["message"]
            .as_str()
            .map(|s| s.contains("NaN")),
        Some(true)
    );
    assert_eq!(m["train"]["epochs"], 3);
    let ndcg = s.test.unwrap().value(Metric::Ndcg(10));
    assert!(ndcg.is_finite() && ndcg > 0.0, "{ndcg}");
}

#[test]
fn nan_scores_at_validation_stop_like_a_nan_loss() {
    let dir = scratch("nan-scores");
    let mut cfg = small_config(&dir);
    cfg.train.eval_every = 1;
    let opts = RunOptions {
        quiet: true,
        stop_after_epoch: Some(1),
    };
    train_with(&cfg, &bigram_factory(None), &opts, false).unwrap();
    let last_before = snapshot(&cfg.out.join("last"));
    // The loss stays finite at epoch index 2 but every score is NaN: validation catches it.
    let s = train_with(&cfg, &diverging_factory(Some(2), true), &quiet(), true).unwrap();
    match &s.stop {
        StopReason::NonFinite { message } => {
            assert!(message.starts_with("validation after epoch 3"), "{message}")
        }
        other => panic!("expected a NaN stop, got {other:?}"),
    }
    assert_eq!(snapshot(&cfg.out.join("last")), last_before);
    assert_eq!(metrics_json(&cfg.out)["train"]["epochs"], 2);
    assert!(s.test.unwrap().value(Metric::Ndcg(10)).is_finite());
}
