//! The status step, as pure functions: what the operator observed (the StatefulSet, the ready
//! pods per zone, the janitor's CronJob and last Job, and in Partitioned mode every member pod
//! with its zone and readiness and the partitions moving between them) becomes a
//! [`CacheClusterStatus`].
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

use tidecache_contract::placement::{Assignment, Member, PARTITIONS};

use crate::crd::{CacheClusterStatus, JanitorStatus, PartitionStatus, ZoneOwnership, ZoneStatus};

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
/// Reason of `Ready=False` in Partitioned mode while a partition has fewer than
/// replicationFactor ready owners.
pub const UNDER_REPLICATED: &str = "UnderReplicated";
/// Reason of `Progressing=True` in Partitioned mode while partitions move to new owners (or
/// the pods do not yet agree on the membership), the pods being rolled out and ready.
pub const PARTITIONS_MOVING: &str = "PartitionsMoving";
/// The zone shown for pods whose node has no zone label.
pub const UNKNOWN_ZONE: &str = "unknown";

/// A cache pod as placement sees it: a member of the peers Service's EndpointSlices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodMember {
    /// The pod's name, its identity in the placement (it survives the pod being replaced).
    pub name: String,
    /// `topology.kubernetes.io/zone` of the pod's node, the zone its EndpointSlice entry
    /// carries; `None` when the node has none.
    pub zone: Option<String>,
    /// Whether the pod is Ready.
    pub ready: bool,
}

/// The partition moves of a Partitioned cluster, summed over what its pods said.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Moves {
    /// Partitions held but not yet complete, summed over the pods that answered: gaining
    /// (owned, data still arriving) or kept (moved away, kept until the new owners hold them).
    pub moving: usize,
    /// Member pods whose holdings could not be read (not listening yet, unreachable, or
    /// refusing): their moves are not in `moving`.
    pub unread: usize,
    /// How many different memberships the pods that answered place keys by: 1 once they
    /// agree (0 when none answered).
    pub memberships: usize,
}

