//! Losses fused with their softmax/sigmoid: each returns the mean loss and, in the same pass, writes the
//! gradient with respect to its logits (`dlogits =`, already divided by the number of averaged terms).
//!
//! Every function takes `dlogits: Option<&mut Tensor<T>>` (`None` for evaluation) and a mask of the
//! rows that count. Masked rows add exactly zero to the loss and get a zero gradient; the mean is over
//! unmasked rows only, and a batch with no unmasked row has loss 0 and zero gradient.
//!
//! Notation: `N` is the number of unmasked rows, `softplus(x) = ln(1 + e^x)` (computed as
//! `max(x, 0) + ln(1 + e^-|x|)`), `σ` the logistic sigmoid. Sampled losses take `logits: [n, 1 + k]`
//! with the positive item's score in column 0 and the `k` sampled negatives after it.
//!
//! | function | formula (per unmasked row `i`, then `sum_i / N`) | reference |
//! |---|---|---|
//! | [`softmax_cross_entropy`] | `lse_j(x_ij) - x_i,t_i` over all `C` items | PyTorch `F.cross_entropy(ignore_index=0)`; SASRec+/BERT4Rec/GRU4Rec |
//! | [`bce_with_logits`] | `softplus(-x_i0) + (1/k) sum_j softplus(x_ij)` | SASRec (Kang & McAuley 2018), SASRec.pytorch's two `BCEWithLogitsLoss` means |
//! | [`sampled_softmax`] | `lse_j(x_ij - ln q_ij) - (x_i0 - ln q_i0)` | log-Q correction, Yi et al. 2019 (RecSys), Bengio & Senécal 2008 |
//! | [`bpr`] | `(1/k) sum_j softplus(-(x_i0 - x_ij))` = `-mean ln σ(x⁺ - x⁻)` | Rendle et al. 2009; GRU4Rec's `bpr` |
//! | [`bpr_max`] | `-ln(sum_j w_ij σ(x_i0 - x_ij) + 1e-24) + λ sum_j w_ij x_ij²`, `w_i = softmax_j(x_ij)` over negatives | Hidasi & Karatzoglou 2018 (GRU4Rec, BPR-max with score regularisation) |
//! | [`gbce`] | `(1/(1+k)) [β softplus(-x_i0) + sum_j softplus(x_ij)]`, i.e. BCE with `σ(x⁺)` raised to `β` | Petrov & Macdonald 2023 (gSASRec), see [`gbce_beta`] |
//!
//! Large inputs are split over rayon in row chunks fixed by the shape; per-chunk partial sums are added
//! in chunk order, so the loss is bit-identical on any number of threads.
//!
//! ```
//! use seqrec_nn::loss::softmax_cross_entropy;
//! use seqrec_tensor::Tensor;
//!
//! // Two rows over 3 items; row 1 targets item 0 = padding, so it is ignored.
//! let logits = Tensor::from_vec(&[2, 3], vec![0.0f64, 0.0, 0.0, 5.0, 1.0, 2.0]).unwrap();
//! let mut dlogits = Tensor::zeros(&[2, 3]);
//! let loss = softmax_cross_entropy(Some(&mut dlogits), &logits, &[2, 0], 0);
//! assert!((loss - 3f64.ln()).abs() < 1e-12); // uniform over 3 items
//! assert!((dlogits.as_slice()[2] - (1.0 / 3.0 - 1.0)).abs() < 1e-12);
//! assert_eq!(&dlogits.as_slice()[3..], &[0.0, 0.0, 0.0]);
//! ```

use std::any::Any;

use rayon::prelude::*;
use seqrec_tensor::{Float, Tensor};

use crate::error::NnError;

/// Below this many logits a loss runs serially.
const PAR_MIN_ELEMS: usize = 1 << 15;
/// Target number of logits per chunk of rows.
const CHUNK_ELEMS: usize = 1 << 14;

/// `ln(1 + e^x)` without overflow.
#[inline]
fn softplus(x: f64) -> f64 {
    x.max(0.0) + (-x.abs()).exp().ln_1p()
}

/// `1 / (1 + e^-x)` without overflow.
#[inline]
fn sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// Calls `f(first_row, rows, dlogits_chunk)` over chunks of whole rows of an `[n, cols]` problem and
/// returns the sum of its results. Chunks are fixed by the shape (about [`CHUNK_ELEMS`] logits each) and
/// run over rayon when the problem is large; partial sums are added in chunk order, so the result does
/// not depend on the thread count. The only allocation is one `f64` per chunk.
fn chunks_sum<T: Float>(
    dlogits: Option<&mut Tensor<T>>,
    n: usize,
    cols: usize,
    f: impl Fn(usize, usize, Option<&mut [T]>) -> f64 + Sync + Send,
) -> f64 {
    let rpc = (CHUNK_ELEMS / cols.max(1)).max(1);
    let chunks = n.div_ceil(rpc);
    let par = n * cols >= PAR_MIN_ELEMS;
    let partials: Vec<f64> = match dlogits {
        Some(d) => {
            let run = |(ci, chunk): (usize, &mut [T])| {
                f(ci * rpc, chunk.len() / cols.max(1), Some(chunk))
            };
            let data = d.as_mut_slice();
            if par {
                data.par_chunks_mut(rpc * cols)
                    .enumerate()
                    .map(run)
                    .collect()
            } else {
                data.chunks_mut(rpc * cols).enumerate().map(run).collect()
            }
        }
        None => {
            let run = |ci: usize| f(ci * rpc, ((ci + 1) * rpc).min(n) - ci * rpc, None);
            if par {
                (0..chunks).into_par_iter().map(run).collect()
            } else {
                (0..chunks).map(run).collect()
            }
        }
    };
    partials.iter().sum()
}

