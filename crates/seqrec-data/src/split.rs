//! Leakage-free train / validation / test splits.
//!
//! A [`Split`] never copies events. It records, for every user, how many of their leading
//! events are training events (a *prefix* of their time-ordered sequence), and a list of
//! evaluation cases. An [`EvalCase`] is a user, an input history (again a prefix of the
//! user's sequence) and a target, which is always the event *right after* the input. So by
//! construction:
//!
//! * training inputs are a prefix, validation and test targets come after it;
//! * an evaluation input never contains its own target or anything later;
//! * every protocol below additionally guarantees that training prefixes end before the
//!   user's first validation/test target (checked by [`Split::check_no_leakage`]).
//!
//! Three protocols:
//!
//! | protocol | training | validation | test |
//! |---|---|---|---|
//! | [`Split::leave_one_out`] | all but the last two events | 2nd-to-last event, input = training | last event, input = training + validation |
//! | [`Split::temporal`] | events with `t < valid_cut` | first event in `[valid_cut, test_cut)`, input = events before `valid_cut` | first event with `t >= test_cut`, input = events before `test_cut` |
//! | [`Split::random_users`] | every event of the training users | held-out users: last event, input = earlier events | same, disjoint users |
//!
//! ```
//! use seqrec_data::{Dataset, Split, Vocab};
//! let users = Vocab::from_originals(vec!["a".into(), "b".into()]).unwrap();
//! let items = Vocab::from_originals((1..=5).map(|i| i.to_string()).collect()).unwrap();
//! let ds = Dataset::from_sequences(users, items, vec![
//!     (vec![1, 2, 3, 4], vec![1, 2, 3, 4]),
//!     (vec![5, 1], vec![1, 2]), // fewer than 3 events: training only
//! ]).unwrap();
//! let split = Split::leave_one_out(&ds);
//! assert_eq!(split.train_items(&ds, 1), &[1, 2]);
//! assert_eq!(split.train_items(&ds, 2), &[5, 1]);
//! assert_eq!(split.valid()[0].target(&ds), 3);
//! assert_eq!(split.test()[0].input_items(&ds), &[1, 2, 3]);
//! assert_eq!(split.test()[0].target(&ds), 4);
//! assert_eq!(split.test().len(), 1);
//! split.check_no_leakage(&ds).unwrap();
//! ```

use crate::dataset::{Dataset, Id};
use crate::negative::SeqRng;

/// Errors from building or checking a split.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SplitError {
    /// Occurs when a fraction is outside `[0, 1]`, not finite, or the held-out fractions sum to more than 1.
    #[error("bad split fractions: valid {valid}, test {test} (each in [0, 1], sum <= 1)")]
    BadFractions {
        /// The validation fraction given.
        valid: f64,
        /// The test fraction given.
        test: f64,
    },
    /// Occurs when the validation cut-off of a temporal split is later than the test cut-off.
    #[error("validation cut-off {valid_cut} is after test cut-off {test_cut}")]
    CutoffOrder {
        /// The validation cut-off.
        valid_cut: i64,
        /// The test cut-off.
        test_cut: i64,
    },
    /// Occurs when a split is used with a dataset it was not built from.
    #[error(
        "split was built for {split_users} users / {split_events} events, dataset has {users} / {events}"
    )]
    DatasetMismatch {
        /// Users when the split was built.
        split_users: usize,
        /// Events when the split was built.
        split_events: usize,
        /// Users in the dataset given now.
        users: usize,
        /// Events in the dataset given now.
        events: usize,
    },
    /// Occurs when a leakage check fails (a bug, or a hand-built split that leaks).
    #[error("leakage for user {user}: {what}")]
    Leakage {
        /// The dense user id.
        user: Id,
        /// What leaked.
        what: String,
    },
}

/// Which protocol produced a split.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Protocol {
    /// Per user: last event test, second-to-last validation (SASRec).
    LeaveOneOut,
    /// Global time cut-offs.
    Temporal {
        /// Events at or after this time never enter training.
        valid_cut: i64,
        /// Test targets are at or after this time.
        test_cut: i64,
    },
    /// Disjoint user sets.
    RandomUsers {
        /// The seed that permuted the users.
        seed: u64,
    },
}

/// Which events of a temporal split's validation and test periods become targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TemporalTargets {
    /// Each user's first event of the period; input = the user's events before the cut-off.
    FirstPerUser,
    /// Every event of the period; input = all of the user's events before that event.
    AllSuccessive,
}

