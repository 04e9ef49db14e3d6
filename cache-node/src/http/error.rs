//! Every way a request can be refused, as one enum whose variants know their HTTP status, a
//! stable machine-readable code and a message saying what to fix. Clients get
//! `{"error": "<code>", "message": "<what to fix>"}`.

use std::time::Duration;

use axum::Json;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};

use super::headers::etag;
use crate::backend::BackendError;
use crate::base::journal::CommitError;
use crate::base::time::Timestamp;
use crate::base::version::Version;
use crate::cache::{LifetimeError, ReadError, Unreachable, WriteError};
use crate::replication::AckError;
use crate::replication::ack::{ACKED_HEADER, REPLICAS_HEADER};
use crate::store::{DeleteError, PutError};

/// A refused request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// `/v1/keys/` with nothing after it.
    #[error("the key is empty; put 1 to {max} bytes after /v1/keys/ (percent-encoded)")]
    EmptyKey {
        /// The maximum key length.
        max: usize,
    },
    /// The decoded key is longer than allowed.
    #[error("the key is {len} bytes after percent-decoding; the maximum is {max} bytes")]
    KeyTooLong {
        /// The decoded key length.
        len: usize,
        /// The maximum.
        max: usize,
    },
    /// A `%` not followed by two hex digits.
    #[error(
        "the key's percent-encoding is malformed at byte {at}: '%' must be followed by two hex \
         digits (send '/' as %2F and '%' as %25)"
    )]
    KeyEncoding {
        /// The offset of the bad `%` in the encoded key.
        at: usize,
    },
    /// A batch key that is not valid (empty or too long).
    #[error("batch entry {index}: {problem}")]
    BatchEntry {
        /// The entry's position in the request.
        index: usize,
        /// What is wrong with it.
        problem: String,
    },
    /// The body is larger than the value limit.
    #[error("the value is larger than the maximum of {max} bytes")]
    ValueTooLarge {
        /// The maximum value size.
        max: usize,
    },
    /// A batch body larger than the batch limit.
    #[error("the batch request body is larger than the maximum of {max} bytes; split it")]
    BatchTooLarge {
        /// The maximum batch body size.
        max: usize,
    },
    /// Too many keys in one batch.
    #[error("the batch has {count} entries; the maximum is {max}, split it")]
    TooManyEntries {
        /// Entries in the request.
        count: usize,
        /// The maximum.
        max: usize,
    },
    /// The `ttl` parameter is not a duration or is zero.
    #[error(
        "ttl \"{value}\" is invalid: write a positive whole number of seconds or a number with \
         s, m or h (e.g. ttl=90s, ttl=15m, ttl=2h)"
    )]
    BadTtl {
        /// The parameter as sent.
        value: String,
    },
    /// The lifetime asked for (by `ttl` or `Expires`) exceeds the maximum TTL.
    #[error("the lifetime of {}s exceeds the maximum TTL of {}s; ask for less", asked.as_secs(), max.as_secs())]
    TtlOverMax {
        /// The lifetime asked for.
        asked: Duration,
        /// The configured maximum.
        max: Duration,
    },
    /// No lifetime given, no default configured, but a maximum is: an entry without expiry
    /// would exceed it.
    #[error(
        "a lifetime is required (the maximum TTL is {}s and there is no default): add ?ttl= or \
         an Expires header", max.as_secs()
    )]
    TtlRequired {
        /// The configured maximum.
        max: Duration,
    },
    /// `Expires` is not an HTTP date.
    #[error(
        "the Expires header \"{value}\" is not an HTTP date; write e.g. \
         \"Sun, 06 Nov 1994 08:49:37 GMT\", or use ?ttl="
    )]
    BadExpires {
        /// The header as sent (lossy).
        value: String,
    },
    /// `Expires` is not in the future.
    #[error("the Expires header is not in the future; the entry would never be readable")]
    ExpiresInPast,
    /// Both `ttl` and `Expires`.
    #[error("give either ?ttl= or an Expires header, not both")]
    TtlAndExpires,
    /// The expiry asked for (by `ttl`, `Expires` or the default TTL) is after the last one
    /// records can hold.
    #[error(
        "the expiry asked for is after {} ({last}), the last one tidecache can store \
         (expiries are kept as 64-bit Unix nanoseconds); send an earlier Expires or a shorter \
         ttl", httpdate::fmt_http_date(last.to_system_time())
    )]
    ExpiryOutOfRange {
        /// The last expiry accepted.
        last: Timestamp,
    },
    /// A query parameter the route does not take: refused rather than ignored, so that a
    /// misspelt `?TTL=` does not store an entry that never expires.
    #[error("unknown query parameter \"{name}\"; {}", accepted_list(accepted))]
    UnknownParameter {
        /// The parameter's name as sent (percent-decoded).
        name: String,
        /// The parameters the route takes.
        accepted: &'static [&'static str],
    },
    /// A query parameter given more than once.
    #[error("the query parameter \"{name}\" is given more than once; give it once")]
    RepeatedParameter {
        /// The parameter's name.
        name: &'static str,
    },
    /// A malformed `If-Match` / `If-None-Match`.
    #[error(
        "the {header} header \"{value}\" is invalid: {problem}; send * or ETags exactly as this \
         server returned them, e.g. \"1795046420000123\""
    )]
    BadPrecondition {
        /// Which header.
        header: &'static str,
        /// The header as sent (lossy).
        value: String,
        /// What is wrong.
        problem: &'static str,
    },
    /// A precondition did not hold.
    #[error("precondition failed: {}", match .current {
        Some(version) => format!("the current ETag is \"{version}\""),
        None => "the key does not exist".to_string(),
    })]
    PreconditionFailed {
        /// The live entry's version, sent back as `ETag`.
        current: Option<Version>,
    },
    /// The key has no live entry.
    #[error("the key does not exist or has expired")]
    KeyNotFound,
    /// A batch body that is not the documented JSON.
    #[error("the request body is not valid JSON of the documented shape: {reason}")]
    BadJson {
        /// serde_json's description.
        reason: String,
    },
    /// A batch body with another content type.
    #[error("send the batch body as Content-Type: application/json")]
    NotJson,
    /// The body could not be read (client went away, malformed chunking).
    #[error("the request body could not be read: {reason}")]
    BodyRead {
        /// What hyper said.
        reason: String,
    },
    /// No room and eviction is off (or the entry is larger than the capacity).
    #[error("{0}")]
    InsufficientStorage(String),
    /// The schedule cannot place the expiry in a bucket.
    #[error("{0}")]
    Unschedulable(String),
    /// No such route.
    #[error("no route {path}; see /openapi.json for the API")]
    RouteNotFound {
        /// The path asked for.
        path: String,
    },
    /// The route exists but not with this method.
    #[error(
        "method {method} is not allowed here; the Allow header lists the methods this route \
         takes (see /openapi.json for the API)"
    )]
    MethodNotAllowed {
        /// The method used.
        method: String,
        /// The `Allow` list to send; `None` where the router adds the route's own list, which
        /// it does for every route whose methods it knows.
        allow: Option<&'static str>,
    },
    /// The data volume is full: the write was not stored.
    #[error("nothing was stored: {0}; free space on the volume or delete entries, then retry")]
    DiskFull(String),
    /// The data volume failed: the write was not stored.
    #[error("nothing was stored: {0}; retry later")]
    PersistenceFailed(String),
    /// `Tidecache-Ack` is not a level.
    #[error("{0}")]
    BadAckLevel(String),
    /// The write was applied here but too few replicas acknowledged it in time: it is not
    /// acknowledged (it may still spread; retrying it is safe).
    #[error(
        "{0}; the write is applied on the replicas that acknowledged and will reach the others \
         when they are reachable, but it is not acknowledged at the level asked for"
    )]
    AckNotReached(AckError),
    /// Partitioned mode: no owner of the key answered this node's forwarded request.
    #[error("{0}; retry, or ask another node")]
    OwnerUnreachable(Unreachable),
    /// The database behind the cache is unavailable, or its write-behind queue is full:
    /// nothing changed; retry later.
    #[error("{0}")]
    BackendUnavailable(BackendError),
    /// The database behind the cache refused the write, or the value does not fit its
    /// column: nothing changed.
    #[error("{0}")]
    BackendRefused(BackendError),
    /// Authentication is on and the request lacks the token (or carries another one).
    #[error(
        "missing or wrong token: send 'Authorization: Bearer <token>' with the token from the \
         Secret named in the CacheCluster's spec.auth"
    )]
    Unauthorized,
    /// The node is not ready (starting or draining).
    #[error("the node is not ready: {0}")]
    NotReady(&'static str),
    /// Request bodies and responses in flight use up the node's budget for them.
    #[error(
        "the node's budget of {total} bytes for request bodies and responses in flight is used \
         up; retry after the Retry-After delay, or send smaller requests"
    )]
    OverBudget {
        /// The budget (`--max-inflight-bytes`).
        total: usize,
    },
    /// The request body did not arrive within `--body-read-timeout`.
    #[error(
        "the request body did not arrive within {}s of its headers; send it at once, or in \
         smaller requests", timeout.as_secs_f64()
    )]
    BodyTimeout {
        /// The timeout.
        timeout: Duration,
    },
    /// A batch read whose response would exceed `--max-response-bytes`.
    #[error(
        "the response would be larger than the maximum of {max} bytes (--max-response-bytes); \
         ask for fewer keys per request"
    )]
    ResponseTooLarge {
        /// The maximum response size.
        max: usize,
    },
    /// A connection beyond `--max-connections`, which serves only the probes and `/metrics`.
    #[error(
        "the node is serving its maximum of {max} connections; this connection serves only \
         /healthz, /readyz and /metrics: retry later, or reuse fewer, busier connections"
    )]
    ServerBusy {
        /// `--max-connections`.
        max: usize,
    },
    /// Something that should not fail did (the metrics could not be encoded, an accepted
    /// write could not be encoded for replication); the log has the details.
    #[error("internal error; the node's log has the details")]
    Internal,
}

