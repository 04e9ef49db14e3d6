//! One pod's life on the test kubelet: network namespace and volumes, each container
//! run by runc from its image (an overlay of the unpacked image and a fresh writable
//! layer, mounted in a private mount namespace so it vanishes with runc; the OCI
//! configuration from [`runtime`]), probes, restarts per `restartPolicy`, status
//! reported to the apiserver, and deletion: SIGTERM, the grace period, SIGKILL, then a
//! grace-0 delete so that controllers waiting for the pod to be gone (StatefulSet
//! scale-down and rollouts) go on.
//!
//! The process we spawn is `runc run` in the foreground (its process group; the
//! container's init is in a session of its own): runc passes SIGTERM on to the
//! container's PID 1 and exits with its status. SIGKILL goes through `runc kill`, which
//! kills PID 1 and with it, as the kernel does for any PID namespace, every process in
//! the container. As in Kubernetes, PID 1 gets only the signals it handles, SIGKILL aside.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, Pod, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Resource, ResourceExt};
use rustix::process::Signal;
use serde_json::{Value, json};
use tokio::sync::watch;

use super::Shared;
use super::dns::CLUSTER_DOMAIN;
use super::images::Image;
use super::network::PodAddress;
use super::observe::{Observed, ProbeKind};
use super::ownership;
use super::runtime::{self, Mount};
use super::volumes::{Materializer, expand};
use crate::control_plane::process::signal_group;
use crate::control_plane::{Error, Result};

/// How often the worker looks at its processes when nothing else happens.
const TICK: Duration = Duration::from_millis(500);
/// First restart delay of a crashed container; doubles up to [`MAX_BACKOFF`]. Shorter
/// than a real kubelet's (10 s to 5 min) so that tests see restarts in seconds.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A container that ran this long before exiting restarts without backoff history.
const BACKOFF_RESET: Duration = Duration::from_secs(60);

/// Mounts the container's root (the image read-only under a fresh writable layer) and
/// becomes runc: `sh -c START sh <lower> <upper> <work> <rootfs> <runc root> <bundle> <id>`,
/// run by `unshare --mount` so that the overlay exists only for the container.
const START: &str = "mount -t overlay overlay -o \"lowerdir=$1,upperdir=$2,workdir=$3\" \"$4\" \
    && exec runc --root \"$5\" run --bundle \"$6\" \"$7\"";

/// How long runc gets to exit after `runc kill ... KILL` before it is killed too.
const KILL_WAIT: Duration = Duration::from_secs(5);

/// Runs the pod until it is deleted (or the kubelet stops).
pub(crate) async fn run(shared: Arc<Shared>, mut updates: watch::Receiver<Option<Pod>>) {
    let Some(pod) = updates.borrow_and_update().clone() else {
        return;
    };
    let mut worker = Worker::new(shared, pod);
    worker.run(&mut updates).await;
}

#[derive(Debug, Default, Clone, Copy)]
struct Counter {
    successes: i32,
    failures: i32,
    due: Option<Instant>,
}

#[derive(Debug)]
struct Run {
    spec: Container,
    argv: Vec<String>,
    /// The OCI runtime configuration (`config.json`).
    config: Value,
    /// The image's unpacked root: the overlay's read-only lower layer.
    lower: PathBuf,
    /// The runc bundle: `config.json`, the overlay's mount point and its writable layer.
    bundle: PathBuf,
    /// The runc container ID (the pod UID and the container name).
    id: String,
    log: PathBuf,
    child: Option<tokio::process::Child>,
    pid: Option<u32>,
    started_at: Option<Instant>,
    state: Value,
    last_state: Value,
    restarts: i32,
    /// The startup probe passed (or there is none).
    started: bool,
    ready: bool,
    startup: Counter,
    liveness: Counter,
    readiness: Counter,
    /// When to (re)start; `None` while running or when done for good.
    next_start: Option<Instant>,
    backoff: Duration,
}

struct Worker {
    shared: Arc<Shared>,
    pod: Pod,
    key: String,
    uid: String,
    dir: PathBuf,
    address: Option<PodAddress>,
    runs: Vec<Run>,
    start_time: String,
    setup_error: Option<String>,
    /// When to write the volumes again: service-account tokens expire (an hour by
    /// default), and a real kubelet renews them at 80 % of their lifetime.
    refresh_at: Option<Instant>,
    /// The IP of a finished pod whose namespace is gone (still its status.podIP).
    released_ip: Option<std::net::Ipv4Addr>,
    terminal: bool,
    /// Condition type → (status, lastTransitionTime).
    conditions: BTreeMap<&'static str, (bool, String)>,
    published: Value,
    /// Events to publish on the pod (warning?, reason, message), as a kubelet does, so
    /// that `kubectl describe pod` tells what happened.
    events: Vec<(bool, &'static str, String)>,
    recorder: Recorder,
}

impl Worker {
    fn new(shared: Arc<Shared>, pod: Pod) -> Self {
        let namespace = pod.namespace().unwrap_or_default();
        let name = pod.name_any();
        let uid = pod.uid().unwrap_or_default();
        let dir = shared.pod_dir(&namespace, &name, &uid);
        let terminal = matches!(
            pod.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Succeeded" | "Failed")
        );
        let node = pod.spec.as_ref().and_then(|s| s.node_name.clone());
        let recorder = Recorder::new(
            shared.client.clone(),
            Reporter {
                controller: "kubelet".into(),
                instance: node,
            },
        );
        Self {
            events: Vec::new(),
            recorder,
            shared,
            key: format!("{namespace}/{name}"),
            uid,
            dir,
            pod,
            address: None,
            runs: Vec::new(),
            start_time: now(),
            setup_error: None,
            refresh_at: None,
            released_ip: None,
            terminal,
            conditions: BTreeMap::new(),
            published: Value::Null,
        }
    }