/// One evaluation example: the user's first `input_len` events are the input and event
/// number `input_len` (0-based) is the target.
///
/// The accessors index into the dataset the split was built from and panic on another one
/// (a programming error; [`Split::check_dataset`] detects the mismatch up front).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EvalCase {
    /// The dense user id.
    pub user: Id,
    /// Length of the input prefix; the target is the event at this index.
    pub input_len: u32,
}

impl EvalCase {
    /// The input items (time order).
    pub fn input_items<'a>(&self, ds: &'a Dataset) -> &'a [Id] {
        &ds.items_of(self.user)[..self.input_len as usize]
    }

    /// The input timestamps.
    pub fn input_times<'a>(&self, ds: &'a Dataset) -> &'a [i64] {
        &ds.times_of(self.user)[..self.input_len as usize]
    }

    /// The target item.
    pub fn target(&self, ds: &Dataset) -> Id {
        ds.items_of(self.user)[self.input_len as usize]
    }

    /// The target's timestamp.
    pub fn target_time(&self, ds: &Dataset) -> i64 {
        ds.times_of(self.user)[self.input_len as usize]
    }
}

/// A train / validation / test split of a [`Dataset`]; see the module docs.
#[derive(Debug, Clone, PartialEq)]
pub struct Split {
    protocol: Protocol,
    /// `train_len[u]`: number of leading events of user `u` used for training (index 0 unused).
    train_len: Vec<u32>,
    valid: Vec<EvalCase>,
    test: Vec<EvalCase>,
    n_events: usize,
}

impl Split {
    /// Leave-one-out, the SASRec protocol (`data_partition` in SASRec's `utils.py`).
    ///
    /// Users with at least 3 events: the last event is the test target (input: all earlier
    /// events), the second-to-last the validation target (input: the training events), the
    /// rest is training. Users with fewer than 3 events keep every event in training and have
    /// no validation or test case, exactly as in SASRec.
    pub fn leave_one_out(ds: &Dataset) -> Self {
        let mut train_len = vec![0u32; ds.n_users() + 1];
        let mut valid = Vec::new();
        let mut test = Vec::new();
        for u in ds.user_ids() {
            let n = ds.items_of(u).len() as u32;
            if n < 3 {
                train_len[u as usize] = n;
            } else {
                train_len[u as usize] = n - 2;
                valid.push(EvalCase {
                    user: u,
                    input_len: n - 2,
                });
                test.push(EvalCase {
                    user: u,
                    input_len: n - 1,
                });
            }
        }
        Self {
            protocol: Protocol::LeaveOneOut,
            train_len,
            valid,
            test,
            n_events: ds.n_events(),
        }
    }

    /// Global temporal split with one target per user and period
    /// ([`TemporalTargets::FirstPerUser`]); see [`Split::temporal_with`].
    pub fn temporal(ds: &Dataset, valid_cut: i64, test_cut: i64) -> Result<Self, SplitError> {
        Self::temporal_with(ds, valid_cut, test_cut, TemporalTargets::FirstPerUser)
    }

    /// Global temporal split.
    ///
    /// Training holds every event with `t < valid_cut`: nothing at or after a cut-off ever
    /// reaches training. The validation period is `[valid_cut, test_cut)`, the test period
    /// `[test_cut, +inf)`. Ties: an event exactly at a cut-off belongs to the later period.
    /// Pass `valid_cut == test_cut` for a split without validation.
    ///
    /// With [`TemporalTargets::FirstPerUser`], for each user:
    ///
    /// * validation target: their first event in the validation period, input = their events
    ///   before `valid_cut`;
    /// * test target: their first event in the test period, input = all their events before
    ///   `test_cut` (this includes validation-period events, which is history, never training);
    ///
    /// and a user gets a case only when its input is non-empty (a model needs some history).
    ///
    /// With [`TemporalTargets::AllSuccessive`], every event of a period is a target whose
    /// input is all of the user's events before it (so later test targets see earlier
    /// test-period events as history, as when a deployed model is evaluated in time order);
    /// only a user's very first event, having no history, is never a target.
    pub fn temporal_with(
        ds: &Dataset,
        valid_cut: i64,
        test_cut: i64,
        targets: TemporalTargets,
    ) -> Result<Self, SplitError> {
        if valid_cut > test_cut {
            return Err(SplitError::CutoffOrder {
                valid_cut,
                test_cut,
            });
        }
        let mut train_len = vec![0u32; ds.n_users() + 1];
        let mut valid = Vec::new();
        let mut test = Vec::new();
        for u in ds.user_ids() {
            let times = ds.times_of(u);
            let n_before_valid = times.partition_point(|&t| t < valid_cut);
            let n_before_test = times.partition_point(|&t| t < test_cut);
            train_len[u as usize] = n_before_valid as u32;
            let case = |i: usize| EvalCase {
                user: u,
                input_len: i as u32,
            };
            match targets {
                TemporalTargets::FirstPerUser => {
                    if n_before_valid > 0 && n_before_valid < n_before_test {
                        valid.push(case(n_before_valid));
                    }
                    if n_before_test > 0 && n_before_test < times.len() {
                        test.push(case(n_before_test));
                    }
                }
                TemporalTargets::AllSuccessive => {
                    valid.extend((n_before_valid.max(1)..n_before_test).map(case));
                    test.extend((n_before_test.max(1)..times.len()).map(case));
                }
            }
        }
        Ok(Self {
            protocol: Protocol::Temporal {
                valid_cut,
                test_cut,
            },
            train_len,
            valid,
            test,
            n_events: ds.n_events(),
        })
    }

