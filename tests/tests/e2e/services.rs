//! Applications reach the cache through its Service, as they do in a real cluster: kube-proxy
//! (from the same Kubernetes build) routes the ClusterIP, the cluster DNS answers
//! `<name>.<ns>.svc.cluster.local`, and connections are spread over the ready pods.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, Service};
use kube::ResourceExt;
use kube::api::{DeleteParams, PostParams};
use serde_json::json;
use tidecache_e2e::http;

use crate::suite::Env;
use crate::support::{DEMO, TIMEOUT, TestResult, api, get, pod_addr, put, wait_for};

/// Requests sent through the ClusterIP: with 3 pods, the chance that one pod gets none of
/// 30 independent picks is 3 × (2/3)^30 ≈ 1.6e-5.
const SPREAD_REQUESTS: usize = 30;

/// From the host: PUT and GET through the client Service's ClusterIP on 8080; the requests
/// reach every ready pod (each pod's own request counter rises). From a pod: an application
/// container resolves `demo.default.svc.cluster.local` through the cluster DNS and reads the
/// entry over HTTP (8080) and the Redis protocol (6379), then writes one over RESP that the
/// host reads back through the Service.
pub async fn services_routed(env: &Env) -> TestResult {
    DEMO.wait_settled(env, 3).await?;
    let service = api::<Service>(env, DEMO.namespace)
        .get(DEMO.name)
        .await
        .map_err(|e| format!("reading Service {}: {e}", DEMO.name))?;
    let cluster_ip: IpAddr = service
        .spec
        .as_ref()
        .and_then(|s| s.cluster_ip.as_deref())
        .ok_or("the client Service has no ClusterIP")?
        .parse()
        .map_err(|e| format!("the ClusterIP: {e}"))?;
    let through_service = SocketAddr::new(cluster_ip, 8080);
    put(through_service, "routed", "through-the-service").await?;
    // The GET may reach another pod than the PUT did, before replication got there.
    wait_for(
        "the entry read back through the Service",
        Duration::from_secs(10),
        async || {
            let (status, body) = get(through_service, "routed").await?;
            if status == 200 && body == "through-the-service" {
                Ok(Some(()))
            } else {
                Err(format!("GET through {through_service}: {status} {body}"))
            }
        },
    )
    .await?;

    // kube-proxy adds a pod to the Service's rules once the EndpointSlice lists it as ready,
    // a second or so after the pod turned ready; rounds of requests go on until every pod
    // has served some.
    let pods = DEMO.pods(env).await?;
    let before = request_counts(&pods).await?;
    let mut rounds = 0;
    let reached = wait_for(
        "requests through the Service on every pod",
        Duration::from_secs(60),
        async || {
            rounds += 1;
            for _ in 0..SPREAD_REQUESTS {
                get(through_service, "routed").await?;
            }
            let after = request_counts(&pods).await?;
            let reached: Vec<String> = pods
                .keys()
                .filter(|name| after.get(*name) > before.get(*name))
                .cloned()
                .collect();
            if reached.len() == pods.len() {
                Ok(Some(reached))
            } else {
                Err(format!(
                    "{SPREAD_REQUESTS} requests through {through_service} reached only {reached:?} \
                 of {:?}",
                    pods.keys().collect::<Vec<_>>()
                ))
            }
        },
    )
    .await?;

    let name = "service-client";
    let pods_api = api::<Pod>(env, DEMO.namespace);
    let script = r#"
        set -eu
        host=demo.default.svc.cluster.local
        python3 - "$host" <<'EOF'
import sys, urllib.request
body = urllib.request.urlopen(f"http://{sys.argv[1]}:8080/v1/keys/routed", timeout=5).read()
assert body == b"through-the-service", body
print("http ok")
EOF
        test "$(redis-cli -h "$host" -p 6379 GET routed)" = through-the-service
        echo "resp get ok"
        test "$(redis-cli -h "$host" -p 6379 SET from-a-pod hello EX 3600)" = OK
        echo "resp set ok"
    "#;
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": DEMO.namespace},
        "spec": {
            "restartPolicy": "Never",
            "securityContext": {
                "runAsNonRoot": true,
                "runAsUser": 65532,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [{
                "name": "client",
                "image": tidecache_e2e::kubelet::TOOLBOX,
                "command": ["/bin/sh", "-c", script],
                "securityContext": {
                    "allowPrivilegeEscalation": false,
                    "capabilities": {"drop": ["ALL"]},
                },
            }],
        },
    }))
    .map_err(|e| e.to_string())?;
    let _ = pods_api.delete(name, &DeleteParams::default()).await;
    wait_for("the previous client pod to be gone", TIMEOUT, async || {
        Ok(pods_api
            .get_opt(name)
            .await
            .map_err(|e| e.to_string())?
            .is_none()
            .then_some(()))
    })
    .await?;
    pods_api
        .create(&PostParams::default(), &pod)
        .await
        .map_err(|e| format!("creating the client pod: {e}"))?;
    let phase = wait_for("the client pod to finish", TIMEOUT, async || {
        let pod = pods_api.get(name).await.map_err(|e| e.to_string())?;
        let phase = pod.status.and_then(|s| s.phase).unwrap_or_default();
        Ok(matches!(phase.as_str(), "Succeeded" | "Failed").then_some(phase))
    })
    .await?;
    let log = env
        .cluster
        .kubelet()
        .container_log(DEMO.namespace, name, "client");
    if phase != "Succeeded" {
        return Err(format!("the client pod {phase}: {log}"));
    }
    wait_for(
        "the pod's RESP write read through the Service",
        Duration::from_secs(10),
        async || {
            let (status, body) = get(through_service, "from-a-pod").await?;
            if status == 200 && body == "hello" {
                Ok(Some(()))
            } else {
                Err(format!(
                    "the pod's RESP write, read through {through_service}: {status} {body}"
                ))
            }
        },
    )
    .await?;
    pods_api
        .delete(name, &DeleteParams::default())
        .await
        .map_err(|e| format!("deleting the client pod: {e}"))?;
    eprintln!(
        "Service {} at {cluster_ip}: {rounds} rounds of {SPREAD_REQUESTS} requests until they \
         reached all {} pods; the pod's client printed {:?}",
        service.name_any(),
        reached.len(),
        log.lines().collect::<Vec<_>>()
    );
    Ok(())
}

/// Each pod's count of key GETs (`tidecache_http_requests_total` of `GET /v1/keys/{key}`,
/// summed over status), read from the pod itself (not through the Service); the scrape itself
/// is another route, so reading the counts does not move them.
async fn request_counts(pods: &BTreeMap<String, Pod>) -> TestResult<BTreeMap<String, f64>> {
    let mut counts = BTreeMap::new();
    for (name, pod) in pods {
        let addr = pod_addr(pod)?;
        let metrics = http::request(addr, "GET", "/metrics", b"", Duration::from_secs(5))
            .await
            .map_err(|e| format!("GET /metrics on {name}: {e}"))?
            .text();
        let total: f64 = metrics
            .lines()
            .filter(|line| {
                line.starts_with("tidecache_http_requests_total")
                    && line.contains("route=\"/v1/keys/{key}\"")
                    && line.contains("method=\"GET\"")
            })
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        counts.insert(name.clone(), total);
    }
    Ok(counts)
}
