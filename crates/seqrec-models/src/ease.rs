//! [`Ease`]: the Embarrassingly Shallow Autoencoder (Steck, WWW 2019), a closed-form item-item model.
//!
//! With `X` the binary `users x items` matrix of the training sequences (`X[u, i] = 1` when user `u`
//! interacted with item `i` at least once), `G = X^T X` and `P = (G + lambda I)^-1`, the weights are
//!
//! ```text
//! B = I - P diagMat(1 / diag(P)),   i.e.   B[i, j] = -P[i, j] / P[j, j]  (i != j),   B[j, j] = 0
//! ```
//!
//! the minimiser of `||X - X B||_F^2 + lambda ||B||_F^2` subject to `diag(B) = 0`. A history `h` (an
//! indicator row over items) scores item `j` with `(h B)[j] = sum over distinct history items i of
//! B[i, j]`. Order inside the history does not matter: EASE is the strong non-sequential baseline.
//!
//! Choices, stated where they are made:
//! - `X` is binary: an item seen twice by a user counts once, in the fit and in scoring.
//! - The model is fit on the training sequences only, like every other model; at test time the history
//!   it scores includes the validation event (what the evaluation batcher passes to every model).
//!   MostPop, by contrast, is refitted on training + validation by the training loop.
//! - `max_history = 0` (the default) means the whole history: the model reports a window one longer
//!   than the longest training sequence, so the test input (training events plus the validation event)
//!   is never cut. A positive value keeps only the most recent `max_history` items, like SASRec.
//! - The Gram matrix is counted from the sparse histories (exact integer counts), `P` is computed in
//!   `f64` by a Cholesky inverse, and `B` is kept in `f32` with a zero padding row and column (id 0), shape
//!   `[n_items + 1, n_items + 1]`, row = history item, column = scored item.
//!
//! The default `lambda = 250` was picked on ML-1M validation (SASRec recipe, leave-one-out, full ranking,
//! history excluded; `cargo xtask train --model ease --data ml-1m --epochs 1 --eval-every 1
//! --set model.lambda=L`). Validation NDCG@10 by `lambda`: 100: 0.05145, 150: 0.05203, **250: 0.05239**,
//! 350: 0.05215, 500: 0.05177, 1000: 0.05068, 2000: 0.04900, 3000: 0.04786, 5000: 0.04653. Test at 250:
//! NDCG@10 0.05299, HR@10 0.10778 (MostPop 0.01781, 0.03626). The optimum is flat: anything in 100..500
//! is within 2% of it. Sequential datasets reward order, which EASE ignores: it is a floor for the
//! sequential models, well above MostPop.
//!
//! The inverse is pure Rust by default ([`crate::spd`]: blocked Cholesky, then `L^-T L^-1`, GEMMs
//! through `matrixmultiply`, in parallel with rayon), so EASE needs no system library. The cargo
//! feature `openblas` (off by default in every crate; needs `apt-get install libopenblas-dev` at build
//! and run time) switches the fit to LAPACK `dpotrf` + `dpotri` through `ndarray-linalg`; the two agree
//! within 1e-9 relative (tests/ease.rs). [`closed_form_reference`] is the naive Gauss-Jordan oracle both
//! are tested against.

use std::borrow::Cow;
use std::path::Path;

use rayon::prelude::*;
use safetensors::tensor::{Dtype, SafeTensors, View};
use seqrec_data::Sequences;
use serde::{Deserialize, Serialize};

use crate::epoch::single_pass;
use crate::model::{EpochReport, Model, ModelError, StepReport};
use crate::persist::{ckpt_err, write_atomic};
use crate::spd::{self, SpdError};

/// File names inside a checkpoint directory.
const WEIGHTS_FILE: &str = "ease.safetensors";
const STATE_FILE: &str = "ease.json";
/// The tensor name of `B` in [`WEIGHTS_FILE`].
const TENSOR: &str = "ease.B";

