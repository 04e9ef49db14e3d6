//! The in-memory store: a sharded hash map of `Bytes` values with versions, exact expiry,
//! schedule-driven bucket eviction and a memory capacity.
//!
//! # Layout
//! - [`Store`] (this file): picks the shard by key hash, keeps the global counters (entries,
//!   bytes used, evictions) and runs the write protocol: check preconditions, reserve memory,
//!   evict if needed, store.
//! - `shard`: one lock's worth of state: the compact hash index over the shard's chunks, and
//!   CLOCK eviction chunk by chunk.
//! - `chunk`: append-only buffers of entries, one expiry bucket each (contract 1), freed
//!   whole when the bucket expires; `item`: one entry's layout inside a chunk.
//! - `bucket_cache`: expiry to bucket, cached.
//! - `precondition`: `If-Match`/`If-None-Match` over [`Version`]s.
//! - `replica`: records from peers applied by last-writer-wins; digests for anti-entropy.
//! - `keys`: the key walk (`SCAN`), a random key, the live-key count.
//! - `journal`: the store's side of the [`Journal`] protocol (attaching it, undoing what did
//!   not become durable).
//!
//! # Guarantees
//! - No global lock: a request locks one shard for a hash lookup; only the byte and entry
//!   counters are shared atomics.
//! - An expired entry is never returned, whether or not it has been swept.
//! - A refused write (failed precondition, no room under `noeviction`) changes nothing.
//! - Memory in use stays within the capacity: a write reserves the bytes it will allocate
//!   atomically before it stores, evicting first if it must. "In use" is what the chunks and
//!   the index allocated, holes included, not an estimate per entry. Moving entries out of a
//!   chunk being compacted or evicted may exceed it by a chunk per shard for a moment.
//! - [`Store::evict_expired`] costs what expires, independent of how much is stored.

mod bucket_cache;
mod chunk;
mod item;
mod journal;
mod keys;
mod precondition;
mod replica;
mod shard;

use std::fmt;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use bytes::Bytes;
use hashbrown::DefaultHashBuilder;
use tidecache_contract::Schedule;

pub use keys::{LiveKeys, ScanStep};
pub use precondition::{EtagMatch, Preconditions};

use crate::base::events::{KeyEventKind, KeyEvents};
use crate::base::hlc::HybridClock;
use crate::base::journal::{Change, Journal, Journaled, Previous};
use crate::base::time::{Clock, Timestamp};
use crate::base::version::Version;
use shard::{Footprint, NewEntry, Shard};

/// How many shards a store has unless configured: enough that two requests rarely meet on
/// one lock even on machines with many more cores than threads serving requests.
pub const DEFAULT_SHARDS: usize = 64;

/// What an entry costs alone in an empty store: its chunk, with the chunk's bookkeeping, and
/// a fresh index table. An entry that costs more than the capacity can never be stored.
fn lone_cost(key_len: usize, value_len: usize) -> u64 {
    let item = item::MAX_HEADER as u64 + key_len as u64 + value_len as u64;
    chunk::chunk_capacity_for(item) + chunk::CHUNK_OVERHEAD + chunk::BUCKET_OVERHEAD + 64
}

/// How many chunks a write that does not fit may compact under `noeviction` before it is
/// refused.
const MAX_COMPACTIONS_PER_WRITE: usize = 8;

/// How many chunks of a due bucket one sweep step removes under the shard lock: a few
/// thousand small entries, sorted together so that their index removals share cache lines.
/// The lock is released between steps, so a large bucket does not stall the shard.
const SWEEP_CHUNKS: usize = 16;

/// What to do when a write does not fit in the capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum EvictionPolicy {
    /// Evict by CLOCK (second chance), an LRU approximation: expired entries go first, then
    /// entries not read since the hand last passed them.
    Clock,
    /// Evict nothing; refuse the write (HTTP 507).
    NoEviction,
}

impl fmt::Display for EvictionPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EvictionPolicy::Clock => "clock",
            EvictionPolicy::NoEviction => "noeviction",
        })
    }
}

