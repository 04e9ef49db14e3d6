//! PostgreSQL behind the cache (docs/backend.md), against the same database queried
//! directly from the same client, in one run, alternating:
//! - read-through at a 95% hit ratio (16 readers over HTTP; 5% of reads are keys never read
//!   before) against direct `SELECT value FROM items WHERE key = $1` (16 pooled
//!   connections, the same key sequence);
//! - write-through latency (one writer, then 16) against a direct
//!   `INSERT … ON CONFLICT DO UPDATE`;
//! - write-behind throughput (16 writers; counted until every row is in the table) against
//!   direct batched inserts of 1000 rows per transaction.
//!
//! `cargo bench -p cache-node --bench backend` (`-- --quick` for short runs); needs Debian's
//! `postgresql` package. Results in `bench-results/backend.json`.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cache_node_testkit::{Client, Cluster, Postgres};
use common::{progress, write_results};
use serde_json::json;

const READERS: usize = 16;
const WRITERS: usize = 16;
const ROWS: usize = 200_000;
const HOT: usize = 10_000;
const VALUE_BYTES: usize = 100;

/// Throughput and latency of one run.
#[derive(Debug, Clone, Copy)]
struct Run {
    per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
}

impl Run {
    fn json(self) -> serde_json::Value {
        json!({ "per_sec": self.per_sec, "p50_ms": self.p50_ms, "p99_ms": self.p99_ms })
    }
}

