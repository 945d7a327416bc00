//! Row softmax and log-softmax over the last axis, with masks, and their backward passes.
//!
//! A tensor `x` of shape `[.., q, k]` is a stack of `batch = rows / q` score matrices of `q` query rows by
//! `k` keys (for a rank-1 tensor `q = 1`). A [`Mask`] removes entries before normalising.
//!
//! **Fully masked rows**: softmax writes zeros (never NaN: a query with no visible key, e.g. a left-padded
//! position under a causal + key-padding mask, attends to nothing). Log-softmax writes `-inf` in masked
//! entries (the log of softmax's exact 0), so a fully masked row is all `-inf`, never NaN; its backward
//! gives 0 gradient there.

use rayon::prelude::*;

use crate::dropout::{DropoutKey, dropout_slice};
use crate::par::for_row_chunks;
use crate::simd;
use crate::tensor::assert_same_shape;
use crate::{Float, Tensor};

/// Which entries of a softmax input take part. `keep` flags are `true` for visible entries.
#[derive(Clone, Copy, Debug)]
pub enum Mask<'a, T> {
    /// Every entry is visible.
    None,
    /// `scores + mask` before normalising; `-inf` removes an entry. Shape `[k]` (one row for all rows),
    /// `[q, k]` (broadcast over the batch) or exactly `x`'s shape.
    Additive(&'a Tensor<T>),
    /// Per-entry keep flags, row-major, laid out like `Additive`: length `k`, `q * k` or `x.numel()`.
    Keep(&'a [bool]),
    /// Query row `i` sees keys `j <= i + (k - q)` (plain lower-triangular when `q == k`).
    Causal,
    /// Key-padding keep flags `[n, k]`: matrix `b` of the batch uses flag row `b / (batch / n)`, so for
    /// scores `[B, H, q, k]` (or `[B * H, q, k]`) pass the `[B, k]` flags of the B sequences.
    KeyPadding(&'a [bool]),
    /// [`Mask::Causal`] and [`Mask::KeyPadding`] together (SASRec self-attention with left padding).
    CausalKeyPadding(&'a [bool]),
}

/// The mask of one row, resolved: visible entries are `j < limit` with `keep[j]` (if any), and `add[j]`
/// (if any) is added to the score.
struct RowMask<'a, T> {
    add: Option<&'a [T]>,
    keep: Option<&'a [bool]>,
    limit: usize,
}

/// A mask checked against `x`'s shape once; hands out per-row masks.
struct Resolved<'a, T> {
    mask: Mask<'a, T>,
    q: usize,
    k: usize,
    /// Rows of the broadcast mask (Additive / Keep).
    mask_rows: usize,
    /// Matrices per key-padding row.
    group: usize,
}

impl<'a, T: Float> Resolved<'a, T> {
    #[track_caller]
    fn new(op: &str, mask: Mask<'a, T>, shape: &[usize]) -> Self {
        let k = shape.last().copied().unwrap_or(1);
        let q = if shape.len() >= 2 {
            shape[shape.len() - 2]
        } else {
            1
        };
        let rows: usize = if shape.is_empty() {
            1
        } else {
            shape[..shape.len() - 1].iter().product()
        };
        let batch = rows.checked_div(q).unwrap_or(0);
        let mut r = Resolved {
            mask,
            q,
            k,
            mask_rows: 1,
            group: 1,
        };
        let check_rows = |mr: usize, what: &str| {
            assert!(
                mr == 1 || mr == q || mr == rows,
                "{op}: mask shape mismatch: x has shape {shape:?} (rows {rows}, q {q}, k {k}) but the {what} \
                 mask has {mr} rows of {k}; need 1, q or all rows"
            );
        };
        match mask {
            Mask::None => {}
            Mask::Additive(m) => {
                assert!(
                    m.cols() == k,
                    "{op}: mask shape mismatch: x has shape {shape:?} but the additive mask has shape {:?} \
                     (last axes must agree)",
                    m.shape()
                );
                check_rows(m.rows(), "additive");
                r.mask_rows = m.rows();
            }
            Mask::Keep(keep) => {
                assert!(
                    k > 0 && keep.len() % k == 0,
                    "{op}: mask shape mismatch: x has shape {shape:?} but the keep mask has length {}, not a \
                     multiple of {k}",
                    keep.len()
                );
                check_rows(keep.len() / k, "keep");
                r.mask_rows = keep.len() / k;
            }
            Mask::Causal => {}
            Mask::KeyPadding(keep) | Mask::CausalKeyPadding(keep) => {
                let n = keep.len().checked_div(k).unwrap_or(0);
                assert!(
                    k > 0 && keep.len() % k == 0 && n > 0 && batch % n == 0,
                    "{op}: mask shape mismatch: x has shape {shape:?} ({batch} matrices of [{q}, {k}]) but the \
                     key-padding mask has length {}: need [n, {k}] with n dividing {batch}",
                    keep.len()
                );
                r.group = batch / n;
            }
        }
        if matches!(mask, Mask::Causal | Mask::CausalKeyPadding(_)) {
            assert!(
                q <= k,
                "{op}: causal mask needs q <= k but x has shape {shape:?} (q {q}, k {k})"
            );
        }
        r
    }

    #[inline]
    fn row(&self, r: usize) -> RowMask<'a, T> {
        let (q, k) = (self.q, self.k);
        let causal_limit = |r: usize| (r % q) + 1 + (k - q);
        match self.mask {
            Mask::None => RowMask {
                add: None,
                keep: None,
                limit: k,
            },
            Mask::Additive(m) => {
                let mr = r % self.mask_rows;
                RowMask {
                    add: Some(&m.as_slice()[mr * k..(mr + 1) * k]),
                    keep: None,
                    limit: k,
                }
            }
            Mask::Keep(keep) => {
                let mr = r % self.mask_rows;
                RowMask {
                    add: None,
                    keep: Some(&keep[mr * k..(mr + 1) * k]),
                    limit: k,
                }
            }
            Mask::Causal => RowMask {
                add: None,
                keep: None,
                limit: causal_limit(r),
            },
            Mask::KeyPadding(keep) => {
                let g = r / q / self.group;
                RowMask {
                    add: None,
                    keep: Some(&keep[g * k..(g + 1) * k]),
                    limit: k,
                }
            }
            Mask::CausalKeyPadding(keep) => {
                let g = r / q / self.group;
                RowMask {
                    add: None,
                    keep: Some(&keep[g * k..(g + 1) * k]),
                    limit: causal_limit(r),
                }
            }
        }
    }
}

