//! Test helpers: a synthetic Markov log with numeric item ids, tiny runs trained through the
//! registry, and servers on ephemeral loopback ports.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use seqrec_data::SeqRng;
use seqrec_models::{Gru4recConfig, SasrecConfig, SasrecLoss};
use seqrec_serve::client::HttpClient;
use seqrec_serve::server::{Server, ServerConfig};
use seqrec_train::{ModelConfig, RunOptions, TrainConfig};

/// An empty scratch directory under the target dir.
pub fn scratch(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("seqrec-serve")
        .join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// 200 users walking 30 items (ids 101..=130): next = (7 * prev + 3) mod 30 with probability 0.8.
pub fn synthetic_log(dir: &Path) -> PathBuf {
    let mut rng = SeqRng::new(2026, 0);
    let mut text = String::new();
    for u in 1..=200u64 {
        let len = 8 + rng.below(10) as usize;
        let mut item = rng.below(30);
        text.push_str(&format!("u{u}"));
        for _ in 0..len {
            text.push_str(&format!(" {}", 101 + item));
            item = if rng.below(10) < 8 {
                (7 * item + 3) % 30
            } else {
                rng.below(30)
            };
        }
        text.push('\n');
    }
    let p = dir.join("markov.txt");
    std::fs::write(&p, text).unwrap();
    p
}

/// The deterministic successor of item `id` in [`synthetic_log`].
pub fn successor(id: u64) -> u64 {
    101 + (7 * (id - 101) + 3) % 30
}

/// A tiny SASRec (or GRU4Rec) config on the synthetic log, writing into `dir/<name>`.
pub fn tiny_config(dir: &Path, name: &str, model: &str, seed: u64, epochs: usize) -> TrainConfig {
    let log = dir.join("markov.txt");
    if !log.is_file() {
        synthetic_log(dir);
    }
    let mut cfg = TrainConfig::default();
    cfg.data.dataset = log.display().to_string();
    cfg.data.format = "sequences".into();
    cfg.data.cache_dir = dir.join("cache");
    cfg.train.epochs = epochs;
    cfg.train.eval_every = epochs;
    cfg.train.patience = 0;
    cfg.train.seed = seed;
    cfg.train.threads = 1;
    cfg.model = match model {
        "sasrec" => ModelConfig::Sasrec(SasrecConfig {
            hidden: 16,
            blocks: 1,
            heads: 2,
            maxlen: 12,
            dropout: 0.0,
            lr: 0.01,
            batch_size: 32,
            loss: SasrecLoss::Ce,
            ..SasrecConfig::default()
        }),
        "gru4rec" => ModelConfig::Gru4rec(Gru4recConfig {
            embedding_dim: 16,
            hidden_size: 16,
            maxlen: 12,
            batch_size: 32,
            lr: 0.01,
            dropout_embedding: 0.0,
            dropout_hidden: 0.0,
            ..Gru4recConfig::default()
        }),
        other => panic!("no tiny config for {other}"),
    };
    cfg.out = dir.join(name);
    cfg.validate().unwrap();
    cfg
}

/// Trains a tiny run and returns its directory.
pub fn train_run(dir: &Path, name: &str, model: &str, seed: u64, epochs: usize) -> PathBuf {
    let cfg = tiny_config(dir, name, model, seed, epochs);
    let opts = RunOptions {
        quiet: true,
        stop_after_epoch: None,
    };
    seqrec_train::train(&cfg, &opts).unwrap();
    cfg.out
}

/// A server config on an ephemeral loopback port with its database in `dir`.
pub fn server_config(run: &Path, dir: &Path, token: Option<&str>) -> ServerConfig {
    let mut c = ServerConfig::new(run.to_owned());
    c.addr = "127.0.0.1:0".parse().unwrap();
    c.db = dir.join("serve.sqlite");
    c.token = token.map(str::to_owned);
    // One worker whatever the machine, so that batch counts are the same everywhere.
    c.engine.workers = 1;
    c
}

/// Starts a server.
pub fn start(run: &Path, dir: &Path, token: Option<&str>) -> Server {
    Server::start(server_config(run, dir, token)).unwrap()
}

/// A connected client.
pub fn client(s: &Server) -> HttpClient {
    HttpClient::connect(s.addr()).unwrap()
}

/// POSTs JSON.
pub fn post(c: &mut HttpClient, path: &str, body: &serde_json::Value) -> (u16, serde_json::Value) {
    let r = c
        .request("POST", path, &[], Some(body.to_string().as_bytes()))
        .unwrap();
    (r.status, r.json())
}

/// POSTs JSON with a bearer token.
pub fn post_auth(
    c: &mut HttpClient,
    path: &str,
    token: &str,
    body: &serde_json::Value,
) -> (u16, serde_json::Value) {
    let auth = format!("Bearer {token}");
    let r = c
        .request(
            "POST",
            path,
            &[("authorization", &auth)],
            Some(body.to_string().as_bytes()),
        )
        .unwrap();
    (r.status, r.json())
}

/// GETs a path.
pub fn get(c: &mut HttpClient, path: &str) -> (u16, serde_json::Value) {
    let r = c.request("GET", path, &[], None).unwrap();
    (r.status, r.json())
}

/// The `item` ids of a recommendation response.
pub fn items(v: &serde_json::Value) -> Vec<u64> {
    v["items"]
        .as_array()
        .unwrap_or_else(|| panic!("no items in {v}"))
        .iter()
        .map(|i| i["item"].as_u64().unwrap())
        .collect()
}

/// The scores of a recommendation response.
pub fn scores(v: &serde_json::Value) -> Vec<f64> {
    v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["score"].as_f64().unwrap())
        .collect()
}
