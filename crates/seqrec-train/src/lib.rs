//! Training and evaluation of seqrec models: configs, the training loop, evaluation protocols and run
//! directories (what `cargo xtask train` and `cargo xtask eval` run).
//!
//! - [`TrainConfig`]: the whole run description, TOML with documented fields, `key=value` overrides.
//! - [`ModelConfig`]: the model registry (`model = "mostpop" | ...`), [`ModelConfig::build`].
//! - [`train`], [`resume`], [`train_with`]: the loop (seeded, validation every K epochs, early stopping,
//!   NaN stop keeping the last good checkpoint) writing `config.toml`, `history.jsonl`, `metrics.json`,
//!   `curve.png`, `best/`, `last/` (see [`run`]).
//! - [`evaluate`]: full ranking or sampled negatives, HR/NDCG/MRR/Precision/MAP and catalogue metrics,
//!   ties counted against the model.
//!
//! ```
//! use seqrec_data::{Dataset, Split, Vocab};
//! use seqrec_metrics::{Cutoffs, Metric};
//! use seqrec_models::{Model, MostPop, Precision};
//! use seqrec_train::{EvalSettings, NegativesExclude, Protocol, Stage, evaluate, popularity_before};
//!
//! let users = Vocab::from_originals(vec!["u1".into(), "u2".into()]).unwrap();
//! let items = Vocab::from_originals(vec!["a".into(), "b".into(), "c".into()]).unwrap();
//! let ds = Dataset::from_sequences(users, items, vec![
//!     (vec![1, 2, 2, 3, 2], vec![1, 2, 3, 4, 5]),
//!     (vec![2, 2, 1, 3, 3], vec![1, 2, 3, 4, 5]),
//! ]).unwrap();
//! let split = Split::leave_one_out(&ds);
//! let train = split.train_sequences(&ds).unwrap();
//! let mut model = MostPop::new(&train);
//! model.train_epoch(&train, 0, &mut |_| {}).unwrap();
//! let settings = EvalSettings {
//!     protocol: Protocol::Full, negatives: 0, negatives_seed: 0,
//!     negatives_exclude: NegativesExclude::Seen, train_lens: None, exclude_history: false,
//!     cutoffs: Cutoffs::new([1, 2]).unwrap(), batch_size: 8, precision: Precision::F32,
//! };
//! let pop = popularity_before(&ds, &split, Stage::Test);
//! let out = evaluate(&mut model, &ds, split.test(), &pop, &settings).unwrap();
//! // Training counts: item 2 four times, items 1 and 3 once. User 1's target 2 is first (HR@1 = 1);
//! // user 2's target 3 ties with item 1 (ties count against the model): rank 2.
//! assert_eq!(out.metrics.ranks, vec![0, 2]);
//! assert_eq!(out.value(Metric::Hr(1)), 0.5);
//! ```
#![deny(missing_docs)]

mod config;
pub mod dataset;
mod error;
mod eval;
pub mod plot;
mod registry;
pub mod run;

pub use config::{
    DataConfig, EvalConfig, FIELD_DOCS, LoopConfig, MODEL_FIELD_DOCS, NegativesExclude, Protocol,
    TrainConfig, field_doc, parse_metric,
};
pub use error::TrainError;
pub use eval::{
    EvalOutcome, EvalSettings, Stage, evaluate, evaluate_protocols, format_table, popularity_before,
};
pub use registry::{ModelConfig, MostPopConfig};
pub use run::{
    Experiment, ModelFactory, RunOptions, RunSummary, StopReason, evaluate_run, resume, train,
    train_with,
};
