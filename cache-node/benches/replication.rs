//! Replicated write benchmark: write throughput and p50/p99 latency on 3 local `cache-node`
//! processes with `ack=one`, `quorum` and `all`, against a single node in the same run, under a
//! light (4 writers) and a saturating (32 writers) load, printed as ratios (goal: p99 with
//! quorum <= 2x the single node); then the convergence time after one node is cut off
//! (SIGSTOP) for 30 s while writes continue.
//!
//! `cargo bench -p cache-node --bench replication` (add `-- --quick` for short runs). The
//! nodes are real processes on loopback; the load generator is this process (tokio, keep-alive
//! connections, a fixed number of concurrent writers).

#[path = "../tests/common/mod.rs"]
mod cluster;
mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cluster::{Client, Cluster};
use common::{progress, write_results};
use http::StatusCode;
use serde_json::json;

/// Concurrent writers: a light load (latency without queueing) and a saturating one
/// (throughput; on a 2-core machine the three nodes and the load generator share the cores).
const LOADS: [usize; 2] = [4, 32];
const VALUE: &str = "0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789";

#[derive(Debug, Clone, Copy)]
struct Run {
    writes_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: u64,
}

fn main() {
    let quick = std::env::args().any(|arg| arg == "--quick");
    let seconds = if quick { 3 } else { 10 };
    let partition = Duration::from_secs(if quick { 5 } else { 30 });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let duration = Duration::from_secs(seconds);

    let mut single = Vec::new();
    {
        let cluster = Cluster::start(1, &[]);
        let address = vec![cluster.address(0).to_string()];
        for writers in LOADS {
            progress(format!("single node, {writers} writers"));
            let run = runtime.block_on(load(address.clone(), "one", duration, writers));
            report(&format!("single node, {writers} writers"), &run);
            single.push(run);
        }
    }

    // Anti-entropy at its production interval while throughput is measured.
    let cluster = Cluster::start(3, &["--anti-entropy-interval=10s"]);
    let addresses: Vec<String> = (0..3).map(|i| cluster.address(i).to_string()).collect();
    let mut replicated = Vec::new();
    for (load_index, writers) in LOADS.into_iter().enumerate() {
        for level in ["one", "quorum", "all"] {
            progress(format!("3 nodes, ack={level}, {writers} writers"));
            let run = runtime.block_on(load(addresses.clone(), level, duration, writers));
            report(&format!("3 nodes ack={level}, {writers} writers"), &run);
            replicated.push((load_index, writers, level, run));
        }
    }

    drop(cluster);

    // The partition on a fresh cluster whose anti-entropy runs every second (as in the tests):
    // convergence is at most one interval plus the transfer after the heal.
    let cluster = Cluster::start(3, &[]);
    progress(format!(
        "partition: node 2 stopped for {partition:?} under writes"
    ));
    let convergence = runtime.block_on(partition_and_heal(&cluster, partition));
    progress(format!("converged {convergence:?} after the heal"));
    drop(cluster);

    println!();
    println!(
        "replicated writes, {}-byte values, writers spread over the nodes, {seconds}s per run",
        VALUE.len()
    );
    let mut rows = Vec::new();
    for (load_index, writers) in LOADS.into_iter().enumerate() {
        let base = single[load_index];
        println!("  {writers} concurrent writers:");
        println!(
            "    {:<16} {:>8.0} writes/s   p50 {:>7.3} ms   p99 {:>7.3} ms",
            "single node", base.writes_per_sec, base.p50_ms, base.p99_ms
        );
        for (_, _, level, run) in replicated.iter().filter(|r| r.0 == load_index) {
            let throughput_ratio = run.writes_per_sec / base.writes_per_sec;
            let p50_ratio = run.p50_ms / base.p50_ms;
            let p99_ratio = run.p99_ms / base.p99_ms;
            println!(
                "    {:<16} {:>8.0} writes/s   p50 {:>7.3} ms   p99 {:>7.3} ms   throughput x{throughput_ratio:.2}   p50 x{p50_ratio:.2}   p99 x{p99_ratio:.2}   errors {}",
                format!("3 nodes ack={level}"),
                run.writes_per_sec,
                run.p50_ms,
                run.p99_ms,
                run.errors
            );
            rows.push(json!({
                "writers": writers,
                "ack": level,
                "writes_per_sec": run.writes_per_sec,
                "p50_ms": run.p50_ms,
                "p99_ms": run.p99_ms,
                "errors": run.errors,
                "throughput_ratio_vs_single": throughput_ratio,
                "p50_ratio_vs_single": p50_ratio,
                "p99_ratio_vs_single": p99_ratio,
            }));
        }
    }
    println!(
        "  convergence after a {}s partition (anti-entropy every 1 s): {:.3} s",
        partition.as_secs(),
        convergence.as_secs_f64()
    );
    let single_rows: Vec<_> = LOADS
        .into_iter()
        .zip(&single)
        .map(|(writers, run)| {
            json!({
                "writers": writers,
                "writes_per_sec": run.writes_per_sec,
                "p50_ms": run.p50_ms,
                "p99_ms": run.p99_ms,
            })
        })
        .collect();
    write_results(
        "replication",
        &json!({
            "value_bytes": VALUE.len(),
            "seconds_per_run": seconds,
            "single": single_rows,
            "replicated": rows,
            "partition_seconds": partition.as_secs(),
            "convergence_seconds": convergence.as_secs_f64(),
        }),
    );
}

