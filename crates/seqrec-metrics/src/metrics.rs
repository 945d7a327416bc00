//! Per-user ranking metrics from 0-based ranks, and their accumulation over users.
//!
//! One held-out target per user (leave-one-out), so every metric is a function of the target's rank `r`
//! alone, with cut-off `k`:
//!
//! | metric | value for one user | note |
//! |---|---|---|
//! | HR@k (hit rate) | `1` if `r < k` else `0` | |
//! | Recall@k | same as HR@k | one relevant item: hits / relevant = HR |
//! | NDCG@k | `1 / log2(r + 2)` if `r < k` else `0` | the ideal DCG is `1 / log2(2) = 1` |
//! | MRR@k | `1 / (r + 1)` if `r < k` else `0` | |
//! | MRR | `1 / (r + 1)` | no cut-off |
//! | Precision@k | `HR@k / k` | one relevant item in a list of `k` |
//! | MAP@k | same as MRR@k | AP@k = (1/min(k, #relevant)) * sum of precision@i at hits = `1/(r+1)` |

use std::io::Write;

use serde::Serialize;

use crate::{MetricsError, PairedTest, paired_test};

/// The cut-offs used unless configured otherwise.
pub const DEFAULT_CUTOFFS: [usize; 3] = [5, 10, 20];

/// A ranking metric (with its cut-off where it has one).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum Metric {
    /// HR@k.
    Hr(usize),
    /// Recall@k (equals HR@k with one target).
    Recall(usize),
    /// NDCG@k.
    Ndcg(usize),
    /// MRR@k.
    MrrAt(usize),
    /// MRR without cut-off.
    Mrr,
    /// Precision@k (equals HR@k / k with one target).
    Precision(usize),
    /// MAP@k (equals MRR@k with one target).
    Map(usize),
}

impl Metric {
    /// The metric's value for one user whose target has 0-based rank `rank`.
    ///
    /// ```
    /// use seqrec_metrics::Metric;
    /// assert_eq!(Metric::Ndcg(10).value(0), 1.0);
    /// assert_eq!(Metric::Ndcg(10).value(2), 0.5); // 1 / log2(4)
    /// assert_eq!(Metric::Hr(10).value(10), 0.0);
    /// ```
    pub fn value(self, rank: usize) -> f64 {
        let hit = |k: usize| rank < k;
        let rr = 1.0 / (rank as f64 + 1.0);
        match self {
            Metric::Hr(k) | Metric::Recall(k) => f64::from(u8::from(hit(k))),
            Metric::Ndcg(k) => {
                if hit(k) {
                    1.0 / (rank as f64 + 2.0).log2()
                } else {
                    0.0
                }
            }
            Metric::MrrAt(k) | Metric::Map(k) => {
                if hit(k) {
                    rr
                } else {
                    0.0
                }
            }
            Metric::Mrr => rr,
            Metric::Precision(k) => {
                if hit(k) {
                    1.0 / k as f64
                } else {
                    0.0
                }
            }
        }
    }

    /// Display name, as in papers: `HR@10`, `NDCG@10`, `MRR`, ...
    pub fn name(self) -> String {
        match self {
            Metric::Hr(k) => format!("HR@{k}"),
            Metric::Recall(k) => format!("Recall@{k}"),
            Metric::Ndcg(k) => format!("NDCG@{k}"),
            Metric::MrrAt(k) => format!("MRR@{k}"),
            Metric::Mrr => "MRR".to_string(),
            Metric::Precision(k) => format!("Precision@{k}"),
            Metric::Map(k) => format!("MAP@{k}"),
        }
    }

    /// The lowercase key of the metric in `metrics.json` and `history.jsonl` (`"ndcg@10"`, `"mrr"`).
    pub fn key(self) -> String {
        self.name().to_lowercase()
    }

    /// The metrics reported for one cut-off, in report order.
    pub fn at(k: usize) -> [Metric; 6] {
        [
            Metric::Hr(k),
            Metric::Recall(k),
            Metric::Ndcg(k),
            Metric::MrrAt(k),
            Metric::Precision(k),
            Metric::Map(k),
        ]
    }
}

/// A validated, sorted, de-duplicated list of cut-offs, each `>= 1`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Cutoffs(Vec<usize>);

impl Cutoffs {
    /// Sorts and de-duplicates `ks`.
    ///
    /// # Errors
    /// [`MetricsError::InvalidCutoffs`] when `ks` is empty or contains 0.
    pub fn new(ks: impl Into<Vec<usize>>) -> Result<Self, MetricsError> {
        let mut ks = ks.into();
        if ks.is_empty() || ks.contains(&0) {
            return Err(MetricsError::InvalidCutoffs(ks));
        }
        ks.sort_unstable();
        ks.dedup();
        Ok(Cutoffs(ks))
    }

    /// The cut-offs, ascending.
    pub fn as_slice(&self) -> &[usize] {
        &self.0
    }

