//! The oracle: plain, serial, obviously-correct versions of every op, with the same signatures as the
//! fast kernels. Never optimise this module; every fast path is tested against it.

// Index loops that spell out the maths are the point of this module.
#![allow(clippy::needless_range_loop)]

use crate::activation::{gelu_grad_scalar, gelu_scalar, sigmoid_scalar};
use crate::dropout::dropout_keep;
use crate::reduce::{Exclude, NO_ID, ranks_before};
use crate::{DropoutKey, Float, Gelu, Mask, Padding, Tensor, Transpose};

/// Element `(i, j)` of `op(x)` where `x` is viewed as a `[rows, cols]` matrix.
fn at<T: Float>(x: &Tensor<T>, t: Transpose, i: usize, j: usize) -> T {
    let c = x.cols();
    match t {
        Transpose::No => x.as_slice()[i * c + j],
        Transpose::Yes => x.as_slice()[j * c + i],
    }
}

/// Reference [`crate::gemm`]: the triple loop.
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
    let (m, k) = match ta {
        Transpose::No => (a.rows(), a.cols()),
        Transpose::Yes => (a.cols(), a.rows()),
    };
    let (kb, n) = match tb {
        Transpose::No => (b.rows(), b.cols()),
        Transpose::Yes => (b.cols(), b.rows()),
    };
    assert!(
        k == kb && c.rows() == m && c.cols() == n,
        "reference gemm: shape mismatch"
    );
    for i in 0..m {
        for j in 0..n {
            let mut s = T::ZERO;
            for p in 0..k {
                s += at(a, ta, i, p) * at(b, tb, p, j);
            }
            let old = c.as_slice()[i * n + j];
            c.as_mut_slice()[i * n + j] = if beta == T::ZERO {
                alpha * s
            } else {
                alpha * s + beta * old
            };
        }
    }
}

/// Splits a tensor into its stack of matrices over the last two axes.
fn matrices<T: Float>(x: &Tensor<T>) -> Vec<Tensor<T>> {
    let s = x.shape();
    let (r, c) = match s.len() {
        0 => (1, 1),
        1 => (1, s[0]),
        n => (s[n - 2], s[n - 1]),
    };
    let size = r * c;
    let count = x.numel().checked_div(size).unwrap_or(0);
    (0..count)
        .map(|i| {
            Tensor::from_vec(&[r, c], x.as_slice()[i * size..(i + 1) * size].to_vec()).unwrap()
        })
        .collect()
}

/// Reference [`crate::gemm_batched`]: one reference GEMM per matrix of the stack.
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
    let (am, bm, mut cm) = (matrices(a), matrices(b), matrices(c));
    assert!(
        am.len() == bm.len() && am.len() == cm.len(),
        "reference gemm_batched: batch mismatch"
    );
    let mut out = Vec::new();
    for ((x, y), z) in am.iter().zip(&bm).zip(cm.iter_mut()) {
        gemm(z, alpha, x, ta, y, tb, beta);
        out.extend_from_slice(z.as_slice());
    }
    c.as_mut_slice().copy_from_slice(&out);
}

/// Reference [`crate::add`].
pub fn add<T: Float>(out: &mut Tensor<T>, a: &Tensor<T>, b: &Tensor<T>) {
    for i in 0..out.numel() {
        out.as_mut_slice()[i] = a.as_slice()[i] + b.as_slice()[i];
    }
}

/// Reference [`crate::sub`].
pub fn sub<T: Float>(out: &mut Tensor<T>, a: &Tensor<T>, b: &Tensor<T>) {
    for i in 0..out.numel() {
        out.as_mut_slice()[i] = a.as_slice()[i] - b.as_slice()[i];
    }
}

/// Reference [`crate::mul`].
pub fn mul<T: Float>(out: &mut Tensor<T>, a: &Tensor<T>, b: &Tensor<T>) {
    for i in 0..out.numel() {
        out.as_mut_slice()[i] = a.as_slice()[i] * b.as_slice()[i];
    }
}

/// Reference [`crate::scale`].
pub fn scale<T: Float>(out: &mut Tensor<T>, a: &Tensor<T>, s: T) {
    for i in 0..out.numel() {
        out.as_mut_slice()[i] = s * a.as_slice()[i];
    }
}