/// Hyper-parameters of [`Ease`] (`[model]` table with `model = "ease"`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EaseConfig {
    /// L2 regularisation `lambda` added to the diagonal of `X^T X`; must be finite and `> 0`.
    /// Default 250, tuned on ML-1M validation NDCG@10 (table in the [module documentation](self)).
    pub lambda: f64,
    /// History items scored: `0` = the whole history (default), else the most recent `max_history`.
    pub max_history: usize,
}

impl Default for EaseConfig {
    fn default() -> Self {
        Self {
            lambda: 250.0,
            max_history: 0,
        }
    }
}

impl EaseConfig {
    /// Checks `lambda`.
    ///
    /// # Errors
    /// [`ModelError::Config`] naming the field when `lambda` is not finite and positive.
    pub fn validate(&self) -> Result<(), ModelError> {
        if !(self.lambda.is_finite() && self.lambda > 0.0) {
            return Err(ModelError::Config(format!(
                "lambda = {}: must be finite and > 0 (the Gram matrix alone may be singular)",
                self.lambda
            )));
        }
        Ok(())
    }
}

/// What `ease.json` holds beside the weights.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct SavedState {
    format: u32,
    model: String,
    n_items: usize,
    fitted: bool,
    config: EaseConfig,
}

/// EASE: `B` from the closed form, scores `h B`. See the [module documentation](self).
///
/// ```
/// use seqrec_data::{Dataset, Split, Vocab};
/// use seqrec_models::{Ease, EaseConfig, Model};
///
/// let users = Vocab::from_originals(vec!["u1".into(), "u2".into(), "u3".into()]).unwrap();
/// let items = Vocab::from_originals(vec!["a".into(), "b".into(), "c".into()]).unwrap();
/// // Items 1 and 2 always appear together; item 3 never with them.
/// let ds = Dataset::from_sequences(users, items, vec![
///     (vec![1, 2, 1, 2], vec![1, 2, 3, 4]),
///     (vec![2, 1, 2, 1], vec![1, 2, 3, 4]),
///     (vec![3, 3, 3, 3], vec![1, 2, 3, 4]),
/// ]).unwrap();
/// let train = Split::leave_one_out(&ds).train_sequences(&ds).unwrap();
/// let mut ease = Ease::new(EaseConfig { lambda: 1.0, max_history: 0 }, &train).unwrap();
/// ease.train_epoch(&train, 0, &mut |_| {}).unwrap();
/// let mut scores = vec![0.0f32; 4];
/// // Training prefixes (leave-one-out): [1, 2], [2, 1], [3, 3]; window = longest (2) + 1.
/// assert_eq!(ease.max_history(), 3);
/// ease.score(&[0, 0, 1], 1, &mut scores[..]); // history: item 1, left-padded
/// // G = [[2, 2, 0], [2, 2, 0], [0, 0, 1]]: item 2 is item 1's neighbour, B[1, 2] = 2 / (2 + 1).
/// assert!((scores[2] - 2.0 / 3.0).abs() < 1e-6);
/// assert_eq!((scores[1], scores[3]), (0.0, 0.0)); // zero diagonal; item 3 unrelated
/// ```
#[derive(Clone, Debug)]
pub struct Ease {
    config: EaseConfig,
    n_items: usize,
    /// Resolved history window (`config.max_history`, or the longest training sequence + 1).
    window: usize,
    /// `B`, row-major `[n_items + 1, n_items + 1]`, padding row and column zero.
    b: Vec<f32>,
    fitted: bool,
}

impl Ease {
    /// An unfitted model for the catalogue of `train` (`B = 0` until [`Model::train_epoch`]).
    ///
    /// # Errors
    /// [`ModelError::Config`] from [`EaseConfig::validate`].
    pub fn new(config: EaseConfig, train: &Sequences<'_>) -> Result<Self, ModelError> {
        config.validate()?;
        let n = train.n_items();
        let window = if config.max_history > 0 {
            config.max_history
        } else {
            // +1: the test input is the training prefix plus the validation event.
            (0..train.len())
                .map(|k| train.items(k).len())
                .max()
                .unwrap_or(0)
                + 1
        };
        Ok(Self {
            config,
            n_items: n,
            window,
            b: vec![0.0; (n + 1) * (n + 1)],
            fitted: false,
        })
    }

