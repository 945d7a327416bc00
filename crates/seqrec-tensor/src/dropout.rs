//! Inverted dropout with a counter-based mask: no mask is stored, the backward pass regenerates it.
//!
//! Element `i` of a call keyed by `(seed, step)` is kept iff `hash(seed, step, i) >= p * 2^53`, where the
//! hash is three rounds of the splitmix64 finaliser (see [`dropout_keep`]). The same key gives the same mask
//! on any thread count, and a CUDA kernel can reproduce it bit for bit with 64-bit integer arithmetic.
//! Give each dropout site its own `seed` (e.g. the run seed mixed with a layer id) and pass the training
//! step as `step`.

use crate::par::for_flat_chunks;
use crate::simd;
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
    for_flat_chunks(out.as_mut_slice(), |off, o| {
        let n = o.len();
        dropout_slice(o, &xs[off..off + n], p, key, off as u64);
    });
}

/// Elements hashed per call of [`keep_flags`] by the slice kernels (a stack buffer of flags).
const FLAG_BLOCK: usize = 256;

/// The per-key part of [`dropout_bits`]: `dropout_bits(key, i) == splitmix64(key_base(key) ^ i) >> 11`.
#[inline(always)]
fn key_base(key: DropoutKey) -> u64 {
    splitmix64(splitmix64(key.seed) ^ key.step)
}

/// `keep[i] = (dropout_bits(key, start + i) >= thr) as u8`: the mask of [`dropout_keep`] for a run of
/// consecutive indices, with AVX-512 (F + DQ, for the 64-bit multiply) when the CPU has it. Both paths
/// compute the same integer hash, so the flags are identical (tested against the scalar path).
pub(crate) fn keep_flags(key: DropoutKey, start: u64, thr: u64, keep: &mut [u8]) {
    let base = key_base(key);
    #[cfg(target_arch = "x86_64")]
    if keep.len() >= 8
        && std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512dq")
    {
        // SAFETY: the CPU supports AVX-512 F and DQ (checked just above); the kernel only writes
        // inside `keep`.
        unsafe { keep_flags_avx512(base, start, thr, keep) };
        return;
    }
    keep_flags_scalar(base, start, thr, keep);
}

fn keep_flags_scalar(base: u64, start: u64, thr: u64, keep: &mut [u8]) {
    for (i, k) in keep.iter_mut().enumerate() {
        *k = ((splitmix64(base ^ start.wrapping_add(i as u64)) >> 11) >= thr) as u8;
    }
}

/// Byte `i` of `SPREAD[m]` is bit `i` of `m` (an 8-lane compare mask as 8 flags).
#[cfg(target_arch = "x86_64")]
const SPREAD: [u64; 256] = {
    let mut t = [0u64; 256];
    let mut m = 0;
    while m < 256 {
        let mut i = 0;
        while i < 8 {
            if m >> i & 1 == 1 {
                t[m] |= 1 << (8 * i);
            }
            i += 1;
        }
        m += 1;
    }
    t
};

/// [`keep_flags_scalar`] on 8 indices at a time: splitmix64 in 64-bit lanes (`_mm512_mullo_epi64`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512dq")]
fn keep_flags_avx512(base: u64, start: u64, thr: u64, keep: &mut [u8]) {
    use std::arch::x86_64::*;
    let full = keep.len() / 8 * 8;
    let lanes = _mm512_set_epi64(7, 6, 5, 4, 3, 2, 1, 0);
    let gamma = _mm512_set1_epi64(0x9E37_79B9_7F4A_7C15_u64 as i64);
    let m1 = _mm512_set1_epi64(0xBF58_476D_1CE4_E5B9_u64 as i64);
    let m2 = _mm512_set1_epi64(0x94D0_49BB_1331_11EB_u64 as i64);
    let base_v = _mm512_set1_epi64(base as i64);
    let thr_v = _mm512_set1_epi64(thr as i64);
    for (c, k8) in keep[..full].chunks_exact_mut(8).enumerate() {
        let i0 = start.wrapping_add(8 * c as u64);
        let idx = _mm512_add_epi64(_mm512_set1_epi64(i0 as i64), lanes);
        // splitmix64(base ^ idx) >> 11 >= thr, lane by lane (wrapping arithmetic as in the scalar code)
        let mut z = _mm512_add_epi64(_mm512_xor_si512(base_v, idx), gamma);
        z = _mm512_mullo_epi64(_mm512_xor_si512(z, _mm512_srli_epi64::<30>(z)), m1);
        z = _mm512_mullo_epi64(_mm512_xor_si512(z, _mm512_srli_epi64::<27>(z)), m2);
        z = _mm512_srli_epi64::<11>(_mm512_xor_si512(z, _mm512_srli_epi64::<31>(z)));
        let m = _mm512_cmpge_epu64_mask(z, thr_v);
        k8.copy_from_slice(&SPREAD[m as usize].to_le_bytes());
    }
    let rest = start.wrapping_add(full as u64);
    keep_flags_scalar(base, rest, thr, &mut keep[full..]);
}

