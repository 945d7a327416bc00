//! [`Bert4rec`]: bidirectional self-attention trained by masked-item ("cloze") prediction (Sun et al.,
//! CIKM 2019), as reproduced by Klenitskiy & Vasilev (RecSys 2023) on top of Hugging Face's `BertModel`
//! and by RecBole.
//!
//! The network ([`Bert4recNet`], generic over the float type so it can be gradient-checked in `f64`):
//!
//! ```text
//! ids: [batch, maxlen], right-aligned, 0 = padding, n_items + 1 = [MASK]
//! x0 = item_emb[ids] + pos_emb[t]  (padded positions get no position; t is the slot, or the index
//!                                    among the row's items with positions = "first_item")
//! x1 = dropout(LN_emb(x0))          (BERT's embedding layer norm and dropout)
//! h  = blocks(x1)                   (post-LN: x = LN1(x + drop(MHA(x))); y = LN2(x + drop(FFN_gelu(x))),
//!                                    bidirectional, padded keys masked, FFN width 4d)
//! u  = LN_head(GELU(h W + b))       (the paper's projection; `head_transform = false` gives u = h)
//! logit(i) = u . item_emb[i] + out_bias[i]   over the items i = 1..=n_items
//! ```
//!
//! The output layer is tied to the item table (paper: "shared item embedding matrix") with a bias per
//! item; the padding and `[MASK]` columns are masked out of the softmax.
//!
//! **Training.** Every training sequence (at least two events) gives one row per epoch: its last
//! `maxlen` items, right-aligned. Each real position is replaced by `[MASK]` with probability
//! `mask_prob`; a row where no position was drawn gets one uniformly chosen masked position, so every
//! row has a target. The loss is the full softmax cross-entropy over the catalogue at the masked
//! positions only, averaged over them (PyTorch `cross_entropy(ignore_index=0)`). Masks depend on
//! (seed, epoch, sequence) only, not on the batch size or the order of batches.
//!
//! **Scoring.** The last `maxlen - 1` items of the history followed by `[MASK]` (so the last slot is
//! always the masked one, as in training windows ending at the last event); the scores are the output
//! at that slot. A full `maxlen` history therefore drops its oldest item.
//!
//! Initialisation as Hugging Face BERT (`initializer_range = 0.02`): every matrix and embedding normal
//! with std 0.02, biases zero, layer norms one/zero, the padding row zero.

use std::path::Path;

use serde::{Deserialize, Serialize};

use seqrec_data::{SeqRng, Sequences};
use seqrec_nn::init::Rng;
use seqrec_nn::loss::softmax_cross_entropy;
use seqrec_nn::{
    Activation, AttentionMask, Embedding, LayerNorm, LayerNormCache, Linear, Module, NormPlacement,
    Padding, Param, Phase, PositionalEmbedding, TransformerBlockConfig, TransformerEncoder,
    TransformerEncoderCache,
};
use seqrec_tensor::{
    DropoutKey, Float, Gelu, Tensor, Transpose, dropout_backward, dropout_forward, gelu_backward,
    gelu_forward, gemm, splitmix64,
};

use crate::adam::{AdamHyper, AdamState};
use crate::epoch::{EpochTally, step_key};
use crate::model::{EpochReport, Model, ModelError, StepReport};
use crate::persist::{CheckpointFiles, ckpt_err};
use crate::positions::Positions;

/// Hyper-parameters of [`Bert4rec`]. The defaults are Klenitskiy & Vasilev's for MovieLens-1M
/// (`antklen/sasrec-bert4rec-recsys23`, `configs/BERT4Rec.yaml` with `max_length=200`, Hugging Face
/// `BertConfig` defaults for the rest): `d = 64`, 2 blocks, 2 heads, FFN 256, `maxlen = 200`,
/// dropout 0.1, mask probability 0.2, Adam lr 0.001, batch 128.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Bert4recConfig {
    /// Embedding and hidden width `d` (64).
    pub hidden: usize,
    /// Number of Transformer blocks (2).
    pub blocks: usize,
    /// Attention heads; must divide `hidden` (2).
    pub heads: usize,
    /// Feed-forward width (256 = 4d).
    pub ff: usize,
    /// Window length, also the number of learned positions (200).
    pub maxlen: usize,
    /// Dropout of the embeddings, attention weights and residual branches (0.1).
    pub dropout: f64,
    /// Probability that a position of a training row is masked (0.2).
    pub mask_prob: f64,
    /// The paper's output projection `LN(GELU(W h + b))` before the tied item table (`true`); `false`
    /// scores `h` directly (Klenitskiy & Vasilev's head).
    pub head_transform: bool,
    /// Where the learned positions are counted from (`"slot"`: the masked last slot is always
    /// position `maxlen - 1`; `"first_item"`, Klenitskiy & Vasilev's right padding: the oldest item of
    /// the window is position 0).
    pub positions: Positions,
    /// Layer-norm epsilon (Hugging Face BERT: 1e-12).
    pub layer_norm_eps: f64,
    /// Adam learning rate (0.001).
    pub lr: f64,
    /// Adam `(beta1, beta2)` (0.9, 0.999).
    pub betas: (f64, f64),
    /// Adam epsilon (1e-8).
    pub adam_eps: f64,
    /// L2 coefficient added to the gradient (0).
    pub weight_decay: f64,
    /// Sequences per training batch (128).
    pub batch_size: usize,
    /// Clip the global gradient norm to this value before each step (`None`: no clipping).
    pub clip_grad_norm: Option<f64>,
}

