//! The cluster DNS of the test cluster: a small UDP server on the pod network's gateway
//! that answers `A` queries for `cluster.local` names from the Services and
//! EndpointSlices the real controllers maintain — what CoreDNS does in a cluster, and
//! what cache-node's peer discovery (`--peers-service`, a headless Service resolved by
//! name) needs. `<svc>.<ns>.svc.cluster.local` is the ready endpoints of a headless
//! Service (all of them with `publishNotReadyAddresses`, as the EndpointSlice controller
//! then marks them ready) or a Service's ClusterIP; `<host>.<svc>.<ns>.svc.cluster.local`
//! is the endpoint with that hostname (a StatefulSet pod). Other names are refused:
//! there is no upstream resolver.

use std::net::{Ipv4Addr, SocketAddr};

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt as _, watcher};
use kube::{Api, Client, ResourceExt};
use tokio::net::UdpSocket;

use crate::control_plane::{Error, Result};

/// The cluster domain.
pub const CLUSTER_DOMAIN: &str = "cluster.local";

const TYPE_A: u16 = 1;
const CLASS_IN: u16 = 1;
const RCODE_NXDOMAIN: u16 = 3;
const RCODE_REFUSED: u16 = 5;
const RCODE_FORMERR: u16 = 1;

/// Binds `<gateway>:53` and serves until the task is aborted.
pub(crate) async fn serve(
    client: Client,
    gateway: Ipv4Addr,
) -> Result<Vec<tokio::task::JoinHandle<()>>> {
    let socket = UdpSocket::bind(SocketAddr::from((gateway, 53)))
        .await
        .map_err(|e| Error::io(format!("binding the cluster DNS on {gateway}:53"), e))?;
    let (services, services_task) = mirror::<Service>(client.clone());
    let (slices, slices_task) = mirror::<EndpointSlice>(client);
    let server = tokio::spawn(async move {
        let mut buf = [0u8; 512];
        loop {
            let Ok((len, peer)) = socket.recv_from(&mut buf).await else {
                continue;
            };
            let reply = answer(&buf[..len], |name| resolve(&services, &slices, name));
            if let Some(reply) = reply {
                // A lost reply is retried by the client's resolver.
                let _sent = socket.send_to(&reply, peer).await;
            }
        }
    });
    Ok(vec![server, services_task, slices_task])
}

/// A cache of every object of a kind, kept current by a watch.
fn mirror<K>(client: Client) -> (Store<K>, tokio::task::JoinHandle<()>)
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(
        writer,
        watcher(Api::<K>::all(client), watcher::Config::default()),
    )
    .default_backoff()
    .touched_objects();
    (reader, tokio::spawn(stream.for_each(|_| async {})))
}

/// Asks the DNS server at `server` for the `A` records of `name` (for tests that check
/// what pods resolve).
pub async fn lookup(server: SocketAddr, name: &str) -> std::io::Result<Vec<Ipv4Addr>> {
    let socket = UdpSocket::bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0))).await?;
    let mut query = vec![0x7e, 0x57, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.trim_end_matches('.').split('.') {
        let len = u8::try_from(label.len())
            .map_err(|_| std::io::Error::other(format!("label {label:?} too long")))?;
        query.push(len);
        query.extend_from_slice(label.as_bytes());
    }
    query.push(0);
    query.extend_from_slice(&TYPE_A.to_be_bytes());
    query.extend_from_slice(&CLASS_IN.to_be_bytes());
    socket.send_to(&query, server).await?;
    let mut buf = [0u8; 512];
    let len = tokio::time::timeout(std::time::Duration::from_secs(2), socket.recv(&mut buf))
        .await
        .map_err(|_| std::io::Error::other(format!("no DNS reply from {server}")))??;
    let reply = &buf[..len];
    let rcode = reply.get(3).map_or(0, |b| b & 0x0f);
    if rcode != 0 {
        return Err(std::io::Error::other(format!("{name}: DNS rcode {rcode}")));
    }
    let answers = usize::from(u16::from_be_bytes([reply[6], reply[7]]));
    // Our replies: the question as sent, then 16-byte A records.
    let start = query.len();
    Ok((0..answers)
        .filter_map(|i| {
            let rdata = reply.get(start + i * 16 + 12..start + i * 16 + 16)?;
            Some(Ipv4Addr::new(rdata[0], rdata[1], rdata[2], rdata[3]))
        })
        .collect())
}

/// `None`: not a cluster name (refused); `Some(ips)`: the name exists (maybe no IPs).
fn resolve(
    services: &Store<Service>,
    slices: &Store<EndpointSlice>,
    name: &str,
) -> Option<Vec<Ipv4Addr>> {
    let suffix = format!(".svc.{CLUSTER_DOMAIN}");
    let labels: Vec<&str> = name.strip_suffix(&suffix)?.split('.').collect();
    let (host, service, namespace) = match labels.as_slice() {
        [service, namespace] => (None, *service, *namespace),
        [host, service, namespace] => (Some(*host), *service, *namespace),
        _ => return None,
    };
    let svc = services
        .state()
        .into_iter()
        .find(|s| s.name_any() == service && s.namespace().as_deref() == Some(namespace))?;
    let spec = svc.spec.clone().unwrap_or_default();
    let headless = spec.cluster_ip.as_deref() == Some("None");
    if !headless && host.is_none() {
        return Some(
            spec.cluster_ip
                .and_then(|ip| ip.parse().ok())
                .into_iter()
                .collect(),
        );
    }
    let mut ips = Vec::new();
    for slice in slices.state() {
        let owner = slice
            .labels()
            .get("kubernetes.io/service-name")
            .map(String::as_str);
        if owner != Some(service) || slice.namespace().as_deref() != Some(namespace) {
            continue;
        }
        for endpoint in &slice.endpoints {
            let ready = endpoint
                .conditions
                .as_ref()
                .and_then(|c| c.ready)
                .unwrap_or(true);
            let named = host.is_none_or(|h| endpoint.hostname.as_deref() == Some(h));
            if ready && named {
                ips.extend(
                    endpoint
                        .addresses
                        .iter()
                        .filter_map(|a| a.parse::<Ipv4Addr>().ok()),
                );
            }
        }
    }
    ips.sort();
    ips.dedup();
    Some(ips)
}