    async fn run(&mut self, updates: &mut watch::Receiver<Option<Pod>>) {
        loop {
            if self.pod.metadata.deletion_timestamp.is_some() {
                self.terminate().await;
                return;
            }
            if !self.terminal {
                if self.runs.is_empty() {
                    self.setup().await;
                } else if self.refresh_at.is_some_and(|t| t <= Instant::now()) {
                    self.refresh_volumes().await;
                }
                self.step().await;
            }
            // A pod that had finished before this worker saw it keeps the status its
            // containers left; there is nothing of ours to report.
            if !(self.terminal && self.runs.is_empty()) {
                self.publish().await;
            }
            tokio::select! {
                changed = updates.changed() => {
                    if changed.is_err() {
                        // The kubelet is stopping; its Drop kills what is left.
                        self.kill_all(Duration::ZERO).await;
                        self.release();
                        return;
                    }
                    let latest = updates.borrow_and_update().clone();
                    match latest {
                        Some(pod) => self.pod = pod,
                        None => {
                            // Deleted without us (grace 0 by someone else).
                            self.kill_all(Duration::ZERO).await;
                            self.release();
                            self.remove_dir();
                            return;
                        }
                    }
                }
                () = tokio::time::sleep(TICK) => {}
            }
        }
    }

    /// Network, volumes and the containers' commands; on failure the pod stays
    /// Pending with the reason in its container statuses and setup is retried.
    async fn setup(&mut self) {
        match self.try_setup().await {
            Ok(runs) => {
                self.runs = runs;
                self.setup_error = None;
            }
            Err(e) => {
                let message = e.to_string();
                if self.setup_error.as_deref() != Some(&message) {
                    self.shared
                        .log(&format!("{}: setup failed: {message}", self.key));
                    self.events.push((true, "FailedSetup", message.clone()));
                }
                self.setup_error = Some(message);
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }

    async fn try_setup(&mut self) -> Result<Vec<Run>> {
        let spec = self.pod.spec.clone().unwrap_or_default();
        if spec.init_containers.as_ref().is_some_and(|c| !c.is_empty()) {
            return Err(Error::Unsupported {
                pod: self.key.clone(),
                what: "init containers".into(),
            });
        }
        if self.address.is_none() {
            let address = self.shared.network.attach()?;
            self.shared.track_address(&self.uid, Some(address.clone()));
            self.address = Some(address);
        }
        let Some(address) = self.address.clone() else {
            return Ok(Vec::new());
        };
        let pod_ip = address.ip.to_string();
        let gateway = self.shared.network.gateway().to_string();
        let materializer = Materializer {
            client: &self.shared.client,
            pod: &self.pod,
            pod_ip: &pod_ip,
            host_ip: &gateway,
            dir: &self.dir,
        };
        let volumes = materializer.volumes().await?;
        self.refresh_at = token_lifetime(&spec).map(|lifetime| Instant::now() + lifetime * 4 / 5);
        let (hostname, etc) = self.write_etc(&pod_ip, &gateway)?;
        let fs_group = spec
            .security_context
            .as_ref()
            .and_then(|s| s.fs_group)
            .and_then(|g| u32::try_from(g).ok());
        if let Some(gid) = fs_group {
            let managed = spec
                .volumes
                .iter()
                .flatten()
                .filter(|v| v.host_path.is_none())
                .filter_map(|v| volumes.get(&v.name));
            let policy = spec
                .security_context
                .as_ref()
                .and_then(|s| s.fs_group_change_policy.as_deref())
                .unwrap_or("Always");
            for dir in managed {
                ownership::apply_fs_group(dir, gid, policy == "OnRootMismatch")?;
            }
        }
        let mut runs = Vec::new();
        for container in &spec.containers {
            let reference = container.image.clone().unwrap_or_default();
            let image =
                self.shared
                    .images
                    .resolve(&reference)
                    .map_err(|why| Error::Unsupported {
                        pod: self.key.clone(),
                        what: format!("ErrImagePull: container {}: {why}", container.name),
                    })?;
            let mut mounts: Vec<Mount> = ["hosts", "resolv.conf", "hostname"]
                .iter()
                .map(|file| Mount {
                    target: Path::new("/etc").join(file),
                    source: etc.join(file),
                    read_only: false,
                })
                .collect();
            for vm in container.volume_mounts.as_deref().unwrap_or_default() {
                let source = volumes.get(&vm.name).ok_or_else(|| Error::Unsupported {
                    pod: self.key.clone(),
                    what: format!("volumeMount {} names no volume", vm.name),
                })?;
                let source = match vm.sub_path.as_deref() {
                    Some(sub) if !sub.is_empty() => {
                        let p = source.join(sub);
                        std::fs::create_dir_all(&p)
                            .map_err(|e| Error::io(format!("creating {}", p.display()), e))?;
                        p
                    }
                    _ => source.clone(),
                };
                mounts.push(Mount {
                    target: vm.mount_path.clone().into(),
                    source,
                    read_only: vm.read_only == Some(true),
                });
            }
            let container_env = materializer
                .env(container, (&gateway, self.shared.apiserver_port))
                .await?;
            let env = merge_env(&image.env, container_env, &hostname);
            let argv = command_line(container, image, &env);
            if argv.is_empty() {
                return Err(Error::Unsupported {
                    pod: self.key.clone(),
                    what: format!(
                        "container {}: no command specified (the image has no entrypoint)",
                        container.name
                    ),
                });
            }
            let id = super::container_id(&self.uid, &container.name);
            let cgroup = format!("tidecache/{id}");
            let netns = Path::new("/var/run/netns").join(&address.netns);
            let runtime_spec = runtime::Spec {
                pod: &spec,
                container,
                image,
                argv: &argv,
                env: &env,
                mounts: &mounts,
                hostname: &hostname,
                netns: &netns,
                cgroup: &cgroup,
            };
            let config = runtime::config(&runtime_spec).map_err(|why| Error::Unsupported {
                pod: self.key.clone(),
                what: format!("CreateContainerConfigError: {why}"),
            })??;
            let logs = self.dir.join("logs");
            std::fs::create_dir_all(&logs)
                .map_err(|e| Error::io(format!("creating {}", logs.display()), e))?;
            runs.push(Run {
                spec: container.clone(),
                argv,
                config,
                lower: image.rootfs.clone(),
                bundle: self.dir.join("containers").join(&container.name),
                id,
                log: logs.join(format!("{}.log", container.name)),
                child: None,
                pid: None,
                started_at: None,
                state: json!({"waiting": {"reason": "ContainerCreating"}}),
                last_state: json!({}),
                restarts: 0,
                started: false,
                ready: false,
                startup: Counter::default(),
                liveness: Counter::default(),
                readiness: Counter::default(),
                next_start: Some(Instant::now()),
                backoff: FIRST_BACKOFF,
            });
        }
        Ok(runs)
    }

    /// Writes the volumes' files again (fresh tokens; same paths, so the containers see
    /// the new contents through their bind mounts).
    async fn refresh_volumes(&mut self) {
        let Some(address) = self.address.clone() else {
            return;
        };
        let pod_ip = address.ip.to_string();
        let gateway = self.shared.network.gateway().to_string();
        let materializer = Materializer {
            client: &self.shared.client,
            pod: &self.pod,
            pod_ip: &pod_ip,
            host_ip: &gateway,
            dir: &self.dir,
        };
        let spec = self.pod.spec.clone().unwrap_or_default();
        match materializer.volumes().await {
            Ok(_) => {
                self.refresh_at =
                    token_lifetime(&spec).map(|lifetime| Instant::now() + lifetime * 4 / 5);
            }
            Err(e) => {
                self.shared
                    .log(&format!("{}: refreshing volumes: {e}", self.key));
                self.refresh_at = Some(Instant::now() + Duration::from_secs(10));
            }
        }
    }

    /// The pod's `/etc/hosts` (its host name → its IP, as a kubelet writes it, which is
    /// how a StatefulSet pod learns its own address), `/etc/resolv.conf` (the cluster
    /// DNS on the gateway, with the namespace's search path) and `/etc/hostname`.
    fn write_etc(&self, pod_ip: &str, gateway: &str) -> Result<(String, PathBuf)> {
        let spec = self.pod.spec.as_ref();
        let namespace = self.pod.namespace().unwrap_or_default();
        let hostname = spec
            .and_then(|s| s.hostname.clone())
            .unwrap_or_else(|| self.pod.name_any());
        let fqdn = spec
            .and_then(|s| s.subdomain.as_ref())
            .map(|sub| format!("{hostname}.{sub}.{namespace}.svc.{CLUSTER_DOMAIN} "))
            .unwrap_or_default();
        let etc = self.dir.join("etc");
        let files = [
            (
                "hosts",
                format!(
                    "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n{pod_ip}\t{fqdn}{hostname}\n"
                ),
            ),
            (
                "resolv.conf",
                format!(
                    "nameserver {gateway}\nsearch {namespace}.svc.{CLUSTER_DOMAIN} svc.{CLUSTER_DOMAIN} {CLUSTER_DOMAIN}\noptions ndots:5\n"
                ),
            ),
            ("hostname", format!("{hostname}\n")),
        ];
        std::fs::create_dir_all(&etc)
            .map_err(|e| Error::io(format!("creating {}", etc.display()), e))?;
        for (name, text) in files {
            let path = etc.join(name);
            std::fs::write(&path, text)
                .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
        }
        Ok((hostname, etc))
    }

    /// Reaps exited containers, (re)starts those due, runs due probes.
    async fn step(&mut self) {
        let policy = self
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.restart_policy.clone())
            .unwrap_or_else(|| "Always".into());
        let Some(address) = self.address.clone() else {
            return;
        };
        for i in 0..self.runs.len() {
            self.reap(i, &policy);
            let due = self.runs[i].next_start.is_some_and(|t| t <= Instant::now());
            if self.runs[i].child.is_none() && due {
                self.spawn(i);
            }
            if self.runs[i].child.is_some() {
                self.probe(i, &address).await;
            }
        }
        let done = !self.runs.is_empty()
            && self
                .runs
                .iter()
                .all(|r| r.child.is_none() && r.next_start.is_none());
        if done {
            self.terminal = true;
            // A finished pod keeps its IP in status but needs no namespace any more.
            self.release();
        }
    }

    fn reap(&mut self, i: usize, policy: &str) {
        let run = &mut self.runs[i];
        let Some(child) = run.child.as_mut() else {
            return;
        };
        let status = match child.try_wait() {
            Ok(Some(status)) => status,
            Ok(None) => return,
            Err(e) => {
                self.shared
                    .log(&format!("{}: waiting for {}: {e}", self.key, run.spec.name));
                return;
            }
        };
        let code = exit_code(status);
        run.child = None;
        if let Some(pid) = run.pid.take() {
            // Whatever the container forked died with its PID namespace.
            self.shared.forget_container(pid, &run.id);
        }
        self.shared.log(&format!(
            "{}: container {} exited with {code}",
            self.key, run.spec.name
        ));
        let terminated = json!({"terminated": {
            "exitCode": code,
            "reason": if code == 0 { "Completed" } else { "Error" },
            "startedAt": run.state["running"]["startedAt"].clone(),
            "finishedAt": now(),
            "containerID": format!("runc://{}", run.id),
        }});
        if run.ready {
            run.ready = false;
            self.shared
                .observe(&self.uid, &run.spec.name, Observed::Ready(false));
        }
        run.started = false;
        let restart = match policy {
            "Never" => false,
            "OnFailure" => code != 0,
            _ => true,
        };
        if restart {
            if run.started_at.is_some_and(|t| t.elapsed() > BACKOFF_RESET) {
                run.backoff = FIRST_BACKOFF;
            }
            self.events.push((
                true,
                "BackOff",
                format!(
                    "Container {} exited with {code}; restarting in {:?}",
                    run.spec.name, run.backoff
                ),
            ));
            run.next_start = Some(Instant::now() + run.backoff);
            run.backoff = (run.backoff * 2).min(MAX_BACKOFF);
            run.last_state = terminated;
            run.state = json!({"waiting": {"reason": "CrashLoopBackOff"}});
        } else {
            self.events.push((
                code != 0,
                if code == 0 { "Completed" } else { "Failed" },
                format!("Container {} exited with {code}", run.spec.name),
            ));
            run.next_start = None;
            run.state = terminated;
        }
    }

    fn spawn(&mut self, i: usize) {
        let key = self.key.clone();
        let run = &mut self.runs[i];
        run.next_start = None;
        let opened = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&run.log)
            .and_then(|f| Ok((f.try_clone()?, f)));
        let (stdout, stderr) = match opened {
            Ok(pair) => pair,
            Err(e) => {
                self.shared
                    .log(&format!("{key}: opening {}: {e}", run.log.display()));
                run.next_start = Some(Instant::now() + run.backoff);
                return;
            }
        };
        if let Err(e) = prepare_bundle(&self.shared.runc_root, run) {
            self.shared
                .log(&format!("{key}: preparing {}: {e}", run.spec.name));
            self.events.push((
                true,
                "Failed",
                format!("Error creating container {}: {e}", run.spec.name),
            ));
            run.next_start = Some(Instant::now() + run.backoff);
            return;
        }
        let rootfs = run.bundle.join("rootfs");
        let mut command = tokio::process::Command::new("unshare");
        command
            .args(["--mount", "--propagation", "private", "--", "/bin/sh", "-c"])
            .arg(START)
            .arg("sh")
            .arg(&run.lower)
            .arg(run.bundle.join("upper"))
            .arg(run.bundle.join("work"))
            .arg(&rootfs)
            .arg(&self.shared.runc_root)
            .arg(&run.bundle)
            .arg(&run.id)
            .env_clear()
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .process_group(0);
        match self.shared.spawn_container(&mut command, &run.id) {
            Ok(child) => {
                let pid = child.id().unwrap_or_default();
                if run.restarts > 0 || run.started_at.is_some() {
                    run.restarts += 1;
                }
                run.pid = Some(pid);
                run.child = Some(child);
                run.started_at = Some(Instant::now());
                run.state = json!({"running": {"startedAt": now(), "pid": pid}});
                run.started = run.spec.startup_probe.is_none();
                run.startup = Counter::default();
                run.liveness = Counter::default();
                run.readiness = Counter::default();
                self.shared.log(&format!(
                    "{key}: started container {} as pid {pid}: {}",
                    run.spec.name,
                    run.argv.join(" ")
                ));
                self.events.push((
                    false,
                    "Started",
                    format!("Started container {} (pid {pid})", run.spec.name),
                ));
            }
            Err(e) => {
                self.shared
                    .log(&format!("{key}: starting {}: {e}", run.spec.name));
                self.events.push((
                    true,
                    "Failed",
                    format!("Error starting container {}: {e}", run.spec.name),
                ));
                run.next_start = Some(Instant::now() + run.backoff);
            }
        }
    }

