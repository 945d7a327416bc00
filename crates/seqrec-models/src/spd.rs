//! The inverse of a symmetric positive definite (SPD) matrix in pure Rust, `f64`: what EASE needs for
//! `P = (G + lambda I)^-1` without a system LAPACK.
//!
//! [`spd_inverse_in_place`] works on one row-major `[n, n]` buffer, like LAPACK's `dpotrf` + `dpotri`
//! (the opt-in [`spd_inverse_lapack`], cargo feature `openblas`), in three phases of `n^3 / 6`
//! multiply-adds each, almost all of them in `matrixmultiply::dgemm` calls:
//!
//! 1. [`cholesky_in_place`]: `A = L L^T`, blocked right-looking. For each block column of width
//!    [`NB`]: the diagonal block is factored unblocked (this is where a non-positive pivot is caught),
//!    the panel below it solves `L21 L11^T = A21` (rows in parallel, [`SUB`]-wide column steps so that
//!    most of it is a GEMM), and the trailing matrix takes `A22 -= L21 L21^T` as one GEMM per block row
//!    of its lower triangle (block rows in parallel; the upper triangle is never read, so half the
//!    flops of a square update are skipped).
//! 2. `U = L^-T` into the upper triangle (the diagonal of `L` is kept aside): row block `j` of `U`
//!    solves `Y L^T = E_j` by blocked forward substitution, independently of the other row blocks, so
//!    the row blocks run in parallel.
//! 3. `P = U U^T` (`= L^-T L^-1 = A^-1`) into the lower triangle, one GEMM per row block (in parallel),
//!    then the lower triangle is mirrored into the upper one.
//!
//! Phases 2 and 3 overwrite the matrix while other row blocks still read it; each phase states which
//! elements its tasks read and write, and why those sets are disjoint, at its `unsafe` blocks. The
//! result does not depend on the thread count: tasks are fixed by the shape.
//!
//! [`inverse_reference`] (Gauss-Jordan with partial pivoting, never optimised) is the oracle the tests
//! compare against.

use rayon::prelude::*;

/// Block size of the three phases: the `k` of the Cholesky trailing-update GEMMs and the row-block
/// height of the parallel tasks. 128 keeps the panel work small next to the GEMMs at n = 3,416 (ML-1M)
/// while giving 27 tasks to share between threads.
pub const NB: usize = 128;

/// Column step inside the triangular solves: each step is a GEMM against the columns already solved,
/// then a substitution `SUB` columns wide.
pub const SUB: usize = 16;

/// Rows of the Cholesky panel per parallel task.
const PANEL_ROWS: usize = 64;

/// Why an inverse could not be computed.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum SpdError {
    /// Occurs when the matrix is not (numerically) positive definite: the Cholesky pivot at row
    /// `pivot` (0-based), the diagonal of the Schur complement, is not finite and `> 0`. Also what a
    /// NaN or infinite entry produces.
    #[error(
        "matrix is not positive definite: Cholesky pivot {pivot} is {value} (must be finite and > 0)"
    )]
    NotPositiveDefinite {
        /// The 0-based row and column of the failing pivot.
        pivot: usize,
        /// The pivot value: `A[p, p] - sum of L[p, q]^2 over q < p`.
        value: f64,
    },
    /// Occurs when LAPACK (`dpotrf` / `dpotri` through ndarray-linalg) reports an error.
    #[cfg(feature = "openblas")]
    #[error("LAPACK Cholesky inverse failed: {0}")]
    Lapack(String),
}

