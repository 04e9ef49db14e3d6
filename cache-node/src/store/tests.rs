//! Scenario tests of the store with a manual clock.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tidecache_contract::Schedule;

use super::*;
use crate::base::time::{ManualClock, Timestamp};

/// 2026-11-19T00:00:20Z: twenty seconds into a minute.
const START: i64 = 1_795_046_420_000;

fn store_with(capacity: u64, policy: EvictionPolicy) -> (Store, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(Timestamp::from_millis(START)));
    let config = StoreConfig {
        schedule: Schedule::every_minute(),
        capacity_bytes: capacity,
        eviction_policy: policy,
        shards: 4,
    };
    (Store::new(config, clock.clone()), clock)
}

fn store() -> (Store, Arc<ManualClock>) {
    store_with(u64::MAX, EvictionPolicy::Clock)
}

fn at(offset_secs: i64) -> Timestamp {
    Timestamp::from_millis(START + offset_secs * 1_000)
}

fn put(store: &Store, key: &str, value: &str, expires: Option<Timestamp>) -> PutOutcome {
    store
        .put(
            Bytes::copy_from_slice(key.as_bytes()),
            Bytes::copy_from_slice(value.as_bytes()),
            expires,
            &Preconditions::none(),
        )
        .expect("put succeeds")
}

#[test]
fn put_get_delete_round_trip_with_versions() {
    let (store, _) = store();
    let first = put(&store, "k", "v1", None);
    assert!(first.created);
    let second = put(&store, "k", "v2", None);
    assert!(!second.created && second.version > first.version);
    let hit = store.get(b"k").expect("present");
    assert_eq!(hit.value, Bytes::from_static(b"v2"));
    assert_eq!(hit.version, second.version);
    assert_eq!(hit.expires_at, None);
    assert_eq!(
        store.delete(b"k", &Preconditions::none()),
        Ok(second.version)
    );
    assert_eq!(store.get(b"k"), None);
    assert_eq!(
        store.delete(b"k", &Preconditions::none()),
        Err(DeleteError::NotFound)
    );
    let stats = store.stats();
    assert_eq!(stats.entries, 0);
    // The chunk went with its last entry; the index keeps its (small) table.
    assert!(stats.used_bytes < 1024, "{stats:?}");
}

#[test]
fn reads_check_the_exact_expiry_before_any_sweep() {
    let (store, clock) = store();
    let outcome = put(&store, "k", "v", Some(at(5)));
    assert_eq!(
        outcome.bucket,
        Some(at(40)),
        "first fire time at or after expiry"
    );
    clock.set(Timestamp::from_millis(at(5).as_millis() - 1));
    assert!(store.get(b"k").is_some());
    clock.set(at(5));
    assert_eq!(store.get(b"k"), None, "expired at its exact expiry");
    assert_eq!(store.stats().entries, 1, "not swept yet");
    assert_eq!(
        store.delete(b"k", &Preconditions::none()),
        Err(DeleteError::NotFound)
    );
    assert_eq!(store.stats().evicted_expired, 1);
}

#[test]
fn sweeping_evicts_only_due_buckets() {
    let (store, clock) = store();
    put(&store, "a", "1", Some(at(10))); // bucket +40
    put(&store, "b", "2", Some(at(39))); // bucket +40
    put(&store, "c", "3", Some(at(41))); // bucket +100
    put(&store, "forever", "4", None);
    clock.set(at(39));
    assert_eq!(store.evict_expired(), SweepReport::default());
    clock.set(at(40));
    let report = store.evict_expired();
    assert_eq!(report.evicted, 2);
    assert!(store.get(b"c").is_some() && store.get(b"forever").is_some());
    clock.set(at(100));
    assert_eq!(store.evict_expired().evicted, 1);
    let stats = store.stats();
    assert_eq!((stats.entries, stats.evicted_expired), (1, 3));
}

#[test]
fn an_overwrite_moves_the_entry_to_its_new_bucket() {
    let (store, clock) = store();
    put(&store, "k", "short", Some(at(10)));
    put(&store, "k", "long", Some(at(70)));
    clock.set(at(40));
    assert_eq!(
        store.evict_expired().evicted,
        0,
        "old bucket's hash is stale"
    );
    assert_eq!(
        store.get(b"k").map(|h| h.value),
        Some(Bytes::from_static(b"long"))
    );
    put(&store, "k", "no expiry", None);
    clock.set(at(100));
    assert_eq!(store.evict_expired().evicted, 0);
    assert!(store.get(b"k").is_some());
}

