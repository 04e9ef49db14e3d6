//! Replication between three `cache-node` processes on loopback: a write on one is read on
//! the others, concurrent writes to one key end with the same winner everywhere, conditional
//! writes see replicated versions, and a delete made on another node survives a restart of the
//! whole cluster.

mod common;

use std::time::Duration;

use common::{Client, Cluster};
use http::StatusCode;

const SETTLE: Duration = Duration::from_secs(10);

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
                http::Method::GET,
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
    assert!(String::from_utf8_lossy(&bad.body).contains("bad_ack_level"));
    // The default (one) acknowledges at once and replicates in the background.
    let put = client
        .put(cluster.address(1), "later", "v", &[])
        .await
        .expect("put");
    assert_eq!(put.header("tidecache-acked"), "1");
    for node in [0, 2] {
        let value = client
            .eventually(cluster.address(node), "later", SETTLE, |v| v == Some("v"))
            .await;
        assert_eq!(value.as_deref(), Some("v"), "node {node}");
    }
    let metrics = client
        .send(http::Method::GET, cluster.address(1), "/metrics", &[], "")
        .await
        .expect("metrics");
    let text = String::from_utf8_lossy(&metrics.body);
    for name in [
        "tidecache_replication_lag_seconds_bucket",
        "tidecache_replication_queue_depth",
        "tidecache_replication_applied_total",
        "tidecache_anti_entropy_pass_duration_seconds",
    ] {
        assert!(text.contains(name), "{name} missing from /metrics:\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_to_one_key_end_with_the_same_winner_everywhere() {
    let cluster = Cluster::start(3, &[]);
    let client = Client::default();
    let mut writers = Vec::new();
    for node in 0..3 {
        let address = cluster.address(node).to_string();
        let client = client.clone();
        writers.push(tokio::spawn(async move {
            for round in 0..50 {
                let value = format!("node{node}-round{round}");
                client
                    .put(&address, "contended", &value, &[])
                    .await
                    .expect("put");
            }
        }));
    }
    for writer in writers {
        writer.await.expect("writer");
    }
    let deadline = std::time::Instant::now() + SETTLE;
    loop {
        let mut seen = Vec::new();
        for node in 0..3 {
            let reply = client
                .send(
                    http::Method::GET,
                    cluster.address(node),
                    "/v1/keys/contended",
                    &[],
                    "",
                )
                .await
                .expect("get");
            seen.push((reply.header("etag"), reply.body.clone()));
        }
        if seen.iter().all(|s| *s == seen[0]) {
            println!("winner: {:?}", String::from_utf8_lossy(&seen[0].1));
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "nodes disagree after {SETTLE:?}: {seen:?}"
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
    // The create is on b already: create-only there fails.
    let refused = client.put(b, "lock", "b", &create_only).await.expect("put");
    assert_eq!(refused.status, StatusCode::PRECONDITION_FAILED);
    // Compare-and-set on c with a's ETag succeeds once, then the old ETag is stale everywhere.
    let etag = created.header("etag");
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
    assert_eq!(
        client.get(b, "lock").await.expect("get").as_deref(),
        Some("c")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_on_another_node_survives_a_restart_of_every_node() {
    let mut cluster = Cluster::start(3, &["--fsync=always"]);
    let client = Client::default();
    let put = client
        .put(
            cluster.address(0),
            "doomed",
            "x",
            &[("tidecache-ack", "all")],
        )
        .await
        .expect("put");
    assert_eq!(put.status, StatusCode::CREATED);
    let deleted = client
        .delete(cluster.address(1), "doomed", &[("tidecache-ack", "all")])
        .await
        .expect("delete");
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    assert_eq!(deleted.header("tidecache-acked"), "3");
    for node in 0..3 {
        cluster.stop(node, "TERM");
    }
    for node in 0..3 {
        cluster.spawn(node);
    }
    for node in 0..3 {
        cluster.wait_ready(node);
    }
    for node in 0..3 {
        assert_eq!(
            client
                .get(cluster.address(node), "doomed")
                .await
                .expect("get"),
            None,
            "node {node} resurrected the key:\n{}",
            cluster.log(node)
        );
    }
    // Anti-entropy passes (every second) must not bring it back either.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    for node in 0..3 {
        assert_eq!(
            client
                .get(cluster.address(node), "doomed")
                .await
                .expect("get"),
            None
        );
    }
}