/// [`chunks_sum`] with a per-row callback `f(row, dlogits_row)`.
fn rows_sum<T: Float>(
    dlogits: Option<&mut Tensor<T>>,
    n: usize,
    cols: usize,
    f: impl Fn(usize, Option<&mut [T]>) -> f64 + Sync + Send,
) -> f64 {
    chunks_sum(dlogits, n, cols, |r0, rows, g| match g {
        Some(g) => g
            .chunks_exact_mut(cols)
            .enumerate()
            .map(|(r, g)| f(r0 + r, Some(g)))
            .sum(),
        None => (r0..r0 + rows).map(|r| f(r, None)).sum(),
    })
}

#[track_caller]
fn check_shapes<T: Float>(
    op: &str,
    dlogits: &Option<&mut Tensor<T>>,
    logits: &Tensor<T>,
    mask_len: usize,
    min_cols: usize,
) -> (usize, usize) {
    let (n, c) = (logits.rows(), logits.cols());
    assert!(
        logits.ndim() >= 1 && c >= min_cols,
        "{op}: logits has shape {:?}; need [.., cols >= {min_cols}]",
        logits.shape()
    );
    assert_eq!(
        mask_len, n,
        "{op}: mask/targets length {mask_len} vs {n} logit rows"
    );
    if let Some(d) = dlogits {
        assert_eq!(d.shape(), logits.shape(), "{op}: dlogits vs logits shape");
    }
    (n, c)
}

fn count_valid(valid: &[bool]) -> usize {
    valid.iter().filter(|&&v| v).count()
}

/// Full softmax cross-entropy over all items with an ignore index (the padding item), as PyTorch's
/// `F.cross_entropy(logits, targets, ignore_index=ignore_index)` (mean reduction).
///
/// - `logits`: `[.., C]` (rows = positions), `targets`: one class per row; rows whose target equals
///   `ignore_index` are ignored.
/// - Loss: `(1/N) sum_i (ln sum_j e^{x_ij} - x_i,t_i)`; gradient `(softmax(x_i) - onehot(t_i)) / N`.
///
/// One pass per row finds the max, a second writes `e^{x - max}` into `dlogits` while summing it, a
/// third scales it (the row stays in L1 cache, so `exp` is evaluated once per logit). `f32` uses a
/// vectorised `exp` (Cephes polynomial, about 1 ulp) with AVX-512/AVX2 when the CPU has them.
///
/// # Panics
/// If shapes disagree or a target is `>= C` (targets are checked where the batch is built).
pub fn softmax_cross_entropy<T: Float>(
    mut dlogits: Option<&mut Tensor<T>>,
    logits: &Tensor<T>,
    targets: &[u32],
    ignore_index: u32,
) -> T {
    let (n, c) = check_shapes("softmax_cross_entropy", &dlogits, logits, targets.len(), 1);
    if let Some(&t) = targets
        .iter()
        .find(|&&t| t != ignore_index && t as usize >= c)
    {
        panic!("softmax_cross_entropy: target {t} out of range for {c} classes");
    }
    let count = targets.iter().filter(|&&t| t != ignore_index).count();
    let scale = if count == 0 { 0.0 } else { 1.0 / count as f64 };
    // f32 takes the vectorised path; the downcasts are the identity when T is f32.
    if let Some(l32) = (logits as &dyn Any).downcast_ref::<Tensor<f32>>() {
        let d32 = dlogits.as_deref_mut().map(|d| {
            (d as &mut dyn Any)
                .downcast_mut::<Tensor<f32>>()
                .expect("same T")
        });
        let total = rows_sum(d32, n, c, |i, g| {
            let t = targets[i];
            if t == ignore_index {
                if let Some(g) = g {
                    g.fill(0.0);
                }
                return 0.0;
            }
            ce_row_f32(
                g,
                &l32.as_slice()[i * c..(i + 1) * c],
                t as usize,
                scale as f32,
            )
        });
        return T::from_f64(total * scale);
    }
    let total = rows_sum(dlogits, n, c, |i, g| {
        let t = targets[i];
        if t == ignore_index {
            if let Some(g) = g {
                g.fill(T::ZERO);
            }
            return 0.0;
        }
        ce_row_generic(g, &logits.as_slice()[i * c..(i + 1) * c], t as usize, scale)
    });
    T::from_f64(total * scale)
}

