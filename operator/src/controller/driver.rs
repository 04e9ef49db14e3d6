//! The driver: kube's controller runtime watches CacheClusters and every kind of child they
//! own, calls the pipeline for each cluster that changed, and retries a failed cluster with
//! exponential backoff.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::Api;
use kube::api::DynamicObject;
use kube::core::DeserializeGuard;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use tracing::{info, warn};

use super::apply::child_kinds;
use super::pipeline::reconcile_guarded;
use super::{Context, Error};
use crate::crd::CacheCluster;
use crate::labels;

/// First retry delay after a failed reconcile; doubled per consecutive failure.
const BACKOFF_START: Duration = Duration::from_secs(2);
/// Longest retry delay after failures.
const BACKOFF_MAX: Duration = Duration::from_secs(300);

/// Runs the controller until `shutdown` completes: watches CacheClusters and the children it
/// owns and reconciles each cluster whenever one of them changes.
///
/// The children are watched by their metadata only, as generic objects of the same kinds the
/// apply engine sweeps, so a kind added to the children is watched and swept alike.
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
    let mut controller = Controller::new(
        Api::<DeserializeGuard<CacheCluster>>::all(client.clone()),
        watcher::Config::default(),
    );
    for kind in child_kinds() {
        let api = Api::<DynamicObject>::all_with(client.clone(), &kind);
        controller = controller.owns_with(api, kind, owned.clone());
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