fn report(label: &str, run: &Run) {
    progress(format!(
        "  {label}: {:.0} writes/s, p50 {:.3} ms, p99 {:.3} ms, {} errors",
        run.writes_per_sec, run.p50_ms, run.p99_ms, run.errors
    ));
}

/// `writers` writers, spread round-robin over `addresses`, each writing its own keys with
/// `Tidecache-Ack: level` for `duration`.
async fn load(
    addresses: Vec<String>,
    level: &'static str,
    duration: Duration,
    writers: usize,
) -> Run {
    let client = Client::default();
    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for writer in 0..writers {
        let address = addresses[writer % addresses.len()].clone();
        let (client, stop, errors) = (client.clone(), stop.clone(), errors.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let key = format!("bench-{writer}-{}", n % 10_000);
                n += 1;
                let sent = Instant::now();
                match client
                    .put(&address, &key, VALUE, &[("tidecache-ack", level)])
                    .await
                {
                    Ok(reply) if reply.status.is_success() => latencies.push(sent.elapsed()),
                    _ => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            latencies
        }));
    }
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.unwrap_or_default());
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let percentile = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    Run {
        writes_per_sec: latencies.len() as f64 / elapsed,
        p50_ms: percentile(0.50),
        p99_ms: percentile(0.99),
        errors: errors.load(Ordering::Relaxed),
    }
}

/// Stops node 2 for `partition` while writing to nodes 0 and 1, resumes it, and returns how
/// long after the resume all three nodes report identical bucket digests.
async fn partition_and_heal(cluster: &Cluster, partition: Duration) -> Duration {
    let client = Client::default();
    cluster.signal(2, "STOP");
    let cut = Instant::now();
    let mut n = 0;
    while cut.elapsed() < partition {
        let address = cluster.address(n % 2);
        let _ = client
            .put(address, &format!("partition-{n}"), VALUE, &[])
            .await;
        n += 1;
    }
    cluster.signal(2, "CONT");
    let healed = Instant::now();
    loop {
        let mut digests = Vec::new();
        for node in 0..3 {
            let reply = client
                .send(
                    http::Method::GET,
                    cluster.address(node),
                    "/internal/v1/digests",
                    &[],
                    "",
                )
                .await
                .ok()
                .filter(|r| r.status == StatusCode::OK);
            digests.push(reply.map(|r| {
                let mut list: Vec<serde_json::Value> =
                    serde_json::from_slice(&r.body).unwrap_or_default();
                list.sort_by_key(|d| d["bucket"].as_i64());
                serde_json::to_string(&list).unwrap_or_default()
            }));
        }
        if digests.iter().all(|d| d.is_some() && *d == digests[0])
            || healed.elapsed() > Duration::from_secs(120)
        {
            return healed.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
