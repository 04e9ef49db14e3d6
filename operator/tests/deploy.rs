//! Keeps `deploy/` consistent with the code: the files the kustomization names exist, the
//! ClusterRole the operator binds cache pods to is the one `deploy/` defines, and the
//! operator's ClusterRole grants what the reconciler uses and nothing cluster-wide beyond it.

use std::path::{Path, PathBuf};

use k8s_openapi::api::rbac::v1::{ClusterRole, PolicyRule};
use serde::Deserialize;
use serde_json::Value;

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

/// Every document of a multi-document YAML file.
fn documents(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_yaml::Deserializer::from_str(&text)
        .map(|document| Value::deserialize(document).expect("valid YAML"))
        .filter(|document| !document.is_null())
        .collect()
}

fn cluster_role(name: &str) -> ClusterRole {
    documents(&deploy_dir().join("rbac.yaml"))
        .into_iter()
        .find(|d| d["kind"] == "ClusterRole" && d["metadata"]["name"] == name)
        .map(|d| serde_json::from_value(d).expect("ClusterRole"))
        .unwrap_or_else(|| panic!("no ClusterRole {name} in deploy/rbac.yaml"))
}

fn grants(rules: &[PolicyRule], group: &str, resource: &str, verb: &str) -> bool {
    rules.iter().any(|rule| {
        rule.api_groups
            .as_deref()
            .unwrap_or(&[])
            .iter()
            .any(|g| g == group)
            && rule
                .resources
                .as_deref()
                .unwrap_or(&[])
                .iter()
                .any(|r| r == resource)
            && rule.verbs.iter().any(|v| v == verb)
    })
}

#[test]
fn kustomization_names_existing_files() {
    let kustomization = &documents(&deploy_dir().join("kustomization.yaml"))[0];
    for resource in kustomization["resources"].as_array().expect("resources") {
        let path = deploy_dir().join(resource.as_str().expect("path"));
        assert!(path.exists(), "{} is missing", path.display());
    }
}

#[test]
fn cache_pods_are_bound_to_the_role_deploy_defines() {
    let role = cluster_role(operator::build::CACHE_NODE_CLUSTER_ROLE);
    let rules = role.rules.expect("rules");
    for verb in ["get", "list", "watch"] {
        assert!(grants(&rules, "discovery.k8s.io", "endpointslices", verb));
    }
    let operator_rules = cluster_role("tidecache-operator").rules.expect("rules");
    assert!(operator_rules.iter().any(|rule| {
        rule.verbs == ["bind"]
            && rule.resource_names.as_deref()
                == Some(&[operator::build::CACHE_NODE_CLUSTER_ROLE.to_string()][..])
    }));
}

#[test]
fn operator_may_apply_every_child() {
    let rules = cluster_role("tidecache-operator").rules.expect("rules");
    let children = [
        ("apps", "statefulsets"),
        ("", "services"),
        ("", "serviceaccounts"),
        ("", "persistentvolumeclaims"),
        ("batch", "cronjobs"),
        ("policy", "poddisruptionbudgets"),
        ("networking.k8s.io", "networkpolicies"),
        ("rbac.authorization.k8s.io", "rolebindings"),
    ];
    for (group, resource) in children {
        for verb in ["get", "list", "watch", "create", "patch"] {
            assert!(
                grants(&rules, group, resource, verb),
                "{verb} {group}/{resource}"
            );
        }
    }
    assert!(grants(
        &rules,
        "tidecache.io",
        "cacheclusters/status",
        "patch"
    ));
    assert!(grants(&rules, "events.k8s.io", "events", "create"));
    // The generated peer-token Secret: read by name, created, replaced on rotation; Secrets
    // are never listed or watched (the operator has no business reading others').
    for verb in ["get", "create", "update"] {
        assert!(grants(&rules, "", "secrets", verb), "{verb} secrets");
    }
    for verb in ["list", "watch"] {
        assert!(!grants(&rules, "", "secrets", verb), "{verb} secrets");
    }
    // Nothing may be deleted except a PodDisruptionBudget or NetworkPolicy that was disabled.
    let deletable: Vec<&PolicyRule> = rules
        .iter()
        .filter(|rule| rule.verbs.iter().any(|v| v == "delete" || v == "*"))
        .collect();
    assert_eq!(deletable.len(), 2);
    assert!(grants(&rules, "policy", "poddisruptionbudgets", "delete"));
    assert!(grants(
        &rules,
        "networking.k8s.io",
        "networkpolicies",
        "delete"
    ));
}

#[test]
fn operator_pod_is_restricted() {
    let deployment = documents(&deploy_dir().join("operator.yaml"))
        .into_iter()
        .find(|d| d["kind"] == "Deployment")
        .expect("Deployment");
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    let container = &pod["containers"][0]["securityContext"];
    assert_eq!(container["allowPrivilegeEscalation"], false);
    assert_eq!(container["readOnlyRootFilesystem"], true);
    assert_eq!(container["capabilities"]["drop"][0], "ALL");
}
