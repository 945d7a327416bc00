//! Matrix products in bfloat16 on Intel AMX tiles (`TDPBF16PS`), for inference paths that opt in:
//! `out [m, n] = x [m, k] W^T + bias`, with `W [n, k]` a linear layer's weight ([`PackedB::pack`])
//! or an activation (an attention head's keys, [`PackedB::pack_rows`]), and `out = P V` with `V`
//! an activation taken as it is ([`PackedB::pack_cols`]).
//!
//! - **Numerics.** Both operands are rounded to bfloat16 (8 significant bits, round to nearest
//!   even, [`round_bf16`]); each product of two bfloat16 values is exact in `f32` and the sums run in
//!   `f32`. The result is the `f32` product of the rounded operands up to summation order, within
//!   about `2^-8` of the `f32` product relative to `sum |x_i w_i|` (tested against a reference on
//!   the rounded operands, to `f32` rounding).
//! - **Availability.** [`available`] reads CPUID (AMX-TILE, AMX-BF16, AVX512-BF16) and, on Linux,
//!   asks the kernel once per process for the tile-data state (`arch_prctl(ARCH_REQ_XCOMP_PERM)`).
//!   Elsewhere, and on CPUs without AMX, it is `false` and callers keep their `f32` path.
//! - **Layouts.** The left operand is converted into [`AmxScratch`]: rows of whole 32-value chunks
//!   (one 64-byte tile row each), zero-padded to a multiple of 16 rows. The right operand is packed
//!   into [`PackedB`] in the VNNI order the instruction reads: one 1 KiB tile per block of 16
//!   output columns by 32 depths, tile row `p` holding, for each of the 16 columns, the depths
//!   `2p` and `2p + 1` side by side. Padding is zero, so it adds nothing to the sums.
//! - **Kernel.** Four accumulator tiles hold a 32 x 32 block of the output; each step over 32 depths
//!   loads two tiles of `x` and two of `W` and issues four `TDPBF16PS`. The accumulators start from
//!   the bias (one tile load whose rows all read the bias). Every tile is 16 x 16, under one
//!   configuration loaded once per thread and kept (`LDTILECFG` waits for every tile operation in
//!   flight: once per product it dominated an attention's small products). Whole tiles are stored
//!   straight into `out`; a tile over the last rows or columns goes through a 1 KiB scratch and only
//!   its valid part is copied, so nothing outside the output view is written.
//!
//! The tile instructions are written with `asm!` (the AMX intrinsics are not stable Rust); every
//! tile register is named explicitly, and no other code of this program uses them.

#[cfg(target_arch = "x86_64")]
use std::arch::asm;
use std::sync::OnceLock;

/// Depths per tile row (32 bfloat16 values, 64 bytes).
const K_CHUNK: usize = 32;

/// Output columns (and rows) per tile.
const TILE: usize = 16;

/// bfloat16 values per packed tile of the right operand (16 rows of 64 bytes).
const TILE_VALUES: usize = TILE * K_CHUNK;

