//! Resilience on the sample, each scenario putting back what it changed: drift undone
//! by the operator, and a pod cut off the network.

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;

use crate::suite::Env;
use crate::support::{DEMO, TIMEOUT, TestResult, api, is_ready, kubectl, restart_count, wait_for};

/// A deleted CronJob comes back; an edited StatefulSet is put back and its rollout
/// settles with all three pods.
pub async fn drift_undone(env: &Env) -> TestResult {
    let ns = DEMO.namespace;
    DEMO.wait_settled(env, 3).await?;
    let crons = api::<CronJob>(env, ns);
    let old = crons.get("demo-janitor").await.map_err(|e| e.to_string())?;
    kubectl(
        env,
        &[
            "delete",
            "cronjob",
            "demo-janitor",
            "-n",
            ns,
            "--wait=false",
        ],
    )
    .await?;
    wait_for("the CronJob to be recreated", TIMEOUT, async || {
        let now = crons
            .get_opt("demo-janitor")
            .await
            .map_err(|e| e.to_string())?;
        Ok(now.filter(|c| c.uid() != old.uid() && c.metadata.deletion_timestamp.is_none()))
    })
    .await?;
    let patch = r#"{"spec":{"template":{"spec":{"terminationGracePeriodSeconds":5}}}}"#;
    kubectl(
        env,
        &[
            "patch",
            "statefulset",
            DEMO.name,
            "-n",
            ns,
            "--type=merge",
            "-p",
            patch,
        ],
    )
    .await?;
    wait_for("the StatefulSet edit to be undone", TIMEOUT, async || {
        let sts = api::<StatefulSet>(env, ns)
            .get(DEMO.name)
            .await
            .map_err(|e| e.to_string())?;
        let grace = sts
            .spec
            .and_then(|s| s.template.spec)
            .and_then(|s| s.termination_grace_period_seconds);
        if grace == Some(60) {
            Ok(Some(()))
        } else {
            Err(format!("grace {grace:?}"))
        }
    })
    .await?;
    DEMO.wait_settled(env, 3).await.map(drop)
}

/// Taking a pod's veth down (how a zone will be cut off) fails its readiness probe:
/// the pod turns NotReady and the CacheCluster counts one ready replica less; back up,
/// it is Ready again without a restart.
pub async fn network_cut(env: &Env) -> TestResult {
    let ns = DEMO.namespace;
    let pods = DEMO.wait_settled(env, 3).await?;
    let (name, pod) = pods.iter().next().ok_or("no cache pod")?;
    let uid = pod.uid().unwrap_or_default();
    let restarts_before = restart_count(pod);
    let address = env
        .cluster
        .kubelet()
        .pod_address(&uid)
        .ok_or_else(|| format!("the kubelet has no network namespace for {name}"))?;
    let network = env.cluster.network();
    network
        .set_link(&address, false)
        .map_err(|e| e.to_string())?;
    let cut = wait_for(&format!("{name} to turn NotReady"), TIMEOUT, async || {
        let now = api::<Pod>(env, ns)
            .get(name)
            .await
            .map_err(|e| e.to_string())?;
        let ready = DEMO.get(env).await?["status"]["readyReplicas"].as_u64();
        if !is_ready(&now) && ready == Some(2) {
            Ok(Some(()))
        } else {
            Err(format!(
                "pod ready {}, CacheCluster readyReplicas {ready:?}",
                is_ready(&now)
            ))
        }
    })
    .await;
    // Reconnect whatever happened, so that a failure here does not spread.
    network
        .set_link(&address, true)
        .map_err(|e| e.to_string())?;
    cut?;
    let pods = DEMO.wait_settled(env, 3).await?;
    let after = pods
        .get(name)
        .ok_or_else(|| format!("{name} is gone after the cut"))?;
    let restarts = restart_count(after) - restarts_before;
    if restarts != 0 {
        return Err(format!(
            "{name} restarted {restarts} times during a short cut"
        ));
    }
    Ok(())
}
