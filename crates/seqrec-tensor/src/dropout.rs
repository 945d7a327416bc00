//! Inverted dropout with a counter-based mask: no mask is stored, the backward pass regenerates it.
//!
//! Element `i` of a call keyed by `(seed, step)` is kept iff `hash(seed, step, i) >= p * 2^53`, where the
//! hash is three rounds of the splitmix64 finaliser (see [`dropout_keep`]). The same key gives the same mask
//! on any thread count, and a CUDA kernel can reproduce it bit for bit with 64-bit integer arithmetic.
//! Give each dropout site its own `seed` (e.g. the run seed mixed with a layer id) and pass the training
//! step as `step`.

use crate::par::for_flat_chunks;
use crate::tensor::assert_same_shape;
use crate::{Float, Tensor};

/// Identifies one dropout mask: a per-site seed and the training step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DropoutKey {
    /// Per-dropout-site seed.
    pub seed: u64,
    /// Training step (or any counter that changes every call).
    pub step: u64,
}

/// The splitmix64 output function (Steele, Lea, Flood 2014): a bijective 64-bit mixer.
#[inline(always)]
pub fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// 53 uniform bits for element `index` of the mask keyed by `key`.
#[inline(always)]
pub fn dropout_bits(key: DropoutKey, index: u64) -> u64 {
    splitmix64(splitmix64(splitmix64(key.seed) ^ key.step) ^ index) >> 11
}

/// The integer threshold for drop probability `p`: an element is kept iff its bits are `>=` it.
#[inline]
pub fn dropout_threshold(p: f64) -> u64 {
    (p * (1u64 << 53) as f64) as u64
}

/// Whether element `index` survives dropout with probability `p` of being dropped.
#[inline]
pub fn dropout_keep(key: DropoutKey, index: u64, p: f64) -> bool {
    dropout_bits(key, index) >= dropout_threshold(p)
}

#[track_caller]
fn check_p(op: &str, p: f64) {
    assert!(
        (0.0..1.0).contains(&p),
        "{op}: drop probability must be in [0, 1), got {p} (validate it in the config)"
    );
}

/// Shared body: `out[i] = keep(i) ? x[i] / (1 - p) : 0`.
#[track_caller]
fn apply<T: Float>(op: &str, out: &mut Tensor<T>, x: &Tensor<T>, p: f64, key: DropoutKey) {
    check_p(op, p);
    assert_same_shape(op, "out", out.shape(), "x", x.shape());
    let xs = x.as_slice();
    if p == 0.0 {
        out.as_mut_slice().copy_from_slice(xs);
        return;
    }
    let thr = dropout_threshold(p);
    let scale = T::from_f64(1.0 / (1.0 - p));
    for_flat_chunks(out.as_mut_slice(), |off, o| {
        let n = o.len();
        for (i, (o, &v)) in o.iter_mut().zip(&xs[off..off + n]).enumerate() {
            let keep = dropout_bits(key, (off + i) as u64) >= thr;
            *o = if keep { v * scale } else { T::ZERO };
        }
    });
}

/// Inverted dropout: `out = x * mask / (1 - p)` with the mask of `key` (see the module docs).
///
/// - `out`, `x`: same shape; `p` in `[0, 1)`; `p = 0` copies.
///
/// # Panics
/// If shapes differ or `p` is outside `[0, 1)`.
#[track_caller]
pub fn dropout_forward<T: Float>(out: &mut Tensor<T>, x: &Tensor<T>, p: f64, key: DropoutKey) {
    apply("dropout_forward", out, x, p, key);
}

/// Backward of [`dropout_forward`] with the same `p` and `key`: `dx = dy * mask / (1 - p)` (regenerated
/// mask, written `=`).
///
/// # Panics
/// If shapes differ or `p` is outside `[0, 1)`.
#[track_caller]
pub fn dropout_backward<T: Float>(dx: &mut Tensor<T>, dy: &Tensor<T>, p: f64, key: DropoutKey) {
    apply("dropout_backward", dx, dy, p, key);
}