    /// The weights `B`, row-major `[n_items + 1, n_items + 1]` (row: history item, column: scored item;
    /// row and column 0 are padding and zero).
    pub fn weights(&self) -> &[f32] {
        &self.b
    }

    /// Whether the closed form has been computed (or loaded).
    pub fn is_fitted(&self) -> bool {
        self.fitted
    }

    /// Computes `B` from `train` (what [`Model::train_epoch`] does on its first call).
    ///
    /// # Errors
    /// [`ModelError::Data`] when the catalogue of `train` differs from the model's, or when the Cholesky
    /// factorisation meets a pivot that is not finite and positive (the message names the pivot, its
    /// item and its value).
    pub fn fit(&mut self, train: &Sequences<'_>) -> Result<(), ModelError> {
        if train.n_items() != self.n_items {
            return Err(ModelError::Data(format!(
                "EASE was built for {} items, the training sequences have {}",
                self.n_items,
                train.n_items()
            )));
        }
        let p = regularised_inverse(train, self.n_items, self.config.lambda)?;
        self.b = weights_from_inverse(&p, self.n_items);
        self.fitted = true;
        Ok(())
    }
}

/// `B` (with padding row/column, `f32`) from `P` (`[n, n]`, `f64`, row-major):
/// `B[i, j] = -P[i, j] / P[j, j]` for `i != j`, `B[j, j] = 0`.
fn weights_from_inverse(p: &[f64], n: usize) -> Vec<f32> {
    let w = n + 1;
    let mut b = vec![0.0f32; w * w];
    b[w..].par_chunks_mut(w).enumerate().for_each(|(i, row)| {
        for j in 0..n {
            if i != j {
                row[j + 1] = (-p[i * n + j] / p[j * n + j]) as f32;
            }
        }
    });
    b
}

/// Adds the binary Gram matrix `X^T X` of `train` into `g` (`[n_items, n_items]`, row-major, item `i`
/// at index `i - 1`), from the sparse histories: for every user, every ordered pair of its distinct
/// items. ML-1M has 390 M such pairs against 70 G multiply-adds for the dense `X^T X` GEMM: the whole
/// fit went from 7.8 s to 3.9 s (criterion medians, `--bench ease`, load ~12), the rest being the
/// Cholesky inverse. Rows are split into blocks that threads own,
/// so the result does not depend on the thread count (integer counts, exact in `f64`).
fn gram_into(train: &Sequences<'_>, g: &mut [f64]) {
    let n = train.n_items();
    assert_eq!(g.len(), n * n, "gram_into: g must be [n_items, n_items]");
    if n == 0 {
        return;
    }
    // Each user's distinct items, 0-based and sorted, in one flat buffer.
    let mut offsets = vec![0usize];
    let mut flat: Vec<u32> = Vec::with_capacity(train.n_events());
    for k in 0..train.len() {
        let start = flat.len();
        flat.extend(train.items(k).iter().map(|&i| i - 1));
        flat[start..].sort_unstable();
        let mut end = start;
        for r in start..flat.len() {
            if r == start || flat[r] != flat[end - 1] {
                flat[end] = flat[r];
                end += 1;
            }
        }
        flat.truncate(end);
        offsets.push(end);
    }
    let rows_per_block = n.div_ceil(64).max(1);
    g.par_chunks_mut(rows_per_block * n)
        .enumerate()
        .for_each(|(block, rows)| {
            let lo = (block * rows_per_block) as u32;
            let hi = lo + (rows.len() / n) as u32;
            for u in 0..offsets.len() - 1 {
                let items = &flat[offsets[u]..offsets[u + 1]];
                let first = items.partition_point(|&i| i < lo);
                for &i in items[first..].iter().take_while(|&&i| i < hi) {
                    let row = &mut rows[(i - lo) as usize * n..(i - lo + 1) as usize * n];
                    for &j in items {
                        row[j as usize] += 1.0;
                    }
                }
            }
        });
}