    async fn probe(&mut self, i: usize, address: &PodAddress) {
        let spec = self.runs[i].spec.clone();
        if !self.runs[i].started {
            if let Some(p) = &spec.startup_probe {
                match self.check(i, ProbeKind::Startup, p, address).await {
                    Some(true) => self.runs[i].started = true,
                    Some(false) => {
                        self.shared.log(&format!(
                            "{}: startup probe of {} failed",
                            self.key, spec.name
                        ));
                        self.events.push((
                            true,
                            "Unhealthy",
                            format!("Startup probe of {} failed; killing it", spec.name),
                        ));
                        self.restart(i, ProbeKind::Startup).await;
                    }
                    None => {}
                }
            }
            return;
        }
        if let Some(p) = &spec.liveness_probe
            && self.check(i, ProbeKind::Liveness, p, address).await == Some(false)
        {
            self.shared.log(&format!(
                "{}: liveness probe of {} failed",
                self.key, spec.name
            ));
            self.events.push((
                true,
                "Unhealthy",
                format!("Liveness probe of {} failed; killing it", spec.name),
            ));
            self.restart(i, ProbeKind::Liveness).await;
            return;
        }
        match &spec.readiness_probe {
            Some(p) => {
                if let Some(ready) = self.check(i, ProbeKind::Readiness, p, address).await {
                    self.set_ready(i, ready);
                }
            }
            None => self.set_ready(i, true),
        }
    }

