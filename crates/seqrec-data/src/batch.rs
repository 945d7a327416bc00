//! Mini-batches: SASRec right-aligned windows, GRU4Rec session-parallel steps, evaluation inputs.
//!
//! Every batcher owns one preallocated batch and refills it in place (`next_batch` returns
//! `&Batch`), so a training loop allocates nothing per step. Buffers are flat row-major
//! `Vec<u32>` with their shape in explicit fields.
//!
//! # SASRec layout ([`SasrecBatcher`])
//!
//! A training sequence `s` of length `n` gives targets at indices `1..n`: the input at a slot
//! is `s[t - 1]` and the positive target `s[t]` (SASRec's `seq = s[:-1]`, `pos = s[1:]`).
//! A *window* holds at most `maxlen` consecutive targets, right-aligned in its row and
//! left-padded with [`PAD`]:
//!
//! ```text
//! s = [a b c d e], maxlen 6:   inputs  [0 0 a b c d]
//!                              targets [0 0 b c d e]
//! ```
//!
//! [`WindowMode::Last`] keeps only the last window per sequence (SASRec: older events are
//! truncated). [`WindowMode::Sliding`] walks back from the end with a stride `1..=maxlen`
//! until the first target is covered; where windows overlap, an overlapped target is kept
//! (non-zero) only in the window where it has the *most* context, i.e. the earlier window,
//! and is [`PAD`] in the later one, whose inputs still show it. So over an epoch every
//! training target `(sequence, index)` appears exactly once.
//!
//! ```
//! use seqrec_data::{Dataset, SasrecBatcher, SasrecConfig, Sequences, Vocab, WindowMode};
//! let users = Vocab::from_originals(vec!["a".into()]).unwrap();
//! let items = Vocab::from_originals((1..=9).map(|i| i.to_string()).collect()).unwrap();
//! let ds = Dataset::from_sequences(users, items, vec![(vec![1, 2, 3, 4, 5], vec![0; 5])]).unwrap();
//! let cfg = SasrecConfig { batch_size: 2, maxlen: 6, ..SasrecConfig::default() };
//! let mut b = SasrecBatcher::new(Sequences::all(&ds), cfg).unwrap();
//! b.start_epoch(0);
//! let batch = b.next_batch().unwrap().unwrap();
//! assert_eq!(batch.rows, 1);
//! assert_eq!(&batch.inputs[..6], &[0, 0, 1, 2, 3, 4]);
//! assert_eq!(&batch.targets[..6], &[0, 0, 2, 3, 4, 5]);
//! assert!(batch.inputs[6..].iter().all(|&x| x == 0)); // unused row stays padding
//! assert!(b.next_batch().unwrap().is_none());
//! ```
//!
//! # End to end
//!
//! Split, then batch the training prefixes with one negative per position:
//!
//! ```
//! use seqrec_data::{Dataset, NegativeSampler, Negatives, SasrecBatcher, SasrecConfig, Split, Vocab};
//! let users = Vocab::from_originals(vec!["alice".into(), "bob".into()]).unwrap();
//! let items = Vocab::from_originals((1..=6).map(|i| format!("m{i}")).collect()).unwrap();
//! let ds = Dataset::from_sequences(users, items, vec![
//!     (vec![1, 2, 3, 4, 5], vec![10, 20, 30, 40, 50]),
//!     (vec![6, 5, 4], vec![1, 2, 3]),
//! ]).unwrap();
//! let split = Split::leave_one_out(&ds);
//! split.check_no_leakage(&ds).unwrap();
//! let cfg = SasrecConfig {
//!     batch_size: 2,
//!     maxlen: 4,
//!     negatives: Negatives::PerPosition { n: 1, sampler: NegativeSampler::uniform(6).unwrap() },
//!     seed: 7,
//!     ..SasrecConfig::default()
//! };
//! let mut batcher = SasrecBatcher::new(split.train_sequences(&ds).unwrap(), cfg).unwrap();
//! for epoch in 0..2 {
//!     batcher.start_epoch(epoch);
//!     while let Some(batch) = batcher.next_batch().unwrap() {
//!         assert_eq!(batch.inputs.len(), batch.batch_size * batch.maxlen);
//!         // alice (user 1) trains on [1, 2, 3]: inputs [0, 0, 1, 2], targets [0, 0, 2, 3].
//!         let r = batch.users.iter().position(|&u| u == 1).unwrap();
//!         assert_eq!(&batch.inputs[r * 4..r * 4 + 4], &[0, 0, 1, 2]);
//!         assert_eq!(&batch.targets[r * 4..r * 4 + 4], &[0, 0, 2, 3]);
//!         assert!(![1, 2, 3].contains(&batch.negatives[r * 4 + 3]));
//!     }
//! }
//! ```
//!
//! # Session-parallel ([`SessionParallel`])
//!
//! GRU4Rec's scheme: `lanes` lanes each follow one sequence; at each step a lane's input is
//! its current item and its target the next one. When a sequence is exhausted the lane takes
//! the next unstarted sequence and `reset[lane]` is set on that lane's first step, telling the
//! model to zero the lane's hidden state. Unlike GRU4Rec, the epoch does not stop when the
//! first lane runs dry: lanes without work become inactive (`active[lane] == false`, input and
//! target [`PAD`]) until every sequence is finished, so no event is dropped.
//!
//! # Randomness
//!
//! The window order of epoch `e` is a permutation drawn from stream `(seed, e)`; the negatives
//! of window `w` in epoch `e` come from stream `(seed, e, w)`, so they do not depend on the
//! batch size or on which batch the window lands in. See [`crate::SeqRng`].

