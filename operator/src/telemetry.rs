//! The operator's own observability: Prometheus metrics about reconciles and the `/metrics`,
//! `/healthz` and `/readyz` endpoints that serve them.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

use crate::webhook::serve::Serving;

/// Labels of the failure counter: which step failed.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabels {
    /// The [`crate::controller::Error`] variant, e.g. `Apply`.
    pub error: String,
}

/// Labels of the admission counter: the verdict.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReviewLabels {
    /// `allowed` or `denied`.
    pub result: &'static str,
}

/// The operator's metrics and the registry that exposes them.
pub struct Metrics {
    /// Reconciles started.
    pub reconciles: Counter,
    /// Reconciles that failed, by error kind.
    pub failures: Family<FailureLabels, Counter>,
    /// Seconds each reconcile took.
    pub duration: Histogram,
    /// Child objects written (created, updated or deleted).
    pub writes: Counter,
    /// 1 while this replica holds the leader Lease.
    pub leader: Gauge,
    /// CacheCluster admission reviews answered, by verdict.
    pub reviews: Family<ReviewLabels, Counter>,
    /// When the webhook's serving certificate expires (Unix seconds); 0 until one is served.
    pub certificate_expiry: Gauge,
    registry: Registry,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("tidecache_operator");
        let reconciles = Counter::default();
        let failures = Family::<FailureLabels, Counter>::default();
        let duration = Histogram::new([0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]);
        let writes = Counter::default();
        let leader = Gauge::default();
        registry.register("reconciles", "Reconciles started", reconciles.clone());
        registry.register(
            "reconcile_failures",
            "Reconciles that failed",
            failures.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Duration of reconciles",
            duration.clone(),
        );
        registry.register(
            "child_writes",
            "Child objects created, updated or deleted",
            writes.clone(),
        );
        registry.register("leader", "1 while this replica leads", leader.clone());
        let reviews = Family::<ReviewLabels, Counter>::default();
        registry.register(
            "admission_reviews",
            "CacheCluster admission reviews answered, by verdict",
            reviews.clone(),
        );
        let certificate_expiry = Gauge::default();
        registry.register(
            "webhook_certificate_expiry_timestamp_seconds",
            "When the admission webhook's serving certificate expires; 0 until one is served",
            certificate_expiry.clone(),
        );
        Metrics {
            reconciles,
            failures,
            duration,
            writes,
            leader,
            reviews,
            certificate_expiry,
            registry,
        }
    }
}

impl Metrics {
    /// Counts a failed reconcile.
    pub fn failed(&self, error: &str) {
        self.failures
            .get_or_create(&FailureLabels {
                error: error.to_string(),
            })
            .inc();
    }

    /// Counts one admission review.
    pub fn admission_review(&self, denied: bool) {
        let result = if denied { "denied" } else { "allowed" };
        self.reviews.get_or_create(&ReviewLabels { result }).inc();
    }

    /// Records when the served webhook certificate expires.
    pub fn webhook_certificate_expiry(&self, expiry: std::time::SystemTime) {
        let seconds = expiry
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_secs());
        self.certificate_expiry
            .set(i64::try_from(seconds).unwrap_or(i64::MAX));
    }

    /// Records the duration of one reconcile.
    pub fn observe(&self, elapsed: Duration) {
        self.duration.observe(elapsed.as_secs_f64());
    }

    /// The metrics in the Prometheus text format.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Encoding into a String cannot fail: fmt::Write for String is infallible.
        if prometheus_client::encoding::text::encode(&mut text, &self.registry).is_err() {
            text.clear();
        }
        text
    }
}

/// What the HTTP endpoints report on.
#[derive(Clone)]
pub struct Health {
    /// The metrics to serve.
    pub metrics: Arc<Metrics>,
    /// The process's shutdown: once it is cancelled readiness fails, while the process drains.
    pub shutdown: CancellationToken,
    /// The admission webhook's certificate, when this replica serves the webhook: readiness
    /// waits for one, so the webhook Service sends the API server only to replicas that can
    /// answer it.
    pub webhook: Option<Arc<Serving>>,
}

/// `/metrics`, `/healthz` (the process is alive) and `/readyz` (it is not shutting down, and
/// serves its webhook).
pub fn router(health: Health) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .with_state(health)
}

async fn metrics(State(health): State<Health>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        health.metrics.encode(),
    )
}

async fn ready(State(health): State<Health>) -> impl IntoResponse {
    if health.shutdown.is_cancelled() {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down")
    } else if health.webhook.as_ref().is_some_and(|w| !w.is_ready()) {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "no admission webhook certificate yet",
        )
    } else {
        (StatusCode::OK, "ok")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn readiness_fails_once_shutdown_begins() {
        let health = Health {
            metrics: Arc::new(Metrics::default()),
            shutdown: CancellationToken::new(),
            webhook: None,
        };
        let ok = ready(State(health.clone())).await.into_response();
        assert_eq!(ok.status(), StatusCode::OK);
        let waiting = Health {
            webhook: Some(Arc::new(Serving::default())),
            ..health.clone()
        };
        let no_certificate = ready(State(waiting)).await.into_response();
        assert_eq!(no_certificate.status(), StatusCode::SERVICE_UNAVAILABLE);
        health.shutdown.cancel();
        let stopping = ready(State(health.clone())).await.into_response();
        assert_eq!(stopping.status(), StatusCode::SERVICE_UNAVAILABLE);
    }

    #[test]
    fn metrics_are_encoded_with_the_prefix() {
        let metrics = Metrics::default();
        metrics.reconciles.inc();
        metrics.failed("Apply");
        let text = metrics.encode();
        assert!(
            text.contains("tidecache_operator_reconciles_total 1"),
            "{text}"
        );
        assert!(
            text.contains("tidecache_operator_reconcile_failures_total{error=\"Apply\"} 1"),
            "{text}"
        );
        metrics.admission_review(true);
        let text = metrics.encode();
        assert!(
            text.contains("tidecache_operator_admission_reviews_total{result=\"denied\"} 1"),
            "{text}"
        );
    }
}
