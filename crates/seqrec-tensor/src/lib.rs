//! seqrec-tensor: contiguous row-major tensors and the numerical kernels every seqrec layer is written
//! against (llm.c style: hand-written forward and backward passes, no autograd).
//!
//! Principal types: [`Tensor`] (shape + storage on a [`Device`]), the element trait [`Float`] (`f32` for
//! training, `f64` for gradient checks), [`Transpose`], [`Mask`], [`Gelu`], [`Padding`], [`DropoutKey`],
//! [`Exclude`] and [`Tolerance`].
//!
//! Conventions:
//! - **Outputs first, written in place.** Every op writes into caller-owned tensors (`out`, `dx`,
//!   `dgamma`, ...) so layers allocate buffers once and a training step allocates nothing in its inner
//!   loops. Exceptions, all small: parallel column reductions (bias and layer-norm parameter gradients)
//!   build one partial vector per chunk, and the `f32` GEMM grows a per-thread packing buffer once.
//! - **Gradient accumulation rule.** Parameter gradients accumulate (`dgamma +=`, `dtable +=`, GEMM with
//!   `beta = 1`); activation gradients are written (`dx =`).
//! - **Matrix view.** A tensor `[d0, .., dn]` is a matrix of `d0 * .. * d(n-1)` rows by `dn` columns for
//!   GEMM, bias, softmax, layer norm and the row reductions, so `[batch, seq, d]` needs no reshape.
//! - **Shape mismatches panic** with a message naming the op and the shapes (programming errors);
//!   building a tensor from user data returns [`TensorError`].
//! - **The naive kernel is the oracle.** [`reference`](mod@reference) holds a plain serial version of every op with the
//!   same signature; tests compare each fast path against it with a [`Tolerance`].
//! - **Speed.** `f32` GEMM runs an AVX-512 micro-kernel when the CPU has AVX-512F (else, and for `f64`,
//!   `matrixmultiply`); softmax and layer norm rows are compiled for AVX-512 / AVX2 / baseline and
//!   picked at run time (no `target-cpu=native`), with a polynomial `f32` exp
//!   ([`exp_approx_f32`], within 2 ulp). The [`reference`](mod@reference) oracle uses none of this.
//!   Inference-only rows ([`layernorm_rows`], [`softmax_prefix`]) run hand-written AVX-512 `f32`
//!   kernels on fused multiply-adds, so they may differ from the training kernels in the last bits.
//! - Large inputs are split over rayon in chunks fixed by the shape (never by the thread count), so
//!   results are identical on any number of threads; small inputs run serially.
//!
//! ```
//! use seqrec_tensor::{gemm, softmax_forward, Mask, Tensor, Transpose};
//!
//! // Attention-like scores: q [2, 3] times k^T, then a causal softmax.
//! let q = Tensor::from_vec(&[2, 3], vec![1.0f32, 0.0, 0.0, 0.0, 1.0, 0.0]).unwrap();
//! let k = Tensor::from_vec(&[2, 3], vec![1.0f32, 0.0, 0.0, 0.0, 2.0, 0.0]).unwrap();
//! let mut scores = Tensor::zeros(&[2, 2]);
//! gemm(&mut scores, 1.0, &q, Transpose::No, &k, Transpose::Yes, 0.0);
//! assert_eq!(scores.as_slice(), &[1.0, 0.0, 0.0, 2.0]);
//!
//! let mut p = Tensor::zeros(&[2, 2]);
//! softmax_forward(&mut p, &scores, Mask::Causal);
//! // Row 0 sees only key 0; row 1 sees keys 0 and 1: softmax([0, 2]) = [1, e^2] / (1 + e^2).
//! let e2 = 2.0f32.exp();
//! assert_eq!(p.as_slice()[..2], [1.0, 0.0]);
//! assert!((p.as_slice()[3] - e2 / (1.0 + e2)).abs() < 1e-6);
//! ```
#![deny(missing_docs)]

mod activation;
pub mod amx;
mod dropout;
mod elementwise;
mod embedding;
mod float;
mod gemm;
mod infer;
mod layernorm;
mod par;
mod reduce;
pub mod reference;
mod sgemm_avx512;
mod shape_ops;
pub mod simd;
mod softmax;
mod tensor;
mod tolerance;

pub use activation::{
    Gelu, gelu_backward, gelu_forward, gelu_grad_scalar, gelu_scalar, relu_backward, relu_forward,
    sigmoid_backward, sigmoid_forward, sigmoid_scalar, tanh_backward, tanh_forward,
};
pub use dropout::{
    DropoutKey, dropout_backward, dropout_bits, dropout_forward, dropout_keep, dropout_slice,
    dropout_threshold, relu_dropout_backward, relu_dropout_forward, splitmix64,
};
pub use elementwise::{
    add, add_assign, add_bias, add_bias_backward, axpby, axpy, mul, mul_acc, scale, scale_inplace,
    sub,
};
pub use embedding::{Padding, embedding_backward, embedding_forward};
pub use float::Float;
pub use gemm::{Transpose, gemm, gemm_batched, gemm_slice};
pub use infer::{layernorm_rows, softmax_prefix};
pub use layernorm::{layernorm_backward, layernorm_forward};
pub use reduce::{Exclude, NO_ID, max, max_last, mean, mean_last, sq_norm, sum, sum_last, topk};
pub use shape_ops::{concat, slice, slice_add, slice_assign, transpose};
pub use simd::exp_approx_f32;
pub use softmax::{
    Mask, causal_softmax_dropout, causal_softmax_dropout_backward, log_softmax_backward,
    log_softmax_forward, softmax_backward, softmax_forward, softmax_inplace,
};
pub use tensor::{Device, Tensor, TensorError};
pub use tolerance::Tolerance;