/// Reference [`crate::axpy`].
pub fn axpy<T: Float>(y: &mut Tensor<T>, alpha: T, x: &Tensor<T>) {
    for i in 0..y.numel() {
        y.as_mut_slice()[i] += alpha * x.as_slice()[i];
    }
}

/// Reference [`crate::axpby`].
pub fn axpby<T: Float>(y: &mut Tensor<T>, alpha: T, x: &Tensor<T>, beta: T) {
    for i in 0..y.numel() {
        let old = if beta == T::ZERO {
            T::ZERO
        } else {
            beta * y.as_slice()[i]
        };
        y.as_mut_slice()[i] = alpha * x.as_slice()[i] + old;
    }
}

/// Reference [`crate::mul_acc`].
pub fn mul_acc<T: Float>(out: &mut Tensor<T>, a: &Tensor<T>, b: &Tensor<T>) {
    for i in 0..out.numel() {
        out.as_mut_slice()[i] += a.as_slice()[i] * b.as_slice()[i];
    }
}

/// Reference [`crate::add_bias`].
pub fn add_bias<T: Float>(y: &mut Tensor<T>, bias: &Tensor<T>) {
    let c = y.cols();
    for r in 0..y.rows() {
        for j in 0..c {
            y.as_mut_slice()[r * c + j] += bias.as_slice()[j];
        }
    }
}

/// Reference [`crate::add_bias_backward`].
pub fn add_bias_backward<T: Float>(dbias: &mut Tensor<T>, dy: &Tensor<T>) {
    let c = dy.cols();
    for j in 0..c {
        let mut s = T::ZERO;
        for r in 0..dy.rows() {
            s += dy.as_slice()[r * c + j];
        }
        dbias.as_mut_slice()[j] += s;
    }
}

fn map<T: Float>(out: &mut Tensor<T>, x: &Tensor<T>, f: impl Fn(T) -> T) {
    for i in 0..out.numel() {
        out.as_mut_slice()[i] = f(x.as_slice()[i]);
    }
}

fn map2<T: Float>(out: &mut Tensor<T>, a: &Tensor<T>, b: &Tensor<T>, f: impl Fn(T, T) -> T) {
    for i in 0..out.numel() {
        out.as_mut_slice()[i] = f(a.as_slice()[i], b.as_slice()[i]);
    }
}

/// Reference [`crate::sigmoid_forward`].
pub fn sigmoid_forward<T: Float>(out: &mut Tensor<T>, x: &Tensor<T>) {
    map(out, x, sigmoid_scalar);
}
/// Reference [`crate::sigmoid_backward`].
pub fn sigmoid_backward<T: Float>(dx: &mut Tensor<T>, dy: &Tensor<T>, y: &Tensor<T>) {
    map2(dx, dy, y, |g, y| g * y * (T::ONE - y));
}
/// Reference [`crate::tanh_forward`].
pub fn tanh_forward<T: Float>(out: &mut Tensor<T>, x: &Tensor<T>) {
    map(out, x, |v| v.tanh());
}
/// Reference [`crate::tanh_backward`].
pub fn tanh_backward<T: Float>(dx: &mut Tensor<T>, dy: &Tensor<T>, y: &Tensor<T>) {
    map2(dx, dy, y, |g, y| g * (T::ONE - y * y));
}
/// Reference [`crate::relu_forward`].
pub fn relu_forward<T: Float>(out: &mut Tensor<T>, x: &Tensor<T>) {
    map(out, x, |v| if v > T::ZERO { v } else { T::ZERO });
}
/// Reference [`crate::relu_backward`].
pub fn relu_backward<T: Float>(dx: &mut Tensor<T>, dy: &Tensor<T>, y: &Tensor<T>) {
    map2(dx, dy, y, |g, y| if y > T::ZERO { g } else { T::ZERO });
}
/// Reference [`crate::gelu_forward`].
pub fn gelu_forward<T: Float>(out: &mut Tensor<T>, x: &Tensor<T>, kind: Gelu) {
    map(out, x, |v| gelu_scalar(v, kind));
}
/// Reference [`crate::gelu_backward`].
pub fn gelu_backward<T: Float>(dx: &mut Tensor<T>, dy: &Tensor<T>, x: &Tensor<T>, kind: Gelu) {
    map2(dx, dy, x, |g, v| g * gelu_grad_scalar(v, kind));
}