/// Whether this CPU and OS run AMX bf16 tiles (checked once per process, see the module docs).
pub fn available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(detect)
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn detect() -> bool {
    // CPUID leaf 7, sub-leaf 0: EDX bit 22 = AMX-BF16, bit 24 = AMX-TILE (leaf 0 reports the
    // highest leaf).
    use std::arch::x86_64::__cpuid_count;
    if __cpuid_count(0, 0).eax < 7 {
        return false;
    }
    let edx = __cpuid_count(7, 0).edx;
    // The bf16 conversions use AVX512-BF16, which every CPU with AMX-BF16 has (checked anyway).
    if edx & (1 << 22) == 0 || edx & (1 << 24) == 0 || !is_x86_feature_detected!("avx512bf16") {
        return false;
    }
    // Linux keeps the 8 KiB of tile data out of a thread's state until the process asks for it.
    const ARCH_REQ_XCOMP_PERM: libc::c_ulong = 0x1023;
    const XFEATURE_XTILEDATA: libc::c_ulong = 18;
    // SAFETY: arch_prctl with ARCH_REQ_XCOMP_PERM takes two integers and changes only the set of
    // register states this process may use.
    let granted = unsafe {
        libc::syscall(
            libc::SYS_arch_prctl,
            ARCH_REQ_XCOMP_PERM,
            XFEATURE_XTILEDATA,
        )
    };
    granted == 0
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
fn detect() -> bool {
    false
}

/// `x` rounded to the nearest bfloat16 (ties to even), as the `u16` bit pattern; NaN stays NaN.
#[inline]
fn to_bf16_bits(x: f32) -> u16 {
    let b = x.to_bits();
    if x.is_nan() {
        return ((b >> 16) | 0x40) as u16;
    }
    (b.wrapping_add(0x7fff + ((b >> 16) & 1)) >> 16) as u16
}

/// `x` rounded to the nearest bfloat16 (ties to even), back in `f32`: the value the tiles multiply.
pub fn round_bf16(x: f32) -> f32 {
    f32::from_bits(u32::from(to_bf16_bits(x)) << 16)
}

/// The right operand `W^T` of [`AmxScratch::linear`], packed in tiles (see the module docs).
#[derive(Clone, Debug, Default)]
pub struct PackedB {
    /// Depth `k` and output columns `n` of the product.
    k: usize,
    n: usize,
    /// Chunks of 32 depths, and tiles of 16 columns.
    chunks: usize,
    col_tiles: usize,
    /// `[col_tiles, chunks, 16, 32]` bfloat16 bits.
    data: Vec<u16>,
    /// The weights last packed, `[n, k]`: packing them again is a comparison, not a repack.
    source: Vec<f32>,
}

impl PackedB {
    /// An empty operand (fill it with [`PackedB::pack`]).
    pub fn new() -> Self {
        Self::default()
    }

    /// Packs `w` (`[n, k]`, row-major, a linear layer's weight) as the right operand `W^T [k, n]`,
    /// reusing this value's storage. Weights bit-identical to the last ones packed are only compared
    /// (one `memcmp`, several times cheaper than packing), so a caller may pack on every call and
    /// still never use stale weights.
    ///
    /// # Panics
    /// If `w.len() != n * k`.
    pub fn pack(&mut self, w: &[f32], n: usize, k: usize) {
        assert_eq!(
            w.len(),
            n * k,
            "PackedB::pack: w has {} values, not {n} x {k}",
            w.len()
        );
        if (self.n, self.k) == (n, k) && as_bytes(&self.source) == as_bytes(w) {
            return;
        }
        self.shape(n, k);
        self.source.extend_from_slice(w);
        for (j, row) in w.chunks_exact(k).enumerate() {
            let (jt, jc) = (j / TILE, j % TILE);
            for (kk, &v) in row.iter().enumerate() {
                let (c, p, odd) = (kk / K_CHUNK, (kk % K_CHUNK) / 2, kk % 2);
                let at = (jt * self.chunks + c) * TILE_VALUES + p * K_CHUNK + jc * 2 + odd;
                self.data[at] = to_bf16_bits(v);
            }
        }
    }

    /// Sizes the operand for `n` columns of depth `k`, all zero, and forgets the last weights.
    fn shape(&mut self, n: usize, k: usize) {
        self.source.clear();
        self.k = k;
        self.n = n;
        self.chunks = k.div_ceil(K_CHUNK);
        self.col_tiles = n.div_ceil(TILE);
        self.data.clear();
        self.data
            .resize(self.col_tiles * self.chunks * TILE_VALUES, 0);
    }

    /// Packs the rows of an activation as `W^T`: row `j < n` of `W` is `w[j ld..j ld + k]` (an
    /// attention head's keys, `S = Q K^T`). No comparison with the last operand: activations
    /// change on every call.
    ///
    /// # Panics
    /// If AMX is not [`available`] or the last row ends past `w`.
    pub fn pack_rows(&mut self, w: &[f32], (n, k, ld): (usize, usize, usize)) {
        assert!(available(), "PackedB::pack_rows: no AMX bf16 tiles");
        assert!(
            n == 0 || (n - 1) * ld + k <= w.len(),
            "PackedB::pack_rows: {n} rows of {k} at stride {ld} pass the {} values",
            w.len()
        );
        self.shape(n, k);
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `available` checked AVX512-BF16; `shape` sized and zeroed the tiles, and the
        // assert above keeps the rows inside `w`.
        unsafe {
            pack_rows_avx512(self, w, ld)
        };
    }

    /// Packs an activation `V [k, n]` (row `r < k` at `v[r ld..r ld + n]`) as the right operand
    /// itself, not transposed (an attention head's values, `ctx = P V`).
    ///
    /// # Panics
    /// If AMX is not [`available`] or the last row ends past `v`.
    pub fn pack_cols(&mut self, v: &[f32], (k, n, ld): (usize, usize, usize)) {
        assert!(available(), "PackedB::pack_cols: no AMX bf16 tiles");
        assert!(
            k == 0 || (k - 1) * ld + n <= v.len(),
            "PackedB::pack_cols: {k} rows of {n} at stride {ld} pass the {} values",
            v.len()
        );
        self.shape(n, k);
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `available` checked AVX512-BF16; `shape` sized and zeroed the tiles, and the
        // assert above keeps the rows inside `v`.
        unsafe {
            pack_cols_avx512(self, v, ld)
        };
    }

    /// Depth of the product (`k`).
    pub fn k(&self) -> usize {
        self.k
    }

    /// Output columns of the product (`n`).
    pub fn n(&self) -> usize {
        self.n
    }
}

/// The bytes of `v` (so that comparing two slices is one `memcmp`, bit for bit).
fn as_bytes(v: &[f32]) -> &[u8] {
    // SAFETY: `v` is `size_of_val(v)` initialised bytes (f32 has no padding), and `u8` has no
    // alignment or validity requirement; the borrow keeps `v` alive and unchanged.
    unsafe { std::slice::from_raw_parts(v.as_ptr().cast::<u8>(), std::mem::size_of_val(v)) }
}

/// The left operand of the tile products, converted to bfloat16 ([`AmxScratch::load`],
/// [`AmxScratch::load_rows`]) and reused between calls (storage only grows).
#[derive(Clone, Debug, Default)]
pub struct AmxScratch {
    /// `[rows, chunks * 32]` bfloat16 bits.
    a: Vec<u16>,
    /// Rows of `x` and chunks of 32 depths in `a`.
    rows: usize,
    chunks: usize,
}

impl AmxScratch {
    /// Empty buffers.
    pub fn new() -> Self {
        Self::default()
    }

    /// Converts the left operand `x` (`[rows, k]`) to bfloat16 tiles, for one or more
    /// [`AmxScratch::product`] calls.
    ///
    /// # Panics
    /// If AMX is not [`available`], or `k` is 0 or does not divide `x.len()`.
    pub fn load(&mut self, x: &[f32], k: usize) {
        assert!(
            k > 0 && x.len().is_multiple_of(k),
            "AmxScratch::load: {} values are not rows of {k}",
            x.len()
        );
        self.load_rows(x, (x.len() / k, k, k), 1.0);
    }

    /// [`AmxScratch::load`] of `alpha x` for `rows` rows of `k` values, row `r` at `x[r ld..]`
    /// (a view into a wider matrix: one attention head's columns, a tile of queries).
    ///
    /// # Panics
    /// If AMX is not [`available`] (the conversion uses AVX512-BF16), or the last row ends past `x`.
    pub fn load_rows(&mut self, x: &[f32], (rows, k, ld): (usize, usize, usize), alpha: f32) {
        assert!(available(), "AmxScratch::load_rows: no AMX bf16 tiles");
        assert!(
            rows == 0 || (rows - 1) * ld + k <= x.len(),
            "AmxScratch::load_rows: {rows} rows of {k} at stride {ld} pass the {} values",
            x.len()
        );
        let width = self.shape(rows, k);
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `available` (asserted above) checked AVX512-BF16, and so AVX-512F.
        unsafe {
            convert_rows_avx512(&mut self.a[..rows * width], x, (k, ld), alpha)
        };
    }

    /// Sizes the operand for `rows` rows of `k` depths and returns the width of a row (whole
    /// chunks). Tiles always load 16 rows: the rows after the last one up to a multiple of 16 are
    /// zeroed here; the caller fills the first `rows`.
    fn shape(&mut self, rows: usize, k: usize) -> usize {
        let chunks = k.div_ceil(K_CHUNK);
        let width = chunks * K_CHUNK;
        self.rows = rows;
        self.chunks = chunks;
        let padded = rows.next_multiple_of(TILE);
        if self.a.len() < padded * width {
            self.a.resize(padded * width, 0);
        }
        self.a[rows * width..padded * width].fill(0);
        width
    }

    /// Loads the unnormalised causal softmax of the score rows `s` as the left operand: row `r`
    /// (`s[r ld..r ld + k]`) becomes `exp(s_j - max)` for its first `first_visible + r` entries
    /// (clamped to `k`) and zero after them, and `sums[r]` receives their sum (in `f32`, before the
    /// rounding to bfloat16). A following product by `V` and a division of each row by its sum
    /// give `softmax(s) V` without a pass that normalises the probabilities and another that
    /// converts them.
    ///
    /// # Panics
    /// If AMX is not [`available`], `first_visible` is 0, the last row ends past `s`, or `sums`
    /// has fewer than `rows` values.
    pub fn load_softmax_rows(
        &mut self,
        s: &[f32],
        (rows, k, ld): (usize, usize, usize),
        first_visible: usize,
        sums: &mut [f32],
    ) {
        assert!(
            available(),
            "AmxScratch::load_softmax_rows: no AMX bf16 tiles"
        );
        assert!(
            first_visible >= 1
                && k >= 1
                && sums.len() >= rows
                && (rows == 0 || (rows - 1) * ld + k <= s.len()),
            "AmxScratch::load_softmax_rows: {rows} rows of {k} at stride {ld} in {} scores, \
             {first_visible} visible in the first, {} sums",
            s.len(),
            sums.len()
        );
        let width = self.shape(rows, k);
        for (r, (dst, sum)) in self.a[..rows * width]
            .chunks_exact_mut(width)
            .zip(sums.iter_mut())
            .enumerate()
        {
            let visible = (first_visible + r).min(k);
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `available` (asserted above) checked AVX512-BF16, and so AVX-512F; the row
            // has `k >= visible` scores and `dst` whole chunks.
            unsafe {
                *sum = exp_row_avx512(dst, &s[r * ld..r * ld + k], visible)
            };
        }
    }

    /// `out [rows, n] = x W^T + bias` for the operand of the last [`AmxScratch::load`].
    ///
    /// # Panics
    /// If AMX is not [`available`], if `w` was packed for another depth than the loaded `x`, or if
    /// `out` or `bias` do not have `rows * n` and `n` values.
    pub fn product(&mut self, out: &mut [f32], w: &PackedB, bias: Option<&[f32]>) {
        assert_eq!(
            w.chunks, self.chunks,
            "AmxScratch::product: W has depth {}, x has rows of {} chunks",
            w.k, self.chunks
        );
        assert_eq!(
            out.len(),
            self.rows * w.n,
            "AmxScratch::product: out is not [{}, {}]",
            self.rows,
            w.n
        );
        self.product_into((out, w.n), w, w.n, bias);
    }

    /// The first `n` columns of `x W^T + bias` into `out` at row stride `ldo` (`out` = `(slice,
    /// ldo)`). The loaded `x` may be shallower than `w` (fewer depth chunks): only its depths are
    /// summed, the depths of `w` beyond them meeting zeros of `x` in its last chunk (an attention's
    /// `P V` over the keys up to the last query, with `V` packed for all keys).
    ///
    /// # Panics
    /// If AMX is not [`available`], if `x` is deeper than `w`, if `n` exceeds `w`'s columns, or if
    /// `out` or `bias` are too short.
    pub fn product_into(
        &mut self,
        (out, ldo): (&mut [f32], usize),
        w: &PackedB,
        n: usize,
        bias: Option<&[f32]>,
    ) {
        assert!(
            available(),
            "AmxScratch::product: this CPU or OS has no AMX bf16 tiles"
        );
        let rows = self.rows;
        assert!(
            self.chunks <= w.chunks && n <= w.n,
            "AmxScratch::product: x has {} depth chunks, W {}; {n} columns of {}",
            self.chunks,
            w.chunks,
            w.n
        );
        assert!(
            rows == 0 || n == 0 || (ldo >= n && (rows - 1) * ldo + n <= out.len()),
            "AmxScratch::product: out is too short for [{rows}, {n}] at stride {ldo}"
        );
        if let Some(b) = bias {
            assert!(
                b.len() >= n,
                "AmxScratch::product: bias has fewer than {n} values"
            );
        }
        if rows == 0 || n == 0 || self.chunks == 0 {
            if let Some(b) = bias {
                for r in 0..rows {
                    out[r * ldo..r * ldo + n].copy_from_slice(&b[..n]);
                }
            } else {
                for r in 0..rows {
                    out[r * ldo..r * ldo + n].fill(0.0);
                }
            }
            return;
        }
        // `a` holds `rows` rows of `chunks * 32` values (zero-padded to a multiple of 16 rows),
        // `w.data` `w.col_tiles * w.chunks` tiles, of which the first `n.div_ceil(16)` column tiles
        // and `chunks <= w.chunks` depth chunks are read; `out` holds `rows` rows of `n` at stride
        // `ldo` and `bias` `n` values (asserted above).
        // SAFETY: AMX is available (asserted above), and these are the sizes `tile_product` needs.
        unsafe {
            tile_product(
                (self.a.as_ptr(), rows, self.chunks),
                (w.data.as_ptr(), w.chunks, n),
                bias.map(|b| b.as_ptr()),
                (out.as_mut_ptr(), ldo),
            )
        };
    }

    /// `out [rows, n] = x [rows, k] W^T + bias` in one call ([`AmxScratch::load`] then
    /// [`AmxScratch::product`]).
    pub fn linear(&mut self, out: &mut [f32], x: &[f32], w: &PackedB, bias: Option<&[f32]>) {
        self.load(x, w.k);
        self.product(out, w, bias);
    }
}

/// The lanes `0..valid` (at most 16) of a 16-lane mask.
#[cfg(target_arch = "x86_64")]
#[inline]
fn lanes(valid: usize) -> u16 {
    ((1u32 << valid.min(16)) - 1) as u16
}

/// Rows `alpha x[r ld..r ld + k]` to bfloat16 rows of whole chunks in `dst` (zero after `k`), with
/// `VCVTNE2PS2BF16` (round to nearest even, like [`to_bf16_bits`], except that subnormal inputs
/// become zero, as the tiles read them anyway), one 32-value chunk per step.
///
/// # Safety
/// The CPU must have AVX512-BF16.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn convert_rows_avx512(dst: &mut [u16], x: &[f32], (k, ld): (usize, usize), alpha: f32) {
    use std::arch::x86_64::*;
    let width = k.div_ceil(K_CHUNK) * K_CHUNK;
    let scale = _mm512_set1_ps(alpha);
    for (r, d) in dst.chunks_exact_mut(width).enumerate() {
        let s = &x[r * ld..r * ld + k];
        for c in (0..width).step_by(K_CHUNK) {
            let (lo_n, hi_n) = (k.saturating_sub(c), k.saturating_sub(c + 16));
            // SAFETY: masked-off lanes are not read, the others are `s[c..k]`; the store writes
            // the 32 values `d[c..c + 32]` (`d` has `width`, a multiple of 32).
            unsafe {
                let lo = _mm512_maskz_loadu_ps(lanes(lo_n), s.as_ptr().wrapping_add(c));
                let hi = _mm512_maskz_loadu_ps(lanes(hi_n), s.as_ptr().wrapping_add(c + 16));
                let (lo, hi) = (_mm512_mul_ps(lo, scale), _mm512_mul_ps(hi, scale));
                let v: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(hi, lo));
                _mm512_storeu_si512(d.as_mut_ptr().add(c).cast(), v);
            }
        }
    }
}

