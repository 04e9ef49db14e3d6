//! The observation: the reads the status is computed from, besides the applied StatefulSet and
//! CronJob: the cluster's ready pods and their nodes' zones, in Partitioned mode every member
//! pod with its node's zone and what each says it holds of the partitions, and the janitor's
//! newest Job.

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::ListParams;
use kube::{Api, ResourceExt};
use tracing::debug;

use super::apply::Applied;
use super::holdings;
use super::peer_token::PeerToken;
use super::{Context, Error};
use crate::crd::CacheCluster;
use crate::labels::{self, CACHE_COMPONENT, JANITOR_COMPONENT};
use crate::status::{Moves, Observation, PodMember, UNKNOWN_ZONE};
use crate::validate::ValidatedCluster;

/// The node label the EndpointSlice controller copies into each endpoint's `zone`, which is
/// where cache pods read their peers' zones from: placement must use it whatever
/// `spec.topology.zoneKey` spreads the pods by.
const ENDPOINT_ZONE_LABEL: &str = "topology.kubernetes.io/zone";

/// Reads what the status is computed from: ready pods per zone, the members of the placement
/// in Partitioned mode with the partitions moving between them, and the janitor's last Job.
///
/// # Errors
/// [`Error::Observe`] naming what could not be read.
pub(super) async fn observe(
    validated: &ValidatedCluster,
    cluster: &CacheCluster,
    applied: Applied,
    peer_token: &PeerToken,
    context: &Context,
) -> Result<Observation, Error> {
    let observe_error = |what| {
        let cluster = validated.name.clone();
        move |source| Error::Observe {
            what,
            cluster,
            source,
        }
    };
    let namespace = &validated.namespace;
    let selector = labels::selector_string(&validated.name, CACHE_COMPONENT);
    let pods: Api<Pod> = Api::namespaced(context.client.clone(), namespace);
    let pods = pods
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(observe_error("pods"))?;
    let nodes: Api<Node> = Api::all(context.client.clone());
    // Each node's labels, read once per reconcile however many pods run on it.
    let mut labels_of_node: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut ready_per_zone: BTreeMap<String, i32> = BTreeMap::new();
    let replication_factor = validated.node.partitioned.map(|p| p.replication_factor);
    let mut members = Vec::new();
    // Every pod that may hold partitions is asked, leaving ones included: they keep what they
    // owned until the new owners hold it.
    let holders: Vec<(String, Option<IpAddr>)> = match replication_factor {
        Some(_) => pods
            .items
            .iter()
            .filter(|pod| is_listed(pod))
            .map(|pod| (pod.name_any(), pod_ip(pod)))
            .collect(),
        None => Vec::new(),
    };
    for pod in &pods.items {
        let ready = is_ready(pod);
        let member = replication_factor.is_some()
            && is_listed(pod)
            && pod.metadata.deletion_timestamp.is_none();
        if !ready && !member {
            continue;
        }
        let Some(node_name) = pod.spec.as_ref().and_then(|s| s.node_name.clone()) else {
            continue;
        };
        if !labels_of_node.contains_key(&node_name) {
            let node = nodes
                .get_opt(&node_name)
                .await
                .map_err(observe_error("nodes"))?;
            let node_labels = node.map(|node| node.labels().clone()).unwrap_or_default();
            labels_of_node.insert(node_name.clone(), node_labels);
        }
        let node_labels = &labels_of_node[&node_name];
        if ready {
            let zone = node_labels
                .get(&validated.spec.topology.zone_key)
                .cloned()
                .unwrap_or_else(|| UNKNOWN_ZONE.to_string());
            *ready_per_zone.entry(zone).or_insert(0) += 1;
        }
        if member {
            members.push(PodMember {
                name: pod.name_any(),
                zone: node_labels.get(ENDPOINT_ZONE_LABEL).cloned(),
                ready,
            });
        }
    }
    let moves = match replication_factor {
        Some(_) => Some(moves(&holders, peer_token, context).await),
        None => None,
    };
    let jobs: Api<Job> = Api::namespaced(context.client.clone(), namespace);
    let jobs = jobs
        .list(
            &ListParams::default()
                .labels(&labels::selector_string(&validated.name, JANITOR_COMPONENT)),
        )
        .await
        .map_err(observe_error("janitor jobs"))?;
    let last_job = jobs.items.into_iter().max_by(|a, b| {
        (
            a.metadata.creation_timestamp.as_ref(),
            a.metadata.name.as_ref(),
        )
            .cmp(&(
                b.metadata.creation_timestamp.as_ref(),
                b.metadata.name.as_ref(),
            ))
    });
    Ok(Observation {
        generation: cluster.metadata.generation,
        desired_replicas: validated.spec.replicas,
        stateful_set_generation: applied.stateful_set.metadata.generation,
        stateful_set: applied.stateful_set.status,
        ready_per_zone,
        replication_factor,
        members,
        moves,
        schedule: validated.schedule.to_string(),
        selector,
        janitor: applied.janitor.status,
        last_job,
    })
}

/// Asks every listed pod, all at once, which partitions it holds; a pod that does not answer
/// (starting, unreachable, refusing the token) is counted as unread.
async fn moves(pods: &[(String, Option<IpAddr>)], token: &PeerToken, context: &Context) -> Moves {
    let answers = futures::future::join_all(pods.iter().map(|(name, ip)| async move {
        let ip = (*ip)?;
        match context
            .holdings
            .read(ip, &token.current, &token.previous)
            .await
        {
            Ok(holdings) => Some(holdings),
            Err(error) => {
                debug!(pod = %name, error = %crate::error_chain(&error), "holdings not read");
                None
            }
        }
    }))
    .await;
    holdings::moves(&answers)
}

/// The pod's IP, if it has a valid one.
fn pod_ip(pod: &Pod) -> Option<IpAddr> {
    pod.status
        .as_ref()
        .and_then(|status| status.pod_ip.as_deref())
        .and_then(|ip| ip.parse().ok())
}

/// Whether the peers Service's EndpointSlices list `pod`: the EndpointSlice controller lists
/// a pod once it has an address and until it has finished, ready or not (the Service
/// publishes not-ready addresses). A listed pod is a member of the placement the cache pods
/// compute unless it is terminating (its endpoint says so, and the pods leave it out); a
/// terminating one still holds the partitions it is handing over.
fn is_listed(pod: &Pod) -> bool {
    let Some(status) = pod.status.as_ref() else {
        return false;
    };
    status.pod_ip.as_deref().is_some_and(|ip| !ip.is_empty())
        && !matches!(status.phase.as_deref(), Some("Succeeded" | "Failed"))
}

fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|status| status.conditions.as_ref())
        .is_some_and(|conditions| {
            conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        })
}
