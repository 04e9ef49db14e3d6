//! Fake nodes: Node objects spread over zones that behave, towards the control plane,
//! like healthy kubelets. They report Ready with capacity and renew their Lease in
//! `kube-node-lease` every few seconds, which is what the node lifecycle controller
//! watches: it then removes the `node.kubernetes.io/not-ready` taint that the
//! TaintNodesByCondition admission put on every new Node, exactly as for a real
//! kubelet. Nothing is forced through the API that a real cluster would not do.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{
    Node, NodeAddress, NodeCondition, NodeStatus, NodeSystemInfo, Taint,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference, Time};
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};

use super::error::{Error, Result};

/// The label the scheduler's topology spreading and tidecache's operator use for zones.
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";
/// The per-node topology label.
pub const HOSTNAME_LABEL: &str = "kubernetes.io/hostname";
/// The namespace in which kubelets renew their heartbeat Leases.
const LEASE_NAMESPACE: &str = "kube-node-lease";
/// As a kubelet: renew every 10 s, lease valid for 40 s.
const RENEW_EVERY: Duration = Duration::from_secs(10);
const LEASE_SECONDS: i32 = 40;
/// Taints that mean the node lifecycle controller does not consider the node healthy.
const UNHEALTHY_TAINTS: [&str; 2] = [
    "node.kubernetes.io/not-ready",
    "node.kubernetes.io/unreachable",
];

/// What each fake node offers; the defaults resemble a small cloud VM.
#[derive(Debug, Clone)]
pub struct NodeTemplate {
    /// `cpu` capacity and allocatable, e.g. `"4"`.
    pub cpu: String,
    /// `memory` capacity and allocatable, e.g. `"8Gi"`.
    pub memory: String,
    /// How many pods the node accepts.
    pub pods: u32,
}

impl Default for NodeTemplate {
    fn default() -> Self {
        Self {
            cpu: "4".into(),
            memory: "8Gi".into(),
            pods: 110,
        }
    }
}

/// Fake nodes and the task that keeps them alive; dropping this stops the heartbeats,
/// after which the node lifecycle controller will mark them NotReady (the Node objects
/// themselves stay, as after a real kubelet stopped).
pub struct FakeNodes {
    client: Client,
    names: Vec<String>,
    heartbeat: tokio::task::JoinHandle<()>,
}

impl FakeNodes {
    /// Creates `per_zone` nodes in each of `zones` (named `<zone>-node-<n>`), reports
    /// them Ready with `template`'s capacity, creates their Leases and starts renewing
    /// them. Returns without waiting for the taints to go: see [`Self::wait_ready`].
    pub async fn create(
        client: &Client,
        zones: &[&str],
        per_zone: usize,
        template: &NodeTemplate,
    ) -> Result<Self> {
        let version = client
            .apiserver_version()
            .await
            .map_err(|e| Error::api("reading the server version", e))?
            .git_version;
        let nodes: Api<Node> = Api::all(client.clone());
        let leases: Api<Lease> = Api::namespaced(client.clone(), LEASE_NAMESPACE);
        let mut fake = Vec::new();
        for zone in zones {
            for n in 1..=per_zone {
                let name = format!("{zone}-node-{n}");
                let node = nodes
                    .create(&PostParams::default(), &node_object(&name, zone))
                    .await
                    .map_err(|e| Error::api(format!("creating Node {name}"), e))?;
                let status = node_status(&name, template, &version);
                let uid = node.metadata.uid.unwrap_or_default();
                leases
                    .create(&PostParams::default(), &lease_object(&name, &uid))
                    .await
                    .map_err(|e| Error::api(format!("creating Lease for {name}"), e))?;
                fake.push((name, status));
            }
        }
        for (name, status) in &fake {
            report_status(&nodes, name, status).await?;
        }
        let names = fake.iter().map(|(n, _)| n.clone()).collect();
        let heartbeat = tokio::spawn(heartbeat(nodes, leases, fake));
        Ok(Self {
            client: client.clone(),
            names,
            heartbeat,
        })
    }

