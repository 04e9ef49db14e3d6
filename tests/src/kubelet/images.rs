//! The container images the test kubelet runs: real OCI images of this workspace's
//! binaries, built without a registry and unpacked for runc.
//!
//! Why real images: a pod should run what a cluster would run, an image holding only its
//! binary, the libraries it loads and its own `/etc/passwd`, as its configured user with its
//! entrypoint and environment, so that a missing library, a file the binary expects on the
//! host or a permission the non-root user lacks fails here and not in production.
//!
//! [`Images::build`] builds the binaries with cargo, then `tests/images/build.sh` turns
//! them into OCI image layouts (`<target>/tidecache-images/<name>/`, one layout per image
//! name, one `index.json` entry per tag), together with the test-only [`TOOLBOX`] for client
//! pods. [`Images::snapshot`] unpacks every tag into a directory of the kubelet's, one root
//! file system per manifest digest, so that a rebuild during a long run (the layouts are
//! rewritten by every build) does not change what pods restart with.
//!
//! There is no registry, so an image reference resolves locally: a reference
//! `[registry/][path/]name[:tag][@sha256:digest]` names the layout whose directory is the
//! reference's **last path segment** (`ghcr.io/tidecache/cache-node:0.1.0` → layout
//! `cache-node`, tag `0.1.0`; `tidecache-test/toolbox:latest` → `toolbox`), the tag defaults
//! to `latest`, and with a digest the manifest of that digest is taken (as in Kubernetes, the
//! digest wins over a tag). The registry and path are not checked: the manifests name
//! `ghcr.io/tidecache/...`, the build names its images `tidecache/...`.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::ffi::OsString;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use serde::Deserialize;

use crate::control_plane::{Error, Result};

/// The workspace binaries the manifests' images stand for.
pub const IMAGE_BINARIES: [&str; 3] = ["cache-node", "janitor", "operator"];
/// Tags every build gets besides the workspace version: the next patch version, so the e2e
/// can roll an image tag change (same content).
pub const EXTRA_TAGS: [&str; 1] = ["0.1.1"];
/// The test-only image with a shell, python3 and redis-cli for client pods.
pub const TOOLBOX: &str = "tidecache-test/toolbox:latest";

/// The directory under cargo's target dir that `build.sh` writes the layouts to.
const LAYOUTS_DIR: &str = "tidecache-images";

/// The built image layouts and, after [`Images::snapshot`], the unpacked images.
#[derive(Debug, Clone)]
pub struct Images {
    /// Where `build.sh` wrote the layouts.
    layouts: PathBuf,
    /// The unpacked images by (layout name, tag); empty until snapshotted.
    images: BTreeMap<(String, String), Image>,
}

/// One unpacked image: its root file system and its configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    /// The image as resolved, `repository:tag` (e.g. `tidecache/cache-node:0.1.0`).
    pub reference: String,
    /// The manifest's digest, `sha256:...`.
    pub digest: String,
    /// The unpacked root: a read-only lower layer, never written by pods.
    pub rootfs: PathBuf,
    /// The config's `Entrypoint` (empty when unset).
    pub entrypoint: Vec<String>,
    /// The config's `Cmd` (empty when unset).
    pub cmd: Vec<String>,
    /// The config's `Env`, `K=V`.
    pub env: Vec<String>,
    /// The config's `User` (e.g. `65532:65532`), if set.
    pub user: Option<String>,
    /// The config's `WorkingDir`, if set.
    pub working_dir: Option<String>,
}