use crate::context::ContextConfig;
use crate::dataset::{Dataset, Id, PAD};
use crate::negative::{ComplementScratch, ItemMask, NegativeError, NegativeSampler, SeqRng};
use crate::split::{EvalCase, Sequences};

/// Errors from configuring a batcher.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BatchError {
    /// Occurs when the batch size (or the number of lanes) is 0.
    #[error("batch size must be >= 1")]
    ZeroBatchSize,
    /// Occurs when `maxlen` is 0.
    #[error("maxlen must be >= 1")]
    ZeroMaxlen,
    /// Occurs when a sliding-window stride is 0 or larger than `maxlen` (targets would be skipped).
    #[error("sliding stride must be in 1..=maxlen ({maxlen}), got {stride}")]
    BadStride {
        /// The stride given.
        stride: usize,
        /// The window length.
        maxlen: usize,
    },
    /// Occurs when negatives are requested with `n == 0`.
    #[error("number of negatives must be >= 1")]
    ZeroNegatives,
    /// Occurs when the sampler covers a different number of items than the sequences.
    #[error("negative sampler covers {sampler} items, sequences use {data}")]
    ItemCountMismatch {
        /// Items in the sampler.
        sampler: usize,
        /// Items in the dataset.
        data: usize,
    },
    /// Occurs when a negative cannot be drawn (a user touched every item).
    #[error(transparent)]
    Negative(#[from] NegativeError),
    /// Occurs when an evaluation case lies outside the dataset.
    #[error("evaluation case for user {user} with input length {input_len} is outside the dataset")]
    BadCase {
        /// The case's user.
        user: Id,
        /// The case's input length.
        input_len: u32,
    },
}

/// Which windows a sequence contributes to the SASRec layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowMode {
    /// Only the last `maxlen` targets of each sequence (SASRec's truncation).
    Last,
    /// Windows ending at the last target, then every `stride` targets earlier, until the first
    /// target is covered; each target is kept in exactly one window.
    Sliding {
        /// Distance between window ends, `1..=maxlen`.
        stride: usize,
    },
}

/// Negative items to draw next to the positive targets.
#[derive(Debug, Clone)]
pub enum Negatives {
    /// No negatives (`negatives` stays empty).
    None,
    /// `n` negatives for every kept target position, none in the row's sequence (the user's
    /// training items, SASRec's exclusion rule); `[batch, maxlen, n]`, [`PAD`] where the target is.
    PerPosition {
        /// Negatives per position.
        n: usize,
        /// The distribution.
        sampler: NegativeSampler,
    },
    /// `n` negatives per batch shared by every row and position (`[n]`), drawn *without*
    /// excluding any user's items: a shared set cannot exclude every row's history, so the
    /// loss must mask a shared negative that equals a row's positive.
    Shared {
        /// Negatives per batch.
        n: usize,
        /// The distribution.
        sampler: NegativeSampler,
    },
}

/// Settings of a [`SasrecBatcher`], validated by [`SasrecBatcher::new`].
#[derive(Debug, Clone)]
pub struct SasrecConfig {
    /// Rows per batch.
    pub batch_size: usize,
    /// Window length (columns).
    pub maxlen: usize,
    /// Last window only, or sliding windows.
    pub window: WindowMode,
    /// Negatives to draw.
    pub negatives: Negatives,
    /// Shuffle windows each epoch (else sequence order).
    pub shuffle: bool,
    /// Seed for shuffling and negatives.
    pub seed: u64,
    /// Context features to fill (`time_buckets`, `positions`); `None` leaves them empty.
    pub context: Option<ContextConfig>,
}

