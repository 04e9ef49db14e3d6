//! Persistence benchmarks, each compared in the same run with what a user would otherwise
//! get, results in `bench-results/persistence.json`:
//!
//! 1. Persisted write throughput (store + log, concurrent writers) for each `--fsync` policy
//!    against a raw sequential write of the same bytes to the same disk (1 MiB writes and one
//!    fsync at the end): the ratio says what the log costs over the disk itself.
//! 2. Warm start of 1M entries from segments.
//! 3. The old layout (one file per key, named by the key) against segments, for 100k writes
//!    and then deleting them all (the janitor deletes a bucket directory).
//!
//! `cargo bench -p cache-node --bench persistence` (add `-- --quick` for a tenth of the
//! sizes, or `-- throughput`, `-- warm-start`, `-- layouts` for one part; only a full run
//! writes the results file). Files go under `$TIDECACHE_BENCH_DIR` (default: the system temporary directory), so
//! point it at the disk to measure.

mod common;

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cache_node::Metrics;
use cache_node::{Clock, SystemClock, Timestamp};
use cache_node::{FsyncPolicy, Log, PersistSettings, warm_start};
use cache_node::{Preconditions, Store, StoreConfig};
use common::{progress, write_results};
use serde_json::json;
use tidecache_contract::disk::{
    Area, ObjectName, RecordRef, SegmentWriter, Version, WriterOptions,
};
use tidecache_contract::{Bucket, Schedule};

/// Concurrent writers of the throughput benchmark (HTTP handlers in a real node).
const WRITERS: usize = 256;
/// Bytes of values written per policy and value size.
const THROUGHPUT_BYTES: usize = 240 << 20;
/// Runs per policy; the best of each is compared.
const REPEATS: usize = 3;
/// Value sizes of the throughput benchmark.
const VALUE_SIZES: [usize; 2] = [4096, 16384];
/// Distinct keys the writes cycle over (bounds memory; every write is still persisted).
const KEYS: usize = 8_192;
/// Entries of the warm-start benchmark.
const WARM_ENTRIES: usize = 1_000_000;
/// Entries of the layout benchmark.
const LAYOUT_ENTRIES: usize = 100_000;

