//! From a [`RawLog`] to a [`Dataset`]: rating threshold, de-duplication, session splitting,
//! k-core filtering, dense re-indexing and stable time ordering.
//!
//! Steps run in this order, each described where it is coded:
//! 1. keep events with `rating >= threshold` (when a threshold is set);
//! 2. group events by sequence key (user, or session column) and order each group by time,
//!    a **stable** sort: equal timestamps keep file order;
//! 3. de-duplicate repeated `(key, item)` pairs (keep all, the first or the last in time order);
//! 4. split each group into sessions where the gap between consecutive events exceeds
//!    `session_gap` seconds;
//! 5. k-core: drop sequences with fewer than `min_user_events` events and items with fewer than
//!    `min_item_events` events, once ([`KCore::SinglePass`]) or until stable ([`KCore::Iterative`]);
//! 6. assign dense ids `1..=N`: sequences in order of their key's first appearance in the file,
//!    items in order of first appearance when walking the sequences in that order.

use std::borrow::Cow;

use crate::dataset::{Dataset, Id, Vocab};
use crate::error::{DataError, Result};
use crate::read::RawLog;

/// What to do with repeated `(user, item)` pairs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Dedup {
    /// Keep every event (the SASRec / RecBole default).
    #[default]
    KeepAll,
    /// Keep the earliest event of each pair (file order among equal times).
    First,
    /// Keep the latest event of each pair (file order among equal times).
    Last,
}

impl std::str::FromStr for Dedup {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "all" | "keep-all" | "none" => Ok(Dedup::KeepAll),
            "first" => Ok(Dedup::First),
            "last" => Ok(Dedup::Last),
            other => Err(format!(
                "unknown dedup policy {other:?}: expected all, first or last"
            )),
        }
    }
}

/// How k-core filtering is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KCore {
    /// Repeat until every remaining user and item meets its threshold (the true k-core).
    #[default]
    Iterative,
    /// Count once on the input and drop what is below a threshold; remaining users or items
    /// may fall below it afterwards (the SASRec script's behaviour).
    SinglePass,
}

/// Validated preparation settings. Build with [`PrepareConfig::builder`].
///
/// ```
/// use seqrec_data::{Dedup, PrepareConfig};
/// let cfg = PrepareConfig::builder().min_item_events(5).dedup(Dedup::First).build()?;
/// assert_eq!(cfg.min_item_events(), 5);
/// assert!(PrepareConfig::builder().rating_threshold(f32::NAN).build().is_err());
/// # Ok::<(), seqrec_data::DataError>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct PrepareConfig {
    rating_threshold: Option<f32>,
    dedup: Dedup,
    min_user_events: usize,
    min_item_events: usize,
    kcore: KCore,
    session_gap: Option<i64>,
}

impl Default for PrepareConfig {
    /// Keep everything: no threshold, no de-duplication, no k-core, no session split.
    fn default() -> Self {
        Self {
            rating_threshold: None,
            dedup: Dedup::KeepAll,
            min_user_events: 0,
            min_item_events: 0,
            kcore: KCore::Iterative,
            session_gap: None,
        }
    }
}

/// Builder of [`PrepareConfig`]; [`PrepareConfigBuilder::build`] validates.
#[derive(Debug, Clone, Default)]
pub struct PrepareConfigBuilder(PrepareConfig);

impl PrepareConfigBuilder {
    /// Keep only events with `rating >= r`.
    pub fn rating_threshold(mut self, r: f32) -> Self {
        self.0.rating_threshold = Some(r);
        self
    }
    /// The de-duplication policy.
    pub fn dedup(mut self, d: Dedup) -> Self {
        self.0.dedup = d;
        self
    }
    /// Drop users (sequences) with fewer events than this.
    pub fn min_user_events(mut self, k: usize) -> Self {
        self.0.min_user_events = k;
        self
    }
    /// Drop items with fewer events than this.
    pub fn min_item_events(mut self, k: usize) -> Self {
        self.0.min_item_events = k;
        self
    }
    /// Iterative or single-pass k-core.
    pub fn kcore(mut self, mode: KCore) -> Self {
        self.0.kcore = mode;
        self
    }
    /// Split a user's events into sessions where consecutive events are more than `seconds` apart.
    pub fn session_gap(mut self, seconds: i64) -> Self {
        self.0.session_gap = Some(seconds);
        self
    }
    /// Checks the settings once; nothing downstream re-validates.
    pub fn build(self) -> Result<PrepareConfig> {
        let c = self.0;
        if let Some(r) = c.rating_threshold
            && !r.is_finite()
        {
            return Err(DataError::Config(format!(
                "rating threshold must be a finite number, got {r}"
            )));
        }
        if let Some(g) = c.session_gap
            && g <= 0
        {
            return Err(DataError::Config(format!(
                "session gap must be a positive number of seconds, got {g}"
            )));
        }
        if c.min_user_events > u32::MAX as usize || c.min_item_events > u32::MAX as usize {
            return Err(DataError::Config("k-core thresholds must fit a u32".into()));
        }
        Ok(c)
    }
}