    /// The largest cut-off.
    pub fn max(&self) -> usize {
        *self.0.last().expect("Cutoffs is never empty")
    }
}

impl Default for Cutoffs {
    /// `[5, 10, 20]`.
    fn default() -> Self {
        Cutoffs(DEFAULT_CUTOFFS.to_vec())
    }
}

/// Collects per-user ranks; merge accumulators filled on different threads, then [`finish`](Self::finish).
///
/// Means are computed at the end, summing in user-id order, so the result does not depend on the order in
/// which users were added or accumulators merged (merging equals a single pass, bit for bit).
///
/// ```
/// use seqrec_metrics::{Cutoffs, Metric, MetricAccumulator};
/// let mut a = MetricAccumulator::new(Cutoffs::new([1, 3]).unwrap());
/// let mut b = a.empty_like();
/// a.add(7, 0); // user 7: target ranked first
/// b.add(3, 5); // user 3: rank 5, outside both cut-offs
/// a.merge(b).unwrap();
/// let report = a.finish().unwrap();
/// assert_eq!(report.mean(Metric::Hr(3)), Some(0.5));
/// assert_eq!(report.mean(Metric::Mrr), Some((1.0 + 1.0 / 6.0) / 2.0));
/// assert_eq!(report.users, vec![3, 7]);
/// ```
#[derive(Clone, Debug, Default)]
pub struct MetricAccumulator {
    cutoffs: Cutoffs,
    /// `(user, rank)` in insertion order.
    records: Vec<(u32, u32)>,
}

impl MetricAccumulator {
    /// An empty accumulator reporting at `cutoffs`.
    pub fn new(cutoffs: Cutoffs) -> Self {
        MetricAccumulator {
            cutoffs,
            records: Vec::new(),
        }
    }

    /// An empty accumulator with the same cut-offs (one per thread, merged later).
    pub fn empty_like(&self) -> Self {
        MetricAccumulator::new(self.cutoffs.clone())
    }

    /// Records the 0-based rank of `user`'s target. Ranks above `u32::MAX` are clamped (no catalogue is
    /// that large; every metric is already 0 there except MRR, which becomes indistinguishable from 0).
    pub fn add(&mut self, user: u32, rank: usize) {
        self.records
            .push((user, u32::try_from(rank).unwrap_or(u32::MAX)));
    }

    /// Number of users recorded.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether no user was recorded.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Moves `other`'s users into `self`.
    ///
    /// # Errors
    /// [`MetricsError::MergeMismatch`] when the cut-offs differ.
    pub fn merge(&mut self, mut other: MetricAccumulator) -> Result<(), MetricsError> {
        if other.cutoffs != self.cutoffs {
            return Err(MetricsError::MergeMismatch(format!(
                "cut-offs {:?} vs {:?}",
                self.cutoffs.as_slice(),
                other.cutoffs.as_slice()
            )));
        }
        self.records.append(&mut other.records);
        Ok(())
    }

    /// Means over users and the per-user ranks, sorted by user id.
    ///
    /// # Errors
    /// [`MetricsError::NotEnoughData`] with no users; [`MetricsError::DuplicateUser`] when a user was added
    /// twice (one target per user is assumed by every formula here).
    pub fn finish(&self) -> Result<MetricReport, MetricsError> {
        if self.records.is_empty() {
            return Err(MetricsError::NotEnoughData("no users were recorded".into()));
        }
        let mut records = self.records.clone();
        records.sort_unstable();
        if let Some(w) = records.windows(2).find(|w| w[0].0 == w[1].0) {
            return Err(MetricsError::DuplicateUser(w[0].0));
        }
        let users: Vec<u32> = records.iter().map(|r| r.0).collect();
        let ranks: Vec<u32> = records.iter().map(|r| r.1).collect();
        let n = ranks.len() as f64;
        let mean = |m: Metric| ranks.iter().map(|&r| m.value(r as usize)).sum::<f64>() / n;
        let at_k = self
            .cutoffs
            .as_slice()
            .iter()
            .map(|&k| AtK {
                k,
                hr: mean(Metric::Hr(k)),
                recall: mean(Metric::Recall(k)),
                ndcg: mean(Metric::Ndcg(k)),
                mrr: mean(Metric::MrrAt(k)),
                precision: mean(Metric::Precision(k)),
                map: mean(Metric::Map(k)),
            })
            .collect();
        Ok(MetricReport {
            n_users: ranks.len(),
            at_k,
            mrr: mean(Metric::Mrr),
            mean_rank: ranks.iter().map(|&r| f64::from(r)).sum::<f64>() / n,
            users,
            ranks,
        })
    }
}

/// Means of the metrics at one cut-off.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AtK {
    /// The cut-off.
    pub k: usize,
    /// HR@k.
    pub hr: f64,
    /// Recall@k (= HR@k).
    pub recall: f64,
    /// NDCG@k.
    pub ndcg: f64,
    /// MRR@k.
    pub mrr: f64,
    /// Precision@k (= HR@k / k).
    pub precision: f64,
    /// MAP@k (= MRR@k).
    pub map: f64,
}

