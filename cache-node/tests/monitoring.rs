//! The monitoring manifests (`deploy/monitoring/`) against what cache-node really exports: every
//! metric the alerts and the Grafana dashboard query, and every `tidecache_*` name their
//! annotations tell on-call to look at, is in the `/metrics` of two replicated, persisting
//! cache-node processes; a renamed metric would otherwise leave an alert that never fires and a
//! panel that stays empty. The operator's `tidecache_operator_*` names are checked against its
//! registry by `operator/tests/monitoring.rs`; the few series from kube-state-metrics and
//! Prometheus itself are an explicit list here. Every file is parsed, so that a malformed one
//! fails here rather than at `kubectl apply -k`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use cache_node_testkit::{Client, Cluster};
use http::{Method, StatusCode};
use serde::Deserialize;
use serde_json::Value;

/// Series from outside tidecache that the rules may query, each for a reason: kept short, so
/// that the alerts depend on as little as possible besides tidecache's own metrics.
const EXTERNAL: &[&str] = &[
    // Prometheus: whether a target's last scrape succeeded (scrape failures, the inventory of
    // CacheClusters the alerts on kube-state-metrics are narrowed to).
    "up",
    // kube-state-metrics: desired and ready pods of the StatefulSets (pods not ready).
    "kube_statefulset_replicas",
    "kube_statefulset_status_replicas_ready",
    // kube-state-metrics: container restarts (a failed fsync exits cache-node on purpose).
    "kube_pod_container_status_restarts_total",
    // kube-state-metrics: the janitor CronJob's schedule and last runs (the operator's
    // status.janitor is computed from the same CronJob status).
    "kube_cronjob_next_schedule_time",
    "kube_cronjob_status_last_schedule_time",
    "kube_cronjob_status_last_successful_time",
    "kube_cronjob_status_active",
];

/// The prefix of the operator's metrics, which `operator/tests/monitoring.rs` checks.
const OPERATOR_PREFIX: &str = "tidecache_operator_";

fn monitoring_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/monitoring")
}

fn read(name: &str) -> String {
    let path = monitoring_dir().join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// Every document of a multi-document YAML file; a malformed one fails the test.
fn documents(name: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(&read(name))
        .map(|document| {
            Value::deserialize(document).unwrap_or_else(|e| panic!("{name} is not valid YAML: {e}"))
        })
        .filter(|document| !document.is_null())
        .collect()
}

fn dashboard() -> Value {
    serde_json::from_str(&read("grafana-dashboard.json"))
        .unwrap_or_else(|e| panic!("grafana-dashboard.json is not valid JSON: {e}"))
}

/// The rules of the PrometheusRule.
fn rules() -> Vec<Value> {
    let documents = documents("prometheusrule.yaml");
    let [rule] = documents.as_slice() else {
        panic!(
            "prometheusrule.yaml holds {} documents, not 1",
            documents.len()
        )
    };
    assert_eq!(rule["kind"], "PrometheusRule");
    rule["spec"]["groups"]
        .as_array()
        .expect("spec.groups")
        .iter()
        .flat_map(|group| group["rules"].as_array().expect("a group's rules").clone())
        .collect()
}

fn text<'v>(value: &'v Value, what: &str) -> &'v str {
    value
        .as_str()
        .unwrap_or_else(|| panic!("{what} is not a string: {value}"))
}

/// Every PromQL expression of the rules and the dashboard's panels, with where it is.
fn expressions() -> Vec<(String, String)> {
    let mut found: Vec<(String, String)> = rules()
        .iter()
        .map(|rule| {
            let name = rule["alert"].as_str().or(rule["record"].as_str());
            let name = name.unwrap_or_else(|| panic!("a rule with neither alert nor record"));
            (
                format!("rule {name}"),
                text(&rule["expr"], name).to_string(),
            )
        })
        .collect();
    let dashboard = dashboard();
    let panels = dashboard["panels"].as_array().expect("panels");
    for panel in panels.iter().filter(|panel| panel["type"] != "row") {
        let title = text(&panel["title"], "a panel's title");
        let targets = panel["targets"].as_array().expect("a panel's targets");
        assert!(!targets.is_empty(), "panel {title} queries nothing");
        for target in targets {
            let expr = text(&target["expr"], title).to_string();
            found.push((format!("panel {title}"), expr));
        }
    }
    // Template variables list label values of a selector: `label_values(<selector>, <label>)`.
    let variables = dashboard["templating"]["list"]
        .as_array()
        .expect("templating");
    for variable in variables.iter().filter(|v| v["type"] == "query") {
        let name = text(&variable["name"], "a variable's name");
        let query = text(&variable["query"]["query"], name);
        let selector = query
            .strip_prefix("label_values(")
            .and_then(|rest| rest.strip_suffix(')'))
            .and_then(|arguments| arguments.rsplit_once(','))
            .map(|(selector, _label)| selector)
            .unwrap_or_else(|| panic!("variable {name}: {query} is not label_values(…, …)"));
        found.push((format!("variable {name}"), selector.to_string()));
    }
    found
}

