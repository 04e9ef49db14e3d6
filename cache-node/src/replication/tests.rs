//! Replication between in-process nodes on real sockets, each with a small last-writer-wins
//! map as its store: the transport, acknowledgements and anti-entropy without the cache.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tidecache_contract::disk::{Record, RecordRef, Version};
use tokio::net::TcpListener;

use axum::extract::{Query, State};
use axum::routing::{get, post};
use http::StatusCode;

use super::membership::StaticPeers;
use super::wire::{DIGESTS_PATH, FETCH_PATH, REPLICATE_PATH};
use super::*;
use crate::base::digest::{NO_EXPIRY_BUCKET, fingerprint, range_of};
use crate::base::replica::Applied;
use crate::base::time::SystemClock;

/// A map from key to its newest record.
#[derive(Debug, Default)]
struct MapReplica {
    records: Mutex<HashMap<Vec<u8>, Record>>,
}

impl MapReplica {
    fn get(&self, key: &[u8]) -> Option<Record> {
        self.records.lock().expect("lock").get(key).cloned()
    }

    fn put(&self, record: Record) {
        self.records
            .lock()
            .expect("lock")
            .insert(record.key.clone(), record);
    }
}

impl Replica for MapReplica {
    fn apply(&self, record: Record) -> Applied {
        let mut records = self.records.lock().expect("lock");
        match records.get(&record.key) {
            Some(current) if current.version >= record.version => Applied::Stale,
            _ => {
                records.insert(record.key.clone(), record);
                Applied::Changed
            }
        }
    }

    /// A digest per key range of the no-expiry bucket (these records never expire), as the
    /// store computes them.
    fn digests(&self, cutoff: Cutoff) -> Vec<BucketDigest> {
        let mut digests: BTreeMap<u16, BucketDigest> = BTreeMap::new();
        for record in self.records.lock().expect("lock").values() {
            if !cutoff.includes(record.version) {
                continue;
            }
            let range = range_of(&record.key);
            let digest = digests.entry(range).or_insert(BucketDigest {
                bucket: NO_EXPIRY_BUCKET,
                range,
                count: 0,
                xor: 0,
            });
            digest.count += 1;
            digest.xor ^= fingerprint(&record.key, record.version);
        }
        digests.into_values().collect()
    }

    fn range_records(&self, ranges: &HashSet<(i64, u16)>, cutoff: Cutoff) -> Vec<Record> {
        self.records
            .lock()
            .expect("lock")
            .values()
            .filter(|record| {
                cutoff.includes(record.version)
                    && ranges.contains(&(NO_EXPIRY_BUCKET, range_of(&record.key)))
            })
            .cloned()
            .collect()
    }

    fn discard(&self, keep: &dyn Fn(&[u8]) -> bool) -> u64 {
        let mut records = self.records.lock().expect("lock");
        let before = records.len();
        records.retain(|key, _| keep(key));
        (before - records.len()) as u64
    }
}

struct TestNode {
    replica: Arc<MapReplica>,
    replication: Arc<Replication>,
    metrics: Arc<ReplicationMetrics>,
}

impl TestNode {
    /// A sample of this node's replication metrics, once recorded.
    fn sample(&self, sample: &str) -> Option<f64> {
        let mut registry = prometheus_client::registry::Registry::with_prefix("tidecache");
        self.metrics.register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encodes");
        text.lines()
            .find_map(|line| line.strip_prefix(sample)?.strip_prefix(' ')?.parse().ok())
    }
}

async fn listener() -> (TcpListener, String) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("addr").to_string();
    (listener, address)
}

