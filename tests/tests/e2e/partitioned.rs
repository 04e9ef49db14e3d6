//! Partitioned mode on CacheClusters of their own: `e2e-partitioned/catalog`, three pods in
//! three zones with two owners per key, placed by the names and zones the EndpointSlices
//! give; every pod serves every key, each key is held by exactly two pods, and the status
//! reports the partitions per zone. `e2e-partitioned-scale/ledger`: the same scaled 3 → 6 → 3
//! under a writer, partitions moving with their data.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Pod, Secret};
use serde_json::Value;
use tidecache_e2e::http;

use crate::suite::Env;
use crate::support::{
    TIMEOUT, Target, TestResult, api, apply, check_spread, get, kubectl, pod_addr, put,
    served_everywhere, wait_for,
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
    let r = http::request(addr, "GET", "/metrics", b"", Duration::from_secs(5))
        .await
        .map_err(|e| format!("GET /metrics on {addr}: {e}"))?;
    let text = r.text();
    text.lines()
        .find_map(|line| line.strip_prefix("tidecache_entries "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as u64)
        .ok_or_else(|| format!("no tidecache_entries on {addr}"))
}

/// The scale scenario's own namespace (created and deleted by the suite).
pub const SCALE_NAMESPACE: &str = "e2e-partitioned-scale";
const LEDGER: Target = Target {
    namespace: SCALE_NAMESPACE,
    name: "ledger",
};
/// Owners per key in the scale scenario.
const OWNERS: u64 = 2;
/// Pause between two writes of the writer loop (about 10 writes a second at most).
const WRITE_PAUSE: Duration = Duration::from_millis(100);

/// A Partitioned cluster scaled 3 → 6 → 3 while a client writes with `Tidecache-Ack:
/// quorum`: after each step the moves finish (the status and every pod's holdings say
/// nothing is moving, and all pods place keys by one membership with every partition
/// complete on two pods), the owners of each partition are in distinct zones, every write
/// that was acknowledged is read back through every pod, and the pods that left stopped on
/// SIGTERM after handing their partitions over, not by SIGKILL. Prints each step's time.
pub async fn partitioned_scale(env: &Env) -> TestResult {
    let began = Instant::now();
    apply(
        env,
        &format!(
            "apiVersion: tidecache.io/v1alpha1\nkind: CacheCluster\nmetadata:\n  name: {}\n  \
             namespace: {SCALE_NAMESPACE}\nspec:\n  replicas: 3\n  replication:\n    mode: \
             Partitioned\n    replicationFactor: {OWNERS}\n",
            LEDGER.name
        ),
    )
    .await?;
    let pods = LEDGER.wait_settled(env, 3).await?;
    let per_zone = check_spread(env, &pods).await?;
    if per_zone.values().any(|&n| n != 1) {
        return Err(format!("3 pods not one per zone: {per_zone:?}"));
    }
    let token = peer_token(env, &LEDGER).await?;
    moves_done(env, &LEDGER, &token, 3, OWNERS).await?;
    eprintln!(
        "partitioned_scale: 3 pods ready and settled in {:.1?}",
        began.elapsed()
    );
    // The client writes through the pods that stay throughout (a StatefulSet scales down from
    // the highest ordinal).
    let writer = Writer::start(
        "ledger",
        pods.values().map(pod_addr).collect::<TestResult<_>>()?,
    );

    for (from, to) in [(3_usize, 6_usize), (6, 3)] {
        let step = Instant::now();
        let replicas = format!("--replicas={to}");
        kubectl(
            env,
            &[
                "scale",
                "cachecluster",
                LEDGER.name,
                "-n",
                SCALE_NAMESPACE,
                &replicas,
            ],
        )
        .await?;
        let pods = LEDGER.wait_settled(env, to).await?;
        let ready = step.elapsed();
        check_spread(env, &pods).await?;
        let partitions = moves_done(env, &LEDGER, &token, to, OWNERS).await?;
        let settled = step.elapsed();
        owners_in_distinct_zones(&partitions, to, OWNERS)?;
        let acked = writer.acked();
        let reading = Instant::now();
        readable_through_every_pod(&pods, &acked)
            .await
            .map_err(|e| format!("after scaling {from} → {to}: {e}"))?;
        eprintln!(
            "partitioned_scale: {from} → {to}: pods ready after {ready:.1?}, moves done after \
             {settled:.1?}; {} acknowledged keys read through each of {to} pods in {:.1?}",
            acked.len(),
            reading.elapsed()
        );
    }
    let (acked, failed) = writer.stop().await;
    let pods = LEDGER.pods(env).await?;
    readable_through_every_pod(&pods, &acked)
        .await
        .map_err(|e| format!("after the writer stopped: {e}"))?;
    eprintln!(
        "partitioned_scale: {} writes acknowledged by a quorum, {} refused: {:?}",
        acked.len(),
        failed.len(),
        failed.iter().take(5).map(|r| &r.error).collect::<Vec<_>>()
    );
    if !failed.is_empty() {
        return Err(format!(
            "{} of {} writes were refused while partitions moved, e.g. {:?}",
            failed.len(),
            failed.len() + acked.len(),
            failed.iter().take(5).map(|r| &r.error).collect::<Vec<_>>()
        ));
    }
    handed_over(env)
}

/// The peer token the operator generated (`<cluster>-peer-token`), which opens the pods'
/// internal routes.
pub async fn peer_token(env: &Env, target: &Target) -> TestResult<String> {
    let name = format!("{}-peer-token", target.name);
    let secret = api::<Secret>(env, target.namespace)
        .get(&name)
        .await
        .map_err(|e| format!("reading Secret {name}: {e}"))?;
    let token = secret
        .data
        .as_ref()
        .and_then(|data| data.get("token"))
        .ok_or_else(|| format!("Secret {name} holds no token"))?;
    String::from_utf8(token.0.clone()).map_err(|e| format!("Secret {name}: {e}"))
}

/// What a pod says it holds (`GET /internal/v1/partitions`).
#[derive(Debug, serde::Deserialize)]
struct Holdings {
    fingerprint: u64,
    complete: [u64; 16],
    held: [u64; 16],
}

impl Holdings {
    fn count(bitmap: &[u64; 16]) -> u64 {
        bitmap.iter().map(|word| u64::from(word.count_ones())).sum()
    }
}

async fn holdings(addr: SocketAddr, token: &str) -> TestResult<Holdings> {
    let bearer = format!("Bearer {token}");
    let r = http::request_with_headers(
        addr,
        "GET",
        "/internal/v1/partitions",
        &[("Authorization", &bearer)],
        b"",
        Duration::from_secs(5),
    )
    .await
    .map_err(|e| format!("GET /internal/v1/partitions on {addr}: {e}"))?;
    if r.status != 200 {
        return Err(format!(
            "GET /internal/v1/partitions on {addr}: {} {}",
            r.status,
            r.text()
        ));
    }
    serde_json::from_slice(&r.body).map_err(|e| format!("holdings of {addr}: {e}"))
}

/// Waits until the moves after a change to `members` pods are done, by the status and by
/// the pods themselves (each partition complete on `owners` pods); returns
/// `status.partitions`.
pub async fn moves_done(
    env: &Env,
    target: &Target,
    token: &str,
    members: usize,
    owners: u64,
) -> TestResult<Value> {
    wait_for(
        &format!("the moves to {members} pods to finish"),
        TIMEOUT,
        async || {
            let cluster = target.get(env).await?;
            let partitions = cluster["status"]["partitions"].clone();
            let progressing = cluster["status"]["conditions"]
                .as_array()
                .and_then(|cs| cs.iter().find(|c| c["type"] == "Progressing"))
                .map(|c| format!("{}/{}", c["status"], c["reason"]))
                .unwrap_or_default();
            let field = |name: &str| partitions[name].as_u64();
            if field("members") != Some(members as u64)
                || field("moving") != Some(0)
                || field("unreadPods") != Some(0)
                || field("underReplicated") != Some(0)
                || !progressing.starts_with("\"False\"")
            {
                return Err(format!(
                    "status.partitions {partitions}, Progressing {progressing}"
                ));
            }
            // The pods agree: one membership, nothing held that is not complete, and every
            // partition complete on its owners.
            let pods = target.pods(env).await?;
            let mut said = BTreeMap::new();
            for (name, pod) in &pods {
                let h = holdings(pod_addr(pod)?, token).await?;
                said.insert(
                    name.clone(),
                    (
                        h.fingerprint,
                        Holdings::count(&h.complete),
                        Holdings::count(&h.held),
                    ),
                );
            }
            let fingerprints: BTreeSet<u64> = said.values().map(|s| s.0).collect();
            let complete: u64 = said.values().map(|s| s.1).sum();
            let settled = said.values().all(|&(_, complete, held)| complete == held);
            if pods.len() == members
                && fingerprints.len() == 1
                && settled
                && complete == owners * 1024
            {
                Ok(Some(partitions))
            } else {
                Err(format!(
                    "pods' (fingerprint, complete, held): {said:?}; the status said no moves"
                ))
            }
        },
    )
    .await
}

/// Each partition's owners in distinct zones: with three zones and `owners` owners, the
/// zones' counts of partitions with an owner there add up to `owners` per partition, and
/// each zone has a third of the pods.
pub fn owners_in_distinct_zones(partitions: &Value, pods: usize, owners: u64) -> TestResult {
    let zones = partitions["ownersPerZone"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let owned: u64 = zones.iter().filter_map(|z| z["partitions"].as_u64()).sum();
    let even = zones
        .iter()
        .all(|z| z["pods"].as_u64() == Some(pods as u64 / 3));
    if zones.len() == 3 && even && owned == owners * 1024 {
        Ok(())
    } else {
        Err(format!(
            "owners not in distinct zones with {pods} pods: ownersPerZone {}",
            partitions["ownersPerZone"]
        ))
    }
}

/// Every entry read through every pod, the pods at once; lists every miss.
pub async fn readable_through_every_pod(
    pods: &BTreeMap<String, Pod>,
    entries: &[(String, String)],
) -> TestResult {
    let reads = pods.iter().map(|(name, pod)| async move {
        let addr = pod_addr(pod)?;
        let mut misses = Vec::new();
        for (key, want) in entries {
            let (status, body) = get(addr, key).await?;
            if status != 200 || body != *want {
                misses.push(format!("{key} on {name}: {status} {body}"));
            }
        }
        TestResult::Ok(misses)
    });
    let mut misses = Vec::new();
    for result in futures::future::join_all(reads).await {
        misses.extend(result?);
    }
    if misses.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} reads of acknowledged writes missed: {}",
            misses.len(),
            misses
                .iter()
                .take(20)
                .cloned()
                .collect::<Vec<_>>()
                .join("; ")
        ))
    }
}

