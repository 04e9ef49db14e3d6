//! The RESP front end over a real socket, in process: exact replies byte for byte,
//! pipelining, authentication, transactions, the lifetime policy, a bad frame, the drain,
//! and the same entry seen over RESP and HTTP.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use http::{Method, Request, StatusCode};
use tidecache_contract::Schedule;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tower::ServiceExt;

use super::{RespSettings, RespState, run};
use crate::base::auth::AuthToken;
use crate::base::time::{ManualClock, Timestamp};
use crate::cache::{Cache, CacheSettings, Limits};
use crate::http::{AppState, app};
use crate::store::{EvictionPolicy, StoreConfig};

/// 2026-11-19T00:00:20Z.
const START: i64 = 1_795_046_420_000;

/// A cache served over RESP on a loopback port, stopped when dropped.
struct Server {
    address: SocketAddr,
    cache: Arc<Cache>,
    clock: Arc<ManualClock>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    done: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl Server {
    async fn start(limits: Limits, capacity: u64, settings: RespSettings) -> Server {
        let clock = Arc::new(ManualClock::new(Timestamp::from_millis(START)));
        let mut store = StoreConfig::new(Schedule::every_minute());
        store.capacity_bytes = capacity;
        store.eviction_policy = EvictionPolicy::NoEviction;
        let cache = Arc::new(Cache::start(
            CacheSettings {
                store,
                limits,
                persistence: None,
                node_tag: 0,
                backend: None,
            },
            clock.clone(),
            None,
        ));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let state = Arc::new(RespState::new(cache.clone(), settings, address));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let done = tokio::spawn(run(
            listener,
            state,
            async move {
                let _ = stopped.await;
            },
            Duration::from_secs(2),
        ));
        Server {
            address,
            cache,
            clock,
            stop: Some(stop),
            done: Some(done),
        }
    }

    async fn open() -> Server {
        Server::start(Limits::default(), u64::MAX, RespSettings::default()).await
    }

    async fn connect(&self) -> Client {
        Client {
            stream: TcpStream::connect(self.address).await.expect("connect"),
        }
    }

    async fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(done) = self.done.take() {
            done.await.expect("joined").expect("served");
        }
    }
}

struct Client {
    stream: TcpStream,
}

/// A request in RESP multibulk form.
fn request(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend(format!("${}\r\n{arg}\r\n", arg.len()).into_bytes());
    }
    out
}

impl Client {
    /// Sends `bytes` and reads until `expected` bytes (at least one) came back, or the peer
    /// closed.
    async fn exchange(&mut self, bytes: &[u8], expected: usize) -> String {
        self.stream.write_all(bytes).await.expect("write");
        let mut got = Vec::new();
        let mut buf = [0_u8; 4096];
        while got.len() < expected.max(1) {
            let read = tokio::time::timeout(Duration::from_secs(5), self.stream.read(&mut buf))
                .await
                .expect("a reply within 5 s")
                .expect("read");
            if read == 0 {
                break;
            }
            got.extend_from_slice(&buf[..read]);
        }
        String::from_utf8_lossy(&got).into_owned()
    }

    /// Runs one command and checks its exact reply.
    async fn expect(&mut self, args: &[&str], reply: &str) {
        let got = self.exchange(&request(args), reply.len()).await;
        assert_eq!(got, reply, "{args:?}");
    }

    /// Whether the server closed the connection.
    async fn closed(&mut self) -> bool {
        let mut buf = [0_u8; 64];
        matches!(
            tokio::time::timeout(Duration::from_secs(5), self.stream.read(&mut buf)).await,
            Ok(Ok(0) | Err(_))
        )
    }
}

