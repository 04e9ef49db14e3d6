//! The log and the warm start on real files in a temporary directory: restarts, versions,
//! shadows of moved keys, refused writes, group commit, damage and compaction.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tidecache_contract::Schedule;
use tidecache_contract::disk::{Area, ObjectName};

use super::warm_start::LoadReport;
use super::*;
use crate::base::journal::CommitError;
use crate::base::time::{Clock, ManualClock, Timestamp};
use crate::base::version::Version;
use crate::metrics::Metrics;
use crate::store::{Preconditions, Store, StoreConfig};

/// 2026-11-19T00:00:20Z: twenty seconds into a minute.
const START: i64 = 1_795_046_420_000;

fn settings(dir: &Path, node: &str, fsync: FsyncPolicy) -> PersistSettings {
    PersistSettings {
        data_dir: dir.to_path_buf(),
        namespace: ObjectName::new("default").expect("name"),
        cluster: ObjectName::new("demo").expect("name"),
        node: ObjectName::new(node).expect("name"),
        fsync,
        segment_bytes: PersistSettings::DEFAULT_SEGMENT_BYTES,
        compact_min_bytes: PersistSettings::DEFAULT_COMPACT_MIN_BYTES,
    }
}

/// A store on a manual clock that has loaded the volume and journals to it.
struct Node {
    store: Arc<Store>,
    log: Arc<Log>,
    metrics: Arc<Metrics>,
    report: LoadReport,
}

impl Node {
    fn start(settings: &PersistSettings, clock: &Arc<ManualClock>) -> Node {
        let store = Arc::new(Store::new(
            StoreConfig::new(Schedule::every_minute()),
            clock.clone(),
        ));
        let metrics = Arc::new(Metrics::new(store.clone()));
        let report =
            warm_start(&settings.root(), &*store, metrics.persistence()).expect("warm start");
        let log = Arc::new(
            Log::start(
                settings,
                store.clone(),
                store.clock().clone(),
                metrics.persistence().clone(),
            )
            .expect("log"),
        );
        assert!(store.attach_journal(log.clone()));
        Node {
            store,
            log,
            metrics,
            report,
        }
    }

    async fn put(
        &self,
        key: &str,
        value: &str,
        ttl_secs: Option<u64>,
    ) -> Result<Version, CommitError> {
        let now = self.store.clock().now();
        let expires = ttl_secs.and_then(|secs| now.checked_add(Duration::from_secs(secs)));
        let journaled = self
            .store
            .put_journaled(
                Bytes::copy_from_slice(key.as_bytes()),
                Bytes::copy_from_slice(value.as_bytes()),
                expires,
                &Preconditions::none(),
            )
            .expect("accepted in memory");
        journaled.durable().await.map(|outcome| outcome.version)
    }

    async fn delete(&self, key: &str) -> Result<Version, CommitError> {
        self.store
            .delete_journaled(key.as_bytes(), &Preconditions::none())
            .expect("present")
            .durable()
            .await
            .map(|deleted| deleted.version)
    }

    fn value(&self, key: &str) -> Option<String> {
        self.store
            .get(key.as_bytes())
            .map(|hit| String::from_utf8_lossy(&hit.value).into_owned())
    }

    /// The value of the sample `name` (with its labels); a missing sample fails the test,
    /// so that a renamed or unregistered metric cannot pass as zero.
    fn metric(&self, name: &str) -> f64 {
        self.sample(name).unwrap_or_else(|| {
            panic!(
                "no sample {name} in the metrics:\n{}",
                self.metrics.encode().unwrap_or_default()
            )
        })
    }

    /// The value of the sample `name`, if it has been recorded yet.
    fn sample(&self, name: &str) -> Option<f64> {
        let text = self.metrics.encode().expect("encodes");
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
    }

    async fn stop(self) {
        let log = self.log;
        tokio::task::spawn_blocking(move || log.close())
            .await
            .expect("closed");
    }
}

fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(Timestamp::from_millis(START)))
}

