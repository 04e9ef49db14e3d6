//! The status step's write: the pure [`crate::status`] functions compute the status, this
//! writes it, and only when it differs from the stored one (no write, no watch event, no
//! loop).

use kube::api::{Patch, PatchParams};
use kube::{Api, Resource, ResourceExt};
use serde_json::json;

use super::{Context, Error};
use crate::crd::{CacheCluster, CacheClusterStatus};
use crate::labels::MANAGER;

/// Writes `status` if it differs from the stored one; returns whether it wrote.
///
/// # Errors
/// [`Error::Status`] when the API refuses the write.
pub(super) async fn write_status(
    cluster: &CacheCluster,
    namespace: &str,
    status: CacheClusterStatus,
    context: &Context,
) -> Result<bool, Error> {
    if cluster.status.as_ref() == Some(&status) {
        return Ok(false);
    }
    let name = cluster.name_any();
    let api: Api<CacheCluster> = Api::namespaced(context.client.clone(), namespace);
    let patch = json!({
        "apiVersion": CacheCluster::api_version(&()),
        "kind": CacheCluster::kind(&()),
        "status": status,
    });
    api.patch_status(
        &name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map_err(|source| Error::Status { name, source })?;
    Ok(true)
}
