//! Fixed cases of the schedule contract, with expected fire times worked out from the
//! Kubernetes CronJob semantics (see the module docs). Times are written in UTC.

use chrono::{DateTime, Utc};

use super::{Schedule, ScheduleError};

fn utc(text: &str) -> DateTime<Utc> {
    text.parse().expect("test instant must be RFC 3339")
}

fn fires_after(expression: &str, zone: &str, after: &str, count: usize) -> Vec<String> {
    let schedule = Schedule::new(expression, Some(zone)).expect("valid schedule");
    schedule
        .fire_times_after(utc(after))
        .take(count)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .collect()
}

#[test]
fn every_minute_in_utc() {
    assert_eq!(
        fires_after("* * * * *", "UTC", "2026-11-23T14:05:00Z", 3),
        [
            "2026-11-23T14:06:00Z",
            "2026-11-23T14:07:00Z",
            "2026-11-23T14:08:00Z"
        ]
    );
    let schedule = Schedule::every_minute();
    assert_eq!(
        schedule.bucket_for(utc("2026-11-23T14:05:00Z")),
        Some(utc("2026-11-23T14:05:00Z"))
    );
    assert_eq!(
        schedule.bucket_for(utc("2026-11-23T14:05:00.001Z")),
        Some(utc("2026-11-23T14:06:00Z"))
    );
    assert_eq!(schedule, Schedule::new("* * * * *", None).expect("valid"));
}

#[test]
fn fixed_cases_in_utc() {
    assert_eq!(
        fires_after("*/5 * * * *", "UTC", "2026-11-23T14:59:01Z", 2),
        ["2026-11-23T15:00:00Z", "2026-11-23T15:05:00Z"]
    );
    assert_eq!(
        fires_after("0 * * * *", "UTC", "2026-11-23T14:00:00Z", 2),
        ["2026-11-23T15:00:00Z", "2026-11-23T16:00:00Z"]
    );
    assert_eq!(
        fires_after("30 2 * * *", "UTC", "2026-03-08T03:00:00Z", 2),
        ["2026-03-09T02:30:00Z", "2026-03-10T02:30:00Z"]
    );
    // 2026-11-23 is a Monday; the next Sundays are the 29th and December 6th.
    assert_eq!(
        fires_after("0 3 * * 0", "UTC", "2026-11-23T00:00:00Z", 2),
        ["2026-11-29T03:00:00Z", "2026-12-06T03:00:00Z"]
    );
}

#[test]
fn berlin_spring_forward_skips_the_missing_hour() {
    // 2026-03-29: 02:00 CET jumps to 03:00 CEST (01:00 UTC). 02:30 does not exist that day.
    assert_eq!(
        fires_after("30 2 * * *", "Europe/Berlin", "2026-03-28T00:00:00Z", 3),
        [
            "2026-03-28T01:30:00Z",
            "2026-03-30T00:30:00Z",
            "2026-03-31T00:30:00Z"
        ]
    );
    assert_eq!(
        fires_after("0 * * * *", "Europe/Berlin", "2026-03-28T23:30:00Z", 3),
        [
            "2026-03-29T00:00:00Z",
            "2026-03-29T01:00:00Z",
            "2026-03-29T02:00:00Z"
        ]
    );
    assert_eq!(
        fires_after("*/5 * * * *", "Europe/Berlin", "2026-03-29T00:55:00Z", 2),
        ["2026-03-29T01:00:00Z", "2026-03-29T01:05:00Z"]
    );
    assert_eq!(
        fires_after("* * * * *", "Europe/Berlin", "2026-03-29T00:59:00Z", 2),
        ["2026-03-29T01:00:00Z", "2026-03-29T01:01:00Z"]
    );
    // Sunday 03:00 exists on the change day: it is the first instant of summer time.
    assert_eq!(
        fires_after("0 3 * * 0", "Europe/Berlin", "2026-03-28T00:00:00Z", 2),
        ["2026-03-29T01:00:00Z", "2026-04-05T01:00:00Z"]
    );
}

