//! The crate's error type.

use thiserror::Error;

/// Everything that can go wrong when ranking, aggregating or testing.
///
/// All of these come from caller input; none is a programming error inside the crate.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum MetricsError {
    /// Occurs when a target id is 0 (padding) or not below the length of the score row.
    #[error(
        "target item id {target} is not rankable in a score row of {n_items} entries (valid ids are 1..{n_items})"
    )]
    TargetOutOfRange {
        /// The offending target id.
        target: u32,
        /// Length of the score row (padding included).
        n_items: usize,
    },
    /// Occurs when an id in an exclusion list, a candidate list or a top-k list is not below the row length
    /// (or the catalogue size).
    #[error("item id {id} is out of range for {n_items} entries")]
    ItemOutOfRange {
        /// The offending id.
        id: u32,
        /// Length of the score row / catalogue (padding included).
        n_items: usize,
    },
    /// Occurs when a score that takes part in a ranking is NaN under [`NanPolicy::Error`](crate::NanPolicy).
    #[error(
        "score of item {item} is NaN (use NanPolicy::RankWorst to rank NaN against the model instead)"
    )]
    NanScore {
        /// The item whose score is NaN (0 when the scores were given without ids).
        item: u32,
    },
    /// Occurs when a list that must be sorted and strictly increasing is not.
    #[error("exclusion list is not strictly increasing at position {position}")]
    NotSorted {
        /// Index of the first element that is not greater than its predecessor.
        position: usize,
    },
    /// Occurs when a sampled negative candidate equals the target.
    #[error("negative candidate at position {position} is the target item {target}")]
    CandidateIsTarget {
        /// Position in the candidate list.
        position: usize,
        /// The target id.
        target: u32,
    },
    /// Occurs when a metric cut-off `k` is 0, or the cut-off list is empty.
    #[error("invalid cut-offs {0:?}: need at least one, each >= 1")]
    InvalidCutoffs(Vec<usize>),
    /// Occurs when two accumulators with different cut-offs or catalogue sizes are merged.
    #[error("cannot merge accumulators with different configurations: {0}")]
    MergeMismatch(String),
    /// Occurs when the same user is recorded twice in one [`MetricAccumulator`](crate::MetricAccumulator).
    #[error("user {0} was recorded more than once")]
    DuplicateUser(u32),
    /// Occurs when a mean or a test is asked of no data (no users, no recommendations, fewer than 2 pairs).
    #[error("not enough data: {0}")]
    NotEnoughData(String),
    /// Occurs when two inputs that must have the same length do not (paired samples, a mask and its score
    /// row, a score batch and its targets).
    #[error("lengths differ: {a} vs {b}")]
    LengthMismatch {
        /// Length of the first input.
        a: usize,
        /// Length expected (of the second input).
        b: usize,
    },
    /// Occurs when a value given to a statistical test is not finite.
    #[error("value at position {0} is not finite")]
    NonFinite(usize),
    /// Occurs when the popularity table does not cover the catalogue.
    #[error("popularity table has {got} entries, the catalogue has {expected}")]
    PopularityLength {
        /// Entries given.
        got: usize,
        /// Entries expected (catalogue size, padding included).
        expected: usize,
    },
    /// Occurs when the exact Wilcoxon distribution is requested for too many ranked differences.
    #[error(
        "exact Wilcoxon test asked for {n} ranked differences; at most {max} (use the normal approximation)"
    )]
    TooLargeForExact {
        /// Number of ranked differences.
        n: usize,
        /// The limit, [`MAX_EXACT_N`](crate::stats::MAX_EXACT_N).
        max: usize,
    },
    /// Occurs when two reports compared user by user do not cover the same users.
    #[error("the two runs do not cover the same users: {0}")]
    UsersDiffer(String),
}
