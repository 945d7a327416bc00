//! [`Dropout`]: inverted dropout with a train/eval mode and a per-call counter, so each call draws a new
//! mask and the same seed replays the same masks.

use seqrec_tensor::{DropoutKey, Float, Tensor, dropout_backward, dropout_forward};

use crate::error::NnError;

/// A dropout site. In training mode every [`Dropout::forward`] uses the key `(seed, counter)` and then
/// advances the counter; the key is saved in a [`DropoutCache`] for the backward pass, which regenerates
/// the mask instead of storing it. In eval mode forward copies its input.
#[derive(Clone, Debug, PartialEq)]
pub struct Dropout {
    p: f64,
    seed: u64,
    counter: u64,
    training: bool,
}

/// What [`Dropout::forward`] saves for [`Dropout::backward`]: the key of the mask used, or `None`
/// when the forward was an identity (eval mode or `p = 0`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DropoutCache {
    /// The mask's key.
    pub key: Option<DropoutKey>,
}

impl DropoutCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Dropout {
    /// A dropout site dropping with probability `p`, seeded with `seed` (give each site its own seed),
    /// in training mode with its counter at 0.
    ///
    /// # Errors
    /// [`NnError::InvalidConfig`] if `p` is not in `[0, 1)`.
    pub fn new(p: f64, seed: u64) -> Result<Self, NnError> {
        if !(0.0..1.0).contains(&p) {
            return Err(NnError::config("Dropout.p", p, "must be in [0, 1)"));
        }
        Ok(Self {
            p,
            seed,
            counter: 0,
            training: true,
        })
    }

    /// Drop probability.
    pub fn p(&self) -> f64 {
        self.p
    }

    /// Switches to training mode (masks applied).
    pub fn train(&mut self) {
        self.training = true;
    }

    /// Switches to eval mode (identity).
    pub fn eval(&mut self) {
        self.training = false;
    }

    /// Whether masks are applied.
    pub fn is_training(&self) -> bool {
        self.training
    }

    /// Number of masks drawn so far (the key of the next one); save it to resume a run bit for bit.
    pub fn counter(&self) -> u64 {
        self.counter
    }

    /// Sets the counter (to resume a run).
    pub fn set_counter(&mut self, counter: u64) {
        self.counter = counter;
    }

    /// Forward: `y = x * mask / (1 - p)` in training mode, `y = x` otherwise.
    ///
    /// - `x`, `y`: same shape (any).
    pub fn forward<T: Float>(
        &mut self,
        y: &mut Tensor<T>,
        cache: &mut DropoutCache,
        x: &Tensor<T>,
    ) {
        if self.training && self.p > 0.0 {
            let key = DropoutKey {
                seed: self.seed,
                step: self.counter,
            };
            self.counter += 1;
            dropout_forward(y, x, self.p, key);
            cache.key = Some(key);
        } else {
            y.copy_from(x);
            cache.key = None;
        }
    }

    /// Backward of [`Dropout::forward`]: `dx = dy * mask / (1 - p)` with the cached key (`dx = dy` for
    /// an identity forward).
    pub fn backward<T: Float>(&self, dx: &mut Tensor<T>, dy: &Tensor<T>, cache: &DropoutCache) {
        match cache.key {
            // y = x * mask / (1 - p)  =>  dx = dy * mask / (1 - p)
            Some(key) => dropout_backward(dx, dy, self.p, key),
            // y = x  =>  dx = dy
            None => dx.copy_from(dy),
        }
    }
}
