//! Two cache-node processes writing to the same data directory at once (each into its own
//! subdirectories), killed, then both restarted: each loads the other's entries, the newest
//! version of every key wins, and deleted keys stay deleted.

mod persist_support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use persist_support::{Client, Server};

/// Client threads; each owns a set of keys and sends every operation to a random node.
const THREADS: usize = 2;
const KEYS_PER_THREAD: usize = 30;
const OPS_PER_THREAD: usize = 300;
/// Two operations on one key are spaced by at least this much, so that their versions (node
/// clocks in microseconds, without replication to merge them) order them as real time does.
const SPACING: Duration = Duration::from_millis(3);

/// The expected state of a key: its value and ETag, or absent.
type Expected = Option<(String, String)>;

/// A tiny deterministic generator.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, bound: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((self.0 >> 33) % bound as u64) as usize
    }
}

/// Runs one thread's operations; returns each key's expected state.
fn operate(thread: usize, nodes: [std::net::SocketAddr; 2]) -> HashMap<String, Expected> {
    let mut clients = nodes.map(Client::new);
    let mut rng = Lcg(thread as u64 + 7);
    let mut expected: HashMap<String, Expected> = HashMap::new();
    // Which node holds each key's latest value: a node can only delete what it has.
    let mut holder: HashMap<String, usize> = HashMap::new();
    let mut last_op: HashMap<String, Instant> = HashMap::new();
    for seq in 0..OPS_PER_THREAD {
        let key = format!("t{thread}-k{}", rng.next(KEYS_PER_THREAD));
        if let Some(since) = last_op.get(&key) {
            std::thread::sleep(SPACING.saturating_sub(since.elapsed()));
        }
        let delete = holder.contains_key(&key) && rng.next(4) == 0;
        if delete {
            let node = holder.remove(&key).expect("held");
            let reply = clients[node]
                .request("DELETE", &format!("/v1/keys/{key}"), b"")
                .expect("DELETE");
            assert_eq!(reply.status, 204, "DELETE {key} on node {node}");
            expected.insert(key.clone(), None);
        } else {
            let node = rng.next(2);
            let value = format!("{key}-v{seq}-n{node}");
            let ttl = if rng.next(2) == 0 { "?ttl=1h" } else { "" };
            let reply = clients[node]
                .request("PUT", &format!("/v1/keys/{key}{ttl}"), value.as_bytes())
                .expect("PUT");
            assert!(
                matches!(reply.status, 201 | 204),
                "PUT {key}: {}",
                reply.status
            );
            let etag = reply.header("etag").expect("ETag").to_string();
            holder.insert(key.clone(), node);
            expected.insert(key.clone(), Some((value, etag)));
        }
        last_op.insert(key, Instant::now());
    }
    expected
}

fn check(server: &Server, expected: &HashMap<String, Expected>, who: &str) {
    let mut client = server.client();
    for (key, want) in expected {
        let reply = client
            .request("GET", &format!("/v1/keys/{key}"), b"")
            .expect("GET");
        let got = match reply.status {
            200 => Some((
                String::from_utf8(reply.body.clone()).expect("utf-8"),
                reply.header("etag").expect("ETag").to_string(),
            )),
            404 => None,
            status => panic!("GET {key} on {who}: {status}"),
        };
        assert_eq!(&got, want, "{key} on {who}");
    }
}

#[test]
fn two_nodes_on_one_volume_load_each_others_entries_newest_wins_and_deletes_hold() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = Server::start(dir.path(), "node-a", "always");
    let b = Server::start(dir.path(), "node-b", "always");
    let nodes = [a.addr, b.addr];
    let threads: Vec<_> = (0..THREADS)
        .map(|thread| std::thread::spawn(move || operate(thread, nodes)))
        .collect();
    let mut expected = HashMap::new();
    for thread in threads {
        expected.extend(thread.join().expect("client thread"));
    }
    let deleted = expected.values().filter(|want| want.is_none()).count();
    assert!(deleted > 0 && deleted < expected.len(), "{deleted} deleted");
    a.kill();
    b.kill();

    let a = Server::start(dir.path(), "node-a", "always");
    let b = Server::start(dir.path(), "node-b", "always");
    check(&a, &expected, "node-a");
    check(&b, &expected, "node-b");
    for node in ["node-a", "node-b"] {
        let segments = std::fs::read_dir(dir.path().join("default/tidecache/persistent"))
            .expect("persistent area")
            .filter_map(Result::ok)
            .any(|entry| entry.file_name() == node);
        assert!(segments, "{node} wrote its own subdirectory");
    }
    println!(
        "two nodes: {} keys ({deleted} deleted) identical on both after the restart",
        expected.len()
    );
}
