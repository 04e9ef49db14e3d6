//! The cache pods: a StatefulSet (stable pod names are the node identities of contract 4) spread
//! over zones and hosts, all mounting the shared volume, configured entirely through
//! cache-node's flags and environment as the contract renders them from
//! [`ValidatedCluster::node`].

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetSpec};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EmptyDirVolumeSource, HTTPGetAction, KeyToPath,
    PersistentVolumeClaimVolumeSource, PodSpec, PodTemplateSpec, Probe, SecretVolumeSource,
    TopologySpreadConstraint, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{
    BACKEND_CA_DIR, BACKEND_CA_FILE, DATA_DIR, DATA_VOLUME, HTTP_PORT, HTTP_PORT_NAME,
    HTTPS_PORT_NAME, REDIS_PORT_NAME, REDISS_PORT_NAME, TLS_DIR, child_meta, invocation,
    redis_port, restricted_container_security, restricted_pod_security, tls_ports,
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
/// The `spec.tls` Secret's volume.
const TLS_VOLUME: &str = "tls";
/// The volume of the backend's CA Secret.
const BACKEND_CA_VOLUME: &str = "backend-ca";
/// The Secret's files: readable by the pod's group (the fsGroup the container runs in) and
/// nobody else, since `tls.key` is a private key.
const TLS_FILE_MODE: i32 = 0o440;

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
                    annotations: cluster.peer_token_revision.as_ref().map(|revision| {
                        BTreeMap::from([(
                            labels::PEER_TOKEN_REVISION_ANNOTATION.to_string(),
                            revision.clone(),
                        )])
                    }),
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
    let mut spec = PodSpec {
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
    };
    if let (Some(volumes), Some(tls)) = (&mut spec.volumes, tls_volume(cluster)) {
        volumes.push(tls);
    }
    if let (Some(volumes), Some(ca)) = (&mut spec.volumes, backend_ca_volume(cluster)) {
        volumes.push(ca);
    }
    spec
}

/// The CA of the database behind the cache, its one key projected to [`BACKEND_CA_FILE`].
fn backend_ca_volume(cluster: &ValidatedCluster) -> Option<Volume> {
    let ca = cluster.spec.backend.as_ref()?.postgres.ca_secret.as_ref()?;
    Some(Volume {
        name: BACKEND_CA_VOLUME.into(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(ca.name.clone()),
            items: Some(vec![KeyToPath {
                key: ca.key.clone(),
                path: BACKEND_CA_FILE.into(),
                mode: None,
            }]),
            ..SecretVolumeSource::default()
        }),
        ..Volume::default()
    })
}

/// The `spec.tls` Secret as a volume. Mounted whole (no `subPath`), so that the kubelet
/// updates the files when the Secret changes and cache-node reloads them.
fn tls_volume(cluster: &ValidatedCluster) -> Option<Volume> {
    let tls = cluster.spec.tls.as_ref()?;
    Some(Volume {
        name: TLS_VOLUME.into(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(tls.secret_name.clone()),
            default_mode: Some(TLS_FILE_MODE),
            ..SecretVolumeSource::default()
        }),
        ..Volume::default()
    })
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
    let (args, env) = invocation(&cluster.node);
    let mut container = Container {
        name: "cache-node".into(),
        image: Some(cluster.spec.image.clone()),
        image_pull_policy: Some(cluster.spec.image_pull_policy.as_str().into()),
        args,
        env,
        ports: Some(ports(cluster)),
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
    };
    if let (Some(mounts), Some(_)) = (&mut container.volume_mounts, backend_ca_volume(cluster)) {
        mounts.push(VolumeMount {
            name: BACKEND_CA_VOLUME.into(),
            mount_path: BACKEND_CA_DIR.into(),
            read_only: Some(true),
            ..VolumeMount::default()
        });
    }
    if let (Some(mounts), Some(_)) = (&mut container.volume_mounts, &cluster.spec.tls) {
        mounts.push(VolumeMount {
            name: TLS_VOLUME.into(),
            mount_path: TLS_DIR.into(),
            read_only: Some(true),
            ..VolumeMount::default()
        });
    }
    container
}

/// The container's `http` port and, when RESP is on, its `redis` port; with TLS, its
/// `https` port and, when RESP over TLS is on, its `rediss` port.
fn ports(cluster: &ValidatedCluster) -> Vec<ContainerPort> {
    let port = |name: &str, container_port| ContainerPort {
        name: Some(name.into()),
        container_port,
        protocol: Some("TCP".into()),
        ..ContainerPort::default()
    };
    let mut ports = vec![port(HTTP_PORT_NAME, i32::from(HTTP_PORT))];
    ports.extend(redis_port(cluster).map(|redis| port(REDIS_PORT_NAME, redis)));
    if let Some((https, rediss)) = tls_ports(cluster) {
        ports.push(port(HTTPS_PORT_NAME, https));
        ports.extend(rediss.map(|rediss| port(REDISS_PORT_NAME, rediss)));
    }
    ports
}
