//! Smoke training of every registered model on the real MovieLens-100k log (`ml-100k-u.data` in
//! `SEQREC_DATA_DIR`; the test fails when it is missing): a few epochs at small sizes, after which the
//! training loss has fallen and validation NDCG@10 (full ranking) beats the untrained model's.

use seqrec_metrics::Metric;
use seqrec_models::{Gru4recConfig, Gru4recLoss, SasrecConfig, SasrecLoss};
use seqrec_train::run::{Experiment, eval_settings};
use seqrec_train::{ModelConfig, Stage, TrainConfig, evaluate, popularity_before};

/// Loads ML-100k, trains `model` for `epochs` and checks the loss and validation NDCG@10.
fn smoke(model: ModelConfig, epochs: usize, min_gain: f64) {
    let name = model.name();
    let mut cfg = TrainConfig::default();
    cfg.data.dataset = "ml-100k".into();
    cfg.data.cache_dir = std::env::temp_dir().join(format!("seqrec-smoke-cache-{name}"));
    cfg.model = model;
    let exp = Experiment::load(&cfg).expect("ML-100k must be in SEQREC_DATA_DIR");
    assert_eq!(
        (exp.ds.n_users(), exp.ds.n_items(), exp.ds.n_events()),
        (943, 1682, 100_000)
    );
    let train = exp.train().unwrap();
    let settings = eval_settings(&cfg).unwrap();
    let pop = popularity_before(&exp.ds, &exp.split, Stage::Valid);
    let mut m = cfg.model.build(&train, 7).unwrap();
    let valid = |m: &mut dyn seqrec_models::Model| {
        evaluate(m, &exp.ds, exp.split.valid(), &pop, &settings)
            .unwrap()
            .value(Metric::Ndcg(10))
    };
    let before = valid(m.as_mut());
    let losses: Vec<f64> = (0..epochs)
        .map(|e| m.train_epoch(&train, e, &mut |_| {}).unwrap().loss)
        .collect();
    let after = valid(m.as_mut());
    assert!(
        epochs == 1 || losses.last().unwrap() < &losses[0],
        "{name}: loss did not fall: {losses:?}"
    );
    assert!(
        after > before + min_gain,
        "{name}: valid NDCG@10 {before:.4} -> {after:.4} after {epochs} epochs"
    );
}

#[test]
fn sasrec_bce_learns_on_ml100k() {
    let c = SasrecConfig {
        hidden: 32,
        maxlen: 50,
        loss: SasrecLoss::Bce,
        ..SasrecConfig::default()
    };
    smoke(ModelConfig::Sasrec(c), 4, 0.005);
}

#[test]
fn sasrec_ce_learns_on_ml100k() {
    let c = SasrecConfig {
        hidden: 32,
        maxlen: 50,
        loss: SasrecLoss::Ce,
        ..SasrecConfig::default()
    };
    smoke(ModelConfig::Sasrec(c), 3, 0.01);
}

#[test]
fn gru4rec_ce_learns_on_ml100k() {
    let c = Gru4recConfig {
        maxlen: 50,
        lr: 0.01,
        ..Gru4recConfig::default()
    };
    smoke(ModelConfig::Gru4rec(c), 3, 0.005);
}

#[test]
fn gru4rec_sampled_ce_learns_on_ml100k() {
    let c = Gru4recConfig {
        maxlen: 50,
        lr: 0.01,
        loss: Gru4recLoss::SampledCe,
        n_negatives: 256,
        ..Gru4recConfig::default()
    };
    smoke(ModelConfig::Gru4rec(c), 3, 0.005);
}

#[test]
fn mostpop_beats_an_unfitted_popularity_table() {
    // MostPop's "training" counts items: before it, every score is equal and ties rank the target last.
    smoke(ModelConfig::MostPop(Default::default()), 1, 0.005);
}
