//! One shard of the store: a compact hash index over the shard's chunks, all behind one
//! short-held lock taken by [`super::Store`].
//!
//! # The index
//! One `u64` per entry in a `hashbrown` table: 26 bits of the key's hash (the tag), two bits
//! of CLOCK reference count, and the item's location (22 bits of chunk id, 14 of offset).
//! The key itself lives only in the chunk, beside the value: a lookup compares tags first,
//! and reads the key from the chunk only for a tag that matches. The table rehashes from the
//! tag alone, so growing it never touches the chunks.
//!
//! # Eviction
//! CLOCK over chunks rather than entries: the hand takes the oldest chunk. If every entry in
//! it was read since the hand last passed, their reference counts go down in place and the
//! chunk goes to the back of the hand's path. Otherwise the entries that are expired or
//! unread are evicted, the others moved (one reference count fewer) to their bucket's open
//! chunk, and the chunk freed. An entry read at least once survives a pass, as with
//! per-entry CLOCK, and a pass that evicts frees the chunk's holes as well.

use std::hash::BuildHasher;

use hashbrown::{DefaultHashBuilder, HashTable};

use super::bucket_cache::BucketCache;
use super::chunk::{ChunkRef, Chunks, Location};
use super::item::{Item, NewItem};
use super::{EvictionReason, Hit, Previous, Version};
use crate::base::time::Timestamp;

/// The most reads a CLOCK hand forgives: an entry read at least this often survives this many
/// passes of the hand before it can be evicted. Two bits in the index slot.
const MAX_REFERENCED: u64 = 3;

/// How far ahead of the removals a sweep loads table slots (see `Shard::touch`): enough
/// misses in flight to hide memory latency, few enough to stay in the L1 cache.
const TOUCH_AHEAD: usize = 16;

/// How many chunks the hand may visit per chunk of the shard before a write gives up on it.
const HAND_PASSES: usize = MAX_REFERENCED as usize + 2;

const OFFSET_BITS: u32 = 14;
const CHUNK_BITS: u32 = 22;
const REFERENCED_SHIFT: u32 = OFFSET_BITS + CHUNK_BITS;
const TAG_SHIFT: u32 = REFERENCED_SHIFT + 2;
const TAG_MASK: u64 = (1 << (64 - TAG_SHIFT)) - 1;

/// The tag of a key hash: its low bits (the store picks the shard from bits 32 and up).
fn tag_of(hash: u64) -> u64 {
    hash & TAG_MASK
}

/// The hash the table files a tag under: the tag spread over all 64 bits, so that the
/// table's position bits (low) and control bits (high) both vary with every tag bit.
fn table_hash(tag: u64) -> u64 {
    tag.wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

fn slot_tag(slot: u64) -> u64 {
    slot >> TAG_SHIFT
}

fn slot_referenced(slot: u64) -> u64 {
    (slot >> REFERENCED_SHIFT) & MAX_REFERENCED
}

fn slot_location(slot: u64) -> Location {
    Location {
        chunk: ((slot >> OFFSET_BITS) & ((1 << CHUNK_BITS) - 1)) as u32,
        offset: (slot & ((1 << OFFSET_BITS) - 1)) as u32,
    }
}

fn slot(tag: u64, referenced: u64, location: Location) -> u64 {
    (tag << TAG_SHIFT)
        | (referenced.min(MAX_REFERENCED) << REFERENCED_SHIFT)
        | (u64::from(location.chunk) << OFFSET_BITS)
        | u64::from(location.offset)
}

/// An entry as the shard's readers see it, borrowed from its chunk.
#[derive(Debug, Clone, Copy)]
pub(super) struct EntryRef<'a> {
    pub(super) key: &'a [u8],
    pub(super) value: &'a [u8],
    pub(super) version: Version,
    pub(super) expires_at: Option<Timestamp>,
    /// The bucket it is filed under, if it expires.
    pub(super) bucket: Option<Timestamp>,
    /// A delete's tombstone (replicated stores only): invisible to reads and
    /// preconditions, kept so that an older write arriving late from a peer loses to it.
    pub(super) tombstone: bool,
}

