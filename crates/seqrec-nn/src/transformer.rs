//! [`TransformerBlock`] (self-attention + feed-forward with residuals, layer norms and dropout) in three
//! layer-norm placements, and [`TransformerEncoder`], a stack of blocks with an optional final norm.
//!
//! Placements ([`NormPlacement`]), with `MHA(q_in, kv_in)` and `drop` inverted dropout:
//!
//! | placement | attention half | feed-forward half |
//! |---|---|---|
//! | `Post` (PyTorch `norm_first=False`, BERT4Rec) | `x1 = LN1(x + drop(MHA(x, x)))` | `y = LN2(x1 + drop(FF(x1)))` |
//! | `Pre` (PyTorch `norm_first=True`) | `s = x + drop(MHA(LN1(x), LN1(x)))` | `y = s + drop(FF(LN2(s)))` |
//! | `SasRec` (SASRec.pytorch `log2feats`) | `q = LN1(x); s = q + MHA(q, x)` | `l = LN2(s); y = l + drop(FF(l))` |
//!
//! `SasRec` is the exact placement of Kang & McAuley's reference code (pmixer/SASRec.pytorch,
//! `model.py::log2feats`): `Q = attention_layernorms[i](seqs)`, `mha_outputs = attention_layers[i](Q, seqs,
//! seqs, attn_mask)`, `seqs = Q + mha_outputs`, `seqs = forward_layernorms[i](seqs)`,
//! `seqs = forward_layers[i](seqs)` where the point-wise feed-forward adds its own input
//! (`outputs += inputs`), then `seqs *= ~timeline_mask`. The residual of the attention half is the
//! normalised query, keys and values are the un-normalised input, and there is no dropout on the
//! attention output (only on the attention weights and inside and after the feed-forward).
//!
//! Parameter names follow PyTorch's `TransformerEncoderLayer`: `self_attn.*`, `linear1.*`, `linear2.*`,
//! `norm1.*`, `norm2.*` (SASRec's `attention_layernorms[i]` is `norm1`, `forward_layernorms[i]` is
//! `norm2`, `conv1`/`conv2` are `linear1`/`linear2`).
//!
//! ```
//! use seqrec_nn::{init::Rng, Module, Phase, TransformerBlockConfig, TransformerEncoder,
//!                 TransformerEncoderCache};
//! use seqrec_tensor::Tensor;
//!
//! // SASRec: 2 blocks of width 8, 2 heads, dropout 0.2, final layer norm.
//! let config = TransformerBlockConfig::sasrec(8, 2, 0.2, 42);
//! let mut enc = TransformerEncoder::<f32>::new("encoder", &config, 2, true, &mut Rng::new(0)).unwrap();
//! let (batch, seq) = (2, 3);
//! let mut cache = TransformerEncoderCache::new(&enc, batch, seq); // once, reused every step
//! let x = Tensor::full(&[batch, seq, 8], 0.5);
//! let keep = [false, true, true, true, true, true]; // sequence 0 is left-padded by one
//! let mut y = Tensor::zeros(&[batch, seq, 8]);
//! enc.forward(&mut y, &mut cache, &x, Some(&keep), Phase::Train { step: 1 });
//! assert!(y.as_slice()[..8].iter().all(|&v| v == 0.0)); // padded outputs are zeroed
//! let mut dx = Tensor::zeros(&[batch, seq, 8]);
//! enc.zero_grad();
//! enc.backward(&mut dx, &Tensor::full(&[batch, seq, 8], 1.0), &x, Some(&keep), &mut cache);
//! assert_eq!(enc.layers[1].self_attn.in_proj_weight.name, "encoder.layers.1.self_attn.in_proj_weight");
//! ```

use seqrec_tensor::{
    DropoutKey, Float, Tensor, add, add_assign, dropout_backward, dropout_forward,
};

use crate::attention::{
    AttentionMask, AttnConfigError, MhaCache, MhaConfig, MultiheadAttention, Phase, check_dropout,
    check_positive, site_seed, zero_rows,
};
use crate::feedforward::{Activation, FeedForward, FeedForwardCache, FeedForwardConfig};
use crate::init::Rng;
use crate::layernorm::{LayerNorm, LayerNormCache};
use crate::param::{Module, Param, join};

