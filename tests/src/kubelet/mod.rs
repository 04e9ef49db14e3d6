//! A test kubelet: runs every pod bound to the fake nodes as containers, from the
//! images `tests/images/build.sh` builds, through runc with the pod's securityContext
//! and memory limit enforced, so that the real scheduler, controllers and the operator
//! drive real cache nodes, janitors and operator replicas. See `tests/README.md` for
//! the choices (network namespace per pod on a bridge, runc per container, hostPath
//! PersistentVolumes bound to each claim and given the pod's fsGroup, short restart
//! backoff).
//!
//! It also provisions storage: every PersistentVolumeClaim without a volume gets a
//! hostPath PersistentVolume pre-bound to it (`claimRef`), which the real
//! PersistentVolume controller then binds, so that the scheduler's volume-binding
//! check passes and every pod mounting the claim shares one host directory.

mod dns;
mod images;
mod network;
mod observe;
mod ownership;
mod pod;
mod runtime;
mod seccomp;
mod volumes;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::{
    HostPathVolumeSource, ObjectReference, PersistentVolume, PersistentVolumeClaim,
    PersistentVolumeSpec, Pod,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use rustix::process::Signal;
use tokio::sync::watch;

pub use dns::{CLUSTER_DOMAIN, lookup};
pub use images::{IMAGE_BINARIES, Images, TOOLBOX, workspace_root};
pub use network::{PodAddress, PodNetwork};
pub use observe::{Observation, Observed, ProbeKind, Summary, Unready};

use crate::control_plane::process::{
    forget_cleanup, forget_group, register_cleanup, register_dir, signal_group, spawn_group,
};
use crate::control_plane::{Error, Result};

/// What every pod worker shares.
pub(crate) struct Shared {
    client: Client,
    network: Arc<PodNetwork>,
    images: Images,
    dir: PathBuf,
    /// runc's state directory (`runc --root`) for this kubelet's containers.
    runc_root: PathBuf,
    apiserver_port: u16,
    /// Live container process groups, killed when the kubelet is dropped; `None` from
    /// then on, so that a worker restarting a container meanwhile starts nothing.
    groups: Mutex<Option<BTreeSet<u32>>>,
    /// Pod network namespaces by pod UID, deleted when the kubelet is dropped.
    addresses: Mutex<BTreeMap<String, PodAddress>>,
    /// What the kubelet saw and decided, by pod UID, in order; forgotten when the pod
    /// is gone so that a long demo run does not grow it without bound.
    observations: Mutex<BTreeMap<String, Vec<Observation>>>,
    log: Mutex<Option<std::fs::File>>,
}

impl Shared {
    fn pod_dir(&self, namespace: &str, name: &str, uid: &str) -> PathBuf {
        self.dir
            .join("pods")
            .join(format!("{namespace}_{name}_{uid}"))
    }

    /// Starts a container (`command` puts it in a process group of its own) and tracks
    /// its group, unless the kubelet or the whole process is being torn down.
    /// The runc container `id` is removed by force if the process is interrupted (killing
    /// runc does not kill the container).
    fn spawn_container(
        &self,
        command: &mut tokio::process::Command,
        id: &str,
    ) -> std::io::Result<tokio::process::Child> {
        let mut groups = self.groups.lock().unwrap_or_else(|e| e.into_inner());
        let Some(live) = groups.as_mut() else {
            return Err(std::io::Error::other(
                "not started: the kubelet is stopping",
            ));
        };
        let root = self.runc_root.to_string_lossy();
        register_cleanup(
            &format!("0-runc-{id}"),
            "runc",
            &["--root", &root, "delete", "--force", id],
        );
        let child = spawn_group(|| command.spawn(), |c| c.id().unwrap_or_default())?;
        live.insert(child.id().unwrap_or_default());
        Ok(child)
    }

    /// Stops tracking a container's group (it has exited or been killed).
    fn forget_container(&self, pid: u32, id: &str) {
        let mut groups = self.groups.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(live) = groups.as_mut() {
            live.remove(&pid);
        }
        forget_group(pid);
        forget_cleanup(&format!("0-runc-{id}"));
    }

