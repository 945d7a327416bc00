//! [`Sasrec`]: self-attentive sequential recommendation (Kang & McAuley, ICDM 2018), trained with the
//! paper's binary cross-entropy over one sampled negative per position ([`SasrecLoss::Bce`]), a full
//! softmax cross-entropy over the catalogue ([`SasrecLoss::Ce`], "SASRec+" of Klenitskiy & Vasilev,
//! RecSys 2023), gSASRec's gBCE over many negatives ([`SasrecLoss::Gbce`]) or a log-Q corrected
//! sampled softmax ([`SasrecLoss::SampledSoftmax`]).
//!
//! The network ([`SasrecNet`], generic over the float type so the whole model can be gradient-checked in
//! `f64`) follows the reference code (`kang205/SASRec`, `pmixer/SASRec.pytorch` `model.py::log2feats`):
//!
//! ```text
//! e  = item_emb[ids] * sqrt(d)                     ids: [batch, maxlen], right-aligned, 0 = padding
//!                            (* 1 with scale_embeddings = false)
//! x0 = e + pos_emb[t]        (padded positions get no position, so they stay 0; t is the slot, or
//!                             the index among the row's items with positions = "first_item")
//! x1 = keep * dropout(x0)    (timeline mask: padded rows zeroed)
//! h  = LN_final(blocks(x1))  (each block: q = LN1(x); s = q + MHA(q, x); l = LN2(s);
//!                             y = keep * (l + drop(FFN_relu(l))), causal, padded keys masked)
//! logit(i) = h . item_emb[i] (the item table is shared with the output)
//! ```
//!
//! Padded keys are masked in the attention, as in the official TensorFlow code (`modules.py`
//! masks keys whose embedding is zero); SASRec.pytorch passes only the causal mask, so there real
//! queries also attend to the zeroed padded positions. Everything else matches SASRec.pytorch term for
//! term: `tests/sasrec.rs` checks the loss, every gradient and the scores against a PyTorch float64
//! transcription of its `log2feats` (`scripts/fixtures_sasrec.py`).
//!
//! Losses, over the positions whose target is not padding:
//! - `Bce`: `softplus(-h.E[pos]) + softplus(h.E[neg])`, mean over positions (SASRec.pytorch's two BCE
//!   terms), the negative uniform over the items the user never touched in training;
//! - `Ce`: `lse_j(h.E[j]) - h.E[pos]` over the items `j = 1..=n_items` (the padding column is masked
//!   out of the softmax; the padding row of the table never receives a gradient).
//! - `Gbce` (gSASRec, Petrov & Macdonald 2023): `k = negatives` negatives per position, uniform over
//!   the items the user never touched in training (drawn independently for every position, as the
//!   gSASRec repository's `randint(batch, len, k)`), and
//!   `(1/(1+k)) [β softplus(-x+) + sum_j softplus(x_j)]` with `β = gbce_beta(k, n_items, gbce_t)`;
//! - `SampledSoftmax`: the same `k` negatives per position from a uniform or popularity sampler,
//!   `lse(x+, x_j - ln(k q_j)) - x+` (log-Q correction on the negatives, so that the sampled sum
//!   estimates the full softmax denominator).
//!
//! `E` above is the output table: `item_emb` itself (`tied_output = true`, SASRec and gSASRec's
//! default) or a separate `output_emb` table (`false`). [`GsasrecConfig`] holds gSASRec's defaults for
//! the same network (model `gsasrec` in the registry).
//!
//! With `l2_emb > 0` the loss adds `l2_emb * ||item_emb||_2` (SASRec.pytorch: `torch.norm(param)`, the
//! Frobenius norm, not squared).
//!
//! Initialisation: every matrix (embeddings, attention and feed-forward weights) is Xavier-normal as in
//! SASRec.pytorch (`xavier_normal_` on every parameter with two or more dimensions); biases and layer
//! norms keep PyTorch's defaults; the padding row of the item table is zero. With `embedding_std` set,
//! the item, position and output tables are drawn `N(0, embedding_std²)` instead (1.0: PyTorch's
//! `nn.Embedding`, as the gSASRec PyTorch repository).

use std::path::Path;

use serde::{Deserialize, Serialize};

use seqrec_data::{NegativeSampler, Negatives, SasrecBatcher, Sequences, WindowMode};
use seqrec_nn::init::Rng;
use seqrec_nn::loss::{bce_with_logits, softmax_cross_entropy};
use seqrec_nn::{
    Embedding, Module, Padding, Param, Phase, PositionalEmbedding, TransformerBlockConfig,
    TransformerEncoder, TransformerEncoderCache,
};
use seqrec_tensor::{
    DropoutKey, Float, Tensor, Transpose, dropout_backward, dropout_forward, gemm, scale_inplace,
    splitmix64,
};

use crate::adam::{AdamHyper, AdamState};
use crate::epoch::{EpochTally, step_key};
use crate::model::{EpochReport, Model, ModelError, Precision, StepReport};
use crate::persist::{CheckpointFiles, ckpt_err};
use crate::positions::Positions;

#[path = "sasrec_serve.rs"]
mod serve;

/// Training objective of [`Sasrec`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SasrecLoss {
    /// Binary cross-entropy with one uniformly sampled negative per position (the paper).
    #[default]
    Bce,
    /// Full softmax cross-entropy over every item ("SASRec+", Klenitskiy & Vasilev 2023).
    Ce,
    /// gSASRec's generalised BCE (Petrov & Macdonald 2023) over `negatives` uniform negatives per
    /// position, calibrated by `gbce_t`.
    Gbce,
    /// Softmax over the positive and `negatives` sampled negatives per position with the log-Q
    /// correction (Bengio & Senécal 2008; Yi et al. 2019), drawn by `sampler`.
    SampledSoftmax,
}

impl SasrecLoss {
    /// Whether the loss reads `negatives` sampled negatives per position (`gbce`, `sampled_softmax`).
    pub fn is_multi_negative(self) -> bool {
        matches!(self, SasrecLoss::Gbce | SasrecLoss::SampledSoftmax)
    }
}

/// The distribution the negatives of [`SasrecLoss::SampledSoftmax`] are drawn from (before the user's
/// own training items are excluded).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SasrecSampler {
    /// Every item equally likely.
    #[default]
    Uniform,
    /// Proportional to the item's number of training events (BERT4Rec's popularity sampling).
    Popularity,
}

