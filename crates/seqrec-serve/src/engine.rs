//! [`Engine`]: a model on its own worker thread (or a few copies of it, one per worker), fed by a
//! queue that micro-batches concurrent requests into one [`seqrec_models::Model::score`] call.
//!
//! The model lives and dies on its worker thread (models need `&mut self` to score and are not
//! required to be `Send`). A worker takes the first queued job, then keeps collecting jobs until
//! `max_batch` are in hand or `max_wait` has passed since the first, and answers them all with one
//! scoring call (one for window models, one for recurrent user states). Under load the queue fills
//! while the model is busy, so batches grow with the load; at low load a lone request waits at most
//! `max_wait`.
//!
//! Window models (SASRec, BERT4Rec, ...) run `workers` workers, each with its own copy of the model,
//! taking turns at the queue: one collects the next batch while another scores its own, so the
//! scoring of a batch no longer waits for the previous one to be answered. Recurrent models run one
//! worker, which owns the users' states.
//!
//! Hot reload builds a new engine (its workers load the checkpoint) and swaps an `Arc`: requests that
//! hold the old engine finish on it; its workers exit when the last of them drops its handle.
//!
//! Recurrent models (GRU4Rec) keep each user's hidden state in memory, keyed by user and tagged with
//! the number of events it has seen. An event with the next number advances the state by one GRU
//! step; any gap (a missed or reordered event, a restart, a reload) drops it, and the next
//! recommendation rebuilds it from the user's last `max_history` stored events.

use std::collections::HashMap;
use std::sync::mpsc::{self, RecvTimeoutError, TryRecvError};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::ServeError;
use crate::metrics::Metrics;
use crate::recommender::{Catalog, Explanation, RecOptions, Recommendation, Recommender, top_k};

/// Micro-batching and state-cache settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EngineConfig {
    /// Most queries answered by one scoring call.
    pub max_batch: usize,
    /// Longest time the first job of a batch waits for company.
    pub max_wait: Duration,
    /// Most users whose recurrent state is kept in memory (an arbitrary one is dropped beyond).
    pub state_cache: usize,
    /// Threads of each worker's own rayon pool (the worker thread is one of them). One by default:
    /// on a small machine the HTTP threads need the other cores, and one thread avoids handing small
    /// kernels across threads.
    pub threads: usize,
    /// Model workers of a window model, each with its own copy of the model (recurrent models
    /// always run one). By default half the cores, at least one: on two cores a second worker
    /// raised throughput by 4-31% but lengthened the latency tail (`docs/serving.md`).
    pub workers: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            max_batch: 64,
            max_wait: Duration::ZERO,
            state_cache: 100_000,
            threads: 1,
            workers: default_workers(),
        }
    }
}

/// Half the cores this process may use, at least one.
pub fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1))
}

/// A validated query: dense ids, checked `k`.
#[derive(Clone, Debug)]
pub struct Query {
    /// The history, oldest first (every id in `1..=n_items`, at least one).
    pub history: Vec<u32>,
    /// Checked `k`.
    pub k: usize,
    /// Leave out items of `history`.
    pub exclude_seen: bool,
    /// Compute explanations.
    pub explain: bool,
    /// The user whose stored history this is (recurrent models serve it from the user's state).
    pub user: Option<String>,
}

/// The answer to a [`Query`].
#[derive(Clone, Debug)]
pub struct Answer {
    /// Top-k, best first.
    pub recs: Vec<Recommendation>,
    /// One explanation per recommendation, when asked for.
    pub explanations: Option<Vec<Explanation>>,
}

enum Job {
    Query(Query, oneshot::Sender<Result<Answer, ServeError>>),
    Event {
        user: String,
        n_events: u64,
        item: u32,
    },
}

/// Handle on the model workers. Cheap to share (`Arc<Engine>`); the workers stop when the last
/// handle is dropped, after answering what is queued.
#[derive(Debug)]
pub struct Engine {
    tx: mpsc::Sender<Job>,
    catalog: Arc<Catalog>,
}

