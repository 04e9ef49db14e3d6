//! Property tests of contract 1 against an independent oracle.
//!
//! The oracle states the Kubernetes CronJob semantics directly: a whole-minute instant is a
//! fire time iff its wall-clock reading in the schedule's time zone matches every field (with
//! the day-of-month / day-of-week rule). A local time skipped by DST has no instant and never
//! fires; a repeated local time has two instants and fires twice. The search in the crate walks
//! fields instead; these tests check that both agree, minute by minute.

use chrono::{DateTime, Datelike, Duration, TimeZone, Timelike, Utc};
use chrono_tz::Tz;
use proptest::prelude::*;
use tidecache_contract::{Bucket, Schedule, is_bucket_expired};

const ZONES: [&str; 5] = [
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "Australia/Lord_Howe",
    "Asia/Kolkata",
];

/// A field written as text plus the values it allows, generated together so the oracle does
/// not reuse the parser under test.
#[derive(Debug, Clone)]
struct FieldSpec {
    text: String,
    values: Vec<u32>,
    unrestricted: bool,
}

fn field(min: u32, max: u32) -> impl Strategy<Value = FieldSpec> {
    let all: Vec<u32> = (min..=max).collect();
    let star = Just(FieldSpec {
        text: "*".into(),
        values: all,
        unrestricted: true,
    });
    let step = (min..=max, 2..=(max - min + 1).max(2)).prop_map(move |(start, step)| FieldSpec {
        text: format!("{start}/{step}"),
        values: (start..=max).step_by(step as usize).collect(),
        unrestricted: false,
    });
    let range = (min..=max, min..=max).prop_map(|(a, b)| {
        let (low, high) = (a.min(b), a.max(b));
        FieldSpec {
            text: format!("{low}-{high}"),
            values: (low..=high).collect(),
            unrestricted: false,
        }
    });
    let list = proptest::collection::btree_set(min..=max, 1..4).prop_map(|set| FieldSpec {
        text: set.iter().map(u32::to_string).collect::<Vec<_>>().join(","),
        values: set.into_iter().collect(),
        unrestricted: false,
    });
    prop_oneof![2 => star, 1 => step, 1 => range, 2 => list]
}

#[derive(Debug, Clone)]
struct Case {
    minute: FieldSpec,
    hour: FieldSpec,
    dom: FieldSpec,
    dow: FieldSpec,
    zone: &'static str,
}

impl Case {
    fn expression(&self) -> String {
        format!(
            "{} {} {} * {}",
            self.minute.text, self.hour.text, self.dom.text, self.dow.text
        )
    }

    fn oracle_fires(&self, instant: DateTime<Utc>) -> bool {
        let tz: Tz = self.zone.parse().expect("zone in the list");
        let local = instant.with_timezone(&tz);
        let dom = self.dom.values.contains(&local.day());
        let dow = self
            .dow
            .values
            .contains(&local.weekday().num_days_from_sunday());
        let day = if self.dom.unrestricted || self.dow.unrestricted {
            dom && dow
        } else {
            dom || dow
        };
        instant.second() == 0
            && instant.nanosecond() == 0
            && day
            && self.hour.values.contains(&local.hour())
            && self.minute.values.contains(&local.minute())
    }
}

fn case() -> impl Strategy<Value = Case> {
    (
        field(0, 59),
        field(0, 23),
        field(1, 31),
        field(0, 6),
        proptest::sample::select(&ZONES[..]),
    )
        .prop_map(|(minute, hour, dom, dow, zone)| Case {
            minute,
            hour,
            dom,
            dow,
            zone,
        })
}

