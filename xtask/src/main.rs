//! `cargo xtask <command>`: the seqrec task runner.

mod data;

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
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Data(cmd) => data::run(cmd),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
