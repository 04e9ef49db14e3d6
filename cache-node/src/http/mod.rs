//! The HTTP API (contract 3): routes, the request middleware, and the server loop.
//!
//! # Layout
//! - `keys`: single-key `PUT`/`GET`/`HEAD`/`DELETE`; `batch`: batch get and put.
//! - `probes`: `/healthz`, `/readyz`, `/metrics`, `/openapi.json`; `openapi`: the document.
//! - `error`: every refusal with its status and JSON body; `headers`, `key`, `lifetime`,
//!   `body`: parsing what a request carries.
//!
//! [`app`] builds the router from an [`AppState`], so tests drive it in-process; [`run`]
//! serves it on a listener until a shutdown future completes, then drains.

pub mod auth;
mod batch;
mod body;
pub mod error;
mod headers;
mod key;
mod keys;
mod lifetime;
mod openapi;
mod probes;
mod replicate;

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{any, get, post};
use http::{Method, Uri};
use tokio::net::TcpListener;

use crate::metrics::Metrics;
use crate::replication::{self, Replication};
use crate::store::Store;
use error::ApiError;

/// Request limits: configuration, so that every refusal is deliberate and documented.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Longest key, in bytes after percent-decoding.
    pub max_key_bytes: usize,
    /// Largest value.
    pub max_value_bytes: usize,
    /// Most entries in one batch request.
    pub max_batch_entries: usize,
    /// Largest batch request body.
    pub max_batch_bytes: usize,
    /// Lifetime of entries written without `ttl` or `Expires`; `None` = no expiry.
    pub default_ttl: Option<Duration>,
    /// Longest lifetime a write may ask for; `None` = unbounded.
    pub max_ttl: Option<Duration>,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_key_bytes: 1024,
            max_value_bytes: 1 << 20,
            max_batch_entries: 1000,
            max_batch_bytes: 16 << 20,
            default_ttl: None,
            max_ttl: None,
        }
    }
}

/// What every handler shares.
#[derive(Debug)]
pub struct AppState {
    /// The entries.
    pub store: Arc<Store>,
    /// Request limits.
    pub limits: Limits,
    /// The metrics registry.
    pub metrics: Arc<Metrics>,
    /// Whether `/readyz` says ready; cleared when draining starts.
    pub ready: AtomicBool,
    /// Whether key requests are served: cleared while the data volume is being loaded, so
    /// that no request sees (or writes over) a half-loaded store.
    pub loaded: AtomicBool,
    /// Replication to the other nodes; `None` on a node without peers.
    pub replication: Option<Arc<Replication>>,
    /// The bearer token key and internal routes require; `None` serves them openly.
    pub auth: Option<auth::AuthToken>,
}

impl AppState {
    /// State over `store`, ready to serve.
    pub fn new(store: Arc<Store>, limits: Limits, metrics: Arc<Metrics>) -> AppState {
        AppState {
            store,
            limits,
            metrics,
            ready: AtomicBool::new(true),
            loaded: AtomicBool::new(true),
            replication: None,
            auth: None,
        }
    }

    /// The same state with key and internal routes requiring `token`.
    pub fn with_auth(self, token: Option<auth::AuthToken>) -> AppState {
        AppState {
            auth: token,
            ..self
        }
    }

    /// The same state with writes replicated through `replication` and its internal routes
    /// served.
    pub fn with_replication(self, replication: Arc<Replication>) -> AppState {
        AppState {
            replication: Some(replication),
            ..self
        }
    }
}

/// The router: every route of the API with its middleware.
pub fn app(state: Arc<AppState>) -> Router {
    let data = Router::new()
        .route(
            "/v1/keys/{*key}",
            get(keys::get)
                .head(keys::head)
                .put(keys::put)
                .delete(keys::delete),
        )
        .route("/v1/keys/", any(keys::empty))
        .route("/v1/keys", any(keys::empty))
        .route("/v1/batch/get", post(batch::get))
        .route("/v1/batch/put", post(batch::put))
        .route_layer(middleware::from_fn_with_state(state.clone(), until_loaded))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_token,
        ));
    let internal = match &state.replication {
        // A batch holds up to the transport's batch size, and one record may be as large as
        // the largest value.
        Some(replication) => replication::routes::routes(
            replication.clone(),
            (8 << 20_usize).max(state.limits.max_value_bytes.saturating_mul(2)),
        )
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_token,
        )),
        None => Router::new(),
    };
    Router::new()
        .merge(data)
        .merge(internal)
        .route("/healthz", get(probes::healthz))
        .route("/readyz", get(probes::readyz))
        .route("/metrics", get(probes::metrics))
        .route("/openapi.json", get(probes::openapi))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// Serves [`app`] on `listener` until `shutdown` completes; then `/readyz` turns 503, the
/// listener closes, and in-flight requests get up to `drain` to finish.
///
/// # Errors
/// An I/O error of the listener.
pub async fn run(
    listener: TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    drain: Duration,
) -> io::Result<()> {
    let (draining_tx, draining_rx) = tokio::sync::oneshot::channel::<()>();
    let ready_state = state.clone();
    let signal = async move {
        shutdown.await;
        ready_state.ready.store(false, Ordering::Release);
        tracing::info!(
            drain_secs = drain.as_secs_f64(),
            "shutting down: draining requests"
        );
        let _ = draining_tx.send(());
    };
    let server = axum::serve(listener, app(state)).with_graceful_shutdown(signal);
    let deadline = async move {
        if draining_rx.await.is_ok() {
            tokio::time::sleep(drain).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        result = server => result,
        () = deadline => {
            tracing::warn!("drain timeout passed; closing the remaining connections");
            Ok(())
        }
    }
}

/// Refuses key requests while the data volume is being loaded.
async fn until_loaded(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if state.loaded.load(Ordering::Acquire) {
        Ok(next.run(request).await)
    } else {
        Err(ApiError::NotReady("loading the data volume"))
    }
}

async fn not_found(uri: Uri) -> ApiError {
    ApiError::RouteNotFound {
        path: uri.path().to_string(),
    }
}

async fn method_not_allowed(method: Method) -> ApiError {
    ApiError::MethodNotAllowed {
        method: method.to_string(),
    }
}

/// Records every request's route, method, status and latency.
async fn observe(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = route_label(request.uri().path());
    let method = method_label(request.method());
    let response = next.run(request).await;
    state
        .metrics
        .observe_request(route, method, response.status().as_u16(), started.elapsed());
    response
}

/// The route template of a path: a fixed set, so that label cardinality stays bounded.
fn route_label(path: &str) -> &'static str {
    match path {
        p if p.starts_with(key::PREFIX) && p.len() > key::PREFIX.len() => "/v1/keys/{key}",
        "/v1/keys/" | "/v1/keys" => "/v1/keys/",
        "/v1/batch/get" => "/v1/batch/get",
        "/v1/batch/put" => "/v1/batch/put",
        "/healthz" => "/healthz",
        "/readyz" => "/readyz",
        "/metrics" => "/metrics",
        "/openapi.json" => "/openapi.json",
        "/internal/v1/fetch" => "/internal/v1/fetch",
        "/internal/v1/replicate" => "/internal/v1/replicate",
        "/internal/v1/digests" => "/internal/v1/digests",
        _ => "unmatched",
    }
}

fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::PUT => "PUT",
        Method::POST => "POST",
        Method::DELETE => "DELETE",
        _ => "other",
    }
}
