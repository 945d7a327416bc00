//! Per-event context features: time-gap buckets and positions.
//!
//! **Time-gap bucket** of event `i` of a sequence (ids for an embedding table of
//! `n_time_buckets` rows):
//!
//! | bucket | meaning |
//! |---:|---|
//! | 0 | padding (no event) |
//! | 1 | first event of the sequence (no previous event) |
//! | `2 + floor(log2(gap + 1))` | gap in seconds to the previous event of the same user: 0 s -> 2, 1 s -> 3, 2-3 s -> 4, 4-7 s -> 5, ... |
//!
//! capped at `n_time_buckets - 1`, so the last bucket collects every long gap. With the
//! default 24 buckets the cap starts at gaps of `2^21 - 1` s, about 24 days.
//!
//! **Position** of an input event, 0 for padding, as chosen by [`PositionFrom`]:
//! * [`PositionFrom::Start`]: 1-based index of the event in the user's sequence (the first
//!   event of the history is 1), capped at `max_position`;
//! * [`PositionFrom::End`]: 1 for the most recent input event, 2 for the one before, ...
//!   (recency, as in SASRec-style right-aligned windows), capped at `max_position`.
//!
//! ```
//! use seqrec_data::{ContextConfig, PositionFrom};
//! let cfg = ContextConfig::new(8, PositionFrom::End, 50).unwrap();
//! assert_eq!(cfg.time_bucket(None), 1);
//! assert_eq!(cfg.time_bucket(Some(0)), 2);
//! assert_eq!(cfg.time_bucket(Some(1)), 3);
//! assert_eq!(cfg.time_bucket(Some(3)), 4);
//! assert_eq!(cfg.time_bucket(Some(1_000_000)), 7); // capped
//! let mut b = vec![0; 3];
//! cfg.time_buckets(&[10, 10, 13], &mut b);
//! assert_eq!(b, [1, 2, 4]);
//! ```

/// Errors from building a [`ContextConfig`].
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ContextError {
    /// Occurs when fewer than 3 time buckets are asked for (padding, first event, and at
    /// least one gap bucket are needed).
    #[error("n_time_buckets must be >= 3, got {0}")]
    TooFewBuckets(u32),
    /// Occurs when `max_position` is 0.
    #[error("max_position must be >= 1")]
    ZeroMaxPosition,
}

/// Where positions are counted from; see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PositionFrom {
    /// 1 = first event of the user's sequence.
    Start,
    /// 1 = most recent input event.
    End,
}

/// Context-feature settings, validated once by [`ContextConfig::new`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContextConfig {
    n_time_buckets: u32,
    position: PositionFrom,
    max_position: u32,
}

impl Default for ContextConfig {
    /// 24 time buckets, positions from the end, capped at 512.
    fn default() -> Self {
        Self {
            n_time_buckets: 24,
            position: PositionFrom::End,
            max_position: 512,
        }
    }
}

impl ContextConfig {
    /// `n_time_buckets >= 3` buckets (ids `0..n_time_buckets`), positions counted from
    /// `position`, capped at `max_position >= 1` (ids `0..=max_position`).
    pub fn new(
        n_time_buckets: u32,
        position: PositionFrom,
        max_position: u32,
    ) -> Result<Self, ContextError> {
        if n_time_buckets < 3 {
            return Err(ContextError::TooFewBuckets(n_time_buckets));
        }
        if max_position == 0 {
            return Err(ContextError::ZeroMaxPosition);
        }
        Ok(Self {
            n_time_buckets,
            position,
            max_position,
        })
    }

    /// Number of time-bucket ids (embedding rows), padding included.
    pub fn n_time_buckets(&self) -> u32 {
        self.n_time_buckets
    }

    /// Where positions count from.
    pub fn position_from(&self) -> PositionFrom {
        self.position
    }

    /// Largest position id.
    pub fn max_position(&self) -> u32 {
        self.max_position
    }

    /// The bucket of a gap (`None`: no previous event). Negative gaps (out-of-order input)
    /// are treated as 0.
    #[inline]
    pub fn time_bucket(&self, gap: Option<i64>) -> u32 {
        match gap {
            None => 1,
            Some(g) => {
                let g = g.max(0) as u64;
                let b = 2 + (g.saturating_add(1)).ilog2();
                b.min(self.n_time_buckets - 1)
            }
        }
    }

    /// Time buckets of every event of one sequence.
    ///
    /// # Panics
    ///
    /// When `out.len() != times.len()` (a programming error).
    pub fn time_buckets(&self, times: &[i64], out: &mut [u32]) {
        assert_eq!(times.len(), out.len(), "time_buckets: output length");
        for (i, o) in out.iter_mut().enumerate() {
            *o = self.time_bucket(i.checked_sub(1).map(|p| times[i] - times[p]));
        }
    }

    /// The position of input event `index` (0-based in the user's sequence) when the most
    /// recent input event has index `last` (`index <= last`; a later index counts as `last`).
    #[inline]
    pub fn position(&self, index: usize, last: usize) -> u32 {
        let p = match self.position {
            PositionFrom::Start => index + 1,
            PositionFrom::End => last.saturating_sub(index) + 1,
        };
        p.min(self.max_position as usize) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_boundaries_are_powers_of_two() {
        let cfg = ContextConfig::new(64, PositionFrom::Start, 10).unwrap();
        // gap + 1 in [2^k, 2^(k+1)) maps to bucket 2 + k.
        for k in 0..40u32 {
            let lo = (1i64 << k) - 1;
            let hi = (1i64 << (k + 1)) - 2;
            assert_eq!(cfg.time_bucket(Some(lo)), 2 + k, "gap {lo}");
            assert_eq!(cfg.time_bucket(Some(hi)), 2 + k, "gap {hi}");
        }
        assert_eq!(cfg.time_bucket(Some(i64::MAX)), 63);
        assert_eq!(cfg.time_bucket(Some(-5)), 2);
    }

    #[test]
    fn positions() {
        let s = ContextConfig::new(3, PositionFrom::Start, 4).unwrap();
        assert_eq!(
            (0..6).map(|i| s.position(i, 5)).collect::<Vec<_>>(),
            [1, 2, 3, 4, 4, 4]
        );
        let e = ContextConfig::new(3, PositionFrom::End, 4).unwrap();
        assert_eq!(
            (0..6).map(|i| e.position(i, 5)).collect::<Vec<_>>(),
            [4, 4, 4, 3, 2, 1]
        );
        assert!(ContextConfig::new(2, PositionFrom::End, 4).is_err());
        assert!(ContextConfig::new(3, PositionFrom::End, 0).is_err());
    }
}
