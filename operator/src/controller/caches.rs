//! The caches of the children's watches, and which of their events start a reconcile.
//!
//! The driver watches the metadata of every kind of child (to undo drift and follow the
//! StatefulSet's and CronJob's status). The same watches fill one store per kind, which the
//! apply engine's sweep reads instead of listing every kind on every reconcile, and decide
//! which events are worth a reconcile. Both were found with 1000 CacheClusters
//! (tests/benches/operator_scale.rs): listing made 8 of the 20 reads of every reconcile, and
//! the events of the operator's own writes and of status it does not read started about one
//! reconcile more per new CacheCluster (3.2 to 3.9 per cluster, 2.8 without them).

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::batch::v1::CronJob;
use kube::ResourceExt;
use kube::api::{ApiResource, DynamicObject};
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{ObjectRef, Store, store::Writer};

use super::apply::child_kinds;

/// The kinds of child whose status the status step reads (`apply::Applied`): every change of
/// theirs matters, a change of their status too.
fn status_kinds() -> [ApiResource; 2] {
    [
        ApiResource::erase::<StatefulSet>(&()),
        ApiResource::erase::<CronJob>(&()),
    ]
}

/// A child as the driver's watches see it: its metadata.
pub(super) type ChildMeta = PartialObjectMeta<DynamicObject>;

/// A child's kind (plural), namespace and name.
type ChildKey = (String, String, String);

/// What the driver's watches have seen of the children, one store per kind of
/// [`child_kinds`], filled by the writers the driver takes once
/// ([`ChildCaches::take_writers`]). The driver keeps their metadata without managedFields:
/// with 1000 CacheClusters they hold 9000 objects.
///
/// It also decides which watch events start a reconcile ([`ChildCaches::changed`]): not the
/// echo of the operator's own write, and not a change of only the status of a child whose
/// status the operator does not read.
pub struct ChildCaches {
    stores: Vec<(ApiResource, Store<ChildMeta>)>,
    /// The stores' writers until the driver takes them.
    writers: Mutex<Vec<(ApiResource, Writer<ChildMeta>)>>,
    /// The resourceVersion of each child's last write by this operator whose watch event has
    /// not come yet; an entry goes with the child's next event, so only live children can
    /// have one.
    own_writes: Mutex<HashMap<ChildKey, String>>,
    /// For each child whose status the operator does not read and whose kind has a
    /// generation: a hash of what any change but one of its status changes (generation,
    /// labels, annotations, ownerReferences, deletion), as last seen.
    shapes: Mutex<HashMap<ChildKey, (u64, Option<String>)>>,
    /// For each child the apply engine last found matching what it built, or wrote: the
    /// child's resourceVersion then and the applied hash it was built with. While the cached
    /// child still has that resourceVersion nobody has changed it since, so the apply engine
    /// need not read it again (7 of the 12 reads of a reconcile with 1000 CacheClusters).
    /// For a child whose stored object the status step reads, the object as read then (as
    /// JSON), so that it need not be read again while unchanged.
    verified: Mutex<HashMap<ChildKey, Verified>>,
}

/// A child as the apply engine last found it matching what it built.
struct Verified {
    /// The child's resourceVersion then.
    version: String,
    /// The applied hash of the build it matched.
    hash: String,
    /// The stored object then, as JSON, when the apply engine had to return it.
    object: Option<Arc<[u8]>>,
}

/// What the children's caches say of one built child before the apply engine reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Cached {
    /// Cached at the resourceVersion at which it last matched the same build: unchanged.
    /// With the stored object as it was read then, if it was kept.
    Verified(Option<Arc<[u8]>>),
    /// Not cached, and not written by this operator since its last deletion: it does not
    /// exist, or was created a moment ago by someone else (applying is right either way).
    Absent,
    /// Anything else: it must be read.
    Unknown,
}

impl ChildCaches {
    /// Empty stores, not ready until their writers have seen a first complete list.
    pub(super) fn new() -> ChildCaches {
        let writers: Vec<(ApiResource, Writer<ChildMeta>)> = child_kinds()
            .into_iter()
            .map(|kind| {
                let writer = Writer::new(kind.clone());
                (kind, writer)
            })
            .collect();
        ChildCaches {
            stores: writers
                .iter()
                .map(|(kind, writer)| (kind.clone(), writer.as_reader()))
                .collect(),
            writers: Mutex::new(writers),
            own_writes: Mutex::new(HashMap::new()),
            shapes: Mutex::new(HashMap::new()),
            verified: Mutex::new(HashMap::new()),
        }
    }