/// Why an entry left the store without being deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EvictionReason {
    /// Its bucket's fire time passed (or it was expired when space was needed).
    Expired,
    /// Space was needed for a write.
    Capacity,
}

/// How a store is set up.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// The expiry schedule whose fire times are the bucket boundaries.
    pub schedule: Schedule,
    /// The most bytes the entries' chunks and index may allocate in total.
    pub capacity_bytes: u64,
    /// What happens when a write does not fit.
    pub eviction_policy: EvictionPolicy,
    /// The number of shards; rounded up to a power of two.
    pub shards: usize,
}

impl StoreConfig {
    /// Unlimited capacity, CLOCK eviction, default shards, on `schedule`.
    pub fn new(schedule: Schedule) -> StoreConfig {
        StoreConfig {
            schedule,
            capacity_bytes: u64::MAX,
            eviction_policy: EvictionPolicy::Clock,
            shards: DEFAULT_SHARDS,
        }
    }
}

/// A live entry as returned by a read.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Hit {
    /// The value (shares the stored bytes).
    pub value: Bytes,
    /// The version of the write that stored it.
    pub version: Version,
    /// When it expires, if ever.
    pub expires_at: Option<Timestamp>,
}

/// The result of a successful write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutOutcome {
    /// Whether the key had no live entry before.
    pub created: bool,
    /// The new entry's version.
    pub version: Version,
    /// The bucket (fire time) the entry was filed under, if it expires.
    pub bucket: Option<Timestamp>,
    /// Keys evicted to make room for this write.
    pub evicted: Vec<Bytes>,
}

/// Where a stored entry's version comes from.
#[derive(Debug, Clone, Copy)]
enum Origin {
    /// Issued by this store now.
    Issued,
    /// Read back from disk at start-up.
    Loaded(Version),
    /// Chosen by the node that forwarded the write.
    Given(Version),
}

/// Why a write was refused. A refused write changes nothing stored (capacity evictions made
/// while trying to fit it excepted: they are what the eviction policy is for).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum PutError {
    /// `If-Match`/`If-None-Match` did not hold.
    #[error("precondition failed: the key's current version is {}", describe(*current))]
    PreconditionFailed {
        /// The live entry's version, if any.
        current: Option<Version>,
    },
    /// The expiry is not after now.
    #[error("the expiry {expires_at} is not in the future")]
    AlreadyExpired {
        /// The expiry asked for.
        expires_at: Timestamp,
    },
    /// The schedule does not fire after the expiry, so no bucket could ever evict the entry;
    /// or records cannot hold the expiry (see `ExpiryIndex::bucket_for`).
    #[error(
        "no expiry bucket can hold {expires_at}: the expiry schedule does not fire after it, or \
         it is after {}, the last expiry records can hold; choose a shorter lifetime",
        Timestamp::LAST_IN_UNIX_NANOS
    )]
    NoBucket {
        /// The expiry asked for.
        expires_at: Timestamp,
    },
    /// The entry alone is larger than the whole capacity.
    #[error("the entry needs {charge} bytes but the capacity is {capacity} bytes")]
    EntryTooLarge {
        /// Bytes the entry would be charged.
        charge: u64,
        /// The store's capacity.
        capacity: u64,
    },
    /// No room and the policy forbids eviction (or nothing is left to evict).
    #[error(
        "out of memory: the entry needs {charge} bytes, {used} of {capacity} bytes are in use \
         and the eviction policy is {policy}"
    )]
    InsufficientStorage {
        /// Bytes the entry would be charged.
        charge: u64,
        /// Bytes in use.
        used: u64,
        /// The store's capacity.
        capacity: u64,
        /// The policy in force.
        policy: EvictionPolicy,
    },
}

/// The result of a successful delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deleted {
    /// The version of the entry deleted.
    pub version: Version,
    /// The delete's own version (its tombstone's), later than `version`.
    pub tombstone: Version,
    /// The deleted entry's expiry, which its tombstone keeps.
    pub expires_at: Option<Timestamp>,
}

