//! An AVX-512 `f32` GEMM for the shapes of sequential recommenders (`k` = hidden size, often 50..256).
//!
//! `matrixmultiply` has no AVX-512 kernel (its AVX2 8x8 kernel uses half of Zen 5's FP width), so on a
//! CPU with AVX-512F `f32` products run here; otherwise, and for `f64`, they go to `matrixmultiply`.
//!
//! Layout: `B` is packed per `KC`-deep block into panels of `NR = 32` columns (`[kc][32]`, zero-padded;
//! a product of at most `4 MB` rows whose `B` has unit column stride reads `B` in place instead; a
//! transposed `B` is packed by 16 x 16 register transposes),
//! `A` is read in place (one broadcast per element, any strides, so `op(A) = A^T` costs no copy), and an
//! `MR x NR = 8 x 32` micro-kernel keeps 16 zmm accumulators (an edge panel of at most 16 columns runs a
//! half-width variant). Row edges reuse the last valid row (its
//! results are not stored); column edges use masked loads and stores. `beta = 0` never reads `C`.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;
use std::cell::RefCell;

const MR: usize = 8;
const NR: usize = 32;
const KC: usize = 256;
/// `KC` when `A` is read transposed (`rsa = 1`: the weight gradients `dW = dY^T X` of training).
/// An `MR`-row strip of such an `A` takes one cache line per step of `k` (256 lines for a 256-deep
/// block), which beside a 32 KiB `B` panel overflows the 48 KiB L1. One thread, paired medians of
/// 190 alternated calls: `[6400, 400]^T [6400, 100]` (the LSTM's `dW_ih`) 6.6% faster,
/// `[6400, 300]^T [6400, 100]` 4.7%, `[25600, 50]^T [25600, 50]` 7.6%, `[25600, 150]^T [25600, 50]`
/// 5.1%; products that stream from memory (`k = 25600` by 64 columns) 1-2%. Only for a `C` of at most
/// `SMALL_C` elements: every k-block reads and writes `C` once more, and the item-embedding gradient
/// of full cross-entropy (`[25600, 3417]^T [25600, 64]`, a 875 KiB `C`) was 8% slower with it.
const KC_TRANSPOSED_A: usize = 128;
/// Largest `C` (elements; 256 KiB of `f32`) that takes [`KC_TRANSPOSED_A`].
const SMALL_C: usize = 64 * 1024;
/// Rows of `A` per cache block (with `KC` this keeps an `A` block near 64 KiB).
const MB: usize = 64;
/// Products of at most this many rows read a `B` of unit column stride in place: four row blocks.
/// Against packing from 64 rows up, one thread, paired medians of 400 alternated timings in one
/// process: 128 x 100 x 300 6.7% faster, 128 x 100 x 400 6.7%, 256 x 100 x 300 2.6%; at 384 and
/// 512 rows the two were within 1%, and from 6,400 rows packing was 1-2% faster. (64 rows against
/// 16, on the RNN step products on two threads: 3-8% faster.)
const DIRECT_MAX_ROWS: usize = 4 * MB;

thread_local! {
    /// Packing buffer for `B`, reused across calls on each thread (no allocation once warm).
    static PACK: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// `C = alpha * A B + beta * C` with `matrixmultiply::sgemm`'s argument order and meaning.
///
/// # Safety
/// As `matrixmultiply::sgemm`: every element addressed by the dimensions and strides is in bounds and
/// `C` does not alias `A` or `B`.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn sgemm(
    m: usize,
    k: usize,
    n: usize,
    alpha: f32,
    a: *const f32,
    rsa: isize,
    csa: isize,
    b: *const f32,
    rsb: isize,
    csb: isize,
    beta: f32,
    c: *mut f32,
    rsc: isize,
    csc: isize,
) {
    #[cfg(target_arch = "x86_64")]
    {
        if csc == 1 && m > 0 && n > 0 && k > 0 && std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: AVX-512F was detected; the pointer contract is the caller's, forwarded unchanged.
            unsafe { sgemm_avx512(m, k, n, alpha, a, rsa, csa, b, rsb, csb, beta, c, rsc) };
            return;
        }
    }
    // SAFETY: same contract as matrixmultiply::sgemm, forwarded unchanged.
    unsafe { matrixmultiply::sgemm(m, k, n, alpha, a, rsa, csa, b, rsb, csb, beta, c, rsc, csc) }
}

