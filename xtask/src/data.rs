//! `cargo xtask data ...`: stats and prepare (in progress).

use clap::Subcommand;

/// Data subcommands.
#[derive(Subcommand)]
pub enum DataCommand {
    /// Print statistics of an interaction log.
    Stats {
        /// The log file.
        file: std::path::PathBuf,
    },
}

/// Runs a data subcommand.
pub fn run(cmd: DataCommand) -> anyhow::Result<()> {
    match cmd {
        DataCommand::Stats { file } => anyhow::bail!("{}: not implemented yet", file.display()),
    }
}
