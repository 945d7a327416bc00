//! `cargo xtask <command>`: the seqrec task runner.

mod data;
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

#[derive(Subcommand)]
enum Command {
    /// Read, inspect and prepare interaction logs.
    #[command(subcommand)]
    Data(data::DataCommand),
    /// Train a model (TOML config + overrides) and write a run directory.
    Train(Box<train::TrainArgs>),
    /// Re-evaluate a run's best checkpoint on the test split (full or sampled protocol).
    Eval(eval::EvalArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Data(cmd) => data::run(cmd),
        Command::Train(args) => train::run(*args),
        Command::Eval(args) => eval::run(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
