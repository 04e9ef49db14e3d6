//! Membership changes on a CacheCluster of its own (`e2e-scale/scaling`): scaling
//! 3 → 5 → 2 with the zone spread kept and a schedule change rolling every pod, with
//! every entry written before served by every pod after each step.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::CronJob;

use crate::suite::Env;
use crate::support::{
    TIMEOUT, Target, TestResult, api, apply, check_spread, kubectl, pod_addr, put,
    replicated_everywhere, served_everywhere, wait_for,
};

/// The scenario's own namespace (created and deleted by the suite).
pub const NAMESPACE: &str = "e2e-scale";
const SCALING: Target = Target {
    namespace: NAMESPACE,
    name: "scaling",
};
/// Entries written before the membership changes, spread over the first three pods.
const ENTRIES: usize = 12;

/// `kubectl scale` 3 → 5 → 2 (the scale subresource) is followed with the zone spread
/// kept, and a new schedule reaches the CronJob and, by a rolling restart, the pods.
/// After each step every entry written at the start is read on every pod, once: a
/// Ready pod must already hold it (joining pods load the shared volume and catch up
/// from their peers before they turn ready; pods that stay keep what they had).
pub async fn scale_and_schedule(env: &Env) -> TestResult {
    apply(
        env,
        &format!(
            "apiVersion: tidecache.io/v1alpha1\nkind: CacheCluster\nmetadata:\n  name: {}\n  \
             namespace: {NAMESPACE}\nspec:\n  replicas: 3\n",
            SCALING.name
        ),
    )
    .await?;
    let pods = SCALING.wait_settled(env, 3).await?;
    check_spread(env, &pods).await?;
    let members: Vec<_> = pods.values().collect();
    let mut entries = BTreeMap::new();
    for i in 0..ENTRIES {
        let (key, value) = (
            format!("member-{i}"),
            format!("written before scaling, {i}"),
        );
        put(pod_addr(members[i % members.len()])?, &key, &value).await?;
        entries.insert(key, value);
    }
    replicated_everywhere(&pods, &entries).await?;

    for replicas in [5usize, 2] {
        let arg = format!("--replicas={replicas}");
        kubectl(
            env,
            &["scale", "cachecluster", SCALING.name, "-n", NAMESPACE, &arg],
        )
        .await?;
        let pods = SCALING.wait_settled(env, replicas).await?;
        check_spread(env, &pods).await?;
        served_everywhere(&pods, &entries)
            .await
            .map_err(|e| format!("after scaling to {replicas}: {e}"))?;
    }

    let schedule = "*/2 * * * *";
    SCALING
        .patch(
            env,
            &format!(r#"{{"spec":{{"expiry":{{"schedule":"{schedule}"}}}}}}"#),
        )
        .await?;
    let cron_name = format!("{}-janitor", SCALING.name);
    wait_for("the CronJob to follow the schedule", TIMEOUT, async || {
        let cron = api::<CronJob>(env, NAMESPACE)
            .get(&cron_name)
            .await
            .map_err(|e| e.to_string())?;
        let now = cron.spec.map(|s| s.schedule).unwrap_or_default();
        if now == schedule {
            Ok(Some(()))
        } else {
            Err(now)
        }
    })
    .await?;
    let arg = format!("--schedule={schedule}");
    let pods = wait_for(
        "the pods to run with the new schedule",
        TIMEOUT,
        async || {
            let pods = SCALING.wait_settled(env, 2).await?;
            let stale: Vec<&String> = pods
                .iter()
                .filter(|(_, p)| {
                    let args = p
                        .spec
                        .as_ref()
                        .and_then(|s| s.containers.first())
                        .and_then(|c| c.args.clone())
                        .unwrap_or_default();
                    !args.contains(&arg)
                })
                .map(|(n, _)| n)
                .collect();
            if stale.is_empty() {
                Ok(Some(pods))
            } else {
                Err(format!("old schedule on {stale:?}"))
            }
        },
    )
    .await?;
    served_everywhere(&pods, &entries)
        .await
        .map_err(|e| format!("after the rolling restart: {e}"))?;
    let cc = SCALING.get(env).await?;
    let status = cc["status"]["schedule"].as_str().unwrap_or_default();
    if !status.starts_with(schedule) {
        return Err(format!("status.schedule {status:?}"));
    }
    Ok(())
}