/// Where the layer norms sit in a [`TransformerBlock`] (see the module docs for the formulas).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NormPlacement {
    /// After each residual sum (original Transformer, BERT4Rec, PyTorch's default).
    Post,
    /// Before each sub-layer, residual from the un-normalised stream (PyTorch `norm_first=True`).
    Pre,
    /// SASRec's reference code: normalised query as the attention residual, un-normalised keys/values.
    SasRec,
}

/// Configuration of a [`TransformerBlock`], validated once by [`TransformerBlockConfig::validate`].
#[derive(Clone, Debug, PartialEq)]
pub struct TransformerBlockConfig {
    /// Model width.
    pub d_model: usize,
    /// Attention heads (must divide `d_model`).
    pub num_heads: usize,
    /// Feed-forward hidden width.
    pub d_ff: usize,
    /// Feed-forward activation.
    pub activation: Activation,
    /// Dropout probability used at every site (attention weights, residual branches, feed-forward).
    pub dropout: f64,
    /// Causal (SASRec) or bidirectional (BERT4Rec).
    pub mask: AttentionMask,
    /// Layer-norm placement.
    pub norm: NormPlacement,
    /// Layer-norm epsilon (PyTorch 1e-5; SASRec uses 1e-8).
    pub eps: f64,
    /// Multiply the block output by the key-padding flags (SASRec's `seqs *= ~timeline_mask`).
    pub zero_padded_outputs: bool,
    /// Pass the key-padding flags to the attention so padded keys get zero weight (`true`, the correct
    /// choice and what [`TransformerBlockConfig::sasrec`] sets). `false` reproduces SASRec.pytorch
    /// exactly: its attention has only the causal mask, so real queries also attend to the (zeroed)
    /// padded positions, and the flags only zero the outputs.
    pub mask_padded_keys: bool,
    /// Project the merged attention heads with `out_proj` (`true`, PyTorch's `nn.MultiheadAttention`
    /// and SASRec.pytorch); `false`: the heads are the attention output, as in the SASRec paper and
    /// its reference code. Such a block has no `out_proj` tensors; PyTorch's `nn.MultiheadAttention`
    /// reproduces it with an identity `out_proj.weight` and a zero `out_proj.bias`.
    pub output_projection: bool,
    /// Seed of the dropout masks of this block (each site derives its own).
    pub seed: u64,
}

impl TransformerBlockConfig {
    /// A SASRec block: causal, [`NormPlacement::SasRec`], ReLU, feed-forward width `d_model`, eps 1e-8,
    /// padded outputs zeroed.
    pub fn sasrec(d_model: usize, num_heads: usize, dropout: f64, seed: u64) -> Self {
        Self {
            d_model,
            num_heads,
            d_ff: d_model,
            activation: Activation::Relu,
            dropout,
            mask: AttentionMask::Causal,
            norm: NormPlacement::SasRec,
            eps: 1e-8,
            zero_padded_outputs: true,
            mask_padded_keys: true,
            output_projection: true,
            seed,
        }
    }

    /// Checks sizes, heads dividing the width, dropout in `[0, 1)` and a positive eps.
    ///
    /// # Errors
    /// [`AttnConfigError`] naming the field and values.
    pub fn validate(&self) -> Result<(), AttnConfigError> {
        self.mha().validate()?;
        check_positive("d_ff", self.d_ff)?;
        check_dropout("dropout", self.dropout)?;
        if !(self.eps > 0.0 && self.eps.is_finite()) {
            return Err(AttnConfigError::Eps {
                field: "eps",
                value: self.eps,
            });
        }
        Ok(())
    }

    fn mha(&self) -> MhaConfig {
        MhaConfig {
            d_model: self.d_model,
            num_heads: self.num_heads,
            mask: self.mask,
            dropout: self.dropout,
            seed: site_seed(self.seed, 0),
        }
    }

    fn ff(&self) -> FeedForwardConfig {
        FeedForwardConfig {
            d_model: self.d_model,
            d_ff: self.d_ff,
            activation: self.activation,
            dropout: self.dropout,
            seed: site_seed(self.seed, 2),
        }
    }