/// Declares a config struct with SASRec's hyper-parameters: [`SasrecConfig`] (the SASRec paper's
/// defaults) and [`GsasrecConfig`] (the gSASRec repository's defaults) share the fields and differ only in
/// their `Default`, so a TOML file that leaves a key out gets the default of the model it names.
macro_rules! sasrec_config {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
        #[serde(default, deny_unknown_fields)]
        pub struct $name {
            /// Embedding and hidden width `d`.
            pub hidden: usize,
            /// Number of self-attention blocks.
            pub blocks: usize,
            /// Attention heads; must divide `hidden`.
            pub heads: usize,
            /// Length of the history window, also the number of learned positions.
            pub maxlen: usize,
            /// Dropout probability of the embeddings, attention weights and feed-forward layers.
            pub dropout: f64,
            /// Adam learning rate.
            pub lr: f64,
            /// Adam `(beta1, beta2)`.
            pub betas: (f64, f64),
            /// Adam epsilon, added outside the square root as in PyTorch.
            pub adam_eps: f64,
            /// Sequences per training batch.
            pub batch_size: usize,
            /// Coefficient of `||item_emb||_2` added to the loss (SASRec.pytorch's `l2_emb`).
            pub l2_emb: f64,
            /// Training objective (`"bce"`, `"ce"`, `"gbce"` or `"sampled_softmax"`).
            pub loss: SasrecLoss,
            /// Negatives per position of `gbce` and `sampled_softmax` (`bce` always draws one).
            pub negatives: usize,
            /// gBCE calibration `t` in `[0, 1]` (0: plain BCE over the negatives; 1: fully calibrated).
            pub gbce_t: f64,
            /// Distribution of the `sampled_softmax` negatives.
            pub sampler: SasrecSampler,
            /// Score with the input item table (`true`, SASRec) or a separate output table
            /// `output_emb` (`false`, the gSASRec repository's `reuse_item_embeddings = False`).
            pub tied_output: bool,
            /// Clip the global gradient norm to this value before each step (`None`: no clipping).
            pub clip_grad_norm: Option<f64>,
            /// Standard deviation of the normal draw of the item, position and output tables
            /// (`None`: Xavier normal, SASRec's code; `Some(1.0)`: PyTorch's `nn.Embedding`, the gSASRec
            /// PyTorch repository).
            pub embedding_std: Option<f64>,
            /// Multiply the input item embeddings by `sqrt(d)` (`true`, SASRec's code; `false`, the
            /// gSASRec PyTorch repository).
            pub scale_embeddings: bool,
            /// Where the learned positions are counted from (`"slot"`, SASRec's code: the last item
            /// is position `maxlen - 1`; `"first_item"`, Klenitskiy & Vasilev's right padding: the
            /// oldest item of the window is position 0).
            pub positions: Positions,
            /// Project the attention's merged heads with `out_proj` (`true`: SASRec.pytorch, PyTorch's
            /// `nn.MultiheadAttention`); `false`: no output projection, as in the SASRec paper
            /// (`S = SA(E)` has no `W_O`) and its TensorFlow code.
            pub output_projection: bool,
        }

        impl From<$name> for SasrecParts {
            fn from(c: $name) -> Self {
                SasrecParts {
                    hidden: c.hidden,
                    blocks: c.blocks,
                    heads: c.heads,
                    maxlen: c.maxlen,
                    dropout: c.dropout,
                    lr: c.lr,
                    betas: c.betas,
                    adam_eps: c.adam_eps,
                    batch_size: c.batch_size,
                    l2_emb: c.l2_emb,
                    loss: c.loss,
                    negatives: c.negatives,
                    gbce_t: c.gbce_t,
                    sampler: c.sampler,
                    tied_output: c.tied_output,
                    clip_grad_norm: c.clip_grad_norm,
                    embedding_std: c.embedding_std,
                    scale_embeddings: c.scale_embeddings,
                    positions: c.positions,
                    output_projection: c.output_projection,
                }
            }
        }

        impl From<SasrecParts> for $name {
            fn from(c: SasrecParts) -> Self {
                $name {
                    hidden: c.hidden,
                    blocks: c.blocks,
                    heads: c.heads,
                    maxlen: c.maxlen,
                    dropout: c.dropout,
                    lr: c.lr,
                    betas: c.betas,
                    adam_eps: c.adam_eps,
                    batch_size: c.batch_size,
                    l2_emb: c.l2_emb,
                    loss: c.loss,
                    negatives: c.negatives,
                    gbce_t: c.gbce_t,
                    sampler: c.sampler,
                    tied_output: c.tied_output,
                    clip_grad_norm: c.clip_grad_norm,
                    embedding_std: c.embedding_std,
                    scale_embeddings: c.scale_embeddings,
                    positions: c.positions,
                    output_projection: c.output_projection,
                }
            }
        }
    };
}

/// The fields both config types convert through (a private plain copy, so that the conversions
/// between [`SasrecConfig`] and [`GsasrecConfig`] are written once by the macro).
struct SasrecParts {
    hidden: usize,
    blocks: usize,
    heads: usize,
    maxlen: usize,
    dropout: f64,
    lr: f64,
    betas: (f64, f64),
    adam_eps: f64,
    batch_size: usize,
    l2_emb: f64,
    loss: SasrecLoss,
    negatives: usize,
    gbce_t: f64,
    sampler: SasrecSampler,
    tied_output: bool,
    clip_grad_norm: Option<f64>,
    embedding_std: Option<f64>,
    scale_embeddings: bool,
    positions: Positions,
    output_projection: bool,
}

sasrec_config! {
    /// Hyper-parameters of [`Sasrec`]. The defaults are the SASRec paper's for MovieLens-1M: `d = 50`, 2
    /// blocks, 1 head, `maxlen = 200`, dropout 0.2, Adam lr 0.001 with betas `(0.9, 0.98)` (the
    /// reference code), batch 128, BCE with one negative, the item table shared with the output. The
    /// multi-negative losses default to 256 negatives and `gbce_t = 0.75` when selected.
    SasrecConfig
}

sasrec_config! {
    /// Hyper-parameters of gSASRec (Petrov & Macdonald, RecSys 2023): the same network and fields as
    /// [`SasrecConfig`], with gSASRec's loss and the settings measured to reproduce it on MovieLens-1M
    /// here (`docs/benchmarks.md`): gBCE with 256 negatives per position and `t = 0.75`, `d = 64`, 2
    /// blocks, 1 head, `maxlen = 200`, dropout 0.1, the item table tied to the output (as the
    /// `asash/gSASRec-pytorch` repository's current `config_ml1m.py`; its older configuration used
    /// `d = 128`, dropout 0.5 and a separate output table), batch 128, `torch.optim.Adam` defaults (lr
    /// 0.001, betas `(0.9, 0.999)`).
    ///
    /// With 256 negatives the first ~2,600 training steps stay at the popularity level before the
    /// model learns from the sequence: give early stopping a patience that outlasts them
    /// (`configs/gsasrec-ml1m.toml`).
    ///
    /// Differences from that repository, all deliberate: negatives exclude the user's own training
    /// items (the repository draws from the whole catalogue, so a user's other positives can be drawn
    /// as negatives; `β` is still computed from the repository's pool size `n_items - 1`); the tables
    /// are drawn Xavier-normal and the input embeddings scaled by `sqrt(d)` (SASRec's code; the
    /// PyTorch repository draws `N(0, 1)` and does not scale: `embedding_std = 1.0`,
    /// `scale_embeddings = false`); the layer norms use eps 1e-8 (SASRec's code; the repository uses
    /// PyTorch's 1e-5); an epoch is a full pass over the training users (the repository's "epoch" is
    /// 100 batches).
    GsasrecConfig
}

impl Default for SasrecConfig {
    fn default() -> Self {
        Self {
            hidden: 50,
            blocks: 2,
            heads: 1,
            maxlen: 200,
            dropout: 0.2,
            lr: 0.001,
            betas: (0.9, 0.98),
            adam_eps: 1e-8,
            batch_size: 128,
            l2_emb: 0.0,
            loss: SasrecLoss::Bce,
            negatives: 256,
            gbce_t: 0.75,
            sampler: SasrecSampler::Uniform,
            tied_output: true,
            clip_grad_norm: None,
            embedding_std: None,
            scale_embeddings: true,
            positions: Positions::Slot,
            output_projection: true,
        }
    }
}

impl Default for GsasrecConfig {
    fn default() -> Self {
        Self {
            hidden: 64,
            blocks: 2,
            heads: 1,
            maxlen: 200,
            dropout: 0.1,
            lr: 0.001,
            betas: (0.9, 0.999),
            adam_eps: 1e-8,
            batch_size: 128,
            l2_emb: 0.0,
            loss: SasrecLoss::Gbce,
            negatives: 256,
            gbce_t: 0.75,
            sampler: SasrecSampler::Uniform,
            tied_output: true,
            clip_grad_norm: None,
            embedding_std: None,
            scale_embeddings: true,
            positions: Positions::Slot,
            output_projection: true,
        }
    }
}

impl GsasrecConfig {
    /// The same settings as a [`SasrecConfig`] (what [`Sasrec::new`] takes).
    pub fn to_sasrec(&self) -> SasrecConfig {
        SasrecParts::from(self.clone()).into()
    }

    /// Checks every field (see [`SasrecConfig::validate`]).
    ///
    /// # Errors
    /// [`ModelError::Config`] naming the first bad field and its value.
    pub fn validate(&self) -> Result<(), ModelError> {
        self.to_sasrec().validate()
    }
}

fn bad(field: &str, value: impl std::fmt::Display, why: &str) -> ModelError {
    ModelError::Config(format!("sasrec.{field} = {value}: {why}"))
}