/// One row of cross-entropy in `f64` arithmetic (the plain version; the oracle for the `f32` path).
/// Returns the unscaled row loss `lse(x) - x_t`; writes `(softmax(x) - onehot(t)) * scale`.
fn ce_row_generic<T: Float>(g: Option<&mut [T]>, x: &[T], t: usize, scale: f64) -> f64 {
    let m = x.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v.to_f64()));
    let s: f64 = x.iter().map(|&v| (v.to_f64() - m).exp()).sum();
    let lse = m + s.ln();
    if let Some(g) = g {
        for (gj, &v) in g.iter_mut().zip(x) {
            *gj = T::from_f64((v.to_f64() - lse).exp() * scale);
        }
        g[t] -= T::from_f64(scale);
    }
    lse - x[t].to_f64()
}

/// Lanes of the `f32` kernels' accumulators (one AVX-512 register).
const LANES: usize = 16;

/// `e^x` for `f32` without branches so that loops over it vectorise: Cephes `expf` (range reduction by
/// `ln 2` in two parts, degree-5 minimax polynomial, about 1 ulp). Inputs are clamped to
/// `[-87.3, 88.0]`, so it returns the smallest normal instead of 0 far below the max (harmless in a
/// softmax: `1e-38` next to a sum `>= 1`).
#[inline(always)]
fn exp_f32(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // 1.5 * 2^23: adding it rounds to an integer k, which then sits in the low mantissa bits.
    const MAGIC: f32 = 12_582_912.0;
    // Selects, not f32::clamp/max: they lower to packed min/max instead of scalar compares.
    let x = if x < -87.3 { -87.3 } else { x };
    let x = if x > 88.0 { 88.0 } else { x };
    let kf = x * LOG2E + MAGIC;
    let k = kf - MAGIC;
    let r = x - k * 0.693_359_4 - k * -2.121_944_4e-4;
    let z = r * r;
    let p = ((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
        + 1.666_666_5e-1)
        * r
        + 0.5;
    let y = p * z + r + 1.0;
    // 2^k from the integer bits of kf (no float-to-int conversion, which would not vectorise).
    let pow2 = f32::from_bits(kf.to_bits().wrapping_sub(MAGIC.to_bits()).wrapping_add(127) << 23);
    y * pow2
}

/// The body of [`ce_row_f32`], inlined into each target-feature wrapper.
#[inline(always)]
fn ce_row_f32_body(g: Option<&mut [f32]>, x: &[f32], t: usize, scale: f32) -> f64 {
    // Pass 1: the row max, in LANES independent lanes.
    let mut mv = [f32::NEG_INFINITY; LANES];
    let xc = x.chunks_exact(LANES);
    let mut m = xc
        .remainder()
        .iter()
        .fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    for c in xc {
        for l in 0..LANES {
            mv[l] = mv[l].max(c[l]);
        }
    }
    m = mv.iter().fold(m, |a, &b| a.max(b));
    // Pass 2: e^(x - m), stored in g when a gradient is wanted, summed in LANES lanes.
    let mut sv = [0.0f32; LANES];
    let mut s = 0.0f32;
    match g {
        Some(g) => {
            let mut gc = g.chunks_exact_mut(LANES);
            let mut xc = x.chunks_exact(LANES);
            for (gc, xc) in (&mut gc).zip(&mut xc) {
                for l in 0..LANES {
                    let e = exp_f32(xc[l] - m);
                    gc[l] = e;
                    sv[l] += e;
                }
            }
            for (gj, &v) in gc.into_remainder().iter_mut().zip(xc.remainder()) {
                let e = exp_f32(v - m);
                *gj = e;
                s += e;
            }
            s += sv.iter().sum::<f32>();
            // Pass 3: softmax * scale, minus scale at the target.
            let inv = scale / s;
            for gj in g.iter_mut() {
                *gj *= inv;
            }
            g[t] -= scale;
        }
        None => {
            let xc = x.chunks_exact(LANES);
            for v in xc.remainder() {
                s += exp_f32(v - m);
            }
            for c in xc {
                for l in 0..LANES {
                    sv[l] += exp_f32(c[l] - m);
                }
            }
            s += sv.iter().sum::<f32>();
        }
    }
    (m as f64 + (s as f64).ln()) - x[t] as f64
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
fn ce_row_f32_avx512(g: Option<&mut [f32]>, x: &[f32], t: usize, scale: f32) -> f64 {
    ce_row_f32_body(g, x, t, scale)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn ce_row_f32_avx2(g: Option<&mut [f32]>, x: &[f32], t: usize, scale: f32) -> f64 {
    ce_row_f32_body(g, x, t, scale)
}

/// One row of cross-entropy in `f32`, dispatched to the widest vector unit the CPU has.
fn ce_row_f32(g: Option<&mut [f32]>, x: &[f32], t: usize, scale: f32) -> f64 {
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU supports AVX-512F (checked just above; the result is cached by std).
            return unsafe { ce_row_f32_avx512(g, x, t, scale) };
        }
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            // SAFETY: the CPU supports AVX2 and FMA (checked just above).
            return unsafe { ce_row_f32_avx2(g, x, t, scale) };
        }
    }
    ce_row_f32_body(g, x, t, scale)
}