fn main() {
    let quick = std::env::args().any(|arg| arg == "--quick");
    let seconds = Duration::from_secs(if quick { 2 } else { 6 });
    let rounds = if quick { 1 } else { 2 };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");

    progress("starting PostgreSQL and loading the table");
    let postgres = Postgres::start();
    postgres.psql("CREATE TABLE items (key text PRIMARY KEY, value text NOT NULL)");
    postgres.psql(&format!(
        "INSERT INTO items SELECT 'k' || i, repeat('v', {VALUE_BYTES}) FROM generate_series(0, {}) i",
        ROWS - 1
    ));
    postgres.psql("VACUUM ANALYZE items");
    let direct = runtime.block_on(pool(&postgres.url()));

    // 1. Read-through at 95% hits.
    let reader = node(&postgres, "read-through", &[]);
    let client = Client::default();
    let address = reader.address(0).to_string();
    progress(format!("read-through: warming {HOT} keys"));
    runtime.block_on(async {
        for i in 0..HOT {
            client
                .get(&address, &format!("k{i}"))
                .await
                .expect("warm read");
        }
    });
    // Misses come from keys never read, handed out in order so that no two reads miss the
    // same key.
    let next_miss = Arc::new(AtomicU64::new(HOT as u64));
    let mut cache_reads = Vec::new();
    let mut direct_reads = Vec::new();
    for round in 0..rounds {
        progress(format!("read-through round {}: cache", round + 1));
        let run = runtime.block_on(reads_through_cache(&client, &address, &next_miss, seconds));
        cache_reads.push(run);
        progress(format!("read-through round {}: direct SELECT", round + 1));
        let run = runtime.block_on(reads_direct(&direct, &next_miss, seconds));
        direct_reads.push(run);
    }
    drop(reader);
    let (cache_read, direct_read) = (median(&cache_reads), median(&direct_reads));

    // 2. Write-through latency.
    let writer = node(&postgres, "write-through", &[]);
    let address = writer.address(0).to_string();
    let mut latency = serde_json::Map::new();
    let mut write_through = Vec::new();
    for writers in [1, WRITERS] {
        let (mut cached, mut straight) = (Vec::new(), Vec::new());
        for round in 0..rounds {
            progress(format!(
                "write-through, {writers} writers, round {}: cache",
                round + 1
            ));
            cached
                .push(runtime.block_on(writes_through_cache(&client, &address, writers, seconds)));
            progress(format!(
                "write-through, {writers} writers, round {}: direct INSERT",
                round + 1
            ));
            straight.push(runtime.block_on(inserts_direct(&direct, writers, seconds)));
        }
        let (cached, straight) = (median(&cached), median(&straight));
        write_through.push((writers, cached, straight));
        latency.insert(
            format!("{writers}_writers"),
            json!({
                "cache": cached.json(),
                "direct_insert": straight.json(),
                "p50_ratio": cached.p50_ms / straight.p50_ms,
                "p99_ratio": cached.p99_ms / straight.p99_ms,
            }),
        );
    }
    drop(writer);

    // 3. Write-behind throughput, until every row is in the table.
    let queue = tempfile::tempdir().expect("queue directory");
    let queue_flag = format!("--backend-queue-dir={}", queue.path().display());
    let behind = node(&postgres, "write-behind", &[&queue_flag]);
    let address = behind.address(0).to_string();
    let (mut behind_runs, mut batched_runs) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        progress(format!("write-behind round {}: cache", round + 1));
        behind_runs
            .push(runtime.block_on(writes_behind(&client, &address, &postgres, round, seconds)));
        progress(format!(
            "write-behind round {}: direct batched inserts",
            round + 1
        ));
        batched_runs.push(runtime.block_on(batched_direct(&direct, round, seconds)));
    }
    drop(behind);
    let behind_rows = median_of(&behind_runs);
    let batched_rows = median_of(&batched_runs);

    println!();
    println!("read-through at 95% hits, {READERS} readers (medians of {rounds} rounds):");
    println!(
        "  cache {:>9.0} reads/s p50 {:.2} ms p99 {:.2} ms; direct SELECT {:>9.0}/s p50 {:.2} ms p99 {:.2} ms; throughput ratio {:.2}, p99 ratio {:.2}",
        cache_read.per_sec,
        cache_read.p50_ms,
        cache_read.p99_ms,
        direct_read.per_sec,
        direct_read.p50_ms,
        direct_read.p99_ms,
        cache_read.per_sec / direct_read.per_sec,
        cache_read.p99_ms / direct_read.p99_ms
    );
    for (writers, cached, straight) in &write_through {
        println!(
            "write-through, {writers} writers: cache p50 {:.2} ms p99 {:.2} ms ({:.0}/s); direct INSERT p50 {:.2} ms p99 {:.2} ms ({:.0}/s); p50 ratio {:.2}",
            cached.p50_ms,
            cached.p99_ms,
            cached.per_sec,
            straight.p50_ms,
            straight.p99_ms,
            straight.per_sec,
            cached.p50_ms / straight.p50_ms
        );
    }
    println!(
        "write-behind, {WRITERS} writers: {behind_rows:.0} rows/s into the table; direct batched inserts (1000 per transaction) {batched_rows:.0} rows/s; ratio {:.2}",
        behind_rows / batched_rows
    );
    write_results(
        "backend",
        &json!({
            "rows": ROWS,
            "value_bytes": VALUE_BYTES,
            "rounds": rounds,
            "seconds_per_run": seconds.as_secs(),
            "read_through_95_percent_hits": {
                "readers": READERS,
                "cache": cache_read.json(),
                "direct_select": direct_read.json(),
                "throughput_ratio": cache_read.per_sec / direct_read.per_sec,
                "p99_ratio": cache_read.p99_ms / direct_read.p99_ms,
            },
            "write_through_latency": latency,
            "write_behind_throughput": {
                "writers": WRITERS,
                "cache_rows_per_sec": behind_rows,
                "direct_batched_rows_per_sec": batched_rows,
                "ratio": behind_rows / batched_rows,
            },
        }),
    );
}

fn node(postgres: &Postgres, mode: &str, extra: &[&str]) -> Cluster {
    let mut builder = Cluster::builder(1)
        .independent()
        .memory_only()
        .flag("--backend=postgres")
        .flag(&format!("--backend-url={}", postgres.url()))
        .flag("--backend-table=items")
        .flag(&format!("--backend-mode={mode}"))
        .flag("--default-ttl=1h");
    for flag in extra {
        builder = builder.flag(flag);
    }
    builder.start()
}

