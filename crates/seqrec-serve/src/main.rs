//! `seqrec-serve --run <dir>`: the recommendation server (also `cargo xtask serve`).

use clap::Parser;

#[derive(Parser)]
#[command(name = "seqrec-serve", version)]
struct Cli {
    #[command(flatten)]
    args: seqrec_serve::cli::ServeArgs,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    seqrec_serve::server::run_forever(cli.args.config())?;
    Ok(())
}