impl SasrecConfig {
    /// Checks every field.
    ///
    /// # Errors
    /// [`ModelError::Config`] naming the first bad field and its value.
    pub fn validate(&self) -> Result<(), ModelError> {
        for (field, v) in [
            ("hidden", self.hidden),
            ("blocks", self.blocks),
            ("heads", self.heads),
            ("maxlen", self.maxlen),
            ("batch_size", self.batch_size),
        ] {
            if v == 0 {
                return Err(bad(field, v, "must be at least 1"));
            }
        }
        if !self.hidden.is_multiple_of(self.heads) {
            return Err(bad(
                "heads",
                self.heads,
                &format!("must divide hidden ({})", self.hidden),
            ));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(bad("dropout", self.dropout, "must be in [0, 1)"));
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(bad("lr", self.lr, "must be finite and > 0"));
        }
        for (field, b) in [("betas.0", self.betas.0), ("betas.1", self.betas.1)] {
            if !(0.0..1.0).contains(&b) {
                return Err(bad(field, b, "must be in [0, 1)"));
            }
        }
        if !(self.adam_eps.is_finite() && self.adam_eps >= 0.0) {
            return Err(bad("adam_eps", self.adam_eps, "must be finite and >= 0"));
        }
        if !(self.l2_emb.is_finite() && self.l2_emb >= 0.0) {
            return Err(bad("l2_emb", self.l2_emb, "must be finite and >= 0"));
        }
        if let Some(c) = self.clip_grad_norm
            && !(c.is_finite() && c > 0.0)
        {
            return Err(bad("clip_grad_norm", c, "must be finite and > 0"));
        }
        if self.loss.is_multi_negative() && self.negatives == 0 {
            return Err(bad("negatives", self.negatives, "must be at least 1"));
        }
        if !(0.0..=1.0).contains(&self.gbce_t) {
            return Err(bad("gbce_t", self.gbce_t, "must be in [0, 1]"));
        }
        if let Some(s) = self.embedding_std
            && !(s.is_finite() && s > 0.0)
        {
            return Err(bad("embedding_std", s, "must be finite and > 0"));
        }
        Ok(())
    }

    /// The factor the input item embeddings are multiplied by: `sqrt(d)` when
    /// [`Self::scale_embeddings`], else 1.
    pub fn input_scale(&self) -> f64 {
        if self.scale_embeddings {
            (self.hidden as f64).sqrt()
        } else {
            1.0
        }
    }
}

/// One training batch in SASRec's layout, as the [`SasrecBatcher`] fills it (only the first `rows`
/// rows are read).
#[derive(Clone, Copy, Debug)]
pub struct TrainInputs<'a> {
    /// Rows to use.
    pub rows: usize,
    /// `[rows, maxlen]` input items (right-aligned, 0 = padding).
    pub inputs: &'a [u32],
    /// `[rows, maxlen]` positive targets (0 = no loss at this position).
    pub targets: &'a [u32],
    /// Negatives: `[rows, maxlen]` (one per position) for [`SasrecLoss::Bce`],
    /// `[rows, maxlen, negatives]` for [`SasrecLoss::Gbce`] and [`SasrecLoss::SampledSoftmax`]; may be
    /// empty for [`SasrecLoss::Ce`].
    pub negatives: &'a [u32],
}

/// Activations saved by the forward pass and scratch of the backward pass, sized for
/// `[batch, maxlen]` and resized in place (never shrinking its storage) for other batch sizes.
#[derive(Clone, Debug)]
struct NetCache<T> {
    enc: TransformerEncoderCache<T>,
    /// `[batch * maxlen]`: input id is not padding.
    keep: Vec<bool>,
    /// Scaled item embeddings; reused as the embedding gradient in backward.
    e: Tensor<T>,
    /// With positions.
    x0: Tensor<T>,
    /// After dropout and the timeline mask: the encoder input.
    x1: Tensor<T>,
    /// Encoder output.
    h: Tensor<T>,
    dh: Tensor<T>,
    dx: Tensor<T>,
    emb_key: Option<DropoutKey>,
    /// Loss scratch: BCE `[batch * maxlen, 2]`; CE `[chunk, n_items + 1]`.
    logits: Tensor<T>,
    dlogits: Tensor<T>,
    /// `[batch * maxlen]` rows with a target.
    valid: Vec<bool>,
    /// Sampled softmax: `[batch * maxlen, 1 + negatives]` log-Q corrections.
    log_q: Tensor<T>,
    /// CE: compact rows of `h` with a target and their gradient, `[chunk, d]`.
    hv: Tensor<T>,
    dhv: Tensor<T>,
    rows_idx: Vec<usize>,
    targets_v: Vec<u32>,
    /// Scoring: last hidden state `[batch, d]` and scores `[batch, n_items + 1]`.
    last: Tensor<T>,
    scores: Tensor<T>,
}

/// Logits per chunk of the full cross-entropy (about 32 MB of `f32` logits plus as much gradient).
const CE_CHUNK_ELEMS: usize = 1 << 23;

/// The SASRec network: embeddings, encoder, shared output, and both losses with their hand-written
/// backward pass. [`Sasrec`] wraps it in `f32` with the optimizer; tests use it in `f64`.
#[derive(Clone, Debug)]
pub struct SasrecNet<T> {
    /// `item_emb.weight`: `[n_items + 1, hidden]`, row 0 (padding) zero.
    pub item_emb: Embedding<T>,
    /// `pos_emb.weight`: `[maxlen, hidden]`.
    pub pos_emb: PositionalEmbedding<T>,
    /// `encoder.layers.{i}.*` and `encoder.norm.*` (SASRec's `last_layernorm`).
    pub encoder: TransformerEncoder<T>,
    /// `output_emb.weight`: `[n_items + 1, hidden]`, the separate output table when
    /// `tied_output = false` (row 0 zero); `None` when the output is `item_emb`.
    pub output_emb: Option<Embedding<T>>,
    /// `ln q(i)` of the sampled-softmax sampler per item `0..=n_items` (empty: uniform).
    sampling_log_q: Vec<f64>,
    /// gBCE's `β` (1 for the other losses).
    gbce_beta: f64,
    config: SasrecConfig,
    n_items: usize,
    emb_dropout_seed: u64,
    cache: NetCache<T>,
    /// Buffers of the serving forward ([`SasrecNet::score_last_position`]).
    serve: serve::ServeScratch<T>,
}

/// Zeroes the rows of `x` (viewed as `[rows, cols]`) whose flag is `false`.
fn zero_rows<T: Float>(x: &mut Tensor<T>, keep: &[bool]) {
    let c = x.cols();
    for (row, &k) in x.as_mut_slice().chunks_exact_mut(c).zip(keep) {
        if !k {
            row.fill(T::ZERO);
        }
    }
}

fn dot<T: Float>(a: &[T], b: &[T]) -> T {
    let mut s = T::ZERO;
    for (&x, &y) in a.iter().zip(b) {
        s += x * y;
    }
    s
}

/// Dot product with 8 independent partial sums, so that the `f32` loop vectorises (the plain [`dot`]
/// is a serial chain of adds). Used by the multi-negative losses, which take `1 + k` of them per
/// position.
fn dot8<T: Float>(a: &[T], b: &[T]) -> T {
    let mut acc = [T::ZERO; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    let mut s = dot(ra, rb);
    for v in acc {
        s += v;
    }
    s
}

/// The output table of a network: the separate `output_emb` when there is one, else `item_emb`
/// (a free function so that it borrows only those two fields, not the cache).
fn out_param<'a, T>(
    item_emb: &'a mut Embedding<T>,
    output_emb: &'a mut Option<Embedding<T>>,
) -> &'a mut Param<T> {
    match output_emb {
        Some(o) => &mut o.weight,
        None => &mut item_emb.weight,
    }
}

/// `y += alpha * x`.
fn axpy_slice<T: Float>(y: &mut [T], alpha: T, x: &[T]) {
    for (o, &v) in y.iter_mut().zip(x) {
        *o += alpha * v;
    }
}

