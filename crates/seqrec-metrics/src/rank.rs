//! Rank a target item in a score row, ties counted against the model.
//!
//! The rank is 0-based: rank 0 means the target is strictly above every other candidate. A candidate whose
//! score is `>=` the target's pushes the target down one place, so a tie never helps the model: a constant
//! scorer gets the worst possible rank, never the best (RecBole and `torch.topk` break ties by position,
//! which can let a degenerate model look good).

use std::collections::HashSet;

use rayon::prelude::*;
use serde::Serialize;

use crate::MetricsError;

/// What to do with NaN scores.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub enum NanPolicy {
    /// Return [`MetricsError::NanScore`] when the target or any candidate taking part in the ranking scores
    /// NaN. NaN in excluded items (or padding) is ignored. The default: NaN usually means a diverged model.
    #[default]
    Error,
    /// Rank NaN against the model: a NaN candidate counts as scoring above the target, and a NaN target
    /// gets the worst rank (every candidate is above it). Implemented as counting `!(s < target)`.
    RankWorst,
}

/// Items removed from the ranking, typically the user's history ("seen items excluded" full ranking).
///
/// Id 0 (padding) is never ranked whether or not it is listed. The target itself is never excluded, even when
/// listed (a repeated item can be the target); it is what is being ranked.
#[derive(Clone, Copy, Debug)]
pub enum Exclude<'a> {
    /// Rank against every item `1..n`.
    Nothing,
    /// A strictly increasing list of ids (checked; [`MetricsError::NotSorted`] otherwise).
    Sorted(&'a [u32]),
    /// A set of ids.
    Set(&'a HashSet<u32>),
    /// A mask over the score row: `mask[i] == true` excludes item `i`. Must have the row's length.
    Mask(&'a [bool]),
}

impl Exclude<'_> {
    /// Whether `id` is excluded (the target rule is the caller's business). Binary search for `Sorted`.
    pub(crate) fn contains(&self, id: u32) -> bool {
        match self {
            Exclude::Nothing => false,
            Exclude::Sorted(s) => s.binary_search(&id).is_ok(),
            Exclude::Set(s) => s.contains(&id),
            Exclude::Mask(m) => m.get(id as usize).copied().unwrap_or(false),
        }
    }

    /// Checks ids are in range (`< n`), `Sorted` is strictly increasing and `Mask` has length `n`.
    pub(crate) fn validate(&self, n: usize) -> Result<(), MetricsError> {
        let check = |id: u32| {
            if (id as usize) < n {
                Ok(())
            } else {
                Err(MetricsError::ItemOutOfRange { id, n_items: n })
            }
        };
        match self {
            Exclude::Nothing => Ok(()),
            Exclude::Sorted(s) => {
                for (p, w) in s.windows(2).enumerate() {
                    if w[1] <= w[0] {
                        return Err(MetricsError::NotSorted { position: p + 1 });
                    }
                }
                s.last().map_or(Ok(()), |&id| check(id))
            }
            Exclude::Set(s) => s.iter().try_for_each(|&id| check(id)),
            Exclude::Mask(m) => {
                if m.len() == n {
                    Ok(())
                } else {
                    Err(MetricsError::LengthMismatch { a: m.len(), b: n })
                }
            }
        }
    }

    /// Calls `f` once for each distinct excluded id (`Mask` is not listed; handled by the caller).
    fn for_each_id(&self, mut f: impl FnMut(u32)) {
        match self {
            Exclude::Nothing | Exclude::Mask(_) => {}
            Exclude::Sorted(s) => s.iter().for_each(|&i| f(i)),
            Exclude::Set(s) => s.iter().for_each(|&i| f(i)),
        }
    }
}

/// Counts `!(s < t)` (ties and, via the negation, NaN count against the model) and NaNs, in one pass.
///
/// Branch-free body so the compiler vectorises it; `u32` lanes are enough for any row we can index with
/// `u32` ids.
#[inline]
fn count_not_below(scores: &[f32], t: f32) -> (usize, usize) {
    let mut ge = 0u32;
    let mut nan = 0u32;
    for &s in scores {
        ge += u32::from(!(s < t));
        nan += u32::from(s.is_nan());
    }
    (ge as usize, nan as usize)
}

/// Same as [`count_not_below`] over the items not masked out.
#[inline]
fn count_not_below_masked(scores: &[f32], mask: &[bool], t: f32) -> (usize, usize) {
    let mut ge = 0u32;
    let mut nan = 0u32;
    for (&s, &m) in scores.iter().zip(mask) {
        let keep = u32::from(!m);
        ge += keep & u32::from(!(s < t));
        nan += keep & u32::from(s.is_nan());
    }
    (ge as usize, nan as usize)
}

/// 0-based rank of `target` among all items `1..row.len()` not excluded, ties counted against the model.
///
/// `row[i]` is the score of item `i`; `row[0]` (padding) is ignored. The rank is the number of non-excluded
/// items other than the target whose score is `>=` the target's. One pass over the row plus one look-up per
/// excluded id; no allocation.
///
/// # Errors
/// [`MetricsError::TargetOutOfRange`] for target 0 or `>= row.len()`; [`MetricsError::ItemOutOfRange`] /
/// [`MetricsError::NotSorted`] / [`MetricsError::LengthMismatch`] for a bad exclusion; [`MetricsError::NanScore`]
/// under [`NanPolicy::Error`] when the target or a ranked candidate is NaN.
///
/// ```
/// use seqrec_metrics::{rank_full, Exclude, NanPolicy};
/// //          pad  1    2    3    4
/// let row = [9.0, 0.5, 0.9, 0.5, 0.1];
/// // Item 2 beats item 1; item 3 ties with it and also counts against it.
/// assert_eq!(rank_full(&row, 1, Exclude::Nothing, NanPolicy::Error).unwrap(), 2);
/// // Excluding item 2 (seen) moves the target up one place.
/// assert_eq!(rank_full(&row, 1, Exclude::Sorted(&[2]), NanPolicy::Error).unwrap(), 1);
/// ```
pub fn rank_full(
    row: &[f32],
    target: u32,
    exclude: Exclude<'_>,
    nan: NanPolicy,
) -> Result<usize, MetricsError> {
    let n = row.len();
    let ti = target as usize;
    if target == 0 || ti >= n {
        return Err(MetricsError::TargetOutOfRange { target, n_items: n });
    }
    exclude.validate(n)?;
    let t = row[ti];
    if nan == NanPolicy::Error && t.is_nan() {
        return Err(MetricsError::NanScore { item: target });
    }
    // `count` includes the target itself (`!(t < t)` holds even for NaN), removed at the end.
    let (mut count, mut nans) = match exclude {
        Exclude::Mask(mask) => {
            let (c, k) = count_not_below_masked(&row[1..], &mask[1..], t);
            // The target is never excluded: add it back if the mask removed it.
            (c + usize::from(mask[ti]), k)
        }
        _ => count_not_below(&row[1..], t),
    };
    exclude.for_each_id(|id| {
        if id != 0 && id != target {
            let s = row[id as usize];
            count -= usize::from(!(s < t));
            nans -= usize::from(s.is_nan());
        }
    });
    if nan == NanPolicy::Error && nans > 0 {
        // Slow path, only on error: report the first NaN candidate that was ranked.
        let item = (1..n as u32)
            .find(|&i| row[i as usize].is_nan() && (i == target || !exclude.contains(i)))
            .unwrap_or(0);
        return Err(MetricsError::NanScore { item });
    }
    Ok(count - 1)
}

/// 0-based rank of `target` among sampled negative candidates (e.g. 100 uniform or popularity-sampled
/// items supplied by the caller), ties counted against the model.
///
/// The rank is the number of candidates whose score is `>=` the target's. Candidates are counted as given:
/// a duplicate (sampling with replacement) counts twice. Padding id 0 is rejected as out of range.
///
/// # Errors
/// [`MetricsError::TargetOutOfRange`], [`MetricsError::ItemOutOfRange`] for a candidate 0 or `>= row.len()`,
/// [`MetricsError::CandidateIsTarget`], and [`MetricsError::NanScore`] under [`NanPolicy::Error`].
///
/// ```
/// use seqrec_metrics::{rank_sampled, NanPolicy};
/// let row = [0.0, 0.3, 0.9, 0.3, 0.1];
/// assert_eq!(rank_sampled(&row, 1, &[3, 4], NanPolicy::Error).unwrap(), 1); // the tie with item 3 counts
/// ```
pub fn rank_sampled(
    row: &[f32],
    target: u32,
    negatives: &[u32],
    nan: NanPolicy,
) -> Result<usize, MetricsError> {
    let n = row.len();
    let ti = target as usize;
    if target == 0 || ti >= n {
        return Err(MetricsError::TargetOutOfRange { target, n_items: n });
    }
    let t = row[ti];
    if nan == NanPolicy::Error && t.is_nan() {
        return Err(MetricsError::NanScore { item: target });
    }
    let mut count = 0;
    for (position, &c) in negatives.iter().enumerate() {
        if c == 0 || c as usize >= n {
            return Err(MetricsError::ItemOutOfRange { id: c, n_items: n });
        }
        if c == target {
            return Err(MetricsError::CandidateIsTarget { position, target });
        }
        let s = row[c as usize];
        if nan == NanPolicy::Error && s.is_nan() {
            return Err(MetricsError::NanScore { item: c });
        }
        count += usize::from(!(s < t));
    }
    Ok(count)
}

/// 0-based rank of a target score among negative scores, ties counted against the model.
///
/// For models that score only the target and its sampled negatives (SASRec.pytorch's evaluation does).
/// Under [`NanPolicy::Error`] a NaN is reported with item id 0 (no ids are known here).
///
/// ```
/// use seqrec_metrics::{rank_in_scores, NanPolicy};
/// assert_eq!(rank_in_scores(0.5, &[0.1, 0.5, 0.7], NanPolicy::Error).unwrap(), 2);
/// ```
pub fn rank_in_scores(
    target_score: f32,
    negative_scores: &[f32],
    nan: NanPolicy,
) -> Result<usize, MetricsError> {
    let (count, nans) = count_not_below(negative_scores, target_score);
    if nan == NanPolicy::Error && (nans > 0 || target_score.is_nan()) {
        return Err(MetricsError::NanScore { item: 0 });
    }
    Ok(count)
}

/// [`rank_full`] for a batch of rows in parallel (rayon): `scores` is `[targets.len(), n_items]` row-major,
/// `exclude[u]` goes with row `u`.
///
/// # Errors
/// [`MetricsError::LengthMismatch`] when `scores.len() != targets.len() * n_items` or
/// `exclude.len() != targets.len()`; otherwise the error of a failing row (which one, when several fail,
/// depends on scheduling).
pub fn rank_full_batch(
    scores: &[f32],
    n_items: usize,
    targets: &[u32],
    exclude: &[Exclude<'_>],
    nan: NanPolicy,
) -> Result<Vec<usize>, MetricsError> {
    if n_items == 0 || scores.len() != targets.len() * n_items {
        return Err(MetricsError::LengthMismatch {
            a: scores.len(),
            b: targets.len() * n_items,
        });
    }
    if exclude.len() != targets.len() {
        return Err(MetricsError::LengthMismatch {
            a: exclude.len(),
            b: targets.len(),
        });
    }
    scores
        .par_chunks_exact(n_items)
        .zip(targets.par_iter())
        .zip(exclude.par_iter())
        .map(|((row, &t), &ex)| rank_full(row, t, ex, nan))
        .collect()
}
