//! Negative sampling: uniform or popularity-weighted, excluding the items a user touched.
//!
//! # Random numbers
//!
//! Every sampler draws from [`SeqRng`], a small hand-written counter-based generator
//! (SplitMix64 over a `(seed, stream)` key) instead of `rand`'s `StdRng`. Two reasons:
//!
//! * `StdRng`'s algorithm may change between `rand` releases, which would silently change
//!   published numbers; SplitMix64 and the key mixing are fixed in this crate (a unit test
//!   pins reference outputs), so a seed names the same batches and negatives across versions.
//! * A stream is addressed by a key (`seed`, `epoch`, `row`, ...), so a batch can be
//!   regenerated independently of the ones before it (and in parallel) with identical
//!   results.
//!
//! # Exclusion
//!
//! "Items the user touched" are held in an [`ItemMask`], a bitset over dense item ids that
//! is filled from a user's sequence and cleared again in `O(len)` so one buffer serves
//! every user. Sampling is rejection sampling against the mask; when the user touched so
//! many items (or so much popularity mass) that rejection would be slow, the sampler falls
//! back to an exact draw over the explicit complement. Both paths draw from exactly the
//! same distribution: the target distribution restricted to the untouched items.

use crate::dataset::{Dataset, Id, PAD};

/// Errors from building samplers or drawing negatives.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum NegativeError {
    /// Occurs when a user touched every item that has non-zero sampling weight, so no
    /// negative exists for them.
    #[error(
        "user {user} has no candidate negative: all {n_items} items are excluded or have zero weight"
    )]
    NoCandidate {
        /// The dense user id (0 when the caller did not name a user).
        user: Id,
        /// Number of items in the catalogue.
        n_items: usize,
    },
    /// Occurs when `n` distinct negatives are requested but the user has fewer candidates.
    #[error("user {user} has only {available} candidate negatives, {requested} requested")]
    TooFewCandidates {
        /// The dense user id.
        user: Id,
        /// Number of distinct items that may be drawn.
        available: usize,
        /// Number of distinct negatives asked for.
        requested: usize,
    },
    /// Occurs when the popularity exponent is negative or not finite.
    #[error("popularity exponent alpha must be finite and >= 0, got {0}")]
    BadAlpha(f64),
    /// Occurs when the dataset has no items.
    #[error("the dataset has no items")]
    NoItems,
}

/// A deterministic counter-based random generator (SplitMix64 keyed by `(seed, stream)`).
///
/// ```
/// use seqrec_data::SeqRng;
/// let mut a = SeqRng::new(42, 7);
/// let mut b = SeqRng::new(42, 7);
/// assert_eq!(a.next_u64(), b.next_u64());
/// assert!(a.below(10) < 10);
/// assert_ne!(SeqRng::new(42, 8).next_u64(), SeqRng::new(42, 7).next_u64());
/// ```
#[derive(Debug, Clone)]
pub struct SeqRng {
    state: u64,
}

const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl SeqRng {
    /// A generator for stream `stream` of seed `seed`. Different `(seed, stream)` pairs give
    /// statistically independent sequences.
    pub fn new(seed: u64, stream: u64) -> Self {
        Self {
            state: mix64(
                mix64(seed ^ 0x5EC2_EC00_0000_0001).wrapping_add(stream.wrapping_mul(GOLDEN)),
            ),
        }
    }

    /// A generator keyed by three values, e.g. `(seed, epoch, row)`.
    pub fn keyed(seed: u64, a: u64, b: u64) -> Self {
        Self::new(mix64(seed.wrapping_add(GOLDEN).wrapping_mul(3) ^ a), b)
    }

    /// The next 64 uniformly distributed bits.
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GOLDEN);
        mix64(self.state)
    }

    /// A uniform integer in `0..n` (exact, Lemire's multiply-and-reject). `n` must be > 0.
    #[inline]
    pub fn below(&mut self, n: u64) -> u64 {
        debug_assert!(n > 0);
        let mut m = (self.next_u64() as u128) * (n as u128);
        if (m as u64) < n {
            let threshold = n.wrapping_neg() % n;
            while (m as u64) < threshold {
                m = (self.next_u64() as u128) * (n as u128);
            }
        }
        (m >> 64) as u64
    }

    /// A uniform float in `[0, 1)` with 53 random bits.
    #[inline]
    pub fn unit_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Shuffles `v` in place (Fisher-Yates).
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            v.swap(i, j);
        }
    }
}

