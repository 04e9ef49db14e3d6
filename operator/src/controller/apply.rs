//! The apply engine: brings the children of one CacheCluster to what was built, writing as
//! little as possible, and then deletes the children that were not built this time.
//!
//! # Guarantees
//! - A built child is read first and applied (server-side apply, forced, under the one field
//!   manager) only when its applied-hash annotation differs from the hash of what was built, or
//!   a built field has another value (drift). Otherwise the reconcile makes no write.
//! - After every built child has been applied, every object of each kind of [`child_kinds`]
//!   that carries the labels every child carries, that this cluster owns (an ownerReference
//!   with its uid) and that was not applied in this reconcile is deleted: a child the spec
//!   stopped asking for goes, whatever its kind, without code per kind (as Stackable's
//!   `ClusterResources`).
//! - The sweep finds those objects in [`super::caches::ChildCaches`], what the driver's
//!   watches of the children have seen, not by listing: listing the eight kinds made 8 of the
//!   20 reads of every reconcile, more than a quarter of the requests with 1000 CacheClusters
//!   (tests/benches/operator_scale.rs).
//!
//! # Assumptions
//! - A child's kind and name identify it within the namespace, so they are what the sweep
//!   compares against what was applied.
//! - Objects of other clusters, and objects not owned (a retained volume), are never deleted,
//!   even if they carry the labels.
//! - The caches lag the API server by a watch event. A child created a moment ago and not
//!   yet cached is swept by the reconcile its watch event starts; one deleted a moment ago
//!   and still cached answers the sweep's delete with 404, which is taken as done.

