//! What the scenarios share besides the cluster: waiting, kubectl, the CacheClusters
//! they look at, and the cache pods' HTTP API.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use serde_json::Value;
use tidecache_e2e::control_plane::ZONE_LABEL;
use tidecache_e2e::http;

use crate::suite::Env;

/// Upper bound for anything the controllers should do; generous for a busy machine.
pub const TIMEOUT: Duration = Duration::from_secs(180);

/// A scenario's result: the error says what was expected and what was seen.
pub type TestResult<T = ()> = Result<T, String>;

/// The label that makes the apiserver's PodSecurity admission refuse, in a namespace, every
/// pod breaking the restricted Pod Security Standard. Every namespace the scenarios put
/// CacheClusters in carries it (as `deploy/namespace.yaml` does for the operator's), so
/// each pod the operator builds is proven admissible there.
pub const RESTRICTED_LABEL: &str = "pod-security.kubernetes.io/enforce=restricted";

/// A CacheCluster a scenario works on.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    pub namespace: &'static str,
    pub name: &'static str,
}

/// The sample (`deploy/samples/minimal.yaml`), shared by the scenarios that leave it
/// as they found it: 3 Ready pods, schedule `* * * * *`.
pub const DEMO: Target = Target {
    namespace: "default",
    name: "demo",
};

impl Target {
    /// The label selector of its cache pods.
    pub fn selector(&self) -> String {
        format!(
            "app.kubernetes.io/instance={},app.kubernetes.io/component=cache",
            self.name
        )
    }

    /// The CacheCluster as JSON (kubectl, so that the CRD's schema is what is read).
    pub async fn get(&self, env: &Env) -> TestResult<Value> {
        let out = kubectl(
            env,
            &[
                "get",
                "cachecluster",
                self.name,
                "-n",
                self.namespace,
                "-o",
                "json",
            ],
        )
        .await?;
        serde_json::from_str(&out).map_err(|e| format!("parsing CacheCluster {}: {e}", self.name))
    }

    /// Its cache pods, by name.
    pub async fn pods(&self, env: &Env) -> TestResult<BTreeMap<String, Pod>> {
        let pods = api::<Pod>(env, self.namespace)
            .list(&ListParams::default().labels(&self.selector()))
            .await
            .map_err(|e| format!("listing pods: {e}"))?;
        Ok(pods.items.into_iter().map(|p| (p.name_any(), p)).collect())
    }

    /// Waits until its StatefulSet has `replicas` pods, all Ready and of its current
    /// revision, and the CacheCluster's status says so; returns the pods.
    pub async fn wait_settled(
        &self,
        env: &Env,
        replicas: usize,
    ) -> TestResult<BTreeMap<String, Pod>> {
        let sets = api::<StatefulSet>(env, self.namespace);
        let what = format!("{replicas} ready, updated pods of {}", self.name);
        wait_for(&what, TIMEOUT, async || {
            let sts = sets.get(self.name).await.map_err(|e| e.to_string())?;
            let spec_replicas = sts.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0);
            let status = sts.status.clone().unwrap_or_default();
            let rolled = status.update_revision.is_some()
                && status.current_revision == status.update_revision
                && status.updated_replicas == Some(spec_replicas);
            let pods = self.pods(env).await?;
            let ready = pods.values().filter(|p| is_ready(p)).count();
            let cc = self.get(env).await?;
            let cc_ready = cc["status"]["readyReplicas"].as_u64().unwrap_or(0);
            let want = i32::try_from(replicas).unwrap_or(0);
            if spec_replicas == want
                && status.ready_replicas == Some(want)
                && rolled
                && pods.len() == replicas
                && ready == replicas
                && cc_ready == replicas as u64
            {
                Ok(Some(pods))
            } else {
                Err(format!(
                    "StatefulSet replicas {spec_replicas}, ready {:?}, revisions {:?}/{:?}, \
                     updated {:?}; {} pods, {ready} ready; CacheCluster readyReplicas {cc_ready}",
                    status.ready_replicas,
                    status.current_revision,
                    status.update_revision,
                    status.updated_replicas,
                    pods.len()
                ))
            }
        })
        .await
    }

    /// `kubectl patch` of the CacheCluster with a merge patch.
    pub async fn patch(&self, env: &Env, patch: &str) -> TestResult {
        kubectl(
            env,
            &[
                "patch",
                "cachecluster",
                self.name,
                "-n",
                self.namespace,
                "--type=merge",
                "-p",
                patch,
            ],
        )
        .await
        .map(drop)
    }
}

