//! [`MultiheadAttention`]: PyTorch's `nn.MultiheadAttention` (batch first), causal (SASRec) or
//! bidirectional (BERT4Rec), with a key-padding mask, attention dropout and the attention weights.
//!
//! Parameters use PyTorch's names and layouts: `in_proj_weight` `[3d, d]` (rows `0..d` project the query,
//! `d..2d` the key, `2d..3d` the value), `in_proj_bias` `[3d]`, `out_proj.weight` `[d, d]`,
//! `out_proj.bias` `[d]`. Scores are scaled by `1 / sqrt(d_head)`. Without the output projection
//! ([`MultiheadAttention::without_output_projection`], the SASRec paper's and reference code's
//! attention) the merged heads are the output and `out_proj` is not a parameter.
//!
//! Query and key/value inputs are separate (`forward(out, cache, x_q, x_kv, ..)`) because SASRec's block
//! attends from `LayerNorm(x)` to `x`; for plain self-attention pass the same tensor twice and add the two
//! input gradients.
//!
//! **Fully masked query rows** (a query that sees no key: an all-padding sequence, or a left-padded
//! position under a causal mask) output exactly zero, not `out_proj.bias` and never NaN (PyTorch gives
//! NaN there); they receive and pass back no gradient.

use seqrec_tensor::{
    DropoutKey, Float, Mask, Tensor, Transpose, add_bias, add_bias_backward,
    causal_softmax_dropout, causal_softmax_dropout_backward, dropout_backward, dropout_forward,
    gemm, gemm_batched, softmax_backward, softmax_inplace, splitmix64, transpose,
};
use thiserror::Error;

use crate::init::{Rng, xavier_uniform_bound};
use crate::linear::Linear;
use crate::param::{Module, Param, join};

/// Invalid layer configurations of the attention layers ([`MhaConfig`],
/// [`crate::FeedForwardConfig`], [`crate::TransformerBlockConfig`], [`crate::AttentionPoolingConfig`]).
#[derive(Clone, Debug, Error, PartialEq)]
pub enum AttnConfigError {
    /// Occurs when a size (width, number of heads, feed-forward width, ...) is zero.
    #[error("{field} must be positive, got 0")]
    ZeroSize {
        /// The configuration field.
        field: &'static str,
    },
    /// Occurs when the number of heads does not divide the model width.
    #[error("num_heads = {num_heads} must divide d_model = {d_model} (d_model % num_heads = {})", d_model % num_heads)]
    HeadsDoNotDivide {
        /// Model width.
        d_model: usize,
        /// Number of heads.
        num_heads: usize,
    },
    /// Occurs when a dropout probability is outside `[0, 1)` or not finite.
    #[error("{field} must be in [0, 1), got {value}")]
    Dropout {
        /// The configuration field.
        field: &'static str,
        /// The rejected value.
        value: f64,
    },
    /// Occurs when a layer-norm epsilon is not positive and finite.
    #[error("{field} must be positive and finite, got {value}")]
    Eps {
        /// The configuration field.
        field: &'static str,
        /// The rejected value.
        value: f64,
    },
}

pub(crate) fn check_dropout(field: &'static str, value: f64) -> Result<(), AttnConfigError> {
    if (0.0..1.0).contains(&value) {
        Ok(())
    } else {
        Err(AttnConfigError::Dropout { field, value })
    }
}

pub(crate) fn check_positive(field: &'static str, value: usize) -> Result<(), AttnConfigError> {
    if value == 0 {
        Err(AttnConfigError::ZeroSize { field })
    } else {
        Ok(())
    }
}

/// Training or evaluation: dropout is active only in training, keyed by the step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Training step `step`: every dropout site draws the mask of `(site seed, step)`.
    Train {
        /// Training step (changes the dropout masks every call).
        step: u64,
    },
    /// Evaluation: dropout is the identity.
    Eval,
}

impl Phase {
    /// The dropout key of the site with seed `seed`, or `None` when no dropout applies (evaluation, or
    /// `p == 0`, which is then an exact identity: the buffers are not even copied).
    pub fn dropout_key(self, seed: u64, p: f64) -> Option<DropoutKey> {
        match self {
            Phase::Train { step } if p > 0.0 => Some(DropoutKey { seed, step }),
            _ => None,
        }
    }
}

/// A per-site seed derived from a layer seed and a site number.
pub(crate) fn site_seed(seed: u64, site: u64) -> u64 {
    splitmix64(seed ^ splitmix64(site.wrapping_add(0x5EED)))
}

/// Which keys a query may attend to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AttentionMask {
    /// Position `i` sees keys `j <= i` (SASRec, left-to-right).
    Causal,
    /// Every position sees every (non-padded) key (BERT4Rec).
    Bidirectional,
}

/// Configuration of [`MultiheadAttention`], validated once by [`MhaConfig::validate`].
#[derive(Clone, Debug, PartialEq)]
pub struct MhaConfig {
    /// Model width `d` (input and output).
    pub d_model: usize,
    /// Number of heads; must divide `d_model`.
    pub num_heads: usize,
    /// Causal or bidirectional.
    pub mask: AttentionMask,
    /// Dropout on the attention weights (PyTorch's `dropout` argument of `nn.MultiheadAttention`).
    pub dropout: f64,
    /// Seed of the attention-dropout masks.
    pub seed: u64,
}

impl MhaConfig {
    /// Checks sizes (positive, heads dividing the width) and the dropout probability.
    ///
    /// # Errors
    /// [`AttnConfigError`] naming the offending field and values.
    pub fn validate(&self) -> Result<(), AttnConfigError> {
        check_positive("d_model", self.d_model)?;
        check_positive("num_heads", self.num_heads)?;
        if !self.d_model.is_multiple_of(self.num_heads) {
            return Err(AttnConfigError::HeadsDoNotDivide {
                d_model: self.d_model,
                num_heads: self.num_heads,
            });
        }
        check_dropout("dropout", self.dropout)
    }

    /// Width of one head.
    pub fn d_head(&self) -> usize {
        self.d_model / self.num_heads
    }
}