/// A node listening on `listener`, with `peers` as its static peer list.
fn node(listener: TcpListener, own: &str, peers: &[String], node_tag: u64) -> TestNode {
    let replica = Arc::new(MapReplica::default());
    let metrics = Arc::new(ReplicationMetrics::default());
    // Generous timeouts: a loaded machine must not turn a slow acknowledgement into a
    // failure. The unreachable peer refuses connections, which fails at once.
    let settings = ReplicationSettings {
        ack_timeout: Duration::from_secs(10),
        transport: TransportSettings {
            request_timeout: Duration::from_secs(5),
            max_retries: 1,
            retry_backoff: Duration::from_millis(10),
            probe_interval: Duration::from_millis(20),
            ..TransportSettings::default()
        },
        ..ReplicationSettings::default()
    };
    let replication = Replication::start(
        replica.clone(),
        Arc::new(HybridClock::new(node_tag)),
        Arc::new(SystemClock),
        Box::new(StaticPeers::new(peers.iter().map(String::as_str), own)),
        settings,
        metrics.clone(),
        Tasks::new(),
    );
    replication.accept_batches();
    let app = peer_routes(replication.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    TestNode {
        replica,
        replication,
        metrics,
    }
}

/// The internal routes a peer calls, bare: these tests exercise replication, not the HTTP
/// layer that serves them in a node.
fn peer_routes(replication: Arc<Replication>) -> axum::Router {
    axum::Router::new()
        .route(
            REPLICATE_PATH,
            post(
                |State(r): State<Arc<Replication>>, body: axum::body::Bytes| async move {
                    r.receive(&body).map(|_| ()).map_err(|e| {
                        // As the node's route answers a refused record.
                        let status = match e {
                            ReceiveError::Refused { .. } => StatusCode::UNPROCESSABLE_ENTITY,
                            _ => StatusCode::INTERNAL_SERVER_ERROR,
                        };
                        (status, e.to_string())
                    })
                },
            ),
        )
        .route(
            DIGESTS_PATH,
            get(
                |State(r): State<Arc<Replication>>, Query(cutoff): Query<Cutoff>| async move {
                    axum::Json(r.digests(cutoff))
                },
            ),
        )
        .route(
            FETCH_PATH,
            post(
                |State(r): State<Arc<Replication>>, axum::Json(fetch): axum::Json<Fetch>| async move {
                    r.fetch(fetch).to_vec()
                },
            ),
        )
        .with_state(replication)
}

fn record(key: &[u8], value: Option<&[u8]>, version: Version) -> Record {
    Record {
        key: key.to_vec(),
        version,
        expiry_unix_nanos: None,
        value: value.map(<[u8]>::to_vec),
    }
}

/// Writes locally and replicates, as the HTTP layer does.
async fn write(
    node: &TestNode,
    key: &[u8],
    value: Option<&[u8]>,
    level: AckLevel,
) -> Result<Replicated, AckError> {
    let version = node.replication.hlc.next(SystemClock.now());
    let record = record(key, value, version);
    node.replica.put(record.clone());
    node.replication
        .send(
            RecordRef {
                key,
                version,
                expiry_unix_nanos: None,
                value,
            },
            Some(level),
        )
        .await
        .expect("the record encodes")
        .wait()
        .await
}

async fn cluster(size: usize) -> Vec<TestNode> {
    let mut bound = Vec::new();
    for _ in 0..size {
        bound.push(listener().await);
    }
    let addresses: Vec<String> = bound.iter().map(|(_, a)| a.clone()).collect();
    bound
        .into_iter()
        .enumerate()
        .map(|(i, (listener, own))| node(listener, &own, &addresses, i as u64 + 1))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_with_ack_all_is_on_every_node_when_acknowledged() {
    let nodes = cluster(3).await;
    let replicated = write(&nodes[0], b"k", Some(b"v"), AckLevel::All)
        .await
        .expect("all acknowledge");
    assert_eq!((replicated.acked, replicated.replicas), (3, 3));
    let watch = replicated.watch.expect("the key has peers");
    assert_eq!((watch.peers_acked(), watch.settled()), (2, true));
    for node in &nodes[1..] {
        assert_eq!(
            node.replica.get(b"k").and_then(|r| r.value),
            Some(b"v".to_vec())
        );
    }
}

/// The text exposition of a node's replication metrics.
fn scrape(node: &TestNode) -> String {
    let mut registry = prometheus_client::registry::Registry::default();
    node.metrics.register(&mut registry);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).expect("encodes");
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_batch_is_neither_acknowledged_nor_retried() {
    let nodes = cluster(2).await;
    // Over the receiver's key limit (1024 bytes by default).
    let long = vec![b'k'; 2_000];
    let error = write(&nodes[0], &long, Some(b"v"), AckLevel::All)
        .await
        .expect_err("the peer refuses the record");
    assert_eq!((error.acked, error.replicas), (1, 2));
    assert!(nodes[1].replica.get(&long).is_none());
    let receiver = scrape(&nodes[1]);
    assert!(
        receiver.contains("replication_refused_records_total{reason=\"key_length\"} 1"),
        "{receiver}"
    );
    let sender = scrape(&nodes[0]);
    // Both series exist from the link's start; only the drop counted.
    let count = |name: &str| {
        sender
            .lines()
            .find_map(|line| {
                line.strip_prefix(name)?
                    .split_once("} ")?
                    .1
                    .parse::<f64>()
                    .ok()
            })
            .unwrap_or_else(|| panic!("no {name}: {sender}"))
    };
    assert_eq!(count("replication_retries_total{"), 0.0, "{sender}");
    assert!(count("replication_dropped_total{") >= 1.0, "{sender}");
    let after = write(&nodes[0], b"after", Some(b"v"), AckLevel::All)
        .await
        .expect("the link carries on");
    assert_eq!(after.acked, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_peer_fails_all_but_not_quorum() {
    let (a_listener, a) = listener().await;
    let (b_listener, b) = listener().await;
    // A port nobody listens on: connections are refused.
    let dead = {
        let (probe, address) = listener().await;
        drop(probe);
        address
    };
    let peers = vec![a.clone(), b.clone(), dead];
    let node_a = node(a_listener, &a, &peers, 1);
    let _node_b = node(b_listener, &b, &peers, 2);
    let quorum = write(&node_a, b"q", Some(b"1"), AckLevel::Quorum)
        .await
        .expect("a and b are a majority of 3");
    assert_eq!(quorum.acked, 2);
    let error = write(&node_a, b"q", Some(b"2"), AckLevel::All)
        .await
        .expect_err("the dead peer never acknowledges");
    assert_eq!((error.acked, error.required, error.replicas), (2, 3, 3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anti_entropy_pulls_what_a_node_missed_and_keeps_newer_tombstones() {
    let nodes = cluster(2).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    // Written on b behind replication's back: only anti-entropy can carry them.
    let old = Version { hlc: 10, node: 2 };
    let new = Version { hlc: 20, node: 2 };
    b.replica.put(record(b"missed", Some(b"x"), old));
    b.replica.put(record(b"deleted", None, new));
    a.replica.put(record(b"deleted", Some(b"stale"), old));
    let report = a.replication.catch_up().await;
    assert_eq!(report.peers_ok, 1);
    assert_eq!(report.repaired, 2);
    assert_eq!(
        a.replica.get(b"missed").and_then(|r| r.value),
        Some(b"x".to_vec())
    );
    assert_eq!(a.replica.get(b"deleted").map(|r| r.value), Some(None));
    // b pulls from a: nothing newer there, nothing changes.
    let report = b.replication.catch_up().await;
    assert_eq!(report.repaired, 0);
    assert!(a.replication.hlc.next(SystemClock.now()) > new);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anti_entropy_repairs_a_write_the_transport_dropped_fetching_only_its_range() {
    let (a_listener, a) = listener().await;
    // b's port is free while the write happens: the connection is refused and the link
    // drops the record (after its retry) instead of delivering it.
    let b = {
        let (probe, address) = listener().await;
        drop(probe);
        address
    };
    let peers = vec![a.clone(), b.clone()];
    let node_a = node(a_listener, &a, &peers, 1);
    // Fifty keys both nodes hold at the same versions: their ranges must not be fetched.
    let mut shared = Vec::new();
    for i in 0..50 {
        let key = format!("shared-{i}");
        shared.push(record(
            key.as_bytes(),
            Some(b"same"),
            Version {
                hlc: 100 + i,
                node: 1,
            },
        ));
    }
    for record in &shared {
        node_a.replica.put(record.clone());
    }
    write(&node_a, b"dropped", Some(b"v"), AckLevel::One)
        .await
        .expect("acknowledged by a alone");
    let dropped = format!("tidecache_replication_dropped_total{{peer=\"{b}\"}}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while node_a.sample(&dropped).is_none_or(|count| count < 1.0) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the link never dropped the record"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(node_a.sample(&dropped), Some(1.0));

    let b_listener = TcpListener::bind(&b).await.expect("b's port is free again");
    let node_b = node(b_listener, &b, &peers, 2);
    for record in shared {
        node_b.replica.put(record);
    }
    assert_eq!(node_b.replica.get(b"dropped"), None, "the drop happened");
    let report = node_b.replication.catch_up().await;
    assert_eq!(report.peers_ok, 1);
    assert_eq!(report.repaired, 1, "exactly the dropped write");
    assert_eq!(report.buckets_fetched, 1, "only the range holding it");
    assert_eq!(
        node_b.replica.get(b"dropped").and_then(|r| r.value),
        Some(b"v".to_vec())
    );
}
