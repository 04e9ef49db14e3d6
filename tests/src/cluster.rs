//! The whole local cluster the end-to-end tests and the demo run against: the pod
//! network, the control plane (serving pods on the network's gateway), 3 zones × 2
//! fake nodes and the test kubelet running their pods, and the operator installed from
//! `deploy/` with `kubectl apply -k`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use kube::Client;
use kube::api::Api;

use crate::control_plane::proxy::{KubeProxy, ProxyNetwork};
use crate::control_plane::{ControlPlane, Error, FakeNodes, NodeTemplate, Options, Result};
use crate::kubelet::{Images, Kubelet, PodNetwork, workspace_root};

/// The zones of the fake nodes.
pub const ZONES: [&str; 3] = ["zone-a", "zone-b", "zone-c"];
/// Nodes per zone.
pub const NODES_PER_ZONE: usize = 2;
/// The namespace `deploy/` installs the operator into.
pub const OPERATOR_NAMESPACE: &str = "tidecache-system";
/// The operator's Deployment in `deploy/operator.yaml`.
pub const OPERATOR_DEPLOYMENT: &str = "tidecache-operator";
/// The operator's ServiceAccount in `deploy/rbac.yaml`.
pub const OPERATOR_SERVICE_ACCOUNT: &str = "tidecache-operator";
/// The operator's leader Lease (its `--lease-name` default) in [`OPERATOR_NAMESPACE`].
pub const OPERATOR_LEASE: &str = "tidecache-operator";

/// The user the operator's pods authenticate as, whose requests the apiserver audits
/// ([`ControlPlane::audit_events`]).
pub fn operator_user() -> String {
    format!("system:serviceaccount:{OPERATOR_NAMESPACE}:{OPERATOR_SERVICE_ACCOUNT}")
}

/// A running local cluster. Fields drop in order: the kubelet (killing the pods) before
/// the nodes and the control plane, the network last.
pub struct LocalCluster {
    kubelet: Kubelet,
    /// Held for its heartbeat, which keeps the nodes Ready.
    _nodes: FakeNodes,
    /// Routes the Services' ClusterIPs, when asked for ([`LocalCluster::start_routed`]).
    _proxy: Option<KubeProxy>,
    plane: ControlPlane,
    network: Arc<PodNetwork>,
}

impl LocalCluster {
    /// Builds what is missing (control plane, our binaries), starts everything and
    /// returns once the nodes are Ready and the kubelet runs. Service ClusterIPs are not
    /// routed (see [`Self::start_routed`]).
    pub async fn start() -> Result<Self> {
        Self::start_with(false).await
    }

    /// [`Self::start`], and kube-proxy routing the Services' ClusterIPs, from the pods and
    /// from the host (`control_plane::proxy`). One such cluster per machine at a time: the
    /// rules live in the host's iptables.
    pub async fn start_routed() -> Result<Self> {
        Self::start_with(true).await
    }

