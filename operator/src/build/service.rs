//! The two Services of a cluster: a headless one through which the pods discover each other
//! (its EndpointSlices list every pod, ready or not, so that a starting pod can catch up from
//! its peers before it is ready) and the client Service applications connect to. Both have
//! the `http` port and, unless `spec.service.redisPort` is 0, the `redis` port.

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{HTTP_PORT, HTTP_PORT_NAME, REDIS_PORT_NAME, child_meta, redis_port};
use crate::labels::{self, CACHE_COMPONENT};
use crate::validate::ValidatedCluster;

/// The headless peers Service; also the StatefulSet's governing Service.
pub(super) fn peers(cluster: &ValidatedCluster) -> Service {
    Service {
        metadata: child_meta(
            cluster,
            labels::names::peers_service(&cluster.name),
            CACHE_COMPONENT,
        ),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            publish_not_ready_addresses: Some(true),
            selector: Some(labels::selector(&cluster.name, CACHE_COMPONENT)),
            ports: Some(ports(cluster, i32::from(HTTP_PORT))),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// The client Service, of the type and on the port the spec asks for.
pub(super) fn client(cluster: &ValidatedCluster) -> Service {
    let service = &cluster.spec.service;
    Service {
        metadata: child_meta(
            cluster,
            labels::names::client_service(&cluster.name),
            CACHE_COMPONENT,
        ),
        spec: Some(ServiceSpec {
            type_: Some(service.type_.as_str().into()),
            selector: Some(labels::selector(&cluster.name, CACHE_COMPONENT)),
            ports: Some(ports(cluster, service.port)),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// The `http` port on `http`, forwarding to the container's `http` port, and the `redis`
/// port when RESP is on (the pods' own port number, forwarding to the container's `redis`).
fn ports(cluster: &ValidatedCluster, http: i32) -> Vec<ServicePort> {
    let port = |name: &str, port| ServicePort {
        name: Some(name.into()),
        port,
        protocol: Some("TCP".into()),
        target_port: Some(IntOrString::String(name.into())),
        ..ServicePort::default()
    };
    let mut ports = vec![port(HTTP_PORT_NAME, http)];
    ports.extend(redis_port(cluster).map(|redis| port(REDIS_PORT_NAME, redis)));
    ports
}
