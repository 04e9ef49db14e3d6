//! Property: entries with random expiries written through the real segment writer, the
//! janitor run at a random instant with a random grace → no unexpired entry is lost, and every
//! bucket at or before `now - grace` is gone.

mod common;

use chrono::Duration;
use proptest::prelude::*;
use tidecache_contract::Schedule;

use common::{Entry, buckets_on_disk, config, load, root, run, utc, write_entries};

const SCHEDULES: [(&str, &str); 4] = [
    ("* * * * *", "UTC"),
    ("*/5 * * * *", "Europe/Berlin"),
    ("0 * * * *", "America/New_York"),
    ("17 3 * * *", "Europe/Berlin"),
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    #[test]
    fn unexpired_entries_survive_and_expired_buckets_go(
        schedule in 0..SCHEDULES.len(),
        entries in prop::collection::vec((0u32..400, 0usize..3, 0i64..3 * 86_400), 1..60),
        now_offset in 0i64..3 * 86_400,
        grace_seconds in prop_oneof![Just(0i64), Just(60), 0i64..7200],
    ) {
        let (expression, zone) = SCHEDULES[schedule];
        let schedule = Schedule::new(expression, Some(zone)).expect("valid schedule");
        let start = utc("2026-10-24T00:00:00Z");
        let entries: Vec<Entry> = entries
            .into_iter()
            .map(|(key, node, offset)| Entry {
                key: format!("key-{key}").into_bytes(),
                node,
                expiry: start + Duration::seconds(offset),
            })
            .collect();
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = root(tmp.path());
        let written = write_entries(&root, &schedule, &entries);
        let now = start + Duration::seconds(now_offset);
        let grace = Duration::seconds(grace_seconds);
        let cutoff = now - grace;

        let summary = run(&config(tmp.path(), &schedule, now, grace));
        prop_assert_eq!(summary.errors, 0, "{:?}", summary.first_error);

        let expected_left: Vec<_> = written.iter().copied().filter(|b| b.fire_time() > cutoff).collect();
        prop_assert_eq!(buckets_on_disk(&root), expected_left.clone());
        prop_assert_eq!(summary.buckets_deleted as usize, written.len() - expected_left.len());
        let mut unexpired: Vec<(Vec<u8>, i64)> = entries
            .iter()
            .filter(|e| e.expiry > cutoff)
            .map(|e| (e.key.clone(), e.expiry.timestamp_nanos_opt().expect("in range")))
            .collect();
        unexpired.sort();
        let loaded: Vec<_> = load(&root).into_iter().filter(|(_, expiry)| *expiry > cutoff.timestamp_nanos_opt().expect("in range")).collect();
        prop_assert_eq!(loaded, unexpired);
    }
}
