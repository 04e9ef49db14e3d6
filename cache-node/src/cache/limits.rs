//! The limits every front end enforces: configuration, so that every refusal is deliberate
//! and documented, and the same over every protocol. That includes the lifetime policy:
//! a front end parses what a write asks for into a [`Lifetime`], and [`Limits::expiry`]
//! applies the default and maximum TTL and refuses what records cannot hold
//! ([`Limits::check_expiry`]).

use std::time::Duration;

use crate::base::time::Timestamp;

/// The last instant an expiry may be, 2262-04-11T23:47:16.854Z: records keep expiries as
/// 64-bit Unix nanoseconds, on disk (contract 2) and between peers (contract 4), and a later
/// one would not fit (it used to be stored as "no expiry"). Its bucket, the schedule's first
/// fire time at or after it, is always a valid bucket name (years up to 9999); a schedule
/// that does not fire after an expiry is refused by the store (`PutError::NoBucket`).
pub const LAST_EXPIRY: Timestamp = Timestamp::LAST_IN_UNIX_NANOS;

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
    /// The lifetime exceeds the maximum TTL.
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
    /// The expiry is after [`LAST_EXPIRY`], so no record could hold it.
    #[error(
        "the expiry is after {last}, the last one tidecache can store (expiries are kept as \
         64-bit Unix nanoseconds); ask for an earlier expiry or a shorter lifetime"
    )]
    AfterLast {
        /// The last expiry accepted, [`LAST_EXPIRY`].
        last: Timestamp,
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
    /// Largest response a batch read (HTTP batch get, RESP `MGET`) may build.
    pub max_response_bytes: usize,
    /// Bytes of request bodies and responses in flight, node-wide ([`super::Budget`]); the
    /// default (1 GiB) is the budget of a node without a memory limit.
    pub max_inflight_bytes: usize,
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
            max_response_bytes: 64 << 20,
            max_inflight_bytes: 1 << 30,
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
    /// [`LifetimeError`]: an instant in the past, a lifetime above the maximum, an expiry
    /// after [`LAST_EXPIRY`], or "forever" when a maximum is set and there is no default.
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
        match (asked, self.max_ttl) {
            (Some(asked), Some(max)) if asked > max => Err(LifetimeError::OverMax { asked, max }),
            (None, Some(max)) => Err(LifetimeError::Required { max }),
            (Some(asked), _) => {
                let expiry = now
                    .checked_add(asked)
                    .ok_or(LifetimeError::AfterLast { last: LAST_EXPIRY })?;
                self.check_expiry(expiry).map(Some)
            }
            (None, None) => Ok(None),
        }
    }

    /// `expiry` if records can hold it: at or before [`LAST_EXPIRY`]. [`Limits::expiry`]
    /// applies it to every write a front end makes; whatever else hands the cache an
    /// absolute expiry (a peer's record) can apply it too.
    ///
    /// # Errors
    /// [`LifetimeError::AfterLast`].
    pub fn check_expiry(&self, expiry: Timestamp) -> Result<Timestamp, LifetimeError> {
        if expiry > LAST_EXPIRY {
            return Err(LifetimeError::AfterLast { last: LAST_EXPIRY });
        }
        Ok(expiry)
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
            Err(LifetimeError::AfterLast { .. })
        ));
    }

    #[test]
    fn no_expiry_after_the_last_one_records_hold() {
        let open = limits(None, None);
        let after = Timestamp::from_millis(LAST_EXPIRY.as_millis() + 1);
        let after_last = LifetimeError::AfterLast { last: LAST_EXPIRY };
        let refused = Err(after_last);
        assert_eq!(
            open.expiry(Lifetime::Until(LAST_EXPIRY), NOW),
            Ok(Some(LAST_EXPIRY))
        );
        assert_eq!(open.expiry(Lifetime::Until(after), NOW), refused);
        let to_last = NOW.until(LAST_EXPIRY);
        assert_eq!(
            open.expiry(Lifetime::For(to_last), NOW),
            Ok(Some(LAST_EXPIRY))
        );
        let one_more = to_last + Duration::from_millis(1);
        assert_eq!(open.expiry(Lifetime::For(one_more), NOW), refused);
        assert_eq!(open.expiry(Lifetime::For(Duration::MAX), NOW), refused);
        // A default TTL is a lifetime like any other.
        let default = Limits {
            default_ttl: Some(one_more),
            ..Limits::default()
        };
        assert_eq!(default.expiry(Lifetime::Default, NOW), refused);
        // The configured maximum, when it is the stricter bound, is what is reported.
        assert!(matches!(
            limits(None, Some(60)).expiry(Lifetime::Until(after), NOW),
            Err(LifetimeError::OverMax { .. })
        ));
        assert_eq!(open.check_expiry(LAST_EXPIRY), Ok(LAST_EXPIRY));
        assert_eq!(open.check_expiry(after), Err(after_last));
        assert!(
            after_last.to_string().contains("2262-04-11T23:47:16.854"),
            "the message names the last expiry"
        );
    }
}