    /// Dropout on the attention branch before the residual sum (SASRec has none).
    fn p_attn_out(&self) -> f64 {
        if self.norm == NormPlacement::SasRec {
            0.0
        } else {
            self.dropout
        }
    }
}

/// One Transformer encoder block (see the module docs).
#[derive(Clone, Debug)]
pub struct TransformerBlock<T> {
    /// `prefix.self_attn.*`.
    pub self_attn: MultiheadAttention<T>,
    /// `prefix.linear1.*`, `prefix.linear2.*`.
    pub ff: FeedForward<T>,
    /// `prefix.norm1.*`.
    pub norm1: LayerNorm<T>,
    /// `prefix.norm2.*`.
    pub norm2: LayerNorm<T>,
    config: TransformerBlockConfig,
}

/// What [`TransformerBlock::forward`] saves for [`TransformerBlock::backward`], and its scratch.
#[derive(Clone, Debug)]
pub struct TransformerBlockCache<T> {
    attn: MhaCache<T>,
    ff: FeedForwardCache<T>,
    ln1: LayerNormCache<T>,
    ln2: LayerNormCache<T>,
    /// LN1 output (`Pre`/`SasRec`: the normalised input; `Post`: `x1`).
    l1: Tensor<T>,
    /// MHA output and its dropout.
    a: Tensor<T>,
    a_drop: Tensor<T>,
    /// First residual sum.
    s: Tensor<T>,
    /// LN2 output (`Pre`/`SasRec`).
    l2: Tensor<T>,
    /// Feed-forward output and its dropout.
    f: Tensor<T>,
    f_drop: Tensor<T>,
    /// Second residual sum (`Post`, the LN2 input).
    s2: Tensor<T>,
    key1: Option<DropoutKey>,
    key2: Option<DropoutKey>,
    // Backward scratch, [batch, seq, d] each.
    g: Tensor<T>,
    d1: Tensor<T>,
    d2: Tensor<T>,
    d3: Tensor<T>,
    d4: Tensor<T>,
}

impl<T: Float> TransformerBlockCache<T> {
    /// A cache for inputs `[batch, seq, d_model]`.
    pub fn new(config: &TransformerBlockConfig, batch: usize, seq: usize) -> Self {
        let s = [batch, seq, config.d_model];
        let z = || Tensor::zeros(&s);
        Self {
            attn: MhaCache::new(&config.mha(), batch, seq),
            ff: FeedForwardCache::new(&config.ff(), batch * seq),
            ln1: LayerNormCache::new(batch * seq),
            ln2: LayerNormCache::new(batch * seq),
            l1: z(),
            a: z(),
            a_drop: z(),
            s: z(),
            l2: z(),
            f: z(),
            f_drop: z(),
            s2: z(),
            key1: None,
            key2: None,
            g: z(),
            d1: z(),
            d2: z(),
            d3: z(),
            d4: z(),
        }
    }

    fn ensure(&mut self, shape: &[usize]) {
        if self.l1.shape() == shape {
            return;
        }
        for t in [
            &mut self.l1,
            &mut self.a,
            &mut self.a_drop,
            &mut self.s,
            &mut self.l2,
            &mut self.f,
            &mut self.f_drop,
            &mut self.s2,
            &mut self.g,
            &mut self.d1,
            &mut self.d2,
            &mut self.d3,
            &mut self.d4,
        ] {
            t.resize(shape);
        }
        let rows = shape[0] * shape[1];
        for c in [&mut self.ln1, &mut self.ln2] {
            c.mean.resize(&[rows]);
            c.rstd.resize(&[rows]);
        }
    }

    /// The attention cache of the last forward (attention weights: [`MhaCache::weights`]).
    pub fn attention(&self) -> &MhaCache<T> {
        &self.attn
    }
}

/// `out = a + dropout(b)` (or `a + b` without a key); `tmp` receives `dropout(b)`.
fn add_dropped<T: Float>(
    out: &mut Tensor<T>,
    tmp: &mut Tensor<T>,
    a: &Tensor<T>,
    b: &Tensor<T>,
    p: f64,
    key: Option<DropoutKey>,
) {
    match key {
        Some(key) => {
            dropout_forward(tmp, b, p, key);
            add(out, a, tmp);
        }
        None => add(out, a, b),
    }
}

