//! Optional bearer-token authentication (contract 3). Clients: when the cluster names a
//! Secret in `spec.auth`, the operator hands its token to every pod as `TIDECACHE_AUTH_TOKEN`,
//! and every key route then requires `Authorization: Bearer <token>`. Peers: the internal
//! replication routes require the peers' own token (`TIDECACHE_PEER_TOKEN`, from the Secret
//! the operator generates), and never accept the clients' token. Probes, `/metrics` and
//! `/openapi.json` stay open: the kubelet and Prometheus must reach them without a secret.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};

use super::AppState;
use super::error::ApiError;

/// Lets a request through when no token is configured or when it presents the token.
///
/// # Errors
/// [`ApiError::Unauthorized`] otherwise; nothing is read or changed.
pub async fn require_token(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    match &state.auth {
        Some(token) if !token.admits(request.headers().get(header::AUTHORIZATION)) => {
            Err(ApiError::Unauthorized)
        }
        _ => Ok(next.run(request).await),
    }
}

/// Lets a peer's request through when it presents the peers' credential. Without one, the
/// internal routes are open only on a node that authenticates nobody: a client token must
/// never open them. A refusal is a 401 (`unauthorized`) that names the peer token; nothing is
/// read or changed.
pub async fn require_peer_token(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let authorization = request.headers().get(header::AUTHORIZATION);
    let admitted = match (&state.peer_auth, &state.auth) {
        (Some(credential), _) => credential.admits(authorization),
        (None, Some(_)) => false,
        (None, None) => true,
    };
    if admitted {
        return next.run(request).await;
    }
    let body = serde_json::json!({
        "error": "unauthorized",
        "message": "the internal routes take only the peers' token: send 'Authorization: \
                    Bearer <token>' with --peer-token (the Secret <cluster>-peer-token the \
                    operator generates); the clients' token does not open them",
    });
    let mut response = (StatusCode::UNAUTHORIZED, axum::Json(body)).into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"tidecache-peers\""),
    );
    response
}
