//! One shard of the store: a hash table of entries, its expiry index and its CLOCK queue, all
//! behind one short-held lock taken by [`super::Store`].

use std::collections::VecDeque;

use std::hash::BuildHasher;

use bytes::Bytes;
use hashbrown::{DefaultHashBuilder, HashTable};

use super::entry::{Entry, MAX_REFERENCED};
use super::expiry_index::ExpiryIndex;
use super::key::StoredKey;
use super::{EvictionReason, Previous, Version};
use crate::base::time::Timestamp;

/// A shard. Every method runs under the shard's lock and does no I/O and no allocation
/// proportional to the shard's size, so the lock is held for microseconds.
#[derive(Debug)]
pub(super) struct Shard {
    /// The entries, found by key hash and key.
    table: HashTable<Entry>,
    /// The store's key hasher, to rehash keys when the table grows.
    hasher: DefaultHashBuilder,
    /// Bucket fire time to entry hashes, for the sweeper.
    pub(super) expiry: ExpiryIndex,
    /// The CLOCK queue in insertion order: `(hash, ticket)` of each entry. Deleted entries
    /// leave stale slots that the hand skips and compaction drops.
    queue: VecDeque<(u64, u32)>,
    /// The ticket the next inserted entry gets.
    next_ticket: u32,
}

/// A new value for a key, ready to be stored.
#[derive(Debug)]
pub(super) struct NewEntry {
    pub(super) key: StoredKey,
    pub(super) value: Bytes,
    pub(super) hash: u64,
    pub(super) version: Version,
    pub(super) expires_at: Option<Timestamp>,
    pub(super) bucket: Option<Timestamp>,
    /// A delete's tombstone rather than a value (`value` is then empty).
    pub(super) tombstone: bool,
}

/// What a key currently holds, as a write sees it before deciding.
#[derive(Debug, Clone, Copy)]
pub(super) struct Existing {
    /// The version, if the entry is live (not expired, not a tombstone).
    pub(super) live_version: Option<Version>,
    /// The bytes the entry (live, expired or tombstone) is charged.
    pub(super) charge: u64,
    /// The version whatever the entry's state: what a replicated write must beat.
    pub(super) version: Version,
    /// Whether the entry is a tombstone.
    pub(super) tombstone: bool,
}

impl Shard {
    /// An empty shard hashing keys with `hasher` (the store's, shared by all shards).
    pub(super) fn new(hasher: DefaultHashBuilder) -> Shard {
        Shard {
            table: HashTable::new(),
            hasher,
            expiry: ExpiryIndex::default(),
            queue: VecDeque::new(),
            next_ticket: 0,
        }
    }

    /// The key's live entry: value, version and expiry. Counts as a reference for CLOCK.
    pub(super) fn get(&mut self, hash: u64, key: &[u8], now: Timestamp) -> Option<&Entry> {
        let entry = self.table.find_mut(hash, |e| *e.key == *key)?;
        if !entry.is_live(now) {
            return None;
        }
        entry.referenced = (entry.referenced + 1).min(MAX_REFERENCED);
        Some(entry)
    }

    /// What the key holds now, for a write's preconditions and memory accounting.
    pub(super) fn existing(&self, hash: u64, key: &[u8], now: Timestamp) -> Option<Existing> {
        let entry = self.table.find(hash, |e| *e.key == *key)?;
        Some(Existing {
            live_version: entry.is_live(now).then_some(entry.version),
            charge: entry.charge(),
            version: entry.version,
            tombstone: entry.tombstone,
        })
    }

    /// Stores `new`, replacing the key's entry if it has one; returns the replaced entry's
    /// value and metadata (live or expired).
    pub(super) fn upsert(&mut self, new: NewEntry) -> Option<Previous> {
        if let Some(entry) = self.table.find_mut(new.hash, |e| *e.key == *new.key) {
            if let Some(bucket) = new.bucket
                && entry.bucket() != new.bucket
            {
                self.expiry.file(bucket, new.hash);
            }
            let (version, expires_at, bucket) = (entry.version, entry.expires_at(), entry.bucket());
            let value = entry.replace(
                new.value,
                new.version,
                new.expires_at,
                new.bucket,
                new.tombstone,
            );
            return Some(Previous {
                value,
                version,
                expires_at,
                bucket,
            });
        }
        let ticket = self.next_ticket;
        self.next_ticket = self.next_ticket.wrapping_add(1);
        if let Some(bucket) = new.bucket {
            self.expiry.file(bucket, new.hash);
        }
        self.queue.push_back((new.hash, ticket));
        let hasher = &self.hasher;
        self.table.insert_unique(
            new.hash,
            Entry::new(
                new.key,
                new.value,
                new.version,
                new.expires_at,
                new.bucket,
                ticket,
                new.tombstone,
            ),
            |e| hasher.hash_one(&*e.key),
        );
        self.compact_if_stale();
        None
    }

    /// Turns the key's entry into a tombstone at `version`, keeping its expiry and bucket (the
    /// tombstone must live as long as the value it shadows could). Returns the value it
    /// held and the bytes the entry was charged before.
    pub(super) fn entomb(
        &mut self,
        hash: u64,
        key: &[u8],
        version: Version,
    ) -> Option<(Previous, u64)> {
        let entry = self.table.find_mut(hash, |e| *e.key == *key)?;
        let charge = entry.charge();
        let (previous_version, expires_at, bucket) =
            (entry.version, entry.expires_at(), entry.bucket());
        let value = entry.replace(Bytes::new(), version, expires_at, bucket, true);
        Some((
            Previous {
                value,
                version: previous_version,
                expires_at,
                bucket,
            },
            charge,
        ))
    }

