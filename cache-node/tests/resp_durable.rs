//! What RESP writes share with HTTP's below the front end: the persistence log (a key SET
//! over RESP survives a restart with its expiry) and replication (a key SET over RESP on one
//! node is read on the other, over RESP and over HTTP with the same ETag).

mod resp_support;

use std::time::{Duration, Instant};

use resp_support::{Server, Value, free_port};

fn integer(value: Value) -> i64 {
    match value {
        Value::Integer(n) => n,
        other => panic!("expected an integer, got {other:?}"),
    }
}

#[test]
fn a_key_set_over_resp_survives_a_restart_with_its_expiry() {
    let data = tempfile::tempdir().expect("tempdir");
    let flags = [
        format!("--data-dir={}", data.path().display()),
        "--node-id=resp-node".to_string(),
        "--fsync=always".to_string(),
    ];
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let mut node = Server::cache_node(&flags);
    node.wait_loaded();
    let mut conn = node.connect();
    assert_eq!(
        conn.cmd(&["SET", "durable", "v1", "EX", "300"]),
        Value::Simple("OK".into())
    );
    assert_eq!(integer(conn.cmd(&["INCR", "counter"])), 1);
    assert_eq!(integer(conn.cmd(&["DEL", "counter"])), 1);
    let expires = integer(conn.cmd(&["PEXPIRETIME", "durable"]));
    let status = node
        .signal_and_wait("TERM", Duration::from_secs(15))
        .expect("the node exits after SIGTERM");
    assert!(status.success(), "{}", node.log());
    let restarted = Server::cache_node(&flags);
    restarted.wait_loaded();
    let mut conn = restarted.connect();
    assert_eq!(conn.cmd(&["GET", "durable"]), Value::Bulk(b"v1".to_vec()));
    assert_eq!(integer(conn.cmd(&["PEXPIRETIME", "durable"])), expires);
    assert_eq!(
        conn.cmd(&["GET", "counter"]),
        Value::Null,
        "the delete was persisted too"
    );
}

#[test]
fn a_key_set_over_resp_is_replicated_to_the_other_node() {
    let ports: Vec<(u16, u16)> = (0..2).map(|_| (free_port(), free_port())).collect();
    let peers = format!("--peers=127.0.0.1:{},127.0.0.1:{}", ports[0].1, ports[1].1);
    let nodes: Vec<Server> = ports
        .iter()
        .enumerate()
        .map(|(i, (resp, http))| {
            Server::cache_node_on(
                *resp,
                *http,
                &[&peers, &format!("--node-id=node-{i}"), "--ack=all"],
            )
        })
        .collect();
    for node in &nodes {
        node.wait_loaded();
    }
    let mut writer = nodes[0].connect();
    let mut reader = nodes[1].connect();
    assert_eq!(
        writer.cmd(&["SET", "shared", "hello", "EX", "120"]),
        Value::Simple("OK".into())
    );
    // With --ack=all the write was acknowledged by both nodes before the reply.
    let deadline = Instant::now() + Duration::from_secs(10);
    while reader.cmd(&["GET", "shared"]) != Value::Bulk(b"hello".to_vec()) {
        assert!(
            Instant::now() < deadline,
            "not replicated in 10 s:\n{}",
            nodes[1].log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let ttl = integer(reader.cmd(&["TTL", "shared"]));
    assert!(
        (119..=120).contains(&ttl),
        "the expiry travelled with the value: {ttl}"
    );
    let expiry = |conn: &mut resp_support::Conn| integer(conn.cmd(&["PEXPIRETIME", "shared"]));
    assert_eq!(
        expiry(&mut writer),
        expiry(&mut reader),
        "the same expiry on both nodes"
    );
    // Both nodes hold the same version: HTTP shows the same ETag on each.
    let etag = |http: u16| {
        let response = http_get(http, "/v1/keys/shared");
        response
            .lines()
            .find_map(|line| line.strip_prefix("etag: "))
            .map(|tag| tag.trim().to_string())
            .unwrap_or_else(|| panic!("no ETag in {response}"))
    };
    assert_eq!(etag(ports[0].1), etag(ports[1].1));
    assert_eq!(integer(reader.cmd(&["INCR", "n"])), 1);
    let deadline = Instant::now() + Duration::from_secs(10);
    while writer.cmd(&["GET", "n"]) != Value::Bulk(b"1".to_vec()) {
        assert!(
            Instant::now() < deadline,
            "INCR not replicated back in 10 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A plain HTTP/1.1 GET; the response head and body as text, header names lower-cased.
fn http_get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    response
        .lines()
        .map(|line| match line.split_once(": ") {
            Some((name, value)) => format!("{}: {value}\n", name.to_ascii_lowercase()),
            None => format!("{line}\n"),
        })
        .collect()
}
