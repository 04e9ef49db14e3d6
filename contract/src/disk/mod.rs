//! Contract 2: the on-disk format of the shared volume, the one definition cache-node writes
//! and loads and the janitor deletes by.
//!
//! # Layout
//! ```text
//! <data-dir>/<namespace>/<cluster>/          ClusterRoot
//!     20261123T140500Z/                      one directory per expiry bucket (Bucket::dir_name)
//!         <node>/                            one per writing node: a single writer per file
//!             00000000000000000000.seg       append-only segments, numbered in write order
//!     persistent/                            entries without expiry, compacted by cache-node
//! ```
//! Every path component is a validated name ([`ObjectName`], [`Area`], [`SegmentId`]). Keys
//! and values are data inside records and never reach a path.
//!
//! # Modules
//! - `names`: the names above, parsed strictly ("ours" or foreign);
//! - `layout`: [`ClusterRoot`], the paths and listings;
//! - `record`: one record and its encoding, its header tagged under the segment's secret key;
//! - `segment`: the segment header and [`SegmentDecoder`], which tells intact records, damage
//!   in the middle and a torn tail apart, and never takes bytes inside a record (a value that
//!   holds an encoded record) for one;
//! - `writer` / `reader`: [`SegmentWriter`], [`SegmentReader`] and [`AreaReader`] (a whole
//!   area, streamed) on real files.

mod layout;
mod names;
mod reader;
mod record;
mod segment;
mod writer;

use std::path::{Path, PathBuf};

pub use layout::{ClusterRoot, Listing, SegmentFile};
pub use names::{Area, NameError, ObjectName, PERSISTENT_DIR, SegmentId};
pub use reader::{AreaReader, SegmentReader};
pub use record::{
    MAX_KEY_LEN, MAX_VALUE_LEN, RECORD_HEADER_LEN, Record, RecordError, RecordRef, Version,
};
pub use segment::{
    Decoded, FORMAT_VERSION, SEGMENT_HEADER_LEN, SegmentDecoder, SegmentError, segment_header,
};
pub use writer::{SegmentWriter, WriterOptions};

/// A failure reading or writing the shared volume, with the path involved.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    /// A file-system call failed.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// What was being done ("create segment", "sync", ...).
        action: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// The error from the OS.
        source: std::io::Error,
    },
    /// A record the format cannot hold.
    #[error(transparent)]
    Record(#[from] RecordError),
    /// Something other than a directory (a symbolic link, a file) where the layout has one.
    #[error("{} is not a directory (symbolic links are never followed)", path.display())]
    NotADirectory {
        /// The path.
        path: PathBuf,
    },
    /// The OS's random source failed, so a new segment has no key.
    #[error("cannot draw a random key for a new segment in {}: {source}", path.display())]
    RandomKey {
        /// The directory the segment was to be created in.
        path: PathBuf,
        /// The error from the random source.
        source: getrandom::Error,
    },
    /// A file that is not a readable segment.
    #[error("cannot read segment {}: {source}", path.display())]
    Segment {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        source: SegmentError,
    },
}

impl DiskError {
    fn io(action: &'static str, path: &Path, source: std::io::Error) -> DiskError {
        DiskError::Io {
            action,
            path: path.to_path_buf(),
            source,
        }
    }
}

#[cfg(test)]
mod tests;
