//! The status step, as pure functions: what the operator observed (the StatefulSet, the ready
//! pods per zone, the janitor's CronJob and last Job) becomes a [`CacheClusterStatus`].
//!
//! Conditions follow the Kubernetes API conventions: every condition is always present, each
//! carries the generation it describes, and `lastTransitionTime` changes only when the
//! condition's `status` does (a new reason or message keeps the old time). Because the output
//! depends only on its inputs and the previous status, an unchanged cluster yields an identical
//! status and the operator skips the write.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::StatefulSetStatus;
use k8s_openapi::api::batch::v1::{CronJobStatus, Job};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::crd::{CacheClusterStatus, JanitorStatus, ZoneStatus};

/// `True` when every desired cache pod is ready on the current revision.
pub const READY: &str = "Ready";
/// `True` while the cache pods are being created, rolled or scaled.
pub const PROGRESSING: &str = "Progressing";
/// `True` when the cluster does not work as specified although nothing is in progress: pods
/// missing, the janitor failing, or a spec the operator cannot act on.
pub const DEGRADED: &str = "Degraded";
/// Reason of all three conditions when the spec is invalid.
pub const INVALID_SPEC: &str = "InvalidSpec";
/// Reason of `Degraded` when a reconcile failed (the API refused a child, or was unreachable).
pub const RECONCILE_FAILED: &str = "ReconcileFailed";

/// Everything [`observed`] needs besides the previous status.
#[derive(Debug, Clone, Default)]
pub struct Observation {
    /// `metadata.generation` of the CacheCluster.
    pub generation: Option<i64>,
    /// `spec.replicas`.
    pub desired_replicas: i32,
    /// The StatefulSet's status, if it has one yet.
    pub stateful_set: Option<StatefulSetStatus>,
    /// `metadata.generation` of the StatefulSet.
    pub stateful_set_generation: Option<i64>,
    /// Ready cache pods per zone.
    pub ready_per_zone: BTreeMap<String, i32>,
    /// The schedule in force, as shown to the admin.
    pub schedule: String,
    /// Label selector of the cache pods.
    pub selector: String,
    /// The janitor CronJob's status.
    pub janitor: Option<CronJobStatus>,
    /// The most recent janitor Job.
    pub last_job: Option<Job>,
}

/// The status of a valid cluster.
pub fn observed(
    observation: &Observation,
    previous: Option<&CacheClusterStatus>,
    now: &Time,
) -> CacheClusterStatus {
    let sts = observation.stateful_set.clone().unwrap_or_default();
    let desired = observation.desired_replicas;
    let ready = sts.ready_replicas.unwrap_or(0);
    let updated = sts.updated_replicas.unwrap_or(0);
    let rolled_out = observation.stateful_set_generation.is_some()
        && sts.observed_generation >= observation.stateful_set_generation
        && sts.replicas == desired
        && updated >= desired
        && sts.current_revision == sts.update_revision;
    let all_ready = rolled_out && ready >= desired;
    let janitor = janitor_status(observation);
    let janitor_failed = janitor.as_ref().and_then(|j| j.last_result.as_deref()) == Some("Failed");

    let ready_condition = if desired == 0 {
        (
            true,
            "ScaledToZero",
            "the cluster has no cache pods".to_string(),
        )
    } else if all_ready {
        (
            true,
            "AllReplicasReady",
            format!("{ready} of {desired} cache pods are ready"),
        )
    } else {
        (
            false,
            "ReplicasNotReady",
            format!("{ready} of {desired} cache pods are ready"),
        )
    };
    let progressing_condition = if rolled_out && ready >= desired {
        (
            false,
            "RolledOut",
            "every cache pod runs the current spec".to_string(),
        )
    } else if !rolled_out {
        (
            true,
            "RollingOut",
            format!("{updated} of {desired} cache pods run the current spec"),
        )
    } else {
        (
            true,
            "StartingPods",
            format!("waiting for {} cache pods to become ready", desired - ready),
        )
    };
    let degraded_condition = if janitor_failed {
        (
            true,
            "JanitorFailed",
            "the last janitor run failed; expired buckets stay on the volume until a run \
             succeeds (see the janitor Job's logs)"
                .to_string(),
        )
    } else {
        (
            false,
            "AsExpected",
            "the cluster works as specified".to_string(),
        )
    };

    let previous_conditions = previous.map(|p| p.conditions.as_slice()).unwrap_or(&[]);
    let conditions = [
        (READY, ready_condition),
        (PROGRESSING, progressing_condition),
        (DEGRADED, degraded_condition),
    ]
    .into_iter()
    .map(|(type_, (status, reason, message))| {
        condition(
            type_,
            status,
            reason,
            message,
            observation.generation,
            previous_conditions,
            now,
        )
    })
    .collect();

    let zones: Vec<ZoneStatus> = observation
        .ready_per_zone
        .iter()
        .map(|(zone, ready_replicas)| ZoneStatus {
            zone: zone.clone(),
            ready_replicas: *ready_replicas,
        })
        .collect();
    CacheClusterStatus {
        observed_generation: observation.generation,
        replicas: sts.replicas,
        ready_replicas: ready,
        ready_zones: i32::try_from(zones.iter().filter(|z| z.ready_replicas > 0).count())
            .unwrap_or(i32::MAX),
        zones,
        schedule: Some(observation.schedule.clone()),
        selector: Some(observation.selector.clone()),
        janitor,
        conditions,
    }
}