#[test]
fn berlin_fall_back_fires_twice_in_the_repeated_hour() {
    // 2026-10-25: 03:00 CEST falls back to 02:00 CET (01:00 UTC); 02:30 happens twice.
    assert_eq!(
        fires_after("30 2 * * *", "Europe/Berlin", "2026-10-24T00:00:00Z", 4),
        [
            "2026-10-24T00:30:00Z",
            "2026-10-25T00:30:00Z",
            "2026-10-25T01:30:00Z",
            "2026-10-26T01:30:00Z"
        ]
    );
    assert_eq!(
        fires_after("0 * * * *", "Europe/Berlin", "2026-10-24T23:30:00Z", 3),
        [
            "2026-10-25T00:00:00Z",
            "2026-10-25T01:00:00Z",
            "2026-10-25T02:00:00Z"
        ]
    );
    assert_eq!(
        fires_after("*/5 * * * *", "Europe/Berlin", "2026-10-25T00:55:00Z", 2),
        ["2026-10-25T01:00:00Z", "2026-10-25T01:05:00Z"]
    );
    assert_eq!(
        fires_after("* * * * *", "Europe/Berlin", "2026-10-25T00:59:00Z", 2),
        ["2026-10-25T01:00:00Z", "2026-10-25T01:01:00Z"]
    );
    assert_eq!(
        fires_after("0 3 * * 0", "Europe/Berlin", "2026-10-24T00:00:00Z", 2),
        ["2026-10-25T02:00:00Z", "2026-11-01T02:00:00Z"]
    );
}

#[test]
fn new_york_spring_forward() {
    // 2026-03-08: 02:00 EST jumps to 03:00 EDT (07:00 UTC).
    assert_eq!(
        fires_after("30 2 * * *", "America/New_York", "2026-03-07T00:00:00Z", 3),
        [
            "2026-03-07T07:30:00Z",
            "2026-03-09T06:30:00Z",
            "2026-03-10T06:30:00Z"
        ]
    );
    assert_eq!(
        fires_after("0 * * * *", "America/New_York", "2026-03-08T05:30:00Z", 3),
        [
            "2026-03-08T06:00:00Z",
            "2026-03-08T07:00:00Z",
            "2026-03-08T08:00:00Z"
        ]
    );
    assert_eq!(
        fires_after("*/5 * * * *", "America/New_York", "2026-03-08T06:55:00Z", 2),
        ["2026-03-08T07:00:00Z", "2026-03-08T07:05:00Z"]
    );
    assert_eq!(
        fires_after("* * * * *", "America/New_York", "2026-03-08T06:59:00Z", 2),
        ["2026-03-08T07:00:00Z", "2026-03-08T07:01:00Z"]
    );
    assert_eq!(
        fires_after("0 3 * * 0", "America/New_York", "2026-03-07T00:00:00Z", 2),
        ["2026-03-08T07:00:00Z", "2026-03-15T07:00:00Z"]
    );
}

#[test]
fn new_york_fall_back() {
    // 2026-11-01: 02:00 EDT falls back to 01:00 EST (06:00 UTC); 01:xx happens twice.
    assert_eq!(
        fires_after("30 2 * * *", "America/New_York", "2026-10-31T00:00:00Z", 3),
        [
            "2026-10-31T06:30:00Z",
            "2026-11-01T07:30:00Z",
            "2026-11-02T07:30:00Z"
        ]
    );
    assert_eq!(
        fires_after("0 * * * *", "America/New_York", "2026-11-01T04:30:00Z", 3),
        [
            "2026-11-01T05:00:00Z",
            "2026-11-01T06:00:00Z",
            "2026-11-01T07:00:00Z"
        ]
    );
    assert_eq!(
        fires_after("30 1 * * *", "America/New_York", "2026-11-01T00:00:00Z", 3),
        [
            "2026-11-01T05:30:00Z",
            "2026-11-01T06:30:00Z",
            "2026-11-02T06:30:00Z"
        ]
    );
    assert_eq!(
        fires_after("*/5 * * * *", "America/New_York", "2026-11-01T05:55:00Z", 2),
        ["2026-11-01T06:00:00Z", "2026-11-01T06:05:00Z"]
    );
    assert_eq!(
        fires_after("* * * * *", "America/New_York", "2026-11-01T05:59:00Z", 2),
        ["2026-11-01T06:00:00Z", "2026-11-01T06:01:00Z"]
    );
    assert_eq!(
        fires_after("0 3 * * 0", "America/New_York", "2026-10-31T00:00:00Z", 2),
        ["2026-11-01T08:00:00Z", "2026-11-08T08:00:00Z"]
    );
}

