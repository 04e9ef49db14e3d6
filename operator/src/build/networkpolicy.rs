//! The NetworkPolicy of the cache pods: who may open a connection to them.
//!
//! Three ingress rules, by port, because that is what a NetworkPolicy can tell apart:
//! - the cluster's own cache pods on every port a pod serves: peers replicate over the HTTP
//!   port, and a pod must reach each of its peers;
//! - `spec.network.clients` on the client ports: the HTTP and Redis ports, or, when TLS is on,
//!   the TLS ports only (the plain listeners then serve peers and probes);
//! - `spec.network.metrics` on the HTTP port, where `/metrics` is served.
//!
//! Without TLS the peers' `/internal/v1` routes share the HTTP port with the clients' routes,
//! so the policy cannot keep clients off them; the peer credential does. Probes come from the
//! kubelet on the pod's node, which network plugins admit whatever the policy says. Egress is
//! not restricted: the pods need DNS, the API server (peer discovery) and each other.

use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{HTTP_PORT, child_meta};
use crate::crd::TrafficSources;
use crate::labels::{self, CACHE_COMPONENT};
use crate::validate::ValidatedCluster;

/// The label the API server puts on every namespace, holding its name: how a policy selects
/// namespaces by name.
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// The policy, or `None` when `spec.network.policy` is false (an existing one is then deleted).
pub(super) fn network_policy(cluster: &ValidatedCluster) -> Option<NetworkPolicy> {
    let network = &cluster.spec.network;
    if !network.policy {
        return None;
    }
    let cache_pods = || LabelSelector {
        match_labels: Some(labels::selector(&cluster.name, CACHE_COMPONENT)),
        ..LabelSelector::default()
    };
    let peers = NetworkPolicyIngressRule {
        from: Some(vec![NetworkPolicyPeer {
            pod_selector: Some(cache_pods()),
            ..NetworkPolicyPeer::default()
        }]),
        ports: Some(tcp(served_ports(cluster))),
    };
    let clients = NetworkPolicyIngressRule {
        from: sources(cluster, &network.clients),
        ports: Some(tcp(client_ports(cluster))),
    };
    let metrics = NetworkPolicyIngressRule {
        from: sources(cluster, &network.metrics),
        ports: Some(tcp(vec![i32::from(HTTP_PORT)])),
    };
    Some(NetworkPolicy {
        metadata: child_meta(
            cluster,
            labels::names::network_policy(&cluster.name),
            CACHE_COMPONENT,
        ),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(cache_pods()),
            policy_types: Some(vec!["Ingress".into()]),
            ingress: Some(vec![peers, clients, metrics]),
            ..NetworkPolicySpec::default()
        }),
    })
}

/// Every port a cache pod listens on, as the contract renders its flags.
fn served_ports(cluster: &ValidatedCluster) -> Vec<i32> {
    let node = &cluster.node;
    let tls = node.tls.iter().flat_map(|tls| {
        std::iter::once(tls.listen.port()).chain(tls.resp_listen.map(|address| address.port()))
    });
    std::iter::once(node.listen.port())
        .chain(node.resp_listen.map(|address| address.port()))
        .chain(tls)
        .map(i32::from)
        .collect()
}

/// The ports clients use: the TLS listeners when TLS is on, the plain ones otherwise.
fn client_ports(cluster: &ValidatedCluster) -> Vec<i32> {
    let node = &cluster.node;
    let (http, resp) = match &node.tls {
        Some(tls) => (tls.listen, tls.resp_listen),
        None => (node.listen, node.resp_listen),
    };
    std::iter::once(http.port())
        .chain(resp.map(|address| address.port()))
        .map(i32::from)
        .collect()
}

/// The `from` of a rule: `None` (every source) for `all`, else the named and the selected
/// namespaces, the CacheCluster's own when neither is given.
fn sources(cluster: &ValidatedCluster, sources: &TrafficSources) -> Option<Vec<NetworkPolicyPeer>> {
    if sources.all {
        return None;
    }
    let by_names = |names: Vec<String>| NetworkPolicyPeer {
        namespace_selector: Some(LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: NAMESPACE_NAME_LABEL.into(),
                operator: "In".into(),
                values: Some(names),
            }]),
            ..LabelSelector::default()
        }),
        ..NetworkPolicyPeer::default()
    };
    let mut peers = Vec::new();
    if !sources.namespaces.is_empty() {
        peers.push(by_names(sources.namespaces.clone()));
    }
    if let Some(selector) = &sources.namespace_selector {
        peers.push(NetworkPolicyPeer {
            namespace_selector: Some(selector.clone()),
            ..NetworkPolicyPeer::default()
        });
    }
    if peers.is_empty() {
        peers.push(by_names(vec![cluster.namespace.clone()]));
    }
    Some(peers)
}

/// TCP ports of a rule.
fn tcp(ports: Vec<i32>) -> Vec<NetworkPolicyPort> {
    ports
        .into_iter()
        .map(|port| NetworkPolicyPort {
            port: Some(IntOrString::Int(port)),
            protocol: Some("TCP".into()),
            ..NetworkPolicyPort::default()
        })
        .collect()
}