impl Default for SasrecConfig {
    /// Batch 128, maxlen 200, last window, no negatives, shuffled with seed 0, no context.
    fn default() -> Self {
        Self {
            batch_size: 128,
            maxlen: 200,
            window: WindowMode::Last,
            negatives: Negatives::None,
            shuffle: true,
            seed: 0,
            context: None,
        }
    }
}

/// One SASRec mini-batch, refilled in place. Rows past `rows` are all [`PAD`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SasrecBatch {
    /// Rows allocated (`batch_size`).
    pub batch_size: usize,
    /// Columns.
    pub maxlen: usize,
    /// Rows filled in this batch (the last batch of an epoch may be short).
    pub rows: usize,
    /// Negatives per position (`PerPosition`) or per batch (`Shared`); 0 for none.
    pub n_neg: usize,
    /// `[batch_size]`: the user of each row ([`PAD`] for unused rows).
    pub users: Vec<Id>,
    /// `[batch_size]`: the 0-based index, in the row's sequence, of the target in the last
    /// column (0 for unused rows). Column `c` holds target `last_target - (maxlen - 1 - c)`.
    pub last_target: Vec<u32>,
    /// `[batch_size, maxlen]` input items.
    pub inputs: Vec<u32>,
    /// `[batch_size, maxlen]` positive targets; [`PAD`] where there is no target to score.
    pub targets: Vec<u32>,
    /// `[batch_size, maxlen, n_neg]` (per position) or `[n_neg]` (shared) negatives.
    pub negatives: Vec<u32>,
    /// `[batch_size, maxlen]` time-gap buckets of the inputs (empty without context).
    pub time_buckets: Vec<u32>,
    /// `[batch_size, maxlen]` positions of the inputs (empty without context).
    pub positions: Vec<u32>,
}

#[derive(Debug, Clone, Copy)]
struct Window {
    seq: u32,
    /// Index of the last target in the sequence.
    end: u32,
    /// Targets with index `< keep_from` are masked to [`PAD`].
    keep_from: u32,
}

/// Fills [`SasrecBatch`]es of right-aligned windows; see the module docs.
#[derive(Debug, Clone)]
pub struct SasrecBatcher<'a> {
    seqs: Sequences<'a>,
    cfg: SasrecConfig,
    windows: Vec<Window>,
    order: Vec<u32>,
    cursor: usize,
    epoch: u64,
    batch_index: u64,
    mask: ItemMask,
    scratch: ComplementScratch,
    batch: SasrecBatch,
}

const SHUFFLE_STREAM: u64 = 0x5348_5546;
const SHARED_STREAM: u64 = 1 << 62;

impl<'a> SasrecBatcher<'a> {
    /// Validates `cfg`, lists the windows and allocates the batch. Checks once that every
    /// sequence leaves at least one candidate negative, so drawing never fails later.
    pub fn new(seqs: Sequences<'a>, cfg: SasrecConfig) -> Result<Self, BatchError> {
        if cfg.batch_size == 0 {
            return Err(BatchError::ZeroBatchSize);
        }
        let l = cfg.maxlen;
        if l == 0 {
            return Err(BatchError::ZeroMaxlen);
        }
        if let WindowMode::Sliding { stride } = cfg.window
            && (stride == 0 || stride > l)
        {
            return Err(BatchError::BadStride { stride, maxlen: l });
        }
        let mut mask = ItemMask::new(seqs.n_items());
        let n_neg = match &cfg.negatives {
            Negatives::None => 0,
            Negatives::PerPosition { n, sampler } | Negatives::Shared { n, sampler } => {
                if *n == 0 {
                    return Err(BatchError::ZeroNegatives);
                }
                if sampler.n_items() != seqs.n_items() {
                    return Err(BatchError::ItemCountMismatch {
                        sampler: sampler.n_items(),
                        data: seqs.n_items(),
                    });
                }
                *n
            }
        };
        if let Negatives::PerPosition { sampler, .. } = &cfg.negatives {
            let mut distinct = Vec::new();
            for k in 0..seqs.len() {
                let items = seqs.items(k);
                if items.len() < 2 {
                    continue;
                }
                distinct.clear();
                distinct.extend(items.iter().copied().filter(|&i| mask.insert(i)));
                mask.clear_all(&distinct);
                sampler.check_candidates(seqs.user(k), distinct.iter().copied())?;
            }
        }
        let mut windows = Vec::new();
        for k in 0..seqs.len() {
            let n = seqs.items(k).len();
            if n < 2 {
                continue;
            }
            let seq = k as u32;
            let mut end = n - 1;
            match cfg.window {
                WindowMode::Last => {
                    let first = (end + 1).saturating_sub(l).max(1);
                    windows.push(Window {
                        seq,
                        end: end as u32,
                        keep_from: first as u32,
                    });
                }
                WindowMode::Sliding { stride } => loop {
                    let first = (end + 1).saturating_sub(l).max(1);
                    if first == 1 {
                        windows.push(Window {
                            seq,
                            end: end as u32,
                            keep_from: 1,
                        });
                        break;
                    }
                    windows.push(Window {
                        seq,
                        end: end as u32,
                        keep_from: (end + 1 - stride) as u32,
                    });
                    end -= stride;
                },
            }
        }
        let b = cfg.batch_size;
        let ctx = if cfg.context.is_some() { b * l } else { 0 };
        let neg_len = match cfg.negatives {
            Negatives::None => 0,
            Negatives::PerPosition { n, .. } => b * l * n,
            Negatives::Shared { n, .. } => n,
        };
        let batch = SasrecBatch {
            batch_size: b,
            maxlen: l,
            rows: 0,
            n_neg,
            users: vec![PAD; b],
            last_target: vec![0; b],
            inputs: vec![PAD; b * l],
            targets: vec![PAD; b * l],
            negatives: vec![PAD; neg_len],
            time_buckets: vec![0; ctx],
            positions: vec![0; ctx],
        };
        let order = (0..windows.len() as u32).collect();
        let mut this = Self {
            seqs,
            cfg,
            windows,
            order,
            cursor: 0,
            epoch: 0,
            batch_index: 0,
            mask,
            scratch: ComplementScratch::default(),
            batch,
        };
        this.start_epoch(0);
        Ok(this)
    }

