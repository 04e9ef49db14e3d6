//! Digests of key ranges (contract 4): what anti-entropy compares between nodes to find the
//! ranges whose records differ. The store computes them, replication exchanges them; both
//! need the same definitions, so they live in this bottom layer.

use serde::{Deserialize, Serialize};
use tidecache_contract::disk::Version;

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
    /// How keys are grouped into ranges: each node sets its own mode's, never the peer's.
    #[serde(skip)]
    pub ranges: KeyRanges,
}

/// How keys are grouped into the ranges digests summarise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KeyRanges {
    /// [`RANGES`] ranges by a hash of the key (full mode: every node holds every range).
    #[default]
    Hashed,
    /// One range per placement partition (partitioned mode), so that two owners compare
    /// exactly the partitions they share.
    Partitions,
}

impl KeyRanges {
    /// The range of `key`.
    pub fn of(self, key: &[u8]) -> u16 {
        match self {
            KeyRanges::Hashed => range_of(key),
            KeyRanges::Partitions => {
                u16::try_from(tidecache_contract::placement::partition_of(key)).unwrap_or(0)
            }
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

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
