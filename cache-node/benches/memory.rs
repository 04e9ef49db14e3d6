//! Memory benchmark: resident bytes per entry of cache-node against redis-server, each a
//! separate process loaded with the same entries over RESP.
//!
//! `cargo bench -p cache-node --bench memory` (needs `redis-server`, apt `redis-server`).
//! `TIDECACHE_BENCH_MEMORY_CASES=1m100,1m16` picks cases (default: `1m100,1m16,10m100`).
//!
//! Each case starts a fresh redis-server and cache-node (memory only), loads redis-server and
//! then cache-node with `SET key value EX 3600` (16-byte keys), and takes bytes per entry as
//! the growth of the server's resident memory (`VmRSS`) over the load divided by the entries;
//! the headline is the ratio cache-node / redis-server (issue 14's goal: at most 0.70 for
//! 1M x 100 B). Then it deletes every other key and reads RSS again. Expiry cannot be waited
//! for with a 1 h lifetime, so a second fresh pair is loaded with `EX 5` and read again once
//! everything has expired: redis-server when `DBSIZE` reaches 0 (active expiry samples keys),
//! cache-node when its `tidecache_entries` metric does (the sweep at the next fire time of the
//! every-minute schedule; the schedule has no seconds field). Those two readings show how
//! much of the load's memory each server gives back. Prints a table; writes
//! `bench-results/memory.json`.

mod common;
#[path = "common/rss.rs"]
mod rss;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{progress, write_results};
use serde_json::{Value, json};

/// The environment variable that picks cases by name.
const CASES_VARIABLE: &str = "TIDECACHE_BENCH_MEMORY_CASES";
/// Keys are `key:` and 12 digits.
const KEY_BYTES: usize = 16;
/// The lifetime of the measured entries: long enough that nothing expires during a run.
const LONG_TTL_SECONDS: u64 = 3_600;
/// The lifetime of the expiry run's entries: the shortest that still lets a load finish
/// before most of it expires.
const SHORT_TTL_SECONDS: u64 = 5;
/// The goal of issue 14 for cache-node's bytes per entry over redis-server's.
const GOAL_RATIO: f64 = 0.70;
/// Commands written per pipelined batch before reading their replies.
const BATCH: usize = 1_000;
/// Loader connections per server, so that cache-node's threads get work in parallel.
const CONNECTIONS: usize = 4;
/// Wait after start-up or a load (its connections closed) before reading RSS: lets the
/// server finish starting or free the connections' buffers.
const SHORT_SETTLE: Duration = Duration::from_secs(1);
/// Wait after deletes or expiry before reading RSS: longer than jemalloc's 10 s decay of
/// dirty pages in redis-server (mimalloc's purge delay is milliseconds), so that both show
/// what they return to the system rather than when.
const SETTLE: Duration = Duration::from_secs(12);
/// The longest the expiry run waits for both servers to drop every entry: a minute for the
/// schedule's next fire time plus redis-server's active expiry of 10M keys.
const EXPIRY_TIMEOUT: Duration = Duration::from_secs(300);
/// How often the expiry wait reports.
const EXPIRY_REPORT_EVERY: Duration = Duration::from_secs(10);

/// One load: how many entries of what value size.
#[derive(Clone, Copy)]
struct Case {
    name: &'static str,
    label: &'static str,
    entries: usize,
    value_bytes: usize,
}

const CASES: [Case; 3] = [
    Case {
        name: "1m100",
        label: "1M x 100 B",
        entries: 1_000_000,
        value_bytes: 100,
    },
    Case {
        name: "1m16",
        label: "1M x 16 B",
        entries: 1_000_000,
        value_bytes: 16,
    },
    Case {
        name: "10m100",
        label: "10M x 100 B",
        entries: 10_000_000,
        value_bytes: 100,
    },
];

/// A server process under test, killed when dropped.
struct Server {
    name: &'static str,
    resp_port: u16,
    /// cache-node's HTTP port, for its metrics; none for redis-server.
    http_port: Option<u16>,
    child: Child,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Resident bytes of the server process.
    fn rss(&self) -> u64 {
        rss::rss(self.child.id(), self.name)
    }

