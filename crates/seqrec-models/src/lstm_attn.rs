//! [`LstmAttn`]: item embedding -> LSTM encoder -> attention pooling over the hidden states -> MLP
//! head -> scores over all items, with optional fusion of per-event context features (time-gap bucket
//! and position, `seqrec_data::context`).
//!
//! Architecture, per position `t` of a left-padded window of `maxlen` events (`m` = real event):
//! ```text
//! e_t  = E[i_t]                                  item embedding [d]
//! τ_t  = T[gap bucket_t],  π_t = P[position_t]   context embeddings [c] (context != none)
//! x_t  = e_t | e_t + τ_t + π_t | [e_t; τ_t; π_t] none/attention | add | concat
//! x̃_t  = dropout_emb(x_t)
//! y_t  = LSTM(x̃_t, y_{t-1})                      1+ layers, padded steps carry the state
//! k_t  = y_t | [y_t; τ_t; π_t]                   attention keys: context-conditioned for `attention`
//! s_t  = v^T tanh(W k_t + b)                     additive attention score (Bahdanau)
//! p_t  = sum_{u<=t, m_u} softmax_{u<=t}(s)_u y_u causal pooling over the prefix
//! q_t  = dropout_hidden([p_t; y_t])              pooled summary and last state [2h]
//! o_t  = W2 relu(W1 q_t + b1) + b2               MLP head [d]
//! z_t  = o_t O^T + b_out                         scores of all items; O = E when `tied`
//! ```
//! Loss: full softmax cross-entropy on the next item at every position with a target.
//!
//! **Training on every position.** The attention score `s_u` depends only on event `u` (the query `v`
//! is a learned constant, and the context of `attention` fusion is the context *of event `u`*), so the
//! pooled summary of every prefix is a running softmax-weighted mean: one left-to-right scan with a
//! running max (online softmax) gives all `p_t` in `O(maxlen * h)` per sequence, and one
//! right-to-left scan gives the backward. Training therefore scores every position of the window
//! (like SASRec and GRU4Rec here) at the price of one position, instead of the `O(maxlen^2)` of
//! re-pooling each prefix or the waste of training only the last target. At inference `p` of the
//! last position is exactly the whole-history attention pooling.
//!
//! **Context.** Time-gap buckets come from the dataset's timestamps; positions count from the start
//! of the user's sequence ([`PositionFrom::Start`], capped at `max_position`): a position counted from
//! the end would change with every prefix and break the one-scan training above. Training batches get
//! both from `SasrecBatcher`; scoring gets them through [`Model::score_with_context`], which
//! `seqrec-train`'s evaluation calls for any model whose [`Model::context`] is `Some`. The ids-only
//! [`Model::score`] cannot know the times: it uses positions within the given window and no time
//! feature (the zero vector), so use `score_with_context` whenever context is on.

use std::path::Path;

use seqrec_data::{
    ContextConfig, PositionFrom, SasrecBatcher, SasrecConfig as BatchConfig, Sequences, WindowMode,
};
use seqrec_nn::{
    Dropout, DropoutCache, Linear, Lstm, Module, Param, RnnCache, RnnConfig, RnnState, init::Rng,
};
use seqrec_tensor::{
    Float, Tensor, Transpose, gemm, relu_backward, relu_forward, splitmix64, tanh_backward,
    tanh_forward,
};
use serde::{Deserialize, Serialize};

use crate::adam::{AdamHyper, AdamState};
use crate::epoch::{EpochTally, step_key};
use crate::gru4rec::{add_bias_rows, col_sum_acc, gather_rows, scatter_add_rows};
use crate::model::{EpochReport, HistoryContext, Model, ModelError, StepReport};
use crate::persist::{CheckpointFiles, check_n_items, ckpt_err};

/// Positions per chunk of the output layer (bounds the `[chunk, n_items]` logits buffer).
const CHUNK_ROWS: usize = 1024;

/// How per-event context features enter [`LstmAttn`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContextFusion {
    /// Items only.
    None,
    /// `[item; time; position]` embeddings concatenated at the LSTM input (`embedding_dim + 2 context_dim`).
    Concat,
    /// `item + time + position` embeddings added at the LSTM input (`context_dim` is `embedding_dim`).
    Add,
    /// Context-conditioned pooling: attention keys `[y_t; time; position]`, LSTM input items only.
    Attention,
}

/// Settings of [`LstmAttn`]. Defaults: the GRU4Rec-sized encoder of this crate (64 units, one layer,
/// Adam 1e-2, batch 128, windows of 200) with a 64-unit attention and a 128-unit MLP head.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LstmAttnConfig {
    /// Item embedding width `d` (also the MLP output width). Default 64.
    pub embedding_dim: usize,
    /// LSTM hidden units `h`. Default 64.
    pub hidden_size: usize,
    /// Stacked LSTM layers. Default 1.
    pub num_layers: usize,
    /// Width of the attention projection `W`. Default 64.
    pub attention_dim: usize,
    /// Hidden width of the MLP head. Default 128.
    pub mlp_hidden: usize,
    /// Score items with the input item embedding (`O = E`) instead of a separate output table.
    /// Default true.
    pub tied: bool,
    /// Context fusion. Default [`ContextFusion::None`].
    pub context: ContextFusion,
    /// Width `c` of the time and position embeddings for `concat` and `attention` (`add` uses
    /// `embedding_dim`). Default 16.
    pub context_dim: usize,
    /// Time-gap buckets, padding and "first event" included (`seqrec_data::context`; >= 3). Default 24.
    pub n_time_buckets: u32,
    /// Largest position id (positions from the sequence start are capped here; >= 1). Default 512.
    pub max_position: u32,
    /// Dropout on the LSTM input, in `[0, 1)`. Default 0.1.
    pub dropout_embedding: f64,
    /// Dropout on the MLP input `[p_t; y_t]`, in `[0, 1)`. Default 0.1.
    pub dropout_hidden: f64,
    /// Training sequences per batch. Default 128.
    pub batch_size: usize,
    /// Window length: the last `maxlen` events of each user, every position a target. Default 200.
    pub maxlen: usize,
    /// Adam learning rate. Default 1e-2 (as GRU4Rec here: on ML-1M it reaches test NDCG@10 0.177 in
    /// 42 epochs, `docs/benchmarks.md`).
    pub lr: f64,
    /// Adam `beta1`. Default 0.9.
    pub beta1: f64,
    /// Adam `beta2`. Default 0.999.
    pub beta2: f64,
    /// Adam `eps` (outside the square root, as PyTorch). Default 1e-8.
    pub eps: f64,
    /// L2 weight decay added to the gradient. Default 0.
    pub weight_decay: f64,
    /// Clip the global gradient norm to this value; `None` disables. Default `Some(5.0)` (LSTMs
    /// trained through 200 steps occasionally spike).
    pub clip_grad_norm: Option<f64>,
}

impl Default for LstmAttnConfig {
    fn default() -> Self {
        Self {
            embedding_dim: 64,
            hidden_size: 64,
            num_layers: 1,
            attention_dim: 64,
            mlp_hidden: 128,
            tied: true,
            context: ContextFusion::None,
            context_dim: 16,
            n_time_buckets: 24,
            max_position: 512,
            dropout_embedding: 0.1,
            dropout_hidden: 0.1,
            batch_size: 128,
            maxlen: 200,
            lr: 1e-2,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            clip_grad_norm: Some(5.0),
        }
    }
}