/// Multi-head attention with PyTorch's parameter names (see the module docs).
#[derive(Clone, Debug)]
pub struct MultiheadAttention<T> {
    /// Packed q, k, v projection weights, `[3d, d]`.
    pub in_proj_weight: Param<T>,
    /// Packed q, k, v projection biases, `[3d]`.
    pub in_proj_bias: Param<T>,
    /// Output projection (`out_proj.weight` `[d, d]`, `out_proj.bias` `[d]`); `None`: the merged
    /// heads are the output.
    pub out_proj: Option<Linear<T>>,
    config: MhaConfig,
}

/// What [`MultiheadAttention::forward`] saves for [`MultiheadAttention::backward`], plus the backward's
/// scratch buffers. Allocated once for `[batch, seq]` and reused; a smaller batch resizes without
/// reallocating.
#[derive(Clone, Debug)]
pub struct MhaCache<T> {
    batch: usize,
    seq: usize,
    /// Copies of the q, k, v weight blocks `[d, d]` and biases `[d]` (contiguous operands for GEMM).
    w: [Tensor<T>; 3],
    b: [Tensor<T>; 3],
    /// Projected q, k, v split into heads, `[batch, heads, seq, d_head]`.
    heads: [Tensor<T>; 3],
    /// Softmax of the scores before dropout: the attention weights, `[batch, heads, seq, seq]`.
    probs: Tensor<T>,
    /// Attention weights after dropout (empty unless attention dropout was active).
    probs_drop: Tensor<T>,
    /// Context per head, `[batch, heads, seq, d_head]`.
    ctx_heads: Tensor<T>,
    /// Context with heads merged, `[batch, seq, d]` (the `out_proj` input; unused with one head).
    ctx: Tensor<T>,
    /// Per query row `[batch * seq]`: whether it sees at least one key.
    live: Vec<bool>,
    any_dead: bool,
    /// The attention-dropout key of the forward, if dropout was active.
    key: Option<DropoutKey>,
    /// Causal attention with left-padded (or no) key padding: the fused softmax + dropout ran, and
    /// `first[b]` (empty: 0 for all) is the first real position of sequence `b`, where its score,
    /// probability and context matrices start (rows and columns before it are exact zeros).
    fused: bool,
    first: Vec<usize>,
    /// Test switch: always take the general masked path (the oracle of the fused, padding-skipping one).
    #[cfg(test)]
    force_general: bool,
    // Backward scratch.
    tmp: Tensor<T>,
    dy_live: Tensor<T>,
    dscores: [Tensor<T>; 2],
    dheads: [Tensor<T>; 3],
    dw: Tensor<T>,
    db: Tensor<T>,
}

impl<T: Float> MhaCache<T> {
    /// A cache for inputs `[batch, seq, d_model]` of the layer configured by `config`.
    pub fn new(config: &MhaConfig, batch: usize, seq: usize) -> Self {
        let (d, h, dh) = (config.d_model, config.num_heads, config.d_head());
        let z = |s: &[usize]| Tensor::zeros(s);
        let heads = [batch, h, seq, dh];
        let scores = [batch, h, seq, seq];
        Self {
            batch,
            seq,
            w: [z(&[d, d]), z(&[d, d]), z(&[d, d])],
            b: [z(&[d]), z(&[d]), z(&[d])],
            heads: [z(&heads), z(&heads), z(&heads)],
            probs: z(&scores),
            probs_drop: z(&[0]),
            ctx_heads: z(&heads),
            ctx: z(&[batch, seq, d]),
            live: vec![true; batch * seq],
            any_dead: false,
            key: None,
            fused: false,
            first: Vec::new(),
            #[cfg(test)]
            force_general: false,
            tmp: z(&[batch, seq, d]),
            dy_live: z(&[batch, seq, d]),
            dscores: [z(&scores), z(&scores)],
            dheads: [z(&heads), z(&heads), z(&heads)],
            dw: z(&[d, d]),
            db: z(&[d]),
        }
    }

    /// Reshapes every buffer for `[batch, seq]` (no reallocation when it shrinks).
    fn ensure(&mut self, batch: usize, seq: usize, h: usize, dh: usize) {
        if (batch, seq) == (self.batch, self.seq) {
            return;
        }
        let d = h * dh;
        let (heads, scores, flat) = ([batch, h, seq, dh], [batch, h, seq, seq], [batch, seq, d]);
        for t in self.heads.iter_mut().chain(self.dheads.iter_mut()) {
            t.resize(&heads);
        }
        self.ctx_heads.resize(&heads);
        self.probs.resize(&scores);
        for t in self.dscores.iter_mut() {
            t.resize(&scores);
        }
        for t in [&mut self.ctx, &mut self.tmp, &mut self.dy_live] {
            t.resize(&flat);
        }
        self.live.resize(batch * seq, true);
        (self.batch, self.seq) = (batch, seq);
    }

    /// The attention weights of the last forward (before attention dropout), `[batch, heads, seq, seq]`:
    /// row `i` of head `h` is the distribution of query `i` over the keys (all zero for a fully masked
    /// query).
    pub fn weights(&self) -> &Tensor<T> {
        &self.probs
    }

    /// Whether query row `b * seq + t` of the last forward saw at least one key (its output is zero if
    /// not).
    pub fn live_rows(&self) -> &[bool] {
        &self.live
    }
}

impl<T: Float> MultiheadAttention<T> {
    /// A layer named `prefix` with PyTorch's initialisation: `in_proj_weight` Xavier-uniform, biases
    /// zero, `out_proj.weight` uniform in `±1/sqrt(d)`.
    ///
    /// # Errors
    /// [`AttnConfigError`] if the configuration is invalid (see [`MhaConfig::validate`]).
    pub fn new(prefix: &str, config: MhaConfig, rng: &mut Rng) -> Result<Self, AttnConfigError> {
        config.validate()?;
        let d = config.d_model;
        let in_proj_weight = Param::new(
            join(prefix, "in_proj_weight"),
            rng.uniform_tensor(&[3 * d, d], xavier_uniform_bound(d, 3 * d, 1.0)),
        );
        let in_proj_bias = Param::new(join(prefix, "in_proj_bias"), Tensor::zeros(&[3 * d]));
        let mut out_proj = Linear::new(&join(prefix, "out_proj"), d, d, true, rng);
        if let Some(b) = &mut out_proj.bias {
            b.value.fill(T::ZERO);
        }
        Ok(Self {
            in_proj_weight,
            in_proj_bias,
            out_proj: Some(out_proj),
            config,
        })
    }

