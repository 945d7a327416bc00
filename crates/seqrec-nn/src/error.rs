//! [`NnError`]: the typed errors of seqrec-nn (configuration, optimizer state, gradient norm, checkpoints).

use std::path::PathBuf;

use thiserror::Error;

/// Everything in seqrec-nn that can fail on user input or user files.
#[derive(Debug, Error)]
pub enum NnError {
    /// Occurs when a layer, loss, optimizer or schedule is built from an inconsistent configuration
    /// (a zero size, a probability outside its range, a warmup longer than the schedule, ...).
    #[error("invalid configuration: {field} = {value}: {reason}")]
    InvalidConfig {
        /// The offending field, e.g. `"Dropout.p"`.
        field: &'static str,
        /// Its value, formatted.
        value: String,
        /// What was expected.
        reason: String,
    },
    /// Occurs when the global gradient norm is NaN or infinite (an exploding or broken backward pass).
    #[error(
        "gradient norm is {norm} (not finite); first non-finite gradient: parameter `{param}` at element {index}"
    )]
    NonFiniteGradNorm {
        /// The computed norm (NaN or infinity).
        norm: f64,
        /// The first parameter in visiting order holding a non-finite gradient.
        param: String,
        /// Flat index of the first non-finite element in that parameter.
        index: usize,
    },
    /// Occurs when an optimizer that was initialised on one module is stepped with another one
    /// (different parameter count, names or shapes).
    #[error(
        "optimizer state does not match the module at parameter #{index}: optimizer holds `{expected}` \
         {expected_shape:?}, module has `{found}` {found_shape:?}"
    )]
    OptimizerMismatch {
        /// Position in visiting order.
        index: usize,
        /// Name recorded by the optimizer (`"<none>"` when the module has more parameters).
        expected: String,
        /// Shape recorded by the optimizer.
        expected_shape: Vec<usize>,
        /// Name found in the module (`"<none>"` when the module has fewer parameters).
        found: String,
        /// Shape found in the module.
        found_shape: Vec<usize>,
    },
    /// Occurs when a checkpoint file cannot be read, written or renamed.
    #[error("checkpoint I/O on {path}: {source}")]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Occurs when a file is not valid safetensors (bad header, truncated data) or cannot be serialised.
    #[error("safetensors format error in {path}: {message}")]
    Safetensors {
        /// The file involved.
        path: PathBuf,
        /// The library's message.
        message: String,
    },
    /// Occurs when a module parameter has no tensor of the same name in the checkpoint.
    #[error("checkpoint {path} has no tensor `{name}` (expected shape {shape:?})")]
    MissingTensor {
        /// The file involved.
        path: PathBuf,
        /// The parameter name.
        name: String,
        /// The parameter's shape.
        shape: Vec<usize>,
    },
    /// Occurs when the checkpoint holds tensors the module does not have (all of them are listed).
    #[error("checkpoint {path} has tensors the module does not have: {names:?}")]
    UnexpectedTensors {
        /// The file involved.
        path: PathBuf,
        /// The extra tensor names, sorted.
        names: Vec<String>,
    },
    /// Occurs when a checkpoint tensor's shape differs from the parameter's shape.
    #[error(
        "tensor `{name}` in {path} has shape {file_shape:?} but the module expects {module_shape:?}"
    )]
    ShapeMismatch {
        /// The file involved.
        path: PathBuf,
        /// The tensor name.
        name: String,
        /// Shape stored in the file.
        file_shape: Vec<usize>,
        /// Shape of the module's parameter.
        module_shape: Vec<usize>,
    },
    /// Occurs when a checkpoint tensor's element type differs from the module's (e.g. F64 into an f32 model).
    #[error("tensor `{name}` in {path} has dtype {file_dtype} but the module is {module_dtype}")]
    DtypeMismatch {
        /// The file involved.
        path: PathBuf,
        /// The tensor name.
        name: String,
        /// Dtype stored in the file, e.g. `"F64"`.
        file_dtype: String,
        /// The module's element type, `"f32"` or `"f64"`.
        module_dtype: &'static str,
    },
}

impl NnError {
    /// Shorthand for [`NnError::InvalidConfig`].
    pub fn config(
        field: &'static str,
        value: impl std::fmt::Display,
        reason: impl Into<String>,
    ) -> Self {
        Self::InvalidConfig {
            field,
            value: value.to_string(),
            reason: reason.into(),
        }
    }
}
