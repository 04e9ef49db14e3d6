//! A node killed with SIGKILL under a `quorum` write load, its files on the shared volume
//! deleted (as if none of its writes had been synced), then restarted: it catches up from its
//! peers, and no write that any client saw acknowledged is missing on any node, even after a
//! restart of every node.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cache_node_testkit::{Client, Cluster};
use http::StatusCode;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_acknowledged_quorum_write_is_lost_when_a_node_is_killed() {
    // fsync=never: the killed node loses whatever it had not written out; the peers that
    // acknowledged must make up for it.
    let mut cluster = Cluster::builder(3)
        .flag("--ack=quorum")
        .fsync("never")
        .start();
    let client = Client::default();
    let acknowledged: Arc<Mutex<BTreeMap<String, String>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for writer in 0..4 {
        // Writers 0 and 1 write to node 0 (the one killed), 2 and 3 to node 1.
        let address = cluster.address(writer / 2).to_string();
        let (client, acknowledged, stop) = (client.clone(), acknowledged.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let key = format!("w{writer}-{n}");
                let value = format!("value-{writer}-{n}");
                n += 1;
                match client.put(&address, &key, &value, &[]).await {
                    Ok(reply) if reply.status == StatusCode::CREATED => {
                        let acked: usize = reply.header("tidecache-acked").parse().unwrap_or(0);
                        assert!(acked >= 2, "quorum acknowledged by {acked}");
                        acknowledged.lock().expect("lock").insert(key, value);
                    }
                    // The level not reached in time, or the connection lost: not
                    // acknowledged, so allowed to be lost. Back off while the node is down.
                    Ok(reply) if reply.status == StatusCode::SERVICE_UNAVAILABLE => {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                    Ok(reply) => panic!("PUT {key} on {address}: {reply:?}"),
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    cluster.kill(0);
    let killed_at = Instant::now();
    // Node 0's own writes acknowledged before the kill: the ones only the peers' memory will
    // hold once its files are gone.
    let only_in_peers = acknowledged
        .lock()
        .expect("lock")
        .keys()
        .filter(|key| key.starts_with("w0-") || key.starts_with("w1-"))
        .count();
    assert!(only_in_peers > 0, "no write acknowledged by node 0");
    // The worst case for the killed node: none of its writes reached the disk (SIGKILL alone
    // keeps what is in the page cache). Only the peers' memory has them now.
    let lost = forget_node_files(cluster.data_dir(), cluster.id(0));
    assert!(lost > 0, "node 0 had written segments");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    cluster.start_nodes([0]);
    println!("node 0 ready {:?} after SIGKILL", killed_at.elapsed());
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
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
        // Writes still on their way to a node get 10 s; one deadline for all of them, so that
        // a node lacking thousands fails in seconds rather than hours.
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut missing: Vec<&String> = acknowledged.keys().collect();
        loop {
            let mut lacking = Vec::new();
            for key in missing {
                let got = client.get(cluster.address(node), key).await.expect("get");
                if got.as_deref() != Some(acknowledged[key].as_str()) {
                    lacking.push(key);
                }
            }
            missing = lacking;
            if missing.is_empty() || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
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
        "{} acknowledged writes ({only_in_peers} of them node 0's, lost from the volume) present \
         on all 3 nodes (checked in {:?})",
        acknowledged.len(),
        started.elapsed()
    );

    // The catch-up wrote what node 0 had lost to its own log: a restart of every node (which
    // empties every memory) still finds every acknowledged write on the volume.
    for node in 0..3 {
        assert!(cluster.stop(node).success(), "node {node} stopped cleanly");
    }
    cluster.start_nodes(0..3);
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
