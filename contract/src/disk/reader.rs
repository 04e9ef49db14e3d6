//! Reading a segment file back. A segment is bounded by the writer's rotation size, so it is
//! read whole and decoded record by record; a loader holds one segment at a time.

use std::fs;
use std::path::{Path, PathBuf};

use super::{DiskError, SegmentDecoder};

/// The contents of one segment file, ready to decode.
#[derive(Debug, Clone)]
pub struct SegmentReader {
    /// Where it was read from, for error messages.
    path: PathBuf,
    /// The whole file.
    bytes: Vec<u8>,
}

impl SegmentReader {
    /// Reads the segment at `path` and checks its header.
    ///
    /// # Errors
    /// [`DiskError::Io`] if it cannot be read; [`DiskError::Segment`] if it is not a segment
    /// this code can decode.
    pub fn open(path: &Path) -> Result<SegmentReader, DiskError> {
        let bytes = fs::read(path).map_err(|source| DiskError::io("read", path, source))?;
        let reader = SegmentReader {
            path: path.to_path_buf(),
            bytes,
        };
        reader.records()?;
        Ok(reader)
    }

    /// The path it was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file's size in bytes.
    pub fn len(&self) -> u64 {
        self.bytes.len() as u64
    }

    /// Whether the file is empty.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The records, damage and torn tail of the segment, in file order.
    ///
    /// # Errors
    /// [`DiskError::Segment`] if the header is wrong (checked already by `open`).
    pub fn records(&self) -> Result<SegmentDecoder<'_>, DiskError> {
        SegmentDecoder::new(&self.bytes).map_err(|source| DiskError::Segment {
            path: self.path.clone(),
            source,
        })
    }
}
