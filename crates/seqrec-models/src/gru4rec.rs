//! [`Gru4rec`]: GRU4Rec (Hidasi et al. 2016, Hidasi & Karatzoglou 2018) trained on padded user
//! sequences with every position a target, as in Klenitskiy & Vasilev 2023's full-ranking setup.
//!
//! Architecture, per position `t` of a left-padded window of `maxlen` items:
//! ```text
//! x_t  = E[i_t]                      item embedding [d]; E = W_out when the embedding is constrained
//! x̃_t  = dropout_emb(x_t)
//! h_t  = GRU(x̃_t, h_{t-1})            1+ layers (seqrec_nn::Gru), padding steps carry the state unchanged
//! h̃_t  = dropout_hidden(h_t)
//! s_t  = h̃_t W_out^T + b_out          scores of all items [n_items]
//! ```
//! Losses ([`Gru4recLoss`]): full softmax cross-entropy over all items (`Ce`, the default), or a sampled
//! softmax over the batch's in-batch items plus shared popularity-sampled negatives with the log-Q
//! correction (`SampledCe`, the GRU4Rec "cross-entropy with negative sampling" recipe adapted to padded
//! user sequences), or BPR-max with score regularisation over the same candidates (`BprMax`, Hidasi &
//! Karatzoglou 2018, the official GRU4Rec's `bpr-max` with `bpreg`). Padding targets are masked out.
//!
//! Batching ([`Gru4recBatching`]): padded windows of each user's last `maxlen` events with every
//! position a target (`Windows`, the default), or the official GRU4Rec's **session-parallel**
//! mini-batches (`SessionParallel`): `batch_size` lanes each walk one session (or user sequence) an
//! event at a time; the hidden state is carried from step to step within a lane, reset to zero when a
//! new session enters the lane, and gradients are truncated to the current step (the official
//! implementation's one-step BPTT).
//!
//! Item tables hold real items only (row `i - 1` is item `i`): the padding id `0` embeds to zeros and is
//! never a class, so the softmax never sees it.
//!
//! Training follows llm.c's discipline: one step function runs the forward, one fused loss and gradient
//! per chunk of positions, a hand-written backward through time (`Gru::backward`), clipping, then Adam
//! (a private torch-exact copy whose moments can be saved and restored, which `seqrec_nn::optim::Adam`
//! does not expose). All buffers live in [`Gru4rec`] and are reused every step.

use std::path::Path;

use seqrec_data::{
    NegativeSampler, Negatives, SasrecBatcher, SasrecConfig, Sequences, SessionParallel, WindowMode,
};
use seqrec_nn::{
    Dropout, DropoutCache, Gru, Module, Param, RnnCache, RnnConfig, RnnState, init::Rng,
};
use seqrec_tensor::{Float, Tensor, Transpose, gemm, splitmix64};
use serde::{Deserialize, Serialize};

use crate::adam::{AdamHyper, AdamState};
use crate::epoch::{EpochTally, step_key};
use crate::model::{EpochReport, Model, ModelError, StepReport};
use crate::persist::{CheckpointFiles, check_n_items};

/// Positions scored per chunk of the output layer: bounds the `[chunk, n_items]` logits buffer
/// (about 14 MB for ML-1M in `f32`, instead of ~350 MB for a whole `[128 x 200, 3416]` batch).
const CHUNK_ROWS: usize = 1024;

/// Score given to a BPR-max candidate that equals the position's positive: `e^(MASKED_SCORE - max)`
/// underflows to exactly 0 in `f64` for any real score above `-9000`, so the column gets zero weight
/// in the softmax over the negatives, zero regularisation and zero gradient (`-inf` would turn
/// `w x²` into `0 · inf = NaN`).
const MASKED_SCORE: f64 = -1e4;

/// Which training loss [`Gru4rec`] uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Gru4recLoss {
    /// Full softmax cross-entropy over every item (Klenitskiy & Vasilev 2023's GRU4Rec).
    Ce,
    /// Sampled softmax over the batch's in-batch items (the last target of each row) plus
    /// `n_negatives` shared popularity-sampled negatives, with the log-Q correction
    /// (`ln` of each candidate's expected count in the candidate set); a candidate equal to a
    /// position's positive is masked out of that position's softmax.
    SampledCe,
    /// BPR-max with score regularisation (`bpreg`) over the same candidates as `SampledCe` (in-batch
    /// items plus `n_negatives` shared popularity-sampled negatives), without log-Q: the official
    /// GRU4Rec's `bpr-max` loss. A candidate equal to a position's positive gets weight 0.
    BprMax,
}

/// How [`Gru4rec`] cuts the training sequences into mini-batches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Gru4recBatching {
    /// Right-aligned windows of each user's last `maxlen` events, every position a target,
    /// backpropagation through the whole window.
    Windows,
    /// GRU4Rec's session-parallel mini-batches: `batch_size` lanes, one event per lane per step,
    /// hidden state carried within a session and reset when a lane starts a new one, one-step BPTT.
    SessionParallel,
}

/// Settings of [`Gru4rec`]. Defaults follow the ML-1M full-ranking setting of Klenitskiy & Vasilev
/// 2023 (GRU4Rec with cross-entropy over all items: hidden 64, one layer, batch 128, sequences of the
/// last 200 items), with light dropout and Adam at 1e-2: measured on ML-1M, 1e-3 leaves the GRU at
/// the popularity floor for several epochs (valid NDCG@10 0.02 after 3 epochs, against 0.16 after 8
/// with 1e-2; `docs/benchmarks.md`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Gru4recConfig {
    /// Width of the input item embedding (ignored, and must equal `hidden_size`, when
    /// `constrained_embedding`). Default 64.
    pub embedding_dim: usize,
    /// GRU hidden units. Default 64.
    pub hidden_size: usize,
    /// Stacked GRU layers. Default 1 (the published setting).
    pub num_layers: usize,
    /// Share the input embedding with the output item embedding (GRU4Rec's
    /// `constrained_embedding`); then `embedding_dim` must equal `hidden_size`. Default false.
    pub constrained_embedding: bool,
    /// Dropout on the input embeddings, in `[0, 1)`. Default 0.1.
    pub dropout_embedding: f64,
    /// Dropout on the GRU output before the output layer, in `[0, 1)`. Default 0.1.
    pub dropout_hidden: f64,
    /// Training loss. Default [`Gru4recLoss::Ce`].
    pub loss: Gru4recLoss,
    /// Shared negatives per batch for [`Gru4recLoss::SampledCe`] (GRU4Rec's `n_sample`). Default 2048.
    pub n_negatives: usize,
    /// Popularity exponent of the negative sampler, `count^alpha` (GRU4Rec's `sample_alpha`).
    /// Default 0.75.
    pub sample_alpha: f64,
    /// Apply the log-Q correction to the sampled softmax. Default true.
    pub logq: bool,
    /// Score regularisation `λ` of [`Gru4recLoss::BprMax`] (GRU4Rec's `bpreg`). Default 1.0.
    pub bpreg: f64,
    /// Mini-batch layout. Default [`Gru4recBatching::Windows`].
    pub batching: Gru4recBatching,
    /// Training sequences per batch. Default 128.
    pub batch_size: usize,
    /// Window length: the last `maxlen` items of each user are trained on and read when scoring.
    /// Default 200.
    pub maxlen: usize,
    /// Adam learning rate. Default 1e-2.
    pub lr: f64,
    /// Adam `beta1`. Default 0.9.
    pub beta1: f64,
    /// Adam `beta2`. Default 0.999.
    pub beta2: f64,
    /// Adam `eps` (added outside the square root, as PyTorch). Default 1e-8.
    pub eps: f64,
    /// L2 weight decay added to the gradient (`torch.optim.Adam`'s `weight_decay`). Default 0.
    pub weight_decay: f64,
    /// Clip the global gradient norm to this value before each step; `None` disables. Default `None`.
    pub clip_grad_norm: Option<f64>,
}

impl Default for Gru4recConfig {
    fn default() -> Self {
        Self {
            embedding_dim: 64,
            hidden_size: 64,
            num_layers: 1,
            constrained_embedding: false,
            dropout_embedding: 0.1,
            dropout_hidden: 0.1,
            loss: Gru4recLoss::Ce,
            n_negatives: 2048,
            sample_alpha: 0.75,
            logq: true,
            bpreg: 1.0,
            batching: Gru4recBatching::Windows,
            batch_size: 128,
            maxlen: 200,
            lr: 1e-2,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            clip_grad_norm: None,
        }
    }
}

