//! The synchronous writer of one node's segments in one area. cache-node wraps it with group
//! commit and its fsync policy; this layer only guarantees that every append is one `write` of
//! whole records, that `sync_data` makes everything appended so far durable, and that a new
//! segment is started (never appended to) on open and when the current one is full.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use super::{Area, ClusterRoot, DiskError, ObjectName, RecordRef, SegmentId, segment_header};

/// How a [`SegmentWriter`] rotates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriterOptions {
    /// A segment that has reached this size is closed and a new one started before the next
    /// append. Few large files keep deletion and loading cheap; a bound keeps one damaged or
    /// loaded file small. A single append larger than this still goes into one segment.
    pub max_segment_bytes: u64,
}

impl Default for WriterOptions {
    fn default() -> Self {
        WriterOptions {
            max_segment_bytes: 64 * 1024 * 1024,
        }
    }
}

/// Appends records to one node's segments in one area.
#[derive(Debug)]
pub struct SegmentWriter {
    /// The node's directory in the area.
    dir: PathBuf,
    /// The open segment.
    file: File,
    /// Its number.
    id: SegmentId,
    /// Its length: header plus every record appended.
    len: u64,
    /// Set when a write failed part-way: the segment may end in a partial record, so the next
    /// append starts a new segment rather than writing after it.
    damaged: bool,
    /// Rotation policy.
    options: WriterOptions,
    /// Reused encoding buffer, so that an append allocates only when a batch outgrows it.
    scratch: Vec<u8>,
}

impl SegmentWriter {
    /// Creates the area and node directories if needed and starts a new segment after any the
    /// node already has there.
    ///
    /// # Errors
    /// [`DiskError::Io`] if a directory or the segment cannot be created.
    pub fn open(
        root: &ClusterRoot,
        area: Area,
        node: &ObjectName,
        options: WriterOptions,
    ) -> Result<SegmentWriter, DiskError> {
        let dir = root.node_dir(area, node);
        create_dirs(&dir)?;
        // A link planted in place of the area or node directory would redirect the writes.
        for own in [root.area_dir(area), dir.clone()] {
            let is_dir = fs::symlink_metadata(&own)
                .map_err(|source| DiskError::io("inspect", &own, source))?
                .is_dir();
            if !is_dir {
                return Err(DiskError::NotADirectory { path: own });
            }
        }
        let last = root
            .list_segments(area)?
            .items
            .into_iter()
            .filter(|segment| &segment.node == node)
            .map(|segment| segment.id)
            .max();
        let id = last.map_or(SegmentId(0), |id| id.next());
        let file = create_segment(&dir, id)?;
        Ok(SegmentWriter {
            dir,
            file,
            id,
            len: segment_header().len() as u64,
            damaged: false,
            options,
            scratch: Vec::new(),
        })
    }

    /// The number of the segment being written.
    pub fn segment_id(&self) -> SegmentId {
        self.id
    }

    /// The path of the segment being written.
    pub fn segment_path(&self) -> PathBuf {
        self.dir.join(self.id.file_name())
    }

    /// Appends one record; returns its offset in the segment [`SegmentWriter::segment_id`].
    ///
    /// # Errors
    /// [`DiskError::Record`] for a record the format cannot hold (nothing written);
    /// [`DiskError::Io`] if writing or rotating failed.
    pub fn append(&mut self, record: RecordRef<'_>) -> Result<u64, DiskError> {
        self.append_batch([record])
    }

    /// Appends records with one `write` (group commit: one call for many writers' records).
    /// Returns the offset of the first one.
    ///
    /// # Errors
    /// As [`SegmentWriter::append`]; if any record is refused, none is written.
    pub fn append_batch<'r>(
        &mut self,
        records: impl IntoIterator<Item = RecordRef<'r>>,
    ) -> Result<u64, DiskError> {
        self.scratch.clear();
        for record in records {
            record.encode(&mut self.scratch)?;
        }
        let batch_len = self.scratch.len() as u64;
        let header_len = segment_header().len() as u64;
        let full = self.len > header_len && self.len + batch_len > self.options.max_segment_bytes;
        if self.damaged || full {
            self.rotate()?;
        }
        let offset = self.len;
        if let Err(source) = self.file.write_all(&self.scratch) {
            self.damaged = true;
            return Err(DiskError::io("append to", &self.segment_path(), source));
        }
        self.len += batch_len;
        Ok(offset)
    }

    /// Makes every record appended so far durable (`fdatasync`). A failure is not retryable:
    /// the kernel may have dropped the dirty pages, so the caller must stop acknowledging
    /// writes and recover from disk.
    ///
    /// # Errors
    /// [`DiskError::Io`] if the sync failed.
    pub fn sync_data(&mut self) -> Result<(), DiskError> {
        self.file
            .sync_data()
            .map_err(|source| DiskError::io("sync", &self.segment_path(), source))
    }

    /// Closes the current segment (durably, also after a failed write: the records before the
    /// partial one must stay covered by the caller's next `sync_data`) and starts the next one.
    fn rotate(&mut self) -> Result<(), DiskError> {
        self.sync_data()?;
        let id = self.id.next();
        self.file = create_segment(&self.dir, id)?;
        self.id = id;
        self.len = segment_header().len() as u64;
        self.damaged = false;
        Ok(())
    }
}

/// Creates a new segment with its header, and syncs it and its directory so that the file
/// exists after a crash.
fn create_segment(dir: &Path, id: SegmentId) -> Result<File, DiskError> {
    let path = dir.join(id.file_name());
    let mut file = OpenOptions::new()
        .append(true)
        .create_new(true)
        .open(&path)
        .map_err(|source| DiskError::io("create segment", &path, source))?;
    file.write_all(&segment_header())
        .and_then(|()| file.sync_data())
        .map_err(|source| DiskError::io("write header of", &path, source))?;
    sync_dir(dir)?;
    Ok(file)
}

/// Creates `dir` and its missing parents, syncing each parent that gained an entry.
fn create_dirs(dir: &Path) -> Result<(), DiskError> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        let parent = if parent.as_os_str().is_empty() {
            Path::new(".")
        } else {
            parent
        };
        create_dirs(parent)?;
        match fs::create_dir(dir) {
            Ok(()) => sync_dir(parent)?,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(source) => return Err(DiskError::io("create directory", dir, source)),
        }
    }
    Ok(())
}

fn sync_dir(dir: &Path) -> Result<(), DiskError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| DiskError::io("sync directory", dir, source))
}