async fn pool(url: &str) -> deadpool_postgres::Pool {
    let config: tokio_postgres::Config = url.parse().expect("a URL");
    let manager = deadpool_postgres::Manager::new(config, tokio_postgres::NoTls);
    deadpool_postgres::Pool::builder(manager)
        .max_size(READERS.max(WRITERS))
        .build()
        .expect("a pool")
}

/// The key of a read: 95% from the warm set, the rest never read before.
fn read_key(i: u64, next_miss: &AtomicU64) -> String {
    if i.is_multiple_of(20) {
        let miss = next_miss.fetch_add(1, Ordering::Relaxed) % ROWS as u64;
        format!("k{}", miss.max(HOT as u64))
    } else {
        format!("k{}", (i * 7919) % HOT as u64)
    }
}

async fn reads_through_cache(
    client: &Client,
    address: &str,
    next_miss: &Arc<AtomicU64>,
    duration: Duration,
) -> Run {
    let tasks = (0..READERS).map(|_| {
        let client = client.clone();
        let address = address.to_string();
        let next_miss = next_miss.clone();
        tokio::spawn(async move {
            timed(duration, |i| {
                let client = client.clone();
                let address = address.clone();
                let key = read_key(i, &next_miss);
                async move {
                    client
                        .get(&address, &key)
                        .await
                        .expect("read")
                        .expect("a row");
                }
            })
            .await
        })
    });
    collect(tasks, duration).await
}

async fn reads_direct(
    pool: &deadpool_postgres::Pool,
    next_miss: &Arc<AtomicU64>,
    duration: Duration,
) -> Run {
    let tasks = (0..READERS).map(|_| {
        let pool = pool.clone();
        let next_miss = next_miss.clone();
        tokio::spawn(async move {
            let client = pool.get().await.expect("a connection");
            let statement = client
                .prepare_cached("SELECT value FROM items WHERE key = $1")
                .await
                .expect("prepare");
            let client = Arc::new(client);
            timed(duration, |i| {
                let client = client.clone();
                let statement = statement.clone();
                let key = read_key(i, &next_miss);
                async move {
                    client.query_one(&statement, &[&key]).await.expect("a row");
                }
            })
            .await
        })
    });
    collect(tasks, duration).await
}

async fn writes_through_cache(
    client: &Client,
    address: &str,
    writers: usize,
    duration: Duration,
) -> Run {
    let value = "w".repeat(VALUE_BYTES);
    let tasks = (0..writers).map(|writer| {
        let client = client.clone();
        let address = address.to_string();
        let value = value.clone();
        tokio::spawn(async move {
            timed(duration, |i| {
                let client = client.clone();
                let address = address.clone();
                let value = value.clone();
                async move {
                    let key = format!("k{}", (writer as u64 * 10_000 + i) % ROWS as u64);
                    let reply = client
                        .put(&address, &key, &value, &[])
                        .await
                        .expect("write");
                    assert!(reply.status.is_success(), "{}", reply.text());
                }
            })
            .await
        })
    });
    collect(tasks, duration).await
}