    /// Calls `visit` with every entry (live, expired and tombstones), in table order: the
    /// scans behind anti-entropy digests and bucket transfers.
    pub(super) fn for_each(&self, mut visit: impl FnMut(&Entry)) {
        for entry in self.table.iter() {
            visit(entry);
        }
    }

    /// The key of the first live entry at or after table slot `start` (wrapping round), or
    /// `None` if the shard holds none: a random pick when `start` is random.
    pub(super) fn live_from(&self, start: usize, now: Timestamp) -> Option<&[u8]> {
        let slots = self.table.num_buckets();
        if slots == 0 {
            return None;
        }
        let start = start % slots;
        (start..slots)
            .chain(0..start)
            .filter_map(|slot| self.table.get_bucket(slot))
            .find(|entry| entry.is_live(now))
            .map(|entry| &*entry.key)
    }

    /// The key's entry, live or expired, without counting a reference.
    pub(super) fn peek(&self, hash: u64, key: &[u8]) -> Option<&Entry> {
        self.table.find(hash, |e| *e.key == *key)
    }

    /// Removes the key's entry, live or expired.
    pub(super) fn remove(&mut self, hash: u64, key: &[u8]) -> Option<Entry> {
        let removed = self
            .table
            .find_entry(hash, |e| *e.key == *key)
            .ok()
            .map(|occupied| occupied.remove().0);
        self.compact_if_stale();
        removed
    }

    /// Entries held and the bytes they are charged, counted the slow way (tests check the
    /// store's running counters against it).
    #[cfg(test)]
    pub(super) fn totals(&self) -> (u64, u64) {
        let charged = self.table.iter().map(Entry::charge).sum();
        (self.table.len() as u64, charged)
    }

    /// The mask that turns a hash into the table slot where its probe starts.
    pub(super) fn slot_mask(&self) -> u64 {
        (self.table.num_buckets() as u64).saturating_sub(1)
    }

    /// Loads the table slots where the probes for `hashes` start, so that their cache misses
    /// overlap instead of being paid one after another by the removals that follow. Safe Rust
    /// has no prefetch instruction; independent loads whose values are kept are the next
    /// best thing. The sweep of a large table is bound by these misses, so this is what keeps
    /// its cost per evicted entry from growing with the table.
    pub(super) fn touch(&self, hashes: &[u64]) {
        let mask = self.slot_mask() as usize;
        let mut sum = 0_i64;
        for &hash in hashes {
            if let Some(entry) = self.table.get_bucket(hash as usize & mask) {
                // Both ends of the entry: it spans two cache lines, and the removal reads both.
                let bucket = entry.bucket().map_or(0, |b| b.as_millis());
                sum = sum
                    .wrapping_add(bucket)
                    .wrapping_add(entry.key.len() as i64);
            }
        }
        std::hint::black_box(sum);
    }

    /// Removes the entries with `hash` still filed under `bucket` (normally one; more only on
    /// a full 64-bit hash collision), passing each to `removed`.
    pub(super) fn remove_filed(
        &mut self,
        hash: u64,
        bucket: Timestamp,
        mut removed: impl FnMut(Entry),
    ) {
        while let Ok(occupied) = self.table.find_entry(hash, |e| e.is_in_bucket(bucket)) {
            removed(occupied.remove().0);
        }
    }

    /// Removes every entry expired at `now` by visiting all of them: the full scan the
    /// expiry index exists to avoid, kept as the benchmark's baseline and a test oracle.
    pub(super) fn remove_expired_by_scan(
        &mut self,
        now: Timestamp,
        mut removed: impl FnMut(Entry),
    ) {
        for entry in self.table.extract_if(|entry| entry.is_expired(now)) {
            removed(entry);
        }
    }

    /// Evicts one entry to make room, never the one keyed `protected`: the CLOCK hand moves
    /// over the queue, evicting the first expired entry or the first whose reference count
    /// is zero, decrementing the others. `None` if nothing else is stored.
    pub(super) fn evict_one(
        &mut self,
        now: Timestamp,
        protected: Option<(u64, &[u8])>,
    ) -> Option<(Entry, EvictionReason)> {
        // Each live slot is passed at most MAX_REFERENCED + 1 times before it is evicted.
        let mut budget = self.queue.len() * (usize::from(MAX_REFERENCED) + 1) + 1;
        while budget > 0 {
            budget -= 1;
            let (hash, ticket) = self.queue.pop_front()?;
            let Ok(occupied) = self.table.find_entry(hash, |e| e.ticket == ticket) else {
                continue; // stale slot of a removed entry
            };
            let entry = occupied.get();
            let is_protected = protected.is_some_and(|(h, key)| h == hash && *entry.key == *key);
            if is_protected {
                self.queue.push_back((hash, ticket));
                continue;
            }
            if entry.is_expired(now) {
                return Some((occupied.remove().0, EvictionReason::Expired));
            }
            if entry.referenced == 0 {
                return Some((occupied.remove().0, EvictionReason::Capacity));
            }
            let mut occupied = occupied;
            occupied.get_mut().referenced -= 1;
            self.queue.push_back((hash, ticket));
        }
        None
    }

    /// Drops stale queue slots and index hashes once they outnumber the live entries, so
    /// churn (delete and re-insert, overwrites into other buckets) cannot grow them without
    /// bound. Amortised O(1) per write.
    fn compact_if_stale(&mut self) {
        let live = self.table.len();
        if self.queue.len() > 2 * live + 1024 {
            let table = &self.table;
            self.queue
                .retain(|(hash, ticket)| table.find(*hash, |e| e.ticket == *ticket).is_some());
        }
        if self.expiry.needs_compaction(live) {
            let table = &self.table;
            self.expiry
                .compact(|bucket, hash| table.find(hash, |e| e.is_in_bucket(bucket)).is_some());
        }
    }
}