/// A reusable bitset over dense item ids `0..=n_items` marking the items to exclude.
///
/// ```
/// use seqrec_data::ItemMask;
/// let mut m = ItemMask::new(10);
/// assert_eq!(m.set_all(&[3, 5, 3]), 2);
/// assert!(m.contains(3) && m.contains(5) && !m.contains(4));
/// assert_eq!(m.iter().collect::<Vec<_>>(), [3, 5]);
/// m.clear_all(&[3, 5]);
/// assert!(!m.contains(3));
/// ```
#[derive(Debug, Clone)]
pub struct ItemMask {
    words: Vec<u64>,
    n_items: usize,
}

impl ItemMask {
    /// An empty mask for items `1..=n_items`.
    pub fn new(n_items: usize) -> Self {
        Self {
            words: vec![0; (n_items + 1).div_ceil(64)],
            n_items,
        }
    }

    /// Number of items the mask covers.
    pub fn n_items(&self) -> usize {
        self.n_items
    }

    /// True when `item` is marked. Ids above `n_items` are reported as not marked.
    #[inline]
    pub fn contains(&self, item: Id) -> bool {
        let i = item as usize;
        self.words
            .get(i >> 6)
            .is_some_and(|w| w >> (i & 63) & 1 == 1)
    }

    /// Marks `item`; returns true when it was not marked before. Ids above `n_items` are ignored.
    #[inline]
    pub fn insert(&mut self, item: Id) -> bool {
        let i = item as usize;
        if i > self.n_items {
            return false;
        }
        let w = &mut self.words[i >> 6];
        let bit = 1u64 << (i & 63);
        let new = *w & bit == 0;
        *w |= bit;
        new
    }

    /// Marks every item of `items`; returns how many distinct new items were marked.
    pub fn set_all(&mut self, items: &[Id]) -> usize {
        items.iter().filter(|&&i| self.insert(i)).count()
    }

    /// Unmarks every item of `items` (the cheap way to reset after [`ItemMask::set_all`]).
    pub fn clear_all(&mut self, items: &[Id]) {
        for &i in items {
            let i = i as usize;
            if let Some(w) = self.words.get_mut(i >> 6) {
                *w &= !(1u64 << (i & 63));
            }
        }
    }

    /// True when no item is marked.
    pub fn is_clear(&self) -> bool {
        self.words.iter().all(|&w| w == 0)
    }

    /// The marked ids in increasing order (one `trailing_zeros` per marked id).
    pub fn iter(&self) -> impl Iterator<Item = Id> + '_ {
        self.words.iter().enumerate().flat_map(|(k, &w)| {
            let mut w = w;
            std::iter::from_fn(move || {
                (w != 0).then(|| {
                    let b = w.trailing_zeros();
                    w &= w - 1;
                    (k * 64) as Id + b
                })
            })
        })
    }
}

/// Walker's alias table over item ids `0..=n_items` (O(1) per draw).
#[derive(Debug, Clone)]
struct AliasTable {
    prob: Vec<f64>,
    alias: Vec<u32>,
}

impl AliasTable {
    /// `weights[0]` is the padding id and must be 0. At least one weight must be positive.
    fn new(weights: &[f64]) -> Self {
        let n = weights.len();
        let total: f64 = weights.iter().sum();
        let mut prob: Vec<f64> = weights.iter().map(|w| w * n as f64 / total).collect();
        let mut alias: Vec<u32> = (0..n as u32).collect();
        let (mut small, mut large): (Vec<usize>, Vec<usize>) = (0..n).partition(|&i| prob[i] < 1.0);
        while let (Some(s), Some(&l)) = (small.pop(), large.last()) {
            alias[s] = l as u32;
            prob[l] -= 1.0 - prob[s];
            if prob[l] < 1.0 {
                large.pop();
                small.push(l);
            }
        }
        // Leftovers are 1 up to rounding; entries with zero weight must stay impossible.
        for i in large.into_iter().chain(small) {
            prob[i] = if weights[i] > 0.0 { 1.0 } else { 0.0 };
            if weights[i] == 0.0 {
                // Point the slot at a positive-weight item so it is never returned itself.
                let j = weights.iter().position(|&w| w > 0.0).unwrap_or(0);
                alias[i] = j as u32;
            }
        }
        Self { prob, alias }
    }