/// One row of [`AmxScratch::load_softmax_rows`]: `dst` (whole chunks) gets the bfloat16 of
/// `exp(s_j - max)` for `j < visible` and zero after; returns the sum of the `f32` exponentials.
///
/// # Safety
/// The CPU must have AVX512-BF16; `1 <= visible <= s.len()`, `dst.len()` a multiple of 32 and at
/// least `visible`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn exp_row_avx512(dst: &mut [u16], s: &[f32], visible: usize) -> f32 {
    use std::arch::x86_64::*;
    let p = s.as_ptr();
    let mut mx = _mm512_set1_ps(f32::NEG_INFINITY);
    for v in 0..visible.div_ceil(TILE) {
        // SAFETY: only lanes below `visible <= s.len()` are read.
        let x = unsafe { _mm512_mask_loadu_ps(mx, lanes(visible - TILE * v), p.add(TILE * v)) };
        mx = _mm512_max_ps(mx, x);
    }
    let mx = _mm512_set1_ps(_mm512_reduce_max_ps(mx));
    let mut sum = _mm512_setzero_ps();
    for c in (0..dst.len()).step_by(K_CHUNK) {
        let half = |at: usize| -> __m512 {
            let m = lanes(visible.saturating_sub(at));
            // SAFETY: only lanes below `visible` are read; the others are zero.
            let x = unsafe { _mm512_maskz_loadu_ps(m, p.wrapping_add(at)) };
            _mm512_maskz_mov_ps(m, crate::infer::avx512::exp(_mm512_sub_ps(x, mx)))
        };
        let (lo, hi) = (half(c), half(c + TILE));
        sum = _mm512_add_ps(sum, _mm512_add_ps(lo, hi));
        // SAFETY: `dst[c..c + 32]` is one whole chunk.
        unsafe {
            let v: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(hi, lo));
            _mm512_storeu_si512(dst.as_mut_ptr().add(c).cast(), v);
        }
    }
    _mm512_reduce_add_ps(sum)
}