impl Gru4recConfig {
    /// Checks every field.
    ///
    /// # Errors
    /// [`ModelError::Config`] naming the first bad field and its value.
    pub fn validate(&self) -> Result<(), ModelError> {
        let bad = |field: &str, value: &dyn std::fmt::Display, why: &str| {
            Err(ModelError::Config(format!(
                "gru4rec.{field} = {value}: {why}"
            )))
        };
        for (field, v) in [
            ("embedding_dim", self.embedding_dim),
            ("hidden_size", self.hidden_size),
            ("num_layers", self.num_layers),
            ("batch_size", self.batch_size),
            ("maxlen", self.maxlen),
        ] {
            if v == 0 {
                return bad(field, &v, "must be at least 1");
            }
        }
        if self.constrained_embedding && self.embedding_dim != self.hidden_size {
            return bad(
                "embedding_dim",
                &self.embedding_dim,
                &format!(
                    "must equal hidden_size ({}) with constrained_embedding",
                    self.hidden_size
                ),
            );
        }
        for (field, p) in [
            ("dropout_embedding", self.dropout_embedding),
            ("dropout_hidden", self.dropout_hidden),
        ] {
            if !(0.0..1.0).contains(&p) {
                return bad(field, &p, "must be in [0, 1)");
            }
        }
        if self.loss != Gru4recLoss::Ce && self.n_negatives == 0 {
            return bad(
                "n_negatives",
                &self.n_negatives,
                "must be at least 1 with loss = sampled_ce or bpr_max",
            );
        }
        if !(self.bpreg.is_finite() && self.bpreg >= 0.0) {
            return bad("bpreg", &self.bpreg, "must be finite and >= 0");
        }
        if !(self.sample_alpha.is_finite() && self.sample_alpha >= 0.0) {
            return bad(
                "sample_alpha",
                &self.sample_alpha,
                "must be finite and >= 0",
            );
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return bad("lr", &self.lr, "must be finite and > 0");
        }
        for (field, b) in [("beta1", self.beta1), ("beta2", self.beta2)] {
            if !(0.0..1.0).contains(&b) {
                return bad(field, &b, "must be in [0, 1)");
            }
        }
        if !(self.eps.is_finite() && self.eps >= 0.0) {
            return bad("eps", &self.eps, "must be finite and >= 0");
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return bad(
                "weight_decay",
                &self.weight_decay,
                "must be finite and >= 0",
            );
        }
        if let Some(c) = self.clip_grad_norm
            && !(c.is_finite() && c > 0.0)
        {
            return bad("clip_grad_norm", &c, "must be finite and > 0");
        }
        Ok(())
    }
}

/// The parameters of GRU4Rec, generic over the element type so the whole model can be
/// gradient-checked in `f64`.
#[derive(Clone, Debug)]
struct Net<T> {
    /// `item_in.weight` `[n_items, d]`: input embedding (row `i - 1` is item `i`); `None` when the
    /// embedding is constrained (the input reads `item_out`).
    item_in: Option<Param<T>>,
    /// The recurrent layers.
    gru: Gru<T>,
    /// `item_out.weight` `[n_items, h]`: output item embedding.
    item_out: Param<T>,
    /// `item_out.bias` `[n_items]`.
    item_bias: Param<T>,
}

impl<T: Float> Module<T> for Net<T> {
    fn visit_params(&self, f: &mut dyn FnMut(&Param<T>)) {
        if let Some(p) = &self.item_in {
            f(p);
        }
        self.gru.visit_params(f);
        f(&self.item_out);
        f(&self.item_bias);
    }

    fn visit_params_mut(&mut self, f: &mut dyn FnMut(&mut Param<T>)) {
        if let Some(p) = &mut self.item_in {
            f(p);
        }
        self.gru.visit_params_mut(f);
        f(&mut self.item_out);
        f(&mut self.item_bias);
    }
}

/// Activation buffers of one training step (`[batch, maxlen]` windows), allocated once.
#[derive(Clone, Debug)]
struct Buffers<T> {
    /// `[b, l]` true at real input items.
    mask: Vec<bool>,
    /// `[b, l, d]` gathered input embeddings, then their gradient.
    x: Tensor<T>,
    /// `[b, l, d]` after embedding dropout, then its gradient.
    xd: Tensor<T>,
    /// `[b, l, h]` GRU outputs, then their gradient.
    y: Tensor<T>,
    /// `[b, l, h]` after hidden dropout, then its gradient.
    yd: Tensor<T>,
    h_n: RnnState<T>,
    cache: RnnCache<T>,
    drop_emb: DropoutCache,
    drop_hid: DropoutCache,
    /// Flat positions `b * l + t` with a real target, and their 0-based class (`target - 1`).
    rows: Vec<usize>,
    classes: Vec<u32>,
    /// `[chunk, h]` compacted hidden states of one chunk of positions, then their gradient.
    hc: Tensor<T>,
    dhc: Tensor<T>,
    /// `[chunk, n_items]` (Ce) or `[chunk, 1 + K]` (SampledCe) logits and their gradient.
    logits: Tensor<T>,
    dlogits: Tensor<T>,
    /// SampledCe: candidate item ids (1-based) `[K]`, their `ln q` `[K]`, gathered output rows
    /// `[K, h]`, biases `[K]`, candidate logits `[chunk, K]` and the gradients of rows and biases.
    cand: Vec<u32>,
    cand_lnq: Vec<f64>,
    /// `ln q` of the positives of the current chunk.
    pos_lnq: Vec<f64>,
    wc: Tensor<T>,
    bc: Vec<T>,
    cl: Tensor<T>,
    dwc: Tensor<T>,
    dbc: Vec<T>,
    /// SampledCe: rows whose last column has a target (in-batch items drawn) and shared negatives
    /// drawn, for `ln q`.
    in_batch: usize,
    n_neg: usize,
    /// `[n_items]` stamp array deduplicating candidates (value = step stamp).
    seen: Vec<u64>,
    stamp: u64,
    /// Targets of the current chunk (all zeros for SampledCe: the positive is column 0).
    chunk_targets: Vec<u32>,
    /// BprMax: per position with a target, whether some candidate differs from its positive.
    valid: Vec<bool>,
}

impl<T: Float> Buffers<T> {
    fn new(net: &Net<T>, n_items: usize, b: usize, l: usize, d: usize, h: usize) -> Self {
        Self {
            mask: vec![false; b * l],
            x: Tensor::zeros(&[b, l, d]),
            xd: Tensor::zeros(&[b, l, d]),
            y: Tensor::zeros(&[b, l, h]),
            yd: Tensor::zeros(&[b, l, h]),
            h_n: net.gru.zero_state(b),
            cache: net.gru.new_cache(b, l),
            drop_emb: DropoutCache::new(),
            drop_hid: DropoutCache::new(),
            rows: Vec::with_capacity(b * l),
            classes: Vec::with_capacity(b * l),
            hc: Tensor::zeros(&[0, h]),
            dhc: Tensor::zeros(&[0, h]),
            logits: Tensor::zeros(&[0]),
            dlogits: Tensor::zeros(&[0]),
            cand: Vec::new(),
            cand_lnq: Vec::new(),
            pos_lnq: Vec::new(),
            wc: Tensor::zeros(&[0, h]),
            bc: Vec::new(),
            cl: Tensor::zeros(&[0]),
            dwc: Tensor::zeros(&[0, h]),
            dbc: Vec::new(),
            in_batch: 0,
            n_neg: 0,
            seen: vec![0; n_items],
            stamp: 0,
            chunk_targets: Vec::with_capacity(CHUNK_ROWS),
            valid: Vec::new(),
        }
    }
}

/// Inputs of one training step, borrowed from a `SasrecBatch` (or built by hand in tests).
struct StepInput<'a> {
    /// Rows (`batch`), columns (`maxlen`).
    b: usize,
    l: usize,
    /// `[b, l]` input items, `0` = padding.
    inputs: &'a [u32],
    /// `[b, l]` targets, `0` = no target.
    targets: &'a [u32],
    /// Shared negatives (SampledCe), any ids in `1..=n_items`.
    negatives: &'a [u32],
}

/// The generic training core: parameters, dropout sites, step buffers and the sampling tables.
#[derive(Clone, Debug)]
struct Core<T> {
    cfg: Gru4recConfig,
    n_items: usize,
    net: Net<T>,
    drop_emb: Dropout,
    drop_hid: Dropout,
    buf: Buffers<T>,
    /// Unigram probability of each item in training (`[n_items + 1]`, index 0 unused).
    p_unigram: Vec<f64>,
    /// Probability of each item under the negative sampler (`count^alpha`, normalised).
    p_sample: Vec<f64>,
    /// Positions per output-layer chunk ([`CHUNK_ROWS`]; tests shrink it to exercise chunking).
    chunk_rows: usize,
    /// Session-parallel training: the hidden state of every lane carried between steps.
    carried: Option<RnnState<T>>,
}

