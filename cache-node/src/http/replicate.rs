//! The replication step of the write path: after the store applied (and, with a data
//! directory, persisted) a write or delete, send it to the key's other replicas and wait for
//! the acknowledgement level the request asks for (`Tidecache-Ack`) or the cluster default.

use http::{HeaderMap, HeaderValue};
use tidecache_contract::disk::RecordRef;

use super::AppState;
use super::error::ApiError;
use crate::clock::Timestamp;
use crate::replication::ack::{ACK_HEADER, ACKED_HEADER, REPLICAS_HEADER};
use crate::replication::{AckLevel, Pending, Replicated};
use crate::store::Version;

/// The acknowledgement level a request asks for; `None` for the cluster default.
///
/// # Errors
/// [`ApiError::BadAckLevel`] for anything but `one`, `quorum` or `all`.
pub fn requested_level(headers: &HeaderMap) -> Result<Option<AckLevel>, ApiError> {
    let Some(value) = headers.get(ACK_HEADER) else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .and_then(|text| text.parse().ok())
        .map(Some)
        .ok_or_else(|| {
            ApiError::BadAckLevel(format!(
                "Tidecache-Ack \"{}\" is not an acknowledgement level: use one, quorum or all",
                String::from_utf8_lossy(value.as_bytes())
            ))
        })
}

/// A write or delete the store applied, as it is replicated.
#[derive(Debug, Clone, Copy)]
pub struct Applied<'a> {
    /// The key.
    pub key: &'a [u8],
    /// The write's version (a delete's tombstone version).
    pub version: Version,
    /// The entry's expiry (a delete: the deleted entry's, which the tombstone keeps).
    pub expires_at: Option<Timestamp>,
    /// The value; `None` for a delete.
    pub value: Option<&'a [u8]>,
}

/// Replicates `applied` and waits for `level`. `None` on a node without replication.
///
/// # Errors
/// [`ApiError::AckNotReached`] when too few replicas acknowledged in time.
pub async fn replicate(
    state: &AppState,
    applied: Applied<'_>,
    level: Option<AckLevel>,
) -> Result<Option<Replicated>, ApiError> {
    match send(state, applied, level).await? {
        Some(pending) => Ok(Some(pending.wait().await.map_err(ApiError::AckNotReached)?)),
        None => Ok(None),
    }
}

/// Queues `applied` for the other replicas without waiting; `None` on a node without
/// replication.
///
/// # Errors
/// [`ApiError::Internal`] for a record that cannot be encoded.
pub async fn send(
    state: &AppState,
    applied: Applied<'_>,
    level: Option<AckLevel>,
) -> Result<Option<Pending>, ApiError> {
    let Some(replication) = &state.replication else {
        return Ok(None);
    };
    let record = RecordRef {
        key: applied.key,
        version: applied.version.to_disk(),
        expiry_unix_nanos: applied
            .expires_at
            .and_then(|expiry| expiry.as_millis().checked_mul(1_000_000)),
        value: applied.value,
    };
    Ok(Some(replication.send(record, level).await?))
}

/// Adds `Tidecache-Acked` and `Tidecache-Replicas` to a response.
pub fn insert_ack_headers(headers: &mut HeaderMap, replicated: Option<Replicated>) {
    if let Some(replicated) = replicated {
        headers.insert(ACKED_HEADER, HeaderValue::from(replicated.acked));
        headers.insert(REPLICAS_HEADER, HeaderValue::from(replicated.replicas));
    }
}