/// [`PackedB::pack_rows`] on vectors: each 32-value chunk of a row of `w` is converted to 16
/// bfloat16 pairs, which go down one column of its tile (a scatter at a 64-byte stride).
///
/// # Safety
/// The CPU must have AVX512-BF16; `p.data` must hold the zeroed tiles for `n` rows of `k` values,
/// and `w` the rows `j ld..j ld + k` for `j < n`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn pack_rows_avx512(p: &mut PackedB, w: &[f32], ld: usize) {
    use std::arch::x86_64::*;
    let (n, k, chunks) = (p.n, p.k, p.chunks);
    let down = _mm512_setr_epi32(
        0, 16, 32, 48, 64, 80, 96, 112, 128, 144, 160, 176, 192, 208, 224, 240,
    );
    let data = p.data.as_mut_ptr().cast::<i32>();
    for j in 0..n {
        let row = &w[j * ld..j * ld + k];
        let (jt, jc) = (j / TILE, j % TILE);
        for c in 0..chunks {
            let at = c * K_CHUNK;
            let (lo_n, hi_n) = (k.saturating_sub(at), k.saturating_sub(at + 16));
            // SAFETY: masked loads read only `row[at..k]`; the scatter writes the 16 pair slots of
            // column `jc` in tile `(jt, c)`, inside `p.data` (`col_tiles * chunks * 512` values).
            unsafe {
                let lo = _mm512_maskz_loadu_ps(lanes(lo_n), row.as_ptr().wrapping_add(at));
                let hi = _mm512_maskz_loadu_ps(lanes(hi_n), row.as_ptr().wrapping_add(at + 16));
                let pairs: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(hi, lo));
                let base = data.add((jt * chunks + c) * TILE_VALUES / 2 + jc);
                _mm512_i32scatter_epi32::<4>(base.cast(), down, pairs);
            }
        }
    }
}

