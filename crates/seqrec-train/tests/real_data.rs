//! MostPop on `ml-1m-sasrec.txt` through the whole pipeline (short name, cache, leave-one-out split,
//! evaluation batches, ranking, catalogue metrics) reproduces the numpy reference of
//! `crates/seqrec-metrics/tests/real_data.rs`: test targets = each user's last item, popularity counted
//! over every earlier event (training + validation), history excluded, ties against the model.
//! Fails (does not skip) when the data are missing.

mod common;

use seqrec_metrics::Metric;
use seqrec_train::{Protocol, RunOptions, TrainConfig, evaluate_run, train};

#[test]
fn mostpop_on_ml1m_sasrec_matches_the_numpy_reference() {
    let dir = common::scratch("ml1m");
    let mut cfg = TrainConfig::default();
    cfg.data.dataset = "ml-1m-sasrec".into();
    cfg.data.cache_dir = dir.join("cache");
    cfg.train.epochs = 1;
    cfg.train.eval_every = 1;
    cfg.train.threads = 2;
    cfg.out = dir.join("run");
    let opts = RunOptions {
        quiet: true,
        stop_after_epoch: None,
    };
    let s = train(&cfg, &opts).unwrap();
    let p = s.test_mostpop.as_ref().unwrap();
    let rep = &p.metrics;
    assert_eq!(rep.n_users, 6040);
    let hits = |k: usize| rep.ranks.iter().filter(|&&r| (r as usize) < k).count();
    assert_eq!((hits(5), hits(10), hits(20)), (122, 219, 413));
    assert_eq!(
        rep.ranks.iter().map(|&r| u64::from(r)).sum::<u64>(),
        3_957_661
    );
    assert_eq!(rep.ranks.iter().max(), Some(&3374));
    assert_eq!(rep.ranks[0], 793); // user 1
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-12 * b.abs();
    assert!(
        close(p.value(Metric::Ndcg(10)), 0.01781499649694793),
        "{}",
        p.value(Metric::Ndcg(10))
    );
    assert!(close(rep.mrr, 0.019887597271626877));
    let c = p.catalogue.as_ref().unwrap();
    let at10 = c.at_k.iter().find(|a| a.k == 10).unwrap();
    assert_eq!(at10.distinct_items, 199);
    assert!(close(at10.gini, 0.9923631101012764), "{}", at10.gini);
    assert!(
        close(at10.avg_popularity, 2526.129834437086),
        "{}",
        at10.avg_popularity
    );
    // metrics.json carries the same numbers.
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(cfg.out.join("metrics.json")).unwrap())
            .unwrap();
    let full = &m["mostpop"]["test"]["full"];
    assert!(close(
        full["ndcg@10"].as_f64().unwrap(),
        0.01781499649694793
    ));
    assert_eq!(full["users"], 6040);
    assert_eq!(m["dataset"], cfg.data.dataset.as_str());
    assert_eq!(m["dataset_info"]["n_items"], 3416);
    assert_eq!(m["dataset_info"]["n_events"], 999_611);
    // The sampled protocols are reported next to the full one, with larger numbers.
    for key in ["sampled_uniform_100", "sampled_popular_100"] {
        let sampled = m["mostpop"]["test"][key]["hr@10"].as_f64().unwrap();
        assert!(
            sampled > 2.0 * full["hr@10"].as_f64().unwrap(),
            "{key}: {sampled}"
        );
    }

    // The sampled protocol on the same run: 100 uniform negatives make every metric larger.
    let (model, mp, _) =
        evaluate_run(&cfg.out, None, |s| s.protocol = Protocol::SampledUniform).unwrap();
    assert_eq!(mp.metrics.n_users, 6040);
    assert!(mp.value(Metric::Hr(10)) > 3.0 * p.value(Metric::Hr(10)));
    assert!(model.catalogue.is_none());
}
