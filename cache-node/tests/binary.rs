//! The `cache-node` binary as a process: it starts with flags, logs JSON, serves, and on
//! SIGTERM drains and exits 0; a bad flag stops it with a clear message.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

fn exchange(address: &str, raw: &str) -> String {
    let mut stream = TcpStream::connect(address).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    stream.write_all(raw.as_bytes()).expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    response
}

#[test]
fn serves_and_exits_zero_on_sigterm() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_cache-node"))
        .args(["--listen=127.0.0.1:0", "--log-format=json", "--max-ttl=1h"])
        .env("TIDECACHE_DEFAULT_TTL", "90s")
        .stderr(Stdio::piped())
        .spawn()
        .expect("cache-node starts");
    let mut logs = BufReader::new(child.stderr.take().expect("stderr"));
    let mut line = String::new();
    let address = loop {
        line.clear();
        assert!(
            logs.read_line(&mut line).expect("log line") > 0,
            "exited early"
        );
        let event: serde_json::Value = serde_json::from_str(&line).expect("JSON log line");
        if event["fields"]["message"] == "cache-node serving" {
            break event["fields"]["listen"]
                .as_str()
                .expect("listen field")
                .to_string();
        }
    };

    let put = exchange(
        &address,
        "PUT /v1/keys/k HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi",
    );
    assert!(put.starts_with("HTTP/1.1 201"), "{put}");
    assert!(
        put.contains("tidecache-ttl: 90"),
        "default TTL from the environment: {put}"
    );
    let get = exchange(
        &address,
        "GET /v1/keys/k HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(get.ends_with("hi"), "{get}");

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(killed.success());
    let status = child.wait().expect("exits");
    assert_eq!(status.code(), Some(0));
    let mut rest = String::new();
    logs.read_to_string(&mut rest).expect("remaining logs");
    assert!(rest.contains("SIGTERM received"), "{rest}");
    assert!(rest.contains("cache-node stopped"), "{rest}");
}

#[test]
fn refuses_an_invalid_schedule() {
    let output = Command::new(env!("CARGO_BIN_EXE_cache-node"))
        .args(["--listen=127.0.0.1:0", "--schedule=61 * * * *"])
        .output()
        .expect("cache-node runs");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("minute"), "{stderr}");
}
