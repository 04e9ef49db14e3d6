//! Serving: the sample's pods spread over the zones answer on their own IPs and
//! replicate to the peers they discovered; the janitor sweeps the shared volume of
//! what expired and of nothing else.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use tidecache_contract::Bucket;

use crate::suite::Env;
use crate::support::{
    DEMO, TIMEOUT, TestResult, api, check_spread, pod_addr, put, replicated_everywhere, tail,
    wait_for,
};

/// The real scheduler spreads the three pods over the three zones; each becomes Ready
/// through its probes, is found by the cluster DNS, serves PUT and GET on its own IP,
/// finds its peers through the EndpointSlices, and serves what the others were given.
pub async fn spread_and_serve(env: &Env) -> TestResult {
    let pods = DEMO.wait_settled(env, 3).await?;
    let per_zone = check_spread(env, &pods).await?;
    if per_zone.values().any(|&n| n != 1) {
        return Err(format!("3 pods not one per zone: {per_zone:?}"));
    }
    // The cluster DNS resolves the headless Service to the three pods, as cache-node's
    // DNS fallback for peer discovery does.
    let dns = SocketAddr::new(IpAddr::V4(env.cluster.network().gateway()), 53);
    let mut resolved = tidecache_e2e::kubelet::lookup(dns, "demo-peers.default.svc.cluster.local")
        .await
        .map_err(|e| e.to_string())?;
    resolved.sort();
    let mut ips: Vec<IpAddr> = pods
        .values()
        .map(|p| pod_addr(p).map(|a| a.ip()))
        .collect::<TestResult<_>>()?;
    ips.sort();
    if resolved
        .iter()
        .map(|ip| IpAddr::V4(*ip))
        .collect::<Vec<_>>()
        != ips
    {
        return Err(format!(
            "demo-peers resolves to {resolved:?}, the pods are {ips:?}"
        ));
    }
    let mut entries = BTreeMap::new();
    for (name, pod) in &pods {
        let addr = pod_addr(pod)?;
        let (key, value) = (format!("e2e-{name}"), format!("value of {name}"));
        put(addr, &key, &value).await?;
        let (status, body) = crate::support::get(addr, &key).await?;
        if status != 200 || body != value {
            return Err(format!("GET from {name}: {status} {body}"));
        }
        entries.insert(key, value);
    }
    // Every pod found its peers by watching the Service's EndpointSlices with its own
    // ServiceAccount (the RBAC the operator grants it), not by the DNS fallback.
    for name in pods.keys() {
        let log = env
            .cluster
            .kubelet()
            .container_log(DEMO.namespace, name, "cache-node");
        if !log.contains("finding peers by watching EndpointSlices")
            || !log.contains("peers changed (EndpointSlices)")
        {
            return Err(format!(
                "{name} did not discover its peers through EndpointSlices:\n{}",
                tail(&log, 20)
            ));
        }
    }
    // Every pod serves every entry: writes are replicated to the peers it discovered.
    replicated_everywhere(&pods, &entries).await
}

