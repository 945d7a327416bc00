//! Row softmax and log-softmax over the last axis, with masks, and their backward passes.
//!
//! A tensor `x` of shape `[.., q, k]` is a stack of `batch = rows / q` score matrices of `q` query rows by
//! `k` keys (for a rank-1 tensor `q = 1`). A [`Mask`] removes entries before normalising.
//!
//! **Fully masked rows**: softmax writes zeros (never NaN: a query with no visible key, e.g. a left-padded
//! position under a causal + key-padding mask, attends to nothing). Log-softmax writes `-inf` in masked
//! entries (the log of softmax's exact 0), so a fully masked row is all `-inf`, never NaN; its backward
//! gives 0 gradient there.

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
