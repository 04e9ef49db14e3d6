//! A data volume that can lose what a machine crash loses.
//!
//! SIGKILL of cache-node loses nothing the process wrote: the page cache outlives it, so a
//! kill alone cannot tell `--fsync always` from `never`. A crash of the machine loses every
//! write not yet on the disk. This volume is an ext4 file system of its own on a loop device;
//! [`Volume::crash`] aborts its journal (ext4's `trigger_fs_error` with `errors=remount-ro`),
//! after which nothing more reaches the disk and the page cache of the file system is dropped
//! at unmount: mounted again, it holds what was synced, the journal's committed state, as
//! after a power cut. Unlike a filesystem in user space or a preloaded library, what is
//! tested is the kernel's own fsync, and no `unsafe` ioctl is needed (the crash is a sysfs
//! write). One leniency: what ext4 had sent to the loop device survives even if it was never
//! flushed, as if the disk had no volatile cache.
//!
//! Needs root (loop devices, mount) and `losetup`, `mkfs.ext4`, `e2fsck`, `mount` and
//! `umount` (util-linux and e2fsprogs). A test process killed mid-test leaves the mount and
//! the loop device behind (`umount /tmp/.tmp*/mnt; losetup -D` clears them).

use std::path::{Path, PathBuf};
use std::process::Command;

/// Size of the file system; sparse, so only what is written takes space.
const SIZE: &str = "512M";

/// A loop-mounted ext4 file system in a temporary directory, unmounted and detached on drop.
pub struct Volume {
    /// `/dev/loopN`.
    device: String,
    /// Where it is mounted.
    mount: PathBuf,
    mounted: bool,
    /// Holds the backing file and the mount point.
    _dir: tempfile::TempDir,
}

impl Volume {
    /// Creates, formats and mounts the volume.
    ///
    /// # Panics
    ///
    /// If not root, or a tool fails, with its output.
    pub fn new() -> Volume {
        assert!(
            rustix::process::geteuid().is_root(),
            "a crashable volume needs root: it attaches a loop device and mounts it"
        );
        let dir = tempfile::tempdir().expect("volume directory");
        let image = dir.path().join("disk.img");
        let mount = dir.path().join("mnt");
        std::fs::create_dir(&mount).expect("mount point");
        run(Command::new("truncate").args(["-s", SIZE]).arg(&image));
        let device = run(Command::new("losetup")
            .args(["--find", "--show"])
            .arg(&image))
        .trim()
        .to_string();
        let mut volume = Volume {
            device,
            mount,
            mounted: false,
            _dir: dir,
        };
        run(Command::new("mkfs.ext4").args(["-q", "-F", &volume.device]));
        volume.mount();
        volume
    }

    /// The mount point, to give as `--data-dir`.
    pub fn path(&self) -> &Path {
        &self.mount
    }

    /// The machine crashes: the journal is aborted and the file system turns read-only, so
    /// what was not synced never reaches the disk. Kill the processes using the volume next
    /// (their writes fail from now on), then [`Volume::recover`].
    pub fn crash(&self) {
        let name = self.device.trim_start_matches("/dev/");
        std::fs::write(
            format!("/sys/fs/ext4/{name}/trigger_fs_error"),
            "simulated machine crash",
        )
        .expect("trigger_fs_error");
    }

    /// The machine restarts: the file system is unmounted (dropping its page cache), checked
    /// (clearing the error the crash recorded and replaying the journal) and mounted again.
    pub fn recover(&mut self) {
        self.unmount();
        // Exit status 1 (or 2) means errors were corrected: the one the crash recorded. 8 is
        // an operational error, e.g. the device still busy right after the unmount on a
        // loaded machine: try again.
        let mut attempts = 0;
        loop {
            attempts += 1;
            let status = Command::new("e2fsck")
                .args(["-f", "-y", &self.device])
                .output()
                .expect("e2fsck runs");
            match status.status.code() {
                Some(0..=2) => break,
                Some(8) if attempts < 10 => {
                    std::thread::sleep(std::time::Duration::from_millis(200))
                }
                _ => panic!("e2fsck {} (attempt {attempts}): {status:?}", self.device),
            }
        }
        self.mount();
    }

    fn mount(&mut self) {
        run(Command::new("mount")
            .args(["-o", "errors=remount-ro", &self.device])
            .arg(&self.mount));
        self.mounted = true;
    }

    fn unmount(&mut self) {
        run(Command::new("umount").arg(&self.mount));
        self.mounted = false;
    }
}

impl Default for Volume {
    fn default() -> Volume {
        Volume::new()
    }
}

impl Drop for Volume {
    fn drop(&mut self) {
        if self.mounted {
            // Lazily: a process of a failed test may still hold files open.
            let _ = Command::new("umount").arg("-l").arg(&self.mount).status();
        }
        let _ = Command::new("losetup").args(["-d", &self.device]).status();
    }
}

/// Runs a tool; its stdout.
fn run(command: &mut Command) -> String {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("{command:?}: {e}"));
    assert!(output.status.success(), "{command:?}: {output:?}");
    String::from_utf8_lossy(&output.stdout).into_owned()
}
