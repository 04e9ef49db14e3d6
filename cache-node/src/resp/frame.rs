//! Requests off the wire: RESP multibulk (`*<n>\r\n$<len>\r\n<bytes>\r\n...`, what every
//! client library and `redis-benchmark` send) and inline commands (`PING\r\n`, what a
//! person types into `telnet`), parsed incrementally from a connection's read buffer with
//! the limits Redis applies.
//!
//! Hand-written rather than `redis-protocol`: a server only ever decodes requests, which are
//! arrays of bulk strings or inline lines. `redis-protocol` 6 decodes any reply frame but no
//! inline commands, and has no limit on a declared length, so a client announcing a 4 GiB
//! bulk would be buffered up to the query limit before anything could refuse it; here a
//! length is refused as soon as its line is read.
//!
//! # Guarantees
//! - A request is taken off the buffer only once it is complete; the arguments are slices of
//!   one frozen copy-free `Bytes` of it.
//! - An incomplete request is not scanned again until as many bytes as it is known to need
//!   have arrived, so a large value arriving in many reads costs one scan.
//! - Any malformed or over-limit request is a [`FrameError`] (the connection is then closed).

use std::ops::Range;

use bytes::{Buf, Bytes, BytesMut};

use super::error::FrameError;

/// The limits on a request, as Redis names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameLimits {
    /// `proto-max-bulk-len`: the longest bulk string.
    pub max_bulk: usize,
    /// The most elements of a multibulk request.
    pub max_multibulk: usize,
    /// The longest inline request, and the longest `*<n>` / `$<n>` line.
    pub max_inline: usize,
    /// `client-query-buffer-limit`: the largest request.
    pub max_query: usize,
}

impl FrameLimits {
    /// Limits for values of up to `max_value` bytes: a bulk string a little longer than a
    /// value (so that an oversized one is refused with a clear error, not a closed
    /// connection), and a query buffer that holds the largest batch of them.
    pub fn for_values(max_value: usize, max_batch: usize) -> FrameLimits {
        FrameLimits {
            max_bulk: max_value.saturating_add(BULK_SLACK),
            max_multibulk: 1024 * 1024,
            max_inline: 64 * 1024,
            max_query: max_batch
                .max(max_value.saturating_mul(2))
                .saturating_add(BULK_SLACK),
        }
    }
}

/// How much longer than the value limit a bulk string may be.
const BULK_SLACK: usize = 64 * 1024;

/// How many argument slots a request reserves before it has read them: a `*1000000` line
/// alone must not allocate for a million arguments.
const PREALLOCATED_ARGS: usize = 64;

/// One connection's parser: its limits and the state of an incomplete request.
#[derive(Debug)]
pub struct Parser {
    /// The limits.
    limits: FrameLimits,
    /// Where the arguments of the request being parsed are in the buffer; reused.
    ranges: Vec<Range<usize>>,
    /// Bytes the buffer must hold before the incomplete request at its front is worth
    /// scanning again.
    needed: usize,
}

/// What a scan of the buffer's front found.
enum Scan {
    /// A request of this many bytes (its arguments in `ranges`; none for an empty one).
    Complete(usize),
    /// Not complete; at least this many bytes are needed.
    Incomplete(usize),
}

impl Parser {
    /// A parser enforcing `limits`.
    pub fn new(limits: FrameLimits) -> Parser {
        Parser {
            limits,
            ranges: Vec::with_capacity(PREALLOCATED_ARGS),
            needed: 0,
        }
    }