impl Images {
    /// Builds the three binaries with cargo (debug; a no-op when they are fresh), taking
    /// their paths from cargo's JSON messages so the target directory need not be guessed,
    /// then runs `tests/images/build.sh` to make the images (tags: the workspace version and
    /// [`EXTRA_TAGS`]) and the [`TOOLBOX`] into `<target>/tidecache-images`. Runs `$CARGO`
    /// (set by `cargo test`/`cargo run`) or `cargo`. The script's progress goes to stderr.
    pub fn build() -> Result<Self> {
        let binaries = build_binaries()?;
        let bin_dir = binaries
            .get(IMAGE_BINARIES[0])
            .and_then(|exe| exe.parent())
            .map(Path::to_owned)
            .unwrap_or_default();
        for (name, exe) in &binaries {
            if exe.parent() != Some(bin_dir.as_path()) {
                return Err(Error::io(
                    "building the images' binaries",
                    std::io::Error::other(format!(
                        "{name} is at {}, not in {} with the others",
                        exe.display(),
                        bin_dir.display()
                    )),
                ));
            }
        }
        // target/debug/x: the target dir is two levels up from the executables.
        let target = bin_dir.parent().map(Path::to_owned).unwrap_or_default();
        let layouts = target.join(LAYOUTS_DIR);

        let script = workspace_root().join("tests/images/build.sh");
        let mut args: Vec<String> = vec!["--binaries".into(), bin_dir.display().to_string()];
        for tag in std::iter::once(env!("CARGO_PKG_VERSION")).chain(EXTRA_TAGS) {
            args.extend(["--tag".into(), tag.into()]);
        }
        args.extend([
            "--toolbox".into(),
            "--out".into(),
            layouts.display().to_string(),
        ]);
        let command = format!("bash {} {}", script.display(), args.join(" "));
        crate::console::say(format!("kubelet: building the images: {command}"));
        let status = Command::new("bash")
            .arg(&script)
            .args(&args)
            .current_dir(workspace_root())
            .stdin(Stdio::null())
            .stdout(Stdio::inherit())
            .stderr(Stdio::inherit())
            .status()
            .map_err(|e| Error::io(format!("running {command}"), e))?;
        if !status.success() {
            return Err(Error::Build {
                script,
                reason: format!("{status} from `{command}` (its output is above)"),
            });
        }
        Ok(Self {
            layouts,
            images: BTreeMap::new(),
        })
    }

    /// Unpacks every tag of every layout under the build's output into `dir` (one root
    /// file system per manifest digest, shared by the tags with that digest), so that a
    /// rebuild during a long run does not change what pods restart with. Returns the store
    /// pods resolve against. Holds a shared lock on the layouts meanwhile, so a concurrent
    /// `build.sh` (which rewrites them under the exclusive lock) waits.
    pub fn snapshot(&self, dir: &Path) -> Result<Self> {
        let started = Instant::now();
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        let lock_path = self.layouts.join(".lock");
        let lock = File::options()
            .create(true)
            .append(true)
            .open(&lock_path)
            .map_err(|e| Error::io(format!("opening {}", lock_path.display()), e))?;
        rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockShared)
            .map_err(|e| Error::io(format!("locking {}", lock_path.display()), e.into()))?;

