//! Config parsing, overrides, validation errors naming the field, and dataset short names.

use proptest::prelude::*;
use seqrec_metrics::Metric;
use seqrec_train::dataset::{KNOWN_DATASETS, data_dir, load_dataset, resolve_dataset};
use seqrec_train::{
    FIELD_DOCS, MODEL_FIELD_DOCS, ModelConfig, NegativesExclude, Protocol, TrainConfig, TrainError,
    field_doc, parse_metric,
};

fn field_of(e: TrainError) -> String {
    match e {
        TrainError::Config { field, .. } => field,
        other => panic!("expected a config error, got {other}"),
    }
}

#[test]
fn empty_file_is_the_default_and_toml_round_trips() {
    let d = TrainConfig::from_toml_str("").unwrap();
    assert_eq!(d, TrainConfig::default());
    assert_eq!(TrainConfig::from_toml_str(&d.to_toml()).unwrap(), d);
    assert_eq!(
        TrainConfig::from_toml_str(&d.to_commented_toml()).unwrap(),
        d
    );
    let cfg = TrainConfig::from_toml_str(
        "out = \"runs/x\"\n[data]\ndataset = \"games\"\n[train]\nepochs = 3\nmetric = \"hr@20\"\n\
         [eval]\nprotocol = \"sampled-pop\"\ncutoffs = [1, 20]\n[model]\nmodel = \"mostpop\"\n",
    )
    .unwrap();
    assert_eq!(cfg.data.dataset, "games");
    assert_eq!(cfg.eval.protocol, Protocol::SampledPop);
    assert_eq!(cfg.metric().unwrap(), Metric::Hr(20));
    assert_eq!(cfg.model.name(), "mostpop");
}

#[test]
fn every_key_is_documented_and_every_doc_is_a_key() {
    // Every registered model's default config: the general keys and that model's hyper-parameters.
    let mut all_keys = Vec::new();
    for name in ModelConfig::NAMES {
        let cfg = TrainConfig {
            model: ModelConfig::default_for(name).unwrap(),
            ..TrainConfig::default()
        };
        let text = cfg.to_toml();
        let mut keys = Vec::new();
        let mut section = String::new();
        for line in text.lines() {
            if line.starts_with('[') {
                section = line.trim_matches(|c| c == '[' || c == ']').to_owned();
            } else if let Some((k, _)) = line.split_once(" = ") {
                keys.push(if section.is_empty() {
                    k.to_owned()
                } else {
                    format!("{section}.{k}")
                });
            }
        }
        for k in &keys {
            assert!(
                field_doc(name, k).is_some(),
                "{name}: {k} has no documentation"
            );
        }
        for (m, k, _) in MODEL_FIELD_DOCS {
            // Optional fields (`clip_grad_norm`, `embedding_std`) are left out of the TOML while unset.
            let optional = k.ends_with("clip_grad_norm") || k.ends_with("embedding_std");
            if m == name && !optional {
                assert!(
                    keys.iter().any(|key| key == k),
                    "MODEL_FIELD_DOCS names {m} {k}, which is not a key"
                );
            }
        }
        all_keys.extend(keys);
    }
    for (d, _) in FIELD_DOCS {
        assert!(
            all_keys.iter().any(|k| k == d),
            "FIELD_DOCS names {d}, which is not a key"
        );
    }
}

#[test]
fn unknown_keys_and_bad_types_are_parse_errors() {
    let e = TrainConfig::from_toml_str("[train]\nepoch = 3\n").unwrap_err();
    assert!(
        matches!(&e, TrainError::Parse(m) if m.contains("epoch")),
        "{e}"
    );
    let e = TrainConfig::from_toml_str("[model]\nmodel = \"mostpop\"\nhidden = 3\n").unwrap_err();
    assert!(
        matches!(&e, TrainError::Parse(m) if m.contains("hidden")),
        "{e}"
    );
    let e = TrainConfig::from_toml_str("[model]\nmodel = \"bert\"\n").unwrap_err();
    assert!(
        matches!(&e, TrainError::Parse(m) if m.contains("bert")),
        "{e}"
    );
    let e = TrainConfig::from_toml_str("[train]\nepochs = \"many\"\n").unwrap_err();
    assert!(matches!(e, TrainError::Parse(_)));
}

#[test]
fn validation_errors_name_the_field() {
    let bad = [
        ("[train]\nepochs = 0", "train.epochs"),
        ("[train]\neval_every = 0", "train.eval_every"),
        ("[train]\nmetric = \"ndcg@50\"", "train.metric"),
        ("[train]\nmetric = \"auc\"", "train.metric"),
        ("[eval]\ncutoffs = [0, 10]", "eval.cutoffs"),
        ("[eval]\nbatch_size = 0", "eval.batch_size"),
        (
            "[eval]\nprotocol = \"sampled-uniform\"\nnegatives = 0",
            "eval.negatives",
        ),
        ("[data]\nsplit = \"temporal\"", "data.split"),
        ("[data]\nformat = \"xml\"", "data.format"),
        ("[data]\nmin_item_events = -2", "data.min_item_events"),
        ("[data]\ndataset = \"\"", "data.dataset"),
    ];
    for (text, field) in bad {
        let e = TrainConfig::from_toml_str(text).unwrap_err();
        let msg = e.to_string();
        assert_eq!(field_of(e), field, "{text}");
        assert!(msg.contains(field), "{msg}");
    }
    // The message carries the value.
    let e = TrainConfig::from_toml_str("[train]\nmetric = \"ndcg@50\"").unwrap_err();
    assert!(e.to_string().contains("ndcg@50"), "{e}");
}