    /// Number of windows (rows) per epoch.
    pub fn n_windows(&self) -> usize {
        self.windows.len()
    }

    /// Number of batches per epoch (the last may be short).
    pub fn n_batches(&self) -> usize {
        self.windows.len().div_ceil(self.cfg.batch_size)
    }

    /// Number of non-[`PAD`] targets per epoch.
    pub fn n_targets(&self) -> usize {
        self.windows
            .iter()
            .map(|w| (w.end - w.keep_from + 1) as usize)
            .sum()
    }

    /// The configuration.
    pub fn config(&self) -> &SasrecConfig {
        &self.cfg
    }

    /// Restarts at the beginning of epoch `epoch`, with that epoch's window order.
    pub fn start_epoch(&mut self, epoch: u64) {
        self.epoch = epoch;
        self.cursor = 0;
        self.batch_index = 0;
        for (i, o) in self.order.iter_mut().enumerate() {
            *o = i as u32;
        }
        if self.cfg.shuffle {
            SeqRng::keyed(self.cfg.seed, epoch, SHUFFLE_STREAM).shuffle(&mut self.order);
        }
    }

    /// Fills and returns the next batch of the current epoch, `None` when the epoch is over.
    pub fn next_batch(&mut self) -> Result<Option<&SasrecBatch>, BatchError> {
        if self.cursor >= self.order.len() {
            return Ok(None);
        }
        let b = self.cfg.batch_size;
        let l = self.cfg.maxlen;
        let rows = (self.order.len() - self.cursor).min(b);
        let batch = &mut self.batch;
        batch.rows = rows;
        batch.users.fill(PAD);
        batch.last_target.fill(0);
        batch.inputs.fill(PAD);
        batch.targets.fill(PAD);
        batch.negatives.fill(PAD);
        batch.time_buckets.fill(0);
        batch.positions.fill(0);
        for r in 0..rows {
            let w_id = self.order[self.cursor + r];
            let w = self.windows[w_id as usize];
            let k = w.seq as usize;
            let items = self.seqs.items(k);
            let times = self.seqs.times(k);
            let end = w.end as usize;
            let keep_from = w.keep_from as usize;
            let first = (end + 1).saturating_sub(l).max(1);
            let row = r * l;
            batch.users[r] = self.seqs.user(k);
            batch.last_target[r] = w.end;
            // Slot of target t: the last target (t == end) sits in column l - 1.
            let col0 = row + l - 1 - (end - first);
            batch.inputs[col0..row + l].copy_from_slice(&items[first - 1..end]);
            batch.targets[col0..row + l].copy_from_slice(&items[first..=end]);
            if keep_from > first {
                batch.targets[col0..col0 + (keep_from - first)].fill(PAD);
            }
            if let Some(ctx) = &self.cfg.context {
                for t in first..=end {
                    let c = col0 + (t - first);
                    let i = t - 1;
                    batch.time_buckets[c] =
                        ctx.time_bucket(i.checked_sub(1).map(|p| times[i] - times[p]));
                    batch.positions[c] = ctx.position(i, end - 1);
                }
            }
            if let Negatives::PerPosition { n, sampler } = &self.cfg.negatives {
                let mut rng = SeqRng::keyed(self.cfg.seed, self.epoch, w_id as u64);
                let col_keep = col0 + (keep_from - first);
                let out = &mut batch.negatives[col_keep * n..(row + l) * n];
                // `new` checked that every sequence has a candidate, so this cannot fail.
                sampler.fill_excluding(
                    self.seqs.user(k),
                    items,
                    &mut self.mask,
                    &mut self.scratch,
                    &mut rng,
                    out,
                )?;
            }
        }
        if let Negatives::Shared { sampler, .. } = &self.cfg.negatives {
            let mut rng =
                SeqRng::keyed(self.cfg.seed, self.epoch, SHARED_STREAM + self.batch_index);
            for x in batch.negatives.iter_mut() {
                *x = sampler.sample_any(&mut rng);
            }
        }
        self.cursor += rows;
        self.batch_index += 1;
        Ok(Some(&self.batch))
    }
}

