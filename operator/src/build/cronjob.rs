//! The janitor CronJob: deletes expired bucket directories from the shared volume on exactly
//! the schedule and in exactly the time zone on which the cache pods evict them from memory
//! (contract 1), one run at a time.

use k8s_openapi::api::batch::v1::{CronJob, CronJobSpec, JobSpec, JobTemplateSpec};
use k8s_openapi::api::core::v1::{
    Container, PersistentVolumeClaimVolumeSource, PodSpec, PodTemplateSpec, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::{
    DATA_DIR, DATA_VOLUME, child_meta, invocation, restricted_container_security,
    restricted_pod_security,
};
use crate::labels::{self, JANITOR_COMPONENT};
use crate::validate::ValidatedCluster;

/// Retries of a failed janitor run within one fire time; the next fire time retries anyway.
const BACKOFF_LIMIT: i32 = 1;

/// The janitor CronJob.
pub(super) fn janitor(cluster: &ValidatedCluster) -> CronJob {
    let janitor = &cluster.spec.janitor;
    let pod_labels = labels::common(&cluster.name, JANITOR_COMPONENT);
    CronJob {
        metadata: child_meta(
            cluster,
            labels::names::janitor(&cluster.name),
            JANITOR_COMPONENT,
        ),
        spec: Some(CronJobSpec {
            schedule: cluster.schedule.expression().into(),
            time_zone: Some(cluster.schedule.time_zone().into()),
            concurrency_policy: Some("Forbid".into()),
            starting_deadline_seconds: Some(janitor.starting_deadline_seconds),
            successful_jobs_history_limit: Some(janitor.successful_jobs_history_limit),
            failed_jobs_history_limit: Some(janitor.failed_jobs_history_limit),
            suspend: Some(janitor.suspend),
            job_template: JobTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels.clone()),
                    ..ObjectMeta::default()
                }),
                spec: Some(JobSpec {
                    backoff_limit: Some(BACKOFF_LIMIT),
                    template: PodTemplateSpec {
                        metadata: Some(ObjectMeta {
                            labels: Some(pod_labels),
                            ..ObjectMeta::default()
                        }),
                        spec: Some(pod_spec(cluster)),
                    },
                    ..JobSpec::default()
                }),
            },
        }),
        ..CronJob::default()
    }
}

fn pod_spec(cluster: &ValidatedCluster) -> PodSpec {
    let janitor = &cluster.spec.janitor;
    let (args, env) = invocation(&cluster.janitor);
    PodSpec {
        restart_policy: Some("Never".into()),
        // The janitor only touches the volume; it has no business with the API.
        automount_service_account_token: Some(false),
        security_context: Some(restricted_pod_security()),
        containers: vec![Container {
            name: "janitor".into(),
            image: Some(janitor.image.clone()),
            image_pull_policy: Some(cluster.spec.image_pull_policy.as_str().into()),
            args,
            env,
            resources: janitor.resources.clone(),
            security_context: Some(restricted_container_security()),
            volume_mounts: Some(vec![VolumeMount {
                name: DATA_VOLUME.into(),
                mount_path: DATA_DIR.into(),
                ..VolumeMount::default()
            }]),
            ..Container::default()
        }],
        volumes: Some(vec![Volume {
            name: DATA_VOLUME.into(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: labels::names::volume_claim(&cluster.name),
                read_only: None,
            }),
            ..Volume::default()
        }]),
        ..PodSpec::default()
    }
}