/// Widest row whose `f64` scratch lives on the stack in [`sampled_rows`].
const STACK_COLS: usize = 512;

/// Shared driver of the sampled losses: `row(i, x, g) -> row loss` gets row `i`'s logits in `f64` and
/// an `f64` gradient slice to fill (unscaled); the driver applies `scale = 1 / N`, zeroes masked rows
/// and converts. The scratch lives on the stack for rows up to [`STACK_COLS`] wide, else in one vector
/// per chunk of rows.
fn sampled_rows<T: Float>(
    dlogits: Option<&mut Tensor<T>>,
    logits: &Tensor<T>,
    valid: &[bool],
    row: impl Fn(usize, &[f64], &mut [f64]) -> f64 + Sync + Send,
) -> T {
    let (n, c) = (logits.rows(), logits.cols());
    let count = count_valid(valid);
    let scale = if count == 0 { 0.0 } else { 1.0 / count as f64 };
    let total = chunks_sum(dlogits, n, c, |r0, rows, mut g| {
        let mut stack = [0.0f64; 2 * STACK_COLS];
        let mut heap = Vec::new();
        let scratch: &mut [f64] = if c <= STACK_COLS {
            &mut stack[..2 * c]
        } else {
            heap.resize(2 * c, 0.0);
            &mut heap
        };
        let (xs, gs) = scratch.split_at_mut(c);
        let mut total = 0.0;
        for i in r0..r0 + rows {
            let g_row = g
                .as_deref_mut()
                .map(|g| &mut g[(i - r0) * c..(i - r0 + 1) * c]);
            if !valid[i] {
                if let Some(g) = g_row {
                    g.fill(T::ZERO);
                }
                continue;
            }
            for (a, &v) in xs.iter_mut().zip(&logits.as_slice()[i * c..(i + 1) * c]) {
                *a = v.to_f64();
            }
            total += row(i, xs, gs);
            if let Some(g) = g_row {
                for (o, &v) in g.iter_mut().zip(gs.iter()) {
                    *o = T::from_f64(v * scale);
                }
            }
        }
        total
    });
    T::from_f64(total * scale)
}

/// Binary cross-entropy with logits over one positive and `k` sampled negatives per row (SASRec).
///
/// - `logits`: `[.., 1 + k]` (column 0 positive), `valid`: one flag per row (`pos_id != 0`).
/// - Loss: `(1/N) sum_i [softplus(-x_i0) + (1/k) sum_j softplus(x_ij)]`. With `k = 1` this equals
///   SASRec.pytorch's `bce(pos_logits[m], 1) + bce(neg_logits[m], 0)` (two means over the unmasked
///   positions). Gradient: `(σ(x_i0) - 1) / N` and `σ(x_ij) / (N k)`.
///
/// # Panics
/// If shapes disagree or there is no negative column.
pub fn bce_with_logits<T: Float>(
    dlogits: Option<&mut Tensor<T>>,
    logits: &Tensor<T>,
    valid: &[bool],
) -> T {
    let (_, c) = check_shapes("bce_with_logits", &dlogits, logits, valid.len(), 2);
    // loss = softplus(-x0) + (1/k) sum_j softplus(xj), averaged over rows.
    weighted_softplus(dlogits, logits, valid, 1.0, 1.0 / (c - 1) as f64)
}

/// `(1/N) sum_i valid_i [w_pos softplus(-x_i0) + w_neg sum_j softplus(x_ij)]` and its gradient
/// `(1/N) w_pos (σ(x_i0) - 1)`, `(1/N) w_neg σ(x_ij)`: the body of [`bce_with_logits`] and [`gbce`].
///
/// Column `j` of a row is `softplus(s_j x_j)` with sign `s_0 = -1` (a positive), `s_j = +1` (negatives),
/// whose derivative is `s_j σ(s_j x_j)`. `f32` runs a vectorised kernel over blocks of logits; other
/// types use the plain `f64` row code (the oracle in the unit tests).
fn weighted_softplus<T: Float>(
    dlogits: Option<&mut Tensor<T>>,
    logits: &Tensor<T>,
    valid: &[bool],
    w_pos: f64,
    w_neg: f64,
) -> T {
    let (n, c) = (logits.rows(), logits.cols());
    let count = count_valid(valid);
    let scale = if count == 0 { 0.0 } else { 1.0 / count as f64 };
    let (wp, wn) = (w_pos * scale, w_neg * scale);
    if let Some(l32) = (logits as &dyn Any).downcast_ref::<Tensor<f32>>() {
        let d32 = dlogits.map(|d| {
            (d as &mut dyn Any)
                .downcast_mut::<Tensor<f32>>()
                .expect("same T")
        });
        let total = chunks_sum(d32, n, c, |r0, rows, g| {
            softplus_chunk_f32(
                g,
                &l32.as_slice()[r0 * c..(r0 + rows) * c],
                &valid[r0..r0 + rows],
                c,
                wp as f32,
                wn as f32,
            )
        });
        return T::from_f64(total);
    }
    let total = rows_sum(dlogits, n, c, |i, g| {
        if !valid[i] {
            if let Some(g) = g {
                g.fill(T::ZERO);
            }
            return 0.0;
        }
        let x = &logits.as_slice()[i * c..(i + 1) * c];
        let mut l = 0.0;
        for (j, &v) in x.iter().enumerate() {
            let (w, sgn) = if j == 0 { (wp, -1.0) } else { (wn, 1.0) };
            let z = sgn * v.to_f64();
            l += w * softplus(z);
        }
        if let Some(g) = g {
            for (j, (gj, &v)) in g.iter_mut().zip(x).enumerate() {
                let (w, sgn) = if j == 0 { (wp, -1.0) } else { (wn, 1.0) };
                *gj = T::from_f64(w * sgn * sigmoid(sgn * v.to_f64()));
            }
        }
        l
    });
    T::from_f64(total)
}

