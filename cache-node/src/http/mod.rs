//! The HTTP API (contract 3): routes, the request middleware, and the server loop.
//!
//! # Layout
//! - `keys`: single-key `PUT`/`GET`/`HEAD`/`DELETE`; `batch`: batch get and put; `peer`: the
//!   internal routes peers call.
//! - `probes`: `/healthz`, `/readyz`, `/metrics`, `/openapi.json`; `openapi`: the document.
//! - `error`: every refusal with its status and JSON body; `headers`, `key`, `lifetime`,
//!   `query`, `body`, `ack`: parsing what a request carries; `auth`: the bearer-token check.
//! - `serve`: the server loop: one hyper connection per socket under the connection cap,
//!   the timeouts and the in-flight memory budget (`docs/limits.md`).
//!
//! Every handler only translates: it parses the request, calls the [`Cache`], and renders
//! the outcome. The write path itself is `cache::write`.
//!
//! [`app`] builds the router from an [`AppState`], so tests drive it in-process; [`run`]
//! serves it on a listener until a shutdown future completes, then drains.

mod ack;
mod auth;
mod batch;
mod body;
mod error;
mod headers;
mod key;
mod keys;
mod lifetime;
mod openapi;
mod peer;
mod probes;
mod query;
mod serve;

#[cfg(test)]
mod tests;

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{any, get, post};
use http::{Method, Uri};
use tokio::net::TcpListener;

use crate::base::auth::{AuthToken, PeerCredential};
use crate::base::node_info::RespPorts;
use crate::base::tls::ServerTls;
use crate::cache::Cache;
pub use error::ApiError;
pub use headers::preconditions;
pub use lifetime::expiry;
pub use serve::{PROBE_RESERVE, ServeSettings};

/// What every handler shares.
#[derive(Debug)]
pub struct AppState {
    /// The cache every route calls.
    pub cache: Arc<Cache>,
    /// The bearer token key routes require; `None` serves them openly. It never opens the
    /// internal routes.
    pub auth: Option<AuthToken>,
    /// The token the internal routes require (see [`PeerCredential`]); `None` serves them
    /// openly only when `auth` is `None` too, and refuses every internal call otherwise.
    pub peer_auth: Option<PeerCredential>,
    /// The server loop's bounds: connections and timeouts.
    pub serve: ServeSettings,
    /// Where this node serves RESP, told to peers at `/internal/v1/node`.
    pub resp_ports: RespPorts,
}

impl AppState {
    /// State over `cache`, serving key and internal routes openly.
    pub fn new(cache: Arc<Cache>) -> AppState {
        AppState {
            cache,
            auth: None,
            peer_auth: None,
            serve: ServeSettings::default(),
            resp_ports: RespPorts::default(),
        }
    }

    /// The same state served under `serve`'s bounds.
    pub fn with_serve(self, serve: ServeSettings) -> AppState {
        AppState { serve, ..self }
    }

    /// The same state with key routes requiring `token`.
    pub fn with_auth(self, token: Option<AuthToken>) -> AppState {
        AppState {
            auth: token,
            ..self
        }
    }

    /// The same state telling peers that RESP is served on `ports`.
    pub fn with_resp_ports(self, ports: RespPorts) -> AppState {
        AppState {
            resp_ports: ports,
            ..self
        }
    }

    /// The same state with internal routes requiring the peers' `credential`.
    pub fn with_peer_auth(self, credential: Option<PeerCredential>) -> AppState {
        AppState {
            peer_auth: credential,
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
    let internal = if state.cache.is_replicated() {
        peer::routes(state.cache.limits()).route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_peer_token,
        ))
    } else {
        Router::new()
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

/// Serves [`app`] on `listener` under the bounds of `state.serve` until `shutdown`
/// completes; then `/readyz` turns 503, the listener closes, and in-flight requests get up to
/// `drain` to finish (see `serve`).
///
/// # Errors
/// None so far: a failed accept is logged and retried.
pub async fn run(
    listener: TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    drain: Duration,
) -> io::Result<()> {
    serve::serve(listener, None, state, shutdown, drain).await
}

/// [`run`] over TLS: every connection accepted on `listener` handshakes with `tls`'s
/// current certificate, then is served the same API under the same bounds.
///
/// # Errors
/// As [`run`].
pub async fn run_tls(
    listener: TcpListener,
    tls: Arc<ServerTls>,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    drain: Duration,
) -> io::Result<()> {
    serve::serve(listener, Some(tls), state, shutdown, drain).await
}

/// Refuses key requests while the data volume is being loaded.
async fn until_loaded(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if state.cache.is_loaded() {
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

/// A known path with a method it does not take. The router adds the route's own `Allow`
/// list to the answer (it does so whenever the handler sets none).
async fn method_not_allowed(method: Method) -> ApiError {
    ApiError::MethodNotAllowed {
        method: method.to_string(),
        allow: None,
    }
}

/// Records every request's route, method, status and latency.
async fn observe(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = route_label(request.uri().path());
    let method = method_label(request.method());
    let response = next.run(request).await;
    state.cache.metrics().observe_request(
        route,
        method,
        response.status().as_u16(),
        started.elapsed(),
    );
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
        "/internal/v1/node" => "/internal/v1/node",
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
