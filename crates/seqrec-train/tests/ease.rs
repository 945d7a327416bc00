//! EASE through the registry and the whole training path on MovieLens-100k (real data; fails, does not
//! skip, when the data are missing): it beats MostPop by far, and re-evaluating the saved checkpoint
//! reproduces the test metrics exactly.

mod common;

use seqrec_metrics::Metric;
use seqrec_train::{ModelConfig, RunOptions, TrainConfig, evaluate_run, train};

#[test]
fn ease_on_ml100k_beats_mostpop_and_reloads_exactly() {
    let dir = common::scratch("ease-ml100k");
    let mut cfg = TrainConfig::default();
    cfg.data.dataset = "ml-100k".into();
    cfg.data.cache_dir = dir.join("cache");
    cfg.set("model.model", "ease").unwrap();
    cfg.set("model.lambda", "200").unwrap();
    assert!(matches!(&cfg.model, ModelConfig::Ease(c) if c.lambda == 200.0));
    // The default 200 epochs and evaluation every 5: EASE tells the loop it is done after one.
    assert_eq!((cfg.train.epochs, cfg.train.eval_every), (200, 5));
    cfg.out = dir.join("run");
    let opts = RunOptions {
        quiet: true,
        stop_after_epoch: None,
    };
    let s = train(&cfg, &opts).unwrap();
    let test = s.test.as_ref().unwrap();
    let pop = s.test_mostpop.as_ref().unwrap();
    assert_eq!(test.metrics.n_users, 943);
    let (ndcg, ndcg_pop) = (test.value(Metric::Ndcg(10)), pop.value(Metric::Ndcg(10)));
    let (hr, hr_pop) = (test.value(Metric::Hr(10)), pop.value(Metric::Hr(10)));
    eprintln!(
        "ML-100k test NDCG@10 {ndcg:.4} (MostPop {ndcg_pop:.4}), HR@10 {hr:.4} (MostPop {hr_pop:.4})"
    );
    assert!(
        ndcg > 1.5 * ndcg_pop,
        "EASE NDCG@10 {ndcg} vs MostPop {ndcg_pop}"
    );
    assert!(hr > 1.3 * hr_pop, "EASE HR@10 {hr} vs MostPop {hr_pop}");
    let m = &s.metrics;
    assert_eq!(m["model"], "ease");
    assert_eq!(m["train"]["epochs"], 1);
    assert_eq!(m["train"]["stop"], "completed");
    assert_eq!(m["train"]["best_epoch"], 1);
    assert_eq!(m["test"]["full"]["ndcg@10"], ndcg);
    assert_eq!(m["model_config"]["lambda"], 200.0);

    // The best/ checkpoint reloads into a fresh model and gives the same ranks for every user.
    let (again, _, _) = evaluate_run(&cfg.out, None, |_| {}).unwrap();
    assert_eq!(again.metrics.ranks, test.metrics.ranks);
}
