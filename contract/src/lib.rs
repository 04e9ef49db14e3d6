//! The contracts that more than one tidecache binary must agree on, owned in exactly one place.
//!
//! # Layout
//! - [`schedule`]: contract 1, the expiry schedule. A Kubernetes CronJob schedule (5-field cron
//!   expression plus optional IANA time zone) with the semantics of the CronJob controller's
//!   parser. Every entry expiring at `t` belongs to the bucket of the first fire time `>= t`.
//!   cache-node evicts buckets from memory and the janitor deletes bucket directories from the
//!   shared volume using this module alone, so that both always agree on what is expired.
//! - [`bucket`]: a bucket's identity (its fire time), its directory name on the shared volume
//!   (text order = time order) and the expiry test with a clock-skew grace.
//! - [`disk`]: contract 2, the shared volume's layout and segment format (checksummed records,
//!   torn-tail detection, the segment writer and reader). cache-node persists and loads with
//!   it; the janitor deletes bucket directories by its names.
//! - [`units`]: the durations and byte sizes of flags and spec fields, parsed the same way by
//!   every binary.
//! - [`args`]: the command lines and environments the operator gives cache-node and the
//!   janitor, typed, with every flag-value enum spelled once and parsed by the binaries' own
//!   `clap` parsers.
//!
//! The operator validates `spec.expiry` with the same code, so a schedule it accepts is one
//! the nodes and the janitor can run.

#![deny(clippy::unwrap_used)]

pub mod args;
pub mod bucket;
pub mod disk;
pub mod placement;
pub mod schedule;
pub mod units;

pub use bucket::{Bucket, is_bucket_expired};
pub use schedule::{CronJobHazard, Schedule, ScheduleError};