    /// One command, its reply line.
    fn command(&self, arguments: &[&[u8]]) -> String {
        let mut stream = self.connect();
        let mut request = Vec::new();
        push_command(&mut request, arguments);
        stream
            .write_all(&request)
            .unwrap_or_else(|error| panic!("{}: write failed: {error}", self.name));
        let mut line = Vec::new();
        BufReader::new(stream)
            .read_until(b'\n', &mut line)
            .unwrap_or_else(|error| panic!("{}: read failed: {error}", self.name));
        String::from_utf8_lossy(&line).trim_end().to_string()
    }

    /// Keys the server holds, as far as it counts them: redis-server's `DBSIZE` includes keys
    /// expired but not yet reclaimed; cache-node's `tidecache_entries` includes those not yet
    /// swept (its `DBSIZE` leaves them out, so it cannot show the sweep).
    fn entries_in_memory(&self) -> u64 {
        match self.http_port {
            Some(port) => self.entries_metric(port),
            None => {
                let reply = self.command(&[b"DBSIZE"]);
                reply
                    .strip_prefix(':')
                    .and_then(|count| count.parse().ok())
                    .unwrap_or_else(|| panic!("{}: DBSIZE replied {reply:?}", self.name))
            }
        }
    }

    /// `tidecache_entries` from cache-node's `/metrics`.
    fn entries_metric(&self, port: u16) -> u64 {
        let mut stream = TcpStream::connect(("127.0.0.1", port))
            .unwrap_or_else(|error| panic!("{}: HTTP connect failed: {error}", self.name));
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            .unwrap_or_else(|error| panic!("{}: HTTP write failed: {error}", self.name));
        let mut response = String::new();
        stream
            .read_to_string(&mut response)
            .unwrap_or_else(|error| panic!("{}: HTTP read failed: {error}", self.name));
        response
            .lines()
            .find_map(|line| line.strip_prefix("tidecache_entries "))
            .and_then(|count| count.trim().parse().ok())
            .unwrap_or_else(|| panic!("{}: no tidecache_entries in {response}", self.name))
    }

    fn connect(&self) -> TcpStream {
        TcpStream::connect(("127.0.0.1", self.resp_port))
            .unwrap_or_else(|error| panic!("{}: RESP connect failed: {error}", self.name))
    }
}

/// `count` distinct free loopback ports (each listener is held until all are picked).
fn free_ports(count: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..count)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("a free port"))
        .collect();
    listeners
        .iter()
        .map(|listener| listener.local_addr().expect("bound address").port())
        .collect()
}

