//! Peers from the EndpointSlices of the headless Service, watched through the Kubernetes API.
//!
//! Inside a pod this is how `--peers-service` finds the other pods: a watch sees a pod come or
//! go within a second, where DNS of the same Service lags by its TTL plus the poll interval.
//! The cache pods' ServiceAccount may read EndpointSlices in their namespace (the operator
//! binds the `tidecache-cache-node` ClusterRole). Outside a cluster, or when the API cannot be
//! reached at start, the node falls back to DNS ([`super::membership::DnsPeers`]); errors of a
//! running watch keep the last list and retry with backoff, so an API-server hiccup never
//! makes the node forget its peers.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;

use futures::StreamExt;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, ResourceExt};
use tokio::sync::watch;

use super::membership::{Discovery, Peer, PeerList};

/// The label EndpointSlices carry with the name of the Service they belong to.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Watches the EndpointSlices of one Service in the pod's own namespace.
pub struct EndpointSlicePeers {
    /// EndpointSlices in the namespace of the pod's ServiceAccount.
    api: Api<EndpointSlice>,
    /// The headless Service's name (without a port).
    service: String,
    /// The port peers listen on: the same on every pod of a cluster.
    port: u16,
    /// This node's own addresses, marked local in the peer list.
    own: BTreeSet<IpAddr>,
}

impl std::fmt::Debug for EndpointSlicePeers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EndpointSlicePeers")
            .field("service", &self.service)
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

impl EndpointSlicePeers {
    /// A watcher when the node runs in a pod with API access (`KUBERNETES_SERVICE_HOST` set
    /// and an in-cluster configuration that loads); `None` otherwise, with the reason logged.
    pub async fn in_cluster(
        service: &str,
        port: u16,
        own: &[SocketAddr],
    ) -> Option<EndpointSlicePeers> {
        std::env::var_os("KUBERNETES_SERVICE_HOST")?;
        let client = match Client::try_default().await {
            Ok(client) => client,
            Err(error) => {
                tracing::warn!(%error, "no Kubernetes API access: finding peers by DNS instead");
                return None;
            }
        };
        let service = service
            .rsplit_once(':')
            .filter(|(_, p)| p.parse::<u16>().is_ok())
            .map_or(service, |(name, _)| name)
            .split('.')
            .next()
            .unwrap_or(service)
            .to_string();
        Some(EndpointSlicePeers {
            api: Api::default_namespaced(client),
            service,
            port,
            own: own.iter().map(SocketAddr::ip).collect(),
        })
    }

    fn addresses(&self, slice: &EndpointSlice) -> BTreeSet<Peer> {
        slice_peers(slice, self.port, &self.own)
    }
}

/// Every endpoint of a slice on `port` (ready or not: a starting pod already takes
/// replicated writes, as the Service publishes not-ready addresses), known by its pod's name
/// and in its zone where the slice says them, `own` marked local.
///
/// Except terminating ones: a pod being deleted (a scale-down, a rolling update) is leaving,
/// and leaving it out while it still runs and serves lets the others take its partitions
/// over from it before it exits, instead of after.
fn slice_peers(slice: &EndpointSlice, port: u16, own: &BTreeSet<IpAddr>) -> BTreeSet<Peer> {
    slice
        .endpoints
        .iter()
        .filter(|endpoint| {
            !endpoint
                .conditions
                .as_ref()
                .and_then(|conditions| conditions.terminating)
                .unwrap_or(false)
        })
        .flat_map(|endpoint| {
            let name = endpoint
                .target_ref
                .as_ref()
                .and_then(|target| target.name.clone())
                .or_else(|| endpoint.hostname.clone());
            endpoint
                .addresses
                .iter()
                .filter_map(|address| address.parse::<IpAddr>().ok())
                .map(move |ip| {
                    let mut peer = Peer::new(SocketAddr::new(ip, port).to_string())
                        .in_zone(endpoint.zone.clone());
                    if let Some(name) = &name {
                        peer = peer.with_id(name.clone());
                    }
                    if own.contains(&ip) {
                        peer.local()
                    } else {
                        peer
                    }
                })
        })
        .collect()
}

/// Publishes the union of all slices' peers when it changed.
fn publish(tx: &watch::Sender<PeerList>, service: &str, slices: &BTreeMap<String, BTreeSet<Peer>>) {
    let all: BTreeSet<&Peer> = slices.values().flatten().collect();
    let peers: PeerList = all.into_iter().cloned().collect();
    tx.send_if_modified(|current| {
        let changed = *current != peers;
        if changed {
            tracing::info!(
                %service,
                peers = ?peers.iter().map(Peer::address).collect::<Vec<_>>(),
                "peers changed (EndpointSlices)"
            );
            *current = peers;
        }
        changed
    });
}

