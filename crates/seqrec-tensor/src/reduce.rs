//! Reductions (whole tensor and along the last axis) and per-row top-k for recommendation.

use crate::par::{CHUNK_ELEMS, PAR_MIN_ELEMS};
use crate::{Float, Tensor};
use rayon::prelude::*;

/// Sum of `f(x)` over `xs` in `f64`, in fixed chunks (same result on any thread count).
fn sum_f64<T: Float>(xs: &[T], f: impl Fn(T) -> f64 + Sync + Send) -> f64 {
    let serial = |c: &[T]| c.iter().map(|&v| f(v)).sum::<f64>();
    if xs.len() < PAR_MIN_ELEMS {
        serial(xs)
    } else {
        let parts: Vec<f64> = xs.par_chunks(CHUNK_ELEMS).map(serial).collect();
        parts.iter().sum()
    }
}

/// Sum of all elements (accumulated in `f64`).
pub fn sum<T: Float>(x: &Tensor<T>) -> T {
    T::from_f64(sum_f64(x.as_slice(), |v| v.to_f64()))
}

/// Mean of all elements (accumulated in `f64`); NaN for an empty tensor.
pub fn mean<T: Float>(x: &Tensor<T>) -> T {
    T::from_f64(sum_f64(x.as_slice(), |v| v.to_f64()) / x.numel() as f64)
}

/// Squared L2 norm `sum x^2` (accumulated in `f64`; gradient clipping sums these over parameters).
pub fn sq_norm<T: Float>(x: &Tensor<T>) -> T {
    T::from_f64(sum_f64(x.as_slice(), |v| {
        let v = v.to_f64();
        v * v
    }))
}

/// Largest element (NaN elements are ignored); `-inf` for an empty tensor.
pub fn max<T: Float>(x: &Tensor<T>) -> T {
    x.as_slice().iter().fold(T::NEG_INFINITY, |m, &v| m.max(v))
}

#[track_caller]
fn last_axis<T: Float>(
    op: &str,
    out: &mut Tensor<T>,
    x: &Tensor<T>,
    f: impl Fn(&[T]) -> T + Sync + Send,
) {
    assert!(
        out.numel() == x.rows(),
        "{op}: shape mismatch: x has shape {:?} ({} rows) but out has shape {:?}",
        x.shape(),
        x.rows(),
        out.shape()
    );
    let k = x.cols();
    let xs = x.as_slice();
    if k == 0 {
        let e = f(&[]);
        out.fill(e);
        return;
    }
    // Parallel over output elements, in chunks of rows sized by the input row length.
    let rows_per = (CHUNK_ELEMS / k).max(1);
    let o = out.as_mut_slice();
    if xs.len() < PAR_MIN_ELEMS {
        for (o, r) in o.iter_mut().zip(xs.chunks_exact(k)) {
            *o = f(r);
        }
    } else {
        o.par_chunks_mut(rows_per)
            .zip(xs.par_chunks(rows_per * k))
            .for_each(|(oc, xc)| {
                for (o, r) in oc.iter_mut().zip(xc.chunks_exact(k)) {
                    *o = f(r);
                }
            });
    }
}

/// `out[r] = sum_j x[r, j]` (accumulated in `T`). `out` holds `x.rows()` elements, e.g. `[batch, seq]`.
#[track_caller]
pub fn sum_last<T: Float>(out: &mut Tensor<T>, x: &Tensor<T>) {
    last_axis("sum_last", out, x, |r| {
        r.iter().fold(T::ZERO, |a, &v| a + v)
    });
}

/// `out[r] = mean_j x[r, j]`.
#[track_caller]
pub fn mean_last<T: Float>(out: &mut Tensor<T>, x: &Tensor<T>) {
    let inv = T::ONE / T::from_f64(x.cols() as f64);
    last_axis("mean_last", out, x, |r| {
        r.iter().fold(T::ZERO, |a, &v| a + v) * inv
    });
}

/// `out[r] = max_j x[r, j]` (NaN ignored; `-inf` for empty rows).
#[track_caller]
pub fn max_last<T: Float>(out: &mut Tensor<T>, x: &Tensor<T>) {
    last_axis("max_last", out, x, |r| {
        r.iter().fold(T::NEG_INFINITY, |a, &v| a.max(v))
    });
}

/// Ids to leave out of a row's top-k (items already in the user's history). Ids `>= n` are ignored.
#[derive(Clone, Copy, Debug)]
pub enum Exclude<'a> {
    /// Nothing is excluded.
    None,
    /// `rows[r]` lists the ids excluded from row `r`; one entry per row.
    Rows(&'a [Vec<u32>]),
    /// Compressed rows: row `r` excludes `ids[offsets[r]..offsets[r + 1]]` (`offsets` has `rows + 1` entries).
    Csr {
        /// Row starts into `ids`, `rows + 1` entries, non-decreasing.
        offsets: &'a [usize],
        /// Concatenated excluded ids.
        ids: &'a [u32],
    },
}

