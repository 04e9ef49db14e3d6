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
