//! Learning-rate schedules: a multiplier of the base rate as a function of the step.
//!
//! ```
//! use seqrec_nn::schedule::LrSchedule;
//!
//! let s = LrSchedule::warmup_linear(10, 110).unwrap();
//! assert_eq!(s.factor(0), 0.0);
//! assert_eq!(s.factor(5), 0.5);
//! assert_eq!(s.factor(10), 1.0);
//! assert_eq!(s.factor(60), 0.5);
//! assert_eq!(s.factor(110), 0.0);
//! assert_eq!(s.lr(1e-3, 5), 5e-4);
//! ```

use crate::error::NnError;

/// A learning-rate schedule; `factor(step)` multiplies the base rate before step `step` (0-based).
///
/// Warmup and decay follow Hugging Face's `get_linear_schedule_with_warmup` and
/// `get_cosine_schedule_with_warmup`: during warmup `step / warmup`; then linear decay
/// `(total - step) / (total - warmup)` or cosine `min + (1 - min) (1 + cos(π progress)) / 2` with
/// `progress = (step - warmup) / (total - warmup)`, clamped at the end.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum LrSchedule {
    /// Always 1.
    Constant,
    /// Linear warmup then linear decay to 0 at `total`.
    WarmupLinear {
        /// Warmup steps.
        warmup: u64,
        /// Total steps.
        total: u64,
    },
    /// Linear warmup then cosine decay to `min_factor` at `total`.
    WarmupCosine {
        /// Warmup steps.
        warmup: u64,
        /// Total steps.
        total: u64,
        /// Final factor (0 for a full decay).
        min_factor: f64,
    },
}

fn check(warmup: u64, total: u64) -> Result<(), NnError> {
    if total == 0 {
        return Err(NnError::config(
            "LrSchedule.total",
            total,
            "must be at least 1",
        ));
    }
    if warmup > total {
        return Err(NnError::config(
            "LrSchedule.warmup",
            warmup,
            format!("must not exceed total = {total}"),
        ));
    }
    Ok(())
}

impl LrSchedule {
    /// Linear warmup over `warmup` steps, then linear decay to 0 at `total`.
    ///
    /// # Errors
    /// [`NnError::InvalidConfig`] if `total` is 0 or `warmup > total`.
    pub fn warmup_linear(warmup: u64, total: u64) -> Result<Self, NnError> {
        check(warmup, total)?;
        Ok(Self::WarmupLinear { warmup, total })
    }

    /// Linear warmup over `warmup` steps, then cosine decay to `min_factor` at `total`.
    ///
    /// # Errors
    /// [`NnError::InvalidConfig`] if `total` is 0, `warmup > total`, or `min_factor` is outside `[0, 1]`.
    pub fn warmup_cosine(warmup: u64, total: u64, min_factor: f64) -> Result<Self, NnError> {
        check(warmup, total)?;
        if !(0.0..=1.0).contains(&min_factor) {
            return Err(NnError::config(
                "LrSchedule.min_factor",
                min_factor,
                "must be in [0, 1]",
            ));
        }
        Ok(Self::WarmupCosine {
            warmup,
            total,
            min_factor,
        })
    }

    /// The multiplier for step `step` (0-based).
    pub fn factor(&self, step: u64) -> f64 {
        let (warmup, total, decay) = match *self {
            Self::Constant => return 1.0,
            Self::WarmupLinear { warmup, total } => (warmup, total, None),
            Self::WarmupCosine {
                warmup,
                total,
                min_factor,
            } => (warmup, total, Some(min_factor)),
        };
        if step < warmup {
            return step as f64 / warmup as f64;
        }
        if total == warmup {
            return decay.unwrap_or(0.0);
        }
        let progress = ((step - warmup) as f64 / (total - warmup) as f64).min(1.0);
        match decay {
            None => 1.0 - progress,
            Some(min) => min + (1.0 - min) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()),
        }
    }

    /// `base_lr * factor(step)`.
    pub fn lr(&self, base_lr: f64, step: u64) -> f64 {
        base_lr * self.factor(step)
    }
}
