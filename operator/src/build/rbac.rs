//! The cache pods' identity: a ServiceAccount per cluster, bound to the ClusterRole that
//! `deploy/` installs (read EndpointSlices, for peer discovery). Binding a shared ClusterRole
//! with a namespaced RoleBinding keeps the grant inside the cluster's namespace and lets the
//! operator hold only `bind` on that one role instead of the permissions themselves.

use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{RoleBinding, RoleRef, Subject};

use super::child_meta;
use crate::labels::{self, CACHE_COMPONENT};
use crate::validate::ValidatedCluster;

/// The ClusterRole in `deploy/` that cache pods are bound to.
pub const CACHE_NODE_CLUSTER_ROLE: &str = "tidecache-cache-node";

/// The cache pods' ServiceAccount.
pub(super) fn service_account(cluster: &ValidatedCluster) -> ServiceAccount {
    ServiceAccount {
        metadata: child_meta(
            cluster,
            labels::names::cache_account(&cluster.name),
            CACHE_COMPONENT,
        ),
        ..ServiceAccount::default()
    }
}

/// Binds the cache pods' ServiceAccount to [`CACHE_NODE_CLUSTER_ROLE`] in the cluster's
/// namespace.
pub(super) fn role_binding(cluster: &ValidatedCluster) -> RoleBinding {
    let account = labels::names::cache_account(&cluster.name);
    RoleBinding {
        metadata: child_meta(cluster, account.clone(), CACHE_COMPONENT),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "ClusterRole".into(),
            name: CACHE_NODE_CLUSTER_ROLE.into(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: account,
            namespace: Some(cluster.namespace.clone()),
            ..Subject::default()
        }]),
    }
}