    /// Random disjoint user sets, seeded.
    ///
    /// Users are permuted with `seed`; the first `round(test_frac * n_users)` are test users,
    /// the next `round(valid_frac * n_users)` validation users, the rest training users.
    /// Training users contribute every event to training. A held-out user contributes
    /// nothing to training; their last event is the target and the earlier events are the
    /// evaluation input only. Held-out users with fewer than 2 events have no case.
    pub fn random_users(
        ds: &Dataset,
        valid_frac: f64,
        test_frac: f64,
        seed: u64,
    ) -> Result<Self, SplitError> {
        let ok = |f: f64| f.is_finite() && (0.0..=1.0).contains(&f);
        if !ok(valid_frac) || !ok(test_frac) || valid_frac + test_frac > 1.0 {
            return Err(SplitError::BadFractions {
                valid: valid_frac,
                test: test_frac,
            });
        }
        let n = ds.n_users();
        let mut order: Vec<Id> = ds.user_ids().collect();
        SeqRng::new(seed, 0x5_9117).shuffle(&mut order);
        let n_test = ((test_frac * n as f64).round() as usize).min(n);
        let n_valid = ((valid_frac * n as f64).round() as usize).min(n - n_test);
        let mut train_len = vec![0u32; n + 1];
        let mut valid = Vec::new();
        let mut test = Vec::new();
        for (rank, &u) in order.iter().enumerate() {
            let len = ds.items_of(u).len() as u32;
            let case = (len >= 2).then_some(EvalCase {
                user: u,
                input_len: len.saturating_sub(1),
            });
            if rank < n_test {
                test.extend(case);
            } else if rank < n_test + n_valid {
                valid.extend(case);
            } else {
                train_len[u as usize] = len;
            }
        }
        valid.sort_unstable_by_key(|c| c.user);
        test.sort_unstable_by_key(|c| c.user);
        Ok(Self {
            protocol: Protocol::RandomUsers { seed },
            train_len,
            valid,
            test,
            n_events: ds.n_events(),
        })
    }

    /// The protocol that built this split.
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// Validation cases, sorted by user (then by target position).
    pub fn valid(&self) -> &[EvalCase] {
        &self.valid
    }

    /// Test cases, sorted by user (then by target position).
    pub fn test(&self) -> &[EvalCase] {
        &self.test
    }

    /// Number of training events of user `u`.
    pub fn train_len(&self, u: Id) -> usize {
        self.train_len.get(u as usize).copied().unwrap_or(0) as usize
    }

    /// Total number of training events.
    pub fn n_train_events(&self) -> usize {
        self.train_len.iter().map(|&l| l as usize).sum()
    }