/// Spawns `command` and waits until the server answers `PING` on `resp_port`.
fn start(
    name: &'static str,
    mut command: Command,
    resp_port: u16,
    http_port: Option<u16>,
) -> Server {
    let child = command
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|error| panic!("{name} does not start: {error}"));
    let server = Server {
        name,
        resp_port,
        http_port,
        child,
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", resp_port)).is_err() {
        assert!(Instant::now() < deadline, "{name} did not listen in 30 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    let pong = server.command(&[b"PING"]);
    assert_eq!(pong, "+PONG", "{name} answered PING with {pong:?}");
    server
}

fn redis_server() -> Server {
    let port = free_ports(1)[0];
    let mut command = Command::new("redis-server");
    command.args(["--port", &port.to_string(), "--bind", "127.0.0.1"]);
    command.args(["--save", "", "--appendonly", "no"]);
    start("redis-server", command, port, None)
}

/// The release cache-node (benchmarks build in the bench profile), memory only, on the
/// every-minute schedule. The capacity is set far above any case, and with `noeviction`, so
/// that neither a container's cgroup limit nor eviction shrinks a figure: a full store
/// fails the load instead.
fn cache_node() -> Server {
    let ports = free_ports(2);
    let mut command = Command::new(env!("CARGO_BIN_EXE_cache-node"));
    command
        .arg(format!("--listen=127.0.0.1:{}", ports[0]))
        .arg(format!("--resp-listen=127.0.0.1:{}", ports[1]))
        .args(["--schedule", "* * * * *"])
        .args(["--max-memory", "64GiB", "--eviction-policy", "noeviction"])
        .env("RUST_LOG", "warn");
    start("cache-node", command, ports[1], Some(ports[0]))
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

/// The `i`th key: 16 bytes.
fn key(i: usize) -> String {
    format!("key:{i:012}")
}

/// The `i`th value: one letter repeated, never digits (redis-server would store a number as
/// an integer, smaller than the string cache-node stores).
fn value(i: usize, bytes: usize) -> Vec<u8> {
    vec![b'a' + (i % 26) as u8; bytes]
}

/// A pipelined bulk operation: `BATCH` commands written, then their `BATCH` replies read,
/// over `CONNECTIONS` connections in parallel.
struct Bulk<'a> {
    /// What is done, for progress and errors ("SET", "DEL").
    what: &'static str,
    /// The indices operated on are `0, step, 2 * step, ...` below `entries`.
    entries: usize,
    step: usize,
    /// Appends the command for index `i`.
    encode: &'a (dyn Fn(&mut Vec<u8>, usize) + Sync),
    /// The reply every command must get.
    expected: &'static [u8],
}

impl Bulk<'_> {
    /// Runs against `server`; how long it took. Every connection is closed on return.
    fn run(&self, server: &Server) -> Duration {
        let total = self.entries.div_ceil(self.step);
        let batches = total.div_ceil(BATCH);
        let done = AtomicUsize::new(0);
        let started = Instant::now();
        std::thread::scope(|scope| {
            for connection in 0..CONNECTIONS {
                let done = &done;
                scope.spawn(move || {
                    let mut stream = server.connect();
                    let mut replies = BufReader::new(stream.try_clone().expect("socket clone"));
                    let mut buffer = Vec::new();
                    for batch in (connection..batches).step_by(CONNECTIONS) {
                        let first = batch * BATCH;
                        let count = BATCH.min(total - first);
                        buffer.clear();
                        for n in first..first + count {
                            (self.encode)(&mut buffer, n * self.step);
                        }
                        stream.write_all(&buffer).unwrap_or_else(|error| {
                            panic!("{}: {} write failed: {error}", server.name, self.what)
                        });
                        self.check_replies(server, &mut replies, first, count);
                        self.report(server, done, count, total, started);
                    }
                });
            }
        });
        started.elapsed()
    }

    /// Reads `count` replies of the batch starting at position `first`.
    fn check_replies(
        &self,
        server: &Server,
        replies: &mut BufReader<TcpStream>,
        first: usize,
        count: usize,
    ) {
        let mut line = Vec::new();
        for n in first..first + count {
            line.clear();
            replies
                .read_until(b'\n', &mut line)
                .unwrap_or_else(|error| {
                    panic!("{}: {} read failed: {error}", server.name, self.what)
                });
            assert!(
                line == self.expected,
                "{}: {} {} replied {:?}, expected {:?}",
                server.name,
                self.what,
                key(n * self.step),
                String::from_utf8_lossy(&line),
                String::from_utf8_lossy(self.expected),
            );
        }
    }

    /// Adds `count` to `done` and prints a line at each tenth of `total`.
    fn report(
        &self,
        server: &Server,
        done: &AtomicUsize,
        count: usize,
        total: usize,
        started: Instant,
    ) {
        let before = done.fetch_add(count, Ordering::Relaxed);
        let after = before + count;
        if before * 10 / total != after * 10 / total {
            let rate = after as f64 / started.elapsed().as_secs_f64();
            progress(format!(
                "{}: {} {after} of {total} ({rate:.0}/s)",
                server.name, self.what
            ));
        }
    }
}