/// Masked score of entry `j`, or `None` when it is masked out.
#[inline(always)]
fn masked_score<T: Float>(rm: &RowMask<'_, T>, xr: &[T], j: usize) -> Option<T> {
    if j >= rm.limit {
        return None;
    }
    if let Some(keep) = rm.keep
        && !keep[j]
    {
        return None;
    }
    let v = match rm.add {
        Some(add) => xr[j] + add[j],
        None => xr[j],
    };
    if v == T::NEG_INFINITY { None } else { Some(v) }
}

/// Writes `exp(v - max)` of visible entries (0 elsewhere) into `out` and returns `(max, sum)`;
/// `max == -inf` when the row is fully masked.
#[inline(always)]
fn exp_row<T: Float>(rm: &RowMask<'_, T>, xr: &[T], out: &mut [T]) -> (T, T) {
    if rm.add.is_none() && rm.keep.is_none() {
        // Unmasked prefix (no mask, or causal): the vectorised kernel.
        let (mx, sum) = simd::exp_shift_sum(&xr[..rm.limit], &mut out[..rm.limit]);
        out[rm.limit..].fill(T::ZERO);
        return (mx, sum);
    }
    let mut mx = T::NEG_INFINITY;
    for j in 0..xr.len() {
        if let Some(v) = masked_score(rm, xr, j) {
            mx = mx.max(v);
        }
    }
    if mx == T::NEG_INFINITY {
        return (mx, T::ZERO);
    }
    let mut sum = T::ZERO;
    for (j, o) in out.iter_mut().enumerate() {
        *o = match masked_score(rm, xr, j) {
            Some(v) => {
                let e = (v - mx).exp_fast();
                sum += e;
                e
            }
            None => T::ZERO,
        };
    }
    (mx, sum)
}