        let mut images = BTreeMap::new();
        for name in layout_names(&self.layouts)? {
            let layout = self.layouts.join(&name);
            let mut unpacked: BTreeMap<String, Image> = BTreeMap::new();
            for (tag, descriptor) in read_index(&layout)? {
                if !unpacked.contains_key(&descriptor.digest) {
                    let image = unpack(&layout, &descriptor, dir)?;
                    unpacked.insert(descriptor.digest.clone(), image);
                }
                let mut image = unpacked[&descriptor.digest].clone();
                image.reference = format!("{}:{tag}", repository(&name));
                images.insert((name.clone(), tag), image);
            }
        }
        drop(lock);
        crate::console::say(format!(
            "kubelet: unpacked {} image tags into {} in {:.1?}",
            images.len(),
            dir.display(),
            started.elapsed()
        ));
        Ok(Self {
            layouts: self.layouts.clone(),
            images,
        })
    }

    /// Where the OCI image layouts are (`<name>/` per image, one index entry per tag), for
    /// a runtime that imports them itself (containerd, in `tests/real_kubelet.rs`).
    pub fn layouts(&self) -> &Path {
        &self.layouts
    }

    /// The unpacked image an image reference names, or why not (the message a user sees in
    /// the container's waiting state, like a real kubelet's ErrImagePull).
    pub fn resolve(&self, reference: &str) -> std::result::Result<&Image, String> {
        let parsed = Reference::parse(reference)?;
        if self.images.is_empty() {
            return Err(format!(
                "image {reference:?} not found: no images are unpacked (Images::snapshot was \
                 not called, or tests/images/build.sh built none into {})",
                self.layouts.display()
            ));
        }
        let found = match parsed.digest {
            Some(digest) => self
                .images
                .iter()
                .find(|((name, _), image)| name == parsed.name && image.digest == digest),
            None => self
                .images
                .get_key_value(&(parsed.name.to_owned(), parsed.tag.to_owned())),
        };
        found
            .map(|(_, image)| image)
            .ok_or_else(|| format!("image {reference:?} not found: {}", self.built()))
    }

    /// What exists, for the not-found message: `tests/images/build.sh built
    /// cache-node:{0.1.0,0.1.1}, …, toolbox:latest`.
    fn built(&self) -> String {
        let mut tags: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (name, tag) in self.images.keys() {
            tags.entry(name).or_default().push(tag);
        }
        let list: Vec<String> = tags
            .iter()
            .map(|(name, tags)| match tags.as_slice() {
                [tag] => format!("{name}:{tag}"),
                tags => format!("{name}:{{{}}}", tags.join(",")),
            })
            .collect();
        format!("tests/images/build.sh built {}", list.join(", "))
    }
}

/// The workspace's root directory (where `deploy/` and `Cargo.toml` are).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_owned)
}

/// `cargo build` of the three binaries; their paths from cargo's JSON messages.
fn build_binaries() -> Result<BTreeMap<String, PathBuf>> {
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
    Ok(binaries)
}

/// The repository a layout's images were built as (`build.sh`): `tidecache/<name>`, the
/// toolbox `tidecache-test/toolbox`.
fn repository(layout: &str) -> String {
    let toolbox = Reference::parse(TOOLBOX)
        .map(|r| r.name)
        .unwrap_or_default();
    if layout == toolbox {
        TOOLBOX
            .rsplit_once(':')
            .map_or(TOOLBOX, |(repo, _)| repo)
            .to_owned()
    } else {
        format!("tidecache/{layout}")
    }
}

/// An image reference as the kubelet resolves it.
#[derive(Debug, PartialEq, Eq)]
struct Reference<'a> {
    /// The last path segment: the layout's name.
    name: &'a str,
    /// The tag, `latest` when none is given.
    tag: &'a str,
    /// `sha256:<hex>`, if given.
    digest: Option<&'a str>,
}

impl<'a> Reference<'a> {
    /// `[registry[:port]/][path/]name[:tag][@sha256:digest]`.
    fn parse(reference: &'a str) -> std::result::Result<Self, String> {
        let invalid = |why: &str| format!("invalid image reference {reference:?}: {why}");
        let (rest, digest) = match reference.split_once('@') {
            Some((rest, digest)) => {
                let hex = digest
                    .strip_prefix("sha256:")
                    .ok_or_else(|| invalid("only sha256 digests are supported"))?;
                if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
                    return Err(invalid("a sha256 digest has 64 lowercase hex digits"));
                }
                (rest, Some(digest))
            }
            None => (reference, None),
        };
        // A registry's port is before the last '/', a tag after it.
        let last = rest.rsplit('/').next().unwrap_or(rest);
        let (name, tag) = match last.split_once(':') {
            Some((name, tag)) => (name, tag),
            None => (last, "latest"),
        };
        if name.is_empty() {
            return Err(invalid("no repository name"));
        }
        if tag.is_empty() {
            return Err(invalid("empty tag"));
        }
        Ok(Self { name, tag, digest })
    }
}

// The parts of the OCI image layout, index, manifest and config (image-spec v1) this reads.

