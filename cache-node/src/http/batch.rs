//! Batch get and batch put: many keys in one round trip, as JSON.
//!
//! Keys are JSON strings (UTF-8; binary keys use the single-key routes) and values are
//! standard base64. A batch put is validated as a whole before anything is written, so a
//! malformed entry rejects the batch and stores nothing; then each entry is written on its
//! own, and its outcome (201, 204, 412, 507, ...) is reported in `results`, in request order.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, header};
use serde::{Deserialize, Serialize};

use super::error::ApiError;
use super::headers::{self, http_date};
use super::{AppState, body, key, lifetime, replicate};
use crate::clock::Timestamp;
use crate::store::Preconditions;

/// `POST /v1/batch/get` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GetRequest {
    /// The keys to read.
    keys: Vec<String>,
}

/// One key's result in a batch get.
#[derive(Debug, Serialize)]
pub struct GetResult {
    key: String,
    /// Whether the key has a live entry; the fields below are present only if so.
    found: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    etag: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ttl_seconds: Option<u64>,
}

/// `POST /v1/batch/get` response.
#[derive(Debug, Serialize)]
pub struct GetResponse {
    entries: Vec<GetResult>,
}

/// `POST /v1/batch/put` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PutRequest {
    entries: Vec<PutEntry>,
}

/// One entry of a batch put.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PutEntry {
    key: String,
    /// The value, base64.
    value: String,
    /// As `?ttl=` on the single-key route.
    #[serde(default)]
    ttl: Option<String>,
    /// As the `If-Match` header.
    #[serde(default)]
    if_match: Option<String>,
    /// As the `If-None-Match` header.
    #[serde(default)]
    if_none_match: Option<String>,
}

/// One entry's outcome in a batch put.
#[derive(Debug, Serialize)]
pub struct PutResult {
    key: String,
    /// The status the single-key PUT would have answered.
    status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    etag: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<String>,
}

/// `POST /v1/batch/put` response.
#[derive(Debug, Serialize)]
pub struct PutResponse {
    results: Vec<PutResult>,
}

/// `POST /v1/batch/get`.
pub async fn get(
    State(state): State<Arc<AppState>>,
    request_headers: HeaderMap,
    request_body: Body,
) -> Result<Json<GetResponse>, ApiError> {
    let request: GetRequest = read_json(&state, &request_headers, request_body).await?;
    check_count(&state, request.keys.len())?;
    for (index, key) in request.keys.iter().enumerate() {
        key::check(key.as_bytes(), state.limits.max_key_bytes).map_err(|error| {
            ApiError::BatchEntry {
                index,
                problem: error.to_string(),
            }
        })?;
    }
    let now = state.store.clock().now();
    let entries = request
        .keys
        .into_iter()
        .map(|key| match state.store.get(key.as_bytes()) {
            Some(hit) => GetResult {
                found: true,
                value: Some(BASE64.encode(&hit.value)),
                etag: Some(format!("\"{}\"", hit.version)),
                expires: hit.expires_at.map(date),
                ttl_seconds: hit.expires_at.map(|expiry| now.until(expiry).as_secs()),
                key,
            },
            None => GetResult {
                key,
                found: false,
                value: None,
                etag: None,
                expires: None,
                ttl_seconds: None,
            },
        })
        .collect();
    Ok(Json(GetResponse { entries }))
}

