//! The [`Model`] trait: what training, evaluation, checkpoints and serving need from a recommender.

use std::path::Path;

use seqrec_data::{ContextConfig, Sequences};

/// Errors a model reports to the training loop.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// Occurs when the loss or a gradient norm becomes NaN or infinite; training must stop and keep
    /// the last good checkpoint.
    #[error("non-finite {what} at epoch {epoch}, step {step}: {value}")]
    NonFinite {
        /// `"loss"` or `"gradient norm"`.
        what: &'static str,
        /// Epoch index (0-based).
        epoch: usize,
        /// Step within the epoch.
        step: usize,
        /// The offending value.
        value: f64,
    },
    /// Occurs when a config field is out of range; names the field and the value.
    #[error("invalid config: {0}")]
    Config(String),
    /// Occurs when a checkpoint cannot be written or read, or does not match the model.
    #[error("checkpoint {path}: {message}")]
    Checkpoint {
        /// The file involved.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// Occurs when the training data cannot be batched (e.g. no negatives possible).
    #[error("data: {0}")]
    Data(String),
}

/// The arithmetic of [`Model::score_serving`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Precision {
    /// `f32` throughout (the default; scores equal the training forward's up to summation order).
    #[default]
    F32,
    /// The transformer's matrix products in bfloat16 on Intel AMX tiles, `f32` sums: projections,
    /// feed-forwards, and the attention products of every block but the last (its softmax in
    /// `f32`). Norms, the last block's attention and item scoring stay `f32`. Faster on CPUs with
    /// AMX; scores move by up to about 1.3% of their spread, so near-ties may swap places.
    Bf16,
}

impl std::str::FromStr for Precision {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "f32" => Ok(Self::F32),
            "bf16" => Ok(Self::Bf16),
            other => Err(format!(
                "unknown precision {other:?} (expected f32 or bf16)"
            )),
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::F32 => "f32",
            Self::Bf16 => "bf16",
        })
    }
}

/// Progress of one optimisation step, reported to the caller's progress bar.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepReport {
    /// Step index within the epoch.
    pub step: usize,
    /// Number of steps in the epoch.
    pub steps: usize,
    /// Mean loss of this step.
    pub loss: f64,
    /// Sequences (rows) processed by this step.
    pub sequences: usize,
}

/// Summary of one training epoch.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EpochReport {
    /// Mean loss over the epoch's steps.
    pub loss: f64,
    /// Number of optimisation steps.
    pub steps: usize,
    /// Sequences processed.
    pub sequences: usize,
}

/// Per-event context features of a batch of histories, aligned element for element with the
/// `[batch, max_history()]` item buffer (`0` at padding), as `seqrec_data::EvalBatcher` fills them
/// for the [`ContextConfig`] the model asks for.
#[derive(Clone, Copy, Debug)]
pub struct HistoryContext<'a> {
    /// `[batch, max_history()]` time-gap buckets (`seqrec_data::context`).
    pub time_buckets: &'a [u32],
    /// `[batch, max_history()]` positions.
    pub positions: &'a [u32],
}

/// A next-item recommender.
///
/// Histories are passed in SASRec's layout: a row-major `[batch, max_history()]` buffer of dense item
/// ids, right-aligned, left-padded with `0`. Scores are written to a `[batch, n_items + 1]` buffer whose
/// column `0` (padding) is ignored by evaluation.
pub trait Model {
    /// Short model name (`"sasrec"`, `"gru4rec"`, `"mostpop"`).
    fn name(&self) -> &'static str;

    /// Number of real items (`scores` rows have `n_items + 1` entries).
    fn n_items(&self) -> usize;

    /// Length of the history window the model reads.
    fn max_history(&self) -> usize;

    /// Trains one epoch over `train`. The epoch index seeds shuffling, negatives and dropout, so the
    /// same seed, epoch and thread count give the same result, and a resumed run matches an
    /// uninterrupted one.
    fn train_epoch(
        &mut self,
        train: &Sequences<'_>,
        epoch: usize,
        on_step: &mut dyn FnMut(&StepReport),
    ) -> Result<EpochReport, ModelError>;

    /// Scores every item for each of `batch` histories (`histories`: `[batch, max_history()]`).
    fn score(&mut self, histories: &[u32], batch: usize, scores: &mut [f32]);

