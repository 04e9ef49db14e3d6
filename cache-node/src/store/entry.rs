//! One stored entry and what it costs in memory.

use std::mem::size_of;

use bytes::Bytes;

use super::Version;
use super::key::{INLINE_KEY_BYTES, StoredKey};
use crate::base::time::Timestamp;

/// A key's current value and the metadata every path needs: the version for conditional
/// writes, the exact expiry for reads, the bucket it is filed under for the sweeper, and the
/// CLOCK bookkeeping for capacity eviction.
#[derive(Debug)]
pub(super) struct Entry {
    /// The key, owned by the entry so the table needs no separate key storage; short keys
    /// inline.
    pub(super) key: StoredKey,
    /// The value; handed out by cloning the `Bytes` (a reference count, never a copy).
    pub(super) value: Bytes,
    /// The version of the write that produced this entry.
    pub(super) version: Version,
    /// The exact expiry, [`NEVER`] for an entry that lives until deleted or evicted.
    expires_at: Timestamp,
    /// The fire time of the schedule bucket the entry is filed under, [`NEVER`] if none.
    bucket: Timestamp,
    /// The entry's slot in its shard's CLOCK queue; unique within the shard among the slots
    /// in the queue (it wraps after 2^32 inserts into one shard, long after the slot is gone).
    pub(super) ticket: u32,
    /// CLOCK reference count: bumped by reads and writes, decremented as the hand passes.
    pub(super) referenced: u8,
    /// Whether this is a delete's tombstone (replicated stores only): invisible to reads and
    /// preconditions, kept so that an older write arriving late from a peer loses to it.
    pub(super) tombstone: bool,
}

/// "No expiry" inside an entry: a sentinel rather than an `Option` saves 16 bytes per entry.
const NEVER: Timestamp = Timestamp::from_millis(i64::MAX);

/// The most reads a CLOCK hand forgives: an entry read at least this often survives this many
/// passes of the hand before it can be evicted.
pub(super) const MAX_REFERENCED: u8 = 3;

impl Entry {
    /// A new entry; `ticket` is its CLOCK slot.
    pub(super) fn new(
        key: StoredKey,
        value: Bytes,
        version: Version,
        expires_at: Option<Timestamp>,
        bucket: Option<Timestamp>,
        ticket: u32,
        tombstone: bool,
    ) -> Entry {
        Entry {
            key,
            value,
            version,
            expires_at: expires_at.unwrap_or(NEVER),
            bucket: bucket.unwrap_or(NEVER),
            ticket,
            referenced: 0,
            tombstone,
        }
    }

    /// When the entry expires, if ever.
    pub(super) fn expires_at(&self) -> Option<Timestamp> {
        (self.expires_at != NEVER).then_some(self.expires_at)
    }

    /// The bucket the entry is filed under, if it expires.
    pub(super) fn bucket(&self) -> Option<Timestamp> {
        (self.bucket != NEVER).then_some(self.bucket)
    }

    /// Whether the entry is filed under `bucket`.
    pub(super) fn is_in_bucket(&self, bucket: Timestamp) -> bool {
        self.bucket == bucket && bucket != NEVER
    }

    /// Replaces value, version, expiry and kind, counting the write as a reference; returns
    /// the previous value so the caller can drop it outside the shard lock.
    pub(super) fn replace(
        &mut self,
        value: Bytes,
        version: Version,
        expires_at: Option<Timestamp>,
        bucket: Option<Timestamp>,
        tombstone: bool,
    ) -> Bytes {
        self.version = version;
        self.tombstone = tombstone;
        self.expires_at = expires_at.unwrap_or(NEVER);
        self.bucket = bucket.unwrap_or(NEVER);
        self.referenced = (self.referenced + 1).min(MAX_REFERENCED);
        std::mem::replace(&mut self.value, value)
    }

    /// Whether a read at `now` sees the entry: neither expired nor a tombstone.
    pub(super) fn is_live(&self, now: Timestamp) -> bool {
        !self.tombstone && !self.is_expired(now)
    }

    /// Whether the entry is expired at `now`: reads never return it from that instant on.
    pub(super) fn is_expired(&self, now: Timestamp) -> bool {
        self.expires_at <= now
    }

    /// The bytes this entry is charged against the capacity.
    pub(super) fn charge(&self) -> u64 {
        entry_charge(self.key.len(), self.value.len())
    }
}

/// Bytes charged per entry besides its key and value, so that the capacity bounds resident
/// memory rather than payload:
/// - the table slot (the entry plus one control byte, inline keys included) over the
///   table's average load: a table that doubles when 7/8 full is between 7/16 and 7/8 full,
///   about 2/3 on average;
/// - the CLOCK queue slot (hash and ticket, 16 bytes) and the expiry-index slot (a hash,
///   8 bytes), each over the average fill of a doubling buffer (3/4);
/// - the allocator's header and rounding for the value (about 16 bytes).
///
/// The `memory` benchmark compares the resulting charge with measured resident memory.
pub const ENTRY_OVERHEAD: u64 =
    ((size_of::<Entry>() + 1) * 3 / 2 + (16 + 8) * 4 / 3 + ALLOCATION) as u64;

/// The allocator's header and rounding of one allocation, about.
const ALLOCATION: usize = 16;

/// The bytes an entry with a key of `key_len` and a value of `value_len` bytes is charged:
/// the overhead, the value, and the key if it is too long to be inline (plus its
/// allocation).
pub fn entry_charge(key_len: usize, value_len: usize) -> u64 {
    let key_heap = if key_len > INLINE_KEY_BYTES {
        key_len + ALLOCATION
    } else {
        0
    };
    (key_heap as u64)
        .saturating_add(value_len as u64)
        .saturating_add(ENTRY_OVERHEAD)
}
