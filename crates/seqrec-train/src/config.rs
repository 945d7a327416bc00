//! [`TrainConfig`]: the whole description of a run, read from TOML and overridden from the command line.
//!
//! Every field has a default, so an empty file is a valid config; unknown keys are errors (a typo must
//! not silently train the default). [`TrainConfig::validate`] checks everything once and names the field.

use std::path::PathBuf;

use seqrec_metrics::{Cutoffs, Metric};
use serde::{Deserialize, Serialize};

use crate::TrainError;
use crate::registry::ModelConfig;

/// A complete run description: data, model, training loop and evaluation.
///
/// ```
/// use seqrec_train::TrainConfig;
/// let mut cfg = TrainConfig::from_toml_str("[train]\nepochs = 3\n")?;
/// cfg.set("train.seed", "7")?;
/// assert_eq!((cfg.train.epochs, cfg.train.seed), (3, 7));
/// assert!(cfg.set("train.eval_every", "0").is_err()); // validated, names the field
/// # Ok::<(), seqrec_train::TrainError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// Output directory of the run; empty means `runs/<model>-<dataset>-seed<seed>`.
    pub out: PathBuf,
    /// Which data, how it is prepared and split.
    pub data: DataConfig,
    /// The training loop: epochs, seed, evaluation cadence, early stopping, threads.
    pub train: LoopConfig,
    /// How validation and test are evaluated.
    pub eval: EvalConfig,
    /// The model and its hyper-parameters (`model = "<name>"` picks it; see [`ModelConfig`]).
    pub model: ModelConfig,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            out: PathBuf::new(),
            data: DataConfig::default(),
            train: LoopConfig::default(),
            eval: EvalConfig::default(),
            model: ModelConfig::default(),
        }
    }
}

/// The `[data]` table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DataConfig {
    /// A short name (`ml-1m`, `ml-1m-sasrec`, `ml-100k`, `games`, `sports`, `toys`, `instruments`,
    /// `diginetica`) resolved in `SEQREC_DATA_DIR`, or a path to a log file.
    pub dataset: String,
    /// Log format for a path (`movielens`, `ml100k`, `csv`, `tsv`, `ssv`, `pairs`, `sequences`,
    /// `recbole`); empty: the short name's format, or detected from the file.
    pub format: String,
    /// Drop users with fewer events; `-1`: the dataset's recipe (5 for `ml-1m`, else 0).
    pub min_user_events: i64,
    /// Drop items with fewer events; `-1`: the dataset's recipe (5 for `ml-1m`, else 0).
    pub min_item_events: i64,
    /// The split; only `leave-one-out` (SASRec: last event test, second-to-last validation).
    pub split: String,
    /// Directory of prepared-dataset caches (created if missing).
    pub cache_dir: PathBuf,
}

impl Default for DataConfig {
    fn default() -> Self {
        Self {
            dataset: "ml-1m".into(),
            format: String::new(),
            min_user_events: -1,
            min_item_events: -1,
            split: "leave-one-out".into(),
            cache_dir: PathBuf::from("target/seqrec-cache"),
        }
    }
}

/// The `[train]` table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoopConfig {
    /// Maximum number of epochs.
    pub epochs: usize,
    /// Seed of the model's initialisation, shuffling, negatives and dropout.
    pub seed: u64,
    /// Evaluate on validation every this many epochs (and after the last epoch).
    pub eval_every: usize,
    /// Stop after this many evaluations without improvement of `metric` (0: never stop early).
    pub patience: usize,
    /// Validation metric that selects the best checkpoint: `ndcg@K`, `hr@K`, `recall@K`, `mrr@K`,
    /// `map@K`, `precision@K` (K one of `eval.cutoffs`) or `mrr`.
    pub metric: String,
    /// Size of the rayon thread pool (0: one thread per core). Results are reproducible for a fixed
    /// seed and thread count.
    pub threads: usize,
    /// Step decay of the learning rate (PyTorch's `MultiStepLR`): the model's learning rate is
    /// multiplied by `lr_gamma` once for every milestone `m <= epoch` (0-based epoch index, so
    /// milestone 150 lowers the rate from the 151st epoch on). Strictly increasing; empty: constant.
    pub lr_milestones: Vec<usize>,
    /// Factor applied at each of `lr_milestones` (0.1).
    pub lr_gamma: f64,
}

