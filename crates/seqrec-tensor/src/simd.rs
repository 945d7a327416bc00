//! Hot row kernels compiled several times (AVX-512, AVX2+FMA, baseline x86-64) and picked at run time,
//! so the release build needs no `target-cpu=native` and still vectorises on any x86-64 machine.
//!
//! Public for other crates' fused kernels (the SASRec serving forward): [`multiversion!`](crate::multiversion)
//! and the lane helpers [`hsum`], [`lane_dot`] and [`softmax_row_in_place`], which vectorise when inlined
//! into a multiversioned function.
//!
//! The kernels are plain Rust written to auto-vectorise: reductions keep [`LANES`] independent
//! accumulators (float addition is not associative, so a single accumulator would stay scalar), and
//! `f32` softmax uses [`exp_approx_f32`], a branch-free polynomial exponential, instead of a libm call.
//! Every version computes the same arithmetic in the same order, so results do not depend on the CPU.

use crate::Float;

/// Independent accumulators per reduction: one AVX-512 register of f32.
pub const LANES: usize = 16;

/// e^x for `f32`, branch-free so that it vectorises; within 2 ulp of `f32::exp` for `x` in
/// `[-87.3, 88]`, 0 below -87.3 (where `f32::exp` is subnormal or 0). Cephes `expf`: `x = n ln 2 + r`,
/// `|r| <= ln 2 / 2`, degree-6 polynomial for `e^r`, and `2^n` assembled in the exponent bits.
#[inline(always)]
pub fn exp_approx_f32(x: f32) -> f32 {
    use expf::*;
    let xc = x.clamp(LOW, HIGH);
    let t = xc * LOG2E + MAGIC;
    let n = t - MAGIC;
    let r = xc - n * LN2_HI - n * LN2_LO;
    let mut p = POLY[0];
    for c in &POLY[1..] {
        p = p * r + c;
    }
    let y = p * r * r + r + 1.0;
    let ni = t.to_bits() as i32 - MAGIC.to_bits() as i32;
    let scale = f32::from_bits(((ni + 127) << 23) as u32);
    let e = y * scale;
    if x < LOW { 0.0 } else { e }
}

/// The constants of [`exp_approx_f32`], shared with the AVX-512 exponential of the inference kernels.
pub(crate) mod expf {
    pub const LOG2E: f32 = std::f32::consts::LOG2_E;
    /// `ln 2` in two parts, for an exact range reduction.
    pub const LN2_HI: f32 = 0.693_359_4;
    pub const LN2_LO: f32 = -2.121_944_4e-4;
    /// Adding 1.5 * 2^23 rounds to the nearest integer and leaves it in the low mantissa bits.
    pub const MAGIC: f32 = 12_582_912.0;
    /// Below `LOW` the result is 0; inputs are clamped to `[LOW, HIGH]`.
    pub const LOW: f32 = -87.336_55;
    pub const HIGH: f32 = 88.0;
    /// The polynomial for `(e^r - 1 - r) / r^2`, highest degree first.
    pub const POLY: [f32; 6] = [
        1.987_569_1e-4,
        1.398_199_9e-3,
        8.333_452e-3,
        4.166_579_6e-2,
        1.666_666_5e-1,
        0.5,
    ];
}

/// `xs` as `f32` when `T` is `f32` (for kernels with an `f32`-only fast path).
pub fn as_f32<T: Float>(xs: &[T]) -> Option<&[f32]> {
    (std::any::TypeId::of::<T>() == std::any::TypeId::of::<f32>()).then(|| {
        // SAFETY: T is f32 (the type ids are equal): the same elements at the same address.
        unsafe { std::slice::from_raw_parts(xs.as_ptr().cast::<f32>(), xs.len()) }
    })
}

/// `xs` as mutable `f32` when `T` is `f32`.
pub fn as_f32_mut<T: Float>(xs: &mut [T]) -> Option<&mut [f32]> {
    (std::any::TypeId::of::<T>() == std::any::TypeId::of::<f32>()).then(|| {
        // SAFETY: T is f32 (the type ids are equal); the unique borrow moves into the new slice.
        unsafe { std::slice::from_raw_parts_mut(xs.as_mut_ptr().cast::<f32>(), xs.len()) }
    })
}

