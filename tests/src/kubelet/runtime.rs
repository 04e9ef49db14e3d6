//! A container's OCI runtime configuration (runc's `config.json`), made from its pod
//! spec and image as containerd's CRI plugin makes it, so that what the manifests ask
//! for is enforced by the kernel rather than trusted: the user and groups
//! (`runAsUser`/`runAsGroup`/image `USER`, `fsGroup` and `supplementalGroups` as extra
//! groups, `runAsNonRoot` refused for uid 0), a read-only root, the capability set
//! (containerd's defaults, then `drop`/`add`), `allowPrivilegeEscalation: false` as
//! no-new-privileges, the `RuntimeDefault` seccomp profile, `limits.memory` and CPU as
//! the container's cgroup, and its own PID, IPC, UTS and mount namespaces inside the
//! pod's network namespace.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Container, PodSpec, SeccompProfile};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use serde_json::{Value, json};

use super::images::Image;
use super::seccomp;
use crate::control_plane::Result;

/// The capabilities a container gets unless its securityContext drops them: containerd's
/// default set.
const DEFAULT_CAPABILITIES: [&str; 14] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// The CFS period CPU limits are expressed in, as the kubelet uses.
const CPU_PERIOD: u64 = 100_000;

/// What a container sees at `target`: the host path `source`, bound.
#[derive(Debug, Clone)]
pub struct Mount {
    /// The container path.
    pub target: PathBuf,
    /// The host path bound there (a directory or a file).
    pub source: PathBuf,
    pub read_only: bool,
}

/// Everything one container's configuration is made from.
pub struct Spec<'a> {
    pub pod: &'a PodSpec,
    pub container: &'a Container,
    pub image: &'a Image,
    /// The command line, `$(VAR)` already expanded.
    pub argv: &'a [String],
    /// The container's environment (the image's, then the container's on top).
    pub env: &'a [(String, String)],
    pub mounts: &'a [Mount],
    pub hostname: &'a str,
    /// The pod's network namespace (`/var/run/netns/<name>`).
    pub netns: &'a Path,
    /// The container's cgroup, relative to the kubelet's own.
    pub cgroup: &'a str,
}

/// Why a container cannot be configured: the message its waiting state shows, as a
/// real kubelet's `CreateContainerConfigError`.
pub type ConfigError = String;

/// The user a container runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
}