/// `db = dropout_backward(ds)` (or a copy without a key).
fn dropped_backward<T: Float>(db: &mut Tensor<T>, ds: &Tensor<T>, p: f64, key: Option<DropoutKey>) {
    match key {
        Some(key) => dropout_backward(db, ds, p, key),
        None => db.copy_from(ds),
    }
}

impl<T: Float> TransformerBlock<T> {
    /// A block named `prefix` (`prefix.self_attn.in_proj_weight`, ...), initialised like PyTorch.
    ///
    /// # Errors
    /// [`AttnConfigError`] if the configuration is invalid.
    pub fn new(
        prefix: &str,
        config: TransformerBlockConfig,
        rng: &mut Rng,
    ) -> Result<Self, AttnConfigError> {
        config.validate()?;
        let self_attn = MultiheadAttention::new(&join(prefix, "self_attn"), config.mha(), rng)?;
        Ok(Self {
            self_attn: if config.output_projection {
                self_attn
            } else {
                self_attn.without_output_projection()
            },
            ff: FeedForward::new(prefix, config.ff(), rng)?,
            norm1: LayerNorm::new(&join(prefix, "norm1"), config.d_model, config.eps),
            norm2: LayerNorm::new(&join(prefix, "norm2"), config.d_model, config.eps),
            config,
        })
    }

    /// The validated configuration.
    pub fn config(&self) -> &TransformerBlockConfig {
        &self.config
    }

    /// Forward. `x`, `y`: `[batch, seq, d]`; `key_keep`: `[batch * seq]` flags (`true` = real position)
    /// used as the attention key-padding mask and, with `zero_padded_outputs`, to zero padded outputs.
    ///
    /// # Panics
    /// If shapes disagree with each other or with the configuration.
    pub fn forward(
        &self,
        y: &mut Tensor<T>,
        cache: &mut TransformerBlockCache<T>,
        x: &Tensor<T>,
        key_keep: Option<&[bool]>,
        phase: Phase,
    ) {
        cache.ensure(x.shape());
        let c = &self.config;
        let p1 = c.p_attn_out();
        cache.key1 = phase.dropout_key(site_seed(c.seed, 1), p1);
        cache.key2 = phase.dropout_key(site_seed(c.seed, 3), c.dropout);
        let cc = &mut *cache;
        let attn_keep = if c.mask_padded_keys { key_keep } else { None };
        match c.norm {
            NormPlacement::Post => {
                // 1. a = MHA(x, x)
                (self.self_attn).forward(&mut cc.a, &mut cc.attn, x, x, attn_keep, phase);
                // 2. s = x + drop(a)
                add_dropped(&mut cc.s, &mut cc.a_drop, x, &cc.a, p1, cc.key1);
                // 3. x1 = LN1(s)
                self.norm1.forward(&mut cc.l1, &mut cc.ln1, &cc.s);
                // 4. f = FF(x1)
                self.ff.forward(&mut cc.f, &mut cc.ff, &cc.l1, phase);
                // 5. s2 = x1 + drop(f)
                add_dropped(
                    &mut cc.s2,
                    &mut cc.f_drop,
                    &cc.l1,
                    &cc.f,
                    c.dropout,
                    cc.key2,
                );
                // 6. y = LN2(s2)
                self.norm2.forward(y, &mut cc.ln2, &cc.s2);
            }
            NormPlacement::Pre => {
                // 1. l1 = LN1(x)
                self.norm1.forward(&mut cc.l1, &mut cc.ln1, x);
                // 2. a = MHA(l1, l1)
                (self.self_attn).forward(&mut cc.a, &mut cc.attn, &cc.l1, &cc.l1, attn_keep, phase);
                // 3. s = x + drop(a)
                add_dropped(&mut cc.s, &mut cc.a_drop, x, &cc.a, p1, cc.key1);
                // 4. l2 = LN2(s)
                self.norm2.forward(&mut cc.l2, &mut cc.ln2, &cc.s);
                // 5. f = FF(l2)
                self.ff.forward(&mut cc.f, &mut cc.ff, &cc.l2, phase);
                // 6. y = s + drop(f)
                add_dropped(y, &mut cc.f_drop, &cc.s, &cc.f, c.dropout, cc.key2);
            }
            NormPlacement::SasRec => {
                // 1. l1 = LN1(x)
                self.norm1.forward(&mut cc.l1, &mut cc.ln1, x);
                // 2. a = MHA(l1, x)
                (self.self_attn).forward(&mut cc.a, &mut cc.attn, &cc.l1, x, attn_keep, phase);
                // 3. s = l1 + a   (p1 = 0: no dropout here in SASRec)
                add(&mut cc.s, &cc.l1, &cc.a);
                // 4. l2 = LN2(s)
                self.norm2.forward(&mut cc.l2, &mut cc.ln2, &cc.s);
                // 5. f = FF(l2)
                self.ff.forward(&mut cc.f, &mut cc.ff, &cc.l2, phase);
                // 6. y = l2 + drop(f)
                add_dropped(y, &mut cc.f_drop, &cc.l2, &cc.f, c.dropout, cc.key2);
            }
        }
        // 7. y *= keep
        if let (true, Some(keep)) = (c.zero_padded_outputs, key_keep) {
            zero_rows(y, keep);
        }
    }

