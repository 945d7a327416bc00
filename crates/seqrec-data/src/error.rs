//! Typed errors of the data crate.

use std::path::PathBuf;

/// Everything that can go wrong while reading, preparing or caching a log.
///
/// Messages name the file, the 1-based line number where there is one, what was expected
/// and what was found, so a user can fix the input without reading the code.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// Occurs when a file cannot be opened, read, written or renamed.
    // The OS error is part of the message, not a `source`: `{err:#}` would print it twice.
    #[error("{path}: {error}", path = .path.display())]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The operating-system error.
        error: std::io::Error,
    },
    /// Occurs when a record (one line) does not have the expected shape: wrong field
    /// count, a non-numeric timestamp or rating, an id that is not UTF-8.
    #[error("{path}:{line}: expected {expected}, found {found}", path = .path.display())]
    Parse {
        /// The file being read.
        path: PathBuf,
        /// 1-based line number.
        line: u64,
        /// What the reader expected at this place.
        expected: String,
        /// What it found (a shortened, lossily decoded excerpt).
        found: String,
    },
    /// Occurs when a file holds no records at all (or only a header).
    #[error("{path}: empty file, expected {expected}", path = .path.display())]
    Empty {
        /// The file being read.
        path: PathBuf,
        /// What kind of records were expected.
        expected: String,
    },
    /// Occurs when a header line does not contain a column the mapping names.
    #[error("{path}:1: header does not match the column mapping: expected {expected}, found {found}", path = .path.display())]
    Header {
        /// The file being read.
        path: PathBuf,
        /// The column(s) the mapping asked for.
        expected: String,
        /// The header as read.
        found: String,
    },
    /// Occurs when the format of a file cannot be detected from its name and first lines.
    #[error("{path}: cannot detect the log format ({reason}); name it explicitly (--format)", path = .path.display())]
    UnknownFormat {
        /// The file being read.
        path: PathBuf,
        /// Why detection failed.
        reason: String,
    },
    /// Occurs when a [`crate::PrepareConfig`] or [`crate::ReadOptions`] is inconsistent
    /// (negative gap, NaN threshold, a rating threshold on a log without ratings, ...).
    #[error("invalid configuration: {0}")]
    Config(String),
    /// Occurs when a log has more distinct users or items than a `u32` id can hold.
    #[error("{path}: more than {max} distinct {what}", path = .path.display())]
    TooManyIds {
        /// The file being read.
        path: PathBuf,
        /// "users" or "items".
        what: &'static str,
        /// The largest supported count.
        max: u64,
    },
    /// Occurs when a cache file is missing, stale (other source file or config) or corrupted
    /// (bad magic, unknown version, truncated, checksum mismatch). Callers rebuild it.
    #[error("{path}: cache not usable: {reason}", path = .path.display())]
    Cache {
        /// The cache file.
        path: PathBuf,
        /// Why it was rejected.
        reason: CacheProblem,
    },
    /// Occurs when filtering leaves no event at all (e.g. a k-core threshold larger than any user).
    #[error("no events left after preparing: {0}")]
    NothingLeft(String),
}

/// Why a cache file was rejected by [`crate::cache::load`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CacheProblem {
    /// Occurs when the file does not start with the cache magic bytes.
    #[error("not a seqrec cache (bad magic)")]
    BadMagic,
    /// Occurs when the cache was written by another format version.
    #[error("format version {found}, expected {expected}")]
    Version {
        /// The version this build writes and reads.
        expected: u32,
        /// The version in the file.
        found: u32,
    },
    /// Occurs when the cache was built from another source file (size or mtime) or with
    /// another configuration.
    #[error("stale: built from another source file or with other settings ({})", key_difference(.expected, .found))]
    Stale {
        /// The key of the current request.
        expected: String,
        /// The key stored in the file.
        found: String,
    },
    /// Occurs when the file is shorter than its header says.
    #[error("truncated: {0}")]
    Truncated(String),
    /// Occurs when the payload checksum does not match (bit rot, partial overwrite).
    #[error("checksum mismatch: stored {stored:#018x}, computed {computed:#018x}")]
    Checksum {
        /// The checksum stored in the header.
        stored: u64,
        /// The checksum of the payload as read.
        computed: u64,
    },
    /// Occurs when the payload decodes to an inconsistent dataset.
    #[error("inconsistent payload: {0}")]
    Invalid(String),
}

/// Shorthand for results of this crate.
pub type Result<T, E = DataError> = std::result::Result<T, E>;

/// Shortens `bytes` to a printable excerpt for error messages.
pub(crate) fn excerpt(bytes: &[u8]) -> String {
    const MAX: usize = 80;
    let cut = &bytes[..bytes.len().min(MAX)];
    let mut s = String::from_utf8_lossy(cut).into_owned();
    if bytes.len() > MAX {
        s.push_str("...");
    }
    if s.is_empty() {
        s.push_str("an empty field");
    } else {
        s = format!("{s:?}");
    }
    s
}

/// The first `;`-separated part where two cache keys differ, for a short message.
fn key_difference(expected: &str, found: &str) -> String {
    let mut e = expected.split(';');
    let mut f = found.split(';');
    loop {
        match (e.next(), f.next()) {
            (Some(a), Some(b)) if a == b => continue,
            (Some(a), Some(b)) => return format!("cache has {b}, wanted {a}"),
            (Some(a), None) => return format!("cache lacks {a}"),
            (None, Some(b)) => return format!("cache has extra {b}"),
            (None, None) => return "keys differ".into(),
        }
    }
}
