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

/// A node of the cluster: the address its HTTP API listens on, and what placement needs to
/// know of it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Peer {
    /// `host:port`, as given or resolved.
    address: String,
    /// Its stable identity, which placement ranks: the pod's name where discovery knows it
    /// (it survives the pod being replaced at a new address), else the address.
    id: String,
    /// Its zone, where discovery knows it.
    zone: Option<String>,
    /// Whether this is the node itself: discovery lists it so that placement sees the whole
    /// membership; the transport leaves it out.
    local: bool,
}

impl Peer {
    /// The peer at `address` (`host:port`), known by its address, in no known zone.
    pub fn new(address: impl Into<String>) -> Peer {
        let address = address.into();
        Peer {
            id: address.clone(),
            address,
            zone: None,
            local: false,
        }
    }

    /// The same peer known by `id` (a pod name).
    #[must_use]
    pub fn with_id(mut self, id: impl Into<String>) -> Peer {
        self.id = id.into();
        self
    }

    /// The same peer in `zone`.
    #[must_use]
    pub fn in_zone(mut self, zone: Option<String>) -> Peer {
        self.zone = zone.filter(|z| !z.is_empty());
        self
    }

    /// The same peer marked as this node itself.
    #[must_use]
    pub fn local(mut self) -> Peer {
        self.local = true;
        self
    }

    /// `host:port`.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Its identity for placement.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Its zone, if known.
    pub fn zone(&self) -> Option<&str> {
        self.zone.as_deref()
    }

    /// Whether this is the node itself.
    pub fn is_local(&self) -> bool {
        self.local
    }

    /// A `--peers` entry: `host:port`, optionally followed by `@zone`.
    fn parse(entry: &str) -> Peer {
        match entry.rsplit_once('@') {
            Some((address, zone)) => Peer::new(address.trim()).in_zone(Some(zone.trim().into())),
            None => Peer::new(entry.trim()),
        }
    }
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.address)
    }
}

/// The members known now, this node among them where discovery can tell which it is;
/// replaced wholesale on every change.
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

/// A fixed list of peers (`--peers`), each `host:port` optionally followed by `@zone`.
#[derive(Debug, Clone)]
pub struct StaticPeers {
    /// The members, this node marked local.
    peers: PeerList,
}

impl StaticPeers {
    /// The peers in `list`, without duplicates, in a stable order; the entry equal to `own`
    /// (this node's advertised `host:port`) is marked as this node. Tests build lists with
    /// it; a running node resolves its list ([`StaticPeers::resolved`]).
    #[cfg(test)]
    pub fn new<'a>(list: impl IntoIterator<Item = &'a str>, own: &str) -> StaticPeers {
        StaticPeers::marked(list.into_iter().map(|entry| {
            let peer = Peer::parse(entry);
            let local = peer.address() == own;
            (peer, local)
        }))
    }

    /// The peers in `list`, without duplicates, in a stable order, marking as this node
    /// every entry that resolves to one of
    /// `own` (this node's addresses): `localhost:8080` in the list of a node listening on
    /// `127.0.0.1:8080` is the node itself, and replicating to itself would count its own
    /// acknowledgement twice. Entries that do not resolve (yet) are peers.
    pub async fn resolved<'a>(
        list: impl IntoIterator<Item = &'a str>,
        own: &[SocketAddr],
    ) -> StaticPeers {
        let mut marked = Vec::new();
        for entry in list {
            let peer = Peer::parse(entry);
            let local = match tokio::net::lookup_host(peer.address()).await {
                Ok(mut addresses) => addresses.any(|address| own.contains(&address)),
                Err(_) => false,
            };
            marked.push((peer, local));
        }
        StaticPeers::marked(marked)
    }

    fn marked(entries: impl IntoIterator<Item = (Peer, bool)>) -> StaticPeers {
        let unique: BTreeSet<Peer> = entries
            .into_iter()
            .filter(|(peer, _)| !peer.address().is_empty())
            .map(|(peer, local)| if local { peer.local() } else { peer })
            .collect();
        let mut seen = BTreeSet::new();
        StaticPeers {
            peers: unique
                .into_iter()
                .filter(|peer| seen.insert(peer.address().to_string()))
                .collect(),
        }
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
    /// This node's own addresses, marked local in the list.
    own: Vec<SocketAddr>,
    /// How often the name is resolved again.
    interval: Duration,
}

impl DnsPeers {
    /// Peers from resolving `service` every `interval`, the addresses in `own` marked local.
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
                        let found: BTreeSet<SocketAddr> = addresses.collect();
                        let peers: PeerList = found
                            .iter()
                            .map(|a| {
                                let peer = Peer::new(a.to_string());
                                if self.own.contains(a) {
                                    peer.local()
                                } else {
                                    peer
                                }
                            })
                            .collect();
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

    fn seen(peers: &PeerList) -> Vec<(String, Option<String>, bool)> {
        peers
            .iter()
            .map(|p| {
                (
                    p.address().to_string(),
                    p.zone().map(str::to_string),
                    p.is_local(),
                )
            })
            .collect()
    }

    #[tokio::test]
    async fn the_static_list_marks_names_that_resolve_to_this_node() {
        let own: SocketAddr = "127.0.0.1:7000".parse().expect("addr");
        let peers = StaticPeers::resolved(
            [
                "localhost:7000",
                "127.0.0.1:7000@zone-a",
                "127.0.0.1:7001@zone-b",
                " 127.0.0.1:7001",
                "",
                "missing-port",
            ],
            &[own],
        )
        .await;
        assert_eq!(
            seen(&peers.initial()),
            [
                ("127.0.0.1:7000".into(), Some("zone-a".into()), true),
                ("127.0.0.1:7001".into(), None, false),
                ("localhost:7000".into(), None, true),
                ("missing-port".into(), None, false),
            ]
        );
    }

    /// Runs DNS discovery of `service` until it publishes a list, starting from a sentinel
    /// list it must replace, so that a discovery that never resolves fails the test.
    async fn discover(service: &str, own: Vec<SocketAddr>) -> Vec<String> {
        discover_marked(service, own)
            .await
            .into_iter()
            .map(|(address, _)| address)
            .collect()
    }

    /// As `discover`, with whether each address is this node's.
    async fn discover_marked(service: &str, own: Vec<SocketAddr>) -> Vec<(String, bool)> {
        let sentinel = PeerList::from(vec![Peer::new("sentinel.invalid:1")]);
        let (tx, mut rx) = watch::channel(sentinel);
        let discovery = Box::new(DnsPeers::new(service, 7000, own, Duration::from_millis(10)));
        let task = tokio::spawn(discovery.run(tx));
        tokio::time::timeout(Duration::from_secs(10), rx.changed())
            .await
            .expect("discovery publishes within 10 s")
            .expect("the sender is alive");
        task.abort();
        rx.borrow()
            .iter()
            .map(|p| (p.to_string(), p.is_local()))
            .collect()
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

        // This node's own view: the same addresses, its own marked local.
        let own: SocketAddr = "127.0.0.1:7000".parse().expect("addr");
        let marked = discover_marked("localhost", own_addresses(own).await).await;
        assert!(
            marked.contains(&("127.0.0.1:7000".to_string(), true)),
            "{marked:?}"
        );
        assert_eq!(marked.iter().filter(|(_, local)| *local).count(), 1);
    }
}
