//! Contract 1: the expiry schedule.
//!
//! A [`Schedule`] is what a Kubernetes CronJob is given: a 5-field cron expression (or one of
//! the `@hourly`-style macros) and an optional IANA time zone (UTC when absent). Its fire times
//! are the bucket boundaries of the cache: an entry expiring at `t` belongs to the bucket
//! [`Schedule::bucket_for`]`(t)`, the first fire time at or after `t`, and is gone from every
//! node's memory and from the shared volume once that fire time has passed.
//!
//! # Why not a cron crate
//! The fire times must be exactly those at which the janitor CronJob runs, so they follow the
//! Kubernetes CronJob controller's cron parser (robfig/cron v3), including two behaviours that
//! the maintained Rust crates do not share (checked: croner 4 moves a time skipped by a spring
//! DST change to the next valid instant and fires once in an autumn repeated hour):
//! - a wall-clock time that does not exist on a spring-forward day does not fire that day;
//! - a wall-clock time that occurs twice on a fall-back day fires twice.
//!
//! Day-of-month and day-of-week are ANDed when either is unrestricted (`*`, `?`, `*/1`) and
//! ORed otherwise, as in Kubernetes. The time-zone database is compiled in (`chrono-tz`), so a
//! minimal container image needs no `/usr/share/zoneinfo`.

mod field;
mod hazard;
mod search;

use std::fmt;

use chrono::{DateTime, Duration, Utc};
use chrono_tz::Tz;

use field::{Field, FieldKind};
pub use hazard::CronJobHazard;

/// How far ahead a fire time is searched for, as in Kubernetes: a schedule that does not fire
/// within five years of an instant has no fire time after it.
pub const SEARCH_YEARS: i32 = 5;

/// Why a schedule or time zone was refused. The messages are written for a cluster admin: the
/// operator shows them in the CacheCluster's status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    /// The expression is empty or blank.
    #[error("the schedule is empty; write a cron expression such as \"* * * * *\"")]
    Empty,
    /// The expression does not have exactly five fields.
    #[error(
        "the schedule \"{expression}\" has {found} fields; write exactly 5 (minute hour \
         day-of-month month day-of-week), e.g. \"*/5 * * * *\""
    )]
    FieldCount {
        /// The expression as given.
        expression: String,
        /// How many whitespace-separated fields it has.
        found: usize,
    },
    /// One field is malformed or out of range.
    #[error("the {field} field \"{text}\" is invalid: {problem}")]
    Field {
        /// Which field (minute, hour, day-of-month, month, day-of-week).
        field: &'static str,
        /// The field's text.
        text: String,
        /// What is wrong with it.
        problem: String,
    },
    /// An `@` macro that Kubernetes CronJob does not know, or `@every`.
    #[error(
        "\"{0}\" is not a supported macro; use @yearly, @annually, @monthly, @weekly, @daily, \
         @midnight or @hourly, or a 5-field expression (@every is not supported because bucket \
         boundaries must be fixed wall-clock times)"
    )]
    UnknownMacro(String),
    /// A `TZ=` or `CRON_TZ=` prefix, which Kubernetes refuses in a CronJob schedule.
    #[error(
        "the schedule must not contain TZ= or CRON_TZ=; put the zone in expiry.timeZone instead"
    )]
    TimeZoneInExpression,
    /// The time zone is not an IANA name.
    #[error(
        "unknown time zone \"{0}\"; use an IANA name such as \"UTC\", \"Europe/Berlin\" or \
         \"America/New_York\""
    )]
    UnknownTimeZone(String),
    /// The expression is valid but never fires (e.g. `0 0 31 2 *`, February 31st).
    #[error(
        "the schedule \"{0}\" never fires within {SEARCH_YEARS} years (check the day and month \
         fields, e.g. February has no 30th), so entries could never expire"
    )]
    NeverFires(String),
}

/// A parsed expiry schedule: a cron expression in a time zone. Cheap to clone and share.
#[derive(Clone, PartialEq, Eq)]
pub struct Schedule {
    /// The expression as the user wrote it, shown back in status and logs.
    expression: String,
    /// The zone the expression's wall-clock fields are read in.
    time_zone: Tz,
    minute: Field,
    hour: Field,
    day_of_month: Field,
    month: Field,
    day_of_week: Field,
}

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Schedule({:?} in {})",
            self.expression,
            self.time_zone.name()
        )
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.expression, self.time_zone.name())
    }
}