#[test]
fn the_bucket_sweep_matches_a_full_scan() {
    let (indexed, clock_a) = store();
    let (scanned, clock_b) = store();
    for i in 0..500_i64 {
        let expiry = (i % 7 != 0).then(|| at(1 + i % 200));
        let key = format!("key-{i}");
        put(&indexed, &key, "v", expiry);
        put(&scanned, &key, "v", expiry);
    }
    for step in [30, 61, 150, 400] {
        clock_a.set(at(step));
        clock_b.set(at(step));
        // The scan also removes entries expired but in a bucket not yet due; compare at
        // fire times, where both sets are the same.
        let fire = Timestamp::from_datetime(
            Schedule::every_minute()
                .bucket_for(at(step).to_datetime().expect("in range"))
                .expect("fires"),
        );
        clock_a.set(fire);
        clock_b.set(fire);
        assert_eq!(
            indexed.evict_expired().evicted,
            scanned.evict_expired_by_scan()
        );
        // The same entries and counters; not the same bytes, since the sweep frees whole
        // chunks and the scan leaves holes to compact.
        let (a, b) = (indexed.stats(), scanned.stats());
        assert_eq!(
            (a.entries, a.evicted_expired, a.evicted_capacity),
            (b.entries, b.evicted_expired, b.evicted_capacity)
        );
    }
}

#[test]
fn conditional_writes_compare_and_set() {
    let (store, _) = store();
    let key = || Bytes::from_static(b"k");
    let val = || Bytes::from_static(b"v");
    let created = store
        .put(key(), val(), None, &Preconditions::create_only())
        .expect("create");
    assert_eq!(
        store.put(key(), val(), None, &Preconditions::create_only()),
        Err(PutError::PreconditionFailed {
            current: Some(created.version)
        })
    );
    let stale = Version::new(created.version.get() - 1);
    assert!(matches!(
        store.put(key(), val(), None, &Preconditions::if_version(stale)),
        Err(PutError::PreconditionFailed { .. })
    ));
    let swapped = store
        .put(
            key(),
            val(),
            None,
            &Preconditions::if_version(created.version),
        )
        .expect("CAS on the current version");
    assert_eq!(
        store.delete(b"k", &Preconditions::if_version(created.version)),
        Err(DeleteError::PreconditionFailed {
            current: Some(swapped.version)
        })
    );
    assert_eq!(
        store.delete(b"k", &Preconditions::if_version(swapped.version)),
        Ok(swapped.version)
    );
    assert!(matches!(
        store.put(
            key(),
            val(),
            None,
            &Preconditions::if_version(swapped.version)
        ),
        Err(PutError::PreconditionFailed { current: None })
    ));
}

#[test]
fn a_write_with_a_forwarding_nodes_version_applies_once_and_loses_to_newer_writes() {
    let (store, _) = store();
    let versioned = |value: &'static str, version: Version| {
        store
            .put_versioned_journaled(
                Bytes::from_static(b"k"),
                Bytes::from_static(value.as_bytes()),
                None,
                version,
            )
            .expect("a versioned write")
            .outcome
    };
    let first = put(&store, "k", "local", None);
    let given = Version::new(first.version.get() + 10);
    let taken = versioned("forwarded", given);
    assert!(!taken.created && taken.version == given, "{taken:?}");
    assert_eq!(store.get(b"k").expect("present").value, "forwarded");
    // The same write again (the sender also gave it to another owner, which replicated it
    // here): nothing changes.
    let again = versioned("forwarded", given);
    assert_eq!(again.version, given);
    assert_eq!(store.get(b"k").expect("present").version, given);
    // Later local versions are larger than the one taken.
    let newer = put(&store, "k", "newer", None);
    assert!(newer.version > given);
    // A late copy of an older forwarded write is superseded: acknowledged, not stored.
    let late = versioned("late", given);
    assert!(!late.created && late.version == given);
    let hit = store.get(b"k").expect("present");
    assert_eq!(
        (hit.value, hit.version),
        (Bytes::from_static(b"newer"), newer.version)
    );
}