/// Packs `B[k0..k0 + kc, 0..n]` into `ceil(n / NR)` panels of `[kc][NR]`, zero-padding the last panel,
/// and returns the packed slice, which starts on a 64-byte boundary inside `buf` (a zmm load that
/// straddles two cache lines costs two).
///
/// Every element of the returned slice is written here (data or padding zero), so the buffer is only
/// grown, never cleared: a memset of the whole panel per call cost ~10% of a 128x100x300 product.
///
/// # Safety
/// `b` with strides `(rsb, csb)` must address a valid `[k0 + kc, n]` matrix, and the CPU must support
/// AVX-512F (full 32-float rows are then copied with two zmm moves instead of a `memmove` call each).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn pack_b(
    buf: &mut Vec<f32>,
    b: *const f32,
    rsb: isize,
    csb: isize,
    k0: usize,
    kc: usize,
    n: usize,
) -> &[f32] {
    let panels = n.div_ceil(NR);
    let len = panels * kc * NR;
    if buf.len() < len + 16 {
        buf.resize(len + 16, 0.0);
    }
    let skew = (64 - buf.as_ptr() as usize % 64) % 64 / 4;
    let dst = &mut buf[skew..skew + len];
    if rsb == 1 && csb > 1 {
        // B = X^T for a row-major X (keys in Q K^T, activations in W X^T): each column of B is a
        // contiguous row of X, so the panel is written by 16 x 16 register transposes.
        for jp in 0..panels {
            let j0 = jp * NR;
            let w = NR.min(n - j0);
            let panel = &mut dst[jp * kc * NR..(jp + 1) * kc * NR];
            for half in 0..NR / 16 {
                let cols = w.saturating_sub(16 * half).min(16);
                for p0 in (0..kc).step_by(16) {
                    let depth = 16.min(kc - p0);
                    let mask = ((1u32 << depth) - 1) as u16;
                    let rows: [__m512; 16] = std::array::from_fn(|jj| {
                        if jj < cols {
                            // SAFETY: elements (k0 + p0 .. k0 + p0 + depth, j0 + 16 half + jj) of B,
                            // contiguous because rsb == 1, inside the [k0 + kc, n] matrix; the mask
                            // stops the load at `depth`.
                            unsafe {
                                _mm512_maskz_loadu_ps(
                                    mask,
                                    b.offset(
                                        (k0 + p0) as isize + (j0 + 16 * half + jj) as isize * csb,
                                    ),
                                )
                            }
                        } else {
                            _mm512_setzero_ps()
                        }
                    });
                    let t = transpose_16x16(rows);
                    for (pp, v) in t.iter().enumerate().take(depth) {
                        let at = (p0 + pp) * NR + 16 * half;
                        let out: &mut [f32; 16] = (&mut panel[at..at + 16]).try_into().expect("16");
                        // SAFETY: 16 floats of the panel's row p0 + pp.
                        unsafe { _mm512_storeu_ps(out.as_mut_ptr(), *v) };
                    }
                }
            }
        }
        return &buf[skew..skew + len];
    }
    for jp in 0..panels {
        let j0 = jp * NR;
        let w = NR.min(n - j0);
        let panel = &mut dst[jp * kc * NR..(jp + 1) * kc * NR];
        for p in 0..kc {
            let (row, pad) = panel[p * NR..(p + 1) * NR].split_at_mut(w);
            pad.fill(0.0);
            // SAFETY: (k0 + p, j0 + jj) with jj < w lies inside the [k0 + kc, n] matrix the caller vouches for.
            let src = unsafe { b.offset((k0 + p) as isize * rsb + j0 as isize * csb) };
            if csb == 1 && w == NR {
                // SAFETY: NR contiguous elements of one row of B; a fixed-size copy, inlined.
                let full: &mut [f32; NR] = row.try_into().expect("w == NR");
                *full = unsafe { *src.cast::<[f32; NR]>() };
            } else if csb == 1 {
                // SAFETY: w contiguous elements of one row of B.
                row.copy_from_slice(unsafe { std::slice::from_raw_parts(src, w) });
            } else {
                for (jj, r) in row.iter_mut().enumerate() {
                    // SAFETY: as above, column j0 + jj < n.
                    *r = unsafe { *src.offset(jj as isize * csb) };
                }
            }
        }
    }
    &buf[skew..skew + len]
}

