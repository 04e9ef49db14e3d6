//! Installing: the operator from `deploy/` under its own ServiceAccount, the sample's
//! children as the operator builds them, what kubectl shows of a CacheCluster, and a
//! CacheCluster the CRD's rules refuse.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::{Namespace, PersistentVolumeClaim, Pod, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicyPeer};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::RoleBinding;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use tidecache_e2e::cluster::{OPERATOR_DEPLOYMENT, OPERATOR_NAMESPACE};
use tidecache_e2e::control_plane::ZONE_LABEL;

use crate::suite::Env;
use crate::support::{
    DEMO, RESTRICTED_LABEL, TIMEOUT, TestResult, api, apply, is_ready, kubectl, wait_for,
};

/// `kubectl apply -k deploy/`: the operator's pods run through the kubelet with a
/// token of their ServiceAccount `tidecache-operator` (minted by TokenRequest), so
/// everything the operator does in the other scenarios is allowed by the shipped RBAC
/// alone.
pub async fn operator_from_deploy(env: &Env) -> TestResult {
    let pods = api::<Pod>(env, OPERATOR_NAMESPACE)
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
    let can = async |verb: &str, resource: &str| {
        let out = kubectl(
            env,
            &["auth", "can-i", verb, resource, "-n", DEMO.namespace, &who],
        )
        .await;
        matches!(out, Ok(o) if o.trim() == "yes")
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

/// The sample becomes a StatefulSet, two Services, the PVC, the CronJob, the PDB, a
/// ServiceAccount and its RoleBinding and a NetworkPolicy, each as the operator builds it and
/// owned by the CacheCluster (the claim excepted: `Retain`).
pub async fn sample_children(env: &Env) -> TestResult {
    let ns = DEMO.namespace;
    let cc = wait_for("the CacheCluster to be observed", TIMEOUT, async || {
        let cc = DEMO.get(env).await?;
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
        api::<StatefulSet>(env, ns)
            .get_opt(DEMO.name)
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
    let services = api::<Service>(env, ns);
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
    let client_svc = services.get(DEMO.name).await.map_err(|e| e.to_string())?;
    owned(&client_svc.metadata)?;
    let ports = client_svc.spec.and_then(|s| s.ports).unwrap_or_default();
    if !ports.iter().any(|p| p.port == 8080) {
        return Err(format!("client Service ports {ports:?}"));
    }
    let pvc = wait_for("the claim to be Bound", TIMEOUT, async || {
        let pvc = api::<PersistentVolumeClaim>(env, ns)
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
    let cron = api::<CronJob>(env, ns)
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
    let pdb = api::<PodDisruptionBudget>(env, ns)
        .get(DEMO.name)
        .await
        .map_err(|e| e.to_string())?;
    owned(&pdb.metadata)?;
    let max_unavailable = pdb.spec.and_then(|s| s.max_unavailable);
    if max_unavailable != Some(IntOrString::Int(1)) {
        return Err(format!("PDB maxUnavailable {max_unavailable:?}"));
    }
    let account = api::<ServiceAccount>(env, ns)
        .get("demo-cache")
        .await
        .map_err(|e| e.to_string())?;
    owned(&account.metadata)?;
    let binding = api::<RoleBinding>(env, ns)
        .get("demo-cache")
        .await
        .map_err(|e| e.to_string())?;
    owned(&binding.metadata)?;
    network_policy(env, &owned).await
}

/// The apiserver accepted the sample's NetworkPolicy as built: ingress only, to the cache
/// pods, from the cluster's own pods on every port they serve, from the own namespace on the
/// client ports and on the HTTP port for `/metrics`. (No network plugin enforces it here.)
async fn network_policy(
    env: &Env,
    owned: &impl Fn(&kube::api::ObjectMeta) -> TestResult,
) -> TestResult {
    let policy = api::<NetworkPolicy>(env, DEMO.namespace)
        .get(DEMO.name)
        .await
        .map_err(|e| e.to_string())?;
    owned(&policy.metadata)?;
    let spec = policy.spec.unwrap_or_default();
    let cache_pods = BTreeMap::from([
        (
            "app.kubernetes.io/component".to_string(),
            "cache".to_string(),
        ),
        (
            "app.kubernetes.io/instance".to_string(),
            DEMO.name.to_string(),
        ),
        (
            "app.kubernetes.io/name".to_string(),
            "tidecache".to_string(),
        ),
    ]);
    let own_namespace = format!("kubernetes.io/metadata.name In [{}]", DEMO.namespace);
    let peer = |peer: &NetworkPolicyPeer| match (&peer.pod_selector, &peer.namespace_selector) {
        (Some(pods), None) if pods.match_labels.as_ref() == Some(&cache_pods) => {
            "cache pods".to_string()
        }
        (None, Some(namespaces)) => namespaces
            .match_expressions
            .iter()
            .flatten()
            .map(|e| {
                format!(
                    "{} {} {:?}",
                    e.key,
                    e.operator,
                    e.values.clone().unwrap_or_default()
                )
            })
            .collect::<Vec<_>>()
            .join(",")
            .replace('"', ""),
        _ => format!("{peer:?}"),
    };
    let rules: Vec<(Vec<String>, Vec<IntOrString>)> = spec
        .ingress
        .iter()
        .flatten()
        .map(|rule| {
            let from = rule.from.iter().flatten().map(peer).collect();
            let ports = rule
                .ports
                .iter()
                .flatten()
                .filter_map(|p| p.port.clone())
                .collect();
            (from, ports)
        })
        .collect();
    let (http, redis) = (IntOrString::Int(8080), IntOrString::Int(6379));
    let want = vec![
        (
            vec!["cache pods".to_string()],
            vec![http.clone(), redis.clone()],
        ),
        (vec![own_namespace.clone()], vec![http.clone(), redis]),
        (vec![own_namespace], vec![http]),
    ];
    let selects_cache_pods = spec.pod_selector.and_then(|s| s.match_labels) == Some(cache_pods);
    if !selects_cache_pods || spec.policy_types != Some(vec!["Ingress".into()]) || rules != want {
        return Err(format!("NetworkPolicy rules {rules:?}, want {want:?}"));
    }
    Ok(())
}

/// `kubectl get cacheclusters` shows the printer columns with true values and
/// `kubectl describe` the conditions and the operator's Events.
pub async fn printer_columns(env: &Env) -> TestResult {
    let ns = DEMO.namespace;
    DEMO.wait_settled(env, 3).await?;
    let table = wait_for(
        "printer columns with 3 ready in 3 zones",
        TIMEOUT,
        async || {
            let out = kubectl(env, &["get", "cacheclusters", "-n", ns]).await?;
            let header: Vec<&str> = out
                .lines()
                .next()
                .unwrap_or_default()
                .split_whitespace()
                .collect();
            if header
                != [
                    "NAME", "REPLICAS", "READY", "ZONES", "MODE", "SCHEDULE", "STATUS", "AGE",
                ]
            {
                return Err(format!("header {header:?}"));
            }
            let row = out
                .lines()
                .find(|l| l.split_whitespace().next() == Some(DEMO.name))
                .unwrap_or_default()
                .to_owned();
            let cells: Vec<&str> = row.split_whitespace().collect();
            let ok = cells.len() >= 7
                && cells[..5] == ["demo", "3", "3", "3", "Full"]
                && row.contains("* * * * * (UTC)   Ready");
            if ok {
                Ok(Some(out))
            } else {
                Err(format!("row {row:?}"))
            }
        },
    )
    .await?;
    let short = kubectl(env, &["get", "tcc", DEMO.name, "-n", ns, "-o", "name"]).await?;
    if short.trim() != "cachecluster.tidecache.io/demo" {
        return Err(format!("short name tcc lists {short:?}; table was {table}"));
    }
    let described = kubectl(env, &["describe", "cachecluster", DEMO.name, "-n", ns]).await?;
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

/// A CacheCluster breaking a CEL rule, and one breaking each check only the operator can
/// make (the schedule and time zone by the contract crate, the capacity against the memory
/// limit), are refused by `kubectl apply` with the message the status would show; none is
/// stored. The webhook's refusals name the webhook; an update to a valid stored cluster is
/// refused the same way, and the stored spec is unchanged.
pub async fn invalid_refused(env: &Env) -> TestResult {
    const WEBHOOK: &str = "admission webhook \"cacheclusters.tidecache.io\" denied the request";
    let cases: [(&str, &str, &str); 6] = [
        (
            "expiry:\n    defaultTTL: 2h\n    maxTTL: 1h",
            "expiry.defaultTTL must not be longer than expiry.maxTTL",
            "The CacheCluster \"invalid\" is invalid",
        ),
        (
            "expiry:\n    schedule: \"61 * * * *\"",
            "spec.expiry.schedule: the minute field \"61\" is invalid",
            WEBHOOK,
        ),
        (
            "expiry:\n    schedule: \"@every 5m\"",
            "spec.expiry.schedule: \"@every 5m\" is not a supported macro",
            WEBHOOK,
        ),
        (
            "expiry:\n    schedule: \"0 0 30 2 *\"",
            "spec.expiry.schedule: the schedule \"0 0 30 2 *\" never fires within",
            WEBHOOK,
        ),
        (
            "expiry:\n    timeZone: Mars/Olympus",
            "spec.expiry.timeZone: unknown time zone \"Mars/Olympus\"",
            WEBHOOK,
        ),
        (
            "memory:\n    capacity: 1Pi\n  resources:\n    limits:\n      memory: 512Mi",
            "spec.memory.capacity: memory.capacity 1Pi (1125899906842624 bytes) is above the \
             cache container's memory limit 512Mi",
            WEBHOOK,
        ),
    ];
    for (spec, message, by) in cases {
        let manifest = format!(
            "apiVersion: tidecache.io/v1alpha1\nkind: CacheCluster\nmetadata:\n  name: invalid\n  \
             namespace: default\nspec:\n  {spec}\n"
        );
        match apply(env, &manifest).await {
            Ok(out) => return Err(format!("an invalid CacheCluster was accepted: {out}")),
            Err(e) if e.contains(message) && e.contains(by) => {}
            Err(e) => return Err(format!("refused without {message:?} from {by}: {e}")),
        }
        let names = kubectl(env, &["get", "cacheclusters", "-A", "-o", "name"]).await?;
        if names.contains("/invalid") {
            return Err(format!("the refused CacheCluster exists ({spec})"));
        }
    }
    // An update of the stored sample is checked too, and refused without touching it.
    let patch = r#"{"spec":{"expiry":{"timeZone":"Mars/Olympus"}}}"#;
    match kubectl(
        env,
        &[
            "patch",
            "cachecluster",
            DEMO.name,
            "-n",
            DEMO.namespace,
            "--type=merge",
            "-p",
            patch,
        ],
    )
    .await
    {
        Ok(out) => Err(format!("a bad update was accepted: {out}")),
        Err(e) if e.contains(WEBHOOK) && e.contains("Mars/Olympus") => {
            let zone = kubectl(
                env,
                &[
                    "get",
                    "cachecluster",
                    DEMO.name,
                    "-n",
                    DEMO.namespace,
                    "-o",
                    "jsonpath={.spec.expiry.timeZone}",
                ],
            )
            .await?;
            if zone.contains("Mars") {
                Err(format!("the refused update was stored: timeZone {zone}"))
            } else {
                Ok(())
            }
        }
        Err(e) => Err(format!(
            "the bad update was refused, but not by the webhook: {e}"
        )),
    }
}

/// Every namespace the operator's pods and the sample's run in enforces the restricted Pod
/// Security Standard (the apiserver's PodSecurity admission, on by default, refuses a
/// breaking pod), and the operator's two pods, the sample's three cache pods and a janitor
/// Job's pod were all admitted there.
pub async fn pod_security_restricted(env: &Env) -> TestResult {
    let (key, value) = RESTRICTED_LABEL.split_once('=').unwrap_or_default();
    for ns in [OPERATOR_NAMESPACE, DEMO.namespace] {
        let labels = Api::<Namespace>::all(env.client.clone())
            .get(ns)
            .await
            .map_err(|e| e.to_string())?
            .metadata
            .labels
            .unwrap_or_default();
        if labels.get(key).map(String::as_str) != Some(value) {
            return Err(format!(
                "namespace {ns} lacks {RESTRICTED_LABEL}: {labels:?}"
            ));
        }
    }
    // Enforcement is live: a pod with no security context is refused, not stored.
    let root_pod = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: root-pod\n  namespace: {}\nspec:\n  \
         containers:\n    - name: c\n      image: ghcr.io/tidecache/cache-node:0.1.0\n",
        DEMO.namespace
    );
    match apply_dry_run(env, &root_pod).await {
        Ok(out) => return Err(format!("a pod breaking restricted was admitted: {out}")),
        Err(e) if e.contains("violates PodSecurity \"restricted:latest\"") => {}
        Err(e) => return Err(format!("refused, but not by PodSecurity: {e}")),
    }
    DEMO.wait_settled(env, 3).await?;
    let operators = api::<Pod>(env, OPERATOR_NAMESPACE)
        .list(&ListParams::default().labels("app.kubernetes.io/component=operator"))
        .await
        .map_err(|e| e.to_string())?;
    if operators.items.len() != 2 {
        return Err(format!("{} operator pods, want 2", operators.items.len()));
    }
    // What runs is restricted too, as the kernel sees it: the runtime enforced each
    // container's securityContext, and the operator's memory limit (deploy/operator.yaml).
    let caches = DEMO.pods(env).await?;
    let running = caches.values().map(|p| (p, "cache-node", None)).chain(
        operators
            .items
            .iter()
            .map(|p| (p, "operator", Some(256 * 1024 * 1024))),
    );
    for (pod, container, memory_limit) in running {
        enforced(env, pod, container, memory_limit)?;
    }
    wait_for("a janitor Job's pod", TIMEOUT, async || {
        let pods = api::<Pod>(env, DEMO.namespace)
            .list(&ListParams::default().labels(&format!(
                "app.kubernetes.io/instance={},app.kubernetes.io/component=janitor",
                DEMO.name
            )))
            .await
            .map_err(|e| e.to_string())?;
        if pods.items.is_empty() {
            Err("no janitor Job's pod has been admitted yet".into())
        } else {
            Ok(Some(()))
        }
    })
    .await
}

/// Checks, from `/proc` of the container's first process, what the restricted
/// securityContext asks: uid/gid 65532, no capabilities (effective or bounding), no new
/// privileges, a seccomp filter, a read-only root; and the cgroup memory limit the
/// container itself sees, if one is given.
fn enforced(env: &Env, pod: &Pod, container: &str, memory_limit: Option<u64>) -> TestResult {
    let name = pod.name_any();
    let uid = pod.uid().unwrap_or_default();
    let pid = env
        .cluster
        .kubelet()
        .container_pid(&uid, container)
        .ok_or_else(|| format!("{name}: container {container} is not running"))?;
    let proc = std::path::PathBuf::from(format!("/proc/{pid}"));
    let read = |file: &str| {
        std::fs::read_to_string(proc.join(file)).map_err(|e| format!("{name}: {file}: {e}"))
    };
    let status = read("status")?;
    let field = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{key}:")))
            .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
            .unwrap_or_default()
    };
    let expected = [
        ("Uid", "65532 65532 65532 65532"),
        ("Gid", "65532 65532 65532 65532"),
        ("CapEff", "0000000000000000"),
        ("CapBnd", "0000000000000000"),
        ("NoNewPrivs", "1"),
        ("Seccomp", "2"),
    ];
    for (key, want) in expected {
        let got = field(key);
        if got != want {
            return Err(format!(
                "{name}/{container}: {key} is {got:?}, want {want:?}"
            ));
        }
    }
    let mountinfo = read("mountinfo")?;
    let root_read_only = mountinfo.lines().any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        fields.get(4) == Some(&"/")
            && fields
                .get(5)
                .is_some_and(|o| o.split(',').any(|x| x == "ro"))
    });
    if !root_read_only {
        return Err(format!(
            "{name}/{container}: the root file system is writable"
        ));
    }
    if let Some(want) = memory_limit {
        // The container's own view of its cgroup, as cache-node reads it.
        let got = read("root/sys/fs/cgroup/memory.max")
            .or_else(|_| read("root/sys/fs/cgroup/memory/memory.limit_in_bytes"))?;
        if got.trim() != want.to_string() {
            return Err(format!(
                "{name}/{container}: cgroup memory limit {}, want {want}",
                got.trim()
            ));
        }
    }
    Ok(())
}

/// `kubectl apply --dry-run=server`: admission runs in full, nothing is stored.
async fn apply_dry_run(env: &Env, manifest: &str) -> TestResult<String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let file = dir.path().join("manifest.yaml");
    std::fs::write(&file, manifest).map_err(|e| e.to_string())?;
    kubectl(
        env,
        &["apply", "--dry-run=server", "-f", &file.to_string_lossy()],
    )
    .await
}
