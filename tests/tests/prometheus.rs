//! `deploy/monitoring/` against a real Prometheus (built from its Go module by
//! `tests/prometheus/build.sh`) scraping three real, replicated cache-node processes and the
//! operator: Prometheus loads every rule of the PrometheusRule, evaluates each without error,
//! every expression of the Grafana dashboard returns data, and alerts fire for conditions
//! induced here — a node filled past 90% of its capacity, a node stopped, an operator that
//! cannot lead. `cache-node/tests/monitoring.rs` checks the metric *names* against what
//! cache-node declares; this checks that PromQL, the labels and the templates work too.
//!
//! Without the Prometheus Operator: its PodMonitors become plain `scrape_configs` here, with
//! static targets carrying the `__meta_kubernetes_*` labels Kubernetes service discovery would
//! give the pods, the relabeling the Prometheus Operator generates for a PodMonitor (its
//! selector, the port, `namespace`/`pod`/`container`), then the PodMonitor's own
//! `relabelings` translated as they are, so that the `job` and `cachecluster` labels the rules
//! need come from the manifest. There is no kube-state-metrics: the alerts on `kube_*` series
//! (pods not ready, restarts, the janitor) cannot fire here; they are checked to evaluate
//! without error.
//!
//! The test copy of the rules has every `for:` set to `0s`: the durations (5 to 60 minutes)
//! debounce real clusters, and Prometheus' pending-to-firing state machine is its own code;
//! what is tested here is that each expression, with its labels and annotations, fires.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cache_node_testkit::Client;
use http::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};
use tidecache_e2e::prometheus::{Exporter, Options, Prometheus, free_address};

/// The namespace, CacheCluster and StatefulSet pods the cache targets pose as.
const NAMESPACE: &str = "shop";
const CACHECLUSTER: &str = "sessions";
const NODES: usize = 3;

/// Small, so that filling a node past 90% takes a hundred writes.
const CAPACITY: &str = "--max-memory=4MiB";
const VALUE_BYTES: usize = 64 * 1024;

/// How long anything awaited from Prometheus may take: a few scrape and evaluation rounds
/// of 1 s on a loaded machine.
const WAIT: Duration = Duration::from_secs(60);

/// What Grafana puts for the dashboard's variables: every value (the variables' `allValue`),
/// and for `$__rate_interval` four scrape intervals of 1 s would be Grafana's minimum; a
/// minute instead, so that an event seen once stays in the panels for the whole test.
const GRAFANA_VARIABLES: [(&str, &str); 4] = [
    ("$namespace", ".*"),
    ("$cachecluster", ".*"),
    ("$pod", ".*"),
    ("$__rate_interval", "1m"),
];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn monitoring(name: &str) -> String {
    let path = repo().join("deploy/monitoring").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

fn documents(name: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(&monitoring(name))
        .map(|document| Value::deserialize(document).expect("valid YAML"))
        .filter(|document| !document.is_null())
        .collect()
}

fn text<'v>(value: &'v Value, what: &str) -> &'v str {
    value
        .as_str()
        .unwrap_or_else(|| panic!("{what} is not a string: {value}"))
}

/// The PrometheusRule's groups, every `for:` set to `0s` (see the module's comment).
fn rule_groups() -> Vec<Value> {
    let documents = documents("prometheusrule.yaml");
    let mut groups = documents[0]["spec"]["groups"]
        .as_array()
        .expect("spec.groups")
        .clone();
    for group in &mut groups {
        for rule in group["rules"].as_array_mut().expect("rules") {
            if let Some(duration) = rule.get_mut("for") {
                *duration = json!("0s");
            }
        }
    }
    groups
}

/// The `__meta_kubernetes_*` labels Kubernetes pod discovery gives a container port of a pod.
fn pod_meta(namespace: &str, pod: &str, labels: &[(&str, &str)], container: &str) -> Value {
    let mut meta = serde_json::Map::new();
    meta.insert("__meta_kubernetes_namespace".into(), json!(namespace));
    meta.insert("__meta_kubernetes_pod_name".into(), json!(pod));
    meta.insert(
        "__meta_kubernetes_pod_container_name".into(),
        json!(container),
    );
    meta.insert(
        "__meta_kubernetes_pod_container_port_name".into(),
        json!("http"),
    );
    for (name, value) in labels {
        let name: String = name
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        meta.insert(format!("__meta_kubernetes_pod_label_{name}"), json!(value));
        meta.insert(
            format!("__meta_kubernetes_pod_labelpresent_{name}"),
            json!("true"),
        );
    }
    Value::Object(meta)
}