impl Engine {
    /// Starts the worker threads, each of which runs `load` and then serves; blocks until the
    /// loads finished. The first worker's model decides how many there are: one for a recurrent
    /// model, `config.workers` otherwise.
    ///
    /// # Errors
    /// The first error of `load` (the workers started so far then exit).
    pub fn start(
        load: impl Fn() -> Result<Recommender, ServeError> + Send + Sync + 'static,
        config: EngineConfig,
        metrics: Option<Arc<Metrics>>,
    ) -> Result<Self, ServeError> {
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let load = Arc::new(load);
        let catalog = spawn_worker(0, load.clone(), rx.clone(), config, metrics.clone())?;
        if !catalog.recurrent() {
            for i in 1..config.workers.max(1) {
                spawn_worker(i, load.clone(), rx.clone(), config, metrics.clone())?;
            }
        }
        Ok(Self { tx, catalog })
    }

    /// The model's catalogue.
    pub fn catalog(&self) -> &Arc<Catalog> {
        &self.catalog
    }

    /// Answers a query (queued for the next batch).
    ///
    /// # Errors
    /// [`ServeError::Unavailable`] if the worker stopped; otherwise the query's own error.
    pub async fn query(&self, q: Query) -> Result<Answer, ServeError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Job::Query(q, tx))
            .map_err(|_| ServeError::Unavailable)?;
        rx.await.map_err(|_| ServeError::Unavailable)?
    }

    /// Tells a recurrent model's worker that `user` now has `n_events` events, the last being
    /// `item` (dense). A no-op for window models.
    pub fn event(&self, user: &str, n_events: u64, item: u32) {
        if self.catalog.recurrent() {
            let _ = self.tx.send(Job::Event {
                user: user.to_owned(),
                n_events,
                item,
            });
        }
    }
}

