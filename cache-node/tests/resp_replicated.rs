//! RESP on real `cache-node` processes, replicated: `WAIT` is the point after which a
//! connection's writes are readable on the peers, and it stops counting a killed peer
//! instead of blocking on it; keyspace notifications reach a subscriber on the node that
//! removed the key (a key replicated from another node, swept there at the schedule's next
//! minute boundary); evicted keys are announced and gone; and a subscriber flooded with far
//! more events than it reads is disconnected while the node goes on serving other clients.

mod resp_support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cache_node_testkit::Cluster;
use resp_support::{Conn, Server, Value};

/// How long an expired notification may take: the key's lifetime, then the wait for the
/// sweep at the next minute boundary (every minute is the default `--schedule`), then slack.
const EXPIRED_WITHIN: Duration = Duration::from_secs(70);

/// Events the store's announcement channel holds for a subscriber (`base/events.rs`).
const CHANNEL_EVENTS: i64 = 16_384;

fn ok() -> Value {
    Value::Simple("OK".into())
}

fn bulk(text: &str) -> Value {
    Value::Bulk(text.as_bytes().to_vec())
}

/// A RESP connection to node `i`.
fn connect(cluster: &Cluster, i: usize) -> Conn {
    Conn::new(cluster.resp_port(i))
}

/// `WAIT wanted timeout_ms`: the count it answered and how long it took.
fn wait(conn: &mut Conn, wanted: usize, timeout_ms: u64) -> (i64, Duration) {
    let started = Instant::now();
    let reply = conn.cmd(&["WAIT", &wanted.to_string(), &timeout_ms.to_string()]);
    let Value::Integer(count) = reply else {
        panic!("WAIT {wanted} {timeout_ms} answered {reply:?}");
    };
    (count, started.elapsed())
}

/// `DBSIZE`.
fn dbsize(conn: &mut Conn) -> i64 {
    match conn.cmd(&["DBSIZE"]) {
        Value::Integer(keys) => keys,
        other => panic!("DBSIZE answered {other:?}"),
    }
}

/// Subscribes `conn` (RESP2) to the channel `channel` and the pattern `pattern`, checking
/// Redis' confirmations.
fn subscribe(conn: &mut Conn, channel: &str, pattern: Option<&str>) {
    assert_eq!(
        conn.cmd(&["SUBSCRIBE", channel]),
        Value::Array(vec![bulk("subscribe"), bulk(channel), Value::Integer(1)])
    );
    if let Some(pattern) = pattern {
        assert_eq!(
            conn.cmd(&["PSUBSCRIBE", pattern]),
            Value::Array(vec![bulk("psubscribe"), bulk(pattern), Value::Integer(2)])
        );
    }
}

/// A pub/sub message as (channel, payload), whether it matched a channel (`message`) or a
/// pattern (`pmessage`).
fn message(reply: Value) -> (String, String) {
    let text = |part: &Value| match part {
        Value::Bulk(bytes) => String::from_utf8_lossy(bytes).into_owned(),
        other => panic!("a message part that is not a bulk string: {other:?}"),
    };
    match &reply {
        Value::Array(parts) => match parts.as_slice() {
            [kind, channel, payload] if *kind == bulk("message") => (text(channel), text(payload)),
            [kind, _pattern, channel, payload] if *kind == bulk("pmessage") => {
                (text(channel), text(payload))
            }
            _ => panic!("not a pub/sub message: {reply:?}"),
        },
        _ => panic!("not a pub/sub message: {reply:?}"),
    }
}

/// Nothing more was published to `subscriber`: a subscribed connection delivers what the
/// store announced before it reads the next command, so `PING`'s `pong` comes right after
/// the last notification.
fn assert_nothing_more(subscriber: &mut Conn) {
    assert_eq!(
        subscriber.cmd(&["PING"]),
        Value::Array(vec![bulk("pong"), bulk("")]),
        "an unexpected notification came before PING's answer"
    );
}