    /// The same layer without its output projection: `out = merge_heads(heads)`, as in the SASRec
    /// paper (`S = SA(E)` has no `W_O`) and its reference code. The projection is still drawn by
    /// [`MultiheadAttention::new`], so the other parameters come out the same for a given seed.
    pub fn without_output_projection(mut self) -> Self {
        self.out_proj = None;
        self
    }

    /// Step 8 of the forward: `out = ctx Wo^T + bo`, or `out = ctx` without the output projection
    /// (`ctx`: the merged heads, any shape of `out`'s length). Public for inference-only forwards.
    pub fn project_output(&self, out: &mut Tensor<T>, ctx: &Tensor<T>) {
        match &self.out_proj {
            Some(proj) => proj.forward(out, ctx),
            None => out.as_mut_slice().copy_from_slice(ctx.as_slice()),
        }
    }

    /// The validated configuration.
    pub fn config(&self) -> &MhaConfig {
        &self.config
    }

    /// Forward: `out = MHA(query = x_q, key = value = x_kv)`.
    ///
    /// - `x_q`, `x_kv`, `out`: `[batch, seq, d]` (pass the same tensor twice for self-attention);
    /// - `key_keep`: `[batch * seq]` flags, `true` for real positions (`None`: every key is real);
    /// - `cache`: built with [`MhaCache::new`]; holds the weights afterwards ([`MhaCache::weights`]).
    ///
    /// # Panics
    /// If shapes disagree with each other or with the configuration (programming errors).
    pub fn forward(
        &self,
        out: &mut Tensor<T>,
        cache: &mut MhaCache<T>,
        x_q: &Tensor<T>,
        x_kv: &Tensor<T>,
        key_keep: Option<&[bool]>,
        phase: Phase,
    ) {
        let (d, h, dh) = (
            self.config.d_model,
            self.config.num_heads,
            self.config.d_head(),
        );
        let (batch, seq) = self.check_shapes(out, x_q, x_kv, key_keep);
        cache.ensure(batch, seq, h, dh);
        let causal = self.config.mask == AttentionMask::Causal;
        // 1. Split the packed weights into contiguous q, k, v blocks (3 d^2 copies, no allocation).
        let (w, b) = (
            self.in_proj_weight.value.as_slice(),
            self.in_proj_bias.value.as_slice(),
        );
        for i in 0..3 {
            cache.w[i]
                .as_mut_slice()
                .copy_from_slice(&w[i * d * d..(i + 1) * d * d]);
            cache.b[i]
                .as_mut_slice()
                .copy_from_slice(&b[i * d..(i + 1) * d]);
        }
        // 2. q = x_q Wq^T + bq,  k = x_kv Wk^T + bk,  v = x_kv Wv^T + bv, each split into heads.
        for (i, x) in [x_q, x_kv, x_kv].into_iter().enumerate() {
            project_heads(
                &mut cache.heads[i],
                &mut cache.tmp,
                x,
                &cache.w[i],
                &cache.b[i],
                h,
            );
        }
        // Causal with left padding (keys masked): each sequence's matrices start at its first real
        // position `first[b]`; rows before it see no key (zero output) and columns before it are masked,
        // so the kernels skip them (46% of ML-1M training positions are padding).
        cache.fused = causal && left_padding_offsets(&mut cache.first, key_keep, batch, seq);
        #[cfg(test)]
        if cache.force_general {
            cache.fused = false;
        }
        let first: &[usize] = if cache.fused { &cache.first } else { &[] };
        // 3. scores = q k^T / sqrt(d_head)   [batch, heads, seq, seq]
        let scale = T::from_f64(1.0 / (dh as f64).sqrt());
        //    (causal: only the blocks on and below the diagonal, see `causal`)
        let [q, k, v] = &cache.heads;
        if causal {
            causal::abt(&mut cache.probs, q, k, seq, scale, first);
        } else {
            gemm_batched(
                &mut cache.probs,
                scale,
                q,
                Transpose::No,
                k,
                Transpose::Yes,
                T::ZERO,
            );
        }
        mark_live_rows(&mut cache.live, key_keep, batch, seq, causal);
        cache.any_dead = cache.live.iter().any(|&l| !l);
        cache.key = phase.dropout_key(self.config.seed, self.config.dropout);
        let p = self.config.dropout;
        if cache.key.is_some() {
            cache.probs_drop.resize(cache.probs.shape());
        }
        if cache.fused {
            // 4. + 5. probs = softmax(scores) over visible keys, probs_d = dropout(probs), in one pass
            let f = (!first.is_empty()).then_some(first);
            let drop = cache.key.map(|key| (&mut cache.probs_drop, p, key));
            causal_softmax_dropout(&mut cache.probs, f, drop);
        } else {
            // 4. probs = softmax(scores) over visible keys (fully masked rows become 0)
            let mask = match (causal, key_keep) {
                (true, None) => Mask::Causal,
                (true, Some(keep)) => Mask::CausalKeyPadding(keep),
                (false, None) => Mask::None,
                (false, Some(keep)) => Mask::KeyPadding(keep),
            };
            softmax_inplace(&mut cache.probs, mask);
            // 5. probs_d = dropout(probs)
            if let Some(key) = cache.key {
                if causal {
                    causal::dropout_lower(&mut cache.probs_drop, &cache.probs, p, key, seq);
                } else {
                    dropout_forward(&mut cache.probs_drop, &cache.probs, p, key);
                }
            }
        }
        let probs_used = if cache.key.is_some() {
            &cache.probs_drop
        } else {
            &cache.probs
        };
        // 6. ctx_heads = probs_d v   [batch, heads, seq, d_head]
        if causal {
            causal::ab(&mut cache.ctx_heads, probs_used, v, seq, T::ONE, first);
        } else {
            let ctx = &mut cache.ctx_heads;
            gemm_batched(
                ctx,
                T::ONE,
                probs_used,
                Transpose::No,
                v,
                Transpose::No,
                T::ZERO,
            );
        }
        // 7. ctx = merge_heads(ctx_heads)   [batch, seq, d]  (one head: ctx_heads already is that)
        if h > 1 {
            merge_heads(&mut cache.ctx, &cache.ctx_heads, h);
        }
        // 8. out = ctx Wo^T + bo  (out = ctx without the projection)
        let ctx = if h > 1 { &cache.ctx } else { &cache.ctx_heads };
        self.project_output(out, ctx);
        // 9. out[dead rows] = 0
        if cache.any_dead {
            zero_rows(out, &cache.live);
        }
    }