impl ApiError {
    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::EmptyKey { .. }
            | ApiError::KeyEncoding { .. }
            | ApiError::BatchEntry { .. }
            | ApiError::TooManyEntries { .. }
            | ApiError::BadTtl { .. }
            | ApiError::TtlOverMax { .. }
            | ApiError::TtlRequired { .. }
            | ApiError::BadExpires { .. }
            | ApiError::ExpiresInPast
            | ApiError::TtlAndExpires
            | ApiError::ExpiryOutOfRange { .. }
            | ApiError::UnknownParameter { .. }
            | ApiError::RepeatedParameter { .. }
            | ApiError::BadPrecondition { .. }
            | ApiError::BadJson { .. }
            | ApiError::BodyRead { .. }
            | ApiError::Unschedulable(_) => StatusCode::BAD_REQUEST,
            ApiError::KeyTooLong { .. } => StatusCode::URI_TOO_LONG,
            ApiError::ValueTooLarge { .. }
            | ApiError::BatchTooLarge { .. }
            | ApiError::ResponseTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::BodyTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            ApiError::OverBudget { .. } | ApiError::ServerBusy { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::NotJson => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::PreconditionFailed { .. } => StatusCode::PRECONDITION_FAILED,
            ApiError::KeyNotFound | ApiError::RouteNotFound { .. } => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::InsufficientStorage(_) | ApiError::DiskFull(_) => {
                StatusCode::INSUFFICIENT_STORAGE
            }
            ApiError::PersistenceFailed(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::NotReady(_)
            | ApiError::AckNotReached(_)
            | ApiError::OwnerUnreachable(_)
            | ApiError::BackendUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::BackendRefused(BackendError::Value { .. }) => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            ApiError::BackendRefused(_) => StatusCode::CONFLICT,
            ApiError::BadAckLevel(_) => StatusCode::BAD_REQUEST,
            ApiError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable code clients can switch on.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::EmptyKey { .. } => "empty_key",
            ApiError::KeyTooLong { .. } => "key_too_long",
            ApiError::KeyEncoding { .. } => "bad_key_encoding",
            ApiError::BatchEntry { .. } => "bad_batch_entry",
            ApiError::ValueTooLarge { .. } => "value_too_large",
            ApiError::BatchTooLarge { .. } => "batch_too_large",
            ApiError::TooManyEntries { .. } => "too_many_entries",
            ApiError::BadTtl { .. } => "bad_ttl",
            ApiError::TtlOverMax { .. } => "ttl_over_max",
            ApiError::TtlRequired { .. } => "ttl_required",
            ApiError::BadExpires { .. } => "bad_expires",
            ApiError::ExpiresInPast => "expires_in_past",
            ApiError::TtlAndExpires => "ttl_and_expires",
            ApiError::ExpiryOutOfRange { .. } => "expiry_out_of_range",
            ApiError::UnknownParameter { .. } => "unknown_parameter",
            ApiError::RepeatedParameter { .. } => "repeated_parameter",
            ApiError::BadPrecondition { .. } => "bad_precondition",
            ApiError::PreconditionFailed { .. } => "precondition_failed",
            ApiError::KeyNotFound => "not_found",
            ApiError::BadJson { .. } => "bad_json",
            ApiError::NotJson => "unsupported_media_type",
            ApiError::BodyRead { .. } => "bad_body",
            ApiError::InsufficientStorage(_) => "insufficient_storage",
            ApiError::Unschedulable(_) => "unschedulable_expiry",
            ApiError::DiskFull(_) => "disk_full",
            ApiError::PersistenceFailed(_) => "persistence_failed",
            ApiError::RouteNotFound { .. } => "no_route",
            ApiError::MethodNotAllowed { .. } => "method_not_allowed",
            ApiError::Unauthorized => "unauthorized",
            ApiError::NotReady(_) => "not_ready",
            ApiError::BadAckLevel(_) => "bad_ack_level",
            ApiError::AckNotReached(_) => "ack_level_not_reached",
            ApiError::OwnerUnreachable(_) => "owner_unreachable",
            ApiError::BackendUnavailable(BackendError::QueueFull { .. }) => "backend_queue_full",
            ApiError::BackendUnavailable(_) => "backend_unavailable",
            ApiError::BackendRefused(BackendError::Value { .. }) => "backend_value",
            ApiError::BackendRefused(_) => "backend_refused",
            ApiError::OverBudget { .. } => "over_memory_budget",
            ApiError::BodyTimeout { .. } => "body_timeout",
            ApiError::ResponseTooLarge { .. } => "response_too_large",
            ApiError::ServerBusy { .. } => "server_busy",
            ApiError::Internal => "internal",
        }
    }

