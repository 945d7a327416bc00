//! SASRec's inference-only forward for serving ([`SasrecNet::score_last_position`], reached through
//! `Model::score_serving` by the server and the evaluation): the same maths as the training forward in
//! eval mode, computed only where the scores read it.
//!
//! - **Packed real positions.** Each history keeps only its real (non-padding) slots, packed one after
//!   the other (`[n, d]` for `n` real positions), each with the positional embedding of its absolute
//!   window slot. The training forward gives padded slots zero inputs, masks them as keys and zeroes
//!   their outputs, and every other op is row-wise, so real positions see exactly the same inputs
//!   either way; left padding costs nothing.
//! - **Causal attention on the lower triangle only.** Queries of one history run in tiles of [`TILE`]
//!   rows; a tile multiplies with the keys up to its last query only, so blocks above the diagonal are
//!   never computed (inside the diagonal tile, the entries above it get weight 0 in the softmax rather
//!   than a mask over the whole square). Every packed key is real, so softmax rows need no mask.
//! - **Last block for the last position only.** Scores read the final hidden state of the last window
//!   slot, so the last block runs its query, attention row, output projection, norms and
//!   feed-forward for one row per history. It never forms its keys and values: `W_k` is folded into
//!   the query (`q . k_j = (W_k^T q) . x_j` plus a term that cancels in the softmax) and `W_v`
//!   applied after the weighted sum of the inputs (`sum_j p_j v_j = W_v sum_j p_j x_j + b_v`).
//! - **Inference kernels.** Layer norms and attention softmaxes run `seqrec_tensor::layernorm_rows`
//!   and `softmax_prefix` (AVX-512 `f32` with fused multiply-adds, rows held in registers), which
//!   round differently from the training kernels: served scores may differ in the last bits.
//! - **No dropout, nothing saved for backward, buffers reused.** Every buffer lives in
//!   [`ServeScratch`], owned by the network and resized in place (storage only grows), so a warm
//!   server allocates nothing per call. Histories run in groups of about [`GROUP_ROWS`] packed
//!   positions, so that a large batch keeps its activations in cache.
//! - **Parts on threads.** A batch of at least two groups' worth of positions is split into
//!   contiguous parts of about equal work, up to [`PARTS_PER_THREAD`] per thread of the current rayon
//!   pool (the server's `--model-threads`, the training run's `--threads` for evaluation), each with
//!   its own buffers. Every history is computed on its own, so the split changes no result
//!   (bit-identical on 1, 2 or 3 threads, tested).
//! - **bf16 on AMX tiles** (opt-in, [`SasrecNet::set_serving_precision`]): projections and
//!   feed-forwards through `seqrec_tensor::amx` with weights packed per call (a `memcmp` when
//!   unchanged); the attention of every block but the last packs each history's keys (as `K^T`)
//!   and values per head and runs `S = (scale Q) K^T` and `ctx = P V` per tile of queries on tiles,
//!   the prefix softmax's exponentials in `f32` between them. Tested against the `f32` path for
//!   closeness, not equality.
//! - **Item scoring** (`hidden [b, d] x table^T`): up to [`GEMV_MAX_ROWS`] rows run a matrix-vector
//!   kernel that streams the item table once (a GEMM would first pack the whole table, which costs as
//!   much as the product itself for one row); larger batches use the GEMM.
//!
//! Blocks that are not causal, do not mask padded keys or do not zero padded outputs (none of which
//! [`SasrecNet::new`] builds) are not supported: [`SasrecNet::score_last_position`] then runs the full
//! forward. `tests/sasrec_serve.rs` checks this path against [`SasrecNet::score`] (the training
//! forward in eval mode) for every norm placement, batch sizes around the GEMV threshold and histories
//! of every length.

use rayon::prelude::*;
use seqrec_nn::{Activation, FeedForward, Linear};
use seqrec_nn::{AttentionMask, LayerNorm, NormPlacement, TransformerBlock, TransformerEncoder};
use seqrec_tensor::amx::{self, AmxScratch, PackedB};
use seqrec_tensor::simd::{LANES, as_f32, as_f32_mut, lane_dot};
use seqrec_tensor::{
    Float, Tensor, Transpose, gelu_forward, gemm_slice, layernorm_rows, multiversion, relu_forward,
    softmax_prefix,
};

use super::SasrecNet;
use crate::model::{ModelError, Precision};
use crate::positions::Positions;

/// Query rows per attention tile.
const TILE: usize = 16;

/// Packed positions per group of histories (a group's activations, about a dozen `[rows, d]`
/// buffers, then stay within a core's L2 cache at `d = 50`).
const GROUP_ROWS: usize = 512;

/// Parts of a batch per thread of the pool, when there is more than one (see [`split_parts`]).
const PARTS_PER_THREAD: usize = 4;

/// Up to this many histories per call, the item scores are computed by the matrix-vector kernel.
pub(super) const GEMV_MAX_ROWS: usize = 4;

/// Marks a history whose last window slot is padding (it has no query row).
const NO_QUERY: usize = usize::MAX;

/// The activations of one block over some rows (all packed positions of a group, or the query rows
/// of the last block), each `[rows, d]` unless noted.
#[derive(Clone, Debug)]
struct Rows<T> {
    /// Block input and output.
    x: Tensor<T>,
    y: Tensor<T>,
    /// First norm output (SASRec/pre-LN: `LN1(x)`; post-LN: `LN1(x + a)`).
    l1: Tensor<T>,
    /// Queries (head `h` in columns `h dh..(h + 1) dh`).
    q: Tensor<T>,
    /// Attention context (heads merged), output projection, residual sum, second norm,
    /// feed-forward output.
    ctx: Tensor<T>,
    a: Tensor<T>,
    s: Tensor<T>,
    l2: Tensor<T>,
    f: Tensor<T>,
    /// Feed-forward hidden layer before and after the activation, `[rows, d_ff]`.
    ff_pre: Tensor<T>,
    ff_act: Tensor<T>,
}

impl<T: Float> Rows<T> {
    fn new() -> Self {
        let z = || Tensor::zeros(&[0, 1]);
        Self {
            x: z(),
            y: z(),
            l1: z(),
            q: z(),
            ctx: z(),
            a: z(),
            s: z(),
            l2: z(),
            f: z(),
            ff_pre: z(),
            ff_act: z(),
        }
    }
}

