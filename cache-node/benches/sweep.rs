//! Expiry sweep benchmark: the time to evict 100k expired entries from a store of 1M and of
//! 10M entries with the bucket index (the cost should not grow with the store, goal: ratio
//! <= 1.3), beside a full-scan sweep of the same stores (the approach the index replaces).
//!
//! `cargo bench -p cache-node --bench sweep` (add `-- --quick` for 100k/1M stores).

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cache_node::{ManualClock, Timestamp};
use cache_node::{Preconditions, Store, StoreConfig};
use common::{progress, write_results};
use serde_json::json;
use tidecache_contract::Schedule;

/// Entries that expire in each measured sweep.
const EXPIRING: usize = 100_000;
/// Measured sweeps per store and method; the median is reported.
const ROUNDS: usize = 7;
/// 2026-11-19T00:00:00Z, a fire time of the every-minute schedule.
const START: i64 = 1_795_046_400_000;

/// One store under test with its clock.
struct Subject {
    entries: usize,
    store: Store,
    clock: Arc<ManualClock>,
    /// The minute of the next sweep's fire time (after START).
    minute: i64,
}

/// The median and minimum of one method on one store.
struct Timing {
    median: Duration,
    min: Duration,
}

fn main() {
    let quick = std::env::args().any(|arg| arg == "--quick");
    let sizes: [usize; 2] = if quick {
        [EXPIRING * 2, 1_000_000]
    } else {
        [1_000_000, 10_000_000]
    };
    let mut subjects: Vec<Subject> = sizes.iter().map(|&size| fill(size)).collect();
    // Rounds alternate between the stores so that load from elsewhere on the machine hits
    // both alike.
    progress("sweeping with the bucket index, alternating stores");
    let indexed = rounds(&mut subjects, "index", |store| {
        store.evict_expired().evicted
    });
    progress("sweeping by full scan, alternating stores");
    let scan = rounds(&mut subjects, "scan", Store::evict_expired_by_scan);
    let ratio =
        |t: &[Timing], f: fn(&Timing) -> Duration| f(&t[1]).as_secs_f64() / f(&t[0]).as_secs_f64();
    let index_ratio = ratio(&indexed, |t| t.median);
    println!();
    println!(
        "expiry sweep: evict {EXPIRING} expired entries (median of {ROUNDS} rounds, min in brackets)"
    );
    for (k, subject) in subjects.iter().enumerate() {
        println!(
            "  store of {:>10} entries: bucket index {:>7.2} ms ({:>6.2})   full scan {:>8.2} ms ({:>7.2})   scan / index = {:.1}x",
            subject.entries,
            ms(indexed[k].median),
            ms(indexed[k].min),
            ms(scan[k].median),
            ms(scan[k].min),
            scan[k].median.as_secs_f64() / indexed[k].median.as_secs_f64()
        );
    }
    println!(
        "  ratio {} / {} entries: bucket index {index_ratio:.2} (min {:.2}; goal <= 1.3), full scan {:.2}",
        subjects[1].entries,
        subjects[0].entries,
        ratio(&indexed, |t| t.min),
        ratio(&scan, |t| t.median),
    );
    write_results(
        "sweep",
        &json!({
            "expiring_entries": EXPIRING,
            "rounds": ROUNDS,
            "stores": subjects.iter().enumerate().map(|(k, s)| json!({
                "entries": s.entries,
                "bucket_index_ms": { "median": ms(indexed[k].median), "min": ms(indexed[k].min) },
                "full_scan_ms": { "median": ms(scan[k].median), "min": ms(scan[k].min) },
            })).collect::<Vec<_>>(),
            "bucket_index_ratio_large_over_small": index_ratio,
            "full_scan_ratio_large_over_small": ratio(&scan, |t| t.median),
            "goal_ratio_at_most": 1.3,
        }),
    );
}

/// A store of `size` entries: `size - EXPIRING` long-lived ones; each round adds and then
/// expires `EXPIRING` more.
fn fill(size: usize) -> Subject {
    let clock = Arc::new(ManualClock::new(Timestamp::from_millis(START)));
    let store = Store::new(StoreConfig::new(Schedule::every_minute()), clock.clone());
    let value = Bytes::from(vec![7_u8; 100]);
    let resident = size - EXPIRING;
    progress(format!(
        "filling a store with {resident} long-lived entries"
    ));
    let started = Instant::now();
    for i in 0..resident {
        // Spread over the buckets of the next day, far beyond the measured sweeps.
        let expiry = Timestamp::from_millis(START + 3_600_000 + (i as i64 % 86_400) * 1_000);
        put(&store, key("live", i), value.clone(), expiry);
        if i % 1_000_000 == 999_999 {
            progress(format!("  {} entries", i + 1));
        }
    }
    progress(format!(
        "filled in {:.1} s",
        started.elapsed().as_secs_f64()
    ));
    Subject {
        entries: size,
        store,
        clock,
        minute: 0,
    }
}

/// Times `evict` over [`ROUNDS`] rounds on every subject.
fn rounds(subjects: &mut [Subject], label: &str, evict: fn(&Store) -> u64) -> Vec<Timing> {
    let value = Bytes::from(vec![7_u8; 100]);
    let mut times = vec![Vec::new(); subjects.len()];
    for round in 0..ROUNDS {
        for (k, subject) in subjects.iter_mut().enumerate() {
            subject.minute += 1;
            let fire = START + subject.minute * 60_000;
            for i in 0..EXPIRING {
                // Expiries spread over the minute before the fire time: one bucket.
                let expiry = Timestamp::from_millis(fire - 1 - (i as i64 % 59_000));
                put(&subject.store, key(label, i), value.clone(), expiry);
            }
            subject.clock.set(Timestamp::from_millis(fire));
            let started = Instant::now();
            let evicted = evict(&subject.store);
            let elapsed = started.elapsed();
            assert_eq!(evicted, EXPIRING as u64, "every expired entry evicted");
            // A scan leaves the emptied bucket's (now stale) hashes in the index; drop them
            // outside the timed region so that no later round pays for them.
            subject.store.evict_expired();
            progress(format!(
                "  {label} round {}: {:>10} entries: {:.2} ms",
                round + 1,
                subject.entries,
                ms(elapsed)
            ));
            times[k].push(elapsed);
        }
    }
    times
        .into_iter()
        .map(|mut t| {
            t.sort();
            Timing {
                median: t[t.len() / 2],
                min: t[0],
            }
        })
        .collect()
}

fn put(store: &Store, key: Bytes, value: Bytes, expiry: Timestamp) {
    store
        .put(key, value, Some(expiry), &Preconditions::none())
        .expect("the store is unbounded");
}

/// A 16-byte key.
fn key(prefix: &str, i: usize) -> Bytes {
    Bytes::from(format!("{prefix:<5.5}{i:011}"))
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1_000.0
}
