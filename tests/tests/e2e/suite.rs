//! The cluster the scenarios share and the setup steps they need, each done once per
//! process, on first need: starting the local cluster, installing the operator from
//! `deploy/`, applying the sample. A step's result (also its failure) is kept, so a
//! scenario run alone sets up exactly what it needs, and a broken step fails every
//! scenario that needs it at once, with its error, instead of being retried by each.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::Instant;

use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::{Api, Client, ResourceExt};
use tidecache_e2e::cluster::LocalCluster;
use tokio::sync::OnceCell;

use crate::support::{DEMO, RESTRICTED_LABEL, TIMEOUT, TestResult, apply, kubectl, tail};

/// The running local cluster and an admin client of it.
pub struct Env {
    pub cluster: LocalCluster,
    pub client: Client,
}

/// The shared state a scenario needs before it starts. Every scenario needs the
/// operator at least: the CRD comes with it.
#[derive(Debug, Clone, Copy)]
pub enum Needs {
    /// The operator installed from `deploy/` and available.
    Operator,
    /// The operator, and the sample `default/demo` applied.
    Demo,
}

/// A scenario's body; it gets the cluster once what it [`Needs`] is set up.
pub type Body = for<'a> fn(&'a Env) -> Pin<Box<dyn Future<Output = TestResult> + 'a>>;

/// One end-to-end scenario: one named test.
pub struct Scenario {
    pub name: &'static str,
    pub needs: Needs,
    /// A namespace of its own, created before the scenario and deleted after it with
    /// everything in it, for scenarios whose changes (membership, deletion) would
    /// otherwise leak into the others.
    pub namespace: Option<&'static str>,
    pub body: Body,
}

/// The shared cluster and the setup steps done so far.
#[derive(Default)]
pub struct Suite {
    cluster: OnceCell<Result<Env, String>>,
    operator: OnceCell<TestResult>,
    demo: OnceCell<TestResult>,
}

impl Suite {
    /// Sets up what `scenario` needs, runs it, prints the diagnosis if it failed, and
    /// deletes its own namespace, if any.
    pub async fn run(&self, scenario: &Scenario) -> TestResult {
        let began = Instant::now();
        let env = self
            .prepare(scenario.needs)
            .await
            .map_err(|e| format!("setup failed: {e}"))?;
        let setup = began.elapsed();
        let result = match scenario.namespace {
            Some(ns) => match create_namespace(env, ns).await {
                Ok(()) => (scenario.body)(env).await,
                Err(e) => Err(format!("creating namespace {ns}: {e}")),
            },
            None => (scenario.body)(env).await,
        };
        let took = began.elapsed() - setup;
        match &result {
            Ok(()) => eprintln!(
                "=== {}: passed in {took:.1?} (setup {setup:.1?})",
                scenario.name
            ),
            Err(e) => {
                eprintln!(
                    "=== {}: FAILED after {took:.1?} (setup {setup:.1?}): {e}",
                    scenario.name
                );
                diagnose(env).await;
            }
        }
        if let Some(ns) = scenario.namespace
            && let Err(e) = kubectl(env, &["delete", "namespace", ns, "--wait=false"]).await
        {
            eprintln!("=== {}: deleting namespace {ns}: {e}", scenario.name);
        }
        result
    }

    async fn prepare(&self, needs: Needs) -> TestResult<&Env> {
        let env = self.env().await?;
        self.operator
            .get_or_init(|| timed("operator from deploy/", install_operator(env)))
            .await
            .clone()?;
        if let Needs::Demo = needs {
            self.demo
                .get_or_init(|| timed("sample deploy/samples/minimal.yaml", apply_sample(env)))
                .await
                .clone()?;
        }
        Ok(env)
    }