/// Inverted dropout of one run of a larger tensor: `out[i] = keep(start + i) ? x[i] / (1 - p) : 0`,
/// with the mask of `key` at flat indices `start..start + out.len()` (the mask [`dropout_forward`] draws
/// for the whole tensor, so a kernel can drop any sub-range, e.g. the lower triangle of a score matrix).
///
/// # Panics
/// If `out` and `x` differ in length or `p` is outside `[0, 1)`.
#[track_caller]
pub fn dropout_slice<T: Float>(out: &mut [T], x: &[T], p: f64, key: DropoutKey, start: u64) {
    check_p("dropout_slice", p);
    assert_eq!(out.len(), x.len(), "dropout_slice: out and x lengths");
    let thr = dropout_threshold(p);
    let scale = T::from_f64(1.0 / (1.0 - p));
    let mut buf = [0u8; FLAG_BLOCK];
    for (ci, (o, xs)) in out
        .chunks_mut(FLAG_BLOCK)
        .zip(x.chunks(FLAG_BLOCK))
        .enumerate()
    {
        let kb = &mut buf[..o.len()];
        keep_flags(key, start + (ci * FLAG_BLOCK) as u64, thr, kb);
        simd::dropout_apply(o, xs, kb, scale);
    }
}

/// Fused ReLU + inverted dropout: `out = dropout(max(x, 0))` with the mask of `key` (the same values as
/// [`crate::relu_forward`] then [`dropout_forward`], in one pass).
///
/// # Panics
/// If shapes differ or `p` is outside `[0, 1)`.
#[track_caller]
pub fn relu_dropout_forward<T: Float>(out: &mut Tensor<T>, x: &Tensor<T>, p: f64, key: DropoutKey) {
    check_p("relu_dropout_forward", p);
    assert_same_shape("relu_dropout_forward", "out", out.shape(), "x", x.shape());
    let thr = dropout_threshold(p);
    let scale = T::from_f64(1.0 / (1.0 - p));
    let xs = x.as_slice();
    for_flat_chunks(out.as_mut_slice(), |off, o| {
        let mut buf = [0u8; FLAG_BLOCK];
        let xs = &xs[off..off + o.len()];
        for (ci, (o, xs)) in o
            .chunks_mut(FLAG_BLOCK)
            .zip(xs.chunks(FLAG_BLOCK))
            .enumerate()
        {
            let kb = &mut buf[..o.len()];
            keep_flags(key, (off + ci * FLAG_BLOCK) as u64, thr, kb);
            // relu then dropout: max(v, 0) * scale if kept
            simd::relu_dropout_apply(o, xs, kb, scale);
        }
    });
}

