//! [`ServeError`]: everything a recommendation request or a model load can fail with.

use std::path::PathBuf;

/// Errors of loading a run and of answering a request. Request errors (every variant but
/// [`ServeError::Load`], [`ServeError::Store`] and [`ServeError::Unavailable`]) are the caller's
/// fault and map to a 4xx status.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Occurs when a history or an event names an item the model's catalogue does not hold.
    #[error("unknown item id {id:?} at position {position} (the model knows {n_items} items)")]
    UnknownItem {
        /// The id as given.
        id: String,
        /// Its 0-based position in the request's history (0 for an event).
        position: usize,
        /// Size of the catalogue.
        n_items: usize,
    },
    /// Occurs when a history (or a user's stored history) holds no item.
    #[error("the history is empty: at least one item id is needed")]
    EmptyHistory,
    /// Occurs when a history is longer than the request limit (longer ones than the model's window
    /// but within the limit are truncated to their most recent items).
    #[error("the history has {len} items, more than the limit of {max}")]
    HistoryTooLong {
        /// Items given.
        len: usize,
        /// The configured limit.
        max: usize,
    },
    /// Occurs when `k` is 0 or above the limit.
    #[error("k = {k} is out of range 1..={max}")]
    BadK {
        /// The requested `k`.
        k: i64,
        /// The largest accepted `k`.
        max: usize,
    },
    /// Occurs when a user id is unknown to the dataset of the run (offline `--user`).
    #[error("unknown user id {0:?}")]
    UnknownUser(String),
    /// Occurs when the request body or query string cannot be decoded; says what was wrong.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// Occurs when a run directory cannot be loaded (missing checkpoint, config, dataset, metadata).
    #[error("cannot load {path}: {message}")]
    Load {
        /// The file or directory involved.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// Occurs when the embedded database fails (disk full, corrupt file).
    #[error("database: {0}")]
    Store(String),
    /// Occurs when the model worker has stopped (the server is shutting down).
    #[error("the model worker is not running")]
    Unavailable,
}

impl ServeError {
    /// The HTTP status of the error: 400 for bad input, 404 for an unknown user, 500/503 for
    /// server-side failures.
    pub fn status(&self) -> u16 {
        match self {
            ServeError::UnknownItem { .. }
            | ServeError::EmptyHistory
            | ServeError::HistoryTooLong { .. }
            | ServeError::BadK { .. }
            | ServeError::BadRequest(_) => 400,
            ServeError::UnknownUser(_) => 404,
            ServeError::Load { .. } | ServeError::Store(_) => 500,
            ServeError::Unavailable => 503,
        }
    }

    /// A short machine-readable code (`unknown_item`, `empty_history`, ...).
    pub fn code(&self) -> &'static str {
        match self {
            ServeError::UnknownItem { .. } => "unknown_item",
            ServeError::EmptyHistory => "empty_history",
            ServeError::HistoryTooLong { .. } => "history_too_long",
            ServeError::BadK { .. } => "bad_k",
            ServeError::UnknownUser(_) => "unknown_user",
            ServeError::BadRequest(_) => "bad_request",
            ServeError::Load { .. } => "load_failed",
            ServeError::Store(_) => "store_failed",
            ServeError::Unavailable => "unavailable",
        }
    }

    pub(crate) fn load(path: impl Into<PathBuf>, message: impl std::fmt::Display) -> Self {
        ServeError::Load {
            path: path.into(),
            message: message.to_string(),
        }
    }
}