/// Every segment file under `dir`, sorted.
fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in fs::read_dir(&dir).expect("list") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|ext| ext == "seg") {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

#[test]
fn every_write_error_kind_and_compaction_result_is_exported_before_it_happens() {
    let mut registry = prometheus_client::registry::Registry::default();
    PersistMetrics::default().register(&mut registry);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).expect("encodes");
    for kind in ["disk_full", "io", "stopped", "shadow"] {
        let sample = format!("persist_write_errors_total{{kind=\"{kind}\"}} 0\n");
        assert!(text.contains(&sample), "{sample}in\n{text}");
    }
    for result in ["rewritten", "skipped", "failed"] {
        let sample = format!("persist_compactions_total{{kind=\"{result}\"}} 0\n");
        assert!(text.contains(&sample), "{sample}in\n{text}");
    }
}

#[tokio::test]
async fn writes_and_deletes_survive_a_restart_with_their_versions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let settings = settings(dir.path(), "node-a", FsyncPolicy::Always);
    let clock = clock();
    let node = Node::start(&settings, &clock);
    let forever = node.put("forever", "v1", None).await.expect("durable");
    let hour = node.put("hour", "v1", Some(3600)).await.expect("durable");
    node.put("gone", "v1", Some(600)).await.expect("durable");
    node.delete("gone").await.expect("durable");
    node.put("gone-forever", "v1", None).await.expect("durable");
    node.delete("gone-forever").await.expect("durable");
    node.stop().await;

    let node = Node::start(&settings, &clock);
    assert_eq!(node.value("forever").as_deref(), Some("v1"));
    assert_eq!(node.value("hour").as_deref(), Some("v1"));
    assert_eq!(node.value("gone"), None);
    assert_eq!(node.value("gone-forever"), None);
    assert_eq!(node.store.get(b"forever").expect("hit").version, forever);
    let loaded_hour = node.store.get(b"hour").expect("hit");
    assert_eq!(loaded_hour.version, hour);
    assert_eq!(
        loaded_hour.expires_at,
        clock.now().checked_add(Duration::from_secs(3600))
    );
    assert_eq!(node.report.loaded, 2);
    assert_eq!(node.report.deleted, 2);
    let next = node.put("forever", "v2", None).await.expect("durable");
    assert!(next > forever, "versions keep growing across restarts");
    node.stop().await;
}

#[tokio::test]
async fn a_key_moved_to_an_earlier_bucket_does_not_come_back_when_that_bucket_expires() {
    let dir = tempfile::tempdir().expect("tempdir");
    let settings = settings(dir.path(), "node-a", FsyncPolicy::Always);
    let clock = clock();
    let node = Node::start(&settings, &clock);
    node.put("k", "long", Some(7200)).await.expect("durable");
    node.put("k", "short", Some(30)).await.expect("durable");
    node.put("p", "persistent", None).await.expect("durable");
    node.put("p", "expiring", Some(30)).await.expect("durable");
    node.stop().await;

    let node = Node::start(&settings, &clock);
    assert_eq!(node.value("k").as_deref(), Some("short"));
    assert_eq!(node.value("p").as_deref(), Some("expiring"));
    node.stop().await;

    // The short bucket has expired (and may be deleted by the janitor): the shadows left in
    // the older areas keep the older records from coming back.
    clock.advance(Duration::from_secs(120));
    let node = Node::start(&settings, &clock);
    assert_eq!(node.value("k"), None);
    assert_eq!(node.value("p"), None);
    assert_eq!(node.report.expired_buckets, 1);
    node.stop().await;
}