/// [`PackedB::pack_cols`] on vectors: rows `2 q` and `2 q + 1` of `v`, 16 columns at a time, are
/// converted and interleaved into one 64-byte tile row.
///
/// # Safety
/// The CPU must have AVX512-BF16; `p.data` must hold the zeroed tiles for depth `k` and `n`
/// columns, and `v` the rows `r ld..r ld + n` for `r < k`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn pack_cols_avx512(p: &mut PackedB, v: &[f32], ld: usize) {
    use std::arch::x86_64::*;
    let (n, k, chunks) = (p.n, p.k, p.chunks);
    let row = |r: usize, jt: usize| -> __m512i {
        if r >= k {
            return _mm512_setzero_si512();
        }
        let m = lanes(n - jt * TILE);
        // SAFETY: the mask keeps the load inside `v[r ld + 16 jt..r ld + n]`.
        unsafe {
            let x = _mm512_maskz_loadu_ps(m, v.as_ptr().wrapping_add(r * ld + jt * TILE));
            let h: __m256i = std::mem::transmute(_mm512_cvtneps_pbh(x));
            _mm512_cvtepu16_epi32(h)
        }
    };
    for q in 0..k.div_ceil(2) {
        let (c, pr) = (q / TILE, q % TILE);
        for jt in 0..p.col_tiles {
            let pair = _mm512_or_si512(row(2 * q, jt), _mm512_slli_epi32::<16>(row(2 * q + 1, jt)));
            let at = (jt * chunks + c) * TILE_VALUES + pr * K_CHUNK;
            // SAFETY: tile row `pr` of tile `(jt, c)`: 32 values inside `p.data`.
            unsafe { _mm512_storeu_si512(p.data.as_mut_ptr().add(at).cast(), pair) };
        }
    }
}

/// The palette-1 tile configuration (64 bytes: palette, then bytes per row of each tile, then
/// rows): all eight tiles 16 rows of 64 bytes. `tmm0..tmm3` accumulate a 32 x 32 block of the
/// output, `tmm4`, `tmm5` hold two row tiles of `x`, `tmm6`, `tmm7` two column tiles of `W^T`.
#[repr(C, align(64))]
struct TileConfig([u8; 64]);

const TILE_CONFIG: TileConfig = {
    let mut c = [0u8; 64];
    c[0] = 1; // palette
    let mut t = 0;
    while t < 8 {
        c[16 + 2 * t] = (K_CHUNK * 2) as u8; // bytes per row (u16 little-endian, high byte 0)
        c[48 + t] = TILE as u8; // rows
        t += 1;
    }
    TileConfig(c)
};

