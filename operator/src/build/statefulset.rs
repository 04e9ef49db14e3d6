//! The cache pods: a StatefulSet (stable pod names are the node identities of contract 4) spread
//! over zones and hosts, all mounting the shared volume, configured entirely through
//! cache-node's flags and environment as the contract renders them from
//! [`ValidatedCluster::node`].

use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetSpec};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EmptyDirVolumeSource, HTTPGetAction,
    PersistentVolumeClaimVolumeSource, PodSpec, PodTemplateSpec, Probe, TopologySpreadConstraint,
    Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{
    DATA_DIR, DATA_VOLUME, HTTP_PORT, HTTP_PORT_NAME, REDIS_PORT_NAME, child_meta, invocation,
    redis_port, restricted_container_security, restricted_pod_security,
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
    let (args, env) = invocation(&cluster.node);
    Container {
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
    }
}

/// The container's `http` port and, when RESP is on, its `redis` port.
fn ports(cluster: &ValidatedCluster) -> Vec<ContainerPort> {
    let port = |name: &str, container_port| ContainerPort {
        name: Some(name.into()),
        container_port,
        protocol: Some("TCP".into()),
        ..ContainerPort::default()
    };
    let mut ports = vec![port(HTTP_PORT_NAME, i32::from(HTTP_PORT))];
    ports.extend(redis_port(cluster).map(|redis| port(REDIS_PORT_NAME, redis)));
    ports
}