#[tokio::test]
async fn a_write_that_cannot_be_appended_is_refused_and_undone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let settings = settings(dir.path(), "node-a", FsyncPolicy::Always);
    let clock = clock();
    let node = Node::start(&settings, &clock);
    node.put("k", "durable", Some(60)).await.expect("durable");
    // A file where the next bucket's directory must go: its segment cannot be created.
    let later = clock
        .now()
        .checked_add(Duration::from_secs(3600))
        .expect("time");
    let bucket = Schedule::every_minute()
        .bucket_for(later.to_datetime().expect("time"))
        .and_then(tidecache_contract::Bucket::new)
        .expect("bucket");
    fs::write(
        settings.root().area_dir(Area::Bucket(bucket)),
        b"in the way",
    )
    .expect("block");

    let refused = node.put("k", "lost", Some(3600)).await;
    assert!(matches!(refused, Err(CommitError::Io(_))), "{refused:?}");
    assert_eq!(
        node.value("k").as_deref(),
        Some("durable"),
        "memory rolled back"
    );
    // Two failing writes of one key in a row: both undone, back to the last durable value
    // (the second one's `previous` is the first, which never became durable).
    let first = node.store.put_journaled(
        Bytes::from_static(b"k"),
        Bytes::from_static(b"lost-1"),
        clock.now().checked_add(Duration::from_secs(3600)),
        &Preconditions::none(),
    );
    let second = node.store.put_journaled(
        Bytes::from_static(b"k"),
        Bytes::from_static(b"lost-2"),
        clock.now().checked_add(Duration::from_secs(3600)),
        &Preconditions::none(),
    );
    assert!(second.expect("applied").durable().await.is_err());
    assert!(first.expect("applied").durable().await.is_err());
    assert_eq!(node.value("k").as_deref(), Some("durable"));
    let refused = node.put("new", "lost", Some(3600)).await;
    assert!(matches!(refused, Err(CommitError::Io(_))), "{refused:?}");
    assert_eq!(node.value("new"), None);
    assert_eq!(node.store.stats().entries, 1);
    assert_eq!(
        node.metric("tidecache_persist_write_errors_total{kind=\"io\"}"),
        4.0
    );
    node.stop().await;

    let node = Node::start(&settings, &clock);
    assert_eq!(node.value("k").as_deref(), Some("durable"));
    assert_eq!(node.value("new"), None);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_share_fsyncs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let settings = settings(dir.path(), "node-a", FsyncPolicy::Always);
    let clock = clock();
    let node = Arc::new(Node::start(&settings, &clock));
    let writers: Vec<_> = (0..32)
        .map(|writer| {
            let node = node.clone();
            tokio::spawn(async move {
                for i in 0..25 {
                    node.put(&format!("w{writer}-{i}"), "value", Some(600))
                        .await
                        .expect("durable");
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.expect("writer");
    }
    let fsyncs = node.metric("tidecache_persist_fsync_duration_seconds_count");
    assert_eq!(node.metric("tidecache_persist_records_total"), 800.0);
    assert!(
        (1.0..800.0).contains(&fsyncs),
        "{fsyncs} fsyncs for 800 writes: some, and shared"
    );
    assert_eq!(node.store.stats().entries, 800);
    if let Ok(node) = Arc::try_unwrap(node) {
        node.stop().await;
    }
}

/// Writes three entries with `always`, returns the segment and where the last record starts.
async fn three_records(settings: &PersistSettings, clock: &Arc<ManualClock>) -> (PathBuf, u64) {
    let node = Node::start(settings, clock);
    node.put("first", "one", None).await.expect("durable");
    node.put("second", "two", None).await.expect("durable");
    let before_last = segments(settings.data_dir.as_path())
        .first()
        .map(|path| fs::metadata(path).expect("stat").len())
        .expect("a segment");
    node.put("third", "three", None).await.expect("durable");
    node.stop().await;
    let segment = segments(&settings.data_dir).pop().expect("a segment");
    (segment, before_last)
}

#[tokio::test]
async fn a_last_record_cut_at_any_byte_loses_only_that_record() {
    let dir = tempfile::tempdir().expect("tempdir");
    let settings = settings(dir.path(), "node-a", FsyncPolicy::Always);
    let clock = clock();
    let (segment, last_starts) = three_records(&settings, &clock).await;
    let whole = fs::read(&segment).expect("read");
    for cut in last_starts..whole.len() as u64 {
        fs::write(&segment, &whole[..cut as usize]).expect("truncate");
        let store = Store::new(StoreConfig::new(Schedule::every_minute()), clock.clone());
        let metrics = PersistMetrics::default();
        let report = warm_start(&settings.root(), &store, &metrics).expect("loads");
        assert!(store.get(b"first").is_some() && store.get(b"second").is_some());
        assert!(store.get(b"third").is_none(), "cut at {cut}");
        assert_eq!(
            report.torn_tails,
            u64::from(cut > last_starts),
            "cut at {cut}"
        );
        assert_eq!(report.corrupt_records, 0);
    }
}

#[tokio::test]
async fn a_flipped_bit_rejects_that_record_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let settings = settings(dir.path(), "node-a", FsyncPolicy::Always);
    let clock = clock();
    let (segment, _) = three_records(&settings, &clock).await;
    let mut bytes = fs::read(&segment).expect("read");
    let at = bytes
        .windows(3)
        .position(|window| window == b"two")
        .expect("the second value");
    bytes[at] ^= 0x04;
    fs::write(&segment, &bytes).expect("write");
    let node = Node::start(&settings, &clock);
    assert_eq!(node.value("first").as_deref(), Some("one"));
    assert_eq!(node.value("second"), None, "never served");
    assert_eq!(node.value("third").as_deref(), Some("three"));
    assert_eq!(node.report.corrupt_records, 1);
    assert_eq!(
        node.metric("tidecache_warm_start_damage_total{kind=\"corrupt_record\"}"),
        1.0
    );
    node.stop().await;
}

/// The smuggling case through the node: a client stores a value that holds a
/// perfectly encoded record of another key, one bit of the carrying record's header flips on
/// disk, and the node restarts. The embedded key must not be served; the record after the
/// damaged one must be, and the damage is counted and its bytes reported.
#[tokio::test]
async fn a_record_embedded_in_a_value_is_not_served_after_damage() {
    let dir = tempfile::tempdir().expect("tempdir");
    let settings = settings(dir.path(), "node-a", FsyncPolicy::Always);
    let clock = clock();
    let node = Node::start(&settings, &clock);
    node.put("first", "one", None).await.expect("durable");
    let mut value = b"looks like data: ".to_vec();
    tidecache_contract::disk::RecordRef {
        key: b"smuggled",
        version: tidecache_contract::disk::Version { hlc: 1, node: 0 },
        expiry_unix_nanos: None,
        value: Some(b"no client wrote this key"),
    }
    .encode(&mut value)
    .expect("within limits");
    node.store
        .put_journaled(
            Bytes::from_static(b"carrier"),
            Bytes::from(value),
            None,
            &Preconditions::none(),
        )
        .expect("accepted in memory")
        .durable()
        .await
        .expect("durable");
    node.put("after", "three", None).await.expect("durable");
    node.stop().await;
    let segment = segments(&settings.data_dir).pop().expect("a segment");
    let mut bytes = fs::read(&segment).expect("read");
    let carrier = bytes
        .windows(7)
        .position(|window| window == b"carrier")
        .expect("the carrier's key");
    // The body length, in the carrier's header (the key follows the header).
    bytes[carrier - tidecache_contract::disk::RECORD_HEADER_LEN + 16] ^= 0x01;
    fs::write(&segment, &bytes).expect("write");

    let node = Node::start(&settings, &clock);
    assert_eq!(node.value("smuggled"), None, "a key no client wrote");
    assert_eq!(node.value("carrier"), None, "the damaged record");
    assert_eq!(node.value("first").as_deref(), Some("one"));
    assert_eq!(node.value("after").as_deref(), Some("three"));
    assert_eq!(node.report.corrupt_records, 1);
    assert!(node.report.corrupt_bytes > 0);
    node.stop().await;
}

/// A bucket directory replaced by a link to a directory outside the data dir: the write is
/// refused with an error naming the link, undone in memory, and nothing is created where the
/// link points. A link in place of the cluster directory stops the warm start.
#[tokio::test]
async fn a_linked_directory_is_never_written_through_or_loaded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let outside = tempfile::tempdir().expect("tempdir");
    let settings = settings(dir.path(), "node-a", FsyncPolicy::Always);
    let clock = clock();
    let node = Node::start(&settings, &clock);
    node.put("k", "durable", Some(60)).await.expect("durable");
    let later = clock
        .now()
        .checked_add(Duration::from_secs(3600))
        .expect("time");
    let bucket = Schedule::every_minute()
        .bucket_for(later.to_datetime().expect("time"))
        .and_then(tidecache_contract::Bucket::new)
        .expect("bucket");
    let link = settings.root().area_dir(Area::Bucket(bucket));
    std::os::unix::fs::symlink(outside.path(), &link).expect("link");

    let refused = node.put("k", "redirected", Some(3600)).await;
    let Err(CommitError::Io(message)) = refused else {
        panic!("refused as an I/O error: {refused:?}");
    };
    assert!(
        message.contains(&link.display().to_string()),
        "names the link: {message}"
    );
    assert_eq!(node.value("k").as_deref(), Some("durable"), "undone");
    assert_eq!(
        fs::read_dir(outside.path()).expect("list").count(),
        0,
        "nothing created outside the data dir"
    );
    node.stop().await;

    // The whole cluster directory moved away and replaced by a link to it.
    let root = settings.root();
    let moved = outside.path().join("demo");
    fs::rename(root.path(), &moved).expect("move");
    std::os::unix::fs::symlink(&moved, root.path()).expect("link");
    let store = Store::new(StoreConfig::new(Schedule::every_minute()), clock.clone());
    let refused = warm_start(&root, &store, &PersistMetrics::default())
        .expect_err("a linked cluster directory is not loaded");
    assert!(
        refused
            .to_string()
            .contains("symbolic links are never followed"),
        "{refused}"
    );
    assert!(store.get(b"k").is_none());
}

#[tokio::test]
async fn a_mostly_garbage_persistent_area_is_compacted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut settings = settings(dir.path(), "node-a", FsyncPolicy::Never);
    settings.compact_min_bytes = 16 * 1024;
    let clock = clock();
    let node = Node::start(&settings, &clock);
    let value = "x".repeat(100);
    for round in 0..100 {
        for key in 0..10 {
            node.put(&format!("k{key}"), &format!("{round}{value}"), None)
                .await
                .expect("durable");
        }
    }
    node.put("deleted", "v", None).await.expect("durable");
    node.delete("deleted").await.expect("durable");
    let node_dir = settings.root().node_dir(Area::Persistent, &settings.node);
    let size = || -> u64 {
        segments(&node_dir)
            .iter()
            .map(|path| fs::metadata(path).expect("stat").len())
            .sum()
    };
    // Compaction runs on the log's thread between rounds, possibly before the last write
    // above returned, so what was written is read from the log's counter, not the
    // directory; on a loaded machine compaction can also take a while, so wait for the
    // outcome rather than for a fixed time.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while node
        .sample("tidecache_persist_compactions_total{kind=\"rewritten\"}")
        .is_none_or(|rewritten| rewritten < 1.0)
        && std::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        node.metric("tidecache_persist_compactions_total{kind=\"rewritten\"}"),
        1.0
    );
    let written = node.metric("tidecache_persist_appended_bytes_total") as u64;
    assert!(size() * 10 < written, "{} of {written} bytes left", size());
    node.put("after", "compaction", None)
        .await
        .expect("durable");
    node.stop().await;

    let node = Node::start(&settings, &clock);
    for key in 0..10 {
        assert_eq!(node.value(&format!("k{key}")), Some(format!("99{value}")));
    }
    assert_eq!(node.value("deleted"), None);
    assert_eq!(node.value("after").as_deref(), Some("compaction"));
    assert_eq!(node.report.loaded, 11);
    node.stop().await;
}

