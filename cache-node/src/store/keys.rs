//! Iterating over the keys: the cursor walk behind RESP's `SCAN` (and `KEYS`, `FLUSHDB`),
//! a random key, and the number of live keys.
//!
//! # Guarantees
//! A cursor is a position in one fixed order of all possible keys: the shard first, then the
//! key's hash within the shard. A walk from cursor 0 until the cursor is 0 again returns every
//! key that was live for the whole walk exactly once, whatever was written, deleted or
//! rehashed meanwhile (the order does not depend on the table's layout, unlike Redis' reverse
//! binary cursor, so there are no duplicates either). Each step costs one pass over the
//! shards it visits, holding one shard's lock at a time.

use std::hash::BuildHasher;

use bytes::Bytes;

use super::{Store, lock};

/// One step of a key walk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanStep {
    /// The live keys found, at least the `count` asked for unless the walk ended.
    pub keys: Vec<Bytes>,
    /// Where the next step starts; 0 when the walk is complete.
    pub cursor: u64,
}

/// How many live keys a store holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LiveKeys {
    /// Every live key.
    pub keys: u64,
    /// Those of them that expire.
    pub expiring: u64,
}

impl Store {
    /// The keys from `cursor` on in the walk order (see the module documentation), at least
    /// `count` of them (more when several keys share a hash) unless the walk ends first.
    /// Expired entries and tombstones are skipped.
    pub fn scan(&self, cursor: u64, count: usize) -> ScanStep {
        let count = count.max(1);
        let now = self.clock.now();
        let bits = self.shards.len().trailing_zeros();
        let (mut shard, mut from) = split_cursor(cursor, bits);
        let mut keys = Vec::new();
        while shard < self.shards.len() {
            // Every live key of the shard at or after `from`, by position.
            let mut found: Vec<(u64, Bytes)> = Vec::new();
            lock(&self.shards[shard]).for_each(|entry| {
                if !entry.is_live(now) {
                    return;
                }
                let position = position(self.hasher.hash_one(entry.key), bits);
                if position >= from {
                    found.push((position, Bytes::copy_from_slice(entry.key)));
                }
            });
            let wanted = count - keys.len().min(count);
            if found.len() > wanted {
                found.sort_unstable_by_key(|(position, _)| *position);
                // Keys sharing the last position taken go in this step too, so that the
                // cursor can move strictly past it.
                let last = found[wanted - 1].0;
                let end = found.partition_point(|(position, _)| *position <= last);
                keys.extend(found.drain(..end).map(|(_, key)| key));
                return match last
                    .checked_add(1)
                    .filter(|next| *next <= max_position(bits))
                {
                    Some(next) => ScanStep {
                        keys,
                        cursor: join_cursor(shard, next, bits),
                    },
                    None => self.next_shard(keys, shard, bits),
                };
            }
            keys.extend(found.into_iter().map(|(_, key)| key));
            shard += 1;
            from = 0;
            if keys.len() >= count {
                return self.next_shard(keys, shard - 1, bits);
            }
        }
        ScanStep { keys, cursor: 0 }
    }

    /// A step that ends after `shard`: the cursor points at the next shard's start, or is 0
    /// after the last shard.
    fn next_shard(&self, keys: Vec<Bytes>, shard: usize, bits: u32) -> ScanStep {
        let cursor = if shard + 1 < self.shards.len() {
            join_cursor(shard + 1, 0, bits)
        } else {
            0
        };
        ScanStep { keys, cursor }
    }

    /// A live key chosen at random (`seed` picks it), or `None` if there is none.
    pub fn random_key(&self, seed: u64) -> Option<Bytes> {
        let now = self.clock.now();
        let count = self.shards.len();
        let start = (seed >> 32) as usize;
        (0..count).find_map(|offset| {
            let shard = lock(&self.shards[(start + offset) & (count - 1)]);
            shard
                .live_from(seed as usize, now)
                .map(Bytes::copy_from_slice)
        })
    }

    /// Live keys (not expired, not tombstones), counted shard by shard: unlike
    /// [`Store::stats`]' entries it leaves out what expired but was not yet swept.
    pub fn live_keys(&self) -> LiveKeys {
        let now = self.clock.now();
        let mut live = LiveKeys::default();
        for shard in self.shards.iter() {
            lock(shard).for_each(|entry| {
                if entry.is_live(now) {
                    live.keys += 1;
                    live.expiring += u64::from(entry.expires_at.is_some());
                }
            });
        }
        live
    }
}

