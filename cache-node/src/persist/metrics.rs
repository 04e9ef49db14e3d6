//! The persistence metrics: what the log appends and syncs, how long fsyncs lag behind
//! acknowledgements (the window a machine crash can lose under `everysec`), write errors,
//! compactions, and what the warm start loaded, skipped and rejected.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

/// An `outcome` or `kind` label.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct KindLabel {
    /// A fixed, small set of values per metric.
    pub(crate) kind: &'static str,
}

/// Every persistence metric, registered under `tidecache_persist_*` and
/// `tidecache_warm_start_*`.
#[derive(Debug, Clone)]
pub struct PersistMetrics {
    /// Records appended (values and tombstones).
    pub(crate) records: Counter,
    /// Bytes appended.
    pub(crate) bytes: Counter,
    /// Changes committed per batch: how much group commit shares.
    pub(crate) batch_changes: Histogram,
    /// fsync durations.
    pub(crate) fsync_duration: Histogram,
    /// Age of the oldest unsynced record when it was synced.
    pub(crate) fsync_lag: Histogram,
    /// Failed writes by kind (`disk_full`, `io`, `stopped`; `shadow`: the tombstones a
    /// round of moved keys leaves behind).
    pub(crate) write_errors: Family<KindLabel, Counter>,
    /// Compactions of the persistent area by result (`rewritten`, `skipped`, `failed`).
    pub(crate) compactions: Family<KindLabel, Counter>,
    /// Bytes of garbage the last compaction removed.
    pub(crate) compaction_reclaimed: Counter,
    /// How long the warm start took.
    pub(crate) warm_start_seconds: Gauge<f64, AtomicU64>,
    /// Records the warm start read, by outcome (`loaded`, `superseded`, `deleted`,
    /// `expired`, `refused`).
    pub(crate) warm_start_records: Family<KindLabel, Counter>,
    /// Damage the warm start found, by kind (`corrupt_record`, `torn_tail`,
    /// `unreadable_segment`).
    pub(crate) warm_start_damage: Family<KindLabel, Counter>,
    /// Buckets loaded and skipped (`loaded`, `expired`).
    pub(crate) warm_start_areas: Family<KindLabel, Counter>,
}

/// Every kind of [`PersistMetrics::write_errors`].
const WRITE_ERROR_KINDS: [&str; 4] = ["disk_full", "io", "stopped", "shadow"];
/// Every result of [`PersistMetrics::compactions`].
const COMPACTION_RESULTS: [&str; 3] = ["rewritten", "skipped", "failed"];

impl Default for PersistMetrics {
    /// The error and compaction counters start with every kind at 0, so that each series is
    /// exported before its first event: `increase()` and `rate()` see an event only as a
    /// change from an earlier sample, and a series born at 1 would hide the first disk error
    /// from the alert on it (deploy/monitoring/).
    fn default() -> PersistMetrics {
        let metrics = PersistMetrics {
            records: Counter::default(),
            bytes: Counter::default(),
            batch_changes: Histogram::new(exponential_buckets(1.0, 2.0, 14)),
            // 50 µs .. ~1.6 s
            fsync_duration: Histogram::new(exponential_buckets(0.000_05, 2.0, 16)),
            // 1 ms .. ~32 s
            fsync_lag: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            write_errors: Family::default(),
            compactions: Family::default(),
            compaction_reclaimed: Counter::default(),
            warm_start_seconds: Gauge::default(),
            warm_start_records: Family::default(),
            warm_start_damage: Family::default(),
            warm_start_areas: Family::default(),
        };
        for kind in WRITE_ERROR_KINDS {
            PersistMetrics::count(&metrics.write_errors, kind, 0);
        }
        for kind in COMPACTION_RESULTS {
            PersistMetrics::count(&metrics.compactions, kind, 0);
        }
        metrics
    }
}

impl PersistMetrics {
    /// Registers every metric in `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "persist_records",
            "Records appended to the data volume (values and tombstones)",
            self.records.clone(),
        );
        registry.register_with_unit(
            "persist_appended",
            "Bytes appended to the data volume",
            Unit::Bytes,
            self.bytes.clone(),
        );
        registry.register(
            "persist_batch_changes",
            "Changes committed together by one group commit",
            self.batch_changes.clone(),
        );
        registry.register_with_unit(
            "persist_fsync_duration",
            "Time one fsync of one segment took",
            Unit::Seconds,
            self.fsync_duration.clone(),
        );
        registry.register_with_unit(
            "persist_fsync_lag",
            "Age of the oldest acknowledged but unsynced record when it was synced: what a \
             machine crash could have lost",
            Unit::Seconds,
            self.fsync_lag.clone(),
        );
        registry.register(
            "persist_write_errors",
            "Writes refused because the data volume failed, by kind (disk_full, io, stopped; \
             shadow: tombstones of moved keys that could not be written)",
            self.write_errors.clone(),
        );
        registry.register(
            "persist_compactions",
            "Compactions of the persistent area, by result (rewritten, skipped, failed)",
            self.compactions.clone(),
        );
        registry.register_with_unit(
            "persist_compaction_reclaimed",
            "Bytes of garbage compactions removed",
            Unit::Bytes,
            self.compaction_reclaimed.clone(),
        );
        registry.register_with_unit(
            "warm_start_duration",
            "How long loading the data volume at start-up took",
            Unit::Seconds,
            self.warm_start_seconds.clone(),
        );
        registry.register(
            "warm_start_records",
            "Records read at start-up, by outcome (loaded, superseded, deleted, expired, refused)",
            self.warm_start_records.clone(),
        );
        registry.register(
            "warm_start_damage",
            "Damage found at start-up, by kind (corrupt_record: skipped and never served; \
             torn_tail: an append cut short by a crash; unreadable_segment)",
            self.warm_start_damage.clone(),
        );
        registry.register(
            "warm_start_areas",
            "Bucket directories and the persistent area at start-up, by outcome (loaded, expired)",
            self.warm_start_areas.clone(),
        );
    }

    pub(crate) fn count(family: &Family<KindLabel, Counter>, kind: &'static str, by: u64) {
        family.get_or_create(&KindLabel { kind }).inc_by(by);
    }
}