/// Derives the seed of one random stream of the model from the model seed.
fn stream_seed(seed: u64, stream: u64) -> u64 {
    splitmix64(seed ^ splitmix64(stream.wrapping_add(0x4752_5534)))
}

/// Item counts of `train` (`[n_items + 1]`, index 0 = padding = 0).
fn item_counts(train: &Sequences<'_>) -> Vec<u32> {
    let mut counts = vec![0u32; train.n_items() + 1];
    for k in 0..train.len() {
        for &i in train.items(k) {
            counts[i as usize] += 1;
        }
    }
    counts
}

impl<T: Float> Core<T> {
    fn new(cfg: Gru4recConfig, counts: &[u32], seed: u64) -> Result<Self, ModelError> {
        cfg.validate()?;
        let n_items = counts.len().saturating_sub(1);
        if n_items == 0 {
            return Err(ModelError::Data(
                "gru4rec: the catalogue has no items".into(),
            ));
        }
        let (d, h) = (cfg.embedding_dim, cfg.hidden_size);
        let mut rng = Rng::new(stream_seed(seed, 0));
        // GRU4Rec's reference initialisation of the item tables: uniform ±sqrt(6 / (rows + cols));
        // the GRU keeps PyTorch's default (uniform ±1/sqrt(h)), biases of the output start at zero.
        let table = |rng: &mut Rng, name: &str, cols: usize| {
            let bound = (6.0 / (n_items + cols) as f64).sqrt();
            Param::new(name, rng.uniform_tensor::<T>(&[n_items, cols], bound))
        };
        let item_in = (!cfg.constrained_embedding).then(|| table(&mut rng, "item_in.weight", d));
        let gru = Gru::new(
            "gru",
            RnnConfig {
                input_size: if cfg.constrained_embedding { h } else { d },
                hidden_size: h,
                num_layers: cfg.num_layers,
            },
            &mut rng,
        )
        .map_err(|e| ModelError::Config(format!("gru4rec: {e}")))?;
        let item_out = table(&mut rng, "item_out.weight", h);
        let item_bias = Param::new("item_out.bias", Tensor::zeros(&[n_items]));
        let net = Net {
            item_in,
            gru,
            item_out,
            item_bias,
        };
        let dropout = |p: f64, stream: u64| {
            Dropout::new(p, stream_seed(seed, stream))
                .map_err(|e| ModelError::Config(format!("gru4rec: {e}")))
        };
        let drop_emb = dropout(cfg.dropout_embedding, 1)?;
        let drop_hid = dropout(cfg.dropout_hidden, 2)?;
        let d_in = if cfg.constrained_embedding { h } else { d };
        let buf = Buffers::new(&net, n_items, cfg.batch_size, cfg.maxlen, d_in, h);
        let total: f64 = counts[1..].iter().map(|&c| c as f64).sum();
        let p_unigram: Vec<f64> = counts
            .iter()
            .enumerate()
            .map(|(i, &c)| {
                if i == 0 || total == 0.0 {
                    0.0
                } else {
                    c as f64 / total
                }
            })
            .collect();
        let w: Vec<f64> = counts
            .iter()
            .enumerate()
            .map(|(i, &c)| {
                if i == 0 {
                    0.0
                } else {
                    (c as f64).powf(cfg.sample_alpha)
                }
            })
            .collect();
        let wsum: f64 = w.iter().sum();
        let p_sample = w
            .iter()
            .map(|&x| if wsum > 0.0 { x / wsum } else { 0.0 })
            .collect();
        Ok(Self {
            cfg,
            n_items,
            net,
            drop_emb,
            drop_hid,
            buf,
            p_unigram,
            p_sample,
            chunk_rows: CHUNK_ROWS,
            carried: None,
        })
    }

    /// The input table: `item_in`, or `item_out` when constrained.
    fn input_table(&self) -> &Tensor<T> {
        match &self.net.item_in {
            Some(p) => &p.value,
            None => &self.net.item_out.value,
        }
    }

    /// Forward, loss and (with `grad`) backward of one step; parameter gradients accumulate.
    /// Returns the mean loss over the positions with a target (0 when there are none).
    ///
    /// The dropout sites must have their counters set by the caller (training) or be in eval mode.
    fn step(&mut self, inp: &StepInput<'_>, grad: bool) -> f64 {
        self.step_from(inp, grad, false)
    }

    /// One session-parallel step (`inp`: `[lanes, 1]`): lanes flagged in `reset` start a new session
    /// from the zero state, the others continue from the state the previous step left; the new states
    /// are carried to the next step (detached: gradients stop at this step, as in the official
    /// GRU4Rec). Inactive lanes (input 0) keep their state. Returns the step's mean loss.
    fn session_step(&mut self, inp: &StepInput<'_>, reset: &[bool], grad: bool) -> f64 {
        assert_eq!(inp.l, 1, "session_step: one event per lane");
        assert_eq!(reset.len(), inp.b, "session_step: one reset flag per lane");
        let (b, h, layers) = (inp.b, self.cfg.hidden_size, self.cfg.num_layers);
        if self.carried.as_ref().is_none_or(|s| s.batch() != b) {
            self.carried = Some(self.net.gru.zero_state(b));
        }
        let carried = self.carried.as_mut().expect("set above");
        for layer in 0..layers {
            for (lane, _) in reset.iter().enumerate().filter(|&(_, &r)| r) {
                let o = (layer * b + lane) * h;
                carried.h.as_mut_slice()[o..o + h].fill(T::ZERO);
            }
        }
        let loss = self.step_from(inp, grad, true);
        self.carried
            .as_mut()
            .expect("set above")
            .h
            .copy_from(&self.buf.h_n.h);
        loss
    }

    /// [`Core::step`], starting the GRU from the carried session state when `from_carried`.
    fn step_from(&mut self, inp: &StepInput<'_>, grad: bool, from_carried: bool) -> f64 {
        let (b, l) = (inp.b, inp.l);
        let d = self.input_table().cols();
        let h = self.cfg.hidden_size;
        // (1) x[i] = E[id_i - 1], zeros at padding.
        {
            let buf = &mut self.buf;
            buf.x.resize(&[b, l, d]);
            buf.xd.resize(&[b, l, d]);
            buf.y.resize(&[b, l, h]);
            buf.yd.resize(&[b, l, h]);
            buf.mask.clear();
            buf.mask.extend(inp.inputs.iter().map(|&id| id != 0));
        }
        let table = match &self.net.item_in {
            Some(p) => &p.value,
            None => &self.net.item_out.value,
        };
        gather_rows(&mut self.buf.x, table, inp.inputs);
        let buf = &mut self.buf;
        // (2) x̃ = dropout_emb(x)
        self.drop_emb
            .forward(&mut buf.xd, &mut buf.drop_emb, &buf.x);
        // (3) y = GRU(x̃), padded steps carry the state and output zeros.
        if buf.h_n.batch() != b {
            buf.h_n = self.net.gru.zero_state(b);
        }
        let h0 = if from_carried {
            self.carried.as_ref()
        } else {
            None
        };
        self.net.gru.forward(
            &mut buf.y,
            &mut buf.h_n,
            &mut buf.cache,
            &buf.xd,
            Some(&buf.mask),
            h0,
        );
        // (4) ỹ = dropout_hidden(y)
        self.drop_hid
            .forward(&mut buf.yd, &mut buf.drop_hid, &buf.y);
        // (5) positions with a target.
        buf.rows.clear();
        buf.classes.clear();
        for (i, &t) in inp.targets.iter().enumerate() {
            if t != 0 {
                buf.rows.push(i);
                buf.classes.push(t - 1);
            }
        }
        let n = buf.rows.len();
        if n == 0 {
            return 0.0;
        }
        if self.cfg.loss != Gru4recLoss::Ce {
            self.prepare_candidates(inp);
        }
        // BprMax needs one candidate other than the positive; a position without any (a batch whose
        // only candidate is its own target) is left out of the mean. The candidates are
        // de-duplicated, so at most one of them equals the positive.
        let buf = &mut self.buf;
        buf.valid.clear();
        if self.cfg.loss == Gru4recLoss::BprMax {
            let (k, first) = (buf.cand.len(), buf.cand.first().copied());
            buf.valid.extend(
                buf.classes
                    .iter()
                    .map(|&c| !(k == 1 && first == Some(c + 1))),
            );
        } else {
            buf.valid.resize(n, true);
        }
        let n_valid = buf.valid.iter().filter(|&&v| v).count();
        if n_valid == 0 {
            return 0.0;
        }
        // From here `x`, `xd`, `y` hold gradients once their forward values are no longer read;
        // `yd` (the output layer's input) becomes d ỹ after the chunk loop, so gradients go to `y` first.
        if grad {
            self.buf.y.fill(T::ZERO);
        }
        let mut loss = 0.0;
        let mut start = 0;
        while start < n {
            let nc = self.chunk_rows.min(n - start);
            // Fraction of the mean this chunk carries: the chunk losses are means over its valid rows.
            let nv = self.buf.valid[start..start + nc]
                .iter()
                .filter(|&&v| v)
                .count();
            let w = nv as f64 / n_valid as f64;
            let buf = &mut self.buf;
            buf.hc.resize(&[nc, h]);
            for (r, &pos) in buf.rows[start..start + nc].iter().enumerate() {
                buf.hc.as_mut_slice()[r * h..(r + 1) * h]
                    .copy_from_slice(&buf.yd.as_slice()[pos * h..(pos + 1) * h]);
            }
            let chunk_loss = match self.cfg.loss {
                Gru4recLoss::Ce => self.chunk_ce(start, nc, w, grad),
                Gru4recLoss::SampledCe | Gru4recLoss::BprMax => {
                    self.chunk_sampled(start, nc, w, grad)
                }
            };
            loss += chunk_loss * w;
            if grad {
                // d ỹ[pos] = dhc[r] (each position is in one chunk only); kept in `y` for now.
                let buf = &mut self.buf;
                for (r, &pos) in buf.rows[start..start + nc].iter().enumerate() {
                    buf.y.as_mut_slice()[pos * h..(pos + 1) * h]
                        .copy_from_slice(&buf.dhc.as_slice()[r * h..(r + 1) * h]);
                }
            }
            start += nc;
        }
        if !grad {
            return loss;
        }
        if self.cfg.loss != Gru4recLoss::Ce {
            self.scatter_candidate_grads();
        }
        let buf = &mut self.buf;
        // (4) backward: dy = dropout_hidden'(d ỹ) — `y` holds d ỹ, write dy into `yd`.
        self.drop_hid.backward(&mut buf.yd, &buf.y, &buf.drop_hid);
        // (3) backward through time: d x̃ into `x` (parameter gradients of the GRU accumulate).
        self.net.gru.backward(
            Some(&mut buf.x),
            None,
            &buf.yd,
            None,
            &buf.xd,
            Some(&buf.mask),
            &mut buf.cache,
        );
        // (2) backward: dx = dropout_emb'(d x̃) into `xd`.
        self.drop_emb.backward(&mut buf.xd, &buf.x, &buf.drop_emb);
        // (1) backward: dE[id - 1] += dx[i] at real inputs.
        let table_grad = match &mut self.net.item_in {
            Some(p) => &mut p.grad,
            None => &mut self.net.item_out.grad,
        };
        scatter_add_rows(table_grad, &buf.xd, inp.inputs);
        loss
    }