/// Row softmax over the last axis: `y[r, j] = exp(s[r, j]) / sum_j' exp(s[r, j'])` over visible entries,
/// with `s = x (+ additive mask)`; masked entries and fully masked rows are 0.
///
/// - `out`, `x`: `[.., q, k]` (same shape); `mask`: see [`Mask`].
///
/// # Panics
/// If the shapes of `out`, `x` or the mask disagree (the message names them).
#[track_caller]
pub fn softmax_forward<T: Float>(out: &mut Tensor<T>, x: &Tensor<T>, mask: Mask<'_, T>) {
    assert_same_shape("softmax_forward", "out", out.shape(), "x", x.shape());
    let res = Resolved::new("softmax_forward", mask, x.shape());
    let k = x.cols();
    let xs = x.as_slice();
    for_row_chunks(out.as_mut_slice(), k, |r0, chunk| {
        for (i, orow) in chunk.chunks_exact_mut(k).enumerate() {
            let r = r0 + i;
            let xr = &xs[r * k..(r + 1) * k];
            let (mx, sum) = exp_row(&res.row(r), xr, orow);
            if mx == T::NEG_INFINITY {
                orow.fill(T::ZERO);
            } else {
                simd::scale_row(orow, T::ONE / sum);
            }
        }
    });
}

/// In-place [`softmax_forward`]: `x` is replaced by its softmax (attention scores become probabilities).
#[track_caller]
pub fn softmax_inplace<T: Float>(x: &mut Tensor<T>, mask: Mask<'_, T>) {
    let res = Resolved::new("softmax_inplace", mask, x.shape());
    let k = x.cols();
    for_row_chunks(x.as_mut_slice(), k, |r0, chunk| {
        for (i, row) in chunk.chunks_exact_mut(k).enumerate() {
            let rm = res.row(r0 + i);
            // Masked scores are needed again below only through `masked_score`, which reads the input:
            // compute into the row in two passes (max, then exp), reading each score before overwriting it.
            let mut mx = T::NEG_INFINITY;
            for j in 0..k {
                if let Some(v) = masked_score(&rm, row, j) {
                    mx = mx.max(v);
                }
            }
            if mx == T::NEG_INFINITY {
                row.fill(T::ZERO);
                continue;
            }
            let mut sum = T::ZERO;
            for j in 0..k {
                let e = match masked_score(&rm, row, j) {
                    Some(v) => (v - mx).exp_fast(),
                    None => T::ZERO,
                };
                row[j] = e;
                sum += e;
            }
            let inv = T::ONE / sum;
            row.iter_mut().for_each(|o| *o *= inv);
        }
    });
}

/// Backward of softmax from its output: `dx = y * (dy - sum_j dy_j y_j)` per row (masked entries have
/// `y = 0`, so they get 0; so do fully masked rows). Writes `dx` (`=`).
///
/// - `dx`, `dy`, `y`: `[.., k]`, same shape.
#[track_caller]
pub fn softmax_backward<T: Float>(dx: &mut Tensor<T>, dy: &Tensor<T>, y: &Tensor<T>) {
    assert_same_shape("softmax_backward", "dy", dy.shape(), "y", y.shape());
    assert_same_shape("softmax_backward", "dx", dx.shape(), "y", y.shape());
    let k = y.cols();
    let (dys, ys) = (dy.as_slice(), y.as_slice());
    for_row_chunks(dx.as_mut_slice(), k, |r0, chunk| {
        for (i, dxr) in chunk.chunks_exact_mut(k).enumerate() {
            let r = r0 + i;
            simd::softmax_bwd_row(dxr, &dys[r * k..(r + 1) * k], &ys[r * k..(r + 1) * k]);
        }
    });
}

/// Row log-softmax over the last axis: `y = s - max - ln(sum exp(s - max))` over visible entries;
/// masked entries are `-inf` (a fully masked row is all `-inf`, never NaN).
///
/// - `out`, `x`: `[.., q, k]`; `mask`: see [`Mask`].
#[track_caller]
pub fn log_softmax_forward<T: Float>(out: &mut Tensor<T>, x: &Tensor<T>, mask: Mask<'_, T>) {
    assert_same_shape("log_softmax_forward", "out", out.shape(), "x", x.shape());
    let res = Resolved::new("log_softmax_forward", mask, x.shape());
    let k = x.cols();
    let xs = x.as_slice();
    for_row_chunks(out.as_mut_slice(), k, |r0, chunk| {
        for (i, orow) in chunk.chunks_exact_mut(k).enumerate() {
            let r = r0 + i;
            let rm = res.row(r);
            let xr = &xs[r * k..(r + 1) * k];
            let (mx, sum) = exp_row(&rm, xr, orow);
            if mx == T::NEG_INFINITY {
                orow.fill(T::NEG_INFINITY);
                continue;
            }
            let shift = mx + sum.ln();
            if rm.add.is_none() && rm.keep.is_none() {
                simd::shift_row(&mut orow[..rm.limit], &xr[..rm.limit], shift);
                orow[rm.limit..].fill(T::NEG_INFINITY);
                continue;
            }
            for (j, o) in orow.iter_mut().enumerate() {
                *o = match masked_score(&rm, xr, j) {
                    Some(v) => v - shift,
                    None => T::NEG_INFINITY,
                };
            }
        }
    });
}

