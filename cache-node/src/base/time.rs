//! Time as the cache sees it: millisecond Unix timestamps read from an injectable [`Clock`],
//! so that expiry, versions and the sweeper can be tested without sleeping.

use std::fmt;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chrono::{DateTime, Utc};

/// An instant as milliseconds since the Unix epoch. Milliseconds are fine enough for TTLs given
/// in seconds and small enough to compare and store in one machine word.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct Timestamp(i64);

impl Timestamp {
    /// The last instant whose Unix nanoseconds fit in an `i64`, the type records keep
    /// expiries in on disk and between peers: 2262-04-11T23:47:16.854Z, the last whole
    /// millisecond before 2262-04-11T23:47:16.854775807Z. [`Timestamp::to_unix_nanos`] fails
    /// exactly after it.
    pub const LAST_IN_UNIX_NANOS: Timestamp = Timestamp(i64::MAX / 1_000_000);

    /// The instant `millis` milliseconds after the Unix epoch.
    pub const fn from_millis(millis: i64) -> Timestamp {
        Timestamp(millis)
    }

    /// Milliseconds since the Unix epoch.
    pub const fn as_millis(self) -> i64 {
        self.0
    }

    /// This instant plus `duration`, or `None` past the representable range.
    pub fn checked_add(self, duration: Duration) -> Option<Timestamp> {
        let millis = i64::try_from(duration.as_millis()).ok()?;
        self.0.checked_add(millis).map(Timestamp)
    }

    /// How long from `self` until `later`; zero if `later` is not after `self`.
    pub fn until(self, later: Timestamp) -> Duration {
        let millis = later.0.saturating_sub(self.0).max(0);
        Duration::from_millis(u64::try_from(millis).unwrap_or(0))
    }

    /// The same instant as a chrono time, which the schedule contract speaks.
    pub fn to_datetime(self) -> Option<DateTime<Utc>> {
        DateTime::from_timestamp_millis(self.0)
    }

    /// The chrono instant truncated to milliseconds.
    pub fn from_datetime(time: DateTime<Utc>) -> Timestamp {
        Timestamp(time.timestamp_millis())
    }

    /// The same instant as a `SystemTime` (for HTTP dates); instants before 1970 clamp to it.
    pub fn to_system_time(self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(u64::try_from(self.0).unwrap_or(0))
    }

    /// The instant `nanos` Unix nanoseconds (the disk and wire format's expiry) name,
    /// rounded down to milliseconds.
    pub const fn from_unix_nanos(nanos: i64) -> Timestamp {
        Timestamp(nanos.div_euclid(1_000_000))
    }

    /// This instant as Unix nanoseconds, as records store expiries; `None` beyond the year
    /// 2262, which the format cannot express.
    pub const fn to_unix_nanos(self) -> Option<i64> {
        self.0.checked_mul(1_000_000)
    }

    /// A `SystemTime` as a timestamp; `None` before 1970 or beyond the range.
    pub fn from_system_time(time: SystemTime) -> Option<Timestamp> {
        let since = time.duration_since(UNIX_EPOCH).ok()?;
        i64::try_from(since.as_millis()).ok().map(Timestamp)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.to_datetime() {
            Some(time) => write!(f, "{}", time.to_rfc3339()),
            None => write!(f, "{}ms", self.0),
        }
    }
}

/// The source of "now". Production uses [`SystemClock`]; tests and benchmarks use
/// [`ManualClock`] and move time by hand.
pub trait Clock: fmt::Debug + Send + Sync + 'static {
    /// The current instant.
    fn now(&self) -> Timestamp;
}

/// The wall clock. Expiry is a wall-clock notion (the schedule fires at wall-clock times and
/// the janitor on another machine agrees on them), so this is not a monotonic clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_system_time(SystemTime::now()).unwrap_or(Timestamp(0))
    }
}

/// A clock that only moves when told to.
#[derive(Debug)]
pub struct ManualClock {
    /// Milliseconds since the epoch.
    millis: AtomicI64,
}

impl ManualClock {
    /// A clock standing at `start`.
    pub fn new(start: Timestamp) -> ManualClock {
        ManualClock {
            millis: AtomicI64::new(start.as_millis()),
        }
    }

    /// Moves the clock to `to` (backwards too, to test clock steps).
    pub fn set(&self, to: Timestamp) {
        self.millis.store(to.as_millis(), Ordering::SeqCst);
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let millis = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        self.millis.fetch_add(millis, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.millis.load(Ordering::SeqCst))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_told() {
        let clock = ManualClock::new(Timestamp::from_millis(1_000));
        assert_eq!(clock.now(), Timestamp::from_millis(1_000));
        clock.advance(Duration::from_secs(2));
        assert_eq!(clock.now(), Timestamp::from_millis(3_000));
        clock.set(Timestamp::from_millis(5));
        assert_eq!(clock.now(), Timestamp::from_millis(5));
    }

    #[test]
    fn timestamps_round_trip_through_chrono_and_system_time() {
        let t = Timestamp::from_millis(1_795_000_000_123);
        let chrono_time = t.to_datetime().expect("in range");
        assert_eq!(Timestamp::from_datetime(chrono_time), t);
        assert_eq!(Timestamp::from_system_time(t.to_system_time()), Some(t));
        assert_eq!(
            t.until(Timestamp::from_millis(1_795_000_001_123)),
            Duration::from_secs(1)
        );
        assert_eq!(t.until(Timestamp::from_millis(0)), Duration::ZERO);
        let nanos = t.to_unix_nanos().expect("before 2262");
        assert_eq!(nanos, 1_795_000_000_123_000_000);
        assert_eq!(Timestamp::from_unix_nanos(nanos + 999_999), t);
        assert_eq!(Timestamp::from_unix_nanos(-1), Timestamp::from_millis(-1));
        assert_eq!(
            Timestamp::from_millis(i64::MAX / 1_000).to_unix_nanos(),
            None
        );
        let last = Timestamp::LAST_IN_UNIX_NANOS;
        assert_eq!(last.to_unix_nanos(), Some(9_223_372_036_854_000_000));
        assert_eq!(
            Timestamp::from_millis(last.as_millis() + 1).to_unix_nanos(),
            None
        );
        assert_eq!(Timestamp::from_unix_nanos(i64::MAX), last);
        assert_eq!(last.to_string(), "2262-04-11T23:47:16.854+00:00");
    }
}