/// Replaces the SPD matrix `a` (`[n, n]`, row-major) by its inverse, in pure Rust (module
/// documentation). Only the lower triangle of `a` is read; the result is the full symmetric inverse.
///
/// # Errors
/// [`SpdError::NotPositiveDefinite`] naming the first failing pivot; `a` is then partly overwritten.
///
/// # Panics
/// When `a.len() != n * n` (a programming error).
///
/// ```
/// use seqrec_models::spd::spd_inverse_in_place;
/// // [[4, 2], [2, 3]]^-1 = [[3, -2], [-2, 4]] / 8
/// let mut a = vec![4.0, 2.0, 2.0, 3.0];
/// spd_inverse_in_place(&mut a, 2).unwrap();
/// let want = [0.375, -0.25, -0.25, 0.5];
/// assert!(a.iter().zip(want).all(|(x, y)| (x - y).abs() < 1e-15));
/// ```
pub fn spd_inverse_in_place(a: &mut [f64], n: usize) -> Result<(), SpdError> {
    assert_eq!(a.len(), n * n, "spd_inverse_in_place: a must be [{n}, {n}]");
    cholesky_in_place(a, n)?;
    let diag: Vec<f64> = (0..n).map(|i| a[i * n + i]).collect();
    let m = SharedMatrix {
        ptr: a.as_mut_ptr(),
        n,
    };
    upper_inverse_of_factor(m, &diag);
    gram_of_upper_into_lower(m);
    mirror_lower_into_upper(m);
    Ok(())
}

/// Cholesky factor in place: on return the lower triangle of `a` (`[n, n]`, row-major, diagonal
/// included) holds `L` with `A = L L^T`. Only the lower triangle is read; the strict upper triangle is
/// left with unspecified values.
///
/// # Errors
/// [`SpdError::NotPositiveDefinite`] at the first pivot that is not finite and `> 0`.
///
/// # Panics
/// When `a.len() != n * n` (a programming error).
pub fn cholesky_in_place(a: &mut [f64], n: usize) -> Result<(), SpdError> {
    assert_eq!(a.len(), n * n, "cholesky_in_place: a must be [{n}, {n}]");
    let mut panel: Vec<f64> = Vec::new();
    for k0 in (0..n).step_by(NB) {
        let k1 = (k0 + NB).min(n);
        let kb = k1 - k0;
        let (top, bottom) = a.split_at_mut(k1 * n);
        factor_diagonal_block(top, n, k0, k1)?;
        if k1 == n {
            break;
        }
        let m = n - k1;
        // The panel A[k1.., k0..k1] as a contiguous [m, kb] copy: rows solve independently, and the
        // trailing update reads it while writing the rows of A it came from.
        panel.clear();
        panel.resize(m * kb, 0.0);
        panel
            .par_chunks_mut(kb)
            .zip(bottom.par_chunks(n))
            .for_each(|(p, row)| p.copy_from_slice(&row[k0..k1]));
        let l11 = lower_block(&top[k0 * n + k0..], n, kb);
        let d11: Vec<f64> = (0..kb).map(|c| l11[c * kb + c]).collect();
        // L21 = A21 L11^-T.
        panel
            .par_chunks_mut(PANEL_ROWS * kb)
            .for_each(|x| solve_right_lower_transposed(x, x.len() / kb, kb, kb, &l11, &d11));
        bottom
            .par_chunks_mut(n)
            .zip(panel.par_chunks(kb))
            .for_each(|(row, p)| row[k0..k1].copy_from_slice(p));
        // A22 -= L21 L21^T on the lower triangle: block row r0..r1 (relative to k1) updates its columns
        // k1..k1 + r1 (the diagonal block whole, its upper part is never read).
        let panel = &panel;
        bottom
            .par_chunks_mut(NB * n)
            .enumerate()
            .for_each(|(blk, rows)| {
                let r0 = blk * NB;
                let mr = rows.len() / n;
                let cols = r0 + mr;
                // SAFETY: A = panel rows r0..r0+mr ([mr, kb], row stride kb); B = op(panel rows 0..cols)
                // = their transpose ([kb, cols]: row stride 1, column stride kb); both inside the
                // panel ([m, kb], r0 + mr = cols <= m). C = rows[.., k1..k1 + cols] ([mr, cols], row
                // stride n): k1 + cols <= k1 + m = n, inside this task's own &mut rows; the panel is a
                // separate buffer, so C aliases nothing.
                unsafe {
                    matrixmultiply::dgemm(
                        mr,
                        kb,
                        cols,
                        -1.0,
                        panel.as_ptr().add(r0 * kb),
                        kb as isize,
                        1,
                        panel.as_ptr(),
                        1,
                        kb as isize,
                        1.0,
                        rows.as_mut_ptr().add(k1),
                        n as isize,
                        1,
                    );
                }
            });
    }
    Ok(())
}