/// Instants from 2020 to 2035, with sub-minute parts, biased towards the 2026 DST changes.
fn instant() -> impl Strategy<Value = DateTime<Utc>> {
    let any = 1_577_836_800i64..2_051_222_400i64;
    let dst_2026 = prop_oneof![
        1_774_666_800i64..1_774_846_800i64, // around 2026-03-29 (Europe)
        1_772_863_200i64..1_773_043_200i64, // around 2026-03-08 (America)
        1_792_101_600i64..1_792_281_600i64, // around 2026-10-25 (Europe)
        1_793_412_000i64..1_793_592_000i64, // around 2026-11-01 (America)
    ];
    (prop_oneof![any, dst_2026], 0u32..1_000_000_000)
        .prop_map(|(secs, nanos)| Utc.timestamp_opt(secs, nanos).single().expect("in range"))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// The bucket is at or after the expiry, is a fire time, and no fire time lies strictly
    /// between the expiry and its bucket.
    #[test]
    fn bucket_is_the_first_fire_time_at_or_after_the_expiry(case in case(), expiry in instant()) {
        let schedule = Schedule::new(&case.expression(), Some(case.zone)).expect("generated schedules are valid");
        let bucket = schedule.bucket_for(expiry).expect("every generated schedule fires within 5 years");
        prop_assert!(bucket >= expiry);
        prop_assert!(case.oracle_fires(bucket), "{bucket} is not a fire time of {:?}", case);
        let mut minute = expiry.with_second(0).and_then(|t| t.with_nanosecond(0)).expect("valid");
        if minute < expiry {
            minute += Duration::minutes(1);
        }
        // Scan at most 70 days of minutes; every generated schedule fires at least that often.
        let mut scanned = 0;
        while minute < bucket && scanned < 70 * 24 * 60 {
            prop_assert!(!case.oracle_fires(minute), "{minute} fires but lies before the bucket {bucket}");
            minute += Duration::minutes(1);
            scanned += 1;
        }
    }

    /// The fire times after an instant are increasing, each the bucket of the instant just
    /// after the previous one.
    #[test]
    fn fire_times_are_consecutive(case in case(), start in instant()) {
        let schedule = Schedule::new(&case.expression(), Some(case.zone)).expect("valid");
        let mut previous = start;
        for fire in schedule.fire_times_after(start).take(5) {
            prop_assert!(fire > previous);
            prop_assert!(schedule.is_fire_time(fire));
            prop_assert_eq!(schedule.bucket_for(previous + Duration::nanoseconds(1)), Some(fire));
            previous = fire;
        }
    }

    /// Bucket names round-trip and sort as text in time order.
    #[test]
    fn bucket_names_round_trip_and_sort_in_time_order(a in instant(), b in instant()) {
        let whole = |t: DateTime<Utc>| t.with_nanosecond(0).expect("valid");
        let (a, b) = (Bucket::new(whole(a)).expect("in range"), Bucket::new(whole(b)).expect("in range"));
        prop_assert_eq!(Bucket::from_dir_name(&a.dir_name()), Some(a));
        prop_assert_eq!(a.dir_name().cmp(&b.dir_name()), a.cmp(&b));
        prop_assert_eq!(a.dir_name().len(), 16);
    }

    /// Anything that is not exactly a name we would write is "not ours": names a bucket
    /// wrote, the same with one character replaced, and the bucket shape with any digits,
    /// so that both outcomes occur often.
    #[test]
    fn only_names_a_bucket_writes_are_buckets(name in bucket_like_name()) {
        match Bucket::from_dir_name(&name) {
            Some(bucket) => prop_assert_eq!(bucket.dir_name(), name),
            None => prop_assert!(
                !is_canonical(&name),
                "{name} has the canonical form of a valid time but was refused"
            ),
        }
    }

    /// A bucket is expired exactly when its fire time is at or before now minus the grace.
    #[test]
    fn expiry_with_grace(fire in instant(), now in instant(), grace_secs in 0i64..600) {
        let grace = Duration::seconds(grace_secs);
        prop_assert_eq!(is_bucket_expired(fire, now, grace), fire + grace <= now);
    }
}

/// Names near the bucket format: written ones, one character off, and the shape with
/// arbitrary digits (invalid dates and times among them), plus arbitrary text.
fn bucket_like_name() -> impl Strategy<Value = String> {
    fn written() -> impl Strategy<Value = String> {
        instant().prop_map(|t| {
            Bucket::new(t.with_nanosecond(0).expect("valid"))
                .expect("in range")
                .dir_name()
        })
    }
    let one_off =
        (written(), any::<prop::sample::Index>(), any::<char>()).prop_map(|(name, at, c)| {
            let mut chars: Vec<char> = name.chars().collect();
            let at = at.index(chars.len());
            chars[at] = c;
            chars.into_iter().collect::<String>()
        });
    prop_oneof![written(), one_off, "[0-9]{8}T[0-9]{6}Z", "\\PC{0,20}"]
}

/// Whether `name` is `YYYYMMDDTHHMMSSZ` of a real UTC second, checked with chrono's parser
/// (independent of the code under test).
fn is_canonical(name: &str) -> bool {
    chrono::NaiveDateTime::parse_from_str(name, "%Y%m%dT%H%M%SZ")
        .is_ok_and(|time| time.format("%Y%m%dT%H%M%SZ").to_string() == name)
}

#[test]
fn bucket_names_examples() {
    let t = Utc
        .with_ymd_and_hms(2026, 11, 23, 14, 5, 0)
        .single()
        .expect("valid");
    let bucket = Bucket::new(t).expect("in range");
    assert_eq!(bucket.dir_name(), "20261123T140500Z");
    assert_eq!(Bucket::from_dir_name("20261123T140500Z"), Some(bucket));
    for foreign in [
        "",
        "20261123T140500",
        "20261123T140500z",
        "20261123t140500Z",
        "20261323T140500Z",
        "20261123T146000Z",
        "+2026112T140500Z",
        "20261123T140500Z.tmp",
        "../20261123T140500Z",
        "lost+found",
    ] {
        assert_eq!(
            Bucket::from_dir_name(foreign),
            None,
            "{foreign:?} must not be a bucket"
        );
    }
    assert_eq!(Bucket::new(t + Duration::milliseconds(1)), None);
}