    async fn start_with(route_services: bool) -> Result<Self> {
        let started = Instant::now();
        if !rustix::process::geteuid().is_root() {
            return Err(Error::io(
                "starting the local cluster",
                std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    "the test kubelet needs root: it creates a bridge, a network namespace per \
                     pod and a mount namespace per container",
                ),
            ));
        }
        let images = tokio::task::spawn_blocking(Images::build)
            .await
            .map_err(|e| Error::io("building the images", std::io::Error::other(e)))??;
        let network = Arc::new(PodNetwork::create()?);
        let plane = ControlPlane::start_with(Options {
            pod_gateway: Some(network.gateway()),
            audited_users: vec![operator_user()],
        })
        .await?;
        let client = plane.client().await?;
        let nodes =
            FakeNodes::create(&client, &ZONES, NODES_PER_ZONE, &NodeTemplate::default()).await?;
        nodes.wait_ready(Duration::from_secs(120)).await?;
        let proxy = if route_services {
            let node = nodes.names().first().cloned().unwrap_or_default();
            let routed = ProxyNetwork {
                pod_cidr: network.cidr(),
                bridge: network.bridge(),
                node: &node,
            };
            Some(KubeProxy::start(&plane, &routed).await?)
        } else {
            None
        };
        let kubelet = Kubelet::start(
            client,
            nodes.names(),
            network.clone(),
            images,
            plane.apiserver_port(),
        )
        .await?;
        crate::console::say(format!(
            "local cluster: control plane, {} nodes and the kubelet up in {:.1?}",
            nodes.names().len(),
            started.elapsed()
        ));
        Ok(Self {
            kubelet,
            _nodes: nodes,
            _proxy: proxy,
            plane,
            network,
        })
    }

    /// The control plane.
    pub fn plane(&self) -> &ControlPlane {
        &self.plane
    }

    /// The kubelet.
    pub fn kubelet(&self) -> &Kubelet {
        &self.kubelet
    }

    /// The pod network.
    pub fn network(&self) -> &PodNetwork {
        &self.network
    }

    /// An admin client.
    pub async fn client(&self) -> Result<Client> {
        self.plane.client().await
    }

    /// The workspace's `deploy/` directory.
    pub fn deploy_dir() -> PathBuf {
        workspace_root().join("deploy")
    }

    /// `kubectl apply -k deploy/` and waits until the operator Deployment is available
    /// (its pods run through the kubelet with the token of their own ServiceAccount).
    pub async fn deploy_operator(&self, timeout: Duration) -> Result<()> {
        let deploy = Self::deploy_dir();
        self.apply_kustomization(&deploy).await?;
        self.wait_operator(timeout).await?;
        self.wait_webhook(timeout).await
    }

    /// Waits until the CacheCluster admission webhook answers: a server-side dry run of a
    /// valid CacheCluster succeeds. Until then every CacheCluster is refused (the webhook
    /// fails closed), e.g. while the operator's first certificate is still being trusted or
    /// its endpoints are not yet published.
    pub async fn wait_webhook(&self, timeout: Duration) -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::io("a scratch directory", e))?;
        let probe = dir.path().join("probe.yaml");
        std::fs::write(
            &probe,
            "apiVersion: tidecache.io/v1alpha1\nkind: CacheCluster\nmetadata:\n  name: \
             webhook-probe\n  namespace: default\nspec: {}\n",
        )
        .map_err(|e| Error::io(format!("writing {}", probe.display()), e))?;
        let probe = probe.to_string_lossy();
        let start = Instant::now();
        loop {
            let answer = self
                .plane
                .kubectl(&["apply", "--dry-run=server", "-f", &probe])
                .await;
            match answer {
                Ok(_) => return Ok(()),
                Err(error) if start.elapsed() > timeout => {
                    return Err(Error::Timeout {
                        what: "the CacheCluster admission webhook to answer".into(),
                        waited: timeout,
                        last: error.to_string(),
                    });
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
    }

    /// `kubectl apply -k <dir>`; the CRD must be established before a sample can be
    /// applied, which `kubectl wait` takes care of.
    pub async fn apply_kustomization(&self, dir: &Path) -> Result<String> {
        let dir = dir.to_string_lossy();
        let out = self
            .plane
            .kubectl(&["apply", "--server-side", "-k", &dir])
            .await?;
        self.plane
            .kubectl(&[
                "wait",
                "--for=condition=Established",
                "--timeout=60s",
                "crd/cacheclusters.tidecache.io",
            ])
            .await?;
        Ok(out)
    }

    /// Waits until the operator Deployment reports all its replicas available.
    pub async fn wait_operator(&self, timeout: Duration) -> Result<()> {
        let deployments: Api<Deployment> =
            Api::namespaced(self.client().await?, OPERATOR_NAMESPACE);
        let start = Instant::now();
        loop {
            let d = deployments
                .get(OPERATOR_DEPLOYMENT)
                .await
                .map_err(|e| Error::api("reading the operator Deployment", e))?;
            let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
            let available = d
                .status
                .as_ref()
                .and_then(|s| s.available_replicas)
                .unwrap_or(0);
            if available >= want {
                return Ok(());
            }
            if start.elapsed() > timeout {
                return Err(Error::Timeout {
                    what: "the operator Deployment to become available".into(),
                    waited: timeout,
                    last: format!(
                        "{available}/{want} available; kubelet log:\n{}",
                        crate::control_plane::process::log_tail(&self.kubelet.log_path(), 30)
                    ),
                });
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}