/// The transpose of a 16 x 16 block held as 16 row vectors: output vector `i` is column `i`.
/// Three rounds of in-lane unpacks and 128-bit lane shuffles, 64 instructions for 256 elements.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn transpose_16x16(r: [__m512; 16]) -> [__m512; 16] {
    // 1. Interleave pairs of rows: 2 x 2 blocks of 32-bit elements.
    let t: [__m512; 16] = std::array::from_fn(|i| {
        let (a, b) = (r[i & !1], r[i | 1]);
        if i % 2 == 0 {
            _mm512_unpacklo_ps(a, b)
        } else {
            _mm512_unpackhi_ps(a, b)
        }
    });
    // 2. Interleave 64-bit pairs: 4 x 4 blocks inside each 128-bit lane.
    let u: [__m512; 16] = std::array::from_fn(|i| {
        let base = i & !3;
        let (a, b) = (t[base + (i & 2) / 2], t[base + 2 + (i & 2) / 2]);
        let (a, b) = (_mm512_castps_pd(a), _mm512_castps_pd(b));
        _mm512_castpd_ps(if i % 2 == 0 {
            _mm512_unpacklo_pd(a, b)
        } else {
            _mm512_unpackhi_pd(a, b)
        })
    });
    // 3-4. Gather 128-bit lanes: rows i and i + 4 (then i and i + 8), even lanes then odd lanes.
    let v: [__m512; 16] = std::array::from_fn(|i| {
        let base = i & !7;
        let (a, b) = (u[base + (i & 3)], u[base + 4 + (i & 3)]);
        if i & 4 == 0 {
            _mm512_shuffle_f32x4::<0x88>(a, b)
        } else {
            _mm512_shuffle_f32x4::<0xdd>(a, b)
        }
    });
    std::array::from_fn(|i| {
        let (a, b) = (v[i & 7], v[8 + (i & 7)]);
        if i & 8 == 0 {
            _mm512_shuffle_f32x4::<0x88>(a, b)
        } else {
            _mm512_shuffle_f32x4::<0xdd>(a, b)
        }
    })
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn sgemm_avx512(
    m: usize,
    k: usize,
    n: usize,
    alpha: f32,
    a: *const f32,
    rsa: isize,
    csa: isize,
    b: *const f32,
    rsb: isize,
    csb: isize,
    beta: f32,
    c: *mut f32,
    rsc: isize,
) {
    PACK.with(|cell| {
        let mut pack = cell.borrow_mut();
        let panels = n.div_ceil(NR);
        // A product of at most four row blocks reads each element of B at most 4 MB / MR = 32 times
        // (twice for the 16-row tiles of causal attention in serving), from the same few cache lines
        // per panel row: packing would copy all of B for those reads, so a B with unit column stride
        // is then read in place.
        let direct = csb == 1 && m <= DIRECT_MAX_ROWS;
        let kc_max = if rsa == 1 && csa != 1 && m * n <= SMALL_C {
            KC_TRANSPOSED_A
        } else {
            KC
        };
        for k0 in (0..k).step_by(kc_max) {
            let kc = kc_max.min(k - k0);
            let (packed, ldb): (&[f32], isize) = if direct {
                (&[], rsb)
            } else {
                // SAFETY: rows k0..k0 + kc of B exist because k0 + kc <= k; AVX-512F was detected by
                // `sgemm`.
                (
                    unsafe { pack_b(&mut pack, b, rsb, csb, k0, kc, n) },
                    NR as isize,
                )
            };
            // Later k-blocks add onto the partial result of the earlier ones.
            let beta_k = if k0 == 0 { beta } else { 1.0 };
            for i0 in (0..m).step_by(MB) {
                let mb = MB.min(m - i0);
                for jp in 0..panels {
                    let j0 = jp * NR;
                    let nr = NR.min(n - j0);
                    let bp = if direct {
                        // SAFETY: element (k0, j0) of B, inside the [k, n] matrix.
                        unsafe { b.offset(k0 as isize * rsb + j0 as isize) }
                    } else {
                        packed[jp * kc * NR..].as_ptr()
                    };
                    // Packed panels are zero-padded to NR columns; in place, the edge panel's loads
                    // are masked to its nr columns.
                    let cols = if direct { nr } else { NR };
                    for ii in (0..mb).step_by(MR) {
                        let i = i0 + ii;
                        let mr = MR.min(m - i);
                        // SAFETY: rows i..i + mr < m and columns k0..k0 + kc of op(A) are in bounds;
                        // bp addresses kc rows of `cols` valid floats at stride ldb (a packed panel
                        // or B in place); C rows i..i + mr, columns j0..j0 + nr < n.
                        unsafe {
                            let kern = if nr > NR / 2 {
                                kernel::<2>
                            } else {
                                kernel::<1>
                            };
                            kern(
                                kc,
                                a.offset(i as isize * rsa + k0 as isize * csa),
                                rsa,
                                csa,
                                (bp, ldb, cols),
                                c.offset(i as isize * rsc + j0 as isize),
                                rsc,
                                alpha,
                                beta_k,
                                mr,
                                nr,
                            )
                        };
                    }
                }
            }
        }
    });
}

