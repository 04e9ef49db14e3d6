//! A node killed with SIGKILL under a `quorum` write load, its files on the shared volume
//! deleted (as if none of its writes had been synced), then restarted: it catches up from its
//! peers, and no write that any client saw acknowledged is missing on any node, even after a
//! restart of every node.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Client, Cluster};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_acknowledged_quorum_write_is_lost_when_a_node_is_killed() {
    // fsync=never: the killed node loses whatever it had not written out; the peers that
    // acknowledged must make up for it.
    let mut cluster = Cluster::start(3, &["--ack=quorum", "--fsync=never"]);
    let client = Client::default();
    let acknowledged: Arc<Mutex<BTreeMap<String, String>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for writer in 0..4 {
        // Writers 0 and 1 write to node 0 (the one killed), 2 and 3 to node 1.
        let address = cluster.address(writer / 2).to_string();
        let (client, acknowledged, stop) = (client.clone(), acknowledged.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let key = format!("w{writer}-{n}");
                let value = format!("value-{writer}-{n}");
                n += 1;
                match client.put(&address, &key, &value, &[]).await {
                    Ok(reply) if reply.status.is_success() => {
                        let acked: usize = reply.header("tidecache-acked").parse().unwrap_or(0);
                        assert!(acked >= 2, "quorum acknowledged by {acked}");
                        acknowledged.lock().expect("lock").insert(key, value);
                    }
                    // Refused, timed out or connection lost: not acknowledged, so allowed to
                    // be lost. Back off a little while the node is down.
                    _ => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    cluster.stop(0, "KILL");
    let killed_at = Instant::now();
    // The worst case for the killed node: none of its writes reached the disk (SIGKILL alone
    // keeps what is in the page cache). Only the peers' memory has them now.
    let lost = forget_node_files(cluster.data_dir(), "cache-0");
    assert!(lost > 0, "node 0 had written segments");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    cluster.spawn(0);
    cluster.wait_ready(0);
    println!("node 0 ready {:?} after SIGKILL", killed_at.elapsed());
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for writer in writers {
        writer.await.expect("writer");
    }
    let acknowledged = acknowledged.lock().expect("lock").clone();
    assert!(
        acknowledged.len() > 100,
        "too little load: {}",
        acknowledged.len()
    );
    let started = Instant::now();
    for node in 0..3 {
        let mut missing = Vec::new();
        for (key, value) in &acknowledged {
            let got = client
                .eventually(cluster.address(node), key, Duration::from_secs(5), |v| {
                    v == Some(value.as_str())
                })
                .await;
            if got.as_deref() != Some(value.as_str()) {
                missing.push(key.clone());
            }
        }
        assert!(
            missing.is_empty(),
            "node {node} lacks {} of {} acknowledged writes, e.g. {:?}\n{}",
            missing.len(),
            acknowledged.len(),
            &missing[..missing.len().min(5)],
            cluster.log(node)
        );
    }
    println!(
        "{} acknowledged writes present on all 3 nodes (checked in {:?})",
        acknowledged.len(),
        started.elapsed()
    );

    // The catch-up wrote what node 0 had lost to its own log: a restart of every node (which
    // empties every memory) still finds every acknowledged write on the volume.
    for node in 0..3 {
        cluster.stop(node, "TERM");
    }
    for node in 0..3 {
        cluster.spawn(node);
    }
    for node in 0..3 {
        cluster.wait_ready(node);
    }
    let mut missing = 0;
    for (key, value) in &acknowledged {
        let got = client.get(cluster.address(2), key).await.expect("get");
        if got.as_deref() != Some(value.as_str()) {
            missing += 1;
        }
    }
    assert_eq!(
        missing, 0,
        "acknowledged writes lost by a restart of every node after the catch-up"
    );
}

/// Deletes `node`'s subdirectory from every area of the cluster on the volume; returns how
/// many there were.
fn forget_node_files(data: &Path, node: &str) -> usize {
    let root = data.join("default").join("tidecache");
    let mut removed = 0;
    for area in std::fs::read_dir(&root).expect("cluster root").flatten() {
        let dir = area.path().join(node);
        if dir.is_dir() {
            std::fs::remove_dir_all(&dir).expect("remove");
            removed += 1;
        }
    }
    removed
}
