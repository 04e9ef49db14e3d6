//! The janitor: run once per firing of the cluster's janitor CronJob, it deletes the bucket
//! directories of the shared volume whose fire time is at or before `now - grace`.
//!
//! # Layout
//! - `config`: the command line and the validated [`Config`] it becomes.
//! - `sweep`: [`sweep`], the walk and the deletions, every one relative to an open directory
//!   handle and never through a symbolic link.
//! - `summary`: the [`Summary`] printed as one JSON line, and the [`Event`]s logged during the
//!   run.
//!
//! # What is deleted
//! A directory directly under `<data-dir>/<namespace>/<cluster>/` whose name parses as a
//! bucket ([`tidecache_contract::Bucket::from_dir_name`]) and whose fire time is expired by
//! [`tidecache_contract::Bucket::is_expired`] at `now` with the grace: the same test
//! cache-node applies with zero grace when it evicts at a fire time. The name alone proves the
//! bucket expired, so it is *not* required to be a fire time of the current schedule: after an
//! admin changes the schedule, the old schedule's buckets must still go once expired. Such
//! buckets are counted (`buckets_off_schedule`) so that the change is visible. Every other
//! name is left alone and reported.

mod config;
mod summary;
mod sweep;

pub use config::{Args, Config, ConfigError, parse_grace};
pub use summary::{Event, Summary, peak_rss_kib};
pub use sweep::sweep;
