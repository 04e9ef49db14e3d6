//! Benchmark: the operator at scale (issue 17). N CacheClusters (default 1000, `replicas: 0`,
//! janitor suspended, spread over namespaces) are created through the API against the real
//! apiserver of the local control plane; measured are the time until every one is reconciled,
//! the operator's peak RSS, and the API requests it makes per reconcile.
//!
//! `cargo bench -p tidecache-e2e --bench operator_scale` prints progress on stderr and writes
//! `bench-results/operator-scale.json` at the workspace root. Knobs (environment):
//! `TIDECACHE_BENCH_CLUSTERS` (1000), `TIDECACHE_BENCH_CONCURRENCY` (requests in flight from the
//! benchmark, 32), `TIDECACHE_BENCH_NAMESPACES` (10), `TIDECACHE_BENCH_ROUNDS` (2),
//! `TIDECACHE_BENCH_OPERATOR` (an operator binary to use instead of building the release one).
//!
//! # What runs
//! The control plane alone (etcd, apiserver, controller manager, scheduler; no nodes, no
//! kubelet, so no pod ever runs), with `crds/` and `deploy/namespace.yaml` + `deploy/rbac.yaml`
//! applied. The operator is the release binary on the host, as ServiceAccount
//! `tidecache-system/tidecache-operator` (a minted token: exactly the shipped RBAC), with its
//! leader Lease and without the webhook. The benchmark writes as a ServiceAccount of its own
//! bound to `cluster-admin`. The apiserver audits both users, so both sides pay the same
//! (blocking) audit log, and the requests are counted where they are served.
//!
//! # The two sides, alternating, `TIDECACHE_BENCH_ROUNDS` times
//! - **operator**: a fresh operator process, leading and idle; the benchmark creates the N
//!   CacheClusters with `TIDECACHE_BENCH_CONCURRENCY` requests in flight. Timed from the first
//!   create: every create answered, every CacheCluster *reconciled* (seen by a watch with
//!   `status.observedGeneration == metadata.generation` and its conditions: the operator writes
//!   the status last, after every child), *settled* (Ready=True, Progressing=False, which also
//!   waits for the controller manager's StatefulSet status), and *quiet* (the operator's
//!   reconcile count unchanged for 5 s). Then the operator gets SIGTERM.
//! - **apiserver**: the physical limit, with the operator stopped: the benchmark itself writes
//!   what the end state needs, as fast as the apiserver takes it, with the same concurrency:
//!   first the N CacheClusters, then per CacheCluster the peer-token Secret, every child the
//!   operator's own `build` makes from it (server-side applied) and the status the operator's
//!   own `status::observed` computes. The same watch times it. Then, timed on top, the ten
//!   Events the operator publishes per new CacheCluster. No reads, no second reconciles:
//!   that is what the operator adds, and what the ratios measure.
//!
//! Each side runs in namespaces of its own, deleted (and waited for) after it. The ratios are
//! operator time-to-reconciled over apiserver time-to-reconciled, from the first create, and
//! over the apiserver's time with the Events (the operator's reconciled moment comes after
//! its Events, which it publishes before the status).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::{Namespace, ObjectReference, Secret, ServiceAccount};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use operator::build::{self, Children};
use operator::crd::{CacheCluster, CacheClusterSpec};
use operator::labels::{self, CACHE_COMPONENT, PEER_TOKEN_ROTATION_ANNOTATION};
use operator::status::{self, Observation};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tidecache_contract::args::{PEER_TOKEN_KEY, PEER_TOKEN_PREVIOUS_KEY};
use tidecache_e2e::cluster::{OPERATOR_NAMESPACE, OPERATOR_SERVICE_ACCOUNT, operator_user};
use tidecache_e2e::control_plane::{ControlPlane, Options as PlaneOptions, audit, client_from};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdin};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// The label that marks every CacheCluster of one side of one round, for the watch.
const RUN_LABEL: &str = "bench.tidecache.io/run";
/// The benchmark's own identity: a ServiceAccount bound to cluster-admin, audited like the
/// operator's.
const BENCH_NAMESPACE: &str = "tidecache-bench";
const BENCH_ACCOUNT: &str = "writer";
/// The field manager of the benchmark's own writes on the apiserver side.
const BENCH_MANAGER: &str = "tidecache-bench";
/// How long the minted tokens are valid: longer than any run.
const TOKEN_SECONDS: i64 = 4 * 3600;
/// Goals of issue 17.
const GOAL_SECONDS: f64 = 60.0;
const GOAL_RSS_MIB: f64 = 100.0;
/// How long each wait may take before the run fails.
const RECONCILE_TIMEOUT: Duration = Duration::from_secs(900);
const SETTLE_TIMEOUT: Duration = Duration::from_secs(600);
/// The operator is quiet when its reconcile count has not moved for this long.
const QUIET: Duration = Duration::from_secs(5);

/// Starts the operator with its stdin as a lifeline: the shell runs it with stdin from
/// /dev/null, prints its PID and waits for EOF on its own stdin, which comes when the
/// benchmark closes it (stop) or dies for any reason (even SIGKILL); it then SIGTERMs the
/// operator and exits with its status. So no operator outlives the benchmark.
const LIFELINE: &str = r#""$0" "$@" </dev/null >"$OPERATOR_LOG" 2>&1 &
op=$!
echo "$op"
read -r _ || true
kill -TERM "$op" 2>/dev/null
wait "$op""#;

struct Settings {
    clusters: usize,
    concurrency: usize,
    namespaces: usize,
    rounds: usize,
    operator: Option<PathBuf>,
}

impl Settings {
    fn from_env() -> Settings {
        let number = |name: &str, default: usize| {
            std::env::var(name).map_or(default, |v| {
                v.parse()
                    .unwrap_or_else(|_| panic!("{name} must be a number, not {v:?}"))
            })
        };
        Settings {
            clusters: number("TIDECACHE_BENCH_CLUSTERS", 1000),
            concurrency: number("TIDECACHE_BENCH_CONCURRENCY", 32).max(1),
            namespaces: number("TIDECACHE_BENCH_NAMESPACES", 10).max(1),
            rounds: number("TIDECACHE_BENCH_ROUNDS", 2).max(1),
            operator: std::env::var_os("TIDECACHE_BENCH_OPERATOR").map(PathBuf::from),
        }
    }
}

