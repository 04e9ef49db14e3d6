//! The values of the enum-valued flags, each spelled once: [`clap::ValueEnum`] parses exactly
//! the spelling that `as_flag` renders, so the operator cannot write a value the binaries do
//! not accept.

use std::fmt;

use clap::ValueEnum;
use clap::builder::PossibleValue;

/// Defines a flag-value enum: the variants with their command-line spelling, `as_flag`,
/// `Display` (the same spelling) and a [`ValueEnum`] implementation that accepts exactly it and
/// shows each variant's one-line doc comment in `--help`.
macro_rules! flag_values {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $(#[doc = $help:literal] $variant:ident = $flag:literal,)+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum $name {
            $(#[doc = $help] $variant,)+
        }

        impl $name {
            /// The value as written on the command line or in an environment variable.
            pub fn as_flag(self) -> &'static str {
                match self {
                    $($name::$variant => $flag,)+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_flag())
            }
        }

        impl ValueEnum for $name {
            fn value_variants<'a>() -> &'a [Self] {
                &[$($name::$variant,)+]
            }

            fn to_possible_value(&self) -> Option<PossibleValue> {
                let help = match self {
                    $($name::$variant => $help,)+
                };
                Some(PossibleValue::new(self.as_flag()).help(help.trim().trim_end_matches('.')))
            }
        }
    };
}

flag_values! {
    /// cache-node's `--eviction-policy`: what a node does when its memory is full.
    pub enum EvictionPolicy {
        /// CLOCK (second chance): expired entries first, then those not read recently.
        Clock = "clock",
        /// Evict nothing; refuse writes that do not fit (HTTP 507).
        NoEviction = "noeviction",
    }
}

flag_values! {
    /// cache-node's `--fsync`: when persisted writes reach stable storage.
    pub enum FsyncPolicy {
        /// fsync before acknowledging.
        Always = "always",
        /// fsync in the background once a second.
        Everysec = "everysec",
        /// Never fsync explicitly; the kernel writes back when it chooses.
        Never = "never",
    }
}

flag_values! {
    /// cache-node's `--ack` (`TIDECACHE_WRITE_ACK`): how many replicas acknowledge a write
    /// that does not ask for a level itself.
    pub enum AckLevel {
        /// The accepting node alone.
        One = "one",
        /// A majority of the replicas.
        Quorum = "quorum",
        /// Every replica.
        All = "all",
    }
}

flag_values! {
    /// cache-node's `--mode` (`TIDECACHE_MODE`): which nodes hold a key.
    pub enum ReplicationMode {
        /// Every node holds every key.
        Full = "full",
        /// Each key has `--replication-factor` owners, chosen by its hash slot.
        Partitioned = "partitioned",
    }
}

flag_values! {
    /// cache-node's `--backend`: the kind of database behind the cache.
    pub enum BackendKind {
        /// PostgreSQL.
        Postgres = "postgres",
    }
}

flag_values! {
    /// cache-node's `--backend-mode`: how writes reach the database behind the cache.
    pub enum BackendMode {
        /// Misses load rows; writes stay in the cache.
        ReadThrough = "read-through",
        /// Writes are committed to the table before they are acknowledged.
        WriteThrough = "write-through",
        /// Writes are acknowledged once queued on the node's disk, flushed to the table after.
        WriteBehind = "write-behind",
    }
}

flag_values! {
    /// cache-node's `--log-format`.
    pub enum LogFormat {
        /// Human-readable lines.
        Human = "human",
        /// One JSON object per line, for log collectors.
        Json = "json",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every variant parses from the spelling it renders, and nothing else is accepted.
    fn round_trips<T: ValueEnum + fmt::Display + PartialEq + fmt::Debug>() {
        for value in T::value_variants() {
            let text = value.to_string();
            assert_eq!(T::from_str(&text, false).as_ref(), Ok(value), "{text}");
        }
        assert!(T::from_str("no-such-value", true).is_err());
    }

    #[test]
    fn every_value_parses_from_its_spelling() {
        round_trips::<EvictionPolicy>();
        round_trips::<FsyncPolicy>();
        round_trips::<AckLevel>();
        round_trips::<LogFormat>();
        round_trips::<ReplicationMode>();
        round_trips::<BackendKind>();
        round_trips::<BackendMode>();
    }

    #[test]
    fn spellings_are_the_documented_ones() {
        assert_eq!(EvictionPolicy::NoEviction.as_flag(), "noeviction");
        assert_eq!(FsyncPolicy::Everysec.as_flag(), "everysec");
        assert_eq!(AckLevel::Quorum.as_flag(), "quorum");
        assert_eq!(LogFormat::Json.as_flag(), "json");
        assert_eq!(ReplicationMode::Partitioned.as_flag(), "partitioned");
        assert_eq!(BackendMode::WriteBehind.as_flag(), "write-behind");
    }
}
