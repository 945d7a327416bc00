//! Turn raw interaction logs into leakage-free training batches.
//!
//! The principal type is [`Dataset`]: every user's events in time order with dense ids
//! (`1..=N`, `0` is padding) and a [`Vocab`] mapping dense ids back to the file's ids.
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
    SeqRng, sample_eval_negatives,
};
pub use split::{EvalCase, Protocol, Sequences, Split, SplitError, TemporalTargets};
