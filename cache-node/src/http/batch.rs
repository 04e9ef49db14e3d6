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
use axum::response::Response;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Uri, header};
use serde::{Deserialize, Serialize};

use super::error::ApiError;
use super::headers::{self, http_date};
use super::{AppState, ack, body, key, lifetime, query};
use crate::base::time::Timestamp;
use crate::cache::Write;
use crate::store::Hit;

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
    uri: Uri,
    request_headers: HeaderMap,
    request_body: Body,
) -> Result<Response, ApiError> {
    query::parse(uri.query(), &[])?;
    let request: GetRequest = read_json(&state, &request_headers, request_body).await?;
    check_count(&state, request.keys.len())?;
    for (index, key) in request.keys.iter().enumerate() {
        key::check(key.as_bytes(), state.cache.limits().max_key_bytes).map_err(|error| {
            ApiError::BatchEntry {
                index,
                problem: error.to_string(),
            }
        })?;
    }
    let now = state.cache.now();
    let max = state.cache.limits().max_response_bytes;
    let over_budget = || ApiError::OverBudget {
        total: state.cache.inflight().total(),
    };
    // The response is serialized entry by entry into chunks charged to the in-flight budget,
    // and refused as soon as it would pass `max`: a thousand reads of one large value cost
    // at most `max` bytes, never the whole amplification.
    let mut charge = state
        .cache
        .inflight()
        .try_charge(0)
        .ok_or_else(over_budget)?;
    let mut chunks = vec![Bytes::from_static(b"{\"entries\":[")];
    let mut len = chunks[0].len() + RESPONSE_END.len();
    // Read a slice of keys at a time: the misses of each slice make one query of the table
    // behind the cache, and at most a slice of values is held beside the response.
    let mut index = 0;
    for names in request.keys.chunks(READ_SLICE) {
        let keys: Vec<Bytes> = names
            .iter()
            .map(|name| Bytes::copy_from_slice(name.as_bytes()))
            .collect();
        for (key, hit) in names.iter().zip(state.cache.get_many(&keys).await) {
            let key = key.clone();
            let hit = hit?;
            // Refused before the value is encoded, from the encoded length alone.
            let encoded = hit
                .as_ref()
                .map_or(0, |hit| hit.value.len().div_ceil(3) * 4);
            if len + encoded + key.len() > max {
                return Err(ApiError::ResponseTooLarge { max });
            }
            let mut entry = if index == 0 { Vec::new() } else { vec![b','] };
            serde_json::to_writer(&mut entry, &result(key, hit, now))
                .map_err(|_| ApiError::Internal)?;
            len += entry.len();
            if len > max {
                return Err(ApiError::ResponseTooLarge { max });
            }
            if !charge.try_grow(entry.len()) {
                return Err(over_budget());
            }
            chunks.push(Bytes::from(entry));
            index += 1;
        }
    }
    chunks.push(Bytes::from_static(RESPONSE_END));
    let mut response = Response::new(Body::new(body::Charged::new(chunks, charge)));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

/// Keys of a batch get read (and their misses loaded) at a time.
const READ_SLICE: usize = 100;

/// What closes a batch get response, `{"entries": [GetResult, ...]}`.
const RESPONSE_END: &[u8] = b"]}";

/// One key's entry in a batch get response.
fn result(key: String, hit: Option<Hit>, now: Timestamp) -> GetResult {
    match hit {
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
    }
}

/// `POST /v1/batch/put`.
pub async fn put(
    State(state): State<Arc<AppState>>,
    uri: Uri,
    request_headers: HeaderMap,
    request_body: Body,
) -> Result<Json<PutResponse>, ApiError> {
    // Lifetimes are per entry (`ttl`): a `?ttl=` here would be ignored, so it is refused.
    query::parse(uri.query(), &[])?;
    let request: PutRequest = read_json(&state, &request_headers, request_body).await?;
    let level = ack::requested_level(&request_headers)?;
    check_count(&state, request.entries.len())?;
    let now = state.cache.now();
    let (keys, writes): (Vec<String>, Vec<Write>) = request
        .entries
        .into_iter()
        .enumerate()
        .map(|(index, entry)| {
            validate(&state, entry, now).map_err(|error| ApiError::BatchEntry {
                index,
                problem: error.to_string(),
            })
        })
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .unzip();
    let results = state
        .cache
        .put_many(writes, level)
        .await
        .into_iter()
        .zip(keys)
        .map(|(outcome, key)| match outcome {
            Ok(written) => PutResult {
                key,
                status: if written.created { 201 } else { 204 },
                etag: Some(format!("\"{}\"", written.version)),
                expires: written.expires_at.map(date),
                error: None,
                message: None,
            },
            Err(error) => {
                let error = ApiError::from(error);
                PutResult {
                    key,
                    status: error.status().as_u16(),
                    etag: None,
                    expires: None,
                    error: Some(error.code()),
                    message: Some(error.to_string()),
                }
            }
        })
        .collect();
    Ok(Json(PutResponse { results }))
}

/// A batch put entry, checked and decoded: its key as sent (for the results) and the write.
fn validate(
    state: &AppState,
    entry: PutEntry,
    now: Timestamp,
) -> Result<(String, Write), ApiError> {
    let limits = state.cache.limits();
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
    let write = Write {
        key: Bytes::copy_from_slice(entry.key.as_bytes()),
        value: Bytes::from(value),
        expires_at,
        conditions,
    };
    Ok((entry.key, write))
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
    let max = state.cache.limits().max_batch_bytes;
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
    let max = state.cache.limits().max_batch_entries;
    if count > max {
        return Err(ApiError::TooManyEntries { count, max });
    }
    Ok(())
}

fn date(instant: Timestamp) -> String {
    http_date(instant).to_str().unwrap_or_default().to_string()
}