    /// The names of the nodes.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Waits until every node is Ready and the node lifecycle controller has removed
    /// its not-ready/unreachable taints, i.e. until the scheduler will place pods on it.
    pub async fn wait_ready(&self, timeout: Duration) -> Result<()> {
        let nodes: Api<Node> = Api::all(self.client.clone());
        let start = Instant::now();
        loop {
            let mut waiting = Vec::new();
            for name in &self.names {
                let node = nodes
                    .get(name)
                    .await
                    .map_err(|e| Error::api(format!("reading Node {name}"), e))?;
                if let Some(problem) = unhealthy(&node) {
                    waiting.push(format!("{name}: {problem}"));
                }
            }
            if waiting.is_empty() {
                return Ok(());
            }
            if start.elapsed() > timeout {
                return Err(Error::Timeout {
                    what: "the fake nodes to become Ready and untainted".into(),
                    waited: timeout,
                    last: waiting.join("; "),
                });
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

impl Drop for FakeNodes {
    fn drop(&mut self) {
        self.heartbeat.abort();
    }
}

/// Why a node is not yet usable, or `None` if it is Ready and untainted.
fn unhealthy(node: &Node) -> Option<String> {
    let status = node.status.as_ref();
    let ready = status
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .map(|c| c.status.as_str());
    if ready != Some("True") {
        return Some(format!("Ready={}", ready.unwrap_or("missing")));
    }
    let taints: Vec<&Taint> = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .map(|t| {
            t.iter()
                .filter(|t| UNHEALTHY_TAINTS.contains(&t.key.as_str()))
                .collect()
        })
        .unwrap_or_default();
    (!taints.is_empty()).then(|| {
        let keys: Vec<String> = taints
            .iter()
            .map(|t| format!("{}:{}", t.key, t.effect))
            .collect();
        format!("tainted {}", keys.join(","))
    })
}

fn node_object(name: &str, zone: &str) -> Node {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    let labels = BTreeMap::from([
        (ZONE_LABEL.to_owned(), zone.to_owned()),
        (HOSTNAME_LABEL.to_owned(), name.to_owned()),
        ("kubernetes.io/os".to_owned(), "linux".to_owned()),
        ("kubernetes.io/arch".to_owned(), arch.to_owned()),
    ]);
    Node {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            labels: Some(labels),
            ..ObjectMeta::default()
        },
        ..Node::default()
    }
}

fn node_status(name: &str, template: &NodeTemplate, version: &str) -> NodeStatus {
    let now = Time(Timestamp::now());
    let condition = |type_: &str, status: &str, reason: &str, message: &str| NodeCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_heartbeat_time: Some(now.clone()),
        last_transition_time: Some(now.clone()),
    };
    let resources = BTreeMap::from([
        ("cpu".to_owned(), Quantity(template.cpu.clone())),
        ("memory".to_owned(), Quantity(template.memory.clone())),
        ("pods".to_owned(), Quantity(template.pods.to_string())),
        ("ephemeral-storage".to_owned(), Quantity("100Gi".into())),
    ]);
    NodeStatus {
        conditions: Some(vec![
            condition(
                "Ready",
                "True",
                "KubeletReady",
                "fake kubelet is posting ready status",
            ),
            condition(
                "MemoryPressure",
                "False",
                "KubeletHasSufficientMemory",
                "fake",
            ),
            condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "fake"),
            condition("PIDPressure", "False", "KubeletHasSufficientPID", "fake"),
        ]),
        capacity: Some(resources.clone()),
        allocatable: Some(resources),
        addresses: Some(vec![
            NodeAddress {
                type_: "InternalIP".into(),
                address: "127.0.0.1".into(),
            },
            NodeAddress {
                type_: "Hostname".into(),
                address: name.into(),
            },
        ]),
        node_info: Some(NodeSystemInfo {
            architecture: std::env::consts::ARCH.into(),
            boot_id: name.into(),
            container_runtime_version: "tidecache-e2e://0".into(),
            kernel_version: "fake".into(),
            kube_proxy_version: String::new(),
            kubelet_version: version.into(),
            machine_id: name.into(),
            operating_system: "linux".into(),
            os_image: "tidecache-e2e fake node".into(),
            system_uuid: name.into(),
            ..NodeSystemInfo::default()
        }),
        ..NodeStatus::default()
    }
}

fn lease_object(name: &str, node_uid: &str) -> Lease {
    Lease {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(LEASE_NAMESPACE.to_owned()),
            // As the kubelet does, so the Lease goes away with its Node.
            owner_references: Some(vec![OwnerReference {
                api_version: "v1".into(),
                kind: "Node".into(),
                name: name.to_owned(),
                uid: node_uid.to_owned(),
                ..OwnerReference::default()
            }]),
            ..ObjectMeta::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(name.to_owned()),
            lease_duration_seconds: Some(LEASE_SECONDS),
            renew_time: Some(MicroTime(Timestamp::now())),
            ..LeaseSpec::default()
        }),
    }
}

