//! Partitioned mode against full mode: what R owners per key instead of a copy on every node
//! buys in throughput and memory, and (opt-in) how long adding a node takes to rebalance.
//!
//! `cargo bench -p cache-node --bench partitioned` (needs `redis-benchmark`, apt
//! `redis-tools`). Every node is a real `cache-node` process on loopback (the testkit's
//! `Cluster`), persisting to one shared directory as pods do to the volume, its nodes spread
//! over 3 zones (`@zone-i` in the membership), anti-entropy at its production interval.
//!
//! 1. **Throughput**: Full and Partitioned (R = 2) clusters of 3 and 6 nodes, each loaded by
//!    one `redis-benchmark` per node at once (the clients and requests split between them, the
//!    rates summed), SET then GET with 100-byte values over 100k random keys, SET at the
//!    default acknowledgement level. The four clusters run side by side and take turns, for
//!    several rounds, so that drifts of a shared machine hit all of them; medians. Printed with
//!    the ratios 6 nodes / 3 nodes per mode (what adding nodes buys) and Partitioned / Full at
//!    6 nodes (what forwarding to owners costs or saves). On a 2-core machine 6 nodes and their
//!    load generators share two cores, so the ratios say what this machine measures, not how
//!    a cluster of machines scales; the JSON records the core count.
//! 2. **Memory**: the same keys loaded into 6 nodes Full and 6 nodes Partitioned; each node's
//!    `tidecache_memory_used_bytes` (the bytes the store charges its entries) and the growth of
//!    its resident memory (`VmRSS`) per key, and the ratio Partitioned / Full, expected about
//!    R / N = 1/3.
//! 3. **Rebalance**, only with `TIDECACHE_BENCH_REBALANCE=1`: 3 partitioned nodes whose
//!    membership is a peers file, loaded with 1M keys; a 4th node is added to the file, and the
//!    time is taken until the members' owned partitions add up to R per partition again and
//!    no node reports a partition `gaining` or `kept` (`tidecache_partitions`). Compared with
//!    copying the bytes the new node ends up holding over one loopback HTTP stream.
//!
//! Sizes: `TIDECACHE_BENCH_ROUNDS` (3), `TIDECACHE_BENCH_REQUESTS` (requests per run, all
//! nodes together; 200000), `TIDECACHE_BENCH_CLIENTS` (50), `TIDECACHE_BENCH_MEMORY_KEYS`
//! (200000), `TIDECACHE_BENCH_REBALANCE_KEYS` (1000000). Writes
//! `bench-results/partitioned.json`.

mod common;
#[path = "common/rss.rs"]
mod rss;
#[path = "common/tools.rs"]
mod tools;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use cache_node_testkit::Cluster;
use common::{progress, write_results};
use serde_json::{Value, json};

/// Owners per key in the partitioned clusters.
const REPLICATION_FACTOR: usize = 2;
/// Zones the nodes are spread over (node `i` in `zone-{i % 3}`).
const ZONES: usize = 3;
/// Partitions of the key space (the contract's placement); each has R owners.
const PARTITIONS: usize = 1024;
/// Bytes of every value, in the load and the memory run.
const VALUE_BYTES: usize = 100;
/// The random key space of the throughput runs (`redis-benchmark -r`).
const KEY_SPACE: u32 = 100_000;
/// Commands written per pipelined batch of a bulk load before reading their replies.
const BATCH: usize = 1_000;
/// Loader connections per node.
const CONNECTIONS_PER_NODE: usize = 2;
/// The most a load may take to reach every copy (replication is asynchronous at the default
/// acknowledgement level).
const SETTLE_TIMEOUT: Duration = Duration::from_secs(180);
/// The most the rebalance may take before the bench gives up and reports it unfinished.
const REBALANCE_TIMEOUT: Duration = Duration::from_secs(600);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Full,
    Partitioned,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Full => "Full",
            Mode::Partitioned => "Partitioned",
        }
    }

    /// Copies of each key the cluster holds in memory.
    fn copies(self, nodes: usize) -> usize {
        match self {
            Mode::Full => nodes,
            Mode::Partitioned => REPLICATION_FACTOR.min(nodes),
        }
    }
}