    fn track_address(&self, uid: &str, address: Option<PodAddress>) {
        let mut addresses = self.addresses.lock().unwrap_or_else(|e| e.into_inner());
        match address {
            Some(a) => addresses.insert(uid.to_owned(), a),
            None => addresses.remove(uid),
        };
    }

    /// Records what the kubelet saw or did to a container of the pod `uid`.
    fn observe(&self, uid: &str, container: &str, event: Observed) {
        let mut all = self.observations.lock().unwrap_or_else(|e| e.into_inner());
        all.entry(uid.to_owned()).or_default().push(Observation {
            at: std::time::Instant::now(),
            container: container.to_owned(),
            event,
        });
    }

    /// Drops the observations of a pod that is gone.
    fn forget_observations(&self, uid: &str) {
        let mut all = self.observations.lock().unwrap_or_else(|e| e.into_inner());
        all.remove(uid);
    }

    /// Appends a line to the kubelet's log (`<dir>/kubelet.log`).
    fn log(&self, line: &str) {
        let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(file) = log.as_mut() {
            let stamp = chrono::Utc::now().format("%H:%M:%S%.3f");
            // Losing a diagnostic line is not worth failing a pod for.
            let _written = writeln!(file, "{stamp} {line}");
        }
    }
}

/// The running kubelet. Dropping it kills every container and deletes the pods'
/// network namespaces and scratch space (the Pod objects are left as they are).
pub struct Kubelet {
    shared: Arc<Shared>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// Deleted after the processes are gone.
    dir: tempfile::TempDir,
}

impl Kubelet {
    /// Starts watching pods bound to `nodes` and claims needing a volume.
    /// `apiserver_port` is where pods reach the apiserver on the network's gateway.
    pub async fn start(
        client: Client,
        nodes: &[String],
        network: Arc<PodNetwork>,
        images: Images,
        apiserver_port: u16,
    ) -> Result<Self> {
        let runc = std::process::Command::new("runc")
            .arg("--version")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
        if !runc.is_ok_and(|s| s.success()) {
            return Err(Error::io(
                "starting the kubelet",
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "runc runs every container: apt-get install -y runc",
                ),
            ));
        }
        let dir = tempfile::Builder::new()
            .prefix("tidecache-kubelet-")
            .tempdir()
            .map_err(|e| Error::io("creating the kubelet's temp dir", e))?;
        register_dir(dir.path());
        let log_path = dir.path().join("kubelet.log");
        // A copy, so that a rebuild of the shared target dir during a long run does not
        // swap the binary under pods that restart.
        let images = images.snapshot(&dir.path().join("images"))?;
        let log = std::fs::File::create(&log_path)
            .map_err(|e| Error::io(format!("creating {}", log_path.display()), e))?;
        let shared = Arc::new(Shared {
            client: client.clone(),
            network,
            images,
            dir: dir.path().to_owned(),
            runc_root: dir.path().join("runc"),
            apiserver_port,
            groups: Mutex::new(Some(BTreeSet::new())),
            addresses: Mutex::new(BTreeMap::new()),
            observations: Mutex::new(BTreeMap::new()),
            log: Mutex::new(Some(log)),
        });
        let nodes: BTreeSet<String> = nodes.iter().cloned().collect();
        let mut tasks = dns::serve(client, shared.network.gateway()).await?;
        tasks.push(tokio::spawn(watch_pods(shared.clone(), nodes)));
        tasks.push(tokio::spawn(provision(shared.clone())));
        Ok(Self { shared, tasks, dir })
    }

