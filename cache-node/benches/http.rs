//! HTTP GET-hit benchmark: cache-node serving a stored value against a minimal axum server
//! answering the same fixed bytes, both driven by `wrk` with the same threads, connections
//! and duration, alternating in the same run. Prints throughput and p99 of each and the
//! ratio cache-node / baseline (goal: >= 0.85).
//!
//! `cargo bench -p cache-node --bench http` (needs `wrk` on the PATH; add `-- --quick` for
//! 3-second runs). Both servers run in this process, one at a time, on a multi-threaded
//! tokio runtime; wrk runs as a separate process.

mod common;

use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use bytes::Bytes;
use cache_node::SystemClock;
use cache_node::{AppState, app};
use cache_node::{Cache, CacheSettings, Limits};
use cache_node::{Preconditions, StoreConfig};
use common::{progress, write_results};
use serde_json::json;
use tidecache_contract::Schedule;
use tokio::net::TcpListener;

const VALUE: &[u8] = &[b'v'; 100];
const CONNECTIONS: u32 = 32;
const WRK_THREADS: u32 = 1;
const ROUNDS: usize = 3;

#[derive(Debug, Clone, Copy)]
struct Run {
    requests_per_sec: f64,
    p99_ms: f64,
}

fn main() {
    let quick = std::env::args().any(|arg| arg == "--quick");
    let seconds = if quick { 3 } else { 10 };
    if Command::new("wrk").arg("--version").output().is_err() {
        eprintln!("wrk is not installed (e.g. `apt-get install wrk`); skipping the HTTP benchmark");
        std::process::exit(1);
    }
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let mut cache_runs = Vec::new();
    let mut baseline_runs = Vec::new();
    for round in 1..=ROUNDS {
        for server in [Server::Baseline, Server::CacheNode] {
            let (address, stop) = runtime.block_on(server.start());
            progress(format!(
                "round {round}/{ROUNDS}: {} ({seconds}s)",
                server.name()
            ));
            let run = wrk(address, seconds);
            progress(format!(
                "  {:.0} req/s, p99 {:.3} ms",
                run.requests_per_sec, run.p99_ms
            ));
            let _ = stop.send(());
            match server {
                Server::Baseline => baseline_runs.push(run),
                Server::CacheNode => cache_runs.push(run),
            }
        }
    }
    let cache = median(&cache_runs);
    let baseline = median(&baseline_runs);
    let ratio = cache.requests_per_sec / baseline.requests_per_sec;
    println!();
    println!(
        "HTTP GET hit, {VALUE_LEN}-byte value, wrk -t{WRK_THREADS} -c{CONNECTIONS} -d{seconds}s, median of {ROUNDS}",
        VALUE_LEN = VALUE.len()
    );
    println!(
        "  minimal axum  {:>10.0} req/s   p99 {:.3} ms",
        baseline.requests_per_sec, baseline.p99_ms
    );
    println!(
        "  cache-node    {:>10.0} req/s   p99 {:.3} ms",
        cache.requests_per_sec, cache.p99_ms
    );
    println!(
        "  ratio cache-node / minimal axum = {ratio:.3} (goal >= 0.85); p99 ratio = {:.2}",
        cache.p99_ms / baseline.p99_ms
    );
    write_results(
        "http",
        &json!({
            "load_generator": format!("wrk -t{WRK_THREADS} -c{CONNECTIONS} -d{seconds}s"),
            "value_bytes": VALUE.len(),
            "rounds": ROUNDS,
            "cache_node": { "requests_per_sec": cache.requests_per_sec, "p99_ms": cache.p99_ms },
            "minimal_axum": { "requests_per_sec": baseline.requests_per_sec, "p99_ms": baseline.p99_ms },
            "throughput_ratio": ratio,
            "goal_ratio_at_least": 0.85,
        }),
    );
}

#[derive(Debug, Clone, Copy)]
enum Server {
    Baseline,
    CacheNode,
}

impl Server {
    fn name(self) -> &'static str {
        match self {
            Server::Baseline => "minimal axum",
            Server::CacheNode => "cache-node",
        }
    }

    /// Starts the server on a fresh port; it stops when the returned sender fires.
    async fn start(self) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
        let router = match self {
            Server::Baseline => Router::new().route(
                "/v1/keys/{*key}",
                get(|| async { Bytes::from_static(VALUE) }),
            ),
            Server::CacheNode => {
                let settings = CacheSettings {
                    store: StoreConfig::new(Schedule::every_minute()),
                    limits: Limits::default(),
                    persistence: None,
                    node_tag: 0,
                    backend: None,
                };
                let cache = Arc::new(Cache::start(settings, Arc::new(SystemClock), None));
                cache
                    .store()
                    .put(
                        Bytes::from_static(b"bench"),
                        Bytes::from_static(VALUE),
                        None,
                        &Preconditions::none(),
                    )
                    .expect("stored");
                app(Arc::new(AppState::new(cache)))
            }
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let serve = axum::serve(listener, router).with_graceful_shutdown(async move {
                let _ = stopped.await;
            });
            if let Err(error) = serve.await {
                eprintln!("server failed: {error}");
            }
        });
        (address, stop)
    }
}

fn wrk(address: SocketAddr, seconds: u32) -> Run {
    let output = Command::new("wrk")
        .args([
            format!("-t{WRK_THREADS}"),
            format!("-c{CONNECTIONS}"),
            format!("-d{seconds}s"),
            "--latency".to_string(),
            format!("http://{address}/v1/keys/bench"),
        ])
        .output()
        .expect("wrk runs");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && !text.contains("Non-2xx"),
        "wrk failed or saw errors:\n{text}"
    );
    let field = |prefix: &str| {
        text.lines()
            .map(str::trim)
            .find_map(|line| line.strip_prefix(prefix))
            .map(str::trim)
            .unwrap_or_else(|| panic!("no {prefix:?} in wrk output:\n{text}"))
    };
    Run {
        requests_per_sec: field("Requests/sec:").parse().expect("a number"),
        p99_ms: duration_ms(field("99%")),
    }
}

/// wrk's durations: `812.00us`, `1.23ms`, `2.01s`.
fn duration_ms(text: &str) -> f64 {
    let (number, scale) = if let Some(us) = text.strip_suffix("us") {
        (us, 0.001)
    } else if let Some(ms) = text.strip_suffix("ms") {
        (ms, 1.0)
    } else if let Some(s) = text.strip_suffix('s') {
        (s, 1_000.0)
    } else {
        (text, 1.0)
    };
    number.parse::<f64>().expect("a number") * scale
}

fn median(runs: &[Run]) -> Run {
    let mut sorted = runs.to_vec();
    sorted.sort_by(|a, b| a.requests_per_sec.total_cmp(&b.requests_per_sec));
    sorted[sorted.len() / 2]
}
