//! A container's file system view without touching the host's: a root directory in
//! the pod's scratch space that mirrors the host's `/` through bind mounts, with the
//! container's volumes (and the image's entrypoint) bound at their container paths,
//! entered with `chroot` inside a private mount namespace (`unshare --mount`).
//!
//! A path like `/data` or `/var/run/secrets/kubernetes.io/serviceaccount` usually does
//! not exist on the host, and creating it there would change the machine. So every
//! host directory on the way to a mount target is *mirrored*: recreated as a plain
//! directory inside the root with each of its host entries bound (or, for symlinks,
//! copied) individually, except the one entry on the way down, which is mirrored in
//! turn. The missing rest of the path is then created inside the root, i.e. in the
//! scratch space. The mounts live only in the container's mount namespace and vanish
//! with its last process. Unsafe Rust is forbidden in this workspace, so the mounts
//! are made by util-linux's `mount` in a small `sh` script rather than by syscalls.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Component, Path, PathBuf};

use crate::control_plane::{Error, Result};

/// What a container sees at `target` (an absolute container path): the host path
/// `source`, a directory or a single file.
#[derive(Debug, Clone)]
pub struct Mount {
    /// The container path.
    pub target: PathBuf,
    /// The host path bound there.
    pub source: PathBuf,
}

/// Renders the script that sets the host name (of the container's own UTS namespace),
/// builds the container's root under `root` and then runs the container's command in
/// it: `sh -c <script> sh <command...>`.
pub fn script(root: &Path, mounts: &[Mount], hostname: &str) -> Result<String> {
    let mut targets: Vec<(PathBuf, &Mount)> = mounts
        .iter()
        .map(|m| resolve(&m.target).map(|t| (t, m)))
        .collect::<Result<_>>()?;
    targets.sort_by_key(|(t, _)| t.components().count());
    let target_set: BTreeSet<&Path> = targets.iter().map(|(t, _)| t.as_path()).collect();

    // Every existing host directory strictly above a target is mirrored.
    let mut mirrored: BTreeSet<PathBuf> = BTreeSet::from([PathBuf::from("/")]);
    for (target, _) in &targets {
        let mut dir = target.parent();
        while let Some(d) = dir {
            if d.is_dir() && !d.is_symlink() {
                mirrored.insert(d.to_owned());
            }
            dir = d.parent();
        }
    }

    let mut out = String::from("set -e\n");
    let _infallible = writeln!(
        out,
        "echo {} > /proc/sys/kernel/hostname",
        quote(Path::new(hostname))
    );
    let at = |p: &Path| root.join(p.strip_prefix("/").unwrap_or(p));
    for dir in &mirrored {
        line(&mut out, &["mkdir", "-p"], &[&at(dir)]);
        let entries = std::fs::read_dir(dir)
            .map_err(|e| Error::io(format!("listing {} to mirror it", dir.display()), e))?;
        let mut names: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        names.sort();
        for host in names {
            if mirrored.contains(&host) || target_set.contains(host.as_path()) {
                continue;
            }
            // The scratch space (with every pod's root) would otherwise appear inside
            // every root; the container gets an empty directory there instead.
            if is_ancestor_dir(&host, root) {
                line(&mut out, &["mkdir", "-p"], &[&at(&host)]);
                continue;
            }
            let Ok(meta) = std::fs::symlink_metadata(&host) else {
                continue;
            };
            let inside = at(&host);
            if meta.file_type().is_symlink() {
                if let Ok(link) = std::fs::read_link(&host) {
                    line(&mut out, &["ln", "-sfn"], &[&link, &inside]);
                }
            } else if meta.is_dir() {
                line(&mut out, &["mkdir", "-p"], &[&inside]);
                line(&mut out, &["mount", "--rbind"], &[&host, &inside]);
            } else if meta.is_file() {
                line(&mut out, &["touch"], &[&inside]);
                line(&mut out, &["mount", "--bind"], &[&host, &inside]);
            }
        }
    }
    for (target, mount) in &targets {
        let inside = at(target);
        if mount.source.is_dir() {
            line(&mut out, &["mkdir", "-p"], &[&inside]);
        } else {
            if let Some(parent) = inside.parent() {
                line(&mut out, &["mkdir", "-p"], &[parent]);
            }
            line(&mut out, &["touch"], &[&inside]);
        }
        line(&mut out, &["mount", "--bind"], &[&mount.source, &inside]);
    }
    let _infallible = writeln!(out, "exec chroot {} \"$@\"", quote(root));
    Ok(out)
}

/// Whether `dir` is a proper ancestor of `path`.
fn is_ancestor_dir(dir: &Path, path: &Path) -> bool {
    path != dir && path.starts_with(dir)
}

/// The target with the symlinks of its existing part resolved on the host (the root
/// mirrors the host, so this is where the container would end up), e.g.
/// `/var/run/...` → `/run/...`.
fn resolve(target: &Path) -> Result<PathBuf> {
    if !target.is_absolute()
        || target
            .components()
            .any(|c| matches!(c, Component::ParentDir))
    {
        return Err(Error::io(
            format!("mount path {}", target.display()),
            std::io::Error::other("must be absolute without `..`"),
        ));
    }
    let mut existing = target.to_owned();
    let mut rest = Vec::new();
    while !existing.exists() {
        match (existing.file_name(), existing.parent()) {
            (Some(name), Some(parent)) => {
                rest.push(name.to_owned());
                existing = parent.to_owned();
            }
            _ => break,
        }
    }
    let mut resolved = existing
        .canonicalize()
        .map_err(|e| Error::io(format!("resolving {}", existing.display()), e))?;
    resolved.extend(rest.iter().rev());
    Ok(resolved)
}

fn line(out: &mut String, command: &[&str], paths: &[&Path]) {
    out.push_str(&command.join(" "));
    for p in paths {
        out.push(' ');
        out.push_str(&quote(p));
    }
    out.push('\n');
}

/// Single-quotes a path for `sh`.
fn quote(p: &Path) -> String {
    format!("'{}'", p.to_string_lossy().replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_mirrored_not_created_on_the_host() {
        let root = Path::new("/nonexistent-root");
        let script = script(
            root,
            &[Mount {
                target: "/tidecache-e2e-nowhere/data".into(),
                source: "/tmp".into(),
            }],
            "demo-0",
        )
        .expect("script");
        assert!(script.contains("echo 'demo-0' > /proc/sys/kernel/hostname"));
        assert!(script.contains("mkdir -p '/nonexistent-root/tidecache-e2e-nowhere/data'"));
        assert!(
            script.contains("mount --bind '/tmp' '/nonexistent-root/tidecache-e2e-nowhere/data'")
        );
        // The rest of the host is visible through binds.
        assert!(script.contains("mount --rbind '/usr' '/nonexistent-root/usr'"));
        assert!(script.ends_with("exec chroot '/nonexistent-root' \"$@\"\n"));
    }

    #[test]
    fn quoting_survives_quotes() {
        assert_eq!(quote(Path::new("/a'b")), r"'/a'\''b'");
    }
}
