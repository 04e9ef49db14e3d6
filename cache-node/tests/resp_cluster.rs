//! The Redis Cluster protocol on 3 real cache-node processes in partitioned mode
//! (`--mode=partitioned --replication-factor=2 --resp-cluster-mode`, each with `--peers`
//! listing all three): `CLUSTER SLOTS` covers every slot with two distinct nodes named by
//! their own RESP ports, a non-owner redirects with `-MOVED` to an owner that then answers,
//! multi-key commands and transactions across slots are refused with `-CROSSSLOT`, and
//! cluster-aware clients (redis-py's `RedisCluster`, redis-rs' cluster client) write and read
//! through a single startup node. A fourth node joins (`--peers-file`) while a cluster
//! client (redis-py's, and in a second test go-redis' `ClusterClient`) writes and reads every
//! key: the newcomer answers `-ASK` for the slots it owns but is still receiving, the node it
//! names serves them after `ASKING`, and the client reads every value it wrote throughout.

mod resp_support;

use std::collections::{BTreeSet, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cache_node_testkit::{Client, Cluster};
use http::Method;
use resp_support::{Conn, Value, python_with_redis_py, require};

/// 3 nodes, ready and done with the moves of their start: until a node holds all of a
/// partition it sends clients elsewhere with `-ASK`.
fn start() -> Cluster {
    let cluster = Cluster::builder(3)
        .resp()
        .flag("--mode=partitioned")
        .flag("--replication-factor=2")
        .flag("--resp-cluster-mode")
        .start();
    wait_settled(&cluster);
    cluster
}

/// Waits until every member places keys by the same membership and holds all the partitions
/// it holds any of (`/internal/v1/partitions`: nothing gaining or kept).
fn wait_settled(cluster: &Cluster) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let client = Client::default();
    let auth = cluster.peer_auth();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut fingerprints = Vec::new();
        let mut moving = Vec::new();
        for i in cluster.members() {
            let reply = runtime.block_on(client.send(
                Method::GET,
                cluster.address(i),
                "/internal/v1/partitions",
                &[("authorization", &auth)],
                "",
            ));
            let holdings: Option<serde_json::Value> = reply
                .ok()
                .and_then(|reply| serde_json::from_slice(&reply.body).ok());
            match holdings {
                Some(holdings) if holdings["complete"] == holdings["held"] => {
                    fingerprints.push(holdings["fingerprint"].clone());
                }
                _ => moving.push(i),
            }
        }
        fingerprints.dedup();
        if fingerprints.len() == 1 && moving.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "moves did not end in 60 s: nodes {moving:?} moving, {} fingerprints",
            fingerprints.len()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn ok() -> Value {
    Value::Simple("OK".into())
}

fn bulk(text: &str) -> Value {
    Value::Bulk(text.as_bytes().to_vec())
}

fn text(value: &Value) -> String {
    match value {
        Value::Bulk(bytes) => String::from_utf8_lossy(bytes).into_owned(),
        Value::Verbatim(text) | Value::Simple(text) => text.clone(),
        other => panic!("not a string: {other:?}"),
    }
}

fn integer(value: &Value) -> i64 {
    match value {
        Value::Integer(n) => *n,
        other => panic!("not an integer: {other:?}"),
    }
}

fn items(value: &Value) -> &[Value] {
    match value {
        Value::Array(items) => items,
        other => panic!("not an array: {other:?}"),
    }
}

/// A slot range of `CLUSTER SLOTS`: first and last slot, and the owners' RESP ports, the
/// primary first.
struct Range {
    first: u16,
    last: u16,
    ports: Vec<u16>,
}

/// `CLUSTER SLOTS` on `conn`, checking each owner's host and that its id is the one the
/// node of its port answers `CLUSTER MYID` with (`ids`: RESP port to id).
fn slots(conn: &mut Conn, ids: &HashMap<u16, String>) -> Vec<Range> {
    let reply = conn.cmd(&["CLUSTER", "SLOTS"]);
    items(&reply)
        .iter()
        .map(|range| {
            let [first, last, owners @ ..] = items(range) else {
                panic!("a slot range: {range:?}");
            };
            let ports = owners
                .iter()
                .map(|owner| {
                    let [host, port, id, _metadata] = items(owner) else {
                        panic!("an owner: {owner:?}");
                    };
                    assert_eq!(text(host), "127.0.0.1");
                    let port = u16::try_from(integer(port)).expect("a port");
                    assert_eq!(
                        ids.get(&port),
                        Some(&text(id)),
                        "the id of the node on {port}"
                    );
                    port
                })
                .collect();
            Range {
                first: u16::try_from(integer(first)).expect("a slot"),
                last: u16::try_from(integer(last)).expect("a slot"),
                ports,
            }
        })
        .collect()
}

/// Every node's RESP port with its `CLUSTER MYID`.
fn node_ids(cluster: &Cluster) -> HashMap<u16, String> {
    (0..3)
        .map(|i| {
            let port = cluster.resp_port(i);
            let id = text(&Conn::new(port).cmd(&["CLUSTER", "MYID"]));
            assert_eq!(id.len(), 40, "{id}");
            assert!(
                id.bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
            );
            (port, id)
        })
        .collect()
}

/// `CLUSTER KEYSLOT key`.
fn keyslot(conn: &mut Conn, key: &str) -> u16 {
    u16::try_from(integer(&conn.cmd(&["CLUSTER", "KEYSLOT", key]))).expect("a slot")
}

/// The owners' RESP ports of `slot`, the primary first.
fn owners(ranges: &[Range], slot: u16) -> &[u16] {
    let range = ranges
        .iter()
        .find(|range| range.first <= slot && slot <= range.last)
        .expect("every slot is in a range");
    &range.ports
}

/// `MOVED <slot> <host>:<port>` as (slot, port).
fn moved(reply: &Value) -> Option<(u16, u16)> {
    let Value::Error(error) = reply else {
        return None;
    };
    let rest = error.strip_prefix("MOVED ")?;
    let (slot, address) = rest.split_once(' ')?;
    let port = address.strip_prefix("127.0.0.1:")?;
    Some((slot.parse().ok()?, port.parse().ok()?))
}

#[test]
fn cluster_slots_moved_and_crossslot_on_three_nodes() {
    let cluster = start();
    let ids = node_ids(&cluster);
    assert_eq!(
        ids.values().collect::<BTreeSet<_>>().len(),
        3,
        "distinct ids"
    );
    let resp_ports: BTreeSet<u16> = ids.keys().copied().collect();

    // (a) Every node describes the same topology: every slot once, two distinct nodes per
    // range, named by their own RESP ports.
    let ranges = slots(&mut Conn::new(cluster.resp_port(0)), &ids);
    for i in 1..3 {
        let theirs = slots(&mut Conn::new(cluster.resp_port(i)), &ids);
        let same = theirs.len() == ranges.len()
            && theirs
                .iter()
                .zip(&ranges)
                .all(|(a, b)| (a.first, a.last, &a.ports) == (b.first, b.last, &b.ports));
        assert!(same, "node {i} describes another topology");
    }
    let mut next = 0;
    for range in &ranges {
        assert_eq!(range.first, next, "ranges are contiguous");
        next = range.last + 1;
        assert_eq!(range.ports.len(), 2);
        assert_ne!(range.ports[0], range.ports[1], "two distinct owners");
        assert!(range.ports.iter().all(|port| resp_ports.contains(port)));
    }
    assert_eq!(next, 16_384, "every slot is covered");
    let primaries: BTreeSet<u16> = ranges.iter().map(|range| range.ports[0]).collect();
    assert_eq!(
        primaries, resp_ports,
        "every node is the primary of some slots"
    );

    let mut first = Conn::new(cluster.resp_port(0));
    let info = text(&first.cmd(&["CLUSTER", "INFO"]));
    assert!(info.starts_with("cluster_state:ok\r\n"), "{info}");
    assert!(info.contains("\r\ncluster_known_nodes:3\r\n"), "{info}");
    assert!(text(&first.cmd(&["INFO", "cluster"])).contains("cluster_enabled:1"));
    let nodes = text(&first.cmd(&["CLUSTER", "NODES"]));
    assert_eq!(nodes.lines().count(), 3, "{nodes}");
    assert_eq!(
        nodes.lines().filter(|line| line.contains("myself")).count(),
        1,
        "{nodes}"
    );

    // (b) A key node 0 does not own: -MOVED to its primary, which answers, and the write
    // reaches the second owner, which serves it too.
    let (key, slot) = (0..)
        .map(|n| format!("user:{n}"))
        .map(|key| {
            let slot = keyslot(&mut first, &key);
            (key, slot)
        })
        .find(|(_, slot)| !owners(&ranges, *slot).contains(&cluster.resp_port(0)))
        .expect("node 0 does not own every slot");
    let reply = first.cmd(&["GET", &key]);
    let primary = owners(&ranges, slot)[0];
    assert_eq!(moved(&reply), Some((slot, primary)), "{reply:?}");
    assert_eq!(
        moved(&first.cmd(&["SET", &key, "v"])),
        Some((slot, primary))
    );
    let mut owner = Conn::new(primary);
    assert_eq!(owner.cmd(&["GET", &key]), Value::Null);
    assert_eq!(owner.cmd(&["SET", &key, "ada"]), ok());
    assert_eq!(owner.cmd(&["GET", &key]), bulk("ada"));
    let mut replica = Conn::new(owners(&ranges, slot)[1]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while replica.cmd(&["GET", &key]) != bulk("ada") {
        assert!(
            Instant::now() < deadline,
            "the write did not reach the second owner"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(replica.cmd(&["READONLY"]), ok());
    assert!(text(&replica.cmd(&["CLIENT", "INFO"])).contains(" flags=r "));
    assert_eq!(replica.cmd(&["READWRITE"]), ok());
    assert_eq!(
        integer(&owner.cmd(&["CLUSTER", "COUNTKEYSINSLOT", &slot.to_string()])),
        1
    );

    // (c) Keys in different slots: -CROSSSLOT, on any node, before any redirection; a hash
    // tag puts them in one slot.
    let crossslot = Value::Error("CROSSSLOT Keys in request don't hash to the same slot".into());
    for i in 0..3 {
        let mut conn = Conn::new(cluster.resp_port(i));
        assert_eq!(conn.cmd(&["MSET", "a", "1", "b", "2"]), crossslot);
        assert_eq!(conn.cmd(&["MGET", "a", "b"]), crossslot);
        assert_eq!(conn.cmd(&["DEL", "a", "b"]), crossslot);
        assert_eq!(conn.cmd(&["WATCH", "a", "b"]), crossslot);
    }
    let tagged = keyslot(&mut first, "{order:7}");
    let mut tag_owner = Conn::new(owners(&ranges, tagged)[0]);
    assert_eq!(
        tag_owner.cmd(&["MSET", "{order:7}a", "1", "{order:7}b", "2"]),
        ok()
    );
    assert_eq!(
        tag_owner.cmd(&["MGET", "{order:7}a", "{order:7}b"]),
        Value::Array(vec![bulk("1"), bulk("2")])
    );
    // A transaction over two slots the node owns: queued, then refused and discarded at EXEC.
    let own = cluster.resp_port(0);
    let mut probe = Conn::new(own);
    let mut owned = (0..).map(|n| format!("tx:{n}")).filter_map(|key| {
        let slot = keyslot(&mut probe, &key);
        owners(&ranges, slot).contains(&own).then_some((key, slot))
    });
    let (one, one_slot) = owned.next().expect("node 0 owns some slots");
    let (two, _) = owned
        .find(|(_, slot)| *slot != one_slot)
        .expect("node 0 owns more than one slot");
    assert_eq!(first.cmd(&["MULTI"]), ok());
    assert_eq!(
        first.cmd(&["SET", &one, "1"]),
        Value::Simple("QUEUED".into())
    );
    assert_eq!(
        first.cmd(&["SET", &two, "1"]),
        Value::Simple("QUEUED".into())
    );
    assert_eq!(first.cmd(&["EXEC"]), crossslot);
    assert_eq!(
        first.cmd(&["EXEC"]),
        Value::Error("ERR EXEC without MULTI".into())
    );
    assert_eq!(first.cmd(&["EXISTS", &one]), Value::Integer(0));
    // A queued command for another node's slot dooms the transaction, as in Redis.
    assert_eq!(first.cmd(&["MULTI"]), ok());
    assert!(moved(&first.cmd(&["GET", &key])).is_some());
    assert_eq!(
        first.cmd(&["EXEC"]),
        Value::Error("EXECABORT Transaction discarded because of previous errors.".into())
    );
}

#[test]
fn redis_py_cluster_client_writes_and_reads_through_one_startup_node() {
    let python = python_with_redis_py();
    let cluster = start();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/resp/cluster.py");
    let output = Command::new(python)
        .arg(script)
        .arg(cluster.resp_port(1).to_string())
        .output()
        .expect("the redis-py cluster scenario starts");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("scenario passed"),
        "the redis-py cluster scenario failed ({}):\n{stdout}\n{}\nnode 1's log:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr),
        cluster.log(1)
    );
}

/// `ASK <slot> <host>:<port>` as (slot, port).
fn ask(reply: &Value) -> Option<(u16, u16)> {
    let Value::Error(error) = reply else {
        return None;
    };
    let rest = error.strip_prefix("ASK ")?;
    let (slot, address) = rest.split_once(' ')?;
    let port = address.strip_prefix("127.0.0.1:")?;
    Some((slot.parse().ok()?, port.parse().ok()?))
}

/// How many keys the cluster client rewrites and reads back in each round of the move test.
const MOVE_KEYS: usize = 100;

#[test]
fn redis_py_reads_and_writes_every_key_through_asks_while_a_node_joins() {
    let mut client = Command::new(python_with_redis_py());
    client.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/resp/cluster.py"));
    every_key_through_asks_while_a_node_joins("redis-py", client);
}

#[test]
fn go_redis_reads_and_writes_every_key_through_asks_while_a_node_joins() {
    require(
        "go",
        "put Go 1.26 or newer on PATH (Debian's golang-go is older; CI machines have it in /usr/local/go/bin)",
    );
    let mut client = Command::new("go");
    client
        .args(["run", "."])
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/resp/go"))
        .env("GOFLAGS", "-mod=readonly");
    every_key_through_asks_while_a_node_joins("go-redis", client);
}

/// A cluster client (`client`, which takes `moves PORT KEYS`) rewrites and reads back every
/// key round after round while a fourth node joins; the newcomer answers `-ASK` for the
/// slots it owns but is still receiving, and the client follows at least one.
fn every_key_through_asks_while_a_node_joins(name: &str, mut client: Command) {
    let mut cluster = Cluster::builder(4)
        .resp()
        .dynamic()
        .members(3)
        .flag("--mode=partitioned")
        .flag("--replication-factor=2")
        .flag("--resp-cluster-mode")
        .start();
    wait_settled(&cluster);
    let mut client = client
        .arg("moves")
        .arg(cluster.resp_port(0).to_string())
        .arg(MOVE_KEYS.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| panic!("the {name} move scenario does not start: {error}"));
    let mut lines = BufReader::new(client.stdout.take().expect("stdout")).lines();
    let first = lines.next().and_then(Result::ok);
    if first.as_deref() != Some("ready") {
        let output = client.wait_with_output().expect("the scenario ends");
        panic!(
            "the {name} scenario did not get ready ({first:?}):\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    // The newcomer: while it still receives a slot it owns, a GET there answers -ASK to a
    // node that holds the slot, which serves it after ASKING; never a value the client
    // did not write.
    cluster.join(3);
    let newcomer = cluster.resp_port(3);
    let mut conn = Conn::new(newcomer);
    let ids: HashMap<u16, String> = (0..4)
        .map(|i| {
            let port = cluster.resp_port(i);
            (port, text(&Conn::new(port).cmd(&["CLUSTER", "MYID"])))
        })
        .collect();
    let owned: Vec<String> = {
        let ranges = slots(&mut conn, &ids);
        (0..MOVE_KEYS)
            .map(|n| format!("key-{n}"))
            .filter(|key| owners(&ranges, keyslot(&mut conn, key)).contains(&newcomer))
            .collect()
    };
    assert!(!owned.is_empty(), "the newcomer owns none of the keys");
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut asked = None;
    'probe: while Instant::now() < deadline {
        for key in &owned {
            let reply = conn.cmd(&["GET", key]);
            if let Some((slot, port)) = ask(&reply) {
                asked = Some((key.clone(), slot, port));
                break 'probe;
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let (key, slot, port) = asked.expect("the newcomer never answered -ASK for a slot it gains");
    assert_eq!(slot, keyslot(&mut conn, &key));
    assert_ne!(port, newcomer, "-ASK names another node");
    let mut target = Conn::new(port);
    assert_eq!(target.cmd(&["ASKING"]), ok());
    let value = text(&target.cmd(&["GET", &key]));
    assert!(value.starts_with(&format!("{key} r")), "{key}: {value}");

    // Once the moves end the newcomer serves its slots itself, and the client, which ran all
    // along, checks a last round.
    wait_settled(&cluster);
    for key in &owned {
        let reply = conn.cmd(&["GET", key]);
        assert!(
            matches!(&reply, Value::Bulk(value) if value.starts_with(key.as_bytes())),
            "{key} on the newcomer after the move: {reply:?}"
        );
    }
    std::thread::sleep(Duration::from_millis(500));
    writeln!(client.stdin.as_mut().expect("stdin"), "stop").expect("tell the client to stop");
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let output = client.wait_with_output().expect("the scenario ends");
    let passed = rest
        .iter()
        .find(|line| line.starts_with("scenario passed"))
        .cloned()
        .unwrap_or_default();
    assert!(
        output.status.success() && !passed.is_empty() && !passed.contains(" 0 ASK followed"),
        "the {name} move scenario failed or followed no -ASK ({}):\n{}\n{}\nnewcomer's \
         log:\n{}",
        output.status,
        rest.join("\n"),
        String::from_utf8_lossy(&output.stderr),
        cluster.log(3)
    );
    eprintln!("{name}: {passed}");
}

#[test]
fn redis_rs_cluster_client_writes_and_reads_through_one_startup_node() {
    use redis::Commands;
    let cluster = start();
    let client = redis::cluster::ClusterClient::new(vec![format!(
        "redis://127.0.0.1:{}/",
        cluster.resp_port(2)
    )])
    .expect("a cluster client");
    let mut conn = client.get_connection().expect("the client reads the slots");
    for i in 0..1000 {
        let () = conn
            .set(format!("key-{i}"), format!("value {i}"))
            .unwrap_or_else(|error| panic!("SET key-{i}: {error}"));
    }
    for i in 0..1000 {
        let value: Option<String> = conn.get(format!("key-{i}")).expect("GET");
        assert_eq!(value, Some(format!("value {i}")), "key-{i}");
    }
    // Each node holds the keys it owns, R=2 of 3: about two thirds of them.
    for i in 0..3 {
        let keys = integer(&Conn::new(cluster.resp_port(i)).cmd(&["DBSIZE"]));
        assert!((450..=900).contains(&keys), "node {i} holds {keys} keys");
    }
}

#[test]
fn a_write_survives_the_kill_of_its_primary_on_the_second_owner() {
    let mut cluster = start();
    let ids = node_ids(&cluster);
    let ranges = slots(&mut Conn::new(cluster.resp_port(0)), &ids);
    let mut probe = Conn::new(cluster.resp_port(0));
    let slot = keyslot(&mut probe, "survivor");
    let (primary, second) = (owners(&ranges, slot)[0], owners(&ranges, slot)[1]);
    assert_eq!(Conn::new(primary).cmd(&["SET", "survivor", "kept"]), ok());
    let mut replica = Conn::new(second);
    let deadline = Instant::now() + Duration::from_secs(10);
    while replica.cmd(&["GET", "survivor"]) != bulk("kept") {
        assert!(
            Instant::now() < deadline,
            "not replicated to the second owner"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let index = (0..3)
        .find(|&i| cluster.resp_port(i) == primary)
        .expect("the primary is a node");
    cluster.kill(index);
    assert_eq!(Conn::new(second).cmd(&["GET", "survivor"]), bulk("kept"));
}

#[test]
fn without_cluster_mode_nodes_forward_and_still_refuse_crossslot() {
    let cluster = Cluster::builder(3)
        .resp()
        .flag("--mode=partitioned")
        .flag("--replication-factor=2")
        .start();
    let disabled = Value::Error("ERR This instance has cluster support disabled".into());
    let mut conn = Conn::new(cluster.resp_port(0));
    assert_eq!(conn.cmd(&["CLUSTER", "SLOTS"]), disabled);
    assert_eq!(conn.cmd(&["CLUSTER", "KEYSLOT", "foo"]), disabled);
    assert_eq!(conn.cmd(&["READONLY"]), disabled);
    assert_eq!(conn.cmd(&["ASKING"]), disabled);
    assert!(text(&conn.cmd(&["INFO", "cluster"])).contains("cluster_enabled:0"));
    assert_eq!(
        conn.cmd(&["MSET", "a", "1", "b", "2"]),
        Value::Error("CROSSSLOT Keys in request don't hash to the same slot".into())
    );
    // Every key is served through any node, whichever owns it.
    for n in 0..50 {
        let key = format!("user:{n}");
        assert_eq!(conn.cmd(&["SET", &key, "v"]), ok(), "{key}");
        assert_eq!(conn.cmd(&["GET", &key]), bulk("v"), "{key}");
    }
}
