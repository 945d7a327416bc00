//! The HTTP server (axum + tokio): routes, bearer-token auth, JSON errors, metrics, hot reload and
//! graceful shutdown. See `docs/serving.md` for the API with curl examples.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use seqrec_models::Precision;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{DefaultBodyLimit, MatchedPath, Path, RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tokio::sync::oneshot;

use crate::ServeError;
use crate::api::{self, MAX_ID_BYTES};
use crate::engine::{Engine, EngineConfig, Query};
use crate::metrics::Metrics;
use crate::recommender::{LoadOptions, Recommender};
use crate::store::{Store, SyncMode};

/// Everything the server needs; built from the command line by [`crate::cli::ServeArgs`].
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// The run directory whose best checkpoint is served.
    pub run: PathBuf,
    /// Listen address (default `127.0.0.1:8080`; port 0 picks a free port).
    pub addr: SocketAddr,
    /// SQLite database of user histories.
    pub db: PathBuf,
    /// Durability of event writes.
    pub sync: SyncMode,
    /// Bearer token required by write and admin endpoints (`None`: no auth).
    pub token: Option<String>,
    /// MovieLens `movies.dat` for titles.
    pub items: Option<PathBuf>,
    /// Arithmetic of the model's serving forward.
    pub precision: Precision,
    /// Micro-batching settings.
    pub engine: EngineConfig,
    /// Largest accepted request body, bytes.
    pub body_limit: usize,
    /// Longest accepted history in a request (longer than the model's window is truncated; longer
    /// than this is refused).
    pub max_history_items: usize,
}

impl ServerConfig {
    /// Defaults for serving `run` with its database `run/serve.sqlite`.
    pub fn new(run: PathBuf) -> Self {
        Self {
            db: run.join("serve.sqlite"),
            run,
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            sync: SyncMode::Normal,
            token: None,
            items: None,
            precision: Precision::F32,
            engine: EngineConfig::default(),
            body_limit: 256 * 1024,
            max_history_items: 10_000,
        }
    }
}

/// How a run directory becomes a [`Recommender`], called on the model's worker thread:
/// [`Recommender::load`] by default ([`Loader::registry`]); tests and custom models pass their own.
#[derive(Clone)]
pub struct Loader(LoadFn);

type LoadFn =
    Arc<dyn Fn(&std::path::Path, &LoadOptions) -> Result<Recommender, ServeError> + Send + Sync>;

impl Loader {
    /// A loader from a function.
    pub fn new(
        f: impl Fn(&std::path::Path, &LoadOptions) -> Result<Recommender, ServeError>
        + Send
        + Sync
        + 'static,
    ) -> Self {
        Loader(Arc::new(f))
    }

    /// [`Recommender::load`]: the model registry and the run's best checkpoint.
    pub fn registry() -> Self {
        Loader::new(Recommender::load)
    }
}

impl std::fmt::Debug for Loader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Loader")
    }
}

/// Shared state of the handlers.
#[derive(Debug)]
pub struct AppState {
    loader: Loader,
    engine: RwLock<Arc<Engine>>,
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    config: ServerConfig,
    /// Serialises reloads; holds the run directory being served.
    reload: tokio::sync::Mutex<PathBuf>,
}

fn start_engine(
    run: PathBuf,
    cfg: &ServerConfig,
    metrics: &Arc<Metrics>,
    loader: &Loader,
) -> Result<Engine, ServeError> {
    let opts = LoadOptions {
        items: cfg.items.clone(),
        precision: cfg.precision,
    };
    let load = loader.0.clone();
    Engine::start(move || load(&run, &opts), cfg.engine, Some(metrics.clone()))
}

impl AppState {
    /// Loads the model and opens the database (blocking).
    ///
    /// # Errors
    /// [`ServeError::Load`] or [`ServeError::Store`].
    pub fn new(config: ServerConfig) -> Result<Arc<Self>, ServeError> {
        Self::with_loader(config, Loader::registry())
    }