    /// Full softmax cross-entropy of one chunk: `logits = hc W_out^T + b`; with `grad`,
    /// `dW_out += w dlogits^T hc`, `db += w colsum(dlogits)`, `dhc = w dlogits W_out`.
    fn chunk_ce(&mut self, start: usize, nc: usize, w: f64, grad: bool) -> f64 {
        let c = self.n_items;
        let buf = &mut self.buf;
        let net = &mut self.net;
        buf.logits.resize(&[nc, c]);
        // logits = hc W_out^T + b
        gemm(
            &mut buf.logits,
            T::ONE,
            &buf.hc,
            Transpose::No,
            &net.item_out.value,
            Transpose::Yes,
            T::ZERO,
        );
        add_bias_rows(&mut buf.logits, net.item_bias.value.as_slice());
        let targets = &buf.classes[start..start + nc];
        if !grad {
            return seqrec_nn::loss::softmax_cross_entropy(None, &buf.logits, targets, u32::MAX)
                .to_f64();
        }
        buf.dlogits.resize(&[nc, c]);
        let l = seqrec_nn::loss::softmax_cross_entropy(
            Some(&mut buf.dlogits),
            &buf.logits,
            targets,
            u32::MAX,
        )
        .to_f64();
        let wt = T::from_f64(w);
        // dW_out += w dlogits^T hc
        gemm(
            &mut net.item_out.grad,
            wt,
            &buf.dlogits,
            Transpose::Yes,
            &buf.hc,
            Transpose::No,
            T::ONE,
        );
        // db += w colsum(dlogits)
        col_sum_acc(net.item_bias.grad.as_mut_slice(), &buf.dlogits, wt);
        // dhc = w dlogits W_out
        buf.dhc.resize(&[nc, self.cfg.hidden_size]);
        gemm(
            &mut buf.dhc,
            wt,
            &buf.dlogits,
            Transpose::No,
            &net.item_out.value,
            Transpose::No,
            T::ZERO,
        );
        l
    }

    /// Builds this step's candidate list: the last target of every row (the in-batch items), then the
    /// shared negatives, deduplicated in that order; their `ln q` (expected count in the candidate set,
    /// `rows * p_unigram + n_neg * p_sample`), output rows and biases.
    fn prepare_candidates(&mut self, inp: &StepInput<'_>) {
        let buf = &mut self.buf;
        buf.stamp += 1;
        buf.cand.clear();
        let mut in_batch = 0usize;
        for r in 0..inp.b {
            let t = inp.targets[r * inp.l + inp.l - 1];
            if t != 0 {
                in_batch += 1;
                if buf.seen[t as usize - 1] != buf.stamp {
                    buf.seen[t as usize - 1] = buf.stamp;
                    buf.cand.push(t);
                }
            }
        }
        for &t in inp.negatives {
            if t != 0 && buf.seen[t as usize - 1] != buf.stamp {
                buf.seen[t as usize - 1] = buf.stamp;
                buf.cand.push(t);
            }
        }
        let k = buf.cand.len();
        let h = self.cfg.hidden_size;
        buf.in_batch = in_batch;
        buf.n_neg = inp.negatives.len();
        let n_neg = inp.negatives.len() as f64;
        buf.cand_lnq.clear();
        for &c in &buf.cand {
            let q =
                in_batch as f64 * self.p_unigram[c as usize] + n_neg * self.p_sample[c as usize];
            buf.cand_lnq.push(
                if self.cfg.logq && self.cfg.loss == Gru4recLoss::SampledCe {
                    q.max(1e-30).ln()
                } else {
                    0.0
                },
            );
        }
        buf.wc.resize(&[k, h]);
        gather_rows(&mut buf.wc, &self.net.item_out.value, &buf.cand);
        buf.bc.clear();
        buf.bc.extend(
            buf.cand
                .iter()
                .map(|&c| self.net.item_bias.value.as_slice()[c as usize - 1]),
        );
        buf.dwc.resize(&[k, h]);
        buf.dwc.fill(T::ZERO);
        buf.dbc.clear();
        buf.dbc.resize(k, T::ZERO);
    }

    /// `ln q` of item `c` (1-based) as used for this step's candidates, for a positive column.
    fn lnq_of(&self, c: u32, in_batch: usize, n_neg: usize) -> f64 {
        if !self.cfg.logq || self.cfg.loss != Gru4recLoss::SampledCe {
            return 0.0;
        }
        let q =
            in_batch as f64 * self.p_unigram[c as usize] + n_neg as f64 * self.p_sample[c as usize];
        q.max(1e-30).ln()
    }