impl LoopConfig {
    /// The learning-rate multiplier of the 0-based `epoch`: `lr_gamma` to the number of milestones
    /// reached.
    ///
    /// ```
    /// let cfg = seqrec_train::LoopConfig {
    ///     lr_milestones: vec![100, 150],
    ///     lr_gamma: 0.1,
    ///     ..Default::default()
    /// };
    /// assert_eq!(cfg.lr_factor(99), 1.0);
    /// assert_eq!(cfg.lr_factor(100), 0.1);
    /// assert!((cfg.lr_factor(150) - 0.01).abs() < 1e-15);
    /// ```
    pub fn lr_factor(&self, epoch: usize) -> f64 {
        let reached = self.lr_milestones.iter().filter(|&&m| m <= epoch).count();
        self.lr_gamma.powi(reached as i32)
    }
}

impl Default for LoopConfig {
    fn default() -> Self {
        Self {
            epochs: 200,
            seed: 42,
            eval_every: 5,
            patience: 10,
            metric: "ndcg@10".into(),
            threads: 0,
            lr_milestones: Vec::new(),
            lr_gamma: 0.1,
        }
    }
}

/// Evaluation protocol: which candidates the target is ranked against.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Protocol {
    /// Full ranking over every item (the default; Krichene & Rendle 2020).
    Full,
    /// The target against `eval.negatives` uniformly drawn items the user never interacted with (SASRec).
    SampledUniform,
    /// The target against `eval.negatives` popularity-drawn items the user never interacted with (BERT4Rec).
    SampledPop,
}

impl Protocol {
    /// The name used in configs and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Full => "full",
            Protocol::SampledUniform => "sampled-uniform",
            Protocol::SampledPop => "sampled-pop",
        }
    }

    /// Parses `full`, `sampled-uniform` or `sampled-pop`.
    pub fn from_name(s: &str) -> Result<Self, TrainError> {
        match s {
            "full" => Ok(Protocol::Full),
            "sampled-uniform" => Ok(Protocol::SampledUniform),
            "sampled-pop" => Ok(Protocol::SampledPop),
            other => Err(TrainError::config(
                "eval.protocol",
                format!("{other:?}: expected full, sampled-uniform or sampled-pop"),
            )),
        }
    }
}

/// Which items a sampled evaluation negative must avoid, besides the target.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NegativesExclude {
    /// Every item the user interacted with anywhere in the data; the negatives are distinct (the
    /// default).
    #[default]
    Seen,
    /// Only the user's training items, drawn with replacement, so that the validation item can be a
    /// test negative: the protocol of SASRec's reference code (`util.py::evaluate`), behind the
    /// paper's figures (a drawn target is drawn again). ML-1M SASRec test NDCG@10 is about 0.004
    /// lower than with `seen`.
    Train,
}

impl NegativesExclude {
    /// The name used in configs.
    pub fn name(self) -> &'static str {
        match self {
            NegativesExclude::Seen => "seen",
            NegativesExclude::Train => "train",
        }
    }

    /// Parses `seen` or `train`.
    pub fn from_name(s: &str) -> Result<Self, TrainError> {
        match s {
            "seen" => Ok(NegativesExclude::Seen),
            "train" => Ok(NegativesExclude::Train),
            other => Err(TrainError::config(
                "eval.negatives_exclude",
                format!("{other:?}: expected seen or train"),
            )),
        }
    }
}

/// The `[eval]` table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EvalConfig {
    /// `full`, `sampled-uniform` or `sampled-pop`.
    pub protocol: Protocol,
    /// Number of sampled negatives per case for the sampled protocols.
    pub negatives: usize,
    /// Seed of the sampled negatives (fixed across runs so models are compared on the same candidates).
    pub negatives_seed: u64,
    /// `seen` (every item the user touched) or `train` (only training items, as SASRec's code).
    pub negatives_exclude: NegativesExclude,
    /// Remove the items of the user's history from the full ranking (the target itself always stays).
    pub exclude_history: bool,
    /// Metric cut-offs.
    pub cutoffs: Vec<usize>,
    /// Histories scored per batch.
    pub batch_size: usize,
}

impl Default for EvalConfig {
    fn default() -> Self {
        Self {
            protocol: Protocol::Full,
            negatives: 100,
            negatives_seed: 42,
            negatives_exclude: NegativesExclude::Seen,
            exclude_history: true,
            cutoffs: vec![5, 10, 20],
            batch_size: 256,
        }
    }
}

