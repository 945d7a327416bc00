//! Turn raw interaction logs into leakage-free training batches.
//!
//! * [`Dataset`]: every user's events in time order with dense ids (`1..=N`, `0` is
//!   padding) and a [`Vocab`] mapping dense ids back to the file's ids.
//! * [`Split`]: leave-one-out, temporal or random-user splits that never leak a validation
//!   or test event (or anything after it) into training; [`EvalCase`] is one held-out target.
//! * [`ContextConfig`]: time-gap buckets and positions next to each event.
//! * [`SasrecBatcher`] (right-aligned windows, SASRec layout), [`SessionParallel`] (GRU4Rec's
//!   session-parallel steps) and [`EvalBatcher`]: batches refilled in place, no allocation per step.
//! * [`NegativeSampler`]: uniform or popularity-weighted negatives that avoid the user's
//!   items, and [`sample_eval_negatives`] for the "rank against 100 sampled items" protocol;
//!   all random draws come from the seeded, version-stable [`SeqRng`].
//!
//! ```
//! use seqrec_data::{Dataset, NegativeSampler, Negatives, SasrecBatcher, SasrecConfig, Split, Vocab};
//! let users = Vocab::from_originals(vec!["alice".into(), "bob".into()]).unwrap();
//! let items = Vocab::from_originals((1..=6).map(|i| format!("m{i}")).collect()).unwrap();
//! let ds = Dataset::from_sequences(users, items, vec![
//!     (vec![1, 2, 3, 4, 5], vec![10, 20, 30, 40, 50]),
//!     (vec![6, 5, 4], vec![1, 2, 3]),
//! ]).unwrap();
//! let split = Split::leave_one_out(&ds);
//! split.check_no_leakage(&ds).unwrap();
//! let cfg = SasrecConfig {
//!     batch_size: 2,
//!     maxlen: 4,
//!     negatives: Negatives::PerPosition { n: 1, sampler: NegativeSampler::uniform(6).unwrap() },
//!     seed: 7,
//!     ..SasrecConfig::default()
//! };
//! let mut batcher = SasrecBatcher::new(split.train_sequences(&ds).unwrap(), cfg).unwrap();
//! for epoch in 0..2 {
//!     batcher.start_epoch(epoch);
//!     while let Some(batch) = batcher.next_batch().unwrap() {
//!         assert_eq!(batch.inputs.len(), batch.batch_size * batch.maxlen);
//!         // alice (user 1) trains on [1, 2, 3]: inputs [0, 0, 1, 2], targets [0, 0, 2, 3].
//!         let r = batch.users.iter().position(|&u| u == 1).unwrap();
//!         assert_eq!(&batch.inputs[r * 4..r * 4 + 4], &[0, 0, 1, 2]);
//!         assert_eq!(&batch.targets[r * 4..r * 4 + 4], &[0, 0, 2, 3]);
//!         assert!(![1, 2, 3].contains(&batch.negatives[r * 4 + 3]));
//!     }
//! }
//! ```
#![deny(missing_docs)]

mod batch;
mod context;
mod dataset;
mod negative;
mod split;

pub use batch::{
    BatchError, EvalBatch, EvalBatcher, Negatives, SasrecBatch, SasrecBatcher, SasrecConfig,
    SessionBatch, SessionParallel, WindowMode,
};
pub use context::{ContextConfig, ContextError, PositionFrom};
pub use dataset::{Dataset, Id, PAD, Vocab};
pub use negative::{
    ComplementScratch, Distribution, EvalNegatives, ItemMask, NegativeError, NegativeSampler,
    SeqRng, sample_eval_negatives,
};
pub use split::{EvalCase, Protocol, Sequences, Split, SplitError, TemporalTargets};