    /// [`AppState::new`] with a custom [`Loader`] (used for the first load and every reload).
    ///
    /// # Errors
    /// [`ServeError::Load`] or [`ServeError::Store`].
    pub fn with_loader(config: ServerConfig, loader: Loader) -> Result<Arc<Self>, ServeError> {
        let metrics = Arc::new(Metrics::default());
        let engine = start_engine(config.run.clone(), &config, &metrics, &loader)?;
        let store = Store::open(&config.db, config.sync)?;
        Ok(Arc::new(Self {
            loader,
            engine: RwLock::new(Arc::new(engine)),
            store: Arc::new(store),
            metrics,
            reload: tokio::sync::Mutex::new(config.run.clone()),
            config,
        }))
    }

    /// The engine serving now.
    pub fn engine(&self) -> Arc<Engine> {
        self.engine
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Loads `run` (default: the run served now, e.g. with a new best checkpoint) on a new worker and
    /// swaps it in; requests in flight finish on the old model. Returns the new model id.
    ///
    /// # Errors
    /// [`ServeError::BadRequest`] if `run` is not a run directory, [`ServeError::Load`] if loading
    /// fails (the old model keeps serving).
    pub async fn reload(&self, run: Option<PathBuf>) -> Result<String, ServeError> {
        let mut current = self.reload.lock().await;
        let run = run.unwrap_or_else(|| current.clone());
        if !run.join("config.toml").is_file() {
            return Err(ServeError::BadRequest(format!(
                "{}: not a run directory (no config.toml)",
                run.display()
            )));
        }
        let (cfg, metrics, r) = (self.config.clone(), self.metrics.clone(), run.clone());
        let loader = self.loader.clone();
        let engine = tokio::task::spawn_blocking(move || start_engine(r, &cfg, &metrics, &loader))
            .await
            .map_err(|e| ServeError::load(&run, e))??;
        let id = engine.catalog().model_id().to_owned();
        *self.engine.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(engine);
        *current = run;
        self.metrics.reloaded();
        Ok(id)
    }
}

fn json_response(status: StatusCode, v: &Value) -> Response {
    let mut r = (status, v.to_string()).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn error_response(e: &ServeError) -> Response {
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST);
    json_response(status, &api::encode_error(e.code(), &e.to_string()))
}

fn plain_error(status: StatusCode, code: &str, message: &str) -> Response {
    json_response(status, &api::encode_error(code, message))
}

// A rejection becomes the response itself; it is built once per failed request, so its size is moot.
#[allow(clippy::result_large_err)]
fn body_or_error(body: Result<Bytes, BytesRejection>) -> Result<Bytes, Response> {
    body.map_err(|r| {
        let status = r.status();
        let code = if status == StatusCode::PAYLOAD_TOO_LARGE {
            "body_too_large"
        } else {
            "bad_body"
        };
        plain_error(status, code, &r.body_text())
    })
}

#[allow(clippy::result_large_err)]
fn user_or_error(user: Result<Path<String>, PathRejection>) -> Result<String, Response> {
    let Path(user) =
        user.map_err(|r| plain_error(StatusCode::BAD_REQUEST, "bad_user", &r.body_text()))?;
    if user.is_empty() || user.len() > MAX_ID_BYTES || user.chars().any(char::is_control) {
        return Err(plain_error(
            StatusCode::BAD_REQUEST,
            "bad_user",
            &format!("user ids are 1 to {MAX_ID_BYTES} bytes without control characters"),
        ));
    }
    Ok(user)
}

/// Whether the request carries the configured bearer token (always true without one).
fn authorized(st: &AppState, headers: &HeaderMap) -> bool {
    let Some(token) = &st.config.token else {
        return true;
    };
    let Some(given) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    // Constant time in the token's length: no early exit on the first differing byte.
    let (a, b) = (given.as_bytes(), token.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn unauthorized() -> Response {
    let mut r = plain_error(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "this endpoint needs the header Authorization: Bearer <token>",
    );
    r.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    r
}

async fn recommend(
    State(st): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match body_or_error(body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let run = async {
        let req = api::decode_recommend_borrowed(&body, st.config.max_history_items)?;
        let engine = st.engine();
        let cat = engine.catalog().clone();
        let history = cat.resolve(&req.history)?;
        let k = api::check_k(req.k, &cat)?;
        let n = history.len();
        let ans = engine
            .query(Query {
                history,
                k,
                exclude_seen: req.exclude_seen,
                explain: req.explain,
                user: None,
            })
            .await?;
        Ok::<_, ServeError>(api::encode_answer(&cat, n, &ans))
    };
    match run.await {
        Ok(v) => json_response(StatusCode::OK, &v),
        Err(e) => error_response(&e),
    }
}

async fn post_event(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    user: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    if !authorized(&st, &headers) {
        return unauthorized();
    }
    let user = match user_or_error(user) {
        Ok(u) => u,
        Err(r) => return r,
    };
    let body = match body_or_error(body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let run = async {
        let ev = api::decode_event(&body)?;
        let engine = st.engine();
        let cat = engine.catalog().clone();
        let dense = cat.resolve(std::slice::from_ref(&ev.item))?[0];
        let ts = ev.timestamp.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64)
        });
        let (store, u, item) = (st.store.clone(), user.clone(), ev.item.clone());
        let seq = tokio::task::spawn_blocking(move || store.append(&u, &item, ts))
            .await
            .map_err(|e| ServeError::Store(e.to_string()))??;
        engine.event(&user, seq, dense);
        Ok::<_, ServeError>(json!({"user": user, "item": cat.item_json(dense), "events": seq}))
    };
    match run.await {
        Ok(v) => json_response(StatusCode::OK, &v),
        Err(e) => error_response(&e),
    }
}

async fn user_recommendations(
    State(st): State<Arc<AppState>>,
    user: Result<Path<String>, PathRejection>,
    RawQuery(q): RawQuery,
) -> Response {
    let user = match user_or_error(user) {
        Ok(u) => u,
        Err(r) => return r,
    };
    let run = async {
        let q = api::decode_query(q.as_deref())?;
        let engine = st.engine();
        let cat = engine.catalog().clone();
        let k = api::check_k(q.k, &cat)?;
        let stored = st.store.history(&user)?;
        if stored.is_empty() {
            return Err(ServeError::UnknownUser(user.clone()));
        }
        // Items the current model does not know (stored before a reload onto another catalogue)
        // are skipped.
        let history: Vec<u32> = stored.iter().filter_map(|i| cat.dense(i)).collect();
        if history.is_empty() {
            return Err(ServeError::EmptyHistory);
        }
        let n = history.len();
        let ans = engine
            .query(Query {
                history,
                k,
                exclude_seen: q.exclude_seen,
                explain: q.explain,
                user: Some(user.clone()),
            })
            .await?;
        let mut v = api::encode_answer(&cat, n, &ans);
        v["user"] = json!(user);
        Ok(v)
    };
    match run.await {
        Ok(v) => json_response(StatusCode::OK, &v),
        Err(e) => error_response(&e),
    }
}

async fn reload(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    if !authorized(&st, &headers) {
        return unauthorized();
    }
    let body = match body_or_error(body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let previous = st.engine().catalog().model_id().to_owned();
    let run = async {
        let run = api::decode_reload(&body)?;
        st.reload(run).await
    };
    match run.await {
        Ok(id) => json_response(
            StatusCode::OK,
            &json!({"model_id": id, "previous_model_id": previous}),
        ),
        Err(e) => error_response(&e),
    }
}

async fn healthz(State(st): State<Arc<AppState>>) -> Response {
    let engine = st.engine();
    let c = engine.catalog();
    json_response(
        StatusCode::OK,
        &json!({
            "status": "ok",
            "model": c.model_name(),
            "model_id": c.model_id(),
            "n_items": c.n_items(),
            "max_history": c.max_history(),
        }),
    )
}

async fn metrics(State(st): State<Arc<AppState>>) -> Response {
    let engine = st.engine();
    let c = engine.catalog();
    let mut r = st
        .metrics
        .render(c.model_name(), c.model_id())
        .into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    r
}

async fn not_found() -> Response {
    plain_error(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
}

async fn method_not_allowed() -> Response {
    plain_error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this endpoint does not accept that method",
    )
}

async fn track(
    State(st): State<Arc<AppState>>,
    matched: Option<MatchedPath>,
    req: Request,
    next: Next,
) -> Response {
    let endpoint = matched.map_or_else(|| "unmatched".to_owned(), |m| m.as_str().to_owned());
    let t0 = Instant::now();
    let resp = next.run(req).await;
    st.metrics
        .observe_request(&endpoint, resp.status().as_u16(), t0.elapsed());
    resp
}

/// The router with every endpoint.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/recommend", post(recommend))
        .route("/v1/users/{user}/events", post(post_event))
        .route(
            "/v1/users/{user}/recommendations",
            get(user_recommendations),
        )
        .route("/v1/admin/reload", post(reload))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route_layer(middleware::from_fn_with_state(state.clone(), track))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(state.config.body_limit))
        .with_state(state)
}

/// Serves on `listener` until `shutdown` resolves, then lets requests in flight finish and closes
/// the database.
///
/// # Errors
/// [`ServeError::Store`] if the database fails to close; I/O errors of the listener as
/// [`ServeError::Load`].
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let store = state.store.clone();
    let app = router(state);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|e| ServeError::load("listener", e))?;
    match Arc::try_unwrap(store) {
        Ok(s) => s.close(),
        Err(_) => Ok(()), // a blocking task still holds it; it closes when dropped
    }
}

