//! The store as a replica (contract 4): records from peers applied by last-writer-wins, and
//! the per-bucket digests and bucket contents anti-entropy compares and transfers.
//!
//! # Guarantees
//! - A record is applied only if its version is larger than the key's current one, whatever
//!   that is (live, expired or tombstone), under the key's shard lock: any order and any
//!   number of deliveries of the same records leave the same state. The one exception: a
//!   current version more than `hlc::MAX_FORWARD_SKEW_MILLIS` ahead of the clock gives way.
//! - Applied records are not journaled (with a shared volume only the accepting node persists
//!   a write), except through [`Replica::apply_durably`] (the join catch-up).
//!
//! # Cost
//! Digests and bucket contents are computed by visiting every entry, one shard lock at a time
//! (the lock is held for one shard's visit). Anti-entropy asks for them once per peer per
//! interval.

use std::collections::{BTreeMap, HashSet};
use std::hash::BuildHasher;

use bytes::Bytes;
use tidecache_contract::disk::Record;

use super::shard::{EntryRef, NewEntry};
use super::{Change, Previous, Store, Version, lone_cost};
use crate::base::digest::{BucketDigest, Cutoff, NO_EXPIRY_BUCKET, fingerprint};
use crate::base::hlc;
use crate::base::replica::{Applied, Loader, Replica};
use crate::base::time::Timestamp;

/// The bucket id of an entry in digests and transfers.
fn bucket_id(entry: &EntryRef<'_>) -> i64 {
    entry.bucket.map_or(NO_EXPIRY_BUCKET, Timestamp::as_millis)
}

impl Store {
    /// Applies `record` by last-writer-wins; with `persist`, journals it when it changes the
    /// store (see [`Replica::apply_durably`]).
    fn apply_record(&self, record: Record, persist: bool) -> Applied {
        let now = self.clock.now();
        let expires_at = record.expiry_unix_nanos.map(Timestamp::from_unix_nanos);
        if expires_at.is_some_and(|expiry| expiry <= now) {
            return Applied::Stale;
        }
        let version = Version::from(record.version);
        let tombstone = record.value.is_none();
        let value = record.value.map(Bytes::from).unwrap_or_default();
        let key = Bytes::from(record.key);
        if lone_cost(key.len(), value.len()) > self.capacity {
            return Applied::Refused;
        }
        let hash = self.hasher.hash_one(&key[..]);
        let index = self.shard_of(hash);
        // As in `Store::put`: each round stores, gives up, or frees memory elsewhere.
        let mut compactions = 0;
        for _ in 0..=self.shards.len() * 4 {
            let mut shard = self.lock(index);
            let bucket = match expires_at {
                Some(expiry) => match shard.buckets.bucket_for(&self.schedule, expiry) {
                    Some(bucket) => Some(bucket),
                    None => return Applied::Refused,
                },
                None => None,
            };
            let existing = shard.existing(hash, &key, now);
            // A local version too far ahead of the clock (a forged record accepted before
            // records were checked, one loaded from the volume, or one issued while this
            // node's clock was wrong) does not hold against a peer's: it gives way, so that
            // anti-entropy repairs the divergence instead of losing to it for good.
            if existing
                .is_some_and(|e| e.version >= version && !hlc::is_beyond_skew(e.version.get(), now))
            {
                return Applied::Stale;
            }
            let was_live = existing.is_some_and(|e| e.live_version.is_some());
            let new = NewEntry {
                key: &key,
                value: &value,
                hash,
                version,
                expires_at,
                bucket,
                tombstone,
            };
            loop {
                let Some(cost) = shard.cost(&new) else {
                    return Applied::Refused;
                };
                if self.try_reserve(cost) {
                    let before = shard.footprint();
                    let stored = shard.upsert(&new);
                    self.settle(before, shard.footprint(), cost);
                    let Ok(replaced) = stored else {
                        return Applied::Refused;
                    };
                    if let Some(journal) = self.journal.get().filter(|_| persist) {
                        // Under the shard lock, as the journal requires. Nobody waits for the
                        // commit: a failure is logged (and undone) by the journal.
                        let previous = if tombstone {
                            // A tombstone goes to the area of the bucket it shadows.
                            Some(Previous {
                                value: Bytes::new(),
                                version,
                                expires_at,
                                bucket,
                            })
                        } else {
                            replaced.filter(|_| was_live)
                        };
                        drop(journal.append(Change {
                            key: key.clone(),
                            version,
                            value: (!tombstone).then(|| value.clone()),
                            expires_at: if tombstone { None } else { expires_at },
                            bucket: if tombstone { None } else { bucket },
                            previous,
                        }));
                    }
                    return Applied::Changed;
                }
                compactions += 1;
                if self.compactions_exhausted(compactions)
                    || !self.reclaim_in(&mut shard, now, Some((hash, &key)), &mut Vec::new())
                {
                    break;
                }
            }
            drop(shard);
            if self.compactions_exhausted(compactions)
                || !self.reclaim_elsewhere(index, now, &mut Vec::new())
            {
                break;
            }
        }
        Applied::Refused
    }