#[derive(Debug, Deserialize)]
struct Index {
    manifests: Vec<Descriptor>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Descriptor {
    media_type: String,
    digest: String,
    size: u64,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
struct Manifest {
    config: Descriptor,
    layers: Vec<Descriptor>,
}

#[derive(Debug, Deserialize)]
struct ConfigFile {
    #[serde(default)]
    config: Option<Config>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Config {
    entrypoint: Option<Vec<String>>,
    cmd: Option<Vec<String>>,
    env: Option<Vec<String>>,
    user: Option<String>,
    working_dir: Option<String>,
}

const REF_NAME: &str = "org.opencontainers.image.ref.name";
const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// The layouts under `dir`: its subdirectories with an `index.json`.
fn layout_names(dir: &Path) -> Result<BTreeSet<String>> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| Error::io(format!("reading {}", dir.display()), e))?;
    let mut names = BTreeSet::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(format!("reading {}", dir.display()), e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with('.') && entry.path().join("index.json").is_file() {
            names.insert(name);
        }
    }
    Ok(names)
}

/// A layout's tags and their manifests (entries without a tag are ignored).
fn read_index(layout: &Path) -> Result<Vec<(String, Descriptor)>> {
    let path = layout.join("index.json");
    let text =
        std::fs::read(&path).map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    let index: Index = serde_json::from_slice(&text).map_err(|e| {
        Error::io(
            format!("parsing {}", path.display()),
            std::io::Error::other(e),
        )
    })?;
    let mut tags = Vec::new();
    for descriptor in index.manifests {
        let Some(tag) = descriptor.annotations.get(REF_NAME).cloned() else {
            continue;
        };
        if descriptor.media_type != MANIFEST {
            return Err(corrupt(
                &path,
                format!(
                    "tag {tag} is a {}, not an image manifest",
                    descriptor.media_type
                ),
            ));
        }
        tags.push((tag, descriptor));
    }
    Ok(tags)
}

fn corrupt(path: &Path, why: impl Into<String>) -> Error {
    Error::io(
        format!("reading the image layout at {}", path.display()),
        std::io::Error::new(std::io::ErrorKind::InvalidData, why.into()),
    )
}

/// Unpacks the image of `manifest` into `<dir>/<hex of its digest>/rootfs` (reused when a
/// previous snapshot into `dir` finished it).
fn unpack(layout: &Path, manifest: &Descriptor, dir: &Path) -> Result<Image> {
    let manifest_bytes = read_blob(layout, manifest)?;
    let parsed: Manifest = serde_json::from_slice(&manifest_bytes)
        .map_err(|e| corrupt(layout, format!("manifest {}: {e}", manifest.digest)))?;
    let config_bytes = read_blob(layout, &parsed.config)?;
    let config = serde_json::from_slice::<ConfigFile>(&config_bytes)
        .map_err(|e| corrupt(layout, format!("config {}: {e}", parsed.config.digest)))?
        .config
        .unwrap_or_default();

    let hex = digest_hex(&manifest.digest).map_err(|why| corrupt(layout, why))?;
    let rootfs = dir.join(hex).join("rootfs");
    if !rootfs.is_dir() {
        let partial = dir.join(hex).join("rootfs.partial");
        if partial.exists() {
            std::fs::remove_dir_all(&partial)
                .map_err(|e| Error::io(format!("removing {}", partial.display()), e))?;
        }
        std::fs::create_dir_all(&partial)
            .map_err(|e| Error::io(format!("creating {}", partial.display()), e))?;
        for layer in &parsed.layers {
            apply_blob(layout, layer, &partial)?;
        }
        std::fs::rename(&partial, &rootfs).map_err(|e| {
            Error::io(
                format!("renaming {} to {}", partial.display(), rootfs.display()),
                e,
            )
        })?;
    }
    let non_empty = |value: Option<String>| value.filter(|v| !v.is_empty());
    Ok(Image {
        reference: String::new(),
        digest: manifest.digest.clone(),
        rootfs,
        entrypoint: config.entrypoint.unwrap_or_default(),
        cmd: config.cmd.unwrap_or_default(),
        env: config.env.unwrap_or_default(),
        user: non_empty(config.user),
        working_dir: non_empty(config.working_dir),
    })
}

/// `sha256:<64 hex>` → the hex.
fn digest_hex(digest: &str) -> std::result::Result<&str, String> {
    match digest.strip_prefix("sha256:") {
        Some(hex) if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) => Ok(hex),
        _ => Err(format!("unsupported digest {digest:?} (only sha256)")),
    }
}

