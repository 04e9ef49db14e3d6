//! The test kubelet's own promises, on pods written for them (the operator's pods use
//! only part of what it supports): env from fieldRef/configMapKeyRef/secretKeyRef and
//! envFrom, configMap/secret/downwardAPI/emptyDir volumes at their container paths, the
//! pod's host name and DNS, a PID namespace per container, exit codes →
//! Succeeded/Failed, OnFailure restarts, a liveness exec probe restarting a container,
//! an exec readiness probe inside the container's view, and deletion within the grace
//! period, which takes even a process that left the container's process group.
//!
//! Every container runs from its image through runc: the pods use the test-only toolbox
//! image (a Debian shell, built by `tests/images/build.sh --toolbox`), and one of them
//! carries the operator's restricted securityContext and a memory limit, checked from
//! inside: its user and groups, a read-only root, no capabilities, no new privileges,
//! the seccomp filter, the cgroup memory limit and the fsGroup on its volume. A pod
//! running as root under runAsNonRoot and one naming a missing image are refused with
//! the kubelet's reasons.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use kube::api::{Api, DeleteParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use tidecache_e2e::cluster::LocalCluster;

const NS: &str = "default";
const IMAGE: &str = tidecache_e2e::kubelet::TOOLBOX;
const TIMEOUT: Duration = Duration::from_secs(120);

fn pod(name: &str, restart: &str, script: &str, extra: serde_json::Value) -> Pod {
    let mut spec = json!({
        "restartPolicy": restart,
        "terminationGracePeriodSeconds": 30,
        "containers": [{
            "name": "main",
            "image": IMAGE,
            "command": ["/bin/sh", "-c", script],
            "volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}],
        }],
        "volumes": [{"name": "scratch", "emptyDir": {}}],
    });
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            spec.insert(k.clone(), v.clone());
        }
    }
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NS},
        "spec": spec,
    }))
    .expect("a valid pod")
}