fn say(message: impl std::fmt::Display) {
    eprintln!("[operator-scale] {message}");
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// What every round shares.
struct Bench {
    settings: Settings,
    plane: ControlPlane,
    operator_binary: PathBuf,
    operator_kubeconfig: PathBuf,
    /// Admin: namespaces and the watch.
    admin: Client,
    /// The benchmark's audited writer.
    writer: Client,
    writer_user: String,
    /// PIDs of the control plane's components, for their CPU time.
    components: Vec<(String, i32)>,
}

#[tokio::main]
async fn main() -> Result<()> {
    let settings = Settings::from_env();
    say(format!(
        "{} CacheClusters in {} namespaces, {} requests in flight, {} round(s); {} cores, load \
         average {}",
        settings.clusters,
        settings.namespaces,
        settings.concurrency,
        settings.rounds,
        cores(),
        load_average()
    ));
    let operator_binary = match &settings.operator {
        Some(path) => path.clone(),
        None => build_operator()?,
    };
    let writer_user = format!("system:serviceaccount:{BENCH_NAMESPACE}:{BENCH_ACCOUNT}");
    let plane = ControlPlane::start_with(PlaneOptions {
        audited_users: vec![operator_user(), writer_user.clone()],
        ..PlaneOptions::default()
    })
    .await?;
    let admin = plane.client().await?;
    install(&plane, &admin).await?;
    let operator_kubeconfig = plane
        .service_account_kubeconfig(OPERATOR_NAMESPACE, OPERATOR_SERVICE_ACCOUNT, TOKEN_SECONDS)
        .await?;
    let writer = client_from(
        &plane
            .service_account_kubeconfig(BENCH_NAMESPACE, BENCH_ACCOUNT, TOKEN_SECONDS)
            .await?,
    )
    .await?;
    let components = components(plane.dir());
    let bench = Bench {
        settings,
        plane,
        operator_binary,
        operator_kubeconfig,
        admin,
        writer,
        writer_user,
        components,
    };

    let mut rounds = Vec::new();
    for round in 1..=bench.settings.rounds {
        let operator = operator_side(&bench, round).await?;
        let apiserver = apiserver_side(&bench, round).await?;
        rounds.push((operator, apiserver));
    }
    report(&bench, &rounds);
    Ok(())
}

/// Builds the release operator (as its Dockerfile does) and returns the executable's path,
/// from cargo's JSON messages.
fn build_operator() -> Result<PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    say("building the release operator binary");
    let output = std::process::Command::new(&cargo)
        .args([
            "build",
            "--release",
            "--locked",
            "-p",
            "operator",
            "--bin",
            "operator",
        ])
        .arg("--message-format=json")
        .current_dir(workspace_root())
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()?;
    if !output.status.success() {
        return Err(format!("cargo build of the operator: {}", output.status).into());
    }
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find_map(|message| {
            (message["target"]["name"] == "operator")
                .then(|| message["executable"].as_str().map(PathBuf::from))
                .flatten()
        })
        .ok_or_else(|| "cargo reported no operator executable".into())
}

/// The CRD, the operator's namespace and RBAC (not its Deployment or webhook), and the
/// benchmark's own ServiceAccount.
async fn install(plane: &ControlPlane, admin: &Client) -> Result<()> {
    let root = workspace_root();
    for file in [
        "crds/cacheclusters.tidecache.io.yaml",
        "deploy/namespace.yaml",
        "deploy/rbac.yaml",
    ] {
        let path = root.join(file);
        plane
            .kubectl(&["apply", "--server-side", "-f", &path.to_string_lossy()])
            .await?;
    }
    plane
        .kubectl(&[
            "wait",
            "--for=condition=Established",
            "crd/cacheclusters.tidecache.io",
            "--timeout=120s",
        ])
        .await?;
    let namespace = Namespace {
        metadata: ObjectMeta {
            name: Some(BENCH_NAMESPACE.into()),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };
    Api::<Namespace>::all(admin.clone())
        .create(&PostParams::default(), &namespace)
        .await?;
    let account = ServiceAccount {
        metadata: ObjectMeta {
            name: Some(BENCH_ACCOUNT.into()),
            ..ObjectMeta::default()
        },
        ..ServiceAccount::default()
    };
    Api::<ServiceAccount>::namespaced(admin.clone(), BENCH_NAMESPACE)
        .create(&PostParams::default(), &account)
        .await?;
    let binding = ClusterRoleBinding {
        metadata: ObjectMeta {
            name: Some(BENCH_MANAGER.into()),
            ..ObjectMeta::default()
        },
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "ClusterRole".into(),
            name: "cluster-admin".into(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: BENCH_ACCOUNT.into(),
            namespace: Some(BENCH_NAMESPACE.into()),
            ..Subject::default()
        }]),
    };
    Api::<ClusterRoleBinding>::all(admin.clone())
        .create(&PostParams::default(), &binding)
        .await?;
    Ok(())
}

// ----- the two sides -----

