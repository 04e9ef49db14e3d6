//! Compaction of this node's part of the persistent area (entries without expiry). No janitor
//! ever deletes that area, so overwritten values and tombstones would pile up forever; the
//! log compacts it when it has doubled since the last compaction (and is over a minimum), and
//! the rewrite happens only if at least half of it is garbage.
//!
//! # Procedure (on the log thread, so no append races it)
//! 1. Read every segment of this node in the persistent area; keep the newest record per key.
//! 2. Drop tombstones unless another node's segments hold the key (the tombstone shadows
//!    them); keep every value.
//! 3. Write what is kept to a new segment, numbered after all the others, and sync it.
//! 4. Only then delete the old segments and sync the directory.
//!
//! A crash between 3 and 4 leaves both copies: the same records twice, which loading resolves
//! by version. Other nodes' segments are only read.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};

use tidecache_contract::disk::{
    Area, ClusterRoot, Decoded, DiskError, ObjectName, Record, RecordRef, SegmentReader,
    SegmentWriter, WriterOptions,
};

/// How many bytes of records one append of the rewrite carries.
const REWRITE_CHUNK: usize = 1 << 20;

/// What a compaction did.
#[derive(Debug)]
pub(super) enum Compacted {
    /// The area was rewritten; appends continue in `writer` (`None` if nothing was kept).
    Rewritten {
        writer: Option<SegmentWriter>,
        /// Bytes of this node's persistent segments before.
        before: u64,
        /// And after.
        after: u64,
    },
    /// Less than half was garbage: nothing was changed.
    Skipped {
        /// Bytes of this node's persistent segments.
        bytes: u64,
        /// How many of them were garbage.
        garbage: u64,
    },
}

/// A failed compaction; `fatal` when an fsync failed.
#[derive(Debug)]
pub(super) struct CompactionError {
    pub(super) source: DiskError,
    pub(super) fatal: bool,
}

impl From<DiskError> for CompactionError {
    fn from(source: DiskError) -> CompactionError {
        let fatal = matches!(&source, DiskError::Io { action, .. } if *action == "sync");
        CompactionError { source, fatal }
    }
}

/// The size of this node's persistent segments.
///
/// # Errors
/// [`DiskError::Io`] if the area cannot be listed or a file inspected.
pub(super) fn own_bytes(root: &ClusterRoot, node: &ObjectName) -> Result<u64, DiskError> {
    let mut bytes = 0;
    for segment in root.list_segments(Area::Persistent)?.items {
        if &segment.node == node {
            let meta = fs::metadata(&segment.path).map_err(|source| DiskError::Io {
                action: "inspect",
                path: segment.path.clone(),
                source,
            })?;
            bytes += meta.len();
        }
    }
    Ok(bytes)
}

/// Compacts `node`'s persistent segments under `root` (see the module documentation).
///
/// # Errors
/// [`CompactionError`] if reading, writing or deleting failed; the old segments are then
/// kept. Unreadable segments of other nodes are ignored (their tombstones are kept anyway).
pub(super) fn compact(
    root: &ClusterRoot,
    node: &ObjectName,
    options: WriterOptions,
) -> Result<Compacted, CompactionError> {
    let listing = root.list_segments(Area::Persistent)?;
    let (own, others): (Vec<_>, Vec<_>) = listing
        .items
        .into_iter()
        .partition(|segment| &segment.node == node);
    let mut newest: HashMap<Vec<u8>, Record> = HashMap::new();
    let mut before = 0;
    for segment in &own {
        let reader = SegmentReader::open(&segment.path)?;
        before += reader.len();
        for item in reader.records()? {
            if let Decoded::Record { record, .. } = item {
                match newest.get(&record.key) {
                    Some(kept) if !super::supersedes(&record, kept) => {}
                    _ => {
                        newest.insert(record.key.clone(), record);
                    }
                }
            }
        }
    }
    let mut shadowed: HashSet<Vec<u8>> = HashSet::new();
    for segment in &others {
        let Ok(reader) = SegmentReader::open(&segment.path) else {
            continue;
        };
        let Ok(records) = reader.records() else {
            continue;
        };
        for item in records {
            if let Decoded::Record { record, .. } = item
                && newest
                    .get(&record.key)
                    .is_some_and(|kept| kept.value.is_none())
            {
                shadowed.insert(record.key);
            }
        }
    }
    let kept: Vec<&Record> = newest
        .values()
        .filter(|record| record.value.is_some() || shadowed.contains(&record.key))
        .collect();
    let header = tidecache_contract::disk::SEGMENT_HEADER_LEN as u64;
    let after: u64 = header
        + kept
            .iter()
            .map(|record| record.borrowed().encoded_len() as u64)
            .sum::<u64>();
    let garbage = before.saturating_sub(after);
    if garbage * 2 < before {
        return Ok(Compacted::Skipped {
            bytes: before,
            garbage,
        });
    }
    let writer = if kept.is_empty() {
        None
    } else {
        let mut writer = SegmentWriter::open(root, Area::Persistent, node, options)?;
        let mut chunk: Vec<RecordRef<'_>> = Vec::new();
        let mut chunk_bytes = 0;
        for record in &kept {
            let record = record.borrowed();
            chunk_bytes += record.encoded_len();
            chunk.push(record);
            if chunk_bytes >= REWRITE_CHUNK {
                writer.append_batch(chunk.drain(..))?;
                chunk_bytes = 0;
            }
        }
        writer.append_batch(chunk)?;
        writer.sync_data()?;
        Some(writer)
    };
    for segment in &own {
        fs::remove_file(&segment.path).map_err(|source| DiskError::Io {
            action: "delete",
            path: segment.path.clone(),
            source,
        })?;
    }
    let dir = root.node_dir(Area::Persistent, node);
    File::open(&dir)
        .and_then(|dir| dir.sync_all())
        .map_err(|source| DiskError::Io {
            action: "sync",
            path: dir.clone(),
            source,
        })?;
    Ok(Compacted::Rewritten {
        writer,
        before,
        after: if kept.is_empty() { 0 } else { after },
    })
}
