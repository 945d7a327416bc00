//! `seqrec-load`: a closed-loop load generator for `seqrec-serve` over loopback.
//!
//! Each of `--connections` threads holds one keep-alive connection and sends its next request as soon
//! as the previous answer arrived. Modes: `recommend` (`POST /v1/recommend` with a random history of
//! `--history-len` items of the run's catalogue) and `user` (per iteration one
//! `POST /v1/users/{user}/events` then one `GET /v1/users/{user}/recommendations`, each thread its
//! own user: the GRU4Rec incremental path). Prints throughput, latency percentiles and errors.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use seqrec_serve::client::HttpClient;

#[derive(Parser)]
#[command(name = "seqrec-load")]
struct Args {
    /// Server address.
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: std::net::SocketAddr,
    /// The run served (its best/items.json gives valid item ids).
    #[arg(long)]
    run: PathBuf,
    /// Concurrent connections.
    #[arg(long, default_value_t = 1)]
    connections: usize,
    /// Measured seconds (after one second of warm-up).
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// `recommend` or `user`.
    #[arg(long, default_value = "recommend")]
    mode: String,
    /// Items per random history (recommend mode).
    #[arg(long, default_value_t = 50)]
    history_len: usize,
    /// k.
    #[arg(long, default_value_t = 10)]
    k: usize,
    /// Bearer token (user mode).
    #[arg(long, default_value = "")]
    token: String,
    /// User mode: each connection moves on to a new user after this many events (ML-1M users have
    /// a median of 96 ratings), so stored histories stay realistic.
    #[arg(long, default_value_t = 200)]
    user_events: usize,
    /// Pause between requests of one connection, microseconds (low-load latency runs).
    #[arg(long, default_value_t = 0)]
    pause_us: u64,
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[i]
}

struct Lane {
    lat: Vec<f64>,
    lat_event: Vec<f64>,
    lat_recs: Vec<f64>,
    errors: usize,
    first_error: Option<String>,
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let items: Vec<String> = serde_json::from_slice(
        &std::fs::read(a.run.join("best/items.json")).context("best/items.json of --run")?,
    )?;
    anyhow::ensure!(!items.is_empty(), "empty catalogue");
    let warm = Duration::from_secs(1);
    let run_for = Duration::from_secs_f64(a.seconds);
    let t_start = Instant::now();
    let lanes: Vec<_> = (0..a.connections)
        .map(|lane| {
            let items = items.clone();
            let (mode, token) = (a.mode.clone(), a.token.clone());
            let (addr, hl, k, pause, per_user) =
                (a.addr, a.history_len, a.k, a.pause_us, a.user_events.max(1));
            std::thread::spawn(move || -> anyhow::Result<Lane> {
                let mut c = HttpClient::connect(addr)?;
                let mut x = 0x9E37_79B9_7F4A_7C15u64
                    ^ (lane as u64 + 1).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                let mut rnd = move |n: usize| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    (x % n as u64) as usize
                };
                let mut out = Lane {
                    lat: vec![],
                    lat_event: vec![],
                    lat_recs: vec![],
                    errors: 0,
                    first_error: None,
                };
                let auth = format!("Bearer {token}");
                let mut iteration = 0usize;
                loop {
                    let user = format!(
                        "load-{lane}-{}-{}",
                        std::process::id(),
                        iteration / per_user
                    );
                    iteration += 1;
                    let now = t_start.elapsed();
                    if now > warm + run_for {
                        break;
                    }
                    let measure = now >= warm;
                    let t0 = Instant::now();
                    let (ok, t_ev, err) = if mode == "user" {
                        let body = format!(r#"{{"item": "{}"}}"#, items[rnd(items.len())]);
                        let r1 = c.request(
                            "POST",
                            &format!("/v1/users/{user}/events"),
                            &[("authorization", &auth)],
                            Some(body.as_bytes()),
                        )?;
                        let t_ev = t0.elapsed().as_secs_f64();
                        let r2 = c.request(
                            "GET",
                            &format!("/v1/users/{user}/recommendations?k={k}"),
                            &[],
                            None,
                        )?;
                        let ok = r1.status == 200 && r2.status == 200;
                        (
                            ok,
                            Some(t_ev),
                            (!ok).then(|| {
                                format!("{} {} / {} {}", r1.status, r1.text(), r2.status, r2.text())
                            }),
                        )
                    } else {
                        let h: Vec<String> = (0..hl)
                            .map(|_| format!("\"{}\"", items[rnd(items.len())]))
                            .collect();
                        let body = format!(r#"{{"history": [{}], "k": {k}}}"#, h.join(","));
                        let r = c.request("POST", "/v1/recommend", &[], Some(body.as_bytes()))?;
                        let ok = r.status == 200;
                        (
                            ok,
                            None,
                            (!ok).then(|| format!("{} {}", r.status, r.text())),
                        )
                    };
                    let dt = t0.elapsed().as_secs_f64();
                    if measure {
                        out.lat.push(dt);
                        if let Some(te) = t_ev {
                            out.lat_event.push(te);
                            out.lat_recs.push(dt - te);
                        }
                        if !ok {
                            out.errors += 1;
                            out.first_error = out.first_error.take().or(err);
                        }
                    }
                    if pause > 0 {
                        std::thread::sleep(Duration::from_micros(pause));
                    }
                }
                Ok(out)
            })
        })
        .collect();
    let (mut lat, mut lev, mut lrec, mut errors, mut first) = (vec![], vec![], vec![], 0, None);
    for l in lanes {
        let l = l
            .join()
            .map_err(|_| anyhow::anyhow!("a load thread panicked"))??;
        lat.extend(l.lat);
        lev.extend(l.lat_event);
        lrec.extend(l.lat_recs);
        errors += l.errors;
        first = first.or(l.first_error);
    }
    for v in [&mut lat, &mut lev, &mut lrec] {
        v.sort_by(f64::total_cmp);
    }
    let ms = |v: &[f64], p: f64| pct(v, p) * 1e3;
    let unit = if a.mode == "user" { "event+rec" } else { "rec" };
    println!(
        "mode {} | {} connections | history {} | k {} | {:.1} s measured",
        a.mode, a.connections, a.history_len, a.k, a.seconds
    );
    println!(
        "{} {unit} in {:.1} s = {:.0} {unit}/s | errors {errors}",
        lat.len(),
        a.seconds,
        lat.len() as f64 / a.seconds
    );
    println!(
        "latency ms: p50 {:.3}  p90 {:.3}  p99 {:.3}  max {:.3}",
        ms(&lat, 50.0),
        ms(&lat, 90.0),
        ms(&lat, 99.0),
        ms(&lat, 100.0)
    );
    if !lev.is_empty() {
        println!(
            "  event ms: p50 {:.3}  p99 {:.3} | recommendations ms: p50 {:.3}  p99 {:.3}",
            ms(&lev, 50.0),
            ms(&lev, 99.0),
            ms(&lrec, 50.0),
            ms(&lrec, 99.0)
        );
    }
    if let Some(e) = first {
        println!("first error: {e}");
    }
    Ok(())
}