/// The binary Gram matrix `X^T X` of `train` (`[n_items, n_items]`, row-major, item `i` at index
/// `i - 1`), by the definition: for every user, every ordered pair of its distinct items. The oracle
/// of the GEMM path.
pub fn gram_reference(train: &Sequences<'_>) -> Vec<f64> {
    let n = train.n_items();
    let mut g = vec![0.0f64; n * n];
    for k in 0..train.len() {
        let mut items: Vec<u32> = train.items(k).to_vec();
        items.sort_unstable();
        items.dedup();
        for &i in &items {
            for &j in &items {
                g[(i as usize - 1) * n + (j as usize - 1)] += 1.0;
            }
        }
    }
    g
}

/// The EASE weights from a Gram matrix by plain Gauss-Jordan elimination with partial pivoting, in
/// `f64`, without padding: `[n, n]` row-major `B` with `B[i, j] = -P[i, j] / P[j, j]`, `B[j, j] = 0`,
/// `P = (G + lambda I)^-1`. `O(n^3)`, for tests only (never optimise it).
///
/// # Panics
/// When `gram.len() != n * n` (a programming error) or `G + lambda I` is singular.
pub fn closed_form_reference(gram: &[f64], n: usize, lambda: f64) -> Vec<f64> {
    assert_eq!(
        gram.len(),
        n * n,
        "closed_form_reference: gram must be [n, n]"
    );
    let mut a = gram.to_vec();
    for i in 0..n {
        a[i * n + i] += lambda;
    }
    let inv = spd::inverse_reference(&a, n);
    let mut b = vec![0.0f64; n * n];
    for i in 0..n {
        for j in 0..n {
            if i != j {
                b[i * n + j] = -inv[i * n + j] / inv[j * n + j];
            }
        }
    }
    b
}

/// `P = (X^T X + lambda I)^-1`, `[n, n]` row-major `f64`: the pure-Rust blocked Cholesky inverse
/// ([`crate::spd`]) by default, LAPACK with the `openblas` cargo feature.
fn regularised_inverse(
    train: &Sequences<'_>,
    n: usize,
    lambda: f64,
) -> Result<Vec<f64>, ModelError> {
    let mut a = vec![0.0f64; n * n];
    gram_into(train, &mut a);
    for i in 0..n {
        a[i * n + i] += lambda;
    }
    // G + lambda I is symmetric positive definite for lambda > 0: a Cholesky inverse. A failing pivot
    // can only come from rounding or non-finite counts; it is reported, never turned into NaN weights.
    #[cfg(not(feature = "openblas"))]
    let p = spd::spd_inverse_in_place(&mut a, n).map(|()| a);
    #[cfg(feature = "openblas")]
    let p = spd::spd_inverse_lapack(a, n);
    p.map_err(|e| match e {
        SpdError::NotPositiveDefinite { pivot, value } => ModelError::Data(format!(
            "EASE: X^T X + {lambda} I is not positive definite: Cholesky pivot {pivot} (item {}) is \
             {value}",
            pivot + 1
        )),
        #[allow(unreachable_patterns)]
        e => ModelError::Data(format!("EASE: inverse of X^T X + {lambda} I failed: {e}")),
    })
}

/// Little-endian `f32` bytes of `B` as a safetensors view.
struct WeightsView<'a> {
    shape: [usize; 2],
    data: Vec<u8>,
    _b: std::marker::PhantomData<&'a ()>,
}

impl View for &WeightsView<'_> {
    fn dtype(&self) -> Dtype {
        Dtype::F32
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.data)
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}

