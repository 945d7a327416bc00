//! [`AttentionPooling`]: additive attention over a sequence of hidden states (Bahdanau-style pooling, as
//! in the "LSTM + attention + MLP" recommender):
//!
//! `u_t = tanh(W h_t + b)`, `score_t = v^T u_t`, `a = softmax(score)` over real positions,
//! `pooled = sum_t a_t h_t`.
//!
//! Parameters: `prefix.proj.weight` `[d_att, d]`, `prefix.proj.bias` `[d_att]` and `prefix.score.weight`
//! `[1, d_att]` (`v^T`, a bias-free linear layer). An all-padding sequence pools to zero with all-zero
//! weights, never NaN.

use seqrec_tensor::{
    Float, Mask, Tensor, Transpose, add_assign, gemm_batched, softmax_backward, softmax_forward,
    tanh_backward, tanh_forward,
};

use crate::attention::{AttnConfigError, check_positive};
use crate::init::Rng;
use crate::linear::Linear;
use crate::param::{Module, Param, join};

/// Configuration of [`AttentionPooling`], validated once by [`AttentionPoolingConfig::validate`].
#[derive(Clone, Debug, PartialEq)]
pub struct AttentionPoolingConfig {
    /// Width of the hidden states being pooled.
    pub d_model: usize,
    /// Width of the attention projection `W`.
    pub d_att: usize,
}

impl AttentionPoolingConfig {
    /// Checks that both sizes are positive.
    ///
    /// # Errors
    /// [`AttnConfigError::ZeroSize`] naming the field.
    pub fn validate(&self) -> Result<(), AttnConfigError> {
        check_positive("d_model", self.d_model)?;
        check_positive("d_att", self.d_att)
    }
}

/// Additive attention pooling (see the module docs).
#[derive(Clone, Debug)]
pub struct AttentionPooling<T> {
    /// `W`, `b`: `[d_att, d]`, `[d_att]`.
    pub proj: Linear<T>,
    /// `v^T`: `[1, d_att]`, no bias.
    pub score: Linear<T>,
}

/// What [`AttentionPooling::forward`] saves for [`AttentionPooling::backward`], and its scratch.
#[derive(Clone, Debug)]
pub struct AttentionPoolingCache<T> {
    /// `u = tanh(W h + b)`, `[batch, seq, d_att]`.
    u: Tensor<T>,
    /// Scores `[batch, 1, seq]` (then reused for their gradient).
    scores: Tensor<T>,
    /// Weights `[batch, 1, seq]` (a copy of the forward's output, read by the backward).
    weights: Tensor<T>,
    dweights: Tensor<T>,
    du: Tensor<T>,
    dz: Tensor<T>,
    dh: Tensor<T>,
    dpooled: Tensor<T>,
}

impl<T: Float> AttentionPoolingCache<T> {
    /// A cache for hidden states `[batch, seq, d_model]`.
    pub fn new(config: &AttentionPoolingConfig, batch: usize, seq: usize) -> Self {
        let w = [batch, 1, seq];
        Self {
            u: Tensor::zeros(&[batch, seq, config.d_att]),
            scores: Tensor::zeros(&w),
            weights: Tensor::zeros(&w),
            dweights: Tensor::zeros(&w),
            du: Tensor::zeros(&[batch, seq, config.d_att]),
            dz: Tensor::zeros(&[batch, seq, config.d_att]),
            dh: Tensor::zeros(&[batch, seq, config.d_model]),
            dpooled: Tensor::zeros(&[batch, 1, config.d_model]),
        }
    }

    fn ensure(&mut self, batch: usize, seq: usize, d: usize, d_att: usize) {
        if self.scores.shape() != [batch, 1, seq] {
            for t in [&mut self.scores, &mut self.weights, &mut self.dweights] {
                t.resize(&[batch, 1, seq]);
            }
            self.u.resize(&[batch, seq, d_att]);
            self.du.resize(&[batch, seq, d_att]);
            self.dz.resize(&[batch, seq, d_att]);
            self.dh.resize(&[batch, seq, d]);
            self.dpooled.resize(&[batch, 1, d]);
        }
    }
}

impl<T: Float> AttentionPooling<T> {
    /// A pooling layer named `prefix` with PyTorch's default linear initialisation.
    ///
    /// # Errors
    /// [`AttnConfigError`] if a size is zero.
    pub fn new(
        prefix: &str,
        config: &AttentionPoolingConfig,
        rng: &mut Rng,
    ) -> Result<Self, AttnConfigError> {
        config.validate()?;
        Ok(Self {
            proj: Linear::new(
                &join(prefix, "proj"),
                config.d_model,
                config.d_att,
                true,
                rng,
            ),
            score: Linear::new(&join(prefix, "score"), config.d_att, 1, false, rng),
        })
    }