#[tokio::test]
async fn strings_and_expiry_answer_exactly_as_redis() {
    let server = Server::open().await;
    let mut c = server.connect().await;
    c.expect(&["PING"], "+PONG\r\n").await;
    c.expect(&["ping", "hi"], "$2\r\nhi\r\n").await;
    c.expect(&["GET", "k"], "$-1\r\n").await;
    c.expect(&["SET", "k", "v", "EX", "100"], "+OK\r\n").await;
    c.expect(&["TTL", "k"], ":100\r\n").await;
    c.expect(&["SET", "k", "w", "KEEPTTL", "GET"], "$1\r\nv\r\n")
        .await;
    c.expect(&["PTTL", "k"], ":100000\r\n").await;
    c.expect(&["SET", "k", "x", "NX"], "$-1\r\n").await;
    c.expect(&["SET", "n", "x", "XX"], "$-1\r\n").await;
    c.expect(&["SET", "k", "x", "NX", "XX"], "-ERR syntax error\r\n")
        .await;
    c.expect(
        &["SET", "k", "x", "EX", "0"],
        "-ERR invalid expire time in 'set' command\r\n",
    )
    .await;
    c.expect(
        &["SET", "k", "x", "EX", "a"],
        "-ERR value is not an integer or out of range\r\n",
    )
    .await;
    c.expect(
        &["SET", "k"],
        "-ERR wrong number of arguments for 'set' command\r\n",
    )
    .await;
    c.expect(
        &["INCR", "k"],
        "-ERR value is not an integer or out of range\r\n",
    )
    .await;
    c.expect(&["INCRBY", "i", "5"], ":5\r\n").await;
    c.expect(&["DECR", "i"], ":4\r\n").await;
    c.expect(&["SET", "i", "9223372036854775807"], "+OK\r\n")
        .await;
    c.expect(
        &["INCR", "i"],
        "-ERR increment or decrement would overflow\r\n",
    )
    .await;
    c.expect(&["INCRBYFLOAT", "f", "10.5"], "$4\r\n10.5\r\n")
        .await;
    c.expect(&["INCRBYFLOAT", "f", "0.25"], "$5\r\n10.75\r\n")
        .await;
    c.expect(&["APPEND", "a", "xy"], ":2\r\n").await;
    c.expect(&["SETRANGE", "a", "4", "z"], ":5\r\n").await;
    c.expect(&["GET", "a"], "$5\r\nxy\0\0z\r\n").await;
    c.expect(&["GETRANGE", "a", "-1", "-1"], "$1\r\nz\r\n")
        .await;
    c.expect(&["GETRANGE", "a", "0", "100"], "$5\r\nxy\0\0z\r\n")
        .await;
    c.expect(&["STRLEN", "a"], ":5\r\n").await;
    c.expect(&["MSET", "m1", "1", "m2", "2"], "+OK\r\n").await;
    c.expect(
        &["MGET", "m1", "nope", "m2"],
        "*3\r\n$1\r\n1\r\n$-1\r\n$1\r\n2\r\n",
    )
    .await;
    c.expect(&["MSETNX", "m1", "3", "m3", "3"], ":0\r\n").await;
    c.expect(&["EXISTS", "m1", "m1", "m3"], ":2\r\n").await;
    c.expect(&["EXPIRE", "m1", "50", "XX"], ":0\r\n").await;
    c.expect(&["EXPIRE", "m1", "50", "NX"], ":1\r\n").await;
    c.expect(&["EXPIRE", "m1", "40", "GT"], ":0\r\n").await;
    c.expect(&["EXPIRE", "m1", "40", "LT"], ":1\r\n").await;
    c.expect(
        &["EXPIRE", "m1", "40", "NX", "GT"],
        "-ERR NX and XX, GT or LT options at the same time are not compatible\r\n",
    )
    .await;
    c.expect(
        &["EXPIRETIME", "m1"],
        &format!(":{}\r\n", START / 1000 + 40),
    )
    .await;
    c.expect(&["PERSIST", "m1"], ":1\r\n").await;
    c.expect(&["TTL", "m1"], ":-1\r\n").await;
    c.expect(&["TTL", "nope"], ":-2\r\n").await;
    c.expect(&["GETEX", "m1", "PX", "1500"], "$1\r\n1\r\n")
        .await;
    c.expect(&["PTTL", "m1"], ":1500\r\n").await;
    server.clock.advance(Duration::from_millis(1500));
    c.expect(&["GET", "m1"], "$-1\r\n").await;
    c.expect(&["GETDEL", "m2"], "$1\r\n2\r\n").await;
    c.expect(&["SET", "past", "v", "PXAT", "1"], "+OK\r\n")
        .await;
    c.expect(&["EXISTS", "past"], ":0\r\n").await;
    c.expect(&["SET", "m3", "x"], "+OK\r\n").await;
    c.expect(&["EXPIRE", "m3", "-1"], ":1\r\n").await;
    c.expect(&["TYPE", "m3"], "+none\r\n").await;
    c.expect(&["TYPE", "a"], "+string\r\n").await;
    c.expect(&["DEL", "a", "a", "i"], ":2\r\n").await;
    c.expect(&["SELECT", "0"], "+OK\r\n").await;
    c.expect(&["SELECT", "1"], "-ERR DB index is out of range\r\n")
        .await;
    c.expect(&["FLUSHDB"], "-ERR FLUSHDB is disabled on this server: it deletes every key of the cluster; start cache-node with --resp-allow-flush to allow it\r\n").await;
    c.expect(
        &["NOSUCH", "a", "b"],
        "-ERR unknown command 'NOSUCH', with args beginning with: 'a' 'b' \r\n",
    )
    .await;
}

