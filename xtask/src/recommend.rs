//! `cargo xtask recommend`: top-k recommendations (with explanations) from a run's best checkpoint.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use seqrec_serve::{LoadOptions, RecOptions, Recommender};

/// Recommend the next items for a user of the run's dataset or for a given history.
#[derive(Args)]
#[command(group = clap::ArgGroup::new("who").required(true).args(["user", "history"]))]
pub struct RecommendArgs {
    /// The run directory (written by `cargo xtask train`).
    #[arg(long)]
    run: PathBuf,
    /// A user id of the run's dataset: recommends after their whole history.
    #[arg(long)]
    user: Option<String>,
    /// Item ids (original, as in the log), oldest first, comma-separated.
    #[arg(long, value_delimiter = ',')]
    history: Option<Vec<String>>,
    /// Number of recommendations.
    #[arg(short, long, default_value_t = 10)]
    k: usize,
    /// Keep items of the history in the ranking (they are excluded by default).
    #[arg(long)]
    include_seen: bool,
    /// Explain each recommendation: occlusion (score drop without each history item) and, for
    /// attention models, the last layer's attention weights.
    #[arg(long)]
    explain: bool,
    /// History items listed per explanation.
    #[arg(long, default_value_t = 3)]
    explain_top: usize,
    /// MovieLens movies.dat (Latin-1) for titles.
    #[arg(long)]
    items: Option<PathBuf>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// Runs `cargo xtask recommend`.
pub fn run(args: RecommendArgs) -> anyhow::Result<()> {
    let mut rec = Recommender::load(
        &args.run,
        &LoadOptions {
            items: args.items.clone(),
            ..LoadOptions::default()
        },
    )?;
    let cat = rec.catalog().clone();
    let history: Vec<u32> = match (&args.user, &args.history) {
        (Some(u), _) => rec.user_history(u)?.to_vec(),
        (None, Some(h)) => cat.resolve(h)?,
        (None, None) => unreachable!("clap requires --user or --history"),
    };
    let k = rec.check_k(args.k as i64)?;
    let recs = rec
        .recommend(
            &history,
            RecOptions {
                k,
                exclude_seen: !args.include_seen,
            },
        )
        .context("recommend")?;
    let explanations = if args.explain {
        let items: Vec<u32> = recs.iter().map(|r| r.item).collect();
        Some(rec.explain(&history, &items)?)
    } else {
        None
    };
    let name = |i: u32| {
        let id = cat.original(i).unwrap_or("?");
        match cat.title(i) {
            Some(t) => format!("{id} {t}"),
            None => id.to_owned(),
        }
    };
    if args.json {
        let ans = seqrec_serve::engine::Answer { recs, explanations };
        println!(
            "{}",
            serde_json::to_string_pretty(&seqrec_serve::api::encode_answer(
                &cat,
                history.len(),
                &ans
            ))?
        );
        return Ok(());
    }
    let used = history.len().min(cat.max_history());
    println!(
        "{} | history of {} items{} | top {}{}",
        cat.model_id(),
        history.len(),
        if history.len() > used {
            format!(" (the model reads the last {used})")
        } else {
            String::new()
        },
        recs.len(),
        if args.include_seen {
            ""
        } else {
            ", seen items excluded"
        }
    );
    for (i, r) in recs.iter().enumerate() {
        println!("{:>3}. {:>9.4}  {}", i + 1, r.score, name(r.item));
        if let Some(ex) = explanations.as_ref().map(|e| &e[i]) {
            for c in ex.occlusion.iter().take(args.explain_top) {
                println!(
                    "       occlusion {:>+8.4}  #{:<4} {}",
                    c.value,
                    c.position,
                    name(c.item)
                );
            }
            if let Some(att) = &ex.attention {
                for c in att.iter().take(args.explain_top) {
                    println!(
                        "       attention {:>8.4}  #{:<4} {}",
                        c.value,
                        c.position,
                        name(c.item)
                    );
                }
            }
        }
    }
    Ok(())
}