/// A PodMonitor's first endpoint as a `scrape_configs` entry over `targets` (address, pod
/// discovery labels): what the Prometheus Operator generates (`keep` on the selector and the
/// port, `namespace`, `pod`, `container` and `endpoint`, `job` defaulting to the
/// PodMonitor's name), then the PodMonitor's `relabelings`. The endpoint's `interval` gives
/// way to the test's 1 s.
fn scrape_config(monitor: &Value, targets: &[(String, Value)]) -> Value {
    let name = text(&monitor["metadata"]["name"], "a PodMonitor's name");
    let namespace = text(&monitor["metadata"]["namespace"], name);
    let endpoints = monitor["spec"]["podMetricsEndpoints"]
        .as_array()
        .expect("podMetricsEndpoints");
    let [endpoint] = endpoints.as_slice() else {
        panic!("PodMonitor {name}: this test translates one endpoint, not {endpoints:?}")
    };
    let sanitize = |label: &str| -> String {
        label
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect()
    };
    let mut relabel = Vec::new();
    let selector = monitor["spec"]["selector"]["matchLabels"]
        .as_object()
        .expect("selector.matchLabels");
    for (label, value) in selector {
        let label = sanitize(label);
        relabel.push(json!({
            "action": "keep",
            "source_labels": [format!("__meta_kubernetes_pod_label_{label}"), format!("__meta_kubernetes_pod_labelpresent_{label}")],
            "regex": format!("({});true", text(value, "a matchLabels value")),
        }));
    }
    relabel.push(json!({
        "action": "keep",
        "source_labels": ["__meta_kubernetes_pod_container_port_name"],
        "regex": text(&endpoint["port"], "the endpoint's port"),
    }));
    for (source, target) in [
        ("__meta_kubernetes_namespace", "namespace"),
        ("__meta_kubernetes_pod_container_name", "container"),
        ("__meta_kubernetes_pod_name", "pod"),
    ] {
        relabel.push(json!({ "source_labels": [source], "target_label": target }));
    }
    relabel.push(json!({ "target_label": "job", "replacement": format!("{namespace}/{name}") }));
    relabel.push(json!({ "target_label": "endpoint", "replacement": endpoint["port"] }));
    for step in endpoint["relabelings"].as_array().into_iter().flatten() {
        let mut translated = serde_json::Map::new();
        for (key, value) in step.as_object().expect("a relabeling") {
            let key = match key.as_str() {
                "sourceLabels" => "source_labels",
                "targetLabel" => "target_label",
                "replacement" | "regex" | "separator" | "action" | "modulus" => key.as_str(),
                other => panic!("PodMonitor {name}: relabeling field {other} is not translated"),
            };
            translated.insert(key.to_string(), value.clone());
        }
        relabel.push(Value::Object(translated));
    }
    let static_configs: Vec<Value> = targets
        .iter()
        .map(|(address, labels)| json!({ "targets": [address], "labels": labels }))
        .collect();
    json!({
        "job_name": format!("podMonitor/{namespace}/{name}/0"),
        "metrics_path": endpoint["path"],
        "static_configs": static_configs,
        "relabel_configs": relabel,
    })
}

/// `cargo build` of `package`'s binary `bin`, its path from cargo's JSON messages: the e2e
/// crate does not depend on cache-node or the operator as binaries, so cargo does not build
/// them for this test.
fn cargo_binary(package: &str, bin: &str) -> PathBuf {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = Command::new(cargo)
        .args([
            "build",
            "--locked",
            "--message-format=json",
            "-p",
            package,
            "--bin",
            bin,
        ])
        .current_dir(repo())
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .expect("cargo runs");
    assert!(output.status.success(), "cargo build -p {package} failed");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find(|message| message["target"]["name"] == bin && message["executable"].is_string())
        .map(|message| PathBuf::from(text(&message["executable"], "executable")))
        .unwrap_or_else(|| panic!("cargo reported no executable {bin}"))
}