/// Builds the reply to one query; `None` for garbage not worth a reply.
fn answer(query: &[u8], lookup: impl Fn(&str) -> Option<Vec<Ipv4Addr>>) -> Option<Vec<u8>> {
    if query.len() < 12 {
        return None;
    }
    let flags = u16::from_be_bytes([query[2], query[3]]);
    if flags & 0x8000 != 0 {
        return None;
    }
    let qdcount = u16::from_be_bytes([query[4], query[5]]);
    let reply = |rcode: u16, question_end: usize, ips: &[Ipv4Addr]| {
        let mut out = Vec::with_capacity(question_end + ips.len() * 16);
        out.extend_from_slice(&query[..2]);
        // QR, the query's opcode and RD, AA, RA.
        let out_flags = 0x8000 | (flags & 0x7900) | 0x0400 | 0x0080 | rcode;
        out.extend_from_slice(&out_flags.to_be_bytes());
        let questions: u16 = if question_end > 12 { 1 } else { 0 };
        out.extend_from_slice(&questions.to_be_bytes());
        let count = u16::try_from(ips.len()).unwrap_or(0);
        out.extend_from_slice(&count.to_be_bytes());
        out.extend_from_slice(&[0, 0, 0, 0]);
        out.extend_from_slice(&query[12..question_end]);
        for ip in ips {
            // A pointer to the question's name at offset 12.
            out.extend_from_slice(&[0xC0, 12]);
            out.extend_from_slice(&TYPE_A.to_be_bytes());
            out.extend_from_slice(&CLASS_IN.to_be_bytes());
            out.extend_from_slice(&5u32.to_be_bytes());
            out.extend_from_slice(&4u16.to_be_bytes());
            out.extend_from_slice(&ip.octets());
        }
        out
    };
    if qdcount != 1 {
        return Some(reply(RCODE_FORMERR, 12, &[]));
    }
    let mut pos = 12;
    let mut labels = Vec::new();
    loop {
        let len = usize::from(*query.get(pos)?);
        pos += 1;
        if len == 0 {
            break;
        }
        if len > 63 {
            return Some(reply(RCODE_FORMERR, 12, &[]));
        }
        labels.push(String::from_utf8_lossy(query.get(pos..pos + len)?).to_ascii_lowercase());
        pos += len;
    }
    let qtype = u16::from_be_bytes([*query.get(pos)?, *query.get(pos + 1)?]);
    let question_end = pos + 4;
    if query.len() < question_end {
        return None;
    }
    let name = labels.join(".");
    let Some(ips) = lookup(&name) else {
        let rcode = if name.ends_with(CLUSTER_DOMAIN) {
            RCODE_NXDOMAIN
        } else {
            RCODE_REFUSED
        };
        return Some(reply(rcode, question_end, &[]));
    };
    // Known name, other type (AAAA): no data, which tells the resolver not to fail.
    let ips: &[Ipv4Addr] = if qtype == TYPE_A { &ips } else { &[] };
    Some(reply(0, question_end, &ips[..ips.len().min(24)]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(name: &str, qtype: u16) -> Vec<u8> {
        let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        for label in name.split('.') {
            q.push(u8::try_from(label.len()).expect("short label"));
            q.extend_from_slice(label.as_bytes());
        }
        q.push(0);
        q.extend_from_slice(&qtype.to_be_bytes());
        q.extend_from_slice(&CLASS_IN.to_be_bytes());
        q
    }

    #[test]
    fn answers_a_records_for_known_names() {
        let ips = vec![Ipv4Addr::new(10, 1, 2, 3), Ipv4Addr::new(10, 1, 2, 4)];
        let lookup =
            |name: &str| (name == "demo-peers.default.svc.cluster.local").then(|| ips.clone());
        let q = query("demo-peers.default.svc.cluster.local", TYPE_A);
        let r = answer(&q, lookup).expect("reply");
        assert_eq!(&r[..2], &[0x12, 0x34]);
        assert_eq!(r[3] & 0x0f, 0, "NOERROR");
        assert_eq!(u16::from_be_bytes([r[6], r[7]]), 2, "two answers");
        assert_eq!(&r[r.len() - 4..], &[10, 1, 2, 4]);

        let aaaa =
            answer(&query("demo-peers.default.svc.cluster.local", 28), lookup).expect("reply");
        assert_eq!((aaaa[3] & 0x0f, aaaa[7]), (0, 0), "no data, no error");
        let missing =
            answer(&query("nope.default.svc.cluster.local", TYPE_A), lookup).expect("reply");
        assert_eq!(missing[3] & 0x0f, 3, "NXDOMAIN");
        let outside = answer(&query("example.com", TYPE_A), lookup).expect("reply");
        assert_eq!(outside[3] & 0x0f, 5, "REFUSED");
    }
}