/// Logits per block of the `f32` softplus kernel (its weight and sign scratch live on the stack).
const SOFTPLUS_BLOCK: usize = 1024;

/// One chunk of rows of [`weighted_softplus`] in `f32`. Rows go in blocks of whole rows (at most
/// [`SOFTPLUS_BLOCK`] logits); the sign and weight patterns of a block of valid rows are built once per
/// chunk, and a block containing masked rows gets a copy with those rows' weights zeroed. Rows wider
/// than a block build their pattern row by row.
fn softplus_chunk_f32(
    mut g: Option<&mut [f32]>,
    x: &[f32],
    valid: &[bool],
    c: usize,
    wp: f32,
    wn: f32,
) -> f64 {
    let mut w = [0.0f32; SOFTPLUS_BLOCK];
    let mut wpat = [0.0f32; SOFTPLUS_BLOCK];
    let mut sg = [0.0f32; SOFTPLUS_BLOCK];
    let mut scratch = [0.0f32; SOFTPLUS_BLOCK];
    let mut total = 0.0f64;
    if c > SOFTPLUS_BLOCK {
        // Wide rows: one row at a time, in pieces of a block.
        for (i, xr) in x.chunks_exact(c).enumerate() {
            if !valid[i] {
                if let Some(g) = g.as_deref_mut() {
                    g[i * c..(i + 1) * c].fill(0.0);
                }
                continue;
            }
            for (b, xb) in xr.chunks(SOFTPLUS_BLOCK).enumerate() {
                let len = xb.len();
                w[..len].fill(wn);
                sg[..len].fill(1.0);
                if b == 0 {
                    (w[0], sg[0]) = (wp, -1.0);
                }
                let off = i * c + b * SOFTPLUS_BLOCK;
                let gb = match g.as_deref_mut() {
                    Some(g) => &mut g[off..off + len],
                    None => &mut scratch[..len],
                };
                total += softplus_kernel_f32(gb, xb, &w[..len], &sg[..len]) as f64;
            }
        }
        return total;
    }
    let block_rows = SOFTPLUS_BLOCK / c;
    let blen = block_rows * c;
    for e in 0..blen {
        let first = e % c == 0;
        sg[e] = if first { -1.0 } else { 1.0 };
        wpat[e] = if first { wp } else { wn };
    }
    for (b, xb) in x.chunks(blen).enumerate() {
        let len = xb.len();
        let vb = &valid[b * block_rows..b * block_rows + len / c];
        let wb: &[f32] = if vb.iter().all(|&v| v) {
            &wpat[..len]
        } else {
            w[..len].copy_from_slice(&wpat[..len]);
            for (r, _) in vb.iter().enumerate().filter(|(_, v)| !**v) {
                w[r * c..(r + 1) * c].fill(0.0);
            }
            &w[..len]
        };
        let gb = match g.as_deref_mut() {
            Some(g) => &mut g[b * blen..b * blen + len],
            None => &mut scratch[..len],
        };
        total += softplus_kernel_f32(gb, xb, wb, &sg[..len]) as f64;
    }
    total
}

/// `ln(1 + e)` for `e` in `[0, 1]` without branches: `2 atanh(t)` with `t = e / (2 + e)` in `[0, 1/3]`,
/// odd series to `t^11` (truncation below `1e-7`; no cancellation for tiny `e`).
#[inline(always)]
fn ln1p_unit_f32(e: f32) -> f32 {
    let t = e / (2.0 + e);
    let t2 = t * t;
    let p = 1.0
        + t2 * (1.0 / 3.0 + t2 * (0.2 + t2 * (1.0 / 7.0 + t2 * (1.0 / 9.0 + t2 * (1.0 / 11.0)))));
    2.0 * t * p
}

