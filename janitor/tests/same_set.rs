//! Contract 1: at every fire time `F`, the buckets the janitor deletes are exactly the buckets
//! cache-node evicts from memory at `F` (those `<= F`, by `Bucket::is_expired(F, 0)`), for
//! schedules in a time zone with daylight-saving changes, across both changes of 2026. The
//! janitor runs `grace` after `F` with that grace, as the CronJob does when it starts late.

mod common;

use std::collections::BTreeSet;

use chrono::{DateTime, Duration, Utc};
use tidecache_contract::{Bucket, Schedule};

use common::{Entry, buckets_on_disk, config, root, run, utc, write_entries};

/// Spring forward (2026-03-29 01:00 UTC) and fall back (2026-10-25 01:00 UTC) in Berlin.
const DST_CHANGES: [&str; 2] = ["2026-03-29T01:00:00Z", "2026-10-25T01:00:00Z"];

/// Entries spread over `span` around a DST change: several per bucket, on three nodes.
fn entries_around(change: DateTime<Utc>, span: Duration, count: i64) -> Vec<Entry> {
    let start = change - span / 2;
    (0..count)
        .map(|i| Entry {
            key: format!("key-{i}").into_bytes(),
            node: (i % 3) as usize,
            // An irregular step so expiries land on, just before and just after fire times.
            expiry: start
                + span * (i as i32) / (count as i32)
                + Duration::milliseconds(i * 7 % 1000),
        })
        .collect()
}

fn check(expression: &str, span: Duration, count: i64) {
    let schedule = Schedule::new(expression, Some("Europe/Berlin")).expect("valid schedule");
    let grace = Duration::seconds(60);
    for change in DST_CHANGES.map(utc) {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = root(tmp.path());
        let entries = entries_around(change, span, count);
        let written: BTreeSet<Bucket> = write_entries(&root, &schedule, &entries)
            .into_iter()
            .collect();
        assert!(
            written.len() > 3,
            "{expression}: entries must span several buckets"
        );
        let first = *written.first().expect("buckets");
        let last = *written.last().expect("buckets");
        let mut evicted_so_far = BTreeSet::new();
        let mut fires = 0;
        let fire_times = schedule.fire_times_after(first.fire_time() - Duration::seconds(1));
        for fire in fire_times.take_while(|f| *f <= last.fire_time()) {
            fires += 1;
            // What cache-node evicts from memory at this fire time.
            let evicted: BTreeSet<Bucket> = written
                .iter()
                .copied()
                .filter(|b| b.is_expired(fire, Duration::zero()))
                .collect();
            let before: BTreeSet<Bucket> = buckets_on_disk(&root).into_iter().collect();
            let summary = run(&config(tmp.path(), &schedule, fire + grace, grace));
            assert_eq!(
                summary.errors, 0,
                "{expression} at {fire}: {:?}",
                summary.first_error
            );
            let after: BTreeSet<Bucket> = buckets_on_disk(&root).into_iter().collect();
            let deleted: BTreeSet<Bucket> = before.difference(&after).copied().collect();
            let newly_evicted: BTreeSet<Bucket> =
                evicted.difference(&evicted_so_far).copied().collect();
            assert_eq!(deleted, newly_evicted, "{expression} at {fire}");
            assert_eq!(
                after,
                written.difference(&evicted).copied().collect(),
                "{expression} at {fire}"
            );
            evicted_so_far = evicted;
        }
        assert!(fires > 3, "{expression}: several fire times checked");
        assert!(
            buckets_on_disk(&root).is_empty(),
            "{expression}: all gone at the end"
        );
    }
}

#[test]
fn every_minute() {
    check("* * * * *", Duration::hours(3), 400);
}

#[test]
fn every_five_minutes() {
    check("*/5 * * * *", Duration::hours(6), 300);
}

#[test]
fn hourly() {
    check("0 * * * *", Duration::days(2), 300);
}

#[test]
fn daily() {
    check("30 2 * * *", Duration::days(20), 200);
}
