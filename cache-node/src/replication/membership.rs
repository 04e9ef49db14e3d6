//! Membership: the other nodes of the cluster, as a live list.
//!
//! Two sources, behind one [`Discovery`] trait so that the transport and anti-entropy never
//! know which is in use:
//! - [`StaticPeers`]: `--peers host:port,...` (local runs and tests). The list may include
//!   this node's own address, so every node of a cluster can be given the same list.
//! - [`DnsPeers`]: `--peers-service` names a Kubernetes headless Service; its DNS name
//!   resolves to the address of every ready pod behind it, re-resolved every few seconds.
//!   This needs no API access (no RBAC) and follows pods as they come and go at the pace of
//!   the cluster DNS.

use std::collections::BTreeSet;
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

/// Another node, by the address its HTTP API listens on.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Peer {
    /// `host:port`, as given or resolved.
    address: String,
}

impl Peer {
    /// The peer at `address` (`host:port`).
    pub fn new(address: impl Into<String>) -> Peer {
        Peer {
            address: address.into(),
        }
    }

    /// `host:port`.
    pub fn address(&self) -> &str {
        &self.address
    }
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.address)
    }
}

/// The peers known now; replaced wholesale on every change.
pub type PeerList = Arc<[Peer]>;

/// A source of peers. `run` keeps `tx` up to date until the node stops.
pub trait Discovery: Send + 'static {
    /// The peers known before [`Discovery::run`] starts (a static list knows them all), so
    /// that the first writes already reach them.
    fn initial(&self) -> PeerList {
        PeerList::from(Vec::new())
    }

    /// Publishes the current peers on `tx`, and every change after, until dropped.
    fn run(
        self: Box<Self>,
        tx: watch::Sender<PeerList>,
    ) -> Pin<Box<dyn Future<Output = ()> + Send>>;
}

/// A fixed list of peers (`--peers`).
#[derive(Debug, Clone)]
pub struct StaticPeers {
    /// The peers, without this node.
    peers: PeerList,
}

impl StaticPeers {
    /// The peers in `list` other than `own` (this node's advertised `host:port`), without
    /// duplicates, in a stable order.
    pub fn new<'a>(list: impl IntoIterator<Item = &'a str>, own: &str) -> StaticPeers {
        let unique: BTreeSet<&str> = list
            .into_iter()
            .map(str::trim)
            .filter(|address| !address.is_empty() && *address != own)
            .collect();
        StaticPeers {
            peers: unique.into_iter().map(Peer::new).collect(),
        }
    }

    /// As [`StaticPeers::new`], also leaving out entries that resolve to one of `own` (this
    /// node's addresses): `localhost:8080` in the list of a node listening on `127.0.0.1:8080`
    /// is the node itself, and replicating to itself would count its own acknowledgement
    /// twice. Entries that do not resolve (yet) are kept.
    pub async fn resolved<'a>(
        list: impl IntoIterator<Item = &'a str>,
        own: &[SocketAddr],
    ) -> StaticPeers {
        let mut others = Vec::new();
        for entry in list {
            let entry = entry.trim();
            let is_self = match tokio::net::lookup_host(entry).await {
                Ok(mut addresses) => addresses.any(|address| own.contains(&address)),
                Err(_) => false,
            };
            if !is_self {
                others.push(entry);
            }
        }
        StaticPeers::new(others, "")
    }
}

impl Discovery for StaticPeers {
    fn initial(&self) -> PeerList {
        self.peers.clone()
    }

    fn run(
        self: Box<Self>,
        tx: watch::Sender<PeerList>,
    ) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(async move {
            tx.send_replace(self.peers);
            tx.closed().await;
        })
    }
}

/// The pods behind a headless Service, found by resolving its DNS name (`--peers-service`).
/// The Service should publish not-ready addresses, so that a starting pod can catch up from
/// its peers (and they can reach it) before it reports ready.
#[derive(Debug, Clone)]
pub struct DnsPeers {
    /// `name[.namespace.svc]:port`: resolves to one address per pod.
    service: String,
    /// This node's own addresses, left out of the list.
    own: Vec<SocketAddr>,
    /// How often the name is resolved again.
    interval: Duration,
}

impl DnsPeers {
    /// Peers from resolving `service` every `interval`, without the addresses in `own`.
    /// `service` without a port gets `port` (every pod serves on the same port).
    pub fn new(service: &str, port: u16, own: Vec<SocketAddr>, interval: Duration) -> DnsPeers {
        let service = if service
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        {
            service.to_string()
        } else {
            format!("{service}:{port}")
        };
        DnsPeers {
            service,
            own,
            interval,
        }
    }
}

