//! A segment: a header naming the format, then records back to back. Decoding tells three
//! things apart: intact records, damage in the middle (reported, its bytes never returned)
//! and a torn tail (an append cut short by a crash: reported and ignored).
//!
//! # Header (format 2, 32 bytes)
//! `TIDESEG\0` magic, format version (u32 LE), the segment's random key (16 bytes, see
//! [`record`](super::record)), crc32c of the first 28 bytes (u32 LE). Format 1 headers are
//! 16 bytes: magic, version, crc32c of the first 12.
//!
//! # Resynchronisation: never inside a value
//! A reader that meets bytes that are not an intact record must find where the next record
//! starts without ever taking bytes a client wrote for one. A client controls values, and a
//! value may hold a perfectly encoded record; one flipped bit in the header of the record that
//! carries it must not turn it into data. The rules (format 2):
//! - A header whose tag verifies gives a length the writer vouched for. If its body is damaged
//!   the reader skips exactly that span, never looking inside it; if its body runs past the
//!   end of the file it is a torn tail.
//! - A header whose tag does not verify gives nothing (its length may be the damaged field),
//!   so the reader searches the following bytes for the next header whose tag verifies under
//!   the segment's key. Value bytes cannot pass: the key is random per segment and exists
//!   only in the segment header on the volume, so neither a client nor a peer can compute a
//!   tag (SipHash-2-4 is a keyed pseudo-random function: a forged header passes with
//!   probability 2^-64, random damage with 2^-96 per offset with the magic).
//! - Damage is reported as [`Decoded::Corrupt`] if a verified header follows it, else as a
//!   [`Decoded::TornTail`] (nothing after it was ever intact).
//!
//! So every record decoded was written as a record by a writer holding the key, and every
//! record whose bytes are intact is decoded, also after damage to the record before it.
//!
//! # Format 1 segments: read, never searched
//! Format 1 checked headers with a crc32c, which a client can compute, and searched byte by
//! byte after damage: it could serve a record embedded in a value. Format 1 segments are still
//! read (they are the data of nodes written before the upgrade; buckets expire and the
//! persistent area is rewritten in format 2 by its next compaction), but only by following
//! lengths from the first record: after a record whose header is intact but whose body is
//! not, the next one starts at its end; at the first damaged header everything up to the end
//! of the file is damage (`Corrupt` if an intact-looking header follows, else a torn tail) and
//! nothing after it is returned. The intact records after damage in a format 1 segment are
//! lost; a record smuggled in a value never is served.

use super::record::{self, Framing, RECORD_MAGIC, Record, SEGMENT_KEY_LEN, SegmentKey};

/// The size of a segment header (format 2, the one written).
pub const SEGMENT_HEADER_LEN: usize = 32;
/// The format version this code writes; it reads it and format 1.
pub const FORMAT_VERSION: u32 = 2;
/// The first format, read only: see the module documentation.
const FORMAT_V1: u32 = 1;
/// The size of a format 1 segment header.
const V1_SEGMENT_HEADER_LEN: usize = 16;
const SEGMENT_MAGIC: [u8; 8] = *b"TIDESEG\0";

/// Why a segment cannot be read at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SegmentError {
    /// The file does not start with the segment magic: not a tidecache segment.
    #[error("not a tidecache segment (wrong magic bytes)")]
    BadMagic,
    /// The header's checksum does not match.
    #[error("the segment header is damaged (checksum mismatch)")]
    HeaderChecksum,
    /// Written by a newer format this code does not know.
    #[error(
        "segment format version {0} is not supported (this build reads {FORMAT_V1} and \
         {FORMAT_VERSION}): upgrade this binary to the version that wrote it"
    )]
    UnsupportedVersion(u32),
}

/// The header of a segment under the public key, for records encoded with
/// [`RecordRef::encode`](super::RecordRef::encode): the replication wire, whose batches are
/// refused whole at the first damaged byte. Segments on disk carry a random key
/// ([`SegmentWriter`](super::SegmentWriter)).
pub fn segment_header() -> [u8; SEGMENT_HEADER_LEN] {
    keyed_segment_header(&SegmentKey::PUBLIC)
}