#[test]
fn expiries_must_be_in_the_future() {
    let (store, _) = store();
    assert_eq!(
        store.put(
            Bytes::from_static(b"k"),
            Bytes::new(),
            Some(at(0)),
            &Preconditions::none()
        ),
        Err(PutError::AlreadyExpired { expires_at: at(0) })
    );
    assert_eq!(store.stats().entries, 0);
}

fn try_put(store: &Store, key: &str, value: &str) -> Result<PutOutcome, PutError> {
    store.put(
        Bytes::copy_from_slice(key.as_bytes()),
        Bytes::copy_from_slice(value.as_bytes()),
        None,
        &Preconditions::none(),
    )
}

#[test]
fn noeviction_refuses_writes_that_do_not_fit_and_keeps_what_is_stored() {
    let capacity = 16 * 1024;
    let (store, _) = store_with(capacity, EvictionPolicy::NoEviction);
    let mut stored = 0;
    let refused = loop {
        match try_put(&store, &format!("key-{stored:04}"), "0123456789") {
            Ok(_) => stored += 1,
            Err(error) => break error,
        }
        assert!(stored < 10_000, "never refused");
    };
    assert!(matches!(refused, PutError::InsufficientStorage { .. }));
    // 16 KiB over 4 shards, each with an index and small chunks: a couple of hundred.
    assert!(
        stored >= 150,
        "only {stored} entries of 10 bytes fit in 16 KiB"
    );
    assert!(store.stats().used_bytes <= capacity);
    for i in 0..stored {
        assert!(store.get(format!("key-{i:04}").as_bytes()).is_some());
    }
    // Deleting half leaves holes that later writes reclaim.
    for i in (0..stored).step_by(2) {
        store
            .delete(format!("key-{i:04}").as_bytes(), &Preconditions::none())
            .expect("deleted");
    }
    for i in 0..stored / 4 {
        try_put(&store, &format!("new-{i:04}"), "0123456789").expect("room again");
    }
    for i in (1..stored).step_by(2) {
        assert!(store.get(format!("key-{i:04}").as_bytes()).is_some());
    }
    assert!(store.stats().used_bytes <= capacity);
    let too_large = store.put(
        Bytes::from_static(b"e"),
        Bytes::from(vec![0; capacity as usize]),
        None,
        &Preconditions::none(),
    );
    assert!(matches!(too_large, Err(PutError::EntryTooLarge { .. })));
}

#[test]
fn clock_eviction_spares_recently_read_entries_and_takes_expired_ones_first() {
    let capacity = 8 * 1024;
    let clock = Arc::new(ManualClock::new(Timestamp::from_millis(START)));
    let config = StoreConfig {
        capacity_bytes: capacity,
        shards: 1,
        ..StoreConfig::new(Schedule::every_minute())
    };
    let store = Store::new(config, clock.clone());
    let hot: Vec<String> = (0..10).map(|i| format!("hot-{i}")).collect();
    for key in &hot {
        put(&store, key, "0123456789", None);
    }
    put(&store, "short-lived", "0123456789", Some(at(5)));
    clock.set(at(6));
    let mut evicted = Vec::new();
    for i in 0..2_000 {
        for key in &hot {
            assert!(
                store.get(key.as_bytes()).is_some(),
                "{key} lost after {i} writes"
            );
        }
        evicted.extend(put(&store, &format!("cold-{i:04}"), "0123456789", None).evicted);
        assert!(store.stats().used_bytes <= capacity);
    }
    // Chunk by chunk, the hand meets the expired entry within its first pass.
    assert!(evicted.contains(&Bytes::from_static(b"short-lived")));
    let stats = store.stats();
    assert_eq!(stats.evicted_expired, 1);
    assert!(stats.evicted_capacity > 1_500, "{stats:?}");
    assert_eq!(stats.entries + stats.evicted_capacity + 1, 2_000 + 11);
}