#[tokio::test]
async fn the_key_walk_and_resp3() {
    let server = Server::open().await;
    let mut c = server.connect().await;
    for i in 0..25 {
        c.expect(&["SET", &format!("user:{i}"), "v"], "+OK\r\n")
            .await;
    }
    c.expect(&["SET", "other", "v"], "+OK\r\n").await;
    c.expect(&["DBSIZE"], ":26\r\n").await;
    let keys = c.exchange(&request(&["KEYS", "user:1*"]), 0).await;
    assert!(keys.starts_with("*11\r\n"), "{keys}");
    let mut cursor = "0".to_string();
    let mut seen = 0;
    loop {
        let reply = c
            .exchange(
                &request(&["SCAN", &cursor, "MATCH", "user:*", "COUNT", "7"]),
                0,
            )
            .await;
        // A reply may arrive in pieces; read until the key list is complete.
        let mut reply = reply;
        loop {
            let lines: Vec<&str> = reply.split("\r\n").collect();
            if lines.len() > 4 {
                let count: usize = lines[3][1..].parse().expect("count");
                if lines.len() > 4 + 2 * count {
                    seen += count;
                    cursor = lines[2].to_string();
                    break;
                }
            }
            reply.push_str(&c.exchange(b"", 1).await);
        }
        if cursor == "0" {
            break;
        }
    }
    assert_eq!(seen, 25);
    c.expect(&["SCAN", "x"], "-ERR invalid cursor\r\n").await;
    let hello = c.exchange(&request(&["HELLO", "3"]), 0).await;
    assert!(
        hello.starts_with("%7\r\n$6\r\nserver\r\n$5\r\nredis\r\n"),
        "{hello}"
    );
    c.expect(&["GET", "nope"], "_\r\n").await;
    c.expect(
        &["CONFIG", "GET", "databases"],
        "%1\r\n$9\r\ndatabases\r\n$1\r\n1\r\n",
    )
    .await;
    c.expect(&["HELLO", "4"], "-NOPROTO unsupported protocol version\r\n")
        .await;
    c.expect(&["RESET"], "+RESET\r\n").await;
    c.expect(&["GET", "nope"], "$-1\r\n").await;
}

#[tokio::test]
async fn pipelined_commands_are_answered_in_order_in_one_write() {
    let server = Server::open().await;
    let mut c = server.connect().await;
    let mut pipeline = Vec::new();
    for _ in 0..100 {
        pipeline.extend(request(&["INCR", "counter"]));
        pipeline.extend(b"PING\r\n");
    }
    let expected: String = (1..=100).map(|i| format!(":{i}\r\n+PONG\r\n")).collect();
    let got = c.exchange(&pipeline, expected.len()).await;
    assert_eq!(got, expected);
}

#[tokio::test]
async fn authentication_with_the_cluster_token() {
    let settings = RespSettings {
        auth: Some(AuthToken::new("s3cret").expect("token")),
        allow_flush: true,
        ..RespSettings::default()
    };
    let server = Server::start(Limits::default(), u64::MAX, settings).await;
    let mut c = server.connect().await;
    c.expect(&["GET", "k"], "-NOAUTH Authentication required.\r\n")
        .await;
    c.expect(&["HELLO", "3"], "-NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time\r\n").await;
    c.expect(
        &["AUTH", "wrong"],
        "-WRONGPASS invalid username-password pair or user is disabled.\r\n",
    )
    .await;
    c.expect(
        &["AUTH", "admin", "s3cret"],
        "-WRONGPASS invalid username-password pair or user is disabled.\r\n",
    )
    .await;
    c.expect(&["AUTH", "s3cret"], "+OK\r\n").await;
    c.expect(&["SET", "k", "v"], "+OK\r\n").await;
    c.expect(&["RESET"], "+RESET\r\n").await;
    c.expect(&["GET", "k"], "-NOAUTH Authentication required.\r\n")
        .await;
    c.expect(&["AUTH", "default", "s3cret"], "+OK\r\n").await;
    c.expect(&["FLUSHALL"], "+OK\r\n").await;
    c.expect(&["DBSIZE"], ":0\r\n").await;
    let mut other = server.connect().await;
    let hello = other
        .exchange(
            &request(&["HELLO", "2", "AUTH", "default", "s3cret", "SETNAME", "app"]),
            0,
        )
        .await;
    assert!(hello.starts_with("*14\r\n"), "{hello}");
    other.expect(&["CLIENT", "GETNAME"], "$3\r\napp\r\n").await;
    let open = Server::open().await;
    let mut c = open.connect().await;
    c.expect(&["AUTH", "x"], "-ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?\r\n").await;
    c.expect(&["AUTH", "default", "anything"], "+OK\r\n").await;
}

