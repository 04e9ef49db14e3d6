//! The schedule parser (`tidecache_contract::Schedule::new`): the input's first line is the
//! expression, the rest (if any) the time zone.
//!
//! Properties, for an accepted schedule:
//! - its expression and zone as shown back parse to the same schedule;
//! - the bucket of a fixed instant is a whole-minute fire time at or after it, its own bucket,
//!   and the fire times found from an hour earlier reach it without one in between; the next
//!   fire time after it is later.

use chrono::{DateTime, Duration, Timelike, Utc};
use tidecache_contract::Schedule;

/// The instant buckets are computed for: 2026-12-02T00:00:30Z, fixed so that a run is
/// reproducible, and not on a minute so that "at or after" is exercised.
const INSTANT_SECS: i64 = 1_796_169_630;

/// The check.
pub fn check(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (expression, time_zone) = match text.split_once('\n') {
        Some((expression, zone)) => (expression, Some(zone)),
        None => (text, None),
    };
    let Ok(schedule) = Schedule::new(expression, time_zone) else {
        return;
    };
    let again = Schedule::new(schedule.expression(), Some(schedule.time_zone()));
    assert_eq!(
        again.as_ref(),
        Ok(&schedule),
        "{schedule} does not parse back to itself"
    );
    let Some(instant) = DateTime::<Utc>::from_timestamp(INSTANT_SECS, 0) else {
        return;
    };
    // A schedule accepted now may still not fire within five years of the fixed instant.
    let Some(bucket) = schedule.bucket_for(instant) else {
        return;
    };
    assert!(
        bucket >= instant,
        "{schedule}: bucket {bucket} before {instant}"
    );
    assert_eq!(
        (bucket.second(), bucket.nanosecond()),
        (0, 0),
        "{schedule}: bucket {bucket} is not on a minute"
    );
    assert!(
        schedule.is_fire_time(bucket),
        "{schedule}: bucket {bucket} is not a fire time"
    );
    // The search started an hour earlier walks to the same bucket: no fire time it finds
    // falls between the instant and its bucket.
    let earlier = instant - Duration::minutes(61);
    for fire in schedule.fire_times_after(earlier).take(100) {
        if fire >= bucket {
            assert_eq!(
                fire, bucket,
                "{schedule}: the walk from {earlier} skips {bucket}"
            );
            break;
        }
        assert!(
            fire < instant,
            "{schedule}: {fire} fires between {instant} and its bucket {bucket}"
        );
    }
    if let Some(next) = schedule.next_fire_after(bucket) {
        assert!(
            next > bucket,
            "{schedule}: next fire {next} not after {bucket}"
        );
    }
}