    /// Backward of [`MultiheadAttention::forward`]: parameter gradients `+=`, `dx_q =`, `dx_kv =`.
    ///
    /// - `dout`: `[batch, seq, d]`; `x_q`, `x_kv`, `cache`: as given to / filled by the forward;
    /// - `dx_q`, `dx_kv`: `[batch, seq, d]` (for self-attention the input gradient is their sum).
    ///
    /// # Panics
    /// If shapes disagree with the forward's.
    #[allow(clippy::too_many_arguments)]
    pub fn backward(
        &mut self,
        dx_q: &mut Tensor<T>,
        dx_kv: &mut Tensor<T>,
        dout: &Tensor<T>,
        x_q: &Tensor<T>,
        x_kv: &Tensor<T>,
        cache: &mut MhaCache<T>,
    ) {
        let (d, h, dh) = (
            self.config.d_model,
            self.config.num_heads,
            self.config.d_head(),
        );
        let (batch, seq) = self.check_shapes(dout, x_q, x_kv, None);
        assert!(
            (batch, seq) == (cache.batch, cache.seq) && dx_q.shape() == dout.shape(),
            "MultiheadAttention::backward: dout {:?} / dx_q {:?} do not match the forward's [batch {}, seq {}]",
            dout.shape(),
            dx_q.shape(),
            cache.batch,
            cache.seq
        );
        assert_eq!(dx_kv.shape(), dout.shape(), "dx_kv shape");
        let causal = self.config.mask == AttentionMask::Causal;
        // 9. out[dead rows] = 0  =>  dead rows pass no gradient
        let dy = if cache.any_dead {
            cache.dy_live.copy_from(dout);
            zero_rows(&mut cache.dy_live, &cache.live);
            &cache.dy_live
        } else {
            dout
        };
        // 8. out = ctx Wo^T + bo  =>  dWo += dy^T ctx, dbo += sum dy, dctx = dy Wo
        //    (one head: dctx is written straight into dheads[v slot] reused below as dctx_heads scratch)
        //    (without the projection dctx = dy)
        let [dq, dk, dv] = &mut cache.dheads;
        if h > 1 {
            match &mut self.out_proj {
                Some(proj) => proj.backward(Some(&mut cache.tmp), dy, &cache.ctx),
                None => cache.tmp.as_mut_slice().copy_from_slice(dy.as_slice()),
            }
            // 7. ctx = merge_heads(ctx_heads)  =>  dctx_heads = split_heads(dctx)
            split_heads(dq, &mut cache.tmp, h);
        } else {
            match &mut self.out_proj {
                Some(proj) => proj.backward(Some(dq), dy, &cache.ctx_heads),
                None => dq.as_mut_slice().copy_from_slice(dy.as_slice()),
            }
        }
        // dq temporarily holds dctx_heads [batch, heads, seq, d_head].
        let dctx_heads = &*dq;
        let [q, k, v] = &cache.heads;
        let probs_used = if cache.key.is_some() {
            &cache.probs_drop
        } else {
            &cache.probs
        };
        // 6. ctx_heads = probs_d v  =>  dprobs_d = dctx_heads v^T,  dv = probs_d^T dctx_heads
        let first: &[usize] = if cache.fused { &cache.first } else { &[] };
        let [ds0, ds1] = &mut cache.dscores;
        if causal {
            causal::abt(ds0, dctx_heads, v, seq, T::ONE, first);
            causal::atb(dv, probs_used, dctx_heads, seq, T::ONE, first);
        } else {
            gemm_batched(
                ds0,
                T::ONE,
                dctx_heads,
                Transpose::No,
                v,
                Transpose::Yes,
                T::ZERO,
            );
            gemm_batched(
                dv,
                T::ONE,
                probs_used,
                Transpose::Yes,
                dctx_heads,
                Transpose::No,
                T::ZERO,
            );
        }
        // 5. probs_d = dropout(probs)  =>  dprobs = dropout_backward(dprobs_d)   (ds1, else ds0)
        // 4. probs = softmax(scores)  =>  dscores = probs * (dprobs - sum(dprobs * probs))
        let dscores: &Tensor<T> = if cache.fused {
            // Both at once, without the mask: probs_d = probs * mask / (1 - p), so
            // dscores = probs_d * dprobs_d - probs * sum(dprobs_d * probs_d).
            let f = (!first.is_empty()).then_some(first);
            let pd = cache.key.is_some().then_some(&cache.probs_drop);
            causal_softmax_dropout_backward(ds1, ds0, &cache.probs, pd, f);
            ds1
        } else if let Some(key) = cache.key {
            if causal {
                causal::dropout_lower(ds1, ds0, self.config.dropout, key, seq);
            } else {
                dropout_backward(ds1, ds0, self.config.dropout, key);
            }
            softmax_backward(ds0, ds1, &cache.probs);
            ds0
        } else {
            softmax_backward(ds1, ds0, &cache.probs);
            ds1
        };
        // 3. scores = scale q k^T  =>  dq = scale dscores k,  dk = scale dscores^T q
        let scale = T::from_f64(1.0 / (dh as f64).sqrt());
        if causal {
            causal::ab(dq, dscores, k, seq, scale, first);
            causal::atb(dk, dscores, q, seq, scale, first);
        } else {
            gemm_batched(dq, scale, dscores, Transpose::No, k, Transpose::No, T::ZERO);
            gemm_batched(
                dk,
                scale,
                dscores,
                Transpose::Yes,
                q,
                Transpose::No,
                T::ZERO,
            );
        }
        // 2. q|k|v = x W^T + b per block  =>  dW_block += dz^T x, db_block += sum dz, dx (+)= dz W_block
        let gw = self.in_proj_weight.grad.as_mut_slice();
        let gb = self.in_proj_bias.grad.as_mut_slice();
        for i in 0..3 {
            let x = if i == 0 { x_q } else { x_kv };
            // dz [batch, seq, d] with heads merged (one head: the head tensor is already that layout).
            let dz: &Tensor<T> = if h > 1 {
                merge_heads(&mut cache.tmp, &cache.dheads[i], h);
                &cache.tmp
            } else {
                &cache.dheads[i]
            };
            gemm(
                &mut cache.dw,
                T::ONE,
                dz,
                Transpose::Yes,
                x,
                Transpose::No,
                T::ZERO,
            );
            for (g, &v) in gw[i * d * d..(i + 1) * d * d]
                .iter_mut()
                .zip(cache.dw.as_slice())
            {
                *g += v;
            }
            cache.db.fill(T::ZERO);
            add_bias_backward(&mut cache.db, dz);
            for (g, &v) in gb[i * d..(i + 1) * d].iter_mut().zip(cache.db.as_slice()) {
                *g += v;
            }
            let (dx, beta) = match i {
                0 => (&mut *dx_q, T::ZERO),
                1 => (&mut *dx_kv, T::ZERO),
                _ => (&mut *dx_kv, T::ONE),
            };
            gemm(
                dx,
                T::ONE,
                dz,
                Transpose::No,
                &cache.w[i],
                Transpose::No,
                beta,
            );
        }
    }

