//! `PUT`, `GET`, `HEAD` and `DELETE` on `/v1/keys/{key}`.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};

use super::error::ApiError;
use super::headers::{self, BUCKET, etag, insert_expiry};
use super::{AppState, ack, body, key, lifetime, query};
use crate::cache::Write;
use crate::store::{EtagMatch, Hit};

/// `GET`: the value with `ETag`, `Expires` and `Tidecache-Ttl`; 304 if `If-None-Match`
/// lists the current ETag (weakly: `W/"x"` lists `"x"`); 404 when absent or expired.
pub async fn get(
    State(state): State<Arc<AppState>>,
    uri: Uri,
    request_headers: HeaderMap,
) -> Result<Response, ApiError> {
    read(&state, &uri, &request_headers, true).await
}

/// `HEAD`: as `GET` without the body (`Content-Length` still says how long it is).
pub async fn head(
    State(state): State<Arc<AppState>>,
    uri: Uri,
    request_headers: HeaderMap,
) -> Result<Response, ApiError> {
    read(&state, &uri, &request_headers, false).await
}

async fn read(
    state: &AppState,
    uri: &Uri,
    request_headers: &HeaderMap,
    with_body: bool,
) -> Result<Response, ApiError> {
    query::parse(uri.query(), &[])?;
    let key = key::from_path(uri.path(), state.cache.limits().max_key_bytes)?;
    let conditions = headers::preconditions(request_headers)?;
    let Hit {
        value,
        version,
        expires_at,
    } = state.cache.get(&key).await?.ok_or(ApiError::KeyNotFound)?;
    let now = state.cache.now();
    let not_modified = conditions
        .if_none_match
        .as_ref()
        .is_some_and(|tags| match tags {
            EtagMatch::Any => true,
            EtagMatch::Versions(versions) => versions.contains(&version),
        });
    let (status, length, body) = if not_modified {
        (StatusCode::NOT_MODIFIED, None, Body::empty())
    } else if with_body {
        (StatusCode::OK, Some(value.len()), Body::from(value))
    } else {
        (StatusCode::OK, Some(value.len()), Body::empty())
    };
    let mut response = (status, body).into_response();
    let response_headers = response.headers_mut();
    response_headers.insert(header::ETAG, etag(version));
    insert_expiry(response_headers, expires_at, now);
    if let Some(length) = length {
        response_headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        response_headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    }
    Ok(response)
}

/// `PUT`: stores the body. 201 when the key had no live entry, 204 when replaced; `ETag`,
/// `Expires`, `Tidecache-Ttl` and `Tidecache-Bucket` describe the stored entry.
pub async fn put(
    State(state): State<Arc<AppState>>,
    uri: Uri,
    request_headers: HeaderMap,
    request_body: Body,
) -> Result<Response, ApiError> {
    let limits = state.cache.limits();
    // Everything about the request is checked before the body is read, so a bad request
    // costs no body transfer.
    let [ttl] = query::parse(uri.query(), &["ttl"])?;
    let key = key::from_path(uri.path(), limits.max_key_bytes)?;
    let conditions = headers::preconditions(&request_headers)?;
    let level = ack::requested_level(&request_headers)?;
    let now = state.cache.now();
    let expires_at = lifetime::expiry(ttl.as_deref(), &request_headers, now, limits)?;
    let value = body::read_limited(
        request_body,
        &request_headers,
        limits.max_value_bytes,
        ApiError::ValueTooLarge {
            max: limits.max_value_bytes,
        },
    )
    .await?;
    let write = Write {
        key,
        value,
        expires_at,
        conditions,
    };
    let written = state.cache.put(write, level).await?;
    let status = if written.created {
        StatusCode::CREATED
    } else {
        StatusCode::NO_CONTENT
    };
    let mut response = status.into_response();
    let response_headers = response.headers_mut();
    response_headers.insert(header::ETAG, etag(written.version));
    // The lifetime granted, measured from the instant it was computed from: a slow disk or
    // replica must not make the response report less than the client asked for.
    insert_expiry(response_headers, expires_at, now);
    ack::insert_ack_headers(response_headers, written.replicated);
    if let Some(bucket) = written
        .bucket
        .and_then(|fire| fire.to_datetime())
        .and_then(tidecache_contract::Bucket::new)
        && let Ok(name) = HeaderValue::from_str(&bucket.dir_name())
    {
        response_headers.insert(BUCKET, name);
    }
    Ok(response)
}

/// `DELETE`: 204, or 404 when absent, or 412 when a precondition fails.
pub async fn delete(
    State(state): State<Arc<AppState>>,
    uri: Uri,
    request_headers: HeaderMap,
) -> Result<Response, ApiError> {
    query::parse(uri.query(), &[])?;
    let key = key::from_path(uri.path(), state.cache.limits().max_key_bytes)?;
    let conditions = headers::preconditions(&request_headers)?;
    let level = ack::requested_level(&request_headers)?;
    let removed = state.cache.delete(key, conditions, level).await?;
    let mut response = StatusCode::NO_CONTENT.into_response();
    ack::insert_ack_headers(response.headers_mut(), removed.replicated);
    Ok(response)
}

/// `/v1/keys/` and `/v1/keys` with any method: the key is missing.
pub async fn empty(State(state): State<Arc<AppState>>, method: Method) -> ApiError {
    match method {
        Method::GET | Method::HEAD | Method::PUT | Method::DELETE => ApiError::EmptyKey {
            max: state.cache.limits().max_key_bytes,
        },
        // `any` routes give the router no list of methods, so the answer names those of
        // the key routes itself.
        other => ApiError::MethodNotAllowed {
            method: other.to_string(),
            allow: Some("GET,HEAD,PUT,DELETE"),
        },
    }
}