/// Starts worker `index` on its own thread: it builds its rayon pool, runs `load` and serves jobs
/// from `rx`. Blocks until the load finished and returns the model's catalogue.
fn spawn_worker(
    index: usize,
    load: Arc<impl Fn() -> Result<Recommender, ServeError> + Send + Sync + 'static>,
    rx: Arc<Mutex<mpsc::Receiver<Job>>>,
    config: EngineConfig,
    metrics: Option<Arc<Metrics>>,
) -> Result<Arc<Catalog>, ServeError> {
    let (ready_tx, ready_rx) = mpsc::sync_channel(1);
    std::thread::Builder::new()
        .name(format!("seqrec-model-{index}"))
        .spawn(move || {
            let pool = match rayon::ThreadPoolBuilder::new()
                .num_threads(config.threads.max(1))
                .build()
            {
                Ok(p) => p,
                Err(e) => {
                    let _ = ready_tx.send(Err(ServeError::load("model thread pool", e)));
                    return;
                }
            };
            pool.install(move || {
                let rec = match load() {
                    Ok(r) => {
                        let _ = ready_tx.send(Ok(r.catalog().clone()));
                        r
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                Worker {
                    rec,
                    config,
                    metrics,
                    states: HashMap::new(),
                }
                .run(&rx);
            });
        })
        .map_err(|e| ServeError::load("worker thread", e))?;
    ready_rx.recv().map_err(|_| ServeError::Unavailable)?
}

struct Worker {
    rec: Recommender,
    config: EngineConfig,
    metrics: Option<Arc<Metrics>>,
    /// user -> (events seen, state)
    states: HashMap<String, (u64, Vec<f32>)>,
}

type Reply = oneshot::Sender<Result<Answer, ServeError>>;

impl Worker {
    /// Serves batches from the shared queue until every sender is gone. The queue's lock is held
    /// while a batch is collected (so batches do not interleave) and released while it is scored.
    fn run(mut self, rx: &Mutex<mpsc::Receiver<Job>>) {
        loop {
            let jobs = {
                let rx = rx.lock().unwrap_or_else(PoisonError::into_inner);
                match self.collect(&rx) {
                    Some(jobs) => jobs,
                    None => return,
                }
            };
            // A panic in a model (a bug: inputs are checked before they are queued) fails this
            // batch's queries (their reply channels drop: 503) but not the worker; the user states
            // are dropped since a step may have been cut short.
            let run = std::panic::AssertUnwindSafe(|| self.process(jobs));
            if std::panic::catch_unwind(run).is_err() {
                self.states.clear();
            }
        }
    }

    /// The next batch: the first job (waiting for it), then more until `max_batch` are in hand or
    /// `max_wait` has passed since the first. `None` once every sender is gone.
    fn collect(&self, rx: &mpsc::Receiver<Job>) -> Option<Vec<Job>> {
        let first = rx.recv().ok()?;
        let mut jobs = vec![first];
        let deadline = Instant::now() + self.config.max_wait;
        while jobs.len() < self.config.max_batch.max(1) {
            match rx.try_recv() {
                Ok(j) => {
                    jobs.push(j);
                    continue;
                }
                Err(TryRecvError::Disconnected) => break,
                Err(TryRecvError::Empty) => {}
            }
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            match rx.recv_timeout(deadline - now) {
                Ok(j) => jobs.push(j),
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
            }
        }
        Some(jobs)
    }

    /// The state of `user` after `history` (its whole stored history), from the cache when it has
    /// seen exactly that many events, else rebuilt from the last `max_history` items.
    fn user_state(&mut self, user: &str, history: &[u32]) -> Vec<f32> {
        let n = history.len() as u64;
        if let Some((seen, st)) = self.states.get(user)
            && *seen == n
        {
            return st.clone();
        }
        let window = self.rec.catalog().max_history();
        let r = self.rec.model_mut().recurrent().expect("recurrent model");
        let mut st = vec![0.0; r.state_len()];
        r.init_state(&mut st);
        for &item in &history[history.len().saturating_sub(window)..] {
            r.step(&mut st, item);
        }
        if self.states.len() >= self.config.state_cache
            && let Some(k) = self.states.keys().next().cloned()
        {
            self.states.remove(&k);
        }
        self.states.insert(user.to_owned(), (n, st.clone()));
        st
    }

    fn event(&mut self, user: String, n_events: u64, item: u32) {
        let Some((seen, st)) = self.states.get_mut(&user) else {
            return;
        };
        if *seen + 1 == n_events {
            let r = self.rec.model_mut().recurrent().expect("recurrent model");
            r.step(st, item);
            *seen = n_events;
        } else {
            self.states.remove(&user);
        }
    }

    fn process(&mut self, jobs: Vec<Job>) {
        let recurrent = self.rec.catalog().recurrent();
        let mut windowed: Vec<(Query, Reply)> = Vec::new();
        let mut stated: Vec<(Query, Reply)> = Vec::new();
        let mut states: Vec<f32> = Vec::new();
        for job in jobs {
            match job {
                Job::Event {
                    user,
                    n_events,
                    item,
                } => self.event(user, n_events, item),
                Job::Query(q, reply) => match &q.user {
                    Some(u) if recurrent => {
                        let st = self.user_state(&u.clone(), &q.history);
                        states.extend(st);
                        stated.push((q, reply));
                    }
                    _ => windowed.push((q, reply)),
                },
            }
        }
        if let Some(m) = &self.metrics {
            m.observe_batch(windowed.len() + stated.len());
        }
        if !windowed.is_empty() {
            let queries: Vec<(&[u32], RecOptions)> = windowed
                .iter()
                .map(|(q, _)| {
                    (
                        q.history.as_slice(),
                        RecOptions {
                            k: q.k,
                            exclude_seen: q.exclude_seen,
                        },
                    )
                })
                .collect();
            match self.rec.recommend_batch(&queries) {
                Ok(all) => {
                    for ((q, reply), recs) in windowed.into_iter().zip(all) {
                        let ans = self.finish(&q, recs);
                        let _ = reply.send(ans);
                    }
                }
                Err(_) => {
                    // A bad query slipped past the handler's checks: answer each one on its own.
                    for (q, reply) in windowed {
                        let opts = RecOptions {
                            k: q.k,
                            exclude_seen: q.exclude_seen,
                        };
                        let ans = self
                            .rec
                            .recommend(&q.history, opts)
                            .and_then(|recs| self.finish(&q, recs));
                        let _ = reply.send(ans);
                    }
                }
            }
        }
        if !stated.is_empty() {
            let cols = self.rec.catalog().n_items() + 1;
            let batch = stated.len();
            let mut scores = vec![0.0f32; batch * cols];
            let r = self.rec.model_mut().recurrent().expect("recurrent model");
            r.score_states(&states, batch, &mut scores);
            for ((q, reply), row) in stated.into_iter().zip(scores.chunks_exact(cols)) {
                let skip: &[u32] = if q.exclude_seen { &q.history } else { &[] };
                let recs = top_k(row, q.k, skip);
                let ans = self.finish(&q, recs);
                let _ = reply.send(ans);
            }
        }
    }

    fn finish(&mut self, q: &Query, recs: Vec<Recommendation>) -> Result<Answer, ServeError> {
        let explanations = if q.explain {
            let items: Vec<u32> = recs.iter().map(|r| r.item).collect();
            Some(self.rec.explain(&q.history, &items)?)
        } else {
            None
        };
        Ok(Answer { recs, explanations })
    }
}