/// Unblocked Cholesky (row by row) of the diagonal block `k0..k1` of `a` (rows `0..k1` of an `[n, n]`
/// matrix), whose trailing updates from earlier block columns are already applied.
fn factor_diagonal_block(a: &mut [f64], n: usize, k0: usize, k1: usize) -> Result<(), SpdError> {
    for i in k0..k1 {
        let (before, rest) = a.split_at_mut(i * n);
        let row = &mut rest[..n];
        for j in k0..i {
            let lj = &before[j * n..j * n + n];
            row[j] = (row[j] - dot(&row[k0..j], &lj[k0..j])) / lj[j];
        }
        let d = row[i] - dot(&row[k0..i], &row[k0..i]);
        if !(d > 0.0 && d.is_finite()) {
            return Err(SpdError::NotPositiveDefinite { pivot: i, value: d });
        }
        row[i] = d.sqrt();
    }
    Ok(())
}

/// The `[b, b]` lower triangle (diagonal included, zeros above) of the block starting at `a[0]` with
/// row stride `ld`, as a contiguous copy.
fn lower_block(a: &[f64], ld: usize, b: usize) -> Vec<f64> {
    let mut out = vec![0.0; b * b];
    for r in 0..b {
        out[r * b..r * b + r + 1].copy_from_slice(&a[r * ld..r * ld + r + 1]);
    }
    out
}

/// Solves `X L^T = B` in place for the `rows x width` matrix in `x` (row stride `ldx`): `L` is the
/// `[width, width]` lower triangle in `l` (contiguous, row stride `width`; only its strict lower part is
/// read) with diagonal `diag`. Forward substitution per row, in steps of [`SUB`] columns: the columns
/// already solved enter each step through one GEMM.
fn solve_right_lower_transposed(
    x: &mut [f64],
    rows: usize,
    ldx: usize,
    width: usize,
    l: &[f64],
    diag: &[f64],
) {
    if rows == 0 {
        return;
    }
    assert!(
        (rows - 1) * ldx + width <= x.len() && l.len() == width * width && diag.len() == width,
        "solve_right_lower_transposed: x [{rows}, {width}] (stride {ldx}, len {}), l {}, diag {}",
        x.len(),
        l.len(),
        diag.len()
    );
    for s0 in (0..width).step_by(SUB) {
        let s1 = (s0 + SUB).min(width);
        if s0 > 0 {
            let p = x.as_mut_ptr();
            // SAFETY: X[:, s0..s1] -= X[:, 0..s0] L[s0..s1, 0..s0]^T. A = x columns 0..s0, C = x columns
            // s0..s1 of the same rows (row stride ldx; (rows - 1) * ldx + width <= x.len() was checked):
            // both come from one raw pointer, with disjoint columns, and no reference to x lives during
            // the call. B = op(l rows s0..s1, columns 0..s0) ([s0, s1 - s0]: row stride 1, column stride
            // width), inside l ([width, width]).
            unsafe {
                matrixmultiply::dgemm(
                    rows,
                    s0,
                    s1 - s0,
                    -1.0,
                    p,
                    ldx as isize,
                    1,
                    l.as_ptr().add(s0 * width),
                    1,
                    width as isize,
                    1.0,
                    p.add(s0),
                    ldx as isize,
                    1,
                );
            }
        }
        for r in 0..rows {
            let row = &mut x[r * ldx..r * ldx + s1];
            for c in s0..s1 {
                let s = row[c] - dot(&row[s0..c], &l[c * width + s0..c * width + c]);
                row[c] = s / diag[c];
            }
        }
    }
}