/// Milliseconds since the epoch.
fn unix_millis(at: SystemTime) -> u128 {
    at.duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_millis()
}

#[test]
fn wait_counts_the_peers_holding_every_write_and_stops_counting_a_killed_one() {
    // Anti-entropy is left for an hour, so that only replication (what WAIT waits for) can
    // have brought the writes to the peers when they are read.
    let mut cluster = Cluster::builder(3)
        .resp()
        .flag("--anti-entropy-interval=1h")
        .flag("--resp-allow-flush")
        .start();
    let mut idle = connect(&cluster, 0);
    assert_eq!(
        wait(&mut idle, 0, 0).0,
        2,
        "a connection that wrote nothing: every peer"
    );

    // A write of each kind: plain, batch, read-modify-write, expiry change, delete.
    let mut writer = connect(&cluster, 0);
    let keys: Vec<String> = (0..100).map(|i| format!("wait:{i}")).collect();
    for key in &keys {
        assert_eq!(writer.cmd(&["SET", key, &format!("value of {key}")]), ok());
    }
    assert_eq!(writer.cmd(&["MSET", "batch:a", "1", "batch:b", "2"]), ok());
    for count in 1..=3 {
        assert_eq!(writer.cmd(&["INCR", "counter"]), Value::Integer(count));
    }
    assert_eq!(writer.cmd(&["EXPIRE", "wait:0", "3600"]), Value::Integer(1));
    assert_eq!(writer.cmd(&["DEL", "wait:1"]), Value::Integer(1));
    let (count, took) = wait(&mut writer, 2, 2000);
    assert_eq!(count, 2, "both peers applied every write within 2 s");
    println!("WAIT 2 2000 on a healthy cluster: 2 in {took:?}");
    let values: Vec<Value> = keys[2..]
        .iter()
        .map(|key| bulk(&format!("value of {key}")))
        .collect();
    for node in 1..3 {
        let mut reader = connect(&cluster, node);
        let mut get = vec!["MGET"];
        get.extend(keys[2..].iter().map(String::as_str));
        assert_eq!(
            reader.cmd(&get),
            Value::Array(values.clone()),
            "node {node}"
        );
        assert_eq!(
            reader.cmd(&["MGET", "batch:a", "batch:b", "counter", "wait:1"]),
            Value::Array(vec![bulk("1"), bulk("2"), bulk("3"), Value::Null]),
            "node {node}: the batch, the increments and the delete"
        );
        match reader.cmd(&["TTL", "wait:0"]) {
            Value::Integer(ttl) => assert!((3000..=3600).contains(&ttl), "node {node}: {ttl}"),
            other => panic!("TTL on node {node}: {other:?}"),
        }
    }

    cluster.kill(2);
    // The first write after the kill: node 2's link retries, gives up and marks it down;
    // with no timeout WAIT still returns, with the one peer that holds the write.
    assert_eq!(writer.cmd(&["SET", "after-kill:1", "x"]), ok());
    let (count, took) = wait(&mut writer, 2, 0);
    assert_eq!(count, 1, "WAIT 2 0 with node 2 dead");
    assert!(
        took < Duration::from_secs(30),
        "WAIT 2 0 took {took:?}: it should end once node 2's link gives up"
    );
    println!("WAIT 2 0 with a peer just killed: 1 in {took:?}");
    assert_eq!(writer.cmd(&["SET", "after-kill:2", "y"]), ok());
    let (count, took) = wait(&mut writer, 2, 1000);
    assert_eq!(count, 1, "WAIT 2 1000 with node 2 dead");
    assert!(took < Duration::from_secs(10), "WAIT 2 1000 took {took:?}");
    println!("WAIT 2 1000 with a peer down: 1 in {took:?}");
    assert_eq!(writer.cmd(&["SET", "after-kill:3", "z"]), ok());
    let (count, took) = wait(&mut writer, 1, 1000);
    assert_eq!(count, 1, "WAIT 1 1000 with node 2 dead");
    assert!(
        took < Duration::from_millis(1000),
        "WAIT 1 1000 took {took:?}: it should return once node 1 applied the write, \
         before the timeout"
    );
    println!("WAIT 1 1000 with a peer down: 1 in {took:?}");
    let mut survivor = connect(&cluster, 1);
    assert_eq!(
        survivor.cmd(&["MGET", "after-kill:1", "after-kill:2", "after-kill:3"]),
        Value::Array(vec![bulk("x"), bulk("y"), bulk("z")]),
        "node 1 holds the writes WAIT counted it for"
    );

    // Every write command is counted: WAIT after it alone answers 1 (node 1 applied it),
    // where a command WAIT does not know about would leave "wrote nothing" and 2.
    let in_an_hour = unix_millis(SystemTime::now()) / 1000 + 3600;
    let (in_an_hour, in_an_hour_ms) = (in_an_hour.to_string(), format!("{in_an_hour}000"));
    let one = || Value::Integer(1);
    let writes: &[(&[&str], Value)] = &[
        (&["SET", "w", "1"], ok()),
        (&["SETNX", "nx", "1"], one()),
        (&["SETEX", "ex", "100", "1"], ok()),
        (&["PSETEX", "px", "100000", "1"], ok()),
        (&["GETSET", "w", "2"], bulk("1")),
        (&["GETEX", "w", "EX", "100"], bulk("2")),
        (&["GETDEL", "nx"], bulk("1")),
        (&["MSETNX", "m1", "1", "m2", "2"], one()),
        (&["APPEND", "w", "3"], Value::Integer(2)),
        (&["SETRANGE", "w", "0", "4"], Value::Integer(2)),
        (&["INCR", "n"], one()),
        (&["DECR", "n"], Value::Integer(0)),
        (&["INCRBY", "n", "5"], Value::Integer(5)),
        (&["DECRBY", "n", "2"], Value::Integer(3)),
        (&["INCRBYFLOAT", "f", "1.5"], bulk("1.5")),
        (&["EXPIRE", "w", "200"], one()),
        (&["PEXPIRE", "w", "300000"], one()),
        (&["EXPIREAT", "w", &in_an_hour], one()),
        (&["PEXPIREAT", "w", &in_an_hour_ms], one()),
        (&["PERSIST", "w"], one()),
        (&["DEL", "m1"], one()),
        (&["UNLINK", "m2"], one()),
    ];
    for (command, reply) in writes {
        assert_eq!(&writer.cmd(command), reply, "{command:?}");
        assert_eq!(
            wait(&mut writer, 2, 1000).0,
            1,
            "WAIT after {command:?} alone, with node 2 dead"
        );
    }
    for command in [&["MULTI"][..], &["SET", "t", "1"], &["INCR", "t"]] {
        writer.cmd(command);
    }
    assert_eq!(
        writer.cmd(&["EXEC"]),
        Value::Array(vec![ok(), Value::Integer(2)])
    );
    assert_eq!(wait(&mut writer, 2, 1000).0, 1, "WAIT after MULTI/EXEC");
    assert_eq!(
        survivor.cmd(&["MGET", "w", "n", "f", "t", "nx", "m1"]),
        Value::Array(vec![
            bulk("43"),
            bulk("3"),
            bulk("1.5"),
            bulk("2"),
            Value::Null,
            Value::Null
        ]),
        "node 1 applied what WAIT counted it for"
    );
    assert_eq!(writer.cmd(&["FLUSHALL"]), ok());
    assert_eq!(wait(&mut writer, 2, 1000).0, 1, "WAIT after FLUSHALL");
    assert_eq!(
        wait(&mut idle, 0, 0).0,
        1,
        "a connection that wrote nothing: the one peer still answering"
    );
}