/// The status of a cluster whose spec cannot be acted on: the observed counts are kept, the
/// conditions say what to fix.
pub fn invalid(
    generation: Option<i64>,
    message: &str,
    previous: Option<&CacheClusterStatus>,
    now: &Time,
) -> CacheClusterStatus {
    let mut status = previous.cloned().unwrap_or_default();
    let previous_conditions = previous.map(|p| p.conditions.as_slice()).unwrap_or(&[]);
    status.observed_generation = generation;
    status.conditions = [(READY, false), (PROGRESSING, false), (DEGRADED, true)]
        .into_iter()
        .map(|(type_, value)| {
            condition(
                type_,
                value,
                INVALID_SPEC,
                message.to_string(),
                generation,
                previous_conditions,
                now,
            )
        })
        .collect();
    status
}

/// The status after a failed reconcile: as before, but `Degraded=True` with reason
/// [`RECONCILE_FAILED`] and `message` (Ready and Progressing still describe the last observation).
pub fn failed(
    generation: Option<i64>,
    message: &str,
    previous: Option<&CacheClusterStatus>,
    now: &Time,
) -> CacheClusterStatus {
    let mut status = previous.cloned().unwrap_or_default();
    let degraded = condition(
        DEGRADED,
        true,
        RECONCILE_FAILED,
        message.to_string(),
        generation,
        &status.conditions,
        now,
    );
    match status.conditions.iter_mut().find(|c| c.type_ == DEGRADED) {
        Some(existing) => *existing = degraded,
        None => status.conditions.push(degraded),
    }
    status
}

/// One condition, keeping the previous `lastTransitionTime` when `status` is unchanged.
fn condition(
    type_: &str,
    status: bool,
    reason: &str,
    message: String,
    generation: Option<i64>,
    previous: &[Condition],
    now: &Time,
) -> Condition {
    let status = if status { "True" } else { "False" }.to_string();
    let last_transition_time = previous
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map_or_else(|| now.clone(), |c| c.last_transition_time.clone());
    Condition {
        type_: type_.to_string(),
        status,
        reason: reason.to_string(),
        message,
        observed_generation: generation,
        last_transition_time,
    }
}

/// The janitor's last run, from the CronJob's status and the newest Job.
fn janitor_status(observation: &Observation) -> Option<JanitorStatus> {
    let cron = observation.janitor.as_ref();
    let job = observation.last_job.as_ref();
    if cron.is_none() && job.is_none() {
        return None;
    }
    let status = JanitorStatus {
        last_schedule_time: cron.and_then(|c| c.last_schedule_time.clone()),
        last_successful_time: cron.and_then(|c| c.last_successful_time.clone()),
        last_job: job.and_then(|j| j.metadata.name.clone()),
        last_result: job.map(|j| job_result(j).to_string()),
    };
    (status != JanitorStatus::default()).then_some(status)
}