    /// Takes the next complete request off the front of `buf` and puts its arguments in
    /// `args` (cleared first). `Ok(false)` when no complete request is buffered (`buf` is
    /// then unchanged). Empty requests (`*0`, a blank line) are skipped.
    ///
    /// # Errors
    /// [`FrameError`]: the request breaks the protocol or a limit.
    pub fn next(&mut self, buf: &mut BytesMut, args: &mut Vec<Bytes>) -> Result<bool, FrameError> {
        args.clear();
        loop {
            if buf.is_empty() || buf.len() < self.needed {
                return Ok(false);
            }
            let inline = buf[0] != b'*';
            let scan = if inline {
                self.scan_inline(buf, args)?
            } else {
                self.scan_multibulk(buf)?
            };
            match scan {
                Scan::Incomplete(needed) => {
                    if needed > self.limits.max_query {
                        return Err(FrameError::QueryBufferFull {
                            limit: self.limits.max_query,
                        });
                    }
                    self.needed = needed;
                    return Ok(false);
                }
                Scan::Complete(len) if len > self.limits.max_query => {
                    return Err(FrameError::QueryBufferFull {
                        limit: self.limits.max_query,
                    });
                }
                Scan::Complete(len) => {
                    self.needed = 0;
                    if inline {
                        buf.advance(len);
                        if args.is_empty() {
                            continue;
                        }
                        return Ok(true);
                    }
                    let frame = buf.split_to(len).freeze();
                    if self.ranges.is_empty() {
                        continue;
                    }
                    args.extend(self.ranges.drain(..).map(|range| frame.slice(range)));
                    return Ok(true);
                }
            }
        }
    }

    /// A multibulk request at the front of `buf`.
    fn scan_multibulk(&mut self, buf: &[u8]) -> Result<Scan, FrameError> {
        self.ranges.clear();
        let Some((count, mut at)) = self.line(buf, 1, FrameError::MultibulkLineTooLong)? else {
            return Ok(Scan::Incomplete(buf.len() + 1));
        };
        let count = parse_length(count).ok_or(FrameError::MultibulkLength)?;
        let Some(count) = count else {
            return Ok(Scan::Complete(at)); // `*-1`: nothing
        };
        if count > self.limits.max_multibulk {
            return Err(FrameError::MultibulkLength);
        }
        self.ranges.reserve(count.min(PREALLOCATED_ARGS));
        for _ in 0..count {
            let Some(&kind) = buf.get(at) else {
                return Ok(Scan::Incomplete(at + 1));
            };
            if kind != b'$' {
                return Err(FrameError::ExpectedBulk(char::from(kind)));
            }
            let Some((len, start)) = self.line(buf, at + 1, FrameError::BulkLineTooLong)? else {
                return Ok(Scan::Incomplete(buf.len() + 1));
            };
            let len = parse_length(len)
                .flatten()
                .filter(|len| *len <= self.limits.max_bulk)
                .ok_or(FrameError::BulkLength)?;
            let end = start + len;
            if buf.len() < end + 2 {
                return Ok(Scan::Incomplete(end + 2));
            }
            if &buf[end..end + 2] != b"\r\n" {
                return Err(FrameError::ExpectedCrlf);
            }
            self.ranges.push(start..end);
            at = end + 2;
        }
        Ok(Scan::Complete(at))
    }

    /// An inline request at the front of `buf`, split into `args` as Redis splits it
    /// (spaces separate; double quotes with `\n`, `\xHH`-style escapes, single quotes).
    fn scan_inline(&self, buf: &[u8], args: &mut Vec<Bytes>) -> Result<Scan, FrameError> {
        let window = &buf[..buf.len().min(self.limits.max_inline)];
        let Some(newline) = window.iter().position(|&b| b == b'\n') else {
            if buf.len() >= self.limits.max_inline {
                return Err(FrameError::InlineTooLong);
            }
            return Ok(Scan::Incomplete(buf.len() + 1));
        };
        let line = &buf[..newline];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        split_inline(line, args)?;
        Ok(Scan::Complete(newline + 1))
    }

