//! Entry versions: what an `ETag` names and what `If-Match` compares.
//!
//! A version is the write's physical time in microseconds, bumped past the previous version
//! when two writes fall in the same microsecond. That is the physical half of a hybrid logical
//! clock: versions grow across restarts (a client's old ETag never matches a new entry that
//! happens to reuse a counter value), and replication can later widen [`Version`] with a node
//! id and take the maximum of local and received clocks without changing any caller.

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::clock::Timestamp;

/// The version of one write of one key. Later writes on this node have larger versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version(u64);

impl Version {
    /// A version from its numeric form (as shown in an ETag).
    pub const fn new(value: u64) -> Version {
        Version(value)
    }

    /// The numeric form.
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Why a text is not a version.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("\"{0}\" is not a version (expected a decimal number as issued in an ETag)")]
pub struct ParseVersionError(String);

impl FromStr for Version {
    type Err = ParseVersionError;

    fn from_str(text: &str) -> Result<Version, ParseVersionError> {
        let digits_only = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
        digits_only
            .then(|| text.parse().ok())
            .flatten()
            .map(Version)
            .ok_or_else(|| ParseVersionError(text.to_string()))
    }
}

/// Issues strictly increasing versions seeded from the clock.
#[derive(Debug, Default)]
pub(crate) struct VersionClock {
    /// The last version issued.
    last: AtomicU64,
}

impl VersionClock {
    /// A version larger than every one issued before and at least `now` in microseconds.
    pub(crate) fn next(&self, now: Timestamp) -> Version {
        let physical = u64::try_from(now.as_millis())
            .unwrap_or(0)
            .saturating_mul(1_000);
        let mut issued = 0;
        // fetch_update retries on contention; the closure always returns Some.
        let _ = self
            .last
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |last| {
                issued = physical.max(last.saturating_add(1));
                Some(issued)
            });
        Version(issued)
    }

    /// Makes every later version larger than `seen` (a version loaded from disk), so that a
    /// restarted node's writes supersede what it wrote before.
    pub(crate) fn observe(&self, seen: Version) {
        self.last.fetch_max(seen.0, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_increase_even_when_the_clock_stands_still_or_goes_back() {
        let clock = VersionClock::default();
        let first = clock.next(Timestamp::from_millis(5));
        let second = clock.next(Timestamp::from_millis(5));
        let third = clock.next(Timestamp::from_millis(1));
        assert_eq!(first, Version::new(5_000));
        assert!(first < second && second < third);
        assert_eq!(clock.next(Timestamp::from_millis(10)), Version::new(10_000));
    }

    #[test]
    fn versions_parse_only_from_plain_decimals() {
        assert_eq!("42".parse(), Ok(Version::new(42)));
        assert!("".parse::<Version>().is_err());
        assert!("+42".parse::<Version>().is_err());
        assert!("4 2".parse::<Version>().is_err());
        assert!("99999999999999999999999".parse::<Version>().is_err());
    }
}
