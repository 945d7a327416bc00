//! [`LayerNorm`] over the last axis, PyTorch's `nn.LayerNorm(d)`.

use seqrec_tensor::{Float, Tensor, layernorm_backward, layernorm_forward};

use crate::param::{Module, Param, join};

/// Layer normalisation over the last axis with an elementwise affine transform.
/// `weight` (gamma) and `bias` (beta): `[d]`, initialised to ones and zeros as in PyTorch.
#[derive(Clone, Debug)]
pub struct LayerNorm<T> {
    /// Gamma, `[d]`.
    pub weight: Param<T>,
    /// Beta, `[d]`.
    pub bias: Param<T>,
    /// Added to the variance before the square root (PyTorch's default is `1e-5`).
    pub eps: f64,
}

/// What [`LayerNorm::forward`] saves for [`LayerNorm::backward`]: per-row mean and reciprocal std.
#[derive(Clone, Debug)]
pub struct LayerNormCache<T> {
    /// Per-row mean, `[rows]`.
    pub mean: Tensor<T>,
    /// Per-row `1 / sqrt(var + eps)`, `[rows]`.
    pub rstd: Tensor<T>,
}

impl<T: Float> LayerNormCache<T> {
    /// A cache for inputs with `rows` rows.
    pub fn new(rows: usize) -> Self {
        Self {
            mean: Tensor::zeros(&[rows]),
            rstd: Tensor::zeros(&[rows]),
        }
    }
}

impl<T: Float> LayerNorm<T> {
    /// A layer named `prefix` over width `d` with gamma = 1, beta = 0.
    pub fn new(prefix: &str, d: usize, eps: f64) -> Self {
        Self {
            weight: Param::new(join(prefix, "weight"), Tensor::full(&[d], T::ONE)),
            bias: Param::new(join(prefix, "bias"), Tensor::zeros(&[d])),
            eps,
        }
    }

    /// Forward. `x`, `y`: `[.., d]`; `cache` sized for `x.rows()` rows.
    pub fn forward(&self, y: &mut Tensor<T>, cache: &mut LayerNormCache<T>, x: &Tensor<T>) {
        layernorm_forward(
            y,
            &mut cache.mean,
            &mut cache.rstd,
            x,
            &self.weight.value,
            &self.bias.value,
            T::from_f64(self.eps),
        );
    }

    /// Backward of [`LayerNorm::forward`]: `dx =`, `dweight +=`, `dbias +=`.
    pub fn backward(
        &mut self,
        dx: &mut Tensor<T>,
        dy: &Tensor<T>,
        x: &Tensor<T>,
        cache: &LayerNormCache<T>,
    ) {
        layernorm_backward(
            dx,
            &mut self.weight.grad,
            &mut self.bias.grad,
            dy,
            x,
            &cache.mean,
            &cache.rstd,
            &self.weight.value,
        );
    }
}

impl<T: Float> Module<T> for LayerNorm<T> {
    fn visit_params(&self, f: &mut dyn FnMut(&Param<T>)) {
        f(&self.weight);
        f(&self.bias);
    }

    fn visit_params_mut(&mut self, f: &mut dyn FnMut(&mut Param<T>)) {
        f(&mut self.weight);
        f(&mut self.bias);
    }
}
