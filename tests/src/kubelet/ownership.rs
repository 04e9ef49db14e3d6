//! `fsGroup`: a pod's volumes made group-owned by it, group-writable and setgid on
//! directories (so that new files inherit the group), as a kubelet does for volumes
//! that support ownership management. The provisioner's volumes are treated like a
//! CSI driver with `fsGroupPolicy: File`; hostPath volumes are left alone, as in
//! Kubernetes. `OnRootMismatch` skips the walk when the root already matches, which is
//! what keeps a large shared volume from being walked at every pod start.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use crate::control_plane::{Error, Result};

/// Group write (and, for directories, search) plus setgid.
const DIR_BITS: u32 = 0o2070;
const FILE_BITS: u32 = 0o060;

/// Applies `gid` to everything under `root` (not following symlinks).
pub fn apply_fs_group(root: &Path, gid: u32, on_root_mismatch: bool) -> Result<()> {
    let meta = std::fs::symlink_metadata(root)
        .map_err(|e| Error::io(format!("reading {}", root.display()), e))?;
    if on_root_mismatch && meta.gid() == gid && meta.mode() & DIR_BITS == DIR_BITS {
        return Ok(());
    }
    walk(root, gid)
}

fn walk(path: &Path, gid: u32) -> Result<()> {
    let meta = std::fs::symlink_metadata(path)
        .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    if meta.file_type().is_symlink() {
        return Ok(());
    }
    std::os::unix::fs::lchown(path, None, Some(gid))
        .map_err(|e| Error::io(format!("giving {} to group {gid}", path.display()), e))?;
    let bits = if meta.is_dir() { DIR_BITS } else { FILE_BITS };
    let mode = meta.mode() & 0o7777 | bits;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| Error::io(format!("opening {} to group {gid}", path.display()), e))?;
    if meta.is_dir() {
        let entries = std::fs::read_dir(path)
            .map_err(|e| Error::io(format!("listing {}", path.display()), e))?;
        for entry in entries {
            let entry = entry.map_err(|e| Error::io(format!("listing {}", path.display()), e))?;
            walk(&entry.path(), gid)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn everything_becomes_group_writable_and_directories_setgid() {
        let root = tempfile::tempdir().expect("tempdir");
        let sub = root.path().join("default/tidecache");
        std::fs::create_dir_all(&sub).expect("dirs");
        std::fs::write(sub.join("segment"), b"x").expect("file");
        std::fs::set_permissions(sub.join("segment"), std::fs::Permissions::from_mode(0o600))
            .expect("mode");
        // Our own gid, so that the test needs no root.
        let gid = std::fs::metadata(root.path()).expect("meta").gid();
        apply_fs_group(root.path(), gid, false).expect("applied");
        let dir = std::fs::metadata(&sub).expect("meta");
        assert_eq!(dir.mode() & 0o2070, 0o2070);
        let file = std::fs::metadata(sub.join("segment")).expect("meta");
        assert_eq!(file.mode() & 0o7777, 0o660);
        // OnRootMismatch: a matching root stops the walk.
        std::fs::set_permissions(sub.join("segment"), std::fs::Permissions::from_mode(0o600))
            .expect("mode");
        apply_fs_group(root.path(), gid, true).expect("skipped");
        let file = std::fs::metadata(sub.join("segment")).expect("meta");
        assert_eq!(file.mode() & 0o7777, 0o600, "not walked again");
    }
}
