//! Leader election between the two operator replicas of `deploy/`, judged by the Lease
//! and by the apiserver's audit log (which records the pod of each request's bound
//! token): killing the leader hands the Lease to the standby once the dead leader's
//! Lease has run out, and never do two replicas write at once.

use std::time::Duration;

use chrono::{DateTime, Utc};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::ListParams;
use tidecache_e2e::cluster::{OPERATOR_LEASE, OPERATOR_NAMESPACE, operator_user};
use tidecache_e2e::control_plane::ZONE_LABEL;
use tidecache_e2e::control_plane::audit::AuditEvent;

use crate::suite::Env;
use crate::support::{DEMO, TIMEOUT, TestResult, api, is_ready, kubectl, wait_for};

/// Time the standby may take beyond the dead leader's expiry: kube-lease-manager waits
/// 0.1–1 s after clearing an expired Lease before taking it, plus two requests.
const TAKEOVER_SLACK: Duration = Duration::from_secs(3);
/// The child changed while there is no leader, which only a leader puts back.
const DRIFTED: (&str, &str) = ("service", "demo-peers");
const DRIFT_LABEL: &str = "app.kubernetes.io/part-of";
/// The admission webhook's Secret and configuration (deploy/webhook.yaml).
const WEBHOOK_SECRET: &str = "tidecache-operator-webhook-tls";
const WEBHOOK_CONFIGURATION: &str = "tidecache-operator";

/// Kills the leader's pod (`--grace-period=0 --force`: SIGKILL, no chance to release the
/// Lease) while every node is cordoned, so that its replacement cannot run and the one
/// standby is the only candidate, and changes a child meanwhile. Then the Lease's holder
/// changes exactly once, from the dead leader to the standby, no earlier than the
/// dead leader's last renewal plus the lease duration (nobody takes a Lease that may
/// still be held) and within [`TAKEOVER_SLACK`] after it; the new leader puts the child
/// back, its first write coming after the old leader's last request; and over the whole
/// run the writes of the operator (everything but its Lease) come from one replica at a
/// time, the standby writing nothing before it holds the Lease.
pub async fn leader_takeover(env: &Env) -> TestResult {
    DEMO.wait_settled(env, 3).await?;
    env.cluster
        .wait_operator(TIMEOUT)
        .await
        .map_err(|e| e.to_string())?;
    let pods = api::<Pod>(env, OPERATOR_NAMESPACE)
        .list(&ListParams::default().labels("app.kubernetes.io/component=operator"))
        .await
        .map_err(|e| e.to_string())?
        .items;
    let names: Vec<String> = pods
        .iter()
        .filter(|p| is_ready(p))
        .map(ResourceExt::name_any)
        .collect();
    let lease = api::<Lease>(env, OPERATOR_NAMESPACE)
        .get(OPERATOR_LEASE)
        .await
        .map_err(|e| e.to_string())?;
    let old = holder(&lease).ok_or("the operator Lease has no holder")?;
    let standby = match names.as_slice() {
        [a, b] if *a == old => b.clone(),
        [a, b] if *b == old => a.clone(),
        _ => {
            return Err(format!(
                "want two ready operator pods, one holding the Lease: pods {names:?}, \
                 holder {old}"
            ));
        }
    };
    kubectl(env, &["cordon", "-l", ZONE_LABEL]).await?;
    let result = takeover(env, &old, &standby).await;
    // Undo whatever happened: the replacement pod runs, two replicas again.
    let uncordoned = kubectl(env, &["uncordon", "-l", ZONE_LABEL]).await;
    result?;
    uncordoned?;
    env.cluster
        .wait_operator(TIMEOUT)
        .await
        .map_err(|e| e.to_string())
}

fn holder(lease: &Lease) -> Option<String> {
    lease
        .spec
        .as_ref()
        .and_then(|s| s.holder_identity.clone())
        .filter(|h| !h.is_empty())
}

fn micro_time(
    t: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime>,
) -> Option<DateTime<Utc>> {
    t.and_then(|t| DateTime::from_timestamp_micros(t.0.as_microsecond()))
}