/// The sizes of one run, from the environment.
struct Sizes {
    rounds: usize,
    requests: u64,
    clients: usize,
    memory_keys: usize,
    rebalance_keys: usize,
}

impl Sizes {
    fn from_env() -> Sizes {
        fn get<T: std::str::FromStr>(name: &str, default: T) -> T {
            match std::env::var(name) {
                Ok(text) => text
                    .parse()
                    .unwrap_or_else(|_| panic!("{name}={text} is not a number")),
                Err(_) => default,
            }
        }
        Sizes {
            rounds: get("TIDECACHE_BENCH_ROUNDS", 3),
            requests: get("TIDECACHE_BENCH_REQUESTS", 200_000),
            clients: get("TIDECACHE_BENCH_CLIENTS", 50),
            memory_keys: get("TIDECACHE_BENCH_MEMORY_KEYS", 200_000),
            rebalance_keys: get("TIDECACHE_BENCH_REBALANCE_KEYS", 1_000_000),
        }
    }
}

fn main() {
    tools::require("redis-benchmark", "partitioned", "redis-tools");
    let sizes = Sizes::from_env();
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    progress(format!(
        "{cores} cores; {} rounds of {} requests, {} clients",
        sizes.rounds, sizes.requests, sizes.clients
    ));

    let throughput = throughput(&sizes);
    let memory = [Mode::Full, Mode::Partitioned].map(|mode| memory(mode, sizes.memory_keys));
    println!();
    let mut results = json!({
        "cores": cores,
        "replication_factor": REPLICATION_FACTOR,
        "zones": ZONES,
        "value_bytes": VALUE_BYTES,
        "key_space": KEY_SPACE,
        "rounds": sizes.rounds,
        "requests_per_run": sizes.requests,
        "clients": sizes.clients,
        "throughput": print_throughput(&throughput, &sizes),
        "memory": print_memory(&memory, sizes.memory_keys),
        "rebalance": null,
    });
    // Written before the rebalance runs, so that its failure keeps the other figures.
    write_results("partitioned", &results);
    if std::env::var("TIDECACHE_BENCH_REBALANCE").as_deref() == Ok("1") {
        let rebalance = rebalance(sizes.rebalance_keys);
        results["rebalance"] = print_rebalance(&rebalance);
        write_results("partitioned", &results);
    } else {
        println!("rebalance: not run (TIDECACHE_BENCH_REBALANCE=1 runs it)");
    }
}

// ---------------------------------------------------------------------------------------
// Throughput

/// One cluster of the throughput runs and what it measured, per round: a run fails when a
/// `redis-benchmark` gets an error reply (it stops at the first), which is recorded and left
/// out of the medians rather than ending the bench.
struct Config {
    mode: Mode,
    nodes: usize,
    set: Vec<Result<Blast, String>>,
    get: Vec<Result<Blast, String>>,
}

impl Config {
    fn label(&self) -> String {
        format!("{} {} nodes", self.mode.name(), self.nodes)
    }

    fn runs(&self, test: &str) -> &[Result<Blast, String>] {
        if test == "set" { &self.set } else { &self.get }
    }

    /// The median ops/s of the runs of `test` that succeeded; `None` if none did.
    fn median(&self, test: &str) -> Option<f64> {
        let mut rates: Vec<f64> = self
            .runs(test)
            .iter()
            .flatten()
            .map(|blast| blast.ops_per_sec)
            .collect();
        rates.sort_by(f64::total_cmp);
        rates.get(rates.len() / 2).copied()
    }
}

/// One load against every node of a cluster at once.
#[derive(Debug, Clone, Copy)]
struct Blast {
    /// The sum of the rates each `redis-benchmark` reports.
    ops_per_sec: f64,
    /// All requests over the time from the first start to the last finish (below the sum
    /// when the loads did not overlap fully).
    wall_ops_per_sec: f64,
}