/// Running, Succeeded or Failed, from the Job's terminal conditions.
fn job_result(job: &Job) -> &'static str {
    let conditions = job
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_deref())
        .unwrap_or(&[]);
    let has = |type_: &str| {
        conditions
            .iter()
            .any(|c| c.type_ == type_ && c.status == "True")
    };
    if has("Complete") {
        "Succeeded"
    } else if has("Failed") {
        "Failed"
    } else {
        "Running"
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::batch::v1::{JobCondition, JobStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use k8s_openapi::jiff::Timestamp;

    use super::*;

    fn at(seconds: i64) -> Time {
        Time(Timestamp::from_second(seconds).expect("timestamp"))
    }

    fn rolled_out(ready: i32) -> Observation {
        Observation {
            generation: Some(2),
            desired_replicas: 3,
            stateful_set: Some(StatefulSetStatus {
                observed_generation: Some(1),
                replicas: 3,
                ready_replicas: Some(ready),
                updated_replicas: Some(3),
                current_revision: Some("r1".into()),
                update_revision: Some("r1".into()),
                ..StatefulSetStatus::default()
            }),
            stateful_set_generation: Some(1),
            ready_per_zone: BTreeMap::from([("a".into(), 2), ("b".into(), ready - 2)]),
            schedule: "* * * * * (UTC)".into(),
            selector: "app=x".into(),
            janitor: None,
            last_job: None,
        }
    }

    fn find<'a>(status: &'a CacheClusterStatus, type_: &str) -> &'a Condition {
        status
            .conditions
            .iter()
            .find(|c| c.type_ == type_)
            .expect("condition present")
    }

    #[test]
    fn all_ready_is_ready_and_not_progressing() {
        let status = observed(&rolled_out(3), None, &at(100));
        assert_eq!(find(&status, READY).status, "True");
        assert_eq!(find(&status, PROGRESSING).status, "False");
        assert_eq!(find(&status, DEGRADED).status, "False");
        assert_eq!(status.ready_zones, 2);
        assert_eq!(status.observed_generation, Some(2));
    }

    #[test]
    fn transition_time_changes_only_with_the_status() {
        let first = observed(&rolled_out(3), None, &at(100));
        let same = observed(&rolled_out(3), Some(&first), &at(200));
        assert_eq!(first, same);
        let fewer = observed(&rolled_out(2), Some(&same), &at(300));
        assert_eq!(find(&fewer, READY).last_transition_time, at(300));
        assert_eq!(find(&fewer, DEGRADED).last_transition_time, at(100));
        assert_eq!(find(&fewer, PROGRESSING).reason, "StartingPods");
    }

    #[test]
    fn a_rollout_is_progressing() {
        let mut observation = rolled_out(3);
        observation.stateful_set_generation = Some(2);
        let status = observed(&observation, None, &at(1));
        assert_eq!(find(&status, PROGRESSING).status, "True");
        assert_eq!(find(&status, PROGRESSING).reason, "RollingOut");
        assert_eq!(find(&status, READY).status, "False");
    }

    #[test]
    fn a_failed_janitor_run_degrades() {
        let mut observation = rolled_out(3);
        observation.last_job = Some(Job {
            metadata: ObjectMeta {
                name: Some("demo-janitor-1".into()),
                ..ObjectMeta::default()
            },
            status: Some(JobStatus {
                conditions: Some(vec![JobCondition {
                    type_: "Failed".into(),
                    status: "True".into(),
                    ..JobCondition::default()
                }]),
                ..JobStatus::default()
            }),
            ..Job::default()
        });
        let status = observed(&observation, None, &at(1));
        assert_eq!(find(&status, DEGRADED).reason, "JanitorFailed");
        let janitor = status.janitor.expect("janitor status");
        assert_eq!(janitor.last_result.as_deref(), Some("Failed"));
        assert_eq!(janitor.last_job.as_deref(), Some("demo-janitor-1"));
    }

    #[test]
    fn a_failure_degrades_and_keeps_the_rest() {
        let before = observed(&rolled_out(3), None, &at(1));
        let after = failed(
            Some(2),
            "failed to apply StatefulSet demo",
            Some(&before),
            &at(9),
        );
        assert_eq!(find(&after, READY), find(&before, READY));
        let degraded = find(&after, DEGRADED);
        assert_eq!(
            (degraded.status.as_str(), degraded.reason.as_str()),
            ("True", RECONCILE_FAILED)
        );
        assert_eq!(degraded.last_transition_time, at(9));
        assert_eq!(after.ready_replicas, before.ready_replicas);
    }

    #[test]
    fn invalid_spec_sets_every_condition() {
        let status = invalid(Some(3), "spec.expiry.schedule: bad", None, &at(5));
        for type_ in [READY, PROGRESSING, DEGRADED] {
            let condition = find(&status, type_);
            assert_eq!(condition.reason, INVALID_SPEC);
            assert_eq!(condition.message, "spec.expiry.schedule: bad");
            assert_eq!(condition.observed_generation, Some(3));
        }
        assert_eq!(find(&status, READY).status, "False");
        assert_eq!(find(&status, DEGRADED).status, "True");
    }
}
