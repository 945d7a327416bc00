//! Custom models served through a [`Loader`]: micro-batching of concurrent queries, graceful
//! shutdown with requests in flight, and a worker that survives a panicking model.

mod common;

use std::time::{Duration, Instant};

use common::*;
use seqrec_data::Sequences;
use seqrec_models::{EpochReport, Model, ModelError, StepReport};
use seqrec_serve::client::HttpClient;
use seqrec_serve::server::{Loader, Server};
use seqrec_serve::{Recommender, ServeError};
use serde_json::json;

/// Scores item `i` as `i` (so the top item is the largest unseen id), after sleeping `delay`;
/// panics (a model bug) on a history holding item 3 when `panic_on_3`.
struct SlowModel {
    delay: Duration,
    panic_on_3: bool,
}

impl Model for SlowModel {
    fn name(&self) -> &'static str {
        "slow"
    }
    fn n_items(&self) -> usize {
        10
    }
    fn max_history(&self) -> usize {
        4
    }
    fn train_epoch(
        &mut self,
        _: &Sequences<'_>,
        _: usize,
        _: &mut dyn FnMut(&StepReport),
    ) -> Result<EpochReport, ModelError> {
        unreachable!("never trained")
    }
    fn score(&mut self, histories: &[u32], batch: usize, scores: &mut [f32]) {
        assert!(
            !(self.panic_on_3 && histories.contains(&3)),
            "model bug on item 3"
        );
        std::thread::sleep(self.delay);
        for row in scores[..batch * 11].chunks_exact_mut(11) {
            for (i, s) in row.iter_mut().enumerate() {
                *s = i as f32;
            }
        }
    }
    fn save(&self, _: &std::path::Path) -> Result<(), ModelError> {
        Ok(())
    }
    fn load(&mut self, _: &std::path::Path) -> Result<(), ModelError> {
        Ok(())
    }
}

/// A `SlowModel` over items `x1..=x10`, served as `model_id`.
fn slow_recommender(
    delay: Duration,
    panic_on_3: bool,
    model_id: &str,
) -> Result<Recommender, ServeError> {
    Recommender::from_model(
        Box::new(SlowModel { delay, panic_on_3 }),
        (1..=10).map(|i| format!("x{i}")).collect(),
        model_id.into(),
    )
}

/// A loader of [`slow_recommender`]s.
fn slow_loader(delay: Duration, panic_on_3: bool, model_id: &'static str) -> Loader {
    Loader::new(move |_, _| slow_recommender(delay, panic_on_3, model_id))
}

#[test]
fn shutdown_lets_requests_in_flight_finish() {
    let dir = scratch("shutdown");
    let loader = slow_loader(Duration::from_millis(300), false, "slow/test");
    let s = Server::start_with(server_config(&dir, &dir, None), loader).unwrap();
    let addr = s.addr();
    let t0 = Instant::now();
    let in_flight: Vec<_> = (0..3)
        .map(|_| {
            std::thread::spawn(move || {
                let mut c = HttpClient::connect(addr).unwrap();
                post(
                    &mut c,
                    "/v1/recommend",
                    &json!({"history": ["x10", "x2"], "k": 2}),
                )
            })
        })
        .collect();
    // Let the requests reach the model, then shut down while it is still scoring.
    std::thread::sleep(Duration::from_millis(100));
    s.shutdown().unwrap();
    assert!(
        t0.elapsed() >= Duration::from_millis(300),
        "shutdown did not wait"
    );
    for t in in_flight {
        let (st, v) = t.join().unwrap();
        assert_eq!(st, 200, "{v}");
        assert_eq!(v["items"][0]["item"], "x9");
        assert_eq!(v["model_id"], "slow/test");
    }
    // The listener is gone.
    assert!(HttpClient::connect(addr).is_err());
}

#[test]
fn the_worker_survives_a_panicking_model() {
    let dir = scratch("panicking");
    let loader = slow_loader(Duration::ZERO, true, "panicky/test");
    let s = Server::start_with(server_config(&dir, &dir, None), loader).unwrap();
    let mut c = HttpClient::connect(s.addr()).unwrap();
    let (st, v) = post(&mut c, "/v1/recommend", &json!({"history": ["x3"]}));
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (503, Some("unavailable")),
        "{v}"
    );
    // The next query is served by the same worker.
    let (st, v) = post(&mut c, "/v1/recommend", &json!({"history": ["x4"], "k": 1}));
    assert_eq!(
        (st, v["items"][0]["item"].as_str()),
        (200, Some("x10")),
        "{v}"
    );
    s.shutdown().unwrap();
}

