//! Matrix products: [`gemm`] and the strided batched [`gemm_batched`], on top of `matrixmultiply`.
//!
//! Transposes are expressed through strides, never copies. Large products are split over row blocks of
//! `C` (and batched ones over the batch) with rayon; each block is an independent `matrixmultiply` call.

use crate::{Float, Tensor};
use rayon::prelude::*;

/// Whether a GEMM operand is used as stored or transposed (BLAS `N` / `T`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transpose {
    /// Use the matrix as stored.
    No,
    /// Use its transpose.
    Yes,
}

/// `(rows, cols, row_stride, col_stride)` of `op(X)` for a stored `[r, c]` row-major matrix.
fn op_dims(r: usize, c: usize, t: Transpose) -> (usize, usize, isize, isize) {
    match t {
        Transpose::No => (r, c, c as isize, 1),
        Transpose::Yes => (c, r, 1, c as isize),
    }
}

/// Below this many multiply-adds a product runs on one thread.
const PAR_MIN_FLOPS: usize = 1 << 21;

/// `c = alpha * op(a) op(b) + beta * c`, on the matrix views of the tensors.
///
/// - `a`: `[.., m, k]` viewed as `[rows, cols]` (`[m, k]`, or `[k, m]` with `ta = Transpose::Yes`)
/// - `b`: `[k, n]` (or `[n, k]` with `tb = Transpose::Yes`)
/// - `c`: viewed as `[m, n]`; any leading shape, e.g. `[batch, seq, n]` for a linear layer.
///
/// `beta = 0` overwrites `c` without reading it; `beta = 1` accumulates (parameter gradients `+=`).
///
/// # Panics
/// If the inner dimensions or the output shape disagree; the message names all three shapes.
#[allow(clippy::too_many_arguments)]
pub fn gemm<T: Float>(
    c: &mut Tensor<T>,
    alpha: T,
    a: &Tensor<T>,
    ta: Transpose,
    b: &Tensor<T>,
    tb: Transpose,
    beta: T,
) {
    let (m, k, rsa, csa) = op_dims(a.rows(), a.cols(), ta);
    let (kb, n, rsb, csb) = op_dims(b.rows(), b.cols(), tb);
    assert!(
        k == kb && c.rows() == m && c.cols() == n,
        "gemm: shape mismatch: op(a) is [{m}, {k}] (a {:?}, {ta:?}), op(b) is [{kb}, {n}] (b {:?}, {tb:?}), \
         c {:?} must be [{m}, {n}] and inner dimensions must agree",
        a.shape(),
        b.shape(),
        c.shape()
    );
    gemm_slices(
        m,
        k,
        n,
        alpha,
        a.as_slice(),
        rsa,
        csa,
        b.as_slice(),
        rsb,
        csb,
        beta,
        c.as_mut_slice(),
    );
}

