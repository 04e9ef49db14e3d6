//! One node run by the **real** kubelet (built from `k8s.io/kubernetes` with the control
//! plane, `tests/control-plane/build.sh`) and Debian's containerd with runc, joined to a
//! [`ControlPlane`]. The test kubelet (`crate::kubelet`) runs our images faithfully enough for
//! the end-to-end suite, but only the real one proves that what the operator asks for —
//! the restricted security context, the memory limit, an `emptyDir` with `fsGroup` — works
//! the way a cluster's kubelet and container runtime do it (`tests/tests/real_kubelet.rs`).
//!
//! Nothing is pulled: the images are imported into containerd from our OCI layouts, and the
//! sandbox ("pause") image is built here from Kubernetes' own `pause.c`.
//!
//! Everything the node writes lives in one temp dir (kubelet's root, containerd's root and
//! state, runc's state, the CNI config and IPAM data, the logs). What cannot live there is
//! made unique or undone by one generated teardown script, run on drop and by the harness's
//! signal handler (`control_plane::process`), so that neither a passing test, a failing one
//! nor a Ctrl-C leaves anything behind:
//! - the cgroups: kubelet's `cgroupRoot` is [`CGROUP_ROOT`] in every hierarchy, and containerd
//!   (with the shims it forks, which outlive containerd by design) starts in its `runtime`
//!   child, so every process the node started is found by its cgroup and killed;
//! - the mounts (containers' overlays, the pods' network namespaces and shm, kubelet's bind
//!   mount of its root dir onto itself), all under the temp dir: unmounted deepest first;
//! - the bridge [`BRIDGE`] on [`POD_CIDR`], created here (so the bridge plugin, with
//!   `isGateway: false`, neither assigns addresses nor turns on IP forwarding): deleted;
//! - the sysctls kubelet sets at start (`vm.overcommit_memory`, `kernel.panic`, ...): restored;
//! - the paths kubelet and containerd hard-code (`/var/lib/kubelet/device-plugins`,
//!   `/var/log/containers`, `/run/containerd/s`): removed if they did not exist before.
//!
//! kubelet's iptables chains are off (`makeIPTablesUtilChains: false`) and the CNI config
//! masquerades nothing, so the node leaves no iptables rules. One such node per machine at a
//! time: the bridge, the subnet and the cgroup root are fixed names.

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Node;
use kube::api::Api;

use crate::console::say;
use crate::control_plane::process::{self, Process};
use crate::control_plane::{ControlPlane, Error, Result, free_port};

/// The Node's name (and kubelet's `--hostname-override`).
pub const NODE_NAME: &str = "real-node-0";
/// The node's address: the bridge's, on which kubelet serves its API (`kubectl logs`).
pub const NODE_IP: Ipv4Addr = Ipv4Addr::new(10, 250, 0, 1);
/// The pods' subnet: outside the services' 10.96.0.0/16 and the test kubelet's
/// 10.100–249.x.0/24 bridges, so both can run on one machine.
pub const POD_CIDR: &str = "10.250.0.0/24";
/// The bridge the pods' veths join.
pub const BRIDGE: &str = "tcrealbr0";
/// kubelet's `cgroupRoot`, created in every cgroup hierarchy.
pub const CGROUP_ROOT: &str = "tidecache-real-kubelet";
/// The sandbox image containerd starts every pod with, built from `pause.c`.
pub const PAUSE_IMAGE: &str = "localhost/tidecache-pause:3.10";

/// How long the node may take to come up (kubelet registers within seconds here).
const READY_TIMEOUT: Duration = Duration::from_secs(120);
/// The signal handler's cleanup key (see `process::register_cleanup`).
const CLEANUP_KEY: &str = "1-real-kubelet";
/// The sysctls kubelet sets at start unless `protectKernelDefaults`, which would instead make
/// it refuse to start on a machine with the kernel's defaults.
const KUBELET_SYSCTLS: [&str; 6] = [
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
];
/// Host paths kubelet and containerd create whatever their configured directories are.
const HARD_CODED_PATHS: [&str; 4] = [
    "/var/lib/kubelet",
    "/var/log/containers",
    "/var/log/pods",
    "/run/containerd",
];

