//! The operator at rest, judged by the apiserver's own audit log rather than by the
//! operator's metrics: with nothing changing, it writes nothing. The real apiserver
//! defaults fields the operator's fake API in its unit tests never fills in; a
//! defaulted field the operator kept "fixing" would show here as a write per reconcile.

use std::time::Duration;

use chrono::Utc;
use k8s_openapi::api::batch::v1::CronJob;
use tidecache_e2e::cluster::{OPERATOR_LEASE, OPERATOR_NAMESPACE, operator_user};
use tidecache_e2e::control_plane::audit::AuditEvent;

use crate::suite::Env;
use crate::support::{DEMO, TIMEOUT, TestResult, api, kubectl, wait_for};

/// How long the operator is watched at rest.
const WINDOW: Duration = Duration::from_secs(60);
/// How long the operator must have written nothing before the window opens (it is still
/// reporting the janitor's last Job before that).
const QUIET: Duration = Duration::from_secs(5);
/// The sample's janitor CronJob.
const JANITOR: &str = "demo-janitor";
/// An annotation the operator does not own, set during the window on...
const POKE: &str = "e2e.tidecache.io/poke";
/// ...these, in turn (kubectl's kinds, each named like the sample).
const POKED: [&str; 2] = ["cachecluster", "statefulset"];

