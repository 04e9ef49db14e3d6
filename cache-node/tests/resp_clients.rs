//! Real Redis clients against a real cache-node process: redis-py (from PyPI, installed into
//! a virtual environment under `target/`) running `tests/resp/scenario.py`, `redis-cli`
//! scripted commands, and `redis-benchmark` (node-redis, go-redis and redis-rs run the same
//! scenario in `resp_node.rs`, `resp_go.rs` and `resp_redis_rs.rs`). Each test fails, naming
//! what to install, when its tool is missing.

mod resp_support;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use resp_support::{Server, python_with_redis_py, require, run, run_scenario};

const TOKEN: &str = "resp-clients-token";

#[test]
fn redis_py_runs_the_scenario() {
    let python = python_with_redis_py();
    let node = Server::cache_node(&[&format!("--auth-token={TOKEN}")]);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/resp/scenario.py");
    run_scenario("redis-py", Command::new(python).arg(script), &node, TOKEN);
}

#[test]
fn redis_cli_scripted_commands() {
    require("redis-cli", "apt-get install -y redis-tools");
    let node = Server::cache_node(&[
        &format!("--auth-token={TOKEN}"),
        "--max-ttl=1h",
        "--default-ttl=10m",
    ]);
    let script = [
        ("PING", "PONG"),
        ("SET user:1 alice", "OK"),
        ("GET user:1", "alice"),
        ("TTL user:1", "600"),
        ("SET user:2 bob EX 30", "OK"),
        ("TTL user:2", "30"),
        (
            "SET user:3 carol EX 7200",
            "ERR the lifetime of 7200s exceeds the maximum TTL of 3600s; ask for less",
        ),
        (
            "PERSIST user:1",
            "ERR PERSIST is refused: the maximum TTL is 3600s, so every key must expire",
        ),
        ("INCR visits", "1"),
        ("INCRBY visits 9", "10"),
        ("MSET a 1 b 2", "OK"),
        ("MGET a b nope", "1\n2\n\n"),
        ("EXISTS a b nope", "2"),
        ("DEL a b nope", "2"),
        ("DBSIZE", "3"),
        ("TYPE visits", "string"),
        ("SELECT 3", "ERR DB index is out of range"),
        (
            "FLUSHALL",
            "ERR FLUSHALL is disabled on this server: it deletes every key of the cluster; start cache-node with --resp-allow-flush to allow it",
        ),
        (
            "HSET h f v",
            "ERR unknown command 'HSET', with args beginning with: 'h' 'f' 'v' ",
        ),
        ("GET", "ERR wrong number of arguments for 'get' command"),
    ];
    let input: String = script
        .iter()
        .map(|(command, _)| format!("{command}\n"))
        .collect();
    let mut child = Command::new("redis-cli")
        .args([
            "-p",
            &node.port.to_string(),
            "-a",
            TOKEN,
            "--no-auth-warning",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("redis-cli runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("commands written");
    let output = child.wait_with_output().expect("redis-cli ends");
    let expected: String = script
        .iter()
        // redis-cli prints a nil as an empty line, and an empty line after an error.
        .map(|(_, reply)| match reply {
            _ if reply.ends_with('\n') => reply.to_string(),
            _ if reply.starts_with("ERR") => format!("{reply}\n\n"),
            _ => format!("{reply}\n"),
        })
        .collect();
    assert_eq!(String::from_utf8_lossy(&output.stdout), expected);
    let unauthenticated =
        run(Command::new("redis-cli").args(["-p", &node.port.to_string(), "GET", "user:1"]));
    assert_eq!(
        String::from_utf8_lossy(&unauthenticated.stdout).trim(),
        "NOAUTH Authentication required."
    );
}

#[test]
fn sigterm_closes_resp_connections_then_the_node_exits_cleanly() {
    let mut node = Server::cache_node(&["--log-format=json"]);
    let mut idle = node.connect();
    assert_eq!(
        idle.cmd(&["SET", "k", "v"]),
        resp_support::Value::Simple("OK".into())
    );
    let status = node
        .signal_and_wait("TERM", std::time::Duration::from_secs(15))
        .unwrap_or_else(|| panic!("cache-node did not exit after SIGTERM:\n{}", node.log()));
    assert!(status.success(), "exit status {status}:\n{}", node.log());
    assert!(idle.is_closed(), "the idle RESP connection was closed");
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", node.port)).is_err(),
        "the RESP listener is closed"
    );
    let log = node.log();
    assert!(log.contains("\"tasks_running_at_log_close\":0"), "{log}");
}

#[test]
fn redis_benchmark_finishes_without_errors() {
    require("redis-benchmark", "apt-get install -y redis-tools");
    let node = Server::cache_node(&[&format!("--auth-token={TOKEN}")]);
    let output = run(Command::new("redis-benchmark")
        .args(["-p", &node.port.to_string(), "-a", TOKEN])
        .args([
            "-t",
            "ping,set,get,incr,mset",
            "-n",
            "2000",
            "-r",
            "1000",
            "-q",
        ]));
    let text = String::from_utf8_lossy(&output.stdout).replace('\r', "\n");
    for test in [
        "PING_INLINE",
        "PING_MBULK",
        "SET",
        "GET",
        "INCR",
        "MSET (10 keys)",
    ] {
        assert!(
            text.lines()
                .any(|line| line.starts_with(&format!("{test}: "))
                    && line.contains("requests per second")),
            "no result for {test}:\n{text}"
        );
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !text.contains("ERR") && !stderr.contains("ERR"),
        "{text}\n{stderr}"
    );
    let mut conn = node.connect();
    conn.cmd(&["AUTH", TOKEN]);
    assert_eq!(
        conn.cmd(&["GET", "counter:__rand_int__"]),
        resp_support::Value::Null
    );
    match conn.cmd(&["DBSIZE"]) {
        resp_support::Value::Integer(keys) => {
            assert!(keys > 100, "the benchmark stored {keys} keys")
        }
        other => panic!("DBSIZE answered {other:?}"),
    }
}
