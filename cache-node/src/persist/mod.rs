//! Persistence on the shared volume (contract 2), in the format of
//! [`tidecache_contract::disk`]: every acknowledged write and delete is appended to the
//! segment of its expiry bucket in this node's own subdirectory, and a starting node loads
//! every unexpired bucket of every node before it turns ready.
//!
//! # Layout
//! - `policy`: [`FsyncPolicy`], what `--fsync` promises.
//! - `log`: [`Log`], the writer thread: group commit, fsync policy, reverting what could not be
//!   written, stopping on a failed fsync. It is the store's [`Journal`](crate::base::journal::Journal).
//! - `warm_start`: [`warm_start`], loading the volume into the store.
//! - `compaction`: rewriting this node's persistent area (entries without expiry) once it is
//!   mostly garbage.
//! - `metrics`: [`PersistMetrics`].
//!
//! Keys and values are data inside records: every path component is a validated name of the
//! format (namespace, cluster, bucket, node, segment number), so no key can make the node
//! write outside its directory.

mod compaction;
mod log;
mod metrics;
mod policy;
mod warm_start;

#[cfg(test)]
mod tests;

use std::path::PathBuf;

use tidecache_contract::disk::{ClusterRoot, ObjectName, Record};

pub use log::Log;
pub use metrics::PersistMetrics;
pub use policy::FsyncPolicy;
pub use warm_start::{warm_start, warm_start_keys};

/// Where and how this node persists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersistSettings {
    /// The mount point of the shared volume (`--data-dir`).
    pub data_dir: PathBuf,
    /// The CacheCluster's namespace.
    pub namespace: ObjectName,
    /// The CacheCluster's name.
    pub cluster: ObjectName,
    /// This node's name (the pod name): the subdirectory it writes.
    pub node: ObjectName,
    /// When appended records are synced.
    pub fsync: FsyncPolicy,
    /// Segments are rotated at this size.
    pub segment_bytes: u64,
    /// The persistent area is not compacted below this size.
    pub compact_min_bytes: u64,
}

impl PersistSettings {
    /// Default segment size: few large files keep loading and deleting cheap.
    pub const DEFAULT_SEGMENT_BYTES: u64 = 64 * 1024 * 1024;
    /// Default minimum size before the persistent area is compacted.
    pub const DEFAULT_COMPACT_MIN_BYTES: u64 = 64 * 1024 * 1024;

    /// The cluster's directory on the volume.
    pub fn root(&self) -> ClusterRoot {
        ClusterRoot::new(&self.data_dir, &self.namespace, &self.cluster)
    }
}

/// Whether `record` wins over `kept`, an earlier record of the same key: a newer version, or
/// the same version as a value over a tombstone (the tombstone a write leaves in the area it
/// moved the key out of carries the write's own version).
fn supersedes(record: &Record, kept: &Record) -> bool {
    (record.version, record.value.is_some()) > (kept.version, kept.value.is_some())
}
