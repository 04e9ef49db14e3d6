//! Membership: the other nodes of the cluster, as a live list.
//!
//! Two sources, behind one [`Discovery`] trait so that the transport and anti-entropy never
//! know which is in use:
//! - [`StaticPeers`]: `--peers host:port,...` (local runs and tests). The list may include
//!   this node's own address, so every node of a cluster can be given the same list.
//! - [`PeersFile`]: `--peers-file PATH`, entries as in `--peers`, read again twice a second:
//!   membership that changes while nodes run without Kubernetes (a configuration tool
//!   rewrites the file; tests join and remove nodes).
//! - [`DnsPeers`]: `--peers-service` names a Kubernetes headless Service; its DNS name
//!   resolves to the address of every ready pod behind it, re-resolved every few seconds.
//!   This needs no API access (no RBAC) and follows pods as they come and go at the pace of
//!   the cluster DNS.

use std::collections::BTreeSet;
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
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

/// The entries of a peers file: `--peers` entries separated by commas and/or newlines, with
/// blank lines and everything from a `#` to the end of its line ignored, so that the file can
/// say which machine each address is.
fn file_entries(text: &str) -> impl Iterator<Item = &str> {
    text.lines()
        .map(|line| {
            line.split_once('#')
                .map_or(line, |(entries, _comment)| entries)
        })
        .flat_map(|line| line.split(','))
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
}

/// Why the peers file could not be read; the last list it gave stays in use.
#[derive(Debug, thiserror::Error)]
#[error("cannot read the peers file {}: {source}", path.display())]
pub struct PeersFileError {
    path: PathBuf,
    source: std::io::Error,
}

/// The members listed in a file (`--peers-file`), read again every `interval`: a static list
/// that can change while the node runs, for deployments without Kubernetes (a configuration
/// tool rewrites the file) and for tests that add and remove nodes. Writers should replace
/// the file atomically (write a temporary file, rename it over this one), so that a read
/// never sees half a list.
#[derive(Debug)]
pub struct PeersFile {
    path: PathBuf,
    /// This node's own addresses, marked local as [`StaticPeers::resolved`] marks them.
    own: Vec<SocketAddr>,
    interval: Duration,
    /// The list the file gave when the node started (empty if it could not be read then).
    initial: PeerList,
    /// The text the last published list came from: an unchanged file is not resolved again.
    text: Option<String>,
    /// The last read's error, so that a file that stays unreadable is warned about once
    /// rather than on every read.
    error: Option<String>,
}

impl PeersFile {
    /// The members listed in `path` now, the entries resolving to `own` marked local, and
    /// read again every `interval` once running. A file that cannot be read yet gives an
    /// empty list (with a warning) until it can.
    pub async fn new(path: PathBuf, own: Vec<SocketAddr>, interval: Duration) -> PeersFile {
        let mut file = PeersFile {
            path,
            own,
            interval,
            initial: PeerList::from(Vec::new()),
            text: None,
            error: None,
        };
        if let Some(peers) = file.read().await {
            file.initial = peers;
        }
        file
    }

    /// Reads the file: the list it gives if its text changed since the last read, `None` if
    /// it did not or if the file cannot be read (warned about when the error is new).
    async fn read(&mut self) -> Option<PeerList> {
        match tokio::fs::read_to_string(&self.path).await {
            Ok(text) => {
                if self.error.take().is_some() {
                    tracing::info!(path = %self.path.display(), "the peers file is readable again");
                }
                if self.text.as_ref() == Some(&text) {
                    return None;
                }
                let peers = StaticPeers::resolved(file_entries(&text), &self.own)
                    .await
                    .peers;
                self.text = Some(text);
                Some(peers)
            }
            Err(source) => {
                let error = PeersFileError {
                    path: self.path.clone(),
                    source,
                };
                let message = error.to_string();
                if self.error.as_ref() != Some(&message) {
                    tracing::warn!(%error, "keeping the last peers");
                    self.error = Some(message);
                }
                None
            }
        }
    }
}

