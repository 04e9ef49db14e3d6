//! Hostile clients against a real cache-node process (docs/limits.md): responses, bodies,
//! connections and time are bounded on HTTP and RESP alike.
//!
//! Settings go in `TIDECACHE_*` variables rather than flags, so that the same tests run
//! against a build without these bounds (it ignores the variables) and fail there for the
//! reason they test, not for an unknown flag.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use cache_node_testkit::{Builder, Cluster};

const MIB: usize = 1 << 20;

/// One node, independent, with `env` settings.
fn node(builder: Builder, env: &[(&str, &str)]) -> Cluster {
    env.iter()
        .fold(builder.independent(), |builder, (name, value)| {
            builder.env(name, value)
        })
        .start()
}

fn connect(address: &str) -> TcpStream {
    let stream = TcpStream::connect(address).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    stream
}

/// Sends `request` (which must say `Connection: close`) and reads the whole response.
fn exchange(address: &str, request: &[u8]) -> String {
    let mut stream = connect(address);
    stream.write_all(request).expect("write");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).expect("response");
    String::from_utf8_lossy(&response).into_owned()
}

fn put(address: &str, key: &str, value: &[u8]) {
    let mut request = format!(
        "PUT /v1/keys/{key} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        value.len()
    )
    .into_bytes();
    request.extend_from_slice(value);
    let response = exchange(address, &request);
    assert!(response.starts_with("HTTP/1.1 201"), "{response}");
}

fn batch_get(keys: &[&str]) -> Vec<u8> {
    let body = serde_json::json!({ "keys": keys }).to_string();
    format!(
        "POST /v1/batch/get HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// A figure of `/proc/<pid>/status` in bytes (`VmRSS`, `VmHWM`).
fn memory(cluster: &Cluster, field: &str) -> usize {
    let status =
        std::fs::read_to_string(format!("/proc/{}/status", cluster.pid(0))).expect("/proc status");
    let line = status
        .lines()
        .find(|line| line.starts_with(field))
        .unwrap_or_else(|| panic!("no {field} in {status}"));
    let kib: usize = line
        .split_whitespace()
        .nth(1)
        .and_then(|figure| figure.parse().ok())
        .expect("a figure in kB");
    kib * 1024
}

/// How long after `since` the peer closed `stream`, reading (and discarding) whatever it
/// sends; `None` if it is still open after `within`.
fn closed_within(stream: &mut TcpStream, since: Instant, within: Duration) -> Option<Duration> {
    let deadline = since + within;
    let mut sink = [0u8; 64 * 1024];
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        stream
            .set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .expect("read timeout");
        match stream.read(&mut sink) {
            Ok(0) => return Some(since.elapsed()),
            Ok(_) => {}
            Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return None;
            }
            Err(_) => return Some(since.elapsed()),
        }
    }
}

#[test]
fn a_batch_get_naming_one_large_value_many_times_is_refused_without_the_memory() {
    let cluster = node(
        Cluster::builder(1),
        &[
            ("TIDECACHE_MAX_MEMORY", "64MiB"),
            ("TIDECACHE_MAX_RESPONSE_BYTES", "8MiB"),
        ],
    );
    let address = cluster.address(0);
    put(address, "big", &vec![b'v'; MIB]);

    let response = exchange(address, &batch_get(&["big"; 1000]));
    assert!(response.starts_with("HTTP/1.1 413"), "{:.300}", response);
    assert!(
        response.contains("response_too_large") && response.contains("--max-response-bytes"),
        "{response:.500}"
    );
    let peak = memory(&cluster, "VmHWM:");
    assert!(
        peak < 200 * MIB,
        "peak RSS {} MiB for a refused batch",
        peak / MIB
    );

    // Under the bound the batch is served, whole.
    let response = exchange(address, &batch_get(&["big"; 4]));
    assert!(response.starts_with("HTTP/1.1 200"), "{response:.300}");
    let body = &response[response.find("\r\n\r\n").expect("head") + 4..];
    let parsed: serde_json::Value = serde_json::from_str(body).expect("JSON");
    let entries = parsed["entries"].as_array().expect("entries");
    assert_eq!(entries.len(), 4);
    assert!(entries.iter().all(|entry| entry["found"] == true));
}

