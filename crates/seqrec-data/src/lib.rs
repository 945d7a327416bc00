//! Turn raw interaction logs into leakage-free training batches.
//!
//! The principal type is [`Dataset`]: every user's events in time order with dense ids
//! (`1..=N`, `0` is padding) and a [`Vocab`] mapping dense ids back to the file's ids.
#![deny(missing_docs)]

mod dataset;

pub use dataset::{Dataset, Id, PAD, Vocab};
