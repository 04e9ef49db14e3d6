//! The HTTPS server the API server calls: `POST /validate` with an `AdmissionReview`, over
//! TLS with the serving certificate of the webhook Secret, swapped in place when it is renewed
//! (connections accepted afterwards use the new one). Requests are bounded in size and time,
//! and connections in number, like every endpoint a client can make us spend on.

use std::net::SocketAddr;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_http::timeout::TimeoutLayer;
use tracing::{debug, info, warn};

use super::admit;
use crate::telemetry::Metrics;

/// The largest review accepted: the API server sends the object and its old version, each at
/// most etcd's 1.5 MiB request limit.
const MAX_REVIEW_BYTES: usize = 4 << 20;
/// Connections served at once; the API server keeps a few open, more are a misbehaving client.
const MAX_CONNECTIONS: usize = 64;
/// How long a client may take for its TLS handshake or a request head.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// Why serving material was refused.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The certificate or key PEM does not parse.
    #[error("the webhook's {what} does not parse: {message}")]
    Pem {
        /// `certificate` or `private key`.
        what: &'static str,
        /// The parser's message.
        message: String,
    },
    /// rustls refused the pair (e.g. the key does not match the certificate).
    #[error("the webhook's certificate and key cannot be used: {0}")]
    Tls(#[from] rustls::Error),
}

/// The certificate the server presents, replaced whole on renewal; none until the first is
/// loaded, and readiness waits for it, so the Service sends the API server only to replicas
/// that can answer.
#[derive(Default)]
pub struct Serving {
    config: RwLock<Option<Arc<ServerConfig>>>,
}

impl Serving {
    /// Serves `cert_pem` with `key_pem` from now on.
    ///
    /// # Errors
    /// [`ServeError`] when the pair does not parse or match; the previous pair stays.
    pub fn load(&self, cert_pem: &str, key_pem: &str) -> Result<(), ServeError> {
        let chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| ServeError::Pem {
                what: "certificate",
                message: error.to_string(),
            })?;
        let key =
            PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|error| ServeError::Pem {
                what: "private key",
                message: error.to_string(),
            })?;
        let mut config =
            ServerConfig::builder_with_provider(rustls::crypto::ring::default_provider().into())
                .with_safe_default_protocol_versions()?
                .with_no_client_auth()
                .with_single_cert(chain, key)?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        *self.config.write().unwrap_or_else(PoisonError::into_inner) = Some(Arc::new(config));
        Ok(())
    }

    /// Whether a certificate is loaded.
    pub fn is_ready(&self) -> bool {
        self.current().is_some()
    }

    fn current(&self) -> Option<Arc<ServerConfig>> {
        self.config
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// What each request needs.
#[derive(Clone)]
struct AppState {
    metrics: Arc<Metrics>,
}

/// The webhook's routes: `POST /validate`.
fn router(metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/validate", post(validate))
        .layer(DefaultBodyLimit::max(MAX_REVIEW_BYTES))
        // The head has IO_TIMEOUT (hyper); this bounds the rest, so a client that sends its
        // body slowly cannot hold one of the MAX_CONNECTIONS slots for long.
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            IO_TIMEOUT,
        ))
        .with_state(AppState { metrics })
}

async fn validate(State(state): State<AppState>, body: Bytes) -> Response {
    let verdict = admit::review(&body);
    state.metrics.admission_review(verdict.denied);
    match serde_json::to_vec(&verdict.review) {
        Ok(json) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            Body::from(json),
        )
            .into_response(),
        Err(error) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode the AdmissionReview: {error}"),
        )
            .into_response(),
    }
}

/// Accepts connections on `listener` until `stop` is cancelled, each served on `tasks` with
/// the certificate loaded at its accept. Connections arriving before a certificate is loaded
/// are closed at once.
pub async fn run(
    listener: TcpListener,
    serving: Arc<Serving>,
    metrics: Arc<Metrics>,
    tasks: TaskTracker,
    stop: CancellationToken,
) {
    let service = TowerToHyperService::new(router(metrics));
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    if let Ok(address) = listener.local_addr() {
        info!(%address, "serving the CacheCluster admission webhook");
    }
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let (tcp, peer) = match accepted {
            Ok(connection) => connection,
            Err(error) => {
                warn!(%error, "accepting a webhook connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            debug!(%peer, "too many webhook connections; closing this one");
            continue;
        };
        let Some(config) = serving.current() else {
            debug!(%peer, "no serving certificate yet; closing the connection");
            continue;
        };
        let service = service.clone();
        let stop = stop.clone();
        tasks.spawn(async move {
            serve_one(tcp, peer, config, service, stop).await;
            drop(slot);
        });
    }
}

/// One connection: the handshake within [`IO_TIMEOUT`], then HTTP/1.1 until the client
/// closes or `stop` is cancelled (the request in progress is finished first).
async fn serve_one(
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    config: Arc<ServerConfig>,
    service: TowerToHyperService<Router>,
    stop: CancellationToken,
) {
    let tls = match tokio::time::timeout(IO_TIMEOUT, TlsAcceptor::from(config).accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(error)) => {
            debug!(%peer, %error, "webhook TLS handshake failed");
            return;
        }
        Err(_) => {
            debug!(%peer, "webhook TLS handshake timed out");
            return;
        }
    };
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(IO_TIMEOUT);
    let connection = builder.serve_connection(TokioIo::new(tls), service);
    tokio::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => {
            if let Err(error) = result {
                debug!(%peer, %error, "webhook connection ended with an error");
            }
        }
        () = stop.cancelled() => {
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::webhook::certs;

    #[test]
    fn a_certificate_with_another_key_is_refused_and_the_old_one_stays() {
        let names = vec!["webhook.test.svc".to_string()];
        let (first, _) = certs::renew(None, &names, std::time::SystemTime::now()).expect("a");
        let (second, _) = certs::renew(None, &names, std::time::SystemTime::now()).expect("b");
        let serving = Serving::default();
        assert!(!serving.is_ready());
        serving
            .load(&first.cert, &first.key)
            .expect("a matching pair");
        assert!(serving.is_ready());
        let before = serving.current().expect("loaded");
        assert!(serving.load(&first.cert, &second.key).is_err());
        assert!(Arc::ptr_eq(&before, &serving.current().expect("kept")));
    }
}
