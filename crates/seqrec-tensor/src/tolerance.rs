//! Per-element comparison with a named [`Tolerance`], reporting the first failing index.

use crate::{Float, Tensor};

/// `|actual - expected| <= absolute + relative * |expected|`, element by element.
///
/// Per-element bounds (never a sum over the tensor, which loosens as tensors grow).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tolerance {
    /// Bound relative to `|expected|`.
    pub relative: f64,
    /// Absolute bound (matters near zero).
    pub absolute: f64,
}

impl Tolerance {
    /// Bit-for-bit equality (NaN equals NaN, `-inf` equals `-inf`).
    pub const EXACT: Tolerance = Tolerance {
        relative: 0.0,
        absolute: 0.0,
    };
    /// Fast f32 kernel vs the f32 reference: different summation orders of O(100..10k) terms.
    pub const F32: Tolerance = Tolerance {
        relative: 1e-4,
        absolute: 1e-5,
    };
    /// Fast f64 kernel vs the f64 reference.
    pub const F64: Tolerance = Tolerance {
        relative: 1e-11,
        absolute: 1e-12,
    };
    /// Central finite differences in f64 against an analytic gradient.
    pub const GRAD_CHECK: Tolerance = Tolerance {
        relative: 1e-5,
        absolute: 1e-7,
    };

    /// Whether one pair is within tolerance (non-finite values must match exactly).
    pub fn accepts(&self, actual: f64, expected: f64) -> bool {
        if actual == expected || (actual.is_nan() && expected.is_nan()) {
            return true;
        }
        if !actual.is_finite() || !expected.is_finite() {
            return false;
        }
        (actual - expected).abs() <= self.absolute + self.relative * expected.abs()
    }

    /// Compares two slices; `Err` describes the first bad index (or a length mismatch).
    ///
    /// # Errors
    /// A message naming the index, both values and the tolerance.
    pub fn check<T: Float>(&self, actual: &[T], expected: &[T]) -> Result<(), String> {
        if actual.len() != expected.len() {
            return Err(format!(
                "length mismatch: actual {} vs expected {}",
                actual.len(),
                expected.len()
            ));
        }
        for (i, (&a, &e)) in actual.iter().zip(expected).enumerate() {
            let (a, e) = (a.to_f64(), e.to_f64());
            if !self.accepts(a, e) {
                return Err(format!(
                    "element {i}: actual {a:e} vs expected {e:e} (diff {:e}, {self:?})",
                    (a - e).abs()
                ));
            }
        }
        Ok(())
    }

    /// Panics with the first bad index unless the tensors have equal shapes and close elements.
    #[track_caller]
    pub fn assert_close<T: Float>(&self, actual: &Tensor<T>, expected: &Tensor<T>) {
        assert!(
            actual.shape() == expected.shape(),
            "assert_close: shape mismatch: actual {:?} vs expected {:?}",
            actual.shape(),
            expected.shape()
        );
        if let Err(e) = self.check(actual.as_slice(), expected.as_slice()) {
            panic!("assert_close (shape {:?}): {e}", actual.shape());
        }
    }
}