impl EntryRef<'_> {
    /// Whether a read at `now` sees the entry: neither expired nor a tombstone.
    pub(super) fn is_live(&self, now: Timestamp) -> bool {
        !self.tombstone && !self.is_expired(now)
    }

    /// Whether the entry is expired at `now`: reads never return it from that instant on.
    pub(super) fn is_expired(&self, now: Timestamp) -> bool {
        self.expires_at.is_some_and(|expiry| expiry <= now)
    }
}

/// A new value (or tombstone) for a key, ready to be stored.
#[derive(Debug, Clone, Copy)]
pub(super) struct NewEntry<'a> {
    pub(super) key: &'a [u8],
    pub(super) value: &'a [u8],
    pub(super) hash: u64,
    pub(super) version: Version,
    pub(super) expires_at: Option<Timestamp>,
    pub(super) bucket: Option<Timestamp>,
    /// A delete's tombstone rather than a value (`value` is then empty).
    pub(super) tombstone: bool,
}

impl NewEntry<'_> {
    fn item(&self) -> NewItem<'_> {
        NewItem {
            key: self.key,
            value: self.value,
            version: self.version,
            expires_at: self.expires_at,
            tombstone: self.tombstone,
        }
    }
}

/// What a key currently holds, as a write sees it before deciding.
#[derive(Debug, Clone, Copy)]
pub(super) struct Existing {
    /// The version, if the entry is live (not expired, not a tombstone).
    pub(super) live_version: Option<Version>,
    /// The version whatever the entry's state: what a replicated write must beat.
    pub(super) version: Version,
    /// Whether the entry is a tombstone.
    pub(super) tombstone: bool,
}

/// The shard has no chunk id left for a write (2^22 chunks, 64 GiB of small entries): the
/// write is refused as if the store were full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct NoChunk;

/// What the shard's memory and entries amount to (see [`Shard::footprint`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Footprint {
    pub(super) bytes: u64,
    pub(super) entries: u64,
}

/// A shard. Every method runs under the shard's lock and does no I/O and no work
/// proportional to the shard's size, so the lock is held for microseconds.
#[derive(Debug)]
pub(super) struct Shard {
    /// Index slots (see the module documentation).
    table: HashTable<u64>,
    chunks: Chunks,
    /// The store's key hasher, for the keys read back out of chunks.
    hasher: DefaultHashBuilder,
    /// Expiry to bucket, cached.
    pub(super) buckets: BucketCache,
}

impl Shard {
    /// An empty shard hashing keys with `hasher` (the store's, shared by all shards).
    pub(super) fn new(hasher: DefaultHashBuilder) -> Shard {
        Shard {
            table: HashTable::new(),
            chunks: Chunks::default(),
            hasher,
            buckets: BucketCache::default(),
        }
    }

    /// The bytes the shard has allocated (chunks and index) and the entries it holds.
    pub(super) fn footprint(&self) -> Footprint {
        Footprint {
            bytes: self.chunks.allocated() + self.table.allocation_size() as u64,
            entries: self.table.len() as u64,
        }
    }

    /// The bytes a write of `new` would add, at most: what it allocates, less the chunk that
    /// the value it replaces frees (which goes right after the new one is stored). `None` if
    /// it cannot be stored at all (no chunk id left).
    pub(super) fn cost(&self, new: &NewEntry<'_>) -> Option<u64> {
        let replaced = self.find(new.hash, new.key).map(slot_location);
        let cost = self.chunks.cost(new.bucket, &new.item(), replaced)?;
        Some(
            if replaced.is_none() && self.table.len() >= self.table.capacity() {
                // The table doubles: the new allocation exists beside the old one for a moment.
                cost + (self.table.allocation_size() as u64 * 2).max(64)
            } else {
                cost
            },
        )
    }

