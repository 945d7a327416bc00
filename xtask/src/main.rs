//! `cargo xtask <command>`: the seqrec task runner.

mod compare;
mod data;
mod gradcheck;

mod eval;
mod recommend;
mod serve;
mod train;

use clap::{Parser, Subcommand};

/// seqrec: sequential recommendation, from interaction logs to next-item recommendations.
#[derive(Parser)]
#[command(name = "cargo xtask", version, arg_required_else_help = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once per process: the size difference between variants costs nothing worth boxing for.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Read, inspect and prepare interaction logs.
    #[command(subcommand)]
    Data(data::DataCommand),
    /// Check every layer's and loss's gradients by finite differences and print the table of errors.
    Gradcheck(gradcheck::GradcheckArgs),
    /// Run what CI runs: `cargo fmt --check`, clippy with `-D warnings`, the test suite (`.ci/run`).
    Ci,

    /// Train a model (TOML config + overrides) and write a run directory.
    Train(Box<train::TrainArgs>),
    /// Re-evaluate a run's best checkpoint on the test split (full or sampled protocol).
    Eval(eval::EvalArgs),
    /// Recommend the next items for a user or a history, optionally explained.
    Recommend(Box<recommend::RecommendArgs>),
    /// Serve a run over HTTP (recommendations, user events, metrics, hot reload).
    Serve(Box<seqrec_serve::cli::ServeArgs>),
    /// Compare two runs (or per-user CSVs) user by user: difference with 95% CI, t-test, Wilcoxon.
    Compare(compare::CompareArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Data(cmd) => data::run(cmd),
        Command::Gradcheck(args) => gradcheck::run(args),
        Command::Ci => run_ci(),

        Command::Train(args) => train::run(*args),
        Command::Eval(args) => eval::run(args),
        Command::Recommend(args) => recommend::run(*args),
        Command::Serve(args) => serve::run(*args),
        Command::Compare(args) => compare::run(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {}", error_chain(&err));
            std::process::ExitCode::FAILURE
        }
    }
}

/// Runs `.ci/run` from the workspace root.
fn run_ci() -> anyhow::Result<()> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root");
    let status = std::process::Command::new("bash")
        .arg(root.join(".ci/run"))
        .current_dir(root)
        .status()?;
    anyhow::ensure!(status.success(), ".ci/run failed ({status})");
    Ok(())
}

/// The error and its causes on one line, `outer: inner: ...`, skipping a cause whose text the line
/// already contains (library errors often embed their source in their own message).
fn error_chain(err: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

#[cfg(test)]
mod tests {
    use super::error_chain;
    #[test]
    fn error_chain_names_each_cause_once() {
        let inner = std::io::Error::other("disk full");
        let outer = anyhow::Error::new(inner).context("writing x.bin");
        assert_eq!(error_chain(&outer), "writing x.bin: disk full");
        // A wrapper whose message already embeds its source is not repeated.
        #[derive(Debug, thiserror::Error)]
        #[error("model: {0}")]
        struct Wrapper(#[source] std::io::Error);
        let err = anyhow::Error::new(Wrapper(std::io::Error::other("bad shape")));
        assert_eq!(error_chain(&err), "model: bad shape");
    }
}
