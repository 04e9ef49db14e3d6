//! The end-to-end scenarios of issue 7, against one local cluster shared by all of them
//! (starting it is the expensive part): the real control plane, 3 zones × 2 fake nodes,
//! the test kubelet, and the operator installed from `deploy/` running as pods under
//! its own ServiceAccount, so the shipped RBAC is what is proven sufficient.
//!
//! The scenarios run in order in one test, most valuable first, each building on the
//! state the previous one left (the sample cluster `default/demo`); a failure names
//! the scenario and prints the kubelet's log and the pods.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{
    Node, PersistentVolume, PersistentVolumeClaim, Pod, Service, ServiceAccount,
};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};
use serde_json::Value;
use tidecache_e2e::cluster::{LocalCluster, OPERATOR_DEPLOYMENT, OPERATOR_NAMESPACE};
use tidecache_e2e::control_plane::ZONE_LABEL;
use tidecache_e2e::http;

/// The sample the scenarios use (`deploy/samples/minimal.yaml`).
const NS: &str = "default";
const NAME: &str = "demo";
const SELECTOR: &str = "app.kubernetes.io/instance=demo,app.kubernetes.io/component=cache";
/// Upper bound for anything the controllers should do; generous for a busy machine.
const TIMEOUT: Duration = Duration::from_secs(180);

type TestResult<T = ()> = Result<T, String>;