    /// The kubelet's own log: what it started, what exited, probe failures.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("kubelet.log")
    }

    /// The output of a pod's container, all restarts appended (`kubectl logs` needs a
    /// kubelet API this test kubelet does not serve).
    pub fn container_log(&self, namespace: &str, pod: &str, container: &str) -> String {
        let prefix = format!("{namespace}_{pod}_");
        let pods = self.dir.path().join("pods");
        let mut text = String::new();
        for entry in std::fs::read_dir(&pods).into_iter().flatten().flatten() {
            if entry.file_name().to_string_lossy().starts_with(&prefix) {
                let log = entry.path().join("logs").join(format!("{container}.log"));
                text.push_str(&std::fs::read_to_string(log).unwrap_or_default());
            }
        }
        text
    }

    /// The network namespace and veth of a running pod, by UID (to cut it off).
    pub fn pod_address(&self, uid: &str) -> Option<PodAddress> {
        self.shared
            .addresses
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(uid)
            .cloned()
    }

    /// Everything the kubelet saw and decided about the containers of the pod `uid` so
    /// far, oldest first (empty once the pod is gone): probe results, readiness changes,
    /// kills for failed probes.
    pub fn observations(&self, uid: &str) -> Vec<Observation> {
        self.shared
            .observations
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(uid)
            .cloned()
            .unwrap_or_default()
    }

    /// The host PID of the first process of container `container` of the pod `uid`, while
    /// it runs (`runc state`): tests read from `/proc/<pid>` what the kernel enforces on it.
    pub fn container_pid(&self, uid: &str, container: &str) -> Option<u32> {
        let output = std::process::Command::new("runc")
            .arg("--root")
            .arg(&self.shared.runc_root)
            .args(["state", &container_id(uid, container)])
            .stderr(std::process::Stdio::null())
            .output()
            .ok()?;
        let state: serde_json::Value = serde_json::from_slice(&output.stdout).ok()?;
        (state["status"] == "running")
            .then(|| state["pid"].as_u64())
            .flatten()
            .and_then(|pid| u32::try_from(pid).ok())
    }

    /// The directory under which the provisioner creates claims' host directories.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
        let groups: Vec<u32> = self
            .shared
            .groups
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .into_iter()
            .flatten()
            .collect();
        for &pid in &groups {
            signal_group(pid, Signal::TERM);
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while std::time::Instant::now() < deadline
            && groups.iter().any(|&pid| {
                i32::try_from(pid)
                    .ok()
                    .and_then(rustix::process::Pid::from_raw)
                    .is_some_and(|p| rustix::process::test_kill_process_group(p).is_ok())
            })
        {
            std::thread::sleep(Duration::from_millis(50));
        }
        for &pid in &groups {
            signal_group(pid, Signal::KILL);
            forget_group(pid);
        }
        // Killing runc leaves its container running: remove what is left by force.
        for id in list_containers(&self.shared.runc_root) {
            delete_container(&self.shared.runc_root, &id);
            forget_cleanup(&format!("0-runc-{id}"));
        }
        let addresses: Vec<PodAddress> = std::mem::take(
            &mut *self
                .shared
                .addresses
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        )
        .into_values()
        .collect();
        for address in &addresses {
            self.shared.network.detach(address);
        }
        crate::control_plane::process::forget_dir(self.dir.path());
    }
}

/// runc's ID of a pod's container: unique among live containers, and the same across
/// restarts (a restart starts a new container under it once the old one is gone).
fn container_id(pod_uid: &str, container: &str) -> String {
    format!("{pod_uid}-{container}")
}