/// Backward of log-softmax from its output: `dx_j = dy_j - exp(y_j) * sum_j' dy_j'` over visible entries
/// (`y > -inf`); masked entries get 0. Writes `dx` (`=`).
///
/// - `dx`, `dy`, `y`: `[.., k]`, same shape.
#[track_caller]
pub fn log_softmax_backward<T: Float>(dx: &mut Tensor<T>, dy: &Tensor<T>, y: &Tensor<T>) {
    assert_same_shape("log_softmax_backward", "dy", dy.shape(), "y", y.shape());
    assert_same_shape("log_softmax_backward", "dx", dx.shape(), "y", y.shape());
    let k = y.cols();
    let (dys, ys) = (dy.as_slice(), y.as_slice());
    for_row_chunks(dx.as_mut_slice(), k, |r0, chunk| {
        for (i, dxr) in chunk.chunks_exact_mut(k).enumerate() {
            let r = r0 + i;
            simd::log_softmax_bwd_row(dxr, &dys[r * k..(r + 1) * k], &ys[r * k..(r + 1) * k]);
        }
    });
}

/// Matrices per rayon task of the causal kernels below (each is `t * t` elements).
const CAUSAL_PAR_MIN: usize = 1 << 15;

/// The first visible key of matrix `i` of `n` (left padding), from per-sequence offsets.
#[inline]
fn first_of(first: Option<&[usize]>, i: usize, n: usize) -> usize {
    match first {
        Some(f) => f[i / (n / f.len())],
        None => 0,
    }
}

#[track_caller]
fn check_causal(op: &str, shape: &[usize], first: Option<&[usize]>) -> (usize, usize) {
    let t = shape.last().copied().unwrap_or(0);
    assert!(
        shape.len() >= 2 && shape[shape.len() - 2] == t,
        "{op}: need square [.., t, t] matrices, got {shape:?}"
    );
    let n = if t == 0 {
        0
    } else {
        shape.iter().product::<usize>() / (t * t)
    };
    if let Some(f) = first {
        assert!(
            !f.is_empty() && n % f.len() == 0 && f.iter().all(|&l| l <= t),
            "{op}: first has {} offsets (each <= {t}); need a divisor of the {n} matrices",
            f.len()
        );
    }
    (n, t)
}

