//! Warm start: before the node turns ready, load every unexpired area from every node's
//! subdirectory into the store.
//!
//! # Rules
//! - Expired buckets are skipped without being read (the janitor will delete them).
//! - Across all areas and nodes, the newest record of each key wins (contract version: clock,
//!   then node tag; a value beats a tombstone of the same version, which is the shadow a write
//!   leaves in the area it moved the key from). A winning tombstone deletes the key.
//! - A corrupt record is skipped, counted and logged, never served (the format never takes
//!   bytes inside a record, such as a value that holds an encoded record, for a record); a
//!   torn tail (an append cut
//!   short by a crash) is ignored; an unreadable segment is counted, logged and skipped. None
//!   of them stops the node.
//! - Winners already expired, and entries the memory capacity refuses, are not loaded.
//! - A single node loads versions without their node tag, as it issues them; a replicated
//!   node keeps whole versions and loads winning tombstones as tombstones, through the same
//!   last-writer-wins path as records from peers.
//!
//! The winners are collected first and stored afterwards, so the store only ever sees one
//! version of a key and the order segments are read in does not matter.

use std::time::{Duration, Instant};

use bytes::Bytes;
use hashbrown::HashMap;
use hashbrown::hash_map::Entry;
use tidecache_contract::disk::{
    Area, AreaReader, ClusterRoot, Decoded, DiskError, Record, Version as DiskVersion,
};

use super::metrics::PersistMetrics;
use crate::base::replica::{Applied, Loader};
use crate::base::time::Timestamp;
use crate::base::version::Version;

/// How often a long load logs its progress.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// What a warm start found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// Areas read (unexpired buckets and the persistent area).
    pub areas: u64,
    /// Expired buckets skipped unread.
    pub expired_buckets: u64,
    /// Intact records read.
    pub records: u64,
    /// Entries stored in memory.
    pub loaded: u64,
    /// Records replaced by a newer record of the same key.
    pub superseded: u64,
    /// Keys whose newest record is a tombstone.
    pub deleted: u64,
    /// Keys whose newest record has expired.
    pub expired: u64,
    /// Entries the store refused (memory capacity under `noeviction`).
    pub refused: u64,
    /// Damaged regions skipped (a damaged record, or bytes up to the next record the writer
    /// vouched for).
    pub corrupt_records: u64,
    /// The bytes of those regions.
    pub corrupt_bytes: u64,
    /// Records skipped because their keys belong to other nodes (partitioned mode).
    pub elsewhere: u64,
    /// Torn tails ignored.
    pub torn_tails: u64,
    /// Segments that could not be read at all.
    pub unreadable_segments: u64,
    /// How long it took.
    pub elapsed: Duration,
}

/// Loads every unexpired area under `root` into `store` (see the module documentation).
///
/// # Errors
/// [`DiskError::Io`] only if the cluster root or an area cannot be listed: the node cannot
/// know what it is missing and must not turn ready. Damage inside files is reported, not
/// returned.
pub fn warm_start(
    root: &ClusterRoot,
    store: &dyn Loader,
    metrics: &PersistMetrics,
) -> Result<LoadReport, DiskError> {
    warm_start_keys(root, store, metrics, &|_| true)
}