    /// The text of the CRLF-terminated line starting at `from`, and where the next one
    /// starts; `None` if it is not complete yet.
    fn line<'a>(
        &self,
        buf: &'a [u8],
        from: usize,
        too_long: FrameError,
    ) -> Result<Option<(&'a [u8], usize)>, FrameError> {
        let rest = &buf[from.min(buf.len())..];
        let window = &rest[..rest.len().min(self.limits.max_inline)];
        match window.iter().position(|&b| b == b'\r') {
            Some(cr) if cr + 1 < rest.len() => Ok(Some((&rest[..cr], from + cr + 2))),
            Some(_) => Ok(None),
            None if rest.len() >= self.limits.max_inline => Err(too_long),
            None => Ok(None),
        }
    }
}

/// A `*`/`$` length: `Some(None)` for -1 (a null), `None` if it is not a length.
fn parse_length(text: &[u8]) -> Option<Option<usize>> {
    if text == b"-1" {
        return Some(None);
    }
    if text.is_empty() || text.len() > 18 || !text.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(text).ok()?.parse().ok().map(Some)
}

/// Splits an inline line into arguments the way Redis' `sdssplitargs` does.
fn split_inline(line: &[u8], args: &mut Vec<Bytes>) -> Result<(), FrameError> {
    let mut at = 0;
    loop {
        while at < line.len() && line[at].is_ascii_whitespace() {
            at += 1;
        }
        if at == line.len() {
            return Ok(());
        }
        let mut arg = Vec::new();
        match line[at] {
            b'"' => {
                at += 1;
                loop {
                    match line.get(at..) {
                        Some([b'\\', b'x', high, low, ..])
                            if high.is_ascii_hexdigit() && low.is_ascii_hexdigit() =>
                        {
                            arg.push(hex(*high) << 4 | hex(*low));
                            at += 4;
                        }
                        Some([b'\\', escaped, ..]) => {
                            arg.push(match escaped {
                                b'n' => b'\n',
                                b'r' => b'\r',
                                b't' => b'\t',
                                b'b' => 0x08,
                                b'a' => 0x07,
                                other => *other,
                            });
                            at += 2;
                        }
                        Some([b'"', ..]) => {
                            at += 1;
                            break;
                        }
                        Some([byte, ..]) => {
                            arg.push(*byte);
                            at += 1;
                        }
                        _ => return Err(FrameError::UnbalancedQuotes),
                    }
                }
                if line.get(at).is_some_and(|b| !b.is_ascii_whitespace()) {
                    return Err(FrameError::UnbalancedQuotes);
                }
            }
            b'\'' => {
                at += 1;
                loop {
                    match line.get(at..) {
                        Some([b'\\', b'\'', ..]) => {
                            arg.push(b'\'');
                            at += 2;
                        }
                        Some([b'\'', ..]) => {
                            at += 1;
                            break;
                        }
                        Some([byte, ..]) => {
                            arg.push(*byte);
                            at += 1;
                        }
                        _ => return Err(FrameError::UnbalancedQuotes),
                    }
                }
                if line.get(at).is_some_and(|b| !b.is_ascii_whitespace()) {
                    return Err(FrameError::UnbalancedQuotes);
                }
            }
            _ => {
                while at < line.len() && !line[at].is_ascii_whitespace() {
                    arg.push(line[at]);
                    at += 1;
                }
            }
        }
        args.push(Bytes::from(arg));
    }
}

