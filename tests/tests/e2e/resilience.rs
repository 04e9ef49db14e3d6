//! Resilience on the sample, each scenario putting back what it changed: drift of every
//! kind of child undone by the operator, and a pod cut off the network.

use std::time::Instant;

use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use serde_json::{Value, json};
use tidecache_e2e::kubelet::{ProbeKind, Summary};

use crate::suite::Env;
use crate::support::{DEMO, TIMEOUT, TestResult, api, is_ready, kubectl, restart_count, wait_for};

/// The cache pods' container.
const CONTAINER: &str = "cache-node";

/// A field the operator owns, changed behind its back.
struct Drift {
    /// kubectl's name of the kind.
    kind: &'static str,
    name: &'static str,
    /// The path of the field.
    field: &'static [&'static str],
    /// The value it is changed to.
    drifted: fn() -> Value,
}

/// Every kind of child, each changed in a field the operator owns with `kubectl patch`
/// through the real apiserver, one at a time: each is put back to the value it had (so
/// each kind's own watch, not a reconcile caused by another, has to notice). A deleted
/// CronJob is recreated. The StatefulSet's rollout settles with all three pods.
pub async fn drift_undone(env: &Env) -> TestResult {
    let ns = DEMO.namespace;
    DEMO.wait_settled(env, 3).await?;
    let part_of = &["metadata", "labels", "app.kubernetes.io/part-of"];
    let drifts = [
        Drift {
            kind: "statefulset",
            name: "demo",
            field: &["spec", "template", "spec", "terminationGracePeriodSeconds"],
            drifted: || json!(5),
        },
        Drift {
            kind: "service",
            name: "demo-peers",
            field: &["spec", "publishNotReadyAddresses"],
            drifted: || json!(false),
        },
        Drift {
            kind: "service",
            name: "demo",
            field: &["spec", "selector", "app.kubernetes.io/instance"],
            drifted: || json!("drifted"),
        },
        Drift {
            kind: "persistentvolumeclaim",
            name: "demo-data",
            field: part_of,
            drifted: || json!("drifted"),
        },
        Drift {
            kind: "cronjob",
            name: "demo-janitor",
            field: &["spec", "concurrencyPolicy"],
            drifted: || json!("Allow"),
        },
        Drift {
            kind: "poddisruptionbudget",
            name: "demo",
            field: &["spec", "maxUnavailable"],
            drifted: || json!(2),
        },
        Drift {
            kind: "serviceaccount",
            name: "demo-cache",
            field: part_of,
            drifted: || json!("drifted"),
        },
        Drift {
            kind: "rolebinding",
            name: "demo-cache",
            field: part_of,
            drifted: || json!("drifted"),
        },
    ];
    for drift in &drifts {
        undone(env, drift).await?;
    }

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
    DEMO.wait_settled(env, 3).await.map(drop)
}

/// Changes `drift`'s field and waits for the operator to put back the value it had.
async fn undone(env: &Env, drift: &Drift) -> TestResult {
    let ns = DEMO.namespace;
    let what = format!("{} {}: {}", drift.kind, drift.name, drift.field.join("."));
    let read = async || -> TestResult<Value> {
        let out = kubectl(
            env,
            &["get", drift.kind, drift.name, "-n", ns, "-o", "json"],
        )
        .await?;
        let object: Value = serde_json::from_str(&out).map_err(|e| e.to_string())?;
        Ok(drift
            .field
            .iter()
            .try_fold(&object, |v, key| v.get(key))
            .cloned()
            .unwrap_or(Value::Null))
    };
    let built = read().await?;
    let drifted = (drift.drifted)();
    if built.is_null() || built == drifted {
        return Err(format!("{what} is {built} before the change to {drifted}"));
    }
    let patch = drift
        .field
        .iter()
        .rev()
        .fold(drifted.clone(), |inner, key| json!({ *key: inner }));
    let changed_at = Instant::now();
    let out = kubectl(
        env,
        &[
            "patch",
            drift.kind,
            drift.name,
            "-n",
            ns,
            "--type=merge",
            "-p",
            &patch.to_string(),
            "-o",
            "json",
        ],
    )
    .await?;
    let patched: Value = serde_json::from_str(&out).map_err(|e| e.to_string())?;
    // (A `false` is stored as absent.)
    let stored = drift
        .field
        .iter()
        .try_fold(&patched, |v, key| v.get(key))
        .cloned()
        .unwrap_or(Value::Null);
    if stored == built {
        return Err(format!("{what}: the patch left it at {built}"));
    }
    wait_for(
        &format!("{what} put back to {built}"),
        TIMEOUT,
        async || {
            let now = read().await?;
            if now == built {
                Ok(Some(()))
            } else {
                Err(format!("still {now}"))
            }
        },
    )
    .await?;
    eprintln!(
        "drift of {what} to {drifted} undone in {:.1?}",
        changed_at.elapsed()
    );
    Ok(())
}