/// An image to import into containerd: an OCI layout directory (`tests/images/build.sh`'s
/// output, one index entry per tag) and the repository its tags are named under, e.g.
/// `ghcr.io/tidecache/cache-node`, so that pods use the references the operator writes.
#[derive(Debug, Clone)]
pub struct LayoutImage {
    /// The OCI layout directory.
    pub layout: PathBuf,
    /// The repository, without a tag.
    pub repository: String,
}

/// A running node. Dropping it stops kubelet and containerd and runs the teardown script.
pub struct RealNode {
    kubelet: Option<Process>,
    containerd: Option<Process>,
    socket: PathBuf,
    teardown: PathBuf,
    /// Deleted after the teardown script has unmounted everything below it.
    dir: tempfile::TempDir,
}

impl RealNode {
    /// Starts containerd and kubelet, imports the pause image and `images`, and returns once
    /// the Node [`NODE_NAME`] is Ready. Fails with the `apt-get` line when a tool is missing.
    pub async fn start(plane: &ControlPlane, images: &[LayoutImage]) -> Result<Self> {
        let started = Instant::now();
        let tools = Tools::find()?;
        let kubelet_bin = plane.binaries().path("kubelet");
        if !kubelet_bin.is_file() {
            return Err(missing(
                &kubelet_bin.display().to_string(),
                "rebuild with tests/control-plane/build.sh (it builds kubelet with the control plane)",
            ));
        }
        let pause = tokio::task::spawn_blocking(pause_archive)
            .await
            .map_err(|e| Error::io("building the pause image", std::io::Error::other(e)))??;

        if Path::new("/sys/class/net").join(BRIDGE).exists() {
            return Err(Error::io(
                format!("real kubelet: creating bridge {BRIDGE}"),
                std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    format!(
                        "it exists: another real-kubelet test is running, or one was killed \
                         (then: ip link del {BRIDGE})"
                    ),
                ),
            ));
        }
        let dir = tempfile::Builder::new()
            .prefix("tidecache-real-kubelet-")
            .tempdir()
            .map_err(|e| Error::io("creating the real kubelet's temp dir", e))?;
        process::register_dir(dir.path());
        let d = dir.path().to_owned();
        for sub in ["logs", "cni/net.d", "cni/ipam", "pki", "pod-logs", "images"] {
            create_dir(&d.join(sub))?;
        }
        let cgroups = cgroup_roots()?;
        let teardown = d.join("teardown.sh");
        write(&teardown, &teardown_script(&d, &cgroups)?)?;
        process::register_cleanup(CLEANUP_KEY, "bash", &[&teardown.to_string_lossy()]);
        let socket = d.join("containerd/containerd.sock");
        let mut node = Self {
            kubelet: None,
            containerd: None,
            socket,
            teardown,
            dir,
        };
        // From here on, a failure drops `node`, which runs the teardown.
        node.boot(plane, &tools, &kubelet_bin, &pause, images, &cgroups)
            .await
            .inspect_err(|_| node.print_log_tails(60))?;
        say(format!(
            "real kubelet: node {NODE_NAME} Ready {:.1?} after the start",
            started.elapsed()
        ));
        Ok(node)
    }

    async fn boot(
        &mut self,
        plane: &ControlPlane,
        tools: &Tools,
        kubelet_bin: &Path,
        pause: &Path,
        images: &[LayoutImage],
        cgroups: &[PathBuf],
    ) -> Result<()> {
        let d = self.dir.path().to_owned();
        make_cgroups(cgroups)?;
        run("ip", &["link", "add", BRIDGE, "type", "bridge"])?;
        run(
            "ip",
            &["addr", "add", &format!("{NODE_IP}/24"), "dev", BRIDGE],
        )?;
        run("ip", &["link", "set", BRIDGE, "up"])?;
        write(
            &d.join("cni/net.d/10-tidecache-real.conflist"),
            &cni_config(&d),
        )?;

        // containerd moves itself into the runtime cgroup before it starts, so its shims
        // (forked later) are found there by the teardown.
        let config = d.join("containerd/config.toml");
        write(&config, &containerd_config(&d, &self.socket))?;
        let mut enter = String::new();
        for cgroup in cgroups {
            let _ = write!(
                enter,
                "echo $$ > '{}/runtime/cgroup.procs' && ",
                cgroup.display()
            );
        }
        say("real kubelet: starting containerd");
        self.containerd = Some(Process::spawn(
            "containerd",
            Path::new("/bin/sh"),
            &[
                "-c".into(),
                format!("{enter}exec \"$0\" \"$@\""),
                tools.containerd.display().to_string(),
                "--config".into(),
                config.display().to_string(),
            ],
            d.join("logs/containerd.log"),
        )?);
        self.poll(
            "containerd's socket",
            Duration::from_secs(30),
            async |node| {
                Ok(match node.ctr(&["version"]) {
                    Ok(_) => None,
                    Err(e) => Some(e.to_string()),
                })
            },
        )
        .await?;

        say(format!("real kubelet: importing {PAUSE_IMAGE}"));
        self.ctr(&["images", "import", &pause.to_string_lossy()])?;
        for image in images {
            let archive = d.join("images").join(format!(
                "{}.tar",
                image.repository.rsplit('/').next().unwrap_or("image")
            ));
            say(format!(
                "real kubelet: importing {} from {}",
                image.repository,
                image.layout.display()
            ));
            oci_archive(&image.layout, &archive)?;
            self.ctr(&[
                "images",
                "import",
                "--base-name",
                &image.repository,
                &archive.to_string_lossy(),
            ])?;
            // The layers are unpacked into containerd's snapshots; the archive is a copy.
            std::fs::remove_file(&archive)
                .map_err(|e| Error::io(format!("removing {}", archive.display()), e))?;
        }

        let kubeconfig = node_kubeconfig(plane, &d.join("pki"))?;
        let kubelet_config = d.join("kubelet-config.yaml");
        write(
            &kubelet_config,
            &kubelet_config_yaml(plane, &d, &self.socket)?,
        )?;
        say(format!(
            "real kubelet: starting kubelet {NODE_NAME} on {NODE_IP}"
        ));
        self.kubelet = Some(Process::spawn(
            "kubelet",
            kubelet_bin,
            &[
                format!("--config={}", kubelet_config.display()),
                format!("--kubeconfig={}", kubeconfig.display()),
                format!("--root-dir={}", d.join("kubelet").display()),
                format!("--cert-dir={}", d.join("kubelet-pki").display()),
                format!("--hostname-override={NODE_NAME}"),
                format!("--node-ip={NODE_IP}"),
                "--v=2".into(),
            ],
            d.join("logs/kubelet.log"),
        )?);
        let nodes: Api<Node> = Api::all(plane.client().await?);
        self.poll("Node real-node-0 Ready", READY_TIMEOUT, async |_| {
            node_not_ready(&nodes).await
        })
        .await
    }

    /// The node's directory (logs under `logs/`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Fails if kubelet or containerd has exited.
    pub fn check_running(&mut self) -> Result<()> {
        for p in [&mut self.containerd, &mut self.kubelet]
            .into_iter()
            .flatten()
        {
            p.check_running()?;
        }
        Ok(())
    }

    /// Runs `ctr -n k8s.io` against this node's containerd and returns its stdout.
    pub fn ctr(&self, args: &[&str]) -> Result<String> {
        let socket = self.socket.to_string_lossy();
        let mut all = vec!["--address", &socket, "-n", "k8s.io"];
        all.extend_from_slice(args);
        run("ctr", &all)
    }

    /// Prints the end of containerd's and kubelet's logs to stderr.
    pub fn print_log_tails(&self, lines: usize) {
        for p in [&self.containerd, &self.kubelet].into_iter().flatten() {
            eprintln!(
                "----- {} ({}), last {lines} lines -----\n{}",
                p.name(),
                p.log().display(),
                process::log_tail(p.log(), lines)
            );
        }
    }

    /// Calls `check` every 250 ms until it returns `None`, failing if a process exits.
    async fn poll(
        &mut self,
        what: &str,
        timeout: Duration,
        mut check: impl AsyncFnMut(&Self) -> Result<Option<String>>,
    ) -> Result<()> {
        let start = Instant::now();
        let mut said = Instant::now();
        loop {
            self.check_running()?;
            let last = match check(self).await? {
                None => return Ok(()),
                Some(state) => state,
            };
            if start.elapsed() > timeout {
                return Err(Error::Timeout {
                    what: what.into(),
                    waited: timeout,
                    last,
                });
            }
            if said.elapsed() > Duration::from_secs(10) {
                say(format!(
                    "real kubelet: still waiting for {what} ({:.0?}): {last}",
                    start.elapsed()
                ));
                said = Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

impl Drop for RealNode {
    fn drop(&mut self) {
        let started = Instant::now();
        // kubelet first, or it would restart the containers the teardown kills.
        for p in [&mut self.kubelet, &mut self.containerd]
            .into_iter()
            .flatten()
        {
            if std::thread::panicking() && !process::interrupted() {
                eprintln!(
                    "----- {} ({}), last 60 lines -----\n{}",
                    p.name(),
                    p.log().display(),
                    process::log_tail(p.log(), 60)
                );
            }
            p.stop();
        }
        match Command::new("bash")
            .arg(&self.teardown)
            .stdin(Stdio::null())
            .status()
        {
            Ok(status) if status.success() => {}
            other => eprintln!(
                "real kubelet: teardown {} failed: {other:?}",
                self.teardown.display()
            ),
        }
        process::forget_cleanup(CLEANUP_KEY);
        process::forget_dir(self.dir.path());
        say(format!(
            "real kubelet: node torn down in {:.1?}",
            started.elapsed()
        ));
    }
}

/// The programs the node needs, each found on `PATH` or failing with its `apt-get` line.
struct Tools {
    containerd: PathBuf,
}

impl Tools {
    fn find() -> Result<Self> {
        if !rustix::process::geteuid().is_root() {
            return Err(Error::io(
                "starting the real kubelet",
                std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    "it needs root: containerd, runc, cgroups, a bridge",
                ),
            ));
        }
        let containerd = which("containerd", "apt-get install -y containerd")?;
        for tool in ["ctr", "runc", "containerd-shim-runc-v2"] {
            which(tool, "apt-get install -y containerd")?;
        }
        which("buildah", "apt-get install -y buildah")?;
        which("gcc", "apt-get install -y gcc libc6-dev")?;
        which("ip", "apt-get install -y iproute2")?;
        for plugin in ["bridge", "host-local", "loopback"] {
            let path = Path::new("/usr/lib/cni").join(plugin);
            if !path.is_file() {
                return Err(missing(
                    &path.display().to_string(),
                    "apt-get install -y containernetworking-plugins",
                ));
            }
        }
        Ok(Self { containerd })
    }
}

fn which(tool: &str, install: &str) -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|dir| dir.join(tool))
        .find(|p| p.is_file())
        .ok_or_else(|| missing(tool, install))
}

