//! Central finite-difference gradient checks in `f64`.
//!
//! The recipe every layer test follows:
//! 1. build the layer in `f64` with random parameters and inputs;
//! 2. define a scalar loss `L = sum(y * r)` with a fixed random `r` (so `dL/dy = r`);
//! 3. run forward and the hand-written backward with `dy = r`, which fills parameter gradients and `dx`;
//! 4. compare them with `(L(theta + eps) - L(theta - eps)) / 2 eps` element by element using
//!    [`check_module`] and [`check_input`], under [`GradTolerance::STRICT`] and assert every [`GradError`] passes.
//!
//! [`suite`] applies that recipe to every layer and loss of the crate at a chosen shape (`cargo xtask
//! gradcheck` prints its table of worst errors).
//!
//! ```
//! use seqrec_nn::gradcheck::{check_input, check_module, dot, GradTolerance};
//! use seqrec_nn::{init::Rng, Linear, Module};
//! use seqrec_tensor::Tensor;
//!
//! let mut rng = Rng::new(3);
//! let mut fc = Linear::<f64>::new("fc", 4, 3, true, &mut rng);
//! let mut x = rng.normal_tensor::<f64>(&[5, 4], 1.0);
//! let r = rng.normal_tensor::<f64>(&[5, 3], 1.0);
//! let mut y = Tensor::zeros(&[5, 3]);
//! let mut dx = Tensor::zeros(&[5, 4]);
//! fc.zero_grad();
//! fc.forward(&mut y, &x);
//! fc.backward(Some(&mut dx), &r, &x);
//!
//! let errors = check_module(&mut fc, GradTolerance::STRICT, &mut |m: &mut Linear<f64>| {
//!     let mut y = Tensor::zeros(&[5, 3]);
//!     m.forward(&mut y, &x);
//!     dot(&y, &r)
//! });
//! for e in &errors { assert!(e.passes(), "{e}"); }
//! let e = check_input("x", &mut x, &dx, GradTolerance::STRICT, &mut |x: &Tensor<f64>| {
//!     let mut y = Tensor::zeros(&[5, 3]);
//!     fc.forward(&mut y, x);
//!     dot(&y, &r)
//! });
//! assert!(e.passes(), "{e}");
//! ```

pub mod suite;

use std::fmt;

use seqrec_tensor::Tensor;

use crate::param::Module;

/// Step of the central difference. With `f64`, truncation error (~eps^2) and round-off (~1e-16 / eps)
/// balance near 1e-5.
pub const EPS: f64 = 1e-5;

/// Pass criterion: `|analytic - numeric| <= absolute + relative * max(|analytic|, |numeric|)`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GradTolerance {
    /// Relative part.
    pub relative: f64,
    /// Absolute part (matters only near zero).
    pub absolute: f64,
}

impl GradTolerance {
    /// The project's bar for `f64` checks: relative 1e-6, absolute 1e-9.
    pub const STRICT: Self = Self {
        relative: 1e-6,
        absolute: 1e-9,
    };
}

/// The worst disagreement between an analytic gradient and its finite-difference estimate for one tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct GradError {
    /// Parameter or input name.
    pub name: String,
    /// Number of elements checked.
    pub len: usize,
    /// Flat index of the worst element (by excess over the tolerance).
    pub index: usize,
    /// Analytic gradient at `index`.
    pub analytic: f64,
    /// Finite-difference gradient at `index`.
    pub numeric: f64,
    /// Largest absolute error over all elements.
    pub max_abs: f64,
    /// Largest relative error `|a - n| / max(|a|, |n|)` over elements where that is above 1e-12.
    pub max_rel: f64,
    /// Largest `|a - n| / (absolute + relative * max(|a|, |n|))` under the check's tolerance; <= 1 passes.
    pub worst_ratio: f64,
}

impl GradError {
    /// True when every element was within the tolerance the check was run with.
    pub fn passes(&self) -> bool {
        self.worst_ratio <= 1.0
    }

