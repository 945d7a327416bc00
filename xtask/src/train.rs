//! `cargo xtask train`: train a model from a TOML config with command-line overrides.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Args;
use seqrec_train::{ModelConfig, RunOptions, StopReason, TrainConfig, run};

/// Train a model and write a run directory (config.toml, history.jsonl, metrics.json, curve.png,
/// best/, last/).
///
/// Settings apply in this order: the config file (or the defaults), the flags, then each --set.
#[derive(Args)]
pub struct TrainArgs {
    /// TOML config file (see --print-config for every key with its documentation).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Model name (`model.model`): resets the [model] table to that model's defaults.
    #[arg(long)]
    model: Option<String>,
    /// Dataset short name (ml-1m, ml-1m-sasrec, ml-100k, games, sports, toys, instruments,
    /// diginetica) in SEQREC_DATA_DIR, or a path (`data.dataset`).
    #[arg(long)]
    data: Option<String>,
    /// Maximum epochs (`train.epochs`).
    #[arg(long)]
    epochs: Option<usize>,
    /// Seed (`train.seed`).
    #[arg(long)]
    seed: Option<u64>,
    /// Validate every N epochs (`train.eval_every`).
    #[arg(long)]
    eval_every: Option<usize>,
    /// Early-stopping patience in evaluations (`train.patience`, 0 = never).
    #[arg(long)]
    patience: Option<usize>,
    /// Validation metric selecting the best checkpoint, e.g. ndcg@10 (`train.metric`).
    #[arg(long)]
    metric: Option<String>,
    /// Rayon threads (`train.threads`, 0 = one per core).
    #[arg(long)]
    threads: Option<usize>,
    /// Evaluation protocol: full, sampled-uniform or sampled-pop (`eval.protocol`).
    #[arg(long)]
    protocol: Option<String>,
    /// Run directory (`out`; default runs/<model>-<dataset>-seed<seed>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Any config key, e.g. --set model.hidden=64 --set eval.cutoffs=[5,10] (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Print the resolved config as commented TOML and exit.
    #[arg(long)]
    print_config: bool,
    /// Continue the run in this directory from its last/ checkpoint (its config.toml, plus any
    /// overrides given here, e.g. more --epochs).
    #[arg(long, value_name = "RUN")]
    resume: Option<PathBuf>,
    /// No progress bar or per-evaluation lines (the bar is also hidden when stderr is not a terminal).
    #[arg(long)]
    quiet: bool,
}

impl TrainArgs {
    fn resolve(&self) -> anyhow::Result<TrainConfig> {
        let mut cfg = if let Some(dir) = &self.resume {
            run::resume_config(dir)
                .with_context(|| format!("reading the run to resume in {}", dir.display()))?
        } else if let Some(path) = &self.config {
            TrainConfig::from_file(path)?
        } else {
            TrainConfig::default()
        };
        let mut sets: Vec<(String, String)> = Vec::new();
        let mut push = |k: &str, v: Option<String>| {
            if let Some(v) = v {
                sets.push((k.to_owned(), v));
            }
        };
        push("model.model", self.model.clone());
        push("data.dataset", self.data.as_ref().map(|d| toml_string(d)));
        push("train.epochs", self.epochs.map(|v| v.to_string()));
        push("train.seed", self.seed.map(|v| v.to_string()));
        push("train.eval_every", self.eval_every.map(|v| v.to_string()));
        push("train.patience", self.patience.map(|v| v.to_string()));
        push("train.metric", self.metric.as_ref().map(|d| toml_string(d)));
        push("train.threads", self.threads.map(|v| v.to_string()));
        push(
            "eval.protocol",
            self.protocol.as_ref().map(|d| toml_string(d)),
        );
        push(
            "out",
            self.out
                .as_ref()
                .map(|d| toml_string(&d.display().to_string())),
        );
        for kv in &self.set {
            let (k, v) = kv
                .split_once('=')
                .with_context(|| format!("--set {kv:?}: expected KEY=VALUE"))?;
            sets.push((k.trim().to_owned(), v.trim().to_owned()));
        }
        for (k, v) in sets {
            cfg.set(&k, &v)
                .with_context(|| format!("applying {k}={v}"))?;
        }
        if let Some(dir) = &self.resume {
            cfg.out = dir.clone();
        } else {
            cfg.out = cfg.run_dir();
        }
        Ok(cfg)
    }
}

/// A TOML string literal (paths and names may contain characters TOML would not take bare).
fn toml_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Runs `cargo xtask train`.
pub fn run(args: TrainArgs) -> anyhow::Result<()> {
    let cfg = args.resolve()?;
    if args.print_config {
        print!("{}", cfg.to_commented_toml());
        return Ok(());
    }
    let opts = RunOptions {
        quiet: args.quiet,
        stop_after_epoch: None,
    };
    eprintln!(
        "training {} on {} into {} (models: {})",
        cfg.model.name(),
        cfg.data.dataset,
        cfg.out.display(),
        ModelConfig::NAMES.join(", ")
    );
    let factory = run::ModelFactory::from_config(&cfg);
    let summary = run::train_with(&cfg, &factory, &opts, args.resume.is_some())?;
    println!("{}", summary.table);
    println!("run directory: {}", summary.dir.display());
    match summary.stop {
        StopReason::NonFinite { message } => bail!(
            "training diverged ({message}); test metrics above are from the best checkpoint, \
             {}/last holds the last good state",
            summary.dir.display()
        ),
        StopReason::EarlyStopped { epoch } => {
            println!("early stopping after epoch {epoch}");
            Ok(())
        }
        _ => Ok(()),
    }
}