    #[inline]
    fn sample(&self, rng: &mut SeqRng) -> u32 {
        let i = rng.below(self.prob.len() as u64) as usize;
        if rng.unit_f64() < self.prob[i] {
            i as u32
        } else {
            self.alias[i]
        }
    }
}

/// Which distribution negatives are drawn from (before excluding the user's items).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Distribution {
    /// Every item `1..=n_items` equally likely.
    Uniform,
    /// Item `i` with probability proportional to `count(i)^alpha` (counts over the dataset
    /// the sampler was built from; see `Split::train_item_counts` for training-only counts).
    /// `alpha = 1` is BERT4Rec's popularity sampling, `alpha = 0.75` word2vec's; items never
    /// seen have weight 0 when `alpha > 0`.
    Popularity {
        /// The exponent applied to counts, `>= 0`.
        alpha: f64,
    },
}

/// Draws negative items from a [`Distribution`], excluding the items marked in an [`ItemMask`].
///
/// ```
/// use seqrec_data::{Distribution, ItemMask, NegativeSampler, SeqRng};
/// let s = NegativeSampler::uniform(5).unwrap();
/// let mut mask = ItemMask::new(5);
/// mask.set_all(&[1, 2, 3]);
/// let mut rng = SeqRng::new(0, 0);
/// for _ in 0..100 {
///     let neg = s.sample(&mask, &mut rng).unwrap();
///     assert!(neg == 4 || neg == 5);
/// }
/// ```
#[derive(Debug, Clone)]
pub struct NegativeSampler {
    n_items: usize,
    dist: Distribution,
    /// `weights[i]` for the popularity distribution (empty for uniform).
    weights: Vec<f64>,
    /// Number of items with positive weight.
    n_positive: usize,
    /// Sum of all weights.
    total_weight: f64,
    alias: Option<AliasTable>,
}

impl NegativeSampler {
    /// A uniform sampler over items `1..=n_items`.
    pub fn uniform(n_items: usize) -> Result<Self, NegativeError> {
        if n_items == 0 {
            return Err(NegativeError::NoItems);
        }
        Ok(Self {
            n_items,
            dist: Distribution::Uniform,
            weights: Vec::new(),
            n_positive: n_items,
            total_weight: n_items as f64,
            alias: None,
        })
    }

    /// A popularity sampler with weights `counts[i]^alpha` (`counts[0]`, padding, is ignored).
    pub fn popularity(counts: &[u32], alpha: f64) -> Result<Self, NegativeError> {
        if !alpha.is_finite() || alpha < 0.0 {
            return Err(NegativeError::BadAlpha(alpha));
        }
        let n_items = counts.len().saturating_sub(1);
        if n_items == 0 {
            return Err(NegativeError::NoItems);
        }
        let mut weights: Vec<f64> = counts.iter().map(|&c| (c as f64).powf(alpha)).collect();
        weights[0] = 0.0;
        let total_weight: f64 = weights.iter().sum();
        if total_weight <= 0.0 {
            return Err(NegativeError::NoCandidate { user: 0, n_items });
        }
        let n_positive = weights.iter().filter(|&&w| w > 0.0).count();
        let alias = Some(AliasTable::new(&weights));
        Ok(Self {
            n_items,
            dist: Distribution::Popularity { alpha },
            weights,
            n_positive,
            total_weight,
            alias,
        })
    }

    /// A sampler for `dist` using the item counts of `ds`.
    pub fn for_dataset(ds: &Dataset, dist: Distribution) -> Result<Self, NegativeError> {
        match dist {
            Distribution::Uniform => Self::uniform(ds.n_items()),
            Distribution::Popularity { alpha } => Self::popularity(&ds.item_counts(), alpha),
        }
    }

    /// Number of items in the catalogue.
    pub fn n_items(&self) -> usize {
        self.n_items
    }

    /// The distribution drawn from.
    pub fn distribution(&self) -> Distribution {
        self.dist
    }

    /// The unnormalised weight of `item` (1 for every real item under the uniform distribution).
    pub fn weight(&self, item: Id) -> f64 {
        if item == PAD || item as usize > self.n_items {
            0.0
        } else if self.weights.is_empty() {
            1.0
        } else {
            self.weights[item as usize]
        }
    }