#[test]
fn day_of_month_and_day_of_week() {
    // Both restricted: either matches (the 1st, or any Monday). 2026-11-30 is a Monday.
    assert_eq!(
        fires_after("0 0 1 * MON", "UTC", "2026-11-24T00:00:00Z", 3),
        [
            "2026-11-30T00:00:00Z",
            "2026-12-01T00:00:00Z",
            "2026-12-07T00:00:00Z"
        ]
    );
    // Day-of-week unrestricted: only the day of month decides.
    assert_eq!(
        fires_after("0 0 1 * *", "UTC", "2026-11-24T00:00:00Z", 1),
        ["2026-12-01T00:00:00Z"]
    );
    // `*/2` is a restriction (a step above 1), so the OR rule applies.
    assert_eq!(
        fires_after("0 0 */2 * 1", "UTC", "2026-11-28T00:00:00Z", 3),
        [
            "2026-11-29T00:00:00Z",
            "2026-11-30T00:00:00Z",
            "2026-12-01T00:00:00Z"
        ]
    );
    // `*/1` stays unrestricted, so only Mondays.
    assert_eq!(
        fires_after("0 0 */1 * 1", "UTC", "2026-11-24T00:00:00Z", 2),
        ["2026-11-30T00:00:00Z", "2026-12-07T00:00:00Z"]
    );
}

#[test]
fn names_ranges_lists_steps_and_macros() {
    let same = |a: &str, b: &str| {
        assert_eq!(
            fires_after(a, "UTC", "2026-01-01T00:00:00Z", 5),
            fires_after(b, "UTC", "2026-01-01T00:00:00Z", 5),
            "{a} should equal {b}"
        );
    };
    same("0 9 * JAN-mar mon-FRI", "0 9 * 1-3 1-5");
    same("0 9 * * SUN,sat", "0 9 * * 0,6");
    same("10/20 * * * *", "10,30,50 * * * *");
    same("0-30/15 * * * *", "0,15,30 * * * *");
    same("0 0 ? * *", "0 0 * * *");
    same("@yearly", "0 0 1 1 *");
    same("@annually", "0 0 1 1 *");
    same("@monthly", "0 0 1 * *");
    same("@weekly", "0 0 * * 0");
    same("@daily", "0 0 * * *");
    same("@midnight", "0 0 * * *");
    same("@hourly", "0 * * * *");
    same("  */5  *\t* * *  ", "*/5 * * * *");
}

#[test]
fn errors_name_the_field_and_the_fix() {
    let message = |expression: &str| {
        Schedule::new(expression, None)
            .expect_err("should be refused")
            .to_string()
    };
    assert_eq!(
        message("61 * * * *"),
        "the minute field \"61\" is invalid: value 61 is above the maximum 59 (allowed: 0-59)"
    );
    assert_eq!(
        message("* 24 * * *"),
        "the hour field \"24\" is invalid: value 24 is above the maximum 23 (allowed: 0-23)"
    );
    assert_eq!(
        message("* * 0 * *"),
        "the day-of-month field \"0\" is invalid: value 0 is below the minimum 1 (allowed: 1-31)"
    );
    assert!(message("* * * FOO *").starts_with(
        "the month field \"FOO\" is invalid: \"FOO\" is not a number, or one of the names JAN"
    ));
    assert!(message("* * * * 7").contains("day-of-week field \"7\""));
    assert!(message("5-1 * * * *").contains("starts at 5, after its end 1"));
    assert!(message("*/0 * * * *").contains("step in \"*/0\" must be a positive number"));
    assert!(message("*/-1 * * * *").contains("negative number"));
    assert!(message("1/2/3 * * * *").contains("more than one '/'"));
    assert!(message("1-2-3 * * * *").contains("more than one '-'"));
    assert!(message("-5 * * * *").contains("needs a value on both sides of '-'"));
    assert!(message("*-5 * * * *").contains("cannot be part of a range"));
    assert_eq!(
        Schedule::new("* * * *", None),
        Err(ScheduleError::FieldCount {
            expression: "* * * *".into(),
            found: 4
        })
    );
    assert!(message("* * * * * *").contains("has 6 fields; write exactly 5"));
    assert_eq!(Schedule::new("   ", None), Err(ScheduleError::Empty));
    assert!(message("@every 5m").contains("@every is not supported"));
    assert!(message("@reboot").contains("\"@reboot\" is not a supported macro"));
    assert_eq!(
        Schedule::new("TZ=UTC * * * * *", None),
        Err(ScheduleError::TimeZoneInExpression)
    );
    assert!(message("0 0 30 2 *").contains("never fires"));
}

#[test]
fn time_zones() {
    assert_eq!(
        Schedule::new("* * * * *", Some("Europe/Berln")),
        Err(ScheduleError::UnknownTimeZone("Europe/Berln".into()))
    );
    assert!(
        Schedule::new("* * * * *", Some("Local"))
            .expect_err("Local is not a fixed zone")
            .to_string()
            .contains("use an IANA name")
    );
    let berlin = Schedule::new("0 3 * * 0", Some("Europe/Berlin")).expect("valid");
    assert_eq!(berlin.time_zone(), "Europe/Berlin");
    assert_eq!(berlin.expression(), "0 3 * * 0");
    assert_eq!(
        Schedule::new("* * * * *", Some(""))
            .expect("valid")
            .time_zone(),
        "UTC"
    );
}

