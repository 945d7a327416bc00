//! Layer normalisation over the last axis (llm.c's `layernorm_forward` / `layernorm_backward`).

use crate::par::{PAR_MIN_ELEMS, rows_per_chunk};
use crate::simd;
use crate::tensor::assert_same_shape;
use crate::{Float, Tensor};
use rayon::prelude::*;

#[track_caller]
fn check_params<T: Float>(
    op: &str,
    x: &Tensor<T>,
    stats: [&Tensor<T>; 2],
    params: [&Tensor<T>; 2],
) {
    let (rows, c) = (x.rows(), x.cols());
    for (name, s) in ["mean", "rstd"].iter().zip(stats) {
        assert!(
            s.numel() == rows,
            "{op}: shape mismatch: x has shape {:?} ({rows} rows) but {name} has shape {:?}",
            x.shape(),
            s.shape()
        );
    }
    for (name, p) in ["gamma", "beta/dgamma"].iter().zip(params) {
        assert!(
            p.shape() == [c],
            "{op}: shape mismatch: x has shape {:?} so {name} must be [{c}], got {:?}",
            x.shape(),
            p.shape()
        );
    }
}

/// `out = (x - mean) * rstd * gamma + beta` per row, saving `mean` and `rstd = 1 / sqrt(var + eps)`
/// (biased variance, as PyTorch) "to be used later in the backward pass".
///
/// - `out`, `x`: `[.., c]`; `mean`, `rstd`: `rows` elements (e.g. `[batch, seq]`); `gamma`, `beta`: `[c]`.
///
/// # Panics
/// If the shapes disagree.
#[allow(clippy::too_many_arguments)]
#[track_caller]
pub fn layernorm_forward<T: Float>(
    out: &mut Tensor<T>,
    mean: &mut Tensor<T>,
    rstd: &mut Tensor<T>,
    x: &Tensor<T>,
    gamma: &Tensor<T>,
    beta: &Tensor<T>,
    eps: T,
) {
    assert_same_shape("layernorm_forward", "out", out.shape(), "x", x.shape());
    check_params("layernorm_forward", x, [mean, rstd], [gamma, beta]);
    let c = x.cols();
    if c == 0 {
        return;
    }
    let (xs, g, b) = (x.as_slice(), gamma.as_slice(), beta.as_slice());
    let (out, mean, rstd) = (out.as_mut_slice(), mean.as_mut_slice(), rstd.as_mut_slice());
    if xs.len() < PAR_MIN_ELEMS {
        simd::ln_fwd_rows(xs, out, mean, rstd, g, b, eps, c);
    } else {
        let rpc = rows_per_chunk(c);
        out.par_chunks_mut(rpc * c)
            .zip(xs.par_chunks(rpc * c))
            .zip(mean.par_chunks_mut(rpc))
            .zip(rstd.par_chunks_mut(rpc))
            .for_each(|(((oc, xc), mc), sc)| simd::ln_fwd_rows(xc, oc, mc, sc, g, b, eps, c));
    }
}

/// Backward of [`layernorm_forward`]. With `n = (x - mean) * rstd` and `g = dout * gamma`:
/// `dx = rstd * (g - mean(g) - n * mean(g * n))` (written, `=`), `dgamma += sum_rows dout * n`,
/// `dbeta += sum_rows dout` (parameter gradients accumulate).
///
/// - `dx`, `dout`, `x`: `[.., c]`; `mean`, `rstd`: `rows` elements saved by the forward;
///   `gamma`, `dgamma`, `dbeta`: `[c]`.
///
/// Column sums use fixed chunks, so results are identical on any thread count.
///
/// # Panics
/// If the shapes disagree.
#[allow(clippy::too_many_arguments)]
#[track_caller]
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
    assert_same_shape("layernorm_backward", "dout", dout.shape(), "x", x.shape());
    assert_same_shape("layernorm_backward", "dx", dx.shape(), "x", x.shape());
    check_params("layernorm_backward", x, [mean, rstd], [gamma, dgamma]);
    assert_same_shape(
        "layernorm_backward",
        "dbeta",
        dbeta.shape(),
        "gamma",
        gamma.shape(),
    );
    let c = x.cols();
    if c == 0 {
        return;
    }
    let (dos, xs, ms, ss, g) = (
        dout.as_slice(),
        x.as_slice(),
        mean.as_slice(),
        rstd.as_slice(),
        gamma.as_slice(),
    );
    // One chunk of rows starting at row r0: writes dx rows, accumulates into (dg, db).
    let chunk = |r0: usize, dxc: &mut [T], dg: &mut [T], db: &mut [T]| {
        let n = dxc.len() / c;
        let span = r0 * c..(r0 + n) * c;
        simd::ln_bwd_rows(
            dxc,
            &dos[span.clone()],
            &xs[span],
            &ms[r0..r0 + n],
            &ss[r0..r0 + n],
            g,
            dg,
            db,
            c,
        );
    };
    let (dgs, dbs) = (dgamma.as_mut_slice(), dbeta.as_mut_slice());
    if xs.len() < PAR_MIN_ELEMS {
        chunk(0, dx.as_mut_slice(), dgs, dbs);
        return;
    }
    let rpc = rows_per_chunk(c);
    let partials: Vec<Vec<T>> = dx
        .as_mut_slice()
        .par_chunks_mut(rpc * c)
        .enumerate()
        .map(|(ci, dxc)| {
            let mut acc = vec![T::ZERO; 2 * c];
            let (dg, db) = acc.split_at_mut(c);
            chunk(ci * rpc, dxc, dg, db);
            acc
        })
        .collect();
    for p in partials {
        for j in 0..c {
            dgs[j] += p[j];
            dbs[j] += p[c + j];
        }
    }
}
