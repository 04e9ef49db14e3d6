//! Replication between three `cache-node` processes on loopback: a write on one is read on
//! the others, concurrent writes to one key end with the highest version everywhere,
//! conditional writes see replicated versions, and a delete made on another node survives a
//! restart of the whole cluster.

use std::time::{Duration, Instant};

use cache_node_testkit::{Client, Cluster};
use http::{Method, StatusCode};

const SETTLE: Duration = Duration::from_secs(10);

/// The version an ETag names, `"<hlc>-<node tag in hex>"` (`"<hlc>"` for tag 0), as the pair
/// last-writer-wins orders by.
fn version(etag: &str) -> (u64, u64) {
    let inner = etag.trim_matches('"');
    let (hlc, node) = inner.split_once('-').unwrap_or((inner, "0"));
    let hlc = hlc.parse().unwrap_or_else(|_| panic!("ETag {etag}"));
    let node = u64::from_str_radix(node, 16).unwrap_or_else(|_| panic!("ETag {etag}"));
    (hlc, node)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_on_one_node_is_read_on_the_others() {
    let cluster = Cluster::start(3, &[]);
    let client = Client::default();
    let put = client
        .put(
            cluster.address(0),
            "greeting",
            "hello",
            &[("tidecache-ack", "all")],
        )
        .await
        .expect("put");
    assert_eq!(put.status, StatusCode::CREATED);
    assert_eq!(put.header("tidecache-acked"), "3");
    assert_eq!(put.header("tidecache-replicas"), "3");
    let etag = put.header("etag");
    for node in 1..3 {
        // With ack=all the write is on every node before the client hears about it.
        let got = client
            .send(
                Method::GET,
                cluster.address(node),
                "/v1/keys/greeting",
                &[],
                "",
            )
            .await
            .expect("get");
        assert_eq!(got.status, StatusCode::OK, "node {node}");
        assert_eq!(&got.body[..], b"hello");
        assert_eq!(got.header("etag"), etag, "the same version everywhere");
    }
    let bad = client
        .put(
            cluster.address(0),
            "greeting",
            "x",
            &[("tidecache-ack", "most")],
        )
        .await
        .expect("put");
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(bad.text().contains("bad_ack_level"), "{}", bad.text());
    // The default (one) acknowledges at once and replicates in the background.
    let put = client
        .put(cluster.address(1), "later", "v", &[])
        .await
        .expect("put");
    assert_eq!(put.status, StatusCode::CREATED);
    assert_eq!(put.header("tidecache-acked"), "1");
    for node in [0, 2] {
        let value = client
            .eventually(cluster.address(node), "later", SETTLE, |v| v == Some("v"))
            .await;
        assert_eq!(value.as_deref(), Some("v"), "node {node}");
    }
    // Samples, not just the families' HELP lines (present with no sample at all): node 0
    // observed each peer's lag before it answered the ack=all write, node 1 applied that
    // write, and every node ran its join catch-up pass before it turned ready.
    let origin = cluster.address(0);
    for peer in [1, 2] {
        let peer = cluster.address(peer);
        let lag = format!("tidecache_replication_lag_seconds_count{{peer=\"{peer}\"}}");
        assert!(client.metric(origin, &lag).await >= 1.0, "{lag}");
        let depth = format!("tidecache_replication_queue_depth{{peer=\"{peer}\"}}");
        assert!(client.metric(origin, &depth).await >= 0.0, "{depth}");
    }
    let applied = "tidecache_replication_applied_total";
    assert!(client.metric(cluster.address(1), applied).await >= 1.0);
    for node in 0..3 {
        let passes = "tidecache_anti_entropy_pass_duration_seconds_count";
        assert!(
            client.metric(cluster.address(node), passes).await >= 1.0,
            "node {node}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_to_one_key_end_with_the_highest_version_everywhere() {
    let cluster = Cluster::start(3, &[]);
    let client = Client::default();
    let mut writers = Vec::new();
    for node in 0..3 {
        let address = cluster.address(node).to_string();
        let client = client.clone();
        writers.push(tokio::spawn(async move {
            let mut written = Vec::new();
            for round in 0..50 {
                let value = format!("node{node}-round{round}");
                let reply = client
                    .put(&address, "contended", &value, &[])
                    .await
                    .expect("put");
                assert!(
                    matches!(reply.status, StatusCode::CREATED | StatusCode::NO_CONTENT),
                    "PUT {value}: {reply:?}"
                );
                written.push((reply.header("etag"), value));
            }
            written
        }));
    }
    let mut written = Vec::new();
    for writer in writers {
        written.extend(writer.await.expect("writer"));
    }
    let mut versions: Vec<_> = written.iter().map(|(etag, _)| version(etag)).collect();
    versions.sort_unstable();
    versions.dedup();
    assert_eq!(versions.len(), 150, "every write has a version of its own");
    let (winner_etag, winner) = written
        .iter()
        .max_by_key(|(etag, _)| version(etag))
        .expect("writes");
    let deadline = Instant::now() + SETTLE;
    loop {
        let mut seen = Vec::new();
        for node in 0..3 {
            let reply = client
                .send(
                    Method::GET,
                    cluster.address(node),
                    "/v1/keys/contended",
                    &[],
                    "",
                )
                .await
                .expect("get");
            // Each node wrote the key itself, so it is never absent.
            assert_eq!(reply.status, StatusCode::OK, "node {node}: {reply:?}");
            seen.push((reply.header("etag"), reply.text()));
        }
        if seen
            .iter()
            .all(|(etag, value)| etag == winner_etag && value == winner)
        {
            println!("winner on every node: {winner} {winner_etag}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the nodes hold {seen:?} after {SETTLE:?}, not the highest version {winner} \
             {winner_etag}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditional_writes_see_versions_replicated_with_ack_all() {
    let cluster = Cluster::start(3, &["--ack=all"]);
    let client = Client::default();
    let (a, b, c) = (cluster.address(0), cluster.address(1), cluster.address(2));
    let create_only = [("if-none-match", "*")];
    let created = client.put(a, "lock", "a", &create_only).await.expect("put");
    assert_eq!(created.status, StatusCode::CREATED);
    let etag = created.header("etag");
    // The create is on b already: create-only there fails, naming a's version.
    let refused = client.put(b, "lock", "b", &create_only).await.expect("put");
    assert_eq!(refused.status, StatusCode::PRECONDITION_FAILED);
    assert_eq!(refused.header("etag"), etag);
    // Compare-and-set on c with a's ETag succeeds once, then the old ETag is stale everywhere.
    let swapped = client
        .put(c, "lock", "c", &[("if-match", etag.as_str())])
        .await
        .expect("put");
    assert_eq!(swapped.status, StatusCode::NO_CONTENT);
    let stale = client
        .put(a, "lock", "a2", &[("if-match", etag.as_str())])
        .await
        .expect("put");
    assert_eq!(stale.status, StatusCode::PRECONDITION_FAILED);
    assert_eq!(stale.header("etag"), swapped.header("etag"));
    assert_eq!(
        client.get(b, "lock").await.expect("get").as_deref(),
        Some("c")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_on_another_node_survives_a_restart_of_every_node() {
    let mut cluster = Cluster::builder(3).fsync("always").start();
    let client = Client::default();
    let all = [("tidecache-ack", "all")];
    for key in ["doomed", "kept"] {
        let put = client
            .put(cluster.address(0), key, "x", &all)
            .await
            .expect("put");
        assert_eq!(put.status, StatusCode::CREATED);
    }
    let deleted = client
        .delete(cluster.address(1), "doomed", &all)
        .await
        .expect("delete");
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    assert_eq!(deleted.header("tidecache-acked"), "3");
    for node in 0..3 {
        assert!(cluster.stop(node).success(), "node {node} stopped cleanly");
    }
    cluster.start_nodes(0..3);
    for node in 0..3 {
        let address = cluster.address(node);
        // The volume was loaded (a node that loaded nothing would miss the deleted key too).
        assert_eq!(
            client.get(address, "kept").await.expect("get").as_deref(),
            Some("x"),
            "node {node} lost a write:\n{}",
            cluster.log(node)
        );
        assert_eq!(
            client.get(address, "doomed").await.expect("get"),
            None,
            "node {node} resurrected the key:\n{}",
            cluster.log(node)
        );
    }
    // Anti-entropy passes must not bring it back either: wait for two more on every node.
    let passes = "tidecache_anti_entropy_pass_duration_seconds_count";
    for node in 0..3 {
        let address = cluster.address(node);
        let before = client.metric(address, passes).await;
        let deadline = Instant::now() + Duration::from_secs(30);
        while client.metric(address, passes).await < before + 2.0 {
            assert!(
                Instant::now() < deadline,
                "node {node} runs no anti-entropy"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    for node in 0..3 {
        assert_eq!(
            client
                .get(cluster.address(node), "doomed")
                .await
                .expect("get"),
            None,
            "node {node}"
        );
    }
}
