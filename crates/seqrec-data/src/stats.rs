//! Summary statistics of a prepared [`Dataset`].

use crate::dataset::Dataset;

/// Counts and distributions of a dataset, as printed by `cargo xtask data stats`.
///
/// ```
/// use seqrec_data::{Dataset, Stats, Vocab};
/// let users = Vocab::from_originals(vec!["a".into(), "b".into()]).unwrap();
/// let items = Vocab::from_originals(vec!["x".into(), "y".into()]).unwrap();
/// let ds = Dataset::from_sequences(users, items, vec![
///     (vec![1, 2, 1], vec![10, 10, 30]),
///     (vec![2], vec![5]),
/// ]).unwrap();
/// let s = Stats::of(&ds);
/// assert_eq!((s.users, s.items, s.events), (2, 2, 4));
/// assert_eq!(s.density, 1.0);
/// assert_eq!((s.seq_len_min, s.seq_len_median, s.seq_len_max), (1, 2.0, 3));
/// assert_eq!((s.time_min, s.time_max, s.time_span), (5, 30, 25));
/// assert_eq!(s.tied_events, 2);
/// ```
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Stats {
    /// Number of users (or sessions).
    pub users: usize,
    /// Number of items.
    pub items: usize,
    /// Number of events.
    pub events: usize,
    /// `events / (users * items)` (can exceed the share of distinct pairs when pairs repeat).
    pub density: f64,
    /// Shortest sequence.
    pub seq_len_min: usize,
    /// Median sequence length (mean of the two middle ones for an even count).
    pub seq_len_median: f64,
    /// Mean sequence length.
    pub seq_len_mean: f64,
    /// Longest sequence.
    pub seq_len_max: usize,
    /// Earliest timestamp (a position for formats without timestamps).
    pub time_min: i64,
    /// Latest timestamp.
    pub time_max: i64,
    /// `time_max - time_min`.
    pub time_span: i64,
    /// Events that share their user and timestamp with another event of the same user
    /// (their relative order comes from the file, not from time).
    pub tied_events: usize,
}

impl Stats {
    /// Computes the statistics of `ds` in one pass over its events.
    pub fn of(ds: &Dataset) -> Self {
        let mut lens: Vec<usize> = ds.user_ids().map(|u| ds.items_of(u).len()).collect();
        lens.sort_unstable();
        let users = ds.n_users();
        let events = ds.n_events();
        let median = match lens.len() {
            0 => 0.0,
            n if n % 2 == 1 => lens[n / 2] as f64,
            n => (lens[n / 2 - 1] + lens[n / 2]) as f64 / 2.0,
        };
        let (_, _, times) = ds.parts();
        let time_min = times.iter().copied().min().unwrap_or(0);
        let time_max = times.iter().copied().max().unwrap_or(0);
        let mut tied_events = 0;
        for u in ds.user_ids() {
            // Times are sorted within a user, so ties are runs.
            let t = ds.times_of(u);
            let mut i = 0;
            while i < t.len() {
                let mut j = i + 1;
                while j < t.len() && t[j] == t[i] {
                    j += 1;
                }
                if j - i > 1 {
                    tied_events += j - i;
                }
                i = j;
            }
        }
        let cells = users as f64 * ds.n_items() as f64;
        Self {
            users,
            items: ds.n_items(),
            events,
            density: if cells > 0.0 {
                events as f64 / cells
            } else {
                0.0
            },
            seq_len_min: lens.first().copied().unwrap_or(0),
            seq_len_median: median,
            seq_len_mean: if users > 0 {
                events as f64 / users as f64
            } else {
                0.0
            },
            seq_len_max: lens.last().copied().unwrap_or(0),
            time_min,
            time_max,
            time_span: time_max.saturating_sub(time_min),
            tied_events,
        }
    }
}

impl std::fmt::Display for Stats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "users          {}", self.users)?;
        writeln!(f, "items          {}", self.items)?;
        writeln!(f, "events         {}", self.events)?;
        writeln!(f, "density        {:.6}", self.density)?;
        writeln!(
            f,
            "sequence length min {} / median {} / mean {:.2} / max {}",
            self.seq_len_min, self.seq_len_median, self.seq_len_mean, self.seq_len_max
        )?;
        writeln!(
            f,
            "time           {} .. {} (span {})",
            self.time_min, self.time_max, self.time_span
        )?;
        write!(
            f,
            "tied events    {} (same user, same timestamp)",
            self.tied_events
        )
    }
}