struct Env {
    cluster: LocalCluster,
    client: Client,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn operator_end_to_end() {
    let start = Instant::now();
    let cluster = LocalCluster::start()
        .await
        .expect("starting the local cluster");
    let client = cluster.client().await.expect("admin client");
    let env = Env { cluster, client };
    let mut failures = Vec::new();
    let scenarios: [(&str, Scenario); 10] = [
        (
            "0 operator from deploy/ under its own ServiceAccount",
            |e| Box::pin(operator_from_deploy(e)),
        ),
        ("1 sample → children with the expected specs", |e| {
            Box::pin(children(e))
        }),
        ("2 pods spread over zones, Ready, HTTP on each pod", |e| {
            Box::pin(spread_and_serve(e))
        }),
        ("8 printer columns, conditions and events", |e| {
            Box::pin(printer_columns(e))
        }),
        ("3 janitor CronJob sweeps the shared volume", |e| {
            Box::pin(janitor_sweeps(e))
        }),
        ("4 scale 3→5→2 and a schedule change", |e| {
            Box::pin(scale_and_schedule(e))
        }),
        ("5 drift is undone", |e| Box::pin(drift(e))),
        ("9 a pod cut off the network turns NotReady", |e| {
            Box::pin(network_cut(e))
        }),
        ("6 invalid CacheCluster refused", |e| {
            Box::pin(invalid_refused(e))
        }),
        ("7 deletion by the garbage collector", |e| {
            Box::pin(garbage_collected(e))
        }),
    ];
    for (name, scenario) in scenarios {
        let began = Instant::now();
        eprintln!("=== scenario {name}");
        match scenario(&env).await {
            Ok(()) => eprintln!("=== scenario {name}: passed in {:.1?}", began.elapsed()),
            Err(e) => {
                eprintln!(
                    "=== scenario {name}: FAILED after {:.1?}: {e}",
                    began.elapsed()
                );
                failures.push(format!("{name}: {e}"));
                // Later scenarios build on the state this one should have left.
                break;
            }
        }
    }
    if !failures.is_empty() {
        diagnose(&env).await;
    }
    eprintln!("e2e: {:.1?} in total", start.elapsed());
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

type Scenario =
    for<'a> fn(&'a Env) -> std::pin::Pin<Box<dyn std::future::Future<Output = TestResult> + 'a>>;

async fn diagnose(env: &Env) {
    let kubectl = |args: &'static [&'static str]| env.cluster.plane().kubectl(args);
    if let Ok(out) = kubectl(&["get", "pods,statefulsets,jobs,pvc", "-A", "-o", "wide"]).await {
        eprintln!("{out}");
    }
    if let Ok(out) = kubectl(&["get", "events", "-A", "--sort-by=.lastTimestamp"]).await {
        eprintln!("{}", tail(&out, 40));
    }
    let log = std::fs::read_to_string(env.cluster.kubelet().log_path()).unwrap_or_default();
    eprintln!("----- kubelet log (tail) -----\n{}", tail(&log, 60));
    for pod in ["demo-0", "demo-1"] {
        let log = env.cluster.kubelet().container_log(NS, pod, "cache-node");
        eprintln!(
            "----- {pod} cache-node log (tail) -----\n{}",
            tail(&log, 20)
        );
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Calls `check` every half second until it returns `Ok(Some(_))`, or fails with the
/// last state it reported.
async fn wait_for<T>(
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

fn api<K>(env: &Env) -> Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    Api::namespaced(env.client.clone(), NS)
}

async fn kubectl(env: &Env, args: &[&str]) -> TestResult<String> {
    env.cluster
        .plane()
        .kubectl(args)
        .await
        .map_err(|e| e.to_string())
}

async fn cache_cluster(env: &Env, name: &str) -> TestResult<Value> {
    let out = kubectl(env, &["get", "cachecluster", name, "-n", NS, "-o", "json"]).await?;
    serde_json::from_str(&out).map_err(|e| format!("parsing CacheCluster {name}: {e}"))
}

/// Pods of the sample cluster, by name.
async fn cache_pods(env: &Env) -> TestResult<BTreeMap<String, Pod>> {
    let pods = api::<Pod>(env)
        .list(&ListParams::default().labels(SELECTOR))
        .await
        .map_err(|e| format!("listing pods: {e}"))?;
    Ok(pods.items.into_iter().map(|p| (p.name_any(), p)).collect())
}

fn is_ready(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn pod_addr(pod: &Pod) -> TestResult<SocketAddr> {
    let ip: IpAddr = pod
        .status
        .as_ref()
        .and_then(|s| s.pod_ip.as_deref())
        .ok_or_else(|| format!("pod {} has no IP", pod.name_any()))?
        .parse()
        .map_err(|e| format!("pod IP: {e}"))?;
    Ok(SocketAddr::new(ip, 8080))
}

/// Waits until the StatefulSet has `replicas` pods, all Ready and of its current
/// revision, and the CacheCluster's status says so; returns the pods.
async fn wait_settled(env: &Env, replicas: usize) -> TestResult<BTreeMap<String, Pod>> {
    let sets = api::<StatefulSet>(env);
    wait_for(&format!("{replicas} ready, updated cache pods"), TIMEOUT, async || {
        let sts = sets.get(NAME).await.map_err(|e| e.to_string())?;
        let spec_replicas = sts.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0);
        let status = sts.status.clone().unwrap_or_default();
        let rolled = status.update_revision.is_some()
            && status.current_revision == status.update_revision
            && status.updated_replicas == Some(spec_replicas);
        let pods = cache_pods(env).await?;
        let ready = pods.values().filter(|p| is_ready(p)).count();
        let cc = cache_cluster(env, NAME).await?;
        let cc_ready = cc["status"]["readyReplicas"].as_u64().unwrap_or(0);
        let state = format!(
            "StatefulSet replicas {spec_replicas}, ready {:?}, revisions {:?}/{:?}, updated {:?}; \
             {} pods, {ready} ready; CacheCluster readyReplicas {cc_ready}",
            status.ready_replicas,
            status.current_revision,
            status.update_revision,
            status.updated_replicas,
            pods.len()
        );
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
            Err(state)
        }
    })
    .await
}

async fn zone_of(env: &Env, pod: &Pod) -> TestResult<String> {
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
async fn check_spread(
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

async fn put(addr: SocketAddr, key: &str, value: &str) -> TestResult {
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

async fn get(addr: SocketAddr, key: &str) -> TestResult<(u16, String)> {
    let path = format!("/v1/keys/{key}");
    let r = http::request(addr, "GET", &path, b"", Duration::from_secs(5))
        .await
        .map_err(|e| format!("GET {path} on {addr}: {e}"))?;
    Ok((r.status, r.text()))
}

// ---------------------------------------------------------------------------------
// Scenarios
// ---------------------------------------------------------------------------------

/// `kubectl apply -k deploy/`: the operator's pods run through the kubelet with a
/// token of their ServiceAccount `tidecache-operator` (minted by TokenRequest), so
/// everything the operator does below is allowed by the shipped RBAC alone.
async fn operator_from_deploy(env: &Env) -> TestResult {
    env.cluster
        .deploy_operator(TIMEOUT)
        .await
        .map_err(|e| e.to_string())?;
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), OPERATOR_NAMESPACE);
    let pods = pods
        .list(&ListParams::default().labels("app.kubernetes.io/component=operator"))
        .await
        .map_err(|e| e.to_string())?;
    if pods.items.len() != 2 {
        return Err(format!("{} operator pods, want 2", pods.items.len()));
    }
    for pod in &pods.items {
        let account = pod
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.clone());
        if account.as_deref() != Some(OPERATOR_DEPLOYMENT) {
            return Err(format!("operator pod runs as {account:?}"));
        }
        if !is_ready(pod) {
            return Err(format!("operator pod {} is not Ready", pod.name_any()));
        }
    }
    // The ServiceAccount's permissions are the shipped ones and no more.
    let who = format!("--as=system:serviceaccount:{OPERATOR_NAMESPACE}:{OPERATOR_DEPLOYMENT}");
    let can = |verb: &'static str, resource: &'static str| {
        let who = who.clone();
        async move {
            let out = env
                .cluster
                .plane()
                .kubectl(&["auth", "can-i", verb, resource, "-n", NS, &who])
                .await;
            matches!(out, Ok(o) if o.trim() == "yes")
        }
    };
    if !can("patch", "statefulsets.apps").await || !can("list", "cacheclusters.tidecache.io").await
    {
        return Err("the operator's ServiceAccount lacks what it needs".into());
    }
    if can("delete", "nodes").await || can("create", "clusterrolebindings").await {
        return Err("the operator's ServiceAccount may do more than it needs".into());
    }
    Ok(())
}

/// The sample becomes a StatefulSet, two Services, the PVC, the CronJob and the PDB,
/// each as the operator builds it.
async fn children(env: &Env) -> TestResult {
    let sample: PathBuf = LocalCluster::deploy_dir().join("samples/minimal.yaml");
    kubectl(env, &["apply", "-f", &sample.to_string_lossy()]).await?;
    let cc = wait_for("the CacheCluster", TIMEOUT, async || {
        let cc = cache_cluster(env, NAME).await?;
        Ok(cc["status"]["observedGeneration"].as_i64().map(|_| cc))
    })
    .await?;
    let uid = cc["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let owned = |meta: &kube::api::ObjectMeta| -> TestResult {
        let refs = meta.owner_references.clone().unwrap_or_default();
        if refs
            .iter()
            .any(|r| r.uid == uid && r.kind == "CacheCluster" && r.controller == Some(true))
        {
            Ok(())
        } else {
            Err(format!("{:?} is not owned by the CacheCluster", meta.name))
        }
    };
    let sts = wait_for("the StatefulSet", TIMEOUT, async || {
        api::<StatefulSet>(env)
            .get_opt(NAME)
            .await
            .map_err(|e| e.to_string())
    })
    .await?;
    owned(&sts.metadata)?;
    let spec = sts.spec.clone().unwrap_or_default();
    let pod = spec.template.spec.clone().unwrap_or_default();
    let container = pod.containers.first().cloned().unwrap_or_default();
    let args = container.args.clone().unwrap_or_default();
    let spread = pod.topology_spread_constraints.clone().unwrap_or_default();
    let checks = [
        (spec.replicas == Some(3), "replicas 3"),
        (
            spec.service_name.as_deref() == Some("demo-peers"),
            "serviceName demo-peers",
        ),
        (
            container.image.as_deref() == Some("ghcr.io/tidecache/cache-node:0.1.0"),
            "cache-node image",
        ),
        (
            args.iter().any(|a| a == "--schedule=* * * * *"),
            "--schedule arg",
        ),
        (
            args.iter().any(|a| a == "--data-dir=/data"),
            "--data-dir arg",
        ),
        (
            spread.iter().any(|c| {
                c.topology_key == ZONE_LABEL
                    && c.max_skew == 1
                    && c.when_unsatisfiable == "DoNotSchedule"
            }),
            "zone spread constraint",
        ),
        (
            pod.volumes.unwrap_or_default().iter().any(|v| {
                v.persistent_volume_claim
                    .as_ref()
                    .is_some_and(|c| c.claim_name == "demo-data")
            }),
            "the shared claim as a volume",
        ),
    ];
    for (ok, what) in checks {
        if !ok {
            return Err(format!("StatefulSet: expected {what}; got {spec:?}"));
        }
    }
    let services = api::<Service>(env);
    let peers = services
        .get("demo-peers")
        .await
        .map_err(|e| e.to_string())?;
    owned(&peers.metadata)?;
    let peers_spec = peers.spec.unwrap_or_default();
    if peers_spec.cluster_ip.as_deref() != Some("None")
        || peers_spec.publish_not_ready_addresses != Some(true)
    {
        return Err(format!(
            "demo-peers is not headless with not-ready addresses: {peers_spec:?}"
        ));
    }
    let client_svc = services.get(NAME).await.map_err(|e| e.to_string())?;
    owned(&client_svc.metadata)?;
    let ports = client_svc.spec.and_then(|s| s.ports).unwrap_or_default();
    if !ports.iter().any(|p| p.port == 8080) {
        return Err(format!("client Service ports {ports:?}"));
    }
    let pvc = wait_for("the claim to be Bound", TIMEOUT, async || {
        let pvc = api::<PersistentVolumeClaim>(env)
            .get("demo-data")
            .await
            .map_err(|e| e.to_string())?;
        let phase = pvc.status.as_ref().and_then(|s| s.phase.clone());
        Ok((phase.as_deref() == Some("Bound")).then_some(pvc))
    })
    .await?;
    if pvc.metadata.owner_references.is_some_and(|r| !r.is_empty()) {
        return Err("the claim is owned although reclaimPolicy is Retain".into());
    }
    let pvc_spec = pvc.spec.unwrap_or_default();
    let size = pvc_spec
        .resources
        .and_then(|r| r.requests)
        .and_then(|r| r.get("storage").cloned());
    if pvc_spec.access_modes != Some(vec!["ReadWriteMany".into()])
        || size.map(|q| q.0).as_deref() != Some("10Gi")
    {
        return Err("the claim is not ReadWriteMany 10Gi".into());
    }
    let cron = api::<CronJob>(env)
        .get("demo-janitor")
        .await
        .map_err(|e| e.to_string())?;
    owned(&cron.metadata)?;
    let cron_spec = cron.spec.unwrap_or_default();
    if cron_spec.schedule != "* * * * *"
        || cron_spec.time_zone.as_deref() != Some("UTC")
        || cron_spec.concurrency_policy.as_deref() != Some("Forbid")
    {
        return Err(format!(
            "CronJob schedule {:?} tz {:?} policy {:?}",
            cron_spec.schedule, cron_spec.time_zone, cron_spec.concurrency_policy
        ));
    }
    let pdb = api::<PodDisruptionBudget>(env)
        .get(NAME)
        .await
        .map_err(|e| e.to_string())?;
    owned(&pdb.metadata)?;
    let max_unavailable = pdb.spec.and_then(|s| s.max_unavailable);
    if max_unavailable != Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(1)) {
        return Err(format!("PDB maxUnavailable {max_unavailable:?}"));
    }
    let account = api::<ServiceAccount>(env)
        .get("demo-cache")
        .await
        .map_err(|e| e.to_string())?;
    owned(&account.metadata)?;
    let binding = api::<RoleBinding>(env)
        .get("demo-cache")
        .await
        .map_err(|e| e.to_string())?;
    owned(&binding.metadata)
}

