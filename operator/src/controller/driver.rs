//! The driver: kube's controller runtime watches CacheClusters and every kind of child they
//! own, calls the pipeline for each cluster that changed, and retries a failed cluster with
//! exponential backoff.
//!
//! # At scale (tests/benches/operator_scale.rs, 1000 CacheClusters)
//! - At most [`CONCURRENCY`] reconciles run at once. Unbounded, a thousand new CacheClusters
//!   started a thousand reconciles together: each holds its request's connection (kube's
//!   client speaks HTTP/1.1, one connection per request in flight), so the operator's RSS
//!   reached 240 MiB, and none finished before all had made most of their requests.
//! - A CacheCluster triggers a reconcile when its spec (generation), labels or annotations
//!   change, not when only its status does: the status is written by the reconcile itself,
//!   and each such write used to start a reconcile that read every child again to change
//!   nothing. Annotations stay triggers: a peer-token rotation is asked for by one.
//! - The CacheClusters' cache keeps no managedFields, which nothing here reads.
//! - The children's watches, which start reconciles, also fill the caches the sweep reads
//!   ([`super::caches::ChildCaches`]) instead of listing every kind on every reconcile.
//! - A child's watch event that only brings back the operator's own write, or only changes
//!   the status of a child whose status the operator does not read (a PodDisruptionBudget),
//!   starts no reconcile ([`super::caches::ChildCaches::changed`]); other changes (the
//!   StatefulSet controller's status, an edit to undo, a deletion) do.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::core::DeserializeGuard;
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::utils::Predicate;
use kube::runtime::{WatchStreamExt, predicates, reflector, watcher};
use kube::{Api, ResourceExt};
use tracing::{info, warn};

use super::caches::ChildMeta;
use super::pipeline::reconcile_guarded;
use super::{Context, Error};
use crate::crd::CacheCluster;
use crate::labels;

/// First retry delay after a failed reconcile; doubled per consecutive failure.
const BACKOFF_START: Duration = Duration::from_secs(2);
/// Longest retry delay after failures.
const BACKOFF_MAX: Duration = Duration::from_secs(300);
/// Most reconciles running at once: enough to keep the API server busy (each reconcile
/// makes its requests one after another), few enough that connections and memory stay
/// bounded however many CacheClusters change at once.
const CONCURRENCY: u16 = 16;

/// Runs the controller until `shutdown` completes: watches CacheClusters and the children it
/// owns and reconciles each cluster whenever one of them changes.
///
/// The children are watched by their metadata only, as generic objects of the same kinds the
/// apply engine sweeps (into the caches it sweeps from), so a kind added to the children is
/// watched and swept alike.
pub async fn run(
    context: Arc<Context>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let client = context.client.clone();
    let owned = watcher::Config::default().labels(&format!(
        "{}={}",
        labels::MANAGED_BY_KEY,
        labels::MANAGER
    ));
    let (store, writer) = reflector::store();
    let clusters = watcher(
        Api::<DeserializeGuard<CacheCluster>>::all(client.clone()),
        watcher::Config::default(),
    )
    .modify(|cluster| cluster.managed_fields_mut().clear())
    .reflect(writer)
    .applied_objects()
    .predicate_filter(
        predicates::generation
            .combine(predicates::labels)
            .combine(predicates::annotations),
        Default::default(),
    );
    let mut controller = Controller::for_stream(clusters, store)
        .with_config(controller::Config::default().concurrency(CONCURRENCY));
    for (kind, writer) in context.children.take_writers() {
        // Metadata-only requests: the type is what selects them.
        let api = Api::<ChildMeta>::all_with(client.clone(), &kind);
        let (caches, event_kind) = (context.clone(), kind.clone());
        let children = watcher(api, owned.clone())
            .modify(|child| child.managed_fields_mut().clear())
            .reflect(writer)
            .filter_map(move |event| {
                let caches = &caches.children;
                std::future::ready(match event {
                    Ok(watcher::Event::Apply(child) | watcher::Event::InitApply(child)) => {
                        caches.changed(&event_kind, &child).then_some(Ok(child))
                    }
                    Ok(watcher::Event::Delete(child)) => {
                        caches.deleted(&event_kind, &child);
                        Some(Ok(child))
                    }
                    Ok(watcher::Event::Init | watcher::Event::InitDone) => None,
                    Err(error) => Some(Err(error)),
                })
            });
        controller = controller.owns_stream_with(children, kind);
    }
    controller
        .graceful_shutdown_on(shutdown)
        .run(reconcile_guarded, error_policy, context)
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => info!(cluster = %object, "reconciled"),
                Err(error) => warn!(error = %error, "reconcile failed"),
            }
        })
        .await;
}

/// After a failure: count it and retry with exponential backoff.
fn error_policy(
    cluster: Arc<DeserializeGuard<CacheCluster>>,
    error: &Error,
    context: Arc<Context>,
) -> Action {
    warn!(error = %error, source = ?std::error::Error::source(error), "reconcile failed");
    context.metrics.failed(error.kind());
    Action::requeue(backoff(context.record_outcome(cluster.as_ref(), true)))
}

/// The retry delay after `failures` consecutive failures: doubling from [`BACKOFF_START`],
/// capped at [`BACKOFF_MAX`].
fn backoff(failures: u32) -> Duration {
    let factor = 2u32.saturating_pow(failures.saturating_sub(1).min(16));
    BACKOFF_START.saturating_mul(factor).min(BACKOFF_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        assert_eq!(backoff(1), Duration::from_secs(2));
        assert_eq!(backoff(2), Duration::from_secs(4));
        assert_eq!(backoff(5), Duration::from_secs(32));
        assert_eq!(backoff(40), BACKOFF_MAX);
    }
}
