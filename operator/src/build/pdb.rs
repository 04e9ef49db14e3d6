//! The PodDisruptionBudget that keeps voluntary evictions (node drains, upgrades) from taking
//! too many cache pods at once.

use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::child_meta;
use crate::labels::{self, CACHE_COMPONENT};
use crate::validate::ValidatedCluster;

/// The budget, or `None` when disabled. Without minAvailable or maxUnavailable in the spec,
/// one pod at a time may be evicted.
pub(super) fn disruption_budget(cluster: &ValidatedCluster) -> Option<PodDisruptionBudget> {
    let budget = &cluster.spec.pod_disruption_budget;
    if !budget.enabled {
        return None;
    }
    let (min_available, max_unavailable) = match (&budget.min_available, &budget.max_unavailable) {
        (None, None) => (None, Some(IntOrString::Int(1))),
        (min, max) => (min.clone(), max.clone()),
    };
    Some(PodDisruptionBudget {
        metadata: child_meta(
            cluster,
            labels::names::disruption_budget(&cluster.name),
            CACHE_COMPONENT,
        ),
        spec: Some(PodDisruptionBudgetSpec {
            selector: Some(LabelSelector {
                match_labels: Some(labels::selector(&cluster.name, CACHE_COMPONENT)),
                ..LabelSelector::default()
            }),
            min_available,
            max_unavailable,
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    })
}