fn missing(what: &str, install: &str) -> Error {
    Error::io(
        format!("real kubelet: {what} is missing"),
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("install it: {install}"),
        ),
    )
}

/// Runs a command, returning its stdout; a failure carries its stderr.
fn run(program: &str, args: &[&str]) -> Result<String> {
    let output = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::io(format!("running {program}"), e))?;
    if !output.status.success() {
        return Err(Error::io(
            format!("{program} {}", args.join(" ")),
            std::io::Error::other(format!(
                "{}: {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            )),
        ));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

fn write(path: &Path, contents: &str) -> Result<()> {
    if let Some(parent) = path.parent() {
        create_dir(parent)?;
    }
    std::fs::write(path, contents).map_err(|e| Error::io(format!("writing {}", path.display()), e))
}

fn create_dir(path: &Path) -> Result<()> {
    std::fs::create_dir_all(path).map_err(|e| Error::io(format!("creating {}", path.display()), e))
}

/// `Some(state)` until the Node reports Ready.
async fn node_not_ready(nodes: &Api<Node>) -> Result<Option<String>> {
    let node = nodes
        .get_opt(NODE_NAME)
        .await
        .map_err(|e| Error::api(format!("reading Node {NODE_NAME}"), e))?;
    let Some(node) = node else {
        return Ok(Some("not registered yet".into()));
    };
    let ready = node
        .status
        .and_then(|s| s.conditions)
        .unwrap_or_default()
        .into_iter()
        .find(|c| c.type_ == "Ready");
    Ok(match ready {
        Some(c) if c.status == "True" => None,
        Some(c) => Some(format!(
            "Ready={} {}",
            c.status,
            c.message.unwrap_or_default()
        )),
        None => Some("no Ready condition yet".into()),
    })
}

/// Where slow, reproducible artefacts are kept between runs (outside git).
fn cache_dir() -> Result<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .ok_or_else(|| {
            Error::io(
                "finding the cache directory",
                std::io::Error::other("set HOME or XDG_CACHE_HOME"),
            )
        })?;
    Ok(base.join("tidecache/real-kubelet"))
}

/// The Kubernetes version the control plane is pinned to, read as `build.sh` reads it.
fn kubernetes_version() -> Result<String> {
    let go_mod = Path::new(env!("CARGO_MANIFEST_DIR")).join("control-plane/kubernetes/go.mod");
    let text = std::fs::read_to_string(&go_mod)
        .map_err(|e| Error::io(format!("reading {}", go_mod.display()), e))?;
    text.lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            (words.next() == Some("k8s.io/kubernetes")).then(|| words.next())
        })
        .flatten()
        .find(|v| v.starts_with('v'))
        .map(str::to_owned)
        .ok_or_else(|| {
            Error::io(
                format!("reading {}", go_mod.display()),
                std::io::Error::other("no k8s.io/kubernetes requirement"),
            )
        })
}