/// One line of documentation per config key, for `--print-config` (a test checks every key has one).
pub const FIELD_DOCS: &[(&str, &str)] = &[
    (
        "out",
        "Output directory of the run; empty: runs/<model>-<dataset>-seed<seed>.",
    ),
    (
        "data.dataset",
        "Short name (ml-1m, ml-1m-sasrec, ml-100k, games, sports, toys, instruments, diginetica) in SEQREC_DATA_DIR, or a path.",
    ),
    (
        "data.format",
        "Log format for a path (movielens, ml100k, csv, tsv, ssv, pairs, sequences, recbole); empty: known or detected.",
    ),
    (
        "data.min_user_events",
        "Drop users with fewer events; -1: the dataset's recipe (5 for ml-1m, else 0).",
    ),
    (
        "data.min_item_events",
        "Drop items with fewer events; -1: the dataset's recipe (5 for ml-1m, else 0).",
    ),
    (
        "data.split",
        "Only leave-one-out: last event test, second-to-last validation, the rest training (SASRec).",
    ),
    ("data.cache_dir", "Directory of prepared-dataset caches."),
    ("train.epochs", "Maximum number of epochs."),
    (
        "train.seed",
        "Seed of initialisation, shuffling, negatives and dropout.",
    ),
    (
        "train.eval_every",
        "Evaluate on validation every this many epochs (and after the last).",
    ),
    (
        "train.patience",
        "Stop after this many evaluations without improvement (0: never).",
    ),
    (
        "train.metric",
        "Validation metric selecting the best checkpoint: ndcg@K, hr@K, recall@K, mrr@K, map@K, precision@K, mrr.",
    ),
    (
        "train.threads",
        "Rayon threads (0: one per core); results reproducible for a fixed seed and thread count.",
    ),
    (
        "train.lr_milestones",
        "Epochs (0-based) from which the learning rate is multiplied by lr_gamma, e.g. [150]; empty: constant.",
    ),
    (
        "train.lr_gamma",
        "Learning-rate factor applied at each milestone (0.1).",
    ),
    (
        "eval.protocol",
        "full, sampled-uniform (100 uniform negatives, SASRec) or sampled-pop (100 popularity negatives, BERT4Rec).",
    ),
    (
        "eval.negatives",
        "Negatives per case for the sampled protocols.",
    ),
    ("eval.negatives_seed", "Seed of the sampled negatives."),
    (
        "eval.negatives_exclude",
        "seen (negatives avoid every item the user touched; distinct) or train (only training items, drawn with replacement, as SASRec's reference code: the validation item can be a test negative).",
    ),
    (
        "eval.exclude_history",
        "Remove the user's history from the full ranking (the target always stays).",
    ),
    ("eval.cutoffs", "Metric cut-offs K."),
    ("eval.batch_size", "Histories scored per batch."),
    (
        "model.model",
        "Which model: the other keys of [model] are its hyper-parameters (see its Config type).",
    ),
];

