//! Reading request bodies under a size limit, without ever buffering more than the limit;
//! and [`Charged`], a response body whose bytes stay charged to the in-flight budget until it
//! is sent.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::Body;
use bytes::{Bytes, BytesMut};
use http::{HeaderMap, header};
use http_body_util::BodyExt;
use hyper::body::{Frame, SizeHint};

use super::error::ApiError;
use super::serve::BodyBound;
use crate::cache::Charge;

/// Reads `body` if it is at most `max` bytes; `too_large` otherwise.
///
/// A declared `Content-Length` above `max` is refused before any byte is read; a body
/// without one is refused as soon as it passes `max`. The bytes are copied into an
/// allocation of their own size: a value kept as a slice of hyper's read buffer would pin
/// the whole buffer for the entry's lifetime, uncounted.
///
/// # Errors
/// `too_large`; [`ApiError::OverBudget`] or [`ApiError::BodyTimeout`] when the server loop
/// stopped the body (see `serve`); [`ApiError::BodyRead`] if the body cannot be read.
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
        let frame = frame.map_err(read_error)?;
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

/// The refusal for a body that failed: the server loop's bound if it stopped the body, else
/// what the connection reported.
fn read_error(error: axum::Error) -> ApiError {
    let error = error.into_inner();
    match error.downcast_ref::<BodyBound>() {
        Some(BodyBound::OverBudget { total }) => ApiError::OverBudget { total: *total },
        Some(BodyBound::TimedOut { timeout }) => ApiError::BodyTimeout { timeout: *timeout },
        None => ApiError::BodyRead {
            reason: error.to_string(),
        },
    }
}

/// A response body built in chunks whose bytes are charged to the in-flight budget: the
/// charge is given back when the body is dropped, that is once hyper has written it (or the
/// client went away).
#[derive(Debug)]
pub struct Charged {
    chunks: VecDeque<Bytes>,
    remaining: u64,
    _charge: Charge,
}

impl Charged {
    /// A body of `chunks`, in order, holding `charge`.
    pub fn new(chunks: Vec<Bytes>, charge: Charge) -> Charged {
        let remaining = chunks.iter().map(|chunk| chunk.len() as u64).sum();
        Charged {
            chunks: chunks.into(),
            remaining,
            _charge: charge,
        }
    }
}

impl hyper::body::Body for Charged {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let chunk = self.chunks.pop_front();
        if let Some(chunk) = &chunk {
            self.remaining -= chunk.len() as u64;
        }
        Poll::Ready(chunk.map(|chunk| Ok(Frame::data(chunk))))
    }

    fn is_end_stream(&self) -> bool {
        self.chunks.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}