    /// Runs container `i`'s `kind` probe if it is due and records the result; the
    /// verdict as [`check`] gives it.
    async fn check(
        &mut self,
        i: usize,
        kind: ProbeKind,
        probe: &Probe,
        address: &PodAddress,
    ) -> Option<bool> {
        let run = &mut self.runs[i];
        let started_at = run.started_at.unwrap_or_else(Instant::now);
        let counter = match kind {
            ProbeKind::Startup => &mut run.startup,
            ProbeKind::Liveness => &mut run.liveness,
            ProbeKind::Readiness => &mut run.readiness,
        };
        let exec = run
            .pid
            .is_some()
            .then(|| (self.shared.runc_root.as_path(), run.id.as_str()));
        let ran = check(probe, &run.spec, address, exec, started_at, counter).await?;
        self.shared.observe(
            &self.uid,
            &run.spec.name,
            Observed::Probe {
                kind,
                passed: ran.passed,
                failures: ran.failures,
            },
        );
        ran.verdict
    }

    /// Sets what the kubelet reports as container `i`'s readiness, noting a change.
    fn set_ready(&mut self, i: usize, ready: bool) {
        let run = &mut self.runs[i];
        if run.ready != ready {
            run.ready = ready;
            self.shared
                .observe(&self.uid, &run.spec.name, Observed::Ready(ready));
        }
    }