    /// Sampled loss of one chunk. Column 0 is the positive `hc·w_t + b_t`, columns `1..=K` the
    /// candidates `hc W_C^T + b_C`. `SampledCe`: all shifted by `-ln q`, a candidate equal to the
    /// positive is `-inf`, softmax cross-entropy on column 0. `BprMax`: no shift, a candidate equal to
    /// the positive is [`MASKED_SCORE`] (weight exactly 0 in BPR-max's softmax over the negatives).
    fn chunk_sampled(&mut self, start: usize, nc: usize, w: f64, grad: bool) -> f64 {
        let h = self.cfg.hidden_size;
        let k = self.buf.cand.len();
        let in_batch = self.buf.in_batch;
        let n_neg = self.buf.n_neg;
        let (loss_kind, bpreg) = (self.cfg.loss, self.cfg.bpreg);
        let masked = if loss_kind == Gru4recLoss::BprMax {
            T::from_f64(MASKED_SCORE)
        } else {
            T::NEG_INFINITY
        };
        let mut pos_lnq = std::mem::take(&mut self.buf.pos_lnq);
        pos_lnq.clear();
        pos_lnq.extend(
            self.buf.classes[start..start + nc]
                .iter()
                .map(|&c| self.lnq_of(c + 1, in_batch, n_neg)),
        );
        let buf = &mut self.buf;
        let net = &mut self.net;
        // cl = hc W_C^T + b_C
        buf.cl.resize(&[nc, k]);
        gemm(
            &mut buf.cl,
            T::ONE,
            &buf.hc,
            Transpose::No,
            &buf.wc,
            Transpose::Yes,
            T::ZERO,
        );
        add_bias_rows(&mut buf.cl, &buf.bc);
        buf.logits.resize(&[nc, 1 + k]);
        {
            let z = buf.logits.as_mut_slice();
            let out_w = net.item_out.value.as_slice();
            let out_b = net.item_bias.value.as_slice();
            for r in 0..nc {
                let cls = buf.classes[start + r] as usize;
                let hr = &buf.hc.as_slice()[r * h..(r + 1) * h];
                let wt = &out_w[cls * h..(cls + 1) * h];
                let pos = dot(hr, wt) + out_b[cls].to_f64();
                let zr = &mut z[r * (1 + k)..(r + 1) * (1 + k)];
                zr[0] = T::from_f64(pos - pos_lnq[r]);
                for j in 0..k {
                    zr[1 + j] = if buf.cand[j] as usize == cls + 1 {
                        masked
                    } else {
                        T::from_f64(buf.cl.as_slice()[r * k + j].to_f64() - buf.cand_lnq[j])
                    };
                }
            }
        }
        buf.pos_lnq = pos_lnq;
        buf.chunk_targets.clear();
        buf.chunk_targets.resize(nc, 0);
        let valid = &buf.valid[start..start + nc];
        if !grad {
            return match loss_kind {
                Gru4recLoss::BprMax => {
                    seqrec_nn::loss::bpr_max(None, &buf.logits, valid, bpreg).to_f64()
                }
                _ => seqrec_nn::loss::softmax_cross_entropy(
                    None,
                    &buf.logits,
                    &buf.chunk_targets,
                    u32::MAX,
                )
                .to_f64(),
            };
        }
        buf.dlogits.resize(&[nc, 1 + k]);
        let l = match loss_kind {
            Gru4recLoss::BprMax => {
                seqrec_nn::loss::bpr_max(Some(&mut buf.dlogits), &buf.logits, valid, bpreg).to_f64()
            }
            _ => seqrec_nn::loss::softmax_cross_entropy(
                Some(&mut buf.dlogits),
                &buf.logits,
                &buf.chunk_targets,
                u32::MAX,
            )
            .to_f64(),
        };
        let wt = T::from_f64(w);
        // Split dz into the candidate part (scaled by w, into `cl`) and the positive column.
        {
            let dz = buf.dlogits.as_slice();
            let dcl = buf.cl.as_mut_slice();
            for r in 0..nc {
                for j in 0..k {
                    dcl[r * k + j] = wt * dz[r * (1 + k) + 1 + j];
                }
            }
        }
        // dW_C += dcl^T hc; db_C += colsum(dcl)
        gemm(
            &mut buf.dwc,
            T::ONE,
            &buf.cl,
            Transpose::Yes,
            &buf.hc,
            Transpose::No,
            T::ONE,
        );
        col_sum_acc(&mut buf.dbc, &buf.cl, T::ONE);
        // dhc = dcl W_C + dpos w_t;  dW_out[t] += dpos hc;  db[t] += dpos
        buf.dhc.resize(&[nc, h]);
        gemm(
            &mut buf.dhc,
            T::ONE,
            &buf.cl,
            Transpose::No,
            &buf.wc,
            Transpose::No,
            T::ZERO,
        );
        let out_w = net.item_out.value.as_slice();
        let gw = net.item_out.grad.as_mut_slice();
        let gb = net.item_bias.grad.as_mut_slice();
        for r in 0..nc {
            let cls = buf.classes[start + r] as usize;
            let dpos = wt * buf.dlogits.as_slice()[r * (1 + k)];
            let hr = &buf.hc.as_slice()[r * h..(r + 1) * h];
            let dh = &mut buf.dhc.as_mut_slice()[r * h..(r + 1) * h];
            for j in 0..h {
                dh[j] += dpos * out_w[cls * h + j];
                gw[cls * h + j] += dpos * hr[j];
            }
            gb[cls] += dpos;
        }
        l
    }

    /// Adds the candidates' row and bias gradients into the output table's gradients.
    fn scatter_candidate_grads(&mut self) {
        let buf = &self.buf;
        scatter_add_rows(&mut self.net.item_out.grad, &buf.dwc, &buf.cand);
        let gb = self.net.item_bias.grad.as_mut_slice();
        for (&c, &g) in buf.cand.iter().zip(&buf.dbc) {
            gb[c as usize - 1] += g;
        }
    }

    /// Eval-mode scores of `batch` right-aligned histories into `[batch, n_items + 1]`
    /// (column 0 = `-inf`).
    fn score(&mut self, histories: &[u32], batch: usize, l: usize, scores: &mut [T]) {
        let d = self.input_table().cols();
        let h = self.cfg.hidden_size;
        let c = self.n_items;
        let buf = &mut self.buf;
        buf.x.resize(&[batch, l, d]);
        buf.y.resize(&[batch, l, h]);
        buf.mask.clear();
        buf.mask.extend(histories.iter().map(|&id| id != 0));
        let table = match &self.net.item_in {
            Some(p) => &p.value,
            None => &self.net.item_out.value,
        };
        gather_rows(&mut buf.x, table, histories);
        if buf.h_n.batch() != batch {
            buf.h_n = self.net.gru.zero_state(batch);
        }
        self.net.gru.forward(
            &mut buf.y,
            &mut buf.h_n,
            &mut buf.cache,
            &buf.x,
            Some(&buf.mask),
            None,
        );
        // Final state of the top layer, [batch, h].
        let layers = self.cfg.num_layers;
        buf.hc.resize(&[batch, h]);
        buf.hc
            .as_mut_slice()
            .copy_from_slice(&buf.h_n.h.as_slice()[(layers - 1) * batch * h..layers * batch * h]);
        buf.logits.resize(&[batch, c]);
        gemm(
            &mut buf.logits,
            T::ONE,
            &buf.hc,
            Transpose::No,
            &self.net.item_out.value,
            Transpose::Yes,
            T::ZERO,
        );
        add_bias_rows(&mut buf.logits, self.net.item_bias.value.as_slice());
        for (row, src) in scores
            .chunks_exact_mut(c + 1)
            .zip(buf.logits.as_slice().chunks_exact(c))
        {
            row[0] = T::NEG_INFINITY;
            row[1..].copy_from_slice(src);
        }
    }
}

/// `out[i] = table[ids[i] - 1]`, zeros where `ids[i] == 0`. `out`: `[.., d]` with `ids.len()` rows.
pub(crate) fn gather_rows<T: Float>(out: &mut Tensor<T>, table: &Tensor<T>, ids: &[u32]) {
    let d = table.cols();
    assert_eq!(out.numel(), ids.len() * d, "gather_rows: out vs ids");
    let src = table.as_slice();
    for (o, &id) in out.as_mut_slice().chunks_exact_mut(d).zip(ids) {
        if id == 0 {
            o.fill(T::ZERO);
        } else {
            let r = id as usize - 1;
            o.copy_from_slice(&src[r * d..(r + 1) * d]);
        }
    }
}

/// Backward of [`gather_rows`]: `grad[ids[i] - 1] += dout[i]`, skipping padding (repeats accumulate).
pub(crate) fn scatter_add_rows<T: Float>(grad: &mut Tensor<T>, dout: &Tensor<T>, ids: &[u32]) {
    let d = grad.cols();
    let g = grad.as_mut_slice();
    for (o, &id) in dout.as_slice().chunks_exact(d).zip(ids) {
        if id != 0 {
            let r = id as usize - 1;
            for (a, &b) in g[r * d..(r + 1) * d].iter_mut().zip(o) {
                *a += b;
            }
        }
    }
}

/// `y[r, :] += bias` for every row of `y` `[rows, bias.len()]`.
pub(crate) fn add_bias_rows<T: Float>(y: &mut Tensor<T>, bias: &[T]) {
    for row in y.as_mut_slice().chunks_exact_mut(bias.len()) {
        for (a, &b) in row.iter_mut().zip(bias) {
            *a += b;
        }
    }
}

/// `acc[j] += s * sum_r x[r, j]`.
pub(crate) fn col_sum_acc<T: Float>(acc: &mut [T], x: &Tensor<T>, s: T) {
    let c = acc.len();
    if c == 0 {
        return;
    }
    for row in x.as_slice().chunks_exact(c) {
        for (a, &v) in acc.iter_mut().zip(row) {
            *a += s * v;
        }
    }
}