fn blob_path(layout: &Path, descriptor: &Descriptor) -> Result<PathBuf> {
    let hex = digest_hex(&descriptor.digest).map_err(|why| corrupt(layout, why))?;
    Ok(layout.join("blobs/sha256").join(hex))
}

/// A small blob (manifest, config), verified.
fn read_blob(layout: &Path, descriptor: &Descriptor) -> Result<Vec<u8>> {
    let path = blob_path(layout, descriptor)?;
    let bytes =
        std::fs::read(&path).map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    let sha256 = ring::digest::digest(&ring::digest::SHA256, &bytes);
    verify(&path, descriptor, bytes.len() as u64, sha256.as_ref())?;
    Ok(bytes)
}

fn verify(path: &Path, descriptor: &Descriptor, size: u64, sha256: &[u8]) -> Result<()> {
    let actual = format!("sha256:{}", to_hex(sha256));
    if actual != descriptor.digest || size != descriptor.size {
        return Err(corrupt(
            path,
            format!(
                "corrupt image blob {}: expected {} ({} bytes), read {actual} ({size} bytes)",
                path.display(),
                descriptor.digest,
                descriptor.size
            ),
        ));
    }
    Ok(())
}

fn to_hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Hashes and counts what is read through it. ring's SHA-256 is assembly, fast also in
/// the unoptimized test builds (sha2 at opt-level 0 took 4.1 s for the toolbox's 200 MB
/// layer, ring 0.17 s).
struct Hashing<R> {
    inner: R,
    hasher: ring::digest::Context,
    size: u64,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }
}

/// Applies a layer blob onto `root`, verifying it as it streams (a corrupt blob fails the
/// snapshot, whose partial root is then never used).
fn apply_blob(layout: &Path, layer: &Descriptor, root: &Path) -> Result<()> {
    let path = blob_path(layout, layer)?;
    let file =
        File::open(&path).map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
    let mut hashing = Hashing {
        inner: BufReader::with_capacity(1 << 20, file),
        hasher: ring::digest::Context::new(&ring::digest::SHA256),
        size: 0,
    };
    let context = || format!("unpacking layer {} into {}", path.display(), root.display());
    match layer.media_type.as_str() {
        "application/vnd.oci.image.layer.v1.tar"
        | "application/vnd.docker.image.rootfs.diff.tar" => {
            apply_layer(root, &mut hashing).map_err(|e| Error::io(context(), e))?;
        }
        "application/vnd.oci.image.layer.v1.tar+gzip"
        | "application/vnd.docker.image.rootfs.diff.tar.gzip" => {
            let mut gz = flate2::read::GzDecoder::new(&mut hashing);
            apply_layer(root, &mut gz).map_err(|e| Error::io(context(), e))?;
            std::io::copy(&mut gz, &mut std::io::sink()).map_err(|e| Error::io(context(), e))?;
        }
        other => {
            return Err(corrupt(
                layout,
                format!("layer {} has unsupported media type {other}", layer.digest),
            ));
        }
    }
    // The tar reader stops at the end-of-archive blocks: hash the rest too.
    std::io::copy(&mut hashing, &mut std::io::sink())
        .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    let size = hashing.size;
    verify(&path, layer, size, hashing.hasher.finish().as_ref())
}

const WHITEOUT: &str = ".wh.";
const OPAQUE: &str = ".wh..wh..opq";