    /// The per-event context features the model reads when scoring, `None` (the default) for a
    /// model that reads item ids only. When `Some`, callers should score through
    /// [`Model::score_with_context`] with features built for this config.
    fn context(&self) -> Option<ContextConfig> {
        None
    }

    /// Scores like [`Model::score`] with per-event context features. The default ignores the
    /// context, which is right for every model whose [`Model::context`] is `None`.
    fn score_with_context(
        &mut self,
        histories: &[u32],
        context: HistoryContext<'_>,
        batch: usize,
        scores: &mut [f32],
    ) {
        let _ = context;
        self.score(histories, batch, scores);
    }

    /// Multiplies the optimizer's base learning rate by `factor` from the next step on (a schedule's
    /// factor, set by the training loop before each epoch; not saved, since it is a function of the
    /// epoch).
    ///
    /// # Errors
    /// [`ModelError::Config`] for a model without a learning rate (the default).
    fn set_lr_factor(&mut self, factor: f64) -> Result<(), ModelError> {
        let _ = factor;
        Err(ModelError::Config(format!(
            "{} has no learning rate to schedule (leave train.lr_milestones empty)",
            self.name()
        )))
    }

    /// Writes everything needed to resume (parameters, optimizer state) into `dir`, atomically per file.
    fn save(&self, dir: &Path) -> Result<(), ModelError>;

    /// Restores the state written by [`Model::save`].
    fn load(&mut self, dir: &Path) -> Result<(), ModelError>;

    /// [`Model::score`] for serving: the same scores (up to floating-point summation order), possibly
    /// computed faster, e.g. by skipping the padding shared by the whole batch. Defaults to
    /// [`Model::score`].
    fn score_serving(&mut self, histories: &[u32], batch: usize, scores: &mut [f32]) {
        self.score(histories, batch, scores);
    }

    /// Sets the arithmetic of [`Model::score_serving`]. Every model serves in [`Precision::F32`];
    /// the default refuses anything else.
    ///
    /// # Errors
    /// [`ModelError::Config`] when the model or this CPU has no path for `precision`.
    fn set_serving_precision(&mut self, precision: Precision) -> Result<(), ModelError> {
        match precision {
            Precision::F32 => Ok(()),
            other => Err(ModelError::Config(format!(
                "this model serves in f32 only, not {other} (use --precision f32)"
            ))),
        }
    }

    /// The incremental (one step per event) inference API of a recurrent model, for serving;
    /// `None` (the default) for models that re-read the whole history window.
    fn recurrent(&mut self) -> Option<&mut dyn Recurrent> {
        None
    }

    /// Attention weights that explain the next-item scores of one history (`[max_history()]`,
    /// right-aligned like [`Model::score`]'s input): the last layer's weights of the last position
    /// over every position, averaged over heads (zero on padding). `None` (the default) for models
    /// without attention.
    fn last_attention(&mut self, history: &[u32]) -> Option<Vec<f32>> {
        let _ = history;
        None
    }

    /// The number of epochs after which more training cannot change the model (a closed-form fit
    /// such as EASE: `Some(1)`). The training loop evaluates and stops there instead of running to
    /// `epochs`. `None` (the default) for iterative models.
    fn epochs_needed(&self) -> Option<usize> {
        None
    }
}

/// Incremental inference of a recurrent model: the state of a user is a flat `f32` vector that one
/// [`Recurrent::step`] per event updates, instead of re-running the model over the whole history.
///
/// Stepping the items of a history one by one from [`Recurrent::init_state`] gives the state that
/// [`Model::score`] reaches at the end of the same (unpadded) history, so
/// [`Recurrent::score_states`] equals [`Model::score`] for histories up to `max_history()` items.
pub trait Recurrent {
    /// Length of one user's state (`layers * hidden` for a GRU, twice that with LSTM cell states).
    fn state_len(&self) -> usize;

    /// Writes the state of an empty history into `state` (`[state_len()]`).
    fn init_state(&self, state: &mut [f32]);

    /// Advances `state` by one event `item` (a dense id in `1..=n_items`).
    ///
    /// # Panics
    /// If `state` has the wrong length or `item` is out of range (callers check ids once).
    fn step(&mut self, state: &mut [f32], item: u32);

    /// Scores every item from `batch` states (`states`: `[batch, state_len()]`) into `scores`
    /// (`[batch, n_items + 1]`, column 0 is padding), like [`Model::score`].
    fn score_states(&mut self, states: &[f32], batch: usize, scores: &mut [f32]);
}