/// One session-parallel step, refilled in place; every vector has one entry per lane.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SessionBatch {
    /// Number of lanes.
    pub lanes: usize,
    /// The user (or session) each lane follows ([`PAD`] when inactive).
    pub users: Vec<Id>,
    /// Current item per lane ([`PAD`] when inactive).
    pub inputs: Vec<u32>,
    /// Next item per lane ([`PAD`] when inactive).
    pub targets: Vec<u32>,
    /// True on the first step of a new sequence in the lane: reset its hidden state.
    pub reset: Vec<bool>,
    /// False for lanes that have no sequence left this epoch.
    pub active: Vec<bool>,
    /// Time-gap bucket of each input (empty without context).
    pub time_buckets: Vec<u32>,
    /// `[n]` negatives shared by every lane (empty unless
    /// [`SessionParallel::with_shared_negatives`] was called).
    pub negatives: Vec<u32>,
}

#[derive(Debug, Clone, Copy)]
struct Lane {
    /// Index into `order`, or `usize::MAX` when the lane is inactive.
    slot: usize,
    /// Index of the current input in the sequence.
    pos: usize,
}

/// GRU4Rec session-parallel mini-batches; see the module docs.
///
/// ```
/// use seqrec_data::{Dataset, SessionParallel, Sequences, Vocab};
/// let users = Vocab::from_originals(vec!["a".into(), "b".into()]).unwrap();
/// let items = Vocab::from_originals((1..=9).map(|i| i.to_string()).collect()).unwrap();
/// let ds = Dataset::from_sequences(users, items, vec![
///     (vec![1, 2, 3], vec![0; 3]),
///     (vec![4, 5], vec![0; 2]),
/// ]).unwrap();
/// let mut sp = SessionParallel::new(Sequences::all(&ds), 1, None, None).unwrap();
/// sp.start_epoch(0);
/// let mut steps = Vec::new();
/// while let Some(b) = sp.next_step() {
///     steps.push((b.inputs[0], b.targets[0], b.reset[0]));
/// }
/// assert_eq!(steps, [(1, 2, true), (2, 3, false), (4, 5, true)]);
/// ```
#[derive(Debug, Clone)]
pub struct SessionParallel<'a> {
    seqs: Sequences<'a>,
    shuffle_seed: Option<u64>,
    context: Option<ContextConfig>,
    /// Sequences with at least 2 events, in epoch order.
    order: Vec<u32>,
    next_slot: usize,
    lanes: Vec<Lane>,
    started: bool,
    epoch: u64,
    step: u64,
    /// `(seed, sampler)` for shared negatives.
    negatives: Option<(u64, NegativeSampler)>,
    batch: SessionBatch,
}

impl<'a> SessionParallel<'a> {
    /// `lanes` parallel lanes; `shuffle_seed: Some(seed)` permutes sequence order per epoch.
    /// Sequences with fewer than 2 events have no (input, target) pair and are skipped.
    pub fn new(
        seqs: Sequences<'a>,
        lanes: usize,
        shuffle_seed: Option<u64>,
        context: Option<ContextConfig>,
    ) -> Result<Self, BatchError> {
        if lanes == 0 {
            return Err(BatchError::ZeroBatchSize);
        }
        let order = (0..seqs.len() as u32)
            .filter(|&k| seqs.items(k as usize).len() >= 2)
            .collect();
        let batch = SessionBatch {
            lanes,
            users: vec![PAD; lanes],
            inputs: vec![PAD; lanes],
            targets: vec![PAD; lanes],
            reset: vec![false; lanes],
            active: vec![false; lanes],
            time_buckets: if context.is_some() {
                vec![0; lanes]
            } else {
                Vec::new()
            },
            negatives: Vec::new(),
        };
        let mut this = Self {
            seqs,
            shuffle_seed,
            context,
            order,
            next_slot: 0,
            lanes: vec![
                Lane {
                    slot: usize::MAX,
                    pos: 0
                };
                lanes
            ],
            started: false,
            epoch: 0,
            step: 0,
            negatives: None,
            batch,
        };
        this.start_epoch(0);
        Ok(this)
    }

