//! Where things are on the shared volume: `<data-dir>/<namespace>/<cluster>/<area>/<node>/
//! <segment>`. Every component is a validated [`ObjectName`], an [`Area`] or a [`SegmentId`];
//! listing a directory classifies each name as ours or foreign, and foreign names are reported,
//! never read or removed.
//!
//! No listing follows a symbolic link out of the data dir: the namespace and cluster
//! directories are opened with `O_NOFOLLOW` from the data dir before the root is listed, each
//! listed directory is opened with `O_NOFOLLOW`, and an entry that is a link is foreign.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, Dir, FileType, Mode, OFlags};
use rustix::io::Errno;

use super::{Area, DiskError, ObjectName, SegmentId};

/// The directory of one CacheCluster on the shared volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterRoot {
    /// `<data-dir>/<namespace>/<cluster>`.
    path: PathBuf,
    /// The volume's mount point: the one directory reached by following links, since the
    /// admin chose it; every component below it is opened without following any.
    data_dir: PathBuf,
    /// The namespace and cluster components, in order.
    components: [ObjectName; 2],
}

impl ClusterRoot {
    /// The root of cluster `cluster` in namespace `namespace` under the volume mounted at
    /// `data_dir`. Nothing is created or checked on disk.
    pub fn new(data_dir: &Path, namespace: &ObjectName, cluster: &ObjectName) -> ClusterRoot {
        ClusterRoot {
            path: data_dir.join(namespace.as_str()).join(cluster.as_str()),
            data_dir: data_dir.to_path_buf(),
            components: [namespace.clone(), cluster.clone()],
        }
    }

    /// The volume's mount point.
    pub(super) fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The names leading from the data dir to `node`'s directory in `area`.
    pub(super) fn node_components<'a>(
        &'a self,
        area: &'a str,
        node: &'a ObjectName,
    ) -> [&'a str; 4] {
        [
            self.components[0].as_str(),
            self.components[1].as_str(),
            area,
            node.as_str(),
        ]
    }

    /// The root directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The directory of `area`.
    pub fn area_dir(&self, area: Area) -> PathBuf {
        self.path.join(area.dir_name())
    }

    /// The directory `node` writes into within `area`.
    pub fn node_dir(&self, area: Area, node: &ObjectName) -> PathBuf {
        self.area_dir(area).join(node.as_str())
    }

    /// The areas present under the root, oldest bucket first and the persistent area last. A
    /// missing root has no areas.
    ///
    /// # Errors
    /// [`DiskError::NotADirectory`] if the namespace or cluster directory is a link or a file
    /// (it is not followed); [`DiskError::Io`] if the root cannot be listed.
    pub fn list_areas(&self) -> Result<Listing<Area>, DiskError> {
        let empty = Listing {
            items: Vec::new(),
            foreign: Vec::new(),
        };
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let mut dir = match rustix::fs::open(&self.data_dir, flags, Mode::empty()) {
            Ok(dir) => dir,
            Err(Errno::NOENT) => return Ok(empty),
            Err(errno) => {
                return Err(DiskError::io(
                    "open the data directory",
                    &self.data_dir,
                    errno.into(),
                ));
            }
        };
        let mut path = self.data_dir.clone();
        for name in &self.components {
            path.push(name.as_str());
            match open_dir_at(dir.as_fd(), name.as_str(), &path)? {
                Some(child) => dir = child,
                None => return Ok(empty),
            }
        }
        let mut listing = list(&self.path, Kind::Dir, Area::from_dir_name)?;
        listing.items.sort();
        Ok(listing)
    }

    /// The segment files of every node in `area`, in (node, segment number) order, which is
    /// the order each node wrote them in.
    ///
    /// # Errors
    /// [`DiskError::Io`] if a directory cannot be listed.
    pub fn list_segments(&self, area: Area) -> Result<Listing<SegmentFile>, DiskError> {
        let area_dir = self.area_dir(area);
        let nodes = list(&area_dir, Kind::Dir, |name| ObjectName::new(name).ok())?;
        let mut segments = Listing {
            items: Vec::new(),
            foreign: nodes.foreign,
        };
        for node in nodes.items {
            let node_dir = area_dir.join(node.as_str());
            let files = list(&node_dir, Kind::File, SegmentId::from_file_name)?;
            segments
                .items
                .extend(files.items.into_iter().map(|id| SegmentFile {
                    path: node_dir.join(id.file_name()),
                    node: node.clone(),
                    id,
                }));
            segments.foreign.extend(files.foreign);
        }
        segments
            .items
            .sort_by(|a, b| (&a.node, a.id).cmp(&(&b.node, b.id)));
        Ok(segments)
    }
}