/// Why a delete was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum DeleteError {
    /// The key has no live entry.
    #[error("the key does not exist")]
    NotFound,
    /// `If-Match`/`If-None-Match` did not hold.
    #[error("precondition failed: the key's current version is {}", describe(*current))]
    PreconditionFailed {
        /// The live entry's version, if any.
        current: Option<Version>,
    },
}

fn describe(version: Option<Version>) -> String {
    version.map_or_else(|| "none (absent)".to_string(), |v| v.to_string())
}

/// A snapshot of the store's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreStats {
    /// Entries held, including expired ones not yet swept.
    pub entries: u64,
    /// Bytes charged by those entries.
    pub used_bytes: u64,
    /// The capacity in bytes (`u64::MAX` when unlimited).
    pub capacity_bytes: u64,
    /// Entries removed because they expired.
    pub evicted_expired: u64,
    /// Entries removed to make room.
    pub evicted_capacity: u64,
}

/// The result of one sweep.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Buckets taken out of the index (summed over shards).
    pub buckets: usize,
    /// Entries evicted.
    pub evicted: u64,
}

/// The store. Share it behind an `Arc`; every method takes `&self`.
pub struct Store {
    /// The shards, a power of two of them.
    shards: Box<[Mutex<Shard>]>,
    /// Hashes keys for shard choice and table lookups (one hash serves both).
    hasher: DefaultHashBuilder,
    /// The source of now for expiry and versions.
    clock: Arc<dyn Clock>,
    /// Issues versions: this node's hybrid logical clock, shared with replication so that
    /// every version received moves it.
    versions: Arc<HybridClock>,
    /// Whether a delete leaves a tombstone in memory (replicated stores), so that an older
    /// write arriving late from a peer cannot bring the key back.
    keep_tombstones: bool,
    /// Bucket boundaries.
    schedule: Schedule,
    /// Capacity in bytes.
    capacity: u64,
    /// What to do when full.
    policy: EvictionPolicy,
    /// Bytes charged by all entries; a write reserves its bytes here before storing.
    used: AtomicU64,
    /// Entries in all shards.
    entries: AtomicU64,
    /// Evictions by reason.
    evicted_expired: AtomicU64,
    evicted_capacity: AtomicU64,
    /// Where the next search for a capacity victim outside the writer's shard starts, so
    /// that such evictions spread over the shards.
    eviction_cursor: AtomicUsize,
    /// Where the keys removed on their own (expired, evicted) are announced.
    events: Arc<KeyEvents>,
    /// Where changes go to become durable; unset for a memory-only node.
    journal: OnceLock<Arc<dyn Journal>>,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("shards", &self.shards.len())
            .field("schedule", &self.schedule)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl Store {
    /// An empty store reading time from `clock`.
    pub fn new(config: StoreConfig, clock: Arc<dyn Clock>) -> Store {
        Store::with_versions(config, clock, Arc::new(HybridClock::new(0)), false)
    }

    /// An empty store issuing versions from `versions` (tagged with the node's id). With
    /// `keep_tombstones` (replicated nodes) a delete leaves a tombstone that lives as long as
    /// the deleted entry could have, so that an older write arriving late from a peer, or
    /// offered by anti-entropy, loses to the delete.
    pub fn with_versions(
        config: StoreConfig,
        clock: Arc<dyn Clock>,
        versions: Arc<HybridClock>,
        keep_tombstones: bool,
    ) -> Store {
        let shard_count = config.shards.max(1).next_power_of_two();
        let hasher = DefaultHashBuilder::default();
        Store {
            shards: (0..shard_count)
                .map(|_| Mutex::new(Shard::new(hasher.clone())))
                .collect(),
            hasher,
            clock,
            versions,
            keep_tombstones,
            schedule: config.schedule,
            capacity: config.capacity_bytes,
            policy: config.eviction_policy,
            used: AtomicU64::new(0),
            entries: AtomicU64::new(0),
            evicted_expired: AtomicU64::new(0),
            evicted_capacity: AtomicU64::new(0),
            eviction_cursor: AtomicUsize::new(0),
            events: Arc::new(KeyEvents::default()),
            journal: OnceLock::new(),
        }
    }

    /// Where the keys this store removes on its own are announced.
    pub fn events(&self) -> &Arc<KeyEvents> {
        &self.events
    }

    /// The schedule whose fire times bound the buckets.
    pub fn schedule(&self) -> &Schedule {
        &self.schedule
    }

    /// What happens when a write does not fit.
    pub fn policy(&self) -> EvictionPolicy {
        self.policy
    }

    /// Whether deletes leave tombstones (a replicated node).
    pub fn keeps_tombstones(&self) -> bool {
        self.keep_tombstones
    }

    /// The clock that issues this store's versions.
    pub fn versions(&self) -> &Arc<HybridClock> {
        &self.versions
    }

    /// The store's clock (the sweeper and the HTTP layer read time from it too).
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// The key's live entry, or `None` if absent or expired (even if not yet swept).
    pub fn get(&self, key: &[u8]) -> Option<Hit> {
        let hash = self.hasher.hash_one(key);
        let now = self.clock.now();
        self.lock(self.shard_of(hash)).get(hash, key, now)
    }

    /// Stores `value` under `key`, expiring at `expires_at`, if `preconditions` hold. With a
    /// journal attached the change is journaled too but not awaited: callers that acknowledge
    /// writes use [`Store::put_journaled`].
    ///
    /// `value` is stored as given: a caller holding a slice of a larger buffer should copy
    /// it first, or the whole buffer stays alive (and uncounted) as long as the entry.
    ///
    /// # Errors
    /// [`PutError`]: a failed precondition, an expiry not in the future or beyond the
    /// schedule, or no room for the entry.
    pub fn put(
        &self,
        key: Bytes,
        value: Bytes,
        expires_at: Option<Timestamp>,
        preconditions: &Preconditions,
    ) -> Result<PutOutcome, PutError> {
        self.put_journaled(key, value, expires_at, preconditions)
            .map(|journaled| journaled.outcome)
    }

    /// [`Store::put`], returning the journal's commit as well: acknowledge the write only once
    /// it succeeds (see [`Journal`]).
    ///
    /// # Errors
    /// As [`Store::put`].
    pub fn put_journaled(
        &self,
        key: Bytes,
        value: Bytes,
        expires_at: Option<Timestamp>,
        preconditions: &Preconditions,
    ) -> Result<Journaled<PutOutcome>, PutError> {
        self.write(key, value, expires_at, preconditions, Origin::Issued)
    }

    /// As [`Store::put_journaled`] for an unconditional write whose version another node
    /// chose: the node that forwarded it here, so that it can send the same write to the next
    /// owner when this one does not answer (contract 4: every copy of a write has one
    /// version). The write is stored only if `version` is larger than the key's current
    /// one; otherwise a newer write already superseded it, and it is acknowledged as written
    /// and overwritten (`created` false, nothing journaled), as last-writer-wins orders it.
    /// A version beyond the clock skew bound is not taken: this node issues its own.
    ///
    /// # Errors
    /// As [`Store::put`].
    pub fn put_versioned_journaled(
        &self,
        key: Bytes,
        value: Bytes,
        expires_at: Option<Timestamp>,
        version: Version,
    ) -> Result<Journaled<PutOutcome>, PutError> {
        self.write(
            key,
            value,
            expires_at,
            &Preconditions::none(),
            Origin::Given(version),
        )
    }

    /// Stores an entry read back from disk at start-up with the version it was written with,
    /// not journaling it again; later versions issued by this store are larger.
    ///
    /// # Errors
    /// As [`Store::put`] (an expired entry, no bucket, no room under `noeviction`).
    pub fn load_entry(
        &self,
        key: Bytes,
        value: Bytes,
        version: Version,
        expires_at: Option<Timestamp>,
    ) -> Result<PutOutcome, PutError> {
        self.write(
            key,
            value,
            expires_at,
            &Preconditions::none(),
            Origin::Loaded(version),
        )
        .map(|journaled| journaled.outcome)
    }

    /// The write protocol; `origin` says where the version comes from (an entry read from
    /// disk keeps its version and is not journaled again).
    fn write(
        &self,
        key: Bytes,
        value: Bytes,
        expires_at: Option<Timestamp>,
        preconditions: &Preconditions,
        origin: Origin,
    ) -> Result<Journaled<PutOutcome>, PutError> {
        let now = self.clock.now();
        if let Some(expiry) = expires_at
            && expiry <= now
        {
            return Err(PutError::AlreadyExpired { expires_at: expiry });
        }
        let charge = lone_cost(key.len(), value.len());
        if charge > self.capacity {
            return Err(PutError::EntryTooLarge {
                charge,
                capacity: self.capacity,
            });
        }
        let hash = self.hasher.hash_one(&key[..]);
        let journal = self
            .journal
            .get()
            .filter(|_| !matches!(origin, Origin::Loaded(_)));
        let index = self.shard_of(hash);
        let mut evicted = Vec::new();
        // Each round either stores, fails, or frees memory elsewhere; the bound only guards
        // against a racing refill.
        let mut compactions = 0;
        for _ in 0..=self.shards.len() * 4 {
            let mut shard = self.lock(index);
            let bucket = match expires_at {
                Some(expiry) => Some(
                    shard
                        .buckets
                        .bucket_for(&self.schedule, expiry)
                        .ok_or(PutError::NoBucket { expires_at: expiry })?,
                ),
                None => None,
            };
            let existing = shard.existing(hash, &key, now);
            let current = existing.and_then(|e| e.live_version);
            if !preconditions.hold(current) {
                return Err(PutError::PreconditionFailed { current });
            }
            // Issued before the cost is planned: its encoded size depends on it.
            let version = match origin {
                Origin::Loaded(version) => {
                    self.versions.observe(version.to_disk(), now);
                    version
                }
                Origin::Given(version) if self.versions.observe(version.to_disk(), now) => {
                    if existing.is_some_and(|e| e.version >= version) {
                        return Ok(Journaled {
                            outcome: PutOutcome {
                                created: false,
                                version,
                                bucket,
                                evicted,
                            },
                            commit: None,
                        });
                    }
                    version
                }
                Origin::Issued | Origin::Given(_) => Version::from(self.versions.next(now)),
            };
            let new = NewEntry {
                key: &key,
                value: &value,
                hash,
                version,
                expires_at,
                bucket,
                tombstone: false,
            };
            loop {
                let cost = shard.cost(&new).ok_or_else(|| self.insufficient(charge))?;
                if self.try_reserve(cost) {
                    let before = shard.footprint();
                    let stored = shard.upsert(&new);
                    self.settle(before, shard.footprint(), cost);
                    let replaced = stored.map_err(|_| self.insufficient(charge))?;
                    let commit = journal.map(|journal| {
                        journal.append(Change {
                            key: key.clone(),
                            version,
                            value: Some(value.clone()),
                            expires_at,
                            bucket,
                            previous: replaced.filter(|_| current.is_some()),
                        })
                    });
                    drop(shard);
                    return Ok(Journaled {
                        outcome: PutOutcome {
                            created: current.is_none(),
                            version,
                            bucket,
                            evicted,
                        },
                        commit,
                    });
                }
                compactions += 1;
                if self.compactions_exhausted(compactions)
                    || !self.reclaim_in(&mut shard, now, Some((hash, &key)), &mut evicted)
                {
                    break;
                }
            }
            drop(shard);
            if self.compactions_exhausted(compactions)
                || !self.reclaim_elsewhere(index, now, &mut evicted)
            {
                break;
            }
        }
        Err(self.insufficient(charge))
    }

    /// Deletes the key's live entry if `preconditions` hold; returns the deleted version. With
    /// a journal attached the delete is journaled but not awaited (see
    /// [`Store::delete_journaled`]).
    ///
    /// # Errors
    /// [`DeleteError::PreconditionFailed`] (checked first, as RFC 9110 orders it) or
    /// [`DeleteError::NotFound`].
    pub fn delete(
        &self,
        key: &[u8],
        preconditions: &Preconditions,
    ) -> Result<Version, DeleteError> {
        self.delete_journaled(key, preconditions)
            .map(|journaled| journaled.outcome.version)
    }

    /// [`Store::delete`], returning the journal's commit as well. The journal gets a tombstone
    /// with a new version, later than the deleted one.
    ///
    /// # Errors
    /// As [`Store::delete`].
    pub fn delete_journaled(
        &self,
        key: &[u8],
        preconditions: &Preconditions,
    ) -> Result<Journaled<Deleted>, DeleteError> {
        let hash = self.hasher.hash_one(key);
        let now = self.clock.now();
        let mut shard = self.lock(self.shard_of(hash));
        let existing = shard.existing(hash, key, now);
        let current = existing.and_then(|e| e.live_version);
        if !preconditions.hold(current) {
            return Err(DeleteError::PreconditionFailed { current });
        }
        let Some(version) = current else {
            // A tombstone stays (it is what makes the delete stick); an expired entry is
            // removed now, as an expiry, and absent to the caller.
            if existing.is_some_and(|e| !e.tombstone) {
                let before = shard.footprint();
                let removed = shard.remove(hash, key);
                self.settle(before, shard.footprint(), 0);
                drop(shard);
                if removed.is_some() {
                    self.account_evicted(key, EvictionReason::Expired, false);
                }
            }
            return Err(DeleteError::NotFound);
        };
        let tombstone = Version::from(self.versions.next(now));
        let before = shard.footprint();
        let entombed = if self.keep_tombstones {
            // A delete is never refused for memory: the tombstone's bytes are taken even past
            // the capacity (a chunk at most), and the deleted value's go with the compaction.
            let cost = shard.tombstone_cost(hash, key).unwrap_or(0);
            self.used.fetch_add(cost, Ordering::Relaxed);
            let entombed = shard.entomb(hash, key, tombstone);
            self.settle(before, shard.footprint(), cost);
            entombed.ok().flatten()
        } else {
            None
        };
        let previous = match entombed {
            Some(previous) => previous,
            // Not replicated, or no chunk left for the tombstone: the entry goes.
            None => {
                let before = shard.footprint();
                let removed = shard.remove(hash, key).ok_or(DeleteError::NotFound)?;
                self.settle(before, shard.footprint(), 0);
                removed
            }
        };
        let deleted = Deleted {
            version,
            tombstone,
            expires_at: previous.expires_at,
        };
        let commit = self.journal.get().map(|journal| {
            journal.append(Change {
                key: Bytes::copy_from_slice(key),
                version: tombstone,
                value: None,
                expires_at: None,
                bucket: None,
                previous: Some(previous),
            })
        });
        drop(shard);
        Ok(Journaled {
            outcome: deleted,
            commit,
        })
    }

    /// Evicts every bucket whose fire time is at or before now. Called by the sweeper at
    /// each fire time; the work is proportional to the entries filed in those buckets, and
    /// their memory goes back a chunk at a time, with no work per entry besides its index
    /// slot. The shard lock is released every [`SWEEP_CHUNKS`] chunks.
    pub fn evict_expired(&self) -> SweepReport {
        let now = self.clock.now();
        let announce = self.events.wanted(KeyEventKind::Expired);
        let mut report = SweepReport::default();
        for shard in self.shards.iter() {
            let (buckets, due) = {
                let mut guard = lock(shard);
                let before = guard.footprint();
                let due = guard.take_due(now);
                self.settle(before, guard.footprint(), 0);
                due
            };
            report.buckets += buckets;
            for batch in due.chunks(SWEEP_CHUNKS) {
                let mut keys = Vec::new();
                let mut guard = lock(shard);
                let before = guard.footprint();
                let count = guard.remove_due(batch, |key, tombstone| {
                    // A tombstone reaching its expiry is bookkeeping, not a key expiring.
                    if announce && !tombstone {
                        keys.push(Bytes::copy_from_slice(key));
                    }
                });
                self.settle(before, guard.footprint(), 0);
                drop(guard);
                self.evicted_expired.fetch_add(count, Ordering::Relaxed);
                for key in keys {
                    self.events.announce(KeyEventKind::Expired, || key);
                }
                report.evicted += count;
            }
            if buckets > 0 {
                let mut guard = lock(shard);
                let before = guard.footprint();
                guard.shrink_index();
                self.settle(before, guard.footprint(), 0);
            }
        }
        report
    }

    /// Evicts every expired entry by visiting every entry: the pre-bucket approach, whose
    /// cost grows with the size of the cache. Kept as the baseline the sweep benchmark
    /// compares [`Store::evict_expired`] with, and as the oracle tests check it against.
    pub fn evict_expired_by_scan(&self) -> u64 {
        let now = self.clock.now();
        let announce = self.events.wanted(KeyEventKind::Expired);
        let mut evicted = 0;
        for shard in self.shards.iter() {
            let mut keys = Vec::new();
            let mut guard = lock(shard);
            let before = guard.footprint();
            guard.remove_expired_by_scan(now, |key, tombstone| {
                evicted += 1;
                if announce && !tombstone {
                    keys.push(Bytes::copy_from_slice(key));
                }
            });
            self.settle(before, guard.footprint(), 0);
            drop(guard);
            for key in keys {
                self.events.announce(KeyEventKind::Expired, || key);
            }
        }
        self.evicted_expired.fetch_add(evicted, Ordering::Relaxed);
        evicted
    }

    /// Removes from memory every entry and tombstone whose key `keep` refuses, without
    /// journaling anything: not a delete (the keys live on elsewhere, and what this node
    /// persisted stays on its volume), but memory given back when a partition moved away.
    /// Visits every entry; returns how many were removed.
    pub fn discard(&self, keep: &dyn Fn(&[u8]) -> bool) -> u64 {
        let mut discarded = 0;
        for shard in self.shards.iter() {
            let mut guard = lock(shard);
            let before = guard.footprint();
            guard.remove_where(|entry| !keep(entry.key), |_, _| discarded += 1);
            self.settle(before, guard.footprint(), 0);
        }
        discarded
    }

    /// The store's counters.
    pub fn stats(&self) -> StoreStats {
        StoreStats {
            entries: self.entries.load(Ordering::Relaxed),
            used_bytes: self.used.load(Ordering::Relaxed),
            capacity_bytes: self.capacity,
            evicted_expired: self.evicted_expired.load(Ordering::Relaxed),
            evicted_capacity: self.evicted_capacity.load(Ordering::Relaxed),
        }
    }

    fn shard_of(&self, hash: u64) -> usize {
        // Bits 32.. pick the shard: the table uses the low bits for the slot and the top 7
        // for its tag, so these leave both intact within a shard.
        (hash >> 32) as usize & (self.shards.len() - 1)
    }

    fn lock(&self, index: usize) -> MutexGuard<'_, Shard> {
        lock(&self.shards[index])
    }