fn hex(digit: u8) -> u8 {
    match digit {
        b'0'..=b'9' => digit - b'0',
        b'a'..=b'f' => digit - b'a' + 10,
        _ => digit - b'A' + 10,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn limits() -> FrameLimits {
        FrameLimits {
            max_bulk: 100,
            max_multibulk: 10,
            max_inline: 64,
            max_query: 1_000,
        }
    }

    fn encode(args: &[Vec<u8>]) -> Vec<u8> {
        let mut out = format!("*{}\r\n", args.len()).into_bytes();
        for arg in args {
            out.extend(format!("${}\r\n", arg.len()).into_bytes());
            out.extend(arg);
            out.extend(b"\r\n");
        }
        out
    }

    /// Everything `parser` takes off `bytes` fed in `chunks`-sized reads.
    fn feed(bytes: &[u8], chunk: usize) -> Result<Vec<Vec<Vec<u8>>>, FrameError> {
        let mut parser = Parser::new(limits());
        let mut buf = BytesMut::new();
        let mut args = Vec::new();
        let mut out = Vec::new();
        for piece in bytes.chunks(chunk.max(1)) {
            buf.extend_from_slice(piece);
            while parser.next(&mut buf, &mut args)? {
                out.push(args.iter().map(|a| a.to_vec()).collect());
            }
        }
        Ok(out)
    }

    proptest! {
        /// Pipelined requests come out whole and in order however the bytes are split
        /// into reads.
        #[test]
        fn requests_survive_any_split(
            requests in proptest::collection::vec(
                proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 1..6),
                1..6,
            ),
            chunk in 1_usize..64,
        ) {
            let bytes: Vec<u8> = requests.iter().flat_map(|r| encode(r)).collect();
            prop_assert_eq!(feed(&bytes, chunk)?, requests);
        }

        /// Garbage never panics and never yields more than it was given.
        #[test]
        fn garbage_is_refused_or_parsed_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(requests) = feed(&bytes, 7) {
                let total: usize = requests.iter().flatten().map(Vec::len).sum();
                prop_assert!(total <= bytes.len());
            }
        }
    }

    #[test]
    fn inline_requests_split_like_redis() {
        let parsed = feed(
            b"PING\r\nset k \"a b\\x41\\n\" 'it\\'s'\n\r\n  \r\nGET k\r\n",
            3,
        )
        .expect("valid");
        let expected: Vec<Vec<Vec<u8>>> = vec![
            vec![b"PING".to_vec()],
            vec![
                b"set".to_vec(),
                b"k".to_vec(),
                b"a bA\n".to_vec(),
                b"it's".to_vec(),
            ],
            vec![b"GET".to_vec(), b"k".to_vec()],
        ];
        assert_eq!(parsed, expected);
        assert_eq!(feed(b"set \"a\r\n", 100), Err(FrameError::UnbalancedQuotes));
        assert_eq!(
            feed(b"set \"a\"b\r\n", 100),
            Err(FrameError::UnbalancedQuotes)
        );
    }

    #[test]
    fn limits_are_enforced_before_buffering() {
        assert_eq!(feed(b"*11\r\n", 100), Err(FrameError::MultibulkLength));
        assert_eq!(feed(b"*x\r\n", 100), Err(FrameError::MultibulkLength));
        assert_eq!(feed(b"*1\r\n$101\r\n", 100), Err(FrameError::BulkLength));
        assert_eq!(feed(b"*1\r\n$-1\r\n", 100), Err(FrameError::BulkLength));
        assert_eq!(
            feed(b"*1\r\n:1\r\n", 100),
            Err(FrameError::ExpectedBulk(':'))
        );
        assert_eq!(
            feed(b"*1\r\n$1\r\nab\r\n", 100),
            Err(FrameError::ExpectedCrlf)
        );
        assert_eq!(feed(&[b'a'; 65], 100), Err(FrameError::InlineTooLong));
        let mut long_count = b"*".to_vec();
        long_count.extend([b'1'; 70]);
        assert_eq!(
            feed(&long_count, 100),
            Err(FrameError::MultibulkLineTooLong)
        );
        // 10 bulks of 100 bytes announce more than the 1000-byte query buffer.
        let mut big = b"*10\r\n".to_vec();
        for _ in 0..10 {
            big.extend(b"$100\r\n");
            big.extend([b'x'; 100]);
            big.extend(b"\r\n");
        }
        assert_eq!(
            feed(&big, 2_000),
            Err(FrameError::QueryBufferFull { limit: 1_000 })
        );
        assert_eq!(
            feed(b"*0\r\n*-1\r\n*1\r\n$0\r\n\r\n", 100),
            Ok(vec![vec![vec![]]])
        );
    }
}
