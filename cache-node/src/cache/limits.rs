//! The limits every front end enforces: configuration, so that every refusal is deliberate
//! and documented, and the same over every protocol.

use std::time::Duration;

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