    /// Adds `n` negatives per step shared by all lanes (GRU4Rec's `n_sample` extra negatives,
    /// used next to the in-batch negatives, e.g. popularity with `alpha = 0.75` as GRU4Rec's
    /// `sample_alpha`). Like [`Negatives::Shared`] they exclude no user's items; step `s` of
    /// epoch `e` draws from stream `(seed, e, s)`.
    pub fn with_shared_negatives(
        mut self,
        n: usize,
        sampler: NegativeSampler,
        seed: u64,
    ) -> Result<Self, BatchError> {
        if n == 0 {
            return Err(BatchError::ZeroNegatives);
        }
        if sampler.n_items() != self.seqs.n_items() {
            return Err(BatchError::ItemCountMismatch {
                sampler: sampler.n_items(),
                data: self.seqs.n_items(),
            });
        }
        self.batch.negatives = vec![PAD; n];
        self.negatives = Some((seed, sampler));
        Ok(self)
    }

    /// Number of sequences with at least one (input, target) pair.
    pub fn n_sequences(&self) -> usize {
        self.order.len()
    }

    /// Restarts at the beginning of epoch `epoch`.
    pub fn start_epoch(&mut self, epoch: u64) {
        let mut ids: Vec<u32> = std::mem::take(&mut self.order);
        ids.sort_unstable();
        if let Some(seed) = self.shuffle_seed {
            SeqRng::keyed(seed, epoch, SHUFFLE_STREAM).shuffle(&mut ids);
        }
        self.order = ids;
        self.next_slot = 0;
        self.started = false;
        self.epoch = epoch;
        self.step = 0;
        for lane in &mut self.lanes {
            *lane = Lane {
                slot: usize::MAX,
                pos: 0,
            };
        }
    }

    /// Advances every lane by one event and returns the step, `None` when the epoch is over.
    pub fn next_step(&mut self) -> Option<&SessionBatch> {
        let b = &mut self.batch;
        b.reset.fill(false);
        for (li, lane) in self.lanes.iter_mut().enumerate() {
            // Advance the lane, or refill it when its sequence is done (or on the first step).
            let need_new = if !self.started {
                true
            } else if lane.slot == usize::MAX {
                false
            } else {
                lane.pos += 1;
                lane.pos + 1 >= self.seqs.items(self.order[lane.slot] as usize).len()
            };
            if need_new {
                if self.next_slot < self.order.len() {
                    *lane = Lane {
                        slot: self.next_slot,
                        pos: 0,
                    };
                    self.next_slot += 1;
                    b.reset[li] = true;
                } else {
                    lane.slot = usize::MAX;
                }
            }
            if lane.slot == usize::MAX {
                b.active[li] = false;
                b.users[li] = PAD;
                b.inputs[li] = PAD;
                b.targets[li] = PAD;
                if let Some(tb) = b.time_buckets.get_mut(li) {
                    *tb = 0;
                }
                continue;
            }
            let k = self.order[lane.slot] as usize;
            let items = self.seqs.items(k);
            b.active[li] = true;
            b.users[li] = self.seqs.user(k);
            b.inputs[li] = items[lane.pos];
            b.targets[li] = items[lane.pos + 1];
            if let Some(ctx) = &self.context {
                let times = self.seqs.times(k);
                b.time_buckets[li] =
                    ctx.time_bucket(lane.pos.checked_sub(1).map(|p| times[lane.pos] - times[p]));
            }
        }
        self.started = true;
        if !b.active.iter().any(|&a| a) {
            return None;
        }
        if let Some((seed, sampler)) = &self.negatives {
            let mut rng = SeqRng::keyed(*seed, self.epoch, self.step);
            for x in b.negatives.iter_mut() {
                *x = sampler.sample_any(&mut rng);
            }
        }
        self.step += 1;
        Some(&self.batch)
    }
}

