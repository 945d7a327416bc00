//! An AVX-512 `f32` GEMM for the shapes of sequential recommenders (`k` = hidden size, often 50..256).
//!
//! `matrixmultiply` has no AVX-512 kernel (its AVX2 8x8 kernel uses half of Zen 5's FP width), so on a
//! CPU with AVX-512F `f32` products run here; otherwise, and for `f64`, they go to `matrixmultiply`.
//!
//! Layout: `B` is packed per `KC`-deep block into panels of `NR = 32` columns (`[kc][32]`, zero-padded),
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
/// Rows of `A` per cache block (with `KC` this keeps an `A` block near 64 KiB).
const MB: usize = 64;

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
        for k0 in (0..k).step_by(KC) {
            let kc = KC.min(k - k0);
            // SAFETY: rows k0..k0 + kc of B exist because k0 + kc <= k; AVX-512F was detected by `sgemm`.
            let packed = unsafe { pack_b(&mut pack, b, rsb, csb, k0, kc, n) };
            // Later k-blocks add onto the partial result of the earlier ones.
            let beta_k = if k0 == 0 { beta } else { 1.0 };
            for i0 in (0..m).step_by(MB) {
                let mb = MB.min(m - i0);
                for jp in 0..panels {
                    let j0 = jp * NR;
                    let nr = NR.min(n - j0);
                    let bp = packed[jp * kc * NR..].as_ptr();
                    for ii in (0..mb).step_by(MR) {
                        let i = i0 + ii;
                        let mr = MR.min(m - i);
                        // SAFETY: rows i..i + mr < m and columns k0..k0 + kc of op(A) are in bounds;
                        // bp holds kc * NR packed floats; C rows i..i + mr, columns j0..j0 + nr < n.
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
                                bp,
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
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
#[inline]
unsafe fn kernel<const V: usize>(
    kc: usize,
    a: *const f32,
    rsa: isize,
    csa: isize,
    bp: *const f32,
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
    let mut acc = [[_mm512_setzero_ps(); V]; MR];
    for p in 0..kc {
        // SAFETY: bp holds kc rows of NR = 32 floats; p < kc and v < V <= 2.
        let bv: [__m512; V] =
            std::array::from_fn(|v| unsafe { _mm512_loadu_ps(bp.add(p * NR + 16 * v)) });
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