#[test]
fn silent_half_sent_slow_and_idle_http_connections_are_closed_after_the_header_timeout() {
    let cluster = node(
        Cluster::builder(1),
        &[("TIDECACHE_HEADER_READ_TIMEOUT", "1s")],
    );
    let address = cluster.address(0).to_string();
    let started = Instant::now();
    let mut silent = connect(&address);
    let mut half = connect(&address);
    half.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .expect("write");
    let mut idle = connect(&address);
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("write");
    let mut answer = [0u8; 512];
    let read = idle.read(&mut answer).expect("answer");
    assert!(answer[..read].starts_with(b"HTTP/1.1 200"));
    // One byte every 100 ms: the head is never complete within the timeout.
    let mut slow = connect(&address);
    let mut drip = slow.try_clone().expect("clone");
    let dripping = std::thread::spawn(move || {
        for byte in b"GET /healthz HTTP/1.1\r\nX-Padding: "
            .iter()
            .chain([b'a'; 200].iter())
        {
            if drip.write_all(&[*byte]).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    for (name, stream) in [
        ("silent", &mut silent),
        ("half-sent head", &mut half),
        ("idle keep-alive", &mut idle),
        ("slowloris", &mut slow),
    ] {
        let closed = closed_within(stream, started, Duration::from_secs(5));
        assert!(closed.is_some(), "the {name} connection is still open");
    }
    dripping.join().expect("dripping thread");
}

#[test]
fn healthz_answers_within_a_second_when_idle_connections_fill_the_file_table() {
    let cluster = node(
        Cluster::builder(1).file_limit(128),
        &[("TIDECACHE_HEADER_READ_TIMEOUT", "60s")],
    );
    let address = cluster.address(0).to_string();
    let idle: Vec<TcpStream> = (0..200).map(|_| connect(&address)).collect();
    std::thread::sleep(Duration::from_millis(300));

    let asked = Instant::now();
    let response = exchange(
        &address,
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    let took = asked.elapsed();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(took < Duration::from_secs(1), "/healthz took {took:?}");
    assert!(
        cluster
            .log(0)
            .contains("connection caps lowered to fit RLIMIT_NOFILE"),
        "{}",
        cluster.log(0)
    );
    // Beyond the cap, a key request is refused with what to do; the probes are not.
    let response = exchange(
        &address,
        b"GET /v1/keys/some HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(response.starts_with("HTTP/1.1 503"), "{response}");
    assert!(response.contains("server_busy"), "{response}");
    assert!(response.to_ascii_lowercase().contains("retry-after: 1"));
    drop(idle);
}

#[test]
fn request_bodies_held_one_byte_short_are_bounded_by_the_inflight_budget() {
    let cluster = node(Cluster::builder(1), &[("TIDECACHE_MAX_MEMORY", "64MiB")]);
    let address = cluster.address(0).to_string();
    let before = memory(&cluster, "VmRSS:");
    let body = vec![b'b'; MIB - 1];
    let mut held = Vec::new();
    for i in 0..200 {
        let mut stream = connect(&address);
        stream
            .set_write_timeout(Some(Duration::from_secs(5)))
            .expect("write timeout");
        let head =
            format!("PUT /v1/keys/held-{i} HTTP/1.1\r\nHost: x\r\nContent-Length: {MIB}\r\n\r\n");
        // A refused body is not read: the write may fail once the server closes.
        let _ = stream
            .write_all(head.as_bytes())
            .and_then(|()| stream.write_all(&body));
        held.push(stream);
    }
    std::thread::sleep(Duration::from_millis(500));
    let grown = memory(&cluster, "VmRSS:").saturating_sub(before);
    assert!(
        grown < 64 * MIB,
        "200 held bodies grew RSS by {} MiB under --max-memory 64MiB",
        grown / MIB
    );
    let mut refused = 0;
    for stream in &mut held {
        stream
            .set_read_timeout(Some(Duration::from_millis(50)))
            .expect("read timeout");
        let mut answer = [0u8; 1024];
        if let Ok(read) = stream.read(&mut answer) {
            let answer = String::from_utf8_lossy(&answer[..read]);
            if answer.starts_with("HTTP/1.1 503") {
                assert!(answer.contains("over_memory_budget"), "{answer}");
                assert!(answer.to_ascii_lowercase().contains("retry-after"));
                refused += 1;
            }
        }
    }
    assert!(refused >= 150, "only {refused} of 200 held bodies refused");
    drop(held);
    // The budget is back once the connections are gone.
    std::thread::sleep(Duration::from_millis(200));
    put(&address, "after", &vec![b'a'; MIB]);
}

#[test]
fn a_body_sent_too_slowly_gets_408_at_the_body_timeout() {
    let cluster = node(
        Cluster::builder(1),
        &[("TIDECACHE_BODY_READ_TIMEOUT", "1s")],
    );
    let mut stream = connect(cluster.address(0));
    stream
        .write_all(b"PUT /v1/keys/slow HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nhello")
        .expect("write");
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 408"), "{response}");
    assert!(response.contains("body_timeout"), "{response}");
}

#[test]
fn an_http_client_that_does_not_read_its_response_is_closed_at_the_write_timeout() {
    let cluster = node(Cluster::builder(1), &[("TIDECACHE_WRITE_TIMEOUT", "1s")]);
    let address = cluster.address(0);
    put(address, "big", &vec![b'v'; MIB]);
    let mut stream = unread(address);
    // About 17 MB of response, far more than the socket buffers hold (4 MB at most).
    stream.write_all(&batch_get(&["big"; 12])).expect("write");
    // Once the response has started, stop reading for longer than the timeout.
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .expect("read timeout");
    stream.peek(&mut [0u8; 1]).expect("the response starts");
    std::thread::sleep(Duration::from_secs(3));
    let mut received = 0usize;
    let mut sink = vec![0u8; 1 << 16];
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("read timeout");
    let outcome = loop {
        match stream.read(&mut sink) {
            Ok(0) => break "closed",
            Ok(read) => received += read,
            Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                break "still open";
            }
            Err(_) => break "closed",
        }
    };
    assert!(
        outcome == "closed" && received < 12 * MIB,
        "{outcome} after {} MiB",
        received / MIB
    );
}

/// A connection whose receive buffer is small: a client that does not read stops the
/// server's writes after a few megabytes (loopback's buffers grow to tens otherwise).
fn unread(address: &str) -> TcpStream {
    let stream = connect(address);
    rustix::net::sockopt::set_socket_recv_buffer_size(&stream, 64 * 1024).expect("SO_RCVBUF");
    stream
}

/// A RESP connection and its reads.
struct Resp {
    stream: TcpStream,
}

impl Resp {
    fn connect(cluster: &Cluster) -> Resp {
        Resp {
            stream: unread(&format!("127.0.0.1:{}", cluster.resp_port(0))),
        }
    }

    fn send(&mut self, args: &[&[u8]]) {
        let mut frame = format!("*{}\r\n", args.len()).into_bytes();
        for arg in args {
            frame.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
            frame.extend_from_slice(arg);
            frame.extend_from_slice(b"\r\n");
        }
        self.stream.write_all(&frame).expect("write");
    }

    /// The next line the server sends.
    fn line(&mut self) -> String {
        let mut line = Vec::new();
        let mut byte = [0u8; 1];
        while !line.ends_with(b"\r\n") {
            match self.stream.read(&mut byte) {
                Ok(1) => line.push(byte[0]),
                _ => break,
            }
        }
        String::from_utf8_lossy(&line).into_owned()
    }
}

#[test]
fn resp_clients_over_the_cap_hear_redis_error_and_are_closed() {
    let cluster = node(
        Cluster::builder(1).resp(),
        &[("TIDECACHE_RESP_MAX_CLIENTS", "2")],
    );
    let mut first = Resp::connect(&cluster);
    let mut second = Resp::connect(&cluster);
    for client in [&mut first, &mut second] {
        client.send(&[b"PING"]);
        assert_eq!(client.line(), "+PONG\r\n");
    }
    let mut third = Resp::connect(&cluster);
    assert_eq!(third.line(), "-ERR max number of clients reached\r\n");
    assert!(closed_within(&mut third.stream, Instant::now(), Duration::from_secs(2)).is_some());
    drop(first);
    std::thread::sleep(Duration::from_millis(200));
    let mut fourth = Resp::connect(&cluster);
    fourth.send(&[b"PING"]);
    assert_eq!(fourth.line(), "+PONG\r\n", "a freed slot is served");
}

#[test]
fn resp_partial_requests_and_idle_clients_are_closed_after_their_timeouts() {
    let cluster = node(
        Cluster::builder(1).resp(),
        &[
            ("TIDECACHE_RESP_REQUEST_TIMEOUT", "1s"),
            ("TIDECACHE_RESP_IDLE_TIMEOUT", "3s"),
        ],
    );
    let started = Instant::now();
    let mut partial = Resp::connect(&cluster);
    partial
        .stream
        .write_all(b"*2\r\n$3\r\nGET\r\n$3\r\nke")
        .expect("write");
    let mut idle = Resp::connect(&cluster);
    idle.send(&[b"PING"]);
    assert_eq!(idle.line(), "+PONG\r\n");
    let partial_closed = closed_within(&mut partial.stream, started, Duration::from_secs(6))
        .expect("the partial request's connection is still open");
    let idle_closed = closed_within(&mut idle.stream, started, Duration::from_secs(8))
        .expect("the idle client is still connected");
    assert!(
        partial_closed < Duration::from_millis(2500),
        "partial request closed after {partial_closed:?}"
    );
    assert!(
        idle_closed >= Duration::from_millis(2900),
        "idle client closed after {idle_closed:?}, before its timeout"
    );
}

#[test]
fn a_resp_client_pipelining_reads_it_never_takes_is_cut_and_mget_is_bounded() {
    let cluster = node(
        Cluster::builder(1).resp(),
        &[
            ("TIDECACHE_WRITE_TIMEOUT", "1s"),
            ("TIDECACHE_MAX_RESPONSE_BYTES", "8MiB"),
        ],
    );
    let mut client = Resp::connect(&cluster);
    let value = vec![b'v'; MIB];
    client.send(&[b"SET", b"big", &value]);
    assert_eq!(client.line(), "+OK\r\n");
    let mut mget: Vec<&[u8]> = vec![b"MGET"];
    mget.extend(std::iter::repeat_n(&b"big"[..], 20));
    client.send(&mget);
    let refused = client.line();
    assert!(
        refused.starts_with("-ERR the reply would be larger")
            && refused.contains("--max-response-bytes"),
        "{refused}"
    );

    // 100 GETs of 1 MiB, never read.
    let mut pipeline = Vec::new();
    for _ in 0..100 {
        pipeline.extend_from_slice(b"*2\r\n$3\r\nGET\r\n$3\r\nbig\r\n");
    }
    client.stream.write_all(&pipeline).expect("write");
    std::thread::sleep(Duration::from_secs(4));
    let mut received = 0usize;
    let mut sink = vec![0u8; 1 << 16];
    client
        .stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("read timeout");
    let outcome = loop {
        match client.stream.read(&mut sink) {
            Ok(0) => break "closed",
            Ok(read) => received += read,
            Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                break "still open";
            }
            Err(_) => break "closed",
        }
    };
    assert!(
        outcome == "closed" && received < 100 * MIB,
        "{outcome} after {} MiB",
        received / MIB
    );
}
