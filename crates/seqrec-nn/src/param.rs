//! [`Param`]: a named tensor with its gradient; [`Module`]: anything that owns parameters.

use seqrec_tensor::{Float, Tensor};

/// A trainable tensor with its gradient of the same shape.
///
/// `name` is the full, stable, PyTorch-style name (`"encoder.layers.0.self_attn.in_proj_weight"`),
/// used for checkpoints and error messages.
#[derive(Clone, Debug, PartialEq)]
pub struct Param<T> {
    /// Full parameter name.
    pub name: String,
    /// Current value.
    pub value: Tensor<T>,
    /// Accumulated gradient (`+=` by every backward that touches the parameter).
    pub grad: Tensor<T>,
}

impl<T: Float> Param<T> {
    /// A parameter with the given value and a zero gradient.
    pub fn new(name: impl Into<String>, value: Tensor<T>) -> Self {
        let grad = Tensor::zeros(value.shape());
        Self {
            name: name.into(),
            value,
            grad,
        }
    }

    /// Sets the gradient to zero.
    pub fn zero_grad(&mut self) {
        self.grad.fill(T::ZERO);
    }
}

/// Joins a prefix and a local name with a dot, skipping an empty prefix.
pub(crate) fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_owned()
    } else {
        format!("{prefix}.{name}")
    }
}

/// Anything that owns parameters: layers, blocks, whole models.
///
/// The visiting order is stable (declaration order), so optimizers, gradient norms and checkpoints are
/// each one loop over the same sequence.
pub trait Module<T: Float> {
    /// Calls `f` on every parameter, in a stable order.
    fn visit_params(&self, f: &mut dyn FnMut(&Param<T>));

    /// Calls `f` on every parameter mutably, in the same order as [`Module::visit_params`].
    fn visit_params_mut(&mut self, f: &mut dyn FnMut(&mut Param<T>));

    /// Zeroes every parameter gradient.
    fn zero_grad(&mut self) {
        self.visit_params_mut(&mut |p| p.zero_grad());
    }

    /// Total number of scalar parameters.
    fn num_params(&self) -> usize {
        let mut n = 0;
        self.visit_params(&mut |p| n += p.value.numel());
        n
    }
}