    /// The JSON body.
    pub fn body(&self) -> serde_json::Value {
        serde_json::json!({ "error": self.code(), "message": self.to_string() })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status(), Json(self.body())).into_response();
        if let ApiError::PreconditionFailed {
            current: Some(version),
        } = self
        {
            response.headers_mut().insert(header::ETAG, etag(version));
        }
        if let ApiError::AckNotReached(error) = &self {
            let headers = response.headers_mut();
            headers.insert(ACKED_HEADER, HeaderValue::from(error.acked));
            headers.insert(REPLICAS_HEADER, HeaderValue::from(error.replicas));
        }
        if let ApiError::Unauthorized = self {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"tidecache\""),
            );
        }
        if let ApiError::OverBudget { .. }
        | ApiError::ServerBusy { .. }
        | ApiError::BackendUnavailable(_) = self
        {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if let ApiError::MethodNotAllowed {
            allow: Some(allow), ..
        } = self
        {
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static(allow));
        }
        response
    }
}

impl From<PutError> for ApiError {
    fn from(error: PutError) -> ApiError {
        match error {
            PutError::PreconditionFailed { current } => ApiError::PreconditionFailed { current },
            PutError::AlreadyExpired { .. } => ApiError::ExpiresInPast,
            PutError::NoBucket { .. } => ApiError::Unschedulable(error.to_string()),
            PutError::EntryTooLarge { .. } | PutError::InsufficientStorage { .. } => {
                ApiError::InsufficientStorage(error.to_string())
            }
        }
    }
}