/// The pause image as an OCI archive: `pause.c` of the pinned Kubernetes release (from the
/// Go module cache, downloaded with `go mod download` if needed) built statically with gcc
/// and committed with buildah. Cached per Kubernetes version: it takes a few seconds, and
/// needs Go's module cache.
fn pause_archive() -> Result<PathBuf> {
    let version = kubernetes_version()?;
    let cache = cache_dir()?;
    let archive = cache.join(format!("pause-{version}.oci.tar"));
    if archive.is_file() {
        return Ok(archive);
    }
    say(format!(
        "real kubelet: building {PAUSE_IMAGE} from pause.c of Kubernetes {version} into {}",
        archive.display()
    ));
    which("go", "install Go (https://go.dev/dl/)")?;
    let module_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("control-plane/kubernetes");
    let output = Command::new("go")
        .args([
            "mod",
            "download",
            "-json",
            &format!("k8s.io/kubernetes@{version}"),
        ])
        .current_dir(&module_dir)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::io("running go mod download", e))?;
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).map_err(|e| {
        Error::io(
            format!(
                "go mod download k8s.io/kubernetes@{version}: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            ),
            std::io::Error::other(e),
        )
    })?;
    let source = json["Dir"]
        .as_str()
        .map(|d| Path::new(d).join("build/pause/linux/pause.c"))
        .filter(|p| p.is_file())
        .ok_or_else(|| {
            Error::io(
                format!("go mod download k8s.io/kubernetes@{version}"),
                std::io::Error::other(format!("no build/pause/linux/pause.c in {json}")),
            )
        })?;
    create_dir(&cache)?;
    let work = tempfile::Builder::new()
        .prefix("tidecache-pause-")
        .tempdir()
        .map_err(|e| Error::io("creating the pause image's build dir", e))?;
    let w = work.path().display();
    let partial = cache.join(format!(".pause-{version}.{}.partial", std::process::id()));
    // Private vfs storage: nothing shared with other buildah users, nothing mounted.
    let script = format!(
        "set -euo pipefail
gcc -Os -static -DVERSION={version}-tidecache -o '{w}/pause' '{source}'
strip '{w}/pause'
b() {{ buildah --root '{w}/storage' --runroot '{w}/run' --storage-driver vfs \"$@\"; }}
c=$(b from scratch)
b copy -q \"$c\" '{w}/pause' /pause
b config --entrypoint '[\"/pause\"]' --user 65535:65535 \"$c\"
b commit -q \"$c\" {PAUSE_IMAGE} >/dev/null
b push -q {PAUSE_IMAGE} 'oci-archive:{partial}:{PAUSE_IMAGE}'
b rm --all >/dev/null
b rmi --all >/dev/null",
        source = source.display(),
        partial = partial.display(),
    );
    let status = Command::new("bash")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .status()
        .map_err(|e| Error::io("building the pause image", e))?;
    if !status.success() {
        return Err(Error::io(
            "building the pause image",
            std::io::Error::other(format!("{status} (output above): {script}")),
        ));
    }
    std::fs::rename(&partial, &archive)
        .map_err(|e| Error::io(format!("renaming to {}", archive.display()), e))?;
    Ok(archive)
}

/// Packs an OCI layout directory into an OCI archive, which is what `ctr images import`
/// reads (it names the tags `<--base-name>:<org.opencontainers.image.ref.name>`).
fn oci_archive(layout: &Path, archive: &Path) -> Result<()> {
    let context = || format!("packing {} into {}", layout.display(), archive.display());
    let file = std::fs::File::create(archive).map_err(|e| Error::io(context(), e))?;
    let mut tar = tar::Builder::new(file);
    for entry in ["oci-layout", "index.json"] {
        tar.append_path_with_name(layout.join(entry), entry)
            .map_err(|e| Error::io(context(), e))?;
    }
    tar.append_dir_all("blobs", layout.join("blobs"))
        .map_err(|e| Error::io(context(), e))?;
    tar.into_inner()
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::io(context(), e))
}

/// A client certificate for `system:node:<name>` in `system:nodes` (what the Node
/// authorizer recognises a kubelet by), signed by the cluster's CA, and a kubeconfig.
fn node_kubeconfig(plane: &ControlPlane, dir: &Path) -> Result<PathBuf> {
    let client = plane.pki().issue_client(
        dir,
        "kubelet-client",
        &format!("system:node:{NODE_NAME}"),
        &["system:nodes"],
    )?;
    crate::control_plane::kubeconfig::write(
        &dir.join("kubelet.kubeconfig"),
        plane.server(),
        &plane.pki().ca.cert,
        NODE_NAME,
        crate::control_plane::kubeconfig::Credentials::Certificate(&client),
    )
}

/// containerd with everything under `dir`. `restrict_oom_score_adj`: this machine lacks
/// CAP_SYS_RESOURCE, so runc cannot lower a sandbox's oom_score_adj (-998) and every sandbox
/// would fail ("can't get final child's PID from pipe"); the clamp keeps containerd's own.
/// `netns_mounts_under_state_dir` keeps the pods' network namespaces out of `/run/netns`.
fn containerd_config(dir: &Path, socket: &Path) -> String {
    let d = dir.display();
    let s = socket.display();
    format!(
        r#"version = 2
root = "{d}/containerd/root"
state = "{d}/containerd/state"
[grpc]
  address = "{s}"
[ttrpc]
  address = "{s}.ttrpc"
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  enable_selinux = false
  netns_mounts_under_state_dir = true
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "{d}/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{d}/cni/net.d"
"#
    )
}

/// The pods join [`BRIDGE`] (created beforehand with the node's address) with addresses
/// from [`POD_CIDR`]. No gateway and no masquerading: the host reaches the pods on the
/// connected subnet, which is all the test and kubelet's probes need, and nothing touches
/// IP forwarding or iptables.
fn cni_config(dir: &Path) -> String {
    serde_json::json!({
        "cniVersion": "1.0.0",
        "name": "tidecache-real",
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": false,
                "ipMasq": false,
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "dataDir": dir.join("cni/ipam"),
                    "ranges": [[{ "subnet": POD_CIDR, "gateway": NODE_IP.to_string() }]],
                },
            },
            { "type": "loopback" },
        ],
    })
    .to_string()
}