/// One round's operator side: see the module documentation.
async fn operator_side(bench: &Bench, round: usize) -> Result<Value> {
    let run = format!("r{round}-operator");
    let settings = &bench.settings;
    let namespaces = create_namespaces(&bench.admin, &run, settings.namespaces).await?;
    let mut operator = Operator::start(bench, &run).await?;
    let idle_kib = operator.status_kib("VmRSS").unwrap_or(0);
    say(format!(
        "{run}: operator {} leading, idle RSS {:.1} MiB",
        operator.pid,
        mib(idle_kib)
    ));
    let audit_from = Utc::now();
    let cpu = CpuClock::start(bench, Some(operator.pid));
    let started = Instant::now();
    let tracker = Tracker::start(&bench.admin, &run, started, settings.clusters);
    let peak_rss = Arc::new(AtomicU64::new(idle_kib));
    let progress = {
        let (tracker, peak_rss, pid, metrics) = (
            tracker.clone(),
            peak_rss.clone(),
            operator.pid,
            operator.metrics,
        );
        let run = run.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            let mut last_print = Instant::now();
            loop {
                tick.tick().await;
                let rss = proc_status_kib(pid, "VmRSS").unwrap_or(0);
                peak_rss.fetch_max(rss, Ordering::Relaxed);
                if last_print.elapsed() >= Duration::from_secs(2) {
                    last_print = Instant::now();
                    let reconciles = scrape(metrics)
                        .await
                        .map(|m| metric(&m, "tidecache_operator_reconciles_total"))
                        .unwrap_or_default();
                    say(format!(
                        "{run} {:5.1} s: {}, RSS {:.1} MiB (peak {:.1}), reconciles {}",
                        started.elapsed().as_secs_f64(),
                        tracker.line(),
                        mib(rss),
                        mib(peak_rss.load(Ordering::Relaxed)),
                        reconciles.unwrap_or(0.0)
                    ));
                }
            }
        })
    };

    let created = create_clusters(bench, &namespaces, &run, &tracker).await?;
    let created_at = started.elapsed();
    let reconciled_at = tracker
        .wait(Milestone::Reconciled, RECONCILE_TIMEOUT)
        .await?;
    let settled_at = tracker.wait(Milestone::Settled, SETTLE_TIMEOUT).await?;
    let quiet_at = operator.wait_quiet(started).await?;
    let metrics = scrape(operator.metrics).await?;
    let hwm_kib = operator.status_kib("VmHWM").unwrap_or(0);
    let final_kib = operator.status_kib("VmRSS").unwrap_or(0);
    let cpu = cpu.stop();
    progress.abort();
    operator.stop().await?;
    let sampled_kib = peak_rss.load(Ordering::Relaxed);

    let reconciles = metric(&metrics, "tidecache_operator_reconciles_total").unwrap_or(0.0);
    let failures = metric_sum(&metrics, "tidecache_operator_reconcile_failures_total");
    let child_writes = metric(&metrics, "tidecache_operator_child_writes_total").unwrap_or(0.0);
    let requests = Requests::audited(bench, &operator_user(), audit_from)?;
    let latency = tracker.latencies(Milestone::Reconciled);
    say(format!(
        "{run}: created {} in {:.1} s, all reconciled at {:.1} s, settled at {:.1} s, quiet at \
         {:.1} s; peak RSS {:.1} MiB (VmHWM), {reconciles} reconciles ({failures} failed), {} \
         requests ({:.1} per reconcile, {:.1} per CacheCluster)",
        created.len(),
        created_at.as_secs_f64(),
        reconciled_at.as_secs_f64(),
        settled_at.as_secs_f64(),
        quiet_at.as_secs_f64(),
        mib(hwm_kib),
        requests.total,
        requests.total as f64 / reconciles.max(1.0),
        requests.total as f64 / settings.clusters as f64,
    ));
    say(format!(
        "{run}: requests by verb and resource: {}",
        requests.by_kind_line()
    ));
    delete_namespaces(&bench.admin, &namespaces, &run).await?;
    Ok(json!({
        "side": "operator",
        "round": round,
        "created_seconds": created_at.as_secs_f64(),
        "reconciled_seconds": reconciled_at.as_secs_f64(),
        "reconciled_after_last_create_seconds":
            reconciled_at.saturating_sub(created_at).as_secs_f64(),
        "settled_seconds": settled_at.as_secs_f64(),
        "quiet_seconds": quiet_at.as_secs_f64(),
        "create_to_reconciled_latency_seconds": latency,
        "operator_rss_mib": {
            "idle": mib(idle_kib),
            "peak_vmhwm": mib(hwm_kib),
            "peak_sampled_vmrss": mib(sampled_kib),
            "at_end": mib(final_kib),
        },
        "reconciles": reconciles,
        "reconcile_failures": failures,
        "child_writes": child_writes,
        "requests": requests.to_json(reconciles, settings.clusters),
        "cpu_seconds": cpu,
    }))
}

/// One round's apiserver side: see the module documentation.
async fn apiserver_side(bench: &Bench, round: usize) -> Result<Value> {
    let run = format!("r{round}-apiserver");
    let settings = &bench.settings;
    let namespaces = create_namespaces(&bench.admin, &run, settings.namespaces).await?;
    let audit_from = Utc::now();
    let cpu = CpuClock::start(bench, None);
    let started = Instant::now();
    let tracker = Tracker::start(&bench.admin, &run, started, settings.clusters);
    let written = Arc::new(AtomicUsize::new(0));
    let announced = Arc::new(AtomicUsize::new(0));
    let progress = {
        let (tracker, written, announced, run) = (
            tracker.clone(),
            written.clone(),
            announced.clone(),
            run.clone(),
        );
        let total = settings.clusters;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(2));
            tick.tick().await;
            loop {
                tick.tick().await;
                say(format!(
                    "{run} {:5.1} s: {}, end state written {}/{total}, Events {}/{total}",
                    started.elapsed().as_secs_f64(),
                    tracker.line(),
                    written.load(Ordering::Relaxed),
                    announced.load(Ordering::Relaxed)
                ));
            }
        })
    };
    let created = create_clusters(bench, &namespaces, &run, &tracker).await?;
    let created_at = started.elapsed();
    let written_objects: Vec<Written> = stream::iter(created.iter())
        .map(|cluster| {
            let written = written.clone();
            async move {
                let objects = write_end_state(&bench.writer, cluster).await?;
                written.fetch_add(1, Ordering::Relaxed);
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(objects)
            }
        })
        .buffer_unordered(settings.concurrency)
        .try_collect()
        .await?;
    let written_at = started.elapsed();
    let reconciled_at = tracker
        .wait(Milestone::Reconciled, RECONCILE_TIMEOUT)
        .await?;
    stream::iter(written_objects.iter())
        .map(|objects| {
            let announced = announced.clone();
            async move {
                publish_events(&bench.writer, objects).await?;
                announced.fetch_add(1, Ordering::Relaxed);
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
            }
        })
        .buffer_unordered(settings.concurrency)
        .try_collect::<()>()
        .await?;
    let events_at = started.elapsed();
    let cpu = cpu.stop();
    progress.abort();
    let requests = Requests::audited(bench, &bench.writer_user, audit_from)?;
    say(format!(
        "{run}: created {} in {:.1} s, end state written at {:.1} s (all seen reconciled at \
         {:.1} s), the operator's Events too at {:.1} s; {} requests ({:.1} per CacheCluster)",
        created.len(),
        created_at.as_secs_f64(),
        written_at.as_secs_f64(),
        reconciled_at.as_secs_f64(),
        events_at.as_secs_f64(),
        requests.total,
        requests.total as f64 / settings.clusters as f64,
    ));
    say(format!(
        "{run}: requests by verb and resource: {}",
        requests.by_kind_line()
    ));
    delete_namespaces(&bench.admin, &namespaces, &run).await?;
    Ok(json!({
        "side": "apiserver",
        "round": round,
        "created_seconds": created_at.as_secs_f64(),
        "written_seconds": written_at.as_secs_f64(),
        "reconciled_seconds": reconciled_at.as_secs_f64(),
        "with_events_seconds": events_at.as_secs_f64(),
        "requests": requests.to_json(settings.clusters as f64, settings.clusters),
        "cpu_seconds": cpu,
    }))
}