    fn find(&self, hash: u64, key: &[u8]) -> Option<u64> {
        let tag = tag_of(hash);
        let chunks = &self.chunks;
        self.table
            .find(table_hash(tag), |s| {
                slot_tag(*s) == tag && key_at(chunks, slot_location(*s)) == Some(key)
            })
            .copied()
    }

    /// The entry at `location`.
    fn entry_at(&self, location: Location) -> Option<EntryRef<'_>> {
        entry_at(&self.chunks, location)
    }

    /// The key's live entry. Counts as a reference for CLOCK.
    pub(super) fn get(&mut self, hash: u64, key: &[u8], now: Timestamp) -> Option<Hit> {
        let tag = tag_of(hash);
        let chunks = &self.chunks;
        let slot = self.table.find_mut(table_hash(tag), |s| {
            slot_tag(*s) == tag && key_at(chunks, slot_location(*s)) == Some(key)
        })?;
        let location = slot_location(*slot);
        let (item, _) = chunks.item(location)?;
        if item.tombstone || item.expires_at.is_some_and(|expiry| expiry <= now) {
            return None;
        }
        *slot = self::slot(tag, slot_referenced(*slot) + 1, location);
        Some(Hit {
            value: chunks.value(location, &item),
            version: item.version,
            expires_at: item.expires_at,
        })
    }

    /// What the key holds now, for a write's preconditions.
    pub(super) fn existing(&self, hash: u64, key: &[u8], now: Timestamp) -> Option<Existing> {
        let entry = self.peek(hash, key)?;
        Some(Existing {
            live_version: entry.is_live(now).then_some(entry.version),
            version: entry.version,
            tombstone: entry.tombstone,
        })
    }

    /// The key's entry, live or expired, without counting a reference.
    pub(super) fn peek(&self, hash: u64, key: &[u8]) -> Option<EntryRef<'_>> {
        self.entry_at(slot_location(self.find(hash, key)?))
    }

    /// Stores `new`, replacing the key's entry if it has one; returns the replaced entry's
    /// value and metadata (live or expired). The caller reserved [`Shard::cost`].
    pub(super) fn upsert(&mut self, new: &NewEntry<'_>) -> Result<Option<Previous>, NoChunk> {
        let location = self.chunks.append(new.bucket, &new.item()).ok_or(NoChunk)?;
        let tag = tag_of(new.hash);
        let chunks = &self.chunks;
        let found = self.table.find_mut(table_hash(tag), |s| {
            slot_tag(*s) == tag && key_at(chunks, slot_location(*s)) == Some(new.key)
        });
        let previous = match found {
            Some(slot) => {
                let old = slot_location(*slot);
                *slot = self::slot(tag, slot_referenced(*slot) + 1, location);
                self.retire(old)
            }
            None => {
                self.table
                    .insert_unique(table_hash(tag), slot(tag, 0, location), |s| {
                        table_hash(slot_tag(*s))
                    });
                None
            }
        };
        self.compact_sparse();
        Ok(previous)
    }

    /// The replaced item at `location`, which no slot points at any more, as a [`Previous`];
    /// its bytes become a hole.
    fn retire(&mut self, location: Location) -> Option<Previous> {
        let (item, _) = self.chunks.item(location)?;
        let previous = Previous {
            value: self.chunks.value(location, &item),
            version: item.version,
            expires_at: item.expires_at,
            bucket: self.chunks.bucket_of(location),
        };
        self.chunks.kill(location, item.len());
        Some(previous)
    }

    /// Turns the key's entry into a tombstone at `version`, keeping its expiry and bucket (the
    /// tombstone must live as long as the value it shadows could). Returns what it held. The
    /// caller accounts [`Shard::tombstone_cost`].
    pub(super) fn entomb(
        &mut self,
        hash: u64,
        key: &[u8],
        version: Version,
    ) -> Result<Option<Previous>, NoChunk> {
        let Some(entry) = self.peek(hash, key) else {
            return Ok(None);
        };
        let (expires_at, bucket) = (entry.expires_at, entry.bucket);
        self.upsert(&NewEntry {
            key,
            value: &[],
            hash,
            version,
            expires_at,
            bucket,
            tombstone: true,
        })
    }

    /// The bytes turning the key's entry into a tombstone would allocate.
    pub(super) fn tombstone_cost(&self, hash: u64, key: &[u8]) -> Option<u64> {
        let entry = self.peek(hash, key)?;
        self.cost(&NewEntry {
            key,
            value: &[],
            hash,
            version: entry.version,
            expires_at: entry.expires_at,
            bucket: entry.bucket,
            tombstone: true,
        })
    }

    /// Calls `visit` with every entry (live, expired and tombstones), in table order: the
    /// scans behind anti-entropy digests, bucket transfers and key walks.
    pub(super) fn for_each(&self, mut visit: impl FnMut(EntryRef<'_>)) {
        for slot in self.table.iter() {
            if let Some(entry) = self.entry_at(slot_location(*slot)) {
                visit(entry);
            }
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
            .filter_map(|index| self.table.get_bucket(index))
            .filter_map(|slot| self.entry_at(slot_location(*slot)))
            .find(|entry| entry.is_live(now))
            .map(|entry| entry.key)
    }

    /// Removes the key's entry, live or expired; returns what it held.
    pub(super) fn remove(&mut self, hash: u64, key: &[u8]) -> Option<Previous> {
        let tag = tag_of(hash);
        let chunks = &self.chunks;
        let slot = self
            .table
            .find_entry(table_hash(tag), |s| {
                slot_tag(*s) == tag && key_at(chunks, slot_location(*s)) == Some(key)
            })
            .ok()?
            .remove()
            .0;
        let previous = self.retire(slot_location(slot));
        self.compact_sparse();
        previous
    }

    /// Entries held and bytes allocated, counted the slow way (tests check the store's
    /// running counters against it).
    #[cfg(test)]
    pub(super) fn recount(&self) -> Footprint {
        Footprint {
            bytes: self.chunks.recount() + self.table.allocation_size() as u64,
            entries: self.table.len() as u64,
        }
    }

    /// The chunks and the index, for test failures.
    #[cfg(test)]
    pub(super) fn describe(&self) -> String {
        format!(
            "index {} entries, {} bytes\n{}",
            self.table.len(),
            self.table.allocation_size(),
            self.chunks.describe()
        )
    }

    /// Takes the chunks of every bucket due at `now` (see `Chunks::take_due`).
    pub(super) fn take_due(&mut self, now: Timestamp) -> (usize, Vec<ChunkRef>) {
        self.chunks.take_due(now)
    }

    /// Removes the entries of due chunks and frees them, calling `removed` with each entry's
    /// key and whether it was a tombstone; returns how many. The removals go in table order,
    /// with the slots a few removals ahead loaded early so that their cache misses overlap:
    /// that keeps the cost per entry from growing with the size of the table.
    pub(super) fn remove_due(
        &mut self,
        chunks: &[ChunkRef],
        mut removed: impl FnMut(&[u8], bool),
    ) -> u64 {
        let mask = self.table.num_buckets().saturating_sub(1) as u64;
        // (table position, tag, location, the item), each item decoded once.
        let mut targets: Vec<(u64, u64, Location, Item)> = Vec::new();
        for chunk in chunks {
            for (location, item) in self.chunks.due_items(*chunk) {
                let tag = tag_of(self.hasher.hash_one(self.chunks.key(location, &item)));
                targets.push((table_hash(tag) & mask, tag, location, item));
            }
        }
        targets.sort_unstable_by_key(|target| target.0);
        let mut count = 0;
        for (index, (_, tag, location, item)) in targets.iter().enumerate() {
            if let Some(ahead) = targets.get(index + TOUCH_AHEAD) {
                self.touch(ahead.0);
            }
            if let Ok(found) = self
                .table
                .find_entry(table_hash(*tag), |s| slot_location(*s) == *location)
            {
                found.remove();
                count += 1;
                removed(self.chunks.key(*location, item), item.tombstone);
            }
        }
        for chunk in chunks {
            self.chunks.free_due(*chunk);
        }
        count
    }

    /// Loads the table slot at `position`. Safe Rust has no prefetch instruction; a load
    /// whose value is kept is the next best thing.
    fn touch(&self, position: u64) {
        std::hint::black_box(self.table.get_bucket(position as usize));
    }

    /// Gives back index memory once a sweep left the table at most a quarter full: the
    /// rehash costs what the table still holds, less than what the sweep removed.
    pub(super) fn shrink_index(&mut self) {
        if self.table.len() <= self.table.capacity() / 4 {
            self.table
                .shrink_to(self.table.len(), |s| table_hash(slot_tag(*s)));
        }
    }

    /// Removes every entry expired at `now` by visiting all of them: the full scan the
    /// buckets exist to avoid, kept as the benchmark's baseline and a test oracle.
    pub(super) fn remove_expired_by_scan(
        &mut self,
        now: Timestamp,
        removed: impl FnMut(&[u8], bool),
    ) {
        self.remove_where(|entry| entry.is_expired(now), removed);
    }

    /// Removes every entry (tombstones too) `doomed` picks, visiting every entry, and calls
    /// `removed` with each one's key and whether it was a tombstone; nothing is journaled.
    pub(super) fn remove_where(
        &mut self,
        doomed: impl Fn(&EntryRef<'_>) -> bool,
        mut removed: impl FnMut(&[u8], bool),
    ) {
        let chunks = &self.chunks;
        let expired: Vec<u64> = self
            .table
            .extract_if(|s| entry_at(chunks, slot_location(*s)).is_some_and(|e| doomed(&e)))
            .collect();
        for slot in expired {
            let location = slot_location(slot);
            if let Some(entry) = self.entry_at(location) {
                removed(entry.key, entry.tombstone);
            }
            if let Some((item, _)) = self.chunks.item(location) {
                self.chunks.kill(location, item.len());
            }
        }
        self.compact_sparse();
    }

    /// Frees memory for a write: compacts the chunk with the most holes (`evict == false`,
    /// the `noeviction` policy), or runs the CLOCK hand over chunks until one pass evicts
    /// something or gives memory back. Never evicts the entry keyed `protected`. Calls
    /// `removed` with each evicted entry's key, why, and whether it was a tombstone. `false`
    /// if nothing could be freed.
    pub(super) fn reclaim(
        &mut self,
        now: Timestamp,
        protected: Option<(u64, &[u8])>,
        evict: bool,
        mut removed: impl FnMut(&[u8], EvictionReason, bool),
    ) -> bool {
        let protected = protected.map(|(hash, key)| (tag_of(hash), key));
        let is_protected =
            |tag: u64, key: &[u8]| protected.is_some_and(|(t, k)| t == tag && k == key);
        if !evict {
            // One compaction: the caller bounds how many a write may run.
            let before = self.footprint().bytes;
            return match self.chunks.most_dead() {
                Some(None) => true, // all dead: freed whole
                Some(Some(id)) => {
                    self.rewrite(id, |_, _, referenced| Fate::Move(referenced));
                    self.footprint().bytes < before
                }
                None => false,
            };
        }
        // Each live entry survives at most MAX_REFERENCED + 1 passes of the hand.
        for _ in 0..self.chunks.count() * HAND_PASSES + 1 {
            let before = self.footprint().bytes;
            let Some(id) = self.chunks.next_for_hand() else {
                return false;
            };
            if !self.has_victim(id, now, &is_protected) {
                // A second chance for every entry: counted down in place, no bytes moved.
                self.age(id, &is_protected);
                self.chunks.requeue(id);
                continue;
            }
            if !self.chunks.freeze_for_rewrite(id) {
                return true;
            }
            let mut evicted = false;
            self.rewrite(id, |entry, tag, referenced| {
                if is_protected(tag, entry.key) {
                    return Fate::Move(referenced);
                }
                let reason = if entry.is_expired(now) {
                    EvictionReason::Expired
                } else if referenced == 0 {
                    EvictionReason::Capacity
                } else {
                    return Fate::Move(referenced - 1);
                };
                removed(entry.key, reason, entry.tombstone);
                evicted = true;
                Fate::Evict
            });
            if evicted || self.footprint().bytes < before {
                return true;
            }
        }
        false
    }

    /// The live entries of chunk `id` with their locations, tags and reference counts.
    fn live_in(&self, id: u32) -> Vec<(Location, EntryRef<'_>, u64, u64)> {
        self.chunks
            .items(id)
            .into_iter()
            .filter_map(|(location, item)| {
                let tag = tag_of(self.hasher.hash_one(self.chunks.key(location, &item)));
                let slot = self
                    .table
                    .find(table_hash(tag), |s| slot_location(*s) == location)?;
                let entry = entry_at(&self.chunks, location)?;
                Some((location, entry, tag, slot_referenced(*slot)))
            })
            .collect()
    }

    /// Whether the hand would evict something from chunk `id`: an entry expired or not read
    /// since the hand last passed, other than the protected one.
    fn has_victim(
        &self,
        id: u32,
        now: Timestamp,
        is_protected: &impl Fn(u64, &[u8]) -> bool,
    ) -> bool {
        self.live_in(id).iter().any(|(_, entry, tag, referenced)| {
            !is_protected(*tag, entry.key) && (entry.is_expired(now) || *referenced == 0)
        })
    }

    /// Counts down the reference count of every live entry of chunk `id` but the protected
    /// one.
    fn age(&mut self, id: u32, is_protected: &impl Fn(u64, &[u8]) -> bool) {
        let aged: Vec<(u64, Location)> = self
            .live_in(id)
            .into_iter()
            .filter(|(_, entry, tag, _)| !is_protected(*tag, entry.key))
            .map(|(location, _, tag, _)| (tag, location))
            .collect();
        for (tag, location) in aged {
            if let Some(slot) = self
                .table
                .find_mut(table_hash(tag), |s| slot_location(*s) == location)
            {
                *slot = self::slot(tag, slot_referenced(*slot).saturating_sub(1), location);
            }
        }
    }

    /// Compacts the chunks that became at least half holes.
    fn compact_sparse(&mut self) {
        while let Some(id) = self.chunks.next_sparse() {
            self.rewrite(id, |_, _, referenced| Fate::Move(referenced));
        }
    }

    /// Moves the live entries of chunk `id` that `fate` keeps to their bucket's open chunk,
    /// drops the others from the index, and frees the chunk. If a move finds no chunk id
    /// (2^22 chunks in the shard), it stops there: what left the chunk is marked dead in it,
    /// and the chunk goes back on the hand's path.
    fn rewrite(&mut self, id: u32, mut fate: impl FnMut(EntryRef<'_>, u64, u8) -> Fate) {
        // A frozen chunk's bytes are shared, so the entries stay readable while being moved.
        let Some(bytes) = self.chunks.frozen_bytes(id) else {
            return;
        };
        let bucket = self.chunks.chunk_bucket(id);
        let mut gone = Vec::new();
        for (location, item) in self.chunks.items(id) {
            let start = location.offset as usize;
            let key = &bytes[start + item.key_start..][..item.key_len];
            let value = &bytes[start + item.value_start()..][..item.value_len];
            let tag = tag_of(self.hasher.hash_one(key));
            let Ok(found) = self
                .table
                .find_entry(table_hash(tag), |s| slot_location(*s) == location)
            else {
                continue; // a hole
            };
            let entry = EntryRef {
                key,
                value,
                version: item.version,
                expires_at: item.expires_at,
                bucket,
                tombstone: item.tombstone,
            };
            let referenced = slot_referenced(*found.get()) as u8;
            match fate(entry, tag, referenced) {
                Fate::Evict => {
                    found.remove();
                }
                Fate::Move(referenced) => {
                    let moved = NewItem {
                        key,
                        value,
                        version: item.version,
                        expires_at: item.expires_at,
                        tombstone: item.tombstone,
                    };
                    let Some(to) = self.chunks.append(bucket, &moved) else {
                        for (location, len) in gone {
                            self.chunks.kill(location, len);
                        }
                        self.chunks.requeue(id);
                        return;
                    };
                    *found.into_mut() = self::slot(tag, u64::from(referenced), to);
                }
            }
            gone.push((location, item.len()));
        }
        self.chunks.free(id);
    }
}

/// What a rewrite does with one live entry.
enum Fate {
    /// Drop it from the index.
    Evict,
    /// Move it, with this reference count.
    Move(u8),
}

/// The key of the item at `location`.
fn key_at(chunks: &Chunks, location: Location) -> Option<&[u8]> {
    let (item, bytes) = chunks.item(location)?;
    bytes.get(item.key_start..item.key_start + item.key_len)
}

/// The entry at `location`, borrowed from its chunk.
fn entry_at(chunks: &Chunks, location: Location) -> Option<EntryRef<'_>> {
    let (item, bytes) = chunks.item(location)?;
    Some(EntryRef {
        key: bytes.get(item.key_start..item.key_start + item.key_len)?,
        value: bytes.get(item.value_start()..item.value_start() + item.value_len)?,
        version: item.version,
        expires_at: item.expires_at,
        bucket: chunks.bucket_of(location),
        tombstone: item.tombstone,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// While a sweep works through a due bucket's chunks (releasing the lock between
    /// batches), neither the CLOCK hand nor a late write into a bucket of the same fire time
    /// touches them, and freeing them leaves the new bucket's bookkeeping alone.
    #[test]
    fn a_bucket_made_again_during_its_sweep_is_kept_apart() {
        let hasher = DefaultHashBuilder::default();
        let mut shard = Shard::new(hasher.clone());
        let fire = Timestamp::from_millis(1_795_046_460_000);
        let expiry = Timestamp::from_millis(fire.as_millis() - 1_000);
        let value = [7_u8; 100];
        let put = |shard: &mut Shard, key: &[u8], hlc: u64| {
            shard
                .upsert(&NewEntry {
                    key,
                    value: &value,
                    hash: hasher.hash_one(key),
                    version: Version::new(hlc),
                    expires_at: Some(expiry),
                    bucket: Some(fire),
                    tombstone: false,
                })
                .expect("a chunk id");
        };
        for i in 0..300 {
            put(&mut shard, format!("old-{i}").as_bytes(), i);
        }
        let (buckets, due) = shard.take_due(fire);
        assert_eq!(buckets, 1);
        assert!(
            !shard.reclaim(fire, None, true, |_, _, _| {}),
            "the hand left them alone"
        );
        put(&mut shard, b"late", 1_000);
        assert_eq!(shard.remove_due(&due, |_, _| {}), 300);
        assert_eq!(shard.footprint(), shard.recount());
        assert!(shard.peek(hasher.hash_one(b"late"), b"late").is_some());
    }

    #[test]
    fn slots_pack_and_unpack() {
        let location = Location {
            chunk: (1 << CHUNK_BITS) - 1,
            offset: (1 << OFFSET_BITS) - 1,
        };
        let tag = TAG_MASK;
        let packed = slot(tag, 5, location);
        assert_eq!(slot_tag(packed), tag);
        assert_eq!(slot_referenced(packed), MAX_REFERENCED);
        assert_eq!(slot_location(packed), location);
        let small = slot(
            1,
            0,
            Location {
                chunk: 2,
                offset: 3,
            },
        );
        assert_eq!(
            (
                slot_tag(small),
                slot_referenced(small),
                slot_location(small)
            ),
            (
                1,
                0,
                Location {
                    chunk: 2,
                    offset: 3
                }
            )
        );
    }
}