/// Buffers of the serving forward, kept between calls (see the module docs): one [`PartScratch`] per
/// part of the batch that runs on its own thread, and the final hidden states.
#[derive(Clone, Debug)]
pub(super) struct ServeScratch<T> {
    /// Whether the matrix products run in bf16 on AMX tiles (`f32` models only; see
    /// [`SasrecNet::set_serving_precision`]).
    bf16: bool,
    /// Every block's weights packed for the tiles, refreshed on every call (so that a model that
    /// trains between calls never serves stale weights); empty in `f32`.
    packed: Vec<PackedBlock>,
    parts: Vec<PartScratch<T>>,
    /// History bounds of the parts of the current batch (see [`split_parts`]).
    bounds: Vec<usize>,
    /// `[b, d]`: final hidden state of every history (the scoring input).
    h: Tensor<T>,
    /// `[1, d]`: a zero row, and the final hidden state of a history whose last slot is padding
    /// (`LN_final(0)`).
    zero: Tensor<T>,
    h_pad: Tensor<T>,
}

impl<T: Float> ServeScratch<T> {
    /// Empty buffers (they grow on first use).
    pub(super) fn new() -> Self {
        let z = || Tensor::zeros(&[0, 1]);
        Self {
            bf16: false,
            packed: Vec::new(),
            parts: Vec::new(),
            bounds: Vec::new(),
            h: z(),
            zero: z(),
            h_pad: z(),
        }
    }
}

/// The buffers of one part of a batch, reused group after group. `n` is the number of real positions
/// of the current group, `q` the number of its histories whose last slot is real.
#[derive(Clone, Debug)]
struct PartScratch<T> {
    /// The part's histories: rows `histories.start..histories.end` of the batch.
    histories: std::ops::Range<usize>,
    /// `[g, d]`: final hidden state of the part's `g` histories.
    h: Tensor<T>,
    /// `[g + 1]` for the `g` histories of the group: history `r`'s packed rows are
    /// `start[r]..start[r + 1]`.
    start: Vec<usize>,
    /// `[n]`: item id and position-table row (window slot, or index among the history's items) of
    /// each packed row.
    ids: Vec<u32>,
    slots: Vec<usize>,
    /// `[g]`: packed row of history `r`'s last slot, or [`NO_QUERY`].
    query: Vec<usize>,
    /// `[q]`: the packed rows of `query` that are not [`NO_QUERY`], in history order.
    qrows: Vec<usize>,
    /// Every packed position, and the query rows of the last block.
    full: Rows<T>,
    last: Rows<T>,
    /// Keys transposed per history (history `r`'s `n_r` keys are a `[d, n_r]` block at element
    /// `start[r] d`, so that attention reads short contiguous rows), and values `[n, d]`.
    kt: Tensor<T>,
    v: Tensor<T>,
    /// `[TILE, maxlen + LANES]`: attention weights of one tile (rows padded to whole vectors).
    probs: Vec<T>,
    /// `[2 d]`: the last block's query folded through `W_k` (`W_k^T q`), and the weighted sum of
    /// its inputs (`sum_j p_j x_j`).
    folded: Vec<T>,
    /// `[q, d]`: final hidden state of the group's query rows.
    hq: Tensor<T>,
    /// The bf16 path: the converted left operand of the tile products, and the keys of every packed
    /// row `[n, d]` (the tile attention packs them per history and head).
    amx: AmxScratch,
    k_rows: Tensor<T>,
    /// The bf16 attention: one history's keys (as `K^T`) and values of one head, packed.
    kp: PackedB,
    vp: PackedB,
}

impl<T: Float> PartScratch<T> {
    fn new() -> Self {
        let z = || Tensor::zeros(&[0, 1]);
        Self {
            histories: 0..0,
            h: z(),
            start: Vec::new(),
            ids: Vec::new(),
            slots: Vec::new(),
            query: Vec::new(),
            qrows: Vec::new(),
            full: Rows::new(),
            last: Rows::new(),
            kt: z(),
            v: z(),
            probs: Vec::new(),
            folded: Vec::new(),
            hq: z(),
            amx: AmxScratch::new(),
            k_rows: z(),
            kp: PackedB::new(),
            vp: PackedB::new(),
        }
    }
}

/// `v` as `f32` (the bf16 path is never taken for `f64`).
fn f32s<T: Float>(v: &[T]) -> &[f32] {
    as_f32(v).expect("the bf16 serving path runs f32 models only")
}

/// `v` as mutable `f32` (the bf16 path is never taken for `f64`).
fn f32s_mut<T: Float>(v: &mut [T]) -> &mut [f32] {
    as_f32_mut(v).expect("the bf16 serving path runs f32 models only")
}

/// One block's weights packed as right operands of the AMX tile products (the bf16 path).
#[derive(Clone, Debug, Default)]
struct PackedBlock {
    /// Query, key and value projections (rows `0..d`, `d..2d`, `2d..3d` of `in_proj_weight`);
    /// the keys and values are not packed for the last block, which never forms them.
    q: PackedB,
    k: PackedB,
    v: PackedB,
    /// The output projection, if the block has one.
    out: Option<PackedB>,
    /// The feed-forward's two layers.
    ff1: PackedB,
    ff2: PackedB,
}

impl PackedBlock {
    /// Packs `layer`'s weights (an `f32` block: the bf16 path is never taken for `f64`), its key
    /// and value projections only when `keys_values`.
    fn pack<T: Float>(&mut self, layer: &TransformerBlock<T>, keys_values: bool) {
        let d = layer.config().d_model;
        let w = f32s(layer.self_attn.in_proj_weight.value.as_slice());
        self.q.pack(&w[..d * d], d, d);
        if keys_values {
            self.k.pack(&w[d * d..2 * d * d], d, d);
            self.v.pack(&w[2 * d * d..], d, d);
        }
        let pack_linear = |p: &mut PackedB, lin: &Linear<T>| {
            let w = &lin.weight.value;
            p.pack(f32s(w.as_slice()), w.rows(), w.cols());
        };
        match &layer.self_attn.out_proj {
            Some(lin) => pack_linear(self.out.get_or_insert_with(PackedB::new), lin),
            None => self.out = None,
        }
        pack_linear(&mut self.ff1, &layer.ff.linear1);
        pack_linear(&mut self.ff2, &layer.ff.linear2);
    }
}

