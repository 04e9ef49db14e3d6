//! What a node accepts from a peer. A record a peer sends (or anti-entropy fetches) is held
//! to this node's own limits, the ones its clients are held to: a peer's word is not trusted
//! more than a client's, so a forged or misconfigured peer cannot store a key or value no
//! client could, nor an entry a client could not give that lifetime. And its version may not
//! be further ahead of this node's clock than [`MAX_FORWARD_SKEW_MILLIS`]: last-writer-wins
//! would otherwise let one record with a far-future version (`2^64 - 1`) pin a key against
//! every later write for good.

use std::time::Duration;

use tidecache_contract::disk::Record;

use super::metrics::ReplicationMetrics;
use crate::base::hlc::{self, MAX_FORWARD_SKEW_MILLIS};
use crate::base::time::Timestamp;

/// The limits received records are held to: the node's own (`--max-key-bytes`,
/// `--max-value-bytes`, `--max-ttl`), as its clients are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordLimits {
    /// Longest key.
    pub max_key_bytes: usize,
    /// Largest value.
    pub max_value_bytes: usize,
    /// Longest lifetime; `None` = unbounded (and entries without expiry are accepted).
    pub max_ttl: Option<Duration>,
}

impl Default for RecordLimits {
    /// The defaults of the node's flags.
    fn default() -> RecordLimits {
        RecordLimits {
            max_key_bytes: 1024,
            max_value_bytes: 1 << 20,
            max_ttl: None,
        }
    }
}

/// Why a received record was refused. Nothing of it is stored; the message names the limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// An empty key, which no client can write.
    #[error("a record has an empty key")]
    EmptyKey,
    /// A key over `--max-key-bytes`.
    #[error("a record's key of {len} bytes is over this node's --max-key-bytes of {max}")]
    KeyTooLong {
        /// The key's length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A value over `--max-value-bytes`.
    #[error("a record's value of {len} bytes is over this node's --max-value-bytes of {max}")]
    ValueTooLarge {
        /// The value's length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A value without expiry on a node with `--max-ttl`.
    #[error("a record has no expiry, but this node's --max-ttl of {}s requires one", max.as_secs())]
    LifetimeRequired {
        /// The limit.
        max: Duration,
    },
    /// An expiry further away than `--max-ttl` (plus the clock skew a peer may have).
    #[error(
        "a record expires {}s from now, beyond this node's --max-ttl of {}s",
        asked.as_secs(),
        max.as_secs()
    )]
    LifetimeOverMax {
        /// How far away the expiry is.
        asked: Duration,
        /// The limit.
        max: Duration,
    },
    /// A version whose clock value is too far ahead of this node's clock.
    #[error(
        "a record's version is {ahead_millis} ms ahead of this node's clock (at most \
         {MAX_FORWARD_SKEW_MILLIS} ms are accepted): the sender's clock is wrong or the \
         version is forged; check NTP on both nodes"
    )]
    FutureVersion {
        /// How far ahead.
        ahead_millis: i64,
    },
}

impl Refusal {
    /// The `reason` label of `tidecache_replication_refused_records_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::EmptyKey | Refusal::KeyTooLong { .. } => "key_length",
            Refusal::ValueTooLarge { .. } => "value_size",
            Refusal::LifetimeRequired { .. } | Refusal::LifetimeOverMax { .. } => "lifetime",
            Refusal::FutureVersion { .. } => "future_version",
        }
    }
}

/// Whether `record`, received at `now`, is within `limits` and its version within the clock
/// bound. A tombstone carries no value and is held to the key and version checks only (its
/// expiry is the one of the entry it shadows).
///
/// # Errors
/// The first [`Refusal`] that applies.
pub fn check(limits: &RecordLimits, record: &Record, now: Timestamp) -> Result<(), Refusal> {
    if hlc::is_beyond_skew(record.version.hlc, now) {
        return Err(Refusal::FutureVersion {
            ahead_millis: hlc::millis_of(record.version.hlc).saturating_sub(now.as_millis()),
        });
    }
    match record.key.len() {
        0 => return Err(Refusal::EmptyKey),
        len if len > limits.max_key_bytes => {
            return Err(Refusal::KeyTooLong {
                len,
                max: limits.max_key_bytes,
            });
        }
        _ => {}
    }
    let Some(value) = &record.value else {
        return Ok(());
    };
    if value.len() > limits.max_value_bytes {
        return Err(Refusal::ValueTooLarge {
            len: value.len(),
            max: limits.max_value_bytes,
        });
    }
    let Some(max) = limits.max_ttl else {
        return Ok(());
    };
    let Some(expiry) = record.expiry_unix_nanos.map(Timestamp::from_unix_nanos) else {
        return Err(Refusal::LifetimeRequired { max });
    };
    // The sender computed the expiry on its own clock, which may be ahead of ours by up to
    // the skew bound.
    let asked = now.until(expiry);
    let slack = Duration::from_millis(MAX_FORWARD_SKEW_MILLIS.unsigned_abs());
    if asked > max.saturating_add(slack) {
        return Err(Refusal::LifetimeOverMax { asked, max });
    }
    Ok(())
}

