//! Optional bearer-token authentication (contract 3): when the cluster names a Secret in
//! `spec.auth`, the operator hands its token to every pod as `TIDECACHE_AUTH_TOKEN`, and every
//! key route and internal replication route then requires `Authorization: Bearer <token>`.
//! Probes, `/metrics` and `/openapi.json` stay open: the kubelet and Prometheus must reach
//! them without the application's secret.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use http::header;

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
