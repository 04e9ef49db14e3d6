//! The backend's metrics, under `tidecache_backend_*`: statement latency and outcomes,
//! rows loaded, the write-behind queue's depth, bytes and lag, and the listener's state.

use std::sync::atomic::AtomicU64;
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use super::BackendError;

/// A statement's kind and outcome.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct StatementLabels {
    /// `select`, `upsert`, `delete`, `flush`.
    pub(crate) op: &'static str,
    /// `ok`, `unavailable`, `refused`.
    pub(crate) outcome: &'static str,
}

/// A statement's kind.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct OpLabel {
    /// `select`, `upsert`, `delete`, `flush`.
    pub(crate) op: &'static str,
}

/// A kind of event.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct KindLabel {
    /// A fixed, small set of values per metric.
    pub(crate) kind: &'static str,
}

/// Every backend metric. Clones share the values.
#[derive(Debug, Clone)]
pub struct BackendMetrics {
    pub(crate) statements: Family<StatementLabels, Counter>,
    pub(crate) latency: Family<OpLabel, Histogram>,
    pub(crate) rows_loaded: Family<KindLabel, Counter>,
    pub(crate) queue_entries: Gauge,
    pub(crate) queue_bytes: Gauge,
    pub(crate) queue_lag: Gauge<f64, AtomicU64>,
    pub(crate) queue_refused: Counter,
    pub(crate) queue_set_aside: Counter,
    pub(crate) queue_damage: Counter,
    pub(crate) flushed: Counter,
    pub(crate) listener_connected: Gauge,
    pub(crate) notifications: Counter,
    pub(crate) refreshed: Family<KindLabel, Counter>,
    pub(crate) revalidations: Counter,
}

impl Default for BackendMetrics {
    fn default() -> BackendMetrics {
        BackendMetrics {
            statements: Family::default(),
            // 100 µs .. ~6.5 s
            latency: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.000_1, 2.0, 17))
            }),
            rows_loaded: Family::default(),
            queue_entries: Gauge::default(),
            queue_bytes: Gauge::default(),
            queue_lag: Gauge::default(),
            queue_refused: Counter::default(),
            queue_set_aside: Counter::default(),
            queue_damage: Counter::default(),
            flushed: Counter::default(),
            listener_connected: Gauge::default(),
            notifications: Counter::default(),
            refreshed: Family::default(),
            revalidations: Counter::default(),
        }
    }
}

impl BackendMetrics {
    /// Counts a statement that started at `started` and ended with `result`.
    pub(crate) fn observe<T>(
        &self,
        op: &'static str,
        started: Instant,
        result: &Result<T, BackendError>,
    ) {
        let outcome = match result {
            Ok(_) => "ok",
            Err(error) if error.is_transient() => "unavailable",
            Err(_) => "refused",
        };
        self.statements
            .get_or_create(&StatementLabels { op, outcome })
            .inc();
        self.latency
            .get_or_create(&OpLabel { op })
            .observe(started.elapsed().as_secs_f64());
    }

    /// Counts the keys a select found and did not find.
    pub(crate) fn loaded(&self, found: u64, missing: u64) {
        self.rows_loaded
            .get_or_create(&KindLabel { kind: "found" })
            .inc_by(found);
        self.rows_loaded
            .get_or_create(&KindLabel { kind: "missing" })
            .inc_by(missing);
    }

    /// Counts a cached key the listener refreshed (`updated`, `deleted`, `unchanged`).
    pub fn refreshed(&self, kind: &'static str) {
        self.refreshed.get_or_create(&KindLabel { kind }).inc();
    }

    /// Counts a completed check of every cached key against the table.
    pub fn revalidated(&self) {
        self.revalidations.inc();
    }

    /// Registers every metric in `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "backend_statements",
            "Statements sent to the backend database, by op and outcome",
            self.statements.clone(),
        );
        registry.register_with_unit(
            "backend_statement_duration",
            "Latency of the backend database's statements (a flush: its whole transaction)",
            Unit::Seconds,
            self.latency.clone(),
        );
        registry.register(
            "backend_rows_loaded",
            "Keys read-through loads asked the backend for, found or missing",
            self.rows_loaded.clone(),
        );
        registry.register(
            "backend_write_behind_queue_entries",
            "Write-behind writes acknowledged and not yet in the backend table",
            self.queue_entries.clone(),
        );
        registry.register_with_unit(
            "backend_write_behind_queue",
            "Bytes of the write-behind writes not yet in the backend table",
            Unit::Bytes,
            self.queue_bytes.clone(),
        );
        registry.register_with_unit(
            "backend_write_behind_lag",
            "Age of the oldest write-behind write not yet in the backend table",
            Unit::Seconds,
            self.queue_lag.clone(),
        );
        registry.register(
            "backend_write_behind_refused",
            "Writes refused because the write-behind queue was full",
            self.queue_refused.clone(),
        );
        registry.register(
            "backend_write_behind_set_aside",
            "Write-behind writes the backend refused, kept in refused.log",
            self.queue_set_aside.clone(),
        );
        registry.register(
            "backend_write_behind_damaged_files",
            "Queue files with a damaged record found at start (the rest of the file not flushed)",
            self.queue_damage.clone(),
        );
        registry.register(
            "backend_write_behind_flushed",
            "Write-behind writes flushed to the backend table",
            self.flushed.clone(),
        );
        registry.register(
            "backend_listener_connected",
            "1 while the listener for the backend table's changes is connected",
            self.listener_connected.clone(),
        );
        registry.register(
            "backend_notifications",
            "Change notifications received from the backend table",
            self.notifications.clone(),
        );
        registry.register(
            "backend_revalidations",
            "Completed checks of every cached key against the backend table (after each (re)connection of the listener)",
            self.revalidations.clone(),
        );
        registry.register(
            "backend_refreshed_keys",
            "Cached keys checked against the backend after a change, by result",
            self.refreshed.clone(),
        );
    }
}
