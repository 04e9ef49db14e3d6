//! Installing: the operator from `deploy/` under its own ServiceAccount, the sample's
//! children as the operator builds them, what kubectl shows of a CacheCluster, and a
//! CacheCluster the CRD's rules refuse.

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::RoleBinding;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;
use kube::api::ListParams;
use tidecache_e2e::cluster::{OPERATOR_DEPLOYMENT, OPERATOR_NAMESPACE};
use tidecache_e2e::control_plane::ZONE_LABEL;

use crate::suite::Env;
use crate::support::{DEMO, TIMEOUT, TestResult, api, apply, is_ready, kubectl, wait_for};

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
/// ServiceAccount and its RoleBinding, each as the operator builds it and owned by the
/// CacheCluster (the claim excepted: `Retain`).
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
    owned(&binding.metadata)
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
            if header != ["NAME", "REPLICAS", "READY", "ZONES", "SCHEDULE", "AGE"] {
                return Err(format!("header {header:?}"));
            }
            let row = out
                .lines()
                .find(|l| l.split_whitespace().next() == Some(DEMO.name))
                .unwrap_or_default()
                .to_owned();
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

/// A CacheCluster breaking a CEL rule is refused by `kubectl apply` with its message.
pub async fn invalid_refused(env: &Env) -> TestResult {
    let manifest = "apiVersion: tidecache.io/v1alpha1\nkind: CacheCluster\nmetadata:\n  name: invalid\n  namespace: default\nspec:\n  expiry:\n    defaultTTL: 2h\n    maxTTL: 1h\n";
    match apply(env, manifest).await {
        Ok(out) => Err(format!("an invalid CacheCluster was accepted: {out}")),
        Err(e) if e.contains("expiry.defaultTTL must not be longer than expiry.maxTTL") => {
            let names = kubectl(env, &["get", "cacheclusters", "-A", "-o", "name"]).await?;
            if names.contains("/invalid") {
                Err("the refused CacheCluster exists".into())
            } else {
                Ok(())
            }
        }
        Err(e) => Err(format!("refused without the rule's message: {e}")),
    }
}