/// Result of [`MetricAccumulator::finish`]: means (serialised) and per-user ranks (not serialised; export
/// them with [`write_per_user_csv`](Self::write_per_user_csv)).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MetricReport {
    /// Number of users.
    pub n_users: usize,
    /// Means at each cut-off, ascending `k`.
    pub at_k: Vec<AtK>,
    /// MRR without cut-off.
    pub mrr: f64,
    /// Mean 0-based rank.
    pub mean_rank: f64,
    /// User ids, ascending.
    #[serde(skip)]
    pub users: Vec<u32>,
    /// `ranks[i]` is the 0-based rank of `users[i]`'s target.
    #[serde(skip)]
    pub ranks: Vec<u32>,
}

impl MetricReport {
    /// Mean of `metric` over users; `None` for a cut-off that was not configured.
    pub fn mean(&self, metric: Metric) -> Option<f64> {
        let pick = |k: usize, f: fn(&AtK) -> f64| self.at_k.iter().find(|a| a.k == k).map(f);
        match metric {
            Metric::Mrr => Some(self.mrr),
            Metric::Hr(k) => pick(k, |a| a.hr),
            Metric::Recall(k) => pick(k, |a| a.recall),
            Metric::Ndcg(k) => pick(k, |a| a.ndcg),
            Metric::MrrAt(k) => pick(k, |a| a.mrr),
            Metric::Precision(k) => pick(k, |a| a.precision),
            Metric::Map(k) => pick(k, |a| a.map),
        }
    }

    /// Per-user values of `metric`, aligned with [`users`](Self::users) (any cut-off works: computed from
    /// the ranks). Feed two runs' columns to [`paired_test`](crate::paired_test).
    pub fn per_user(&self, metric: Metric) -> Vec<f64> {
        self.ranks
            .iter()
            .map(|&r| metric.value(r as usize))
            .collect()
    }

    /// Paired comparison of `self` (run `a`) against `other` (run `b`) on `metric`, user by user: mean
    /// difference `a - b` with 95% CI, paired t-test and Wilcoxon test (see [`paired_test`]).
    ///
    /// # Errors
    /// [`MetricsError::UsersDiffer`] unless both reports hold exactly the same users; those of
    /// [`paired_test`] otherwise (e.g. fewer than 2 users).
    ///
    /// ```
    /// use seqrec_metrics::{Cutoffs, Metric, MetricAccumulator};
    /// let (mut a, mut b) = (MetricAccumulator::new(Cutoffs::default()), MetricAccumulator::new(Cutoffs::default()));
    /// for u in 0..20 {
    ///     a.add(u, (u % 4) as usize); // run a: ranks 0..3
    ///     b.add(u, (u % 4) as usize + 8); // run b: 8 places worse for everyone
    /// }
    /// let cmp = a.finish().unwrap().compare(&b.finish().unwrap(), Metric::Hr(5)).unwrap();
    /// assert_eq!(cmp.t.mean_diff, 1.0); // every user: HR@5 1 vs 0
    /// assert!(cmp.wilcoxon.p_value < 1e-4);
    /// ```
    pub fn compare(
        &self,
        other: &MetricReport,
        metric: Metric,
    ) -> Result<PairedTest, MetricsError> {
        if self.users != other.users {
            let first = self
                .users
                .iter()
                .zip(&other.users)
                .position(|(x, y)| x != y);
            return Err(MetricsError::UsersDiffer(match first {
                Some(i) => format!(
                    "user {} vs user {} at position {i}",
                    self.users[i], other.users[i]
                ),
                None => format!("{} vs {} users", self.users.len(), other.users.len()),
            }));
        }
        paired_test(&self.per_user(metric), &other.per_user(metric))
    }

    /// Writes `user,rank,HR@k,NDCG@k,MRR@k,...,MRR` (one row per user, configured cut-offs) as CSV.
    ///
    /// # Errors
    /// The writer's I/O error.
    pub fn write_per_user_csv<W: Write>(&self, mut w: W) -> std::io::Result<()> {
        let metrics: Vec<Metric> = self
            .at_k
            .iter()
            .flat_map(|a| [Metric::Hr(a.k), Metric::Ndcg(a.k), Metric::MrrAt(a.k)])
            .chain([Metric::Mrr])
            .collect();
        write!(w, "user,rank")?;
        for m in &metrics {
            write!(w, ",{}", m.name())?;
        }
        writeln!(w)?;
        for (&u, &r) in self.users.iter().zip(&self.ranks) {
            write!(w, "{u},{r}")?;
            for m in &metrics {
                write!(w, ",{}", m.value(r as usize))?;
            }
            writeln!(w)?;
        }
        Ok(())
    }
}