/// Runs the server in the foreground (the `seqrec-serve` binary and `cargo xtask serve`): SIGTERM or
/// Ctrl-C shut it down gracefully, SIGHUP reloads the model.
///
/// # Errors
/// Load, bind or database errors.
pub fn run_forever(config: ServerConfig) -> Result<(), ServeError> {
    let state = AppState::new(config.clone())?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| ServeError::load("tokio runtime", e))?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(config.addr)
            .await
            .map_err(|e| ServeError::load(config.addr.to_string(), e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| ServeError::load("listener", e))?;
        eprintln!(
            "seqrec-serve: {} on http://{addr} (database {})",
            state.engine().catalog().model_id(),
            config.db.display()
        );
        let hup_state = state.clone();
        tokio::spawn(async move {
            use tokio::signal::unix::{SignalKind, signal};
            let Ok(mut hup) = signal(SignalKind::hangup()) else {
                return;
            };
            while hup.recv().await.is_some() {
                match hup_state.reload(None).await {
                    Ok(id) => eprintln!("seqrec-serve: SIGHUP: reloaded {id}"),
                    Err(e) => {
                        eprintln!("seqrec-serve: SIGHUP: reload failed, keeping the old model: {e}")
                    }
                }
            }
        });
        let shutdown = async {
            use tokio::signal::unix::{SignalKind, signal};
            let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            eprintln!("seqrec-serve: shutting down (finishing requests in flight)");
        };
        serve(listener, state, shutdown).await?;
        eprintln!("seqrec-serve: stopped, database closed");
        Ok(())
    })
}

