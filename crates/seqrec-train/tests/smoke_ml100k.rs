//! Smoke training of every registered model on the real MovieLens-100k log (`ml-100k-u.data` in
//! `SEQREC_DATA_DIR`; the test fails when it is missing): a few epochs at small sizes, after which the
//! training loss has fallen and validation NDCG@10 (full ranking) beats the untrained model's.

use seqrec_metrics::Metric;
use seqrec_models::{Gru4recConfig, Gru4recLoss, Model, Precision, SasrecConfig, SasrecLoss};
use seqrec_train::run::{Experiment, eval_settings};
use seqrec_train::{EvalSettings, ModelConfig, Stage, TrainConfig, evaluate, popularity_before};

/// Loads ML-100k, trains `model` for `epochs` and checks the loss and validation NDCG@10.
fn smoke(model: ModelConfig, epochs: usize, min_gain: f64) {
    smoke_then(model, epochs, min_gain, |_, _| {});
}

/// [`smoke`], then `then(model, valid)` on the trained model, where `valid(model, precision)` is its
/// validation NDCG@10 evaluated in `precision`.
fn smoke_then(
    model: ModelConfig,
    epochs: usize,
    min_gain: f64,
    then: impl FnOnce(&mut dyn Model, &dyn Fn(&mut dyn Model, Precision) -> f64),
) {
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
    let valid_in = |m: &mut dyn Model, precision: Precision| {
        let s = EvalSettings {
            precision,
            ..settings.clone()
        };
        evaluate(m, &exp.ds, exp.split.valid(), &pop, &s)
            .unwrap()
            .value(Metric::Ndcg(10))
    };
    let valid = |m: &mut dyn Model| valid_in(m, Precision::F32);
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
    then(m.as_mut(), &valid_in);
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
    // The trained model evaluated in bf16 (where this CPU has AMX) ranks about as well as in f32,
    // and the evaluation puts it back to f32: the next f32 evaluation is bit-identical.
    smoke_then(ModelConfig::Sasrec(c), 3, 0.01, |m, valid| {
        if !seqrec_tensor::amx::available() {
            println!("skipped: no AMX bf16 on this CPU");
            return;
        }
        let f32_before = valid(m, Precision::F32);
        let bf16 = valid(m, Precision::Bf16);
        let f32_after = valid(m, Precision::F32);
        println!("valid NDCG@10: f32 {f32_before:.5}, bf16 {bf16:.5}");
        assert_eq!(f32_before.to_bits(), f32_after.to_bits());
        assert_ne!(bf16.to_bits(), f32_before.to_bits(), "bf16 scores nothing");
        assert!(
            (bf16 - f32_before).abs() <= 0.02 * f32_before,
            "bf16 NDCG@10 {bf16:.5} against f32 {f32_before:.5}"
        );
    });
}

#[test]
fn models_without_a_bf16_path_refuse_to_evaluate_in_it() {
    let mut cfg = TrainConfig::default();
    cfg.data.dataset = "ml-100k".into();
    cfg.data.cache_dir = std::env::temp_dir().join("seqrec-smoke-cache-mostpop");
    cfg.model = ModelConfig::MostPop(Default::default());
    let exp = Experiment::load(&cfg).expect("ML-100k must be in SEQREC_DATA_DIR");
    let train = exp.train().unwrap();
    let mut m = cfg.model.build(&train, 7).unwrap();
    let pop = popularity_before(&exp.ds, &exp.split, Stage::Valid);
    let s = EvalSettings {
        precision: Precision::Bf16,
        ..eval_settings(&cfg).unwrap()
    };
    let err = evaluate(m.as_mut(), &exp.ds, exp.split.valid(), &pop, &s)
        .expect_err("MostPop has no bf16 path");
    assert!(err.to_string().contains("--precision f32"), "{err}");
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