    /// One draw from the distribution without any exclusion (never [`PAD`]).
    #[inline]
    pub fn sample_any(&self, rng: &mut SeqRng) -> Id {
        match &self.alias {
            None => rng.below(self.n_items as u64) as Id + 1,
            Some(t) => t.sample(rng),
        }
    }

    /// One negative not marked in `mask`.
    ///
    /// Rejection sampling; after 64 consecutive rejections it switches to an exact draw over
    /// the explicit complement, so a user who touched nearly every item costs `O(n_items)`
    /// instead of looping for a long time. Errors when no item can be drawn.
    #[inline]
    pub fn sample(&self, mask: &ItemMask, rng: &mut SeqRng) -> Result<Id, NegativeError> {
        for _ in 0..64 {
            let i = self.sample_any(rng);
            if !mask.contains(i) {
                return Ok(i);
            }
        }
        self.sample_complement(mask, rng)
    }

    /// Exact draw from the distribution restricted to items not in `mask` (linear scan).
    pub fn sample_complement(
        &self,
        mask: &ItemMask,
        rng: &mut SeqRng,
    ) -> Result<Id, NegativeError> {
        let allowed = (1..=self.n_items as Id).filter(|&i| !mask.contains(i));
        let total: f64 = allowed.clone().map(|i| self.weight(i)).sum();
        if total <= 0.0 {
            return Err(NegativeError::NoCandidate {
                user: 0,
                n_items: self.n_items,
            });
        }
        let mut x = rng.unit_f64() * total;
        let mut last = PAD;
        for i in allowed {
            let w = self.weight(i);
            if w <= 0.0 {
                continue;
            }
            last = i;
            if x < w {
                return Ok(i);
            }
            x -= w;
        }
        Ok(last)
    }

    /// Checks that a user whose *distinct* items are `distinct_items` keeps at least one
    /// item with positive weight to draw (exact integer test, no floating-point sums).
    pub fn check_candidates(
        &self,
        user: Id,
        distinct_items: impl IntoIterator<Item = Id>,
    ) -> Result<(), NegativeError> {
        let excluded = distinct_items
            .into_iter()
            .filter(|&i| self.weight(i) > 0.0)
            .count();
        if excluded < self.n_positive {
            Ok(())
        } else {
            Err(NegativeError::NoCandidate {
                user,
                n_items: self.n_items,
            })
        }
    }

    /// Fills `out` with independent negatives for a user whose items are `items`, none of
    /// them in `items`. `mask` must be clear on entry and is clear again on return.
    ///
    /// Picks the cheaper exact method per call from a cost model: rejection sampling against
    /// `mask` (expected `1 / acceptance` draws each, where acceptance is the probability mass
    /// left after excluding `items`), or one cumulative table over the allowed items (built in
    /// `O(n_items)` into `scratch`) and a binary search per draw. Both draw from exactly the
    /// same distribution. Errors when no item can be drawn.
    pub fn fill_excluding(
        &self,
        user: Id,
        items: &[Id],
        mask: &mut ItemMask,
        scratch: &mut ComplementScratch,
        rng: &mut SeqRng,
        out: &mut [Id],
    ) -> Result<(), NegativeError> {
        if out.is_empty() {
            return Ok(());
        }
        let mut excluded = 0.0;
        for &i in items {
            if mask.insert(i) {
                excluded += self.weight(i);
            }
        }
        // Expected cost in rough nanoseconds: rejection needs 1 / acceptance draws of ~5 ns;
        // the table costs ~3 ns per catalogue item to build plus ~30 ns per binary search.
        let acceptance = 1.0 - excluded / self.total_weight;
        let n = out.len() as f64;
        let rejection_cost = 5.0 * n / acceptance.max(1e-9);
        let table_cost = 3.0 * self.n_items as f64 + 30.0 * n;
        let path = if rejection_cost <= table_cost {
            FillPath::Rejection
        } else {
            FillPath::Table
        };
        let result = self.fill_masked(path, user, mask, scratch, rng, out);
        mask.clear_all(items);
        result.map_err(|e| match e {
            NegativeError::NoCandidate { n_items, .. } => {
                NegativeError::NoCandidate { user, n_items }
            }
            e => e,
        })
    }

