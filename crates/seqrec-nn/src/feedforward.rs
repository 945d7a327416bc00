//! [`FeedForward`]: the point-wise feed-forward of a Transformer block,
//! `linear2(dropout(act(linear1(x))))`.
//!
//! SASRec's `PointWiseFeedForward` uses two `Conv1d(d, d, kernel_size = 1)`; a kernel-1 convolution over
//! time is exactly a linear layer applied at every position (`conv.weight[:, :, 0]` is the linear weight).
//! SASRec puts its inner dropout before the ReLU and PyTorch's `TransformerEncoderLayer` after the
//! activation; with inverted dropout and ReLU these are the same function (`relu(m * z) = m * relu(z)`
//! for a mask `m >= 0`), so one placement serves both. The residual and the output dropout belong to the
//! block ([`crate::TransformerBlock`]).

use seqrec_tensor::{
    Float, Gelu, Tensor, dropout_backward, dropout_forward, gelu_backward, gelu_forward,
    relu_backward, relu_dropout_backward, relu_dropout_forward, relu_forward,
};

use crate::attention::{AttnConfigError, Phase, check_dropout, check_positive};
use crate::init::Rng;
use crate::linear::Linear;
use crate::param::{Module, Param, join};

/// The hidden activation of a feed-forward.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Activation {
    /// `max(x, 0)` (SASRec, PyTorch's default).
    Relu,
    /// GELU with the given formula (BERT4Rec uses the exact one, [`Gelu::Erf`]).
    Gelu(Gelu),
}

/// Configuration of [`FeedForward`], validated once by [`FeedForwardConfig::validate`].
#[derive(Clone, Debug, PartialEq)]
pub struct FeedForwardConfig {
    /// Input and output width.
    pub d_model: usize,
    /// Hidden width (`dim_feedforward`).
    pub d_ff: usize,
    /// Hidden activation.
    pub activation: Activation,
    /// Dropout after the activation.
    pub dropout: f64,
    /// Seed of the dropout masks.
    pub seed: u64,
}

impl FeedForwardConfig {
    /// Checks that sizes are positive and the dropout probability is in `[0, 1)`.
    ///
    /// # Errors
    /// [`AttnConfigError`] naming the field.
    pub fn validate(&self) -> Result<(), AttnConfigError> {
        check_positive("d_model", self.d_model)?;
        check_positive("d_ff", self.d_ff)?;
        check_dropout("dropout", self.dropout)
    }
}

/// `y = linear2(dropout(act(linear1(x))))`, parameters `prefix.linear1.*` and `prefix.linear2.*` (the
/// names PyTorch's `TransformerEncoderLayer` uses).
#[derive(Clone, Debug)]
pub struct FeedForward<T> {
    /// `[d_ff, d]` and `[d_ff]`.
    pub linear1: Linear<T>,
    /// `[d, d_ff]` and `[d]`.
    pub linear2: Linear<T>,
    config: FeedForwardConfig,
}

/// What [`FeedForward::forward`] saves for [`FeedForward::backward`] (and its scratch), for `rows`
/// positions.
#[derive(Clone, Debug)]
pub struct FeedForwardCache<T> {
    /// `linear1(x)`, `[rows, d_ff]`.
    pre: Tensor<T>,
    /// `act(pre)`, `[rows, d_ff]` (not written by the fused ReLU + dropout, whose backward reads only
    /// `act_drop`).
    act: Tensor<T>,
    /// `dropout(act)` (empty unless dropout was active).
    act_drop: Tensor<T>,
    key: Option<seqrec_tensor::DropoutKey>,
    dact: Tensor<T>,
    dpre: Tensor<T>,
}

impl<T: Float> FeedForwardCache<T> {
    /// A cache for `rows` positions (`batch * seq`).
    pub fn new(config: &FeedForwardConfig, rows: usize) -> Self {
        let s = [rows, config.d_ff];
        Self {
            pre: Tensor::zeros(&s),
            act: Tensor::zeros(&s),
            act_drop: Tensor::zeros(&[0]),
            key: None,
            dact: Tensor::zeros(&s),
            dpre: Tensor::zeros(&s),
        }
    }

    fn ensure(&mut self, rows: usize, d_ff: usize) {
        if self.pre.rows() != rows {
            for t in [&mut self.pre, &mut self.act, &mut self.dact, &mut self.dpre] {
                t.resize(&[rows, d_ff]);
            }
        }
    }
}