    /// The training items of user `u` (a prefix of `ds.items_of(u)`; clamped to it, should
    /// `ds` not be the dataset the split was built from).
    pub fn train_items<'a>(&self, ds: &'a Dataset, u: Id) -> &'a [Id] {
        let items = ds.items_of(u);
        &items[..self.train_len(u).min(items.len())]
    }

    /// The training timestamps of user `u`, parallel to [`Split::train_items`].
    pub fn train_times<'a>(&self, ds: &'a Dataset, u: Id) -> &'a [i64] {
        let times = ds.times_of(u);
        &times[..self.train_len(u).min(times.len())]
    }

    /// Number of training events per item, indexed by dense item id (entry 0 is padding).
    ///
    /// Use these counts for a popularity sampler that must not see validation or test
    /// events; [`crate::NegativeSampler::for_dataset`] counts every event, as BERT4Rec does for
    /// its evaluation negatives.
    pub fn train_item_counts(&self, ds: &Dataset) -> Vec<u32> {
        let mut counts = vec![0u32; ds.n_items() + 1];
        for u in ds.user_ids() {
            for &i in self.train_items(ds, u) {
                counts[i as usize] += 1;
            }
        }
        counts
    }

    /// Errors unless `ds` has the shape of the dataset the split was built from.
    pub fn check_dataset(&self, ds: &Dataset) -> Result<(), SplitError> {
        if self.train_len.len() != ds.n_users() + 1 || self.n_events != ds.n_events() {
            return Err(SplitError::DatasetMismatch {
                split_users: self.train_len.len() - 1,
                split_events: self.n_events,
                users: ds.n_users(),
                events: ds.n_events(),
            });
        }
        Ok(())
    }

    /// The training sequences as a [`Sequences`] view for batching.
    pub fn train_sequences<'a>(&self, ds: &'a Dataset) -> Result<Sequences<'a>, SplitError> {
        self.check_dataset(ds)?;
        Ok(Sequences::from_prefixes(
            ds,
            ds.user_ids().map(|u| (u, self.train_len(u))),
        ))
    }

    /// Verifies the leakage invariants against `ds`:
    ///
    /// * every case's input is a prefix ending right before its target;
    /// * for each user, training events end before the earliest validation or test target
    ///   both by position and by time (no training event later than a target);
    /// * a validation target never comes after the same user's test target;
    /// * temporal: no training event at or after `valid_cut`; random users: held-out users
    ///   have no training events.
    pub fn check_no_leakage(&self, ds: &Dataset) -> Result<(), SplitError> {
        self.check_dataset(ds)?;
        let leak = |user: Id, what: String| Err(SplitError::Leakage { user, what });
        let mut first_target = vec![usize::MAX; ds.n_users() + 1];
        for c in self.valid.iter().chain(&self.test) {
            let n = ds.items_of(c.user).len();
            if c.input_len as usize >= n {
                return leak(
                    c.user,
                    format!("case input length {} >= {} events", c.input_len, n),
                );
            }
            let f = &mut first_target[c.user as usize];
            *f = (*f).min(c.input_len as usize);
        }
        // Every validation target of a user precedes every test target of that user.
        let mut last_valid = vec![None::<u32>; ds.n_users() + 1];
        for v in &self.valid {
            let l = &mut last_valid[v.user as usize];
            *l = Some(l.map_or(v.input_len, |x| x.max(v.input_len)));
        }
        for t in &self.test {
            if last_valid[t.user as usize].is_some_and(|v| v >= t.input_len) {
                return leak(
                    t.user,
                    "validation target is not before the test target".into(),
                );
            }
        }
        for u in ds.user_ids() {
            let tl = self.train_len(u);
            let times = ds.times_of(u);
            if tl > times.len() {
                return leak(
                    u,
                    format!("{tl} training events but {} events", times.len()),
                );
            }
            let ft = first_target[u as usize];
            if ft != usize::MAX {
                if tl > ft {
                    return leak(u, format!("training prefix {tl} covers target at {ft}"));
                }
                if tl > 0 && times[tl - 1] > times[ft] {
                    return leak(u, "a training event is later than a target".into());
                }
            }
            match self.protocol {
                Protocol::Temporal { valid_cut, .. } => {
                    if tl > 0 && times[tl - 1] >= valid_cut {
                        return leak(
                            u,
                            format!("training event at {} >= cut-off {valid_cut}", times[tl - 1]),
                        );
                    }
                }
                Protocol::RandomUsers { .. } => {
                    if tl > 0 && ft != usize::MAX {
                        return leak(u, "held-out user has training events".into());
                    }
                }
                Protocol::LeaveOneOut => {}
            }
        }
        Ok(())
    }
}

/// A borrowed set of sequences for batching: each entry is a user and a contiguous range of
/// that user's events in a [`Dataset`].
///
/// ```
/// use seqrec_data::{Dataset, Sequences, Vocab};
/// let users = Vocab::from_originals(vec!["a".into()]).unwrap();
/// let items = Vocab::from_originals(vec!["x".into(), "y".into()]).unwrap();
/// let ds = Dataset::from_sequences(users, items, vec![(vec![1, 2, 1], vec![0, 5, 9])]).unwrap();
/// let seqs = Sequences::all(&ds);
/// assert_eq!(seqs.len(), 1);
/// assert_eq!(seqs.items(0), &[1, 2, 1]);
/// assert_eq!(seqs.times(0), &[0, 5, 9]);
/// ```
#[derive(Debug, Clone)]
pub struct Sequences<'a> {
    items: &'a [Id],
    times: &'a [i64],
    /// `(user, start, end)` into `items` / `times`.
    spans: Vec<(Id, usize, usize)>,
    n_items: usize,
}