/// `POST /v1/batch/put`.
pub async fn put(
    State(state): State<Arc<AppState>>,
    request_headers: HeaderMap,
    request_body: Body,
) -> Result<Json<PutResponse>, ApiError> {
    let request: PutRequest = read_json(&state, &request_headers, request_body).await?;
    let level = replicate::requested_level(&request_headers)?;
    check_count(&state, request.entries.len())?;
    let now = state.store.clock().now();
    let writes = request
        .entries
        .into_iter()
        .enumerate()
        .map(|(index, entry)| {
            validate(&state, entry, now).map_err(|error| ApiError::BatchEntry {
                index,
                problem: error.to_string(),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    // Every entry is applied first and the commits awaited afterwards, so the whole batch
    // shares group commits instead of waiting for one fsync per entry.
    let applied: Vec<_> = writes
        .into_iter()
        .map(|write| {
            let result = state.store.put_journaled(
                write.key.clone(),
                write.value.clone(),
                write.expires_at,
                &write.conditions,
            );
            (write, result)
        })
        .collect();
    let mut results = Vec::with_capacity(applied.len());
    // Then replicated, all entries at once, so that the batch shares the peers' batches too.
    let mut durable = Vec::with_capacity(applied.len());
    for (write, result) in applied {
        let outcome = match result {
            Ok(journaled) => journaled.durable().await.map_err(ApiError::from),
            Err(error) => Err(ApiError::from(error)),
        };
        durable.push((write, outcome));
    }
    let mut pending = Vec::with_capacity(durable.len());
    for (write, outcome) in &durable {
        pending.push(match outcome {
            Ok(outcome) => {
                let applied = replicate::Applied {
                    key: &write.key,
                    version: outcome.version,
                    expires_at: write.expires_at,
                    value: Some(&write.value),
                };
                replicate::send(&state, applied, level).await
            }
            Err(_) => Ok(None),
        });
    }
    for ((write, outcome), pending) in durable.into_iter().zip(pending) {
        let (key, expires_at) = (write.key_text, write.expires_at);
        let replicated = match pending {
            Ok(Some(pending)) => pending
                .wait()
                .await
                .map(drop)
                .map_err(ApiError::AckNotReached),
            Ok(None) => Ok(()),
            Err(error) => Err(error),
        };
        let outcome = outcome.and_then(|outcome| replicated.map(|()| outcome));
        results.push(match outcome {
            Ok(outcome) => PutResult {
                key,
                status: if outcome.created { 201 } else { 204 },
                etag: Some(format!("\"{}\"", outcome.version)),
                expires: expires_at.map(date),
                error: None,
                message: None,
            },
            Err(error) => PutResult {
                key,
                status: error.status().as_u16(),
                etag: None,
                expires: None,
                error: Some(error.code()),
                message: Some(error.to_string()),
            },
        });
    }
    Ok(Json(PutResponse { results }))
}

/// A batch put entry, checked and decoded.
struct Write {
    key_text: String,
    key: Bytes,
    value: Bytes,
    expires_at: Option<Timestamp>,
    conditions: Preconditions,
}

fn validate(state: &AppState, entry: PutEntry, now: Timestamp) -> Result<Write, ApiError> {
    let limits = &state.limits;
    key::check(entry.key.as_bytes(), limits.max_key_bytes)?;
    let value = BASE64
        .decode(&entry.value)
        .map_err(|error| ApiError::BadJson {
            reason: format!("the value is not standard base64: {error}"),
        })?;
    if value.len() > limits.max_value_bytes {
        return Err(ApiError::ValueTooLarge {
            max: limits.max_value_bytes,
        });
    }
    let mut condition_headers = HeaderMap::new();
    for (name, value) in [
        (header::IF_MATCH, &entry.if_match),
        (header::IF_NONE_MATCH, &entry.if_none_match),
    ] {
        if let Some(value) = value {
            let value = HeaderValue::from_str(value).map_err(|_| ApiError::BadPrecondition {
                header: "if_match/if_none_match",
                value: value.clone(),
                problem: "it is not printable ASCII",
            })?;
            condition_headers.insert(name, value);
        }
    }
    let conditions = headers::preconditions(&condition_headers)?;
    let expires_at = lifetime::expiry(entry.ttl.as_deref(), &HeaderMap::new(), now, limits)?;
    Ok(Write {
        key: Bytes::copy_from_slice(entry.key.as_bytes()),
        key_text: entry.key,
        value: Bytes::from(value),
        expires_at,
        conditions,
    })
}

async fn read_json<T: serde::de::DeserializeOwned>(
    state: &AppState,
    request_headers: &HeaderMap,
    request_body: Body,
) -> Result<T, ApiError> {
    let is_json = request_headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_none_or(|value| value.starts_with("application/json"));
    if !is_json {
        return Err(ApiError::NotJson);
    }
    let max = state.limits.max_batch_bytes;
    let bytes = body::read_limited(
        request_body,
        request_headers,
        max,
        ApiError::BatchTooLarge { max },
    )
    .await?;
    serde_json::from_slice(&bytes).map_err(|error| ApiError::BadJson {
        reason: error.to_string(),
    })
}

fn check_count(state: &AppState, count: usize) -> Result<(), ApiError> {
    let max = state.limits.max_batch_entries;
    if count > max {
        return Err(ApiError::TooManyEntries { count, max });
    }
    Ok(())
}

fn date(instant: Timestamp) -> String {
    http_date(instant).to_str().unwrap_or_default().to_string()
}