    /// What the cache of `kind` says of the child `namespace`/`name` built with `hash`
    /// ([`Cached`]); waits for the cache's first complete list.
    pub(super) async fn lookup(
        &self,
        kind: &ApiResource,
        namespace: &str,
        name: &str,
        hash: &str,
    ) -> Cached {
        let Some((_, store)) = self.stores.iter().find(|(cached, _)| cached == kind) else {
            return Cached::Unknown;
        };
        if store.wait_until_ready().await.is_err() {
            return Cached::Unknown;
        }
        let key = (kind.plural.clone(), namespace.to_string(), name.to_string());
        let verified = self
            .verified
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
            .map(|verified| {
                (
                    verified.version.clone(),
                    verified.hash == hash,
                    verified.object.clone(),
                )
            });
        let cached = store.get(&ObjectRef::new_with(name, kind.clone()).within(namespace));
        match (cached, verified) {
            (Some(child), Some((version, true, object)))
                if child.resource_version().as_deref() == Some(version.as_str()) =>
            {
                Cached::Verified(object)
            }
            // Its write's watch event may not have come yet.
            (None, None) if !self.own_writes().contains_key(&key) => Cached::Absent,
            _ => Cached::Unknown,
        }
    }

    /// Records that the child, at `version`, matches what was built with `hash` (or forgets
    /// it when the version is unknown), with the stored `object` (JSON) if it is to be kept.
    pub(super) fn verified(
        &self,
        kind: &ApiResource,
        namespace: &str,
        name: &str,
        version: Option<String>,
        hash: &str,
        object: Option<Vec<u8>>,
    ) {
        let key = (kind.plural.clone(), namespace.to_string(), name.to_string());
        let mut verified = self.verified.lock().unwrap_or_else(PoisonError::into_inner);
        match version {
            Some(version) => verified.insert(
                key,
                Verified {
                    version,
                    hash: hash.to_string(),
                    object: object.map(Arc::from),
                },
            ),
            None => verified.remove(&key),
        };
    }

    /// The writers of the stores, for the watches that fill them; empty after the first call.
    pub(super) fn take_writers(&self) -> Vec<(ApiResource, Writer<ChildMeta>)> {
        std::mem::take(&mut *self.writers.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// The stores, kind by kind.
    pub(super) fn stores(&self) -> &[(ApiResource, Store<ChildMeta>)] {
        &self.stores
    }

    /// Records that the operator wrote the child, which now has `version`.
    pub(super) fn wrote(
        &self,
        kind: &ApiResource,
        namespace: &str,
        name: &str,
        version: Option<String>,
    ) {
        let key = (kind.plural.clone(), namespace.to_string(), name.to_string());
        let mut own = self.own_writes();
        match version {
            Some(version) => own.insert(key, version),
            None => own.remove(&key),
        };
    }

    /// Whether a watch event of `child` (created or changed) may change what a reconcile of
    /// its cluster does, so that it should start one. Not if it brings what the operator
    /// itself last wrote (and nobody changed since): any event ends that record, so a second
    /// event at the same version (a watch's new list) starts a reconcile as before. Nor if
    /// only the status changed of a child whose status the operator does not read: a kind
    /// with a generation bumps it for every change of its spec, and its metadata is compared
    /// here. Kinds without a generation (Service, ServiceAccount, ...) say nothing of what
    /// changed, so every change of theirs counts.
    pub(super) fn changed(&self, kind: &ApiResource, child: &ChildMeta) -> bool {
        let key = child_key(kind, child);
        let written = self.own_writes().remove(&key);
        let echo = written.is_some() && written == child.resource_version();
        let Some(generation) = child
            .metadata
            .generation
            .filter(|_| !status_kinds().contains(kind))
        else {
            return !echo;
        };
        let mut hasher = DefaultHasher::new();
        generation.hash(&mut hasher);
        child.metadata.labels.hash(&mut hasher);
        child.metadata.annotations.hash(&mut hasher);
        for owner in child.owner_references() {
            (&owner.api_version, &owner.kind, &owner.name, &owner.uid).hash(&mut hasher);
            (owner.controller, owner.block_owner_deletion).hash(&mut hasher);
        }
        child
            .metadata
            .deletion_timestamp
            .as_ref()
            .map(|time| time.0)
            .hash(&mut hasher);
        let shape = hasher.finish();
        let previous = self
            .shapes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key.clone(), (shape, child.resource_version()));
        let Some((previous, previous_version)) = previous else {
            return !echo;
        };
        if previous == shape {
            // Only its status changed, which the operator neither builds nor reads: if it
            // matched the build before, it still does.
            let mut verified = self.verified.lock().unwrap_or_else(PoisonError::into_inner);
            if let (Some(verified), Some(version)) =
                (verified.get_mut(&key), child.resource_version())
                && verified.object.is_none()
                && Some(&verified.version) == previous_version.as_ref()
            {
                verified.version = version;
            }
        }
        !echo && previous != shape
    }

    /// Forgets a deleted child (whose deletion always starts a reconcile).
    pub(super) fn deleted(&self, kind: &ApiResource, child: &ChildMeta) {
        let key = child_key(kind, child);
        self.own_writes().remove(&key);
        self.verified
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&key);
        self.shapes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&key);
    }

    fn own_writes(&self) -> MutexGuard<'_, HashMap<ChildKey, String>> {
        self.own_writes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

