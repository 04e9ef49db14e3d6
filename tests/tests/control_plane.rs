//! Proves the harness starts the real components: the node lifecycle controller in
//! kube-controller-manager clears the not-ready taints of the fake nodes, and the
//! built kubectl talks to the apiserver with the admin kubeconfig.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Node, Pod, ServiceAccount};
use k8s_openapi::api::rbac::v1::{RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use tidecache_e2e::control_plane::{
    ControlPlane, FakeNodes, NodeTemplate, ZONE_LABEL, client_from,
};

const ZONES: [&str; 3] = ["zone-a", "zone-b", "zone-c"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_plane_runs_zoned_ready_nodes() {
    let plane = ControlPlane::start()
        .await
        .unwrap_or_else(|e| panic!("control plane starts: {e}"));
    let client = plane.client().await.expect("admin client");

    let nodes = FakeNodes::create(&client, &ZONES, 2, &NodeTemplate::default())
        .await
        .expect("fake nodes created");
    assert_eq!(nodes.names().len(), 6);
    nodes
        .wait_ready(Duration::from_secs(120))
        .await
        .expect("nodes Ready and untainted by the node lifecycle controller");

    // Contrast: a node whose kubelet reports NotReady keeps the not-ready taint the
    // TaintNodesByCondition admission gives every new Node, so the fake nodes above were
    // untainted by the node lifecycle controller judging their reported status. Judged
    // on the controller's observable decisions about this very node, not on a pause
    // that passes whenever the controller simply has not got to it yet.
    let node_api = Api::<Node>::all(client.clone());
    let taint = |key: &str, effect: &str| (key.to_owned(), effect.to_owned());
    let not_ready = taint("node.kubernetes.io/not-ready", "NoSchedule");
    let silent = Node {
        metadata: ObjectMeta {
            name: Some("silent-node".into()),
            ..ObjectMeta::default()
        },
        ..Node::default()
    };
    let silent = node_api
        .create(&PostParams::default(), &silent)
        .await
        .expect("create silent node");
    assert!(
        taints_of(&silent).contains(&not_ready),
        "admission taints new nodes: {:?}",
        taints_of(&silent)
    );
    nodes_report(&node_api, "silent-node", false).await;
    // The controller's two decisions about the node, each visible as a taint only it
    // adds: its condition-to-taint pass maps MemoryPressure=True to this taint, computing
    // the node's whole NoSchedule set from its conditions at once...
    let pressure = taint("node.kubernetes.io/memory-pressure", "NoSchedule");
    // ...and its health monitor evicts from a node it judged NotReady with this one.
    let evicting = taint("node.kubernetes.io/not-ready", "NoExecute");
    let decided = wait_taints(&node_api, "silent-node", |t| {
        t.contains(&pressure) && t.contains(&evicting)
    })
    .await
    .unwrap_or_else(|last| {
        panic!(
            "the node lifecycle controller decides on a NotReady node under memory \
             pressure: {pressure:?} and {evicting:?}; last taints {last:?}"
        )
    });
    assert!(
        taints_of(&decided).contains(&not_ready),
        "having judged its conditions, the controller keeps a NotReady node tainted \
         {not_ready:?}: {:?}",
        taints_of(&decided)
    );
    // And it is the reported status that decides: Ready again, every taint goes.
    nodes_report(&node_api, "silent-node", true).await;
    wait_taints(&node_api, "silent-node", |t| {
        !t.contains(&not_ready) && !t.contains(&pressure) && !t.contains(&evicting)
    })
    .await
    .unwrap_or_else(|last| panic!("a node reporting Ready loses its taints; last {last:?}"));
    node_api
        .delete("silent-node", &DeleteParams::default())
        .await
        .expect("delete silent node");

    let listed = node_api
        .list(&ListParams::default().labels(ZONE_LABEL))
        .await
        .expect("list nodes");
    for zone in ZONES {
        let in_zone = listed
            .items
            .iter()
            .filter(|n| {
                n.metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(ZONE_LABEL))
                    .map(String::as_str)
                    == Some(zone)
            })
            .count();
        assert_eq!(in_zone, 2, "two nodes in {zone}");
    }

    let table = plane
        .kubectl(&["get", "nodes", "-L", ZONE_LABEL])
        .await
        .expect("kubectl get nodes");
    println!("{table}");
    let rows: Vec<&str> = table.lines().skip(1).collect();
    assert_eq!(rows.len(), 6, "six nodes listed:\n{table}");
    for name in nodes.names() {
        let row = rows
            .iter()
            .find(|r| r.split_whitespace().next() == Some(name.as_str()))
            .unwrap_or_else(|| panic!("{name} listed:\n{table}"));
        let columns: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(columns[1], "Ready", "{name} Ready in kubectl:\n{table}");
        let zone = name.split("-node-").next().unwrap_or_default();
        assert_eq!(
            columns.last().copied(),
            Some(zone),
            "{name} zone column:\n{table}"
        );
    }

    let version = plane
        .kubectl(&["version", "-o", "json"])
        .await
        .expect("kubectl version");
    let version: serde_json::Value = serde_json::from_str(&version).expect("version JSON");
    let server = version["serverVersion"]["gitVersion"]
        .as_str()
        .unwrap_or_default();
    let client_version = version["clientVersion"]["gitVersion"]
        .as_str()
        .unwrap_or_default();
    assert!(
        server.starts_with("v1."),
        "server reports a release version: {version}"
    );
    assert_eq!(
        server, client_version,
        "kubectl and apiserver from one release"
    );
}

/// Reports the node's conditions as a kubelet would: `Ready` as `ready`,
/// `MemoryPressure` as its opposite.
async fn nodes_report(nodes: &Api<Node>, name: &str, ready: bool) {
    let (ready, pressure) = if ready {
        ("True", "False")
    } else {
        ("False", "True")
    };
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let condition = |type_: &str, status: &str| {
        serde_json::json!({
            "type": type_, "status": status, "reason": "Test", "message": "test",
            "lastHeartbeatTime": now, "lastTransitionTime": now,
        })
    };
    let status = serde_json::json!({"status": {"conditions": [
        condition("Ready", ready),
        condition("MemoryPressure", pressure),
    ]}});
    nodes
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("report the node's conditions");
}

/// Waits up to 60 s until the node's taints (key, effect) satisfy `done`; the last
/// taints seen if they never do.
async fn wait_taints(
    nodes: &Api<Node>,
    name: &str,
    done: impl Fn(&[(String, String)]) -> bool,
) -> Result<Node, Vec<(String, String)>> {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let node = nodes.get(name).await.expect("read node");
        let taints = taints_of(&node);
        if done(&taints) {
            return Ok(node);
        }
        if std::time::Instant::now() > deadline {
            return Err(taints);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The node's taints as (key, effect).
fn taints_of(node: &Node) -> Vec<(String, String)> {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .map(|t| {
            t.iter()
                .map(|t| (t.key.clone(), t.effect.clone()))
                .collect()
        })
        .unwrap_or_default()
}

/// A ServiceAccount token minted with the TokenRequest API authenticates as that
/// ServiceAccount and gets exactly what RBAC grants: how the operator under test will
/// prove that the shipped RBAC suffices.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_account_tokens_are_subject_to_rbac() {
    const NS: &str = "e2e-rbac";
    let plane = ControlPlane::start()
        .await
        .unwrap_or_else(|e| panic!("control plane starts: {e}"));
    let admin = plane.client().await.expect("admin client");
    let namespace = Namespace {
        metadata: ObjectMeta {
            name: Some(NS.into()),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };
    Api::<Namespace>::all(admin.clone())
        .create(&PostParams::default(), &namespace)
        .await
        .expect("create namespace");
    let account = ServiceAccount {
        metadata: ObjectMeta {
            name: Some("reader".into()),
            ..ObjectMeta::default()
        },
        ..ServiceAccount::default()
    };
    Api::<ServiceAccount>::namespaced(admin.clone(), NS)
        .create(&PostParams::default(), &account)
        .await
        .expect("create service account");

    let kubeconfig = plane
        .service_account_kubeconfig(NS, "reader", 3600)
        .await
        .expect("token kubeconfig");
    let whoami = plane
        .kubectl_as(
            &kubeconfig,
            &[
                "auth",
                "whoami",
                "-o",
                "jsonpath={.status.userInfo.username}",
            ],
        )
        .await
        .expect("kubectl auth whoami");
    assert_eq!(whoami, "system:serviceaccount:e2e-rbac:reader");

    let reader = client_from(&kubeconfig).await.expect("reader client");
    let forbidden =
        |r: Result<_, kube::Error>| matches!(r, Err(kube::Error::Api(s)) if s.code == 403);
    let pods = Api::<Pod>::namespaced(reader.clone(), NS);
    let nodes = Api::<Node>::all(reader);
    assert!(forbidden(
        pods.list(&ListParams::default()).await.map(|_| ())
    ));
    assert!(forbidden(
        nodes.list(&ListParams::default()).await.map(|_| ())
    ));

    let binding = RoleBinding {
        metadata: ObjectMeta {
            name: Some("reader-view".into()),
            ..ObjectMeta::default()
        },
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "ClusterRole".into(),
            name: "view".into(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: "reader".into(),
            namespace: Some(NS.into()),
            ..Subject::default()
        }]),
    };
    Api::<RoleBinding>::namespaced(admin, NS)
        .create(&PostParams::default(), &binding)
        .await
        .expect("bind view");
    // The RBAC authorizer sees the binding through an informer: allow it a moment.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        match pods.list(&ListParams::default()).await {
            Ok(_) => break,
            Err(e) => assert!(
                std::time::Instant::now() < deadline,
                "view binding never took effect: {e}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        forbidden(nodes.list(&ListParams::default()).await.map(|_| ())),
        "a namespaced view binding grants nothing cluster-wide"
    );
}
