//! Turn raw interaction logs into leakage-free training batches.
//!
//! The principal type is [`Dataset`]: every user's events in time order with dense ids
//! (`1..=N`, `0` is padding) and a [`Vocab`] mapping dense ids back to the file's ids.
#![deny(missing_docs)]

mod dataset;

pub use dataset::{Dataset, Id, PAD, Vocab};

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