    /// Kills a container that failed its `kind` probe; `reap` then applies the restart
    /// policy.
    async fn restart(&mut self, i: usize, kind: ProbeKind) {
        self.shared
            .observe(&self.uid, &self.runs[i].spec.name, Observed::Killed(kind));
        let grace = self.grace(None);
        kill(&self.shared.runc_root, &mut self.runs[i], grace).await;
    }

    fn grace(&self, deletion: Option<i64>) -> Duration {
        let seconds = deletion
            .or_else(|| {
                self.pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.termination_grace_period_seconds)
            })
            .unwrap_or(30);
        Duration::from_secs(u64::try_from(seconds).unwrap_or(0))
    }

    /// Stops every container: SIGTERM to all, then SIGKILL to those still running after
    /// `grace`. Returns the containers that needed SIGKILL.
    async fn kill_all(&mut self, grace: Duration) -> Vec<String> {
        for run in &mut self.runs {
            signal_run(run, Signal::TERM);
        }
        let deadline = Instant::now() + grace;
        let mut killed = Vec::new();
        for run in &mut self.runs {
            let left = deadline.saturating_duration_since(Instant::now());
            if kill(&self.shared.runc_root, run, left).await {
                killed.push(run.spec.name.clone());
            }
        }
        for run in &mut self.runs {
            if let Some(pid) = run.pid.take() {
                self.shared.forget_container(pid, &run.id);
            }
            run.next_start = None;
            if run.ready {
                run.ready = false;
                self.shared
                    .observe(&self.uid, &run.spec.name, Observed::Ready(false));
            }
        }
        killed
    }