/// Documentation of each model's hyper-parameters: `(model, "model.<key>", doc)`. The text follows the
/// doc comments of the model's config type (`seqrec_models::SasrecConfig`, `Gru4recConfig`, `EaseConfig`).
pub const MODEL_FIELD_DOCS: &[(&str, &str, &str)] = &[
    (
        "sasrec",
        "model.hidden",
        "Embedding and hidden width d (paper: 50).",
    ),
    (
        "sasrec",
        "model.blocks",
        "Number of self-attention blocks (paper: 2).",
    ),
    (
        "sasrec",
        "model.heads",
        "Attention heads; must divide hidden (paper: 1).",
    ),
    (
        "sasrec",
        "model.maxlen",
        "History window, also the number of learned positions (ML-1M: 200).",
    ),
    (
        "sasrec",
        "model.dropout",
        "Dropout of embeddings, attention weights and feed-forward (ML-1M: 0.2).",
    ),
    ("sasrec", "model.lr", "Adam learning rate (0.001)."),
    (
        "sasrec",
        "model.betas",
        "Adam (beta1, beta2) (reference code: 0.9, 0.98).",
    ),
    (
        "sasrec",
        "model.adam_eps",
        "Adam epsilon, outside the square root as in PyTorch (1e-8).",
    ),
    (
        "sasrec",
        "model.batch_size",
        "Sequences per training batch (128).",
    ),
    (
        "sasrec",
        "model.l2_emb",
        "Coefficient of ||item_emb||_2 added to the loss (0).",
    ),
    (
        "sasrec",
        "model.loss",
        "\"bce\" (one sampled negative per position, the paper), \"ce\" (full softmax, SASRec+), \"gbce\" (gSASRec) or \"sampled_softmax\" (log-Q corrected).",
    ),
    (
        "sasrec",
        "model.negatives",
        "Negatives per position of gbce and sampled_softmax (256; bce always draws 1).",
    ),
    (
        "sasrec",
        "model.gbce_t",
        "gBCE calibration t in [0, 1] (0.75; 0 = BCE, 1 = fully calibrated).",
    ),
    (
        "sasrec",
        "model.sampler",
        "Negatives of sampled_softmax: \"uniform\" or \"popularity\" (training counts), user's items excluded.",
    ),
    (
        "sasrec",
        "model.tied_output",
        "Score with the input item table (true, SASRec) or a separate output_emb table (false).",
    ),
    (
        "sasrec",
        "model.clip_grad_norm",
        "Clip the global gradient norm to this value (absent: no clipping).",
    ),
    (
        "sasrec",
        "model.embedding_std",
        "Std of the normal draw of the item, position and output tables (absent: Xavier normal; 1.0: PyTorch nn.Embedding).",
    ),
    (
        "sasrec",
        "model.scale_embeddings",
        "Multiply input item embeddings by sqrt(hidden) (true, SASRec's code; false, the gSASRec PyTorch repository).",
    ),
    (
        "sasrec",
        "model.positions",
        "Position numbering: slot (SASRec's code: the last item is position maxlen-1) or first_item (right padding, Klenitskiy & Vasilev: the oldest item is 0).",
    ),
    (
        "sasrec",
        "model.output_projection",
        "Project the attention heads with out_proj (true, SASRec.pytorch and PyTorch nn.MultiheadAttention; false, the SASRec paper and its TensorFlow code, which have no W_O).",
    ),
    (
        "gsasrec",
        "model.hidden",
        "Embedding and hidden width d (64).",
    ),
    ("gsasrec", "model.blocks", "Self-attention blocks (2)."),
    (
        "gsasrec",
        "model.heads",
        "Attention heads; must divide hidden (1).",
    ),
    (
        "gsasrec",
        "model.maxlen",
        "History window, also the number of learned positions (200).",
    ),
    (
        "gsasrec",
        "model.dropout",
        "Dropout of embeddings, attention weights and feed-forward (0.1).",
    ),
    ("gsasrec", "model.lr", "Adam learning rate (0.001)."),
    (
        "gsasrec",
        "model.betas",
        "Adam (beta1, beta2) (torch.optim.Adam defaults: 0.9, 0.999).",
    ),
    (
        "gsasrec",
        "model.adam_eps",
        "Adam epsilon, outside the square root as in PyTorch (1e-8).",
    ),
    (
        "gsasrec",
        "model.batch_size",
        "Sequences per training batch (128).",
    ),
    (
        "gsasrec",
        "model.l2_emb",
        "Coefficient of ||item_emb||_2 added to the loss (0).",
    ),
    (
        "gsasrec",
        "model.loss",
        "\"gbce\" (default), or any SASRec loss: \"bce\", \"ce\", \"sampled_softmax\".",
    ),
    (
        "gsasrec",
        "model.negatives",
        "Uniform negatives per position, the user's items excluded (256).",
    ),
    (
        "gsasrec",
        "model.gbce_t",
        "gBCE calibration t in [0, 1] (0.75; 0 = BCE, 1 = fully calibrated).",
    ),
    (
        "gsasrec",
        "model.sampler",
        "Negatives of sampled_softmax: \"uniform\" or \"popularity\".",
    ),
    (
        "gsasrec",
        "model.tied_output",
        "Score with the input item table (true) or a separate output_emb table (false).",
    ),
    (
        "gsasrec",
        "model.clip_grad_norm",
        "Clip the global gradient norm to this value (absent: no clipping).",
    ),
    (
        "gsasrec",
        "model.embedding_std",
        "Std of the normal draw of the item, position and output tables (absent: Xavier normal; 1.0: PyTorch nn.Embedding).",
    ),
    (
        "gsasrec",
        "model.scale_embeddings",
        "Multiply input item embeddings by sqrt(hidden) (true, SASRec's code; false, the gSASRec PyTorch repository).",
    ),
    (
        "gsasrec",
        "model.positions",
        "Position numbering: slot (SASRec's code: the last item is position maxlen-1) or first_item (right padding, Klenitskiy & Vasilev: the oldest item is 0).",
    ),
    (
        "gsasrec",
        "model.output_projection",
        "Project the attention heads with out_proj (true, SASRec.pytorch and PyTorch nn.MultiheadAttention; false, the SASRec paper and its TensorFlow code, which have no W_O).",
    ),
    (
        "bert4rec",
        "model.hidden",
        "Embedding and hidden width d (Klenitskiy & Vasilev, ML-1M: 64).",
    ),
    (
        "bert4rec",
        "model.blocks",
        "Transformer blocks, post-LN, GELU, bidirectional (2).",
    ),
    (
        "bert4rec",
        "model.heads",
        "Attention heads; must divide hidden (2).",
    ),
    ("bert4rec", "model.ff", "Feed-forward width (256 = 4d)."),
    (
        "bert4rec",
        "model.maxlen",
        "Window length, also the number of learned positions (200).",
    ),
    (
        "bert4rec",
        "model.dropout",
        "Dropout of embeddings, attention weights and residual branches (0.1).",
    ),
    (
        "bert4rec",
        "model.mask_prob",
        "Probability that a training position is replaced by [MASK]; at least one per row (0.2).",
    ),
    (
        "bert4rec",
        "model.head_transform",
        "The paper's output projection LN(GELU(W h + b)) before the tied item table (true).",
    ),
    (
        "bert4rec",
        "model.positions",
        "Position numbering: slot (the masked last slot is position maxlen-1) or first_item (right padding, Klenitskiy & Vasilev: the oldest item is 0).",
    ),
    (
        "bert4rec",
        "model.layer_norm_eps",
        "Layer-norm epsilon (Hugging Face BERT: 1e-12).",
    ),
    ("bert4rec", "model.lr", "Adam learning rate (0.001)."),
    (
        "bert4rec",
        "model.betas",
        "Adam (beta1, beta2) (0.9, 0.999).",
    ),
    (
        "bert4rec",
        "model.adam_eps",
        "Adam epsilon, outside the square root as in PyTorch (1e-8).",
    ),
    (
        "bert4rec",
        "model.weight_decay",
        "L2 weight decay added to the gradient (0).",
    ),
    (
        "bert4rec",
        "model.batch_size",
        "Sequences per training batch (128).",
    ),
    (
        "bert4rec",
        "model.clip_grad_norm",
        "Clip the global gradient norm to this value (absent: no clipping).",
    ),
    (
        "gru4rec",
        "model.embedding_dim",
        "Width of the input item embedding (must equal hidden_size when constrained).",
    ),
    ("gru4rec", "model.hidden_size", "GRU hidden units (64)."),
    ("gru4rec", "model.num_layers", "Stacked GRU layers (1)."),
    (
        "gru4rec",
        "model.constrained_embedding",
        "Share the input embedding with the output item embedding.",
    ),
    (
        "gru4rec",
        "model.dropout_embedding",
        "Dropout on the input embeddings, in [0, 1).",
    ),
    (
        "gru4rec",
        "model.dropout_hidden",
        "Dropout on the GRU output before the output layer, in [0, 1).",
    ),
    (
        "gru4rec",
        "model.loss",
        "\"ce\" (full softmax), \"sampled_ce\" (in-batch + popularity negatives, log-Q) or \"bpr_max\" (same candidates, BPR-max with bpreg).",
    ),
    (
        "gru4rec",
        "model.n_negatives",
        "Shared negatives per batch for sampled_ce (GRU4Rec's n_sample).",
    ),
    (
        "gru4rec",
        "model.sample_alpha",
        "Popularity exponent of the negative sampler, count^alpha.",
    ),
    (
        "gru4rec",
        "model.logq",
        "Apply the log-Q correction to the sampled softmax.",
    ),
    (
        "gru4rec",
        "model.bpreg",
        "Score regularisation of bpr_max (GRU4Rec's bpreg, 1.0).",
    ),
    (
        "gru4rec",
        "model.batching",
        "\"windows\" (last maxlen events per user, every position a target) or \"session_parallel\" (GRU4Rec lanes, state reset per session, one-step BPTT).",
    ),
    (
        "gru4rec",
        "model.batch_size",
        "Training sequences per batch, or lanes with session_parallel (128).",
    ),
    (
        "gru4rec",
        "model.maxlen",
        "Window length: the last maxlen items of each user (200).",
    ),
    (
        "gru4rec",
        "model.lr",
        "Adam learning rate (1e-2; 1e-3 learns far slower on ML-1M).",
    ),
    ("gru4rec", "model.beta1", "Adam beta1 (0.9)."),
    ("gru4rec", "model.beta2", "Adam beta2 (0.999)."),
    (
        "gru4rec",
        "model.eps",
        "Adam eps, outside the square root as in PyTorch (1e-8).",
    ),
    (
        "gru4rec",
        "model.weight_decay",
        "L2 weight decay added to the gradient (0).",
    ),
    (
        "gru4rec",
        "model.clip_grad_norm",
        "Clip the global gradient norm to this value (absent: no clipping).",
    ),
    (
        "ease",
        "model.lambda",
        "L2 regularisation added to the diagonal of X^T X, > 0 (250, tuned on ML-1M validation). The closed form is computed by the first epoch, after which training stops by itself.",
    ),
    (
        "ease",
        "model.max_history",
        "History items scored: 0 = the whole history (default), else the most recent max_history.",
    ),
    (
        "lstm_attn",
        "model.embedding_dim",
        "Item embedding width d, also the MLP output width (64).",
    ),
    ("lstm_attn", "model.hidden_size", "LSTM hidden units (64)."),
    ("lstm_attn", "model.num_layers", "Stacked LSTM layers (1)."),
    (
        "lstm_attn",
        "model.attention_dim",
        "Width of the additive attention projection (64).",
    ),
    (
        "lstm_attn",
        "model.mlp_hidden",
        "Hidden width of the MLP head on [pooled; last state] (128).",
    ),
    (
        "lstm_attn",
        "model.tied",
        "Score items with the input item embedding instead of a separate output table (true).",
    ),
    (
        "lstm_attn",
        "model.context",
        "Context fusion: \"none\", \"concat\" (LSTM input), \"add\" (LSTM input) or \"attention\" (context-conditioned pooling).",
    ),
    (
        "lstm_attn",
        "model.context_dim",
        "Width of the time-gap and position embeddings for concat/attention (16; add uses embedding_dim).",
    ),
    (
        "lstm_attn",
        "model.n_time_buckets",
        "Time-gap log buckets incl. padding and first event (24, >= 3).",
    ),
    (
        "lstm_attn",
        "model.max_position",
        "Positions from the sequence start are capped here (512).",
    ),
    (
        "lstm_attn",
        "model.dropout_embedding",
        "Dropout on the LSTM input, in [0, 1).",
    ),
    (
        "lstm_attn",
        "model.dropout_hidden",
        "Dropout on the MLP input, in [0, 1).",
    ),
    (
        "lstm_attn",
        "model.batch_size",
        "Training sequences per batch (128).",
    ),
    (
        "lstm_attn",
        "model.maxlen",
        "Window length: the last maxlen events of each user, every position a target (200).",
    ),
    ("lstm_attn", "model.lr", "Adam learning rate (1e-2)."),
    ("lstm_attn", "model.beta1", "Adam beta1 (0.9)."),
    ("lstm_attn", "model.beta2", "Adam beta2 (0.999)."),
    (
        "lstm_attn",
        "model.eps",
        "Adam eps, outside the square root as in PyTorch (1e-8).",
    ),
    (
        "lstm_attn",
        "model.weight_decay",
        "L2 weight decay added to the gradient (0).",
    ),
    (
        "lstm_attn",
        "model.clip_grad_norm",
        "Clip the global gradient norm to this value (5; absent: no clipping).",
    ),
];

