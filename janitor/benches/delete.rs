//! Benchmark: deleting N expired cache entries (default 1M) stored as contract 2 lays them out
//! (bucket directories of segment files, removed by the real `janitor` binary) against the
//! same entries stored one file per key in one directory (the old layout of the seed notes,
//! removed one `unlink` per key as the old service did), on the same disk in the same run.
//!
//! `cargo bench -p janitor --bench delete -- [--entries N] [--value-bytes B] [--dir DIR]`
//! prints progress and the ratio, and writes `bench-results/janitor-delete.json` at the
//! workspace root. DIR (default: the system temp dir) selects the disk under test.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use chrono::{DateTime, Duration, Utc};
use serde_json::{Value, json};
use tidecache_contract::Bucket;
use tidecache_contract::disk::{
    Area, ClusterRoot, ObjectName, RecordRef, SegmentWriter, Version, WriterOptions,
};

const BUCKETS: u64 = 60;
const NODES: u64 = 3;

struct Options {
    entries: u64,
    value_bytes: usize,
    dir: PathBuf,
}

fn options() -> Options {
    let mut options = Options {
        entries: 1_000_000,
        value_bytes: 64,
        dir: std::env::temp_dir(),
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        let value = args.get(i + 1);
        match (args[i].as_str(), value) {
            ("--entries", Some(v)) => options.entries = v.parse().expect("--entries N"),
            ("--value-bytes", Some(v)) => options.value_bytes = v.parse().expect("--value-bytes B"),
            ("--dir", Some(v)) => options.dir = PathBuf::from(v),
            // cargo passes `--bench`; anything else unknown is ignored the same way.
            _ => {
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    options
}

fn name(text: &str) -> ObjectName {
    ObjectName::new(text).expect("valid name")
}

fn key(i: u64) -> String {
    format!("key-{i:08}")
}

/// The fire time of bucket `b`: one per minute from a fixed start.
fn fire_time(b: u64) -> DateTime<Utc> {
    let start: DateTime<Utc> = "2026-11-23T12:00:00Z".parse().expect("RFC 3339");
    start + Duration::minutes(b as i64)
}

fn write_buckets(root: &ClusterRoot, options: &Options) -> u64 {
    let value = vec![b'v'; options.value_bytes];
    let mut writers = BTreeMap::new();
    for i in 0..options.entries {
        let (b, node) = (i % BUCKETS, (i / BUCKETS) % NODES);
        let bucket = Bucket::new(fire_time(b)).expect("bucket");
        let writer = writers.entry((b, node)).or_insert_with(|| {
            let node = name(&format!("cache-{node}"));
            SegmentWriter::open(root, Area::Bucket(bucket), &node, WriterOptions::default())
                .expect("open writer")
        });
        let expiry = fire_time(b) - Duration::seconds(30);
        writer
            .append(RecordRef {
                key: key(i).as_bytes(),
                version: Version { hlc: i, node },
                expiry_unix_nanos: expiry.timestamp_nanos_opt(),
                value: Some(&value),
            })
            .expect("append");
        progress("bucket layout: written", i, options.entries);
    }
    for writer in writers.values_mut() {
        writer.sync_data().expect("sync");
    }
    writers.len() as u64
}

fn write_old_layout(dir: &Path, options: &Options) {
    let value = vec![b'v'; options.value_bytes];
    fs::create_dir_all(dir).expect("mkdir");
    for i in 0..options.entries {
        fs::write(dir.join(key(i)), &value).expect("write");
        progress("old layout: written", i, options.entries);
    }
}

fn progress(what: &str, i: u64, total: u64) {
    let step = (total / 10).max(1);
    if (i + 1).is_multiple_of(step) {
        println!("  {what} {}/{total}", i + 1);
    }
}

fn main() {
    let options = options();
    let work = options
        .dir
        .join(format!("tidecache-janitor-bench-{}", std::process::id()));
    let data = work.join("data");
    let old = work.join("old");
    let root = ClusterRoot::new(&data, &name("bench"), &name("bench"));
    println!(
        "janitor delete benchmark: {} entries, {}-byte values, {BUCKETS} buckets x {NODES} nodes, under {}",
        options.entries,
        options.value_bytes,
        work.display()
    );

    let started = Instant::now();
    let node_dirs = write_buckets(&root, &options);
    println!("  bucket layout written in {:.1?}", started.elapsed());
    let started = Instant::now();
    write_old_layout(&old, &options);
    println!("  old layout written in {:.1?}", started.elapsed());
    rustix::fs::sync();

    println!("deleting the bucket layout with the janitor binary...");
    let started = Instant::now();
    let output = Command::new(env!("CARGO_BIN_EXE_janitor"))
        .arg("--data-dir")
        .arg(&data)
        .args([
            "--namespace",
            "bench",
            "--cluster",
            "bench",
            "--grace",
            "0s",
        ])
        .args(["--now", &fire_time(BUCKETS).to_rfc3339()])
        .output()
        .expect("run janitor");
    let janitor_seconds = started.elapsed().as_secs_f64();
    assert!(output.status.success(), "janitor failed: {output:?}");
    let summary: Value =
        serde_json::from_slice(&output.stdout).expect("the janitor prints one JSON line");
    assert_eq!(summary["buckets_deleted"], BUCKETS, "{summary}");
    println!("  {janitor_seconds:.3} s; summary: {summary}");

    println!("deleting the old layout one file per key...");
    let started = Instant::now();
    for i in 0..options.entries {
        fs::remove_file(old.join(key(i))).expect("remove");
        progress("old layout: removed", i, options.entries);
    }
    let old_seconds = started.elapsed().as_secs_f64();
    println!("  {old_seconds:.3} s");
    fs::remove_dir_all(&work).expect("clean up");

    let ratio = old_seconds / janitor_seconds;
    let janitor_peak = summary["peak_rss_kib"].as_u64();
    println!(
        "RESULT: {} entries: buckets {janitor_seconds:.3} s, one file per key {old_seconds:.3} s, \
         ratio {ratio:.1}x (goal >= 20x); janitor peak memory {} KiB",
        options.entries,
        janitor_peak.map_or("unknown".to_string(), |k| k.to_string())
    );
    let result = json!({
        "benchmark": "janitor-delete",
        "entries": options.entries,
        "value_bytes": options.value_bytes,
        "buckets": BUCKETS,
        "node_dirs": node_dirs,
        "segment_files": summary["files_removed"],
        "bytes_freed": summary["bytes_freed"],
        "bucket_layout_seconds": janitor_seconds,
        "old_layout_seconds": old_seconds,
        "ratio": ratio,
        "goal_ratio": 20,
        "janitor_peak_rss_kib": janitor_peak,
        "janitor_summary": summary,
    });
    let out_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../bench-results");
    fs::create_dir_all(&out_dir).expect("mkdir bench-results");
    let out = out_dir.join("janitor-delete.json");
    fs::write(&out, serde_json::to_string_pretty(&result).expect("JSON")).expect("write result");
    println!("wrote {}", out.display());
}