impl<'a> Sequences<'a> {
    /// Every user's full sequence.
    pub fn all(ds: &'a Dataset) -> Self {
        Self::from_prefixes(ds, ds.user_ids().map(|u| (u, ds.items_of(u).len())))
    }

    /// The first `len` events of each listed user (`len` is clamped to the user's length).
    /// Users with no events after clamping are skipped.
    pub fn from_prefixes(ds: &'a Dataset, prefixes: impl IntoIterator<Item = (Id, usize)>) -> Self {
        let (offsets, items, times) = ds.parts();
        let spans = prefixes
            .into_iter()
            .filter(|&(u, _)| u >= 1 && (u as usize) <= ds.n_users())
            .map(|(u, len)| {
                let (s, e) = (offsets[u as usize], offsets[u as usize + 1]);
                (u, s, s + len.min(e - s))
            })
            .filter(|&(_, s, e)| e > s)
            .collect();
        Self {
            items,
            times,
            spans,
            n_items: ds.n_items(),
        }
    }

    /// Number of sequences.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// True when there are no sequences.
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// The user of sequence `k`.
    pub fn user(&self, k: usize) -> Id {
        self.spans[k].0
    }

    /// The items of sequence `k`.
    pub fn items(&self, k: usize) -> &'a [Id] {
        let (_, s, e) = self.spans[k];
        &self.items[s..e]
    }

    /// The timestamps of sequence `k`.
    pub fn times(&self, k: usize) -> &'a [i64] {
        let (_, s, e) = self.spans[k];
        &self.times[s..e]
    }

    /// Number of items in the catalogue the sequences come from.
    pub fn n_items(&self) -> usize {
        self.n_items
    }

    /// Total number of events over all sequences.
    pub fn n_events(&self) -> usize {
        self.spans.iter().map(|&(_, s, e)| e - s).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::Vocab;

    fn ds() -> Dataset {
        let users = Vocab::from_originals(vec!["a".into(), "b".into()]).unwrap();
        let items = Vocab::from_originals((1..=4).map(|i| i.to_string()).collect()).unwrap();
        Dataset::from_sequences(
            users,
            items,
            vec![
                (vec![1, 2, 3, 4], vec![1, 2, 3, 4]),
                (vec![4, 3, 2], vec![5, 5, 9]),
            ],
        )
        .unwrap()
    }

    #[test]
    fn leakage_check_catches_tampering() {
        let ds = ds();
        let clean = Split::leave_one_out(&ds);
        clean.check_no_leakage(&ds).unwrap();

        // Training reaching the validation target.
        let mut s = clean.clone();
        s.train_len[1] = 3;
        assert!(matches!(
            s.check_no_leakage(&ds),
            Err(SplitError::Leakage { user: 1, .. })
        ));

        // Validation target after the test target.
        let mut s = clean.clone();
        s.valid[0].input_len = 3;
        assert!(s.check_no_leakage(&ds).is_err());

        // Temporal: a training event at the cut-off.
        let mut s = Split::temporal(&ds, 4, 9).unwrap();
        s.check_no_leakage(&ds).unwrap();
        s.train_len[1] = 4;
        s.valid.clear();
        s.test.clear();
        assert!(s.check_no_leakage(&ds).is_err());

        // Random users: a held-out user with training events.
        let mut s = Split::random_users(&ds, 0.0, 0.5, 3).unwrap();
        s.check_no_leakage(&ds).unwrap();
        let held = s.test[0].user;
        s.train_len[held as usize] = 1;
        assert!(s.check_no_leakage(&ds).is_err());
    }

    #[test]
    fn temporal_ties_go_to_the_later_period() {
        let ds = ds();
        // User 2's events are at 5, 5, 9: a cut-off at 5 leaves no training events for them.
        let s = Split::temporal(&ds, 5, 9).unwrap();
        assert_eq!(s.train_len(2), 0);
        assert_eq!(s.train_len(1), 4);
        // User 2 has input (5, 5) before the test cut-off and target 9.
        assert_eq!(
            s.test(),
            &[EvalCase {
                user: 2,
                input_len: 2
            }]
        );
        assert!(s.valid().is_empty());
    }
}