fn child_key(kind: &ApiResource, child: &ChildMeta) -> ChildKey {
    (
        kind.plural.clone(),
        child.namespace().unwrap_or_default(),
        child.name_any(),
    )
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::Service;
    use k8s_openapi::api::policy::v1::PodDisruptionBudget;
    use serde_json::json;

    use super::*;

    fn child(kind: &str, version: &str, generation: Option<i64>, label: &str) -> ChildMeta {
        serde_json::from_value(json!({
            "apiVersion": "v1", "kind": kind,
            "metadata": {"name": "demo", "namespace": "apps", "resourceVersion": version,
                         "generation": generation, "labels": {"tier": label}},
        }))
        .expect("metadata")
    }

    #[test]
    fn the_echo_of_an_own_write_starts_no_reconcile() {
        let caches = ChildCaches::new();
        let kind = ApiResource::erase::<Service>(&());
        let event = |version| child("Service", version, None, "a");
        assert!(caches.changed(&kind, &event("1")), "nothing written yet");
        caches.wrote(&kind, "apps", "demo", Some("2".into()));
        assert!(caches.changed(&ApiResource::erase::<CronJob>(&()), &event("2")));
        assert!(!caches.changed(&kind, &event("2")), "the echo of the write");
        assert!(
            caches.changed(&kind, &event("2")),
            "a new list of the watch"
        );
        caches.wrote(&kind, "apps", "demo", Some("3".into()));
        assert!(caches.changed(&kind, &event("4")), "someone else's change");
        assert!(
            caches.changed(&kind, &event("3")),
            "the record ended with it"
        );
        caches.wrote(&kind, "apps", "demo", Some("5".into()));
        caches.deleted(&kind, &event("6"));
        assert!(
            caches.changed(&kind, &event("5")),
            "deleted and created again"
        );
    }

    #[test]
    fn only_the_status_changes_of_children_whose_status_is_read_start_a_reconcile() {
        let caches = ChildCaches::new();
        let budget = ApiResource::erase::<PodDisruptionBudget>(&());
        let event = |version, generation, label| {
            child("PodDisruptionBudget", version, Some(generation), label)
        };
        assert!(caches.changed(&budget, &event("1", 1, "a")), "created");
        assert!(
            !caches.changed(&budget, &event("2", 1, "a")),
            "its status written"
        );
        assert!(
            caches.changed(&budget, &event("3", 2, "a")),
            "its spec changed"
        );
        assert!(
            caches.changed(&budget, &event("4", 2, "b")),
            "its labels changed"
        );
        let stateful_set = ApiResource::erase::<StatefulSet>(&());
        let pods = |version| child("StatefulSet", version, Some(1), "a");
        assert!(caches.changed(&stateful_set, &pods("1")));
        assert!(
            caches.changed(&stateful_set, &pods("2")),
            "its status is read"
        );
        let service = ApiResource::erase::<Service>(&());
        let service_event = |version| child("Service", version, None, "a");
        assert!(caches.changed(&service, &service_event("1")));
        assert!(
            caches.changed(&service, &service_event("2")),
            "no generation says what changed"
        );
    }
}
