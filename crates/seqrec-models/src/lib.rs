//! Sequential recommenders built on `seqrec-nn`: the [`Model`] trait every model implements,
//! [`MostPop`], the popularity floor reported next to every model, [`Ease`] (closed-form item-item,
//! pure Rust; LAPACK with the opt-in feature `openblas`), [`Gru4rec`], [`LstmAttn`] (LSTM + attention pooling with optional context fusion),
//! [`Sasrec`] (SASRec with the paper's sampled BCE, the full-softmax "SASRec+" loss, gSASRec's gBCE or
//! a log-Q sampled softmax, configured by [`SasrecConfig`] or [`GsasrecConfig`]) and [`Bert4rec`]
//! (bidirectional cloze training, [`Bert4recConfig`]).
//!
//! A model is built from its documented config and the training sequences of a split, trains one epoch
//! at a time, scores histories against the whole catalogue, and saves/loads everything needed to resume
//! exactly (parameters and optimizer state).
//!
//! ```
//! use seqrec_data::{Dataset, Split, Vocab};
//! use seqrec_models::{Model, MostPop};
//!
//! let users = Vocab::from_originals(vec!["u1".into(), "u2".into()]).unwrap();
//! let items = Vocab::from_originals(vec!["a".into(), "b".into(), "c".into()]).unwrap();
//! let ds = Dataset::from_sequences(users, items, vec![
//!     (vec![1, 2, 2, 3, 1], vec![1, 2, 3, 4, 5]),
//!     (vec![2, 2, 1, 3], vec![1, 2, 3, 4]),
//! ]).unwrap();
//! let split = Split::leave_one_out(&ds);
//! let train = split.train_sequences(&ds).unwrap();
//! let mut model = MostPop::new(&train);
//! model.train_epoch(&train, 0, &mut |_| {}).unwrap();
//! // Item 2 was seen 4 times in training: it gets the highest score for any history.
//! let mut scores = vec![0.0f32; 4];
//! model.score(&[0, 1], 1, &mut scores);
//! assert!(scores[2] > scores[1] && scores[2] > scores[3]);
//! ```
#![deny(missing_docs)]

mod adam;
mod bert4rec;
pub mod ease;
mod epoch;
pub mod gru4rec;
pub mod lstm_attn;
mod model;
mod mostpop;
mod persist;
mod positions;
mod sasrec;
pub mod spd;

pub use bert4rec::{Bert4rec, Bert4recConfig, Bert4recNet};
pub use ease::{Ease, EaseConfig};
pub use gru4rec::{Gru4rec, Gru4recBatching, Gru4recConfig, Gru4recLoss};
pub use lstm_attn::{ContextFusion, LstmAttn, LstmAttnConfig};
pub use model::{EpochReport, HistoryContext, Model, ModelError, Precision, Recurrent, StepReport};
pub use mostpop::MostPop;
pub use positions::Positions;
pub use sasrec::{
    GsasrecConfig, Sasrec, SasrecConfig, SasrecLoss, SasrecNet, SasrecSampler, TrainInputs,
};