/// The documentation of config key `full` (`"train.epochs"`, `"model.hidden"`) when the model is `model`.
pub fn field_doc(model: &str, full: &str) -> Option<&'static str> {
    FIELD_DOCS
        .iter()
        .find(|(k, _)| *k == full)
        .map(|(_, d)| *d)
        .or_else(|| {
            MODEL_FIELD_DOCS
                .iter()
                .find(|(m, k, _)| *m == model && *k == full)
                .map(|(_, _, d)| *d)
        })
}

impl TrainConfig {
    /// Parses a TOML document and validates it.
    pub fn from_toml_str(text: &str) -> Result<Self, TrainError> {
        let cfg: TrainConfig =
            toml::from_str(text).map_err(|e| TrainError::Parse(e.to_string()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Reads and validates a TOML file.
    pub fn from_file(path: &std::path::Path) -> Result<Self, TrainError> {
        let text = std::fs::read_to_string(path).map_err(|e| TrainError::io(path, e))?;
        Self::from_toml_str(&text).map_err(|e| match e {
            TrainError::Parse(m) => TrainError::Parse(format!("{}: {m}", path.display())),
            other => other,
        })
    }

    /// The config as TOML.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a TrainConfig always serialises to TOML")
    }

    /// The config as TOML with a `#` comment above each key (from [`FIELD_DOCS`]).
    pub fn to_commented_toml(&self) -> String {
        let mut out = String::from("# seqrec training config (cargo xtask train --config FILE)\n");
        let mut section = String::new();
        for line in self.to_toml().lines() {
            let t = line.trim();
            if t.starts_with('[') {
                section = t.trim_matches(|c| c == '[' || c == ']').to_owned();
                if !out.ends_with("\n\n") {
                    out.push('\n');
                }
            } else if let Some((key, _)) = t.split_once(" = ") {
                let full = if section.is_empty() {
                    key.to_owned()
                } else {
                    format!("{section}.{key}")
                };
                if let Some(doc) = field_doc(self.model.name(), &full) {
                    out.push_str(&format!("# {doc}\n"));
                }
            }
            out.push_str(line);
            out.push('\n');
        }
        out
    }

    /// Applies one `key=value` override (`train.epochs=10`, `model.hidden=64`, `data.dataset=games`)
    /// and re-validates. The value is TOML (`10`, `true`, `[5, 10]`, `"x"`); a bare word is a string.
    /// Setting `model.model` switches the model and resets its hyper-parameters to that model's defaults.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), TrainError> {
        let parsed: toml::Value = match toml::from_str::<toml::Table>(&format!("v = {value}")) {
            Ok(mut t) => t.remove("v").expect("parsed key v"),
            Err(_) => toml::Value::String(value.to_owned()),
        };
        let mut doc =
            toml::Value::try_from(&*self).map_err(|e| TrainError::Parse(e.to_string()))?;
        let path: Vec<&str> = key.split('.').collect();
        if path.iter().any(|p| p.is_empty()) {
            return Err(TrainError::Parse(format!(
                "bad key {key:?}: expected e.g. train.epochs"
            )));
        }
        if key == "model.model" {
            let name = parsed.as_str().unwrap_or_default();
            self.model = ModelConfig::default_for(name).ok_or_else(|| {
                TrainError::config(
                    "model.model",
                    format!(
                        "{name:?}: expected one of {}",
                        ModelConfig::NAMES.join(", ")
                    ),
                )
            })?;
            return self.validate();
        }
        let mut node = &mut doc;
        for (i, p) in path.iter().enumerate() {
            let table = node.as_table_mut().ok_or_else(|| {
                TrainError::Parse(format!("{key:?}: {} is not a table", path[..i].join(".")))
            })?;
            if i + 1 == path.len() {
                table.insert((*p).to_owned(), parsed.clone());
                break;
            }
            node = table.get_mut(*p).ok_or_else(|| {
                TrainError::Parse(format!(
                    "unknown config table {:?} in {key:?}",
                    path[..=i].join(".")
                ))
            })?;
        }
        let cfg: TrainConfig = doc
            .try_into()
            .map_err(|e: toml::de::Error| TrainError::Parse(format!("--set {key}={value}: {e}")))?;
        cfg.validate()?;
        *self = cfg;
        Ok(())
    }

    /// The validation metric `train.metric` names.
    pub fn metric(&self) -> Result<Metric, TrainError> {
        parse_metric(&self.train.metric)
    }

    /// The metric cut-offs.
    pub fn cutoffs(&self) -> Result<Cutoffs, TrainError> {
        Cutoffs::new(self.eval.cutoffs.clone()).map_err(|e| {
            TrainError::config("eval.cutoffs", format!("{:?}: {e}", self.eval.cutoffs))
        })
    }

    /// The run directory: `out`, or `runs/<model>-<dataset>-seed<seed>` when empty.
    pub fn run_dir(&self) -> PathBuf {
        if self.out.as_os_str().is_empty() {
            let data = std::path::Path::new(&self.data.dataset)
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| self.data.dataset.clone());
            PathBuf::from(format!(
                "runs/{}-{}-seed{}",
                self.model.name(),
                data,
                self.train.seed
            ))
        } else {
            self.out.clone()
        }
    }