/// Backward of [`relu_dropout_forward`] from its output `y` (no mask needed): `dx = dy / (1 - p)` where
/// `y > 0` (kept and positive), else 0. Writes `dx` (`=`).
///
/// # Panics
/// If shapes differ or `p` is outside `[0, 1)`.
#[track_caller]
pub fn relu_dropout_backward<T: Float>(dx: &mut Tensor<T>, dy: &Tensor<T>, y: &Tensor<T>, p: f64) {
    check_p("relu_dropout_backward", p);
    assert_same_shape("relu_dropout_backward", "dy", dy.shape(), "y", y.shape());
    assert_same_shape("relu_dropout_backward", "dx", dx.shape(), "y", y.shape());
    let scale = T::from_f64(1.0 / (1.0 - p));
    let (dys, ys) = (dy.as_slice(), y.as_slice());
    for_flat_chunks(dx.as_mut_slice(), |off, o| {
        let n = o.len();
        // y = relu(x) * m * scale  =>  dx = dy * m * scale * [x > 0] = dy * scale * [y > 0]
        simd::relu_dropout_bwd(o, &dys[off..off + n], &ys[off..off + n], scale);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The vectorised flags equal the scalar hash for many keys, offsets (odd, near 2^32, near 2^64 to
    /// exercise wrapping) and lengths that are not multiples of 8.
    #[test]
    fn vector_flags_match_scalar_hash() {
        let mut lens: Vec<usize> = (0..40).collect();
        lens.extend([63, 64, 65, 255, 256, 257, 1000]);
        for seed in [0u64, 1, 7, 0xDEAD_BEEF, u64::MAX] {
            for step in [0u64, 3, 1 << 40] {
                let key = DropoutKey { seed, step };
                for start in [0u64, 1, 5, 13, (1 << 32) - 3, u64::MAX - 20] {
                    for p in [0.1, 0.2, 0.5, 0.9] {
                        let thr = dropout_threshold(p);
                        for &n in &lens {
                            let mut got = vec![2u8; n];
                            keep_flags(key, start, thr, &mut got);
                            for (i, &g) in got.iter().enumerate() {
                                let want = dropout_keep(key, start.wrapping_add(i as u64), p) as u8;
                                assert_eq!(
                                    g, want,
                                    "seed {seed} step {step} start {start} p {p} n {n} i {i}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }

    /// The mask of a fixed key is the one the scalar splitmix64 code drew before the vectorised kernel
    /// (pinned values, so training runs reproduce across versions).
    #[test]
    fn masks_are_pinned() {
        let key = DropoutKey { seed: 42, step: 7 };
        let x = Tensor::from_vec(&[64], vec![1.0f32; 64]).unwrap();
        let mut y = Tensor::zeros(&[64]);
        dropout_forward(&mut y, &x, 0.5, key);
        let bits: u64 = y
            .as_slice()
            .iter()
            .enumerate()
            .map(|(i, &v)| ((v != 0.0) as u64) << i)
            .sum();
        let want: u64 = (0..64)
            .map(|i| (dropout_keep(key, i, 0.5) as u64) << i)
            .sum();
        assert_eq!(bits, want);
        assert_eq!(
            bits, PINNED_BITS,
            "mask of (42, 7) at p = 0.5 changed: {bits:#x}"
        );
    }

    const PINNED_BITS: u64 = 0x73a0_1ca0_e2d3_fe28;

    #[test]
    fn relu_dropout_equals_relu_then_dropout() {
        let v: Vec<f64> = (0..1001)
            .map(|i| ((i * 37 % 101) as f64 - 50.0) / 7.0)
            .collect();
        let x = Tensor::from_vec(&[7, 143], v).unwrap();
        let key = DropoutKey { seed: 3, step: 11 };
        let mut r = Tensor::zeros(&[7, 143]);
        crate::relu_forward(&mut r, &x);
        let mut want = Tensor::zeros(&[7, 143]);
        dropout_forward(&mut want, &r, 0.3, key);
        let mut got = Tensor::zeros(&[7, 143]);
        relu_dropout_forward(&mut got, &x, 0.3, key);
        assert_eq!(got, want);
        // backward: relu_backward(dropout_backward(dy)) from the un-fused outputs
        let dy =
            Tensor::from_vec(&[7, 143], (0..1001).map(|i| (i as f64).sin()).collect()).unwrap();
        let mut dd = Tensor::zeros(&[7, 143]);
        dropout_backward(&mut dd, &dy, 0.3, key);
        let mut want_dx = Tensor::zeros(&[7, 143]);
        crate::relu_backward(&mut want_dx, &dd, &r);
        let mut dx = Tensor::zeros(&[7, 143]);
        relu_dropout_backward(&mut dx, &dy, &got, 0.3);
        assert_eq!(dx, want_dx);
    }
}
