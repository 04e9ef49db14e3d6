//! What travels between nodes: batches of versioned records in the shared volume's own
//! segment format (contract 2), so that a record has one encoding and one checksum whether it
//! is written to disk, sent to a peer or fetched during catch-up; and per-bucket digests as
//! JSON (small, and readable with curl when debugging a cluster).

use bytes::{Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use tidecache_contract::disk::{
    Decoded, Record, RecordError, RecordRef, SegmentDecoder, SegmentError, Version,
};

/// The route a batch of records is posted to.
pub const REPLICATE_PATH: &str = "/internal/v1/replicate";
/// The route that lists this node's bucket digests.
pub const DIGESTS_PATH: &str = "/internal/v1/digests";
/// The route that returns the records of the key ranges a [`Fetch`] names.
pub const FETCH_PATH: &str = "/internal/v1/fetch";
/// The content type of a batch: a segment.
pub const SEGMENT_CONTENT_TYPE: &str = "application/vnd.tidecache.segment";

/// The bucket id of entries without expiry, which no sweep ever evicts.
pub const NO_EXPIRY_BUCKET: i64 = i64::MAX;

/// Key ranges per bucket: a difference moves one range's records, about 1/64 of the bucket.
pub const RANGES: u16 = 64;

/// A summary of one key range of one bucket on one node, over the versions older than a
/// cutoff: two nodes with equal digests hold the same keys at the same versions there (up to
/// a 64-bit hash collision).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketDigest {
    /// The bucket's fire time in Unix milliseconds, [`NO_EXPIRY_BUCKET`] for no expiry.
    pub bucket: i64,
    /// The key range, `0..RANGES` (see [`range_of`]).
    pub range: u16,
    /// Entries and tombstones in it.
    pub count: u64,
    /// XOR of [`fingerprint`] over them: independent of order.
    pub xor: u64,
}

/// Which digests a request asks for: versions before `before` (a clock value), so that both
/// sides summarise the same writes and those still in flight do not count as differences.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cutoff {
    /// Only versions with a smaller clock value count; absent: all.
    #[serde(default = "Cutoff::all")]
    pub before: u64,
}

impl Cutoff {
    fn all() -> u64 {
        u64::MAX
    }

    /// Whether a version counts.
    pub fn includes(self, version: Version) -> bool {
        version.hlc < self.before
    }
}

/// What anti-entropy asks a peer for: the records in some key ranges of some buckets, with
/// versions before a cutoff. Answered with one scan of the peer's store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fetch {
    /// Only versions with a smaller clock value.
    pub before: u64,
    /// `(bucket, range)` pairs.
    pub ranges: Vec<(i64, u16)>,
}

/// FNV-1a of a key: the same on every node.
fn key_hash(key: &[u8]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    key.iter()
        .fold(OFFSET, |hash, b| (hash ^ u64::from(*b)).wrapping_mul(PRIME))
}

/// The key range of `key`, `0..RANGES`.
pub fn range_of(key: &[u8]) -> u16 {
    u16::try_from(mix(key_hash(key)) % u64::from(RANGES)).unwrap_or(0)
}

/// The fingerprint of one key at one version, identical on every node (unlike the store's
/// randomly seeded table hash).
pub fn fingerprint(key: &[u8], version: Version) -> u64 {
    mix(key_hash(key) ^ mix(version.hlc ^ mix(version.node)))
}

/// splitmix64's finaliser: spreads every input bit over the output, so XOR-ing fingerprints
/// does not cancel structured differences.
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// One record encoded once, shared by every peer's queue.
pub fn encode_record(record: RecordRef<'_>) -> Result<Bytes, RecordError> {
    let mut out = Vec::with_capacity(record.encoded_len());
    record.encode(&mut out)?;
    Ok(Bytes::from(out))
}

/// A batch: the segment header followed by already encoded records.
pub fn batch<'a>(records: impl IntoIterator<Item = &'a Bytes>) -> Bytes {
    let header = tidecache_contract::disk::segment_header();
    let mut out = BytesMut::from(&header[..]);
    for record in records {
        out.extend_from_slice(record);
    }
    out.freeze()
}

/// Why a received batch was refused as a whole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// Not a segment of a format this node reads.
    #[error("the batch is not a readable segment: {0}")]
    Segment(#[from] SegmentError),
    /// Damaged or truncated bytes: nothing of the batch is applied, the sender retries.
    #[error("the batch is damaged at byte {offset} ({len} bytes)")]
    Damaged {
        /// Where the damage starts.
        offset: u64,
        /// How long it is.
        len: u64,
    },
}

/// Every record of a batch, or an error if any byte of it is damaged: a batch is applied
/// whole or not at all, so a retry never leaves a hole.
pub fn decode_batch(bytes: &[u8]) -> Result<Vec<Record>, BatchError> {
    let mut records = Vec::new();
    for item in SegmentDecoder::new(bytes)? {
        match item {
            Decoded::Record { record, .. } => records.push(record),
            Decoded::Corrupt { offset, len } | Decoded::TornTail { offset, len } => {
                return Err(BatchError::Damaged { offset, len });
            }
        }
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(key: &'static [u8], value: Option<&'static [u8]>, hlc: u64) -> RecordRef<'static> {
        RecordRef {
            key,
            version: Version { hlc, node: 1 },
            expiry_unix_nanos: Some(1_000),
            value,
        }
    }

    #[test]
    fn a_batch_round_trips_and_damage_refuses_all_of_it() {
        let encoded = [
            encode_record(record(b"a", Some(b"1"), 5)).expect("encodes"),
            encode_record(record(b"b", None, 6)).expect("encodes"),
        ];
        let bytes = batch(&encoded);
        let records = decode_batch(&bytes).expect("intact");
        assert_eq!(records.len(), 2);
        assert_eq!(records[0].value.as_deref(), Some(&b"1"[..]));
        assert_eq!(records[1].value, None);
        assert_eq!(records[1].version.hlc, 6);

        let mut damaged = bytes.to_vec();
        let last = damaged.len() - 1;
        damaged[last] ^= 0xff;
        assert!(matches!(
            decode_batch(&damaged),
            Err(BatchError::Damaged { .. })
        ));
        assert!(decode_batch(b"not a segment at all").is_err());
        assert_eq!(decode_batch(&batch(&[])).expect("empty batch"), Vec::new());
    }

    #[test]
    fn fingerprints_depend_on_key_and_whole_version() {
        let v = Version { hlc: 10, node: 1 };
        let base = fingerprint(b"k", v);
        assert_eq!(base, fingerprint(b"k", v));
        assert_ne!(base, fingerprint(b"l", v));
        assert_ne!(base, fingerprint(b"k", Version { hlc: 11, node: 1 }));
        assert_ne!(base, fingerprint(b"k", Version { hlc: 10, node: 2 }));
    }
}
