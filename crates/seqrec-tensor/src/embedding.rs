//! Embedding lookup (gather) and its gradient (scatter-add).

use crate::par::for_row_chunks;
use crate::{Float, Tensor};

/// Whether the backward pass skips a padding id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Padding {
    /// Every id, including 0, receives gradient.
    None,
    /// Rows whose id equals this value receive no gradient (`padding_idx` in PyTorch; seqrec pads with 0).
    Skip(u32),
}

#[track_caller]
fn check<T: Float>(
    op: &str,
    rows_tensor: (&str, &Tensor<T>),
    table: (&str, &Tensor<T>),
    ids: &[u32],
) {
    let (rn, r) = rows_tensor;
    let (tn, t) = table;
    assert!(
        r.rows() == ids.len() && r.cols() == t.cols() && t.ndim() == 2,
        "{op}: shape mismatch: {rn} has shape {:?} ({} rows) and {tn} has shape {:?} for {} ids: need {rn} \
         [ids, d] with d = {tn}'s [vocab, d] last axis",
        r.shape(),
        r.rows(),
        t.shape(),
        ids.len()
    );
}

/// `out[i, :] = table[ids[i], :]`.
///
/// - `out`: `[.., d]` with `rows = ids.len()` (e.g. `[batch, seq, d]`); `table`: `[vocab, d]`.
///
/// Ids are checked when the batch is built; here an id `>= vocab` is a programming error.
///
/// # Panics
/// If shapes disagree or an id is out of range (the message names the id and the vocabulary size).
#[track_caller]
pub fn embedding_forward<T: Float>(out: &mut Tensor<T>, table: &Tensor<T>, ids: &[u32]) {
    check("embedding_forward", ("out", out), ("table", table), ids);
    let (d, vocab) = (table.cols(), table.rows());
    let t = table.as_slice();
    for_row_chunks(out.as_mut_slice(), d, |r0, chunk| {
        for (i, row) in chunk.chunks_exact_mut(d).enumerate() {
            let id = ids[r0 + i] as usize;
            assert!(
                id < vocab,
                "embedding_forward: id {id} out of range for a table of {vocab} rows"
            );
            row.copy_from_slice(&t[id * d..(id + 1) * d]);
        }
    });
}

/// Scatter-add: `dtable[ids[i], :] += dout[i, :]` (repeated ids accumulate; a parameter gradient, `+=`),
/// skipping `padding` ids if asked.
///
/// - `dtable`: `[vocab, d]`; `dout`: `[.., d]` with `rows = ids.len()`.
///
/// Serial on purpose: rows may collide, and it is memory-bound and small next to the GEMMs.
///
/// # Panics
/// If shapes disagree or an id is out of range.
#[track_caller]
pub fn embedding_backward<T: Float>(
    dtable: &mut Tensor<T>,
    dout: &Tensor<T>,
    ids: &[u32],
    padding: Padding,
) {
    check(
        "embedding_backward",
        ("dout", dout),
        ("dtable", dtable),
        ids,
    );
    let (d, vocab) = (dtable.cols(), dtable.rows());
    let dt = dtable.as_mut_slice();
    if d == 0 {
        return;
    }
    for (&id, g) in ids.iter().zip(dout.as_slice().chunks_exact(d)) {
        if padding == Padding::Skip(id) {
            continue;
        }
        let id = id as usize;
        assert!(
            id < vocab,
            "embedding_backward: id {id} out of range for a table of {vocab} rows"
        );
        for (t, &v) in dt[id * d..(id + 1) * d].iter_mut().zip(g) {
            *t += v;
        }
    }
}
