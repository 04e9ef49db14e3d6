//! Partitioned mode's moves between real `cache-node` processes on loopback, membership
//! changed through a peers file while a client writes with `quorum`: no acknowledged write
//! is lost when nodes join, leave (handing their partitions over before they exit) or are
//! killed during a move; every key stays readable from every node; and once moves end each
//! key is in exactly R nodes' memory.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cache_node_testkit::{Client, Cluster};
use http::{Method, StatusCode};

const R: usize = 2;

fn partitioned(size: usize, members: usize) -> Cluster {
    // Memory only: whatever a node gains must come to it over the network (with a shared
    // volume, a joining node's warm start would already have most of it).
    Cluster::builder(size)
        .memory_only()
        .dynamic()
        .members(members)
        .zones(3)
        .flag("--mode=partitioned")
        .flag(&format!("--replication-factor={R}"))
        .flag("--handoff-timeout=30s")
        .start()
}

/// A client writing `key-<n>` with `quorum` through the members in turn, logging what was
/// acknowledged.
struct Writer {
    targets: Arc<Mutex<Vec<String>>>,
    acked: Arc<Mutex<Vec<u64>>>,
    refused: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Writer {
    fn start(cluster: &Cluster) -> Writer {
        let targets = Arc::new(Mutex::new(addresses(cluster)));
        let acked = Arc::new(Mutex::new(Vec::new()));
        let refused = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let task = {
            let (targets, acked, refused, stop) = (
                targets.clone(),
                acked.clone(),
                refused.clone(),
                stop.clone(),
            );
            tokio::spawn(async move {
                let client = Client::default();
                let mut n: u64 = 0;
                while !stop.load(Ordering::Relaxed) {
                    let target = {
                        let targets = targets.lock().expect("lock");
                        targets[n as usize % targets.len()].clone()
                    };
                    let key = format!("key-{n}");
                    let put = client
                        .put(&target, &key, &value(n), &[("tidecache-ack", "quorum")])
                        .await;
                    match put {
                        Ok(reply) if reply.status == StatusCode::CREATED => {
                            acked.lock().expect("lock").push(n);
                        }
                        Ok(reply) => refused.lock().expect("lock").push(format!(
                            "{key} on {target}: {} {}",
                            reply.status,
                            reply.text()
                        )),
                        Err(error) => refused.lock().expect("lock").push(error),
                    }
                    n += 1;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
        };
        Writer {
            targets,
            acked,
            refused,
            stop,
            task,
        }
    }

    /// Sends from now on only to the members of `cluster`.
    fn follow(&self, cluster: &Cluster) {
        *self.targets.lock().expect("lock") = addresses(cluster);
    }

    fn acked(&self) -> Vec<u64> {
        self.acked.lock().expect("lock").clone()
    }

    async fn finish(self) -> (Vec<u64>, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.expect("writer");
        let acked = self.acked.lock().expect("lock").clone();
        let refused = self.refused.lock().expect("lock").clone();
        (acked, refused)
    }
}

fn value(n: u64) -> String {
    format!("value-{n}")
}

fn addresses(cluster: &Cluster) -> Vec<String> {
    cluster
        .members()
        .into_iter()
        .map(|i| cluster.address(i).to_string())
        .collect()
}

/// Waits until every member places by the same membership and none gains or keeps a
/// partition; returns how long that took.
async fn wait_settled(cluster: &Cluster, client: &Client) -> Duration {
    let started = Instant::now();
    let auth = cluster.peer_auth();
    loop {
        let mut fingerprints = Vec::new();
        let mut moving = Vec::new();
        for i in cluster.members() {
            let reply = client
                .send(
                    Method::GET,
                    cluster.address(i),
                    "/internal/v1/partitions",
                    &[("authorization", &auth)],
                    "",
                )
                .await;
            let Ok(reply) = reply.map(|r| r.body) else {
                moving.push(i);
                continue;
            };
            let holdings: serde_json::Value =
                serde_json::from_slice(&reply).expect("holdings are JSON");
            fingerprints.push(holdings["fingerprint"].clone());
            if holdings["complete"] != holdings["held"] {
                moving.push(i);
            }
        }
        fingerprints.dedup();
        if fingerprints.len() == 1 && moving.is_empty() {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "moves did not end in 90 s: {} fingerprints, nodes {moving:?} moving",
            fingerprints.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Reads every acknowledged key through every member, 32 reads at a time.
async fn read_all(cluster: &Cluster, client: &Client, acked: &[u64], step: &str) {
    use futures::StreamExt;
    for i in cluster.members() {
        let address = cluster.address(i);
        let wrong: Vec<String> = futures::stream::iter(acked)
            .map(|&n| async move {
                let key = format!("key-{n}");
                // A connection the client's pool lost is retried; an answer is not.
                let mut got = client.get(address, &key).await;
                for _ in 0..3 {
                    if got.is_ok() {
                        break;
                    }
                    got = client.get(address, &key).await;
                }
                (got != Ok(Some(value(n)))).then(|| format!("{key}: {got:?}"))
            })
            .buffer_unordered(32)
            .filter_map(|wrong| async move { wrong })
            .collect()
            .await;
        assert!(
            wrong.is_empty(),
            "{step}: {} of {} acknowledged keys wrong through node {i}, e.g. {:?}:\n{}",
            wrong.len(),
            acked.len(),
            &wrong[..wrong.len().min(5)],
            cluster.log(i)
        );
    }
}

/// Each acknowledged key in exactly R members' memory (moved partitions left the old
/// owners); a refused write may have reached some of its owners. A node drops a partition it
/// gave up after the membership settled, so the count may take a moment to come down: it is
/// read for up to 10 s (one CI run saw one copy too many right after settling).
async fn assert_r_copies(cluster: &Cluster, client: &Client, acked: usize, refused: usize) {
    let (low, high) = ((R * acked) as f64, (R * (acked + refused)) as f64);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut total = 0.0;
        let mut per_node = Vec::new();
        for i in cluster.members() {
            let entries = client.metric(cluster.address(i), "tidecache_entries").await;
            per_node.push((i, entries));
            total += entries;
        }
        if (low..=high).contains(&total) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{total} entries, expected {low}..={high}: per node {per_node:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Runs a blocking cluster change (join, stop) without stalling the writer's runtime.
fn blocking<T>(change: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(change)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn scaling_3_to_6_to_3_under_quorum_writes_loses_no_acknowledged_write() {
    let mut cluster = partitioned(6, 3);
    let client = Client::default();
    let writer = Writer::start(&cluster);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut timings = Vec::new();
    for joining in 3..6 {
        blocking(|| cluster.join(joining));
        writer.follow(&cluster);
        let took = wait_settled(&cluster, &client).await;
        timings.push(format!("join {joining}: {took:?}"));
        read_all(
            &cluster,
            &client,
            &writer.acked(),
            &format!("after node {joining} joined"),
        )
        .await;
    }
    for leaving in (3..6).rev() {
        cluster.leave(leaving);
        writer.follow(&cluster);
        // The departing node hands its partitions over, then exits on SIGTERM.
        let started = Instant::now();
        let status = blocking(|| cluster.stop(leaving));
        assert!(
            status.success(),
            "node {leaving}: {status}\n{}",
            cluster.log(leaving)
        );
        let took = wait_settled(&cluster, &client).await;
        timings.push(format!(
            "leave {leaving}: stopped after {:?}, settled {took:?} later",
            started.elapsed().saturating_sub(took)
        ));
        assert!(
            cluster.log(leaving).contains("partitions handed over"),
            "node {leaving} did not hand over:\n{}",
            cluster.log(leaving)
        );
        read_all(
            &cluster,
            &client,
            &writer.acked(),
            &format!("after node {leaving} left"),
        )
        .await;
    }
    let (acked, refused) = writer.finish().await;
    wait_settled(&cluster, &client).await;
    read_all(&cluster, &client, &acked, "at the end").await;
    assert_r_copies(&cluster, &client, acked.len(), refused.len()).await;
    eprintln!(
        "{} writes acknowledged, {} refused ({:?}); {}",
        acked.len(),
        refused.len(),
        refused.first(),
        timings.join("; ")
    );
    assert!(acked.len() > 1000, "{} acknowledged", acked.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn killing_an_owner_during_a_move_loses_no_acknowledged_write() {
    let mut cluster = partitioned(5, 4);
    let client = Client::default();
    let writer = Writer::start(&cluster);
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Node 4 joins, and while it gains its partitions one of their old owners dies.
    blocking(|| cluster.join(4));
    cluster.kill(1);
    let survivors: Vec<usize> = vec![0, 2, 3, 4];
    writer
        .targets
        .lock()
        .expect("lock")
        .retain(|address| address != cluster.address(1));
    // Reads and writes keep working through the others.
    tokio::time::sleep(Duration::from_secs(2)).await;
    // The dead node leaves the membership, as its pod's endpoint would: its partitions get
    // new owners, which pull them from the remaining owner.
    cluster.leave(1);
    let took = wait_settled(&cluster, &client).await;
    let (acked, refused) = writer.finish().await;
    read_all(&cluster, &client, &acked, "after the kill").await;
    assert_eq!(cluster.members(), survivors);
    eprintln!(
        "{} acknowledged, {} refused ({:?}); settled {took:?} after the dead node left",
        acked.len(),
        refused.len(),
        refused.first()
    );
    assert!(acked.len() > 100, "{} acknowledged", acked.len());
}