async fn takeover(env: &Env, old: &str, standby: &str) -> TestResult {
    let leases = api::<Lease>(env, OPERATOR_NAMESPACE);
    let before = leases
        .get(OPERATOR_LEASE)
        .await
        .map_err(|e| e.to_string())?;
    let mut old_renewed = micro_time(before.spec.as_ref().and_then(|s| s.renew_time.as_ref()))
        .filter(|_| holder(&before).as_deref() == Some(old));
    let killed_at = Utc::now();
    kubectl(
        env,
        &[
            "delete",
            "pod",
            old,
            "-n",
            OPERATOR_NAMESPACE,
            "--grace-period=0",
            "--force",
        ],
    )
    .await?;
    let label = format!("{DRIFT_LABEL}=drifted");
    let built = kubectl(
        env,
        &[
            "get",
            DRIFTED.0,
            DRIFTED.1,
            "-n",
            DEMO.namespace,
            "-o",
            &format!(
                "jsonpath={{.metadata.labels.{}}}",
                DRIFT_LABEL.replace('.', "\\.")
            ),
        ],
    )
    .await?;
    kubectl(
        env,
        &[
            "label",
            DRIFTED.0,
            DRIFTED.1,
            "-n",
            DEMO.namespace,
            &label,
            "--overwrite",
        ],
    )
    .await?;

    // Every holder the Lease shows, in order, and the dead leader's last renewal.
    let mut holders = vec![old.to_owned()];
    let taken = wait_for(
        &format!("{standby} to take the Lease from {old}"),
        TIMEOUT,
        async || {
            let lease = leases
                .get(OPERATOR_LEASE)
                .await
                .map_err(|e| e.to_string())?;
            let now = holder(&lease);
            let renewed = micro_time(lease.spec.as_ref().and_then(|s| s.renew_time.as_ref()));
            if let Some(h) = &now {
                if holders.last() != Some(h) {
                    holders.push(h.clone());
                }
                if h == old {
                    old_renewed = old_renewed.max(renewed);
                }
            }
            match now {
                Some(h) if h == standby => Ok(Some(lease)),
                _ => Err(format!("holders so far {holders:?}")),
            }
        },
    )
    .await?;
    let acquired = micro_time(taken.spec.as_ref().and_then(|s| s.acquire_time.as_ref()))
        .ok_or("the new holder set no acquireTime")?;
    let duration = taken
        .spec
        .as_ref()
        .and_then(|s| s.lease_duration_seconds)
        .ok_or("the Lease has no duration")?;
    let duration = Duration::from_secs(u64::try_from(duration).unwrap_or(0));
    // A renewal between the read above and the kill is in the audit log.
    let renewals = env
        .cluster
        .plane()
        .audit_events()
        .map_err(|e| e.to_string())?
        .into_iter()
        .filter(|e| {
            e.pod() == Some(old)
                && e.is_write()
                && e.is_about(
                    "coordination.k8s.io",
                    "leases",
                    OPERATOR_NAMESPACE,
                    OPERATOR_LEASE,
                )
        })
        .map(|e| e.request_received_timestamp)
        .max();
    let old_renewed = old_renewed
        .max(renewals)
        .ok_or("the dead leader's renewTime was never seen")?;
    let after_renewal = (acquired - old_renewed).to_std().unwrap_or_default();
    eprintln!(
        "leader {old} killed; {standby} took the Lease {:.1?} after the kill, {after_renewal:.1?} \
         after the last renewal (lease {duration:?}); holders {holders:?}",
        (acquired - killed_at).to_std().unwrap_or_default()
    );
    if holders != [old, standby] {
        return Err(format!(
            "the Lease went through {holders:?}, not {old} → {standby}"
        ));
    }
    // The test kubelet stops a force-deleted pod with SIGTERM and SIGKILL right after (a
    // real kubelet gives it a moment); a leader whose SIGTERM handler ran in between released
    // the Lease, and its successor may take it at once. Such a release is a write to the
    // Lease after the delete was sent (or its log says it began shutting down; the log may
    // be lost with the SIGKILL). Only a leader that never got that far must have its Lease
    // honoured to the end.
    let released = renewals.is_some_and(|last| last >= killed_at)
        || env
            .cluster
            .kubelet()
            .container_log(OPERATOR_NAMESPACE, old, "operator")
            .contains("SIGTERM: shutting down");
    if released {
        eprintln!("{old} wrote the Lease after it was deleted: it released it on SIGTERM");
    }
    if acquired < old_renewed + duration && !released {
        return Err(format!(
            "{standby} took the Lease at {acquired}, before {old}'s renewal at {old_renewed} \
             had run out ({duration:?})"
        ));
    }
    if after_renewal > duration + TAKEOVER_SLACK {
        return Err(format!(
            "{standby} took the Lease {after_renewal:?} after {old}'s last renewal: more \
             than the lease duration {duration:?} + {TAKEOVER_SLACK:?}"
        ));
    }

    wait_for(
        &format!("the new leader to put {} {} back", DRIFTED.0, DRIFTED.1),
        TIMEOUT,
        async || {
            let now = kubectl(
                env,
                &[
                    "get",
                    DRIFTED.0,
                    DRIFTED.1,
                    "-n",
                    DEMO.namespace,
                    "-o",
                    &format!(
                        "jsonpath={{.metadata.labels.{}}}",
                        DRIFT_LABEL.replace('.', "\\.")
                    ),
                ],
            )
            .await?;
            Ok((now == built).then_some(()))
        },
    )
    .await?;
    // The fix's request is in the log once it has returned.
    tokio::time::sleep(Duration::from_secs(1)).await;
    audit_one_writer(env, old, standby, acquired)
}

