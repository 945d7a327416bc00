//! `cargo xtask <command>`: the seqrec task runner.

mod compare;
mod data;
mod gradcheck;

mod eval;
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
        Command::Compare(args) => compare::run(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
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