/// `sum a_j b_j` in `f64`.
fn dot<T: Float>(a: &[T], b: &[T]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| x.to_f64() * y.to_f64())
        .sum()
}

/// GRU4Rec in `f32`, implementing [`Model`]. See the [module docs](self) for the architecture and
/// [`Gru4recConfig`] for the defaults.
///
/// Training batches ([`Gru4recConfig::batching`]) are [`SasrecBatcher`] windows of the last `maxlen`
/// items of each user (right-aligned, left-padded), shuffled by `(seed, epoch)`, every position with a
/// target scored; or session-parallel lanes ([`SessionParallel`], sequences shuffled by
/// `(seed, epoch)`) with the hidden state carried within a session and reset between sessions.
/// Dropout masks are keyed by `(seed, epoch, step)`, so the same seed gives the same run and a run
/// resumed from [`Model::save`] matches an uninterrupted one bit for bit.
///
/// ```
/// use seqrec_data::{Dataset, Sequences, Vocab};
/// use seqrec_models::{Gru4rec, Gru4recConfig, Model};
///
/// // Two users walking 1 -> 2 -> 3 -> 1 -> ...
/// let users = Vocab::from_originals(vec!["u1".into(), "u2".into()]).unwrap();
/// let items = Vocab::from_originals(vec!["a".into(), "b".into(), "c".into()]).unwrap();
/// let walk = |start: u32| (0..8).map(|t| (start + t) % 3 + 1).collect::<Vec<_>>();
/// let ds = Dataset::from_sequences(users, items, vec![
///     (walk(0), (0..8).collect()),
///     (walk(1), (0..8).collect()),
/// ]).unwrap();
/// let train = Sequences::all(&ds);
/// let cfg = Gru4recConfig { hidden_size: 8, embedding_dim: 8, maxlen: 8, lr: 0.05, ..Default::default() };
/// let mut model = Gru4rec::new(cfg, &train, 0).unwrap();
/// let first = model.train_epoch(&train, 0, &mut |_| {}).unwrap().loss;
/// let mut last = first;
/// for epoch in 1..30 {
///     last = model.train_epoch(&train, epoch, &mut |_| {}).unwrap().loss;
/// }
/// assert!(last < first);
/// // Score the history [.., 1, 2]: item 3 comes next.
/// let mut history = vec![0u32; 8];
/// history[6..].copy_from_slice(&[1, 2]);
/// let mut scores = vec![0.0f32; 4];
/// model.score(&history, 1, &mut scores);
/// assert!(scores[3] > scores[1] && scores[3] > scores[2]);
/// ```
#[derive(Clone, Debug)]
pub struct Gru4rec {
    core: Core<f32>,
    adam: AdamState<f32>,
    /// Popularity sampler of the shared negatives (`SampledCe` only).
    sampler: Option<NegativeSampler>,
    seed: u64,
}

/// What `gru4rec.json` holds next to the tensors.
#[derive(Debug, Serialize, Deserialize)]
struct SavedState {
    n_items: usize,
    adam_steps: u64,
    config: Gru4recConfig,
}

const FILES: CheckpointFiles = CheckpointFiles {
    params: "gru4rec.safetensors",
    optim: "gru4rec.adam.safetensors",
    state: "gru4rec.json",
};

