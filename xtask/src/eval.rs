//! `cargo xtask eval`: re-evaluate the best checkpoint of a run on the test cases.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use seqrec_models::Precision;
use seqrec_train::{NegativesExclude, Protocol, format_table, run};

/// Evaluate the best checkpoint of a run on the test split, next to MostPop.
#[derive(Args)]
pub struct EvalArgs {
    /// The run directory (written by `cargo xtask train`).
    #[arg(long)]
    run: PathBuf,
    /// full (all items), sampled-uniform (100 uniform negatives, SASRec) or sampled-pop
    /// (100 popularity negatives, BERT4Rec); default: the run's eval.protocol.
    #[arg(long)]
    protocol: Option<String>,
    /// Number of sampled negatives (sampled protocols).
    #[arg(long)]
    negatives: Option<usize>,
    /// Which items the sampled negatives avoid: seen (every item the user touched; distinct) or
    /// train (only training items, with replacement, as SASRec's reference code); default: the
    /// run's eval.negatives_exclude.
    #[arg(long, value_name = "seen|train")]
    negatives_exclude: Option<String>,
    /// Keep the user's history in the full ranking (excluded by default).
    #[arg(long)]
    include_history: bool,
    /// Arithmetic of the model's scoring: f32 (default) or bf16 (SASRec on a CPU with Intel AMX,
    /// as `cargo xtask serve --precision bf16` serves it).
    #[arg(long, default_value = "f32")]
    precision: Precision,
    /// Write per-user ranks and metrics of the model to this CSV file.
    #[arg(long, value_name = "CSV")]
    per_user: Option<PathBuf>,
}

/// Runs `cargo xtask eval`.
pub fn run(args: EvalArgs) -> anyhow::Result<()> {
    let protocol = args
        .protocol
        .as_deref()
        .map(Protocol::from_name)
        .transpose()?;
    let negatives_exclude = args
        .negatives_exclude
        .as_deref()
        .map(NegativesExclude::from_name)
        .transpose()?;
    let mut described = String::new();
    let (model, mostpop, exp) = run::evaluate_run(&args.run, None, |s| {
        if let Some(p) = protocol {
            s.protocol = p;
        }
        if let Some(n) = args.negatives {
            s.negatives = n;
        }
        if let Some(e) = negatives_exclude {
            s.negatives_exclude = e;
        }
        if args.include_history {
            s.exclude_history = false;
        }
        s.precision = args.precision;
        described = s.describe(0);
    })?;
    let cfg = run::resume_config(&args.run)?;
    let title = format!(
        "test of {} ({}; {} users, {} items)",
        args.run.display(),
        described.replace("all 0 items", &format!("all {} items", exp.ds.n_items())),
        model.metrics.n_users,
        exp.ds.n_items()
    );
    println!(
        "{}",
        format_table(&title, &[(cfg.model.name(), &model), ("MostPop", &mostpop)])
    );
    println!(
        "scored and ranked {} users in {:.3} s ({}, {})",
        model.metrics.n_users,
        model.seconds,
        cfg.model.name(),
        args.precision
    );
    if let Some(path) = &args.per_user {
        let f =
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
        model
            .metrics
            .write_per_user_csv(std::io::BufWriter::new(f))
            .with_context(|| format!("writing {}", path.display()))?;
        println!("per-user metrics: {}", path.display());
    }
    Ok(())
}