/// kubelet's configuration. The non-defaults: `failCgroupV1: false` (this machine has cgroup
/// v1, which kubelet ≥ 1.35 refuses by default); `makeIPTablesUtilChains: false` (no
/// KUBE-FIREWALL chains in the host's iptables); `cgroupRoot` and `podLogsDir` (nothing in
/// the host's `/kubepods` or `/var/log/pods`); no eviction or image GC (a busy dev disk must
/// not evict the test's pod); webhook authentication and authorization, as in a cluster.
fn kubelet_config_yaml(plane: &ControlPlane, dir: &Path, socket: &Path) -> Result<String> {
    let quote = |p: &Path| serde_json::Value::from(p.to_string_lossy()).to_string();
    Ok(format!(
        "apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
containerRuntimeEndpoint: {endpoint}
imageServiceEndpoint: {endpoint}
cgroupDriver: cgroupfs
cgroupRoot: /{CGROUP_ROOT}
failSwapOn: false
failCgroupV1: false
authentication:
  anonymous: {{enabled: false}}
  x509: {{clientCAFile: {ca}}}
  webhook: {{enabled: true}}
authorization: {{mode: Webhook}}
address: {NODE_IP}
port: {port}
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: {healthz}
localStorageCapacityIsolation: false
evictionHard: {{}}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
resolvConf: \"\"
hairpinMode: hairpin-veth
maxPods: 20
podLogsDir: {logs}
makeIPTablesUtilChains: false
clusterDomain: cluster.local
",
        endpoint = serde_json::Value::from(format!("unix://{}", socket.display())),
        ca = quote(&plane.pki().ca.cert),
        port = free_port()?,
        healthz = free_port()?,
        logs = quote(&dir.join("pod-logs")),
    ))
}