/// `sum a[i] b[i]` with eight accumulators (so that it vectorises), summed in a fixed order.
fn dot(a: &[f64], b: &[f64]) -> f64 {
    debug_assert_eq!(a.len(), b.len());
    let mut acc = [0.0f64; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f64 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for k in 0..8 {
            acc[k] += x[k] * y[k];
        }
    }
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail
}

/// A square row-major `[n, n]` matrix shared by parallel tasks that each read and write disjoint sets
/// of its elements (stated at every use). Accessed through methods so that closures capture the whole
/// struct (which is `Sync`), not its raw pointer field.
#[derive(Clone, Copy)]
struct SharedMatrix {
    ptr: *mut f64,
    n: usize,
}

// SAFETY: the pointer comes from a `&mut [f64]` of length n * n that outlives every parallel phase (the
// phases are joined before `spd_inverse_in_place` returns); tasks touch disjoint elements, as argued
// at each phase.
unsafe impl Send for SharedMatrix {}
// SAFETY: as for Send.
unsafe impl Sync for SharedMatrix {}

impl SharedMatrix {
    /// Pointer to element `(row, col)`.
    ///
    /// # Safety
    /// `row, col < n` (or `row * n + col <= n * n` for a one-past-the-end pointer).
    unsafe fn at(&self, row: usize, col: usize) -> *mut f64 {
        // SAFETY: in bounds of the n * n allocation by the caller's contract.
        unsafe { self.ptr.add(row * self.n + col) }
    }

    /// Row blocks of height [`NB`]: `(r0, r1)`.
    fn row_blocks(&self) -> Vec<(usize, usize)> {
        (0..self.n)
            .step_by(NB)
            .map(|r0| (r0, (r0 + NB).min(self.n)))
            .collect()
    }

    /// Copy of the strict lower triangle of the diagonal block `i0..i1` (zeros elsewhere).
    ///
    /// # Safety
    /// No task writes the strict lower triangle of this block during the call.
    unsafe fn strict_lower_block(&self, i0: usize, i1: usize) -> Vec<f64> {
        let b = i1 - i0;
        let mut out = vec![0.0; b * b];
        for r in 1..b {
            // SAFETY: row i0 + r, columns i0..i0 + r: strictly lower, in bounds, not written (contract).
            unsafe {
                std::ptr::copy_nonoverlapping(self.at(i0 + r, i0), out.as_mut_ptr().add(r * b), r);
            }
        }
        out
    }
}

