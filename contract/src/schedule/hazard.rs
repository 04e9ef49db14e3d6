//! Where the Kubernetes CronJob controller runs the janitor at other times than this crate's
//! fire times, although the expression and the zone are the same.
//!
//! robfig/cron v3 (`SpecSchedule.Next`, the CronJob controller's library) moves through hours
//! by truncating to a local `HH:00` once and then adding one *absolute* hour at a time. That
//! visits every local hour start only when each change of the zone's UTC offset is a whole
//! number of hours and happens at a whole local hour. Where it is not, it goes wrong
//! (measured against the controller's own scheduling code, Kubernetes v1.37.2, robfig/cron
//! v3.0.1; see the decisions in `docs/architecture.md`):
//! - Australia/Lord_Howe (30-minute change at 02:00): after the change it steps through
//!   `HH:30`, so `0 2 * * *` does not run on 2026-04-05, `0 12 * * *` loses the whole day and
//!   `30 1 * * *` also runs at 02:30 on 2026-10-04, a time it excludes;
//! - Pacific/Chatham (one-hour change at 02:45 standard time): `0 4 * * *` does not run on
//!   2026-09-27, and for `45 3 * * *` `Next` returns the same instant twice on 2026-04-05,
//!   which the controller reports as "time difference between two schedules is less than 1
//!   second" and then never schedules the CronJob again until it changes.
//!
//! An hour field that allows every hour never enters that loop, and every such expression
//! (`* * * * *`, `*/15 * * * *`, `@hourly`, `0 * * * 0`) was measured to agree in both zones.
//! Cache nodes and the janitor use this crate, so they agree with each other in any zone; only
//! the janitor CronJob's run times are at stake, which is why the check is separate from
//! [`Schedule::new`](super::Schedule::new): the operator refuses, the binaries need not.

use std::fmt;

use chrono::{DateTime, Duration, FixedOffset, Months, Offset, TimeZone, Timelike, Utc};
use chrono_tz::Tz;

use super::{SEARCH_YEARS, Schedule};

/// A change of the schedule's zone's UTC offset that the CronJob controller's cron library
/// mis-schedules the schedule around. The message is written for a cluster admin.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{zone} changes its UTC offset from {before} to {after} at {local} local time on {date}, \
     which is {why}; there the Kubernetes CronJob controller's cron library (robfig/cron v3) \
     runs the janitor at times the schedule \"{expression}\" excludes, skips times it \
     matches, and can stop scheduling it altogether (e.g. Pacific/Chatham), leaving expired \
     buckets on the volume. Use an hour field of * (e.g. \"*/15 * * * *\" or \"@hourly\"), or a \
     time zone whose offset changes by whole hours at whole hours (e.g. UTC)",
    before = Hhmm(self.before),
    after = Hhmm(self.after),
    local = self.at.with_timezone(&self.before).format("%H:%M"),
    date = self.at.with_timezone(&self.before).format("%Y-%m-%d"),
    why = self.why()
)]
pub struct CronJobHazard {
    /// The schedule's expression.
    pub expression: String,
    /// The IANA name of the zone.
    pub zone: String,
    /// When the offset changes.
    pub at: DateTime<Utc>,
    /// The offset before the change.
    pub before: FixedOffset,
    /// The offset from the change on.
    pub after: FixedOffset,
}

impl CronJobHazard {
    fn why(&self) -> String {
        let change = self.after.local_minus_utc() - self.before.local_minus_utc();
        if change % 3600 != 0 {
            format!("a change of {} minutes, not whole hours", change.abs() / 60)
        } else {
            "not at a whole hour".to_string()
        }
    }
}

/// An offset as `+HH:MM`.
struct Hhmm(FixedOffset);

impl fmt::Display for Hhmm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let seconds = self.0.local_minus_utc();
        let sign = if seconds < 0 { '-' } else { '+' };
        let minutes = seconds.abs() / 60;
        write!(f, "{sign}{:02}:{:02}", minutes / 60, minutes % 60)
    }
}

impl Schedule {
    /// The first change of the zone's offset within [`SEARCH_YEARS`] years after `from` around
    /// which the Kubernetes CronJob controller would not run on this schedule's fire times
    /// (see the module docs), or `None` when the CronJob runs exactly on them.
    pub fn cronjob_hazard(&self, from: DateTime<Utc>) -> Option<CronJobHazard> {
        if (0..24).all(|hour| self.hour.contains(hour)) {
            return None;
        }
        let end = from.checked_add_months(Months::new(12 * SEARCH_YEARS.unsigned_abs()))?;
        let mut t = from;
        while let Some((at, before, after)) = next_transition(self.time_zone, t, end) {
            let change = after.local_minus_utc() - before.local_minus_utc();
            let local = at.with_timezone(&before);
            if change % 3600 != 0 || local.minute() != 0 || local.second() != 0 {
                return Some(CronJobHazard {
                    expression: self.expression.clone(),
                    zone: self.time_zone.name().to_string(),
                    at,
                    before,
                    after,
                });
            }
            t = at;
        }
        None
    }
}

/// The first change of `tz`'s offset in `(from, end]`: its first instant at the new offset,
/// the offset before and the one after. Zones change at most a few times a year and never
/// twice within an hour, so hourly steps find every change and a bisection finds its second.
fn next_transition(
    tz: Tz,
    from: DateTime<Utc>,
    end: DateTime<Utc>,
) -> Option<(DateTime<Utc>, FixedOffset, FixedOffset)> {
    let offset = |t: DateTime<Utc>| tz.offset_from_utc_datetime(&t.naive_utc()).fix();
    let before = offset(from);
    let mut earlier = from;
    while earlier < end {
        let later = earlier + Duration::hours(1);
        if offset(later) != before {
            let (mut old, mut new) = (earlier, later);
            while new - old > Duration::seconds(1) {
                let middle = old + (new - old) / 2;
                if offset(middle) == before {
                    old = middle;
                } else {
                    new = middle;
                }
            }
            return Some((new, before, offset(new)));
        }
        earlier = later;
    }
    None
}