/// Taking a pod's veth down (how a zone will be cut off) fails its probes: the pod
/// turns NotReady and the CacheCluster counts one ready replica less; back up, it is
/// Ready again.
///
/// Whether it restarts is judged on what the kubelet observed, not on how long the cut
/// happened to last: the cut lasts until the kubelet has turned the pod NotReady, its
/// liveness probe has failed at least once and the CacheCluster shows the drop (the
/// operator's latency, which a loaded machine stretches). Then the readiness budget
/// must have run out while the liveness failures were still below their threshold
/// (the probes the operator sets make a cut NotReady before anything kills the pod),
/// and the pod must have restarted exactly as often as the kubelet killed it, which it
/// does only after `failureThreshold` liveness failures in a row.
pub async fn network_cut(env: &Env) -> TestResult {
    let ns = DEMO.namespace;
    let pods = DEMO.wait_settled(env, 3).await?;
    let (name, pod) = pods.iter().next().ok_or("no cache pod")?;
    let uid = pod.uid().unwrap_or_default();
    let restarts_before = restart_count(pod);
    let threshold = pod
        .spec
        .as_ref()
        .and_then(|s| s.containers.first())
        .and_then(|c| c.liveness_probe.as_ref())
        .ok_or_else(|| format!("{name} has no liveness probe"))?
        .failure_threshold
        .unwrap_or(3);
    let kubelet = env.cluster.kubelet();
    let address = kubelet
        .pod_address(&uid)
        .ok_or_else(|| format!("the kubelet has no network namespace for {name}"))?;
    let since = kubelet.observations(&uid).len();
    let seen = || {
        let all = kubelet.observations(&uid);
        Summary::of(all.get(since..).unwrap_or_default(), CONTAINER)
    };
    let network = env.cluster.network();
    let cut_at = Instant::now();
    network
        .set_link(&address, false)
        .map_err(|e| e.to_string())?;
    let cut = wait_for(
        &format!("{name} to turn NotReady, its liveness probe failing"),
        TIMEOUT,
        async || {
            let summary = seen();
            let now = api::<Pod>(env, ns)
                .get(name)
                .await
                .map_err(|e| e.to_string())?;
            let ready = DEMO.get(env).await?["status"]["readyReplicas"].as_u64();
            if summary.unready.is_some()
                && summary.longest_liveness_failures >= 1
                && !is_ready(&now)
                && ready == Some(2)
            {
                Ok(Some(()))
            } else {
                Err(format!(
                    "kubelet: {summary:?}; pod ready {}, CacheCluster readyReplicas {ready:?}",
                    is_ready(&now)
                ))
            }
        },
    )
    .await;
    let held = cut_at.elapsed();
    // Reconnect whatever happened, so that a failure here does not spread.
    network
        .set_link(&address, true)
        .map_err(|e| e.to_string())?;
    cut?;
    let pods = DEMO.wait_settled(env, 3).await?;
    let summary = seen();
    let after = pods
        .get(name)
        .ok_or_else(|| format!("{name} is gone after the cut"))?;
    let restarts = restart_count(after) - restarts_before;
    let unready = summary
        .unready
        .ok_or_else(|| format!("the kubelet never turned {name} NotReady: {summary:?}"))?;
    eprintln!(
        "network cut of {name} held {held:.1?}: NotReady after {:.1?} with {}/{threshold} \
         liveness failures, at most {} in a row, {} kills, {restarts} restarts",
        unready.at.duration_since(cut_at),
        unready.liveness_failures,
        summary.longest_liveness_failures,
        summary.kills.len()
    );
    if unready.liveness_failures >= threshold {
        return Err(format!(
            "{name} turned NotReady only after {} liveness failures (threshold {threshold}): \
             a cut kills pods before they leave the Service",
            unready.liveness_failures
        ));
    }
    if usize::try_from(restarts).ok() != Some(summary.kills.len()) {
        return Err(format!(
            "{name} restarted {restarts} times, the kubelet killed it {} times: {summary:?}",
            summary.kills.len()
        ));
    }
    let killed_for_liveness = summary.kills.iter().all(|k| *k == ProbeKind::Liveness);
    let deserved = summary.longest_liveness_failures >= threshold;
    if !killed_for_liveness || summary.kills.is_empty() == deserved {
        return Err(format!(
            "kills {:?} after at most {} liveness failures in a row (threshold {threshold})",
            summary.kills, summary.longest_liveness_failures
        ));
    }
    if !summary.ready_again {
        return Err(format!(
            "the kubelet did not turn {name} Ready again: {summary:?}"
        ));
    }
    Ok(())
}
