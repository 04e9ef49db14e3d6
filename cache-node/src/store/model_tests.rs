//! The store against a simple model: a `HashMap` of keys to values, versions and expiries.
//!
//! This is the property test of the index and the chunks underneath the store: entries of
//! many sizes (some larger than a chunk), overwrites that leave holes, deletes, expiry by
//! sweep and by reads, and capacity eviction.
//!
//! Capacity eviction is not predicted (the CLOCK choice is an implementation detail); the
//! store reports the keys it evicted and the model drops them, then must agree on everything
//! else: every read, every precondition outcome, entry counts, and which entries a sweep
//! removes. A `noeviction` refusal must change nothing and come only from a store that is
//! full. The byte counter must equal what the chunks and the index hold, counted the slow
//! way, and stay within the capacity (plus the one chunk per shard that moving entries may
//! take for a moment).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use proptest::prelude::*;
use tidecache_contract::Schedule;

use super::*;
use crate::base::time::{ManualClock, Timestamp};

const START: i64 = 1_795_046_420_000;

#[derive(Debug, Clone)]
enum Condition {
    None,
    CreateOnly,
    /// If-Match with the model's current version (or a made-up one when absent).
    IfCurrent,
    /// If-Match with a version that is never current.
    IfStale,
}

#[derive(Debug, Clone)]
enum Op {
    Put {
        key: u8,
        value_len: u16,
        ttl_secs: Option<u8>,
        condition: Condition,
    },
    Get {
        key: u8,
    },
    Delete {
        key: u8,
        condition: Condition,
    },
    Advance {
        millis: u32,
    },
    Sweep,
}

fn condition() -> impl Strategy<Value = Condition> {
    prop_oneof![
        3 => Just(Condition::None),
        1 => Just(Condition::CreateOnly),
        1 => Just(Condition::IfCurrent),
        1 => Just(Condition::IfStale),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..12_u8, value_len(), proptest::option::of(1..150_u8), condition()).prop_map(
            |(key, value_len, ttl_secs, condition)| Op::Put { key, value_len, ttl_secs, condition }
        ),
        3 => (0..12_u8).prop_map(|key| Op::Get { key }),
        1 => (0..12_u8, condition()).prop_map(|(key, condition)| Op::Delete { key, condition }),
        2 => (0..90_000_u32).prop_map(|millis| Op::Advance { millis }),
        1 => Just(Op::Sweep),
    ]
}

/// Mostly small values, some larger than a chunk (16 KiB).
fn value_len() -> impl Strategy<Value = u16> {
    prop_oneof![
        20 => 0..40_u16,
        3 => 40..2_000_u16,
        1 => 15_000..20_000_u16,
    ]
}

/// The most a write of the model's entries can newly allocate: a chunk of its own for the
/// largest value, or a doubling of a shard's index.
const MAX_WRITE_COST: u64 = 24 * 1024;

/// The shards of the model's stores.
const SHARDS: u64 = 4;

/// What moving entries may take beyond the capacity for a moment, per shard: one chunk.
const SLACK: u64 = SHARDS * (chunk::CHUNK_BYTES as u64 + chunk::CHUNK_OVERHEAD);

#[derive(Debug, Clone)]
struct ModelEntry {
    value: Bytes,
    version: Version,
    expires_at: Option<Timestamp>,
}

#[derive(Debug, Default)]
struct Model {
    entries: HashMap<Bytes, ModelEntry>,
}

impl Model {
    fn live(&self, key: &[u8], now: Timestamp) -> Option<&ModelEntry> {
        self.entries
            .get(key)
            .filter(|e| e.expires_at.is_none_or(|expiry| expiry > now))
    }

    fn preconditions(&self, condition: &Condition, key: &[u8], now: Timestamp) -> Preconditions {
        match condition {
            Condition::None => Preconditions::none(),
            Condition::CreateOnly => Preconditions::create_only(),
            Condition::IfCurrent => Preconditions::if_version(
                self.live(key, now)
                    .map_or(Version::new(7), |entry| entry.version),
            ),
            Condition::IfStale => Preconditions::if_version(Version::new(3)),
        }
    }
}

fn key_bytes(key: u8) -> Bytes {
    Bytes::from(format!("key-{key}"))
}

