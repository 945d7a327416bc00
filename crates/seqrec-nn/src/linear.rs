//! [`Linear`]: `y = x W^T + b`, PyTorch's `nn.Linear`.

use seqrec_tensor::{Float, Tensor, Transpose, add_bias, add_bias_backward, gemm};

use crate::init::{Rng, torch_default_bound};
use crate::param::{Module, Param, join};

/// A fully connected layer. `weight`: `[out, in]` (PyTorch's layout), `bias`: `[out]`.
#[derive(Clone, Debug)]
pub struct Linear<T> {
    /// `[out_features, in_features]`.
    pub weight: Param<T>,
    /// `[out_features]`, if the layer has a bias.
    pub bias: Option<Param<T>>,
}

impl<T: Float> Linear<T> {
    /// A layer named `prefix` (`prefix.weight`, `prefix.bias`) with PyTorch's default initialisation:
    /// weight and bias uniform in `±1/sqrt(in_features)`.
    pub fn new(
        prefix: &str,
        in_features: usize,
        out_features: usize,
        bias: bool,
        rng: &mut Rng,
    ) -> Self {
        let bound = torch_default_bound(in_features);
        let weight = Param::new(
            join(prefix, "weight"),
            rng.uniform_tensor(&[out_features, in_features], bound),
        );
        let bias = bias.then(|| {
            Param::new(
                join(prefix, "bias"),
                rng.uniform_tensor(&[out_features], bound),
            )
        });
        Self { weight, bias }
    }

    /// Input width.
    pub fn in_features(&self) -> usize {
        self.weight.value.cols()
    }

    /// Output width.
    pub fn out_features(&self) -> usize {
        self.weight.value.rows()
    }

    /// Forward: `y = x W^T + b`.
    ///
    /// - `x`: `[.., in]`, `y`: `[.., out]` (same leading axes; overwritten).
    pub fn forward(&self, y: &mut Tensor<T>, x: &Tensor<T>) {
        gemm(
            y,
            T::ONE,
            x,
            Transpose::No,
            &self.weight.value,
            Transpose::Yes,
            T::ZERO,
        );
        if let Some(b) = &self.bias {
            add_bias(y, &b.value);
        }
    }

    /// Backward of [`Linear::forward`]: `dW += dy^T x`, `db += sum_rows(dy)`, `dx = dy W`.
    ///
    /// - `dy`: `[.., out]`, `x`: the forward input `[.., in]`, `dx`: `[.., in]` or `None` when the input
    ///   needs no gradient (a first layer fed by data).
    pub fn backward(&mut self, dx: Option<&mut Tensor<T>>, dy: &Tensor<T>, x: &Tensor<T>) {
        // y = x W^T  =>  dW = dy^T x  (accumulated: beta = 1)
        gemm(
            &mut self.weight.grad,
            T::ONE,
            dy,
            Transpose::Yes,
            x,
            Transpose::No,
            T::ONE,
        );
        // y = .. + b  =>  db = column sums of dy
        if let Some(b) = &mut self.bias {
            add_bias_backward(&mut b.grad, dy);
        }
        // y = x W^T  =>  dx = dy W  (assigned: beta = 0)
        if let Some(dx) = dx {
            gemm(
                dx,
                T::ONE,
                dy,
                Transpose::No,
                &self.weight.value,
                Transpose::No,
                T::ZERO,
            );
        }
    }
}

impl<T: Float> Module<T> for Linear<T> {
    fn visit_params(&self, f: &mut dyn FnMut(&Param<T>)) {
        f(&self.weight);
        if let Some(b) = &self.bias {
            f(b);
        }
    }

    fn visit_params_mut(&mut self, f: &mut dyn FnMut(&mut Param<T>)) {
        f(&mut self.weight);
        if let Some(b) = &mut self.bias {
            f(b);
        }
    }
}