/// The pods that left stopped on SIGTERM after handing over, as the kubelet logged it.
fn handed_over(env: &Env) -> TestResult {
    let log = std::fs::read_to_string(env.cluster.kubelet().log_path()).unwrap_or_default();
    let stopped: Vec<&str> = log
        .lines()
        .filter(|line| line.contains(&format!("{SCALE_NAMESPACE}/")))
        .filter(|line| line.contains("containers stopped after"))
        .collect();
    eprintln!("partitioned_scale: {}", stopped.join("\n  "));
    if stopped.len() != 3 || stopped.iter().any(|line| line.contains("SIGKILL")) {
        return Err(format!(
            "want the 3 pods that left to stop on SIGTERM: {stopped:?}"
        ));
    }
    Ok(())
}

/// A client writing distinct keys (`<prefix>-<n>`) through a fixed set of pods with
/// `Tidecache-Ack: quorum`, keeping the log of what was acknowledged and what was refused.
pub struct Writer {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<(String, String)>>>,
    /// The longest a write took, in microseconds.
    slowest: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<Vec<Refused>>,
}

/// A write the cluster refused: when the client sent it, and the answer.
#[derive(Debug)]
pub struct Refused {
    /// When the request was sent.
    pub sent: Instant,
    /// The status and body, or the transport error.
    pub error: String,
}

