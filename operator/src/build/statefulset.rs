//! The cache pods: a StatefulSet (stable pod names are the node identities of contract 4) spread
//! over zones and hosts, all mounting the shared volume, configured entirely through
//! cache-node's flags.

use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetSpec};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource, HTTPGetAction,
    ObjectFieldSelector, PersistentVolumeClaimVolumeSource, PodSpec, PodTemplateSpec, Probe,
    SecretKeySelector, TopologySpreadConstraint, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{
    DATA_DIR, DATA_VOLUME, HTTP_PORT, HTTP_PORT_NAME, child_meta, restricted_container_security,
    restricted_pod_security,
};
use crate::crd::WhenUnsatisfiable;
use crate::labels::{self, CACHE_COMPONENT};
use crate::validate::ValidatedCluster;

/// Seconds a stopping pod gets to flush its segment files and hand off to its peers.
pub const TERMINATION_GRACE_SECONDS: i64 = 60;
/// How long a starting pod may take to load the unexpired buckets from the volume before the
/// kubelet restarts it (period × failure threshold of the startup probe).
const STARTUP_PERIOD_SECONDS: i32 = 2;
const STARTUP_FAILURE_THRESHOLD: i32 = 300;
const TMP_VOLUME: &str = "tmp";

/// The StatefulSet of cache pods.
pub(super) fn stateful_set(cluster: &ValidatedCluster) -> StatefulSet {
    let selector = labels::selector(&cluster.name, CACHE_COMPONENT);
    StatefulSet {
        metadata: child_meta(
            cluster,
            labels::names::stateful_set(&cluster.name),
            CACHE_COMPONENT,
        ),
        spec: Some(StatefulSetSpec {
            replicas: Some(cluster.spec.replicas),
            service_name: Some(labels::names::peers_service(&cluster.name)),
            // Pods share one volume and find each other at run time: no reason to start them
            // one by one.
            pod_management_policy: Some("Parallel".into()),
            selector: LabelSelector {
                match_labels: Some(selector),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels::common(&cluster.name, CACHE_COMPONENT)),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod_spec(cluster)),
            },
            ..StatefulSetSpec::default()
        }),
        ..StatefulSet::default()
    }
}

fn pod_spec(cluster: &ValidatedCluster) -> PodSpec {
    PodSpec {
        service_account_name: Some(labels::names::cache_account(&cluster.name)),
        termination_grace_period_seconds: Some(TERMINATION_GRACE_SECONDS),
        security_context: Some(restricted_pod_security()),
        topology_spread_constraints: Some(spread(cluster)),
        containers: vec![container(cluster)],
        volumes: Some(vec![
            Volume {
                name: DATA_VOLUME.into(),
                persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                    claim_name: labels::names::volume_claim(&cluster.name),
                    read_only: None,
                }),
                ..Volume::default()
            },
            Volume {
                name: TMP_VOLUME.into(),
                empty_dir: Some(EmptyDirVolumeSource::default()),
                ..Volume::default()
            },
        ]),
        ..PodSpec::default()
    }
}

/// Spread over zones as the spec asks, and over hosts as far as possible, so that losing a
/// node or a zone loses as few pods as the cluster's shape allows.
fn spread(cluster: &ValidatedCluster) -> Vec<TopologySpreadConstraint> {
    let topology = &cluster.spec.topology;
    let selector = || {
        Some(LabelSelector {
            match_labels: Some(labels::selector(&cluster.name, CACHE_COMPONENT)),
            ..LabelSelector::default()
        })
    };
    vec![
        TopologySpreadConstraint {
            max_skew: topology.max_skew,
            topology_key: topology.zone_key.clone(),
            when_unsatisfiable: topology.when_unsatisfiable.as_str().into(),
            label_selector: selector(),
            ..TopologySpreadConstraint::default()
        },
        TopologySpreadConstraint {
            max_skew: 1,
            topology_key: "kubernetes.io/hostname".into(),
            when_unsatisfiable: WhenUnsatisfiable::ScheduleAnyway.as_str().into(),
            label_selector: selector(),
            ..TopologySpreadConstraint::default()
        },
    ]
}