/// Generates `$name`, which runs `$generic` (an `#[inline(always)]` function generic over
/// [`Float`](crate::Float)) compiled for the best instruction set this CPU has: AVX-512, AVX2 + FMA, or
/// baseline x86-64. Other crates build their own fused row kernels with it:
///
/// ```
/// use seqrec_tensor::{Float, multiversion};
///
/// #[inline(always)]
/// fn double_generic<T: Float>(xs: &mut [T]) {
///     xs.iter_mut().for_each(|x| *x += *x);
/// }
/// multiversion! {
///     /// `xs *= 2`.
///     pub fn double<T: Float>(xs: &mut [T]) => double_generic
/// }
/// let mut v = [1.0f32, 2.5];
/// double(&mut v);
/// assert_eq!(v, [2.0, 5.0]);
/// ```
#[macro_export]
macro_rules! multiversion {
    ($(#[$m:meta])* $vis:vis fn $name:ident<T: Float>($($arg:ident : $ty:ty),* $(,)?) $(-> $ret:ty)? => $generic:ident) => {
        $(#[$m])*
        #[allow(clippy::too_many_arguments)]
        $vis fn $name<T: $crate::Float>($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                fn v512<T: $crate::Float>($($arg: $ty),*) $(-> $ret)? { $generic($($arg),*) }
                #[target_feature(enable = "avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                fn v256<T: $crate::Float>($($arg: $ty),*) $(-> $ret)? { $generic($($arg),*) }
                if std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512vl")
                    && std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                {
                    // SAFETY: the features v512 is compiled for were detected on this CPU just above.
                    return unsafe { v512($($arg),*) };
                }
                if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
                    // SAFETY: AVX2 and FMA were detected on this CPU just above.
                    return unsafe { v256($($arg),*) };
                }
            }
            $generic($($arg),*)
        }
    };
}

/// Sum of the accumulators as a tree (vector shuffles), not a serial chain of 16 dependent adds: this
/// matters for short rows such as layer norm over 50 features.
#[inline(always)]
pub fn hsum<T: Float>(mut a: [T; LANES]) -> T {
    let mut w = LANES / 2;
    while w > 0 {
        for i in 0..w {
            let v = a[i + w];
            a[i] += v;
        }
        w /= 2;
    }
    a[0]
}

/// Maximum of the accumulators as a tree.
#[inline(always)]
fn hmax<T: Float>(mut a: [T; LANES]) -> T {
    let mut w = LANES / 2;
    while w > 0 {
        for i in 0..w {
            a[i] = if a[i + w] > a[i] { a[i + w] } else { a[i] };
        }
        w /= 2;
    }
    a[0]
}

/// Maximum of a slice ignoring NaN, with [`LANES`] accumulators.
#[inline(always)]
fn lane_max<T: Float>(xs: &[T]) -> T {
    let mut acc = [T::NEG_INFINITY; LANES];
    let chunks = xs.chunks_exact(LANES);
    let rem = chunks.remainder();
    for c in chunks {
        for i in 0..LANES {
            acc[i] = if c[i] > acc[i] { c[i] } else { acc[i] };
        }
    }
    let mut m = hmax(acc);
    for &v in rem {
        m = if v > m { v } else { m };
    }
    m
}

/// Sum of a slice with [`LANES`] accumulators.
#[inline(always)]
fn lane_sum<T: Float>(xs: &[T]) -> T {
    let mut acc = [T::ZERO; LANES];
    let chunks = xs.chunks_exact(LANES);
    let rem = chunks.remainder();
    for c in chunks {
        for i in 0..LANES {
            acc[i] += c[i];
        }
    }
    let mut s = hsum(acc);
    for &v in rem {
        s += v;
    }
    s
}

/// `a . b` over the common length, with [`LANES`] independent partial sums (so that it vectorises
/// inside a [`multiversion!`](crate::multiversion) kernel).
#[inline(always)]
pub fn lane_dot<T: Float>(a: &[T], b: &[T]) -> T {
    let mut acc = [T::ZERO; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..LANES {
            acc[i] += x[i] * y[i];
        }
    }
    for (i, (&x, &y)) in ra.iter().zip(rb).enumerate() {
        acc[i] += x * y;
    }
    hsum(acc)
}

