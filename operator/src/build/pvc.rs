//! The shared volume every cache pod and the janitor mount (contract 2).
//!
//! With `reclaimPolicy: Delete` the claim is owned by the CacheCluster and garbage collection
//! removes it with the cluster; with `Retain` it carries no ownerReference and survives, so a
//! later cluster of the same name finds its data. No finalizer is needed either way, so deletion
//! can never get stuck on the operator.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimSpec, VolumeResourceRequirements,
};

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use super::child_meta;
use crate::crd::ReclaimPolicy;
use crate::labels::{self, CACHE_COMPONENT};
use crate::validate::ValidatedCluster;

/// The shared PersistentVolumeClaim.
pub(super) fn volume_claim(cluster: &ValidatedCluster) -> PersistentVolumeClaim {
    let persistence = &cluster.spec.persistence;
    let mut metadata = child_meta(
        cluster,
        labels::names::volume_claim(&cluster.name),
        CACHE_COMPONENT,
    );
    if persistence.reclaim_policy == ReclaimPolicy::Retain {
        metadata.owner_references = None;
    }
    PersistentVolumeClaim {
        metadata,
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec![persistence.access_mode.as_str().into()]),
            storage_class_name: persistence.storage_class_name.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_string(),
                    Quantity(persistence.size.clone()),
                )])),
                ..VolumeResourceRequirements::default()
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        ..PersistentVolumeClaim::default()
    }
}