    /// The attention weights of the last forward averaged over heads (PyTorch's
    /// `average_attn_weights=True`), for explanations: `out`: `[batch, seq, seq]`.
    ///
    /// # Panics
    /// If `out` is not `[batch, seq, seq]` of the cached forward.
    pub fn mean_weights(&self, out: &mut Tensor<T>, cache: &MhaCache<T>) {
        let (b, t, h) = (cache.batch, cache.seq, self.config.num_heads);
        assert_eq!(out.shape(), [b, t, t], "mean_weights: out shape");
        let p = cache.probs.as_slice();
        let inv = T::from_f64(1.0 / h as f64);
        let o = out.as_mut_slice();
        for bi in 0..b {
            let ob = &mut o[bi * t * t..(bi + 1) * t * t];
            ob.fill(T::ZERO);
            for hi in 0..h {
                let pb = &p[(bi * h + hi) * t * t..(bi * h + hi + 1) * t * t];
                for (a, &v) in ob.iter_mut().zip(pb) {
                    *a += v;
                }
            }
            ob.iter_mut().for_each(|a| *a *= inv);
        }
    }

    fn check_shapes(
        &self,
        out: &Tensor<T>,
        x_q: &Tensor<T>,
        x_kv: &Tensor<T>,
        key_keep: Option<&[bool]>,
    ) -> (usize, usize) {
        let d = self.config.d_model;
        let s = x_q.shape();
        assert!(
            s.len() == 3 && s[2] == d && x_kv.shape() == s && out.shape() == s,
            "MultiheadAttention: x_q {:?}, x_kv {:?} and out {:?} must all be [batch, seq, {d}]",
            s,
            x_kv.shape(),
            out.shape()
        );
        if let Some(keep) = key_keep {
            assert_eq!(
                keep.len(),
                s[0] * s[1],
                "MultiheadAttention: key_keep must have batch * seq = {} flags",
                s[0] * s[1]
            );
        }
        (s[0], s[1])
    }
}

/// `heads = split_heads(x W^T + b)`; `tmp`: `[batch, seq, d]` scratch (unused with one head, where the
/// head layout `[batch, 1, seq, d]` is the same memory as `[batch, seq, d]`).
fn project_heads<T: Float>(
    heads: &mut Tensor<T>,
    tmp: &mut Tensor<T>,
    x: &Tensor<T>,
    w: &Tensor<T>,
    b: &Tensor<T>,
    h: usize,
) {
    let dst = if h > 1 { &mut *tmp } else { &mut *heads };
    gemm(dst, T::ONE, x, Transpose::No, w, Transpose::Yes, T::ZERO);
    add_bias(dst, b);
    if h > 1 {
        split_heads(heads, tmp, h);
    }
}

/// `heads [b, h, t, dh] = x [b, t, d]` viewed as `[b, t, h, dh]` with axes 1 and 2 swapped.
/// `x` is reshaped temporarily and restored.
fn split_heads<T: Float>(heads: &mut Tensor<T>, x: &mut Tensor<T>, h: usize) {
    let (b, t, d) = (x.shape()[0], x.shape()[1], x.shape()[2]);
    x.reshape(&[b, t, h, d / h]);
    transpose(heads, x, 1, 2);
    x.reshape(&[b, t, d]);
}

/// `out [b, t, d] = heads [b, h, t, dh]` with axes 1 and 2 swapped, merged.
fn merge_heads<T: Float>(out: &mut Tensor<T>, heads: &Tensor<T>, h: usize) {
    let (b, t, d) = (out.shape()[0], out.shape()[1], out.shape()[2]);
    out.reshape(&[b, t, h, d / h]);
    transpose(out, heads, 1, 2);
    out.reshape(&[b, t, d]);
}

/// `live[b * seq + t]`: query `t` of sequence `b` sees at least one key.
fn mark_live_rows(
    live: &mut [bool],
    key_keep: Option<&[bool]>,
    batch: usize,
    seq: usize,
    causal: bool,
) {
    let Some(keep) = key_keep else {
        live.fill(true);
        return;
    };
    for b in 0..batch {
        let kb = &keep[b * seq..(b + 1) * seq];
        let lb = &mut live[b * seq..(b + 1) * seq];
        if causal {
            // Visible keys of query t: real j <= t; live from the first real key on.
            let first = kb.iter().position(|&k| k).unwrap_or(seq);
            for (t, l) in lb.iter_mut().enumerate() {
                *l = t >= first;
            }
        } else {
            lb.fill(kb.iter().any(|&k| k));
        }
    }
}