/// The container's `config.json`. Errors are for the user (what to fix in the spec);
/// reading the seccomp profile is the only I/O.
pub fn config(spec: &Spec<'_>) -> std::result::Result<Result<Value>, ConfigError> {
    let security = spec.container.security_context.clone().unwrap_or_default();
    let pod_security = spec.pod.security_context.clone().unwrap_or_default();
    if security.privileged == Some(true) {
        return Err(format!(
            "container {} asks to be privileged, which the test kubelet does not run",
            spec.container.name
        ));
    }
    let user = user(spec)?;
    let caps = capabilities(spec.container);
    let caps_list: Vec<&String> = caps.iter().collect();
    // As Kubernetes users observe: a non-root process keeps its capabilities only in
    // the bounding set (no ambient capabilities), so it cannot use them.
    let effective: Vec<&String> = if user.uid == 0 {
        caps_list.clone()
    } else {
        Vec::new()
    };
    let no_new_privileges = security.allow_privilege_escalation == Some(false);
    let seccomp_profile = security
        .seccomp_profile
        .clone()
        .or(pod_security.seccomp_profile.clone());
    let seccomp = match seccomp_profile {
        Some(SeccompProfile { type_, .. }) if type_ == "RuntimeDefault" => {
            match seccomp::runtime_default(&caps) {
                Ok(profile) => Some(profile),
                Err(e) => return Ok(Err(e)),
            }
        }
        Some(SeccompProfile { type_, .. }) if type_ == "Localhost" => {
            return Err(format!(
                "container {}: Localhost seccomp profiles are not available on the test kubelet",
                spec.container.name
            ));
        }
        _ => None,
    };
    let read_only = security.read_only_root_filesystem == Some(true);
    let cwd = spec
        .container
        .working_dir
        .clone()
        .filter(|w| !w.is_empty())
        .or_else(|| spec.image.working_dir.clone().filter(|w| !w.is_empty()))
        .unwrap_or_else(|| "/".into());
    let env: Vec<String> = spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect();

    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc",
               "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
               "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts",
               "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}),
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
               "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
               "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs",
               "options": ["nosuid", "noexec", "nodev", "ro"]}),
        json!({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
               "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]}),
    ];
    for m in spec.mounts {
        mounts.push(json!({
            "destination": m.target,
            "type": "bind",
            "source": m.source,
            "options": ["rbind", "rprivate", if m.read_only { "ro" } else { "rw" }],
        }));
    }

    let mut linux = json!({
        "namespaces": [
            {"type": "pid"},
            {"type": "ipc"},
            {"type": "uts"},
            {"type": "mount"},
            {"type": "network", "path": spec.netns},
        ],
        "cgroupsPath": spec.cgroup,
        "resources": resources(spec.container),
        "maskedPaths": [
            "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
            "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi",
            "/sys/firmware",
        ],
        "readonlyPaths": [
            "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
        ],
    });
    if let Some(profile) = seccomp {
        linux["seccomp"] = profile;
    }
    Ok(Ok(json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": user.uid, "gid": user.gid, "additionalGids": user.additional_gids},
            "args": spec.argv,
            "env": env,
            "cwd": cwd,
            "capabilities": {
                "bounding": caps_list,
                "effective": effective,
                "permitted": effective,
            },
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": nofile(), "soft": nofile()}],
            "noNewPrivileges": no_new_privileges,
            "oomScoreAdj": 1000,
        },
        "root": {"path": "rootfs", "readonly": read_only},
        "hostname": spec.hostname,
        "mounts": mounts,
        "linux": linux,
    })))
}

/// Open files a container may have: as containerd, the runtime's own hard limit (a
/// container cannot be given more than the kubelet has).
fn nofile() -> u64 {
    rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .maximum
        .unwrap_or(1_048_576)
}

/// The user and groups: `runAsUser`/`runAsGroup` (the container's over the pod's), else
/// the image's `USER` (a name looked up in the image's `/etc/passwd`); extra groups from
/// `supplementalGroups` and `fsGroup`. `runAsNonRoot` refuses uid 0, and a user name it
/// cannot check, with the kubelet's messages.
pub fn user(spec: &Spec<'_>) -> std::result::Result<User, ConfigError> {
    let security = spec.container.security_context.clone().unwrap_or_default();
    let pod_security = spec.pod.security_context.clone().unwrap_or_default();
    let image_user = spec.image.user.clone().unwrap_or_default();
    let (image_name, image_group) = match image_user.split_once(':') {
        Some((u, g)) => (u.to_owned(), Some(g.to_owned())),
        None => (image_user.clone(), None),
    };
    let passwd = std::fs::read_to_string(spec.image.rootfs.join("etc/passwd")).unwrap_or_default();
    let lookup = |name: &str| -> Option<(u32, u32)> {
        passwd.lines().find_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            let matches = fields.first() == Some(&name) || fields.get(2) == Some(&name);
            if !matches {
                return None;
            }
            Some((fields.get(2)?.parse().ok()?, fields.get(3)?.parse().ok()?))
        })
    };
    let run_as_user = security.run_as_user.or(pod_security.run_as_user);
    let non_root = security
        .run_as_non_root
        .or(pod_security.run_as_non_root)
        .unwrap_or(false);
    let uid = match run_as_user {
        Some(uid) => u32::try_from(uid).map_err(|_| format!("runAsUser {uid} is out of range"))?,
        None if image_name.is_empty() => 0,
        None => match image_name.parse::<u32>() {
            Ok(uid) => uid,
            Err(_) if non_root => {
                return Err(format!(
                    "container has runAsNonRoot and image has non-numeric user ({image_name}), \
                     cannot verify user is non-root (container {})",
                    spec.container.name
                ));
            }
            Err(_) => lookup(&image_name).map(|(uid, _)| uid).ok_or_else(|| {
                format!("image user {image_name} is not in the image's /etc/passwd")
            })?,
        },
    };
    if non_root && uid == 0 {
        return Err(format!(
            "container has runAsNonRoot and image will run as root (container {})",
            spec.container.name
        ));
    }
    let run_as_group = security.run_as_group.or(pod_security.run_as_group);
    let gid = match (run_as_group, &image_group) {
        (Some(gid), _) => {
            u32::try_from(gid).map_err(|_| format!("runAsGroup {gid} is out of range"))?
        }
        // The image's group applies only to the image's own user.
        (None, Some(group)) if run_as_user.is_none() => group.parse().unwrap_or(0),
        _ => lookup(&uid.to_string()).map_or(0, |(_, gid)| gid),
    };
    let mut additional_gids: Vec<u32> = pod_security
        .supplemental_groups
        .iter()
        .flatten()
        .filter_map(|g| u32::try_from(*g).ok())
        .collect();
    if let Some(fs_group) = pod_security.fs_group.and_then(|g| u32::try_from(g).ok()) {
        additional_gids.push(fs_group);
    }
    additional_gids.sort_unstable();
    additional_gids.dedup();
    Ok(User {
        uid,
        gid,
        additional_gids,
    })
}