impl LstmAttnConfig {
    /// Checks every field.
    ///
    /// # Errors
    /// [`ModelError::Config`] naming the first bad field and its value.
    pub fn validate(&self) -> Result<(), ModelError> {
        let bad = |field: &str, value: &dyn std::fmt::Display, why: &str| {
            Err(ModelError::Config(format!(
                "lstm_attn.{field} = {value}: {why}"
            )))
        };
        for (field, v) in [
            ("embedding_dim", self.embedding_dim),
            ("hidden_size", self.hidden_size),
            ("num_layers", self.num_layers),
            ("attention_dim", self.attention_dim),
            ("mlp_hidden", self.mlp_hidden),
            ("context_dim", self.context_dim),
            ("batch_size", self.batch_size),
            ("maxlen", self.maxlen),
        ] {
            if v == 0 {
                return bad(field, &v, "must be at least 1");
            }
        }
        if self.n_time_buckets < 3 {
            return bad("n_time_buckets", &self.n_time_buckets, "must be at least 3");
        }
        if self.max_position == 0 {
            return bad("max_position", &self.max_position, "must be at least 1");
        }
        for (field, p) in [
            ("dropout_embedding", self.dropout_embedding),
            ("dropout_hidden", self.dropout_hidden),
        ] {
            if !(0.0..1.0).contains(&p) {
                return bad(field, &p, "must be in [0, 1)");
            }
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

    /// The context features the model reads (`None` without context fusion).
    pub fn context_config(&self) -> Option<ContextConfig> {
        (self.context != ContextFusion::None).then(|| {
            ContextConfig::new(self.n_time_buckets, PositionFrom::Start, self.max_position)
                .expect("validated: n_time_buckets >= 3 and max_position >= 1")
        })
    }

    /// The fields that fix the parameter shapes and the meaning of the context features:
    /// `(embedding_dim, hidden_size, num_layers, attention_dim, mlp_hidden, tied, context,
    /// context_dim, n_time_buckets, max_position)`.
    #[allow(clippy::type_complexity)]
    fn architecture(
        &self,
    ) -> (
        usize,
        usize,
        usize,
        usize,
        usize,
        bool,
        ContextFusion,
        usize,
        u32,
        u32,
    ) {
        (
            self.embedding_dim,
            self.hidden_size,
            self.num_layers,
            self.attention_dim,
            self.mlp_hidden,
            self.tied,
            self.context,
            self.ctx_dim(),
            self.n_time_buckets,
            self.max_position,
        )
    }

    /// Width of the context embeddings (`embedding_dim` for `add`).
    fn ctx_dim(&self) -> usize {
        if self.context == ContextFusion::Add {
            self.embedding_dim
        } else {
            self.context_dim
        }
    }

    /// Width of the LSTM input.
    fn lstm_input(&self) -> usize {
        match self.context {
            ContextFusion::Concat => self.embedding_dim + 2 * self.context_dim,
            _ => self.embedding_dim,
        }
    }

    /// Width of the attention keys.
    fn key_dim(&self) -> usize {
        match self.context {
            ContextFusion::Attention => self.hidden_size + 2 * self.context_dim,
            _ => self.hidden_size,
        }
    }
}

/// The parameters, generic over the element type so the whole model can be gradient-checked in `f64`.
#[derive(Clone, Debug)]
struct Net<T> {
    /// `item_emb.weight` `[n_items, d]` (row `i - 1` is item `i`).
    item_emb: Param<T>,
    /// `time_emb.weight` `[n_time_buckets - 1, c]` and `pos_emb.weight` `[max_position, c]` (row
    /// `k - 1` is id `k`; id 0 = padding embeds to zeros); `None` without context.
    time_emb: Option<Param<T>>,
    pos_emb: Option<Param<T>>,
    lstm: Lstm<T>,
    /// `att.proj` `[a, key_dim]` + bias, `att.score` `[1, a]` (v^T, no bias).
    att_proj: Linear<T>,
    att_score: Linear<T>,
    /// `mlp.0` `[m, 2h]`, `mlp.2` `[d, m]`.
    mlp1: Linear<T>,
    mlp2: Linear<T>,
    /// `item_out.weight` `[n_items, d]` (untied only) and `item_out.bias` `[n_items]`.
    item_out: Option<Param<T>>,
    item_bias: Param<T>,
}

impl<T: Float> Module<T> for Net<T> {
    fn visit_params(&self, f: &mut dyn FnMut(&Param<T>)) {
        f(&self.item_emb);
        if let Some(p) = &self.time_emb {
            f(p);
        }
        if let Some(p) = &self.pos_emb {
            f(p);
        }
        self.lstm.visit_params(f);
        self.att_proj.visit_params(f);
        self.att_score.visit_params(f);
        self.mlp1.visit_params(f);
        self.mlp2.visit_params(f);
        if let Some(p) = &self.item_out {
            f(p);
        }
        f(&self.item_bias);
    }

    fn visit_params_mut(&mut self, f: &mut dyn FnMut(&mut Param<T>)) {
        f(&mut self.item_emb);
        if let Some(p) = &mut self.time_emb {
            f(p);
        }
        if let Some(p) = &mut self.pos_emb {
            f(p);
        }
        self.lstm.visit_params_mut(f);
        self.att_proj.visit_params_mut(f);
        self.att_score.visit_params_mut(f);
        self.mlp1.visit_params_mut(f);
        self.mlp2.visit_params_mut(f);
        if let Some(p) = &mut self.item_out {
            f(p);
        }
        f(&mut self.item_bias);
    }
}

/// Activation buffers, allocated once and reshaped per step. Names follow the module docs; `d*`
/// buffers hold gradients.
#[derive(Clone, Debug)]
struct Buffers<T> {
    mask: Vec<bool>,
    /// `[b, l, d]` item embeddings; `[b, l, c]` time and position embeddings.
    e: Tensor<T>,
    tau: Tensor<T>,
    pi: Tensor<T>,
    /// `[b, l, d_in]` LSTM input before and after dropout.
    x: Tensor<T>,
    xd: Tensor<T>,
    /// `[b, l, h]` LSTM outputs.
    y: Tensor<T>,
    hc_n: Option<RnnState<T>>,
    cache: Option<RnnCache<T>>,
    drop_emb: DropoutCache,
    drop_hid: DropoutCache,
    /// `[b, l, key_dim]` attention keys (attention fusion only; otherwise the keys are `y`).
    k: Tensor<T>,
    /// `[b, l, a]` pre-activation then `u = tanh(.)`.
    za: Tensor<T>,
    u: Tensor<T>,
    /// `[b * l, 1]` scores.
    s: Tensor<T>,
    /// `[b, l, h]` pooled prefixes; per position, running max and normaliser of the online softmax.
    p: Tensor<T>,
    run_max: Vec<f64>,
    run_z: Vec<f64>,
    /// Positions `b * l + t` with a target and their 0-based class.
    rows: Vec<usize>,
    classes: Vec<u32>,
    /// `[n, 2h]` MLP input before and after dropout, `[n, m]` hidden pre-activation and ReLU,
    /// `[n, d]` MLP output.
    q: Tensor<T>,
    qd: Tensor<T>,
    m1: Tensor<T>,
    r: Tensor<T>,
    o: Tensor<T>,
    /// Chunk buffers: `[nc, d]` outputs and their gradient, `[nc, n_items]` logits and gradient.
    oc: Tensor<T>,
    doc: Tensor<T>,
    logits: Tensor<T>,
    dlogits: Tensor<T>,
    /// Gradients: `[n, d]`, `[n, m]`, `[n, 2h]`, `[b, l, h]` (pooled and LSTM outputs),
    /// `[b * l, 1]`, `[b, l, a]`, `[b, l, key_dim]`, `[b, l, d_in]`.
    d_o: Tensor<T>,
    dr: Tensor<T>,
    dm1: Tensor<T>,
    dqd: Tensor<T>,
    dq: Tensor<T>,
    dp: Tensor<T>,
    dy: Tensor<T>,
    ds: Tensor<T>,
    du: Tensor<T>,
    dza: Tensor<T>,
    dk: Tensor<T>,
    dxd: Tensor<T>,
    dx: Tensor<T>,
    /// `[b, l, c]` gradients of the context embeddings.
    dtau: Tensor<T>,
    dpi: Tensor<T>,
    /// f64 scratch of the pooling scans, `[h]`.
    acc: Vec<f64>,
}

impl<T: Float> Default for Buffers<T> {
    fn default() -> Self {
        Self {
            mask: Vec::new(),
            e: Tensor::zeros(&[0]),
            tau: Tensor::zeros(&[0]),
            pi: Tensor::zeros(&[0]),
            x: Tensor::zeros(&[0]),
            xd: Tensor::zeros(&[0]),
            y: Tensor::zeros(&[0]),
            hc_n: None,
            cache: None,
            drop_emb: DropoutCache::new(),
            drop_hid: DropoutCache::new(),
            k: Tensor::zeros(&[0]),
            za: Tensor::zeros(&[0]),
            u: Tensor::zeros(&[0]),
            s: Tensor::zeros(&[0]),
            p: Tensor::zeros(&[0]),
            run_max: Vec::new(),
            run_z: Vec::new(),
            rows: Vec::new(),
            classes: Vec::new(),
            q: Tensor::zeros(&[0]),
            qd: Tensor::zeros(&[0]),
            m1: Tensor::zeros(&[0]),
            r: Tensor::zeros(&[0]),
            o: Tensor::zeros(&[0]),
            oc: Tensor::zeros(&[0]),
            doc: Tensor::zeros(&[0]),
            logits: Tensor::zeros(&[0]),
            dlogits: Tensor::zeros(&[0]),
            d_o: Tensor::zeros(&[0]),
            dr: Tensor::zeros(&[0]),
            dm1: Tensor::zeros(&[0]),
            dqd: Tensor::zeros(&[0]),
            dq: Tensor::zeros(&[0]),
            dp: Tensor::zeros(&[0]),
            dy: Tensor::zeros(&[0]),
            ds: Tensor::zeros(&[0]),
            du: Tensor::zeros(&[0]),
            dza: Tensor::zeros(&[0]),
            dk: Tensor::zeros(&[0]),
            dxd: Tensor::zeros(&[0]),
            dx: Tensor::zeros(&[0]),
            dtau: Tensor::zeros(&[0]),
            dpi: Tensor::zeros(&[0]),
            acc: Vec::new(),
        }
    }
}

/// Inputs of one step.
struct StepInput<'a> {
    b: usize,
    l: usize,
    /// `[b, l]` items, `0` = padding.
    inputs: &'a [u32],
    /// `[b, l]` targets, `0` = none.
    targets: &'a [u32],
    /// `[b, l]` time buckets and positions (empty without context).
    time_buckets: &'a [u32],
    positions: &'a [u32],
}

/// The generic core: parameters, dropout sites and buffers.
#[derive(Clone, Debug)]
struct Core<T> {
    cfg: LstmAttnConfig,
    n_items: usize,
    net: Net<T>,
    drop_emb: Dropout,
    drop_hid: Dropout,
    buf: Buffers<T>,
    chunk_rows: usize,
}

fn stream_seed(seed: u64, stream: u64) -> u64 {
    splitmix64(seed ^ splitmix64(stream.wrapping_add(0x4c53_544d)))
}

/// Causal softmax pooling, forward (one row): for every real position `t`,
/// `p_t = sum_{u<=t, m_u} e^{s_u} y_u / sum_{u<=t, m_u} e^{s_u}`, by an online softmax (running max
/// `M_t`, normaliser `Z_t = sum e^{s_u - M_t}`). Padded positions get `p_t = 0`.
///
/// `y`, `p`: `[l, h]`; `s`, `mask`: `[l]`; writes `run_max`, `run_z` `[l]` for the backward.
#[allow(clippy::too_many_arguments)]
fn pool_forward<T: Float>(
    p: &mut [T],
    run_max: &mut [f64],
    run_z: &mut [f64],
    acc: &mut [f64],
    y: &[T],
    s: &[T],
    mask: &[bool],
    h: usize,
) {
    let mut m = f64::NEG_INFINITY;
    let mut z = 0.0;
    acc.fill(0.0);
    for t in 0..mask.len() {
        let pt = &mut p[t * h..(t + 1) * h];
        if !mask[t] {
            pt.fill(T::ZERO);
            run_max[t] = m;
            run_z[t] = z;
            continue;
        }
        let st = s[t].to_f64();
        if st > m {
            // rescale the sums to the new max: e^{s_u - M_old} = e^{s_u - M_new} e^{M_new - M_old}
            let scale = (m - st).exp();
            z *= scale;
            acc.iter_mut().for_each(|a| *a *= scale);
            m = st;
        }
        let w = (st - m).exp();
        z += w;
        let yt = &y[t * h..(t + 1) * h];
        for ((a, &v), o) in acc.iter_mut().zip(yt).zip(pt.iter_mut()) {
            *a += w * v.to_f64();
            *o = T::from_f64(*a / z);
        }
        run_max[t] = m;
        run_z[t] = z;
    }
}

/// Backward of [`pool_forward`] (one row), by a right-to-left scan:
/// `Q_t = dp_t / Z_t + e^{M_t - M_next} Q_next`, `q_t = (dp_t . p_t) / Z_t + e^{M_t - M_next} q_next`,
/// then `dy_t += e^{s_t - M_t} Q_t` and `ds_t = e^{s_t - M_t} (y_t . Q_t - q_t)` (every factor `<= 1`,
/// so nothing overflows). `dy` accumulates (`+=`); `ds` is assigned (0 at padding).
#[allow(clippy::too_many_arguments)]
fn pool_backward<T: Float>(
    dy: &mut [T],
    ds: &mut [T],
    acc: &mut [f64],
    dp: &[T],
    p: &[T],
    y: &[T],
    s: &[T],
    run_max: &[f64],
    run_z: &[f64],
    mask: &[bool],
    h: usize,
) {
    acc.fill(0.0);
    let mut q = 0.0;
    let mut next_m: Option<f64> = None;
    for t in (0..mask.len()).rev() {
        if !mask[t] {
            ds[t] = T::ZERO;
            continue;
        }
        let (mt, zt) = (run_max[t], run_z[t]);
        if let Some(nm) = next_m {
            let scale = (mt - nm).exp();
            acc.iter_mut().for_each(|a| *a *= scale);
            q *= scale;
        }
        next_m = Some(mt);
        let (dpt, pt, yt) = (
            &dp[t * h..(t + 1) * h],
            &p[t * h..(t + 1) * h],
            &y[t * h..(t + 1) * h],
        );
        let mut dot_dp_p = 0.0;
        for ((a, &g), &v) in acc.iter_mut().zip(dpt).zip(pt) {
            *a += g.to_f64() / zt;
            dot_dp_p += g.to_f64() * v.to_f64();
        }
        q += dot_dp_p / zt;
        let w = (s[t].to_f64() - mt).exp();
        let mut dot_y_q = 0.0;
        for ((d, &v), &a) in dy[t * h..(t + 1) * h].iter_mut().zip(yt).zip(acc.iter()) {
            *d += T::from_f64(w * a);
            dot_y_q += v.to_f64() * a;
        }
        ds[t] = T::from_f64(w * (dot_y_q - q));
    }
}

/// Copies columns: `dst[r, off..off + w] = src[r, ..]` for every row (`src`: `[rows, w]`).
fn put_cols<T: Float>(dst: &mut Tensor<T>, off: usize, src: &Tensor<T>) {
    let w = src.cols();
    let dw = dst.cols();
    for (d, s) in dst
        .as_mut_slice()
        .chunks_exact_mut(dw)
        .zip(src.as_slice().chunks_exact(w))
    {
        d[off..off + w].copy_from_slice(s);
    }
}

/// Reads columns: `dst[r, ..] = src[r, off..off + w]` (`dst`: `[rows, w]`); with `add`, `+=`.
fn get_cols<T: Float>(dst: &mut Tensor<T>, off: usize, src: &Tensor<T>, add: bool) {
    let w = dst.cols();
    let sw = src.cols();
    for (d, s) in dst
        .as_mut_slice()
        .chunks_exact_mut(w)
        .zip(src.as_slice().chunks_exact(sw))
    {
        if add {
            for (a, &b) in d.iter_mut().zip(&s[off..off + w]) {
                *a += b;
            }
        } else {
            d.copy_from_slice(&s[off..off + w]);
        }
    }
}

impl<T: Float> Core<T> {
    fn new(cfg: LstmAttnConfig, n_items: usize, seed: u64) -> Result<Self, ModelError> {
        cfg.validate()?;
        if n_items == 0 {
            return Err(ModelError::Data(
                "lstm_attn: the catalogue has no items".into(),
            ));
        }
        let (d, h, c) = (cfg.embedding_dim, cfg.hidden_size, cfg.ctx_dim());
        let mut rng = Rng::new(stream_seed(seed, 0));
        // Item tables as GRU4Rec's reference: uniform ±sqrt(6 / (rows + cols)); context tables the
        // same; layers keep PyTorch's defaults; the output bias starts at zero.
        let table = |rng: &mut Rng, name: &str, rows: usize, cols: usize| {
            let bound = (6.0 / (rows + cols) as f64).sqrt();
            Param::new(name, rng.uniform_tensor::<T>(&[rows, cols], bound))
        };
        let item_emb = table(&mut rng, "item_emb.weight", n_items, d);
        let with_ctx = cfg.context != ContextFusion::None;
        let time_emb = with_ctx.then(|| {
            table(
                &mut rng,
                "time_emb.weight",
                cfg.n_time_buckets as usize - 1,
                c,
            )
        });
        let pos_emb =
            with_ctx.then(|| table(&mut rng, "pos_emb.weight", cfg.max_position as usize, c));
        let lstm = Lstm::new(
            "lstm",
            RnnConfig {
                input_size: cfg.lstm_input(),
                hidden_size: h,
                num_layers: cfg.num_layers,
            },
            &mut rng,
        )
        .map_err(|e| ModelError::Config(format!("lstm_attn: {e}")))?;
        let att_proj = Linear::new("att.proj", cfg.key_dim(), cfg.attention_dim, true, &mut rng);
        let att_score = Linear::new("att.score", cfg.attention_dim, 1, false, &mut rng);
        let mlp1 = Linear::new("mlp.0", 2 * h, cfg.mlp_hidden, true, &mut rng);
        let mlp2 = Linear::new("mlp.2", cfg.mlp_hidden, d, true, &mut rng);
        let item_out = (!cfg.tied).then(|| table(&mut rng, "item_out.weight", n_items, d));
        let item_bias = Param::new("item_out.bias", Tensor::zeros(&[n_items]));
        let net = Net {
            item_emb,
            time_emb,
            pos_emb,
            lstm,
            att_proj,
            att_score,
            mlp1,
            mlp2,
            item_out,
            item_bias,
        };
        let dropout = |p: f64, stream: u64| {
            Dropout::new(p, stream_seed(seed, stream))
                .map_err(|e| ModelError::Config(format!("lstm_attn: {e}")))
        };
        let drop_emb = dropout(cfg.dropout_embedding, 1)?;
        let drop_hid = dropout(cfg.dropout_hidden, 2)?;
        Ok(Self {
            cfg,
            n_items,
            net,
            drop_emb,
            drop_hid,
            buf: Buffers::default(),
            chunk_rows: CHUNK_ROWS,
        })
    }

