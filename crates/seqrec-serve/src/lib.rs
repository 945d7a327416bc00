//! Real-time recommendations from a trained seqrec run.
//!
//! - [`Recommender`]: loads a run directory's best checkpoint with its [`Catalog`] (original item ids,
//!   optional MovieLens titles) and answers top-k queries with `exclude_seen`, truncating histories to
//!   the model's window, with explanations (occlusion for every model, attention for SASRec).
//!   `cargo xtask recommend` uses it directly.
//! - [`engine::Engine`]: the model on its worker thread(s), micro-batching concurrent queries into one
//!   scoring call, with per-user recurrent state for GRU4Rec.
//! - [`server`]: the HTTP API (axum): `POST /v1/recommend`, `POST /v1/users/{user}/events`,
//!   `GET /v1/users/{user}/recommendations`, `POST /v1/admin/reload`, `GET /healthz`,
//!   `GET /metrics`; histories in SQLite ([`store::Store`]).
//! - [`client::HttpClient`]: a tiny blocking HTTP/1.1 client for tests and the load generator.
//!
//! ```
//! use seqrec_data::{Dataset, Sequences, Vocab};
//! use seqrec_models::{Model, MostPop};
//! use seqrec_serve::{RecOptions, Recommender};
//!
//! let users = Vocab::from_originals(vec!["u1".into(), "u2".into()]).unwrap();
//! let items = Vocab::from_originals(vec!["10".into(), "20".into(), "30".into()]).unwrap();
//! let ds = Dataset::from_sequences(users, items.clone(), vec![
//!     (vec![1, 2, 2, 3, 2], vec![1, 2, 3, 4, 5]),
//!     (vec![2, 1, 1], vec![1, 2, 3]),
//! ]).unwrap();
//! let train = Sequences::all(&ds);
//! let mut model = MostPop::new(&train);
//! model.train_epoch(&train, 0, &mut |_| {}).unwrap();
//! let mut rec = Recommender::from_model(Box::new(model), items.originals().to_vec(), "mostpop".into())
//!     .unwrap();
//! // Item "20" is the most popular, "10" next; with "20" seen, "10" comes first.
//! let history = rec.catalog().resolve(&["20"]).unwrap();
//! let top = rec.recommend(&history, RecOptions { k: 2, exclude_seen: true }).unwrap();
//! assert_eq!(rec.catalog().original(top[0].item), Some("10"));
//! assert_eq!(top.len(), 2);
//! // Unknown ids are typed errors, never panics.
//! assert!(rec.catalog().resolve(&["99"]).is_err());
//! ```
#![deny(missing_docs)]

pub mod api;
pub mod cli;
pub mod client;
pub mod engine;
mod error;
pub mod metrics;
mod recommender;
pub mod server;
pub mod store;

pub use error::ServeError;
pub use recommender::{
    Catalog, Contribution, Explanation, LoadOptions, RecOptions, Recommendation, Recommender, top_k,
};