impl PrepareConfig {
    /// A builder starting from [`PrepareConfig::default`].
    pub fn builder() -> PrepareConfigBuilder {
        PrepareConfigBuilder::default()
    }

    /// The SASRec paper's ML-1M recipe: every rating is an interaction, users and items with
    /// fewer than 5 events dropped in a single pass, stable time order. On `ml-1m-ratings.dat`
    /// it gives 999,611 events, 6,040 users and 3,416 items, as in `ml-1m-sasrec.txt`.
    pub fn sasrec() -> Self {
        Self {
            min_user_events: 5,
            min_item_events: 5,
            kcore: KCore::SinglePass,
            ..Self::default()
        }
    }

    /// The rating threshold, if any.
    pub fn rating_threshold(&self) -> Option<f32> {
        self.rating_threshold
    }
    /// The de-duplication policy.
    pub fn dedup(&self) -> Dedup {
        self.dedup
    }
    /// Minimum events per user (sequence).
    pub fn min_user_events(&self) -> usize {
        self.min_user_events
    }
    /// Minimum events per item.
    pub fn min_item_events(&self) -> usize {
        self.min_item_events
    }
    /// The k-core mode.
    pub fn kcore(&self) -> KCore {
        self.kcore
    }
    /// The session gap in seconds, if any.
    pub fn session_gap(&self) -> Option<i64> {
        self.session_gap
    }

    /// A canonical text of every setting, used in cache keys.
    pub fn fingerprint(&self) -> String {
        format!(
            "rating>={:?};dedup={:?};user>={};item>={};kcore={:?};gap={:?}",
            self.rating_threshold.map(|r| r.to_string()),
            self.dedup,
            self.min_user_events,
            self.min_item_events,
            self.kcore,
            self.session_gap
        )
    }
}

/// Prepares a dataset from a log (see the module docs for the steps).
///
/// ```
/// use seqrec_data::{PrepareConfig, ReadOptions, prepare, read_log_from};
/// let text = "1::10::5::100\n1::11::3::90\n2::10::4::50\n2::12::4::50\n";
/// let log = read_log_from(text.as_bytes(), "r.dat".as_ref(), &ReadOptions::default())?;
/// let cfg = PrepareConfig::builder().min_item_events(2).build()?;
/// let ds = prepare(&log, &cfg)?;
/// assert_eq!((ds.n_users(), ds.n_items(), ds.n_events()), (2, 1, 2));
/// assert_eq!(ds.items.original(ds.items_of(1)[0]), Some("10"));
/// # Ok::<(), seqrec_data::DataError>(())
/// ```
pub fn prepare(log: &RawLog, cfg: &PrepareConfig) -> Result<Dataset> {
    run(
        Input {
            source: &log.source,
            format: log.format,
            users: Cow::Borrowed(&log.users),
            items: Cow::Borrowed(&log.items),
            times: Cow::Borrowed(&log.times),
            ratings: log.ratings.as_deref().map(Cow::Borrowed),
            user_ids: Cow::Borrowed(&log.user_ids),
            item_ids: Cow::Borrowed(&log.item_ids),
        },
        cfg,
    )
}

/// Like [`prepare`], but consumes the log and frees each of its arrays as soon as it is no
/// longer needed (ratings and users after grouping) and moves its id strings into the
/// vocabularies. Peak memory on a 50M-event log is then well below `prepare`'s.
pub fn prepare_owned(log: RawLog, cfg: &PrepareConfig) -> Result<Dataset> {
    run(
        Input {
            source: &log.source,
            format: log.format,
            users: Cow::Owned(log.users),
            items: Cow::Owned(log.items),
            times: Cow::Owned(log.times),
            ratings: log.ratings.map(Cow::Owned),
            user_ids: Cow::Owned(log.user_ids),
            item_ids: Cow::Owned(log.item_ids),
        },
        cfg,
    )
}