/// Polls `check` every 500 ms until it returns `Some`, for at most [`WAIT`]; on timeout
/// fails with `what` and the last thing `check` saw.
async fn eventually<T>(what: &str, mut check: impl AsyncFnMut(&mut String) -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT;
    let mut last = String::from("nothing yet");
    loop {
        if let Some(value) = check(&mut last).await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "waited {WAIT:?} for {what}; last seen: {last}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Every metric name a parsed expression selects (the `vectorSelector` and `matrixSelector`
/// nodes of `/api/v1/parse_query`'s tree, whose matchers include `__name__`), with its
/// selector as PromQL.
fn selectors(tree: &Value, found: &mut BTreeMap<String, String>) {
    match tree {
        Value::Object(node) => {
            let kind = node.get("type").and_then(Value::as_str);
            if matches!(kind, Some("vectorSelector" | "matrixSelector")) {
                let matchers: Vec<String> = node["matchers"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|m| {
                        format!(
                            "{}{}{}",
                            text(&m["name"], "a matcher's name"),
                            text(&m["type"], "a matcher's type"),
                            serde_json::to_string(&m["value"]).expect("a string")
                        )
                    })
                    .collect();
                let name = node["name"].as_str().unwrap_or_default().to_string();
                found.insert(name, format!("{{{}}}", matchers.join(", ")));
            }
            node.values().for_each(|child| selectors(child, found));
        }
        Value::Array(children) => children.iter().for_each(|child| selectors(child, found)),
        _ => {}
    }
}

/// The dashboard's expressions (panels' targets, and the selectors of the variables'
/// `label_values(<selector>, <label>)`), with where each is, variables substituted.
fn dashboard_expressions() -> Vec<(String, String)> {
    let dashboard: Value =
        serde_json::from_str(&monitoring("grafana-dashboard.json")).expect("dashboard JSON");
    let substitute = |expr: &str| {
        GRAFANA_VARIABLES
            .iter()
            .fold(expr.to_string(), |expr, (variable, value)| {
                expr.replace(variable, value)
            })
    };
    let mut found = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let title = text(&panel["title"], "a panel's title");
            found.push((
                format!("panel {title}"),
                substitute(text(&target["expr"], title)),
            ));
        }
    }
    for variable in dashboard["templating"]["list"]
        .as_array()
        .expect("templating")
    {
        if variable["type"] != "query" {
            continue;
        }
        let name = text(&variable["name"], "a variable's name");
        let query = text(&variable["query"]["query"], name);
        let selector = query
            .strip_prefix("label_values(")
            .and_then(|rest| rest.strip_suffix(')'))
            .and_then(|arguments| arguments.rsplit_once(','))
            .map(|(selector, _label)| selector)
            .unwrap_or_else(|| panic!("variable {name}: {query} is not label_values(…, …)"));
        found.push((format!("variable {name}"), substitute(selector)));
    }
    found
}

/// The firing alerts named `name`.
async fn firing(prometheus: &Prometheus, name: &str) -> Vec<Value> {
    prometheus
        .alerts()
        .await
        .expect("/api/v1/alerts")
        .into_iter()
        .filter(|alert| alert["labels"]["alertname"] == name && alert["state"] == "firing")
        .collect()
}

