//! Liveness, readiness and metrics endpoints, and the API description.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, header};

use super::error::ApiError;
use super::{AppState, openapi};
use crate::metrics;

/// `/healthz`: the process is alive and serving HTTP.
pub async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

/// `/readyz`: the node holds its data and accepts traffic; 503 while the data volume is being
/// loaded, and while draining, so that the Service stops sending new requests before the
/// process exits.
pub async fn readyz(
    State(state): State<Arc<AppState>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    if !state.cache.is_serving() {
        Err(ApiError::NotReady("shutting down"))
    } else if !state.cache.is_loaded() {
        Err(ApiError::NotReady("loading the data volume"))
    } else {
        Ok(Json(serde_json::json!({ "status": "ready" })))
    }
}

/// `/metrics`: OpenMetrics text.
pub async fn metrics(State(state): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let text = state
        .cache
        .metrics()
        .encode()
        .map_err(|_| ApiError::Internal)?;
    let mut response = text.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(metrics::CONTENT_TYPE),
    );
    Ok(response)
}

/// `/openapi.json`: the OpenAPI 3.1 description of every route.
pub async fn openapi(State(state): State<Arc<AppState>>) -> Json<serde_json::Value> {
    Json(openapi::document(state.cache.limits()))
}