    /// Checks every field once; the error names the field and the value.
    pub fn validate(&self) -> Result<(), TrainError> {
        if self.data.dataset.trim().is_empty() {
            return Err(TrainError::config("data.dataset", "must not be empty"));
        }
        if !self.data.format.is_empty() {
            seqrec_data::Format::from_name(&self.data.format)
                .map_err(|e| TrainError::config("data.format", e))?;
        }
        for (field, v) in [
            ("data.min_user_events", self.data.min_user_events),
            ("data.min_item_events", self.data.min_item_events),
        ] {
            if v < -1 {
                return Err(TrainError::config(
                    field,
                    format!("{v}: must be -1 (recipe) or >= 0"),
                ));
            }
        }
        if self.data.split != "leave-one-out" {
            return Err(TrainError::config(
                "data.split",
                format!("{:?}: only \"leave-one-out\" is supported", self.data.split),
            ));
        }
        if self.train.epochs == 0 {
            return Err(TrainError::config("train.epochs", "0: must be at least 1"));
        }
        if self.train.eval_every == 0 {
            return Err(TrainError::config(
                "train.eval_every",
                "0: must be at least 1",
            ));
        }
        if self.train.lr_milestones.windows(2).any(|w| w[0] >= w[1]) {
            return Err(TrainError::config(
                "train.lr_milestones",
                format!(
                    "{:?}: must be strictly increasing",
                    self.train.lr_milestones
                ),
            ));
        }
        if !(self.train.lr_gamma.is_finite() && self.train.lr_gamma > 0.0) {
            return Err(TrainError::config(
                "train.lr_gamma",
                format!("{}: must be finite and > 0", self.train.lr_gamma),
            ));
        }
        if self.eval.negatives == 0 && self.eval.protocol != Protocol::Full {
            return Err(TrainError::config(
                "eval.negatives",
                "0: sampled protocols need negatives",
            ));
        }
        if self.eval.batch_size == 0 {
            return Err(TrainError::config(
                "eval.batch_size",
                "0: must be at least 1",
            ));
        }
        let cutoffs = self.cutoffs()?;
        let metric = self.metric()?;
        let k = match metric {
            Metric::Mrr => None,
            Metric::Hr(k)
            | Metric::Recall(k)
            | Metric::Ndcg(k)
            | Metric::MrrAt(k)
            | Metric::Precision(k)
            | Metric::Map(k) => Some(k),
        };
        if let Some(k) = k
            && !cutoffs.as_slice().contains(&k)
        {
            return Err(TrainError::config(
                "train.metric",
                format!(
                    "{:?}: cut-off {k} is not in eval.cutoffs {:?}",
                    self.train.metric,
                    cutoffs.as_slice()
                ),
            ));
        }
        self.model
            .validate()
            .map_err(|e| TrainError::config("model", e.to_string()))
    }
}

