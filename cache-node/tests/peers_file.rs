//! Membership from a peers file (`--peers-file`) between real `cache-node` processes: a node
//! added to the file while the others run gets their writes, and one removed from it stops
//! counting as a replica while it still runs.

use std::time::{Duration, Instant};

use cache_node_testkit::{Client, Cluster};

/// Longer than a read of the file (500 ms) on a loaded machine.
const SEEN_WITHIN: Duration = Duration::from_secs(10);

/// Writes `key` through node 0 with `Tidecache-Ack: all` until the answer says `replicas`
/// replicas (node 0 has read the changed peers file), each acknowledged; panics after
/// `SEEN_WITHIN`.
async fn write_until_replicas(cluster: &Cluster, client: &Client, key: &str, replicas: usize) {
    let deadline = Instant::now() + SEEN_WITHIN;
    loop {
        let put = client
            .put(
                cluster.address(0),
                key,
                "value",
                &[("tidecache-ack", "all")],
            )
            .await
            .expect("put");
        assert!(
            put.status.is_success(),
            "{key}: {} {}",
            put.status,
            put.text()
        );
        let seen = put.header("tidecache-replicas");
        if seen == replicas.to_string() {
            assert_eq!(put.header("tidecache-acked"), seen, "{key}");
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{key}: still {seen} replicas after {SEEN_WITHIN:?}, not {replicas}:\n{}",
            cluster.log(0)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_join_and_leave_through_the_peers_file() {
    let mut cluster = Cluster::builder(3).dynamic().members(2).start();
    let client = Client::default();
    assert_eq!(cluster.members(), [0, 1]);
    write_until_replicas(&cluster, &client, "before", 2).await;

    cluster.join(2);
    assert_eq!(cluster.members(), [0, 1, 2]);
    // Acknowledged by all three: replication reaches the newcomer.
    write_until_replicas(&cluster, &client, "after-join", 3).await;
    assert_eq!(
        client
            .get(cluster.address(2), "after-join")
            .await
            .expect("get"),
        Some("value".to_string())
    );

    cluster.leave(2);
    assert_eq!(cluster.members(), [0, 1]);
    write_until_replicas(&cluster, &client, "after-leave", 2).await;
    // The node that left still runs and serves until it is stopped.
    assert_eq!(
        client
            .get(cluster.address(2), "after-join")
            .await
            .expect("the node that left still serves"),
        Some("value".to_string())
    );
    assert!(cluster.stop(2).success(), "{}", cluster.log(2));
}