#[test]
fn a_replicated_key_is_announced_expired_by_the_peer_that_sweeps_it() {
    let cluster = Cluster::builder(2)
        .resp()
        .flag("--resp-notify-keyspace-events=KEA")
        .start();
    let mut subscriber = connect(&cluster, 1);
    subscribe(
        &mut subscriber,
        "__keyevent@0__:expired",
        Some("__keyspace@0__:*"),
    );
    let mut writer = connect(&cluster, 0);
    let written = SystemTime::now();
    // 2 s rather than Redis-style milliseconds: a record that reaches a peer already
    // expired is dropped there (nothing to sweep, nothing announced), and on a loaded
    // machine replication may take a good part of a short lifetime.
    assert_eq!(
        writer.cmd(&["SET", "ephemeral", "gone soon", "PX", "2000"]),
        ok()
    );
    assert_eq!(writer.cmd(&["SET", "lasting", "here", "EX", "3600"]), ok());
    assert_eq!(wait(&mut writer, 1, 2000).0, 1, "node 1 holds both keys");

    let expected: BTreeSet<(String, String)> = [
        ("__keyevent@0__:expired", "ephemeral"),
        ("__keyspace@0__:ephemeral", "expired"),
    ]
    .into_iter()
    .map(|(channel, payload)| (channel.to_string(), payload.to_string()))
    .collect();
    let mut seen = BTreeSet::new();
    while seen != expected {
        let left = EXPIRED_WITHIN.saturating_sub(written.elapsed().unwrap_or_default());
        let Some(reply) = subscriber.read_within(left) else {
            panic!(
                "node 1 announced {seen:?} of {expected:?} in {EXPIRED_WITHIN:?}; its log:\n{}",
                cluster.log(1)
            );
        };
        let event = message(reply);
        assert!(
            expected.contains(&event),
            "unexpected notification {event:?}"
        );
        seen.insert(event);
    }
    let arrived = SystemTime::now();
    assert_nothing_more(&mut subscriber);
    // The sweep runs at the first minute boundary after the expiry, not at the expiry
    // (1 s of slack for the node's timer).
    let expiry = unix_millis(written) + 2000;
    let boundary = (expiry / 60_000 + 1) * 60_000;
    assert!(
        unix_millis(arrived) + 1000 >= boundary,
        "announced at {} ms, before the sweep at {boundary} ms",
        unix_millis(arrived)
    );
    println!(
        "expired announced on node 1 {:?} after the write, {} ms after the minute boundary",
        arrived.duration_since(written).unwrap_or_default(),
        unix_millis(arrived).saturating_sub(boundary)
    );
    let mut reader = connect(&cluster, 1);
    assert_eq!(
        reader.cmd(&["MGET", "ephemeral", "lasting"]),
        Value::Array(vec![Value::Null, bulk("here")])
    );
}

