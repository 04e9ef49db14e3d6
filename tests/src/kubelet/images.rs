//! Container images → the binaries cargo builds from this workspace. There is no image
//! registry here; an image is identified by its repository's last path segment
//! (`ghcr.io/tidecache/cache-node:0.1.0` → `cache-node`), which is also the name of
//! the workspace binary its Dockerfile installs as the entrypoint.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::control_plane::{Error, Result};

/// The workspace binaries the manifests' images stand for.
pub const IMAGE_BINARIES: [&str; 3] = ["cache-node", "janitor", "operator"];

/// Where each image's binary is.
#[derive(Debug, Clone)]
pub struct Images {
    binaries: BTreeMap<String, PathBuf>,
}

impl Images {
    /// Builds the three binaries with cargo (a no-op when they are fresh) and records
    /// their paths from cargo's JSON messages, so the target directory need not be
    /// guessed. Runs `$CARGO` (set by `cargo test`/`cargo run`) or `cargo`.
    pub fn build() -> Result<Self> {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut args = vec!["build", "--locked", "--bins", "--message-format=json"];
        for name in IMAGE_BINARIES {
            args.extend(["-p", name]);
        }
        crate::console::say(format!(
            "kubelet: building the images' binaries ({}) with cargo",
            IMAGE_BINARIES.join(", ")
        ));
        let output = Command::new(&cargo)
            .args(&args)
            .current_dir(workspace_root())
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
            .map_err(|e| Error::io(format!("running {}", cargo.to_string_lossy()), e))?;
        if !output.status.success() {
            return Err(Error::io(
                format!("cargo {}", args.join(" ")),
                std::io::Error::other(output.status.to_string()),
            ));
        }
        let mut binaries = BTreeMap::new();
        for line in String::from_utf8_lossy(&output.stdout).lines() {
            let Ok(message) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            let name = message["target"]["name"].as_str().unwrap_or_default();
            if let Some(exe) = message["executable"].as_str()
                && IMAGE_BINARIES.contains(&name)
            {
                binaries.insert(name.to_owned(), PathBuf::from(exe));
            }
        }
        for name in IMAGE_BINARIES {
            if !binaries.contains_key(name) {
                return Err(Error::io(
                    "building the images' binaries",
                    std::io::Error::other(format!("cargo reported no executable {name}")),
                ));
            }
        }
        Ok(Self { binaries })
    }

    /// Copies the binaries into `dir` and returns the copies.
    pub fn snapshot(&self, dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        let mut binaries = BTreeMap::new();
        for (name, path) in &self.binaries {
            let copy = dir.join(name);
            std::fs::copy(path, &copy).map_err(|e| {
                Error::io(
                    format!("copying {} to {}", path.display(), copy.display()),
                    e,
                )
            })?;
            binaries.insert(name.clone(), copy);
        }
        Ok(Self { binaries })
    }

    /// The binary for `image`, if it is one of ours.
    pub fn binary(&self, image: &str) -> Option<&Path> {
        self.binaries
            .get(repository_name(image))
            .map(PathBuf::as_path)
    }
}

/// The workspace's root directory (where `deploy/` and `Cargo.toml` are).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_owned)
}

/// `registry/path/name:tag@digest` → `name`.
fn repository_name(image: &str) -> &str {
    let without_digest = image.split('@').next().unwrap_or(image);
    let last = without_digest.rsplit('/').next().unwrap_or(without_digest);
    last.split(':').next().unwrap_or(last)
}

#[cfg(test)]
mod tests {
    use super::repository_name;

    #[test]
    fn image_names_map_to_their_repository() {
        assert_eq!(
            repository_name("ghcr.io/tidecache/cache-node:0.1.0"),
            "cache-node"
        );
        assert_eq!(repository_name("localhost:5000/janitor"), "janitor");
        assert_eq!(
            repository_name("registry.example/tidecache/operator:1.2@sha256:ab"),
            "operator"
        );
        assert_eq!(repository_name("operator"), "operator");
    }
}
