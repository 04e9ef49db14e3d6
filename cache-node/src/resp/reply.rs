//! Replies onto the wire, in the protocol the connection speaks: RESP2 by default, RESP3
//! after `HELLO 3` (nulls, maps, sets and verbatim strings get their own types there; no
//! string command replies with a double, `INCRBYFLOAT` answers a bulk string in both).
//! Replies are written straight into the connection's output buffer, so a `GET` allocates
//! nothing.

use std::fmt::Write as _;

use bytes::{BufMut, BytesMut};

use super::error::CommandError;

/// The protocol version of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// RESP2, the default.
    Resp2,
    /// RESP3, after `HELLO 3`.
    Resp3,
}

impl Protocol {
    /// The number `HELLO` and `CLIENT INFO` report.
    pub fn number(self) -> i64 {
        match self {
            Protocol::Resp2 => 2,
            Protocol::Resp3 => 3,
        }
    }
}

/// A writer of replies into a connection's output buffer.
#[derive(Debug)]
pub struct Reply<'a> {
    /// The output buffer, flushed once per read.
    out: &'a mut BytesMut,
    /// The connection's protocol.
    protocol: Protocol,
}

impl<'a> Reply<'a> {
    /// Replies into `out` in `protocol`.
    pub fn new(out: &'a mut BytesMut, protocol: Protocol) -> Reply<'a> {
        Reply { out, protocol }
    }

    /// The protocol replies are written in.
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// Switches the protocol (`HELLO`, `RESET`): the reply to that command is already in it.
    pub fn set_protocol(&mut self, protocol: Protocol) {
        self.protocol = protocol;
    }

    /// Bytes in the output buffer (this reply's and earlier ones not yet written).
    pub fn len(&self) -> usize {
        self.out.len()
    }

    /// `+OK`.
    pub fn ok(&mut self) {
        self.out.put_slice(b"+OK\r\n");
    }

    /// A simple string (no CR or LF in `text`).
    pub fn simple(&mut self, text: &str) {
        self.out.put_u8(b'+');
        self.out.put_slice(text.as_bytes());
        self.out.put_slice(b"\r\n");
    }

    /// An error line.
    pub fn error(&mut self, error: &impl std::fmt::Display) {
        self.out.put_u8(b'-');
        // Writing into a `BytesMut` cannot fail.
        let _ = write!(self.out, "{error}");
        self.out.put_slice(b"\r\n");
    }

    /// A refused command.
    pub fn command_error(&mut self, error: &CommandError) {
        self.error(error);
    }

    /// An integer.
    pub fn integer(&mut self, value: i64) {
        self.out.put_u8(b':');
        self.number(value);
        self.out.put_slice(b"\r\n");
    }

    /// A bulk (binary-safe) string.
    pub fn bulk(&mut self, value: &[u8]) {
        self.out.put_u8(b'$');
        self.number(value.len() as i64);
        self.out.put_slice(b"\r\n");
        self.out.put_slice(value);
        self.out.put_slice(b"\r\n");
    }

    /// A number as a bulk string (`INCRBYFLOAT`, `TIME`, `SCAN`'s cursor): off the `GET`
    /// path, so formatting may allocate.
    pub fn bulk_display(&mut self, value: impl std::fmt::Display) {
        self.bulk(value.to_string().as_bytes());
    }

    /// A missing value: `$-1` in RESP2, `_` in RESP3.
    pub fn null(&mut self) {
        match self.protocol {
            Protocol::Resp2 => self.out.put_slice(b"$-1\r\n"),
            Protocol::Resp3 => self.out.put_slice(b"_\r\n"),
        }
    }

    /// A missing array (an aborted `EXEC`): `*-1` in RESP2, `_` in RESP3.
    pub fn null_array(&mut self) {
        match self.protocol {
            Protocol::Resp2 => self.out.put_slice(b"*-1\r\n"),
            Protocol::Resp3 => self.out.put_slice(b"_\r\n"),
        }
    }

    /// The header of an array of `len` replies, which follow.
    pub fn array(&mut self, len: usize) {
        self.header(b'*', len);
    }

    /// The header of a map of `len` pairs (key reply, value reply), which follow: a RESP3
    /// map, or a flat array of `2 * len` in RESP2.
    pub fn map(&mut self, len: usize) {
        match self.protocol {
            Protocol::Resp2 => self.header(b'*', len * 2),
            Protocol::Resp3 => self.header(b'%', len),
        }
    }

    /// The header of a message the server sends on its own (a pub/sub message or a
    /// subscription's confirmation): a RESP3 push, an array in RESP2.
    pub fn push(&mut self, len: usize) {
        match self.protocol {
            Protocol::Resp2 => self.header(b'*', len),
            Protocol::Resp3 => self.header(b'>', len),
        }
    }

    /// The header of a set of `len` replies: a RESP3 set, an array in RESP2.
    pub fn set(&mut self, len: usize) {
        match self.protocol {
            Protocol::Resp2 => self.header(b'*', len),
            Protocol::Resp3 => self.header(b'~', len),
        }
    }

    /// Text for people (`INFO`, `CLIENT INFO`): a RESP3 verbatim string of format `txt`, a
    /// bulk string in RESP2.
    pub fn verbatim(&mut self, text: &str) {
        match self.protocol {
            Protocol::Resp2 => self.bulk(text.as_bytes()),
            Protocol::Resp3 => {
                self.header(b'=', text.len() + 4);
                self.out.put_slice(b"txt:");
                self.out.put_slice(text.as_bytes());
                self.out.put_slice(b"\r\n");
            }
        }
    }

    fn header(&mut self, kind: u8, len: usize) {
        self.out.put_u8(kind);
        self.number(len as i64);
        self.out.put_slice(b"\r\n");
    }

    fn number(&mut self, value: i64) {
        let _ = write!(self.out, "{value}");
    }
}