/// The parts of a [`RawLog`] that `run` reads, borrowed or owned.
struct Input<'a> {
    source: &'a std::path::Path,
    format: crate::read::Format,
    users: Cow<'a, [u32]>,
    items: Cow<'a, [u32]>,
    times: Cow<'a, [i64]>,
    ratings: Option<Cow<'a, [f32]>>,
    user_ids: Cow<'a, [String]>,
    item_ids: Cow<'a, [String]>,
}

/// Moves string `i` out of an owned list (each is taken once), clones it from a borrowed one.
fn take_name(names: &mut Cow<'_, [String]>, i: usize) -> String {
    match names {
        Cow::Borrowed(v) => v[i].clone(),
        Cow::Owned(v) => std::mem::take(&mut v[i]),
    }
}

fn run(input: Input<'_>, cfg: &PrepareConfig) -> Result<Dataset> {
    let Input {
        source,
        format,
        users,
        items,
        times,
        ratings: rating_col,
        mut user_ids,
        mut item_ids,
    } = input;
    let n = items.len();
    let n_items = item_ids.len();
    // Event indices are u32 to keep the working arrays small.
    if n > u32::MAX as usize {
        return Err(DataError::Config(format!(
            "{n} events: at most {} are supported",
            u32::MAX
        )));
    }
    // 1. Rating threshold, applied while grouping (no array of kept indices).
    let ratings: &[f32] = match (cfg.rating_threshold, &rating_col) {
        (None, _) => &[],
        (Some(_), Some(r)) => r,
        (Some(_), None) => {
            return Err(DataError::Config(format!(
                "a rating threshold was set but {} ({}) has no rating column",
                source.display(),
                format.name()
            )));
        }
    };
    let threshold = cfg.rating_threshold.unwrap_or(f32::NEG_INFINITY);
    let kept = |e: usize| ratings.is_empty() || ratings[e] >= threshold;

    // 2. Group by sequence key with a counting sort (stable: file order within a key), then a
    //    stable sort by time inside each group. Files are usually grouped and time-sorted
    //    already, so check before sorting.
    let n_keys = user_ids.len();
    let mut off = vec![0usize; n_keys + 1];
    for e in 0..n {
        if kept(e) {
            off[users[e] as usize + 1] += 1;
        }
    }
    for k in 0..n_keys {
        off[k + 1] += off[k];
    }
    let mut order = vec![0u32; off[n_keys]];
    {
        let mut next = off.clone();
        for e in 0..n {
            if kept(e) {
                let k = users[e] as usize;
                order[next[k]] = e as u32;
                next[k] += 1;
            }
        }
    }
    // Owned inputs: the user and rating arrays are not needed any more.
    drop(users);
    drop(rating_col);
    for k in 0..n_keys {
        let seq = &mut order[off[k]..off[k + 1]];
        if !seq.is_sorted_by_key(|&e| times[e as usize]) {
            seq.sort_by_key(|&e| times[e as usize]); // stable
        }
    }

    // 3. De-duplicate within each key. `seen[item] == k + 1` marks items already kept for key k.
    if cfg.dedup != Dedup::KeepAll {
        let mut seen = vec![0u32; n_items];
        let mut last: Vec<bool> = Vec::new();
        let mut w = 0;
        let mut new_off = vec![0usize; n_keys + 1];
        for k in 0..n_keys {
            let (a, b) = (off[k], off[k + 1]);
            let stamp = k as u32 + 1;
            match cfg.dedup {
                Dedup::First => {
                    for r in a..b {
                        let e = order[r];
                        let it = items[e as usize] as usize;
                        if seen[it] != stamp {
                            seen[it] = stamp;
                            order[w] = e;
                            w += 1;
                        }
                    }
                }
                Dedup::Last => {
                    // Mark the last occurrences walking backwards, then compact forwards
                    // (writing while reading backwards would overwrite unread events).
                    last.clear();
                    last.resize(b - a, false);
                    for r in (a..b).rev() {
                        let it = items[order[r] as usize] as usize;
                        if seen[it] != stamp {
                            seen[it] = stamp;
                            last[r - a] = true;
                        }
                    }
                    for r in a..b {
                        if last[r - a] {
                            order[w] = order[r];
                            w += 1;
                        }
                    }
                }
                Dedup::KeepAll => unreachable!(),
            }
            new_off[k + 1] = w;
        }
        order.truncate(w);
        off = new_off;
    }

    // 4. Sequences: one per key, or split at gaps. `seq_key[s]` is the raw key, `seq_part[s]`
    //    the 1-based session number within the key (0 when not splitting).
    let mut seq_off = Vec::with_capacity(n_keys + 1);
    let mut seq_key: Vec<u32> = Vec::with_capacity(n_keys);
    let mut seq_part: Vec<u32> = Vec::new();
    seq_off.push(0usize);
    for k in 0..n_keys {
        let (a, b) = (off[k], off[k + 1]);
        if a == b {
            continue;
        }
        match cfg.session_gap {
            None => {
                seq_key.push(k as u32);
                seq_off.push(b);
            }
            Some(gap) => {
                let mut part = 1;
                for r in a + 1..=b {
                    if r == b
                        || times[order[r] as usize].saturating_sub(times[order[r - 1] as usize])
                            > gap
                    {
                        seq_key.push(k as u32);
                        seq_part.push(part);
                        seq_off.push(r);
                        part += 1;
                    }
                }
            }
        }
    }
    drop(off);

    // 5. k-core on (sequence, item) events.
    kcore(&mut order, &mut seq_off, &items, n_items, cfg);

    // 6. Dense ids and CSR output.
    let mut item_dense = vec![0 as Id; n_items];
    let mut item_originals: Vec<String> = Vec::new();
    let mut user_originals: Vec<String> = Vec::new();
    let mut offsets = Vec::with_capacity(seq_key.len() + 2);
    offsets.push(0usize);
    offsets.push(0usize);
    let mut item_seq: Vec<Id> = Vec::with_capacity(order.len());
    let mut time_seq: Vec<i64> = Vec::with_capacity(order.len());
    for s in 0..seq_key.len() {
        let (a, b) = (seq_off[s], seq_off[s + 1]);
        if a == b {
            continue;
        }
        user_originals.push(match cfg.session_gap {
            None => take_name(&mut user_ids, seq_key[s] as usize),
            Some(_) => format!("{}#{}", user_ids[seq_key[s] as usize], seq_part[s]),
        });
        for &e in &order[a..b] {
            let raw = items[e as usize] as usize;
            if item_dense[raw] == 0 {
                item_originals.push(take_name(&mut item_ids, raw));
                item_dense[raw] = item_originals.len() as Id;
            }
            item_seq.push(item_dense[raw]);
            time_seq.push(times[e as usize]);
        }
        offsets.push(item_seq.len());
    }
    if item_seq.is_empty() {
        return Err(DataError::NothingLeft(format!(
            "{} events read from {}, none kept with {}",
            n,
            source.display(),
            cfg.fingerprint()
        )));
    }
    // Owned inputs: free the log before the vocabularies build their hash indexes, which
    // is where peak memory would otherwise be reached.
    drop((
        items, times, order, seq_off, seq_key, seq_part, item_dense, user_ids, item_ids,
    ));
    let users = Vocab::from_originals(user_originals)
        .map_err(|d| DataError::NothingLeft(format!("duplicate user id {d:?}")))?;
    let items = Vocab::from_originals(item_originals)
        .map_err(|d| DataError::NothingLeft(format!("duplicate item id {d:?}")))?;
    // The invariants hold by construction; `from_parts` re-checks them in O(n).
    Dataset::from_parts(users, items, offsets, item_seq, time_seq).map_err(DataError::NothingLeft)
}