impl Gru4rec {
    /// Builds the model for the catalogue of `train`, initialised from `seed`.
    ///
    /// # Errors
    /// [`ModelError::Config`] for an invalid `config` (see [`Gru4recConfig::validate`]);
    /// [`ModelError::Data`] if the catalogue is empty or, with `SampledCe`, no item occurs in `train`.
    pub fn new(
        config: Gru4recConfig,
        train: &Sequences<'_>,
        seed: u64,
    ) -> Result<Self, ModelError> {
        config.validate()?;
        let counts = item_counts(train);
        let sampler = match config.loss {
            Gru4recLoss::Ce => None,
            Gru4recLoss::SampledCe | Gru4recLoss::BprMax => Some(
                NegativeSampler::popularity(&counts, config.sample_alpha)
                    .map_err(|e| ModelError::Data(format!("gru4rec negative sampler: {e}")))?,
            ),
        };
        let core = Core::new(config, &counts, seed)?;
        let adam = AdamState::new(
            &core.net,
            AdamHyper {
                lr: core.cfg.lr,
                beta1: core.cfg.beta1,
                beta2: core.cfg.beta2,
                eps: core.cfg.eps,
                weight_decay: core.cfg.weight_decay,
            },
        );
        Ok(Self {
            core,
            adam,
            sampler,
            seed,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &Gru4recConfig {
        &self.core.cfg
    }

    /// Number of trainable scalars.
    pub fn num_params(&self) -> usize {
        self.core.net.num_params()
    }

    /// Optimizer steps taken so far.
    pub fn optimizer_steps(&self) -> u64 {
        self.adam.steps
    }

    /// Visits every parameter (names as in the checkpoint: `item_in.weight`, `gru.weight_ih_l0`, ...,
    /// `item_out.weight`, `item_out.bias`).
    pub fn visit_params(&self, f: &mut dyn FnMut(&Param<f32>)) {
        self.core.net.visit_params(f);
    }

    /// One epoch of session-parallel mini-batches (see [`Gru4recBatching::SessionParallel`]).
    fn train_epoch_sessions(
        &mut self,
        train: &Sequences<'_>,
        epoch: usize,
        on_step: &mut dyn FnMut(&StepReport),
    ) -> Result<EpochReport, ModelError> {
        let cfg = self.core.cfg.clone();
        let data_err = |e: seqrec_data::BatchError| ModelError::Data(format!("gru4rec lanes: {e}"));
        let mut lanes = SessionParallel::new(train.clone(), cfg.batch_size, Some(self.seed), None)
            .map_err(data_err)?;
        if lanes.n_sequences() == 0 {
            return Err(ModelError::Data(
                "gru4rec: no training sequence has two or more items".into(),
            ));
        }
        // The number of steps, for progress reports: a dry run of the lanes (ids only, cheap).
        lanes.start_epoch(epoch as u64);
        let mut steps = 0;
        while lanes.next_step().is_some() {
            steps += 1;
        }
        if let Some(s) = &self.sampler {
            lanes = lanes
                .with_shared_negatives(cfg.n_negatives, s.clone(), self.seed)
                .map_err(data_err)?;
        }
        lanes.start_epoch(epoch as u64);
        self.core.carried = None;
        self.core.drop_emb.train();
        self.core.drop_hid.train();
        let mut tally = EpochTally::new(steps, on_step);
        while let Some(batch) = lanes.next_step() {
            let (step, counter) = (tally.step(), step_key(epoch, tally.step()));
            self.core.drop_emb.set_counter(counter);
            self.core.drop_hid.set_counter(counter);
            self.core.net.zero_grad();
            let input = StepInput {
                b: batch.lanes,
                l: 1,
                inputs: &batch.inputs,
                targets: &batch.targets,
                negatives: &batch.negatives,
            };
            let loss = self.core.session_step(&input, &batch.reset, true);
            let clip = self.core.cfg.clip_grad_norm;
            self.adam
                .finish_step(&mut self.core.net, loss, clip, epoch, step)?;
            tally.record(loss, batch.reset.iter().filter(|&&r| r).count());
        }
        self.core.carried = None;
        Ok(tally.finish())
    }
}

impl Model for Gru4rec {
    fn name(&self) -> &'static str {
        "gru4rec"
    }

    fn n_items(&self) -> usize {
        self.core.n_items
    }

    fn max_history(&self) -> usize {
        self.core.cfg.maxlen
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
        if train.n_items() != self.core.n_items {
            return Err(ModelError::Data(format!(
                "gru4rec was built for {} items but the training sequences have {}",
                self.core.n_items,
                train.n_items()
            )));
        }
        let cfg = self.core.cfg.clone();
        if cfg.batching == Gru4recBatching::SessionParallel {
            return self.train_epoch_sessions(train, epoch, on_step);
        }
        let negatives = match &self.sampler {
            None => Negatives::None,
            Some(s) => Negatives::Shared {
                n: cfg.n_negatives,
                sampler: s.clone(),
            },
        };
        let mut batcher = SasrecBatcher::new(
            train.clone(),
            SasrecConfig {
                batch_size: cfg.batch_size,
                maxlen: cfg.maxlen,
                window: WindowMode::Last,
                negatives,
                shuffle: true,
                seed: self.seed,
                context: None,
            },
        )
        .map_err(|e| ModelError::Data(format!("gru4rec batches: {e}")))?;
        batcher.start_epoch(epoch as u64);
        let steps = batcher.n_batches();
        if steps == 0 {
            return Err(ModelError::Data(
                "gru4rec: no training sequence has two or more items".into(),
            ));
        }
        self.core.drop_emb.train();
        self.core.drop_hid.train();
        let mut tally = EpochTally::new(steps, on_step);
        while let Some(batch) = batcher
            .next_batch()
            .map_err(|e| ModelError::Data(format!("gru4rec batches: {e}")))?
        {
            // Dropout keys from (seed, epoch, step): a resumed run draws the same masks.
            let (step, counter) = (tally.step(), step_key(epoch, tally.step()));
            self.core.drop_emb.set_counter(counter);
            self.core.drop_hid.set_counter(counter);
            self.core.net.zero_grad();
            let input = StepInput {
                b: batch.batch_size,
                l: batch.maxlen,
                inputs: &batch.inputs,
                targets: &batch.targets,
                negatives: &batch.negatives,
            };
            let loss = self.core.step(&input, true);
            self.adam
                .finish_step(&mut self.core.net, loss, cfg.clip_grad_norm, epoch, step)?;
            tally.record(loss, batch.rows);
        }
        Ok(tally.finish())
    }

    /// # Panics
    /// If `histories` is not `[batch, max_history()]`, `scores` not `[batch, n_items + 1]`, or a
    /// history holds an id above `n_items` (the evaluation batcher checks ids once, upstream).
    fn score(&mut self, histories: &[u32], batch: usize, scores: &mut [f32]) {
        let l = self.core.cfg.maxlen;
        let n = self.core.n_items;
        assert_eq!(
            histories.len(),
            batch * l,
            "Gru4rec::score: histories must be [batch = {batch}, maxlen = {l}]"
        );
        assert_eq!(
            scores.len(),
            batch * (n + 1),
            "Gru4rec::score: scores must be [batch = {batch}, n_items + 1 = {}]",
            n + 1
        );
        if let Some(&bad) = histories.iter().find(|&&id| id as usize > n) {
            panic!("Gru4rec::score: item id {bad} is out of range for {n} items");
        }
        if batch == 0 {
            return;
        }
        self.core.score(histories, batch, l, scores);
    }

    fn recurrent(&mut self) -> Option<&mut dyn crate::model::Recurrent> {
        Some(self)
    }

    fn save(&self, dir: &Path) -> Result<(), ModelError> {
        let state = SavedState {
            n_items: self.core.n_items,
            adam_steps: self.adam.steps,
            config: self.core.cfg.clone(),
        };
        FILES.save(dir, &self.core.net, &self.adam, &state)
    }

    fn load(&mut self, dir: &Path) -> Result<(), ModelError> {
        let (state, path): (SavedState, _) = FILES.read_state(dir)?;
        check_n_items(&path, state.n_items, self.core.n_items)?;
        FILES.load_net_and_adam(dir, &mut self.core.net, &mut self.adam, state.adam_steps)
    }
}

// Serving: one GRU step per event on a carried hidden state (kept in its own impl block).
impl crate::model::Recurrent for Gru4rec {
    fn state_len(&self) -> usize {
        self.core.cfg.num_layers * self.core.cfg.hidden_size
    }

    fn init_state(&self, state: &mut [f32]) {
        assert_eq!(
            state.len(),
            self.state_len(),
            "Gru4rec::init_state: state length"
        );
        state.fill(0.0);
    }

    fn step(&mut self, state: &mut [f32], item: u32) {
        let n = self.core.n_items;
        assert_eq!(state.len(), self.state_len(), "Gru4rec::step: state length");
        assert!(
            (1..=n as u32).contains(&item),
            "Gru4rec::step: item {item} out of range 1..={n}"
        );
        let h = self.core.cfg.hidden_size;
        let table = self.core.input_table();
        let d = table.cols();
        let r = item as usize - 1;
        let x = Tensor::from_vec(&[1, d], table.as_slice()[r * d..(r + 1) * d].to_vec())
            .expect("one row of the input table");
        let gru = &self.core.net.gru;
        // State [layers, 1, h] is exactly the flat layout of `state`.
        let mut st = gru.zero_state(1);
        st.h.as_mut_slice().copy_from_slice(state);
        let mut out = Tensor::zeros(&[1, h]);
        gru.step(&mut st, &x, &mut out);
        state.copy_from_slice(st.h.as_slice());
    }

    fn score_states(&mut self, states: &[f32], batch: usize, scores: &mut [f32]) {
        let (h, layers, c) = (
            self.core.cfg.hidden_size,
            self.core.cfg.num_layers,
            self.core.n_items,
        );
        assert_eq!(
            states.len(),
            batch * layers * h,
            "Gru4rec::score_states: states"
        );
        assert_eq!(
            scores.len(),
            batch * (c + 1),
            "Gru4rec::score_states: scores"
        );
        if batch == 0 {
            return;
        }
        // Top layer of each state, [batch, h].
        let mut top = Tensor::zeros(&[batch, h]);
        for (row, st) in top
            .as_mut_slice()
            .chunks_exact_mut(h)
            .zip(states.chunks_exact(layers * h))
        {
            row.copy_from_slice(&st[(layers - 1) * h..]);
        }
        let mut logits = Tensor::zeros(&[batch, c]);
        gemm(
            &mut logits,
            1.0,
            &top,
            Transpose::No,
            &self.core.net.item_out.value,
            Transpose::Yes,
            0.0,
        );
        add_bias_rows(&mut logits, self.core.net.item_bias.value.as_slice());
        for (row, src) in scores
            .chunks_exact_mut(c + 1)
            .zip(logits.as_slice().chunks_exact(c))
        {
            row[0] = f32::NEG_INFINITY;
            row[1..].copy_from_slice(src);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use seqrec_nn::gradcheck::{GradTolerance, check_module};

    /// A tiny f64 core with dropout 0, `n_items` items and the given loss.
    fn tiny(loss: Gru4recLoss, layers: usize, constrained: bool) -> Core<f64> {
        let cfg = Gru4recConfig {
            embedding_dim: if constrained { 4 } else { 3 },
            hidden_size: 4,
            num_layers: layers,
            constrained_embedding: constrained,
            dropout_embedding: 0.0,
            dropout_hidden: 0.0,
            loss,
            n_negatives: 4,
            batch_size: 3,
            maxlen: 5,
            ..Gru4recConfig::default()
        };
        let counts = [0u32, 5, 3, 1, 8, 2, 2, 4];
        let mut core = Core::<f64>::new(cfg, &counts, 11).unwrap();
        core.chunk_rows = 3; // several chunks, one short
        // Non-zero output biases so their gradient paths matter.
        for (i, b) in core
            .net
            .item_bias
            .value
            .as_mut_slice()
            .iter_mut()
            .enumerate()
        {
            *b = 0.1 * i as f64 - 0.3;
        }
        core
    }

    /// Rows: fully padded, left-padded (3 real), full with one masked target.
    const INPUTS: [u32; 15] = [0, 0, 0, 0, 0, 0, 0, 3, 1, 7, 2, 4, 4, 6, 1];
    const TARGETS: [u32; 15] = [0, 0, 0, 0, 0, 0, 0, 1, 7, 2, 0, 4, 6, 1, 3];
    /// Shared negatives: a duplicate, one equal to positives (masked), one new item.
    const NEGS: [u32; 4] = [5, 5, 3, 1];

    fn check(mut core: Core<f64>) {
        let inp = StepInput {
            b: 3,
            l: 5,
            inputs: &INPUTS,
            targets: &TARGETS,
            negatives: &NEGS,
        };
        core.net.zero_grad();
        let loss = core.step(&inp, true);
        assert!(loss.is_finite() && loss > 0.0, "loss {loss}");
        // The forward-only loss equals the training loss.
        assert_eq!(core.clone().step(&inp, false), loss);
        let mut net = core.net.clone();
        let errors = check_module(&mut net, GradTolerance::STRICT, &mut |n| {
            core.net.clone_from(n);
            core.step(&inp, false)
        });
        for e in &errors {
            assert!(e.passes(), "{e}");
        }
        // Every parameter received some gradient (padding rows excepted).
        let mut nonzero = 0;
        net.visit_params(&mut |p| {
            nonzero += usize::from(p.grad.as_slice().iter().any(|&g| g != 0.0));
        });
        assert_eq!(nonzero, errors.len());
    }

    #[test]
    fn gradcheck_ce_whole_model_f64() {
        check(tiny(Gru4recLoss::Ce, 1, false));
        check(tiny(Gru4recLoss::Ce, 2, true));
    }

    #[test]
    fn gradcheck_sampled_ce_whole_model_f64() {
        check(tiny(Gru4recLoss::SampledCe, 1, false));
        check(tiny(Gru4recLoss::SampledCe, 2, true));
    }

    /// BPR-max with `bpreg = 1` through the whole model, with shared negatives that repeat and that
    /// equal some positions' positives (masked with [`MASKED_SCORE`]).
    #[test]
    fn gradcheck_bpr_max_whole_model_f64() {
        check(tiny(Gru4recLoss::BprMax, 1, false));
        check(tiny(Gru4recLoss::BprMax, 2, true));
    }

    /// The BPR-max step loss equals the formula evaluated by hand on the model's own scores:
    /// `-ln(sum_j w_j σ(x0 - x_j) + 1e-24) + λ sum_j w_j x_j²`, `w = softmax` over the candidates
    /// other than the positive, averaged over positions.
    #[test]
    fn bpr_max_loss_matches_the_formula_on_model_scores() {
        let mut core = tiny(Gru4recLoss::BprMax, 1, false);
        core.cfg.bpreg = 0.5;
        let inp = StepInput {
            b: 3,
            l: 5,
            inputs: &INPUTS,
            targets: &TARGETS,
            negatives: &NEGS,
        };
        let loss = core.step(&inp, false);
        // Candidates: the rows' last targets (none, 2, 3), then the negatives 5, 5, 3, 1,
        // de-duplicated.
        let cand = [2u32, 3, 5, 1];
        // Hidden states of every position via the same forward.
        let h = core.cfg.hidden_size;
        let y = core.buf.yd.to_vec();
        let w_out = core.net.item_out.value.to_vec();
        let b_out = core.net.item_bias.value.to_vec();
        let score = |pos: usize, item: u32| {
            let r = item as usize - 1;
            (0..h)
                .map(|j| y[pos * h + j] * w_out[r * h + j])
                .sum::<f64>()
                + b_out[r]
        };
        let (mut sum, mut n) = (0.0, 0);
        for (pos, &t) in TARGETS.iter().enumerate() {
            if t == 0 {
                continue;
            }
            let x0 = score(pos, t);
            let neg: Vec<f64> = cand
                .iter()
                .filter(|&&c| c != t)
                .map(|&c| score(pos, c))
                .collect();
            let m = neg.iter().cloned().fold(f64::MIN, f64::max);
            let z: f64 = neg.iter().map(|v| (v - m).exp()).sum();
            let (mut sg, mut reg) = (0.0, 0.0);
            for v in &neg {
                let w = (v - m).exp() / z;
                sg += w / (1.0 + (-(x0 - v)).exp());
                reg += w * v * v;
            }
            sum += -(sg + 1e-24).ln() + 0.5 * reg;
            n += 1;
        }
        assert!(
            (loss - sum / n as f64).abs() < 1e-12,
            "{loss} vs {}",
            sum / n as f64
        );
    }

    /// Session-parallel lanes: at every step, the carried state of every active lane equals the
    /// state of a fresh GRU run over that lane's session prefix alone. So a lane's state after a
    /// reset is a fresh state and no session leaks into the next one in its lane (checked to be
    /// non-trivial: at resets the lane held a non-zero state from the previous session).
    #[test]
    #[allow(clippy::needless_range_loop)] // lanes index several parallel arrays
    fn session_parallel_resets_lanes_and_sessions_do_not_leak() {
        use seqrec_data::{Dataset, SessionParallel, Vocab};
        let sessions: Vec<Vec<u32>> = vec![
            vec![1, 2, 3],
            vec![4, 5, 6, 7, 1],
            vec![2, 2],
            vec![7, 6, 5, 4],
            vec![3, 1, 4, 1, 5, 2],
            vec![6, 7],
            vec![5, 3, 1],
        ];
        let users =
            Vocab::from_originals((0..sessions.len()).map(|u| u.to_string()).collect()).unwrap();
        let items = Vocab::from_originals((1..=7).map(|i| i.to_string()).collect()).unwrap();
        let ds = Dataset::from_sequences(
            users,
            items,
            sessions
                .iter()
                .map(|s| (s.clone(), (0..s.len() as i64).collect()))
                .collect(),
        )
        .unwrap();
        for layers in [1, 2] {
            let mut core = tiny(Gru4recLoss::Ce, layers, false);
            let h = core.cfg.hidden_size;
            let mut lanes = SessionParallel::new(Sequences::all(&ds), 2, Some(3), None).unwrap();
            lanes.start_epoch(0);
            let (mut resets_checked, mut steps) = (0, 0);
            // The items each lane has consumed in its current session.
            let mut seen: Vec<Vec<u32>> = vec![Vec::new(); 2];
            while let Some(batch) = lanes.next_step() {
                for lane in 0..2 {
                    if batch.reset[lane] {
                        if let Some(c) = &core.carried
                            && !seen[lane].is_empty()
                        {
                            let top = (layers - 1) * 2 + lane;
                            assert!(
                                c.h.as_slice()[top * h..(top + 1) * h]
                                    .iter()
                                    .any(|&v| v != 0.0)
                            );
                            resets_checked += 1;
                        }
                        seen[lane].clear();
                    }
                    if batch.active[lane] {
                        seen[lane].push(batch.inputs[lane]);
                    }
                }
                let inp = StepInput {
                    b: 2,
                    l: 1,
                    inputs: &batch.inputs,
                    targets: &batch.targets,
                    negatives: &[],
                };
                core.session_step(&inp, &batch.reset, false);
                steps += 1;
                let carried = core.carried.clone().unwrap();
                for lane in 0..2 {
                    if !batch.active[lane] {
                        continue;
                    }
                    let fresh = fresh_state(&mut core.clone(), &seen[lane]);
                    for layer in 0..layers {
                        let o = (layer * 2 + lane) * h;
                        let got = &carried.h.as_slice()[o..o + h];
                        let want = &fresh[layer * h..(layer + 1) * h];
                        for (a, b) in got.iter().zip(want) {
                            assert!(
                                (a - b).abs() < 1e-12,
                                "step {steps} lane {lane}: {a} vs {b}"
                            );
                        }
                    }
                }
            }
            // 7 sessions of 3+5+2+4+6+2+3 events give 18 (input, target) pairs over 2 lanes.
            assert!(steps >= 9, "{steps}");
            assert!(resets_checked >= 3, "{resets_checked}");
        }
    }

    /// The final state `[layers, h]` of a GRU run over `items` alone, from the zero state.
    fn fresh_state(core: &mut Core<f64>, items: &[u32]) -> Vec<f64> {
        let d = core.input_table().cols();
        let h = core.cfg.hidden_size;
        let l = items.len();
        let mut x = Tensor::zeros(&[1, l, d]);
        gather_rows(&mut x, core.input_table(), items);
        let mut y = Tensor::zeros(&[1, l, h]);
        let mut state = core.net.gru.zero_state(1);
        let mut cache = core.net.gru.new_cache(1, l);
        core.net
            .gru
            .forward(&mut y, &mut state, &mut cache, &x, None, None);
        state.h.to_vec()
    }

    /// Parameter gradients accumulate: two backward passes without `zero_grad` give twice the
    /// gradient of one (the project's `+=` rule), for both losses.
    #[test]
    fn parameter_gradients_accumulate() {
        for loss in [Gru4recLoss::Ce, Gru4recLoss::SampledCe, Gru4recLoss::BprMax] {
            let mut core = tiny(loss, 2, false);
            let inp = StepInput {
                b: 3,
                l: 5,
                inputs: &INPUTS,
                targets: &TARGETS,
                negatives: &NEGS,
            };
            core.net.zero_grad();
            core.step(&inp, true);
            let mut once = Vec::new();
            core.net.visit_params(&mut |p| once.push(p.grad.to_vec()));
            core.step(&inp, true);
            let mut k = 0;
            core.net.visit_params(&mut |p| {
                for (a, b) in p.grad.as_slice().iter().zip(&once[k]) {
                    assert!((a - 2.0 * b).abs() <= 1e-12 * (1.0 + b.abs()), "{}", p.name);
                }
                k += 1;
            });
        }
    }

    /// Padding items never receive gradient: a padded row's inputs leave the tables untouched.
    #[test]
    fn fully_padded_batch_has_zero_loss_and_gradient() {
        let mut core = tiny(Gru4recLoss::Ce, 1, false);
        let zeros = [0u32; 15];
        let inp = StepInput {
            b: 3,
            l: 5,
            inputs: &zeros,
            targets: &zeros,
            negatives: &[],
        };
        core.net.zero_grad();
        assert_eq!(core.step(&inp, true), 0.0);
        core.net
            .visit_params(&mut |p| assert!(p.grad.as_slice().iter().all(|&g| g == 0.0)));
    }
}