/// The `MR x NR` micro-kernel: `C[0..mr, 0..nr] = alpha * A[0..mr, 0..kc] Bp + beta * C`.
///
/// `V` is the number of 16-wide vectors of the panel that are computed: 2 for a full panel, 1 for an
/// edge panel of at most 16 columns (e.g. the last 4 of `n = 100`), which then costs half the FMAs.
/// `B` is `kc` rows of `cols` readable floats at stride `ldb`: a packed panel (`NR`, `NR`) or `B` in
/// place (its row stride, the panel's valid columns).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
#[inline]
unsafe fn kernel<const V: usize>(
    kc: usize,
    a: *const f32,
    rsa: isize,
    csa: isize,
    (bp, ldb, cols): (*const f32, isize, usize),
    c: *mut f32,
    rsc: isize,
    alpha: f32,
    beta: f32,
    mr: usize,
    nr: usize,
) {
    // Rows past mr re-read the last valid row: same cost, no branch, results discarded.
    let rows: [*const f32; MR] = std::array::from_fn(|i| {
        // SAFETY: min(i, mr - 1) < mr is a valid row of A.
        unsafe { a.offset(i.min(mr - 1) as isize * rsa) }
    });
    let load_mask = |v: usize| -> __mmask16 {
        let valid = cols.saturating_sub(16 * v).min(16);
        ((1u32 << valid) - 1) as u16
    };
    let bmask: [__mmask16; V] = std::array::from_fn(load_mask);
    let mut acc = [[_mm512_setzero_ps(); V]; MR];
    for p in 0..kc {
        // SAFETY: row p < kc of B starts at bp + p * ldb and has `cols` readable floats; the mask
        // keeps each load inside them (masked-off lanes are neither read nor faulted).
        let bv: [__m512; V] = std::array::from_fn(|v| unsafe {
            _mm512_maskz_loadu_ps(bmask[v], bp.offset(p as isize * ldb + 16 * v as isize))
        });
        let off = p as isize * csa;
        for i in 0..MR {
            // SAFETY: element (row, p) of op(A) with p < kc.
            let av = _mm512_set1_ps(unsafe { *rows[i].offset(off) });
            for v in 0..V {
                acc[i][v] = _mm512_fmadd_ps(av, bv[v], acc[i][v]);
            }
        }
    }
    let m0: __mmask16 = if nr >= 16 {
        0xFFFF
    } else {
        ((1u32 << nr) - 1) as u16
    };
    let m1: __mmask16 = if nr >= 32 {
        0xFFFF
    } else if nr > 16 {
        ((1u32 << (nr - 16)) - 1) as u16
    } else {
        0
    };
    let va = _mm512_set1_ps(alpha);
    let vb = _mm512_set1_ps(beta);
    for (i, acc_i) in acc.iter().enumerate().take(mr) {
        // SAFETY: row i < mr of C; the masks limit the columns to nr.
        unsafe {
            let cp = c.offset(i as isize * rsc);
            let mut r0 = _mm512_mul_ps(va, acc_i[0]);
            if beta != 0.0 {
                r0 = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(m0, cp), r0);
            }
            _mm512_mask_storeu_ps(cp, m0, r0);
            if V == 2 {
                let mut r1 = _mm512_mul_ps(va, acc_i[V - 1]);
                if beta != 0.0 {
                    r1 = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(m1, cp.add(16)), r1);
                }
                _mm512_mask_storeu_ps(cp.add(16), m1, r1);
            }
        }
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;

    #[test]
    fn transpose_16x16_moves_every_element() {
        if !std::arch::is_x86_feature_detected!("avx512f") {
            return;
        }
        let m: Vec<f32> = (0..256).map(|i| i as f32).collect();
        // SAFETY: AVX-512F was detected just above; each load reads 16 of the 256 floats.
        let rows: [__m512; 16] =
            std::array::from_fn(|i| unsafe { _mm512_loadu_ps(m[16 * i..].as_ptr()) });
        // SAFETY: as above.
        let t = unsafe { transpose_16x16(rows) };
        let mut out = [0.0f32; 256];
        for (i, v) in t.iter().enumerate() {
            // SAFETY: 16 floats of `out`; AVX-512F is present.
            unsafe { _mm512_storeu_ps(out[16 * i..].as_mut_ptr(), *v) };
        }
        for i in 0..16 {
            for j in 0..16 {
                assert_eq!(out[16 * i + j], m[16 * j + i], "element ({i}, {j})");
            }
        }
    }
}