/// Removes events of short sequences and rare items, compacting `order` and `seq_off` in place.
/// Sequences may become empty (the caller skips them).
fn kcore(
    order: &mut Vec<u32>,
    seq_off: &mut [usize],
    items: &[u32],
    n_items: usize,
    cfg: &PrepareConfig,
) {
    let (ku, ki) = (cfg.min_user_events, cfg.min_item_events);
    if ku <= 1 && ki <= 1 {
        return;
    }
    let n_seq = seq_off.len() - 1;
    let mut item_deg = vec![0u32; n_items];
    loop {
        item_deg.iter_mut().for_each(|d| *d = 0);
        for &e in order.iter() {
            item_deg[items[e as usize] as usize] += 1;
        }
        let mut w = 0;
        let mut removed = false;
        let mut start = 0;
        for s in 0..n_seq {
            let (a, b) = (start, seq_off[s + 1]);
            start = b;
            let short = b - a < ku;
            for r in a..b {
                let e = order[r];
                if short || (item_deg[items[e as usize] as usize] as usize) < ki {
                    removed = true;
                } else {
                    order[w] = e;
                    w += 1;
                }
            }
            seq_off[s + 1] = w;
        }
        order.truncate(w);
        if !removed || cfg.kcore == KCore::SinglePass {
            return;
        }
    }
}