    /// Fills `out` from the distribution restricted to items not in `mask`, by `path`.
    fn fill_masked(
        &self,
        path: FillPath,
        user: Id,
        mask: &ItemMask,
        scratch: &mut ComplementScratch,
        rng: &mut SeqRng,
        out: &mut [Id],
    ) -> Result<(), NegativeError> {
        match path {
            FillPath::Rejection => out.iter_mut().try_for_each(|x| {
                *x = self.sample(mask, rng)?;
                Ok(())
            }),
            FillPath::Table => {
                scratch.items.clear();
                scratch.cumulative.clear();
                let mut acc = 0.0;
                for i in 1..=self.n_items as Id {
                    let w = self.weight(i);
                    if w > 0.0 && !mask.contains(i) {
                        acc += w;
                        scratch.items.push(i);
                        scratch.cumulative.push(acc);
                    }
                }
                if scratch.items.is_empty() {
                    return Err(NegativeError::NoCandidate {
                        user,
                        n_items: self.n_items,
                    });
                }
                for x in out.iter_mut() {
                    let r = rng.unit_f64() * acc;
                    let k = scratch.cumulative.partition_point(|&c| c <= r);
                    *x = scratch.items[k.min(scratch.items.len() - 1)];
                }
                Ok(())
            }
        }
    }

    /// `n` distinct negatives for one user into `out`, none marked in `mask`. The drawn items
    /// are temporarily marked in `mask` and unmarked again before returning.
    ///
    /// Errors when fewer than `n` items can be drawn.
    pub fn sample_distinct(
        &self,
        user: Id,
        n: usize,
        mask: &mut ItemMask,
        rng: &mut SeqRng,
        out: &mut Vec<Id>,
    ) -> Result<(), NegativeError> {
        out.clear();
        let excluded = mask.iter().filter(|&i| self.weight(i) > 0.0).count();
        let available = self.n_positive - excluded;
        if available < n {
            return Err(NegativeError::TooFewCandidates {
                user,
                available,
                requested: n,
            });
        }
        let mut result = Ok(());
        for _ in 0..n {
            match self.sample(mask, rng) {
                Ok(i) => {
                    mask.insert(i);
                    out.push(i);
                }
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        mask.clear_all(out);
        result
    }
}

/// How [`NegativeSampler::fill_excluding`] draws.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FillPath {
    /// Rejection sampling against the mask.
    Rejection,
    /// A cumulative table over the allowed items and a binary search per draw.
    Table,
}

/// Reusable buffers for [`NegativeSampler::fill_excluding`]'s cumulative-table path.
#[derive(Debug, Clone, Default)]
pub struct ComplementScratch {
    items: Vec<Id>,
    cumulative: Vec<f64>,
}

/// One evaluation case's candidate negatives: `negatives[k * n .. (k + 1) * n]` belong to case `k`.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalNegatives {
    /// Negatives per case.
    pub n: usize,
    /// Flat `[n_cases, n]`, row-major.
    pub negatives: Vec<Id>,
}

impl EvalNegatives {
    /// The negatives of case `k`.
    pub fn of_case(&self, k: usize) -> &[Id] {
        &self.negatives[k * self.n..(k + 1) * self.n]
    }
}

/// The "rank the target against `n` sampled items" candidate sets of the sampled-metrics
/// protocol (SASRec: 100 uniform negatives; BERT4Rec: 100 popularity-weighted ones).
///
/// For each `(user, target)` case, draws `n` *distinct* items the user never interacted with
/// anywhere in `ds` (training, validation and test alike) and that differ from the target.
/// SASRec's reference code (`util.py::evaluate`) is slightly harsher: it excludes only the training
/// items, draws with replacement, and so can offer the validation item (or the target) as a
/// negative; on ML-1M that lowered test NDCG@10 by about 0.004 (`docs/benchmarks.md`).
/// Case `k` uses the random stream `(seed, k)`, so results do not depend on how cases are
/// batched.
///
/// ```
/// use seqrec_data::{Dataset, Distribution, Vocab, sample_eval_negatives};
/// let users = Vocab::from_originals(vec!["u".into()]).unwrap();
/// let items = Vocab::from_originals((0..10).map(|i| i.to_string()).collect()).unwrap();
/// let ds = Dataset::from_sequences(users, items, vec![(vec![1, 2, 3], vec![0, 1, 2])]).unwrap();
/// let neg = sample_eval_negatives(&ds, &[(1, 3)], 5, Distribution::Uniform, 7).unwrap();
/// assert!(neg.of_case(0).iter().all(|&i| i > 3));
/// ```
pub fn sample_eval_negatives(
    ds: &Dataset,
    cases: &[(Id, Id)],
    n: usize,
    dist: Distribution,
    seed: u64,
) -> Result<EvalNegatives, NegativeError> {
    let cases: Vec<(Id, Id, usize)> = cases.iter().map(|&(u, t)| (u, t, usize::MAX)).collect();
    sample_cases(ds, &cases, n, dist, seed, true)
}

