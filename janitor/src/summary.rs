//! What a run reports: [`Event`]s as they happen (one log line each, on stderr) and one
//! [`Summary`] at the end (one JSON line on stdout, which the Job's logs keep and the operator
//! can read back).

use std::fmt;

use serde::Serialize;

/// The result of one run. In a dry run the counts are what would have been removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// The cluster root that was swept.
    pub root: String,
    /// The schedule the run was given, as written.
    pub schedule: String,
    /// Its time zone.
    pub time_zone: String,
    /// The instant the run decided at (RFC 3339).
    pub now: String,
    /// Buckets with a fire time at or before this instant (`now - grace`) are expired.
    pub cutoff: String,
    /// Whether nothing was deleted on purpose.
    pub dry_run: bool,
    /// Whether the cluster root existed (a cluster that never wrote has none).
    pub root_present: bool,
    /// Expired bucket directories removed.
    pub buckets_deleted: u64,
    /// Bucket directories left because they are not expired yet.
    pub buckets_live: u64,
    /// Buckets seen (deleted or live) whose fire time is not one of the current schedule's:
    /// left over from an earlier schedule.
    pub buckets_off_schedule: u64,
    /// Files removed from expired buckets (segments, mostly).
    pub files_removed: u64,
    /// Directories removed, bucket directories included.
    pub dirs_removed: u64,
    /// Symbolic links removed as links (never followed).
    pub links_removed: u64,
    /// The sizes of the files removed, in bytes.
    pub bytes_freed: u64,
    /// Names under the root that are not buckets (or are buckets that are not directories),
    /// left alone.
    pub names_skipped: u64,
    /// Failures; any makes the process exit non-zero.
    pub errors: u64,
    /// The first failure's message, to show in the CacheCluster's status.
    pub first_error: Option<String>,
    /// Wall-clock time of the run, in milliseconds.
    pub duration_ms: u64,
    /// The process's peak resident memory in KiB, where the OS tells it.
    pub peak_rss_kib: Option<u64>,
}

/// Something worth one log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The cluster root does not exist: nothing to do.
    RootMissing {
        /// The root's path.
        root: String,
    },
    /// An expired bucket was removed (or would be, in a dry run).
    BucketDeleted {
        /// Its name.
        bucket: String,
        /// Files removed in it.
        files: u64,
        /// Their sizes in bytes.
        bytes: u64,
        /// Whether this was a dry run.
        dry_run: bool,
    },
    /// A symbolic link was removed as a link (or would be, in a dry run).
    LinkRemoved {
        /// Its path relative to the root.
        path: String,
        /// Whether this was a dry run.
        dry_run: bool,
    },
    /// A name was left alone.
    Skipped {
        /// The name (lossily decoded if not UTF-8).
        name: String,
        /// Why.
        reason: &'static str,
    },
    /// A failure; the run goes on with the next name.
    Error {
        /// The path relative to the root.
        path: String,
        /// What failed.
        message: String,
    },
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::RootMissing { root } => {
                write!(
                    f,
                    "cluster root {root} does not exist yet; nothing to delete"
                )
            }
            Event::BucketDeleted {
                bucket,
                files,
                bytes,
                dry_run,
            } => {
                let verb = if *dry_run { "would delete" } else { "deleted" };
                write!(
                    f,
                    "{verb} expired bucket {bucket}: {files} files, {bytes} bytes"
                )
            }
            Event::LinkRemoved { path, dry_run } => {
                let verb = if *dry_run { "would remove" } else { "removed" };
                write!(f, "{verb} symbolic link {path} (not followed)")
            }
            Event::Skipped { name, reason } => write!(f, "left {name:?} alone: {reason}"),
            Event::Error { path, message } => write!(f, "error at {path}: {message}"),
        }
    }
}

/// The peak resident memory of this process in KiB (`VmHWM` of `/proc/self/status`), or
/// `None` where there is no such file.
pub fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