/// Prints the result lines and writes `bench-results/operator-scale.json`.
fn report(bench: &Bench, rounds: &[(Value, Value)]) {
    let seconds = |side: &Value, key: &str| side[key].as_f64().unwrap_or(f64::NAN);
    let (mut ratios, mut ratios_with_events) = (Vec::new(), Vec::new());
    for (operator, apiserver) in rounds {
        let reconciled = seconds(operator, "reconciled_seconds");
        let ratio = reconciled / seconds(apiserver, "reconciled_seconds");
        let with_events = reconciled / seconds(apiserver, "with_events_seconds");
        ratios.push(ratio);
        ratios_with_events.push(with_events);
        say(format!(
            "round {}: operator {reconciled:.1} s to reconcile all (creates answered at {:.1} \
             s) vs apiserver {:.1} s for the same end state written directly (CacheClusters at \
             {:.1} s), {:.1} s with the operator's Events: ratio {ratio:.2}, {with_events:.2} \
             with Events",
            operator["round"],
            seconds(operator, "created_seconds"),
            seconds(apiserver, "reconciled_seconds"),
            seconds(apiserver, "created_seconds"),
            seconds(apiserver, "with_events_seconds"),
        ));
    }
    let listed = |ratios: &[f64]| {
        ratios
            .iter()
            .map(|r| format!("{r:.2}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let worst = |key: &str| {
        rounds
            .iter()
            .map(|(operator, _)| seconds(operator, key))
            .fold(f64::NAN, f64::max)
    };
    let worst_rss = rounds
        .iter()
        .map(|(operator, _)| {
            operator["operator_rss_mib"]["peak_vmhwm"]
                .as_f64()
                .unwrap_or(f64::NAN)
        })
        .fold(f64::NAN, f64::max);
    let reconciled = worst("reconciled_seconds");
    let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
    say(format!(
        "RESULT: {} CacheClusters: slowest round reconciled all in {reconciled:.1} s (goal < \
         {GOAL_SECONDS} s: {}), peak RSS {worst_rss:.1} MiB (goal < {GOAL_RSS_MIB} MiB: {}), \
         ratio to the apiserver writing the end state itself {} ({} with the operator's \
         Events); load average now {}",
        bench.settings.clusters,
        verdict(reconciled < GOAL_SECONDS),
        verdict(worst_rss < GOAL_RSS_MIB),
        listed(&ratios),
        listed(&ratios_with_events),
        load_average()
    ));
    let result = json!({
        "benchmark": "operator-scale",
        "clusters": bench.settings.clusters,
        "namespaces": bench.settings.namespaces,
        "concurrency": bench.settings.concurrency,
        "cluster_spec": {"replicas": 0, "janitor": {"suspend": true}},
        "operator_binary": bench.operator_binary,
        "git_head": git_head(),
        "cores": cores(),
        "load_average_at_end": load_average(),
        "goals": {"reconciled_seconds": GOAL_SECONDS, "peak_rss_mib": GOAL_RSS_MIB},
        "slowest_reconciled_seconds": reconciled,
        "highest_peak_rss_mib": worst_rss,
        "ratios_operator_to_apiserver": ratios,
        "ratios_operator_to_apiserver_with_events": ratios_with_events,
        "rounds": rounds.iter().map(|(o, a)| json!([o, a])).collect::<Vec<_>>(),
    });
    let dir = workspace_root().join("bench-results");
    let path = dir.join("operator-scale.json");
    let written = std::fs::create_dir_all(&dir).and_then(|()| {
        std::fs::write(
            &path,
            serde_json::to_string_pretty(&result).unwrap_or_default() + "\n",
        )
    });
    match written {
        Ok(()) => say(format!("results written to {}", path.display())),
        Err(error) => say(format!("could not write {}: {error}", path.display())),
    }
}

// ----- writing -----

async fn create_namespaces(admin: &Client, run: &str, count: usize) -> Result<Vec<String>> {
    let api = Api::<Namespace>::all(admin.clone());
    let mut names = Vec::new();
    for i in 0..count {
        let name = format!("scale-{run}-{i}");
        let namespace = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        api.create(&PostParams::default(), &namespace).await?;
        names.push(name);
    }
    Ok(names)
}

/// Deletes the namespaces and waits until they are gone, so that the next side starts on an
/// apiserver with nothing left to clean up.
async fn delete_namespaces(admin: &Client, names: &[String], run: &str) -> Result<()> {
    let api = Api::<Namespace>::all(admin.clone());
    let started = Instant::now();
    for name in names {
        api.delete(name, &DeleteParams::background()).await?;
    }
    let mut last_print = Instant::now();
    loop {
        let mut left = 0;
        for name in names {
            if api.get_opt(name).await?.is_some() {
                left += 1;
            }
        }
        if left == 0 {
            say(format!(
                "{run}: namespaces deleted in {:.1} s",
                started.elapsed().as_secs_f64()
            ));
            return Ok(());
        }
        if started.elapsed() > Duration::from_secs(1200) {
            return Err(format!("{left} namespaces of {run} still there after 20 min").into());
        }
        if last_print.elapsed() >= Duration::from_secs(10) {
            last_print = Instant::now();
            say(format!(
                "{run}: deleting, {left}/{} namespaces left",
                names.len()
            ));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// The CacheCluster every side creates: no pods, the janitor suspended (its Jobs would be
/// status changes, and no pod can run here anyway), every other field defaulted.
fn cache_cluster(namespace: &str, name: &str, run: &str) -> CacheCluster {
    let spec: CacheClusterSpec =
        serde_json::from_value(json!({"replicas": 0, "janitor": {"suspend": true}}))
            .expect("a valid spec");
    let mut cluster = CacheCluster::new(name, spec);
    cluster.metadata.namespace = Some(namespace.to_string());
    cluster.metadata.labels = Some(BTreeMap::from([(RUN_LABEL.to_string(), run.to_string())]));
    cluster
}

/// Creates the N CacheClusters over the namespaces, `concurrency` in flight.
async fn create_clusters(
    bench: &Bench,
    namespaces: &[String],
    run: &str,
    tracker: &Tracker,
) -> Result<Vec<CacheCluster>> {
    stream::iter(0..bench.settings.clusters)
        .map(|i| {
            let namespace = &namespaces[i % namespaces.len()];
            let name = format!("cache-{i:04}");
            let api = Api::<CacheCluster>::namespaced(bench.writer.clone(), namespace);
            async move {
                let created = api
                    .create(
                        &PostParams::default(),
                        &cache_cluster(namespace, &name, run),
                    )
                    .await?;
                tracker.created(namespace, &name);
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(created)
            }
        })
        .buffer_unordered(bench.settings.concurrency)
        .try_collect()
        .await
}

/// What the apiserver side wrote for one CacheCluster, for the Events about it.
struct Written {
    cluster: ObjectReference,
    /// Each object with the reason and note of the operator's Event about it.
    objects: Vec<(ObjectReference, &'static str, String)>,
}

/// The apiserver side's writes for one CacheCluster: what a reconcile leaves behind, built by
/// the operator's own functions.
async fn write_end_state(client: &Client, cluster: &CacheCluster) -> Result<Written> {
    let mut validated = operator::validate::validate(cluster)?;
    let namespace = validated.namespace.clone();
    let name = validated.name.clone();
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(labels::names::peer_token(&name)),
            labels: Some(labels::common(&name, CACHE_COMPONENT)),
            annotations: Some(BTreeMap::from([(
                PEER_TOKEN_ROTATION_ANNOTATION.to_string(),
                String::new(),
            )])),
            owner_references: Some(vec![validated.owner.clone()]),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".into()),
        string_data: Some(BTreeMap::from([
            (PEER_TOKEN_KEY.to_string(), "0".repeat(64)),
            (PEER_TOKEN_PREVIOUS_KEY.to_string(), "0".repeat(64)),
        ])),
        ..Secret::default()
    };
    let secret = Api::<Secret>::namespaced(client.clone(), &namespace)
        .create(&PostParams::default(), &secret)
        .await?;
    let mut written = Written {
        cluster: cluster.object_ref(&()),
        objects: vec![(
            secret.object_ref(&()),
            "PeerTokenCreated",
            format!("generated Secret {}", secret.name_any()),
        )],
    };
    validated.peer_token_revision = Some(format!(
        "{}/",
        secret.metadata.uid.as_deref().unwrap_or_default()
    ));
    let Children {
        service_account,
        role_binding,
        volume_claim,
        peers_service,
        client_service,
        stateful_set,
        janitor,
        disruption_budget,
        network_policy,
    } = build::build(&validated);
    apply(client, &namespace, service_account, &mut written).await?;
    apply(client, &namespace, role_binding, &mut written).await?;
    apply(client, &namespace, volume_claim, &mut written).await?;
    apply(client, &namespace, peers_service, &mut written).await?;
    apply(client, &namespace, client_service, &mut written).await?;
    let stateful_set = apply(client, &namespace, stateful_set, &mut written).await?;
    let janitor = apply(client, &namespace, janitor, &mut written).await?;
    if let Some(budget) = disruption_budget {
        apply(client, &namespace, budget, &mut written).await?;
    }
    if let Some(policy) = network_policy {
        apply(client, &namespace, policy, &mut written).await?;
    }
    let observation = Observation {
        generation: cluster.metadata.generation,
        desired_replicas: validated.spec.replicas,
        stateful_set_generation: stateful_set.metadata.generation,
        stateful_set: stateful_set.status,
        schedule: validated.schedule.to_string(),
        selector: labels::selector_string(&name, CACHE_COMPONENT),
        janitor: janitor.status,
        ..Observation::default()
    };
    let status = status::observed(&observation, None, &Time(Timestamp::now()));
    let patch = json!({
        "apiVersion": CacheCluster::api_version(&()),
        "kind": CacheCluster::kind(&()),
        "status": status,
    });
    Api::<CacheCluster>::namespaced(client.clone(), &namespace)
        .patch_status(
            &name,
            &PatchParams::apply(BENCH_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await?;
    Ok(written)
}

/// Server-side applies `object` and notes it in `written`.
async fn apply<K>(client: &Client, namespace: &str, object: K, written: &mut Written) -> Result<K>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + Serialize
        + DeserializeOwned,
{
    let name = object.name_any();
    let applied = Api::<K>::namespaced(client.clone(), namespace)
        .patch(
            &name,
            &PatchParams::apply(BENCH_MANAGER).force(),
            &Patch::Apply(&object),
        )
        .await?;
    written.objects.push((
        applied.object_ref(&()),
        "Created",
        format!("created {} {name}", K::kind(&())),
    ));
    Ok(applied)
}

/// The Events the operator publishes when it creates a CacheCluster's children, as kube's
/// `Recorder` makes them (events.k8s.io/v1, regarding the CacheCluster, the child as
/// `related`), one after another.
async fn publish_events(client: &Client, written: &Written) -> Result<()> {
    let namespace = written.cluster.namespace.clone().unwrap_or_default();
    let cluster = written.cluster.name.clone().unwrap_or_default();
    let api = Api::<Event>::namespaced(client.clone(), &namespace);
    for (i, (object, reason, note)) in written.objects.iter().enumerate() {
        let now = Timestamp::now();
        let event = Event {
            action: Some("Reconcile".into()),
            reason: Some((*reason).into()),
            note: Some(note.clone()),
            event_time: Some(MicroTime(now)),
            regarding: Some(written.cluster.clone()),
            related: Some(object.clone()),
            reporting_controller: Some(labels::MANAGER.into()),
            reporting_instance: Some(BENCH_MANAGER.into()),
            type_: Some("Normal".into()),
            metadata: ObjectMeta {
                name: Some(format!("{cluster}.{:x}{i}", now.as_nanosecond())),
                namespace: Some(namespace.clone()),
                ..ObjectMeta::default()
            },
            ..Event::default()
        };
        api.create(&PostParams::default(), &event).await?;
    }
    Ok(())
}

// ----- watching -----

#[derive(Clone, Copy, PartialEq, Eq)]
enum Milestone {
    /// The status describes the current generation and has its conditions.
    Reconciled,
    /// Reconciled, Ready=True and Progressing=False.
    Settled,
}

#[derive(Default)]
struct Seen {
    created: Option<Duration>,
    reconciled: Option<Duration>,
    settled: Option<Duration>,
}

#[derive(Default)]
struct Counts {
    created: usize,
    reconciled: usize,
    settled: usize,
}

struct TrackerState {
    clusters: HashMap<String, Seen>,
    counts: Counts,
    watch_error: Option<String>,
}

/// A watch on one side's CacheClusters (label [`RUN_LABEL`]) that records when each was
/// created (by the benchmark), first seen reconciled and first seen settled, relative to the
/// side's start.
#[derive(Clone)]
struct Tracker {
    state: Arc<Mutex<TrackerState>>,
    started: Instant,
    total: usize,
    changed: Arc<tokio::sync::Notify>,
    /// The watch, stopped when the last clone is dropped.
    _watch: Arc<AbortOnDrop>,
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Tracker {
    fn start(admin: &Client, run: &str, started: Instant, total: usize) -> Tracker {
        let state = Arc::new(Mutex::new(TrackerState {
            clusters: HashMap::new(),
            counts: Counts::default(),
            watch_error: None,
        }));
        let changed = Arc::new(tokio::sync::Notify::new());
        let api = Api::<CacheCluster>::all(admin.clone());
        let config = watcher::Config::default().labels(&format!("{RUN_LABEL}={run}"));
        let task = {
            let (state, changed) = (state.clone(), changed.clone());
            tokio::spawn(async move {
                let mut events = watcher(api, config).default_backoff().boxed();
                while let Some(event) = events.next().await {
                    let mut state = state.lock().unwrap_or_else(|e| e.into_inner());
                    match event {
                        Ok(watcher::Event::Apply(cluster) | watcher::Event::InitApply(cluster)) => {
                            state.observe(&cluster, started.elapsed());
                        }
                        Ok(_) => {}
                        Err(error) => state.watch_error = Some(error.to_string()),
                    }
                    drop(state);
                    changed.notify_waiters();
                }
            })
        };
        Tracker {
            state,
            started,
            total,
            changed,
            _watch: Arc::new(AbortOnDrop(task)),
        }
    }

    fn created(&self, namespace: &str, name: &str) {
        let at = self.started.elapsed();
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.counts.created += 1;
        state
            .clusters
            .entry(format!("{namespace}/{name}"))
            .or_default()
            .created = Some(at);
    }

    fn line(&self) -> String {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let Counts {
            created,
            reconciled,
            settled,
        } = state.counts;
        let total = self.total;
        format!(
            "created {created}/{total}, reconciled {reconciled}/{total}, settled {settled}/{total}"
        )
    }

    /// Waits until every CacheCluster reached `milestone`; returns when the last one did.
    async fn wait(&self, milestone: Milestone, timeout: Duration) -> Result<Duration> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.changed.notified();
            {
                let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
                let count = match milestone {
                    Milestone::Reconciled => state.counts.reconciled,
                    Milestone::Settled => state.counts.settled,
                };
                if count >= self.total {
                    let last = state
                        .clusters
                        .values()
                        .filter_map(|seen| match milestone {
                            Milestone::Reconciled => seen.reconciled,
                            Milestone::Settled => seen.settled,
                        })
                        .max()
                        .unwrap_or_default();
                    return Ok(last);
                }
                if tokio::time::Instant::now() > deadline {
                    return Err(format!(
                        "timed out after {timeout:?}: {} (last watch error: {:?})",
                        self.line_locked(&state),
                        state.watch_error
                    )
                    .into());
                }
            }
            let _ = tokio::time::timeout(Duration::from_secs(1), notified).await;
        }
    }

    fn line_locked(&self, state: &TrackerState) -> String {
        format!(
            "reconciled {}/{}, settled {}/{}",
            state.counts.reconciled, self.total, state.counts.settled, self.total
        )
    }

    /// Percentiles of the time from a CacheCluster's create answered to its `milestone`.
    fn latencies(&self, milestone: Milestone) -> Value {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let mut seconds: Vec<f64> = state
            .clusters
            .values()
            .filter_map(|seen| {
                let reached = match milestone {
                    Milestone::Reconciled => seen.reconciled,
                    Milestone::Settled => seen.settled,
                }?;
                Some(reached.saturating_sub(seen.created?).as_secs_f64())
            })
            .collect();
        seconds.sort_by(f64::total_cmp);
        let at = |q: f64| {
            seconds
                .get(((seconds.len() as f64 - 1.0) * q).round() as usize)
                .copied()
        };
        json!({"p50": at(0.5), "p90": at(0.9), "p99": at(0.99), "max": at(1.0)})
    }
}

impl TrackerState {
    fn observe(&mut self, cluster: &CacheCluster, at: Duration) {
        let generation = cluster.metadata.generation;
        let Some(status) = cluster.status.as_ref() else {
            return;
        };
        let reconciled = status.observed_generation == generation && !status.conditions.is_empty();
        let condition = |type_: &str, value: &str| {
            status.conditions.iter().any(|c| {
                c.type_ == type_ && c.status == value && c.observed_generation == generation
            })
        };
        let settled = reconciled
            && condition(status::READY, "True")
            && condition(status::PROGRESSING, "False");
        let key = format!(
            "{}/{}",
            cluster.namespace().unwrap_or_default(),
            cluster.name_any()
        );
        let seen = self.clusters.entry(key).or_default();
        if reconciled && seen.reconciled.is_none() {
            seen.reconciled = Some(at);
            self.counts.reconciled += 1;
        }
        if settled && seen.settled.is_none() {
            seen.settled = Some(at);
            self.counts.settled += 1;
        }
    }
}

// ----- the operator process -----

struct Operator {
    /// The lifeline shell; the operator is its child.
    shell: Child,
    /// Closing it stops the operator (see [`LIFELINE`]).
    lifeline: Option<ChildStdin>,
    pid: i32,
    metrics: std::net::SocketAddr,
    log: PathBuf,
}

impl Operator {
    /// Starts the operator and waits until it leads.
    async fn start(bench: &Bench, run: &str) -> Result<Operator> {
        let metrics = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        let log = bench.plane.dir().join(format!("logs/operator-{run}.log"));
        let mut shell = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(LIFELINE)
            .arg(&bench.operator_binary)
            .arg(format!("--listen={metrics}"))
            .arg("--log-format=json")
            .env("KUBECONFIG", &bench.operator_kubeconfig)
            .env("POD_NAMESPACE", OPERATOR_NAMESPACE)
            .env("POD_NAME", format!("bench-{run}"))
            .env("RUST_LOG", "info")
            .env("OPERATOR_LOG", &log)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let lifeline = shell.stdin.take();
        let stdout = shell
            .stdout
            .take()
            .ok_or("no stdout of the lifeline shell")?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).await?;
        let pid: i32 = line
            .trim()
            .parse()
            .map_err(|_| format!("the lifeline shell printed {line:?}, not a PID"))?;
        let operator = Operator {
            shell,
            lifeline,
            pid,
            metrics,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(text) = scrape(metrics).await
                && metric(&text, "tidecache_operator_leader") == Some(1.0)
            {
                return Ok(operator);
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "the operator does not lead after 60 s; see {}",
                    operator.log.display()
                )
                .into());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn status_kib(&self, key: &str) -> Option<u64> {
        proc_status_kib(self.pid, key)
    }

    /// Waits until the reconcile count has not moved for [`QUIET`]; returns when it last moved.
    async fn wait_quiet(&self, started: Instant) -> Result<Duration> {
        let mut last = None;
        let mut moved = started.elapsed();
        let deadline = Instant::now() + SETTLE_TIMEOUT;
        loop {
            let count = metric(
                &scrape(self.metrics).await?,
                "tidecache_operator_reconciles_total",
            );
            if count != last {
                last = count;
                moved = started.elapsed();
            } else if started.elapsed() - moved >= QUIET {
                return Ok(moved);
            }
            if Instant::now() > deadline {
                return Err("the operator kept reconciling".into());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// SIGTERM through the lifeline; waits for the exit.
    async fn stop(&mut self) -> Result<()> {
        drop(self.lifeline.take());
        let status = tokio::time::timeout(Duration::from_secs(30), self.shell.wait()).await??;
        if !status.success() {
            return Err(format!(
                "the operator exited with {status}; see {}",
                self.log.display()
            )
            .into());
        }
        Ok(())
    }
}

async fn scrape(address: std::net::SocketAddr) -> Result<String> {
    let response =
        tidecache_e2e::http::request(address, "GET", "/metrics", b"", Duration::from_secs(5))
            .await?;
    Ok(response.text())
}

/// The value of an unlabelled sample.
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
}

/// The sum over a family's labelled samples.
fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter_map(|line| line.strip_prefix(name)?.strip_prefix('{'))
        .filter_map(|rest| rest.rsplit(' ').next()?.trim().parse::<f64>().ok())
        .fold(0.0, |sum, value| sum + value)
}

// ----- requests, from the audit log -----

struct Requests {
    total: usize,
    leases: usize,
    writes: usize,
    by_kind: BTreeMap<String, usize>,
    /// By response code: 404 for a child read before it exists, 429 for a request the
    /// apiserver's priority and fairness turned away (kube's client retries those).
    by_code: BTreeMap<u16, usize>,
}

impl Requests {
    /// `user`'s requests since `from`, as the apiserver audited them; the leader Lease's apart
    /// (not reconciling).
    fn audited(bench: &Bench, user: &str, from: DateTime<Utc>) -> Result<Requests> {
        let mut requests = Requests {
            total: 0,
            leases: 0,
            writes: 0,
            by_kind: BTreeMap::new(),
            by_code: BTreeMap::new(),
        };
        for event in audit_events(bench.plane.dir())? {
            if event.user.username != user || event.request_received_timestamp < from {
                continue;
            }
            let object = event.object_ref.clone().unwrap_or_default();
            if object.resource == "leases" {
                requests.leases += 1;
                continue;
            }
            requests.total += 1;
            if let Some(status) = &event.response_status {
                *requests.by_code.entry(status.code).or_insert(0) += 1;
            }
            if event.is_write() {
                requests.writes += 1;
            }
            let mut resource = if object.api_group.is_empty() {
                object.resource.clone()
            } else {
                format!("{}.{}", object.resource, object.api_group)
            };
            if !object.subresource.is_empty() {
                resource = format!("{resource}/{}", object.subresource);
            }
            *requests
                .by_kind
                .entry(format!("{} {resource}", event.verb))
                .or_insert(0) += 1;
        }
        Ok(requests)
    }

    /// The counts by verb and resource, most first, then by response code.
    fn by_kind_line(&self) -> String {
        let mut kinds: Vec<_> = self.by_kind.iter().collect();
        kinds.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        let codes = self
            .by_code
            .iter()
            .map(|(code, count)| format!("{code}: {count}"))
            .collect::<Vec<_>>()
            .join(", ");
        let kinds = kinds
            .iter()
            .map(|(kind, count)| format!("{kind} {count}"))
            .collect::<Vec<_>>()
            .join(", ");
        format!("{kinds}; by response code {codes}")
    }

    fn to_json(&self, reconciles: f64, clusters: usize) -> Value {
        json!({
            "source": "apiserver audit log (this user's requests since the side started; the \
                       leader Lease's counted apart); reconciles from the operator's \
                       tidecache_operator_reconciles_total",
            "total": self.total,
            "writes": self.writes,
            "per_reconcile": self.total as f64 / reconciles.max(1.0),
            "per_cluster": self.total as f64 / clusters as f64,
            "writes_per_cluster": self.writes as f64 / clusters as f64,
            "lease_requests": self.leases,
            "by_verb_and_resource": self.by_kind,
            "by_response_code": self.by_code,
        })
    }
}

/// Every audited request, from `audit.log` and the files the apiserver rotated it into: it
/// rotates at 100 MB (lumberjack's default, as `--audit-log-maxsize` is not given), which one
/// side at 1000 CacheClusters passes, and `ControlPlane::audit_events` reads `audit.log` only.
fn audit_events(plane_dir: &Path) -> Result<Vec<audit::AuditEvent>> {
    let mut events = Vec::new();
    for entry in std::fs::read_dir(plane_dir.join("logs"))? {
        let path = entry?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if name.starts_with("audit") && name.ends_with(".log") {
            events.extend(audit::read(&path)?);
        }
    }
    Ok(events)
}

// ----- CPU and memory of processes, and the machine's load -----

fn proc_status_kib(pid: i32, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|line| line.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
}

/// User + system CPU seconds of a process, all its threads.
fn process_cpu_seconds(pid: i32) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the command's closing parenthesis: state is field 3, utime 14, stime 15.
    let fields: Vec<&str> = text.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    // /proc reports in USER_HZ, 100 on Linux.
    Some(ticks / 100.0)
}

/// Busy CPU seconds of the whole machine (all cores), from /proc/stat.
fn machine_busy_seconds() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    let line = text.lines().find(|line| line.starts_with("cpu "))?;
    let ticks: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|t| t.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    let busy: f64 = ticks.iter().take(8).sum::<f64>() - ticks.get(3)? - ticks.get(4)?;
    Some(busy / 100.0)
}

/// The control plane's processes: every process whose command line names a path in the
/// plane's directory (certificates, kubeconfigs, etcd's data).
fn components(dir: &Path) -> Vec<(String, i32)> {
    let dir = dir.to_string_lossy().into_owned();
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if args.iter().skip(1).any(|a| a.contains(&dir)) {
            let name = args[0].rsplit('/').next().unwrap_or_default().to_string();
            if name != "kubectl" {
                found.push((name, pid));
            }
        }
    }
    found.sort();
    found
}

/// CPU seconds spent during one side: by the machine, the operator, each control plane
/// component and this benchmark; what is left is other work on the machine.
struct CpuClock {
    processes: Vec<(String, i32, f64)>,
    machine: f64,
    wall: Instant,
}

impl CpuClock {
    fn start(bench: &Bench, operator: Option<i32>) -> CpuClock {
        let mut processes: Vec<(String, i32)> = bench.components.clone();
        processes.push(("benchmark".into(), std::process::id() as i32));
        if let Some(pid) = operator {
            processes.push(("operator".into(), pid));
        }
        CpuClock {
            processes: processes
                .into_iter()
                .map(|(name, pid)| {
                    let cpu = process_cpu_seconds(pid).unwrap_or(0.0);
                    (name, pid, cpu)
                })
                .collect(),
            machine: machine_busy_seconds().unwrap_or(0.0),
            wall: Instant::now(),
        }
    }

    fn stop(self) -> Value {
        let mut used = serde_json::Map::new();
        let mut ours = 0.0;
        for (name, pid, before) in &self.processes {
            let spent = process_cpu_seconds(*pid).unwrap_or(*before) - before;
            ours += spent;
            used.insert(name.clone(), json!(round2(spent)));
        }
        let machine = machine_busy_seconds().unwrap_or(0.0) - self.machine;
        let wall = self.wall.elapsed().as_secs_f64();
        used.insert("machine_busy".into(), json!(round2(machine)));
        used.insert(
            "other_work_on_the_machine".into(),
            json!(round2(machine - ours)),
        );
        used.insert("wall".into(), json!(round2(wall)));
        used.insert(
            "machine_utilisation".into(),
            json!(round2(machine / (wall * cores() as f64))),
        );
        used.insert("load_average_at_end".into(), json!(load_average()));
        Value::Object(used)
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}

fn git_head() -> Option<String> {
    let output = std::process::Command::new("git")
        .args(["describe", "--always", "--dirty"])
        .current_dir(workspace_root())
        .output()
        .ok()?;
    Some(String::from_utf8_lossy(&output.stdout).trim().to_string())
}