fn run(ops: Vec<Op>, capacity: u64, policy: EvictionPolicy) -> Result<(), TestCaseError> {
    let schedule = Schedule::every_minute();
    let clock = Arc::new(ManualClock::new(Timestamp::from_millis(START)));
    let store = Store::new(
        StoreConfig {
            schedule: schedule.clone(),
            capacity_bytes: capacity,
            eviction_policy: policy,
            shards: SHARDS as usize,
        },
        clock.clone(),
    );
    let mut model = Model::default();
    for op in ops {
        check(&store, &model, capacity, clock.now())?;
        let now = clock.now();
        match op {
            Op::Put {
                key,
                value_len,
                ttl_secs,
                condition,
            } => {
                let key = key_bytes(key);
                let value = Bytes::from(vec![value_len as u8; usize::from(value_len)]);
                let expires_at =
                    ttl_secs.and_then(|s| now.checked_add(Duration::from_secs(u64::from(s))));
                let preconditions = model.preconditions(&condition, &key, now);
                let current = model.live(&key, now).map(|e| e.version);
                let used_before = store.stats().used_bytes;
                let result = store.put(key.clone(), value.clone(), expires_at, &preconditions);
                if 2 * lone_cost(key.len(), value.len()) + 1024 > capacity {
                    // Too large for the capacity, or for what the index tables and the value it
                    // replaces (freed only once the new one is stored) leave of it. The CLOCK
                    // hand may have evicted entries trying to fit it, unreported.
                    if let Err(
                        PutError::EntryTooLarge { .. } | PutError::InsufficientStorage { .. },
                    ) = result
                    {
                        model.entries.retain(|key, _| store.holds(key));
                        continue;
                    }
                    prop_assert!(
                        lone_cost(key.len(), value.len()) <= capacity,
                        "stored an entry too large: {:?}",
                        result
                    );
                }
                if !preconditions.hold(current) {
                    prop_assert_eq!(result, Err(PutError::PreconditionFailed { current }));
                    continue;
                }
                if policy == EvictionPolicy::NoEviction
                    && let Err(PutError::InsufficientStorage { .. }) = result
                {
                    // Only a full store refuses; the model stays as it was, and the reads
                    // after this prove the store did too.
                    prop_assert!(
                        used_before + MAX_WRITE_COST > capacity,
                        "refused with {used_before} of {capacity} bytes in use"
                    );
                    continue;
                }
                let outcome = result
                    .map_err(|e| TestCaseError::fail(format!("{e}\n{}", store.describe())))?;
                prop_assert_eq!(outcome.created, current.is_none());
                if let Some(previous) = current {
                    prop_assert!(outcome.version > previous);
                }
                for evicted in &outcome.evicted {
                    prop_assert_ne!(evicted, &key);
                    prop_assert!(model.entries.remove(evicted).is_some());
                }
                model.entries.insert(
                    key,
                    ModelEntry {
                        value,
                        version: outcome.version,
                        expires_at,
                    },
                );
            }
            Op::Get { key } => {
                let key = key_bytes(key);
                let expected = model.live(&key, now).map(|e| Hit {
                    value: e.value.clone(),
                    version: e.version,
                    expires_at: e.expires_at,
                });
                prop_assert_eq!(store.get(&key), expected);
            }
            Op::Delete { key, condition } => {
                let key = key_bytes(key);
                let preconditions = model.preconditions(&condition, &key, now);
                let current = model.live(&key, now).map(|e| e.version);
                let result = store.delete(&key, &preconditions);
                let expected = if !preconditions.hold(current) {
                    Err(DeleteError::PreconditionFailed { current })
                } else {
                    // A delete removes an expired entry too, reporting it absent.
                    model.entries.remove(&key);
                    current.ok_or(DeleteError::NotFound)
                };
                prop_assert_eq!(result, expected);
            }
            Op::Advance { millis } => clock.advance(Duration::from_millis(u64::from(millis))),
            Op::Sweep => {
                let before = model.entries.len();
                model.entries.retain(|_, e| {
                    let bucket = e.expires_at.map(|expiry| {
                        let fire = schedule
                            .bucket_for(expiry.to_datetime().expect("in range"))
                            .expect("fires");
                        Timestamp::from_datetime(fire)
                    });
                    bucket.is_none_or(|fire| fire > now)
                });
                let report = store.evict_expired();
                prop_assert_eq!(report.evicted, (before - model.entries.len()) as u64);
            }
        }
    }
    check(&store, &model, capacity, clock.now())
}

/// What must hold between operations.
fn check(store: &Store, model: &Model, capacity: u64, now: Timestamp) -> Result<(), TestCaseError> {
    let stats = store.stats();
    prop_assert_eq!(stats.entries, model.entries.len() as u64);
    prop_assert_eq!(stats.used_bytes, store.recount());
    prop_assert!(stats.used_bytes <= capacity.saturating_add(SLACK));
    // Every entry the model holds is readable unless expired: checked key by key, so that an
    // entry lost by a move or a compaction shows.
    for (key, entry) in &model.entries {
        let live = entry.expires_at.is_none_or(|expiry| expiry > now);
        prop_assert_eq!(store.get(key).is_some(), live, "key {:?}", key);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn store_agrees_with_the_model_with_clock_eviction(
        ops in proptest::collection::vec(op(), 1..120),
        capacity in 1_000_u64..48_000,
    ) {
        run(ops, capacity, EvictionPolicy::Clock)?;
    }

    #[test]
    fn store_agrees_with_the_model_with_noeviction(
        ops in proptest::collection::vec(op(), 1..120),
        capacity in 1_000_u64..48_000,
    ) {
        run(ops, capacity, EvictionPolicy::NoEviction)?;
    }

    #[test]
    fn store_agrees_with_the_model_without_a_capacity(
        ops in proptest::collection::vec(op(), 1..120),
    ) {
        run(ops, u64::MAX, EvictionPolicy::Clock)?;
    }
}
