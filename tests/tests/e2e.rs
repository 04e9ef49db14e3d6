//! The end-to-end scenarios of issue 7, against one local cluster shared by all of them
//! (starting it is the expensive part): the real control plane, 3 zones × 2 fake nodes,
//! the test kubelet, and the operator installed from `deploy/` running as pods under
//! its own ServiceAccount, so the shipped RBAC is what is proven sufficient.
//!
//! The scenarios run in order in one test, most valuable first, each building on the
//! state the previous one left (the sample cluster `default/demo`); a failure names
//! the scenario and prints the kubelet's log and the pods.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};
use serde_json::Value;
use tidecache_e2e::cluster::{LocalCluster, OPERATOR_DEPLOYMENT, OPERATOR_NAMESPACE};
use tidecache_e2e::control_plane::ZONE_LABEL;

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
    let scenarios: [(&str, Scenario); 4] = [
        (
            "0 operator from deploy/ under its own ServiceAccount",
            |e| Box::pin(operator_from_deploy(e)),
        ),
        ("1 sample → children with the expected specs", |e| {
            Box::pin(children(e))
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