    /// Atomically takes `cost` more bytes if they fit in the capacity.
    fn try_reserve(&self, cost: u64) -> bool {
        self.used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
                used.checked_add(cost)
                    .filter(|total| *total <= self.capacity)
            })
            .is_ok()
    }

    /// Brings the counters up to date after a shard went from `before` to `after`, of which
    /// `reserved` bytes were already taken by [`Store::try_reserve`].
    fn settle(&self, before: Footprint, after: Footprint, reserved: u64) {
        let grown = i128::from(after.bytes) - i128::from(before.bytes) - i128::from(reserved);
        adjust(&self.used, grown);
        adjust(
            &self.entries,
            i128::from(after.entries) - i128::from(before.entries),
        );
    }

    /// Frees memory in `shard` for a write (see `Shard::reclaim`): evicts by CLOCK, or under
    /// `noeviction` only compacts holes. Adds the evicted keys to `evicted`; `false` if there
    /// was nothing to free.
    fn reclaim_in(
        &self,
        shard: &mut Shard,
        now: Timestamp,
        protected: Option<(u64, &[u8])>,
        evicted: &mut Vec<Bytes>,
    ) -> bool {
        let evict = self.policy == EvictionPolicy::Clock;
        let mut gone = Vec::new();
        let before = shard.footprint();
        let progressed = shard.reclaim(now, protected, evict, |key, reason, tombstone| {
            gone.push((Bytes::copy_from_slice(key), reason, tombstone));
        });
        self.settle(before, shard.footprint(), 0);
        for (key, reason, tombstone) in gone {
            evicted.push(self.account_evicted(&key, reason, tombstone));
        }
        progressed
    }

    /// Frees memory in some shard other than `skip`; `false` if none had any to free.
    fn reclaim_elsewhere(&self, skip: usize, now: Timestamp, evicted: &mut Vec<Bytes>) -> bool {
        let count = self.shards.len();
        let start = self.eviction_cursor.fetch_add(1, Ordering::Relaxed);
        (0..count)
            .map(|offset| (start + offset) & (count - 1))
            .filter(|index| *index != skip)
            .any(|index| self.reclaim_in(&mut self.lock(index), now, None, evicted))
    }

    /// Whether a write under `noeviction` has run as many compactions as it may: each scans
    /// the shard for the chunk with the most holes, so their number per write is bounded
    /// (CLOCK frees memory without a scan and needs no bound).
    fn compactions_exhausted(&self, compactions: usize) -> bool {
        self.policy == EvictionPolicy::NoEviction && compactions > MAX_COMPACTIONS_PER_WRITE
    }

    fn insufficient(&self, charge: u64) -> PutError {
        PutError::InsufficientStorage {
            charge,
            used: self.used.load(Ordering::Relaxed),
            capacity: self.capacity,
            policy: self.policy,
        }
    }

    /// Counts an entry that left on its own and announces it (tombstones are bookkeeping, not
    /// keys); returns the key.
    fn account_evicted(&self, key: &[u8], reason: EvictionReason, tombstone: bool) -> Bytes {
        let (counter, kind) = match reason {
            EvictionReason::Expired => (&self.evicted_expired, KeyEventKind::Expired),
            EvictionReason::Capacity => (&self.evicted_capacity, KeyEventKind::Evicted),
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let key = Bytes::copy_from_slice(key);
        if !tombstone {
            self.events.announce(kind, || key.clone());
        }
        key
    }
}

