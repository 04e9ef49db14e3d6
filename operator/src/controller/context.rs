//! What every reconcile shares: the API client, the Event recorder, the metrics, the clock, the
//! reader of the cache pods' partition holdings, the caches of the children's watches and the
//! consecutive failures per cluster that the backoff is computed from.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Client, Resource};
use tracing::warn;

use super::caches::ChildCaches;
use super::holdings::HoldingsReader;
use crate::build::HTTP_PORT;
use crate::labels::MANAGER;
use crate::telemetry::Metrics;

/// A CacheCluster's namespace and name, the key of the failure counts.
type ClusterKey = (Option<String>, Option<String>);

/// What the reconciler shares between reconciles.
pub struct Context {
    /// The API client.
    pub client: Client,
    /// Publishes Events about CacheClusters.
    pub recorder: Recorder,
    /// The operator's metrics.
    pub metrics: Arc<Metrics>,
    /// The clock, injectable so that tests get stable condition times.
    pub now: Box<dyn Fn() -> Timestamp + Send + Sync>,
    /// Asks the cache pods of Partitioned clusters what they hold while partitions move.
    pub holdings: HoldingsReader,
    /// What the driver's watches have seen of the children, for the sweep.
    pub(super) children: ChildCaches,
    /// Consecutive failures per CacheCluster, for the retry backoff.
    failures: Mutex<HashMap<ClusterKey, u32>>,
}

impl Context {
    /// A context with the system clock; `instance` names this replica in Events.
    pub fn new(client: Client, metrics: Arc<Metrics>, instance: Option<String>) -> Context {
        let reporter = Reporter {
            controller: MANAGER.to_string(),
            instance,
        };
        Context {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            metrics,
            now: Box::new(Timestamp::now),
            holdings: HoldingsReader::new(HTTP_PORT),
            children: ChildCaches::new(),
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// The current time, as conditions carry it.
    pub(super) fn now(&self) -> Time {
        Time((self.now)())
    }

    /// Records the outcome of a reconcile and returns how many failures in a row preceded it.
    pub(super) fn record_outcome(&self, cluster: &impl Resource, failed: bool) -> u32 {
        let key = (
            cluster.meta().namespace.clone(),
            cluster.meta().name.clone(),
        );
        let mut failures = self
            .failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if failed {
            let count = failures.entry(key).or_insert(0);
            *count = count.saturating_add(1);
            *count
        } else {
            failures.remove(&key);
            0
        }
    }

    /// Publishes an Event about `cluster`; a failure is logged, never fatal (Events are
    /// best-effort by design).
    /// `related` names the child the Event is about, which also keeps Events about different
    /// children from being merged into one series.
    pub(super) async fn publish(
        &self,
        cluster: &impl Resource<DynamicType = ()>,
        type_: EventType,
        reason: &str,
        note: String,
        related: Option<ObjectReference>,
    ) {
        let reference: ObjectReference = cluster.object_ref(&());
        let event = Event {
            type_,
            reason: reason.to_string(),
            note: Some(note),
            action: "Reconcile".to_string(),
            secondary: related,
        };
        if let Err(error) = self.recorder.publish(&event, &reference).await {
            warn!(%error, reason, "failed to publish an Event");
        }
    }
}
