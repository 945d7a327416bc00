//! [`Embedding`]: a lookup table, PyTorch's `nn.Embedding(num, d, padding_idx=0)`.

use seqrec_tensor::{Float, Padding, Tensor, embedding_backward, embedding_forward};

use crate::error::NnError;
use crate::init::Rng;
use crate::param::{Module, Param, join};

/// An embedding table. `weight`: `[num_embeddings, d]`.
///
/// With `padding = Padding::Skip(id)` the row `id` is initialised to zero and never receives gradient,
/// as PyTorch's `padding_idx` (seqrec pads sequences with item id 0). Beware that weight decay applied
/// by an optimizer can still move it; seqrec's AdamW leaves a zero row with zero gradient at zero.
#[derive(Clone, Debug)]
pub struct Embedding<T> {
    /// `[num_embeddings, d]`.
    pub weight: Param<T>,
    /// Which id, if any, is padding.
    pub padding: Padding,
}

impl<T: Float> Embedding<T> {
    /// A table named `prefix` (`prefix.weight`) of `num` rows of width `d`, initialised normal(0, `std`)
    /// (PyTorch uses `std = 1`; SASRec-style models often pass a smaller one), the padding row zeroed.
    ///
    /// # Errors
    /// [`NnError::InvalidConfig`] if `num` or `d` is zero, `std` is negative or not finite, or the padding
    /// id is not a row of the table.
    pub fn new(
        prefix: &str,
        num: usize,
        d: usize,
        std: f64,
        padding: Padding,
        rng: &mut Rng,
    ) -> Result<Self, NnError> {
        if num == 0 {
            return Err(NnError::config(
                "Embedding.num_embeddings",
                num,
                "must be at least 1",
            ));
        }
        if d == 0 {
            return Err(NnError::config("Embedding.dim", d, "must be at least 1"));
        }
        if !(std.is_finite() && std >= 0.0) {
            return Err(NnError::config(
                "Embedding.std",
                std,
                "must be finite and >= 0",
            ));
        }
        if let Padding::Skip(id) = padding
            && id as usize >= num
        {
            return Err(NnError::config(
                "Embedding.padding",
                id,
                format!("must be a row of the table (num_embeddings = {num})"),
            ));
        }
        let mut value = rng.normal_tensor::<T>(&[num, d], std);
        if let Padding::Skip(id) = padding {
            let id = id as usize;
            value.as_mut_slice()[id * d..(id + 1) * d].fill(T::ZERO);
        }
        Ok(Self {
            weight: Param::new(join(prefix, "weight"), value),
            padding,
        })
    }

    /// Number of rows (the vocabulary size, padding included).
    pub fn num_embeddings(&self) -> usize {
        self.weight.value.rows()
    }

    /// Row width.
    pub fn dim(&self) -> usize {
        self.weight.value.cols()
    }

    /// Checks that every id is a row of the table; call it where the batch is built.
    ///
    /// # Errors
    /// [`NnError::InvalidConfig`] naming the first out-of-range id and its position.
    pub fn check_ids(&self, ids: &[u32]) -> Result<(), NnError> {
        let num = self.num_embeddings();
        match ids.iter().position(|&id| id as usize >= num) {
            None => Ok(()),
            Some(i) => Err(NnError::config(
                "ids",
                ids[i],
                format!("id at position {i} is out of range for an embedding of {num} rows"),
            )),
        }
    }

    /// Forward: `out[i, :] = weight[ids[i], :]`.
    ///
    /// - `ids`: `[rows]` (e.g. `batch * seq`), `out`: `[.., d]` with `rows` rows (overwritten).
    ///
    /// The padding row is zero, so padded positions come out as zeros.
    pub fn forward(&self, out: &mut Tensor<T>, ids: &[u32]) {
        embedding_forward(out, &self.weight.value, ids);
    }

    /// Backward of [`Embedding::forward`]: `dweight[ids[i], :] += dout[i, :]`, skipping the padding id.
    ///
    /// - `dout`: `[.., d]` with `ids.len()` rows.
    pub fn backward(&mut self, dout: &Tensor<T>, ids: &[u32]) {
        // out[i] = weight[ids[i]]  =>  dweight[ids[i]] += dout[i]  (repeated ids accumulate)
        embedding_backward(&mut self.weight.grad, dout, ids, self.padding);
    }
}

impl<T: Float> Module<T> for Embedding<T> {
    fn visit_params(&self, f: &mut dyn FnMut(&Param<T>)) {
        f(&self.weight);
    }

    fn visit_params_mut(&mut self, f: &mut dyn FnMut(&mut Param<T>)) {
        f(&mut self.weight);
    }
}