    /// Backward of [`TransformerBlock::forward`]: parameter gradients `+=`, `dx =`.
    ///
    /// - `dy`, `dx`, `x`: `[batch, seq, d]`; `key_keep` and `cache`: as in the forward.
    pub fn backward(
        &mut self,
        dx: &mut Tensor<T>,
        dy: &Tensor<T>,
        x: &Tensor<T>,
        key_keep: Option<&[bool]>,
        cache: &mut TransformerBlockCache<T>,
    ) {
        let c = self.config.clone();
        let p1 = c.p_attn_out();
        let cc = &mut *cache;
        // 7. y *= keep  =>  g = dy * keep
        cc.g.copy_from(dy);
        if let (true, Some(keep)) = (c.zero_padded_outputs, key_keep) {
            zero_rows(&mut cc.g, keep);
        }
        match c.norm {
            NormPlacement::Post => {
                // 6. y = LN2(s2)  =>  ds2 = LN2'(g)                          (d1 = ds2)
                self.norm2.backward(&mut cc.d1, &cc.g, &cc.s2, &cc.ln2);
                // 5. s2 = x1 + drop(f)  =>  dx1 = ds2, df = drop'(ds2)        (d2 = df)
                dropped_backward(&mut cc.d2, &cc.d1, c.dropout, cc.key2);
                // 4. f = FF(x1)  =>  dx1 += FF'(df)                           (d3 = FF'(df))
                self.ff
                    .backward(Some(&mut cc.d3), &cc.d2, &cc.l1, &mut cc.ff);
                add_assign(&mut cc.d1, &cc.d3);
                // 3. x1 = LN1(s)  =>  ds = LN1'(dx1)                          (d2 = ds)
                self.norm1.backward(&mut cc.d2, &cc.d1, &cc.s, &cc.ln1);
                // 2. s = x + drop(a)  =>  dx = ds, da = drop'(ds)            (d1 = da)
                dx.copy_from(&cc.d2);
                dropped_backward(&mut cc.d1, &cc.d2, p1, cc.key1);
                // 1. a = MHA(x, x)  =>  dx += dq + dkv
                (self.self_attn).backward(&mut cc.d3, &mut cc.d4, &cc.d1, x, x, &mut cc.attn);
                add_assign(dx, &cc.d3);
                add_assign(dx, &cc.d4);
            }
            NormPlacement::Pre => {
                // 6. y = s + drop(f)  =>  ds = g, df = drop'(g)               (d1 = df)
                dropped_backward(&mut cc.d1, &cc.g, c.dropout, cc.key2);
                // 5. f = FF(l2)  =>  dl2 = FF'(df)                            (d2 = dl2)
                self.ff
                    .backward(Some(&mut cc.d2), &cc.d1, &cc.l2, &mut cc.ff);
                // 4. l2 = LN2(s)  =>  ds += LN2'(dl2)                         (d3 = LN2'(dl2))
                self.norm2.backward(&mut cc.d3, &cc.d2, &cc.s, &cc.ln2);
                add_assign(&mut cc.g, &cc.d3);
                // 3. s = x + drop(a)  =>  dx = ds, da = drop'(ds)            (d1 = da)
                dx.copy_from(&cc.g);
                dropped_backward(&mut cc.d1, &cc.g, p1, cc.key1);
                // 2. a = MHA(l1, l1)  =>  dl1 = dq + dkv                      (d2 = dl1)
                (self.self_attn).backward(
                    &mut cc.d2,
                    &mut cc.d3,
                    &cc.d1,
                    &cc.l1,
                    &cc.l1,
                    &mut cc.attn,
                );
                add_assign(&mut cc.d2, &cc.d3);
                // 1. l1 = LN1(x)  =>  dx += LN1'(dl1)
                self.norm1.backward(&mut cc.d3, &cc.d2, x, &cc.ln1);
                add_assign(dx, &cc.d3);
            }
            NormPlacement::SasRec => {
                // 6. y = l2 + drop(f)  =>  dl2 = g, df = drop'(g)             (d1 = df)
                dropped_backward(&mut cc.d1, &cc.g, c.dropout, cc.key2);
                // 5. f = FF(l2)  =>  dl2 += FF'(df)
                self.ff
                    .backward(Some(&mut cc.d2), &cc.d1, &cc.l2, &mut cc.ff);
                add_assign(&mut cc.g, &cc.d2);
                // 4. l2 = LN2(s)  =>  ds = LN2'(dl2)                          (d1 = ds)
                self.norm2.backward(&mut cc.d1, &cc.g, &cc.s, &cc.ln2);
                // 3. s = l1 + a  =>  dl1 = ds, da = ds
                // 2. a = MHA(l1, x)  =>  dl1 += dq, dx = dkv                  (d2 = dq)
                (self.self_attn).backward(&mut cc.d2, dx, &cc.d1, &cc.l1, x, &mut cc.attn);
                add_assign(&mut cc.d1, &cc.d2);
                // 1. l1 = LN1(x)  =>  dx += LN1'(dl1)
                self.norm1.backward(&mut cc.d3, &cc.d1, x, &cc.ln1);
                add_assign(dx, &cc.d3);
            }
        }
    }
}