/// Runs every configuration in turn, `rounds` times, each cluster running throughout.
fn throughput(sizes: &Sizes) -> Vec<Config> {
    let mut configs: Vec<Config> = [
        (Mode::Full, 3),
        (Mode::Full, 6),
        (Mode::Partitioned, 3),
        (Mode::Partitioned, 6),
    ]
    .into_iter()
    .map(|(mode, nodes)| Config {
        mode,
        nodes,
        set: Vec::new(),
        get: Vec::new(),
    })
    .collect();
    let clusters: Vec<Cluster> = configs
        .iter()
        .map(|config| {
            progress(format!("starting {}", config.label()));
            let cluster = start(config.mode, config.nodes, &[]);
            check_every_node_serves_every_key(&cluster, config.nodes);
            cluster
        })
        .collect();
    for round in 1..=sizes.rounds {
        for (config, cluster) in configs.iter_mut().zip(&clusters) {
            let ports: Vec<u16> = (0..config.nodes).map(|i| cluster.resp_port(i)).collect();
            let label = config.label();
            // SET first, so that GET reads keys that exist.
            for (test, runs) in [("set", &mut config.set), ("get", &mut config.get)] {
                let blast = blast(&ports, test, sizes.requests, sizes.clients);
                let outcome = match &blast {
                    Ok(blast) => format!(
                        "{:.0} ops/s (wall {:.0})",
                        blast.ops_per_sec, blast.wall_ops_per_sec
                    ),
                    Err(error) => format!("failed: {error}"),
                };
                progress(format!(
                    "round {round}/{} {label} {}: {outcome}",
                    sizes.rounds,
                    test.to_uppercase(),
                ));
                runs.push(blast);
            }
        }
    }
    configs
}