#[test]
fn overrides() {
    let mut c = TrainConfig::default();
    c.set("train.epochs", "10").unwrap();
    c.set("train.metric", "hr@5").unwrap();
    c.set("eval.cutoffs", "[1, 5]").unwrap();
    c.set("data.dataset", "games").unwrap(); // a bare word is a string
    c.set("eval.protocol", "sampled-uniform").unwrap();
    c.set("eval.negatives_exclude", "train").unwrap();
    c.set("out", "runs/x").unwrap();
    assert_eq!(c.eval.negatives_exclude, NegativesExclude::Train);
    assert!(c.set("eval.negatives_exclude", "valid").is_err());
    for e in [NegativesExclude::Seen, NegativesExclude::Train] {
        assert_eq!(NegativesExclude::from_name(e.name()).unwrap(), e);
    }
    assert_eq!(
        field_of(NegativesExclude::from_name("valid").unwrap_err()),
        "eval.negatives_exclude"
    );
    assert_eq!(c.train.epochs, 10);
    assert_eq!(c.eval.cutoffs, [1, 5]);
    assert_eq!(c.data.dataset, "games");
    assert_eq!(c.eval.protocol, Protocol::SampledUniform);
    assert_eq!(c.run_dir(), std::path::PathBuf::from("runs/x"));
    c.set("model.model", "mostpop").unwrap();
    assert_eq!(c.model, ModelConfig::default_for("mostpop").unwrap());
    // A failed override leaves the config unchanged and names the field.
    let before = c.clone();
    assert_eq!(
        field_of(c.set("train.eval_every", "0").unwrap_err()),
        "train.eval_every"
    );
    assert_eq!(
        field_of(c.set("model.model", "bert").unwrap_err()),
        "model.model"
    );
    assert!(matches!(
        c.set("train.epochs", "abc"),
        Err(TrainError::Parse(_))
    ));
    assert!(matches!(c.set("train.epoch", "3"), Err(TrainError::Parse(m)) if m.contains("epoch")));
    assert!(matches!(c.set("nope.x", "3"), Err(TrainError::Parse(_))));
    assert!(matches!(c.set("train..x", "3"), Err(TrainError::Parse(_))));
    assert_eq!(c, before);
    // Default output directory.
    let mut d = TrainConfig::default();
    d.set("data.dataset", "ml-1m-sasrec").unwrap();
    assert_eq!(
        d.run_dir(),
        std::path::PathBuf::from("runs/sasrec-ml-1m-sasrec-seed42")
    );
}

proptest! {
    #[test]
    fn metric_names_round_trip(k in 1usize..500, which in 0usize..6) {
        let name = ["ndcg", "hr", "recall", "mrr", "map", "precision"][which];
        let m = parse_metric(&format!("{name}@{k}")).unwrap();
        let back = parse_metric(&m.name()).unwrap();
        prop_assert_eq!(m, back);
    }

    #[test]
    fn numeric_overrides_round_trip(epochs in 1usize..100_000, seed in any::<u32>(), every in 1usize..50) {
        let mut c = TrainConfig::default();
        c.set("train.epochs", &epochs.to_string()).unwrap();
        c.set("train.seed", &seed.to_string()).unwrap();
        c.set("train.eval_every", &every.to_string()).unwrap();
        prop_assert_eq!((c.train.epochs, c.train.seed, c.train.eval_every), (epochs, u64::from(seed), every));
        prop_assert_eq!(TrainConfig::from_toml_str(&c.to_toml()).unwrap(), c);
    }
}

#[test]
fn dataset_short_names_resolve() {
    let dir = data_dir();
    for k in KNOWN_DATASETS {
        let mut c = TrainConfig::default();
        c.data.dataset = k.name.into();
        let spec = resolve_dataset(&c.data, &dir).unwrap();
        assert!(
            spec.path.is_file(),
            "{} -> {} is missing",
            k.name,
            spec.path.display()
        );
    }
    let mut c = TrainConfig::default();
    let ml = resolve_dataset(&c.data, &dir).unwrap();
    assert!(ml.path.ends_with("ml-1m-ratings.dat"));
    assert_eq!(
        (ml.prepare.min_user_events(), ml.prepare.min_item_events()),
        (5, 5)
    );
    c.data.dataset = "no-such-dataset".into();
    let e = resolve_dataset(&c.data, &dir).unwrap_err();
    assert!(e.to_string().contains("ml-1m-sasrec"), "{e}");
    // The two small ones load with the published counts (events, sequences, items).
    let cache = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("seqrec-train/ds-cache");
    for (name, counts) in [
        ("instruments", (10_261, 1_429, 900)),
        ("diginetica", (12_391, 2_986, 7_139)),
    ] {
        c.data.dataset = name.into();
        let spec = resolve_dataset(&c.data, &dir).unwrap();
        let (ds, info) = load_dataset(&spec, &cache).unwrap();
        assert_eq!(
            (ds.n_events(), ds.n_users(), ds.n_items()),
            counts,
            "{name}"
        );
        assert_eq!((info.n_events, info.n_users, info.n_items), counts);
    }
}