impl<'a> Exclude<'a> {
    #[track_caller]
    fn check(&self, rows: usize) {
        match self {
            Exclude::None => {}
            Exclude::Rows(r) => assert!(
                r.len() == rows,
                "topk: exclusion lists for {} rows given for a score matrix of {rows} rows",
                r.len()
            ),
            Exclude::Csr { offsets, ids } => assert!(
                offsets.len() == rows + 1
                    && offsets.windows(2).all(|w| w[0] <= w[1])
                    && offsets.last().is_some_and(|&e| e <= ids.len()),
                "topk: CSR exclusion has {} offsets (need {} non-decreasing, last <= {} ids)",
                offsets.len(),
                rows + 1,
                ids.len()
            ),
        }
    }

    fn row(&self, r: usize) -> &'a [u32] {
        match *self {
            Exclude::None => &[],
            Exclude::Rows(rows) => &rows[r],
            Exclude::Csr { offsets, ids } => &ids[offsets[r]..offsets[r + 1]],
        }
    }
}

/// `a` ranks strictly before `b`: higher score first, then lower id; NaN ranks below every number.
#[inline(always)]
pub(crate) fn ranks_before<T: Float>(a: (T, u32), b: (T, u32)) -> bool {
    let (sa, sb) = (
        if a.0.is_nan() { T::NEG_INFINITY } else { a.0 },
        if b.0.is_nan() { T::NEG_INFINITY } else { b.0 },
    );
    sa > sb || (sa == sb && a.1 < b.1)
}

/// Id written into unused top-k slots (fewer than `k` candidates left after exclusion).
pub const NO_ID: u32 = u32::MAX;

/// Per-row top-k: the `k` best `(id, score)` of each row of `scores`, best first, ties broken by lower id,
/// NaN ranked below every number, `exclude`d ids left out. If a row has fewer than `k` candidates, the
/// remaining slots get id [`NO_ID`] and score `-inf`.
///
/// - `scores`: `[rows, n]` (ids are column indices); `ids_out`, `scores_out`: `rows * k` elements.
///
/// # Panics
/// If the output lengths are not `rows * k` or the exclusion does not have one entry per row.
#[track_caller]
pub fn topk<T: Float>(
    ids_out: &mut [u32],
    scores_out: &mut [T],
    scores: &Tensor<T>,
    k: usize,
    exclude: Exclude<'_>,
) {
    let (rows, n) = (scores.rows(), scores.cols());
    assert!(
        ids_out.len() == rows * k && scores_out.len() == rows * k,
        "topk: scores have shape {:?}; with k = {k} the outputs need {} elements, got {} ids and {} scores",
        scores.shape(),
        rows * k,
        ids_out.len(),
        scores_out.len()
    );
    exclude.check(rows);
    if k == 0 {
        return;
    }
    let xs = scores.as_slice();
    let one_row = |r: usize, ids: &mut [u32], vals: &mut [T], excluded: &mut Vec<bool>| {
        let ex = exclude.row(r);
        for &e in ex {
            if (e as usize) < n {
                excluded[e as usize] = true;
            }
        }
        let row = &xs[r * n..(r + 1) * n];
        let mut len = 0usize;
        for (j, &s) in row.iter().enumerate() {
            if excluded[j] {
                continue;
            }
            let cand = (s, j as u32);
            if len == k && !ranks_before(cand, (vals[k - 1], ids[k - 1])) {
                continue;
            }
            // Insert into the sorted prefix, dropping the last entry when full.
            let mut pos = if len < k { len } else { k - 1 };
            while pos > 0 && ranks_before(cand, (vals[pos - 1], ids[pos - 1])) {
                vals[pos] = vals[pos - 1];
                ids[pos] = ids[pos - 1];
                pos -= 1;
            }
            vals[pos] = s;
            ids[pos] = j as u32;
            if len < k {
                len += 1;
            }
        }
        ids[len..].fill(NO_ID);
        vals[len..].fill(T::NEG_INFINITY);
        for &e in ex {
            if (e as usize) < n {
                excluded[e as usize] = false;
            }
        }
    };
    if rows * n < PAR_MIN_ELEMS {
        let mut excluded = vec![false; n];
        for (r, (ids, vals)) in ids_out
            .chunks_exact_mut(k)
            .zip(scores_out.chunks_exact_mut(k))
            .enumerate()
        {
            one_row(r, ids, vals, &mut excluded);
        }
    } else {
        ids_out
            .par_chunks_mut(k)
            .zip(scores_out.par_chunks_mut(k))
            .enumerate()
            .for_each_init(
                || vec![false; n],
                |excluded, (r, (ids, vals))| one_row(r, ids, vals, excluded),
            );
    }
}
