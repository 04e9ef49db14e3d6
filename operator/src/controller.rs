//! The reconciler: validate → build → apply → status, the only part that talks to the API.
//!
//! # Guarantees
//! - Every write is a server-side apply under the one field manager [`labels::MANAGER`].
//! - A child is written only when it differs from what was built (its applied-hash annotation
//!   differs, or one of the built fields was changed by someone else), and the status only
//!   when it differs from the stored one: reconciling an unchanged CacheCluster makes no
//!   writes, so the watch on the children cannot loop.
//! - Drift is undone: the controller watches the children it owns, and a deleted or edited
//!   child no longer matches what was built.
//! - An invalid spec writes `Ready=False` with reason `InvalidSpec`, publishes a Warning Event
//!   when the message is new, and waits for the next change of the resource.
//!
//! # Assumptions
//! - Children are removed by garbage collection through their ownerReferences, so deletion
//!   needs no finalizer (a retained volume deliberately has no ownerReference).
//! - Quantities in `spec.resources` are written in canonical form; a non-canonical one (such
//!   as `0.5`) is re-applied on each reconcile, which is harmless but not free.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{
    Node, ObjectReference, PersistentVolumeClaim, Pod, Service, ServiceAccount,
};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::RoleBinding;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::core::DeserializeGuard;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::watcher;
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tracing::{info, instrument, warn};

use crate::build::{self, Children};
use crate::crd::{CacheCluster, CacheClusterStatus};
use crate::labels::{self, APPLIED_HASH_ANNOTATION, CACHE_COMPONENT, JANITOR_COMPONENT, MANAGER};
use crate::status::{self, Observation};
use crate::telemetry::Metrics;
use crate::validate::{ValidatedCluster, ValidationError, validate};

/// How often a healthy cluster is reconciled even without a watch event, to refresh the
/// janitor's status and catch anything a watch missed.
const RESYNC: Duration = Duration::from_secs(300);
/// First retry delay after a failed reconcile; doubled per consecutive failure.
const BACKOFF_START: Duration = Duration::from_secs(2);
/// Longest retry delay after failures.
const BACKOFF_MAX: Duration = Duration::from_secs(300);
/// Event reason for a stored CacheCluster that does not match the operator's types.
const UNREADABLE: &str = "Unreadable";
/// The zone shown for ready pods whose node has no zone label.
const UNKNOWN_ZONE: &str = "unknown";

