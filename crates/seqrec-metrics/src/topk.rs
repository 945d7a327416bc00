//! Top-k items of a score row with exclusions: partial selection with a bounded heap, no full sort.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use crate::{Exclude, MetricsError};

/// A heap entry ordered so that the *worse* recommendation is the greater: lower score, then higher id.
/// The max-heap's top is then the worst of the kept items, the one to evict. Scores are never NaN here.
#[derive(Clone, Copy, Debug)]
struct Worse {
    score: f32,
    id: u32,
}

impl PartialEq for Worse {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Worse {}
impl PartialOrd for Worse {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Worse {
    fn cmp(&self, other: &Self) -> Ordering {
        // NaN never enters the heap, so `partial_cmp` is total here (and, unlike `total_cmp`, treats -0.0
        // and +0.0 as the tie they are for ranking).
        other
            .score
            .partial_cmp(&self.score)
            .unwrap_or(Ordering::Equal)
            .then(self.id.cmp(&other.id))
    }
}

/// Reusable top-k selector: keeps its buffers between calls so selecting for many users does not allocate.
///
/// Order: score descending, ties broken by lower id first (deterministic). Padding (id 0) and excluded items
/// are never returned; fewer than `k` items come back when fewer are rankable.
///
/// ```
/// use seqrec_metrics::{Exclude, TopK};
/// let row = [9.0, 0.1, 0.7, 0.7, 0.9, 0.3];
/// let mut top = TopK::new(3);
/// top.select(&row, Exclude::Sorted(&[4])).unwrap();
/// assert_eq!(top.ids(), &[2, 3, 5]); // 4 excluded; 2 and 3 tie, lower id first
/// assert_eq!(top.scores(), &[0.7, 0.7, 0.3]);
/// ```
#[derive(Clone, Debug)]
pub struct TopK {
    k: usize,
    heap: BinaryHeap<Worse>,
    ids: Vec<u32>,
    scores: Vec<f32>,
}

impl TopK {
    /// A selector for the `k` best items.
    pub fn new(k: usize) -> Self {
        TopK {
            k,
            heap: BinaryHeap::with_capacity(k + 1),
            ids: Vec::with_capacity(k),
            scores: Vec::with_capacity(k),
        }
    }

    /// The `k` this selector was built with.
    pub fn k(&self) -> usize {
        self.k
    }

    /// Ids of the last selection, best first.
    pub fn ids(&self) -> &[u32] {
        &self.ids
    }

    /// Scores of the last selection, aligned with [`ids`](Self::ids).
    pub fn scores(&self) -> &[f32] {
        &self.scores
    }

    /// Selects the top `k` of `row` (index = item id; index 0 ignored), skipping `exclude`.
    ///
    /// One pass: an item is compared with the worst kept score and only looked up in `exclude` when it would
    /// enter the heap, so a long history costs little. `O(n + m log k)` for `m` heap entries.
    ///
    /// # Errors
    /// [`MetricsError::NanScore`] when a non-excluded item scores NaN (a ranking with NaN has no meaning);
    /// errors of an invalid `exclude` (see [`rank_full`](crate::rank_full)).
    pub fn select(&mut self, row: &[f32], exclude: Exclude<'_>) -> Result<(), MetricsError> {
        self.heap.clear();
        self.ids.clear();
        self.scores.clear();
        exclude.validate(row.len())?;
        // Branch-free NaN screen (vectorises, unlike an early-exit `any`); the slow search runs only on error.
        if row.len() > 1 && row[1..].iter().fold(false, |any, s| any | s.is_nan()) {
            let bad =
                (1..row.len() as u32).find(|&i| row[i as usize].is_nan() && !exclude.contains(i));
            if let Some(item) = bad {
                return Err(MetricsError::NanScore { item });
            }
        }
        if self.k == 0 {
            return Ok(());
        }
        let mut i = 1;
        // Fill phase: the first k rankable items.
        while i < row.len() && self.heap.len() < self.k {
            let (score, id) = (row[i], i as u32);
            // NaN here can only be an excluded item.
            if !score.is_nan() && !exclude.contains(id) {
                self.heap.push(Worse { score, id });
            }
            i += 1;
        }
        // Replace phase. Ids arrive ascending, so a later item that ties the worst kept one loses the
        // tie-break: only a strictly greater score gets in (NaN never does). Most items do not get in, so
        // each block of 64 is first screened with a branch-free (vectorised) "any score > threshold"; only
        // blocks that pass are walked one by one.
        let mut threshold = self.heap.peek().map_or(f32::INFINITY, |w| w.score);
        let mut start = i;
        while start < row.len() {
            let end = (start + 64).min(row.len());
            let block = &row[start..end];
            if block.iter().fold(false, |any, &s| any | (s > threshold)) {
                for (off, &score) in block.iter().enumerate() {
                    let id = (start + off) as u32;
                    if score > threshold && !exclude.contains(id) {
                        let mut worst = self.heap.peek_mut().expect("heap holds k >= 1 items");
                        *worst = Worse { score, id };
                        drop(worst);
                        threshold = self.heap.peek().map_or(f32::INFINITY, |w| w.score);
                    }
                }
            }
            start = end;
        }
        let mut kept = std::mem::take(&mut self.heap).into_vec();
        // Sorting the k kept items (not the row): best first.
        kept.sort_unstable();
        self.ids.extend(kept.iter().map(|w| w.id));
        self.scores.extend(kept.iter().map(|w| w.score));
        kept.clear();
        self.heap = BinaryHeap::from(kept);
        Ok(())
    }
}

/// Convenience: the top `k` ids and scores of `row`, allocating a fresh [`TopK`].
///
/// # Errors
/// As [`TopK::select`].
pub fn top_k(
    row: &[f32],
    k: usize,
    exclude: Exclude<'_>,
) -> Result<(Vec<u32>, Vec<f32>), MetricsError> {
    let mut t = TopK::new(k);
    t.select(row, exclude)?;
    Ok((t.ids, t.scores))
}