/// `<hierarchy>/CGROUP_ROOT` for every mounted cgroup hierarchy (each v1 controller and the
/// unified one on a hybrid machine; the one root on a pure v2 machine).
fn cgroup_roots() -> Result<Vec<PathBuf>> {
    let base = Path::new("/sys/fs/cgroup");
    let mut hierarchies = Vec::new();
    if base.join("cgroup.procs").is_file() {
        hierarchies.push(base.to_owned());
    } else {
        let entries = std::fs::read_dir(base)
            .map_err(|e| Error::io(format!("listing {}", base.display()), e))?;
        for entry in entries.flatten() {
            let path = entry.path();
            // cpu and cpuacct are often symlinks to one `cpu,cpuacct` hierarchy.
            if path.join("cgroup.procs").is_file() && !entry.path().is_symlink() {
                hierarchies.push(path);
            }
        }
    }
    hierarchies.sort();
    Ok(hierarchies
        .into_iter()
        .map(|h| h.join(CGROUP_ROOT))
        .collect())
}

/// Creates `CGROUP_ROOT` and its `runtime` child in every hierarchy (kubelet refuses a
/// `cgroupRoot` that does not exist). A leftover of a killed run is removed first; v1
/// cpusets start empty, so they get the root's CPUs and memory nodes.
fn make_cgroups(roots: &[PathBuf]) -> Result<()> {
    for root in roots {
        if root.exists() {
            remove_cgroup_tree(root)?;
        }
        for dir in [root.clone(), root.join("runtime")] {
            create_dir(&dir)?;
            for file in ["cpuset.cpus", "cpuset.mems"] {
                let parent = dir.parent().map(|p| p.join(file)).unwrap_or_default();
                if let Ok(value) = std::fs::read_to_string(&parent) {
                    write(&dir.join(file), value.trim())?;
                }
            }
        }
        if root.join("cgroup.subtree_control").is_file() {
            // Pure v2: let kubelet's pods use the controllers the parent offers.
            let offered =
                std::fs::read_to_string(root.join("cgroup.controllers")).unwrap_or_default();
            let enable: Vec<String> = offered
                .split_whitespace()
                .map(|c| format!("+{c}"))
                .collect();
            // Best effort: a controller the parent cannot delegate stays off.
            let _ = std::fs::write(root.join("cgroup.subtree_control"), enable.join(" "));
        }
    }
    Ok(())
}

