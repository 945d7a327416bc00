//! [`PositionalEmbedding`]: learned absolute positions added to a sequence of vectors (SASRec, BERT4Rec).

use seqrec_tensor::{Float, Tensor};

use crate::error::NnError;
use crate::init::Rng;
use crate::param::{Module, Param, join};

/// Which positions receive the positional vector.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PositionMask<'a> {
    /// Every position (BERT4Rec, the original SASRec).
    All,
    /// Positions whose item id (`[batch * seq]`) is 0 get nothing and give no gradient: the padded
    /// positions stay exactly zero (SASRec.pytorch's `poss *= (log_seqs != 0)`).
    SkipPadding(&'a [u32]),
}

/// A learned position table `weight`: `[max_len, d]`; row `t` is added at sequence position `t`.
#[derive(Clone, Debug)]
pub struct PositionalEmbedding<T> {
    /// `[max_len, d]`.
    pub weight: Param<T>,
}

impl<T: Float> PositionalEmbedding<T> {
    /// A table named `prefix` (`prefix.weight`) for sequences up to `max_len`, initialised normal(0, `std`).
    ///
    /// # Errors
    /// [`NnError::InvalidConfig`] if `max_len` or `d` is zero or `std` is negative or not finite.
    pub fn new(
        prefix: &str,
        max_len: usize,
        d: usize,
        std: f64,
        rng: &mut Rng,
    ) -> Result<Self, NnError> {
        if max_len == 0 {
            return Err(NnError::config(
                "PositionalEmbedding.max_len",
                max_len,
                "must be at least 1",
            ));
        }
        if d == 0 {
            return Err(NnError::config(
                "PositionalEmbedding.dim",
                d,
                "must be at least 1",
            ));
        }
        if !(std.is_finite() && std >= 0.0) {
            return Err(NnError::config(
                "PositionalEmbedding.std",
                std,
                "must be finite and >= 0",
            ));
        }
        Ok(Self {
            weight: Param::new(
                join(prefix, "weight"),
                rng.normal_tensor(&[max_len, d], std),
            ),
        })
    }

    /// Longest supported sequence.
    pub fn max_len(&self) -> usize {
        self.weight.value.rows()
    }

    #[track_caller]
    fn dims(&self, x: &Tensor<T>, mask: PositionMask<'_>) -> (usize, usize, usize) {
        let d = self.weight.value.cols();
        assert!(
            x.ndim() == 3 && x.shape()[2] == d && x.shape()[1] <= self.max_len(),
            "PositionalEmbedding: x has shape {:?}, need [batch, seq <= {}, {d}]",
            x.shape(),
            self.max_len()
        );
        if let PositionMask::SkipPadding(ids) = mask {
            assert_eq!(
                ids.len(),
                x.rows(),
                "PositionalEmbedding: ids length vs batch * seq"
            );
        }
        (x.shape()[0], x.shape()[1], d)
    }

    /// Forward: `y[b, t, :] = x[b, t, :] + weight[t, :]` (unless masked).
    ///
    /// - `x`, `y`: `[batch, seq, d]` with `seq <= max_len` (`y` overwritten).
    pub fn forward(&self, y: &mut Tensor<T>, x: &Tensor<T>, mask: PositionMask<'_>) {
        let (_, seq, d) = self.dims(x, mask);
        assert_eq!(y.shape(), x.shape(), "PositionalEmbedding: y vs x shape");
        let w = self.weight.value.as_slice();
        for (r, (yr, xr)) in y
            .as_mut_slice()
            .chunks_exact_mut(d)
            .zip(x.as_slice().chunks_exact(d))
            .enumerate()
        {
            let t = r % seq;
            let skip = matches!(mask, PositionMask::SkipPadding(ids) if ids[r] == 0);
            if skip {
                yr.copy_from_slice(xr);
            } else {
                for ((o, &a), &p) in yr.iter_mut().zip(xr).zip(&w[t * d..(t + 1) * d]) {
                    *o = a + p;
                }
            }
        }
    }

    /// Backward of [`PositionalEmbedding::forward`]: `dweight[t] += sum_b dy[b, t]` over unmasked rows.
    /// The input gradient is `dy` itself (identity), so no `dx` is written: pass `dy` on.
    pub fn backward(&mut self, dy: &Tensor<T>, mask: PositionMask<'_>) {
        let (_, seq, d) = self.dims(dy, mask);
        let g = self.weight.grad.as_mut_slice();
        // y[b, t] = x[b, t] + weight[t]  =>  dweight[t] += dy[b, t]
        for (r, dyr) in dy.as_slice().chunks_exact(d).enumerate() {
            if matches!(mask, PositionMask::SkipPadding(ids) if ids[r] == 0) {
                continue;
            }
            let t = r % seq;
            for (gi, &v) in g[t * d..(t + 1) * d].iter_mut().zip(dyr) {
                *gi += v;
            }
        }
    }
}

impl<T: Float> Module<T> for PositionalEmbedding<T> {
    fn visit_params(&self, f: &mut dyn FnMut(&Param<T>)) {
        f(&self.weight);
    }

    fn visit_params_mut(&mut self, f: &mut dyn FnMut(&mut Param<T>)) {
        f(&mut self.weight);
    }
}