/// Candidate negatives drawn as SASRec's reference code draws them (`kang205/SASRec`,
/// `util.py::evaluate`): for each `(user, target, train_len)` case, `n` items drawn *with
/// replacement* that are neither among the user's first `train_len` items (its training history)
/// nor the target. Items after the training history (the validation item, for a test case) can
/// be drawn; the reference code could also draw the target itself, which then ties with it, and
/// here it is drawn again instead (ties have no defined order in the reference). Case `k` uses the
/// random stream `(seed, k)`.
///
/// ```
/// use seqrec_data::{Dataset, Distribution, Vocab, sample_eval_negatives_train_only};
/// let users = Vocab::from_originals(vec!["u".into()]).unwrap();
/// let items = Vocab::from_originals((0..4).map(|i| i.to_string()).collect()).unwrap();
/// // Items 1, 2 are training, 3 the validation item, 4 the test target.
/// let ds = Dataset::from_sequences(users, items, vec![(vec![1, 2, 3, 4], vec![0, 1, 2, 3])]).unwrap();
/// let neg = sample_eval_negatives_train_only(&ds, &[(1, 4, 2)], 20, Distribution::Uniform, 7).unwrap();
/// // Only item 3 is left to draw: twenty times, with replacement.
/// assert_eq!(neg.of_case(0), &[3; 20]);
/// ```
pub fn sample_eval_negatives_train_only(
    ds: &Dataset,
    cases: &[(Id, Id, usize)],
    n: usize,
    dist: Distribution,
    seed: u64,
) -> Result<EvalNegatives, NegativeError> {
    sample_cases(ds, cases, n, dist, seed, false)
}