/// The records of `records` within `limits` at `now`, and the refusal of each other one
/// (counted in `metrics` by reason).
pub fn admit(
    limits: &RecordLimits,
    records: Vec<Record>,
    now: Timestamp,
    metrics: &ReplicationMetrics,
) -> (Vec<Record>, Vec<Refusal>) {
    let mut refusals = Vec::new();
    let admitted = records
        .into_iter()
        .filter(|record| match check(limits, record, now) {
            Ok(()) => true,
            Err(refusal) => {
                metrics.refused(refusal.reason());
                refusals.push(refusal);
                false
            }
        })
        .collect();
    (admitted, refusals)
}

#[cfg(test)]
mod tests {
    use tidecache_contract::disk::Version;

    use super::*;

    const NOW: Timestamp = Timestamp::from_millis(1_795_046_420_000);

    fn record(key: usize, value: Option<usize>, expiry_secs: Option<i64>, hlc: u64) -> Record {
        Record {
            key: vec![b'k'; key],
            version: Version { hlc, node: 1 },
            expiry_unix_nanos: expiry_secs.map(|secs| (NOW.as_millis() + secs * 1_000) * 1_000_000),
            value: value.map(|len| vec![b'v'; len]),
        }
    }

    fn at(millis: i64) -> u64 {
        hlc::physical(Timestamp::from_millis(millis))
    }

    #[test]
    fn records_are_held_to_the_nodes_own_limits() {
        let limits = RecordLimits {
            max_key_bytes: 64,
            max_value_bytes: 1 << 20,
            max_ttl: Some(Duration::from_secs(3_600)),
        };
        let now = at(NOW.as_millis());
        assert_eq!(
            check(&limits, &record(64, Some(1 << 20), Some(3_600), now), NOW),
            Ok(())
        );
        assert_eq!(
            check(&limits, &record(4_096, Some(1), Some(60), now), NOW),
            Err(Refusal::KeyTooLong {
                len: 4_096,
                max: 64
            })
        );
        assert_eq!(
            check(&limits, &record(0, Some(1), Some(60), now), NOW),
            Err(Refusal::EmptyKey)
        );
        let oversized = check(&limits, &record(8, Some(4 << 20), Some(60), now), NOW);
        assert_eq!(
            oversized,
            Err(Refusal::ValueTooLarge {
                len: 4 << 20,
                max: 1 << 20
            })
        );
        assert_eq!(oversized.expect_err("refused").reason(), "value_size");
        assert_eq!(
            check(&limits, &record(8, Some(1), None, now), NOW),
            Err(Refusal::LifetimeRequired {
                max: Duration::from_secs(3_600)
            })
        );
        assert!(matches!(
            check(&limits, &record(8, Some(1), Some(3_600 * 24), now), NOW),
            Err(Refusal::LifetimeOverMax { .. })
        ));
        // A tombstone shadows an entry of any lifetime: only its key and version count.
        assert_eq!(check(&limits, &record(8, None, None, now), NOW), Ok(()));
    }

    #[test]
    fn versions_beyond_the_clock_bound_are_refused() {
        let limits = RecordLimits::default();
        let within = at(NOW.as_millis() + MAX_FORWARD_SKEW_MILLIS);
        assert_eq!(
            check(&limits, &record(1, Some(1), None, within), NOW),
            Ok(())
        );
        let beyond = at(NOW.as_millis() + MAX_FORWARD_SKEW_MILLIS + 1);
        assert_eq!(
            check(&limits, &record(1, Some(1), None, beyond), NOW),
            Err(Refusal::FutureVersion {
                ahead_millis: MAX_FORWARD_SKEW_MILLIS + 1
            })
        );
        let forged = check(&limits, &record(1, None, None, u64::MAX), NOW);
        assert!(
            matches!(forged, Err(Refusal::FutureVersion { .. })),
            "{forged:?}"
        );
        assert_eq!(forged.expect_err("refused").reason(), "future_version");
    }
}
