//! The gradient-check suite: every layer and loss of this crate, built in `f64` from a seed and a
//! [`SuiteShape`], run forward and backward once, and compared with central differences.
//!
//! Each check follows the recipe of the parent module: a random projection loss `L = sum(y * r)` (so
//! `dL/dy = r`), the hand-written backward with `dy = r`, then [`check_module`] over every parameter and
//! [`check_input`] over every input that has a gradient. Layers that take a padding mask get a batch
//! with padding (sequence `i` is left-padded by `i % seq` positions, so every sequence keeps at least
//! one real position and, from the second sequence on, some padding), and every dropout probability is
//! 0 except in the [`dropout`] check itself, where the mask is fixed by the seed so the layer is linear.
//!
//! [`CASES`] lists them all; [`run_suite`] runs every case and flattens the result into [`SuiteRow`]s,
//! one per checked tensor. `cargo xtask gradcheck` prints that table; the test
//! `crates/seqrec-nn/tests/gradcheck_suite.rs` runs it at [`SuiteShape::TINY`].
//!
//! ```
//! use seqrec_nn::gradcheck::suite::{run_suite, SuiteShape};
//!
//! let rows = run_suite(&SuiteShape::TINY, 7).unwrap();
//! assert!(rows.iter().all(|r| r.pass));
//! assert!(rows.iter().any(|r| r.layer == "lstm" && r.tensor == "c0"));
//! ```

use seqrec_tensor::{Gelu, Tensor};

use super::{GradError, GradTolerance, check_input, check_module, dot};
use crate::init::Rng;
use crate::loss::{
    bce_with_logits, bpr, bpr_max, gbce, gbce_beta, sampled_softmax, softmax_cross_entropy,
};
use crate::{
    Activation, AttentionMask, AttentionPooling, AttentionPoolingCache, AttentionPoolingConfig,
    Dropout, DropoutCache, Embedding, FeedForward, FeedForwardCache, FeedForwardConfig, Gru,
    LayerNorm, LayerNormCache, Linear, Lstm, MhaCache, MhaConfig, Module, MultiheadAttention,
    NnError, NormPlacement, Padding, Param, Phase, PositionMask, PositionalEmbedding, RnnCache,
    RnnConfig, RnnState, TransformerBlock, TransformerBlockCache, TransformerBlockConfig,
    TransformerEncoder, TransformerEncoderCache,
};

/// The sizes every check is built from.
///
/// A width of 2 (or a head dimension feeding a layer norm over 2 elements) makes a layer norm nearly a
/// sign function, whose third derivative is so large that the central difference at step 1e-5 misses
/// [`GradTolerance::STRICT`]; use widths of 3 or more.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SuiteShape {
    /// Sequences in the batch.
    pub batch: usize,
    /// Positions per sequence.
    pub seq: usize,
    /// Model width `d` (embedding, attention, hidden state).
    pub width: usize,
    /// Attention heads (must divide `width`).
    pub heads: usize,
    /// Blocks of the transformer encoder and layers of the GRU / LSTM.
    pub layers: usize,
    /// Real items; embedding tables and the full cross-entropy have `items + 1` rows (id 0 = padding).
    pub items: usize,
    /// Sampled negatives per position for the sampled losses (logits `[batch * seq, 1 + negatives]`).
    pub negatives: usize,
}

impl SuiteShape {
    /// `cargo xtask gradcheck`'s default: larger than the unit tests, a few seconds in release.
    pub const DEFAULT: Self = Self {
        batch: 3,
        seq: 6,
        width: 8,
        heads: 2,
        layers: 2,
        items: 30,
        negatives: 4,
    };

    /// The smallest shape that still exercises padding, two heads and two layers (fast in debug builds).
    pub const TINY: Self = Self {
        batch: 2,
        seq: 3,
        width: 4,
        heads: 2,
        layers: 2,
        items: 6,
        negatives: 2,
    };

    /// Checks that every size is positive, `heads` divides `width`, and `negatives < items` (gBCE's
    /// sampling rate `negatives / (items - 1)` must be at most 1).
    ///
    /// # Errors
    /// [`NnError::InvalidConfig`] naming the field.
    pub fn validate(&self) -> Result<(), NnError> {
        for (field, v) in [
            ("SuiteShape.batch", self.batch),
            ("SuiteShape.seq", self.seq),
            ("SuiteShape.width", self.width),
            ("SuiteShape.heads", self.heads),
            ("SuiteShape.layers", self.layers),
            ("SuiteShape.negatives", self.negatives),
        ] {
            if v == 0 {
                return Err(NnError::config(field, v, "must be at least 1"));
            }
        }
        if !self.width.is_multiple_of(self.heads) {
            return Err(NnError::config(
                "SuiteShape.heads",
                self.heads,
                format!("must divide width = {}", self.width),
            ));
        }
        if self.items < self.negatives + 1 {
            return Err(NnError::config(
                "SuiteShape.items",
                self.items,
                format!("must be at least negatives + 1 = {}", self.negatives + 1),
            ));
        }
        Ok(())
    }

    /// Positions in the batch, `batch * seq`.
    fn rows(&self) -> usize {
        self.batch * self.seq
    }

    /// Keep flags `[batch * seq]`: sequence `i` is left-padded by `i % seq` positions.
    fn keep(&self) -> Vec<bool> {
        (0..self.rows())
            .map(|p| p % self.seq >= (p / self.seq) % self.seq)
            .collect()
    }
}