/// In the zones whose offset changes are not whole hours at whole hours, the fire times are
/// still the direct semantics (every instant whose local time matches), where the CronJob
/// controller's library is measured to go wrong (see `hazard.rs`).
#[test]
fn non_hour_changes_fire_on_local_matches() {
    // Lord Howe falls back from 02:00 +11:00 to 01:30 +10:30 on 2026-04-05: 02:00 happens once,
    // at +10:30, and robfig/cron does not run it that day.
    assert_eq!(
        fires_after(
            "0 2 * * *",
            "Australia/Lord_Howe",
            "2026-04-03T00:00:00Z",
            3
        ),
        [
            "2026-04-03T15:00:00Z",
            "2026-04-04T15:30:00Z",
            "2026-04-05T15:30:00Z"
        ]
    );
    // Chatham falls back from 03:45 +13:45 to 02:45 +12:45 on 2026-04-05: 03:45 happens once,
    // at +12:45, where robfig/cron's Next returns one instant twice and the CronJob stops.
    assert_eq!(
        fires_after("45 3 * * *", "Pacific/Chatham", "2026-04-03T00:00:00Z", 3),
        [
            "2026-04-03T14:00:00Z",
            "2026-04-04T15:00:00Z",
            "2026-04-05T15:00:00Z"
        ]
    );
}

#[test]
fn cronjob_hazards_are_the_non_hour_changes_under_a_restricted_hour() {
    let hazard = |expression: &str, zone: &str| {
        Schedule::new(expression, Some(zone))
            .expect("valid schedule")
            .cronjob_hazard(utc("2026-01-01T00:00:00Z"))
    };
    let lord_howe = hazard("0 2 * * *", "Australia/Lord_Howe").expect("a 30-minute change");
    assert_eq!(lord_howe.at, utc("2026-04-04T15:00:00Z"));
    assert_eq!(
        (
            lord_howe.before.local_minus_utc(),
            lord_howe.after.local_minus_utc()
        ),
        (11 * 3600, 10 * 3600 + 1800)
    );
    assert_eq!(
        lord_howe.to_string(),
        "Australia/Lord_Howe changes its UTC offset from +11:00 to +10:30 at 02:00 local time \
         on 2026-04-05, which is a change of 30 minutes, not whole hours; there the Kubernetes \
         CronJob controller's cron library (robfig/cron v3) runs the janitor at times the \
         schedule \"0 2 * * *\" excludes, skips times it matches, and can stop scheduling it \
         altogether (e.g. Pacific/Chatham), leaving expired buckets on the volume. Use an hour \
         field of * (e.g. \"*/15 * * * *\" or \"@hourly\"), or a time zone whose offset changes \
         by whole hours at whole hours (e.g. UTC)"
    );
    let chatham = hazard("45 3 * * *", "Pacific/Chatham").expect("a change at 03:45");
    assert_eq!(chatham.at, utc("2026-04-04T14:00:00Z"));
    assert!(
        chatham
            .to_string()
            .starts_with("Pacific/Chatham changes its UTC offset from +13:45 to +12:45 at 03:45 local time on 2026-04-05, which is not at a whole hour;"),
        "{chatham}"
    );
    // After its last change of 2026, Chatham's next is the spring change of 2026-09-27 at
    // 02:45 standard time.
    let spring = Schedule::new("0 4 * * *", Some("Pacific/Chatham"))
        .expect("valid schedule")
        .cronjob_hazard(utc("2026-05-01T00:00:00Z"))
        .expect("a change at 02:45");
    assert_eq!(spring.at, utc("2026-09-26T14:00:00Z"));
    // An hour field allowing every hour never meets robfig/cron's hour stepping.
    for expression in [
        "* * * * *",
        "*/15 * * * *",
        "@hourly",
        "30 0-23 * * 0",
        "0 */1 * * *",
    ] {
        assert_eq!(hazard(expression, "Pacific/Chatham"), None, "{expression}");
        assert_eq!(
            hazard(expression, "Australia/Lord_Howe"),
            None,
            "{expression}"
        );
    }
    // Whole-hour changes at whole hours, half-hour offsets included, and zones without DST.
    for zone in [
        "UTC",
        "Europe/Berlin",
        "America/New_York",
        "Australia/Adelaide",
        "America/St_Johns",
        "Asia/Kathmandu",
    ] {
        assert_eq!(hazard("0 2 * * *", zone), None, "{zone}");
    }
}
