//! One reconcile as a pipeline: validate → build → apply → observe → status. Only apply,
//! observe and the status write touch the API; validate and build are pure. A failure is made
//! visible in status and as an Event; an invalid spec is reported and waits for a change.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::ResourceExt;
use kube::core::DeserializeGuard;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use tracing::{instrument, warn};

use super::apply::apply_children;
use super::observe::observe;
use super::peer_token;
use super::update_status::write_status;
use super::{Context, Error};
use crate::build;
use crate::crd::CacheCluster;
use crate::status;
use crate::validate::{ValidationError, validate};

/// How often a healthy cluster is reconciled even without a watch event, to refresh the
/// janitor's status and catch anything a watch missed.
pub(super) const RESYNC: Duration = Duration::from_secs(300);
/// How often a Partitioned cluster is reconciled while partitions move (or its pods place keys
/// by different memberships), so that the status follows the moves: they change nothing the
/// watches see.
pub(super) const MOVES_POLL: Duration = Duration::from_secs(3);
/// Event reason for a stored CacheCluster that does not match the operator's types.
const UNREADABLE: &str = "Unreadable";
/// Longest failure message put in a condition or Event (an Event's note may have at most 1 kB).
const MAX_MESSAGE_BYTES: usize = 1000;

/// Reconciles a CacheCluster that could be read; one that cannot (stored under an older schema,
/// e.g. with an enum value this operator does not know) gets a Warning Event and waits for a
/// change, instead of stopping the watch for every cluster as a failed list would.
///
/// # Errors
/// As [`reconcile`].
pub(super) async fn reconcile_guarded(
    guard: Arc<DeserializeGuard<CacheCluster>>,
    context: Arc<Context>,
) -> Result<Action, Error> {
    match &guard.0 {
        Ok(cluster) => reconcile(Arc::new(cluster.clone()), context).await,
        Err(invalid) => {
            warn!(cluster = %guard.name_any(), error = %invalid, "cannot read CacheCluster");
            context
                .publish(
                    guard.as_ref(),
                    EventType::Warning,
                    UNREADABLE,
                    format!(
                        "the operator cannot read this CacheCluster ({invalid}); apply the \
                         current CRD and correct the resource"
                    ),
                    None,
                )
                .await;
            Ok(Action::await_change())
        }
    }
}

/// Brings one CacheCluster's children and status in line with its spec.
///
/// # Errors
/// An [`Error`] naming the step and object that failed; the controller retries it with
/// backoff. An invalid spec is not an error: it is reported in status and waits for a change.
#[instrument(skip_all, fields(cluster = %cluster.name_any(), namespace = cluster.namespace()))]
pub(super) async fn reconcile(
    cluster: Arc<CacheCluster>,
    context: Arc<Context>,
) -> Result<Action, Error> {
    let started = Instant::now();
    context.metrics.reconciles.inc();
    let result = reconcile_inner(&cluster, &context).await;
    match &result {
        Ok(_) => {
            context.record_outcome(cluster.as_ref(), false);
        }
        Err(error) => report_failure(&cluster, &context, error).await,
    }
    context.metrics.observe(started.elapsed());
    result
}

async fn reconcile_inner(cluster: &CacheCluster, context: &Context) -> Result<Action, Error> {
    if cluster.metadata.deletion_timestamp.is_some() {
        // Garbage collection removes the owned children; nothing to do.
        return Ok(Action::await_change());
    }
    let mut validated = match validate(cluster) {
        Ok(validated) => validated,
        Err(ValidationError::InvalidSpec { field, message }) => {
            return refuse(cluster, context, &format!("{field}: {message}")).await;
        }
        Err(error) => return Err(Error::Metadata(error)),
    };
    // Before the pods are built: they read the Secret, and name its revision.
    let peer_token = peer_token::ensure(cluster, &validated, context).await?;
    validated.peer_token_revision = Some(peer_token.revision.clone());
    let children = build::build(&validated);
    let applied = apply_children(cluster, &validated, children, context).await?;
    let observation = observe(&validated, cluster, applied, &peer_token, context).await?;
    let status = status::observed(&observation, cluster.status.as_ref(), &context.now());
    write_status(cluster, &validated.namespace, status, context).await?;
    let moving = observation.moves.as_ref().is_some_and(|m| m.unsettled());
    Ok(Action::requeue(if moving { MOVES_POLL } else { RESYNC }))
}

/// Reports an invalid spec in status (and as an Event when the message is new) and waits for
/// the admin to change the resource.
async fn refuse(cluster: &CacheCluster, context: &Context, message: &str) -> Result<Action, Error> {
    let namespace = cluster.namespace().unwrap_or_default();
    let status = status::invalid(
        cluster.metadata.generation,
        message,
        cluster.status.as_ref(),
        &context.now(),
    );
    if write_status(cluster, &namespace, status, context).await? {
        context
            .publish(
                cluster,
                EventType::Warning,
                status::INVALID_SPEC,
                message.to_string(),
                None,
            )
            .await;
    }
    Ok(Action::await_change())
}

/// Makes a failed reconcile visible where on-call looks: `Degraded=True` with reason
/// `ReconcileFailed` and the error with its causes, and a Warning Event when that message is new.
/// Best effort: if the API is what failed, these writes fail too and only the log remains.
async fn report_failure(cluster: &CacheCluster, context: &Context, error: &Error) {
    if matches!(error, Error::Status { .. } | Error::Metadata(_)) {
        return;
    }
    let message = summary(error);
    let namespace = cluster.namespace().unwrap_or_default();
    let status = status::failed(
        cluster.metadata.generation,
        &message,
        cluster.status.as_ref(),
        &context.now(),
    );
    match write_status(cluster, &namespace, status, context).await {
        Ok(true) => {
            context
                .publish(
                    cluster,
                    EventType::Warning,
                    status::RECONCILE_FAILED,
                    message,
                    None,
                )
                .await;
        }
        Ok(false) => {}
        Err(write_error) => {
            warn!(error = %crate::error_chain(&write_error), "cannot report a failure")
        }
    }
}

/// A failure as one line for a condition and an Event: the step that failed and the API
/// server's own message (its first line: later lines are a diff of the object), without the
/// debug dump that kube's error text carries.
fn summary(error: &Error) -> String {
    let cause = match std::error::Error::source(error) {
        Some(source) => match source.downcast_ref::<kube::Error>() {
            Some(kube::Error::Api(status)) => status.message.clone(),
            _ => source.to_string(),
        },
        None => return error.to_string(),
    };
    let cause = cause.lines().next().unwrap_or_default().trim_end();
    let mut text = format!("{error}: {cause}");
    if text.len() > MAX_MESSAGE_BYTES {
        let mut end = MAX_MESSAGE_BYTES;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}
