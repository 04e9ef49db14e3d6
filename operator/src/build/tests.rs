//! Golden tests of the builders: each fixture's children are rendered as multi-document YAML
//! and compared with `tests/fixtures/<fixture>.children.yaml`. Run with `UPDATE_GOLDEN=1` to
//! rewrite the golden files after an intended change, then review the diff.

use super::*;
use crate::fixtures;
use crate::validate::validate;

const FIXTURES: [&str; 3] = ["minimal", "full", "no-pdb"];

fn children(fixture: &str) -> Children {
    build(&validate(&fixtures::load(fixture)).expect("fixture is valid"))
}

fn render(children: &Children) -> String {
    let mut documents = vec![
        serde_yaml::to_string(&children.service_account),
        serde_yaml::to_string(&children.role_binding),
        serde_yaml::to_string(&children.volume_claim),
        serde_yaml::to_string(&children.peers_service),
        serde_yaml::to_string(&children.client_service),
        serde_yaml::to_string(&children.stateful_set),
        serde_yaml::to_string(&children.janitor),
    ];
    if let Some(budget) = &children.disruption_budget {
        documents.push(serde_yaml::to_string(budget));
    }
    let documents: Vec<String> = documents
        .into_iter()
        .map(|document| document.expect("children serialise"))
        .collect();
    documents.join("---\n")
}

#[test]
fn children_match_the_golden_files() {
    for fixture in FIXTURES {
        let rendered = render(&children(fixture));
        let path = fixtures::dir().join(format!("{fixture}.children.yaml"));
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            std::fs::write(&path, &rendered).expect("write golden file");
        }
        let golden = std::fs::read_to_string(&path)
            .unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()));
        assert!(
            rendered == golden,
            "children of {fixture} differ from {}; rerun with UPDATE_GOLDEN=1 and review the \
             diff\n{rendered}",
            path.display()
        );
    }
}

#[test]
fn output_is_deterministic() {
    for fixture in FIXTURES {
        assert_eq!(render(&children(fixture)), render(&children(fixture)));
    }
}

#[test]
fn janitor_runs_on_the_cache_schedule() {
    for fixture in FIXTURES {
        let children = children(fixture);
        let cron = children.janitor.spec.expect("cronjob spec");
        let pod = children
            .stateful_set
            .spec
            .expect("sts spec")
            .template
            .spec
            .expect("pod spec");
        let args = pod.containers[0].args.clone().expect("args");
        assert!(args.contains(&format!("--schedule={}", cron.schedule)));
        let zone = cron.time_zone.expect("time zone");
        assert!(args.contains(&format!("--time-zone={zone}")));
        assert_eq!(cron.concurrency_policy.as_deref(), Some("Forbid"));
    }
}

#[test]
fn every_pod_is_restricted() {
    for fixture in FIXTURES {
        let children = children(fixture);
        let cache = children.stateful_set.spec.expect("sts").template.spec;
        let janitor = children
            .janitor
            .spec
            .expect("cron")
            .job_template
            .spec
            .expect("job")
            .template
            .spec;
        for pod in [cache, janitor]
            .into_iter()
            .map(|pod| pod.expect("pod spec"))
        {
            let security = pod.security_context.expect("pod security");
            assert_eq!(security.run_as_non_root, Some(true));
            assert_eq!(
                security.seccomp_profile.map(|profile| profile.type_),
                Some("RuntimeDefault".to_string())
            );
            for container in pod.containers {
                let security = container.security_context.expect("container security");
                assert_eq!(security.allow_privilege_escalation, Some(false));
                assert_eq!(security.read_only_root_filesystem, Some(true));
                let capabilities = security.capabilities.expect("capabilities");
                assert_eq!(capabilities.drop, Some(vec!["ALL".to_string()]));
                assert!(capabilities.add.is_none());
            }
        }
    }
}

#[test]
fn pods_spread_over_the_zone_key_and_hosts() {
    let children = children("full");
    let constraints = children
        .stateful_set
        .spec
        .expect("sts")
        .template
        .spec
        .expect("pod")
        .topology_spread_constraints
        .expect("constraints");
    let keys: Vec<(&str, i32, &str)> = constraints
        .iter()
        .map(|c| {
            (
                c.topology_key.as_str(),
                c.max_skew,
                c.when_unsatisfiable.as_str(),
            )
        })
        .collect();
    assert_eq!(
        keys,
        [
            ("example.com/rack-zone", 2, "ScheduleAnyway"),
            ("kubernetes.io/hostname", 1, "ScheduleAnyway")
        ]
    );
}

#[test]
fn every_child_is_owned_except_a_retained_volume() {
    let minimal = children("minimal");
    assert!(minimal.volume_claim.metadata.owner_references.is_none());
    let full = children("full");
    let owners = [
        &full.service_account.metadata,
        &full.role_binding.metadata,
        &full.volume_claim.metadata,
        &full.peers_service.metadata,
        &full.client_service.metadata,
        &full.stateful_set.metadata,
        &full.janitor.metadata,
        &full.disruption_budget.expect("pdb").metadata,
    ];
    for meta in owners {
        let owner = &meta.owner_references.as_ref().expect("owner")[0];
        assert_eq!(owner.kind, "CacheCluster");
        assert_eq!(owner.name, "sessions");
        assert_eq!(owner.controller, Some(true));
    }
}

#[test]
fn disabled_budget_builds_none() {
    assert!(children("no-pdb").disruption_budget.is_none());
}
