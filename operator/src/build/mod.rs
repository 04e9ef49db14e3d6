//! The build step: pure functions from a [`ValidatedCluster`] to the objects the operator
//! applies, one file per child. No API access, no clock, no randomness: the same input always
//! yields the same objects (maps are `BTreeMap`s), so applying an unchanged cluster changes
//! nothing and the output can be checked against golden files.

mod cronjob;
mod networkpolicy;
mod pdb;
mod pvc;
mod rbac;
mod service;
mod statefulset;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::{
    Capabilities, EnvVar, EnvVarSource, ObjectFieldSelector, PersistentVolumeClaim,
    PodSecurityContext, SeccompProfile, SecretKeySelector, SecurityContext, Service,
    ServiceAccount,
};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::RoleBinding;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use tidecache_contract::args::{self, EnvSource, Invocation};

use crate::labels;
use crate::validate::ValidatedCluster;

pub use rbac::CACHE_NODE_CLUSTER_ROLE;

/// Where the shared volume is mounted in cache and janitor containers.
pub const DATA_DIR: &str = "/data";
/// The cache-node HTTP port inside the pod.
pub const HTTP_PORT: u16 = 8080;
/// Name of the cache-node container port, used by probes and Services.
pub const HTTP_PORT_NAME: &str = "http";
/// Name of the Redis-protocol port of the container and both Services (when it is on); the
/// cluster DNS publishes a named Service port as `_redis._tcp` SRV records.
pub const REDIS_PORT_NAME: &str = "redis";
/// The cache-node HTTPS port inside the pod, when `spec.tls` is set.
pub const HTTPS_PORT: u16 = 8443;
/// Name of the HTTPS port of the container and both Services.
pub const HTTPS_PORT_NAME: &str = "https";
/// Name of the Redis-over-TLS port of the container and both Services.
pub const REDISS_PORT_NAME: &str = "rediss";
/// Where the `spec.tls` Secret is mounted, read-only, in the cache containers.
pub const TLS_DIR: &str = "/etc/tidecache/tls";
/// Where the CA of the database behind the cache is mounted (`spec.backend.postgres.caSecret`).
pub const BACKEND_CA_DIR: &str = "/etc/tidecache/backend-ca";
/// The file the CA's Secret key is projected to in [`BACKEND_CA_DIR`].
pub const BACKEND_CA_FILE: &str = "ca.crt";
/// The unprivileged user and group the containers run as (the distroless `nonroot` user).
pub const RUN_AS_USER: i64 = 65532;
/// Name of the shared-volume entry in the pod specs.
const DATA_VOLUME: &str = "data";

/// Every object one CacheCluster owns, as built from its spec.
#[derive(Debug, Clone, PartialEq)]
pub struct Children {
    /// Identity of the cache pods, used for peer discovery.
    pub service_account: ServiceAccount,
    /// Grants the cache pods read access to EndpointSlices.
    pub role_binding: RoleBinding,
    /// The shared volume.
    pub volume_claim: PersistentVolumeClaim,
    /// Headless Service through which pods find their peers.
    pub peers_service: Service,
    /// Service that clients connect to.
    pub client_service: Service,
    /// The cache pods.
    pub stateful_set: StatefulSet,
    /// The janitor.
    pub janitor: CronJob,
    /// `None` when `spec.podDisruptionBudget.enabled` is false (an existing one is then deleted).
    pub disruption_budget: Option<PodDisruptionBudget>,
    /// `None` when `spec.network.policy` is false (an existing one is then deleted).
    pub network_policy: Option<NetworkPolicy>,
}

/// Builds every child of `cluster`.
pub fn build(cluster: &ValidatedCluster) -> Children {
    Children {
        service_account: rbac::service_account(cluster),
        role_binding: rbac::role_binding(cluster),
        volume_claim: pvc::volume_claim(cluster),
        peers_service: service::peers(cluster),
        client_service: service::client(cluster),
        stateful_set: statefulset::stateful_set(cluster),
        janitor: cronjob::janitor(cluster),
        disruption_budget: pdb::disruption_budget(cluster),
        network_policy: networkpolicy::network_policy(cluster),
    }
}

/// Metadata of a child named `name`: namespace, the common labels of `component` and the
/// controller ownerReference to the CacheCluster.
fn child_meta(cluster: &ValidatedCluster, name: String, component: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: Some(cluster.namespace.clone()),
        labels: Some(labels::common(&cluster.name, component)),
        owner_references: Some(vec![cluster.owner.clone()]),
        ..ObjectMeta::default()
    }
}

/// A binary's command line and environment as a container's `args` and `env` (`None` when
/// there is none, as Kubernetes stores it).
fn invocation(binary: &impl Invocation) -> (Option<Vec<String>>, Option<Vec<EnvVar>>) {
    let env: Vec<EnvVar> = binary.to_env().into_iter().map(env_var).collect();
    (Some(binary.to_args()), (!env.is_empty()).then_some(env))
}

/// The one mapping of the contract's variable sources onto Kubernetes' `EnvVar`.
fn env_var(var: args::EnvVar) -> EnvVar {
    let (value, value_from) = match var.source {
        EnvSource::Value(value) => (Some(value), None),
        EnvSource::PodField(field) => (
            None,
            Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    api_version: Some("v1".into()),
                    field_path: field.path().into(),
                }),
                ..EnvVarSource::default()
            }),
        ),
        EnvSource::SecretKey(secret) => (
            None,
            Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: secret.name,
                    key: secret.key,
                    optional: Some(false),
                }),
                ..EnvVarSource::default()
            }),
        ),
    };
    EnvVar {
        name: var.name.into(),
        value,
        value_from,
    }
}

/// The port the cache pods serve RESP on, `None` when `spec.service.redisPort` switches it
/// off: read from what the pods are started with, so that the container's port and the
/// Services' always name the port cache-node listens on.
fn redis_port(cluster: &ValidatedCluster) -> Option<i32> {
    cluster
        .node
        .resp_listen
        .map(|address| i32::from(address.port()))
}

/// The pods' HTTPS port and their RESP-over-TLS port (if on), when `spec.tls` is set.
fn tls_ports(cluster: &ValidatedCluster) -> Option<(i32, Option<i32>)> {
    let tls = cluster.node.tls.as_ref()?;
    Some((
        i32::from(tls.listen.port()),
        tls.resp_listen.map(|address| i32::from(address.port())),
    ))
}

/// The restricted Pod Security Standard at pod level: non-root with a fixed uid, the
/// runtime's default seccomp profile, and the volume group-owned by that uid.
fn restricted_pod_security() -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(RUN_AS_USER),
        run_as_group: Some(RUN_AS_USER),
        fs_group: Some(RUN_AS_USER),
        // A shared volume can hold millions of files: change their group only when the volume
        // root does not match, not on every pod start.
        fs_group_change_policy: Some("OnRootMismatch".into()),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            ..SeccompProfile::default()
        }),
        ..PodSecurityContext::default()
    }
}

/// The restricted Pod Security Standard at container level, plus a read-only root file system.
fn restricted_container_security() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            ..Capabilities::default()
        }),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            ..SeccompProfile::default()
        }),
        ..SecurityContext::default()
    }
}

#[cfg(test)]
mod tests;