#[tokio::test]
async fn compaction_keeps_a_tombstone_that_shadows_another_nodes_record() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = clock();
    let mut settings_a = settings(dir.path(), "node-a", FsyncPolicy::Never);
    settings_a.compact_min_bytes = 16 * 1024;
    let settings_b = settings(dir.path(), "node-b", FsyncPolicy::Never);
    // node-b wrote the key before it left; its segment stays on the shared volume.
    let b = Node::start(&settings_b, &clock);
    b.put("shadowed", "from b", None).await.expect("durable");
    b.stop().await;

    let a = Node::start(&settings_a, &clock);
    assert_eq!(a.value("shadowed").as_deref(), Some("from b"));
    a.delete("shadowed").await.expect("durable");
    a.put("only-mine", "v", None).await.expect("durable");
    a.delete("only-mine").await.expect("durable");
    // Garbage enough for a compaction: a hundred overwrites of ten keys.
    let value = "x".repeat(100);
    for round in 0..100 {
        for key in 0..10 {
            a.put(&format!("k{key}"), &format!("{round}{value}"), None)
                .await
                .expect("durable");
        }
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while a
        .sample("tidecache_persist_compactions_total{kind=\"rewritten\"}")
        .is_none_or(|rewritten| rewritten < 1.0)
        && std::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        a.metric("tidecache_persist_compactions_total{kind=\"rewritten\"}"),
        1.0
    );
    a.stop().await;

    // A restart reads both nodes' segments: the delete must still win over node-b's record.
    let restarted = Node::start(&settings_a, &clock);
    assert_eq!(restarted.value("shadowed"), None, "a deleted key came back");
    assert_eq!(restarted.value("only-mine"), None);
    assert_eq!(restarted.value("k3"), Some(format!("99{value}")));
    assert_eq!(restarted.report.loaded, 10);
    restarted.stop().await;
}

