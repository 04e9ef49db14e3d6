//! Reading request bodies under a size limit, without ever buffering more than the limit.

use axum::body::Body;
use bytes::{Bytes, BytesMut};
use http::{HeaderMap, header};
use http_body_util::BodyExt;

use super::error::ApiError;

/// Reads `body` if it is at most `max` bytes; `too_large` otherwise.
///
/// A declared `Content-Length` above `max` is refused before any byte is read; a body
/// without one is refused as soon as it passes `max`. The bytes are copied into an
/// allocation of their own size: a value kept as a slice of hyper's read buffer would pin
/// the whole buffer for the entry's lifetime, uncounted.
///
/// # Errors
/// `too_large`, or [`ApiError::BodyRead`] if the body cannot be read.
pub async fn read_limited(
    body: Body,
    headers: &HeaderMap,
    max: usize,
    too_large: ApiError,
) -> Result<Bytes, ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|text| text.parse::<u64>().ok());
    if declared.is_some_and(|len| len > max as u64) {
        return Err(too_large);
    }
    let mut buffer = BytesMut::with_capacity(declared.map_or(0, |len| len as usize));
    let mut body = body;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|error| ApiError::BodyRead {
            reason: error.to_string(),
        })?;
        if let Ok(data) = frame.into_data() {
            if buffer.len() + data.len() > max {
                return Err(too_large);
            }
            buffer.extend_from_slice(&data);
        }
    }
    if buffer.capacity() == buffer.len() {
        Ok(buffer.freeze())
    } else {
        Ok(Bytes::copy_from_slice(&buffer))
    }
}
