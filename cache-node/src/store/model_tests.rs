//! The store against a simple model: a `HashMap` of keys to values, versions and expiries.
//!
//! Capacity eviction is not predicted (the CLOCK choice is an implementation detail); the
//! store reports the keys it evicted and the model drops them, then must agree on everything
//! else: every read, every precondition outcome, every `noeviction` refusal, entry and byte
//! counts, and which entries a sweep removes.

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
        value_len: u8,
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
        4 => (0..12_u8, 0..40_u8, proptest::option::of(1..150_u8), condition()).prop_map(
            |(key, value_len, ttl_secs, condition)| Op::Put { key, value_len, ttl_secs, condition }
        ),
        3 => (0..12_u8).prop_map(|key| Op::Get { key }),
        1 => (0..12_u8, condition()).prop_map(|(key, condition)| Op::Delete { key, condition }),
        2 => (0..90_000_u32).prop_map(|millis| Op::Advance { millis }),
        1 => Just(Op::Sweep),
    ]
}

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

    fn used(&self) -> u64 {
        self.entries
            .iter()
            .map(|(k, e)| entry_charge(k.len(), e.value.len()))
            .sum()
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

fn run(ops: Vec<Op>, capacity_entries: u64, policy: EvictionPolicy) -> Result<(), TestCaseError> {
    let schedule = Schedule::every_minute();
    let clock = Arc::new(ManualClock::new(Timestamp::from_millis(START)));
    let capacity = entry_charge(6, 20) * capacity_entries;
    let store = Store::new(
        StoreConfig {
            schedule: schedule.clone(),
            capacity_bytes: capacity,
            eviction_policy: policy,
            shards: 4,
        },
        clock.clone(),
    );
    let mut model = Model::default();
    for op in ops {
        let now = clock.now();
        match op {
            Op::Put {
                key,
                value_len,
                ttl_secs,
                condition,
            } => {
                let key = key_bytes(key);
                let value = Bytes::from(vec![value_len; usize::from(value_len)]);
                let expires_at =
                    ttl_secs.and_then(|s| now.checked_add(Duration::from_secs(u64::from(s))));
                let preconditions = model.preconditions(&condition, &key, now);
                let current = model.live(&key, now).map(|e| e.version);
                let result = store.put(key.clone(), value.clone(), expires_at, &preconditions);
                if !preconditions.hold(current) {
                    prop_assert_eq!(result, Err(PutError::PreconditionFailed { current }));
                    continue;
                }
                let charge = entry_charge(key.len(), value.len());
                let old = model
                    .entries
                    .get(&key)
                    .map_or(0, |e| entry_charge(key.len(), e.value.len()));
                if policy == EvictionPolicy::NoEviction && model.used() + charge - old > capacity {
                    let refused = matches!(result, Err(PutError::InsufficientStorage { .. }));
                    prop_assert!(refused, "expected a refusal, got {:?}", result);
                    continue;
                }
                let outcome = result.map_err(|e| TestCaseError::fail(e.to_string()))?;
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
        let stats = store.stats();
        prop_assert_eq!(stats.entries, model.entries.len() as u64);
        prop_assert_eq!(stats.used_bytes, model.used());
        prop_assert!(stats.used_bytes <= capacity);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn store_agrees_with_the_model_with_clock_eviction(
        ops in proptest::collection::vec(op(), 1..120),
        capacity_entries in 2_u64..16,
    ) {
        run(ops, capacity_entries, EvictionPolicy::Clock)?;
    }

    #[test]
    fn store_agrees_with_the_model_with_noeviction(
        ops in proptest::collection::vec(op(), 1..120),
        capacity_entries in 2_u64..16,
    ) {
        run(ops, capacity_entries, EvictionPolicy::NoEviction)?;
    }

    #[test]
    fn store_agrees_with_the_model_without_a_capacity(
        ops in proptest::collection::vec(op(), 1..120),
    ) {
        run(ops, u64::MAX / entry_charge(6, 20), EvictionPolicy::Clock)?;
    }
}
