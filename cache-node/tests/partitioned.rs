//! Partitioned mode between real `cache-node` processes on loopback: each key lives on its
//! R owners only, in distinct zones, yet every node serves every key (a non-owner forwards to
//! an owner), writes are acknowledged by the owners, and a key outlives one of its owners.

use std::collections::BTreeMap;

use cache_node_testkit::{Client, Cluster};
use http::StatusCode;

const KEYS: usize = 300;

fn partitioned(size: usize, zones: usize) -> Cluster {
    Cluster::builder(size)
        .zones(zones)
        .flag("--mode=partitioned")
        .flag("--replication-factor=2")
        .start()
}

/// Writes `KEYS` keys, each through a different node, acknowledged by every owner.
async fn write_keys(cluster: &Cluster, nodes: usize, client: &Client) {
    for i in 0..KEYS {
        let put = client
            .put(
                cluster.address(i % nodes),
                &format!("key-{i}"),
                &format!("value-{i}"),
                &[("tidecache-ack", "all")],
            )
            .await
            .expect("put");
        assert_eq!(put.status, StatusCode::CREATED, "key-{i}: {}", put.text());
        // Acknowledged by both owners of the key, whichever node took the request.
        assert_eq!(put.header("tidecache-replicas"), "2", "key-{i}");
        assert_eq!(put.header("tidecache-acked"), "2", "key-{i}");
    }
}