#[test]
fn keys_evicted_for_room_are_announced_and_gone() {
    let node = Server::cache_node(&["--max-memory=64KiB", "--resp-notify-keyspace-events=KEA"]);
    let mut subscriber = node.connect();
    subscribe(
        &mut subscriber,
        "__keyevent@0__:evicted",
        Some("__keyspace@0__:*"),
    );
    let mut writer = node.connect();
    let keys: Vec<String> = (0..2000).map(|i| format!("evict:{i:04}")).collect();
    let value = "v".repeat(100);
    for key in &keys {
        assert_eq!(writer.cmd(&["SET", key, &value]), ok(), "SET {key}");
    }
    let evicted = keys.len() as i64 - dbsize(&mut writer);
    assert!(
        evicted >= 1000,
        "64 KiB holds far fewer than 1000 of the 2000 keys, yet only {evicted} were evicted"
    );

    // Each eviction is announced on the event channel and on the key's channel.
    let (mut by_event, mut by_key) = (BTreeSet::new(), BTreeSet::new());
    for received in 0..2 * evicted {
        let Some(reply) = subscriber.read_within(Duration::from_secs(10)) else {
            panic!(
                "{received} of {} notifications for {evicted} evictions",
                2 * evicted
            );
        };
        let (channel, payload) = message(reply);
        if channel == "__keyevent@0__:evicted" {
            assert!(by_event.insert(payload.clone()), "{payload} twice");
        } else if let Some(key) = channel.strip_prefix("__keyspace@0__:")
            && payload == "evicted"
        {
            assert!(by_key.insert(key.to_string()), "{key} twice");
        } else {
            panic!("unexpected notification {channel} {payload}");
        }
    }
    assert_nothing_more(&mut subscriber);
    assert_eq!(by_event, by_key);

    // The announced keys are exactly the keys gone.
    let mut get = vec!["MGET"];
    get.extend(keys.iter().map(String::as_str));
    let Value::Array(values) = writer.cmd(&get) else {
        panic!("MGET");
    };
    let gone: BTreeSet<String> = keys
        .iter()
        .zip(&values)
        .filter(|(_, value)| **value == Value::Null)
        .map(|(key, _)| key.clone())
        .collect();
    assert_eq!(gone, by_event);
    let some_gone = by_event.iter().next().expect("evictions");
    assert_eq!(writer.cmd(&["GET", some_gone]), Value::Null);
}