fn bench_dir() -> tempfile::TempDir {
    let base = std::env::var_os("TIDECACHE_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    tempfile::Builder::new()
        .prefix("tidecache-persistence-bench")
        .tempdir_in(base)
        .expect("bench directory")
}

fn settings(dir: &Path, fsync: FsyncPolicy) -> PersistSettings {
    PersistSettings {
        data_dir: dir.to_path_buf(),
        namespace: ObjectName::new("bench").expect("name"),
        cluster: ObjectName::new("bench").expect("name"),
        node: ObjectName::new("node-0").expect("name"),
        fsync,
        segment_bytes: PersistSettings::DEFAULT_SEGMENT_BYTES,
        compact_min_bytes: PersistSettings::DEFAULT_COMPACT_MIN_BYTES,
    }
}

/// A store journaling to a log under `dir`.
fn node(dir: &Path, fsync: FsyncPolicy) -> (Arc<Store>, Arc<Log>, Arc<Metrics>) {
    let settings = settings(dir, fsync);
    let store = Arc::new(Store::new(
        StoreConfig::new(Schedule::every_minute()),
        Arc::new(SystemClock),
    ));
    let metrics = Arc::new(Metrics::new(store.clone()));
    warm_start(&settings.root(), &*store, metrics.persistence()).expect("warm start");
    let log = Arc::new(
        Log::start(
            &settings,
            store.clone(),
            store.clock().clone(),
            metrics.persistence().clone(),
        )
        .expect("log"),
    );
    store.attach_journal(log.clone());
    (store, log, metrics)
}

fn metric(metrics: &Metrics, name: &str) -> f64 {
    let text = metrics.encode().expect("encodes");
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// Writes `bytes` bytes sequentially in 1 MiB writes, then one fsync; returns the time.
fn raw_write(path: &Path, bytes: u64) -> Duration {
    let chunk = vec![0xA5u8; 1 << 20];
    let started = Instant::now();
    let mut file = File::create(path).expect("raw file");
    let mut left = bytes;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        file.write_all(&chunk[..n]).expect("raw write");
        left -= n as u64;
    }
    file.sync_data().expect("raw fsync");
    started.elapsed()
}

/// `writes` persisted writes of `value_bytes` from `WRITERS` tasks; returns (seconds until
/// everything is written and the log closed with a final sync, bytes appended, metrics).
fn persisted_writes(
    dir: &Path,
    fsync: FsyncPolicy,
    writes: usize,
    value_bytes: usize,
) -> (Duration, u64, Arc<Metrics>) {
    let (store, log, metrics) = node(dir, fsync);
    let elapsed = concurrent_writes(&store, writes, value_bytes, || log.close());
    let bytes = metric(&metrics, "tidecache_persist_appended_bytes_total") as u64;
    (elapsed, bytes, metrics)
}

/// The same writes into a store without persistence: what the writers and the store alone
/// can do on this machine, the ceiling of the persisted figures.
fn memory_writes(writes: usize, value_bytes: usize) -> Duration {
    let store = Arc::new(Store::new(
        StoreConfig::new(Schedule::every_minute()),
        Arc::new(SystemClock),
    ));
    concurrent_writes(&store, writes, value_bytes, || ())
}

/// `writes` writes of `value_bytes` into `store` from `WRITERS` tasks, each awaiting its
/// commit; `finish` runs before the clock stops.
fn concurrent_writes(
    store: &Arc<Store>,
    writes: usize,
    value_bytes: usize,
    finish: impl FnOnce(),
) -> Duration {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let value = Bytes::from(vec![0x5Au8; value_bytes]);
    let keys: Arc<Vec<Bytes>> = Arc::new(
        (0..KEYS)
            .map(|i| Bytes::from(format!("key-{i:06}")))
            .collect(),
    );
    let started = Instant::now();
    runtime.block_on(async {
        let tasks: Vec<_> = (0..WRITERS)
            .map(|writer| {
                let store = store.clone();
                let value = value.clone();
                let keys = keys.clone();
                tokio::spawn(async move {
                    let expires = store.clock().now().checked_add(Duration::from_secs(3600));
                    for i in (writer..writes).step_by(WRITERS) {
                        store
                            .put_journaled(
                                keys[i % KEYS].clone(),
                                value.clone(),
                                expires,
                                &Preconditions::none(),
                            )
                            .expect("stored")
                            .durable()
                            .await
                            .expect("durable");
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.expect("writer");
        }
    });
    finish();
    started.elapsed()
}

fn throughput(total_bytes: usize) -> serde_json::Value {
    let mut runs = Vec::new();
    let mut memory = Vec::new();
    for value_bytes in VALUE_SIZES {
        let writes = total_bytes / value_bytes;
        let best = (0..REPEATS)
            .map(|_| memory_writes(writes, value_bytes))
            .min()
            .unwrap_or_default();
        let per_second = writes as f64 / best.as_secs_f64();
        progress(format!(
            "  {value_bytes} B, memory only (no persistence): {per_second:.0} writes/s, {:.0} MB/s \
             of values: the ceiling of these writers on this machine",
            per_second * value_bytes as f64 / 1e6
        ));
        memory.push(json!({
            "value_bytes": value_bytes,
            "writes": writes,
            "seconds": best.as_secs_f64(),
            "writes_per_second": per_second,
        }));
        for fsync in [
            FsyncPolicy::Always,
            FsyncPolicy::Everysec,
            FsyncPolicy::Never,
        ] {
            progress(format!(
                "throughput: {writes} writes of {value_bytes} B from {WRITERS} writers, \
                 fsync={fsync}, best of {REPEATS} alternating with the raw write"
            ));
            // Other load on the machine moves both figures a lot from run to run; the best of
            // a few alternating runs compares what each can do.
            let mut best: Option<(Duration, Duration, u64, Arc<Metrics>)> = None;
            for _ in 0..REPEATS {
                let dir = bench_dir();
                let (elapsed, bytes, metrics) =
                    persisted_writes(dir.path(), fsync, writes, value_bytes);
                let raw = raw_write(&dir.path().join("raw"), bytes);
                best = Some(match best {
                    None => (elapsed, raw, bytes, metrics),
                    Some((e, r, b, m)) => {
                        let (elapsed, metrics) = if elapsed < e {
                            (elapsed, metrics)
                        } else {
                            (e, m)
                        };
                        (elapsed, raw.min(r), b, metrics)
                    }
                });
            }
            let Some((elapsed, raw, bytes, metrics)) = best else {
                continue;
            };
            let persisted_mb_s = bytes as f64 / elapsed.as_secs_f64() / 1e6;
            let raw_mb_s = bytes as f64 / raw.as_secs_f64() / 1e6;
            let fsyncs = metric(&metrics, "tidecache_persist_fsync_duration_seconds_count");
            let batches = metric(&metrics, "tidecache_persist_batch_changes_count");
            let ratio = persisted_mb_s / raw_mb_s;
            progress(format!(
                "  {value_bytes} B, fsync={fsync}: {:.0} writes/s, {persisted_mb_s:.0} MB/s persisted vs \
                 {raw_mb_s:.0} MB/s raw sequential write of the same {bytes} bytes: ratio {ratio:.2}; \
                 {fsyncs} fsyncs, {:.1} changes per group commit",
                writes as f64 / elapsed.as_secs_f64(),
                writes as f64 / batches.max(1.0),
            ));
            runs.push(json!({
                "fsync": fsync.to_string(),
                "writes": writes,
                "value_bytes": value_bytes,
                "writers": WRITERS,
                "bytes_appended": bytes,
                "seconds": elapsed.as_secs_f64(),
                "writes_per_second": writes as f64 / elapsed.as_secs_f64(),
                "persisted_mb_per_second": persisted_mb_s,
                "raw_seconds": raw.as_secs_f64(),
                "raw_mb_per_second": raw_mb_s,
                "ratio_to_raw": ratio,
                "fsyncs": fsyncs,
                "changes_per_group_commit": writes as f64 / batches.max(1.0),
            }));
        }
    }
    json!({
        "goal_everysec_ratio": 0.7,
        "repeats": REPEATS,
        "runs": runs,
        "memory_only": memory,
    })
}

fn warm_start_1m(entries: usize) -> serde_json::Value {
    let dir = bench_dir();
    let settings = settings(dir.path(), FsyncPolicy::Never);
    let root = settings.root();
    let now = SystemClock.now();
    let schedule = Schedule::every_minute();
    progress(format!(
        "warm start: writing {entries} records (16 B keys, 100 B values) over 60 buckets"
    ));
    let value = vec![0x33u8; 100];
    let mut writers = Vec::new();
    for minute in 0..60 {
        let expiry = now
            .checked_add(Duration::from_secs(600 + minute * 60))
            .expect("time");
        let fire = schedule
            .bucket_for(expiry.to_datetime().expect("time"))
            .expect("bucket");
        let area = Area::Bucket(Bucket::new(fire).expect("bucket"));
        let writer = SegmentWriter::open(&root, area, &settings.node, WriterOptions::default())
            .expect("writer");
        writers.push((writer, expiry));
    }
    let mut bytes = 0;
    for i in 0..entries {
        let key = format!("key-{i:012}");
        let (writer, expiry) = &mut writers[i % 60];
        let record = RecordRef {
            key: key.as_bytes(),
            version: Version {
                hlc: i as u64 + 1,
                node: settings.node.tag(),
            },
            expiry_unix_nanos: Some(expiry.as_millis() * 1_000_000),
            value: Some(&value),
        };
        bytes += record.encoded_len() as u64;
        writer.append(record).expect("append");
    }
    for (writer, _) in &mut writers {
        writer.sync_data().expect("sync");
    }
    drop(writers);
    progress(format!("warm start: loading {bytes} bytes"));
    let store = Store::new(
        StoreConfig::new(Schedule::every_minute()),
        Arc::new(SystemClock),
    );
    let metrics = Metrics::new(Arc::new(Store::new(
        StoreConfig::new(Schedule::every_minute()),
        Arc::new(SystemClock),
    )));
    let report = warm_start(&root, &store, metrics.persistence()).expect("warm start");
    assert_eq!(report.loaded, entries as u64);
    let seconds = report.elapsed.as_secs_f64();
    progress(format!(
        "  warm start of {entries} entries: {seconds:.2} s ({:.0} entries/s, {:.0} MB/s; page cache warm)",
        entries as f64 / seconds,
        bytes as f64 / seconds / 1e6
    ));
    json!({
        "entries": entries,
        "buckets": 60,
        "bytes": bytes,
        "seconds": seconds,
        "entries_per_second": entries as f64 / seconds,
        "page_cache": "warm (files just written)",
    })
}

fn layouts(entries: usize) -> serde_json::Value {
    let dir = bench_dir();
    let value = vec![0x77u8; 100];
    progress(format!(
        "layouts: {entries} writes then deleting them all, one file per key"
    ));
    let old_dir = dir.path().join("old");
    fs::create_dir(&old_dir).expect("old dir");
    let started = Instant::now();
    for i in 0..entries {
        fs::write(old_dir.join(format!("user:{i:08}")), &value).expect("write file");
    }
    let old_write = started.elapsed();
    let started = Instant::now();
    for i in 0..entries {
        fs::remove_file(old_dir.join(format!("user:{i:08}"))).expect("delete file");
    }
    let old_delete = started.elapsed();

    progress(format!(
        "layouts: {entries} writes then deleting them all, segments (fsync=never, one final sync)"
    ));
    let seg_dir = dir.path().join("segments");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (store, log, _) = node(&seg_dir, FsyncPolicy::Never);
    let value = Bytes::from(value);
    let expires = Some(Timestamp::from_millis(
        SystemClock.now().as_millis() + 3_600_000,
    ));
    let started = Instant::now();
    runtime.block_on(async {
        for i in 0..entries {
            store
                .put_journaled(
                    Bytes::from(format!("user:{i:08}")),
                    value.clone(),
                    expires,
                    &Preconditions::none(),
                )
                .expect("stored")
                .durable()
                .await
                .expect("durable");
        }
    });
    log.close();
    let seg_write = started.elapsed();
    let root = settings(&seg_dir, FsyncPolicy::Never).root();
    let started = Instant::now();
    for area in root.list_areas().expect("areas").items {
        fs::remove_dir_all(root.area_dir(area)).expect("delete bucket");
    }
    let seg_delete = started.elapsed();
    let old_total = old_write + old_delete;
    let seg_total = seg_write + seg_delete;
    let ratio = old_total.as_secs_f64() / seg_total.as_secs_f64();
    progress(format!(
        "  one file per key: write {:.2} s + delete {:.2} s; segments: write {:.2} s + delete {:.3} s; \
         ratio (old / segments) {ratio:.1} (write {:.1}, delete {:.0})",
        old_write.as_secs_f64(),
        old_delete.as_secs_f64(),
        seg_write.as_secs_f64(),
        seg_delete.as_secs_f64(),
        old_write.as_secs_f64() / seg_write.as_secs_f64(),
        old_delete.as_secs_f64() / seg_delete.as_secs_f64(),
    ));
    json!({
        "entries": entries,
        "value_bytes": 100,
        "file_per_key": { "write_seconds": old_write.as_secs_f64(), "delete_seconds": old_delete.as_secs_f64() },
        "segments": { "write_seconds": seg_write.as_secs_f64(), "delete_seconds": seg_delete.as_secs_f64() },
        "ratio_total": ratio,
        "ratio_write": old_write.as_secs_f64() / seg_write.as_secs_f64(),
        "ratio_delete": old_delete.as_secs_f64() / seg_delete.as_secs_f64(),
    })
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let scale = if args.iter().any(|arg| arg == "--quick") {
        10
    } else {
        1
    };
    // `-- throughput`, `-- warm-start` or `-- layouts` runs just that part.
    let parts = ["throughput", "warm-start", "layouts"];
    let chosen: Vec<&str> = parts
        .into_iter()
        .filter(|part| args.iter().any(|arg| arg == part))
        .collect();
    let run = |part: &str| chosen.is_empty() || chosen.contains(&part);
    let mut results = serde_json::Map::new();
    results.insert("benchmark".into(), json!("persistence"));
    if run("throughput") {
        results.insert("throughput".into(), throughput(THROUGHPUT_BYTES / scale));
    }
    if run("warm-start") {
        results.insert("warm_start".into(), warm_start_1m(WARM_ENTRIES / scale));
    }
    if run("layouts") {
        results.insert("layouts".into(), layouts(LAYOUT_ENTRIES / scale));
    }
    if chosen.is_empty() && scale == 1 {
        write_results("persistence", &serde_json::Value::Object(results));
    } else {
        progress("partial or quick run: bench-results/persistence.json left as it was");
    }
}