/// The loop of both evaluation samplers: for each `(user, target, len)` case, `n` items outside the
/// user's first `len` items and the target, `distinct` or with replacement, from the random stream
/// `(seed, k)` of case `k`.
fn sample_cases(
    ds: &Dataset,
    cases: &[(Id, Id, usize)],
    n: usize,
    dist: Distribution,
    seed: u64,
    distinct: bool,
) -> Result<EvalNegatives, NegativeError> {
    let sampler = NegativeSampler::for_dataset(ds, dist)?;
    let mut mask = ItemMask::new(ds.n_items());
    let mut negatives = Vec::with_capacity(cases.len() * n);
    let mut buf = Vec::with_capacity(n);
    for (k, &(user, target, len)) in cases.iter().enumerate() {
        let items = if (user as usize) <= ds.n_users() {
            ds.items_of(user)
        } else {
            &[]
        };
        let excluded = &items[..len.min(items.len())];
        mask.set_all(excluded);
        mask.insert(target);
        let mut rng = SeqRng::new(seed, k as u64);
        let r = if distinct {
            sampler.sample_distinct(user, n, &mut mask, &mut rng, &mut buf)
        } else {
            buf.clear();
            (0..n).try_for_each(|_| sampler.sample(&mask, &mut rng).map(|i| buf.push(i)))
        };
        mask.clear_all(excluded);
        mask.clear_all(&[target]);
        r?;
        negatives.extend_from_slice(&buf);
    }
    Ok(EvalNegatives { n, negatives })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn train_only_negatives_avoid_the_training_items_and_the_target() {
        let users = crate::Vocab::from_originals(vec!["u".into()]).unwrap();
        let items = crate::Vocab::from_originals((0..12).map(|i| i.to_string()).collect()).unwrap();
        let seq: Vec<Id> = (1..=10).collect();
        let times: Vec<i64> = (0..10).collect();
        let ds = Dataset::from_sequences(users, items, vec![(seq, times)]).unwrap();
        // Training items 1..=8, validation item 9, test target 10; items 11 and 12 were never seen.
        let draw = |seed| {
            sample_eval_negatives_train_only(&ds, &[(1, 10, 8)], 300, Distribution::Uniform, seed)
                .unwrap()
        };
        let neg = draw(3);
        assert_eq!(neg, draw(3), "the same seed draws the same negatives");
        let mut counts = [0u32; 13];
        for &i in neg.of_case(0) {
            counts[i as usize] += 1;
        }
        assert!(counts[..=8].iter().all(|&c| c == 0), "{counts:?}");
        assert_eq!(counts[10], 0, "the target is never a negative");
        // With replacement over {9, 11, 12}: each about 100 times, the validation item included.
        for i in [9, 11, 12] {
            assert!((60..140).contains(&counts[i]), "item {i}: {counts:?}");
        }
        // The default sampler excludes the validation item too, and draws distinct items.
        let seen = sample_eval_negatives(&ds, &[(1, 10)], 2, Distribution::Uniform, 3).unwrap();
        let mut s = seen.of_case(0).to_vec();
        s.sort_unstable();
        assert_eq!(s, [11, 12]);
    }

    #[test]
    fn splitmix64_reference_outputs() {
        // Vigna's splitmix64.c seeded with 0 prints these first three values.
        let mut rng = SeqRng { state: 0 };
        assert_eq!(rng.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(rng.next_u64(), 0x6E78_9E6A_A1B9_65F4);
        assert_eq!(rng.next_u64(), 0x06C4_5D18_8009_454F);
        // Our key mixing, pinned when it was written: changing it changes every seeded split,
        // shuffle and negative, so it must be a deliberate, announced change.
        assert_eq!(SeqRng::new(42, 7).next_u64(), 0x1dfa_ba3f_e7f0_3001);
        assert_eq!(SeqRng::keyed(1, 2, 3).below(1000), 0x336);
    }

    #[test]
    fn below_is_uniform_enough() {
        let mut rng = SeqRng::new(1, 2);
        let mut hist = [0u32; 7];
        for _ in 0..70_000 {
            hist[rng.below(7) as usize] += 1;
        }
        // Expected 10,000 each; 5 sigma is about 450.
        assert!(
            hist.iter().all(|&h| (9_500..10_500).contains(&h)),
            "{hist:?}"
        );
    }

    #[test]
    fn alias_matches_weights() {
        // counts^1: item 1 weight 1, item 2 weight 3, item 3 weight 0, item 4 weight 6.
        let s = NegativeSampler::popularity(&[0, 1, 3, 0, 6], 1.0).unwrap();
        let mut rng = SeqRng::new(3, 0);
        let mut hist = [0u32; 5];
        for _ in 0..100_000 {
            hist[s.sample_any(&mut rng) as usize] += 1;
        }
        assert_eq!(hist[0], 0);
        assert_eq!(hist[3], 0);
        // Expected 10,000 / 30,000 / 60,000.
        assert!((9_400..10_600).contains(&hist[1]), "{hist:?}");
        assert!((29_000..31_000).contains(&hist[2]), "{hist:?}");
        assert!((59_000..61_000).contains(&hist[4]), "{hist:?}");
    }

    #[test]
    fn complement_path_matches_restricted_distribution() {
        let s = NegativeSampler::popularity(&[0, 1, 3, 2, 6], 1.0).unwrap();
        let mut mask = ItemMask::new(4);
        mask.set_all(&[4]);
        let mut rng = SeqRng::new(9, 0);
        let mut hist = [0u32; 5];
        for _ in 0..60_000 {
            hist[s.sample_complement(&mask, &mut rng).unwrap() as usize] += 1;
        }
        // Restricted to {1, 2, 3} with weights 1:3:2 -> 10,000 / 30,000 / 20,000.
        assert_eq!(hist[4], 0);
        assert!((9_400..10_600).contains(&hist[1]), "{hist:?}");
        assert!((29_000..31_000).contains(&hist[2]), "{hist:?}");
        assert!((19_200..20_800).contains(&hist[3]), "{hist:?}");
    }

    #[test]
    fn no_candidate_is_an_error_not_a_hang() {
        let s = NegativeSampler::uniform(3).unwrap();
        let mut mask = ItemMask::new(3);
        mask.set_all(&[1, 2, 3]);
        let mut rng = SeqRng::new(0, 0);
        assert!(matches!(
            s.sample(&mask, &mut rng),
            Err(NegativeError::NoCandidate { .. })
        ));
        assert!(s.check_candidates(5, [1, 2, 3]).is_err());
        assert!(s.check_candidates(5, [1, 2]).is_ok());
        let p = NegativeSampler::popularity(&[0, 4, 0, 1], 0.5).unwrap();
        assert!(p.check_candidates(5, [1, 3]).is_err());
        assert!(p.check_candidates(5, [1, 2]).is_ok());
        let mut out = Vec::new();
        mask.clear_all(&[3]);
        assert!(matches!(
            s.sample_distinct(5, 2, &mut mask, &mut rng, &mut out),
            Err(NegativeError::TooFewCandidates {
                available: 1,
                requested: 2,
                ..
            })
        ));
    }

    #[test]
    fn fill_paths_match_restricted_distribution() {
        // Weights 1:3:2:6; excluding {2, 4} leaves {1, 3} with weights 1:2, so 60,000 draws
        // should give about 20,000 / 40,000 on both paths.
        let s = NegativeSampler::popularity(&[0, 1, 3, 2, 6], 1.0).unwrap();
        let mut mask = ItemMask::new(4);
        mask.set_all(&[2, 4]);
        let mut scratch = ComplementScratch::default();
        for path in [FillPath::Rejection, FillPath::Table] {
            let mut rng = SeqRng::new(5, 0);
            let mut out = vec![0; 60_000];
            s.fill_masked(path, 1, &mask, &mut scratch, &mut rng, &mut out)
                .unwrap();
            let mut hist = [0u32; 5];
            out.iter().for_each(|&i| hist[i as usize] += 1);
            assert_eq!(hist[0] + hist[2] + hist[4], 0, "{path:?}");
            assert!((19_200..20_800).contains(&hist[1]), "{path:?} {hist:?}");
        }
    }

    #[test]
    fn fill_excluding_chooses_a_path_and_clears_the_mask() {
        let s = NegativeSampler::uniform(1000).unwrap();
        let mut mask = ItemMask::new(1000);
        let mut scratch = ComplementScratch::default();
        let mut rng = SeqRng::new(5, 0);
        // 999 of 1000 items excluded: the table path, which must find item 1000 every time.
        let items: Vec<Id> = (1..1000).collect();
        let mut out = vec![0; 50];
        s.fill_excluding(3, &items, &mut mask, &mut scratch, &mut rng, &mut out)
            .unwrap();
        assert!(out.iter().all(|&x| x == 1000));
        assert!(mask.is_clear());
        // Few excluded: rejection.
        s.fill_excluding(3, &[1, 2], &mut mask, &mut scratch, &mut rng, &mut out)
            .unwrap();
        assert!(out.iter().all(|&x| x > 2));
        assert!(mask.is_clear());
        let all: Vec<Id> = (1..=1000).collect();
        assert!(matches!(
            s.fill_excluding(9, &all, &mut mask, &mut scratch, &mut rng, &mut out),
            Err(NegativeError::NoCandidate { user: 9, .. })
        ));
        assert!(mask.is_clear());
    }

    proptest::proptest! {
        #[test]
        fn mask_matches_a_set(items in proptest::collection::vec(0u32..200, 0..100)) {
            let mut m = ItemMask::new(150);
            let distinct = m.set_all(&items);
            let set: std::collections::BTreeSet<u32> = items.iter().copied().filter(|&i| i <= 150).collect();
            proptest::prop_assert_eq!(distinct, set.len());
            proptest::prop_assert_eq!(m.iter().collect::<Vec<_>>(), set.iter().copied().collect::<Vec<_>>());
            for i in 0..200 {
                proptest::prop_assert_eq!(m.contains(i), set.contains(&i));
            }
            m.clear_all(&items);
            proptest::prop_assert!(m.is_clear());
        }
    }

    #[test]
    fn bad_alpha_rejected() {
        assert!(NegativeSampler::popularity(&[0, 1], -1.0).is_err());
        assert!(NegativeSampler::popularity(&[0, 1], f64::NAN).is_err());
        assert!(NegativeSampler::popularity(&[0, 0], 1.0).is_err());
    }
}