/// A batch of evaluation inputs (validation or test cases), refilled in place.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EvalBatch {
    /// Rows allocated.
    pub batch_size: usize,
    /// Columns.
    pub maxlen: usize,
    /// Rows filled.
    pub rows: usize,
    /// `[batch_size]` users ([`PAD`] for unused rows).
    pub users: Vec<Id>,
    /// `[batch_size]` index of each row's case in the case list (`usize::MAX` when unused).
    pub case_index: Vec<usize>,
    /// `[batch_size, maxlen]` the last `maxlen` input events, right-aligned, left-padded.
    pub inputs: Vec<u32>,
    /// `[batch_size]` the target item of each row.
    pub targets: Vec<u32>,
    /// `[batch_size, maxlen]` time-gap buckets (empty without context).
    pub time_buckets: Vec<u32>,
    /// `[batch_size, maxlen]` positions (empty without context).
    pub positions: Vec<u32>,
}

/// Fills [`EvalBatch`]es from evaluation cases, in case order.
///
/// ```
/// use seqrec_data::{Dataset, EvalBatcher, Split, Vocab};
/// let users = Vocab::from_originals(vec!["a".into()]).unwrap();
/// let items = Vocab::from_originals((1..=9).map(|i| i.to_string()).collect()).unwrap();
/// let ds = Dataset::from_sequences(users, items, vec![(vec![1, 2, 3, 4], vec![0; 4])]).unwrap();
/// let split = Split::leave_one_out(&ds);
/// let mut eb = EvalBatcher::new(&ds, split.test(), 8, 5, None).unwrap();
/// let b = eb.next_batch().unwrap();
/// assert_eq!(&b.inputs[..5], &[0, 0, 1, 2, 3]);
/// assert_eq!(b.targets[0], 4);
/// ```
#[derive(Debug, Clone)]
pub struct EvalBatcher<'a> {
    ds: &'a Dataset,
    cases: &'a [EvalCase],
    context: Option<ContextConfig>,
    cursor: usize,
    batch: EvalBatch,
}

impl<'a> EvalBatcher<'a> {
    /// Checks every case against `ds` once and allocates the batch.
    pub fn new(
        ds: &'a Dataset,
        cases: &'a [EvalCase],
        batch_size: usize,
        maxlen: usize,
        context: Option<ContextConfig>,
    ) -> Result<Self, BatchError> {
        if batch_size == 0 {
            return Err(BatchError::ZeroBatchSize);
        }
        if maxlen == 0 {
            return Err(BatchError::ZeroMaxlen);
        }
        for c in cases {
            if c.user == PAD
                || c.user as usize > ds.n_users()
                || c.input_len as usize >= ds.items_of(c.user).len()
            {
                return Err(BatchError::BadCase {
                    user: c.user,
                    input_len: c.input_len,
                });
            }
        }
        let ctx = if context.is_some() {
            batch_size * maxlen
        } else {
            0
        };
        let batch = EvalBatch {
            batch_size,
            maxlen,
            rows: 0,
            users: vec![PAD; batch_size],
            case_index: vec![usize::MAX; batch_size],
            inputs: vec![PAD; batch_size * maxlen],
            targets: vec![PAD; batch_size],
            time_buckets: vec![0; ctx],
            positions: vec![0; ctx],
        };
        Ok(Self {
            ds,
            cases,
            context,
            cursor: 0,
            batch,
        })
    }

    /// Restarts from the first case.
    pub fn reset(&mut self) {
        self.cursor = 0;
    }