/// The CronJob fires (every minute) and its Job runs the janitor against the shared
/// volume: an expired bucket directory is deleted, every bucket directory still live
/// when the Job finished is left, live entries are still served, and the
/// CacheCluster's status records the run.
pub async fn janitor_sweeps(env: &Env) -> TestResult {
    /// The uid and gid of the operator's pods (`runAsUser`, `runAsGroup`).
    const POD_USER: u32 = 65532;
    let pods = DEMO.wait_settled(env, 3).await?;
    let mut entries = BTreeMap::new();
    for (name, pod) in &pods {
        let (key, value) = (format!("janitor-{name}"), format!("kept by {name}"));
        put(pod_addr(pod)?, &key, &value).await?;
        entries.insert(key, value);
    }
    let written = Utc::now();
    let cluster_dir = volume_dir(env, "demo-data")
        .await?
        .join(DEMO.namespace)
        .join(DEMO.name);
    // A bucket that expired long ago, written by a pod that is gone: owned by the user
    // the cache pods run as (65532), as one of them would have left it; the janitor runs
    // as that user too, not as root.
    let expired = cluster_dir.join("20200101T000000Z");
    let node_dir = expired.join("e2e-gone-0");
    let segment = node_dir.join("00000000000000000000.seg");
    std::fs::create_dir_all(&node_dir)
        .and_then(|()| std::fs::write(&segment, b"stale"))
        .and_then(|()| {
            [&expired, &node_dir, &segment]
                .into_iter()
                .try_for_each(|p| std::os::unix::fs::chown(p, Some(POD_USER), Some(POD_USER)))
        })
        .map_err(|e| format!("seeding {}: {e}", expired.display()))?;
    let seeded = Utc::now();
    let before = buckets(&cluster_dir)?;
    // The entries just written expire in an hour: their bucket is on the volume, so
    // "the live buckets are left" is about at least that one.
    let an_hour = chrono::Duration::minutes(59);
    if !before.iter().any(|b| b.fire_time() >= written + an_hour) {
        return Err(format!(
            "no bucket directory for the entries just written in {}: {before:?}",
            cluster_dir.display()
        ));
    }
    let jobs = api::<Job>(env, DEMO.namespace);
    let job = wait_for(
        "a janitor Job created after seeding to succeed",
        TIMEOUT,
        async || {
            let list = jobs
                .list(&ListParams::default().labels("app.kubernetes.io/component=janitor"))
                .await
                .map_err(|e| e.to_string())?;
            let done = list.items.into_iter().find(|j| {
                let created = j
                    .metadata
                    .creation_timestamp
                    .as_ref()
                    .map(|t| t.0.as_second());
                // Strictly later: a Job of the same second may have run before the seed.
                created.is_some_and(|c| c > seeded.timestamp())
                    && j.status.as_ref().and_then(|s| s.succeeded) == Some(1)
            });
            Ok(done)
        },
    )
    .await?;
    let job_name = job.name_any();
    if expired.exists() {
        return Err(format!(
            "{} survived janitor Job {job_name}",
            expired.display()
        ));
    }
    // The janitor decided before the Job completed; what was unexpired then must be
    // there (`completionTime` has whole seconds, hence the second added).
    let completed: DateTime<Utc> = job
        .status
        .as_ref()
        .and_then(|s| s.completion_time.as_ref())
        .and_then(|t| DateTime::from_timestamp(t.0.as_second(), 0))
        .ok_or_else(|| format!("Job {job_name} succeeded without a completionTime"))?;
    let after = buckets(&cluster_dir)?;
    let lost: Vec<&Bucket> = before
        .iter()
        .filter(|b| b.fire_time() > completed + chrono::Duration::seconds(1))
        .filter(|b| !after.contains(b))
        .collect();
    if !lost.is_empty() {
        return Err(format!(
            "janitor Job {job_name} (completed {completed}) deleted live bucket directories \
             {lost:?}; left {after:?}"
        ));
    }
    wait_for(
        "the janitor run in the CacheCluster's status",
        TIMEOUT,
        async || {
            let cc = DEMO.get(env).await?;
            let janitor = &cc["status"]["janitor"];
            let seen = janitor["lastSuccessfulTime"].is_string()
                && janitor["lastResult"] == "Succeeded"
                && janitor["lastJob"]
                    .as_str()
                    .is_some_and(|j| j >= job_name.as_str());
            if seen {
                Ok(Some(()))
            } else {
                Err(format!("status.janitor {janitor}"))
            }
        },
    )
    .await?;
    replicated_everywhere(&pods, &entries).await
}

/// The host directory of the hostPath volume bound to the claim.
async fn volume_dir(env: &Env, claim: &str) -> TestResult<PathBuf> {
    let pvc = api::<PersistentVolumeClaim>(env, DEMO.namespace)
        .get(claim)
        .await
        .map_err(|e| e.to_string())?;
    let volume = pvc
        .spec
        .and_then(|s| s.volume_name)
        .ok_or("claim not bound")?;
    let pv = Api::<PersistentVolume>::all(env.client.clone())
        .get(&volume)
        .await
        .map_err(|e| e.to_string())?;
    pv.spec
        .and_then(|s| s.host_path)
        .map(|h| PathBuf::from(h.path))
        .ok_or_else(|| "the volume has no host path".into())
}

/// The bucket directories in a cluster's directory on the volume (contract 2: the
/// name is the bucket).
fn buckets(dir: &Path) -> TestResult<BTreeSet<Bucket>> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("listing {}: {e}", dir.display()))?;
    let mut found = BTreeSet::new();
    for entry in entries {
        let entry = entry.map_err(|e| format!("listing {}: {e}", dir.display()))?;
        if let Some(bucket) = entry.file_name().to_str().and_then(Bucket::from_dir_name) {
            found.insert(bucket);
        }
    }
    Ok(found)
}