impl Discovery for EndpointSlicePeers {
    fn run(
        self: Box<Self>,
        tx: watch::Sender<PeerList>,
    ) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(async move {
            tracing::info!(service = %self.service, "finding peers by watching EndpointSlices");
            let config = watcher::Config::default()
                .labels(&format!("{SERVICE_NAME_LABEL}={}", self.service));
            let mut events = watcher::watcher(self.api.clone(), config)
                .default_backoff()
                .boxed();
            let mut slices: BTreeMap<String, BTreeSet<Peer>> = BTreeMap::new();
            // A (re)list arrives as Init, InitApply..., InitDone: the new set replaces the old
            // one only when complete, so a relist never shows a half-empty membership.
            let mut relisting: Option<BTreeMap<String, BTreeSet<Peer>>> = None;
            loop {
                let event = tokio::select! {
                    event = events.next() => event,
                    () = tx.closed() => return,
                };
                match event {
                    None => return,
                    Some(Err(error)) => {
                        tracing::warn!(service = %self.service, %error, "EndpointSlice watch failed; keeping the last peers");
                    }
                    Some(Ok(Event::Init)) => relisting = Some(BTreeMap::new()),
                    Some(Ok(Event::InitApply(slice))) => {
                        if let Some(listing) = relisting.as_mut() {
                            listing.insert(slice.name_any(), self.addresses(&slice));
                        }
                    }
                    Some(Ok(Event::InitDone)) => {
                        if let Some(listing) = relisting.take() {
                            slices = listing;
                            publish(&tx, &self.service, &slices);
                        }
                    }
                    Some(Ok(Event::Apply(slice))) => {
                        slices.insert(slice.name_any(), self.addresses(&slice));
                        publish(&tx, &self.service, &slices);
                    }
                    Some(Ok(Event::Delete(slice))) => {
                        slices.remove(&slice.name_any());
                        publish(&tx, &self.service, &slices);
                    }
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::ObjectReference;
    use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions};

    use super::*;

    fn slice(addresses: &[&str]) -> EndpointSlice {
        EndpointSlice {
            endpoints: addresses
                .iter()
                .enumerate()
                .map(|(i, a)| Endpoint {
                    addresses: vec![(*a).to_string()],
                    target_ref: Some(ObjectReference {
                        name: Some(format!("cache-{i}")),
                        ..ObjectReference::default()
                    }),
                    zone: Some(format!("zone-{}", i % 2)),
                    ..Endpoint::default()
                })
                .collect(),
            ..EndpointSlice::default()
        }
    }

    #[test]
    fn slices_give_every_pod_by_name_and_zone_this_node_marked() {
        let own: BTreeSet<IpAddr> = ["10.0.0.2".parse().expect("ip")].into();
        let peers = slice_peers(
            &slice(&["10.0.0.1", "10.0.0.2", "fd00::3", "bad"]),
            8080,
            &own,
        );
        let seen: Vec<(String, String, Option<String>, bool)> = peers
            .iter()
            .map(|p| {
                (
                    p.address().to_string(),
                    p.id().to_string(),
                    p.zone().map(str::to_string),
                    p.is_local(),
                )
            })
            .collect();
        assert_eq!(
            seen,
            [
                (
                    "10.0.0.1:8080".into(),
                    "cache-0".into(),
                    Some("zone-0".into()),
                    false
                ),
                (
                    "10.0.0.2:8080".into(),
                    "cache-1".into(),
                    Some("zone-1".into()),
                    true
                ),
                (
                    "[fd00::3]:8080".into(),
                    "cache-2".into(),
                    Some("zone-0".into()),
                    false
                ),
            ]
        );
    }

    #[test]
    fn terminating_pods_are_left_out_while_they_still_serve() {
        let mut slice = slice(&["10.0.0.1", "10.0.0.2", "10.0.0.3"]);
        let conditions = |terminating: bool| {
            Some(EndpointConditions {
                ready: Some(!terminating),
                serving: Some(true),
                terminating: Some(terminating),
            })
        };
        slice.endpoints[1].conditions = conditions(true);
        slice.endpoints[2].conditions = conditions(false);
        let ids: Vec<String> = slice_peers(&slice, 80, &BTreeSet::new())
            .iter()
            .map(|p| p.id().to_string())
            .collect();
        // cache-0 says nothing of its conditions (taken as not terminating).
        assert_eq!(ids, ["cache-0", "cache-2"]);
    }

    #[test]
    fn the_peer_list_is_the_union_of_all_slices() {
        let (tx, rx) = watch::channel(PeerList::from(Vec::new()));
        let mut slices = BTreeMap::new();
        let none = BTreeSet::new();
        slices.insert(
            "a".to_string(),
            slice_peers(&slice(&["10.0.0.1"]), 80, &none),
        );
        slices.insert(
            "b".to_string(),
            slice_peers(&slice(&["10.0.0.1", "10.0.0.3"]), 80, &none),
        );
        publish(&tx, "svc", &slices);
        let peers: Vec<String> = rx
            .borrow()
            .iter()
            .map(|p| p.address().to_string())
            .collect();
        assert_eq!(peers, ["10.0.0.1:80", "10.0.0.3:80"]);
    }
}
