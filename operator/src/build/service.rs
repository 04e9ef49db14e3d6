//! The two Services of a cluster: a headless one through which the pods discover each other
//! (its EndpointSlices list every pod, ready or not, so that a starting pod can catch up from
//! its peers before it is ready) and the client Service applications connect to. Both have
//! the `http` port and, unless `spec.service.redisPort` is 0, the `redis` port.
//!
//! With `spec.tls` the peers Service adds the pods' `https` and `rediss` ports, and the client
//! Service offers only those: `https` on `spec.tls.port`, `rediss` on `spec.tls.redisPort`.
//! Clients reach the cache over TLS or not at all through it; the plain ports stay on the pods
//! for peers, probes and `/metrics`.

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{
    HTTP_PORT, HTTP_PORT_NAME, HTTPS_PORT_NAME, REDIS_PORT_NAME, REDISS_PORT_NAME, child_meta,
    redis_port, tls_ports,
};
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
            ports: Some(peer_ports(cluster)),
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
            ports: Some(client_ports(cluster)),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// Every port of the pods, on the pods' own numbers.
fn peer_ports(cluster: &ValidatedCluster) -> Vec<ServicePort> {
    let mut ports = plain_ports(cluster, i32::from(HTTP_PORT));
    if let Some((https, rediss)) = tls_ports(cluster) {
        ports.push(port(HTTPS_PORT_NAME, https));
        ports.extend(rediss.map(|rediss| port(REDISS_PORT_NAME, rediss)));
    }
    ports
}

/// The plain ports on `spec.service`'s numbers, or with `spec.tls` the TLS ports only.
fn client_ports(cluster: &ValidatedCluster) -> Vec<ServicePort> {
    let Some(tls) = &cluster.spec.tls else {
        return plain_ports(cluster, cluster.spec.service.port);
    };
    let mut ports = vec![port(HTTPS_PORT_NAME, tls.port)];
    if let Some((_, Some(rediss))) = tls_ports(cluster) {
        ports.push(port(REDISS_PORT_NAME, rediss));
    }
    ports
}

/// The `http` port on `http`, forwarding to the container's `http` port, and the `redis`
/// port when RESP is on (the pods' own port number, forwarding to the container's `redis`).
fn plain_ports(cluster: &ValidatedCluster, http: i32) -> Vec<ServicePort> {
    let mut ports = vec![port(HTTP_PORT_NAME, http)];
    ports.extend(redis_port(cluster).map(|redis| port(REDIS_PORT_NAME, redis)));
    ports
}

/// Port `number` named `name`, forwarding to the container port of the same name.
fn port(name: &str, number: i32) -> ServicePort {
    ServicePort {
        name: Some(name.into()),
        port: number,
        protocol: Some("TCP".into()),
        target_port: Some(IntOrString::String(name.into())),
        ..ServicePort::default()
    }
}
