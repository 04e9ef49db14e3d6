//! What travels between nodes: batches of versioned records in the shared volume's own
//! segment format (contract 2), so that a record has one encoding and one checksum whether it
//! is written to disk, sent to a peer or fetched during catch-up; and per-bucket digests as
//! JSON (small, and readable with curl when debugging a cluster).

use bytes::{Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use tidecache_contract::disk::{
    Decoded, Record, RecordError, RecordRef, SegmentDecoder, SegmentError,
};

/// The route a batch of records is posted to.
pub const REPLICATE_PATH: &str = "/internal/v1/replicate";
/// The route that lists this node's bucket digests.
pub const DIGESTS_PATH: &str = "/internal/v1/digests";
/// The route that returns the records of the key ranges a [`Fetch`] names.
pub const FETCH_PATH: &str = "/internal/v1/fetch";
/// The content type of a batch: a segment.
pub const SEGMENT_CONTENT_TYPE: &str = "application/vnd.tidecache.segment";
/// Where a node forwards a request for keys it does not own (partitioned mode).
pub const FORWARD_PATH: &str = "/internal/v1/forward";
/// Where a node says which partitions it holds (partitioned mode's moves), as JSON.
pub const PARTITIONS_PATH: &str = "/internal/v1/partitions";
/// The body of a forwarded request and its answer: postcard.
pub const FORWARD_CONTENT_TYPE: &str = "application/vnd.tidecache.forward";

/// What anti-entropy asks a peer for: the records in some key ranges of some buckets, with
/// versions before a cutoff. Answered with one scan of the peer's store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fetch {
    /// Only versions with a smaller clock value.
    pub before: u64,
    /// `(bucket, range)` pairs.
    pub ranges: Vec<(i64, u16)>,
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
    use tidecache_contract::disk::Version;

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
}