/// In-place softmax of a whole row with every entry visible, `x_j = e^(x_j - max) / sum` (through
/// [`Float::exp_fast`]), for use inside a [`multiversion!`](crate::multiversion) kernel. The row must
/// hold a finite entry.
#[inline(always)]
pub fn softmax_row_in_place<T: Float>(x: &mut [T]) {
    let max = lane_max(x);
    let mut acc = [T::ZERO; LANES];
    let mut chunks = x.chunks_exact_mut(LANES);
    for c in &mut chunks {
        for i in 0..LANES {
            c[i] = (c[i] - max).exp_fast();
            acc[i] += c[i];
        }
    }
    let mut sum = hsum(acc);
    for v in chunks.into_remainder() {
        *v = (*v - max).exp_fast();
        sum += *v;
    }
    let inv = sum.recip();
    for v in x.iter_mut() {
        *v *= inv;
    }
}

/// `out = exp(x - max)` over a whole unmasked row; returns `(max, sum)` (`max = -inf`: empty / all -inf).
#[inline(always)]
fn exp_shift_sum_generic<T: Float>(xr: &[T], out: &mut [T]) -> (T, T) {
    let mx = lane_max(xr);
    if mx == T::NEG_INFINITY {
        return (mx, T::ZERO);
    }
    let mut acc = [T::ZERO; LANES];
    let mut oc = out.chunks_exact_mut(LANES);
    let mut xc = xr.chunks_exact(LANES);
    for (o, x) in (&mut oc).zip(&mut xc) {
        for i in 0..LANES {
            let e = (x[i] - mx).exp_fast();
            o[i] = e;
            acc[i] += e;
        }
    }
    let mut s = hsum(acc);
    for (o, &x) in oc.into_remainder().iter_mut().zip(xc.remainder()) {
        let e = (x - mx).exp_fast();
        *o = e;
        s += e;
    }
    (mx, s)
}

#[inline(always)]
fn scale_generic<T: Float>(out: &mut [T], s: T) {
    for o in out.iter_mut() {
        *o *= s;
    }
}

#[inline(always)]
fn shift_generic<T: Float>(out: &mut [T], xr: &[T], shift: T) {
    for (o, &x) in out.iter_mut().zip(xr) {
        *o = x - shift;
    }
}

multiversion! {
    /// `out = exp(x - max(x))`, returns `(max, sum of out)`.
    pub(crate) fn exp_shift_sum<T: Float>(xr: &[T], out: &mut [T]) -> (T, T) => exp_shift_sum_generic
}
multiversion! {
    /// `out *= s`.
    pub(crate) fn scale_row<T: Float>(out: &mut [T], s: T) => scale_generic
}
multiversion! {
    /// `out = x - shift`.
    pub(crate) fn shift_row<T: Float>(out: &mut [T], xr: &[T], shift: T) => shift_generic
}

/// Layer-norm forward over a chunk of whole rows of `c` elements.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn ln_fwd_generic<T: Float>(
    xs: &[T],
    out: &mut [T],
    mean: &mut [T],
    rstd: &mut [T],
    g: &[T],
    b: &[T],
    eps: T,
    c: usize,
) {
    let inv_c = T::ONE / T::from_f64(c as f64);
    for (((xr, or), m), s) in xs
        .chunks_exact(c)
        .zip(out.chunks_exact_mut(c))
        .zip(mean)
        .zip(rstd)
    {
        let mu = lane_sum(xr) * inv_c;
        let mut acc = [T::ZERO; LANES];
        let chunks = xr.chunks_exact(LANES);
        let rem = chunks.remainder();
        for ch in chunks {
            for i in 0..LANES {
                let d = ch[i] - mu;
                acc[i] += d * d;
            }
        }
        let mut var = hsum(acc);
        for &v in rem {
            var += (v - mu) * (v - mu);
        }
        let r = T::ONE / (var * inv_c + eps).sqrt();
        for (((o, &v), &gg), &bb) in or.iter_mut().zip(xr).zip(g).zip(b) {
            *o = (v - mu) * r * gg + bb;
        }
        *m = mu;
        *s = r;
    }
}

multiversion! {
    /// Layer-norm forward over whole rows (see `layernorm_forward`).
    pub(crate) fn ln_fwd_rows<T: Float>(xs: &[T], out: &mut [T], mean: &mut [T], rstd: &mut [T], g: &[T], b: &[T], eps: T, c: usize)
        => ln_fwd_generic
}

