//! The `cache-node` binary as a process: it starts with flags and environment, logs JSON,
//! serves, and on SIGTERM drains and exits 0; a bad flag stops it with a clear message.

use cache_node_testkit::{Client, Cluster, cache_node};
use http::StatusCode;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_and_exits_zero_on_sigterm() {
    let mut cluster = Cluster::builder(1)
        .independent()
        .flag("--log-format=json")
        .flag("--max-ttl=1h")
        .env("TIDECACHE_DEFAULT_TTL", "90s")
        .start();
    let address = cluster.address(0).to_string();
    let client = Client::default();
    // With --max-ttl and no default a write without a lifetime is refused, so a 201 here
    // means the default came from the environment.
    let put = client.put(&address, "k", "hi", &[]).await.expect("PUT");
    assert_eq!(put.status, StatusCode::CREATED, "{put:?}");
    assert_eq!(
        put.header("tidecache-ttl"),
        "90",
        "default TTL from the environment"
    );
    let got = client.get(&address, "k").await.expect("GET");
    assert_eq!(got.as_deref(), Some("hi"));

    let status = cluster.stop(0);
    assert_eq!(status.code(), Some(0), "{}", cluster.log(0));
    let log = cluster.log(0);
    let messages: Vec<String> = log
        .lines()
        .map(|line| {
            let event: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("log line is not JSON ({e}): {line}"));
            event["fields"]["message"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    let position = |message: &str| {
        messages
            .iter()
            .position(|m| m == message)
            .unwrap_or_else(|| panic!("no {message:?} in the log:\n{log}"))
    };
    assert!(
        position("cache-node serving") < position("SIGTERM received"),
        "{log}"
    );
    assert!(
        position("SIGTERM received") < position("cache-node stopped"),
        "{log}"
    );
}

#[test]
fn refuses_an_invalid_schedule() {
    let output = cache_node()
        .args(["--listen=127.0.0.1:0", "--schedule=61 * * * *"])
        .output()
        .expect("cache-node runs");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("minute"), "{stderr}");
}
