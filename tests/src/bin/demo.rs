//! `make demo`: the local cluster with the operator from `deploy/` and the sample
//! CacheCluster, running until Ctrl-C, with instructions for reaching the cache and for
//! using kubectl against the cluster.

use std::io::Write as _;
use std::net::IpAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Pod, Service};
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use tidecache_e2e::cluster::LocalCluster;
use tidecache_e2e::console::{flush, say};
use tidecache_e2e::control_plane::{Error, wait_for_teardown};
use tidecache_e2e::hosts::HostEntries;

const NAMESPACE: &str = "default";
const SELECTOR: &str = "app.kubernetes.io/instance=demo,app.kubernetes.io/component=cache";
/// The sample's client Service, as applications address it.
const SERVICE: &str = "demo.default.svc.cluster.local";

#[tokio::main]
async fn main() -> ExitCode {
    let result = run().await;
    // A Ctrl-C during startup makes `run` fail as the components go; the signal
    // handler is still tearing down then and exits the process itself when done.
    wait_for_teardown();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            say(format!("demo: {e}"));
            flush(Duration::from_secs(1));
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), Error> {
    say("demo: starting the local cluster (the first run builds Kubernetes, ~10 min)");
    let cluster = LocalCluster::start_routed().await?;
    say("demo: kubectl apply -k deploy/");
    cluster.deploy_operator(Duration::from_secs(180)).await?;
    let sample = LocalCluster::deploy_dir().join("samples/minimal.yaml");
    say(format!("demo: kubectl apply -f {}", sample.display()));
    cluster
        .plane()
        .kubectl(&["apply", "-f", &sample.to_string_lossy()])
        .await?;
    let pods = wait_ready(&cluster, 3, Duration::from_secs(180)).await?;

    let kubeconfig = cluster.plane().admin_kubeconfig().display().to_string();
    let kubectl = cluster
        .plane()
        .binaries()
        .path("kubectl")
        .display()
        .to_string();
    let table = cluster
        .plane()
        .kubectl(&["get", "cacheclusters,pods", "-n", NAMESPACE, "-o", "wide"])
        .await?;
    let first = pods.first().map(|(_, ip)| ip.clone()).unwrap_or_default();
    let gateway = cluster.network().gateway();
    let service = service_ip(&cluster, "demo").await?;
    // Held until the process ends (the signal handler removes the line on Ctrl-C).
    let _names = HostEntries::add(&[(service, SERVICE.to_string())])?;
    let banner = format!(
        "\n\
The cache Service: {SERVICE} (ClusterIP {service}, routed by kube-proxy
to the ready pods; the name is in /etc/hosts while the demo runs, and pods resolve it through
the cluster DNS), HTTP on 8080, the Redis protocol on 6379:
  curl -X PUT --data-binary 'hello' 'http://{SERVICE}:8080/v1/keys/greeting?ttl=10m'
  curl http://{SERVICE}:8080/v1/keys/greeting
  redis-cli -h {SERVICE} -p 6379 GET greeting

The local cluster is up: a real kube-apiserver, controller manager, scheduler and kube-proxy,
3 zones x 2 fake nodes, the tidecache operator from deploy/ and the sample CacheCluster `demo`.

{table}
kubectl (the one built for this cluster, v1.37):
  export KUBECONFIG={kubeconfig}
  alias kubectl={kubectl}
  kubectl get cacheclusters            # printer columns: replicas, ready, zones, schedule
  kubectl describe cachecluster demo   # conditions and events
  kubectl scale cachecluster demo --replicas=5

Each pod also serves on its own IP, and writes are replicated to the others:
{pod_lines}
  curl http://{first}:8080/v1/keys/greeting
  curl http://{first}:8080/metrics

Cluster DNS for the pods is at {gateway}:53 (e.g. demo-peers.default.svc.cluster.local).
Pod output is under {}/pods/<namespace>_<pod>_<uid>/logs/, the kubelet's log in {}.

Press Ctrl-C to stop and remove everything.",
        cluster.kubelet().dir().display(),
        cluster.kubelet().log_path().display(),
        pod_lines = pods
            .iter()
            .map(|(name, ip)| format!("  {name}  http://{ip}:8080"))
            .collect::<Vec<_>>()
            .join("\n"),
    );
    // A failed write (e.g. `| tee` gone) must not end the demo: Ctrl-C still has to
    // reach the teardown, and what was not printed is in `kubectl get` anyway.
    let _printed = writeln!(std::io::stdout().lock(), "{banner}");
    // Ctrl-C is handled by the harness: it stops every process group, deletes the
    // pods' network namespaces, the bridge and the temp dirs, and exits.
    std::future::pending::<()>().await;
    Ok(())
}

/// The ClusterIP of the Service `name` in the demo's namespace.
async fn service_ip(cluster: &LocalCluster, name: &str) -> Result<IpAddr, Error> {
    let services: Api<Service> = Api::namespaced(cluster.client().await?, NAMESPACE);
    let service = services.get(name).await.map_err(|source| Error::Api {
        context: format!("reading the Service {name}"),
        source,
    })?;
    let ip = service.spec.and_then(|s| s.cluster_ip).unwrap_or_default();
    ip.parse().map_err(|e| Error::Io {
        context: format!("the ClusterIP of the Service {name}"),
        source: std::io::Error::other(format!("{ip:?}: {e}")),
    })
}

/// Waits until `replicas` cache pods are Ready; returns (name, IP) of each.
async fn wait_ready(
    cluster: &LocalCluster,
    replicas: usize,
    timeout: Duration,
) -> Result<Vec<(String, String)>, Error> {
    let pods: Api<Pod> = Api::namespaced(cluster.client().await?, NAMESPACE);
    let start = Instant::now();
    loop {
        let list = pods
            .list(&ListParams::default().labels(SELECTOR))
            .await
            .map_err(|source| Error::Api {
                context: "listing the cache pods".into(),
                source,
            })?;
        let ready: Vec<(String, String)> = list
            .items
            .iter()
            .filter(|p| {
                p.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
            })
            .map(|p| {
                let ip = p
                    .status
                    .as_ref()
                    .and_then(|s| s.pod_ip.clone())
                    .unwrap_or_default();
                (p.name_any(), ip)
            })
            .collect();
        if ready.len() >= replicas {
            let mut ready = ready;
            ready.sort();
            return Ok(ready);
        }
        if start.elapsed() > timeout {
            return Err(Error::Timeout {
                what: format!("{replicas} ready cache pods"),
                waited: timeout,
                last: format!("{} ready of {}", ready.len(), list.items.len()),
            });
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
