//! Proves our real cache-node image runs under the **real** kubelet v1.37 and containerd,
//! joined to the real control plane, with exactly what the operator asks of a cache pod:
//! the restricted security context (non-root 65532, fsGroup, RuntimeDefault seccomp, no
//! privilege escalation, read-only root, all capabilities dropped), a 256Mi memory limit
//! and an `emptyDir` at `/data`. The test kubelet (`tests/src/kubelet`) imitates these; this
//! test is the reference it is checked against: the pod must serve, size its store from the
//! cgroup limit runc set, and a pod breaking `runAsNonRoot` must be refused by kubelet itself.
//!
//! Needs root, containerd (`apt-get install -y containerd`), buildah, gcc and
//! containernetworking-plugins; see `tidecache_e2e::real_kubelet`.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, PostParams};
use tidecache_e2e::console::say;
use tidecache_e2e::control_plane::ControlPlane;
use tidecache_e2e::http;
use tidecache_e2e::kubelet::Images;
use tidecache_e2e::real_kubelet::{LayoutImage, NODE_NAME, RealNode};

/// The image reference the operator writes into its StatefulSets.
const IMAGE: &str = "ghcr.io/tidecache/cache-node:0.1.0";
const NAMESPACE: &str = "default";
const MEMORY_LIMIT: u64 = 256 * 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_node_runs_under_the_real_kubelet_and_containerd() {
    let started = Instant::now();
    say("real kubelet: building the images (cargo + tests/images/build.sh)");
    let images = tokio::task::spawn_blocking(Images::build)
        .await
        .expect("image build task")
        .unwrap_or_else(|e| panic!("images build: {e}"));
    let layouts = images.layouts();

    say("real kubelet: starting the control plane");
    let plane = ControlPlane::start()
        .await
        .unwrap_or_else(|e| panic!("control plane starts: {e}"));
    let mut node = RealNode::start(
        &plane,
        &[LayoutImage {
            layout: layouts.join("cache-node"),
            repository: "ghcr.io/tidecache/cache-node".into(),
        }],
    )
    .await
    .unwrap_or_else(|e| panic!("real node starts: {e}"));
    let pods: Api<Pod> = Api::namespaced(plane.client().await.expect("client"), NAMESPACE);

    // The cache pod, as the operator's StatefulSet template makes it.
    say("real kubelet: creating pod cache-0");
    pods.create(&PostParams::default(), &cache_pod("cache-0", None))
        .await
        .expect("create cache-0");
    let pod = wait_pod(&mut node, &pods, "cache-0", |pod| {
        let ready = container_status(pod).is_some_and(|s| s.ready);
        (!ready).then(|| describe(pod))
    })
    .await;

    let status = container_status(&pod).expect("container status");
    let container_id = status.container_id.clone().unwrap_or_default();
    assert!(
        container_id.starts_with("containerd://"),
        "run by containerd: {container_id:?}"
    );
    assert!(
        status
            .state
            .as_ref()
            .and_then(|s| s.running.as_ref())
            .is_some(),
        "running: {:?}",
        status.state
    );
    assert_eq!(
        status.image, IMAGE,
        "the operator's reference, resolved locally"
    );
    let qos = pod.status.as_ref().and_then(|s| s.qos_class.clone());
    assert_eq!(qos.as_deref(), Some("Burstable"), "a memory limit only");

    // The store answers on the pod's IP, from the host over the node's bridge.
    let ip: IpAddr = pod
        .status
        .as_ref()
        .and_then(|s| s.pod_ip.as_deref())
        .expect("pod IP")
        .parse()
        .expect("pod IP parses");
    let addr = SocketAddr::new(ip, 8080);
    let put = http::request(
        addr,
        "PUT",
        "/v1/keys/greeting",
        b"hello from the real kubelet",
        Duration::from_secs(10),
    )
    .await
    .expect("PUT");
    assert!((200..300).contains(&put.status), "PUT: {put:?}");
    let get = http::request(
        addr,
        "GET",
        "/v1/keys/greeting",
        b"",
        Duration::from_secs(10),
    )
    .await
    .expect("GET");
    assert_eq!(get.status, 200, "GET: {}", get.text());
    assert_eq!(get.text(), "hello from the real kubelet");
    say(format!("real kubelet: PUT and GET on {addr} answered"));

    // kubectl logs goes apiserver → kubelet's API → containerd's log file: the store sized
    // itself from the memory cgroup runc created for the container's limit.
    let logs = plane
        .kubectl(&["logs", "-n", NAMESPACE, "cache-0"])
        .await
        .expect("kubectl logs");
    let capacity = format!("75% of the cgroup memory limit of {MEMORY_LIMIT} bytes");
    assert!(
        logs.contains(&capacity),
        "{capacity:?} in the logs:\n{logs}"
    );

    // runAsNonRoot with runAsUser 0: kubelet refuses to create the container.
    say("real kubelet: creating pod as-root (must be refused)");
    pods.create(&PostParams::default(), &cache_pod("as-root", Some(0)))
        .await
        .expect("create as-root");
    let refused = wait_pod(&mut node, &pods, "as-root", |pod| {
        let reason = container_status(pod)
            .and_then(|s| s.state.as_ref())
            .and_then(|s| s.waiting.as_ref())
            .and_then(|w| w.reason.clone());
        (reason.as_deref() != Some("CreateContainerConfigError")).then(|| describe(pod))
    })
    .await;
    let waiting = container_status(&refused)
        .and_then(|s| s.state.clone())
        .and_then(|s| s.waiting)
        .expect("waiting");
    let message = waiting.message.unwrap_or_default();
    assert!(
        message.contains("non-root"),
        "kubelet's reason names the policy: {message:?}"
    );
    assert!(
        container_status(&refused).is_some_and(|s| s.container_id.is_none()),
        "no container was created"
    );

    // Deleting: kubelet stops the containers and the apiserver forgets the pods.
    say("real kubelet: deleting the pods");
    for name in ["cache-0", "as-root"] {
        pods.delete(name, &DeleteParams::default())
            .await
            .unwrap_or_else(|e| panic!("delete {name}: {e}"));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    for name in ["cache-0", "as-root"] {
        while pods.get_opt(name).await.expect("get pod").is_some() {
            assert!(
                Instant::now() < deadline,
                "pod {name} still exists after 60 s"
            );
            node.check_running().expect("kubelet and containerd run");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    let tasks = node.ctr(&["tasks", "ls"]).expect("ctr tasks ls");
    assert!(
        !tasks.contains("RUNNING"),
        "no container runs after the deletion:\n{tasks}"
    );

    drop(node);
    drop(plane);
    say(format!(
        "real kubelet: test done in {:.1?}",
        started.elapsed()
    ));
}

/// A cache pod pinned to the real node, with the operator's restricted security context;
/// `run_as_user` overrides the container's user (0: a pod the kubelet must refuse).
fn cache_pod(name: &str, run_as_user: Option<i64>) -> Pod {
    let mut container_security = serde_json::json!({
        "allowPrivilegeEscalation": false,
        "readOnlyRootFilesystem": true,
        "runAsNonRoot": true,
        "capabilities": { "drop": ["ALL"] },
        "seccompProfile": { "type": "RuntimeDefault" },
    });
    if let Some(uid) = run_as_user {
        container_security["runAsUser"] = uid.into();
    }
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": { "name": name, "labels": { "app.kubernetes.io/name": "tidecache" } },
        "spec": {
            "nodeName": NODE_NAME,
            "automountServiceAccountToken": false,
            "terminationGracePeriodSeconds": 5,
            "securityContext": {
                "runAsNonRoot": true,
                "runAsUser": 65532,
                "runAsGroup": 65532,
                "fsGroup": 65532,
                "fsGroupChangePolicy": "OnRootMismatch",
                "seccompProfile": { "type": "RuntimeDefault" },
            },
            "containers": [{
                "name": "cache",
                "image": IMAGE,
                "imagePullPolicy": "Never",
                "args": ["--listen=0.0.0.0:8080", "--data-dir=/data"],
                "ports": [{ "name": "http", "containerPort": 8080 }],
                "readinessProbe": {
                    "httpGet": { "path": "/readyz", "port": 8080 },
                    "periodSeconds": 1,
                },
                "resources": { "limits": { "memory": "256Mi" } },
                "securityContext": container_security,
                "volumeMounts": [{ "name": "data", "mountPath": "/data" }],
            }],
            "volumes": [{ "name": "data", "emptyDir": {} }],
        },
    }))
    .expect("pod spec")
}

fn container_status(pod: &Pod) -> Option<&k8s_openapi::api::core::v1::ContainerStatus> {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|c| c.first())
}

fn describe(pod: &Pod) -> String {
    let phase = pod.status.as_ref().and_then(|s| s.phase.clone());
    format!(
        "phase {phase:?}, container {:?}",
        container_status(pod).map(|s| &s.state)
    )
}

/// Polls the pod until `pending` returns `None`, for at most 120 s, printing its state every
/// 10 s; returns the pod.
async fn wait_pod(
    node: &mut RealNode,
    pods: &Api<Pod>,
    name: &str,
    pending: impl Fn(&Pod) -> Option<String>,
) -> Pod {
    let start = Instant::now();
    let mut said = Instant::now();
    loop {
        node.check_running().expect("kubelet and containerd run");
        let pod = pods.get(name).await.expect("get pod");
        let Some(state) = pending(&pod) else {
            say(format!(
                "real kubelet: pod {name} as expected after {:.1?}",
                start.elapsed()
            ));
            return pod;
        };
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "pod {name} after 120 s: {state}"
        );
        if said.elapsed() > Duration::from_secs(10) {
            say(format!("real kubelet: waiting for pod {name}: {state}"));
            said = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