#[test]
fn out_of_space_and_quota_errors_are_disk_full() {
    assert!(log::is_disk_full(&std::io::Error::from_raw_os_error(28)));
    assert!(log::is_disk_full(&std::io::Error::from_raw_os_error(122)));
    assert!(!log::is_disk_full(&std::io::Error::from_raw_os_error(5)));
}

#[tokio::test]
async fn a_failed_fsync_stops_the_log_and_nothing_more_is_acknowledged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let settings = settings(dir.path(), "node-a", FsyncPolicy::Always);
    let clock = clock();
    let node = Node::start(&settings, &clock);
    node.put("k", "durable", None).await.expect("durable");
    node.log.fail_next_sync();
    let refused = node.put("k", "unsynced", None).await;
    assert_eq!(refused, Err(CommitError::Stopped));
    assert_eq!(node.value("k").as_deref(), Some("durable"), "undone");
    let reason = tokio::time::timeout(Duration::from_secs(5), node.log.stopped())
        .await
        .expect("the node is told to exit");
    assert!(reason.contains("fsync failed"), "{reason}");
    assert_eq!(
        node.put("k2", "later", None).await,
        Err(CommitError::Stopped)
    );
    assert_eq!(node.value("k2"), None);
    assert_eq!(
        node.metric("tidecache_persist_write_errors_total{kind=\"stopped\"}"),
        2.0
    );
    node.stop().await;
}