/// One product on slices; `c` is `[m, n]` contiguous. Splits rows of `c` over rayon when large.
#[allow(clippy::too_many_arguments)]
fn gemm_slices<T: Float>(
    m: usize,
    k: usize,
    n: usize,
    alpha: T,
    a: &[T],
    rsa: isize,
    csa: isize,
    b: &[T],
    rsb: isize,
    csb: isize,
    beta: T,
    c: &mut [T],
) {
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        // Empty sum: C = beta * C (beta = 0 must not read C, which may hold NaN).
        for v in c.iter_mut() {
            *v = if beta == T::ZERO { T::ZERO } else { beta * *v };
        }
        return;
    }
    let threads = rayon::current_num_threads();
    // Column split when op(C) is short and wide (a few row blocks would each pack all of B, and each
    // block would be short): one block of whole 32-column panels per thread, each packing only its part.
    let col_blocks = if n >= 2 * COL_ALIGN && m < n.max(256) {
        threads.min(n / COL_ALIGN)
    } else {
        1
    };
    if threads == 1 || m * n * k < PAR_MIN_FLOPS || (m < 16 && col_blocks < 2) {
        // SAFETY: a holds op(a) [m, k] at strides (rsa, csa) and b holds op(b) [k, n] at (rsb, csb), as
        // checked by the caller against the tensor shapes; c is [m, n] row-major, a separate &mut slice.
        unsafe {
            T::gemm_raw(
                m,
                k,
                n,
                alpha,
                a.as_ptr(),
                rsa,
                csa,
                b.as_ptr(),
                rsb,
                csb,
                beta,
                c.as_mut_ptr(),
                n as isize,
                1,
            )
        }
        return;
    }
    if col_blocks >= 2 {
        let cols_per = n.div_ceil(col_blocks).next_multiple_of(COL_ALIGN);
        let cp = SendPtr(c.as_mut_ptr());
        (0..n.div_ceil(cols_per)).into_par_iter().for_each(|bi| {
            let j0 = bi * cols_per;
            let nb = cols_per.min(n - j0);
            // SAFETY: columns j0..j0+nb of op(b) start at element j0 * csb of b (csb >= 0) and lie inside
            // b because op(b) [k, n] does; op(a) is as above; the block writes columns j0..j0+nb of every
            // row of c ([m, n] row-major, row stride n), disjoint from the other blocks' columns, and no
            // other reference to c is used while the blocks run.
            unsafe {
                T::gemm_raw(
                    m,
                    k,
                    nb,
                    alpha,
                    a.as_ptr(),
                    rsa,
                    csa,
                    b.as_ptr().offset(j0 as isize * csb),
                    rsb,
                    csb,
                    beta,
                    cp.get().add(j0),
                    n as isize,
                    1,
                )
            }
        });
        return;
    }
    // Row blocks: a few per thread for balance, a multiple of 8 rows (the f32 kernel's row tile).
    let blocks = threads * 2;
    let rows_per = m.div_ceil(blocks).next_multiple_of(8);
    c.par_chunks_mut(rows_per * n)
        .enumerate()
        .for_each(|(bi, cblock)| {
            let i0 = bi * rows_per;
            let mb = cblock.len() / n;
            // SAFETY: rows i0..i0+mb of op(a) start at element i0 * rsa of a (rsa >= 0) and lie inside a
            // because op(a) [m, k] does; b and the strides are as above; cblock is [mb, n] row-major and
            // disjoint from the other blocks.
            unsafe {
                T::gemm_raw(
                    mb,
                    k,
                    n,
                    alpha,
                    a.as_ptr().offset(i0 as isize * rsa),
                    rsa,
                    csa,
                    b.as_ptr(),
                    rsb,
                    csb,
                    beta,
                    cblock.as_mut_ptr(),
                    n as isize,
                    1,
                )
            }
        });
}

/// Columns per block of the column split: the f32 kernel's panel width, so no block splits a panel.
const COL_ALIGN: usize = 32;

/// The output pointer shared by the column blocks, which write disjoint columns.
#[derive(Clone, Copy)]
struct SendPtr<T>(*mut T);
// SAFETY: the pointer is only dereferenced by `gemm_slices`' column blocks, each on its own columns of
// an output that the caller borrows mutably for the whole parallel section; T itself is Send.
unsafe impl<T: Send> Send for SendPtr<T> {}
// SAFETY: as above; sharing the pointer value between threads is harmless, the accesses are disjoint.
unsafe impl<T: Send> Sync for SendPtr<T> {}

impl<T> SendPtr<T> {
    /// The pointer (a method, so closures capture the whole `SendPtr` rather than its raw field).
    fn get(self) -> *mut T {
        self.0
    }
}

/// [`gemm`] on plain row-major slices, for operands that are part of a larger buffer (e.g. the first
/// `seq` steps of a `[seq + 1, batch, h]` state history): `c [m, n] = alpha * op(a) op(b) + beta * c`,
/// with `a` holding `[m, k]` (`[k, m]` if `ta = Yes`) and `b` holding `[k, n]` (`[n, k]` if `tb = Yes`)
/// in their first elements. Large products run on several rayon threads, as in [`gemm`].
///
/// # Panics
/// If a slice is shorter than its matrix.
#[allow(clippy::too_many_arguments)]
pub fn gemm_slice<T: Float>(
    (m, k, n): (usize, usize, usize),
    alpha: T,
    a: &[T],
    ta: Transpose,
    b: &[T],
    tb: Transpose,
    beta: T,
    c: &mut [T],
) {
    assert!(
        a.len() >= m * k && b.len() >= k * n && c.len() >= m * n,
        "gemm_slice: [{m}, {k}] x [{k}, {n}] needs a, b, c of at least {}, {}, {} elements, got {}, {}, {}",
        m * k,
        k * n,
        m * n,
        a.len(),
        b.len(),
        c.len()
    );
    let (_, _, rsa, csa) = match ta {
        Transpose::No => op_dims(m, k, ta),
        Transpose::Yes => op_dims(k, m, ta),
    };
    let (_, _, rsb, csb) = match tb {
        Transpose::No => op_dims(k, n, tb),
        Transpose::Yes => op_dims(n, k, tb),
    };
    gemm_slices(
        m,
        k,
        n,
        alpha,
        &a[..m * k],
        rsa,
        csa,
        &b[..k * n],
        rsb,
        csb,
        beta,
        &mut c[..m * n],
    );
}