/// Layer-norm backward over a chunk of rows: writes `dx`, accumulates into `dg`, `db`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn ln_bwd_generic<T: Float>(
    dxs: &mut [T],
    dos: &[T],
    xs: &[T],
    ms: &[T],
    ss: &[T],
    g: &[T],
    dg: &mut [T],
    db: &mut [T],
    c: usize,
) {
    let inv_c = T::ONE / T::from_f64(c as f64);
    for ((((dxr, dor), xr), &mu), &rs) in dxs
        .chunks_exact_mut(c)
        .zip(dos.chunks_exact(c))
        .zip(xs.chunks_exact(c))
        .zip(ms)
        .zip(ss)
    {
        // Re-slicing to exactly c lets the compiler drop the bounds checks below.
        let (dxr, dor, xr, g, dg, db) = (
            &mut dxr[..c],
            &dor[..c],
            &xr[..c],
            &g[..c],
            &mut dg[..c],
            &mut db[..c],
        );
        // Pass 1: norm into dx (scratch), mean of g = dout * gamma and of g * norm.
        let mut acc_g = [T::ZERO; LANES];
        let mut acc_gn = [T::ZERO; LANES];

        let n_full = c / LANES * LANES;
        for base in (0..n_full).step_by(LANES) {
            for i in 0..LANES {
                let j = base + i;
                let n = (xr[j] - mu) * rs;
                let gd = dor[j] * g[j];
                dxr[j] = n;
                acc_g[i] += gd;
                acc_gn[i] += gd * n;
            }
        }
        let mut sum_g = hsum(acc_g);
        let mut sum_gn = hsum(acc_gn);
        for j in n_full..c {
            let n = (xr[j] - mu) * rs;
            let gd = dor[j] * g[j];
            dxr[j] = n;
            sum_g += gd;
            sum_gn += gd * n;
        }
        let mean_g = sum_g * inv_c;
        let mean_gn = sum_gn * inv_c;
        // Pass 2: parameter gradients and dx from the saved norm.
        for j in 0..c {
            let n = dxr[j];
            let d = dor[j];
            dg[j] += d * n;
            db[j] += d;
            dxr[j] = rs * (d * g[j] - mean_g - n * mean_gn);
        }
    }
}

multiversion! {
    /// Layer-norm backward over whole rows (see `layernorm_backward`).
    pub(crate) fn ln_bwd_rows<T: Float>(dxs: &mut [T], dos: &[T], xs: &[T], ms: &[T], ss: &[T], g: &[T], dg: &mut [T], db: &mut [T], c: usize)
        => ln_bwd_generic
}

/// Softmax backward of one row: `dx = y * (dy - dot(dy, y))`.
#[inline(always)]
fn softmax_bwd_generic<T: Float>(dx: &mut [T], dy: &[T], y: &[T]) {
    let mut acc = [T::ZERO; LANES];
    let (dyc, yc) = (dy.chunks_exact(LANES), y.chunks_exact(LANES));
    let (dyr, yr) = (dyc.remainder(), yc.remainder());
    for (g, p) in dyc.zip(yc) {
        for i in 0..LANES {
            acc[i] += g[i] * p[i];
        }
    }
    let mut dot = hsum(acc);
    for (&g, &p) in dyr.iter().zip(yr) {
        dot += g * p;
    }
    for ((d, &g), &p) in dx.iter_mut().zip(dy).zip(y) {
        *d = p * (g - dot);
    }
}

/// Log-softmax backward of one row: `dx = dy - exp(y) * sum(dy)` over entries with `y > -inf`, 0 elsewhere.
#[inline(always)]
fn log_softmax_bwd_generic<T: Float>(dx: &mut [T], dy: &[T], y: &[T]) {
    let mut acc = [T::ZERO; LANES];
    let (dyc, yc) = (dy.chunks_exact(LANES), y.chunks_exact(LANES));
    let (dyr, yr) = (dyc.remainder(), yc.remainder());
    for (g, l) in dyc.zip(yc) {
        for i in 0..LANES {
            acc[i] += if l[i] == T::NEG_INFINITY {
                T::ZERO
            } else {
                g[i]
            };
        }
    }
    let mut sum = hsum(acc);
    for (&g, &l) in dyr.iter().zip(yr) {
        if l != T::NEG_INFINITY {
            sum += g;
        }
    }
    for ((d, &g), &l) in dx.iter_mut().zip(dy).zip(y) {
        // exp(-inf) = 0 in exp_fast too, so the select only has to zero dy there.
        let v = g - l.exp_fast() * sum;
        *d = if l == T::NEG_INFINITY { T::ZERO } else { v };
    }
}