    async fn env(&self) -> TestResult<&Env> {
        self.cluster
            .get_or_init(|| async {
                let cluster = LocalCluster::start_routed()
                    .await
                    .map_err(|e| format!("starting the local cluster: {e}"))?;
                let client = cluster.client().await.map_err(|e| e.to_string())?;
                Ok(Env { cluster, client })
            })
            .await
            .as_ref()
            .map_err(Clone::clone)
    }

    /// Stops the cluster if it was started: every process, network namespace, veth
    /// and temp dir goes. After a failed run the control plane's log tails come first.
    pub fn teardown(self, failed: bool) {
        if let Some(Ok(env)) = self.cluster.into_inner() {
            if failed {
                env.cluster.plane().print_log_tails(60);
            }
            drop(env);
        }
    }
}

/// Runs a setup step, printing how long it took or why it failed (with the
/// diagnosis: a failed step fails every scenario that needs it).
async fn timed(what: &str, step: impl Future<Output = TestResult>) -> TestResult {
    let began = Instant::now();
    let result = step.await;
    match &result {
        Ok(()) => eprintln!("=== setup {what}: done in {:.1?}", began.elapsed()),
        Err(e) => eprintln!(
            "=== setup {what}: FAILED after {:.1?}: {e}",
            began.elapsed()
        ),
    }
    result
}

/// `kubectl apply -k deploy/` and the operator Deployment available; idempotent.
async fn install_operator(env: &Env) -> TestResult {
    let result = env
        .cluster
        .deploy_operator(TIMEOUT)
        .await
        .map_err(|e| e.to_string());
    if result.is_err() {
        diagnose(env).await;
    }
    result
}

/// `kubectl apply -f deploy/samples/minimal.yaml` into `default` labelled for the restricted
/// Pod Security Standard; idempotent.
async fn apply_sample(env: &Env) -> TestResult {
    kubectl(
        env,
        &[
            "label",
            "namespace",
            DEMO.namespace,
            RESTRICTED_LABEL,
            "--overwrite",
        ],
    )
    .await?;
    let sample: PathBuf = LocalCluster::deploy_dir().join("samples/minimal.yaml");
    kubectl(env, &["apply", "-f", &sample.to_string_lossy()])
        .await
        .map(drop)
}

/// A scenario's own namespace, restricted like every namespace the scenarios use.
async fn create_namespace(env: &Env, name: &str) -> TestResult {
    let (key, value) = RESTRICTED_LABEL.split_once('=').unwrap_or_default();
    apply(
        env,
        &format!(
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}\n  labels:\n    \
             {key}: {value}\n"
        ),
    )
    .await
    .map(drop)
}

/// What a failed scenario leaves to read: the workloads, the latest events, the
/// kubelet's log and every cache pod's log.
async fn diagnose(env: &Env) {
    let kubectl = |args: &'static [&'static str]| env.cluster.plane().kubectl(args);
    match kubectl(&["get", "pods,statefulsets,jobs,pvc", "-A", "-o", "wide"]).await {
        Ok(out) => eprintln!("{out}"),
        Err(e) => eprintln!("listing the workloads: {e}"),
    }
    if let Ok(out) = kubectl(&["get", "events", "-A", "--sort-by=.lastTimestamp"]).await {
        eprintln!("{}", tail(&out, 40));
    }
    let log = std::fs::read_to_string(env.cluster.kubelet().log_path()).unwrap_or_default();
    eprintln!("----- kubelet log (tail) -----\n{}", tail(&log, 60));
    let cache_pods = Api::<Pod>::all(env.client.clone())
        .list(&ListParams::default().labels("app.kubernetes.io/component=cache"))
        .await
        .map(|l| l.items)
        .unwrap_or_default();
    for pod in &cache_pods {
        let (ns, name) = (pod.namespace().unwrap_or_default(), pod.name_any());
        let log = env
            .cluster
            .kubelet()
            .container_log(&ns, &name, "cache-node");
        eprintln!(
            "----- {ns}/{name} cache-node log (tail) -----\n{}",
            tail(&log, 20)
        );
    }
}
