//! The `seqrec-serve` binary as a child process: an acknowledged event survives SIGKILL and a
//! restart; SIGHUP reloads the model; SIGTERM shuts down gracefully and closes the database.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::*;
use seqrec_serve::client::HttpClient;
use seqrec_serve::store::{Store, SyncMode};
use serde_json::json;

struct Proc {
    child: Child,
    addr: SocketAddr,
    lines: mpsc::Receiver<String>,
}

/// Starts the server binary on a free port and waits for its "listening" line.
fn spawn(run: &Path, db: &Path, sync: &str) -> Proc {
    let mut child = Command::new(env!("CARGO_BIN_EXE_seqrec-serve"))
        .args(["--run", run.to_str().unwrap(), "--db", db.to_str().unwrap()])
        .args(["--addr", "127.0.0.1:0", "--sync", sync, "--token", "tok"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let line = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the server prints its address");
    let addr = line
        .split("http://")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .parse()
        .unwrap();
    Proc {
        child,
        addr,
        lines: rx,
    }
}

fn signal(p: &Proc, sig: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{sig}"), &p.child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{sig}");
}

fn event(c: &mut HttpClient, user: &str, item: u64) -> u64 {
    let (st, v) = post_auth(
        c,
        &format!("/v1/users/{user}/events"),
        "tok",
        &json!({"item": item}),
    );
    assert_eq!(st, 200, "{v}");
    v["events"].as_u64().unwrap()
}

#[test]
fn acknowledged_events_survive_sigkill_and_restart() {
    let dir = scratch("proc-kill");
    let run = train_run(&dir, "gru", "gru4rec", 5, 1);
    let db = dir.join("events.sqlite");
    let mut p = spawn(&run, &db, "normal");
    let mut c = HttpClient::connect(p.addr).unwrap();
    let items = [101u64, 108, 115, 122, 129];
    for (i, &it) in items.iter().enumerate() {
        assert_eq!(event(&mut c, "carol", it), i as u64 + 1);
    }
    let (_, before) = get(&mut c, "/v1/users/carol/recommendations?k=5");
    // SIGKILL right after the last acknowledgement: no chance to flush or checkpoint.
    p.child.kill().unwrap();
    p.child.wait().unwrap();
    // The events are in the database (read with the library, as a second process would).
    let store = Store::open(&db, SyncMode::Normal).unwrap();
    let want: Vec<String> = items.iter().map(|i| i.to_string()).collect();
    assert_eq!(store.history("carol").unwrap(), want);
    store.close().unwrap();
    // A restarted server serves them: same recommendations (the GRU state is rebuilt from SQLite),
    // and the next event continues the numbering.
    let mut p = spawn(&run, &db, "full");
    let mut c = HttpClient::connect(p.addr).unwrap();
    let (st, after) = get(&mut c, "/v1/users/carol/recommendations?k=5");
    assert_eq!(st, 200, "{after}");
    assert_eq!(items_of(&after), items_of(&before));
    assert_eq!(event(&mut c, "carol", 102), 6);
    p.child.kill().unwrap();
    p.child.wait().unwrap();
}

fn items_of(v: &serde_json::Value) -> Vec<u64> {
    items(v)
}

#[test]
fn sighup_reloads_and_sigterm_shuts_down_gracefully() {
    let dir = scratch("proc-signals");
    let run = train_run(&dir, "sasrec", "sasrec", 1, 1);
    let db = dir.join("events.sqlite");
    let mut p = spawn(&run, &db, "normal");
    let mut c = HttpClient::connect(p.addr).unwrap();
    assert_eq!(event(&mut c, "dave", 103), 1);
    signal(&p, "HUP");
    let line = p.lines.recv_timeout(Duration::from_secs(30)).unwrap();
    assert!(
        line.contains("SIGHUP: reloaded sasrec/sasrec/epoch-1"),
        "{line}"
    );
    let r = c.request("GET", "/metrics", &[], None).unwrap();
    assert!(r.text().contains("seqrec_model_reloads_total 1"));
    // The connection is idle: SIGTERM stops the server, which closes the database and exits 0.
    signal(&p, "TERM");
    let status = p.child.wait().unwrap();
    assert!(status.success(), "{status}");
    let rest: Vec<String> = p.lines.try_iter().collect();
    assert!(
        rest.iter().any(|l| l.contains("database closed")),
        "{rest:?}"
    );
    // Closing checkpointed the write-ahead log into the database file.
    let wal = dir.join("events.sqlite-wal");
    assert!(!wal.exists() || std::fs::metadata(&wal).unwrap().len() == 0);
    let store = Store::open(&db, SyncMode::Normal).unwrap();
    assert_eq!(store.history("dave").unwrap(), ["103"]);
}
