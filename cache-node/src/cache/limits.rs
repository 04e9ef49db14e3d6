//! The limits every front end enforces: configuration, so that every refusal is deliberate
//! and documented, and the same over every protocol. That includes the lifetime policy:
//! a front end parses what a write asks for into a [`Lifetime`], and [`Limits::expiry`]
//! applies the default and maximum TTL.

use std::time::Duration;

use crate::base::time::Timestamp;

/// The last instant an expiry may be: 9999-12-31T23:59:59Z, the last an HTTP date (and a
/// RESP `EXAT` a client could read back as a date) can express.
const LAST_EXPIRY: Timestamp = Timestamp::from_millis(253_402_300_799_000);

/// The lifetime a write asks for, as parsed by a front end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifetime {
    /// Nothing asked: the default TTL, or no expiry.
    Default,
    /// A duration from now (`?ttl=`, `EX`, `PX`).
    For(Duration),
    /// An instant (`Expires`, `EXAT`, `PXAT`).
    Until(Timestamp),
}

/// Why the lifetime a write asks for is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LifetimeError {
    /// The instant asked for is not in the future.
    #[error("the expiry is not in the future")]
    InPast,
    /// The lifetime exceeds the maximum TTL (or the last representable expiry).
    #[error("the lifetime of {}s exceeds the maximum TTL of {}s; ask for less", asked.as_secs(), max.as_secs())]
    OverMax {
        /// The lifetime asked for.
        asked: Duration,
        /// The maximum in force.
        max: Duration,
    },
    /// No lifetime asked for and no default, but a maximum is set: an entry without expiry
    /// would exceed it.
    #[error("a lifetime is required (the maximum TTL is {}s and there is no default)", max.as_secs())]
    Required {
        /// The configured maximum.
        max: Duration,
    },
}

/// Request limits: configuration, so that every refusal is deliberate and documented.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Longest key, in bytes after percent-decoding.
    pub max_key_bytes: usize,
    /// Largest value.
    pub max_value_bytes: usize,
    /// Most entries in one batch request.
    pub max_batch_entries: usize,
    /// Largest batch request body.
    pub max_batch_bytes: usize,
    /// Lifetime of entries written without `ttl` or `Expires`; `None` = no expiry.
    pub default_ttl: Option<Duration>,
    /// Longest lifetime a write may ask for; `None` = unbounded.
    pub max_ttl: Option<Duration>,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_key_bytes: 1024,
            max_value_bytes: 1 << 20,
            max_batch_entries: 1000,
            max_batch_bytes: 16 << 20,
            default_ttl: None,
            max_ttl: None,
        }
    }
}

impl Limits {
    /// The expiry of a write that asks for `asked` at `now`: the default TTL when nothing is
    /// asked, never above the maximum TTL; `None` means no expiry.
    ///
    /// # Errors
    /// [`LifetimeError`]: an instant in the past, a lifetime above the maximum (or past
    /// [`LAST_EXPIRY`]), or "forever" when a maximum is set and there is no default.
    pub fn expiry(
        &self,
        asked: Lifetime,
        now: Timestamp,
    ) -> Result<Option<Timestamp>, LifetimeError> {
        let asked = match asked {
            Lifetime::Default => self.default_ttl,
            Lifetime::For(duration) => Some(duration),
            Lifetime::Until(at) if at <= now => return Err(LifetimeError::InPast),
            Lifetime::Until(at) => Some(now.until(at)),
        };
        let horizon = now.until(LAST_EXPIRY);
        match (asked, self.max_ttl) {
            (Some(asked), Some(max)) if asked > max => Err(LifetimeError::OverMax { asked, max }),
            (Some(asked), _) if asked > horizon => Err(LifetimeError::OverMax {
                asked,
                max: horizon,
            }),
            (None, Some(max)) => Err(LifetimeError::Required { max }),
            (Some(asked), _) => now
                .checked_add(asked)
                .map(Some)
                .ok_or(LifetimeError::OverMax {
                    asked,
                    max: horizon,
                }),
            (None, None) => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Timestamp = Timestamp::from_millis(784_111_777_000);

    fn limits(default: Option<u64>, max: Option<u64>) -> Limits {
        Limits {
            default_ttl: default.map(Duration::from_secs),
            max_ttl: max.map(Duration::from_secs),
            ..Limits::default()
        }
    }

    fn secs(s: i64) -> Option<Timestamp> {
        Some(Timestamp::from_millis(NOW.as_millis() + s * 1_000))
    }

    #[test]
    fn the_default_applies_and_the_maximum_caps() {
        let open = limits(None, None);
        let minute = Duration::from_secs(60);
        assert_eq!(open.expiry(Lifetime::For(minute), NOW), Ok(secs(60)));
        assert_eq!(open.expiry(Lifetime::Default, NOW), Ok(None));
        assert_eq!(
            open.expiry(Lifetime::Until(secs(5).expect("t")), NOW),
            Ok(secs(5))
        );
        assert_eq!(
            limits(Some(60), None).expiry(Lifetime::Default, NOW),
            Ok(secs(60))
        );
        let capped = limits(None, Some(300));
        assert_eq!(
            capped.expiry(Lifetime::For(Duration::from_secs(300)), NOW),
            Ok(secs(300))
        );
        assert_eq!(
            capped.expiry(Lifetime::For(Duration::from_secs(301)), NOW),
            Err(LifetimeError::OverMax {
                asked: Duration::from_secs(301),
                max: Duration::from_secs(300)
            })
        );
        assert_eq!(
            capped.expiry(Lifetime::Default, NOW),
            Err(LifetimeError::Required {
                max: Duration::from_secs(300)
            })
        );
        assert_eq!(
            open.expiry(Lifetime::Until(NOW), NOW),
            Err(LifetimeError::InPast)
        );
        assert!(matches!(
            open.expiry(Lifetime::For(Duration::from_secs(999_999_999_999)), NOW),
            Err(LifetimeError::OverMax { .. })
        ));
    }
}
