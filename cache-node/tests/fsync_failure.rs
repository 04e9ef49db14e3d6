//! A failed fsync stops the node (contract 2: it must not acknowledge writes it cannot make
//! durable, and restarting is how it recovers from disk). The volume is a loop-mounted ext4
//! whose journal is aborted under the running process, so its next write and fsync really
//! fail; the acknowledged writes are on disk after the restart.

use std::time::Duration;

use cache_node_testkit::{Client, Cluster, Volume};
use http::StatusCode;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_fsync_exits_the_process_and_the_restart_serves_what_was_acknowledged() {
    let mut volume = Volume::new();
    let mut cluster = Cluster::builder(1)
        .independent()
        .fsync("always")
        .data_dir(volume.path())
        .start();
    let client = Client::default();
    let address = cluster.address(0).to_string();
    for key in ["a", "b", "c"] {
        let reply = client
            .put(&address, key, "durable", &[])
            .await
            .expect("answers");
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text());
    }

    volume.crash();
    // The write after the crash is refused, not acknowledged: nothing was stored.
    match client
        .put(&address, "lost", "never acknowledged", &[])
        .await
    {
        Ok(reply) => {
            assert_eq!(
                reply.status,
                StatusCode::SERVICE_UNAVAILABLE,
                "{}",
                reply.text()
            );
            assert!(
                reply.text().contains("persistence_failed"),
                "{}",
                reply.text()
            );
        }
        // Or the node was already on its way out.
        Err(error) => assert!(error.contains("lost"), "{error}"),
    }
    let status = cluster.wait_exit(0, Duration::from_secs(30));
    assert!(!status.success(), "exit status {status}");
    let log = cluster.log(0);
    assert!(log.contains("fsync failed"), "{log}");

    volume.recover();
    cluster.start_nodes([0]);
    let address = cluster.address(0).to_string();
    for key in ["a", "b", "c"] {
        assert_eq!(
            client.get(&address, key).await.expect("answers").as_deref(),
            Some("durable"),
            "{key}"
        );
    }
    assert_eq!(client.get(&address, "lost").await.expect("answers"), None);
}
