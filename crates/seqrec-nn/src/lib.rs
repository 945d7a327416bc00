//! seqrec-nn (in progress).
