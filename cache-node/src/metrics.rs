//! Prometheus metrics: requests by route and status, latency by route, sweep durations, and
//! the store's counters (entries, bytes used and capacity, evictions by reason) read from the
//! store at scrape time so that the hot path pays nothing for them.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use crate::backend::BackendMetrics;
use crate::persist::PersistMetrics;
use crate::replication::ReplicationMetrics;
use crate::store::Store;

/// The content type of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Labels of a served request.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    /// The route template, e.g. `/v1/keys/{key}` (never the key itself: unbounded).
    route: &'static str,
    method: &'static str,
    status: u16,
}

/// Labels of a latency observation.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: &'static str,
    method: &'static str,
}

type HistogramFamily = Family<RouteLabels, Histogram, fn() -> Histogram>;

/// Labels of a TLS certificate reload.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TlsReloadLabels {
    /// `applied` (new connections get the new certificate) or `refused` (the files did not
    /// make a usable certificate and key; the old ones stay).
    outcome: &'static str,
}

/// Labels of a failed TLS handshake.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TlsListenerLabels {
    /// `http` or `resp`.
    listener: &'static str,
}

/// The node's metrics registry.
#[derive(Debug)]
pub struct Metrics {
    /// Everything below, plus the store collector, for encoding.
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: HistogramFamily,
    sweep_duration: Histogram,
    /// The persistence log's and warm start's metrics (zero on a memory-only node).
    persistence: PersistMetrics,
    /// Replication's metrics (zero on a node without peers).
    replication: Arc<ReplicationMetrics>,
    /// The database behind the cache (zero without one).
    backend: BackendMetrics,
    /// Reloads of the TLS certificate, by outcome (zero without TLS).
    tls_reloads: Family<TlsReloadLabels, Counter>,
    /// TLS handshakes that failed or timed out, by listener (zero without TLS).
    tls_handshake_failures: Family<TlsListenerLabels, Counter>,
}

fn latency_histogram() -> Histogram {
    // 50 µs .. ~1.6 s
    Histogram::new(exponential_buckets(0.000_05, 2.0, 16))
}

impl Metrics {
    /// A registry exposing the request and sweep metrics and `store`'s counters.
    pub fn new(store: Arc<Store>) -> Metrics {
        let mut registry = Registry::with_prefix("tidecache");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests served, by route template, method and status code",
            requests.clone(),
        );
        let latency: HistogramFamily = Family::new_with_constructor(latency_histogram);
        registry.register_with_unit(
            "http_request_duration",
            "Time from request received to response headers ready, by route and method",
            Unit::Seconds,
            latency.clone(),
        );
        let sweep_duration = Histogram::new(exponential_buckets(0.000_01, 4.0, 12));
        registry.register_with_unit(
            "sweep_duration",
            "Time one expiry sweep took to evict the due buckets",
            Unit::Seconds,
            sweep_duration.clone(),
        );
        registry.register_collector(Box::new(StoreCollector(store)));
        let persistence = PersistMetrics::default();
        persistence.register(&mut registry);
        let backend = BackendMetrics::default();
        backend.register(&mut registry);
        let replication = Arc::new(ReplicationMetrics::default());
        replication.register(&mut registry);
        let tls_reloads = Family::<TlsReloadLabels, Counter>::default();
        registry.register(
            "tls_reloads",
            "Changed TLS certificate files read again, by outcome: applied, or refused (the \
             previous certificate stays)",
            tls_reloads.clone(),
        );
        let tls_handshake_failures = Family::<TlsListenerLabels, Counter>::default();
        registry.register(
            "tls_handshake_failures",
            "TLS handshakes that failed or timed out, by listener (http or resp)",
            tls_handshake_failures.clone(),
        );
        Metrics {
            tls_reloads,
            tls_handshake_failures,
            persistence,
            backend,
            replication,
            registry,
            requests,
            latency,
            sweep_duration,
        }
    }

    /// Replication's metrics, shared with its tasks.
    pub fn replication(&self) -> &Arc<ReplicationMetrics> {
        &self.replication
    }

    /// Records one served request.
    pub fn observe_request(
        &self,
        route: &'static str,
        method: &'static str,
        status: u16,
        elapsed: Duration,
    ) {
        self.requests
            .get_or_create(&RequestLabels {
                route,
                method,
                status,
            })
            .inc();
        self.latency
            .get_or_create(&RouteLabels { route, method })
            .observe(elapsed.as_secs_f64());
    }

    /// Records a reload of changed TLS files: `applied`, or refused.
    pub fn observe_tls_reload(&self, applied: bool) {
        let outcome = if applied { "applied" } else { "refused" };
        self.tls_reloads
            .get_or_create(&TlsReloadLabels { outcome })
            .inc();
    }

    /// Records a failed TLS handshake on `listener` (`http` or `resp`).
    pub fn observe_tls_handshake_failure(&self, listener: &'static str) {
        self.tls_handshake_failures
            .get_or_create(&TlsListenerLabels { listener })
            .inc();
    }

    /// Records one sweep.
    pub fn observe_sweep(&self, elapsed: Duration) {
        self.sweep_duration.observe(elapsed.as_secs_f64());
    }

    /// The backend's metrics, for the database behind the cache to update.
    pub fn backend(&self) -> &BackendMetrics {
        &self.backend
    }

    /// The persistence metrics, for the log and the warm start to update.
    pub fn persistence(&self) -> &PersistMetrics {
        &self.persistence
    }

    /// The OpenMetrics text exposition of everything.
    ///
    /// # Errors
    /// Only if formatting into a `String` fails, which it does not.
    pub fn encode(&self) -> Result<String, fmt::Error> {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

/// Reads the store's counters at scrape time.
#[derive(Debug)]
struct StoreCollector(Arc<Store>);

impl Collector for StoreCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let stats = self.0.stats();
        let gauge = |encoder: &mut DescriptorEncoder, name, help, unit, value: u64| {
            let gauge = ConstGauge::new(value);
            let metric = encoder.encode_descriptor(name, help, unit, gauge.metric_type())?;
            gauge.encode(metric)
        };
        gauge(
            &mut encoder,
            "entries",
            "Entries in memory, including expired ones not yet swept",
            None,
            stats.entries,
        )?;
        gauge(
            &mut encoder,
            "memory_used",
            "Bytes charged by entries (keys, values and per-entry overhead)",
            Some(&Unit::Bytes),
            stats.used_bytes,
        )?;
        if stats.capacity_bytes != u64::MAX {
            gauge(
                &mut encoder,
                "memory_capacity",
                "The most bytes entries may be charged before eviction (or refusal)",
                Some(&Unit::Bytes),
                stats.capacity_bytes,
            )?;
        }
        let mut evictions = encoder.encode_descriptor(
            "evictions",
            "Entries evicted, by reason: expired (bucket swept or expired victim) or capacity",
            None,
            MetricType::Counter,
        )?;
        for (reason, count) in [
            ("expired", stats.evicted_expired),
            ("capacity", stats.evicted_capacity),
        ] {
            let counter = ConstCounter::new(count);
            counter.encode(evictions.encode_family(&[("reason", reason)])?)?;
        }
        Ok(())
    }
}
