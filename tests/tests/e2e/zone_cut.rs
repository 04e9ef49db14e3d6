//! Partitioned mode through the loss of a whole zone: `e2e-partitioned-cut/orders`, six pods
//! in three zones with three owners per key (one in each zone), one zone's pods cut off the
//! pod network (their host-side veths down, as a failed zone's switch would) under a quorum
//! writer. The other zones keep serving every read and acknowledging every quorum write (one
//! forwarded to a cut owner before the others notice goes to the next owner), and the cut
//! zone holds every acknowledged write again after the heal.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;

use crate::partitioned::{
    Writer, moves_done, owners_in_distinct_zones, peer_token, put_quorum,
    readable_through_every_pod,
};
use crate::suite::Env;
use crate::support::{Target, TestResult, apply, check_spread, pod_addr, wait_for, zone_of};

/// The scenario's own namespace (created and deleted by the suite).
pub const NAMESPACE: &str = "e2e-partitioned-cut";
const ORDERS: Target = Target {
    namespace: NAMESPACE,
    name: "orders",
};
/// Owners per key: one in each zone.
const OWNERS: u64 = 3;
/// Entries written before the cut.
const BEFORE: usize = 60;
/// How long the zone stays cut off: long enough for the writer to go on well past the time
/// the others take to notice (a holdings poll every 2 s with a 1 s timeout), and short of
/// the liveness probe's 3 failures 10 s apart, so that the kubelet does not restart the
/// pods (restarting is the network_cut scenario's subject).
const CUT: Duration = Duration::from_secs(14);

/// One zone of a six-pod, three-owner Partitioned cluster cut off under a quorum writer.
pub async fn partitioned_zone_cut(env: &Env) -> TestResult {
    apply(
        env,
        &format!(
            "apiVersion: tidecache.io/v1alpha1\nkind: CacheCluster\nmetadata:\n  name: {}\n  \
             namespace: {NAMESPACE}\nspec:\n  replicas: 6\n  replication:\n    mode: \
             Partitioned\n    replicationFactor: {OWNERS}\n",
            ORDERS.name
        ),
    )
    .await?;
    let pods = ORDERS.wait_settled(env, 6).await?;
    let per_zone = check_spread(env, &pods).await?;
    if per_zone.values().any(|&n| n != 2) {
        return Err(format!("6 pods not two per zone: {per_zone:?}"));
    }
    let token = peer_token(env, &ORDERS).await?;
    let partitions = moves_done(env, &ORDERS, &token, 6, OWNERS).await?;
    owners_in_distinct_zones(&partitions, 6, OWNERS)?;

    // The zone of the first pod is cut; the writer and the readers use the other four.
    let mut zones: BTreeMap<String, BTreeMap<String, Pod>> = BTreeMap::new();
    for (name, pod) in &pods {
        zones
            .entry(zone_of(env, pod).await?)
            .or_default()
            .insert(name.clone(), pod.clone());
    }
    let first = pods.values().next().ok_or("no pods")?;
    let cut_zone = zone_of(env, first).await?;
    let cut: BTreeMap<String, Pod> = zones.remove(&cut_zone).unwrap_or_default();
    let rest: BTreeMap<String, Pod> = zones.into_values().flatten().collect();
    let rest_addrs: Vec<SocketAddr> = rest.values().map(pod_addr).collect::<TestResult<_>>()?;

    let all_addrs: Vec<SocketAddr> = pods.values().map(pod_addr).collect::<TestResult<_>>()?;
    let mut before = Vec::new();
    for i in 0..BEFORE {
        let (key, value) = (format!("order-before-{i}"), format!("order {i}"));
        put_quorum(all_addrs[i % all_addrs.len()], &key, &value).await?;
        before.push((key, value));
    }
    let writer = Writer::start("order", rest_addrs);
    tokio::time::sleep(Duration::from_secs(2)).await;

    let kubelet = env.cluster.kubelet();
    let network = env.cluster.network();
    let links = cut
        .iter()
        .map(|(name, pod)| {
            kubelet
                .pod_address(&pod.uid().unwrap_or_default())
                .ok_or_else(|| format!("the kubelet has no network namespace for {name}"))
        })
        .collect::<TestResult<Vec<_>>>()?;
    let acked_before_cut = writer.acked().len();
    let cut_at = Instant::now();
    let mut downed = Ok(());
    for link in &links {
        downed = downed.and(network.set_link(link, false).map_err(|e| e.to_string()));
    }
    // Reads through the other zones, round after round while the zone is cut off: every
    // entry written before, and every write acknowledged so far.
    let mut rounds = 0;
    let mut reads = 0;
    let served = async {
        downed?;
        while cut_at.elapsed() < CUT {
            let mut entries = before.clone();
            entries.extend(writer.acked());
            readable_through_every_pod(&rest, &entries)
                .await
                .map_err(|e| format!("{:.1?} into the cut of {cut_zone}: {e}", cut_at.elapsed()))?;
            rounds += 1;
            reads += entries.len() * rest.len();
        }
        TestResult::Ok(())
    }
    .await;
    let acked_during_cut = writer.acked().len() - acked_before_cut;
    // Reconnect whatever happened, so that a failure here does not spread.
    for link in &links {
        network.set_link(link, true).map_err(|e| e.to_string())?;
    }
    let healed_at = Instant::now();
    served?;

    // The cut zone converges: each of its pods reads every acknowledged write. Its pods own
    // one of the three copies of every key, so a pod reading a key it owns reads its own.
    let mut entries = before.clone();
    entries.extend(writer.acked());
    wait_for(
        &format!("the pods of {cut_zone} to hold every acknowledged write"),
        Duration::from_secs(60),
        async || {
            readable_through_every_pod(&cut, &entries).await?;
            Ok(Some(()))
        },
    )
    .await?;
    let converged = healed_at.elapsed();
    let writer_slowest = writer.slowest();
    let (acked, failed) = writer.stop().await;
    eprintln!(
        "partitioned_zone_cut: {} of 6 pods ({cut_zone}) cut off for {CUT:?}: {reads} reads in \
         {rounds} rounds and {acked_during_cut} quorum writes through the other zones, the \
         slowest write {:.1?}; {} writes refused; the zone held every acknowledged write \
         {converged:.1?} after the heal",
        cut.len(),
        writer_slowest,
        failed.len(),
    );
    if !failed.is_empty() {
        return Err(format!(
            "{} quorum writes refused while {cut_zone} was cut off, e.g. {:?}",
            failed.len(),
            failed
                .iter()
                .take(5)
                .map(|r| format!(
                    "{:.1?} into the cut: {}",
                    r.sent.saturating_duration_since(cut_at),
                    r.error
                ))
                .collect::<Vec<_>>()
        ));
    }
    if acked_during_cut == 0 {
        return Err("no quorum write was acknowledged while the zone was cut off".into());
    }
    // The writes of the first seconds after the heal went on while the links to the cut pods
    // came back; anti-entropy's second pass after a recovery brings them there.
    let pods = ORDERS.pods(env).await?;
    let stopped = Instant::now();
    wait_for(
        "every pod to serve every acknowledged write",
        Duration::from_secs(20),
        async || {
            readable_through_every_pod(&pods, &acked).await?;
            Ok(Some(()))
        },
    )
    .await?;
    eprintln!(
        "partitioned_zone_cut: every pod served all {} acknowledged writes {:.1?} after the \
         writer stopped",
        acked.len(),
        stopped.elapsed()
    );
    Ok(())
}