    /// Calls `visit` with every unexpired entry and tombstone, one shard at a time.
    fn visit_unexpired(&self, mut visit: impl FnMut(EntryRef<'_>)) {
        let now = self.clock.now();
        for shard in self.shards.iter() {
            super::lock(shard).for_each(|entry| {
                if !entry.is_expired(now) {
                    visit(entry);
                }
            });
        }
    }
}

impl Loader for Store {
    fn keeps_tombstones(&self) -> bool {
        self.keep_tombstones
    }

    fn observe(&self, version: tidecache_contract::disk::Version, now: Timestamp) {
        self.versions.observe(version, now);
    }

    fn load(
        &self,
        key: Bytes,
        value: Bytes,
        version: Version,
        expires_at: Option<Timestamp>,
    ) -> Applied {
        match self.load_entry(key, value, version, expires_at) {
            Ok(_) => Applied::Changed,
            Err(error) => {
                tracing::warn!(%error, "entry not loaded");
                Applied::Refused
            }
        }
    }

    fn now(&self) -> Timestamp {
        self.clock.now()
    }
}

impl Replica for Store {
    fn apply(&self, record: Record) -> Applied {
        self.apply_record(record, false)
    }

    fn apply_durably(&self, record: Record) -> Applied {
        self.apply_record(record, true)
    }

    fn digests(&self, cutoff: Cutoff) -> Vec<BucketDigest> {
        let mut digests: BTreeMap<(i64, u16), BucketDigest> = BTreeMap::new();
        self.visit_unexpired(|entry| {
            let version = entry.version.to_disk();
            if !cutoff.includes(version) {
                return;
            }
            let (bucket, range) = (bucket_id(&entry), cutoff.ranges.of(entry.key));
            let digest = digests.entry((bucket, range)).or_insert(BucketDigest {
                bucket,
                range,
                count: 0,
                xor: 0,
            });
            digest.count += 1;
            digest.xor ^= fingerprint(entry.key, version);
        });
        digests.into_values().collect()
    }

    fn range_records(&self, ranges: &HashSet<(i64, u16)>, cutoff: Cutoff) -> Vec<Record> {
        let mut records = Vec::new();
        self.visit_unexpired(|entry| {
            if cutoff.includes(entry.version.to_disk())
                && ranges.contains(&(bucket_id(&entry), cutoff.ranges.of(entry.key)))
            {
                records.push(Record {
                    key: entry.key.to_vec(),
                    version: entry.version.to_disk(),
                    expiry_unix_nanos: entry.expires_at.and_then(Timestamp::to_unix_nanos),
                    value: (!entry.tombstone).then(|| entry.value.to_vec()),
                });
            }
        });
        records
    }