    /// The pod is being deleted: stop the containers within its grace period, then
    /// finish the deletion.
    async fn terminate(&mut self) {
        let grace = self.grace(self.pod.metadata.deletion_grace_period_seconds);
        let running = self.runs.iter().any(|r| r.child.is_some());
        if running {
            self.shared.log(&format!(
                "{}: deleted, stopping containers (grace {grace:?})",
                self.key
            ));
            self.events.push((
                false,
                "Killing",
                format!("Stopping containers (grace period {grace:?})"),
            ));
            self.flush_events().await;
        }
        let stopping = Instant::now();
        let killed = self.kill_all(grace).await;
        if running {
            // Tests read whether a container stopped on SIGTERM or had to be killed.
            let how = if killed.is_empty() {
                "exited on SIGTERM".to_string()
            } else {
                format!(
                    "SIGKILLed at the end of the grace period: {}",
                    killed.join(", ")
                )
            };
            self.shared.log(&format!(
                "{}: containers stopped after {:.1?}, {how}",
                self.key,
                stopping.elapsed()
            ));
        }
        self.release();
        let namespace = self.pod.namespace().unwrap_or_default();
        let pods: Api<Pod> = Api::namespaced(self.shared.client.clone(), &namespace);
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: Some(self.uid.clone()),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match pods.delete(&self.pod.name_any(), &params).await {
            Ok(_) | Err(kube::Error::Api(_)) => {}
            Err(e) => self
                .shared
                .log(&format!("{}: finishing the deletion: {e}", self.key)),
        }
        self.remove_dir();
    }

    fn release(&mut self) {
        if let Some(address) = self.address.take() {
            self.shared.network.detach(&address);
            self.shared.track_address(&self.uid, None);
            self.released_ip = Some(address.ip);
        }
    }

    /// Removes what the kubelet kept for a pod that is gone: its directory and its
    /// observations.
    fn remove_dir(&self) {
        // Mounts exist only in the containers' (now gone) mount namespaces, so this
        // removes the scratch files and emptyDirs, never what was bound into a root.
        let _removed = std::fs::remove_dir_all(&self.dir);
        self.shared.forget_observations(&self.uid);
    }

    fn set_condition(&mut self, kind: &'static str, status: bool) {
        let entry = self.conditions.entry(kind).or_insert((!status, now()));
        if entry.0 != status {
            *entry = (status, now());
        }
    }

    async fn flush_events(&mut self) {
        let reference = self.pod.object_ref(&());
        for (warning, reason, note) in std::mem::take(&mut self.events) {
            let event = Event {
                type_: if warning {
                    EventType::Warning
                } else {
                    EventType::Normal
                },
                reason: reason.into(),
                note: Some(note),
                action: reason.into(),
                secondary: None,
            };
            if let Err(e) = self.recorder.publish(&event, &reference).await {
                self.shared
                    .log(&format!("{}: publishing event {reason}: {e}", self.key));
            }
        }
    }

