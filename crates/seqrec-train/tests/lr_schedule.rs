//! `train.lr_milestones` / `train.lr_gamma`: the loop hands each epoch its factor, a resumed run
//! continues the schedule, a model without a learning rate refuses it, and a real model trains
//! differently under it.

mod common;

use std::path::Path;
use std::sync::{Arc, Mutex};

use common::*;
use seqrec_data::Sequences;
use seqrec_models::{EpochReport, Model, ModelError, StepReport};
use seqrec_train::run::resume_config;
use seqrec_train::{ModelFactory, RunOptions, TrainError, train_with};

/// [`SlowBigram`] that records every learning-rate factor it is given.
struct Recording {
    inner: SlowBigram,
    factors: Arc<Mutex<Vec<f64>>>,
}

impl Model for Recording {
    fn name(&self) -> &'static str {
        "recording"
    }
    fn n_items(&self) -> usize {
        self.inner.n_items()
    }
    fn max_history(&self) -> usize {
        self.inner.max_history()
    }
    fn train_epoch(
        &mut self,
        train: &Sequences<'_>,
        epoch: usize,
        on_step: &mut dyn FnMut(&StepReport),
    ) -> Result<EpochReport, ModelError> {
        self.inner.train_epoch(train, epoch, on_step)
    }
    fn score(&mut self, histories: &[u32], batch: usize, scores: &mut [f32]) {
        self.inner.score(histories, batch, scores)
    }
    fn set_lr_factor(&mut self, factor: f64) -> Result<(), ModelError> {
        self.factors.lock().unwrap().push(factor);
        Ok(())
    }
    fn save(&self, dir: &Path) -> Result<(), ModelError> {
        self.inner.save(dir)
    }
    fn load(&mut self, dir: &Path) -> Result<(), ModelError> {
        self.inner.load(dir)
    }
}

fn recording_factory(factors: Arc<Mutex<Vec<f64>>>) -> ModelFactory<'static> {
    ModelFactory {
        config: serde_json::json!({"model": "recording"}),
        build: Box::new(move |train, seed| {
            Ok(Box::new(Recording {
                inner: SlowBigram::new(train, seed, None, false),
                factors: factors.clone(),
            }))
        }),
    }
}

fn quiet(stop_after_epoch: Option<usize>) -> RunOptions {
    RunOptions {
        quiet: true,
        stop_after_epoch,
    }
}

#[test]
fn each_epoch_gets_its_factor_and_a_resumed_run_continues_the_schedule() {
    let dir = scratch("lr-schedule");
    let mut cfg = small_config(&dir);
    cfg.train.lr_milestones = vec![2, 4];
    cfg.train.lr_gamma = 0.5;
    cfg.validate().unwrap();
    let factors = Arc::new(Mutex::new(Vec::new()));
    train_with(
        &cfg,
        &recording_factory(factors.clone()),
        &quiet(None),
        false,
    )
    .unwrap();
    // Once before the run directory is written (the first epoch's factor), then before each epoch.
    assert_eq!(
        *factors.lock().unwrap(),
        [1.0, 1.0, 1.0, 0.5, 0.5, 0.25, 0.25]
    );

    // Interrupted after epoch index 2, then resumed: epochs 3..5 get 0.5, 0.25, 0.25 (after the check).
    cfg.out = dir.join("cut");
    factors.lock().unwrap().clear();
    train_with(
        &cfg,
        &recording_factory(factors.clone()),
        &quiet(Some(2)),
        false,
    )
    .unwrap();
    assert_eq!(*factors.lock().unwrap(), [1.0, 1.0, 1.0, 0.5]);
    factors.lock().unwrap().clear();
    let resumed = resume_config(&cfg.out).unwrap();
    assert_eq!(resumed.train.lr_milestones, [2, 4]);
    train_with(
        &resumed,
        &recording_factory(factors.clone()),
        &quiet(None),
        true,
    )
    .unwrap();
    assert_eq!(*factors.lock().unwrap(), [0.5, 0.5, 0.25, 0.25]);

    // Without milestones the loop never touches the learning rate.
    let mut plain = small_config(&dir);
    plain.out = dir.join("plain");
    factors.lock().unwrap().clear();
    train_with(
        &plain,
        &recording_factory(factors.clone()),
        &quiet(None),
        false,
    )
    .unwrap();
    assert!(factors.lock().unwrap().is_empty());
}

#[test]
fn a_model_without_a_learning_rate_refuses_a_schedule() {
    let dir = scratch("lr-schedule-refused");
    let mut cfg = small_config(&dir);
    cfg.train.lr_milestones = vec![3];
    let e = train_with(&cfg, &bigram_factory(None), &quiet(None), false).unwrap_err();
    assert!(matches!(e, TrainError::Model(_)), "{e:?}");
    assert!(e.to_string().contains("lr_milestones"), "{e}");
    // Refused before the run directory is written: the same directory takes a valid run afterwards.
    assert!(!cfg.out.exists(), "{} was created", cfg.out.display());
    cfg.train.lr_milestones.clear();
    train_with(&cfg, &bigram_factory(None), &quiet(None), false).unwrap();
}

#[test]
fn bad_milestones_and_gamma_are_config_errors() {
    let dir = scratch("lr-schedule-config");
    let mut cfg = small_config(&dir);
    let e = cfg.set("train.lr_milestones", "[5, 5]").unwrap_err();
    assert!(e.to_string().contains("train.lr_milestones"), "{e}");
    let e = cfg.set("train.lr_gamma", "0").unwrap_err();
    assert!(e.to_string().contains("train.lr_gamma"), "{e}");
    cfg.set("train.lr_milestones", "[1, 4]").unwrap();
    assert_eq!(cfg.train.lr_factor(0), 1.0);
    assert_eq!(cfg.train.lr_factor(1), 0.1);
}

/// SASRec on the synthetic log: a factor of 1 changes nothing, a factor of 0.1 changes the second
/// epoch's training loss (and not the first's) and the final weights.
#[test]
fn sasrec_trains_differently_after_a_milestone() {
    let dir = scratch("lr-schedule-sasrec");
    let run = |name: &str, milestones: Vec<usize>, gamma: f64| {
        let mut cfg = small_config(&dir);
        cfg.set("model.model", "sasrec").unwrap();
        cfg.set("model.hidden", "8").unwrap();
        cfg.set("model.maxlen", "12").unwrap();
        cfg.set("model.loss", "ce").unwrap();
        cfg.train.epochs = 2;
        cfg.train.eval_every = 1;
        cfg.train.lr_milestones = milestones;
        cfg.train.lr_gamma = gamma;
        cfg.out = dir.join(name);
        train_with(&cfg, &ModelFactory::from_config(&cfg), &quiet(None), false).unwrap();
        let losses: Vec<f64> = history_without_seconds(&cfg.out)
            .iter()
            .map(|h| h["loss"].as_f64().unwrap())
            .collect();
        let weights = std::fs::read(cfg.out.join("last").join("model.safetensors")).unwrap();
        (losses, metrics_json(&cfg.out)["test"].clone(), weights)
    };
    let (base_loss, base_test, base_weights) = run("constant", vec![], 0.1);
    let (same_loss, same_test, same_weights) = run("gamma-one", vec![1], 1.0);
    assert_eq!(base_loss, same_loss);
    assert_eq!(base_test, same_test);
    assert!(base_weights == same_weights);
    let (low_loss, _, low_weights) = run("decayed", vec![1], 0.1);
    assert_eq!(base_loss[0], low_loss[0]);
    assert_ne!(base_loss[1], low_loss[1]);
    assert!(base_weights != low_weights);
}