#[cfg(test)]
impl Store {
    /// The bytes the shards hold, counted the slow way (tests check the running counter
    /// against it).
    fn recount(&self) -> u64 {
        self.shards
            .iter()
            .map(|shard| lock(shard).recount().bytes)
            .sum()
    }

    /// Every shard's chunks and index, for test failures.
    fn describe(&self) -> String {
        self.shards
            .iter()
            .map(|shard| lock(shard).describe())
            .collect::<Vec<_>>()
            .join("--\n")
    }

    /// Whether the store holds an entry for `key`, expired or not.
    fn holds(&self, key: &[u8]) -> bool {
        let hash = self.hasher.hash_one(key);
        self.lock(self.shard_of(hash)).peek(hash, key).is_some()
    }
}

/// Adds `delta` (which may be negative) to `counter`.
fn adjust(counter: &AtomicU64, delta: i128) {
    match u64::try_from(delta) {
        Ok(more) => counter.fetch_add(more, Ordering::Relaxed),
        Err(_) => counter.fetch_sub(u64::try_from(-delta).unwrap_or(u64::MAX), Ordering::Relaxed),
    };
}

/// Locks a shard. A panic while holding a shard lock cannot leave the shard half-updated in
/// a way later operations trip over (every update is a single table operation), so a
/// poisoned lock is taken over rather than turned into a panic on every later request.
fn lock(shard: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    shard
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod model_tests;
#[cfg(test)]
mod tests;