impl<T: Float> SasrecNet<T> {
    /// Sets the arithmetic of [`SasrecNet::score_last_position`]: [`Precision::Bf16`] runs the
    /// projections and feed-forwards of every block, and the attention products of every block but
    /// the last, in bfloat16 on AMX tiles (`f32` sums; softmaxes, norms, the last block's attention
    /// and the item scores stay `f32`).
    ///
    /// # Errors
    /// [`ModelError::Config`] for bf16 on a CPU or OS without AMX bf16 tiles, on an `f64` network,
    /// or on blocks the serving forward does not support.
    pub fn set_serving_precision(&mut self, precision: Precision) -> Result<(), ModelError> {
        if precision == Precision::Bf16 {
            let why = if as_f32(self.item_emb.weight.value.as_slice()).is_none() {
                Some("an f64 network")
            } else if !self.serving_supported() {
                Some("blocks the serving forward does not support")
            } else if !amx::available() {
                Some("a CPU or OS without AMX bf16 tiles (Intel Sapphire Rapids or later, Linux)")
            } else {
                None
            };
            if let Some(why) = why {
                return Err(ModelError::Config(format!(
                    "bf16 serving is not possible on {why}; serve with --precision f32"
                )));
            }
        }
        self.serve.bf16 = precision == Precision::Bf16;
        Ok(())
    }

    /// Whether every block is one the serving forward computes exactly: causal, padded keys masked,
    /// padded outputs zeroed (any norm placement, any number of heads).
    pub(super) fn serving_supported(&self) -> bool {
        self.encoder.layers.iter().all(|b| {
            let c = b.config();
            c.mask == AttentionMask::Causal && c.mask_padded_keys && c.zero_padded_outputs
        })
    }

    /// The serving forward on `b` histories `[b, maxlen]` (ids already checked): `scores [b, cols]`.
    pub(super) fn score_packed(&mut self, histories: &[u32], b: usize, scores: &mut [T]) {
        let (l, d, cols) = (self.config.maxlen, self.config.hidden, self.n_items + 1);
        let SasrecNet {
            item_emb,
            pos_emb,
            encoder,
            output_emb,
            serve: sc,
            config,
            ..
        } = self;
        let bf16 = sc.bf16 && as_f32(item_emb.weight.value.as_slice()).is_some();
        if bf16 {
            sc.packed
                .resize_with(encoder.layers.len(), PackedBlock::default);
            let n = encoder.layers.len();
            for (i, (p, layer)) in sc.packed.iter_mut().zip(&encoder.layers).enumerate() {
                p.pack(layer, i + 1 < n);
            }
        }
        let net = Net {
            packed: bf16.then_some(&sc.packed[..]),
            emb: item_emb.weight.value.as_slice(),
            pos: pos_emb.weight.value.as_slice(),
            encoder,
            input_scale: T::from_f64(config.input_scale()),
            positions: config.positions,
            l,
        };
        // The hidden state of a history whose last slot is padding: that slot's block outputs are
        // zeroed, so it is LN_final(0) (0 without a final norm).
        sc.zero.resize(&[1, d]);
        sc.zero.fill(T::ZERO);
        sc.h_pad.resize(&[1, d]);
        sc.h_pad.fill(T::ZERO);
        if let Some(norm) = &encoder.norm {
            layer_norm(norm, &mut sc.h_pad, &sc.zero);
        }
        sc.h.resize(&[b, d]);
        // Parts of the batch, several per thread so that a thread the OS sets aside for a while
        // does not hold up the batch (the others take its parts); every row is computed on its own,
        // so the split does not change a result.
        let threads = rayon::current_num_threads();
        let max_parts = if threads > 1 {
            PARTS_PER_THREAD * threads
        } else {
            1
        };
        split_parts(&mut sc.bounds, &histories[..b * l], l, max_parts);
        let parts = sc.bounds.len() - 1;
        if sc.parts.len() < parts {
            sc.parts.resize_with(parts, PartScratch::new);
        }
        let parts = &mut sc.parts[..parts];
        for (part, r) in parts.iter_mut().zip(sc.bounds.windows(2)) {
            part.histories = r[0]..r[1];
        }
        let h_pad = sc.h_pad.as_slice();
        let run = |part: &mut PartScratch<T>| {
            let rows = part.histories.clone();
            net.run_part(part, &histories[rows.start * l..rows.end * l], h_pad);
        };
        match parts {
            [one] => run(one),
            _ => parts.par_iter_mut().for_each(run),
        }
        for part in parts.iter() {
            let rows = &part.histories;
            sc.h.as_mut_slice()[rows.start * d..rows.end * d].copy_from_slice(part.h.as_slice());
        }
        // scores = h table^T
        let table = match output_emb {
            Some(o) => o.weight.value.as_slice(),
            None => item_emb.weight.value.as_slice(),
        };
        let out = &mut scores[..b * cols];
        if b <= GEMV_MAX_ROWS {
            gemv_rows(out, table, sc.h.as_slice(), d);
        } else {
            gemm_slice(
                (b, d, cols),
                T::ONE,
                sc.h.as_slice(),
                Transpose::No,
                table,
                Transpose::Yes,
                T::ZERO,
                out,
            );
        }
    }
}

/// What every part of a batch reads: the network's tables and blocks.
struct Net<'a, T> {
    /// Every block's weights packed for the AMX tiles, on the bf16 path.
    packed: Option<&'a [PackedBlock]>,
    /// Item embeddings `[n_items + 1, d]` and positional embeddings `[maxlen, d]`.
    emb: &'a [T],
    pos: &'a [T],
    encoder: &'a TransformerEncoder<T>,
    input_scale: T,
    positions: Positions,
    /// The window length.
    l: usize,
}