async fn report_status(nodes: &Api<Node>, name: &str, status: &NodeStatus) -> Result<()> {
    let patch = serde_json::json!({ "status": status });
    nodes
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|e| Error::api(format!("reporting the status of Node {name}"), e))?;
    Ok(())
}

/// Renews every Lease and re-reports Ready with fresh heartbeat times, forever (the
/// task is aborted when [`FakeNodes`] is dropped). Failures are reported and retried
/// on the next round: one missed renewal is harmless within the 40 s lease.
async fn heartbeat(nodes: Api<Node>, leases: Api<Lease>, mut fake: Vec<(String, NodeStatus)>) {
    let mut tick = tokio::time::interval(RENEW_EVERY);
    tick.tick().await;
    loop {
        tick.tick().await;
        let now = Timestamp::now();
        for (name, status) in &mut fake {
            let renew = serde_json::json!({ "spec": { "renewTime": MicroTime(now) } });
            if let Err(e) = leases
                .patch(name, &PatchParams::default(), &Patch::Merge(&renew))
                .await
            {
                crate::console::say(format!("fake node {name}: renewing its lease failed: {e}"));
            }
            for condition in status.conditions.iter_mut().flatten() {
                condition.last_heartbeat_time = Some(Time(now));
            }
            if let Err(e) = report_status(&nodes, name, status).await {
                crate::console::say(format!("fake node {name}: {e}"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::NodeSpec;

    use super::*;

    fn node(ready: Option<&str>, taints: &[&str]) -> Node {
        Node {
            spec: Some(NodeSpec {
                taints: Some(
                    taints
                        .iter()
                        .map(|k| Taint {
                            key: (*k).into(),
                            effect: "NoSchedule".into(),
                            ..Taint::default()
                        })
                        .collect(),
                ),
                ..NodeSpec::default()
            }),
            status: Some(NodeStatus {
                conditions: ready.map(|s| {
                    vec![NodeCondition {
                        type_: "Ready".into(),
                        status: s.into(),
                        ..NodeCondition::default()
                    }]
                }),
                ..NodeStatus::default()
            }),
            ..Node::default()
        }
    }

    #[test]
    fn ready_and_untainted_is_healthy() {
        assert_eq!(unhealthy(&node(Some("True"), &[])), None);
        // Taints other than the health ones do not matter.
        assert_eq!(unhealthy(&node(Some("True"), &["dedicated"])), None);
    }

    #[test]
    fn not_ready_or_health_tainted_is_unhealthy() {
        assert_eq!(
            unhealthy(&node(None, &[])).as_deref(),
            Some("Ready=missing")
        );
        assert_eq!(
            unhealthy(&node(Some("Unknown"), &[])).as_deref(),
            Some("Ready=Unknown")
        );
        assert_eq!(
            unhealthy(&node(Some("True"), &["node.kubernetes.io/not-ready"])).as_deref(),
            Some("tainted node.kubernetes.io/not-ready:NoSchedule")
        );
    }

    #[test]
    fn status_reports_capacity_and_ready() {
        let status = node_status("n1", &NodeTemplate::default(), "v1.37.2");
        let allocatable = status.allocatable.expect("allocatable");
        assert_eq!(allocatable["pods"].0, "110");
        assert_eq!(allocatable["cpu"].0, "4");
        let ready = status
            .conditions
            .expect("conditions")
            .into_iter()
            .find(|c| c.type_ == "Ready")
            .expect("Ready condition");
        assert_eq!(ready.status, "True");
    }
}