impl<T: Float> SasrecNet<T> {
    /// A network for items `1..=n_items`, initialised from `seed` (see the module docs).
    ///
    /// # Errors
    /// [`ModelError::Config`] if the configuration is invalid or `n_items` is 0.
    pub fn new(config: &SasrecConfig, n_items: usize, seed: u64) -> Result<Self, ModelError> {
        config.validate()?;
        if n_items == 0 {
            return Err(bad("n_items", n_items, "the catalogue is empty"));
        }
        let d = config.hidden;
        let mut rng = Rng::new(seed);
        let nn = |e: seqrec_nn::NnError| ModelError::Config(e.to_string());
        // Xavier-normal std of a [fan_out, fan_in] matrix: sqrt(2 / (fan_in + fan_out)).
        let xavier = |r: usize, c: usize| (2.0 / (r + c) as f64).sqrt();
        // The tables' std: `embedding_std` when set, else Xavier.
        let table_std = |r: usize, c: usize| config.embedding_std.unwrap_or_else(|| xavier(r, c));
        let item_emb = Embedding::new(
            "item_emb",
            n_items + 1,
            d,
            table_std(n_items + 1, d),
            Padding::Skip(0),
            &mut rng,
        )
        .map_err(nn)?;
        let pos_emb = PositionalEmbedding::new(
            "pos_emb",
            config.maxlen,
            d,
            table_std(config.maxlen, d),
            &mut rng,
        )
        .map_err(nn)?;
        let block = TransformerBlockConfig {
            output_projection: config.output_projection,
            ..TransformerBlockConfig::sasrec(
                d,
                config.heads,
                config.dropout,
                splitmix64(seed ^ 0xB10C),
            )
        };
        let mut encoder = TransformerEncoder::new("encoder", &block, config.blocks, true, &mut rng)
            .map_err(|e| ModelError::Config(e.to_string()))?;
        encoder.visit_params_mut(&mut |p| {
            let shape = p.value.shape().to_vec();
            if shape.len() >= 2 {
                let fan_in: usize = shape[1..].iter().product();
                p.value = rng.normal_tensor(&shape, xavier(shape[0], fan_in));
            }
        });
        // After every other parameter, so that a tied network draws exactly the same weights as before
        // the option existed.
        let output_emb = if config.tied_output {
            None
        } else {
            Some(
                Embedding::new(
                    "output_emb",
                    n_items + 1,
                    d,
                    table_std(n_items + 1, d),
                    Padding::Skip(0),
                    &mut rng,
                )
                .map_err(nn)?,
            )
        };
        let gbce_beta = if config.loss == SasrecLoss::Gbce {
            seqrec_nn::loss::gbce_beta(config.negatives, n_items, config.gbce_t).map_err(|e| {
                bad(
                    "negatives",
                    config.negatives,
                    &format!("gBCE over {n_items} items: {e}"),
                )
            })?
        } else {
            1.0
        };
        let cache = NetCache {
            enc: TransformerEncoderCache::new(&encoder, config.batch_size, config.maxlen),
            keep: Vec::new(),
            e: Tensor::zeros(&[0, d]),
            x0: Tensor::zeros(&[0, d]),
            x1: Tensor::zeros(&[0, d]),
            h: Tensor::zeros(&[0, d]),
            dh: Tensor::zeros(&[0, d]),
            dx: Tensor::zeros(&[0, d]),
            emb_key: None,
            logits: Tensor::zeros(&[0, 2]),
            dlogits: Tensor::zeros(&[0, 2]),
            valid: Vec::new(),
            log_q: Tensor::zeros(&[0, 1]),
            hv: Tensor::zeros(&[0, d]),
            dhv: Tensor::zeros(&[0, d]),
            rows_idx: Vec::new(),
            targets_v: Vec::new(),
            last: Tensor::zeros(&[0, d]),
            scores: Tensor::zeros(&[0, n_items + 1]),
        };
        Ok(Self {
            item_emb,
            pos_emb,
            encoder,
            output_emb,
            sampling_log_q: Vec::new(),
            gbce_beta,
            config: config.clone(),
            n_items,
            emb_dropout_seed: splitmix64(seed ^ 0xE3B0),
            cache,
            serve: serve::ServeScratch::new(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &SasrecConfig {
        &self.config
    }

    /// Number of real items.
    pub fn n_items(&self) -> usize {
        self.n_items
    }

    /// gBCE's `β` for this catalogue (`gbce_beta(negatives, n_items, gbce_t)`; 1 for other losses).
    pub fn gbce_beta(&self) -> f64 {
        self.gbce_beta
    }

    /// Sets the sampling distribution the log-Q correction of [`SasrecLoss::SampledSoftmax`] assumes:
    /// `weights[i]` is item `i`'s unnormalised probability (`weights[0]`, padding, is ignored). Without
    /// a call the sampler is taken as uniform.
    ///
    /// # Errors
    /// [`ModelError::Config`] if `weights` does not have `n_items + 1` entries or a weight is negative,
    /// not finite, or all are zero.
    pub fn set_sampling_weights(&mut self, weights: &[f64]) -> Result<(), ModelError> {
        if weights.len() != self.n_items + 1 {
            return Err(bad(
                "sampler",
                weights.len(),
                &format!("expected {} sampling weights", self.n_items + 1),
            ));
        }
        if let Some(w) = weights[1..].iter().find(|w| !(w.is_finite() && **w >= 0.0)) {
            return Err(bad(
                "sampler",
                w,
                "sampling weights must be finite and >= 0",
            ));
        }
        let total: f64 = weights[1..].iter().sum();
        if total <= 0.0 {
            return Err(bad("sampler", total, "sampling weights sum to zero"));
        }
        self.sampling_log_q.clear();
        self.sampling_log_q.push(f64::NEG_INFINITY);
        self.sampling_log_q
            .extend(weights[1..].iter().map(|&w| (w / total).ln()));
        Ok(())
    }

    /// The output item table: `output_emb` when untied, else `item_emb`. `[n_items + 1, hidden]`.
    pub fn output_table(&self) -> &Param<T> {
        match &self.output_emb {
            Some(o) => &o.weight,
            None => &self.item_emb.weight,
        }
    }

    /// Forward through embeddings and encoder: `ids` `[batch, maxlen]` -> `cache.h` `[batch, maxlen, d]`.
    fn forward_hidden(&mut self, ids: &[u32], batch: usize, phase: Phase) {
        let (l, d) = (self.config.maxlen, self.config.hidden);
        assert_eq!(
            ids.len(),
            batch * l,
            "SasrecNet: ids must be [batch, maxlen]"
        );
        if let Some(&bad) = ids.iter().find(|&&i| i as usize > self.n_items) {
            panic!(
                "SasrecNet: item id {bad} out of range 0..={} (ids are checked where batches are built)",
                self.n_items
            );
        }
        let c = &mut self.cache;
        let shape = [batch, l, d];
        for t in [&mut c.e, &mut c.x0, &mut c.x1, &mut c.h] {
            t.resize(&shape);
        }
        c.keep.clear();
        c.keep.extend(ids.iter().map(|&i| i != 0));
        // 1. e = item_emb[ids] * input_scale (sqrt(d) in SASRec)
        self.item_emb.forward(&mut c.e, ids);
        scale_inplace(&mut c.e, T::from_f64(self.config.input_scale()));
        // 2. x0 = e + pos_emb[t] on real positions
        self.pos_emb
            .forward(&mut c.x0, &c.e, self.config.positions.mask(ids));
        // 3. x1 = keep * dropout(x0)
        c.emb_key = phase.dropout_key(self.emb_dropout_seed, self.config.dropout);
        match c.emb_key {
            Some(key) => dropout_forward(&mut c.x1, &c.x0, self.config.dropout, key),
            None => c.x1.copy_from(&c.x0),
        }
        zero_rows(&mut c.x1, &c.keep);
        // 4. h = encoder(x1)
        self.encoder
            .forward(&mut c.h, &mut c.enc, &c.x1, Some(&c.keep), phase);
    }

    /// Backward of [`Self::forward_hidden`] from `cache.dh`: parameter gradients `+=`.
    fn backward_hidden(&mut self, ids: &[u32]) {
        let c = &mut self.cache;
        c.dx.resize(c.h.shape());
        // 4. h = encoder(x1)  =>  dx1
        self.encoder
            .backward(&mut c.dx, &c.dh, &c.x1, Some(&c.keep), &mut c.enc);
        // 3. x1 = keep * dropout(x0)  =>  dx0 = dropout'(keep * dx1)     (into e)
        zero_rows(&mut c.dx, &c.keep);
        match c.emb_key {
            Some(key) => dropout_backward(&mut c.e, &c.dx, self.config.dropout, key),
            None => c.e.copy_from(&c.dx),
        }
        // 2. x0 = e + pos  =>  dpos[t] += dx0, de = dx0
        self.pos_emb.backward(&c.e, self.config.positions.mask(ids));
        // 1. e = item_emb[ids] * input_scale  =>  ditem_emb[ids] += input_scale de
        scale_inplace(&mut c.e, T::from_f64(self.config.input_scale()));
        self.item_emb.backward(&c.e, ids);
    }

    fn check_batch(&self, b: &TrainInputs<'_>) {
        let n = b.rows * self.config.maxlen;
        assert!(
            b.inputs.len() >= n && b.targets.len() >= n,
            "SasrecNet: inputs/targets shorter than rows * maxlen"
        );
        if self.config.loss == SasrecLoss::Bce {
            assert!(
                b.negatives.len() >= n,
                "SasrecNet: BCE needs one negative per position"
            );
        }
        if self.config.loss.is_multi_negative() {
            assert!(
                b.negatives.len() >= n * self.config.negatives,
                "SasrecNet: {:?} needs {} negatives per position",
                self.config.loss,
                self.config.negatives
            );
        }
    }

    /// The training loss of a batch (forward only, no gradient), under `phase`'s dropout.
    ///
    /// # Panics
    /// If the buffers are shorter than `rows * maxlen` or hold an id above `n_items`.
    pub fn loss(&mut self, batch: &TrainInputs<'_>, phase: Phase) -> T {
        self.loss_impl(batch, phase, false)
    }

    /// Forward, fused loss and gradient, and backward through every layer: returns the mean loss and
    /// adds its gradient to every parameter (`+=`; call [`Module::zero_grad`] first).
    ///
    /// # Panics
    /// As [`SasrecNet::loss`].
    pub fn forward_backward(&mut self, batch: &TrainInputs<'_>, phase: Phase) -> T {
        self.loss_impl(batch, phase, true)
    }

    fn loss_impl(&mut self, batch: &TrainInputs<'_>, phase: Phase, grad: bool) -> T {
        self.check_batch(batch);
        let n = batch.rows * self.config.maxlen;
        let ids = &batch.inputs[..n];
        self.forward_hidden(ids, batch.rows, phase);
        if grad {
            self.cache.dh.resize(self.cache.h.shape());
        }
        let targets = &batch.targets[..n];
        let mut loss = match self.config.loss {
            SasrecLoss::Bce => self.bce(targets, &batch.negatives[..n], grad),
            SasrecLoss::Ce => self.ce(targets, grad),
            SasrecLoss::Gbce | SasrecLoss::SampledSoftmax => {
                let k = self.config.negatives;
                self.multi_negative(targets, &batch.negatives[..n * k], grad)
            }
        };
        if self.config.l2_emb > 0.0 {
            // loss += l2 ||E||  =>  dE += l2 E / ||E||
            let w = &mut self.item_emb.weight;
            let norm: f64 = w
                .value
                .as_slice()
                .iter()
                .map(|v| v.to_f64().powi(2))
                .sum::<f64>()
                .sqrt();
            loss += T::from_f64(self.config.l2_emb * norm);
            if grad && norm > 0.0 {
                let a = T::from_f64(self.config.l2_emb / norm);
                axpy_slice(w.grad.as_mut_slice(), a, w.value.as_slice());
            }
        }
        if grad {
            self.backward_hidden(ids);
        }
        loss
    }

    /// BCE with one negative per position; with `grad`, fills `dh` and adds the output-side gradient
    /// of the item table.
    fn bce(&mut self, targets: &[u32], negatives: &[u32], grad: bool) -> T {
        let d = self.config.hidden;
        let c = &mut self.cache;
        let n = targets.len();
        c.logits.resize(&[n, 2]);
        c.dlogits.resize(&[n, 2]);
        c.valid.clear();
        c.valid.extend(targets.iter().map(|&t| t != 0));
        let w = out_param(&mut self.item_emb, &mut self.output_emb);
        let e = w.value.as_slice();
        let h = c.h.as_slice();
        // logits[r] = (h[r] . E[pos[r]], h[r] . E[neg[r]])
        for (r, lg) in c.logits.as_mut_slice().chunks_exact_mut(2).enumerate() {
            if c.valid[r] {
                let hr = &h[r * d..(r + 1) * d];
                let (p, q) = (targets[r] as usize, negatives[r] as usize);
                lg[0] = dot(hr, &e[p * d..(p + 1) * d]);
                lg[1] = dot(hr, &e[q * d..(q + 1) * d]);
            } else {
                lg.fill(T::ZERO);
            }
        }
        if !grad {
            return bce_with_logits(None, &c.logits, &c.valid);
        }
        let loss = bce_with_logits(Some(&mut c.dlogits), &c.logits, &c.valid);
        // dh[r] = g0 E[pos] + g1 E[neg];  dE[pos] += g0 h[r];  dE[neg] += g1 h[r]
        let eg = w.grad.as_mut_slice();
        let dh = c.dh.as_mut_slice();
        for (r, g) in c.dlogits.as_slice().chunks_exact(2).enumerate() {
            let dhr = &mut dh[r * d..(r + 1) * d];
            dhr.fill(T::ZERO);
            if !c.valid[r] {
                continue;
            }
            let hr = &h[r * d..(r + 1) * d];
            let (p, q) = (targets[r] as usize, negatives[r] as usize);
            axpy_slice(dhr, g[0], &e[p * d..(p + 1) * d]);
            axpy_slice(dhr, g[1], &e[q * d..(q + 1) * d]);
            axpy_slice(&mut eg[p * d..(p + 1) * d], g[0], hr);
            axpy_slice(&mut eg[q * d..(q + 1) * d], g[1], hr);
        }
        loss
    }

    /// gBCE or sampled softmax over the positive and `k = negatives` sampled negatives of every
    /// position with a target; with `grad`, fills `dh` and adds the output-side gradient of the table.
    ///
    /// `negatives`: `[rows * maxlen, k]`. Row `r`'s candidates are `c_r = [pos_r, neg_r1..neg_rk]` and
    /// its logits `x_rj = h_r . W[c_rj]` (`W` the output table). gBCE: `nn::loss::gbce` with this
    /// network's `β`. Sampled softmax: `nn::loss::sampled_softmax` with `ln q = 0` for the positive and
    /// `ln(k q(neg))` for each negative, so that `sum_j e^{x_j} / (k q_j)` is an unbiased estimate of
    /// the softmax denominator over the catalogue (Bengio & Senécal 2008); `q` is the sampler's
    /// distribution before the user's own items are excluded (the exclusion removes only a few percent
    /// of the mass on the usual data sets and is ignored).
    fn multi_negative(&mut self, targets: &[u32], negatives: &[u32], grad: bool) -> T {
        let (d, k) = (self.config.hidden, self.config.negatives);
        let cols = 1 + k;
        let n = targets.len();
        let c = &mut self.cache;
        c.logits.resize(&[n, cols]);
        c.valid.clear();
        c.valid.extend(targets.iter().map(|&t| t != 0));
        let w = out_param(&mut self.item_emb, &mut self.output_emb);
        let e = w.value.as_slice();
        let h = c.h.as_slice();
        let cand = |r: usize, j: usize| -> usize {
            if j == 0 {
                targets[r] as usize
            } else {
                negatives[r * k + j - 1] as usize
            }
        };
        // x[r, j] = h[r] . W[c_rj]
        for (r, lg) in c.logits.as_mut_slice().chunks_exact_mut(cols).enumerate() {
            if !c.valid[r] {
                lg.fill(T::ZERO);
                continue;
            }
            let hr = &h[r * d..(r + 1) * d];
            for (j, x) in lg.iter_mut().enumerate() {
                let i = cand(r, j);
                *x = dot8(hr, &e[i * d..(i + 1) * d]);
            }
        }
        if self.config.loss == SasrecLoss::SampledSoftmax {
            c.log_q.resize(&[n, cols]);
            let ln_k = (k as f64).ln();
            // Uniform: q = 1 / n_items for every item.
            let uniform = -(self.n_items as f64).ln();
            for (r, q) in c.log_q.as_mut_slice().chunks_exact_mut(cols).enumerate() {
                q[0] = T::ZERO;
                for (j, qj) in q.iter_mut().enumerate().skip(1) {
                    *qj = if c.valid[r] {
                        let lq = self
                            .sampling_log_q
                            .get(cand(r, j))
                            .copied()
                            .unwrap_or(uniform);
                        T::from_f64(ln_k + lq)
                    } else {
                        T::ZERO
                    };
                }
            }
        }
        let dl = if grad {
            c.dlogits.resize(&[n, cols]);
            Some(&mut c.dlogits)
        } else {
            None
        };
        let loss = match self.config.loss {
            SasrecLoss::Gbce => seqrec_nn::loss::gbce(dl, &c.logits, &c.valid, self.gbce_beta),
            _ => seqrec_nn::loss::sampled_softmax(dl, &c.logits, Some(&c.log_q), &c.valid),
        };
        if !grad {
            return loss;
        }
        // dh[r] = sum_j g_rj W[c_rj];  dW[c_rj] += g_rj h[r]
        let eg = w.grad.as_mut_slice();
        let dh = c.dh.as_mut_slice();
        for (r, g) in c.dlogits.as_slice().chunks_exact(cols).enumerate() {
            let dhr = &mut dh[r * d..(r + 1) * d];
            dhr.fill(T::ZERO);
            if !c.valid[r] {
                continue;
            }
            let hr = &h[r * d..(r + 1) * d];
            for (j, &gj) in g.iter().enumerate() {
                let i = cand(r, j);
                axpy_slice(dhr, gj, &e[i * d..(i + 1) * d]);
                axpy_slice(&mut eg[i * d..(i + 1) * d], gj, hr);
            }
        }
        loss
    }

    /// Full softmax cross-entropy over the items `1..=n_items`, in chunks of rows; with `grad`, fills
    /// `dh` and adds the output-side gradient of the item table (padding row excluded).
    fn ce(&mut self, targets: &[u32], grad: bool) -> T {
        let d = self.config.hidden;
        let cols = self.n_items + 1;
        let c = &mut self.cache;
        c.rows_idx.clear();
        c.rows_idx
            .extend((0..targets.len()).filter(|&r| targets[r] != 0));
        let total = c.rows_idx.len();
        if grad {
            c.dh.fill(T::ZERO);
        }
        if total == 0 {
            return T::ZERO;
        }
        let chunk = (CE_CHUNK_ELEMS / cols).max(1);
        let mut loss = 0.0f64;
        let w = out_param(&mut self.item_emb, &mut self.output_emb);
        for start in (0..total).step_by(chunk) {
            let rows = &c.rows_idx[start..(start + chunk).min(total)];
            let nc = rows.len();
            c.hv.resize(&[nc, d]);
            c.logits.resize(&[nc, cols]);
            c.targets_v.clear();
            {
                let h = c.h.as_slice();
                let hv = c.hv.as_mut_slice();
                for (i, &r) in rows.iter().enumerate() {
                    hv[i * d..(i + 1) * d].copy_from_slice(&h[r * d..(r + 1) * d]);
                    c.targets_v.push(targets[r]);
                }
            }
            // logits = hv E^T, with the padding column removed from the softmax (it is not an item).
            gemm(
                &mut c.logits,
                T::ONE,
                &c.hv,
                Transpose::No,
                &w.value,
                Transpose::Yes,
                T::ZERO,
            );
            for row in c.logits.as_mut_slice().chunks_exact_mut(cols) {
                row[0] = T::NEG_INFINITY;
            }
            // softmax_cross_entropy averages over this chunk: rescale to the batch mean.
            let alpha = nc as f64 / total as f64;
            if !grad {
                let l = softmax_cross_entropy(None, &c.logits, &c.targets_v, 0);
                loss += l.to_f64() * alpha;
                continue;
            }
            c.dlogits.resize(&[nc, cols]);
            let l = softmax_cross_entropy(Some(&mut c.dlogits), &c.logits, &c.targets_v, 0);
            loss += l.to_f64() * alpha;
            let a = T::from_f64(alpha);
            // dhv = alpha dlogits E;  dE += alpha dlogits^T hv
            c.dhv.resize(&[nc, d]);
            gemm(
                &mut c.dhv,
                a,
                &c.dlogits,
                Transpose::No,
                &w.value,
                Transpose::No,
                T::ZERO,
            );
            gemm(
                &mut w.grad,
                a,
                &c.dlogits,
                Transpose::Yes,
                &c.hv,
                Transpose::No,
                T::ONE,
            );
            let dh = c.dh.as_mut_slice();
            let dhv = c.dhv.as_slice();
            for (i, &r) in rows.iter().enumerate() {
                dh[r * d..(r + 1) * d].copy_from_slice(&dhv[i * d..(i + 1) * d]);
            }
        }
        if grad {
            // The padding row keeps a zero value and no gradient (padding_idx); its softmax weight was
            // exp(-inf) = 0 anyway.
            w.grad.as_mut_slice()[..d].fill(T::ZERO);
        }
        T::from_f64(loss)
    }

    /// Scores every item for `batch` histories `[batch, maxlen]` (right-aligned), without dropout:
    /// `scores[b, i] = h_last[b] . E[i]`, `scores`: `[batch, n_items + 1]`.
    ///
    /// # Panics
    /// If the buffers have the wrong length or an id is above `n_items`.
    pub fn score(&mut self, histories: &[u32], batch: usize, scores: &mut [T]) {
        let (l, d, cols) = (self.config.maxlen, self.config.hidden, self.n_items + 1);
        assert_eq!(
            histories.len(),
            batch * l,
            "SasrecNet::score: histories must be [batch, maxlen]"
        );
        assert_eq!(
            scores.len(),
            batch * cols,
            "SasrecNet::score: scores must be [batch, n_items + 1]"
        );
        // Sub-batches of at most batch_size rows keep the caches at their training size.
        let step = self.config.batch_size;
        for start in (0..batch).step_by(step) {
            let b = step.min(batch - start);
            self.forward_hidden(&histories[start * l..(start + b) * l], b, Phase::Eval);
            let c = &mut self.cache;
            c.last.resize(&[b, d]);
            let h = c.h.as_slice();
            for (r, row) in c.last.as_mut_slice().chunks_exact_mut(d).enumerate() {
                let t = r * l + l - 1;
                row.copy_from_slice(&h[t * d..(t + 1) * d]);
            }
            c.scores.resize(&[b, cols]);
            let table = match &self.output_emb {
                Some(o) => &o.weight.value,
                None => &self.item_emb.weight.value,
            };
            gemm(
                &mut c.scores,
                T::ONE,
                &c.last,
                Transpose::No,
                table,
                Transpose::Yes,
                T::ZERO,
            );
            scores[start * cols..(start + b) * cols].copy_from_slice(c.scores.as_slice());
        }
    }
}

// Serving: explanations and padding-trimmed scoring (kept in their own impl block).
impl<T: Float> SasrecNet<T> {
    /// [`SasrecNet::score`] through the inference-only serving forward (module `sasrec_serve.rs`):
    /// only the real positions of each history, the causal attention's lower triangle, the last
    /// block for the last position only, reused buffers. Equal to [`SasrecNet::score`] up to
    /// summation order (`tests/sasrec_serve.rs`). Blocks it does not support (not causal, padded keys
    /// not masked, padded outputs not zeroed: none that [`SasrecNet::new`] builds) run
    /// [`SasrecNet::score`] instead.
    ///
    /// # Panics
    /// As [`SasrecNet::score`].
    pub fn score_last_position(&mut self, histories: &[u32], batch: usize, scores: &mut [T]) {
        let (l, cols) = (self.config.maxlen, self.n_items + 1);
        assert_eq!(
            histories.len(),
            batch * l,
            "score_last_position: histories must be [batch, maxlen]"
        );
        assert_eq!(
            scores.len(),
            batch * cols,
            "score_last_position: scores must be [batch, n_items + 1]"
        );
        if let Some(&bad) = histories.iter().find(|&&i| i as usize > self.n_items) {
            panic!(
                "score_last_position: item id {bad} out of range 0..={}",
                self.n_items
            );
        }
        if !self.serving_supported() {
            return self.score(histories, batch, scores);
        }
        // Sub-batches of at most batch_size rows bound the buffers, as in `score`.
        let step = self.config.batch_size;
        for start in (0..batch).step_by(step) {
            let b = step.min(batch - start);
            self.score_packed(
                &histories[start * l..(start + b) * l],
                b,
                &mut scores[start * cols..(start + b) * cols],
            );
        }
    }

    /// [`SasrecNet::score`] on the last `l'` window slots only, where `l'` is the longest history of
    /// the batch: the leading slots that are padding in every row are skipped.
    ///
    /// The result equals the full window's up to summation order: padded positions are zero, are
    /// masked out of every attention row as keys, and every other op is row-wise, so the real
    /// positions see exactly the same inputs when they keep their positional embeddings (slot
    /// `maxlen - l' + t`, or the item's index with [`Positions::FirstItem`]). Cost drops from
    /// `maxlen` to `l'` positions per row (attention quadratically), which matters for short serving
    /// histories.
    ///
    /// # Panics
    /// As [`SasrecNet::score`].
    pub fn score_trimmed(&mut self, histories: &[u32], batch: usize, scores: &mut [T]) {
        let (l, d, cols) = (self.config.maxlen, self.config.hidden, self.n_items + 1);
        assert_eq!(
            histories.len(),
            batch * l,
            "score_trimmed: histories must be [batch, maxlen]"
        );
        assert_eq!(
            scores.len(),
            batch * cols,
            "score_trimmed: scores must be [batch, n_items + 1]"
        );
        if let Some(&bad) = histories.iter().find(|&&i| i as usize > self.n_items) {
            panic!(
                "score_trimmed: item id {bad} out of range 0..={}",
                self.n_items
            );
        }
        let step = self.config.batch_size;
        for start in (0..batch).step_by(step) {
            let b = step.min(batch - start);
            let rows = &histories[start * l..(start + b) * l];
            // Longest history of the sub-batch (at least one slot, so an all-padding row still runs).
            let lp = rows
                .chunks_exact(l)
                .map(|r| l - r.iter().position(|&i| i != 0).unwrap_or(l))
                .max()
                .unwrap_or(0)
                .max(1);
            let off = l - lp;
            let ids: Vec<u32> = rows
                .chunks_exact(l)
                .flat_map(|r| r[off..].iter().copied())
                .collect();
            let c = &mut self.cache;
            let shape = [b, lp, d];
            for t in [&mut c.e, &mut c.x1, &mut c.h] {
                t.resize(&shape);
            }
            c.keep.clear();
            c.keep.extend(ids.iter().map(|&i| i != 0));
            // e = item_emb[ids] * input_scale + pos_emb[off + t] on real positions (eval: no dropout).
            self.item_emb.forward(&mut c.e, &ids);
            scale_inplace(&mut c.e, T::from_f64(self.config.input_scale()));
            let pos = self.pos_emb.weight.value.as_slice();
            let x1 = c.x1.as_mut_slice();
            let e = c.e.as_slice();
            let first_item = self.config.positions == Positions::FirstItem;
            let mut seen = 0usize; // real items before this slot in its row
            for (r, &k) in c.keep.iter().enumerate() {
                if r % lp == 0 {
                    seen = 0;
                }
                let row = &mut x1[r * d..(r + 1) * d];
                if k {
                    let t = if first_item { seen } else { off + r % lp };
                    seen += 1;
                    for ((o, &a), &p) in row
                        .iter_mut()
                        .zip(&e[r * d..(r + 1) * d])
                        .zip(&pos[t * d..(t + 1) * d])
                    {
                        *o = a + p;
                    }
                } else {
                    row.fill(T::ZERO);
                }
            }
            self.encoder
                .forward(&mut c.h, &mut c.enc, &c.x1, Some(&c.keep), Phase::Eval);
            c.last.resize(&[b, d]);
            let h = c.h.as_slice();
            for (r, row) in c.last.as_mut_slice().chunks_exact_mut(d).enumerate() {
                let t = r * lp + lp - 1;
                row.copy_from_slice(&h[t * d..(t + 1) * d]);
            }
            c.scores.resize(&[b, cols]);
            gemm(
                &mut c.scores,
                T::ONE,
                &c.last,
                Transpose::No,
                match &self.output_emb {
                    Some(o) => &o.weight.value,
                    None => &self.item_emb.weight.value,
                },
                Transpose::Yes,
                T::ZERO,
            );
            scores[start * cols..(start + b) * cols].copy_from_slice(c.scores.as_slice());
        }
    }

    /// The attention weights of the last block for the last position of one history (`[maxlen]`,
    /// right-aligned), averaged over heads: how much each position contributes to the hidden state
    /// that scores the next item. Zero on padding; sums to 1 over the real positions (all zero for an
    /// empty history). Runs a forward pass in eval mode.
    ///
    /// # Panics
    /// If `history` is not `[maxlen]` or holds an id above `n_items`.
    pub fn last_attention(&mut self, history: &[u32]) -> Vec<T> {
        let (l, heads) = (self.config.maxlen, self.config.heads);
        self.forward_hidden(history, 1, Phase::Eval);
        let last_block = self.config.blocks - 1;
        let w = self.cache.enc.block(last_block).attention().weights();
        // [1, heads, l, l]: row l - 1 of each head.
        let w = w.as_slice();
        let mut out = vec![T::ZERO; l];
        let inv = T::from_f64(1.0 / heads as f64);
        for h in 0..heads {
            let row = &w[h * l * l + (l - 1) * l..h * l * l + l * l];
            for (o, &x) in out.iter_mut().zip(row) {
                *o += x * inv;
            }
        }
        out
    }
}

impl<T: Float> Module<T> for SasrecNet<T> {
    fn visit_params(&self, f: &mut dyn FnMut(&Param<T>)) {
        self.item_emb.visit_params(f);
        self.pos_emb.visit_params(f);
        self.encoder.visit_params(f);
        if let Some(o) = &self.output_emb {
            o.visit_params(f);
        }
    }

    fn visit_params_mut(&mut self, f: &mut dyn FnMut(&mut Param<T>)) {
        self.item_emb.visit_params_mut(f);
        self.pos_emb.visit_params_mut(f);
        self.encoder.visit_params_mut(f);
        if let Some(o) = &mut self.output_emb {
            o.visit_params_mut(f);
        }
    }
}

/// SASRec's Adam: `torch.optim.Adam` without weight decay (`l2_emb` is part of the loss).
fn adam_hyper(config: &SasrecConfig) -> AdamHyper {
    AdamHyper {
        lr: config.lr,
        beta1: config.betas.0,
        beta2: config.betas.1,
        eps: config.adam_eps,
        weight_decay: 0.0,
    }
}

/// What `state.json` of a checkpoint holds besides the tensors.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SavedState {
    format: u32,
    model: String,
    n_items: usize,
    seed: u64,
    adam_steps: u64,
    config: SasrecConfig,
}

/// The checkpoint files (names unchanged since format 1).
const FILES: CheckpointFiles = CheckpointFiles {
    params: "model.safetensors",
    optim: "optimizer.safetensors",
    state: "state.json",
};

/// SASRec as a [`Model`]: a [`SasrecNet<f32>`], Adam, and the seed that keys shuffling, negatives and
/// dropout.
///
/// ```
/// use seqrec_data::{Dataset, Split, Vocab};
/// use seqrec_models::{Model, Sasrec, SasrecConfig};
///
/// let users = Vocab::from_originals((0..4).map(|u| u.to_string()).collect()).unwrap();
/// let items = Vocab::from_originals((0..6).map(|i| i.to_string()).collect()).unwrap();
/// let seqs = (0..4u32).map(|u| ((0..6).map(|t| (u + t) % 6 + 1).collect(), (0..6).collect())).collect();
/// let ds = Dataset::from_sequences(users, items, seqs).unwrap();
/// let split = Split::leave_one_out(&ds);
/// let train = split.train_sequences(&ds).unwrap();
/// let config = SasrecConfig { hidden: 8, heads: 2, maxlen: 5, batch_size: 2, ..SasrecConfig::default() };
/// let mut model = Sasrec::new(config, &train, 42).unwrap();
/// let report = model.train_epoch(&train, 0, &mut |_| {}).unwrap();
/// assert_eq!(report.steps, 2);
/// assert!(report.loss.is_finite());
/// let mut scores = vec![0.0f32; 7];
/// model.score(&[0, 0, 1, 2, 3], 1, &mut scores);
/// assert!(scores[1..].iter().all(|s| s.is_finite()));
/// ```
#[derive(Clone, Debug)]
pub struct Sasrec {
    net: SasrecNet<f32>,
    adam: AdamState<f32>,
    seed: u64,
}

impl Sasrec {
    /// A model for the catalogue of `train`, initialised from `seed`.
    ///
    /// # Errors
    /// [`ModelError::Config`] for an invalid configuration or an empty catalogue.
    pub fn new(config: SasrecConfig, train: &Sequences<'_>, seed: u64) -> Result<Self, ModelError> {
        let net = SasrecNet::new(&config, train.n_items(), seed)?;
        let adam = AdamState::new(&net, adam_hyper(&config));
        Ok(Self { net, adam, seed })
    }

    /// The network (parameters by name through [`Module::visit_params`]).
    pub fn net(&self) -> &SasrecNet<f32> {
        &self.net
    }

    /// The network, mutably (to inspect or replace parameters, e.g. pretrained item embeddings).
    pub fn net_mut(&mut self) -> &mut SasrecNet<f32> {
        &mut self.net
    }

    /// The configuration.
    pub fn config(&self) -> &SasrecConfig {
        self.net.config()
    }

    /// Optimisation steps taken so far.
    pub fn steps(&self) -> u64 {
        self.adam.steps
    }
}

impl Model for Sasrec {
    fn name(&self) -> &'static str {
        "sasrec"
    }

    fn n_items(&self) -> usize {
        self.net.n_items
    }

    fn max_history(&self) -> usize {
        self.net.config.maxlen
    }

    fn set_lr_factor(&mut self, factor: f64) -> Result<(), ModelError> {
        self.adam.set_lr_factor(factor)
    }

    fn train_epoch(
        &mut self,
        train: &Sequences<'_>,
        epoch: usize,
        on_step: &mut dyn FnMut(&StepReport),
    ) -> Result<EpochReport, ModelError> {
        let config = self.net.config.clone();
        if train.n_items() != self.net.n_items {
            return Err(ModelError::Data(format!(
                "training data has {} items, the model {}",
                train.n_items(),
                self.net.n_items
            )));
        }
        let data = |e: &dyn std::fmt::Display| ModelError::Data(e.to_string());
        let negatives = match config.loss {
            SasrecLoss::Bce => Negatives::PerPosition {
                n: 1,
                sampler: NegativeSampler::uniform(self.net.n_items).map_err(|e| data(&e))?,
            },
            SasrecLoss::Ce => Negatives::None,
            // Per position, as the gSASRec repository (`torch.randint(.., size=(batch, len, k))`),
            // but excluding the user's training items as SASRec's sampler does.
            SasrecLoss::Gbce => Negatives::PerPosition {
                n: config.negatives,
                sampler: NegativeSampler::uniform(self.net.n_items).map_err(|e| data(&e))?,
            },
            SasrecLoss::SampledSoftmax => {
                let sampler = match config.sampler {
                    SasrecSampler::Uniform => {
                        NegativeSampler::uniform(self.net.n_items).map_err(|e| data(&e))?
                    }
                    SasrecSampler::Popularity => {
                        let mut counts = vec![0u32; self.net.n_items + 1];
                        for k in 0..train.len() {
                            for &i in train.items(k) {
                                counts[i as usize] += 1;
                            }
                        }
                        NegativeSampler::popularity(&counts, 1.0).map_err(|e| data(&e))?
                    }
                };
                let weights: Vec<f64> = (0..=self.net.n_items as u32)
                    .map(|i| sampler.weight(i))
                    .collect();
                self.net.set_sampling_weights(&weights)?;
                Negatives::PerPosition {
                    n: config.negatives,
                    sampler,
                }
            }
        };
        let bcfg = seqrec_data::SasrecConfig {
            batch_size: config.batch_size,
            maxlen: config.maxlen,
            window: WindowMode::Last,
            negatives,
            shuffle: true,
            seed: self.seed,
            context: None,
        };
        let mut batcher = SasrecBatcher::new(train.clone(), bcfg).map_err(|e| data(&e))?;
        batcher.start_epoch(epoch as u64);
        let steps = batcher.n_batches();
        let mut tally = EpochTally::new(steps, on_step);
        for step in 0..steps {
            let batch = match batcher.next_batch().map_err(|e| data(&e))? {
                Some(b) => b,
                None => break,
            };
            let inputs = TrainInputs {
                rows: batch.rows,
                inputs: &batch.inputs,
                targets: &batch.targets,
                negatives: &batch.negatives,
            };
            self.net.zero_grad();
            let phase = Phase::Train {
                step: step_key(epoch, step),
            };
            let loss = self.net.forward_backward(&inputs, phase).to_f64();
            self.adam
                .finish_step(&mut self.net, loss, config.clip_grad_norm, epoch, step)?;
            tally.record(loss, batch.rows);
        }
        Ok(tally.finish())
    }

    fn score(&mut self, histories: &[u32], batch: usize, scores: &mut [f32]) {
        self.net.score(histories, batch, scores);
    }

    fn last_attention(&mut self, history: &[u32]) -> Option<Vec<f32>> {
        Some(self.net.last_attention(history))
    }

    fn score_serving(&mut self, histories: &[u32], batch: usize, scores: &mut [f32]) {
        self.net.score_last_position(histories, batch, scores);
    }

    fn set_serving_precision(&mut self, precision: Precision) -> Result<(), ModelError> {
        self.net.set_serving_precision(precision)
    }

    fn save(&self, dir: &Path) -> Result<(), ModelError> {
        let state = SavedState {
            format: 1,
            model: "sasrec".into(),
            n_items: self.net.n_items,
            seed: self.seed,
            adam_steps: self.adam.steps,
            config: self.net.config.clone(),
        };
        FILES.save(dir, &self.net, &self.adam, &state)
    }

    fn load(&mut self, dir: &Path) -> Result<(), ModelError> {
        let (state, path): (SavedState, _) = FILES.read_state(dir)?;
        if state.model != "sasrec" || state.format != 1 {
            return Err(ckpt_err(
                &path,
                format!(
                    "not a SASRec checkpoint of format 1 (model {:?}, format {})",
                    state.model, state.format
                ),
            ));
        }
        // Tensors are checked by name and shape (the error names the tensor and both shapes); every
        // file is read into a copy or checked whole before anything is committed, so a failed load
        // leaves the model untouched.
        let adam = FILES.load_adam(dir, &self.adam, state.adam_steps)?;
        // Dropout seeds derive from the model seed, fixed when the network is built: a checkpoint of
        // another seed is loaded into a network rebuilt with that seed (and this model's config, so
        // shapes are still checked against it). `load_params` checks the whole file before copying,
        // so a failure leaves `self.net` as is.
        if state.seed == self.seed {
            FILES.load_params(dir, &mut self.net)?;
        } else {
            let mut net = SasrecNet::new(&self.net.config, self.net.n_items, state.seed)?;
            FILES.load_params(dir, &mut net)?;
            self.net = net;
        }
        self.adam = adam;
        self.seed = state.seed;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use seqrec_nn::optim::{Adam, AdamConfig, Optimizer};

    /// The private Adam (needed because its state must be checkpointed) is `seqrec_nn::optim::Adam`
    /// with PyTorch's maths: same parameters after three steps, bit for bit, and the same moments.
    #[test]
    fn adam_state_matches_seqrec_nn_adam() {
        let config = SasrecConfig {
            hidden: 8,
            heads: 2,
            maxlen: 4,
            lr: 0.01,
            ..SasrecConfig::default()
        };
        let mut a = SasrecNet::<f32>::new(&config, 5, 3).unwrap();
        let mut b = a.clone();
        let mut ours = AdamState::new(&a, adam_hyper(&config));
        let mut theirs = Adam::<f32>::new(AdamConfig {
            betas: config.betas,
            eps: config.adam_eps,
            ..AdamConfig::adam(config.lr)
        })
        .unwrap();
        let mut rng = Rng::new(9);
        for _ in 0..3 {
            let mut grads = Vec::new();
            a.visit_params(&mut |p| grads.push(rng.normal_tensor::<f32>(p.value.shape(), 1.0)));
            let mut i = 0;
            a.visit_params_mut(&mut |p| {
                p.grad = grads[i].clone();
                i += 1;
            });
            let mut i = 0;
            b.visit_params_mut(&mut |p| {
                p.grad = grads[i].clone();
                i += 1;
            });
            ours.step(&mut a);
            theirs.step(&mut b).unwrap();
        }
        let (mut va, mut vb) = (Vec::new(), Vec::new());
        a.visit_params(&mut |p| va.push(p.value.clone()));
        b.visit_params(&mut |p| vb.push(p.value.clone()));
        assert_eq!(va, vb);
        for (s, m) in theirs.slots().iter().zip(&ours.m) {
            assert_eq!(s.m, m.value.as_slice(), "{}", s.name);
        }
        assert_eq!(ours.steps, theirs.steps());
    }
}
