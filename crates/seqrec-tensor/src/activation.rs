//! Activations, each forward directly above its backward.
//!
//! Backward passes write the activation gradient (`dx = ...`, never `+=`). Sigmoid, tanh and ReLU
//! differentiate from the saved **output** `y` (cheaper: no transcendental recomputed, and stable);
//! GELU differentiates from the saved **input** `x` (its derivative is not a function of the output).

use crate::par::for_flat_chunks;
use crate::tensor::assert_same_shape;
use crate::{Float, Tensor};

/// Which GELU formula to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Gelu {
    /// Exact: `gelu(x) = x * Phi(x) = 0.5 x (1 + erf(x / sqrt 2))` (PyTorch `approximate='none'`).
    Erf,
    /// Tanh approximation: `0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))`
    /// (PyTorch `approximate='tanh'`, GPT-2 / llm.c).
    Tanh,
}

#[track_caller]
fn unary<T: Float>(op: &str, out: &mut Tensor<T>, x: &Tensor<T>, f: impl Fn(T) -> T + Sync + Send) {
    assert_same_shape(op, "out", out.shape(), "x", x.shape());
    let x = x.as_slice();
    for_flat_chunks(out.as_mut_slice(), |off, o| {
        let n = o.len();
        for (o, &v) in o.iter_mut().zip(&x[off..off + n]) {
            *o = f(v);
        }
    });
}

#[track_caller]
fn binary<T: Float>(
    op: &str,
    dx: &mut Tensor<T>,
    dy: &Tensor<T>,
    saved: &Tensor<T>,
    f: impl Fn(T, T) -> T + Sync + Send,
) {
    assert_same_shape(op, "dy", dy.shape(), "saved", saved.shape());
    assert_same_shape(op, "dx", dx.shape(), "dy", dy.shape());
    let (dy, s) = (dy.as_slice(), saved.as_slice());
    for_flat_chunks(dx.as_mut_slice(), |off, o| {
        let n = o.len();
        for ((o, &g), &v) in o.iter_mut().zip(&dy[off..off + n]).zip(&s[off..off + n]) {
            *o = f(g, v);
        }
    });
}

/// Logistic sigmoid of one value, without overflow for large `|x|`.
#[inline(always)]
pub fn sigmoid_scalar<T: Float>(x: T) -> T {
    if x >= T::ZERO {
        T::ONE / (T::ONE + (-x).exp())
    } else {
        let e = x.exp();
        e / (T::ONE + e)
    }
}

/// `y = 1 / (1 + e^-x)`. `out`, `x`: same shape.
#[track_caller]
pub fn sigmoid_forward<T: Float>(out: &mut Tensor<T>, x: &Tensor<T>) {
    unary("sigmoid_forward", out, x, sigmoid_scalar);
}

/// `dx = dy * y * (1 - y)` from the saved output `y`.
#[track_caller]
pub fn sigmoid_backward<T: Float>(dx: &mut Tensor<T>, dy: &Tensor<T>, y: &Tensor<T>) {
    binary("sigmoid_backward", dx, dy, y, |g, y| g * y * (T::ONE - y));
}

/// `y = tanh(x)`.
#[track_caller]
pub fn tanh_forward<T: Float>(out: &mut Tensor<T>, x: &Tensor<T>) {
    unary("tanh_forward", out, x, |v| v.tanh());
}

/// `dx = dy * (1 - y^2)` from the saved output `y`.
#[track_caller]
pub fn tanh_backward<T: Float>(dx: &mut Tensor<T>, dy: &Tensor<T>, y: &Tensor<T>) {
    binary("tanh_backward", dx, dy, y, |g, y| g * (T::ONE - y * y));
}

/// `y = max(x, 0)`.
#[track_caller]
pub fn relu_forward<T: Float>(out: &mut Tensor<T>, x: &Tensor<T>) {
    unary("relu_forward", out, x, |v| {
        if v > T::ZERO { v } else { T::ZERO }
    });
}

/// `dx = dy` where `y > 0`, else 0 (the subgradient at 0 is taken as 0, like PyTorch), from the output.
#[track_caller]
pub fn relu_backward<T: Float>(dx: &mut Tensor<T>, dy: &Tensor<T>, y: &Tensor<T>) {
    binary("relu_backward", dx, dy, y, |g, y| {
        if y > T::ZERO { g } else { T::ZERO }
    });
}

const SQRT_2_OVER_PI: f64 = 0.797_884_560_802_865_4;
const GELU_C: f64 = 0.044_715;
const FRAC_1_SQRT_2: f64 = std::f64::consts::FRAC_1_SQRT_2;
/// 1 / sqrt(2 pi).
const FRAC_1_SQRT_2PI: f64 = 0.398_942_280_401_432_7;

/// GELU of one value.
#[inline(always)]
pub fn gelu_scalar<T: Float>(x: T, kind: Gelu) -> T {
    let half = T::from_f64(0.5);
    match kind {
        Gelu::Erf => half * x * (T::ONE + (x * T::from_f64(FRAC_1_SQRT_2)).erf()),
        Gelu::Tanh => {
            let u = T::from_f64(SQRT_2_OVER_PI) * (x + T::from_f64(GELU_C) * x * x * x);
            half * x * (T::ONE + u.tanh())
        }
    }
}

/// d gelu(x) / dx.
#[inline(always)]
pub fn gelu_grad_scalar<T: Float>(x: T, kind: Gelu) -> T {
    let half = T::from_f64(0.5);
    match kind {
        // d/dx [x Phi(x)] = Phi(x) + x phi(x),  phi(x) = e^(-x^2/2) / sqrt(2 pi)
        Gelu::Erf => {
            let cdf = half * (T::ONE + (x * T::from_f64(FRAC_1_SQRT_2)).erf());
            let pdf = T::from_f64(FRAC_1_SQRT_2PI) * (-half * x * x).exp();
            cdf + x * pdf
        }
        // u = s (x + c x^3), t = tanh u:  d/dx = 0.5 (1 + t) + 0.5 x (1 - t^2) s (1 + 3 c x^2)
        Gelu::Tanh => {
            let s = T::from_f64(SQRT_2_OVER_PI);
            let c = T::from_f64(GELU_C);
            let x2 = x * x;
            let t = (s * (x + c * x2 * x)).tanh();
            half * (T::ONE + t)
                + half * x * (T::ONE - t * t) * s * (T::ONE + T::from_f64(3.0) * c * x2)
        }
    }
}

/// `y = gelu(x)` with the chosen formula (see [`Gelu`]).
#[track_caller]
pub fn gelu_forward<T: Float>(out: &mut Tensor<T>, x: &Tensor<T>, kind: Gelu) {
    unary("gelu_forward", out, x, |v| gelu_scalar(v, kind));
}

/// `dx = dy * gelu'(x)` from the saved input `x`.
#[track_caller]
pub fn gelu_backward<T: Float>(dx: &mut Tensor<T>, dy: &Tensor<T>, x: &Tensor<T>, kind: Gelu) {
    binary("gelu_backward", dx, dy, x, |g, v| {
        g * gelu_grad_scalar(v, kind)
    });
}