/// Whether entry `(r, j)` of a score tensor of `shape` is visible under `mask`, and its additive term.
fn mask_entry<T: Float>(mask: &Mask<'_, T>, shape: &[usize], r: usize, j: usize) -> (bool, T) {
    let k = *shape.last().unwrap_or(&1);
    let q = if shape.len() >= 2 {
        shape[shape.len() - 2]
    } else {
        1
    };
    let rows: usize = shape.iter().product::<usize>() / k.max(1);
    let i = r % q; // query index within its matrix
    let b = r / q; // matrix index
    let causal = j + q <= i + k; // j <= i + (k - q)
    let pad = |keep: &[bool]| {
        let n = keep.len() / k;
        let group = (rows / q) / n;
        keep[(b / group) * k + j]
    };
    match mask {
        Mask::None => (true, T::ZERO),
        Mask::Additive(m) => {
            let mr = m.rows();
            (true, m.as_slice()[(r % mr) * k + j])
        }
        Mask::Keep(keep) => {
            let mr = keep.len() / k;
            (keep[(r % mr) * k + j], T::ZERO)
        }
        Mask::Causal => (causal, T::ZERO),
        Mask::KeyPadding(keep) => (pad(keep), T::ZERO),
        Mask::CausalKeyPadding(keep) => (causal && pad(keep), T::ZERO),
    }
}

/// Masked scores of row `r`: `None` for masked entries.
fn masked_row<T: Float>(x: &Tensor<T>, mask: &Mask<'_, T>, r: usize) -> Vec<Option<T>> {
    let k = x.cols();
    (0..k)
        .map(|j| {
            let (vis, add) = mask_entry(mask, x.shape(), r, j);
            let v = x.as_slice()[r * k + j] + add;
            if vis && v != T::NEG_INFINITY {
                Some(v)
            } else {
                None
            }
        })
        .collect()
}

/// Reference [`crate::softmax_forward`].
pub fn softmax_forward<T: Float>(out: &mut Tensor<T>, x: &Tensor<T>, mask: Mask<'_, T>) {
    let k = x.cols();
    for r in 0..x.rows() {
        let s = masked_row(x, &mask, r);
        let mx = s.iter().flatten().fold(T::NEG_INFINITY, |m, &v| m.max(v));
        let z: T = s.iter().flatten().fold(T::ZERO, |a, &v| a + (v - mx).exp());
        for j in 0..k {
            out.as_mut_slice()[r * k + j] = match s[j] {
                Some(v) => (v - mx).exp() / z,
                None => T::ZERO,
            };
        }
    }
}

/// Reference [`crate::softmax_backward`].
pub fn softmax_backward<T: Float>(dx: &mut Tensor<T>, dy: &Tensor<T>, y: &Tensor<T>) {
    let k = y.cols();
    for r in 0..y.rows() {
        let mut dot = T::ZERO;
        for j in 0..k {
            dot += dy.as_slice()[r * k + j] * y.as_slice()[r * k + j];
        }
        for j in 0..k {
            let p = y.as_slice()[r * k + j];
            dx.as_mut_slice()[r * k + j] = p * (dy.as_slice()[r * k + j] - dot);
        }
    }
}

/// Reference [`crate::log_softmax_forward`].
pub fn log_softmax_forward<T: Float>(out: &mut Tensor<T>, x: &Tensor<T>, mask: Mask<'_, T>) {
    let k = x.cols();
    for r in 0..x.rows() {
        let s = masked_row(x, &mask, r);
        let mx = s.iter().flatten().fold(T::NEG_INFINITY, |m, &v| m.max(v));
        let z: T = s.iter().flatten().fold(T::ZERO, |a, &v| a + (v - mx).exp());
        for j in 0..k {
            out.as_mut_slice()[r * k + j] = match s[j] {
                Some(v) => v - mx - z.ln(),
                None => T::NEG_INFINITY,
            };
        }
    }
}

/// Reference [`crate::log_softmax_backward`].
pub fn log_softmax_backward<T: Float>(dx: &mut Tensor<T>, dy: &Tensor<T>, y: &Tensor<T>) {
    let k = y.cols();
    for r in 0..y.rows() {
        let mut sum = T::ZERO;
        for j in 0..k {
            if y.as_slice()[r * k + j] != T::NEG_INFINITY {
                sum += dy.as_slice()[r * k + j];
            }
        }
        for j in 0..k {
            let l = y.as_slice()[r * k + j];
            dx.as_mut_slice()[r * k + j] = if l == T::NEG_INFINITY {
                T::ZERO
            } else {
                dy.as_slice()[r * k + j] - l.exp() * sum
            };
        }
    }
}