/// Phase 2: writes `U = L^-T` into the upper triangle (diagonal included) from the factor `L` in the
/// lower triangle; `diag` holds `L`'s diagonal, which `U`'s diagonal overwrites.
///
/// Row block `j` of `U` is `Y` with `Y L^T = E_j` (`E_j` = the rows `j0..j1` of the identity). `Y` is zero
/// left of column `j0`, so by block columns `i >= j`: `Y_i = (E_ji - Y[:, j0..i0] L[i, j0..i0]^T)
/// L_ii^-T`. Each task builds its `Y` in a private buffer, then stores it; tasks are independent.
fn upper_inverse_of_factor(m: SharedMatrix, diag: &[f64]) {
    let n = m.n;
    m.row_blocks().into_par_iter().for_each(|(j0, j1)| {
        let (jb, w) = (j1 - j0, n - j0);
        let mut y = vec![0.0; jb * w];
        for r in 0..jb {
            y[r * w + r] = 1.0;
        }
        for i0 in (j0..n).step_by(NB) {
            let i1 = (i0 + NB).min(n);
            let ib = i1 - i0;
            if i0 > j0 {
                // SAFETY: reads A[i0..i1, j0..i0] as op(B) = its transpose ([i0 - j0, ib]: row stride 1,
                // column stride n): in bounds, and strictly lower (column < i0 <= row), which no task
                // writes in this phase (tasks write only upper elements, column >= row). A = y columns
                // 0..i0 - j0, C = y columns i0 - j0..i1 - j0 ([jb, ib], row stride w): the task's own
                // buffer, disjoint columns from one raw pointer.
                unsafe {
                    let p = y.as_mut_ptr();
                    matrixmultiply::dgemm(
                        jb,
                        i0 - j0,
                        ib,
                        -1.0,
                        p,
                        w as isize,
                        1,
                        m.at(i0, j0),
                        1,
                        n as isize,
                        1.0,
                        p.add(i0 - j0),
                        w as isize,
                        1,
                    );
                }
            }
            // SAFETY: the strict lower triangle of a diagonal block is never written in this phase.
            let mut l_ii = unsafe { m.strict_lower_block(i0, i1) };
            for c in 0..ib {
                l_ii[c * ib + c] = diag[i0 + c];
            }
            solve_right_lower_transposed(&mut y[i0 - j0..], jb, w, ib, &l_ii, &diag[i0..i1]);
        }
        for r in 0..jb {
            let g = j0 + r;
            // SAFETY: writes A[g, g..n] (upper triangle, diagonal included) of this task's rows j0..j1
            // only; no task reads upper elements in this phase (the diagonal is read from `diag`).
            // y[r, r..w] has w - r = n - g elements.
            unsafe {
                std::ptr::copy_nonoverlapping(y.as_ptr().add(r * w + r), m.at(g, g), n - g);
            }
        }
    });
}

/// Phase 3: `P = U U^T` into the lower triangle (diagonal blocks whole), from `U` in the upper triangle.
///
/// `U` is zero left of its diagonal, so for row block `a` and any column `c < a1`:
/// `P[a rows, c] = U[a rows, a0..n] . U[c, a0..n]`. Task `a` copies its rows of `U` (the diagonal block
/// is the only part that it overwrites and that it reads) and writes `P[a0..a1, 0..a1]` with two GEMMs.
fn gram_of_upper_into_lower(m: SharedMatrix) {
    let n = m.n;
    m.row_blocks().into_par_iter().for_each(|(a0, a1)| {
        let (ab, w) = (a1 - a0, n - a0);
        let mut ua = vec![0.0; ab * w];
        for r in 0..ab {
            let g = a0 + r;
            // SAFETY: reads A[g, g..n] (this task's rows, upper triangle); the other tasks write only
            // their own rows (columns < their a1), so nobody writes these elements.
            unsafe {
                std::ptr::copy_nonoverlapping(m.at(g, g), ua.as_mut_ptr().add(r * w + r), n - g);
            }
        }
        // SAFETY (both GEMMs): C is A[a0..a1, 0..a1] (row stride n), written by this task only; beta = 0
        // does not read it. Its elements left of a0 held L (dead) and are read by no task; the diagonal
        // block is read by this task only, through the copy `ua`. op(B) in the first GEMM is
        // A[0..a0, a0..n] transposed ([w, a0]: row stride 1, column stride n): upper elements (column
        // >= a0 > row) of earlier rows, which no task writes (task b writes rows of block b at columns
        // < b1 <= a0). A = ua ([ab, w], row stride w), private.
        unsafe {
            if a0 > 0 {
                matrixmultiply::dgemm(
                    ab,
                    w,
                    a0,
                    1.0,
                    ua.as_ptr(),
                    w as isize,
                    1,
                    m.at(0, a0),
                    1,
                    n as isize,
                    0.0,
                    m.at(a0, 0),
                    n as isize,
                    1,
                );
            }
            matrixmultiply::dgemm(
                ab,
                w,
                ab,
                1.0,
                ua.as_ptr(),
                w as isize,
                1,
                ua.as_ptr(),
                1,
                w as isize,
                0.0,
                m.at(a0, a0),
                n as isize,
                1,
            );
        }
    });
}

