//! A segment: a header naming the format, then records back to back. Decoding tells three
//! things apart: intact records, damage in the middle (reported, its bytes never returned)
//! and a torn tail (an append cut short by a crash: reported and ignored).
//!
//! # Header (16 bytes)
//! `TIDESEG\0` magic, format version (u32 LE), crc32c of the first 12 bytes (u32 LE).
//!
//! # Torn tail or corruption?
//! When the bytes at some offset are not an intact record, the decoder looks for the next
//! intact record after them: right after the damaged record when its header (and so its
//! length) is intact, otherwise at each following byte. If one is found the damage was in the
//! middle ([`Decoded::Corrupt`]); if none is, everything from the damage to the end of the
//! file is a torn tail ([`Decoded::TornTail`]).

use super::record::{self, RECORD_HEADER_LEN, RECORD_MAGIC, Record};

/// The size of a segment header.
pub const SEGMENT_HEADER_LEN: usize = 16;
/// The format version this code writes and reads.
pub const FORMAT_VERSION: u32 = 1;
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
    #[error("segment format version {0} is not supported (this build reads {FORMAT_VERSION})")]
    UnsupportedVersion(u32),
}

/// The header every new segment starts with.
pub fn segment_header() -> [u8; SEGMENT_HEADER_LEN] {
    let mut header = [0u8; SEGMENT_HEADER_LEN];
    header[0..8].copy_from_slice(&SEGMENT_MAGIC);
    header[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    let crc = crc32c::crc32c(&header[..12]);
    header[12..16].copy_from_slice(&crc.to_le_bytes());
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
    /// Damaged bytes followed by intact records: skipped, never returned as data.
    Corrupt {
        /// Where the damage starts.
        offset: u64,
        /// How many bytes were skipped.
        len: u64,
    },
    /// An incomplete or damaged last record (a crash during an append): ignored. Always the
    /// last item.
    TornTail {
        /// Where the tail starts.
        offset: u64,
        /// How many bytes it has.
        len: u64,
    },
}

/// Decodes the bytes of a whole segment file, one [`Decoded`] at a time.
#[derive(Debug, Clone)]
pub struct SegmentDecoder<'a> {
    /// The whole file.
    bytes: &'a [u8],
    /// Where the next item starts.
    pos: usize,
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
        let header = match bytes.get(..SEGMENT_HEADER_LEN) {
            Some(header) if header.iter().any(|b| *b != 0) => header,
            _ => return Ok(SegmentDecoder { bytes, pos: 0 }),
        };
        if header[..8] != SEGMENT_MAGIC {
            return Err(SegmentError::BadMagic);
        }
        if crc32c::crc32c(&header[..12])
            != u32::from_le_bytes([header[12], header[13], header[14], header[15]])
        {
            return Err(SegmentError::HeaderChecksum);
        }
        let version = u32::from_le_bytes([header[8], header[9], header[10], header[11]]);
        if version != FORMAT_VERSION {
            return Err(SegmentError::UnsupportedVersion(version));
        }
        Ok(SegmentDecoder {
            bytes,
            pos: SEGMENT_HEADER_LEN,
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

    /// The intact record at `at` and its encoded length. `Err` carries where to start looking
    /// for the next intact record: after this one if its header is intact, else one byte on.
    fn record_at(&self, at: usize) -> Result<(Record, usize), usize> {
        let rest = &self.bytes[at..];
        let header = record::parse_header(rest).ok_or(at + 1)?;
        let end = RECORD_HEADER_LEN + header.body_len;
        let body = rest.get(RECORD_HEADER_LEN..end).ok_or(self.bytes.len())?;
        header.record(body).map(|r| (r, end)).ok_or(at + end)
    }

    /// The first offset at or after `from` where an intact record starts.
    fn next_intact(&self, from: usize) -> Option<usize> {
        let mut at = from;
        while at + RECORD_HEADER_LEN <= self.bytes.len() {
            let window = &self.bytes[at..];
            let hit = window
                .windows(RECORD_MAGIC.len())
                .position(|w| w == RECORD_MAGIC)?;
            at += hit;
            if self.record_at(at).is_ok() {
                return Some(at);
            }
            at += 1;
        }
        None
    }
}

impl Iterator for SegmentDecoder<'_> {
    type Item = Decoded;

    fn next(&mut self) -> Option<Decoded> {
        let start = self.pos;
        if start >= self.bytes.len() {
            return None;
        }
        let offset = start as u64;
        match self.record_at(start) {
            Ok((record, len)) => {
                self.pos = start + len;
                Some(Decoded::Record { offset, record })
            }
            Err(resume) => match self.next_intact(resume.min(self.bytes.len())) {
                Some(next) => {
                    self.pos = next;
                    Some(Decoded::Corrupt {
                        offset,
                        len: (next - start) as u64,
                    })
                }
                None => {
                    self.pos = self.bytes.len();
                    Some(Decoded::TornTail {
                        offset,
                        len: (self.bytes.len() - start) as u64,
                    })
                }
            },
        }
    }
}
