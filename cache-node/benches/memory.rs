//! Memory benchmark: resident bytes per entry for 1M entries with 16-byte keys and 100-byte
//! values, beside a plain `std::collections::HashMap<Vec<u8>, Vec<u8>>` holding the same
//! data (the least a Rust program could spend) and the store's own accounting.
//!
//! Each measurement runs in a fresh child process so that one allocator's retained memory
//! does not leak into the other's figure.
//!
//! `cargo bench -p cache-node --bench memory`

mod common;

use std::collections::HashMap;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cache_node::{Clock, SystemClock};
use cache_node::{ENTRY_OVERHEAD, Preconditions, Store, StoreConfig};
use common::{progress, write_results};
use serde_json::json;
use tidecache_contract::Schedule;

const ENTRIES: usize = 1_000_000;
const KEY_BYTES: usize = 16;
const VALUE_BYTES: usize = 100;
const CHILD_FLAG: &str = "--measure";

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(position) = args.iter().position(|arg| arg == CHILD_FLAG) {
        let what = args.get(position + 1).map(String::as_str).unwrap_or("");
        child(what);
        return;
    }
    let store = run_child("store");
    let hashmap = run_child("hashmap");
    let per_entry = |bytes: i64| bytes as f64 / ENTRIES as f64;
    let store_per_entry = per_entry(store["resident_delta"]);
    let map_per_entry = per_entry(hashmap["resident_delta"]);
    let accounted = per_entry(store["accounted"]);
    println!();
    println!("memory: {ENTRIES} entries, {KEY_BYTES}-byte keys, {VALUE_BYTES}-byte values");
    println!(
        "  cache-node store        {store_per_entry:>7.1} resident bytes/entry (accounted: {accounted:.1}, per-entry overhead constant {ENTRY_OVERHEAD})"
    );
    println!("  HashMap<Vec<u8>,Vec<u8>> {map_per_entry:>6.1} resident bytes/entry");
    println!(
        "  ratio store / HashMap = {:.2}; payload is {} bytes/entry",
        store_per_entry / map_per_entry,
        KEY_BYTES + VALUE_BYTES
    );
    write_results(
        "memory",
        &json!({
            "entries": ENTRIES,
            "key_bytes": KEY_BYTES,
            "value_bytes": VALUE_BYTES,
            "store_resident_bytes_per_entry": store_per_entry,
            "store_accounted_bytes_per_entry": accounted,
            "hashmap_resident_bytes_per_entry": map_per_entry,
            "ratio_store_over_hashmap": store_per_entry / map_per_entry,
        }),
    );
}

/// Runs this binary again to measure `what`; returns its `key=value` lines.
fn run_child(what: &str) -> HashMap<String, i64> {
    progress(format!("measuring {what} in a child process"));
    let exe = std::env::current_exe().expect("own path");
    let output = Command::new(exe)
        .args([CHILD_FLAG, what])
        .output()
        .expect("child runs");
    assert!(output.status.success(), "child failed: {output:?}");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.split_once('='))
        .filter_map(|(key, value)| Some((key.to_string(), value.trim().parse().ok()?)))
        .collect()
}

fn child(what: &str) {
    let key = |i: usize| format!("key-{i:012}").into_bytes();
    let value = |i: usize| vec![(i % 251) as u8; VALUE_BYTES];
    let before = resident_bytes();
    match what {
        "store" => {
            let clock = Arc::new(SystemClock);
            // A realistic entry expires, so it also costs its expiry-index slot.
            let expiry = clock.now().checked_add(Duration::from_secs(3_600));
            let store = Store::new(StoreConfig::new(Schedule::every_minute()), clock);
            for i in 0..ENTRIES {
                store
                    .put(
                        Bytes::from(key(i)),
                        Bytes::from(value(i)),
                        expiry,
                        &Preconditions::none(),
                    )
                    .expect("unbounded");
            }
            println!("resident_delta={}", resident_bytes() - before);
            println!("accounted={}", store.stats().used_bytes);
        }
        "hashmap" => {
            let mut map = HashMap::new();
            for i in 0..ENTRIES {
                map.insert(key(i), value(i));
            }
            println!("resident_delta={}", resident_bytes() - before);
            println!("entries={}", map.len());
        }
        other => panic!("unknown measurement {other:?}"),
    }
}

/// Resident set size of this process, from `/proc/self/statm` (Linux).
fn resident_bytes() -> i64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("Linux /proc");
    let pages: i64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|field| field.parse().ok())
        .expect("statm has a resident field");
    pages * 4096
}
