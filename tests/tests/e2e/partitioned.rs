//! Partitioned mode on a CacheCluster of its own (`e2e-partitioned/catalog`): three pods in
//! three zones with two owners per key, placed by the names and zones the EndpointSlices
//! give; every pod serves every key, each key is held by exactly two pods, and the status
//! reports the partitions per zone.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use crate::suite::Env;
use crate::support::{
    TIMEOUT, Target, TestResult, apply, check_spread, kubectl, pod_addr, put, served_everywhere,
    wait_for,
};

/// The scenario's own namespace (created and deleted by the suite).
pub const NAMESPACE: &str = "e2e-partitioned";
const CATALOG: Target = Target {
    namespace: NAMESPACE,
    name: "catalog",
};
/// Entries written, spread over the pods.
const ENTRIES: usize = 60;

/// A Partitioned cluster serves every key from every pod while each key lives on two.
pub async fn partitioned_serve(env: &Env) -> TestResult {
    apply(
        env,
        &format!(
            "apiVersion: tidecache.io/v1alpha1\nkind: CacheCluster\nmetadata:\n  name: {}\n  \
             namespace: {NAMESPACE}\nspec:\n  replicas: 3\n  replication:\n    mode: \
             Partitioned\n    replicationFactor: 2\n",
            CATALOG.name
        ),
    )
    .await?;
    let pods = CATALOG.wait_settled(env, 3).await?;
    let per_zone = check_spread(env, &pods).await?;
    if per_zone.values().any(|&n| n != 1) {
        return Err(format!("3 pods not one per zone: {per_zone:?}"));
    }
    let addrs: Vec<SocketAddr> = pods.values().map(pod_addr).collect::<TestResult<_>>()?;
    // Every pod must see all three members before keys are placed: placement follows the
    // EndpointSlices, which list a pod once it has an IP.
    wait_for(
        "every pod to place over three members",
        TIMEOUT,
        async || {
            for name in pods.keys() {
                let log = env
                    .cluster
                    .kubelet()
                    .container_log(NAMESPACE, name, "cache-node");
                let placed = log
                    .lines()
                    .rev()
                    .find(|line| line.contains("partition owners changed"));
                if !placed.is_some_and(|line| line.contains("\"members\":3")) {
                    return Ok(None);
                }
            }
            Ok(Some(()))
        },
    )
    .await?;
    let mut entries = BTreeMap::new();
    for i in 0..ENTRIES {
        let (key, value) = (format!("item-{i}"), format!("catalog entry {i}"));
        put(addrs[i % addrs.len()], &key, &value).await?;
        entries.insert(key, value);
    }
    served_everywhere(&pods, &entries).await?;
    // Each key in the memory of exactly two pods (the second owner hears of it
    // asynchronously at the default acknowledgement level).
    wait_for(
        "every key on exactly two pods",
        Duration::from_secs(30),
        async || {
            let mut held = Vec::new();
            for addr in &addrs {
                held.push(entries_metric(*addr).await?);
            }
            let total: u64 = held.iter().sum();
            if total == 2 * ENTRIES as u64 && held.iter().all(|&n| (n as usize) < ENTRIES) {
                Ok(Some(()))
            } else if total > 2 * ENTRIES as u64 {
                Err(format!("{total} copies of {ENTRIES} keys: {held:?}"))
            } else {
                Ok(None)
            }
        },
    )
    .await?;
    // The status says how the partitions are spread, and the printer column the mode.
    wait_for("status.partitions", TIMEOUT, async || {
        let cluster = CATALOG.get(env).await?;
        let partitions = &cluster["status"]["partitions"];
        if partitions.is_null() {
            return Ok(None);
        }
        let zones = partitions["ownersPerZone"].as_array().map_or(0, Vec::len);
        let under = partitions["underReplicated"].as_u64();
        if zones == 3 && under == Some(0) {
            Ok(Some(()))
        } else {
            Ok(None)
        }
    })
    .await?;
    let columns = kubectl(env, &["get", "cachecluster", CATALOG.name, "-n", NAMESPACE]).await?;
    if !columns.contains("MODE") || !columns.contains("Partitioned") {
        return Err(format!("no MODE column showing Partitioned:\n{columns}"));
    }
    Ok(())
}

/// The pod's `tidecache_entries` gauge.
async fn entries_metric(addr: SocketAddr) -> TestResult<u64> {
    let r = tidecache_e2e::http::request(addr, "GET", "/metrics", b"", Duration::from_secs(5))
        .await
        .map_err(|e| format!("GET /metrics on {addr}: {e}"))?;
    let text = r.text();
    text.lines()
        .find_map(|line| line.strip_prefix("tidecache_entries "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as u64)
        .ok_or_else(|| format!("no tidecache_entries on {addr}"))
}