impl Model for Ease {
    fn name(&self) -> &'static str {
        "ease"
    }

    /// The closed form is computed by the first epoch; later epochs would change nothing.
    fn epochs_needed(&self) -> Option<usize> {
        Some(1)
    }

    fn n_items(&self) -> usize {
        self.n_items
    }

    fn max_history(&self) -> usize {
        self.window
    }

    /// Computes the closed form on the first call and does nothing afterwards (EASE has no epochs; the
    /// training loop stops after one through [`Model::epochs_needed`]). The reported loss is 0: there
    /// is no iterative objective to follow.
    fn train_epoch(
        &mut self,
        train: &Sequences<'_>,
        _epoch: usize,
        on_step: &mut dyn FnMut(&StepReport),
    ) -> Result<EpochReport, ModelError> {
        if !self.fitted {
            self.fit(train)?;
        }
        Ok(single_pass(train.len(), on_step))
    }

    fn score(&mut self, histories: &[u32], batch: usize, scores: &mut [f32]) {
        let (l, w) = (self.window, self.n_items + 1);
        assert_eq!(
            histories.len(),
            batch * l,
            "Ease::score: histories must be [batch, max_history]"
        );
        assert_eq!(
            scores.len(),
            batch * w,
            "Ease::score: scores must be [batch, n_items + 1]"
        );
        let b = &self.b;
        scores
            .par_chunks_mut(w)
            .zip(histories.par_chunks(l))
            .for_each(|(row, hist)| {
                row.fill(0.0);
                let mut items: Vec<u32> = hist.iter().copied().filter(|&i| i != 0).collect();
                items.sort_unstable();
                items.dedup();
                for i in items {
                    let i = i as usize;
                    assert!(i < w, "Ease::score: item id {i} out of range");
                    for (s, &x) in row.iter_mut().zip(&b[i * w..(i + 1) * w]) {
                        *s += x;
                    }
                }
            });
    }

    fn save(&self, dir: &Path) -> Result<(), ModelError> {
        std::fs::create_dir_all(dir).map_err(|e| ckpt_err(dir, e))?;
        let path = dir.join(WEIGHTS_FILE);
        let w = self.n_items + 1;
        let view = WeightsView {
            shape: [w, w],
            data: self.b.iter().flat_map(|x| x.to_le_bytes()).collect(),
            _b: std::marker::PhantomData,
        };
        let bytes =
            safetensors::serialize([(TENSOR, &view)], None).map_err(|e| ckpt_err(&path, e))?;
        write_atomic(&path, &bytes)?;
        let state = SavedState {
            format: 1,
            model: "ease".into(),
            n_items: self.n_items,
            fitted: self.fitted,
            config: self.config.clone(),
        };
        let path = dir.join(STATE_FILE);
        let json = serde_json::to_vec_pretty(&state).map_err(|e| ckpt_err(&path, e))?;
        write_atomic(&path, &json)
    }

    /// Loads `B` (and whether it was fitted); `lambda` and `max_history` stay those of this model's
    /// config, but a checkpoint of another catalogue size is refused.
    fn load(&mut self, dir: &Path) -> Result<(), ModelError> {
        let path = dir.join(STATE_FILE);
        let bytes = std::fs::read(&path).map_err(|e| ckpt_err(&path, e))?;
        let state: SavedState = serde_json::from_slice(&bytes).map_err(|e| ckpt_err(&path, e))?;
        if state.model != "ease" || state.format != 1 {
            return Err(ckpt_err(
                &path,
                format!(
                    "not an EASE checkpoint of format 1 (model {:?}, format {})",
                    state.model, state.format
                ),
            ));
        }
        if state.n_items != self.n_items {
            return Err(ckpt_err(
                &path,
                format!(
                    "checkpoint has {} items, the model {}",
                    state.n_items, self.n_items
                ),
            ));
        }
        let path = dir.join(WEIGHTS_FILE);
        let buffer = std::fs::read(&path).map_err(|e| ckpt_err(&path, e))?;
        let st = SafeTensors::deserialize(&buffer).map_err(|e| ckpt_err(&path, e))?;
        let names = st.names();
        if names.len() != 1 || names[0] != TENSOR {
            return Err(ckpt_err(
                &path,
                format!("expected exactly the tensor {TENSOR:?}, found {names:?}"),
            ));
        }
        let t = st.tensor(TENSOR).map_err(|e| ckpt_err(&path, e))?;
        let w = self.n_items + 1;
        if t.dtype() != Dtype::F32 || t.shape() != [w, w] {
            return Err(ckpt_err(
                &path,
                format!(
                    "{TENSOR}: expected F32 [{w}, {w}], found {:?} {:?}",
                    t.dtype(),
                    t.shape()
                ),
            ));
        }
        self.b = t
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        self.fitted = state.fitted;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use seqrec_data::{Dataset, Vocab};

    fn dataset(seqs: Vec<Vec<u32>>, n_items: usize) -> Dataset {
        let users =
            Vocab::from_originals((0..seqs.len()).map(|u| format!("u{u}")).collect()).unwrap();
        let items = Vocab::from_originals((0..n_items).map(|i| format!("i{i}")).collect()).unwrap();
        let rows = seqs
            .into_iter()
            .map(|s| {
                let t = (0..s.len() as i64).collect();
                (s, t)
            })
            .collect();
        Dataset::from_sequences(users, items, rows).unwrap()
    }

    #[test]
    fn reference_two_items_matches_hand_formula() {
        // G = [[a, c], [c, b]]: P = adj / det, so B[0, 1] = -P01 / P11 = c / (a + lambda) and
        // B[1, 0] = c / (b + lambda).
        let (a, b, c, lambda) = (3.0, 5.0, 2.0, 1.5);
        let w = closed_form_reference(&[a, c, c, b], 2, lambda);
        assert_eq!(w[0], 0.0);
        assert_eq!(w[3], 0.0);
        assert!((w[1] - c / (a + lambda)).abs() < 1e-15);
        assert!((w[2] - c / (b + lambda)).abs() < 1e-15);
    }

    #[test]
    fn gram_reference_counts_distinct_co_occurrences() {
        // User 0: items 1, 2, 1 (item 1 twice counts once); user 1: items 2, 3.
        let ds = dataset(vec![vec![1, 2, 1], vec![2, 3]], 3);
        let g = gram_reference(&Sequences::all(&ds));
        assert_eq!(g, vec![1.0, 1.0, 0.0, 1.0, 2.0, 1.0, 0.0, 1.0, 1.0]);
    }

    #[test]
    fn sparse_gram_equals_the_reference_across_row_blocks() {
        // 150 items: 64 blocks of 3 rows (the last ones empty), users of 1..40 items with repeats.
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = |m: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % m
        };
        let seqs: Vec<Vec<u32>> = (0..60)
            .map(|_| {
                let len = 1 + next(40) as usize;
                (0..len).map(|_| 1 + next(150) as u32).collect()
            })
            .collect();
        let ds = dataset(seqs, 150);
        let seqs = Sequences::all(&ds);
        let mut g = vec![0.0; 150 * 150];
        gram_into(&seqs, &mut g);
        assert_eq!(g, gram_reference(&seqs));
        assert!(g.iter().sum::<f64>() > 60.0);
    }

    #[test]
    fn invalid_lambda_is_a_config_error() {
        for lambda in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let err = EaseConfig {
                lambda,
                max_history: 0,
            }
            .validate()
            .unwrap_err();
            assert!(matches!(err, ModelError::Config(m) if m.contains("lambda")));
        }
    }

    #[test]
    fn whole_history_window_covers_the_longest_sequence_plus_one() {
        let ds = dataset(vec![vec![1, 2, 1], vec![2, 3], vec![3]], 3);
        let seqs = Sequences::all(&ds);
        let m = Ease::new(EaseConfig::default(), &seqs).unwrap();
        assert_eq!(m.max_history(), 4);
        let m = Ease::new(
            EaseConfig {
                lambda: 1.0,
                max_history: 7,
            },
            &seqs,
        )
        .unwrap();
        assert_eq!(m.max_history(), 7);
    }
}