    /// The output item table (`item_emb` when tied).
    fn out_table(&self) -> &Tensor<T> {
        match &self.net.item_out {
            Some(p) => &p.value,
            None => &self.net.item_emb.value,
        }
    }

    /// Forward of the encoder and the pooling for a `[b, l]` batch: fills `y`, `p` (and the caches).
    fn encode(&mut self, inp: &StepInput<'_>) {
        let (b, l) = (inp.b, inp.l);
        let cfg = &self.cfg;
        let (d, h, c, a) = (
            cfg.embedding_dim,
            cfg.hidden_size,
            cfg.ctx_dim(),
            cfg.attention_dim,
        );
        let d_in = cfg.lstm_input();
        let fusion = cfg.context;
        let buf = &mut self.buf;
        buf.mask.clear();
        buf.mask.extend(inp.inputs.iter().map(|&id| id != 0));
        // (1) e = E[i], τ = T[bucket], π = P[position]
        buf.e.resize(&[b, l, d]);
        gather_rows(&mut buf.e, &self.net.item_emb.value, inp.inputs);
        if let (Some(te), Some(pe)) = (&self.net.time_emb, &self.net.pos_emb) {
            buf.tau.resize(&[b, l, c]);
            buf.pi.resize(&[b, l, c]);
            gather_rows(&mut buf.tau, &te.value, inp.time_buckets);
            gather_rows(&mut buf.pi, &pe.value, inp.positions);
        }
        // (2) x = e | e + τ + π | [e; τ; π]
        buf.x.resize(&[b, l, d_in]);
        match fusion {
            ContextFusion::None | ContextFusion::Attention => buf.x.copy_from(&buf.e),
            ContextFusion::Add => {
                for (((x, &e), &t), &p) in buf
                    .x
                    .as_mut_slice()
                    .iter_mut()
                    .zip(buf.e.as_slice())
                    .zip(buf.tau.as_slice())
                    .zip(buf.pi.as_slice())
                {
                    *x = e + t + p;
                }
            }
            ContextFusion::Concat => {
                put_cols(&mut buf.x, 0, &buf.e);
                put_cols(&mut buf.x, d, &buf.tau);
                put_cols(&mut buf.x, d + c, &buf.pi);
            }
        }
        // (3) x̃ = dropout_emb(x)
        buf.xd.resize(&[b, l, d_in]);
        self.drop_emb
            .forward(&mut buf.xd, &mut buf.drop_emb, &buf.x);
        // (4) y = LSTM(x̃), padded steps carry the state and output zeros
        buf.y.resize(&[b, l, h]);
        if buf.hc_n.as_ref().is_none_or(|s| s.batch() != b) {
            buf.hc_n = Some(self.net.lstm.zero_state(b));
        }
        let cache = buf
            .cache
            .get_or_insert_with(|| self.net.lstm.new_cache(b, l));
        self.net.lstm.forward(
            &mut buf.y,
            buf.hc_n.as_mut().expect("set above"),
            cache,
            &buf.xd,
            Some(&buf.mask),
            None,
        );
        // (5) keys k = y | [y; τ; π]; u = tanh(W k + b); s = v^T u
        let keys = if fusion == ContextFusion::Attention {
            buf.k.resize(&[b, l, cfg.key_dim()]);
            put_cols(&mut buf.k, 0, &buf.y);
            put_cols(&mut buf.k, h, &buf.tau);
            put_cols(&mut buf.k, h + c, &buf.pi);
            &buf.k
        } else {
            &buf.y
        };
        buf.za.resize(&[b, l, a]);
        buf.u.resize(&[b, l, a]);
        self.net.att_proj.forward(&mut buf.za, keys);
        tanh_forward(&mut buf.u, &buf.za);
        buf.s.resize(&[b * l, 1]);
        self.net.att_score.forward(&mut buf.s, &buf.u);
        // (6) causal pooling p_t over each row's prefix
        buf.p.resize(&[b, l, h]);
        buf.run_max.resize(b * l, 0.0);
        buf.run_z.resize(b * l, 0.0);
        buf.acc.resize(h, 0.0);
        for row in 0..b {
            let (lo, hi) = (row * l, (row + 1) * l);
            pool_forward(
                &mut buf.p.as_mut_slice()[lo * h..hi * h],
                &mut buf.run_max[lo..hi],
                &mut buf.run_z[lo..hi],
                &mut buf.acc,
                &buf.y.as_slice()[lo * h..hi * h],
                &buf.s.as_slice()[lo..hi],
                &buf.mask[lo..hi],
                h,
            );
        }
    }

