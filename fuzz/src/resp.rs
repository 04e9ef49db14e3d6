//! The RESP request parser (`cache_node::parsers::Parser`), fed the input whole and in
//! reads of an input-chosen size.
//!
//! Properties:
//! - the requests taken off the buffer, and the error that ends the stream if any, are the
//!   same however the bytes are split into reads (a request is taken only once complete);
//! - no request carries more argument bytes than the input held;
//! - every request, encoded canonically (`*<n>\r\n$<len>\r\n...`), parses back to itself.

use bytes::{Bytes, BytesMut};
use cache_node::parsers::{FrameError, FrameLimits, Parser};

/// Small limits, so that every limit's refusal is within reach of short inputs.
const LIMITS: FrameLimits = FrameLimits {
    max_bulk: 100,
    max_multibulk: 10,
    max_inline: 64,
    max_query: 1_000,
};

/// What a connection's parser makes of a stream of bytes: the complete requests in order, then
/// the error that closed the connection, if any.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    requests: Vec<Vec<Bytes>>,
    error: Option<FrameError>,
}

/// Feeds `bytes` to a fresh parser in reads of `chunk` bytes, taking every complete request
/// after each read, as the connection loop does.
fn feed(bytes: &[u8], chunk: usize) -> Outcome {
    let mut parser = Parser::new(LIMITS);
    let mut buf = BytesMut::new();
    let mut args = Vec::new();
    let mut requests = Vec::new();
    for piece in bytes.chunks(chunk.max(1)) {
        buf.extend_from_slice(piece);
        loop {
            match parser.next(&mut buf, &mut args) {
                Ok(true) => requests.push(args.clone()),
                Ok(false) => break,
                Err(error) => {
                    return Outcome {
                        requests,
                        error: Some(error),
                    };
                }
            }
        }
    }
    Outcome {
        requests,
        error: None,
    }
}

/// The canonical multibulk encoding of a request.
fn encode(args: &[Bytes]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend(format!("${}\r\n", arg.len()).into_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// The check: the first byte chooses the read size, the rest is the stream.
pub fn check(data: &[u8]) {
    let Some((&chunk, stream)) = data.split_first() else {
        return;
    };
    let whole = feed(stream, stream.len());
    let split = feed(stream, usize::from(chunk % 16) + 1);
    assert_eq!(
        whole, split,
        "the outcome depends on how the bytes were split into reads"
    );
    let argument_bytes: usize = whole.requests.iter().flatten().map(Bytes::len).sum();
    assert!(
        argument_bytes <= stream.len(),
        "the requests carry {argument_bytes} bytes, more than the {} given",
        stream.len()
    );
    for request in &whole.requests {
        assert!(!request.is_empty(), "an empty request was returned");
        let canonical = encode(request);
        let within_limits = request.len() <= LIMITS.max_multibulk
            && request.iter().all(|arg| arg.len() <= LIMITS.max_bulk)
            && canonical.len() <= LIMITS.max_query;
        if within_limits {
            let again = feed(&canonical, canonical.len());
            assert_eq!(
                again,
                Outcome {
                    requests: vec![request.clone()],
                    error: None
                },
                "a parsed request does not survive its canonical encoding"
            );
        }
    }
}
