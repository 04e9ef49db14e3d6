//! The internal routes peers call: receive a batch, list digests, fetch one bucket. They are
//! merged into the node's router under `/internal/v1/`; in Kubernetes a NetworkPolicy (or the
//! auth layer) keeps clients off them.

use std::collections::HashSet;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http::{StatusCode, header};
use serde_json::json;

use super::anti_entropy::apply_all;
use super::wire::{self, DIGESTS_PATH, FETCH_PATH, Fetch, REPLICATE_PATH, SEGMENT_CONTENT_TYPE};
use super::{Cutoff, Replication};

/// The internal routes over `replication`, accepting batches up to `max_body` bytes.
pub fn routes<S>(replication: Arc<Replication>, max_body: usize) -> Router<S> {
    Router::new()
        .route(
            REPLICATE_PATH,
            post(replicate).layer(DefaultBodyLimit::max(max_body)),
        )
        .route(DIGESTS_PATH, get(digests))
        .route(FETCH_PATH, post(fetch))
        .with_state(replication)
}

/// Applies a batch. 200 with how many records changed the store; 400 if the batch is
/// damaged (nothing applied; the sender retries).
async fn replicate(State(replication): State<Arc<Replication>>, body: Bytes) -> Response {
    if !replication.accepts_batches() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({
                "error": "not_ready",
                "message": "the node is loading the data volume; retry later",
            })),
        )
            .into_response();
    }
    let records = match wire::decode_batch(&body) {
        Ok(records) => records,
        Err(error) => {
            return (
                StatusCode::BAD_REQUEST,
                axum::Json(json!({ "error": "bad_batch", "message": error.to_string() })),
            )
                .into_response();
        }
    };
    let (applied, stale) = apply_all(
        &*replication.replica,
        &replication.hlc,
        &*replication.clock,
        records,
        false,
    );
    replication.metrics.applied(applied, stale);
    axum::Json(json!({ "applied": applied, "stale": stale })).into_response()
}

/// This node's digests of the versions before `?before=` (all without it).
async fn digests(
    State(replication): State<Arc<Replication>>,
    Query(cutoff): Query<Cutoff>,
) -> Response {
    axum::Json(replication.replica.digests(cutoff)).into_response()
}

/// The records (values and tombstones) of the key ranges a [`Fetch`] names, as a segment.
async fn fetch(
    State(replication): State<Arc<Replication>>,
    axum::Json(fetch): axum::Json<Fetch>,
) -> Response {
    let ranges: HashSet<(i64, u16)> = fetch.ranges.into_iter().collect();
    let cutoff = Cutoff {
        before: fetch.before,
    };
    let mut encoded = Vec::new();
    for record in replication.replica.range_records(&ranges, cutoff) {
        match wire::encode_record(record.borrowed()) {
            Ok(bytes) => encoded.push(bytes),
            Err(error) => tracing::error!(%error, "a stored record cannot be encoded"),
        }
    }
    (
        [(header::CONTENT_TYPE, SEGMENT_CONTENT_TYPE)],
        wire::batch(&encoded),
    )
        .into_response()
}