/// Loads `case`'s entries with lifetime `ttl_seconds`; how long it took.
fn load(server: &Server, case: Case, ttl_seconds: u64) -> Duration {
    let ttl = ttl_seconds.to_string();
    let encode = |buffer: &mut Vec<u8>, i: usize| {
        let value = value(i, case.value_bytes);
        push_command(
            buffer,
            &[b"SET", key(i).as_bytes(), &value, b"EX", ttl.as_bytes()],
        );
    };
    Bulk {
        what: "SET",
        entries: case.entries,
        step: 1,
        encode: &encode,
        expected: b"+OK\r\n",
    }
    .run(server)
}

/// Deletes every other key of `case` (the even ones).
fn delete_half(server: &Server, case: Case) {
    let encode =
        |buffer: &mut Vec<u8>, i: usize| push_command(buffer, &[b"DEL", key(i).as_bytes()]);
    Bulk {
        what: "DEL",
        entries: case.entries,
        step: 2,
        encode: &encode,
        expected: b":1\r\n",
    }
    .run(server);
}

/// What one server did in one case. Sizes in bytes.
#[derive(Default)]
struct Figures {
    rss_start: u64,
    rss_loaded: u64,
    load_seconds: f64,
    rss_half_deleted: u64,
    /// The expiry run's own pair: RSS before its load, and once every entry has gone.
    expiry_rss_start: u64,
    rss_expired: u64,
    /// Entries still held when the expiry wait gave up (0 normally).
    expiry_entries_left: u64,
    expiry_wait_seconds: f64,
}

impl Figures {
    fn load_growth(&self) -> i64 {
        self.rss_loaded as i64 - self.rss_start as i64
    }

    fn bytes_per_entry(&self, case: Case) -> f64 {
        self.load_growth() as f64 / case.entries as f64
    }

    /// How much of the load's growth is still resident after the deletes.
    fn kept_after_delete(&self) -> f64 {
        (self.rss_half_deleted as i64 - self.rss_start as i64) as f64 / self.load_growth() as f64
    }

    /// How much of the load's growth is still resident after expiry.
    fn kept_after_expiry(&self) -> f64 {
        (self.rss_expired as i64 - self.expiry_rss_start as i64) as f64 / self.load_growth() as f64
    }

    fn to_json(&self, case: Case) -> Value {
        json!({
            "bytes_per_entry": self.bytes_per_entry(case),
            "rss_start": self.rss_start,
            "rss_loaded": self.rss_loaded,
            "load_seconds": self.load_seconds,
            "rss_half_deleted": self.rss_half_deleted,
            "kept_after_delete": self.kept_after_delete(),
            "expiry_run": {
                "rss_start": self.expiry_rss_start,
                "rss_expired": self.rss_expired,
                "entries_left": self.expiry_entries_left,
                "wait_seconds": self.expiry_wait_seconds,
                "kept_after_expiry": self.kept_after_expiry(),
            },
        })
    }
}

/// The redis-server and cache-node figures of one case.
struct Outcome {
    case: Case,
    redis: Figures,
    node: Figures,
}

impl Outcome {
    fn ratio(&self) -> f64 {
        self.node.bytes_per_entry(self.case) / self.redis.bytes_per_entry(self.case)
    }
}

/// Loads a fresh pair with long-lived entries (redis-server first), then deletes half.
fn measure_load_and_delete(case: Case, redis: &mut Figures, node: &mut Figures) {
    progress(format!("{}: starting a fresh pair of servers", case.label));
    let pair = [redis_server(), cache_node()];
    let mut figures = [redis, node];
    std::thread::sleep(SHORT_SETTLE);
    for (server, figures) in pair.iter().zip(figures.iter_mut()) {
        figures.rss_start = server.rss();
    }
    for (server, figures) in pair.iter().zip(figures.iter_mut()) {
        figures.load_seconds = load(server, case, LONG_TTL_SECONDS).as_secs_f64();
        std::thread::sleep(SHORT_SETTLE);
        figures.rss_loaded = server.rss();
        let held = server.entries_in_memory();
        assert_eq!(
            held, case.entries as u64,
            "{} holds {held} entries",
            server.name
        );
        progress(format!(
            "{}: {}: {:.1} B/entry",
            case.label,
            server.name,
            figures.bytes_per_entry(case)
        ));
    }
    for server in &pair {
        delete_half(server, case);
    }
    progress(format!(
        "{}: deleted every other key; waiting {} s before reading RSS",
        case.label,
        SETTLE.as_secs()
    ));
    std::thread::sleep(SETTLE);
    for (server, figures) in pair.iter().zip(figures.iter_mut()) {
        figures.rss_half_deleted = server.rss();
    }
}

