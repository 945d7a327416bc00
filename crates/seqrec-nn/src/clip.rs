//! Global-norm gradient clipping, `torch.nn.utils.clip_grad_norm_`.
//!
//! ```
//! use seqrec_nn::clip::clip_grad_norm;
//! use seqrec_nn::{init::Rng, Linear, Module};
//!
//! let mut fc = Linear::<f64>::new("fc", 2, 1, false, &mut Rng::new(0));
//! fc.weight.grad.as_mut_slice().copy_from_slice(&[3.0, 4.0]);
//! let norm = clip_grad_norm(&mut fc, 1.0).unwrap();
//! assert_eq!(norm, 5.0); // the norm before clipping
//! assert!((fc.weight.grad.as_slice()[0] - 0.6).abs() < 1e-6);
//! ```

use seqrec_tensor::Float;

use crate::error::NnError;
use crate::param::Module;

/// The global L2 norm of all gradients of `module`, `sqrt(sum over parameters of sum g²)`, in `f64`.
pub fn grad_norm<T: Float>(module: &dyn Module<T>) -> f64 {
    let mut sq = 0.0f64;
    module.visit_params(&mut |p| {
        sq += p
            .grad
            .as_slice()
            .iter()
            .map(|&g| g.to_f64() * g.to_f64())
            .sum::<f64>();
    });
    sq.sqrt()
}

/// Scales all gradients so their global norm is at most `max_norm` and returns the norm before
/// clipping. As PyTorch, the factor is `max_norm / (norm + 1e-6)`, applied only when below 1.
///
/// # Errors
/// - [`NnError::NonFiniteGradNorm`] (gradients untouched) if the norm is NaN or infinite, naming the
///   first parameter with a non-finite gradient element.
/// - [`NnError::InvalidConfig`] if `max_norm` is not positive and finite.
pub fn clip_grad_norm<T: Float>(module: &mut dyn Module<T>, max_norm: f64) -> Result<f64, NnError> {
    if !(max_norm.is_finite() && max_norm > 0.0) {
        return Err(NnError::config(
            "max_norm",
            max_norm,
            "must be finite and > 0",
        ));
    }
    let norm = grad_norm(module);
    if !norm.is_finite() {
        let mut first: Option<(String, usize)> = None;
        module.visit_params(&mut |p| {
            if first.is_none()
                && let Some(i) = p.grad.as_slice().iter().position(|g| !g.is_finite())
            {
                first = Some((p.name.clone(), i));
            }
        });
        // All elements finite but the sum of squares overflowed: name no element.
        let (param, index) = first.unwrap_or_else(|| ("<sum of squares overflowed>".into(), 0));
        return Err(NnError::NonFiniteGradNorm { norm, param, index });
    }
    let coef = max_norm / (norm + 1e-6);
    if coef < 1.0 {
        let c = T::from_f64(coef);
        module.visit_params_mut(&mut |p| {
            for g in p.grad.as_mut_slice() {
                *g *= c;
            }
        });
    }
    Ok(norm)
}