impl Default for SuiteShape {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// One entry of the suite: a layer or loss in one configuration.
#[derive(Clone, Copy, Debug)]
pub struct SuiteCase {
    /// The name printed in the table and accepted by `cargo xtask gradcheck --only`.
    pub name: &'static str,
    /// The public type (layer) or function (loss) of this crate the case checks.
    pub covers: &'static str,
    /// Builds the layer from the shape and seed, runs forward and backward, returns one error per tensor.
    pub run: fn(&SuiteShape, u64, GradTolerance) -> Vec<GradError>,
}

/// Every case of the suite, in table order.
pub const CASES: &[SuiteCase] = &[
    case("linear", "Linear", linear),
    case("layer_norm", "LayerNorm", layer_norm),
    case("embedding", "Embedding", embedding),
    case(
        "positional_embedding",
        "PositionalEmbedding",
        positional_embedding,
    ),
    case("dropout", "Dropout", dropout),
    case("feed_forward", "FeedForward", feed_forward),
    case("mha_causal", "MultiheadAttention", mha_causal),
    case("mha_bidirectional", "MultiheadAttention", mha_bidirectional),
    case(
        "mha_causal_no_out_proj",
        "MultiheadAttention",
        mha_causal_no_out_proj,
    ),
    case("block_post", "TransformerBlock", block_post),
    case("block_pre", "TransformerBlock", block_pre),
    case("block_sasrec", "TransformerBlock", block_sasrec),
    case("block_sasrec_paper", "TransformerBlock", block_sasrec_paper),
    case("sasrec_encoder", "TransformerEncoder", sasrec_encoder),
    case("gru", "Gru", gru),
    case("lstm", "Lstm", lstm),
    case("attention_pooling", "AttentionPooling", attention_pooling),
    case(
        "softmax_cross_entropy",
        "softmax_cross_entropy",
        loss_softmax_cross_entropy,
    ),
    case("bce_with_logits", "bce_with_logits", loss_bce_with_logits),
    case("sampled_softmax", "sampled_softmax", loss_sampled_softmax),
    case("bpr", "bpr", loss_bpr),
    case("bpr_max", "bpr_max", loss_bpr_max),
    case("gbce", "gbce", loss_gbce),
];

const fn case(
    name: &'static str,
    covers: &'static str,
    run: fn(&SuiteShape, u64, GradTolerance) -> Vec<GradError>,
) -> SuiteCase {
    SuiteCase { name, covers, run }
}

/// One line of the table: the worst element of one tensor of one case.
#[derive(Clone, Debug, PartialEq)]
pub struct SuiteRow {
    /// [`SuiteCase::name`].
    pub layer: &'static str,
    /// Parameter name (PyTorch's naming) or input name (`x`, `h0`, `logits`, ...).
    pub tensor: String,
    /// Elements checked.
    pub elements: usize,
    /// Largest absolute error.
    pub max_abs: f64,
    /// Largest relative error (over elements whose gradient is above 1e-12).
    pub max_rel: f64,
    /// Largest error over its tolerance (the tolerance the suite ran with); at most 1 passes.
    pub worst_ratio: f64,
    /// Every element within the tolerance.
    pub pass: bool,
}

impl SuiteRow {
    fn new(layer: &'static str, e: &GradError) -> Self {
        Self {
            layer,
            tensor: e.name.clone(),
            elements: e.len,
            max_abs: e.max_abs,
            max_rel: e.max_rel,
            worst_ratio: e.worst_ratio,
            pass: e.passes(),
        }
    }
}

/// Runs every case of [`CASES`] at `shape` under [`GradTolerance::STRICT`] and returns one row per
/// checked tensor.
///
/// A case that checks nothing yields a failing row named `<nothing checked>`.
///
/// # Errors
/// [`NnError::InvalidConfig`] if `shape` is invalid (see [`SuiteShape::validate`]).
pub fn run_suite(shape: &SuiteShape, seed: u64) -> Result<Vec<SuiteRow>, NnError> {
    run_cases(shape, seed, GradTolerance::STRICT, CASES)
}

/// Runs the given cases (e.g. from [`find_cases`]) at `shape` under `tol`; see [`run_suite`].
///
/// [`GradTolerance::STRICT`]'s absolute part (1e-9) sits near the round-off floor of a central
/// difference, about `f64::EPSILON * |terms of L| / EPS`: at shapes much larger than
/// [`SuiteShape::DEFAULT`] gradients that are exactly zero (the key part of `in_proj_bias`, which
/// softmax ignores) show numeric values of a few 1e-9, so a larger shape needs a larger `absolute`.
///
/// # Errors
/// [`NnError::InvalidConfig`] if `shape` is invalid, `cases` is empty, or a tolerance is negative or
/// not finite.
pub fn run_cases(
    shape: &SuiteShape,
    seed: u64,
    tol: GradTolerance,
    cases: &[SuiteCase],
) -> Result<Vec<SuiteRow>, NnError> {
    shape.validate()?;
    for (field, v) in [
        ("GradTolerance.relative", tol.relative),
        ("GradTolerance.absolute", tol.absolute),
    ] {
        if !(v.is_finite() && v >= 0.0) {
            return Err(NnError::config(field, v, "must be finite and >= 0"));
        }
    }
    if cases.is_empty() {
        return Err(NnError::config("gradcheck cases", 0, "nothing to check"));
    }
    let mut rows = Vec::new();
    for c in cases {
        let errors = (c.run)(shape, seed, tol);
        if errors.is_empty() {
            rows.push(SuiteRow {
                layer: c.name,
                tensor: "<nothing checked>".into(),
                elements: 0,
                max_abs: 0.0,
                max_rel: 0.0,
                worst_ratio: f64::INFINITY,
                pass: false,
            });
        }
        rows.extend(errors.iter().map(|e| SuiteRow::new(c.name, e)));
    }
    Ok(rows)
}

/// The cases named in `names` (exact [`SuiteCase::name`]s), in the order given.
///
/// # Errors
/// [`NnError::InvalidConfig`] for the first unknown name, listing the known ones.
pub fn find_cases<S: AsRef<str>>(names: &[S]) -> Result<Vec<SuiteCase>, NnError> {
    names
        .iter()
        .map(|n| {
            let n = n.as_ref();
            CASES.iter().find(|c| c.name == n).copied().ok_or_else(|| {
                let known: Vec<&str> = CASES.iter().map(|c| c.name).collect();
                NnError::config(
                    "gradcheck --only",
                    n,
                    format!("unknown case; known: {}", known.join(", ")),
                )
            })
        })
        .collect()
}

// ---------------------------------------------------------------- helpers

/// Checks every parameter of `m`, then the input `x` against `dx`, for the loss `loss(m, x)`.
fn check_layer<M: Module<f64>>(
    tol: GradTolerance,
    m: &mut M,
    x: &mut Tensor<f64>,
    dx: &Tensor<f64>,
    loss: impl Fn(&M, &Tensor<f64>) -> f64,
) -> Vec<GradError> {
    let x0 = x.clone();
    let mut errors = check_module(m, tol, &mut |m: &mut M| loss(m, &x0));
    errors.push(check_input("x", x, dx, tol, &mut |x| loss(m, x)));
    errors
}

/// Random non-trivial layer-norm affine parameters (the defaults 1 and 0 hide bugs).
fn perturb_norms<M: Module<f64>>(m: &mut M, rng: &mut Rng) {
    m.visit_params_mut(&mut |p: &mut Param<f64>| {
        if p.name.contains("norm") {
            let base = if p.name.ends_with("weight") { 1.0 } else { 0.0 };
            for v in p.value.as_mut_slice() {
                *v = base + rng.uniform(0.3);
            }
        }
    });
}

/// Item ids `[batch * seq]`: 0 at padded positions, uniform in `1..=items` elsewhere.
fn item_ids(s: &SuiteShape, rng: &mut Rng) -> Vec<u32> {
    s.keep()
        .iter()
        .map(|&k| {
            if k {
                1 + (rng.next_u64() % s.items as u64) as u32
            } else {
                0
            }
        })
        .collect()
}

/// `r` with rows at padded positions zeroed (a loss over real positions only).
fn zero_padded(mut r: Tensor<f64>, keep: &[bool]) -> Tensor<f64> {
    let c = r.cols();
    for (row, &k) in r.as_mut_slice().chunks_exact_mut(c).zip(keep) {
        if !k {
            row.fill(0.0);
        }
    }
    r
}

// ---------------------------------------------------------------- core layers

/// [`Linear`] `width -> 2 * width` with bias on `x: [batch, seq, width]`: `weight`, `bias`, `x`.
pub fn linear(s: &SuiteShape, seed: u64, tol: GradTolerance) -> Vec<GradError> {
    let mut rng = Rng::new(seed);
    let (b, t, d, o) = (s.batch, s.seq, s.width, 2 * s.width);
    let mut fc = Linear::<f64>::new("fc", d, o, true, &mut rng);
    fc.bias.as_mut().expect("built with bias").value = rng.uniform_tensor(&[o], 0.5);
    let mut x = rng.normal_tensor::<f64>(&[b, t, d], 1.0);
    let r = rng.normal_tensor::<f64>(&[b, t, o], 1.0);
    let mut y = Tensor::zeros(&[b, t, o]);
    let mut dx = Tensor::zeros(&[b, t, d]);
    fc.zero_grad();
    fc.forward(&mut y, &x);
    fc.backward(Some(&mut dx), &r, &x);
    check_layer(tol, &mut fc, &mut x, &dx, |m, x| {
        let mut y = Tensor::zeros(&[b, t, o]);
        m.forward(&mut y, x);
        dot(&y, &r)
    })
}

/// [`LayerNorm`] over `width` on `[batch * seq, width]` rows (eps 1e-5, random affine): `weight`,
/// `bias`, `x`.
pub fn layer_norm(s: &SuiteShape, seed: u64, tol: GradTolerance) -> Vec<GradError> {
    let mut rng = Rng::new(seed);
    let (rows, d) = (s.rows(), s.width);
    let mut ln = LayerNorm::<f64>::new("ln", d, 1e-5);
    perturb_norms(&mut ln, &mut rng);
    let mut x = rng.normal_tensor::<f64>(&[rows, d], 1.5);
    let r = rng.normal_tensor::<f64>(&[rows, d], 1.0);
    let mut y = Tensor::zeros(&[rows, d]);
    let mut dx = Tensor::zeros(&[rows, d]);
    let mut cache = LayerNormCache::new(rows);
    ln.zero_grad();
    ln.forward(&mut y, &mut cache, &x);
    ln.backward(&mut dx, &r, &x, &cache);
    check_layer(tol, &mut ln, &mut x, &dx, |m, x| {
        let mut y = Tensor::zeros(&[rows, d]);
        m.forward(&mut y, &mut LayerNormCache::new(rows), x);
        dot(&y, &r)
    })
}

/// [`Embedding`] of `items + 1` rows (padding id 0 skipped) looked up by a padded batch of ids:
/// `weight` (ids have no gradient). `r` is zero at padded positions, as a masked loss makes it.
pub fn embedding(s: &SuiteShape, seed: u64, tol: GradTolerance) -> Vec<GradError> {
    let mut rng = Rng::new(seed);
    let (b, t, d) = (s.batch, s.seq, s.width);
    let mut emb = Embedding::<f64>::new("emb", s.items + 1, d, 1.0, Padding::Skip(0), &mut rng)
        .expect("validated shape");
    let ids = item_ids(s, &mut rng);
    let r = zero_padded(rng.normal_tensor::<f64>(&[b * t, d], 1.0), &s.keep());
    emb.zero_grad();
    emb.backward(&r.clone().reshaped(&[b, t, d]), &ids);
    check_module(&mut emb, tol, &mut |m: &mut Embedding<f64>| {
        let mut y = Tensor::zeros(&[b * t, d]);
        m.forward(&mut y, &ids);
        dot(&y, &r)
    })
}

/// [`PositionalEmbedding`] (`max_len = seq`) skipping padded positions: `weight` and `x` (whose
/// gradient is `dy` itself). `r` is non-zero at padded positions too: they pass `x` through, so the
/// check also covers "padding gets no position".
pub fn positional_embedding(s: &SuiteShape, seed: u64, tol: GradTolerance) -> Vec<GradError> {
    let mut rng = Rng::new(seed);
    let (b, t, d) = (s.batch, s.seq, s.width);
    let mut pos =
        PositionalEmbedding::<f64>::new("pos", t, d, 1.0, &mut rng).expect("validated shape");
    let ids = item_ids(s, &mut rng);
    let mask = PositionMask::SkipPadding(&ids);
    let mut x = rng.normal_tensor::<f64>(&[b, t, d], 1.0);
    let r = rng.normal_tensor::<f64>(&[b, t, d], 1.0);
    let mut y = Tensor::zeros(&[b, t, d]);
    pos.zero_grad();
    pos.forward(&mut y, &x, mask);
    pos.backward(&r, mask);
    // The layer writes no dx: the input gradient is dy = r (identity).
    check_layer(tol, &mut pos, &mut x, &r.clone(), |m, x| {
        let mut y = Tensor::zeros(&[b, t, d]);
        m.forward(&mut y, x, mask);
        dot(&y, &r)
    })
}

/// [`Dropout`] with `p = 0.25` on `[batch * seq, width]`: `x`. The mask is a function of the seed and
/// the call counter, so replaying counter 0 makes the layer linear and the check exact (`p = 0` would
/// check only the identity).
pub fn dropout(s: &SuiteShape, seed: u64, tol: GradTolerance) -> Vec<GradError> {
    let mut rng = Rng::new(seed);
    let (rows, d) = (s.rows(), s.width);
    let mut x = rng.normal_tensor::<f64>(&[rows, d], 1.0);
    let r = rng.normal_tensor::<f64>(&[rows, d], 1.0);
    let mut drop = Dropout::new(0.25, seed).expect("p in [0, 1)");
    let mut y = Tensor::zeros(&[rows, d]);
    let mut cache = DropoutCache::new();
    drop.forward(&mut y, &mut cache, &x);
    let mut dx = Tensor::zeros(&[rows, d]);
    drop.backward(&mut dx, &r, &cache);
    let mut replay = Dropout::new(0.25, seed).expect("p in [0, 1)");
    vec![check_input("x", &mut x, &dx, tol, &mut |x| {
        replay.set_counter(0);
        let mut y = Tensor::zeros(&[rows, d]);
        replay.forward(&mut y, &mut DropoutCache::new(), x);
        dot(&y, &r)
    })]
}

// ---------------------------------------------------------------- attention layers

/// [`FeedForward`] `width -> 4 width -> width` with exact GELU (BERT4Rec's), dropout 0:
/// `linear1.*`, `linear2.*`, `x`.
pub fn feed_forward(s: &SuiteShape, seed: u64, tol: GradTolerance) -> Vec<GradError> {
    let mut rng = Rng::new(seed);
    let (b, t, d) = (s.batch, s.seq, s.width);
    let config = FeedForwardConfig {
        d_model: d,
        d_ff: 4 * d,
        activation: Activation::Gelu(Gelu::Erf),
        dropout: 0.0,
        seed,
    };
    let mut ff = FeedForward::<f64>::new("ff", config.clone(), &mut rng).expect("validated shape");
    let mut x = rng.normal_tensor::<f64>(&[b, t, d], 1.0);
    let r = rng.normal_tensor::<f64>(&[b, t, d], 1.0);
    let phase = Phase::Train { step: 1 };
    let mut cache = FeedForwardCache::new(&config, b * t);
    let mut y = Tensor::zeros(&[b, t, d]);
    ff.forward(&mut y, &mut cache, &x, phase);
    ff.zero_grad();
    let mut dx = Tensor::zeros(&[b, t, d]);
    ff.backward(Some(&mut dx), &r, &x, &mut cache);
    check_layer(tol, &mut ff, &mut x, &dx, |m, x| {
        let mut c = FeedForwardCache::new(m.config(), b * t);
        let mut y = Tensor::zeros(&[b, t, d]);
        m.forward(&mut y, &mut c, x, phase);
        dot(&y, &r)
    })
}

/// [`MultiheadAttention`] (causal) with separate query and key/value inputs and a padded batch:
/// `in_proj_*`, `out_proj.*`, `x_q`, `x_kv`.
pub fn mha_causal(s: &SuiteShape, seed: u64, tol: GradTolerance) -> Vec<GradError> {
    mha(s, seed, tol, AttentionMask::Causal)
}

/// [`MultiheadAttention`] (bidirectional, BERT4Rec) with a padded batch; as [`mha_causal`].
pub fn mha_bidirectional(s: &SuiteShape, seed: u64, tol: GradTolerance) -> Vec<GradError> {
    mha(s, seed, tol, AttentionMask::Bidirectional)
}

/// [`MultiheadAttention::without_output_projection`] (causal, the SASRec paper's attention):
/// `in_proj_*`, `x_q`, `x_kv`.
pub fn mha_causal_no_out_proj(s: &SuiteShape, seed: u64, tol: GradTolerance) -> Vec<GradError> {
    mha_with(s, seed, tol, AttentionMask::Causal, false)
}

fn mha(s: &SuiteShape, seed: u64, tol: GradTolerance, mask: AttentionMask) -> Vec<GradError> {
    mha_with(s, seed, tol, mask, true)
}

fn mha_with(
    s: &SuiteShape,
    seed: u64,
    tol: GradTolerance,
    mask: AttentionMask,
    output_projection: bool,
) -> Vec<GradError> {
    let mut rng = Rng::new(seed);
    let (b, t, d) = (s.batch, s.seq, s.width);
    let config = MhaConfig {
        d_model: d,
        num_heads: s.heads,
        mask,
        dropout: 0.0,
        seed,
    };
    let mut m =
        MultiheadAttention::<f64>::new("attn", config.clone(), &mut rng).expect("validated shape");
    // Non-zero biases, so their gradients and the dead-row rule are exercised.
    m.in_proj_bias.value = rng.uniform_tensor(&[3 * d], 0.5);
    // Drawn either way, so that both variants see the same inputs for a seed.
    let bias = rng.uniform_tensor(&[d], 0.5);
    if output_projection {
        let proj = m.out_proj.as_mut().expect("built with the projection");
        proj.bias.as_mut().expect("built with bias").value = bias;
    } else {
        m = m.without_output_projection();
    }
    let mut xq = rng.normal_tensor::<f64>(&[b, t, d], 1.0);
    let mut xkv = rng.normal_tensor::<f64>(&[b, t, d], 1.0);
    let r = rng.normal_tensor::<f64>(&[b, t, d], 1.0);
    let keep = s.keep();
    let keep = Some(keep.as_slice());
    let phase = Phase::Train { step: 3 };
    let loss = |m: &MultiheadAttention<f64>, xq: &Tensor<f64>, xkv: &Tensor<f64>| {
        let mut cache = MhaCache::new(m.config(), b, t);
        let mut out = Tensor::zeros(&[b, t, d]);
        m.forward(&mut out, &mut cache, xq, xkv, keep, phase);
        dot(&out, &r)
    };
    let mut cache = MhaCache::new(&config, b, t);
    let mut out = Tensor::zeros(&[b, t, d]);
    m.forward(&mut out, &mut cache, &xq, &xkv, keep, phase);
    m.zero_grad();
    let (mut dxq, mut dxkv) = (Tensor::zeros(&[b, t, d]), Tensor::zeros(&[b, t, d]));
    m.backward(&mut dxq, &mut dxkv, &r, &xq, &xkv, &mut cache);
    let mut errors = check_module(&mut m, tol, &mut |m: &mut MultiheadAttention<f64>| {
        loss(m, &xq, &xkv)
    });
    let xkv0 = xkv.clone();
    errors.push(check_input("x_q", &mut xq, &dxq, tol, &mut |x| {
        loss(&m, x, &xkv0)
    }));
    errors.push(check_input("x_kv", &mut xkv, &dxkv, tol, &mut |x| {
        loss(&m, &xq, x)
    }));
    errors
}

/// [`TransformerBlock`] with [`NormPlacement::Post`] (BERT4Rec: bidirectional, GELU, `d_ff = 4 width`),
/// padded batch, random layer-norm affines: its 12 parameters and `x`.
pub fn block_post(s: &SuiteShape, seed: u64, tol: GradTolerance) -> Vec<GradError> {
    let config = TransformerBlockConfig {
        d_model: s.width,
        num_heads: s.heads,
        d_ff: 4 * s.width,
        activation: Activation::Gelu(Gelu::Erf),
        dropout: 0.0,
        mask: AttentionMask::Bidirectional,
        norm: NormPlacement::Post,
        eps: 1e-5,
        zero_padded_outputs: false,
        mask_padded_keys: true,
        output_projection: true,
        seed,
    };
    block(s, seed, tol, config)
}

/// [`TransformerBlock`] with [`NormPlacement::Pre`] (causal, tanh-approximated GELU, `d_ff = 2 width`,
/// eps 1e-5, padded outputs zeroed); as [`block_post`].
pub fn block_pre(s: &SuiteShape, seed: u64, tol: GradTolerance) -> Vec<GradError> {
    let config = TransformerBlockConfig {
        d_ff: 2 * s.width,
        activation: Activation::Gelu(Gelu::Tanh),
        eps: 1e-5,
        mask: AttentionMask::Causal,
        norm: NormPlacement::Pre,
        zero_padded_outputs: true,
        ..TransformerBlockConfig::sasrec(s.width, s.heads, 0.0, seed)
    };
    block(s, seed, tol, config)
}

/// [`TransformerBlock`] as [`block_sasrec`] without the attention's output projection (the SASRec
/// paper's block): its 10 parameters and `x`.
pub fn block_sasrec_paper(s: &SuiteShape, seed: u64, tol: GradTolerance) -> Vec<GradError> {
    let config = TransformerBlockConfig {
        output_projection: false,
        ..TransformerBlockConfig::sasrec(s.width, s.heads, 0.0, seed)
    };
    block(s, seed, tol, config)
}

/// [`TransformerBlock`] with [`NormPlacement::SasRec`], exactly [`TransformerBlockConfig::sasrec`]
/// (eps 1e-8) with dropout 0; as [`block_post`].
pub fn block_sasrec(s: &SuiteShape, seed: u64, tol: GradTolerance) -> Vec<GradError> {
    block(
        s,
        seed,
        tol,
        TransformerBlockConfig::sasrec(s.width, s.heads, 0.0, seed),
    )
}

fn block(
    s: &SuiteShape,
    seed: u64,
    tol: GradTolerance,
    config: TransformerBlockConfig,
) -> Vec<GradError> {
    let mut rng = Rng::new(seed);
    let (b, t, d) = (s.batch, s.seq, s.width);
    let mut m =
        TransformerBlock::<f64>::new("block", config.clone(), &mut rng).expect("validated shape");
    perturb_norms(&mut m, &mut rng);
    let mut x = rng.normal_tensor::<f64>(&[b, t, d], 1.0);
    let r = rng.normal_tensor::<f64>(&[b, t, d], 1.0);
    let keep = s.keep();
    let keep = Some(keep.as_slice());
    let phase = Phase::Train { step: 5 };
    let mut cache = TransformerBlockCache::new(&config, b, t);
    let mut y = Tensor::zeros(&[b, t, d]);
    m.forward(&mut y, &mut cache, &x, keep, phase);
    m.zero_grad();
    let mut dx = Tensor::zeros(&[b, t, d]);
    m.backward(&mut dx, &r, &x, keep, &mut cache);
    check_layer(tol, &mut m, &mut x, &dx, |m, x| {
        let mut c = TransformerBlockCache::new(m.config(), b, t);
        let mut y = Tensor::zeros(&[b, t, d]);
        m.forward(&mut y, &mut c, x, keep, phase);
        dot(&y, &r)
    })
}

/// The SASRec stack: [`TransformerEncoder`] of `layers` SASRec blocks and a final layer norm, padded
/// batch, random layer-norm affines, dropout 0: `12 layers + 2` parameters and `x`.
pub fn sasrec_encoder(s: &SuiteShape, seed: u64, tol: GradTolerance) -> Vec<GradError> {
    let mut rng = Rng::new(seed);
    let (b, t, d) = (s.batch, s.seq, s.width);
    let config = TransformerBlockConfig::sasrec(d, s.heads, 0.0, seed);
    let mut m = TransformerEncoder::<f64>::new("enc", &config, s.layers, true, &mut rng)
        .expect("validated shape");
    perturb_norms(&mut m, &mut rng);
    let mut x = rng.normal_tensor::<f64>(&[b, t, d], 1.0);
    let r = rng.normal_tensor::<f64>(&[b, t, d], 1.0);
    let keep = s.keep();
    let keep = Some(keep.as_slice());
    let phase = Phase::Train { step: 2 };
    let mut cache = TransformerEncoderCache::new(&m, b, t);
    let mut y = Tensor::zeros(&[b, t, d]);
    m.forward(&mut y, &mut cache, &x, keep, phase);
    m.zero_grad();
    let mut dx = Tensor::zeros(&[b, t, d]);
    m.backward(&mut dx, &r, &x, keep, &mut cache);
    check_layer(tol, &mut m, &mut x, &dx, |m, x| {
        let mut c = TransformerEncoderCache::new(m, b, t);
        let mut y = Tensor::zeros(&[b, t, d]);
        m.forward(&mut y, &mut c, x, keep, phase);
        dot(&y, &r)
    })
}

/// [`AttentionPooling`] (`d_att = width`) of `h: [batch, seq, width]` over real positions: `proj.*`,
/// `score.weight`, `h`.
pub fn attention_pooling(s: &SuiteShape, seed: u64, tol: GradTolerance) -> Vec<GradError> {
    let mut rng = Rng::new(seed);
    let (b, t, d) = (s.batch, s.seq, s.width);
    let cfg = AttentionPoolingConfig {
        d_model: d,
        d_att: d,
    };
    let mut m = AttentionPooling::<f64>::new("pool", &cfg, &mut rng).expect("validated shape");
    let mut h = rng.normal_tensor::<f64>(&[b, t, d], 1.0);
    let r = rng.normal_tensor::<f64>(&[b, d], 1.0);
    let keep = s.keep();
    let keep = Some(keep.as_slice());
    let loss = |m: &AttentionPooling<f64>, h: &Tensor<f64>| {
        let mut c = AttentionPoolingCache::new(&cfg, b, t);
        let mut pooled = Tensor::zeros(&[b, d]);
        let mut w = Tensor::zeros(&[b, t]);
        m.forward(&mut pooled, &mut w, &mut c, h, keep);
        dot(&pooled, &r)
    };
    let mut c = AttentionPoolingCache::new(&cfg, b, t);
    let mut pooled = Tensor::zeros(&[b, d]);
    let mut w = Tensor::zeros(&[b, t]);
    m.forward(&mut pooled, &mut w, &mut c, &h, keep);
    m.zero_grad();
    let mut dh = Tensor::zeros(&[b, t, d]);
    m.backward(&mut dh, &r, &h, &mut c);
    let mut errors = check_layer(tol, &mut m, &mut h, &dh, loss);
    if let Some(e) = errors.last_mut() {
        e.name = "h".into();
    }
    errors
}

// ---------------------------------------------------------------- recurrent layers

/// A GRU or an LSTM behind one interface, so both run through [`rnn`].
#[derive(Clone)]
enum Net {
    Gru(Gru<f64>),
    Lstm(Lstm<f64>),
}

impl Net {
    fn zero_state(&self, batch: usize) -> RnnState<f64> {
        match self {
            Net::Gru(n) => n.zero_state(batch),
            Net::Lstm(n) => n.zero_state(batch),
        }
    }