/// Causal softmax of each `[t, t]` score matrix in place, fused with inverted dropout of the result.
///
/// Row `r` of a matrix whose sequence has its first real position at `lo` (left padding; `first`
/// gives `lo` per sequence, matrices `[B, H, t, t]` map to sequence `i / H`; `None`: `lo = 0`) is the
/// softmax over keys `lo..=r`, 0 elsewhere; rows `r < lo` see no key and are all 0. That is exactly
/// [`softmax_inplace`] with [`Mask::CausalKeyPadding`] for left-padded keep flags (or [`Mask::Causal`]).
///
/// `drop = Some((probs_drop, p, key))` also writes `probs_drop = dropout(probs)` with the mask
/// [`crate::dropout_forward`] draws for `key` over the whole tensor (flat indices), hashing only the
/// visible entries; other entries are 0.
///
/// # Panics
/// If the matrices are not square, `first` does not divide them, or the shapes differ.
#[track_caller]
pub fn causal_softmax_dropout<T: Float>(
    probs: &mut Tensor<T>,
    first: Option<&[usize]>,
    drop: Option<(&mut Tensor<T>, f64, DropoutKey)>,
) {
    let (n, t) = check_causal("causal_softmax_dropout", probs.shape(), first);
    if let Some((pd, ..)) = &drop {
        assert_same_shape(
            "causal_softmax_dropout",
            "probs_drop",
            pd.shape(),
            "probs",
            probs.shape(),
        );
    }
    if n == 0 {
        return;
    }
    let per = t * t;
    let row = |i: usize,
               r: usize,
               scratch: &mut [T],
               pr: &mut [T],
               dr: Option<(&mut [T], f64, DropoutKey)>| {
        let lo = first_of(first, i, n);
        if r < lo {
            pr.fill(T::ZERO);
            if let Some((d, ..)) = dr {
                d.fill(T::ZERO);
            }
            return;
        }
        let vis = r + 1 - lo;
        // exp(s - max) into the row (in place: the scores go through a copy)
        scratch[..vis].copy_from_slice(&pr[lo..=r]);
        let (mx, sum) = simd::exp_shift_sum(&scratch[..vis], &mut pr[lo..=r]);
        pr[..lo].fill(T::ZERO);
        pr[r + 1..].fill(T::ZERO);
        if mx == T::NEG_INFINITY {
            pr.fill(T::ZERO);
        } else {
            simd::scale_row(&mut pr[lo..=r], T::ONE / sum);
        }
        if let Some((d, p, key)) = dr {
            let start = (i * per + r * t + lo) as u64;
            dropout_slice(&mut d[lo..=r], &pr[lo..=r], p, key, start);
            d[..lo].fill(T::ZERO);
            d[r + 1..].fill(T::ZERO);
        }
    };
    let ps = probs.as_mut_slice();
    match drop {
        Some((pd, p, key)) => {
            let ds = pd.as_mut_slice();
            assert_eq!(
                ds.len(),
                ps.len(),
                "causal_softmax_dropout: probs_drop shape"
            );
            let f = |(i, (pm, dm)): (usize, (&mut [T], &mut [T]))| {
                let mut scratch = vec![T::ZERO; t];
                for (r, (pr, dr)) in pm
                    .chunks_exact_mut(t)
                    .zip(dm.chunks_exact_mut(t))
                    .enumerate()
                {
                    row(i, r, &mut scratch, pr, Some((dr, p, key)));
                }
            };
            if ps.len() < CAUSAL_PAR_MIN {
                ps.chunks_mut(per)
                    .zip(ds.chunks_mut(per))
                    .enumerate()
                    .for_each(f);
            } else {
                ps.par_chunks_mut(per)
                    .zip(ds.par_chunks_mut(per))
                    .enumerate()
                    .for_each(f);
            }
        }
        None => {
            let f = |(i, pm): (usize, &mut [T])| {
                let mut scratch = vec![T::ZERO; t];
                for (r, pr) in pm.chunks_exact_mut(t).enumerate() {
                    row(i, r, &mut scratch, pr, None);
                }
            };
            if ps.len() < CAUSAL_PAR_MIN {
                ps.chunks_mut(per).enumerate().for_each(f);
            } else {
                ps.par_chunks_mut(per).enumerate().for_each(f);
            }
        }
    }
}

/// Backward of [`causal_softmax_dropout`] without the dropout mask: from the probabilities `probs` and
/// their dropout `probs_drop` (`None` without dropout),
/// `dscores = probs_drop * dprobs_drop - probs * sum(dprobs_drop * probs_drop)` per row (the softmax
/// backward of `mask / (1 - p) * dprobs_drop`, since `probs_drop = probs * mask / (1 - p)`), over the
/// visible keys `lo..=r`; other entries and rows `r < lo` are 0. Writes `dscores` (`=`).
///
/// # Panics
/// If shapes differ or `first` does not divide the matrices.
#[track_caller]
pub fn causal_softmax_dropout_backward<T: Float>(
    dscores: &mut Tensor<T>,
    dprobs_drop: &Tensor<T>,
    probs: &Tensor<T>,
    probs_drop: Option<&Tensor<T>>,
    first: Option<&[usize]>,
) {
    let op = "causal_softmax_dropout_backward";
    let (n, t) = check_causal(op, probs.shape(), first);
    assert_same_shape(op, "dscores", dscores.shape(), "probs", probs.shape());
    assert_same_shape(
        op,
        "dprobs_drop",
        dprobs_drop.shape(),
        "probs",
        probs.shape(),
    );
    let pd = probs_drop.unwrap_or(probs);
    assert_same_shape(op, "probs_drop", pd.shape(), "probs", probs.shape());
    if n == 0 {
        return;
    }
    let per = t * t;
    let (gs, ps, pds) = (dprobs_drop.as_slice(), probs.as_slice(), pd.as_slice());
    let f = |(i, dm): (usize, &mut [T])| {
        let lo = first_of(first, i, n);
        for (r, dr) in dm.chunks_exact_mut(t).enumerate() {
            if r < lo {
                dr.fill(T::ZERO);
                continue;
            }
            let b = i * per + r * t;
            let (a, e) = (b + lo, b + r + 1);
            simd::softmax_dropout_bwd_row(&mut dr[lo..=r], &gs[a..e], &ps[a..e], &pds[a..e]);
            dr[..lo].fill(T::ZERO);
            dr[r + 1..].fill(T::ZERO);
        }
    };
    let ds = dscores.as_mut_slice();
    if ds.len() < CAUSAL_PAR_MIN {
        ds.chunks_mut(per).enumerate().for_each(f);
    } else {
        ds.par_chunks_mut(per).enumerate().for_each(f);
    }
}