    /// The MLP head on the positions in `buf.rows`: fills `q`, `qd`, `m1`, `r`, `o`.
    fn head(&mut self) {
        let h = self.cfg.hidden_size;
        let buf = &mut self.buf;
        let n = buf.rows.len();
        // (7) q = [p_t; y_t] at the scored positions, q̃ = dropout_hidden(q)
        buf.q.resize(&[n, 2 * h]);
        for (r, &pos) in buf.rows.iter().enumerate() {
            let qr = &mut buf.q.as_mut_slice()[r * 2 * h..(r + 1) * 2 * h];
            qr[..h].copy_from_slice(&buf.p.as_slice()[pos * h..(pos + 1) * h]);
            qr[h..].copy_from_slice(&buf.y.as_slice()[pos * h..(pos + 1) * h]);
        }
        buf.qd.resize(&[n, 2 * h]);
        self.drop_hid
            .forward(&mut buf.qd, &mut buf.drop_hid, &buf.q);
        // (8) o = W2 relu(W1 q̃ + b1) + b2
        buf.m1.resize(&[n, self.cfg.mlp_hidden]);
        buf.r.resize(&[n, self.cfg.mlp_hidden]);
        buf.o.resize(&[n, self.cfg.embedding_dim]);
        self.net.mlp1.forward(&mut buf.m1, &buf.qd);
        relu_forward(&mut buf.r, &buf.m1);
        self.net.mlp2.forward(&mut buf.o, &buf.r);
    }