impl Default for Bert4recConfig {
    fn default() -> Self {
        Self {
            hidden: 64,
            blocks: 2,
            heads: 2,
            ff: 256,
            maxlen: 200,
            dropout: 0.1,
            mask_prob: 0.2,
            head_transform: true,
            positions: Positions::Slot,
            layer_norm_eps: 1e-12,
            lr: 0.001,
            betas: (0.9, 0.999),
            adam_eps: 1e-8,
            weight_decay: 0.0,
            batch_size: 128,
            clip_grad_norm: None,
        }
    }
}

fn bad(field: &str, value: impl std::fmt::Display, why: &str) -> ModelError {
    ModelError::Config(format!("bert4rec.{field} = {value}: {why}"))
}

impl Bert4recConfig {
    /// Checks every field.
    ///
    /// # Errors
    /// [`ModelError::Config`] naming the first bad field and its value.
    pub fn validate(&self) -> Result<(), ModelError> {
        for (field, v) in [
            ("hidden", self.hidden),
            ("blocks", self.blocks),
            ("heads", self.heads),
            ("ff", self.ff),
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
        if !(self.mask_prob > 0.0 && self.mask_prob <= 1.0) {
            return Err(bad("mask_prob", self.mask_prob, "must be in (0, 1]"));
        }
        if !(self.layer_norm_eps.is_finite() && self.layer_norm_eps > 0.0) {
            return Err(bad(
                "layer_norm_eps",
                self.layer_norm_eps,
                "must be finite and > 0",
            ));
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
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return Err(bad(
                "weight_decay",
                self.weight_decay,
                "must be finite and >= 0",
            ));
        }
        if let Some(c) = self.clip_grad_norm
            && !(c.is_finite() && c > 0.0)
        {
            return Err(bad("clip_grad_norm", c, "must be finite and > 0"));
        }
        Ok(())
    }
}

/// Activations of the forward pass and scratch of the backward pass, resized in place.
#[derive(Clone, Debug)]
struct NetCache<T> {
    enc: TransformerEncoderCache<T>,
    keep: Vec<bool>,
    /// Embeddings with positions; reused as their gradient in backward.
    x0: Tensor<T>,
    emb_ln: LayerNormCache<T>,
    /// After the embedding layer norm; reused as its gradient.
    x1: Tensor<T>,
    /// After dropout: the encoder input.
    x2: Tensor<T>,
    emb_key: Option<DropoutKey>,
    h: Tensor<T>,
    dh: Tensor<T>,
    dx: Tensor<T>,
    /// Rows of `h` that are scored (masked positions, or the last slot when scoring).
    rows_idx: Vec<usize>,
    targets_v: Vec<u32>,
    /// Head, over the scored rows `[m, d]`: input, dense output, GELU output, normalised output.
    hv: Tensor<T>,
    z: Tensor<T>,
    g: Tensor<T>,
    u: Tensor<T>,
    head_ln: LayerNormCache<T>,
    /// Gradients of `u`, `g`, `z`, `hv`.
    du: Tensor<T>,
    dg: Tensor<T>,
    dz: Tensor<T>,
    dhv: Tensor<T>,
    /// One chunk of rows of `u` and of its gradient, `[chunk, d]`, and their logits `[chunk, n + 2]`.
    uc: Tensor<T>,
    duc: Tensor<T>,
    logits: Tensor<T>,
    dlogits: Tensor<T>,
}

/// Logits per chunk of the cross-entropy (about 32 MB of `f32`, plus as much gradient).
const CE_CHUNK_ELEMS: usize = 1 << 23;

/// The BERT4Rec network with its hand-written backward pass (see the module docs). [`Bert4rec`] wraps
/// it in `f32` with the optimizer; tests use it in `f64`.
#[derive(Clone, Debug)]
pub struct Bert4recNet<T> {
    /// `item_emb.weight`: `[n_items + 2, hidden]`; row 0 padding (zero), row `n_items + 1` `[MASK]`.
    pub item_emb: Embedding<T>,
    /// `pos_emb.weight`: `[maxlen, hidden]`.
    pub pos_emb: PositionalEmbedding<T>,
    /// `emb_norm.*`: the embedding layer norm.
    pub emb_norm: LayerNorm<T>,
    /// `encoder.layers.{i}.*` (post-LN, GELU, bidirectional; no final norm).
    pub encoder: TransformerEncoder<T>,
    /// `head.dense.*` (`[hidden, hidden]`), when `head_transform`.
    pub head_dense: Option<Linear<T>>,
    /// `head.norm.*`, when `head_transform`.
    pub head_norm: Option<LayerNorm<T>>,
    /// `out_bias`: `[n_items + 2]`, the per-item output bias.
    pub out_bias: Param<T>,
    config: Bert4recConfig,
    n_items: usize,
    emb_dropout_seed: u64,
    cache: NetCache<T>,
}

impl<T: Float> Bert4recNet<T> {
    /// A network for items `1..=n_items` (and `[MASK]` = `n_items + 1`), initialised from `seed`.
    ///
    /// # Errors
    /// [`ModelError::Config`] if the configuration is invalid or `n_items` is 0.
    pub fn new(config: &Bert4recConfig, n_items: usize, seed: u64) -> Result<Self, ModelError> {
        config.validate()?;
        if n_items == 0 {
            return Err(bad("n_items", n_items, "the catalogue is empty"));
        }
        let d = config.hidden;
        let std = 0.02;
        let mut rng = Rng::new(seed);
        let nn = |e: seqrec_nn::NnError| ModelError::Config(e.to_string());
        let item_emb = Embedding::new("item_emb", n_items + 2, d, std, Padding::Skip(0), &mut rng)
            .map_err(nn)?;
        let pos_emb =
            PositionalEmbedding::new("pos_emb", config.maxlen, d, std, &mut rng).map_err(nn)?;
        let emb_norm = LayerNorm::new("emb_norm", d, config.layer_norm_eps);
        let block = TransformerBlockConfig {
            d_model: d,
            num_heads: config.heads,
            d_ff: config.ff,
            activation: Activation::Gelu(Gelu::Erf),
            dropout: config.dropout,
            mask: AttentionMask::Bidirectional,
            norm: NormPlacement::Post,
            eps: config.layer_norm_eps,
            zero_padded_outputs: false,
            mask_padded_keys: true,
            output_projection: true,
            seed: splitmix64(seed ^ 0xB10C),
        };
        let mut encoder =
            TransformerEncoder::new("encoder", &block, config.blocks, false, &mut rng)
                .map_err(|e| ModelError::Config(e.to_string()))?;
        let (mut head_dense, head_norm) = if config.head_transform {
            (
                Some(Linear::new("head.dense", d, d, true, &mut rng)),
                Some(LayerNorm::new("head.norm", d, config.layer_norm_eps)),
            )
        } else {
            (None, None)
        };
        // BERT's initialisation: matrices normal(0, 0.02), biases zero (layer norms keep 1 / 0).
        let mut reinit = |p: &mut Param<T>| {
            let shape = p.value.shape().to_vec();
            if shape.len() >= 2 {
                p.value = rng.normal_tensor(&shape, std);
            } else if !p.name.contains("norm") {
                p.value.fill(T::ZERO);
            }
        };
        encoder.visit_params_mut(&mut reinit);
        if let Some(l) = &mut head_dense {
            l.visit_params_mut(&mut reinit);
        }
        let out_bias = Param::new("out_bias".to_owned(), Tensor::zeros(&[n_items + 2]));
        let cache = NetCache {
            enc: TransformerEncoderCache::new(&encoder, config.batch_size, config.maxlen),
            keep: Vec::new(),
            x0: Tensor::zeros(&[0, d]),
            emb_ln: LayerNormCache::new(0),
            x1: Tensor::zeros(&[0, d]),
            x2: Tensor::zeros(&[0, d]),
            emb_key: None,
            h: Tensor::zeros(&[0, d]),
            dh: Tensor::zeros(&[0, d]),
            dx: Tensor::zeros(&[0, d]),
            rows_idx: Vec::new(),
            targets_v: Vec::new(),
            hv: Tensor::zeros(&[0, d]),
            z: Tensor::zeros(&[0, d]),
            g: Tensor::zeros(&[0, d]),
            u: Tensor::zeros(&[0, d]),
            head_ln: LayerNormCache::new(0),
            du: Tensor::zeros(&[0, d]),
            dg: Tensor::zeros(&[0, d]),
            dz: Tensor::zeros(&[0, d]),
            dhv: Tensor::zeros(&[0, d]),
            uc: Tensor::zeros(&[0, d]),
            duc: Tensor::zeros(&[0, d]),
            logits: Tensor::zeros(&[0, n_items + 2]),
            dlogits: Tensor::zeros(&[0, n_items + 2]),
        };
        Ok(Self {
            item_emb,
            pos_emb,
            emb_norm,
            encoder,
            head_dense,
            head_norm,
            out_bias,
            config: config.clone(),
            n_items,
            emb_dropout_seed: splitmix64(seed ^ 0xE3B0),
            cache,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &Bert4recConfig {
        &self.config
    }

    /// Number of real items.
    pub fn n_items(&self) -> usize {
        self.n_items
    }

    /// The `[MASK]` token id, `n_items + 1`.
    pub fn mask_id(&self) -> u32 {
        self.n_items as u32 + 1
    }

    /// `ids` `[batch, maxlen]` -> `cache.h` `[batch, maxlen, d]`.
    fn forward_hidden(&mut self, ids: &[u32], batch: usize, phase: Phase) {
        let (l, d) = (self.config.maxlen, self.config.hidden);
        assert_eq!(
            ids.len(),
            batch * l,
            "Bert4recNet: ids must be [batch, maxlen]"
        );
        if let Some(&bad) = ids.iter().find(|&&i| i as usize > self.n_items + 1) {
            panic!(
                "Bert4recNet: id {bad} out of range 0..={} (ids are checked where batches are built)",
                self.n_items + 1
            );
        }
        let c = &mut self.cache;
        let shape = [batch, l, d];
        for t in [&mut c.x0, &mut c.x1, &mut c.x2, &mut c.h] {
            t.resize(&shape);
        }
        c.keep.clear();
        c.keep.extend(ids.iter().map(|&i| i != 0));
        // 1. x0 = item_emb[ids] + pos_emb[t] on real positions
        self.item_emb.forward(&mut c.x1, ids);
        self.pos_emb
            .forward(&mut c.x0, &c.x1, self.config.positions.mask(ids));
        // 2. x1 = LN_emb(x0)
        c.emb_ln.mean.resize(&[batch * l]);
        c.emb_ln.rstd.resize(&[batch * l]);
        self.emb_norm.forward(&mut c.x1, &mut c.emb_ln, &c.x0);
        // 3. x2 = dropout(x1)
        c.emb_key = phase.dropout_key(self.emb_dropout_seed, self.config.dropout);
        match c.emb_key {
            Some(key) => dropout_forward(&mut c.x2, &c.x1, self.config.dropout, key),
            None => c.x2.copy_from(&c.x1),
        }
        // 4. h = encoder(x2), padded keys masked
        self.encoder
            .forward(&mut c.h, &mut c.enc, &c.x2, Some(&c.keep), phase);
    }

    /// Backward of [`Self::forward_hidden`] from `cache.dh`: parameter gradients `+=`.
    fn backward_hidden(&mut self, ids: &[u32]) {
        let c = &mut self.cache;
        c.dx.resize(c.h.shape());
        // 4. h = encoder(x2)  =>  dx2 (in dx)
        self.encoder
            .backward(&mut c.dx, &c.dh, &c.x2, Some(&c.keep), &mut c.enc);
        // 3. x2 = dropout(x1)  =>  dx1 (in x2, no longer needed)
        match c.emb_key {
            Some(key) => dropout_backward(&mut c.x2, &c.dx, self.config.dropout, key),
            None => c.x2.copy_from(&c.dx),
        }
        // 2. x1 = LN_emb(x0)  =>  dx0 (in x1)
        self.emb_norm.backward(&mut c.x1, &c.x2, &c.x0, &c.emb_ln);
        // 1. x0 = item_emb[ids] + pos  =>  dpos[t] += dx0; ditem_emb[ids] += dx0 (padding skipped)
        self.pos_emb
            .backward(&c.x1, self.config.positions.mask(ids));
        self.item_emb.backward(&c.x1, ids);
    }

    /// Gathers the rows `cache.rows_idx` of `h` into `hv` and runs the head: `u = LN(GELU(hv W + b))`
    /// (or `u = hv` without the transform).
    fn head_forward(&mut self) {
        let d = self.config.hidden;
        let c = &mut self.cache;
        let m = c.rows_idx.len();
        for t in [&mut c.hv, &mut c.z, &mut c.g, &mut c.u] {
            t.resize(&[m, d]);
        }
        {
            let h = c.h.as_slice();
            let hv = c.hv.as_mut_slice();
            for (i, &r) in c.rows_idx.iter().enumerate() {
                hv[i * d..(i + 1) * d].copy_from_slice(&h[r * d..(r + 1) * d]);
            }
        }
        match (&self.head_dense, &self.head_norm) {
            (Some(dense), Some(norm)) => {
                // z = hv W^T + b;  g = GELU(z);  u = LN(g)
                dense.forward(&mut c.z, &c.hv);
                gelu_forward(&mut c.g, &c.z, Gelu::Erf);
                c.head_ln.mean.resize(&[m]);
                c.head_ln.rstd.resize(&[m]);
                norm.forward(&mut c.u, &mut c.head_ln, &c.g);
            }
            _ => c.u.copy_from(&c.hv),
        }
    }

    /// Backward of [`Self::head_forward`] from `cache.du`, scattering into `cache.dh` (zeroed first).
    fn head_backward(&mut self) {
        let d = self.config.hidden;
        let c = &mut self.cache;
        let m = c.rows_idx.len();
        for t in [&mut c.dg, &mut c.dz, &mut c.dhv] {
            t.resize(&[m, d]);
        }
        match (&mut self.head_dense, &mut self.head_norm) {
            (Some(dense), Some(norm)) => {
                // u = LN(g)  =>  dg;  g = GELU(z)  =>  dz;  z = hv W^T + b  =>  dhv, dW, db
                norm.backward(&mut c.dg, &c.du, &c.g, &c.head_ln);
                gelu_backward(&mut c.dz, &c.dg, &c.z, Gelu::Erf);
                dense.backward(Some(&mut c.dhv), &c.dz, &c.hv);
            }
            _ => c.dhv.copy_from(&c.du),
        }
        c.dh.resize(c.h.shape());
        c.dh.fill(T::ZERO);
        let dh = c.dh.as_mut_slice();
        let dhv = c.dhv.as_slice();
        for (i, &r) in c.rows_idx.iter().enumerate() {
            dh[r * d..(r + 1) * d].copy_from_slice(&dhv[i * d..(i + 1) * d]);
        }
    }

    /// The cloze loss of a batch (forward only), under `phase`'s dropout.
    ///
    /// - `inputs`: `[rows, maxlen]` with `[MASK]` (`n_items + 1`) at the masked positions;
    /// - `labels`: `[rows, maxlen]`, the hidden item at masked positions, `0` elsewhere.
    ///
    /// # Panics
    /// If the buffers are not `rows * maxlen` long or hold an out-of-range id.
    pub fn loss(&mut self, inputs: &[u32], labels: &[u32], rows: usize, phase: Phase) -> T {
        self.loss_impl(inputs, labels, rows, phase, false)
    }

    /// Forward, loss and backward through every layer: returns the mean loss over the masked positions
    /// and adds its gradient to every parameter (`+=`; call [`Module::zero_grad`] first).
    ///
    /// # Panics
    /// As [`Bert4recNet::loss`].
    pub fn forward_backward(
        &mut self,
        inputs: &[u32],
        labels: &[u32],
        rows: usize,
        phase: Phase,
    ) -> T {
        self.loss_impl(inputs, labels, rows, phase, true)
    }

    fn loss_impl(
        &mut self,
        inputs: &[u32],
        labels: &[u32],
        rows: usize,
        phase: Phase,
        grad: bool,
    ) -> T {
        let n = rows * self.config.maxlen;
        assert!(
            inputs.len() == n && labels.len() == n,
            "Bert4recNet: inputs and labels must be [rows, maxlen]"
        );
        assert!(
            labels.iter().all(|&t| t as usize <= self.n_items),
            "Bert4recNet: a label is not an item"
        );
        self.forward_hidden(inputs, rows, phase);
        let c = &mut self.cache;
        c.rows_idx.clear();
        c.rows_idx.extend((0..n).filter(|&r| labels[r] != 0));
        c.targets_v.clear();
        c.targets_v.extend(c.rows_idx.iter().map(|&r| labels[r]));
        if c.rows_idx.is_empty() {
            return T::ZERO;
        }
        self.head_forward();
        let loss = self.output_loss(grad);
        if grad {
            self.head_backward();
            self.backward_hidden(inputs);
        }
        loss
    }

    /// Full softmax cross-entropy of `u` against `targets_v` over the items `1..=n_items`, in chunks of
    /// rows; with `grad`, writes `du` and adds the output-side gradients of the item table and bias.
    fn output_loss(&mut self, grad: bool) -> T {
        let d = self.config.hidden;
        let cols = self.n_items + 2;
        let c = &mut self.cache;
        let total = c.rows_idx.len();
        if grad {
            c.du.resize(&[total, d]);
        }
        let chunk = (CE_CHUNK_ELEMS / cols).max(1);
        let w = &mut self.item_emb.weight;
        let bias = &mut self.out_bias;
        let mut loss = 0.0f64;
        for start in (0..total).step_by(chunk) {
            let nc = chunk.min(total - start);
            c.uc.resize(&[nc, d]);
            c.uc.as_mut_slice()
                .copy_from_slice(&c.u.as_slice()[start * d..(start + nc) * d]);
            c.logits.resize(&[nc, cols]);
            // logits = u E^T + b, with the padding and [MASK] columns out of the softmax.
            let b = bias.value.as_slice();
            for row in c.logits.as_mut_slice().chunks_exact_mut(cols) {
                row.copy_from_slice(b);
            }
            gemm(
                &mut c.logits,
                T::ONE,
                &c.uc,
                Transpose::No,
                &w.value,
                Transpose::Yes,
                T::ONE,
            );
            for row in c.logits.as_mut_slice().chunks_exact_mut(cols) {
                row[0] = T::NEG_INFINITY;
                row[cols - 1] = T::NEG_INFINITY;
            }
            let targets = &c.targets_v[start..start + nc];
            // softmax_cross_entropy averages over this chunk: rescale to the mean over all rows.
            let alpha = nc as f64 / total as f64;
            if !grad {
                loss += softmax_cross_entropy(None, &c.logits, targets, 0).to_f64() * alpha;
                continue;
            }
            c.dlogits.resize(&[nc, cols]);
            let l = softmax_cross_entropy(Some(&mut c.dlogits), &c.logits, targets, 0);
            loss += l.to_f64() * alpha;
            let a = T::from_f64(alpha);
            // du = alpha dlogits E;  dE += alpha dlogits^T u;  db += alpha sum_rows dlogits
            c.duc.resize(&[nc, d]);
            gemm(
                &mut c.duc,
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
                &c.uc,
                Transpose::No,
                T::ONE,
            );
            let bg = bias.grad.as_mut_slice();
            for row in c.dlogits.as_slice().chunks_exact(cols) {
                for (o, &v) in bg.iter_mut().zip(row) {
                    *o += a * v;
                }
            }
            c.du.as_mut_slice()[start * d..(start + nc) * d].copy_from_slice(c.duc.as_slice());
        }
        T::from_f64(loss)
    }

    /// Scores every item for `batch` histories `[batch, maxlen]` (right-aligned), without dropout:
    /// the output at a `[MASK]` appended after the last `maxlen - 1` items. `scores`:
    /// `[batch, n_items + 1]` (column 0, padding, is the padding row's score and meaningless).
    ///
    /// # Panics
    /// If the buffers have the wrong length or an id is above `n_items`.
    pub fn score(&mut self, histories: &[u32], batch: usize, scores: &mut [T]) {
        let l = self.config.maxlen;
        let cols = self.n_items + 1;
        assert_eq!(
            histories.len(),
            batch * l,
            "Bert4recNet::score: histories must be [batch, maxlen]"
        );
        assert_eq!(
            scores.len(),
            batch * cols,
            "Bert4recNet::score: scores must be [batch, n_items + 1]"
        );
        assert!(
            histories.iter().all(|&i| i as usize <= self.n_items),
            "Bert4recNet::score: a history holds an id above n_items"
        );
        let mask = self.mask_id();
        let step = self.config.batch_size;
        let mut ids = vec![0u32; step.min(batch) * l];
        for start in (0..batch).step_by(step) {
            let b = step.min(batch - start);
            ids.resize(b * l, 0);
            for (r, row) in ids.chunks_exact_mut(l).enumerate() {
                let h = &histories[(start + r) * l..(start + r + 1) * l];
                row[..l - 1].copy_from_slice(&h[1..]);
                row[l - 1] = mask;
            }
            self.forward_hidden(&ids, b, Phase::Eval);
            let c = &mut self.cache;
            c.rows_idx.clear();
            c.rows_idx.extend((0..b).map(|r| r * l + l - 1));
            self.head_forward();
            let c = &mut self.cache;
            c.logits.resize(&[b, self.n_items + 2]);
            let bias = self.out_bias.value.as_slice();
            for row in c.logits.as_mut_slice().chunks_exact_mut(self.n_items + 2) {
                row.copy_from_slice(bias);
            }
            gemm(
                &mut c.logits,
                T::ONE,
                &c.u,
                Transpose::No,
                &self.item_emb.weight.value,
                Transpose::Yes,
                T::ONE,
            );
            for (r, row) in c
                .logits
                .as_slice()
                .chunks_exact(self.n_items + 2)
                .enumerate()
            {
                scores[(start + r) * cols..(start + r + 1) * cols].copy_from_slice(&row[..cols]);
            }
        }
    }
}

impl<T: Float> Module<T> for Bert4recNet<T> {
    fn visit_params(&self, f: &mut dyn FnMut(&Param<T>)) {
        self.item_emb.visit_params(f);
        self.pos_emb.visit_params(f);
        self.emb_norm.visit_params(f);
        self.encoder.visit_params(f);
        if let Some(l) = &self.head_dense {
            l.visit_params(f);
        }
        if let Some(n) = &self.head_norm {
            n.visit_params(f);
        }
        f(&self.out_bias);
    }

    fn visit_params_mut(&mut self, f: &mut dyn FnMut(&mut Param<T>)) {
        self.item_emb.visit_params_mut(f);
        self.pos_emb.visit_params_mut(f);
        self.emb_norm.visit_params_mut(f);
        self.encoder.visit_params_mut(f);
        if let Some(l) = &mut self.head_dense {
            l.visit_params_mut(f);
        }
        if let Some(n) = &mut self.head_norm {
            n.visit_params_mut(f);
        }
        f(&mut self.out_bias);
    }
}

/// Random streams of the cloze batches (xor-ed into the seed).
const SHUFFLE_STREAM: u64 = 0xC10_5E5F;
const MASK_STREAM: u64 = 0xC10_3A5C;

/// Fills one cloze row: the last `maxlen` items of `items`, right-aligned, each real position masked
/// with probability `p` (at least one), from the stream of (`seed`, `epoch`, sequence `k`).
#[allow(clippy::too_many_arguments)]
fn cloze_row(
    items: &[u32],
    maxlen: usize,
    p: f64,
    mask_id: u32,
    seed: u64,
    epoch: u64,
    k: u64,
    inputs: &mut [u32],
    labels: &mut [u32],
) {
    inputs.fill(0);
    labels.fill(0);
    let window = &items[items.len().saturating_sub(maxlen)..];
    let off = maxlen - window.len();
    inputs[off..].copy_from_slice(window);
    let mut rng = SeqRng::keyed(seed ^ MASK_STREAM, epoch, k);
    let mut any = false;
    for t in off..maxlen {
        if rng.unit_f64() < p {
            labels[t] = inputs[t];
            inputs[t] = mask_id;
            any = true;
        }
    }
    if !any {
        let t = off + rng.below(window.len() as u64) as usize;
        labels[t] = inputs[t];
        inputs[t] = mask_id;
    }
}

/// BERT4Rec's Adam: `torch.optim.Adam` with `weight_decay` as an L2 term on the gradient.
fn adam_hyper(config: &Bert4recConfig) -> AdamHyper {
    AdamHyper {
        lr: config.lr,
        beta1: config.betas.0,
        beta2: config.betas.1,
        eps: config.adam_eps,
        weight_decay: config.weight_decay,
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
    config: Bert4recConfig,
}

const FILES: CheckpointFiles = CheckpointFiles {
    params: "model.safetensors",
    optim: "optimizer.safetensors",
    state: "state.json",
};

/// BERT4Rec as a [`Model`]: a [`Bert4recNet<f32>`], Adam, and the seed that keys shuffling, masks and
/// dropout.
///
/// ```
/// use seqrec_data::{Dataset, Split, Vocab};
/// use seqrec_models::{Bert4rec, Bert4recConfig, Model};
///
/// let users = Vocab::from_originals((0..4).map(|u| u.to_string()).collect()).unwrap();
/// let items = Vocab::from_originals((0..6).map(|i| i.to_string()).collect()).unwrap();
/// let seqs = (0..4u32).map(|u| ((0..6).map(|t| (u + t) % 6 + 1).collect(), (0..6).collect())).collect();
/// let ds = Dataset::from_sequences(users, items, seqs).unwrap();
/// let split = Split::leave_one_out(&ds);
/// let train = split.train_sequences(&ds).unwrap();
/// let config = Bert4recConfig { hidden: 8, heads: 2, ff: 16, maxlen: 5, batch_size: 2, ..Bert4recConfig::default() };
/// let mut model = Bert4rec::new(config, &train, 42).unwrap();
/// let report = model.train_epoch(&train, 0, &mut |_| {}).unwrap();
/// assert_eq!(report.steps, 2);
/// assert!(report.loss.is_finite());
/// let mut scores = vec![0.0f32; 7];
/// model.score(&[0, 0, 1, 2, 3], 1, &mut scores);
/// assert!(scores[1..].iter().all(|s| s.is_finite()));
/// ```
#[derive(Clone, Debug)]
pub struct Bert4rec {
    net: Bert4recNet<f32>,
    adam: AdamState<f32>,
    seed: u64,
    inputs: Vec<u32>,
    labels: Vec<u32>,
}

impl Bert4rec {
    /// A model for the catalogue of `train`, initialised from `seed`.
    ///
    /// # Errors
    /// [`ModelError::Config`] for an invalid configuration or an empty catalogue.
    pub fn new(
        config: Bert4recConfig,
        train: &Sequences<'_>,
        seed: u64,
    ) -> Result<Self, ModelError> {
        let net = Bert4recNet::new(&config, train.n_items(), seed)?;
        let adam = AdamState::new(&net, adam_hyper(&config));
        Ok(Self {
            net,
            adam,
            seed,
            inputs: Vec::new(),
            labels: Vec::new(),
        })
    }

    /// The network (parameters by name through [`Module::visit_params`]).
    pub fn net(&self) -> &Bert4recNet<f32> {
        &self.net
    }

    /// The network, mutably.
    pub fn net_mut(&mut self) -> &mut Bert4recNet<f32> {
        &mut self.net
    }

    /// Optimisation steps taken so far.
    pub fn steps(&self) -> u64 {
        self.adam.steps
    }

    /// The cloze inputs and labels of sequence `k` of `train` in epoch `epoch` (`[maxlen]` each), as
    /// training sees them.
    pub fn cloze_example(
        &self,
        train: &Sequences<'_>,
        epoch: usize,
        k: usize,
    ) -> (Vec<u32>, Vec<u32>) {
        let l = self.net.config.maxlen;
        let (mut i, mut t) = (vec![0; l], vec![0; l]);
        cloze_row(
            train.items(k),
            l,
            self.net.config.mask_prob,
            self.net.mask_id(),
            self.seed,
            epoch as u64,
            k as u64,
            &mut i,
            &mut t,
        );
        (i, t)
    }
}

impl Model for Bert4rec {
    fn name(&self) -> &'static str {
        "bert4rec"
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
        let l = config.maxlen;
        let mut order: Vec<u32> = (0..train.len() as u32)
            .filter(|&k| train.items(k as usize).len() >= 2)
            .collect();
        SeqRng::keyed(self.seed ^ SHUFFLE_STREAM, epoch as u64, 0).shuffle(&mut order);
        let steps = order.len().div_ceil(config.batch_size);
        let mut tally = EpochTally::new(steps, on_step);
        for (step, chunk) in order.chunks(config.batch_size).enumerate() {
            let rows = chunk.len();
            self.inputs.resize(rows * l, 0);
            self.labels.resize(rows * l, 0);
            for (r, &k) in chunk.iter().enumerate() {
                cloze_row(
                    train.items(k as usize),
                    l,
                    config.mask_prob,
                    self.net.mask_id(),
                    self.seed,
                    epoch as u64,
                    k as u64,
                    &mut self.inputs[r * l..(r + 1) * l],
                    &mut self.labels[r * l..(r + 1) * l],
                );
            }
            self.net.zero_grad();
            let phase = Phase::Train {
                step: step_key(epoch, step),
            };
            let loss = self
                .net
                .forward_backward(&self.inputs, &self.labels, rows, phase)
                .to_f64();
            self.adam
                .finish_step(&mut self.net, loss, config.clip_grad_norm, epoch, step)?;
            tally.record(loss, rows);
        }
        Ok(tally.finish())
    }

    fn score(&mut self, histories: &[u32], batch: usize, scores: &mut [f32]) {
        self.net.score(histories, batch, scores);
    }

    fn save(&self, dir: &Path) -> Result<(), ModelError> {
        let state = SavedState {
            format: 1,
            model: "bert4rec".into(),
            n_items: self.net.n_items,
            seed: self.seed,
            adam_steps: self.adam.steps,
            config: self.net.config.clone(),
        };
        FILES.save(dir, &self.net, &self.adam, &state)
    }

    fn load(&mut self, dir: &Path) -> Result<(), ModelError> {
        let (state, path): (SavedState, _) = FILES.read_state(dir)?;
        if state.model != "bert4rec" || state.format != 1 {
            return Err(ckpt_err(
                &path,
                format!(
                    "not a BERT4Rec checkpoint of format 1 (model {:?}, format {})",
                    state.model, state.format
                ),
            ));
        }
        // Everything is read into copies first, so a failed load leaves the model untouched. Dropout
        // seeds derive from the model seed: a checkpoint of another seed is loaded into a network
        // rebuilt with that seed (and this model's config, so shapes are still checked against it).
        let adam = FILES.load_adam(dir, &self.adam, state.adam_steps)?;
        if state.seed == self.seed {
            FILES.load_params(dir, &mut self.net)?;
        } else {
            let mut net = Bert4recNet::new(&self.net.config, self.net.n_items, state.seed)?;
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

    /// Every row gets at least one mask, masks only real positions, labels exactly the masked
    /// positions, and masks about `p` of the positions.
    #[test]
    fn cloze_rows_mask_real_positions_at_the_requested_rate() {
        let items: Vec<u32> = (1..=150).collect();
        let (l, mask) = (200, 999);
        let (mut i, mut t) = (vec![0; l], vec![0; l]);
        let mut masked = 0;
        for k in 0..200 {
            cloze_row(
                &items[..(k % 150) + 1],
                l,
                0.2,
                mask,
                3,
                1,
                k as u64,
                &mut i,
                &mut t,
            );
            let len = (k % 150) + 1;
            let off = l - len;
            assert!(i[..off].iter().all(|&x| x == 0) && t[..off].iter().all(|&x| x == 0));
            let mut row_masks = 0;
            for p in off..l {
                let orig = items[p - off];
                if i[p] == mask {
                    assert_eq!(t[p], orig);
                    row_masks += 1;
                } else {
                    assert_eq!((i[p], t[p]), (orig, 0));
                }
            }
            assert!(row_masks >= 1);
            masked += row_masks;
        }
        // 200 rows of mean length ~75: about 0.2 * 15100 = 3020 masks (plus the forced ones).
        let positions: usize = (0..200).map(|k| (k % 150) + 1).sum();
        let rate = masked as f64 / positions as f64;
        assert!((0.18..0.23).contains(&rate), "rate {rate}");
    }
}