async fn wait_pod(pods: &Api<Pod>, name: &str, what: &str, done: impl Fn(&Pod) -> bool) -> Pod {
    let start = Instant::now();
    loop {
        let pod = pods.get(name).await.expect("reading the pod");
        if done(&pod) {
            return pod;
        }
        assert!(
            start.elapsed() < TIMEOUT,
            "timed out waiting for {name} to {what}; status: {:?}",
            pod.status
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or_default()
}

fn main_status(pod: &Pod) -> k8s_openapi::api::core::v1::ContainerStatus {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|c| c.first().cloned())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kubelet_runs_pods_as_specified() {
    let cluster = LocalCluster::start()
        .await
        .expect("starting the local cluster");
    let client: Client = cluster.client().await.expect("admin client");
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let post = PostParams::default();

    let config: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "settings"},
        "data": {"greeting": "hello", "color": "blue"},
    }))
    .expect("configmap");
    Api::<ConfigMap>::namespaced(client.clone(), NS)
        .create(&post, &config)
        .await
        .expect("creating the ConfigMap");
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "credentials"},
        "stringData": {"token": "s3cret"},
    }))
    .expect("secret");
    Api::<Secret>::namespaced(client.clone(), NS)
        .create(&post, &secret)
        .await
        .expect("creating the Secret");

    // Every check prints what it saw, so a failure explains itself in the log.
    let checks = r#"
        set -u
        fail=0
        check() { if [ "$2" = "$3" ]; then echo "ok $1"; else echo "FAIL $1: '$2' != '$3'"; fail=1; fi; }
        check greeting "$GREETING" hello
        check token "$TOKEN" s3cret
        check envFrom "$CFG_color" blue
        check expanded "$SAY" "hello world"
        check podName "$POD_NAME" env-and-volumes
        check nodeZone "$(echo "$NODE" | cut -c1-5)" zone-
        check nameFile "$(cat /etc/podinfo/name)" env-and-volumes
        check podIP "$POD_IP" "$(awk '/env-and-volumes/ {print $1}' /etc/hosts)"
        check hostname "$(cat /proc/sys/kernel/hostname)" env-and-volumes
        check configVolume "$(cat /etc/settings/greeting)" hello
        check secretVolume "$(cat /etc/credentials/token)" s3cret
        check namespaceFile "$(cat /etc/podinfo/namespace)" default
        check apiserver "${KUBERNETES_SERVICE_HOST:+set}" set
        check resolver "$(awk '/^search/ {print $2}' /etc/resolv.conf)" default.svc.cluster.local
        check imageUser "$(id -u)" 65532
        check imageFiles "$(test -x /usr/bin/redis-cli && echo yes)" yes
        # $$$$: a command's $$ is an escaped $, as in Kubernetes.
        check pid "$$$$" 1
        check pid1 "$(tr '\0' ' ' < /proc/1/cmdline | cut -d' ' -f1)" /bin/sh
        exit $fail
    "#;
    let env_pod = pod(
        "env-and-volumes",
        "Never",
        checks,
        json!({
            "containers": [{
                "name": "main",
                "image": IMAGE,
                "command": ["/bin/sh", "-c", checks],
                "env": [
                    {"name": "GREETING", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "greeting"}}},
                    {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "credentials", "key": "token"}}},
                    {"name": "SAY", "value": "$(GREETING) world"},
                    {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                    {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                    {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                ],
                "envFrom": [{"prefix": "CFG_", "configMapRef": {"name": "settings"}}],
                "volumeMounts": [
                    {"name": "settings", "mountPath": "/etc/settings"},
                    {"name": "credentials", "mountPath": "/etc/credentials"},
                    {"name": "podinfo", "mountPath": "/etc/podinfo"},
                ],
            }],
            "volumes": [
                {"name": "settings", "configMap": {"name": "settings"}},
                {"name": "credentials", "secret": {"secretName": "credentials"}},
                {"name": "podinfo", "downwardAPI": {"items": [
                    {"path": "name", "fieldRef": {"fieldPath": "metadata.name"}},
                    {"path": "namespace", "fieldRef": {"fieldPath": "metadata.namespace"}},
                ]}},
            ],
        }),
    );
    let failing = pod("exits-3", "Never", "exit 3", json!({}));
    let on_failure = pod(
        "fails-once",
        "OnFailure",
        "if [ -f /scratch/once ]; then exit 0; fi; touch /scratch/once; exit 1",
        json!({}),
    );
    // `sleep` is PID 1 of the container and ignores SIGTERM (as in Kubernetes), so
    // the restart ends with SIGKILL after the short grace.
    let mut liveness = pod(
        "liveness",
        "Always",
        "exec sleep 600",
        json!({"terminationGracePeriodSeconds": 2}),
    );
    if let Some(c) = liveness
        .spec
        .as_mut()
        .and_then(|s| s.containers.first_mut())
    {
        c.liveness_probe = Some(
            serde_json::from_value(json!({
                "exec": {"command": ["/bin/sh", "-c", "test -f /scratch/alive"]},
                "periodSeconds": 1,
                "failureThreshold": 2,
            }))
            .expect("probe"),
        );
    }
    // It leaves a process in a session of its own behind, which must die with the
    // container's PID namespace, and is Ready only by an exec probe that sees the
    // container's volume, host name and processes.
    let mut graceful = pod(
        "graceful",
        "Always",
        &format!(
            "setsid sleep {ESCAPEE} & touch /scratch/ready; \
             trap 'echo terminating; exit 0' TERM; while true; do sleep 0.2; done"
        ),
        json!({}),
    );
    if let Some(c) = graceful
        .spec
        .as_mut()
        .and_then(|s| s.containers.first_mut())
    {
        c.readiness_probe = Some(
            serde_json::from_value(json!({
                "exec": {"command": ["/bin/sh", "-c", "test -f /scratch/ready \
                    && test \"$(cat /proc/sys/kernel/hostname)\" = graceful \
                    && test \"$(cat /proc/1/comm)\" = sh"]},
                "periodSeconds": 1,
            }))
            .expect("probe"),
        );
    }
    let restricted_checks = r#"
        set -u
        fail=0
        check() { if [ "$2" = "$3" ]; then echo "ok $1"; else echo "FAIL $1: '$2' != '$3'"; fail=1; fi; }
        status() { awk -v k="$1:" '$1 == k {print $2}' /proc/self/status; }
        check uid "$(id -u)" 1001
        check gid "$(id -g)" 1002
        check fsGroupMember "$(id -G | tr ' ' '\n' | grep -c '^2000$')" 1
        check readOnlyRoot "$(touch /written 2>/dev/null && echo writable || echo refused)" refused
        check capEff "$(status CapEff)" 0000000000000000
        check capBnd "$(status CapBnd)" 0000000000000000
        check noNewPrivs "$(status NoNewPrivs)" 1
        check seccomp "$(status Seccomp)" 2
        limit=$(cat /sys/fs/cgroup/memory.max 2>/dev/null || cat /sys/fs/cgroup/memory/memory.limit_in_bytes)
        check memoryLimit "$limit" 268435456
        check volumeGroup "$(stat -c %g /scratch)" 2000
        echo data > /scratch/file
        check newFileGroup "$(stat -c %g /scratch/file)" 2000
        exit $fail
    "#;
    let restricted = pod(
        "restricted",
        "Never",
        restricted_checks,
        json!({
            "securityContext": {
                "runAsNonRoot": true, "runAsUser": 1001, "runAsGroup": 1002, "fsGroup": 2000,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [{
                "name": "main",
                "image": IMAGE,
                "command": ["/bin/sh", "-c", restricted_checks],
                "securityContext": {
                    "allowPrivilegeEscalation": false,
                    "readOnlyRootFilesystem": true,
                    "capabilities": {"drop": ["ALL"]},
                },
                "resources": {"limits": {"memory": "256Mi"}},
                "volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}],
            }],
        }),
    );
    let as_root = pod(
        "as-root",
        "Never",
        "exit 0",
        json!({"securityContext": {"runAsNonRoot": true, "runAsUser": 0}}),
    );
    let mut missing_image = pod("missing-image", "Never", "exit 0", json!({}));
    if let Some(c) = missing_image
        .spec
        .as_mut()
        .and_then(|s| s.containers.first_mut())
    {
        c.image = Some("ghcr.io/tidecache/cache-node:9.9.9".into());
    }
    for p in [
        &env_pod,
        &failing,
        &on_failure,
        &liveness,
        &graceful,
        &restricted,
        &as_root,
        &missing_image,
    ] {
        pods.create(&post, p).await.expect("creating a pod");
    }

    let done = wait_pod(&pods, "env-and-volumes", "finish", |p| {
        matches!(phase(p), "Succeeded" | "Failed")
    })
    .await;
    let log = cluster
        .kubelet()
        .container_log(NS, "env-and-volumes", "main");
    assert_eq!(
        phase(&done),
        "Succeeded",
        "checks inside the pod:\n{log}\n{}",
        std::fs::read_to_string(cluster.kubelet().log_path()).unwrap_or_default()
    );

    let done = wait_pod(&pods, "restricted", "finish", |p| {
        matches!(phase(p), "Succeeded" | "Failed")
    })
    .await;
    let log = cluster.kubelet().container_log(NS, "restricted", "main");
    assert_eq!(
        phase(&done),
        "Succeeded",
        "the securityContext as seen from inside:\n{log}"
    );
    for (name, reason, needle) in [
        (
            "as-root",
            "CreateContainerConfigError",
            "runAsNonRoot and image will run as root",
        ),
        (
            "missing-image",
            "ErrImagePull",
            "ghcr.io/tidecache/cache-node:9.9.9",
        ),
    ] {
        let refused = wait_pod(&pods, name, "be refused", |p| {
            main_status(p)
                .state
                .and_then(|s| s.waiting)
                .is_some_and(|w| w.reason.as_deref() == Some(reason))
        })
        .await;
        let message = main_status(&refused)
            .state
            .and_then(|s| s.waiting)
            .and_then(|w| w.message)
            .unwrap_or_default();
        assert!(message.contains(needle), "{name}: {message}");
        assert_eq!(phase(&refused), "Pending", "{name} never starts");
    }

    let failed = wait_pod(&pods, "exits-3", "fail", |p| phase(p) == "Failed").await;
    let exit = main_status(&failed)
        .state
        .and_then(|s| s.terminated)
        .map(|t| t.exit_code);
    assert_eq!(exit, Some(3), "the exit code is reported");

    let retried = wait_pod(&pods, "fails-once", "succeed", |p| phase(p) == "Succeeded").await;
    assert_eq!(
        main_status(&retried).restart_count,
        1,
        "OnFailure restarts once"
    );

    let restarted = wait_pod(&pods, "liveness", "be restarted by its probe", |p| {
        main_status(p).restart_count >= 1
    })
    .await;
    assert_eq!(phase(&restarted), "Running");
    // The kubelet's Events explain it in `kubectl describe pod`.
    let start = Instant::now();
    loop {
        let described = cluster
            .plane()
            .kubectl(&["describe", "pod", "liveness", "-n", NS])
            .await
            .expect("kubectl describe pod");
        if [
            "Started",
            "Unhealthy",
            "Liveness probe of main failed",
            "BackOff",
        ]
        .iter()
        .all(|needle| described.contains(needle))
        {
            break;
        }
        assert!(
            start.elapsed() < TIMEOUT,
            "kubectl describe pod lacks the kubelet's events:\n{described}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    wait_pod(&pods, "graceful", "be ready by its exec probe", |p| {
        main_status(p).ready
    })
    .await;
    assert!(
        escapees() > 0,
        "the container's `setsid sleep {ESCAPEE}` runs"
    );
    let asked = Instant::now();
    pods.delete("graceful", &DeleteParams::default())
        .await
        .expect("deleting the pod");
    loop {
        let gone = pods.get_opt("graceful").await.expect("reading").is_none();
        if gone {
            break;
        }
        assert!(
            asked.elapsed() < Duration::from_secs(20),
            "the pod is not gone well within its 30 s grace period after exiting on SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let names: Vec<String> = pods
        .list(&Default::default())
        .await
        .expect("listing")
        .items
        .iter()
        .map(ResourceExt::name_any)
        .collect();
    assert!(!names.contains(&"graceful".to_owned()));
    // Killed with the namespace's PID 1 once the shell exited; a moment for the kernel.
    let start = Instant::now();
    while escapees() > 0 && start.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        escapees(),
        0,
        "the process that left the container's process group died with the container"
    );
}

/// What the `graceful` pod's stray process sleeps, to find it among the host's.
const ESCAPEE: &str = "6061";

/// Live processes running `sleep` [`ESCAPEE`].
fn escapees() -> usize {
    let wanted = format!("sleep\0{ESCAPEE}\0");
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            let dir = e.path();
            let cmdline = std::fs::read(dir.join("cmdline")).unwrap_or_default();
            let zombie = std::fs::read_to_string(dir.join("stat"))
                .is_ok_and(|s| s.rsplit_once(") ").is_some_and(|(_, r)| r.starts_with('Z')));
            cmdline == wanted.as_bytes() && !zombie
        })
        .count()
}