/// Calls `check` every half second until it returns `Ok(Some(_))`, or fails with the
/// last state it reported.
pub async fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut check: impl AsyncFnMut() -> TestResult<Option<T>>,
) -> TestResult<T> {
    let start = Instant::now();
    let mut last = String::from("(not checked yet)");
    loop {
        match check().await {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => {}
            Err(e) => last = e,
        }
        if start.elapsed() > timeout {
            return Err(format!(
                "timed out after {timeout:?} waiting for {what}; last: {last}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// A namespaced API of the admin client.
pub fn api<K>(env: &Env, namespace: &str) -> Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    Api::namespaced(env.client.clone(), namespace)
}

/// The built kubectl as admin; the error carries its stderr.
pub async fn kubectl(env: &Env, args: &[&str]) -> TestResult<String> {
    env.cluster
        .plane()
        .kubectl(args)
        .await
        .map_err(|e| e.to_string())
}

/// `kubectl apply -f` of a manifest given as text.
pub async fn apply(env: &Env, manifest: &str) -> TestResult<String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let file = dir.path().join("manifest.yaml");
    std::fs::write(&file, manifest).map_err(|e| e.to_string())?;
    kubectl(env, &["apply", "-f", &file.to_string_lossy()]).await
}

/// The last `lines` lines of `text`.
pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

pub fn is_ready(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The restart count of the pod's (only) container as the kubelet reported it.
pub fn restart_count(pod: &Pod) -> i32 {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|c| c.first())
        .map_or(0, |c| c.restart_count)
}

/// Where the pod's cache-node listens.
pub fn pod_addr(pod: &Pod) -> TestResult<SocketAddr> {
    let ip: IpAddr = pod
        .status
        .as_ref()
        .and_then(|s| s.pod_ip.as_deref())
        .ok_or_else(|| format!("pod {} has no IP", pod.name_any()))?
        .parse()
        .map_err(|e| format!("pod IP: {e}"))?;
    Ok(SocketAddr::new(ip, 8080))
}

/// The zone label of the node a pod runs on.
pub async fn zone_of(env: &Env, pod: &Pod) -> TestResult<String> {
    let node = pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .ok_or_else(|| format!("pod {} is not scheduled", pod.name_any()))?;
    let node = Api::<Node>::all(env.client.clone())
        .get(&node)
        .await
        .map_err(|e| e.to_string())?;
    Ok(node.labels().get(ZONE_LABEL).cloned().unwrap_or_default())
}

/// Pods per zone over all three zones; fails if the skew is above 1.
pub async fn check_spread(
    env: &Env,
    pods: &BTreeMap<String, Pod>,
) -> TestResult<BTreeMap<String, usize>> {
    let mut per_zone: BTreeMap<String, usize> = tidecache_e2e::cluster::ZONES
        .iter()
        .map(|z| ((*z).to_owned(), 0))
        .collect();
    for pod in pods.values() {
        *per_zone.entry(zone_of(env, pod).await?).or_default() += 1;
    }
    let max = per_zone.values().max().copied().unwrap_or(0);
    let min = per_zone.values().min().copied().unwrap_or(0);
    if max - min > 1 {
        return Err(format!("zone skew {} > 1: {per_zone:?}", max - min));
    }
    Ok(per_zone)
}

/// `PUT /v1/keys/{key}?ttl=1h`.
pub async fn put(addr: SocketAddr, key: &str, value: &str) -> TestResult {
    let path = format!("/v1/keys/{key}?ttl=1h");
    let r = http::request(addr, "PUT", &path, value.as_bytes(), Duration::from_secs(5))
        .await
        .map_err(|e| format!("PUT {path} on {addr}: {e}"))?;
    if (200..300).contains(&r.status) {
        Ok(())
    } else {
        Err(format!("PUT {path} on {addr}: {} {}", r.status, r.text()))
    }
}

/// `GET /v1/keys/{key}`: status and body.
pub async fn get(addr: SocketAddr, key: &str) -> TestResult<(u16, String)> {
    let path = format!("/v1/keys/{key}");
    let r = http::request(addr, "GET", &path, b"", Duration::from_secs(5))
        .await
        .map_err(|e| format!("GET {path} on {addr}: {e}"))?;
    Ok((r.status, r.text()))
}

/// Every entry of `entries` (key → value) is served by every pod of `pods`, each read
/// once: for pods that must already hold everything (a Ready pod has loaded the volume
/// and caught up from its peers). Lists every miss, not only the first.
pub async fn served_everywhere(
    pods: &BTreeMap<String, Pod>,
    entries: &BTreeMap<String, String>,
) -> TestResult {
    let mut misses = Vec::new();
    for (name, pod) in pods {
        let addr = pod_addr(pod)?;
        for (key, want) in entries {
            let (status, body) = get(addr, key).await?;
            if status != 200 || body != *want {
                misses.push(format!("{key} on {name}: {status} {body}"));
            }
        }
    }
    if misses.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} reads missed: {}",
            misses.len(),
            misses.join("; ")
        ))
    }
}

/// Like [`served_everywhere`], but waits up to 30 s for replication to bring every
/// entry to every pod (for entries just written).
pub async fn replicated_everywhere(
    pods: &BTreeMap<String, Pod>,
    entries: &BTreeMap<String, String>,
) -> TestResult {
    wait_for(
        "every entry on every pod",
        Duration::from_secs(30),
        async || served_everywhere(pods, entries).await.map(Some),
    )
    .await
}