    async fn publish(&mut self) {
        self.flush_events().await;
        let ip = self
            .address
            .as_ref()
            .map(|a| a.ip)
            .or(self.released_ip)
            .map(|ip| ip.to_string());
        let all_ready = !self.runs.is_empty() && self.runs.iter().all(|r| r.ready);
        let phase = if self.terminal {
            let failed = self
                .runs
                .iter()
                .any(|r| r.state["terminated"]["exitCode"].as_i64() != Some(0));
            if failed { "Failed" } else { "Succeeded" }
        } else if self.runs.iter().any(|r| r.started_at.is_some()) {
            "Running"
        } else {
            "Pending"
        };
        self.set_condition("PodScheduled", true);
        self.set_condition("PodReadyToStartContainers", self.address.is_some());
        self.set_condition("Initialized", true);
        self.set_condition("ContainersReady", all_ready);
        self.set_condition("Ready", all_ready);
        let conditions: Vec<Value> = self
            .conditions
            .iter()
            .map(|(kind, (status, time))| {
                json!({
                    "type": kind,
                    "status": if *status { "True" } else { "False" },
                    "lastTransitionTime": time,
                    "lastProbeTime": null,
                })
            })
            .collect();
        let containers: Vec<Value> = if self.runs.is_empty() {
            let pending = self.setup_error.clone().unwrap_or_default();
            // A setup error that names a kubelet reason is reported under it.
            let reason = ["ErrImagePull", "CreateContainerConfigError"]
                .into_iter()
                .find(|r| pending.contains(&format!("{r}: ")))
                .unwrap_or("ContainerCreating");
            self.pod
                .spec
                .as_ref()
                .map(|s| s.containers.clone())
                .unwrap_or_default()
                .iter()
                .map(|c| {
                    json!({
                        "name": c.name, "image": c.image, "imageID": "",
                        "ready": false, "started": false, "restartCount": 0,
                        "state": {"waiting": {"reason": reason, "message": pending}},
                    })
                })
                .collect()
        } else {
            self.runs
                .iter()
                .map(|r| {
                    let mut state = r.state.clone();
                    if let Some(running) = state.get_mut("running").and_then(Value::as_object_mut) {
                        running.remove("pid");
                    }
                    json!({
                        "name": r.spec.name,
                        "image": r.spec.image,
                        "imageID": "",
                        "containerID": r.pid.map(|_| format!("runc://{}", r.id)),
                        "ready": r.ready,
                        "started": r.child.is_some() && r.started,
                        "restartCount": r.restarts,
                        "state": state,
                        "lastState": r.last_state,
                    })
                })
                .collect()
        };
        let gateway = self.shared.network.gateway().to_string();
        let status = json!({"status": {
            "phase": phase,
            "hostIP": gateway,
            "hostIPs": [{"ip": gateway}],
            "podIP": ip,
            "podIPs": ip.as_ref().map(|ip| vec![json!({"ip": ip})]),
            "startTime": self.start_time,
            "conditions": conditions,
            "containerStatuses": containers,
        }});
        if status == self.published {
            return;
        }
        let namespace = self.pod.namespace().unwrap_or_default();
        let pods: Api<Pod> = Api::namespaced(self.shared.client.clone(), &namespace);
        match pods
            .patch_status(
                &self.pod.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&status),
            )
            .await
        {
            Ok(_) => self.published = status,
            Err(e) => self
                .shared
                .log(&format!("{}: reporting status: {e}", self.key)),
        }
    }
}

fn signal_run(run: &Run, signal: Signal) {
    if let Some(pid) = run.pid {
        signal_group(pid, signal);
    }
}