/// The index just past the group `chars[start]` opens, which ends with `close`; strings inside
/// it (which may hold the closing character) are skipped whole.
fn past_group(chars: &[char], start: usize, close: char) -> usize {
    let mut i = start + 1;
    while i < chars.len() && chars[i] != close {
        i = if matches!(chars[i], '"' | '\'' | '`') {
            past_string(chars, i)
        } else {
            i + 1
        };
    }
    i + 1
}

/// The index just past the string literal starting at `chars[start]`.
fn past_string(chars: &[char], start: usize) -> usize {
    let quote = chars[start];
    let mut i = start + 1;
    while i < chars.len() && chars[i] != quote {
        // A backslash escapes the next character, except in raw (backquoted) strings.
        i += if chars[i] == '\\' && quote != '`' {
            2
        } else {
            1
        };
    }
    i + 1
}

fn is_identifier(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// The metric names a PromQL expression selects: every identifier except those in strings,
/// label matchers `{…}`, ranges `[…]`, the label lists of `by`, `without`, `on`, `ignoring`,
/// `group_left` and `group_right`, numbers and durations, Grafana variables (`$…`), keywords,
/// and functions and aggregations (followed by `(`, or by `by`/`without`).
fn selected_metrics(expr: &str) -> BTreeSet<String> {
    const KEYWORDS: &[&str] = &[
        "and", "or", "unless", "bool", "offset", "atan2", "inf", "nan",
    ];
    const LABEL_LISTS: &[&str] = &[
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    let chars: Vec<char> = expr.chars().collect();
    let skip_space = |mut i: usize| {
        while chars.get(i).is_some_and(|c| c.is_whitespace()) {
            i += 1;
        }
        i
    };
    let mut names = BTreeSet::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if matches!(c, '"' | '\'' | '`') {
            i = past_string(&chars, i);
        } else if c == '{' {
            i = past_group(&chars, i, '}');
        } else if c == '[' {
            i = past_group(&chars, i, ']');
        } else if c == '$' || c.is_ascii_digit() || c == '.' {
            // A variable, a number (0.99, 1e3) or a duration (5m).
            i += 1;
            while chars.get(i).is_some_and(|&c| is_identifier(c) || c == '.') {
                i += 1;
            }
        } else if is_identifier(c) {
            let start = i;
            while chars.get(i).is_some_and(|&c| is_identifier(c)) {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let next = skip_space(i);
            let opens = chars.get(next) == Some(&'(');
            if LABEL_LISTS.contains(&word.as_str()) {
                if opens {
                    i = past_group(&chars, next, ')');
                }
                continue;
            }
            let next_word: String = chars[next..]
                .iter()
                .take_while(|&&c| is_identifier(c))
                .collect();
            let aggregation = next_word == "by" || next_word == "without";
            if !(opens || aggregation || KEYWORDS.contains(&word.as_str())) {
                names.insert(word);
            }
        } else {
            i += 1;
        }
    }
    names
}

/// The metric families an OpenMetrics exposition declares (`# TYPE` lines), by name, with
/// their types. Declared, not sampled: a family with labels has no sample until a child of it
/// is created.
fn families(exposition: &str) -> BTreeMap<String, String> {
    exposition
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .map(|declaration| {
            let (name, kind) = declaration
                .split_once(' ')
                .unwrap_or_else(|| panic!("# TYPE {declaration}"));
            (name.to_string(), kind.to_string())
        })
        .collect()
}

/// The names a query may use for `families`: a counter's `_total`, a histogram's `_bucket`,
/// `_sum` and `_count`, a gauge's own name.
fn queryable(families: &BTreeMap<String, String>) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (name, kind) in families {
        let suffixes: &[&str] = match kind.as_str() {
            "counter" => &["_total"],
            "histogram" => &["_bucket", "_sum", "_count"],
            "gauge" | "unknown" => &[""],
            other => panic!("{name}: a metric type this test does not know: {other}"),
        };
        names.extend(suffixes.iter().map(|suffix| format!("{name}{suffix}")));
    }
    names
}

async fn scrape(client: &Client, address: &str) -> String {
    let reply = client
        .send(Method::GET, address, "/metrics", &[], "")
        .await
        .expect("/metrics answers");
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    reply.text()
}

#[test]
fn every_selector_of_an_expression_is_found() {
    let expr = r#"histogram_quantile(0.99, sum by (pod, le) (rate(a_bucket{route="/v1/{key}", x=~"$pod"}[$__rate_interval])))
        / on (pod) group_left (cachecluster) b offset 5m > bool 0.5
        and sum(c) by (d) or label_replace(e, "f", "$1", "g", "(.+)") unless max without (h) (i:j:k) > 1e3"#;
    let expected = ["a_bucket", "b", "c", "e", "i:j:k"];
    assert_eq!(
        selected_metrics(expr),
        expected.iter().map(ToString::to_string).collect()
    );
}

#[test]
fn the_manifests_parse_and_every_alert_tells_on_call_what_to_check() {
    let kustomization = &documents("kustomization.yaml")[0];
    let resources = kustomization["resources"].as_array().expect("resources");
    let generated = kustomization["configMapGenerator"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|generator| generator["files"].as_array().expect("files").clone());
    let mut named = BTreeSet::new();
    for file in resources.iter().cloned().chain(generated) {
        let file = text(&file, "a kustomization entry").to_string();
        assert!(
            monitoring_dir().join(&file).exists(),
            "the kustomization names {file}, which is missing"
        );
        named.insert(file);
    }
    // Everything in the directory is applied (and parsed here).
    for entry in std::fs::read_dir(monitoring_dir()).expect("deploy/monitoring") {
        let file = entry
            .expect("entry")
            .file_name()
            .to_string_lossy()
            .into_owned();
        match file.rsplit_once('.').map(|(_, extension)| extension) {
            Some("yaml") if file != "kustomization.yaml" => {
                assert!(named.contains(&file), "the kustomization omits {file}");
                for document in documents(&file) {
                    assert_eq!(document["apiVersion"], "monitoring.coreos.com/v1", "{file}");
                }
            }
            Some("json") => {
                assert!(named.contains(&file), "the kustomization omits {file}");
                dashboard();
            }
            _ => {}
        }
    }
    let alerts: Vec<Value> = rules()
        .into_iter()
        .filter(|rule| rule.get("alert").is_some())
        .collect();
    assert!(!alerts.is_empty());
    for alert in &alerts {
        let name = text(&alert["alert"], "an alert's name");
        let severity = text(&alert["labels"]["severity"], name);
        assert!(
            ["critical", "warning", "info"].contains(&severity),
            "{name}: severity {severity}"
        );
        for annotation in ["summary", "description"] {
            let value = text(&alert["annotations"][annotation], name);
            assert!(!value.trim().is_empty(), "{name}: empty {annotation}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_rules_and_the_dashboard_query_is_exported() {
    // Replicated and persisting, with a capacity (the capacity gauge exists only then).
    let cluster = Cluster::builder(2)
        .fsync("always")
        .flag("--max-memory=64MiB")
        .start();
    let client = Client::default();
    for key in ["a", "b", "c"] {
        let put = client
            .put(
                cluster.address(0),
                key,
                "value",
                &[("tidecache-ack", "all")],
            )
            .await
            .expect("put");
        assert_eq!(put.status, StatusCode::CREATED, "{}", put.text());
    }
    assert_eq!(
        client.get(cluster.address(1), "a").await.expect("get"),
        Some("value".to_string())
    );
    assert_eq!(
        client
            .get(cluster.address(1), "missing")
            .await
            .expect("get"),
        None
    );
    let deleted = client
        .delete(cluster.address(1), "b", &[])
        .await
        .expect("delete");
    assert_eq!(deleted.status, StatusCode::NO_CONTENT, "{}", deleted.text());

    let mut declared = BTreeMap::new();
    for node in 0..2 {
        declared.extend(families(&scrape(&client, cluster.address(node)).await));
    }
    let exported = queryable(&declared);
    let recorded: BTreeSet<String> = rules()
        .iter()
        .filter_map(|rule| rule["record"].as_str().map(str::to_string))
        .collect();
    let mut external_used = BTreeSet::new();
    let mut missing = Vec::new();
    for (place, expr) in expressions() {
        for name in selected_metrics(&expr) {
            if EXTERNAL.contains(&name.as_str()) {
                external_used.insert(name);
            } else if !(exported.contains(&name)
                || recorded.contains(&name)
                || name.starts_with(OPERATOR_PREFIX))
            {
                missing.push(format!("{place}: {name}"));
            }
        }
    }
    // The names the annotations point on-call to, which may name a histogram by its family.
    for alert in rules().iter().filter(|rule| rule.get("alert").is_some()) {
        let annotations = alert["annotations"].as_object().expect("annotations");
        for value in annotations.values() {
            let value = text(value, "an annotation");
            for (at, _) in value.match_indices("tidecache_") {
                let name: String = value[at..]
                    .chars()
                    .take_while(|&c| is_identifier(c))
                    .collect();
                if !(exported.contains(&name) || declared.contains_key(&name)) {
                    missing.push(format!("annotation of {}: {name}", alert["alert"]));
                }
            }
        }
    }
    assert!(
        missing.is_empty(),
        "queried but not exported by cache-node:\n{}\nexported:\n{}",
        missing.join("\n"),
        exported.iter().cloned().collect::<Vec<_>>().join("\n")
    );
    let unused: Vec<&&str> = EXTERNAL
        .iter()
        .filter(|name| !external_used.contains(**name))
        .collect();
    assert!(
        unused.is_empty(),
        "EXTERNAL lists series no expression uses: {unused:?}"
    );
}