    /// Forward, loss and (with `grad`) backward of one step; parameter gradients accumulate.
    /// Returns the mean cross-entropy over positions with a target (0 when there are none).
    fn step(&mut self, inp: &StepInput<'_>, grad: bool) -> f64 {
        let (b, l) = (inp.b, inp.l);
        self.encode(inp);
        let buf = &mut self.buf;
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
        self.head();
        let (d, h, nc_items) = (self.cfg.embedding_dim, self.cfg.hidden_size, self.n_items);
        if grad {
            self.buf.d_o.resize(&[n, d]);
        }
        // (9) z = o O^T + b_out, cross-entropy, in chunks of positions
        let mut loss = 0.0;
        let mut start = 0;
        while start < n {
            let nc = self.chunk_rows.min(n - start);
            let w = nc as f64 / n as f64;
            let out_w = match &self.net.item_out {
                Some(p) => &p.value,
                None => &self.net.item_emb.value,
            };
            let buf = &mut self.buf;
            buf.oc.resize(&[nc, d]);
            buf.oc
                .as_mut_slice()
                .copy_from_slice(&buf.o.as_slice()[start * d..(start + nc) * d]);
            buf.logits.resize(&[nc, nc_items]);
            gemm(
                &mut buf.logits,
                T::ONE,
                &buf.oc,
                Transpose::No,
                out_w,
                Transpose::Yes,
                T::ZERO,
            );
            add_bias_rows(&mut buf.logits, self.net.item_bias.value.as_slice());
            let targets = &buf.classes[start..start + nc];
            if !grad {
                loss += w * seqrec_nn::loss::softmax_cross_entropy(
                    None,
                    &buf.logits,
                    targets,
                    u32::MAX,
                )
                .to_f64();
                start += nc;
                continue;
            }
            buf.dlogits.resize(&[nc, nc_items]);
            loss += w * seqrec_nn::loss::softmax_cross_entropy(
                Some(&mut buf.dlogits),
                &buf.logits,
                targets,
                u32::MAX,
            )
            .to_f64();
            let wt = T::from_f64(w);
            // do = w dz O  (before O's gradient is touched: O may be E)
            buf.doc.resize(&[nc, d]);
            gemm(
                &mut buf.doc,
                wt,
                &buf.dlogits,
                Transpose::No,
                out_w,
                Transpose::No,
                T::ZERO,
            );
            buf.d_o.as_mut_slice()[start * d..(start + nc) * d].copy_from_slice(buf.doc.as_slice());
            // dO += w dz^T o;  db += w colsum(dz)
            let out_g = match &mut self.net.item_out {
                Some(p) => &mut p.grad,
                None => &mut self.net.item_emb.grad,
            };
            gemm(
                out_g,
                wt,
                &buf.dlogits,
                Transpose::Yes,
                &buf.oc,
                Transpose::No,
                T::ONE,
            );
            col_sum_acc(self.net.item_bias.grad.as_mut_slice(), &buf.dlogits, wt);
            start += nc;
        }
        if !grad {
            return loss;
        }
        let cfg = &self.cfg;
        let (c, a) = (cfg.ctx_dim(), cfg.attention_dim);
        let d_in = cfg.lstm_input();
        let fusion = cfg.context;
        let buf = &mut self.buf;
        let net = &mut self.net;
        // (8) backward: o = W2 r + b2, r = relu(m1), m1 = W1 q̃ + b1
        buf.dr.resize(&[n, cfg.mlp_hidden]);
        net.mlp2.backward(Some(&mut buf.dr), &buf.d_o, &buf.r);
        buf.dm1.resize(&[n, cfg.mlp_hidden]);
        relu_backward(&mut buf.dm1, &buf.dr, &buf.r);
        buf.dqd.resize(&[n, 2 * h]);
        net.mlp1.backward(Some(&mut buf.dqd), &buf.dm1, &buf.qd);
        // (7) backward: q̃ = dropout(q); q = [p_t; y_t] scattered back to positions
        buf.dq.resize(&[n, 2 * h]);
        self.drop_hid.backward(&mut buf.dq, &buf.dqd, &buf.drop_hid);
        buf.dp.resize(&[b, l, h]);
        buf.dp.fill(T::ZERO);
        buf.dy.resize(&[b, l, h]);
        buf.dy.fill(T::ZERO);
        for (r, &pos) in buf.rows.iter().enumerate() {
            let g = &buf.dq.as_slice()[r * 2 * h..(r + 1) * 2 * h];
            buf.dp.as_mut_slice()[pos * h..(pos + 1) * h].copy_from_slice(&g[..h]);
            buf.dy.as_mut_slice()[pos * h..(pos + 1) * h].copy_from_slice(&g[h..]);
        }
        // (6) backward of the causal pooling: dy += ∂p/∂y, ds
        buf.ds.resize(&[b * l, 1]);
        for row in 0..b {
            let (lo, hi) = (row * l, (row + 1) * l);
            pool_backward(
                &mut buf.dy.as_mut_slice()[lo * h..hi * h],
                &mut buf.ds.as_mut_slice()[lo..hi],
                &mut buf.acc,
                &buf.dp.as_slice()[lo * h..hi * h],
                &buf.p.as_slice()[lo * h..hi * h],
                &buf.y.as_slice()[lo * h..hi * h],
                &buf.s.as_slice()[lo..hi],
                &buf.run_max[lo..hi],
                &buf.run_z[lo..hi],
                &buf.mask[lo..hi],
                h,
            );
        }
        // (5) backward: s = v^T u, u = tanh(za), za = W k + b
        buf.du.resize(&[b, l, a]);
        net.att_score.backward(Some(&mut buf.du), &buf.ds, &buf.u);
        buf.dza.resize(&[b, l, a]);
        tanh_backward(&mut buf.dza, &buf.du, &buf.u);
        if fusion == ContextFusion::Attention {
            buf.dk.resize(&[b, l, cfg.key_dim()]);
            net.att_proj.backward(Some(&mut buf.dk), &buf.dza, &buf.k);
            // k = [y; τ; π]
            get_cols(&mut buf.dy, 0, &buf.dk, true);
            buf.dtau.resize(&[b, l, c]);
            buf.dpi.resize(&[b, l, c]);
            get_cols(&mut buf.dtau, h, &buf.dk, false);
            get_cols(&mut buf.dpi, h + c, &buf.dk, false);
        } else {
            buf.dk.resize(&[b, l, h]);
            net.att_proj.backward(Some(&mut buf.dk), &buf.dza, &buf.y);
            for (g, &k) in buf.dy.as_mut_slice().iter_mut().zip(buf.dk.as_slice()) {
                *g += k;
            }
        }
        // (4) backward through time: dx̃
        buf.dxd.resize(&[b, l, d_in]);
        net.lstm.backward(
            Some(&mut buf.dxd),
            None,
            &buf.dy,
            None,
            &buf.xd,
            Some(&buf.mask),
            buf.cache.as_mut().expect("filled by encode"),
        );
        // (3) backward: x̃ = dropout(x)
        buf.dx.resize(&[b, l, d_in]);
        self.drop_emb.backward(&mut buf.dx, &buf.dxd, &buf.drop_emb);
        // (2) backward of the fusion, (1) scatter into the tables (padding ids skipped)
        match fusion {
            ContextFusion::None => {
                scatter_add_rows(&mut net.item_emb.grad, &buf.dx, inp.inputs);
            }
            ContextFusion::Attention => {
                scatter_add_rows(&mut net.item_emb.grad, &buf.dx, inp.inputs);
            }
            ContextFusion::Add => {
                scatter_add_rows(&mut net.item_emb.grad, &buf.dx, inp.inputs);
                buf.dtau.resize(&[b, l, c]);
                buf.dpi.resize(&[b, l, c]);
                buf.dtau.copy_from(&buf.dx);
                buf.dpi.copy_from(&buf.dx);
            }
            ContextFusion::Concat => {
                buf.e.resize(&[b, l, cfg.embedding_dim]);
                get_cols(&mut buf.e, 0, &buf.dx, false);
                scatter_add_rows(&mut net.item_emb.grad, &buf.e, inp.inputs);
                buf.dtau.resize(&[b, l, c]);
                buf.dpi.resize(&[b, l, c]);
                get_cols(&mut buf.dtau, cfg.embedding_dim, &buf.dx, false);
                get_cols(&mut buf.dpi, cfg.embedding_dim + c, &buf.dx, false);
            }
        }
        if let (Some(te), Some(pe)) = (&mut net.time_emb, &mut net.pos_emb) {
            // Context of padded inputs is 0 (the batcher leaves it so), which the scatter skips.
            scatter_add_rows(&mut te.grad, &buf.dtau, inp.time_buckets);
            scatter_add_rows(&mut pe.grad, &buf.dpi, inp.positions);
        }
        loss
    }