/// The header of a segment whose records are tagged under `key`.
pub(super) fn keyed_segment_header(key: &SegmentKey) -> [u8; SEGMENT_HEADER_LEN] {
    let mut header = [0u8; SEGMENT_HEADER_LEN];
    header[0..8].copy_from_slice(&SEGMENT_MAGIC);
    header[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    header[12..12 + SEGMENT_KEY_LEN].copy_from_slice(key.as_bytes());
    let crc = crc32c::crc32c(&header[..28]);
    header[28..32].copy_from_slice(&crc.to_le_bytes());
    header
}

/// One item decoded from a segment. Offsets and lengths are in bytes from the file's start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    /// An intact record.
    Record {
        /// Where the record starts.
        offset: u64,
        /// The record.
        record: Record,
    },
    /// Damaged bytes followed by a record header the writer vouched for: skipped, never
    /// returned as data.
    Corrupt {
        /// Where the damage starts.
        offset: u64,
        /// How many bytes were skipped.
        len: u64,
    },
    /// An incomplete or damaged last record (a crash during an append), or damage after which
    /// nothing verifies: ignored. Always the last item.
    TornTail {
        /// Where the tail starts.
        offset: u64,
        /// How many bytes it has.
        len: u64,
    },
}

/// Decodes the bytes of a whole segment file, one [`Decoded`] at a time. It takes any bytes
/// and never panics (the entry point for fuzzing the format).
#[derive(Debug, Clone)]
pub struct SegmentDecoder<'a> {
    /// The whole file.
    bytes: &'a [u8],
    /// Where the next item starts.
    pos: usize,
    /// How the records are framed; `None` for a file whose header never reached the disk.
    framing: Option<Framing>,
}

impl<'a> SegmentDecoder<'a> {
    /// Checks the segment header of `bytes`, the complete contents of a segment file. A file
    /// shorter than a header, or whose header is all zeros (its size reached the disk, its
    /// bytes did not), is a segment whose creation was cut short by a crash before anything
    /// was synced: it decodes to a [`Decoded::TornTail`].
    ///
    /// # Errors
    /// [`SegmentError`] if the header is present but wrong: the file is not something this
    /// code may read.
    pub fn new(bytes: &'a [u8]) -> Result<SegmentDecoder<'a>, SegmentError> {
        let torn = SegmentDecoder {
            bytes,
            pos: 0,
            framing: None,
        };
        let Some(start) = bytes.get(..V1_SEGMENT_HEADER_LEN) else {
            return Ok(torn);
        };
        if start.iter().all(|b| *b == 0) {
            return Ok(torn);
        }
        if start[..8] != SEGMENT_MAGIC {
            return Err(SegmentError::BadMagic);
        }
        let version = u32::from_le_bytes([start[8], start[9], start[10], start[11]]);
        // Whether the first `len` bytes end in the crc32c of the others.
        let intact = |len: usize| {
            bytes.get(..len).is_some_and(|header| {
                let (covered, crc) = header.split_at(len - 4);
                crc32c::crc32c(covered).to_le_bytes() == crc
            })
        };
        let (header_len, framing) = match version {
            FORMAT_V1 if intact(V1_SEGMENT_HEADER_LEN) => (V1_SEGMENT_HEADER_LEN, Framing::V1),
            FORMAT_VERSION if bytes.len() < SEGMENT_HEADER_LEN => return Ok(torn),
            FORMAT_VERSION if intact(SEGMENT_HEADER_LEN) => {
                let mut key = [0u8; SEGMENT_KEY_LEN];
                key.copy_from_slice(&bytes[12..12 + SEGMENT_KEY_LEN]);
                (SEGMENT_HEADER_LEN, Framing::V2(SegmentKey::from_bytes(key)))
            }
            FORMAT_V1 | FORMAT_VERSION => return Err(SegmentError::HeaderChecksum),
            // A version this code does not know, in a header that is intact as either known
            // header is: really a newer format, not a damaged version field.
            _ if intact(V1_SEGMENT_HEADER_LEN) || intact(SEGMENT_HEADER_LEN) => {
                return Err(SegmentError::UnsupportedVersion(version));
            }
            _ => return Err(SegmentError::HeaderChecksum),
        };
        Ok(SegmentDecoder {
            bytes,
            pos: header_len,
            framing: Some(framing),
        })
    }

    /// The decoder positioned at `pos` (where an earlier decoder of the same bytes stopped, see
    /// [`SegmentDecoder::position`]); positions inside the header start after it.
    pub fn resume_at(self, pos: usize) -> SegmentDecoder<'a> {
        SegmentDecoder {
            pos: pos.max(self.pos),
            ..self
        }
    }