/// The containers runc knows under `root` (running or left behind).
fn list_containers(root: &Path) -> Vec<String> {
    std::process::Command::new("runc")
        .arg("--root")
        .arg(root)
        .args(["list", "--quiet"])
        .stderr(std::process::Stdio::null())
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// Kills and removes runc's container `id` (nothing happens if there is none): every
/// process in it dies with its PID namespace, and its cgroup goes.
fn delete_container(root: &Path, id: &str) {
    // Best effort: a container that is already gone is the usual case.
    let _deleted = std::process::Command::new("runc")
        .arg("--root")
        .arg(root)
        .args(["delete", "--force", id])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
}

/// Runs one worker per pod bound to our nodes and forwards it the pod's updates.
async fn watch_pods(shared: Arc<Shared>, nodes: BTreeSet<String>) {
    let pods: Api<Pod> = Api::all(shared.client.clone());
    let mut workers: HashMap<String, watch::Sender<Option<Pod>>> = HashMap::new();
    let mut stream = watcher(pods, watcher::Config::default()).boxed();
    while let Some(event) = stream.next().await {
        let event = match event {
            Ok(event) => event,
            Err(e) => {
                shared.log(&format!("pod watch: {e}"));
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        match event {
            watcher::Event::Apply(pod) | watcher::Event::InitApply(pod) => {
                let ours = pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.node_name.as_ref())
                    .is_some_and(|n| nodes.contains(n));
                if !ours {
                    continue;
                }
                let uid = pod.uid().unwrap_or_default();
                match workers.get(&uid) {
                    Some(sender) => {
                        // A finished worker no longer listens; nothing to tell it.
                        let _sent = sender.send(Some(pod));
                    }
                    None => {
                        let (sender, receiver) = watch::channel(Some(pod));
                        workers.insert(uid, sender);
                        tokio::spawn(pod::run(shared.clone(), receiver));
                    }
                }
            }
            watcher::Event::Delete(pod) => {
                if let Some(sender) = workers.remove(&pod.uid().unwrap_or_default()) {
                    let _sent = sender.send(None);
                }
            }
            watcher::Event::Init | watcher::Event::InitDone => {}
        }
    }
}

/// Gives every unbound claim a hostPath PersistentVolume pre-bound to it.
async fn provision(shared: Arc<Shared>) {
    let claims: Api<PersistentVolumeClaim> = Api::all(shared.client.clone());
    let volumes: Api<PersistentVolume> = Api::all(shared.client.clone());
    let mut stream = watcher(claims, watcher::Config::default()).boxed();
    while let Some(event) = stream.next().await {
        let claim = match event {
            Ok(watcher::Event::Apply(c) | watcher::Event::InitApply(c)) => c,
            Ok(_) => continue,
            Err(e) => {
                shared.log(&format!("claim watch: {e}"));
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let bound = claim.spec.as_ref().is_some_and(|s| s.volume_name.is_some());
        if bound || claim.metadata.deletion_timestamp.is_some() {
            continue;
        }
        if let Err(e) = create_volume(&shared, &volumes, &claim).await {
            shared.log(&format!("provisioning: {e}"));
        }
    }
}

async fn create_volume(
    shared: &Shared,
    volumes: &Api<PersistentVolume>,
    claim: &PersistentVolumeClaim,
) -> Result<()> {
    let namespace = claim.namespace().unwrap_or_default();
    let name = claim.name_any();
    let uid = claim.uid().unwrap_or_default();
    let short: String = uid.chars().take(8).collect();
    let pv_name = format!("pv-{namespace}-{name}-{short}");
    let host = shared
        .dir
        .join("volumes")
        .join(format!("{namespace}_{name}_{short}"));
    std::fs::create_dir_all(&host)
        .map_err(|e| Error::io(format!("creating {}", host.display()), e))?;
    let spec = claim.spec.clone().unwrap_or_default();
    let size = spec
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage").cloned())
        .unwrap_or_else(|| Quantity("1Gi".into()));
    let volume = PersistentVolume {
        metadata: ObjectMeta {
            name: Some(pv_name.clone()),
            labels: Some(BTreeMap::from([(
                "tidecache.io/test-kubelet".to_owned(),
                "hostpath".to_owned(),
            )])),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeSpec {
            capacity: Some(BTreeMap::from([("storage".to_owned(), size)])),
            access_modes: spec.access_modes.clone(),
            // A claim without a class matches only volumes without one.
            storage_class_name: Some(spec.storage_class_name.clone().unwrap_or_default()),
            volume_mode: spec.volume_mode.clone(),
            persistent_volume_reclaim_policy: Some("Retain".into()),
            claim_ref: Some(ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("PersistentVolumeClaim".into()),
                namespace: Some(namespace.clone()),
                name: Some(name.clone()),
                uid: Some(uid),
                ..ObjectReference::default()
            }),
            host_path: Some(HostPathVolumeSource {
                path: host.to_string_lossy().into_owned(),
                type_: Some("Directory".into()),
            }),
            ..PersistentVolumeSpec::default()
        }),
        ..PersistentVolume::default()
    };
    match volumes.create(&PostParams::default(), &volume).await {
        Ok(_) => {
            shared.log(&format!(
                "provisioned {pv_name} for claim {namespace}/{name} at {}",
                host.display()
            ));
            Ok(())
        }
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
        Err(e) => Err(Error::api(format!("creating PV {pv_name}"), e)),
    }
}