fn container(cluster: &ValidatedCluster) -> Container {
    let http_get = |path: &str| {
        Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String(HTTP_PORT_NAME.into()),
            scheme: Some("HTTP".into()),
            ..HTTPGetAction::default()
        })
    };
    Container {
        name: "cache-node".into(),
        image: Some(cluster.spec.image.clone()),
        image_pull_policy: Some(cluster.spec.image_pull_policy.as_str().into()),
        args: Some(args(cluster)),
        env: Some(env(cluster)),
        ports: Some(vec![ContainerPort {
            name: Some(HTTP_PORT_NAME.into()),
            container_port: HTTP_PORT,
            protocol: Some("TCP".into()),
            ..ContainerPort::default()
        }]),
        startup_probe: Some(Probe {
            http_get: http_get("/readyz"),
            period_seconds: Some(STARTUP_PERIOD_SECONDS),
            failure_threshold: Some(STARTUP_FAILURE_THRESHOLD),
            ..Probe::default()
        }),
        readiness_probe: Some(Probe {
            http_get: http_get("/readyz"),
            period_seconds: Some(5),
            failure_threshold: Some(2),
            ..Probe::default()
        }),
        liveness_probe: Some(Probe {
            http_get: http_get("/healthz"),
            period_seconds: Some(10),
            failure_threshold: Some(3),
            ..Probe::default()
        }),
        resources: cluster.spec.resources.clone(),
        security_context: Some(restricted_container_security()),
        volume_mounts: Some(vec![
            VolumeMount {
                name: DATA_VOLUME.into(),
                mount_path: DATA_DIR.into(),
                ..VolumeMount::default()
            },
            VolumeMount {
                name: TMP_VOLUME.into(),
                mount_path: "/tmp".into(),
                ..VolumeMount::default()
            },
        ]),
        ..Container::default()
    }
}

/// cache-node's flags for everything that is the same on every pod.
fn args(cluster: &ValidatedCluster) -> Vec<String> {
    let spec = &cluster.spec;
    vec![
        format!("--listen=0.0.0.0:{HTTP_PORT}"),
        format!("--schedule={}", cluster.schedule.expression()),
        format!("--time-zone={}", cluster.schedule.time_zone()),
        format!("--default-ttl={}", spec.expiry.default_ttl),
        format!("--max-ttl={}", spec.expiry.max_ttl),
        format!("--max-key-bytes={}", spec.memory.max_key_bytes),
        format!("--max-value-bytes={}", spec.memory.max_value_bytes),
        format!("--max-memory={}", cluster.memory_bytes),
        format!(
            "--eviction-policy={}",
            spec.memory.eviction_policy.flag_value()
        ),
        "--log-format=json".into(),
        format!("--data-dir={DATA_DIR}"),
        format!("--cluster={}", cluster.name),
        format!("--fsync={}", spec.persistence.fsync.flag_value()),
        format!(
            "--peers-service={}",
            labels::names::peers_service(&cluster.name)
        ),
    ]
}

/// Settings that differ per pod (its name and namespace, from the downward API) or come from a
/// Secret, passed as cache-node's `TIDECACHE_*` environment variables.
fn env(cluster: &ValidatedCluster) -> Vec<EnvVar> {
    let field = |name: &str, path: &str| EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                api_version: Some("v1".into()),
                field_path: path.into(),
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    };
    let mut env = vec![
        field("TIDECACHE_NODE_ID", "metadata.name"),
        field("TIDECACHE_NAMESPACE", "metadata.namespace"),
        EnvVar {
            name: "TIDECACHE_WRITE_ACK".into(),
            value: Some(
                cluster
                    .spec
                    .replication
                    .write_acknowledgement
                    .flag_value()
                    .into(),
            ),
            ..EnvVar::default()
        },
    ];
    if let Some(auth) = &cluster.spec.auth {
        env.push(EnvVar {
            name: "TIDECACHE_AUTH_TOKEN".into(),
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: auth.secret_name.clone(),
                    key: auth.key.clone(),
                    optional: Some(false),
                }),
                ..EnvVarSource::default()
            }),
            ..EnvVar::default()
        });
    }
    env
}
