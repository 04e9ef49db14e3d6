//! Where things are on the shared volume: `<data-dir>/<namespace>/<cluster>/<area>/<node>/
//! <segment>`. Every component is a validated [`ObjectName`], an [`Area`] or a [`SegmentId`];
//! listing a directory classifies each name as ours or foreign, and foreign names are reported,
//! never read or removed.

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};

use super::{Area, DiskError, ObjectName, SegmentId};

/// The directory of one CacheCluster on the shared volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterRoot {
    /// `<data-dir>/<namespace>/<cluster>`.
    path: PathBuf,
}

impl ClusterRoot {
    /// The root of cluster `cluster` in namespace `namespace` under the volume mounted at
    /// `data_dir`. Nothing is created or checked on disk.
    pub fn new(data_dir: &Path, namespace: &ObjectName, cluster: &ObjectName) -> ClusterRoot {
        ClusterRoot {
            path: data_dir.join(namespace.as_str()).join(cluster.as_str()),
        }
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
    /// [`DiskError::Io`] if the root cannot be listed.
    pub fn list_areas(&self) -> Result<Listing<Area>, DiskError> {
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

/// Lists `dir` (a missing directory is empty), sorting entries into ours (of `kind`, named as
/// `parse` accepts) and foreign.
fn list<T>(
    dir: &Path,
    kind: Kind,
    parse: impl Fn(&str) -> Option<T>,
) -> Result<Listing<T>, DiskError> {
    let mut listing = Listing {
        items: Vec::new(),
        foreign: Vec::new(),
    };
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(listing),
        Err(source) => return Err(DiskError::io("list", dir, source)),
    };
    for entry in entries {
        let entry = entry.map_err(|source| DiskError::io("list", dir, source))?;
        let name: OsString = entry.file_name();
        let file_type = entry
            .file_type()
            .map_err(|source| DiskError::io("inspect", &dir.join(&name), source))?;
        let kind_ok = match kind {
            Kind::Dir => file_type.is_dir(),
            Kind::File => file_type.is_file(),
        };
        match name.to_str().and_then(&parse).filter(|_| kind_ok) {
            Some(item) => listing.items.push(item),
            None => listing.foreign.push(dir.join(name)),
        }
    }
    Ok(listing)
}
