//! `cargo xtask serve`: the HTTP recommendation server (the `seqrec-serve` binary's command line).

/// Runs `cargo xtask serve`.
pub fn run(args: seqrec_serve::cli::ServeArgs) -> anyhow::Result<()> {
    seqrec_serve::server::run_forever(args.config())?;
    Ok(())
}
