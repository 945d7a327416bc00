//! [`TrainError`]: everything that can stop a run or an evaluation.

use std::path::PathBuf;

/// Errors of configuration, data loading, training, evaluation and run directories.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// Occurs when a config field has an invalid value; names the field (dotted path) and the value.
    #[error("config field `{field}`: {message}")]
    Config {
        /// Dotted path of the field, e.g. `train.eval_every`.
        field: String,
        /// What is wrong with it, including the offending value.
        message: String,
    },
    /// Occurs when a TOML config or a `--set key=value` override cannot be parsed.
    #[error("cannot parse config: {0}")]
    Parse(String),
    /// Occurs when a dataset name is neither a known short name nor an existing file.
    #[error("unknown dataset {name:?}: not a short name ({known}) and no such file")]
    UnknownDataset {
        /// What was asked for.
        name: String,
        /// The accepted short names.
        known: String,
    },
    /// Occurs when reading or preparing the dataset fails.
    #[error("dataset: {0}")]
    Data(#[from] seqrec_data::DataError),
    /// Occurs when the split cannot be built or checked against the dataset.
    #[error("split: {0}")]
    Split(#[from] seqrec_data::SplitError),
    /// Occurs when evaluation batches cannot be built.
    #[error("evaluation batches: {0}")]
    Batch(#[from] seqrec_data::BatchError),
    /// Occurs when sampled evaluation negatives cannot be drawn (e.g. a user saw almost every item).
    #[error("evaluation negatives: {0}")]
    Negatives(#[from] seqrec_data::NegativeError),
    /// Occurs when ranking or aggregating metrics fails (NaN scores, bad ids).
    #[error("metrics: {0}")]
    Metrics(#[from] seqrec_metrics::MetricsError),
    /// Occurs when the model fails to build, train, save or load.
    #[error("model: {0}")]
    Model(#[from] seqrec_models::ModelError),
    /// Occurs when a file or directory of the run cannot be read or written.
    #[error("{path}: {error}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        error: std::io::Error,
    },
    /// Occurs when a run directory is missing files, already holds a finished run, or does not match.
    #[error("run directory {path}: {message}")]
    RunDir {
        /// The run directory.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// Occurs when the rayon thread pool cannot be built.
    #[error("thread pool: {0}")]
    ThreadPool(String),
    /// Occurs when the training curve cannot be drawn.
    #[error("plot {path}: {message}")]
    Plot {
        /// The PNG file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
}

impl TrainError {
    /// A config error for `field`.
    pub(crate) fn config(field: &str, message: impl Into<String>) -> Self {
        TrainError::Config {
            field: field.to_owned(),
            message: message.into(),
        }
    }

    /// An I/O error at `path`.
    pub(crate) fn io(path: impl Into<PathBuf>, error: std::io::Error) -> Self {
        TrainError::Io {
            path: path.into(),
            error,
        }
    }
}
