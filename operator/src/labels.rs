//! Every label key, label value, child name and field-manager name the operator uses, in one
//! place, so that selectors, builders and RBAC cannot drift apart.

use std::collections::BTreeMap;

/// `app.kubernetes.io/name`: the application, always [`APP_NAME`].
pub const NAME_KEY: &str = "app.kubernetes.io/name";
/// `app.kubernetes.io/instance`: the CacheCluster's name.
pub const INSTANCE_KEY: &str = "app.kubernetes.io/instance";
/// `app.kubernetes.io/component`: [`CACHE_COMPONENT`] or [`JANITOR_COMPONENT`].
pub const COMPONENT_KEY: &str = "app.kubernetes.io/component";
/// `app.kubernetes.io/managed-by`: always [`MANAGER`].
pub const MANAGED_BY_KEY: &str = "app.kubernetes.io/managed-by";
/// `app.kubernetes.io/part-of`: always [`APP_NAME`].
pub const PART_OF_KEY: &str = "app.kubernetes.io/part-of";

/// The application name in labels.
pub const APP_NAME: &str = "tidecache";
/// Component label of the cache pods and the objects that serve them.
pub const CACHE_COMPONENT: &str = "cache";
/// Component label of the janitor CronJob and its pods.
pub const JANITOR_COMPONENT: &str = "janitor";
/// The server-side-apply field manager and `managed-by` label value: one manager for every
/// write, so that the operator never fights itself over field ownership.
pub const MANAGER: &str = "tidecache-operator";

/// Annotation on every child holding a hash of what the operator last applied; a child whose
/// hash differs from the desired one is re-applied even if the fields still match.
pub const APPLIED_HASH_ANNOTATION: &str = "tidecache.io/applied-hash";

/// Annotation an admin sets on a CacheCluster to rotate its peer token: each new value
/// rotates it once (the old token stays accepted as the previous one until the next rotation).
pub const ROTATE_PEER_TOKEN_ANNOTATION: &str = "tidecache.io/rotate-peer-token";
/// Annotation on the peer-token Secret: the value of [`ROTATE_PEER_TOKEN_ANNOTATION`] its
/// token was generated for, so that one value rotates once.
pub const PEER_TOKEN_ROTATION_ANNOTATION: &str = "tidecache.io/peer-token-rotation";
/// Annotation on the cache pods' template naming the peer token's revision (the Secret's uid
/// and rotation), so that a new token rolls the pods (a Secret's value in an environment
/// variable is read only when a container starts).
pub const PEER_TOKEN_REVISION_ANNOTATION: &str = "tidecache.io/peer-token-revision";

/// The labels every child of `cluster` carries.
pub fn common(cluster: &str, component: &str) -> BTreeMap<String, String> {
    let mut labels = selector(cluster, component);
    labels.insert(MANAGED_BY_KEY.to_string(), MANAGER.to_string());
    labels.insert(PART_OF_KEY.to_string(), APP_NAME.to_string());
    labels
}

/// The labels that select the pods of `component` of `cluster` (a stable subset of
/// [`common`]: a StatefulSet's selector is immutable).
pub fn selector(cluster: &str, component: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (NAME_KEY.to_string(), APP_NAME.to_string()),
        (INSTANCE_KEY.to_string(), cluster.to_string()),
        (COMPONENT_KEY.to_string(), component.to_string()),
    ])
}

/// [`selector`] as a label-selector string, e.g. for listing pods or the scale subresource.
pub fn selector_string(cluster: &str, component: &str) -> String {
    selector(cluster, component)
        .iter()
        .map(|(key, value)| format!("{key}={value}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The labels every child of `cluster` carries whatever its component: what the orphan sweep
/// finds children by.
pub fn children_selector(cluster: &str) -> BTreeMap<&'static str, &str> {
    BTreeMap::from([
        (NAME_KEY, APP_NAME),
        (INSTANCE_KEY, cluster),
        (MANAGED_BY_KEY, MANAGER),
    ])
}

/// Names of the children of one CacheCluster, derived from its name.
pub mod names {
    /// The StatefulSet (and so the prefix of the pod names).
    pub fn stateful_set(cluster: &str) -> String {
        cluster.to_string()
    }

    /// The client Service.
    pub fn client_service(cluster: &str) -> String {
        cluster.to_string()
    }

    /// The headless Service through which pods find their peers.
    pub fn peers_service(cluster: &str) -> String {
        format!("{cluster}-peers")
    }

    /// The shared PersistentVolumeClaim.
    pub fn volume_claim(cluster: &str) -> String {
        format!("{cluster}-data")
    }

    /// The janitor CronJob.
    pub fn janitor(cluster: &str) -> String {
        format!("{cluster}-janitor")
    }

    /// The PodDisruptionBudget.
    pub fn disruption_budget(cluster: &str) -> String {
        cluster.to_string()
    }

    /// The NetworkPolicy of the cache pods.
    pub fn network_policy(cluster: &str) -> String {
        cluster.to_string()
    }

    /// The ServiceAccount (and RoleBinding) of the cache pods.
    pub fn cache_account(cluster: &str) -> String {
        format!("{cluster}-cache")
    }

    /// The Secret holding the token the cache pods present to each other.
    pub fn peer_token(cluster: &str) -> String {
        format!("{cluster}-peer-token")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selector_string_is_sorted_and_complete() {
        assert_eq!(
            selector_string("demo", CACHE_COMPONENT),
            "app.kubernetes.io/component=cache,app.kubernetes.io/instance=demo,\
             app.kubernetes.io/name=tidecache"
        );
    }

    #[test]
    fn every_child_matches_the_children_selector() {
        for component in [CACHE_COMPONENT, JANITOR_COMPONENT] {
            let labels = common("demo", component);
            for (key, value) in children_selector("demo") {
                assert_eq!(labels.get(key).map(String::as_str), Some(value), "{key}");
            }
        }
    }

    #[test]
    fn common_labels_extend_the_selector() {
        let common = common("demo", JANITOR_COMPONENT);
        for (key, value) in selector("demo", JANITOR_COMPONENT) {
            assert_eq!(common.get(&key), Some(&value));
        }
        assert_eq!(
            common.get(MANAGED_BY_KEY).map(String::as_str),
            Some(MANAGER)
        );
    }
}
