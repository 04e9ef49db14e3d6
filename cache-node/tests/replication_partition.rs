//! One node cut off for 30 s (SIGSTOP: its sockets stay open, nothing answers) while writes
//! continue on the others; after the heal every node converges. Prints the convergence time.

use std::time::{Duration, Instant};

use cache_node_testkit::{Client, Cluster};
use http::{Method, StatusCode};

const PARTITION: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_off_for_30_seconds_converges_after_the_heal() {
    let cluster = Cluster::start(3, &[]);
    let client = Client::default();
    let (a, b, c) = (cluster.address(0), cluster.address(1), cluster.address(2));
    let before = client
        .put(a, "before", "1", &[("tidecache-ack", "all")])
        .await
        .expect("put");
    assert_eq!(before.status, StatusCode::CREATED);

    cluster.signal(2, "STOP");
    let cut_at = Instant::now();
    // While c is away, `all` cannot be reached: the client hears how many acknowledged.
    let refused = client
        .put(a, "needs-all", "x", &[("tidecache-ack", "all")])
        .await
        .expect("put");
    assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(refused.header("tidecache-acked"), "2");
    let message = refused.text();
    assert!(message.contains("only 2 acknowledged"), "{message}");
    // quorum still works.
    let quorum = client
        .put(b, "quorum-write", "q", &[("tidecache-ack", "quorum")])
        .await
        .expect("put");
    assert_eq!(quorum.status, StatusCode::CREATED, "{quorum:?}");
    assert_eq!(quorum.header("tidecache-acked"), "2");

    let mut written = 0;
    while cut_at.elapsed() < PARTITION {
        for (i, address) in [a, b].into_iter().enumerate() {
            let put = client
                .put(address, &format!("during-{written}"), &format!("v{i}"), &[])
                .await
                .expect("put");
            assert_eq!(put.status, StatusCode::CREATED, "during-{written}");
            written += 1;
        }
        // Overwrites and deletes too, not only fresh keys.
        let overwrite = client
            .put(a, "before", &format!("{written}"), &[])
            .await
            .expect("put");
        assert_eq!(overwrite.status, StatusCode::NO_CONTENT);
        if written % 50 == 0 {
            // Odd keys were written on b itself, so b holds this one.
            let key = format!("during-{}", written - 9);
            let deleted = client.delete(b, &key, &[]).await.expect("delete");
            assert_eq!(deleted.status, StatusCode::NO_CONTENT, "{key}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let last = format!("during-{}", written - 1);
    // The last overwrite of `before` was the loop's last: `written` when it was sent.
    let expected_before = Some(written.to_string());
    assert_eq!(client.get(a, "before").await.expect("get"), expected_before);

    cluster.signal(2, "CONT");
    let healed_at = Instant::now();
    let converged = loop {
        let digests = digests(&client, &cluster.peer_auth(), [a, b, c]).await;
        if digests.iter().all(|d| d.is_some() && *d == digests[0]) {
            let ranges = digests[0].as_ref().map_or(0, Vec::len);
            assert!(ranges > 0, "every node summarises an empty store");
            break healed_at.elapsed();
        }
        assert!(
            healed_at.elapsed() < Duration::from_secs(60),
            "no convergence 60 s after the heal\n{}",
            cluster.log(2)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    println!(
        "partition of {PARTITION:?} with {written} writes: converged {converged:?} after the heal"
    );
    assert_eq!(
        client.get(c, &last).await.expect("get").as_deref(),
        Some("v1")
    );
    assert_eq!(
        client.get(c, "before").await.expect("get"),
        expected_before,
        "c holds the overwrite made while it was cut off"
    );
    assert_eq!(
        client.get(c, "needs-all").await.expect("get").as_deref(),
        Some("x")
    );
    let deleted = format!("during-{}", 50 - 9);
    assert_eq!(client.get(c, &deleted).await.expect("get"), None);
}

/// Each node's digests (one per bucket and key range, in a fixed order), `None` if it does
/// not answer.
async fn digests(
    client: &Client,
    peer_auth: &str,
    nodes: [&str; 3],
) -> Vec<Option<Vec<serde_json::Value>>> {
    let mut out = Vec::new();
    for address in nodes {
        let reply = client
            .send(
                Method::GET,
                address,
                "/internal/v1/digests",
                &[("authorization", peer_auth)],
                "",
            )
            .await
            .ok()
            .filter(|r| r.status == StatusCode::OK);
        out.push(reply.map(|r| {
            let mut digests: Vec<serde_json::Value> = serde_json::from_slice(&r.body)
                .unwrap_or_else(|e| panic!("digests of {address}: {e}: {}", r.text()));
            digests.sort_by_key(|d| (d["bucket"].as_i64(), d["range"].as_i64()));
            digests
        }));
    }
    out
}