    /// The next batch of cases, `None` when all cases were returned.
    pub fn next_batch(&mut self) -> Option<&EvalBatch> {
        if self.cursor >= self.cases.len() {
            return None;
        }
        let b = &mut self.batch;
        let (bs, l) = (b.batch_size, b.maxlen);
        let rows = (self.cases.len() - self.cursor).min(bs);
        b.rows = rows;
        b.users.fill(PAD);
        b.case_index.fill(usize::MAX);
        b.inputs.fill(PAD);
        b.targets.fill(PAD);
        b.time_buckets.fill(0);
        b.positions.fill(0);
        for r in 0..rows {
            let c = self.cases[self.cursor + r];
            let items = c.input_items(self.ds);
            let times = c.input_times(self.ds);
            let n = items.len();
            let first = n.saturating_sub(l);
            let col0 = r * l + l - (n - first);
            b.users[r] = c.user;
            b.case_index[r] = self.cursor + r;
            b.inputs[col0..(r + 1) * l].copy_from_slice(&items[first..]);
            b.targets[r] = c.target(self.ds);
            if let Some(ctx) = &self.context {
                for i in first..n {
                    let col = col0 + (i - first);
                    b.time_buckets[col] =
                        ctx.time_bucket(i.checked_sub(1).map(|p| times[i] - times[p]));
                    b.positions[col] = ctx.position(i, n - 1);
                }
            }
        }
        self.cursor += rows;
        Some(&self.batch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::PositionFrom;
    use crate::dataset::Vocab;

    fn one_user(items: Vec<Id>, times: Vec<i64>, n_items: usize) -> Dataset {
        let users = Vocab::from_originals(vec!["u".into()]).unwrap();
        let vocab = Vocab::from_originals((1..=n_items).map(|i| i.to_string()).collect()).unwrap();
        Dataset::from_sequences(users, vocab, vec![(items, times)]).unwrap()
    }

    #[test]
    fn sliding_windows_reference_layout() {
        // s = [1..=7], maxlen 4, stride 2. Window 1 ends at target index 6 and keeps the
        // last 2 targets; window 2 reaches the start and keeps everything it covers.
        let ds = one_user((1..=7).collect(), vec![0, 0, 1, 3, 7, 100, 100], 9);
        let cfg = SasrecConfig {
            batch_size: 2,
            maxlen: 4,
            window: WindowMode::Sliding { stride: 2 },
            shuffle: false,
            context: Some(ContextConfig::new(6, PositionFrom::End, 3).unwrap()),
            ..SasrecConfig::default()
        };
        let mut b = SasrecBatcher::new(Sequences::all(&ds), cfg).unwrap();
        assert_eq!((b.n_windows(), b.n_targets()), (2, 6));
        let batch = b.next_batch().unwrap().unwrap();
        assert_eq!(batch.inputs, [3, 4, 5, 6, 1, 2, 3, 4]);
        assert_eq!(batch.targets, [0, 0, 6, 7, 2, 3, 4, 5]);
        assert_eq!(batch.last_target, [6, 4]);
        // Gaps before inputs 3, 4, 5, 6 are 1, 2, 4, 93 s -> buckets 3, 3, 4, 5 (capped at 5);
        // before inputs 1, 2, 3, 4: first event, 0 s, 1 s, 2 s -> 1, 2, 3, 3.
        assert_eq!(batch.time_buckets, [3, 3, 4, 5, 1, 2, 3, 3]);
        // Positions from the end, capped at 3.
        assert_eq!(batch.positions, [3, 3, 2, 1, 3, 3, 2, 1]);
        assert!(b.next_batch().unwrap().is_none());
    }

    #[test]
    fn per_position_negatives_only_where_targets_are() {
        let ds = one_user(vec![1, 2, 3], vec![0; 3], 5);
        let sampler = NegativeSampler::uniform(5).unwrap();
        let cfg = SasrecConfig {
            batch_size: 1,
            maxlen: 4,
            negatives: Negatives::PerPosition { n: 3, sampler },
            ..SasrecConfig::default()
        };
        let mut b = SasrecBatcher::new(Sequences::all(&ds), cfg).unwrap();
        let batch = b.next_batch().unwrap().unwrap();
        assert_eq!(batch.targets, [0, 0, 2, 3]);
        assert_eq!(batch.negatives.len(), 12);
        assert!(batch.negatives[..6].iter().all(|&x| x == PAD));
        assert!(batch.negatives[6..].iter().all(|&x| x == 4 || x == 5));
    }

    #[test]
    fn session_parallel_reference_steps() {
        let users = Vocab::from_originals(vec!["a".into(), "b".into(), "c".into()]).unwrap();
        let items = Vocab::from_originals((1..=9).map(|i| i.to_string()).collect()).unwrap();
        let ds = Dataset::from_sequences(
            users,
            items,
            vec![
                (vec![1, 2, 3, 4], vec![0; 4]),
                (vec![5, 6], vec![0; 2]),
                (vec![7, 8, 9], vec![0; 3]),
            ],
        )
        .unwrap();
        let mut sp = SessionParallel::new(Sequences::all(&ds), 2, None, None).unwrap();
        let mut steps = Vec::new();
        while let Some(s) = sp.next_step() {
            steps.push((
                s.inputs.clone(),
                s.targets.clone(),
                s.reset.clone(),
                s.active.clone(),
            ));
        }
        // Lane 0: 1->2, 2->3, 3->4 then idle; lane 1: 5->6, then 7->8, 8->9.
        let expected = vec![
            (vec![1, 5], vec![2, 6], vec![true, true], vec![true, true]),
            (vec![2, 7], vec![3, 8], vec![false, true], vec![true, true]),
            (vec![3, 8], vec![4, 9], vec![false, false], vec![true, true]),
        ];
        assert_eq!(steps, expected);
    }
}