/// Applies one layer (an uncompressed tar stream) onto `root` as the OCI image spec's
/// changeset: entries replace what lower layers had at their path (a directory over a
/// directory merges), `.wh.<name>` deletes `<name>`, `.wh..wh..opq` hides everything lower
/// layers put into its directory. Modes, ownership (we run as root), mtimes and symlinks
/// are kept; entries whose path leaves the root (`..`, absolute) are refused, and paths are
/// resolved inside the root (a symlink of a lower layer never leads out of it). Device nodes
/// and FIFOs are skipped: the runtime provides `/dev`.
fn apply_layer(root: &Path, reader: impl Read) -> std::io::Result<()> {
    let mut archive = tar::Archive::new(reader);
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(true);
    archive.set_preserve_mtime(true);
    archive.set_overwrite(true);
    // The paths this layer wrote: an opaque marker hides only the lower layers' entries.
    let mut written: HashSet<PathBuf> = HashSet::new();
    for entry in archive.entries()? {
        let mut entry = entry?;
        let raw = entry.path()?.into_owned();
        let path = relative_inside(&raw)?;
        let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
            continue; // the root itself
        };
        let name = name.to_string_lossy().into_owned();
        let parent_dir = resolve_in_root(root, parent)?;
        if name == OPAQUE {
            if parent_dir.is_dir() {
                for child in std::fs::read_dir(&parent_dir)? {
                    let child = child?;
                    if !written.contains(&parent.join(child.file_name())) {
                        remove(&child.path())?;
                    }
                }
            }
            continue;
        }
        if let Some(hidden) = name.strip_prefix(WHITEOUT) {
            remove(&parent_dir.join(hidden))?;
            continue;
        }
        let kind = entry.header().entry_type();
        if kind.is_character_special() || kind.is_block_special() || kind.is_fifo() {
            continue;
        }
        let target = parent_dir.join(&name);
        if let Ok(existing) = std::fs::symlink_metadata(&target)
            && !(existing.is_dir() && kind.is_dir())
        {
            remove(&target)?;
        }
        std::fs::create_dir_all(&parent_dir)?;
        if kind.is_hard_link() {
            let link = entry
                .link_name()?
                .ok_or_else(|| invalid_entry(&raw, "a hard link without a target".to_owned()))?;
            let link = relative_inside(&link)?;
            let source = match (link.parent(), link.file_name()) {
                (Some(dir), Some(file)) => resolve_in_root(root, dir)?.join(file),
                _ => return Err(invalid_entry(&raw, "a hard link to the root".to_owned())),
            };
            std::fs::hard_link(&source, &target)?;
        } else {
            entry.unpack(&target)?;
        }
        written.insert(path);
    }
    Ok(())
}

fn invalid_entry(path: &Path, why: String) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        format!("layer entry {}: {why}", path.display()),
    )
}

/// A layer entry's path as a plain relative path; `..` or an absolute path is refused.
fn relative_inside(path: &Path) -> std::io::Result<PathBuf> {
    let mut clean = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => clean.push(part),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                return Err(invalid_entry(path, "escapes the image's root".to_owned()));
            }
        }
    }
    Ok(clean)
}

/// `rel` (relative to `root`) with its symlinks resolved as if `root` were `/`: absolute
/// targets restart at `root`, `..` stops at it. Missing components are kept as they are.
fn resolve_in_root(root: &Path, rel: &Path) -> std::io::Result<PathBuf> {
    let mut resolved = PathBuf::new();
    let mut pending: Vec<OsString> = rel
        .components()
        .rev()
        .map(|c| c.as_os_str().to_owned())
        .collect();
    let mut links = 0;
    while let Some(part) = pending.pop() {
        if part == "." || part == "/" || part.is_empty() {
            continue;
        }
        if part == ".." {
            resolved.pop();
            continue;
        }
        let candidate = resolved.join(&part);
        let full = root.join(&candidate);
        match std::fs::symlink_metadata(&full) {
            Ok(meta) if meta.file_type().is_symlink() => {
                links += 1;
                if links > 40 {
                    return Err(invalid_entry(rel, "too many levels of symlinks".to_owned()));
                }
                let target = std::fs::read_link(&full)?;
                if target.is_absolute() {
                    resolved = PathBuf::new();
                }
                pending.extend(target.components().rev().map(|c| c.as_os_str().to_owned()));
            }
            _ => resolved = candidate,
        }
    }
    Ok(root.join(resolved))
}