/// Asserts that an alert's annotations expanded (Prometheus puts the template error in the
/// annotation instead), and that it carries `labels`.
fn assert_expanded(alert: &Value, labels: &[&str]) {
    let name = &alert["labels"]["alertname"];
    for (annotation, value) in alert["annotations"].as_object().expect("annotations") {
        let value = text(value, annotation);
        assert!(
            !value.contains("error expanding") && !value.contains("<no value>"),
            "{name}: annotation {annotation} did not expand: {value}"
        );
    }
    for label in labels {
        assert!(
            alert["labels"][label]
                .as_str()
                .is_some_and(|v| !v.is_empty()),
            "{name} has no {label} label: {alert}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_loads_evaluates_and_fires_the_monitoring_rules() {
    let started = Instant::now();
    let cache_node = tokio::task::spawn_blocking(|| cargo_binary("cache-node", "cache-node"));
    let operator = tokio::task::spawn_blocking(|| cargo_binary("operator", "operator"));
    let (cache_node, operator) = (
        cache_node.await.expect("build"),
        operator.await.expect("build"),
    );
    let dir = tempfile::Builder::new()
        .prefix("tidecache-prometheus-test-")
        .tempdir()
        .expect("temp dir");

    // Three replicated cache nodes persisting to one volume, as a CacheCluster's pods do.
    let addresses: Vec<String> = (0..NODES)
        .map(|_| free_address().expect("port").to_string())
        .collect();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).expect("data dir");
    let names = ["sessions-0", "sessions-1", "sessions-2"];
    let mut nodes: Vec<Exporter> = (0..NODES)
        .map(|i| {
            let args = vec![
                format!("--listen={}", addresses[i]),
                format!("--node-id={}", names[i]),
                format!("--peers={}", addresses.join(",")),
                "--peer-token=prometheus-test-peer-token".to_string(),
                format!("--data-dir={}", data.display()),
                "--fsync=always".to_string(),
                "--anti-entropy-interval=1s".to_string(),
                "--drain-timeout=1s".to_string(),
                CAPACITY.to_string(),
            ];
            let log = dir.path().join(format!("{}.log", names[i]));
            Exporter::spawn(names[i], &cache_node, &args, log).expect("cache-node starts")
        })
        .collect();
    let client = Client::default();
    for (i, address) in addresses.iter().enumerate() {
        eventually(&format!("{} to be ready", names[i]), async |last| {
            if let Err(e) = nodes[i].check_running() {
                panic!("{e}");
            }
            match client.send(Method::GET, address, "/readyz", &[], "").await {
                Ok(reply) if reply.status == StatusCode::OK => Some(()),
                Ok(reply) => {
                    *last = reply.status.to_string();
                    None
                }
                Err(e) => {
                    *last = e;
                    None
                }
            }
        })
        .await;
    }

    // The operator, pointed at an apiserver that is not there. With leader election it exits
    // when it cannot reach the Lease; without, it serves /metrics and its reconciles keep
    // failing while no replica reports leading (TidecacheOperatorNotLeading).
    let operator_address = free_address().expect("port").to_string();
    let nowhere = free_address().expect("port");
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: nowhere\n  cluster:\n    server: http://{nowhere}\ncontexts:\n- name: nowhere\n  context:\n    cluster: nowhere\n    user: nobody\n    namespace: tidecache-system\nusers:\n- name: nobody\n  user: {{}}\ncurrent-context: nowhere\n"
        ),
    )
    .expect("kubeconfig");
    let mut operator = Exporter::spawn(
        "operator",
        Path::new("/usr/bin/env"),
        &[
            format!("KUBECONFIG={}", kubeconfig.display()),
            operator.display().to_string(),
            format!("--listen={operator_address}"),
            "--leader-election=false".to_string(),
        ],
        dir.path().join("operator.log"),
    )
    .expect("operator starts");

    let monitors = documents("podmonitors.yaml");
    let monitor = |name: &str| {
        monitors
            .iter()
            .find(|m| m["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no PodMonitor {name}"))
    };
    let cache_labels = [
        ("app.kubernetes.io/name", "tidecache"),
        ("app.kubernetes.io/instance", CACHECLUSTER),
        ("app.kubernetes.io/component", "cache"),
    ];
    let cache_targets: Vec<(String, Value)> = (0..NODES)
        .map(|i| {
            let meta = pod_meta(NAMESPACE, names[i], &cache_labels, "cache-node");
            (addresses[i].clone(), meta)
        })
        .collect();
    let operator_labels = [
        ("app.kubernetes.io/name", "tidecache"),
        ("app.kubernetes.io/component", "operator"),
    ];
    let operator_targets = vec![(
        operator_address.clone(),
        pod_meta(
            "tidecache-system",
            "tidecache-operator-5d8f7c9b4-x2x7q",
            &operator_labels,
            "operator",
        ),
    )];
    let groups = rule_groups();
    let mut prometheus = Prometheus::start(&Options {
        interval: Duration::from_secs(1),
        scrape_configs: vec![
            scrape_config(monitor("tidecache-cache"), &cache_targets),
            scrape_config(monitor("tidecache-operator"), &operator_targets),
        ],
        rule_groups: groups.clone(),
    })
    .await
    .unwrap_or_else(|e| panic!("Prometheus does not start with deploy/monitoring's rules: {e}"));
    eprintln!(
        "prometheus: ready on {} after {:?}",
        prometheus.address(),
        started.elapsed()
    );

    // Every target is up, with the labels the rules and the dashboard select by.
    let targets = eventually("every target to be scraped", async |last| {
        let targets = prometheus.targets().await.expect("/api/v1/targets");
        let health: Vec<String> = targets
            .iter()
            .map(|t| format!("{} {} {}", t["scrapeUrl"], t["health"], t["lastError"]))
            .collect();
        *last = health.join("; ");
        (targets.len() == NODES + 1 && targets.iter().all(|t| t["health"] == "up"))
            .then_some(targets)
    })
    .await;
    for target in &targets {
        let labels = &target["labels"];
        if labels["job"] == "tidecache-cache" {
            assert_eq!(labels["namespace"], NAMESPACE, "{target}");
            assert_eq!(labels["cachecluster"], CACHECLUSTER, "{target}");
            assert!(names.contains(&text(&labels["pod"], "pod")), "{target}");
        } else {
            assert_eq!(labels["job"], "tidecache-operator", "{target}");
        }
    }

    // Traffic for every panel: writes acknowledged by all peers (replication lag), hits,
    // misses, a delete; then writes until the entries fill more than 90% of the capacity
    // (evictions, TidecacheMemoryNearCapacity).
    for key in ["a", "b", "c"] {
        let put = client
            .put(&addresses[0], key, "value", &[("tidecache-ack", "all")])
            .await
            .expect("put");
        assert_eq!(put.status, StatusCode::CREATED, "{}", put.text());
    }
    assert!(client.get(&addresses[1], "a").await.expect("get").is_some());
    assert!(
        client
            .get(&addresses[1], "missing")
            .await
            .expect("get")
            .is_none()
    );
    client
        .delete(&addresses[1], "b", &[])
        .await
        .expect("delete");
    let value = "x".repeat(VALUE_BYTES);
    for i in 0..(4 << 20) * 3 / 2 / VALUE_BYTES {
        let put = client
            .put(&addresses[0], &format!("fill-{i}"), &value, &[])
            .await
            .expect("put");
        assert_eq!(put.status, StatusCode::CREATED, "{}", put.text());
    }

    // Every group and rule of the PrometheusRule is loaded and evaluates without error.
    let expected: BTreeMap<String, BTreeSet<String>> = groups
        .iter()
        .map(|group| {
            let rules = group["rules"].as_array().expect("rules");
            let names = rules
                .iter()
                .map(|r| text(r.get("alert").unwrap_or(&r["record"]), "a rule's name").to_string())
                .collect();
            (text(&group["name"], "a group's name").to_string(), names)
        })
        .collect();
    let loaded = eventually("every rule to have been evaluated", async |last| {
        let loaded = prometheus.rule_groups().await.expect("/api/v1/rules");
        let unevaluated: Vec<String> = loaded
            .iter()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .filter(|r| r["health"] == "unknown")
            .map(|r| r["name"].to_string())
            .collect();
        *last = format!("not evaluated yet: {unevaluated:?}");
        unevaluated.is_empty().then_some(loaded)
    })
    .await;
    let mut seen = BTreeMap::new();
    let mut broken = Vec::new();
    for group in &loaded {
        let group_name = text(&group["name"], "a group's name").to_string();
        for rule in group["rules"].as_array().expect("rules") {
            let name = text(&rule["name"], "a rule's name").to_string();
            if rule["health"] != "ok" || rule["lastError"].as_str().is_some_and(|e| !e.is_empty()) {
                broken.push(format!(
                    "{group_name}/{name}: health {} {}",
                    rule["health"], rule["lastError"]
                ));
            }
            seen.entry(group_name.clone())
                .or_insert_with(BTreeSet::new)
                .insert(name);
        }
    }
    assert_eq!(seen, expected, "the groups and rules Prometheus loaded");
    assert!(broken.is_empty(), "rules that fail:\n{}", broken.join("\n"));

    // The variables' label values: what the dashboard's drop-downs offer.
    let series = prometheus
        .vector(r#"tidecache_entries{job="tidecache-cache"}"#)
        .await
        .expect("query");
    let pods: BTreeSet<&str> = series
        .iter()
        .map(|s| text(&s["metric"]["pod"], "pod"))
        .collect();
    assert_eq!(pods, names.iter().copied().collect(), "{series:?}");

    // Induced: the entries fill more than 90% of the capacity.
    let full = eventually("TidecacheMemoryNearCapacity to fire", async |last| {
        let alerts = firing(&prometheus, "TidecacheMemoryNearCapacity").await;
        *last = prometheus
            .vector(r#"tidecache_memory_used_bytes / tidecache_memory_capacity_bytes"#)
            .await
            .map(|v| serde_json::to_string(&v).unwrap_or_default())
            .unwrap_or_else(|e| e.to_string());
        alerts.into_iter().find(|a| a["labels"]["pod"] == names[0])
    })
    .await;
    assert_expanded(&full, &["namespace", "cachecluster", "pod", "severity"]);
    assert_eq!(full["labels"]["cachecluster"], CACHECLUSTER);
    eprintln!("prometheus: {}", full["annotations"]["summary"]);

    // Induced: no operator replica leads (it cannot reach an apiserver).
    operator.check_running().unwrap_or_else(|e| panic!("{e}"));
    let not_leading = eventually("TidecacheOperatorNotLeading to fire", async |_| {
        firing(&prometheus, "TidecacheOperatorNotLeading")
            .await
            .pop()
    })
    .await;
    assert_expanded(&not_leading, &["severity"]);
    // SIGTERM makes the operator drain its controller, whose watch keeps failing, until the
    // harness' grace period of 10 s ends it: that runs beside the rest of the test.
    let stopping_operator = tokio::task::spawn_blocking(move || drop(operator));
    // TidecacheOperatorReconcileFailing stays silent here: the controller's failure to list
    // CacheClusters is logged as "reconcile failed" but does not count in
    // tidecache_operator_reconcile_failures_total, which counts reconciles of an object.

    // Induced: a stopped node's scrapes fail.
    nodes[2].stop();
    let down = eventually("TidecacheScrapeFailing to fire", async |_| {
        firing(&prometheus, "TidecacheScrapeFailing").await.pop()
    })
    .await;
    assert_expanded(&down, &["namespace", "cachecluster", "pod", "severity"]);
    assert_eq!(down["labels"]["pod"], names[2]);
    eprintln!("prometheus: {}", down["annotations"]["summary"]);

    // A write whose acknowledgement the stopped peer cannot give: the client gets 503, which
    // the panel of refused and failed requests shows.
    let refused = client
        .put(
            &addresses[0],
            "needs-all",
            "value",
            &[("tidecache-ack", "all")],
        )
        .await
        .expect("put");
    assert_eq!(
        refused.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        refused.text()
    );

    // Every expression of the dashboard returns data, and so does every selector in it (the
    // stopped node's series are stale by now; the others' remain).
    let expressions = dashboard_expressions();
    eventually("every dashboard expression to return data", async |last| {
        let mut empty = Vec::new();
        for (place, expr) in &expressions {
            let result = prometheus
                .vector(expr)
                .await
                .unwrap_or_else(|e| panic!("{place}: {expr}: {e}"));
            let tree = prometheus.parse(expr).await.expect("parse_query");
            let mut found = BTreeMap::new();
            selectors(&tree, &mut found);
            for (metric, selector) in found {
                let series = prometheus.vector(&selector).await.expect("selector");
                if series.is_empty() {
                    empty.push(format!("{place}: {metric} selects nothing ({selector})"));
                }
            }
            if result.is_empty() {
                empty.push(format!("{place}: no data: {expr}"));
            }
        }
        *last = empty.join("\n");
        empty.is_empty().then_some(())
    })
    .await;
    // The alerts on kube-state-metrics' series have none here, so they evaluate to nothing.
    let alerts = prometheus.alerts().await.expect("/api/v1/alerts");
    for name in [
        "TidecachePodsNotReady",
        "TidecachePodRestarting",
        "TidecacheJanitorNotRunning",
        "TidecacheJanitorFailing",
    ] {
        assert!(
            !alerts.iter().any(|a| a["labels"]["alertname"] == name),
            "{name} fires without kube-state-metrics: {alerts:?}"
        );
    }
    // Nothing failed meanwhile either (a template error is logged, not returned).
    prometheus.check_running().expect("prometheus runs");
    let log = prometheus.log();
    for failure in ["Evaluating rule failed", "Expanding alert template failed"] {
        assert!(
            !log.contains(failure),
            "Prometheus logged {failure}:\n{log}"
        );
    }
    for node in nodes.iter_mut().take(2) {
        node.check_running().unwrap_or_else(|e| panic!("{e}"));
    }
    let firing_now: BTreeSet<String> = alerts
        .iter()
        .filter(|a| a["state"] == "firing")
        .map(|a| {
            a["labels"]["alertname"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    eprintln!(
        "prometheus: firing {firing_now:?}; test took {:?}",
        started.elapsed()
    );
    stopping_operator.await.expect("the operator stopped");
}
