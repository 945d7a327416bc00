//! Catalogue-level metrics over the top-k lists of all users: coverage, popularity bias, concentration.

use serde::Serialize;

use crate::{Cutoffs, MetricsError};

/// Gini index of non-negative counts, sorted-counts formulation.
///
/// With the counts sorted ascending, `c_(1) <= ... <= c_(n)`, and `i` 1-based:
///
/// `G = sum_i (2i - n - 1) c_(i) / (n * sum_i c_(i))`
///
/// which equals the mean-absolute-difference definition `sum_i sum_j |c_i - c_j| / (2 n^2 mean(c))`.
/// `G = 0` when all counts are equal; `G = (n - 1) / n` (which tends to 1) when one item takes everything.
/// `None` when `counts` is empty or sums to 0 (undefined).
///
/// ```
/// use seqrec_metrics::gini;
/// assert_eq!(gini(&[4, 4, 4, 4]), Some(0.0));
/// assert_eq!(gini(&[0, 0, 0, 8]), Some(0.75)); // (n - 1) / n
/// ```
pub fn gini(counts: &[u64]) -> Option<f64> {
    let total: u64 = counts.iter().sum();
    if counts.is_empty() || total == 0 {
        return None;
    }
    let mut sorted = counts.to_vec();
    sorted.sort_unstable();
    let n = sorted.len() as f64;
    // Integer-exact weights: (2i - n - 1) with i 1-based, summed in f64 (counts * n can exceed i64 only for
    // absurd inputs).
    let weighted: f64 = sorted
        .iter()
        .enumerate()
        .map(|(i, &c)| (2.0 * (i as f64 + 1.0) - n - 1.0) * c as f64)
        .sum();
    Some(weighted / (n * total as f64))
}

/// Counts how often each item is recommended, at each cut-off, over users' top-k lists.
///
/// ```
/// use seqrec_metrics::{CatalogueAccumulator, Cutoffs};
/// // 4 real items (ids 1..=4; 0 is padding), cut-offs 1 and 2.
/// let mut acc = CatalogueAccumulator::new(5, Cutoffs::new([1, 2]).unwrap());
/// acc.add(&[1, 2]).unwrap();
/// acc.add(&[1, 3]).unwrap();
/// let popularity = [0, 10, 5, 1, 1]; // training counts per item
/// let r = acc.finish(&popularity).unwrap();
/// assert_eq!(r.at_k[0].coverage, 0.25); // only item 1 at k = 1
/// assert_eq!(r.at_k[1].coverage, 0.75); // items 1, 2, 3 at k = 2
/// assert_eq!(r.at_k[1].avg_popularity, (10.0 + 5.0 + 10.0 + 1.0) / 4.0);
/// ```
#[derive(Clone, Debug)]
pub struct CatalogueAccumulator {
    n_items: usize,
    cutoffs: Cutoffs,
    /// `counts[c][item]`: times `item` appears in the first `cutoffs[c]` places.
    counts: Vec<Vec<u64>>,
    n_lists: u64,
}

impl CatalogueAccumulator {
    /// `n_items` counts padding, like a score row's length: real items are `1..n_items`.
    pub fn new(n_items: usize, cutoffs: Cutoffs) -> Self {
        let counts = vec![vec![0; n_items]; cutoffs.as_slice().len()];
        CatalogueAccumulator {
            n_items,
            cutoffs,
            counts,
            n_lists: 0,
        }
    }

    /// An empty accumulator with the same configuration (one per thread).
    pub fn empty_like(&self) -> Self {
        CatalogueAccumulator::new(self.n_items, self.cutoffs.clone())
    }

    /// Adds one user's recommendation list, best first (only its first `k` places count at cut-off `k`;
    /// a shorter list counts as it is).
    ///
    /// # Errors
    /// [`MetricsError::ItemOutOfRange`] for id 0 or `>= n_items` (nothing is counted then).
    pub fn add(&mut self, top: &[u32]) -> Result<(), MetricsError> {
        let top = &top[..top.len().min(self.cutoffs.max())];
        if let Some(&id) = top
            .iter()
            .find(|&&id| id == 0 || id as usize >= self.n_items)
        {
            return Err(MetricsError::ItemOutOfRange {
                id,
                n_items: self.n_items,
            });
        }
        for (counts, &k) in self.counts.iter_mut().zip(self.cutoffs.as_slice()) {
            for &id in &top[..top.len().min(k)] {
                counts[id as usize] += 1;
            }
        }
        self.n_lists += 1;
        Ok(())
    }