/// `first[b]` = the first real position of sequence `b` when every key-padding row is left padding
/// (`false`s then `true`s; all `false`: `first = seq`); `first` is left empty without flags. Returns
/// false (the caller then uses the general masked path) when some row is not left-padded.
fn left_padding_offsets(
    first: &mut Vec<usize>,
    key_keep: Option<&[bool]>,
    batch: usize,
    seq: usize,
) -> bool {
    first.clear();
    let Some(keep) = key_keep else {
        return true;
    };
    for kb in keep.chunks_exact(seq).take(batch) {
        let f = kb.iter().position(|&k| k).unwrap_or(seq);
        if !kb[f..].iter().all(|&k| k) {
            first.clear();
            return false;
        }
        first.push(f);
    }
    true
}

/// Zeroes the rows `r` of `x` (viewed as `[rows, cols]`) where `live[r]` is false.
pub(crate) fn zero_rows<T: Float>(x: &mut Tensor<T>, live: &[bool]) {
    let c = x.cols();
    for (row, &l) in x.as_mut_slice().chunks_exact_mut(c).zip(live) {
        if !l {
            row.fill(T::ZERO);
        }
    }
}

impl<T: Float> Module<T> for MultiheadAttention<T> {
    fn visit_params(&self, f: &mut dyn FnMut(&Param<T>)) {
        f(&self.in_proj_weight);
        f(&self.in_proj_bias);
        if let Some(proj) = &self.out_proj {
            proj.visit_params(f);
        }
    }

    fn visit_params_mut(&mut self, f: &mut dyn FnMut(&mut Param<T>)) {
        f(&mut self.in_proj_weight);
        f(&mut self.in_proj_bias);
        if let Some(proj) = &mut self.out_proj {
            proj.visit_params_mut(f);
        }
    }
}

/// Causal attention kernels: the products of a causal attention skip the score blocks above the
/// diagonal, which the mask removes anyway.
///
/// Each `[t, t]` score matrix is cut into row blocks of [`causal::BLOCK`] rows; row block `[i0, i1)`
/// only needs keys `[0, i1)`. That does about `(1 + 1/nb) / 2` of the full products (57% at t = 200),
/// and attention dropout only hashes the visible entries. The products are plain strided GEMMs
/// (`Float::gemm_raw`) behind a bounds-checked wrapper; matrices of the batch are spread over rayon.
/// Entries above the diagonal inside a block are computed and then masked (softmax gives them weight 0);
/// entries right of a block are written as exact zeros, so every buffer stays finite.
mod causal {
    use rayon::prelude::*;
    use seqrec_tensor::{DropoutKey, Float, Tensor, dropout_slice};

    /// Rows per block (a multiple of the f32 kernel's 16-row tile would waste more on the diagonal).
    pub(super) const BLOCK: usize = 32;

    /// Below this many output elements a batched kernel runs serially.
    const PAR_MIN: usize = 1 << 15;

    /// `c = alpha * op(a) op(b) + beta * c` on slices, bounds-checked: `a` is `[m, k]` at strides
    /// `(rsa, csa)`, `b` is `[k, n]` at `(rsb, csb)`, `c` is `[m, n]` with row stride `rsc`.
    #[allow(clippy::too_many_arguments)]
    fn mm<T: Float>(
        (m, k, n): (usize, usize, usize),
        alpha: T,
        a: &[T],
        (rsa, csa): (usize, usize),
        b: &[T],
        (rsb, csb): (usize, usize),
        c: &mut [T],
        rsc: usize,
    ) {
        if m == 0 || n == 0 {
            return;
        }
        if k == 0 {
            for r in 0..m {
                c[r * rsc..r * rsc + n].fill(T::ZERO);
            }
            return;
        }
        assert!(
            (m - 1) * rsa + (k - 1) * csa < a.len()
                && (k - 1) * rsb + (n - 1) * csb < b.len()
                && (m - 1) * rsc + n <= c.len(),
            "causal::mm: operands out of bounds"
        );
        // SAFETY: the assertion above shows that every element addressed by the dimensions and the
        // (non-negative) strides lies inside `a`, `b` and `c`; `c` is a `&mut` slice, so it aliases
        // neither `a` nor `b`; beta = 0 means `c` is only written.
        unsafe {
            T::gemm_raw(
                m,
                k,
                n,
                alpha,
                a.as_ptr(),
                rsa as isize,
                csa as isize,
                b.as_ptr(),
                rsb as isize,
                csb as isize,
                T::ZERO,
                c.as_mut_ptr(),
                rsc as isize,
                1,
            )
        }
    }

    /// Runs `f(matrix index, out chunk)` over the `out.numel() / per` matrices of `out`.
    fn batched<T: Float>(out: &mut Tensor<T>, per: usize, f: impl Fn(usize, &mut [T]) + Sync) {
        let o = out.as_mut_slice();
        if o.len() < PAR_MIN {
            o.chunks_mut(per).enumerate().for_each(|(i, c)| f(i, c));
        } else {
            o.par_chunks_mut(per).enumerate().for_each(|(i, c)| f(i, c));
        }
    }

    /// Row blocks `[i0, i1)` of `lo..t`.
    fn blocks(lo: usize, t: usize) -> impl Iterator<Item = (usize, usize)> {
        (lo..t)
            .step_by(BLOCK)
            .map(move |i0| (i0, (i0 + BLOCK).min(t)))
    }

    /// The first live position of matrix `i` of `n`: `first` holds one offset per sequence (matrices
    /// `[B, H, ..]` map to sequence `i / H`); empty means 0 for all.
    fn lo_of(first: &[usize], i: usize, n: usize) -> usize {
        if first.is_empty() {
            0
        } else {
            first[i / (n / first.len())]
        }
    }

