//! Elementwise arithmetic, bias broadcast and its gradient, fused updates.
//!
//! All binary ops require identical shapes (no implicit broadcasting except the explicit bias ops).

use crate::par::{PAR_MIN_ELEMS, for_flat_chunks, for_row_chunks, rows_per_chunk};
use crate::tensor::assert_same_shape;
use crate::{Float, Tensor};
use rayon::prelude::*;

#[track_caller]
fn zip2<T: Float>(
    op: &str,
    out: &mut Tensor<T>,
    a: &Tensor<T>,
    b: &Tensor<T>,
    f: impl Fn(T, T) -> T + Sync + Send,
) {
    assert_same_shape(op, "a", a.shape(), "b", b.shape());
    assert_same_shape(op, "out", out.shape(), "a", a.shape());
    let (a, b) = (a.as_slice(), b.as_slice());
    for_flat_chunks(out.as_mut_slice(), |off, o| {
        let n = o.len();
        for ((o, &x), &y) in o.iter_mut().zip(&a[off..off + n]).zip(&b[off..off + n]) {
            *o = f(x, y);
        }
    });
}

#[track_caller]
fn map1<T: Float>(op: &str, out: &mut Tensor<T>, a: &Tensor<T>, f: impl Fn(T) -> T + Sync + Send) {
    assert_same_shape(op, "out", out.shape(), "a", a.shape());
    let a = a.as_slice();
    for_flat_chunks(out.as_mut_slice(), |off, o| {
        let n = o.len();
        for (o, &x) in o.iter_mut().zip(&a[off..off + n]) {
            *o = f(x);
        }
    });
}

/// Updates `y` in place from `x`: `y[i] = f(y[i], x[i])`.
#[track_caller]
fn update<T: Float>(
    op: &str,
    y: &mut Tensor<T>,
    x: &Tensor<T>,
    f: impl Fn(T, T) -> T + Sync + Send,
) {
    assert_same_shape(op, "y", y.shape(), "x", x.shape());
    let x = x.as_slice();
    for_flat_chunks(y.as_mut_slice(), |off, o| {
        let n = o.len();
        for (o, &v) in o.iter_mut().zip(&x[off..off + n]) {
            *o = f(*o, v);
        }
    });
}

/// `out = a + b` (same shapes).
#[track_caller]
pub fn add<T: Float>(out: &mut Tensor<T>, a: &Tensor<T>, b: &Tensor<T>) {
    zip2("add", out, a, b, |x, y| x + y);
}

/// `out = a - b` (same shapes).
#[track_caller]
pub fn sub<T: Float>(out: &mut Tensor<T>, a: &Tensor<T>, b: &Tensor<T>) {
    zip2("sub", out, a, b, |x, y| x - y);
}

/// `out = a * b` elementwise (same shapes).
#[track_caller]
pub fn mul<T: Float>(out: &mut Tensor<T>, a: &Tensor<T>, b: &Tensor<T>) {
    zip2("mul", out, a, b, |x, y| x * y);
}

/// `out = s * a`.
#[track_caller]
pub fn scale<T: Float>(out: &mut Tensor<T>, a: &Tensor<T>, s: T) {
    map1("scale", out, a, |x| s * x);
}

/// `y *= s` in place.
pub fn scale_inplace<T: Float>(y: &mut Tensor<T>, s: T) {
    for_flat_chunks(y.as_mut_slice(), |_, o| o.iter_mut().for_each(|v| *v *= s));
}

/// `y += alpha * x` (BLAS axpy; `alpha = 1` is gradient accumulation).
#[track_caller]
pub fn axpy<T: Float>(y: &mut Tensor<T>, alpha: T, x: &Tensor<T>) {
    update("axpy", y, x, |yv, xv| yv + alpha * xv);
}

/// `y += x` (residual connections, gradient accumulation).
#[track_caller]
pub fn add_assign<T: Float>(y: &mut Tensor<T>, x: &Tensor<T>) {
    update("add_assign", y, x, |yv, xv| yv + xv);
}

/// `y = alpha * x + beta * y` (fused; `beta = 0` overwrites without reading `y`).
#[track_caller]
pub fn axpby<T: Float>(y: &mut Tensor<T>, alpha: T, x: &Tensor<T>, beta: T) {
    if beta == T::ZERO {
        update("axpby", y, x, |_, xv| alpha * xv);
    } else {
        update("axpby", y, x, |yv, xv| alpha * xv + beta * yv);
    }
}

/// `out += a * b` elementwise (fused multiply-accumulate: gate products in LSTM/GRU backward).
#[track_caller]
pub fn mul_acc<T: Float>(out: &mut Tensor<T>, a: &Tensor<T>, b: &Tensor<T>) {
    assert_same_shape("mul_acc", "a", a.shape(), "b", b.shape());
    assert_same_shape("mul_acc", "out", out.shape(), "a", a.shape());
    let (a, b) = (a.as_slice(), b.as_slice());
    for_flat_chunks(out.as_mut_slice(), |off, o| {
        let n = o.len();
        for ((o, &x), &y) in o.iter_mut().zip(&a[off..off + n]).zip(&b[off..off + n]) {
            *o += x * y;
        }
    });
}

/// `y[r, :] += bias` for every row of the matrix view (bias broadcast over rows).
///
/// - `y`: `[.., c]`, `bias`: `[c]`
///
/// # Panics
/// If `bias` is not a vector of length `y.cols()`.
#[track_caller]
pub fn add_bias<T: Float>(y: &mut Tensor<T>, bias: &Tensor<T>) {
    let c = y.cols();
    assert!(
        bias.shape() == [c],
        "add_bias: shape mismatch: y has shape {:?} so bias must be [{c}], got {:?}",
        y.shape(),
        bias.shape()
    );
    let bias = bias.as_slice();
    for_row_chunks(y.as_mut_slice(), c, |_, chunk| {
        for row in chunk.chunks_exact_mut(c) {
            for (v, &b) in row.iter_mut().zip(bias) {
                *v += b;
            }
        }
    });
}

/// Backward of [`add_bias`]: `dbias += sum over rows of dy` (column sums; parameter gradient, so `+=`).
///
/// - `dbias`: `[c]`, `dy`: `[.., c]`
///
/// The summation order is fixed by the shape, so the result is identical on any thread count.
///
/// # Panics
/// If `dbias` is not a vector of length `dy.cols()`.
#[track_caller]
pub fn add_bias_backward<T: Float>(dbias: &mut Tensor<T>, dy: &Tensor<T>) {
    let c = dy.cols();
    assert!(
        dbias.shape() == [c],
        "add_bias_backward: shape mismatch: dy has shape {:?} so dbias must be [{c}], got {:?}",
        dy.shape(),
        dbias.shape()
    );
    let dy = dy.as_slice();
    let db = dbias.as_mut_slice();
    if c == 0 {
        return;
    }
    let col_sums = |rows: &[T], acc: &mut [T]| {
        for row in rows.chunks_exact(c) {
            for (a, &v) in acc.iter_mut().zip(row) {
                *a += v;
            }
        }
    };
    if dy.len() < PAR_MIN_ELEMS {
        col_sums(dy, db);
        return;
    }
    // Per-chunk partial sums (one small allocation per chunk per call), reduced in chunk order.
    let rpc = rows_per_chunk(c);
    let partials: Vec<Vec<T>> = dy
        .par_chunks(rpc * c)
        .map(|rows| {
            let mut acc = vec![T::ZERO; c];
            col_sums(rows, &mut acc);
            acc
        })
        .collect();
    for p in partials {
        for (d, v) in db.iter_mut().zip(p) {
            *d += v;
        }
    }
}