    /// Adds `other`'s counts into `self`.
    ///
    /// # Errors
    /// [`MetricsError::MergeMismatch`] when catalogue sizes or cut-offs differ.
    pub fn merge(&mut self, other: &CatalogueAccumulator) -> Result<(), MetricsError> {
        if other.n_items != self.n_items || other.cutoffs != self.cutoffs {
            return Err(MetricsError::MergeMismatch(format!(
                "catalogue of {} items at {:?} vs {} items at {:?}",
                self.n_items,
                self.cutoffs.as_slice(),
                other.n_items,
                other.cutoffs.as_slice()
            )));
        }
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
        }
        self.n_lists += other.n_lists;
        Ok(())
    }

    /// Recommendation counts per item at cut-off index `c` (same order as the cut-offs; index 0 is padding,
    /// always 0).
    pub fn counts(&self, c: usize) -> Option<&[u64]> {
        self.counts.get(c).map(|v| v.as_slice())
    }

    /// Coverage, average popularity and Gini at each cut-off. `popularity[i]` is item `i`'s training count
    /// (e.g. `Dataset::item_counts()`), one entry per item including padding.
    ///
    /// # Errors
    /// [`MetricsError::PopularityLength`] when `popularity.len() != n_items`; [`MetricsError::NotEnoughData`]
    /// when no item was ever recommended or the catalogue has no real item.
    pub fn finish(&self, popularity: &[u32]) -> Result<CatalogueReport, MetricsError> {
        if popularity.len() != self.n_items {
            return Err(MetricsError::PopularityLength {
                got: popularity.len(),
                expected: self.n_items,
            });
        }
        if self.n_items < 2 {
            return Err(MetricsError::NotEnoughData(
                "the catalogue has no real item".into(),
            ));
        }
        let n_real = (self.n_items - 1) as f64;
        let mut at_k = Vec::with_capacity(self.counts.len());
        for (counts, &k) in self.counts.iter().zip(self.cutoffs.as_slice()) {
            let real = &counts[1..];
            let slots: u64 = real.iter().sum();
            let gini = gini(real)
                .ok_or_else(|| MetricsError::NotEnoughData("no item was recommended".into()))?;
            let distinct = real.iter().filter(|&&c| c > 0).count();
            let pop_sum: f64 = real
                .iter()
                .zip(&popularity[1..])
                .map(|(&c, &p)| c as f64 * f64::from(p))
                .sum();
            at_k.push(CatalogueAtK {
                k,
                distinct_items: distinct,
                coverage: distinct as f64 / n_real,
                avg_popularity: pop_sum / slots as f64,
                gini,
            });
        }
        Ok(CatalogueReport {
            n_lists: self.n_lists,
            n_items: self.n_items - 1,
            at_k,
        })
    }
}

/// Catalogue metrics at one cut-off.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CatalogueAtK {
    /// The cut-off.
    pub k: usize,
    /// Items recommended at least once.
    pub distinct_items: usize,
    /// `distinct_items / number of real items` (coverage@k).
    pub coverage: f64,
    /// Mean training count of the recommended items, over all recommendation slots (an item recommended to
    /// 10 users counts 10 times).
    pub avg_popularity: f64,
    /// [`gini`] of the recommendation counts of all real items (never-recommended items count as 0).
    pub gini: f64,
}

/// Result of [`CatalogueAccumulator::finish`].
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CatalogueReport {
    /// Number of recommendation lists added.
    pub n_lists: u64,
    /// Number of real items in the catalogue (padding excluded).
    pub n_items: usize,
    /// Metrics at each cut-off, ascending `k`.
    pub at_k: Vec<CatalogueAtK>,
}