/// Phase 4: `A[r, c] = A[c, r]` for `c > r`.
fn mirror_lower_into_upper(m: SharedMatrix) {
    let n = m.n;
    m.row_blocks().into_par_iter().for_each(|(r0, r1)| {
        for c0 in (r0..n).step_by(NB) {
            let c1 = (c0 + NB).min(n);
            for r in r0..r1 {
                for c in c0.max(r + 1)..c1 {
                    // SAFETY: reads A[c, r] with c > r (strict lower), writes A[r, c] (strict upper) of this
                    // task's rows; no task writes strict lower elements in this phase.
                    unsafe { *m.at(r, c) = *m.at(c, r) };
                }
            }
        }
    });
}

/// The inverse of a non-singular `[n, n]` row-major matrix by plain Gauss-Jordan elimination with
/// partial pivoting (`[A | I] -> [I | A^-1]`), `O(n^3)`: the oracle of [`spd_inverse_in_place`] and of
/// the EASE closed form. For tests only (never optimise it).
///
/// # Panics
/// When `a.len() != n * n` (a programming error) or `a` is singular.
pub fn inverse_reference(a: &[f64], n: usize) -> Vec<f64> {
    assert_eq!(a.len(), n * n, "inverse_reference: a must be [{n}, {n}]");
    let mut a = a.to_vec();
    let mut inv = vec![0.0f64; n * n];
    for i in 0..n {
        inv[i * n + i] = 1.0;
    }
    for col in 0..n {
        let pivot = (col..n)
            .max_by(|&x, &y| a[x * n + col].abs().total_cmp(&a[y * n + col].abs()))
            .expect("non-empty range");
        assert!(a[pivot * n + col] != 0.0, "singular matrix");
        for k in 0..n {
            a.swap(col * n + k, pivot * n + k);
            inv.swap(col * n + k, pivot * n + k);
        }
        let d = a[col * n + col];
        for k in 0..n {
            a[col * n + k] /= d;
            inv[col * n + k] /= d;
        }
        for r in 0..n {
            if r != col {
                let f = a[r * n + col];
                for k in 0..n {
                    a[r * n + k] -= f * a[col * n + k];
                    inv[r * n + k] -= f * inv[col * n + k];
                }
            }
        }
    }
    inv
}