/// A key's position within its shard: its hash without the bits that chose the shard
/// (bits 32.. of the hash, see `Store::shard_of`), so that the position plus the shard is
/// the whole hash.
fn position(hash: u64, bits: u32) -> u64 {
    if bits == 0 {
        return hash;
    }
    ((hash >> (32 + bits)) << 32) | (hash & 0xffff_ffff)
}

/// The largest position with `bits` shard bits.
fn max_position(bits: u32) -> u64 {
    u64::MAX >> bits
}

fn split_cursor(cursor: u64, bits: u32) -> (usize, u64) {
    if bits == 0 {
        return (0, cursor);
    }
    (
        (cursor >> (64 - bits)) as usize,
        cursor & max_position(bits),
    )
}

fn join_cursor(shard: usize, position: u64, bits: u32) -> u64 {
    if bits == 0 {
        return position;
    }
    ((shard as u64) << (64 - bits)) | position
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::sync::Arc;

    use proptest::prelude::*;
    use tidecache_contract::Schedule;

    use super::*;
    use crate::base::time::{ManualClock, Timestamp};
    use crate::store::{Preconditions, StoreConfig};

    fn store(shards: usize) -> Store {
        let mut config = StoreConfig::new(Schedule::new("* * * * *", None).expect("schedule"));
        config.shards = shards;
        Store::new(
            config,
            Arc::new(ManualClock::new(Timestamp::from_millis(1_000_000))),
        )
    }

    fn put(store: &Store, key: &str) {
        store
            .put(
                Bytes::copy_from_slice(key.as_bytes()),
                Bytes::from_static(b"v"),
                None,
                &Preconditions::none(),
            )
            .expect("put");
    }

    fn walk(store: &Store, count: usize, mut between: impl FnMut(usize)) -> Vec<Bytes> {
        let mut cursor = 0;
        let mut seen = Vec::new();
        for step in 0.. {
            let next = store.scan(cursor, count);
            seen.extend(next.keys);
            cursor = next.cursor;
            if cursor == 0 {
                break;
            }
            between(step);
        }
        seen
    }

    proptest! {
        /// Keys live for the whole walk are returned exactly once, whatever else is written
        /// and deleted between the steps; nothing returned was never written.
        #[test]
        fn a_walk_returns_every_stable_key_once(
            shards in prop_oneof![Just(1_usize), Just(4), Just(64)],
            stable in proptest::collection::btree_set(0_u32..2_000, 0..300),
            count in 1_usize..40,
            churn in proptest::collection::vec(2_000_u32..2_200, 0..200),
        ) {
            let store = store(shards);
            for key in &stable {
                put(&store, &key.to_string());
            }
            let mut churn = churn.into_iter();
            let seen = walk(&store, count, |_| {
                for key in churn.by_ref().take(5) {
                    let key = key.to_string();
                    if store.delete(key.as_bytes(), &Preconditions::none()).is_err() {
                        put(&store, &key);
                    }
                }
            });
            let unique: BTreeSet<&Bytes> = seen.iter().collect();
            prop_assert_eq!(unique.len(), seen.len(), "a key came twice");
            for key in &stable {
                prop_assert!(unique.contains(&Bytes::from(key.to_string())), "{} missing", key);
            }
            for key in &seen {
                let n: u32 = std::str::from_utf8(key).expect("utf8").parse().expect("number");
                prop_assert!(stable.contains(&n) || n >= 2_000);
            }
        }
    }

    #[test]
    fn random_keys_and_live_counts() {
        let store = store(8);
        assert_eq!(store.random_key(7), None);
        assert_eq!(store.live_keys(), LiveKeys::default());
        for key in ["a", "b", "c"] {
            put(&store, key);
        }
        assert_eq!(
            store.live_keys(),
            LiveKeys {
                keys: 3,
                expiring: 0
            }
        );
        let picked: BTreeSet<Bytes> = (0..200_u64)
            .filter_map(|seed| store.random_key(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15)))
            .collect();
        assert_eq!(picked.len(), 3, "every key can be picked: {picked:?}");
        assert_eq!(walk(&store, 1, |_| {}).len(), 3);
    }
}