/// The body of [`softplus_kernel_f32`], inlined into each target-feature wrapper.
#[inline(always)]
fn softplus_kernel_body(g: &mut [f32], x: &[f32], w: &[f32], sg: &[f32]) -> f32 {
    let mut acc = [0.0f32; LANES];
    let one = |g: &mut f32, x: f32, w: f32, s: f32| -> f32 {
        let z = s * x;
        let e = exp_f32(-z.abs());
        let sp = (if z > 0.0 { z } else { 0.0 }) + ln1p_unit_f32(e);
        let inv = 1.0 / (1.0 + e);
        let sig = if z >= 0.0 { inv } else { e * inv };
        // A masked logit (w = 0) contributes exactly 0, even if it is infinite.
        *g = if w == 0.0 { 0.0 } else { w * s * sig };
        if w == 0.0 { 0.0 } else { w * sp }
    };
    let mut gc = g.chunks_exact_mut(LANES);
    let mut xc = x.chunks_exact(LANES);
    let mut wc = w.chunks_exact(LANES);
    let mut sc = sg.chunks_exact(LANES);
    for (((gc, xc), wc), sc) in (&mut gc).zip(&mut xc).zip(&mut wc).zip(&mut sc) {
        for l in 0..LANES {
            acc[l] += one(&mut gc[l], xc[l], wc[l], sc[l]);
        }
    }
    let mut tail = 0.0f32;
    for (((gj, &xj), &wj), &sj) in gc
        .into_remainder()
        .iter_mut()
        .zip(xc.remainder())
        .zip(wc.remainder())
        .zip(sc.remainder())
    {
        tail += one(gj, xj, wj, sj);
    }
    tail + acc.iter().sum::<f32>()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
fn softplus_kernel_avx512(g: &mut [f32], x: &[f32], w: &[f32], sg: &[f32]) -> f32 {
    softplus_kernel_body(g, x, w, sg)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn softplus_kernel_avx2(g: &mut [f32], x: &[f32], w: &[f32], sg: &[f32]) -> f32 {
    softplus_kernel_body(g, x, w, sg)
}

/// `sum_e w_e softplus(s_e x_e)`, writing `g_e = w_e s_e σ(s_e x_e)`, dispatched to the widest vector
/// unit the CPU has.
fn softplus_kernel_f32(g: &mut [f32], x: &[f32], w: &[f32], sg: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU supports AVX-512F (checked just above; the result is cached by std).
            return unsafe { softplus_kernel_avx512(g, x, w, sg) };
        }
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            // SAFETY: the CPU supports AVX2 and FMA (checked just above).
            return unsafe { softplus_kernel_avx2(g, x, w, sg) };
        }
    }
    softplus_kernel_body(g, x, w, sg)
}

/// Sampled softmax cross-entropy with the log-Q correction.
///
/// - `logits`: `[.., 1 + k]` (column 0 positive), `log_q`: same shape, `ln q` of each scored item under
///   the sampling distribution (`None`: no correction), `valid`: one flag per row.
/// - With `z_ij = x_ij - ln q_ij`, loss `(1/N) sum_i [lse_j(z_ij) - z_i0]`, gradient
///   `(softmax(z_i) - e_0) / N` (the correction is a constant shift, so `d/dx = d/dz`).
/// - Following Yi et al. 2019 the correction is applied to every column, the positive included; pass
///   `ln q = 0` in column 0 to leave it out.
///
/// # Panics
/// If shapes disagree.
pub fn sampled_softmax<T: Float>(
    dlogits: Option<&mut Tensor<T>>,
    logits: &Tensor<T>,
    log_q: Option<&Tensor<T>>,
    valid: &[bool],
) -> T {
    let (_, c) = check_shapes("sampled_softmax", &dlogits, logits, valid.len(), 1);
    if let Some(q) = log_q {
        assert_eq!(
            q.shape(),
            logits.shape(),
            "sampled_softmax: log_q vs logits shape"
        );
    }
    sampled_rows(dlogits, logits, valid, |i, x, g| {
        // z = x - ln q
        for (j, (gj, &v)) in g.iter_mut().zip(x.iter()).enumerate() {
            *gj = v - log_q.map_or(0.0, |q| q.as_slice()[i * c + j].to_f64());
        }
        let m = g.iter().fold(f64::NEG_INFINITY, |a, &b| a.max(b));
        let s: f64 = g.iter().map(|&z| (z - m).exp()).sum();
        let lse = m + s.ln();
        let l = lse - g[0];
        for gj in g.iter_mut() {
            *gj = (*gj - lse).exp();
        }
        g[0] -= 1.0;
        l
    })
}

/// Bayesian personalised ranking over one positive and `k` negatives per row.
///
/// - `logits`: `[.., 1 + k]` (column 0 positive), `valid`: one flag per row.
/// - Loss: `(1/N) sum_i (1/k) sum_j softplus(x_ij - x_i0)` = `-mean ln σ(x⁺ - x⁻)` over unmasked pairs.
///
/// # Panics
/// If shapes disagree or there is no negative column.
pub fn bpr<T: Float>(dlogits: Option<&mut Tensor<T>>, logits: &Tensor<T>, valid: &[bool]) -> T {
    let (_, c) = check_shapes("bpr", &dlogits, logits, valid.len(), 2);
    let inv_k = 1.0 / (c - 1) as f64;
    sampled_rows(dlogits, logits, valid, |_, x, g| {
        g[0] = 0.0;
        let mut l = 0.0;
        for j in 1..x.len() {
            // l_j = softplus(xj - x0);  dl_j/dxj = σ(xj - x0) = -dl_j/dx0
            let d = x[j] - x[0];
            l += inv_k * softplus(d);
            let s = inv_k * sigmoid(d);
            g[j] = s;
            g[0] -= s;
        }
        l
    })
}