/// containerd's default capabilities, less `drop`, plus `add` (`ALL` in either).
pub fn capabilities(container: &Container) -> BTreeSet<String> {
    let caps = container
        .security_context
        .as_ref()
        .and_then(|s| s.capabilities.clone())
        .unwrap_or_default();
    let name = |c: &String| {
        let upper = c.to_ascii_uppercase();
        if upper.starts_with("CAP_") {
            upper
        } else {
            format!("CAP_{upper}")
        }
    };
    let mut set: BTreeSet<String> = DEFAULT_CAPABILITIES
        .iter()
        .map(|c| (*c).to_owned())
        .collect();
    for c in caps.drop.iter().flatten() {
        if c.eq_ignore_ascii_case("ALL") {
            set.clear();
        } else {
            set.remove(&name(c));
        }
    }
    for c in caps.add.iter().flatten() {
        if !c.eq_ignore_ascii_case("ALL") {
            set.insert(name(c));
        }
    }
    set
}

/// The container's cgroup limits: `limits.memory` (what cache-node derives its capacity
/// from), `limits.cpu` as a CFS quota, `requests.cpu` as shares; every device denied but
/// the runtime's defaults.
fn resources(container: &Container) -> Value {
    let resources = container.resources.clone().unwrap_or_default();
    let limits = resources.limits.unwrap_or_default();
    let requests = resources.requests.unwrap_or_default();
    let mut out = json!({"devices": [{"allow": false, "access": "rwm"}]});
    if let Some(bytes) = limits.get("memory").and_then(memory_bytes) {
        out["memory"] = json!({"limit": bytes});
    }
    let mut cpu = serde_json::Map::new();
    if let Some(millis) = limits.get("cpu").and_then(cpu_millis) {
        cpu.insert(
            "quota".into(),
            json!((millis * CPU_PERIOD / 1000).max(1000)),
        );
        cpu.insert("period".into(), json!(CPU_PERIOD));
    }
    if let Some(millis) = requests.get("cpu").and_then(cpu_millis) {
        cpu.insert("shares".into(), json!((millis * 1024 / 1000).max(2)));
    }
    if !cpu.is_empty() {
        out["cpu"] = Value::Object(cpu);
    }
    out
}