    fn new_cache(&self, batch: usize, seq: usize) -> RnnCache<f64> {
        match self {
            Net::Gru(n) => n.new_cache(batch, seq),
            Net::Lstm(n) => n.new_cache(batch, seq),
        }
    }

    fn forward(
        &self,
        out: &mut Tensor<f64>,
        last: &mut RnnState<f64>,
        cache: &mut RnnCache<f64>,
        x: &Tensor<f64>,
        mask: &[bool],
        init: &RnnState<f64>,
    ) {
        match self {
            Net::Gru(n) => n.forward(out, last, cache, x, Some(mask), Some(init)),
            Net::Lstm(n) => n.forward(out, last, cache, x, Some(mask), Some(init)),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn backward(
        &mut self,
        dx: &mut Tensor<f64>,
        dinit: &mut RnnState<f64>,
        dy: &Tensor<f64>,
        dlast: &RnnState<f64>,
        x: &Tensor<f64>,
        mask: &[bool],
        cache: &mut RnnCache<f64>,
    ) {
        match self {
            Net::Gru(n) => n.backward(Some(dx), Some(dinit), dy, Some(dlast), x, Some(mask), cache),
            Net::Lstm(n) => {
                n.backward(Some(dx), Some(dinit), dy, Some(dlast), x, Some(mask), cache)
            }
        }
    }
}

impl Module<f64> for Net {
    fn visit_params(&self, f: &mut dyn FnMut(&Param<f64>)) {
        match self {
            Net::Gru(n) => n.visit_params(f),
            Net::Lstm(n) => n.visit_params(f),
        }
    }

    fn visit_params_mut(&mut self, f: &mut dyn FnMut(&mut Param<f64>)) {
        match self {
            Net::Gru(n) => n.visit_params_mut(f),
            Net::Lstm(n) => n.visit_params_mut(f),
        }
    }
}

/// [`Gru`] with `layers` layers, `hidden = width`, a padded batch and a random initial state; the loss
/// also weighs the final state (`L = sum(y r) + sum(h_n r_h)`): `4 layers` parameters, `x`, `h0`.
pub fn gru(s: &SuiteShape, seed: u64, tol: GradTolerance) -> Vec<GradError> {
    let mut rng = Rng::new(seed);
    let net = Gru::new("gru", rnn_config(s), &mut rng).expect("validated shape");
    rnn(s, tol, Net::Gru(net), &mut rng)
}

/// [`Lstm`] as [`gru`], with the cell state too (`+ sum(c_n r_c)`): `4 layers` parameters, `x`, `h0`,
/// `c0`.
pub fn lstm(s: &SuiteShape, seed: u64, tol: GradTolerance) -> Vec<GradError> {
    let mut rng = Rng::new(seed);
    let net = Lstm::new("lstm", rnn_config(s), &mut rng).expect("validated shape");
    rnn(s, tol, Net::Lstm(net), &mut rng)
}

fn rnn_config(s: &SuiteShape) -> RnnConfig {
    RnnConfig {
        input_size: s.width,
        hidden_size: s.width,
        num_layers: s.layers,
    }
}

fn random_state(net: &Net, batch: usize, rng: &mut Rng) -> RnnState<f64> {
    let mut state = net.zero_state(batch);
    let shape = state.h.shape().to_vec();
    state.h = rng.normal_tensor(&shape, 1.0);
    if let Some(c) = &mut state.c {
        *c = rng.normal_tensor(&shape, 1.0);
    }
    state
}

fn rnn(s: &SuiteShape, tol: GradTolerance, mut net: Net, rng: &mut Rng) -> Vec<GradError> {
    let (b, t, d) = (s.batch, s.seq, s.width);
    let mask = s.keep();
    let mut x = rng.normal_tensor::<f64>(&[b, t, d], 1.0);
    let ry = rng.normal_tensor::<f64>(&[b, t, d], 1.0);
    let init = random_state(&net, b, rng);
    let rlast = random_state(&net, b, rng);
    let loss = |net: &Net, x: &Tensor<f64>, init: &RnnState<f64>| {
        let mut y = Tensor::zeros(&[b, t, d]);
        let mut last = net.zero_state(b);
        let mut cache = net.new_cache(b, t);
        net.forward(&mut y, &mut last, &mut cache, x, &mask, init);
        let mut l = dot(&y, &ry) + dot(&last.h, &rlast.h);
        if let (Some(c), Some(rc)) = (&last.c, &rlast.c) {
            l += dot(c, rc);
        }
        l
    };
    let mut y = Tensor::zeros(&[b, t, d]);
    let mut last = net.zero_state(b);
    let mut cache = net.new_cache(b, t);
    net.forward(&mut y, &mut last, &mut cache, &x, &mask, &init);
    net.zero_grad();
    let mut dx = Tensor::zeros(&[b, t, d]);
    let mut dinit = net.zero_state(b);
    net.backward(&mut dx, &mut dinit, &ry, &rlast, &x, &mask, &mut cache);

    let x0 = x.clone();
    let mut errors = check_module(&mut net, tol, &mut |n: &mut Net| loss(n, &x0, &init));
    errors.push(check_input("x", &mut x, &dx, tol, &mut |x| {
        loss(&net, x, &init)
    }));
    let mut h0 = init.h.clone();
    errors.push(check_input("h0", &mut h0, &dinit.h, tol, &mut |h| {
        let mut s0 = init.clone();
        s0.h = h.clone();
        loss(&net, &x0, &s0)
    }));
    if let (Some(c0), Some(dc0)) = (&init.c, &dinit.c) {
        let mut c0 = c0.clone();
        errors.push(check_input("c0", &mut c0, dc0, tol, &mut |c| {
            let mut s0 = init.clone();
            s0.c = Some(c.clone());
            loss(&net, &x0, &s0)
        }));
    }
    errors
}

// ---------------------------------------------------------------- losses

/// Checks `dlogits` of one loss at random `logits` against central differences of the loss value.
fn check_loss(
    tol: GradTolerance,
    logits: Tensor<f64>,
    loss: impl Fn(Option<&mut Tensor<f64>>, &Tensor<f64>) -> f64,
) -> Vec<GradError> {
    let mut logits = logits;
    // NaN-filled: the loss must overwrite every element, or the check fails.
    let mut d = Tensor::full(logits.shape(), f64::NAN);
    loss(Some(&mut d), &logits);
    vec![check_input("logits", &mut logits, &d, tol, &mut |x| {
        loss(None, x)
    })]
}

/// `[batch * seq, 1 + negatives]` logits (std 2) and the keep flags of the padded batch.
fn sampled_logits(s: &SuiteShape, rng: &mut Rng) -> (Tensor<f64>, Vec<bool>) {
    (
        rng.normal_tensor(&[s.rows(), 1 + s.negatives], 2.0),
        s.keep(),
    )
}

/// [`softmax_cross_entropy`] over `items + 1` classes with ignore index 0 at padded positions: `logits`.
pub fn loss_softmax_cross_entropy(s: &SuiteShape, seed: u64, tol: GradTolerance) -> Vec<GradError> {
    let mut rng = Rng::new(seed);
    let logits = rng.normal_tensor(&[s.rows(), s.items + 1], 2.0);
    let targets = item_ids(s, &mut rng);
    check_loss(tol, logits, |d, x| softmax_cross_entropy(d, x, &targets, 0))
}

/// [`bce_with_logits`] over one positive and `negatives` negatives per position: `logits`.
pub fn loss_bce_with_logits(s: &SuiteShape, seed: u64, tol: GradTolerance) -> Vec<GradError> {
    let (logits, valid) = sampled_logits(s, &mut Rng::new(seed));
    check_loss(tol, logits, |d, x| bce_with_logits(d, x, &valid))
}

/// [`sampled_softmax`] with a log-Q correction (`q` uniform in `[0.01, 0.51)`): `logits`.
pub fn loss_sampled_softmax(s: &SuiteShape, seed: u64, tol: GradTolerance) -> Vec<GradError> {
    let mut rng = Rng::new(seed);
    let (logits, valid) = sampled_logits(s, &mut rng);
    let log_q = Tensor::from_fn(logits.shape(), |_| (0.01 + 0.5 * rng.uniform01()).ln());
    check_loss(tol, logits, |d, x| {
        sampled_softmax(d, x, Some(&log_q), &valid)
    })
}

/// [`bpr`]: `logits`.
pub fn loss_bpr(s: &SuiteShape, seed: u64, tol: GradTolerance) -> Vec<GradError> {
    let (logits, valid) = sampled_logits(s, &mut Rng::new(seed));
    check_loss(tol, logits, |d, x| bpr(d, x, &valid))
}

/// [`bpr_max`] with score regularisation λ = 0.5: `logits`.
pub fn loss_bpr_max(s: &SuiteShape, seed: u64, tol: GradTolerance) -> Vec<GradError> {
    let (logits, valid) = sampled_logits(s, &mut Rng::new(seed));
    check_loss(tol, logits, |d, x| bpr_max(d, x, &valid, 0.5))
}

/// [`gbce`] with gSASRec's `t = 0.75` calibration for `negatives` out of `items`: `logits`.
pub fn loss_gbce(s: &SuiteShape, seed: u64, tol: GradTolerance) -> Vec<GradError> {
    let (logits, valid) = sampled_logits(s, &mut Rng::new(seed));
    let beta = gbce_beta(s.negatives, s.items, 0.75).expect("validated shape");
    check_loss(tol, logits, |d, x| gbce(d, x, &valid, beta))
}