/// The `ε` inside BPR-max's logarithm, as in GRU4Rec's reference implementation.
pub const BPR_MAX_EPS: f64 = 1e-24;

/// BPR-max with score regularisation (Hidasi & Karatzoglou 2018, GRU4Rec's `bpr-max` loss).
///
/// - `logits`: `[.., 1 + k]` (column 0 positive), `valid`: one flag per row, `reg` = λ (`bpreg`).
/// - With `w_i = softmax(x_i1..x_ik)` over the negatives and `σ_ij = σ(x_i0 - x_ij)`:
///   loss `(1/N) sum_i [-ln(S_i + 1e-24) + λ R_i]`, `S_i = sum_j w_ij σ_ij`, `R_i = sum_j w_ij x_ij²`.
/// - Gradient (per row, before `1/N`): `dx_0 = -(1/(S+ε)) sum_j w_j σ_j (1 - σ_j)`,
///   `dx_j = -(1/(S+ε)) w_j (σ_j² - S) + λ w_j (x_j² - R + 2 x_j)`.
///
/// # Panics
/// If shapes disagree or there is no negative column.
pub fn bpr_max<T: Float>(
    dlogits: Option<&mut Tensor<T>>,
    logits: &Tensor<T>,
    valid: &[bool],
    reg: f64,
) -> T {
    check_shapes("bpr_max", &dlogits, logits, valid.len(), 2);
    sampled_rows(dlogits, logits, valid, |_, x, g| {
        let (x0, neg) = (x[0], &x[1..]);
        // w = softmax(neg): g[1..] holds w for now.
        let m = neg.iter().fold(f64::NEG_INFINITY, |a, &b| a.max(b));
        let mut z = 0.0;
        for (gj, &v) in g[1..].iter_mut().zip(neg) {
            *gj = (v - m).exp();
            z += *gj;
        }
        let (mut s, mut r, mut d0) = (0.0, 0.0, 0.0);
        for (gj, &v) in g[1..].iter_mut().zip(neg) {
            *gj /= z;
            let sg = sigmoid(x0 - v);
            s += *gj * sg;
            r += *gj * v * v;
            d0 += *gj * sg * (1.0 - sg);
        }
        let inv = 1.0 / (s + BPR_MAX_EPS);
        g[0] = -inv * d0;
        for (gj, &v) in g[1..].iter_mut().zip(neg) {
            let w = *gj;
            let sg = sigmoid(x0 - v);
            *gj = -inv * w * (sg * sg - s) + reg * w * (v * v - r + 2.0 * v);
        }
        -(s + BPR_MAX_EPS).ln() + reg * r
    })
}

/// gSASRec's `β` for gBCE (Petrov & Macdonald 2023, eq. 8): with sampling rate
/// `α = k / (num_items - 1)` and calibration `t` in `[0, 1]`, `β = α (t (1 - 1/α) + 1/α)`.
/// `t = 0` gives `β = 1` (plain BCE), `t = 1` gives `β = α` (fully calibrated).
///
/// `num_items` counts real items (not the padding id).
///
/// # Errors
/// [`NnError::InvalidConfig`] if `k` is 0, `k > num_items - 1`, or `t` is outside `[0, 1]`.
pub fn gbce_beta(num_negatives: usize, num_items: usize, t: f64) -> Result<f64, NnError> {
    if num_negatives == 0 {
        return Err(NnError::config(
            "gbce.num_negatives",
            num_negatives,
            "must be at least 1",
        ));
    }
    if num_items < num_negatives + 1 {
        return Err(NnError::config(
            "gbce.num_items",
            num_items,
            format!("must be at least num_negatives + 1 = {}", num_negatives + 1),
        ));
    }
    if !(0.0..=1.0).contains(&t) {
        return Err(NnError::config("gbce.t", t, "must be in [0, 1]"));
    }
    let alpha = num_negatives as f64 / (num_items - 1) as f64;
    Ok(alpha * (t * (1.0 - 1.0 / alpha) + 1.0 / alpha))
}