impl<T: Float> Net<'_, T> {
    /// The final hidden states `sc.h [g, d]` of the `g` histories `[g, maxlen]` of one part, a group
    /// of about [`GROUP_ROWS`] packed positions at a time; `h_pad`: the state of a history whose last
    /// slot is padding.
    fn run_part(&self, sc: &mut PartScratch<T>, histories: &[u32], h_pad: &[T]) {
        let (l, d) = (self.l, h_pad.len());
        let (layers, nb) = (&self.encoder.layers, self.encoder.layers.len());
        sc.h.resize(&[histories.len() / l, d]);
        let mut h_filled = 0;
        let mut groups = histories.chunks_exact(l).peekable();
        while groups.peek().is_some() {
            // 1. Pack the real positions of the next histories (about GROUP_ROWS in all).
            sc.start.clear();
            sc.ids.clear();
            sc.slots.clear();
            sc.query.clear();
            while let Some(w) = groups.next_if(|_| sc.start.is_empty() || sc.ids.len() < GROUP_ROWS)
            {
                let first = sc.ids.len();
                sc.start.push(first);
                for (t, &id) in w.iter().enumerate() {
                    if id != 0 {
                        // the position-table row: the slot, or the index among the row's items
                        sc.slots.push(match self.positions {
                            Positions::Slot => t,
                            Positions::FirstItem => sc.ids.len() - first,
                        });
                        sc.ids.push(id);
                    }
                }
                sc.query.push(if w[l - 1] != 0 {
                    sc.ids.len() - 1
                } else {
                    NO_QUERY
                });
            }
            sc.start.push(sc.ids.len());
            let n = sc.ids.len();
            // 2. x = item_emb[id] * input_scale + pos_emb[slot]  (the training forward's order of ops)
            sc.full.x.resize(&[n, d]);
            let x = sc.full.x.as_mut_slice();
            for ((row, &id), &t) in x.chunks_exact_mut(d).zip(&sc.ids).zip(&sc.slots) {
                let e = &self.emb[id as usize * d..(id as usize + 1) * d];
                for ((o, &ei), &p) in row.iter_mut().zip(e).zip(&self.pos[t * d..(t + 1) * d]) {
                    *o = ei * self.input_scale + p;
                }
            }
            // 3. Every block but the last on every packed position; the last one for the query
            //    rows only, which leaves their outputs in last.y [nq, d].
            if n > 0 {
                let packed = |i: usize| self.packed.map(|p| &p[i]);
                for (i, layer) in layers[..nb - 1].iter().enumerate() {
                    full_block(layer, packed(i), sc, l);
                    std::mem::swap(&mut sc.full.x, &mut sc.full.y);
                }
                last_block(&layers[nb - 1], packed(nb - 1), sc, l);
            }
            // 4. h = LN_final(y) of the query rows, LN_final(0) for the others.
            if !sc.qrows.is_empty() {
                match &self.encoder.norm {
                    Some(norm) => layer_norm(norm, &mut sc.hq, &sc.last.y),
                    None => {
                        sc.hq.resize(sc.last.y.shape());
                        sc.hq.as_mut_slice().copy_from_slice(sc.last.y.as_slice());
                    }
                }
            }
            let mut hq = sc.hq.as_slice().chunks_exact(d);
            let h = &mut sc.h.as_mut_slice()[h_filled * d..(h_filled + sc.query.len()) * d];
            h_filled += sc.query.len();
            for (row, &p) in h.chunks_exact_mut(d).zip(&sc.query) {
                if p == NO_QUERY {
                    row.copy_from_slice(h_pad);
                } else {
                    row.copy_from_slice(hq.next().expect("one state per query row"));
                }
            }
        }
    }
}

/// Writes into `bounds` the history bounds `[0, .., g]` of up to `max_parts` parts of the `g`
/// histories `[g, l]`: contiguous runs with about the same number of real (non-zero) positions, no
/// more parts than there are whole [`GROUP_ROWS`] in all (a smaller part costs more in hand-over
/// than it saves).
fn split_parts(bounds: &mut Vec<usize>, histories: &[u32], l: usize, max_parts: usize) {
    let g = histories.len() / l;
    bounds.clear();
    bounds.push(0);
    let real = |w: &[u32]| w.iter().filter(|&&id| id != 0).count();
    let total: usize = if max_parts > 1 {
        histories.chunks_exact(l).map(real).sum()
    } else {
        0
    };
    let parts = max_parts.min(total / GROUP_ROWS).clamp(1, g.max(1));
    if parts > 1 {
        let mut seen = 0;
        for (r, w) in histories.chunks_exact(l).enumerate() {
            seen += real(w);
            // close part p once it holds its share p / parts of the positions
            if bounds.len() < parts && seen * parts >= total * bounds.len() {
                bounds.push(r + 1);
            }
        }
    }
    if bounds.last() != Some(&g) {
        bounds.push(g);
    }
}

/// `y = LN(x)` with the layer's parameters, through the inference kernel (nothing kept for backward).
fn layer_norm<T: Float>(norm: &LayerNorm<T>, y: &mut Tensor<T>, x: &Tensor<T>) {
    y.resize(x.shape());
    layernorm_rows(
        y.as_mut_slice(),
        x.as_slice(),
        norm.weight.value.as_slice(),
        norm.bias.value.as_slice(),
        T::from_f64(norm.eps),
    );
}

/// On the bf16 path, a part's tile scratch and a block's packed weights.
type Tiles<'a> = Option<(&'a mut AmxScratch, &'a PackedBlock)>;

/// `out = x W^T + bias` on AMX tiles, `W` packed in `w` (the bf16 path: `T` is `f32`).
fn tile_linear<T: Float>(
    amx: &mut AmxScratch,
    out: &mut [T],
    x: &[T],
    w: &PackedB,
    bias: Option<&[T]>,
) {
    let out = f32s_mut(out);
    amx.linear(out, f32s(x), w, bias.map(f32s));
}

/// `out = linear(x)` (`[rows, out_features]`), on AMX tiles with `w` packed when given.
fn dense<T: Float>(
    out: &mut Tensor<T>,
    x: &Tensor<T>,
    lin: &Linear<T>,
    tiles: Option<(&mut AmxScratch, &PackedB)>,
) {
    match tiles {
        Some((amx, w)) => {
            let bias = lin.bias.as_ref().map(|b| b.value.as_slice());
            tile_linear(amx, out.as_mut_slice(), x.as_slice(), w, bias);
        }
        None => lin.forward(out, x),
    }
}

/// `out [rows, cols] = x [rows, d] w^T + bias`, with `w` holding `cols` rows of `d` weights (on AMX
/// tiles with `w` packed, when given).
fn project<T: Float>(
    out: &mut Tensor<T>,
    x: &[T],
    (w, bias): (&[T], &[T]),
    d: usize,
    tiles: Option<(&mut AmxScratch, &PackedB)>,
) {
    let (rows, cols) = (x.len() / d, bias.len());
    out.resize(&[rows, cols]);
    let o = out.as_mut_slice();
    if let Some((amx, packed)) = tiles {
        tile_linear(amx, o, x, packed, Some(bias));
        return;
    }
    gemm_slice(
        (rows, d, cols),
        T::ONE,
        x,
        Transpose::No,
        w,
        Transpose::Yes,
        T::ZERO,
        o,
    );
    for row in o.chunks_exact_mut(cols) {
        for (v, &bb) in row.iter_mut().zip(bias) {
            *v += bb;
        }
    }
}

/// Keys transposed per history: for every history `r` (packed rows `start[r]..start[r + 1]` of `x
/// [n, d]`), `out[start[r] d..]` = `w x_r^T + bias`, `[d, n_r]`.
fn project_t<T: Float>(out: &mut Tensor<T>, x: &[T], w: &[T], bias: &[T], start: &[usize]) {
    let d = bias.len();
    out.resize(&[x.len()]);
    let o = out.as_mut_slice();
    for r in start.windows(2) {
        let (a, nr) = (r[0], r[1] - r[0]);
        if nr == 0 {
            continue;
        }
        let block = &mut o[a * d..(a + nr) * d];
        gemm_slice(
            (d, d, nr),
            T::ONE,
            w,
            Transpose::No,
            &x[a * d..(a + nr) * d],
            Transpose::Yes,
            T::ZERO,
            block,
        );
        for (row, &bb) in block.chunks_exact_mut(nr).zip(bias) {
            for v in row.iter_mut() {
                *v += bb;
            }
        }
    }
}

