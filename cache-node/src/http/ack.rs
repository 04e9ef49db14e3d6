//! The acknowledgement level a write asks for (`Tidecache-Ack`), and the headers that report
//! how many replicas acknowledged it.

use http::{HeaderMap, HeaderValue};

use super::error::ApiError;
use crate::replication::ack::{ACK_HEADER, ACKED_HEADER, REPLICAS_HEADER};
use crate::replication::{AckLevel, Replicated};

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

/// Adds `Tidecache-Acked` and `Tidecache-Replicas` to a response.
pub fn insert_ack_headers(headers: &mut HeaderMap, replicated: Option<Replicated>) {
    if let Some(replicated) = replicated {
        headers.insert(ACKED_HEADER, HeaderValue::from(replicated.acked));
        headers.insert(REPLICAS_HEADER, HeaderValue::from(replicated.replicas));
    }
}
