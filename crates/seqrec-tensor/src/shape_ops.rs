//! Copies that move data between layouts: slice / concat along an axis and swapping two axes.
//!
//! Tensors are contiguous, so these copy (there are no strided views); each copy moves whole contiguous
//! runs of the trailing axes.

use crate::{Float, Tensor};

/// `(pre, len, post)`: products of the axes before `axis`, the axis itself, and after it.
fn split_at_axis(shape: &[usize], axis: usize) -> (usize, usize, usize) {
    (
        shape[..axis].iter().product(),
        shape[axis],
        shape[axis + 1..].iter().product(),
    )
}

/// Checks that `part` equals `whole` except along `axis`, where `part` covers `start..start + len`.
#[track_caller]
fn check_part(op: &str, whole: &[usize], part: &[usize], axis: usize, start: usize) {
    let ok = whole.len() == part.len()
        && axis < whole.len()
        && whole
            .iter()
            .zip(part)
            .enumerate()
            .all(|(i, (w, p))| if i == axis { start + p <= *w } else { w == p });
    assert!(
        ok,
        "{op}: shape mismatch: a part of shape {part:?} at offset {start} along axis {axis} does not fit a \
         tensor of shape {whole:?} (all other axes must be equal)"
    );
}

/// Runs `f(whole_run, part_run)` over the matching contiguous runs of a whole tensor and a part of it.
fn for_runs(
    whole: &[usize],
    part: &[usize],
    axis: usize,
    start: usize,
    mut f: impl FnMut(usize, usize, usize),
) {
    let (pre, wlen, post) = split_at_axis(whole, axis);
    let plen = part[axis];
    let run = plen * post;
    for p in 0..pre {
        f((p * wlen + start) * post, p * run, run);
    }
}

/// `out = x[.., start..start + L, ..]` along `axis`, where `L = out.shape()[axis]`.
///
/// Selects time step `t` of `[batch, seq, d]` with `axis = 1, start = t` into `out: [batch, 1, d]`.
///
/// # Panics
/// If the shapes do not match except along `axis`, or the range exceeds the axis.
#[track_caller]
pub fn slice<T: Float>(out: &mut Tensor<T>, x: &Tensor<T>, axis: usize, start: usize) {
    check_part("slice", x.shape(), out.shape(), axis, start);
    let part = out.shape().to_vec();
    let (xs, os) = (x.as_slice(), out.as_mut_slice());
    for_runs(x.shape(), &part, axis, start, |w, p, n| {
        os[p..p + n].copy_from_slice(&xs[w..w + n])
    });
}

/// `dst[.., start..start + L, ..] = src` along `axis` (the inverse of [`slice`](fn@slice)).
///
/// # Panics
/// As [`slice`](fn@slice).
#[track_caller]
pub fn slice_assign<T: Float>(dst: &mut Tensor<T>, src: &Tensor<T>, axis: usize, start: usize) {
    check_part("slice_assign", dst.shape(), src.shape(), axis, start);
    let shape = dst.shape().to_vec();
    let (ss, ds) = (src.as_slice(), dst.as_mut_slice());
    for_runs(&shape, src.shape(), axis, start, |w, p, n| {
        ds[w..w + n].copy_from_slice(&ss[p..p + n])
    });
}

/// `dst[.., start..start + L, ..] += src` along `axis`: the backward of [`slice`](fn@slice) (gradients of several
/// slices of one tensor accumulate).
///
/// # Panics
/// As [`slice`](fn@slice).
#[track_caller]
pub fn slice_add<T: Float>(dst: &mut Tensor<T>, src: &Tensor<T>, axis: usize, start: usize) {
    check_part("slice_add", dst.shape(), src.shape(), axis, start);
    let shape = dst.shape().to_vec();
    let (ss, ds) = (src.as_slice(), dst.as_mut_slice());
    for_runs(&shape, src.shape(), axis, start, |w, p, n| {
        for (d, &s) in ds[w..w + n].iter_mut().zip(&ss[p..p + n]) {
            *d += s;
        }
    });
}

/// Concatenates `inputs` along `axis` into `out`. The backward is one [`slice`](fn@slice) per input.
///
/// # Panics
/// If the inputs do not match `out` except along `axis`, or their sizes along `axis` do not sum to
/// `out`'s.
#[track_caller]
pub fn concat<T: Float>(out: &mut Tensor<T>, inputs: &[&Tensor<T>], axis: usize) {
    let total: usize = inputs
        .iter()
        .map(|t| t.shape().get(axis).copied().unwrap_or(0))
        .sum();
    assert!(
        axis < out.ndim() && total == out.shape()[axis],
        "concat: shape mismatch: inputs {:?} along axis {axis} do not fill out of shape {:?}",
        inputs
            .iter()
            .map(|t| t.shape().to_vec())
            .collect::<Vec<_>>(),
        out.shape()
    );
    let mut start = 0;
    for t in inputs {
        slice_assign(out, t, axis, start);
        start += t.shape()[axis];
    }
}

/// `out = x` with axes `a` and `b` swapped (`a != b`): e.g. `[batch, seq, heads, dh]` ->
/// `[batch, heads, seq, dh]` with `a = 1, b = 2` to split attention heads, and back with the same call.
///
/// # Panics
/// If an axis is out of range or `out`'s shape is not `x`'s with the two axes swapped.
#[track_caller]
pub fn transpose<T: Float>(out: &mut Tensor<T>, x: &Tensor<T>, a: usize, b: usize) {
    let s = x.shape();
    assert!(
        a < s.len() && b < s.len() && a != b,
        "transpose: axes {a} and {b} invalid for shape {s:?}"
    );
    let (a, b) = (a.min(b), a.max(b));
    let mut expect = s.to_vec();
    expect.swap(a, b);
    assert!(
        out.shape() == expect.as_slice(),
        "transpose: shape mismatch: x {s:?} with axes {a} and {b} swapped is {expect:?}, but out has shape {:?}",
        out.shape()
    );
    let pre: usize = s[..a].iter().product();
    let (na, nb) = (s[a], s[b]);
    let mid: usize = s[a + 1..b].iter().product();
    let post: usize = s[b + 1..].iter().product();
    let (xs, os) = (x.as_slice(), out.as_mut_slice());
    for p in 0..pre {
        for i in 0..na {
            for m in 0..mid {
                for j in 0..nb {
                    let src = ((((p * na + i) * mid + m) * nb) + j) * post;
                    let dst = ((((p * nb + j) * mid + m) * na) + i) * post;
                    os[dst..dst + post].copy_from_slice(&xs[src..src + post]);
                }
            }
        }
    }
}