multiversion! {
    /// Softmax backward of one row.
    pub(crate) fn softmax_bwd_row<T: Float>(dx: &mut [T], dy: &[T], y: &[T]) => softmax_bwd_generic
}
multiversion! {
    /// Log-softmax backward of one row.
    pub(crate) fn log_softmax_bwd_row<T: Float>(dx: &mut [T], dy: &[T], y: &[T]) => log_softmax_bwd_generic
}

/// Softmax + dropout backward of one row, from the kept probabilities (no mask):
/// `dx = yd * dy - y * sum(dy * yd)` with `y` the softmax output and `yd` its dropout.
#[inline(always)]
fn softmax_dropout_bwd_generic<T: Float>(dx: &mut [T], dy: &[T], y: &[T], yd: &[T]) {
    let mut acc = [T::ZERO; LANES];
    let (dyc, ydc) = (dy.chunks_exact(LANES), yd.chunks_exact(LANES));
    let (dyr, ydr) = (dyc.remainder(), ydc.remainder());
    for (g, l) in dyc.zip(ydc) {
        for i in 0..LANES {
            acc[i] += g[i] * l[i];
        }
    }
    let mut sum = hsum(acc);
    for (&g, &l) in dyr.iter().zip(ydr) {
        sum += g * l;
    }
    for (((d, &g), &p), &pd) in dx.iter_mut().zip(dy).zip(y).zip(yd) {
        *d = pd * g - p * sum;
    }
}

multiversion! {
    /// Softmax + dropout backward of one row (see `softmax_dropout_bwd_generic`).
    pub(crate) fn softmax_dropout_bwd_row<T: Float>(dx: &mut [T], dy: &[T], y: &[T], yd: &[T]) => softmax_dropout_bwd_generic
}

/// `out[i] = keep[i] != 0 ? x[i] * scale : 0` (the apply step of inverted dropout).
#[inline(always)]
fn dropout_apply_generic<T: Float>(out: &mut [T], x: &[T], keep: &[u8], scale: T) {
    for ((o, &v), &k) in out.iter_mut().zip(x).zip(keep) {
        *o = if k != 0 { v * scale } else { T::ZERO };
    }
}

/// `out[i] = keep[i] != 0 && x[i] > 0 ? x[i] * scale : 0` (ReLU then inverted dropout).
#[inline(always)]
fn relu_dropout_apply_generic<T: Float>(out: &mut [T], x: &[T], keep: &[u8], scale: T) {
    for ((o, &v), &k) in out.iter_mut().zip(x).zip(keep) {
        *o = if k != 0 && v > T::ZERO {
            v * scale
        } else {
            T::ZERO
        };
    }
}

/// `dx[i] = y[i] > 0 ? dy[i] * scale : 0` (backward of ReLU then inverted dropout, from its output).
#[inline(always)]
fn relu_dropout_bwd_generic<T: Float>(dx: &mut [T], dy: &[T], y: &[T], scale: T) {
    for ((o, &g), &v) in dx.iter_mut().zip(dy).zip(y) {
        *o = if v > T::ZERO { g * scale } else { T::ZERO };
    }
}

multiversion! {
    /// Dropout apply step (see `dropout_apply_generic`).
    pub(crate) fn dropout_apply<T: Float>(out: &mut [T], x: &[T], keep: &[u8], scale: T) => dropout_apply_generic
}
multiversion! {
    /// ReLU + dropout apply step (see `relu_dropout_apply_generic`).
    pub(crate) fn relu_dropout_apply<T: Float>(out: &mut [T], x: &[T], keep: &[u8], scale: T) => relu_dropout_apply_generic
}
multiversion! {
    /// ReLU + dropout backward (see `relu_dropout_bwd_generic`).
    pub(crate) fn relu_dropout_bwd<T: Float>(dx: &mut [T], dy: &[T], y: &[T], scale: T) => relu_dropout_bwd_generic
}
