//! The two Services of a cluster: a headless one through which the pods discover each other
//! (its EndpointSlices list every pod, ready or not, so that a starting pod can catch up from
//! its peers before it is ready) and the client Service applications connect to.

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{HTTP_PORT, HTTP_PORT_NAME, child_meta};
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
            ports: Some(vec![http_port(i32::from(HTTP_PORT))]),
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
            ports: Some(vec![http_port(service.port)]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// A TCP port named `http` forwarding to the container's `http` port.
fn http_port(port: i32) -> ServicePort {
    ServicePort {
        name: Some(HTTP_PORT_NAME.into()),
        port,
        protocol: Some("TCP".into()),
        target_port: Some(IntOrString::String(HTTP_PORT_NAME.into())),
        ..ServicePort::default()
    }
}