#[test]
fn a_subscriber_far_behind_is_disconnected_while_the_node_serves_others() {
    // 1000-byte keys make each notification about 1 KiB, so that the socket buffers
    // (a few MiB on Linux for a reader that does not read) and the node's 1 MiB of output
    // hold a few thousand of them: the 50000 evictions leave the subscriber more than the
    // channel's 16384 events behind however the kernel sizes its buffers.
    const KEYS: usize = 50_000;
    const PIPELINE: usize = 500;
    let node = Server::cache_node(&["--max-memory=1MiB", "--resp-notify-keyspace-events=Ee"]);
    let mut laggard = node.connect();
    subscribe(&mut laggard, "__keyevent@0__:evicted", None);
    let started = Instant::now();
    let mut writer = node.connect();
    // The laggard reads nothing while the keys are written.
    for first in (0..KEYS).step_by(PIPELINE) {
        let keys: Vec<String> = (first..first + PIPELINE)
            .map(|i| format!("{i:0>1000}"))
            .collect();
        for key in &keys {
            writer.send(&[b"SET", key.as_bytes(), b"v"]);
        }
        for key in &keys {
            assert_eq!(writer.read(), ok(), "SET {}...", &key[990..]);
        }
    }
    let evicted = KEYS as i64 - dbsize(&mut writer);
    assert!(
        evicted > 2 * CHANNEL_EVENTS,
        "only {evicted} of {KEYS} keys evicted under 1 MiB"
    );
    println!(
        "{KEYS} writes, {evicted} evictions in {:?}",
        started.elapsed()
    );

    // The node serves a new client while the laggard's connection is stuck.
    let mut other = node.connect();
    assert_eq!(other.cmd(&["PING"]), Value::Simple("PONG".into()));
    assert_eq!(other.cmd(&["SET", "after-the-flood", "fine"]), ok());
    assert_eq!(other.cmd(&["GET", "after-the-flood"]), bulk("fine"));

    // The laggard reads what was sent before it fell behind, then the connection ends.
    let mut received = 0;
    while let Some(reply) = laggard.read_or_closed() {
        let (channel, _) = message(reply);
        assert_eq!(channel, "__keyevent@0__:evicted");
        received += 1;
    }
    println!("the laggard got {received} of {evicted} notifications before it was cut off");
    assert!(
        received < evicted - CHANNEL_EVENTS,
        "the laggard got {received} of {evicted} notifications: it was never behind"
    );
    let log = node.log();
    assert!(
        log.contains("fell too many keyspace notifications behind"),
        "the node did not log why it closed the subscriber:\n{log}"
    );
    assert_eq!(
        writer.cmd(&["GET", "after-the-flood"]),
        bulk("fine"),
        "the writer's connection outlives the laggard's"
    );
}