/// Reference [`crate::layernorm_forward`].
#[allow(clippy::too_many_arguments)]
pub fn layernorm_forward<T: Float>(
    out: &mut Tensor<T>,
    mean: &mut Tensor<T>,
    rstd: &mut Tensor<T>,
    x: &Tensor<T>,
    gamma: &Tensor<T>,
    beta: &Tensor<T>,
    eps: T,
) {
    let c = x.cols();
    let n = T::from_f64(c as f64);
    for r in 0..x.rows() {
        let row = &x.as_slice()[r * c..(r + 1) * c];
        let mu = row.iter().fold(T::ZERO, |a, &v| a + v) / n;
        let var = row.iter().fold(T::ZERO, |a, &v| a + (v - mu) * (v - mu)) / n;
        let rs = T::ONE / (var + eps).sqrt();
        for j in 0..c {
            out.as_mut_slice()[r * c + j] =
                (row[j] - mu) * rs * gamma.as_slice()[j] + beta.as_slice()[j];
        }
        mean.as_mut_slice()[r] = mu;
        rstd.as_mut_slice()[r] = rs;
    }
}

/// Reference [`crate::layernorm_backward`].
#[allow(clippy::too_many_arguments)]
pub fn layernorm_backward<T: Float>(
    dx: &mut Tensor<T>,
    dgamma: &mut Tensor<T>,
    dbeta: &mut Tensor<T>,
    dout: &Tensor<T>,
    x: &Tensor<T>,
    mean: &Tensor<T>,
    rstd: &Tensor<T>,
    gamma: &Tensor<T>,
) {
    let c = x.cols();
    let n = T::from_f64(c as f64);
    for r in 0..x.rows() {
        let (mu, rs) = (mean.as_slice()[r], rstd.as_slice()[r]);
        let norm: Vec<T> = (0..c)
            .map(|j| (x.as_slice()[r * c + j] - mu) * rs)
            .collect();
        let g: Vec<T> = (0..c)
            .map(|j| dout.as_slice()[r * c + j] * gamma.as_slice()[j])
            .collect();
        let mean_g = g.iter().fold(T::ZERO, |a, &v| a + v) / n;
        let mean_gn = (0..c).fold(T::ZERO, |a, j| a + g[j] * norm[j]) / n;
        for j in 0..c {
            dx.as_mut_slice()[r * c + j] = rs * (g[j] - mean_g - norm[j] * mean_gn);
            dgamma.as_mut_slice()[j] += dout.as_slice()[r * c + j] * norm[j];
            dbeta.as_mut_slice()[j] += dout.as_slice()[r * c + j];
        }
    }
}

/// Reference [`crate::embedding_forward`].
pub fn embedding_forward<T: Float>(out: &mut Tensor<T>, table: &Tensor<T>, ids: &[u32]) {
    let d = table.cols();
    for (i, &id) in ids.iter().enumerate() {
        for j in 0..d {
            out.as_mut_slice()[i * d + j] = table.as_slice()[id as usize * d + j];
        }
    }
}

/// Reference [`crate::embedding_backward`].
pub fn embedding_backward<T: Float>(
    dtable: &mut Tensor<T>,
    dout: &Tensor<T>,
    ids: &[u32],
    padding: Padding,
) {
    let d = dtable.cols();
    for (i, &id) in ids.iter().enumerate() {
        if padding == Padding::Skip(id) {
            continue;
        }
        for j in 0..d {
            dtable.as_mut_slice()[id as usize * d + j] += dout.as_slice()[i * d + j];
        }
    }
}

/// Reference [`crate::dropout_forward`].
pub fn dropout_forward<T: Float>(out: &mut Tensor<T>, x: &Tensor<T>, p: f64, key: DropoutKey) {
    for i in 0..x.numel() {
        out.as_mut_slice()[i] = if dropout_keep(key, i as u64, p) {
            x.as_slice()[i] * T::from_f64(1.0 / (1.0 - p))
        } else {
            T::ZERO
        };
    }
}

/// Reference [`crate::dropout_backward`].
pub fn dropout_backward<T: Float>(dx: &mut Tensor<T>, dy: &Tensor<T>, p: f64, key: DropoutKey) {
    dropout_forward(dx, dy, p, key);
}

