//! Locating the control-plane binaries. They are built from Go modules by
//! `tests/control-plane/build.sh` into a per-version cache outside the repository; the
//! harness runs that script (a no-op once the binaries exist) so that a test never
//! depends on a manual setup step.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use super::error::{Error, Result};

/// Environment variable naming a directory that already holds the binaries; when set,
/// `build.sh` is not run (useful to try a different build).
pub const BIN_DIR_ENV: &str = "TIDECACHE_CONTROL_PLANE_BIN";

/// The directory holding etcd, kube-apiserver, kube-controller-manager, kube-scheduler
/// and kubectl.
#[derive(Debug, Clone)]
pub struct Binaries {
    dir: PathBuf,
}

impl Binaries {
    /// Returns the binaries, building them first if needed. The build runs at most once
    /// per test process (further calls reuse the result); `build.sh` itself serialises
    /// concurrent builds of several test processes with a lock file.
    ///
    /// This blocks for the duration of a cold build (minutes): call it from
    /// `spawn_blocking` in async code.
    pub fn ensure() -> Result<Self> {
        static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
        if let Some(dir) = std::env::var_os(BIN_DIR_ENV) {
            return Ok(Self { dir: dir.into() });
        }
        let script = Self::build_script();
        BUILT
            .get_or_init(|| run_build(&script).map_err(|e| e.to_string()))
            .clone()
            .map(|dir| Self { dir })
            .map_err(|reason| Error::Build { script, reason })
    }

    /// The build script, found relative to this crate so that it works from any clone.
    pub fn build_script() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("control-plane/build.sh")
    }

    /// The directory that holds the binaries.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Path of one binary, e.g. `kubectl`.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

fn run_build(script: &Path) -> Result<PathBuf> {
    let output = Command::new("bash")
        .arg(script)
        .stdin(Stdio::null())
        // Progress (which binary, elapsed time) goes straight to the terminal.
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| Error::io(format!("running {}", script.display()), e))?;
    if !output.status.success() {
        return Err(Error::Build {
            script: script.to_owned(),
            reason: format!("exited with {}", output.status),
        });
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let dir = stdout
        .lines()
        .last()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .ok_or_else(|| Error::Build {
            script: script.to_owned(),
            reason: "printed no output directory".into(),
        })?;
    Ok(PathBuf::from(dir))
}
