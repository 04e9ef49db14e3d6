//! Two cache-node processes writing to the same data directory at once (each into its own
//! subdirectories), killed, then both restarted: each loads the other's entries, the newest
//! version of every key wins, and deleted keys stay deleted.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use cache_node_testkit::{Client, Cluster};
use http::{Method, StatusCode};

/// Client tasks; each owns a set of keys and sends every operation to a random node.
const TASKS: usize = 2;
const KEYS_PER_TASK: usize = 30;
const OPS_PER_TASK: usize = 300;
/// Two operations on one key are spaced by at least this much, so that their versions (each
/// node's own clock in milliseconds, without replication to merge them) order them as real
/// time does.
const SPACING: Duration = Duration::from_millis(3);

/// The expected state of a key: its value and ETag, or absent.
type Expected = Option<(String, String)>;

/// A tiny deterministic generator.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, bound: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((self.0 >> 33) % bound as u64) as usize
    }
}

/// Runs one task's operations; returns each key's expected state.
async fn operate(task: usize, nodes: [String; 2]) -> HashMap<String, Expected> {
    let client = Client::default();
    let mut rng = Lcg(task as u64 + 7);
    let mut expected: HashMap<String, Expected> = HashMap::new();
    // Which node holds each key's latest value: a node can only delete what it has.
    let mut holder: HashMap<String, usize> = HashMap::new();
    let mut last_op: HashMap<String, Instant> = HashMap::new();
    for seq in 0..OPS_PER_TASK {
        let key = format!("t{task}-k{}", rng.next(KEYS_PER_TASK));
        if let Some(since) = last_op.get(&key) {
            tokio::time::sleep(SPACING.saturating_sub(since.elapsed())).await;
        }
        let delete = holder.contains_key(&key) && rng.next(4) == 0;
        if delete {
            let node = holder.remove(&key).expect("held");
            let reply = client
                .delete(&nodes[node], &key, &[])
                .await
                .expect("DELETE");
            assert_eq!(
                reply.status,
                StatusCode::NO_CONTENT,
                "DELETE {key} on node {node}"
            );
            expected.insert(key.clone(), None);
        } else {
            let node = rng.next(2);
            let value = format!("{key}-v{seq}-n{node}");
            let ttl = if rng.next(2) == 0 { "?ttl=1h" } else { "" };
            let reply = client
                .put(&nodes[node], &format!("{key}{ttl}"), &value, &[])
                .await
                .expect("PUT");
            assert!(
                matches!(reply.status, StatusCode::CREATED | StatusCode::NO_CONTENT),
                "PUT {key}: {reply:?}"
            );
            let etag = reply.header("etag");
            assert!(!etag.is_empty(), "PUT {key}: no ETag");
            holder.insert(key.clone(), node);
            expected.insert(key.clone(), Some((value, etag)));
        }
        last_op.insert(key, Instant::now());
    }
    expected
}

async fn check(cluster: &Cluster, node: usize, expected: &HashMap<String, Expected>) {
    let client = Client::default();
    let who = cluster.id(node);
    for (key, want) in expected {
        let reply = client
            .send(
                Method::GET,
                cluster.address(node),
                &format!("/v1/keys/{key}"),
                &[],
                "",
            )
            .await
            .expect("GET");
        let got = match reply.status {
            StatusCode::OK => Some((reply.text(), reply.header("etag"))),
            StatusCode::NOT_FOUND => None,
            status => panic!("GET {key} on {who}: {status}"),
        };
        assert_eq!(&got, want, "{key} on {who}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_on_one_volume_load_each_others_entries_newest_wins_and_deletes_hold() {
    let mut cluster = Cluster::builder(2).independent().fsync("always").start();
    let nodes = [0, 1].map(|node| cluster.address(node).to_string());
    let tasks: Vec<_> = (0..TASKS)
        .map(|task| tokio::spawn(operate(task, nodes.clone())))
        .collect();
    let mut expected = HashMap::new();
    for task in tasks {
        expected.extend(task.await.expect("client task"));
    }
    let deleted = expected.values().filter(|want| want.is_none()).count();
    assert!(deleted > 0 && deleted < expected.len(), "{deleted} deleted");
    cluster.kill(0);
    cluster.kill(1);

    cluster.start_nodes(0..2);
    check(&cluster, 0, &expected).await;
    check(&cluster, 1, &expected).await;
    for node in 0..2 {
        let id = cluster.id(node);
        let segments = std::fs::read_dir(cluster.data_dir().join("default/tidecache/persistent"))
            .expect("persistent area")
            .filter_map(Result::ok)
            .any(|entry| entry.file_name() == id);
        assert!(segments, "{id} wrote its own subdirectory");
    }
    println!(
        "two nodes: {} keys ({deleted} deleted) identical on both after the restart",
        expected.len()
    );
}