impl<T: Float> FeedForward<T> {
    /// A feed-forward named `prefix` with PyTorch's default linear initialisation.
    ///
    /// # Errors
    /// [`AttnConfigError`] if the configuration is invalid.
    pub fn new(
        prefix: &str,
        config: FeedForwardConfig,
        rng: &mut Rng,
    ) -> Result<Self, AttnConfigError> {
        config.validate()?;
        Ok(Self {
            linear1: Linear::new(
                &join(prefix, "linear1"),
                config.d_model,
                config.d_ff,
                true,
                rng,
            ),
            linear2: Linear::new(
                &join(prefix, "linear2"),
                config.d_ff,
                config.d_model,
                true,
                rng,
            ),
            config,
        })
    }

    /// The validated configuration.
    pub fn config(&self) -> &FeedForwardConfig {
        &self.config
    }

    /// Forward. `x`, `y`: `[.., d]` (any leading axes, `rows` positions in all).
    pub fn forward(
        &self,
        y: &mut Tensor<T>,
        cache: &mut FeedForwardCache<T>,
        x: &Tensor<T>,
        phase: Phase,
    ) {
        cache.ensure(x.rows(), self.config.d_ff);
        // 1. pre = x W1^T + b1
        self.linear1.forward(&mut cache.pre, x);
        cache.key = phase.dropout_key(self.config.seed, self.config.dropout);
        let hidden = if let (Activation::Relu, Some(key)) = (self.config.activation, cache.key) {
            // 2. + 3. act_d = dropout(relu(pre)) in one pass
            cache.act_drop.resize(cache.pre.shape());
            relu_dropout_forward(&mut cache.act_drop, &cache.pre, self.config.dropout, key);
            &cache.act_drop
        } else {
            // 2. act = act(pre)
            match self.config.activation {
                Activation::Relu => relu_forward(&mut cache.act, &cache.pre),
                Activation::Gelu(kind) => gelu_forward(&mut cache.act, &cache.pre, kind),
            }
            // 3. act_d = dropout(act)
            if let Some(key) = cache.key {
                cache.act_drop.resize(cache.act.shape());
                dropout_forward(&mut cache.act_drop, &cache.act, self.config.dropout, key);
                &cache.act_drop
            } else {
                &cache.act
            }
        };
        // 4. y = act_d W2^T + b2
        self.linear2.forward(y, hidden);
    }

    /// Backward of [`FeedForward::forward`]: parameter gradients `+=`, `dx =` (skipped when `None`).
    pub fn backward(
        &mut self,
        dx: Option<&mut Tensor<T>>,
        dy: &Tensor<T>,
        x: &Tensor<T>,
        cache: &mut FeedForwardCache<T>,
    ) {
        // 4. y = act_d W2^T + b2  =>  dW2 += dy^T act_d, db2 += sum dy, dact_d = dy W2
        let hidden = if cache.key.is_some() {
            &cache.act_drop
        } else {
            &cache.act
        };
        if let (Activation::Relu, Some(_)) = (self.config.activation, cache.key) {
            // 2. + 3. act_d = dropout(relu(pre))  =>  dpre = dact_d / (1 - p) where act_d > 0, else 0
            //    (no mask needed: act_d > 0 exactly where the element was kept and pre > 0)
            self.linear2.backward(Some(&mut cache.dact), dy, hidden);
            relu_dropout_backward(&mut cache.dpre, &cache.dact, hidden, self.config.dropout);
            // 1. pre = x W1^T + b1  =>  dW1 += dpre^T x, db1 += sum dpre, dx = dpre W1
            self.linear1.backward(dx, &cache.dpre, x);
            return;
        }
        self.linear2.backward(Some(&mut cache.dpre), dy, hidden);
        // 3. act_d = dropout(act)  =>  dact = dropout_backward(dact_d)
        if let Some(key) = cache.key {
            dropout_backward(&mut cache.dact, &cache.dpre, self.config.dropout, key);
        } else {
            // p = 0 or evaluation: the identity; swap buffers instead of copying.
            std::mem::swap(&mut cache.dact, &mut cache.dpre);
        }
        let dact = &cache.dact;
        // 2. act = act(pre)  =>  dpre = dact * act'(pre)
        match self.config.activation {
            Activation::Relu => relu_backward(&mut cache.dpre, dact, &cache.act),
            Activation::Gelu(kind) => gelu_backward(&mut cache.dpre, dact, &cache.pre, kind),
        }
        // 1. pre = x W1^T + b1  =>  dW1 += dpre^T x, db1 += sum dpre, dx = dpre W1
        self.linear1.backward(dx, &cache.dpre, x);
    }
}

impl<T: Float> Module<T> for FeedForward<T> {
    fn visit_params(&self, f: &mut dyn FnMut(&Param<T>)) {
        self.linear1.visit_params(f);
        self.linear2.visit_params(f);
    }

    fn visit_params_mut(&mut self, f: &mut dyn FnMut(&mut Param<T>)) {
        self.linear1.visit_params_mut(f);
        self.linear2.visit_params_mut(f);
    }
}