#[tokio::test]
async fn a_replicated_node_reloads_whole_versions_and_tombstones() {
    use crate::base::hlc::HybridClock;
    use crate::base::replica::{Applied, Replica};
    use tidecache_contract::disk::Record;

    let dir = tempfile::tempdir().expect("tempdir");
    let settings = settings(dir.path(), "node-a", FsyncPolicy::Always);
    let clock = clock();
    let replicated = || {
        Arc::new(Store::with_versions(
            StoreConfig::new(Schedule::every_minute()),
            clock.clone(),
            Arc::new(HybridClock::new(settings.node.tag())),
            true,
        ))
    };
    let start = |store: Arc<Store>| {
        let metrics = Arc::new(Metrics::new(store.clone()));
        let report =
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
        Node {
            store,
            log,
            metrics,
            report,
        }
    };
    let node = start(replicated());
    let kept = node.put("kept", "v", None).await.expect("durable");
    assert_eq!(kept.node(), settings.node.tag());
    let deleted = node.put("deleted", "v", Some(600)).await.expect("durable");
    node.delete("deleted").await.expect("durable");
    node.stop().await;

    let node = start(replicated());
    assert_eq!(node.store.get(b"kept").expect("loaded").version, kept);
    assert_eq!(node.value("deleted"), None);
    assert_eq!((node.report.loaded, node.report.deleted), (1, 1));
    // The tombstone outranks what it deleted when a peer offers it again.
    let late = Record {
        key: b"deleted".to_vec(),
        version: deleted.to_disk(),
        expiry_unix_nanos: clock
            .now()
            .checked_add(Duration::from_secs(600))
            .map(|at| at.as_millis() * 1_000_000),
        value: Some(b"v".to_vec()),
    };
    assert_eq!(node.store.apply(late), Applied::Stale);
    assert_eq!(node.value("deleted"), None);
    node.stop().await;
}