impl From<CommitError> for ApiError {
    fn from(error: CommitError) -> ApiError {
        match error {
            CommitError::DiskFull(_) => ApiError::DiskFull(error.to_string()),
            CommitError::Io(_) | CommitError::Stopped => {
                ApiError::PersistenceFailed(error.to_string())
            }
        }
    }
}

impl From<DeleteError> for ApiError {
    fn from(error: DeleteError) -> ApiError {
        match error {
            DeleteError::NotFound => ApiError::KeyNotFound,
            DeleteError::PreconditionFailed { current } => ApiError::PreconditionFailed { current },
        }
    }
}

impl From<LifetimeError> for ApiError {
    fn from(error: LifetimeError) -> ApiError {
        match error {
            LifetimeError::InPast => ApiError::ExpiresInPast,
            LifetimeError::OverMax { asked, max } => ApiError::TtlOverMax { asked, max },
            LifetimeError::Required { max } => ApiError::TtlRequired { max },
            LifetimeError::AfterLast { last } => ApiError::ExpiryOutOfRange { last },
        }
    }
}

impl From<Unreachable> for ApiError {
    fn from(error: Unreachable) -> ApiError {
        ApiError::OwnerUnreachable(error)
    }
}

impl From<BackendError> for ApiError {
    fn from(error: BackendError) -> ApiError {
        if error.is_transient() {
            ApiError::BackendUnavailable(error)
        } else {
            ApiError::BackendRefused(error)
        }
    }
}

impl From<ReadError> for ApiError {
    fn from(error: ReadError) -> ApiError {
        match error {
            ReadError::Unreachable(error) => ApiError::OwnerUnreachable(error),
            ReadError::Backend(error) => error.into(),
        }
    }
}

impl From<WriteError> for ApiError {
    fn from(error: WriteError) -> ApiError {
        match error {
            WriteError::Put(error) => error.into(),
            WriteError::Delete(error) => error.into(),
            WriteError::Commit(error) => error.into(),
            WriteError::Ack(error) => ApiError::AckNotReached(error),
            WriteError::Encode(error) => {
                tracing::error!(%error, "an accepted write cannot be encoded for replication");
                ApiError::Internal
            }
            WriteError::Unreachable(error) => ApiError::OwnerUnreachable(error),
            WriteError::Backend(error) => error.into(),
        }
    }
}

/// The accepted parameters, as a refusal lists them.
fn accepted_list(accepted: &[&str]) -> String {
    match accepted {
        [] => "this route takes no query parameters".to_string(),
        names => format!(
            "this route takes only {} (names are case-sensitive)",
            names.join(", ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_volume_is_507_disk_full() {
        let full = ApiError::from(CommitError::DiskFull("ENOSPC".to_string()));
        assert_eq!(full.status(), StatusCode::INSUFFICIENT_STORAGE);
        assert_eq!(full.code(), "disk_full");
    }
}