#[tokio::test]
async fn transactions_abort_when_a_watched_key_changes() {
    let server = Server::open().await;
    let mut c = server.connect().await;
    let mut other = server.connect().await;
    c.expect(&["SET", "w", "1"], "+OK\r\n").await;
    c.expect(&["WATCH", "w", "absent"], "+OK\r\n").await;
    c.expect(&["MULTI"], "+OK\r\n").await;
    c.expect(&["INCR", "w"], "+QUEUED\r\n").await;
    c.expect(&["MULTI"], "-ERR MULTI calls can not be nested\r\n")
        .await;
    c.expect(&["EXEC"], "*1\r\n:2\r\n").await;
    c.expect(&["WATCH", "w"], "+OK\r\n").await;
    other.expect(&["SET", "w", "9"], "+OK\r\n").await;
    c.expect(&["MULTI"], "+OK\r\n").await;
    c.expect(&["INCR", "w"], "+QUEUED\r\n").await;
    c.expect(&["EXEC"], "*-1\r\n").await;
    c.expect(&["GET", "w"], "$1\r\n9\r\n").await;
    c.expect(&["WATCH", "absent"], "+OK\r\n").await;
    other.expect(&["SET", "absent", "now"], "+OK\r\n").await;
    c.expect(&["MULTI"], "+OK\r\n").await;
    c.expect(&["GET", "absent"], "+QUEUED\r\n").await;
    c.expect(&["EXEC"], "*-1\r\n").await;
    c.expect(&["MULTI"], "+OK\r\n").await;
    c.expect(
        &["GET"],
        "-ERR wrong number of arguments for 'get' command\r\n",
    )
    .await;
    c.expect(&["SET", "x", "1"], "+QUEUED\r\n").await;
    c.expect(
        &["EXEC"],
        "-EXECABORT Transaction discarded because of previous errors.\r\n",
    )
    .await;
    c.expect(&["GET", "x"], "$-1\r\n").await;
    c.expect(&["EXEC"], "-ERR EXEC without MULTI\r\n").await;
    c.expect(&["DISCARD"], "-ERR DISCARD without MULTI\r\n")
        .await;
}

#[tokio::test]
async fn the_lifetime_policy_and_memory_limit_apply_as_over_http() {
    let limits = Limits {
        max_ttl: Some(Duration::from_secs(3600)),
        max_value_bytes: 64,
        ..Limits::default()
    };
    let server = Server::start(limits, 4096, RespSettings::default()).await;
    let mut c = server.connect().await;
    c.expect(&["SET", "k", "v"], "-ERR a lifetime is required (the maximum TTL is 3600s and there is no default): add EX or PX (or use SETEX)\r\n").await;
    c.expect(
        &["SET", "k", "v", "EX", "3601"],
        "-ERR the lifetime of 3601s exceeds the maximum TTL of 3600s; ask for less\r\n",
    )
    .await;
    c.expect(&["SET", "k", "v", "EX", "60"], "+OK\r\n").await;
    c.expect(
        &["PERSIST", "k"],
        "-ERR PERSIST is refused: the maximum TTL is 3600s, so every key must expire\r\n",
    )
    .await;
    c.expect(&["INCR", "k2"], "-ERR a lifetime is required (the maximum TTL is 3600s and there is no default): add EX or PX (or use SETEX)\r\n").await;
    let big = "x".repeat(65);
    c.expect(&["SET", "b", &big, "EX", "60"], "-ERR string exceeds maximum allowed size (the value would be 65 bytes; --max-value-bytes is 64)\r\n").await;
    let value = "y".repeat(64);
    let mut refused = false;
    for i in 0..100 {
        let reply = c
            .exchange(
                &request(&["SET", &format!("fill{i}"), &value, "EX", "60"]),
                5,
            )
            .await;
        if reply.starts_with("-OOM command not allowed when used memory > 'maxmemory'.\r\n") {
            refused = true;
            break;
        }
        assert_eq!(reply, "+OK\r\n");
    }
    assert!(refused, "a full store under noeviction refuses with -OOM");
    c.expect(&["GET", "k"], "$1\r\nv\r\n").await;
}

#[tokio::test]
async fn a_bad_frame_closes_only_its_connection() {
    let server = Server::open().await;
    let mut good = server.connect().await;
    good.expect(&["SET", "k", "v"], "+OK\r\n").await;
    let mut bad = server.connect().await;
    let reply = bad.exchange(b"*1\r\n$99999999999\r\n", 1).await;
    assert_eq!(reply, "-ERR Protocol error: invalid bulk length\r\n");
    assert!(bad.closed().await);
    let mut bad = server.connect().await;
    let reply = bad.exchange(b"*2\r\n$3\r\nGET\r\n:1\r\n", 1).await;
    assert_eq!(reply, "-ERR Protocol error: expected '$', got ':'\r\n");
    assert!(bad.closed().await);
    good.expect(&["GET", "k"], "$1\r\nv\r\n").await;
    good.expect(&["QUIT"], "+OK\r\n").await;
    assert!(good.closed().await);
}

