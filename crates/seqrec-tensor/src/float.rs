//! The [`Float`] element trait: the maths the kernels need, for `f32` (training) and `f64` (gradient checks).

use std::fmt::{Debug, Display};
use std::ops::{Add, AddAssign, Div, DivAssign, Mul, MulAssign, Neg, Sub, SubAssign};

mod sealed {
    /// Only `f32` and `f64` implement [`super::Float`]: the CUDA backend will mirror exactly these two.
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for f64 {}
}

/// Element type of a [`crate::Tensor`]: implemented for `f32` and `f64` only (sealed).
///
/// Every op is generic over `T: Float`, so the same kernel runs in `f32` for training and in `f64`
/// for finite-difference gradient checks.
pub trait Float:
    sealed::Sealed
    + Copy
    + Send
    + Sync
    + Debug
    + Display
    + Default
    + PartialEq
    + PartialOrd
    + 'static
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
    + Neg<Output = Self>
    + AddAssign
    + SubAssign
    + MulAssign
    + DivAssign
{
    /// 0.
    const ZERO: Self;
    /// 1.
    const ONE: Self;
    /// +infinity.
    const INFINITY: Self;
    /// -infinity (the additive mask value that removes an entry from a softmax).
    const NEG_INFINITY: Self;
    /// Machine epsilon of the type.
    const EPSILON: Self;
    /// `"f32"` or `"f64"`, for messages.
    const NAME: &'static str;

    /// Converts from `f64`, rounding to nearest.
    fn from_f64(v: f64) -> Self;
    /// Converts to `f64` exactly.
    fn to_f64(self) -> f64;
    /// e^self.
    fn exp(self) -> Self;
    /// Natural logarithm.
    fn ln(self) -> Self;
    /// Hyperbolic tangent.
    fn tanh(self) -> Self;
    /// Square root.
    fn sqrt(self) -> Self;
    /// Absolute value.
    fn abs(self) -> Self;
    /// Larger of two values (IEEE `maxNum`: a NaN operand loses).
    fn max(self, other: Self) -> Self;
    /// Smaller of two values (IEEE `minNum`: a NaN operand loses).
    fn min(self, other: Self) -> Self;
    /// Error function erf(x) = 2/sqrt(pi) * integral_0^x e^(-t^2) dt (musl's implementation via `libm`,
    /// accurate to about 1 ulp: good enough for f64 gradient checks).
    fn erf(self) -> Self;
    /// `true` for NaN.
    fn is_nan(self) -> bool;
    /// `true` for neither infinite nor NaN.
    fn is_finite(self) -> bool;
    /// 1 / self.
    fn recip(self) -> Self;
    /// e^self as used by the softmax kernels: for `f32` a vectorisable polynomial within 2 ulp of
    /// [`Float::exp`] (0 below -87.3, see `simd::exp_approx_f32`), for `f64` exactly [`Float::exp`]
    /// (gradient checks keep full precision).
    fn exp_fast(self) -> Self;

    /// `C = alpha * A B + beta * C` on raw strided matrices: `A` is `[m, k]` with row stride `rsa` and
    /// column stride `csa`, `B` is `[k, n]`, `C` is `[m, n]`; dispatches to the AVX-512 `f32` kernel when the CPU has it, else to `matrixmultiply::{s,d}gemm`.
    /// When `beta` is zero `C` is not read (it may hold NaN).
    ///
    /// # Safety
    /// Every element addressed by the dimensions and strides must lie inside a live allocation, and `C`
    /// must not alias `A` or `B`.
    #[allow(clippy::too_many_arguments)]
    unsafe fn gemm_raw(
        m: usize,
        k: usize,
        n: usize,
        alpha: Self,
        a: *const Self,
        rsa: isize,
        csa: isize,
        b: *const Self,
        rsb: isize,
        csb: isize,
        beta: Self,
        c: *mut Self,
        rsc: isize,
        csc: isize,
    );
}

macro_rules! impl_float {
    ($t:ident, $gemm:path, $erf:ident, $exp_fast:path) => {
        impl Float for $t {
            const ZERO: Self = 0.0;
            const ONE: Self = 1.0;
            const INFINITY: Self = $t::INFINITY;
            const NEG_INFINITY: Self = $t::NEG_INFINITY;
            const EPSILON: Self = $t::EPSILON;
            const NAME: &'static str = stringify!($t);

            #[inline(always)]
            fn from_f64(v: f64) -> Self {
                v as $t
            }
            #[inline(always)]
            fn to_f64(self) -> f64 {
                self as f64
            }
            #[inline(always)]
            fn exp(self) -> Self {
                $t::exp(self)
            }
            #[inline(always)]
            fn ln(self) -> Self {
                $t::ln(self)
            }
            #[inline(always)]
            fn tanh(self) -> Self {
                $t::tanh(self)
            }
            #[inline(always)]
            fn sqrt(self) -> Self {
                $t::sqrt(self)
            }
            #[inline(always)]
            fn abs(self) -> Self {
                $t::abs(self)
            }
            #[inline(always)]
            fn max(self, other: Self) -> Self {
                $t::max(self, other)
            }
            #[inline(always)]
            fn min(self, other: Self) -> Self {
                $t::min(self, other)
            }
            #[inline(always)]
            fn erf(self) -> Self {
                libm::$erf(self)
            }
            #[inline(always)]
            fn is_nan(self) -> bool {
                $t::is_nan(self)
            }
            #[inline(always)]
            fn is_finite(self) -> bool {
                $t::is_finite(self)
            }
            #[inline(always)]
            fn recip(self) -> Self {
                $t::recip(self)
            }
            #[inline(always)]
            fn exp_fast(self) -> Self {
                $exp_fast(self)
            }
            unsafe fn gemm_raw(
                m: usize,
                k: usize,
                n: usize,
                alpha: Self,
                a: *const Self,
                rsa: isize,
                csa: isize,
                b: *const Self,
                rsb: isize,
                csb: isize,
                beta: Self,
                c: *mut Self,
                rsc: isize,
                csc: isize,
            ) {
                // SAFETY: matrixmultiply::{s,d}gemm(m, k, n, alpha, a, rsa, csa, b, rsb, csb, beta, c, rsc, csc)
                // reads A [m, k], B [k, n] and writes C [m, n] at the given strides; the caller guarantees
                // those elements are in bounds and that C does not alias A or B.
                unsafe { $gemm(m, k, n, alpha, a, rsa, csa, b, rsb, csb, beta, c, rsc, csc) }
            }
        }
    };
}

impl_float!(
    f32,
    crate::sgemm_avx512::sgemm,
    erff,
    crate::simd::exp_approx_f32
);
impl_float!(f64, matrixmultiply::dgemm, erf, f64::exp);
