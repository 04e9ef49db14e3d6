//! One record: a write or a delete of one key, framed so that a reader can tell a complete,
//! intact record written by a [`SegmentWriter`](super::SegmentWriter) from anything else,
//! including a record encoded inside a client's value.
//!
//! # Encoding (format 2, little-endian)
//! ```text
//! offset size field
//!  0     4    magic            54 43 52 A5 ("TCR" 0xA5), lets a reader find candidates
//!  4     8    header tag       SipHash-2-4 of bytes 12..52 under the segment's key
//! 12     4    body checksum    crc32c of the body (key then value)
//! 16     4    body length      key length + value length
//! 20     4    key length       1..=MAX_KEY_LEN
//! 24     1    kind             0 = value, 1 = tombstone (no value bytes)
//! 25     1    flags            bit 0: has expiry; other bits zero
//! 26     2    reserved         zero
//! 28     8    version clock    hybrid logical clock value
//! 36     8    version node     the writing node's tag
//! 44     8    expiry           unix nanoseconds (i64); zero without expiry
//! 52     ...  body             key bytes, then value bytes
//! ```
//! The header is authenticated on its own so that a length is trusted only when the header
//! is the writer's: a reader then skips exactly one damaged record instead of guessing where
//! the next one starts. The tag is keyed with the random key in the segment header (see
//! [`segment`](super::segment)), which never leaves the volume: a client can put any bytes in
//! a value, including a whole encoded record, but cannot compute a tag that passes, so a
//! reader looking for the next record after damage never takes bytes of a value for one.
//!
//! # Format 1 (read only)
//! The same fields in 48 bytes with a crc32c of bytes 8..48 in place of the tag (magic 0..4,
//! header crc 4..8, body crc 8..12, body length 12..16, key length 16..20, kind 20, flags 21,
//! reserved 22..24, clock 24..32, node 32..40, expiry 40..48). Anyone can compute a crc32c,
//! so a format 1 header found by searching is not evidence that the writer wrote it.

use chrono::{DateTime, Utc};

/// The longest key the format stores. cache-node enforces its own, usually smaller, limit.
pub const MAX_KEY_LEN: usize = 64 * 1024;
/// The longest value the format stores. cache-node enforces its own, usually smaller, limit.
pub const MAX_VALUE_LEN: usize = 64 * 1024 * 1024;
/// The size of a record header (format 2, the one written).
pub const RECORD_HEADER_LEN: usize = 52;
/// The size of a format 1 record header.
const V1_HEADER_LEN: usize = 48;
/// The size of a [`SegmentKey`].
pub(super) const SEGMENT_KEY_LEN: usize = 16;

/// The first bytes of every record.
pub(super) const RECORD_MAGIC: [u8; 4] = [b'T', b'C', b'R', 0xA5];
const KIND_VALUE: u8 = 0;
const KIND_TOMBSTONE: u8 = 1;
const FLAG_HAS_EXPIRY: u8 = 1;

/// Why a record could not be encoded. Each is a request cache-node should have refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// An empty key.
    #[error("the key is empty")]
    EmptyKey,
    /// A key over [`MAX_KEY_LEN`].
    #[error("the key is {len} bytes long; the format stores at most {MAX_KEY_LEN}")]
    KeyTooLong {
        /// The key's length.
        len: usize,
    },
    /// A value over [`MAX_VALUE_LEN`].
    #[error("the value is {len} bytes long; the format stores at most {MAX_VALUE_LEN}")]
    ValueTooLong {
        /// The value's length.
        len: usize,
    },
}

/// The version of an entry (contract 4): last writer wins by clock, then by node tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Version {
    /// The hybrid-logical-clock value of the write; compared first.
    pub hlc: u64,
    /// The writing node's [`ObjectName::tag`](super::ObjectName::tag); breaks clock ties.
    pub node: u64,
}

/// A record borrowed from the caller, for writing without copying keys and values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordRef<'a> {
    /// The key, any bytes. It is data, never a name.
    pub key: &'a [u8],
    /// The version of this write or delete.
    pub version: Version,
    /// When the entry expires, in unix nanoseconds; `None` for no expiry.
    pub expiry_unix_nanos: Option<i64>,
    /// The value; `None` is a tombstone (the key was deleted at `version`).
    pub value: Option<&'a [u8]>,
}

/// A record read back from a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The key.
    pub key: Vec<u8>,
    /// The version of this write or delete.
    pub version: Version,
    /// When the entry expires, in unix nanoseconds; `None` for no expiry.
    pub expiry_unix_nanos: Option<i64>,
    /// The value; `None` is a tombstone.
    pub value: Option<Vec<u8>>,
}