/// The keys and values of every packed row, from `x` (`[n, d]`): the keys transposed per history
/// into `kt` (the `f32` attention of [`full_block`] reads short contiguous rows of them), or, on
/// the bf16 path, as rows into `k_rows` (`[n, d]`; the tile attention packs them itself).
fn project_kv<T: Float>(
    (kt, v, k_rows): (&mut Tensor<T>, &mut Tensor<T>, &mut Tensor<T>),
    layer: &TransformerBlock<T>,
    x: &Tensor<T>,
    start: &[usize],
    tiles: Tiles<'_>,
) {
    let d = layer.config().d_model;
    let w = layer.self_attn.in_proj_weight.value.as_slice();
    let bias = layer.self_attn.in_proj_bias.value.as_slice();
    let (wk, bk) = (&w[d * d..2 * d * d], &bias[d..2 * d]);
    let (wv, bv) = (&w[2 * d * d..], &bias[2 * d..]);
    match tiles {
        Some((amx, p)) => {
            // One bf16 copy of x serves both products.
            let n = x.rows();
            k_rows.resize(&[n, d]);
            v.resize(&[n, d]);
            amx.load(f32s(x.as_slice()), d);
            amx.product(f32s_mut(k_rows.as_mut_slice()), &p.k, Some(f32s(bk)));
            amx.product(f32s_mut(v.as_mut_slice()), &p.v, Some(f32s(bv)));
        }
        None => {
            project_t(kt, x.as_slice(), wk, bk, start);
            project(v, x.as_slice(), (wv, bv), d, None);
        }
    }
}

/// The queries of the rows of `x` (`[rows, d]`).
fn project_q<T: Float>(
    q: &mut Tensor<T>,
    layer: &TransformerBlock<T>,
    x: &Tensor<T>,
    tiles: Tiles<'_>,
) {
    let d = layer.config().d_model;
    let w = layer.self_attn.in_proj_weight.value.as_slice();
    let bias = layer.self_attn.in_proj_bias.value.as_slice();
    let tiles = tiles.map(|(amx, p)| (amx, &p.q));
    project(q, x.as_slice(), (&w[..d * d], &bias[..d]), d, tiles);
}

/// `a = ctx Wo^T + bo` (or `ctx` for a block without an output projection).
fn project_output<T: Float>(
    a: &mut Tensor<T>,
    layer: &TransformerBlock<T>,
    ctx: &Tensor<T>,
    tiles: Tiles<'_>,
) {
    match (&layer.self_attn.out_proj, tiles) {
        (Some(lin), Some((amx, PackedBlock { out: Some(w), .. }))) => {
            dense(a, ctx, lin, Some((amx, w)))
        }
        _ => layer.self_attn.project_output(a, ctx),
    }
}

/// `out = a + b` elementwise (shapes already equal in length).
fn add_into<T: Float>(out: &mut Tensor<T>, a: &Tensor<T>, b: &Tensor<T>) {
    out.resize(a.shape());
    for ((o, &x), &y) in out
        .as_mut_slice()
        .iter_mut()
        .zip(a.as_slice())
        .zip(b.as_slice())
    {
        *o = x + y;
    }
}

/// Copies the packed rows `rows` of `src [n, d]` into `dst [rows.len(), d]`.
fn gather_rows<T: Float>(dst: &mut Tensor<T>, src: &Tensor<T>, rows: &[usize]) {
    let d = src.cols();
    dst.resize(&[rows.len(), d]);
    let s = src.as_slice();
    for (o, &r) in dst.as_mut_slice().chunks_exact_mut(d).zip(rows) {
        o.copy_from_slice(&s[r * d..(r + 1) * d]);
    }
}

/// One block on every packed position: `sc.full.x [n, d]` -> `sc.full.y [n, d]`. The three
/// placements follow `TransformerBlock::forward` step by step in eval mode (no dropout), with no
/// padded rows to zero.
fn full_block<T: Float>(
    layer: &TransformerBlock<T>,
    packed: Option<&PackedBlock>,
    sc: &mut PartScratch<T>,
    l: usize,
) {
    let c = layer.config();
    let d = c.d_model;
    let rows = &mut sc.full;
    let n = rows.x.rows();
    // 1. q, k, v from LN1(x) (SASRec: q only; pre-LN: all three) or x (post-LN; SASRec's k, v).
    if c.norm != NormPlacement::Post {
        layer_norm(&layer.norm1, &mut rows.l1, &rows.x);
    }
    let (q_src, kv_src) = match c.norm {
        NormPlacement::SasRec => (&rows.l1, &rows.x),
        NormPlacement::Pre => (&rows.l1, &rows.l1),
        NormPlacement::Post => (&rows.x, &rows.x),
    };
    let amx = &mut sc.amx;
    project_q(&mut rows.q, layer, q_src, packed.map(|p| (&mut *amx, p)));
    let kv = (&mut sc.kt, &mut sc.v, &mut sc.k_rows);
    let tiles = packed.map(|p| (&mut *amx, p));
    project_kv(kv, layer, kv_src, &sc.start, tiles);
    // 2. ctx = causal attention of every packed position over its history's earlier positions.
    rows.ctx.resize(&[n, d]);
    let (heads, dh) = (c.num_heads, d / c.num_heads);
    let scale = T::from_f64(1.0 / (dh as f64).sqrt());
    sc.probs.resize(TILE * (l + LANES), T::ZERO);
    if packed.is_some() {
        let ctx = f32s_mut(rows.ctx.as_mut_slice());
        let acts = Activations {
            q: f32s(rows.q.as_slice()),
            k: f32s(sc.k_rows.as_slice()),
            v: f32s(sc.v.as_slice()),
        };
        let probs = f32s_mut(&mut sc.probs);
        let tiles = (&mut *amx, &mut sc.kp, &mut sc.vp);
        let scale = scale.to_f64() as f32;
        acts.attend_bf16(ctx, probs, tiles, (&sc.start, heads, scale));
    } else {
        for r in sc.start.windows(2) {
            let (o, nr) = (r[0], r[1] - r[0]);
            for h in 0..heads {
                for i0 in (0..nr).step_by(TILE) {
                    let tile = Tile {
                        q: &rows.q,
                        kt: &sc.kt,
                        v: &sc.v,
                        history: (o, nr),
                        queries: (i0, (i0 + TILE).min(nr)),
                        head: (h * dh, dh),
                        scale,
                    };
                    tile.attend(&mut rows.ctx, &mut sc.probs);
                }
            }
        }
    }
    // 3. a = ctx Wo^T + bo
    rows.a.resize(&[n, d]);
    project_output(
        &mut rows.a,
        layer,
        &rows.ctx,
        packed.map(|p| (&mut *amx, p)),
    );
    // 4-6. residuals, LN2 and the feed-forward.
    finish_block(layer, rows, packed.map(|p| (amx, p)));
}

