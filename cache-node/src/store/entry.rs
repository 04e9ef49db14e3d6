//! One stored entry and what it costs in memory.

use std::mem::size_of;

use bytes::Bytes;

use super::Version;
use crate::clock::Timestamp;

/// A key's current value and the metadata every path needs: the version for conditional
/// writes, the exact expiry for reads, the bucket it is filed under for the sweeper, and the
/// CLOCK bookkeeping for capacity eviction.
#[derive(Debug)]
pub(super) struct Entry {
    /// The key, owned by the entry so the table needs no separate key storage.
    pub(super) key: Bytes,
    /// The value; handed out by cloning the `Bytes` (a reference count, never a copy).
    pub(super) value: Bytes,
    /// The hash of `key`, kept so that resizing the table and the index lookups (which carry
    /// only hashes) never rehash the key.
    pub(super) hash: u64,
    /// The version of the write that produced this entry.
    pub(super) version: Version,
    /// The exact expiry; `None` lives until deleted or evicted for capacity.
    pub(super) expires_at: Option<Timestamp>,
    /// The fire time of the schedule bucket the entry is filed under (`None` without expiry).
    pub(super) bucket: Option<Timestamp>,
    /// The entry's slot in its shard's CLOCK queue; unique within the shard.
    pub(super) ticket: u64,
    /// CLOCK reference count: bumped by reads and writes, decremented as the hand passes.
    pub(super) referenced: u8,
}

/// The most reads a CLOCK hand forgives: an entry read at least this often survives this many
/// passes of the hand before it can be evicted.
pub(super) const MAX_REFERENCED: u8 = 3;

impl Entry {
    /// Whether the entry is expired at `now`: reads never return it from that instant on.
    pub(super) fn is_expired(&self, now: Timestamp) -> bool {
        self.expires_at.is_some_and(|expiry| expiry <= now)
    }

    /// The bytes this entry is charged against the capacity.
    pub(super) fn charge(&self) -> u64 {
        entry_charge(self.key.len(), self.value.len())
    }
}

/// Bytes charged per entry besides its key and value: the table slot (the entry itself plus
/// one control byte, over a load factor of 7/8), the CLOCK queue slot (hash and ticket), the
/// expiry-index slot (a hash) and the allocator's headers and rounding for the key and value
/// allocations (about 16 bytes each). Measured against resident memory by the `memory`
/// benchmark.
pub const ENTRY_OVERHEAD: u64 = ((size_of::<Entry>() + 1) * 8 / 7 + 16 + 8 + 2 * 16) as u64;

/// The bytes an entry with a key of `key_len` and a value of `value_len` bytes is charged.
pub fn entry_charge(key_len: usize, value_len: usize) -> u64 {
    (key_len as u64)
        .saturating_add(value_len as u64)
        .saturating_add(ENTRY_OVERHEAD)
}