impl Moves {
    /// Whether a move is under way: partitions moving, or pods placing keys by different
    /// memberships (a change still reaching them, after which partitions will move).
    pub fn unsettled(&self) -> bool {
        self.moving > 0 || self.memberships > 1
    }
}

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
    /// Owners per key in Partitioned mode; `None` in Full mode.
    pub replication_factor: Option<u16>,
    /// The pods placement counts as members (read in Partitioned mode only).
    pub members: Vec<PodMember>,
    /// What the member pods said of their partitions (Partitioned mode only).
    pub moves: Option<Moves>,
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
    let placement = observation.replication_factor.map(|factor| {
        let mut placement = partitions(&observation.members, factor);
        if let Some(moves) = &observation.moves {
            placement.moving = count(moves.moving);
            placement.unread_pods = count(moves.unread);
        }
        placement
    });
    let moves = observation.moves.as_ref().filter(|moves| moves.unsettled());

    let ready_condition = if desired == 0 {
        (
            true,
            "ScaledToZero",
            "the cluster has no cache pods".to_string(),
        )
    } else if let Some(placement) = placement.as_ref().filter(|p| p.under_replicated > 0) {
        (
            false,
            UNDER_REPLICATED,
            under_replicated_message(placement, &observation.members, desired),
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
    let progressing_condition = if let Some(moves) = moves.filter(|_| rolled_out) {
        (true, PARTITIONS_MOVING, moving_message(moves))
    } else if rolled_out && ready >= desired {
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
    let conditions: Vec<Condition> = [
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
        partitions: placement,
        state: state(&conditions),
        conditions,
    }
}

/// The placement of `members` with `replication_factor` owners per partition, as every pod
/// computes it (`tidecache_contract::placement`), summed up per zone, with the partitions
/// whose ready owners are fewer than `replication_factor`.
pub fn partitions(members: &[PodMember], replication_factor: u16) -> PartitionStatus {
    let assignment = Assignment::compute(
        members
            .iter()
            .map(|pod| Member::new(pod.name.clone(), pod.zone.as_deref())),
        usize::from(replication_factor),
    );
    // By id, the first entry winning as in `Assignment::compute` (pod names are unique anyway).
    let mut ready_of: BTreeMap<&str, bool> = BTreeMap::new();
    for pod in members {
        ready_of.entry(pod.name.as_str()).or_insert(pod.ready);
    }
    let placed = assignment.members();
    let zone_name = |member: &Member| member.zone.clone().unwrap_or_else(|| UNKNOWN_ZONE.into());
    let mut per_zone: BTreeMap<String, (i32, i32)> = BTreeMap::new();
    for member in placed {
        per_zone.entry(zone_name(member)).or_default().0 += 1;
    }
    let mut under_replicated = 0;
    for partition in 0..PARTITIONS {
        let owners: Vec<&Member> = assignment.owners(partition).map(|m| &placed[m]).collect();
        let ready_owners = owners
            .iter()
            .filter(|m| ready_of.get(m.id.as_str()).copied().unwrap_or(false))
            .count();
        if ready_owners < usize::from(replication_factor) {
            under_replicated += 1;
        }
        let mut zones: Vec<String> = owners.iter().map(|m| zone_name(m)).collect();
        zones.sort_unstable();
        zones.dedup();
        for zone in zones {
            per_zone.entry(zone).or_default().1 += 1;
        }
    }
    PartitionStatus {
        replication_factor: i32::from(replication_factor),
        partitions: count(PARTITIONS),
        members: count(placed.len()),
        under_replicated,
        moving: 0,
        unread_pods: 0,
        owners_per_zone: per_zone
            .into_iter()
            .map(|(zone, (pods, partitions))| ZoneOwnership {
                zone,
                pods,
                partitions,
            })
            .collect(),
    }
}

/// A count as the status's `i32`.
fn count(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// What is moving, for `Progressing=True` while the pods hand partitions over.
fn moving_message(moves: &Moves) -> String {
    let mut message = format!(
        "{} partitions are moving between cache pods (gaining or kept, summed over the pods); \
         every key is served meanwhile",
        moves.moving
    );
    if moves.memberships > 1 {
        message.push_str(&format!(
            "; the pods place keys by {} different memberships until the change reaches all \
             of them",
            moves.memberships
        ));
    }
    message
}

/// Why a Partitioned cluster is not Ready: how many pods are ready, how many partitions lack
/// ready owners, and, when the cluster has fewer pods than owners per key, what to change.
fn under_replicated_message(
    placement: &PartitionStatus,
    members: &[PodMember],
    desired: i32,
) -> String {
    let ready = members.iter().filter(|pod| pod.ready).count();
    let factor = placement.replication_factor;
    let mut message = format!(
        "{ready} of {desired} cache pods are ready; {} of {} partitions have fewer than \
         {factor} ready owners",
        placement.under_replicated, placement.partitions
    );
    if desired < factor {
        message.push_str(&format!(
            "; spec.replicas {desired} is below replicationFactor {factor}: scale to at least \
             {factor} pods or lower spec.replication.replicationFactor"
        ));
    }
    message
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
    status.state = state(&status.conditions);
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

/// The one-word summary of `conditions` for the STATUS column: `Ready`, or the Ready
/// condition's reason when it is not True.
fn state(conditions: &[Condition]) -> Option<String> {
    let ready = conditions.iter().find(|c| c.type_ == READY)?;
    Some(if ready.status == "True" {
        READY.to_string()
    } else {
        ready.reason.clone()
    })
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
            replication_factor: None,
            members: Vec::new(),
            moves: None,
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

    /// `pods` as (name, zone, ready).
    fn members(pods: &[(&str, &str, bool)]) -> Vec<PodMember> {
        pods.iter()
            .map(|&(name, zone, ready)| PodMember {
                name: name.into(),
                zone: Some(zone.into()),
                ready,
            })
            .collect()
    }

    /// demo-0, demo-1 and demo-2 in zones a, b and c, ready as `ready` says.
    fn three_zones(ready: [bool; 3]) -> Vec<PodMember> {
        members(&[
            ("demo-0", "zone-a", ready[0]),
            ("demo-1", "zone-b", ready[1]),
            ("demo-2", "zone-c", ready[2]),
        ])
    }

    fn owners_per_zone(status: &PartitionStatus) -> Vec<(&str, i32, i32)> {
        status
            .owners_per_zone
            .iter()
            .map(|z| (z.zone.as_str(), z.pods, z.partitions))
            .collect()
    }

    /// A rolled-out Partitioned cluster of `members.len()` pods.
    fn partitioned(members: Vec<PodMember>, replication_factor: u16) -> Observation {
        let pods = i32::try_from(members.len()).expect("pods");
        let ready = i32::try_from(members.iter().filter(|m| m.ready).count()).expect("ready");
        let mut observation = rolled_out(3);
        observation.desired_replicas = pods;
        let sts = observation.stateful_set.as_mut().expect("sts status");
        sts.replicas = pods;
        sts.ready_replicas = Some(ready);
        sts.updated_replicas = Some(pods);
        observation.replication_factor = Some(replication_factor);
        observation.members = members;
        observation
    }

    #[test]
    fn three_pods_in_three_zones_own_every_partition_twice_in_distinct_zones() {
        let status = partitions(&three_zones([true; 3]), 2);
        assert_eq!(
            (status.replication_factor, status.partitions, status.members),
            (2, 1024, 3)
        );
        assert_eq!(status.under_replicated, 0);
        // One pod per zone: a zone's partitions are its pod's, each within the contract's
        // bound of an even share (2048 / 3 = 683) plus 1/32 of it (705), 2048 in all.
        assert_eq!(
            owners_per_zone(&status),
            [("zone-a", 1, 674), ("zone-b", 1, 669), ("zone-c", 1, 705)]
        );
        let assignment = Assignment::compute(
            three_zones([true; 3])
                .into_iter()
                .map(|pod| Member::new(pod.name, pod.zone.as_deref())),
            2,
        );
        let per_pod: Vec<usize> = (0..3)
            .map(|m| assignment.partitions_of(m).count())
            .collect();
        assert_eq!(per_pod, [674, 669, 705]);
    }

    #[test]
    fn six_pods_in_three_zones_spread_the_owners_over_every_zone() {
        let names: Vec<String> = (0..6).map(|i| format!("demo-{i}")).collect();
        let pods: Vec<(&str, &str, bool)> = names
            .iter()
            .zip(["zone-a", "zone-b", "zone-c"].into_iter().cycle())
            .map(|(name, zone)| (name.as_str(), zone, true))
            .collect();
        let status = partitions(&members(&pods), 2);
        assert_eq!((status.members, status.under_replicated), (6, 0));
        assert_eq!(
            owners_per_zone(&status),
            [("zone-a", 2, 681), ("zone-b", 2, 676), ("zone-c", 2, 691)]
        );
    }

    #[test]
    fn partitions_count_against_ready_owners_only() {
        // demo-2 owns 705 partitions; without it those have one ready owner of two.
        let one_down = partitions(&three_zones([true, true, false]), 2);
        assert_eq!(one_down.under_replicated, 705);
        assert_eq!(
            one_down.members, 3,
            "a pod that is not ready is still a member"
        );
        assert_eq!(
            owners_per_zone(&one_down),
            owners_per_zone(&partitions(&three_zones([true; 3]), 2)),
            "readiness does not move partitions"
        );
        // With one ready pod no partition has two ready owners.
        assert_eq!(
            partitions(&three_zones([true, false, false]), 2).under_replicated,
            1024
        );
        // R = 1: only the partitions of the pod that is not ready lack their owner.
        let single = partitions(&three_zones([true, true, false]), 1);
        assert_eq!(
            owners_per_zone(&single),
            [("zone-a", 1, 328), ("zone-b", 1, 346), ("zone-c", 1, 350)]
        );
        assert_eq!(single.under_replicated, 350);
    }

    #[test]
    fn pods_without_a_zone_are_counted_under_unknown() {
        let pods = vec![
            PodMember {
                name: "demo-0".into(),
                zone: None,
                ready: true,
            },
            PodMember {
                name: "demo-1".into(),
                zone: None,
                ready: true,
            },
        ];
        let status = partitions(&pods, 2);
        assert_eq!(owners_per_zone(&status), [(UNKNOWN_ZONE, 2, 1024)]);
        assert_eq!(status.under_replicated, 0);
    }

    #[test]
    fn a_partition_short_of_ready_owners_makes_the_cluster_not_ready_and_says_why() {
        let status = observed(
            &partitioned(three_zones([true, true, false]), 2),
            None,
            &at(1),
        );
        let ready = find(&status, READY);
        assert_eq!(
            (
                ready.status.as_str(),
                ready.reason.as_str(),
                ready.message.as_str()
            ),
            (
                "False",
                UNDER_REPLICATED,
                "2 of 3 cache pods are ready; 705 of 1024 partitions have fewer than 2 ready \
                 owners"
            )
        );
        assert_eq!(
            status.partitions.as_ref().map(|p| p.under_replicated),
            Some(705)
        );
        let healthy = observed(
            &partitioned(three_zones([true; 3]), 2),
            Some(&status),
            &at(2),
        );
        let ready = find(&healthy, READY);
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("True", "AllReplicasReady")
        );
        assert_eq!(ready.last_transition_time, at(2));
    }

    #[test]
    fn moving_partitions_keep_the_cluster_ready_and_progressing_until_the_moves_are_done() {
        let mut moving = partitioned(three_zones([true; 3]), 2);
        moving.moves = Some(Moves {
            moving: 340,
            unread: 0,
            memberships: 2,
        });
        let status = observed(&moving, None, &at(1));
        let placement = status.partitions.clone().expect("partition status");
        assert_eq!((placement.moving, placement.unread_pods), (340, 0));
        assert_eq!(find(&status, READY).status, "True", "every key is served");
        let progressing = find(&status, PROGRESSING);
        assert_eq!(
            (
                progressing.status.as_str(),
                progressing.reason.as_str(),
                progressing.message.as_str()
            ),
            (
                "True",
                PARTITIONS_MOVING,
                "340 partitions are moving between cache pods (gaining or kept, summed over the \
                 pods); every key is served meanwhile; the pods place keys by 2 different \
                 memberships until the change reaches all of them"
            )
        );
        let mut done = moving.clone();
        done.moves = Some(Moves {
            moving: 0,
            unread: 1,
            memberships: 1,
        });
        let settled = observed(&done, Some(&status), &at(9));
        let placement = settled.partitions.clone().expect("partition status");
        assert_eq!((placement.moving, placement.unread_pods), (0, 1));
        let progressing = find(&settled, PROGRESSING);
        assert_eq!(
            (progressing.status.as_str(), progressing.reason.as_str()),
            ("False", "RolledOut"),
            "a pod that could not be asked is reported, not taken for a move"
        );
        assert_eq!(progressing.last_transition_time, at(9));
    }

    #[test]
    fn fewer_pods_than_owners_per_key_is_under_replicated_with_what_to_change() {
        let status = observed(
            &partitioned(members(&[("demo-0", "zone-a", true)]), 2),
            None,
            &at(1),
        );
        let ready = find(&status, READY);
        assert_eq!(ready.reason, UNDER_REPLICATED);
        assert_eq!(
            ready.message,
            "1 of 1 cache pods are ready; 1024 of 1024 partitions have fewer than 2 ready \
             owners; spec.replicas 1 is below replicationFactor 2: scale to at least 2 pods or \
             lower spec.replication.replicationFactor"
        );
    }

    #[test]
    fn full_mode_has_no_partition_status() {
        let status = observed(&rolled_out(3), None, &at(1));
        assert_eq!(status.partitions, None);
        assert_eq!(find(&status, READY).reason, "AllReplicasReady");
        assert_eq!(status.state.as_deref(), Some("Ready"));
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
        assert_eq!(status.state.as_deref(), Some(INVALID_SPEC));
        assert_eq!(find(&status, READY).status, "False");
        assert_eq!(find(&status, DEGRADED).status, "True");
    }
}
