//! The observation: the reads the status is computed from, besides the applied StatefulSet and
//! CronJob: the cluster's ready pods and their nodes' zones, and the janitor's newest Job.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::ListParams;
use kube::{Api, ResourceExt};

use super::apply::Applied;
use super::{Context, Error};
use crate::crd::CacheCluster;
use crate::labels::{self, CACHE_COMPONENT, JANITOR_COMPONENT};
use crate::status::Observation;
use crate::validate::ValidatedCluster;

/// The zone shown for ready pods whose node has no zone label.
const UNKNOWN_ZONE: &str = "unknown";

/// Reads what the status is computed from: ready pods per zone and the janitor's last Job.
///
/// # Errors
/// [`Error::Observe`] naming what could not be read.
pub(super) async fn observe(
    validated: &ValidatedCluster,
    cluster: &CacheCluster,
    applied: Applied,
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
    let mut zone_of_node: BTreeMap<String, String> = BTreeMap::new();
    let mut ready_per_zone: BTreeMap<String, i32> = BTreeMap::new();
    for pod in pods.items.iter().filter(|pod| is_ready(pod)) {
        let Some(node_name) = pod.spec.as_ref().and_then(|s| s.node_name.clone()) else {
            continue;
        };
        let zone = match zone_of_node.get(&node_name) {
            Some(zone) => zone.clone(),
            None => {
                let node = nodes
                    .get_opt(&node_name)
                    .await
                    .map_err(observe_error("nodes"))?;
                let zone = node
                    .and_then(|node| {
                        node.labels()
                            .get(&validated.spec.topology.zone_key)
                            .cloned()
                    })
                    .unwrap_or_else(|| UNKNOWN_ZONE.to_string());
                zone_of_node.insert(node_name, zone.clone());
                zone
            }
        };
        *ready_per_zone.entry(zone).or_insert(0) += 1;
    }
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
        schedule: validated.schedule.to_string(),
        selector,
        janitor: applied.janitor.status,
        last_job,
    })
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