#[test]
fn concurrent_queries_share_one_score_call() {
    let dir = scratch("batching");
    let loader = slow_loader(Duration::from_millis(400), false, "slow/batching");
    let s = Server::start_with(server_config(&dir, &dir, None), loader).unwrap();
    let addr = s.addr();
    // One query occupies the model for 400 ms; seven more arrive meanwhile and queue up.
    let first = std::thread::spawn(move || {
        let mut c = HttpClient::connect(addr).unwrap();
        post(&mut c, "/v1/recommend", &json!({"history": ["x1"]})).0
    });
    std::thread::sleep(Duration::from_millis(50));
    let rest: Vec<_> = (0..7)
        .map(|i| {
            std::thread::spawn(move || {
                let mut c = HttpClient::connect(addr).unwrap();
                let h = json!({"history": [format!("x{}", i + 1)], "k": 1});
                post(&mut c, "/v1/recommend", &h)
            })
        })
        .collect();
    assert_eq!(first.join().unwrap(), 200);
    for t in rest {
        let (st, v) = t.join().unwrap();
        assert_eq!(
            (st, v["items"][0]["item"].as_str()),
            (200, Some("x10")),
            "{v}"
        );
    }
    // 8 queries in 2 scoring calls: the seven that queued were answered together.
    let mut c = HttpClient::connect(addr).unwrap();
    let m = c.request("GET", "/metrics", &[], None).unwrap().text();
    assert!(m.contains("seqrec_batch_size_sum 8\n"), "{m}");
    assert!(m.contains("seqrec_batch_size_count 2\n"), "{m}");
    assert!(m.contains("seqrec_batch_size_bucket{le=\"8\"} 2\n"), "{m}");
    s.shutdown().unwrap();
}

#[test]
fn two_workers_score_two_batches_at_once() {
    let dir = scratch("two-workers");
    let loads = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut cfg = server_config(&dir, &dir, None);
    cfg.engine.workers = 2;
    let counted = loads.clone();
    let loader = Loader::new(move |_, _| {
        counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        slow_recommender(Duration::from_millis(300), false, "slow/workers")
    });
    let s = Server::start_with(cfg, loader).unwrap();
    assert_eq!(
        loads.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "one model per worker"
    );
    let addr = s.addr();
    let t0 = Instant::now();
    let queries: Vec<_> = (0..2)
        .map(|i| {
            std::thread::spawn(move || {
                // The second query arrives while the first worker is busy with the first.
                std::thread::sleep(Duration::from_millis(100 * i));
                let mut c = HttpClient::connect(addr).unwrap();
                post(&mut c, "/v1/recommend", &json!({"history": ["x1"], "k": 1}))
            })
        })
        .collect();
    for t in queries {
        let (st, v) = t.join().unwrap();
        assert_eq!(
            (st, v["items"][0]["item"].as_str()),
            (200, Some("x10")),
            "{v}"
        );
    }
    // One worker would answer them one after the other: 600 ms at least.
    let took = t0.elapsed();
    assert!(
        took < Duration::from_millis(580),
        "two queries took {took:?}"
    );
    let mut c = HttpClient::connect(addr).unwrap();
    let m = c.request("GET", "/metrics", &[], None).unwrap().text();
    assert!(m.contains("seqrec_batch_size_count 2\n"), "{m}");
    s.shutdown().unwrap();
}

#[test]
fn a_recurrent_model_runs_one_worker() {
    let dir = scratch("recurrent-workers");
    let run = train_run(&dir, "gru", "gru4rec", 1, 1);
    let loads = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = loads.clone();
    let loader = Loader::new(move |run, opts| {
        counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Recommender::load(run, opts)
    });
    let mut cfg = server_config(&run, &dir, None);
    cfg.engine.workers = 3;
    let s = Server::start_with(cfg, loader).unwrap();
    assert_eq!(loads.load(std::sync::atomic::Ordering::SeqCst), 1);
    s.shutdown().unwrap();
}