/// Generalised binary cross-entropy (gSASRec, Petrov & Macdonald 2023): BCE where the positive's
/// probability `σ(x_i0)` is replaced by `σ(x_i0)^β` (get `β` from [`gbce_beta`]).
///
/// - `logits`: `[.., 1 + k]` (column 0 positive), `valid`: one flag per row.
/// - Loss: `(1/(N (1 + k))) sum_i [β softplus(-x_i0) + sum_j softplus(x_ij)]`: the mean over all
///   `1 + k` logits of the unmasked rows, as gSASRec's reference code (`-ln σ(x)^β = β softplus(-x)`;
///   the reference's clamps to `[1e-10, 1 - 1e-10]` are omitted, which only matters for saturated logits).
///
/// # Panics
/// If shapes disagree or there is no negative column.
pub fn gbce<T: Float>(
    dlogits: Option<&mut Tensor<T>>,
    logits: &Tensor<T>,
    valid: &[bool],
    beta: f64,
) -> T {
    let (_, c) = check_shapes("gbce", &dlogits, logits, valid.len(), 2);
    // (1/(1+k)) [beta softplus(-x0) + sum_j softplus(xj)], averaged over rows.
    weighted_softplus(dlogits, logits, valid, beta / c as f64, 1.0 / c as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The vectorised f32 path against the plain f64-arithmetic row on the same f32 logits.
    #[test]
    fn fast_f32_cross_entropy_matches_plain_rows() {
        let mut rng = crate::init::Rng::new(5);
        for &(n, c) in &[(3usize, 1usize), (5, 17), (40, 3416), (7, 33)] {
            let logits: Tensor<f32> = rng.normal_tensor(&[n, c], 4.0);
            let targets: Vec<u32> = (0..n).map(|i| (i * 7 % c) as u32).collect();
            let mut fast = Tensor::zeros(&[n, c]);
            let loss = softmax_cross_entropy(Some(&mut fast), &logits, &targets, u32::MAX);
            let loss_eval = softmax_cross_entropy(None, &logits, &targets, u32::MAX);
            assert_eq!(loss, loss_eval);
            let mut total = 0.0;
            let mut slow = vec![0.0f32; c];
            for (i, (x, f)) in logits
                .as_slice()
                .chunks_exact(c)
                .zip(fast.as_slice().chunks_exact(c))
                .enumerate()
            {
                total += ce_row_generic(Some(&mut slow), x, targets[i] as usize, 1.0 / n as f64);
                for (j, (&a, &b)) in f.iter().zip(&slow).enumerate() {
                    assert!(
                        (a - b).abs() <= 1e-7 + 1e-5 * b.abs(),
                        "[{n},{c}] at ({i},{j}): {a} vs {b}"
                    );
                }
            }
            let want = total / n as f64;
            assert!(
                (loss as f64 - want).abs() <= 1e-5 * want.abs().max(1.0),
                "{loss} vs {want}"
            );
        }
    }

    /// The vectorised f32 BCE/gBCE path against the f64 path on the same logits, masks included.
    #[test]
    fn fast_f32_softplus_losses_match_f64() {
        let mut rng = crate::init::Rng::new(6);
        for &(n, c) in &[
            (1usize, 2usize),
            (5, 3),
            (700, 2),
            (300, 9),
            (2, 1500),
            (3, 2048),
        ] {
            let x32: Tensor<f32> = rng.normal_tensor(&[n, c], 6.0);
            let x64 = x32.cast::<f64>();
            let valid: Vec<bool> = (0..n).map(|i| i % 3 != 1).collect();
            for beta in [None, Some(0.3)] {
                let (mut g32, mut g64) = (Tensor::zeros(&[n, c]), Tensor::zeros(&[n, c]));
                let (l32, l64) = match beta {
                    None => (
                        bce_with_logits(Some(&mut g32), &x32, &valid),
                        bce_with_logits(Some(&mut g64), &x64, &valid),
                    ),
                    Some(b) => (
                        gbce(Some(&mut g32), &x32, &valid, b),
                        gbce(Some(&mut g64), &x64, &valid, b),
                    ),
                };
                assert_eq!(l32, bce_or_gbce_eval(&x32, &valid, beta));
                assert!(
                    (l32 as f64 - l64).abs() <= 1e-5 * l64.abs().max(1.0),
                    "[{n},{c}] {l32} vs {l64}"
                );
                for (i, (&a, &b)) in g32.as_slice().iter().zip(g64.as_slice()).enumerate() {
                    assert!(
                        (a as f64 - b).abs() <= 1e-9 + 1e-5 * b.abs(),
                        "[{n},{c}] at {i}: {a} vs {b}"
                    );
                    if !valid[i / c] {
                        assert_eq!(a, 0.0);
                    }
                }
            }
        }
    }

    fn bce_or_gbce_eval(x: &Tensor<f32>, valid: &[bool], beta: Option<f64>) -> f32 {
        match beta {
            None => bce_with_logits(None, x, valid),
            Some(b) => gbce(None, x, valid, b),
        }
    }

    #[test]
    fn ln1p_unit_f32_is_accurate() {
        for i in 0..=10_000 {
            let e = i as f32 / 10_000.0;
            let (a, b) = (ln1p_unit_f32(e) as f64, (e as f64).ln_1p());
            assert!(
                (a - b).abs() <= 4e-7 * b.max(1e-30) + 1e-12,
                "ln1p({e}) = {a} vs {b}"
            );
        }
    }

    #[test]
    fn exp_f32_is_accurate() {
        let mut x = -87.0f32;
        while x < 88.0 {
            let (a, b) = (exp_f32(x) as f64, (x as f64).exp());
            assert!((a - b).abs() <= 3e-7 * b, "exp({x}) = {a} vs {b}");
            x += 0.0137;
        }
    }
}
