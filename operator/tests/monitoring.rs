//! The operator's metrics that the monitoring manifests (`deploy/monitoring/`) query are ones
//! its registry exports, so that a renamed metric cannot leave an alert that never fires.
//! `cache-node/tests/monitoring.rs` checks every other name the manifests use, and leaves the
//! `tidecache_operator_*` ones to this test.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use operator::telemetry::Metrics;
use serde::Deserialize;
use serde_json::Value;

const PREFIX: &str = "tidecache_operator_";

fn monitoring_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/monitoring")
}

fn read(name: &str) -> String {
    let path = monitoring_dir().join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// Every string under the key `expr` anywhere in `value`: the rules' and the panels' queries.
fn expressions(value: &Value, found: &mut Vec<String>) {
    match value {
        Value::Object(fields) => {
            for (key, field) in fields {
                match (key.as_str(), field) {
                    ("expr", Value::String(expr)) => found.push(expr.clone()),
                    _ => expressions(field, found),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| expressions(item, found)),
        _ => {}
    }
}

/// The names a query may use for the families the exposition declares: a counter's `_total`,
/// a histogram's `_bucket`, `_sum` and `_count`, a gauge's own name.
fn queryable(exposition: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for declaration in exposition.lines().filter_map(|l| l.strip_prefix("# TYPE ")) {
        let (name, kind) = declaration
            .split_once(' ')
            .unwrap_or_else(|| panic!("# TYPE {declaration}"));
        let suffixes: &[&str] = match kind {
            "counter" => &["_total"],
            "histogram" => &["_bucket", "_sum", "_count"],
            "gauge" | "unknown" => &[""],
            other => panic!("{name}: a metric type this test does not know: {other}"),
        };
        names.extend(suffixes.iter().map(|suffix| format!("{name}{suffix}")));
    }
    names
}

#[test]
fn every_operator_metric_the_monitoring_manifests_query_is_exported() {
    let mut exprs = Vec::new();
    let rules = read("prometheusrule.yaml");
    for document in serde_yaml::Deserializer::from_str(&rules) {
        let document = Value::deserialize(document).expect("prometheusrule.yaml is valid YAML");
        expressions(&document, &mut exprs);
    }
    let dashboard: Value = serde_json::from_str(&read("grafana-dashboard.json"))
        .expect("grafana-dashboard.json is valid JSON");
    expressions(&dashboard, &mut exprs);

    let used: BTreeSet<String> = exprs
        .iter()
        .flat_map(|expr| {
            expr.match_indices(PREFIX).map(|(at, _)| {
                expr[at..]
                    .chars()
                    .take_while(|&c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
                    .collect::<String>()
            })
        })
        .collect();
    // Vacuous otherwise: the alerts on reconcile failures and leadership use these.
    assert!(!used.is_empty(), "no {PREFIX}* name found in {exprs:#?}");
    // A family with labels is declared only once it has a child: the failure counter after
    // the first failed reconcile, which is what the alert on it waits for anyway.
    let metrics = Metrics::default();
    metrics.failed("Apply");
    let exported = queryable(&metrics.encode());
    let missing: Vec<&String> = used.difference(&exported).collect();
    assert!(
        missing.is_empty(),
        "queried but not exported by the operator: {missing:?}\nexported: {exported:?}"
    );
}