    /// Eval-mode scores of `batch` right-aligned histories into `[batch, n_items + 1]` (column 0 = -inf).
    fn score(&mut self, inp: &StepInput<'_>, scores: &mut [T]) {
        let (b, l) = (inp.b, inp.l);
        self.encode(inp);
        self.buf.rows.clear();
        self.buf.rows.extend((0..b).map(|r| r * l + l - 1));
        self.head();
        let n = self.n_items;
        let mut logits = std::mem::replace(&mut self.buf.logits, Tensor::zeros(&[0]));
        logits.resize(&[b, n]);
        gemm(
            &mut logits,
            T::ONE,
            &self.buf.o,
            Transpose::No,
            self.out_table(),
            Transpose::Yes,
            T::ZERO,
        );
        add_bias_rows(&mut logits, self.net.item_bias.value.as_slice());
        for (row, src) in scores
            .chunks_exact_mut(n + 1)
            .zip(logits.as_slice().chunks_exact(n))
        {
            row[0] = T::NEG_INFINITY;
            row[1..].copy_from_slice(src);
        }
        self.buf.logits = logits;
    }
}

/// LSTM + attention in `f32`, implementing [`Model`]; see the [module docs](self) for the
/// architecture and how every position is trained, [`LstmAttnConfig`] for the settings.
///
/// Training batches are `SasrecBatcher` windows of the last `maxlen` events of each user, shuffled by
/// `(seed, epoch)`; dropout masks are keyed by `(seed, epoch, step)`, so the same seed gives the same
/// run and a resumed run matches an uninterrupted one.
///
/// ```
/// use seqrec_data::{Dataset, Sequences, Vocab};
/// use seqrec_models::{LstmAttn, LstmAttnConfig, Model};
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
/// let cfg = LstmAttnConfig {
///     hidden_size: 8, embedding_dim: 8, attention_dim: 4, mlp_hidden: 8, maxlen: 8, lr: 0.02,
///     ..Default::default()
/// };
/// let mut model = LstmAttn::new(cfg, &train, 0).unwrap();
/// let first = model.train_epoch(&train, 0, &mut |_| {}).unwrap().loss;
/// let mut last = first;
/// for epoch in 1..40 {
///     last = model.train_epoch(&train, epoch, &mut |_| {}).unwrap().loss;
/// }
/// assert!(last < first);
/// // After [.., 1, 2] comes 3.
/// let mut history = vec![0u32; 8];
/// history[6..].copy_from_slice(&[1, 2]);
/// let mut scores = vec![0.0f32; 4];
/// model.score(&history, 1, &mut scores);
/// assert!(scores[3] > scores[1] && scores[3] > scores[2]);
/// ```
#[derive(Clone, Debug)]
pub struct LstmAttn {
    core: Core<f32>,
    adam: AdamState<f32>,
    seed: u64,
    /// Scratch of the ids-only `score`: positions within the window.
    positions: Vec<u32>,
    zeros: Vec<u32>,
}

/// What `lstm_attn.json` holds next to the tensors.
#[derive(Debug, Serialize, Deserialize)]
struct SavedState {
    n_items: usize,
    adam_steps: u64,
    config: LstmAttnConfig,
}

const FILES: CheckpointFiles = CheckpointFiles {
    params: "lstm_attn.safetensors",
    optim: "lstm_attn.adam.safetensors",
    state: "lstm_attn.json",
};

impl LstmAttn {
    /// Builds the model for the catalogue of `train`, initialised from `seed`.
    ///
    /// # Errors
    /// [`ModelError::Config`] for an invalid `config` (see [`LstmAttnConfig::validate`]);
    /// [`ModelError::Data`] if the catalogue is empty.
    pub fn new(
        config: LstmAttnConfig,
        train: &Sequences<'_>,
        seed: u64,
    ) -> Result<Self, ModelError> {
        let core = Core::new(config, train.n_items(), seed)?;
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
            seed,
            positions: Vec::new(),
            zeros: Vec::new(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &LstmAttnConfig {
        &self.core.cfg
    }

    /// Number of trainable scalars.
    pub fn num_params(&self) -> usize {
        self.core.net.num_params()
    }

    /// Visits every parameter (names as in the checkpoint: `item_emb.weight`, `lstm.weight_ih_l0`,
    /// `att.proj.weight`, `mlp.0.weight`, ..., `item_out.bias`).
    pub fn visit_params(&self, f: &mut dyn FnMut(&Param<f32>)) {
        self.core.net.visit_params(f);
    }

    fn check_score_shapes(&self, histories: &[u32], batch: usize, scores: &[f32]) {
        let l = self.core.cfg.maxlen;
        let n = self.core.n_items;
        assert_eq!(
            histories.len(),
            batch * l,
            "LstmAttn::score: histories must be [batch = {batch}, maxlen = {l}]"
        );
        assert_eq!(
            scores.len(),
            batch * (n + 1),
            "LstmAttn::score: scores must be [batch = {batch}, n_items + 1 = {}]",
            n + 1
        );
        if let Some(&bad) = histories.iter().find(|&&id| id as usize > n) {
            panic!("LstmAttn::score: item id {bad} is out of range for {n} items");
        }
    }
}

impl Model for LstmAttn {
    fn name(&self) -> &'static str {
        "lstm_attn"
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

    fn context(&self) -> Option<ContextConfig> {
        self.core.cfg.context_config()
    }

    fn train_epoch(
        &mut self,
        train: &Sequences<'_>,
        epoch: usize,
        on_step: &mut dyn FnMut(&StepReport),
    ) -> Result<EpochReport, ModelError> {
        if train.n_items() != self.core.n_items {
            return Err(ModelError::Data(format!(
                "lstm_attn was built for {} items but the training sequences have {}",
                self.core.n_items,
                train.n_items()
            )));
        }
        let cfg = self.core.cfg.clone();
        let mut batcher = SasrecBatcher::new(
            train.clone(),
            BatchConfig {
                batch_size: cfg.batch_size,
                maxlen: cfg.maxlen,
                window: WindowMode::Last,
                negatives: seqrec_data::Negatives::None,
                shuffle: true,
                seed: self.seed,
                context: cfg.context_config(),
            },
        )
        .map_err(|e| ModelError::Data(format!("lstm_attn batches: {e}")))?;
        batcher.start_epoch(epoch as u64);
        let steps = batcher.n_batches();
        if steps == 0 {
            return Err(ModelError::Data(
                "lstm_attn: no training sequence has two or more items".into(),
            ));
        }
        self.core.drop_emb.train();
        self.core.drop_hid.train();
        let mut tally = EpochTally::new(steps, on_step);
        while let Some(batch) = batcher
            .next_batch()
            .map_err(|e| ModelError::Data(format!("lstm_attn batches: {e}")))?
        {
            let (step, counter) = (tally.step(), step_key(epoch, tally.step()));
            self.core.drop_emb.set_counter(counter);
            self.core.drop_hid.set_counter(counter);
            self.core.net.zero_grad();
            let input = StepInput {
                b: batch.batch_size,
                l: batch.maxlen,
                inputs: &batch.inputs,
                targets: &batch.targets,
                time_buckets: &batch.time_buckets,
                positions: &batch.positions,
            };
            let loss = self.core.step(&input, true);
            self.adam
                .finish_step(&mut self.core.net, loss, cfg.clip_grad_norm, epoch, step)?;
            tally.record(loss, batch.rows);
        }
        self.core.drop_emb.eval();
        self.core.drop_hid.eval();
        Ok(tally.finish())
    }

    /// Ids-only scoring. With context fusion on, positions are counted within the given window and
    /// the time feature is absent (zero vector); prefer [`Model::score_with_context`].
    ///
    /// # Panics
    /// If `histories` is not `[batch, max_history()]`, `scores` not `[batch, n_items + 1]`, or a
    /// history holds an id above `n_items`.
    fn score(&mut self, histories: &[u32], batch: usize, scores: &mut [f32]) {
        self.check_score_shapes(histories, batch, scores);
        if batch == 0 {
            return;
        }
        let l = self.core.cfg.maxlen;
        let mut positions = std::mem::take(&mut self.positions);
        let mut zeros = std::mem::take(&mut self.zeros);
        positions.clear();
        zeros.clear();
        if self.core.cfg.context != ContextFusion::None {
            let cap = self.core.cfg.max_position;
            for row in histories.chunks_exact(l) {
                let first = row.iter().position(|&i| i != 0).unwrap_or(l);
                positions.extend((0..l).map(|t| {
                    if t < first {
                        0
                    } else {
                        ((t - first + 1) as u32).min(cap)
                    }
                }));
            }
            zeros.resize(batch * l, 0);
        }
        self.core.drop_emb.eval();
        self.core.drop_hid.eval();
        let inp = StepInput {
            b: batch,
            l,
            inputs: histories,
            targets: &[],
            time_buckets: &zeros,
            positions: &positions,
        };
        self.core.score(&inp, scores);
        self.positions = positions;
        self.zeros = zeros;
    }

    /// # Panics
    /// As [`Model::score`], and if the context buffers are not `[batch, max_history()]` or hold ids
    /// outside [`LstmAttnConfig::context_config`]'s ranges.
    fn score_with_context(
        &mut self,
        histories: &[u32],
        context: HistoryContext<'_>,
        batch: usize,
        scores: &mut [f32],
    ) {
        if self.core.cfg.context == ContextFusion::None {
            return self.score(histories, batch, scores);
        }
        self.check_score_shapes(histories, batch, scores);
        let n = histories.len();
        assert!(
            context.time_buckets.len() == n && context.positions.len() == n,
            "LstmAttn::score_with_context: context must be [batch, maxlen] like the histories"
        );
        let cfg = &self.core.cfg;
        assert!(
            context.time_buckets.iter().all(|&t| t < cfg.n_time_buckets)
                && context.positions.iter().all(|&p| p <= cfg.max_position),
            "LstmAttn::score_with_context: a context id is out of range"
        );
        if batch == 0 {
            return;
        }
        self.core.drop_emb.eval();
        self.core.drop_hid.eval();
        let inp = StepInput {
            b: batch,
            l: self.core.cfg.maxlen,
            inputs: histories,
            targets: &[],
            time_buckets: context.time_buckets,
            positions: context.positions,
        };
        self.core.score(&inp, scores);
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
        // Optimiser settings may change on resume; the architecture (which also fixes what the
        // context features mean) may not.
        if state.config.architecture() != self.core.cfg.architecture() {
            return Err(ckpt_err(
                &path,
                format!(
                    "saved for lstm_attn architecture {:?}, but the model has {:?}",
                    state.config.architecture(),
                    self.core.cfg.architecture()
                ),
            ));
        }
        FILES.load_net_and_adam(dir, &mut self.core.net, &mut self.adam, state.adam_steps)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use seqrec_nn::gradcheck::{GradTolerance, check_module};

    fn tiny(context: ContextFusion, layers: usize, tied: bool) -> Core<f64> {
        let cfg = LstmAttnConfig {
            embedding_dim: 4,
            hidden_size: 3,
            num_layers: layers,
            attention_dim: 3,
            mlp_hidden: 5,
            tied,
            context,
            context_dim: 2,
            n_time_buckets: 5,
            max_position: 4,
            dropout_embedding: 0.0,
            dropout_hidden: 0.0,
            batch_size: 3,
            maxlen: 5,
            ..LstmAttnConfig::default()
        };
        let mut core = Core::<f64>::new(cfg, 7, 5).unwrap();
        core.chunk_rows = 4;
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
        // Larger attention scores than the default init, so the softmax weights differ clearly.
        for v in core.net.att_score.weight.value.as_mut_slice() {
            *v *= 4.0;
        }
        core
    }

    /// Rows: fully padded, left-padded (3 real), full with one masked target.
    const INPUTS: [u32; 15] = [0, 0, 0, 0, 0, 0, 0, 3, 1, 7, 2, 4, 4, 6, 1];
    const TARGETS: [u32; 15] = [0, 0, 0, 0, 0, 0, 0, 1, 7, 2, 0, 4, 6, 1, 3];
    const BUCKETS: [u32; 15] = [0, 0, 0, 0, 0, 0, 0, 1, 4, 2, 1, 2, 3, 4, 4];
    const POSITIONS: [u32; 15] = [0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 1, 2, 3, 4, 4];

    fn input() -> StepInput<'static> {
        StepInput {
            b: 3,
            l: 5,
            inputs: &INPUTS,
            targets: &TARGETS,
            time_buckets: &BUCKETS,
            positions: &POSITIONS,
        }
    }

    fn check(mut core: Core<f64>) {
        let inp = input();
        core.net.zero_grad();
        let loss = core.step(&inp, true);
        assert!(loss.is_finite() && loss > 0.0, "loss {loss}");
        assert_eq!(core.clone().step(&inp, false), loss);
        let mut net = core.net.clone();
        let errors = check_module(&mut net, GradTolerance::STRICT, &mut |n| {
            core.net.clone_from(n);
            core.step(&inp, false)
        });
        for e in &errors {
            assert!(e.passes(), "{e}");
        }
        let mut nonzero = 0;
        net.visit_params(&mut |p| {
            nonzero += usize::from(p.grad.as_slice().iter().any(|&g| g != 0.0));
        });
        assert_eq!(nonzero, errors.len(), "every parameter gets a gradient");
    }

    /// Finite differences of the whole model path (embeddings, fusion, LSTM, causal attention
    /// pooling, MLP, tied or untied output, chunked cross-entropy) in f64, for every fusion.
    #[test]
    fn gradcheck_whole_model_f64() {
        check(tiny(ContextFusion::None, 1, true));
        check(tiny(ContextFusion::None, 2, false));
        check(tiny(ContextFusion::Concat, 1, true));
        check(tiny(ContextFusion::Add, 1, false));
        check(tiny(ContextFusion::Attention, 2, true));
    }

    /// A tensor of the PyTorch fixture: shape and row-major values.
    #[derive(serde::Deserialize)]
    struct Fixture {
        shape: Vec<usize>,
        data: Vec<f64>,
    }

    /// Step 0 against PyTorch (`scripts/fixtures_lstm_attn.py`: the same model written out with
    /// `nn.LSTM` on each row's real events and the causal pooling as one softmax per prefix), for
    /// every fusion, tied and untied output, one and two layers: the loss, every parameter gradient
    /// and the last-position scores.
    #[test]
    fn matches_pytorch_reference_at_step_0() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/lstm_attn.json");
        let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let fx: std::collections::HashMap<String, Fixture> = serde_json::from_str(&text).unwrap();
        for (tag, fusion, layers, tied) in [
            ("none_l1_tied", ContextFusion::None, 1, true),
            ("concat_l1_tied", ContextFusion::Concat, 1, true),
            ("add_l1_untied", ContextFusion::Add, 1, false),
            ("attention_l2_tied", ContextFusion::Attention, 2, true),
        ] {
            let mut core = tiny(fusion, layers, tied);
            let mut n = 0;
            core.net.visit_params_mut(&mut |p| {
                let f = &fx[&format!("{tag}.param.{}", p.name)];
                assert_eq!(f.shape, p.value.shape(), "{tag}: {}", p.name);
                p.value.as_mut_slice().copy_from_slice(&f.data);
                n += 1;
            });
            let n_torch = fx
                .keys()
                .filter(|k| k.starts_with(&format!("{tag}.param.")))
                .count();
            assert_eq!(n, n_torch, "{tag}: every PyTorch parameter is used");
            core.net.zero_grad();
            let inp = input();
            let got = core.step(&inp, true);
            let want = fx[&format!("{tag}.loss")].data[0];
            assert!(
                (got - want).abs() <= 1e-12 * want.abs(),
                "{tag}: loss {got} vs torch {want}"
            );
            core.net.visit_params(&mut |p| {
                let want = &fx[&format!("{tag}.grad.{}", p.name)].data;
                for (i, (&g, &w)) in p.grad.as_slice().iter().zip(want).enumerate() {
                    assert!(
                        (g - w).abs() <= 1e-12 + 1e-9 * w.abs(),
                        "{tag}: d {}[{i}] = {g} vs torch {w}",
                        p.name
                    );
                }
            });
            let mut scores = vec![0.0f64; 3 * 8];
            core.score(&inp, &mut scores);
            let want = &fx[&format!("{tag}.scores")].data;
            for r in 0..3 {
                for j in 0..7 {
                    let (s, w) = (scores[r * 8 + 1 + j], want[r * 7 + j]);
                    assert!(
                        (s - w).abs() <= 1e-12 + 1e-9 * w.abs(),
                        "{tag}: score [{r}, {j}] = {s} vs torch {w}"
                    );
                }
            }
        }
    }

    /// The one-scan causal pooling equals re-pooling every prefix with a plain masked softmax.
    #[test]
    fn causal_pooling_matches_per_prefix_softmax() {
        let (l, h) = (6, 2);
        let y: Vec<f64> = (0..l * h)
            .map(|i| ((i * 7 % 5) as f64 - 2.0) * 0.3)
            .collect();
        let s = [0.0, 50.0, -3.0, 80.0, 1.0, -100.0];
        let mask = [false, true, true, false, true, true];
        let (mut p, mut rm, mut rz, mut acc) =
            (vec![0.0; l * h], vec![0.0; l], vec![0.0; l], vec![0.0; h]);
        pool_forward(&mut p, &mut rm, &mut rz, &mut acc, &y, &s, &mask, h);
        for t in 0..l {
            let want: Vec<f64> = if !mask[t] {
                vec![0.0; h]
            } else {
                let m = (0..=t)
                    .filter(|&u| mask[u])
                    .map(|u| s[u])
                    .fold(f64::MIN, f64::max);
                let z: f64 = (0..=t).filter(|&u| mask[u]).map(|u| (s[u] - m).exp()).sum();
                (0..h)
                    .map(|j| {
                        (0..=t)
                            .filter(|&u| mask[u])
                            .map(|u| (s[u] - m).exp() / z * y[u * h + j])
                            .sum()
                    })
                    .collect()
            };
            for j in 0..h {
                assert!((p[t * h + j] - want[j]).abs() < 1e-12, "t {t} j {j}");
            }
        }
    }

    /// Parameter gradients accumulate (`+=`): two backward passes give twice one.
    #[test]
    fn parameter_gradients_accumulate() {
        let mut core = tiny(ContextFusion::Concat, 2, false);
        let inp = input();
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

    /// The scores of the last position in training equal `score` on the same history (the causal
    /// pooling at inference is the same operation), and a history with an earlier item changed only
    /// through padding does not move the scores.
    #[test]
    fn score_equals_training_logits_of_the_last_position() {
        for fusion in [ContextFusion::None, ContextFusion::Attention] {
            let mut core = tiny(fusion, 1, true);
            let inp = input();
            let mut scores = vec![0.0; 3 * 8];
            core.score(&inp, &mut scores);
            // Loss of a batch whose only target is row 2's last position, class c: -ln softmax.
            for cls in [1u32, 5] {
                let mut targets = [0u32; 15];
                targets[14] = cls;
                let one = StepInput {
                    targets: &targets,
                    ..input()
                };
                let loss = core.step(&one, false);
                let row = &scores[16..24];
                let m = row[1..].iter().cloned().fold(f64::MIN, f64::max);
                let lse = m + row[1..].iter().map(|v| (v - m).exp()).sum::<f64>().ln();
                assert!((loss - (lse - row[cls as usize])).abs() < 1e-12);
            }
        }
    }
}
