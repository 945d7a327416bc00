//! Row kernels for inference only (SASRec's serving forward): layer norm that keeps nothing for a
//! backward pass, and a softmax over a row's visible prefix (causal attention).
//!
//! `f32` on a CPU with AVX-512F runs hand-written kernels: a short row (layer norm over at most 64
//! features) stays in registers for all its passes, the exponential's polynomial runs on fused
//! multiply-adds and the reductions are single vector instructions. They round differently from the
//! training kernels (`simd`), within a few ulp, so a served score can differ from the training
//! forward's in the last bits. Anything else (`f64`, other CPUs, wider rows) runs the training
//! kernels and matches them exactly.

use crate::Float;
use crate::simd::{self, as_f32, as_f32_mut, softmax_row_in_place};

/// Widest layer-norm row the AVX-512 kernel holds in registers (four vectors).
const LN_MAX_COLS: usize = 64;

/// `out = (x - mean) / sqrt(var + eps) * gamma + beta` for every row of `x` (rows of `gamma.len()`
/// elements), like `layernorm_forward` without its mean and reciprocal-std outputs.
///
/// # Panics
/// If `x` and `out` differ in length, `beta` in length from `gamma`, or `x` is not whole rows.
pub fn layernorm_rows<T: Float>(out: &mut [T], x: &[T], gamma: &[T], beta: &[T], eps: T) {
    let c = gamma.len();
    assert!(
        out.len() == x.len() && beta.len() == c && (c == 0 || x.len().is_multiple_of(c)),
        "layernorm_rows: out {} and x {} elements, gamma {} and beta {}: expected equal lengths \
         and whole rows",
        out.len(),
        x.len(),
        c,
        beta.len()
    );
    if c == 0 {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if let (Some(out), Some(x), Some(g), Some(b)) =
        (as_f32_mut(out), as_f32(x), as_f32(gamma), as_f32(beta))
        && c <= LN_MAX_COLS
        && std::arch::is_x86_feature_detected!("avx512f")
    {
        let eps = eps.to_f64() as f32;
        // SAFETY: AVX-512F was detected just above; the lengths were checked against c.
        unsafe {
            match c.div_ceil(16) {
                1 => avx512::layernorm_rows::<1>(out, x, g, b, eps),
                2 => avx512::layernorm_rows::<2>(out, x, g, b, eps),
                3 => avx512::layernorm_rows::<3>(out, x, g, b, eps),
                _ => avx512::layernorm_rows::<4>(out, x, g, b, eps),
            }
        }
        return;
    }
    let (mut mean, mut rstd) = ([T::ZERO], [T::ZERO]);
    for (o, xr) in out.chunks_exact_mut(c).zip(x.chunks_exact(c)) {
        simd::ln_fwd_rows(xr, o, &mut mean, &mut rstd, gamma, beta, eps, c);
    }
}

/// Softmax over the first `visible` entries of `row` (`e^(x_j - max) / sum`), zeros after them: one
/// causal attention row whose later keys are hidden.
///
/// # Panics
/// If `visible` is 0 or longer than the row.
pub fn softmax_prefix<T: Float>(row: &mut [T], visible: usize) {
    assert!(
        visible >= 1 && visible <= row.len(),
        "softmax_prefix: {visible} visible entries in a row of {}",
        row.len()
    );
    #[cfg(target_arch = "x86_64")]
    if let Some(r) = as_f32_mut(row)
        && std::arch::is_x86_feature_detected!("avx512f")
    {
        // SAFETY: AVX-512F was detected just above; 1 <= visible <= r.len().
        unsafe { avx512::softmax_prefix(r, visible) };
        return;
    }
    softmax_prefix_multi(row, visible);
}

#[inline(always)]
fn softmax_prefix_generic<T: Float>(row: &mut [T], visible: usize) {
    row[visible..].fill(T::NEG_INFINITY);
    softmax_row_in_place(row);
}

crate::multiversion! {
    /// [`softmax_prefix`] through the training softmax: hidden entries are `-inf` before it.
    fn softmax_prefix_multi<T: Float>(row: &mut [T], visible: usize) => softmax_prefix_generic
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx512 {
    use std::arch::x86_64::*;

    /// The lanes of vector `v` that hold elements below `len` (all 16, some or none).
    fn lanes(len: usize, v: usize) -> __mmask16 {
        let valid = len.saturating_sub(16 * v).min(16);
        ((1u32 << valid) - 1) as u16
    }

    /// e^x per lane: [`crate::simd::exp_approx_f32`]'s polynomial and constants on fused
    /// multiply-adds (0 below -87.3, where `f32::exp` is subnormal or 0).
    #[target_feature(enable = "avx512f")]
    pub(crate) fn exp(x: __m512) -> __m512 {
        use crate::simd::expf::*;
        let xc = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(LOW)), _mm512_set1_ps(HIGH));
        // t = xc log2(e) + 1.5 2^23 rounds n = round(xc log2 e) into t's low mantissa bits.
        let t = _mm512_fmadd_ps(xc, _mm512_set1_ps(LOG2E), _mm512_set1_ps(MAGIC));
        let n = _mm512_sub_ps(t, _mm512_set1_ps(MAGIC));
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_HI), xc);
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_LO), r);
        let mut p = _mm512_set1_ps(POLY[0]);
        for &c in &POLY[1..] {
            p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
        }
        // y = p r^2 + r + 1
        let y = _mm512_fmadd_ps(
            _mm512_mul_ps(p, r),
            r,
            _mm512_add_ps(r, _mm512_set1_ps(1.0)),
        );
        let ni = _mm512_sub_epi32(
            _mm512_castps_si512(t),
            _mm512_set1_epi32(MAGIC.to_bits() as i32),
        );
        let scale = _mm512_castsi512_ps(_mm512_slli_epi32::<23>(_mm512_add_epi32(
            ni,
            _mm512_set1_epi32(127),
        )));
        let underflow = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(x, _mm512_set1_ps(LOW));
        _mm512_maskz_mul_ps(!underflow, y, scale)
    }

    /// [`super::softmax_prefix`] for `f32`: a pass for the maximum, one for the exponentials and
    /// their sum, one to scale; the last vector of each pass is masked.
    ///
    /// # Safety
    /// The CPU has AVX-512F; `1 <= visible <= row.len()`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn softmax_prefix(row: &mut [f32], visible: usize) {
        let p = row.as_mut_ptr();
        let nv = visible.div_ceil(16);
        let mut mx = _mm512_set1_ps(f32::NEG_INFINITY);
        for v in 0..nv {
            let hidden = _mm512_set1_ps(f32::NEG_INFINITY);
            // SAFETY: the mask enables only elements below `visible` <= row.len(); masked-off
            // lanes are neither read nor written (here and in the passes below).
            let x = unsafe { _mm512_mask_loadu_ps(hidden, lanes(visible, v), p.add(16 * v)) };
            mx = _mm512_max_ps(mx, x);
        }
        let mx = _mm512_set1_ps(_mm512_reduce_max_ps(mx));
        let mut sum = _mm512_setzero_ps();
        for v in 0..nv {
            let m = lanes(visible, v);
            // SAFETY: as above, the mask keeps the load and the store below `visible`.
            let x = unsafe { _mm512_maskz_loadu_ps(m, p.add(16 * v)) };
            let e = _mm512_maskz_mov_ps(m, exp(_mm512_sub_ps(x, mx)));
            // SAFETY: as above.
            unsafe { _mm512_mask_storeu_ps(p.add(16 * v), m, e) };
            sum = _mm512_add_ps(sum, e);
        }
        let inv = _mm512_set1_ps(1.0 / _mm512_reduce_add_ps(sum));
        for v in 0..nv {
            let m = lanes(visible, v);
            // SAFETY: as above, the mask keeps the load and the store below `visible`.
            unsafe {
                let e = _mm512_maskz_loadu_ps(m, p.add(16 * v));
                _mm512_mask_storeu_ps(p.add(16 * v), m, _mm512_mul_ps(e, inv));
            }
        }
        row[visible..].fill(0.0);
    }

    /// [`super::layernorm_rows`] for `f32` rows of `16 (V - 1) < c <= 16 V` features, each held in
    /// `V` registers (the last one masked) for the mean, the variance and the output.
    ///
    /// # Safety
    /// The CPU has AVX-512F; `gamma` and `beta` hold `c` elements, `x` and `out` whole rows of `c`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn layernorm_rows<const V: usize>(
        out: &mut [f32],
        x: &[f32],
        gamma: &[f32],
        beta: &[f32],
        eps: f32,
    ) {
        let c = gamma.len();
        let masks: [__mmask16; V] = std::array::from_fn(|v| lanes(c, v));
        let load = |xs: &[f32], v: usize| {
            // SAFETY: xs holds at least c elements and the mask enables only elements below c
            // (masked-off lanes are neither read nor faulted).
            unsafe { _mm512_maskz_loadu_ps(masks[v], xs.as_ptr().add(16 * v)) }
        };
        let g: [__m512; V] = std::array::from_fn(|v| load(gamma, v));
        let b: [__m512; V] = std::array::from_fn(|v| load(beta, v));
        let inv_c = 1.0 / c as f32;
        for (o, xr) in out.chunks_exact_mut(c).zip(x.chunks_exact(c)) {
            let xv: [__m512; V] = std::array::from_fn(|v| load(xr, v));
            let sum = xv
                .iter()
                .fold(_mm512_setzero_ps(), |s, &v| _mm512_add_ps(s, v));
            let mean = _mm512_set1_ps(_mm512_reduce_add_ps(sum) * inv_c);
            // Masked-off lanes of x are 0 and must stay 0 in the deviations.
            let dev: [__m512; V] =
                std::array::from_fn(|v| _mm512_maskz_sub_ps(masks[v], xv[v], mean));
            let sq = dev
                .iter()
                .fold(_mm512_setzero_ps(), |s, &d| _mm512_fmadd_ps(d, d, s));
            let rstd = _mm512_set1_ps(1.0 / (_mm512_reduce_add_ps(sq) * inv_c + eps).sqrt());
            for v in 0..V {
                let y = _mm512_fmadd_ps(_mm512_mul_ps(dev[v], rstd), g[v], b[v]);
                // SAFETY: o is a row of c elements and the mask enables only elements below c.
                unsafe { _mm512_mask_storeu_ps(o.as_mut_ptr().add(16 * v), masks[v], y) };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic spread of values in `[-scale, scale]`.
    fn values(n: usize, seed: u64, scale: f64) -> Vec<f64> {
        let mut s = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) * scale
            })
            .collect()
    }

    fn softmax_f64(x: &[f64]) -> Vec<f64> {
        let m = x.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = x.iter().map(|v| (v - m).exp()).collect();
        let s: f64 = e.iter().sum();
        e.iter().map(|v| v / s).collect()
    }

    #[test]
    fn softmax_prefix_matches_f64_and_zeroes_hidden_entries() {
        for len in [1usize, 2, 15, 16, 17, 50, 64, 200, 208] {
            for visible in [1, len / 3 + 1, len.saturating_sub(1).max(1), len] {
                for scale in [0.5, 8.0, 120.0] {
                    let x = values(len, (len * 1000 + visible) as u64, scale);
                    let want = softmax_f64(&x[..visible]);
                    // NaN in the hidden part must not leak into the visible one.
                    let mut row: Vec<f32> = x.iter().map(|&v| v as f32).collect();
                    row[visible..].fill(f32::NAN);
                    let rounded: Vec<f64> = row[..visible].iter().map(|&v| v as f64).collect();
                    let want_f32 = softmax_f64(&rounded);
                    softmax_prefix(&mut row, visible);
                    for j in 0..visible {
                        let err = (row[j] as f64 - want_f32[j]).abs();
                        assert!(
                            err <= 1e-6 * want_f32[j].max(1e-30) + 1e-30,
                            "len {len} visible {visible} scale {scale}: p[{j}] {} against {}",
                            row[j],
                            want_f32[j]
                        );
                        assert!((row[j] as f64 - want[j]).abs() <= 1e-5 * want[j] + 1e-7);
                    }
                    assert!(row[visible..].iter().all(|&p| p == 0.0));
                    let mut row64 = x.clone();
                    softmax_prefix(&mut row64, visible);
                    for j in 0..visible {
                        assert!((row64[j] - want[j]).abs() <= 1e-14);
                    }
                    assert!(row64[visible..].iter().all(|&p| p == 0.0));
                }
            }
        }
    }

    #[test]
    fn softmax_prefix_underflows_to_zero_not_nan() {
        let mut row = vec![0.0f32, -100.0, -1e30, 3.0];
        softmax_prefix(&mut row, 4);
        let e3 = 3.0f64.exp();
        assert!((row[0] as f64 - 1.0 / (1.0 + e3)).abs() < 1e-7);
        assert_eq!(row[1], 0.0);
        assert_eq!(row[2], 0.0);
        assert!((row[3] as f64 - e3 / (1.0 + e3)).abs() < 1e-7);
    }

    /// The training kernel (`layernorm_forward`) on rows of `c`: `[out]` and the inference kernel's.
    fn both_kernels<T: Float>(x: &[f64], g: &[f64], b: &[f64], c: usize) -> (Vec<T>, Vec<T>) {
        let cast = |v: &[f64]| v.iter().map(|&e| T::from_f64(e)).collect::<Vec<T>>();
        let (x, g, b) = (cast(x), cast(g), cast(b));
        let rows = x.len() / c;
        let tensor = |v: &[T], shape: &[usize]| crate::Tensor::from_vec(shape, v.to_vec()).unwrap();
        let mut want = crate::Tensor::zeros(&[rows, c]);
        let (mut mean, mut rstd) = (crate::Tensor::zeros(&[rows]), crate::Tensor::zeros(&[rows]));
        let eps = T::from_f64(1e-8);
        crate::layernorm_forward(
            &mut want,
            &mut mean,
            &mut rstd,
            &tensor(&x, &[rows, c]),
            &tensor(&g, &[c]),
            &tensor(&b, &[c]),
            eps,
        );
        let mut got = vec![T::ZERO; rows * c];
        layernorm_rows(&mut got, &x, &g, &b, eps);
        (want.as_slice().to_vec(), got)
    }

    #[test]
    fn layernorm_rows_match_the_training_kernel() {
        for c in [1, 7, 16, 17, 33, 50, 64, 65, 100] {
            let x = values(5 * c, c as u64, 3.0);
            let g = values(c, 7 + c as u64, 1.5);
            let b = values(c, 11 + c as u64, 0.5);
            // f32 on an AVX-512 CPU: the register kernel, within a few ulp of the training kernel.
            let (want, got) = both_kernels::<f32>(&x, &g, &b, c);
            for (j, (&a, &w)) in got.iter().zip(&want).enumerate() {
                assert!(
                    (a - w).abs() <= 2e-6 * (1.0 + w.abs()),
                    "c {c}, element {j}: {a} against the training kernel's {w}"
                );
            }
            // f64 takes the training kernel itself: exactly equal.
            let (want, got) = both_kernels::<f64>(&x, &g, &b, c);
            assert_eq!(got, want, "c {c}: f64");
        }
    }

    #[test]
    #[should_panic(expected = "layernorm_rows")]
    fn layernorm_rows_rejects_partial_rows() {
        let mut out = vec![0.0f32; 7];
        layernorm_rows(&mut out, &[0.0f32; 7], &[1.0f32; 4], &[0.0f32; 4], 1e-5);
    }
}