/// The sample settled and its janitor suspended (the CronJob fires every minute, and
/// each Job is a change the operator rightly reports in status), the operator makes no
/// write request in 60 s: no apply of a child, no status write, no Event, although it
/// reconciles every 10 s (an annotation it does not own changes on the CacheCluster
/// or the StatefulSet, and each reconcile reads the StatefulSet). The one
/// write excluded is the leader's renewal of its own Lease
/// (`coordination.k8s.io/leases` `tidecache-system/tidecache-operator`), which must be
/// there: it proves the audit log sees the operator during the window.
pub async fn steady_state_writes_nothing(env: &Env) -> TestResult {
    DEMO.wait_settled(env, 3).await?;
    let suspended_at = Utc::now();
    DEMO.patch(env, r#"{"spec":{"janitor":{"suspend":true}}}"#)
        .await?;
    let result = watch_idle(env, suspended_at).await;
    // Put the sample back whatever happened.
    let resumed = resume_janitor(env).await;
    result.and(resumed)
}

/// The operator's write requests received since `since`, except the renewals of its
/// Lease, and those renewals.
fn operator_writes(
    env: &Env,
    since: chrono::DateTime<Utc>,
) -> TestResult<(Vec<AuditEvent>, Vec<AuditEvent>)> {
    let user = operator_user();
    let events = env
        .cluster
        .plane()
        .audit_events()
        .map_err(|e| e.to_string())?;
    Ok(events
        .into_iter()
        .filter(|e| {
            e.user.username == user && e.is_write() && e.request_received_timestamp >= since
        })
        .partition(|e| {
            !e.is_about(
                "coordination.k8s.io",
                "leases",
                OPERATOR_NAMESPACE,
                OPERATOR_LEASE,
            )
        }))
}

fn list(events: &[AuditEvent]) -> String {
    events
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n  ")
}

async fn watch_idle(env: &Env, suspended_at: chrono::DateTime<Utc>) -> TestResult {
    let ns = DEMO.namespace;
    let crons = api::<CronJob>(env, ns);
    wait_for(
        "the janitor suspended, its last Job done and reported, the operator quiet",
        TIMEOUT,
        async || {
            let cron = crons.get(JANITOR).await.map_err(|e| e.to_string())?;
            let suspended = cron.spec.as_ref().and_then(|s| s.suspend) == Some(true);
            let active = cron
                .status
                .as_ref()
                .and_then(|s| s.active.as_ref())
                .map_or(0, Vec::len);
            let cc = DEMO.get(env).await?;
            let observed = cc["status"]["observedGeneration"] == cc["metadata"]["generation"];
            // Other scenarios' CacheClusters and namespaces must be gone: tearing them down
            // is a change the operator rightly writes for.
            let clusters = kubectl(
                env,
                &[
                    "get",
                    "cacheclusters",
                    "-A",
                    "-o",
                    "jsonpath={range .items[*]}{.metadata.namespace}/{.metadata.name} {end}",
                ],
            )
            .await?;
            let terminating = kubectl(
                env,
                &[
                    "get",
                    "namespaces",
                    "-o",
                    "jsonpath={.items[?(@.status.phase==\"Terminating\")].metadata.name}",
                ],
            )
            .await?;
            let only_demo =
                clusters.trim() == format!("{ns}/{}", DEMO.name) && terminating.trim().is_empty();
            let (writes, _) = operator_writes(env, suspended_at)?;
            // The audit log must show the operator applying the suspension: the proof
            // that it records this user's writes at all.
            let applied = writes
                .iter()
                .any(|e| e.verb == "patch" && e.is_about("batch", "cronjobs", ns, JANITOR));
            let quiet_for = writes.last().map(|e| {
                (Utc::now() - e.stage_timestamp)
                    .to_std()
                    .unwrap_or_default()
            });
            if suspended
                && active == 0
                && observed
                && only_demo
                && applied
                && quiet_for >= Some(QUIET)
            {
                Ok(Some(()))
            } else {
                Err(format!(
                    "CronJob suspended {suspended}, {active} active Jobs; status observed the \
                     generation {observed}; CacheClusters [{}], terminating namespaces [{}]; \
                     the operator's writes since the suspension:\n  {}",
                    clusters.trim(),
                    terminating.trim(),
                    list(&writes)
                ))
            }
        },
    )
    .await?;
    let from = Utc::now();
    // Changes the operator must ignore, each making it reconcile: without them it
    // would be idle, and a write it repeats on every reconcile would not show.
    let mut pokes = 0;
    while Utc::now() - from < chrono::TimeDelta::from_std(WINDOW).unwrap_or_default() {
        let target = POKED[pokes % POKED.len()];
        pokes += 1;
        kubectl(
            env,
            &[
                "annotate",
                target,
                DEMO.name,
                "-n",
                ns,
                &format!("{POKE}={pokes}"),
                "--overwrite",
            ],
        )
        .await?;
        tokio::time::sleep(WINDOW / 6).await;
    }
    let to = Utc::now();
    for target in POKED {
        kubectl(
            env,
            &["annotate", target, DEMO.name, "-n", ns, &format!("{POKE}-")],
        )
        .await?;
    }
    let reconciles = env
        .cluster
        .plane()
        .audit_events()
        .map_err(|e| e.to_string())?
        .into_iter()
        .filter(|e| {
            e.user.username == operator_user()
                && e.verb == "get"
                && e.is_about("apps", "statefulsets", ns, DEMO.name)
                && e.request_received_timestamp >= from
                && e.request_received_timestamp <= to
        })
        .count();
    let (writes, renewals) = operator_writes(env, from)?;
    let in_window = |e: &AuditEvent| e.request_received_timestamp <= to;
    let writes: Vec<AuditEvent> = writes.into_iter().filter(in_window).collect();
    let renewals: Vec<AuditEvent> = renewals.into_iter().filter(in_window).collect();
    eprintln!(
        "steady state over {WINDOW:?}: {pokes} pokes, {reconciles} reconciles, {} writes, \
         {} renewals of the Lease (excluded)",
        writes.len(),
        renewals.len()
    );
    if !writes.is_empty() {
        return Err(format!(
            "with nothing changing the operator made {} write requests in {WINDOW:?}:\n  {}",
            writes.len(),
            list(&writes)
        ));
    }
    if reconciles < pokes {
        return Err(format!(
            "the operator reconciled {reconciles} times (reads of the StatefulSet) for \
             {pokes} changes: its silence proves nothing"
        ));
    }
    if renewals.is_empty() {
        return Err(format!(
            "no renewal of the Lease {OPERATOR_NAMESPACE}/{OPERATOR_LEASE} in {WINDOW:?}: \
             the audit log does not see the operator, so its silence proves nothing"
        ));
    }
    Ok(())
}

async fn resume_janitor(env: &Env) -> TestResult {
    DEMO.patch(env, r#"{"spec":{"janitor":{"suspend":false}}}"#)
        .await?;
    let crons = api::<CronJob>(env, DEMO.namespace);
    wait_for("the janitor resumed", TIMEOUT, async || {
        let cron = crons.get(JANITOR).await.map_err(|e| e.to_string())?;
        let suspend = cron.spec.and_then(|s| s.suspend);
        if suspend == Some(false) {
            Ok(Some(()))
        } else {
            Err(format!("CronJob suspend {suspend:?}"))
        }
    })
    .await
}