/// Parses `ndcg@10`, `hr@10`, `recall@10`, `mrr@10`, `map@10`, `precision@10` or `mrr` (case-insensitive).
///
/// ```
/// use seqrec_metrics::Metric;
/// assert_eq!(seqrec_train::parse_metric("NDCG@10").unwrap(), Metric::Ndcg(10));
/// assert!(seqrec_train::parse_metric("ndcg@0").is_err());
/// ```
pub fn parse_metric(s: &str) -> Result<Metric, TrainError> {
    let lower = s.trim().to_ascii_lowercase();
    let bad = |why: &str| TrainError::config("train.metric", format!("{s:?}: {why}"));
    if lower == "mrr" {
        return Ok(Metric::Mrr);
    }
    let (name, k) = lower
        .split_once('@')
        .ok_or_else(|| bad("expected NAME@K (ndcg@10) or mrr"))?;
    let k: usize = k.parse().map_err(|_| bad("K must be a positive integer"))?;
    if k == 0 {
        return Err(bad("K must be a positive integer"));
    }
    Ok(match name {
        "ndcg" => Metric::Ndcg(k),
        "hr" | "hit" => Metric::Hr(k),
        "recall" => Metric::Recall(k),
        "mrr" => Metric::MrrAt(k),
        "map" => Metric::Map(k),
        "precision" => Metric::Precision(k),
        _ => {
            return Err(bad(
                "unknown metric: expected ndcg, hr, recall, mrr, map or precision",
            ));
        }
    })
}