    fn from_pairs(name: &str, analytic: &[f64], numeric: &[f64], tol: GradTolerance) -> Self {
        let mut e = GradError {
            name: name.to_owned(),
            len: analytic.len(),
            index: 0,
            analytic: analytic.first().copied().unwrap_or(0.0),
            numeric: numeric.first().copied().unwrap_or(0.0),
            max_abs: 0.0,
            max_rel: 0.0,
            worst_ratio: 0.0,
        };
        for (i, (&a, &n)) in analytic.iter().zip(numeric).enumerate() {
            let err = (a - n).abs();
            let scale = a.abs().max(n.abs());
            let ratio = if err.is_nan() {
                f64::INFINITY
            } else {
                err / (tol.absolute + tol.relative * scale)
            };
            e.max_abs = e.max_abs.max(err);
            if scale > 1e-12 {
                e.max_rel = e.max_rel.max(err / scale);
            }
            if ratio > e.worst_ratio || i == 0 {
                e.worst_ratio = e.worst_ratio.max(ratio);
                e.index = i;
                e.analytic = a;
                e.numeric = n;
            }
        }
        e
    }
}

impl fmt::Display for GradError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({} elements): max abs err {:.3e}, max rel err {:.3e}; worst at [{}]: analytic {:.12e} vs numeric {:.12e}",
            self.name,
            self.len,
            self.max_abs,
            self.max_rel,
            self.index,
            self.analytic,
            self.numeric
        )
    }
}

/// `sum(y * r)`: the scalar loss whose gradient with respect to `y` is `r`.
pub fn dot(y: &Tensor<f64>, r: &Tensor<f64>) -> f64 {
    assert_eq!(y.shape(), r.shape(), "dot: shapes differ");
    y.as_slice()
        .iter()
        .zip(r.as_slice())
        .map(|(a, b)| a * b)
        .sum()
}

/// Checks every parameter gradient currently stored in `module` against central differences of `loss`.
///
/// The caller has already run forward and backward for the same loss, so `module`'s gradients hold the
/// analytic values. Parameter values are restored exactly afterwards. Returns one [`GradError`] per
/// parameter, in visiting order.
pub fn check_module<M: Module<f64> + ?Sized>(
    module: &mut M,
    tol: GradTolerance,
    loss: &mut dyn FnMut(&mut M) -> f64,
) -> Vec<GradError> {
    let mut analytic: Vec<(String, Vec<f64>)> = Vec::new();
    module.visit_params(&mut |p| analytic.push((p.name.clone(), p.grad.to_vec())));
    let mut errors = Vec::with_capacity(analytic.len());
    for (pi, (name, grad)) in analytic.iter().enumerate() {
        let mut numeric = vec![0.0; grad.len()];
        for (j, slot) in numeric.iter_mut().enumerate() {
            let original = param_element(module, pi, j, None);
            param_element(module, pi, j, Some(original + EPS));
            let plus = loss(module);
            param_element(module, pi, j, Some(original - EPS));
            let minus = loss(module);
            param_element(module, pi, j, Some(original));
            *slot = (plus - minus) / (2.0 * EPS);
        }
        errors.push(GradError::from_pairs(name, grad, &numeric, tol));
    }
    errors
}

/// Reads (and with `set`, writes) element `j` of the `pi`-th parameter in visiting order.
fn param_element<M: Module<f64> + ?Sized>(
    module: &mut M,
    pi: usize,
    j: usize,
    set: Option<f64>,
) -> f64 {
    let mut seen = 0;
    let mut value = f64::NAN;
    module.visit_params_mut(&mut |p| {
        if seen == pi {
            let data = p.value.as_mut_slice();
            if let Some(v) = set {
                data[j] = v;
            }
            value = data[j];
        }
        seen += 1;
    });
    value
}

/// Checks the analytic gradient `analytic` of an input `x` against central differences of `loss(x)`.
/// `x` is restored exactly afterwards.
pub fn check_input(
    name: &str,
    x: &mut Tensor<f64>,
    analytic: &Tensor<f64>,
    tol: GradTolerance,
    loss: &mut dyn FnMut(&Tensor<f64>) -> f64,
) -> GradError {
    assert_eq!(
        x.shape(),
        analytic.shape(),
        "check_input({name}): gradient shape differs from input"
    );
    let mut numeric = vec![0.0; x.numel()];
    for (j, slot) in numeric.iter_mut().enumerate() {
        let original = x.as_slice()[j];
        x.as_mut_slice()[j] = original + EPS;
        let plus = loss(x);
        x.as_mut_slice()[j] = original - EPS;
        let minus = loss(x);
        x.as_mut_slice()[j] = original;
        *slot = (plus - minus) / (2.0 * EPS);
    }
    GradError::from_pairs(name, analytic.as_slice(), &numeric, tol)
}
