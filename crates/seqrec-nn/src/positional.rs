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
    /// Like `SkipPadding`, but a real item gets the position of its index among the real items of its
    /// row (the number of non-zero ids before it), not its slot: in a left-padded window the oldest
    /// item is position 0, as if the window were right-padded (Klenitskiy & Vasilev's SASRec and
    /// BERT4Rec). Rows without padding are unchanged.
    FromFirstItem(&'a [u32]),
}

impl PositionMask<'_> {
    /// The position table row of each of the `seq` slots of `row` (`None`: no position), in order.
    fn positions(self, row: usize, seq: usize) -> impl Iterator<Item = Option<usize>> {
        let mut real = 0usize;
        (0..seq).map(move |t| match self {
            PositionMask::All => Some(t),
            PositionMask::SkipPadding(ids) => (ids[row * seq + t] != 0).then_some(t),
            PositionMask::FromFirstItem(ids) => (ids[row * seq + t] != 0).then(|| {
                real += 1;
                real - 1
            }),
        })
    }
}

/// A learned position table `weight`: `[max_len, d]`; row `t` is added at sequence position `t` (or
/// at the row's `t`-th item, [`PositionMask::FromFirstItem`]).
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
        if let PositionMask::SkipPadding(ids) | PositionMask::FromFirstItem(ids) = mask {
            assert_eq!(
                ids.len(),
                x.rows(),
                "PositionalEmbedding: ids length vs batch * seq"
            );
        }
        (x.shape()[0], x.shape()[1], d)
    }

    /// Forward: `y[b, t, :] = x[b, t, :] + weight[p(b, t), :]` with `p(b, t) = t`, or the item's index
    /// among its row's real items for [`PositionMask::FromFirstItem`]; masked slots are copied.
    ///
    /// - `x`, `y`: `[batch, seq, d]` with `seq <= max_len` (`y` overwritten).
    pub fn forward(&self, y: &mut Tensor<T>, x: &Tensor<T>, mask: PositionMask<'_>) {
        let (batch, seq, d) = self.dims(x, mask);
        assert_eq!(y.shape(), x.shape(), "PositionalEmbedding: y vs x shape");
        let w = self.weight.value.as_slice();
        let (ys, xs) = (y.as_mut_slice(), x.as_slice());
        for b in 0..batch {
            for (t, p) in mask.positions(b, seq).enumerate() {
                let r = (b * seq + t) * d;
                let (yr, xr) = (&mut ys[r..r + d], &xs[r..r + d]);
                match p {
                    None => yr.copy_from_slice(xr),
                    Some(p) => {
                        for ((o, &a), &q) in yr.iter_mut().zip(xr).zip(&w[p * d..(p + 1) * d]) {
                            *o = a + q;
                        }
                    }
                }
            }
        }
    }

    /// Backward of [`PositionalEmbedding::forward`]: `dweight[p(b, t)] += dy[b, t]` over unmasked slots.
    /// The input gradient is `dy` itself (identity), so no `dx` is written: pass `dy` on.
    pub fn backward(&mut self, dy: &Tensor<T>, mask: PositionMask<'_>) {
        let (batch, seq, d) = self.dims(dy, mask);
        let g = self.weight.grad.as_mut_slice();
        let dys = dy.as_slice();
        for b in 0..batch {
            for (t, p) in mask.positions(b, seq).enumerate() {
                if let Some(p) = p {
                    let r = (b * seq + t) * d;
                    for (gi, &v) in g[p * d..(p + 1) * d].iter_mut().zip(&dys[r..r + d]) {
                        *gi += v;
                    }
                }
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
