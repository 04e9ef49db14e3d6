//! `--fsync never` still syncs at two moments (docs/persistence.md): when a segment is
//! rotated, and at a clean shutdown. A machine crash (the testkit's loop-mounted ext4 with
//! its journal aborted) keeps exactly what was synced, so these are the only tests that can
//! tell: a kill -9 keeps the page cache, and the kernel's own writeback takes ~30 s.

use cache_node_testkit::{Client, Cluster, Volume};
use http::StatusCode;

/// Writes `count` keys `prefix-i` without expiry (the persistent area) on node 0.
async fn write(client: &Client, address: &str, prefix: &str, count: usize) {
    for i in 0..count {
        let reply = client
            .put(address, &format!("{prefix}-{i}"), &"v".repeat(100), &[])
            .await
            .expect("answers");
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text());
    }
}

/// How many of `prefix-0 .. prefix-count` node 0 holds.
async fn held(client: &Client, address: &str, prefix: &str, count: usize) -> usize {
    let mut held = 0;
    for i in 0..count {
        if client
            .get(address, &format!("{prefix}-{i}"))
            .await
            .expect("answers")
            .is_some()
        {
            held += 1;
        }
    }
    held
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_syncs_rotated_segments_and_at_shutdown() {
    let mut volume = Volume::new();
    let mut cluster = Cluster::builder(1)
        .independent()
        .fsync("never")
        .flag("--segment-bytes=4KiB")
        .data_dir(volume.path())
        .start();
    let client = Client::default();

    // Rotation: 300 records of ~130 bytes fill about ten 4 KiB segments. Everything but the
    // segment still open was synced when its segment was rotated.
    let address = cluster.address(0).to_string();
    write(&client, &address, "rotated", 300).await;
    volume.crash();
    cluster.kill(0);
    volume.recover();
    cluster.start_nodes([0]);
    let address = cluster.address(0).to_string();
    let kept = held(&client, &address, "rotated", 300).await;
    assert!(
        kept >= 250,
        "a machine crash kept {kept} of 300 writes: rotated segments were not synced"
    );
    assert_eq!(
        held(&client, &address, "rotated", 200).await,
        200,
        "the oldest 200 survive"
    );

    // Shutdown: a clean stop syncs what the open segment holds.
    write(&client, &address, "stopped", 20).await;
    let status = cluster.stop(0);
    assert!(status.success(), "clean stop: {status}");
    volume.crash();
    volume.recover();
    cluster.start_nodes([0]);
    let address = cluster.address(0).to_string();
    assert_eq!(
        held(&client, &address, "stopped", 20).await,
        20,
        "a clean shutdown synced every write"
    );
    // Nothing else was lost on the way.
    assert_eq!(held(&client, &address, "rotated", 200).await, 200);
}