impl Record {
    /// The record as a [`RecordRef`], e.g. to write it again during compaction.
    pub fn borrowed(&self) -> RecordRef<'_> {
        RecordRef {
            key: &self.key,
            version: self.version,
            expiry_unix_nanos: self.expiry_unix_nanos,
            value: self.value.as_deref(),
        }
    }

    /// The expiry as a time.
    pub fn expiry(&self) -> Option<DateTime<Utc>> {
        self.expiry_unix_nanos.map(DateTime::from_timestamp_nanos)
    }
}

impl RecordRef<'_> {
    /// The number of bytes [`RecordRef::encode`] appends.
    pub fn encoded_len(&self) -> usize {
        RECORD_HEADER_LEN + self.key.len() + self.value.map_or(0, <[u8]>::len)
    }

    /// Appends the record to `out`, encoded for a segment whose header carries the public key
    /// (all zeros, [`segment_header`](super::segment_header)): the encoding of the replication
    /// wire, whose batches are refused whole at the first damaged byte and never searched for
    /// a next record. Segments on disk are written by a [`SegmentWriter`](super::SegmentWriter)
    /// under a random key.
    ///
    /// # Errors
    /// [`RecordError`] if the key is empty or a length is over the format's limits; `out` is
    /// then unchanged.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), RecordError> {
        self.encode_keyed(&SegmentKey::PUBLIC, out)
    }

    /// Appends the record to `out`, its header tagged under `key`.
    ///
    /// # Errors
    /// As [`RecordRef::encode`].
    pub(super) fn encode_keyed(
        &self,
        key: &SegmentKey,
        out: &mut Vec<u8>,
    ) -> Result<(), RecordError> {
        let value = self.value.unwrap_or_default();
        if self.key.is_empty() {
            return Err(RecordError::EmptyKey);
        }
        if self.key.len() > MAX_KEY_LEN {
            return Err(RecordError::KeyTooLong {
                len: self.key.len(),
            });
        }
        if value.len() > MAX_VALUE_LEN {
            return Err(RecordError::ValueTooLong { len: value.len() });
        }
        let body_crc = crc32c::crc32c_append(crc32c::crc32c(self.key), value);
        let mut header = [0u8; RECORD_HEADER_LEN];
        header[0..4].copy_from_slice(&RECORD_MAGIC);
        header[12..16].copy_from_slice(&body_crc.to_le_bytes());
        header[16..20].copy_from_slice(&len_u32(self.key.len() + value.len()).to_le_bytes());
        header[20..24].copy_from_slice(&len_u32(self.key.len()).to_le_bytes());
        header[24] = if self.value.is_some() {
            KIND_VALUE
        } else {
            KIND_TOMBSTONE
        };
        header[25] = if self.expiry_unix_nanos.is_some() {
            FLAG_HAS_EXPIRY
        } else {
            0
        };
        header[28..36].copy_from_slice(&self.version.hlc.to_le_bytes());
        header[36..44].copy_from_slice(&self.version.node.to_le_bytes());
        header[44..52].copy_from_slice(&self.expiry_unix_nanos.unwrap_or(0).to_le_bytes());
        let tag = key.tag(&header[TAGGED]);
        header[4..12].copy_from_slice(&tag.to_le_bytes());
        out.reserve(self.encoded_len());
        out.extend_from_slice(&header);
        out.extend_from_slice(self.key);
        out.extend_from_slice(value);
        Ok(())
    }
}

/// Tags again, under `key`, the headers of `encoded`: records encoded back to back by
/// [`RecordRef::encode_keyed`] (under another key), for a batch that goes to a segment created
/// after it was encoded.
pub(super) fn retag(encoded: &mut [u8], key: &SegmentKey) {
    let mut at = 0;
    while let Some(header) = encoded.get_mut(at..at + RECORD_HEADER_LEN) {
        let body_len = read_u32(header, 16) as usize;
        let tag = key.tag(&header[TAGGED]);
        header[4..12].copy_from_slice(&tag.to_le_bytes());
        at += RECORD_HEADER_LEN + body_len;
    }
}

/// The bytes of a format 2 header its tag covers: everything after the tag.
const TAGGED: std::ops::Range<usize> = 12..RECORD_HEADER_LEN;

/// The secret of one segment: the key of its record headers' tags, drawn from the OS's random
/// source when the segment is created and stored only in the segment's header. Whoever can
/// compute tags can make bytes pass for a record; clients only ever send values, never read
/// the volume, so they cannot.
#[derive(Clone, PartialEq, Eq)]
pub(super) struct SegmentKey([u8; SEGMENT_KEY_LEN]);

impl std::fmt::Debug for SegmentKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SegmentKey(..)")
    }
}

impl SegmentKey {
    /// The key of segments that are never searched after damage (the replication wire).
    pub(super) const PUBLIC: SegmentKey = SegmentKey([0; SEGMENT_KEY_LEN]);