/// A memory quantity in bytes (`512Mi`, `1G`, `1e9`, `100000`), rounded up.
pub fn memory_bytes(q: &Quantity) -> Option<u64> {
    const SUFFIXES: [(&str, f64); 12] = [
        ("Ki", 1024.0),
        ("Mi", 1_048_576.0),
        ("Gi", 1_073_741_824.0),
        ("Ti", 1_099_511_627_776.0),
        ("Pi", 1_125_899_906_842_624.0),
        ("Ei", 1_152_921_504_606_846_976.0),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("P", 1e15),
        ("E", 1e18),
    ];
    let text = q.0.trim();
    let (number, factor) = SUFFIXES
        .iter()
        .find_map(|(suffix, factor)| text.strip_suffix(suffix).map(|n| (n, *factor)))
        .unwrap_or((text, 1.0));
    let value: f64 = number.parse().ok()?;
    whole((value * factor).ceil(), 1.8e19)
}

/// A CPU quantity in millicores (`500m`, `2`, `0.5`), rounded up.
fn cpu_millis(q: &Quantity) -> Option<u64> {
    let text = q.0.trim();
    let millis = match text.strip_suffix('m') {
        Some(m) => m.parse::<f64>().ok()?,
        None => text.parse::<f64>().ok()? * 1000.0,
    }
    .ceil();
    whole(millis, 1e15)
}