/// The real scheduler spreads the three pods over the three zones; each becomes Ready
/// through its probes and serves PUT and GET on its own IP.
async fn spread_and_serve(env: &Env) -> TestResult {
    let pods = wait_settled(env, 3).await?;
    let per_zone = check_spread(env, &pods).await?;
    if per_zone.values().any(|&n| n != 1) {
        return Err(format!("3 pods not one per zone: {per_zone:?}"));
    }
    // The cluster DNS resolves the headless Service to the three pods, as cache-node's
    // peer discovery (`--peers-service`) does from inside them.
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
    for (name, pod) in &pods {
        let addr = pod_addr(pod)?;
        put(addr, &format!("e2e-{name}"), &format!("value of {name}")).await?;
        let (status, body) = get(addr, &format!("e2e-{name}")).await?;
        if status != 200 || body != format!("value of {name}") {
            return Err(format!("GET from {name}: {status} {body}"));
        }
    }
    // Every pod found its peers by watching the Service's EndpointSlices with its own
    // ServiceAccount (the RBAC the operator grants it), not by the DNS fallback.
    for name in pods.keys() {
        let log = env.cluster.kubelet().container_log(NS, name, "cache-node");
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
    for (name, pod) in &pods {
        let addr = pod_addr(pod)?;
        for written_on in pods.keys() {
            let key = format!("e2e-{written_on}");
            let want = format!("value of {written_on}");
            wait_for(
                &format!("{key} on {name}"),
                Duration::from_secs(30),
                async || {
                    let (status, body) = get(addr, &key).await?;
                    if status == 200 && body == want {
                        Ok(Some(()))
                    } else {
                        Err(format!("{status} {body}"))
                    }
                },
            )
            .await?;
        }
    }
    Ok(())
}

/// `kubectl get cacheclusters` shows the printer columns with true values and
/// `kubectl describe` the conditions and the operator's Events.
async fn printer_columns(env: &Env) -> TestResult {
    let table = wait_for(
        "printer columns with 3 ready in 3 zones",
        TIMEOUT,
        async || {
            let out = kubectl(env, &["get", "cacheclusters", "-n", NS]).await?;
            let header: Vec<&str> = out
                .lines()
                .next()
                .unwrap_or_default()
                .split_whitespace()
                .collect();
            if header != ["NAME", "REPLICAS", "READY", "ZONES", "SCHEDULE", "AGE"] {
                return Err(format!("header {header:?}"));
            }
            let row = out.lines().nth(1).unwrap_or_default().to_owned();
            let cells: Vec<&str> = row.split_whitespace().collect();
            let ok = cells.len() >= 5
                && cells[..4] == ["demo", "3", "3", "3"]
                && row.contains("* * * * * (UTC)");
            if ok {
                Ok(Some(out))
            } else {
                Err(format!("row {row:?}"))
            }
        },
    )
    .await?;
    let short = kubectl(env, &["get", "tcc", "-n", NS, "-o", "name"]).await?;
    if short.trim() != "cachecluster.tidecache.io/demo" {
        return Err(format!("short name tcc lists {short:?}; table was {table}"));
    }
    let described = kubectl(env, &["describe", "cachecluster", NAME, "-n", NS]).await?;
    for needle in [
        "Conditions:",
        "Ready",
        "Progressing",
        "Events:",
        "created StatefulSet demo",
    ] {
        if !described.contains(needle) {
            return Err(format!("describe lacks {needle:?}:\n{described}"));
        }
    }
    Ok(())
}

/// The CronJob fires (every minute); its Job runs the janitor against the shared
/// volume: an expired bucket directory is deleted, live entries are still served, and
/// the CacheCluster's status records the run.
async fn janitor_sweeps(env: &Env) -> TestResult {
    let pvc = api::<PersistentVolumeClaim>(env)
        .get("demo-data")
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
    let host = pv
        .spec
        .and_then(|s| s.host_path)
        .map(|h| PathBuf::from(h.path))
        .ok_or("the volume has no host path")?;
    // A bucket that expired long ago, written by a pod that is gone.
    let expired = host.join(NS).join(NAME).join("20200101T000000Z");
    let segment = expired.join("e2e-gone-0").join("00000000000000000000.seg");
    std::fs::create_dir_all(segment.parent().unwrap_or(&expired))
        .and_then(|()| std::fs::write(&segment, b"stale"))
        .map_err(|e| format!("seeding {}: {e}", expired.display()))?;
    let seeded = chrono::Utc::now();
    let jobs = api::<Job>(env);
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
    if expired.exists() {
        return Err(format!(
            "{} survived janitor Job {}",
            expired.display(),
            job.name_any()
        ));
    }
    let job_name = job.name_any();
    wait_for(
        "the janitor run in the CacheCluster's status",
        TIMEOUT,
        async || {
            let cc = cache_cluster(env, NAME).await?;
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
    for (name, pod) in cache_pods(env).await? {
        let (status, body) = get(pod_addr(&pod)?, &format!("e2e-{name}")).await?;
        if status != 200 || body != format!("value of {name}") {
            return Err(format!(
                "live entry on {name} after the sweep: {status} {body}"
            ));
        }
    }
    Ok(())
}

/// `kubectl scale` 3 → 5 → 2 (the scale subresource) is followed with the zone spread
/// kept, and a new schedule reaches the CronJob and, by a rollout, the pods.
async fn scale_and_schedule(env: &Env) -> TestResult {
    for replicas in [5usize, 2] {
        let arg = format!("--replicas={replicas}");
        kubectl(env, &["scale", "cachecluster", NAME, "-n", NS, &arg]).await?;
        let pods = wait_settled(env, replicas).await?;
        check_spread(env, &pods).await?;
    }
    let patch = r#"{"spec":{"expiry":{"schedule":"*/2 * * * *"}}}"#;
    kubectl(
        env,
        &[
            "patch",
            "cachecluster",
            NAME,
            "-n",
            NS,
            "--type=merge",
            "-p",
            patch,
        ],
    )
    .await?;
    wait_for("the CronJob to follow the schedule", TIMEOUT, async || {
        let cron = api::<CronJob>(env)
            .get("demo-janitor")
            .await
            .map_err(|e| e.to_string())?;
        let schedule = cron.spec.map(|s| s.schedule).unwrap_or_default();
        if schedule == "*/2 * * * *" {
            Ok(Some(()))
        } else {
            Err(schedule)
        }
    })
    .await?;
    wait_for(
        "the pods to run with the new schedule",
        TIMEOUT,
        async || {
            let pods = wait_settled(env, 2).await?;
            let stale: Vec<&String> = pods
                .iter()
                .filter(|(_, p)| {
                    let args = p
                        .spec
                        .as_ref()
                        .and_then(|s| s.containers.first())
                        .and_then(|c| c.args.clone())
                        .unwrap_or_default();
                    !args.iter().any(|a| a == "--schedule=*/2 * * * *")
                })
                .map(|(n, _)| n)
                .collect();
            if stale.is_empty() {
                Ok(Some(()))
            } else {
                Err(format!("old schedule on {stale:?}"))
            }
        },
    )
    .await?;
    let cc = cache_cluster(env, NAME).await?;
    let schedule = cc["status"]["schedule"].as_str().unwrap_or_default();
    if !schedule.starts_with("*/2 * * * *") {
        return Err(format!("status.schedule {schedule:?}"));
    }
    Ok(())
}

/// A deleted CronJob comes back; an edited StatefulSet is put back.
async fn drift(env: &Env) -> TestResult {
    let crons = api::<CronJob>(env);
    let old = crons.get("demo-janitor").await.map_err(|e| e.to_string())?;
    kubectl(
        env,
        &[
            "delete",
            "cronjob",
            "demo-janitor",
            "-n",
            NS,
            "--wait=false",
        ],
    )
    .await?;
    wait_for("the CronJob to be recreated", TIMEOUT, async || {
        let now = crons
            .get_opt("demo-janitor")
            .await
            .map_err(|e| e.to_string())?;
        Ok(now.filter(|c| c.uid() != old.uid() && c.metadata.deletion_timestamp.is_none()))
    })
    .await?;
    let patch = r#"{"spec":{"template":{"spec":{"terminationGracePeriodSeconds":5}}}}"#;
    kubectl(
        env,
        &[
            "patch",
            "statefulset",
            NAME,
            "-n",
            NS,
            "--type=merge",
            "-p",
            patch,
        ],
    )
    .await?;
    wait_for("the StatefulSet edit to be undone", TIMEOUT, async || {
        let sts = api::<StatefulSet>(env)
            .get(NAME)
            .await
            .map_err(|e| e.to_string())?;
        let grace = sts
            .spec
            .and_then(|s| s.template.spec)
            .and_then(|s| s.termination_grace_period_seconds);
        if grace == Some(60) {
            Ok(Some(()))
        } else {
            Err(format!("grace {grace:?}"))
        }
    })
    .await?;
    wait_settled(env, 2).await.map(drop)
}

/// Taking a pod's veth down (how a zone will be cut off) fails its readiness probe:
/// the pod turns NotReady and the CacheCluster counts one ready replica less; back up,
/// it is Ready again without a restart.
async fn network_cut(env: &Env) -> TestResult {
    let pods = wait_settled(env, 2).await?;
    let (name, pod) = pods.iter().next().ok_or("no cache pod")?;
    let uid = pod.uid().unwrap_or_default();
    let address = env
        .cluster
        .kubelet()
        .pod_address(&uid)
        .ok_or_else(|| format!("the kubelet has no network namespace for {name}"))?;
    let network = env.cluster.network();
    network
        .set_link(&address, false)
        .map_err(|e| e.to_string())?;
    let cut = wait_for(&format!("{name} to turn NotReady"), TIMEOUT, async || {
        let now = api::<Pod>(env).get(name).await.map_err(|e| e.to_string())?;
        let cc = cache_cluster(env, NAME).await?;
        let ready = cc["status"]["readyReplicas"].as_u64();
        if !is_ready(&now) && ready == Some(1) {
            Ok(Some(()))
        } else {
            Err(format!(
                "pod ready {}, CacheCluster readyReplicas {ready:?}",
                is_ready(&now)
            ))
        }
    })
    .await;
    // Reconnect whatever happened, so that a failure here does not cascade.
    network
        .set_link(&address, true)
        .map_err(|e| e.to_string())?;
    cut?;
    let pods = wait_settled(env, 2).await?;
    let restarts = pods[name]
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|c| c.first())
        .map_or(0, |c| c.restart_count);
    if restarts != 0 {
        return Err(format!(
            "{name} restarted {restarts} times during a short cut"
        ));
    }
    Ok(())
}

/// A CacheCluster breaking a CEL rule is refused by `kubectl apply` with its message.
async fn invalid_refused(env: &Env) -> TestResult {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let file = dir.path().join("invalid.yaml");
    let manifest = "apiVersion: tidecache.io/v1alpha1\nkind: CacheCluster\nmetadata:\n  name: invalid\n  namespace: default\nspec:\n  expiry:\n    defaultTTL: 2h\n    maxTTL: 1h\n";
    std::fs::write(&file, manifest).map_err(|e| e.to_string())?;
    match kubectl(env, &["apply", "-f", &file.to_string_lossy()]).await {
        Ok(out) => Err(format!("an invalid CacheCluster was accepted: {out}")),
        Err(e) if e.contains("expiry.defaultTTL must not be longer than expiry.maxTTL") => {
            let absent = kubectl(env, &["get", "cacheclusters", "-n", NS, "-o", "name"]).await?;
            if absent.contains("invalid") {
                Err("the refused CacheCluster exists".into())
            } else {
                Ok(())
            }
        }
        Err(e) => Err(format!("refused without the rule's message: {e}")),
    }
}

/// Deleting the CacheCluster lets the real garbage collector remove every child; the
/// claim stays with `reclaimPolicy: Retain` (the default) and goes with `Delete`.
async fn garbage_collected(env: &Env) -> TestResult {
    kubectl(
        env,
        &["delete", "cachecluster", NAME, "-n", NS, "--wait=false"],
    )
    .await?;
    wait_for(
        "the children to be garbage collected",
        TIMEOUT,
        async || {
            let mut left = Vec::new();
            if api::<StatefulSet>(env)
                .get_opt(NAME)
                .await
                .map_err(|e| e.to_string())?
                .is_some()
            {
                left.push("StatefulSet");
            }
            for svc in [NAME, "demo-peers"] {
                if api::<Service>(env)
                    .get_opt(svc)
                    .await
                    .map_err(|e| e.to_string())?
                    .is_some()
                {
                    left.push("Service");
                }
            }
            if api::<CronJob>(env)
                .get_opt("demo-janitor")
                .await
                .map_err(|e| e.to_string())?
                .is_some()
            {
                left.push("CronJob");
            }
            if api::<PodDisruptionBudget>(env)
                .get_opt(NAME)
                .await
                .map_err(|e| e.to_string())?
                .is_some()
            {
                left.push("PodDisruptionBudget");
            }
            if api::<ServiceAccount>(env)
                .get_opt("demo-cache")
                .await
                .map_err(|e| e.to_string())?
                .is_some()
            {
                left.push("ServiceAccount");
            }
            if !cache_pods(env).await?.is_empty() {
                left.push("pods");
            }
            if left.is_empty() {
                Ok(Some(()))
            } else {
                Err(format!("left: {left:?}"))
            }
        },
    )
    .await?;
    let claims = api::<PersistentVolumeClaim>(env);
    if claims
        .get_opt("demo-data")
        .await
        .map_err(|e| e.to_string())?
        .is_none()
    {
        return Err("the retained claim demo-data was deleted".into());
    }

    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let file = dir.path().join("reclaim.yaml");
    let manifest = "apiVersion: tidecache.io/v1alpha1\nkind: CacheCluster\nmetadata:\n  name: scratch\n  namespace: default\nspec:\n  replicas: 1\n  persistence:\n    reclaimPolicy: Delete\n";
    std::fs::write(&file, manifest).map_err(|e| e.to_string())?;
    kubectl(env, &["apply", "-f", &file.to_string_lossy()]).await?;
    wait_for("the owned claim scratch-data", TIMEOUT, async || {
        claims
            .get_opt("scratch-data")
            .await
            .map_err(|e| e.to_string())
    })
    .await?;
    kubectl(
        env,
        &[
            "delete",
            "cachecluster",
            "scratch",
            "-n",
            NS,
            "--wait=false",
        ],
    )
    .await?;
    wait_for(
        "the owned claim to be garbage collected",
        TIMEOUT,
        async || {
            let claim = claims
                .get_opt("scratch-data")
                .await
                .map_err(|e| e.to_string())?;
            let sts = api::<StatefulSet>(env)
                .get_opt("scratch")
                .await
                .map_err(|e| e.to_string())?;
            match (claim, sts) {
                (None, None) => Ok(Some(())),
                (claim, sts) => Err(format!(
                    "claim left: {}, StatefulSet left: {}",
                    claim.is_some(),
                    sts.is_some()
                )),
            }
        },
    )
    .await
}
