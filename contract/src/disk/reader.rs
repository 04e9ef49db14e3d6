//! Reading segments back. A segment is bounded by the writer's rotation size, so it is read
//! whole and decoded record by record; [`AreaReader`] streams a whole area (every node's
//! segments) holding one segment in memory at a time.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags};

use super::{Area, ClusterRoot, Decoded, DiskError, SegmentDecoder, SegmentFile};

/// The contents of one segment file, ready to decode.
#[derive(Debug, Clone)]
pub struct SegmentReader {
    /// Where it was read from, for error messages.
    path: PathBuf,
    /// The whole file.
    bytes: Vec<u8>,
}

impl SegmentReader {
    /// Reads the segment at `path` (never through a link: `O_NOFOLLOW`) and checks its
    /// header.
    ///
    /// # Errors
    /// [`DiskError::Io`] if it cannot be read; [`DiskError::Segment`] if it is not a segment
    /// this code can decode.
    pub fn open(path: &Path) -> Result<SegmentReader, DiskError> {
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let mut bytes = Vec::new();
        rustix::fs::open(path, flags, Mode::empty())
            .map(File::from)
            .map_err(std::io::Error::from)
            .and_then(|mut file| file.read_to_end(&mut bytes))
            .map_err(|source| DiskError::io("read", path, source))?;
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

/// Streams every record of one area: each node's segments in the order it wrote them. Errors
/// (an unreadable file, a segment with a bad header) are yielded and the stream goes on with
/// the next segment, so one damaged file never hides the others.
#[derive(Debug)]
pub struct AreaReader {
    /// Segments not opened yet, in order.
    pending: std::vec::IntoIter<SegmentFile>,
    /// The segment being decoded, its contents and the offset of its next item.
    current: Option<(SegmentFile, SegmentReader, usize)>,
}

impl AreaReader {
    /// Lists the segments of `area` under `root`.
    ///
    /// # Errors
    /// [`DiskError::Io`] if a directory cannot be listed.
    pub fn open(root: &ClusterRoot, area: Area) -> Result<AreaReader, DiskError> {
        Ok(AreaReader {
            pending: root.list_segments(area)?.items.into_iter(),
            current: None,
        })
    }

    /// The segment the last item came from.
    pub fn segment(&self) -> Option<&SegmentFile> {
        self.current.as_ref().map(|(segment, _, _)| segment)
    }
}

impl Iterator for AreaReader {
    type Item = Result<Decoded, DiskError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some((_, reader, pos)) = &mut self.current {
                let mut decoder = match reader.records() {
                    Ok(decoder) => decoder.resume_at(*pos),
                    Err(error) => return Some(Err(error)),
                };
                if let Some(item) = decoder.next() {
                    *pos = decoder.position();
                    return Some(Ok(item));
                }
            }
            let segment = self.pending.next()?;
            match SegmentReader::open(&segment.path) {
                Ok(reader) => self.current = Some((segment, reader, 0)),
                Err(error) => {
                    self.current = None;
                    return Some(Err(error));
                }
            }
        }
    }
}