#[test]
fn capacity_eviction_makes_room_in_every_shard() {
    let capacity = 8 * 1024;
    let (store, _) = store_with(capacity, EvictionPolicy::Clock);
    let mut evicted = 0;
    for i in 0..1_000 {
        evicted += put(&store, &format!("{i:04}"), "0123456789", None)
            .evicted
            .len() as u64;
        assert!(store.stats().used_bytes <= capacity);
    }
    let stats = store.stats();
    assert!(stats.entries >= 50, "{stats:?}");
    assert_eq!(stats.evicted_capacity, evicted);
    assert_eq!(stats.entries + evicted, 1_000);
}

#[test]
fn versions_survive_a_clock_step_backwards() {
    let (store, clock) = store();
    let first = put(&store, "k", "v", None);
    clock.advance(Duration::from_secs(0));
    clock.set(at(-3600));
    let second = put(&store, "k", "v", None);
    assert!(second.version > first.version);
}

#[test]
fn counters_stay_exact_under_concurrent_writers() {
    let capacity = 32 * 1024;
    let (store, clock) = store_with(capacity, EvictionPolicy::Clock);
    let store = Arc::new(store);
    let threads: Vec<_> = (0..4_u64)
        .map(|thread| {
            let store = store.clone();
            std::thread::spawn(move || {
                let mut seed = thread + 1;
                for _ in 0..5_000 {
                    // xorshift: a cheap, deterministic spread of keys and operations.
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    let key = Bytes::from(format!("key-{:04}", seed % 200));
                    match seed % 5 {
                        0 => {
                            let _ = store.delete(&key, &Preconditions::none());
                        }
                        1 => {
                            let _ = store.get(&key);
                        }
                        _ => {
                            let value = Bytes::from(vec![0; (seed % 32) as usize]);
                            let expiry = at(1 + (seed % 100) as i64);
                            store
                                .put(key, value, Some(expiry), &Preconditions::none())
                                .expect("CLOCK always makes room");
                        }
                    }
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().expect("no panic");
    }
    let totals = |store: &Store| {
        store.shards.iter().fold((0, 0), |(entries, bytes), shard| {
            let footprint = lock(shard).recount();
            (entries + footprint.entries, bytes + footprint.bytes)
        })
    };
    let stats = store.stats();
    assert_eq!((stats.entries, stats.used_bytes), totals(&store));
    assert!(stats.used_bytes <= capacity + 4 * 16 * 1024);
    clock.set(at(200));
    store.evict_expired();
    let stats = store.stats();
    assert_eq!(stats.entries, 0);
    assert_eq!((stats.entries, stats.used_bytes), totals(&store));
    // What is left is the shards' empty index tables.
    assert!(stats.used_bytes < 16 * 1024, "{stats:?}");
}

#[test]
fn keys_removed_on_their_own_are_announced_once_each() {
    use crate::base::events::{KeyEventKind, KeyEvents};
    let (store, clock) = store_with(8 * 1024, EvictionPolicy::Clock);
    let events: &KeyEvents = store.events();
    let mut listener = events.listen();
    events.enable(KeyEventKind::Expired.bit() | KeyEventKind::Evicted.bit());
    let mut announced = |kind| {
        let mut keys = Vec::new();
        while let Ok(event) = listener.try_recv() {
            assert_eq!(event.kind, kind);
            keys.push(String::from_utf8(event.key.to_vec()).expect("utf-8"));
        }
        keys.sort();
        keys
    };
    let mut evicted = Vec::new();
    for i in 0..500 {
        let outcome = put(&store, &format!("{i:04}"), "0123456789", None);
        evicted.extend(
            outcome
                .evicted
                .iter()
                .map(|key| String::from_utf8(key.to_vec()).expect("utf-8")),
        );
    }
    evicted.sort();
    assert!(!evicted.is_empty());
    assert_eq!(
        announced(KeyEventKind::Evicted),
        evicted,
        "each eviction once"
    );
    store
        .delete(b"0499", &Preconditions::none())
        .expect("deleted");
    assert_eq!(
        announced(KeyEventKind::Evicted),
        Vec::<String>::new(),
        "a delete is not"
    );
    put(&store, "ex", "0123456789", Some(at(30)));
    announced(KeyEventKind::Evicted);
    clock.set(at(120));
    store.evict_expired();
    assert_eq!(announced(KeyEventKind::Expired), ["ex"]);
}