impl Schedule {
    /// Parses a CronJob schedule and optional IANA time zone (`None` or `""` means UTC).
    ///
    /// # Errors
    /// A [`ScheduleError`] naming the field and what is wrong, an unknown time zone, or a
    /// schedule that never fires.
    pub fn new(expression: &str, time_zone: Option<&str>) -> Result<Schedule, ScheduleError> {
        let time_zone = parse_time_zone(time_zone)?;
        let trimmed = expression.trim();
        if trimmed.is_empty() {
            return Err(ScheduleError::Empty);
        }
        if trimmed.starts_with("TZ=") || trimmed.starts_with("CRON_TZ=") {
            return Err(ScheduleError::TimeZoneInExpression);
        }
        let fields = if trimmed.starts_with('@') {
            macro_fields(trimmed)?
        } else {
            let texts: Vec<&str> = trimmed.split_whitespace().collect();
            if texts.len() != 5 {
                return Err(ScheduleError::FieldCount {
                    expression: trimmed.to_string(),
                    found: texts.len(),
                });
            }
            let mut fields = [Field::single(0); 5];
            for ((slot, kind), text) in fields.iter_mut().zip(FieldKind::ALL).zip(texts) {
                *slot = Field::parse(kind, text)?;
            }
            fields
        };
        let [minute, hour, day_of_month, month, day_of_week] = fields;
        let schedule = Schedule {
            expression: trimmed.to_string(),
            time_zone,
            minute,
            hour,
            day_of_month,
            month,
            day_of_week,
        };
        if schedule.bucket_for(Utc::now()).is_none() {
            return Err(ScheduleError::NeverFires(schedule.expression));
        }
        Ok(schedule)
    }

    /// The default schedule: every minute, in UTC.
    pub fn every_minute() -> Schedule {
        let every = |kind| Field::every(kind);
        Schedule {
            expression: "* * * * *".to_string(),
            time_zone: Tz::UTC,
            minute: every(FieldKind::Minute),
            hour: every(FieldKind::Hour),
            day_of_month: every(FieldKind::DayOfMonth),
            month: every(FieldKind::Month),
            day_of_week: every(FieldKind::DayOfWeek),
        }
    }

    /// The expression as written (trimmed).
    pub fn expression(&self) -> &str {
        &self.expression
    }

    /// The IANA name of the time zone the schedule is read in.
    pub fn time_zone(&self) -> &str {
        self.time_zone.name()
    }

    /// The bucket of an entry that expires at `expiry`: the first fire time at or after it.
    /// `None` only if the schedule does not fire within [`SEARCH_YEARS`] years after `expiry`.
    pub fn bucket_for(&self, expiry: DateTime<Utc>) -> Option<DateTime<Utc>> {
        search::first_at_or_after(self, expiry)
    }

    /// The first fire time strictly after `instant`.
    pub fn next_fire_after(&self, instant: DateTime<Utc>) -> Option<DateTime<Utc>> {
        search::first_at_or_after(self, instant + Duration::nanoseconds(1))
    }

    /// The fire times strictly after `instant`, in order.
    pub fn fire_times_after(
        &self,
        instant: DateTime<Utc>,
    ) -> impl Iterator<Item = DateTime<Utc>> + '_ {
        std::iter::successors(self.next_fire_after(instant), |fire| {
            self.next_fire_after(*fire)
        })
    }

    /// Whether `instant` is one of the schedule's fire times.
    pub fn is_fire_time(&self, instant: DateTime<Utc>) -> bool {
        self.bucket_for(instant) == Some(instant)
    }
}

fn parse_time_zone(time_zone: Option<&str>) -> Result<Tz, ScheduleError> {
    match time_zone.map(str::trim) {
        None | Some("") => Ok(Tz::UTC),
        // Kubernetes refuses "Local": it would mean the controller's zone, not a fixed one.
        Some(name) if name.eq_ignore_ascii_case("local") => {
            Err(ScheduleError::UnknownTimeZone(name.to_string()))
        }
        Some(name) => name
            .parse::<Tz>()
            .map_err(|_| ScheduleError::UnknownTimeZone(name.to_string())),
    }
}

/// The fields of the macros Kubernetes CronJob accepts.
fn macro_fields(text: &str) -> Result<[Field; 5], ScheduleError> {
    use FieldKind::{DayOfMonth, DayOfWeek, Hour, Month};
    let zero = Field::single(0);
    let fields = match text {
        "@yearly" | "@annually" => [
            zero,
            zero,
            Field::single(1),
            Field::single(1),
            Field::every(DayOfWeek),
        ],
        "@monthly" => [
            zero,
            zero,
            Field::single(1),
            Field::every(Month),
            Field::every(DayOfWeek),
        ],
        "@weekly" => [
            zero,
            zero,
            Field::every(DayOfMonth),
            Field::every(Month),
            Field::single(0),
        ],
        "@daily" | "@midnight" => [
            zero,
            zero,
            Field::every(DayOfMonth),
            Field::every(Month),
            Field::every(DayOfWeek),
        ],
        "@hourly" => [
            zero,
            Field::every(Hour),
            Field::every(DayOfMonth),
            Field::every(Month),
            Field::every(DayOfWeek),
        ],
        other => return Err(ScheduleError::UnknownMacro(other.to_string())),
    };
    Ok(fields)
}

#[cfg(test)]
mod tests;