impl Discovery for PeersFile {
    fn initial(&self) -> PeerList {
        self.initial.clone()
    }

    fn run(
        mut self: Box<Self>,
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
                let Some(peers) = self.read().await else {
                    continue;
                };
                tx.send_if_modified(|current| {
                    let changed = *current != peers;
                    if changed {
                        tracing::info!(
                            path = %self.path.display(),
                            peers = ?peers.iter().map(Peer::address).collect::<Vec<_>>(),
                            "peers changed (peers file)"
                        );
                        *current = peers;
                    }
                    changed
                });
            }
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

    /// Replaces `path` with `text` as a configuration tool should: a temporary file renamed
    /// over it.
    fn rewrite(path: &std::path::Path, text: &str) {
        let temporary = path.with_extension("tmp");
        std::fs::write(&temporary, text).expect("write the temporary file");
        std::fs::rename(&temporary, path).expect("rename over the peers file");
    }

    /// Waits up to 10 s for discovery to publish a new list.
    async fn next_list(rx: &mut watch::Receiver<PeerList>) -> Vec<(String, Option<String>, bool)> {
        tokio::time::timeout(Duration::from_secs(10), rx.changed())
            .await
            .expect("a new list within 10 s")
            .expect("the sender is alive");
        seen(&rx.borrow_and_update())
    }

    #[tokio::test]
    async fn the_peers_file_is_followed_as_it_is_rewritten() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("peers");
        rewrite(
            &path,
            "# the cluster\n127.0.0.1:7000@zone-a  # this node\n\n127.0.0.1:7001,127.0.0.1:7002@zone-b,\n",
        );
        let own: SocketAddr = "127.0.0.1:7000".parse().expect("addr");
        let file = PeersFile::new(path.clone(), vec![own], Duration::from_millis(10)).await;
        assert_eq!(
            seen(&file.initial()),
            [
                ("127.0.0.1:7000".into(), Some("zone-a".into()), true),
                ("127.0.0.1:7001".into(), None, false),
                ("127.0.0.1:7002".into(), Some("zone-b".into()), false),
            ]
        );
        let (tx, mut rx) = watch::channel(file.initial());
        let task = tokio::spawn(Box::new(file).run(tx));

        // A node joins and another leaves.
        rewrite(
            &path,
            "127.0.0.1:7000@zone-a\n127.0.0.1:7002@zone-b\n127.0.0.1:7003@zone-b\n",
        );
        assert_eq!(
            next_list(&mut rx).await,
            [
                ("127.0.0.1:7000".into(), Some("zone-a".into()), true),
                ("127.0.0.1:7002".into(), Some("zone-b".into()), false),
                ("127.0.0.1:7003".into(), Some("zone-b".into()), false),
            ]
        );

        // The same members written differently, then no file at all: the list stays.
        rewrite(
            &path,
            "127.0.0.1:7003@zone-b, 127.0.0.1:7002@zone-b, 127.0.0.1:7000@zone-a",
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        std::fs::remove_file(&path).expect("remove the peers file");
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!rx.has_changed().expect("the sender is alive"));
        assert_eq!(rx.borrow().len(), 3);

        // The file comes back with other members.
        rewrite(&path, "127.0.0.1:7000\n");
        assert_eq!(
            next_list(&mut rx).await,
            [("127.0.0.1:7000".into(), None, true)]
        );
        task.abort();
    }

    #[tokio::test]
    async fn a_missing_peers_file_starts_empty_and_is_read_once_it_exists() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("peers");
        let file = PeersFile::new(path.clone(), Vec::new(), Duration::from_millis(10)).await;
        assert!(file.initial().is_empty());
        let (tx, mut rx) = watch::channel(file.initial());
        let task = tokio::spawn(Box::new(file).run(tx));
        rewrite(&path, "127.0.0.1:7001");
        assert_eq!(
            next_list(&mut rx).await,
            [("127.0.0.1:7001".into(), None, false)]
        );
        task.abort();
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
