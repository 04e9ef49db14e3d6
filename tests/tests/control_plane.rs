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

    // Contrast: the TaintNodesByCondition admission taints every new Node, and a node
    // whose kubelet reports NotReady keeps the taint, so the fake nodes above were
    // untainted by the node lifecycle controller judging their reported status.
    let node_api = Api::<Node>::all(client.clone());
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
    let taints = |n: &Node| -> Vec<String> {
        n.spec
            .as_ref()
            .and_then(|s| s.taints.as_ref())
            .map(|t| t.iter().map(|t| t.key.clone()).collect())
            .unwrap_or_default()
    };
    assert!(
        taints(&silent).contains(&"node.kubernetes.io/not-ready".to_owned()),
        "admission taints new nodes: {:?}",
        taints(&silent)
    );
    let not_ready = serde_json::json!({"status": {"conditions": [{
        "type": "Ready", "status": "False", "reason": "KubeletNotReady", "message": "test",
    }]}});
    node_api
        .patch_status(
            "silent-node",
            &PatchParams::default(),
            &Patch::Merge(&not_ready),
        )
        .await
        .expect("report NotReady");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let silent = node_api.get("silent-node").await.expect("get silent node");
    assert!(
        taints(&silent).contains(&"node.kubernetes.io/not-ready".to_owned()),
        "a NotReady node stays tainted: {:?}",
        taints(&silent)
    );
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