/// A rounded-up quantity as an integer, if it is in `0..below` (`below` at most 2^64).
fn whole(value: f64, below: f64) -> Option<u64> {
    (0.0..below).contains(&value).then(|| {
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "checked to be non-negative and below the limit, which fits u64"
        )]
        let whole = value as u64;
        whole
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(user: Option<&str>, rootfs: &Path) -> Image {
        Image {
            reference: "tidecache/janitor:0.1.0".into(),
            digest: "sha256:00".into(),
            rootfs: rootfs.to_owned(),
            entrypoint: vec!["/usr/local/bin/janitor".into()],
            cmd: Vec::new(),
            env: Vec::new(),
            user: user.map(str::to_owned),
            working_dir: None,
        }
    }

    fn render(
        pod: Value,
        container: Value,
        user: Option<&str>,
    ) -> std::result::Result<Value, String> {
        let root = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(root.path().join("etc")).expect("etc");
        std::fs::write(
            root.path().join("etc/passwd"),
            "root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532::/home/nonroot:/sbin/nologin\n",
        )
        .expect("passwd");
        let pod: PodSpec = serde_json::from_value(pod).expect("pod spec");
        let container: Container = serde_json::from_value(container).expect("container");
        let image = image(user, root.path());
        let spec = Spec {
            pod: &pod,
            container: &container,
            image: &image,
            argv: &["/usr/local/bin/janitor".to_owned()],
            env: &[("PATH".to_owned(), "/usr/local/bin".to_owned())],
            mounts: &[Mount {
                target: "/data".into(),
                source: "/srv/volume".into(),
                read_only: false,
            }],
            hostname: "demo-0",
            netns: Path::new("/var/run/netns/pod"),
            cgroup: "tidecache/pod-main",
        };
        config(&spec).map(|c| c.expect("the seccomp profile"))
    }

    #[test]
    fn the_operators_restricted_container_is_locked_down() {
        let config = render(
            json!({"containers": [], "securityContext": {
                "runAsNonRoot": true, "runAsUser": 65532, "runAsGroup": 65532,
                "fsGroup": 65532, "seccompProfile": {"type": "RuntimeDefault"}}}),
            json!({"name": "main", "securityContext": {
                "allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true,
                "capabilities": {"drop": ["ALL"]}},
                "resources": {"limits": {"memory": "512Mi", "cpu": "500m"}, "requests": {"cpu": "250m"}}}),
            Some("65532:65532"),
        )
        .expect("a valid config");
        assert_eq!(
            config["process"]["user"],
            json!({"uid": 65532, "gid": 65532, "additionalGids": [65532]})
        );
        assert_eq!(config["process"]["capabilities"]["bounding"], json!([]));
        assert_eq!(config["process"]["noNewPrivileges"], true);
        assert_eq!(config["root"]["readonly"], true);
        assert_eq!(
            config["linux"]["resources"]["memory"]["limit"],
            512 * 1024 * 1024
        );
        assert_eq!(config["linux"]["resources"]["cpu"]["quota"], 50_000);
        assert_eq!(config["linux"]["resources"]["cpu"]["shares"], 256);
        assert!(
            config["linux"]["seccomp"]["syscalls"]
                .as_array()
                .is_some_and(|s| !s.is_empty())
        );
        assert_eq!(
            config["linux"]["namespaces"][4]["path"],
            "/var/run/netns/pod"
        );
        assert_eq!(config["mounts"][7]["destination"], "/data");
        assert_eq!(config["hostname"], "demo-0");
    }

    #[test]
    fn run_as_non_root_refuses_root() {
        let refused = render(
            json!({"containers": [], "securityContext": {"runAsNonRoot": true}}),
            json!({"name": "main"}),
            None,
        )
        .expect_err("root refused");
        assert!(
            refused.contains("runAsNonRoot and image will run as root"),
            "{refused}"
        );
        let named = render(
            json!({"containers": [], "securityContext": {"runAsNonRoot": true}}),
            json!({"name": "main"}),
            Some("nonroot"),
        )
        .expect_err("a name cannot be checked");
        assert!(named.contains("non-numeric user (nonroot)"), "{named}");
        let explicit = render(
            json!({"containers": [], "securityContext": {"runAsNonRoot": true}}),
            json!({"name": "main", "securityContext": {"runAsUser": 0}}),
            Some("65532"),
        )
        .expect_err("explicit root refused");
        assert!(explicit.contains("will run as root"), "{explicit}");
    }

    #[test]
    fn image_user_and_default_capabilities_apply_without_a_security_context() {
        let config = render(
            json!({"containers": []}),
            json!({"name": "main"}),
            Some("nonroot"),
        )
        .expect("valid");
        assert_eq!(config["process"]["user"]["uid"], 65532);
        assert_eq!(config["process"]["user"]["gid"], 65532);
        let bounding = &config["process"]["capabilities"]["bounding"];
        assert!(
            bounding
                .as_array()
                .is_some_and(|b| b.len() == DEFAULT_CAPABILITIES.len())
        );
        assert_eq!(
            config["process"]["capabilities"]["effective"],
            json!([]),
            "non-root"
        );
        assert!(
            config["linux"].get("seccomp").is_none(),
            "Unconfined by default"
        );
        assert_eq!(config["root"]["readonly"], false);

        let root = render(
            json!({"containers": []}),
            json!({"name": "main", "securityContext": {"capabilities": {"drop": ["NET_RAW"], "add": ["sys_ptrace"]}}}),
            None,
        )
        .expect("valid");
        let effective = root["process"]["capabilities"]["effective"].to_string();
        assert!(
            effective.contains("CAP_SYS_PTRACE") && !effective.contains("CAP_NET_RAW"),
            "{effective}"
        );
    }

    #[test]
    fn privileged_and_localhost_profiles_are_refused_with_a_reason() {
        let privileged = render(
            json!({"containers": []}),
            json!({"name": "main", "securityContext": {"privileged": true}}),
            None,
        )
        .expect_err("privileged");
        assert!(privileged.contains("privileged"), "{privileged}");
        let localhost = render(
            json!({"containers": [], "securityContext": {"seccompProfile": {"type": "Localhost", "localhostProfile": "x.json"}}}),
            json!({"name": "main"}),
            None,
        )
        .expect_err("localhost");
        assert!(localhost.contains("Localhost"), "{localhost}");
    }

    #[test]
    fn quantities_parse_as_the_apiserver_writes_them() {
        let q = |s: &str| Quantity(s.into());
        assert_eq!(memory_bytes(&q("512Mi")), Some(536_870_912));
        assert_eq!(memory_bytes(&q("1G")), Some(1_000_000_000));
        assert_eq!(memory_bytes(&q("1e3")), Some(1000));
        assert_eq!(memory_bytes(&q("1.5Ki")), Some(1536));
        assert_eq!(memory_bytes(&q("12x")), None);
        assert_eq!(cpu_millis(&q("500m")), Some(500));
        assert_eq!(cpu_millis(&q("2")), Some(2000));
        assert_eq!(cpu_millis(&q("0.1")), Some(100));
    }
}