/// Reference [`crate::sum`] (accumulated in `f64`, serially).
pub fn sum<T: Float>(x: &Tensor<T>) -> T {
    T::from_f64(x.as_slice().iter().map(|v| v.to_f64()).sum())
}

/// Reference [`crate::sq_norm`].
pub fn sq_norm<T: Float>(x: &Tensor<T>) -> T {
    T::from_f64(x.as_slice().iter().map(|v| v.to_f64() * v.to_f64()).sum())
}

/// Reference [`crate::sum_last`].
pub fn sum_last<T: Float>(out: &mut Tensor<T>, x: &Tensor<T>) {
    let k = x.cols();
    for r in 0..x.rows() {
        let mut s = T::ZERO;
        for j in 0..k {
            s += x.as_slice()[r * k + j];
        }
        out.as_mut_slice()[r] = s;
    }
}

/// Reference [`crate::max_last`].
pub fn max_last<T: Float>(out: &mut Tensor<T>, x: &Tensor<T>) {
    let k = x.cols();
    for r in 0..x.rows() {
        let mut m = T::NEG_INFINITY;
        for j in 0..k {
            m = m.max(x.as_slice()[r * k + j]);
        }
        out.as_mut_slice()[r] = m;
    }
}

/// Reference [`crate::topk`]: sort every candidate of the row by (score desc, id asc), keep `k`.
pub fn topk<T: Float>(
    ids_out: &mut [u32],
    scores_out: &mut [T],
    scores: &Tensor<T>,
    k: usize,
    exclude: Exclude<'_>,
) {
    let n = scores.cols();
    for r in 0..scores.rows() {
        let ex: Vec<u32> = match exclude {
            Exclude::None => vec![],
            Exclude::Rows(rows) => rows[r].clone(),
            Exclude::Csr { offsets, ids } => ids[offsets[r]..offsets[r + 1]].to_vec(),
        };
        let mut cands: Vec<(T, u32)> = (0..n as u32)
            .filter(|j| !ex.contains(j))
            .map(|j| (scores.as_slice()[r * n + j as usize], j))
            .collect();
        cands.sort_by(|a, b| {
            if ranks_before(*a, *b) {
                std::cmp::Ordering::Less
            } else if ranks_before(*b, *a) {
                std::cmp::Ordering::Greater
            } else {
                std::cmp::Ordering::Equal
            }
        });
        for i in 0..k {
            let (s, id) = cands.get(i).copied().unwrap_or((T::NEG_INFINITY, NO_ID));
            ids_out[r * k + i] = id;
            scores_out[r * k + i] = s;
        }
    }
}

/// Reference [`crate::slice`]: element by element through multi-indices.
pub fn slice<T: Float>(out: &mut Tensor<T>, x: &Tensor<T>, axis: usize, start: usize) {
    let oshape = out.shape().to_vec();
    for flat in 0..out.numel() {
        let mut idx = unflatten(flat, &oshape);
        idx[axis] += start;
        out.as_mut_slice()[flat] = x.get(&idx);
    }
}

/// Reference [`crate::concat`].
pub fn concat<T: Float>(out: &mut Tensor<T>, inputs: &[&Tensor<T>], axis: usize) {
    let oshape = out.shape().to_vec();
    for flat in 0..out.numel() {
        let mut idx = unflatten(flat, &oshape);
        let mut t = 0;
        while idx[axis] >= inputs[t].shape()[axis] {
            idx[axis] -= inputs[t].shape()[axis];
            t += 1;
        }
        out.as_mut_slice()[flat] = inputs[t].get(&idx);
    }
}

/// Reference [`crate::transpose`].
pub fn transpose<T: Float>(out: &mut Tensor<T>, x: &Tensor<T>, a: usize, b: usize) {
    let oshape = out.shape().to_vec();
    for flat in 0..out.numel() {
        let mut idx = unflatten(flat, &oshape);
        idx.swap(a, b);
        out.as_mut_slice()[flat] = x.get(&idx);
    }
}

fn unflatten(mut flat: usize, shape: &[usize]) -> Vec<usize> {
    let mut idx = vec![0; shape.len()];
    for (i, &d) in shape.iter().enumerate().rev() {
        idx[i] = flat % d;
        flat /= d;
    }
    idx
}