/// Reads every key back through each of the first `nodes` nodes.
async fn read_keys(cluster: &Cluster, nodes: usize, client: &Client) {
    for node in 0..nodes {
        for i in 0..KEYS {
            let value = client
                .get(cluster.address(node), &format!("key-{i}"))
                .await
                .expect("get");
            assert_eq!(
                value.as_deref(),
                Some(format!("value-{i}").as_str()),
                "key-{i} from node {node}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_serves_every_key_that_only_its_owners_hold() {
    let cluster = partitioned(3, 3);
    let client = Client::default();
    write_keys(&cluster, 3, &client).await;
    read_keys(&cluster, 3, &client).await;
    // Each key is in the memory of exactly two nodes: R copies, not one per node.
    let mut entries = BTreeMap::new();
    for node in 0..3 {
        entries.insert(
            node,
            client
                .metric(cluster.address(node), "tidecache_entries")
                .await,
        );
    }
    let total: f64 = entries.values().sum();
    assert_eq!(total, (2 * KEYS) as f64, "{entries:?}");
    for (node, count) in &entries {
        // Two thirds of the keys each, give or take the hash's spread.
        assert!(
            (150.0..250.0).contains(count),
            "node {node} holds {count}: {entries:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_outlives_one_of_its_owners() {
    let mut cluster = partitioned(4, 2);
    let client = Client::default();
    write_keys(&cluster, 4, &client).await;
    cluster.kill(3);
    read_keys(&cluster, 3, &client).await;
    // Deletes through any node reach the owners that are left.
    for i in 0..KEYS {
        let deleted = client
            .delete(cluster.address(i % 3), &format!("key-{i}"), &[])
            .await
            .expect("delete");
        assert_eq!(
            deleted.status,
            StatusCode::NO_CONTENT,
            "key-{i}: {}",
            deleted.text()
        );
    }
    for i in 0..KEYS {
        let value = client
            .get(cluster.address(0), &format!("key-{i}"))
            .await
            .expect("get");
        assert_eq!(value, None, "key-{i}");
    }
}

/// The memory each node gets in the capacity test.
const CAPACITY_FLAG: &str = "--max-memory=1MiB";

/// Writes `key-<i>` (1000-byte values) through the nodes in turn until one is refused for
/// lack of memory or `limit` are written; returns how many were acknowledged.
async fn fill(cluster: &Cluster, nodes: usize, client: &Client, limit: usize) -> usize {
    let value = "v".repeat(1000);
    for i in 0..limit {
        let put = client
            .put(
                cluster.address(i % nodes),
                &format!("key-{i}"),
                &value,
                &[("tidecache-ack", "all")],
            )
            .await
            .expect("put");
        if put.status == StatusCode::INSUFFICIENT_STORAGE {
            return i;
        }
        assert_eq!(put.status, StatusCode::CREATED, "key-{i}: {}", put.text());
    }
    limit
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn six_nodes_hold_twice_what_one_node_can() {
    let client = Client::default();
    // What one node holds at this capacity, refusing (noeviction) once full.
    let single = Cluster::builder(1)
        .independent()
        .memory_only()
        .flag(CAPACITY_FLAG)
        .flag("--eviction-policy=noeviction")
        .start();
    let one = fill(&single, 1, &client, 100_000).await;
    assert!((100..100_000).contains(&one), "one node took {one} entries");
    drop(single);
    // N = twice that: six nodes with two owners per key hold N / 3 each.
    let n = 2 * one;
    let cluster = Cluster::builder(6)
        .memory_only()
        .zones(3)
        .flag("--mode=partitioned")
        .flag("--replication-factor=2")
        .flag(CAPACITY_FLAG)
        .flag("--eviction-policy=noeviction")
        .start();
    let held = fill(&cluster, 6, &client, n).await;
    assert_eq!(
        held, n,
        "6 nodes refused a write after {held} of {n} entries"
    );
    let value = "v".repeat(1000);
    for i in 0..n {
        let got = client
            .get(cluster.address((i + 1) % 6), &format!("key-{i}"))
            .await
            .expect("get");
        assert_eq!(got.as_deref(), Some(value.as_str()), "key-{i}");
    }
    let mut total = 0.0;
    for node in 0..6 {
        total += client
            .metric(cluster.address(node), "tidecache_entries")
            .await;
    }
    assert_eq!(total, (2 * n) as f64, "each of {n} keys on its two owners");
    eprintln!("one node holds {one} entries at {CAPACITY_FLAG}; six nodes hold {n}");
}

/// Reads `keys` through node `node`, each expected to hold its own name as value.
async fn read_named(cluster: &Cluster, node: usize, client: &Client, keys: &[String]) {
    for key in keys {
        let got = client.get(cluster.address(node), key).await.expect("get");
        assert_eq!(
            got.as_deref(),
            Some(key.as_str()),
            "{key} through node {node}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zone_cut_off_keeps_reads_and_quorum_writes_working_and_catches_up_after() {
    // Three owners per key, one in each zone; zone-2 is nodes 2 and 5.
    let cluster = Cluster::builder(6)
        .zones(3)
        .flag("--mode=partitioned")
        .flag("--replication-factor=3")
        .start();
    let client = Client::default();
    let live = [0, 1, 3, 4];
    let mut keys: Vec<String> = (0..200).map(|i| format!("before-{i}")).collect();
    for (i, key) in keys.iter().enumerate() {
        let put = client
            .put(
                cluster.address(i % 6),
                key,
                key,
                &[("tidecache-ack", "all")],
            )
            .await
            .expect("put");
        assert_eq!(put.status, StatusCode::CREATED, "{key}: {}", put.text());
    }
    // The zone is cut off: its processes stop answering, their sockets stay open.
    cluster.signal(2, "STOP");
    cluster.signal(5, "STOP");
    let cut = std::time::Instant::now();
    // Writes start at once: one forwarded to a cut owner before the others notice (a poll
    // every 2 s, 1 s timeout; the cut owners are tried last from then on) goes to the next
    // owner after the forwarding timeout, with the version the sender chose for it.
    let mut slowest = std::time::Duration::ZERO;
    for i in 0..200 {
        let key = format!("during-{i}");
        let sent = std::time::Instant::now();
        let put = client
            .put(
                cluster.address(live[i % 4]),
                &key,
                &key,
                &[("tidecache-ack", "quorum")],
            )
            .await
            .expect("put");
        slowest = slowest.max(sent.elapsed());
        assert_eq!(put.status, StatusCode::CREATED, "{key}: {}", put.text());
        assert_eq!(put.header("tidecache-replicas"), "3", "{key}");
        keys.push(key);
    }
    for node in live {
        read_named(&cluster, node, &client, &keys).await;
    }
    let during = cut.elapsed();
    cluster.signal(2, "CONT");
    cluster.signal(5, "CONT");
    let healed = std::time::Instant::now();
    // The zone catches up: between them its two nodes hold every key once.
    let mut held = 0.0;
    while healed.elapsed() < std::time::Duration::from_secs(30) {
        held = client.metric(cluster.address(2), "tidecache_entries").await
            + client.metric(cluster.address(5), "tidecache_entries").await;
        if held == keys.len() as f64 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(
        held,
        keys.len() as f64,
        "zone-2 holds {held} of {} keys",
        keys.len()
    );
    let caught_up = healed.elapsed();
    for node in [2, 5] {
        read_named(&cluster, node, &client, &keys).await;
    }
    eprintln!(
        "200 quorum writes (the slowest {slowest:?}) and {} reads through the other zones took \
         {during:?} while the zone was cut off; it held every key {caught_up:?} after the heal",
        4 * keys.len()
    );
}