/// `requests` requests of `test` (`set` or `get`) from `clients` clients, split evenly over
/// one `redis-benchmark` per port, all started at once; the first error reply any of them
/// got, if one did.
fn blast(ports: &[u16], test: &str, requests: u64, clients: usize) -> Result<Blast, String> {
    let share = requests.div_ceil(ports.len() as u64);
    let started = Instant::now();
    let children: Vec<_> = ports
        .iter()
        .enumerate()
        .map(|(i, port)| {
            // The first `clients % n` processes take one client more.
            let own = clients / ports.len() + usize::from(i < clients % ports.len());
            Command::new("redis-benchmark")
                .args(["-h", "127.0.0.1", "-p", &port.to_string()])
                .args(["-c", &own.max(1).to_string(), "-n", &share.to_string()])
                .args(["-r", &KEY_SPACE.to_string(), "-d", &VALUE_BYTES.to_string()])
                .args(["-t", test, "--csv"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap_or_else(|error| panic!("redis-benchmark does not start: {error}"))
        })
        .collect();
    let outputs: Vec<Output> = children
        .into_iter()
        .map(|child| child.wait_with_output().expect("redis-benchmark finishes"))
        .collect();
    let wall = started.elapsed().as_secs_f64();
    let name = test.to_uppercase();
    let mut ops_per_sec = 0.0;
    for (output, port) in outputs.iter().zip(ports) {
        let text = String::from_utf8_lossy(&output.stdout);
        let errors = String::from_utf8_lossy(&output.stderr);
        if !output.status.success() {
            let error = text
                .lines()
                .chain(errors.lines())
                .find(|line| line.starts_with("Error"))
                .unwrap_or("no error line");
            return Err(format!("port {port}: {error}"));
        }
        let line = text
            .lines()
            .find(|line| line.starts_with(&format!("\"{name}\"")))
            .unwrap_or_else(|| panic!("no {name} line in {text}{errors}"));
        ops_per_sec += line
            .split(',')
            .nth(1)
            .and_then(|field| field.trim_matches('"').parse::<f64>().ok())
            .unwrap_or_else(|| panic!("no requests/s in {line}"));
    }
    Ok(Blast {
        ops_per_sec,
        wall_ops_per_sec: (share * ports.len() as u64) as f64 / wall,
    })
}

/// `Some(rate)` as a number, `None` as "n/a" (every run failed).
fn shown(value: Option<f64>, decimals: usize) -> String {
    value.map_or_else(|| "n/a".to_string(), |v| format!("{v:.decimals$}"))
}

fn print_throughput(configs: &[Config], sizes: &Sizes) -> Value {
    println!(
        "throughput: redis-benchmark -c {} (split over the nodes) -r {KEY_SPACE} -d {VALUE_BYTES}, \
         {} requests per run, medians of {} rounds, ops/s summed over the nodes",
        sizes.clients, sizes.requests, sizes.rounds
    );
    let find = |mode, nodes| {
        configs
            .iter()
            .find(|config| config.mode == mode && config.nodes == nodes)
            .expect("every configuration ran")
    };
    let mut rows = Vec::new();
    for config in configs {
        let (set, get) = (config.median("set"), config.median("get"));
        let failed = config
            .set
            .iter()
            .chain(&config.get)
            .filter(|run| run.is_err())
            .count();
        println!(
            "  {:<20} SET {:>9} ops/s   GET {:>9} ops/s{}",
            config.label(),
            shown(set, 0),
            shown(get, 0),
            if failed > 0 {
                format!("   ({failed} runs failed on an error reply)")
            } else {
                String::new()
            }
        );
        let runs = |test| {
            config
                .runs(test)
                .iter()
                .map(|run| match run {
                    Ok(b) => json!({"ops_per_sec": b.ops_per_sec, "wall_ops_per_sec": b.wall_ops_per_sec}),
                    Err(error) => json!({"error": error}),
                })
                .collect::<Vec<_>>()
        };
        rows.push(json!({
            "mode": config.mode.name(),
            "nodes": config.nodes,
            "set_ops_per_sec": set,
            "get_ops_per_sec": get,
            "set_runs": runs("set"),
            "get_runs": runs("get"),
        }));
    }
    let ratio = |a: Option<f64>, b: Option<f64>| Some(a? / b?);
    let mut ratios = serde_json::Map::new();
    for test in ["set", "get"] {
        let upper = test.to_uppercase();
        for mode in [Mode::Full, Mode::Partitioned] {
            let value = ratio(find(mode, 6).median(test), find(mode, 3).median(test));
            println!(
                "  {upper} {}: 6 nodes / 3 nodes {}",
                mode.name(),
                shown(value, 2)
            );
            ratios.insert(
                format!("{test}_{}_6_over_3", mode.name().to_lowercase()),
                json!(value),
            );
        }
        let value = ratio(
            find(Mode::Partitioned, 6).median(test),
            find(Mode::Full, 6).median(test),
        );
        println!(
            "  {upper} at 6 nodes: Partitioned / Full {}",
            shown(value, 2)
        );
        ratios.insert(format!("{test}_partitioned_over_full_6"), json!(value));
    }
    json!({ "configs": rows, "ratios": ratios })
}

// ---------------------------------------------------------------------------------------
// Memory

/// One node's memory after the load.
struct NodeMemory {
    entries: f64,
    used_bytes: f64,
    rss_before: u64,
    rss_after: u64,
}

/// Loads `keys` keys into 6 nodes of `mode` and reads every node's memory once every copy
/// has arrived.
fn memory(mode: Mode, keys: usize) -> (Mode, Vec<NodeMemory>) {
    const NODES: usize = 6;
    progress(format!(
        "memory: {} {NODES} nodes, {keys} keys",
        mode.name()
    ));
    // Far above the load and refusing rather than evicting, so that neither a cgroup-derived
    // capacity nor eviction shrinks a figure: a full store fails the load instead.
    let cluster = start(
        mode,
        NODES,
        &["--max-memory=4GiB", "--eviction-policy=noeviction"],
    );
    std::thread::sleep(Duration::from_secs(1));
    let rss_before: Vec<u64> = (0..NODES)
        .map(|i| rss::rss(cluster.pid(i), "cache-node"))
        .collect();
    load(&cluster, NODES, keys, &format!("memory {}", mode.name()));
    wait_for_copies(&cluster, NODES, (keys * mode.copies(NODES)) as f64);
    // Lets the load's connections and buffers go before RSS is read.
    std::thread::sleep(Duration::from_secs(1));
    let nodes = (0..NODES)
        .map(|i| {
            let metrics = scrape(cluster.address(i));
            NodeMemory {
                entries: required_sample(&metrics, "tidecache_entries", cluster.address(i)),
                used_bytes: required_sample(
                    &metrics,
                    "tidecache_memory_used_bytes",
                    cluster.address(i),
                ),
                rss_before: rss_before[i],
                rss_after: rss::rss(cluster.pid(i), "cache-node"),
            }
        })
        .collect();
    (mode, nodes)
}

/// Polls until the nodes' `tidecache_entries` add up to `expected` (every copy arrived).
fn wait_for_copies(cluster: &Cluster, nodes: usize, expected: f64) {
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    loop {
        let total: f64 = (0..nodes)
            .map(|i| {
                required_sample(
                    &scrape(cluster.address(i)),
                    "tidecache_entries",
                    cluster.address(i),
                )
            })
            .sum();
        if total >= expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "only {total} of {expected} copies after {SETTLE_TIMEOUT:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn print_memory(memory: &[(Mode, Vec<NodeMemory>)], keys: usize) -> Value {
    println!("memory: {keys} keys of 16 + {VALUE_BYTES} bytes, 6 nodes, per key and node");
    let mut rows = Vec::new();
    let mut per_key = Vec::new();
    for (mode, nodes) in memory {
        let mean =
            |f: &dyn Fn(&NodeMemory) -> f64| nodes.iter().map(f).sum::<f64>() / nodes.len() as f64;
        let used = mean(&|n| n.used_bytes) / keys as f64;
        let rss_growth = mean(&|n| n.rss_after as f64 - n.rss_before as f64) / keys as f64;
        let entries = mean(&|n| n.entries);
        println!(
            "  {:<12} used {used:>7.1} B/key/node   RSS growth {rss_growth:>7.1} B/key/node   \
             entries per node {entries:.0}",
            mode.name()
        );
        per_key.push((used, rss_growth));
        rows.push(json!({
            "mode": mode.name(),
            "used_bytes_per_key_per_node": used,
            "rss_growth_per_key_per_node": rss_growth,
            "nodes": nodes.iter().map(|n| json!({
                "entries": n.entries,
                "used_bytes": n.used_bytes,
                "rss_before": n.rss_before,
                "rss_after": n.rss_after,
            })).collect::<Vec<_>>(),
        }));
    }
    let expected = REPLICATION_FACTOR as f64 / 6.0;
    let used_ratio = per_key[1].0 / per_key[0].0;
    let rss_ratio = per_key[1].1 / per_key[0].1;
    println!(
        "  Partitioned / Full: used {used_ratio:.3}, RSS growth {rss_ratio:.3} (R/N = {expected:.3})"
    );
    json!({
        "keys": keys,
        "nodes": 6,
        "modes": rows,
        "used_ratio_partitioned_over_full": used_ratio,
        "rss_ratio_partitioned_over_full": rss_ratio,
        "expected_ratio": expected,
    })
}

// ---------------------------------------------------------------------------------------
// Rebalance

/// What adding a 4th node to 3 loaded partitioned nodes took.
struct Rebalance {
    keys: usize,
    /// From the peers file naming the new node to every node settled; `None` if it did not
    /// settle within [`REBALANCE_TIMEOUT`].
    seconds: Option<f64>,
    /// The bytes the new node's store charges once settled (what moved to it).
    new_node_used_bytes: f64,
    new_node_entries: f64,
    /// Partitions the new node reports having gained (`tidecache_partition_moves_total`).
    new_node_moves: f64,
    /// The same bytes copied over one loopback HTTP stream.
    limit_seconds: f64,
}

fn rebalance(keys: usize) -> Rebalance {
    progress(format!("rebalance: 3 partitioned nodes, {keys} keys"));
    let mut cluster = partitioned_builder(4)
        .dynamic()
        .members(3)
        .flag("--max-memory=4GiB")
        .flag("--eviction-policy=noeviction")
        .start();
    load(&cluster, 3, keys, "rebalance");
    wait_for_copies(&cluster, 3, (keys * REPLICATION_FACTOR) as f64);
    progress("rebalance: adding node 3");
    let started = Instant::now();
    cluster.join(3);
    let seconds = loop {
        if settled(&cluster, 4) {
            break Some(started.elapsed().as_secs_f64());
        }
        if started.elapsed() > REBALANCE_TIMEOUT {
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    match seconds {
        Some(seconds) => progress(format!("rebalance: settled after {seconds:.2} s")),
        None => progress(format!(
            "rebalance: not settled after {REBALANCE_TIMEOUT:?}:\n{}",
            scrape(cluster.address(3))
        )),
    }
    let metrics = scrape(cluster.address(3));
    let new_node_used_bytes =
        required_sample(&metrics, "tidecache_memory_used_bytes", cluster.address(3));
    let limit_seconds = loopback_copy(new_node_used_bytes as u64).as_secs_f64();
    Rebalance {
        keys,
        seconds,
        new_node_used_bytes,
        new_node_entries: required_sample(&metrics, "tidecache_entries", cluster.address(3)),
        new_node_moves: sample(&metrics, "tidecache_partition_moves_total").unwrap_or(0.0),
        limit_seconds,
    }
}

/// Whether every one of the first `nodes` nodes has taken in the new membership and finished
/// moving: their owned partitions add up to R per partition (before a node re-reads the
/// peers file it still counts the partitions it is losing), the newest node owns some, and
/// none is gaining or keeping a partition.
fn settled(cluster: &Cluster, nodes: usize) -> bool {
    let mut owned_total = 0.0;
    let mut newest_owned = 0.0;
    for i in 0..nodes {
        let metrics = scrape(cluster.address(i));
        let state = |state: &str| {
            sample(
                &metrics,
                &format!("tidecache_partitions{{state=\"{state}\"}}"),
            )
        };
        let (Some(owned), Some(gaining), Some(kept)) =
            (state("owned"), state("gaining"), state("kept"))
        else {
            return false;
        };
        if gaining > 0.0 || kept > 0.0 {
            return false;
        }
        owned_total += owned;
        newest_owned = owned;
    }
    newest_owned > 0.0 && owned_total == (PARTITIONS * REPLICATION_FACTOR) as f64
}

/// Sends `bytes` as the body of one HTTP/1.1 request over loopback to a server that reads and
/// discards it; the time from connecting to its response: the physical limit of a move.
fn loopback_copy(bytes: u64) -> Duration {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = listener.local_addr().expect("address");
    let server = std::thread::spawn(move || {
        let (stream, _) = listener.accept().expect("accept");
        let mut reader = BufReader::new(stream.try_clone().expect("socket clone"));
        let mut length = 0;
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).expect("request header");
            if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = value.trim().parse().expect("content length");
            }
            if line == "\r\n" {
                break;
            }
        }
        std::io::copy(&mut reader.take(length), &mut std::io::sink()).expect("body");
        (&stream)
            .write_all(b"HTTP/1.1 204 No Content\r\n\r\n")
            .expect("response");
    });
    let started = Instant::now();
    let mut stream = TcpStream::connect(address).expect("connect");
    write!(
        stream,
        "POST /copy HTTP/1.1\r\nHost: {address}\r\nContent-Length: {bytes}\r\n\r\n"
    )
    .expect("request");
    let chunk = vec![b'a'; 64 * 1024];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        stream.write_all(&chunk[..n]).expect("body");
        left -= n as u64;
    }
    let mut response = Vec::new();
    stream.read_to_end(&mut response).expect("response");
    let elapsed = started.elapsed();
    server.join().expect("copy server");
    elapsed
}

fn print_rebalance(rebalance: &Rebalance) -> Value {
    let rate = |seconds: f64| rebalance.new_node_used_bytes / seconds / 1e6;
    match rebalance.seconds {
        Some(seconds) => println!(
            "rebalance: 3 -> 4 partitioned nodes with {} keys: {seconds:.2} s; the new node holds \
             {:.0} entries, {:.1} MB ({:.1} MB/s; {:.0} partitions gained); one loopback HTTP \
             stream copies that in {:.3} s ({:.0} MB/s): {:.0}x the limit",
            rebalance.keys,
            rebalance.new_node_entries,
            rebalance.new_node_used_bytes / 1e6,
            rate(seconds),
            rebalance.new_node_moves,
            rebalance.limit_seconds,
            rate(rebalance.limit_seconds),
            seconds / rebalance.limit_seconds,
        ),
        None => println!(
            "rebalance: 3 -> 4 partitioned nodes with {} keys did not settle in {REBALANCE_TIMEOUT:?}",
            rebalance.keys
        ),
    }
    json!({
        "keys": rebalance.keys,
        "seconds": rebalance.seconds,
        "new_node_used_bytes": rebalance.new_node_used_bytes,
        "new_node_entries": rebalance.new_node_entries,
        "new_node_partition_moves": rebalance.new_node_moves,
        "loopback_copy_seconds": rebalance.limit_seconds,
    })
}

// ---------------------------------------------------------------------------------------
// Nodes, loads, metrics

fn partitioned_builder(nodes: usize) -> cache_node_testkit::Builder {
    Cluster::builder(nodes)
        .zones(ZONES)
        .resp()
        .flag("--anti-entropy-interval=10s")
        .flag("--mode=partitioned")
        .flag(&format!("--replication-factor={REPLICATION_FACTOR}"))
}

/// `nodes` nodes of `mode`, RESP on, anti-entropy at its production interval, over 3 zones.
fn start(mode: Mode, nodes: usize, flags: &[&str]) -> Cluster {
    let builder = match mode {
        Mode::Full => Cluster::builder(nodes)
            .zones(ZONES)
            .resp()
            .flag("--anti-entropy-interval=10s"),
        Mode::Partitioned => partitioned_builder(nodes),
    };
    flags
        .iter()
        .fold(builder, |builder, flag| builder.flag(flag))
        .start()
}

/// A key set through each node reads back through every node (within a few seconds: at the
/// default acknowledgement level a full-mode copy arrives after the reply): the load measures
/// a working cluster, forwarding included, not error replies.
fn check_every_node_serves_every_key(cluster: &Cluster, nodes: usize) {
    for writer in 0..nodes {
        let key = format!("check:{writer}");
        let reply = resp_command(cluster.resp_port(writer), &[b"SET", key.as_bytes(), b"v"]);
        assert_eq!(
            String::from_utf8_lossy(&reply),
            "+OK\r\n",
            "SET {key} through node {writer}"
        );
        for reader in 0..nodes {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let reply = resp_command(cluster.resp_port(reader), &[b"GET", key.as_bytes()]);
                if reply == b"$1\r\nv\r\n" {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "GET {key} through node {reader} replied {:?}",
                    String::from_utf8_lossy(&reply)
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// One command on a new connection; its reply (a simple reply or one short bulk string).
fn resp_command(port: u16, arguments: &[&[u8]]) -> Vec<u8> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("RESP connect");
    let mut request = Vec::new();
    push_command(&mut request, arguments);
    stream.write_all(&request).expect("RESP write");
    let mut reader = BufReader::new(stream);
    let mut reply = Vec::new();
    reader.read_until(b'\n', &mut reply).expect("RESP read");
    if reply.starts_with(b"$") && reply != b"$-1\r\n" {
        reader.read_until(b'\n', &mut reply).expect("RESP read");
    }
    reply
}

/// Appends one RESP command (an array of bulk strings).
fn push_command(buffer: &mut Vec<u8>, arguments: &[&[u8]]) {
    buffer.extend_from_slice(format!("*{}\r\n", arguments.len()).as_bytes());
    for argument in arguments {
        buffer.extend_from_slice(format!("${}\r\n", argument.len()).as_bytes());
        buffer.extend_from_slice(argument);
        buffer.extend_from_slice(b"\r\n");
    }
}

/// Sets keys `key:000000000000` .. (16 bytes) to 100-byte values through each of the first
/// `nodes` nodes, pipelined in batches over `CONNECTIONS_PER_NODE` connections per node,
/// printing progress at each tenth.
///
/// # Panics
///
/// On an error reply or a lost connection, with the end of every node's log: a node that
/// crashes or stalls under the load must say why.
fn load(cluster: &Cluster, nodes: usize, keys: usize, what: &str) {
    let connections = nodes * CONNECTIONS_PER_NODE;
    let batches = keys.div_ceil(BATCH);
    let done = AtomicUsize::new(0);
    let started = Instant::now();
    let failures: Vec<String> = std::thread::scope(|scope| {
        let loaders: Vec<_> = (0..connections)
            .map(|connection| {
                let (done, port) = (&done, cluster.resp_port(connection % nodes));
                scope.spawn(move || -> Result<(), String> {
                    let mut stream = TcpStream::connect(("127.0.0.1", port))
                        .map_err(|error| format!("connect to port {port}: {error}"))?;
                    let mut replies = BufReader::new(
                        stream
                            .try_clone()
                            .map_err(|error| format!("socket clone: {error}"))?,
                    );
                    let mut buffer = Vec::new();
                    let mut line = Vec::new();
                    for batch in (connection..batches).step_by(connections) {
                        let range = batch * BATCH..keys.min((batch + 1) * BATCH);
                        buffer.clear();
                        for i in range.clone() {
                            let value = [b'a' + (i % 26) as u8; VALUE_BYTES];
                            push_command(
                                &mut buffer,
                                &[b"SET", format!("key:{i:012}").as_bytes(), &value],
                            );
                        }
                        stream
                            .write_all(&buffer)
                            .map_err(|error| format!("write to port {port}: {error}"))?;
                        for i in range.clone() {
                            line.clear();
                            replies
                                .read_until(b'\n', &mut line)
                                .map_err(|error| format!("read from port {port}: {error}"))?;
                            if line != b"+OK\r\n" {
                                return Err(format!(
                                    "SET key:{i:012} on port {port} replied {:?}",
                                    String::from_utf8_lossy(&line)
                                ));
                            }
                        }
                        let before = done.fetch_add(range.len(), Ordering::Relaxed);
                        let after = before + range.len();
                        if before * 10 / keys != after * 10 / keys {
                            progress(format!(
                                "{what}: {after} of {keys} keys ({:.0}/s)",
                                after as f64 / started.elapsed().as_secs_f64()
                            ));
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        loaders
            .into_iter()
            .filter_map(|loader| loader.join().expect("loader thread").err())
            .collect()
    });
    if let Some(first) = failures.first() {
        let logs: String = (0..nodes)
            .map(|i| {
                let log = cluster.log(i);
                let tail: Vec<&str> = log.lines().rev().take(20).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                format!(
                    "--- node {i} ({}), last lines of its log:\n{}\n",
                    cluster.address(i),
                    tail.join("\n")
                )
            })
            .collect();
        panic!(
            "{what}: the load failed on {} connections, first: {first}\n{logs}",
            failures.len()
        );
    }
}

/// A node's `/metrics` text.
fn scrape(address: &str) -> String {
    let mut stream = TcpStream::connect(address)
        .unwrap_or_else(|error| panic!("{address}: HTTP connect failed: {error}"));
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )
    .unwrap_or_else(|error| panic!("{address}: HTTP write failed: {error}"));
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .unwrap_or_else(|error| panic!("{address}: HTTP read failed: {error}"));
    response
}

/// The value of sample `name` (with its labels) in a scrape.
fn sample(metrics: &str, name: &str) -> Option<f64> {
    metrics.lines().find_map(|line| {
        line.strip_prefix(name)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// [`sample`] of a metric the bench cannot do without: a renamed one must fail it, not read 0.
fn required_sample(metrics: &str, name: &str, address: &str) -> f64 {
    sample(metrics, name)
        .unwrap_or_else(|| panic!("no {name} in /metrics of {address}:\n{metrics}"))
}
