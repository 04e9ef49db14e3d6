//! `--fsync`: when an acknowledged write reaches stable storage.

use std::fmt;
use std::time::Duration;

/// How often the log forces appended records to stable storage (`fdatasync`). Every policy
/// acknowledges a write only after its record has been handed to the kernel (`write`), so a
/// crash of the process alone (OOM kill, `kill -9`, panic) loses nothing acknowledged; the
/// policies differ in what a crash of the machine or the kernel can lose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// fsync before acknowledging: a machine crash loses nothing acknowledged. Concurrent
    /// writers share one fsync (group commit).
    Always,
    /// fsync in the background once a second: a machine crash loses at most about the last
    /// second of acknowledged writes.
    Everysec,
    /// Never fsync explicitly; the kernel writes back when it chooses (on Linux typically
    /// within 30 s): a machine crash can lose that much.
    Never,
}

impl FsyncPolicy {
    /// How long appended records may stay unsynced, `None` for as long as the kernel likes.
    pub fn sync_interval(self) -> Option<Duration> {
        match self {
            FsyncPolicy::Always => Some(Duration::ZERO),
            FsyncPolicy::Everysec => Some(EVERYSEC),
            FsyncPolicy::Never => None,
        }
    }
}

/// The interval of [`FsyncPolicy::Everysec`].
const EVERYSEC: Duration = Duration::from_secs(1);

impl fmt::Display for FsyncPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FsyncPolicy::Always => "always",
            FsyncPolicy::Everysec => "everysec",
            FsyncPolicy::Never => "never",
        })
    }
}
