//! What the layers above need from the store, as narrow traits: replication applies records
//! from peers and compares digests through [`Replica`]; the warm start loads the data volume
//! through [`Loader`]. The store implements both, and neither caller depends on it.

use std::collections::HashSet;

use bytes::Bytes;
use tidecache_contract::disk::Record;

use super::digest::{BucketDigest, Cutoff};
use super::time::Timestamp;
use super::version::Version;

/// What replication needs from the local store.
pub trait Replica: std::fmt::Debug + Send + Sync + 'static {
    /// Applies a record from a peer if its version is larger than the key's current one
    /// (value or tombstone); an expired record changes nothing.
    fn apply(&self, record: Record) -> Applied;
    /// As [`Replica::apply`], and a record that changed the store is also written to this
    /// node's log, as if this node had accepted it. The join catch-up uses it: what peers
    /// send then is what the shared volume lacks (writes acknowledged by peers whose
    /// accepting node crashed before its fsync), and persisting it here makes it survive a
    /// later restart of every node.
    fn apply_durably(&self, record: Record) -> Applied {
        self.apply(record)
    }
    /// The digest of every key range of every bucket holding entries or tombstones with
    /// versions `cutoff` includes.
    fn digests(&self, cutoff: Cutoff) -> Vec<BucketDigest>;
    /// The entries and tombstones in the `(bucket, range)` pairs of `ranges` (see
    /// [`NO_EXPIRY_BUCKET`](super::digest::NO_EXPIRY_BUCKET)) with versions `cutoff` includes, found in one scan.
    fn range_records(&self, ranges: &HashSet<(i64, u16)>, cutoff: Cutoff) -> Vec<Record>;
    /// Removes from memory, without journaling, every entry and tombstone whose key `keep`
    /// refuses (partitions this node no longer holds); returns how many.
    fn discard(&self, keep: &dyn Fn(&[u8]) -> bool) -> u64;
}

/// What applying a received record did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The record was newer and is now the key's state.
    Changed,
    /// The key already holds this version or a newer one (or the record is expired).
    Stale,
    /// The store cannot hold it: no room under `noeviction`, or no bucket for its expiry.
    /// Anti-entropy will offer it again.
    Refused,
}

/// What the warm start needs from the store: a replicated store takes records as a peer's
/// (whole versions, tombstones); a single node's keeps the clock value and re-issues no
/// version.
pub trait Loader: Replica {
    /// Whether deletes leave tombstones, i.e. the store is replicated and loads through
    /// [`Replica::apply`].
    fn keeps_tombstones(&self) -> bool;
    /// Moves the store's version clock past `version`, so that later writes are newer.
    fn observe(&self, version: tidecache_contract::disk::Version, now: Timestamp);
    /// Stores an entry read back from disk with the version it was written with, without
    /// journaling it again. [`Applied::Refused`] when there is no room or no bucket (logged).
    fn load(
        &self,
        key: Bytes,
        value: Bytes,
        version: Version,
        expires_at: Option<Timestamp>,
    ) -> Applied;
    /// Now, on the store's clock.
    fn now(&self) -> Timestamp;
}