/// `(batch, rows, cols)` of a tensor viewed as a stack of matrices over its last two axes.
fn batch_dims<T: Float>(x: &Tensor<T>) -> (usize, usize, usize) {
    let s = x.shape();
    match s.len() {
        0 => (1, 1, 1),
        1 => (1, 1, s[0]),
        r => (s[..r - 2].iter().product(), s[r - 2], s[r - 1]),
    }
}

/// Strided batched product: for every `i`, `c[i] = alpha * op(a[i]) op(b[i]) + beta * c[i]`.
///
/// - `a`: `[.., batch dims .., m, k]` (the last two axes are the matrix; `[m, k]` or `[k, m]` if transposed)
/// - `b`: `[.., k, n]` (or `[.., n, k]`), same batch count
/// - `c`: `[.., m, n]`, same batch count
///
/// Attention scores are `gemm_batched(scores [b*h, t, t], scale, q [b*h, t, d], No, k [b*h, t, d], Yes, 0)`.
/// The batch is spread over rayon threads.
///
/// # Panics
/// If the batch counts or matrix shapes disagree; the message names the three shapes.
#[allow(clippy::too_many_arguments)]
pub fn gemm_batched<T: Float>(
    c: &mut Tensor<T>,
    alpha: T,
    a: &Tensor<T>,
    ta: Transpose,
    b: &Tensor<T>,
    tb: Transpose,
    beta: T,
) {
    let (ba, ar, ac) = batch_dims(a);
    let (bb, br, bc) = batch_dims(b);
    let (bc_, cr, cc) = batch_dims(c);
    let (m, k, rsa, csa) = op_dims(ar, ac, ta);
    let (kb, n, rsb, csb) = op_dims(br, bc, tb);
    assert!(
        ba == bb && ba == bc_ && k == kb && cr == m && cc == n,
        "gemm_batched: shape mismatch: a {:?} ({ta:?}), b {:?} ({tb:?}), c {:?}: need equal batch counts \
         (got {ba}, {bb}, {bc_}), op(a) [{m}, {k}] times op(b) [{kb}, {n}] into c [{m}, {n}]",
        a.shape(),
        b.shape(),
        c.shape()
    );
    let (sa, sb, sc) = (m * k, k * n, m * n);
    if ba == 0 || sc == 0 {
        return;
    }
    let (a, b) = (a.as_slice(), b.as_slice());
    let one = |i: usize, cm: &mut [T]| {
        gemm_single(
            m,
            k,
            n,
            alpha,
            &a[i * sa..(i + 1) * sa],
            rsa,
            csa,
            &b[i * sb..(i + 1) * sb],
            rsb,
            csb,
            beta,
            cm,
        )
    };
    let c = c.as_mut_slice();
    if ba == 1 {
        gemm_slices(m, k, n, alpha, a, rsa, csa, b, rsb, csb, beta, c);
    } else if ba * sc * k.max(1) < PAR_MIN_FLOPS {
        c.chunks_mut(sc).enumerate().for_each(|(i, cm)| one(i, cm));
    } else {
        c.par_chunks_mut(sc)
            .enumerate()
            .for_each(|(i, cm)| one(i, cm));
    }
}

/// One product on one thread (used inside the batched loop, which is already parallel).
#[allow(clippy::too_many_arguments)]
fn gemm_single<T: Float>(
    m: usize,
    k: usize,
    n: usize,
    alpha: T,
    a: &[T],
    rsa: isize,
    csa: isize,
    b: &[T],
    rsb: isize,
    csb: isize,
    beta: T,
    c: &mut [T],
) {
    if k == 0 {
        for v in c.iter_mut() {
            *v = if beta == T::ZERO { T::ZERO } else { beta * *v };
        }
        return;
    }
    // SAFETY: a is exactly op(a)'s [m, k] storage and b op(b)'s [k, n] (sliced per batch item by the
    // caller), the strides describe those layouts, and c is a disjoint [m, n] row-major slice.
    unsafe {
        T::gemm_raw(
            m,
            k,
            n,
            alpha,
            a.as_ptr(),
            rsa,
            csa,
            b.as_ptr(),
            rsb,
            csb,
            beta,
            c.as_mut_ptr(),
            n as isize,
            1,
        )
    }
}
