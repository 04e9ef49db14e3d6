//! A rolling image upgrade under load, as users run one: the cache-node image's tag changes
//! while a client writes through the Service with `Tidecache-Ack: quorum`. The StatefulSet
//! replaces the pods one at a time; no acknowledged write may be lost and never more than the
//! PodDisruptionBudget's one pod may be unavailable (sampled every 200 ms, a pod being deleted
//! counting as down).
//!
//! The test kubelet maps an image to the workspace binary by repository name, so both tags
//! run the same build: what is proven is the roll (drain, hand-over, warm start, catch-up),
//! not compatibility between two releases.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::ListParams;

use crate::partitioned::{Writer, readable_through_every_pod};
use crate::suite::Env;
use crate::support::{TIMEOUT, Target, TestResult, api, apply, is_ready, wait_for};

/// The namespace of the scenario's own CacheCluster.
pub const NAMESPACE: &str = "e2e-upgrade";
const STORE: Target = Target {
    namespace: NAMESPACE,
    name: "store",
};
const FROM: &str = "ghcr.io/tidecache/cache-node:0.1.0";
const TO: &str = "ghcr.io/tidecache/cache-node:0.1.1";
const REPLICAS: usize = 3;
/// How long the pods may take to converge on every acknowledged write after the roll: a few
/// anti-entropy rounds (every 10 s by default).
const CONVERGENCE: Duration = Duration::from_secs(60);

pub async fn rolling_upgrade(env: &Env) -> TestResult {
    let began = Instant::now();
    let manifest = |image: &str| {
        format!(
            "apiVersion: tidecache.io/v1alpha1\nkind: CacheCluster\nmetadata:\n  name: {}\n  \
             namespace: {NAMESPACE}\nspec:\n  replicas: {REPLICAS}\n  image: {image}\n",
            STORE.name
        )
    };
    apply(env, &manifest(FROM)).await?;
    STORE.wait_settled(env, REPLICAS).await?;
    let service = api::<Service>(env, NAMESPACE)
        .get(STORE.name)
        .await
        .map_err(|e| format!("reading Service {}: {e}", STORE.name))?;
    let cluster_ip: IpAddr = service
        .spec
        .and_then(|s| s.cluster_ip)
        .ok_or("the client Service has no ClusterIP")?
        .parse()
        .map_err(|e| format!("the ClusterIP: {e}"))?;
    let writer = Writer::start("upgrade", vec![SocketAddr::new(cluster_ip, 8080)]);
    wait_for("a first acknowledged write", TIMEOUT, async || {
        Ok((!writer.acked().is_empty()).then_some(()))
    })
    .await?;

    let watching = Arc::new(AtomicBool::new(true));
    let fewest_ready = Arc::new(AtomicUsize::new(REPLICAS));
    let watcher = tokio::spawn(watch_roll(
        env.client.clone(),
        watching.clone(),
        fewest_ready.clone(),
    ));

    let rolled = Instant::now();
    let acked_before_roll = writer.acked().len();
    apply(env, &manifest(TO)).await?;
    let statefulsets = api::<StatefulSet>(env, NAMESPACE);
    wait_for(
        "the operator to put the new image in the StatefulSet",
        TIMEOUT,
        async || {
            let set = statefulsets
                .get(STORE.name)
                .await
                .map_err(|e| format!("reading the StatefulSet: {e}"))?;
            // Its status must describe the new spec too, or the settled check below would
            // judge the pods against the old revision.
            let observed = set.status.as_ref().and_then(|s| s.observed_generation);
            if observed < set.metadata.generation {
                return Ok(None);
            }
            let image = set
                .spec
                .and_then(|s| s.template.spec)
                .and_then(|s| s.containers.into_iter().next())
                .and_then(|c| c.image)
                .unwrap_or_default();
            Ok((image == TO).then_some(()))
        },
    )
    .await?;
    let pods = STORE.wait_settled(env, REPLICAS).await;
    watching.store(false, Ordering::Relaxed);
    let watched = watcher.await.map_err(|e| e.to_string())?;
    let pods = pods?;
    let roll_time = rolled.elapsed();
    for (name, pod) in &pods {
        let image = pod
            .spec
            .as_ref()
            .and_then(|s| s.containers.first())
            .and_then(|c| c.image.clone())
            .unwrap_or_default();
        if image != TO {
            return Err(format!("{name} runs {image} after the roll, want {TO}"));
        }
    }
    let acked_during_roll = writer.acked().len() - acked_before_roll;
    let (acked, refused) = writer.stop().await;
    if acked_during_roll == 0 {
        return Err(format!(
            "no write was acknowledged during the roll ({} refused): nothing was proven",
            refused.len()
        ));
    }
    // Full mode is eventually consistent: a quorum acknowledged each write, and the third
    // pod may get one written while it restarted from anti-entropy a little later. Lost means
    // not on every pod once that has had its time.
    let converging = Instant::now();
    let first_miss = readable_through_every_pod(&pods, &acked).await.err();
    wait_for(
        "every acknowledged write on every pod",
        CONVERGENCE,
        async || readable_through_every_pod(&pods, &acked).await.map(Some),
    )
    .await
    .map_err(|e| format!("acknowledged writes lost in the roll: {e}"))?;
    let converged = converging.elapsed();
    let fewest = fewest_ready.load(Ordering::Relaxed);
    eprintln!(
        "rolling_upgrade: {REPLICAS} pods rolled {FROM} → {TO} in {roll_time:.1?} (scenario \
         {:.1?}); {} writes acknowledged by a quorum, all read on every pod {converged:.1?} \
         after the roll (at once: {}); {} refused {:?}; fewest ready pods during the roll \
         {fewest}",
        began.elapsed(),
        acked.len(),
        first_miss.as_deref().unwrap_or("every one"),
        refused.len(),
        refused.iter().take(3).map(|r| &r.error).collect::<Vec<_>>(),
    );
    watched?;
    if fewest + 1 < REPLICAS {
        return Err(format!(
            "only {fewest} of {REPLICAS} pods were ready at one point: the roll took down more \
             than the budget's one"
        ));
    }
    Ok(())
}

/// Samples the ready pods every 200 ms while `watching`, recording the fewest. A pod being
/// deleted may still report Ready; it is leaving, so it counts as down.
async fn watch_roll(
    client: kube::Client,
    watching: Arc<AtomicBool>,
    fewest_ready: Arc<AtomicUsize>,
) -> TestResult {
    let pods: kube::Api<Pod> = kube::Api::namespaced(client, NAMESPACE);
    while watching.load(Ordering::Relaxed) {
        let listed = pods
            .list(&ListParams::default().labels(&STORE.selector()))
            .await
            .map_err(|e| format!("listing pods: {e}"))?;
        let ready = listed
            .items
            .iter()
            .filter(|p| is_ready(p) && p.metadata.deletion_timestamp.is_none())
            .count();
        fewest_ready.fetch_min(ready, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}
