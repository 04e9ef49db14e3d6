//! Deletion by the garbage collector, on CacheClusters of its own in `e2e-gc`.

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::Api;

use crate::suite::Env;
use crate::support::{TIMEOUT, Target, TestResult, api, apply, kubectl, wait_for};

/// The scenario's own namespace (created and deleted by the suite).
pub const NAMESPACE: &str = "e2e-gc";
/// Deleted with the default `reclaimPolicy: Retain`.
const RETAINED: Target = Target {
    namespace: NAMESPACE,
    name: "retained",
};
/// Deleted with `reclaimPolicy: Delete`.
const RECLAIMED: Target = Target {
    namespace: NAMESPACE,
    name: "reclaimed",
};

/// Deleting a CacheCluster lets the real garbage collector remove every child it
/// owns; the claim stays with `reclaimPolicy: Retain` (the default) and goes with
/// `Delete`.
pub async fn garbage_collected(env: &Env) -> TestResult {
    create(env, RETAINED, "").await?;
    RETAINED.wait_settled(env, 1).await?;
    let all = children(env, RETAINED).await?;
    if all.len() != 7 {
        return Err(format!("{} has only {all:?}", RETAINED.name));
    }
    delete(env, RETAINED).await?;
    wait_for(
        "the children to be garbage collected",
        TIMEOUT,
        async || {
            let left = children(env, RETAINED).await?;
            if left.is_empty() {
                Ok(Some(()))
            } else {
                Err(format!("left: {left:?}"))
            }
        },
    )
    .await?;
    let claims = api::<PersistentVolumeClaim>(env, NAMESPACE);
    let retained_claim = format!("{}-data", RETAINED.name);
    if claims
        .get_opt(&retained_claim)
        .await
        .map_err(|e| e.to_string())?
        .is_none()
    {
        return Err(format!("the retained claim {retained_claim} was deleted"));
    }

    create(
        env,
        RECLAIMED,
        "  persistence:\n    reclaimPolicy: Delete\n",
    )
    .await?;
    let reclaimed_claim = format!("{}-data", RECLAIMED.name);
    wait_for("the owned claim", TIMEOUT, async || {
        claims
            .get_opt(&reclaimed_claim)
            .await
            .map_err(|e| e.to_string())
    })
    .await?;
    delete(env, RECLAIMED).await?;
    wait_for(
        "the owned claim to be garbage collected",
        TIMEOUT,
        async || {
            let claim = claims
                .get_opt(&reclaimed_claim)
                .await
                .map_err(|e| e.to_string())?;
            let sts = api::<StatefulSet>(env, NAMESPACE)
                .get_opt(RECLAIMED.name)
                .await
                .map_err(|e| e.to_string())?;
            match (claim, sts) {
                (None, None) => Ok(Some(())),
                (claim, sts) => Err(format!(
                    "claim left: {}, StatefulSet left: {}",
                    claim.is_some(),
                    sts.is_some()
                )),
            }
        },
    )
    .await
}

/// A one-replica CacheCluster with `extra_spec` (indented YAML) added to its spec.
async fn create(env: &Env, target: Target, extra_spec: &str) -> TestResult {
    let manifest = format!(
        "apiVersion: tidecache.io/v1alpha1\nkind: CacheCluster\nmetadata:\n  name: {}\n  \
         namespace: {}\nspec:\n  replicas: 1\n{extra_spec}",
        target.name, target.namespace
    );
    apply(env, &manifest).await.map(drop)
}

async fn delete(env: &Env, target: Target) -> TestResult {
    kubectl(
        env,
        &[
            "delete",
            "cachecluster",
            target.name,
            "-n",
            target.namespace,
            "--wait=false",
        ],
    )
    .await
    .map(drop)
}

/// Which of the CacheCluster's owned children exist: StatefulSet, client and peers
/// Services, CronJob, PodDisruptionBudget, ServiceAccount, pods.
async fn children(env: &Env, target: Target) -> TestResult<Vec<&'static str>> {
    async fn exists<K>(api: Api<K>, name: &str) -> TestResult<bool>
    where
        K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    {
        api.get_opt(name)
            .await
            .map(|o| o.is_some())
            .map_err(|e| format!("reading {name}: {e}"))
    }
    let (ns, name) = (target.namespace, target.name);
    let found = [
        (
            "StatefulSet",
            exists(api::<StatefulSet>(env, ns), name).await?,
        ),
        ("Service", exists(api::<Service>(env, ns), name).await?),
        (
            "peers Service",
            exists(api::<Service>(env, ns), &format!("{name}-peers")).await?,
        ),
        (
            "CronJob",
            exists(api::<CronJob>(env, ns), &format!("{name}-janitor")).await?,
        ),
        (
            "PodDisruptionBudget",
            exists(api::<PodDisruptionBudget>(env, ns), name).await?,
        ),
        (
            "ServiceAccount",
            exists(api::<ServiceAccount>(env, ns), &format!("{name}-cache")).await?,
        ),
        ("pods", !target.pods(env).await?.is_empty()),
    ];
    Ok(found
        .into_iter()
        .filter_map(|(kind, there)| there.then_some(kind))
        .collect())
}
