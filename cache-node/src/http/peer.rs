//! The internal routes peers call (contract 4): receive a batch, list digests, fetch key
//! ranges, and say where this node serves RESP. They are served under `/internal/v1/` only on
//! a replicated node; the auth layer (and, in Kubernetes, a NetworkPolicy) keeps clients off
//! them. Each only translates into a call of the [`Cache`](crate::cache::Cache).

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http::{StatusCode, header};
use serde_json::json;

use super::AppState;
use crate::base::digest::Cutoff;
use crate::base::node_info::{NODE_PATH, NodeInfo};
use crate::cache::{ForwardError, Limits, PeerError};
use crate::replication::ReceiveError;
use crate::replication::wire::{
    DIGESTS_PATH, FETCH_PATH, FORWARD_CONTENT_TYPE, FORWARD_PATH, Fetch, PARTITIONS_PATH,
    REPLICATE_PATH, SEGMENT_CONTENT_TYPE,
};

/// The internal routes. A batch holds up to the transport's batch size, and one record may
/// be as large as the largest value, so the body limit follows the value limit.
pub fn routes(limits: &Limits) -> Router<Arc<AppState>> {
    let max_body = (8 << 20_usize).max(limits.max_value_bytes.saturating_mul(2));
    Router::new()
        .route(
            REPLICATE_PATH,
            post(replicate).layer(DefaultBodyLimit::max(max_body)),
        )
        .route(
            FORWARD_PATH,
            post(forward).layer(DefaultBodyLimit::max(max_body)),
        )
        .route(DIGESTS_PATH, get(digests))
        .route(FETCH_PATH, post(fetch))
        .route(NODE_PATH, get(node))
        .route(PARTITIONS_PATH, get(partitions))
}

/// Applies a batch. 200 with how many records changed the store; 503 while loading and 400
/// for a damaged batch (nothing applied; the sender retries); 422 `record_refused`, naming
/// the limit, when a record is beyond this node's limits or its version too far ahead of
/// its clock (nothing applied; the sender does not retry it).
async fn replicate(State(state): State<Arc<AppState>>, body: Bytes) -> Response {
    match state.cache.receive(&body) {
        Ok(received) => axum::Json(json!({
            "applied": received.applied,
            "stale": received.stale,
        }))
        .into_response(),
        Err(error) => refusal(&error),
    }
}

/// Serves a request another node forwarded for keys this node owns (partitioned mode): 200
/// with the outcomes, 400 for a body that is not a request.
async fn forward(State(state): State<Arc<AppState>>, body: Bytes) -> Response {
    if !state.cache.is_loaded() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({ "error": "not_ready", "message": "the node is loading" })),
        )
            .into_response();
    }
    match state.cache.serve_forwarded(&body).await {
        Ok(answer) => ([(header::CONTENT_TYPE, FORWARD_CONTENT_TYPE)], answer).into_response(),
        // 503: the sender moves on to the next owner, since nothing was served here.
        Err(error @ ForwardError::NotHeld) => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({ "error": "not_held", "message": error.to_string() })),
        )
            .into_response(),
        Err(error) => (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({ "error": "bad_forward", "message": error.to_string() })),
        )
            .into_response(),
    }
}

/// What this node holds of each partition (partitioned mode's moves): 404 in full mode.
async fn partitions(State(state): State<Arc<AppState>>) -> Response {
    match state.cache.holdings() {
        Ok(holdings) => axum::Json(holdings).into_response(),
        Err(error) => refusal(&error),
    }
}

/// This node's digests of the versions before `?before=` (all without it).
/// Both this and [`fetch`] visit every entry, so they run off the async workers: a large
/// store must not hold up the requests those workers serve meanwhile.
async fn digests(State(state): State<Arc<AppState>>, Query(cutoff): Query<Cutoff>) -> Response {
    let cache = state.cache.clone();
    match tokio::task::spawn_blocking(move || cache.digests(cutoff)).await {
        Ok(Ok(digests)) => axum::Json(digests).into_response(),
        Ok(Err(error)) => refusal(&error),
        Err(error) => scan_failed(&error),
    }
}

/// A scan that panicked or was cancelled: 500, and the peer retries in its next round.
fn scan_failed(error: &tokio::task::JoinError) -> Response {
    tracing::error!(%error, "a scan for a peer failed");
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        axum::Json(json!({ "error": "internal", "message": "the scan failed" })),
    )
        .into_response()
}

/// The records (values and tombstones) of the key ranges a [`Fetch`] names, as a segment.
async fn fetch(
    State(state): State<Arc<AppState>>,
    axum::Json(fetch): axum::Json<Fetch>,
) -> Response {
    let cache = state.cache.clone();
    match tokio::task::spawn_blocking(move || cache.fetch(fetch)).await {
        Ok(Ok(batch)) => ([(header::CONTENT_TYPE, SEGMENT_CONTENT_TYPE)], batch).into_response(),
        Ok(Err(error)) => refusal(&error),
        Err(error) => scan_failed(&error),
    }
}

/// This node's member id and RESP ports, which peers name in `CLUSTER SLOTS` and `-MOVED`
/// (`base::node_info`).
async fn node(State(state): State<Arc<AppState>>) -> axum::Json<NodeInfo> {
    let id = state.cache.topology().and_then(|topology| {
        let local = topology.local?;
        Some(topology.nodes[local].id().to_string())
    });
    axum::Json(NodeInfo {
        id,
        ports: state.resp_ports,
    })
}

fn refusal(error: &PeerError) -> Response {
    let (status, code) = match error {
        PeerError::NotReplicated | PeerError::NotPartitioned => (StatusCode::NOT_FOUND, "no_route"),
        PeerError::Receive(ReceiveError::NotAccepting) => {
            (StatusCode::SERVICE_UNAVAILABLE, "not_ready")
        }
        PeerError::Receive(ReceiveError::Damaged(_)) => (StatusCode::BAD_REQUEST, "bad_batch"),
        PeerError::Receive(ReceiveError::Refused { .. }) => {
            (StatusCode::UNPROCESSABLE_ENTITY, "record_refused")
        }
    };
    (
        status,
        axum::Json(json!({ "error": code, "message": error.to_string() })),
    )
        .into_response()
}