impl<T: Float> Module<T> for TransformerBlock<T> {
    // PyTorch's `named_parameters()` order for `TransformerEncoderLayer`.
    fn visit_params(&self, f: &mut dyn FnMut(&Param<T>)) {
        self.self_attn.visit_params(f);
        self.ff.visit_params(f);
        self.norm1.visit_params(f);
        self.norm2.visit_params(f);
    }

    fn visit_params_mut(&mut self, f: &mut dyn FnMut(&mut Param<T>)) {
        self.self_attn.visit_params_mut(f);
        self.ff.visit_params_mut(f);
        self.norm1.visit_params_mut(f);
        self.norm2.visit_params_mut(f);
    }
}

/// A stack of [`TransformerBlock`]s (`prefix.layers.{i}.*`) with an optional final layer norm
/// (`prefix.norm.*`): SASRec's `log2feats` without the embeddings when built with
/// [`TransformerBlockConfig::sasrec`] and a final norm.
#[derive(Clone, Debug)]
pub struct TransformerEncoder<T> {
    /// The blocks, applied in order.
    pub layers: Vec<TransformerBlock<T>>,
    /// Final layer norm (SASRec's `last_layernorm`), if any.
    pub norm: Option<LayerNorm<T>>,
}

/// Caches and intermediate outputs of a [`TransformerEncoder`].
#[derive(Clone, Debug)]
pub struct TransformerEncoderCache<T> {
    blocks: Vec<TransformerBlockCache<T>>,
    /// Output of block `i` (the input of block `i + 1` or of the final norm).
    hidden: Vec<Tensor<T>>,
    norm: LayerNormCache<T>,
    dh: [Tensor<T>; 2],
}

impl<T: Float> TransformerEncoderCache<T> {
    /// A cache for `encoder` on inputs `[batch, seq, d_model]`.
    pub fn new(encoder: &TransformerEncoder<T>, batch: usize, seq: usize) -> Self {
        let d = encoder.layers[0].config.d_model;
        let s = [batch, seq, d];
        Self {
            blocks: (encoder.layers.iter())
                .map(|l| TransformerBlockCache::new(&l.config, batch, seq))
                .collect(),
            hidden: encoder.layers.iter().map(|_| Tensor::zeros(&s)).collect(),
            norm: LayerNormCache::new(batch * seq),
            dh: [Tensor::zeros(&s), Tensor::zeros(&s)],
        }
    }