/// SIGTERM, up to `grace` for the exit, then SIGKILL to the container's PID 1 through
/// runc; the exit is reaped by `reap`. Returns whether SIGKILL was needed.
async fn kill(runc_root: &Path, run: &mut Run, grace: Duration) -> bool {
    let (Some(pid), Some(child)) = (run.pid, run.child.as_mut()) else {
        return false;
    };
    signal_group(pid, Signal::TERM);
    if tokio::time::timeout(grace, child.wait()).await.is_ok() {
        return false;
    }
    let _killed = tokio::process::Command::new("runc")
        .arg("--root")
        .arg(runc_root)
        .args(["kill", &run.id, "KILL"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await;
    if tokio::time::timeout(KILL_WAIT, child.wait()).await.is_err() {
        // runc itself hangs: kill it and remove the container by force.
        signal_group(pid, Signal::KILL);
        super::delete_container(runc_root, &run.id);
        // SIGKILL cannot be ignored; the status stays with the child for `reap`.
        let _status = child.wait().await;
    }
    true
}

/// A fresh bundle for the next start: the configuration, an empty writable layer (a
/// restarted container starts from its image, as in Kubernetes) and no stale container
/// of a runc that was killed.
fn prepare_bundle(runc_root: &Path, run: &Run) -> std::io::Result<()> {
    super::delete_container(runc_root, &run.id);
    for dir in ["upper", "work"] {
        let path = run.bundle.join(dir);
        match std::fs::remove_dir_all(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        std::fs::create_dir_all(&path)?;
    }
    std::fs::create_dir_all(run.bundle.join("rootfs"))?;
    let config = serde_json::to_vec_pretty(&run.config).map_err(std::io::Error::other)?;
    std::fs::write(run.bundle.join("config.json"), config)
}

/// The image's environment with the container's on top (a name the container sets
/// replaces the image's), and `HOSTNAME`, as containerd sets it.
fn merge_env(
    image: &[String],
    container: Vec<(String, String)>,
    hostname: &str,
) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = image
        .iter()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    for (k, v) in std::iter::once(("HOSTNAME".to_owned(), hostname.to_owned())).chain(container) {
        match env.iter_mut().find(|(name, _)| *name == k) {
            Some(entry) => entry.1 = v,
            None => env.push((k, v)),
        }
    }
    env
}

/// The command line as Kubernetes makes it: `command` replaces the image's entrypoint
/// (and drops its cmd), `args` replace the cmd; `$(VAR)` expanded from the environment.
fn command_line(container: &Container, image: &Image, env: &[(String, String)]) -> Vec<String> {
    let expanded = |v: Vec<String>| -> Vec<String> { v.iter().map(|a| expand(a, env)).collect() };
    let command = container.command.clone().filter(|c| !c.is_empty());
    let args = container.args.clone().filter(|a| !a.is_empty());
    match (command, args) {
        (Some(command), args) => expanded(command)
            .into_iter()
            .chain(expanded(args.unwrap_or_default()))
            .collect(),
        (None, Some(args)) => image
            .entrypoint
            .iter()
            .cloned()
            .chain(expanded(args))
            .collect(),
        (None, None) => image.entrypoint.iter().chain(&image.cmd).cloned().collect(),
    }
}

/// A probe that ran.
struct ProbeRun {
    passed: bool,
    /// Consecutive failures including this run (0 when it passed).
    failures: i32,
    /// `Some(true)` once the probe reached its success threshold, `Some(false)` at its
    /// failure threshold, `None` while undecided.
    verdict: Option<bool>,
}

/// Runs a probe if it is due (`None` if not).
async fn check(
    probe: &Probe,
    container: &Container,
    address: &PodAddress,
    exec: Option<(&Path, &str)>,
    started_at: Instant,
    counter: &mut Counter,
) -> Option<ProbeRun> {
    let now = Instant::now();
    let due = counter
        .due
        .unwrap_or_else(|| started_at + secs(probe.initial_delay_seconds.unwrap_or(0)));
    if now < due {
        counter.due = Some(due);
        return None;
    }
    counter.due = Some(now + secs(probe.period_seconds.unwrap_or(10)));
    let timeout = secs(probe.timeout_seconds.unwrap_or(1).max(1));
    let passed = run_probe(probe, container, address, exec, timeout).await;
    let verdict = if passed {
        counter.successes += 1;
        counter.failures = 0;
        (counter.successes >= probe.success_threshold.unwrap_or(1)).then_some(true)
    } else {
        counter.failures += 1;
        counter.successes = 0;
        (counter.failures >= probe.failure_threshold.unwrap_or(3)).then_some(false)
    };
    Some(ProbeRun {
        passed,
        failures: counter.failures,
        verdict,
    })
}

async fn run_probe(
    probe: &Probe,
    container: &Container,
    address: &PodAddress,
    running: Option<(&Path, &str)>,
    timeout: Duration,
) -> bool {
    let port = |p: &IntOrString| -> Option<u16> {
        match p {
            IntOrString::Int(n) => u16::try_from(*n).ok(),
            IntOrString::String(name) => container
                .ports
                .as_deref()
                .unwrap_or_default()
                .iter()
                .find(|cp| cp.name.as_deref() == Some(name))
                .and_then(|cp| u16::try_from(cp.container_port).ok()),
        }
    };
    if let Some(http) = &probe.http_get {
        let Some(port) = port(&http.port) else {
            return false;
        };
        let ip: IpAddr = http
            .host
            .as_deref()
            .and_then(|h| h.parse().ok())
            .unwrap_or(IpAddr::V4(address.ip));
        let path = http.path.as_deref().unwrap_or("/");
        return crate::http::request(SocketAddr::new(ip, port), "GET", path, b"", timeout)
            .await
            .is_ok_and(|r| (200..400).contains(&r.status));
    }
    if let Some(tcp) = &probe.tcp_socket {
        let Some(port) = port(&tcp.port) else {
            return false;
        };
        let connect = tokio::net::TcpStream::connect((address.ip, port));
        return matches!(tokio::time::timeout(timeout, connect).await, Ok(Ok(_)));
    }
    if let (Some(exec), Some((runc_root, id))) = (&probe.exec, running) {
        // Inside the container, as its user, with its capabilities and seccomp profile:
        // `runc exec` takes the process settings from the container's configuration. It
        // and the command stay in runc's new process group, killed on a timeout.
        let spawned = tokio::process::Command::new("runc")
            .arg("--root")
            .arg(runc_root)
            .args(["exec", id])
            .args(exec.command.as_deref().unwrap_or_default())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .kill_on_drop(true)
            .spawn();
        let Ok(mut runc) = spawned else {
            return false;
        };
        return match tokio::time::timeout(timeout, runc.wait()).await {
            Ok(Ok(status)) => status.success(),
            _ => {
                if let Some(id) = runc.id() {
                    signal_group(id, Signal::KILL);
                }
                false
            }
        };
    }
    false
}

/// The shortest lifetime of the service-account tokens the pod's volumes project.
fn token_lifetime(spec: &k8s_openapi::api::core::v1::PodSpec) -> Option<Duration> {
    spec.volumes
        .iter()
        .flatten()
        .filter_map(|v| v.projected.as_ref())
        .flat_map(|p| p.sources.iter().flatten())
        .filter_map(|s| s.service_account_token.as_ref())
        .map(|t| {
            Duration::from_secs(u64::try_from(t.expiration_seconds.unwrap_or(3600)).unwrap_or(3600))
        })
        .min()
}

fn secs(n: i32) -> Duration {
    Duration::from_secs(u64::try_from(n).unwrap_or(0))
}

fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(-1)
}

/// The current time as Kubernetes writes it (RFC 3339, seconds, UTC).
fn now() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}
