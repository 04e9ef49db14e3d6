//! The synchronous writer of one node's segments in one area. cache-node wraps it with group
//! commit and its fsync policy; this layer only guarantees that every append is one `write` of
//! whole records, that `sync_data` makes everything appended so far durable, and that a new
//! segment is started (never appended to) on open and when the current one is full.
//!
//! # No symbolic link is followed
//! The writer reaches its directory as the janitor reaches what it deletes: it opens the data
//! dir (the admin's mount point, links allowed), then each component below it (namespace,
//! cluster, area, node) with `mkdirat` and `openat(O_DIRECTORY | O_NOFOLLOW)` relative to the
//! parent's open handle, and creates each segment with `openat(O_CREAT | O_EXCL |
//! O_NOFOLLOW)` relative to the node directory's handle. A link planted in place of any
//! component is refused ([`DiskError::NotADirectory`]) before anything is created beyond it,
//! and a directory swapped for a link after it was opened cannot redirect a write: the handle
//! still refers to the directory that was opened.

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;

use super::record::{self, SegmentKey};
use super::segment::keyed_segment_header;
use super::{Area, ClusterRoot, DiskError, ObjectName, RecordRef, SEGMENT_HEADER_LEN, SegmentId};

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
    /// The same directory, open: segments are created relative to it.
    dir_fd: OwnedFd,
    /// The open segment.
    file: File,
    /// The key its record headers are tagged under.
    key: SegmentKey,
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
    /// Creates the namespace, cluster, area and node directories if needed (never following
    /// a link, see the module documentation) and starts a new segment after any the node
    /// already has there.
    ///
    /// # Errors
    /// [`DiskError::NotADirectory`] if a component is a link or a file (nothing is created
    /// beyond it); [`DiskError::Io`] if a directory or the segment cannot be created.
    pub fn open(
        root: &ClusterRoot,
        area: Area,
        node: &ObjectName,
        options: WriterOptions,
    ) -> Result<SegmentWriter, DiskError> {
        let dir = root.node_dir(area, node);
        let dir_fd = open_node_dir(root, area, node)?;
        let last = root
            .list_segments(area)?
            .items
            .into_iter()
            .filter(|segment| &segment.node == node)
            .map(|segment| segment.id)
            .max();
        let id = last.map_or(SegmentId(0), |id| id.next());
        let (file, key) = create_segment(dir_fd.as_fd(), &dir, id)?;
        Ok(SegmentWriter {
            dir,
            dir_fd,
            file,
            key,
            id,
            len: SEGMENT_HEADER_LEN as u64,
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
            record.encode_keyed(&self.key, &mut self.scratch)?;
        }
        let batch_len = self.scratch.len() as u64;
        let header_len = SEGMENT_HEADER_LEN as u64;
        let full = self.len > header_len && self.len + batch_len > self.options.max_segment_bytes;
        if self.damaged || full {
            self.rotate()?;
            record::retag(&mut self.scratch, &self.key);
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
        (self.file, self.key) = create_segment(self.dir_fd.as_fd(), &self.dir, id)?;
        self.id = id;
        self.len = SEGMENT_HEADER_LEN as u64;
        self.damaged = false;
        Ok(())
    }
}

/// Creates a new segment in `dir` (open as `dir_fd`) under a new random key, writes its
/// header, and syncs it and the directory so that the file exists after a crash. `O_EXCL`
/// and `O_NOFOLLOW`: an existing file or link of that name is never written through.
fn create_segment(
    dir_fd: BorrowedFd<'_>,
    dir: &Path,
    id: SegmentId,
) -> Result<(File, SegmentKey), DiskError> {
    let key = SegmentKey::random().map_err(|source| DiskError::RandomKey {
        path: dir.to_path_buf(),
        source,
    })?;
    let name = id.file_name();
    let path = dir.join(&name);
    let flags = OFlags::WRONLY
        | OFlags::APPEND
        | OFlags::CREATE
        | OFlags::EXCL
        | OFlags::NOFOLLOW
        | OFlags::CLOEXEC;
    let mut file = rustix::fs::openat(dir_fd, name.as_str(), flags, Mode::from_raw_mode(0o666))
        .map(File::from)
        .map_err(|errno| DiskError::io("create segment", &path, errno.into()))?;
    file.write_all(&keyed_segment_header(&key))
        .and_then(|()| file.sync_data())
        .map_err(|source| DiskError::io("write header of", &path, source))?;
    sync_dir(dir_fd, dir)?;
    Ok((file, key))
}

/// Opens `node`'s directory in `area` from the data dir down, creating each missing component
/// with `mkdirat` relative to its parent's handle and syncing the parent that gained it.
fn open_node_dir(root: &ClusterRoot, area: Area, node: &ObjectName) -> Result<OwnedFd, DiskError> {
    let data_dir = root.data_dir();
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let open_data_dir = || {
        rustix::fs::open(data_dir, flags, Mode::empty())
            .map_err(|errno| DiskError::io("open the data directory", data_dir, errno.into()))
    };
    let mut dir = match open_data_dir() {
        // The admin's path, links allowed: created as given if it does not exist yet.
        Err(DiskError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(data_dir)
                .map_err(|source| DiskError::io("create directory", data_dir, source))?;
            open_data_dir()?
        }
        other => other?,
    };
    let mut path = data_dir.to_path_buf();
    let area = area.dir_name();
    for name in root.node_components(&area, node) {
        let parent = path.clone();
        path.push(name);
        dir = create_dir_at(dir.as_fd(), &parent, name, &path)?;
    }
    Ok(dir)
}

/// Creates the directory `name` in `parent` (at `parent_path`) unless it exists, and opens it
/// without following a link.
fn create_dir_at(
    parent: BorrowedFd<'_>,
    parent_path: &Path,
    name: &str,
    path: &Path,
) -> Result<OwnedFd, DiskError> {
    match rustix::fs::mkdirat(parent, name, Mode::from_raw_mode(0o777)) {
        Ok(()) => sync_dir(parent, parent_path)?,
        Err(Errno::EXIST) => {}
        Err(errno) => return Err(DiskError::io("create directory", path, errno.into())),
    }
    // Removed between the two calls (e.g. by a janitor): nothing to write into.
    super::layout::open_dir_at(parent, name, path)?
        .ok_or_else(|| DiskError::io("open directory", path, std::io::ErrorKind::NotFound.into()))
}

/// Makes `dir`'s entries durable.
fn sync_dir(dir: BorrowedFd<'_>, path: &Path) -> Result<(), DiskError> {
    rustix::fs::fsync(dir).map_err(|errno| DiskError::io("sync directory", path, errno.into()))
}