/// Queries, keys and values `[n, d]` of every packed position (the bf16 attention of
/// [`full_block`]).
struct Activations<'a> {
    q: &'a [f32],
    k: &'a [f32],
    v: &'a [f32],
}

impl Activations<'_> {
    /// `ctx [n, d]`: causal attention of every packed position over its history's earlier ones, the
    /// two products of each tile of [`TILE`] queries on AMX tiles (bf16 operands, `f32` sums) and
    /// the softmax's exponentials in `f32` between them. For each history (rows `start[r]..start[r +
    /// 1]`) and head, the keys are packed as `K^T` and the values as `V` once; each tile of queries then
    /// computes `S = (scale Q) K^T` over the keys up to its last query, the unnormalised prefix
    /// softmax of each row straight into bf16 (entries above the diagonal get 0), `ctx = P V` over
    /// the same keys, and divides each row of `ctx` by the sum of its weights.
    fn attend_bf16(
        &self,
        ctx: &mut [f32],
        probs: &mut [f32],
        (amx, kp, vp): (&mut AmxScratch, &mut PackedB, &mut PackedB),
        (start, heads, scale): (&[usize], usize, f32),
    ) {
        let n = start.last().copied().unwrap_or(0);
        if n == 0 {
            return;
        }
        let d = self.q.len() / n;
        let dh = d / heads;
        for r in start.windows(2) {
            let (o, nr) = (r[0], r[1] - r[0]);
            if nr == 0 {
                continue;
            }
            for c0 in (0..d).step_by(dh) {
                kp.pack_rows(&self.k[o * d + c0..], (nr, dh, d));
                vp.pack_cols(&self.v[o * d + c0..], (nr, dh, d));
                for i0 in (0..nr).step_by(TILE) {
                    let i1 = (i0 + TILE).min(nr);
                    let (m, ld) = (i1 - i0, i1.next_multiple_of(LANES));
                    amx.load_rows(&self.q[(o + i0) * d + c0..], (m, dh, d), scale);
                    amx.product_into((&mut probs[..m * ld], ld), kp, i1, None);
                    // exp(S - max) with the keys after each query at zero, in bf16; the rows of
                    // `P V` are divided by the sums of their weights after the product.
                    let mut sums = [0.0f32; TILE];
                    amx.load_softmax_rows(probs, (m, i1, ld), i0 + 1, &mut sums);
                    let out = &mut ctx[(o + i0) * d + c0..];
                    amx.product_into((out, d), vp, dh, None);
                    for (row, &sum) in out.chunks_mut(d).zip(&sums[..m]) {
                        let inv = 1.0 / sum;
                        row[..dh].iter_mut().for_each(|v| *v *= inv);
                    }
                }
            }
        }
    }
}

/// One tile of causal attention: queries `i0..i1` of the history of `nr` packed rows from `o`,
/// head columns `c0..c0 + dh`.
struct Tile<'a, T> {
    q: &'a Tensor<T>,
    kt: &'a Tensor<T>,
    v: &'a Tensor<T>,
    history: (usize, usize),
    queries: (usize, usize),
    head: (usize, usize),
    scale: T,
}

impl<T: Float> Tile<'_, T> {
    /// `ctx[o + i] = softmax_j<=i(q_i . k_j * scale) v_j` for the tile's queries; `probs`:
    /// `[TILE, maxlen + LANES]` scratch.
    fn attend(&self, ctx: &mut Tensor<T>, probs: &mut [T]) {
        let ((o, nr), (i0, i1), (c0, dh)) = (self.history, self.queries, self.head);
        let d = self.q.cols();
        let m = i1 - i0;
        // Rows of whole vectors: the softmax then needs no scalar tail.
        let ld = i1.next_multiple_of(LANES);
        let probs = &mut probs[..m * ld];
        // S [m, i1] = scale * Q[i0..i1] K[0..i1]^T: keys after the tile's last query are never read.
        gemm_strided(
            (m, dh, i1),
            self.scale,
            (&self.q.as_slice()[(o + i0) * d + c0..], d, 1),
            (&self.kt.as_slice()[o * d + c0 * nr..], nr, 1),
            (probs, ld, 1),
        );
        // Keys after each query (above the diagonal, and the row padding) get weight exactly 0.
        for (ii, row) in probs.chunks_exact_mut(ld).enumerate() {
            softmax_prefix(row, i0 + ii + 1);
        }
        // ctx[i0..i1] = P [m, i1] V[0..i1]
        gemm_strided(
            (m, i1, dh),
            T::ONE,
            (probs, ld, 1),
            (&self.v.as_slice()[o * d + c0..], d, 1),
            (&mut ctx.as_mut_slice()[(o + i0) * d + c0..], d, 1),
        );
    }
}

/// Everything after the attention output `rows.a` (rows aligned with `rows.x` and, SASRec/pre-LN,
/// `rows.l1`): the residual sums, norms and feed-forward of `layer`'s placement, into `rows.y`.
fn finish_block<T: Float>(layer: &TransformerBlock<T>, rows: &mut Rows<T>, tiles: Tiles<'_>) {
    match layer.config().norm {
        NormPlacement::SasRec => {
            // s = l1 + a;  l2 = LN2(s);  y = l2 + FF(l2)
            add_into(&mut rows.s, &rows.l1, &rows.a);
            layer_norm(&layer.norm2, &mut rows.l2, &rows.s);
            feed_forward(&layer.ff, rows, FfInput::L2, tiles);
            add_into(&mut rows.y, &rows.l2, &rows.f);
        }
        NormPlacement::Pre => {
            // s = x + a;  l2 = LN2(s);  y = s + FF(l2)
            add_into(&mut rows.s, &rows.x, &rows.a);
            layer_norm(&layer.norm2, &mut rows.l2, &rows.s);
            feed_forward(&layer.ff, rows, FfInput::L2, tiles);
            add_into(&mut rows.y, &rows.s, &rows.f);
        }
        NormPlacement::Post => {
            // s = x + a;  x1 = LN1(s);  s2 = x1 + FF(x1);  y = LN2(s2)
            add_into(&mut rows.s, &rows.x, &rows.a);
            layer_norm(&layer.norm1, &mut rows.l1, &rows.s);
            feed_forward(&layer.ff, rows, FfInput::L1, tiles);
            add_into(&mut rows.s, &rows.l1, &rows.f);
            layer_norm(&layer.norm2, &mut rows.y, &rows.s);
        }
    }
}