/// As [`warm_start`], loading only the keys `wanted` accepts: in partitioned mode, those of
/// the partitions this node owns (the shared volume holds every node's segments).
///
/// # Errors
/// As [`warm_start`].
pub fn warm_start_keys(
    root: &ClusterRoot,
    store: &dyn Loader,
    metrics: &PersistMetrics,
    wanted: &dyn Fn(&[u8]) -> bool,
) -> Result<LoadReport, DiskError> {
    let started = Instant::now();
    let mut report = LoadReport::default();
    let now = store.now();
    let now_time = now.to_datetime();
    let areas = root.list_areas()?;
    for foreign in &areas.foreign {
        tracing::warn!(path = %foreign.display(), "not a tidecache area; left alone");
    }
    tracing::info!(
        root = %root.path().display(),
        areas = areas.items.len(),
        "warm start: loading the data volume"
    );
    let mut newest: HashMap<Vec<u8>, Winner> = HashMap::new();
    let mut last_progress = Instant::now();
    for area in areas.items {
        if let (Area::Bucket(bucket), Some(now)) = (area, now_time)
            && bucket.is_expired(now, chrono::Duration::zero())
        {
            report.expired_buckets += 1;
            continue;
        }
        report.areas += 1;
        let area_started = Instant::now();
        let area_records = report.records;
        let mut reader = AreaReader::open(root, area)?;
        while let Some(item) = reader.next() {
            let path = || {
                reader
                    .segment()
                    .map(|segment| segment.path.display().to_string())
                    .unwrap_or_default()
            };
            match item {
                Ok(Decoded::Record { record, .. }) => {
                    report.records += 1;
                    if !wanted(&record.key) {
                        report.elsewhere += 1;
                        continue;
                    }
                    let winner = Winner {
                        version: record.version,
                        value: record.value,
                        expiry_unix_nanos: record.expiry_unix_nanos,
                    };
                    match newest.entry(record.key) {
                        Entry::Occupied(mut kept) => {
                            report.superseded += 1;
                            if winner.rank() > kept.get().rank() {
                                kept.insert(winner);
                            }
                        }
                        Entry::Vacant(slot) => {
                            slot.insert(winner);
                        }
                    }
                }
                Ok(Decoded::Corrupt { offset, len }) => {
                    report.corrupt_records += 1;
                    report.corrupt_bytes += len;
                    tracing::error!(
                        segment = %path(),
                        offset,
                        len,
                        "corrupt record skipped: it is never served"
                    );
                }
                Ok(Decoded::TornTail { offset, len }) => {
                    report.torn_tails += 1;
                    tracing::info!(
                        segment = %path(),
                        offset,
                        len,
                        "torn tail ignored (an append cut short by a crash)"
                    );
                }
                Err(error) => {
                    report.unreadable_segments += 1;
                    tracing::error!(%error, "segment skipped: cannot be read");
                }
            }
            if last_progress.elapsed() >= PROGRESS_EVERY {
                last_progress = Instant::now();
                tracing::info!(
                    records = report.records,
                    keys = newest.len(),
                    elapsed_s = started.elapsed().as_secs(),
                    "warm start: still reading"
                );
            }
        }
        tracing::info!(
            area = %area.dir_name(),
            records = report.records - area_records,
            elapsed_ms = area_started.elapsed().as_millis() as u64,
            "warm start: area read"
        );
    }
    let replicated = store.keeps_tombstones();
    for (key, record) in newest {
        if replicated {
            // A replicated node keeps whole versions (its ETags and last-writer-wins against
            // peers) and tombstones (so that a peer's older write cannot bring a deleted key
            // back), exactly as if the records had arrived from a peer.
            store.observe(record.version, now);
            let tombstone = record.value.is_none();
            let record = Record {
                key,
                version: record.version,
                expiry_unix_nanos: record.expiry_unix_nanos,
                value: record.value,
            };
            match store.apply(record) {
                Applied::Changed if tombstone => report.deleted += 1,
                Applied::Changed => report.loaded += 1,
                Applied::Stale => report.expired += 1,
                Applied::Refused => report.refused += 1,
            }
            continue;
        }
        let Some(value) = record.value else {
            report.deleted += 1;
            continue;
        };
        let expires_at = record.expiry_unix_nanos.map(Timestamp::from_unix_nanos);
        if expires_at.is_some_and(|expiry| expiry <= now) {
            report.expired += 1;
            continue;
        }
        let version = Version::new(record.version.hlc);
        match store.load(Bytes::from(key), Bytes::from(value), version, expires_at) {
            Applied::Changed => report.loaded += 1,
            Applied::Stale | Applied::Refused => report.refused += 1,
        }
    }
    report.elapsed = started.elapsed();
    record_metrics(&report, metrics);
    tracing::info!(
        loaded = report.loaded,
        records = report.records,
        superseded = report.superseded,
        deleted = report.deleted,
        expired = report.expired,
        refused = report.refused,
        other_nodes = report.elsewhere,
        expired_buckets = report.expired_buckets,
        corrupt_records = report.corrupt_records,
        corrupt_bytes = report.corrupt_bytes,
        torn_tails = report.torn_tails,
        unreadable_segments = report.unreadable_segments,
        elapsed_ms = report.elapsed.as_millis() as u64,
        "warm start done"
    );
    Ok(report)
}

/// The newest record of a key so far, without its key (the map holds it).
struct Winner {
    version: DiskVersion,
    value: Option<Vec<u8>>,
    expiry_unix_nanos: Option<i64>,
}

impl Winner {
    /// The order in which records of one key win: the newer version, then a value over a
    /// tombstone of the same version (the shadow a write leaves in the area it moved the key
    /// out of carries the write's own version).
    fn rank(&self) -> (DiskVersion, bool) {
        (self.version, self.value.is_some())
    }
}

fn record_metrics(report: &LoadReport, metrics: &PersistMetrics) {
    metrics.warm_start_seconds.set(report.elapsed.as_secs_f64());
    for (kind, count) in [
        ("loaded", report.loaded),
        ("superseded", report.superseded),
        ("deleted", report.deleted),
        ("expired", report.expired),
        ("refused", report.refused),
    ] {
        PersistMetrics::count(&metrics.warm_start_records, kind, count);
    }
    for (kind, count) in [
        ("corrupt_record", report.corrupt_records),
        ("torn_tail", report.torn_tails),
        ("unreadable_segment", report.unreadable_segments),
    ] {
        PersistMetrics::count(&metrics.warm_start_damage, kind, count);
    }
    for (kind, count) in [
        ("loaded", report.areas),
        ("expired", report.expired_buckets),
    ] {
        PersistMetrics::count(&metrics.warm_start_areas, kind, count);
    }
}