impl Writer {
    pub fn start(prefix: &'static str, addrs: Vec<SocketAddr>) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(Vec::new()));
        let slowest = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn({
            let (stop, acked, slowest) = (stop.clone(), acked.clone(), slowest.clone());
            async move {
                let mut failed = Vec::new();
                let mut i = 0_usize;
                while !stop.load(Ordering::Relaxed) {
                    let (key, value) = (format!("{prefix}-{i}"), format!("entry {i}"));
                    let addr = addrs[i % addrs.len()];
                    let sent = Instant::now();
                    let outcome = put_quorum(addr, &key, &value).await;
                    let took = u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX);
                    slowest.fetch_max(took, Ordering::Relaxed);
                    match outcome {
                        Ok(()) => acked
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .push((key, value)),
                        Err(error) => failed.push(Refused { sent, error }),
                    }
                    i += 1;
                    tokio::time::sleep(WRITE_PAUSE).await;
                }
                failed
            }
        });
        Writer {
            stop,
            acked,
            slowest,
            task,
        }
    }

    /// The longest a write has taken so far.
    pub fn slowest(&self) -> Duration {
        Duration::from_micros(self.slowest.load(Ordering::Relaxed))
    }

    /// The writes acknowledged so far.
    pub fn acked(&self) -> Vec<(String, String)> {
        self.acked
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Stops the loop; the writes acknowledged and the refusals.
    pub async fn stop(self) -> (Vec<(String, String)>, Vec<Refused>) {
        self.stop.store(true, Ordering::Relaxed);
        let acked = self.acked.clone();
        let failed = self.task.await.unwrap_or_else(|e| {
            vec![Refused {
                sent: Instant::now(),
                error: format!("the writer panicked: {e}"),
            }]
        });
        let acked = acked
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        (acked, failed)
    }
}

/// `PUT /v1/keys/{key}?ttl=1h` acknowledged by a quorum of the key's owners.
pub async fn put_quorum(addr: SocketAddr, key: &str, value: &str) -> TestResult {
    let path = format!("/v1/keys/{key}?ttl=1h");
    let r = http::request_with_headers(
        addr,
        "PUT",
        &path,
        &[("Tidecache-Ack", "quorum")],
        value.as_bytes(),
        Duration::from_secs(5),
    )
    .await
    .map_err(|e| format!("PUT {path} on {addr}: {e}"))?;
    if (200..300).contains(&r.status) {
        Ok(())
    } else {
        Err(format!("PUT {path} on {addr}: {} {}", r.status, r.text()))
    }
}