    /// `out[i0..i1, lo..i1] = alpha x[i0..i1] y[lo..i1]^T` per row block of `lo..t`, every other entry
    /// 0 (rows before `lo`, keys before `lo` and right of the block). `x`, `y`: `[n, t, dh]`; `out`:
    /// `[n, t, t]`; `first`: see [`lo_of`] (the caller guarantees those rows and keys are masked).
    /// (Scores `q k^T`; `dprobs = dctx v^T`.)
    pub(super) fn abt<T: Float>(
        out: &mut Tensor<T>,
        x: &Tensor<T>,
        y: &Tensor<T>,
        t: usize,
        alpha: T,
        first: &[usize],
    ) {
        let dh = x.cols();
        let n = out.numel().checked_div(t * t).unwrap_or(0);
        let (xs, ys) = (x.as_slice(), y.as_slice());
        batched(out, t * t, |i, o| {
            let (xm, ym) = (
                &xs[i * t * dh..(i + 1) * t * dh],
                &ys[i * t * dh..(i + 1) * t * dh],
            );
            let lo = lo_of(first, i, n);
            o[..lo * t].fill(T::ZERO);
            for (i0, i1) in blocks(lo, t) {
                let ob = &mut o[i0 * t..];
                mm(
                    (i1 - i0, dh, i1 - lo),
                    alpha,
                    &xm[i0 * dh..],
                    (dh, 1),
                    &ym[lo * dh..],
                    (1, dh),
                    &mut ob[lo..],
                    t,
                );
                for r in 0..i1 - i0 {
                    ob[r * t..r * t + lo].fill(T::ZERO);
                    ob[r * t + i1..(r + 1) * t].fill(T::ZERO);
                }
            }
        });
    }

    /// `out[i0..i1] = alpha a[i0..i1, lo..i1] b[lo..i1]` per row block of `lo..t`, rows before `lo` 0:
    /// `a` `[n, t, t]` lower-triangular (zero above the diagonal and left of `lo`), `b`, `out`:
    /// `[n, t, dh]`. (Context `probs v`; `dq = dscores k`.)
    pub(super) fn ab<T: Float>(
        out: &mut Tensor<T>,
        a: &Tensor<T>,
        b: &Tensor<T>,
        t: usize,
        alpha: T,
        first: &[usize],
    ) {
        let dh = b.cols();
        let n = out.numel().checked_div(t * dh).unwrap_or(0);
        let (as_, bs) = (a.as_slice(), b.as_slice());
        batched(out, t * dh, |i, o| {
            let (am, bm) = (
                &as_[i * t * t..(i + 1) * t * t],
                &bs[i * t * dh..(i + 1) * t * dh],
            );
            let lo = lo_of(first, i, n);
            o[..lo * dh].fill(T::ZERO);
            for (i0, i1) in blocks(lo, t) {
                mm(
                    (i1 - i0, i1 - lo, dh),
                    alpha,
                    &am[i0 * t + lo..],
                    (t, 1),
                    &bm[lo * dh..],
                    (dh, 1),
                    &mut o[i0 * dh..],
                    dh,
                );
            }
        });
    }

    /// `out[j0..j1] = alpha a[j0..t, j0..j1]^T b[j0..t]` per block of `lo..t`, rows before `lo` 0: `a`
    /// `[n, t, t]` lower-triangular (zero left of `lo`), `b`, `out`: `[n, t, dh]`.
    /// (`dv = probs^T dctx`; `dk = dscores^T q`.)
    pub(super) fn atb<T: Float>(
        out: &mut Tensor<T>,
        a: &Tensor<T>,
        b: &Tensor<T>,
        t: usize,
        alpha: T,
        first: &[usize],
    ) {
        let dh = b.cols();
        let n = out.numel().checked_div(t * dh).unwrap_or(0);
        let (as_, bs) = (a.as_slice(), b.as_slice());
        batched(out, t * dh, |i, o| {
            let (am, bm) = (
                &as_[i * t * t..(i + 1) * t * t],
                &bs[i * t * dh..(i + 1) * t * dh],
            );
            let lo = lo_of(first, i, n);
            o[..lo * dh].fill(T::ZERO);
            for (j0, j1) in blocks(lo, t) {
                // op(a) = a[j0..t, j0..j1]^T: [j1 - j0, t - j0], element (c, r) at a[(j0 + r) t + j0 + c].
                mm(
                    (j1 - j0, t - j0, dh),
                    alpha,
                    &am[j0 * t + j0..],
                    (1, t),
                    &bm[j0 * dh..],
                    (dh, 1),
                    &mut o[j0 * dh..],
                    dh,
                );
            }
        });
    }