#[tokio::test]
async fn shutdown_answers_what_was_read_and_closes_every_connection() {
    let mut server = Server::open().await;
    let mut idle = server.connect().await;
    idle.expect(&["PING"], "+PONG\r\n").await;
    server.shutdown().await;
    assert!(idle.closed().await);
    assert!(
        TcpStream::connect(server.address).await.is_err(),
        "the listener is closed"
    );
}

#[tokio::test]
async fn an_entry_written_over_resp_is_the_same_entry_over_http_and_back() {
    let server = Server::open().await;
    let state = Arc::new(AppState::new(server.cache.clone()));
    let mut c = server.connect().await;
    c.expect(&["SET", "shared", "over-resp", "EX", "90"], "+OK\r\n")
        .await;
    let hit = server.cache.store().get(b"shared").expect("stored");
    let response = app(state.clone())
        .oneshot(
            Request::builder()
                .uri("/v1/keys/shared")
                .body(Body::empty())
                .expect("request"),
        )
        .await
        .expect("infallible");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["etag"],
        format!("\"{}\"", hit.version).as_str()
    );
    assert_eq!(response.headers()["tidecache-ttl"], "90");
    c.expect(&["PTTL", "shared"], ":90000\r\n").await;
    let response = app(state)
        .oneshot(
            Request::builder()
                .method(Method::PUT)
                .uri("/v1/keys/from-http?ttl=120s")
                .body(Body::from("over-http"))
                .expect("request"),
        )
        .await
        .expect("infallible");
    assert_eq!(response.status(), StatusCode::CREATED);
    let etag = response.headers()["etag"]
        .to_str()
        .expect("etag")
        .to_string();
    c.expect(&["GET", "from-http"], "$9\r\nover-http\r\n").await;
    c.expect(&["TTL", "from-http"], ":120\r\n").await;
    let hit = server.cache.store().get(b"from-http").expect("stored");
    assert_eq!(etag, format!("\"{}\"", hit.version));
    assert_eq!(
        hit.expires_at,
        Some(Timestamp::from_millis(START + 120_000))
    );
}

// ---- Keyspace notifications ----

#[tokio::test]
async fn subscribers_hear_of_expired_keys_as_redis_announces_them() {
    let settings = RespSettings {
        notify: super::NotifyFlags::parse(b"KEx").expect("flags"),
        ..RespSettings::default()
    };
    let server = Server::start(Limits::default(), u64::MAX, settings).await;
    let mut writer = server.connect().await;
    let mut events = server.connect().await;
    events
        .expect(
            &["SUBSCRIBE", "__keyevent@0__:expired"],
            "*3\r\n$9\r\nsubscribe\r\n$22\r\n__keyevent@0__:expired\r\n:1\r\n",
        )
        .await;
    events
        .expect(
            &["PSUBSCRIBE", "__keyspace@0__:user:*"],
            "*3\r\n$10\r\npsubscribe\r\n$21\r\n__keyspace@0__:user:*\r\n:2\r\n",
        )
        .await;
    events
        .expect(
            &["GET", "k"],
            "-ERR Can't execute 'get': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / \
             RESET are allowed in this context\r\n",
        )
        .await;
    events
        .expect(&["PING"], "*2\r\n$4\r\npong\r\n$0\r\n\r\n")
        .await;
    writer
        .expect(&["SET", "user:1", "v", "PX", "500"], "+OK\r\n")
        .await;
    server.clock.advance(Duration::from_secs(61));
    server.cache.store().evict_expired();
    // As in Redis: the key's own channel first (`K`), then the event's (`E`).
    let expected = "*4\r\n$8\r\npmessage\r\n$21\r\n__keyspace@0__:user:*\r\n\
                    $21\r\n__keyspace@0__:user:1\r\n$7\r\nexpired\r\n\
                    *3\r\n$7\r\nmessage\r\n$22\r\n__keyevent@0__:expired\r\n$6\r\nuser:1\r\n";
    assert_eq!(events.exchange(b"", expected.len()).await, expected);
    events
        .expect(
            &["UNSUBSCRIBE"],
            "*3\r\n$11\r\nunsubscribe\r\n$22\r\n__keyevent@0__:expired\r\n:1\r\n",
        )
        .await;
    events
        .expect(
            &["PUNSUBSCRIBE"],
            "*3\r\n$12\r\npunsubscribe\r\n$21\r\n__keyspace@0__:user:*\r\n:0\r\n",
        )
        .await;
    events.expect(&["GET", "user:1"], "$-1\r\n").await;
}

