//! Turn raw interaction logs into leakage-free training batches.
//!
//! The principal type is [`Dataset`]: every user's events in time order with dense ids
//! (`1..=N`, `0` is padding) and a [`Vocab`] mapping dense ids back to the file's ids.
//! The pipeline: [`read_log`] (streaming, [`Format`] detected or named) -> [`prepare`] with a
//! [`PrepareConfig`] (rating threshold, [`Dedup`], [`KCore`], stable time order) -> [`Split`]
//! (leave-one-out, temporal, random users) -> [`SasrecBatcher`] / [`SessionParallel`] batches with
//! [`NegativeSampler`] negatives. [`cache`] stores a prepared dataset in a checksummed file.
//!
//! ```
//! use std::path::Path;
//! use seqrec_data::{Format, PrepareConfig, ReadOptions, Split, prepare, read_log_from};
//!
//! // MovieLens "::" lines: user::item::rating::timestamp. User 1's two events at t = 5 keep file order.
//! let text = "1::10::5::5\n1::20::3::5\n1::10::4::9\n2::20::4::1\n2::30::2::2\n2::10::5::3\n";
//! let opts = ReadOptions { format: Some(Format::MovieLens), ..ReadOptions::default() };
//! let log = read_log_from(text.as_bytes(), Path::new("example.dat"), &opts).unwrap();
//! let ds = prepare(&log, &PrepareConfig::default()).unwrap();
//! assert_eq!((ds.n_users(), ds.n_items(), ds.n_events()), (2, 3, 6));
//! let first_user_items: Vec<&str> = ds.items_of(1).iter().map(|&i| ds.items.original(i).unwrap()).collect();
//! assert_eq!(first_user_items, ["10", "20", "10"]);
//!
//! // Leave-one-out: last event is the test target, second-to-last the validation target.
//! let split = Split::leave_one_out(&ds);
//! assert_eq!(split.test().len(), 2);
//! assert_eq!(split.n_train_events(), 2);
//! split.check_no_leakage(&ds).unwrap();
//! ```
#![deny(missing_docs)]

pub mod cache;
mod dataset;
mod error;
mod prepare;
mod read;
mod stats;
pub mod synth;

pub use dataset::{Dataset, Id, PAD, Vocab};
pub use error::{CacheProblem, DataError, Result};
pub use prepare::{Dedup, KCore, PrepareConfig, PrepareConfigBuilder, prepare, prepare_owned};
pub use read::{
    Column, ColumnMap, Format, MAX_REPORTED_INVALID, Movie, RawLog, ReadOptions, detect_format,
    parse_timestamp, read_log, read_log_from, read_movies,
};
pub use stats::Stats;

// Splits, context features, batching and negative sampling.
mod batch;
mod context;
mod negative;
mod split;

pub use batch::{
    BatchError, EvalBatch, EvalBatcher, Negatives, SasrecBatch, SasrecBatcher, SasrecConfig,
    SessionBatch, SessionParallel, WindowMode,
};
pub use context::{ContextConfig, ContextError, PositionFrom};
pub use negative::{
    ComplementScratch, Distribution, EvalNegatives, ItemMask, NegativeError, NegativeSampler,
    SeqRng, sample_eval_negatives, sample_eval_negatives_train_only,
};
pub use split::{EvalCase, Protocol, Sequences, Split, SplitError, TemporalTargets};
