//! Expiry sweep benchmark: the time to evict 100k expired entries from a store of 1M and of
//! 10M entries with the bucket index (the cost should not grow with the store, goal: ratio
//! <= 1.3), beside a full-scan sweep of the same stores (the approach the index replaces).
//!
//! `cargo bench -p cache-node --bench sweep` (add `-- --quick` for 100k/1M stores).

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cache_node::clock::{ManualClock, Timestamp};
use cache_node::store::{Preconditions, Store, StoreConfig};
use common::{progress, write_results};
use serde_json::json;
use tidecache_contract::Schedule;

/// Entries that expire in each measured sweep.
const EXPIRING: usize = 100_000;
/// Measured sweeps per store and method; the median is reported.
const ROUNDS: usize = 5;
/// 2026-11-19T00:00:00Z, a fire time of the every-minute schedule.
const START: i64 = 1_795_046_400_000;

struct Measured {
    entries: usize,
    indexed: Duration,
    scan: Duration,
}

fn main() {
    let quick = std::env::args().any(|arg| arg == "--quick");
    let sizes: &[usize] = if quick {
        &[100_000 * 2, 1_000_000]
    } else {
        &[1_000_000, 10_000_000]
    };
    let measured: Vec<Measured> = sizes.iter().map(|&size| measure(size)).collect();
    let [small, large] = [&measured[0], &measured[1]];
    let ratio = large.indexed.as_secs_f64() / small.indexed.as_secs_f64();
    println!();
    println!("expiry sweep: evict {EXPIRING} expired entries (median of {ROUNDS})");
    for m in &measured {
        println!(
            "  store of {:>10} entries: bucket index {:>9.2} ms   full scan {:>9.2} ms   (scan / index = {:.1}x)",
            m.entries,
            ms(m.indexed),
            ms(m.scan),
            m.scan.as_secs_f64() / m.indexed.as_secs_f64()
        );
    }
    println!(
        "  ratio bucket index {} / {} entries = {ratio:.2} (goal <= 1.3); full scan ratio = {:.2}",
        large.entries,
        small.entries,
        large.scan.as_secs_f64() / small.scan.as_secs_f64()
    );
    write_results(
        "sweep",
        &json!({
            "expiring_entries": EXPIRING,
            "rounds": ROUNDS,
            "stores": measured.iter().map(|m| json!({
                "entries": m.entries,
                "bucket_index_ms": ms(m.indexed),
                "full_scan_ms": ms(m.scan),
            })).collect::<Vec<_>>(),
            "bucket_index_ratio_large_over_small": ratio,
            "goal_ratio_at_most": 1.3,
        }),
    );
}

fn measure(size: usize) -> Measured {
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
    let mut minute = 0;
    let mut sweep = |label: &str, evict: &dyn Fn(&Store) -> u64| {
        let mut times = Vec::new();
        for round in 0..ROUNDS {
            minute += 1;
            let fire = START + minute * 60_000;
            for i in 0..EXPIRING {
                // Expiries spread over the minute before the fire time: one bucket.
                let expiry = Timestamp::from_millis(fire - 1 - (i as i64 % 59_000));
                put(&store, key(label, i), value.clone(), expiry);
            }
            clock.set(Timestamp::from_millis(fire));
            let started = Instant::now();
            let evicted = evict(&store);
            let elapsed = started.elapsed();
            assert_eq!(evicted, EXPIRING as u64, "every expired entry evicted");
            // A scan leaves the emptied bucket's (now stale) hashes in the index; drop them
            // outside the timed region so that no later round pays for them.
            store.evict_expired();
            progress(format!(
                "  {label} sweep round {}: {:.2} ms ({} entries stored)",
                round + 1,
                ms(elapsed),
                store.stats().entries + evicted
            ));
            times.push(elapsed);
        }
        times.sort();
        times[ROUNDS / 2]
    };
    progress(format!("store of {size}: sweeping with the bucket index"));
    let indexed = sweep("index", &|store| store.evict_expired().evicted);
    progress(format!("store of {size}: sweeping by full scan"));
    let scan = sweep("scan", &|store| store.evict_expired_by_scan());
    Measured {
        entries: size,
        indexed,
        scan,
    }
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