    fn discard(&self, keep: &dyn Fn(&[u8]) -> bool) -> u64 {
        Store::discard(self, keep)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tidecache_contract::Schedule;
    use tidecache_contract::disk::Version as DiskVersion;

    use super::*;
    use crate::base::digest::KeyRanges;
    use crate::base::hlc::HybridClock;
    use crate::base::time::ManualClock;
    use crate::store::{DeleteError, Preconditions, StoreConfig};

    /// 2026-11-19T00:00:20Z.
    const START: i64 = 1_795_046_420_000;
    /// Every version.
    const ALL: Cutoff = Cutoff {
        before: u64::MAX,
        ranges: KeyRanges::Hashed,
    };

    fn store(node: u64) -> Store {
        Store::with_versions(
            StoreConfig::new(Schedule::every_minute()),
            Arc::new(ManualClock::new(Timestamp::from_millis(START))),
            Arc::new(HybridClock::new(node)),
            true,
        )
    }

    fn record(key: &str, value: Option<&str>, hlc: u64, node: u64) -> Record {
        Record {
            key: key.as_bytes().to_vec(),
            version: DiskVersion { hlc, node },
            expiry_unix_nanos: Timestamp::from_millis(START + 90_000).to_unix_nanos(),
            value: value.map(|v| v.as_bytes().to_vec()),
        }
    }

    fn value(store: &Store, key: &str) -> Option<String> {
        store
            .get(key.as_bytes())
            .map(|hit| String::from_utf8_lossy(&hit.value).into_owned())
    }

    #[test]
    fn the_larger_version_wins_and_a_tombstone_is_never_undone_by_an_older_write() {
        let store = store(1);
        assert_eq!(store.apply(record("k", Some("a"), 10, 1)), Applied::Changed);
        assert_eq!(store.apply(record("k", Some("b"), 10, 2)), Applied::Changed);
        assert_eq!(store.apply(record("k", Some("c"), 10, 1)), Applied::Stale);
        assert_eq!(store.apply(record("k", Some("b"), 10, 2)), Applied::Stale);
        assert_eq!(value(&store, "k").as_deref(), Some("b"));
        assert_eq!(store.apply(record("k", None, 11, 1)), Applied::Changed);
        assert_eq!(value(&store, "k"), None);
        assert_eq!(
            store.apply(record("k", Some("late"), 10, 9)),
            Applied::Stale
        );
        assert_eq!(value(&store, "k"), None);
        assert_eq!(
            store.apply(record("k", Some("new"), 12, 1)),
            Applied::Changed
        );
        assert_eq!(value(&store, "k").as_deref(), Some("new"));
        let mut expired = record("gone", Some("x"), 20, 1);
        expired.expiry_unix_nanos = Timestamp::from_millis(START - 1).to_unix_nanos();
        assert_eq!(store.apply(expired), Applied::Stale);
    }

    #[test]
    fn a_local_version_too_far_in_the_future_gives_way_to_a_peers_record() {
        let store = store(1);
        let now = hlc::physical(Timestamp::from_millis(START));
        // Held before records were checked: the forged version.
        assert_eq!(
            store.apply(record("pinned", Some("forged"), u64::MAX, 9)),
            Applied::Changed
        );
        assert_eq!(
            store.apply(record("pinned", Some("real"), now, 2)),
            Applied::Changed
        );
        assert_eq!(value(&store, "pinned").as_deref(), Some("real"));
        // A version within the bound still wins over an older one.
        let ahead = hlc::physical(Timestamp::from_millis(START + hlc::MAX_FORWARD_SKEW_MILLIS));
        assert_eq!(
            store.apply(record("near", Some("ahead"), ahead, 2)),
            Applied::Changed
        );
        assert_eq!(
            store.apply(record("near", Some("older"), now, 3)),
            Applied::Stale
        );
        assert_eq!(value(&store, "near").as_deref(), Some("ahead"));
    }

    #[test]
    fn a_local_delete_leaves_a_tombstone_that_outranks_what_it_deleted() {
        let store = store(7);
        let expires = Some(Timestamp::from_millis(START + 30_000));
        let put = store
            .put(
                Bytes::from_static(b"k"),
                Bytes::from_static(b"v"),
                expires,
                &Preconditions::none(),
            )
            .expect("put");
        assert_eq!(put.version.node(), 7);
        let deleted = store
            .delete_journaled(b"k", &Preconditions::none())
            .expect("delete")
            .outcome;
        assert_eq!(deleted.version, put.version);
        assert!(deleted.tombstone > put.version);
        assert_eq!(deleted.expires_at, expires);
        assert_eq!(store.get(b"k"), None);
        assert_eq!(
            store.delete(b"k", &Preconditions::none()),
            Err(DeleteError::NotFound)
        );
        // The write the delete removed, arriving again from a peer, stays deleted.
        let replay = Record {
            key: b"k".to_vec(),
            version: put.version.to_disk(),
            expiry_unix_nanos: expires.and_then(Timestamp::to_unix_nanos),
            value: Some(b"v".to_vec()),
        };
        assert_eq!(store.apply(replay), Applied::Stale);
        // The tombstone is what the digests and transfers carry.
        let digest = store.digests(ALL)[0];
        let records = store.range_records(&HashSet::from([(digest.bucket, digest.range)]), ALL);
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].value, None);
        assert_eq!(records[0].version, deleted.tombstone.to_disk());
        // A new write after the delete creates the key again.
        let again = store
            .put(
                Bytes::from_static(b"k"),
                Bytes::from_static(b"w"),
                expires,
                &Preconditions::create_only(),
            )
            .expect("create");
        assert!(again.created);
    }

