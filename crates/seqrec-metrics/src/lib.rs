//! seqrec-metrics: ranking metrics researchers can trust, computed from score rows and targets.
//!
//! Independent of any model: it works on `&[f32]` score rows (index = dense item id, index 0 is padding
//! and never ranked) and target ids.
//!
//! - **Ranking** ([`rank_full`], [`rank_sampled`], [`rank_in_scores`], [`rank_full_batch`]): the 0-based rank
//!   of the target with **ties counted against the model**: every non-excluded candidate scoring `>=` the
//!   target is ranked above it, so a constant scorer gets the worst rank. NaN is an error by default
//!   ([`NanPolicy`]). One pass, no sort, no allocation.
//! - **Metrics** ([`Metric`], [`MetricAccumulator`], [`MetricReport`]): HR/Recall, NDCG, MRR (full and @k),
//!   Precision, MAP at configurable [`Cutoffs`] (default 5, 10, 20), means and per-user values.
//! - **Top-k** ([`TopK`], [`top_k`]): partial selection with deterministic tie-break (lower id first).
//! - **Catalogue** ([`CatalogueAccumulator`], [`gini`]): coverage@k, average popularity, Gini index.
//! - **Paired statistics** ([`MetricReport::compare`], [`paired_test`], [`paired_t`], [`wilcoxon`]): mean
//!   difference with 95% CI, paired t-test, Wilcoxon signed-rank test (exact or normal approximation with
//!   tie and zero corrections), matching `scipy.stats`; [`special`] holds the hand-written Student-t and
//!   normal distributions.
//!
//! ```
//! use seqrec_metrics::{rank_full, Cutoffs, Exclude, Metric, MetricAccumulator, NanPolicy};
//!
//! // Scores of 2 users over 5 items (index 0 = padding).
//! let rows = [
//!     [0.0, 0.9, 0.2, 0.4, 0.4], // user 0: target 3, history [1]
//!     [0.0, 0.5, 0.5, 0.5, 0.5], // user 1: a constant scorer, target 2
//! ];
//! let mut acc = MetricAccumulator::new(Cutoffs::new([1, 2]).unwrap());
//! // Item 1 is excluded; item 4 ties with the target and counts against it: rank 1.
//! let r0 = rank_full(&rows[0], 3, Exclude::Sorted(&[1]), NanPolicy::Error).unwrap();
//! assert_eq!(r0, 1);
//! acc.add(0, r0);
//! // Constant scores: all 3 other items tie with the target, worst rank 3.
//! let r1 = rank_full(&rows[1], 2, Exclude::Nothing, NanPolicy::Error).unwrap();
//! assert_eq!(r1, 3);
//! acc.add(1, r1);
//! let report = acc.finish().unwrap();
//! assert_eq!(report.mean(Metric::Hr(2)), Some(0.5));
//! // NDCG@2: user 0 at rank 1 gives 1 / log2(3); user 1 gives 0.
//! assert_eq!(report.mean(Metric::Ndcg(2)), Some(1.0 / 3f64.log2() / 2.0));
//! ```
#![deny(missing_docs)]
// `!(s < t)` is the tie-and-NaN rule itself: true for ties and for NaN on either side, so both count
// against the model. Rewriting it with `partial_cmp` would hide exactly the semantics that matter.
#![allow(clippy::neg_cmp_op_on_partial_ord)]

mod catalogue;
mod error;
mod metrics;
mod rank;
pub mod reference;
pub mod special;
pub mod stats;
mod topk;

pub use catalogue::{CatalogueAccumulator, CatalogueAtK, CatalogueReport, gini};
pub use error::MetricsError;
pub use metrics::{AtK, Cutoffs, DEFAULT_CUTOFFS, Metric, MetricAccumulator, MetricReport};
pub use rank::{Exclude, NanPolicy, rank_full, rank_full_batch, rank_in_scores, rank_sampled};
pub use stats::{
    PairedT, PairedTest, Wilcoxon, WilcoxonConfig, WilcoxonMethod, ZeroMethod, paired_t,
    paired_test, wilcoxon,
};
pub use topk::{TopK, top_k};
