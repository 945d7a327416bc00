//! seqrec-tensor (in progress).
