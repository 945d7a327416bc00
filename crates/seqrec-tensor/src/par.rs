//! Chunked rayon helpers with a serial path for small inputs.
//!
//! Chunk boundaries depend only on the sizes (never on the number of threads), so every reduction built
//! on them sums in the same order on 1 or 16 threads: results are bit-identical across thread counts.

use rayon::prelude::*;

/// Below this many elements an op runs serially: spawning rayon jobs costs more than it saves.
pub(crate) const PAR_MIN_ELEMS: usize = 1 << 15;
/// Target number of elements per parallel chunk.
pub(crate) const CHUNK_ELEMS: usize = 1 << 14;

/// Rows per chunk so that a chunk holds about [`CHUNK_ELEMS`] elements.
pub(crate) fn rows_per_chunk(cols: usize) -> usize {
    (CHUNK_ELEMS / cols.max(1)).max(1)
}

/// Calls `f(first_row, chunk)` over chunks of whole rows of `out` (`cols` elements per row), in parallel
/// when `out` is large.
pub(crate) fn for_row_chunks<T: Send>(
    out: &mut [T],
    cols: usize,
    f: impl Fn(usize, &mut [T]) + Sync + Send,
) {
    if cols == 0 || out.is_empty() {
        return;
    }
    if out.len() < PAR_MIN_ELEMS {
        f(0, out);
    } else {
        let rpc = rows_per_chunk(cols);
        out.par_chunks_mut(rpc * cols)
            .enumerate()
            .for_each(|(ci, chunk)| f(ci * rpc, chunk));
    }
}

/// Calls `f(offset, chunk)` over flat chunks of `out`, in parallel when `out` is large.
pub(crate) fn for_flat_chunks<T: Send>(out: &mut [T], f: impl Fn(usize, &mut [T]) + Sync + Send) {
    if out.len() < PAR_MIN_ELEMS {
        f(0, out);
    } else {
        out.par_chunks_mut(CHUNK_ELEMS)
            .enumerate()
            .for_each(|(ci, chunk)| f(ci * CHUNK_ELEMS, chunk));
    }
}