/// Which buffer of [`Rows`] feeds the feed-forward.
#[derive(Clone, Copy)]
enum FfInput {
    L1,
    L2,
}

/// `rows.f = linear2(act(linear1(input)))`: `FeedForward::forward` in eval mode, on buffers that
/// keep their size (its cache would also size its backward buffers, zero-filled on every change).
fn feed_forward<T: Float>(
    ff: &FeedForward<T>,
    rows: &mut Rows<T>,
    input: FfInput,
    tiles: Tiles<'_>,
) {
    let x = match input {
        FfInput::L1 => &rows.l1,
        FfInput::L2 => &rows.l2,
    };
    let (n, cfg) = (x.rows(), ff.config());
    rows.ff_pre.resize(&[n, cfg.d_ff]);
    rows.ff_act.resize(&[n, cfg.d_ff]);
    rows.f.resize(&[n, cfg.d_model]);
    let mut tiles = tiles;
    let w1 = tiles.as_mut().map(|(amx, p)| (&mut **amx, &p.ff1));
    dense(&mut rows.ff_pre, x, &ff.linear1, w1);
    match cfg.activation {
        Activation::Relu => relu_forward(&mut rows.ff_act, &rows.ff_pre),
        Activation::Gelu(kind) => gelu_forward(&mut rows.ff_act, &rows.ff_pre, kind),
    }
    dense(
        &mut rows.f,
        &rows.ff_act,
        &ff.linear2,
        tiles.map(|(amx, p)| (amx, &p.ff2)),
    );
}

/// The last block, for the query rows only (in `sc.last`); leaves their outputs in `sc.last.y [nq,
/// d]` (history order). Its keys and values are never formed: with one query per history,
///
/// - `q . k_j = q . (W_k x_j + b_k) = (W_k^T q) . x_j + q . b_k`, and the last term, the same for
///   every key, cancels in the softmax;
/// - `sum_j p_j v_j = W_v (sum_j p_j x_j) + b_v`, because the weights sum to 1,
///
/// per head, with `x_j` the block's input at the history's positions (`LN1(x)` for pre-LN). That
/// replaces two `[n, d] x [d, d]` projections (and a transposition of the keys) by two products
/// of `d` values per key.
fn last_block<T: Float>(
    layer: &TransformerBlock<T>,
    packed: Option<&PackedBlock>,
    sc: &mut PartScratch<T>,
    l: usize,
) {
    let c = layer.config();
    let d = c.d_model;
    sc.qrows.clear();
    sc.qrows
        .extend(sc.query.iter().copied().filter(|&p| p != NO_QUERY));
    let nq = sc.qrows.len();
    if nq == 0 {
        return;
    }
    // 1. The inputs of the keys and values (x, or LN1(x) for pre-LN); the block's query rows of x
    //    (and LN1(x)) are gathered, and everything else runs on them alone.
    let (full, last, amx) = (&mut sc.full, &mut sc.last, &mut sc.amx);
    if c.norm == NormPlacement::Pre {
        layer_norm(&layer.norm1, &mut full.l1, &full.x);
        gather_rows(&mut last.l1, &full.l1, &sc.qrows);
    }
    gather_rows(&mut last.x, &full.x, &sc.qrows);
    let q_tiles = packed.map(|p| (&mut *amx, p));
    match c.norm {
        NormPlacement::SasRec => {
            layer_norm(&layer.norm1, &mut last.l1, &last.x);
            project_q(&mut last.q, layer, &last.l1, q_tiles);
        }
        NormPlacement::Pre => project_q(&mut last.q, layer, &last.l1, q_tiles),
        NormPlacement::Post => project_q(&mut last.q, layer, &last.x, q_tiles),
    }
    let kv_src = if c.norm == NormPlacement::Pre {
        full.l1.as_slice()
    } else {
        full.x.as_slice()
    };
    // 2. One attention row per query and head, over its history's positions (all visible to it).
    last.ctx.resize(&[nq, d]);
    let (heads, dh) = (c.num_heads, d / c.num_heads);
    let scale = T::from_f64(1.0 / (dh as f64).sqrt());
    let w = layer.self_attn.in_proj_weight.value.as_slice();
    let bias = layer.self_attn.in_proj_bias.value.as_slice();
    let (wk, wv, bv) = (&w[d * d..2 * d * d], &w[2 * d * d..], &bias[2 * d..]);
    sc.probs.resize(TILE * (l + LANES), T::ZERO);
    sc.folded.resize(2 * d, T::ZERO);
    let (qk, xbar) = sc.folded.split_at_mut(d);
    let histories = sc.start.windows(2).zip(&sc.query);
    for (k, (r, _)) in histories.filter(|(_, p)| **p != NO_QUERY).enumerate() {
        let (o, nr) = (r[0], r[1] - r[0]);
        let xs = &kv_src[o * d..(o + nr) * d];
        for h in 0..heads {
            let c0 = h * dh;
            let q = &last.q.as_slice()[k * d + c0..k * d + c0 + dh];
            // W_k^T q over the head's rows of W_k, scaled.
            qk.fill(T::ZERO);
            for (cc, &qc) in q.iter().enumerate() {
                let row = &wk[(c0 + cc) * d..(c0 + cc + 1) * d];
                for (o, &x) in qk.iter_mut().zip(row) {
                    *o += qc * scale * x;
                }
            }
            let p = &mut sc.probs[..nr.next_multiple_of(LANES)];
            gemv_rows(&mut p[..nr], xs, qk, d);
            softmax_prefix(p, nr);
            xbar.fill(T::ZERO);
            for (&pj, xj) in p[..nr].iter().zip(xs.chunks_exact(d)) {
                for (o, &x) in xbar.iter_mut().zip(xj) {
                    *o += pj * x;
                }
            }
            let ctx = &mut last.ctx.as_mut_slice()[k * d + c0..k * d + c0 + dh];
            for (cc, out) in ctx.iter_mut().enumerate() {
                *out = lane_dot(&wv[(c0 + cc) * d..(c0 + cc + 1) * d], xbar) + bv[c0 + cc];
            }
        }
    }
    // 3. a = ctx Wo^T + bo, then the rest of the block on the query rows.
    last.a.resize(&[nq, d]);
    project_output(
        &mut last.a,
        layer,
        &last.ctx,
        packed.map(|p| (&mut *amx, p)),
    );
    finish_block(layer, last, packed.map(|p| (amx, p)));
}