/// A server running on a background thread with its own runtime (tests, benchmarks).
#[derive(Debug)]
pub struct Server {
    addr: SocketAddr,
    state: Arc<AppState>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<Result<(), ServeError>>>,
}

impl Server {
    /// Loads the model, binds `config.addr` (port 0: a free port) and starts serving.
    ///
    /// # Errors
    /// Load, bind or database errors.
    pub fn start(config: ServerConfig) -> Result<Self, ServeError> {
        Self::start_with(config, Loader::registry())
    }

    /// [`Server::start`] with a custom [`Loader`].
    ///
    /// # Errors
    /// Load, bind or database errors.
    pub fn start_with(config: ServerConfig, loader: Loader) -> Result<Self, ServeError> {
        let state = AppState::with_loader(config.clone(), loader)?;
        let listener = std::net::TcpListener::bind(config.addr)
            .map_err(|e| ServeError::load(config.addr.to_string(), e))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| ServeError::load("listener", e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| ServeError::load("listener", e))?;
        let (stop, stopped) = oneshot::channel::<()>();
        let st = state.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .map_err(|e| ServeError::load("tokio runtime", e))?;
            rt.block_on(async move {
                let l = tokio::net::TcpListener::from_std(listener)
                    .map_err(|e| ServeError::load("listener", e))?;
                serve(l, st, async {
                    let _ = stopped.await;
                })
                .await
            })
        });
        Ok(Self {
            addr,
            state,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The shared state (model, database, metrics).
    pub fn state(&self) -> &Arc<AppState> {
        &self.state
    }

    /// Stops accepting, finishes requests in flight and closes the database.
    ///
    /// # Errors
    /// The server's error, if it failed.
    pub fn shutdown(mut self) -> Result<(), ServeError> {
        self.stop_and_join()
    }

    fn stop_and_join(&mut self) -> Result<(), ServeError> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        match self.thread.take() {
            Some(t) => t.join().map_err(|_| ServeError::Unavailable)?,
            None => Ok(()),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.stop_and_join();
    }
}
