//! RESP throughput of cache-node against redis-server, driven by `redis-benchmark`.
//!
//! `cargo bench -p cache-node --bench resp` (needs `redis-server` and `redis-benchmark`,
//! apt `redis-server redis-tools`; add `-- --quick` for one round of fewer requests).
//!
//! Both servers run on this machine with persistence off: redis-server 7 (one thread) and
//! this crate's release `cache-node` (memory only, every core), and also cache-node pinned
//! to one core with `taskset`, to show how it grows with cores. Each load runs against
//! each server in turn, alternating for several rounds so that drifts of a shared machine
//! hit both: GET, SET, INCR and MSET (10 keys), 50 clients, `-P 1` and `-P 16`, 100-byte
//! values over 100k random keys (`-r 100000 -d 100`). SET runs first in each round, so GET
//! reads existing keys. Prints each run, then the median requests/s per server and the
//! ratio cache-node / redis-server; writes `bench-results/resp.json`.

mod common;
#[path = "common/tools.rs"]
mod tools;

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

/// The loads, as `redis-benchmark -t` names them, and the name its CSV reports.
const LOADS: [(&str, &str); 4] = [
    ("set", "SET"),
    ("get", "GET"),
    ("incr", "INCR"),
    ("mset", "MSET (10 keys)"),
];

/// A server under test, killed when dropped.
struct Server {
    name: &'static str,
    port: u16,
    child: Child,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .unwrap_or_else(|error| panic!("no free port: {error}"))
}

fn start(name: &'static str, mut command: Command, port: u16) -> Server {
    let child = command
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|error| panic!("{name} does not start: {error}"));
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{name} did not listen in 30 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    Server { name, port, child }
}

fn redis_server() -> Server {
    let port = free_port();
    let mut command = Command::new("redis-server");
    command.args([
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
    ]);
    start("redis-server", command, port)
}

fn cache_node(name: &'static str, cores: Option<&str>) -> Server {
    let port = free_port();
    let binary = env!("CARGO_BIN_EXE_cache-node");
    let mut command = match cores {
        Some(cores) => {
            let mut taskset = Command::new("taskset");
            taskset.args(["-c", cores, binary]);
            taskset
        }
        None => Command::new(binary),
    };
    command
        .arg(format!("--listen=127.0.0.1:{}", free_port()))
        .arg(format!("--resp-listen=127.0.0.1:{port}"))
        .env("RUST_LOG", "warn");
    start(name, command, port)
}

/// One `redis-benchmark` run; requests per second.
fn run(server: &Server, load: (&str, &str), pipeline: u32, requests: u32) -> f64 {
    let output = Command::new("redis-benchmark")
        .args(["-h", "127.0.0.1", "-p", &server.port.to_string()])
        .args([
            "-c",
            "50",
            "-n",
            &requests.to_string(),
            "-P",
            &pipeline.to_string(),
        ])
        .args(["-r", "100000", "-d", "100", "-t", load.0, "--csv"])
        .output()
        .unwrap_or_else(|error| panic!("redis-benchmark does not run: {error}"));
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "redis-benchmark against {} failed: {text}{}",
        server.name,
        String::from_utf8_lossy(&output.stderr)
    );
    let line = text
        .lines()
        .find(|line| line.starts_with(&format!("\"{}\"", load.1)))
        .unwrap_or_else(|| panic!("no {} line in {text}", load.1));
    line.split(',')
        .nth(1)
        .and_then(|field| field.trim_matches('"').parse().ok())
        .unwrap_or_else(|| panic!("no requests/s in {line}"))
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    let quick = std::env::args().any(|arg| arg == "--quick");
    tools::require("redis-server", "resp", "redis-server redis-tools");
    tools::require("redis-benchmark", "resp", "redis-server redis-tools");
    let rounds = if quick { 1 } else { 3 };
    let pinned = Command::new("taskset")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    let mut servers = vec![redis_server(), cache_node("cache-node", None)];
    if pinned {
        servers.push(cache_node("cache-node (1 core)", Some("0")));
    }
    let mut rows = Vec::new();
    for pipeline in [1_u32, 16] {
        let requests = match (quick, pipeline) {
            (true, 1) => 50_000,
            (true, _) => 200_000,
            (false, 1) => 200_000,
            (false, _) => 1_000_000,
        };
        let mut figures = vec![vec![Vec::new(); servers.len()]; LOADS.len()];
        for round in 1..=rounds {
            for (l, load) in LOADS.iter().enumerate() {
                for (s, server) in servers.iter().enumerate() {
                    let rps = run(server, *load, pipeline, requests);
                    common::progress(format!(
                        "round {round}/{rounds} -P {pipeline} {}: {} {rps:.0} req/s",
                        load.1, server.name
                    ));
                    figures[l][s].push(rps);
                }
            }
        }
        for (l, load) in LOADS.iter().enumerate() {
            let medians: Vec<f64> = figures[l].iter_mut().map(|runs| median(runs)).collect();
            let ratio = medians[1] / medians[0];
            let one_core = medians.get(2).copied();
            println!(
                "-P {pipeline:<2} {:<15} redis-server {:>9.0} req/s  cache-node {:>9.0} req/s  ratio {ratio:.2}{}",
                load.1,
                medians[0],
                medians[1],
                one_core.map_or_else(String::new, |rps| format!(
                    "  (cache-node on 1 core {rps:.0} req/s, 2 cores / 1 core {:.2})",
                    medians[1] / rps
                )),
            );
            rows.push(json!({
                "command": load.1,
                "pipeline": pipeline,
                "clients": 50,
                "requests": requests,
                "redis_server_rps": medians[0],
                "cache_node_rps": medians[1],
                "cache_node_one_core_rps": one_core,
                "ratio": ratio,
                "runs": figures[l].iter().zip(&servers).map(|(runs, server)| json!({"server": server.name, "rps": runs})).collect::<Vec<_>>(),
            }));
        }
    }
    if quick {
        common::progress("quick run: results not written");
    } else {
        common::write_results("resp", &json!({ "rounds": rounds, "results": rows }));
    }
}