/// From the audit log: the operator's writes (all but its Lease) come from one replica
/// at a time; the standby's first comes after it took the Lease and after the old
/// leader's last request, and includes putting the drifted child back.
fn audit_one_writer(env: &Env, old: &str, standby: &str, acquired: DateTime<Utc>) -> TestResult {
    let user = operator_user();
    let events: Vec<AuditEvent> = env
        .cluster
        .plane()
        .audit_events()
        .map_err(|e| e.to_string())?
        .into_iter()
        .filter(|e| e.user.username == user)
        .collect();
    let lease = |e: &AuditEvent| {
        e.is_about(
            "coordination.k8s.io",
            "leases",
            OPERATOR_NAMESPACE,
            OPERATOR_LEASE,
        )
    };
    // Every replica keeps the webhook's certificate current, leader or not (each write
    // conditional on what it read), so those writes are not the controller's and are left out.
    let webhook = |e: &AuditEvent| {
        e.is_about("", "secrets", OPERATOR_NAMESPACE, WEBHOOK_SECRET)
            || e.is_about(
                "admissionregistration.k8s.io",
                "validatingwebhookconfigurations",
                "",
                WEBHOOK_CONFIGURATION,
            )
    };
    let writes: Vec<&AuditEvent> = events
        .iter()
        .filter(|e| e.is_write() && !lease(e) && !webhook(e))
        .collect();
    // One contiguous run of writes per replica: leadership never came back to a
    // replica, and no two wrote in turns.
    let mut runs: Vec<&str> = Vec::new();
    for e in &writes {
        let pod = e.pod().unwrap_or("(no pod)");
        if runs.last() != Some(&pod) {
            if runs.contains(&pod) {
                return Err(format!(
                    "{pod} wrote again after another replica had: writers in turn {runs:?} \
                     then {pod}, at {e}"
                ));
            }
            runs.push(pod);
        }
    }
    let old_last = events
        .iter()
        .filter(|e| e.pod() == Some(old))
        .map(|e| e.stage_timestamp)
        .max()
        .ok_or_else(|| format!("the audit log has no request of {old}"))?;
    let new_writes: Vec<&&AuditEvent> =
        writes.iter().filter(|e| e.pod() == Some(standby)).collect();
    let first = new_writes
        .first()
        .ok_or_else(|| format!("the audit log has no write of {standby}"))?;
    if first.request_received_timestamp < acquired {
        return Err(format!(
            "{standby} wrote before it took the Lease at {acquired}: {first}"
        ));
    }
    if first.request_received_timestamp <= old_last {
        return Err(format!(
            "{standby} wrote while {old} was still making requests (its last at {old_last}): \
             {first}"
        ));
    }
    let fixed = new_writes
        .iter()
        .any(|e| e.verb == "patch" && e.is_about("", "services", DEMO.namespace, DRIFTED.1));
    if !fixed {
        return Err(format!(
            "the audit log has no patch of services {}/{} by {standby}: {}",
            DEMO.namespace,
            DRIFTED.1,
            new_writes
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        ));
    }
    eprintln!(
        "writers in turn {runs:?}; {old}'s last request {}, {standby}'s first write {}",
        old_last.format("%H:%M:%S%.3f"),
        first
    );
    Ok(())
}
