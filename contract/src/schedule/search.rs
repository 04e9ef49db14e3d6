//! Finding fire times: the search of the Kubernetes CronJob controller's cron library
//! (robfig/cron v3 `SpecSchedule.Next`), at minute resolution, on chrono-tz instants.
//!
//! The search walks forward from the first whole minute at or after the start. A field that
//! does not match moves to the start of the next unit of that field: the next month's first
//! midnight, the next day's midnight, the next *absolute* hour, the next minute. Moving hours
//! by absolute time is what gives the Kubernetes behaviour across DST changes: a local hour
//! skipped in spring is never visited (its fire times do not happen that day), and a local
//! hour repeated in autumn is visited twice (its fire times happen twice).

use chrono::{
    DateTime, Datelike, Duration, LocalResult, Months, NaiveDate, TimeZone, Timelike, Utc,
};
use chrono_tz::Tz;

use super::{SEARCH_YEARS, Schedule};

/// The first fire time of `schedule` at or after `instant`, if there is one within
/// [`SEARCH_YEARS`] years.
pub(super) fn first_at_or_after(
    schedule: &Schedule,
    instant: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let tz = schedule.time_zone;
    let mut t = ceil_to_minute(instant)?.with_timezone(&tz);
    let year_limit = t.year().checked_add(SEARCH_YEARS)?;
    loop {
        if t.year() > year_limit {
            return None;
        }
        if !schedule.month.contains(t.month()) {
            let first_of_month = NaiveDate::from_ymd_opt(t.year(), t.month(), 1)?;
            t = local_midnight(tz, first_of_month.checked_add_months(Months::new(1))?)?;
            continue;
        }
        if !day_matches(schedule, &t) {
            t = local_midnight(tz, t.date_naive().succ_opt()?)?;
            continue;
        }
        if !schedule.hour.contains(t.hour()) {
            t = t - Duration::minutes(i64::from(t.minute())) + Duration::hours(1);
            continue;
        }
        if !schedule.minute.contains(t.minute()) {
            t += Duration::minutes(1);
            continue;
        }
        return Some(t.with_timezone(&Utc));
    }
}

/// Kubernetes' day rule: when day-of-month or day-of-week is unrestricted both must match
/// (so the restricted one decides); when both are restricted either may match.
fn day_matches(schedule: &Schedule, t: &DateTime<Tz>) -> bool {
    let dom = schedule.day_of_month.contains(t.day());
    let dow = schedule
        .day_of_week
        .contains(t.weekday().num_days_from_sunday());
    if schedule.day_of_month.unrestricted || schedule.day_of_week.unrestricted {
        dom && dow
    } else {
        dom || dow
    }
}

/// The first instant of a local day: its midnight, the earlier one if midnight happens twice,
/// or the end of the gap if a DST change skips midnight.
fn local_midnight(tz: Tz, date: NaiveDate) -> Option<DateTime<Tz>> {
    let midnight = date.and_hms_opt(0, 0, 0)?;
    (0..=24 * 60).find_map(|minutes| {
        match tz.from_local_datetime(&(midnight + Duration::minutes(minutes))) {
            LocalResult::Single(t) => Some(t),
            LocalResult::Ambiguous(earlier, _) => Some(earlier),
            LocalResult::None => None,
        }
    })
}

/// Rounds up to a whole minute: fire times are always at second zero.
fn ceil_to_minute(instant: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let floor = instant.with_second(0)?.with_nanosecond(0)?;
    if floor == instant {
        Some(floor)
    } else {
        floor.checked_add_signed(Duration::minutes(1))
    }
}