    #[test]
    fn stores_that_applied_the_same_records_in_any_order_have_equal_digests() {
        let records = [
            record("a", Some("1"), 5, 1),
            record("a", Some("2"), 6, 2),
            record("b", None, 7, 1),
            Record {
                expiry_unix_nanos: None,
                ..record("c", Some("forever"), 8, 3)
            },
        ];
        let forward = store(1);
        let backward = store(2);
        for r in records.iter().cloned() {
            forward.apply(r);
        }
        for r in records.iter().rev().cloned() {
            backward.apply(r);
        }
        let digests = forward.digests(ALL);
        assert_eq!(digests, backward.digests(ALL));
        let keys_in = |bucket| {
            digests
                .iter()
                .filter(|d| d.bucket == bucket)
                .map(|d| d.count)
                .sum::<u64>()
        };
        assert_eq!(keys_in(NO_EXPIRY_BUCKET), 1);
        assert_eq!(
            keys_in(digests[0].bucket),
            2,
            "a and b expire in one bucket"
        );
        let other = store(3);
        other.apply(record("a", Some("1"), 5, 1));
        assert_ne!(other.digests(ALL), digests);
        let all: HashSet<(i64, u16)> = digests.iter().map(|d| (d.bucket, d.range)).collect();
        for r in forward.range_records(&all, ALL) {
            other.apply(r);
        }
        assert_eq!(other.digests(ALL), digests);
        // A cutoff leaves out newer versions on both sides alike.
        let older = Cutoff {
            before: 7,
            ranges: KeyRanges::Hashed,
        };
        assert_eq!(forward.digests(older), backward.digests(older));
        let counted: u64 = forward.digests(older).iter().map(|d| d.count).sum();
        assert_eq!(counted, 1, "only a (at 6) is older than 7");
    }

    /// A journal that keeps what it is given.
    #[derive(Debug, Default)]
    struct Recorder(std::sync::Mutex<Vec<Change>>);

    impl crate::base::journal::Journal for Recorder {
        fn append(&self, change: Change) -> crate::base::journal::Commit {
            self.0.lock().expect("lock").push(change);
            crate::base::journal::Commit::done(Ok(()))
        }
    }

    #[test]
    fn only_durable_applies_that_change_the_store_reach_the_journal() {
        let store = store(1);
        let journal = Arc::new(Recorder::default());
        assert!(store.attach_journal(journal.clone()));
        assert_eq!(store.apply(record("k", Some("a"), 10, 2)), Applied::Changed);
        assert_eq!(
            store.apply_durably(record("k", Some("b"), 11, 2)),
            Applied::Changed
        );
        assert_eq!(
            store.apply_durably(record("k", Some("old"), 9, 2)),
            Applied::Stale
        );
        assert_eq!(
            store.apply_durably(record("k", None, 12, 2)),
            Applied::Changed
        );
        let changes = journal.0.lock().expect("lock");
        assert_eq!(changes.len(), 2);
        assert_eq!(changes[0].value.as_deref(), Some(&b"b"[..]));
        assert_eq!(changes[0].version, Version::with_node(11, 2));
        assert_eq!(
            changes[0].previous.as_ref().map(|p| p.version),
            Some(Version::with_node(10, 2)),
            "the replaced live entry, for shadows and reverts"
        );
        assert!(changes[1].is_delete());
        let shadowed = changes[1].previous.as_ref().expect("tombstone area");
        assert_eq!(
            shadowed.expires_at,
            Some(Timestamp::from_millis(START + 90_000))
        );
    }
}