    /// Forward.
    ///
    /// - `h`: `[batch, seq, d]`; `keep`: `[batch * seq]` flags (`true` = real position; `None`: all real);
    /// - `pooled`: `[batch, d]`; `weights`: `[batch, seq]` (the attention distribution; zero at padded
    ///   positions and for all-padding sequences).
    pub fn forward(
        &self,
        pooled: &mut Tensor<T>,
        weights: &mut Tensor<T>,
        cache: &mut AttentionPoolingCache<T>,
        h: &Tensor<T>,
        keep: Option<&[bool]>,
    ) {
        let (b, t, d) = (h.shape()[0], h.shape()[1], h.shape()[2]);
        assert!(
            h.ndim() == 3 && pooled.shape() == [b, d] && weights.shape() == [b, t],
            "AttentionPooling::forward: h {:?}, pooled {:?}, weights {:?} must be [b, t, d], [b, d], [b, t]",
            h.shape(),
            pooled.shape(),
            weights.shape()
        );
        cache.ensure(b, t, d, self.proj.out_features());
        // 1. u = tanh(h W^T + b)   [b, t, d_att]   (u first holds the pre-activation)
        self.proj.forward(&mut cache.du, h);
        tanh_forward(&mut cache.u, &cache.du);
        // 2. score = u v   [b*t, 1] viewed as [b, 1, t]
        cache.scores.reshape(&[b * t, 1]);
        self.score.forward(&mut cache.scores, &cache.u);
        cache.scores.reshape(&[b, 1, t]);
        // 3. a = softmax(score) over real positions
        let mask = match keep {
            Some(k) => Mask::KeyPadding(k),
            None => Mask::None,
        };
        softmax_forward(&mut cache.weights, &cache.scores, mask);
        weights
            .as_mut_slice()
            .copy_from_slice(cache.weights.as_slice());
        // 4. pooled[b] = a[b] h[b]   ([1, t] x [t, d] per sequence)
        pooled.reshape(&[b, 1, d]);
        gemm_batched(
            pooled,
            T::ONE,
            &cache.weights,
            Transpose::No,
            h,
            Transpose::No,
            T::ZERO,
        );
        pooled.reshape(&[b, d]);
    }

    /// Backward of [`AttentionPooling::forward`]: parameter gradients `+=`, `dh =`.
    ///
    /// - `dpooled`: `[batch, d]`; `h`: the forward input; `dh`: `[batch, seq, d]`.
    pub fn backward(
        &mut self,
        dh: &mut Tensor<T>,
        dpooled: &Tensor<T>,
        h: &Tensor<T>,
        cache: &mut AttentionPoolingCache<T>,
    ) {
        let (b, t, d) = (h.shape()[0], h.shape()[1], h.shape()[2]);
        assert!(
            dpooled.shape() == [b, d] && dh.shape() == h.shape(),
            "AttentionPooling::backward: dpooled {:?} must be [{b}, {d}] and dh {:?} like h {:?}",
            dpooled.shape(),
            dh.shape(),
            h.shape()
        );
        // dpooled viewed as [b, 1, d] for the batched products.
        cache
            .dpooled
            .as_mut_slice()
            .copy_from_slice(dpooled.as_slice());
        let dp = &cache.dpooled;
        // 4. pooled = a h  =>  da = dpooled h^T  [b, 1, t],  dh = a^T dpooled  [b, t, d]
        gemm_batched(
            &mut cache.dweights,
            T::ONE,
            dp,
            Transpose::No,
            h,
            Transpose::Yes,
            T::ZERO,
        );
        gemm_batched(
            dh,
            T::ONE,
            &cache.weights,
            Transpose::Yes,
            dp,
            Transpose::No,
            T::ZERO,
        );
        // 3. a = softmax(score)  =>  dscore = a (da - sum(da a))   (masked entries: a = 0 => 0)
        softmax_backward(&mut cache.scores, &cache.dweights, &cache.weights);
        // 2. score = u v  =>  dv += dscore^T u,  du = dscore v
        cache.scores.reshape(&[b * t, 1]);
        self.score
            .backward(Some(&mut cache.du), &cache.scores, &cache.u);
        cache.scores.reshape(&[b, 1, t]);
        // 1. u = tanh(z)  =>  dz = du (1 - u^2)
        tanh_backward(&mut cache.dz, &cache.du, &cache.u);
        //    z = h W^T + b  =>  dW += dz^T h,  db += sum dz,  dh += dz W
        self.proj.backward(Some(&mut cache.dh), &cache.dz, h);
        add_assign(dh, &cache.dh);
    }
}

impl<T: Float> Module<T> for AttentionPooling<T> {
    fn visit_params(&self, f: &mut dyn FnMut(&Param<T>)) {
        self.proj.visit_params(f);
        self.score.visit_params(f);
    }

    fn visit_params_mut(&mut self, f: &mut dyn FnMut(&mut Param<T>)) {
        self.proj.visit_params_mut(f);
        self.score.visit_params_mut(f);
    }
}