/// Loads a second fresh pair with short-lived entries and reads RSS once both hold none.
fn measure_expiry(case: Case, redis: &mut Figures, node: &mut Figures) {
    progress(format!(
        "{}: expiry run: a fresh pair, entries with EX {SHORT_TTL_SECONDS}",
        case.label
    ));
    let pair = [redis_server(), cache_node()];
    let mut figures = [redis, node];
    std::thread::sleep(SHORT_SETTLE);
    for (server, figures) in pair.iter().zip(figures.iter_mut()) {
        figures.expiry_rss_start = server.rss();
    }
    for server in &pair {
        load(server, case, SHORT_TTL_SECONDS);
    }
    let fire_time = next_minute(SystemTime::now() + Duration::from_secs(SHORT_TTL_SECONDS));
    let started = Instant::now();
    let mut next_report = started;
    let mut left = [u64::MAX; 2];
    let mut emptied = [None; 2];
    while emptied.iter().any(Option::is_none) && started.elapsed() < EXPIRY_TIMEOUT {
        for (i, server) in pair.iter().enumerate() {
            if emptied[i].is_none() {
                left[i] = server.entries_in_memory();
                emptied[i] = (left[i] == 0).then(|| started.elapsed());
            }
        }
        if Instant::now() >= next_report {
            next_report += EXPIRY_REPORT_EVERY;
            let to_fire = fire_time
                .duration_since(SystemTime::now())
                .map_or(0, |wait| wait.as_secs());
            progress(format!(
                "{}: waiting for expiry: redis-server holds {}, cache-node {} (its sweep at \
                 the next minute, in {to_fire} s)",
                case.label, left[0], left[1]
            ));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    progress(format!(
        "{}: expired; waiting {} s before reading RSS",
        case.label,
        SETTLE.as_secs()
    ));
    std::thread::sleep(SETTLE);
    for (i, (server, figures)) in pair.iter().zip(figures.iter_mut()).enumerate() {
        figures.rss_expired = server.rss();
        figures.expiry_entries_left = left[i];
        figures.expiry_wait_seconds = emptied[i].unwrap_or(EXPIRY_TIMEOUT).as_secs_f64();
        if left[i] > 0 {
            progress(format!(
                "{}: {} still holds {} entries after {} s",
                case.label,
                server.name,
                left[i],
                EXPIRY_TIMEOUT.as_secs()
            ));
        }
    }
}

/// The first whole minute at or after `instant`: the every-minute schedule's fire time for
/// an entry expiring then.
fn next_minute(instant: SystemTime) -> SystemTime {
    let since_epoch = instant.duration_since(UNIX_EPOCH).expect("after 1970");
    let seconds = since_epoch.as_secs() + u64::from(since_epoch.subsec_nanos() > 0);
    UNIX_EPOCH + Duration::from_secs(seconds.div_ceil(60) * 60)
}

fn run_case(case: Case) -> Outcome {
    let mut redis = Figures::default();
    let mut node = Figures::default();
    measure_load_and_delete(case, &mut redis, &mut node);
    measure_expiry(case, &mut redis, &mut node);
    Outcome { case, redis, node }
}

/// The cases named by `TIDECACHE_BENCH_MEMORY_CASES`, or all.
fn selected_cases() -> Vec<Case> {
    let Ok(names) = std::env::var(CASES_VARIABLE) else {
        return CASES.to_vec();
    };
    names
        .split(',')
        .map(str::trim)
        .filter(|name| !name.is_empty())
        .map(|name| {
            CASES
                .iter()
                .find(|case| case.name == name)
                .copied()
                .unwrap_or_else(|| {
                    let known: Vec<&str> = CASES.iter().map(|case| case.name).collect();
                    panic!("{CASES_VARIABLE}: unknown case {name:?}; known: {known:?}")
                })
        })
        .collect()
}

/// `redis-server --version`, which also shows that it is installed.
fn redis_version() -> String {
    let output = Command::new("redis-server")
        .arg("--version")
        .output()
        .unwrap_or_else(|error| {
            panic!(
                "the memory benchmark needs redis-server (apt-get install -y redis-server): {error}"
            )
        });
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn print_table(outcomes: &[Outcome]) {
    println!();
    println!(
        "memory: {KEY_BYTES}-byte keys, EX {LONG_TTL_SECONDS}; bytes per entry = RSS growth over the load / entries"
    );
    println!(
        "{:<14}{:>15}{:>20}{:>8}",
        "case", "redis B/entry", "cache-node B/entry", "ratio"
    );
    for outcome in outcomes {
        println!(
            "{:<14}{:>15.1}{:>20.1}{:>8.2}",
            outcome.case.label,
            outcome.redis.bytes_per_entry(outcome.case),
            outcome.node.bytes_per_entry(outcome.case),
            outcome.ratio()
        );
    }
    if let Some(headline) = outcomes.iter().find(|outcome| outcome.case.name == "1m100") {
        let ratio = headline.ratio();
        let verdict = if ratio <= GOAL_RATIO {
            "met"
        } else {
            "not met"
        };
        println!("goal (1M x 100 B): ratio <= {GOAL_RATIO:.2}: {verdict} ({ratio:.2})");
    }
    println!();
    println!(
        "RSS in MiB (kept: share of the load's growth still resident; expired: a second pair, EX {SHORT_TTL_SECONDS})"
    );
    println!(
        "{:<14}{:<14}{:>8}{:>9}{:>14}{:>8}{:>15}{:>9}{:>8}",
        "case",
        "server",
        "start",
        "loaded",
        "half deleted",
        "kept",
        "expiry start",
        "expired",
        "kept"
    );
    for outcome in outcomes {
        for (name, figures) in [
            ("redis-server", &outcome.redis),
            ("cache-node", &outcome.node),
        ] {
            println!(
                "{:<14}{:<14}{:>8.1}{:>9.1}{:>14.1}{:>7.0}%{:>15.1}{:>9.1}{:>7.0}%",
                outcome.case.label,
                name,
                mib(figures.rss_start),
                mib(figures.rss_loaded),
                mib(figures.rss_half_deleted),
                figures.kept_after_delete() * 100.0,
                mib(figures.expiry_rss_start),
                mib(figures.rss_expired),
                figures.kept_after_expiry() * 100.0,
            );
        }
    }
}

fn main() {
    let redis_version = redis_version();
    let cases = selected_cases();
    progress(format!(
        "cases: {}; {redis_version}; cache-node {}",
        cases
            .iter()
            .map(|case| case.name)
            .collect::<Vec<_>>()
            .join(","),
        env!("CARGO_BIN_EXE_cache-node")
    ));
    let outcomes: Vec<Outcome> = cases.into_iter().map(run_case).collect();
    print_table(&outcomes);
    let results: Vec<Value> = outcomes
        .iter()
        .map(|outcome| {
            json!({
                "case": outcome.case.name,
                "entries": outcome.case.entries,
                "value_bytes": outcome.case.value_bytes,
                "ratio": outcome.ratio(),
                "redis_server": outcome.redis.to_json(outcome.case),
                "cache_node": outcome.node.to_json(outcome.case),
            })
        })
        .collect();
    write_results(
        "memory",
        &json!({
            "key_bytes": KEY_BYTES,
            "ttl_seconds": LONG_TTL_SECONDS,
            "expiry_run_ttl_seconds": SHORT_TTL_SECONDS,
            "settle_seconds": SETTLE.as_secs(),
            "loader_connections": CONNECTIONS,
            "pipeline_batch": BATCH,
            "goal_ratio": GOAL_RATIO,
            "redis_server_version": redis_version,
            "cases": results,
        }),
    );
}