/// Why a reconcile failed. Each variant names the step and object, and is retried with backoff.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The object lacks metadata the API server always sets.
    #[error("CacheCluster cannot be reconciled")]
    Metadata(#[source] ValidationError),
    /// Reading a child failed.
    #[error("failed to read {kind} {name}")]
    Get {
        /// The child's kind.
        kind: String,
        /// The child's name.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// Applying a child failed.
    #[error("failed to apply {kind} {name}")]
    Apply {
        /// The child's kind.
        kind: String,
        /// The child's name.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// Deleting a child that is no longer wanted failed.
    #[error("failed to delete {kind} {name}")]
    Delete {
        /// The child's kind.
        kind: String,
        /// The child's name.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// Listing the pods, nodes or Jobs that status is computed from failed.
    #[error("failed to observe {what} of CacheCluster {cluster}")]
    Observe {
        /// What was being read.
        what: &'static str,
        /// The CacheCluster.
        cluster: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// Writing the status failed.
    #[error("failed to write the status of CacheCluster {name}")]
    Status {
        /// The CacheCluster.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// A built object could not be serialised (a bug: the types always serialise).
    #[error("failed to serialise {kind} {name}")]
    Serialize {
        /// The child's kind.
        kind: String,
        /// The child's name.
        name: String,
        /// The serialisation error.
        #[source]
        source: serde_json::Error,
    },
}

impl Error {
    /// The variant's name, used as the failure metric's label.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Metadata(_) => "Metadata",
            Error::Get { .. } => "Get",
            Error::Apply { .. } => "Apply",
            Error::Delete { .. } => "Delete",
            Error::Observe { .. } => "Observe",
            Error::Status { .. } => "Status",
            Error::Serialize { .. } => "Serialize",
        }
    }
}

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
            failures: Mutex::new(HashMap::new()),
        }
    }

    fn now(&self) -> Time {
        Time((self.now)())
    }

    /// Records the outcome of a reconcile and returns how many failures in a row preceded it.
    fn record_outcome(&self, cluster: &impl Resource, failed: bool) -> u32 {
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
    async fn publish(
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

/// Runs the controller until `shutdown` completes: watches CacheClusters and the children it
/// owns and reconciles each cluster whenever one of them changes.
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
    Controller::new(
        Api::<DeserializeGuard<CacheCluster>>::all(client.clone()),
        watcher::Config::default(),
    )
    .owns(Api::<StatefulSet>::all(client.clone()), owned.clone())
    .owns(Api::<Service>::all(client.clone()), owned.clone())
    .owns(Api::<CronJob>::all(client.clone()), owned.clone())
    .owns(
        Api::<PodDisruptionBudget>::all(client.clone()),
        owned.clone(),
    )
    .owns(
        Api::<PersistentVolumeClaim>::all(client.clone()),
        owned.clone(),
    )
    .owns(Api::<ServiceAccount>::all(client.clone()), owned.clone())
    .owns(Api::<RoleBinding>::all(client), owned)
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
pub fn error_policy(
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

/// Reconciles a CacheCluster that could be read; one that cannot (stored under an older schema,
/// e.g. with an enum value this operator does not know) gets a Warning Event and waits for a
/// change, instead of stopping the watch for every cluster as a failed list would.
///
/// # Errors
/// As [`reconcile`].
pub async fn reconcile_guarded(
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
pub async fn reconcile(cluster: Arc<CacheCluster>, context: Arc<Context>) -> Result<Action, Error> {
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

async fn reconcile_inner(cluster: &CacheCluster, context: &Context) -> Result<Action, Error> {
    if cluster.metadata.deletion_timestamp.is_some() {
        // Garbage collection removes the owned children; nothing to do.
        return Ok(Action::await_change());
    }
    let validated = match validate(cluster) {
        Ok(validated) => validated,
        Err(ValidationError::InvalidSpec { field, message }) => {
            return refuse(cluster, context, &format!("{field}: {message}")).await;
        }
        Err(error) => return Err(Error::Metadata(error)),
    };
    let children = build::build(&validated);
    let applied = apply_children(cluster, &validated, children, context).await?;
    let observation = observe(&validated, cluster, applied, context).await?;
    let status = status::observed(&observation, cluster.status.as_ref(), &context.now());
    write_status(cluster, &validated.namespace, status, context).await?;
    Ok(Action::requeue(RESYNC))
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

/// The children as they are after applying, for the status step.
struct Applied {
    stateful_set: StatefulSet,
    janitor: CronJob,
}

async fn apply_children(
    cluster: &CacheCluster,
    validated: &ValidatedCluster,
    children: Children,
    context: &Context,
) -> Result<Applied, Error> {
    let Children {
        service_account,
        role_binding,
        volume_claim,
        peers_service,
        client_service,
        stateful_set,
        janitor,
        disruption_budget,
    } = children;
    let namespace = &validated.namespace;
    ensure(cluster, context, namespace, service_account).await?;
    ensure(cluster, context, namespace, role_binding).await?;
    ensure(cluster, context, namespace, volume_claim).await?;
    ensure(cluster, context, namespace, peers_service).await?;
    ensure(cluster, context, namespace, client_service).await?;
    let stateful_set = ensure(cluster, context, namespace, stateful_set).await?;
    let janitor = ensure(cluster, context, namespace, janitor).await?;
    match disruption_budget {
        Some(budget) => {
            ensure(cluster, context, namespace, budget).await?;
        }
        None => {
            let name = labels::names::disruption_budget(&validated.name);
            remove::<PodDisruptionBudget>(cluster, context, namespace, &name).await?;
        }
    }
    Ok(Applied {
        stateful_set,
        janitor,
    })
}

/// Applies `desired` unless the stored object already matches it; returns the stored object.
async fn ensure<K>(
    cluster: &CacheCluster,
    context: &Context,
    namespace: &str,
    mut desired: K,
) -> Result<K, Error>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + Debug
        + Serialize
        + DeserializeOwned,
{
    let kind = K::kind(&()).into_owned();
    let name = desired.name_any();
    let serialize = |source| Error::Serialize {
        kind: kind.clone(),
        name: name.clone(),
        source,
    };
    let hash = applied_hash(&serde_json::to_vec(&desired).map_err(serialize)?);
    desired
        .annotations_mut()
        .insert(APPLIED_HASH_ANNOTATION.to_string(), hash.clone());
    let api: Api<K> = Api::namespaced(context.client.clone(), namespace);
    let current = api.get_opt(&name).await.map_err(|source| Error::Get {
        kind: kind.clone(),
        name: name.clone(),
        source,
    })?;
    if let Some(current) = &current {
        let same_hash = current.annotations().get(APPLIED_HASH_ANNOTATION) == Some(&hash);
        let desired_value = serde_json::to_value(&desired).map_err(serialize)?;
        let current_value = serde_json::to_value(current).map_err(serialize)?;
        if same_hash && is_subset(&desired_value, &current_value) {
            return Ok(current.clone());
        }
    }
    let applied = api
        .patch(
            &name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&desired),
        )
        .await
        .map_err(|source| Error::Apply {
            kind: kind.clone(),
            name: name.clone(),
            source,
        })?;
    context.metrics.writes.inc();
    let (reason, verb) = if current.is_some() {
        ("Updated", "updated")
    } else {
        ("Created", "created")
    };
    info!(%kind, name, "{verb}");
    context
        .publish(
            cluster,
            EventType::Normal,
            reason,
            format!("{verb} {kind} {name}"),
            Some(applied.object_ref(&())),
        )
        .await;
    Ok(applied)
}

/// Deletes a child that the spec no longer asks for, if it exists.
async fn remove<K>(
    cluster: &CacheCluster,
    context: &Context,
    namespace: &str,
    name: &str,
) -> Result<(), Error>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + Debug
        + DeserializeOwned,
{
    let kind = K::kind(&()).into_owned();
    let api: Api<K> = Api::namespaced(context.client.clone(), namespace);
    let current = api.get_opt(name).await.map_err(|source| Error::Get {
        kind: kind.clone(),
        name: name.to_string(),
        source,
    })?;
    // Only delete what this cluster owns: a same-named object of someone else stays.
    let owned = current.as_ref().is_some_and(|current| {
        current
            .owner_references()
            .iter()
            .any(|owner| Some(&owner.uid) == cluster.metadata.uid.as_ref())
    });
    if !owned {
        return Ok(());
    }
    let related = current.as_ref().map(|current| current.object_ref(&()));
    api.delete(name, &DeleteParams::default())
        .await
        .map_err(|source| Error::Delete {
            kind: kind.clone(),
            name: name.to_string(),
            source,
        })?;
    context.metrics.writes.inc();
    context
        .publish(
            cluster,
            EventType::Normal,
            "Deleted",
            format!("deleted {kind} {name}"),
            related,
        )
        .await;
    Ok(())
}

/// Reads what the status is computed from: ready pods per zone and the janitor's last Job.
async fn observe(
    validated: &ValidatedCluster,
    cluster: &CacheCluster,
    applied: Applied,
    context: &Context,
) -> Result<Observation, Error> {
    let observe_error = |what| {
        let cluster = validated.name.clone();
        move |source| Error::Observe {
            what,
            cluster,
            source,
        }
    };
    let namespace = &validated.namespace;
    let selector = labels::selector_string(&validated.name, CACHE_COMPONENT);
    let pods: Api<Pod> = Api::namespaced(context.client.clone(), namespace);
    let pods = pods
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(observe_error("pods"))?;
    let nodes: Api<Node> = Api::all(context.client.clone());
    let mut zone_of_node: BTreeMap<String, String> = BTreeMap::new();
    let mut ready_per_zone: BTreeMap<String, i32> = BTreeMap::new();
    for pod in pods.items.iter().filter(|pod| is_ready(pod)) {
        let Some(node_name) = pod.spec.as_ref().and_then(|s| s.node_name.clone()) else {
            continue;
        };
        let zone = match zone_of_node.get(&node_name) {
            Some(zone) => zone.clone(),
            None => {
                let node = nodes
                    .get_opt(&node_name)
                    .await
                    .map_err(observe_error("nodes"))?;
                let zone = node
                    .and_then(|node| {
                        node.labels()
                            .get(&validated.spec.topology.zone_key)
                            .cloned()
                    })
                    .unwrap_or_else(|| UNKNOWN_ZONE.to_string());
                zone_of_node.insert(node_name, zone.clone());
                zone
            }
        };
        *ready_per_zone.entry(zone).or_insert(0) += 1;
    }
    let jobs: Api<Job> = Api::namespaced(context.client.clone(), namespace);
    let jobs = jobs
        .list(
            &ListParams::default()
                .labels(&labels::selector_string(&validated.name, JANITOR_COMPONENT)),
        )
        .await
        .map_err(observe_error("janitor jobs"))?;
    let last_job = jobs.items.into_iter().max_by(|a, b| {
        (
            a.metadata.creation_timestamp.as_ref(),
            a.metadata.name.as_ref(),
        )
            .cmp(&(
                b.metadata.creation_timestamp.as_ref(),
                b.metadata.name.as_ref(),
            ))
    });
    Ok(Observation {
        generation: cluster.metadata.generation,
        desired_replicas: validated.spec.replicas,
        stateful_set_generation: applied.stateful_set.metadata.generation,
        stateful_set: applied.stateful_set.status,
        ready_per_zone,
        schedule: validated.schedule.to_string(),
        selector,
        janitor: applied.janitor.status,
        last_job,
    })
}

fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|status| status.conditions.as_ref())
        .is_some_and(|conditions| {
            conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        })
}

/// Writes `status` if it differs from the stored one; returns whether it wrote.
async fn write_status(
    cluster: &CacheCluster,
    namespace: &str,
    status: CacheClusterStatus,
    context: &Context,
) -> Result<bool, Error> {
    if cluster.status.as_ref() == Some(&status) {
        return Ok(false);
    }
    let name = cluster.name_any();
    let api: Api<CacheCluster> = Api::namespaced(context.client.clone(), namespace);
    let patch = json!({
        "apiVersion": CacheCluster::api_version(&()),
        "kind": CacheCluster::kind(&()),
        "status": status,
    });
    api.patch_status(
        &name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map_err(|source| Error::Status { name, source })?;
    Ok(true)
}

/// Longest failure message put in a condition or Event (an Event's note may have at most 1 kB).
const MAX_MESSAGE_BYTES: usize = 1000;

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

/// Whether every field of `desired` has the same value in `current` (which may have more:
/// defaults and fields of other managers). Lists must match element by element.
fn is_subset(desired: &Value, current: &Value) -> bool {
    match (desired, current) {
        (Value::Object(desired), Value::Object(current)) => desired.iter().all(|(key, value)| {
            value.is_null()
                || current
                    .get(key)
                    .is_some_and(|other| is_subset(value, other))
        }),
        (Value::Array(desired), Value::Array(current)) => {
            desired.len() == current.len()
                && desired.iter().zip(current).all(|(d, c)| is_subset(d, c))
        }
        (desired, current) => desired == current,
    }
}

/// A stable hash (64-bit FNV-1a, hex) of a child as built, so that a change of the build
/// output is noticed even where the subset check cannot see it (a field that was removed).
fn applied_hash(bytes: &[u8]) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{hash:016x}")
}

#[cfg(test)]
mod tests;