    /// The cache of block `i` (attention weights of layer `i`: `block(i).attention().weights()`).
    pub fn block(&self, i: usize) -> &TransformerBlockCache<T> {
        &self.blocks[i]
    }
}

impl<T: Float> TransformerEncoder<T> {
    /// `num_layers` blocks named `prefix.layers.{i}`, each with its own dropout seed
    /// (`config.seed + i`), and a final norm `prefix.norm` (eps `config.eps`) if `final_norm`.
    ///
    /// # Errors
    /// [`AttnConfigError`] if the configuration is invalid or `num_layers` is 0.
    pub fn new(
        prefix: &str,
        config: &TransformerBlockConfig,
        num_layers: usize,
        final_norm: bool,
        rng: &mut Rng,
    ) -> Result<Self, AttnConfigError> {
        check_positive("num_layers", num_layers)?;
        let layers = (0..num_layers)
            .map(|i| {
                let mut c = config.clone();
                c.seed = config.seed.wrapping_add(i as u64);
                TransformerBlock::new(&join(prefix, &format!("layers.{i}")), c, rng)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let norm =
            final_norm.then(|| LayerNorm::new(&join(prefix, "norm"), config.d_model, config.eps));
        Ok(Self { layers, norm })
    }

    /// Forward through every block, then the final norm. `x`, `y`: `[batch, seq, d]`.
    pub fn forward(
        &self,
        y: &mut Tensor<T>,
        cache: &mut TransformerEncoderCache<T>,
        x: &Tensor<T>,
        key_keep: Option<&[bool]>,
        phase: Phase,
    ) {
        for h in cache.hidden.iter_mut() {
            if h.shape() != x.shape() {
                h.resize(x.shape());
            }
        }
        for (i, layer) in self.layers.iter().enumerate() {
            let (done, rest) = cache.hidden.split_at_mut(i);
            let input = if i == 0 { x } else { &done[i - 1] };
            layer.forward(&mut rest[0], &mut cache.blocks[i], input, key_keep, phase);
        }
        let last = cache.hidden.last().expect("at least one layer");
        match &self.norm {
            Some(n) => {
                cache.norm.mean.resize(&[last.rows()]);
                cache.norm.rstd.resize(&[last.rows()]);
                n.forward(y, &mut cache.norm, last);
            }
            None => y.copy_from(last),
        }
    }

    /// Backward of [`TransformerEncoder::forward`]: parameter gradients `+=`, `dx =`.
    pub fn backward(
        &mut self,
        dx: &mut Tensor<T>,
        dy: &Tensor<T>,
        x: &Tensor<T>,
        key_keep: Option<&[bool]>,
        cache: &mut TransformerEncoderCache<T>,
    ) {
        for t in cache.dh.iter_mut() {
            if t.shape() != x.shape() {
                t.resize(x.shape());
            }
        }
        let [da, db] = &mut cache.dh;
        let n = self.layers.len();
        match &mut self.norm {
            Some(norm) => norm.backward(da, dy, &cache.hidden[n - 1], &cache.norm),
            None => da.copy_from(dy),
        }
        for i in (0..n).rev() {
            let input = if i == 0 { x } else { &cache.hidden[i - 1] };
            let out = if i == 0 { &mut *dx } else { &mut *db };
            self.layers[i].backward(out, da, input, key_keep, &mut cache.blocks[i]);
            if i > 0 {
                std::mem::swap(da, db);
            }
        }
    }
}

impl<T: Float> Module<T> for TransformerEncoder<T> {
    fn visit_params(&self, f: &mut dyn FnMut(&Param<T>)) {
        for l in &self.layers {
            l.visit_params(f);
        }
        if let Some(n) = &self.norm {
            n.visit_params(f);
        }
    }

    fn visit_params_mut(&mut self, f: &mut dyn FnMut(&mut Param<T>)) {
        for l in &mut self.layers {
            l.visit_params_mut(f);
        }
        if let Some(n) = &mut self.norm {
            n.visit_params_mut(f);
        }
    }
}