use std::collections::HashSet;
use std::fmt::Debug;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::{ObjectReference, PersistentVolumeClaim, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::api::{ApiResource, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::runtime::events::EventType;
use kube::{Api, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tracing::info;

use super::caches::Cached;
use super::{Context, Error};
use crate::build::Children;
use crate::crd::CacheCluster;
use crate::labels::{self, APPLIED_HASH_ANNOTATION, MANAGER};
use crate::validate::ValidatedCluster;

/// Every kind of child a CacheCluster can have: what the sweep lists and the driver watches.
pub(super) fn child_kinds() -> [ApiResource; 8] {
    [
        ApiResource::erase::<ServiceAccount>(&()),
        ApiResource::erase::<RoleBinding>(&()),
        ApiResource::erase::<PersistentVolumeClaim>(&()),
        ApiResource::erase::<Service>(&()),
        ApiResource::erase::<StatefulSet>(&()),
        ApiResource::erase::<CronJob>(&()),
        ApiResource::erase::<PodDisruptionBudget>(&()),
        ApiResource::erase::<NetworkPolicy>(&()),
    ]
}

/// The children as they are after applying, for the status step.
pub(super) struct Applied {
    /// The cache pods' StatefulSet, whose status says how far a rollout is.
    pub(super) stateful_set: StatefulSet,
    /// The janitor CronJob, whose status says when it last ran.
    pub(super) janitor: CronJob,
}

/// Applies every built child of `cluster`, then deletes the ones no longer built.
///
/// # Errors
/// The first [`Error`] of a read, apply, list or delete; the children before it are applied.
pub(super) async fn apply_children(
    cluster: &CacheCluster,
    validated: &ValidatedCluster,
    children: Children,
    context: &Context,
) -> Result<Applied, Error> {
    // Destructured without `..`: a child added to `Children` does not compile here until it
    // is applied.
    let Children {
        service_account,
        role_binding,
        volume_claim,
        peers_service,
        client_service,
        stateful_set,
        janitor,
        disruption_budget,
        network_policy,
    } = children;
    let mut resources = ClusterResources::new(cluster, validated, context);
    let result = async {
        resources.apply(service_account).await?;
        resources.apply(role_binding).await?;
        resources.apply(volume_claim).await?;
        resources.apply(peers_service).await?;
        resources.apply(client_service).await?;
        let stateful_set = resources.apply_and_read(stateful_set).await?;
        let janitor = resources.apply_and_read(janitor).await?;
        if let Some(budget) = disruption_budget {
            resources.apply(budget).await?;
        }
        if let Some(policy) = network_policy {
            resources.apply(policy).await?;
        }
        resources.delete_orphans().await?;
        Ok(Applied {
            stateful_set,
            janitor,
        })
    }
    .await;
    // Also after a failure: what was written before it is said.
    resources.publish().await;
    result
}

/// The children applied in one reconcile, so that everything else of the cluster's can be
/// swept afterwards.
struct ClusterResources<'a> {
    /// The owner, which Events regard and whose uid marks what may be deleted.
    cluster: &'a CacheCluster,
    /// The CacheCluster's name.
    name: &'a str,
    /// The namespace of the cluster and its children.
    namespace: &'a str,
    /// The client, metrics and Event recorder.
    context: &'a Context,
    /// Kind and name of every child applied (or found up to date) so far.
    applied: HashSet<(ApiResource, String)>,
    /// The writes made so far, by reason, for their Events.
    changes: Vec<Change>,
}

/// The children written for one reason in one reconcile, published as one Event.
struct Change {
    /// The Event's reason: `Created`, `Updated` or `Deleted`.
    reason: &'static str,
    /// What was done to each child (`created StatefulSet demo`), in the order written: the
    /// Event's note lists them.
    children: Vec<String>,
    /// The child the Event is about when it is only one.
    related: Option<ObjectReference>,
}

/// Longest Event note (the API server refuses more than 1 kB).
const MAX_NOTE_BYTES: usize = 1000;

impl<'a> ClusterResources<'a> {
    fn new(
        cluster: &'a CacheCluster,
        validated: &'a ValidatedCluster,
        context: &'a Context,
    ) -> ClusterResources<'a> {
        ClusterResources {
            cluster,
            name: &validated.name,
            namespace: &validated.namespace,
            context,
            applied: HashSet::new(),
            changes: Vec::new(),
        }
    }

    /// Applies `desired` unless it is known to match, without returning the stored object.
    async fn apply<K>(&mut self, desired: K) -> Result<(), Error>
    where
        K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
            + Clone
            + Debug
            + Serialize
            + DeserializeOwned,
    {
        self.ensure(desired, false).await.map(drop)
    }

    /// Applies `desired` unless the stored object already matches it; returns the stored
    /// object.
    async fn apply_and_read<K>(&mut self, desired: K) -> Result<K, Error>
    where
        K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
            + Clone
            + Debug
            + Serialize
            + DeserializeOwned,
    {
        let stored = self.ensure(desired, true).await?;
        Ok(stored.expect("the stored object is read when asked for"))
    }

    /// Applies `desired` unless the stored object already matches it, and remembers it as
    /// wanted. Returns the stored object, except when it was not read because the children's
    /// caches show it unchanged since it last matched the same build (only when `read` is
    /// false). A child the caches do not have (and the operator has not just written) is
    /// applied without reading it first.
    async fn ensure<K>(&mut self, mut desired: K, read: bool) -> Result<Option<K>, Error>
    where
        K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
            + Clone
            + Debug
            + Serialize
            + DeserializeOwned,
    {
        let kind = K::kind(&()).into_owned();
        let resource = ApiResource::erase::<K>(&());
        let name = desired.name_any();
        self.applied.insert((resource.clone(), name.clone()));
        let serialize = |source| Error::Serialize {
            kind: kind.clone(),
            name: name.clone(),
            source,
        };
        let hash = applied_hash(&serde_json::to_vec(&desired).map_err(serialize)?);
        desired
            .annotations_mut()
            .insert(APPLIED_HASH_ANNOTATION.to_string(), hash.clone());
        let desired_value = serde_json::to_value(&desired).map_err(serialize)?;
        let caches = &self.context.children;
        let cached = caches.lookup(&resource, self.namespace, &name, &hash).await;
        let api: Api<K> = Api::namespaced(self.context.client.clone(), self.namespace);
        let keep = |object: &K| -> Result<Option<Vec<u8>>, Error> {
            if read {
                serde_json::to_vec(object).map(Some).map_err(serialize)
            } else {
                Ok(None)
            }
        };
        let current = match cached {
            Cached::Verified(_) if !read => return Ok(None),
            // The StatefulSet is read on every reconcile: its status changes most, and the
            // e2e's steady_state_writes_nothing counts reconciles by its reads.
            Cached::Verified(Some(object)) if kind != "StatefulSet" => {
                if let Ok(object) = serde_json::from_slice::<K>(&object) {
                    return Ok(Some(object));
                }
                self.read(&api, &kind, &name).await?
            }
            Cached::Absent => None,
            Cached::Verified(_) | Cached::Unknown => {
                let current = self.read(&api, &kind, &name).await?;
                if let Some(current) = current {
                    let same_hash =
                        current.annotations().get(APPLIED_HASH_ANNOTATION) == Some(&hash);
                    let current_value = serde_json::to_value(&current).map_err(serialize)?;
                    if same_hash && is_subset(&desired_value, &current_value) {
                        caches.verified(
                            &resource,
                            self.namespace,
                            &name,
                            current.resource_version(),
                            &hash,
                            keep(&current)?,
                        );
                        return Ok(Some(current));
                    }
                    Some(current)
                } else {
                    None
                }
            }
        };
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
        caches.wrote(&resource, self.namespace, &name, applied.resource_version());
        // Only what matches after the write (a non-canonical quantity does not) counts as
        // verified.
        let applied_value = serde_json::to_value(&applied).map_err(serialize)?;
        let matches = is_subset(&desired_value, &applied_value);
        caches.verified(
            &resource,
            self.namespace,
            &name,
            applied.resource_version().filter(|_| matches),
            &hash,
            keep(&applied)?,
        );
        self.context.metrics.writes.inc();
        // Not read first: created unless someone else had written it (its fields).
        let created = match &current {
            Some(_) => false,
            None => applied
                .meta()
                .managed_fields
                .iter()
                .flatten()
                .all(|fields| fields.manager.as_deref() == Some(MANAGER)),
        };
        let verb = if created { "created" } else { "updated" };
        info!(%kind, name, "{verb}");
        self.note(
            if created { "Created" } else { "Updated" },
            verb,
            format!("{kind} {name}"),
            applied.object_ref(&()),
        );
        Ok(Some(applied))
    }

    /// Reads the stored child.
    async fn read<K>(&self, api: &Api<K>, kind: &str, name: &str) -> Result<Option<K>, Error>
    where
        K: Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned,
    {
        api.get_opt(name).await.map_err(|source| Error::Get {
            kind: kind.to_string(),
            name: name.to_string(),
            source,
        })
    }

    /// Remembers a change for the Event of its reason.
    fn note(
        &mut self,
        reason: &'static str,
        verb: &'static str,
        child: String,
        reference: ObjectReference,
    ) {
        let child = format!("{verb} {child}");
        match self
            .changes
            .iter_mut()
            .find(|change| change.reason == reason)
        {
            Some(change) => {
                change.children.push(child);
                change.related = None;
            }
            None => self.changes.push(Change {
                reason,
                children: vec![child],
                related: Some(reference),
            }),
        }
    }

    /// Publishes one Event per reason of the changes made so far (created, updated,
    /// deleted), each listing what was done to which child (`created ServiceAccount
    /// demo-cache, created RoleBinding demo-cache, ...`), in the order it was done: one Event
    /// per reconcile rather than one per child written (with 1000 new CacheClusters the
    /// Events were 10 of the 22 writes of each).
    async fn publish(&mut self) {
        for change in std::mem::take(&mut self.changes) {
            let mut note = change.children.join(", ");
            if note.len() > MAX_NOTE_BYTES {
                let mut end = MAX_NOTE_BYTES - 3;
                while !note.is_char_boundary(end) {
                    end -= 1;
                }
                note.truncate(end);
                note.push_str("...");
            }
            self.context
                .publish(
                    self.cluster,
                    EventType::Normal,
                    change.reason,
                    note,
                    change.related,
                )
                .await;
        }
    }

    /// Deletes, for every kind of [`child_kinds`], what carries this cluster's labels and
    /// ownerReference but was not applied in this reconcile, as the children's caches show it.
    async fn delete_orphans(&mut self) -> Result<(), Error> {
        let selector = labels::children_selector(self.name);
        let uid = self.cluster.metadata.uid.as_deref();
        for (kind, store) in self.context.children.stores() {
            // At once but before the watch's first complete list, whose events start the
            // reconciles that would otherwise miss what it brings.
            store.wait_until_ready().await.map_err(|_| Error::Watch {
                kind: kind.kind.clone(),
            })?;
            let api: Api<DynamicObject> =
                Api::namespaced_with(self.context.client.clone(), self.namespace, kind);
            for object in store.state() {
                let name = object.name_any();
                let ours = object.namespace().as_deref() == Some(self.namespace)
                    && selector.iter().all(|(key, value)| {
                        object.labels().get(*key).map(String::as_str) == Some(*value)
                    });
                let owned = object
                    .owner_references()
                    .iter()
                    .any(|owner| Some(owner.uid.as_str()) == uid);
                let deleting = object.metadata.deletion_timestamp.is_some();
                if !ours
                    || !owned
                    || deleting
                    || self.applied.contains(&(kind.clone(), name.clone()))
                {
                    continue;
                }
                match api.delete(&name, &DeleteParams::default()).await {
                    Ok(_) => {}
                    // Deleted since the cache saw it: nothing left to do.
                    Err(kube::Error::Api(status)) if status.code == 404 => continue,
                    Err(source) => {
                        return Err(Error::Delete {
                            kind: kind.kind.clone(),
                            name: name.clone(),
                            source,
                        });
                    }
                }
                self.context.metrics.writes.inc();
                info!(kind = %kind.kind, name, "deleted");
                self.note(
                    "Deleted",
                    "deleted",
                    format!("{} {name}", kind.kind),
                    object.object_ref(kind),
                );
            }
        }
        Ok(())
    }
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
mod tests {
    use serde_json::json;

    use super::*;
    use crate::{build, fixtures, validate};

    #[test]
    fn subset_ignores_extra_fields_but_not_changed_ones() {
        let desired = json!({"a": 1, "b": {"c": [1, {"d": 2}]}});
        assert!(is_subset(
            &desired,
            &json!({"a": 1, "x": 0, "b": {"c": [1, {"d": 2, "e": 3}]}})
        ));
        assert!(!is_subset(
            &desired,
            &json!({"a": 2, "b": {"c": [1, {"d": 2}]}})
        ));
        assert!(!is_subset(&desired, &json!({"a": 1, "b": {"c": [1]}})));
    }

    /// A built child of a kind the sweep does not list would never be deleted once it stops
    /// being built, nor watched for drift.
    #[test]
    fn every_built_kind_is_swept_and_watched() {
        let validated = validate::validate(&fixtures::load("full")).expect("valid");
        let Children {
            service_account,
            role_binding,
            volume_claim,
            peers_service,
            client_service,
            stateful_set,
            janitor,
            disruption_budget,
            network_policy,
        } = build::build(&validated);
        fn kind_of<K: Resource<DynamicType = ()>>(_: &K) -> ApiResource {
            ApiResource::erase::<K>(&())
        }
        let built = [
            kind_of(&service_account),
            kind_of(&role_binding),
            kind_of(&volume_claim),
            kind_of(&peers_service),
            kind_of(&client_service),
            kind_of(&stateful_set),
            kind_of(&janitor),
            kind_of(&disruption_budget.expect("the full fixture has a budget")),
            kind_of(&network_policy.expect("the full fixture has a network policy")),
        ];
        let swept = child_kinds();
        for kind in built {
            assert!(swept.contains(&kind), "{} is not swept", kind.kind);
        }
    }
}