async fn inserts_direct(pool: &deadpool_postgres::Pool, writers: usize, duration: Duration) -> Run {
    let value = "w".repeat(VALUE_BYTES);
    let tasks = (0..writers).map(|writer| {
        let pool = pool.clone();
        let value = value.clone();
        tokio::spawn(async move {
            let client = Arc::new(pool.get().await.expect("a connection"));
            let statement = client
                .prepare_cached(
                    "INSERT INTO items (key, value) VALUES ($1, $2) \
                     ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                )
                .await
                .expect("prepare");
            timed(duration, |i| {
                let client = client.clone();
                let statement = statement.clone();
                let value = value.clone();
                async move {
                    let key = format!("k{}", (writer as u64 * 10_000 + i) % ROWS as u64);
                    client
                        .execute(&statement, &[&key, &value])
                        .await
                        .expect("insert");
                }
            })
            .await
        })
    });
    collect(tasks, duration).await
}

/// New rows through write-behind for `duration`; rows per second until the last is in the
/// table.
async fn writes_behind(
    client: &Client,
    address: &str,
    postgres: &Postgres,
    round: usize,
    duration: Duration,
) -> f64 {
    let started = Instant::now();
    let written = Arc::new(AtomicU64::new(0));
    let value = "b".repeat(VALUE_BYTES);
    let tasks: Vec<_> = (0..WRITERS)
        .map(|writer| {
            let client = client.clone();
            let address = address.to_string();
            let value = value.clone();
            let written = written.clone();
            tokio::spawn(async move {
                let mut i = 0;
                while started.elapsed() < duration {
                    let key = format!("behind-{round}-{writer}-{i}");
                    let reply = client
                        .put(&address, &key, &value, &[])
                        .await
                        .expect("write");
                    assert!(reply.status.is_success(), "{}", reply.text());
                    written.fetch_add(1, Ordering::Relaxed);
                    i += 1;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("writer");
    }
    let rows = written.load(Ordering::Relaxed);
    let pattern = format!("behind-{round}-%");
    loop {
        let count: u64 = postgres
            .psql(&format!(
                "SELECT count(*) FROM items WHERE key LIKE '{pattern}'"
            ))
            .parse()
            .expect("a count");
        if count >= rows {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    rows as f64 / started.elapsed().as_secs_f64()
}

/// New rows in batches of 1000 per transaction, one connection, for `duration`.
async fn batched_direct(pool: &deadpool_postgres::Pool, round: usize, duration: Duration) -> f64 {
    let client = pool.get().await.expect("a connection");
    let statement = client
        .prepare_cached(
            "INSERT INTO items (key, value) SELECT * FROM unnest($1::text[], $2::text[]) \
             ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
        )
        .await
        .expect("prepare");
    let value = "d".repeat(VALUE_BYTES);
    let started = Instant::now();
    let mut rows = 0u64;
    let mut batch = 0;
    while started.elapsed() < duration {
        let keys: Vec<String> = (0..1000)
            .map(|i| format!("direct-{round}-{batch}-{i}"))
            .collect();
        let values: Vec<&str> = keys.iter().map(|_| value.as_str()).collect();
        client
            .execute(&statement, &[&keys, &values])
            .await
            .expect("batch");
        rows += 1000;
        batch += 1;
    }
    rows as f64 / started.elapsed().as_secs_f64()
}

/// Runs `op(0)`, `op(1)`, … for `duration`; the latency of each in milliseconds.
async fn timed<F, Fut>(duration: Duration, op: F) -> Vec<f64>
where
    F: Fn(u64) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let started = Instant::now();
    let mut latencies = Vec::new();
    let mut i = 0;
    while started.elapsed() < duration {
        let begun = Instant::now();
        op(i).await;
        latencies.push(begun.elapsed().as_secs_f64() * 1000.0);
        i += 1;
    }
    latencies
}

async fn collect(
    tasks: impl Iterator<Item = tokio::task::JoinHandle<Vec<f64>>>,
    duration: Duration,
) -> Run {
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.expect("worker"));
    }
    latencies.sort_by(f64::total_cmp);
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    Run {
        per_sec: latencies.len() as f64 / duration.as_secs_f64(),
        p50_ms: at(0.5),
        p99_ms: at(0.99),
    }
}

fn median(runs: &[Run]) -> Run {
    let mut sorted = runs.to_vec();
    sorted.sort_by(|a, b| a.per_sec.total_cmp(&b.per_sec));
    sorted[sorted.len() / 2]
}

fn median_of(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[sorted.len() / 2]
}