/// The result of listing a directory: the names the format produces, parsed, and the others.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing<T> {
    /// Entries that are ours.
    pub items: Vec<T>,
    /// Paths of entries that are not, left alone (worth a log line).
    pub foreign: Vec<PathBuf>,
}

/// One segment file found on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentFile {
    /// Its path.
    pub path: PathBuf,
    /// The node that wrote it.
    pub node: ObjectName,
    /// Its number within the node's directory.
    pub id: SegmentId,
}

/// What an entry of ours must be. Symbolic links never are: a reader never follows one.
#[derive(Clone, Copy)]
enum Kind {
    Dir,
    File,
}

/// Opens the directory `name` in `parent` (at `path`) without following a link; `None` if
/// there is nothing of that name.
///
/// # Errors
/// [`DiskError::NotADirectory`] for a link or a file; [`DiskError::Io`] if it cannot be opened.
pub(super) fn open_dir_at(
    parent: BorrowedFd<'_>,
    name: &str,
    path: &Path,
) -> Result<Option<OwnedFd>, DiskError> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    match rustix::fs::openat(parent, name, flags, Mode::empty()) {
        Ok(dir) => Ok(Some(dir)),
        Err(Errno::NOENT) => Ok(None),
        Err(Errno::LOOP | Errno::NOTDIR) => Err(DiskError::NotADirectory {
            path: path.to_path_buf(),
        }),
        Err(errno) => Err(DiskError::io("open directory", path, errno.into())),
    }
}

/// Lists `dir` (a missing directory is empty), sorting entries into ours (of `kind`, named as
/// `parse` accepts) and foreign. `dir` itself is opened without following a link.
fn list<T>(
    dir: &Path,
    kind: Kind,
    parse: impl Fn(&str) -> Option<T>,
) -> Result<Listing<T>, DiskError> {
    let mut listing = Listing {
        items: Vec::new(),
        foreign: Vec::new(),
    };
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let fd = match rustix::fs::open(dir, flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(Errno::NOENT) => return Ok(listing),
        Err(Errno::LOOP | Errno::NOTDIR) => {
            return Err(DiskError::NotADirectory {
                path: dir.to_path_buf(),
            });
        }
        Err(errno) => return Err(DiskError::io("list", dir, errno.into())),
    };
    let mut entries =
        Dir::read_from(&fd).map_err(|errno| DiskError::io("list", dir, errno.into()))?;
    while let Some(entry) = entries.read() {
        let entry = entry.map_err(|errno| DiskError::io("list", dir, errno.into()))?;
        let name = entry.file_name();
        if matches!(name.to_bytes(), b"." | b"..") {
            continue;
        }
        let path = dir.join(std::ffi::OsStr::from_bytes(name.to_bytes()));
        let file_type = match entry.file_type() {
            FileType::Unknown => rustix::fs::statat(&fd, name, AtFlags::SYMLINK_NOFOLLOW)
                .map(|stat| FileType::from_raw_mode(stat.st_mode))
                .map_err(|errno| DiskError::io("inspect", &path, errno.into()))?,
            known => known,
        };
        let kind_ok = match kind {
            Kind::Dir => file_type == FileType::Directory,
            Kind::File => file_type == FileType::RegularFile,
        };
        match name.to_str().ok().and_then(&parse).filter(|_| kind_ok) {
            Some(item) => listing.items.push(item),
            None => listing.foreign.push(path),
        }
    }
    Ok(listing)
}