fn remove_cgroup_tree(dir: &Path) -> Result<()> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| Error::io(format!("listing {}", dir.display()), e))?;
    for entry in entries.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            remove_cgroup_tree(&entry.path())?;
        }
    }
    std::fs::remove_dir(dir).map_err(|e| {
        Error::io(
            format!(
                "removing the leftover cgroup {} (is another real-kubelet test running?)",
                dir.display()
            ),
            e,
        )
    })
}

/// The script that undoes everything the node did to the host (see the module docs). It is
/// written before anything is started, with the host's state of then (sysctls, which of the
/// hard-coded paths existed), and is idempotent.
fn teardown_script(dir: &Path, cgroups: &[PathBuf]) -> Result<String> {
    let q = |s: &str| format!("'{}'", s.replace('\'', r"'\''"));
    let d = q(&dir.to_string_lossy());
    let cgroup_list: Vec<String> = cgroups.iter().map(|c| q(&c.to_string_lossy())).collect();
    let mut s = format!(
        "#!/bin/bash
# Written by tests/src/real_kubelet.rs: undoes what the real-kubelet node did to the host.
set -u
dir={d}
cgroups=({cgroups})
# Every process of the node: containerd's shims (which outlive containerd) in the runtime
# cgroup, the containers in the pods' cgroups below kubelet's cgroupRoot.
for _ in $(seq 100); do
  pids=$(find \"${{cgroups[@]}}\" -name cgroup.procs -exec cat {{}} + 2>/dev/null | sort -u)
  [[ -z $pids ]] && break
  kill -9 $pids 2>/dev/null
  sleep 0.1
done
# The mounts under the node's directory, deepest first; a mount point can be stacked.
for _ in 1 2 3 4 5; do
  mounts=$(awk -v d=\"$dir/\" 'index($5, d) == 1 {{ print $5 }}' /proc/self/mountinfo | sort -r)
  [[ -z $mounts ]] && break
  for m in $mounts; do umount \"$m\" 2>/dev/null || umount -l \"$m\" 2>/dev/null; done
done
find \"${{cgroups[@]}}\" -depth -type d -exec rmdir {{}} \\; 2>/dev/null
ip link del {BRIDGE} 2>/dev/null
",
        cgroups = cgroup_list.join(" "),
    );
    for sysctl in KUBELET_SYSCTLS {
        let path = Path::new("/proc/sys").join(sysctl);
        if let Ok(value) = std::fs::read_to_string(&path) {
            let _ = writeln!(
                s,
                "echo {} > {}",
                q(value.trim()),
                q(&path.to_string_lossy())
            );
        }
    }
    for path in HARD_CODED_PATHS {
        if !Path::new(path).exists() {
            let _ = writeln!(s, "rm -rf -- {}", q(path));
        }
    }
    s.push_str("exit 0\n");
    Ok(s)
}