    /// Inverted dropout of the lower triangle of each `[t, t]` matrix with exactly the mask
    /// `seqrec_tensor::dropout_forward` draws for the same key (element index = flat index); entries
    /// above the diagonal are written 0 (they are masked: `x` is 0 there in the forward, and the
    /// softmax backward multiplies them by 0). Serves as its own backward.
    pub(super) fn dropout_lower<T: Float>(
        out: &mut Tensor<T>,
        x: &Tensor<T>,
        p: f64,
        key: DropoutKey,
        t: usize,
    ) {
        let xs = x.as_slice();
        batched(out, t * t, |i, o| {
            for r in 0..t {
                let base = i * t * t + r * t;
                let (orow, xrow) = (&mut o[r * t..(r + 1) * t], &xs[base..base + t]);
                dropout_slice(&mut orow[..=r], &xrow[..=r], p, key, base as u64);
                orow[r + 1..].fill(T::ZERO);
            }
        });
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use seqrec_tensor::{Mask, Transpose, dropout_forward, gemm_batched, softmax_inplace};

        fn lower(x: &mut Tensor<f64>, t: usize) {
            for (r, row) in x.as_mut_slice().chunks_exact_mut(t).enumerate() {
                row[r % t + 1..].fill(0.0);
            }
        }

        /// Each kernel against the full batched GEMM on lower-triangular inputs, over sizes that cut
        /// blocks unevenly (t not a multiple of BLOCK, t < BLOCK, t = 1).
        #[test]
        fn causal_kernels_match_full_products() {
            let mut rng = crate::init::Rng::new(1);
            for (n, t, dh) in [(3, 1, 2), (2, 5, 3), (2, 33, 4), (1, 70, 5), (4, 64, 1)] {
                let x = rng.normal_tensor::<f64>(&[n, t, dh], 1.0);
                let y = rng.normal_tensor::<f64>(&[n, t, dh], 1.0);
                let mut p = rng.normal_tensor::<f64>(&[n, t, t], 1.0);
                lower(&mut p, t);
                let close = |a: &Tensor<f64>, b: &Tensor<f64>, what: &str| {
                    for (i, (u, v)) in a.as_slice().iter().zip(b.as_slice()).enumerate() {
                        assert!(
                            (u - v).abs() <= 1e-12 * (1.0 + v.abs()),
                            "{what} [{i}] {u} vs {v} (n{n} t{t})"
                        );
                    }
                };
                // abt: compare the lower triangle (the kernel zeroes right of each block).
                let mut want = Tensor::zeros(&[n, t, t]);
                gemm_batched(&mut want, 0.5, &x, Transpose::No, &y, Transpose::Yes, 0.0);
                let mut got = Tensor::full(&[n, t, t], f64::NAN);
                abt(&mut got, &x, &y, t, 0.5, &[]);
                assert!(got.as_slice().iter().all(|v| v.is_finite()));
                lower(&mut want, t);
                lower(&mut got, t);
                close(&got, &want, "abt");
                let mut want = Tensor::zeros(&[n, t, dh]);
                gemm_batched(&mut want, 0.5, &p, Transpose::No, &y, Transpose::No, 0.0);
                let mut got = Tensor::full(&[n, t, dh], f64::NAN);
                ab(&mut got, &p, &y, t, 0.5, &[]);
                close(&got, &want, "ab");
                gemm_batched(&mut want, 0.5, &p, Transpose::Yes, &y, Transpose::No, 0.0);
                atb(&mut got, &p, &y, t, 0.5, &[]);
                close(&got, &want, "atb");
            }
        }

        #[test]
        fn lower_dropout_draws_the_tensor_crate_mask() {
            let (n, t) = (3, 40);
            let mut s = crate::init::Rng::new(2).normal_tensor::<f32>(&[n, t, t], 1.0);
            softmax_inplace(&mut s, Mask::Causal);
            let key = DropoutKey { seed: 5, step: 9 };
            let mut want = Tensor::zeros(&[n, t, t]);
            dropout_forward(&mut want, &s, 0.3, key);
            let mut got = Tensor::full(&[n, t, t], 1.0);
            dropout_lower(&mut got, &s, 0.3, key, t);
            assert_eq!(got, want);
        }
    }
}

#[cfg(test)]
mod skip_tests {
    use super::*;

    /// The fused, padding-skipping causal path against the general masked path (softmax with
    /// `Mask::CausalKeyPadding`, separate dropout, full lower-triangle products): outputs, input and
    /// parameter gradients, on left-padded batches with all-padding rows, length-1 rows and full rows,
    /// 1 and 2 heads, with and without dropout, f64.
    #[test]
    fn padding_skip_matches_general_path() {
        let mut rng = Rng::new(3);
        for (lens, t, heads, p) in [
            (vec![0usize, 1, 7, 40, 40, 13], 40, 1, 0.2),
            (vec![0, 1, 33, 2, 70], 70, 2, 0.3),
            (vec![5, 0, 1], 5, 1, 0.0),
            (vec![1, 1], 1, 2, 0.1),
        ] {
            let (b, d) = (lens.len(), 6);
            let mut keep = vec![false; b * t];
            for (i, &l) in lens.iter().enumerate() {
                keep[i * t + t - l..(i + 1) * t].fill(true);
            }
            let config = MhaConfig {
                d_model: d,
                num_heads: heads,
                mask: AttentionMask::Causal,
                dropout: p,
                seed: 11,
            };
            let mha = MultiheadAttention::<f64>::new("a", config.clone(), &mut rng).unwrap();
            let xq = rng.normal_tensor::<f64>(&[b, t, d], 1.0);
            let xkv = rng.normal_tensor::<f64>(&[b, t, d], 1.0);
            let dout = rng.normal_tensor::<f64>(&[b, t, d], 1.0);
            let run = |general: bool| {
                let mut m = mha.clone();
                let mut cache = MhaCache::new(&config, b, t);
                cache.force_general = general;
                let mut out = Tensor::full(&[b, t, d], f64::NAN);
                m.forward(
                    &mut out,
                    &mut cache,
                    &xq,
                    &xkv,
                    Some(&keep),
                    Phase::Train { step: 5 },
                );
                assert_eq!(cache.fused, !general);
                let (mut dq, mut dkv) = (Tensor::zeros(&[b, t, d]), Tensor::zeros(&[b, t, d]));
                m.backward(&mut dq, &mut dkv, &dout, &xq, &xkv, &mut cache);
                let mut grads = Vec::new();
                m.visit_params(&mut |prm| grads.push(prm.grad.clone()));
                (out, dq, dkv, grads, cache.probs.clone())
            };
            let (fast, slow) = (run(false), run(true));
            let close = |a: &Tensor<f64>, b: &Tensor<f64>, what: &str| {
                assert_eq!(a.shape(), b.shape());
                for (i, (x, y)) in a.as_slice().iter().zip(b.as_slice()).enumerate() {
                    assert!(
                        (x - y).abs() <= 1e-10 * (1.0 + y.abs()),
                        "{what}[{i}]: {x} vs {y} (lens {lens:?}, heads {heads}, p {p})"
                    );
                }
            };
            close(&fast.0, &slow.0, "out");
            close(&fast.1, &slow.1, "dx_q");
            close(&fast.2, &slow.2, "dx_kv");
            close(&fast.4, &slow.4, "probs");
            for (i, (g, h)) in fast.3.iter().zip(&slow.3).enumerate() {
                close(g, h, &format!("param grad {i}"));
            }
            // padded query rows: exactly zero output and no gradient through them
            for (r, &k) in keep.iter().enumerate() {
                if !k {
                    assert!(
                        fast.0.as_slice()[r * d..(r + 1) * d]
                            .iter()
                            .all(|&v| v == 0.0)
                    );
                    assert!(
                        fast.1.as_slice()[r * d..(r + 1) * d]
                            .iter()
                            .all(|&v| v == 0.0)
                    );
                }
            }
        }
    }
}