    /// A new random key.
    ///
    /// # Errors
    /// The OS's random source failed.
    pub(super) fn random() -> Result<SegmentKey, getrandom::Error> {
        let mut key = [0u8; SEGMENT_KEY_LEN];
        getrandom::fill(&mut key)?;
        Ok(SegmentKey(key))
    }

    /// The key as stored in a segment header.
    pub(super) fn from_bytes(bytes: [u8; SEGMENT_KEY_LEN]) -> SegmentKey {
        SegmentKey(bytes)
    }

    /// The key's bytes, for the segment header.
    pub(super) fn as_bytes(&self) -> &[u8; SEGMENT_KEY_LEN] {
        &self.0
    }

    /// The tag of `bytes` under this key.
    fn tag(&self, bytes: &[u8]) -> u64 {
        use std::hash::Hasher;
        let mut hasher = siphasher::sip::SipHasher24::new_with_key(&self.0);
        hasher.write(bytes);
        hasher.finish()
    }
}

/// How the record headers of a segment are framed and checked.
#[derive(Debug, Clone)]
pub(super) enum Framing {
    /// Format 1: crc32c headers, which anyone can forge.
    V1,
    /// Format 2: headers tagged under the segment's key.
    V2(SegmentKey),
}

impl Framing {
    /// The length of a record header.
    pub(super) fn header_len(&self) -> usize {
        match self {
            Framing::V1 => V1_HEADER_LEN,
            Framing::V2(_) => RECORD_HEADER_LEN,
        }
    }
}

/// A length already checked against the limits, which fit in 32 bits.
fn len_u32(len: usize) -> u32 {
    u32::try_from(len).unwrap_or(u32::MAX)
}

/// What a header says, once its checksum and fields are verified.
pub(super) struct Header {
    /// crc32c of the body.
    body_crc: u32,
    /// Key plus value length.
    pub(super) body_len: usize,
    /// The key's length.
    key_len: usize,
    /// Whether the record is a tombstone.
    tombstone: bool,
    /// The version.
    version: Version,
    /// The expiry, if any.
    expiry_unix_nanos: Option<i64>,
}

/// The verified header at the start of `bytes`, or `None` if there is no intact, well-formed
/// header there (too short, wrong magic, bad tag or checksum, or fields the encoder never
/// writes).
pub(super) fn parse_header(bytes: &[u8], framing: &Framing) -> Option<Header> {
    let header = bytes.get(..framing.header_len())?;
    if header[0..4] != RECORD_MAGIC {
        return None;
    }
    // The offset of the fields after the checksum or tag: format 2 is format 1 with a tag
    // 4 bytes longer than the crc.
    let at = match framing {
        Framing::V1 if read_u32(header, 4) == crc32c::crc32c(&header[8..]) => 8,
        Framing::V2(key) if read_u64(header, 4) == key.tag(&header[TAGGED]) => 12,
        _ => return None,
    };
    let body_len = usize::try_from(read_u32(header, at + 4)).ok()?;
    let key_len = usize::try_from(read_u32(header, at + 8)).ok()?;
    let (kind, flags) = (header[at + 12], header[at + 13]);
    let expiry = i64::from_le_bytes(header[at + 32..at + 40].try_into().ok()?);
    let value_len = body_len.checked_sub(key_len)?;
    let well_formed = (1..=MAX_KEY_LEN).contains(&key_len)
        && value_len <= MAX_VALUE_LEN
        && (kind == KIND_VALUE || (kind == KIND_TOMBSTONE && value_len == 0))
        && flags & !FLAG_HAS_EXPIRY == 0
        && header[at + 14..at + 16] == [0, 0]
        && (flags & FLAG_HAS_EXPIRY != 0 || expiry == 0);
    well_formed.then(|| Header {
        body_crc: read_u32(header, at),
        body_len,
        key_len,
        tombstone: kind == KIND_TOMBSTONE,
        version: Version {
            hlc: read_u64(header, at + 16),
            node: read_u64(header, at + 24),
        },
        expiry_unix_nanos: (flags & FLAG_HAS_EXPIRY != 0).then_some(expiry),
    })
}

impl Header {
    /// The record whose body is `body` (exactly `body_len` bytes), or `None` if the body's
    /// checksum does not match.
    pub(super) fn record(&self, body: &[u8]) -> Option<Record> {
        if body.len() != self.body_len || crc32c::crc32c(body) != self.body_crc {
            return None;
        }
        let (key, value) = body.split_at(self.key_len);
        Some(Record {
            key: key.to_vec(),
            version: self.version,
            expiry_unix_nanos: self.expiry_unix_nanos,
            value: (!self.tombstone).then(|| value.to_vec()),
        })
    }
}

fn read_u32(bytes: &[u8], at: usize) -> u32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(word)
}

fn read_u64(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(word)
}