/// Removes a file, symlink or directory tree; nothing when it is not there.
fn remove(path: &Path) -> std::io::Result<()> {
    let result = match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(e) => Err(e),
    };
    match result {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::{Reference, apply_layer, relative_inside, repository};

    /// `registry/path/name:tag@digest` → `name`.
    fn repository_name(image: &str) -> &str {
        Reference::parse(image).map_or(image, |r| r.name)
    }
    use std::path::Path;

    #[test]
    fn image_names_map_to_their_repository() {
        assert_eq!(
            repository_name("ghcr.io/tidecache/cache-node:0.1.0"),
            "cache-node"
        );
        assert_eq!(repository_name("localhost:5000/janitor"), "janitor");
        assert_eq!(
            repository_name(&format!(
                "registry.example/tidecache/operator:1.2@sha256:{}",
                "ab".repeat(32)
            )),
            "operator"
        );
        assert_eq!(repository_name("operator"), "operator");
        assert_eq!(repository_name(super::TOOLBOX), "toolbox");
        assert_eq!(repository("toolbox"), "tidecache-test/toolbox");
        assert_eq!(repository("janitor"), "tidecache/janitor");
    }

    #[test]
    fn references_parse_into_name_tag_and_digest() {
        let digest = format!("sha256:{}", "0123456789abcdef".repeat(4));
        let parse = |r: &str| {
            Reference::parse(r).map(|r| {
                (
                    r.name.to_owned(),
                    r.tag.to_owned(),
                    r.digest.map(str::to_owned),
                )
            })
        };
        assert_eq!(
            parse("ghcr.io/tidecache/cache-node:0.1.0"),
            Ok(("cache-node".into(), "0.1.0".into(), None))
        );
        // No tag: latest; a registry port is not a tag.
        assert_eq!(
            parse("localhost:5000/janitor"),
            Ok(("janitor".into(), "latest".into(), None))
        );
        assert_eq!(
            parse("toolbox"),
            Ok(("toolbox".into(), "latest".into(), None))
        );
        assert_eq!(
            parse(&format!("ghcr.io/tidecache/operator@{digest}")),
            Ok(("operator".into(), "latest".into(), Some(digest.clone())))
        );
        assert_eq!(
            parse(&format!("localhost:5000/tidecache/operator:0.1.1@{digest}")),
            Ok(("operator".into(), "0.1.1".into(), Some(digest.clone())))
        );
        assert!(parse("operator@sha256:abc").is_err());
        assert!(parse(&format!("operator@md5:{}", "0".repeat(64))).is_err());
        assert!(parse("ghcr.io/tidecache/:0.1.0").is_err());
        assert!(parse("operator:").is_err());
    }

    #[test]
    fn entries_leaving_the_root_are_refused() {
        assert!(relative_inside(Path::new("../etc/passwd")).is_err());
        assert!(relative_inside(Path::new("/etc/passwd")).is_err());
        assert!(relative_inside(Path::new("a/../../b")).is_err());
        assert_eq!(
            relative_inside(Path::new("./usr/bin/")).ok().as_deref(),
            Some(Path::new("usr/bin"))
        );
    }

    fn layer(entries: &[(&str, Option<&str>)]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (path, contents) in entries {
            let mut header = tar::Header::new_gnu();
            // Our own ids: these tests need no root.
            header.set_uid(rustix::process::geteuid().as_raw().into());
            header.set_gid(rustix::process::getegid().as_raw().into());
            header.set_mtime(0);
            match contents {
                Some(text) => {
                    header.set_entry_type(tar::EntryType::Regular);
                    header.set_size(text.len() as u64);
                    header.set_mode(0o644);
                    builder
                        .append_data(&mut header, path, text.as_bytes())
                        .expect("a tar entry");
                }
                None => {
                    header.set_entry_type(tar::EntryType::Directory);
                    header.set_size(0);
                    header.set_mode(0o755);
                    builder
                        .append_data(&mut header, path, std::io::empty())
                        .expect("a tar entry");
                }
            }
        }
        builder.into_inner().expect("a tar")
    }

    #[test]
    fn layers_apply_with_whiteouts() {
        let root = tempfile::tempdir().expect("a temp dir");
        let lower = layer(&[
            ("etc/", None),
            ("etc/keep", Some("k")),
            ("etc/gone", Some("g")),
            ("opaque/", None),
            ("opaque/old", Some("o")),
            ("file", Some("v1")),
        ]);
        apply_layer(root.path(), lower.as_slice()).expect("the lower layer");
        let upper = layer(&[
            ("etc/.wh.gone", Some("")),
            ("opaque/new", Some("n")),
            ("opaque/.wh..wh..opq", Some("")),
            ("file", Some("v2")),
        ]);
        apply_layer(root.path(), upper.as_slice()).expect("the upper layer");
        let read = |p: &str| std::fs::read_to_string(root.path().join(p)).ok();
        assert_eq!(read("etc/keep").as_deref(), Some("k"));
        assert_eq!(read("etc/gone"), None);
        assert_eq!(read("opaque/old"), None);
        assert_eq!(read("opaque/new").as_deref(), Some("n"));
        assert_eq!(read("file").as_deref(), Some("v2"));
        assert!(!root.path().join("opaque/.wh..wh..opq").exists());
    }

    #[test]
    fn a_corrupt_layer_is_refused() {
        let layout = tempfile::tempdir().expect("a temp dir");
        let blobs = layout.path().join("blobs/sha256");
        std::fs::create_dir_all(&blobs).expect("blobs");
        let mut tar = layer(&[("file", Some("contents"))]);
        let hex = |bytes: &[u8]| {
            super::to_hex(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref())
        };
        let digest = format!("sha256:{}", hex(&tar));
        let descriptor = super::Descriptor {
            media_type: "application/vnd.oci.image.layer.v1.tar".into(),
            digest: digest.clone(),
            size: tar.len() as u64,
            annotations: Default::default(),
        };
        let blob = blobs.join(&digest["sha256:".len()..]);
        std::fs::write(&blob, &tar).expect("the blob");
        let root = tempfile::tempdir().expect("a temp dir");
        super::apply_blob(layout.path(), &descriptor, root.path()).expect("an intact blob");
        tar[600] ^= 1; // inside the file's data
        std::fs::write(&blob, &tar).expect("the blob");
        let err = super::apply_blob(layout.path(), &descriptor, root.path())
            .expect_err("a corrupt blob")
            .to_string();
        assert!(err.contains("corrupt image blob"), "{err}");
    }

    #[test]
    fn symlinks_of_lower_layers_stay_inside_the_root() {
        let root = tempfile::tempdir().expect("a temp dir");
        let outside = tempfile::tempdir().expect("a temp dir");
        // A lower layer's absolute symlink to a directory: resolved inside the root.
        std::fs::create_dir_all(root.path().join("real")).expect("a dir");
        std::os::unix::fs::symlink(outside.path(), root.path().join("link")).expect("a link");
        let rel = outside.path().strip_prefix("/").expect("absolute");
        std::fs::create_dir_all(root.path().join(rel)).expect("the same path inside");
        let upper = layer(&[("link/file", Some("x"))]);
        apply_layer(root.path(), upper.as_slice()).expect("the layer");
        assert!(
            !outside.path().join("file").exists(),
            "wrote outside the root"
        );
        assert!(root.path().join(rel).join("file").exists());
    }
}