    /// The offset of the next item, to resume from later.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// The intact record at `at` and its encoded length, or what to do instead.
    fn record_at(&self, framing: &Framing, at: usize) -> Result<(Record, usize), NotIntact> {
        let rest = &self.bytes[at..];
        let header = record::parse_header(rest, framing).ok_or(NotIntact::Header)?;
        let end = framing.header_len() + header.body_len;
        let body = rest.get(framing.header_len()..end).ok_or(NotIntact::Cut)?;
        header
            .record(body)
            .map(|r| (r, end))
            .ok_or(NotIntact::Body { len: end })
    }

    /// The first offset at or after `from` where a header that verifies starts.
    fn next_header(&self, framing: &Framing, from: usize) -> Option<usize> {
        let mut at = from;
        while at + framing.header_len() <= self.bytes.len() {
            let hit = self.bytes[at..]
                .windows(RECORD_MAGIC.len())
                .position(|w| w == RECORD_MAGIC)?;
            at += hit;
            if record::parse_header(&self.bytes[at..], framing).is_some() {
                return Some(at);
            }
            at += 1;
        }
        None
    }

    /// Damage from `start` up to `next` (a verified header), or to the end if there is none.
    fn damage(&mut self, start: usize, next: Option<usize>) -> Decoded {
        let offset = start as u64;
        match next {
            Some(next) => {
                self.pos = next;
                Decoded::Corrupt {
                    offset,
                    len: (next - start) as u64,
                }
            }
            None => {
                self.pos = self.bytes.len();
                Decoded::TornTail {
                    offset,
                    len: (self.bytes.len() - start) as u64,
                }
            }
        }
    }
}

/// Why the bytes at some offset are not an intact record.
enum NotIntact {
    /// No header that verifies: its length cannot be trusted.
    Header,
    /// A verified header whose body runs past the end of the file.
    Cut,
    /// A verified header whose body is damaged; `len` is the whole record's.
    Body { len: usize },
}

impl Iterator for SegmentDecoder<'_> {
    type Item = Decoded;

    fn next(&mut self) -> Option<Decoded> {
        let start = self.pos;
        if start >= self.bytes.len() {
            return None;
        }
        let Some(framing) = self.framing.clone() else {
            return Some(self.damage(start, None));
        };
        match self.record_at(&framing, start) {
            Ok((record, len)) => {
                self.pos = start + len;
                Some(Decoded::Record {
                    offset: start as u64,
                    record,
                })
            }
            Err(NotIntact::Cut) => Some(self.damage(start, None)),
            Err(NotIntact::Body { len }) => {
                // The writer vouched for this length: the next item starts right after it. The
                // damage is in the middle if anything verified follows, else it is the tail.
                let end = start + len;
                let item = self.damage(start, self.next_header(&framing, end).map(|_| end));
                Some(item)
            }
            Err(NotIntact::Header) => match framing {
                Framing::V2(_) => {
                    let next = self.next_header(&framing, start + 1);
                    Some(self.damage(start, next))
                }
                Framing::V1 => {
                    // A format 1 header can be forged: nothing after it is trusted.
                    let follows = self.next_header(&framing, start + 1).is_some();
                    let item = self.damage(start, None);
                    Some(match item {
                        Decoded::TornTail { offset, len } if follows => {
                            Decoded::Corrupt { offset, len }
                        }
                        item => item,
                    })
                }
            },
        }
    }
}