#[cfg(test)]
mod causal_tests {
    use super::*;
    use crate::{dropout_backward, dropout_forward};

    /// Left-padded keep flags for `lens` (0: all padding).
    fn left_padded(lens: &[usize], t: usize) -> (Vec<bool>, Vec<usize>) {
        let mut keep = vec![false; lens.len() * t];
        for (b, &l) in lens.iter().enumerate() {
            keep[b * t + t - l..(b + 1) * t].fill(true);
        }
        (keep, lens.iter().map(|&l| t - l).collect())
    }

    fn scores(n: usize, seed: u64) -> Vec<f64> {
        (0..n)
            .map(|i| (splitmix(i as u64 ^ seed) % 2000) as f64 / 300.0 - 3.0)
            .collect()
    }

    fn splitmix(i: u64) -> u64 {
        crate::splitmix64(i)
    }

    fn close(a: &[f64], b: &[f64], what: &str) {
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!(
                (x - y).abs() <= 1e-12 * (1.0 + y.abs()),
                "{what}[{i}]: {x} vs {y}"
            );
        }
    }

    /// The fused kernel equals softmax_inplace (causal + key padding) then dropout_forward, and its
    /// mask-free backward equals dropout_backward then softmax_backward, with all-padding rows, length-1
    /// rows, heads > 1 and t not a multiple of 8.
    #[test]
    fn fused_causal_softmax_dropout_matches_unfused() {
        let key = DropoutKey { seed: 9, step: 4 };
        for (lens, t, h) in [
            (vec![0usize, 1, 5, 13], 13, 1),
            (vec![3, 0, 70, 1, 33], 70, 2),
            (vec![1], 1, 3),
        ] {
            let b = lens.len();
            let (keep, first) = left_padded(&lens, t);
            let shape = [b, h, t, t];
            let x = Tensor::from_vec(&shape, scores(b * h * t * t, 1)).unwrap();
            for p in [0.0, 0.3] {
                let mut want = x.clone();
                softmax_inplace(&mut want, Mask::CausalKeyPadding(&keep));
                let mut want_d = Tensor::zeros(&shape);
                dropout_forward(&mut want_d, &want, p, key);
                let mut got = x.clone();
                let mut got_d = Tensor::full(&shape, f64::NAN);
                let drop = (p > 0.0).then_some((&mut got_d, p, key));
                causal_softmax_dropout(&mut got, Some(&first), drop);
                close(got.as_slice(), want.as_slice(), "probs");
                if p > 0.0 {
                    close(got_d.as_slice(), want_d.as_slice(), "probs_drop");
                }
                // backward
                let g = Tensor::from_vec(&shape, scores(b * h * t * t, 2)).unwrap();
                let mut dp = Tensor::zeros(&shape);
                dropout_backward(&mut dp, &g, p, key);
                let mut want_ds = Tensor::zeros(&shape);
                softmax_backward(&mut want_ds, &dp, &want);
                let mut got_ds = Tensor::full(&shape, f64::NAN);
                let pd = (p > 0.0).then_some(&got_d);
                causal_softmax_dropout_backward(&mut got_ds, &g, &got, pd, Some(&first));
                close(got_ds.as_slice(), want_ds.as_slice(), "dscores");
            }
            // no key padding: plain causal
            let mut want = x.clone();
            softmax_inplace(&mut want, Mask::Causal);
            let mut got = x.clone();
            causal_softmax_dropout(&mut got, None, None);
            close(got.as_slice(), want.as_slice(), "causal probs");
        }
    }
}