/// `c = alpha * op(a) op(b)` for `(m, k, n)` on strided views: `a` is `(slice, row stride, column
/// stride)` of `[m, k]`, `b` of `[k, n]`, `c` of `[m, n]`; each slice starts at the view's first
/// element.
///
/// # Panics
/// If a view addresses elements past the end of its slice.
fn gemm_strided<T: Float>(
    (m, k, n): (usize, usize, usize),
    alpha: T,
    (a, rsa, csa): (&[T], usize, usize),
    (b, rsb, csb): (&[T], usize, usize),
    (c, rsc, csc): (&mut [T], usize, usize),
) {
    if m == 0 || n == 0 || k == 0 {
        return;
    }
    let last = |r: usize, rs: usize, cc: usize, cs: usize| (r - 1) * rs + (cc - 1) * cs;
    assert!(
        last(m, rsa, k, csa) < a.len()
            && last(k, rsb, n, csb) < b.len()
            && last(m, rsc, n, csc) < c.len(),
        "gemm_strided: a view is out of bounds"
    );
    // SAFETY: gemm_raw(m, k, n, alpha, a, rsa, csa, b, rsb, csb, beta, c, rsc, csc) reads A [m, k] and
    // B [k, n] and writes C [m, n] at the given strides; the assert above keeps the last element of
    // each view inside its slice (all strides are non-negative, so every other element is too), and
    // `c` is a `&mut` slice, so it aliases neither `a` nor `b`. beta = 0 never reads C.
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
            csc as isize,
        )
    }
}

/// `out [rows, cols] = h [rows, d] table^T` for a few rows (`table`: `[cols, d]`), reading the table
/// once: for every item, the dot product with each row. `f32` on an AVX-512 CPU runs
/// [`gemv_rows_avx512`] (written with intrinsics: the generic loop vectorises poorly for the short
/// rows of `d = 50`).
fn gemv_rows<T: Float>(out: &mut [T], table: &[T], h: &[T], d: usize) {
    #[cfg(target_arch = "x86_64")]
    if let (Some(o), Some(t), Some(hh)) = (as_f32_mut(out), as_f32(table), as_f32(h))
        && std::arch::is_x86_feature_detected!("avx512f")
    {
        // SAFETY: AVX-512F was detected on this CPU just above.
        unsafe { gemv_rows_avx512(o, t, hh, d) };
        return;
    }
    gemv_rows_dispatch(out, table, h, d)
}

multiversion! {
    /// [`gemv_rows_generic`] compiled for this CPU's widest vectors.
    fn gemv_rows_dispatch<T: Float>(out: &mut [T], table: &[T], h: &[T], d: usize) => gemv_rows_generic
}

#[inline(always)]
fn gemv_rows_generic<T: Float>(out: &mut [T], table: &[T], h: &[T], d: usize) {
    let cols = table.len() / d;
    for (i, e) in table.chunks_exact(d).enumerate() {
        for (r, hr) in h.chunks_exact(d).enumerate() {
            out[r * cols + i] = lane_dot(hr, e);
        }
    }
}

/// [`gemv_rows`] for `f32` with AVX-512: each dot product is `ceil(d / 16)` fused multiply-adds
/// (the last one on masked loads) and one horizontal sum.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn gemv_rows_avx512(out: &mut [f32], table: &[f32], h: &[f32], d: usize) {
    use std::arch::x86_64::{
        _mm512_fmadd_ps, _mm512_maskz_loadu_ps, _mm512_reduce_add_ps, _mm512_setzero_ps,
    };
    let (cols, rows) = (table.len() / d, h.len() / d);
    assert!(
        out.len() >= rows * cols && d > 0,
        "gemv_rows: out is shorter than [rows, cols]"
    );
    let chunks = d.div_ceil(16);
    let tail = d - (chunks - 1) * 16;
    let last_mask: u16 = if tail == 16 {
        u16::MAX
    } else {
        (1 << tail) - 1
    };
    for i in 0..cols {
        let e = table[i * d..(i + 1) * d].as_ptr();
        for r in 0..rows {
            let hr = h[r * d..(r + 1) * d].as_ptr();
            let mut acc = _mm512_setzero_ps();
            for c in 0..chunks {
                let mask = if c + 1 == chunks { last_mask } else { u16::MAX };
                // SAFETY: the lanes the mask enables are elements c * 16.. of rows of d elements
                // (c * 16 + popcount(mask) <= d); masked-off lanes are neither read nor faulted.
                let (a, b) = unsafe {
                    (
                        _mm512_maskz_loadu_ps(mask, e.add(c * 16)),
                        _mm512_maskz_loadu_ps(mask, hr.add(c * 16)),
                    )
                };
                acc = _mm512_fmadd_ps(a, b, acc);
            }
            out[r * cols + i] = _mm512_reduce_add_ps(acc);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bounds of `split_parts` over histories with the given numbers of real positions (left
    /// padded in a window one longer than the longest).
    fn bounds(real: &[usize], max_parts: usize) -> Vec<usize> {
        let l = 1 + real.iter().max().copied().unwrap_or(0);
        let w: Vec<u32> = real
            .iter()
            .flat_map(|&n| (0..l).map(move |t| u32::from(t >= l - n)))
            .collect();
        let mut b = Vec::new();
        split_parts(&mut b, &w, l, max_parts);
        b
    }

    #[test]
    fn parts_cover_the_batch_in_order_with_enough_work_each() {
        // 64 full windows of 200: 12,800 positions in two or three equal parts.
        assert_eq!(bounds(&[200; 64], 2), vec![0, 32, 64]);
        assert_eq!(bounds(&[200; 64], 3), vec![0, 22, 43, 64]);
        // Less than two groups of work: one part whatever the threads.
        assert_eq!(bounds(&[200; 5], 4), vec![0, 5]);
        assert_eq!(bounds(&[], 4), vec![0]);
        assert_eq!(bounds(&[0, 0, 0], 2), vec![0, 3]);
        // Uneven lengths: the parts balance positions, not histories.
        let real: Vec<usize> = (0..40).map(|i| if i < 10 { 200 } else { 10 }).collect();
        let b = bounds(&real, 2);
        assert_eq!(b.len(), 3);
        let first: usize = real[..b[1]].iter().sum();
        assert!(
            (1200..=1300).contains(&first),
            "first part holds {first} of 2,300"
        );
        // Never more parts than histories.
        assert_eq!(bounds(&[2000, 2000], 8), vec![0, 1, 2]);
    }
}