/// The inverse through LAPACK (`dpotrf` + `dpotri`, ndarray-linalg on the system OpenBLAS): the opt-in
/// path of cargo feature `openblas`. `a` is `[n, n]` row-major SPD; returns the full symmetric inverse.
///
/// # Errors
/// [`SpdError::Lapack`] when LAPACK reports an error (e.g. a non-positive pivot).
///
/// # Panics
/// When `a.len() != n * n` (a programming error).
#[cfg(feature = "openblas")]
pub fn spd_inverse_lapack(a: Vec<f64>, n: usize) -> Result<Vec<f64>, SpdError> {
    use ndarray_linalg::InverseCInto;
    assert_eq!(a.len(), n * n, "spd_inverse_lapack: a must be [{n}, {n}]");
    let a = ndarray::Array2::from_shape_vec((n, n), a).expect("length checked");
    let p = a.invc_into().map_err(|e| SpdError::Lapack(e.to_string()))?;
    Ok(p.into_raw_vec_and_offset().0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_matches_a_plain_sum_on_every_tail_length() {
        for len in 0..20 {
            let a: Vec<f64> = (0..len).map(|i| 1.0 + i as f64).collect();
            let b: Vec<f64> = (0..len).map(|i| 0.5 - i as f64).collect();
            let want: f64 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
            assert_eq!(dot(&a, &b), want, "len {len}");
        }
    }

    #[test]
    fn triangular_solve_satisfies_x_lt_equals_b() {
        // 37 columns: two full SUB steps and a partial one; 5 rows inside a stride-40 buffer.
        let (rows, width, ldx) = (5, 37, 40);
        let mut l = vec![0.0; width * width];
        for r in 0..width {
            for c in 0..r {
                l[r * width + c] = ((r * 7 + c * 3) % 11) as f64 / 11.0 - 0.5;
            }
            l[r * width + r] = 2.0 + (r % 3) as f64;
        }
        let diag: Vec<f64> = (0..width).map(|c| l[c * width + c]).collect();
        let b: Vec<f64> = (0..rows * ldx)
            .map(|i| ((i * 13) % 17) as f64 - 8.0)
            .collect();
        let mut x = b.clone();
        solve_right_lower_transposed(&mut x, rows, ldx, width, &l, &diag);
        for r in 0..rows {
            for c in 0..width {
                // (X L^T)[r, c] = sum over q <= c of X[r, q] L[c, q]
                let got: f64 = (0..=c).map(|q| x[r * ldx + q] * l[c * width + q]).sum();
                let want = b[r * ldx + c];
                assert!(
                    (got - want).abs() <= 1e-12 * (1.0 + want.abs()),
                    "[{r}, {c}]"
                );
            }
            // Columns past `width` are untouched.
            assert_eq!(
                x[r * ldx + width..r * ldx + ldx],
                b[r * ldx + width..r * ldx + ldx]
            );
        }
    }

    /// A random SPD matrix `M M^T / k + shift I` (`M` is `[n, k]` with entries in [-1, 1)), from a
    /// seeded xorshift; with `k < n` the Gram part is singular and `shift` alone makes it definite.
    fn random_spd(n: usize, k: usize, shift: f64, seed: u64) -> Vec<f64> {
        let mut x = seed | 1;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
        };
        let m: Vec<f64> = (0..n * k).map(|_| next()).collect();
        let mut a = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..n {
                let s: f64 = (0..k).map(|p| m[i * k + p] * m[j * k + p]).sum();
                a[i * n + j] = s / k as f64 + if i == j { shift } else { 0.0 };
            }
        }
        a
    }

    /// Per-element `|got - want| <= abs + rel * |want|`, naming the first failing `[row, col]`.
    fn check_close(got: &[f64], want: &[f64], n: usize, rel: f64, abs: f64) -> Result<(), String> {
        for (idx, (x, y)) in got.iter().zip(want).enumerate() {
            // Written so that a NaN fails.
            let within = (x - y).abs() <= abs + rel * y.abs();
            if !within {
                return Err(format!("[{}, {}]: got {x}, want {y}", idx / n, idx % n));
            }
        }
        Ok(())
    }

    /// Largest `|(P A - I)[i, j]|`, with its index.
    fn residual(p: &[f64], a: &[f64], n: usize) -> (f64, usize, usize) {
        let mut worst = (0.0, 0, 0);
        for i in 0..n {
            for j in 0..n {
                let s: f64 = (0..n).map(|k| p[i * n + k] * a[k * n + j]).sum();
                let r = (s - if i == j { 1.0 } else { 0.0 }).abs();
                if r > worst.0 || r.is_nan() {
                    worst = (r, i, j);
                }
            }
        }
        worst
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]

        /// The blocked inverse equals Gauss-Jordan on random SPD matrices of 1..150 rows: below one block
        /// (NB = 128), exactly one, and one full block plus a ragged one; singular Gram parts (k < n)
        /// regularised by a small shift, as EASE's G + lambda I.
        #[test]
        fn blocked_inverse_matches_gauss_jordan(
            n in 1usize..150,
            k in 1usize..40,
            shift in 0.01f64..10.0,
            seed in proptest::prelude::any::<u64>(),
        ) {
            let a = random_spd(n, k, shift, seed);
            let want = inverse_reference(&a, n);
            // Garbage in the upper triangle must not matter: only the lower one is read.
            let mut got = a.clone();
            for i in 0..n {
                for j in i + 1..n {
                    got[i * n + j] = f64::NAN;
                }
            }
            spd_inverse_in_place(&mut got, n).unwrap();
            // cond(A) <= (1 + shift) / shift <= 101: 1e-10 relative is ~1e4 ulps of slack.
            let scale = want.iter().fold(0.0f64, |m, x| m.max(x.abs()));
            check_close(&got, &want, n, 1e-10, 1e-12 * scale).map_err(
                |e| proptest::test_runner::TestCaseError::fail(format!("n {n}, k {k}: {e}")))?;
            for i in 0..n {
                for j in 0..i {
                    proptest::prop_assert_eq!(got[i * n + j], got[j * n + i], "symmetric at [{}, {}]", i, j);
                }
            }
        }
    }

    #[test]
    fn cholesky_factor_reproduces_the_matrix_across_blocks() {
        // 300 = two full blocks and a ragged one of 44.
        let n = 300;
        let a = random_spd(n, 50, 0.5, 7);
        let mut l = a.clone();
        cholesky_in_place(&mut l, n).unwrap();
        for i in 0..n {
            for j in 0..=i {
                let s: f64 = (0..=j).map(|p| l[i * n + p] * l[j * n + p]).sum();
                let want = a[i * n + j];
                assert!(
                    (s - want).abs() <= 1e-12 * (1.0 + want.abs()),
                    "(L L^T)[{i}, {j}] = {s}, A = {want}"
                );
            }
        }
    }

    #[test]
    fn inverse_times_matrix_is_the_identity_at_a_few_hundred() {
        // Multiples of NB and not, with a rank-deficient Gram part (k < n) like EASE's.
        for (n, k, shift) in [(256, 300, 0.1), (300, 60, 1.0), (389, 389, 0.05)] {
            let a = random_spd(n, k, shift, n as u64);
            let mut p = a.clone();
            spd_inverse_in_place(&mut p, n).unwrap();
            let (r, i, j) = residual(&p, &a, n);
            assert!(r < 1e-10, "n {n}: |P A - I| = {r} at [{i}, {j}]");
        }
    }

    #[test]
    fn non_positive_pivots_are_errors_naming_the_pivot() {
        // Indefinite: [[1, 2], [2, 1]] has pivots 1 and 1 - 4 = -3.
        let mut a = vec![1.0, 2.0, 2.0, 1.0];
        assert_eq!(
            spd_inverse_in_place(&mut a, 2),
            Err(SpdError::NotPositiveDefinite {
                pivot: 1,
                value: -3.0
            })
        );
        // Semi-definite in a later block: rows 130 and 131 equal, so pivot 131 is (about) 0.
        let n = 200;
        let mut a = random_spd(n, 10, 0.0, 3);
        for j in 0..n {
            a[131 * n + j] = a[130 * n + j];
        }
        for i in 0..n {
            a[i * n + 131] = a[i * n + 130];
        }
        let err = spd_inverse_in_place(&mut a, n).unwrap_err();
        assert!(
            matches!(err, SpdError::NotPositiveDefinite { pivot, .. } if pivot <= 131),
            "{err}"
        );
        // A NaN is reported, never propagated into the result.
        let mut a = random_spd(150, 150, 1.0, 5);
        a[140 * 150 + 3] = f64::NAN;
        let err = spd_inverse_in_place(&mut a, 150).unwrap_err();
        assert!(
            matches!(err, SpdError::NotPositiveDefinite { pivot: 140, value } if value.is_nan()),
            "{err}"
        );
        assert!(err.to_string().contains("pivot 140"), "{err}");
        // n = 0 is a valid, empty inverse.
        spd_inverse_in_place(&mut [], 0).unwrap();
    }
}
