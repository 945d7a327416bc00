//! [`ServeArgs`]: the command line of `seqrec-serve` and `cargo xtask serve`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::engine::{EngineConfig, default_workers};
use crate::server::ServerConfig;
use crate::store::SyncMode;
use seqrec_models::Precision;

/// Serve a trained run over HTTP.
#[derive(clap::Args, Clone, Debug)]
pub struct ServeArgs {
    /// Run directory whose best checkpoint is served.
    #[arg(long)]
    pub run: PathBuf,
    /// Listen address (loopback by default).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub addr: SocketAddr,
    /// SQLite database of user histories (default: `<run>/serve.sqlite`).
    #[arg(long)]
    pub db: Option<PathBuf>,
    /// Commit durability: `normal` (survives a killed process) or `full` (also power loss; one fsync
    /// per event).
    #[arg(long, default_value = "normal", value_parser = ["normal", "full"])]
    pub sync: String,
    /// Bearer token for the write and admin endpoints (default: $SEQREC_SERVE_TOKEN; none: no auth).
    #[arg(long)]
    pub token: Option<String>,
    /// MovieLens movies.dat for titles.
    #[arg(long)]
    pub items: Option<PathBuf>,
    /// Most queries per scoring call.
    #[arg(long, default_value_t = 64)]
    pub max_batch: usize,
    /// Longest wait of a query for others to batch with, microseconds. 0 (the default) batches what
    /// queued up while the model was busy, without waiting: under load that already fills batches,
    /// and a lone query is not delayed.
    #[arg(long, default_value_t = 0)]
    pub batch_wait_us: u64,
    /// Threads of each model worker's compute pool (SASRec splits a large batch over them; on two
    /// vCPUs shared with the HTTP threads a second one did not help, see docs/serving.md).
    #[arg(long, default_value_t = 1)]
    pub model_threads: usize,
    /// Model workers of a window model (SASRec, BERT4Rec, ...), each with its own copy of the
    /// model, taking turns at the request queue; recurrent models always run one. Default: half
    /// the cores, at least one.
    #[arg(long)]
    pub model_workers: Option<usize>,
    /// Arithmetic of the model's forward: `f32`, or `bf16` (SASRec's matrix products on Intel AMX
    /// tiles, Sapphire Rapids or later; scores move by up to about 1.3% of their range, see
    /// docs/serving.md). A model or CPU without a bf16 path refuses to load.
    #[arg(long, default_value = "f32")]
    pub precision: Precision,
    /// Largest request body, bytes.
    #[arg(long, default_value_t = 256 * 1024)]
    pub body_limit: usize,
    /// Longest history accepted in a request (longer than the model's window is truncated to the
    /// most recent items; longer than this is refused).
    #[arg(long, default_value_t = 10_000)]
    pub max_history_items: usize,
}

impl ServeArgs {
    /// The server configuration.
    pub fn config(&self) -> ServerConfig {
        let mut c = ServerConfig::new(self.run.clone());
        c.addr = self.addr;
        if let Some(db) = &self.db {
            c.db = db.clone();
        }
        c.sync = SyncMode::from_name(&self.sync).unwrap_or_default();
        c.token = self
            .token
            .clone()
            .or_else(|| std::env::var("SEQREC_SERVE_TOKEN").ok())
            .filter(|t| !t.is_empty());
        c.items = self.items.clone();
        c.precision = self.precision;
        c.engine = EngineConfig {
            max_batch: self.max_batch.max(1),
            max_wait: Duration::from_micros(self.batch_wait_us),
            threads: self.model_threads.max(1),
            workers: self
                .model_workers
                .map_or_else(default_workers, |w| w.max(1)),
            ..EngineConfig::default()
        };
        c.body_limit = self.body_limit;
        c.max_history_items = self.max_history_items.max(1);
        c
    }
}