/// This node's addresses as peers see them: `listen` itself when it names an address, else
/// what the host name resolves to (in a StatefulSet pod, `/etc/hosts` maps it to the pod IP).
pub async fn own_addresses(listen: SocketAddr) -> Vec<SocketAddr> {
    if !listen.ip().is_unspecified() {
        return vec![listen];
    }
    let Ok(name) = std::fs::read_to_string("/proc/sys/kernel/hostname") else {
        return Vec::new();
    };
    match tokio::net::lookup_host((name.trim(), listen.port())).await {
        Ok(addresses) => addresses.collect(),
        Err(error) => {
            tracing::warn!(host = name.trim(), %error, "cannot resolve this node's host name");
            Vec::new()
        }
    }
}

impl Discovery for DnsPeers {
    fn run(
        self: Box<Self>,
        tx: watch::Sender<PeerList>,
    ) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(async move {
            let mut ticker = tokio::time::interval(self.interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = ticker.tick() => {}
                    () = tx.closed() => return,
                }
                match tokio::net::lookup_host(self.service.as_str()).await {
                    Ok(addresses) => {
                        let found: BTreeSet<SocketAddr> = addresses
                            .filter(|address| !self.own.contains(address))
                            .collect();
                        let peers: PeerList =
                            found.iter().map(|a| Peer::new(a.to_string())).collect();
                        tx.send_if_modified(|current| {
                            let changed = *current != peers;
                            if changed {
                                tracing::info!(
                                    service = %self.service,
                                    peers = ?peers.iter().map(Peer::address).collect::<Vec<_>>(),
                                    "peers changed"
                                );
                                *current = peers;
                            }
                            changed
                        });
                    }
                    Err(error) => {
                        // Keep the last list: a DNS hiccup must not make the node forget its
                        // peers (and fail every quorum write).
                        tracing::warn!(service = %self.service, %error, "cannot resolve peers");
                    }
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_static_list_leaves_out_this_node_and_duplicates() {
        let peers = StaticPeers::new(
            "127.0.0.1:2, 127.0.0.1:1,127.0.0.1:3,,127.0.0.1:2".split(','),
            "127.0.0.1:1",
        );
        let addresses: Vec<_> = peers.initial().iter().map(|p| p.to_string()).collect();
        assert_eq!(addresses, ["127.0.0.1:2", "127.0.0.1:3"]);
    }

    #[tokio::test]
    async fn the_static_list_leaves_out_names_that_resolve_to_this_node() {
        let own: SocketAddr = "127.0.0.1:7000".parse().expect("addr");
        let peers = StaticPeers::resolved(
            [
                "localhost:7000",
                "127.0.0.1:7000",
                "127.0.0.1:7001",
                "missing-port",
            ],
            &[own],
        )
        .await;
        let addresses: Vec<_> = peers.initial().iter().map(|p| p.to_string()).collect();
        assert_eq!(addresses, ["127.0.0.1:7001", "missing-port"]);
    }

    /// Runs DNS discovery of `service` until it publishes a list, starting from a sentinel
    /// list it must replace, so that a discovery that never resolves fails the test.
    async fn discover(service: &str, own: Vec<SocketAddr>) -> Vec<String> {
        let sentinel = PeerList::from(vec![Peer::new("sentinel.invalid:1")]);
        let (tx, mut rx) = watch::channel(sentinel);
        let discovery = Box::new(DnsPeers::new(service, 7000, own, Duration::from_millis(10)));
        let task = tokio::spawn(discovery.run(tx));
        tokio::time::timeout(Duration::from_secs(10), rx.changed())
            .await
            .expect("discovery publishes within 10 s")
            .expect("the sender is alive");
        task.abort();
        rx.borrow().iter().map(|p| p.to_string()).collect()
    }

    #[tokio::test]
    async fn dns_discovery_publishes_what_the_name_resolves_to_without_this_node() {
        let resolved: BTreeSet<String> = tokio::net::lookup_host("localhost:7000")
            .await
            .expect("localhost resolves")
            .map(|address| address.to_string())
            .collect();
        assert!(resolved.contains("127.0.0.1:7000"), "{resolved:?}");

        // Another node's view: every address, with the service's port filled in.
        let seen = discover("localhost", vec!["127.0.0.1:7001".parse().expect("addr")]).await;
        assert_eq!(seen.iter().cloned().collect::<BTreeSet<_>>(), resolved);
        // An explicit port wins over the default one.
        let other_port = discover("localhost:7002", Vec::new()).await;
        assert!(
            other_port.contains(&"127.0.0.1:7002".to_string()),
            "{other_port:?}"
        );

        // This node's own view: its address is left out, the rest stays.
        let own: SocketAddr = "127.0.0.1:7000".parse().expect("addr");
        let without_self = discover("localhost", own_addresses(own).await).await;
        let mut expected = resolved.clone();
        expected.remove("127.0.0.1:7000");
        assert_eq!(without_self.into_iter().collect::<BTreeSet<_>>(), expected);
    }
}
