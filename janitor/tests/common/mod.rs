//! Helpers shared by the janitor's integration tests: configurations, entries written through
//! the real segment writer, and what a cache node would load back.

#![allow(
    dead_code,
    reason = "each test crate uses its own subset of the helpers"
)]

use std::collections::BTreeMap;
use std::path::Path;

use chrono::{DateTime, Duration, Utc};
use janitor::{Config, Summary, sweep};
use tidecache_contract::disk::{
    Area, AreaReader, ClusterRoot, Decoded, ObjectName, RecordRef, SegmentWriter, Version,
    WriterOptions,
};
use tidecache_contract::{Bucket, Schedule};

pub const NAMESPACE: &str = "default";
pub const CLUSTER: &str = "demo";

pub fn name(text: &str) -> ObjectName {
    ObjectName::new(text).expect("valid name")
}

pub fn utc(text: &str) -> DateTime<Utc> {
    text.parse().expect("RFC 3339")
}

pub fn root(data_dir: &Path) -> ClusterRoot {
    ClusterRoot::new(data_dir, &name(NAMESPACE), &name(CLUSTER))
}

pub fn config(data_dir: &Path, schedule: &Schedule, now: DateTime<Utc>, grace: Duration) -> Config {
    Config {
        data_dir: data_dir.to_path_buf(),
        namespace: name(NAMESPACE),
        cluster: name(CLUSTER),
        schedule: schedule.clone(),
        grace,
        now,
        dry_run: false,
    }
}

/// Runs one sweep, discarding events.
pub fn run(config: &Config) -> Summary {
    sweep(config, &mut |_| {})
}

/// One cache entry: a key, its node, its expiry.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Entry {
    pub key: Vec<u8>,
    pub node: usize,
    pub expiry: DateTime<Utc>,
}

/// Writes `entries` as cache-node does: each into the bucket of its expiry, in its node's
/// directory, through the real [`SegmentWriter`]. Returns the buckets written.
pub fn write_entries(root: &ClusterRoot, schedule: &Schedule, entries: &[Entry]) -> Vec<Bucket> {
    let mut groups: BTreeMap<(Bucket, usize), Vec<&Entry>> = BTreeMap::new();
    for entry in entries {
        let fire = schedule.bucket_for(entry.expiry).expect("schedule fires");
        let bucket = Bucket::new(fire).expect("whole-second fire time");
        groups.entry((bucket, entry.node)).or_default().push(entry);
    }
    let options = WriterOptions {
        max_segment_bytes: 4096,
    };
    for ((bucket, node), group) in &groups {
        let node = name(&format!("cache-{node}"));
        let mut writer =
            SegmentWriter::open(root, Area::Bucket(*bucket), &node, options).expect("open writer");
        for (i, entry) in group.iter().enumerate() {
            writer
                .append(RecordRef {
                    key: &entry.key,
                    version: Version {
                        hlc: i as u64,
                        node: node.tag(),
                    },
                    expiry_unix_nanos: entry.expiry.timestamp_nanos_opt(),
                    value: Some(b"value"),
                })
                .expect("append");
        }
        writer.sync_data().expect("sync");
    }
    let mut buckets: Vec<Bucket> = groups.keys().map(|(bucket, _)| *bucket).collect();
    buckets.dedup();
    buckets
}

/// The bucket directories present under the root.
pub fn buckets_on_disk(root: &ClusterRoot) -> Vec<Bucket> {
    root.list_areas()
        .expect("list")
        .items
        .into_iter()
        .filter_map(|area| match area {
            Area::Bucket(bucket) => Some(bucket),
            Area::Persistent => None,
        })
        .collect()
}

/// Every (key, expiry) a starting node would load, sorted.
pub fn load(root: &ClusterRoot) -> Vec<(Vec<u8>, i64)> {
    let mut loaded = Vec::new();
    for area in root.list_areas().expect("list").items {
        for item in AreaReader::open(root, area).expect("segments") {
            if let Decoded::Record { record, .. } = item.expect("readable segment") {
                loaded.push((record.key, record.expiry_unix_nanos.unwrap_or(i64::MAX)));
            }
        }
    }
    loaded.sort();
    loaded
}