#[tokio::test]
async fn notifications_are_configured_as_redis_configures_them() {
    let server = Server::open().await;
    let mut c = server.connect().await;
    c.expect(
        &["CONFIG", "GET", "notify-keyspace-events"],
        "*2\r\n$22\r\nnotify-keyspace-events\r\n$0\r\n\r\n",
    )
    .await;
    c.expect(
        &["CONFIG", "SET", "notify-keyspace-events", "Eq"],
        "-ERR CONFIG SET failed (possibly related to argument 'notify-keyspace-events') - \
         Invalid event class character. Use 'Ag$lshzxeKEtmdn'.\r\n",
    )
    .await;
    c.expect(
        &["CONFIG", "SET", "maxmemory", "1gb"],
        "-ERR CONFIG SET of 'maxmemory' is not supported: cache-node is configured by its \
         flags; only notify-keyspace-events can be set at run time\r\n",
    )
    .await;
    c.expect(
        &["CONFIG", "SET", "notify-keyspace-events", "KEA"],
        "+OK\r\n",
    )
    .await;
    c.expect(
        &["CONFIG", "GET", "notify-keyspace-events"],
        "*2\r\n$22\r\nnotify-keyspace-events\r\n$3\r\nAKE\r\n",
    )
    .await;
    // RESP3: pushes, and every command stays allowed while subscribed.
    c.exchange(&request(&["HELLO", "3"]), 1).await;
    c.expect(
        &["SUBSCRIBE", "__keyevent@0__:evicted"],
        ">3\r\n$9\r\nsubscribe\r\n$22\r\n__keyevent@0__:evicted\r\n:1\r\n",
    )
    .await;
    c.expect(&["GET", "k"], "_\r\n").await;
    c.expect(&["RESET"], "+RESET\r\n").await;
    c.expect(
        &["UNSUBSCRIBE"],
        "*3\r\n$11\r\nunsubscribe\r\n$-1\r\n:0\r\n",
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// Replies checked against redis-server 7.0 (`tests/resp_vs_redis.rs` found these; each test
// pins what Redis answers where cache-node answered differently, or where the comparison
// looked like a difference).
// ---------------------------------------------------------------------------------------------

/// The sequence the comparison flagged (`SETEX k 100 v` then `EXPIRE k 100 GT`) is decided by
/// the millisecond: the same amount a moment later is a later deadline only once the clock
/// has moved. A key without expiry counts as never expiring, so `GT` never sets one and
/// `LT` always does.
#[tokio::test]
async fn expire_gt_and_lt_compare_deadlines_and_count_no_expiry_as_never() {
    let server = Server::open().await;
    let mut c = server.connect().await;
    c.expect(&["SET", "k", "v"], "+OK\r\n").await;
    c.expect(&["EXPIRE", "k", "100", "GT"], ":0\r\n").await;
    c.expect(&["EXPIRE", "k", "-1", "GT"], ":0\r\n").await;
    c.expect(&["TTL", "k"], ":-1\r\n").await;
    c.expect(&["EXPIRE", "k", "100", "LT"], ":1\r\n").await;
    c.expect(&["TTL", "k"], ":100\r\n").await;
    c.expect(&["SETEX", "k", "100", "v"], "+OK\r\n").await;
    c.expect(&["EXPIRE", "k", "100", "GT"], ":0\r\n").await;
    c.expect(&["EXPIRE", "k", "100", "LT"], ":0\r\n").await;
    server.clock.advance(Duration::from_millis(1));
    c.expect(&["EXPIRE", "k", "100", "LT"], ":0\r\n").await;
    c.expect(&["EXPIRE", "k", "100", "GT"], ":1\r\n").await;
    c.expect(&["PTTL", "k"], ":100000\r\n").await;
    c.expect(&["PEXPIRE", "k", "99999", "LT"], ":1\r\n").await;
    c.expect(&["EXPIRE", "k", "-1", "GT"], ":0\r\n").await;
    c.expect(&["PERSIST", "k"], ":1\r\n").await;
    c.expect(&["EXPIRE", "k", "-1", "LT"], ":1\r\n").await;
    c.expect(&["EXISTS", "k"], ":0\r\n").await;
}

/// `SET`'s options are all read before the amount, as Redis reads them: an option may repeat
/// (the last amount counts), two different lifetimes may not, and a syntax error wins over a
/// bad amount.
#[tokio::test]
async fn set_reads_every_option_before_the_amount() {
    let server = Server::open().await;
    let mut c = server.connect().await;
    c.expect(
        &["SET", "k", "v", "EX", "0", "KEEPTTL"],
        "-ERR syntax error\r\n",
    )
    .await;
    c.expect(
        &["SET", "k", "v", "EX", "abc", "NX", "XX"],
        "-ERR syntax error\r\n",
    )
    .await;
    c.expect(
        &["SET", "k", "v", "EX", "-1", "BOGUS"],
        "-ERR syntax error\r\n",
    )
    .await;
    c.expect(
        &["SET", "k", "v", "EX", "10", "PX", "10"],
        "-ERR syntax error\r\n",
    )
    .await;
    c.expect(&["EXISTS", "k"], ":0\r\n").await;
    c.expect(&["SET", "k", "v", "EX", "0", "EX", "10"], "+OK\r\n")
        .await;
    c.expect(&["TTL", "k"], ":10\r\n").await;
    c.expect(
        &["SET", "k", "v", "PX", "100000", "PX", "200000"],
        "+OK\r\n",
    )
    .await;
    c.expect(&["PTTL", "k"], ":200000\r\n").await;
    c.expect(
        &["SET", "k", "v", "PX", "100000", "PX", "abc"],
        "-ERR value is not an integer or out of range\r\n",
    )
    .await;
    c.expect(&["SET", "k", "w", "KEEPTTL", "KEEPTTL"], "+OK\r\n")
        .await;
    c.expect(&["PTTL", "k"], ":200000\r\n").await;
    c.expect(&["SET", "k", "x", "NX", "NX"], "$-1\r\n").await;
    c.expect(&["SET", "k", "x", "XX", "GET", "GET"], "$1\r\nw\r\n")
        .await;
}

/// `GETEX` reads its options with `SET`'s parser: `PERSIST` and a timed option may repeat.
#[tokio::test]
async fn getex_lets_an_option_repeat() {
    let server = Server::open().await;
    let mut c = server.connect().await;
    c.expect(&["SET", "k", "v", "EX", "100"], "+OK\r\n").await;
    c.expect(&["GETEX", "k", "PERSIST", "PERSIST"], "$1\r\nv\r\n")
        .await;
    c.expect(&["TTL", "k"], ":-1\r\n").await;
    c.expect(&["GETEX", "k", "EX", "20", "EX", "30"], "$1\r\nv\r\n")
        .await;
    c.expect(&["TTL", "k"], ":30\r\n").await;
    c.expect(&["GETEX", "k", "EX", "0", "EX", "40"], "$1\r\nv\r\n")
        .await;
    c.expect(&["TTL", "k"], ":40\r\n").await;
    c.expect(
        &["GETEX", "k", "EX", "10", "EX", "abc"],
        "-ERR value is not an integer or out of range\r\n",
    )
    .await;
    c.expect(
        &["GETEX", "k", "EX", "abc", "PERSIST"],
        "-ERR syntax error\r\n",
    )
    .await;
    c.expect(
        &["GETEX", "k", "PERSIST", "EX", "10"],
        "-ERR syntax error\r\n",
    )
    .await;
    c.expect(&["GETEX", "nope", "EX", "abc"], "$-1\r\n").await;
}

/// `INCRBYFLOAT` prints as Redis' `%.17Lf` with trailing zeros trimmed: never more than 17
/// decimals, so a sum too small to show is `0`.
#[tokio::test]
async fn incrbyfloat_prints_at_most_17_decimals() {
    let server = Server::open().await;
    let mut c = server.connect().await;
    c.expect(&["INCRBYFLOAT", "a", "1e-20"], "$1\r\n0\r\n")
        .await;
    c.expect(&["GET", "a"], "$1\r\n0\r\n").await;
    c.expect(&["INCRBYFLOAT", "b", "-1e-20"], "$1\r\n0\r\n")
        .await;
    c.expect(
        &["INCRBYFLOAT", "c", "1.2345678901234567e-5"],
        "$19\r\n0.00001234567890123\r\n",
    )
    .await;
    c.expect(&["INCRBYFLOAT", "d", "1e15"], "$16\r\n1000000000000000\r\n")
        .await;
    c.expect(
        &["INCRBYFLOAT", "d", "0.5"],
        "$18\r\n1000000000000000.5\r\n",
    )
    .await;
    c.expect(&["INCRBYFLOAT", "e", "1.5"], "$3\r\n1.5\r\n")
        .await;
    c.expect(&["INCRBYFLOAT", "e", "-1.5"], "$1\r\n0\r\n").await;
}

// ---- WAIT ----

#[tokio::test]
async fn wait_on_a_node_without_peers_answers_at_once() {
    let server = Server::open().await;
    let mut c = server.connect().await;
    c.expect(&["WAIT", "0", "0"], ":0\r\n").await;
    c.expect(&["SET", "k", "v"], "+OK\r\n").await;
    // No peer can acknowledge: the count cannot grow, so even "no limit" returns.
    c.expect(&["WAIT", "1", "0"], ":0\r\n").await;
    c.expect(&["WAIT", "1", "-1"], "-ERR timeout is negative\r\n")
        .await;
    c.expect(
        &["WAIT", "1", "soon"],
        "-ERR timeout is not an integer or out of range\r\n",
    )
    .await;
    c.expect(
        &["WAIT", "x", "0"],
        "-ERR value is not an integer or out of range\r\n",
    )
    .await;
}

// ---- Runs of SETs in a pipeline ----

#[tokio::test]
async fn a_pipeline_of_sets_is_answered_as_one_set_after_another() {
    let limits = Limits {
        max_value_bytes: 8,
        ..Limits::default()
    };
    let server = Server::start(limits, u64::MAX, RespSettings::default()).await;
    let mut c = server.connect().await;
    let mut pipeline = Vec::new();
    for args in [
        &["SET", "a", "1"][..],
        &["SET", "", "x"],
        &["SET", "b", "far-too-long"],
        &["SET", "a", "2"],
        &["GET", "a"],
        &["SET", "c", "3"],
        &["SET", "c", "4"],
        &["SET", "d", "5", "NX"],
        &["SET", "e", "6"],
    ] {
        pipeline.extend(request(args));
    }
    let expected = "+OK\r\n\
                    -ERR the key is 0 bytes; keys must be 1 to 1024 bytes (--max-key-bytes)\r\n\
                    -ERR string exceeds maximum allowed size (the value would be 12 bytes; \
                    --max-value-bytes is 8)\r\n\
                    +OK\r\n$1\r\n2\r\n+OK\r\n+OK\r\n+OK\r\n+OK\r\n";
    assert_eq!(c.exchange(&pipeline, expected.len()).await, expected);
    c.expect(
        &["MGET", "a", "b", "c", "d", "e"],
        "*5\r\n$1\r\n2\r\n$-1\r\n$1\r\n4\r\n$1\r\n5\r\n$1\r\n6\r\n",
    )
    .await;
}

// ---- ASKING ----

/// `ASKING` sets the connection's flag for the next command only, whatever it is, or through
/// the transaction that next command opens, until `EXEC` or `DISCARD` (Redis' rule: a client
/// following `-ASK` with `ASKING` and a `MULTI` has the whole transaction served there).
/// Without `--resp-cluster-mode` it is refused as Redis refuses it.
#[tokio::test]
async fn asking_lasts_for_the_next_command_or_the_transaction_it_opens() {
    let settings = RespSettings {
        cluster_mode: true,
        ..RespSettings::default()
    };
    let server = Server::start(Limits::default(), u64::MAX, settings.clone()).await;
    let state = RespState::new(server.cache.clone(), settings, server.address);
    let registration = state.clients.register(server.address, server.address, -1);
    let mut session = super::connection::Session::new(registration.client.clone(), true);
    let mut run = async |args: &[&str]| {
        let args: Vec<bytes::Bytes> = args
            .iter()
            .map(|arg| bytes::Bytes::copy_from_slice(arg.as_bytes()))
            .collect();
        let mut out = bytes::BytesMut::new();
        let mut reply = super::reply::Reply::new(&mut out, super::reply::Protocol::Resp2);
        super::cmd::execute(&state, &mut session, &args, &mut reply).await;
        (String::from_utf8_lossy(&out).into_owned(), session.asking)
    };
    assert_eq!(run(&["ASKING"]).await, ("+OK\r\n".into(), true));
    assert_eq!(run(&["ASKING"]).await, ("+OK\r\n".into(), true));
    assert_eq!(run(&["GET", "k"]).await, ("$-1\r\n".into(), false));
    assert_eq!(run(&["ASKING"]).await, ("+OK\r\n".into(), true));
    assert!(!run(&["NOSUCHCOMMAND"]).await.1, "cleared by any command");
    assert_eq!(run(&["ASKING"]).await, ("+OK\r\n".into(), true));
    assert_eq!(run(&["MULTI"]).await, ("+OK\r\n".into(), true));
    assert_eq!(run(&["SET", "k", "v"]).await, ("+QUEUED\r\n".into(), true));
    assert_eq!(run(&["GET", "k"]).await, ("+QUEUED\r\n".into(), true));
    assert_eq!(
        run(&["EXEC"]).await,
        ("*2\r\n+OK\r\n$1\r\nv\r\n".into(), false)
    );

    let plain = Server::open().await;
    plain
        .connect()
        .await
        .expect(
            &["ASKING"],
            "-ERR This instance has cluster support disabled\r\n",
        )
        .await;
}