thread_local! {
    /// Whether this thread has loaded [`TILE_CONFIG`]. It stays loaded between products (the OS
    /// saves and restores it with the thread's registers): `LDTILECFG` waits for every tile
    /// operation in flight, and an attention tile's products are small enough for that wait to
    /// dominate when it comes with every call.
    static CONFIGURED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// `out [rows, n] = a b + bias`: `a` is `(pointer, rows, chunks)`, rows of `chunks * 32` bfloat16
/// values (padded with zero rows to a multiple of 16); `b` is `(pointer, b_chunks, n)`: packed
/// tiles (see [`PackedB`]), `b_chunks >= chunks` per column tile, of which the first `chunks` are
/// read; `bias` has `n` floats; `out` is `(pointer, row stride)`.
///
/// Blocks of 32 x 32 outputs (column pairs outermost), on full 16 x 16 tiles: the accumulators
/// start from the bias (a tile load with row stride 0) or zero. A whole tile is stored straight
/// into `out`; a tile over the last rows or columns goes through a 1 KiB scratch, from which the
/// valid part is copied (its bias through a zero-padded copy), so nothing outside the `[rows, n]`
/// view of `out` is written.
///
/// # Safety
/// AMX must be [`available`], and the pointers valid for the sizes above.
#[cfg(target_arch = "x86_64")]
unsafe fn tile_product(
    (a, rows, chunks): (*const u16, usize, usize),
    (b, b_chunks, n): (*const u16, usize, usize),
    bias: Option<*const f32>,
    (out, ldo): (*mut f32, usize),
) {
    #[repr(C, align(64))]
    struct Scratch([f32; TILE * TILE]);
    let mut scratch = Scratch([0.0; TILE * TILE]);
    let mut edge_bias = [0.0f32; TILE];
    let col_tiles = n.div_ceil(TILE);
    let lda = chunks * K_CHUNK * 2;
    let ldb = K_CHUNK * 2;
    let (ldo_bytes, scratch_bytes) = (ldo * 4, TILE * 4);
    // Row tile `i` of the block at row `r0` covers rows `r0 + 16 i ..` (at most 16, the ones past
    // `rows` read from the zero padding of `a`), column tile `j` of pair `jp` columns
    // `16 (jp + j) ..` (at most 16, those past `n` from the zero padding of `b`); a tile with rows
    // or columns past the view is stored to `scratch` and only its valid part is copied to `out`.
    // SAFETY: the caller guarantees AMX and the extents, and the above keeps every access of the
    // whole body inside them.
    unsafe {
        if !CONFIGURED.get() {
            asm!("ldtilecfg [{}]", in(reg) TILE_CONFIG.0.as_ptr(), options(nostack));
            CONFIGURED.set(true);
        }
        for jp in (0..col_tiles).step_by(2) {
            let col = |j: usize| n.saturating_sub((jp + j) * TILE).min(TILE);
            let cols = [col(0), col(1)];
            let b_tile = |j: usize| b.add((jp + j) * b_chunks * TILE_VALUES);
            // The bias of each column tile, through a zero-padded copy at the last columns.
            let bias_at = |j: usize, edge: &mut [f32; TILE]| -> *const f32 {
                let p = bias.map_or(std::ptr::null(), |p| p.add((jp + j) * TILE));
                if cols[j] == TILE || p.is_null() {
                    return p;
                }
                edge.fill(0.0);
                std::ptr::copy_nonoverlapping(p, edge.as_mut_ptr(), cols[j]);
                edge.as_ptr()
            };
            let biases = [bias_at(0, &mut edge_bias), std::ptr::null()];
            let biases = if cols[1] > 0 {
                // only the pair's last tile can be partial
                [biases[0], bias_at(1, &mut edge_bias)]
            } else {
                biases
            };
            for r0 in (0..rows).step_by(2 * TILE) {
                let tile_rows = [
                    (rows - r0).min(TILE),
                    (rows - r0).saturating_sub(TILE).min(TILE),
                ];
                let (two_rows, two_cols) = (tile_rows[1] > 0, cols[1] > 0);
                let a0 = a.add(r0 * chunks * K_CHUNK);
                let a1 = a0.add(TILE * chunks * K_CHUNK);
                // accumulators: the bias in every row, or zero
                if bias.is_some() {
                    asm!("tileloadd tmm0, [{} + {}*1]", in(reg) biases[0], in(reg) 0usize, options(nostack, readonly));
                    if two_cols {
                        asm!("tileloadd tmm1, [{} + {}*1]", in(reg) biases[1], in(reg) 0usize, options(nostack, readonly));
                    }
                    if two_rows {
                        asm!("tileloadd tmm2, [{} + {}*1]", in(reg) biases[0], in(reg) 0usize, options(nostack, readonly));
                        if two_cols {
                            asm!("tileloadd tmm3, [{} + {}*1]", in(reg) biases[1], in(reg) 0usize, options(nostack, readonly));
                        }
                    }
                } else {
                    asm!("tilezero tmm0", options(nostack, nomem));
                    if two_cols {
                        asm!("tilezero tmm1", options(nostack, nomem));
                    }
                    if two_rows {
                        asm!("tilezero tmm2", options(nostack, nomem));
                        if two_cols {
                            asm!("tilezero tmm3", options(nostack, nomem));
                        }
                    }
                }
                for kc in 0..chunks {
                    let (ak, bk) = (kc * K_CHUNK, kc * TILE_VALUES);
                    asm!("tileloadd tmm4, [{} + {}*1]", in(reg) a0.add(ak), in(reg) lda, options(nostack, readonly));
                    asm!("tileloadd tmm6, [{} + {}*1]", in(reg) b_tile(0).add(bk), in(reg) ldb, options(nostack, readonly));
                    asm!("tdpbf16ps tmm0, tmm4, tmm6", options(nostack, nomem));
                    if two_cols {
                        asm!("tileloadd tmm7, [{} + {}*1]", in(reg) b_tile(1).add(bk), in(reg) ldb, options(nostack, readonly));
                        asm!("tdpbf16ps tmm1, tmm4, tmm7", options(nostack, nomem));
                    }
                    if two_rows {
                        asm!("tileloadd tmm5, [{} + {}*1]", in(reg) a1.add(ak), in(reg) lda, options(nostack, readonly));
                        asm!("tdpbf16ps tmm2, tmm5, tmm6", options(nostack, nomem));
                        if two_cols {
                            asm!("tdpbf16ps tmm3, tmm5, tmm7", options(nostack, nomem));
                        }
                    }
                }
                // Stores: accumulator `2 i + j` holds rows `r0 + 16 i ..` by columns `16 (jp + j) ..`.
                for (t, (i, j)) in [(0, 0), (0, 1), (1, 0), (1, 1)].into_iter().enumerate() {
                    let (tr, tc) = (tile_rows[i], cols[j]);
                    if tr == 0 || tc == 0 {
                        continue;
                    }
                    let o = out.add((r0 + i * TILE) * ldo + (jp + j) * TILE);
                    let whole = tr == TILE && tc == TILE;
                    let (dst, stride) = if whole {
                        (o, ldo_bytes)
                    } else {
                        (scratch.0.as_mut_ptr(), scratch_bytes)
                    };
                    match t {
                        0 => {
                            asm!("tilestored [{} + {}*1], tmm0", in(reg) dst, in(reg) stride, options(nostack))
                        }
                        1 => {
                            asm!("tilestored [{} + {}*1], tmm1", in(reg) dst, in(reg) stride, options(nostack))
                        }
                        2 => {
                            asm!("tilestored [{} + {}*1], tmm2", in(reg) dst, in(reg) stride, options(nostack))
                        }
                        _ => {
                            asm!("tilestored [{} + {}*1], tmm3", in(reg) dst, in(reg) stride, options(nostack))
                        }
                    }
                    if !whole {
                        copy_tile_part(o, ldo, scratch.0.as_ptr(), (tr, tc));
                    }
                }
            }
        }
    }
}

/// Copies the first `tc` columns of the first `tr` rows of the 16 x 16 tile at `scratch` (64-byte
/// aligned) to `out` (row stride `ldo` floats), one masked store per row: a `memmove` call per
/// row of a few floats cost more than the copy.
///
/// # Safety
/// The CPU has AVX-512F; `scratch` is valid for the tile and `out` for `tr` rows of `tc <= 16`
/// floats at stride `ldo`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn copy_tile_part(out: *mut f32, ldo: usize, scratch: *const f32, (tr, tc): (usize, usize)) {
    use std::arch::x86_64::*;
    for r in 0..tr {
        // SAFETY: row `r < 16` of the tile, and `tc` floats of row `r` of `out`; masked-off lanes
        // are not written.
        unsafe {
            let v = _mm512_load_ps(scratch.add(r * TILE));
            _mm512_mask_storeu_ps(out.add(r * ldo), lanes(tc), v);
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn tile_product(
    _a: (*const u16, usize, usize),
    _b: (*const u16, usize, usize),
    _bias: Option<*const f32>,
    _out: (*mut f32, usize),
) {
    unreachable!("AMX tiles exist only on x86_64 (available() is false elsewhere)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_to_bf16_is_to_nearest_even() {
        // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties go to the even 1.0.
        assert_eq!(round_bf16(1.0 + 2f32.powi(-8)), 1.0);
        // 1 + 3 * 2^-8 is halfway between 1 + 2^-7 and 1 + 2^-6: to the even 1 + 2^-6.
        assert_eq!(round_bf16(1.0 + 3.0 * 2f32.powi(-8)), 1.0 + 2f32.powi(-6));
        // just above half rounds up
        assert_eq!(
            round_bf16(1.0 + 2f32.powi(-8) + 2f32.powi(-20)),
            1.0 + 2f32.powi(-7)
        );
        assert_eq!(round_bf16(-2.5), -2.5);
        assert_eq!(round_bf16(f32::INFINITY), f32::INFINITY);
        assert!(round_bf16(f32::NAN).is_nan());
        assert_eq!(round_bf16(f32::MAX), f32::INFINITY);
    }

    #[test]
    fn packed_values_sit_where_the_tiles_read_them() {
        // W [n = 3, k = 35]: two chunks of depth, one pair of column tiles.
        let (n, k) = (3, 35);
        let w: Vec<f32> = (0..n * k).map(|i| i as f32).collect();
        let mut p = PackedB::new();
        p.pack(&w, n, k);
        assert_eq!((p.chunks, p.col_tiles), (2, 1));
        assert_eq!(p.data.len(), 2 * TILE_VALUES);
        let at = |p: &PackedB, jt: usize, c: usize, row: usize, e: usize| {
            p.data[(jt * 2 + c) * TILE_VALUES + row * K_CHUNK + e]
        };
        // column 1, depth 33 (chunk 1, tile row 0, odd): W[1][33] = 35 + 33
        assert_eq!(at(&p, 0, 1, 0, 2 + 1), to_bf16_bits(68.0));
        // column 2, depth 6 (chunk 0, tile row 3, even): W[2][6] = 76
        assert_eq!(at(&p, 0, 0, 3, 4), to_bf16_bits(76.0));
        // column 1, depth 34 (chunk 1, tile row 1, even) is the last depth; 35.. and columns 3.. are zero
        assert_eq!(at(&p, 0, 1, 1, 2), to_bf16_bits(69.0));
        assert_eq!(at(&p, 0, 1, 1, 3), 0);
        assert_eq!(at(&p, 0, 1, 2, 2), 0);
        assert_eq!(at(&p, 0, 0, 0, 6), 0);
        let real = (0..2 * TILE_VALUES).filter(|&i| p.data[i] != 0).count();
        assert_eq!(
            real,
            n * k - 1,
            "every weight but W[0][0] = 0 is packed once"
        );
        // Packing changed weights again repacks them; the same weights leave the packing as it is.
        let mut w2 = w.clone();
        w2[35 + 33] = -1.0;
        p.pack(&w2, n, k);
        assert_eq!(at(&p, 0, 1, 0, 2 + 1), to_bf16_bits(-1.0));
        p.pack(&w, n, k);
        assert_eq!(at(&p, 0, 1, 0, 2 + 1), to_bf16_bits(68.0));
    }

    /// A small deterministic generator of values in [-1, 1).
    fn values(len: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        (0..len)
            .map(|_| {
                s = crate::splitmix64(s);
                (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
            })
            .collect()
    }

    #[test]
    fn tile_products_match_the_product_of_the_rounded_operands() {
        if !available() {
            eprintln!("skipped: this CPU or OS has no AMX bf16 tiles");
            return;
        }
        let mut sc = AmxScratch::new();
        let mut w = PackedB::new();
        // Shapes of the serving path (d = 50, d_ff = 200) and edge cases: one row, one column,
        // depths around the 32 chunk, rows around the 32 block.
        for (i, &(m, k, n)) in [
            (512, 50, 50),
            (64, 50, 200),
            (1, 1, 1),
            (33, 32, 17),
            (31, 33, 64),
            (5, 64, 33),
            (100, 7, 3),
            (70, 50, 16),
        ]
        .iter()
        .enumerate()
        {
            let x = values(m * k, 2 * i as u64);
            let wt = values(n * k, 2 * i as u64 + 1);
            let bias = values(n, 99);
            w.pack(&wt, n, k);
            // Guard bands before and after `out`, which starts at several offsets from a cache
            // line: edge tiles must write nothing outside it, and the offset changes no value.
            let mut outs = Vec::new();
            for lead in [0, 1, 7, 15] {
                let mut buf = vec![f32::NAN; lead + m * n + 2 * TILE * TILE];
                let (before, rest) = buf.split_at_mut(lead);
                let (out, after) = rest.split_at_mut(m * n);
                sc.linear(out, &x, &w, Some(&bias));
                assert!(
                    before.iter().chain(after.iter()).all(|g| g.is_nan()),
                    "[{m}, {k}] x [{k}, {n}] at offset {lead} wrote outside out"
                );
                outs.push(out.to_vec());
            }
            assert!(outs.iter().all(|o| o == &outs[0]));
            let out = outs.swap_remove(0);
            for r in 0..m {
                for j in 0..n {
                    let (mut exact, mut mag) = (bias[j] as f64, bias[j].abs() as f64);
                    for kk in 0..k {
                        let p =
                            round_bf16(x[r * k + kk]) as f64 * round_bf16(wt[j * k + kk]) as f64;
                        exact += p;
                        mag += p.abs();
                    }
                    let got = out[r * n + j] as f64;
                    assert!(
                        (got - exact).abs() <= 1e-6 * mag.max(1e-30) * (k as f64).sqrt(),
                        "[{m}, {k}] x [{k}, {n}] at ({r}, {j}): {got} vs {exact}"
                    );
                }
            }
            // The same buffers are reused: a second, smaller product leaves no stale values.
            let mut again = vec![0.0; m * n];
            sc.linear(&mut again, &x, &w, Some(&bias));
            assert_eq!(out, again);
        }
    }

    #[test]
    fn activations_pack_like_weights() {
        if !available() {
            eprintln!("skipped: this CPU or OS has no AMX bf16 tiles");
            return;
        }
        // A view of `n` rows of `k` values at stride `ld` (one head of a wider matrix), and its
        // transpose, packed through `pack` as the reference.
        for &(n, k, ld) in &[
            (200, 50, 50),
            (37, 25, 50),
            (1, 1, 3),
            (16, 32, 40),
            (33, 64, 64),
        ] {
            let m = values((n - 1) * ld + k, (n * k) as u64);
            let rows: Vec<f32> = (0..n)
                .flat_map(|j| m[j * ld..j * ld + k].to_vec())
                .collect();
            let (mut got, mut want) = (PackedB::new(), PackedB::new());
            got.pack_rows(&m, (n, k, ld));
            want.pack(&rows, n, k);
            assert_eq!(got.data, want.data, "pack_rows [{n}, {k}] at stride {ld}");
            // The same view as V [n, k] (n keys of k components): pack_cols(V) is pack(V^T).
            let vt: Vec<f32> = (0..k)
                .flat_map(|c| (0..n).map(|j| rows[j * k + c]).collect::<Vec<_>>())
                .collect();
            got.pack_cols(&m, (n, k, ld));
            want.pack(&vt, k, n);
            assert_eq!(got.data, want.data, "pack_cols [{n}, {k}] at stride {ld}");
            // An activation packed over the cached weights: packing the weights again repacks.
            want.pack_rows(&m, (n, k, ld));
            want.pack(&vt, k, n);
            assert_eq!(
                got.data, want.data,
                "pack after pack_rows reuses stale tiles"
            );
        }
    }

    #[test]
    fn products_into_strided_views_over_shallower_operands() {
        if !available() {
            eprintln!("skipped: this CPU or OS has no AMX bf16 tiles");
            return;
        }
        // ctx = P V as in one attention tile: P [m, i1] (rows at stride ld, scaled), V packed for
        // all nr keys, the result written into columns c0.. of a wider matrix.
        let (m, i1, nr, dh, ld, ldo, c0) = (16, 70, 200, 50, 80, 100, 25);
        let p = values(m * ld, 11);
        let v = values(nr * dh, 12);
        let mut packed = PackedB::new();
        packed.pack_cols(&v, (nr, dh, dh));
        let mut sc = AmxScratch::new();
        let alpha = 0.5;
        sc.load_rows(&p, (m, i1, ld), alpha);
        let mut out = vec![f32::NAN; m * ldo];
        sc.product_into((&mut out[c0..], ldo), &packed, dh, None);
        for r in 0..m {
            for c in 0..ldo {
                let got = out[r * ldo + c];
                if c < c0 || c >= c0 + dh {
                    assert!(got.is_nan(), "({r}, {c}) outside the view was written");
                    continue;
                }
                let (mut exact, mut mag) = (0.0f64, 0.0f64);
                for j in 0..i1 {
                    let x = round_bf16(alpha * p[r * ld + j]) as f64
                        * round_bf16(v[j * dh + c - c0]) as f64;
                    exact += x;
                    mag += x.abs();
                }
                assert!(
                    (got as f64 - exact).abs() <= 1e-6 * mag * (i1 as f64).sqrt(),
                    "({r}, {c}): {got} vs {exact}"
                );
            }
        }
    }

    #[test]
    fn one_loaded_operand_serves_several_products() {
        if !available() {
            eprintln!("skipped: this CPU or OS has no AMX bf16 tiles");
            return;
        }
        let (m, k, n) = (40, 50, 50);
        let x = values(m * k, 7);
        let (w1, w2) = (values(n * k, 8), values(n * k, 9));
        let (mut p1, mut p2) = (PackedB::new(), PackedB::new());
        p1.pack(&w1, n, k);
        p2.pack(&w2, n, k);
        let mut sc = AmxScratch::new();
        let (mut o1, mut o2) = (vec![0.0; m * n], vec![0.0; m * n]);
        sc.load(&x, k);
        sc.product(&mut o1, &p1, None);
        sc.product(&mut o2, &p2, None);
        let (mut r1, mut r2) = (vec![0.0; m * n], vec![0.0; m * n]);
        sc.linear(&mut r1, &x, &p1, None);
        sc.linear(&mut r2, &x, &p2, None);
        assert_eq!((o1, o2), (r1, r2));
    }

    #[test]
    fn softmax_rows_load_their_visible_exponentials() {
        if !available() {
            eprintln!("skipped: this CPU or OS has no AMX bf16 tiles");
            return;
        }
        // 5 rows of 40 scores at stride 48 (the rows of an attention tile), 3 visible in the
        // first, one more in each next; a second call with fewer rows must leave no stale row.
        let (rows, k, ld, first) = (5, 40, 48, 3);
        let s: Vec<f32> = values(rows * ld, 11).iter().map(|v| 8.0 * v).collect();
        let mut sc = AmxScratch::new();
        let mut sums = [f32::NAN; 6];
        sc.load_softmax_rows(&s, (6, k, ld - 8), 1, &mut sums);
        sc.load_softmax_rows(&s, (rows, k, ld), first, &mut sums);
        let width = k.div_ceil(K_CHUNK) * K_CHUNK;
        assert_eq!((sc.rows, sc.chunks), (rows, width / K_CHUNK));
        for r in 0..rows {
            let row = &s[r * ld..r * ld + k];
            let visible = first + r;
            let max = row[..visible]
                .iter()
                .fold(f32::NEG_INFINITY, |m, &v| m.max(v));
            let mut exact_sum = 0.0f64;
            for (j, &bits) in sc.a[r * width..(r + 1) * width].iter().enumerate() {
                let got = f32::from_bits((bits as u32) << 16);
                if j >= visible {
                    assert_eq!(got, 0.0, "row {r}, hidden key {j}");
                    continue;
                }
                let e = ((row[j] - max) as f64).exp();
                exact_sum += e;
                assert!(
                    (got as f64 - e).abs() <= e / 128.0,
                    "row {r}, key {j}: {got} against exp = {e}"
                );
            }
            assert!(
                (sums[r] as f64 - exact_sum).abs() <= 1e-5 * exact_sum,
                "row {r}: sum {} against {exact_sum}",
                sums[r]
            );
        }
        // The padding rows up to the tile's 16 are zero (the first call wrote a sixth row).
        assert!(sc.a[rows * width..TILE * width].iter().all(|&b| b == 0));
    }
}
